//! Ring strategies through the real binary (issue 12): staggered ringing
//! (`delay_secs`: the second INVITE leaves that long after the first),
//! memory hunt (1, then 1+2 while 1 still rings) and round robin across
//! three calls and a restart (each call starts after the member that
//! answered the last; the rotation is stored).
//! The phones are raw UDP sockets that note when each INVITE arrives; the
//! caller is a raw socket at a trusted carrier address. The same three run
//! again with SIPp phones and a SIPp caller, timed from the leg records.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A phone on a raw socket: reports `(name, arrival, invite text)` of every
/// INVITE; answers CANCEL 200 + 487, answers an INVITE 200 when it is told
/// to (`answer`), and every BYE 200.
struct RawPhone {
    addr: SocketAddr,
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.split("\r\n")
        .find(|l| l.get(..name.len()).is_some_and(|p| p.eq_ignore_ascii_case(name)))
        .unwrap_or_default()
}

fn response(req: &str, code: u16, reason: &str, tag: &str, body: &str) -> String {
    let to = line(req, "To:");
    let to = if to.contains("tag=") { to.to_owned() } else { format!("{to};tag={tag}") };
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    format!(
        "SIP/2.0 {code} {reason}\r\n{}\r\n{}\r\n{to}\r\n{}\r\n{}\r\nContact: <sip:phone@127.0.0.1>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        line(req, "Via:"),
        line(req, "From:"),
        line(req, "Call-ID:"),
        line(req, "CSeq:"),
        body.len()
    )
}

const SDP: &str = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

impl RawPhone {
    /// Starts phone `name`; `answers` says, per INVITE received (in order),
    /// whether to answer it (after 50 ms) or just let it ring.
    fn start(
        name: &'static str,
        answers: Vec<bool>,
        seen: mpsc::Sender<(&'static str, Instant)>,
    ) -> RawPhone {
        let sock: UdpSocket = ports::udp_peer();
        let addr = sock.local_addr().expect("addr");
        sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut n_invites = 0;
            let mut pending: Option<(Instant, String, SocketAddr)> = None;
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                if let Some((at, req, from)) = pending.take() {
                    if Instant::now() >= at {
                        let ok = response(&req, 200, "OK", name, SDP);
                        let _ = sock.send_to(ok.as_bytes(), from);
                    } else {
                        pending = Some((at, req, from));
                    }
                }
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("INVITE ") {
                    let first = !text.contains(";tag=") || !line(&text, "To:").contains("tag=");
                    if !first {
                        continue;
                    }
                    let ringing = response(&text, 180, "Ringing", name, "");
                    let _ = sock.send_to(ringing.as_bytes(), from);
                    if seen.send((name, Instant::now())).is_err() {
                        return;
                    }
                    if answers.get(n_invites).copied().unwrap_or(false) {
                        pending = Some((Instant::now() + Duration::from_millis(50), text, from));
                    }
                    n_invites += 1;
                } else if text.starts_with("CANCEL ") {
                    let _ = sock.send_to(response(&text, 200, "OK", name, "").as_bytes(), from);
                    // The INVITE it cancels: same Via branch, CSeq INVITE.
                    let inv = text.replacen("CSeq: 1 CANCEL", "CSeq: 1 INVITE", 1);
                    let _ = sock.send_to(
                        response(&inv, 487, "Request Terminated", name, "").as_bytes(),
                        from,
                    );
                } else if text.starts_with("BYE ") {
                    let _ = sock.send_to(response(&text, 200, "OK", name, "").as_bytes(), from);
                }
            }
        });
        RawPhone { addr }
    }

    fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.addr)
    }
}

fn config(groups: &str) -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         {groups}"
    )
}

/// One call to `number` from a raw caller; returns its final status (the
/// caller ACKs a non-2xx, and ACKs then BYEs a 2xx).
fn call(server: SocketAddr, number: &str, n: u32) -> u16 {
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:{number}@test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKrs{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001@test>;tag=c{n}\r\nTo: <sip:{number}@test>\r\nCall-ID: rs-{n}-{}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        local.port(),
        SDP.len()
    );
    sock.send_to(invite.as_bytes(), server).expect("send");
    sock.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    loop {
        let r = String::from_utf8_lossy(&recv(&sock)).into_owned();
        let status = status_of(r.as_bytes());
        if status < 200 {
            continue;
        }
        let to = line(&r, "To:");
        let ack = |cseq: &str, method: &str, branch: &str| {
            format!(
                "{method} sip:{number}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001@test>;tag=c{n}\r\n{to}\r\nCall-ID: rs-{n}-{}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
                local.port()
            )
        };
        if status >= 300 {
            let a = ack("1", "ACK", &format!("z9hG4bKrs{n}"));
            sock.send_to(a.as_bytes(), server).expect("ack");
        } else {
            let a = ack("1", "ACK", &format!("z9hG4bKrsack{n}"));
            sock.send_to(a.as_bytes(), server).expect("ack");
            let bye = ack("2", "BYE", &format!("z9hG4bKrsbye{n}"));
            sock.send_to(bye.as_bytes(), server).expect("bye");
            loop {
                let r = String::from_utf8_lossy(&recv(&sock)).into_owned();
                if r.starts_with("SIP/2.0 200") && r.contains("CSeq: 2 BYE") {
                    break;
                }
            }
        }
        return status;
    }
}

