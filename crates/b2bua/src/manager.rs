//! [`CallManager`]: every call of a process (or shard), its indexes and
//! its timers (a [`TimerQueue`] of its own when it runs alone, or its
//! owner's one queue when embedded in the switch core), and the calls the
//! fork engine's decisions are made on. Transaction events come in through
//! `events.rs`.

use crate::caller_state::{Caller, InboundInvite, Offer, Reliable};
use crate::dialog::{Body, Dialog};
use crate::index::CallIndex;
use crate::settings::{Settings, Tokens};
use crate::state::{Call, Origin, Role, Side};
use crate::turn::{CallTurn, Outputs, Wire};
use crate::LocalContact;
use crate::{limits::Notice, Stateless};
use crate::{
    B2buaConfig, B2buaError, CallEvent, CallRef, CallerMedia, DialTarget, EarlyDialog, LegRef,
    RelayRef,
};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use sip_message::{Message, Method, Peer};
use sip_transaction::{TransactionLayer, TxKey};
use std::collections::VecDeque;
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
    settings: Settings,
    tokens: Tokens,
    pub(crate) index: CallIndex,
    out: Outputs,
    /// Keyed by our own handles: a fast hash, no need to resist flooding.
    calls: FxHashMap<CallRef, Call>,
    schedule: Schedule,
    next_call: u64,
}

