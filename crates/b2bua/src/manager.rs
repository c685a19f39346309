//! [`CallManager`]: every call of a process (or shard), its indexes and
//! its timers (a [`TimerQueue`] of its own when it runs alone, or its
//! owner's one queue when embedded in the switch core).

use crate::dialog::{self, Dialog};
use crate::env::{after, Env};
use crate::state::{
    Call, Caller, CallerState, Origin, Orphan, Owner, Reliable, Role, Side, Stored, MAX_FORKS,
};
use crate::Stateless;
use crate::{B2buaConfig, B2buaError, CallEvent, CallRef, DialTarget, LegRef, LocalContact};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use sip_message::{HeaderName, Message, Method, Peer};
use sip_transaction::{Event, TransactionLayer, TxKey, TxState};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use timer_queue::TimerQueue;

/// Where the calls' timers live.
#[derive(Debug)]
enum Schedule {
    /// A queue of its own: `handle_timeout` at `poll_timeout`.
    Own(TimerQueue<Instant, CallRef>),
    /// The owner's queue: new deadlines from `poll_timer`, fired by
    /// `handle_call_timer`.
    Owner(VecDeque<(Instant, CallRef)>),
}

/// Every B2BUA call of a process or shard, as one sans-IO state machine.
///
/// Feed it the transaction layer's events ([`CallManager::handle_event`])
/// and the time ([`CallManager::handle_timeout`] at
/// [`CallManager::poll_timeout`]); give it the fork engine's decisions
/// ([`CallManager::dial`], [`CallManager::cancel_leg`],
/// [`CallManager::answer_caller`], ...). After every call, send
/// [`CallManager::poll_stateless`] messages *before* the transaction
/// layer's `poll_transmit` ones (an ACK must precede the BYE that follows
/// it), and read [`CallManager::poll_event`].
///
/// Timers: made with [`CallManager::new`] it keeps its own queue (call
/// [`CallManager::handle_timeout`] at [`CallManager::poll_timeout`]); made
/// with [`CallManager::with_owner_timers`] it hands every new deadline of a
/// call to its owner ([`CallManager::poll_timer`]) and the owner calls
/// [`CallManager::handle_call_timer`] when it is due.
///
/// ```
/// use b2bua::{B2buaConfig, CallManager};
/// let cm = CallManager::new(B2buaConfig::default(), Vec::new(), 7);
/// assert!(cm.is_empty() && cm.poll_timeout().is_none());
/// ```
pub struct CallManager {
    env: Env,
    /// Keyed by our own handles: a fast hash, no need to resist flooding.
    calls: FxHashMap<CallRef, Call>,
    schedule: Schedule,
    next_call: u64,
}

impl std::fmt::Debug for CallManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallManager")
            .field("calls", &self.calls.len())
            .field("owned_transactions", &self.env.owned.len())
            .finish_non_exhaustive()
    }
}

impl CallManager {
    /// A manager with no calls and a timer queue of its own. `locals` gives
    /// our address per transport (Via sent-by and Contact); without one, a
    /// message's local socket address is used. Tags, Call-IDs and RSeq
    /// numbers come from a generator seeded with `seed` (a process gives a
    /// fresh one from the OS; a test a fixed one, and replays exactly).
    pub fn new(cfg: B2buaConfig, locals: Vec<LocalContact>, seed: u64) -> Self {
        Self::with_schedule(cfg, locals, seed, Schedule::Own(TimerQueue::new()))
    }

    /// Like [`CallManager::new`], with the timers in the owner's queue.
    pub fn with_owner_timers(cfg: B2buaConfig, locals: Vec<LocalContact>, seed: u64) -> Self {
        Self::with_schedule(cfg, locals, seed, Schedule::Owner(VecDeque::new()))
    }

    fn with_schedule(
        cfg: B2buaConfig,
        locals: Vec<LocalContact>,
        seed: u64,
        schedule: Schedule,
    ) -> Self {
        CallManager {
            env: Env {
                allow: Bytes::from(sip_message::method::allow()),
                cfg,
                locals,
                rng: StdRng::seed_from_u64(seed),
                owned: FxHashMap::default(),
                dialogs: HashMap::new(),
                events: VecDeque::new(),
                stateless: VecDeque::new(),
                notices: VecDeque::new(),
            },
            calls: FxHashMap::default(),
            schedule,
            next_call: 1,
        }
    }

