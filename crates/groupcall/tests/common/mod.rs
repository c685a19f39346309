//! Test harness: a fake directory, virtual time, and an invariant checker
//! that sees every action a fork emits.
#![allow(dead_code)]

use groupcall::{
    Action, BuildError, ContactTarget, Destination, Directory, EndpointPolicy, Fork, ForkConfig,
    GroupDef, GroupOptions, GroupSpec, Hop, HuntMemory, HuntMemoryUpdate, LegEvent, LegId,
    LegTarget, Now, Reach, Record, ResolveId,
};
use records::{
    Address, AddressType, Call, CallStatus, Groupcall, GroupcallStatus, Origin, RingGroup,
    RingGroupDestination, RingMethod, Timestamp, NIL,
};
use sip_message::Transport;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Wall clock of virtual time zero (2023-11-14).
pub const WALL0: i64 = 1_700_000_000_000_000;

#[derive(Default, Clone)]
pub struct Dir {
    pub contacts: HashMap<String, Vec<ContactTarget>>,
    /// Stored groups as the tests write them, by number and by id.
    pub groups: HashMap<String, GroupDef>,
    /// The same as the records a directory hands out (with their options),
    /// made again whenever a group or options are added.
    stored: HashMap<String, RingGroup>,
    /// How a `sip` URI (with its `sip:`) or a `tel` number is reached;
    /// `Direct` when absent.
    pub reach: HashMap<String, Reach>,
    /// Options by group id.
    pub options: HashMap<Uuid, GroupOptions>,
    /// Hunt memory by group id.
    pub memory: HashMap<Uuid, HuntMemory>,
    /// Busy, DND and forwards by AOR.
    pub policies: HashMap<String, EndpointPolicy>,
}

/// Hop `i` of `key`: carrier `c<i>` for a number, a DNS target for a URI.
pub fn hop(key: &str, i: usize) -> Hop {
    let address = format!("192.0.2.{}:5060", i + 1).parse().expect("address");
    if key.starts_with('+') {
        Hop {
            request_uri: format!("sip:{key}@192.0.2.{}", i + 1),
            transport: Transport::Udp,
            address,
            trunk: Some(format!("c{i}")),
        }
    } else {
        Hop { request_uri: key.to_string(), transport: Transport::Tcp, address, trunk: None }
    }
}

/// `n` hops of `key`.
pub fn hops(key: &str, n: usize) -> Vec<Hop> {
    (0..n).map(|i| hop(key, i)).collect()
}

impl Dir {
    pub fn new() -> Dir {
        Dir::default()
    }

    /// An endpoint `aor` with `n` contacts `sip:<user>@10.0.0.<i>`, q 1.0 down.
    pub fn endpoint(mut self, aor: &str, n: usize) -> Dir {
        let user = aor.split('@').next().unwrap_or(aor);
        let list = (0..n)
            .map(|i| ContactTarget {
                uri: format!("sip:{user}@10.0.0.{}", i + 1),
                binding_key: format!("{aor}#{i}"),
                q: 1000 - i as u16,
            })
            .collect();
        self.contacts.insert(aor.to_string(), list);
        self
    }

    /// `key` (a number, or a URI with its `sip:`) is reached this way.
    pub fn reach(mut self, key: &str, reach: Reach) -> Dir {
        self.reach.insert(key.to_string(), reach);
        self
    }

    /// `key` is reached over `n` hops ([`hops`]).
    pub fn hops(self, key: &str, n: usize) -> Dir {
        let v = hops(key, n);
        self.reach(key, Reach::Hops(v))
    }

    /// A stored group, reachable by `number` and by its id.
    pub fn group(mut self, number: &str, def: GroupDef) -> Dir {
        self.groups.insert(def.id.to_string(), def.clone());
        self.groups.insert(number.to_string(), def);
        self.store();
        self
    }

    /// The stored groups as records, each with its options.
    fn store(&mut self) {
        let opts = &self.options;
        self.stored =
            self.groups.iter().map(|(k, d)| (k.clone(), ring_group(d, opts.get(&d.id)))).collect();
    }

    /// `def` with its options from this directory, when it has some.
    pub fn with_options(&self, mut def: GroupDef) -> GroupDef {
        if let Some(o) = self.options.get(&def.id) {
            def.options = o.clone();
        }
        def
    }
}

