//! Calls: one fork engine ([`groupcall::Fork`]) per inbound call, driving the
//! B2BUA's legs ([`b2bua::CallManager`]); leg events go back into the fork,
//! fork actions become SIP, record changes go to the store. Carrier failover
//! for `tel` legs lives here too: a leg that gets no answer from a carrier,
//! 408 or 5xx is re-dialed to the next carrier before the fork hears of it.

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

struct Served {
    fork: Fork,
    to_leg: HashMap<LegId, LegRef>,
    from_leg: HashMap<LegRef, LegId>,
    tel: HashMap<LegId, (Vec<CarrierTarget>, usize)>,
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
        Calls { mgr, calls: HashMap::new(), timers: BinaryHeap::new(), fork_cfg, store, locals }
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
                tel: HashMap::new(),
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
                set_inbound(
                    &mut s.inbound,
                    wall,
                    CallStatus::Hangup,
                    HangupBy::Remote,
                    HangupReason::Normal,
                );
                self.store.upsert_call(&s.inbound);
            }
            ev => {
                let Some(leg) = ev.leg() else { return };
                let Some(&id) = s.from_leg.get(&leg) else { return };
                let failover = matches!(ev, CallEvent::LegNoResponse { .. })
                    || matches!(ev, CallEvent::LegFailed { code, .. } if code == 408 || (500..600).contains(&code));
                if failover {
                    if let Some((targets, idx)) = s.tel.get_mut(&id) {
                        if *idx + 1 < targets.len() {
                            *idx += 1;
                            let target = targets[*idx].clone();
                            debug!(carrier = %target.carrier, "carrier failover");
                            let from = s.from.clone();
                            match dial_carrier(
                                &mut self.mgr,
                                tx,
                                at,
                                cref,
                                &target,
                                &from,
                                &self.locals,
                            ) {
                                Ok(new_leg) => {
                                    s.from_leg.insert(new_leg, id);
                                    s.to_leg.insert(id, new_leg);
                                    return;
                                }
                                Err(code) => s.fork.leg_event(now, id, LegEvent::Failed { code }),
                            }
                            self.run_fork(tx, at, wall, cref, routes);
                            return;
                        }
                    }
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
        let Calls { mgr, calls, store, locals, timers, .. } = self;
        let Some(s) = calls.get_mut(&cref) else { return };
        let now = now_of(at, wall);
        while let Some(action) = s.fork.poll_action() {
            apply(mgr, tx, at, wall, cref, s, action, store.as_ref(), locals, routes, now);
        }
        if let Some(t) = s.fork.poll_timeout() {
            timers.push(Reverse((t, cref)));
        }
        if s.fork.is_finished() && s.mgr_ended {
            calls.remove(&cref);
        }
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

fn set_inbound(
    c: &mut Call,
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

/// Where a `sip:` URI is sent: its host must be an IP (DNS is not done yet).
fn sip_next_hop(uri: &str, locals: &[(Transport, SocketAddr)]) -> Option<Peer> {
    let u = Uri::parse(uri.as_bytes()).ok()?;
    let host = std::str::from_utf8(u.host).ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let transport = u.transport().and_then(Transport::from_token).unwrap_or(Transport::Udp);
    let remote = SocketAddr::new(ip, u.port.unwrap_or(5060));
    let local = local_for(locals, transport, remote)?;
    Some(Peer { transport, remote, local, conn: None })
}

fn dial_carrier(
    mgr: &mut CallManager,
    tx: &mut TransactionLayer,
    at: Instant,
    cref: CallRef,
    t: &CarrierTarget,
    from: &str,
    locals: &[(Transport, SocketAddr)],
) -> Result<LegRef, u16> {
    let local = local_for(locals, t.transport, t.address).ok_or(503u16)?;
    let target = DialTarget {
        request_uri: t.request_uri.clone(),
        to: format!("<{}>", t.request_uri),
        from: from.to_owned(),
        next_hop: Peer { transport: t.transport, remote: t.address, local, conn: None },
        credentials: (!t.username.is_empty()).then(|| (t.username.clone(), t.password.clone())),
        extra_headers: t.headers.clone(),
    };
    mgr.dial(tx, at, cref, target).map_err(|e| {
        warn!(error = ?e, "dial to carrier failed");
        500
    })
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
) {
    let leg_ref = |s: &Served, leg: LegId| s.to_leg.get(&leg).copied();
    let result = match action {
        Action::Dial { leg, target, .. } => {
            let dialed = match &target {
                LegTarget::Contact { aor, contact } => match peer_from_key(&contact.binding_key) {
                    Some(next_hop) => mgr
                        .dial(
                            tx,
                            at,
                            cref,
                            DialTarget {
                                request_uri: contact.uri.clone(),
                                to: format!("<sip:{aor}>"),
                                from: s.from.clone(),
                                next_hop,
                                credentials: None,
                                extra_headers: vec![],
                            },
                        )
                        .map_err(|e| {
                            warn!(error = ?e, "dial failed");
                            500
                        }),
                    None => Err(480),
                },
                LegTarget::Sip { uri } => match sip_next_hop(uri, locals) {
                    Some(next_hop) => mgr
                        .dial(
                            tx,
                            at,
                            cref,
                            DialTarget {
                                request_uri: uri.clone(),
                                to: format!("<{uri}>"),
                                from: s.from.clone(),
                                next_hop,
                                credentials: None,
                                extra_headers: vec![],
                            },
                        )
                        .map_err(|e| {
                            warn!(error = ?e, "dial failed");
                            500
                        }),
                    None => {
                        warn!(%uri, "cannot resolve SIP destination (IP addresses only)");
                        Err(503)
                    }
                },
                LegTarget::Tel { number } => {
                    let targets = routes.tel_targets(number);
                    match targets.first() {
                        Some(first) => {
                            let r = dial_carrier(mgr, tx, at, cref, first, &s.from, locals);
                            s.tel.insert(leg, (targets, 0));
                            r
                        }
                        None => Err(404),
                    }
                }
            };
            match dialed {
                Ok(lr) => {
                    s.to_leg.insert(leg, lr);
                    s.from_leg.insert(lr, leg);
                }
                Err(code) => s.fork.leg_event(now, leg, LegEvent::Failed { code }),
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
            set_inbound(
                &mut s.inbound,
                wall,
                CallStatus::Ringing,
                HangupBy::None,
                HangupReason::None,
            );
            store.upsert_call(&s.inbound);
            mgr.ring_caller(tx, at, cref)
        }
        Action::RelayEarlyMedia { leg } => match leg_ref(s, leg) {
            Some(lr) => {
                set_inbound(
                    &mut s.inbound,
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
                set_inbound(
                    &mut s.inbound,
                    wall,
                    CallStatus::Progressing,
                    HangupBy::None,
                    HangupReason::None,
                );
                store.upsert_call(&s.inbound);
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
            set_inbound(&mut s.inbound, wall, CallStatus::Hangup, by, reason);
            store.upsert_call(&s.inbound);
            mgr.reject_caller(tx, at, cref, code)
        }
        Action::ByeCaller => {
            set_inbound(
                &mut s.inbound,
                wall,
                CallStatus::Hangup,
                HangupBy::Local,
                HangupReason::Normal,
            );
            store.upsert_call(&s.inbound);
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
                set_inbound(
                    &mut s.inbound,
                    wall,
                    CallStatus::Hangup,
                    HangupBy::Remote,
                    HangupReason::Normal,
                );
                store.upsert_call(&s.inbound);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        debug!(error = ?e, "call action not applied");
    }
}
