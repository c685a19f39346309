//! Behaviour of both stores (shared tests over `&dyn Store`), and what only
//! the SQLite store has: durability across reopen and `kill -9`, batching,
//! draining on drop, the queue bound.

use records::{
    Address, AddressType, AnswerMethod, Binding, Call, CallStatus, Customer, Direction, Domain,
    Extension, Groupcall, GroupcallStatus, HangupBy, HangupReason, RingMethod, Timestamp, NIL,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{MemoryStore, Options, SqliteStore, Store};
use uuid::Uuid;

const T0: i64 = 1_700_000_000_000_000; // 2023-11-14, in micros

fn ts(offset_s: i64) -> Timestamp {
    Timestamp::from_micros(T0 + offset_s * 1_000_000)
}

fn binding(aor: &str, contact: &str, expires_at: Timestamp) -> Binding {
    Binding {
        aor: aor.into(),
        contact: contact.into(),
        instance: Some("urn:uuid:00000000-0000-1000-8000-000a95a0e128".into()),
        reg_id: Some(1),
        q: 500,
        expires_at,
        call_id: format!("{contact}-callid"),
        cseq: 42,
        transport: "UDP".into(),
        source: "192.0.2.10:5062".parse().expect("addr"),
        local: "[2001:db8::1]:5060".parse().expect("addr"),
        user_agent: "Phone/1.0".into(),
    }
}

fn groupcall(customer_id: Uuid, tm_create: Timestamp, tm_delete: Timestamp) -> Groupcall {
    Groupcall {
        id: Uuid::new_v4(),
        customer_id,
        source: Address::new(AddressType::Tel, "+15551234567"),
        destinations: vec![
            Address::new(AddressType::Endpoint, "test11@test"),
            Address {
                kind: AddressType::Sip,
                target: "sip:bob@example.com".into(),
                target_name: "Bob".into(),
                name: "b".into(),
                detail: "d".into(),
            },
        ],
        ring_method: RingMethod::Linear,
        answer_method: AnswerMethod::HangupOthers,
        status: GroupcallStatus::Hangup,
        answer_call_id: Uuid::new_v4(),
        answer_groupcall_id: NIL,
        call_ids: vec![Uuid::new_v4(), Uuid::new_v4()],
        groupcall_ids: vec![Uuid::new_v4()],
        master_call_id: Uuid::new_v4(),
        master_groupcall_id: NIL,
        tm_create,
        tm_update: Timestamp::from_micros(tm_create.micros() + 123_456),
        tm_delete,
    }
}

fn call(customer_id: Uuid, tm_create: Timestamp, tm_delete: Timestamp) -> Call {
    Call {
        id: Uuid::new_v4(),
        customer_id,
        groupcall_id: Uuid::new_v4(),
        source: Address::new(AddressType::Tel, "+15551234567"),
        destination: Address::new(AddressType::Endpoint, "test11@test"),
        direction: Direction::Outgoing,
        status: CallStatus::Hangup,
        hangup_by: HangupBy::Remote,
        hangup_reason: HangupReason::Normal,
        sip_call_id: "abc@192.0.2.1".into(),
        tm_ringing: Timestamp::from_micros(tm_create.micros() + 1),
        tm_progressing: Timestamp::NOT_YET,
        tm_hangup: Timestamp::from_micros(tm_create.micros() + 3),
        tm_create,
        tm_update: Timestamp::from_micros(tm_create.micros() + 3),
        tm_delete,
    }
}

fn customer(name: &str) -> Customer {
    Customer { id: Uuid::new_v4(), name: name.into(), api_keys: vec!["k1".into(), "k2".into()] }
}

fn extension(name: &str, domain: &str) -> Extension {
    Extension {
        name: name.into(),
        domain: domain.into(),
        ha1_md5: "0123456789abcdef0123456789abcdef".into(),
        ha1_sha256: "ab".repeat(32),
        display_name: format!("User {name}"),
    }
}

// ---- shared behaviour, over &dyn Store ----

fn round_trips(s: &dyn Store) {
    let b1 = binding("test11@test", "sip:test11@192.0.2.10:5062", ts(3600));
    let mut b2 = binding("test11@test", "sip:test11@192.0.2.11:5062;transport=tcp", ts(60));
    b2.instance = None;
    b2.reg_id = None;
    b2.q = 1000;
    b2.cseq = u32::MAX;
    b2.transport = "TCP".into();
    let b3 = binding("test12@test", "sip:test12@192.0.2.12", ts(60));
    let c1 = customer("acme");
    let c2 = customer("globex");
    let d1 = Domain {
        name: "test".into(),
        aliases: vec!["test.example.com".into()],
        customer_id: c1.id,
    };
    let d2 = Domain { name: "other".into(), aliases: vec![], customer_id: c2.id };
    let e1 = extension("test11", "test");
    let e2 = extension("test12", "test");
    let e3 = extension("a", "other");
    let g = groupcall(c1.id, ts(0), Timestamp::NOT_YET);
    let c = call(c1.id, ts(1), ts(2));
    for b in [&b3, &b1, &b2] {
        s.upsert_binding(b);
    }
    s.upsert_customer(&c2);
    s.upsert_customer(&c1);
    s.upsert_domain(&d1);
    s.upsert_domain(&d2);
    for e in [&e1, &e2, &e3] {
        s.upsert_extension(e);
    }
    s.upsert_groupcall(&g);
    s.upsert_call(&c);
    s.flush().expect("flush");

    let mut bindings = vec![b1.clone(), b2.clone(), b3.clone()];
    bindings.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
    assert_eq!(s.load_bindings(ts(0)).expect("bindings"), bindings);
    let mut customers = vec![c1.clone(), c2.clone()];
    customers.sort_by_key(|c| c.id);
    assert_eq!(s.customers().expect("customers"), customers);
    assert_eq!(s.domains().expect("domains"), vec![d2.clone(), d1.clone()]);
    assert_eq!(s.extensions().expect("extensions"), vec![e3.clone(), e1.clone(), e2.clone()]);
    assert_eq!(s.groupcall(g.id).expect("groupcall"), Some(g.clone()));
    assert_eq!(s.call(c.id).expect("call"), Some(c.clone()));
    assert_eq!(s.groupcall(Uuid::new_v4()).expect("groupcall"), None);
    assert_eq!(s.call(g.id).expect("call"), None);

    // Updates replace; removals remove.
    let mut b1b = b1.clone();
    b1b.cseq = 43;
    b1b.expires_at = ts(7200);
    s.upsert_binding(&b1b);
    s.remove_binding(&b2.aor, &b2.contact);
    s.remove_binding("nobody@test", "sip:x");
    let mut g2 = g.clone();
    g2.status = GroupcallStatus::Progressing;
    g2.tm_delete = ts(10);
    s.upsert_groupcall(&g2);
    let mut c_2 = c.clone();
    c_2.status = CallStatus::Ringing;
    s.upsert_call(&c_2);
    let mut c1b = c1.clone();
    c1b.api_keys.clear();
    s.upsert_customer(&c1b);
    let mut d1b = d1.clone();
    d1b.customer_id = c2.id;
    s.upsert_domain(&d1b);
    let mut e1b = e1.clone();
    e1b.display_name = "Renamed".into();
    s.upsert_extension(&e1b);
    s.delete_extension("test12", "test");
    s.delete_extension("test12", "other");
    s.flush().expect("flush");

    assert_eq!(s.load_bindings(ts(0)).expect("bindings"), vec![b1b, b3]);
    assert_eq!(s.groupcall(g.id).expect("groupcall"), Some(g2));
    assert_eq!(s.call(c.id).expect("call"), Some(c_2));
    assert!(s.customers().expect("customers").contains(&c1b));
    assert_eq!(s.domains().expect("domains"), vec![d2, d1b]);
    assert_eq!(s.extensions().expect("extensions"), vec![e3, e1b]);
}

fn expired_bindings(s: &dyn Store) {
    let live = binding("a@test", "sip:a@192.0.2.1", ts(100));
    let at_now = binding("b@test", "sip:b@192.0.2.2", ts(0));
    let old = binding("c@test", "sip:c@192.0.2.3", ts(-100));
    for b in [&live, &at_now, &old] {
        s.upsert_binding(b);
    }
    s.flush().expect("flush");
    assert_eq!(s.load_bindings(ts(0)).expect("load"), vec![live.clone()]);
    // The expired ones were deleted: even an earlier "now" no longer sees them.
    assert_eq!(s.load_bindings(ts(-1000)).expect("load"), vec![live]);
    assert_eq!(s.load_bindings(ts(100)).expect("load"), vec![]);
}

/// Customer A: 7 live items at t=10..=70, 2 deleted at t=35 and 75; customer
/// B: 3 live items. Pages of 3 for A: [70,60,50], [40,30,20], [10], [].
fn paging<T: Clone + PartialEq + std::fmt::Debug>(
    make: impl Fn(Uuid, Timestamp, Timestamp) -> T,
    put: impl Fn(&T),
    list: impl Fn(Uuid, usize, Option<Timestamp>) -> Vec<T>,
    tm_create: impl Fn(&T) -> Timestamp,
) {
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let live: Vec<T> = (1..=7).map(|i| make(a, ts(i * 10), Timestamp::NOT_YET)).collect();
    for t in live.iter().rev() {
        put(t);
    }
    put(&make(a, ts(35), ts(36)));
    put(&make(a, ts(75), ts(80)));
    for i in 0..3 {
        put(&make(b, ts(15 + i * 10), Timestamp::NOT_YET));
    }
    let p1 = list(a, 3, None);
    let p2 = list(a, 3, p1.last().map(&tm_create));
    let p3 = list(a, 3, p2.last().map(&tm_create));
    let p4 = list(a, 3, p3.last().map(&tm_create));
    let newest: Vec<T> = live.iter().rev().cloned().collect();
    assert_eq!(p1, newest[0..3]);
    assert_eq!(p2, newest[3..6]);
    assert_eq!(p3, newest[6..7]);
    assert_eq!(p4, vec![]);
    assert_eq!(list(a, 100, None), newest);
    assert_eq!(list(a, 0, None), vec![]);
    assert_eq!(list(b, 100, None).len(), 3);
    assert_eq!(list(Uuid::new_v4(), 100, None), vec![]);
}

fn paging_groupcalls(s: &dyn Store) {
    paging(
        groupcall,
        |g| s.upsert_groupcall(g),
        |c, n, t| {
            s.flush().expect("flush");
            s.list_groupcalls(c, n, t).expect("list")
        },
        |g| g.tm_create,
    );
}

fn paging_calls(s: &dyn Store) {
    paging(
        call,
        |c| s.upsert_call(c),
        |c, n, t| {
            s.flush().expect("flush");
            s.list_calls(c, n, t).expect("list")
        },
        |c| c.tm_create,
    );
}

fn many_bindings(s: &dyn Store, n: usize) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        s.upsert_binding(&binding(&format!("u{i:05}@test"), "sip:u@192.0.2.1", ts(60)));
    }
    let queued = start.elapsed();
    s.flush().expect("flush");
    let total = start.elapsed();
    let all = s.load_bindings(ts(0)).expect("load");
    assert_eq!(all.len(), n);
    assert_eq!(all[n - 1].aor, format!("u{:05}@test", n - 1));
    eprintln!("{n} binding upserts: queued in {queued:?}, durable after {total:?}");
    total
}

