//! Crash recovery (issue 11 item 5): `kill -9` of the real binary with 100
//! answered calls up, and a restart on the same ports and database, as a
//! supervisor would do it.
//!
//! Before the crash: 25 phones and extensions are registered (20 bindings
//! from raw sockets, four SIPp phones, a spare SIPp phone), and four SIPp
//! callers place 25 calls each to the four phones, which answer and hold
//! them (the callers pause ten minutes before their BYE). The test waits for
//! what shows the calls really up, not for time: every phone has received
//! the ACK of each of its 25 dialogs and every caller has sent its 25 ACKs
//! (SIPp message traces), the REST API lists the 100 inbound calls and
//! their 100 legs answered (`progressing`, so the store has them), and the
//! metrics say 100 calls are active. The bindings are durable too (the API
//! reads them from the store).
//!
//! After the restart it checks what a crash must not lose or leave behind:
//! every binding is back (the "location loaded" count, the API's
//! registrations, and a REGISTER query per address-of-record); the 200
//! call records and their groupcalls are closed by the reconciliation at
//! start (status `hangup`, `tm_hangup` set at or after the kill, by
//! `local`, reason `failed`; the WARN line counts them), and no call is
//! active; a phone's late BYE for one of its old dialogs (its own Call-ID
//! and tags, from the SIPp trace), and a caller's, are answered 481; the
//! spare phone, registered before the crash, is called through its restored
//! binding and the call completes; the process printed no panic on stderr
//! and logged none, and stops cleanly on SIGTERM.
//!
//! Everything on 127.0.0.1, ports picked at run time; every wait has a
//! deadline; the SIPp processes are killed by their PIDs when dropped.

mod common;

use common::http::Api;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const KEY: &str = "key-of-the-crash-test";
const NOT_YET: &str = "9999-01-01 00:00:00.000000";
/// SIPp phones that answer and hold calls.
const PHONES: usize = 4;
const CALLS_PER_PHONE: usize = 25;
const CALLS: usize = PHONES * CALLS_PER_PHONE;
/// Extensions registered from raw sockets, never called.
const PLAIN: usize = 20;
/// Every binding: the plain ones, the phones, the spare phone.
const BINDINGS: usize = PLAIN + PHONES + 1;
/// Longest the 100 calls may take to be up end to end.
const SETUP: Duration = Duration::from_secs(40);

fn phone_user(i: usize) -> String {
    format!("p{i}")
}

fn plain_user(i: usize) -> String {
    format!("b{i:02}")
}

fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// Every extension, in the order of [`config`].
fn users() -> Vec<String> {
    let mut v: Vec<String> = (0..PLAIN).map(plain_user).collect();
    v.extend((0..PHONES).map(phone_user));
    v.push("spare".to_owned());
    v
}

/// One customer (domain `test`, an API key), every extension, and
/// 127.0.0.1 a trusted carrier source so the SIPp callers need no digest.
fn config() -> String {
    let mut t = format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\napi_keys = [\"{KEY}\"]\n\
         [[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n"
    );
    for u in users() {
        t.push_str(&format!(
            "[[extensions]]\nname = \"{u}\"\ndomain = \"test\"\npassword = \"{}\"\n",
            password(&u)
        ));
    }
    t
}

/// A SIPp phone registered as `user`, playing `scenario` with `extra`.
fn registered_phone(server: &Server, scenario: &str, user: &str, extra: &[&str]) -> Phone {
    let pw = password(user);
    let register = |sock: &UdpSocket| {
        let resp = register_from(sock, server.udp, user, &pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    };
    let unregister = |_lost_port| unregister_all(server.udp, user, &pw);
    Phone::start_announced(server.dir.path(), scenario, extra, None, register, unregister)
}

/// Every item of a paged API list (`page_size=100`, following the tokens).
fn all_pages(api: &Api, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let v = api.get_ok(&format!("{path}?page_size=100&page_token={token}"));
        out.extend(v["result"].as_array().expect("result").iter().cloned());
        token = v["next_page_token"].as_str().expect("next_page_token").to_owned();
        if token.is_empty() {
            return out;
        }
    }
    panic!("{path}: more than 100 pages");
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field} in {v:#}"))
}

