//! Whole calls through a `CallManager` and a `TransactionLayer`, against
//! scripted far ends, in virtual time.

mod common;

use b2bua::{CallEvent, CallRef, LegRef};
use common::*;
use sip_message::{HeaderName, Message, Method};
use sip_transaction::cancel_for;

const BOB_CONTACT: &str = "<sip:bob@192.0.2.21:5070>";

fn bob_peer() -> sip_message::Peer {
    peer("192.0.2.21:5070")
}

/// A call with legs A (Bob) and B (Carol) dialed; their INVITEs.
fn two_legs(w: &mut World, sdp: Option<&str>) -> (CallRef, LegRef, LegRef, Message, Message) {
    let call = w.start_call(caller_invite(sdp, &[("Subject", "hello")]));
    let a = w.dial(call, target("bob", peer_a()));
    let b = w.dial(call, target("carol", peer_b()));
    let out = w.take();
    (call, a, b, invite_to(&out, peer_a()), invite_to(&out, peer_b()))
}

/// Leg A answers (Bob, Contact on 192.0.2.21:5070), leg B is cancelled,
/// the caller is answered with A and ACKs. Returns our 200 to the caller.
fn bridged(
    w: &mut World,
    (call, a, b): (CallRef, LegRef, LegRef),
    (inv_a, inv_b): (&Message, &Message),
) -> Message {
    w.feed(answer(inv_b, 180, Some("ctag"), Some("<sip:carol@192.0.2.30>"), None), peer_b());
    w.feed(answer(inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.cancel_leg(call, b, Some(REASON));
    w.answer_caller(call, a);
    let out = w.take();
    let cancel = one_to(&out, "CANCEL", peer_b()).msg.clone();
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    w.feed(answer(&cancel, 200, Some("ctag"), None, None), peer_b());
    w.feed(answer(inv_b, 487, Some("ctag"), None, None), peer_b());
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.take();
    w.take_events();
    ok
}

fn contact_of(m: &Message) -> String {
    String::from_utf8(m.contacts().unwrap().list()[0].uri.raw.to_vec()).unwrap()
}

fn ruri(m: &Message) -> String {
    String::from_utf8(m.request_uri_bytes().unwrap().to_vec()).unwrap()
}

#[test]
fn each_leg_is_its_own_dialog_and_nothing_of_the_caller_leaks() {
    let mut w = World::new(cfg());
    let caller = caller_invite(Some(SDP_CALLER), &[("Subject", "hello")]);
    let call = w.start_call(caller.clone());
    let a = w.dial(call, target("bob", peer_a()));
    let b = w.dial(call, target("carol", peer_b()));
    let out = w.take();
    assert_eq!(names(&out), ["INVITE", "INVITE"]);
    let mut call_ids = Vec::new();
    for (s, p, leg) in [(&out[0], peer_a(), a), (&out[1], peer_b(), b)] {
        assert_eq!(s.peer, p);
        assert!(!s.stateless);
        let m = &s.msg;
        let cid = m.call_id().unwrap().to_vec();
        assert_ne!(cid, CALLER_CALL_ID.as_bytes());
        assert_eq!(w.cm.leg_sip_call_id(call, leg).unwrap().as_bytes(), &cid[..]);
        call_ids.push(cid);
        assert_eq!(m.vias().count(), 1);
        let via = m.top_via().unwrap();
        assert_eq!(
            (via.host, via.port, via.transport),
            (&b"203.0.113.1"[..], Some(5060), &b"UDP"[..])
        );
        assert!(via.has_rfc3261_branch());
        assert_eq!(via.rport(), Some(None));
        let tag = m.from_tag().unwrap();
        assert!(!tag.is_empty() && tag != b"atag");
        assert_eq!(m.to_tag(), None);
        let cseq = m.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (1, Method::Invite));
        assert_eq!(m.max_forwards().unwrap(), Some(69));
        assert_eq!(contact_of(m), "sip:forkswitch@203.0.113.1:5060");
        assert_eq!(m.body(), SDP_CALLER.as_bytes());
        assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
        // The caller's SDP is shared, not copied.
        assert_eq!(s.raw.body().as_ptr(), caller.body().as_ptr());
        assert_eq!(m.header(HeaderName::Subject), Some(&b"hello"[..]));
        assert!(m.header_named("X-Leg").is_some());
        assert!(m.supports("100rel"));
        assert_eq!(m.count(HeaderName::RecordRoute), 0);
        let text = s.text();
        for leak in [
            "caller-call-1",
            "z9hG4bKcaller1",
            "10.0.0.1",
            "rr.a.example",
            "atag",
            "alice@192.0.2.10",
        ] {
            assert!(!text.contains(leak), "{leak} leaked into {text}");
        }
    }
    assert_ne!(call_ids[0], call_ids[1]);
    assert_ne!(out[0].msg.from_tag(), out[1].msg.from_tag());
    assert_eq!(w.cm.caller_sip_call_id(call), Some(CALLER_CALL_ID));

    // Everything fails: B busy, A cancelled; the caller gets the failure.
    w.feed(answer(&out[1].msg, 486, Some("ctag"), None, None), peer_b());
    assert_eq!(names_to(&w.take(), peer_b()), ["ACK"]);
    w.cancel_leg(call, a, None);
    assert!(w.take().is_empty(), "no CANCEL before a provisional");
    w.feed(answer(&out[0].msg, 487, Some("btag"), None, None), peer_a());
    w.reject_caller(call, 486);
    assert_eq!(names_to(&w.take(), caller_peer()), ["486 INVITE"]);
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegFailed { call, leg: b, code: 486 },
            CallEvent::LegFailed { call, leg: a, code: 487 },
            CallEvent::CallEnded { call },
        ]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn ringing_and_early_media_are_relayed_to_the_caller() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_a, 100, None, None, None), peer_a());
    w.feed(answer(&inv_a, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    w.feed(answer(&inv_a, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    w.feed(
        answer(&inv_b, 183, Some("ctag"), Some("<sip:carol@192.0.2.30>"), Some(SDP_CAROL)),
        peer_b(),
    );
    assert!(w.take().is_empty());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegTrying { call, leg: a },
            CallEvent::LegRinging { call, leg: a },
            CallEvent::LegEarlyMedia { call, leg: b },
        ]
    );
    w.ring_caller(call);
    let out = w.take();
    let r180 = &one_to(&out, "180 INVITE", caller_peer()).msg;
    let tag = r180.to_tag().unwrap().to_vec();
    assert!(!tag.is_empty());
    assert_eq!(r180.vias().count(), 2);
    assert_eq!(r180.call_id().unwrap(), CALLER_CALL_ID.as_bytes());
    assert_eq!(contact_of(r180), "sip:forkswitch@203.0.113.1:5060");
    assert!(r180.body().is_empty());
    assert!(!out[0].text().contains("btag") && !out[0].text().contains("192.0.2.21"));

    w.early_media_caller(call, b);
    let out = w.take();
    let r183 = &one_to(&out, "183 INVITE", caller_peer()).msg;
    assert_eq!(r183.body(), SDP_CAROL.as_bytes());
    assert_eq!(r183.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(r183.to_tag().unwrap(), &tag[..], "one To tag for the caller's dialog");

    // B answers: the caller gets 200 with B's SDP and the same tag.
    w.feed(
        answer(&inv_b, 200, Some("ctag"), Some("<sip:carol@192.0.2.30>"), Some(SDP_CAROL)),
        peer_b(),
    );
    assert_eq!(names(&w.take()), ["ACK*"]);
    w.cancel_leg(call, a, Some(REASON));
    w.answer_caller(call, b);
    let out = w.take();
    let cancel = one_to(&out, "CANCEL", peer_a()).msg.clone();
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    assert_eq!(ok.to_tag().unwrap(), &tag[..]);
    assert_eq!(ok.body(), SDP_CAROL.as_bytes());
    w.feed(answer(&cancel, 200, None, None, None), peer_a());
    w.feed(answer(&inv_a, 487, Some("btag"), None, None), peer_a());
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKbye", None), caller_peer());
    let out = w.take();
    let bye = one_to(&out, "BYE", peer_b()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), peer_b());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegAnswered { call, leg: b },
            CallEvent::LegCancelled { call, leg: a },
            CallEvent::CallerHungUp { call },
            CallEvent::LegEnded { call, leg: b },
            CallEvent::CallEnded { call },
        ]
    );
    assert!(w.cm.is_empty());
    // The call is gone but the leg's INVITE transaction lives on (Timer M):
    // a 2xx retransmission still gets its ACK, a late fork ACK and BYE.
    w.feed(
        answer(&inv_b, 200, Some("ctag"), Some("<sip:carol@192.0.2.30>"), Some(SDP_CAROL)),
        peer_b(),
    );
    assert_eq!(names(&w.take()), ["ACK*"]);
    w.feed(
        answer(&inv_b, 200, Some("late"), Some("<sip:carol@192.0.2.31>"), Some(SDP_CAROL)),
        peer_b(),
    );
    let out = w.take();
    assert_eq!(names(&out), ["ACK*", "BYE"]);
    assert_eq!(out[1].msg.to_tag(), Some(&b"late"[..]));
    assert!(w.take_events().is_empty() && w.given_back.is_empty());
}

