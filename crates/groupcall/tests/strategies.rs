//! Ring methods beyond `ring_all` and `linear` (memory hunt, round robin,
//! least recent, random), destination delays, the groups' `max_ring` and
//! the hunt memory kept across calls, on virtual time.

mod common;

use common::*;
use groupcall::{Action, Destination, GroupDef, GroupOptions, HuntMemory, LegEvent, LegId};
use records::{Address, AddressType, RingMethod, Timestamp};
use std::time::Duration;
use uuid::Uuid;

fn member(i: usize) -> Address {
    Address::new(AddressType::Sip, format!("u{i}@example.com"))
}

/// `n` SIP destinations `u<i>@example.com`, each ringing `secs`.
fn members(n: usize, secs: u64) -> Vec<Destination> {
    (0..n).map(|i| timed(sip(&format!("u{i}@example.com")), secs)).collect()
}

fn cancels(a: &[Action]) -> Vec<u32> {
    a.iter()
        .filter_map(|a| match a {
            Action::Cancel { leg, .. } => Some(leg.0),
            _ => None,
        })
        .collect()
}

fn answers(a: &[Action]) -> Vec<u32> {
    a.iter()
        .filter_map(|a| match a {
            Action::AnswerCaller { leg } => Some(leg.0),
            _ => None,
        })
        .collect()
}

/// Runs the timers until the fork is finished (cancelled legs end by the
/// cleanup timeout), then checks the end invariants.
fn run_out(h: &mut H) {
    while !h.fork.is_finished() {
        h.tick();
    }
    h.finish();
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Dial order of a flat sequential group whose every destination fails.
fn hunt_order(group: GroupDef, dir: &Dir, seed: u64) -> Vec<u32> {
    let mut h = H::build_seeded(group, dir, cfg(), seed).expect("build");
    let mut order = dial_legs(&h.start());
    while let Some(&last) = order.last() {
        let next = dial_legs(&h.ev(last, LegEvent::Failed { code: 486 }));
        if next.is_empty() {
            break;
        }
        order.extend(next);
    }
    run_out(&mut h);
    order
}

#[test]
fn memory_hunt_adds_one_destination_per_step_and_gives_up_after_the_last() {
    let mut dests = members(3, 10);
    dests[1].ring_timeout = Some(seconds(20));
    dests[2].ring_timeout = None; // the default, 30 s
    let (mut h, a) = H::started(group_of(RingMethod::MemoryHunt, dests), &Dir::new(), cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a), cancels(&a)), (10, vec![1], vec![]));
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a), cancels(&a)), (30, vec![2], vec![]));
    let (t, a) = h.tick();
    assert_eq!(t, 60);
    assert_eq!(cancels(&a), vec![0, 1, 2]);
    assert_eq!(rejects(&a), vec![480]);
    assert_eq!(h.fork.root().ring_method, RingMethod::MemoryHunt);
    run_out(&mut h);
}

#[test]
fn memory_hunt_moves_on_at_once_when_the_newest_fails() {
    let group = group_of(RingMethod::MemoryHunt, members(3, 10));
    let (mut h, _) = H::started(group, &Dir::new(), cfg());
    let (_, a) = h.tick();
    assert_eq!(dial_legs(&a), vec![1]);
    h.at(12);
    let a = h.ev(1, LegEvent::Failed { code: 486 });
    assert_eq!(dial_legs(&a), vec![2], "the newest was busy: next step at once");
    // An older one failing does not move the hunt on.
    h.at(13);
    assert!(dial_legs(&h.ev(0, LegEvent::Failed { code: 480 })).is_empty());
    assert_eq!(h.next_deadline(), Some(22));
    let a = h.ev(2, LegEvent::Failed { code: 404 });
    assert_eq!(rejects(&a), vec![486], "every destination failed: the best code");
    run_out(&mut h);
}

#[test]
fn memory_hunt_answer_cancels_the_prefix() {
    let group = group_of(RingMethod::MemoryHunt, members(4, 10));
    let (mut h, _) = H::started(group, &Dir::new(), cfg());
    h.tick();
    h.tick();
    h.at(25);
    h.ev(0, LegEvent::Ringing);
    let a = h.ev(0, LegEvent::Answered);
    assert_eq!(answers(&a), vec![0]);
    assert_eq!(cancels(&a), vec![1, 2]);
    assert_eq!(h.fork.dialed_legs(), 3, "the 4th is never dialed");
    h.caller_bye();
    h.ev(0, LegEvent::Ended);
    run_out(&mut h);
}

