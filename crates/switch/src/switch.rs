//! [`Switch`]: the whole softswitch as one `&mut self` machine. Inputs go
//! in through [`Switch::handle_input`], everything it wants done comes out
//! of [`Switch::poll_output`]. This file is the dispatcher: each input is
//! handed to the part that owns it, and what those parts produce is drained
//! in a fixed order (see the crate documentation).

use crate::caller::{self, CallerId, Refusal};
use crate::calls::{CallContext, Calls, ServedCall};
use crate::config::{SwitchConfig, SwitchState};
use crate::counters::Counters;
use crate::dialer::{CallDirectory, Dialer};
use crate::dns::{DnsQueries, Waiter};
use crate::input::{Command, Datagram, Input, Now, Target};
use crate::local::{LocalAnswers, LocalIdentity};
use crate::methods;
use crate::output::{CommandOutcome, Event, Output, Persist, Query, Token, Transmit};
use crate::received::{response_target, stamp_received};
use crate::timers::{Job, JobIntervals, TimerKey, Timers};
use b2bua::{CallManager, CallRef, LocalContact};
use bytes::Bytes;
use groupcall::{Destination, Fork, GroupDef, GroupSpec, Hop};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use records::{Address, AddressType, Call, RingMethod, NIL};
use registrar::{Accounts, BindingChange, Registrar};
use routing::{Decision, RouteTable};
use sip_message::{validate, HeaderName, Message, Method, Peer, Policy, Verdict};
use sip_transaction::{Event as TxEvent, TransactionLayer, TxKey};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::debug;
use uuid::Uuid;

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
}

