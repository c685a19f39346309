//! Calls: one fork engine ([`groupcall::Fork`]) per inbound call, driving the
//! B2BUA's legs ([`b2bua::CallManager`]); leg events go back into the fork,
//! fork actions become SIP, record changes go to the store. Carrier failover
//! for `tel` legs and RFC 3263 failover for DNS targets live here too: a leg
//! has an ordered list of targets, and one that gets no answer, 408 or 5xx
//! is re-dialed to the next before the fork hears of it. Host names are
//! handed to the I/O shell to resolve ([`Calls::take_resolves`]).

use b2bua::{CallEvent, CallManager, CallRef, DialTarget, LegRef};
use groupcall::{
    Action, ContactTarget, Directory, Fork, GroupDef, LegEvent, LegId, LegTarget, Now, Record,
};
use records::{Address, Call, CallStatus, Direction, HangupBy, HangupReason, Timestamp, NIL};
use registrar::LocationStore;
use routing::{CarrierTarget, RouteTable};
use sip_message::{Peer, Transport, Uri};
use sip_transaction::TransactionLayer;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use store::Store;
use tracing::{debug, warn};
use uuid::Uuid;

/// Encodes where a binding is reached, for [`ContactTarget::binding_key`].
pub fn binding_key(p: &Peer) -> String {
    let conn = p.conn.map_or_else(|| "-".to_owned(), |c| c.to_string());
    format!("{}|{}|{}|{}", p.transport, p.remote, p.local, conn)
}

fn peer_from_key(k: &str) -> Option<Peer> {
    let mut it = k.split('|');
    let transport = Transport::from_token(it.next()?.as_bytes())?;
    let remote = it.next()?.parse().ok()?;
    let local = it.next()?.parse().ok()?;
    let conn = it.next()?.parse().ok();
    Some(Peer { transport, remote, local, conn })
}

/// What a fork may look up while it is built.
pub struct Dir<'a> {
    /// Registered contacts.
    pub location: &'a LocationStore,
    /// Ring groups.
    pub routes: &'a RouteTable,
    /// The domain group numbers are looked up in.
    pub domain: &'a str,
    /// Now, for binding expiry.
    pub wall: Timestamp,
}

impl Directory for Dir<'_> {
    fn contacts(&self, aor: &str) -> Vec<ContactTarget> {
        self.location
            .locations(aor, self.wall)
            .into_iter()
            .map(|l| ContactTarget {
                uri: l.binding.contact.clone(),
                binding_key: binding_key(&l.target()),
                q: l.binding.q,
            })
            .collect()
    }

    fn group(&self, key: &str) -> Option<GroupDef> {
        self.routes.group(key, self.domain).map(|g| g.def(None))
    }
}

/// A new inbound call, routed.
pub struct NewCall {
    /// Owner of the records.
    pub customer_id: Uuid,
    /// The caller, for records and caller ID.
    pub source: Address,
    /// What was dialed, for the inbound call record.
    pub destination: Address,
    /// The group to ring.
    pub group: GroupDef,
    /// The caller's From (display name and URI, no tag), shown to callees.
    pub from: String,
}

/// A host name to resolve (RFC 3263) before a leg can be dialed.
#[derive(Clone, Debug)]
pub struct Resolve {
    /// The call.
    pub call: CallRef,
    /// The fork's leg.
    pub leg: LegId,
    /// The Request-URI to send once resolved.
    pub uri: String,
    /// Host to look up.
    pub host: String,
    /// Port, when the URI gives one.
    pub port: Option<u16>,
    /// Transport, when the URI gives one.
    pub transport: Option<Transport>,
}

struct Served {
    fork: Fork,
    to_leg: HashMap<LegId, LegRef>,
    from_leg: HashMap<LegRef, LegId>,
    /// Ordered targets of a leg and the one being tried.
    alts: HashMap<LegId, (Vec<DialTarget>, usize)>,
    inbound: Call,
    from: String,
    mgr_ended: bool,
}

/// Every live call.
pub struct Calls {
    /// The B2BUA legs.
    pub mgr: CallManager,
    calls: HashMap<CallRef, Served>,
    timers: BinaryHeap<Reverse<(Instant, CallRef)>>,
    fork_cfg: groupcall::ForkConfig,
    store: Arc<dyn Store>,
    locals: Vec<(Transport, SocketAddr)>,
    resolves: Vec<Resolve>,
}

fn now_of(at: Instant, wall: Timestamp) -> Now {
    Now { at, wall }
}

