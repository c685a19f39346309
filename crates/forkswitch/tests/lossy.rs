//! Lossy networks (issue 11 item 4): 1,000 calls through real packet loss,
//! duplication and reordering between the caller, the switch and the phone;
//! every call must complete through retransmissions, none may be lost.
//!
//! The loss comes from [`common::lossy`] relays (the kernel here has no
//! netem, and CI's container may not allow network namespaces): one link
//! between the SIPp caller and the switch, one between the switch and the
//! SIPp phone, each dropping 5% of the datagrams each way, duplicating 2%
//! and holding 2% back by 20-60 ms (so later ones overtake them). Both
//! parties announce the relay's address as their own (the caller in Via,
//! From and Contact, the phone in its Contact, and ring group 900's
//! destination is the relay), so every message of both sides, in and out
//! of dialogs, crosses a lossy link. The switch's retransmissions (INVITE
//! and BYE to the phone, its 2xx to the caller until the ACK, the ACK again
//! for each 2xx again, its answers to retransmitted requests) and SIPp's
//! (on, as by default over UDP) must recover every call. The scenarios
//! (`uac_lossy.xml`, `uas_answer_lossy.xml`) are the usual call, written so
//! that SIPp itself copes with what a lossy network legally does: a 1xx
//! after the 200, a BYE before the ACK, a request sent again after it was
//! answered.
//!
//! Pass: SIPp on both sides counts 1,000 successful calls and none failed;
//! the switch's metrics say 1,000 calls started and 1,000 answered, none of
//! another outcome and none left active, and its records (read through the
//! REST API) hold 1,000 root groupcalls answered and hung up and 2,000 call
//! records hung up; each relay direction really lost 3-7% (and duplicated
//! and held back some), requests really were sent again on both links, and
//! every call's INVITE, ACK and BYE (and 200s to the INVITE and the BYE)
//! reached the relays. The figures (relay counters, retransmissions seen,
//! wall time, the switch's CPU) are printed; `FORKSWITCH_LOSSY_SEED` picks
//! another seed for the relays. When it fails, SIPp's logs (errors, every
//! message) and the server's are kept and their directory printed.

mod common;

use common::http::Api;
use common::lossy::{Counts, Dir, Impairment, Link};
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const CALLS: u64 = 1000;
/// Calls per second the caller places.
const RATE: u32 = 40;
const KEY: &str = "lossy-api-key";
const NIL: &str = "00000000-0000-0000-0000-000000000000";
/// The seed of the relays' generators (the links get `seed` and `seed + 1`).
const DEFAULT_SEED: u64 = 20_110_004;
/// How long SIPp waits for any one expected message before it fails the
/// call: far beyond a chain of retransmissions (0.5 + 1 + 2 + 4 + 4 s).
const RECV_TIMEOUT_MS: &str = "20000";
/// The caller's whole run, at most (1,000 calls at 40/s take ~25 s).
const CALLER_WITHIN: Duration = Duration::from_secs(120);
/// The phone's tail after the caller is done: its 8 s linger and a margin.
const PHONE_AFTER: Duration = Duration::from_secs(30);

