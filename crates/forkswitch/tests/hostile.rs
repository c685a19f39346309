//! Hostile INVITEs, in the spirit of the PROTOS c07-sip suite, forked by
//! the real binary to a phone (issue 11 item 2): long and odd display
//! names, user parts and Request-URIs, header floods, oversized bodies, and
//! mutations of a valid INVITE drawn from a seeded generator. Whatever the
//! caller sends, every message the phone receives parses with the
//! project's strict codec (no defect, the validator accepts it) and is
//! within the copy limits; the requests beyond them get their RFC 3261
//! status (400, 413, 414); and the switch answers an OPTIONS probe after
//! every case. `HOSTILE_ONLY="mutation 146"` runs one case and prints
//! what the caller received and the server's log.

mod common;

use b2bua::CopyLimits;
use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_message::{validate, HeaderName, Message, Policy, Verdict};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the caller waits for the switch's final answer to a case.
const ANSWER: Duration = Duration::from_secs(5);

/// What a case must lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Refused with this status; the phone is not rung.
    Refused(u16),
    /// Forked to the phone (which answers 486, so the caller gets 486).
    Forked,
    /// Anything but a crash: forked, refused or dropped.
    Any,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// A valid INVITE from the caller at `caller` to group 900, with `from`
/// as the From value (tag added), `extra` header lines, and `body`.
fn invite(n: usize, caller: SocketAddr, from: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    invite_to(n, caller, "sip:900@test", from, extra, body)
}

