//! # store: what forkswitch keeps across restarts
//!
//! Registrations (bindings), accounts (customers, domains, extensions), ring
//! groups, webhooks, API keys, and the groupcall and call records survive a
//! restart of the switch, `kill -9` included, behind one object-safe trait,
//! [`Store`]. Three implementations:
//!
//! - [`SqliteStore`]: an embedded SQLite database file (WAL mode), the
//!   default;
//! - [`PgStore`]: PostgreSQL, for records an operator queries with SQL and
//!   (later) several switches sharing them;
//! - [`MemoryStore`]: everything in maps, nothing on disk; for tests and for
//!   running without a database file.
//!
//! [`open`] picks one by `[database] url` (`sqlite:PATH`, `postgres://...`).
//!
//! What it never does: no SIP, no clock of its own (times are passed in,
//! retention's cutoff too), and it never blocks the SIP hot path: a write
//! only enqueues (a channel send and a counter). Reads are synchronous and
//! meant for start-up and the REST API.
//!
//! ## The write path (both databases)
//!
//! One writer thread per store owns the write connection. It holds the
//! changes of one commit window ([`Options::max_delay`], `[database]
//! commit_delay_ms`) with each groupcall, call, binding and hunt memory
//! coalesced to its latest version, and commits them in one transaction:
//! a record changed six times in a window is one row write. Groupcalls and
//! calls are written with multi-row statements (SQLite `VALUES` lists in
//! chunks of 64, PostgreSQL one `INSERT ... SELECT FROM unnest($1::uuid[],
//! ...)` per table); other writes (configuration, deletes) keep their place
//! in the order. A [`Store::flush`] commits at once.
//!
//! When the database cannot take a commit (PostgreSQL down or unreachable,
//! SQLite's disk full or locked), the writer keeps what it holds, still
//! coalescing, and retries (0.1 s, doubling to 1 s); [`Options::max_pending`]
//! bounds what is held, past which the newest changes are dropped and
//! counted ([`StoreStats::dropped`]). Each transition is one log line. Reads
//! that cannot reach the database fail with [`StoreError::Unavailable`].
//!
//! ## Durability
//!
//! A commit is durable against the process dying once it returns (SQLite:
//! `journal_mode=WAL`, `synchronous=NORMAL`, or `FULL` with
//! [`Options::full_sync`]; PostgreSQL: its own `synchronous_commit`). What
//! the writer holds is lost with the process: at most the last commit
//! window. Dropping a store commits what it holds and joins its threads.
//!
//! ## Schema
//!
//! Versioned migrations per database, applied at open, refusing a database
//! newer than the build ([`StoreError::SchemaTooNew`]): SQLite counts them in
//! `PRAGMA user_version`, PostgreSQL in `schema_migrations`, applied under an
//! advisory lock so that nodes starting together migrate once. Groupcalls
//! and calls are typed columns (statuses, directions, hangup cause, SIP
//! Call-ID, source and destination type and target, related ids, every
//! `tm_*`), their lists JSON (`jsonb`); times are `timestamptz` in
//! PostgreSQL and `YYYY-MM-DD HH:MM:SS.ffffff` UTC text in SQLite's record
//! tables (integer microseconds in its other tables). Ids are UUIDs (text in
//! SQLite, in the [`Uuid`] order): paging ties on `tm_create` are broken by
//! id the same way in SQL and in memory.
//!
//! One SQL layer serves both databases: statements are written once, with
//! `?N` placeholders, over a small [`Db`](crate::db) trait; only the schema
//! and the bulk record statements are per database.
//!
//! ## Why tokio-postgres (and no pool crate, no sqlx)
//!
//! tokio-postgres is the rust-postgres driver (binary protocol, prepared
//! statements, arrays, COPY), small, and shares the crypto crates the tree
//! already has; it is pinned to a release that builds with the workspace's
//! Rust 1.80. sqlx would bring its macros and a second SQLite binding next
//! to rusqlite (both link `sqlite3`). The [`Store`] trait is synchronous, so
//! each connection lives on a thread of its own with a current-thread
//! runtime (the writer's, two readers'); an async pool (deadpool) would
//! need a runtime the callers do not have. A connection that breaks is made
//! again on its next use.
//!
//! ## Several nodes (issue 25)
//!
//! The writer, the coalescing window and the schema are node-agnostic:
//! bindings keyed `(aor, contact)` carry their owning `node_id` and flow,
//! records the node that carries them; rows are written in key order (no
//! lock-order deadlocks between nodes), ids are client-made UUIDs (no
//! sequences), and migrations take an advisory lock. [`Membership`] (its
//! own connection) keeps a node's lease, reads the live nodes, the
//! bindings and the provisioning, and reaps dead nodes.
//!
//! ## API keys
//!
//! Only the SHA-256 (hex) of a key is stored ([`hash_api_key`]), and keys are
//! looked up by that hash. A fast hash is enough, and a slow salted one
//! (argon2) would gain nothing: keys are meant to be random, 32 bytes or
//! more, so the hash cannot be brute-forced, and an unsalted hash is what
//! makes the indexed lookup possible. Webhook secrets, by contrast, are
//! stored as given: they are HMAC keys needed to sign each delivery.
//!
//! ## Main types
//!
//! [`Store`] (the trait), [`open`], [`SqliteStore`], [`PgStore`],
//! [`Options`], [`MemoryStore`], [`StoreError`], [`StoreStats`], [`Cursor`]
//! (paging), [`Closed`] (crash reconciliation), [`hash_api_key`].
#![deny(missing_docs)]

