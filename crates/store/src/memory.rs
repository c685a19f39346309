//! [`MemoryStore`]: the [`Store`] in maps, for tests and diskless runs.

use crate::{close_call, hash_api_key, Closed, Cursor, Store, StoreError};
use records::{
    ApiKey, Binding, Call, CallStatus, Customer, Domain, Extension, ExtensionRecord, Groupcall,
    GroupcallStatus, HuntMemoryRecord, Origin, RingGroup, Timestamp, Webhook, NIL,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

#[derive(Default)]
struct Maps {
    bindings: BTreeMap<(String, String), Binding>,
    customers: BTreeMap<Uuid, Customer>,
    domains: BTreeMap<String, Domain>,
    /// Keyed `(domain, name)`.
    extensions: BTreeMap<(String, String), ExtensionRecord>,
    groupcalls: HashMap<Uuid, Groupcall>,
    calls: HashMap<Uuid, Call>,
    ringgroups: BTreeMap<Uuid, RingGroup>,
    hunt: BTreeMap<Uuid, HuntMemoryRecord>,
    webhooks: BTreeMap<Uuid, Webhook>,
    api_keys: HashMap<String, ApiKey>,
}

impl Maps {
    fn domain_customer(&self, domain: &str) -> Uuid {
        self.domains
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(domain))
            .map_or(NIL, |d| d.customer_id)
    }

    /// Upserts keeping `tm_create` (and `tm_update` when unchanged), as the
    /// SQLite store does.
    fn put_extension(&mut self, mut r: ExtensionRecord) {
        let key = (r.extension.domain.clone(), r.extension.name.clone());
        if let Some(old) = self.extensions.get(&key) {
            if old.tm_create.micros() > 0 {
                r.tm_create = old.tm_create;
            }
            let same = old.extension == r.extension
                && old.detail == r.detail
                && old.customer_id == r.customer_id
                && old.origin == r.origin;
            if same && old.tm_update.micros() > 0 {
                r.tm_update = old.tm_update;
            }
            if old.id != r.id && self.extensions.values().any(|e| e.id == r.id) {
                return; // the id belongs to another extension (a unique index in SQL)
            }
        } else if self.extensions.values().any(|e| e.id == r.id) {
            return;
        }
        self.extensions.insert(key, r);
    }

    fn put_ringgroup(&mut self, mut g: RingGroup) {
        if let Some(old) = self.ringgroups.get(&g.id) {
            g.tm_create = old.tm_create;
        }
        self.ringgroups.insert(g.id, g);
    }
}

/// A [`Store`] keeping everything in memory: nothing survives the process.
/// Writes are applied at once (under a short lock), so [`Store::flush`] has
/// nothing to wait for. Same orderings and filters as [`crate::SqliteStore`].
#[derive(Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Newest first by `(tm_create, id)`, those `keep` accepts, after `after`.
fn page<'a, T: Clone + 'a>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> (Timestamp, Uuid),
    keep: impl Fn(&T) -> bool,
    page_size: usize,
    after: Option<Cursor>,
) -> Vec<T> {
    let mut v: Vec<&T> = items
        .filter(|t| {
            let (tm, id) = key(t);
            keep(t) && !matches!(after, Some(c) if !c.admits(tm, id))
        })
        .collect();
    v.sort_by_key(|t| std::cmp::Reverse(key(t)));
    v.into_iter().take(page_size).cloned().collect()
}

impl Store for MemoryStore {
    fn upsert_binding(&self, binding: &Binding) {
        let key = (binding.aor.clone(), binding.contact.clone());
        self.maps().bindings.insert(key, binding.clone());
    }

    fn remove_binding(&self, aor: &str, contact: &str) {
        self.maps().bindings.remove(&(aor.to_owned(), contact.to_owned()));
    }

    fn upsert_groupcall(&self, groupcall: &Groupcall) {
        let mut g = groupcall.clone();
        let mut maps = self.maps();
        if let Some(old) = maps.groupcalls.get(&g.id) {
            if !old.tm_delete.is_not_yet() {
                g.tm_delete = old.tm_delete;
            }
        }
        maps.groupcalls.insert(g.id, g);
    }

    fn upsert_call(&self, call: &Call) {
        self.maps().calls.insert(call.id, call.clone());
    }

    fn upsert_customer(&self, customer: &Customer) {
        let mut maps = self.maps();
        let id = customer.id;
        maps.api_keys.retain(|_, k| !(k.customer_id == id && k.origin == Origin::Config));
        for key in customer.api_keys.iter().filter(|k| !k.is_empty()) {
            let hash = hash_api_key(key);
            let k = ApiKey {
                hash: hash.clone(),
                customer_id: id,
                origin: Origin::Config,
                tm_create: Timestamp::from_micros(0),
            };
            maps.api_keys.insert(hash, k);
        }
        let stored = Customer { api_keys: Vec::new(), ..customer.clone() };
        maps.customers.insert(id, stored);
    }