#[test]
fn answer_acks_the_contact_bridges_retransmits_and_caller_bye_ends_it() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_b, 180, Some("ctag"), Some("<sip:carol@192.0.2.30>"), None), peer_b());
    w.at(100);
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*"]);
    let ack = out[0].msg.clone();
    assert_eq!(out[0].peer.remote, bob_peer().remote, "ACK goes to the 2xx's Contact");
    assert_eq!(ruri(&ack), "sip:bob@192.0.2.21:5070");
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Ack));
    assert_eq!(ack.to_tag(), Some(&b"btag"[..]));
    assert_eq!(ack.from_tag(), inv_a.from_tag());
    assert_eq!(ack.call_id().unwrap(), inv_a.call_id().unwrap());
    assert_ne!(ack.top_via().unwrap().branch(), inv_a.top_via().unwrap().branch());
    assert!(ack.body().is_empty());
    assert_eq!(
        w.take_events(),
        [CallEvent::LegRinging { call, leg: b }, CallEvent::LegAnswered { call, leg: a }]
    );

    w.cancel_leg(call, b, Some(REASON));
    let out = w.take();
    let cancel = one_to(&out, "CANCEL", peer_b()).msg.clone();
    assert_eq!(cancel.header(HeaderName::Reason), Some(REASON.as_bytes()));
    assert_eq!(cancel.top_via().unwrap().branch(), inv_b.top_via().unwrap().branch());
    w.answer_caller(call, a);
    let out = w.take();
    assert_eq!(names(&out), ["200 INVITE"]);
    let ok = out[0].msg.clone();
    assert_eq!(out[0].peer, caller_peer());
    assert_eq!(ok.body(), SDP_BOB.as_bytes());
    assert_eq!(contact_of(&ok), "sip:forkswitch@203.0.113.1:5060");
    assert_eq!(ok.vias().count(), 2);
    assert_eq!(ok.call_id().unwrap(), CALLER_CALL_ID.as_bytes());
    assert_eq!(ok.from_tag(), Some(&b"atag"[..]));
    for leak in ["btag", "192.0.2.21", std::str::from_utf8(inv_a.call_id().unwrap()).unwrap()] {
        assert!(!out[0].text().contains(leak), "{leak} leaked to the caller");
    }

    w.feed(answer(&cancel, 200, Some("ctag"), None, None), peer_b());
    w.feed(answer(&inv_b, 487, Some("ctag"), None, None), peer_b());
    assert_eq!(names(&w.take()), ["ACK"], "the layer ACKs the 487");
    assert_eq!(w.take_events(), [CallEvent::LegCancelled { call, leg: b }]);

    // 13.3.1.4: T1, 2*T1, 4*T1 ... until the ACK.
    w.at(4000);
    let out = w.take();
    assert_eq!(times(&out, "200 INVITE*"), [600, 1600, 3600]);
    assert!(out.iter().all(|s| s.peer == caller_peer() && s.msg == ok));
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.at(40_000);
    assert!(w.take().iter().all(|s| s.name() != "200 INVITE*"), "ACK stops the 2xx");

    // The leg retransmits its 2xx: the same ACK again.
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*"]);
    assert_eq!(out[0].msg.to_bytes(), ack.to_bytes());

    // The caller hangs up.
    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKcbye", None), caller_peer());
    let out = w.take();
    assert_eq!(names_to(&out, caller_peer()), ["200 BYE"]);
    let bye = one_to(&out, "BYE", bob_peer()).msg.clone();
    assert_eq!(ruri(&bye), "sip:bob@192.0.2.21:5070");
    assert_eq!(bye.call_id().unwrap(), inv_a.call_id().unwrap());
    let cseq = bye.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (2, Method::Bye));
    assert_eq!(bye.to_tag(), Some(&b"btag"[..]));
    assert!(!one_to(&out, "BYE", bob_peer()).text().contains("atag"));
    assert_eq!(w.take_events(), [CallEvent::CallerHungUp { call }]);
    // The engine's own BYE to the winner is a no-op now.
    w.bye_leg(call, a);
    assert!(w.take().is_empty());
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    assert_eq!(
        w.take_events(),
        [CallEvent::LegEnded { call, leg: a }, CallEvent::CallEnded { call }]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn no_ack_from_the_caller_byes_both_sides_after_64_t1() {
    let mut w = World::new(cfg());
    let (call, a, _b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.feed(answer(&inv_b, 486, Some("ctag"), None, None), peer_b());
    w.answer_caller(call, a);
    w.take();
    w.take_events();
    w.at(31_999);
    let out = w.take();
    assert_eq!(
        times(&out, "200 INVITE*"),
        [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(w.take_events().is_empty());
    w.at(32_000);
    let out = w.take();
    assert_eq!(names(&out), ["BYE", "BYE"]);
    let bye_caller = one_to(&out, "BYE", caller_peer()).msg.clone();
    let bye_bob = one_to(&out, "BYE", bob_peer()).msg.clone();
    assert_eq!(ruri(&bye_caller), "sip:alice@192.0.2.10:5060");
    assert_eq!(bye_caller.header(HeaderName::Route), Some(&b"<sip:rr.a.example;lr>"[..]));
    assert_eq!(bye_caller.call_id().unwrap(), CALLER_CALL_ID.as_bytes());
    assert_eq!(bye_caller.to_tag(), Some(&b"atag"[..]));
    assert_eq!(w.take_events(), [CallEvent::CallerNoAck { call }]);
    w.feed(answer(&bye_caller, 481, None, None, None), caller_peer());
    w.feed(answer(&bye_bob, 200, None, None, None), bob_peer());
    assert_eq!(
        w.take_events(),
        [CallEvent::LegEnded { call, leg: a }, CallEvent::CallEnded { call }]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn a_second_fork_2xx_on_one_leg_is_acked_then_byed() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_a, 200, Some("t1"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    assert_eq!(names(&w.take()), ["ACK*"]);
    assert_eq!(w.take_events(), [CallEvent::LegAnswered { call, leg: a }]);
    let fork = answer(&inv_a, 200, Some("t2"), Some("<sip:bob2@192.0.2.22>"), Some(SDP_BOB));
    w.feed(fork.clone(), peer_a());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*", "BYE"], "ACK first, then BYE");
    let fork_peer = peer("192.0.2.22:5060");
    assert!(out.iter().all(|s| s.peer.remote == fork_peer.remote));
    assert_eq!(out[0].msg.to_tag(), Some(&b"t2"[..]));
    let bye = out[1].msg.clone();
    assert_eq!(bye.to_tag(), Some(&b"t2"[..]));
    assert_eq!(bye.call_id().unwrap(), inv_a.call_id().unwrap());
    assert_eq!(ruri(&bye), "sip:bob2@192.0.2.22");
    assert!(w.take_events().is_empty(), "never an answer");
    // Its retransmission is ACKed again, not BYEd again.
    w.feed(fork, peer_a());
    assert_eq!(names(&w.take()), ["ACK*"]);
    w.feed(answer(&bye, 200, None, None, None), fork_peer);

    // The engine picks A anyway, B is cancelled after its 100.
    w.feed(answer(&inv_b, 100, None, None, None), peer_b());
    w.cancel_leg(call, b, None);
    let cancel = one_to(&w.take(), "CANCEL", peer_b()).msg.clone();
    assert_eq!(cancel.header(HeaderName::Reason), None);
    w.feed(answer(&inv_b, 487, Some("ct"), None, None), peer_b());
    w.answer_caller(call, a);
    let ok = one_to(&w.take(), "200 INVITE", caller_peer()).msg.clone();
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    // Bob hangs up.
    w.feed(callee_request(&inv_a, "t1", (Method::Bye, 1), "z9hG4bKbb1", None), peer_a());
    let out = w.take();
    assert_eq!(names_to(&out, peer_a()), ["200 BYE"]);
    let bye_caller = one_to(&out, "BYE", caller_peer()).msg.clone();
    w.feed(answer(&bye_caller, 200, None, None, None), caller_peer());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegTrying { call, leg: b },
            CallEvent::LegCancelled { call, leg: b },
            CallEvent::LegHungUp { call, leg: a },
            CallEvent::CallEnded { call },
        ]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn cancel_waits_for_the_first_provisional_and_carries_the_reason() {
    let mut w = World::new(cfg());
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[]));
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.at(100);
    w.cancel_leg(call, a, Some(REASON));
    assert!(w.take().iter().all(|s| s.name() != "CANCEL"), "9.1: not before a provisional");
    w.at(400);
    w.feed(answer(&inv_a, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    let out = w.take();
    let cancel = one_to(&out, "CANCEL", peer_a()).msg.clone();
    assert_eq!(cancel.header(HeaderName::Reason), Some(REASON.as_bytes()));
    let cseq = cancel.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Cancel));
    assert_eq!(cancel.call_id().unwrap(), inv_a.call_id().unwrap());
    // A second cancel does nothing.
    w.cancel_leg(call, a, Some(REASON));
    assert!(w.take().is_empty());
    w.feed(answer(&cancel, 200, Some("btag"), None, None), peer_a());
    w.feed(answer(&inv_a, 487, Some("btag"), None, None), peer_a());
    assert_eq!(names(&w.take()), ["ACK"]);
    assert_eq!(
        w.take_events(),
        [CallEvent::LegRinging { call, leg: a }, CallEvent::LegCancelled { call, leg: a }]
    );
    w.reject_caller(call, 480);
    w.assert_ended(call);
}

#[test]
fn no_final_64_t1_after_the_cancel_gives_the_leg_up_and_timer_b_too() {
    let mut w = World::new(cfg());
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[]));
    let a = w.dial(call, target("bob", peer_a()));
    let b = w.dial(call, target("carol", peer_b()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.at(1000);
    w.feed(answer(&inv_a, 100, None, None, None), peer_a());
    w.cancel_leg(call, a, None);
    one_to(&w.take(), "CANCEL", peer_a());
    w.take_events();
    // B never answers at all: Timer B at 32 s.
    w.at(32_000);
    assert_eq!(w.take_events(), [CallEvent::LegNoResponse { call, leg: b }]);
    w.at(32_999);
    assert!(w.take_events().is_empty());
    w.at(33_000);
    assert_eq!(w.take_events(), [CallEvent::LegNoResponse { call, leg: a }]);
    // A late 487 changes nothing.
    w.feed(answer(&inv_a, 487, Some("btag"), None, None), peer_a());
    assert!(w.take_events().is_empty());
    w.reject_caller(call, 408);
    w.assert_ended(call);
}

#[test]
fn caller_cancel_gets_200_and_487_then_legs_are_cancelled() {
    let mut w = World::new(cfg());
    let caller = caller_invite(Some(SDP_CALLER), &[]);
    let call = w.start_call(caller.clone());
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.feed(answer(&inv_a, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    w.ring_caller(call);
    let r180 = one_to(&w.take(), "180 INVITE", caller_peer()).msg.clone();
    w.feed(wire(&cancel_for(&caller)), caller_peer());
    let out = w.take();
    assert_eq!(names(&out), ["200 CANCEL", "487 INVITE"]);
    assert_eq!(out[1].msg.to_tag(), r180.to_tag());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegRinging { call, leg: a },
            CallEvent::CallerCancelled { call, completed_elsewhere: false }
        ]
    );
    // Too late for anything else toward the caller.
    assert!(w.cm.answer_caller(&mut w.tx, w.now, call, a).is_err());
    w.cancel_leg(call, a, None);
    let cancel = one_to(&w.take(), "CANCEL", peer_a()).msg.clone();
    w.feed(answer(&cancel, 200, Some("btag"), None, None), peer_a());
    w.feed(answer(&inv_a, 487, Some("btag"), None, None), peer_a());
    assert_eq!(
        w.take_events(),
        [CallEvent::LegCancelled { call, leg: a }, CallEvent::CallEnded { call }]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn callee_bye_after_answer_byes_the_caller_in_its_dialog() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let ok = bridged(&mut w, (call, a, b), (&inv_a, &inv_b));
    w.feed(callee_request(&inv_a, "btag", (Method::Bye, 1), "z9hG4bKbbye", None), peer_a());
    let out = w.take();
    assert_eq!(names_to(&out, peer_a()), ["200 BYE"]);
    let s = one_to(&out, "BYE", caller_peer());
    let bye = s.msg.clone();
    assert_eq!(ruri(&bye), "sip:alice@192.0.2.10:5060");
    assert_eq!(bye.header(HeaderName::Route), Some(&b"<sip:rr.a.example;lr>"[..]));
    assert_eq!(bye.call_id().unwrap(), CALLER_CALL_ID.as_bytes());
    assert_eq!(bye.from_tag(), ok.to_tag());
    assert_eq!(bye.to_tag(), Some(&b"atag"[..]));
    let cseq = bye.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Bye));
    assert_eq!(bye.top_via().unwrap().host, b"203.0.113.1");
    for leak in ["btag", "192.0.2.2", std::str::from_utf8(inv_a.call_id().unwrap()).unwrap()] {
        assert!(!s.text().contains(leak), "{leak} leaked to the caller");
    }
    assert_eq!(w.take_events(), [CallEvent::LegHungUp { call, leg: a }]);
    // The engine's ByeCaller is a no-op now.
    w.bye_caller(call);
    assert!(w.take().is_empty());
    // A retransmitted BYE from the callee is absorbed by its transaction.
    w.feed(callee_request(&inv_a, "btag", (Method::Bye, 1), "z9hG4bKbbye", None), peer_a());
    assert_eq!(names(&w.take()), ["200 BYE"]);
    w.feed(answer(&bye, 200, None, None, None), caller_peer());
    w.assert_ended(call);
}

#[test]
fn re_invites_are_relayed_both_ways_with_acks_per_leg() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let ok = bridged(&mut w, (call, a, b), (&inv_a, &inv_b));
    let sdp2 = SDP_CALLER.replace("4000", "4002");
    let bob2 = SDP_BOB.replace("5000", "5002");

    // Caller -> Bob.
    w.at(1000);
    w.feed(caller_request(&ok, Method::Invite, 11, "z9hG4bKre1", Some(&sdp2)), caller_peer());
    let out = w.take();
    let reinv = one_to(&out, "INVITE", bob_peer()).msg.clone();
    assert_eq!(reinv.call_id().unwrap(), inv_a.call_id().unwrap());
    assert_eq!(reinv.cseq().unwrap().seq, 2);
    assert_eq!(ruri(&reinv), "sip:bob@192.0.2.21:5070");
    assert_eq!(reinv.to_tag(), Some(&b"btag"[..]));
    assert_eq!(reinv.from_tag(), inv_a.from_tag());
    assert_eq!(reinv.body(), sdp2.as_bytes());
    assert_eq!(contact_of(&reinv), "sip:forkswitch@203.0.113.1:5060");
    assert!(!out[0].text().contains("atag"));
    w.feed(answer(&reinv, 200, None, Some(BOB_CONTACT), Some(&bob2)), bob_peer());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*", "200 INVITE"]);
    let ack = &out[0].msg;
    assert_eq!(out[0].peer.remote, bob_peer().remote);
    assert_eq!(ack.cseq().unwrap().seq, 2);
    assert!(ack.body().is_empty(), "the re-INVITE had the offer");
    let ok2 = out[1].msg.clone();
    assert_eq!(out[1].peer, caller_peer());
    assert_eq!(ok2.body(), bob2.as_bytes());
    assert_eq!(ok2.cseq().unwrap().seq, 11);
    assert_eq!(contact_of(&ok2), "sip:forkswitch@203.0.113.1:5060");
    w.at(1500);
    assert_eq!(names(&w.take()), ["200 INVITE*"]);
    w.feed(caller_ack(&ok2, 11, None), caller_peer());
    w.at(5000);
    assert!(w.take().iter().all(|s| s.name() != "200 INVITE*"));

    // Bob -> caller.
    let bob3 = SDP_BOB.replace("5000", "5004");
    let caller3 = SDP_CALLER.replace("4000", "4004");
    w.feed(
        callee_request(&inv_a, "btag", (Method::Invite, 7), "z9hG4bKbre", Some(&bob3)),
        peer_a(),
    );
    let out = w.take();
    let reinv = one_to(&out, "INVITE", caller_peer()).msg.clone();
    assert_eq!(reinv.call_id().unwrap(), CALLER_CALL_ID.as_bytes());
    assert_eq!(reinv.cseq().unwrap().seq, 1);
    assert_eq!(ruri(&reinv), "sip:alice@192.0.2.10:5060");
    assert_eq!(reinv.header(HeaderName::Route), Some(&b"<sip:rr.a.example;lr>"[..]));
    assert_eq!(reinv.to_tag(), Some(&b"atag"[..]));
    assert_eq!(reinv.body(), bob3.as_bytes());
    w.feed(
        answer(&reinv, 200, None, Some("<sip:alice@192.0.2.10:5060>"), Some(&caller3)),
        caller_peer(),
    );
    let out = w.take();
    assert_eq!(names(&out), ["ACK*", "200 INVITE"]);
    assert_eq!(out[0].peer, caller_peer());
    assert_eq!(out[0].msg.cseq().unwrap().seq, 1);
    assert_eq!(out[0].msg.header(HeaderName::Route), Some(&b"<sip:rr.a.example;lr>"[..]));
    let ok3 = out[1].msg.clone();
    assert_eq!(out[1].peer, peer_a());
    assert_eq!(ok3.body(), caller3.as_bytes());
    assert_eq!(ok3.cseq().unwrap().seq, 7);
    w.feed(callee_ack(&ok3, None), peer_a());
    w.at(20_000);
    assert!(w.take().iter().all(|s| s.name() != "200 INVITE*"));

    // Hang up from the caller side.
    w.feed(caller_request(&ok, Method::Bye, 12, "z9hG4bKcb", None), caller_peer());
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    assert_eq!(bye.cseq().unwrap().seq, 3);
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    w.assert_ended(call);
}

#[test]
fn info_and_update_are_relayed_with_their_answers() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let ok = bridged(&mut w, (call, a, b), (&inv_a, &inv_b));

    let info = with_body(
        &caller_request(&ok, Method::Info, 11, "z9hG4bKinfo", None),
        "application/dtmf-relay",
        "Signal=5\r\nDuration=160\r\n",
    );
    w.feed(info, caller_peer());
    let relayed = one_to(&w.take(), "INFO", bob_peer()).msg.clone();
    assert_eq!(relayed.content_type(), Some(&b"application/dtmf-relay"[..]));
    assert_eq!(relayed.body(), b"Signal=5\r\nDuration=160\r\n");
    assert_eq!(relayed.call_id().unwrap(), inv_a.call_id().unwrap());
    w.feed(answer(&relayed, 200, None, None, None), bob_peer());
    let out = w.take();
    assert_eq!(names(&out), ["200 INFO"]);
    assert_eq!(out[0].peer, caller_peer());
    assert_eq!(out[0].msg.call_id().unwrap(), CALLER_CALL_ID.as_bytes());

    let bob2 = SDP_BOB.replace("5000", "5008");
    let caller2 = SDP_CALLER.replace("4000", "4008");
    w.feed(
        callee_request(&inv_a, "btag", (Method::Update, 3), "z9hG4bKupd", Some(&bob2)),
        peer_a(),
    );
    let upd = one_to(&w.take(), "UPDATE", caller_peer()).msg.clone();
    assert_eq!(upd.body(), bob2.as_bytes());
    assert_eq!(contact_of(&upd), "sip:forkswitch@203.0.113.1:5060");
    w.feed(
        answer(&upd, 200, None, Some("<sip:alice@192.0.2.10:5060>"), Some(&caller2)),
        caller_peer(),
    );
    let out = w.take();
    assert_eq!(names(&out), ["200 UPDATE"]);
    assert_eq!(out[0].peer, peer_a());
    assert_eq!(out[0].msg.body(), caller2.as_bytes());
    assert_eq!(contact_of(&out[0].msg), "sip:forkswitch@203.0.113.1:5060");

    // A failure is relayed with its code.
    w.feed(caller_request(&ok, Method::Info, 12, "z9hG4bKinfo2", None), caller_peer());
    let relayed = one_to(&w.take(), "INFO", bob_peer()).msg.clone();
    w.feed(answer(&relayed, 415, None, None, None), bob_peer());
    assert_eq!(names(&w.take()), ["415 INFO"]);

    // An out-of-order CSeq is refused (12.2.2).
    w.feed(caller_request(&ok, Method::Info, 5, "z9hG4bKold", None), caller_peer());
    assert_eq!(names(&w.take()), ["500 INFO"]);
    // REFER is not relayed.
    w.feed(caller_request(&ok, Method::Refer, 13, "z9hG4bKref", None), caller_peer());
    assert_eq!(names(&w.take()), ["405 REFER"]);

    w.bye_leg(call, a);
    w.bye_caller(call);
    let out = w.take();
    let bye_a = one_to(&out, "BYE", bob_peer()).msg.clone();
    let bye_c = one_to(&out, "BYE", caller_peer()).msg.clone();
    w.feed(answer(&bye_a, 200, None, None, None), bob_peer());
    w.feed(answer(&bye_c, 200, None, None, None), caller_peer());
    w.assert_ended(call);
}

#[test]
fn a_relayed_request_answered_481_ends_the_call() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let ok = bridged(&mut w, (call, a, b), (&inv_a, &inv_b));
    w.feed(caller_request(&ok, Method::Options, 11, "z9hG4bKopt", None), caller_peer());
    let relayed = one_to(&w.take(), "OPTIONS", bob_peer()).msg.clone();
    w.feed(answer(&relayed, 481, None, None, None), bob_peer());
    let out = w.take();
    assert_eq!(names_to(&out, caller_peer()), ["481 OPTIONS", "BYE"]);
    assert_eq!(w.take_events(), [CallEvent::LegHungUp { call, leg: a }]);
    let bye = one_to(&out, "BYE", caller_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), caller_peer());
    w.assert_ended(call);
}

