//! Calls through groupcalls, driven by SIPp on loopback, one SIPp UAS per
//! destination: ring_all, linear, nested, double answer, caller CANCEL, all
//! busy, 6xx, carrier failover, early media, re-INVITE and BYE from either
//! side; and the groupcall/call records.

mod common;

use common::fork::{group, phones_group, trusted};
use common::*;
use records::NIL;
use std::time::{Duration, Instant};

/// Starts one SIPp phone per `(scenario, args)`, a server whose group
/// `number` (`method`) rings them as `sip:` destinations in that order,
/// places one call with `caller_scenario`, and asserts every phone's call
/// succeeded. Returns the server, for its records.
fn fork_call(
    number: &str,
    method: &str,
    phones: &[(&str, &[&str])],
    caller_scenario: &str,
) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let (groups, started) = phones_group(dir.path(), number, method, phones);
    let server = Server::start_with(&trusted(&groups));
    caller(server.dir.path(), server.udp, number, caller_scenario, &[]);
    for p in started {
        p.assert_ok();
    }
    server
}

#[test]
fn ring_all_first_answer_wins_others_cancelled_with_reason() {
    let server = fork_call(
        "800",
        "ring_all",
        &[
            ("uas_answer.xml", &["-d", "20"]),
            ("uas_ring_cancel_reason.xml", &[]),
            ("uas_ring_cancel_reason.xml", &[]),
        ],
        "uac.xml",
    );
    let (root, calls) = finished_groupcall(&server);
    assert_eq!(root.call_ids.len(), 3);
    assert_ne!(root.answer_call_id, NIL);
    assert_eq!(calls.iter().filter(|c| c.id == root.answer_call_id).count(), 1);
    let answered = calls.iter().find(|c| c.id == root.answer_call_id).expect("answered call");
    assert!(!answered.tm_progressing.is_not_yet());
    let cancelled =
        calls.iter().filter(|c| c.hangup_reason == records::HangupReason::Cancel).count();
    assert_eq!(cancelled, 2, "{calls:?}");
}

#[test]
fn linear_busy_then_ring_timeout_then_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let a = Phone::start(dir.path(), "uas_reject_486.xml", &[]);
    let b = Phone::start(dir.path(), "uas_ring_cancel.xml", &[]);
    let c = Phone::start(dir.path(), "uas_answer.xml", &[]);
    let server = Server::start_with(&trusted(&group(
        "801",
        "linear",
        &[("sip", a.uri("a"), None), ("sip", b.uri("b"), Some(1)), ("sip", c.uri("c"), None)],
    )));
    let t0 = Instant::now();
    caller(server.dir.path(), server.udp, "801", "uac.xml", &[]);
    assert!(t0.elapsed() >= Duration::from_secs(1), "the second destination rang for its timeout");
    a.assert_ok();
    b.assert_ok();
    c.assert_ok();
    let (root, calls) = finished_groupcall(&server);
    assert_eq!(root.call_ids.len(), 3);
    assert_eq!(calls[0].hangup_reason, records::HangupReason::Busy);
    assert_eq!(calls[1].hangup_reason, records::HangupReason::Noanswer);
    assert_eq!(root.answer_call_id, calls[2].id);
}

#[test]
fn nested_group_answer_deep_cancels_every_level() {
    let dir = tempfile::tempdir().expect("dir");
    let inner_answer = Phone::start(dir.path(), "uas_answer.xml", &["-d", "50"]);
    let inner_ring = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let outer_ring = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let cfg = format!(
        "{}{}",
        group(
            "802",
            "ring_all",
            &[("groupcall", "803".into(), None), ("sip", outer_ring.uri("o"), None)]
        ),
        group(
            "803",
            "ring_all",
            &[("sip", inner_answer.uri("ia"), None), ("sip", inner_ring.uri("ir"), None)]
        )
    );
    let server = Server::start_with(&trusted(&cfg));
    caller(server.dir.path(), server.udp, "802", "uac.xml", &[]);
    inner_answer.assert_ok();
    inner_ring.assert_ok();
    outer_ring.assert_ok();
    let (root, _) = finished_groupcall(&server);
    assert_ne!(root.answer_groupcall_id, NIL, "the answer came through the child");
    assert_eq!(root.groupcall_ids.len(), 1);
}

