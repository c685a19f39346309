//! Property test: random trees, random leg events in random order, random
//! caller actions and time jumps; every emitted action is checked against
//! the invariants (see `common::Checker`), the emitted records must equal
//! the fork's own, and every fork must reach `Finished` exactly once.

mod common;

use common::*;
use groupcall::{BuildError, Destination, ForkConfig, GroupDef, LegEvent, LegId, Record};
use proptest::prelude::*;
use records::RingMethod;
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
    if r.below(2) == 0 {
        RingMethod::RingAll
    } else {
        RingMethod::Linear
    }
}

/// A destination; nested groups only point to higher-numbered groups, so
/// the directory has no loop.
fn destination(r: &mut Rng, min_group: u64) -> Destination {
    let mut d = match r.below(5) {
        0 => sip(&format!("u{}@example.com", r.below(100))),
        1 => tel(&format!("+1555000{:04}", r.below(10_000))),
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
    for g in (0..4u64).rev() {
        let n = r.below(4);
        let dests = (0..n).map(|_| destination(&mut r, g + 1)).collect();
        let mut def = GroupDef::new(Uuid::new_v4(), method(&mut r), dests);
        def.send_reason = r.below(2) == 0;
        dir = dir.group(&format!("g{g}"), def);
    }
    let n = 1 + r.below(4);
    let dests = (0..n).map(|_| destination(&mut r, 0)).collect();
    let mut root = GroupDef::new(Uuid::new_v4(), method(&mut r), dests);
    root.send_reason = r.below(2) == 0;
    let cfg = ForkConfig {
        stop_on_6xx: r.below(2) == 0,
        overall_timeout: Duration::from_secs(20 + r.below(150)),
        max_legs: 4 + r.below(60) as usize,
        ..ForkConfig::default()
    };
    (dir, root, cfg)
}

const CODES: [u16; 10] = [404, 408, 480, 486, 487, 500, 503, 600, 603, 302];

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
                let _ = h.ev(id, event(kind % 12, arg));
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
            _ => {
                let _ = h.start();
            }
        }
        records_in_sync(&h);
    }
    // Drive to the end: settle the caller's side, then let timers run.
    let _ = h.start();
    let _ = h.hangup();
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
        eprintln!(
            "STAT legs={} groups={} answer={} reject={:?}",
            h.check.dialed.len(),
            h.check.groups.len(),
            h.check.answers.len(),
            h.check.rejects
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
        ops in prop::collection::vec((0u8..40, any::<u8>(), any::<u8>()), 0..120),
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
                ((x >> 33) as u8 % 40, (x >> 13) as u8, (x >> 45) as u8)
            })
            .collect();
        run(seed, &ops);
    }
}
