//! PostgreSQL's schema: ordered migrations, recorded in
//! `schema_migrations`, applied in one transaction under an advisory lock
//! (nodes starting together migrate once).

use crate::db::{collect, Db, Value};
use crate::StoreError;

/// Migration `i` (0-based) is version `i + 1`. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: everything, records as typed columns.
    "CREATE TABLE bindings (
        aor text NOT NULL,
        contact text NOT NULL,
        instance text,
        reg_id bigint,
        q integer NOT NULL,
        expires_at timestamptz NOT NULL,
        call_id text NOT NULL,
        cseq bigint NOT NULL,
        transport text NOT NULL,
        source text NOT NULL,
        \"local\" text NOT NULL,
        user_agent text NOT NULL,
        PRIMARY KEY (aor, contact)
    );
    CREATE INDEX bindings_expires_at ON bindings (expires_at);
    CREATE TABLE customers (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        api_keys text NOT NULL DEFAULT '[]'
    );
    CREATE TABLE domains (
        name text PRIMARY KEY,
        customer_id uuid NOT NULL,
        aliases text NOT NULL
    );
    CREATE TABLE extensions (
        domain text NOT NULL,
        name text NOT NULL,
        ha1_md5 text NOT NULL,
        ha1_sha256 text NOT NULL,
        display_name text NOT NULL,
        id uuid NOT NULL UNIQUE,
        customer_id uuid NOT NULL,
        detail text NOT NULL DEFAULT '',
        origin text NOT NULL,
        tm_create timestamptz NOT NULL,
        tm_update timestamptz NOT NULL,
        handling text NOT NULL DEFAULT '',
        PRIMARY KEY (domain, name)
    );
    CREATE INDEX extensions_paging ON extensions (customer_id, tm_create DESC, id DESC);
    CREATE TABLE ringgroups (
        id uuid PRIMARY KEY,
        customer_id uuid NOT NULL,
        domain text NOT NULL,
        number text NOT NULL,
        origin text NOT NULL,
        tm_create timestamptz NOT NULL,
        data jsonb NOT NULL
    );
    CREATE INDEX ringgroups_paging ON ringgroups (customer_id, tm_create DESC, id DESC);
    CREATE TABLE hunt_memory (
        group_id uuid PRIMARY KEY,
        data jsonb NOT NULL
    );
    CREATE TABLE webhooks (
        customer_id uuid PRIMARY KEY,
        url text NOT NULL,
        secret text NOT NULL,
        origin text NOT NULL,
        tm_create timestamptz NOT NULL,
        tm_update timestamptz NOT NULL
    );
    CREATE TABLE api_keys (
        hash text PRIMARY KEY,
        customer_id uuid NOT NULL,
        origin text NOT NULL,
        tm_create timestamptz NOT NULL
    );
    CREATE INDEX api_keys_customer ON api_keys (customer_id);
    CREATE TABLE groupcalls (
        id uuid PRIMARY KEY,
        customer_id uuid NOT NULL,
        source_type text NOT NULL,
        source_target text NOT NULL,
        source_target_name text NOT NULL,
        source_name text NOT NULL,
        source_detail text NOT NULL,
        destinations jsonb NOT NULL,
        ring_method text NOT NULL,
        answer_method text NOT NULL,
        status text NOT NULL,
        answer_call_id uuid NOT NULL,
        answer_groupcall_id uuid NOT NULL,
        call_ids jsonb NOT NULL,
        groupcall_ids jsonb NOT NULL,
        master_call_id uuid NOT NULL,
        master_groupcall_id uuid NOT NULL,
        tm_create timestamptz NOT NULL,
        tm_update timestamptz NOT NULL,
        tm_delete timestamptz NOT NULL
    );
    CREATE INDEX groupcalls_paging ON groupcalls (customer_id, tm_create DESC, id DESC);
    CREATE INDEX groupcalls_status ON groupcalls (status, tm_create);
    CREATE TABLE calls (
        id uuid PRIMARY KEY,
        customer_id uuid NOT NULL,
        groupcall_id uuid NOT NULL,
        source_type text NOT NULL,
        source_target text NOT NULL,
        source_target_name text NOT NULL,
        source_name text NOT NULL,
        source_detail text NOT NULL,
        destination_type text NOT NULL,
        destination_target text NOT NULL,
        destination_target_name text NOT NULL,
        destination_name text NOT NULL,
        destination_detail text NOT NULL,
        direction text NOT NULL,
        status text NOT NULL,
        hangup_by text NOT NULL,
        hangup_reason text NOT NULL,
        sip_call_id text NOT NULL,
        tm_ringing timestamptz NOT NULL,
        tm_progressing timestamptz NOT NULL,
        tm_hangup timestamptz NOT NULL,
        tm_create timestamptz NOT NULL,
        tm_update timestamptz NOT NULL,
        tm_delete timestamptz NOT NULL
    );
    CREATE INDEX calls_paging ON calls (customer_id, tm_create DESC, id DESC);
    CREATE INDEX calls_destination ON calls (destination_target, tm_create);
    CREATE INDEX calls_status ON calls (status, tm_create);",
    // 2: several nodes (issue 25). A binding's owning node, its flow's
    // connection and whether its node's lease ran out; the node carrying
    // each record (partial indexes: a dead node's live records are found
    // without scanning ended ones) and the node a leg was relayed through;
    // the nodes and their leases; the cluster's secret (node-to-node hop
    // tokens), made by the first node.
    "ALTER TABLE bindings ADD COLUMN node_id text NOT NULL DEFAULT '';
    ALTER TABLE bindings ADD COLUMN conn bigint;
    ALTER TABLE bindings ADD COLUMN unreachable smallint NOT NULL DEFAULT 0;
    CREATE INDEX bindings_node ON bindings (node_id);
    ALTER TABLE groupcalls ADD COLUMN node_id text NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN node_id text NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN relay_node_id text NOT NULL DEFAULT '';
    CREATE INDEX groupcalls_node_live ON groupcalls (node_id) WHERE status <> 'hangup';
    CREATE INDEX calls_node_live ON calls (node_id) WHERE status <> 'hangup';
    CREATE TABLE cluster_nodes (
        node_id text PRIMARY KEY,
        advertise text NOT NULL,
        incarnation bigint NOT NULL,
        state text NOT NULL,
        lease_until timestamptz NOT NULL,
        started_at timestamptz NOT NULL
    );
    CREATE TABLE cluster_secret (
        id integer PRIMARY KEY CHECK (id = 1),
        secret text NOT NULL
    );",
    // 3: which rtpengine anchors a leg's media, and the address it gave
    // the leg ('' when media is not anchored).
    "ALTER TABLE calls ADD COLUMN media_anchor text NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN media_address text NOT NULL DEFAULT '';",
];

