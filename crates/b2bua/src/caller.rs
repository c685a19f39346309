//! The caller's side: provisional and final responses (RFC 3262 included),
//! the 2xx retransmission until the ACK (13.3.1.4), CANCEL, and our BYE to
//! either side. Each step is a method of the call's [`CallTurn`]; what it
//! does to the caller is one of its transitions (`caller_state.rs`).

use crate::caller_state::{CallerState, HeldAnswer, Unacked, MAX_REL_QUEUE};
use crate::dialog::{self, Body};
use crate::settings::after;
use crate::state::{Held, Origin, Pending2xx, Role, Side};
use crate::turn::CallTurn;
use crate::{B2buaError, CallEvent, LegRef};
use sip_message::{HeaderName, Message, MessageBuilder, Peer};
use sip_transaction::TxKey;

const FINAL_SENT: B2buaError = B2buaError::InvalidState("the caller already has a final response");

impl CallTurn<'_> {
    /// A response to the caller's INVITE with our To tag, Contact and
    /// Allow; `None` once the INVITE has a final response.
    fn caller_response(&self, code: u16) -> Option<MessageBuilder> {
        let c = &self.call.caller;
        let settings = self.wire.settings;
        let tag = std::str::from_utf8(&c.dialog.local_tag).unwrap_or_default();
        let mut b = settings.response(&c.invite()?.request, code).to_tag(tag);
        if code < 300 {
            b = b
                .header(HeaderName::Contact, settings.contact(&c.peer))
                .header(HeaderName::Allow, settings.allow.clone());
        }
        Some(b)
    }

    /// The CSeq number of the caller's INVITE (0 once it is over).
    fn caller_invite_seq(&self) -> u32 {
        let invite = self.call.caller.invite();
        invite.and_then(|i| i.request.cseq().ok()).map(|c| c.seq).unwrap_or_default()
    }

    /// A 2xx retransmission state for a 2xx just sent.
    pub(crate) fn pending_2xx(
        &self,
        response: Message,
        peer: Peer,
        cseq: u32,
        hold: Option<Held>,
    ) -> Pending2xx {
        let (t1, now) = (self.wire.settings.cfg.t1, self.wire.now);
        Pending2xx {
            response,
            peer,
            cseq,
            interval: t1,
            next: (!peer.transport.is_reliable()).then(|| after(now, t1)),
            give_up: after(now, t1.saturating_mul(64)),
            hold,
        }
    }

    /// 180 or 183 to the caller (reliably when RFC 3262 is in use: queued
    /// behind an unacknowledged one).
    pub(crate) fn caller_provisional(
        &mut self,
        code: u16,
        body: Option<Body>,
    ) -> Result<(), B2buaError> {
        if !self.call.caller.is_proceeding() {
            return Err(FINAL_SENT);
        }
        if let Some(rel) = self.call.caller.reliable_mut() {
            if rel.unacked.is_some() {
                if rel.queue.len() < MAX_REL_QUEUE {
                    rel.queue.push_back((code, body));
                }
                return Ok(());
            }
        }
        self.send_caller_provisional(code, body)
    }

    fn send_caller_provisional(&mut self, code: u16, body: Option<Body>) -> Result<(), B2buaError> {
        let mut b = self.caller_response(code).ok_or(FINAL_SENT)?;
        let mut rseq = None;
        if let Some(rel) = self.call.caller.reliable_mut() {
            let r = rel.next_rseq;
            rel.next_rseq = rel.next_rseq.wrapping_add(1).max(1);
            b = b.header(HeaderName::Require, "100rel").header(HeaderName::RSeq, r.to_string());
            rseq = Some(r);
        }
        let has_sdp = body.is_some();
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        let msg = b.build();
        let (now, key) = (self.wire.now, self.call.caller.key);
        self.wire.tx.send_response(now, key, msg.clone()).map_err(B2buaError::Transaction)?;
        let t1 = self.wire.settings.cfg.t1;
        let reliable = self.call.caller.peer.transport.is_reliable();
        if let (Some(rel), Some(rseq)) = (self.call.caller.reliable_mut(), rseq) {
            rel.unacked = Some(Unacked {
                response: msg,
                rseq,
                has_sdp,
                interval: t1,
                next: (!reliable).then(|| after(now, t1)),
                give_up: after(now, t1.saturating_mul(64)),
            });
        }
        Ok(())
    }

    /// 200 to the caller with leg `l`'s answer; the two are bridged.
    pub(crate) fn answer_caller(&mut self, l: u32) -> Result<(), B2buaError> {
        if !self.call.caller.is_proceeding() {
            return Err(FINAL_SENT);
        }
        let leg = self.call.leg(l).ok_or(B2buaError::UnknownLeg)?;
        if !leg.is_up() {
            return Err(B2buaError::InvalidState("the leg is not answered or is hung up"));
        }
        let hold = leg.ack_held().then_some(Held::LegInvite(l));
        if let Origin::Source(s) = self.call.origin {
            // RFC 3725 flow I: the answer goes to the source in its ACK.
            if s == l || !self.call.leg(s).is_some_and(|src| src.is_up()) {
                return Err(B2buaError::InvalidState("the source is not answered"));
            }
            let body = self.take_answer(l);
            self.call.bridged = Some(l);
            self.call.caller.bridged_to_source();
            self.release_held(Held::LegInvite(s), body);
            return Ok(());
        }
        let body = self.take_answer(l);
        let mut b = self.caller_response(200).ok_or(FINAL_SENT)?;
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        let msg = b.build();
        self.call.bridged = Some(l);
        let mut hold_final = false;
        if let Some(rel) = self.call.caller.reliable_mut() {
            rel.queue.clear();
            match &rel.unacked {
                // RFC 3262 3: no 2xx before the PRACK of a provisional with SDP.
                Some(u) if u.has_sdp => hold_final = true,
                _ => rel.unacked = None,
            }
        }
        if hold_final {
            self.call.caller.answer_held(HeldAnswer { response: msg, hold });
        } else {
            let cseq = self.caller_invite_seq();
            self.call.caller.confirmed();
            self.send_caller_2xx(msg, hold, cseq);
        }
        Ok(())
    }

    /// Leg `l`'s answer, taken to go to the caller.
    fn take_answer(&mut self, l: u32) -> Option<Body> {
        self.call.leg_mut(l)?.answered_mut()?.answer.take()
    }

    /// Sends the caller's 2xx (to its INVITE with CSeq `cseq`) and starts
    /// its retransmission.
    fn send_caller_2xx(&mut self, msg: Message, hold: Option<Held>, cseq: u32) {
        // A refusal means the transaction is gone (transport error): the
        // stateless retransmissions still try.
        self.wire.respond(self.call.caller.key, msg.clone());
        let p = self.pending_2xx(msg, self.call.caller.peer, cseq, hold);
        self.call.caller.pending = Some(p);
    }

    /// The source of a click-to-call is hung up (nobody answered, or the
    /// call is over): before its answer, its INVITE is cancelled; after it,
    /// its held ACK goes with an answer that rejects every stream (RFC 3264
    /// section 6: an offer in a 2xx needs an answer in the ACK), then a BYE.
    pub(crate) fn hang_up_source(&mut self, s: u32) {
        self.call.caller.closed();
        let Some(src) = self.call.leg(s) else { return };
        if src.answered().is_none() {
            let _ = self.cancel_leg(s, None);
            return;
        }
        if src.ack_held() {
            let reject = self.call.caller.offer.sdp().map(dialog::rejecting_answer);
            self.release_held(Held::LegInvite(s), reject);
        }
        self.bye_side(Side::Leg(s));
    }

    /// A final non-2xx to the caller's INVITE; the caller's side is over.
    pub(crate) fn close_caller(&mut self, code: u16) {
        if let Some(b) = self.caller_response(code) {
            self.wire.respond(self.call.caller.key, b.build());
        }
        self.call.caller.closed();
    }

    /// The caller's INVITE is over before a 2xx went out: `code` was sent
    /// (or nothing, for `None`). A bridged leg (2xx held for a PRACK) is
    /// hung up.
    pub(crate) fn caller_lost(&mut self, code: Option<u16>, no_ack: bool) {
        self.caller_ended(code, no_ack, false);
    }

    /// [`Self::caller_lost`]; `completed_elsewhere`: by a CANCEL that says
    /// the call was answered elsewhere.
    fn caller_ended(&mut self, code: Option<u16>, no_ack: bool, completed_elsewhere: bool) {
        let answered = matches!(self.call.caller.state(), CallerState::AnswerHeld(..));
        match code {
            Some(code) => self.close_caller(code),
            None => self.call.caller.closed(),
        }
        let call = self.call.id;
        if answered {
            self.wire.emit(if no_ack {
                CallEvent::CallerNoAck { call }
            } else {
                CallEvent::CallerHungUp { call }
            });
            if let Some(b) = self.call.bridged {
                self.bye_side(Side::Leg(b));
            }
        } else {
            self.wire.emit(CallEvent::CallerCancelled { call, completed_elsewhere });
        }
    }

    /// The caller's CANCEL: 200 to it; 487 to the INVITE before the answer.
    pub(crate) fn caller_cancel(&mut self, key: TxKey, cancel: &Message) {
        let tag = std::str::from_utf8(&self.call.caller.dialog.local_tag).unwrap_or_default();
        let ok = self.wire.settings.response(cancel, 200).to_tag(tag).build();
        self.wire.respond(key, ok);
        self.wire.index.detach(key);
        if self.call.caller.is_early() {
            let elsewhere = cancel.header_values(HeaderName::Reason).any(completed_elsewhere);
            self.caller_ended(Some(487), false, elsewhere);
        }
    }

    /// A PRACK from the caller (RFC 3262 3).
    pub(crate) fn caller_prack(&mut self, key: TxKey, prack: &Message) {
        let invite_seq =
            self.call.caller.invite().and_then(|i| i.request.cseq().ok()).map(|c| c.seq);
        let rack = prack.rack().ok().flatten();
        let rel = self.call.caller.invite().and_then(|i| i.rel.as_ref());
        let matches = match (rel, rack) {
            (Some(rel), Some(r)) => rel.unacked.as_ref().is_some_and(|u| {
                u.rseq == r.rseq
                    && Some(r.cseq) == invite_seq
                    && r.method == sip_message::Method::Invite
            }),
            _ => false,
        };
        if !matches {
            self.wire.reply(key, prack, 481);
            return;
        }
        self.wire.reply(key, prack, 200);
        if let Some(rel) = self.call.caller.reliable_mut() {
            rel.unacked = None;
        }
        if matches!(self.call.caller.state(), CallerState::AnswerHeld(..)) {
            let cseq = self.caller_invite_seq();
            if let Some(held) = self.call.caller.confirmed() {
                self.send_caller_2xx(held.response, held.hold, cseq);
            }
        } else if let Some((code, body)) =
            self.call.caller.reliable_mut().and_then(|rel| rel.queue.pop_front())
        {
            let _ = self.send_caller_provisional(code, body);
        }
    }

    /// Sends our BYE to a side (idempotent). A leg's held ACK goes first;
    /// the caller's BYE waits for the ACK of our 2xx.
    pub(crate) fn bye_side(&mut self, side: Side) {
        match side {
            Side::Caller => self.bye_caller_side(),
            Side::Leg(l) => self.bye_leg_side(l),
        }
    }

    fn bye_caller_side(&mut self) {
        match self.call.caller.state() {
            CallerState::AnswerHeld(..) => {
                // The 2xx never went out: the INVITE gets a failure.
                return self.close_caller(480);
            }
            CallerState::Confirmed | CallerState::ByeAfterAck => {}
            _ => return,
        }
        if self.call.caller.pending.is_some() {
            return self.call.caller.bye_after_ack();
        }
        self.abort_relays_from(Side::Caller);
        match self.wire.bye(&mut self.call.caller.dialog) {
            Some(k) => {
                self.call.caller.bye_sent(k);
                self.own(k, Role::Bye(Side::Caller));
            }
            None => self.call.caller.ended(),
        }
    }

    fn bye_leg_side(&mut self, l: u32) {
        if !self.call.leg(l).is_some_and(|leg| leg.is_up()) {
            return;
        }
        let side = Side::Leg(l);
        self.flush_leg_ack(l);
        self.drop_pending(side);
        self.abort_relays_from(side);
        let Some(leg) = self.call.legs.get_mut(l as usize) else { return };
        let key = leg.answered_mut().and_then(|a| self.wire.bye(&mut a.dialog));
        match key {
            Some(k) => {
                leg.bye_sent(k);
                self.own(k, Role::Bye(side));
            }
            None => {
                leg.ended();
                self.wire.emit(CallEvent::LegEnded { call: self.call.id, leg: LegRef(l) });
            }
        }
    }

    /// Our BYE to a side is done (response, timeout or transport error).
    pub(crate) fn bye_done(&mut self, side: Side, key: TxKey) {
        match side {
            Side::Caller => {
                if matches!(self.call.caller.state(), CallerState::Terminating(k) if *k == key) {
                    self.call.caller.ended();
                }
            }
            Side::Leg(l) => {
                let Some(leg) = self.call.leg_mut(l) else { return };
                if matches!(leg.state(), crate::leg_state::LegState::Terminating(_, k) if *k == key)
                {
                    leg.ended();
                    self.wire.emit(CallEvent::LegEnded { call: self.call.id, leg: LegRef(l) });
                }
            }
        }
    }

    /// Sends leg `l`'s held ACK without a body (the call is going away).
    pub(crate) fn flush_leg_ack(&mut self, l: u32) {
        let held = Held::LegInvite(l);
        let caller = &mut self.call.caller;
        if let Some(p) = caller.pending.as_mut().filter(|p| p.hold == Some(held)) {
            p.hold = None;
        }
        if let Some(h) = caller.held_answer_mut().filter(|h| h.hold == Some(held)) {
            h.hold = None;
        }
        self.release_held(held, None);
    }

    /// Sends the ACK a delayed offer held, with `body` (the answer).
    pub(crate) fn release_held(&mut self, held: Held, body: Option<Body>) {
        match held {
            Held::LegInvite(l) => {
                let Some(leg) = self.call.legs.get_mut(l as usize) else { return };
                if !leg.ack_held() {
                    return;
                }
                let seq = leg.template().invite_seq;
                let Some(a) = leg.answered() else { return };
                let ack = self.wire.ack(&a.dialog, seq, body);
                self.wire.send_stateless(&ack);
                leg.ack_sent(ack);
            }
            Held::Relay(ck) => {
                let Some(r) = self.call.relays.iter().find(|r| r.client_key == ck) else { return };
                if r.ack.is_some() {
                    return;
                }
                let (to, seq) = (r.to, r.seq);
                let Some(d) = self.call.dialog_mut(to) else { return };
                let ack = self.wire.ack(d, seq, body);
                self.wire.send_stateless(&ack);
                if let Some(r) = self.call.relays.iter_mut().find(|r| r.client_key == ck) {
                    r.ack = Some(ack);
                }
            }
        }
    }

    /// Stops waiting for the ACK of a side's 2xx; a held ACK goes without
    /// a body.
    pub(crate) fn drop_pending(&mut self, side: Side) {
        let hold = self.call.pending_mut(side).and_then(Option::take).and_then(|p| p.hold);
        if let Some(h) = hold {
            self.release_held(h, None);
        }
    }

    /// An ACK for a 2xx from a side: stops the retransmission and releases
    /// a held ACK with its body; a BYE that waited for it goes.
    pub(crate) fn side_ack(&mut self, side: Side, ack: &Message) {
        let seq = ack.cseq().ok().map(|c| c.seq);
        let Some(slot) = self.call.pending_mut(side) else { return };
        let p = match slot.take() {
            Some(p) if Some(p.cseq) == seq => p,
            other => {
                *slot = other;
                return;
            }
        };
        if let Some(h) = p.hold {
            let body = self.wire.settings.cfg.limits.body(ack);
            self.release_held(h, body);
        }
        if side == Side::Caller && matches!(self.call.caller.state(), CallerState::ByeAfterAck) {
            self.bye_side(Side::Caller);
        }
    }
}

/// Whether a `Reason` header value is RFC 3326's "answered elsewhere":
/// protocol `SIP`, `cause=200`.
fn completed_elsewhere(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value).to_ascii_lowercase();
    let mut parts = text.split(';').map(str::trim);
    parts.next() == Some("sip") && parts.any(|p| p.replace(' ', "") == "cause=200")
}
