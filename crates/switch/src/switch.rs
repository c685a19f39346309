//! [`Switch`]: the whole softswitch as one `&mut self` machine. Inputs go
//! in through [`Switch::handle_input`], everything it wants done comes out
//! of [`Switch::poll_output`]. This file is the dispatcher: each input is
//! handed to the part that owns it (`requests.rs`, `invite.rs`,
//! `commands.rs`, `calls.rs`), and what those parts produce is drained in a
//! fixed order (see the crate documentation); it also runs the timers.

use crate::calls::Calls;
use crate::config::{SwitchConfig, SwitchState};
use crate::counters::Counters;
use crate::dns::{DnsQueries, Waiter};
use crate::input::{Input, Now, Target};
use crate::local::{LocalAnswers, LocalIdentity};
use crate::output::{Event, Output, Persist, Query, Token, Transmit};
use crate::received::response_target;
use crate::timers::{Job, JobIntervals, TimerKey, Timers};
use b2bua::{CallManager, CallRef, LocalContact};
use groupcall::Hop;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use registrar::{Accounts, BindingChange, Registrar};
use routing::{RouteError, RouteTable};
use sip_message::{Message, Peer, Policy};
use sip_transaction::{TransactionLayer, TxKey};

use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::debug;

/// Counters of what the switch holds, for the shell's stats line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Calls being served (forks).
    pub calls: usize,
    /// B2BUA calls (dialogs of served calls, and their tails).
    pub dialog_calls: usize,
    /// Live transactions.
    pub transactions: usize,
    /// Registered bindings.
    pub bindings: usize,
    /// Entries in the timer queue (stale ones included).
    pub timers: usize,
    /// DNS questions in flight.
    pub dns_queries: usize,
    /// Busy lamp subscriptions held.
    pub subscriptions: usize,
}