fn invite_to(
    n: usize,
    caller: SocketAddr,
    ruri: &str,
    from: &str,
    extra: &str,
    body: &[u8],
) -> Vec<u8> {
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    let mut m = format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bKhostile{n}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag=h{n}\r\n\
         To: <sip:900@test>\r\n\
         Call-ID: hostile-{n}@{caller}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{caller}>\r\n\
         {extra}{ctype}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

const SDP: &[u8] = b"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// The cases made by rule: each cap, just under and over it, and odd
/// characters where a value is copied.
fn rule_cases(caller: SocketAddr) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(usize) -> Vec<u8>, expect| {
        let n = cases.len();
        cases.push(Case { name: name.to_owned(), bytes: f(n), expect });
    };
    let plain = |from: String| move |n| invite(n, caller, &from, "", SDP);
    add(
        "display name 33,000 bytes (PROTOS c07)",
        &plain(format!("\"{}\" <sip:alice@test>", "A".repeat(33_000))),
        Expect::Forked,
    );
    add(
        "display name 129 bytes",
        &plain(format!("\"{}\" <sip:alice@test>", "B".repeat(129))),
        Expect::Forked,
    );
    add(
        "display name of quotes and backslashes",
        &plain(r#""\"\\\"\\\"\\" <sip:alice@test>"#.to_owned()),
        Expect::Forked,
    );
    add(
        "display name with control characters",
        &plain("\"a\u{1}b\u{7}c\u{1b}[2J\" <sip:alice@test>".to_owned()),
        Expect::Any,
    );
    add(
        "display name with tab and DEL",
        &plain("\"a\tb\u{7f}c\" <sip:alice@test>".to_owned()),
        Expect::Any,
    );
    add(
        "display name multibyte cut",
        &plain(format!("\"{}\" <sip:alice@test>", "\u{1F600}".repeat(40))),
        Expect::Forked,
    );
    add(
        "unquoted display name of many tokens",
        &plain(format!("{} <sip:alice@test>", "tok ".repeat(200))),
        Expect::Forked,
    );
    add(
        "unterminated display name",
        &plain("\"never ends <sip:alice@test>".to_owned()),
        Expect::Any,
    );
    add("user part 256 bytes", &plain(format!("<sip:{}@test>", "7".repeat(256))), Expect::Forked);
    add(
        "user part 257 bytes",
        &plain(format!("<sip:{}@test>", "7".repeat(257))),
        Expect::Refused(400),
    );
    add(
        "user part 10,000 bytes",
        &plain(format!("<sip:{}@test>", "u".repeat(10_000))),
        Expect::Refused(400),
    );
    add("user part with escapes", &plain("<sip:%00%0d%0a%22@test>".to_owned()), Expect::Forked);
    add(
        "user part with reserved characters",
        &plain("<sip:a;b?c=d&e@test>".to_owned()),
        Expect::Any,
    );
    add(
        "Request-URI 300 bytes",
        &|n| {
            invite_to(
                n,
                caller,
                &format!("sip:900@test;x={}", "p".repeat(280)),
                "<sip:a@test>",
                "",
                SDP,
            )
        },
        Expect::Refused(414),
    );
    add(
        "Request-URI 4,000 bytes",
        &|n| {
            invite_to(n, caller, &format!("sip:{}@test", "9".repeat(4000)), "<sip:a@test>", "", SDP)
        },
        Expect::Refused(414),
    );
    add(
        "200 Subject headers",
        &|n| invite(n, caller, "<sip:a@test>", &"Subject: flood\r\n".repeat(200), SDP),
        Expect::Forked,
    );
    add(
        "Subject of 5,000 bytes",
        &|n| invite(n, caller, "<sip:a@test>", &format!("Subject: {}\r\n", "s".repeat(5000)), SDP),
        Expect::Forked,
    );
    add(
        "240 unknown headers",
        &|n| invite(n, caller, "<sip:a@test>", &"X-Flood: 1\r\n".repeat(240), SDP),
        Expect::Forked,
    );
    add(
        "300 headers (beyond the codec's 256)",
        &|n| invite(n, caller, "<sip:a@test>", &"X-Flood: 1\r\n".repeat(300), SDP),
        Expect::Refused(400),
    );
    add(
        "Priority with a bell",
        &|n| invite(n, caller, "<sip:a@test>", "Priority: urgent\u{7}\r\n", SDP),
        Expect::Any,
    );
    add(
        "body 16 kB",
        &|n| invite(n, caller, "<sip:a@test>", "", &[b'a'; 16 * 1024]),
        Expect::Forked,
    );
    add(
        "body 16 kB + 1",
        &|n| invite(n, caller, "<sip:a@test>", "", &[b'a'; 16 * 1024 + 1]),
        Expect::Refused(413),
    );
    add(
        "body 60 kB",
        &|n| invite(n, caller, "<sip:a@test>", "", &[b'z'; 60_000]),
        Expect::Refused(413),
    );
    add(
        "Content-Type 200 bytes",
        &|n| {
            let ct = format!("Content-Type: application/{}\r\n", "x".repeat(200));
            let mut m = invite(n, caller, "<sip:a@test>", &ct, b"");
            let at = m.len() - 4;
            m.splice(at.., b"\r\n\r\n".iter().copied());
            // The body-less INVITE of `invite` has no Content-Type of its own.
            m
        },
        Expect::Refused(400),
    );
    cases
}

/// Mutations of a valid INVITE: bytes flipped, inserted and removed, lines
/// repeated and values blown up, from a seeded generator.
fn mutated_cases(caller: SocketAddr, count: usize, seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let odd: &[&[u8]] = &[
        b"\"", b"\\", b"<", b">", b"\0", b"\r", b"\n", b"%", b";", b",", b"\xff", b"\x7f", b" ",
        b"@",
    ];
    (0..count)
        .map(|i| {
            let n = 1000 + i;
            let from = "\"Mallory\" <sip:mallory@test>";
            let mut m = invite(n, caller, from, "Subject: hello\r\nPriority: normal\r\n", SDP);
            // Keep the first line, Via, Call-ID and CSeq intact most of the
            // time, so most cases get past the parser into the switch.
            let head_end = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(m.len());
            let lo = m.windows(6).position(|w| w == b"From: ").unwrap_or(0);
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(lo..head_end.max(lo + 1)).min(m.len());
                match rng.gen_range(0..5) {
                    0 => {
                        let b = odd[rng.gen_range(0..odd.len())];
                        m.splice(at..at, b.iter().copied());
                    }
                    1 => {
                        if at < m.len() {
                            m.remove(at);
                        }
                    }
                    2 => {
                        let len = rng.gen_range(100..20_000);
                        let c = b"aZ9 \"\\"[rng.gen_range(0..6)];
                        m.splice(at..at, std::iter::repeat_n(c, len));
                    }
                    3 => {
                        if let Some(b) = m.get_mut(at) {
                            *b ^= 1 << rng.gen_range(0..8);
                        }
                    }
                    _ => {
                        let line = b"Subject: again\r\n".repeat(rng.gen_range(1..40));
                        let start = m[..at].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                        m.splice(start..start, line);
                    }
                }
            }
            // Content-Length must stay right, or the case only tests framing.
            fix_content_length(&mut m);
            Case { name: format!("mutation {i}"), bytes: m, expect: Expect::Any }
        })
        .collect()
}