#[test]
fn memory_hunt_skips_destinations_failing_at_once() {
    let dests = vec![timed(sip("u0@example.com"), 10), ep("nobody@test"), timed(sip("u2@x"), 10)];
    let (mut h, a) = H::started(group_of(RingMethod::MemoryHunt, dests), &Dir::new(), cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    let (_, a) = h.tick();
    assert_eq!(dial_legs(&a), vec![1], "no contact: the step after it comes at once");
    run_out(&mut h);
}

#[test]
fn round_robin_starts_after_the_last_answerer_and_wraps() {
    let group = group_of(RingMethod::RoundRobin, members(4, 10));
    let mut dir = Dir::new();
    let memory = HuntMemory { last_answered: Some(member(1)), answered_at: vec![] };
    dir.memory.insert(group.id, memory);
    assert_eq!(hunt_order(group, &dir, SEED), vec![2, 3, 0, 1]);
}

#[test]
fn round_robin_without_memory_or_with_a_former_member_starts_first() {
    let group = group_of(RingMethod::RoundRobin, members(3, 10));
    assert_eq!(hunt_order(group.clone(), &Dir::new(), SEED), vec![0, 1, 2]);
    let mut dir = Dir::new();
    let gone = Address::new(AddressType::Sip, "gone@example.com");
    dir.memory.insert(group.id, HuntMemory { last_answered: Some(gone), answered_at: vec![] });
    assert_eq!(hunt_order(group, &dir, SEED), vec![0, 1, 2]);
}

/// One call of `group`: the `fails` first dialed legs fail, the next one
/// answers at `at` seconds; returns the legs dialed, and stores the
/// reported memory in `dir`.
fn call(group: &GroupDef, dir: &mut Dir, fails: usize, at: u64) -> Vec<u32> {
    let mut h = H::build(group.clone(), dir, cfg()).expect("build");
    let mut dialed = dial_legs(&h.start());
    h.at(at);
    for _ in 0..fails {
        let last = *dialed.last().expect("dialed");
        dialed.extend(dial_legs(&h.ev(last, LegEvent::Failed { code: 486 })));
    }
    let last = *dialed.last().expect("dialed");
    assert_eq!(answers(&h.ev(last, LegEvent::Answered)), vec![last]);
    h.caller_bye();
    h.ev(last, LegEvent::Ended);
    run_out(&mut h);
    for u in &h.memory {
        dir.memory.insert(u.group, u.memory.clone());
    }
    dialed
}

#[test]
fn round_robin_rotates_across_calls_with_the_reported_memory() {
    let group = group_of(RingMethod::RoundRobin, members(3, 10));
    let mut dir = Dir::new();
    let mut first = Vec::new();
    for k in 0..6 {
        let dialed = call(&group, &mut dir, 0, k + 1);
        first.push(dialed[0]);
    }
    assert_eq!(first, vec![0, 1, 2, 0, 1, 2]);
    let stored = dir.memory.get(&group.id).expect("reported");
    assert_eq!(stored.last_answered, Some(member(2)));
    // A call answered by the 2nd tried: the next one starts after it.
    assert_eq!(call(&group, &mut dir, 1, 10), vec![0, 1]);
    assert_eq!(call(&group, &mut dir, 0, 11), vec![2]);
}

#[test]
fn hunt_memory_update_names_the_group_and_the_answer_time() {
    let group = group_of(RingMethod::RoundRobin, members(2, 10));
    let (mut h, _) = H::started(group.clone(), &Dir::new(), cfg());
    h.at(7);
    h.ev(0, LegEvent::Answered);
    assert_eq!(h.memory.len(), 1);
    let u = &h.memory[0];
    assert_eq!(u.group, group.id);
    assert_eq!(u.memory.last_answered, Some(member(0)));
    assert_eq!(u.memory.last_answer(&member(0)), Some(H::wall(7)));
    assert_eq!(u.memory.last_answer(&member(1)), None);
}

#[test]
fn groups_without_memory_report_none() {
    for m in [RingMethod::RingAll, RingMethod::Linear, RingMethod::MemoryHunt, RingMethod::Random] {
        let (mut h, a) = H::started(group_of(m, members(2, 10)), &Dir::new(), cfg());
        let leg = dial_legs(&a)[0];
        h.ev(leg, LegEvent::Answered);
        assert!(h.memory.is_empty(), "{m:?}");
    }
}

#[test]
fn least_recent_rings_the_longest_idle_first() {
    let group = group_of(RingMethod::LeastRecent, members(4, 10));
    let mut dir = Dir::new();
    let at = |s: i64| Timestamp::from_micros(WALL0 - s * 1_000_000);
    let memory = HuntMemory {
        last_answered: Some(member(0)),
        answered_at: vec![(member(0), at(10)), (member(2), at(100)), (member(3), at(50))],
    };
    dir.memory.insert(group.id, memory);
    // Never answered first (1), then the oldest answer first.
    assert_eq!(hunt_order(group, &dir, SEED), vec![1, 2, 3, 0]);
}

#[test]
fn least_recent_across_calls() {
    let group = group_of(RingMethod::LeastRecent, members(3, 10));
    let mut dir = Dir::new();
    // Nobody answered yet: list order; 0 answers.
    assert_eq!(call(&group, &mut dir, 0, 1), vec![0]);
    // 1 and 2 never answered: 1 first.
    assert_eq!(call(&group, &mut dir, 0, 2), vec![1]);
    // 2 never, then 0 (at 1): 2 fails, 0 answers.
    assert_eq!(call(&group, &mut dir, 1, 3), vec![2, 0]);
    // 2 never, 1 at 2, 0 at 3.
    assert_eq!(call(&group, &mut dir, 2, 4), vec![2, 1, 0]);
    assert_eq!(call(&group, &mut dir, 0, 5), vec![2]);
}

#[test]
fn random_order_is_a_permutation_replayed_by_its_seed() {
    let group = group_of(RingMethod::Random, members(6, 10));
    let dir = Dir::new();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..20 {
        let order = hunt_order(group.clone(), &dir, seed);
        assert_eq!(order, hunt_order(group.clone(), &dir, seed), "seed {seed} replays");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
        seen.insert(order);
    }
    assert!(seen.len() > 10, "orders differ between seeds: {}", seen.len());
}

#[test]
fn sequential_methods_move_on_after_the_ring_timeout() {
    for m in [RingMethod::RoundRobin, RingMethod::LeastRecent, RingMethod::Random] {
        let (mut h, a) = H::started(group_of(m, members(2, 10)), &Dir::new(), cfg());
        let first = dial_legs(&a);
        assert_eq!(first.len(), 1, "{m:?}: one at a time");
        let (t, a) = h.tick();
        assert_eq!(t, 10);
        assert_eq!(cancels(&a), first);
        assert_eq!(dial_legs(&a), vec![1 - first[0]]);
        let (t, a) = h.tick();
        assert_eq!((t, rejects(&a)), (20, vec![480]));
        run_out(&mut h);
    }
}

#[test]
fn ring_all_delay_dials_later_and_times_from_the_dial() {
    let group = ring_all(vec![timed(sip("a@x"), 30), timed(sip("b@x"), 10)]);
    let options = GroupOptions {
        max_ring: None,
        delays: vec![Duration::ZERO, seconds(5)],
        ..Default::default()
    };
    let dir = Dir::new().options(group.id, options);
    let (mut h, a) = H::started(group, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0]);
    assert_eq!(h.fork.leg_call_id(LegId(1)), None, "no call record before its delay");
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (5, vec![1]));
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a)), (15, vec![1]), "its ring timeout counts from the dial");
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), rejects(&a)), (30, vec![0], vec![480]));
    run_out(&mut h);
}

