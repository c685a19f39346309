//! [`SqliteStore`]: one writer thread with its own connection, batching
//! queued writes into transactions; reads on a second connection.

use crate::{hash_api_key, schema, Closed, Cursor, JsonRecord, Store, StoreError, StoreStats};
use records::{
    config_id, ApiKey, Binding, Call, CallHandling, Customer, Domain, Extension, ExtensionRecord,
    Groupcall, HuntMemoryRecord, Origin, RingGroup, Timestamp, Webhook, NIL,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Tuning of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Most writes waiting in the queue; past it writes are dropped (counted,
    /// and logged at the 1st, 2nd, 4th, 8th... drop), never waited for.
    /// Default 1,000,000.
    pub queue_bound: u64,
    /// Most writes in one transaction. Default 1000.
    pub max_batch: usize,
    /// Longest a write waits for its batch to fill, from the batch's first
    /// write. Default 0: group commit — the writer commits whatever is queued
    /// as soon as it is free, so batches grow only under load and a write is
    /// durable about one commit after it was queued.
    pub max_delay: Duration,
    /// SQLite `busy_timeout` of both connections. Default 5 s.
    pub busy_timeout: Duration,
    /// `synchronous=FULL` (every commit fsynced: survives power loss) rather
    /// than `NORMAL` (survives a process crash). Default `false`.
    pub full_sync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue_bound: 1_000_000,
            max_batch: 1000,
            max_delay: Duration::ZERO,
            busy_timeout: Duration::from_secs(5),
            full_sync: false,
        }
    }
}

/// A write waiting for the writer thread.
enum Op {
    UpsertBinding(Box<Binding>),
    RemoveBinding { aor: String, contact: String },
    UpsertGroupcall(Box<Groupcall>),
    UpsertCall(Box<Call>),
    UpsertCustomer(Customer),
    UpsertDomain(Domain),
    UpsertExtension(Box<Extension>),
    DeleteExtension { name: String, domain: String },
    UpsertExtensionRecord(Box<ExtensionRecord>),
    ReplaceConfigExtensions(Vec<ExtensionRecord>),
    DeleteGroupcall { id: Uuid, at: Timestamp },
    UpsertRingGroup(Box<RingGroup>),
    UpsertHuntMemory(Box<HuntMemoryRecord>),
    DeleteRingGroup(Uuid),
    ReplaceConfigRingGroups(Vec<RingGroup>),
    UpsertWebhook(Webhook),
    DeleteWebhook(Uuid),
    ReplaceConfigWebhooks(Vec<Webhook>),
    PutApiKey(ApiKey),
    RemoveApiKey(String),
}

/// Drops every groupcall or call upsert that a later upsert of the same
/// record in `batch` supersedes; everything else keeps its order.
fn coalesce(batch: Vec<Op>) -> Vec<Op> {
    use std::collections::HashSet;
    let mut seen: HashSet<(u8, uuid::Uuid)> = HashSet::new();
    let mut keep = vec![true; batch.len()];
    for (i, op) in batch.iter().enumerate().rev() {
        let key = match op {
            Op::UpsertGroupcall(g) => (0u8, g.id),
            Op::UpsertCall(c) => (1u8, c.id),
            _ => continue,
        };
        if !seen.insert(key) {
            keep[i] = false;
        }
    }
    batch.into_iter().zip(keep).filter_map(|(op, k)| k.then_some(op)).collect()
}

/// What the writer thread receives.
enum Msg {
    Op(Op),
    /// Commit what came before, then answer with the number of writes that
    /// failed since the previous flush.
    Flush(mpsc::SyncSender<u64>),
    /// Commit what came before, then close the live records (crash
    /// reconciliation) and answer with the counts.
    Close(Timestamp, mpsc::SyncSender<Result<Closed, String>>),
}

/// What ends a batch early: a flush or a reconciliation, answered after the
/// batch is committed.
enum Barrier {
    Flush(mpsc::SyncSender<u64>),
    Close(Timestamp, mpsc::SyncSender<Result<Closed, String>>),
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
}