/// The record of a stored group written as a `GroupDef` with `options`
/// (whole seconds, as the records keep them).
pub fn ring_group(def: &GroupDef, options: Option<&GroupOptions>) -> RingGroup {
    let options = options.unwrap_or(&def.options);
    RingGroup {
        id: def.id,
        customer_id: NIL,
        number: String::new(),
        domain: String::new(),
        ring_method: def.ring_method,
        answer_method: def.answer_method,
        destinations: def
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| RingGroupDestination {
                kind: d.address.kind,
                target: d.address.target.clone(),
                ring_timeout_secs: d.ring_timeout.map(|t| t.as_secs()),
                delay_secs: Some(options.delay(i).as_secs()).filter(|s| *s > 0),
            })
            .collect(),
        max_ring_secs: options.max_ring.map(|t| t.as_secs()),
        skip_busy: options.skip_busy,
        send_reason: def.send_reason,
        origin: Origin::Config,
        tm_create: Timestamp::NOT_YET,
        tm_update: Timestamp::NOT_YET,
        tm_delete: Timestamp::NOT_YET,
    }
}

impl Dir {
    /// Group `id` has these options.
    pub fn options(mut self, id: Uuid, options: GroupOptions) -> Dir {
        self.options.insert(id, options);
        self.store();
        self
    }

    /// Extension `aor` takes calls this way.
    pub fn policy(mut self, aor: &str, policy: EndpointPolicy) -> Dir {
        self.policies.insert(aor.to_string(), policy);
        self
    }
}

impl Directory for Dir {
    fn hunt_memory(&self, group: Uuid) -> HuntMemory {
        self.memory.get(&group).cloned().unwrap_or_default()
    }
    fn endpoint_policy(&self, aor: &str) -> EndpointPolicy {
        self.policies.get(aor).cloned().unwrap_or_default()
    }
    fn contacts(&self, aor: &str) -> Vec<ContactTarget> {
        self.contacts.get(aor).cloned().unwrap_or_default()
    }
    fn group(&self, key: &str) -> Option<&RingGroup> {
        self.stored.get(key)
    }
    fn reach(&self, target: &LegTarget) -> Reach {
        let key = match target {
            LegTarget::Sip { uri } => uri,
            LegTarget::Tel { number } => number,
            other => panic!("reach asked for {other:?}"),
        };
        self.reach.get(key).cloned().unwrap_or(Reach::Direct)
    }
}

pub fn sip(t: &str) -> Destination {
    Destination::new(Address::new(AddressType::Sip, t))
}
pub fn tel(t: &str) -> Destination {
    Destination::new(Address::new(AddressType::Tel, t))
}
pub fn ep(t: &str) -> Destination {
    Destination::new(Address::new(AddressType::Endpoint, t))
}
pub fn grp(t: &str) -> Destination {
    Destination::new(Address::new(AddressType::Groupcall, t))
}
pub fn timed(mut d: Destination, secs: u64) -> Destination {
    d.ring_timeout = Some(Duration::from_secs(secs));
    d
}
pub fn ring_all(dests: Vec<Destination>) -> GroupDef {
    GroupDef::new(Uuid::new_v4(), RingMethod::RingAll, dests)
}
pub fn linear(dests: Vec<Destination>) -> GroupDef {
    GroupDef::new(Uuid::new_v4(), RingMethod::Linear, dests)
}
/// A group of any ring method, with a fresh id.
pub fn group_of(method: RingMethod, dests: Vec<Destination>) -> GroupDef {
    GroupDef::new(Uuid::new_v4(), method, dests)
}

pub fn spec(group: GroupDef) -> GroupSpec {
    GroupSpec {
        customer_id: Uuid::from_u128(0xC0FFEE),
        source: Address::new(AddressType::Tel, "+15551234567"),
        master_call_id: Uuid::from_u128(0xCA11),
        group,
    }
}

/// Only the signalling actions (no record changes).
pub fn ops(v: &[Action]) -> Vec<Action> {
    v.iter().filter(|a| !matches!(a, Action::RecordChanged(_))).cloned().collect()
}

/// Sees every action; panics on a broken invariant.
#[derive(Default)]
pub struct Checker {
    pub calls: HashMap<Uuid, Call>,
    pub groups: HashMap<Uuid, Groupcall>,
    pub dialed: HashMap<LegId, Uuid>,
    /// Where each dialed leg went.
    pub targets: HashMap<LegId, LegTarget>,
    /// Resolves asked for, in order.
    pub resolves: Vec<(ResolveId, LegTarget)>,
    pub answers: Vec<LegId>,
    pub rejects: Vec<u16>,
    pub ringing: usize,
    pub early: usize,
    pub finished: usize,
}

