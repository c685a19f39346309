//! Commands that change what the switch serves: phone accounts and ring
//! groups. Each is checked by the one rule set (`provisioning`) against what
//! the switch holds, applied, and stored through a [`Persist`] output, so
//! that the shell is the only writer of the store, in order with the
//! records; nothing changes when a check fails.

use crate::output::{CommandOutcome, Output, Persist};
use crate::switch::Switch;
use provisioning::Known;
use records::{ExtensionRecord, RingGroup};
use registrar::Accounts;
use routing::RouteTable;
use uuid::Uuid;

/// What exists, as the switch holds it: its accounts and its route table.
pub(crate) struct Held<'a> {
    /// Customers, domains and extensions.
    pub(crate) accounts: &'a Accounts,
    /// Ring groups.
    pub(crate) routes: &'a RouteTable,
}

impl Known for Held<'_> {
    fn domain_owner(&self, domain: &str) -> Option<Uuid> {
        self.accounts.domain_for_host(domain).map(|d| d.customer_id)
    }

    fn has_extension(&self, name: &str, domain: &str) -> bool {
        self.accounts.extension(name, domain).is_some()
    }

    fn ring_group(&self, key: &str, domain: &str) -> Option<&RingGroup> {
        self.routes.group(key, domain)
    }
}

impl Switch {
    /// What the switch holds, for the provisioning checks.
    pub(crate) fn held(&self) -> Held<'_> {
        Held { accounts: self.registrar.accounts(), routes: &self.routes }
    }

    /// Adds or replaces an extension (by name and domain).
    pub(crate) fn put_extension(&mut self, r: ExtensionRecord) -> CommandOutcome {
        if let Err(e) = provisioning::check_extension(&r.extension, &self.held()) {
            return CommandOutcome::Invalid(e);
        }
        let e = &r.extension;
        let a = self.registrar.accounts();
        let mut extensions: Vec<_> =
            a.extensions().filter(|x| !same(x, &e.name, &e.domain)).cloned().collect();
        extensions.push(e.clone());
        let next = Accounts::new(a.customers().to_vec(), a.domains().to_vec(), extensions);
        self.registrar.set_accounts(next);
        self.out.push_back(Output::Persist(Persist::Extension(Box::new(r))));
        CommandOutcome::Done
    }

    /// Removes an extension and its bindings; the store forgets it either
    /// way.
    pub(crate) fn remove_extension(&mut self, name: String, domain: String) -> CommandOutcome {
        let a = self.registrar.accounts();
        let found = a.extension(&name, &domain).map(|e| e.aor());
        if let Some(aor) = &found {
            let extensions: Vec<_> =
                a.extensions().filter(|x| !same(x, &name, &domain)).cloned().collect();
            let next = Accounts::new(a.customers().to_vec(), a.domains().to_vec(), extensions);
            self.registrar.set_accounts(next);
            self.registrar.location_mut().remove_aor(aor);
        }
        self.out.push_back(Output::Persist(Persist::ExtensionRemoved { name, domain }));
        if found.is_some() {
            CommandOutcome::Done
        } else {
            CommandOutcome::NotFound
        }
    }

    /// Adds or replaces a ring group (by id).
    pub(crate) fn put_group(&mut self, g: RingGroup) -> CommandOutcome {
        if let Err(e) = provisioning::check_ring_group(&g, &self.held()) {
            return CommandOutcome::Invalid(e);
        }
        if let Err(e) = self.routes.put_group(g.clone()) {
            return CommandOutcome::Refused(e.reason);
        }
        self.out.push_back(Output::Persist(Persist::RingGroup(Box::new(g))));
        CommandOutcome::Done
    }

    /// Removes a ring group; the store forgets it either way.
    pub(crate) fn remove_group(&mut self, id: Uuid) -> CommandOutcome {
        let removed = self.routes.remove_group(id);
        self.out.push_back(Output::Persist(Persist::RingGroupRemoved { id }));
        if removed {
            CommandOutcome::Done
        } else {
            CommandOutcome::NotFound
        }
    }
}

/// Extension `x` is `name` of `domain`.
fn same(x: &records::Extension, name: &str, domain: &str) -> bool {
    x.name == name && x.domain.eq_ignore_ascii_case(domain)
}
