//! SQLite's schema: ordered migrations, `PRAGMA user_version` = how many are
//! applied.

use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// Migration `i` (0-based) takes the database from `user_version` `i` to
/// `i + 1`. Append only: never edit or reorder a released migration.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the tables.
    "CREATE TABLE bindings (
        aor TEXT NOT NULL,
        contact TEXT NOT NULL,
        instance TEXT,
        reg_id INTEGER,
        q INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        transport TEXT NOT NULL,
        source TEXT NOT NULL,
        local TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        PRIMARY KEY (aor, contact)
    ) WITHOUT ROWID;
    CREATE TABLE customers (
        id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        api_keys TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE domains (
        name TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        aliases TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE extensions (
        domain TEXT NOT NULL,
        name TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        display_name TEXT NOT NULL,
        PRIMARY KEY (domain, name)
    ) WITHOUT ROWID;
    CREATE TABLE groupcalls (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        tm_create INTEGER NOT NULL,
        tm_delete INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE calls (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        tm_create INTEGER NOT NULL,
        tm_delete INTEGER NOT NULL,
        data TEXT NOT NULL
    );",
    // 2: indexes for expiry and time-based paging.
    "CREATE INDEX bindings_expires_at ON bindings (expires_at);
    CREATE INDEX groupcalls_paging ON groupcalls (customer_id, tm_create DESC, id DESC);
    CREATE INDEX calls_paging ON calls (customer_id, tm_create DESC, id DESC);",
    // 3: the REST API's records. Extensions get an id (backfilled at open
    // for rows written before: UUID v5 needs Rust), owner, free text, origin
    // and times; ring groups, webhooks and hashed API keys get tables;
    // groupcalls and calls get a `live` column (status not `hangup`) so that
    // crash reconciliation finds the live ones without parsing every record
    // (a scan of one integer column, once at start: no index, which every
    // record's status change would have to maintain).
    "ALTER TABLE extensions ADD COLUMN id TEXT;
    ALTER TABLE extensions ADD COLUMN customer_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE extensions ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE extensions ADD COLUMN origin TEXT NOT NULL DEFAULT 'config';
    ALTER TABLE extensions ADD COLUMN tm_create INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE extensions ADD COLUMN tm_update INTEGER NOT NULL DEFAULT 0;
    UPDATE extensions SET customer_id = COALESCE(
        (SELECT d.customer_id FROM domains d WHERE d.name = extensions.domain COLLATE NOCASE), '');
    CREATE UNIQUE INDEX extensions_id ON extensions (id);
    CREATE INDEX extensions_paging ON extensions (customer_id, tm_create DESC, id DESC);
    CREATE TABLE ringgroups (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        domain TEXT NOT NULL,
        number TEXT NOT NULL,
        origin TEXT NOT NULL,
        tm_create INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX ringgroups_paging ON ringgroups (customer_id, tm_create DESC, id DESC);
    CREATE TABLE webhooks (
        customer_id TEXT NOT NULL PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        origin TEXT NOT NULL,
        tm_create INTEGER NOT NULL,
        tm_update INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE api_keys (
        hash TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        origin TEXT NOT NULL,
        tm_create INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX api_keys_customer ON api_keys (customer_id);
    ALTER TABLE groupcalls ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
    UPDATE groupcalls SET live = (json_extract(data, '$.status') IS NOT 'hangup');
    UPDATE calls SET live = (json_extract(data, '$.status') IS NOT 'hangup');",
    // 4: what round-robin and least-recent ring groups remember.
    "CREATE TABLE hunt_memory (
        group_id TEXT NOT NULL PRIMARY KEY,
        data TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 5: how an extension takes calls (max_calls, dnd, forwards), as JSON;
    // '' is the default (unlimited, no DND, no forward).
    "ALTER TABLE extensions ADD COLUMN handling TEXT NOT NULL DEFAULT '';",
    // 6: groupcalls and calls as typed columns (an operator's SQL can ask
    // them anything), times as `YYYY-MM-DD HH:MM:SS.ffffff` text (sorts as
    // the time does; SQLite's date functions read it), lists as JSON; the
    // JSON `data` and `live` columns go. Indexes: paging by customer, CDR
    // questions by destination and by status and time (also what retention
    // and crash reconciliation use).
    "CREATE TABLE groupcalls_typed (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        source_type TEXT NOT NULL,
        source_target TEXT NOT NULL,
        source_target_name TEXT NOT NULL,
        source_name TEXT NOT NULL,
        source_detail TEXT NOT NULL,
        destinations TEXT NOT NULL,
        ring_method TEXT NOT NULL,
        answer_method TEXT NOT NULL,
        status TEXT NOT NULL,
        answer_call_id TEXT NOT NULL,
        answer_groupcall_id TEXT NOT NULL,
        call_ids TEXT NOT NULL,
        groupcall_ids TEXT NOT NULL,
        master_call_id TEXT NOT NULL,
        master_groupcall_id TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        tm_update TEXT NOT NULL,
        tm_delete TEXT NOT NULL
    );
    INSERT INTO groupcalls_typed SELECT id, customer_id,
        COALESCE(json_extract(data, '$.source.type'), 'tel'),
        COALESCE(json_extract(data, '$.source.target'), ''),
        COALESCE(json_extract(data, '$.source.target_name'), ''),
        COALESCE(json_extract(data, '$.source.name'), ''),
        COALESCE(json_extract(data, '$.source.detail'), ''),
        COALESCE(json_extract(data, '$.destinations'), '[]'),
        COALESCE(NULLIF(json_extract(data, '$.ring_method'), ''), 'ring_all'),
        COALESCE(NULLIF(json_extract(data, '$.answer_method'), ''), 'hangup_others'),
        COALESCE(json_extract(data, '$.status'), 'progressing'),
        COALESCE(json_extract(data, '$.answer_call_id'), ''),
        COALESCE(json_extract(data, '$.answer_groupcall_id'), ''),
        COALESCE(json_extract(data, '$.call_ids'), '[]'),
        COALESCE(json_extract(data, '$.groupcall_ids'), '[]'),
        COALESCE(json_extract(data, '$.master_call_id'), ''),
        COALESCE(json_extract(data, '$.master_groupcall_id'), ''),
        COALESCE(json_extract(data, '$.tm_create'), '1970-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_update'), '1970-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_delete'), '9999-01-01 00:00:00.000000')
        FROM groupcalls;
    DROP TABLE groupcalls;
    ALTER TABLE groupcalls_typed RENAME TO groupcalls;
    CREATE INDEX groupcalls_paging ON groupcalls (customer_id, tm_create DESC, id DESC);
    CREATE INDEX groupcalls_status ON groupcalls (status, tm_create);
    CREATE TABLE calls_typed (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        groupcall_id TEXT NOT NULL,
        source_type TEXT NOT NULL,
        source_target TEXT NOT NULL,
        source_target_name TEXT NOT NULL,
        source_name TEXT NOT NULL,
        source_detail TEXT NOT NULL,
        destination_type TEXT NOT NULL,
        destination_target TEXT NOT NULL,
        destination_target_name TEXT NOT NULL,
        destination_name TEXT NOT NULL,
        destination_detail TEXT NOT NULL,
        direction TEXT NOT NULL,
        status TEXT NOT NULL,
        hangup_by TEXT NOT NULL,
        hangup_reason TEXT NOT NULL,
        sip_call_id TEXT NOT NULL,
        tm_ringing TEXT NOT NULL,
        tm_progressing TEXT NOT NULL,
        tm_hangup TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        tm_update TEXT NOT NULL,
        tm_delete TEXT NOT NULL
    );
    INSERT INTO calls_typed SELECT id, customer_id,
        COALESCE(json_extract(data, '$.groupcall_id'), ''),
        COALESCE(json_extract(data, '$.source.type'), 'tel'),
        COALESCE(json_extract(data, '$.source.target'), ''),
        COALESCE(json_extract(data, '$.source.target_name'), ''),
        COALESCE(json_extract(data, '$.source.name'), ''),
        COALESCE(json_extract(data, '$.source.detail'), ''),
        COALESCE(json_extract(data, '$.destination.type'), 'tel'),
        COALESCE(json_extract(data, '$.destination.target'), ''),
        COALESCE(json_extract(data, '$.destination.target_name'), ''),
        COALESCE(json_extract(data, '$.destination.name'), ''),
        COALESCE(json_extract(data, '$.destination.detail'), ''),
        COALESCE(json_extract(data, '$.direction'), 'incoming'),
        COALESCE(json_extract(data, '$.status'), 'dialing'),
        COALESCE(json_extract(data, '$.hangup_by'), ''),
        COALESCE(json_extract(data, '$.hangup_reason'), ''),
        COALESCE(json_extract(data, '$.sip_call_id'), ''),
        COALESCE(json_extract(data, '$.tm_ringing'), '9999-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_progressing'), '9999-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_hangup'), '9999-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_create'), '1970-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_update'), '1970-01-01 00:00:00.000000'),
        COALESCE(json_extract(data, '$.tm_delete'), '9999-01-01 00:00:00.000000')
        FROM calls;
    DROP TABLE calls;
    ALTER TABLE calls_typed RENAME TO calls;
    CREATE INDEX calls_paging ON calls (customer_id, tm_create DESC, id DESC);
    CREATE INDEX calls_destination ON calls (destination_target, tm_create);
    CREATE INDEX calls_status ON calls (status, tm_create);",
    // 7: several nodes (issue 25): a binding's owning node, its flow's
    // connection and whether its node's lease ran out; the node carrying
    // each record, and the node a leg was relayed through. (The cluster
    // itself needs PostgreSQL: SQLite only keeps the columns, empty.)
    "ALTER TABLE bindings ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE bindings ADD COLUMN conn INTEGER;
    ALTER TABLE bindings ADD COLUMN unreachable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groupcalls ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN relay_node_id TEXT NOT NULL DEFAULT '';",
    // 8: which rtpengine anchors a leg's media, and the address it gave
    // the leg ('' when media is not anchored).
    "ALTER TABLE calls ADD COLUMN media_anchor TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN media_address TEXT NOT NULL DEFAULT '';",
];

