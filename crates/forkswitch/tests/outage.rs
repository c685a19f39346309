//! The database going away under load (issue 23 item 5): calls go on, the
//! record changes wait in a bounded queue, the log says so once (not once
//! per failed commit), and when the database is back the queue drains.
//!
//! - PostgreSQL stopped for 10 s (by its PID) under 50 calls/s: every call
//!   completes, the API answers 503 with the error envelope while it cannot
//!   read, `/metrics` shows the database down and changes held, and after
//!   the restart every call is in the database in its final state.
//! - SQLite's disk full (a 32 MB tmpfs the test mounts, filled by a ballast
//!   file) under load with `max_pending = 1500`: the queue fills (one ERROR
//!   line, the newest changes dropped and counted), calls go on; freeing
//!   the space drains it (one ERROR line), and no held change failed.

mod common;

use common::http::Api;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "key-of-the-outage-test";

fn config(database: &str, phone: &str) -> String {
    format!(
        "{database}[[customers]]\nid = \"{CUSTOMER}\"\napi_keys = [\"{KEY}\"]\n\
         [[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [[groups]]\nnumber = \"800\"\ndomain = \"test\"\ndestinations = [{{ type = \"sip\", target = \"{phone}\" }}]\n"
    )
}

/// A `forkswitch_...` sample of the metrics text (labels included in
/// `name`), 0 when absent.
fn metric(api: &Api, name: &str) -> f64 {
    let text = api.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Log lines of the server (JSON) whose message contains `text`.
fn log_lines(server: &Server, text: &str) -> Vec<String> {
    server.stdout_log().lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
}

/// The load: `calls` calls to 800 at `rate` per second.
fn load(server: &Server, rate: u32, calls: u32) -> ports::PortChild {
    let (r, m) = (rate.to_string(), calls.to_string());
    let extra = ["-r", r.as_str(), "-m", m.as_str(), "-l", "500", "-timeout", "120s"];
    start_caller(server.dir.path(), server.udp, "800", "uac.xml", &extra)
}

fn finish(mut load: ports::PortChild) {
    match load.wait_for(Duration::from_secs(120)) {
        Some(st) => assert!(st.success(), "the load: {st:?}\n{}", load.output()),
        None => panic!("the load did not finish\n{}", load.output()),
    }
}

#[test]
fn postgres_stopped_for_10_s_under_load_loses_nothing() {
    let cluster = pgcluster::Cluster::start();
    let url = cluster.database();
    let work = tempfile::tempdir().expect("dir");
    let phone = Phone::start(work.path(), "uas_answer.xml", &["-m", "100000", "-timeout", "120s"]);
    let database = format!("[database]\nurl = \"{url}\"\n");
    let server = Server::start_with_stderr_logged(&config(&database, &phone.uri("p")));
    let api = Api::new(server.http, KEY);
    const CALLS: u32 = 1250; // 25 s at 50/s
    let load = load(&server, 50, CALLS);
    wait_until(WAIT, "calls in the database", || {
        api.get("/v1.0/calls?page_size=100").json()["result"]
            .as_array()
            .is_some_and(|r| r.len() >= 50)
    });

    cluster.stop();
    let down = Instant::now();
    wait_until(WAIT, "the API's 503", || {
        let r = api.get("/v1.0/calls");
        r.status == 503 && r.json()["error"]["reason"] == "DATABASE_UNAVAILABLE"
    });
    api.get("/v1.0/groupcalls").error(503, "UNAVAILABLE");
    wait_until(WAIT, "the metrics' outage", || {
        metric(&api, "forkswitch_store_database_up") == 0.0
            && metric(&api, "forkswitch_store_queue_depth") > 100.0
    });
    // The outage is the scenario: 10 s.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    cluster.resume();

    finish(load);
    wait_until(WAIT, "the queue drained", || {
        metric(&api, "forkswitch_store_database_up") == 1.0
            && metric(&api, "forkswitch_store_queue_depth") == 0.0
    });
    assert_eq!(metric(&api, "forkswitch_store_writes_total{result=\"dropped\"}"), 0.0);
    assert_eq!(metric(&api, "forkswitch_store_writes_total{result=\"failed\"}"), 0.0);
    // Every call, in its final state.
    let db = db(&server);
    let mut inbound = 0;
    let mut after = None;
    loop {
        let page = db.list_calls(customer(), 100, after).expect("list");
        let Some(last) = page.last() else { break };
        after = Some(store::Cursor::after(last.tm_create, last.id));
        for c in page.iter().filter(|c| c.direction == records::Direction::Incoming) {
            inbound += 1;
            assert_eq!(c.status, records::CallStatus::Hangup, "{c:?}");
            assert_eq!(c.hangup_reason, records::HangupReason::Normal, "{c:?}");
        }
    }
    assert_eq!(inbound, CALLS, "every call's record");
    // Said once each, not once per failed commit.
    assert_eq!(log_lines(&server, "store: database unavailable").len(), 1);
    assert_eq!(log_lines(&server, "store: database available again").len(), 1);
    let errors = server.stdout_log().lines().filter(|l| l.contains("\"level\":\"ERROR\"")).count();
    assert_eq!(errors, 1, "one ERROR line for the whole outage");
    drop(phone);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs (as root)");
        assert!(st.success(), "mount tmpfs on {}: {st}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path`'s directory with `path` until it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("ballast");
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn sqlite_disk_full_under_load_fills_a_bounded_queue_and_drains_it() {
    let work = tempfile::tempdir().expect("dir");
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let _tmpfs = Tmpfs::mount(&disk, "32m");
    let phone = Phone::start(work.path(), "uas_answer.xml", &["-m", "100000", "-timeout", "120s"]);
    let database =
        format!("[database]\npath = \"{}\"\nmax_pending = 1500\n", disk.join("fs.db").display());
    let server = Server::start_with_stderr_logged(&config(&database, &phone.uri("p")));
    let api = Api::new(server.http, KEY);
    let ballast = disk.join("ballast");
    fill(&ballast);

    let load = load(&server, 50, 1500); // 30 s
    wait_until(Duration::from_secs(30), "the queue full", || {
        metric(&api, "forkswitch_store_writes_total{result=\"dropped\"}") > 0.0
    });
    assert_eq!(metric(&api, "forkswitch_store_database_up"), 0.0);
    assert_eq!(log_lines(&server, "store: database unavailable").len(), 1);
    assert_eq!(log_lines(&server, "reached [database] max_pending").len(), 1);
    // Room again: the held changes go in.
    std::fs::remove_file(&ballast).expect("free the disk");
    wait_until(Duration::from_secs(30), "the queue drained", || {
        !log_lines(&server, "store: pending record changes drained").is_empty()
    });
    finish(load);
    wait_until(WAIT, "everything written", || metric(&api, "forkswitch_store_queue_depth") == 0.0);
    assert_eq!(metric(&api, "forkswitch_store_database_up"), 1.0);
    assert_eq!(
        metric(&api, "forkswitch_store_writes_total{result=\"failed\"}"),
        0.0,
        "held, then written"
    );
    let dropped = metric(&api, "forkswitch_store_writes_total{result=\"dropped\"}");
    assert!(dropped > 0.0);
    // One line each: the outage, the queue filling, draining, the disk back.
    assert_eq!(log_lines(&server, "store: database unavailable").len(), 1);
    assert_eq!(log_lines(&server, "reached [database] max_pending").len(), 1);
    assert_eq!(log_lines(&server, "store: pending record changes drained").len(), 1);
    assert_eq!(log_lines(&server, "store: database available again").len(), 1);
    // The calls after the disk came back are in their final state.
    let db = db(&server);
    let newest = db.list_calls(customer(), 20, None).expect("list");
    assert!(newest.iter().all(|c| c.status == records::CallStatus::Hangup), "{newest:#?}");
    eprintln!("disk full: {dropped} record changes dropped while the queue was full");
    drop(phone);
}
