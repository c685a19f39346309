//! The [`crate::Store`] reads, in either dialect.

use crate::columns::{self, sql};
use crate::db::{collect, one, Db, DbError, Dialect, Row, Value};
use crate::{Cursor, JsonRecord};
use records::{
    config_id, Binding, Call, CallHandling, Customer, Domain, Extension, ExtensionRecord,
    Groupcall, HuntMemoryRecord, Origin, RingGroup, Timestamp, Webhook, NIL,
};
use uuid::Uuid;

fn limit(page_size: usize) -> Value<'static> {
    Value::Int(i64::try_from(page_size).unwrap_or(i64::MAX))
}

/// `(tm_create, id)` bounds of a page: before the cursor, or before
/// everything.
fn cursor(after: Option<Cursor>) -> (Timestamp, Uuid) {
    match after {
        Some(c) => (c.tm_create, c.id),
        None => (Timestamp::from_micros(i64::MAX), Uuid::max()),
    }
}

const BINDING_COLUMNS: &str = "aor, contact, instance, reg_id, q, expires_at, call_id, cseq, \
     transport, source, \"local\", user_agent, node_id, conn, unreachable";

fn binding_from_row(r: &dyn Row) -> Result<Binding, String> {
    let aor = r.text(0)?;
    let contact = r.text(1)?;
    let ctx = |e: String| format!("binding {aor} {contact}: {e}");
    let s = |e: std::num::TryFromIntError| e.to_string();
    let a = |e: std::net::AddrParseError| e.to_string();
    Ok(Binding {
        instance: r.opt_text(2).map_err(ctx)?,
        reg_id: r
            .opt_int(3)
            .map_err(ctx)?
            .map(u32::try_from)
            .transpose()
            .map_err(s)
            .map_err(ctx)?,
        q: u16::try_from(r.int(4).map_err(ctx)?).map_err(s).map_err(ctx)?,
        expires_at: r.time(5).map_err(ctx)?,
        call_id: r.text(6).map_err(ctx)?,
        cseq: u32::try_from(r.int(7).map_err(ctx)?).map_err(s).map_err(ctx)?,
        transport: r.text(8).map_err(ctx)?,
        source: r.text(9).map_err(ctx)?.parse().map_err(a).map_err(ctx)?,
        local: r.text(10).map_err(ctx)?.parse().map_err(a).map_err(ctx)?,
        user_agent: r.text(11).map_err(ctx)?,
        node_id: r.text(12).map_err(ctx)?,
        conn: r.opt_int(13).map_err(ctx)?.and_then(|c| u64::try_from(c).ok()),
        unreachable: r.int(14).map_err(ctx)? != 0,
        aor,
        contact,
    })
}

/// The bindings not expired at `now`, after deleting the expired ones.
pub(crate) fn load_bindings(db: &mut dyn Db, now: Timestamp) -> Result<Vec<Binding>, DbError> {
    let deleted = db.execute("DELETE FROM bindings WHERE expires_at <= ?1", &[Value::Time(now)])?;
    if deleted > 0 {
        tracing::info!(deleted, "store: deleted expired bindings");
    }
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE expires_at > ?1 ORDER BY aor, contact"
        )
    });
    collect(db, sql, &[Value::Time(now)], "binding", binding_from_row)
}

/// A page of the bindings of the customer's domains.
pub(crate) fn list_bindings(
    db: &mut dyn Db,
    customer_id: Uuid,
    now: Timestamp,
    page_size: usize,
    after: Option<(String, String)>,
) -> Result<Vec<Binding>, DbError> {
    let (aor, contact) = after.unwrap_or_default();
    let sql = match db.dialect() {
        Dialect::Sqlite => {
            "SELECT aor, contact, instance, reg_id, q, expires_at, call_id, cseq, transport, \
             source, \"local\", user_agent, node_id, conn, unreachable FROM bindings \
             WHERE expires_at > ?1 AND (aor, contact) > (?2, ?3) \
             AND lower(substr(aor, instr(aor, '@') + 1)) IN \
                 (SELECT lower(name) FROM domains WHERE customer_id = ?4) \
             ORDER BY aor, contact LIMIT ?5"
        }
        Dialect::Postgres => {
            "SELECT aor, contact, instance, reg_id, q, expires_at, call_id, cseq, transport, \
             source, \"local\", user_agent, node_id, conn, unreachable FROM bindings \
             WHERE expires_at > ?1 AND (aor, contact) > (?2, ?3) \
             AND lower(substr(aor, strpos(aor, '@') + 1)) IN \
                 (SELECT lower(name) FROM domains WHERE customer_id = ?4) \
             ORDER BY aor, contact LIMIT ?5"
        }
    };
    let params = [
        Value::Time(now),
        Value::Text(&aor),
        Value::Text(&contact),
        Value::Uuid(customer_id),
        limit(page_size),
    ];
    collect(db, sql, &params, "binding", binding_from_row)
}

