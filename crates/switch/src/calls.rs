//! Forked calls: one fork ([`groupcall::Fork`]) per call the switch
//! serves, driving that call's B2BUA legs ([`b2bua::CallManager`]). Fork
//! actions become SIP through the B2BUA and records for the store; what the
//! legs do goes back into the fork as [`LegEvent`]s. Failover (carriers,
//! DNS targets) is the fork's own hunting: nothing here re-dials behind its
//! back. A [`ForkedCall`] is the call's own state; the steps that use the
//! rest of the switch (the B2BUA, DNS, counters) are `Switch` methods that
//! take it.

use crate::counters::CallOutcome;
use crate::dialer::{dns_question, Dialer};
use crate::dns::Waiter;
use crate::input::Now;
use crate::occupancy::Occupancy;
use crate::output::{Output, Persist, Query};
use crate::switch::Switch;
use b2bua::{CallEvent, CallRef, DialTarget, LegRef};
use groupcall::{Action, Fork, LegEvent, LegId, LegTarget, Record, ResolveId};
use records::{Call, CallStatus, HangupBy, HangupReason};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::Instant;
use tracing::debug;
use uuid::Uuid;

fn uri_of(target: &LegTarget) -> String {
    match target {
        LegTarget::Sip { uri } => uri.clone(),
        _ => String::new(),
    }
}

/// The fork's legs and the B2BUA's, one to one. Both are small numbers
/// counted from 0 in each call, so plain vectors index them.
#[derive(Debug, Default)]
struct LegMap {
    to_b2bua: Vec<Option<LegRef>>,
    to_fork: Vec<Option<LegId>>,
}

fn set<T>(v: &mut Vec<Option<T>>, i: usize, x: T) {
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    if let Some(slot) = v.get_mut(i) {
        *slot = Some(x);
    }
}

impl LegMap {
    fn insert(&mut self, leg: LegId, lr: LegRef) {
        set(&mut self.to_b2bua, leg.0 as usize, lr);
        set(&mut self.to_fork, lr.as_u32() as usize, leg);
    }
}

/// A leg relayed through another cluster node, as its record is found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Relay {
    /// Its INVITE is not out yet (its offer is being anchored).
    Dialing(LegId),
    /// Out, with this SIP Call-ID (in its record).
    Dialed(String),
}

/// Who stands for the caller of a forked call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallerLeg {
    /// The caller's INVITE came to us.
    Inbound,
    /// The caller's INVITE ended from its side before the answer (CANCEL):
    /// a 487 then is the caller's doing, not the switch's (API hangup).
    InboundCancelled,
    /// A click-to-call (RFC 3725): the B2BUA's leg 0, rung first, stands
    /// for the caller; the fork starts once it answered. It may ring
    /// unanswered until `rings_until` (then the call is hung up, as by the
    /// API); `None` once it answered or ended.
    Source { leg: LegRef, rings_until: Option<Instant> },
}

/// One call the switch serves: the fork ringing its destinations
/// ([`groupcall::Fork`]), the B2BUA call whose legs it drives, the inbound
/// call's record, and the extensions it counts on.
pub(crate) struct ForkedCall {
    /// The B2BUA's handle of the call.
    pub(crate) cref: CallRef,
    pub(crate) fork: Fork,
    legs: LegMap,
    /// The inbound call's record.
    pub(crate) inbound: Call,
    /// The caller's From (display name and URI, no tag), shown to callees.
    from: String,
    caller: CallerLeg,
    /// The B2BUA reported `CallEnded`: every dialog is gone.
    dialogs_over: bool,
    /// The fork deadline filed in the switch's timer queue.
    pub(crate) fork_deadline: Option<Instant>,
    /// When the caller's INVITE was taken, for the setup time.
    started: Instant,
    /// The extensions this call is counted on in the [`Occupancy`] (the
    /// caller, the one that answered), released when it is forgotten.
    occupies: Vec<String>,
    /// Legs relayed through another cluster node (to a phone registered
    /// there) and that node, for the leg's record.
    relays: Vec<(Relay, String)>,
    /// This call is one leg another cluster node relays through this one
    /// (that node's id): its records are that node's to write, none here.
    pub(crate) relayed_for: Option<String>,
}

/// How an inbound call record ends: who hung up and why.
type Ending = (HangupBy, HangupReason);

const NOT_ENDED: Ending = (HangupBy::None, HangupReason::None);

