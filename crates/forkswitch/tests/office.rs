//! Ring groups as office users live with them, through the real binary.
//!
//! Call pickup: ring group 800 rings two
//! registered SIPp phones (test12 and test13); a third SIPp phone,
//! authenticated as an extension, dials the group pickup code `*8` or the
//! directed pickup code `**test12` and is connected to the caller; both
//! ringing phones get CANCEL with `Reason: SIP;cause=200;text="Call
//! completed elsewhere"` (checked by their scenario), and the records say
//! who answered. Nothing ringing: 480 at once. A pickup that races the
//! member's own answer (raw-socket phones) has exactly one winner; a
//! `Replaces` naming the ringing early dialog picks it up too.
//!
//! Busy lamps: a phone subscribes to the `dialog` package of an extension
//! and of a ring group and gets a NOTIFY for each step of a call (trying,
//! early with the caller, confirmed, terminated), every body valid against
//! RFC 4235's schema (`xmllint`), versions increasing; its subscriptions end
//! when it unregisters.

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
         destinations = [{{ type = \"endpoint\", target = \"test12@test\" }}, {{ type = \"endpoint\", target = \"test13@test\" }}]\n\
         [[groups]]\nnumber = \"801\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
         destinations = [{{ type = \"endpoint\", target = \"test12@test\" }}]\n"
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
    /// A phone on a fresh socket that never registers.
    fn unregistered(server: SocketAddr) -> RawPhone {
        let sock = ports::udp_peer();
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        RawPhone { sock, server }
    }

    /// A phone registered as `user` (password `pw`) from its socket.
    fn registered(server: SocketAddr, user: &str, pw: &str) -> RawPhone {
        let phone = RawPhone::unregistered(server);
        let resp = register_from(&phone.sock, server, user, pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
        phone
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

/// The nonce of a digest challenge.
fn nonce_of(challenge: &str) -> &str {
    challenge.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce")
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
    let nonce = nonce_of(www);
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
    raw_caller_to(server, "800")
}

/// The caller, a raw socket on the carrier's address, dials `number`.
fn raw_caller_to(server: SocketAddr, number: &str) -> RawPhone {
    let sock = UdpSocket::bind((CARRIER_IP, 0)).expect("bind 127.0.0.2");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let caller = RawPhone { sock, server };
    let ruri = format!("sip:{number}@{server}");
    caller.send(&sdp_invite(&ruri, "<sip:+15550001111@pstn>", caller.addr(), "race-caller", ""));
    caller
}

#[test]
fn a_pickup_racing_the_members_answer_has_exactly_one_winner() {
    let server = Server::start_with(&config());
    for round in 0..4 {
        let member = RawPhone::registered(server.udp, "test12", "pw12");
        let picker = RawPhone::unregistered(server.udp);
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
    let picker = RawPhone::unregistered(server.udp);
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

/// RFC 4235's schema, kept beside the crate that writes the documents.
fn dialog_info_xsd() -> std::path::PathBuf {
    repo_root().join("crates/pbx-features/tests/data/dialog-info.xsd")
}

/// Every document valid against RFC 4235's schema (`xmllint`).
fn assert_valid_dialog_info(docs: &[String]) {
    let dir = tempfile::tempdir().expect("dir");
    let files: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.path().join(format!("{i:02}.xml"));
            std::fs::write(&p, d).expect("write");
            p
        })
        .collect();
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(dialog_info_xsd())
        .args(&files)
        .output()
        .expect("xmllint (libxml2-utils, tests/peers.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A SUBSCRIBE for the dialog package of `user` from `phone` as test13
/// (digest answered); NOTIFYs meanwhile go to `lamp`. Returns the 200.
fn subscribe(phone: &RawPhone, lamp: &mut Lamp, user: &str, call_id: &str) -> String {
    let ruri = format!("sip:{user}@{}", phone.server);
    let local = phone.addr();
    let build = |cseq: u32, auth: &str| {
        format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:test13@test>;tag=w{call_id}\r\nTo: <sip:{user}@test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:test13@{local}>\r\nEvent: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    phone.send(&build(1, ""));
    let challenge = lamp.final_response(phone, "SUBSCRIBE");
    assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
    let www = header(&challenge, "Proxy-Authenticate");
    let nonce = nonce_of(www);
    let auth = digest_answer("test13", "pw13", "SUBSCRIBE", &ruri, nonce);
    phone.send(&build(2, &format!("Proxy-Authorization: {auth}\r\n")));
    let ok = lamp.final_response(phone, "SUBSCRIBE");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(header(&ok, "Expires").parse::<u32>().is_ok_and(|e| e > 0), "{ok}");
    ok
}

/// A NOTIFY as a watcher keeps it: the subscription's Call-ID, its
/// Subscription-State and its body.
struct Notified {
    call_id: String,
    state: String,
    body: String,
    /// An `until` returned it already.
    used: bool,
}

/// The NOTIFYs a watcher got, every subscription's, in order.
#[derive(Default)]
struct Lamp {
    seen: Vec<Notified>,
}

impl Lamp {
    /// Answers and keeps a NOTIFY.
    fn take(&mut self, phone: &RawPhone, n: &str) {
        phone.reply(n, "200 OK", false);
        assert_eq!(header(n, "Event"), "dialog", "{n}");
        let body = n.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        if !body.is_empty() {
            assert_eq!(header(n, "Content-Type"), "application/dialog-info+xml", "{n}");
        }
        let call_id = header(n, "Call-ID").to_owned();
        let state = header(n, "Subscription-State").to_owned();
        if self.seen.iter().any(|s| s.call_id == call_id && s.body == body && s.state == state) {
            return; // a retransmission
        }
        self.seen.push(Notified { call_id, state, body, used: false });
    }

    /// The next final response to `method`, NOTIFYs meanwhile kept.
    fn final_response(&mut self, phone: &RawPhone, method: &str) -> String {
        loop {
            let m = phone.recv();
            if m.starts_with("NOTIFY ") {
                self.take(phone, &m);
            } else if !m.starts_with("SIP/2.0 1") && header(&m, "CSeq").ends_with(method) {
                return m;
            }
        }
    }

    /// The first NOTIFY not returned yet of subscription `call_id` whose
    /// body or state says `wanted` (reading more as needed); returns its
    /// body.
    fn until(&mut self, phone: &RawPhone, call_id: &str, wanted: &str) -> String {
        loop {
            let hit = self.seen.iter_mut().find(|n| {
                !n.used
                    && n.call_id == call_id
                    && (n.body.contains(wanted) || n.state.contains(wanted))
            });
            if let Some(n) = hit {
                n.used = true;
                return n.body.clone();
            }
            let n = phone.recv_request("NOTIFY");
            self.take(phone, &n);
        }
    }

    /// The `version` attributes of one subscription's documents, in order.
    fn versions(&self, call_id: &str) -> Vec<u32> {
        self.seen
            .iter()
            .filter(|n| n.call_id == call_id && !n.body.is_empty())
            .filter_map(|n| {
                let root = n.body.split("<dialog-info").nth(1)?;
                root.split(" version=\"").nth(1)?.split('"').next()?.parse().ok()
            })
            .collect()
    }
}

#[test]
fn busy_lamps_follow_a_whole_call_and_end_at_unregister() {
    let server = Server::start_with(&config());
    let watcher = RawPhone::registered(server.udp, "test13", "pw13");
    let mut lamp = Lamp::default();
    subscribe(&watcher, &mut lamp, "test12", "blf-ext");
    subscribe(&watcher, &mut lamp, "801", "blf-grp");
    lamp.until(&watcher, "blf-ext", "state=\"full\"");
    lamp.until(&watcher, "blf-grp", "state=\"full\"");
    let member = RawPhone::registered(server.udp, "test12", "pw12");
    let caller = raw_caller_to(server.udp, "801");
    let invite = member.recv_request("INVITE");
    member.reply(&invite, "180 Ringing", false);
    let early = lamp.until(&watcher, "blf-ext", ">early<");
    assert!(early.contains("+15550001111"), "the caller shown: {early}");
    assert!(early.contains(&format!("call-id=\"{}\"", header(&invite, "Call-ID"))), "{early}");
    lamp.until(&watcher, "blf-grp", ">early<");
    member.reply(&invite, "200 OK", true);
    member.recv_request("ACK");
    lamp.until(&watcher, "blf-ext", ">confirmed<");
    let ok = caller.recv_final("INVITE");
    in_dialog(&caller, &ok, "ACK", "race-caller", 1);
    in_dialog(&caller, &ok, "BYE", "race-caller", 2);
    let bye = member.recv_request("BYE");
    member.reply(&bye, "200 OK", false);
    lamp.until(&watcher, "blf-ext", ">terminated<");
    lamp.until(&watcher, "blf-grp", ">terminated<");
    // Unregistering ends both subscriptions with a last NOTIFY.
    unregister_all(server.udp, "test13", "pw13");
    lamp.until(&watcher, "blf-ext", "terminated;reason=deactivated");
    lamp.until(&watcher, "blf-grp", "terminated;reason=deactivated");
    for sub in ["blf-ext", "blf-grp"] {
        let v = lamp.versions(sub);
        assert!(v.len() >= 3 && v.windows(2).all(|w| w[0] < w[1]), "{sub}: {v:?}");
    }
    let docs: Vec<String> =
        lamp.seen.iter().map(|n| n.body.clone()).filter(|b| !b.is_empty()).collect();
    assert_valid_dialog_info(&docs);
}

#[test]
fn a_ring_group_call_nobody_answers_is_a_groupcall_missed_webhook() {
    let hooks = http::Hooks::start(0);
    let hooked = format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\nwebhook_url = \"http://{}/hooks\"\nwebhook_secret = \"s\"\n",
        hooks.addr
    );
    let cfg = config().replacen(&format!("[[customers]]\nid = \"{CUSTOMER}\"\n"), &hooked, 1);
    let server = Server::start_with(&cfg);
    let member = RawPhone::registered(server.udp, "test12", "pw12");
    let caller = raw_caller_to(server.udp, "800");
    let invite = member.recv_request("INVITE");
    member.reply(&invite, "180 Ringing", false);
    await_ringing(&server, &["test12@test"]);
    // The caller gives up.
    let (local, srv) = (caller.addr(), server.udp);
    caller.send(&format!(
        "CANCEL sip:800@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKrace-caller1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@pstn>;tag=trace-caller\r\nTo: <sip:800@{srv}>\r\nCall-ID: race-caller\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    ));
    let cancel = member.recv_request("CANCEL");
    member.reply(&cancel, "200 OK", false);
    member.reply(&invite, "487 Request Terminated", false);
    let missed = loop {
        let hook = hooks.next().json();
        if hook["type"] == "groupcall_missed" {
            break hook;
        }
    };
    let data = &missed["data"];
    assert_eq!(data["customer_id"], CUSTOMER, "{missed:#}");
    assert_eq!(data["destination"]["target"], "800@test", "{missed:#}");
    assert_eq!(data["source"]["target"], "+15550001111", "{missed:#}");
    let members = data["members"].as_array().expect("members");
    let rung: Vec<&str> = members.iter().filter_map(|m| m["target"].as_str()).collect();
    assert!(rung.contains(&"test12@test"), "{missed:#}");
}

/// One SIP message from a TCP stream, as text.
fn tcp_read(s: &mut std::net::TcpStream, pending: &mut Vec<u8>) -> String {
    String::from_utf8_lossy(&read_stream_message(s, pending)).into_owned()
}

#[test]
fn a_lamp_over_tcp_ends_when_its_connection_closes() {
    use std::io::Write;
    let server = Server::start_with(&config());
    let api = http::Api::new(server.http, "none");
    let mut conn = tcp_client(server.tcp);
    let mut pending = Vec::new();
    let local = conn.local_addr().expect("addr");
    let ruri = format!("sip:test12@{}", server.tcp);
    let build = |cseq: u32, auth: &str| {
        format!(
            "SUBSCRIBE {ruri};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcp{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:test13@test>;tag=wtcp\r\nTo: <sip:test12@test>\r\nCall-ID: blf-tcp\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:test13@{local};transport=tcp>\r\nEvent: dialog\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    conn.write_all(build(1, "").as_bytes()).expect("send");
    let challenge = tcp_read(&mut conn, &mut pending);
    assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
    let www = header(&challenge, "Proxy-Authenticate");
    let nonce = nonce_of(www);
    let auth =
        digest_answer("test13", "pw13", "SUBSCRIBE", &format!("{ruri};transport=tcp"), nonce);
    conn.write_all(build(2, &format!("Proxy-Authorization: {auth}\r\n")).as_bytes()).expect("send");
    // The 200 and the first NOTIFY, both over this connection.
    let (mut ok, mut notify) = (None, None);
    while ok.is_none() || notify.is_none() {
        let m = tcp_read(&mut conn, &mut pending);
        if m.starts_with("NOTIFY ") {
            let reply = response(&m, local, "200 OK", "x", false);
            conn.write_all(reply.as_bytes()).expect("send");
            notify = Some(m);
        } else if m.starts_with("SIP/2.0 200") {
            ok = Some(m);
        }
    }
    let notify = notify.unwrap_or_default();
    assert!(notify.contains("state=\"full\""), "{notify}");
    assert!(header(&notify, "Via").starts_with("SIP/2.0/TCP"), "{notify}");
    // The gauge of subscriptions held, polled (bounded) until it says `n`.
    let held = |n: u32| {
        let want = format!("forkswitch_blf_subscriptions {n}\n");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = api.get("/metrics").body;
            if text.contains(&want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never {want}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    held(1);
    drop(conn);
    held(0);
}
