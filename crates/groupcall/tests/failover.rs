//! Failover along a destination's hops (carrier trunks of a `tel`
//! destination, RFC 3263 targets of a `sip` one), on virtual time.

mod common;

use common::*;
use groupcall::{Action, BuildError, ForkConfig, LegEvent, LegId, LegTarget, Reach, ResolveId};
use records::{AddressType, CallStatus, GroupcallStatus, HangupReason, RingMethod, NIL};

use Action::*;
use LegEvent::*;

const NUM: &str = "+15550000001";
const URI: &str = "sip:bob@example.com";

fn dialed_hop(a: &[Action]) -> Option<(u32, groupcall::Hop)> {
    a.iter().find_map(|a| match a {
        Dial { leg, target: LegTarget::Hop { hop }, .. } => Some((leg.0, hop.clone())),
        _ => None,
    })
}

/// A tel destination over 3 carriers, alone in a ring_all root.
fn three_carriers() -> (H, Vec<Action>) {
    let dir = Dir::new().hops(NUM, 3);
    H::started(ring_all(vec![tel(NUM)]), &dir, cfg())
}

#[test]
fn a_503_fails_over_to_the_next_carrier() {
    let (mut h, a) = three_carriers();
    assert_eq!(dialed_hop(&a), Some((0, hop(NUM, 0))));
    let root = h.fork.root().clone();
    assert!(root.call_ids.is_empty(), "the hops are the child's legs");
    assert_eq!(root.groupcall_ids.len(), 1);
    let child = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    assert_eq!(child.ring_method, RingMethod::Linear);
    assert_eq!(child.master_groupcall_id, root.id);
    assert_eq!(child.master_call_id, root.master_call_id);
    let details: Vec<&str> = child.destinations.iter().map(|d| d.detail.as_str()).collect();
    assert_eq!(
        details,
        vec!["c0 UDP 192.0.2.1:5060", "c1 UDP 192.0.2.2:5060", "c2 UDP 192.0.2.3:5060"]
    );
    for d in &child.destinations {
        assert_eq!((d.kind, d.target.as_str()), (AddressType::Tel, NUM));
    }
    let c = h.call(0);
    assert_eq!(c.groupcall_id, child.id);
    assert_eq!(c.destination, child.destinations[0]);
    assert_eq!(h.next_deadline(), Some(30), "the destination's ring timeout");

    h.at(1).ev(0, Ringing);
    let a = h.at(2).ev(0, Failed { code: 503 });
    assert_eq!(dialed_hop(&a), Some((1, hop(NUM, 1))));
    assert_eq!(a.len(), 1, "{a:?}");
    let c = h.call(0);
    assert_eq!((c.status, c.hangup_reason), (CallStatus::Hangup, HangupReason::Failed));
    assert_eq!(h.call(1).destination.detail, "c1 UDP 192.0.2.2:5060");
    assert_eq!(h.fork.groupcall(child.id).unwrap().call_ids.len(), 2);
    assert_eq!(h.next_deadline(), Some(30), "one ring timeout for the whole hunt");
}

#[test]
fn no_response_fails_over() {
    let (mut h, _) = three_carriers();
    assert_eq!(dial_legs(&h.ev(0, NoResponse)), vec![1]);
    assert_eq!(dial_legs(&h.ev(1, Failed { code: 408 })), vec![2]);
    assert_eq!(h.call(0).hangup_reason, HangupReason::Noanswer, "no response counts as 408");
    // Codes 408, 408, 404: the first of the 4xx class (RFC 3261 16.7).
    assert_eq!(h.ev(2, Failed { code: 404 }), vec![RejectCaller { code: 408 }, Finished]);
    h.finish();
}