/// The switch core. See the crate documentation for the contract.
pub struct Switch {
    pub(crate) force_rport: bool,
    pub(crate) fork_cfg: groupcall::ForkConfig,
    pub(crate) listen: Vec<(sip_message::Transport, std::net::SocketAddr)>,
    pub(crate) policy: Policy,
    pub(crate) identity: LocalIdentity,
    pub(crate) local: LocalAnswers,
    pub(crate) tx: TransactionLayer,
    pub(crate) registrar: Registrar,
    pub(crate) routes: RouteTable,
    /// The B2BUA: every call's dialogs and legs.
    pub(crate) b2bua: CallManager,
    pub(crate) calls: Calls,
    pub(crate) dns: DnsQueries,
    pub(crate) timers: Timers,
    pub(crate) rng: StdRng,
    pub(crate) out: VecDeque<Output>,
    /// The time of the last input.
    pub(crate) last_input: Instant,
    /// How long a click-to-call source waits for our ACK (64*T1).
    pub(crate) source_wait: Duration,
    pub(crate) counters: Counters,
    /// Caps on what is copied from a caller onto its legs.
    pub(crate) limits: b2bua::CopyLimits,
    /// Overload control and per-source limits.
    pub(crate) admission: crate::admission::Admission,
    /// What round-robin and least-recent groups remember of past calls.
    pub(crate) hunt: crate::dialer::HuntMemories,
    /// How many calls each extension is on (`max_calls`).
    pub(crate) occupancy: crate::occupancy::Occupancy,
    /// This node's cluster; `None`: a single node.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The feature codes of every domain.
    pub(crate) feature_codes: pbx_features::FeatureCodeSettings,
    /// Busy lamp subscriptions.
    pub(crate) lamps: crate::blf::Lamps,
    /// Media anchoring through rtpengine; `None`: off (SDP end to end).
    pub(crate) media: Option<crate::media::MediaControl>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The token of a transaction's transmit.
fn token_of(key: TxKey) -> Token {
    Token(key.to_bits().wrapping_add(1))
}

/// The transaction a token names.
fn key_of(token: Token) -> Option<TxKey> {
    (token != Token::NONE).then(|| TxKey::from_bits(token.0.wrapping_sub(1)))
}

impl Switch {
    /// A switch built from `cfg` and the state the shell loaded, with every
    /// random choice (branches, tags, Call-IDs, nonces, record ids) drawn
    /// from a generator seeded with `seed`: give a fresh one from the OS in
    /// production, a fixed one in a test to replay it. `now` starts the
    /// housekeeping timers; the carriers given by DNS name are asked for at
    /// once (see [`Switch::poll_output`]). `Err` when the carriers, routes
    /// or ring groups of `state` do not fit together (see
    /// [`SwitchState::check`]).
    pub fn new(
        cfg: SwitchConfig,
        state: SwitchState,
        seed: u64,
        now: Now,
    ) -> Result<Switch, RouteError> {
        let routes = state.route_table()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let accounts = Accounts::new(state.customers, state.domains, state.extensions);
        let own = cfg.cluster.as_ref().map(|c| c.node_id.clone()).unwrap_or_default();
        let registrar_cfg =
            registrar::RegistrarConfig { node_id: own.clone(), ..cfg.registrar.clone() };
        let mut registrar = Registrar::new(registrar_cfg, accounts, rng.next_u64());
        registrar.location_mut().load_as(state.bindings, &own);
        let media = match &cfg.media {
            media_anchor::MediaSettings::Off => None,
            media_anchor::MediaSettings::Rtpengine { rtpengine, default } => {
                // `anchor = false` as the default: no leg is anchored.
                let profile = match default {
                    media_anchor::Anchoring::Anchored(p) => Some(*p),
                    media_anchor::Anchoring::Direct => None,
                };
                profile
                    .map(|p| crate::media::MediaControl::new(rtpengine, p, rng.next_u64(), now.at))
            }
        };
        let b2bua_cfg = cfg.b2bua();
        let limits = b2bua_cfg.limits;
        let transactions = cfg.transactions();
        let locals = cfg
            .listen
            .iter()
            .map(|(transport, addr)| LocalContact { transport: *transport, addr: *addr })
            .collect();
        let every = JobIntervals {
            sweep: Duration::from_secs(1),
            keepalive: cfg.keepalive_interval.filter(|d| !d.is_zero()),
            carrier_dns: cfg.carrier_dns_interval.max(Duration::from_secs(1)),
        };
        let mut sw = Switch {
            force_rport: cfg.force_rport,
            fork_cfg: cfg.fork(),
            policy: Policy::default(),
            identity: LocalIdentity {
                names: cfg.aliases.clone(),
                addrs: cfg.listen.iter().map(|(_, a)| *a).collect(),
            },
            local: LocalAnswers::new(cfg.user_agent.clone(), StdRng::seed_from_u64(rng.next_u64())),
            tx: TransactionLayer::with_owner_timers(transactions, rng.next_u64()),
            registrar,
            routes,
            b2bua: CallManager::with_owner_timers(b2bua_cfg, locals, rng.next_u64()),
            calls: Calls::default(),
            dns: DnsQueries::default(),
            timers: Timers::new(every),
            rng,
            out: VecDeque::new(),
            listen: cfg.listen,
            last_input: now.at,
            source_wait: cfg.timers.t1.saturating_mul(64),
            counters: Counters::default(),
            limits,
            admission: crate::admission::Admission::new(cfg.admission, now.at),
            hunt: state.hunt.into_iter().map(crate::dialer::hunt_from_record).collect(),
            occupancy: Default::default(),
            cluster: cfg.cluster.map(crate::cluster::Cluster::new),
            feature_codes: cfg.feature_codes,
            lamps: crate::blf::Lamps::new(cfg.blf),
            media,
        };
        sw.timers.reschedule_job(Job::Sweep, now.at);
        sw.timers.reschedule_job(Job::Keepalive, now.at);
        sw.run_job(now, Job::CarrierDns);
        // The ng client's first pings (media on), and its deadline.
        sw.pump(now);
        Ok(sw)
    }

    // ----- the contract -----------------------------------------------------

