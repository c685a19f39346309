//! The ng client: one `&mut self` state machine for every request to a set
//! of rtpengine instances (the contract is in the crate doc).
//!
//! - A request goes out as a [`Transmit`] with a fresh cookie from the
//!   seeded generator; its reply, matched by cookie *and* source address,
//!   finishes it. A reply with an unknown cookie, from another address, or
//!   without a readable cookie is dropped and counted.
//! - No reply within `timeout`: the same datagram (same cookie: rtpengine
//!   answers a repeat from its cache) goes again, `retries` times; then the
//!   instance is marked down and the request fails over to the next
//!   instance that is up (same cookie), unless its call is held elsewhere.
//! - A call (Call-ID) stays on the instance that holds it: its first
//!   command picks an instance by weight among those up, later ones follow
//!   it; once that instance has answered for the call, they never move.
//!   A whole-call `delete` releases it.
//! - An instance marked down is pinged every `probe_interval` and is up
//!   again at its first reply (a reply to anything brings it back).

use crate::codec::{unframe, CodecError, Cookie};
use crate::command::{encode_request, Command, CommandKind};
use crate::reply::Reply;
use crate::settings::{InstanceSpec, RtpengineSettings};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use timer_queue::TimerQueue;

/// The most requests in flight; more fail at once ([`Failure::Overloaded`]).
pub const MAX_IN_FLIGHT: usize = 65_536;

/// Names a request for its sender; given back in [`Done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// An rtpengine instance: its index in the configured list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub usize);

/// Whether an instance answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// It answered last time (or has not failed yet).
    Up,
    /// A request got no reply after every retry; pinged until it answers.
    Down,
}

/// A datagram to send to an rtpengine's ng address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The instance's ng address.
    pub to: SocketAddr,
    /// `<cookie> <bencoded command>`.
    pub bytes: Bytes,
}

/// Why a request got no reply to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No instance answered within its retries.
    Timeout,
    /// No instance was up to send it to.
    NoInstance,
    /// Too many requests in flight.
    Overloaded,
    /// The reply was not one this command can get.
    BadReply(CodecError),
}

/// A finished request: its outcome, and what metrics want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// The sender's token; `None` for the client's own health pings.
    pub token: Option<RequestToken>,
    /// Which command.
    pub command: CommandKind,
    /// The instance that answered or was tried last.
    pub instance: Option<InstanceId>,
    /// From the first transmission to the reply (or the failure).
    pub latency: Duration,
    /// The reply (an `error` reply is a reply), or why there is none.
    pub outcome: Result<Reply, Failure>,
}

impl Done {
    /// The result label of the request metric: `ok`, `error`, `timeout`,
    /// `no_instance`, `overloaded` or `bad_reply`.
    pub fn result_label(&self) -> &'static str {
        match &self.outcome {
            Ok(Reply::Ok { .. }) => "ok",
            Ok(Reply::Error { .. }) => "error",
            Err(Failure::Timeout) => "timeout",
            Err(Failure::NoInstance) => "no_instance",
            Err(Failure::Overloaded) => "overloaded",
            Err(Failure::BadReply(_)) => "bad_reply",
        }
    }
}

/// Why a datagram from the ng socket was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No readable cookie.
    Malformed,
    /// The cookie names no request in flight (a late or forged reply).
    UnknownCookie,
    /// The cookie is in flight, but to another instance.
    WrongSource,
}

/// Something for the shell's logs and metrics, or the request's sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A request finished.
    Done(Done),
    /// An instance stopped answering (log a WARN).
    InstanceDown {
        /// Which.
        instance: InstanceId,
        /// Its ng address.
        addr: SocketAddr,
    },
    /// An instance answers again (log a WARN).
    InstanceUp {
        /// Which.
        instance: InstanceId,
        /// Its ng address.
        addr: SocketAddr,
    },
    /// A datagram was dropped.
    ReplyDropped {
        /// Where it came from.
        from: SocketAddr,
        /// Why.
        reason: DropReason,
    },
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Requests sent (first transmissions, failovers not counted again).
    pub requests: u64,
    /// Transmissions repeated after a timeout.
    pub retransmissions: u64,
    /// Requests moved to another instance.
    pub failovers: u64,
    /// Datagrams dropped for a cookie not in flight.
    pub dropped_unknown_cookie: u64,
    /// Datagrams dropped for coming from another address than asked.
    pub dropped_wrong_source: u64,
    /// Datagrams dropped for having no readable cookie.
    pub dropped_malformed: u64,
}

struct Instance {
    spec: InstanceSpec,
    state: InstanceState,
    /// When a down instance is pinged next.
    next_probe: Option<Instant>,
}

/// Who a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A sender's, routed by its call.
    Routed(RequestToken),
    /// A sender's, to one instance only (no failover, no call pin).
    Addressed(RequestToken),
    /// The client's own health ping.
    Probe,
}

