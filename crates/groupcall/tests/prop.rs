//! Property test: random trees (with failover destinations: hops known at
//! build time, or resolved later with random results), random leg events in
//! random order, random caller actions and time jumps; every emitted action
//! is checked against the invariants (see `common::Checker`), the emitted
//! records must equal the fork's own, a failover child only dials its next
//! hop after no response, a 408 or a 5xx, and every fork must reach
//! `Finished` exactly once. Groups use every ring method, sometimes with a
//! `max_ring`, destination delays, `skip_busy` and a hunt memory;
//! extensions are sometimes busy, in DND, or forward (always, on busy, on
//! no answer) to each other, to groups or to a URI, loops included.

mod common;

use common::*;
use groupcall::{
    BuildError, Destination, EndpointPolicy, ForkConfig, GroupDef, GroupOptions, HuntMemory,
    LegEvent, LegId, LegTarget, NoAnswerForward, Reach, Record, ResolveId,
};
use proptest::prelude::*;
use records::{Address, AddressType, RingMethod};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// xorshift64*, so that one u64 describes a whole tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn method(r: &mut Rng) -> RingMethod {
    match r.below(6) {
        0 => RingMethod::RingAll,
        1 => RingMethod::Linear,
        2 => RingMethod::MemoryHunt,
        3 => RingMethod::RoundRobin,
        4 => RingMethod::LeastRecent,
        _ => RingMethod::Random,
    }
}

/// Sometimes a `max_ring`, destination delays and a hunt memory for `def`.
fn extras(r: &mut Rng, dir: &mut Dir, def: &GroupDef) {
    if r.below(2) == 0 {
        let max_ring = (r.below(3) == 0).then(|| Duration::from_secs(1 + r.below(60)));
        let delays = def
            .destinations
            .iter()
            .map(|_| match r.below(4) {
                0 => Duration::from_secs(1 + r.below(20)),
                _ => Duration::ZERO,
            })
            .collect();
        let skip_busy = r.below(2) == 0;
        dir.options.insert(def.id, GroupOptions { max_ring, delays, skip_busy });
    }
    let n = def.destinations.len() as u64;
    if n > 0 && r.below(2) == 0 {
        let mut memory = HuntMemory::default();
        for _ in 0..r.below(4) {
            let m = &def.destinations[r.below(n) as usize].address;
            memory.record_answer(m, records::Timestamp::from_micros(r.below(1 << 40) as i64));
        }
        dir.memory.insert(def.id, memory);
    }
}

/// A forward's destination: an extension (loops among them are likely),
/// a SIP URI or a group.
fn forward_to(r: &mut Rng) -> Address {
    match r.below(4) {
        0 => Address::new(AddressType::Sip, "fwd@example.com"),
        1 => Address::new(AddressType::Groupcall, format!("g{}", r.below(4))),
        _ => Address::new(AddressType::Endpoint, format!("e{}@test", r.below(4))),
    }
}

/// Random busy, DND and forwards for an extension.
fn policy(r: &mut Rng) -> EndpointPolicy {
    let mut p =
        EndpointPolicy { dnd: r.below(6) == 0, busy: r.below(4) == 0, ..Default::default() };
    if r.below(4) == 0 {
        p.forward_always = Some(forward_to(r));
    }
    if r.below(3) == 0 {
        p.forward_busy = Some(forward_to(r));
    }
    if r.below(2) == 0 {
        let after = Duration::from_secs(1 + r.below(30));
        p.forward_noanswer = Some(NoAnswerForward { to: forward_to(r), after });
    }
    p
}

/// How the directory reaches a `sip` or `tel` destination `key`.
fn reach(r: &mut Rng, dir: &mut Dir, key: String) {
    let how = match r.below(6) {
        0 => return,
        1 => Reach::Hops(hops(&key, 1)),
        2 | 3 => Reach::Hops(hops(&key, 2 + r.below(3) as usize)),
        4 => Reach::Resolve,
        _ => Reach::Unreachable(CODES[r.below(CODES.len() as u64) as usize]),
    };
    dir.reach.insert(key, how);
}

/// A destination; nested groups only point to higher-numbered groups, so
/// the directory has no loop.
fn destination(r: &mut Rng, min_group: u64, dir: &mut Dir) -> Destination {
    let mut d = match r.below(5) {
        0 => {
            let user = format!("u{}@example.com", r.below(100));
            reach(r, dir, format!("sip:{user}"));
            sip(&user)
        }
        1 => {
            let number = format!("+1555000{:04}", r.below(10_000));
            reach(r, dir, number.clone());
            tel(&number)
        }
        2 | 3 => ep(&format!("e{}@test", r.below(4))),
        _ if min_group < 4 => grp(&format!("g{}", min_group + r.below(4 - min_group))),
        _ => sip("last@example.com"),
    };
    if r.below(3) == 0 {
        d.ring_timeout = Some(Duration::from_secs(1 + r.below(40)));
    }
    d
}