impl ForkedCall {
    /// The B2BUA call `cref` with its `fork` and `inbound` record, the
    /// caller shown to callees as `from`, taken at `started`.
    pub(crate) fn new(
        cref: CallRef,
        fork: Fork,
        inbound: Call,
        from: String,
        started: Instant,
    ) -> Self {
        ForkedCall {
            cref,
            fork,
            legs: LegMap::default(),
            inbound,
            from,
            caller: CallerLeg::Inbound,
            dialogs_over: false,
            fork_deadline: None,
            started,
            occupies: Vec::new(),
            relays: Vec::new(),
            relayed_for: None,
        }
    }

    /// The B2BUA's handle of the call.
    pub(crate) fn cref(&self) -> CallRef {
        self.cref
    }

    /// When the caller's INVITE was taken.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Fork leg `leg` is B2BUA leg `lr` (a pickup's leg, made outside
    /// `dial`).
    pub(crate) fn map_leg(&mut self, leg: LegId, lr: LegRef) {
        self.legs.insert(leg, lr);
    }

    /// A click-to-call: `source` is the B2BUA leg rung first, for at most
    /// until `deadline`.
    pub(crate) fn with_source(mut self, source: LegRef, deadline: Instant) -> Self {
        self.caller = CallerLeg::Source { leg: source, rings_until: Some(deadline) };
        self
    }

    /// The call counts as one of `aor`'s calls until it is forgotten.
    pub(crate) fn occupy(&mut self, occupancy: &mut Occupancy, aor: &str) {
        occupancy.enter(aor);
        self.occupies.push(aor.to_owned());
    }

    /// The call is forgotten: it no longer counts for its extensions.
    pub(crate) fn release(&self, occupancy: &mut Occupancy) {
        for aor in &self.occupies {
            occupancy.leave(aor);
        }
    }

    /// Until when a click-to-call source may still ring.
    fn source_deadline(&self) -> Option<Instant> {
        match self.caller {
            CallerLeg::Source { rings_until, .. } => rings_until,
            _ => None,
        }
    }

    /// The fork's timers at `now`; a click-to-call source that rang
    /// unanswered for the ring time hangs the call up first.
    pub(crate) fn fork_timeout(&mut self, now: Now) {
        if let CallerLeg::Source { rings_until, .. } = &mut self.caller {
            if rings_until.is_some_and(|d| d <= now.at) {
                *rings_until = None;
                self.fork.hangup(now.into());
            }
        }
        self.fork.handle_timeout(now.into());
    }

    /// The next deadline of this call: its fork's, or the source's.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.fork.poll_timeout(), self.source_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the inbound call record forward (never back) and queues it
    /// for the store when it changed.
    fn advance(&mut self, out: &mut VecDeque<Output>, now: Now, status: CallStatus, end: Ending) {
        let c = &mut self.inbound;
        if !c.status.can_become(status) {
            return;
        }
        c.status = status;
        c.tm_update = now.wall;
        let recorded = self.relayed_for.is_none();
        match status {
            CallStatus::Ringing => c.tm_ringing = now.wall,
            CallStatus::Progressing => c.tm_progressing = now.wall,
            CallStatus::Hangup => {
                c.tm_hangup = now.wall;
                (c.hangup_by, c.hangup_reason) = end;
            }
            _ => {}
        }
        if recorded {
            out.push_back(Output::Persist(Persist::Call(c.clone())));
        }
    }

    /// The missed-groupcall notice of a call to a ring group that is over
    /// and was never answered (`None` otherwise).
    pub(crate) fn missed(&self) -> Option<pbx_features::GroupcallMissed> {
        if self.inbound.destination.kind != records::AddressType::Groupcall {
            return None;
        }
        let legs: Vec<Call> = self.fork.legs().map(|(_, _, c)| c.clone()).collect();
        pbx_features::GroupcallMissed::from_records(self.fork.root(), Some(&self.inbound), &legs)
    }

    /// The caller's media is anchored at rtpengine `anchor` (its ng
    /// address), which gave the caller `address`: on the inbound call
    /// record, queued for the store when it changed.
    pub(crate) fn anchor_inbound(
        &mut self,
        out: &mut VecDeque<Output>,
        now: Now,
        (anchor, address): (&str, &str),
    ) {
        let c = &mut self.inbound;
        if c.media_anchor == anchor && c.media_address == address {
            return;
        }
        c.media_anchor = anchor.to_owned();
        c.media_address = address.to_owned();
        c.tm_update = now.wall;
        out.push_back(Output::Persist(Persist::Call(c.clone())));
    }