#[test]
fn delayed_offer_holds_the_leg_ack_until_the_callers_ack_brings_the_answer() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, None);
    for inv in [&inv_a, &inv_b] {
        assert!(inv.body().is_empty());
        assert!(!inv.supports("100rel"), "the offer must come in the 2xx");
    }
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    assert!(w.take().is_empty(), "ACK held");
    assert_eq!(w.take_events(), [CallEvent::LegAnswered { call, leg: a }]);
    // Its 2xx retransmission waits too.
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    assert!(w.take().is_empty());
    w.feed(answer(&inv_b, 100, None, None, None), peer_b());
    w.cancel_leg(call, b, Some(REASON));
    w.answer_caller(call, a);
    let out = w.take();
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    assert_eq!(ok.body(), SDP_BOB.as_bytes(), "the leg's offer goes to the caller");
    let cancel = one_to(&out, "CANCEL", peer_b()).msg.clone();
    w.feed(answer(&cancel, 200, None, None, None), peer_b());
    w.feed(answer(&inv_b, 487, Some("ct"), None, None), peer_b());
    w.take();
    w.feed(caller_ack(&ok, 10, Some(SDP_CALLER)), caller_peer());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*"]);
    assert_eq!(out[0].peer.remote, bob_peer().remote);
    assert_eq!(out[0].msg.body(), SDP_CALLER.as_bytes(), "the caller's answer in the ACK");
    assert_eq!(out[0].msg.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(out[0].msg.cseq().unwrap().seq, 1);
    // Now a 2xx retransmission gets that ACK.
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    let again = w.take();
    assert_eq!(names(&again), ["ACK*"]);
    assert_eq!(again[0].msg.to_bytes(), out[0].msg.to_bytes());

    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKcb", None), caller_peer());
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    w.assert_ended(call);
}

