//! Media anchoring through a real rtpengine (started by the harness on
//! ports picked at run time, killed by PID): raw-socket phones on a forked
//! call see only rtpengine's address in the SDP (the INVITEs, the losing
//! leg's early media, the winner's 2xx, a re-INVITE and its 2xx), RTP flows
//! through the anchored ports both ways, the losing branch is deleted while
//! the winner's media keeps flowing, and nothing is left after the hangup; an
//! rtpengine that goes away costs no established call, and a new call
//! gets what `on_failure` says.

mod common;

use common::{fork, status_of, Server, WAIT};
use rtpengine_harness::{audio_port, relay_rtp as relay, NgDriver, Rtpengine};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The phones' and the caller's media address.
const LOOPBACK: &str = "127.0.0.1";

fn udp() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

fn port_of(s: &UdpSocket) -> u16 {
    s.local_addr().expect("addr").port()
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// The body of a SIP message.
fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Every value of header `name` (full name), in order.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split_once("\r\n\r\n").map_or(msg, |(h, _)| h);
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    headers(msg, name).first().copied().unwrap_or_else(|| panic!("no {name} in {msg}"))
}

/// The URI inside `<...>` of a header value.
fn uri_in(v: &str) -> &str {
    v.split_once('<').and_then(|(_, r)| r.split_once('>')).map_or(v, |(u, _)| u)
}

/// A response to `req` (a request received), with `to_tag` added to its
/// To header when it has none, and `body` as SDP.
fn response(req: &str, status: &str, to_tag: &str, local: SocketAddr, sdp: Option<&str>) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for v in headers(req, "Via") {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    let to = header(req, "To");
    let to = if to.contains(";tag=") { to.to_owned() } else { format!("{to};tag={to_tag}") };
    r.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:phone@{local}>\r\n",
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
    ));
    match sdp {
        Some(s) => r.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{s}",
            s.len()
        )),
        None => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    r
}

/// Receives SIP messages on `s` until one satisfies `want` (others are
/// ignored: retransmissions, 100 Trying); returns it and its source.
fn recv_until(s: &UdpSocket, what: &str, want: impl Fn(&str) -> bool) -> (String, SocketAddr) {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65_536];
    loop {
        assert!(Instant::now() < deadline, "no {what} within {WAIT:?}");
        let Ok((n, from)) = s.recv_from(&mut buf) else { continue };
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if want(&m) {
            return (m, from);
        }
    }
}

fn is_request(m: &str, method: &str) -> bool {
    m.starts_with(&format!("{method} "))
}

fn is_status(m: &str, code: u16) -> bool {
    m.starts_with("SIP/2.0 ") && status_of(m.as_bytes()) == code
}

/// A caller on a raw UDP socket.
struct Caller {
    sip: UdpSocket,
    server: SocketAddr,
    call_id: String,
    tag: &'static str,
    to: String,
    contact: String,
    /// The SDP of each 183 received.
    early: Vec<String>,
}

impl Caller {
    fn new(server: SocketAddr, call_id: &str) -> Caller {
        Caller {
            sip: udp(),
            server,
            call_id: call_id.into(),
            tag: "caller-tag",
            to: String::new(),
            contact: String::new(),
            early: Vec::new(),
        }
    }

    fn request(&self, method: &str, ruri: &str, cseq: u32, extra: &str, body: &str) -> String {
        let local = self.sip.local_addr().expect("addr");
        let to = if self.to.is_empty() { "<sip:800@test>".to_owned() } else { self.to.clone() };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{method}-{cseq}-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:caller@{local}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            self.call_id,
            self.tag,
            self.call_id,
            body.len()
        )
    }

    fn send(&self, msg: &str) {
        self.sip.send_to(msg.as_bytes(), self.server).expect("send");
    }

    /// INVITE 800 with `sdp`; returns the final response.
    fn invite(&mut self, sdp: &str) -> String {
        let invite =
            self.request("INVITE", "sip:800@test", 1, "Content-Type: application/sdp\r\n", sdp);
        self.send(&invite);
        let early = std::cell::RefCell::new(Vec::new());
        let (fin, _) = recv_until(&self.sip, "a final response to the INVITE", |m| {
            if is_status(m, 183) {
                early.borrow_mut().push(body(m).to_owned());
            }
            m.starts_with("SIP/2.0 ") && status_of(m.as_bytes()) >= 200
        });
        self.early = early.into_inner();
        if is_status(&fin, 200) {
            self.to = header(&fin, "To").to_owned();
            self.contact = uri_in(header(&fin, "Contact")).to_owned();
            let ack = self.request("ACK", &self.contact.clone(), 1, "", "");
            self.send(&ack);
        }
        fin
    }

    /// A re-INVITE (CSeq `cseq`) with `sdp`; returns its final response
    /// (a 2xx is ACKed).
    fn reinvite(&self, cseq: u32, sdp: &str) -> String {
        let ct = "Content-Type: application/sdp\r\n";
        self.send(&self.request("INVITE", &self.contact, cseq, ct, sdp));
        let want = format!("CSeq: {cseq} INVITE");
        let (fin, _) = recv_until(&self.sip, "the re-INVITE's final response", |m| {
            m.starts_with("SIP/2.0 ") && status_of(m.as_bytes()) >= 200 && m.contains(&want)
        });
        if is_status(&fin, 200) {
            self.send(&self.request("ACK", &self.contact, cseq, "", ""));
        }
        fin
    }

    /// BYE (CSeq `cseq`); returns its response's status.
    fn bye(&self, cseq: u32) -> u16 {
        self.send(&self.request("BYE", &self.contact, cseq, "", ""));
        let want = format!("CSeq: {cseq} BYE");
        let (r, _) = recv_until(&self.sip, "the BYE's response", |m| {
            m.starts_with("SIP/2.0 ") && m.contains(&want)
        });
        status_of(r.as_bytes())
    }
}