#[test]
fn delayed_destination_is_never_dialed_after_the_answer() {
    let group = ring_all(vec![sip("a@x"), sip("b@x")]);
    let options = GroupOptions {
        max_ring: None,
        delays: vec![Duration::ZERO, seconds(5)],
        ..Default::default()
    };
    let dir = Dir::new().options(group.id, options);
    let (mut h, _) = H::started(group, &dir, cfg());
    h.at(2);
    assert_eq!(answers(&h.ev(0, LegEvent::Answered)), vec![0]);
    h.at(10);
    h.caller_bye();
    h.ev(0, LegEvent::Ended);
    run_out(&mut h);
    assert_eq!(h.fork.dialed_legs(), 1);
    assert_eq!(h.check.calls.len(), 1, "no call record for the delayed leg");
}

#[test]
fn delayed_destination_is_never_dialed_after_the_call_ended() {
    let group = ring_all(vec![sip("a@x"), sip("b@x")]);
    let options = GroupOptions {
        max_ring: None,
        delays: vec![Duration::ZERO, seconds(5)],
        ..Default::default()
    };
    let dir = Dir::new().options(group.id, options);
    let (mut h, _) = H::started(group, &dir, cfg());
    h.at(1);
    let a = h.caller_cancel();
    assert_eq!(rejects(&a), vec![487]);
    h.ev(0, LegEvent::Cancelled);
    assert!(h.fork.is_finished());
    h.finish();
    assert_eq!(h.fork.dialed_legs(), 1);
}