    /// How the call went, for the counters (once it is over).
    pub(crate) fn outcome(&self) -> CallOutcome {
        if !self.inbound.tm_progressing.is_not_yet() {
            return CallOutcome::Answered;
        }
        match self.inbound.hangup_reason {
            HangupReason::Cancel | HangupReason::Normal => CallOutcome::Cancelled,
            HangupReason::Busy => CallOutcome::Busy,
            HangupReason::Noanswer => CallOutcome::NoAnswer,
            _ => CallOutcome::Failed,
        }
    }

    /// The caller's INVITE came to us (not a click-to-call source).
    pub(crate) fn is_inbound(&self) -> bool {
        self.caller == CallerLeg::Inbound
    }

    /// Both the fork and the dialogs are over: the call can be forgotten.
    pub(crate) fn is_over(&self) -> bool {
        self.fork.is_finished() && self.dialogs_over
    }

    /// The fork leg of a B2BUA leg.
    pub(crate) fn fork_leg(&self, lr: LegRef) -> Option<LegId> {
        self.legs.to_fork.get(lr.as_u32() as usize).copied().flatten()
    }

    /// The B2BUA leg of a fork leg.
    pub(crate) fn leg(&self, leg: LegId) -> Option<LegRef> {
        self.legs.to_b2bua.get(leg.0 as usize).copied().flatten()
    }

    /// A B2BUA event that is the fork's business (the caller's or a fork
    /// leg's); `false` for an event of the click-to-call source leg.
    fn feed_fork(&mut self, now: Now, ev: CallEvent, out: &mut VecDeque<Output>) -> bool {
        match ev {
            CallEvent::CallEnded { .. } => self.dialogs_over = true,
            CallEvent::CallerCancelled { completed_elsewhere, .. } => {
                self.caller = CallerLeg::InboundCancelled;
                // A relayed leg passes on the calling node's "answered
                // elsewhere" to the phone.
                if completed_elsewhere && self.relayed_for.is_some() {
                    self.fork.caller_cancelled_elsewhere(now.into())
                } else {
                    self.fork.caller_cancelled(now.into())
                }
            }
            CallEvent::CallerHungUp { .. } | CallEvent::CallerNoAck { .. } => {
                self.fork.caller_hung_up(now.into());
                let end = (HangupBy::Remote, HangupReason::Normal);
                self.advance(out, now, CallStatus::Hangup, end);
            }
            ev if matches!(self.caller, CallerLeg::Source { leg, .. } if ev.leg() == Some(leg)) => {
                return false;
            }
            ev => {
                let Some(leg) = ev.leg().and_then(|lr| self.fork_leg(lr)) else { return true };
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
                self.fork.leg_event(now.into(), leg, lev);
            }
        }
        true
    }
}

/// How an action of a call's fork turned out; an error is logged.
type Applied = Result<(), b2bua::B2buaError>;

impl Switch {
    /// Runs `step` on call `cref` (out of the table meanwhile, so that the
    /// step may use the whole switch), then settles the call.
    pub(crate) fn on_forked_call(
        &mut self,
        now: Now,
        cref: CallRef,
        step: impl FnOnce(&mut Switch, &mut ForkedCall),
    ) {
        let Some(mut call) = self.calls.take(cref) else { return };
        step(self, &mut call);
        self.show_call(now, &call);
        self.calls.put_back(cref, call);
        self.settle_call(cref);
    }

    /// A B2BUA event, into its call's fork; then the fork's actions.
    pub(crate) fn on_call_event(&mut self, now: Now, ev: CallEvent) {
        self.on_forked_call(now, ev.call(), |sw, call| {
            match ev {
                CallEvent::LegFailed { leg, .. }
                | CallEvent::LegNoResponse { leg, .. }
                | CallEvent::LegCancelled { leg, .. } => {
                    if let Some(l) = call.fork_leg(leg) {
                        sw.media_leg_lost(now, call, l);
                    }
                }
                CallEvent::CallEnded { call: cref } => sw.media_call_ended(now, cref),
                CallEvent::RelayOffer { .. } | CallEvent::RelayAnswer { .. } => {
                    sw.media_held_relay(now, call, ev);
                    return;
                }
                _ => {}
            }
            if !call.feed_fork(now, ev, &mut sw.out) {
                sw.on_source_event(now, call, ev);
            }
            sw.apply_actions(now, call);
        });
    }