    /// Takes the caller's INVITE (an [`Event::NewRequest`] the server
    /// decided to serve as a call) and its server transaction. Nothing is
    /// sent: the transaction layer sends 100 Trying by itself.
    pub fn accept_inbound(&mut self, key: TxKey, invite: Message, peer: Peer) -> CallRef {
        let id = CallRef(self.next_call);
        self.next_call += 1;
        let env = &mut self.env;
        let local_tag = env.token(10);
        let to = invite.header_bytes(HeaderName::To).unwrap_or_default();
        let remote_target = dialog::contact_uri(&invite)
            .or_else(|| invite.from_header().ok().map(|f| Bytes::copy_from_slice(f.uri.raw)))
            .unwrap_or_else(|| Bytes::from(format!("sip:{}", peer.remote)));
        let d = Dialog {
            call_id: invite.header_bytes(HeaderName::CallId).unwrap_or_default(),
            local_tag: local_tag.clone(),
            remote_tag: Bytes::copy_from_slice(invite.from_tag().unwrap_or_default()),
            local: dialog::with_tag(&to, &local_tag),
            remote: invite.header_bytes(HeaderName::From).unwrap_or_default(),
            local_seq: 0,
            remote_seq: invite.cseq().ok().map(|c| c.seq),
            remote_target,
            route_set: dialog::record_route(&invite, false),
            peer,
        };
        let reliable = invite.requires("100rel")
            || (env.cfg.send_100rel_to_caller && invite.supports("100rel"));
        let rel = reliable.then(|| Reliable {
            next_rseq: env.rng.gen_range(1..=1_000_000),
            unacked: None,
            queue: VecDeque::new(),
        });
        env.index_dialog(&d.call_id, &d.local_tag, id, Side::Caller);
        let caller = Caller {
            key,
            offer: env.cfg.limits.body(&invite),
            max_forwards: invite.max_forwards().ok().flatten(),
            invite,
            peer,
            dialog: d,
            state: CallerState::Proceeding,
            ended: false,
            bye_key: None,
            bye_wanted: false,
            pending: None,
            rel,
            held_final: None,
        };
        let mut call = Call {
            id,
            origin: Origin::Inbound,
            caller,
            legs: Vec::new(),
            bridged: None,
            relays: Vec::new(),
            keys: Vec::new(),
            sched: None,
        };
        env.own(&mut call, key, Role::CallerInvite);
        self.calls.insert(id, call);
        id
    }

    /// Starts a call by calling the source first (RFC 3725 flow I,
    /// click-to-call): an INVITE without an offer to `source`, which
    /// becomes leg 0 of a new call and stands for its caller. Its events
    /// are leg events of leg 0; when it answers ([`CallEvent::LegAnswered`]),
    /// its offer ([`CallManager::has_offer`]) goes in the INVITE of every leg
    /// dialed after, and its ACK waits: [`CallManager::answer_caller`] sends
    /// it with the answer of the leg bridged to the source;
    /// [`CallManager::reject_caller`] and [`CallManager::bye_caller`] hang
    /// the source up.
    pub fn originate(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        source: DialTarget,
    ) -> Result<(CallRef, LegRef), B2buaError> {
        let id = CallRef(self.next_call);
        let peer = source.next_hop;
        let stand_in = Dialog {
            call_id: Bytes::new(),
            local_tag: Bytes::new(),
            remote_tag: Bytes::new(),
            local: Bytes::new(),
            remote: Bytes::new(),
            local_seq: 0,
            remote_seq: None,
            remote_target: Bytes::new(),
            route_set: Vec::new(),
            peer,
        };
        let placeholder =
            Message::request(Method::Invite, Bytes::from(source.request_uri.clone())).build();
        let caller = Caller {
            key: TxKey::from_bits(u64::MAX),
            offer: None,
            max_forwards: None,
            invite: placeholder,
            peer,
            dialog: stand_in,
            state: CallerState::Proceeding,
            ended: false,
            bye_key: None,
            bye_wanted: false,
            pending: None,
            rel: None,
            held_final: None,
        };
        let mut call = Call {
            id,
            origin: Origin::Source(0),
            caller,
            legs: Vec::new(),
            bridged: None,
            relays: Vec::new(),
            keys: Vec::new(),
            sched: None,
        };
        let leg = self.env.dial(tx, now, &mut call, source)?;
        if let Some(inv) = call.legs.first() {
            call.caller.invite = inv.invite.clone();
            call.caller.key = inv.invite_key;
        }
        self.next_call += 1;
        self.calls.insert(id, call);
        self.settle(id);
        Ok((id, leg))
    }

