//! Unit tests of the fork rules, on virtual time.

mod common;

use common::*;
use groupcall::{
    Action, BuildError, CancelReason, ForkConfig, GroupDef, LegEvent, LegId, LegTarget,
};
use records::{
    AddressType, CallStatus, Direction, GroupcallStatus, HangupBy, HangupReason, RingMethod, NIL,
};
use uuid::Uuid;

use Action::*;
use LegEvent::*;

const CE: Option<CancelReason> = Some(CancelReason::CompletedElsewhere);

fn three_sip() -> Vec<groupcall::Destination> {
    vec![sip("a@example.com"), sip("sip:b@example.com"), tel("+15550000003")]
}

#[test]
fn ring_all_first_answer_wins() {
    let (mut h, a) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    assert_eq!(dial_legs(&a), vec![0, 1, 2]);
    assert!(
        matches!(&a[0], Dial { target: LegTarget::Sip { uri }, .. } if uri == "sip:a@example.com")
    );
    assert!(
        matches!(&a[2], Dial { target: LegTarget::Tel { number }, .. } if number == "+15550000003")
    );
    assert_eq!(h.fork.root().call_ids.len(), 3);
    assert_eq!(h.ev(0, Trying), vec![]);
    assert_eq!(h.at(1).ev(0, Ringing), vec![RelayRinging]);
    assert_eq!(h.call(0).status, CallStatus::Ringing);
    assert_eq!(h.call(0).tm_ringing, H::wall(1));

    assert_eq!(
        h.at(5).ev(1, Answered),
        vec![
            AnswerCaller { leg: LegId(1) },
            Cancel { leg: LegId(0), reason: CE },
            Cancel { leg: LegId(2), reason: CE },
        ]
    );
    let win = h.call(1);
    let root = h.fork.root().clone();
    assert_eq!(root.answer_call_id, win.id);
    assert_eq!(root.answer_groupcall_id, NIL);
    assert_eq!(root.status, GroupcallStatus::Progressing);
    assert_eq!(win.status, CallStatus::Progressing);
    assert_eq!(win.tm_progressing, H::wall(5));
    assert_eq!(win.direction, Direction::Outgoing);
    assert_eq!(win.groupcall_id, root.id);
    assert_eq!(win.source, root.source);
    assert_eq!(win.destination.target, "sip:b@example.com");
    for l in [0, 2] {
        let c = h.call(l);
        assert_eq!(c.status, CallStatus::Canceling);
        assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Cancel));
    }
    assert_eq!(h.ev(0, Cancelled), vec![]);
    assert_eq!(h.ev(2, Cancelled), vec![]);
    assert_eq!(h.call(2).status, CallStatus::Hangup);
    assert_eq!(h.fork.root().status, GroupcallStatus::Progressing, "answered is progressing");
    assert_eq!(h.at(60).ev(1, HungUp), vec![ByeCaller, Finished]);
    let win = h.call(1);
    assert_eq!(win.status, CallStatus::Hangup);
    assert_eq!((win.hangup_by, win.hangup_reason), (HangupBy::Remote, HangupReason::Normal));
    assert_eq!(win.tm_hangup, H::wall(60));
    assert_eq!(h.fork.root().status, GroupcallStatus::Hangup);
    assert_eq!(h.fork.root().answer_call_id, win.id);
    h.finish();
    // Nothing after Finished.
    assert_eq!(h.ev(0, Answered), vec![]);
    assert_eq!(h.fork.poll_timeout(), None);
}

#[test]
fn ring_all_without_reason_header() {
    let mut def = ring_all(three_sip());
    def.send_reason = false;
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    let a = h.ev(2, Answered);
    assert!(a.contains(&Cancel { leg: LegId(0), reason: None }));
    assert!(a.contains(&Cancel { leg: LegId(1), reason: None }));
}