    /// Applies a call's pending fork actions, then settles it.
    pub(crate) fn run_call(&mut self, now: Now, cref: CallRef) {
        self.on_forked_call(now, cref, |sw, call| sw.apply_actions(now, call));
    }

    /// What the click-to-call source did: its record moves on; its answer
    /// with an offer starts the fork, anything else ends it.
    fn on_source_event(&mut self, now: Now, call: &mut ForkedCall, ev: CallEvent) {
        // A provisional (ringing, early media) leaves the ring time running;
        // anything final ends it.
        let provisional = matches!(
            ev,
            CallEvent::LegTrying { .. }
                | CallEvent::LegRinging { .. }
                | CallEvent::LegEarlyMedia { .. }
        );
        if let CallerLeg::Source { rings_until, .. } = &mut call.caller {
            if !provisional {
                *rings_until = None;
            }
        }
        let (at, cref, out) = (now.at, call.cref, &mut self.out);
        match ev {
            CallEvent::LegAnswered { leg, .. } if call.fork.is_finished() => {
                // Hung up (API, ring time over) before this answer crossed
                // our CANCEL: the source gets its ACK and a BYE.
                let _ = self.b2bua.ack_and_bye(&mut self.tx, at, cref, leg);
            }
            CallEvent::LegRinging { .. } | CallEvent::LegEarlyMedia { .. } => {
                call.advance(out, now, CallStatus::Ringing, NOT_ENDED);
            }
            CallEvent::LegAnswered { .. } if self.b2bua.has_offer(cref) => {
                call.advance(out, now, CallStatus::Progressing, NOT_ENDED);
                call.fork.start(now.into());
            }
            CallEvent::LegAnswered { .. } => {
                // A 2xx without an offer: there is nothing to fork with.
                let end = (HangupBy::Local, HangupReason::Failed);
                call.advance(out, now, CallStatus::Hangup, end);
                let _ = self.b2bua.reject_caller(&mut self.tx, at, cref, 488);
                call.fork.caller_cancelled(now.into());
            }
            CallEvent::LegFailed { code, .. } => {
                let end = (HangupBy::Remote, HangupReason::for_status(code));
                call.advance(out, now, CallStatus::Hangup, end);
                call.fork.caller_cancelled(now.into());
            }
            CallEvent::LegNoResponse { .. } | CallEvent::LegCancelled { .. } => {
                // No final response: none at all, or none before its ring
                // time ended (our CANCEL).
                let end = (HangupBy::Local, HangupReason::for_status(records::NO_RESPONSE));
                call.advance(out, now, CallStatus::Hangup, end);
                call.fork.caller_cancelled(now.into());
            }
            CallEvent::LegHungUp { .. } => {
                let end = (HangupBy::Remote, HangupReason::Normal);
                call.advance(out, now, CallStatus::Hangup, end);
                call.fork.caller_hung_up(now.into());
            }
            _ => {}
        }
    }

    /// Applies every pending action of a call's fork, and stores its hunt
    /// memories.
    pub(crate) fn apply_actions(&mut self, now: Now, call: &mut ForkedCall) {
        while let Some(action) = call.fork.poll_action() {
            if let Err(e) = self.apply(now, call, action) {
                debug!(error = ?e, "call action not applied");
            }
        }
        while let Some(u) = call.fork.poll_hunt_memory() {
            let record = crate::dialer::hunt_record(u.group, &u.memory);
            self.out.push_back(Output::Persist(Persist::HuntMemory(record)));
            self.hunt.insert(u.group, u.memory);
        }
    }

