//! The writes other than the coalesced records: bindings, accounts,
//! extensions, ring groups, webhooks and API keys, one [`Op`] at a time,
//! in either dialect.

use crate::db::{collect, Db, DbError, Value};
use crate::hash_api_key;
use crate::op::Op;
use crate::window::RecordSet;
use records::{
    ApiKey, Binding, CallHandling, Customer, Domain, Extension, ExtensionRecord, Origin, RingGroup,
    Timestamp, Webhook,
};
use std::collections::HashSet;
use uuid::Uuid;

/// Applies one write that is not a coalesced record.
pub(crate) fn apply(db: &mut dyn Db, op: &Op) -> Result<(), DbError> {
    match op {
        Op::UpsertBinding(b) => upsert_binding(db, b),
        Op::RemoveBinding { aor, contact } => remove_binding(db, aor, contact),
        Op::UpsertGroupcall(_) | Op::UpsertCall(_) | Op::UpsertHuntMemory(_) => {
            write_set(db, &RecordSet::single(op))
        }
        Op::UpsertCustomer(c) => upsert_customer(db, c),
        Op::UpsertDomain(d) => upsert_domain(db, d),
        Op::PutApiKey(k) => put_api_key(db, k),
        Op::RemoveApiKey(hash) => {
            db.execute("DELETE FROM api_keys WHERE hash = ?1", &[Value::Text(hash)]).map(drop)
        }
        Op::DeleteGroupcall { id, at } => {
            let sql = "UPDATE groupcalls SET tm_delete = ?2, tm_update = ?2 WHERE id = ?1";
            db.execute(sql, &[Value::Uuid(*id), Value::RecordTime(*at)]).map(drop)
        }
        Op::UpsertExtension(e) => upsert_config_extension(db, e),
        Op::DeleteExtension { name, domain } => delete_extension(db, domain, name),
        Op::UpsertExtensionRecord(r) => upsert_extension_record(db, r),
        Op::ReplaceConfigExtensions(records) => replace_config_extensions(db, records),
        Op::UpsertRingGroup(g) => upsert_ringgroup(db, g),
        Op::DeleteRingGroup(id) => delete_ringgroup(db, *id),
        Op::ReplaceConfigRingGroups(groups) => replace_config_ringgroups(db, groups),
        Op::UpsertWebhook(w) => upsert_webhook(db, w),
        Op::DeleteWebhook(customer) => delete_webhook(db, *customer),
        Op::ReplaceConfigWebhooks(hooks) => replace_config_webhooks(db, hooks),
    }
}

/// Writes a record set: groupcalls and calls by the dialect's bulk
/// statements, bindings and hunt memories row by row (they change at
/// REGISTER and answer rates, not at every call state).
pub(crate) fn write_set(db: &mut dyn Db, set: &RecordSet) -> Result<(), DbError> {
    db.write_records(set)?;
    for ((aor, contact), b) in &set.bindings {
        match b {
            Some(b) => upsert_binding(db, b)?,
            None => remove_binding(db, aor, contact)?,
        }
    }
    for m in set.hunt.values() {
        let data = serde_json::to_string(m).map_err(|e| DbError::Rejected(e.to_string()))?;
        db.execute(
            "INSERT INTO hunt_memory (group_id, data) VALUES (?1, ?2) \
             ON CONFLICT (group_id) DO UPDATE SET data = excluded.data",
            &[Value::Uuid(m.group_id), Value::Json(data)],
        )?;
    }
    Ok(())
}

fn opt_text(v: &Option<String>) -> Value<'_> {
    v.as_deref().map_or(Value::Null, Value::Text)
}