fn fix_content_length(m: &mut Vec<u8>) {
    let Some(end) = m.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let body = m.len() - end - 4;
    let text = String::from_utf8_lossy(&m[..end]).into_owned();
    let Some(pos) = text.find("Content-Length: ") else { return };
    let vstart = pos + "Content-Length: ".len();
    let vend = text[vstart..].find("\r\n").map_or(text.len(), |e| vstart + e);
    m.splice(vstart..vend, body.to_string().into_bytes());
}

/// What the phone saw of one case.
#[derive(Debug)]
struct Seen {
    invites: usize,
    problems: Vec<String>,
}

/// Checks one message the phone received: strict parse, and every value
/// copied from the caller within the caps.
fn check_received(bytes: &[u8], limits: &CopyLimits) -> Result<Message, String> {
    let m =
        Message::parse(Bytes::copy_from_slice(bytes)).map_err(|e| format!("unparsable: {e}"))?;
    if let Some(d) = m.defects().first() {
        return Err(format!("defect: {d}"));
    }
    if m.is_request() {
        match validate(&m, &Policy::default()) {
            Verdict::Accept => {}
            other => return Err(format!("validator: {other:?}")),
        }
    }
    let from = m.from_header().map_err(|e| format!("From: {e:?}"))?;
    m.to_header().map_err(|e| format!("To: {e:?}"))?;
    m.top_via().map_err(|e| format!("Via: {e:?}"))?;
    if let Some(d) = from.display_name() {
        if d.len() > limits.display_name {
            return Err(format!("display name of {} bytes", d.len()));
        }
        if d.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err("control character in the display name".into());
        }
    }
    if from.uri.user.is_some_and(|u| u.len() > limits.user * 3) {
        return Err("user part beyond the cap".into());
    }
    if m.request_uri_bytes().is_some_and(|u| u.len() > limits.request_uri) {
        return Err("Request-URI beyond the cap".into());
    }
    if m.body().len() > limits.body {
        return Err(format!("body of {} bytes", m.body().len()));
    }
    for h in [HeaderName::Subject, HeaderName::Priority, HeaderName::ContentDisposition] {
        let n = m.all_header_bytes(h).count();
        if n > limits.header_values {
            return Err(format!("{n} {h:?} headers"));
        }
        if let Some(v) = m.all_header_bytes(h).find(|v| v.len() > limits.header_value) {
            return Err(format!("{h:?} of {} bytes", v.len()));
        }
    }
    if m.header_count() > 24 {
        return Err(format!("{} headers", m.header_count()));
    }
    Ok(m)
}

fn header_line<'a>(text: &'a str, name: &str) -> &'a str {
    text.split("\r\n")
        .find(|l| l.get(..name.len()).is_some_and(|p| p.eq_ignore_ascii_case(name)))
        .unwrap_or_default()
}