impl Checker {
    pub fn see(&mut self, a: &Action) {
        assert_eq!(self.finished, 0, "action after Finished: {a:?}");
        match a {
            Action::Dial { leg, call_id, target } => {
                assert!(self.dialed.insert(*leg, *call_id).is_none(), "{leg:?} dialed twice");
                assert!(self.answers.is_empty() && self.rejects.is_empty(), "dial after final");
                assert!(self.calls.contains_key(call_id), "Dial before its call record");
                self.targets.insert(*leg, target.clone());
            }
            Action::Resolve { query, target } => {
                assert!(
                    matches!(target, LegTarget::Sip { .. } | LegTarget::Tel { .. }),
                    "resolve of {target:?}"
                );
                assert!(self.resolves.iter().all(|(q, _)| q != query), "{query:?} asked twice");
                assert!(self.answers.is_empty() && self.rejects.is_empty(), "resolve after final");
                self.resolves.push((*query, target.clone()));
            }
            Action::Cancel { leg, .. } | Action::AckAndBye { leg } | Action::Bye { leg } => {
                assert!(self.dialed.contains_key(leg), "{a:?} for an undialed leg");
            }
            Action::RelayEarlyMedia { leg } => {
                assert!(self.dialed.contains_key(leg));
                self.early += 1;
                assert_eq!(self.early, 1, "early media relayed twice");
            }
            Action::RelayRinging => {
                self.ringing += 1;
                assert_eq!(self.ringing, 1, "ringing relayed twice");
                assert_eq!(self.early, 0, "ringing relayed after early media");
            }
            Action::AnswerCaller { leg } => {
                assert!(self.dialed.contains_key(leg));
                assert!(self.answers.is_empty() && self.rejects.is_empty(), "second final");
                self.answers.push(*leg);
            }
            Action::RejectCaller { code } => {
                assert!(self.answers.is_empty() && self.rejects.is_empty(), "second final");
                assert!((400..700).contains(code), "bad final {code}");
                self.rejects.push(*code);
            }
            Action::ByeCaller => assert_eq!(self.answers.len(), 1, "ByeCaller without answer"),
            Action::RecordChanged(Record::Call(c)) => {
                match self.calls.get(&c.id) {
                    Some(p) => {
                        assert!(
                            p.status == c.status || p.status.can_become(c.status),
                            "call {} went {:?} -> {:?}",
                            c.id,
                            p.status,
                            c.status
                        );
                        assert!(c.tm_update >= p.tm_update);
                        if !p.tm_progressing.is_not_yet() {
                            assert_eq!(p.tm_progressing, c.tm_progressing);
                        }
                    }
                    None => assert_eq!(c.status, CallStatus::Dialing),
                }
                if c.status == CallStatus::Hangup {
                    assert!(!c.tm_hangup.is_not_yet());
                    assert_ne!(c.hangup_reason, records::HangupReason::None, "{c:?}");
                    assert_ne!(c.hangup_by, records::HangupBy::None, "{c:?}");
                }
                self.calls.insert(c.id, c.clone());
            }
            Action::RecordChanged(Record::Groupcall(g)) => {
                if let Some(p) = self.groups.get(&g.id) {
                    assert!(g.status >= p.status, "groupcall status went back");
                    if p.answer_call_id != NIL {
                        assert_eq!(g.answer_call_id, p.answer_call_id, "answer_call_id changed");
                        assert_eq!(g.answer_groupcall_id, p.answer_groupcall_id);
                    }
                    assert!(g.call_ids.starts_with(&p.call_ids));
                    assert!(g.groupcall_ids.starts_with(&p.groupcall_ids));
                    assert!(g.tm_update >= p.tm_update);
                }
                self.groups.insert(g.id, g.clone());
            }
            Action::Finished => self.finished += 1,
        }
    }

    /// At the end: one final, every record over, the answer consistent.
    pub fn at_finish(&self, fork: &Fork) {
        assert_eq!(self.finished, 1, "Finished not seen exactly once");
        assert!(fork.is_finished());
        assert_eq!(self.answers.len() + self.rejects.len(), 1, "exactly one final");
        for c in self.calls.values() {
            assert_eq!(c.status, CallStatus::Hangup, "{c:?}");
        }
        for g in self.groups.values() {
            assert_eq!(g.status, GroupcallStatus::Hangup, "{g:?}");
        }
        let root = fork.root();
        match self.answers.first() {
            Some(leg) => assert_eq!(Some(&root.answer_call_id), self.dialed.get(leg)),
            None => assert_eq!(root.answer_call_id, NIL),
        }
    }
}

/// A fork on virtual time.
pub struct H {
    pub fork: Fork,
    pub t0: Instant,
    pub ms: u64,
    pub check: Checker,
    pub log: Vec<Action>,
    /// Every hunt memory update reported, in order.
    pub memory: Vec<HuntMemoryUpdate>,
}

/// The seed of [`H::build`]'s forks.
pub const SEED: u64 = 0x5EED;

impl H {
    pub fn build(group: GroupDef, dir: &Dir, cfg: ForkConfig) -> Result<H, BuildError> {
        H::build_seeded(group, dir, cfg, SEED)
    }

