//! Security events in the log, as an operator and fail2ban see them: failed
//! digest authentications (REGISTER and INVITE), the ban they cause and its
//! end are WARN lines of target `security` with `event src user method`, in
//! the JSON and the human log format; a banned source's INVITE is refused;
//! and the shipped fail2ban filter (`config/fail2ban/`), run by the real
//! `fail2ban-regex`, counts exactly those lines and only the true source.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Bans after 3 failures, for 1 s; the sweep that ends it runs every second.
const CONFIG: &str = "[registrar]\nalgorithms = [\"MD5\"]\nban_max_failures = 3\nban_secs = 1\n\
    [[customers]]\nid = \"5e4a0680-804e-11ec-8477-2fea5968d85b\"\n\
    [[domains]]\nname = \"test\"\naliases = [\"127.0.0.1\"]\ncustomer_id = \"5e4a0680-804e-11ec-8477-2fea5968d85b\"\n\
    [[extensions]]\nname = \"test11\"\ndomain = \"test\"\npassword = \"right\"\n";

/// A user name that tries to forge a second address into the log line:
/// percent-encoded in the URI, `x src=10.9.9.9 "<newline>WARN` once decoded.
const FORGER: &str = "x%20src%3D10.9.9.9%20%22%0AWARN";

/// An INVITE from `sock` as `test11`, answered 407, then again with wrong
/// credentials: asserts the 403 (and ACKs it).
fn invite_with_wrong_password(sock: &UdpSocket, server: SocketAddr) {
    let local = sock.local_addr().expect("addr");
    let uri = format!("sip:test12@{server}");
    let invite = |cseq: u32, auth: Option<String>| {
        let mut m = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKsec{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:test11@test>;tag=sec\r\nTo: <{uri}>\r\nCall-ID: sec-invite-{}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:test11@{local}>\r\n",
            local.port()
        );
        if let Some(a) = auth {
            m.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    };
    let final_to = |cseq: u32| loop {
        let r = String::from_utf8_lossy(&recv(sock)).into_owned();
        if status_of(r.as_bytes()) >= 200 {
            let to = r.split("\r\n").find(|l| l.starts_with("To:")).unwrap_or("").to_owned();
            let ack = format!(
                "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKsec{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:test11@test>;tag=sec\r\n{to}\r\nCall-ID: sec-invite-{}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
                local.port()
            );
            sock.send_to(ack.as_bytes(), server).expect("send");
            return r;
        }
    };
    sock.send_to(invite(1, None).as_bytes(), server).expect("send");
    let challenge = final_to(1);
    assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
    let nonce =
        challenge.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let auth = digest_answer("test11", "wrong", "INVITE", &uri, nonce);
    sock.send_to(invite(2, Some(auth)).as_bytes(), server).expect("send");
    let refused = final_to(2);
    assert!(refused.starts_with("SIP/2.0 403"), "{refused}");
}

/// What every run does against a switch at `server`: one INVITE and two
/// REGISTERs with wrong passwords (the third failure bans), then an INVITE
/// while banned (refused at once, no challenge).
fn attack(server: SocketAddr) {
    let sock = udp_client();
    invite_with_wrong_password(&sock, server);
    let r = register_from(&udp_client(), server, "test11", "wrong");
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
    let r = register_from(&udp_client(), server, FORGER, "wrong");
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
    // Banned: an INVITE gets 403 straight away, and is not an event.
    let local = sock.local_addr().expect("addr");
    let banned = format!(
        "INVITE sip:test12@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKbanned;rport\r\nMax-Forwards: 70\r\nFrom: <sip:test11@test>;tag=b\r\nTo: <sip:test12@{server}>\r\nCall-ID: banned-{}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        local.port()
    );
    sock.send_to(banned.as_bytes(), server).expect("send");
    let r = loop {
        let r = recv(&sock);
        if status_of(&r) >= 200 {
            break r;
        }
    };
    assert_eq!(status_of(&r), 403, "{}", String::from_utf8_lossy(&r));
}

/// Runs `fail2ban-regex` with the shipped filter over `log` (and `extra`
/// options); returns its output. Panics, saying how to install it, if it is
/// missing.
fn fail2ban_regex(log: &Path, extra: &[&str]) -> String {
    let filter = repo_root().join("config/fail2ban/filter.d/forkswitch.conf");
    let out = Command::new("fail2ban-regex")
        .args(extra)
        .arg(log)
        .arg(&filter)
        .output()
        .unwrap_or_else(|e| panic!("fail2ban-regex: {e} (apt-get install fail2ban)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "fail2ban-regex failed: {text}");
    text
}

/// fail2ban's verdict over `log`: `want` lines matched, and the address
/// of every failure 127.0.0.1 (never the one a user name tried to forge).
fn assert_fail2ban_counts(log: &Path, want: usize) {
    let report = fail2ban_regex(log, &["--print-all-matched"]);
    assert_eq!(matched(&report), want, "{report}");
    let ips = fail2ban_regex(log, &["--out", "ip"]);
    let ips: Vec<&str> = ips.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(ips, vec!["127.0.0.1"; want], "{report}");
}

/// `Lines: N lines, I ignored, M matched, X missed` -> M.
fn matched(report: &str) -> usize {
    let line = report.lines().find(|l| l.starts_with("Lines:")).expect("a Lines: line");
    line.split(", ")
        .find_map(|p| p.strip_suffix(" matched"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no matched count in {line}"))
}

/// The security lines of a run, checked; returns how many fail2ban must
/// match (auth_failed and banned).
fn check_json_events(events: &[serde_json::Value]) -> usize {
    let kinds: Vec<&str> = events.iter().map(|v| v["event"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["auth_failed", "auth_failed", "auth_failed", "banned", "unbanned"]);
    for v in events {
        assert_eq!((v["level"].as_str(), v["target"].as_str()), (Some("WARN"), Some("security")));
        assert_eq!(v["src"], "127.0.0.1", "{v}");
        assert!(v.get("user").is_some() && v.get("method").is_some(), "{v}");
    }
    let methods: Vec<&str> = events.iter().map(|v| v["method"].as_str().unwrap_or("")).collect();
    assert_eq!(methods, ["INVITE", "REGISTER", "REGISTER", "REGISTER", ""]);
    assert_eq!(events[0]["user"], "test11");
    assert_eq!(events[2]["user"], "x?src=10.9.9.9???WARN", "sanitised: no space, quote, newline");
    assert_eq!(events[3]["secs"], 1);
    4
}

#[test]
fn security_events_in_json_are_what_fail2ban_counts() {
    let mut server = Server::start_with(CONFIG);
    attack(server.udp);
    let mut events = Vec::new();
    let mut raw = Vec::new();
    server.wait_log(
        |v| v["event"] == "unbanned",
        WAIT,
        |v, _| {
            if v["target"] == "security" {
                events.push(v.clone());
                raw.push(v.to_string());
            }
        },
    );
    let want = check_json_events(&events);
    // fail2ban over the lines exactly as the binary wrote them.
    let all = std::fs::read_to_string(server.dir.path().join("stdout.log")).expect("stdout.log");
    let lines: Vec<&str> = all.lines().filter(|l| l.contains("\"target\":\"security\"")).collect();
    assert_eq!(lines.len(), events.len(), "{all}");
    let log = server.dir.path().join("security.json.log");
    std::fs::write(&log, all).expect("write");
    assert_fail2ban_counts(&log, want);
}

#[test]
fn security_events_in_the_human_format_even_at_level_error() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, lines, udp) = start_human(dir.path());
    attack(udp);
    let mut security = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !security.iter().any(|l: &String| l.contains("event=unbanned")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("security lines within the wait");
        if line.contains(" WARN security: ") {
            security.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let events: Vec<&str> = security
        .iter()
        .map(|l| l.split("event=").nth(1).and_then(|r| r.split(' ').next()).unwrap_or(""))
        .collect();
    assert_eq!(events, ["auth_failed", "auth_failed", "auth_failed", "banned", "unbanned"]);
    for l in &security {
        assert!(l.contains(" src=127.0.0.1 user="), "{l}");
        assert!(l.contains(" method="), "{l}");
    }
    assert!(security[0].contains("user=test11 method=INVITE"), "{}", security[0]);
    assert!(security[3].contains("secs=1"), "{}", security[3]);
    let log = dir.path().join("security.log");
    std::fs::write(&log, security.join("\n") + "\n").expect("write");
    assert_fail2ban_counts(&log, 4);
}

/// The binary in the human log format, its stdout lines on a channel.
fn start_human(dir: &Path) -> (std::process::Child, Receiver<String>, SocketAddr) {
    let cfg = dir.join("forkswitch.toml");
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"error\"\n[database]\npath = \"\"\n{CONFIG}"
    );
    std::fs::write(&cfg, text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkswitch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--log-format", "human"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Level "error" hides the "listening" line: find the port in /proc.
    let pid = child.id();
    let deadline = Instant::now() + WAIT;
    let port = loop {
        if let Some(p) = ports::ports_of(pid, ports::Proto::Udp).into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "the human-format server bound no UDP port");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, rx, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A flood from one source: past `[overload] source_rate` requests per
/// second the source is banned, its requests dropped (no answer), and one
/// `rate_limited` WARN line is logged, which the fail2ban filter counts.
#[test]
fn a_request_flood_is_rate_limited_once_and_fail2ban_sees_it() {
    let cfg = format!("{CONFIG}[overload]\nsource_rate = 20\nsource_ban_secs = 30\n");
    let mut server = Server::start_with(&cfg);
    let sock = udp_client();
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let local = sock.local_addr().expect("addr");
    for n in 0..60 {
        let req = options(local, server.udp, "UDP", &format!("flood-{n}"));
        sock.send_to(req.as_bytes(), server.udp).expect("send");
    }
    let mut answered = 0;
    let mut buf = vec![0u8; 65536];
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    // A second can turn within the 60 sends: up to twice the rate.
    assert!((20..=40).contains(&answered), "{answered} of 60 answered");
    let ev = server.wait_log(|v| v["event"] == "rate_limited", WAIT, |_, _| {});
    assert_eq!((ev["level"].as_str(), ev["target"].as_str()), (Some("WARN"), Some("security")));
    assert_eq!((ev["src"].as_str(), ev["method"].as_str()), (Some("127.0.0.1"), Some("OPTIONS")));
    assert_eq!(ev["secs"], 30);
    // Banned: nothing is answered now.
    let req = options(local, server.udp, "UDP", "after-ban");
    sock.send_to(req.as_bytes(), server.udp).expect("send");
    assert!(sock.recv_from(&mut buf).is_err(), "a banned source gets no answer");
    let all = server.stdout_log();
    let lines: Vec<&str> = all.lines().filter(|l| l.contains("\"target\":\"security\"")).collect();
    assert_eq!(lines.len(), 1, "one line per ban, not one per packet: {lines:?}");
    let log = server.dir.path().join("rate.json.log");
    std::fs::write(&log, all).expect("write");
    assert_fail2ban_counts(&log, 1);
}
