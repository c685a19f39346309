//! Served calls: one fork ([`groupcall::Fork`]) per inbound call, driving
//! that call's B2BUA legs ([`b2bua::CallManager`]). Fork actions become SIP
//! through the B2BUA and records for the store; what the legs do goes back
//! into the fork as [`LegEvent`]s. Failover (carriers, DNS targets) is the
//! fork's own hunting: nothing here re-dials behind its back.

use crate::counters::{CallOutcome, Counters};
use crate::dialer::{dns_question, Dialer};
use crate::dns::{DnsQueries, Waiter};
use crate::input::Now;
use crate::occupancy::Occupancy;
use crate::output::{Output, Persist, Query};
use b2bua::{CallEvent, CallManager, CallRef, LegRef};
use groupcall::{Action, Fork, LegEvent, LegId, LegTarget, Record};
use records::{Call, CallStatus, HangupBy, HangupReason};
use rustc_hash::FxHashMap;
use sip_transaction::TransactionLayer;
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

/// What applying a fork's actions touches besides the call itself.
pub(crate) struct CallContext<'a> {
    pub(crate) counters: &'a mut Counters,
    pub(crate) tx: &'a mut TransactionLayer,
    pub(crate) mgr: &'a mut CallManager,
    pub(crate) dialer: Dialer<'a>,
    pub(crate) dns: &'a mut DnsQueries,
    pub(crate) out: &'a mut VecDeque<Output>,
    /// Where round-robin and least-recent groups' memories are kept.
    pub(crate) hunt: &'a mut crate::dialer::HuntMemories,
    /// Calls per extension (`max_calls`).
    pub(crate) occupancy: &'a mut crate::occupancy::Occupancy,
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

/// One inbound call being served.
pub(crate) struct ServedCall {
    pub(crate) fork: Fork,
    legs: LegMap,
    /// The inbound call's record.
    pub(crate) inbound: Call,
    /// The caller's From (display name and URI, no tag), shown to callees.
    from: String,
    /// The B2BUA reported `CallEnded`: every dialog is gone.
    dialogs_over: bool,
    /// The caller's INVITE ended from its side before the answer (CANCEL):
    /// a 487 then is the caller's doing, else the switch's (API hangup).
    caller_cancelled: bool,
    /// The fork deadline filed in the switch's timer queue.
    pub(crate) fork_deadline: Option<Instant>,
    /// When the caller's INVITE was taken, for the setup time.
    started: Instant,
    /// A click-to-call's source leg (RFC 3725): the B2BUA's leg 0, which
    /// stands for the caller; the fork starts once it answered.
    source: Option<LegRef>,
    /// Until when the click-to-call source may ring unanswered (then the
    /// call is hung up, as by the API); `None` once it answered or ended.
    pub(crate) source_deadline: Option<Instant>,
    /// The extensions this call is counted on in the [`Occupancy`] (the
    /// caller, the one that answered), released when it is forgotten.
    occupies: Vec<String>,
}

/// Moves the inbound call record forward (never back) and queues it for the
/// store when it changed.
fn advance_inbound(
    c: &mut Call,
    out: &mut VecDeque<Output>,
    now: Now,
    status: CallStatus,
    end: (HangupBy, HangupReason),
) {
    if !c.status.can_become(status) {
        return;
    }
    c.status = status;
    c.tm_update = now.wall;
    match status {
        CallStatus::Ringing => c.tm_ringing = now.wall,
        CallStatus::Progressing => c.tm_progressing = now.wall,
        CallStatus::Hangup => {
            c.tm_hangup = now.wall;
            (c.hangup_by, c.hangup_reason) = end;
        }
        _ => {}
    }
    out.push_back(Output::Persist(Persist::Call(c.clone())));
}

const NOT_ENDED: (HangupBy, HangupReason) = (HangupBy::None, HangupReason::None);