    fn upsert_domain(&self, domain: &Domain) {
        self.maps().domains.insert(domain.name.clone(), domain.clone());
    }

    fn upsert_extension(&self, extension: &Extension) {
        let mut maps = self.maps();
        let customer_id = maps.domain_customer(&extension.domain);
        let key = (extension.domain.clone(), extension.name.clone());
        let r = match maps.extensions.get(&key) {
            Some(old) => ExtensionRecord { extension: extension.clone(), ..old.clone() },
            None => ExtensionRecord {
                customer_id,
                ..ExtensionRecord::from_config(extension.clone(), NIL, Timestamp::from_micros(0))
            },
        };
        maps.extensions.insert(key, r);
    }

    fn delete_extension(&self, name: &str, domain: &str) {
        self.maps().extensions.remove(&(domain.to_owned(), name.to_owned()));
    }

    fn upsert_extension_record(&self, record: &ExtensionRecord) {
        self.maps().put_extension(record.clone());
    }

    fn replace_config_extensions(&self, records: &[ExtensionRecord]) {
        let mut maps = self.maps();
        let keep: std::collections::HashSet<(String, String)> = records
            .iter()
            .map(|r| (r.extension.domain.clone(), r.extension.name.clone()))
            .collect();
        maps.extensions.retain(|k, e| e.origin != Origin::Config || keep.contains(k));
        for r in records {
            // Config wins over an API extension of the same name.
            let key = (r.extension.domain.clone(), r.extension.name.clone());
            if maps.extensions.get(&key).is_some_and(|e| e.origin != Origin::Config) {
                maps.extensions.remove(&key);
            }
            maps.put_extension(ExtensionRecord { origin: Origin::Config, ..r.clone() });
        }
    }

    fn delete_groupcall(&self, id: Uuid, at: Timestamp) {
        if let Some(g) = self.maps().groupcalls.get_mut(&id) {
            g.tm_delete = at;
            g.tm_update = at;
        }
    }

    fn upsert_ringgroup(&self, group: &RingGroup) {
        self.maps().put_ringgroup(group.clone());
    }

    fn delete_ringgroup(&self, id: Uuid) {
        self.maps().ringgroups.remove(&id);
    }

    fn upsert_hunt_memory(&self, memory: &HuntMemoryRecord) {
        self.maps().hunt.insert(memory.group_id, memory.clone());
    }

    fn replace_config_ringgroups(&self, groups: &[RingGroup]) {
        let mut maps = self.maps();
        let keep: std::collections::HashSet<Uuid> = groups.iter().map(|g| g.id).collect();
        maps.ringgroups.retain(|id, g| g.origin != Origin::Config || keep.contains(id));
        for g in groups {
            maps.put_ringgroup(RingGroup { origin: Origin::Config, ..g.clone() });
        }
    }

    fn upsert_webhook(&self, webhook: &Webhook) {
        let mut w = webhook.clone();
        let mut maps = self.maps();
        if let Some(old) = maps.webhooks.get(&w.customer_id) {
            w.tm_create = old.tm_create;
        }
        maps.webhooks.insert(w.customer_id, w);
    }

    fn delete_webhook(&self, customer_id: Uuid) {
        self.maps().webhooks.remove(&customer_id);
    }

    fn replace_config_webhooks(&self, webhooks: &[Webhook]) {
        let keep: std::collections::HashSet<Uuid> =
            webhooks.iter().map(|w| w.customer_id).collect();
        self.maps().webhooks.retain(|c, w| w.origin != Origin::Config || keep.contains(c));
        for w in webhooks {
            self.upsert_webhook(&Webhook { origin: Origin::Config, ..w.clone() });
        }
    }

    fn put_api_key(&self, key: &ApiKey) {
        self.maps().api_keys.insert(key.hash.clone(), key.clone());
    }

    fn remove_api_key(&self, hash: &str) {
        self.maps().api_keys.remove(hash);
    }

