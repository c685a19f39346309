//! [`SqliteStore`]: one writer thread with its own connection, batching
//! queued writes into transactions; reads on a second connection.

use crate::{schema, Store, StoreError, StoreStats};
use records::{Binding, Call, Customer, Domain, Extension, Groupcall, Timestamp};
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
    UpsertExtension(Extension),
    DeleteExtension { name: String, domain: String },
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
        page_token: Option<Timestamp>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.reader();
        let sql = format!(
            "SELECT id, data FROM {table} WHERE customer_id = ?1 AND tm_delete = ?2 \
             AND tm_create < ?3 ORDER BY tm_create DESC, id DESC LIMIT ?4"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let before = page_token.map_or(i64::MAX, Timestamp::micros);
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![customer_id.to_string(), Timestamp::NOT_YET.micros(), before, limit],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, data) = row?;
            match serde_json::from_str(&data) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(table, id, error = %e, "store: skipping corrupt row"),
            }
        }
        Ok(out)
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
        self.enqueue(Op::UpsertExtension(extension.clone()));
    }

    fn delete_extension(&self, name: &str, domain: &str) {
        self.enqueue(Op::DeleteExtension { name: name.to_owned(), domain: domain.to_owned() });
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
            "SELECT name, domain, ha1_md5, ha1_sha256, display_name FROM extensions \
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
                })
            },
        )
    }

    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError> {
        self.get_json("groupcalls", id)
    }

    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Groupcall>, StoreError> {
        self.list_json("groupcalls", customer_id, page_size, page_token)
    }

    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        self.get_json("calls", id)
    }

    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Call>, StoreError> {
        self.list_json("calls", customer_id, page_size, page_token)
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
                Ok(Msg::Flush(done)) => flushes.push(done),
                Err(_) => break,
            }
            if flushes.is_empty() && self.opts.max_delay.is_zero() {
                while batch.len() < self.opts.max_batch.max(1) {
                    match self.rx.try_recv() {
                        Ok(Msg::Op(op)) => batch.push(op),
                        Ok(Msg::Flush(done)) => {
                            flushes.push(done);
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
                            flushes.push(done);
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
            for done in flushes {
                // The flusher may have given up waiting; nothing to do then.
                let _ = done.send(failed_since_flush);
                failed_since_flush = 0;
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
            upsert_json(conn, "groupcalls", g.id, g.customer_id, g.tm_create, g.tm_delete, g)?
        }
        Op::UpsertCall(c) => {
            upsert_json(conn, "calls", c.id, c.customer_id, c.tm_create, c.tm_delete, c)?
        }
        Op::UpsertCustomer(c) => {
            conn.prepare_cached(
                "INSERT INTO customers (id, name, api_keys) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, api_keys = excluded.api_keys",
            )?
            .execute(params![c.id.to_string(), c.name, to_json(&c.api_keys)?])?;
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
                "INSERT INTO extensions (domain, name, ha1_md5, ha1_sha256, display_name) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (domain, name) DO UPDATE SET ha1_md5 = excluded.ha1_md5, \
                 ha1_sha256 = excluded.ha1_sha256, display_name = excluded.display_name",
            )?
            .execute(params![
                e.domain,
                e.name,
                e.ha1_md5,
                e.ha1_sha256,
                e.display_name
            ])?;
        }
        Op::DeleteExtension { name, domain } => {
            conn.prepare_cached("DELETE FROM extensions WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
        }
    }
    Ok(())
}

fn upsert_json(
    conn: &Connection,
    table: &str,
    id: Uuid,
    customer_id: Uuid,
    tm_create: Timestamp,
    tm_delete: Timestamp,
    record: &impl serde::Serialize,
) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO {table} (id, customer_id, tm_create, tm_delete, data) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
         tm_create = excluded.tm_create, tm_delete = excluded.tm_delete, data = excluded.data"
    );
    conn.prepare_cached(&sql)?.execute(params![
        id.to_string(),
        customer_id.to_string(),
        tm_create.micros(),
        tm_delete.micros(),
        to_json(record)?,
    ])?;
    Ok(())
}