/// The SQLite [`Store`]: a database file in WAL mode, written by a background
/// thread. Dropping it drains the queue, commits and joins the thread.
///
/// One process at a time should own a database file (SQLite would let two
/// share it, but a server keeps what it loaded in memory and would not see
/// the other's writes). `:memory:` does not work (two connections, two
/// databases): use [`crate::MemoryStore`].
pub struct SqliteStore {
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    queue_bound: u64,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn configure(conn: &Connection, opts: &Options) -> Result<(), StoreError> {
    conn.busy_timeout(opts.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "store: SQLite did not switch to WAL mode");
    }
    conn.pragma_update(None, "synchronous", if opts.full_sync { "FULL" } else { "NORMAL" })?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default
    /// [`Options`], applying missing schema migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Options::default())
    }

    /// Opens (creating if needed) the database at `path`, applying missing
    /// schema migrations, and starts the writer thread.
    pub fn open_with(path: impl AsRef<Path>, opts: Options) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut wconn = Connection::open(&path)?;
        configure(&wconn, &opts)?;
        let applied = schema::migrate_to(&mut wconn, schema::MIGRATIONS.len())?;
        backfill(&mut wconn)?;
        let rconn = Connection::open(&path)?;
        configure(&rconn, &opts)?;
        tracing::info!(path = %path.display(), migrations_applied = applied, "store: opened");

        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer { conn: wconn, rx, opts: opts.clone(), counters: counters.clone() };
        let handle =
            std::thread::Builder::new().name("store-writer".into()).spawn(move || writer.run())?;
        Ok(SqliteStore {
            tx: Some(tx),
            writer: Some(handle),
            reader: Mutex::new(rconn),
            counters,
            queue_bound: opts.queue_bound,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn enqueue(&self, op: Op) {
        let c = &self.counters;
        if c.queued.fetch_add(1, Relaxed) >= self.queue_bound {
            c.queued.fetch_sub(1, Relaxed);
            let n = c.dropped.fetch_add(1, Relaxed) + 1;
            // Logged at the 1st, 2nd, 4th, 8th... drop: never a flood.
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    bound = self.queue_bound,
                    "store: queue full, write dropped"
                );
            }
            return;
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(Msg::Op(op)).is_ok(),
            None => false,
        };
        if !sent {
            c.queued.fetch_sub(1, Relaxed);
            let n = c.dropped.fetch_add(1, Relaxed) + 1;
            tracing::error!(dropped = n, "store: writer thread gone, write dropped");
        }
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn list_json<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.list_rows(table, customer_id, page_size, after, |_, id, data| {
            match serde_json::from_str(&data) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(table, id, error = %e, "store: skipping corrupt row"),
            }
        })?;
        Ok(out)
    }

    /// A page as the stored JSON text, each row checked to be JSON (cheaply:
    /// nothing is built) so that a corrupt row is skipped, as when decoding.
    fn list_raw(
        &self,
        table: &str,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<JsonRecord>, StoreError> {
        let mut out = Vec::with_capacity(page_size);
        self.list_rows(table, customer_id, page_size, after, |tm_create, id, json| {
            let checked = serde_json::from_str::<serde::de::IgnoredAny>(&json)
                .map_err(|e| e.to_string())
                .and_then(|_| Uuid::parse_str(&id).map_err(|e| e.to_string()));
            match checked {
                Ok(uuid) => out.push(JsonRecord { tm_create, id: uuid, json }),
                Err(e) => tracing::warn!(table, id, error = %e, "store: skipping corrupt row"),
            }
        })?;
        Ok(out)
    }

    /// Calls `each(tm_create, id, data)` for the rows of a page.
    fn list_rows(
        &self,
        table: &str,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
        mut each: impl FnMut(Timestamp, String, String),
    ) -> Result<(), StoreError> {
        let conn = self.reader();
        // The row-value comparison walks the (customer_id, tm_create DESC,
        // id DESC) index from the cursor: no record outside the page is read.
        let sql = format!(
            "SELECT tm_create, id, data FROM {table} WHERE customer_id = ?1 AND tm_delete = ?2 \
             AND (tm_create, id) < (?3, ?4) ORDER BY tm_create DESC, id DESC LIMIT ?5"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let (before, before_id) = cursor_params(after);
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![customer_id.to_string(), Timestamp::NOT_YET.micros(), before, before_id, limit],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
        )?;
        for row in rows {
            let (tm_create, id, data) = row?;
            each(Timestamp::from_micros(tm_create), id, data);
        }
        Ok(())
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        id: Uuid,
    ) -> Result<Option<T>, StoreError> {
        let conn = self.reader();
        let sql = format!("SELECT data FROM {table} WHERE id = ?1");
        let data: Option<String> =
            conn.prepare_cached(&sql)?.query_row([id.to_string()], |r| r.get(0)).optional()?;
        data.map(|d| {
            serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("{table} {id}: {e}")))
        })
        .transpose()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, commit
        // and return.
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            if h.join().is_err() {
                tracing::error!("store: writer thread panicked");
            }
        }
    }
}

/// `(tm_create, id)` bounds of a page: before the cursor, or before
/// everything.
fn cursor_params(after: Option<Cursor>) -> (i64, String) {
    match after {
        Some(c) => (c.tm_create.micros(), c.id.to_string()),
        None => (i64::MAX, String::new()),
    }
}

/// Rows written before the schema had them: extension ids (UUID v5, which
/// SQL cannot compute) and API keys stored in plain text in `customers`
/// (moved to `api_keys`, hashed). Idempotent; nothing to do on a new file.
fn backfill(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let missing: Vec<(String, String)> = tx
        .prepare("SELECT domain, name FROM extensions WHERE id IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (domain, name) in &missing {
        tx.execute(
            "UPDATE extensions SET id = ?1 WHERE domain = ?2 AND name = ?3",
            params![config_id(&format!("{name}@{domain}")).to_string(), domain, name],
        )?;
    }
    let plain: Vec<(String, String)> = tx
        .prepare("SELECT id, api_keys FROM customers WHERE api_keys <> '[]'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (customer, keys) in &plain {
        for key in json_list(keys).unwrap_or_default().iter().filter(|k| !k.is_empty()) {
            tx.execute(
                "INSERT INTO api_keys (hash, customer_id, origin, tm_create) \
                 VALUES (?1, ?2, 'config', 0) ON CONFLICT (hash) DO NOTHING",
                params![hash_api_key(key), customer],
            )?;
        }
        tx.execute("UPDATE customers SET api_keys = '[]' WHERE id = ?1", [customer])?;
    }
    tx.commit()?;
    if !missing.is_empty() || !plain.is_empty() {
        tracing::info!(
            extensions = missing.len(),
            customers = plain.len(),
            "store: backfilled extension ids and hashed API keys"
        );
    }
    Ok(())
}

/// A UUID column; empty (rows from before it existed) is nil.
fn uuid_col(text: &str) -> Result<Uuid, String> {
    if text.is_empty() {
        return Ok(NIL);
    }
    Uuid::parse_str(text).map_err(|e| format!("bad uuid {text:?}: {e}"))
}

