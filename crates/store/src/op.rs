//! [`Op`]: one write, as queued by the [`crate::Store`] methods and applied
//! by the writer thread (records through `crate::window`, the rest one by
//! one through `crate::apply`).

use records::{
    ApiKey, Binding, Call, Customer, Domain, Extension, ExtensionRecord, Groupcall,
    HuntMemoryRecord, RingGroup, Timestamp, Webhook,
};
use uuid::Uuid;

/// A write waiting for the writer thread.
#[derive(Debug)]
pub(crate) enum Op {
    UpsertBinding(Box<Binding>),
    RemoveBinding { aor: String, contact: String },
    UpsertGroupcall(Box<Groupcall>),
    UpsertCall(Box<Call>),
    UpsertHuntMemory(Box<HuntMemoryRecord>),
    UpsertCustomer(Customer),
    UpsertDomain(Domain),
    UpsertExtension(Box<Extension>),
    DeleteExtension { name: String, domain: String },
    UpsertExtensionRecord(Box<ExtensionRecord>),
    ReplaceConfigExtensions(Vec<ExtensionRecord>),
    DeleteGroupcall { id: Uuid, at: Timestamp },
    UpsertRingGroup(Box<RingGroup>),
    DeleteRingGroup(Uuid),
    ReplaceConfigRingGroups(Vec<RingGroup>),
    UpsertWebhook(Webhook),
    DeleteWebhook(Uuid),
    ReplaceConfigWebhooks(Vec<Webhook>),
    PutApiKey(ApiKey),
    RemoveApiKey(String),
}

impl Op {
    /// The store method that queued it (for logs).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::UpsertBinding(_) => "upsert_binding",
            Op::RemoveBinding { .. } => "remove_binding",
            Op::UpsertGroupcall(_) => "upsert_groupcall",
            Op::UpsertCall(_) => "upsert_call",
            Op::UpsertHuntMemory(_) => "upsert_hunt_memory",
            Op::UpsertCustomer(_) => "upsert_customer",
            Op::UpsertDomain(_) => "upsert_domain",
            Op::UpsertExtension(_) => "upsert_extension",
            Op::DeleteExtension { .. } => "delete_extension",
            Op::UpsertExtensionRecord(_) => "upsert_extension_record",
            Op::ReplaceConfigExtensions(_) => "replace_config_extensions",
            Op::DeleteGroupcall { .. } => "delete_groupcall",
            Op::UpsertRingGroup(_) => "upsert_ringgroup",
            Op::DeleteRingGroup(_) => "delete_ringgroup",
            Op::ReplaceConfigRingGroups(_) => "replace_config_ringgroups",
            Op::UpsertWebhook(_) => "upsert_webhook",
            Op::DeleteWebhook(_) => "delete_webhook",
            Op::ReplaceConfigWebhooks(_) => "replace_config_webhooks",
            Op::PutApiKey(_) => "put_api_key",
            Op::RemoveApiKey(_) => "remove_api_key",
        }
    }
}
