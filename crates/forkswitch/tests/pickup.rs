//! Call pickup through the real binary: ring group 800 rings two
//! registered SIPp phones (test12 and test13); a third SIPp phone,
//! authenticated as an extension, dials the group pickup code `*8` or the
//! directed pickup code `**test12` and is connected to the caller; both
//! ringing phones get CANCEL with `Reason: SIP;cause=200;text="Call
//! completed elsewhere"` (checked by their scenario), and the records say
//! who answered. Nothing ringing: 480 at once. A pickup that races the
//! member's own answer (raw-socket phones) has exactly one winner.

mod common;

use common::*;
use records::{AddressType, CallStatus};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// The caller's trusted carrier source: a second loopback address, so that
/// phones on 127.0.0.1 authenticate as extensions.
const CARRIER_IP: &str = "127.0.0.2";

fn config() -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"pstn\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"{CARRIER_IP}/32\"]\ninbound_domain = \"test\"\n\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [[extensions]]\nname = \"test13\"\ndomain = \"test\"\npassword = \"pw13\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[groups]]\nnumber = \"800\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
         destinations = [{{ type = \"endpoint\", target = \"test12@test\" }}, {{ type = \"endpoint\", target = \"test13@test\" }}]\n"
    )
}

/// A SIPp phone registered as `user` (password `pw`) playing `scenario`.
fn member(server: &Server, user: &str, pw: &str, scenario: &str) -> Phone {
    let register = |sock: &UdpSocket| {
        let resp = register_from(sock, server.udp, user, pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    };
    let unregister = |_lost_port| unregister_all(server.udp, user, pw);
    Phone::start_announced(server.dir.path(), scenario, &[], None, register, unregister)
}

/// A SIPp caller from the carrier's address dialing 800 (`scenario`).
fn call_800(server: &Server, scenario: &str) -> ports::PortChild {
    let args: Vec<String> = [
        "-sf",
        &common::scenario(scenario),
        &server.udp.to_string(),
        "-s",
        "800",
        "-m",
        "1",
        "-i",
        CARRIER_IP,
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    start_sipp(server.dir.path(), &args)
}

/// test13's phone dials `code` (SIPp `scenario`, digest as test13).
fn dial_code(server: &Server, code: &str, scenario: &str) {
    let args = ["-set", "ext", "test13", "-set", "domain", "test", "-au", "test13", "-ap", "pw13"];
    caller(server.dir.path(), server.udp, code, scenario, &args);
}

/// Waits (bounded) until a leg of the call rings each of `aors`.
fn await_ringing(server: &Server, aors: &[&str]) {
    for aor in aors {
        await_call(server, &format!("{aor} ringing"), |c| {
            c.status == CallStatus::Ringing && c.destination.target == *aor
        });
    }
}

/// The finished groupcall of 800 and its legs: the answer was the pickup
/// leg toward `picker`, and every member leg was cancelled.
fn answered_by_pickup(server: &Server, picker: &str) {
    let (root, legs) = finished_root(server, &["test12@test", "test13@test"]);
    let answer = legs.iter().find(|c| c.id == root.answer_call_id).expect("the answer's record");
    assert_eq!(answer.destination.kind, AddressType::Endpoint);
    assert_eq!(answer.destination.target, picker, "{legs:#?}");
    assert!(!answer.tm_progressing.is_not_yet(), "{answer:#?}");
    let answered = legs.iter().filter(|c| !c.tm_progressing.is_not_yet()).count();
    assert_eq!(answered, 1, "one answer: {legs:#?}");
    let cancelled = legs
        .iter()
        .filter(|c| c.id != answer.id && c.hangup_reason == records::HangupReason::Cancel)
        .count();
    assert_eq!(cancelled, 2, "both members' legs cancelled: {legs:#?}");
}

#[test]
fn group_and_directed_pickup_answer_the_caller_and_cancel_the_members() {
    let server = Server::start_with(&config());
    for code in ["*8", "**test12"] {
        let a = member(&server, "test12", "pw12", "uas_ring_cancel_reason.xml");
        let b = member(&server, "test13", "pw13", "uas_ring_cancel_reason.xml");
        let mut caller = call_800(&server, "uac_wait_bye.xml");
        await_ringing(&server, &["test12@test", "test13@test"]);
        dial_code(&server, code, "uac_auth.xml");
        let st = caller.wait_for(Duration::from_secs(20)).expect("the caller finishes");
        assert!(st.success(), "caller: {st:?} {}", caller.stderr());
        a.assert_ok();
        b.assert_ok();
        answered_by_pickup(&server, "test13@test");
        // Phones re-register on fresh ports for the next round.
        unregister_all(server.udp, "test12", "pw12");
        unregister_all(server.udp, "test13", "pw13");
    }
    // Nothing ringing: 480 at once.
    dial_code(&server, "*8", "uac_auth_480.xml");
    dial_code(&server, "**test12", "uac_auth_480.xml");
    let metrics = http::Api::new(server.http, "none").get("/metrics");
    assert!(metrics.body.contains("forkswitch_call_pickups_total 2"), "{}", metrics.body);
}

/// A raw-socket phone: one UDP socket, messages in and out as text.
struct RawPhone {
    sock: UdpSocket,
    server: SocketAddr,
}

impl RawPhone {
    fn registered(server: SocketAddr, user: &str, pw: &str) -> RawPhone {
        let sock = ports::udp_peer();
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let resp = register_from(&sock, server, user, pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
        RawPhone { sock, server }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).expect("send");
    }

    /// The next message that is not a 100 Trying.
    fn recv(&self) -> String {
        loop {
            let m = String::from_utf8_lossy(&recv(&self.sock)).into_owned();
            if !m.starts_with("SIP/2.0 100") {
                return m;
            }
        }
    }

    /// The next request with `method` (others, and retransmissions, are
    /// skipped).
    fn recv_request(&self, method: &str) -> String {
        loop {
            let m = self.recv();
            if m.starts_with(&format!("{method} ")) {
                return m;
            }
        }
    }

    /// The next final response to a `method` request (retransmitted
    /// responses to others are skipped).
    fn recv_final(&self, method: &str) -> String {
        loop {
            let m = self.recv();
            let final_ = m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1");
            if final_ && header(&m, "CSeq").ends_with(method) {
                return m;
            }
        }
    }

    /// Answers `req` from this phone.
    fn reply(&self, req: &str, code: &str, sdp: bool) {
        self.send(&response(req, self.addr(), code, "m1", sdp));
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

/// A response to `req` from `at` with the headers it must copy, our To
/// tag `tag`, and an SDP body when `sdp`.
fn response(req: &str, at: SocketAddr, code: &str, tag: &str, sdp: bool) -> String {
    let vias: Vec<&str> = req.split("\r\n").filter(|l| l.starts_with("Via:")).collect();
    let to = header(req, "To");
    let to = if to.contains("tag=") { to.to_owned() } else { format!("{to};tag={tag}") };
    let body = if sdp {
        "v=0\r\no=m 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"
    } else {
        ""
    };
    let ctype = if sdp { "Content-Type: application/sdp\r\n" } else { "" };
    format!(
        "SIP/2.0 {code}\r\n{}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:m@{at}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        vias.join("\r\n"),
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

/// An INVITE with an SDP offer (media port 40006 for the caller, 40004 for
/// anyone else).
fn sdp_invite(ruri: &str, from: &str, local: SocketAddr, call_id: &str, extra: &str) -> String {
    let port = if call_id == "race-caller" { 40006 } else { 40004 };
    let body = format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n");
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{n};rport\r\nMax-Forwards: 70\r\nFrom: {from};tag=t{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: {n} INVITE\r\nContact: <sip:p@{local}>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        n = if extra.contains("Proxy-Authorization") { 2 } else { 1 },
    )
}

/// test13 dials `*8` from a raw socket: the 407 is answered and ACKed;
/// returns the INVITE with credentials, not sent.
fn pickup_invite(picker: &RawPhone, server: SocketAddr, call_id: &str) -> String {
    authorized_invite(picker, server, call_id, ("*8", ""))
}

/// test13's INVITE to `user` with `header` (a whole line, or none) from a
/// raw socket: the 407 is answered and ACKed; returns the INVITE with
/// credentials, not sent.
fn authorized_invite(
    picker: &RawPhone,
    server: SocketAddr,
    call_id: &str,
    (user, header_line): (&str, &str),
) -> String {
    let ruri = format!("sip:{user}@{server}");
    let from = "<sip:test13@test>";
    let local = picker.addr();
    picker.send(&sdp_invite(&ruri, from, local, call_id, header_line));
    let challenge = picker.recv();
    assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
    picker.send(&format!(
        "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}1;rport\r\nMax-Forwards: 70\r\nFrom: {from};tag=t{call_id}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&challenge, "To")
    ));
    let www = header(&challenge, "Proxy-Authenticate");
    let nonce = www.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let auth = digest_answer("test13", "pw13", "INVITE", &ruri, nonce);
    let extra = format!("{header_line}Proxy-Authorization: {auth}\r\n");
    sdp_invite(&ruri, from, local, call_id, &extra)
}

/// Sends `method` (CSeq `seq`) in the dialog a 2xx `ok` to our INVITE
/// with Call-ID `call_id` made (our From tag is `t<call_id>`).
fn in_dialog(phone: &RawPhone, ok: &str, method: &str, call_id: &str, seq: u32) {
    let to = header(ok, "To");
    let target = header(ok, "Contact").trim_matches(|c| c == '<' || c == '>');
    let local = phone.addr();
    phone.send(&format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{call_id}{seq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:p@test>;tag=t{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    ));
}

/// The caller, a raw socket on the carrier's address, dials 800.
fn raw_caller(server: SocketAddr) -> RawPhone {
    let sock = UdpSocket::bind((CARRIER_IP, 0)).expect("bind 127.0.0.2");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let caller = RawPhone { sock, server };
    let ruri = format!("sip:800@{server}");
    caller.send(&sdp_invite(&ruri, "<sip:+15550001111@pstn>", caller.addr(), "race-caller", ""));
    caller
}

#[test]
fn a_pickup_racing_the_members_answer_has_exactly_one_winner() {
    let server = Server::start_with(&config());
    for round in 0..4 {
        let member = RawPhone::registered(server.udp, "test12", "pw12");
        let picker = ports::udp_peer();
        picker.set_read_timeout(Some(WAIT)).expect("timeout");
        let picker = RawPhone { sock: picker, server: server.udp };
        let caller = raw_caller(server.udp);
        let invite = member.recv_request("INVITE");
        member.reply(&invite, "180 Ringing", false);
        let pickup = pickup_invite(&picker, server.udp, &format!("race-{round}"));
        // The member's 200 and the pickup leave together, in either order.
        let answer = response(&invite, member.addr(), "200 OK", "m1", true);
        if round % 2 == 0 {
            member.send(&answer);
            picker.send(&pickup);
        } else {
            picker.send(&pickup);
            member.send(&answer);
        }
        let picked = picker.recv_final("INVITE");
        let pickup_won = picked.starts_with("SIP/2.0 200");
        assert!(pickup_won || picked.starts_with("SIP/2.0 480"), "{picked}");
        if pickup_won {
            assert!(picked.contains("m=audio 40006 "), "the caller's SDP: {picked}");
        }
        // The member's 200 is ACKed either way; when the pickup won, a BYE
        // follows (a double answer).
        member.recv_request("ACK");
        let ok = caller.recv_final("INVITE");
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let port = if pickup_won { "40004" } else { "40002" };
        assert!(ok.contains(&format!("m=audio {port} ")), "the winner's SDP: {ok}");
        if pickup_won {
            let bye = member.recv_request("BYE");
            member.reply(&bye, "200 OK", false);
            in_dialog(&picker, &picked, "ACK", &format!("race-{round}"), 2);
        }
        // The caller ACKs and hangs up; whoever is on the call gets the BYE.
        in_dialog(&caller, &ok, "ACK", "race-caller", 1);
        in_dialog(&caller, &ok, "BYE", "race-caller", 2);
        let winner = if pickup_won { &picker } else { &member };
        let bye = winner.recv_request("BYE");
        winner.reply(&bye, "200 OK", false);
        let bye_ok = caller.recv_final("BYE");
        assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
        let (root, legs) = finished_roots(&server, &["test12@test", "test13@test"], round + 1)
            .pop()
            .expect("this round's groupcall");
        let answered: Vec<_> = legs.iter().filter(|c| !c.tm_progressing.is_not_yet()).collect();
        assert_eq!(answered.len(), 1, "exactly one answer: {legs:#?}");
        assert_eq!(answered[0].id, root.answer_call_id);
        let by = if pickup_won { "test13@test" } else { "test12@test" };
        assert_eq!(answered[0].destination.target, by, "{legs:#?}");
        unregister_all(server.udp, "test12", "pw12");
    }
}

#[test]
fn pickup_by_replaces_takes_the_early_dialog_it_names() {
    let server = Server::start_with(&config());
    let member = RawPhone::registered(server.udp, "test12", "pw12");
    let picker = ports::udp_peer();
    picker.set_read_timeout(Some(WAIT)).expect("timeout");
    let picker = RawPhone { sock: picker, server: server.udp };
    let caller = raw_caller(server.udp);
    let invite = member.recv_request("INVITE");
    member.reply(&invite, "180 Ringing", false);
    // What the member's busy lamp watcher was shown: the leg's Call-ID,
    // the switch's tag and the phone's.
    let leg_call_id = header(&invite, "Call-ID");
    let our_tag = header(&invite, "From").split("tag=").nth(1).expect("tag");
    // A Replaces that names no dialog: 481.
    let stale = format!("Replaces: {leg_call_id};to-tag=nope;from-tag=m1\r\n");
    let invite481 = authorized_invite(&picker, server.udp, "rep-1", ("test12", &stale));
    picker.send(&invite481);
    let refused = picker.recv_final("INVITE");
    assert!(refused.starts_with("SIP/2.0 481"), "{refused}");
    // The BLF key's INVITE: to the watched extension, Replaces its dialog.
    let replaces = format!("Replaces: {leg_call_id};to-tag={our_tag};from-tag=m1;early-only\r\n");
    let pick = authorized_invite(&picker, server.udp, "rep-2", ("test12", &replaces));
    picker.send(&pick);
    let picked = picker.recv_final("INVITE");
    assert!(picked.starts_with("SIP/2.0 200"), "{picked}");
    assert!(picked.contains("m=audio 40006 "), "the caller's SDP: {picked}");
    let cancel = member.recv_request("CANCEL");
    assert!(cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""), "{cancel}");
    member.reply(&cancel, "200 OK", false);
    member.reply(&invite, "487 Request Terminated", false);
    let ok = caller.recv_final("INVITE");
    assert!(ok.contains("m=audio 40004 "), "the picker's SDP: {ok}");
    in_dialog(&caller, &ok, "ACK", "race-caller", 1);
    in_dialog(&picker, &picked, "ACK", "rep-2", 2);
    in_dialog(&picker, &picked, "BYE", "rep-2", 3);
    let bye = caller.recv_request("BYE");
    caller.reply(&bye, "200 OK", false);
    let (root, legs) = finished_root(&server, &["test12@test", "test13@test"]);
    let answer = legs.iter().find(|c| c.id == root.answer_call_id).expect("answer");
    assert_eq!(answer.destination.target, "test13@test", "{legs:#?}");
}