const EXTENSION_COLUMNS: &str = "domain, name, ha1_md5, ha1_sha256, display_name, id, \
     customer_id, detail, origin, tm_create, tm_update, handling";

/// The `handling` column: JSON, '' for the default.
fn handling_col(text: &str) -> Result<CallHandling, String> {
    if text.is_empty() {
        return Ok(CallHandling::default());
    }
    serde_json::from_str(text).map_err(|e| format!("bad handling {text:?}: {e}"))
}

/// The `handling` column of `h`.
fn handling_text(h: &CallHandling) -> rusqlite::Result<String> {
    if h.is_default() {
        return Ok(String::new());
    }
    serde_json::to_string(h).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn extension_record_from_row(r: &Row<'_>) -> Result<ExtensionRecord, String> {
    let domain: String = r.get(0).map_err(s)?;
    let name: String = r.get(1).map_err(s)?;
    let ctx = |e: String| format!("extension {name}@{domain}: {e}");
    let id: Option<String> = r.get(5).map_err(s).map_err(ctx)?;
    let id = match id {
        Some(id) => uuid_col(&id).map_err(ctx)?,
        None => config_id(&format!("{name}@{domain}")),
    };
    Ok(ExtensionRecord {
        id,
        customer_id: uuid_col(&r.get::<_, String>(6).map_err(s).map_err(ctx)?).map_err(ctx)?,
        detail: r.get(7).map_err(s).map_err(ctx)?,
        origin: Origin::from_str_lossy(&r.get::<_, String>(8).map_err(s).map_err(ctx)?),
        tm_create: Timestamp::from_micros(r.get(9).map_err(s).map_err(ctx)?),
        tm_update: Timestamp::from_micros(r.get(10).map_err(s).map_err(ctx)?),
        tm_delete: Timestamp::NOT_YET,
        extension: Extension {
            ha1_md5: r.get(2).map_err(s).map_err(ctx)?,
            ha1_sha256: r.get(3).map_err(s).map_err(ctx)?,
            display_name: r.get(4).map_err(s).map_err(ctx)?,
            handling: handling_col(&r.get::<_, String>(11).map_err(s).map_err(ctx)?)
                .map_err(ctx)?,
            name: name.clone(),
            domain: domain.clone(),
        },
    })
}

/// A ring group row: the JSON record, with the columns that the store owns
/// (`tm_create` kept across upserts) laid over it.
fn ringgroup_from_row(r: &Row<'_>) -> Result<RingGroup, String> {
    let id: String = r.get(0).map_err(s)?;
    let data: String = r.get(1).map_err(s)?;
    let mut g: RingGroup =
        serde_json::from_str(&data).map_err(|e| format!("ringgroup {id}: {e}"))?;
    g.tm_create = Timestamp::from_micros(r.get(2).map_err(s)?);
    Ok(g)
}

fn webhook_from_row(r: &Row<'_>) -> Result<Webhook, String> {
    Ok(Webhook {
        customer_id: uuid_col(&r.get::<_, String>(0).map_err(s)?)?,
        url: r.get(1).map_err(s)?,
        secret: r.get(2).map_err(s)?,
        origin: Origin::from_str_lossy(&r.get::<_, String>(3).map_err(s)?),
        tm_create: Timestamp::from_micros(r.get(4).map_err(s)?),
        tm_update: Timestamp::from_micros(r.get(5).map_err(s)?),
    })
}

/// Reads a row with `f`, turning decode failures into a message so that one
/// bad row is skipped (and logged) rather than failing a whole listing.
fn decode_all<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    what: &str,
    f: impl Fn(&Row<'_>) -> Result<T, String>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, |r| Ok(f(r)))?;
    let mut out = Vec::new();
    for row in rows {
        match row? {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(what, error = %e, "store: skipping corrupt row"),
        }
    }
    Ok(out)
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn binding_from_row(r: &Row<'_>) -> Result<Binding, String> {
    let aor: String = r.get(0).map_err(s)?;
    let contact: String = r.get(1).map_err(s)?;
    let ctx = |e: String| format!("binding {aor} {contact}: {e}");
    let reg_id: Option<i64> = r.get(3).map_err(s).map_err(ctx)?;
    let source: String = r.get(9).map_err(s).map_err(ctx)?;
    let local: String = r.get(10).map_err(s).map_err(ctx)?;
    Ok(Binding {
        instance: r.get(2).map_err(s).map_err(ctx)?,
        reg_id: reg_id.map(u32::try_from).transpose().map_err(s).map_err(ctx)?,
        q: u16::try_from(r.get::<_, i64>(4).map_err(s).map_err(ctx)?).map_err(s).map_err(ctx)?,
        expires_at: Timestamp::from_micros(r.get(5).map_err(s).map_err(ctx)?),
        call_id: r.get(6).map_err(s).map_err(ctx)?,
        cseq: u32::try_from(r.get::<_, i64>(7).map_err(s).map_err(ctx)?).map_err(s).map_err(ctx)?,
        transport: r.get(8).map_err(s).map_err(ctx)?,
        source: source.parse().map_err(s).map_err(ctx)?,
        local: local.parse().map_err(s).map_err(ctx)?,
        user_agent: r.get(11).map_err(s).map_err(ctx)?,
        aor,
        contact,
    })
}

fn json_list(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(s)
}

impl Store for SqliteStore {
    fn upsert_binding(&self, binding: &Binding) {
        self.enqueue(Op::UpsertBinding(Box::new(binding.clone())));
    }

    fn remove_binding(&self, aor: &str, contact: &str) {
        self.enqueue(Op::RemoveBinding { aor: aor.to_owned(), contact: contact.to_owned() });
    }

    fn upsert_groupcall(&self, groupcall: &Groupcall) {
        self.enqueue(Op::UpsertGroupcall(Box::new(groupcall.clone())));
    }

    fn upsert_call(&self, call: &Call) {
        self.enqueue(Op::UpsertCall(Box::new(call.clone())));
    }

    fn upsert_customer(&self, customer: &Customer) {
        self.enqueue(Op::UpsertCustomer(customer.clone()));
    }

    fn upsert_domain(&self, domain: &Domain) {
        self.enqueue(Op::UpsertDomain(domain.clone()));
    }

    fn upsert_extension(&self, extension: &Extension) {
        self.enqueue(Op::UpsertExtension(Box::new(extension.clone())));
    }

    fn delete_extension(&self, name: &str, domain: &str) {
        self.enqueue(Op::DeleteExtension { name: name.to_owned(), domain: domain.to_owned() });
    }

    fn upsert_extension_record(&self, record: &ExtensionRecord) {
        self.enqueue(Op::UpsertExtensionRecord(Box::new(record.clone())));
    }

    fn replace_config_extensions(&self, records: &[ExtensionRecord]) {
        self.enqueue(Op::ReplaceConfigExtensions(records.to_vec()));
    }

    fn delete_groupcall(&self, id: Uuid, at: Timestamp) {
        self.enqueue(Op::DeleteGroupcall { id, at });
    }

    fn upsert_ringgroup(&self, group: &RingGroup) {
        self.enqueue(Op::UpsertRingGroup(Box::new(group.clone())));
    }

    fn upsert_hunt_memory(&self, memory: &HuntMemoryRecord) {
        self.enqueue(Op::UpsertHuntMemory(Box::new(memory.clone())));
    }

    fn delete_ringgroup(&self, id: Uuid) {
        self.enqueue(Op::DeleteRingGroup(id));
    }

    fn replace_config_ringgroups(&self, groups: &[RingGroup]) {
        self.enqueue(Op::ReplaceConfigRingGroups(groups.to_vec()));
    }

    fn upsert_webhook(&self, webhook: &Webhook) {
        self.enqueue(Op::UpsertWebhook(webhook.clone()));
    }

    fn delete_webhook(&self, customer_id: Uuid) {
        self.enqueue(Op::DeleteWebhook(customer_id));
    }

    fn replace_config_webhooks(&self, webhooks: &[Webhook]) {
        self.enqueue(Op::ReplaceConfigWebhooks(webhooks.to_vec()));
    }

    fn put_api_key(&self, key: &ApiKey) {
        self.enqueue(Op::PutApiKey(key.clone()));
    }

    fn remove_api_key(&self, hash: &str) {
        self.enqueue(Op::RemoveApiKey(hash.to_owned()));
    }

    fn flush(&self) -> Result<(), StoreError> {
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(done_tx)).map_err(|_| StoreError::WriterGone)?;
        match done_rx.recv() {
            Ok(0) => Ok(()),
            Ok(count) => Err(StoreError::WritesFailed { count }),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    fn load_bindings(&self, now: Timestamp) -> Result<Vec<Binding>, StoreError> {
        let conn = self.reader();
        let deleted = conn
            .prepare_cached("DELETE FROM bindings WHERE expires_at <= ?1")?
            .execute([now.micros()])?;
        if deleted > 0 {
            tracing::info!(deleted, "store: deleted expired bindings");
        }
        decode_all(
            &conn,
            "SELECT aor, contact, instance, reg_id, q, expires_at, call_id, cseq, transport, \
             source, local, user_agent FROM bindings WHERE expires_at > ?1 ORDER BY aor, contact",
            [now.micros()],
            "binding",
            binding_from_row,
        )
    }

    fn customers(&self) -> Result<Vec<Customer>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT id, name, api_keys FROM customers ORDER BY id",
            [],
            "customer",
            |r| {
                let id: String = r.get(0).map_err(s)?;
                Ok(Customer {
                    id: Uuid::parse_str(&id).map_err(|e| format!("customer {id}: {e}"))?,
                    name: r.get(1).map_err(s)?,
                    api_keys: json_list(&r.get::<_, String>(2).map_err(s)?)?,
                })
            },
        )
    }

    fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT name, customer_id, aliases FROM domains ORDER BY name",
            [],
            "domain",
            |r| {
                let name: String = r.get(0).map_err(s)?;
                let customer: String = r.get(1).map_err(s)?;
                Ok(Domain {
                    customer_id: Uuid::parse_str(&customer)
                        .map_err(|e| format!("domain {name}: {e}"))?,
                    aliases: json_list(&r.get::<_, String>(2).map_err(s)?)?,
                    name,
                })
            },
        )
    }

    fn extensions(&self) -> Result<Vec<Extension>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT name, domain, ha1_md5, ha1_sha256, display_name, handling FROM extensions \
             ORDER BY domain, name",
            [],
            "extension",
            |r| {
                Ok(Extension {
                    name: r.get(0).map_err(s)?,
                    domain: r.get(1).map_err(s)?,
                    ha1_md5: r.get(2).map_err(s)?,
                    ha1_sha256: r.get(3).map_err(s)?,
                    display_name: r.get(4).map_err(s)?,
                    handling: handling_col(&r.get::<_, String>(5).map_err(s)?)?,
                })
            },
        )
    }

    fn extension_record(&self, id: Uuid) -> Result<Option<ExtensionRecord>, StoreError> {
        let sql = format!("SELECT {EXTENSION_COLUMNS} FROM extensions WHERE id = ?1");
        let mut v = decode_all(
            &self.reader(),
            &sql,
            [id.to_string()],
            "extension",
            extension_record_from_row,
        )?;
        Ok(v.pop())
    }

    fn list_extension_records(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<ExtensionRecord>, StoreError> {
        let sql = format!(
            "SELECT {EXTENSION_COLUMNS} FROM extensions WHERE customer_id = ?1 \
             AND (tm_create, id) < (?2, ?3) ORDER BY tm_create DESC, id DESC LIMIT ?4"
        );
        let (before, before_id) = cursor_params(after);
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        decode_all(
            &self.reader(),
            &sql,
            params![customer_id.to_string(), before, before_id, limit],
            "extension",
            extension_record_from_row,
        )
    }

    fn ringgroup(&self, id: Uuid) -> Result<Option<RingGroup>, StoreError> {
        let mut v = decode_all(
            &self.reader(),
            "SELECT id, data, tm_create FROM ringgroups WHERE id = ?1",
            [id.to_string()],
            "ringgroup",
            ringgroup_from_row,
        )?;
        Ok(v.pop())
    }

    fn hunt_memories(&self) -> Result<Vec<HuntMemoryRecord>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT data FROM hunt_memory ORDER BY group_id",
            [],
            "hunt_memory",
            |r| {
                let data: String = r.get(0).map_err(s)?;
                serde_json::from_str(&data).map_err(s)
            },
        )
    }

    fn ringgroups(&self) -> Result<Vec<RingGroup>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT id, data, tm_create FROM ringgroups ORDER BY id",
            [],
            "ringgroup",
            ringgroup_from_row,
        )
    }

    fn list_ringgroups(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<RingGroup>, StoreError> {
        let (before, before_id) = cursor_params(after);
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        decode_all(
            &self.reader(),
            "SELECT id, data, tm_create FROM ringgroups WHERE customer_id = ?1 \
             AND (tm_create, id) < (?2, ?3) ORDER BY tm_create DESC, id DESC LIMIT ?4",
            params![customer_id.to_string(), before, before_id, limit],
            "ringgroup",
            ringgroup_from_row,
        )
    }

    fn webhook(&self, customer_id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let mut v = decode_all(
            &self.reader(),
            "SELECT customer_id, url, secret, origin, tm_create, tm_update FROM webhooks \
             WHERE customer_id = ?1",
            [customer_id.to_string()],
            "webhook",
            webhook_from_row,
        )?;
        Ok(v.pop())
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        decode_all(
            &self.reader(),
            "SELECT customer_id, url, secret, origin, tm_create, tm_update FROM webhooks \
             ORDER BY customer_id",
            [],
            "webhook",
            webhook_from_row,
        )
    }

    fn api_key_customer(&self, hash: &str) -> Result<Option<Uuid>, StoreError> {
        let conn = self.reader();
        let id: Option<String> = conn
            .prepare_cached("SELECT customer_id FROM api_keys WHERE hash = ?1")?
            .query_row([hash], |r| r.get(0))
            .optional()?;
        id.map(|id| uuid_col(&id).map_err(StoreError::Corrupt)).transpose()
    }

    fn list_bindings(
        &self,
        customer_id: Uuid,
        now: Timestamp,
        page_size: usize,
        after: Option<(String, String)>,
    ) -> Result<Vec<Binding>, StoreError> {
        let (aor, contact) = after.unwrap_or_default();
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        decode_all(
            &self.reader(),
            "SELECT aor, contact, instance, reg_id, q, expires_at, call_id, cseq, transport, \
             source, local, user_agent FROM bindings WHERE expires_at > ?1 \
             AND (aor, contact) > (?2, ?3) \
             AND lower(substr(aor, instr(aor, '@') + 1)) IN \
                 (SELECT lower(name) FROM domains WHERE customer_id = ?4) \
             ORDER BY aor, contact LIMIT ?5",
            params![now.micros(), aor, contact, customer_id.to_string(), limit],
            "binding",
            binding_from_row,
        )
    }

    fn close_live_records(&self, at: Timestamp) -> Result<Closed, StoreError> {
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Close(at, done_tx)).map_err(|_| StoreError::WriterGone)?;
        match done_rx.recv() {
            Ok(Ok(closed)) => Ok(closed),
            Ok(Err(e)) => Err(StoreError::Corrupt(format!("closing live records: {e}"))),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError> {
        self.get_json("groupcalls", id)
    }

    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Groupcall>, StoreError> {
        self.list_json("groupcalls", customer_id, page_size, after)
    }

    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        self.get_json("calls", id)
    }

    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Call>, StoreError> {
        self.list_json("calls", customer_id, page_size, after)
    }

    fn list_groupcalls_json(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<JsonRecord>, StoreError> {
        self.list_raw("groupcalls", customer_id, page_size, after)
    }

    fn list_calls_json(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<JsonRecord>, StoreError> {
        self.list_raw("calls", customer_id, page_size, after)
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            queued: c.queued.load(Relaxed),
            written: c.written.load(Relaxed),
            failed: c.failed.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            batches: c.batches.load(Relaxed),
        }
    }
}

/// The background writer: owns the write connection.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    opts: Options,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self) {
        let mut failed_since_flush = 0u64;
        let mut open = true;
        while open {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            match self.rx.recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(Msg::Flush(done)) => flushes.push(Barrier::Flush(done)),
                Ok(Msg::Close(at, done)) => flushes.push(Barrier::Close(at, done)),
                Err(_) => break,
            }
            if flushes.is_empty() && self.opts.max_delay.is_zero() {
                while batch.len() < self.opts.max_batch.max(1) {
                    match self.rx.try_recv() {
                        Ok(Msg::Op(op)) => batch.push(op),
                        Ok(Msg::Flush(done)) => {
                            flushes.push(Barrier::Flush(done));
                            break;
                        }
                        Ok(Msg::Close(at, done)) => {
                            flushes.push(Barrier::Close(at, done));
                            break;
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            } else if flushes.is_empty() {
                let deadline = Instant::now() + self.opts.max_delay;
                while batch.len() < self.opts.max_batch.max(1) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(left) {
                        Ok(Msg::Op(op)) => batch.push(op),
                        Ok(Msg::Flush(done)) => {
                            flushes.push(Barrier::Flush(done));
                            break;
                        }
                        Ok(Msg::Close(at, done)) => {
                            flushes.push(Barrier::Close(at, done));
                            break;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            self.counters.queued.fetch_sub(batch.len() as u64, Relaxed);
            // A record changes many times in a call; only its last state in
            // a batch needs writing. Superseded writes count as written.
            let before = batch.len();
            let batch = coalesce(batch);
            self.counters.written.fetch_add((before - batch.len()) as u64, Relaxed);
            failed_since_flush += self.commit(&batch);
            for barrier in flushes {
                // The asker may have given up waiting; nothing to do then.
                match barrier {
                    Barrier::Flush(done) => {
                        let _ = done.send(failed_since_flush);
                        failed_since_flush = 0;
                    }
                    Barrier::Close(at, done) => {
                        let r = close_live(&mut self.conn, at).map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            tracing::error!(error = %e, "store: closing live records failed");
                        }
                        let _ = done.send(r);
                    }
                }
            }
        }
        tracing::debug!("store: writer stopped");
    }

    /// Writes `batch` in one transaction; returns how many writes failed.
    /// Never panics; a failing transaction is retried once.
    fn commit(&mut self, batch: &[Op]) -> u64 {
        if batch.is_empty() {
            return 0;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_batch(&mut self.conn, batch)
            }));
            match r {
                Ok(Ok(failed)) => {
                    let c = &self.counters;
                    c.batches.fetch_add(1, Relaxed);
                    c.written.fetch_add(batch.len() as u64 - failed, Relaxed);
                    c.failed.fetch_add(failed, Relaxed);
                    return failed;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, ops = batch.len(), attempt, "store: batch failed");
                }
                Err(_) => {
                    tracing::error!(ops = batch.len(), attempt, "store: batch panicked");
                }
            }
            if !self.conn.is_autocommit() {
                if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "store: rollback failed");
                }
            }
            if attempt >= 2 {
                let n = batch.len() as u64;
                self.counters.failed.fetch_add(n, Relaxed);
                return n;
            }
        }
    }
}