mod apply;
mod columns;
mod db;
mod membership;
mod memory;
mod op;
mod pg_schema;
mod postgres;
mod reads;
mod schema;
mod sql_store;
mod sqlite;
mod window;
mod writer;

pub use membership::{Membership, NodeLease, Reaped};
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use writer::Options;

use records::{
    ApiKey, Binding, Call, Customer, Domain, Extension, ExtensionRecord, Groupcall,
    HuntMemoryRecord, RingGroup, Timestamp, Webhook,
};
use std::sync::Arc;
use uuid::Uuid;

/// What can go wrong opening, reading or flushing a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An error from SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database cannot be reached or cannot write now (PostgreSQL down,
    /// connection lost, disk full): the API answers 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement.
    #[error("database: {0}")]
    Database(String),
    /// The database has more migrations applied than this build knows.
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        /// Schema version of the database.
        found: i64,
        /// Number of migrations this build has.
        known: usize,
    },
    /// A database URL this build does not know.
    #[error("{0}")]
    BadUrl(String),
    /// An I/O error (starting the writer thread).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The background writer is gone (it cannot be, short of a bug).
    #[error("the store's writer thread is gone")]
    WriterGone,
    /// Writes failed since the previous flush (each one was logged).
    #[error("{count} writes failed since the previous flush")]
    WritesFailed {
        /// How many.
        count: u64,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Opens the store a `[database] url` names: `sqlite:PATH` (a file, made
/// if missing) or `postgres://...` / `postgresql://...` (a libpq-style URL;
/// `host=/dir` in its query for a Unix socket), applying the missing schema
/// migrations. `options` tune the write path of either.
pub fn open(url: &str, options: Options) -> Result<Arc<dyn Store>, StoreError> {
    match parse_url(url)? {
        Backend::Sqlite(path) => Ok(Arc::new(SqliteStore::open_with(path, options)?)),
        Backend::Postgres(url) => Ok(Arc::new(PgStore::open_with(url, options)?)),
    }
}

/// A `[database] url` for logs: the SQLite path, or PostgreSQL's
/// `user@host:port/db` (never its password).
pub fn display_url(url: &str) -> String {
    match parse_url(url) {
        Ok(Backend::Sqlite(path)) => path.to_owned(),
        Ok(Backend::Postgres(u)) => postgres::display(u),
        Err(_) => "?".into(),
    }
}

/// Which database a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend<'a> {
    /// `sqlite:PATH`.
    Sqlite(&'a str),
    /// `postgres://...`, `postgresql://...`.
    Postgres(&'a str),
}

/// Checks a `[database] url` without opening anything.
pub fn parse_url(url: &str) -> Result<Backend<'_>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err(StoreError::BadUrl(
                "sqlite: needs a file path (sqlite:forkswitch.db)".into(),
            ));
        }
        return Ok(Backend::Sqlite(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Backend::Postgres(url));
    }
    Err(StoreError::BadUrl(format!("{url:?}: expected sqlite:PATH or postgres://USER@HOST/DB")))
}