    /// Takes one input at `now`. Afterwards call [`Switch::poll_output`]
    /// until it returns [`Output::Timeout`].
    pub fn handle_input(&mut self, now: Now, input: Input) {
        self.last_input = self.last_input.max(now.at);
        match input {
            Input::Datagram(d) => self.on_datagram(now, d),
            Input::Timeout => self.on_timeout(now),
            Input::Resolved { query, targets } => self.on_resolved(now, query, targets),
            Input::SendFailed { token } => {
                if let Some(key) = key_of(token) {
                    self.tx.transport_error(now.at, key);
                }
            }
            Input::ConnectionClosed { conn } => {
                // Requests still waiting for an answer over it fail now.
                self.tx.connection_closed(now.at, conn);
                self.subscribers_gone(pbx_features::SubscriberGone::Connection(conn));
                let count = self.registrar.location_mut().connection_closed(conn);
                if count > 0 {
                    self.out.push_back(Output::Event(Event::BindingsUnreachable { count }));
                }
            }
            Input::Command { id, command } => {
                let outcome = self.on_command(now, command);
                self.out.push_back(Output::Event(Event::CommandDone { id, outcome }));
            }
            Input::Cluster(change) => self.on_cluster(now, change),
            Input::MediaDatagram { from, bytes } => {
                if let Some(m) = &mut self.media {
                    m.handle_datagram(now.at, from, &bytes);
                }
            }
        }
        self.pump(now);
    }

