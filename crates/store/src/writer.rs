//! The write path of both databases: a [`Queue`] that the [`crate::Store`]
//! methods put [`Op`]s on (never blocking: a channel send and a counter),
//! and one writer thread that owns the write connection, holds the changes
//! of one commit window ([`Window`], one version per record), and commits
//! them in one transaction when the window closes.
//!
//! When the database cannot take a commit (PostgreSQL down, SQLite's disk
//! full), the writer keeps what it holds and retries with a backoff, still
//! coalescing new changes into it; past [`Options::max_pending`] changes
//! the newest are dropped and counted. Each of these moments is one log
//! line, not one per failed commit: the database going away, the queue
//! filling, the database back (and what was dropped meanwhile).

use crate::apply;
use crate::db::{begin, Db, DbError};
use crate::op::Op;
use crate::window::{entries, Absorbed, Step, Window};
use crate::{Closed, StoreError, StoreStats};
use records::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tuning of the write path, the same for both databases.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most record changes held (queued, or waiting in the commit window
    /// for a database that is away); past it the newest are dropped
    /// (counted in [`StoreStats::dropped`]), never waited for. Default
    /// 500,000 (about 300 MB of call records: 60 s of a 1,600 calls/s load).
    pub max_pending: u64,
    /// Most row writes in one transaction. Default 5000.
    pub max_batch: usize,
    /// The commit window: how long a change waits, from the first change
    /// of the window, for the changes that follow (each record is written
    /// once per window, in its latest version). 0 is group commit: commit
    /// as soon as nothing more is queued. Default 100 ms.
    pub max_delay: Duration,
    /// SQLite `busy_timeout` of its connections. Default 5 s.
    pub busy_timeout: Duration,
    /// SQLite `synchronous=FULL` (every commit fsynced: survives power loss)
    /// rather than `NORMAL` (survives a process crash). Default `false`.
    pub full_sync: bool,
    /// Rows deleted per retention statement ([`crate::Store::expire_records`]),
    /// one statement per commit window. Default 1000.
    pub expire_batch: u64,
    /// At shutdown, how long the writer keeps retrying a database that is
    /// away before giving up on what it holds (logged). Default 10 s.
    pub shutdown_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_pending: 500_000,
            max_batch: 5000,
            max_delay: Duration::from_millis(100),
            busy_timeout: Duration::from_secs(5),
            full_sync: false,
            expire_batch: 1000,
            shutdown_wait: Duration::from_secs(10),
        }
    }
}

/// Counters and states shared by the queue's users and the writer.
#[derive(Default)]
struct Shared {
    pending: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
    expired: AtomicU64,
    /// The queue reached `max_pending` and has not drained since.
    full: AtomicBool,
    /// The last commit failed for want of a database.
    unavailable: AtomicBool,
    /// Drops since the queue filled.
    dropped_while_full: AtomicU64,
}

/// What the writer thread receives.
enum Msg {
    Op(Op),
    /// Commit everything before; answer with the writes that failed since
    /// the previous flush, or why nothing could be committed.
    Flush(mpsc::SyncSender<Result<u64, StoreError>>),
    /// Commit everything before, then close the live records (of one
    /// cluster node, when named).
    Close(Timestamp, Option<String>, mpsc::SyncSender<Result<Closed, StoreError>>),
    /// Delete ended records created before this, in small batches.
    Expire(Timestamp),
}

/// The handle the store keeps: queues writes, asks for flushes. Dropping it
/// lets the writer commit what it holds and joins it.
pub(crate) struct Queue {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    max_pending: u64,
}