#[test]
fn ack_and_bye_puts_the_ack_before_the_bye() {
    // Delayed offer: both ACK and BYE go out in the ack_and_bye call.
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, None);
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.feed(
        answer(&inv_b, 200, Some("ctag"), Some("<sip:carol@192.0.2.30>"), Some(SDP_CAROL)),
        peer_b(),
    );
    assert!(w.take().is_empty());
    w.answer_caller(call, a);
    w.ack_and_bye(call, b);
    let out = w.take();
    assert_eq!(names_to(&out, peer_b()), ["ACK*", "BYE"]);
    let ack_pos = out.iter().position(|s| s.name() == "ACK*").unwrap();
    let bye_pos = out.iter().position(|s| s.name() == "BYE").unwrap();
    assert!(ack_pos < bye_pos);
    assert!(out[ack_pos].msg.body().is_empty());
    let bye = out[bye_pos].msg.clone();
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.to_tag(), Some(&b"ctag"[..]));
    // Idempotent.
    w.ack_and_bye(call, b);
    assert!(w.take().is_empty());
    w.feed(answer(&bye, 200, None, None, None), peer_b());
    assert!(w.take_events().contains(&CallEvent::LegEnded { call, leg: b }));
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    w.feed(caller_ack(&ok, 10, Some(SDP_CALLER)), caller_peer());
    assert_eq!(names(&w.take()), ["ACK*"]);
    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKcb", None), caller_peer());
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    w.assert_ended(call);

    // Offer in the INVITE: the ACK went at once, the BYE follows.
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.feed(
        answer(&inv_b, 200, Some("ctag"), Some("<sip:carol@192.0.2.30>"), Some(SDP_CAROL)),
        peer_b(),
    );
    w.answer_caller(call, a);
    w.ack_and_bye(call, b);
    let out = w.take();
    assert_eq!(names_to(&out, peer_b()), ["ACK*", "BYE"]);
    let bye = one_to(&out, "BYE", peer_b()).msg.clone();
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), peer_b());
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKcb", None), caller_peer());
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegAnswered { call, leg: a },
            CallEvent::LegAnswered { call, leg: b },
            CallEvent::LegEnded { call, leg: b },
            CallEvent::CallerHungUp { call },
            CallEvent::LegEnded { call, leg: a },
            CallEvent::CallEnded { call },
        ]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn reliable_183_is_pracked_in_order_per_early_dialog() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let rel = |rseq: &str| {
        let r = answer(&inv_a, 183, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB));
        with_header(&with_header(&r, "Require", "100rel"), "RSeq", rseq)
    };
    w.feed(rel("7"), peer_a());
    let out = w.take();
    assert_eq!(names(&out), ["PRACK"]);
    let prack = out[0].msg.clone();
    assert_eq!(out[0].peer.remote, bob_peer().remote, "to the early dialog's target");
    assert_eq!(prack.header(HeaderName::RAck), Some(&b"7 1 INVITE"[..]));
    let cseq = prack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (2, Method::Prack));
    assert_eq!(prack.to_tag(), Some(&b"btag"[..]));
    assert_eq!(prack.call_id().unwrap(), inv_a.call_id().unwrap());
    assert_eq!(w.take_events(), [CallEvent::LegEarlyMedia { call, leg: a }]);
    w.feed(answer(&prack, 200, None, None, None), bob_peer());
    // A retransmission and an out-of-order one are not PRACKed.
    w.feed(rel("7"), peer_a());
    w.feed(rel("9"), peer_a());
    assert!(w.take().is_empty());
    w.feed(rel("8"), peer_a());
    let prack2 = one(&w.take(), "PRACK").msg.clone();
    assert_eq!(prack2.header(HeaderName::RAck), Some(&b"8 1 INVITE"[..]));
    assert_eq!(prack2.cseq().unwrap().seq, 3);
    w.feed(answer(&prack2, 200, None, None, None), bob_peer());

    w.early_media_caller(call, a);
    let r183 = one_to(&w.take(), "183 INVITE", caller_peer()).msg.clone();
    assert_eq!(r183.body(), SDP_BOB.as_bytes());
    assert!(!r183.requires("100rel"), "the caller did not ask for 100rel");

    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    assert_eq!(one(&w.take(), "ACK*").msg.cseq().unwrap().seq, 1);
    w.feed(answer(&inv_b, 603, Some("ct"), None, None), peer_b());
    assert_eq!(
        w.take_events(),
        [CallEvent::LegAnswered { call, leg: a }, CallEvent::LegFailed { call, leg: b, code: 603 }]
    );
    w.answer_caller(call, a);
    let ok = one_to(&w.take(), "200 INVITE", caller_peer()).msg.clone();
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.bye_leg(call, a);
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    assert_eq!(bye.cseq().unwrap().seq, 4, "after the PRACKs of the early dialog");
    w.bye_caller(call);
    let bye_c = one_to(&w.take(), "BYE", caller_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    w.feed(answer(&bye_c, 200, None, None, None), caller_peer());
    w.assert_ended(call);
}