fn tree(seed: u64) -> (Dir, GroupDef, ForkConfig) {
    let mut r = Rng(seed | 1);
    let mut dir = Dir::new();
    for e in 0..4 {
        dir = dir.endpoint(&format!("e{e}@test"), r.below(4) as usize);
    }
    for e in 0..4 {
        if r.below(2) == 0 {
            let policy = policy(&mut r);
            dir = dir.policy(&format!("e{e}@test"), policy);
        }
    }
    for g in (0..4u64).rev() {
        let n = r.below(4);
        let dests = (0..n).map(|_| destination(&mut r, g + 1, &mut dir)).collect();
        let mut def = GroupDef::new(Uuid::new_v4(), method(&mut r), dests);
        def.send_reason = r.below(2) == 0;
        extras(&mut r, &mut dir, &def);
        dir = dir.group(&format!("g{g}"), def);
    }
    let n = 1 + r.below(4);
    let dests = (0..n).map(|_| destination(&mut r, 0, &mut dir)).collect();
    let mut root = GroupDef::new(Uuid::new_v4(), method(&mut r), dests);
    root.send_reason = r.below(2) == 0;
    extras(&mut r, &mut dir, &root);
    let cfg = ForkConfig {
        stop_on_6xx: r.below(2) == 0,
        overall_timeout: Duration::from_secs(20 + r.below(150)),
        max_legs: 4 + r.below(60) as usize,
        ..ForkConfig::default()
    };
    (dir, root, cfg)
}

const CODES: [u16; 10] = [404, 408, 480, 486, 487, 500, 503, 600, 603, 302];
/// Failures after which a failover child tries its next hop.
const SERVER_CODES: [u16; 4] = [408, 500, 502, 503];

fn event(kind: u8, arg: u8) -> LegEvent {
    match kind {
        0 => LegEvent::Trying,
        1 | 2 => LegEvent::Ringing,
        3 => LegEvent::EarlyMedia,
        4 | 5 => LegEvent::Answered,
        6 | 7 => LegEvent::Failed { code: CODES[arg as usize % CODES.len()] },
        8 => LegEvent::NoResponse,
        9 => LegEvent::Cancelled,
        10 => LegEvent::HungUp,
        _ => LegEvent::Ended,
    }
}

/// The key of a resolved target, for [`hops`].
fn key(target: &LegTarget) -> String {
    match target {
        LegTarget::Sip { uri } => uri.clone(),
        LegTarget::Tel { number } => number.clone(),
        other => panic!("resolve of {other:?}"),
    }
}

/// A failover child dials a hop only after the one before it got no
/// response, a 408 or a 5xx: `ends` holds the first final event each dialed
/// leg was given.
fn failover_rule_kept(h: &H, ends: &HashMap<LegId, LegEvent>) {
    let leg_of: HashMap<_, _> = h.check.dialed.iter().map(|(l, c)| (*c, *l)).collect();
    for g in h.check.groups.values() {
        let is_failover_child = g.master_groupcall_id != records::NIL
            && !g.destinations.is_empty()
            && g.destinations.iter().all(|d| !d.detail.is_empty());
        if !is_failover_child {
            continue;
        }
        assert!(g.call_ids.len() <= g.destinations.len());
        for pair in g.call_ids.windows(2) {
            let before = leg_of[&pair[0]];
            assert!(
                matches!(
                    ends.get(&before),
                    Some(LegEvent::NoResponse | LegEvent::Failed { code: 408 | 500..=599 })
                ),
                "next hop dialed after {before:?} ended with {:?}",
                ends.get(&before)
            );
            assert!(
                matches!(h.check.targets.get(&leg_of[&pair[1]]), Some(LegTarget::Hop { .. })),
                "a failover child dials hops"
            );
        }
    }
}

/// Every record the fork holds was emitted as it is now.
fn records_in_sync(h: &H) {
    let root = h.fork.root();
    assert_eq!(h.check.groups.get(&root.id), Some(root));
    for (id, g) in &h.check.groups {
        assert_eq!(h.fork.groupcall(*id), Some(g), "groupcall record not emitted on change");
    }
    for (id, c) in &h.check.calls {
        assert_eq!(h.fork.call(*id), Some(c), "call record not emitted on change");
    }
    let leg_calls = (0..64).filter(|l| h.fork.leg_call_id(LegId(*l)).is_some()).count();
    assert_eq!(leg_calls, h.check.calls.len());
}