/// Crash reconciliation: every live groupcall and call record closed at `at`.
fn close_live(conn: &mut Connection, at: Timestamp) -> rusqlite::Result<Closed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let when = at.to_string();
    let groupcalls = tx.execute(
        "UPDATE groupcalls SET live = 0, \
         data = json_set(data, '$.status', 'hangup', '$.tm_update', ?1) WHERE live = 1",
        [&when],
    )?;
    let calls = tx.execute(
        "UPDATE calls SET live = 0, \
         data = json_set(data, '$.status', 'hangup', '$.hangup_by', 'local', \
         '$.hangup_reason', 'failed', '$.tm_hangup', ?1, '$.tm_update', ?1) WHERE live = 1",
        [&when],
    )?;
    tx.commit()?;
    Ok(Closed { groupcalls: groupcalls as u64, calls: calls as u64 })
}

/// One transaction; a write failing alone is logged, counted and skipped.
fn write_batch(conn: &mut Connection, batch: &[Op]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut failed = 0;
    for op in batch {
        if let Err(e) = apply(&tx, op) {
            if tx.is_autocommit() {
                // SQLite rolled the whole transaction back (disk full, I/O).
                return Err(e);
            }
            tracing::warn!(error = %e, op = op.name(), "store: write failed");
            failed += 1;
        }
    }
    tx.commit()?;
    Ok(failed)
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::UpsertBinding(_) => "upsert_binding",
            Op::RemoveBinding { .. } => "remove_binding",
            Op::UpsertGroupcall(_) => "upsert_groupcall",
            Op::UpsertCall(_) => "upsert_call",
            Op::UpsertCustomer(_) => "upsert_customer",
            Op::UpsertDomain(_) => "upsert_domain",
            Op::UpsertExtension(_) => "upsert_extension",
            Op::DeleteExtension { .. } => "delete_extension",
            Op::UpsertExtensionRecord(_) => "upsert_extension_record",
            Op::ReplaceConfigExtensions(_) => "replace_config_extensions",
            Op::DeleteGroupcall { .. } => "delete_groupcall",
            Op::UpsertRingGroup(_) => "upsert_ringgroup",
            Op::UpsertHuntMemory(_) => "upsert_hunt_memory",
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

fn to_json(v: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn apply(conn: &Connection, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::UpsertBinding(b) => {
            conn.prepare_cached(
                "INSERT INTO bindings (aor, contact, instance, reg_id, q, expires_at, call_id, \
                 cseq, transport, source, local, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (aor, contact) DO UPDATE SET instance = excluded.instance, \
                 reg_id = excluded.reg_id, q = excluded.q, expires_at = excluded.expires_at, \
                 call_id = excluded.call_id, cseq = excluded.cseq, \
                 transport = excluded.transport, source = excluded.source, \
                 local = excluded.local, user_agent = excluded.user_agent",
            )?
            .execute(params![
                b.aor,
                b.contact,
                b.instance,
                b.reg_id,
                b.q,
                b.expires_at.micros(),
                b.call_id,
                b.cseq,
                b.transport,
                b.source.to_string(),
                b.local.to_string(),
                b.user_agent,
            ])?;
        }
        Op::RemoveBinding { aor, contact } => {
            conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?
                .execute(params![aor, contact])?;
        }
        Op::UpsertGroupcall(g) => {
            let live = g.status != records::GroupcallStatus::Hangup;
            upsert_json(conn, "groupcalls", g.id, g.customer_id, g.tm_create, g.tm_delete, live, g)?
        }
        Op::UpsertCall(c) => {
            let live = c.status != records::CallStatus::Hangup;
            upsert_json(conn, "calls", c.id, c.customer_id, c.tm_create, c.tm_delete, live, c)?
        }
        Op::UpsertCustomer(c) => {
            conn.prepare_cached(
                "INSERT INTO customers (id, name, api_keys) VALUES (?1, ?2, '[]') \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, api_keys = '[]'",
            )?
            .execute(params![c.id.to_string(), c.name])?;
            conn.prepare_cached(
                "DELETE FROM api_keys WHERE customer_id = ?1 AND origin = 'config'",
            )?
            .execute([c.id.to_string()])?;
            for key in c.api_keys.iter().filter(|k| !k.is_empty()) {
                put_api_key(
                    conn,
                    &ApiKey {
                        hash: hash_api_key(key),
                        customer_id: c.id,
                        origin: Origin::Config,
                        tm_create: Timestamp::from_micros(0),
                    },
                )?;
            }
        }
        Op::UpsertDomain(d) => {
            conn.prepare_cached(
                "INSERT INTO domains (name, customer_id, aliases) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET customer_id = excluded.customer_id, \
                 aliases = excluded.aliases",
            )?
            .execute(params![
                d.name,
                d.customer_id.to_string(),
                to_json(&d.aliases)?
            ])?;
        }
        Op::UpsertExtension(e) => {
            conn.prepare_cached(
                "INSERT INTO extensions (domain, name, ha1_md5, ha1_sha256, display_name, id, \
                 customer_id, origin, tm_create, tm_update, handling) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE((SELECT customer_id FROM domains \
                 WHERE name = ?1 COLLATE NOCASE), ''), 'config', 0, 0, ?7) \
                 ON CONFLICT (domain, name) DO UPDATE SET ha1_md5 = excluded.ha1_md5, \
                 ha1_sha256 = excluded.ha1_sha256, display_name = excluded.display_name, \
                 handling = excluded.handling",
            )?
            .execute(params![
                e.domain,
                e.name,
                e.ha1_md5,
                e.ha1_sha256,
                e.display_name,
                config_id(&e.aor()).to_string(),
                handling_text(&e.handling)?,
            ])?;
        }
        Op::DeleteExtension { name, domain } => {
            conn.prepare_cached("DELETE FROM extensions WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
        }
        Op::UpsertExtensionRecord(r) => upsert_extension_record(conn, r)?,
        Op::ReplaceConfigExtensions(records) => {
            let keep: std::collections::HashSet<(&str, &str)> = records
                .iter()
                .map(|r| (r.extension.domain.as_str(), r.extension.name.as_str()))
                .collect();
            let stale: Vec<(String, String)> = conn
                .prepare_cached("SELECT domain, name FROM extensions WHERE origin = 'config'")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()?
                .into_iter()
                .filter(|(d, n)| !keep.contains(&(d.as_str(), n.as_str())))
                .collect();
            for (domain, name) in stale {
                conn.prepare_cached("DELETE FROM extensions WHERE domain = ?1 AND name = ?2")?
                    .execute(params![domain, name])?;
            }
            for r in records {
                upsert_extension_record(
                    conn,
                    &ExtensionRecord { origin: Origin::Config, ..r.clone() },
                )?;
            }
        }
        Op::DeleteGroupcall { id, at } => {
            let when = at.to_string();
            conn.prepare_cached(
                "UPDATE groupcalls SET tm_delete = ?2, \
                 data = json_set(data, '$.tm_delete', ?3, '$.tm_update', ?3) WHERE id = ?1",
            )?
            .execute(params![id.to_string(), at.micros(), when])?;
        }
        Op::UpsertRingGroup(g) => upsert_ringgroup(conn, g)?,
        Op::UpsertHuntMemory(m) => {
            conn.prepare_cached(
                "INSERT INTO hunt_memory (group_id, data) VALUES (?1, ?2) \
                 ON CONFLICT (group_id) DO UPDATE SET data = excluded.data",
            )?
            .execute(params![m.group_id.to_string(), to_json(m)?])?;
        }
        Op::DeleteRingGroup(id) => {
            conn.prepare_cached("DELETE FROM ringgroups WHERE id = ?1")?
                .execute([id.to_string()])?;
        }
        Op::ReplaceConfigRingGroups(groups) => {
            let keep: std::collections::HashSet<String> =
                groups.iter().map(|g| g.id.to_string()).collect();
            let stale: Vec<String> = conn
                .prepare_cached("SELECT id FROM ringgroups WHERE origin = 'config'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?
                .into_iter()
                .filter(|id| !keep.contains(id))
                .collect();
            for id in stale {
                conn.prepare_cached("DELETE FROM ringgroups WHERE id = ?1")?.execute([id])?;
            }
            for g in groups {
                upsert_ringgroup(conn, &RingGroup { origin: Origin::Config, ..g.clone() })?;
            }
        }
        Op::UpsertWebhook(w) => upsert_webhook(conn, w)?,
        Op::DeleteWebhook(customer) => {
            conn.prepare_cached("DELETE FROM webhooks WHERE customer_id = ?1")?
                .execute([customer.to_string()])?;
        }
        Op::ReplaceConfigWebhooks(webhooks) => {
            let keep: std::collections::HashSet<String> =
                webhooks.iter().map(|w| w.customer_id.to_string()).collect();
            let stale: Vec<String> = conn
                .prepare_cached("SELECT customer_id FROM webhooks WHERE origin = 'config'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?
                .into_iter()
                .filter(|id| !keep.contains(id))
                .collect();
            for id in stale {
                conn.prepare_cached("DELETE FROM webhooks WHERE customer_id = ?1")?
                    .execute([id])?;
            }
            for w in webhooks {
                upsert_webhook(conn, &Webhook { origin: Origin::Config, ..w.clone() })?;
            }
        }
        Op::PutApiKey(k) => put_api_key(conn, k)?,
        Op::RemoveApiKey(hash) => {
            conn.prepare_cached("DELETE FROM api_keys WHERE hash = ?1")?.execute([hash])?;
        }
    }
    Ok(())
}

fn put_api_key(conn: &Connection, k: &ApiKey) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (hash, customer_id, origin, tm_create) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (hash) DO UPDATE SET customer_id = excluded.customer_id, \
         origin = excluded.origin",
    )?
    .execute(params![
        k.hash,
        k.customer_id.to_string(),
        k.origin.as_str(),
        k.tm_create.micros()
    ])?;
    Ok(())
}

/// Keeps `tm_create` (when known), and `tm_update` when nothing changed.
fn upsert_extension_record(conn: &Connection, r: &ExtensionRecord) -> rusqlite::Result<()> {
    let e = &r.extension;
    conn.prepare_cached(
        "INSERT INTO extensions (domain, name, ha1_md5, ha1_sha256, display_name, id, \
         customer_id, detail, origin, tm_create, tm_update, handling) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (domain, name) DO UPDATE SET \
         tm_create = CASE WHEN extensions.tm_create > 0 THEN extensions.tm_create \
             ELSE excluded.tm_create END, \
         tm_update = CASE WHEN extensions.tm_update > 0 AND \
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
    )?
    .execute(params![
        e.domain,
        e.name,
        e.ha1_md5,
        e.ha1_sha256,
        e.display_name,
        r.id.to_string(),
        r.customer_id.to_string(),
        r.detail,
        r.origin.as_str(),
        r.tm_create.micros(),
        r.tm_update.micros(),
        handling_text(&e.handling)?,
    ])?;
    Ok(())
}

fn upsert_ringgroup(conn: &Connection, g: &RingGroup) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO ringgroups (id, customer_id, domain, number, origin, tm_create, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
         domain = excluded.domain, number = excluded.number, origin = excluded.origin, \
         data = excluded.data",
    )?
    .execute(params![
        g.id.to_string(),
        g.customer_id.to_string(),
        g.domain,
        g.number,
        g.origin.as_str(),
        g.tm_create.micros(),
        to_json(g)?,
    ])?;
    Ok(())
}

fn upsert_webhook(conn: &Connection, w: &Webhook) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO webhooks (customer_id, url, secret, origin, tm_create, tm_update) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (customer_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, \
         origin = excluded.origin, tm_update = excluded.tm_update",
    )?
    .execute(params![
        w.customer_id.to_string(),
        w.url,
        w.secret,
        w.origin.as_str(),
        w.tm_create.micros(),
        w.tm_update.micros(),
    ])?;
    Ok(())
}

