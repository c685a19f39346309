//! [`PgStore`]: the records in PostgreSQL, through tokio-postgres.
//!
//! The [`crate::Store`] trait is synchronous, and is called from the SIP
//! thread's runtime (at start) and from the API's blocking threads; so each
//! connection lives on a thread of its own with a current-thread runtime
//! ([`PgConn`]): the writer thread owns one, and two reader threads own one
//! each, taking read jobs from a shared channel. A connection that breaks
//! is made again on its next use; until then its users get
//! [`crate::StoreError::Unavailable`] (the API answers 503).
//!
//! Groupcalls and calls are written with one `INSERT ... SELECT FROM
//! unnest($1::uuid[], ...) ON CONFLICT (id) DO UPDATE` per table and
//! commit window: one statement (and one round trip) for any number of
//! rows, prepared once per connection.

use crate::columns::{self, Col};
use crate::db::{numbered_to_dollar, Db, DbError, Dialect, Row, Value};
use crate::op::Op;
use crate::window::RecordSet;
use crate::writer::{Options, Queue};
use crate::{pg_schema, reads, Closed, Cursor, JsonRecord, StoreError};
use bytes::{BufMut, BytesMut};
use records::Timestamp;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// How long one statement (or a connect) may take before the connection
/// is called broken.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader threads (connections for the API's and the start-up's reads).
const READERS: usize = 2;

/// The PostgreSQL [`crate::Store`]. Dropping it commits what the writer
/// holds (retrying a database that is away for at most
/// [`Options::shutdown_wait`]) and joins its threads.
pub struct PgStore {
    queue: Queue,
    readers: Readers,
    target: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("target", &self.target).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user@host:port/db`,
    /// or `postgres:///db?host=/socket/dir`) with default [`Options`],
    /// applying missing schema migrations.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        Self::open_with(url, Options::default())
    }

    /// [`PgStore::open`] with `opts`. Callable from inside a tokio runtime:
    /// the connecting is done on a thread of its own.
    pub fn open_with(url: &str, opts: Options) -> Result<PgStore, StoreError> {
        std::thread::scope(|s| {
            s.spawn(|| Self::open_here(url, opts))
                .join()
                .unwrap_or_else(|_| Err(StoreError::Database("opening panicked".into())))
        })
    }

    fn open_here(url: &str, opts: Options) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        let target = describe(&config);
        let mut conn = PgConn::new(config.clone())?;
        let applied = pg_schema::migrate(&mut conn)?;
        tracing::info!(database = %target, migrations_applied = applied, "store: opened");
        let readers = Readers::start(config)?;
        Ok(PgStore { queue: Queue::start(conn, opts)?, readers, target })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.run(f)
    }
}

crate::sql_store::impl_sql_store!(PgStore);

/// `postgres://user@host:port/db` of a URL, without its password.
pub(crate) fn display(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!("postgres://{}", describe(&c)),
        Err(_) => "postgres://?".into(),
    }
}

/// `user@host:port/db` of a config (no password), for logs.
fn describe(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or(c.get_user().unwrap_or(""))
    )
}

type Job = Box<dyn FnOnce(&mut PgConn) + Send>;

/// Reader threads, each with its connection, taking jobs in turn.
struct Readers {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(config: tokio_postgres::Config) -> Result<Readers, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..READERS {
            let mut conn = PgConn::new(config.clone())?;
            let rx = rx.clone();
            let t =
                std::thread::Builder::new().name(format!("store-reader-{i}")).spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })?;
            threads.push(t);
        }
        Ok(Readers { tx: Some(tx), threads })
    }

    /// Runs `f` on a reader's connection and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        tx.send(job).map_err(|_| StoreError::WriterGone)?;
        answer.recv().map_err(|_| StoreError::WriterGone)?.map_err(Into::into)
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One connection, used synchronously from its own thread: a
/// current-thread runtime drives the client and its connection task
/// during each call.
pub(crate) struct PgConn {
    rt: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    client: Option<Client>,
    /// Prepared statements of this connection, by the address of their
    /// (static) text.
    prepared: HashMap<usize, Statement>,
}