impl ServedCall {
    pub(crate) fn new(fork: Fork, inbound: Call, from: String, started: Instant) -> Self {
        ServedCall {
            fork,
            legs: LegMap::default(),
            inbound,
            from,
            dialogs_over: false,
            caller_cancelled: false,
            fork_deadline: None,
            started,
            source: None,
            source_deadline: None,
            occupies: Vec::new(),
        }
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

    /// A click-to-call: `source` is the B2BUA leg rung first, for at most
    /// until `deadline`.
    pub(crate) fn with_source(mut self, source: LegRef, deadline: Instant) -> Self {
        self.source = Some(source);
        self.source_deadline = Some(deadline);
        self
    }

    /// The next deadline of this call: its fork's, or the source's.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.fork.poll_timeout(), self.source_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the click-to-call source did: its record moves on; its answer
    /// with an offer starts the fork, anything else ends it.
    fn on_source_event(
        &mut self,
        cx: &mut CallContext<'_>,
        now: Now,
        cref: CallRef,
        ev: CallEvent,
    ) {
        let end = |by, reason| (by, reason);
        // A provisional (ringing, early media) leaves the ring time running;
        // anything final ends it.
        let provisional = matches!(
            ev,
            CallEvent::LegTrying { .. }
                | CallEvent::LegRinging { .. }
                | CallEvent::LegEarlyMedia { .. }
        );
        if !provisional {
            self.source_deadline = None;
        }
        match ev {
            CallEvent::LegAnswered { leg, .. } if self.fork.is_finished() => {
                // Hung up (API, ring time over) before this answer crossed
                // our CANCEL: the source gets its ACK and a BYE.
                let _ = cx.mgr.ack_and_bye(cx.tx, now.at, cref, leg);
            }
            CallEvent::LegRinging { .. } | CallEvent::LegEarlyMedia { .. } => {
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Ringing, NOT_ENDED);
            }
            CallEvent::LegAnswered { .. } if cx.mgr.has_offer(cref) => {
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Progressing, NOT_ENDED);
                self.fork.start(now.into());
            }
            CallEvent::LegAnswered { .. } => {
                // A 2xx without an offer: there is nothing to fork with.
                let e = end(HangupBy::Local, HangupReason::Failed);
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, e);
                let _ = cx.mgr.reject_caller(cx.tx, now.at, cref, 488);
                self.fork.caller_cancelled(now.into());
            }
            CallEvent::LegFailed { code, .. } => {
                let e = end(HangupBy::Remote, HangupReason::for_status(code));
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, e);
                self.fork.caller_cancelled(now.into());
            }
            CallEvent::LegNoResponse { .. } | CallEvent::LegCancelled { .. } => {
                // No final response: none at all, or none before its ring
                // time ended (our CANCEL).
                let e = end(HangupBy::Local, HangupReason::for_status(records::NO_RESPONSE));
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, e);
                self.fork.caller_cancelled(now.into());
            }
            CallEvent::LegHungUp { .. } => {
                let e = end(HangupBy::Remote, HangupReason::Normal);
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, e);
                self.fork.caller_hung_up(now.into());
            }
            _ => {}
        }
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

    /// Both the fork and the dialogs are over: the call can be forgotten.
    pub(crate) fn is_over(&self) -> bool {
        self.fork.is_finished() && self.dialogs_over
    }

    /// The fork leg of a B2BUA leg.
    pub(crate) fn fork_leg(&self, lr: LegRef) -> Option<LegId> {
        self.legs.to_fork.get(lr.as_u32() as usize).copied().flatten()
    }

    /// A B2BUA event of this call, into the fork; then its actions.
    pub(crate) fn on_call_event(&mut self, cx: &mut CallContext<'_>, now: Now, ev: CallEvent) {
        match ev {
            CallEvent::CallEnded { .. } => self.dialogs_over = true,
            CallEvent::CallerCancelled { .. } => {
                self.caller_cancelled = true;
                self.fork.caller_cancelled(now.into())
            }
            CallEvent::CallerHungUp { .. } | CallEvent::CallerNoAck { .. } => {
                self.fork.caller_hung_up(now.into());
                let end = (HangupBy::Remote, HangupReason::Normal);
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, end);
            }
            ev if ev.leg().is_some() && ev.leg() == self.source => {
                self.on_source_event(cx, now, ev.call(), ev);
            }
            ev => {
                let Some(leg) = ev.leg().and_then(|lr| self.fork_leg(lr)) else { return };
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
        let cref = ev.call();
        self.run(cx, now, cref);
    }

    /// Applies every pending fork action.
    pub(crate) fn run(&mut self, cx: &mut CallContext<'_>, now: Now, cref: CallRef) {
        while let Some(action) = self.fork.poll_action() {
            self.apply(cx, now, cref, action);
        }
        while let Some(u) = self.fork.poll_hunt_memory() {
            let record = crate::dialer::hunt_record(u.group, &u.memory);
            cx.out.push_back(Output::Persist(Persist::HuntMemory(record)));
            cx.hunt.insert(u.group, u.memory);
        }
    }

    fn leg(&self, leg: LegId) -> Option<LegRef> {
        self.legs.to_b2bua.get(leg.0 as usize).copied().flatten()
    }

    fn apply(&mut self, cx: &mut CallContext<'_>, now: Now, cref: CallRef, action: Action) {
        let at = now.at;
        let result = match action {
            Action::Dial { leg, target, .. } => {
                self.dial(cx, now, cref, leg, &target);
                Ok(())
            }
            Action::Resolve { query, target } => {
                let question = match &target {
                    LegTarget::Sip { uri } => dns_question(uri),
                    _ => None,
                };
                match question {
                    Some((host, port, transport)) => {
                        let waiter =
                            Waiter::Destination { call: cref, query, uri: uri_of(&target) };
                        let id = cx.dns.ask(waiter);
                        cx.out.push_back(Output::Resolve(Query { id, host, port, transport }));
                    }
                    None => self.fork.resolved(now.into(), query, Vec::new()),
                }
                Ok(())
            }
            Action::Cancel { leg, reason } => match self.leg(leg) {
                Some(lr) => {
                    cx.mgr.cancel_leg(cx.tx, at, cref, lr, reason.map(|r| r.header_value()))
                }
                None => Ok(()),
            },
            Action::AckAndBye { leg } => match self.leg(leg) {
                Some(lr) => cx.mgr.ack_and_bye(cx.tx, at, cref, lr),
                None => Ok(()),
            },
            Action::Bye { leg } => match self.leg(leg) {
                Some(lr) => cx.mgr.bye_leg(cx.tx, at, cref, lr),
                None => Ok(()),
            },
            Action::RelayRinging => {
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Ringing, NOT_ENDED);
                cx.mgr.ring_caller(cx.tx, at, cref)
            }
            Action::RelayEarlyMedia { leg } => match self.leg(leg) {
                Some(lr) => {
                    let st = CallStatus::Ringing;
                    advance_inbound(&mut self.inbound, cx.out, now, st, NOT_ENDED);
                    cx.mgr.early_media_caller(cx.tx, at, cref, lr)
                }
                None => Ok(()),
            },
            Action::AnswerCaller { leg } => match self.leg(leg) {
                Some(lr) => {
                    let st = CallStatus::Progressing;
                    advance_inbound(&mut self.inbound, cx.out, now, st, NOT_ENDED);
                    let setup = now.at.saturating_duration_since(self.started);
                    cx.counters.setup_seconds.observe(setup.as_secs_f64());
                    if let Some(LegTarget::Contact { aor, .. }) = self.fork.leg_target(leg) {
                        let aor = aor.clone();
                        self.occupy(cx.occupancy, &aor);
                    }
                    cx.mgr.answer_caller(cx.tx, at, cref, lr)
                }
                None => Ok(()),
            },
            Action::RejectCaller { code } => {
                // A 487 answers the caller's CANCEL (remote), or an API
                // hangup (local, like every other rejection).
                let remote = code == 487 && self.caller_cancelled;
                let by = if remote { HangupBy::Remote } else { HangupBy::Local };
                let end = (by, HangupReason::for_status(code));
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, end);
                cx.mgr.reject_caller(cx.tx, at, cref, code)
            }
            Action::ByeCaller => {
                let end = (HangupBy::Local, HangupReason::Normal);
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, end);
                cx.mgr.bye_caller(cx.tx, at, cref)
            }
            Action::RecordChanged(Record::Groupcall(g)) => {
                cx.out.push_back(Output::Persist(Persist::Groupcall(g)));
                Ok(())
            }
            Action::RecordChanged(Record::Call(c)) => {
                cx.out.push_back(Output::Persist(Persist::Call(c)));
                Ok(())
            }
            Action::Finished => {
                let end = (HangupBy::Remote, HangupReason::Normal);
                advance_inbound(&mut self.inbound, cx.out, now, CallStatus::Hangup, end);
                Ok(())
            }
        };
        if let Err(e) = result {
            debug!(error = ?e, "call action not applied");
        }
    }

    /// Dials a fork leg: its dial target, then the B2BUA's INVITE. A target
    /// that cannot be dialed fails the leg at once (the fork fails over).
    fn dial(
        &mut self,
        cx: &mut CallContext<'_>,
        now: Now,
        cref: CallRef,
        leg: LegId,
        target: &LegTarget,
    ) {
        let code = match cx.dialer.target(target, &self.from) {
            Ok(dt) => match cx.mgr.dial(cx.tx, now.at, cref, dt) {
                Ok(lr) => {
                    self.legs.insert(leg, lr);
                    if let Some(id) = cx.mgr.leg_sip_call_id(cref, lr) {
                        self.fork.leg_dialed(now.into(), leg, id);
                    }
                    return;
                }
                Err(e) => {
                    debug!(error = ?e, "dial refused");
                    503
                }
            },
            Err(code) => code,
        };
        self.fork.leg_event(now.into(), leg, LegEvent::Failed { code });
    }
}

/// Every served call, and the indexes commands find them by.
#[derive(Default)]
pub(crate) struct Calls {
    /// Keyed by the B2BUA's own handles and our own record ids: a fast hash.
    served: FxHashMap<CallRef, ServedCall>,
    /// Inbound call record ids and root groupcall ids.
    by_record: FxHashMap<Uuid, CallRef>,
}

impl Calls {
    pub(crate) fn insert(&mut self, cref: CallRef, call: ServedCall) {
        self.by_record.insert(call.inbound.id, cref);
        self.by_record.insert(call.fork.root().id, cref);
        self.served.insert(cref, call);
    }

    pub(crate) fn get_mut(&mut self, cref: CallRef) -> Option<&mut ServedCall> {
        self.served.get_mut(&cref)
    }

    pub(crate) fn get(&self, cref: CallRef) -> Option<&ServedCall> {
        self.served.get(&cref)
    }

    /// Forgets a call that is over, and returns it.
    pub(crate) fn remove_if_over(&mut self, cref: CallRef) -> Option<ServedCall> {
        if !self.served.get(&cref).is_some_and(ServedCall::is_over) {
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
