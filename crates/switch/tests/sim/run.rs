//! One run of the simulation: a seed, a number of calls, and the loop that
//! drives the switch core and every simulated UA through virtual time,
//! event by event, until every call is over and every timer of the switch
//! has run out. It exists so that a run is a pure function of
//! `(seed, calls)`: the same pair replays the same messages in the same
//! order.

use crate::sim::callee::{Callee, Role};
use crate::sim::caller::{Caller, Hangup, Identity, Outcome, State};
use crate::sim::carrier::CarrierAuth;
use crate::sim::net::{ms, secs, Ev, Nanos, Net, Weather};
use crate::sim::oracle::{Oracle, Rules};
use crate::sim::phone::{self, Registration};
use crate::sim::ua::{pump, Action, Agent, Env, Stack};
use crate::sim::world::{self, World};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use records::Timestamp;
use sip_message::{Message, Peer, Transport};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;
use switch::{Datagram, Input, Now, Output, Switch};

/// The wall clock of virtual time zero (2024-01-01 00:00:00 UTC).
const WALL_BASE_US: i64 = 1_704_067_200_000_000;
/// How long past the last call's start the run may go on.
const TAIL: Nanos = secs(900);

/// A simulated user agent.
enum Ua {
    Callee(Box<Callee>),
    Caller(Box<Caller>),
}

impl Ua {
    fn agent(&mut self) -> &mut dyn Agent {
        match self {
            Ua::Callee(c) => c.as_mut(),
            Ua::Caller(c) => c.as_mut(),
        }
    }
}

/// What one run found and did.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub calls: usize,
    pub violations: Vec<String>,
    /// How the callers' calls ended.
    pub outcomes: BTreeMap<String, usize>,
    pub virtual_secs: f64,
    pub messages: u64,
    /// See [`crate::sim::oracle::Oracle::fingerprint`].
    pub fingerprint: u64,
    /// See [`crate::sim::oracle::Oracle::coverage`].
    pub coverage: BTreeMap<String, u64>,
}

struct Sim {
    env: Env,
    world: World,
    switch: Switch,
    switch_wake: Option<Nanos>,
    uas: Vec<Ua>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Commands given to the switch (their ids).
    commands: u64,
    calls: usize,
    started: usize,
    last_start: Nanos,
    /// Every input the switch took, when asked for (see [`SwitchTrace`]).
    trace: Option<SwitchTrace>,
}

/// What the switch of one run was given: its seed, its start and every
/// input in order. Fed into a fresh switch of the same world
/// ([`replay`]) it does the run's work again, alone: the same outputs in
/// the same order (the core benchmark times and counts that).
pub struct SwitchTrace {
    pub seed: u64,
    pub start: Now,
    pub inputs: Vec<(Now, Input)>,
    /// [`digest`] of the bytes of every transmit of the run, in order.
    pub sent: u64,
}

