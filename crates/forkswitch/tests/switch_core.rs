//! Bugs of the old glue between the crates, fixed by the switch core, each
//! driven through the real binary with raw UDP/TCP user agents (so that
//! every message on the wire can be looked at):
//! - a leg's call record carries that leg's own SIP Call-ID;
//! - a send failure (a refused TCP connection to a carrier) fails over to
//!   the next carrier at once, not after Timer B;
//! - a closed TCP connection makes the bindings registered over it
//!   unreachable: a call to that phone fails at once with 480;
//! - one list of methods: every Allow header is the same, and MESSAGE gets
//!   501 inside a dialog as well as outside.

mod common;

use bytes::Bytes;
use common::*;
use sip_message::{HeaderName, Message, Method};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const SDP: &str =
    "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

fn tenant() -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n"
    )
}

/// 127.0.0.1 is a trusted carrier source: raw callers need no digest.
fn trusted() -> String {
    format!(
        "{}[[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n",
        tenant()
    )
}

fn parse(bytes: Vec<u8>) -> Message {
    Message::parse(Bytes::from(bytes)).expect("the switch sent a valid SIP message")
}

/// The next message on `sock` that is not a 100 Trying.
fn next(sock: &UdpSocket) -> Message {
    loop {
        let m = parse(recv(sock));
        if m.status() != Some(100) {
            return m;
        }
    }
}

fn header(m: &Message, h: HeaderName) -> String {
    m.header(h).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

/// An INVITE (with SDP) from `sock` to `ruri`, sent to `server`.
fn invite(sock: &UdpSocket, server: SocketAddr, ruri: &str, call_id: &str, cseq: u32, extra: &str) {
    let local = sock.local_addr().expect("addr");
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@test>;tag=rawcaller\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:caller@{local}>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    sock.send_to(text.as_bytes(), server).expect("send");
}

/// The ACK for a non-2xx final response to our INVITE (same branch).
fn ack_failure(sock: &UdpSocket, server: SocketAddr, resp: &Message, ruri: &str) {
    let local = sock.local_addr().expect("addr");
    let via = header(resp, HeaderName::Via);
    let text = format!(
        "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContact: <sip:caller@{local}>\r\nContent-Length: 0\r\n\r\n",
        header(resp, HeaderName::From),
        header(resp, HeaderName::To),
        header(resp, HeaderName::CallId),
        resp.cseq().expect("cseq").seq,
    );
    sock.send_to(text.as_bytes(), server).expect("send");
}

/// A phone's answer to `req` with `code` (SDP and Contact on a 2xx).
fn answer(sock: &UdpSocket, to: SocketAddr, req: &Message, code: u16) {
    let local = sock.local_addr().expect("addr");
    let mut b = Message::response_to(req, code).to_tag("rawphone");
    if (200..300).contains(&code) {
        b = b
            .header(HeaderName::Contact, format!("<sip:phone@{local}>"))
            .body("application/sdp", SDP.to_owned());
    }
    sock.send_to(&b.build().to_bytes(), to).expect("send");
}

#[test]
fn leg_records_carry_their_own_sip_call_id() {
    let phones = [udp_client(), udp_client()];
    let dests: Vec<String> = phones
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!("{{ type = \"sip\", target = \"sip:p{i}@{}\" }}", p.local_addr().expect("addr"))
        })
        .collect();
    let cfg = format!(
        "{}[[groups]]\nnumber = \"820\"\ndomain = \"test\"\nring_method = \"ring_all\"\ndestinations = [{}]\n",
        trusted(),
        dests.join(", ")
    );
    let server = Server::start_with(&cfg);
    let caller = udp_client();
    let ruri = format!("sip:820@{}", server.udp);
    invite(&caller, server.udp, &ruri, "caller-cid-1", 1, "");
    // Both phones are busy: each leg's INVITE is answered 486.
    let mut wire_ids = Vec::new();
    for p in &phones {
        let inv = next(p);
        assert_eq!(inv.method(), Some(&Method::Invite));
        wire_ids.push(header(&inv, HeaderName::CallId));
        answer(p, server.udp, &inv, 486);
    }
    let resp = next(&caller);
    assert_eq!(resp.status(), Some(486));
    ack_failure(&caller, server.udp, &resp, &ruri);
    let (_, calls) = finished_groupcall(&server);
    assert_eq!(calls.len(), 2);
    let mut recorded: Vec<String> = calls.iter().map(|c| c.sip_call_id.clone()).collect();
    recorded.sort();
    wire_ids.sort();
    assert_eq!(recorded, wire_ids, "each leg's record names the Call-ID its INVITE carried");
    assert!(wire_ids.iter().all(|id| !id.is_empty() && id != "caller-cid-1"));
}