fn json_list(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

pub(crate) fn customers(db: &mut dyn Db) -> Result<Vec<Customer>, DbError> {
    let sql = "SELECT id, name, api_keys FROM customers ORDER BY id";
    collect(db, sql, &[], "customer", |r| {
        Ok(Customer { id: r.uuid(0)?, name: r.text(1)?, api_keys: json_list(&r.text(2)?)? })
    })
}

pub(crate) fn domains(db: &mut dyn Db) -> Result<Vec<Domain>, DbError> {
    let sql = "SELECT name, customer_id, aliases FROM domains ORDER BY name";
    collect(db, sql, &[], "domain", |r| {
        let name = r.text(0)?;
        Ok(Domain {
            customer_id: r.uuid(1).map_err(|e| format!("domain {name}: {e}"))?,
            aliases: json_list(&r.text(2)?)?,
            name,
        })
    })
}

/// The customer owning `domain` (case-insensitive), nil when none.
pub(crate) fn domain_owner(db: &mut dyn Db, domain: &str) -> Result<Uuid, DbError> {
    let sql = "SELECT customer_id FROM domains WHERE lower(name) = lower(?1)";
    Ok(one(db, sql, &[Value::Text(domain)], "domain", |r| r.uuid(0))?.unwrap_or(NIL))
}

/// The `handling` column: JSON, '' for the default.
fn handling_col(text: &str) -> Result<CallHandling, String> {
    if text.is_empty() {
        return Ok(CallHandling::default());
    }
    serde_json::from_str(text).map_err(|e| format!("bad handling {text:?}: {e}"))
}

pub(crate) fn extensions(db: &mut dyn Db) -> Result<Vec<Extension>, DbError> {
    let sql = "SELECT name, domain, ha1_md5, ha1_sha256, display_name, handling FROM extensions \
               ORDER BY domain, name";
    collect(db, sql, &[], "extension", |r| {
        Ok(Extension {
            name: r.text(0)?,
            domain: r.text(1)?,
            ha1_md5: r.text(2)?,
            ha1_sha256: r.text(3)?,
            display_name: r.text(4)?,
            handling: handling_col(&r.text(5)?)?,
        })
    })
}

macro_rules! extension_select {
    ($tail:literal) => {
        concat!(
            "SELECT domain, name, ha1_md5, ha1_sha256, display_name, id, customer_id, detail, \
             origin, tm_create, tm_update, handling FROM extensions ",
            $tail
        )
    };
}

fn extension_record_from_row(r: &dyn Row) -> Result<ExtensionRecord, String> {
    let domain = r.text(0)?;
    let name = r.text(1)?;
    let ctx = |e: String| format!("extension {name}@{domain}: {e}");
    let id = match r.opt_text(5).map_err(ctx)? {
        Some(_) => r.uuid(5).map_err(ctx)?,
        None => config_id(&format!("{name}@{domain}")),
    };
    Ok(ExtensionRecord {
        id,
        customer_id: r.uuid(6).map_err(ctx)?,
        detail: r.text(7).map_err(ctx)?,
        origin: Origin::from_str_lossy(&r.text(8).map_err(ctx)?),
        tm_create: r.time(9).map_err(ctx)?,
        tm_update: r.time(10).map_err(ctx)?,
        tm_delete: Timestamp::NOT_YET,
        extension: Extension {
            ha1_md5: r.text(2).map_err(ctx)?,
            ha1_sha256: r.text(3).map_err(ctx)?,
            display_name: r.text(4).map_err(ctx)?,
            handling: handling_col(&r.text(11).map_err(ctx)?).map_err(ctx)?,
            name: name.clone(),
            domain: domain.clone(),
        },
    })
}

pub(crate) fn extension_record(
    db: &mut dyn Db,
    id: Uuid,
) -> Result<Option<ExtensionRecord>, DbError> {
    let sql = extension_select!("WHERE id = ?1");
    one(db, sql, &[Value::Uuid(id)], "extension", extension_record_from_row)
}

pub(crate) fn list_extension_records(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<ExtensionRecord>, DbError> {
    let sql = extension_select!(
        "WHERE customer_id = ?1 AND (tm_create, id) < (?2, ?3) \
         ORDER BY tm_create DESC, id DESC LIMIT ?4"
    );
    let (before, before_id) = cursor(after);
    let params =
        [Value::Uuid(customer_id), Value::Time(before), Value::Uuid(before_id), limit(page_size)];
    collect(db, sql, &params, "extension", extension_record_from_row)
}

/// A ring group row: the JSON record, with the columns that the store owns
/// (`tm_create` kept across upserts) laid over it.
fn ringgroup_from_row(r: &dyn Row) -> Result<RingGroup, String> {
    let id = r.uuid(0)?;
    let mut g: RingGroup =
        serde_json::from_str(&r.json(1)?).map_err(|e| format!("ringgroup {id}: {e}"))?;
    g.tm_create = r.time(2)?;
    Ok(g)
}

pub(crate) fn ringgroup(db: &mut dyn Db, id: Uuid) -> Result<Option<RingGroup>, DbError> {
    let sql = "SELECT id, data, tm_create FROM ringgroups WHERE id = ?1";
    one(db, sql, &[Value::Uuid(id)], "ringgroup", ringgroup_from_row)
}

pub(crate) fn ringgroups(db: &mut dyn Db) -> Result<Vec<RingGroup>, DbError> {
    let sql = "SELECT id, data, tm_create FROM ringgroups ORDER BY id";
    collect(db, sql, &[], "ringgroup", ringgroup_from_row)
}

pub(crate) fn list_ringgroups(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<RingGroup>, DbError> {
    let sql = "SELECT id, data, tm_create FROM ringgroups WHERE customer_id = ?1 \
               AND (tm_create, id) < (?2, ?3) ORDER BY tm_create DESC, id DESC LIMIT ?4";
    let (before, before_id) = cursor(after);
    let params =
        [Value::Uuid(customer_id), Value::Time(before), Value::Uuid(before_id), limit(page_size)];
    collect(db, sql, &params, "ringgroup", ringgroup_from_row)
}

pub(crate) fn hunt_memories(db: &mut dyn Db) -> Result<Vec<HuntMemoryRecord>, DbError> {
    let sql = "SELECT data FROM hunt_memory ORDER BY group_id";
    collect(db, sql, &[], "hunt_memory", |r| {
        serde_json::from_str(&r.json(0)?).map_err(|e| e.to_string())
    })
}

fn webhook_from_row(r: &dyn Row) -> Result<Webhook, String> {
    Ok(Webhook {
        customer_id: r.uuid(0)?,
        url: r.text(1)?,
        secret: r.text(2)?,
        origin: Origin::from_str_lossy(&r.text(3)?),
        tm_create: r.time(4)?,
        tm_update: r.time(5)?,
    })
}

pub(crate) fn webhook(db: &mut dyn Db, customer_id: Uuid) -> Result<Option<Webhook>, DbError> {
    let sql = "SELECT customer_id, url, secret, origin, tm_create, tm_update FROM webhooks \
               WHERE customer_id = ?1";
    one(db, sql, &[Value::Uuid(customer_id)], "webhook", webhook_from_row)
}

pub(crate) fn webhooks(db: &mut dyn Db) -> Result<Vec<Webhook>, DbError> {
    let sql = "SELECT customer_id, url, secret, origin, tm_create, tm_update FROM webhooks \
               ORDER BY customer_id";
    collect(db, sql, &[], "webhook", webhook_from_row)
}

pub(crate) fn api_key_customer(db: &mut dyn Db, hash: &str) -> Result<Option<Uuid>, DbError> {
    let sql = "SELECT customer_id FROM api_keys WHERE hash = ?1";
    one(db, sql, &[Value::Text(hash)], "api_key", |r| r.uuid(0))
}

pub(crate) fn groupcall(db: &mut dyn Db, id: Uuid) -> Result<Option<Groupcall>, DbError> {
    let sql = sql::by_id("groupcalls");
    one(db, sql, &[Value::Uuid(id)], "groupcall", columns::groupcall_from_row)
}

pub(crate) fn call(db: &mut dyn Db, id: Uuid) -> Result<Option<Call>, DbError> {
    one(db, sql::by_id("calls"), &[Value::Uuid(id)], "call", columns::call_from_row)
}

/// A page of `table`'s records of a customer, decoded by `f`.
pub(crate) fn page<T>(
    db: &mut dyn Db,
    table: &'static str,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
    f: impl Fn(&dyn Row) -> Result<T, String>,
) -> Result<Vec<T>, DbError> {
    let (before, before_id) = cursor(after);
    let params = [
        Value::Uuid(customer_id),
        Value::RecordTime(Timestamp::NOT_YET),
        Value::RecordTime(before),
        Value::Uuid(before_id),
        limit(page_size),
    ];
    collect(db, sql::page(table), &params, table, f)
}

/// [`page`] of groupcalls.
pub(crate) fn list_groupcalls(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<Groupcall>, DbError> {
    page(db, "groupcalls", customer_id, page_size, after, columns::groupcall_from_row)
}

/// [`page`] of calls.
pub(crate) fn list_calls(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<Call>, DbError> {
    page(db, "calls", customer_id, page_size, after, columns::call_from_row)
}

/// [`list_groupcalls`] as JSON text.
pub(crate) fn list_groupcalls_json(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<JsonRecord>, DbError> {
    page(db, "groupcalls", customer_id, page_size, after, |r| {
        let g = columns::groupcall_from_row(r)?;
        Ok(JsonRecord::of(&g, g.tm_create, g.id))
    })
}

/// [`list_calls`] as JSON text.
pub(crate) fn list_calls_json(
    db: &mut dyn Db,
    customer_id: Uuid,
    page_size: usize,
    after: Option<Cursor>,
) -> Result<Vec<JsonRecord>, DbError> {
    page(db, "calls", customer_id, page_size, after, |r| {
        let c = columns::call_from_row(r)?;
        Ok(JsonRecord::of(&c, c.tm_create, c.id))
    })
}