/// A stored record as its JSON text (exactly what serde writes for the
/// record type), with the keys a page is cut by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonRecord {
    /// The record's `tm_create`.
    pub tm_create: Timestamp,
    /// The record's id.
    pub id: Uuid,
    /// The record, as JSON.
    pub json: String,
}

impl JsonRecord {
    /// The record `r` encoded.
    pub fn of<T: serde::Serialize>(r: &T, tm_create: Timestamp, id: Uuid) -> JsonRecord {
        JsonRecord { tm_create, id, json: serde_json::to_string(r).unwrap_or_default() }
    }
}

/// Where a page starts, newest first: the items strictly older than
/// `(tm_create, id)` (ties on `tm_create` broken by id, descending). The next
/// page's cursor is [`Cursor::after`] the last item of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// `tm_create` of the last item seen.
    pub tm_create: Timestamp,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The page after the item `(tm_create, id)`.
    pub fn after(tm_create: Timestamp, id: Uuid) -> Cursor {
        Cursor { tm_create, id }
    }

    /// Everything created strictly before `tm_create` (VoIPBin's page token:
    /// a bare time; the nil id sorts before every other).
    pub fn before(tm_create: Timestamp) -> Cursor {
        Cursor { tm_create, id: Uuid::nil() }
    }

    /// `true` when an item `(tm_create, id)` belongs after this cursor.
    pub fn admits(&self, tm_create: Timestamp, id: Uuid) -> bool {
        (tm_create, id) < (self.tm_create, self.id)
    }
}

/// What [`Store::close_live_records`] closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// Groupcall records set to `hangup`.
    pub groupcalls: u64,
    /// Call records set to `hangup` (by `local`, reason `failed`).
    pub calls: u64,
}

/// Lowercase hex SHA-256 of an API key: what is stored and looked up (see
/// the crate documentation for why a fast unsalted hash).
pub fn hash_api_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// A call record closed by crash reconciliation at `at`.
pub(crate) fn close_call(c: &mut Call, at: Timestamp) {
    c.status = records::CallStatus::Hangup;
    c.hangup_by = records::HangupBy::Local;
    c.hangup_reason = records::HangupReason::Failed;
    c.tm_hangup = at;
    c.tm_update = at;
}

/// Counters of a store (all since it was opened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Record changes held: queued, or in the writer's commit window
    /// (also while the database is away).
    pub queued: u64,
    /// The most that may be held ([`Options::max_pending`]).
    pub max_pending: u64,
    /// Whether the last commit reached the database.
    pub available: bool,
    /// Ended records deleted by retention.
    pub expired: u64,
    /// Writes committed.
    pub written: u64,
    /// Writes that failed (logged).
    pub failed: u64,
    /// Writes dropped because the queue was full (logged).
    pub dropped: u64,
    /// Transactions committed by the writer.
    pub batches: u64,
}