    /// The next thing to do. The last output of every round is
    /// [`Output::Timeout`] with the next deadline; polling again returns it
    /// again until another input comes.
    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(Output::Persist(p)) => Output::Persist(self.stamped(p)),
            Some(o) => o,
            None => Output::Timeout(self.next_deadline()),
        }
    }

    /// A groupcall or call record as this node writes it: carried by this
    /// node (`node_id`, empty without a cluster).
    fn stamped(&self, mut p: Persist) -> Persist {
        let own = self.node_id();
        match &mut p {
            Persist::Call(c) if c.node_id != own => c.node_id = own.to_owned(),
            Persist::Groupcall(g) if g.node_id != own => g.node_id = own.to_owned(),
            _ => {}
        }
        p
    }

    /// The shell's measure of load, reported before the datagram it was
    /// measured on is handed in: see `admission.rs`. Overload beginning or
    /// ending is an [`Event::Overload`], output after the next input.
    pub fn set_load(&mut self, load: crate::Load) {
        use crate::admission::Transition;
        let (began, shed) = match self.admission.set_load(load, self.last_input) {
            Transition::None => return,
            Transition::Began => (true, 0),
            Transition::Ended { shed } => (false, shed),
        };
        let ev = Event::Overload {
            began,
            queue_delay: load.queue_delay,
            queue_depth: load.queue_depth,
            shed,
        };
        self.out.push_back(Output::Event(ev));
    }

    // ----- getters ----------------------------------------------------------

    /// What the switch holds now.
    pub fn stats(&self) -> SwitchStats {
        SwitchStats {
            calls: self.calls.len(),
            dialog_calls: self.b2bua.len(),
            transactions: self.tx.len(),
            bindings: self.registrar.location().len(),
            timers: self.timers.queue.len(),
            dns_queries: self.dns.len(),
            subscriptions: self.lamps.notifier.len(),
        }
    }

    /// Everything counted since the switch started.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.retransmissions = self.tx.retransmissions();
        c.shed_invites = self.admission.shed_invites;
        c.shed_registers = self.admission.shed_registers;
        if let Some(m) = &self.media {
            (c.media.instances, c.media.instances_up) = m.instances();
        }
        c
    }

    /// `true` when no call and no transaction is live: a shutdown may end.
    pub fn is_idle(&self) -> bool {
        self.tx.is_empty() && self.calls.len() == 0 && self.b2bua.is_empty()
    }

    /// `true` when a stopping shell may exit now: no call is served and no
    /// transaction has work left (those that only absorb retransmissions
    /// until their timers fire are no reason to wait once nothing is
    /// received any more).
    pub fn can_stop(&self) -> bool {
        self.calls.len() == 0 && self.b2bua.is_empty() && !self.tx.has_work()
    }

    /// The registrar (bindings, accounts), for reading.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    // ----- inputs -----------------------------------------------------------

    fn on_timeout(&mut self, now: Now) {
        while let Some((at, key)) = self.timers.queue.pop_due(now.at) {
            match key {
                TimerKey::Transaction(k) => self.tx.handle_timer(now.at, k),
                TimerKey::Dialogs(c) => self.b2bua.handle_call_timer(&mut self.tx, now.at, c),
                TimerKey::Fork(c) => self.fork_timer(now, c, at),
                TimerKey::Job(j) if self.timers.jobs.is_current(j, at) => self.run_job(now, j),
                TimerKey::Job(_) => {}
                TimerKey::Subscriptions if self.lamps.deadline == Some(at) => {
                    self.lamps.deadline = None;
                    self.lamps.notifier.handle_timeout(now.at);
                }
                TimerKey::Subscriptions => {}
                TimerKey::Media => {
                    if let Some(m) = self.media.as_mut().filter(|m| m.filed == Some(at)) {
                        m.handle_timeout(now.at);
                    }
                }
            }
            self.pump(now);
        }
    }

    fn fork_timer(&mut self, now: Now, cref: CallRef, at: Instant) {
        let Some(s) = self.calls.get_mut(cref) else { return };
        if s.fork_deadline != Some(at) {
            return;
        }
        s.fork_deadline = None;
        s.fork_timeout(now);
        self.run_call(now, cref);
    }

    fn on_resolved(&mut self, now: Now, query: crate::output::QueryId, targets: Vec<Target>) {
        match self.dns.answer(query) {
            Some(Waiter::Destination { call, query, uri }) => {
                let Some(s) = self.calls.get_mut(call) else { return };
                let hops = targets
                    .into_iter()
                    .map(|t| Hop {
                        request_uri: uri.clone(),
                        transport: t.transport,
                        address: t.address,
                        trunk: None,
                    })
                    .collect();
                s.fork.resolved(now.into(), query, hops);
                self.run_call(now, call);
            }
            Some(Waiter::Carrier { name }) => {
                let ev = match targets.first() {
                    Some(t) => {
                        self.routes.set_carrier_address(&name, t.address);
                        Event::CarrierResolved { name, address: t.address }
                    }
                    None => Event::CarrierUnresolved { name },
                };
                self.out.push_back(Output::Event(ev));
            }
            None => {}
        }
    }

    // ----- housekeeping -----------------------------------------------------

    fn run_job(&mut self, now: Now, job: Job) {
        self.timers.jobs.take(job);
        match job {
            Job::Sweep => {
                self.admission.sweep(now.at);
                let gone = self.registrar.sweep(now.at, now.wall);
                if !gone.is_empty() {
                    debug!(expired = gone.len(), "bindings expired");
                }
            }
            Job::Keepalive => {
                for peer in self.registrar.location().udp_targets(now.wall) {
                    let branch = self.tx.new_branch();
                    let ping = self.local.keepalive_options(&peer, &branch);
                    self.transmit(peer, ping, Token::NONE);
                }
            }
            Job::CarrierDns => {
                for (name, host, port, transport) in self.routes.carriers_to_resolve() {
                    let id = self.dns.ask(Waiter::Carrier { name });
                    let q = Query { id, host, port, transport: Some(transport) };
                    self.out.push_back(Output::Resolve(q));
                }
            }
        }
        self.timers.reschedule_job(job, now.at);
    }

    // ----- the pump ---------------------------------------------------------

    /// Drains what the parts produced, until nothing moves: transaction
    /// events into the B2BUA and the router, B2BUA events into the forks,
    /// then the messages (the B2BUA's stateless ones first: an ACK goes out
    /// before the BYE that follows it), new deadlines and binding changes.
    fn pump(&mut self, now: Now) {
        loop {
            let mut busy = false;
            while let Some(ev) = self.tx.poll_event() {
                busy = true;
                self.on_tx_event(now, ev);
            }
            while let Some(ev) = self.b2bua.poll_event() {
                busy = true;
                self.on_call_event(now, ev);
            }
            while let Some(st) = self.b2bua.poll_stateless() {
                busy = true;
                self.transmit(st.peer, st.message, Token::NONE);
            }
            if self.send_notifies(now) {
                busy = true;
            }
            while let Some(t) = self.tx.poll_transmit() {
                busy = true;
                self.transmit(t.peer, t.message, token_of(t.key));
            }
            busy |= self.pump_media(now);
            if !busy {
                break;
            }
        }
        while let Some((at, k)) = self.tx.poll_timer() {
            self.timers.queue.push(at, TimerKey::Transaction(k));
        }
        while let Some((at, c)) = self.b2bua.poll_timer() {
            self.timers.queue.push(at, TimerKey::Dialogs(c));
        }
        if let Some(m) = &mut self.media {
            let next = m.poll_timeout();
            if next != m.filed {
                m.filed = next;
                if let Some(at) = next {
                    self.timers.queue.push(at, TimerKey::Media);
                }
            }
        }
        while let Some(change) = self.registrar.poll_change() {
            let p = match change {
                BindingChange::Upsert(b) => Persist::Binding(*b),
                BindingChange::Remove { aor, contact } => {
                    if self.registrar.location().lookup(&aor, now.wall).is_empty() {
                        self.subscribers_gone(pbx_features::SubscriberGone::Aor(&aor));
                    }
                    Persist::BindingRemoved { aor, contact }
                }
            };
            self.out.push_back(Output::Persist(p));
        }
        // The last NOTIFYs of subscriptions that ended just now.
        if self.send_notifies(now) {
            while let Some(t) = self.tx.poll_transmit() {
                self.transmit(t.peer, t.message, token_of(t.key));
            }
            while let Some((at, k)) = self.tx.poll_timer() {
                self.timers.queue.push(at, TimerKey::Transaction(k));
            }
        }
        let next = self.lamps.notifier.poll_timeout();
        if next != self.lamps.deadline {
            self.lamps.deadline = next;
            if let Some(at) = next {
                self.timers.queue.push(at, TimerKey::Subscriptions);
            }
        }
        while let Some(n) = self.b2bua.poll_notice() {
            self.out.push_back(Output::Event(Event::Oversize(n)));
        }
        while let Some(ev) = self.registrar.poll_security() {
            self.counters.security_event(&ev);
            self.out.push_back(Output::Event(Event::Security(ev)));
        }
    }

    /// Queues a message; a response goes where RFC 3261 18.2.2 says.
    pub(crate) fn transmit(&mut self, peer: Peer, message: Message, token: Token) {
        let peer = if message.is_request() { peer } else { response_target(&message, &peer) };
        self.counters.messages_out.count(&message);
        self.out.push_back(Output::Transmit(Transmit { peer, message, token }));
    }

    /// Files a call's new fork deadline, and forgets the call once both its
    /// fork and its dialogs are over.
    pub(crate) fn settle_call(&mut self, cref: CallRef) {
        let Some(s) = self.calls.get_mut(cref) else { return };
        let next = s.next_deadline();
        if next != s.fork_deadline {
            s.fork_deadline = next;
            if let Some(at) = next {
                self.timers.queue.push(at, TimerKey::Fork(cref));
            }
        }
        if let Some(call) = self.calls.remove_if_over(cref) {
            call.release(&mut self.occupancy);
            if let Some(missed) = call.missed() {
                self.out.push_back(Output::Event(Event::GroupcallMissed(Box::new(missed))));
            }
            self.counters.call_ended(call.outcome());
            self.counters.legs_per_groupcall.observe(call.fork.dialed_legs() as f64);
            self.out.push_back(Output::Event(Event::CallEnded { call: call.inbound.id }));
        }
    }

    /// The next deadline, after dropping stale entries off the queue's top
    /// (and purging them all when they pile up).
    fn next_deadline(&mut self) -> Instant {
        let Switch { timers, tx, b2bua, calls, lamps, media, .. } = self;
        let jobs = &timers.jobs;
        let lamps_at = lamps.deadline;
        let current = |at: Instant, k: TimerKey| match k {
            TimerKey::Transaction(t) => tx.timer_is_current(at, t),
            TimerKey::Dialogs(c) => b2bua.timer_is_current(at, c),
            TimerKey::Fork(c) => calls.get(c).is_some_and(|s| s.fork_deadline == Some(at)),
            TimerKey::Job(j) => jobs.is_current(j, at),
            TimerKey::Subscriptions => lamps_at == Some(at),
            TimerKey::Media => media.as_ref().is_some_and(|m| m.filed == Some(at)),
        };
        let live = tx.len() + b2bua.len() + calls.len() + 5;
        timers.queue.purge_if_bloated(live, current);
        timers.queue.prune(current);
        // The sweep job always runs, so there is always a deadline; an hour
        // after the last input is only the fallback should it ever not.
        match timers.queue.peek() {
            Some((at, _)) => at,
            None => self.last_input + Duration::from_secs(3600),
        }
    }
}