/// `(aor, contact, source, transport)` of every registration the API lists.
fn registrations(api: &Api) -> BTreeSet<(String, String, String, String)> {
    all_pages(api, "/v1.0/registrations")
        .iter()
        .map(|r| {
            let f = |k| str_of(r, k).to_owned();
            (f("aor"), f("contact"), f("source"), f("transport"))
        })
        .collect()
}

/// The value of `forkswitch_calls_active` in the metrics.
fn calls_active(api: &Api) -> String {
    let text = api.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix("forkswitch_calls_active "))
        .unwrap_or_else(|| panic!("no forkswitch_calls_active in {text}"))
        .trim()
        .to_owned()
}

/// One message of a SIPp `-trace_msg` log: sent or received by SIPp, and
/// its text (line ends `\n`).
struct Traced {
    sent: bool,
    text: String,
}

impl Traced {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// A header's value (full or compact name, any case); head only.
    fn header(&self, full: &str, compact: &str) -> Option<&str> {
        self.text.lines().take_while(|l| !l.trim().is_empty()).skip(1).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact))
                .then(|| value.trim())
        })
    }

    fn call_id(&self) -> &str {
        self.header("Call-ID", "i").unwrap_or("")
    }

    fn cseq_method(&self) -> &str {
        self.header("CSeq", "CSeq").and_then(|v| v.split_whitespace().nth(1)).unwrap_or("")
    }
}

/// The messages of a SIPp message trace so far (blocks that start with a
/// line of dashes and a "message sent" / "message received" line).
fn trace(path: &Path) -> Vec<Traced> {
    let raw = std::fs::read_to_string(path).unwrap_or_default().replace('\r', "");
    let mut out: Vec<Traced> = Vec::new();
    let mut lines = raw.lines().peekable();
    while let Some(line) = lines.next() {
        let next = lines.peek().copied().unwrap_or("");
        let sent = next.contains("message sent");
        if line.starts_with("---------------") && (sent || next.contains("message received")) {
            lines.next();
            out.push(Traced { sent, text: String::new() });
            continue;
        }
        if let Some(t) = out.last_mut() {
            if !(t.text.is_empty() && line.is_empty()) {
                t.text.push_str(line);
                t.text.push('\n');
            }
        }
    }
    out
}

/// Distinct Call-IDs of ACKs in a trace, sent (`sent`) or received.
fn acks(path: &Path, sent: bool) -> HashSet<String> {
    trace(path)
        .iter()
        .filter(|m| m.sent == sent && m.first_line().starts_with("ACK "))
        .map(|m| m.call_id().to_owned())
        .collect()
}

/// The URI inside a name-addr (`"x" <sip:a@b>;tag=1` -> `sip:a@b`).
fn uri_of(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) if a < b => &name_addr[a + 1..b],
        _ => name_addr.split(';').next().unwrap_or(name_addr).trim(),
    }
}

/// An old dialog as the side that sends the late BYE sees it.
#[derive(Debug)]
struct Dialog {
    call_id: String,
    /// Its own identity and tag (the BYE's From).
    local: String,
    /// The switch's identity and tag (the BYE's To).
    remote: String,
    /// The switch's Contact (the BYE's Request-URI).
    target: String,
}

/// The first dialog a SIPp phone (UAS) confirmed: its 200 to an INVITE
/// whose ACK it received.
fn phone_dialog(path: &Path) -> Dialog {
    let msgs = trace(path);
    let acked = acks(path, false);
    let ok = msgs
        .iter()
        .find(|m| {
            m.sent
                && m.first_line().starts_with("SIP/2.0 200")
                && m.cseq_method() == "INVITE"
                && acked.contains(m.call_id())
        })
        .unwrap_or_else(|| panic!("no acknowledged 200 in {}", path.display()));
    let invite = msgs
        .iter()
        .find(|m| !m.sent && m.first_line().starts_with("INVITE ") && m.call_id() == ok.call_id())
        .expect("the INVITE of that 200");
    Dialog {
        call_id: ok.call_id().to_owned(),
        local: ok.header("To", "t").expect("To").to_owned(),
        remote: invite.header("From", "f").expect("From").to_owned(),
        target: uri_of(invite.header("Contact", "m").expect("Contact")).to_owned(),
    }
}

