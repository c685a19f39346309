//! Click-to-call (RFC 3725 flow I) through a `CallManager`: the source is
//! called first without an offer, its 2xx offer goes to the other legs, and
//! the answer of the leg bridged to it goes back in the source's ACK.

mod common;

use b2bua::{CallEvent, CallRef, LegRef};
use common::*;
use sip_message::{Message, Method};

const ALICE_CONTACT: &str = "<sip:alice@192.0.2.20:5060>";

/// Originates to Alice (peer A); she rings and answers with her offer.
/// Returns the call, her leg, her INVITE and her 200.
fn source_answers(w: &mut World) -> (CallRef, LegRef, Message, Message) {
    let (call, src) =
        w.cm.originate(&mut w.tx, w.now, target("alice", peer_a())).expect("originate");
    w.pump();
    let out = w.take();
    let inv = invite_to(&out, peer_a());
    assert!(inv.body().is_empty(), "RFC 3725 flow I: no offer to the source");
    assert!(!w.cm.has_offer(call));
    w.feed(answer(&inv, 180, Some("atag"), Some(ALICE_CONTACT), None), peer_a());
    let ok = answer(&inv, 200, Some("atag"), Some(ALICE_CONTACT), Some(SDP_CALLER));
    w.feed(ok.clone(), peer_a());
    let events = w.take_events();
    assert!(events.contains(&CallEvent::LegRinging { call, leg: src }), "{events:?}");
    assert!(events.contains(&CallEvent::LegAnswered { call, leg: src }), "{events:?}");
    assert!(!names_to(&w.take(), peer_a()).contains(&"ACK*".to_string()), "the ACK waits");
    assert!(w.cm.has_offer(call));
    (call, src, inv, ok)
}

#[test]
fn the_answer_of_the_bridged_leg_goes_to_the_source_in_its_ack() {
    let mut w = World::new(cfg());
    let (call, src, inv_a, ok) = source_answers(&mut w);
    let bob = w.dial(call, target("bob", peer_b()));
    let out = w.take();
    let inv_b = invite_to(&out, peer_b());
    assert_eq!(inv_b.body(), SDP_CALLER.as_bytes(), "the source's offer");
    w.feed(
        answer(&inv_b, 200, Some("btag"), Some("<sip:bob@192.0.2.30>"), Some(SDP_BOB)),
        peer_b(),
    );
    assert_eq!(names_to(&w.take(), peer_b()), ["ACK*"], "the leg's ACK at once");
    assert!(w.take_events().contains(&CallEvent::LegAnswered { call, leg: bob }));
    w.answer_caller(call, bob);
    let out = w.take();
    let ack = one_to(&out, "ACK*", peer_a());
    assert!(ack.stateless);
    assert_eq!(ack.msg.body(), SDP_BOB.as_bytes(), "the answer in the source's ACK");
    // A 2xx retransmission from the source gets the same ACK again.
    w.feed(ok, peer_a());
    assert_eq!(names_to(&w.take(), peer_a()), ["ACK*"]);
    // The source hangs up: Bob gets our BYE.
    let bye = callee_request(&inv_a, "atag", (Method::Bye, 2), "z9hG4bKalicebye", None);
    w.feed(bye, peer_a());
    let out = w.take();
    assert_eq!(names_to(&out, peer_a()), ["200 BYE"]);
    let our_bye = one_to(&out, "BYE", peer_b()).msg.clone();
    assert!(w.take_events().contains(&CallEvent::LegHungUp { call, leg: src }));
    w.feed(answer(&our_bye, 200, None, None, None), peer_b());
    w.at(40_000);
    w.assert_ended(call);
}

#[test]
fn nobody_answers_the_source_gets_a_rejecting_answer_then_a_bye() {
    let mut w = World::new(cfg());
    let (call, _, _, _) = source_answers(&mut w);
    let bob = w.dial(call, target("bob", peer_b()));
    let inv_b = invite_to(&w.take(), peer_b());
    w.feed(answer(&inv_b, 486, Some("btag"), None, None), peer_b());
    assert!(w.take_events().contains(&CallEvent::LegFailed { call, leg: bob, code: 486 }));
    w.reject_caller(call, 486);
    let out = w.take();
    assert_eq!(names_to(&out, peer_a()), ["ACK*", "BYE"], "ACK first, then BYE");
    let ack = &one_to(&out, "ACK*", peer_a()).msg;
    let sdp = String::from_utf8_lossy(ack.body()).into_owned();
    assert!(sdp.contains("m=audio 0 RTP/AVP 0"), "every stream rejected: {sdp}");
    let bye = one_to(&out, "BYE", peer_a()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), peer_a());
    w.at(40_000);
    w.assert_ended(call);
}

#[test]
fn a_source_that_does_not_answer_ends_the_call() {
    let mut w = World::new(cfg());
    let (call, src) =
        w.cm.originate(&mut w.tx, w.now, target("alice", peer_a())).expect("originate");
    w.pump();
    let inv = invite_to(&w.take(), peer_a());
    w.feed(answer(&inv, 480, Some("atag"), None, None), peer_a());
    assert!(w.take_events().contains(&CallEvent::LegFailed { call, leg: src, code: 480 }));
    assert!(w.cm.reject_caller(&mut w.tx, w.now, call, 480).is_ok() || w.cm.is_empty());
    w.pump();
    w.at(40_000);
    w.assert_ended(call);
}