#[test]
fn two_phones_answering_at_once_exactly_one_bridged() {
    // Both answer at once with no provisional: nothing can be CANCELed, so
    // the second 200 reaches the switch after the first won. Both phones
    // complete: the loser was ACKed then BYEd, the winner got the BYE.
    let server = fork_call(
        "804",
        "ring_all",
        &[("uas_answer_now.xml", &[]), ("uas_answer_now.xml", &[])],
        "uac.xml",
    );
    let (root, calls) = finished_groupcall(&server);
    assert_ne!(root.answer_call_id, NIL);
    // Exactly one is the answer; the other (its CANCEL pending, its 200
    // ACKed and BYEd on arrival) was ended by us.
    assert_eq!(calls.len(), 2);
    let winner = calls.iter().find(|c| c.id == root.answer_call_id).expect("winner");
    assert!(!winner.tm_progressing.is_not_yet());
    let loser = calls.iter().find(|c| c.id != root.answer_call_id).expect("loser");
    assert_eq!(loser.hangup_by, records::HangupBy::Local, "{loser:?}");
}

#[test]
fn caller_cancel_while_ringing() {
    let server = fork_call(
        "805",
        "ring_all",
        &[("uas_ring_cancel.xml", &[]), ("uas_ring_cancel.xml", &[])],
        "uac_cancel.xml",
    );
    let (root, _) = finished_groupcall(&server);
    assert_eq!(root.answer_call_id, NIL);
}

#[test]
fn all_busy_caller_gets_486() {
    fork_call(
        "806",
        "ring_all",
        &[("uas_reject_486.xml", &[]), ("uas_reject_486.xml", &[])],
        "uac_expect_486.xml",
    );
}

#[test]
fn decline_603_stops_the_fork() {
    fork_call(
        "807",
        "ring_all",
        &[("uas_reject_603.xml", &[]), ("uas_ring_cancel.xml", &[])],
        "uac_expect_603.xml",
    );
}

#[test]
fn early_media_from_two_legs_only_first_relayed() {
    // uac.xml takes at most one 183: a second relayed one would fail it.
    fork_call(
        "808",
        "ring_all",
        &[("uas_early_answer.xml", &["-d", "300"]), ("uas_early_cancel.xml", &[])],
        "uac.xml",
    );
}

#[test]
fn reinvite_from_caller_and_bye_from_callee() {
    let dir = tempfile::tempdir().expect("dir");
    let a = Phone::start(dir.path(), "uas_answer_reinvite.xml", &[]);
    let server =
        Server::start_with(&trusted(&group("809", "ring_all", &[("sip", a.uri("a"), None)])));
    caller(server.dir.path(), server.udp, "809", "uac_reinvite.xml", &[]);
    a.assert_ok();
    let b = Phone::start(dir.path(), "uas_answer_bye.xml", &[]);
    let server2 =
        Server::start_with(&trusted(&group("810", "ring_all", &[("sip", b.uri("b"), None)])));
    caller(server2.dir.path(), server2.udp, "810", "uac_wait_bye.xml", &[]);
    b.assert_ok();
}

#[test]
fn tel_route_fails_over_from_503_carrier_to_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = Phone::start(dir.path(), "uas_reject_503.xml", &[]);
    let good = Phone::start(dir.path(), "uas_answer.xml", &[]);
    // An authenticated extension calls a PSTN number (no trusted source
    // here: carriers may not call out).
    let cfg = format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[carriers]]\nname = \"first\"\naddress = \"127.0.0.1:{}\"\n\
         [[carriers]]\nname = \"second\"\naddress = \"127.0.0.1:{}\"\n\
         [[routes]]\nprefix = \"+1\"\ncarriers = [\"first\", \"second\"]\n",
        bad.port, good.port
    );
    let server = Server::start_with(&cfg);
    caller(
        server.dir.path(),
        server.udp,
        "+15551234567",
        "uac_auth.xml",
        &["-set", "ext", "test12", "-set", "domain", "test", "-au", "test12", "-ap", "pw12"],
    );
    bad.assert_ok();
    good.assert_ok();
}