/// The first dialog a SIPp caller (UAC) confirmed: a 200 to its INVITE
/// that it ACKed.
fn caller_dialog(path: &Path) -> Dialog {
    let msgs = trace(path);
    let acked = acks(path, true);
    let ok = msgs
        .iter()
        .find(|m| {
            !m.sent
                && m.first_line().starts_with("SIP/2.0 200")
                && m.cseq_method() == "INVITE"
                && acked.contains(m.call_id())
        })
        .unwrap_or_else(|| panic!("no acknowledged 200 in {}", path.display()));
    Dialog {
        call_id: ok.call_id().to_owned(),
        local: ok.header("From", "f").expect("From").to_owned(),
        remote: ok.header("To", "t").expect("To").to_owned(),
        target: uri_of(ok.header("Contact", "m").expect("Contact")).to_owned(),
    }
}

/// Sends a BYE in `d` from a fresh socket to `server`; returns the final
/// response (1xx skipped), within [`WAIT`].
fn late_bye(server: SocketAddr, d: &Dialog, branch: &str) -> String {
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
        d.target, d.local, d.remote, d.call_id
    );
    sock.send_to(bye.as_bytes(), server).expect("send BYE");
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no final response to the late BYE {d:?}");
        let resp = recv(&sock);
        if call_id_of(&resp) == d.call_id && status_of(&resp) >= 200 {
            return String::from_utf8_lossy(&resp).into_owned();
        }
    }
}

/// Waits (deadline `within`) until `done` holds, `what` naming it.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match done() {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "never {what}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_string() -> String {
    records::Timestamp::from_system(SystemTime::now()).to_string()
}