#[test]
fn refused_tcp_connection_to_a_carrier_fails_over_at_once() {
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let second = udp_client();
    let cfg = format!(
        "{}[[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[carriers]]\nname = \"first\"\naddress = \"127.0.0.1:{closed_port}\"\ntransport = \"tcp\"\n\
         [[carriers]]\nname = \"second\"\naddress = \"{}\"\n\
         [[routes]]\nprefix = \"+1\"\ncarriers = [\"first\", \"second\"]\n",
        tenant(),
        second.local_addr().expect("addr")
    );
    let server = Server::start_with(&cfg);
    let caller = udp_client();
    let ruri = format!("sip:+15551234567@{}", server.udp);
    invite(&caller, server.udp, &ruri, "failover-1", 1, "");
    let challenge = next(&caller);
    assert_eq!(challenge.status(), Some(407));
    ack_failure(&caller, server.udp, &challenge, &ruri);
    let www = header(&challenge, HeaderName::ProxyAuthenticate);
    let nonce = www.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let auth = format!(
        "Proxy-Authorization: {}\r\n",
        digest_answer("test12", "pw12", "INVITE", &ruri, nonce)
    );
    // The From of our INVITE names test12 for the switch to accept the
    // credentials.
    let local = caller.local_addr().expect("addr");
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKfailover2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:test12@test>;tag=rawcaller\r\nTo: <{ruri}>\r\nCall-ID: failover-1\r\nCSeq: 2 INVITE\r\nContact: <sip:test12@{local}>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let sent = Instant::now();
    caller.send_to(text.as_bytes(), server.udp).expect("send");
    let inv = next(&second);
    let waited = sent.elapsed();
    assert_eq!(inv.method(), Some(&Method::Invite));
    assert!(
        waited < Duration::from_secs(1),
        "the second carrier's INVITE came {waited:?} after the call (Timer B would be 32 s)"
    );
    answer(&second, server.udp, &inv, 486);
    let resp = next(&caller);
    assert_eq!(resp.status(), Some(486));
    ack_failure(&caller, server.udp, &resp, &ruri);
    // The failover is a hunt of the fork: a linear child over the carriers,
    // with one call record per carrier tried.
    let (root, calls) = finished_groupcall(&server);
    assert_eq!(root.groupcall_ids.len(), 1, "{root:?}");
    assert!(calls.is_empty(), "the root dials no leg itself: {calls:?}");
    let db = common::db(&server);
    let child = db.groupcall(root.groupcall_ids[0]).expect("read").expect("child");
    assert_eq!(child.ring_method, records::RingMethod::Linear);
    assert_eq!(child.call_ids.len(), 2, "one call per carrier tried: {child:?}");
    let last = db.call(child.call_ids[1]).expect("read").expect("call");
    assert_eq!(last.hangup_reason, records::HangupReason::Busy, "{last:?}");
    assert_eq!(last.sip_call_id, header(&inv, HeaderName::CallId));
}