#[test]
fn endpoint_destinations_ring_registered_phones_and_missing_ones_fail_480() {
    let cfg = format!(
        "{}[[extensions]]\nname = \"e1\"\ndomain = \"test\"\npassword = \"pw-e1\"\n\
         [[extensions]]\nname = \"e2\"\ndomain = \"test\"\npassword = \"pw-e2\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n",
        trusted(&group(
            "811",
            "ring_all",
            &[("endpoint", "e1@test".into(), None), ("endpoint", "e2@test".into(), None)]
        ))
    );
    let server = Server::start_with(&cfg);
    // e1 registers from the port its phone (SIPp) will then listen on; e2
    // never registers.
    let register = |sock: &std::net::UdpSocket| {
        let resp = register_from(sock, server.udp, "e1", "pw-e1");
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    };
    let unregister = |_lost_port| unregister_all(server.udp, "e1", "pw-e1");
    let start_phone = |already| {
        let dir = server.dir.path();
        Phone::start_announced(dir, "uas_answer.xml", &[], already, register, unregister)
    };
    let phone = start_phone(None);
    let port = phone.port;
    caller(server.dir.path(), server.udp, "811", "uac.xml", &[]);
    phone.assert_ok();
    let (root, _) = finished_groupcall(&server);
    assert_eq!(root.groupcall_ids.len(), 1, "e1 became a child groupcall; e2 had no contact");
    assert_ne!(root.answer_groupcall_id, NIL);
    // Dialing the extension directly rings its contacts too.
    let phone = start_phone(Some(port));
    caller(server.dir.path(), server.udp, "e1", "uac.xml", &[]);
    phone.assert_ok();
}

#[test]
fn lost_first_invite_is_recovered_by_retransmission() {
    // A phone on a raw socket that "loses" the first INVITE: it answers only
    // the retransmission (RFC 3261 Timer A, 500 ms later).
    let sock = ports::udp_peer();
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let phone = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let (n, _) = sock.recv_from(&mut buf).expect("first INVITE");
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(first.starts_with("INVITE "), "{first}");
        let t_first = Instant::now();
        let (n, from) = sock.recv_from(&mut buf).expect("retransmitted INVITE");
        let again = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(again, first, "a retransmission is the same request");
        let waited = t_first.elapsed();
        let header = |name: &str| -> String {
            again
                .split("\r\n")
                .find(|l| {
                    l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .unwrap_or_default()
                .to_owned()
        };
        let sdp = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
        let ok = format!(
            "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=lossy\r\n{}\r\n{}\r\nContact: <sip:p@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header("Via"),
            header("From"),
            header("To"),
            header("Call-ID"),
            header("CSeq"),
            sdp.len()
        );
        sock.send_to(ok.as_bytes(), from).expect("send 200");
        // ACK, then the BYE when the caller hangs up.
        loop {
            let (n, from) = sock.recv_from(&mut buf).expect("ACK or BYE");
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with("BYE ") {
                let h = |name: &str| -> String {
                    m.split("\r\n").find(|l| l.starts_with(name)).unwrap_or_default().to_owned()
                };
                let resp = format!(
                    "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{}\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                    h("Via:"),
                    h("From:"),
                    h("To:"),
                    h("Call-ID:"),
                    h("CSeq:")
                );
                sock.send_to(resp.as_bytes(), from).expect("send");
                return waited;
            }
        }
    });
    let server = Server::start_with(&trusted(&group(
        "812",
        "ring_all",
        &[("sip", format!("sip:p@127.0.0.1:{port}"), None)],
    )));
    caller(server.dir.path(), server.udp, "812", "uac.xml", &[]);
    let waited = phone.join().expect("phone thread");
    assert!(
        waited >= Duration::from_millis(400) && waited <= Duration::from_millis(1500),
        "retransmission after {waited:?} (Timer A = T1 = 500 ms)"
    );
}