impl Queue {
    /// Starts the writer thread (named `store-writer`) over `db`.
    pub(crate) fn start<D: Db + Send + 'static>(db: D, opts: Options) -> std::io::Result<Queue> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let max_pending = opts.max_pending;
        let writer = Writer {
            db,
            rx,
            opts,
            shared: shared.clone(),
            window: Window::default(),
            window_start: Instant::now(),
            outage: None,
            expiring: None,
            expire_at: Instant::now(),
            failed_since_flush: 0,
        };
        let thread =
            std::thread::Builder::new().name("store-writer".into()).spawn(move || writer.run())?;
        Ok(Queue { tx: Some(tx), thread: Some(thread), shared, max_pending })
    }

    /// Queues a write, or drops it (counted, logged once until the queue
    /// drains) when `max_pending` are held.
    pub(crate) fn enqueue(&self, op: Op) {
        let s = &self.shared;
        if s.pending.fetch_add(1, Relaxed) >= self.max_pending {
            s.pending.fetch_sub(1, Relaxed);
            s.dropped.fetch_add(1, Relaxed);
            s.dropped_while_full.fetch_add(1, Relaxed);
            if !s.full.swap(true, Relaxed) {
                tracing::error!(
                    max_pending = self.max_pending,
                    "store: pending record changes reached [database] max_pending: the newest \
                     are dropped (counted in forkswitch_store_writes_total{{result=\"dropped\"}}) \
                     until the database catches up"
                );
            }
            return;
        }
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Msg::Op(op)).is_ok());
        if !sent {
            s.pending.fetch_sub(1, Relaxed);
            let n = s.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(dropped = n, "store: writer thread gone, write dropped");
            }
        }
    }

    fn ask<T>(
        &self,
        msg: impl FnOnce(mpsc::SyncSender<Result<T, StoreError>>) -> Msg,
    ) -> Result<T, StoreError> {
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(msg(done_tx)).map_err(|_| StoreError::WriterGone)?;
        done_rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Commits everything queued before; see [`crate::Store::flush`].
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self.ask(Msg::Flush)? {
            0 => Ok(()),
            count => Err(StoreError::WritesFailed { count }),
        }
    }

    /// Commits everything queued before, then closes the live records.
    pub(crate) fn close_live(
        &self,
        at: Timestamp,
        node: Option<&str>,
    ) -> Result<Closed, StoreError> {
        let node = node.map(str::to_owned);
        self.ask(|done| Msg::Close(at, node, done))
    }

    /// Starts (or moves) the retention pass.
    pub(crate) fn expire(&self, before: Timestamp) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Expire(before));
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let s = &self.shared;
        StoreStats {
            queued: s.pending.load(Relaxed),
            written: s.written.load(Relaxed),
            failed: s.failed.load(Relaxed),
            dropped: s.dropped.load(Relaxed),
            batches: s.batches.load(Relaxed),
            expired: s.expired.load(Relaxed),
            max_pending: self.max_pending,
            available: !s.unavailable.load(Relaxed),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.thread.take() {
            if h.join().is_err() {
                tracing::error!("store: writer thread panicked");
            }
        }
    }
}

