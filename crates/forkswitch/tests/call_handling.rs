//! Busy members, do-not-disturb and forward on no answer through the real
//! binary (issue 12), with SIPp phones registered as extensions and SIPp
//! callers at a trusted carrier address:
//! - skip busy: test12 (`max_calls = 1`) is on a call; a `skip_busy` group
//!   of test12 and test13 rings test13 only, and a `skip_busy` group of
//!   test12 alone answers 486 at once;
//! - DND: a direct call to an extension in DND gets 486; a group skips it;
//! - forward on no answer: test15 rings for `forward_noanswer_secs`, is
//!   CANCELed, then test13 rings and answers; the records show the forward.

mod common;

use common::*;
use records::{AddressType, CallStatus, NIL};
use std::time::{Duration, Instant};

/// Domain `test`, 127.0.0.1 a trusted carrier source, MD5 digest only,
/// extensions test12..test15 (test12 `max_calls = 1`, test14 in DND,
/// test15 forwarding to test13 after 2 s) and `groups`.
fn config(groups: &str) -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\nmax_calls = 1\n\
         [[extensions]]\nname = \"test13\"\ndomain = \"test\"\npassword = \"pw13\"\n\
         [[extensions]]\nname = \"test14\"\ndomain = \"test\"\npassword = \"pw14\"\ndnd = true\n\
         [[extensions]]\nname = \"test15\"\ndomain = \"test\"\npassword = \"pw15\"\n\
         forward_noanswer = {{ type = \"endpoint\", target = \"test13@test\" }}\nforward_noanswer_secs = 2\n\
         {groups}"
    )
}

fn group(number: &str, skip_busy: bool, members: &[&str]) -> String {
    let d: Vec<String> = members
        .iter()
        .map(|m| format!("{{ type = \"endpoint\", target = \"{m}@test\" }}"))
        .collect();
    format!(
        "[[groups]]\nnumber = \"{number}\"\ndomain = \"test\"\nskip_busy = {skip_busy}\ndestinations = [{}]\n",
        d.join(", ")
    )
}

#[test]
fn skip_busy_rings_only_free_members_and_an_all_busy_group_answers_486() {
    let groups =
        format!("{}{}", group("820", true, &["test12", "test13"]), group("821", true, &["test12"]));
    let server = Server::start_with(&config(&groups));
    let busy = phone_registered_on(&server, "test12", "uas_answer.xml", &[]);
    let free = phone_registered_on(&server, "test13", "uas_answer.xml", &[]);
    // Call 1 puts test12 on a call (its limit): held 8 s.
    let mut first =
        start_caller(server.dir.path(), server.udp, "test12", "uac_hold.xml", &["-d", "8000"]);
    await_call(&server, "test12 answered", |c| {
        c.destination.target == "test12@test" && c.status == CallStatus::Progressing
    });
    // The group skips test12: only test13 is dialed, and answers.
    caller(server.dir.path(), server.udp, "820", "uac.xml", &[]);
    free.assert_ok();
    let (root, legs) = finished_root(&server, &["test12@test", "test13@test"]);
    assert_ne!(root.answer_call_id, NIL);
    assert_eq!(legs.len(), 1, "one leg dialed (test13), none for busy test12: {legs:#?}");
    assert_eq!(legs[0].destination.target, "test13@test");
    // A group of busy test12 alone: 486 at once, nothing dialed.
    let t = Instant::now();
    caller(server.dir.path(), server.udp, "821", "uac_expect_486.xml", &[]);
    assert!(t.elapsed() < Duration::from_secs(3), "486 came after {:?}", t.elapsed());
    let (_, legs) = finished_root(&server, &["test12@test"]);
    assert!(legs.is_empty(), "{legs:#?}");
    match first.wait_for(Duration::from_secs(30)) {
        Some(st) => assert!(st.success(), "first call failed: {}", first.stderr()),
        None => panic!("first call did not finish\n{}", first.output()),
    }
    busy.assert_ok();
}

#[test]
fn dnd_rejects_direct_calls_with_486_and_groups_skip_it() {
    let server = Server::start_with(&config(&group("822", false, &["test14", "test13"])));
    // test14 is registered but in DND: it is never rung (its SIPp would
    // fail the test on an INVITE it does not expect: it expects none).
    let _dnd_phone_registration = {
        let sock = ports::udp_peer();
        let resp = register_from(&sock, server.udp, "test14", "pw14");
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
        sock
    };
    let t = Instant::now();
    caller(server.dir.path(), server.udp, "test14", "uac_expect_486.xml", &[]);
    assert!(t.elapsed() < Duration::from_secs(3), "486 came after {:?}", t.elapsed());
    let answering = phone_registered_on(&server, "test13", "uas_answer.xml", &[]);
    caller(server.dir.path(), server.udp, "822", "uac.xml", &[]);
    answering.assert_ok();
    let (root, legs) = finished_root(&server, &["test14@test", "test13@test"]);
    assert_ne!(root.answer_call_id, NIL);
    assert_eq!(legs.len(), 1, "{legs:#?}");
    assert_eq!(legs[0].destination.target, "test13@test");
}

#[test]
fn forward_on_no_answer_rings_the_forward_after_the_extension_rang() {
    let server = Server::start_with(&config(""));
    let ringing = phone_registered_on(&server, "test15", "uas_ring_cancel.xml", &[]);
    let forward = phone_registered_on(&server, "test13", "uas_answer.xml", &[]);
    caller(server.dir.path(), server.udp, "test15", "uac.xml", &[]);
    ringing.assert_ok();
    forward.assert_ok();
    let (root, legs) = finished_root(&server, &["test15@test"]);
    assert_eq!(legs.len(), 2, "{legs:#?}");
    let first = legs.iter().find(|c| c.destination.target == "test15@test").expect("test15 leg");
    let fwd = legs.iter().find(|c| c.destination.target == "test13@test").expect("forward leg");
    assert_eq!(fwd.destination.kind, AddressType::Endpoint);
    assert_eq!(fwd.destination.detail, "forward_noanswer");
    assert_eq!(root.answer_call_id, fwd.id);
    assert_eq!(first.hangup_reason, records::HangupReason::Noanswer, "{first:#?}");
    let waited = fwd.tm_create.micros() - first.tm_create.micros();
    assert!(
        (1_900_000..3_000_000).contains(&waited),
        "the forward was dialed {waited} us after the extension (want 2 s)"
    );
}