#[test]
fn busy_from_the_first_carrier_stops_the_hunt() {
    let dir = Dir::new().hops(NUM, 3);
    let def = linear(vec![tel(NUM), sip("b@x")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    // No second carrier: the parent goes on to its next destination.
    let a = h.at(1).ev(0, Failed { code: 486 });
    assert_eq!(
        a,
        vec![Dial {
            leg: LegId(3),
            call_id: h.fork.leg_call_id(LegId(3)).unwrap(),
            target: LegTarget::Sip { uri: "sip:b@x".into() }
        }]
    );
    let root = h.fork.root().clone();
    let child = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    assert_eq!(child.status, GroupcallStatus::Hangup);
    assert_eq!(child.call_ids, vec![h.call(0).id]);
    assert_eq!(h.call(0).hangup_reason, HangupReason::Busy);
    // Root codes: 486 (the child's best), 404.
    assert_eq!(h.ev(3, Failed { code: 404 }), vec![RejectCaller { code: 486 }, Finished]);
    assert!(h.fork.leg_call_id(LegId(1)).is_none(), "hop 2 never dialed");
    h.finish();
}

#[test]
fn non_failover_codes_end_the_child_with_the_best_so_far() {
    // 503 then a 3xx (counted 480): the best of 503, 480 is 480.
    let (mut h, _) = three_carriers();
    h.ev(0, Failed { code: 503 });
    assert_eq!(h.ev(1, Failed { code: 302 }), vec![RejectCaller { code: 480 }, Finished]);
    h.finish();
    // 603 with stop_on_6xx off: the child ends, 603 goes up.
    let dir = Dir::new().hops(NUM, 3);
    let c = ForkConfig { stop_on_6xx: false, ..cfg() };
    let (mut h, _) = H::started(ring_all(vec![tel(NUM), sip("b@x")]), &dir, c);
    h.ev(0, Failed { code: 500 });
    assert_eq!(h.ev(1, Failed { code: 603 }), vec![]);
    let child = h.fork.root().groupcall_ids[0];
    assert_eq!(h.fork.groupcall(child).unwrap().status, GroupcallStatus::Hangup);
    assert_eq!(h.ev(3, Failed { code: 486 }), vec![RejectCaller { code: 603 }, Finished]);
    h.finish();
    // A 487 the leg gave on its own (not after our CANCEL) is no failover.
    let (mut h, _) = three_carriers();
    assert_eq!(h.ev(0, Cancelled), vec![RejectCaller { code: 487 }, Finished]);
    h.finish();
}

#[test]
fn every_carrier_failing_with_5xx_gives_500() {
    let (mut h, _) = three_carriers();
    assert_eq!(dial_legs(&h.ev(0, Failed { code: 503 })), vec![1]);
    assert_eq!(dial_legs(&h.ev(1, Failed { code: 503 })), vec![2]);
    assert_eq!(h.ev(2, Failed { code: 503 }), vec![RejectCaller { code: 500 }, Finished]);
    let child = h.fork.root().groupcall_ids[0];
    assert_eq!(h.fork.groupcall(child).unwrap().call_ids.len(), 3);
    h.finish();
    // 502, 503, 500: the first of the class.
    let (mut h, _) = three_carriers();
    h.ev(0, Failed { code: 502 });
    h.ev(1, Failed { code: 503 });
    assert_eq!(h.ev(2, Failed { code: 500 }), vec![RejectCaller { code: 502 }, Finished]);
    h.finish();
}

#[test]
fn answer_on_the_second_carrier() {
    let (mut h, _) = three_carriers();
    h.at(1).ev(0, Failed { code: 500 });
    assert_eq!(h.at(2).ev(1, Ringing), vec![RelayRinging]);
    assert_eq!(h.at(4).ev(1, Answered), vec![AnswerCaller { leg: LegId(1) }]);
    let root = h.fork.root().clone();
    let child = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    let (c0, c1) = (h.call(0).id, h.call(1).id);
    assert_eq!(child.call_ids, vec![c0, c1], "the hops tried, in order");
    assert_eq!((child.answer_call_id, child.answer_groupcall_id), (c1, NIL));
    assert_eq!((root.answer_call_id, root.answer_groupcall_id), (c1, child.id));
    assert_eq!(h.call(1).status, CallStatus::Progressing);
    assert!(h.fork.leg_call_id(LegId(2)).is_none(), "hop 3 never dialed");
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.at(30).ev(1, HungUp), vec![ByeCaller, Finished]);
    assert_eq!(h.fork.groupcall(child.id).unwrap().status, GroupcallStatus::Hangup);
    assert!(h.check.calls.len() == 2);
    h.finish();
}

#[test]
fn ring_timeout_covers_the_whole_hunt_in_a_linear_parent() {
    let dir = Dir::new().hops(NUM, 3);
    let def = linear(vec![timed(tel(NUM), 10), sip("b@x")]);
    let (mut h, _) = H::started(def, &dir, cfg());
    assert_eq!(h.next_deadline(), Some(10));
    assert_eq!(dial_legs(&h.at(2).ev(0, Failed { code: 503 })), vec![1]);
    h.ev(1, Ringing);
    let (t, a) = h.tick();
    assert_eq!(t, 10);
    assert_eq!(a[0], Cancel { leg: LegId(1), reason: None });
    assert_eq!(dial_legs(&a), vec![3], "the parent moves on; hop 3 never dialed");
    let c = h.call(1);
    assert_eq!((c.status, c.hangup_reason), (CallStatus::Canceling, HangupReason::Noanswer));
    let child = h.fork.root().groupcall_ids[0];
    assert_eq!(h.fork.groupcall(child).unwrap().status, GroupcallStatus::Progressing);
    assert_eq!(h.ev(1, Cancelled), vec![]);
    assert_eq!(h.fork.groupcall(child).unwrap().status, GroupcallStatus::Hangup);
    assert!(h.fork.leg_call_id(LegId(2)).is_none());
    // Root codes: 480 (no answer), 486.
    assert_eq!(h.at(12).ev(3, Failed { code: 486 }), vec![RejectCaller { code: 486 }, Finished]);
    h.finish();
}

#[test]
fn an_answer_elsewhere_cancels_the_live_hop() {
    let dir = Dir::new().hops(NUM, 2);
    let def = ring_all(vec![tel(NUM), sip("b@x")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 2]);
    assert_eq!(
        h.ev(2, Answered),
        vec![
            AnswerCaller { leg: LegId(2) },
            Cancel { leg: LegId(0), reason: Some(groupcall::CancelReason::CompletedElsewhere) }
        ]
    );
    assert_eq!(h.ev(0, Cancelled), vec![], "a 487 after our CANCEL: no failover");
    assert!(h.fork.leg_call_id(LegId(1)).is_none());
    assert_eq!(h.ev(2, HungUp), vec![ByeCaller, Finished]);
    h.finish();
}

#[test]
fn one_hop_is_one_leg_without_a_child() {
    let dir = Dir::new().hops(NUM, 1).hops(URI, 1);
    let (mut h, a) = H::started(ring_all(vec![tel(NUM), sip(URI)]), &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 1]);
    assert!(matches!(&a[0], Dial { target: LegTarget::Hop { hop: x }, .. } if *x == hop(NUM, 0)));
    assert!(matches!(&a[1], Dial { target: LegTarget::Hop { hop: x }, .. } if *x == hop(URI, 0)));
    let root = h.fork.root().clone();
    assert!(root.groupcall_ids.is_empty());
    assert_eq!(root.call_ids.len(), 2);
    assert_eq!(h.call(0).destination.detail, "c0 UDP 192.0.2.1:5060");
    let d = h.call(1).destination;
    assert_eq!(
        (d.kind, d.target.as_str(), d.detail.as_str()),
        (AddressType::Sip, URI, "TCP 192.0.2.1:5060")
    );
    assert_eq!(root.destinations[0].detail, "", "the root shows the destination as given");
    h.ev(0, Failed { code: 503 });
    assert_eq!(h.ev(1, Failed { code: 503 }), vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
}

#[test]
fn unreachable_destinations_fail_when_reached() {
    let dir = Dir::new().reach(NUM, Reach::Unreachable(404)).reach(URI, Reach::Hops(vec![]));
    let def = linear(vec![tel(NUM), sip(URI), sip("c@x")]);
    let (mut h, a) = H::started(def, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0], "both skipped at once");
    assert_eq!(h.call(0).destination.target, "c@x");
    // Codes: 404, 503, 503 -> 404.
    assert_eq!(h.ev(0, Failed { code: 503 }), vec![RejectCaller { code: 404 }, Finished]);
    h.finish();
    // A code out of range counts as 500, a 3xx as 480.
    let dir = Dir::new().reach(NUM, Reach::Unreachable(200)).reach(URI, Reach::Unreachable(302));
    let (h, a) = H::started(ring_all(vec![tel(NUM)]), &dir, cfg());
    assert_eq!(a, vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
    let (h, a) = H::started(ring_all(vec![sip(URI)]), &dir, cfg());
    assert_eq!(a, vec![RejectCaller { code: 480 }, Finished]);
    h.finish();
}

#[test]
fn six_xx_from_a_carrier_stops_the_fork() {
    let dir = Dir::new().hops(NUM, 3);
    let (mut h, _) = H::started(ring_all(vec![tel(NUM), sip("b@x")]), &dir, cfg());
    assert_eq!(
        h.ev(0, Failed { code: 603 }),
        vec![Cancel { leg: LegId(3), reason: None }, RejectCaller { code: 603 }]
    );
    h.ev(3, Cancelled);
    h.finish();
}

fn resolving(def_dests: Vec<groupcall::Destination>) -> (H, Vec<Action>) {
    let dir = Dir::new().reach(URI, Reach::Resolve).reach(NUM, Reach::Resolve);
    H::started(linear(def_dests), &dir, cfg())
}

#[test]
fn resolve_without_hops_fails_the_destination_with_503() {
    let (mut h, a) = resolving(vec![sip(URI), sip("c@x")]);
    assert_eq!(
        a,
        vec![Resolve { query: ResolveId(0), target: LegTarget::Sip { uri: URI.into() } }]
    );
    assert_eq!(h.next_deadline(), Some(30), "the ring timeout runs while resolving");
    assert_eq!(
        dial_legs(&h.at(1).ev(0, Failed { code: 486 })),
        Vec::<u32>::new(),
        "no such leg yet"
    );
    assert_eq!(dial_legs(&h.resolved(ResolveId(0), vec![])), vec![0]);
    assert_eq!(h.call(0).destination.target, "c@x");
    assert_eq!(h.ev(0, Failed { code: 404 }), vec![RejectCaller { code: 404 }, Finished]);
    h.finish();
    // Alone: 503 for the destination, 500 for the caller.
    let (mut h, _) = resolving(vec![tel(NUM)]);
    assert_eq!(h.resolved(ResolveId(0), vec![]), vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
}

#[test]
fn resolve_with_one_hop_dials_one_leg() {
    let (mut h, _) = resolving(vec![tel(NUM)]);
    let a = h.at(1).resolved(ResolveId(0), hops(NUM, 1));
    assert_eq!(dialed_hop(&a), Some((0, hop(NUM, 0))));
    let c = h.call(0);
    assert_eq!(c.groupcall_id, h.fork.root().id);
    assert_eq!(c.tm_create, H::wall(1));
    assert_eq!(
        (c.destination.target.as_str(), c.destination.detail.as_str()),
        (NUM, "c0 UDP 192.0.2.1:5060")
    );
    assert!(h.fork.root().groupcall_ids.is_empty());
    assert_eq!(h.resolved(ResolveId(0), hops(NUM, 2)), vec![], "answered once");
    assert_eq!(h.ev(0, Failed { code: 503 }), vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
}

#[test]
fn resolve_with_three_hops_hunts_in_a_child() {
    let (mut h, a) = resolving(vec![sip(URI), tel(NUM)]);
    assert_eq!(a.len(), 1);
    let a = h.at(2).resolved(ResolveId(0), hops(URI, 3));
    assert_eq!(dialed_hop(&a), Some((0, hop(URI, 0))));
    let root = h.fork.root().clone();
    assert_eq!(root.groupcall_ids.len(), 1);
    let child = h.fork.groupcall(root.groupcall_ids[0]).unwrap().clone();
    assert_eq!(child.ring_method, RingMethod::Linear);
    assert_eq!(child.master_groupcall_id, root.id);
    assert_eq!(child.tm_create, H::wall(2));
    assert_eq!(child.destinations.len(), 3);
    assert_eq!(child.destinations[2].detail, "TCP 192.0.2.3:5060");
    assert_eq!(h.call(0).groupcall_id, child.id);
    assert_eq!(dial_legs(&h.ev(0, Failed { code: 500 })), vec![1]);
    // 480 from the callee: no third hop; the parent asks for the number.
    assert_eq!(
        h.ev(1, Failed { code: 480 }),
        vec![Resolve { query: ResolveId(1), target: LegTarget::Tel { number: NUM.into() } }]
    );
    assert_eq!(h.fork.groupcall(child.id).unwrap().status, GroupcallStatus::Hangup);
    let a = h.resolved(ResolveId(1), hops(NUM, 2));
    assert_eq!(dial_legs(&a), vec![3]);
    assert_eq!(h.fork.root().groupcall_ids.len(), 2);
    assert_eq!(h.ev(3, Answered), vec![AnswerCaller { leg: LegId(3) }]);
    let second = h.fork.root().groupcall_ids[1];
    assert_eq!(h.fork.root().answer_groupcall_id, second);
    h.ev(3, HungUp);
    h.finish();
}

#[test]
fn resolved_after_the_destination_was_given_up_is_ignored() {
    // Ring timeout.
    let (mut h, _) = resolving(vec![timed(sip(URI), 5), sip("c@x")]);
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (5, vec![0]));
    assert_eq!(h.at(6).resolved(ResolveId(0), hops(URI, 3)), vec![]);
    assert!(h.fork.root().groupcall_ids.is_empty());
    assert!(h.fork.leg_call_id(LegId(1)).is_none());
    // Unknown queries too.
    assert_eq!(h.resolved(ResolveId(7), hops(URI, 1)), vec![]);
    h.ev(0, Answered);
    h.ev(0, HungUp);
    h.finish();
    // Answer elsewhere.
    let dir = Dir::new().reach(URI, Reach::Resolve);
    let (mut h, a) = H::started(ring_all(vec![sip(URI), sip("c@x")]), &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    assert_eq!(h.ev(0, Answered), vec![AnswerCaller { leg: LegId(0) }]);
    assert_eq!(h.resolved(ResolveId(0), hops(URI, 1)), vec![]);
    h.ev(0, HungUp);
    h.finish();
    // The caller gave up.
    let (mut h, _) = resolving(vec![sip(URI)]);
    assert_eq!(h.caller_cancel(), vec![RejectCaller { code: 487 }, Finished]);
    assert_eq!(h.resolved(ResolveId(0), hops(URI, 2)), vec![]);
    h.finish();
}

#[test]
fn resolved_hops_obey_the_limits() {
    let dir = Dir::new().reach(URI, Reach::Resolve);
    let c = ForkConfig { max_legs: 2, ..cfg() };
    let (mut h, _) = H::started(linear(vec![sip(URI), sip("c@x")]), &dir, c);
    assert_eq!(dial_legs(&h.resolved(ResolveId(0), hops(URI, 2))), vec![0], "500, next");
    assert!(h.fork.root().groupcall_ids.is_empty());
    assert_eq!(h.ev(0, Failed { code: 503 }), vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
    // Depth: a child would be too deep, one leg is not.
    let c = ForkConfig { max_depth: 0, ..cfg() };
    let (mut h, _) = H::started(ring_all(vec![sip(URI)]), &dir, c.clone());
    assert_eq!(h.resolved(ResolveId(0), hops(URI, 2)), vec![RejectCaller { code: 500 }, Finished]);
    h.finish();
    let (mut h, _) = H::started(ring_all(vec![sip(URI)]), &dir, c.clone());
    assert_eq!(dial_legs(&h.resolved(ResolveId(0), hops(URI, 1))), vec![0]);
    // Known at build time: build errors, as for endpoints.
    let dir = Dir::new().hops(NUM, 3);
    assert_eq!(
        H::build(ring_all(vec![tel(NUM)]), &dir, c).err(),
        Some(BuildError::TooDeep { limit: 0 })
    );
    let c = ForkConfig { max_legs: 2, ..cfg() };
    assert_eq!(
        H::build(ring_all(vec![tel(NUM)]), &dir, c).err(),
        Some(BuildError::TooManyLegs { limit: 2 })
    );
}

/// A scripted run over failover and resolved destinations.
fn failover_run(seed: u64) -> Vec<Action> {
    let dir = Dir::new().hops(NUM, 3).reach(URI, Reach::Resolve);
    let def = ring_all(vec![tel(NUM), sip(URI)]);
    let mut h = H::build_seeded(def, &dir, cfg(), seed).unwrap();
    h.start();
    h.at(1).ev(0, Failed { code: 503 });
    h.resolved(ResolveId(0), hops(URI, 2));
    h.at(2).ev(3, NoResponse);
    h.at(3).ev(4, Answered);
    h.ev(1, Cancelled);
    h.at(9).ev(4, HungUp);
    h.finish();
    h.log.clone()
}

#[test]
fn same_seed_same_actions_with_failover() {
    assert_eq!(failover_run(7), failover_run(7));
    assert_ne!(failover_run(7), failover_run(8));
}