impl PgConn {
    pub(crate) fn new(config: tokio_postgres::Config) -> Result<PgConn, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(PgConn { rt, config, client: None, prepared: HashMap::new() })
    }

    /// Connects when there is no client (or it broke).
    fn connect(&mut self) -> Result<(), DbError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_some() {
            return Ok(());
        }
        self.prepared.clear();
        let config = &self.config;
        let connected = self.rt.block_on(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await
        });
        let (client, connection) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(DbError::Unavailable(e.to_string())),
            Err(_) => return Err(DbError::Unavailable("connect timed out".into())),
        };
        self.rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "store: PostgreSQL connection ended");
            }
        });
        self.client = Some(client);
        Ok(())
    }

    /// Runs `op` (which drives a call on the runtime, bounded by
    /// [`IO_TIMEOUT`]); a broken connection is dropped, made again on the
    /// next use.
    fn run<T>(
        &mut self,
        op: impl FnOnce(&tokio::runtime::Runtime, &Client) -> Timed<T>,
    ) -> Result<T, DbError> {
        self.connect()?;
        let r = match &self.client {
            Some(c) => match op(&self.rt, c) {
                Ok(r) => r.map_err(classify),
                Err(_) => Err(DbError::Unavailable("statement timed out".into())),
            },
            None => Err(DbError::Unavailable("not connected".into())),
        };
        if matches!(r, Err(DbError::Unavailable(_))) {
            self.client = None;
        }
        r
    }

    /// The prepared statement of `sql` (`?N` placeholders).
    fn prepare(&mut self, sql: &'static str) -> Result<Statement, DbError> {
        self.prepare_text(sql.as_ptr() as usize, || numbered_to_dollar(sql))
    }

    fn prepare_text(
        &mut self,
        key: usize,
        text: impl FnOnce() -> String,
    ) -> Result<Statement, DbError> {
        self.connect()?;
        if let Some(s) = self.prepared.get(&key) {
            return Ok(s.clone());
        }
        let text = text();
        let stmt = self.run(|rt, c| timed(rt, c.prepare(&text)))?;
        self.prepared.insert(key, stmt.clone());
        Ok(stmt)
    }
}

type Timed<T> = Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>;

/// Drives `f` to its end on `rt`, for at most [`IO_TIMEOUT`].
fn timed<F: std::future::Future>(
    rt: &tokio::runtime::Runtime,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    // The timer is made inside the runtime.
    rt.block_on(async move { tokio::time::timeout(IO_TIMEOUT, f).await })
}

fn refs<'a>(params: &'a [Value<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, DbError> {
        let stmt = self.prepare(sql)?;
        let p = refs(params);
        self.run(|rt, c| timed(rt, c.execute(&stmt, &p)))
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), String>,
    ) -> Result<(), DbError> {
        let stmt = self.prepare(sql)?;
        let p = refs(params);
        let rows = self.run(|rt, c| timed(rt, c.query(&stmt, &p)))?;
        for row in &rows {
            each(&PgRow(row)).map_err(DbError::Rejected)?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.run(|rt, c| timed(rt, c.batch_execute(sql)))
    }

    fn write_records(&mut self, set: &RecordSet) -> Result<(), DbError> {
        let (groupcalls, calls) = columns::rows(set);
        self.upsert_unnest("groupcalls", &columns::GROUPCALL_COLUMNS, &groupcalls)?;
        self.upsert_unnest("calls", &columns::CALL_COLUMNS, &calls)
    }
}

