//! The caller's side: provisional and final responses (RFC 3262 included),
//! the 2xx retransmission until the ACK (13.3.1.4), CANCEL, and our BYE.

use crate::dialog::{self, Body};
use crate::env::{after, Env};
use crate::state::{
    Call, CallerState, Held, Origin, Pending2xx, Role, Side, Unacked, MAX_REL_QUEUE,
};
use crate::{B2buaError, CallEvent};
use sip_message::{HeaderName, Message, Peer};
use sip_transaction::{TransactionLayer, TxKey};
use std::time::Instant;

impl Env {
    /// A response to the caller's INVITE with our To tag, Contact and Allow.
    fn caller_response(&self, call: &Call, code: u16) -> sip_message::MessageBuilder {
        let c = &call.caller;
        let tag = std::str::from_utf8(&c.dialog.local_tag).unwrap_or_default();
        let mut b = self.response(&c.invite, code).to_tag(tag);
        if code < 300 {
            b = b
                .header(HeaderName::Contact, dialog::contact_value(&self.locals, &c.peer))
                .header(HeaderName::Allow, self.allow.clone());
        }
        b
    }

    /// A 2xx retransmission state for a 2xx just sent.
    pub(crate) fn pending_2xx(
        &self,
        now: Instant,
        response: Message,
        peer: Peer,
        cseq: u32,
        hold: Option<Held>,
    ) -> Pending2xx {
        let t1 = self.cfg.t1;
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
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        code: u16,
        body: Option<Body>,
    ) -> Result<(), B2buaError> {
        if call.caller.state != CallerState::Proceeding {
            return Err(B2buaError::InvalidState("the caller already has a final response"));
        }
        if let Some(rel) = call.caller.rel.as_mut() {
            if rel.unacked.is_some() {
                if rel.queue.len() < MAX_REL_QUEUE {
                    rel.queue.push_back((code, body));
                }
                return Ok(());
            }
        }
        self.send_caller_provisional(tx, now, call, code, body)
    }