/// Upserts a groupcall or call; once deleted (`tm_delete` set, by
/// [`Store::delete_groupcall`]), a record stays deleted: the column and the
/// JSON keep the stored `tm_delete`.
#[allow(clippy::too_many_arguments)]
fn upsert_json(
    conn: &Connection,
    table: &str,
    id: Uuid,
    customer_id: Uuid,
    tm_create: Timestamp,
    tm_delete: Timestamp,
    live: bool,
    record: &impl serde::Serialize,
) -> rusqlite::Result<()> {
    // The statement text is the key of the statement cache: build it once
    // per table, not per write.
    macro_rules! upsert {
        ($t:literal) => {
            concat!(
                "INSERT INTO ",
                $t,
                " (id, customer_id, tm_create, tm_delete, live, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
                 tm_create = excluded.tm_create, live = excluded.live, \
                 tm_delete = CASE WHEN ",
                $t,
                ".tm_delete <> ?7 THEN ",
                $t,
                ".tm_delete \
                     ELSE excluded.tm_delete END, \
                 data = CASE WHEN ",
                $t,
                ".tm_delete <> ?7 \
                     THEN json_set(excluded.data, '$.tm_delete', json_extract(",
                $t,
                ".data, '$.tm_delete')) \
                     ELSE excluded.data END"
            )
        };
    }
    let sql = match table {
        "groupcalls" => upsert!("groupcalls"),
        _ => upsert!("calls"),
    };
    conn.prepare_cached(sql)?.execute(params![
        id.to_string(),
        customer_id.to_string(),
        tm_create.micros(),
        tm_delete.micros(),
        live,
        to_json(record)?,
        Timestamp::NOT_YET.micros(),
    ])?;
    Ok(())
}