fn concurrent_writers(s: Arc<dyn Store>) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    s.upsert_binding(&binding(&format!("t{t}u{i}@test"), "sip:x", ts(60)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    s.flush().expect("flush");
    assert_eq!(s.load_bindings(ts(0)).expect("load").len(), 2000);
}

fn sqlite(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("forkswitch.db")).expect("open")
}

macro_rules! both {
    ($name:ident, $f:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn memory() {
                ($f)(&MemoryStore::new() as &dyn Store);
            }
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                ($f)(&super::sqlite(dir.path()) as &dyn Store);
            }
        }
    };
}

both!(round_trip, round_trips);
both!(expiry, expired_bindings);
both!(groupcall_paging, paging_groupcalls);
both!(call_paging, paging_calls);
both!(batch_of_10000, |s: &dyn Store| {
    many_bindings(s, 10_000);
});

#[test]
fn concurrent_writers_memory() {
    concurrent_writers(Arc::new(MemoryStore::new()));
}

#[test]
fn concurrent_writers_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_writers(Arc::new(sqlite(dir.path())));
}

// ---- SQLite only ----

#[test]
fn sqlite_batches_many_writes_per_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sqlite(dir.path());
    let took = many_bindings(&s, 10_000);
    let stats = s.stats();
    eprintln!("10000 upserts + flush: {took:?}, {} transactions", stats.batches);
    assert_eq!(stats.written, 10_000);
    assert_eq!((stats.failed, stats.dropped, stats.queued), (0, 0, 0));
    // 1000 ops per batch at most: at least 10. Group commit batches whatever
    // queued while the previous commit ran: on average at least 10 ops per
    // transaction even on a slow machine.
    assert!((10..=1000).contains(&stats.batches), "{stats:?}");
}