#[test]
fn carrier_that_challenges_gets_our_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let carrier = Phone::start(dir.path(), "uas_carrier_auth.xml", &[]);
    let cfg = format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [timers]\nt1_ms = 2000\n\
         [[carriers]]\nname = \"trunk\"\naddress = \"127.0.0.1:{}\"\nusername = \"trunkuser\"\npassword = \"trunkpass\"\n\
         [[routes]]\nprefix = \"+\"\ncarriers = [\"trunk\"]\n",
        carrier.port
    );
    let server = Server::start_with(&cfg);
    // The carrier answers 403 to a wrong answer, which would fail the caller.
    // Its SIPp scenario also takes a retransmission of our first INVITE
    // (Timer A, T1 after it, when the machine is slow to answer) for a
    // wrong answer: T1 is 2 s here (seen once in 69 runs beside another).
    caller(
        server.dir.path(),
        server.udp,
        "+4930123456",
        "uac_auth.xml",
        &["-set", "ext", "test12", "-set", "domain", "test", "-au", "test12", "-ap", "pw12"],
    );
    carrier.assert_ok();
}

/// A tiny authoritative DNS server on loopback for the tests: answers SRV
/// for `_sip._udp.pbx.test` (priority 10 -> node1, 20 -> node2) and A for
/// the nodes; everything else gets an empty answer. Returns its address.
fn fake_dns(port1: u16, port2: u16) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let sock = ports::udp_peer();
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
            let Some(q) = req.queries().first().cloned() else { continue };
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(req.op_code())
                .set_recursion_desired(req.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            resp.add_query(q.clone());
            let name = q.name().to_utf8().to_ascii_lowercase();
            let node = |n: &str| Name::from_ascii(n).expect("name");
            match (name.as_str(), q.query_type()) {
                ("_sip._udp.pbx.test.", RecordType::SRV) => {
                    for (prio, port, target) in
                        [(10, port1, "node1.pbx.test."), (20, port2, "node2.pbx.test.")]
                    {
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::SRV(SRV::new(prio, 0, port, node(target))),
                        ));
                    }
                }
                ("node1.pbx.test." | "node2.pbx.test.", RecordType::A) => {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(std::net::Ipv4Addr::LOCALHOST)),
                    ));
                }
                _ => {}
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
    addr
}

#[test]
fn sip_destination_by_dns_srv_fails_over_on_503() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Phone::start(dir.path(), "uas_reject_503.xml", &[]);
    let second = Phone::start(dir.path(), "uas_answer.xml", &[]);
    let dns = fake_dns(first.port, second.port);
    let cfg = format!(
        "[dns]\nservers = [\"{dns}\"]\n{}",
        trusted(&group("813", "ring_all", &[("sip", "sip:pbx@pbx.test".into(), None)]))
    );
    let server = Server::start_with(&cfg);
    caller(server.dir.path(), server.udp, "813", "uac.xml", &[]);
    first.assert_ok();
    second.assert_ok();
}

#[test]
fn sip_destination_by_host_name_and_port() {
    let dir = tempfile::tempdir().expect("dir");
    let phone = Phone::start(dir.path(), "uas_answer.xml", &[]);
    let server = Server::start_with(&trusted(&group(
        "814",
        "ring_all",
        &[("sip", format!("sip:a@localhost:{}", phone.port), None)],
    )));
    caller(server.dir.path(), server.udp, "814", "uac.xml", &[]);
    phone.assert_ok();
}

#[test]
fn carrier_addressed_by_dns_name() {
    let dir = tempfile::tempdir().expect("dir");
    let carrier = Phone::start(dir.path(), "uas_answer.xml", &[]);
    let dns = fake_dns(carrier.port, carrier.port);
    let cfg = format!(
        "[dns]\nservers = [\"{dns}\"]\n\
         [[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[carriers]]\nname = \"named\"\naddress = \"node1.pbx.test:{}\"\n\
         [[routes]]\nprefix = \"+49\"\ncarriers = [\"named\"]\n",
        carrier.port
    );
    let mut server = Server::start_with(&cfg);
    server.wait_log(|v| v["message"] == "carrier resolved", WAIT, |_, _| {});
    caller(
        server.dir.path(),
        server.udp,
        "+4930123456",
        "uac_auth.xml",
        &["-set", "ext", "test12", "-set", "domain", "test", "-au", "test12", "-ap", "pw12"],
    );
    carrier.assert_ok();
}