    /// `true` once the caller side has an offer for the legs: an inbound
    /// caller's INVITE body, or the answered source's 2xx body.
    pub fn has_offer(&self, call: CallRef) -> bool {
        self.calls.get(&call).is_some_and(|c| c.caller.offer.is_some())
    }

    /// Dials a leg: a new dialog (Call-ID, tags, CSeq, Via, Contact of our
    /// own), the caller's SDP shared. Only before the caller's final
    /// response.
    pub fn dial(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        target: DialTarget,
    ) -> Result<LegRef, B2buaError> {
        self.with_call(call, |env, c| env.dial(tx, now, c, target))
    }

    /// CANCELs a leg, with `reason` as the whole Reason header value
    /// (RFC 3326), e.g. `SIP;cause=200;text="Call completed elsewhere"`.
    /// Before any provisional response the CANCEL waits for the first one
    /// (RFC 3261 9.1). After a final response there is nothing to cancel:
    /// a 2xx was (or will be) reported as [`CallEvent::LegAnswered`], and
    /// the caller of this API decides with [`CallManager::ack_and_bye`].
    /// With no final 64*T1 after the CANCEL the INVITE is given up
    /// ([`CallEvent::LegNoResponse`]).
    pub fn cancel_leg(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        leg: LegRef,
        reason: Option<&str>,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| env.cancel_leg(tx, now, c, leg.0, reason))
    }

    /// An answered leg that must not become the answer: its ACK (sent at
    /// once, or now when a delayed offer held it), then a BYE.
    /// [`CallEvent::LegEnded`] follows. Idempotent.
    pub fn ack_and_bye(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        leg: LegRef,
    ) -> Result<(), B2buaError> {
        self.bye_leg(tx, now, call, leg)
    }

    /// BYE to an answered leg (its held ACK first, if any).
    /// [`CallEvent::LegEnded`] follows. Idempotent; it does not touch the
    /// caller.
    pub fn bye_leg(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        leg: LegRef,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| {
            let l = c.legs.get(leg.0 as usize).ok_or(B2buaError::UnknownLeg)?;
            if !l.answered() {
                return Err(B2buaError::InvalidState("the leg is not answered"));
            }
            env.bye_side(tx, now, c, Side::Leg(leg.0));
            Ok(())
        })
    }

    /// 180 Ringing to the caller (reliable with RFC 3262 in use).
    pub fn ring_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| match c.origin {
            Origin::Inbound => env.caller_provisional(tx, now, c, 180, None),
            // The source answered already: nothing to tell it.
            Origin::Source(_) => Ok(()),
        })
    }

    /// 183 Session Progress to the caller with the leg's early SDP.
    pub fn early_media_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        leg: LegRef,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| {
            if matches!(c.origin, Origin::Source(_)) {
                return Ok(());
            }
            let l = c.legs.get(leg.0 as usize).ok_or(B2buaError::UnknownLeg)?;
            let sdp = l.early_sdp.clone();
            if sdp.is_none() {
                return Err(B2buaError::InvalidState("the leg sent no early SDP"));
            }
            env.caller_provisional(tx, now, c, 183, sdp)
        })
    }

    /// 200 OK to the caller with the leg's SDP and our Contact: the caller
    /// and the leg are bridged. The 2xx is retransmitted until the caller's
    /// ACK; without one in 64*T1 both sides get a BYE
    /// ([`CallEvent::CallerNoAck`]).
    pub fn answer_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        leg: LegRef,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| env.answer_caller(tx, now, c, leg.0))
    }

    /// A final failure (300-699) to the caller.
    pub fn reject_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        code: u16,
    ) -> Result<(), B2buaError> {
        if !(300..=699).contains(&code) {
            return Err(B2buaError::BadStatus(code));
        }
        self.with_call(call, |env, c| {
            if c.caller.state != CallerState::Proceeding {
                return Err(B2buaError::InvalidState("the caller already has a final response"));
            }
            match c.origin {
                Origin::Inbound => env.close_caller(tx, now, c, code),
                Origin::Source(s) => env.hang_up_source(tx, now, c, s),
            }
            Ok(())
        })
    }

    /// BYE to the caller after the answer (sent once our 2xx is ACKed).
    /// Before the answer the caller gets a 480 instead. Idempotent; it does
    /// not touch the legs.
    pub fn bye_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
    ) -> Result<(), B2buaError> {
        self.with_call(call, |env, c| {
            match (c.origin, c.caller.state) {
                (Origin::Source(s), CallerState::Proceeding | CallerState::Answered) => {
                    env.hang_up_source(tx, now, c, s)
                }
                (_, CallerState::Proceeding) => env.close_caller(tx, now, c, 480),
                (_, CallerState::Answered) => env.bye_side(tx, now, c, Side::Caller),
                (_, CallerState::Closed) => {}
            }
            Ok(())
        })
    }

    /// Takes a transaction event. Events that belong to calls are consumed
    /// (`None`): responses of our client transactions, the CANCEL of a
    /// caller's INVITE, requests with a To tag (in-dialog; unknown dialogs
    /// get a 481), ACKs and 2xx that come as [`Event::Stray`], timeouts,
    /// transport errors and terminations of our transactions. Every other
    /// event is given back: a new request outside any dialog, a CANCEL of
    /// something else, strays that match no call.
    pub fn handle_event(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        ev: Event,
    ) -> Option<Event> {
        match ev {
            Event::NewRequest { key, request, peer } => {
                let Some(tag) = request.to_tag() else {
                    return Some(Event::NewRequest { key, request, peer });
                };
                let found = request.call_id().ok().and_then(|cid| self.find_dialog(cid, tag));
                match found {
                    Some((c, side)) => {
                        if let Some(call) = self.calls.get_mut(&c) {
                            self.env.in_dialog(tx, now, call, side, key, request, peer);
                        }
                        self.settle(c);
                    }
                    None => self.env.reply(tx, now, key, &request, 481),
                }
                None
            }
            Event::Cancel { key, request, peer, cancels } => {
                let c = match cancels.and_then(|k| self.env.owned.get(&k)) {
                    Some(Owner::Call(c, Role::CallerInvite)) => *c,
                    _ => return Some(Event::Cancel { key, request, peer, cancels }),
                };
                if let Some(call) = self.calls.get_mut(&c) {
                    self.env.caller_cancel(tx, now, call, key, &request);
                }
                self.settle(c);
                None
            }
            Event::Response { key, response } => {
                let (c, role) = match self.env.owned.get(&key) {
                    None => return Some(Event::Response { key, response }),
                    Some(Owner::Detached) => return None,
                    Some(Owner::Orphan(_)) => {
                        self.orphan_2xx(tx, now, key, &response);
                        return None;
                    }
                    Some(Owner::Call(c, role)) => (*c, *role),
                };
                if let Some(call) = self.calls.get_mut(&c) {
                    let env = &mut self.env;
                    match role {
                        Role::LegInvite(l) => env.leg_response(tx, now, call, l, &response),
                        Role::Bye(side) => {
                            if response.status().is_some_and(|s| s >= 200) {
                                env.bye_done(call, side, key);
                            }
                        }
                        Role::RelayClient => env.relay_response(tx, now, call, key, &response),
                        Role::CallerInvite | Role::RelayServer => {}
                    }
                }
                self.settle(c);
                None
            }
            Event::Stray { message, peer } => self.stray(tx, now, message, peer),
            Event::Timeout { key } | Event::TransportError { key } => {
                let (c, role) = match self.env.owned.get(&key) {
                    None => return Some(ev),
                    Some(Owner::Call(c, role)) => (*c, *role),
                    Some(_) => return None,
                };
                let timeout = matches!(ev, Event::Timeout { .. });
                if let Some(call) = self.calls.get_mut(&c) {
                    let env = &mut self.env;
                    match role {
                        Role::CallerInvite => {
                            // Timer H (no ACK for a failure) needs nothing.
                            let early = call.caller.state == CallerState::Proceeding
                                || call.caller.held_final.is_some();
                            if !timeout && early {
                                env.caller_lost(tx, now, call, None, false);
                            }
                        }
                        Role::LegInvite(l) if call.is_leg_invite(l, key) => {
                            env.leg_gave_up(call, l)
                        }
                        // A challenged INVITE, superseded by the one sent
                        // with credentials.
                        Role::LegInvite(_) => {}
                        Role::Bye(side) => env.bye_done(call, side, key),
                        Role::RelayClient => env.relay_failed(tx, now, call, key, true),
                        Role::RelayServer => {}
                    }
                }
                self.settle(c);
                None
            }
            Event::Terminated { key } => {
                let (c, role) = match self.env.owned.remove(&key) {
                    None => return Some(ev),
                    Some(Owner::Call(c, role)) => (c, role),
                    Some(_) => return None,
                };
                if let Some(call) = self.calls.get_mut(&c) {
                    call.keys.retain(|k| *k != key);
                    let env = &mut self.env;
                    match role {
                        Role::LegInvite(l) if call.is_leg_invite(l, key) => {
                            env.leg_gave_up(call, l)
                        }
                        Role::LegInvite(_) => {}
                        Role::Bye(side) => env.bye_done(call, side, key),
                        Role::RelayClient => env.relay_terminated(tx, now, call, key),
                        Role::CallerInvite | Role::RelayServer => {}
                    }
                }
                self.settle(c);
                None
            }
        }
    }

    /// Runs the timers due at `now`: 2xx and reliable provisional
    /// retransmissions, the ACK and PRACK give-ups, the CANCEL give-up (a
    /// manager made with [`CallManager::new`]; otherwise nothing).
    pub fn handle_timeout(&mut self, tx: &mut TransactionLayer, now: Instant) {
        loop {
            let Schedule::Own(q) = &mut self.schedule else { return };
            let Some((due, c)) = q.pop_due(now) else { break };
            self.fire(tx, now, c, due);
        }
        self.prune();
    }

    /// Runs the timers of `call` due at `now` (with owner timers, when the
    /// owner's queue reaches a deadline [`CallManager::poll_timer`] gave).
    /// A stale deadline does nothing.
    pub fn handle_call_timer(&mut self, tx: &mut TransactionLayer, now: Instant, call: CallRef) {
        let due = match self.calls.get(&call).and_then(|c| c.sched) {
            Some(d) if d <= now => d,
            _ => return,
        };
        self.fire(tx, now, call, due);
    }

    fn fire(&mut self, tx: &mut TransactionLayer, now: Instant, c: CallRef, due: Instant) {
        let Some(call) = self.calls.get_mut(&c) else { return };
        if call.sched != Some(due) {
            return;
        }
        call.sched = None;
        self.env.call_timers(tx, now, call);
        self.settle(c);
    }

    /// The earliest deadline: call [`CallManager::handle_timeout`] then.
    /// Always `None` with owner timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.schedule {
            Schedule::Own(q) => q.peek().map(|(t, _)| t),
            Schedule::Owner(_) => None,
        }
    }

    /// With owner timers: the next new deadline of a call, to file in the
    /// owner's queue (an earlier one of the same call becomes stale).
    pub fn poll_timer(&mut self) -> Option<(Instant, CallRef)> {
        match &mut self.schedule {
            Schedule::Owner(q) => q.pop_front(),
            Schedule::Own(_) => None,
        }
    }

    /// `true` when `at` is `call`'s current deadline.
    pub fn timer_is_current(&self, at: Instant, call: CallRef) -> bool {
        self.calls.get(&call).is_some_and(|c| c.sched == Some(at))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.env.events.pop_front()
    }

    /// The next message to send outside any transaction.
    pub fn poll_stateless(&mut self) -> Option<Stateless> {
        self.env.stateless.pop_front()
    }

    /// The next value found beyond the copy limits in a relayed message
    /// (refused or trimmed), for the owner's log.
    pub fn poll_notice(&mut self) -> Option<crate::limits::Notice> {
        self.env.notices.pop_front()
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// `true` when no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The SIP Call-ID of a leg's dialog.
    pub fn leg_sip_call_id(&self, call: CallRef, leg: LegRef) -> Option<&str> {
        let l = self.calls.get(&call)?.legs.get(leg.0 as usize)?;
        std::str::from_utf8(&l.call_id).ok()
    }

    /// The SIP Call-ID of the caller's dialog.
    pub fn caller_sip_call_id(&self, call: CallRef) -> Option<&str> {
        std::str::from_utf8(&self.calls.get(&call)?.caller.dialog.call_id).ok()
    }

    // ----- internals --------------------------------------------------------

    fn with_call<R>(
        &mut self,
        call: CallRef,
        f: impl FnOnce(&mut Env, &mut Call) -> Result<R, B2buaError>,
    ) -> Result<R, B2buaError> {
        let c = self.calls.get_mut(&call).ok_or(B2buaError::UnknownCall)?;
        let r = f(&mut self.env, c);
        self.settle(call);
        r
    }

    fn find_dialog(&self, call_id: &[u8], local_tag: &[u8]) -> Option<(CallRef, Side)> {
        let k = dialog::dialog_key(call_id, local_tag);
        self.env.dialogs.get(k.as_slice()).copied()
    }

    /// ACKs (for 2xx) and 2xx responses to INVITE outside transactions.
    fn stray(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        message: Message,
        peer: Peer,
    ) -> Option<Event> {
        let give_back = |message, peer| Some(Event::Stray { message, peer });
        let Ok(cid) = message.call_id() else { return give_back(message, peer) };
        if message.method() == Some(&Method::Ack) {
            let Some((c, side)) = message.to_tag().and_then(|t| self.find_dialog(cid, t)) else {
                return give_back(message, peer);
            };
            if let Some(call) = self.calls.get_mut(&c) {
                let remote_ok = call
                    .dialog_mut(side)
                    .is_some_and(|d| d.remote_tag == message.from_tag().unwrap_or_default());
                if remote_ok {
                    self.env.side_ack(tx, now, call, side, &message);
                }
            }
            self.settle(c);
            return None;
        }
        let is_2xx_invite = message.status().is_some_and(|s| (200..300).contains(&s))
            && message.cseq().is_ok_and(|c| c.method == Method::Invite);
        if !is_2xx_invite {
            return give_back(message, peer);
        }
        match message.from_tag().and_then(|t| self.find_dialog(cid, t)) {
            Some((c, Side::Leg(l))) => {
                if let Some(call) = self.calls.get_mut(&c) {
                    self.env.leg_2xx(tx, now, call, l, &message);
                    // The answer came past the leg's INVITE transaction (its
                    // Via matched none): that transaction will never see a
                    // final response now and, proceeding, has no timer to
                    // end it. It ends here (found by fuzzing).
                    let answered = call.legs.get(l as usize).filter(|leg| leg.dialog.is_some());
                    let key = answered.map(|leg| leg.invite_key);
                    let pending = key
                        .and_then(|k| tx.state(k))
                        .is_some_and(|s| matches!(s, TxState::Calling | TxState::Proceeding));
                    if let (Some(key), true) = (key, pending) {
                        tx.terminate(key);
                        self.env.owned.remove(&key);
                        call.keys.retain(|k| *k != key);
                    }
                }
                self.settle(c);
                None
            }
            _ => give_back(message, peer),
        }
    }

    /// A 2xx on the INVITE transaction of a leg whose call ended.
    fn orphan_2xx(&mut self, tx: &mut TransactionLayer, now: Instant, key: TxKey, resp: &Message) {
        if !resp.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(Owner::Orphan(mut o)) = self.env.owned.remove(&key) else { return };
        let tag = resp.to_tag().unwrap_or_default();
        if let Some((_, ack)) = o.acks.iter().find(|(t, _)| t == tag) {
            self.env.send_stateless(ack);
        } else if o.acks.len() <= MAX_FORKS {
            let ack = self.env.kill_fork(tx, now, &o.dialog, o.invite_seq, o.invite_seq, resp);
            o.acks.push((Bytes::copy_from_slice(tag), ack));
        }
        self.env.owned.insert(key, Owner::Orphan(o));
    }

    /// After any change to a call: ends it when nothing is left, else
    /// reschedules its timer.
    fn settle(&mut self, id: CallRef) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.done() {
            if let Some(call) = self.calls.remove(&id) {
                self.env.retire(call);
            }
            self.env.emit(CallEvent::CallEnded { call: id });
        } else {
            let next = call.next_deadline();
            if next != call.sched {
                call.sched = next;
                if let Some(t) = next {
                    match &mut self.schedule {
                        Schedule::Own(q) => q.push(t, id),
                        Schedule::Owner(q) => q.push_back((t, id)),
                    }
                }
            }
        }
        self.prune();
    }

    /// Keeps an own queue exact at the top and free of bloat.
    fn prune(&mut self) {
        if let Schedule::Own(q) = &mut self.schedule {
            let calls = &self.calls;
            let current =
                |t: Instant, c: CallRef| calls.get(&c).is_some_and(|c| c.sched == Some(t));
            q.prune(current);
            q.purge_if_bloated(calls.len(), current);
        }
    }
}