fn upsert_binding(db: &mut dyn Db, b: &Binding) -> Result<(), DbError> {
    let (source, local) = (b.source.to_string(), b.local.to_string());
    db.execute(
        "INSERT INTO bindings (aor, contact, instance, reg_id, q, expires_at, call_id, \
         cseq, transport, source, \"local\", user_agent, node_id, conn, unreachable) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT (aor, contact) DO UPDATE SET instance = excluded.instance, \
         reg_id = excluded.reg_id, q = excluded.q, expires_at = excluded.expires_at, \
         call_id = excluded.call_id, cseq = excluded.cseq, \
         transport = excluded.transport, source = excluded.source, \
         \"local\" = excluded.\"local\", user_agent = excluded.user_agent, \
         node_id = excluded.node_id, conn = excluded.conn, unreachable = excluded.unreachable",
        &[
            Value::Text(&b.aor),
            Value::Text(&b.contact),
            opt_text(&b.instance),
            b.reg_id.map_or(Value::Null, |r| Value::Int(r.into())),
            Value::Int(b.q.into()),
            Value::Time(b.expires_at),
            Value::Text(&b.call_id),
            Value::Int(b.cseq.into()),
            Value::Text(&b.transport),
            Value::Text(&source),
            Value::Text(&local),
            Value::Text(&b.user_agent),
            Value::Text(&b.node_id),
            b.conn.map_or(Value::Null, |c| Value::Int(i64::try_from(c).unwrap_or(i64::MAX))),
            Value::Int(i64::from(b.unreachable)),
        ],
    )
    .map(drop)
}

fn remove_binding(db: &mut dyn Db, aor: &str, contact: &str) -> Result<(), DbError> {
    let sql = "DELETE FROM bindings WHERE aor = ?1 AND contact = ?2";
    db.execute(sql, &[Value::Text(aor), Value::Text(contact)]).map(drop)
}

fn upsert_customer(db: &mut dyn Db, c: &Customer) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO customers (id, name, api_keys) VALUES (?1, ?2, '[]') \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, api_keys = '[]'",
        &[Value::Uuid(c.id), Value::Text(&c.name)],
    )?;
    db.execute(
        "DELETE FROM api_keys WHERE customer_id = ?1 AND origin = 'config'",
        &[Value::Uuid(c.id)],
    )?;
    for key in c.api_keys.iter().filter(|k| !k.is_empty()) {
        let key = ApiKey {
            hash: hash_api_key(key),
            customer_id: c.id,
            origin: Origin::Config,
            tm_create: Timestamp::from_micros(0),
        };
        put_api_key(db, &key)?;
    }
    Ok(())
}

fn upsert_domain(db: &mut dyn Db, d: &Domain) -> Result<(), DbError> {
    let aliases =
        serde_json::to_string(&d.aliases).map_err(|e| DbError::Rejected(e.to_string()))?;
    db.execute(
        "INSERT INTO domains (name, customer_id, aliases) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET customer_id = excluded.customer_id, \
         aliases = excluded.aliases",
        &[Value::Text(&d.name), Value::Uuid(d.customer_id), Value::Text(&aliases)],
    )
    .map(drop)
}

fn put_api_key(db: &mut dyn Db, k: &ApiKey) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO api_keys (hash, customer_id, origin, tm_create) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (hash) DO UPDATE SET customer_id = excluded.customer_id, \
         origin = excluded.origin",
        &[
            Value::Text(&k.hash),
            Value::Uuid(k.customer_id),
            Value::Text(k.origin.as_str()),
            Value::Time(k.tm_create),
        ],
    )
    .map(drop)
}

/// The `handling` column: JSON, '' for the default.
pub(crate) fn handling_text(h: &CallHandling) -> Result<String, DbError> {
    if h.is_default() {
        return Ok(String::new());
    }
    serde_json::to_string(h).map_err(|e| DbError::Rejected(e.to_string()))
}

/// An extension of the config file without its record's metadata (the
/// owner is its domain's customer).
fn upsert_config_extension(db: &mut dyn Db, e: &Extension) -> Result<(), DbError> {
    let owner = crate::reads::domain_owner(db, &e.domain)?;
    let record = ExtensionRecord::from_config(e.clone(), owner, Timestamp::from_micros(0));
    upsert_extension_record(db, &record)
}

fn delete_extension(db: &mut dyn Db, domain: &str, name: &str) -> Result<(), DbError> {
    let sql = "DELETE FROM extensions WHERE domain = ?1 AND name = ?2";
    db.execute(sql, &[Value::Text(domain), Value::Text(name)]).map(drop)
}