#[test]
fn caller_over_tcp_forks_to_udp_phones() {
    let dir = tempfile::tempdir().expect("dir");
    let a = Phone::start(dir.path(), "uas_answer.xml", &["-d", "20"]);
    let b = Phone::start(dir.path(), "uas_ring_cancel_reason.xml", &[]);
    let server = Server::start_with(&trusted(&group(
        "815",
        "ring_all",
        &[("sip", a.uri("a"), None), ("sip", b.uri("b"), None)],
    )));
    caller(server.dir.path(), server.tcp, "815", "uac.xml", &["-t", "t1"]);
    a.assert_ok();
    b.assert_ok();
}

/// A phone on one TCP connection: REGISTERs (digest) over it, then answers
/// the INVITE that must come back over the same connection (it has no
/// listening socket at all, like a phone behind NAT).
#[test]
fn tcp_registered_phone_is_called_over_its_connection() {
    use std::io::Write;
    let cfg = format!(
        "{}[[extensions]]\nname = \"t1\"\ndomain = \"test\"\npassword = \"pw-t1\"\n[registrar]\nalgorithms = [\"MD5\"]\n",
        trusted(&group("816", "ring_all", &[("endpoint", "t1@test".into(), None)]))
    );
    let server = Server::start_with(&cfg);
    let mut conn = tcp_client(server.tcp);
    let local = conn.local_addr().expect("addr");
    let mut pending = Vec::new();
    register_over_tcp(&mut conn, &mut pending, server.tcp, "t1", "pw-t1");

    // The call: a SIPp caller (UDP) dials 816; the phone answers on its
    // TCP connection.
    let dir = server.dir.path().to_owned();
    let target = server.udp;
    let call = std::thread::spawn(move || caller(&dir, target, "816", "uac.xml", &[]));
    let invite =
        String::from_utf8_lossy(&read_stream_message(&mut conn, &mut pending)).into_owned();
    assert!(invite.starts_with("INVITE sip:t1@"), "{invite}");
    let header = |m: &str, name: &str| -> String {
        m.split("\r\n")
            .find(|l| {
                l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .unwrap_or_default()
            .to_owned()
    };
    let sdp = "v=0\r\no=t1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7002 RTP/AVP 0\r\n";
    let answer = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=tcpphone\r\n{}\r\n{}\r\nContact: <sip:t1@{local};transport=tcp>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(&invite, "Via"),
        header(&invite, "From"),
        header(&invite, "To"),
        header(&invite, "Call-ID"),
        header(&invite, "CSeq"),
        sdp.len()
    );
    conn.write_all(answer.as_bytes()).expect("write");
    // ACK, then the caller's BYE, both over the same connection.
    let ack = String::from_utf8_lossy(&read_stream_message(&mut conn, &mut pending)).into_owned();
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = String::from_utf8_lossy(&read_stream_message(&mut conn, &mut pending)).into_owned();
    assert!(bye.starts_with("BYE "), "{bye}");
    let bye_ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{}\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "Via"),
        header(&bye, "From"),
        header(&bye, "To"),
        header(&bye, "Call-ID"),
        header(&bye, "CSeq")
    );
    conn.write_all(bye_ok.as_bytes()).expect("write");
    call.join().expect("caller");
}

#[test]
fn reinvite_from_the_callee_side_reaches_the_caller() {
    fork_call(
        "817",
        "ring_all",
        &[("uas_answer_reinvite_caller.xml", &[])],
        "uac_accept_reinvite.xml",
    );
}

#[test]
fn reliable_provisional_from_a_leg_is_pracked_by_the_switch() {
    fork_call("818", "ring_all", &[("uas_prack.xml", &[])], "uac.xml");
}

// Calls whose records are checked, again with the records in PostgreSQL.
also_on_postgres!(
    ring_all_first_answer_wins_others_cancelled_with_reason,
    linear_busy_then_ring_timeout_then_answer,
    nested_group_answer_deep_cancels_every_level,
);