impl Env {
    /// Forgets an ended call: its dialogs leave the index, its live
    /// transactions become detached (or orphans, for answered legs' INVITEs).
    fn retire(&mut self, call: Call) {
        let c = &call.caller.dialog;
        self.dialogs.remove(dialog::dialog_key(&c.call_id, &c.local_tag).as_slice());
        for leg in &call.legs {
            self.dialogs.remove(dialog::dialog_key(&leg.call_id, &leg.local_tag).as_slice());
        }
        for key in call.keys {
            let Some(Owner::Call(_, role)) = self.owned.get(&key) else { continue };
            let owner = match *role {
                Role::LegInvite(l) => match call.legs.get(l as usize) {
                    Some(leg) if leg.dialog.is_some() => {
                        let mut acks: Vec<(Bytes, Stored)> = leg.forks.clone();
                        if let (Some(d), Some(ack)) = (&leg.dialog, &leg.ack) {
                            acks.push((d.remote_tag.clone(), ack.clone()));
                        }
                        Owner::Orphan(Box::new(Orphan {
                            dialog: leg.template(),
                            invite_seq: leg.invite_seq,
                            acks,
                        }))
                    }
                    _ => Owner::Detached,
                },
                _ => Owner::Detached,
            };
            self.owned.insert(key, owner);
        }
    }