fn seed() -> u64 {
    std::env::var("FORKSWITCH_LOSSY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED)
}

/// Domain `test`, an API key, 127.0.0.1 a trusted carrier source (the
/// caller needs no digest) and ring group 900 ringing `phone`.
fn config(phone: SocketAddr) -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\napi_keys = [\"{KEY}\"]\n\
         [[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [[groups]]\nnumber = \"900\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
         destinations = [{{ type = \"sip\", target = \"sip:phone@{phone}\" }}]\n"
    )
}

/// SIPp's statistics file (`-trace_stat -stf`): its last row, by column.
struct SippStats(HashMap<String, String>);

impl SippStats {
    fn read(path: &Path) -> SippStats {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("SIPp statistics {}: {e}", path.display()));
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head: Vec<&str> = lines.next().expect("a header row").split(';').collect();
        let last: Vec<&str> = lines.next_back().expect("a data row").split(';').collect();
        let row = head.iter().zip(last).map(|(h, v)| (h.trim().to_owned(), v.trim().to_owned()));
        SippStats(row.collect())
    }

    fn get(&self, column: &str) -> u64 {
        let v = self.0.get(column).unwrap_or_else(|| panic!("no column {column}: {:?}", self.0));
        v.parse().unwrap_or_else(|_| panic!("column {column} = {v:?}"))
    }

    /// Every failure counter that is not zero, for a message.
    fn failures(&self) -> String {
        let mut v: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| k.starts_with("Failed") && k.ends_with("(C)") && *v != "0")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.sort();
        v.join(" ")
    }

    /// Successful, failed, retransmissions, out-of-call and dead-call
    /// messages, for the report.
    fn summary(&self) -> String {
        format!(
            "successful {}, failed {}, retransmissions {}, out-of-call msgs {}, dead-call msgs {}",
            self.get("SuccessfulCall(C)"),
            self.get("FailedCall(C)"),
            self.get("Retransmissions(C)"),
            self.get("OutOfCallMsgs(C)"),
            self.get("DeadCallMsgs(C)")
        )
    }
}

/// The value of metric line `series` (name and labels, as written) in
/// `text`.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `Udp: RcvbufErrors` of the whole machine (`/proc/net/snmp`): datagrams
/// the kernel itself dropped, which would add loss of its own.
fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (head, vals) = (udp.next()?, udp.next()?);
    let i = head.split_whitespace().position(|h| h == "RcvbufErrors")?;
    vals.split_whitespace().nth(i)?.parse().ok()
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after "(comm)".
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Every record of `path` (`/v1.0/groupcalls`, `/v1.0/calls`), page by page.
fn all_records(api: &Api, path: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let v = api.get_ok(&format!("{path}?page_size=100&page_token={token}"));
        out.extend(v["result"].as_array().expect("result").iter().cloned());
        token = v["next_page_token"].as_str().expect("next_page_token").to_owned();
        if token.is_empty() {
            return out;
        }
    }
}

/// Asserts what the link did one way: it really lost about 5% (and
/// duplicated and held back some), and knew where to send everything.
fn assert_impaired(link: &Link, dir: Dir, c: &Counts) {
    let what = format!("{} {dir:?}: {c}", link.name);
    assert!(c.received >= CALLS, "{what}");
    assert!(c.dropped > 0, "{what}");
    let rate = c.drop_rate();
    assert!((0.03..=0.07).contains(&rate), "drop rate {rate} is not ~5%: {what}");
    assert!(c.duplicated > 0 && c.delayed > 0, "{what}");
    assert_eq!((c.unroutable, c.send_errors), (0, 0), "{what}");
}

/// Asserts that `kind` crossed the link for every one of the calls.
fn assert_every_call(c: &Counts, kind: &str, what: &str) {
    let k = c.kind(kind);
    assert_eq!(k.calls.len() as u64, CALLS, "{what}: {kind} reached the link for these calls: {c}");
}

/// Where SIPp writes its statistics, screens, error and message logs: gone
/// when the test passes; kept, with a copy of the server's log, when it
/// fails (the path is printed), to read what happened to the failed calls.
/// Made after the server, so it is dropped (and copies) before the server
/// and its directory are.
struct Evidence {
    dir: Option<tempfile::TempDir>,
    server_log: std::path::PathBuf,
}