impl std::fmt::Debug for CallManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallManager")
            .field("calls", &self.calls.len())
            .field("owned_transactions", &self.index.owned())
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
        Self::with_schedule(Settings::new(cfg, locals), seed, Schedule::Own(TimerQueue::new()))
    }

    /// Like [`CallManager::new`], with the timers in the owner's queue.
    pub fn with_owner_timers(cfg: B2buaConfig, locals: Vec<LocalContact>, seed: u64) -> Self {
        Self::with_schedule(Settings::new(cfg, locals), seed, Schedule::Owner(VecDeque::new()))
    }

    fn with_schedule(settings: Settings, seed: u64, schedule: Schedule) -> Self {
        CallManager {
            settings,
            tokens: Tokens::seeded(seed),
            index: CallIndex::default(),
            out: Outputs::default(),
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
        let local_tag = self.tokens.token(10);
        let d = Dialog::uas(&invite, local_tag, peer);
        let cfg = &self.settings.cfg;
        let reliable =
            invite.requires("100rel") || (cfg.send_100rel_to_caller && invite.supports("100rel"));
        let rel = reliable.then(|| Reliable {
            next_rseq: self.tokens.first_rseq(),
            unacked: None,
            queue: VecDeque::new(),
        });
        self.index.add_dialog(&d.call_id, &d.local_tag, id, Side::Caller);
        let offer = cfg.limits.body(&invite).into();
        let max_forwards = invite.max_forwards().ok().flatten();
        let invite = InboundInvite { request: invite, max_forwards, rel };
        let mut call =
            Call::new(id, Origin::Inbound, Caller::proceeding(key, peer, d, offer, invite));
        self.index.own(&mut call, key, Role::CallerInvite);
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
        let invite = InboundInvite { request: placeholder, max_forwards: None, rel: None };
        let no_key = TxKey::from_bits(u64::MAX);
        let caller = Caller::proceeding(no_key, peer, stand_in, Offer::Delayed, invite);
        let mut call = Call::new(id, Origin::Source(0), caller);
        let (_, wire) = self.split(tx, now);
        let leg = CallTurn { call: &mut call, wire }.dial(source)?;
        // The source stands for the caller: its INVITE is the caller's.
        if let Some(src) = call.legs.first() {
            let (request, key) = (src.inviting().map(|i| i.request.clone()), src.invite_key());
            if let (Some(invite), Some(request)) = (call.caller.invite_mut(), request) {
                invite.request = request;
            }
            call.caller.key = key;
        }
        self.next_call += 1;
        self.calls.insert(id, call);
        self.settle(id);
        Ok((id, leg))
    }

    /// `true` once the caller side has an offer for the legs: an inbound
    /// caller's INVITE body, or the answered source's 2xx body.
    pub fn has_offer(&self, call: CallRef) -> bool {
        self.calls.get(&call).is_some_and(|c| !matches!(c.caller.offer, Offer::Delayed))
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
        self.with_call(tx, now, call, |t| t.dial(target))
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
        self.with_call(tx, now, call, |t| t.cancel_leg(leg.0, reason))
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
        self.with_call(tx, now, call, |t| {
            let l = t.call.leg(leg.0).ok_or(B2buaError::UnknownLeg)?;
            if l.answered().is_none() {
                return Err(B2buaError::InvalidState("the leg is not answered"));
            }
            t.bye_side(Side::Leg(leg.0));
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
        self.with_call(tx, now, call, |t| match t.call.origin {
            Origin::Inbound => t.caller_provisional(180, None),
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
        self.with_call(tx, now, call, |t| {
            if matches!(t.call.origin, Origin::Source(_)) {
                return Ok(());
            }
            let l = t.call.leg(leg.0).ok_or(B2buaError::UnknownLeg)?;
            let sdp = l.inviting().and_then(|i| i.early_sdp.clone());
            if sdp.is_none() {
                return Err(B2buaError::InvalidState("the leg sent no early SDP"));
            }
            t.caller_provisional(183, sdp)
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
        self.with_call(tx, now, call, |t| t.answer_caller(leg.0))
    }

    /// A phone picks up ringing call `call` (group, directed or `Replaces`
    /// pickup): its INVITE becomes a new leg, answered at once with a 200
    /// carrying the caller's offer (see `pickup.rs`). Then answer the
    /// caller with that leg ([`CallManager::answer_caller`]) and cancel the
    /// others. `Err` (the call is not ringing, [`B2buaError::NoOffer`]...)
    /// leaves the INVITE unanswered: the owner answers it.
    pub fn pick_up(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        picker: &crate::PickupInvite,
    ) -> Result<LegRef, B2buaError> {
        self.with_call(tx, now, call, |t| t.pick_up(picker))
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
        self.with_call(tx, now, call, |t| {
            if !t.call.caller.is_proceeding() {
                return Err(B2buaError::InvalidState("the caller already has a final response"));
            }
            match t.call.origin {
                Origin::Inbound => t.close_caller(code),
                Origin::Source(s) => t.hang_up_source(s),
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
        self.with_call(tx, now, call, |t| {
            let (proceeding, answered) =
                (t.call.caller.is_proceeding(), t.call.caller.is_answered());
            match t.call.origin {
                Origin::Source(s) if proceeding || answered => t.hang_up_source(s),
                _ if proceeding => t.close_caller(480),
                _ if answered => t.bye_side(Side::Caller),
                _ => {}
            }
            Ok(())
        })
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
        self.on_call(tx, now, c, |t| t.run_timers());
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
        self.out.events.pop_front()
    }

    /// The next message to send outside any transaction.
    pub fn poll_stateless(&mut self) -> Option<Stateless> {
        self.out.stateless.pop_front()
    }

    /// The next value found beyond the copy limits in a relayed message
    /// (refused or trimmed), for the owner's log.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.out.notices.pop_front()
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
        let l = self.calls.get(&call)?.leg(leg.0)?;
        std::str::from_utf8(&l.template().call_id).ok()
    }

    /// The first early dialog of a leg still ringing, as its phone sees it
    /// (what a busy lamp shows and a `Replaces` names): Call-ID, the
    /// phone's tag, our tag. `None` once its INVITE is over or before a
    /// provisional response with a tag.
    pub fn leg_early_dialog(&self, call: CallRef, leg: LegRef) -> Option<EarlyDialog<'_>> {
        let early = self.calls.get(&call)?.leg(leg.0)?.inviting()?.early.first()?;
        let d = &early.dialog;
        Some(EarlyDialog {
            call_id: std::str::from_utf8(&d.call_id).ok()?,
            phone_tag: std::str::from_utf8(&d.remote_tag).ok()?,
            our_tag: std::str::from_utf8(&d.local_tag).ok()?,
        })
    }

    /// The SIP Call-ID of the caller's dialog.
    pub fn caller_sip_call_id(&self, call: CallRef) -> Option<&str> {
        std::str::from_utf8(&self.calls.get(&call)?.caller.dialog.call_id).ok()
    }

    /// What an anchored media offer of a call is made from: the caller's
    /// SIP Call-ID, its From tag, its offer (SDP) and the transport it came
    /// over. `None` before the caller's offer or after the call is gone.
    pub fn caller_media(&self, call: CallRef) -> Option<CallerMedia> {
        let c = self.calls.get(&call)?;
        let sdp = c.caller.offer.sdp()?.bytes.clone();
        Some(CallerMedia {
            call_id: std::str::from_utf8(&c.caller.dialog.call_id).ok()?.to_owned(),
            from_tag: std::str::from_utf8(&c.caller.dialog.remote_tag).ok()?.to_owned(),
            sdp,
            transport: c.caller.peer.transport,
        })
    }

    /// A leg's SDP toward the caller with the To tag it came under: the
    /// 2xx's answer once answered (until it went to the caller), else the
    /// latest early SDP (183) with the tag of the latest early dialog.
    pub fn leg_answer_sdp(&self, call: CallRef, leg: LegRef) -> Option<(Bytes, String)> {
        let l = self.calls.get(&call)?.leg(leg.0)?;
        let utf8 = |b: &Bytes| std::str::from_utf8(b).ok().map(str::to_owned);
        if let Some(a) = l.answered() {
            return Some((a.answer.as_ref()?.bytes.clone(), utf8(&a.dialog.remote_tag)?));
        }
        let i = l.inviting()?;
        let tag = i.early.last().map(|e| &e.dialog.remote_tag)?;
        Some((i.early_sdp.as_ref()?.bytes.clone(), utf8(tag)?))
    }

    /// Replaces a leg's SDP toward the caller (the anchored answer from
    /// the media relay) before [`CallManager::answer_caller`] or
    /// [`CallManager::early_media_caller`] sends it. `false` when the leg
    /// has no such SDP any more.
    pub fn replace_leg_answer_sdp(&mut self, call: CallRef, leg: LegRef, sdp: Bytes) -> bool {
        let Some(l) = self.calls.get_mut(&call).and_then(|c| c.leg_mut(leg.0)) else {
            return false;
        };
        let body = Body { ctype: Bytes::from_static(b"application/sdp"), bytes: sdp };
        if let Some(a) = l.answered_mut() {
            return a.answer.as_mut().map(|b| *b = body).is_some();
        }
        l.inviting_mut().and_then(|i| i.early_sdp.as_mut()).map(|b| *b = body).is_some()
    }

    /// The SDP of a held relay ([`CallEvent::RelayOffer`],
    /// [`CallEvent::RelayAnswer`]), as it came within the copy limits.
    pub fn held_sdp(&self, call: CallRef, relay: RelayRef) -> Option<Bytes> {
        let c = self.calls.get(&call)?;
        let h = c.held.iter().find(|h| h.id == relay.0)?;
        let m = match &h.what {
            crate::state::HeldSdp::Request { request, .. } => request,
            crate::state::HeldSdp::Response { far, .. } => far,
        };
        self.settings.cfg.limits.body(m).map(|b| b.bytes)
    }

    /// Lets a held relay go on with `sdp` as its body (the media relay's),
    /// or its own (`None`).
    pub fn release_relay(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        relay: RelayRef,
        sdp: Option<Bytes>,
    ) -> Result<(), B2buaError> {
        self.with_call(tx, now, call, |t| t.release_relay(relay.0, sdp))
    }

    // ----- internals --------------------------------------------------------

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn tokens_mut(&mut self) -> &mut Tokens {
        &mut self.tokens
    }

    /// The calls, and the wire their steps act through at `now`.
    pub(crate) fn split<'a>(
        &'a mut self,
        tx: &'a mut TransactionLayer,
        now: Instant,
    ) -> (&'a mut FxHashMap<CallRef, Call>, Wire<'a>) {
        let CallManager { settings, tokens, index, out, calls, .. } = self;
        (calls, Wire { now, tx, settings, tokens, index, out })
    }

    /// Runs `step` on call `c` at `now`, then settles the call; `None`
    /// when there is no such call.
    pub(crate) fn on_call<R>(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        c: CallRef,
        step: impl FnOnce(&mut CallTurn<'_>) -> R,
    ) -> Option<R> {
        let (calls, wire) = self.split(tx, now);
        let call = calls.get_mut(&c)?;
        let r = step(&mut CallTurn { call, wire });
        self.settle(c);
        Some(r)
    }

    fn with_call<R>(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: CallRef,
        step: impl FnOnce(&mut CallTurn<'_>) -> Result<R, B2buaError>,
    ) -> Result<R, B2buaError> {
        self.on_call(tx, now, call, step).unwrap_or(Err(B2buaError::UnknownCall))
    }

    /// After any change to a call: ends it when nothing is left, else
    /// reschedules its timer.
    fn settle(&mut self, id: CallRef) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.done() {
            if let Some(call) = self.calls.remove(&id) {
                self.index.retire(call);
            }
            self.out.events.push_back(CallEvent::CallEnded { call: id });
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