#[test]
fn staggered_ringing_dials_the_second_destination_delay_secs_later() {
    let (tx, seen) = mpsc::channel();
    let desk = RawPhone::start("desk", vec![false], tx.clone());
    let mobile = RawPhone::start("mobile", vec![true], tx);
    let groups = format!(
        "[[groups]]\nnumber = \"850\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
         destinations = [{{ type = \"sip\", target = \"{}\" }}, {{ type = \"sip\", target = \"{}\", delay_secs = 2 }}]\n",
        desk.uri("desk"),
        mobile.uri("mobile")
    );
    let server = Server::start_with(&config(&groups));
    let status = call(server.udp, "850", 1);
    assert_eq!(status, 200, "the mobile answers");
    let (first, t1) = seen.recv_timeout(WAIT).expect("first INVITE");
    let (second, t2) = seen.recv_timeout(WAIT).expect("second INVITE");
    assert_eq!((first, second), ("desk", "mobile"));
    let gap = t2 - t1;
    assert!(
        gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(2100),
        "the mobile's INVITE left {gap:?} after the desk's (delay_secs = 2, within 100 ms)"
    );
}

#[test]
fn memory_hunt_adds_one_destination_per_step() {
    let (tx, seen) = mpsc::channel();
    let a = RawPhone::start("a", vec![false], tx.clone());
    let b = RawPhone::start("b", vec![false], tx.clone());
    let c = RawPhone::start("c", vec![true], tx);
    let groups = format!(
        "[[groups]]\nnumber = \"851\"\ndomain = \"test\"\nring_method = \"memory_hunt\"\n\
         destinations = [{{ type = \"sip\", target = \"{}\", ring_timeout_secs = 1 }}, \
         {{ type = \"sip\", target = \"{}\", ring_timeout_secs = 1 }}, {{ type = \"sip\", target = \"{}\", ring_timeout_secs = 5 }}]\n",
        a.uri("a"),
        b.uri("b"),
        c.uri("c")
    );
    let server = Server::start_with(&config(&groups));
    assert_eq!(call(server.udp, "851", 2), 200, "c answers");
    let order: Vec<(&str, Instant)> =
        (0..3).map(|_| seen.recv_timeout(WAIT).expect("INVITE")).collect();
    let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "b", "c"], "1, then 1+2, then 1+2+3");
    for (i, w) in order.windows(2).enumerate() {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1300),
            "step {i}: {gap:?} (each step is the newest one's ring timeout, 1 s)"
        );
    }
    assert!(seen.try_recv().is_err(), "nobody rung twice: a and b kept ringing");
}

#[test]
fn round_robin_starts_after_the_last_answerer_across_three_calls() {
    let (tx, seen) = mpsc::channel();
    // Each phone answers the first INVITE it gets.
    let a = RawPhone::start("a", vec![true, true], tx.clone());
    let b = RawPhone::start("b", vec![true, true], tx.clone());
    let c = RawPhone::start("c", vec![true, true], tx);
    let groups = format!(
        "[[groups]]\nnumber = \"852\"\ndomain = \"test\"\nring_method = \"round_robin\"\n\
         destinations = [{{ type = \"sip\", target = \"{}\" }}, {{ type = \"sip\", target = \"{}\" }}, {{ type = \"sip\", target = \"{}\" }}]\n",
        a.uri("a"),
        b.uri("b"),
        c.uri("c")
    );
    let mut server = Server::start_with(&config(&groups));
    let mut rung = Vec::new();
    for n in 0..3 {
        if n == 1 {
            // The rotation is stored: after a restart the next call still
            // starts after the member that answered (else: a again).
            server.stop_and_restart();
        }
        assert_eq!(call(server.udp, "852", 10 + n), 200, "call {n} answered");
        let (who, _) = seen.recv_timeout(WAIT).expect("INVITE");
        rung.push(who);
    }
    assert_eq!(rung, ["a", "b", "c"], "each call starts after the last answerer, across a restart");
}

// ---- the same strategies with SIPp phones and a SIPp caller ----
//
// Each phone is SIPp playing one scenario for one call on its own port; the
// group's destinations are their `sip:` URIs. Timing is read from the leg
// records (`tm_create` is when the switch sent the leg's INVITE).