#[test]
fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = customer("acme");
    let g = groupcall(c.id, ts(0), Timestamp::NOT_YET);
    let b = binding("test11@test", "sip:test11@192.0.2.10", ts(60));
    {
        let s = sqlite(dir.path());
        s.upsert_customer(&c);
        s.upsert_groupcall(&g);
        s.upsert_binding(&b);
        s.flush().expect("flush");
    }
    let s = sqlite(dir.path());
    assert_eq!(s.customers().expect("customers"), vec![c]);
    assert_eq!(s.groupcall(g.id).expect("groupcall"), Some(g));
    assert_eq!(s.load_bindings(ts(0)).expect("load"), vec![b]);
}

#[test]
fn sqlite_drop_drains_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = sqlite(dir.path());
        for i in 0..3000 {
            s.upsert_binding(&binding(&format!("u{i}@test"), "sip:u", ts(60)));
        }
        // No flush: dropping must commit all of it.
    }
    assert_eq!(sqlite(dir.path()).load_bindings(ts(0)).expect("load").len(), 3000);
}

#[test]
fn sqlite_full_queue_drops_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options { queue_bound: 0, ..Options::default() };
    let s = SqliteStore::open_with(dir.path().join("db"), opts).expect("open");
    for i in 0..10 {
        s.upsert_binding(&binding(&format!("u{i}@test"), "sip:u", ts(60)));
    }
    s.flush().expect("flush");
    assert_eq!(s.stats().dropped, 10);
    assert_eq!(s.load_bindings(ts(0)).expect("load"), vec![]);
}