#[test]
fn closed_tcp_connection_makes_its_bindings_unreachable() {
    let cfg = format!(
        "{}[[extensions]]\nname = \"t1\"\ndomain = \"test\"\npassword = \"pw-t1\"\n[registrar]\nalgorithms = [\"MD5\"]\n\
         [[groups]]\nnumber = \"816\"\ndomain = \"test\"\ndestinations = [{{ type = \"endpoint\", target = \"t1@test\" }}]\n",
        trusted()
    );
    let mut server = Server::start_with(&cfg);
    let mut conn = tcp_client(server.tcp);
    let mut pending = Vec::new();
    register_over_tcp(&mut conn, &mut pending, server.tcp, "t1", "pw-t1");
    // The phone goes away: its connection closes.
    drop(conn);
    server.wait_log(
        |v| v["message"] == "connection closed: its bindings are unreachable" && v["count"] == 1,
        WAIT,
        |_, _| {},
    );
    let caller = udp_client();
    let ruri = format!("sip:816@{}", server.udp);
    let sent = Instant::now();
    invite(&caller, server.udp, &ruri, "closed-1", 1, "");
    let resp = next(&caller);
    assert_eq!(resp.status(), Some(480), "{resp:?}");
    assert!(sent.elapsed() < Duration::from_secs(1), "480 at once, not after a timeout");
    ack_failure(&caller, server.udp, &resp, &ruri);
}

#[test]
fn one_list_of_methods_in_every_allow_and_message_is_501_in_a_dialog() {
    let phone = udp_client();
    let cfg = format!(
        "{}[[groups]]\nnumber = \"821\"\ndomain = \"test\"\ndestinations = [{{ type = \"sip\", target = \"sip:p@{}\" }}]\n",
        trusted(),
        phone.local_addr().expect("addr")
    );
    let server = Server::start_with(&cfg);
    let caller = udp_client();
    let local = caller.local_addr().expect("addr");
    // OPTIONS to the switch.
    caller
        .send_to(options(local, server.udp, "UDP", "allow-opt").as_bytes(), server.udp)
        .expect("send");
    let opt = next(&caller);
    assert_eq!(opt.status(), Some(200));
    let allow = header(&opt, HeaderName::Allow);
    assert!(!allow.is_empty());
    // An unknown method outside any dialog: 501 with the same Allow.
    let foo = format!(
        "FOO sip:x@{} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKfoo1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@test>;tag=f\r\nTo: <sip:x@test>\r\nCall-ID: allow-foo\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n",
        server.udp
    );
    caller.send_to(foo.as_bytes(), server.udp).expect("send");
    let r = next(&caller);
    assert_eq!(r.status(), Some(501));
    assert_eq!(header(&r, HeaderName::Allow), allow);
    // A call: the phone's INVITE and the caller's 200 carry the same Allow.
    let ruri = format!("sip:821@{}", server.udp);
    invite(&caller, server.udp, &ruri, "allow-call", 1, "");
    let inv = next(&phone);
    assert_eq!(header(&inv, HeaderName::Allow), allow, "the leg's INVITE");
    answer(&phone, server.udp, &inv, 200);
    let ok = next(&caller);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(header(&ok, HeaderName::Allow), allow, "the caller's 200");
    let to = header(&ok, HeaderName::To);
    let target = ok
        .contacts()
        .ok()
        .and_then(|c| c.list().first().map(|na| String::from_utf8_lossy(na.uri.raw).into_owned()))
        .expect("contact");
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@test>;tag=rawcaller\r\nTo: {to}\r\nCall-ID: allow-call\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    caller.send_to(in_dialog("ACK", 1, "ack1").as_bytes(), server.udp).expect("send");
    let leg_ack = next(&phone);
    assert_eq!(leg_ack.method(), Some(&Method::Ack));
    // MESSAGE inside the dialog: 501, as outside (the switch does not
    // relay what it does not list).
    caller.send_to(in_dialog("MESSAGE", 2, "msg2").as_bytes(), server.udp).expect("send");
    let r = next(&caller);
    assert_eq!(r.status(), Some(501));
    assert_eq!(header(&r, HeaderName::Allow), allow);
    // Hang up.
    caller.send_to(in_dialog("BYE", 3, "bye3").as_bytes(), server.udp).expect("send");
    let bye = next(&phone);
    assert_eq!(bye.method(), Some(&Method::Bye));
    let ok_bye = Message::response_to(&bye, 200).build();
    phone.send_to(&ok_bye.to_bytes(), server.udp).expect("send");
    let r = next(&caller);
    assert_eq!(r.status(), Some(200));
}