#[test]
fn reliable_provisionals_to_a_caller_that_supports_100rel() {
    let mut cfg = cfg();
    cfg.send_100rel_to_caller = true;
    let mut w = World::new(cfg);
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[("Supported", "100rel")]));
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.ring_caller(call);
    let out = w.take();
    let r180 = one_to(&out, "180 INVITE", caller_peer()).msg.clone();
    assert!(r180.requires("100rel"));
    let rseq = r180.rseq().unwrap().unwrap();
    w.at(500);
    assert_eq!(times(&w.take(), "180 INVITE"), [500], "retransmitted until the PRACK");
    let prack = with_header(
        &caller_request(&r180, Method::Prack, 11, "z9hG4bKpr", None),
        "RAck",
        &format!("{rseq} 10 INVITE"),
    );
    w.feed(prack, caller_peer());
    assert_eq!(names(&w.take()), ["200 PRACK"]);
    w.at(10_000);
    assert!(w.take().iter().all(|s| s.name() != "180 INVITE"));
    // A PRACK for nothing unacknowledged gets a 481.
    let stale = with_header(
        &caller_request(&r180, Method::Prack, 12, "z9hG4bKpr2", None),
        "RAck",
        &format!("{rseq} 10 INVITE"),
    );
    w.feed(stale, caller_peer());
    assert_eq!(names(&w.take()), ["481 PRACK"]);

    // Early media, reliable with SDP: the 200 waits for its PRACK.
    w.feed(answer(&inv_a, 183, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.early_media_caller(call, a);
    let r183 = one_to(&w.take(), "183 INVITE", caller_peer()).msg.clone();
    assert_eq!(r183.rseq().unwrap(), Some(rseq + 1));
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.answer_caller(call, a);
    assert!(w.take().iter().all(|s| s.name() != "200 INVITE"), "held until the PRACK");
    let prack = with_header(
        &caller_request(&r183, Method::Prack, 13, "z9hG4bKpr3", None),
        "RAck",
        &format!("{} 10 INVITE", rseq + 1),
    );
    w.feed(prack, caller_peer());
    let out = w.take();
    assert_eq!(names_to(&out, caller_peer()), ["200 PRACK", "200 INVITE"]);
    let ok = one(&out, "200 INVITE").msg.clone();
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    w.feed(caller_request(&ok, Method::Bye, 14, "z9hG4bKcb", None), caller_peer());
    let bye = one_to(&w.take(), "BYE", bob_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), bob_peer());
    w.assert_ended(call);
}

