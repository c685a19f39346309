//! Requests inside our dialogs: BYE, PRACK, and the relay of the methods
//! [`sip_message::SUPPORTED`] marks relayed (re-INVITE, UPDATE, INFO,
//! OPTIONS) between the bridged sides.

use crate::dialog;
use crate::env::Env;
use crate::limits::Copied;
use crate::state::{Call, CallerState, Held, Relay, Role, Side, MAX_RELAYS};
use crate::CallEvent;
use sip_message::{HeaderName, Message, Method, Peer};
use sip_transaction::{TransactionLayer, TxKey};
use std::time::Instant;

/// Where a request stands in the dialog it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialogState {
    Early,
    Confirmed,
    Gone,
}

/// The refusal of a request we cannot relay now.
fn refusal(method: &Method) -> u16 {
    match method {
        Method::Invite | Method::Update => 488,
        _ => 403,
    }
}

impl Env {
    /// A request with our To tag, for `side` of `call`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn in_dialog(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
        key: TxKey,
        req: Message,
        peer: Peer,
    ) {
        let from_tag = req.from_tag().unwrap_or_default();
        let st = match side {
            Side::Caller => {
                let c = &call.caller;
                if c.dialog.remote_tag != from_tag {
                    DialogState::Gone
                } else {
                    match c.state {
                        CallerState::Proceeding => DialogState::Early,
                        CallerState::Answered if c.held_final.is_some() => DialogState::Early,
                        CallerState::Answered if !c.ended => DialogState::Confirmed,
                        // Our BYE waits for the ACK of our 2xx (RFC 3261
                        // 15): until it goes out, the dialog is up.
                        CallerState::Answered if c.bye_wanted && c.bye_key.is_none() => {
                            DialogState::Confirmed
                        }
                        _ => DialogState::Gone,
                    }
                }
            }
            Side::Leg(l) => match call.legs.get(l as usize) {
                Some(leg) if leg.dialog.as_ref().is_some_and(|d| d.remote_tag == from_tag) => {
                    if leg.ended {
                        DialogState::Gone
                    } else {
                        DialogState::Confirmed
                    }
                }
                Some(leg)
                    if !leg.invite_over()
                        && leg.early.iter().any(|e| e.dialog.remote_tag == from_tag) =>
                {
                    DialogState::Early
                }
                _ => DialogState::Gone,
            },
        };
        if st == DialogState::Gone {
            self.reply(tx, now, key, &req, 481);
            return;
        }
        let Some(seq) = req.cseq().ok().map(|c| c.seq) else {
            self.reply(tx, now, key, &req, 400);
            return;
        };
        let tracked = match (side, st) {
            (Side::Caller, _) => Some(&mut call.caller.dialog),
            (Side::Leg(l), DialogState::Confirmed) => {
                call.legs.get_mut(l as usize).and_then(|leg| leg.dialog.as_mut())
            }
            _ => None,
        };
        if let Some(d) = tracked {
            // RFC 3261 12.2.2: a lower CSeq is out of order.
            if d.remote_seq.is_some_and(|r| seq <= r) {
                self.reply(tx, now, key, &req, 500);
                return;
            }
            d.remote_seq = Some(seq);
        }
        let method = req.method().cloned().unwrap_or(Method::Extension(Default::default()));
        match (&method, st) {
            (Method::Bye, DialogState::Early) if side == Side::Caller => {
                // RFC 3261 15.1.2: the pending INVITE gets a 487.
                self.reply(tx, now, key, &req, 200);
                self.caller_lost(tx, now, call, Some(487), false);
            }
            (Method::Bye, DialogState::Confirmed) => {
                self.reply(tx, now, key, &req, 200);
                if side == Side::Caller && call.caller.ended {
                    // The caller ends it first: our waiting BYE is moot.
                    call.caller.bye_wanted = false;
                    self.drop_pending(tx, call, side);
                } else {
                    self.side_hung_up(tx, now, call, side);
                }
            }
            (Method::Bye, _) => self.reply(tx, now, key, &req, 481),
            (Method::Prack, DialogState::Early) if side == Side::Caller => {
                self.caller_prack(tx, now, call, key, &req)
            }
            (Method::Prack, _) => self.reply(tx, now, key, &req, 481),
            (m, DialogState::Confirmed) if self.relays(m) => {
                self.relay(tx, now, call, side, key, req, peer)
            }
            (m, _) if self.relays(m) => self.reply(tx, now, key, &req, refusal(&method)),
            _ => self.reply(tx, now, key, &req, 405),
        }
    }

    /// The side's confirmed dialog ended from its side (its BYE, or a 481 or
    /// 408 to a request in it): the bridged side gets our BYE.
    pub(crate) fn side_hung_up(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
    ) {
        if !call.side_up(side) {
            return;
        }
        let id = call.id;
        match side {
            Side::Caller => {
                call.caller.ended = true;
                call.caller.bye_wanted = false;
                self.drop_pending(tx, call, side);
                self.abort_relays_from(tx, now, call, side);
                self.emit(CallEvent::CallerHungUp { call: id });
                if let Some(o) = call.other(side) {
                    self.bye_side(tx, now, call, o);
                }
            }
            Side::Leg(l) => {
                if let Some(leg) = call.legs.get_mut(l as usize) {
                    leg.ended = true;
                }
                self.flush_leg_ack(tx, call, l);
                self.drop_pending(tx, call, side);
                self.abort_relays_from(tx, now, call, side);
                self.emit(CallEvent::LegHungUp { call: id, leg: crate::LegRef(l) });
                if let Some(o) = call.other(side) {
                    self.bye_side(tx, now, call, o);
                }
            }
        }
    }

    /// Requests from `side` still being relayed get a 487 (RFC 3261 15.1.2).
    pub(crate) fn abort_relays_from(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        side: Side,
    ) {
        for r in call.relays.iter_mut().filter(|r| r.from == side && !r.answered) {
            let msg = self.response(&r.request, 487).build();
            let _ = tx.send_response(now, r.server_key, msg);
            r.answered = true;
        }
    }

    /// Relays a request from `from` to the side bridged with it.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        from: Side,
        key: TxKey,
        req: Message,
        peer: Peer,
    ) {
        let method = req.method().cloned().unwrap_or(Method::Extension(Default::default()));
        let screening = self.cfg.limits.screen(&req, Copied::Relay);
        self.notices.extend(screening.notices(peer, Some(&method)));
        if let Some((code, _)) = screening.refused {
            self.reply(tx, now, key, &req, code);
            return;
        }
        let Some(to) = call.other(from).filter(|&t| call.side_up(t)) else {
            self.reply(tx, now, key, &req, refusal(&method));
            return;
        };
        if call.relays.iter().filter(|r| !r.answered).count() >= MAX_RELAYS {
            self.reply(tx, now, key, &req, 500);
            return;
        }
        let invite = method == Method::Invite;
        if invite {
            // RFC 3261 14.1/14.2: one INVITE transaction at a time per
            // dialog, in either direction (ours wait for their ACK).
            let busy = call.relays.iter().any(|r| r.invite && !r.answered)
                || call.caller.pending.is_some()
                || call.legs.iter().any(|l| l.pending.is_some() || l.ack_held);
            if busy {
                self.reply(tx, now, key, &req, 491);
                return;
            }
        }
        if invite || method == Method::Update {
            if let Some(d) = call.dialog_mut(from) {
                d.refresh_target(&req);
            }
        }
        let mf = dialog::max_forwards(&self.cfg, req.max_forwards().ok().flatten());
        let Some(d) = call.dialog_mut(to) else {
            self.reply(tx, now, key, &req, 481);
            return;
        };
        let (mut b, dest) = self.dialog_request(tx, d, method, mf);
        let seq = d.local_seq;
        b = self.cfg.limits.pass_through(b, &req);
        let body = self.cfg.limits.body(&req);
        let offer = body.is_some();
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        match tx.send_request(now, b.build(), dest) {
            Ok(ck) => {
                self.own(call, ck, Role::RelayClient);
                self.own(call, key, Role::RelayServer);
                call.relays.push(Relay {
                    from,
                    server_key: key,
                    request: req,
                    peer,
                    to,
                    client_key: ck,
                    seq,
                    invite,
                    offer,
                    answered: false,
                    got_2xx: false,
                    ack: None,
                });
            }
            Err(_) => self.reply(tx, now, key, &req, 500),
        }
    }

    /// The response to a relayed request, relayed back.
    pub(crate) fn relay_response(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        ck: TxKey,
        resp: &Message,
    ) {
        let Some(i) = call.relays.iter().position(|r| r.client_key == ck) else { return };
        let Some(code) = resp.status() else { return };
        let Some(r) = call.relays.get(i) else { return };
        let (from, to, invite, seq) = (r.from, r.to, r.invite, r.seq);
        let with_contact = invite || r.request.method() == Some(&Method::Update);
        let build = |env: &Env, r: &Relay| {
            let mut b = env.response(&r.request, code);
            if with_contact && code < 300 {
                b = b.header(HeaderName::Contact, dialog::contact_value(&env.locals, &r.peer));
            }
            b = env.cfg.limits.pass_through(b, resp);
            if let Some(body) = env.cfg.limits.body(resp) {
                b = b.body(body.ctype, body.bytes);
            }
            b.build()
        };
        if code < 200 {
            if invite && code > 100 && !r.answered {
                let msg = build(self, r);
                let _ = tx.send_response(now, r.server_key, msg);
            }
            return;
        }
        if invite && code < 300 {
            if r.got_2xx {
                if let Some(ack) = r.ack.clone() {
                    self.send_stateless(&ack);
                }
                return;
            }
            let msg = (!r.answered).then(|| build(self, r));
            let (server_key, peer, offer) = (r.server_key, r.peer, r.offer);
            let cseq = r.request.cseq().map(|c| c.seq).unwrap_or_default();
            if let Some(d) = call.dialog_mut(to) {
                d.refresh_target(resp);
            }
            let ack_now = offer || msg.is_none();
            let ack = if ack_now {
                call.dialog_mut(to).map(|d| self.ack(tx, d, seq, None))
            } else {
                None
            };
            if let Some(ack) = &ack {
                self.send_stateless(ack);
            }
            if let Some(r) = call.relays.get_mut(i) {
                r.got_2xx = true;
                r.answered = true;
                r.ack = ack;
            }
            if let Some(msg) = msg {
                let _ = tx.send_response(now, server_key, msg.clone());
                let hold = (!ack_now).then_some(Held::Relay(ck));
                self.drop_pending(tx, call, from);
                let p = self.pending_2xx(now, msg, peer, cseq, hold);
                if let Some(slot) = call.pending_mut(from) {
                    *slot = Some(p);
                }
            }
            return;
        }
        if !r.answered {
            let msg = build(self, r);
            let _ = tx.send_response(now, r.server_key, msg);
        }
        call.relays.remove(i);
        if code == 481 || code == 408 {
            // RFC 3261 12.2.1.2: the dialog is gone.
            self.side_hung_up(tx, now, call, to);
        }
    }

    /// A relayed request got no response (timeout, transport error, or its
    /// transaction ended without a final).
    pub(crate) fn relay_failed(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        ck: TxKey,
        dialog_dead: bool,
    ) {
        let Some(i) = call.relays.iter().position(|r| r.client_key == ck) else { return };
        let r = call.relays.remove(i);
        if !r.answered {
            // RFC 4320: never a 408 to a non-INVITE.
            let code = if r.invite { 408 } else { 504 };
            let msg = self.response(&r.request, code).build();
            let _ = tx.send_response(now, r.server_key, msg);
        }
        if dialog_dead {
            self.side_hung_up(tx, now, call, r.to);
        }
    }

    /// A relayed request's client transaction ended: an answered INVITE
    /// relay (kept for 2xx retransmissions) is forgotten.
    pub(crate) fn relay_terminated(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        ck: TxKey,
    ) {
        if call.relays.iter().any(|r| r.client_key == ck && !r.answered) {
            self.relay_failed(tx, now, call, ck, false);
        } else {
            call.relays.retain(|r| r.client_key != ck);
        }
    }
}
