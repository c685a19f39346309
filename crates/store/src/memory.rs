//! [`MemoryStore`]: the [`Store`] in maps, for tests and diskless runs.

use crate::{Store, StoreError};
use records::{Binding, Call, Customer, Domain, Extension, Groupcall, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

#[derive(Default)]
struct Maps {
    bindings: BTreeMap<(String, String), Binding>,
    customers: BTreeMap<Uuid, Customer>,
    domains: BTreeMap<String, Domain>,
    /// Keyed `(domain, name)`.
    extensions: BTreeMap<(String, String), Extension>,
    groupcalls: HashMap<Uuid, Groupcall>,
    calls: HashMap<Uuid, Call>,
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

/// Newest first by `tm_create` then id, not deleted, of `customer_id`,
/// strictly older than `page_token`.
fn page<'a, T: Clone + 'a>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> (Uuid, Uuid, Timestamp, Timestamp),
    customer_id: Uuid,
    page_size: usize,
    page_token: Option<Timestamp>,
) -> Vec<T> {
    let mut v: Vec<&T> = items
        .filter(|t| {
            let (_, customer, tm_create, tm_delete) = key(t);
            customer == customer_id
                && tm_delete.is_not_yet()
                && !matches!(page_token, Some(token) if tm_create >= token)
        })
        .collect();
    v.sort_by(|a, b| {
        let (a_id, _, a_tm, _) = key(a);
        let (b_id, _, b_tm, _) = key(b);
        (b_tm, b_id).cmp(&(a_tm, a_id))
    });
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
        self.maps().groupcalls.insert(groupcall.id, groupcall.clone());
    }

    fn upsert_call(&self, call: &Call) {
        self.maps().calls.insert(call.id, call.clone());
    }

    fn upsert_customer(&self, customer: &Customer) {
        self.maps().customers.insert(customer.id, customer.clone());
    }

    fn upsert_domain(&self, domain: &Domain) {
        self.maps().domains.insert(domain.name.clone(), domain.clone());
    }

    fn upsert_extension(&self, extension: &Extension) {
        let key = (extension.domain.clone(), extension.name.clone());
        self.maps().extensions.insert(key, extension.clone());
    }

    fn delete_extension(&self, name: &str, domain: &str) {
        self.maps().extensions.remove(&(domain.to_owned(), name.to_owned()));
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
        Ok(self.maps().extensions.values().cloned().collect())
    }

    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError> {
        Ok(self.maps().groupcalls.get(&id).cloned())
    }

    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Groupcall>, StoreError> {
        let maps = self.maps();
        let key = |g: &Groupcall| (g.id, g.customer_id, g.tm_create, g.tm_delete);
        Ok(page(maps.groupcalls.values(), key, customer_id, page_size, page_token))
    }

    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        Ok(self.maps().calls.get(&id).cloned())
    }

    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Call>, StoreError> {
        let maps = self.maps();
        let key = |c: &Call| (c.id, c.customer_id, c.tm_create, c.tm_delete);
        Ok(page(maps.calls.values(), key, customer_id, page_size, page_token))
    }
}