/// The switch core. See the crate documentation for the contract.
pub struct Switch {
    force_rport: bool,
    fork_cfg: groupcall::ForkConfig,
    listen: Vec<(sip_message::Transport, std::net::SocketAddr)>,
    policy: Policy,
    identity: LocalIdentity,
    local: LocalAnswers,
    tx: TransactionLayer,
    registrar: Registrar,
    routes: RouteTable,
    mgr: CallManager,
    calls: Calls,
    dns: DnsQueries,
    timers: Timers,
    rng: StdRng,
    out: VecDeque<Output>,
    /// The time of the last input.
    last_input: Instant,
    /// How long a click-to-call source waits for our ACK (64*T1).
    source_wait: Duration,
    counters: Counters,
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
    /// once (see [`Switch::poll_output`]).
    pub fn new(cfg: SwitchConfig, state: SwitchState, seed: u64, now: Now) -> Switch {
        let mut rng = StdRng::seed_from_u64(seed);
        let accounts = Accounts::new(state.customers, state.domains, state.extensions);
        let mut registrar = Registrar::new(cfg.registrar.clone(), accounts, rng.next_u64());
        registrar.location_mut().load(state.bindings);
        let mut b2bua_cfg = cfg.b2bua.clone();
        b2bua_cfg.methods = methods::supported();
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
            fork_cfg: cfg.fork.clone(),
            policy: methods::policy(),
            identity: LocalIdentity {
                names: cfg.aliases.clone(),
                addrs: cfg.listen.iter().map(|(_, a)| *a).collect(),
            },
            local: LocalAnswers::new(cfg.user_agent.clone(), StdRng::seed_from_u64(rng.next_u64())),
            tx: TransactionLayer::with_owner_timers(cfg.transactions, rng.next_u64()),
            registrar,
            routes: state.routes,
            mgr: CallManager::with_owner_timers(b2bua_cfg, locals, rng.next_u64()),
            calls: Calls::default(),
            dns: DnsQueries::default(),
            timers: Timers::new(every),
            rng,
            out: VecDeque::new(),
            listen: cfg.listen,
            last_input: now.at,
            source_wait: cfg.transactions.t1.saturating_mul(64),
            counters: Counters::default(),
        };
        sw.timers.reschedule_job(Job::Sweep, now.at);
        sw.timers.reschedule_job(Job::Keepalive, now.at);
        sw.run_job(now, Job::CarrierDns);
        sw
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
                let count = self.registrar.location_mut().connection_closed(conn);
                if count > 0 {
                    self.out.push_back(Output::Event(Event::BindingsUnreachable { count }));
                }
            }
            Input::Command { id, command } => {
                let outcome = self.on_command(now, command);
                self.out.push_back(Output::Event(Event::CommandDone { id, outcome }));
            }
        }
        self.pump(now);
    }

    /// The next thing to do. The last output of every round is
    /// [`Output::Timeout`] with the next deadline; polling again returns it
    /// again until another input comes.
    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.next_deadline()),
        }
    }

    // ----- getters ----------------------------------------------------------

    /// What the switch holds now.
    pub fn stats(&self) -> SwitchStats {
        SwitchStats {
            calls: self.calls.len(),
            dialog_calls: self.mgr.len(),
            transactions: self.tx.len(),
            bindings: self.registrar.location().len(),
            timers: self.timers.queue.len(),
            dns_queries: self.dns.len(),
        }
    }

    /// Everything counted since the switch started.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.retransmissions = self.tx.retransmissions();
        c
    }

    /// `true` when no call and no transaction is live: a shutdown may end.
    pub fn is_idle(&self) -> bool {
        self.tx.is_empty() && self.calls.len() == 0 && self.mgr.is_empty()
    }

    /// The registrar (bindings, accounts), for reading.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    // ----- inputs -----------------------------------------------------------

    fn on_datagram(&mut self, now: Now, d: Datagram) {
        if d.bytes.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)) {
            return; // a keep-alive (RFC 5626 CRLF) or padding
        }
        let peer = d.peer;
        let mut msg = match Message::parse(d.bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.dropped_in += 1;
                let reason = format!("unparsable: {e}");
                self.out.push_back(Output::Event(Event::Dropped { peer, reason }));
                return;
            }
        };
        self.counters.messages_in.count(&msg);
        if msg.is_request() {
            stamp_received(&mut msg, peer.remote, self.force_rport);
        }
        match validate(&msg, &self.policy) {
            Verdict::Drop(why) => {
                self.counters.dropped_in += 1;
                let reason = why.to_string();
                self.out.push_back(Output::Event(Event::Dropped { peer, reason }));
            }
            Verdict::Reject(r) => {
                // Answered statelessly: it may lack what a transaction is
                // keyed on.
                debug!(%peer, status = r.status, detail = %r.detail, "rejected");
                let resp = self.local.rejection(&msg, &r);
                self.transmit(peer, resp, Token::NONE);
            }
            Verdict::Accept => self.tx.handle_incoming(now.at, msg, peer),
        }
    }

    fn on_timeout(&mut self, now: Now) {
        while let Some((at, key)) = self.timers.queue.pop_due(now.at) {
            match key {
                TimerKey::Transaction(k) => self.tx.handle_timer(now.at, k),
                TimerKey::Dialogs(c) => self.mgr.handle_call_timer(&mut self.tx, now.at, c),
                TimerKey::Fork(c) => self.fork_timer(now, c, at),
                TimerKey::Job(j) if self.timers.jobs.is_current(j, at) => self.run_job(now, j),
                TimerKey::Job(_) => {}
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
        s.fork.handle_timeout(now.into());
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

    fn on_command(&mut self, now: Now, c: Command) -> CommandOutcome {
        match c {
            Command::HangupGroupcall { id } => self.hangup(now, id, false),
            Command::HangupCall { id } => self.hangup(now, id, true),
            Command::StartGroupcall(c2c) => self.click_to_call(now, *c2c),
            Command::PutExtension(e) => {
                let a = self.registrar.accounts();
                let mut extensions: Vec<_> = a
                    .extensions()
                    .filter(|x| !(x.name == e.name && x.domain.eq_ignore_ascii_case(&e.domain)))
                    .cloned()
                    .collect();
                if a.domain_for_host(&e.domain).is_none() {
                    return CommandOutcome::Refused(format!("no domain {:?}", e.domain));
                }
                extensions.push(e);
                let next = Accounts::new(a.customers().to_vec(), a.domains().to_vec(), extensions);
                self.registrar.set_accounts(next);
                CommandOutcome::Done
            }
            Command::RemoveExtension { name, domain } => {
                let a = self.registrar.accounts();
                let Some(found) = a.extension(&name, &domain).map(|e| e.aor()) else {
                    return CommandOutcome::NotFound;
                };
                let extensions: Vec<_> = a
                    .extensions()
                    .filter(|x| !(x.name == name && x.domain.eq_ignore_ascii_case(&domain)))
                    .cloned()
                    .collect();
                let next = Accounts::new(a.customers().to_vec(), a.domains().to_vec(), extensions);
                self.registrar.set_accounts(next);
                self.registrar.location_mut().remove_aor(&found);
                CommandOutcome::Done
            }
            Command::PutGroup(g) => match self.routes.put_group(*g) {
                Ok(()) => CommandOutcome::Done,
                Err(e) => CommandOutcome::Refused(e.reason),
            },
            Command::RemoveGroup { id } => {
                if self.routes.remove_group(id) {
                    CommandOutcome::Done
                } else {
                    CommandOutcome::NotFound
                }
            }
        }
    }

    /// Hangs up the live call that a groupcall or call record belongs to
    /// (`leg`: the id names a call record, and a ringing leg is cancelled
    /// alone).
    fn hangup(&mut self, now: Now, id: Uuid, leg: bool) -> CommandOutcome {
        let Some(cref) = self.calls.find(id) else { return CommandOutcome::NotFound };
        if let Some(s) = self.calls.get_mut(cref) {
            if leg && id != s.inbound.id {
                s.fork.hangup_call(now.into(), id);
            } else {
                s.api_hangup(&mut self.out, now);
            }
        }
        self.run_call(now, cref);
        CommandOutcome::Done
    }

    /// Click-to-call (RFC 3725 flow I): checks the source (an extension of
    /// the customer, registered), makes the groupcall and the source's call
    /// record, and calls the source without an offer. The fork starts when
    /// the source answers with its offer (see `calls.rs`).
    fn click_to_call(&mut self, now: Now, c: crate::ClickToCall) -> CommandOutcome {
        if c.source.kind != AddressType::Endpoint {
            return CommandOutcome::Refused("the source must be an endpoint (ext@domain)".into());
        }
        if c.destinations.is_empty() || c.destinations.len() > self.fork_cfg.max_legs {
            return CommandOutcome::Refused(format!(
                "between 1 and {} destinations",
                self.fork_cfg.max_legs
            ));
        }
        let aor = c.source.target.clone();
        let Some((name, domain)) = aor.split_once('@') else {
            return CommandOutcome::Refused("the source must be ext@domain".into());
        };
        let accounts = self.registrar.accounts();
        let owned =
            accounts.domain_for_host(domain).is_some_and(|d| d.customer_id == c.customer_id);
        let Some(ext) = accounts.extension(name, domain).filter(|_| owned).cloned() else {
            return CommandOutcome::Refused(format!("no extension {aor}"));
        };
        let (aor, domain) = (ext.aor(), ext.domain.clone());
        let display = ext.display_name.clone();
        let Some(contact) = self.registrar.location().reachable(&aor, now.wall).into_iter().next()
        else {
            return CommandOutcome::Refused(format!("{aor} is not registered"));
        };
        let local = self.listen.first().map(|(_, a)| *a);
        let host = local.map_or_else(String::new, |a| a.to_string());
        let shown = c.source_shown_as(&host);
        let source_id = self.new_id();
        let group = GroupDef {
            id: self.new_id(),
            ring_method: c.ring_method,
            answer_method: c.answer_method,
            destinations: c.destinations,
            send_reason: true,
        };
        let spec = GroupSpec {
            customer_id: c.customer_id,
            source: c.source.clone(),
            master_call_id: source_id,
            group,
        };
        let dir = CallDirectory {
            location: self.registrar.location(),
            routes: &self.routes,
            domain: &domain,
            wall: now.wall,
            routed: RefCell::new(None),
        };
        // The source retransmits its 2xx for 64*T1 waiting for our ACK: the
        // destinations must answer within that.
        let mut cfg = self.fork_cfg.clone();
        cfg.overall_timeout = cfg.overall_timeout.min(self.source_wait);
        let seed = self.rng.next_u64();
        let fork = match Fork::build(spec, &dir, cfg, now.into(), seed) {
            Ok(f) => f,
            Err(e) => return CommandOutcome::Refused(e.to_string()),
        };
        let target = groupcall::LegTarget::Contact {
            aor: aor.clone(),
            contact: groupcall::ContactTarget {
                uri: contact.binding.contact.clone(),
                binding_key: contact.binding.contact.clone(),
                q: contact.binding.q,
            },
        };
        let dialer = Dialer {
            location: self.registrar.location(),
            routes: &self.routes,
            locals: &self.listen,
            wall: now.wall,
        };
        let dial = match dialer.target(&target, &shown) {
            Ok(t) => t,
            Err(code) => {
                return CommandOutcome::Refused(format!("{aor} cannot be reached ({code})"))
            }
        };
        let (cref, src) = match self.mgr.originate(&mut self.tx, now.at, dial) {
            Ok(x) => x,
            Err(e) => return CommandOutcome::Refused(format!("cannot call {aor}: {e}")),
        };
        let name_part = if display.is_empty() {
            String::new()
        } else {
            format!("\"{}\" ", display.replace('"', ""))
        };
        let from = format!("{name_part}<sip:{}@{host}>", ext.name);
        let sip_call_id = self.mgr.leg_sip_call_id(cref, src).unwrap_or_default().to_owned();
        let record = Call {
            groupcall_id: fork.root().id,
            direction: records::Direction::Outgoing,
            sip_call_id,
            ..Call::dialing(source_id, c.customer_id, c.source.clone(), c.source, now.wall)
        };
        let groupcall = Box::new(fork.root().clone());
        self.out.push_back(Output::Persist(Persist::Call(record.clone())));
        let call = Box::new(record.clone());
        self.counters.calls_started += 1;
        self.calls.insert(cref, ServedCall::new(fork, record, from, now.at).with_source(src));
        self.run_call(now, cref);
        CommandOutcome::Started { groupcall, call }
    }

    // ----- housekeeping -----------------------------------------------------

    fn run_job(&mut self, now: Now, job: Job) {
        self.timers.jobs.take(job);
        match job {
            Job::Sweep => {
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
            while let Some(ev) = self.mgr.poll_event() {
                busy = true;
                let cref = ev.call();
                if let Some(s) = self.calls.get_mut(cref) {
                    let Switch { tx, mgr, registrar, routes, dns, out, listen, counters, .. } =
                        self;
                    let dialer = Dialer {
                        location: registrar.location(),
                        routes,
                        locals: listen,
                        wall: now.wall,
                    };
                    let mut cx = CallContext { counters, tx, mgr, dialer, dns, out };
                    s.on_call_event(&mut cx, now, ev);
                    self.settle_call(cref);
                }
            }
            while let Some(st) = self.mgr.poll_stateless() {
                busy = true;
                self.transmit(st.peer, st.message, Token::NONE);
            }
            while let Some(t) = self.tx.poll_transmit() {
                busy = true;
                self.transmit(t.peer, t.message, token_of(t.key));
            }
            if !busy {
                break;
            }
        }
        while let Some((at, k)) = self.tx.poll_timer() {
            self.timers.queue.push(at, TimerKey::Transaction(k));
        }
        while let Some((at, c)) = self.mgr.poll_timer() {
            self.timers.queue.push(at, TimerKey::Dialogs(c));
        }
        while let Some(change) = self.registrar.poll_change() {
            let p = match change {
                BindingChange::Upsert(b) => Persist::Binding(b),
                BindingChange::Remove { aor, contact } => Persist::BindingRemoved { aor, contact },
            };
            self.out.push_back(Output::Persist(p));
        }
    }

    /// Queues a message; a response goes where RFC 3261 18.2.2 says.
    fn transmit(&mut self, peer: Peer, message: Message, token: Token) {
        let peer = if message.is_request() { peer } else { response_target(&message, &peer) };
        self.counters.messages_out.count(&message);
        self.out.push_back(Output::Transmit(Transmit { peer, message, token }));
    }

    /// Applies a call's pending fork actions, then settles it.
    fn run_call(&mut self, now: Now, cref: CallRef) {
        let Some(s) = self.calls.get_mut(cref) else { return };
        let Switch { tx, mgr, registrar, routes, dns, out, listen, counters, .. } = self;
        let dialer =
            Dialer { location: registrar.location(), routes, locals: listen, wall: now.wall };
        let mut cx = CallContext { counters, tx, mgr, dialer, dns, out };
        s.run(&mut cx, now, cref);
        self.settle_call(cref);
    }

    /// Files a call's new fork deadline, and forgets the call once both its
    /// fork and its dialogs are over.
    fn settle_call(&mut self, cref: CallRef) {
        let Some(s) = self.calls.get_mut(cref) else { return };
        let next = s.fork.poll_timeout();
        if next != s.fork_deadline {
            s.fork_deadline = next;
            if let Some(at) = next {
                self.timers.queue.push(at, TimerKey::Fork(cref));
            }
        }
        if let Some(call) = self.calls.remove_if_over(cref) {
            self.counters.call_ended(call.outcome());
            self.counters.legs_per_groupcall.observe(call.fork.dialed_legs() as f64);
            self.out.push_back(Output::Event(Event::CallEnded { call: call.inbound.id }));
        }
    }

    /// The next deadline, after dropping stale entries off the queue's top
    /// (and purging them all when they pile up).
    fn next_deadline(&mut self) -> Instant {
        let Switch { timers, tx, mgr, calls, .. } = self;
        let jobs = &timers.jobs;
        let current = |at: Instant, k: TimerKey| match k {
            TimerKey::Transaction(t) => tx.timer_is_current(at, t),
            TimerKey::Dialogs(c) => mgr.timer_is_current(at, c),
            TimerKey::Fork(c) => calls.get(c).is_some_and(|s| s.fork_deadline == Some(at)),
            TimerKey::Job(j) => jobs.is_current(j, at),
        };
        let live = tx.len() + mgr.len() + calls.len() + 3;
        timers.queue.purge_if_bloated(live, current);
        timers.queue.prune(current);
        // The sweep job always runs, so there is always a deadline; an hour
        // after the last input is only the fallback should it ever not.
        match timers.queue.peek() {
            Some((at, _)) => at,
            None => self.last_input + Duration::from_secs(3600),
        }
    }

    // ----- requests ---------------------------------------------------------

    fn on_tx_event(&mut self, now: Now, ev: TxEvent) {
        let Some(ev) = self.mgr.handle_event(&mut self.tx, now.at, ev) else { return };
        match ev {
            TxEvent::NewRequest { key, request, peer } => self.on_request(now, key, request, peer),
            TxEvent::Cancel { key, request, cancels, .. } => {
                // CANCELs of calls we serve were taken by the B2BUA; this
                // one matched none. If it matched an INVITE transaction we
                // answered at once (404, 407...), it is simply confirmed.
                let code = if cancels.is_some() { 200 } else { 481 };
                let resp = self.local.status(&request, code);
                self.respond(now, key, resp);
            }
            TxEvent::Stray { message, peer } => {
                debug!(%peer, method = ?message.method(), status = ?message.status(), "stray message");
            }
            TxEvent::Response { key, .. } => {
                debug!(%key, "response for an unknown client transaction")
            }
            TxEvent::Timeout { key } => debug!(%key, "transaction timeout"),
            TxEvent::TransportError { key } => debug!(%key, "transaction transport error"),
            TxEvent::Terminated { .. } => {}
        }
    }

    fn respond(&mut self, now: Now, key: TxKey, resp: Message) {
        if let Err(e) = self.tx.send_response(now.at, key, resp) {
            debug!(%key, error = ?e, "could not send response");
        }
    }

    fn on_request(&mut self, now: Now, key: TxKey, req: Message, peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Ack);
        match method {
            Method::Invite => return self.invite(now, key, req, peer),
            Method::Register => {
                match self.registrar.handle(now.at, now.wall, &req, &peer) {
                    Some(resp) => self.respond(now, key, resp),
                    None => self.tx.terminate(key),
                }
                return;
            }
            _ => {}
        }
        let to_us = matches!(req.request_uri(), Some(Ok(u)) if self.identity.is_local(&u));
        let resp = if method == Method::Options && to_us {
            self.local.options_ok(&req)
        } else if req.max_forwards().ok().flatten() == Some(0) {
            self.local.status(&req, 483)
        } else if method == Method::Bye {
            self.local.status(&req, 481)
        } else {
            self.local.status(&req, 404)
        };
        self.respond(now, key, resp);
    }

    /// A new record id.
    fn new_id(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid()
    }

    /// A new INVITE outside any dialog: identify, route, fork.
    fn invite(&mut self, now: Now, key: TxKey, req: Message, peer: Peer) {
        if req.max_forwards().ok().flatten() == Some(0) {
            let resp = self.local.status(&req, 483);
            return self.respond(now, key, resp);
        }
        let who = match caller::identify(&mut self.registrar, &self.routes, now.at, &req, &peer) {
            Ok(who) => who,
            Err(refusal) => return self.refuse(now, key, &req, &peer, refusal),
        };
        let user = match req.request_uri() {
            Some(Ok(u)) => match u.scheme {
                sip_message::Scheme::Tel => u.phone_digits().unwrap_or_default(),
                _ => u.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default(),
            },
            _ => String::new(),
        };
        let accounts = self.registrar.accounts();
        let decision =
            self.routes.route(&who.caller, &user, |n, d| accounts.extension(n, d).is_some());
        let mut routed = None;
        let (group, dialed) = match decision {
            Decision::Extension { aor } => {
                let dest = Address::new(AddressType::Endpoint, aor);
                (self.single(dest.clone()), dest)
            }
            Decision::Group(g) => (
                g.def(None),
                Address::new(AddressType::Groupcall, format!("{}@{}", g.number, g.domain)),
            ),
            Decision::Tel { number, targets } => {
                let dest = Address::new(AddressType::Tel, number.clone());
                routed = Some((number, targets));
                (self.single(dest.clone()), dest)
            }
            Decision::NotFound | Decision::AuthRequired => {
                let resp = self.local.status(&req, 404);
                return self.respond(now, key, resp);
            }
            Decision::Forbidden => {
                let resp = self.local.status(&req, 403);
                return self.respond(now, key, resp);
            }
        };
        let customer_id =
            self.registrar.accounts().domain_for_host(&who.domain).map_or(NIL, |d| d.customer_id);
        let CallerId { source, from } = caller::caller_id(&req, &who, peer.local);
        let master = self.new_id();
        let spec = GroupSpec { customer_id, source: source.clone(), master_call_id: master, group };
        let dir = CallDirectory {
            location: self.registrar.location(),
            routes: &self.routes,
            domain: &who.domain,
            wall: now.wall,
            routed: RefCell::new(routed),
        };
        let seed = self.rng.next_u64();
        let mut fork = match Fork::build(spec, &dir, self.fork_cfg.clone(), now.into(), seed) {
            Ok(f) => f,
            Err(e) => {
                debug!(error = %e, "cannot build the fork");
                let resp = self.local.status(&req, 500);
                return self.respond(now, key, resp);
            }
        };
        let sip_call_id =
            req.call_id().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
        let inbound =
            Call { sip_call_id, ..Call::dialing(master, customer_id, source, dialed, now.wall) };
        self.out.push_back(Output::Persist(Persist::Call(inbound.clone())));
        let groupcall = fork.root().id;
        self.out.push_back(Output::Event(Event::CallStarted { call: master, groupcall }));
        fork.start(now.into());
        let cref = self.mgr.accept_inbound(key, req, peer);
        self.counters.calls_started += 1;
        self.calls.insert(cref, ServedCall::new(fork, inbound, from, now.at));
        self.run_call(now, cref);
    }

    /// A one-destination group (a direct call to an extension or a number).
    fn single(&mut self, dest: Address) -> GroupDef {
        let id = self.new_id();
        GroupDef::new(id, RingMethod::RingAll, vec![Destination::new(dest)])
    }

    fn refuse(&mut self, now: Now, key: TxKey, req: &Message, peer: &Peer, r: Refusal) {
        let resp = match r {
            Refusal::Status(code) => self.local.status(req, code),
            Refusal::Challenge(challenges) => {
                let mut b = self.local.response(req, 407);
                for ch in challenges {
                    b = b.header(HeaderName::ProxyAuthenticate, Bytes::from(ch));
                }
                b.build()
            }
            Refusal::AuthFailed { user } => {
                self.counters.auth_failures += 1;
                let ev = Event::AuthFailed { src: peer.remote.ip(), user, method: "INVITE".into() };
                self.out.push_back(Output::Event(ev));
                self.local.status(req, 403)
            }
        };
        self.respond(now, key, resp);
    }
}