/// FNV-1a of `bytes`, continuing from `acc` (0 to start).
pub fn digest(acc: u64, bytes: &[u8]) -> u64 {
    let start = if acc == 0 { 0xcbf2_9ce4_8422_2325 } else { acc };
    bytes.iter().fold(start, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Feeds `trace` into a fresh switch and hands `sent` the bytes of every
/// transmit, as the shell would send them. Returns the switch as the run
/// left it.
#[inline(never)]
pub fn replay(trace: &SwitchTrace, mut sent: impl FnMut(&[u8])) -> Switch {
    let (cfg, state) = World::new().switch_config();
    let mut switch = Switch::new(cfg, state, trace.seed, trace.start).expect("switch");
    let mut drain = |switch: &mut Switch| loop {
        match switch.poll_output() {
            Output::Transmit(t) => sent(&t.message.to_bytes()),
            Output::Timeout(_) => return,
            _ => {}
        }
    };
    drain(&mut switch);
    for (now, input) in &trace.inputs {
        switch.handle_input(*now, input.clone());
        drain(&mut switch);
    }
    switch
}

impl Sim {
    fn now(&self) -> Now {
        let wall = Timestamp::from_micros(WALL_BASE_US + (self.env.now / 1000) as i64);
        Now { at: self.env.instant(), wall }
    }

    fn drain(&mut self) {
        let from = self.world.switch_addr;
        loop {
            match self.switch.poll_output() {
                Output::Transmit(t) => {
                    let bytes = t.message.to_bytes();
                    if let Some(trace) = &mut self.trace {
                        trace.sent = digest(trace.sent, &bytes);
                    }
                    let env = &mut self.env;
                    env.oracle.switch_sent(t.peer.remote, &t.message, &bytes);
                    env.net.transmit(
                        &mut env.rng,
                        &mut env.queue,
                        env.now,
                        (from, t.peer.remote),
                        bytes,
                    );
                }
                Output::Persist(p) => self.env.oracle.persist(&p),
                Output::Event(e) => {
                    self.env.oracle.event(&e);
                    if let switch::Event::CallStarted { call, groupcall } = e {
                        self.maybe_api_hangup(call, groupcall);
                    }
                }
                Output::Resolve(q) => {
                    self.env.oracle.violation(format!("unexpected DNS question {q:?}"));
                }
                Output::Media(t) => {
                    // The simulated world runs with media off.
                    self.env.oracle.violation(format!("an ng request with media off: {t:?}"));
                }
                Output::Timeout(at) => {
                    let at = self.env.nanos(at).max(self.env.now);
                    if self.switch_wake != Some(at) {
                        self.switch_wake = Some(at);
                        self.env.queue.push(at, Ev::SwitchWake);
                    }
                    return;
                }
            }
        }
    }

    fn deliver_to_switch(&mut self, from: SocketAddr, bytes: bytes::Bytes) {
        let now = self.now();
        self.env.oracle.switch_input(self.env.now);
        if let Ok(m) = Message::parse(bytes.clone()) {
            self.env.oracle.switch_received(from, &m);
        }
        let peer = Peer {
            transport: Transport::Udp,
            remote: from,
            local: self.world.switch_addr,
            conn: None,
        };
        self.feed(now, Input::Datagram(Datagram { peer, bytes }));
    }

    /// Now and then an operator hangs a call up through the API, by its
    /// inbound call or its root groupcall.
    fn maybe_api_hangup(&mut self, call: uuid::Uuid, groupcall: uuid::Uuid) {
        if !self.env.chance(0.03) {
            return;
        }
        let cmd = if self.env.chance(0.5) {
            switch::Command::HangupCall { id: call }
        } else {
            switch::Command::HangupGroupcall { id: groupcall }
        };
        let at = self.env.now + self.env.between(ms(100), secs(20));
        self.env.queue.push(at, Ev::Command(cmd));
    }

    fn command(&mut self, cmd: switch::Command) {
        let now = self.now();
        self.env.oracle.switch_input(self.env.now);
        let id = match &cmd {
            switch::Command::HangupCall { id } | switch::Command::HangupGroupcall { id } => *id,
            _ => return,
        };
        self.env.oracle.api_hangup(id);
        self.commands += 1;
        let command = Input::Command { id: switch::CommandId(self.commands), command: cmd };
        self.feed(now, command);
    }

    fn wake_switch(&mut self) {
        let now = self.now();
        self.env.oracle.switch_input(self.env.now);
        self.feed(now, Input::Timeout);
    }

    /// Hands one input to the switch (kept in the trace, when one is
    /// taken) and does what it says.
    fn feed(&mut self, now: Now, input: Input) {
        if let Some(t) = &mut self.trace {
            t.inputs.push((now, input.clone()));
        }
        self.switch.handle_input(now, input);
        self.drain();
    }

    fn add_ua(&mut self, addr: SocketAddr, make: impl FnOnce(Stack) -> Ua) -> usize {
        let id = self.uas.len();
        let seed = self.env.rng.next_u64();
        let stack = Stack::new(id, addr, seed, self.world.t1);
        self.uas.push(make(stack));
        self.by_addr.insert(addr, id);
        id
    }

    fn start_call(&mut self) {
        let n = self.started;
        self.started += 1;
        self.last_start = self.env.now;
        let rng = &mut self.env.rng;
        let carrier = rng.gen_bool(0.3);
        let w = &self.world;
        let who = if carrier {
            Identity::Carrier { from: format!("+1555{n:07}") }
        } else {
            let a = &w.caller_accounts[rng.gen_range(0..w.caller_accounts.len())];
            Identity::Extension { ext: a.ext.clone(), password: a.password.clone() }
        };
        let r = rng.gen_range(0..100);
        let pick = |rng: &mut StdRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
        let target = match (carrier, r) {
            (_, 0..=29) => pick(rng, &w.dial_extensions),
            (false, 30..=79) | (true, 30..=97) => pick(rng, &w.dial_groups),
            _ => pick(rng, &w.dial_numbers),
        };
        let plan = Hangup::draw(&mut self.env);
        let delayed = self.env.chance(0.15);
        let t1 = self.world.t1.as_nanos() as Nanos;
        let addr = world::caller_addr(carrier, n);
        let id = self.add_ua(addr, |s| {
            Ua::Caller(Box::new(Caller::new(s, who, target, (plan, delayed), t1)))
        });
        self.act(id, Action::Dial);
        if self.started < self.calls {
            let gap = self.env.between(ms(10), ms(420));
            self.env.queue.push(self.env.now + gap, Ev::StartCall);
        }
    }

    fn act(&mut self, id: usize, a: Action) {
        let Some(ua) = self.uas.get_mut(id) else { return };
        let agent = ua.agent();
        agent.on_action(&mut self.env, a);
        pump(agent, &mut self.env);
    }

    /// Every call started, the switch holds nothing, every UA is done.
    fn all_done(&mut self) -> bool {
        self.started == self.calls
            && self.switch.is_idle()
            && self.uas.iter_mut().all(|u| match u {
                Ua::Caller(c) => c.state == State::Done && c.stack.tx.is_empty(),
                Ua::Callee(c) => c.stack.tx.is_empty(),
            })
    }

    fn run(&mut self) {
        while let Some((at, ev)) = self.env.queue.pop() {
            self.env.now = at;
            match ev {
                Ev::Deliver { from, to, bytes } => {
                    if to == self.world.switch_addr {
                        self.deliver_to_switch(from, bytes);
                    } else if let Some(&id) = self.by_addr.get(&to) {
                        let Ok(m) = Message::parse(bytes) else {
                            self.env.oracle.violation(format!("{to} got an unparsable message"));
                            continue;
                        };
                        let agent = self.uas[id].agent();
                        agent.on_message(&mut self.env, m, from);
                        pump(agent, &mut self.env);
                    }
                }
                Ev::SwitchWake => {
                    if self.switch_wake == Some(at) {
                        self.switch_wake = None;
                        self.wake_switch();
                        if self.started == self.calls
                            && (self.all_done() || at > self.last_start + TAIL)
                        {
                            break;
                        }
                    }
                }
                Ev::UaTx(id) => {
                    let agent = self.uas[id].agent();
                    let s = agent.stack();
                    if s.wake == Some(at) {
                        s.wake = None;
                        let now = self.env.instant();
                        s.tx.handle_timeout(now);
                        pump(agent, &mut self.env);
                    }
                }
                Ev::Ua(id, a) => self.act(id, a),
                Ev::StartCall => self.start_call(),
                Ev::Command(cmd) => self.command(cmd),
            }
        }
    }

    fn finish(mut self) -> Report {
        self.env.oracle.finish();
        let st = self.switch.stats();
        if st.calls != 0 || st.dialog_calls != 0 || st.transactions != 0 || !self.switch.is_idle() {
            self.env.oracle.violation(format!("the switch is not empty at the end: {st:?}"));
        }
        let mut left = Vec::new();
        let mut outcomes = BTreeMap::new();
        for u in &self.uas {
            match u {
                Ua::Callee(c) => {
                    let ids = c.leftover_ids();
                    for (text, (cid, tag)) in c.leftovers().into_iter().zip(ids) {
                        if !self.env.oracle.switch_tried_to_end(&cid, &tag) {
                            left.push(text);
                        }
                    }
                }
                Ua::Caller(c) => {
                    let o = match c.outcome {
                        Some(Outcome::Answered) => "answered".to_owned(),
                        Some(Outcome::Rejected(code)) => format!("rejected {code}"),
                        Some(Outcome::TimedOut) => "timed out".to_owned(),
                        None => "none".to_owned(),
                    };
                    *outcomes.entry(o).or_insert(0) += 1;
                    if c.state != State::Done {
                        let cid = c.call_id();
                        if !self.env.oracle.switch_byed_caller(&cid) {
                            left.push(format!(
                                "caller {} ({}) never finished: {:?}, plan {:?}",
                                c.stack.addr,
                                String::from_utf8_lossy(&cid),
                                c.state,
                                c.plan
                            ));
                        }
                    }
                }
            }
        }
        for l in left {
            self.env.oracle.violation(l);
        }
        let net = self.env.net.stats;
        let fingerprint = self.env.oracle.fingerprint;
        Report {
            fingerprint,
            coverage: self.env.oracle.coverage(),
            seed: 0,
            calls: self.calls,
            violations: std::mem::take(&mut self.env.oracle.violations),
            outcomes,
            virtual_secs: self.env.now as f64 / 1e9,
            messages: net.sent,
        }
    }
}

/// The loss ceiling of every link: 10 %, or `SIM_MAX_LOSS` percent.
pub fn loss_ceiling() -> f64 {
    std::env::var("SIM_MAX_LOSS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0.10, |p| (p / 100.0).clamp(0.0, 0.9))
}

/// Runs `calls` calls with `seed`.
pub fn run_seed(seed: u64, calls: usize) -> Report {
    run(seed, calls, loss_ceiling(), false).0
}

/// Runs `calls` calls with `seed` on links that lose at most `max_loss`
/// (0.0 to 1.0), keeping what the switch was given.
pub fn run_traced(seed: u64, calls: usize, max_loss: f64) -> (Report, SwitchTrace) {
    let (report, trace) = run(seed, calls, max_loss, true);
    (report, trace.expect("traced"))
}

fn run(seed: u64, calls: usize, max_loss: f64, traced: bool) -> (Report, Option<SwitchTrace>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let world = World::new();
    let weather = Weather::draw(&mut rng, max_loss);
    let switch_seed = rng.next_u64();
    let base = Instant::now();
    let rules = Rules {
        t1: world.t1.as_nanos() as Nanos,
        overall_timeout: world.overall_timeout.as_nanos() as Nanos,
    };
    let oracle = Oracle::new(world.switch_addr, rules);
    let env = Env::new(base, rng, Net::new(weather), oracle);
    let (cfg, state) = world.switch_config();
    let now = Now { at: base, wall: Timestamp::from_micros(WALL_BASE_US) };
    let switch = Switch::new(cfg, state, switch_seed, now).expect("switch");
    let trace =
        traced.then(|| SwitchTrace { seed: switch_seed, start: now, inputs: Vec::new(), sent: 0 });
    let mut sim = Sim {
        env,
        world,
        switch,
        switch_wake: None,
        uas: Vec::new(),
        by_addr: HashMap::new(),
        commands: 0,
        calls,
        started: 0,
        last_start: 0,
        trace,
    };
    sim.drain();
    let t1 = sim.world.t1.as_nanos() as Nanos;
    for p in sim.world.phones.clone() {
        let reg = Registration::new(p.ext.clone(), p.password.clone());
        let id = sim
            .add_ua(p.addr, |s| Ua::Callee(Box::new(Callee::new(s, p.ext, Role::Phone(reg), t1))));
        phone::schedule_register(&mut sim.env, id);
    }
    for t in sim.world.trunks.clone() {
        let auth = CarrierAuth::new(t.name.clone(), t.credentials.clone());
        sim.add_ua(t.addr, |s| {
            Ua::Callee(Box::new(Callee::new(s, t.name, Role::Carrier(auth), t1)))
        });
    }
    if calls > 0 {
        sim.env.queue.push(secs(3), Ev::StartCall);
    }
    sim.run();
    let trace = sim.trace.take();
    let mut r = sim.finish();
    r.seed = seed;
    (r, trace)
}