/// A constant of ours for `pg_advisory_xact_lock`.
const MIGRATION_LOCK: i64 = 0x666f_726b_7377; // "forksw"

/// Applies the missing migrations; returns how many.
pub(crate) fn migrate(db: &mut dyn Db) -> Result<usize, StoreError> {
    migrate_to(db, MIGRATIONS.len())
}

/// Applies migrations up to version `target`, refusing a database newer
/// than this build.
pub(crate) fn migrate_to(db: &mut dyn Db, target: usize) -> Result<usize, StoreError> {
    crate::db::begin(db)?;
    let r = (|| -> Result<i64, crate::db::DbError> {
        db.execute("SELECT pg_advisory_xact_lock(?1)", &[Value::Int(MIGRATION_LOCK)])?;
        db.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )?;
        let found = collect(
            db,
            "SELECT COALESCE(max(version), 0)::bigint FROM schema_migrations",
            &[],
            "schema_migrations",
            |r| r.int(0),
        )?
        .pop()
        .unwrap_or(0);
        Ok(found)
    })();
    let found = match r {
        Ok(v) => v,
        Err(e) => {
            let _ = db.batch("ROLLBACK");
            return Err(e.into());
        }
    };
    let known = MIGRATIONS.len();
    let from = match usize::try_from(found).ok().filter(|v| *v <= known) {
        Some(v) => v,
        None => {
            let _ = db.batch("ROLLBACK");
            return Err(StoreError::SchemaTooNew { found, known });
        }
    };
    let r = (|| -> Result<usize, crate::db::DbError> {
        for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(from) {
            tracing::info!(version = i + 1, "store: applying PostgreSQL schema migration");
            db.batch(sql)?;
            let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
            db.execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                &[Value::Int(version)],
            )?;
        }
        Ok(target.saturating_sub(from))
    })();
    Ok(crate::apply::finish(db, r)?)
}