/// What a phone saw of its INVITE.
struct Offered {
    /// The `m=audio` port and the whole SDP it was offered.
    port: u16,
    sdp: String,
}

/// A phone that answers: INVITE -> 180, 200 with its SDP (`rtp_port`);
/// the ACK; re-INVITEs (200 with the same SDP, each offer sent on
/// `offered`); then a BYE (200). Its offer is sent on `offered` after the
/// ACK.
fn answering_phone(sip: UdpSocket, rtp_port: u16, offered: mpsc::Sender<Offered>) {
    let local = sip.local_addr().expect("addr");
    let (inv, from) = recv_until(&sip, "the INVITE", |m| is_request(m, "INVITE"));
    let ringing = response(&inv, "180 Ringing", "p0tag", local, None);
    sip.send_to(ringing.as_bytes(), from).expect("send");
    // Long enough for the other phone's 180: its CANCEL goes at once.
    thread::sleep(Duration::from_millis(200));
    let ok = response(&inv, "200 OK", "p0tag", local, Some(&sdp(rtp_port)));
    sip.send_to(ok.as_bytes(), from).expect("send");
    recv_until(&sip, "the ACK", |m| is_request(m, "ACK"));
    let s = body(&inv).to_owned();
    let _ = offered.send(Offered { port: audio_port(&s), sdp: s });
    loop {
        let (req, from) = recv_until(&sip, "a re-INVITE or the BYE", |m| {
            is_request(m, "INVITE") || is_request(m, "BYE")
        });
        if is_request(&req, "BYE") {
            let ok = response(&req, "200 OK", "p0tag", local, None);
            sip.send_to(ok.as_bytes(), from).expect("send");
            return;
        }
        let ok = response(&req, "200 OK", "p0tag", local, Some(&sdp(rtp_port)));
        sip.send_to(ok.as_bytes(), from).expect("send");
        recv_until(&sip, "the re-INVITE's ACK", |m| is_request(m, "ACK"));
        let s = body(&req).to_owned();
        let _ = offered.send(Offered { port: audio_port(&s), sdp: s });
    }
}

/// A phone that plays early media until CANCELed: 183 with SDP (its
/// `rtp_port`), then 200 to the CANCEL and 487 to the INVITE, and the
/// 487's ACK. Its offer is sent on `offered`.
fn early_media_phone(sip: UdpSocket, rtp_port: u16, offered: mpsc::Sender<Offered>) {
    let local = sip.local_addr().expect("addr");
    let (inv, from) = recv_until(&sip, "the INVITE", |m| is_request(m, "INVITE"));
    let early = sdp(rtp_port);
    let ringing = response(&inv, "183 Session Progress", "p1tag", local, Some(&early));
    sip.send_to(ringing.as_bytes(), from).expect("send");
    let (cancel, from) = recv_until(&sip, "the CANCEL", |m| is_request(m, "CANCEL"));
    sip.send_to(response(&cancel, "200 OK", "p1tag", local, None).as_bytes(), from).expect("send");
    let terminated = response(&inv, "487 Request Terminated", "p1tag", local, None);
    sip.send_to(terminated.as_bytes(), from).expect("send");
    recv_until(&sip, "the 487's ACK", |m| is_request(m, "ACK"));
    let s = body(&inv).to_owned();
    let _ = offered.send(Offered { port: audio_port(&s), sdp: s });
}

/// `[media]` toward `rtpengine`, with short ng timeouts.
fn media_config(rtpengine: SocketAddr, on_failure: &str) -> String {
    format!(
        "[media]\nmode = \"rtpengine\"\nrtpengine = [\"{rtpengine}\"]\ntimeout_ms = 200\nretries = 1\n\
         on_failure = \"{on_failure}\"\n"
    )
}

