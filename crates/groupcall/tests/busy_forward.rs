//! Busy members (`skip_busy`), do-not-disturb and call forwarding (always,
//! on busy, on no answer) as children of the fork, with loop cuts, on
//! virtual time.

mod common;

use common::*;
use groupcall::{
    Action, EndpointPolicy, GroupOptions, LegEvent, LegTarget, NoAnswerForward, Record,
};
use records::{Address, AddressType, Groupcall};
use std::time::Duration;

fn endpoint(aor: &str) -> Address {
    Address::new(AddressType::Endpoint, aor)
}

/// The AOR of each leg dialed in `a`, in order.
fn dialed(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::Dial { target: LegTarget::Contact { aor, .. }, .. } => Some(aor.clone()),
            Action::Dial { target: LegTarget::Sip { uri }, .. } => Some(uri.clone()),
            _ => None,
        })
        .collect()
}

/// Every groupcall record the fork emitted, last version of each.
fn groupcalls(h: &H) -> Vec<Groupcall> {
    let mut out: Vec<Groupcall> = Vec::new();
    for a in &h.log {
        if let Action::RecordChanged(Record::Groupcall(g)) = a {
            match out.iter_mut().find(|o| o.id == g.id) {
                Some(o) => *o = g.clone(),
                None => out.push(g.clone()),
            }
        }
    }
    out
}

fn calls_made(h: &H) -> usize {
    let mut ids = Vec::new();
    for a in &h.log {
        if let Action::RecordChanged(Record::Call(c)) = a {
            if !ids.contains(&c.id) {
                ids.push(c.id);
            }
        }
    }
    ids.len()
}

fn run_out(h: &mut H) {
    while !h.fork.is_finished() {
        h.tick();
    }
    h.finish();
}

fn busy() -> EndpointPolicy {
    EndpointPolicy { busy: true, ..Default::default() }
}

fn dnd() -> EndpointPolicy {
    EndpointPolicy { dnd: true, ..Default::default() }
}

fn skip_busy() -> GroupOptions {
    GroupOptions { skip_busy: true, ..Default::default() }
}

fn no_answer_to(aor: &str, secs: u64) -> EndpointPolicy {
    EndpointPolicy {
        forward_noanswer: Some(NoAnswerForward {
            to: endpoint(aor),
            after: Duration::from_secs(secs),
        }),
        ..Default::default()
    }
}

#[test]
fn skip_busy_does_not_ring_a_busy_member_and_its_486_is_not_counted() {
    let group = ring_all(vec![ep("a@t"), ep("b@t")]);
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).policy("b@t", busy());
    let dir = dir.options(group.id, skip_busy());
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t"]);
    let a = h.ev(0, LegEvent::Failed { code: 480 });
    assert_eq!(rejects(&a), vec![480], "the busy member was skipped, not counted");
    run_out(&mut h);
    assert_eq!(calls_made(&h), 1, "no call record for the skipped member");
}

#[test]
fn without_skip_busy_a_busy_member_counts_as_486() {
    let group = ring_all(vec![ep("a@t"), ep("b@t")]);
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).policy("b@t", busy());
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t"], "a busy member is never dialed");
    let a = h.ev(0, LegEvent::Failed { code: 480 });
    assert_eq!(rejects(&a), vec![486]);
    run_out(&mut h);
    assert_eq!(calls_made(&h), 1);
}

#[test]
fn an_all_busy_group_answers_486_at_once() {
    for skip in [true, false] {
        let group = ring_all(vec![ep("a@t"), ep("b@t")]);
        let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1);
        let dir = dir.policy("a@t", busy()).policy("b@t", busy());
        let dir = if skip { dir.options(group.id, skip_busy()) } else { dir };
        let (mut h, a) = H::started(group, &dir, cfg());
        assert!(dialed(&a).is_empty());
        assert_eq!(rejects(&a), vec![486], "skip_busy={skip}");
        run_out(&mut h);
        assert_eq!(calls_made(&h), 0);
    }
}

#[test]
fn a_linear_hunt_moves_past_busy_and_dnd_members_at_once() {
    let group = linear(vec![timed(ep("a@t"), 10), timed(ep("b@t"), 10), timed(ep("c@t"), 10)]);
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).endpoint("c@t", 1);
    let dir = dir.policy("a@t", busy()).policy("b@t", dnd());
    let dir = dir.options(group.id, skip_busy());
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["c@t"]);
    h.ev(0, LegEvent::Ringing);
    let a = h.ev(0, LegEvent::Answered);
    assert!(a.iter().any(|a| matches!(a, Action::AnswerCaller { .. })));
    h.caller_bye();
    run_out(&mut h);
}