struct InFlight {
    purpose: Purpose,
    kind: CommandKind,
    /// The Call-ID of a routed request about a call.
    call: Option<String>,
    whole_call_delete: bool,
    cookie: Cookie,
    bytes: Bytes,
    instance: usize,
    /// Transmissions to the current instance.
    sends_here: u32,
    /// Instances tried (bit per instance).
    tried: u64,
    started: Instant,
    deadline: Instant,
}

/// Where a call's commands go.
struct CallPin {
    instance: usize,
    /// The instance has answered `ok` for this call: it never moves.
    confirmed: bool,
    in_flight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Request(u64),
    Probe(usize),
}

/// The ng client (see the module doc and the crate doc's contract).
pub struct NgClient {
    timeout: Duration,
    retries: u32,
    probe_interval: Duration,
    instances: Vec<Instance>,
    requests: BTreeMap<u64, InFlight>,
    by_cookie: BTreeMap<Cookie, u64>,
    calls: BTreeMap<String, CallPin>,
    timers: TimerQueue<Instant, TimerKey>,
    next_id: u64,
    rng: StdRng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    counters: ClientCounters,
}

impl NgClient {
    /// A client for `settings.instances` (at most 64), with cookies and
    /// instance choices drawn from `seed`. Every instance starts up and is
    /// pinged at once, so that a dead one shows early.
    pub fn new(settings: &RtpengineSettings, seed: u64, now: Instant) -> NgClient {
        let instances = settings.instances.iter().take(64);
        let mut c = NgClient {
            timeout: settings.timeout,
            retries: settings.retries,
            probe_interval: settings.probe_interval,
            instances: instances
                .map(|&spec| Instance { spec, state: InstanceState::Up, next_probe: None })
                .collect(),
            requests: BTreeMap::new(),
            by_cookie: BTreeMap::new(),
            calls: BTreeMap::new(),
            timers: TimerQueue::new(),
            next_id: 0,
            rng: StdRng::seed_from_u64(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ClientCounters::default(),
        };
        for i in 0..c.instances.len() {
            c.start(now, Purpose::Probe, i, Command::Ping);
        }
        c
    }

    /// Sends `command`: to the instance holding its call, else to one
    /// picked by weight among those up. Its [`Done`] carries `token`.
    pub fn send(&mut self, now: Instant, token: RequestToken, command: Command) {
        let target = match command.call_id() {
            Some(call) => self.instance_for_call(call),
            None => self.pick_up_instance(0),
        };
        let Some(i) = target else {
            return self.fail_at_once(token, command.kind(), Failure::NoInstance);
        };
        let call = command.call_id().map(str::to_owned);
        if !self.start(now, Purpose::Routed(token), i, command) {
            return;
        }
        if let Some(call) = call {
            let pin = self.calls.entry(call).or_insert(CallPin {
                instance: i,
                confirmed: false,
                in_flight: 0,
            });
            pin.instance = i;
            pin.in_flight += 1;
        }
    }

    /// Sends `command` to `instance` only: no failover, no call affinity
    /// (health checks, `list`, diagnostics).
    pub fn send_to(
        &mut self,
        now: Instant,
        token: RequestToken,
        instance: InstanceId,
        command: Command,
    ) {
        if instance.0 >= self.instances.len() {
            return self.fail_at_once(token, command.kind(), Failure::NoInstance);
        }
        self.start(now, Purpose::Addressed(token), instance.0, command);
    }

    /// A datagram arrived on the ng socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok((cookie, dict)) = unframe(datagram) else {
            self.counters.dropped_malformed += 1;
            return self.dropped(from, DropReason::Malformed);
        };
        let Some(&id) = self.by_cookie.get(&cookie) else {
            self.counters.dropped_unknown_cookie += 1;
            return self.dropped(from, DropReason::UnknownCookie);
        };
        let Some(r) = self.requests.get(&id) else { return };
        let instance = r.instance;
        if self.instances[instance].spec.addr != from {
            self.counters.dropped_wrong_source += 1;
            return self.dropped(from, DropReason::WrongSource);
        }
        let outcome = Reply::decode(r.kind, dict).map_err(Failure::BadReply);
        self.mark_up(instance);
        self.finish(now, id, outcome);
    }

    /// The deadline of [`NgClient::poll_timeout`] has come (an early call
    /// is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            if !self.is_current(at, key) {
                continue;
            }
            match key {
                TimerKey::Request(id) => self.request_timed_out(now, id),
                TimerKey::Probe(i) => {
                    self.instances[i].next_probe = None;
                    self.start(now, Purpose::Probe, i, Command::Ping);
                }
            }
        }
        let live = self.requests.len() + self.instances.len();
        let (requests, instances) = (&self.requests, &self.instances);
        self.timers.purge_if_bloated(live, |at, k| current(requests, instances, at, k));
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`NgClient::handle_timeout`] is due next (None: nothing waits).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let (requests, instances) = (&self.requests, &self.instances);
        self.timers.prune(|at, k| current(requests, instances, at, k));
        self.timers.peek().map(|(at, _)| at)
    }

    /// The instances: id, ng address, state.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceId, SocketAddr, InstanceState)> + '_ {
        self.instances.iter().enumerate().map(|(i, x)| (InstanceId(i), x.spec.addr, x.state))
    }

    /// The instance holding (or about to hold) `call_id`, and its address.
    pub fn call_instance(&self, call_id: &str) -> Option<(InstanceId, SocketAddr)> {
        let i = self.calls.get(call_id)?.instance;
        Some((InstanceId(i), self.instances[i].spec.addr))
    }

    /// Calls with an instance (until their whole-call `delete`).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Requests in flight (health pings included).
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Running totals.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    fn is_current(&self, at: Instant, key: TimerKey) -> bool {
        current(&self.requests, &self.instances, at, key)
    }

    fn dropped(&mut self, from: SocketAddr, reason: DropReason) {
        self.events.push_back(ClientEvent::ReplyDropped { from, reason });
    }

    fn fail_at_once(&mut self, token: RequestToken, kind: CommandKind, f: Failure) {
        self.events.push_back(ClientEvent::Done(Done {
            token: Some(token),
            command: kind,
            instance: None,
            latency: Duration::ZERO,
            outcome: Err(f),
        }));
    }

    /// Where a call's next command goes: the instance holding it, unless
    /// that one is down and has not answered for it yet.
    fn instance_for_call(&mut self, call: &str) -> Option<usize> {
        if let Some(pin) = self.calls.get(call) {
            if pin.confirmed || self.instances[pin.instance].state == InstanceState::Up {
                return Some(pin.instance);
            }
        }
        self.pick_up_instance(0)
    }

    /// An instance that is up and not in `tried`, picked by weight.
    fn pick_up_instance(&mut self, tried: u64) -> Option<usize> {
        let usable = |i: usize, x: &Instance| x.state == InstanceState::Up && tried & (1 << i) == 0;
        let total: u64 = self
            .instances
            .iter()
            .enumerate()
            .filter(|(i, x)| usable(*i, x))
            .map(|(_, x)| u64::from(x.spec.weight.max(1)))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.gen_range(0..total);
        for (i, x) in self.instances.iter().enumerate() {
            if !usable(i, x) {
                continue;
            }
            let w = u64::from(x.spec.weight.max(1));
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// The next instance after `from` in configured order that is up and
    /// untried.
    fn next_up_instance(&self, from: usize, tried: u64) -> Option<usize> {
        let n = self.instances.len();
        (1..n)
            .map(|k| (from + k) % n)
            .find(|&i| self.instances[i].state == InstanceState::Up && tried & (1 << i) == 0)
    }

    /// Starts a request; `false` when too many are in flight (it failed).
    fn start(&mut self, now: Instant, purpose: Purpose, instance: usize, command: Command) -> bool {
        let kind = command.kind();
        if self.requests.len() >= MAX_IN_FLIGHT {
            if let Purpose::Routed(t) | Purpose::Addressed(t) = purpose {
                self.fail_at_once(t, kind, Failure::Overloaded);
            }
            return false;
        }
        let cookie = loop {
            let c = Cookie::from_bits(self.rng.next_u64());
            if !self.by_cookie.contains_key(&c) {
                break c;
            }
        };
        let routed = matches!(purpose, Purpose::Routed(_));
        let whole_call_delete = matches!(&command, Command::Delete(d) if d.is_whole_call());
        let call = command.call_id().filter(|_| routed).map(str::to_owned);
        let bytes = encode_request(&cookie, &command);
        let id = self.next_id;
        self.next_id += 1;
        self.by_cookie.insert(cookie.clone(), id);
        let r = InFlight {
            purpose,
            kind,
            call,
            whole_call_delete,
            cookie,
            bytes,
            instance,
            sends_here: 0,
            tried: 1 << instance,
            started: now,
            deadline: now,
        };
        self.requests.insert(id, r);
        self.counters.requests += 1;
        self.transmit(now, id);
        true
    }

    /// Sends request `id` (again) to its current instance.
    fn transmit(&mut self, now: Instant, id: u64) {
        let Some(r) = self.requests.get_mut(&id) else { return };
        r.sends_here += 1;
        r.deadline = now + self.timeout;
        let to = self.instances[r.instance].spec.addr;
        self.transmits.push_back(Transmit { to, bytes: r.bytes.clone() });
        self.timers.push(r.deadline, TimerKey::Request(id));
    }

    fn request_timed_out(&mut self, now: Instant, id: u64) {
        let Some(r) = self.requests.get(&id) else { return };
        let max_sends = if r.purpose == Purpose::Probe { 1 } else { self.retries + 1 };
        if r.sends_here < max_sends {
            self.counters.retransmissions += 1;
            return self.transmit(now, id);
        }
        let (instance, purpose) = (r.instance, r.purpose);
        self.mark_down(now, instance);
        if purpose == Purpose::Probe {
            return self.finish(now, id, Err(Failure::Timeout));
        }
        match self.failover_target(id) {
            Some(next) => {
                self.counters.failovers += 1;
                if let Some(r) = self.requests.get_mut(&id) {
                    r.instance = next;
                    r.tried |= 1 << next;
                    r.sends_here = 0;
                    if let Some(pin) = r.call.as_ref().and_then(|c| self.calls.get_mut(c)) {
                        if !pin.confirmed {
                            pin.instance = next;
                        }
                    }
                }
                self.transmit(now, id);
            }
            None => self.finish(now, id, Err(Failure::Timeout)),
        }
    }

    /// Where a routed request goes after its instance failed it.
    fn failover_target(&mut self, id: u64) -> Option<usize> {
        let r = self.requests.get(&id)?;
        if !matches!(r.purpose, Purpose::Routed(_)) {
            return None;
        }
        let (from, tried) = (r.instance, r.tried);
        if let Some(pin) = r.call.as_ref().and_then(|c| self.calls.get(c)) {
            if pin.instance != from {
                // Another request moved the call meanwhile: follow it.
                return (tried & (1 << pin.instance) == 0).then_some(pin.instance);
            }
            if pin.confirmed {
                return None;
            }
        }
        self.next_up_instance(from, tried)
    }

    fn finish(&mut self, now: Instant, id: u64, outcome: Result<Reply, Failure>) {
        let Some(r) = self.requests.remove(&id) else { return };
        self.by_cookie.remove(&r.cookie);
        let token = match r.purpose {
            Purpose::Routed(t) | Purpose::Addressed(t) => Some(t),
            Purpose::Probe => None,
        };
        if r.purpose == Purpose::Probe && outcome.is_err() {
            self.schedule_probe(now, r.instance);
        }
        if let Some(call) = &r.call {
            let answered_ok = matches!(outcome, Ok(Reply::Ok { .. }));
            if let Some(pin) = self.calls.get_mut(call) {
                pin.in_flight = pin.in_flight.saturating_sub(1);
                if answered_ok && (!pin.confirmed || pin.instance == r.instance) {
                    pin.instance = r.instance;
                    pin.confirmed = true;
                }
            }
            self.unpin_if_idle(Some(call), r.whole_call_delete);
        }
        self.events.push_back(ClientEvent::Done(Done {
            token,
            command: r.kind,
            instance: Some(InstanceId(r.instance)),
            latency: now.saturating_duration_since(r.started),
            outcome,
        }));
    }

    /// Forgets a call after its whole-call delete, or when nothing holds it.
    fn unpin_if_idle(&mut self, call: Option<&str>, whole_call_deleted: bool) {
        let Some(call) = call else { return };
        let Some(pin) = self.calls.get_mut(call) else { return };
        if whole_call_deleted || (!pin.confirmed && pin.in_flight == 0) {
            self.calls.remove(call);
        }
    }

    fn mark_down(&mut self, now: Instant, i: usize) {
        if self.instances[i].state == InstanceState::Up {
            self.instances[i].state = InstanceState::Down;
            let addr = self.instances[i].spec.addr;
            self.events.push_back(ClientEvent::InstanceDown { instance: InstanceId(i), addr });
            self.schedule_probe(now, i);
        }
    }

    fn mark_up(&mut self, i: usize) {
        if self.instances[i].state == InstanceState::Down {
            self.instances[i].state = InstanceState::Up;
            self.instances[i].next_probe = None;
            let addr = self.instances[i].spec.addr;
            self.events.push_back(ClientEvent::InstanceUp { instance: InstanceId(i), addr });
        }
    }

    fn schedule_probe(&mut self, now: Instant, i: usize) {
        let probing =
            self.requests.values().any(|r| r.purpose == Purpose::Probe && r.instance == i);
        let x = &mut self.instances[i];
        if x.state == InstanceState::Down && x.next_probe.is_none() && !probing {
            let at = now + self.probe_interval;
            x.next_probe = Some(at);
            self.timers.push(at, TimerKey::Probe(i));
        }
    }
}

fn current(
    requests: &BTreeMap<u64, InFlight>,
    instances: &[Instance],
    at: Instant,
    k: TimerKey,
) -> bool {
    match k {
        TimerKey::Request(id) => requests.get(&id).is_some_and(|r| r.deadline == at),
        TimerKey::Probe(i) => instances.get(i).is_some_and(|x| x.next_probe == Some(at)),
    }
}