#[test]
fn kill9_with_100_live_calls_then_restart_restores_bindings_and_closes_records() {
    let started = Instant::now();
    let mut server = Server::start_with_stderr_logged(&config());
    let api = Api::new(server.http, KEY);
    let dir = server.dir.path().to_owned();

    // Bindings: 20 from raw sockets, the four phones, the spare phone.
    for i in 0..PLAIN {
        let u = plain_user(i);
        let resp = register_from(&udp_client(), server.udp, &u, &password(&u));
        assert!(resp.starts_with("SIP/2.0 200"), "{u}: {resp}");
    }
    let m = CALLS_PER_PHONE.to_string();
    let phone_traces: Vec<PathBuf> =
        (0..PHONES).map(|i| dir.join(format!("phone{i}_messages.log"))).collect();
    let phones: Vec<Phone> = (0..PHONES)
        .map(|i| {
            let t = phone_traces[i].to_string_lossy().into_owned();
            let extra = ["-m", &m, "-timeout", "180s", "-trace_msg", "-message_file", &t];
            registered_phone(&server, "uas_answer.xml", &phone_user(i), &extra)
        })
        .collect();
    let spare = registered_phone(&server, "uas_answer.xml", "spare", &["-timeout", "180s"]);
    // Durable: the API reads the bindings from the store.
    let mut before = BTreeSet::new();
    wait_until(WAIT, "every binding in the store", || {
        before = registrations(&api);
        if before.len() == BINDINGS {
            Ok(())
        } else {
            Err(format!("{} of {BINDINGS}: {before:?}", before.len()))
        }
    });

    // 100 calls, 25 to each phone, answered and held.
    let caller_traces: Vec<PathBuf> =
        (0..PHONES).map(|i| dir.join(format!("caller{i}_messages.log"))).collect();
    let callers: Vec<ports::PortChild> = (0..PHONES)
        .map(|i| {
            let args: Vec<String> = [
                "-sf",
                &scenario("uac_hold.xml"),
                &server.udp.to_string(),
                "-s",
                &phone_user(i),
                "-m",
                &m,
                "-l",
                &m,
                "-r",
                "50",
                "-d",
                "600000",
                "-i",
                "127.0.0.1",
                "-timeout",
                "180s",
                "-nostdin",
                "-trace_msg",
                "-message_file",
                &caller_traces[i].to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            start_sipp(&dir, &args)
        })
        .collect();
    let t_calls = Instant::now();
    // Up end to end: every phone got the ACK of each of its dialogs, every
    // caller sent its ACKs.
    wait_until(SETUP, "every dialog confirmed", || {
        for (i, (p, c)) in phone_traces.iter().zip(&caller_traces).enumerate() {
            let (got, sent) = (acks(p, false).len(), acks(c, true).len());
            if got != CALLS_PER_PHONE || sent != CALLS_PER_PHONE {
                return Err(format!("phone {i}: {got} ACKs received, caller {i}: {sent} sent"));
            }
        }
        Ok(())
    });
    // And in the records: 100 inbound calls and 100 legs answered.
    let mut calls = Vec::new();
    wait_until(WAIT, "100 answered calls and legs in the records", || {
        calls = all_pages(&api, "/v1.0/calls");
        let up = |dir: &str| {
            calls.iter().filter(|c| c["direction"] == dir && c["status"] == "progressing").count()
        };
        let (inbound, legs) = (up("incoming"), up("outgoing"));
        if inbound == CALLS && legs == CALLS && calls.len() == 2 * CALLS {
            Ok(())
        } else {
            Err(format!("{inbound} inbound, {legs} legs answered, {} records", calls.len()))
        }
    });
    let setup_time = t_calls.elapsed();
    assert_eq!(calls_active(&api), CALLS.to_string(), "the switch serves 100 calls");
    for c in &calls {
        assert_ne!(c["tm_progressing"], NOT_YET, "answered: {c:#}");
        assert_eq!(c["tm_hangup"], NOT_YET, "still up: {c:#}");
    }
    let old_ids: HashSet<String> = calls.iter().map(|c| str_of(c, "id").to_owned()).collect();
    let sip_ids = |dir: &str| -> HashSet<String> {
        calls
            .iter()
            .filter(|c| c["direction"] == dir)
            .map(|c| str_of(c, "sip_call_id").to_owned())
            .collect()
    };
    let (inbound_sip, leg_sip) = (sip_ids("incoming"), sip_ids("outgoing"));
    let live_groupcalls: HashSet<String> = all_pages(&api, "/v1.0/groupcalls")
        .iter()
        .filter(|g| g["status"] != "hangup")
        .map(|g| str_of(g, "id").to_owned())
        .collect();
    assert!(live_groupcalls.len() >= CALLS, "a groupcall per call: {}", live_groupcalls.len());
    // The dialogs whose late BYEs come after the restart.
    let phone_side = phone_dialog(&phone_traces[0]);
    assert!(leg_sip.contains(&phone_side.call_id), "a leg's Call-ID: {phone_side:?}");
    let caller_side = caller_dialog(&caller_traces[0]);
    assert!(inbound_sip.contains(&caller_side.call_id), "an inbound Call-ID: {caller_side:?}");
    for d in [&phone_side, &caller_side] {
        assert!(d.target.contains(&server.udp.to_string()), "the switch's Contact: {d:?}");
    }

    // The crash, and a supervisor's restart on the same ports.
    let old_pid = server.pid();
    let killed_at = now_string();
    let t_kill = Instant::now();
    server.kill9_and_restart_on_same_ports();
    let restart_time = t_kill.elapsed();
    assert_ne!(server.pid(), old_pid);
    let closed = server.closed_live.clone();
    assert_eq!(closed["level"], "WARN", "{closed}");
    assert_eq!(closed["calls"], 2 * CALLS, "100 inbound calls and 100 legs: {closed}");
    assert_eq!(closed["groupcalls"], live_groupcalls.len(), "{closed}");
    assert_eq!(server.loaded["bindings"], BINDINGS, "{}", server.loaded);

    // Every binding back: in the API, and in the registrar's answers.
    let api = Api::new(server.http, KEY);
    assert_eq!(registrations(&api), before, "the bindings after the restart");
    let query = udp_client();
    for (aor, contact, _, _) in &before {
        let user = aor.split('@').next().expect("user");
        let resp = register_as(&query, server.udp, user, &password(user), false);
        assert!(resp.starts_with("SIP/2.0 200"), "{aor}: {resp}");
        assert!(resp.contains(&format!("<{contact}>")), "{aor} still at {contact}: {resp}");
    }

    // Every record of the 100 calls closed, and their groupcalls.
    let after = all_pages(&api, "/v1.0/calls");
    let old: Vec<&Value> = after.iter().filter(|c| old_ids.contains(str_of(c, "id"))).collect();
    assert_eq!(old.len(), 2 * CALLS, "every old record is still there");
    for c in &old {
        assert_eq!(c["status"], "hangup", "{c:#}");
        assert_eq!((&c["hangup_by"], &c["hangup_reason"]), (&json!("local"), &json!("failed")));
        assert_ne!(c["tm_hangup"], NOT_YET, "{c:#}");
        assert!(str_of(c, "tm_hangup") >= killed_at.as_str(), "closed after the kill: {c:#}");
        assert!(str_of(c, "tm_hangup") >= str_of(c, "tm_progressing"), "{c:#}");
    }
    let groupcalls = all_pages(&api, "/v1.0/groupcalls");
    for g in groupcalls.iter().filter(|g| live_groupcalls.contains(str_of(g, "id"))) {
        assert_eq!(g["status"], "hangup", "{g:#}");
    }
    assert_eq!(calls_active(&api), "0", "no call survives a crash");

    // Late BYEs for old dialogs: from a phone (the leg's dialog) and from a
    // caller (the inbound dialog). The switch knows neither any more.
    let resp = late_bye(server.udp, &phone_side, "latebyephone");
    assert_eq!(status_of(resp.as_bytes()), 481, "the phone's late BYE: {resp}");
    let resp = late_bye(server.udp, &caller_side, "latebyecaller");
    assert_eq!(status_of(resp.as_bytes()), 481, "the caller's late BYE: {resp}");

    // A new call, through a binding made before the crash.
    let mut caller = start_caller(&dir, server.udp, "spare", "uac.xml", &[]);
    let st = caller.wait_for(Duration::from_secs(30)).expect("the new call ends");
    assert!(st.success(), "the new call: {}", caller.output());
    spare.assert_ok();
    wait_until(WAIT, "the new call's records closed normally", || {
        let now = all_pages(&api, "/v1.0/calls");
        let new: Vec<&Value> = now.iter().filter(|c| !old_ids.contains(str_of(c, "id"))).collect();
        let normal = |c: &&&Value| {
            c["status"] == "hangup"
                && c["hangup_reason"] == "normal"
                && c["tm_progressing"] != NOT_YET
        };
        if new.len() == 2 && new.iter().all(|c| normal(&c)) {
            Ok(())
        } else {
            Err(format!("{new:#?}"))
        }
    });

    // No panic, and the process is alive and well.
    let stderr = server.stderr_log();
    assert!(!stderr.contains("panicked"), "the server panicked:\n{stderr}");
    let log = server.stdout_log();
    let panics: Vec<&str> =
        log.lines().filter(|l| l.to_ascii_lowercase().contains("panic")).collect();
    assert!(panics.is_empty(), "panics in the log: {panics:#?}");
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    sock.send_to(options(local, server.udp, "UDP", "after-crash").as_bytes(), server.udp)
        .expect("send");
    assert_eq!(status_of(&recv(&sock)), 200);
    drop(callers);
    drop(phones);
    let st = server.terminate();
    assert!(st.success(), "clean stop after the restart: {st:?}");
    eprintln!(
        "crash test: 100 calls up in {setup_time:?}; kill -9 to ready again in {restart_time:?}; \
         whole test {:?}",
        started.elapsed()
    );
}

/// When a SIPp `-trace_msg` block was logged (micros since the epoch):
/// its separator line ends with the date and time, UTC (`start_sipp` runs
/// SIPp with `TZ=UTC`).
fn traced_at(separator: &str) -> Option<i64> {
    let mut words = separator.split_whitespace().rev();
    let (time, date) = (words.next()?, words.next()?);
    records::Timestamp::parse(&format!("{date} {time}")).map(|t| t.micros())
}

/// Call-ID and arrival time (micros since the epoch) of each 200 to a BYE
/// received in a SIPp message trace: when that caller's call was over.
fn byes_answered(path: &Path) -> Vec<(String, i64)> {
    let raw = std::fs::read_to_string(path).unwrap_or_default().replace('\r', "");
    let mut out = Vec::new();
    let mut lines = raw.lines().peekable();
    while let Some(line) = lines.next() {
        let received = lines.peek().is_some_and(|l| l.contains("message received"));
        if !(line.starts_with("---------------") && received) {
            continue;
        }
        let Some(at) = traced_at(line) else { continue };
        lines.next();
        let msg: Vec<&str> =
            lines.by_ref().skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
        let header = |name: &str| {
            msg.iter().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let is_bye_ok = msg.first().is_some_and(|l| l.starts_with("SIP/2.0 200"))
            && header("CSeq").is_some_and(|c| c.ends_with("BYE"));
        if let (true, Some(id)) = (is_bye_ok, header("Call-ID")) {
            out.push((id, at));
        }
    }
    out
}

/// The commit window of the default config, and what the commit in flight
/// may take on top of it on a 2-core box running the whole test suite (with
/// 100 ms, 10 of 1,964 calls that ended 200-300 ms before the kill were
/// lost once on PostgreSQL, its server starved of CPU).
const WINDOW_MS: i64 = 100;
const COMMIT_MS: i64 = 400;

/// Durability (issue 23 item 4): `kill -9` under a 500 calls/s load. Every
/// call whose caller got the 200 to its BYE more than one commit window
/// plus the commit in flight (400 ms allowed) before the kill is in the
/// database in its final state (inbound call `hangup`, `normal`); after the restart the
/// crash reconciliation has closed everything else.
fn kill9_under_500_calls_per_second_loses_at_most_one_commit_window() {
    let mut server = Server::start_with_stderr_logged(&format!(
        "{}[[groups]]\nnumber = \"800\"\ndomain = \"test\"\ndestinations = [{{ type = \"endpoint\", target = \"p0@test\" }}]\n",
        config()
    ));
    let dir = server.dir.path().to_owned();
    let phone = registered_phone(
        &server,
        "uas_answer.xml",
        &phone_user(0),
        &["-m", "100000", "-timeout", "60s"],
    );
    let trace_file = dir.join("load_messages.log");
    let args: Vec<String> = [
        "-sf",
        &scenario("uac.xml"),
        &server.udp.to_string(),
        "-s",
        "800",
        "-r",
        "500",
        "-m",
        "10000",
        "-l",
        "2000",
        "-i",
        "127.0.0.1",
        "-timeout",
        "60s",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        &trace_file.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let load = start_sipp(&dir, &args);
    // Kill once a few thousand calls are through.
    wait_until(Duration::from_secs(30), "2000 calls over", || {
        let n = byes_answered(&trace_file).len();
        if n >= 2000 {
            Ok(())
        } else {
            Err(format!("{n} calls over"))
        }
    });
    let killed_at = records::Timestamp::from_system(SystemTime::now()).micros();
    // Back on new ports: the load's later calls reach nothing.
    server.kill9_and_restart();
    drop(load);
    drop(phone);

    let cutoff = killed_at - (WINDOW_MS + COMMIT_MS) * 1000;
    let over = byes_answered(&trace_file);
    let due: Vec<&String> = over.iter().filter(|(_, at)| *at < cutoff).map(|(id, _)| id).collect();
    assert!(due.len() >= 1000, "{} calls over well before the kill", due.len());
    let db = db(&server);
    let mut inbound = std::collections::HashMap::new();
    let mut after = None;
    let mut live = 0;
    loop {
        let page = db.list_calls(customer(), 100, after).expect("list");
        let Some(last) = page.last() else { break };
        after = Some(store::Cursor::after(last.tm_create, last.id));
        for c in &page {
            live += usize::from(c.status != records::CallStatus::Hangup);
            if c.direction == records::Direction::Incoming {
                inbound.insert(c.sip_call_id.clone(), c.clone());
            }
        }
    }
    assert_eq!(live, 0, "the reconciliation closed every record left live");
    let mut missing = Vec::new();
    for id in &due {
        match inbound.get(*id) {
            Some(c) if c.hangup_reason == records::HangupReason::Normal => {}
            other => {
                missing.push(format!("{id}: {:?}", other.map(|c| (c.status, c.hangup_reason))))
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} calls over more than {} ms before the kill are not in their final state: {:?}",
        missing.len(),
        due.len(),
        WINDOW_MS + COMMIT_MS,
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "kill -9 under 500 calls/s ({}): {} calls over before the kill, {} more than {} ms \
         before it, all in their final state; {} inbound records",
        server.store_url.split(':').next().unwrap_or(""),
        over.len(),
        due.len(),
        WINDOW_MS + COMMIT_MS,
        inbound.len()
    );
}

#[test]
fn kill9_under_load_sqlite() {
    kill9_under_500_calls_per_second_loses_at_most_one_commit_window();
}

// The same crashes with the records in PostgreSQL.
also_on_postgres!(
    kill9_with_100_live_calls_then_restart_restores_bindings_and_closes_records,
    kill9_under_500_calls_per_second_loses_at_most_one_commit_window,
);