#[test]
fn linear_delay_counts_from_when_the_destination_is_reached() {
    let group = linear(members(2, 10));
    let options = GroupOptions {
        max_ring: None,
        delays: vec![Duration::ZERO, seconds(3)],
        ..Default::default()
    };
    let dir = Dir::new().options(group.id, options);
    let (mut h, _) = H::started(group, &dir, cfg());
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), dial_legs(&a)), (10, vec![0], vec![]));
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (13, vec![1]));
    assert_eq!(h.next_deadline(), Some(23));
    run_out(&mut h);
}

#[test]
fn max_ring_gives_up_whatever_the_method() {
    for m in [
        RingMethod::RingAll,
        RingMethod::Linear,
        RingMethod::MemoryHunt,
        RingMethod::RoundRobin,
        RingMethod::LeastRecent,
        RingMethod::Random,
    ] {
        // ring_all's own ring timeouts must not end it first.
        let secs = if m == RingMethod::RingAll { 100 } else { 30 };
        let group = group_of(m, members(3, secs));
        let options =
            GroupOptions { max_ring: Some(seconds(45)), delays: vec![], ..Default::default() };
        let dir = Dir::new().options(group.id, options);
        let (mut h, _) = H::started(group, &dir, cfg());
        let mut last = Vec::new();
        while h.check.rejects.is_empty() {
            let (t, a) = h.tick();
            assert!(t <= 45, "{m:?} rang past max_ring: {t}");
            last = a;
        }
        assert_eq!(h.ms, 45_000, "{m:?}");
        assert_eq!(rejects(&last), vec![480], "{m:?}");
        assert!(!cancels(&last).is_empty(), "{m:?}: ringing legs cancelled");
        run_out(&mut h);
    }
}

#[test]
fn nested_max_ring_is_the_childs_own() {
    let child = linear(members(3, 30));
    let options =
        GroupOptions { max_ring: Some(seconds(10)), delays: vec![], ..Default::default() };
    let dir = Dir::new().group("700", child.clone()).options(child.id, options);
    let root = ring_all(vec![grp("700"), timed(sip("z@x"), 60)]);
    let (mut h, a) = H::started(root, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![0, 3]);
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), rejects(&a)), (10, vec![0], vec![]));
    assert!(dial_legs(&a).is_empty(), "the child gave up: its next member is not dialed");
    h.at(20);
    assert_eq!(answers(&h.ev(3, LegEvent::Answered)), vec![3]);
    h.caller_bye();
    h.ev(3, LegEvent::Ended);
    run_out(&mut h);
}

#[test]
fn nested_levels_hunt_each_by_its_own_method() {
    // Root: memory hunt over [round robin group, z]; the round robin group
    // last answered by its member 1.
    let rr = group_of(RingMethod::RoundRobin, members(3, 10));
    let mut dir = Dir::new().group("701", rr.clone());
    dir.memory.insert(rr.id, HuntMemory { last_answered: Some(member(1)), answered_at: vec![] });
    let root = group_of(RingMethod::MemoryHunt, vec![timed(grp("701"), 15), sip("z@x")]);
    let (mut h, a) = H::started(root, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![2], "the child starts after its last answerer");
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), dial_legs(&a)), (10, vec![2], vec![0]));
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), dial_legs(&a)), (15, vec![], vec![3]), "root step: z added");
    h.at(17);
    assert_eq!(answers(&h.ev(0, LegEvent::Answered)), vec![0]);
    assert_eq!(h.memory.len(), 1, "only the round robin level remembers");
    assert_eq!(h.memory[0].group, rr.id);
    assert_eq!(h.memory[0].memory.last_answered, Some(member(0)));
    h.caller_bye();
    h.ev(0, LegEvent::Ended);
    run_out(&mut h);
}