impl Calls {
    /// Calls over `mgr`, forking with `fork_cfg`, recording into `store`.
    pub fn new(
        mgr: CallManager,
        fork_cfg: groupcall::ForkConfig,
        store: Arc<dyn Store>,
        locals: Vec<(Transport, SocketAddr)>,
    ) -> Self {
        Calls {
            mgr,
            calls: HashMap::new(),
            timers: BinaryHeap::new(),
            fork_cfg,
            store,
            locals,
            resolves: Vec::new(),
        }
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Starts serving an inbound INVITE whose server transaction is `key`.
    /// `Err(code)` when the fork cannot be built (the caller must answer).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        key: sip_transaction::TxKey,
        invite: sip_message::Message,
        peer: Peer,
        call: NewCall,
        dir: &Dir<'_>,
        routes: &RouteTable,
    ) -> Result<(), u16> {
        let master = Uuid::new_v4();
        let sip_call_id =
            invite.call_id().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
        let spec = groupcall::GroupSpec {
            customer_id: call.customer_id,
            source: call.source.clone(),
            master_call_id: master,
            group: call.group,
        };
        let now = now_of(at, wall);
        let fork = match Fork::build(spec, dir, self.fork_cfg.clone(), now) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = ?e, "cannot build the fork");
                return Err(500);
            }
        };
        let inbound = Call {
            id: master,
            customer_id: call.customer_id,
            groupcall_id: NIL,
            source: call.source,
            destination: call.destination,
            direction: Direction::Incoming,
            status: CallStatus::Dialing,
            hangup_by: HangupBy::None,
            hangup_reason: HangupReason::None,
            sip_call_id,
            tm_ringing: Timestamp::NOT_YET,
            tm_progressing: Timestamp::NOT_YET,
            tm_hangup: Timestamp::NOT_YET,
            tm_create: wall,
            tm_update: wall,
            tm_delete: Timestamp::NOT_YET,
        };
        self.store.upsert_call(&inbound);
        let cref = self.mgr.accept_inbound(key, invite, peer);
        self.calls.insert(
            cref,
            Served {
                fork,
                to_leg: HashMap::new(),
                from_leg: HashMap::new(),
                alts: HashMap::new(),
                inbound,
                from: call.from,
                mgr_ended: false,
            },
        );
        if let Some(s) = self.calls.get_mut(&cref) {
            s.fork.start(now);
        }
        self.run_fork(tx, at, wall, cref, routes);
        Ok(())
    }

    /// Moves B2BUA events into the forks until nothing is left. Returns
    /// `true` when anything happened.
    pub fn drive(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        routes: &RouteTable,
    ) -> bool {
        let mut busy = false;
        while let Some(ev) = self.mgr.poll_event() {
            busy = true;
            self.on_event(tx, at, wall, ev, routes);
        }
        busy
    }

    fn on_event(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        ev: CallEvent,
        routes: &RouteTable,
    ) {
        let cref = ev.call();
        let now = now_of(at, wall);
        let Some(s) = self.calls.get_mut(&cref) else { return };
        match ev {
            CallEvent::CallEnded { .. } => {
                s.mgr_ended = true;
            }
            CallEvent::CallerCancelled { .. } => s.fork.caller_cancelled(now),
            CallEvent::CallerHungUp { .. } | CallEvent::CallerNoAck { .. } => {
                s.fork.caller_hung_up(now);
                record_inbound(
                    &mut s.inbound,
                    self.store.as_ref(),
                    wall,
                    CallStatus::Hangup,
                    HangupBy::Remote,
                    HangupReason::Normal,
                );
            }
            ev => {
                let Some(leg) = ev.leg() else { return };
                let Some(&id) = s.from_leg.get(&leg) else { return };
                let failover = matches!(ev, CallEvent::LegNoResponse { .. })
                    || matches!(ev, CallEvent::LegFailed { code, .. } if code == 408 || (500..600).contains(&code));
                if failover && s.alts.get(&id).is_some_and(|(t, i)| i + 1 < t.len()) {
                    debug!(leg = id.0, "failover to the next target");
                    dial_next(&mut self.mgr, tx, at, cref, s, id, now);
                    self.run_fork(tx, at, wall, cref, routes);
                    return;
                }
                let lev = match ev {
                    CallEvent::LegTrying { .. } => LegEvent::Trying,
                    CallEvent::LegRinging { .. } => LegEvent::Ringing,
                    CallEvent::LegEarlyMedia { .. } => LegEvent::EarlyMedia,
                    CallEvent::LegAnswered { .. } => LegEvent::Answered,
                    CallEvent::LegFailed { code, .. } => LegEvent::Failed { code },
                    CallEvent::LegNoResponse { .. } => LegEvent::NoResponse,
                    CallEvent::LegCancelled { .. } => LegEvent::Cancelled,
                    CallEvent::LegHungUp { .. } => LegEvent::HungUp,
                    _ => LegEvent::Ended,
                };
                s.fork.leg_event(now, id, lev);
            }
        }
        self.run_fork(tx, at, wall, cref, routes);
    }

    /// Applies the fork's actions of call `cref`, then files its next timer
    /// and forgets the call when both sides are done.
    fn run_fork(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        cref: CallRef,
        routes: &RouteTable,
    ) {
        let Calls { mgr, calls, store, locals, timers, resolves, .. } = self;
        let Some(s) = calls.get_mut(&cref) else { return };
        let now = now_of(at, wall);
        while let Some(action) = s.fork.poll_action() {
            apply(
                mgr,
                tx,
                at,
                wall,
                cref,
                s,
                action,
                store.as_ref(),
                locals,
                routes,
                now,
                resolves,
            );
        }
        if let Some(t) = s.fork.poll_timeout() {
            timers.push(Reverse((t, cref)));
        }
        if s.fork.is_finished() && s.mgr_ended {
            calls.remove(&cref);
        }
    }

    /// Host names waiting to be resolved; the shell resolves them and calls
    /// [`Calls::resolved`].
    pub fn take_resolves(&mut self) -> Vec<Resolve> {
        std::mem::take(&mut self.resolves)
    }

    /// The targets for a [`Resolve`] (empty when the name did not resolve):
    /// the leg dials the first, and fails over along the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn resolved(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        routes: &RouteTable,
        r: Resolve,
        targets: Vec<(Transport, SocketAddr)>,
    ) {
        let Some(s) = self.calls.get_mut(&r.call) else { return };
        let now = now_of(at, wall);
        let list: Vec<DialTarget> = targets
            .into_iter()
            .filter_map(|(t, addr)| {
                let local = local_for(&self.locals, t, addr)?;
                Some(DialTarget {
                    request_uri: r.uri.clone(),
                    to: format!("<{}>", r.uri),
                    from: s.from.clone(),
                    next_hop: Peer { transport: t, remote: addr, local, conn: None },
                    credentials: None,
                    extra_headers: vec![],
                })
            })
            .collect();
        if list.is_empty() {
            warn!(host = %r.host, "no SIP server found for the host (RFC 3263)");
            s.fork.leg_event(now, r.leg, LegEvent::Failed { code: 503 });
        } else {
            start_leg(&mut self.mgr, tx, at, r.call, s, r.leg, list, now);
        }
        self.run_fork(tx, at, wall, r.call, routes);
    }

    /// Fires fork timers that are due, and the B2BUA's.
    pub fn handle_timeout(
        &mut self,
        tx: &mut TransactionLayer,
        at: Instant,
        wall: Timestamp,
        routes: &RouteTable,
    ) {
        self.mgr.handle_timeout(tx, at);
        while let Some(Reverse((t, cref))) = self.timers.peek().copied() {
            if t > at {
                break;
            }
            self.timers.pop();
            let due =
                self.calls.get(&cref).and_then(|s| s.fork.poll_timeout()).is_some_and(|d| d <= at);
            if due {
                if let Some(s) = self.calls.get_mut(&cref) {
                    s.fork.handle_timeout(now_of(at, wall));
                }
                self.run_fork(tx, at, wall, cref, routes);
            }
        }
        // Calls whose B2BUA side ended while the fork was already finished.
        let done: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, s)| s.fork.is_finished() && s.mgr_ended)
            .map(|(c, _)| *c)
            .collect();
        for c in done {
            self.calls.remove(&c);
        }
    }

    /// The next deadline of any fork or of the B2BUA.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let f = self.timers.peek().map(|Reverse((t, _))| *t);
        match (f, self.mgr.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Moves the inbound call record forward (never back) and writes it to the
/// store when it changed.
fn record_inbound(
    c: &mut Call,
    store: &dyn Store,
    wall: Timestamp,
    status: CallStatus,
    by: HangupBy,
    reason: HangupReason,
) {
    if !c.status.can_become(status) {
        return;
    }
    c.status = status;
    c.tm_update = wall;
    match status {
        CallStatus::Ringing => c.tm_ringing = wall,
        CallStatus::Progressing => c.tm_progressing = wall,
        CallStatus::Hangup => {
            c.tm_hangup = wall;
            c.hangup_by = by;
            c.hangup_reason = reason;
        }
        _ => {}
    }
    store.upsert_call(c);
}

fn local_for(
    locals: &[(Transport, SocketAddr)],
    t: Transport,
    remote: SocketAddr,
) -> Option<SocketAddr> {
    locals
        .iter()
        .find(|(lt, a)| *lt == t && a.is_ipv4() == remote.is_ipv4())
        .or_else(|| locals.iter().find(|(_, a)| a.is_ipv4() == remote.is_ipv4()))
        .map(|(_, a)| *a)
}

/// A `sip:` URI with an IP host needs no lookup: its one target.
fn sip_ip_target(uri: &Uri<'_>, locals: &[(Transport, SocketAddr)]) -> Option<Peer> {
    let host = std::str::from_utf8(uri.host).ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let transport = uri.transport().and_then(Transport::from_token).unwrap_or(Transport::Udp);
    let remote = SocketAddr::new(ip, uri.port.unwrap_or(5060));
    let local = local_for(locals, transport, remote)?;
    Some(Peer { transport, remote, local, conn: None })
}

/// A carrier target as a dial target.
fn carrier_target(
    t: &CarrierTarget,
    from: &str,
    locals: &[(Transport, SocketAddr)],
) -> Option<DialTarget> {
    let local = local_for(locals, t.transport, t.address)?;
    Some(DialTarget {
        request_uri: t.request_uri.clone(),
        to: format!("<{}>", t.request_uri),
        from: from.to_owned(),
        next_hop: Peer { transport: t.transport, remote: t.address, local, conn: None },
        credentials: (!t.username.is_empty()).then(|| (t.username.clone(), t.password.clone())),
        extra_headers: t.headers.clone(),
    })
}

/// Dials the first workable target of `list` for the fork's `leg`, keeping
/// the rest for failover; the fork hears of a failure when none works.
#[allow(clippy::too_many_arguments)]
fn start_leg(
    mgr: &mut CallManager,
    tx: &mut TransactionLayer,
    at: Instant,
    cref: CallRef,
    s: &mut Served,
    leg: LegId,
    list: Vec<DialTarget>,
    now: Now,
) {
    s.alts.insert(leg, (list, 0));
    let mut idx = 0;
    loop {
        let Some(target) = s.alts.get(&leg).and_then(|(l, _)| l.get(idx)).cloned() else {
            s.fork.leg_event(now, leg, LegEvent::Failed { code: 503 });
            return;
        };
        if let Some(a) = s.alts.get_mut(&leg) {
            a.1 = idx;
        }
        match mgr.dial(tx, at, cref, target) {
            Ok(lr) => {
                s.to_leg.insert(leg, lr);
                s.from_leg.insert(lr, leg);
                return;
            }
            Err(e) => {
                warn!(error = ?e, "dial failed; trying the next target");
                idx += 1;
            }
        }
    }
}

/// Moves `leg` on to its next target.
fn dial_next(
    mgr: &mut CallManager,
    tx: &mut TransactionLayer,
    at: Instant,
    cref: CallRef,
    s: &mut Served,
    leg: LegId,
    now: Now,
) {
    let Some((list, idx)) = s.alts.remove(&leg) else { return };
    let rest: Vec<DialTarget> = list.into_iter().skip(idx + 1).collect();
    start_leg(mgr, tx, at, cref, s, leg, rest, now);
}

#[allow(clippy::too_many_arguments)]
fn apply(
    mgr: &mut CallManager,
    tx: &mut TransactionLayer,
    at: Instant,
    wall: Timestamp,
    cref: CallRef,
    s: &mut Served,
    action: Action,
    store: &dyn Store,
    locals: &[(Transport, SocketAddr)],
    routes: &RouteTable,
    now: Now,
    resolves: &mut Vec<Resolve>,
) {
    let leg_ref = |s: &Served, leg: LegId| s.to_leg.get(&leg).copied();
    let result = match action {
        Action::Dial { leg, target, .. } => {
            let single = |uri: &str, next_hop: Peer, to: String, from: &str| DialTarget {
                request_uri: uri.to_owned(),
                to,
                from: from.to_owned(),
                next_hop,
                credentials: None,
                extra_headers: vec![],
            };
            match &target {
                LegTarget::Contact { aor, contact } => match peer_from_key(&contact.binding_key) {
                    Some(hop) => {
                        let t = single(&contact.uri, hop, format!("<sip:{aor}>"), &s.from);
                        start_leg(mgr, tx, at, cref, s, leg, vec![t], now);
                    }
                    None => s.fork.leg_event(now, leg, LegEvent::Failed { code: 480 }),
                },
                LegTarget::Sip { uri } => match Uri::parse(uri.as_bytes()) {
                    Ok(u) => match sip_ip_target(&u, locals) {
                        Some(hop) => {
                            let t = single(uri, hop, format!("<{uri}>"), &s.from);
                            start_leg(mgr, tx, at, cref, s, leg, vec![t], now);
                        }
                        None => resolves.push(Resolve {
                            call: cref,
                            leg,
                            uri: uri.clone(),
                            host: String::from_utf8_lossy(u.host).into_owned(),
                            port: u.port,
                            transport: u.transport().and_then(Transport::from_token),
                        }),
                    },
                    Err(_) => s.fork.leg_event(now, leg, LegEvent::Failed { code: 416 }),
                },
                LegTarget::Tel { number } => {
                    let list: Vec<DialTarget> = routes
                        .tel_targets(number)
                        .iter()
                        .filter_map(|t| carrier_target(t, &s.from, locals))
                        .collect();
                    if list.is_empty() {
                        s.fork.leg_event(now, leg, LegEvent::Failed { code: 404 });
                    } else {
                        start_leg(mgr, tx, at, cref, s, leg, list, now);
                    }
                }
            }
            Ok(())
        }
        Action::Cancel { leg, reason } => match leg_ref(s, leg) {
            Some(lr) => mgr.cancel_leg(tx, at, cref, lr, reason.map(|r| r.header_value())),
            None => Ok(()),
        },
        Action::AckAndBye { leg } => match leg_ref(s, leg) {
            Some(lr) => mgr.ack_and_bye(tx, at, cref, lr),
            None => Ok(()),
        },
        Action::Bye { leg } => match leg_ref(s, leg) {
            Some(lr) => mgr.bye_leg(tx, at, cref, lr),
            None => Ok(()),
        },
        Action::RelayRinging => {
            record_inbound(
                &mut s.inbound,
                store,
                wall,
                CallStatus::Ringing,
                HangupBy::None,
                HangupReason::None,
            );
            mgr.ring_caller(tx, at, cref)
        }
        Action::RelayEarlyMedia { leg } => match leg_ref(s, leg) {
            Some(lr) => {
                record_inbound(
                    &mut s.inbound,
                    store,
                    wall,
                    CallStatus::Ringing,
                    HangupBy::None,
                    HangupReason::None,
                );
                mgr.early_media_caller(tx, at, cref, lr)
            }
            None => Ok(()),
        },
        Action::AnswerCaller { leg } => match leg_ref(s, leg) {
            Some(lr) => {
                record_inbound(
                    &mut s.inbound,
                    store,
                    wall,
                    CallStatus::Progressing,
                    HangupBy::None,
                    HangupReason::None,
                );
                mgr.answer_caller(tx, at, cref, lr)
            }
            None => Ok(()),
        },
        Action::RejectCaller { code } => {
            let reason = match code {
                486 | 600 => HangupReason::Busy,
                487 => HangupReason::Cancel,
                408 | 480 => HangupReason::Noanswer,
                _ => HangupReason::Failed,
            };
            let by = if code == 487 { HangupBy::Remote } else { HangupBy::Local };
            record_inbound(&mut s.inbound, store, wall, CallStatus::Hangup, by, reason);
            mgr.reject_caller(tx, at, cref, code)
        }
        Action::ByeCaller => {
            record_inbound(
                &mut s.inbound,
                store,
                wall,
                CallStatus::Hangup,
                HangupBy::Local,
                HangupReason::Normal,
            );
            mgr.bye_caller(tx, at, cref)
        }
        Action::RecordChanged(Record::Groupcall(g)) => {
            store.upsert_groupcall(&g);
            Ok(())
        }
        Action::RecordChanged(Record::Call(c)) => {
            store.upsert_call(&c);
            Ok(())
        }
        Action::Finished => {
            if s.inbound.status != CallStatus::Hangup {
                record_inbound(
                    &mut s.inbound,
                    store,
                    wall,
                    CallStatus::Hangup,
                    HangupBy::Remote,
                    HangupReason::Normal,
                );
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        debug!(error = ?e, "call action not applied");
    }
}