    fn send_caller_provisional(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        code: u16,
        body: Option<Body>,
    ) -> Result<(), B2buaError> {
        let mut b = self.caller_response(call, code);
        let mut rseq = None;
        if let Some(rel) = call.caller.rel.as_mut() {
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
        tx.send_response(now, call.caller.key, msg.clone()).map_err(B2buaError::Transaction)?;
        let t1 = self.cfg.t1;
        let reliable = call.caller.peer.transport.is_reliable();
        if let (Some(rel), Some(rseq)) = (call.caller.rel.as_mut(), rseq) {
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
    pub(crate) fn answer_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
    ) -> Result<(), B2buaError> {
        if call.caller.state != CallerState::Proceeding {
            return Err(B2buaError::InvalidState("the caller already has a final response"));
        }
        let leg = call.legs.get(l as usize).ok_or(B2buaError::UnknownLeg)?;
        if !leg.up() || leg.bye_key.is_some() {
            return Err(B2buaError::InvalidState("the leg is not answered or is hung up"));
        }
        let body = leg.answer.clone();
        if let Origin::Source(s) = call.origin {
            // RFC 3725 flow I: the answer goes to the source in its ACK.
            if s == l || !call.legs.get(s as usize).is_some_and(|src| src.up()) {
                return Err(B2buaError::InvalidState("the source is not answered"));
            }
            call.bridged = Some(l);
            call.caller.state = CallerState::Answered;
            call.caller.ended = true;
            self.release_held(tx, call, Held::LegInvite(s), body);
            return Ok(());
        }
        let hold = leg.ack_held.then_some(Held::LegInvite(l));
        let mut b = self.caller_response(call, 200);
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        let msg = b.build();
        call.bridged = Some(l);
        call.caller.state = CallerState::Answered;
        let mut hold_final = false;
        if let Some(rel) = call.caller.rel.as_mut() {
            rel.queue.clear();
            match &rel.unacked {
                // RFC 3262 3: no 2xx before the PRACK of a provisional with SDP.
                Some(u) if u.has_sdp => hold_final = true,
                _ => rel.unacked = None,
            }
        }
        if hold_final {
            call.caller.held_final = Some((msg, hold));
        } else {
            self.send_caller_2xx(tx, now, call, msg, hold);
        }
        Ok(())
    }

    /// Sends the caller's 2xx and starts its retransmission.
    pub(crate) fn send_caller_2xx(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        msg: Message,
        hold: Option<Held>,
    ) {
        // A refusal means the transaction is gone (transport error): the
        // stateless retransmissions still try.
        let _ = tx.send_response(now, call.caller.key, msg.clone());
        let cseq = call.caller.invite.cseq().map(|c| c.seq).unwrap_or_default();
        call.caller.pending = Some(self.pending_2xx(now, msg, call.caller.peer, cseq, hold));
    }

    /// The source of a click-to-call is hung up (nobody answered, or the
    /// call is over): before its answer, its INVITE is cancelled; after it,
    /// its held ACK goes with an answer that rejects every stream (RFC 3264
    /// section 6: an offer in a 2xx needs an answer in the ACK), then a BYE.
    pub(crate) fn hang_up_source(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        s: u32,
    ) {
        call.caller.state = CallerState::Closed;
        let Some(src) = call.legs.get(s as usize) else { return };
        if !src.answered() {
            let _ = self.cancel_leg(tx, now, call, s, None);
            return;
        }
        if src.ack_held {
            let reject = call.caller.offer.as_ref().map(dialog::rejecting_answer);
            self.release_held(tx, call, Held::LegInvite(s), reject);
        }
        self.bye_side(tx, now, call, Side::Leg(s));
    }

    /// A final non-2xx to the caller's INVITE; the caller's side is over.
    pub(crate) fn close_caller(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        code: u16,
    ) {
        let msg = self.caller_response(call, code).build();
        let _ = tx.send_response(now, call.caller.key, msg);
        call.caller.state = CallerState::Closed;
        call.caller.held_final = None;
        if let Some(rel) = call.caller.rel.as_mut() {
            rel.unacked = None;
            rel.queue.clear();
        }
    }

    /// The caller's INVITE is over before a 2xx went out: `code` was sent
    /// (or nothing, for `None`). A bridged leg (2xx held for a PRACK) is
    /// hung up.
    pub(crate) fn caller_lost(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        code: Option<u16>,
        no_ack: bool,
    ) {
        let answered = call.caller.held_final.is_some();
        match code {
            Some(code) => self.close_caller(tx, now, call, code),
            None => {
                call.caller.state = CallerState::Closed;
                call.caller.held_final = None;
                call.caller.rel = None;
            }
        }
        let id = call.id;
        if answered {
            self.emit(if no_ack {
                CallEvent::CallerNoAck { call: id }
            } else {
                CallEvent::CallerHungUp { call: id }
            });
            if let Some(b) = call.bridged {
                self.bye_side(tx, now, call, Side::Leg(b));
            }
        } else {
            self.emit(CallEvent::CallerCancelled { call: id });
        }
    }

    /// The caller's CANCEL: 200 to it; 487 to the INVITE before the answer.
    pub(crate) fn caller_cancel(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        key: TxKey,
        cancel: &Message,
    ) {
        let tag = std::str::from_utf8(&call.caller.dialog.local_tag).unwrap_or_default();
        let ok = self.response(cancel, 200).to_tag(tag).build();
        let _ = tx.send_response(now, key, ok);
        self.detach(key);
        let early = call.caller.state == CallerState::Proceeding
            || (call.caller.state == CallerState::Answered && call.caller.held_final.is_some());
        if early {
            self.caller_lost(tx, now, call, Some(487), false);
        }
    }

    /// A PRACK from the caller (RFC 3262 3).
    pub(crate) fn caller_prack(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        key: TxKey,
        prack: &Message,
    ) {
        let invite_seq = call.caller.invite.cseq().map(|c| c.seq).ok();
        let rack = prack.rack().ok().flatten();
        let matches = match (call.caller.rel.as_ref(), rack) {
            (Some(rel), Some(r)) => rel.unacked.as_ref().is_some_and(|u| {
                u.rseq == r.rseq
                    && Some(r.cseq) == invite_seq
                    && r.method == sip_message::Method::Invite
            }),
            _ => false,
        };
        if !matches {
            self.reply(tx, now, key, prack, 481);
            return;
        }
        self.reply(tx, now, key, prack, 200);
        if let Some(rel) = call.caller.rel.as_mut() {
            rel.unacked = None;
        }
        if let Some((msg, hold)) = call.caller.held_final.take() {
            self.send_caller_2xx(tx, now, call, msg, hold);
        } else if let Some((code, body)) =
            call.caller.rel.as_mut().and_then(|rel| rel.queue.pop_front())
        {
            let _ = self.send_caller_provisional(tx, now, call, code, body);
        }
    }

    /// Sends our BYE to a side (idempotent). A leg's held ACK goes first;
    /// the caller's BYE waits for the ACK of our 2xx.
    pub(crate) fn bye_side(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
    ) {
        match side {
            Side::Caller => {
                let c = &mut call.caller;
                if c.state != CallerState::Answered || c.bye_key.is_some() {
                    return;
                }
                if c.held_final.is_some() {
                    // The 2xx never went out: the INVITE gets a failure.
                    c.ended = true;
                    self.close_caller(tx, now, call, 480);
                    return;
                }
                if c.ended && !c.bye_wanted {
                    return;
                }
                c.ended = true;
                if c.pending.is_some() {
                    c.bye_wanted = true;
                    return;
                }
                c.bye_wanted = false;
                self.abort_relays_from(tx, now, call, Side::Caller);
                if let Some(k) = self.bye(tx, now, &mut call.caller.dialog) {
                    call.caller.bye_key = Some(k);
                    self.own(call, k, Role::Bye(Side::Caller));
                }
            }
            Side::Leg(l) => {
                let Some(leg) = call.legs.get(l as usize) else { return };
                if !leg.up() || leg.bye_key.is_some() {
                    return;
                }
                self.flush_leg_ack(tx, call, l);
                self.drop_pending(tx, call, side);
                self.abort_relays_from(tx, now, call, side);
                let Some(leg) = call.legs.get_mut(l as usize) else { return };
                leg.ended = true;
                let key = leg.dialog.as_mut().and_then(|d| self.bye(tx, now, d));
                match key {
                    Some(k) => {
                        leg.bye_key = Some(k);
                        self.own(call, k, Role::Bye(side));
                    }
                    None => self.emit(CallEvent::LegEnded { call: call.id, leg: crate::LegRef(l) }),
                }
            }
        }
    }

    /// Our BYE to a side is done (response, timeout or transport error).
    pub(crate) fn bye_done(&mut self, call: &mut Call, side: Side, key: TxKey) {
        match side {
            Side::Caller => {
                if call.caller.bye_key == Some(key) {
                    call.caller.bye_key = None;
                }
            }
            Side::Leg(l) => {
                if let Some(leg) = call.legs.get_mut(l as usize) {
                    if leg.bye_key == Some(key) {
                        leg.bye_key = None;
                        self.emit(CallEvent::LegEnded { call: call.id, leg: crate::LegRef(l) });
                    }
                }
            }
        }
    }

    /// Sends leg `l`'s held ACK without a body (the call is going away).
    pub(crate) fn flush_leg_ack(&mut self, tx: &mut TransactionLayer, call: &mut Call, l: u32) {
        let held = Held::LegInvite(l);
        if call.caller.pending.as_ref().is_some_and(|p| p.hold == Some(held)) {
            if let Some(p) = call.caller.pending.as_mut() {
                p.hold = None;
            }
        }
        if let Some((_, h)) = call.caller.held_final.as_mut() {
            if *h == Some(held) {
                *h = None;
            }
        }
        self.release_held(tx, call, held, None);
    }

    /// Sends the ACK a delayed offer held, with `body` (the answer).
    pub(crate) fn release_held(
        &mut self,
        tx: &mut TransactionLayer,
        call: &mut Call,
        held: Held,
        body: Option<Body>,
    ) {
        match held {
            Held::LegInvite(l) => {
                let Some(leg) = call.legs.get_mut(l as usize) else { return };
                if !leg.ack_held {
                    return;
                }
                leg.ack_held = false;
                if let Some(d) = leg.dialog.as_ref() {
                    let ack = self.ack(tx, d, leg.invite_seq, body);
                    self.send_stateless(&ack);
                    leg.ack = Some(ack);
                }
            }
            Held::Relay(ck) => {
                let Some(r) = call.relays.iter().find(|r| r.client_key == ck) else { return };
                if r.ack.is_some() {
                    return;
                }
                let (to, seq) = (r.to, r.seq);
                let Some(d) = call.dialog_mut(to) else { return };
                let ack = self.ack(tx, d, seq, body);
                self.send_stateless(&ack);
                if let Some(r) = call.relays.iter_mut().find(|r| r.client_key == ck) {
                    r.ack = Some(ack);
                }
            }
        }
    }

    /// Stops waiting for the ACK of a side's 2xx; a held ACK goes without
    /// a body.
    pub(crate) fn drop_pending(&mut self, tx: &mut TransactionLayer, call: &mut Call, side: Side) {
        let hold = call.pending_mut(side).and_then(Option::take).and_then(|p| p.hold);
        if let Some(h) = hold {
            self.release_held(tx, call, h, None);
        }
    }

    /// An ACK for a 2xx from a side: stops the retransmission and releases
    /// a held ACK with its body.
    pub(crate) fn side_ack(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
        ack: &Message,
    ) {
        let seq = ack.cseq().ok().map(|c| c.seq);
        let Some(slot) = call.pending_mut(side) else { return };
        let p = match slot.take() {
            Some(p) if Some(p.cseq) == seq => p,
            other => {
                *slot = other;
                return;
            }
        };
        if let Some(h) = p.hold {
            self.release_held(tx, call, h, self.cfg.limits.body(ack));
        }
        if side == Side::Caller && call.caller.bye_wanted {
            self.bye_side(tx, now, call, Side::Caller);
        }
    }
}