/// A group `number` hunting `method` over the SIPp `phones`, each
/// destination with `options` (TOML fields after its target, e.g.
/// `ring_timeout_secs = 2`).
fn sipp_group(number: &str, method: &str, phones: &[(&Phone, &str)]) -> String {
    let d: Vec<String> = phones
        .iter()
        .enumerate()
        .map(|(i, (p, options))| {
            let sep = if options.is_empty() { "" } else { ", " };
            format!("{{ type = \"sip\", target = \"{}\"{sep}{options} }}", p.uri(&format!("p{i}")))
        })
        .collect();
    format!(
        "[[groups]]\nnumber = \"{number}\"\ndomain = \"test\"\nring_method = \"{method}\"\ndestinations = [{}]\n",
        d.join(", ")
    )
}

fn targets(phones: &[&Phone]) -> Vec<String> {
    phones.iter().enumerate().map(|(i, p)| p.uri(&format!("p{i}"))).collect()
}

/// The leg to `uri` among `legs`.
fn leg_to<'a>(legs: &'a [records::Call], uri: &str) -> &'a records::Call {
    legs.iter().find(|c| c.destination.target == uri).unwrap_or_else(|| panic!("no leg to {uri}"))
}

fn ms_between(a: &records::Call, b: &records::Call) -> i64 {
    (b.tm_create.micros() - a.tm_create.micros()) / 1000
}

#[test]
fn sipp_staggered_ringing_second_invite_delay_secs_after_the_first() {
    let dir = tempfile::tempdir().expect("dir");
    let desk = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let mobile = Phone::start(dir.path(), "uas_answer.xml", &["-d", "500"]);
    let groups = sipp_group("860", "ring_all", &[(&desk, ""), (&mobile, "delay_secs = 2")]);
    let server = Server::start_with(&config(&groups));
    caller(server.dir.path(), server.udp, "860", "uac.xml", &[]);
    let t = targets(&[&desk, &mobile]);
    desk.assert_ok();
    mobile.assert_ok();
    let (root, legs) = finished_root(&server, &[&t[0], &t[1]]);
    let (d, m) = (leg_to(&legs, &t[0]), leg_to(&legs, &t[1]));
    assert_eq!(root.answer_call_id, m.id);
    let gap = ms_between(d, m);
    assert!((1900..=2100).contains(&gap), "the mobile's INVITE left {gap} ms after the desk's");
}

#[test]
fn sipp_memory_hunt_rings_a_growing_prefix() {
    let dir = tempfile::tempdir().expect("dir");
    // p0 and p1 ring until the answer elsewhere CANCELs them (with the
    // Reason header: they kept ringing, never timed out); p2 answers 1 s
    // after its INVITE.
    let p0 = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let p1 = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let p2 = Phone::start(dir.path(), "uas_answer.xml", &["-d", "1000"]);
    let step = "ring_timeout_secs = 2";
    let groups = sipp_group("861", "memory_hunt", &[(&p0, step), (&p1, step), (&p2, step)]);
    let server = Server::start_with(&config(&groups));
    caller(server.dir.path(), server.udp, "861", "uac.xml", &[]);
    let t = targets(&[&p0, &p1, &p2]);
    for p in [p0, p1, p2] {
        p.assert_ok();
    }
    let (root, legs) = finished_root(&server, &[&t[0], &t[1], &t[2]]);
    assert_eq!(legs.len(), 3, "each rung once: {legs:#?}");
    let by = |i: usize| leg_to(&legs, &t[i]);
    for (a, b) in [(0, 1), (1, 2)] {
        let gap = ms_between(by(a), by(b));
        assert!((1900..=2200).contains(&gap), "p{b} was added {gap} ms after p{a} (step 2 s)");
    }
    assert_eq!(root.answer_call_id, by(2).id);
    for i in [0, 1] {
        assert_eq!(by(i).hangup_reason, records::HangupReason::Cancel, "p{i} rang to the end");
    }
}

#[test]
fn sipp_round_robin_each_call_starts_after_the_last_answerer() {
    let dir = tempfile::tempdir().expect("dir");
    // Each phone answers one call and exits: a call hunting the wrong one
    // first would dial a closed port and show an extra leg.
    let phones: Vec<Phone> =
        (0..3).map(|_| Phone::start(dir.path(), "uas_answer.xml", &[])).collect();
    let groups =
        sipp_group("862", "round_robin", &[(&phones[0], ""), (&phones[1], ""), (&phones[2], "")]);
    let server = Server::start_with(&config(&groups));
    for _ in 0..3 {
        caller(server.dir.path(), server.udp, "862", "uac.xml", &[]);
    }
    let t = targets(&phones.iter().collect::<Vec<_>>());
    for p in phones {
        p.assert_ok();
    }
    let members: Vec<&str> = t.iter().map(String::as_str).collect();
    let calls = finished_roots(&server, &members, 3);
    let answered: Vec<&str> = calls
        .iter()
        .map(|(root, legs)| {
            assert_eq!(legs.len(), 1, "one leg per call: {legs:#?}");
            assert_eq!(root.answer_call_id, legs[0].id);
            legs[0].destination.target.as_str()
        })
        .collect();
    assert_eq!(answered, members, "p0, then p1, then p2");
}