/// The phone: answers every INVITE 486 and reports, per case (a `()` on
/// `next` asks for the report of the case just finished), what it saw.
fn phone(sock: UdpSocket, next: mpsc::Receiver<()>, report: mpsc::Sender<Seen>) {
    let limits = CopyLimits::default();
    let mut buf = vec![0u8; 70_000];
    let mut seen = Seen { invites: 0, problems: Vec::new() };
    sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    loop {
        match next.try_recv() {
            Ok(()) => {
                let done = std::mem::replace(&mut seen, Seen { invites: 0, problems: Vec::new() });
                if report.send(done).is_err() {
                    return;
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let bytes = &buf[..n];
        match check_received(bytes, &limits) {
            Err(p) => seen
                .problems
                .push(format!("{p}: {}", String::from_utf8_lossy(&bytes[..n.min(400)]))),
            Ok(m) if m.method() == Some(&sip_message::Method::Invite) => {
                seen.invites += 1;
                let text = String::from_utf8_lossy(bytes);
                let busy = format!(
                    "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{};tag=phone\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                    header_line(&text, "Via:"),
                    header_line(&text, "From:"),
                    header_line(&text, "To:"),
                    header_line(&text, "Call-ID:"),
                    header_line(&text, "CSeq:"),
                );
                let _ = sock.send_to(busy.as_bytes(), from);
            }
            Ok(_) => {} // the ACK of our 486
        }
    }
}

/// The caller's wait for the final answer to the case with `call_id`; it
/// ACKs it (a non-2xx final, RFC 3261 17.1.1.3). `None`: no answer.
fn final_answer(sock: &UdpSocket, server: SocketAddr, call_id: &str) -> Option<u16> {
    let deadline = Instant::now() + ANSWER;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if std::env::var("HOSTILE_ONLY").is_ok() {
            println!("caller got:\n{text}");
        }
        if !text.starts_with("SIP/2.0 ") || call_id_of(text.as_bytes()) != call_id {
            continue;
        }
        let status = status_of(text.as_bytes());
        if status < 200 {
            continue;
        }
        let ack = format!(
            "ACK sip:900@test SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            header_line(&text, "Via:"),
            header_line(&text, "From:"),
            header_line(&text, "To:"),
            header_line(&text, "Call-ID:"),
        );
        let _ = sock.send_to(ack.as_bytes(), server);
        return Some(status);
    }
    None
}

/// The switch is alive: an OPTIONS gets its 200.
fn probe(server: SocketAddr, n: usize) -> bool {
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    let call_id = format!("probe-{n}");
    let req = options(local, server, "UDP", &call_id);
    for _ in 0..3 {
        sock.send_to(req.as_bytes(), server).expect("send probe");
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if call_id_of(&buf[..n]) == call_id && status_of(&buf[..n]) == 200 {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn hostile_invites_reach_the_phone_only_clean_and_bounded() {
    let phone_sock = ports::udp_peer();
    let phone_addr = phone_sock.local_addr().expect("phone addr");
    let config = format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [[groups]]\nnumber = \"900\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
         destinations = [{{ type = \"sip\", target = \"sip:p@{phone_addr}\" }}]\n"
    );
    let server = Server::start_with(&config);
    let (ask, next) = mpsc::channel();
    let (report, reports) = mpsc::channel();
    let phone_thread = std::thread::spawn(move || phone(phone_sock, next, report));

    let caller = ports::udp_peer();
    caller.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let caller_addr = caller.local_addr().expect("caller addr");
    let mut cases = rule_cases(caller_addr);
    cases.extend(mutated_cases(caller_addr, 150, 0x05ee_dc07));

    if let Ok(only) = std::env::var("HOSTILE_ONLY") {
        cases.retain(|c| c.name == only);
    }
    let mut failures = Vec::new();
    let (mut forked, mut refused, mut dropped) = (0, 0, 0);
    for (n, case) in cases.iter().enumerate() {
        caller.send_to(&case.bytes, server.udp).expect("send case");
        // Parsed as the switch does (a mutation may leave a bare LF).
        let call_id = Message::parse(Bytes::copy_from_slice(&case.bytes))
            .ok()
            .and_then(|m| m.call_id().ok().map(|c| String::from_utf8_lossy(c).into_owned()))
            .unwrap_or_else(|| call_id_of(&case.bytes));
        let answer = final_answer(&caller, server.udp, &call_id);
        ask.send(()).expect("phone alive");
        let seen = reports.recv_timeout(Duration::from_secs(5)).expect("phone report");
        for p in &seen.problems {
            failures.push(format!("{}: the phone received {p}", case.name));
        }
        match (answer, seen.invites) {
            (Some(486), 1..) => forked += 1,
            (Some(s), 0) if s >= 400 => refused += 1,
            (None, 0) => dropped += 1,
            other => failures.push(format!(
                "{}: answer and INVITEs seen {other:?}; the case:\n{}",
                case.name,
                String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(700)])
            )),
        }
        let ok = match case.expect {
            Expect::Refused(code) => answer == Some(code) && seen.invites == 0,
            Expect::Forked => answer == Some(486) && seen.invites == 1,
            Expect::Any => true,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got answer {answer:?} and {} INVITEs at the phone",
                case.name, case.expect, seen.invites
            ));
        }
        if !probe(server.udp, n) {
            failures.push(format!("{}: no answer to the probe after it", case.name));
            break;
        }
    }
    println!(
        "hostile cases={} forked={forked} refused={refused} dropped={dropped} failures={}",
        cases.len(),
        failures.len()
    );
    drop(ask);
    phone_thread.join().expect("phone thread");
    let log = server.stdout_log();
    if std::env::var("HOSTILE_ONLY").is_ok() {
        println!("{log}");
    }
    let status = server.terminate();
    assert!(status.success(), "the server exited with {status} after the cases");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(forked >= 10 && refused >= 5, "forked={forked} refused={refused}");
    // The log says which caps were applied.
    assert!(log.contains("trimmed: beyond the copy limits"), "no trim logged");
    assert!(log.contains("refused: beyond the copy limits"), "no refusal logged");
}