#[test]
fn dnd_rejects_a_direct_call_with_486_and_is_skipped_in_groups() {
    let dir = Dir::new().endpoint("a@t", 2).endpoint("b@t", 1).policy("a@t", dnd());
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert_eq!(rejects(&a), vec![486]);
    assert!(dialed(&a).is_empty());
    run_out(&mut h);

    let (mut h, a) = H::started(ring_all(vec![ep("a@t"), ep("b@t")]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["b@t"]);
    let a = h.ev(0, LegEvent::Failed { code: 480 });
    assert_eq!(rejects(&a), vec![480], "DND is skipped, not counted as busy");
    run_out(&mut h);
}

#[test]
fn forward_always_rings_the_forward_instead_and_shows_in_the_records() {
    let policy = EndpointPolicy { forward_always: Some(endpoint("b@t")), ..Default::default() };
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).policy("a@t", policy);
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["b@t"]);
    h.ev(0, LegEvent::Ringing);
    h.ev(0, LegEvent::Answered);
    let leg = h.call(0);
    assert_eq!(leg.destination.target, "b@t");
    assert_eq!(leg.destination.detail, "forward_always");
    let gcs = groupcalls(&h);
    let fwd = gcs.iter().find(|g| g.destinations.iter().any(|d| d.detail == "forward_always"));
    let fwd = fwd.expect("a forward child groupcall");
    assert_eq!(fwd.destinations.len(), 1, "a@t itself is not rung");
    assert_eq!(fwd.master_groupcall_id, h.fork.root().id);
    assert_eq!(h.fork.root().destinations, vec![endpoint("a@t")], "as configured");
    h.caller_bye();
    run_out(&mut h);
}

#[test]
fn forward_noanswer_rings_the_extension_then_the_forward() {
    let dir =
        Dir::new().endpoint("a@t", 2).endpoint("b@t", 1).policy("a@t", no_answer_to("b@t", 15));
    let group = ring_all(vec![timed(ep("a@t"), 60)]);
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t", "a@t"], "both contacts of a@t");
    h.ev(0, LegEvent::Ringing);
    h.ev(1, LegEvent::Ringing);
    let (t, a) = h.tick();
    assert_eq!(t, 15);
    let cancelled: Vec<_> = a.iter().filter(|a| matches!(a, Action::Cancel { .. })).collect();
    assert_eq!(cancelled.len(), 2, "a@t stops ringing");
    assert_eq!(dialed(&a), vec!["b@t"]);
    h.ev(0, LegEvent::Cancelled);
    h.ev(1, LegEvent::Cancelled);
    h.ev(2, LegEvent::Ringing);
    let a = h.ev(2, LegEvent::Answered);
    assert!(a.iter().any(|a| matches!(a, Action::AnswerCaller { leg } if leg.0 == 2)));
    assert_eq!(h.call(2).destination.detail, "forward_noanswer");
    assert_eq!(h.call(2).tm_create, H::wall(15), "dialed late: its own tm_create");
    h.caller_bye();
    run_out(&mut h);
}

#[test]
fn forward_noanswer_follows_any_failure_but_busy() {
    let policy = EndpointPolicy { forward_busy: Some(endpoint("c@t")), ..no_answer_to("b@t", 15) };
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).endpoint("c@t", 1);
    let dir = dir.policy("a@t", policy);
    for (code, next) in [(486, "c@t"), (480, "b@t"), (404, "b@t")] {
        let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
        assert_eq!(dialed(&a), vec!["a@t"]);
        let a = h.ev(0, LegEvent::Failed { code });
        assert_eq!(dialed(&a), vec![next], "after {code}");
        // Legs are numbered as built: a, then c (busy), then b (no answer).
        let leg = if next == "c@t" { 1 } else { 2 };
        let a = h.ev(leg, LegEvent::Failed { code: 404 });
        assert_eq!(rejects(&a), vec![404], "the forward failed: its answer is the caller's");
        run_out(&mut h);
    }
}

