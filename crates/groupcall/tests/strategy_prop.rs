//! Property tests of the ring methods: never two answers; a memory hunt
//! rings a prefix of its list that only grows; round robin tries every
//! member before any twice across successive calls; a random order (and a
//! whole fork with random groups) replays from its seed.

mod common;

use common::*;
use groupcall::{Action, Destination, GroupDef, GroupOptions, HuntMemory, LegEvent};
use proptest::prelude::*;
use records::{Address, AddressType, RingMethod};
use std::time::Duration;
use uuid::Uuid;

fn member(i: usize) -> Address {
    Address::new(AddressType::Sip, format!("u{i}@example.com"))
}

/// SIP destinations with these ring timeouts (0: the default).
fn members(timeouts: &[u64]) -> Vec<Destination> {
    timeouts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let d = sip(&format!("u{i}@example.com"));
            if t == 0 {
                d
            } else {
                timed(d, t)
            }
        })
        .collect()
}

fn event(kind: u8) -> LegEvent {
    match kind % 8 {
        0 => LegEvent::Ringing,
        1 => LegEvent::EarlyMedia,
        2 => LegEvent::Answered,
        3 => LegEvent::Failed { code: 486 },
        4 => LegEvent::Failed { code: 603 },
        5 => LegEvent::NoResponse,
        6 => LegEvent::Cancelled,
        _ => LegEvent::Failed { code: 404 },
    }
}

/// Runs the timers until the fork is finished, then checks the end.
fn run_out(h: &mut H) {
    let _ = h.hangup();
    let mut guard = 0;
    while !h.fork.is_finished() {
        guard += 1;
        assert!(guard < 1000, "never finished");
        h.tick();
    }
    h.finish();
}

fn is_final(a: &Action) -> bool {
    matches!(a, Action::AnswerCaller { .. } | Action::RejectCaller { .. })
}

/// A memory hunt over `timeouts`.len() destinations driven by `ops`: the
/// legs dialed are always destinations 0..k, k only grows, and no leg is
/// CANCELed before the caller's side is settled.
fn memory_hunt_prefix(timeouts: &[u64], ops: &[(u8, u8)]) {
    let group = group_of(RingMethod::MemoryHunt, members(timeouts));
    let n = timeouts.len();
    let mut h = H::build(group, &Dir::new(), cfg()).expect("build");
    let mut batches = vec![h.start()];
    let mut dialed_before = 0;
    for &(kind, arg) in ops {
        let batch = match kind % 4 {
            0 | 1 => {
                let leg = u32::from(arg) % n as u32;
                h.ev(leg, event(arg / 8))
            }
            2 => match h.fork.poll_timeout() {
                Some(_) => h.tick().1,
                None => Vec::new(),
            },
            _ => {
                h.ms += u64::from(arg) * 100;
                let now = h.now();
                h.fork.handle_timeout(now);
                ops_of(h.drain())
            }
        };
        batches.push(batch);
        let dialed = h.fork.dialed_legs();
        assert!(dialed >= dialed_before, "the ringing set shrank");
        for l in 0..dialed {
            assert!(h.fork.leg_call_id(groupcall::LegId(l as u32)).is_some(), "not a prefix");
        }
        dialed_before = dialed;
    }
    let mut settled = false;
    for batch in &batches {
        let settles = batch.iter().any(is_final);
        for a in batch {
            if let Action::Cancel { leg, .. } = a {
                assert!(settled || settles, "{leg:?} cancelled while the hunt went on");
            }
        }
        settled |= settles;
    }
    run_out(&mut h);
}

fn ops_of(v: Vec<Action>) -> Vec<Action> {
    ops(&v)
}

/// Successive calls of a round robin group of `n` members, the memory
/// reported by each stored for the next. Call `k` sees `fails[k]`
/// failures (by a final response or the ring timeout, as `how[k]` says)
/// before an answer, or none at all when there are `n` or more. Every
/// member is tried before any twice: the legs dialed over all the calls,
/// in order, go round the list.
fn round_robin_rotation(n: usize, last: Option<usize>, calls: &[(usize, bool)]) {
    let group = group_of(RingMethod::RoundRobin, members(&vec![10; n]));
    let mut dir = Dir::new();
    if let Some(last) = last {
        let mut memory = HuntMemory::default();
        memory.record_answer(&member(last % n), H::wall(0));
        dir.memory.insert(group.id, memory);
    }
    let mut all = Vec::new();
    for (k, &(fails, by_timeout)) in calls.iter().enumerate() {
        let mut h = H::build(group.clone(), &dir, cfg()).expect("build");
        h.at(k as u64);
        let mut dialed = dial_legs(&h.start());
        for _ in 0..fails.min(n) {
            let Some(&cur) = dialed.last() else { break };
            let next =
                if by_timeout { h.tick().1 } else { h.ev(cur, LegEvent::Failed { code: 486 }) };
            if by_timeout {
                h.ev(cur, LegEvent::Cancelled);
            }
            dialed.extend(dial_legs(&next));
        }
        if fails < n {
            let cur = *dialed.last().expect("one ringing");
            h.ev(cur, LegEvent::Answered);
            h.caller_bye();
            h.ev(cur, LegEvent::Ended);
            assert_eq!(h.memory.len(), 1);
        } else {
            assert!(h.memory.is_empty(), "no answer, no update");
            assert_eq!(dialed.len(), n, "every member tried once");
        }
        run_out(&mut h);
        for u in &h.memory {
            dir.memory.insert(u.group, u.memory.clone());
        }
        all.extend(dialed);
    }
    let start = last.map_or(0, |l| (l % n + 1) % n) as u32;
    for (i, &leg) in all.iter().enumerate() {
        assert_eq!(leg, (start + i as u32) % n as u32, "dial {i} of {all:?}");
    }
    for w in all.windows(n) {
        let mut seen = w.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "a member twice before another once: {w:?}");
    }
}