#[test]
fn second_answer_is_acked_and_byed() {
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    h.ev(0, Answered);
    let first = h.fork.root().answer_call_id;
    // 200 crossing our CANCEL.
    assert_eq!(h.at(1).ev(1, Answered), vec![AckAndBye { leg: LegId(1) }]);
    assert_eq!(h.fork.root().answer_call_id, first);
    assert_eq!(h.ev(1, Ended), vec![]);
    let c = h.call(1);
    assert_eq!(c.status, CallStatus::Hangup);
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Cancel));
    assert!(c.tm_progressing.is_not_yet(), "the loser never talked");
    h.ev(2, Cancelled);
    assert_eq!(h.caller_bye(), vec![Bye { leg: LegId(0) }]);
    assert_eq!(h.call(0).status, CallStatus::Terminating);
    assert_eq!(h.ev(0, Ended), vec![Finished]);
    let c = h.call(0);
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Normal));
    h.finish();
}

#[test]
fn linear_busy_then_ring_timeout_then_answer() {
    let def = linear(vec![sip("a@x"), timed(sip("b@x"), 10), sip("c@x")]);
    let (mut h, a) = H::started(def, &Dir::new(), cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    assert_eq!(h.next_deadline(), Some(30));
    assert_eq!(dial_legs(&h.at(2).ev(0, Failed { code: 486 })), vec![1]);
    assert_eq!(h.call(0).hangup_reason, HangupReason::Busy);
    assert_eq!(h.call(1).tm_create, H::wall(2));
    assert_eq!(h.next_deadline(), Some(12));
    h.ev(1, Ringing);
    let (t, a) = h.tick();
    assert_eq!(t, 12);
    assert_eq!(a[0], Cancel { leg: LegId(1), reason: None });
    assert_eq!(dial_legs(&a), vec![2]);
    let b = h.call(1);
    assert_eq!((b.status, b.hangup_reason), (CallStatus::Canceling, HangupReason::Noanswer));
    assert_eq!(h.next_deadline(), Some(42));
    h.ev(1, Cancelled);
    assert_eq!(h.call(1).status, CallStatus::Hangup);
    assert_eq!(h.call(1).hangup_reason, HangupReason::Noanswer);
    assert_eq!(h.at(20).ev(2, Answered), vec![AnswerCaller { leg: LegId(2) }]);
    let root = h.fork.root().clone();
    let ids: Vec<Uuid> = (0..3).map(|l| h.fork.leg_call_id(LegId(l)).unwrap()).collect();
    assert_eq!(root.call_ids, ids, "call_ids in dial order");
    assert_eq!(root.answer_call_id, ids[2]);
    assert_eq!(h.next_deadline(), None, "no timers during the conversation");
    assert_eq!(h.at(100).ev(2, HungUp), vec![ByeCaller, Finished]);
    h.finish();
}

#[test]
fn linear_exhausted_gives_best_response() {
    let def = linear(vec![sip("a@x"), timed(sip("b@x"), 5), sip("c@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    h.ev(0, Failed { code: 503 });
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (5, vec![2]));
    // codes: 503, 480 (no answer), 404 -> 4xx, first received.
    assert_eq!(h.at(6).ev(2, Failed { code: 404 }), vec![RejectCaller { code: 480 }]);
    assert_eq!(h.fork.root().status, GroupcallStatus::Progressing, "leg b still cancelling");
    assert_eq!(h.ev(1, Cancelled), vec![Finished]);
    assert_eq!(h.call(2).hangup_reason, HangupReason::Failed);
    h.finish();
}

#[test]
fn linear_late_answer_after_ring_timeout_is_accepted() {
    let def = linear(vec![timed(sip("a@x"), 10), sip("b@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    h.ev(0, Ringing);
    let (_, a) = h.tick();
    assert_eq!(dial_legs(&a), vec![1]);
    // a's 200 crosses our CANCEL while b rings: take it.
    assert_eq!(
        h.at(11).ev(0, Answered),
        vec![AnswerCaller { leg: LegId(0) }, Cancel { leg: LegId(1), reason: CE }]
    );
    let c = h.call(0);
    assert_eq!(c.status, CallStatus::Canceling, "statuses never go back");
    assert_eq!(c.tm_progressing, H::wall(11));
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::None, HangupReason::None));
    assert_eq!(h.fork.root().answer_call_id, c.id);
    h.ev(1, Cancelled);
    assert_eq!(h.at(50).ev(0, HungUp), vec![ByeCaller, Finished]);
    let c = h.call(0);
    assert_eq!((c.status, c.hangup_reason), (CallStatus::Hangup, HangupReason::Normal));
    h.finish();
}

#[test]
fn late_answer_after_the_caller_was_rejected_is_acked_and_byed() {
    let def = linear(vec![timed(sip("a@x"), 10)]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    assert_eq!(
        h.tick().1,
        vec![Cancel { leg: LegId(0), reason: None }, RejectCaller { code: 480 }]
    );
    assert_eq!(h.at(11).ev(0, Answered), vec![AckAndBye { leg: LegId(0) }]);
    assert_eq!(h.ev(0, Ended), vec![Finished]);
    h.finish();
}

#[test]
fn ring_all_destination_ring_timeout() {
    let def = ring_all(vec![timed(sip("a@x"), 5), sip("b@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    assert_eq!(h.tick(), (5, vec![Cancel { leg: LegId(0), reason: None }]));
    assert_eq!(h.call(0).hangup_reason, HangupReason::Noanswer);
    // 480 (no answer) was received before the 404: first of the 4xx class.
    assert_eq!(h.at(7).ev(1, Failed { code: 404 }), vec![RejectCaller { code: 480 }]);
    h.ev(0, Cancelled);
    h.finish();
}

fn nested_dir() -> (Dir, GroupDef, GroupDef) {
    let g2 = ring_all(vec![sip("z@x"), tel("+15550000002")]);
    let g1 = ring_all(vec![sip("y@x"), grp("200")]);
    let dir = Dir::new().endpoint("e@test", 2).group("100", g1.clone()).group("200", g2.clone());
    (dir, g1, g2)
}

#[test]
fn nested_answer_deep_in_a_child() {
    let (dir, _, g2def) = nested_dir();
    let def = ring_all(vec![sip("x@x"), grp("100"), ep("e@test")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    // x, y, z, tel, e#0, e#1
    assert_eq!(dial_legs(&a), vec![0, 1, 2, 3, 4, 5]);
    let root = h.fork.root().clone();
    assert_eq!(root.groupcall_ids.len(), 2);
    let g1 = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    let ge = h.fork.groupcall(root.groupcall_ids[1]).unwrap().clone();
    let g2 = h.fork.groupcall(g1.groupcall_ids[0]).unwrap().clone();
    assert_eq!(g1.master_groupcall_id, root.id);
    assert_eq!(g2.master_groupcall_id, g1.id);
    assert_eq!(ge.master_groupcall_id, root.id);
    for g in [&g1, &g2, &ge] {
        assert_eq!(g.master_call_id, root.master_call_id);
        assert_eq!(g.customer_id, root.customer_id);
    }
    assert_eq!(g2.ring_method, g2def.ring_method);
    assert_eq!(g2.call_ids.len(), 2);
    assert_eq!(ge.call_ids.len(), 2);
    assert_eq!(h.call(2).groupcall_id, g2.id);

    let a = h.at(3).ev(2, Answered);
    assert_eq!(a[0], AnswerCaller { leg: LegId(2) });
    let mut cancelled: Vec<u32> = a
        .iter()
        .filter_map(|a| match a {
            Cancel { leg, reason } if *reason == CE => Some(leg.0),
            _ => None,
        })
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, vec![0, 1, 3, 4, 5], "hangup_others reaches every level");
    let z = h.call(2).id;
    let g2 = h.fork.groupcall(g2.id).unwrap().clone();
    assert_eq!((g2.answer_call_id, g2.answer_groupcall_id), (z, NIL));
    let g1 = h.fork.groupcall(g1.id).unwrap().clone();
    assert_eq!((g1.answer_call_id, g1.answer_groupcall_id), (z, g2.id));
    let root = h.fork.root();
    assert_eq!((root.answer_call_id, root.answer_groupcall_id), (z, g1.id));
    assert_eq!(h.fork.groupcall(ge.id).unwrap().answer_call_id, NIL);

    for l in [0, 1, 3, 4, 5] {
        h.ev(l, Cancelled);
    }
    assert_eq!(h.fork.groupcall(ge.id).unwrap().status, GroupcallStatus::Hangup);
    assert_eq!(h.fork.groupcall(g2.id).unwrap().status, GroupcallStatus::Progressing);
    assert_eq!(h.caller_bye(), vec![Bye { leg: LegId(2) }]);
    assert_eq!(h.ev(2, Ended), vec![Finished]);
    h.finish();
}

#[test]
fn endpoint_contacts_and_endpoint_without_contacts() {
    let dir = Dir::new().endpoint("a@test", 2).endpoint("b@test", 0);
    let def = ring_all(vec![ep("a@test"), ep("b@test"), sip("c@x")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 1, 2]);
    match &a[0] {
        Dial { target: LegTarget::Contact { aor, contact }, .. } => {
            assert_eq!(aor, "a@test");
            assert_eq!(contact.uri, "sip:a@10.0.0.1");
        }
        other => panic!("{other:?}"),
    }
    let root = h.fork.root().clone();
    assert_eq!(root.groupcall_ids.len(), 1, "no child for an endpoint without contacts");
    let child = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    assert_eq!(child.ring_method, RingMethod::RingAll);
    assert_eq!(child.call_ids.len(), 2);
    assert_eq!(root.call_ids.len(), 1);
    let c = h.call(0);
    assert_eq!(
        (c.destination.kind, c.destination.target.as_str()),
        (AddressType::Endpoint, "a@test")
    );
    assert_eq!(c.groupcall_id, child.id);
    // b failed at once with 480; the rest goes on.
    h.ev(0, Failed { code: 486 });
    h.ev(1, Failed { code: 404 });
    assert_eq!(h.fork.groupcall(child.id).unwrap().status, GroupcallStatus::Hangup);
    // codes at the root: 480 (b), 486 (child best), 503 (c) -> 486.
    assert_eq!(h.ev(2, Failed { code: 503 }), vec![RejectCaller { code: 486 }, Finished]);
    h.finish();
}

#[test]
fn linear_skips_endpoint_without_contacts() {
    let dir = Dir::new().endpoint("a@test", 1);
    let def = linear(vec![ep("none@test"), ep("a@test")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    h.ev(0, Failed { code: 480 });
    h.finish();
}

#[test]
fn linear_child_group_times_out_as_a_whole() {
    let inner = ring_all(vec![sip("y1@x"), sip("y2@x")]);
    let dir = Dir::new().group("100", inner);
    let def = linear(vec![timed(grp("100"), 20), sip("z@x")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 1]);
    let (t, a) = h.tick();
    assert_eq!(t, 20);
    assert_eq!(
        a,
        vec![
            Cancel { leg: LegId(0), reason: None },
            Cancel { leg: LegId(1), reason: None },
            Dial {
                leg: LegId(2),
                call_id: h.fork.leg_call_id(LegId(2)).unwrap(),
                target: LegTarget::Sip { uri: "sip:z@x".into() }
            },
        ]
    );
    h.ev(0, Cancelled);
    h.ev(1, Cancelled);
    let child = h.fork.root().groupcall_ids[0];
    assert_eq!(h.fork.groupcall(child).unwrap().status, GroupcallStatus::Hangup);
    assert_eq!(h.ev(2, Answered), vec![AnswerCaller { leg: LegId(2) }]);
    h.ev(2, HungUp);
    h.finish();
}

#[test]
fn loops_are_refused() {
    let a_id = Uuid::new_v4();
    let b_id = Uuid::new_v4();
    let a = GroupDef::new(a_id, RingMethod::RingAll, vec![sip("x@x"), grp("B")]);
    let b = GroupDef::new(b_id, RingMethod::Linear, vec![grp("A")]);
    let dir = Dir::new().group("A", a.clone()).group("B", b);
    let err = H::build(a.clone(), &dir, cfg()).err();
    assert_eq!(err, Some(BuildError::Loop { group: a_id }));
    // Through a root that is not itself stored: A -> B -> A.
    let err = H::build(ring_all(vec![grp("A")]), &dir, cfg()).err();
    assert_eq!(err, Some(BuildError::Loop { group: a_id }));
    // Self loop.
    let s_id = Uuid::new_v4();
    let s = GroupDef::new(s_id, RingMethod::RingAll, vec![grp(&s_id.to_string())]);
    let dir = Dir::new().group("S", s.clone());
    assert_eq!(H::build(s, &dir, cfg()).err(), Some(BuildError::Loop { group: s_id }));
    // The same group twice, not nested in itself, is no loop.
    let d = ring_all(vec![sip("d@x")]);
    let dir = Dir::new().group("D", d);
    assert!(H::build(ring_all(vec![grp("D"), grp("D")]), &dir, cfg()).is_ok());
    assert_eq!(
        H::build(ring_all(vec![grp("nope")]), &dir, cfg()).err(),
        Some(BuildError::UnknownGroup { key: "nope".into() })
    );
}

#[test]
fn limits() {
    let c = ForkConfig { max_legs: 2, ..cfg() };
    assert_eq!(
        H::build(ring_all(three_sip()), &Dir::new(), c.clone()).err(),
        Some(BuildError::TooManyLegs { limit: 2 })
    );
    let dir = Dir::new().endpoint("e@test", 3);
    assert_eq!(
        H::build(ring_all(vec![ep("e@test")]), &dir, c).err(),
        Some(BuildError::TooManyLegs { limit: 2 })
    );
    // Depth: root(0) -> G1(1) -> G2(2).
    let (dir, _, _) = nested_dir();
    let shallow = ForkConfig { max_depth: 1, ..cfg() };
    assert_eq!(
        H::build(ring_all(vec![grp("100")]), &dir, shallow).err(),
        Some(BuildError::TooDeep { limit: 1 })
    );
    let zero = ForkConfig { max_depth: 0, ..cfg() };
    assert_eq!(
        H::build(ring_all(vec![ep("e@test")]), &dir, zero).err(),
        Some(BuildError::TooDeep { limit: 0 })
    );
    assert!(
        H::build(ring_all(vec![grp("100")]), &dir, ForkConfig { max_depth: 2, ..cfg() }).is_ok()
    );
}

fn fail_all(codes: &[u16]) -> Vec<Action> {
    let dests = (0..codes.len()).map(|i| sip(&format!("l{i}@x"))).collect();
    let (mut h, _) = H::started(ring_all(dests), &Dir::new(), cfg());
    let mut last = Vec::new();
    for (i, c) in codes.iter().enumerate() {
        assert!(last.is_empty(), "rejected early");
        last = h.ev(i as u32, Failed { code: *c });
    }
    h.finish();
    last
}

#[test]
fn best_response_selection() {
    assert_eq!(fail_all(&[486, 486, 486]), vec![RejectCaller { code: 486 }, Finished]);
    assert_eq!(fail_all(&[404, 486, 503]), vec![RejectCaller { code: 486 }, Finished]);
    assert_eq!(fail_all(&[503, 404]), vec![RejectCaller { code: 404 }, Finished]);
    assert_eq!(fail_all(&[503]), vec![RejectCaller { code: 500 }, Finished]);
    assert_eq!(fail_all(&[502, 503]), vec![RejectCaller { code: 502 }, Finished]);
    assert_eq!(fail_all(&[302, 503]), vec![RejectCaller { code: 480 }, Finished]);
}

#[test]
fn no_response_counts_as_408() {
    let (mut h, _) = H::started(ring_all(vec![sip("a@x"), sip("b@x")]), &Dir::new(), cfg());
    h.ev(0, NoResponse);
    let c = h.call(0);
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Noanswer));
    assert_eq!(h.ev(1, Failed { code: 500 }), vec![RejectCaller { code: 408 }, Finished]);
    h.finish();
}

#[test]
fn six_xx_stops_the_fork() {
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    h.ev(1, Ringing);
    assert_eq!(
        h.ev(0, Failed { code: 603 }),
        vec![
            Cancel { leg: LegId(1), reason: None },
            Cancel { leg: LegId(2), reason: None },
            RejectCaller { code: 603 },
        ]
    );
    assert_eq!(h.call(0).hangup_reason, HangupReason::Failed);
    h.ev(1, Cancelled);
    // A 200 crossing the CANCEL after a 6xx is not taken.
    assert_eq!(h.ev(2, Answered), vec![AckAndBye { leg: LegId(2) }]);
    assert_eq!(h.ev(2, Ended), vec![Finished]);
    h.finish();
}

#[test]
fn six_xx_without_stop_waits_but_still_wins() {
    let c = ForkConfig { stop_on_6xx: false, ..cfg() };
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), c);
    assert_eq!(h.ev(0, Failed { code: 600 }), vec![]);
    assert_eq!(h.call(0).hangup_reason, HangupReason::Busy);
    assert_eq!(h.ev(1, Failed { code: 486 }), vec![]);
    assert_eq!(h.ev(2, Failed { code: 404 }), vec![RejectCaller { code: 600 }, Finished]);
    h.finish();
}

#[test]
fn caller_cancel_while_ringing() {
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    h.ev(0, Ringing);
    assert_eq!(
        h.at(4).caller_cancel(),
        vec![
            Cancel { leg: LegId(0), reason: None },
            Cancel { leg: LegId(1), reason: None },
            Cancel { leg: LegId(2), reason: None },
            RejectCaller { code: 487 },
        ]
    );
    assert_eq!(h.fork.root().status, GroupcallStatus::Progressing);
    assert_eq!(h.caller_cancel(), vec![], "once");
    h.ev(0, Cancelled);
    h.ev(1, Failed { code: 487 });
    assert_eq!(h.ev(2, Cancelled), vec![Finished]);
    for l in 0..3 {
        assert_eq!(h.call(l).hangup_reason, HangupReason::Cancel);
        assert_eq!(h.call(l).hangup_by, HangupBy::Local);
    }
    h.finish();
}

#[test]
fn api_hangup_before_answer() {
    let (dir, _, _) = nested_dir();
    let (mut h, _) = H::started(ring_all(vec![sip("a@x"), grp("100")]), &dir, cfg());
    let a = h.at(2).hangup();
    assert_eq!(a.last(), Some(&RejectCaller { code: 487 }));
    assert_eq!(a.iter().filter(|a| matches!(a, Cancel { reason: None, .. })).count(), 4);
    assert_eq!(h.fork.root().status, GroupcallStatus::Hangingup);
    let child = h.fork.root().groupcall_ids[0];
    assert_eq!(h.fork.groupcall(child).unwrap().status, GroupcallStatus::Hangingup);
    assert_eq!(h.hangup(), vec![]);
    for l in 0..3 {
        h.ev(l, Cancelled);
    }
    assert_eq!(h.fork.root().status, GroupcallStatus::Hangingup);
    assert_eq!(h.ev(3, Cancelled), vec![Finished]);
    assert_eq!(h.fork.root().status, GroupcallStatus::Hangup);
    h.finish();
}

#[test]
fn api_hangup_after_answer() {
    let (mut h, _) = H::started(ring_all(vec![sip("a@x"), sip("b@x")]), &Dir::new(), cfg());
    h.ev(1, Answered);
    h.ev(0, Cancelled);
    assert_eq!(h.at(9).hangup(), vec![Bye { leg: LegId(1) }, ByeCaller]);
    assert_eq!(h.fork.root().status, GroupcallStatus::Hangingup);
    let c = h.call(1);
    assert_eq!(c.status, CallStatus::Terminating);
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Normal));
    assert_eq!(h.ev(1, Ended), vec![Finished]);
    assert_eq!(h.call(1).status, CallStatus::Hangup);
    h.finish();
}

#[test]
fn api_hangup_before_start() {
    let mut h = H::build(ring_all(three_sip()), &Dir::new(), cfg()).unwrap();
    assert_eq!(h.hangup(), vec![RejectCaller { code: 487 }, Finished]);
    assert_eq!(h.start(), vec![]);
    h.finish();
}

#[test]
fn overall_timeout() {
    let c = ForkConfig { overall_timeout: std::time::Duration::from_secs(60), ..cfg() };
    let def = ring_all(vec![timed(sip("a@x"), 100), timed(sip("b@x"), 100)]);
    let (mut h, _) = H::started(def, &Dir::new(), c);
    assert_eq!(h.next_deadline(), Some(60));
    let (t, a) = h.tick();
    assert_eq!(t, 60);
    assert_eq!(
        a,
        vec![
            Cancel { leg: LegId(0), reason: None },
            Cancel { leg: LegId(1), reason: None },
            RejectCaller { code: 480 },
        ]
    );
    assert_eq!(h.call(0).hangup_reason, HangupReason::Timeout);
    h.ev(0, Cancelled);
    h.ev(1, Cancelled);
    h.finish();
}

#[test]
fn linear_overall_timeout_beats_the_ring_timeouts() {
    let c = ForkConfig { overall_timeout: std::time::Duration::from_secs(45), ..cfg() };
    let def = linear(vec![sip("a@x"), sip("b@x"), sip("c@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), c);
    assert_eq!(dial_legs(&h.tick().1), vec![1]);
    let (t, a) = h.tick();
    assert_eq!(
        (t, a),
        (45, vec![Cancel { leg: LegId(1), reason: None }, RejectCaller { code: 480 }])
    );
    h.ev(0, Cancelled);
    h.ev(1, Cancelled);
    h.finish();
}

#[test]
fn early_media_only_from_the_first_leg() {
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    assert_eq!(h.ev(1, EarlyMedia), vec![RelayEarlyMedia { leg: LegId(1) }]);
    assert_eq!(h.call(1).status, CallStatus::Ringing);
    assert_eq!(h.ev(0, EarlyMedia), vec![]);
    assert_eq!(h.ev(2, Ringing), vec![], "the caller is already alerted");
    assert_eq!(h.call(2).status, CallStatus::Ringing);
}

#[test]
fn ringing_relayed_once() {
    let (mut h, _) = H::started(ring_all(three_sip()), &Dir::new(), cfg());
    assert_eq!(h.ev(0, Ringing), vec![RelayRinging]);
    assert_eq!(h.ev(0, Ringing), vec![]);
    assert_eq!(h.ev(1, Ringing), vec![]);
    assert_eq!(h.ev(2, EarlyMedia), vec![RelayEarlyMedia { leg: LegId(2) }]);
    assert_eq!(h.ev(1, EarlyMedia), vec![]);
}

#[test]
fn caller_bye_then_winner_ends() {
    let (mut h, _) = H::started(ring_all(vec![sip("a@x")]), &Dir::new(), cfg());
    h.ev(0, Answered);
    assert_eq!(h.at(30).caller_bye(), vec![Bye { leg: LegId(0) }]);
    assert_eq!(h.caller_bye(), vec![]);
    // The winner's BYE crossing ours: no ByeCaller, the caller is gone.
    assert_eq!(h.ev(0, HungUp), vec![Finished]);
    let c = h.call(0);
    assert_eq!((c.hangup_by, c.hangup_reason), (HangupBy::Local, HangupReason::Normal));
    h.finish();
}

#[test]
fn legs_that_never_report_are_cleaned_up() {
    let (mut h, _) = H::started(ring_all(vec![sip("a@x"), sip("b@x")]), &Dir::new(), cfg());
    h.at(1).ev(0, Answered);
    h.at(2).caller_bye();
    // Neither b's 487 nor a's BYE response ever come.
    assert_eq!(h.next_deadline(), Some(33));
    assert_eq!(h.tick(), (33, vec![]));
    assert_eq!(h.tick(), (34, vec![Finished]));
    assert_eq!(h.call(1).hangup_reason, HangupReason::Cancel);
    h.finish();
}

#[test]
fn unknown_and_stale_leg_events_are_ignored() {
    let def = linear(vec![sip("a@x"), sip("b@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    assert_eq!(h.ev(99, Answered), vec![]);
    assert_eq!(h.ev(u32::MAX, Failed { code: 486 }), vec![]);
    assert_eq!(h.ev(1, Answered), vec![], "not dialed yet");
    h.ev(0, Failed { code: 486 });
    assert_eq!(h.ev(0, Answered), vec![], "already over");
    assert_eq!(h.ev(0, Failed { code: 600 }), vec![]);
    assert_eq!(h.ev(1, Failed { code: 404 }), vec![RejectCaller { code: 486 }, Finished]);
    h.finish();
}

#[test]
fn empty_group_is_rejected_at_start() {
    let (h, a) = H::started(ring_all(vec![]), &Dir::new(), cfg());
    assert_eq!(a, vec![RejectCaller { code: 480 }, Finished]);
    h.finish();
    let dir = Dir::new().group("E", linear(vec![]));
    let (mut h, a) = H::started(linear(vec![grp("E"), sip("a@x")]), &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    // The empty group counted as 480, received first.
    assert_eq!(h.ev(0, Failed { code: 404 }), vec![RejectCaller { code: 480 }, Finished]);
    h.finish();
}

#[test]
fn finished_exactly_once_and_nothing_after() {
    let (mut h, _) = H::started(ring_all(vec![sip("a@x")]), &Dir::new(), cfg());
    h.ev(0, Answered);
    h.ev(0, HungUp);
    assert!(h.fork.is_finished());
    assert_eq!(h.caller_bye(), vec![]);
    assert_eq!(h.hangup(), vec![]);
    assert_eq!(h.caller_cancel(), vec![]);
    let now = h.now();
    h.fork.handle_timeout(now);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.log.iter().filter(|a| **a == Finished).count(), 1);
    h.finish();
}

/// Drives one nested fork through a fixed script; returns every action.
fn scripted_run(def: &GroupDef, dir: &Dir, seed: u64) -> Vec<Action> {
    let mut h = H::build_seeded(def.clone(), dir, cfg(), seed).unwrap();
    h.start();
    h.at(1).ev(0, Ringing);
    h.at(2).ev(1, Failed { code: 486 });
    h.at(3).ev(4, Answered);
    for l in [0, 2, 3, 5] {
        h.ev(l, Cancelled);
    }
    h.at(9).caller_bye();
    h.ev(4, Ended);
    h.finish();
    h.log.clone()
}

#[test]
fn same_seed_same_actions() {
    let (dir, _, _) = nested_dir();
    let def = ring_all(vec![sip("x@x"), grp("100"), ep("e@test")]);
    let a = scripted_run(&def, &dir, 42);
    let b = scripted_run(&def, &dir, 42);
    assert_eq!(a, b, "same seed, same inputs: same actions");
    let c = scripted_run(&def, &dir, 43);
    let no_ids = |log: &[Action]| -> Vec<Action> {
        ops(log)
            .into_iter()
            .map(|a| match a {
                Dial { leg, target, .. } => Dial { leg, call_id: NIL, target },
                a => a,
            })
            .collect()
    };
    assert_eq!(no_ids(&a), no_ids(&c), "the seed only changes ids");
    assert_ne!(a, c, "another seed gives other ids");
    let ids = |log: &[Action]| -> Vec<Uuid> {
        log.iter()
            .filter_map(|a| match a {
                Action::RecordChanged(groupcall::Record::Groupcall(g)) => Some(g.id),
                Action::RecordChanged(groupcall::Record::Call(c)) => Some(c.id),
                _ => None,
            })
            .collect()
    };
    for id in ids(&a) {
        assert_eq!(id.get_version_num(), 4);
        assert!(!ids(&c).contains(&id));
    }
}

#[test]
fn leg_dialed_records_the_sip_call_id() {
    let def = linear(vec![sip("a@x"), sip("b@x")]);
    let (mut h, _) = H::started(def, &Dir::new(), cfg());
    assert_eq!(h.call(0).sip_call_id, "", "unknown until the INVITE is out");
    let now = h.at(1).now();
    h.fork.leg_dialed(now, LegId(0), "a84b4c76e66710@pc33.atlanta.com");
    let a = h.drain();
    match a.as_slice() {
        [RecordChanged(groupcall::Record::Call(c))] => {
            assert_eq!(c.sip_call_id, "a84b4c76e66710@pc33.atlanta.com");
            assert_eq!(c.tm_update, H::wall(1));
            assert_eq!(c.status, CallStatus::Dialing);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.call(0).sip_call_id, "a84b4c76e66710@pc33.atlanta.com");
    // The same again changes nothing; unknown and undialed legs are ignored.
    h.fork.leg_dialed(now, LegId(0), "a84b4c76e66710@pc33.atlanta.com");
    h.fork.leg_dialed(now, LegId(1), "x");
    h.fork.leg_dialed(now, LegId(9), "x");
    assert_eq!(h.drain(), vec![]);
    // Bounded, at a character boundary.
    h.ev(0, Failed { code: 486 });
    let long = format!("{}é", "x".repeat(255));
    h.fork.leg_dialed(now, LegId(1), &long);
    h.drain();
    assert_eq!(h.call(1).sip_call_id, "x".repeat(255));
    assert_eq!(h.call(0).sip_call_id, "a84b4c76e66710@pc33.atlanta.com");
    h.ev(1, Answered);
    h.ev(1, HungUp);
    h.finish();
    let now = h.now();
    h.fork.leg_dialed(now, LegId(1), "late");
    assert_eq!(h.drain(), vec![], "nothing after Finished");
}