/// Durable records, as the server needs them. Object-safe: used as
/// `Arc<dyn Store>`.
///
/// Writes never block: they are queued and applied in order, later (see
/// [`Store::flush`]). Reads are synchronous and may do I/O: for start-up and
/// the REST API, not for the SIP hot path.
pub trait Store: Send + Sync {
    /// Inserts or replaces the binding with key `(aor, contact)`.
    fn upsert_binding(&self, binding: &Binding);
    /// Removes the binding `(aor, contact)`, if any.
    fn remove_binding(&self, aor: &str, contact: &str);
    /// Inserts or replaces the groupcall with this id.
    fn upsert_groupcall(&self, groupcall: &Groupcall);
    /// Inserts or replaces the call with this id.
    fn upsert_call(&self, call: &Call);
    /// Inserts or replaces the customer with this id. Its `api_keys` are
    /// the config file's: they are stored hashed ([`hash_api_key`], origin
    /// config), replacing the customer's previous config keys; the plain keys
    /// are not kept (so [`Store::customers`] returns none).
    fn upsert_customer(&self, customer: &Customer);
    /// Inserts or replaces the domain with this name.
    fn upsert_domain(&self, domain: &Domain);
    /// Inserts or replaces the extension `(name, domain)` as a config one
    /// (id [`records::config_id`] of `name@domain`, owner the domain's
    /// customer, no times: 1970). Kept for older callers: prefer
    /// [`Store::replace_config_extensions`].
    fn upsert_extension(&self, extension: &Extension);
    /// Deletes the extension `name` of `domain`, if any.
    fn delete_extension(&self, name: &str, domain: &str);
    /// Inserts or replaces the extension `(name, domain)` with its metadata.
    /// Written again unchanged, it keeps its `tm_create` and `tm_update`;
    /// changed, it keeps its `tm_create`.
    fn upsert_extension_record(&self, record: &ExtensionRecord);
    /// Makes `records` the config file's extensions: each is upserted (with
    /// origin config, replacing an API one of the same name), and every
    /// other config-origin extension is deleted. API ones are kept.
    fn replace_config_extensions(&self, records: &[ExtensionRecord]);
    /// Marks the groupcall deleted at `at` (`tm_delete`, `tm_update`). A
    /// later [`Store::upsert_groupcall`] of it (the switch writes a live one
    /// as it changes) keeps it deleted.
    fn delete_groupcall(&self, id: Uuid, at: Timestamp);
    /// Inserts or replaces the ring group with this id (its `tm_create` is
    /// kept, as for extensions).
    fn upsert_ringgroup(&self, group: &RingGroup);
    /// Deletes the ring group with this id, if any.
    fn delete_ringgroup(&self, id: Uuid);
    /// Inserts or replaces a ring group's hunt memory.
    fn upsert_hunt_memory(&self, memory: &HuntMemoryRecord);
    /// Makes `groups` the config file's ring groups (as
    /// [`Store::replace_config_extensions`]).
    fn replace_config_ringgroups(&self, groups: &[RingGroup]);
    /// Inserts or replaces the customer's webhook.
    fn upsert_webhook(&self, webhook: &Webhook);
    /// Removes the customer's webhook, if any.
    fn delete_webhook(&self, customer_id: Uuid);
    /// Makes `webhooks` the config file's webhooks: each is upserted, every
    /// other config-origin webhook is removed; API ones are kept.
    fn replace_config_webhooks(&self, webhooks: &[Webhook]);
    /// Inserts or replaces an API key (by hash).
    fn put_api_key(&self, key: &ApiKey);
    /// Removes the API key with this hash, if any.
    fn remove_api_key(&self, hash: &str);

    /// Blocks until every write queued before this call is durable (committed).
    /// Errors when writes failed since the previous flush, or the writer is
    /// gone. Used by tests and at shutdown.
    fn flush(&self) -> Result<(), StoreError>;