fn run(seed: u64, ops: &[(u8, u8, u8)]) {
    let (dir, root, cfg) = tree(seed);
    let mut h = match H::build(root, &dir, cfg) {
        Ok(h) => h,
        Err(e) => {
            assert!(
                matches!(e, BuildError::TooManyLegs { .. } | BuildError::TooManyGroups { .. }),
                "{e:?}"
            );
            return;
        }
    };
    if seed & 2 == 0 {
        let _ = h.start();
    }
    let mut ends: HashMap<LegId, LegEvent> = HashMap::new();
    for &(kind, leg, arg) in ops {
        match kind {
            0..=29 => {
                // Mostly legs that were dialed; sometimes any id (unknown,
                // undialed or over).
                let mut dialed: Vec<u32> = h.check.dialed.keys().map(|l| l.0).collect();
                dialed.sort_unstable();
                let id = match dialed.len() {
                    n if n > 0 && leg < 200 => dialed[usize::from(leg) % n],
                    _ => u32::from(leg % 24),
                };
                let ev = match event(kind % 12, arg) {
                    // Carriers and DNS targets fail with server codes half
                    // the time, so that hunts go past their first hop.
                    LegEvent::Failed { .. }
                        if arg % 2 == 0
                            && matches!(
                                h.check.targets.get(&LegId(id)),
                                Some(LegTarget::Hop { .. })
                            ) =>
                    {
                        LegEvent::Failed { code: SERVER_CODES[usize::from(arg / 2) % 4] }
                    }
                    ev => ev,
                };
                let last = matches!(
                    ev,
                    LegEvent::Failed { .. }
                        | LegEvent::NoResponse
                        | LegEvent::Cancelled
                        | LegEvent::HungUp
                        | LegEvent::Ended
                );
                if last && h.check.dialed.contains_key(&LegId(id)) {
                    ends.entry(LegId(id)).or_insert(ev);
                }
                let _ = h.ev(id, ev);
            }
            30 | 31 => {
                h.ms += u64::from(arg) * 500;
                let now = h.now();
                h.fork.handle_timeout(now);
                h.drain();
            }
            32 | 33 => {
                if h.fork.poll_timeout().is_some() {
                    h.tick();
                }
            }
            34 => {
                let _ = h.caller_cancel();
            }
            35 => {
                let _ = h.caller_bye();
            }
            36 => {
                let _ = h.hangup();
            }
            40..=42 => {
                // Mostly a question asked; sometimes an unknown one, or one
                // answered already.
                let n = h.check.resolves.len();
                let (query, hops_of) = match n {
                    n if n > 0 && leg < 220 => {
                        let (q, t) = &h.check.resolves[usize::from(leg) % n];
                        (*q, key(t))
                    }
                    _ => (ResolveId(u32::from(leg % 8)), "sip:x@example.com".to_string()),
                };
                let _ = h.resolved(query, hops(&hops_of, usize::from(arg % 5)));
            }
            43 => {
                let now = h.now();
                h.fork.leg_dialed(now, LegId(u32::from(leg % 24)), &format!("cid-{arg}"));
                h.drain();
            }
            _ => {
                let _ = h.start();
            }
        }
        records_in_sync(&h);
        failover_rule_kept(&h, &ends);
    }
    // Drive to the end: settle the caller's side, then let timers run.
    let _ = h.start();
    let _ = h.hangup();
    let asked: Vec<ResolveId> = h.check.resolves.iter().map(|(q, _)| *q).collect();
    for q in asked {
        assert_eq!(h.resolved(q, hops("sip:late@example.com", 2)), vec![], "resolved when settled");
    }
    let mut guard = 0;
    while !h.fork.is_finished() {
        guard += 1;
        assert!(guard < 1000, "never finished");
        match h.fork.poll_timeout() {
            Some(_) => {
                h.tick();
            }
            None => panic!("stuck: not finished and no deadline"),
        }
        records_in_sync(&h);
    }
    assert_eq!(h.fork.poll_timeout(), None);
    assert!(h.fork.poll_action().is_none());
    h.finish();
    if std::env::var("GC_STATS").is_ok() {
        let hop_legs =
            h.check.targets.values().filter(|t| matches!(t, LegTarget::Hop { .. })).count();
        let failovers = h
            .check
            .groups
            .values()
            .filter(|g| g.destinations.iter().all(|d| !d.detail.is_empty()))
            .filter(|g| g.call_ids.len() >= 2)
            .count();
        eprintln!(
            "STAT legs={} groups={} answer={} reject={:?} resolves={} hop_legs={} failovers={}",
            h.check.dialed.len(),
            h.check.groups.len(),
            h.check.answers.len(),
            h.check.rejects,
            h.check.resolves.len(),
            hop_legs,
            failovers,
        );
    }
    // Every leg dialed has a record, and only answered legs were bridged.
    for a in &h.log {
        if let groupcall::Action::RecordChanged(Record::Call(c)) = a {
            assert_eq!(c.customer_id, h.fork.root().customer_id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_forks_keep_their_invariants(
        seed in any::<u64>(),
        ops in prop::collection::vec((0u8..44, any::<u8>(), any::<u8>()), 0..120),
    ) {
        run(seed, &ops);
    }
}

#[test]
fn fixed_seeds() {
    for seed in 0..300u64 {
        let ops: Vec<(u8, u8, u8)> = (0..60u64)
            .map(|i| {
                let x = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(i.wrapping_mul(1442695040888963407));
                ((x >> 33) as u8 % 44, (x >> 13) as u8, (x >> 45) as u8)
            })
            .collect();
        run(seed, &ops);
    }
}