#[test]
fn sqlite_flush_reports_failed_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let s = SqliteStore::open(&path).expect("open");
    // Sabotage the table behind the store's back: its writes then fail, are
    // logged and counted, and the writer keeps going.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("DROP TABLE customers").expect("drop");
    }
    s.upsert_customer(&customer("lost"));
    s.upsert_binding(&binding("a@test", "sip:a", ts(60)));
    match s.flush() {
        Err(store::StoreError::WritesFailed { count: 1 }) => {}
        other => panic!("expected one failed write, got {other:?}"),
    }
    assert_eq!(s.load_bindings(ts(0)).expect("load").len(), 1);
    s.upsert_binding(&binding("b@test", "sip:b", ts(60)));
    s.flush().expect("failures are reported once");
    assert_eq!(s.stats().failed, 1);
}

/// Set in the child process of [`sqlite_survives_sigkill`]: the database dir.
const CHILD_ENV: &str = "STORE_TEST_SIGKILL_CHILD_DIR";
const CHILD_N: usize = 2000;

/// Child mode of [`sqlite_survives_sigkill`] (does nothing in a normal run):
/// writes, flushes, says so with a marker file, then keeps writing until it
/// is killed.
#[test]
fn sigkill_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let dir = Path::new(&dir);
    let s = sqlite(dir);
    for i in 0..CHILD_N {
        s.upsert_binding(&binding(&format!("u{i}@test"), "sip:u", ts(60)));
    }
    s.upsert_customer(&Customer { id: NIL, name: "flushed".into(), api_keys: vec![] });
    s.flush().expect("flush");
    std::fs::write(dir.join("flushed"), b"1").expect("marker");
    for round in 0u64.. {
        for i in 0..1000 {
            s.upsert_binding(&binding(&format!("later{round}.{i}@test"), "sip:u", ts(60)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
#[test]
fn sqlite_survives_sigkill() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let child = std::process::Command::new(exe)
        .args(["--exact", "sigkill_child", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("flushed").exists() {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!("child exited early: {status}");
        }
        assert!(Instant::now() < deadline, "child never flushed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let it write (and commit) more, so the kill lands mid-stream.
    std::thread::sleep(Duration::from_millis(120));
    child.0.kill().expect("SIGKILL"); // SIGKILL on Unix
    let status = child.0.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let s = sqlite(dir.path());
    let bindings = s.load_bindings(ts(0)).expect("load");
    let flushed = bindings.iter().filter(|b| b.aor.starts_with('u')).count();
    let later = bindings.len() - flushed;
    eprintln!("after SIGKILL: {flushed} flushed bindings, {later} written after the flush");
    assert_eq!(flushed, CHILD_N);
    assert_eq!(s.customers().expect("customers")[0].name, "flushed");
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join("forkswitch.db")).expect("open");
    let check: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
}