    /// The bindings not expired at `now` (`expires_at > now`), ordered by
    /// `(aor, contact)`; deletes the expired ones.
    fn load_bindings(&self, now: Timestamp) -> Result<Vec<Binding>, StoreError>;
    /// All customers, ordered by id.
    fn customers(&self) -> Result<Vec<Customer>, StoreError>;
    /// All domains, ordered by name.
    fn domains(&self) -> Result<Vec<Domain>, StoreError>;
    /// All extensions, ordered by `(domain, name)`.
    fn extensions(&self) -> Result<Vec<Extension>, StoreError>;
    /// The extension with this id.
    fn extension_record(&self, id: Uuid) -> Result<Option<ExtensionRecord>, StoreError>;
    /// A page of the customer's extensions, newest first (as
    /// [`Store::list_groupcalls`]).
    fn list_extension_records(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<ExtensionRecord>, StoreError>;
    /// The ring group with this id.
    fn ringgroup(&self, id: Uuid) -> Result<Option<RingGroup>, StoreError>;
    /// Every ring group, ordered by id (for the switch at start).
    fn ringgroups(&self) -> Result<Vec<RingGroup>, StoreError>;
    /// Every ring group's hunt memory (for the switch at start).
    fn hunt_memories(&self) -> Result<Vec<HuntMemoryRecord>, StoreError>;
    /// A page of the customer's ring groups, newest first.
    fn list_ringgroups(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<RingGroup>, StoreError>;
    /// The customer's webhook.
    fn webhook(&self, customer_id: Uuid) -> Result<Option<Webhook>, StoreError>;
    /// Every webhook, ordered by customer id.
    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError>;
    /// The customer an API key hash ([`hash_api_key`]) belongs to.
    fn api_key_customer(&self, hash: &str) -> Result<Option<Uuid>, StoreError>;
    /// A page of the bindings of the customer's domains not expired at `now`,
    /// ordered by `(aor, contact)`, only those after `after` when given.
    fn list_bindings(
        &self,
        customer_id: Uuid,
        now: Timestamp,
        page_size: usize,
        after: Option<(String, String)>,
    ) -> Result<Vec<Binding>, StoreError>;
    /// Crash reconciliation, at start before the switch runs: every groupcall
    /// and call record a previous run left not in `hangup` is closed at `at`
    /// (groupcalls: status `hangup`, `tm_update`; calls: also hangup_by
    /// `local`, hangup_reason `failed`, `tm_hangup`). Everything queued
    /// before is applied first; returns how many were closed. `node`: only
    /// the records that cluster node carried (a restarted node closes its
    /// own, never the live calls of the others).
    fn close_live_records(&self, at: Timestamp, node: Option<&str>) -> Result<Closed, StoreError>;
    /// The groupcall with this id (deleted ones included).
    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError>;
    /// A page of the customer's groupcalls not deleted (`tm_delete` is
    /// "not yet"), newest first by `tm_create` (then by id, descending),
    /// only those after `after` (see [`Cursor`]) when given. The next page's
    /// cursor is [`Cursor::after`] the last item.
    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Groupcall>, StoreError>;
    /// The call with this id (deleted ones included).
    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError>;
    /// A page of the customer's calls, as [`Store::list_groupcalls`].
    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<Call>, StoreError>;

    /// [`Store::list_groupcalls`] as the stored JSON text of each record,
    /// for a reader that only passes it on (the API's lists): no decoding
    /// and encoding again. The default encodes the typed records.
    fn list_groupcalls_json(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<JsonRecord>, StoreError> {
        let items = self.list_groupcalls(customer_id, page_size, after)?;
        Ok(items.iter().map(|g| JsonRecord::of(g, g.tm_create, g.id)).collect())
    }
    /// [`Store::list_calls`] as JSON text, as [`Store::list_groupcalls_json`].
    fn list_calls_json(
        &self,
        customer_id: Uuid,
        page_size: usize,
        after: Option<Cursor>,
    ) -> Result<Vec<JsonRecord>, StoreError> {
        let items = self.list_calls(customer_id, page_size, after)?;
        Ok(items.iter().map(|c| JsonRecord::of(c, c.tm_create, c.id)).collect())
    }

    /// Counters (all zero where the implementation keeps none).
    fn stats(&self) -> StoreStats {
        StoreStats { available: true, ..StoreStats::default() }
    }

    /// Retention: deletes the ended (`hangup`) groupcall and call records
    /// created before `created_before`, in small batches off the caller's
    /// path (the writer does one batch per commit window). Returns at once.
    fn expire_records(&self, created_before: Timestamp);
}
