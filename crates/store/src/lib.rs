//! # store: what forkswitch keeps across restarts
//!
//! Registrations (bindings), accounts (customers, domains, extensions) and the
//! groupcall and call records survive a restart of the switch, `kill -9`
//! included, behind one object-safe trait, [`Store`]. Two implementations:
//!
//! - [`SqliteStore`]: an embedded SQLite database file (WAL mode). Writes are
//!   queued to one background writer thread that owns the write connection
//!   and batches them into one transaction: by default group commit (whatever
//!   queued while the previous commit ran, up to [`Options::max_batch`] ops),
//!   or, with a non-zero [`Options::max_delay`], waiting that long for a batch
//!   to fill; a [`Store::flush`] commits at once. Reads use a second
//!   connection.
//! - [`MemoryStore`]: everything in maps, nothing on disk; for tests and for
//!   running without a database file.
//!
//! What it never does: no SIP, no clock of its own (times are passed in), and
//! it never blocks the SIP hot path: a write only enqueues (no lock, no I/O);
//! when the queue is full ([`Options::queue_bound`]) the write is dropped,
//! counted ([`StoreStats::dropped`]) and logged rather than waited for. Reads
//! are synchronous and meant for start-up and the REST API.
//!
//! Writes are applied in the order they were queued. With [`SqliteStore`] a
//! read sees a write only once it is committed: call [`Store::flush`] first
//! when a read must see what was just written.
//!
//! ## Durability
//!
//! SQLite runs with `journal_mode=WAL` and `synchronous=NORMAL`. A committed
//! transaction is in the WAL file (in the OS page cache) before `COMMIT`
//! returns, so it survives the process dying at any moment (`kill -9`,
//! panic, abort). It is fsynced only at checkpoints, so a power loss or OS
//! crash can lose the last transactions committed since the previous
//! checkpoint (the database stays consistent). [`Options::full_sync`] selects
//! `synchronous=FULL` (an fsync per batch) where that matters. What is still
//! queued, not yet committed, (at most one batch window, 50 ms by default)
//! is lost on `kill -9`; [`Store::flush`] returns once everything queued
//! before it is committed. Dropping a [`SqliteStore`] drains the queue,
//! commits and joins the writer thread.
//!
//! ## Schema
//!
//! The schema belongs to this crate: an ordered list of migration SQL
//! scripts, the database's `PRAGMA user_version` telling how many are
//! applied. [`SqliteStore::open`] applies the missing ones in one transaction
//! and refuses a database newer than it knows ([`StoreError::SchemaTooNew`]).
//! Tables: `bindings` (key `aor, contact`), `customers`, `domains`,
//! `extensions` (key `domain, name`), and `groupcalls` and `calls`, whose
//! `id, customer_id, tm_create, tm_delete` are columns (for lookups and
//! paging) and whose whole record is a JSON `data` column. Times are
//! microseconds since the Unix epoch; "not yet" is
//! [`records::Timestamp::NOT_YET`]. Ids are hyphenated lowercase UUID text.
//!
//! ## PostgreSQL later (several forkswitch nodes)
//!
//! A PostgreSQL implementation of [`Store`] would keep the same trait and the
//! same writer-thread/queue shape (a tokio task with a pool works too), and
//! needs:
//!
//! - Shared bindings with an owner: a `node_id` column on `bindings` (the
//!   node holding the flow the REGISTER came over, since only it can reach a
//!   phone behind NAT over that connection); `load_bindings` then loads all
//!   rows but each node routes through the owner of a flow-bound contact.
//!   Expiry clean-up by any node (`DELETE ... WHERE expires_at <= now()`).
//! - Learning location changes made by other nodes: `LISTEN bindings` with a
//!   trigger doing `pg_notify('bindings', aor)` on insert/update/delete (a
//!   dedicated non-pooled connection), or polling on an `updated_at` column
//!   with an index; both need a full reload after a reconnect.
//! - Ids: keep client-generated UUIDs (v4 today, v7 would keep index
//!   locality); no sequences, so records can be written from several nodes
//!   without coordination. Use the native `uuid` type and `timestamptz` (or
//!   `bigint` micros) columns, `jsonb` for the record body.
//! - Time-based paging: an index on `(customer_id, tm_create DESC, id DESC)`
//!   (partial `WHERE tm_delete = '9999-01-01'`), as here.
//! - A connection pool (e.g. deadpool-postgres or r2d2) for the reads;
//!   batching writes in one transaction still applies, and upserts become
//!   `INSERT ... ON CONFLICT (...) DO UPDATE` (already the SQL used here).
//! - A migration table (`schema_migrations(version, applied_at)`), applied
//!   under `pg_advisory_lock` so that nodes starting together migrate once.
//!
//! ## Main types
//!
//! [`Store`] (the trait), [`SqliteStore`] with [`Options`], [`MemoryStore`],
//! [`StoreError`], [`StoreStats`].
#![deny(missing_docs)]

mod memory;
mod schema;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{Options, SqliteStore};

use records::{Binding, Call, Customer, Domain, Extension, Groupcall, Timestamp};
use uuid::Uuid;

/// What can go wrong opening, reading or flushing a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An error from SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database has more migrations applied than this build knows.
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        /// `user_version` of the database.
        found: i64,
        /// Number of migrations this build has.
        known: usize,
    },
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

/// Counters of a store (all since it was opened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes queued and not yet taken by the writer.
    pub queued: u64,
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
    /// Inserts or replaces the customer with this id.
    fn upsert_customer(&self, customer: &Customer);
    /// Inserts or replaces the domain with this name.
    fn upsert_domain(&self, domain: &Domain);
    /// Inserts or replaces the extension `(name, domain)`.
    fn upsert_extension(&self, extension: &Extension);
    /// Deletes the extension `name` of `domain`, if any.
    fn delete_extension(&self, name: &str, domain: &str);

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
    /// The groupcall with this id (deleted ones included).
    fn groupcall(&self, id: Uuid) -> Result<Option<Groupcall>, StoreError>;
    /// A page of the customer's groupcalls not deleted (`tm_delete` is
    /// "not yet"), newest first by `tm_create` (then by id, descending),
    /// only those created strictly before `page_token` when given. The next
    /// page's token is the `tm_create` of the last item.
    fn list_groupcalls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Groupcall>, StoreError>;
    /// The call with this id (deleted ones included).
    fn call(&self, id: Uuid) -> Result<Option<Call>, StoreError>;
    /// A page of the customer's calls, as [`Store::list_groupcalls`].
    fn list_calls(
        &self,
        customer_id: Uuid,
        page_size: usize,
        page_token: Option<Timestamp>,
    ) -> Result<Vec<Call>, StoreError>;

    /// Counters (all zero where the implementation keeps none).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