#[test]
fn answer_through_nested_groups_updates_every_remembering_level() {
    let inner = group_of(RingMethod::LeastRecent, members(2, 10));
    let dir = Dir::new().group("702", inner.clone());
    let root = group_of(RingMethod::RoundRobin, vec![sip("y@x"), grp("702")]);
    let root_id = root.id;
    let mut dir = dir;
    let y = Address::new(AddressType::Sip, "y@x");
    dir.memory.insert(root_id, HuntMemory { last_answered: Some(y), answered_at: vec![] });
    let (mut h, a) = H::started(root, &dir, cfg());
    assert_eq!(dial_legs(&a), vec![1], "root starts after y: the nested group");
    h.at(3);
    h.ev(1, LegEvent::Answered);
    let groups: Vec<Uuid> = h.memory.iter().map(|u| u.group).collect();
    assert_eq!(groups, vec![inner.id, root_id]);
    let grp_address = Address::new(AddressType::Groupcall, "702");
    assert_eq!(h.memory[1].memory.last_answered, Some(grp_address));
    assert_eq!(h.memory[0].memory.last_answer(&member(0)), Some(H::wall(3)));
}

#[test]
fn hunt_memory_forgets_former_members() {
    let mut memory = HuntMemory::default();
    memory.record_answer(&member(0), H::wall(1));
    memory.record_answer(&member(5), H::wall(2));
    memory.record_answer(&member(0), H::wall(3));
    assert_eq!(memory.answered_at.len(), 2);
    assert_eq!(memory.last_answer(&member(0)), Some(H::wall(3)));
    memory.retain_members(&[member(0), member(1)]);
    assert_eq!(memory.answered_at, vec![(member(0), H::wall(3))]);
    assert_eq!(memory.last_answered, Some(member(0)));
    memory.retain_members(&[member(1)]);
    assert_eq!(memory, HuntMemory::default());
}

#[test]
fn destination_delayed_past_max_ring_is_never_dialed() {
    let group = ring_all(vec![sip("a@x"), sip("b@x")]);
    let options = GroupOptions {
        max_ring: Some(seconds(4)),
        delays: vec![seconds(0), seconds(4)],
        ..Default::default()
    };
    let dir = Dir::new().options(group.id, options);
    let (mut h, _) = H::started(group, &dir, cfg());
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), rejects(&a), dial_legs(&a)), (4, vec![0], vec![480], vec![]));
    run_out(&mut h);
    assert_eq!(h.check.calls.len(), 1);
}

#[test]
fn memory_hunt_delay_is_inside_the_step() {
    let group = group_of(RingMethod::MemoryHunt, members(2, 10));
    let options =
        GroupOptions { max_ring: None, delays: vec![seconds(2), seconds(3)], ..Default::default() };
    let dir = Dir::new().options(group.id, options);
    let (mut h, a) = H::started(group, &dir, cfg());
    assert!(dial_legs(&a).is_empty());
    assert_eq!(dial_legs(&h.tick().1), vec![0]);
    assert_eq!(h.ms, 2_000);
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (10, vec![]), "step 2 starts: its delay first");
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a)), (13, vec![1]));
    let (t, a) = h.tick();
    assert_eq!((t, cancels(&a), rejects(&a)), (20, vec![0, 1], vec![480]));
    run_out(&mut h);
}

#[test]
fn nested_delay_and_method_are_per_level() {
    // A random child whose first member waits 2 s, inside a linear root.
    let child = group_of(RingMethod::Random, members(2, 10));
    let options =
        GroupOptions { max_ring: None, delays: vec![seconds(2), seconds(2)], ..Default::default() };
    let dir = Dir::new().group("703", child.clone()).options(child.id, options);
    let root = linear(vec![timed(grp("703"), 30), sip("z@x")]);
    let (mut h, a) = H::started(root, &dir, cfg());
    assert!(dial_legs(&a).is_empty(), "the child's member waits its delay");
    let (t, a) = h.tick();
    assert_eq!((t, dial_legs(&a).len()), (2, 1));
    run_out(&mut h);
}