/// Polls `f` until it is true; `false` when it is not within [`WAIT`].
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

fn in_range(port: u16, r: &Rtpengine) -> bool {
    (r.ports().0..=r.ports().1).contains(&port)
}

#[test]
fn a_forked_call_is_anchored_the_loser_deleted_and_nothing_left() {
    let rtpengine = Rtpengine::start().expect("rtpengine starts (bash tests/peers.sh)");
    let (p0, p1) = (udp(), udp());
    let dests = [
        ("sip", format!("sip:p0@{}", p0.local_addr().unwrap()), None),
        ("sip", format!("sip:p1@{}", p1.local_addr().unwrap()), None),
    ];
    let groups = fork::group("800", "ring_all", &dests);
    let config = fork::trusted(&groups) + &media_config(rtpengine.ng_addr(), "reject");
    let server = Server::start_with(&config);
    let (caller_rtp, p0_rtp, p1_rtp) = (udp(), udp(), udp());
    let (tx0, rx0) = mpsc::channel();
    let (tx1, rx1) = mpsc::channel();
    let (p0_port, p1_port) = (port_of(&p0_rtp), port_of(&p1_rtp));
    let answering = thread::spawn(move || answering_phone(p0, p0_port, tx0));
    let ringing = thread::spawn(move || early_media_phone(p1, p1_port, tx1));

    let mut caller = Caller::new(server.udp, "media-fork-1@test");
    let ok = caller.invite(&sdp(port_of(&caller_rtp)));
    assert!(is_status(&ok, 200), "{ok}");
    // The caller is answered with rtpengine's address, not the phone's.
    let to_caller = body(&ok);
    let caller_sends_to = audio_port(to_caller);
    let first_answer = caller_sends_to;
    assert!(in_range(caller_sends_to, &rtpengine), "rtpengine's port: {to_caller}");
    assert_ne!(caller_sends_to, p0_port, "the caller never sees the phone's port");
    // p1's early media reached the caller answered by rtpengine too.
    assert_eq!(caller.early.len(), 1, "one 183 with SDP");
    assert!(in_range(audio_port(&caller.early[0]), &rtpengine), "{}", caller.early[0]);
    assert_ne!(audio_port(&caller.early[0]), p1_port);
    // Each phone was offered rtpengine's address and its own ports.
    let offered0 = rx0.recv_timeout(WAIT).expect("p0's offer");
    let offered1 = rx1.recv_timeout(WAIT).expect("p1's offer");
    for o in [&offered0, &offered1] {
        assert!(in_range(o.port, &rtpengine), "rtpengine's port: {}", o.sdp);
        assert!(o.sdp.contains("c=IN IP4 127.0.0.1"), "{}", o.sdp);
        assert_ne!(o.port, port_of(&caller_rtp), "a phone never sees the caller's port");
    }
    assert_ne!(offered0.port, offered1.port, "each leg has its own ports");
    ringing.join().expect("the ringing phone");

    // RTP flows both ways through rtpengine.
    assert_eq!(relay(&caller_rtp, caller_sends_to, &p0_rtp, 5), 5, "caller -> p0");
    assert_eq!(relay(&p0_rtp, offered0.port, &caller_rtp, 5), 5, "p0 -> caller");

    // The loser's branch is gone (its ports released), the winner's media
    // still flows.
    let mut ng = NgDriver::new(&[rtpengine.ng_addr()]).expect("ng driver");
    let mut last = String::new();
    let deleted = wait_for(|| {
        let q = ng.query(&caller.call_id);
        last = format!("{:#?}", q.tags);
        // rtpengine keeps a deleted branch's entry, without its ports.
        let ports: Vec<u16> = q
            .tags
            .iter()
            .flat_map(|t| &t.medias)
            .flat_map(|m| &m.streams)
            .filter_map(|s| s.local_port)
            .collect();
        !ports.contains(&offered1.port)
            && ports.contains(&offered0.port)
            && q.tags.iter().any(|t| t.tag == "p0tag")
    });
    assert!(deleted, "the losing branch deleted: {last}\n{}", rtpengine.log());
    assert_eq!(relay(&caller_rtp, caller_sends_to, &p0_rtp, 3), 3, "after the loser's delete");
    let q = ng.query(&caller.call_id);
    assert_eq!(q.rtp.packets, 13, "{q:?}");

    // The caller moves its media (a re-INVITE): the phone is offered
    // rtpengine's port again, the caller gets rtpengine's answer, and RTP
    // flows from the new port.
    let moved = udp();
    let ok = caller.reinvite(2, &sdp(port_of(&moved)));
    assert!(is_status(&ok, 200), "{ok}");
    let reoffered = rx0.recv_timeout(WAIT).expect("p0's re-INVITE");
    assert!(in_range(reoffered.port, &rtpengine), "{}", reoffered.sdp);
    assert_ne!(reoffered.port, port_of(&moved), "the phone never sees the caller's port");
    let caller_sends_to = audio_port(body(&ok));
    assert!(in_range(caller_sends_to, &rtpengine), "{ok}");
    assert_eq!(relay(&moved, caller_sends_to, &p0_rtp, 3), 3, "caller (moved) -> p0");
    assert_eq!(relay(&p0_rtp, reoffered.port, &moved, 3), 3, "p0 -> caller (moved)");

    // The hangup; then rtpengine holds nothing of ours.
    assert_eq!(caller.bye(3), 200);
    answering.join().expect("the answering phone");
    let empty = wait_for(|| ng.list(media_anchor::InstanceId(0)).is_empty());
    assert!(empty, "the call deleted at rtpengine: {}", rtpengine.log());
    // The legs' call records name the rtpengine and the address each got.
    let (_root, calls) = common::finished_groupcall(&server);
    let legs: Vec<_> =
        calls.iter().filter(|c| c.direction == records::Direction::Outgoing).collect();
    let mut addresses: Vec<&str> = legs.iter().map(|c| c.media_address.as_str()).collect();
    addresses.sort_unstable();
    let mut offered = [offered0.port, offered1.port].map(|p| format!("{LOOPBACK}:{p}"));
    offered.sort_unstable();
    assert_eq!(addresses, offered, "{legs:?}");
    for c in &legs {
        assert_eq!(c.media_anchor, rtpengine.ng_addr().to_string(), "{c:?}");
    }
    // And the caller's record the address the caller was answered with
    // (the first answer's; the re-INVITE's is another port).
    let api = common::http::Api::new(server.http, fork::KEY);
    let all = api.get_ok("/v1.0/calls?page_size=100");
    let inbound =
        all["result"].as_array().and_then(|r| r.iter().find(|c| c["direction"] == "incoming"));
    let inbound = inbound.unwrap_or_else(|| panic!("the caller's record in {all}"));
    assert_eq!(inbound["media_anchor"], rtpengine.ng_addr().to_string(), "{inbound}");
    assert_eq!(inbound["media_address"], format!("{LOOPBACK}:{first_answer}"), "{inbound}");
    assert_eq!(relay(&moved, caller_sends_to, &p0_rtp, 1), 0, "no relay after the call");
    // What the operator sees: every request by command and result.
    let metrics = api.get("/metrics").body;
    for line in [
        "media_ng_requests_total{command=\"offer\",result=\"ok\"} 3",
        "media_ng_requests_total{command=\"answer\",result=\"ok\"} 3",
        "media_ng_requests_total{command=\"delete\",result=\"ok\"} 2",
        "media_rtpengine_up 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    drop(server);
}

#[test]
fn rtpengine_going_away_costs_no_call_and_new_calls_get_on_failure() {
    let mut rtpengine = Rtpengine::start().expect("rtpengine starts (bash tests/peers.sh)");
    let p0 = udp();
    let p0_addr = p0.local_addr().unwrap();
    let groups = fork::group("800", "ring_all", &[("sip", format!("sip:p0@{p0_addr}"), None)]);
    let config = fork::trusted(&groups) + &media_config(rtpengine.ng_addr(), "reject");
    let mut server = Server::start_with(&config);
    let (tx0, rx0) = mpsc::channel();
    let answering = thread::spawn(move || answering_phone(p0, 4000, tx0));
    let mut caller = Caller::new(server.udp, "media-outage-1@test");
    let ok = caller.invite(&sdp(4002));
    assert!(is_status(&ok, 200), "{ok}");
    assert!(in_range(audio_port(body(&ok)), &rtpengine), "{ok}");
    rx0.recv_timeout(WAIT).expect("p0 answered");

    rtpengine.kill();
    // A new call: no rtpengine answers its offer; `reject` gives 503.
    let mut second = Caller::new(server.udp, "media-outage-2@test");
    let started = Instant::now();
    let fin = second.invite(&sdp(4004));
    assert!(is_status(&fin, 503), "{fin}");
    assert!(started.elapsed() < Duration::from_secs(5), "within the ng timeouts");
    // The operator is told, once, on a WARN line naming the instance.
    let down = server.wait_log(
        |v| v["message"] == "rtpengine stopped answering: marked down",
        WAIT,
        |_, _| {},
    );
    assert_eq!(down["level"], "WARN", "{down}");
    assert_eq!(down["rtpengine"], rtpengine.ng_addr().to_string(), "{down}");
    // The established call is not torn down: its BYE still goes end to end.
    assert_eq!(caller.bye(2), 200);
    answering.join().expect("the answering phone got the BYE");
    drop(server);
}