impl PgConn {
    /// One `INSERT ... SELECT FROM unnest(...)` of every row, a column per
    /// array parameter.
    fn upsert_unnest<const N: usize>(
        &mut self,
        table: &'static str,
        names: &[&str; N],
        rows: &[[Col<'_>; N]],
    ) -> Result<(), DbError> {
        let Some(first) = rows.first() else { return Ok(()) };
        // Keyed by the column count (20, 24): no statement text has such an
        // address.
        let stmt = self.prepare_text(usize::MAX - N, || {
            let arrays: Vec<String> = first
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}[]", i + 1, pg_type(c)))
                .collect();
            let not_yet = format!("'{}+00'", Timestamp::NOT_YET);
            format!(
                "INSERT INTO {table} ({}) SELECT * FROM unnest({}){}",
                names.join(", "),
                arrays.join(", "),
                columns::sql::on_conflict(table, names, &not_yet)
            )
        })?;
        let mut by_column: Vec<Vec<&Col<'_>>> = vec![Vec::with_capacity(rows.len()); N];
        for row in rows {
            for (i, col) in row.iter().enumerate() {
                by_column[i].push(col);
            }
        }
        let p: Vec<&(dyn ToSql + Sync)> =
            by_column.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.run(|rt, c| timed(rt, c.execute(&stmt, &p))).map(drop)
    }
}

/// The PostgreSQL type of a record column.
fn pg_type(c: &Col<'_>) -> &'static str {
    match c {
        Col::Uuid(_) => "uuid",
        Col::Text(_) => "text",
        Col::Time(_) => "timestamptz",
        Col::Json(_) => "jsonb",
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH: i64 = 946_684_800_000_000;

/// A time as PostgreSQL's binary `timestamptz` (or `bigint` micros); the
/// end of time is its `infinity`.
fn time_to_sql(t: Timestamp, ty: &Type, out: &mut BytesMut) {
    // PostgreSQL's range (4714 BC to 294277 AD, from 2000); beyond it, a
    // time (a cursor made from a page token, say) is +-infinity.
    const PG_END: i64 = 9_223_371_331_200_000_000;
    const PG_START: i64 = -211_813_488_000_000_000;
    let us = t.micros();
    if *ty == Type::INT8 {
        out.put_i64(us);
        return;
    }
    let pg = us.saturating_sub(PG_EPOCH);
    out.put_i64(match pg {
        _ if us == i64::MAX || pg >= PG_END => i64::MAX,
        _ if pg < PG_START => i64::MIN,
        pg => pg,
    });
}

/// JSON text as `jsonb` (version 1 and the text) or `json`/`text`.
fn json_to_sql(s: &str, ty: &Type, out: &mut BytesMut) {
    if *ty == Type::JSONB {
        out.put_u8(1);
    }
    out.extend_from_slice(s.as_bytes());
}

type SqlResult = Result<IsNull, Box<dyn std::error::Error + Sync + Send>>;

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> SqlResult {
        match self {
            Value::Null => return Ok(IsNull::Yes),
            // PostgreSQL text holds no NUL: such a value (from a request)
            // can match nothing stored, and must not fail the statement.
            Value::Text(s) if s.contains('\0') => {
                return s.replace('\0', "\u{fffd}").to_sql(ty, out)
            }
            Value::Text(s) => return s.to_sql(ty, out),
            Value::Int(i) => match *ty {
                Type::INT2 => return i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => return i32::try_from(*i)?.to_sql(ty, out),
                _ => return i.to_sql(ty, out),
            },
            Value::Uuid(u) if *ty == Type::UUID => return u.to_sql(ty, out),
            Value::Uuid(u) => return u.to_string().to_sql(ty, out),
            Value::Time(t) | Value::RecordTime(t) => time_to_sql(*t, ty, out),
            Value::Json(s) => json_to_sql(s, ty, out),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl ToSql for Col<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> SqlResult {
        match self {
            Col::Uuid(u) => return u.to_sql(ty, out),
            Col::Text(s) => return s.to_sql(ty, out),
            Col::Time(t) => time_to_sql(*t, ty, out),
            Col::Json(s) => json_to_sql(s, ty, out),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A `timestamptz` (or `bigint` micros) column read back.
struct PgTime(Timestamp);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let v = i64::from_sql(&Type::INT8, raw)?;
        Ok(PgTime(Timestamp::from_micros(match *ty {
            Type::INT8 => v,
            _ if v == i64::MAX => i64::MAX,
            _ => v.saturating_add(PG_EPOCH),
        })))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP | Type::INT8)
    }
}

/// A `jsonb`, `json` or text column read back as its text.
struct PgJson(String);

impl<'a> FromSql<'a> for PgJson {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = match (*ty == Type::JSONB, raw.split_first()) {
            (true, Some((1, rest))) => rest,
            (true, _) => return Err("unknown jsonb version".into()),
            (false, _) => raw,
        };
        Ok(PgJson(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSONB | Type::JSON | Type::TEXT | Type::VARCHAR)
    }
}

struct PgRow<'a>(&'a tokio_postgres::Row);

impl PgRow<'_> {
    fn get<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }

    fn is_uuid(&self, i: usize) -> bool {
        self.0.columns().get(i).is_some_and(|c| *c.type_() == Type::UUID)
    }
}

impl Row for PgRow<'_> {
    fn text(&self, i: usize) -> Result<String, String> {
        self.opt_text(i)?.ok_or_else(|| format!("column {i} is null"))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, String> {
        if self.is_uuid(i) {
            return Ok(self.get::<Option<Uuid>>(i)?.map(|u| u.to_string()));
        }
        self.get(i)
    }
    fn int(&self, i: usize) -> Result<i64, String> {
        self.opt_int(i)?.ok_or_else(|| format!("column {i} is null"))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        match self.0.columns().get(i).map(|c| c.type_().clone()) {
            Some(Type::INT2) => Ok(self.get::<Option<i16>>(i)?.map(i64::from)),
            Some(Type::INT4) => Ok(self.get::<Option<i32>>(i)?.map(i64::from)),
            _ => self.get(i),
        }
    }
    fn uuid(&self, i: usize) -> Result<Uuid, String> {
        self.get(i)
    }
    fn time(&self, i: usize) -> Result<Timestamp, String> {
        Ok(self.get::<PgTime>(i)?.0)
    }
    fn json(&self, i: usize) -> Result<String, String> {
        Ok(self.get::<PgJson>(i)?.0)
    }
}

/// A tokio-postgres error, as the writer needs it: retry later
/// (connection, server, resources) or skip (the statement's fault).
fn classify(e: tokio_postgres::Error) -> DbError {
    if e.is_closed() {
        return DbError::Unavailable(e.to_string());
    }
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    match e.code().map(|c| c.code()) {
        // Connection exception, insufficient resources (disk full),
        // operator intervention (shutdown), system error, serialization.
        Some(code) if ["08", "53", "57", "58", "40"].iter().any(|p| code.starts_with(p)) => {
            DbError::Unavailable(text)
        }
        Some(_) => DbError::Rejected(text),
        None => {
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            if io {
                DbError::Unavailable(text)
            } else {
                DbError::Rejected(text)
            }
        }
    }
}