    /// Every timer of a call due at `now`.
    fn call_timers(&mut self, tx: &mut TransactionLayer, now: Instant, call: &mut Call) {
        self.pending_timer(tx, now, call, Side::Caller);
        for l in 0..call.legs.len() as u32 {
            self.pending_timer(tx, now, call, Side::Leg(l));
        }
        self.reliable_timer(tx, now, call);
        self.leg_timers(tx, now, call);
    }

    /// 2xx retransmission (T1 doubling up to T2) and the 64*T1 ACK give-up.
    fn pending_timer(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
    ) {
        let t2 = self.cfg.t2;
        let Some(slot) = call.pending_mut(side) else { return };
        let Some(p) = slot.as_mut() else { return };
        if p.give_up <= now {
            let hold = slot.take().and_then(|p| p.hold);
            if let Some(h) = hold {
                self.release_held(tx, call, h, None);
            }
            self.no_ack(tx, now, call, side);
            return;
        }
        if let Some(next) = p.next.filter(|n| *n <= now) {
            self.stateless.push_back(Stateless { peer: p.peer, message: p.response.clone() });
            p.interval = p.interval.saturating_mul(2).min(t2);
            let mut n = after(next, p.interval);
            if n <= now {
                n = after(now, p.interval);
            }
            p.next = Some(n);
        }
    }