#[test]
fn in_dialog_requests_for_unknown_dialogs_get_481_and_others_are_given_back() {
    let mut w = World::new(cfg());
    let bye = Message::request(Method::Bye, "sip:forkswitch@203.0.113.1:5060")
        .header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKnone")
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, "<sip:x@x.example>;tag=x1")
        .header(HeaderName::To, "<sip:y@y.example>;tag=nope")
        .header(HeaderName::CallId, "no-such-call")
        .header(HeaderName::CSeq, "5 BYE")
        .build();
    w.feed(wire(&bye), peer("192.0.2.99:5060"));
    assert_eq!(names(&w.take()), ["481 BYE"]);
    assert!(w.given_back.is_empty());
    // Out-of-dialog requests are not ours.
    let opts = Message::request(Method::Options, "sip:forkswitch@203.0.113.1:5060")
        .header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKopts")
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, "<sip:x@x.example>;tag=x1")
        .header(HeaderName::To, "<sip:y@y.example>")
        .header(HeaderName::CallId, "opts-1")
        .header(HeaderName::CSeq, "1 OPTIONS")
        .build();
    w.feed(wire(&opts), peer("192.0.2.99:5060"));
    assert!(matches!(w.given_back.as_slice(), [sip_transaction::Event::NewRequest { .. }]));
    assert!(w.cm.is_empty() && w.cm.poll_timeout().is_none());
}