#[test]
fn forward_busy_rings_when_the_extension_is_busy() {
    let policy =
        EndpointPolicy { busy: true, forward_busy: Some(endpoint("b@t")), ..Default::default() };
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).policy("a@t", policy);
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["b@t"]);
    assert_eq!(h.fork.dialed_legs(), 1);
    h.ev(0, LegEvent::Failed { code: 486 });
    run_out(&mut h);
}

#[test]
fn an_unregistered_extension_forwards_on_no_answer_at_once() {
    let dir = Dir::new().endpoint("b@t", 1).policy("a@t", no_answer_to("b@t", 15));
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["b@t"]);
    h.ev(0, LegEvent::Failed { code: 480 });
    run_out(&mut h);
}

#[test]
fn a_forward_to_an_extension_already_ringing_is_cut() {
    // The group rings a and b; a forwards to b on no answer: b rings
    // already, so the forward is cut and b is rung once.
    let dir =
        Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).policy("a@t", no_answer_to("b@t", 5));
    let group = ring_all(vec![timed(ep("a@t"), 30), timed(ep("b@t"), 30)]);
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t", "b@t"]);
    let (t, a) = h.tick();
    assert_eq!(t, 5);
    assert!(dialed(&a).is_empty(), "the forward to b is cut");
    h.ev(0, LegEvent::Cancelled);
    let a = h.ev(1, LegEvent::Failed { code: 480 });
    assert_eq!(rejects(&a), vec![480]);
    run_out(&mut h);
    assert_eq!(calls_made(&h), 2);
}

#[test]
fn forward_loops_are_cut_with_482() {
    let always =
        |to: &str| EndpointPolicy { forward_always: Some(endpoint(to)), ..Default::default() };
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).endpoint("c@t", 1);
    let dir =
        dir.policy("a@t", always("b@t")).policy("b@t", always("c@t")).policy("c@t", always("a@t"));
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert!(dialed(&a).is_empty());
    assert_eq!(rejects(&a), vec![482]);
    run_out(&mut h);

    // a -> b (no answer), b -> a (no answer): a rings, then b, then stop.
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1);
    let dir = dir.policy("a@t", no_answer_to("b@t", 5)).policy("b@t", no_answer_to("a@t", 5));
    let (mut h, a) = H::started(ring_all(vec![timed(ep("a@t"), 60)]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t"]);
    let (_, a) = h.tick();
    assert_eq!(dialed(&a), vec!["b@t"]);
    h.ev(0, LegEvent::Cancelled);
    let (_, a) = h.tick();
    assert!(dialed(&a).is_empty(), "b's forward back to a is cut");
    h.ev(1, LegEvent::Cancelled);
    run_out(&mut h);
    let rejected: Vec<u16> = rejects(&h.log);
    assert_eq!(rejected, vec![480]);
}

#[test]
fn forwards_chain_and_a_forward_to_a_sip_uri_is_dialed() {
    let to_b = EndpointPolicy { forward_always: Some(endpoint("b@t")), ..Default::default() };
    let to_sip = EndpointPolicy {
        forward_always: Some(Address::new(AddressType::Sip, "mobile@example.com")),
        ..Default::default()
    };
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1);
    let dir = dir.policy("a@t", to_b).policy("b@t", to_sip);
    let (mut h, a) = H::started(ring_all(vec![ep("a@t")]), &dir, cfg());
    assert_eq!(dialed(&a), vec!["sip:mobile@example.com"]);
    h.ev(0, LegEvent::Failed { code: 486 });
    run_out(&mut h);
    assert_eq!(rejects(&h.log), vec![486]);
}

#[test]
fn a_forward_answered_cancels_the_rest_of_the_group_with_the_reason() {
    let dir = Dir::new().endpoint("a@t", 1).endpoint("b@t", 1).endpoint("c@t", 1);
    let dir = dir.policy("a@t", no_answer_to("c@t", 5));
    let group = ring_all(vec![timed(ep("a@t"), 60), timed(ep("b@t"), 60)]);
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dialed(&a), vec!["a@t", "b@t"]);
    h.ev(1, LegEvent::Ringing);
    let (_, a) = h.tick();
    assert_eq!(dialed(&a), vec!["c@t"]);
    h.ev(0, LegEvent::Cancelled);
    h.ev(2, LegEvent::Ringing);
    let a = h.ev(2, LegEvent::Answered);
    assert!(a.iter().any(|a| matches!(a, Action::Cancel { leg, reason: Some(_) } if leg.0 == 1)));
    h.caller_bye();
    run_out(&mut h);
}