    /// One action of a call's fork: SIP through the B2BUA, a DNS question,
    /// or a record for the store.
    fn apply(&mut self, now: Now, call: &mut ForkedCall, action: Action) -> Applied {
        let (at, cref) = (now.at, call.cref);
        let (tx, out) = (&mut self.tx, &mut self.out);
        match action {
            Action::Dial { leg, target, .. } => self.dial(now, call, leg, &target),
            Action::Resolve { query, target } => self.resolve(now, call, query, target),
            Action::Cancel { leg, reason } => match call.leg(leg) {
                Some(lr) => {
                    self.b2bua.cancel_leg(tx, at, cref, lr, reason.map(|r| r.header_value()))
                }
                None => {
                    self.cancel_offering(now, call, leg);
                    Ok(())
                }
            },
            Action::AckAndBye { leg } => match call.leg(leg) {
                Some(lr) => {
                    self.media_leg_lost(now, call, leg);
                    self.b2bua.ack_and_bye(&mut self.tx, at, cref, lr)
                }
                None => Ok(()),
            },
            Action::Bye { leg } => match call.leg(leg) {
                Some(lr) => self.b2bua.bye_leg(tx, at, cref, lr),
                None => Ok(()),
            },
            Action::RelayRinging => {
                call.advance(out, now, CallStatus::Ringing, NOT_ENDED);
                self.b2bua.ring_caller(tx, at, cref)
            }
            Action::RelayEarlyMedia { leg } => match call.leg(leg) {
                Some(lr) => {
                    call.advance(out, now, CallStatus::Ringing, NOT_ENDED);
                    if self.answer_leg(now, call, leg, true) {
                        return Ok(());
                    }
                    self.b2bua.early_media_caller(&mut self.tx, at, cref, lr)
                }
                None => Ok(()),
            },
            Action::AnswerCaller { leg } => self.answer(now, call, leg),
            Action::RejectCaller { code } => {
                // A 487 answers the caller's CANCEL (remote), or an API
                // hangup (local, like every other rejection).
                let remote = code == 487 && call.caller == CallerLeg::InboundCancelled;
                let by = if remote { HangupBy::Remote } else { HangupBy::Local };
                let end = (by, HangupReason::for_status(code));
                call.advance(out, now, CallStatus::Hangup, end);
                self.b2bua.reject_caller(tx, at, cref, code)
            }
            Action::ByeCaller => {
                let end = (HangupBy::Local, HangupReason::Normal);
                call.advance(out, now, CallStatus::Hangup, end);
                self.b2bua.bye_caller(tx, at, cref)
            }
            Action::RecordChanged(_) if call.relayed_for.is_some() => Ok(()),
            Action::RecordChanged(Record::Groupcall(g)) => {
                out.push_back(Output::Persist(Persist::Groupcall(g)));
                Ok(())
            }
            Action::RecordChanged(Record::Call(mut c)) => {
                let dialed = Relay::Dialed(c.sip_call_id.clone());
                if let Some((_, node)) = call.relays.iter().find(|(r, _)| *r == dialed) {
                    c.relay_node_id.clone_from(node);
                }
                out.push_back(Output::Persist(Persist::Call(c)));
                Ok(())
            }
            Action::Finished => {
                let end = (HangupBy::Remote, HangupReason::Normal);
                call.advance(out, now, CallStatus::Hangup, end);
                Ok(())
            }
        }
    }

    /// The caller is answered with fork leg `leg`: its record, the setup
    /// time, and the answering extension's occupancy.
    fn answer(&mut self, now: Now, call: &mut ForkedCall, leg: LegId) -> Applied {
        let Some(lr) = call.leg(leg) else { return Ok(()) };
        call.advance(&mut self.out, now, CallStatus::Progressing, NOT_ENDED);
        let setup = now.at.saturating_duration_since(call.started);
        self.counters.setup_seconds.observe(setup.as_secs_f64());
        if let Some(LegTarget::Contact { aor, .. } | LegTarget::Pickup { aor }) =
            call.fork.leg_target(leg)
        {
            let aor = aor.clone();
            call.occupy(&mut self.occupancy, &aor);
        }
        if self.answer_leg(now, call, leg, false) {
            return Ok(()); // the 2xx goes with rtpengine's answer
        }
        self.b2bua.answer_caller(&mut self.tx, now.at, call.cref, lr)
    }

    /// Asks DNS for a `sip:` destination's hops; one that cannot be asked
    /// about has none.
    fn resolve(
        &mut self,
        now: Now,
        call: &mut ForkedCall,
        query: ResolveId,
        target: LegTarget,
    ) -> Applied {
        let question = match &target {
            LegTarget::Sip { uri } => dns_question(uri),
            _ => None,
        };
        match question {
            Some((host, port, transport)) => {
                let waiter = Waiter::Destination { call: call.cref, query, uri: uri_of(&target) };
                let id = self.dns.ask(waiter);
                self.out.push_back(Output::Resolve(Query { id, host, port, transport }));
            }
            None => call.fork.resolved(now.into(), query, Vec::new()),
        }
        Ok(())
    }