impl Evidence {
    fn new(server: &Server) -> Evidence {
        let dir = tempfile::Builder::new().prefix("forkswitch-lossy-").tempdir().expect("dir");
        Evidence { dir: Some(dir), server_log: server.dir.path().join("stdout.log") }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    fn path(&self, name: &str) -> String {
        self.dir().join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Evidence {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::copy(&self.server_log, dir.path().join("server.log"));
            eprintln!("lossy: SIPp's logs and the server's kept in {}", dir.keep().display());
        }
    }
}

#[test]
fn thousand_calls_through_lossy_links_all_complete() {
    let t0 = Instant::now();
    let kernel_drops_before = udp_rcvbuf_errors();
    let seed = seed();
    let caller_link = Link::start("caller", seed, Impairment::LOSSY);
    let phone_link = Link::start("phone", seed + 1, Impairment::LOSSY);
    // Ring group 900 rings the phone where the switch reaches it: at the
    // relay.
    let server = Server::start_with(&config(phone_link.switch_side));
    caller_link.set_switch(server.udp);
    let api = Api::new(server.http, KEY);
    let cpu_before = cpu_seconds(server.pid());
    let evidence = Evidence::new(&server);
    let path = |name: &str| evidence.path(name);

    // The phone answers every call, announcing the relay as its address.
    let phone_me = phone_link.switch_side.to_string();
    let phone_within = format!("{}s", (CALLER_WITHIN + PHONE_AFTER).as_secs());
    let mut phone = ports::spawn_on_free_port("phone sipp", ports::Proto::Udp, |port| {
        let mut c = std::process::Command::new("sipp");
        c.args(["-sf", &scenario("uas_answer_lossy.xml"), "-p", &port.to_string()])
            .args(["-i", "127.0.0.1", "-m", &CALLS.to_string(), "-set", "me", &phone_me])
            .args(["-nostdin", "-buff_size", "4194304", "-recv_timeout", RECV_TIMEOUT_MS])
            .args(["-timeout", &phone_within, "-timeout_error"])
            .args(["-trace_stat", "-stf", &path("phone_stats.csv"), "-fd", "1"])
            .args(["-trace_screen", "-screen_file", &path("phone_screen.log")])
            .args(["-trace_err", "-error_file", &path("phone_errors.log")])
            .args(["-trace_msg", "-message_file", &path("phone_msgs.log")])
            .current_dir(evidence.dir());
        c
    });
    phone_link.set_party(SocketAddr::from(([127, 0, 0, 1], phone.port)));

    // The caller dials 900 through its link, announcing the relay as its
    // own address.
    let t_calls = Instant::now();
    let args: Vec<String> = [
        "-sf",
        &scenario("uac_lossy.xml"),
        &caller_link.party_side.to_string(),
        "-s",
        "900",
        "-m",
        &CALLS.to_string(),
        "-r",
        &RATE.to_string(),
        "-l",
        "400",
        "-i",
        "127.0.0.1",
        "-set",
        "me",
        &caller_link.switch_side.to_string(),
        "-nostdin",
        "-buff_size",
        "4194304",
        "-recv_timeout",
        RECV_TIMEOUT_MS,
        "-timeout",
        &format!("{}s", CALLER_WITHIN.as_secs()),
        "-timeout_error",
        "-trace_stat",
        "-stf",
        &path("caller_stats.csv"),
        "-fd",
        "1",
        "-trace_screen",
        "-screen_file",
        &path("caller_screen.log"),
        "-trace_err",
        "-error_file",
        &path("caller_errors.log"),
        "-trace_msg",
        "-message_file",
        &path("caller_msgs.log"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut caller = start_sipp(evidence.dir(), &args);
    let screen = |name: &str| std::fs::read_to_string(path(name)).unwrap_or_default();
    let Some(caller_status) = caller.wait_for(CALLER_WITHIN + Duration::from_secs(10)) else {
        panic!("the caller did not finish\n{}", caller.output());
    };
    let calls_took = t_calls.elapsed();
    let Some(phone_status) = phone.wait_for(PHONE_AFTER) else {
        panic!("the phone did not finish\n{}", phone.output());
    };
    let caller_stats = SippStats::read(Path::new(&path("caller_stats.csv")));
    let phone_stats = SippStats::read(Path::new(&path("phone_stats.csv")));
    let both = format!(
        "caller: {}\nphone: {}\n{}\n{}\n--- caller screen ---\n{}\n--- phone screen ---\n{}",
        caller_stats.summary(),
        phone_stats.summary(),
        caller_link.report(),
        phone_link.report(),
        screen("caller_screen.log"),
        screen("phone_screen.log")
    );
    assert!(caller_status.success(), "caller: {caller_status:?} {}\n{both}", caller.stderr());
    assert_eq!(caller_stats.get("SuccessfulCall(C)"), CALLS, "{}\n{both}", caller_stats.failures());
    assert_eq!(caller_stats.get("FailedCall(C)"), 0, "{}\n{both}", caller_stats.failures());
    assert!(phone_status.success(), "phone: {phone_status:?} {}\n{both}", phone.stderr());
    assert_eq!(phone_stats.get("SuccessfulCall(C)"), CALLS, "{}\n{both}", phone_stats.failures());
    assert_eq!(phone_stats.get("FailedCall(C)"), 0, "{}\n{both}", phone_stats.failures());

    // The switch agrees: 1,000 calls started (a duplicated or
    // retransmitted INVITE made no second one), 1,000 answered, none live.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = api.get("/metrics").body;
        let settled = metric(&text, "forkswitch_calls_total{outcome=\"answered\"}") == Some(CALLS)
            && metric(&text, "forkswitch_calls_active") == Some(0)
            && metric(&text, "forkswitch_dialogs_active") == Some(0)
            && metric(&text, "forkswitch_store_queue_depth") == Some(0);
        if settled {
            break text;
        }
        assert!(Instant::now() < deadline, "the switch never settled at {CALLS} answered:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&metrics, "forkswitch_calls_started_total"), Some(CALLS), "{metrics}");
    for outcome in ["cancelled", "busy", "no_answer", "failed"] {
        let series = format!("forkswitch_calls_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(&metrics, &series), Some(0), "{metrics}");
    }
    let switch_retrans = metric(&metrics, "forkswitch_sip_retransmissions_total");

    // Its records: 1,000 root groupcalls, each answered and hung up, and
    // each call record (the caller's and the phone's leg) hung up.
    let groupcalls = all_records(&api, "/v1.0/groupcalls");
    let roots: Vec<_> = groupcalls.iter().filter(|g| g["master_groupcall_id"] == NIL).collect();
    assert_eq!(roots.len() as u64, CALLS, "root groupcalls");
    let unfinished: Vec<_> = roots
        .iter()
        .filter(|g| g["status"] != "hangup" || g["answer_call_id"] == NIL)
        .map(|g| g.to_string())
        .collect();
    assert!(unfinished.is_empty(), "groupcalls not answered and hung up: {unfinished:#?}");
    let calls = all_records(&api, "/v1.0/calls");
    assert_eq!(calls.len() as u64, 2 * CALLS, "a call record for each caller and each leg");
    let live: Vec<_> = calls.iter().filter(|c| c["status"] != "hangup").collect();
    assert!(live.is_empty(), "call records not hung up: {live:#?}");

    // The links really were lossy, every way, and every call's requests
    // reached them: the switch sent the phone an INVITE, an ACK for its
    // 200 and a BYE for each call, and answered each caller's INVITE and
    // BYE with a 200.
    let c_to = caller_link.counts(Dir::ToSwitch);
    let c_from = caller_link.counts(Dir::FromSwitch);
    let p_from = phone_link.counts(Dir::FromSwitch);
    let p_to = phone_link.counts(Dir::ToSwitch);
    assert_impaired(&caller_link, Dir::ToSwitch, &c_to);
    assert_impaired(&caller_link, Dir::FromSwitch, &c_from);
    assert_impaired(&phone_link, Dir::FromSwitch, &p_from);
    assert_impaired(&phone_link, Dir::ToSwitch, &p_to);
    for kind in ["INVITE", "ACK", "BYE"] {
        assert_every_call(&c_to, kind, "caller -> switch");
        assert_every_call(&p_from, kind, "switch -> phone");
    }
    for kind in ["200 INVITE", "200 BYE"] {
        assert_every_call(&c_from, kind, "switch -> caller");
        assert_every_call(&p_to, kind, "phone -> switch");
    }
    // Recovery really happened on both links: requests sent again by SIPp
    // and by the switch.
    assert!(c_to.kind("INVITE").repeats() > 0 && c_to.kind("BYE").repeats() > 0, "{c_to}");
    assert!(p_from.kind("INVITE").repeats() > 0 && p_from.kind("BYE").repeats() > 0, "{p_from}");
    assert!(switch_retrans.is_some_and(|n| n > 0), "{metrics}");

    let kernel_drops =
        kernel_drops_before.zip(udp_rcvbuf_errors()).map(|(a, b)| b.saturating_sub(a));
    let cpu = cpu_before.zip(cpu_seconds(server.pid())).map(|(a, b)| b - a);
    let repeats = |c: &Counts| {
        let sent_again = c.kinds.iter().filter(|(_, k)| k.repeats() > 0);
        sent_again.map(|(n, k)| format!("{n} {}", k.repeats())).collect::<Vec<_>>().join(", ")
    };
    println!(
        "lossy: {CALLS} calls at {RATE}/s, seed {seed}: calls took {calls_took:.1?}, test {:.1?}\n\
         caller: {}\nphone: {}\n\
         switch: retransmissions {switch_retrans:?}, CPU {cpu:?} s\n\
         kernel UDP RcvbufErrors during the run (machine-wide): {kernel_drops:?}\n\
         {}\n{}\n\
         sent again (datagrams beyond the first per call): caller -> switch: {}; switch -> caller: {}; switch -> phone: {}; phone -> switch: {}",
        t0.elapsed(),
        caller_stats.summary(),
        phone_stats.summary(),
        caller_link.report(),
        phone_link.report(),
        repeats(&c_to),
        repeats(&c_from),
        repeats(&p_from),
        repeats(&p_to),
    );
}