/// The schema version of a database with every migration applied.
#[cfg(test)]
pub(crate) fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The database's `user_version`.
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Applies migrations up to `target` (a count, at most `MIGRATIONS.len()`) in
/// one transaction; returns how many were applied (0: nothing was written).
pub(crate) fn migrate_to(conn: &mut Connection, target: usize) -> Result<usize, StoreError> {
    let target = target.min(MIGRATIONS.len());
    let known = MIGRATIONS.len();
    let check = |found: i64| -> Result<usize, StoreError> {
        usize::try_from(found)
            .ok()
            .filter(|v| *v <= known)
            .ok_or(StoreError::SchemaTooNew { found, known })
    };
    // Fast path without taking the write lock.
    if check(version(conn)?)? >= target {
        return Ok(0);
    }
    // Another process may be migrating the same file: re-read under the lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = check(version(&tx)?)?;
    if from >= target {
        return Ok(0);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(from) {
        tracing::info!(version = i + 1, "store: applying schema migration");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", target as i64)?;
    tx.commit()?;
    Ok(target - from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteStore, Store};
    use records::Customer;
    use uuid::Uuid;

    fn schema_version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA schema_version", [], |r| r.get(0)).expect("schema_version")
    }

    fn index_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND name=?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .expect("sqlite_master")
            == 1
    }

    #[test]
    fn fresh_database_gets_every_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("db")).expect("open");
        assert_eq!(version(&conn).expect("version"), 0);
        assert_eq!(migrate_to(&mut conn, MIGRATIONS.len()).expect("migrate"), MIGRATIONS.len());
        assert_eq!(version(&conn).expect("version"), current_version());
    }

    #[test]
    fn open_at_current_version_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let customer = Customer { id: Uuid::new_v4(), name: "acme".into(), api_keys: vec![] };
        {
            let s = SqliteStore::open(&path).expect("open");
            s.upsert_customer(&customer);
            s.flush().expect("flush");
        }
        let mut conn = Connection::open(&path).expect("open");
        let before = schema_version(&conn);
        assert_eq!(version(&conn).expect("version"), current_version());
        assert_eq!(migrate_to(&mut conn, MIGRATIONS.len()).expect("migrate"), 0);
        drop(conn);
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(s.customers().expect("customers"), vec![customer]);
        drop(s);
        let conn = Connection::open(&path).expect("open");
        assert_eq!(schema_version(&conn), before, "no schema change on reopen");
        assert_eq!(version(&conn).expect("version"), current_version());
    }

    #[test]
    fn database_at_an_earlier_version_upgrades() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        // Version 2: before the API's records (3) and the hunt memory (4).
        {
            let mut conn = Connection::open(&path).expect("open");
            assert_eq!(migrate_to(&mut conn, 2).expect("migrate"), 2);
            assert_eq!(version(&conn).expect("version"), 2);
            assert!(!index_exists(&conn, "ringgroups_paging"));
            conn.execute(
                "INSERT INTO customers (id, name, api_keys) VALUES (?1, 'old', '[\"k\"]')",
                [Uuid::nil().to_string()],
            )
            .expect("insert");
            conn.execute(
                "INSERT INTO domains (name, customer_id, aliases) VALUES ('test', ?1, '[]')",
                [Uuid::nil().to_string()],
            )
            .expect("insert");
            conn.execute(
                "INSERT INTO extensions (domain, name, ha1_md5, ha1_sha256, display_name) \
                 VALUES ('test', 'test11', 'a', 'b', 'T')",
                [],
            )
            .expect("insert");
            conn.execute(
                "INSERT INTO calls (id, customer_id, tm_create, tm_delete, data) \
                 VALUES ('x', 'y', 0, 0, '{\"status\":\"ringing\"}')",
                [],
            )
            .expect("insert");
        }
        let s = SqliteStore::open(&path).expect("open upgrades");
        let customers = s.customers().expect("customers");
        assert_eq!(customers.len(), 1);
        assert_eq!(customers[0].name, "old");
        // The plain key moved to api_keys, hashed.
        assert!(customers[0].api_keys.is_empty());
        assert_eq!(s.api_key_customer(&crate::hash_api_key("k")).expect("key"), Some(Uuid::nil()));
        // The old extension got its stable id and owner.
        let id = records::config_id("test11@test");
        let e = s.extension_record(id).expect("read").expect("backfilled id");
        assert_eq!(e.customer_id, Uuid::nil());
        assert_eq!(e.extension.display_name, "T");
        drop(s);
        let conn = Connection::open(&path).expect("open");
        assert_eq!(version(&conn).expect("version"), current_version());
        assert!(index_exists(&conn, "calls_paging"));
        assert!(index_exists(&conn, "groupcalls_paging"));
        assert!(index_exists(&conn, "ringgroups_paging"));
        let hunt: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'hunt_memory'", [], |r| {
                r.get(0)
            })
            .expect("q");
        assert_eq!(hunt, 1, "migration 4 ran");
        let status: String =
            conn.query_row("SELECT status FROM calls WHERE id = 'x'", [], |r| r.get(0)).expect("q");
        assert_eq!(status, "ringing", "the JSON record became columns");
    }

    /// The list query of the REST API reads the page from the paging index,
    /// in order: no sort, no scan of other customers' or older records.
    #[test]
    fn paging_query_uses_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("db")).expect("open");
        migrate_to(&mut conn, MIGRATIONS.len()).expect("migrate");
        for table in ["groupcalls", "calls"] {
            let sql = format!("EXPLAIN QUERY PLAN {}", crate::columns::sql::page(table));
            let plan: Vec<String> = conn
                .prepare(&sql)
                .expect("prepare")
                .query_map([1, 2, 3, 4, 5], |r| r.get::<_, String>(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("rows");
            let plan = plan.join("; ");
            assert!(plan.contains(&format!("USING INDEX {table}_paging")), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "user_version", current_version() + 1).expect("pragma");
        }
        match SqliteStore::open(&path) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!(found, current_version() + 1);
                assert_eq!(known, MIGRATIONS.len());
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a newer database"),
        }
    }
}