/// Keeps `tm_create` (when known), and `tm_update` when nothing changed.
fn upsert_extension_record(db: &mut dyn Db, r: &ExtensionRecord) -> Result<(), DbError> {
    let e = &r.extension;
    let handling = handling_text(&e.handling)?;
    db.execute(
        "INSERT INTO extensions (domain, name, ha1_md5, ha1_sha256, display_name, id, \
         customer_id, detail, origin, tm_create, tm_update, handling) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (domain, name) DO UPDATE SET \
         tm_create = CASE WHEN extensions.tm_create > ?13 THEN extensions.tm_create \
             ELSE excluded.tm_create END, \
         tm_update = CASE WHEN extensions.tm_update > ?13 AND \
             (extensions.ha1_md5, extensions.ha1_sha256, extensions.display_name, \
              extensions.customer_id, extensions.detail, extensions.origin, \
              extensions.handling) = \
             (excluded.ha1_md5, excluded.ha1_sha256, excluded.display_name, \
              excluded.customer_id, excluded.detail, excluded.origin, excluded.handling) \
             THEN extensions.tm_update ELSE excluded.tm_update END, \
         ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256, \
         display_name = excluded.display_name, id = excluded.id, \
         customer_id = excluded.customer_id, detail = excluded.detail, origin = excluded.origin, \
         handling = excluded.handling",
        &[
            Value::Text(&e.domain),
            Value::Text(&e.name),
            Value::Text(&e.ha1_md5),
            Value::Text(&e.ha1_sha256),
            Value::Text(&e.display_name),
            Value::Uuid(r.id),
            Value::Uuid(r.customer_id),
            Value::Text(&r.detail),
            Value::Text(r.origin.as_str()),
            Value::Time(r.tm_create),
            Value::Time(r.tm_update),
            Value::Text(&handling),
            Value::Time(Timestamp::from_micros(0)),
        ],
    )
    .map(drop)
}

fn replace_config_extensions(db: &mut dyn Db, records: &[ExtensionRecord]) -> Result<(), DbError> {
    let keep = records.iter().map(|r| (r.extension.domain.clone(), r.extension.name.clone()));
    let sql = "SELECT domain, name FROM extensions WHERE origin = 'config'";
    for (domain, name) in stale_config(db, sql, keep, |r| Ok((r.text(0)?, r.text(1)?)))? {
        delete_extension(db, &domain, &name)?;
    }
    for r in records {
        upsert_extension_record(db, &ExtensionRecord { origin: Origin::Config, ..r.clone() })?;
    }
    Ok(())
}

/// The keys of a table's config-origin rows (`sql` selects them, `key`
/// reads one) that are not in `keep`: what a new config file removed.
fn stale_config<K: Eq + std::hash::Hash>(
    db: &mut dyn Db,
    sql: &'static str,
    keep: impl IntoIterator<Item = K>,
    key: impl Fn(&dyn crate::db::Row) -> Result<K, String>,
) -> Result<Vec<K>, DbError> {
    let keep: HashSet<K> = keep.into_iter().collect();
    let all = collect(db, sql, &[], "config row", key)?;
    Ok(all.into_iter().filter(|k| !keep.contains(k)).collect())
}

fn upsert_ringgroup(db: &mut dyn Db, g: &RingGroup) -> Result<(), DbError> {
    let data = serde_json::to_string(g).map_err(|e| DbError::Rejected(e.to_string()))?;
    db.execute(
        "INSERT INTO ringgroups (id, customer_id, domain, number, origin, tm_create, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
         domain = excluded.domain, number = excluded.number, origin = excluded.origin, \
         data = excluded.data",
        &[
            Value::Uuid(g.id),
            Value::Uuid(g.customer_id),
            Value::Text(&g.domain),
            Value::Text(&g.number),
            Value::Text(g.origin.as_str()),
            Value::Time(g.tm_create),
            Value::Json(data),
        ],
    )
    .map(drop)
}

fn delete_ringgroup(db: &mut dyn Db, id: Uuid) -> Result<(), DbError> {
    db.execute("DELETE FROM ringgroups WHERE id = ?1", &[Value::Uuid(id)]).map(drop)
}

fn replace_config_ringgroups(db: &mut dyn Db, groups: &[RingGroup]) -> Result<(), DbError> {
    let sql = "SELECT id FROM ringgroups WHERE origin = 'config'";
    for id in stale_config(db, sql, groups.iter().map(|g| g.id), |r| r.uuid(0))? {
        delete_ringgroup(db, id)?;
    }
    for g in groups {
        upsert_ringgroup(db, &RingGroup { origin: Origin::Config, ..g.clone() })?;
    }
    Ok(())
}