    /// A side never ACKed our 2xx: both sides get a BYE.
    fn no_ack(&mut self, tx: &mut TransactionLayer, now: Instant, call: &mut Call, side: Side) {
        let id = call.id;
        match side {
            Side::Caller => {
                if call.caller.state != CallerState::Answered || call.caller.bye_key.is_some() {
                    return;
                }
                let was_up = !call.caller.ended;
                call.caller.ended = false;
                call.caller.bye_wanted = true;
                self.bye_side(tx, now, call, Side::Caller);
                if was_up {
                    self.emit(CallEvent::CallerNoAck { call: id });
                    if let Some(b) = call.bridged {
                        self.bye_side(tx, now, call, Side::Leg(b));
                    }
                }
            }
            Side::Leg(_) => {
                self.bye_side(tx, now, call, side);
                if let Some(o) = call.other(side) {
                    self.bye_side(tx, now, call, o);
                }
            }
        }
    }

    /// Reliable provisional retransmission (T1 doubling) and the 64*T1
    /// PRACK give-up (RFC 3262 3: the INVITE gets a 5xx).
    fn reliable_timer(&mut self, tx: &mut TransactionLayer, now: Instant, call: &mut Call) {
        let key = call.caller.key;
        let Some(u) = call.caller.rel.as_mut().and_then(|r| r.unacked.as_mut()) else { return };
        if u.give_up <= now {
            let no_ack = call.caller.held_final.is_some();
            self.caller_lost(tx, now, call, Some(500), no_ack);
            return;
        }
        if let Some(next) = u.next.filter(|n| *n <= now) {
            let _ = tx.send_response(now, key, u.response.clone());
            u.interval = u.interval.saturating_mul(2);
            let mut n = after(next, u.interval);
            if n <= now {
                n = after(now, u.interval);
            }
            u.next = Some(n);
        }
    }
}