#[test]
fn caller_bye_on_the_early_dialog_is_a_cancel() {
    let mut w = World::new(cfg());
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[]));
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.feed(answer(&inv_a, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    w.ring_caller(call);
    let r180 = one_to(&w.take(), "180 INVITE", caller_peer()).msg.clone();
    w.feed(caller_request(&r180, Method::Bye, 11, "z9hG4bKeb", None), caller_peer());
    assert_eq!(names(&w.take()), ["200 BYE", "487 INVITE"]);
    w.cancel_leg(call, a, None);
    let cancel = one(&w.take(), "CANCEL").msg.clone();
    w.feed(answer(&cancel, 200, None, None, None), peer_a());
    w.feed(answer(&inv_a, 487, Some("btag"), None, None), peer_a());
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegRinging { call, leg: a },
            CallEvent::CallerCancelled { call, completed_elsewhere: false },
            CallEvent::LegCancelled { call, leg: a },
            CallEvent::CallEnded { call },
        ]
    );
    assert!(w.cm.is_empty());
}

#[test]
fn misuse_is_refused_without_sending_anything() {
    let mut w = World::new(cfg());
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[]));
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    let now = w.now;
    assert!(w.cm.answer_caller(&mut w.tx, now, call, a).is_err(), "not answered yet");
    assert!(w.cm.early_media_caller(&mut w.tx, now, call, a).is_err(), "no early SDP");
    assert!(w.cm.bye_leg(&mut w.tx, now, call, a).is_err());
    assert!(w.cm.reject_caller(&mut w.tx, now, call, 200).is_err());
    let mut bad = target("bob", peer_a());
    bad.request_uri = "sip:bob@b.example\r\nX-Evil: 1".to_owned();
    assert!(w.cm.dial(&mut w.tx, now, call, bad).is_err());
    assert!(w.take().is_empty());
    let mut extra = target("carol", peer_b());
    extra.extra_headers.push(("X-Bad".to_owned(), "a\r\nInjected: 1".to_owned()));
    extra.extra_headers.push(("Bad Name".to_owned(), "x".to_owned()));
    let b = w.dial(call, extra);
    let out = w.take();
    assert_eq!(names(&out), ["INVITE"]);
    assert!(!out[0].text().contains("Injected") && !out[0].text().contains("Bad Name"));
    assert!(out[0].text().contains("X-Leg: carol"));
    // End it: B fails, A is cancelled after its 100, the caller is rejected.
    w.feed(answer(&out[0].msg, 404, Some("ct"), None, None), peer_b());
    w.feed(answer(&inv_a, 100, None, None, None), peer_a());
    w.cancel_leg(call, a, None);
    let cancel = one(&w.take(), "CANCEL").msg.clone();
    w.feed(answer(&cancel, 200, None, None, None), peer_a());
    w.feed(answer(&inv_a, 487, Some("bt"), None, None), peer_a());
    w.reject_caller(call, 404);
    assert_eq!(
        w.take_events(),
        [
            CallEvent::LegFailed { call, leg: b, code: 404 },
            CallEvent::LegTrying { call, leg: a },
            CallEvent::LegCancelled { call, leg: a },
            CallEvent::CallEnded { call },
        ]
    );
    // The handle is freed.
    let now = w.now;
    assert_eq!(w.cm.ring_caller(&mut w.tx, now, call), Err(b2bua::B2buaError::UnknownCall));
    assert!(w.cm.is_empty());
}

#[test]
fn a_re_invite_without_sdp_holds_the_leg_ack_and_glare_gets_491() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    let ok = bridged(&mut w, (call, a, b), (&inv_a, &inv_b));
    let bob2 = SDP_BOB.replace("5000", "5010");
    let caller2 = SDP_CALLER.replace("4000", "4010");
    w.feed(caller_request(&ok, Method::Invite, 11, "z9hG4bKdo", None), caller_peer());
    let reinv = one_to(&w.take(), "INVITE", bob_peer()).msg.clone();
    assert!(reinv.body().is_empty());
    // Bob re-INVITEs at the same time: glare.
    w.feed(callee_request(&inv_a, "btag", (Method::Invite, 4), "z9hG4bKgl", Some(&bob2)), peer_a());
    assert_eq!(names(&w.take()), ["491 INVITE"]);
    w.feed(answer(&reinv, 200, None, Some(BOB_CONTACT), Some(&bob2)), bob_peer());
    let out = w.take();
    assert_eq!(names(&out), ["200 INVITE"], "the ACK waits for the caller's answer");
    let ok2 = out[0].msg.clone();
    assert_eq!(ok2.body(), bob2.as_bytes());
    w.feed(caller_ack(&ok2, 11, Some(&caller2)), caller_peer());
    let out = w.take();
    assert_eq!(names(&out), ["ACK*"]);
    assert_eq!(out[0].peer.remote, bob_peer().remote);
    assert_eq!(out[0].msg.body(), caller2.as_bytes());
    assert_eq!(out[0].msg.cseq().unwrap().seq, 2);
    w.feed(callee_request(&inv_a, "btag", (Method::Bye, 5), "z9hG4bKbb", None), peer_a());
    let bye = one_to(&w.take(), "BYE", caller_peer()).msg.clone();
    w.feed(answer(&bye, 200, None, None, None), caller_peer());
    w.assert_ended(call);
}