    fn expire_records(&self, created_before: Timestamp) {
        let mut m = self.maps();
        m.calls.retain(|_, c| c.status != CallStatus::Hangup || c.tm_create >= created_before);
        m.groupcalls
            .retain(|_, g| g.status != GroupcallStatus::Hangup || g.tm_create >= created_before);
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn load_bindings(&self, now: Timestamp) -> Result<Vec<Binding>, StoreError> {
        let mut maps = self.maps();
        maps.bindings.retain(|_, b| b.expires_at > now);
        Ok(maps.bindings.values().cloned().collect())
    }

    fn customers(&self) -> Result<Vec<Customer>, StoreError> {
        Ok(self.maps().customers.values().cloned().collect())
    }

    fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        Ok(self.maps().domains.values().cloned().collect())
    }

    fn extensions(&self) -> Result<Vec<Extension>, StoreError> {
        Ok(self.maps().extensions.values().map(|e| e.extension.clone()).collect())
    }

    fn extension_record(&self, id: Uuid) -> Result<Option<ExtensionRecord>, StoreError> {
        Ok(self.maps().extensions.values().find(|e| e.id == id).cloned())
    }

    fn list_extension_records(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<ExtensionRecord>, StoreError> {
        let maps = self.maps();
        let key = |e: &ExtensionRecord| (e.tm_create, e.id);
        let keep = |e: &ExtensionRecord| e.customer_id == customer_id;
        Ok(page(maps.extensions.values(), key, keep, page_size, after))
    }

    fn ringgroup(&self, id: Uuid) -> Result<Option<RingGroup>, StoreError> {
        Ok(self.maps().ringgroups.get(&id).cloned())
    }

    fn ringgroups(&self) -> Result<Vec<RingGroup>, StoreError> {
        Ok(self.maps().ringgroups.values().cloned().collect())
    }

    fn hunt_memories(&self) -> Result<Vec<HuntMemoryRecord>, StoreError> {
        Ok(self.maps().hunt.values().cloned().collect())
    }

    fn list_ringgroups(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<RingGroup>, StoreError> {
        let maps = self.maps();
        let key = |g: &RingGroup| (g.tm_create, g.id);
        let keep = |g: &RingGroup| g.customer_id == customer_id;
        Ok(page(maps.ringgroups.values(), key, keep, page_size, after))
    }

    fn webhook(&self, customer_id: Uuid) -> Result<Option<Webhook>, StoreError> {
        Ok(self.maps().webhooks.get(&customer_id).cloned())
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        Ok(self.maps().webhooks.values().cloned().collect())
    }

    fn api_key_customer(&self, hash: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.maps().api_keys.get(hash).map(|k| k.customer_id))
    }

    fn list_bindings(
        &self,
        customer_id: Uuid,
        now: Timestamp,
        page_size: usize,
        after: Option<(String, String)>,
    ) -> Result<Vec<Binding>, StoreError> {
        let maps = self.maps();
        let domains: Vec<String> = maps
            .domains
            .values()
            .filter(|d| d.customer_id == customer_id)
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        Ok(maps
            .bindings
            .iter()
            .filter(|(k, b)| {
                let domain = b.aor.split_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
                b.expires_at > now
                    && domains.contains(&domain)
                    && !matches!(&after, Some(a) if *k <= a)
            })
            .take(page_size)
            .map(|(_, b)| b.clone())
            .collect())
    }

    fn close_live_records(&self, at: Timestamp, node: Option<&str>) -> Result<Closed, StoreError> {
        let mut maps = self.maps();
        let mut closed = Closed::default();
        let of = |n: &str| match node {
            Some(node) => node == n,
            None => true,
        };
        let live = |g: &&mut Groupcall| g.status != GroupcallStatus::Hangup && of(&g.node_id);
        for g in maps.groupcalls.values_mut().filter(live) {
            g.status = GroupcallStatus::Hangup;
            g.tm_update = at;
            closed.groupcalls += 1;
        }
        for c in
            maps.calls.values_mut().filter(|c| c.status != CallStatus::Hangup && of(&c.node_id))
        {
            close_call(c, at);
            closed.calls += 1;
        }
        Ok(closed)
    }

    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError> {
        Ok(self.maps().groupcalls.get(&id).cloned())
    }

    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Groupcall>, StoreError> {
        let maps = self.maps();
        let key = |g: &Groupcall| (g.tm_create, g.id);
        let keep = |g: &Groupcall| g.customer_id == customer_id && g.tm_delete.is_not_yet();
        Ok(page(maps.groupcalls.values(), key, keep, page_size, after))
    }

    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        Ok(self.maps().calls.get(&id).cloned())
    }

    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Call>, StoreError> {
        let maps = self.maps();
        let key = |c: &Call| (c.tm_create, c.id);
        let keep = |c: &Call| c.customer_id == customer_id && c.tm_delete.is_not_yet();
        Ok(page(maps.calls.values(), key, keep, page_size, after))
    }
}