/// The database is away: since when, and when to try again.
struct Outage {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(1);

/// The writer thread's state.
struct Writer<D> {
    db: D,
    rx: mpsc::Receiver<Msg>,
    opts: Options,
    shared: Arc<Shared>,
    window: Window,
    /// When the window's first change came.
    window_start: Instant,
    outage: Option<Outage>,
    /// A retention pass under way: ended records created before this go.
    expiring: Option<Timestamp>,
    /// When its next batch is due.
    expire_at: Instant,
    failed_since_flush: u64,
}

impl<D: Db> Writer<D> {
    fn run(mut self) {
        loop {
            // A window closes on time even while changes keep coming.
            if self.deadline().is_some_and(|at| Instant::now() >= at) {
                self.on_deadline();
                continue;
            }
            let msg = match self.deadline() {
                None => self.rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(at) => self.rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(msg) => self.handle(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => self.on_deadline(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stop();
        tracing::debug!("store: writer stopped");
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Op(op) => self.absorb(op),
            Msg::Flush(done) => {
                let r = self.commit_all().map(|()| std::mem::take(&mut self.failed_since_flush));
                let _ = done.send(r);
            }
            Msg::Close(at, node, done) => {
                let node = node.as_deref();
                let r = self
                    .commit_all()
                    .and_then(|()| apply::close_live(&mut self.db, at, node).map_err(Into::into));
                let _ = done.send(r);
            }
            Msg::Expire(before) => {
                if self.expiring.is_none() {
                    self.expire_at = Instant::now();
                }
                self.expiring = Some(before);
            }
        }
    }

    /// The window closed (or a retry or a retention batch is due): take
    /// what is already queued (group commit), commit, then one retention
    /// batch when one is due.
    fn on_deadline(&mut self) {
        for _ in 0..self.opts.max_batch {
            match self.rx.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(_) => break,
            }
        }
        if self.commit_all().is_ok() && self.expiring.is_some() {
            let now = Instant::now();
            if now >= self.expire_at {
                self.expire_some();
                self.expire_at = now + self.opts.max_delay.max(Duration::from_millis(10));
            }
        }
    }

    /// When the writer must act without a message: the window closing, the
    /// next retry, the next retention batch; `None`: nothing to do.
    fn deadline(&self) -> Option<Instant> {
        if let Some(o) = &self.outage {
            return Some(o.retry_at);
        }
        let window = (!self.window.is_empty()).then(|| self.window_start + self.opts.max_delay);
        let expire = self.expiring.map(|_| self.expire_at);
        match (window, expire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn absorb(&mut self, op: Op) {
        if self.window.is_empty() {
            self.window_start = Instant::now();
        }
        if self.window.absorb(op) == Absorbed::Coalesced {
            // Superseded within the window: as good as written.
            self.shared.pending.fetch_sub(1, Relaxed);
            self.shared.written.fetch_add(1, Relaxed);
        }
        if self.window.len() >= self.opts.max_batch && self.outage.is_none() {
            let _ = self.commit_all();
        }
    }

    /// Commits everything held, `max_batch` rows per transaction. Fails
    /// (keeping what is left) when the database is away.
    fn commit_all(&mut self) -> Result<(), StoreError> {
        while !self.window.is_empty() {
            let steps = self.window.take(self.opts.max_batch);
            let n = entries(&steps) as u64;
            match self.commit(&steps) {
                Ok(failed) => {
                    let s = &self.shared;
                    s.pending.fetch_sub(n, Relaxed);
                    s.written.fetch_add(n - failed, Relaxed);
                    s.failed.fetch_add(failed, Relaxed);
                    s.batches.fetch_add(1, Relaxed);
                    self.failed_since_flush += failed;
                    self.back();
                }
                Err(e) => {
                    self.window.restore(steps);
                    self.away(&e);
                    return Err(StoreError::Unavailable(e));
                }
            }
        }
        self.drained();
        Ok(())
    }

    /// One transaction; returns how many writes failed alone (logged and
    /// skipped), or why the database could not take it.
    fn commit(&mut self, steps: &[Step]) -> Result<u64, String> {
        let db = &mut self.db;
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<u64, DbError> {
                begin(db)?;
                let mut failed = 0;
                for step in steps {
                    match write_step(db, step) {
                        Ok(n) => failed += n,
                        Err(e) => return apply::finish(db, Err(e)),
                    }
                }
                apply::finish(db, Ok(failed))
            }));
        match r {
            Ok(Ok(failed)) => Ok(failed),
            Ok(Err(DbError::Unavailable(e))) => Err(e),
            Ok(Err(DbError::Rejected(e))) => {
                // Only a transaction-level statement fails this way.
                tracing::error!(error = %e, ops = entries(steps), "store: batch failed");
                Ok(entries(steps) as u64)
            }
            Err(_) => {
                tracing::error!(ops = entries(steps), "store: batch panicked");
                let _ = self.db.batch("ROLLBACK");
                Ok(entries(steps) as u64)
            }
        }
    }

    /// The database failed a commit: remember it, log it once.
    fn away(&mut self, error: &str) {
        let now = Instant::now();
        match &mut self.outage {
            Some(o) => {
                o.backoff = (o.backoff * 2).min(LONGEST_RETRY);
                o.retry_at = now + o.backoff;
            }
            None => {
                self.shared.unavailable.store(true, Relaxed);
                tracing::error!(
                    error,
                    held = self.window.len(),
                    max_pending = self.opts.max_pending,
                    "store: database unavailable: record changes are held and retried"
                );
                self.outage =
                    Some(Outage { since: now, retry_at: now + FIRST_RETRY, backoff: FIRST_RETRY });
            }
        }
    }

    /// A commit went through: the end of an outage, if there was one.
    fn back(&mut self) {
        if let Some(o) = self.outage.take() {
            self.shared.unavailable.store(false, Relaxed);
            tracing::warn!(
                after_ms = o.since.elapsed().as_millis() as u64,
                held = self.window.len(),
                "store: database available again: writing the held record changes"
            );
        }
    }

    /// Everything held is written: the end of a full queue, if it was.
    fn drained(&mut self) {
        if self.shared.full.swap(false, Relaxed) {
            let dropped = self.shared.dropped_while_full.swap(0, Relaxed);
            tracing::error!(
                dropped,
                "store: pending record changes drained; the newest changes were dropped while \
                 the queue was full"
            );
        }
    }

    /// One retention batch, when a pass is under way.
    fn expire_some(&mut self) {
        let Some(before) = self.expiring else { return };
        match apply::expire(&mut self.db, before, self.opts.expire_batch) {
            Ok(0) => {
                self.expiring = None;
                tracing::info!(
                    total = self.shared.expired.load(Relaxed),
                    "store: retention pass done"
                );
            }
            Ok(n) => {
                self.shared.expired.fetch_add(n, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: retention batch failed; retried later");
            }
        }
    }

    /// The queue is closed: commit what is held, retrying a database that
    /// is away for at most `shutdown_wait`.
    fn stop(&mut self) {
        let give_up = Instant::now() + self.opts.shutdown_wait;
        while self.commit_all().is_err() {
            if Instant::now() >= give_up {
                tracing::error!(
                    lost = self.window.len(),
                    "store: stopping with record changes the database never took"
                );
                return;
            }
            let retry = self.outage.as_ref().map_or(give_up, |o| o.retry_at.min(give_up));
            std::thread::sleep(retry.saturating_duration_since(Instant::now()));
        }
    }
}

/// Writes one step inside the batch's transaction, under a savepoint: a
/// step the database rejects is rolled back and retried entry by entry,
/// the rejected entries skipped (logged). Returns how many were skipped.
fn write_step(db: &mut dyn Db, step: &Step) -> Result<u64, DbError> {
    db.batch("SAVEPOINT step")?;
    let r = match step {
        Step::Records(set) => apply::write_set(db, set),
        Step::Other(op) => apply::apply(db, op),
    };
    match r {
        Ok(()) => db.batch("RELEASE SAVEPOINT step").map(|()| 0),
        Err(DbError::Unavailable(e)) => Err(DbError::Unavailable(e)),
        Err(DbError::Rejected(e)) => {
            db.batch("ROLLBACK TO SAVEPOINT step")?;
            db.batch("RELEASE SAVEPOINT step")?;
            match step {
                Step::Other(op) => {
                    tracing::warn!(error = %e, op = op.name(), "store: write failed");
                    Ok(1)
                }
                Step::Records(set) if set.len() <= 1 => {
                    tracing::warn!(error = %e, "store: record write failed");
                    Ok(set.len() as u64)
                }
                Step::Records(set) => {
                    let mut failed = 0;
                    for single in set.entries() {
                        failed += write_step(db, &Step::Records(single))?;
                    }
                    Ok(failed)
                }
            }
        }
    }
}
