//! The [`crate::Store`] implementation shared by [`crate::SqliteStore`] and
//! [`crate::PgStore`]: writes go to their `queue: Queue` (the writer
//! thread), reads to their `read(f)`, which runs `f` on a read connection.

/// Implements [`crate::Store`] for a type with a `queue: crate::writer::Queue`
/// field and a `fn read<T>(&self, f) -> Result<T, StoreError>` method.
macro_rules! impl_sql_store {
    ($t:ty) => {
        impl $crate::Store for $t {
            fn upsert_binding(&self, binding: &records::Binding) {
                self.queue.enqueue(Op::UpsertBinding(Box::new(binding.clone())));
            }
            fn remove_binding(&self, aor: &str, contact: &str) {
                let (aor, contact) = (aor.to_owned(), contact.to_owned());
                self.queue.enqueue(Op::RemoveBinding { aor, contact });
            }
            fn upsert_groupcall(&self, groupcall: &records::Groupcall) {
                self.queue.enqueue(Op::UpsertGroupcall(Box::new(groupcall.clone())));
            }
            fn upsert_call(&self, call: &records::Call) {
                self.queue.enqueue(Op::UpsertCall(Box::new(call.clone())));
            }
            fn upsert_customer(&self, customer: &records::Customer) {
                self.queue.enqueue(Op::UpsertCustomer(customer.clone()));
            }
            fn upsert_domain(&self, domain: &records::Domain) {
                self.queue.enqueue(Op::UpsertDomain(domain.clone()));
            }
            fn upsert_extension(&self, extension: &records::Extension) {
                self.queue.enqueue(Op::UpsertExtension(Box::new(extension.clone())));
            }
            fn delete_extension(&self, name: &str, domain: &str) {
                let (name, domain) = (name.to_owned(), domain.to_owned());
                self.queue.enqueue(Op::DeleteExtension { name, domain });
            }
            fn upsert_extension_record(&self, record: &records::ExtensionRecord) {
                self.queue.enqueue(Op::UpsertExtensionRecord(Box::new(record.clone())));
            }
            fn replace_config_extensions(&self, records: &[records::ExtensionRecord]) {
                self.queue.enqueue(Op::ReplaceConfigExtensions(records.to_vec()));
            }
            fn delete_groupcall(&self, id: uuid::Uuid, at: records::Timestamp) {
                self.queue.enqueue(Op::DeleteGroupcall { id, at });
            }
            fn upsert_ringgroup(&self, group: &records::RingGroup) {
                self.queue.enqueue(Op::UpsertRingGroup(Box::new(group.clone())));
            }
            fn delete_ringgroup(&self, id: uuid::Uuid) {
                self.queue.enqueue(Op::DeleteRingGroup(id));
            }
            fn upsert_hunt_memory(&self, memory: &records::HuntMemoryRecord) {
                self.queue.enqueue(Op::UpsertHuntMemory(Box::new(memory.clone())));
            }
            fn replace_config_ringgroups(&self, groups: &[records::RingGroup]) {
                self.queue.enqueue(Op::ReplaceConfigRingGroups(groups.to_vec()));
            }
            fn upsert_webhook(&self, webhook: &records::Webhook) {
                self.queue.enqueue(Op::UpsertWebhook(webhook.clone()));
            }
            fn delete_webhook(&self, customer_id: uuid::Uuid) {
                self.queue.enqueue(Op::DeleteWebhook(customer_id));
            }
            fn replace_config_webhooks(&self, webhooks: &[records::Webhook]) {
                self.queue.enqueue(Op::ReplaceConfigWebhooks(webhooks.to_vec()));
            }
            fn put_api_key(&self, key: &records::ApiKey) {
                self.queue.enqueue(Op::PutApiKey(key.clone()));
            }
            fn remove_api_key(&self, hash: &str) {
                self.queue.enqueue(Op::RemoveApiKey(hash.to_owned()));
            }
            fn expire_records(&self, created_before: records::Timestamp) {
                self.queue.expire(created_before);
            }
            fn flush(&self) -> Result<(), StoreError> {
                self.queue.flush()
            }
            fn close_live_records(
                &self,
                at: records::Timestamp,
                node: Option<&str>,
            ) -> Result<Closed, StoreError> {
                self.queue.close_live(at, node)
            }
            fn stats(&self) -> $crate::StoreStats {
                self.queue.stats()
            }

            fn load_bindings(
                &self,
                now: records::Timestamp,
            ) -> Result<Vec<records::Binding>, StoreError> {
                self.read(move |db| reads::load_bindings(db, now))
            }
            fn customers(&self) -> Result<Vec<records::Customer>, StoreError> {
                self.read(reads::customers)
            }
            fn domains(&self) -> Result<Vec<records::Domain>, StoreError> {
                self.read(reads::domains)
            }
            fn extensions(&self) -> Result<Vec<records::Extension>, StoreError> {
                self.read(reads::extensions)
            }
            fn extension_record(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<records::ExtensionRecord>, StoreError> {
                self.read(move |db| reads::extension_record(db, id))
            }
            fn list_extension_records(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<records::ExtensionRecord>, StoreError> {
                self.read(move |db| {
                    reads::list_extension_records(db, customer_id, page_size, after)
                })
            }
            fn ringgroup(&self, id: uuid::Uuid) -> Result<Option<records::RingGroup>, StoreError> {
                self.read(move |db| reads::ringgroup(db, id))
            }
            fn ringgroups(&self) -> Result<Vec<records::RingGroup>, StoreError> {
                self.read(reads::ringgroups)
            }
            fn hunt_memories(&self) -> Result<Vec<records::HuntMemoryRecord>, StoreError> {
                self.read(reads::hunt_memories)
            }
            fn list_ringgroups(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<records::RingGroup>, StoreError> {
                self.read(move |db| reads::list_ringgroups(db, customer_id, page_size, after))
            }
            fn webhook(
                &self,
                customer_id: uuid::Uuid,
            ) -> Result<Option<records::Webhook>, StoreError> {
                self.read(move |db| reads::webhook(db, customer_id))
            }
            fn webhooks(&self) -> Result<Vec<records::Webhook>, StoreError> {
                self.read(reads::webhooks)
            }
            fn api_key_customer(&self, hash: &str) -> Result<Option<uuid::Uuid>, StoreError> {
                let hash = hash.to_owned();
                self.read(move |db| reads::api_key_customer(db, &hash))
            }
            fn list_bindings(
                &self,
                customer_id: uuid::Uuid,
                now: records::Timestamp,
                page_size: usize,
                after: Option<(String, String)>,
            ) -> Result<Vec<records::Binding>, StoreError> {
                self.read(move |db| reads::list_bindings(db, customer_id, now, page_size, after))
            }
            fn groupcall(&self, id: uuid::Uuid) -> Result<Option<records::Groupcall>, StoreError> {
                self.read(move |db| reads::groupcall(db, id))
            }
            fn list_groupcalls(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<records::Groupcall>, StoreError> {
                self.read(move |db| reads::list_groupcalls(db, customer_id, page_size, after))
            }
            fn call(&self, id: uuid::Uuid) -> Result<Option<records::Call>, StoreError> {
                self.read(move |db| reads::call(db, id))
            }
            fn list_calls(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<records::Call>, StoreError> {
                self.read(move |db| reads::list_calls(db, customer_id, page_size, after))
            }
            fn list_groupcalls_json(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<JsonRecord>, StoreError> {
                self.read(move |db| reads::list_groupcalls_json(db, customer_id, page_size, after))
            }
            fn list_calls_json(
                &self,
                customer_id: uuid::Uuid,
                page_size: usize,
                after: Option<Cursor>,
            ) -> Result<Vec<JsonRecord>, StoreError> {
                self.read(move |db| reads::list_calls_json(db, customer_id, page_size, after))
            }
        }
    };
}

pub(crate) use impl_sql_store;