    pub fn build_seeded(
        group: GroupDef,
        dir: &Dir,
        cfg: ForkConfig,
        seed: u64,
    ) -> Result<H, BuildError> {
        let t0 = Instant::now();
        let now = Now { at: t0, wall: Timestamp::from_micros(WALL0) };
        let fork = Fork::build(spec(dir.with_options(group)), dir, cfg, now, seed)?;
        let mut h =
            H { fork, t0, ms: 0, check: Checker::default(), log: Vec::new(), memory: Vec::new() };
        h.drain();
        Ok(h)
    }

    /// Built and started at time 0; returns the signalling actions.
    pub fn started(group: GroupDef, dir: &Dir, cfg: ForkConfig) -> (H, Vec<Action>) {
        let mut h = H::build(group, dir, cfg).expect("build");
        let a = h.start();
        (h, a)
    }

    pub fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(self.ms),
            wall: Timestamp::from_micros(WALL0 + self.ms as i64 * 1000),
        }
    }

    pub fn wall(secs: u64) -> Timestamp {
        Timestamp::from_micros(WALL0 + secs as i64 * 1_000_000)
    }

    pub fn at(&mut self, secs: u64) -> &mut H {
        let ms = secs * 1000;
        assert!(ms >= self.ms, "time goes forward");
        self.ms = ms;
        self
    }

    /// Every action since the last call (records included).
    pub fn drain(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = self.fork.poll_action() {
            self.check.see(&a);
            self.log.push(a.clone());
            out.push(a);
        }
        while let Some(u) = self.fork.poll_hunt_memory() {
            self.memory.push(u);
        }
        out
    }

    pub fn start(&mut self) -> Vec<Action> {
        let now = self.now();
        self.fork.start(now);
        ops(&self.drain())
    }

    pub fn ev(&mut self, leg: u32, e: LegEvent) -> Vec<Action> {
        let now = self.now();
        self.fork.leg_event(now, LegId(leg), e);
        ops(&self.drain())
    }

    pub fn resolved(&mut self, query: ResolveId, hops: Vec<Hop>) -> Vec<Action> {
        let now = self.now();
        self.fork.resolved(now, query, hops);
        ops(&self.drain())
    }

    pub fn caller_cancel(&mut self) -> Vec<Action> {
        let now = self.now();
        self.fork.caller_cancelled(now);
        ops(&self.drain())
    }

    pub fn caller_bye(&mut self) -> Vec<Action> {
        let now = self.now();
        self.fork.caller_hung_up(now);
        ops(&self.drain())
    }

    pub fn hangup(&mut self) -> Vec<Action> {
        let now = self.now();
        self.fork.hangup(now);
        ops(&self.drain())
    }

    /// `picker` picks the call up; the pickup's leg counts as dialed (it
    /// is answered without a Dial). Returns it and the actions.
    pub fn pick_up(&mut self, picker: &str) -> (Option<LegId>, Vec<Action>) {
        let now = self.now();
        let address = records::Address::new(records::AddressType::Endpoint, picker);
        let leg = self.fork.pick_up(now, address);
        if let Some(l) = leg {
            let call_id = self.fork.leg_call_id(l).expect("the pickup's record");
            self.check.dialed.insert(l, call_id);
        }
        (leg, ops(&self.drain()))
    }

    /// Jumps to the next deadline and runs it; returns (seconds, actions).
    pub fn tick(&mut self) -> (u64, Vec<Action>) {
        let d = self.fork.poll_timeout().expect("a deadline");
        let ms = d.duration_since(self.t0).as_millis() as u64;
        assert!(ms >= self.ms);
        self.ms = ms;
        let now = self.now();
        self.fork.handle_timeout(now);
        (ms / 1000, ops(&self.drain()))
    }

    /// The deadline, in seconds from time 0.
    pub fn next_deadline(&self) -> Option<u64> {
        self.fork.poll_timeout().map(|d| d.duration_since(self.t0).as_secs())
    }

    pub fn call(&self, leg: u32) -> Call {
        let id = self.fork.leg_call_id(LegId(leg)).expect("dialed");
        self.fork.call(id).expect("record").clone()
    }

    pub fn finish(&self) {
        self.check.at_finish(&self.fork);
    }
}

/// The default fork settings.
pub fn cfg() -> ForkConfig {
    ForkConfig::default()
}

/// The legs dialed in `a`, in order.
pub fn dial_legs(a: &[Action]) -> Vec<u32> {
    a.iter()
        .filter_map(|a| match a {
            Action::Dial { leg, .. } => Some(leg.0),
            _ => None,
        })
        .collect()
}

/// The codes the caller was rejected with in `a`.
pub fn rejects(a: &[Action]) -> Vec<u16> {
    a.iter()
        .filter_map(|a| match a {
            Action::RejectCaller { code } => Some(*code),
            _ => None,
        })
        .collect()
}
