//! [`SqliteStore`]: a database file in WAL mode; the writer thread owns one
//! connection, the reads share a second one.

use crate::columns::{self, Col};
use crate::db::{Db, DbError, Dialect, Row, Value};
use crate::op::Op;
use crate::window::RecordSet;
use crate::writer::{Options, Queue};
use crate::{hash_api_key, reads, schema, Closed, Cursor, JsonRecord, StoreError};
use records::{config_id, Timestamp, NIL};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use uuid::Uuid;

/// The SQLite [`crate::Store`]: a database file in WAL mode, written by a
/// background thread. Dropping it commits what is held and joins the thread.
///
/// One process at a time should own a database file (SQLite would let two
/// share it, but a server keeps what it loaded in memory and would not see
/// the other's writes). `:memory:` does not work (two connections, two
/// databases): use [`crate::MemoryStore`].
pub struct SqliteStore {
    queue: Queue,
    reader: Mutex<Connection>,
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
    // 32 MB of page cache (SQLite's default is 2 MB): the records' indexes
    // (random UUID keys) outgrow the default within minutes of calls, and
    // each miss is a read from the OS.
    conn.pragma_update(None, "cache_size", -32_768)?;
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
        Ok(SqliteStore { queue: Queue::start(wconn, opts)?, reader: Mutex::new(rconn), path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, DbError>) -> Result<T, StoreError> {
        let mut conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut *conn).map_err(Into::into)
    }
}

crate::sql_store::impl_sql_store!(SqliteStore);

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
        let keys: Vec<String> = serde_json::from_str(keys).unwrap_or_default();
        for key in keys.iter().filter(|k| !k.is_empty()) {
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

/// An error, as the writer needs it: can it be retried later?
fn classify(e: rusqlite::Error) -> DbError {
    use ErrorCode::*;
    match e.sqlite_error_code() {
        Some(
            DatabaseBusy
            | DatabaseLocked
            | OutOfMemory
            | ReadOnly
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | FileLockingProtocolFailed
            | PermissionDenied,
        ) => DbError::Unavailable(e.to_string()),
        _ => DbError::Rejected(e.to_string()),
    }
}

/// A time in a record table: `YYYY-MM-DD HH:MM:SS.ffffff` text, which
/// sorts as the time does; the end of time (a page's open bound) sorts
/// after every time.
fn record_time(t: Timestamp) -> String {
    if t.micros() == i64::MAX {
        return "9999-99-99".into();
    }
    t.to_string()
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(match self {
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::Uuid(u) => ToSqlOutput::Owned(V::Text(u.to_string())),
            Value::Time(t) => ToSqlOutput::Owned(V::Integer(t.micros())),
            Value::RecordTime(t) => ToSqlOutput::Owned(V::Text(record_time(*t))),
            Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Null => ToSqlOutput::Owned(V::Null),
        })
    }
}

impl rusqlite::ToSql for Col<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(match self {
            Col::Uuid(u) => ToSqlOutput::Owned(V::Text(u.to_string())),
            Col::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Col::Time(t) => ToSqlOutput::Owned(V::Text(record_time(*t))),
            Col::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for SqliteRow<'_, '_> {
    fn text(&self, i: usize) -> Result<String, String> {
        self.0.get(i).map_err(|e| e.to_string())
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, String> {
        self.0.get(i).map_err(|e| e.to_string())
    }
    fn int(&self, i: usize) -> Result<i64, String> {
        self.0.get(i).map_err(|e| e.to_string())
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        self.0.get(i).map_err(|e| e.to_string())
    }
    fn uuid(&self, i: usize) -> Result<Uuid, String> {
        // Empty: rows from before the column existed.
        let text = self.text(i)?;
        if text.is_empty() {
            return Ok(NIL);
        }
        Uuid::parse_str(&text).map_err(|e| format!("bad uuid {text:?}: {e}"))
    }
    fn time(&self, i: usize) -> Result<Timestamp, String> {
        match self.0.get_ref(i).map_err(|e| e.to_string())? {
            ValueRef::Integer(us) => Ok(Timestamp::from_micros(us)),
            ValueRef::Text(t) => {
                let t = std::str::from_utf8(t).map_err(|e| e.to_string())?;
                Timestamp::parse(t).ok_or_else(|| format!("bad time {t:?}"))
            }
            other => Err(format!("not a time: {other:?}")),
        }
    }
    fn json(&self, i: usize) -> Result<String, String> {
        self.text(i)
    }
}

impl Db for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, DbError> {
        let mut stmt = self.prepare_cached(sql).map_err(classify)?;
        let n = stmt.execute(rusqlite::params_from_iter(params.iter())).map_err(classify)?;
        Ok(n as u64)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), String>,
    ) -> Result<(), DbError> {
        let mut stmt = self.prepare_cached(sql).map_err(classify)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter())).map_err(classify)?;
        while let Some(row) = rows.next().map_err(classify)? {
            each(&SqliteRow(row)).map_err(DbError::Rejected)?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.execute_batch(sql).map_err(classify)
    }

    fn write_records(&mut self, set: &RecordSet) -> Result<(), DbError> {
        let (groupcalls, calls) = columns::rows(set);
        upsert_rows(self, Table::Groupcalls, &groupcalls)?;
        upsert_rows(self, Table::Calls, &calls)
    }
}

/// A record table.
#[derive(Clone, Copy)]
enum Table {
    Groupcalls,
    Calls,
}

/// Rows per multi-row statement: 64 and, for the rest, 32, 16... 1 (one
/// cached statement each).
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `INSERT INTO table (...) VALUES (...), ... ON CONFLICT ...` for `rows`
/// rows (one of [`CHUNKS`]).
fn upsert_sql(table: Table, rows: usize) -> &'static str {
    static SQL: OnceLock<[Vec<String>; 2]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let build = |name: &str, cols: &[&str]| -> Vec<String> {
            CHUNKS
                .iter()
                .map(|&n| {
                    let one = format!("({})", vec!["?"; cols.len()].join(", "));
                    let not_yet = format!("'{}'", Timestamp::NOT_YET);
                    format!(
                        "INSERT INTO {name} ({}) VALUES {}{}",
                        cols.join(", "),
                        vec![one; n].join(", "),
                        columns::sql::on_conflict(name, cols, &not_yet)
                    )
                })
                .collect()
        };
        [build("groupcalls", &columns::GROUPCALL_COLUMNS), build("calls", &columns::CALL_COLUMNS)]
    });
    let i = CHUNKS.iter().position(|&n| n == rows).unwrap_or(CHUNKS.len() - 1);
    &all[table as usize][i]
}

/// Upserts `rows` with as few statements as [`CHUNKS`] allow.
fn upsert_rows<const N: usize>(
    conn: &Connection,
    table: Table,
    rows: &[[Col<'_>; N]],
) -> Result<(), DbError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = CHUNKS.iter().copied().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = conn.prepare_cached(upsert_sql(table, n)).map_err(classify)?;
        for (i, col) in chunk.iter().flatten().enumerate() {
            stmt.raw_bind_parameter(i + 1, col).map_err(classify)?;
        }
        stmt.raw_execute().map_err(classify)?;
        rest = tail;
    }
    Ok(())
}