fn upsert_webhook(db: &mut dyn Db, w: &Webhook) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO webhooks (customer_id, url, secret, origin, tm_create, tm_update) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (customer_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, \
         origin = excluded.origin, tm_update = excluded.tm_update",
        &[
            Value::Uuid(w.customer_id),
            Value::Text(&w.url),
            Value::Text(&w.secret),
            Value::Text(w.origin.as_str()),
            Value::Time(w.tm_create),
            Value::Time(w.tm_update),
        ],
    )
    .map(drop)
}

fn delete_webhook(db: &mut dyn Db, customer: Uuid) -> Result<(), DbError> {
    db.execute("DELETE FROM webhooks WHERE customer_id = ?1", &[Value::Uuid(customer)]).map(drop)
}

fn replace_config_webhooks(db: &mut dyn Db, hooks: &[Webhook]) -> Result<(), DbError> {
    let sql = "SELECT customer_id FROM webhooks WHERE origin = 'config'";
    for id in stale_config(db, sql, hooks.iter().map(|w| w.customer_id), |r| r.uuid(0))? {
        delete_webhook(db, id)?;
    }
    for w in hooks {
        upsert_webhook(db, &Webhook { origin: Origin::Config, ..w.clone() })?;
    }
    Ok(())
}

/// Crash reconciliation: every live groupcall and call record (of cluster
/// node `node` only, when given) closed at `at` (one transaction).
pub(crate) fn close_live(
    db: &mut dyn Db,
    at: Timestamp,
    node: Option<&str>,
) -> Result<crate::Closed, DbError> {
    crate::db::begin(db)?;
    let r = close_live_in(db, at, node);
    finish(db, r)
}

/// [`close_live`] inside the caller's transaction.
pub(crate) fn close_live_in(
    db: &mut dyn Db,
    at: Timestamp,
    node: Option<&str>,
) -> Result<crate::Closed, DbError> {
    let (groupcalls, calls) = match node {
        None => (
            "UPDATE groupcalls SET status = 'hangup', tm_update = ?1 WHERE status <> 'hangup'",
            "UPDATE calls SET status = 'hangup', hangup_by = 'local', hangup_reason = 'failed', \
             tm_hangup = ?1, tm_update = ?1 WHERE status <> 'hangup'",
        ),
        Some(_) => (
            "UPDATE groupcalls SET status = 'hangup', tm_update = ?1 \
             WHERE status <> 'hangup' AND node_id = ?2",
            "UPDATE calls SET status = 'hangup', hangup_by = 'local', hangup_reason = 'failed', \
             tm_hangup = ?1, tm_update = ?1 WHERE status <> 'hangup' AND node_id = ?2",
        ),
    };
    let mut params = vec![Value::RecordTime(at)];
    params.extend(node.map(Value::Text));
    let groupcalls = db.execute(groupcalls, &params)?;
    let calls = db.execute(calls, &params)?;
    Ok(crate::Closed { groupcalls, calls })
}

/// Retention: deletes at most `limit` ended groupcall and call records
/// created before `before`; returns how many.
pub(crate) fn expire(db: &mut dyn Db, before: Timestamp, limit: u64) -> Result<u64, DbError> {
    let params = [Value::RecordTime(before), Value::Int(i64::try_from(limit).unwrap_or(i64::MAX))];
    let mut deleted = 0;
    for sql in [
        "DELETE FROM calls WHERE id IN (SELECT id FROM calls \
         WHERE status = 'hangup' AND tm_create < ?1 LIMIT ?2)",
        "DELETE FROM groupcalls WHERE id IN (SELECT id FROM groupcalls \
         WHERE status = 'hangup' AND tm_create < ?1 LIMIT ?2)",
    ] {
        crate::db::begin(db)?;
        let r = db.execute(sql, &params);
        deleted += finish(db, r)?;
    }
    Ok(deleted)
}

/// Commits after `r` succeeded, rolls back otherwise.
pub(crate) fn finish<T>(db: &mut dyn Db, r: Result<T, DbError>) -> Result<T, DbError> {
    match r {
        Ok(v) => {
            db.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            if let Err(rb) = db.batch("ROLLBACK") {
                tracing::debug!(error = %rb, "store: rollback failed");
            }
            Err(e)
        }
    }
}