#[test]
fn over_tcp_the_2xx_is_not_retransmitted_but_the_ack_is_still_awaited() {
    let mut w = World::new(cfg());
    let mut tcp = caller_peer();
    tcp.transport = sip_message::Transport::Tcp;
    tcp.conn = Some(7);
    let inv = caller_invite(Some(SDP_CALLER), &[]);
    w.feed(inv, tcp);
    let call = match w.given_back.pop() {
        Some(sip_transaction::Event::NewRequest { key, request, peer }) => {
            w.cm.accept_inbound(key, request, peer)
        }
        other => panic!("{other:?}"),
    };
    let a = w.dial(call, target("bob", peer_a()));
    let inv_a = invite_to(&w.take(), peer_a());
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.answer_caller(call, a);
    let out = w.take();
    let ok = one(&out, "200 INVITE");
    assert_eq!(ok.peer, tcp);
    assert_eq!(contact_of(&ok.msg), "sip:forkswitch@203.0.113.1:5060;transport=tcp");
    w.at(31_999);
    assert!(w.take().iter().all(|s| s.name() != "200 INVITE*"));
    w.at(32_000);
    let out = w.take();
    let bye = one_to(&out, "BYE", tcp).clone();
    assert_eq!(bye.peer.conn, Some(7), "the caller's connection is reused");
    assert_eq!(bye.msg.top_via().unwrap().transport, b"TCP");
    let bye_bob = one_to(&out, "BYE", bob_peer()).msg.clone();
    w.feed(answer(&bye.msg, 200, None, None, None), tcp);
    w.feed(answer(&bye_bob, 200, None, None, None), bob_peer());
    assert!(w.events.contains(&CallEvent::CallerNoAck { call }));
    w.assert_ended(call);
}

/// A leg to a trunk that challenges: 100 Trying, then 401; the leg's INVITE
/// goes again with credentials (CSeq 2). Returns the call, the leg and the
/// new INVITE.
fn challenged_leg(w: &mut World) -> (CallRef, LegRef, Message) {
    let call = w.start_call(caller_invite(Some(SDP_CALLER), &[]));
    let mut t = target("bob", peer_a());
    t.credentials = Some(("trunkuser".to_owned(), "trunkpass".to_owned()));
    let a = w.dial(call, t);
    let inv1 = invite_to(&w.take(), peer_a());
    w.feed(answer(&inv1, 100, None, None, None), peer_a());
    let challenge = answer(&inv1, 401, Some("t401"), None, None);
    let challenge = with_header(
        &challenge,
        "WWW-Authenticate",
        "Digest realm=\"trunk\", nonce=\"n1\", algorithm=MD5",
    );
    w.feed(challenge, peer_a());
    let out = w.take();
    let inv2 = invite_to(&out, peer_a());
    assert_eq!(inv2.cseq().unwrap().seq, 2);
    assert!(inv2.header(HeaderName::Authorization).is_some());
    (call, a, inv2)
}

/// Simulation seed 1 (300 calls): the 100 Trying to the challenged INVITE
/// let the CANCEL of the INVITE sent with credentials go out before any
/// provisional response to it (RFC 3261 9.1).
#[test]
fn the_invite_sent_with_credentials_is_cancelled_only_after_its_own_provisional() {
    let mut w = World::new(cfg());
    let (call, a, inv2) = challenged_leg(&mut w);
    w.cancel_leg(call, a, None);
    assert!(w.take().iter().all(|s| s.name() != "CANCEL"), "9.1: not before a provisional");
    w.feed(answer(&inv2, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    let cancel = one_to(&w.take(), "CANCEL", peer_a()).msg.clone();
    assert_eq!(cancel.cseq().unwrap().seq, 2);
    assert_eq!(cancel.top_via().unwrap().branch(), inv2.top_via().unwrap().branch());
}

/// Simulation seed 1 (300 calls): the end (Timer D) of the challenged INVITE
/// transaction was taken for the end of the leg's INVITE: the leg "gave up"
/// while the INVITE sent with credentials still rang, and was never
/// CANCELed; its client transaction lived on forever.
#[test]
fn the_end_of_the_challenged_transaction_does_not_end_the_leg() {
    let mut w = World::new(cfg());
    let (call, a, inv2) = challenged_leg(&mut w);
    w.feed(answer(&inv2, 180, Some("btag"), Some(BOB_CONTACT), None), peer_a());
    w.take_events();
    // Timer D of the first transaction (32 s) passes: the leg still rings.
    w.at(40_000);
    assert!(w.take_events().is_empty(), "no event for the challenged transaction's end");
    w.cancel_leg(call, a, None);
    let cancel = one_to(&w.take(), "CANCEL", peer_a()).msg.clone();
    assert_eq!(cancel.cseq().unwrap().seq, 2);
    w.feed(answer(&cancel, 200, Some("btag"), None, None), peer_a());
    w.feed(answer(&inv2, 487, Some("btag"), None, None), peer_a());
    assert_eq!(w.take_events(), [CallEvent::LegCancelled { call, leg: a }]);
    w.reject_caller(call, 487);
    w.assert_ended(call);
}

/// Simulation seed 1 (500 calls): the callee hung up while our 2xx to the
/// caller still waited for its ACK (our BYE waits for it, RFC 3261 15);
/// the caller's own BYE then got a 481, and once its ACK came we sent a BYE
/// into the dialog it had ended. The dialog still exists until our BYE
/// goes out: the caller's BYE gets 200 and ends it (15.1.2).
#[test]
fn a_caller_bye_while_our_bye_waits_for_its_ack_gets_200_and_ends_the_dialog() {
    let mut w = World::new(cfg());
    let (call, a, b, inv_a, inv_b) = two_legs(&mut w, Some(SDP_CALLER));
    w.feed(answer(&inv_b, 180, Some("ctag"), Some("<sip:carol@192.0.2.30>"), None), peer_b());
    w.feed(answer(&inv_a, 200, Some("btag"), Some(BOB_CONTACT), Some(SDP_BOB)), peer_a());
    w.cancel_leg(call, b, Some(REASON));
    w.answer_caller(call, a);
    let out = w.take();
    let cancel = one_to(&out, "CANCEL", peer_b()).msg.clone();
    let ok = one_to(&out, "200 INVITE", caller_peer()).msg.clone();
    w.feed(answer(&cancel, 200, Some("ctag"), None, None), peer_b());
    w.feed(answer(&inv_b, 487, Some("ctag"), None, None), peer_b());
    w.take();
    w.take_events();
    // The callee hangs up before the caller's ACK came: our BYE waits.
    w.feed(callee_request(&inv_a, "btag", (Method::Bye, 1), "z9hG4bKbbye", None), peer_a());
    assert_eq!(names(&w.take()), ["200 BYE"]);
    assert_eq!(w.take_events(), [CallEvent::LegHungUp { call, leg: a }]);
    w.bye_caller(call);
    assert!(w.take().is_empty(), "no BYE to the caller before its ACK");
    // The caller hangs up too: its dialog is still there.
    w.feed(caller_request(&ok, Method::Bye, 11, "z9hG4bKcbye", None), caller_peer());
    assert_eq!(names(&w.take()), ["200 BYE"]);
    // Its late ACK brings no BYE from us: the dialog is over.
    w.feed(caller_ack(&ok, 10, None), caller_peer());
    assert!(w.take().iter().all(|s| s.name() != "BYE"), "no BYE into the ended dialog");
    w.at(40_000);
    assert!(w.take().iter().all(|s| s.name() != "BYE" && s.name() != "200 INVITE"));
    w.assert_ended(call);
}