/// A fork of random groups at two levels: the actions (records and their
/// ids included) replay exactly from the seed.
fn random_fork_log(seed: u64, n: usize, events: &[(u8, u8)]) -> (Vec<Action>, Vec<u32>) {
    let ids = Uuid::from_u128(0x1111);
    let child = GroupDef::new(Uuid::from_u128(0x2222), RingMethod::Random, members(&vec![5; n]));
    let mut dests = members(&vec![7; n]);
    dests.insert(n / 2, timed(grp("900"), 30));
    let root = GroupDef::new(ids, RingMethod::Random, dests);
    let dir = Dir::new().group("900", child);
    let mut h = H::build_seeded(root, &dir, cfg(), seed).expect("build");
    let mut order = dial_legs(&h.start());
    for &(kind, arg) in events {
        let a = match kind % 3 {
            0 => match h.fork.poll_timeout() {
                Some(_) => h.tick().1,
                None => Vec::new(),
            },
            _ => {
                let legs = h.check.dialed.len().max(1) as u32;
                h.ev(u32::from(arg) % legs, event(arg / 4))
            }
        };
        order.extend(dial_legs(&a));
    }
    run_out(&mut h);
    (h.log.clone(), order)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn memory_hunt_rings_a_growing_prefix(
        timeouts in prop::collection::vec(0u64..40, 1..7),
        ops in prop::collection::vec((any::<u8>(), any::<u8>()), 0..60),
    ) {
        memory_hunt_prefix(&timeouts, &ops);
    }

    #[test]
    fn round_robin_visits_every_member_before_any_twice(
        n in 1usize..7,
        last in prop::option::of(0usize..7),
        calls in prop::collection::vec((0usize..8, any::<bool>()), 1..12),
    ) {
        round_robin_rotation(n, last, &calls);
    }

    #[test]
    fn random_replays_from_its_seed(
        seed in any::<u64>(),
        n in 1usize..6,
        events in prop::collection::vec((any::<u8>(), any::<u8>()), 0..40),
    ) {
        let (log, order) = random_fork_log(seed, n, &events);
        let (again, order_again) = random_fork_log(seed, n, &events);
        prop_assert_eq!(&log, &again);
        prop_assert_eq!(order, order_again);
    }

    #[test]
    fn random_order_is_a_permutation(seed in any::<u64>(), n in 1usize..9) {
        let group = group_of(RingMethod::Random, members(&vec![10; n]));
        let mut h = H::build_seeded(group, &Dir::new(), cfg(), seed).expect("build");
        let mut order = dial_legs(&h.start());
        while let Some(&cur) = order.last() {
            let next = dial_legs(&h.ev(cur, LegEvent::Failed { code: 480 }));
            if next.is_empty() {
                break;
            }
            order.extend(next);
        }
        order.sort_unstable();
        prop_assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
        run_out(&mut h);
    }

    #[test]
    fn never_two_answers_whatever_the_method_and_options(
        method in 0u8..6,
        timeouts in prop::collection::vec(0u64..40, 1..6),
        delays in prop::collection::vec(0u64..15, 0..6),
        max_ring in prop::option::of(1u64..60),
        ops in prop::collection::vec((any::<u8>(), any::<u8>()), 0..60),
    ) {
        let method = [
            RingMethod::RingAll,
            RingMethod::Linear,
            RingMethod::MemoryHunt,
            RingMethod::RoundRobin,
            RingMethod::LeastRecent,
            RingMethod::Random,
        ][usize::from(method)];
        let group = group_of(method, members(&timeouts));
        let options = GroupOptions {
            max_ring: max_ring.map(Duration::from_secs),
            delays: delays.iter().map(|&d| Duration::from_secs(d)).collect(),
            ..Default::default()
        };
        let dir = Dir::new().options(group.id, options);
        let n = timeouts.len() as u32;
        let mut h = H::build(group, &dir, cfg()).expect("build");
        h.start();
        for &(kind, arg) in &ops {
            match kind % 3 {
                0 => {
                    if h.fork.poll_timeout().is_some() {
                        h.tick();
                    }
                }
                _ => {
                    // The Checker panics on a second answer or final.
                    h.ev(u32::from(arg) % n, event(arg / 8));
                }
            }
            prop_assert!(h.check.answers.len() <= 1);
            if let Some(max) = max_ring {
                if h.ms > max * 1000 {
                    prop_assert!(!h.check.answers.is_empty() || !h.check.rejects.is_empty(),
                        "still hunting past max_ring");
                }
            }
        }
        run_out(&mut h);
        prop_assert!(h.memory.len() <= 1);
    }
}
