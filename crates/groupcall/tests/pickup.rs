//! A pickup answers a ringing fork through the one-answer rule: the
//! caller is answered with a leg of its own, every ringing leg is
//! CANCELed with the Reason, a member's late 2xx is ACKed and BYEd, and
//! nothing can be picked up once answered.

mod common;

use common::*;
use groupcall::{Action, LegEvent, LegTarget, Record};

#[test]
fn a_pickup_is_the_one_answer_and_cancels_the_ringing_legs() {
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1);
    let (mut h, a) = H::started(ring_all(vec![ep("a@t"), ep("b@t")]), &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 1]);
    h.ev(0, LegEvent::Ringing);
    h.ev(1, LegEvent::Ringing);
    assert!(h.fork.is_ringing());
    assert_eq!(h.fork.ringing_legs().count(), 2);
    h.at(3);
    let (leg, a) = h.pick_up("c@t");
    let leg = leg.expect("the call rang");
    assert_eq!(h.fork.leg_target(leg), Some(&LegTarget::Pickup { aor: "c@t".into() }));
    assert!(a.contains(&Action::AnswerCaller { leg }), "{a:?}");
    let cancels = a.iter().filter(|a| matches!(a, Action::Cancel { reason: Some(_), .. })).count();
    assert_eq!(cancels, 2, "{a:?}");
    assert!(!h.fork.is_ringing());
    // A second pickup, and a member's 2xx crossing the CANCEL.
    let (again, a) = h.pick_up("d@t");
    assert!(again.is_none() && a.is_empty(), "{a:?}");
    let a = h.ev(0, LegEvent::Answered);
    assert!(matches!(a.as_slice(), [Action::AckAndBye { .. }]), "{a:?}");
    h.ev(0, LegEvent::Ended);
    h.ev(1, LegEvent::Cancelled);
    // The pickup's record is the answer, its destination the picker.
    let answer = h.fork.root().answer_call_id;
    let rec = h.fork.call(answer).expect("the pickup's call record");
    assert_eq!(rec.destination.target, "c@t");
    assert!(!rec.tm_progressing.is_not_yet());
    let a = h.caller_bye();
    assert!(a.contains(&Action::Bye { leg }), "{a:?}");
    h.ev(leg.0, LegEvent::Ended);
    assert!(h.fork.is_finished());
    assert!(h.log.iter().any(
        |a| matches!(a, Action::RecordChanged(Record::Groupcall(g)) if g.answer_call_id == answer)
    ));
    h.finish();
}

#[test]
fn nothing_is_picked_up_before_the_start_or_after_a_reject() {
    let dir = Dir::new().endpoint("a@t", 1);
    let mut h = H::build(ring_all(vec![ep("a@t")]), &dir, cfg()).expect("build");
    assert!(h.pick_up("c@t").0.is_none(), "not started");
    h.start();
    h.caller_cancel();
    assert!(h.pick_up("c@t").0.is_none(), "cancelled");
}