    /// Dials a fork leg: its dial target, then the B2BUA's INVITE. A target
    /// that cannot be dialed fails the leg at once (the fork fails over).
    fn dial(&mut self, now: Now, call: &mut ForkedCall, leg: LegId, target: &LegTarget) -> Applied {
        let dialer = Dialer {
            location: self.registrar.location(),
            routes: &self.routes,
            locals: &self.listen,
            wall: now.wall,
            cluster: self.cluster.as_ref(),
        };
        match dialer.target(target, &call.from) {
            Ok(d) => {
                if let Some(node) = d.relay_node {
                    call.relays.push((Relay::Dialing(leg), node));
                }
                if let Some(dt) = self.offer_leg(now, call, leg, d.target) {
                    self.dial_now(now, call, leg, dt);
                }
            }
            Err(code) => call.fork.leg_event(now.into(), leg, LegEvent::Failed { code }),
        }
        Ok(())
    }

    /// The B2BUA's INVITE of a fork leg (its offer anchored already, or
    /// not anchored); a refusal fails the leg (the fork fails over).
    pub(crate) fn dial_now(&mut self, now: Now, call: &mut ForkedCall, leg: LegId, dt: DialTarget) {
        match self.b2bua.dial(&mut self.tx, now.at, call.cref, dt) {
            Ok(lr) => {
                call.legs.insert(leg, lr);
                if let Some(id) = self.b2bua.leg_sip_call_id(call.cref, lr) {
                    let dialing = Relay::Dialing(leg);
                    if let Some(r) = call.relays.iter_mut().find(|(r, _)| *r == dialing) {
                        r.0 = Relay::Dialed(id.to_owned());
                    }
                    call.fork.leg_dialed(now.into(), leg, id);
                }
            }
            Err(e) => {
                debug!(error = ?e, "dial refused");
                call.fork.leg_event(now.into(), leg, LegEvent::Failed { code: 503 });
            }
        }
    }
}

/// Every forked call, and the indexes commands find them by.
#[derive(Default)]
pub(crate) struct Calls {
    /// Keyed by the B2BUA's own handles and our own record ids: a fast
    /// hash. Boxed: a call is taken out while its fork's actions run.
    served: FxHashMap<CallRef, Box<ForkedCall>>,
    /// Inbound call record ids and root groupcall ids.
    by_record: FxHashMap<Uuid, CallRef>,
}

impl Calls {
    pub(crate) fn insert(&mut self, call: ForkedCall) {
        let cref = call.cref;
        self.by_record.insert(call.inbound.id, cref);
        self.by_record.insert(call.fork.root().id, cref);
        self.served.insert(cref, Box::new(call));
    }

    pub(crate) fn get_mut(&mut self, cref: CallRef) -> Option<&mut ForkedCall> {
        self.served.get_mut(&cref).map(|c| &mut **c)
    }

    pub(crate) fn get(&self, cref: CallRef) -> Option<&ForkedCall> {
        self.served.get(&cref).map(|c| &**c)
    }

    /// Takes a call out while its fork's actions run (its record ids stay
    /// indexed); [`Calls::put_back`] returns it.
    fn take(&mut self, cref: CallRef) -> Option<Box<ForkedCall>> {
        self.served.remove(&cref)
    }

    fn put_back(&mut self, cref: CallRef, call: Box<ForkedCall>) {
        self.served.insert(cref, call);
    }

    /// Forgets a call that is over, and returns it.
    pub(crate) fn remove_if_over(&mut self, cref: CallRef) -> Option<Box<ForkedCall>> {
        if !self.served.get(&cref).is_some_and(|c| c.is_over()) {
            return None;
        }
        let call = self.served.remove(&cref)?;
        self.by_record.remove(&call.inbound.id);
        self.by_record.remove(&call.fork.root().id);
        Some(call)
    }

    /// The call a groupcall or call record belongs to: the indexed root and
    /// inbound ids first, then (child groupcalls, legs) every call's fork.
    pub(crate) fn find(&self, id: Uuid) -> Option<CallRef> {
        if let Some(c) = self.by_record.get(&id) {
            return Some(*c);
        }
        self.served
            .iter()
            .find(|(_, s)| s.fork.groupcall(id).is_some() || s.fork.call(id).is_some())
            .map(|(c, _)| *c)
    }

    /// Every call served, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ForkedCall> {
        self.served.values().map(|c| &**c)
    }

    /// Live calls.
    pub(crate) fn len(&self) -> usize {
        self.served.len()
    }
}

impl From<Now> for groupcall::Now {
    fn from(n: Now) -> Self {
        groupcall::Now { at: n.at, wall: n.wall }
    }
}
