//! One SQL interface over both databases: [`Db`] runs a statement with
//! [`Value`] parameters and hands each result row to a callback as a
//! [`Row`]. Everything but the record hot path (`crate::columns`) and the
//! schema is written once, over `&mut dyn Db`, for SQLite and PostgreSQL.
//!
//! Statements are written in SQLite's numbered style (`?1`, `?2`); the
//! PostgreSQL connection rewrites them to `$1`, `$2` once and caches the
//! prepared statement. Where the two dialects differ, the caller picks the
//! text by [`Db::dialect`].

use crate::window::RecordSet;
use records::Timestamp;
use uuid::Uuid;

/// Which SQL a [`Db`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter. Each backend encodes it for its column types:
/// a UUID is text in SQLite and `uuid` in PostgreSQL; a time is integer
/// microseconds in SQLite's configuration tables, text
/// (`YYYY-MM-DD HH:MM:SS.ffffff`) in its record tables ([`Value::RecordTime`])
/// and `timestamptz` (or `bigint` microseconds) in PostgreSQL.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Uuid(Uuid),
    /// A time in a configuration table (bindings, extensions, webhooks...).
    Time(Timestamp),
    /// A time compared with a groupcall or call column.
    RecordTime(Timestamp),
    /// JSON text (`jsonb` in PostgreSQL).
    Json(String),
    Null,
}

/// Why a statement failed, as the writer needs to know it.
#[derive(Debug)]
pub(crate) enum DbError {
    /// The database cannot be reached or cannot write now (connection lost,
    /// server down, disk full, locked): keep the changes and retry.
    Unavailable(String),
    /// This statement or its data is at fault (a constraint, a missing
    /// table): retrying the same will fail the same.
    Rejected(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Unavailable(e) => write!(f, "database unavailable: {e}"),
            DbError::Rejected(e) => write!(f, "{e}"),
        }
    }
}

impl From<DbError> for crate::StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(e) => crate::StoreError::Unavailable(e),
            DbError::Rejected(e) => crate::StoreError::Database(e),
        }
    }
}

/// One result row. Column indexes are 0-based; a failed decode is a message
/// (the caller skips and logs the row).
pub(crate) trait Row {
    fn text(&self, i: usize) -> Result<String, String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, String>;
    fn int(&self, i: usize) -> Result<i64, String>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String>;
    fn uuid(&self, i: usize) -> Result<Uuid, String>;
    fn time(&self, i: usize) -> Result<Timestamp, String>;
    /// JSON text of a `json`/`jsonb` (or text) column.
    fn json(&self, i: usize) -> Result<String, String>;
}

/// A connection (or transaction) of either database.
pub(crate) trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns the rows it changed.
    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, DbError>;
    /// Runs one query, calling `each` on every row; a decode error from
    /// `each` is logged (as `what`) and the row skipped.
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), String>,
    ) -> Result<(), DbError>;
    /// Runs statements without parameters (`BEGIN`, `COMMIT`, DDL).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Upserts the groupcalls and calls of `set` with as few statements as
    /// the dialect allows; a record once deleted stays deleted.
    fn write_records(&mut self, set: &RecordSet) -> Result<(), DbError>;
}

/// Starts a write transaction in either dialect.
pub(crate) fn begin(db: &mut dyn Db) -> Result<(), DbError> {
    match db.dialect() {
        Dialect::Sqlite => db.batch("BEGIN IMMEDIATE"),
        Dialect::Postgres => db.batch("BEGIN"),
    }
}

/// Collects the rows of a query decoded by `f`, skipping (and logging)
/// the rows that do not decode.
pub(crate) fn collect<T>(
    db: &mut dyn Db,
    sql: &'static str,
    params: &[Value<'_>],
    what: &'static str,
    f: impl Fn(&dyn Row) -> Result<T, String>,
) -> Result<Vec<T>, DbError> {
    let mut out = Vec::new();
    db.query(sql, params, &mut |r| {
        match f(r) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(what, error = %e, "store: skipping corrupt row"),
        }
        Ok(())
    })?;
    Ok(out)
}

/// [`collect`] for at most one row.
pub(crate) fn one<T>(
    db: &mut dyn Db,
    sql: &'static str,
    params: &[Value<'_>],
    what: &'static str,
    f: impl Fn(&dyn Row) -> Result<T, String>,
) -> Result<Option<T>, DbError> {
    Ok(collect(db, sql, params, what, f)?.pop())
}

/// `sql` with SQLite's `?N` placeholders written PostgreSQL's way (`$N`).
pub(crate) fn numbered_to_dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders() {
        assert_eq!(
            super::numbered_to_dollar("SELECT a FROM t WHERE b = ?1 AND c = '?' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $12"
        );
    }
}
