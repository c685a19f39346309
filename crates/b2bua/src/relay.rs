//! Requests inside our dialogs: BYE, PRACK, and the relay of the methods
//! [`sip_message::SUPPORTED`] marks relayed (re-INVITE, UPDATE, INFO,
//! OPTIONS) between the bridged sides.

use crate::caller_state::CallerState;
use crate::dialog;
use crate::dialog::Body;
use crate::limits::Copied;
use crate::state::{Held, HeldRelay, HeldSdp, Relay, Role, Side, MAX_RELAYS};
use crate::turn::CallTurn;
use crate::{B2buaError, CallEvent, RelayRef};
use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Peer};
use sip_transaction::TxKey;

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

impl CallTurn<'_> {
    /// Where a request with our To tag stands in `side`'s dialog.
    fn dialog_state(&self, side: Side, from_tag: &[u8]) -> DialogState {
        match side {
            Side::Caller => {
                let c = &self.call.caller;
                if c.dialog.remote_tag != from_tag {
                    return DialogState::Gone;
                }
                match c.state() {
                    CallerState::Proceeding(_) | CallerState::AnswerHeld(..) => DialogState::Early,
                    // Our BYE waits for the ACK of our 2xx (RFC 3261 15):
                    // until it goes out, the dialog is up.
                    CallerState::Confirmed | CallerState::ByeAfterAck => DialogState::Confirmed,
                    CallerState::Terminating(_) | CallerState::Ended | CallerState::Closed => {
                        DialogState::Gone
                    }
                }
            }
            Side::Leg(l) => {
                let Some(leg) = self.call.leg(l) else { return DialogState::Gone };
                if leg.answered().is_some_and(|a| a.dialog.remote_tag == from_tag) {
                    return if leg.is_up() { DialogState::Confirmed } else { DialogState::Gone };
                }
                let early = leg
                    .inviting()
                    .is_some_and(|i| i.early.iter().any(|e| e.dialog.remote_tag == from_tag));
                if early {
                    DialogState::Early
                } else {
                    DialogState::Gone
                }
            }
        }
    }

    /// A request with our To tag, for `side` of the call.
    pub(crate) fn in_dialog(&mut self, side: Side, key: TxKey, req: Message, peer: Peer) {
        let st = self.dialog_state(side, req.from_tag().unwrap_or_default());
        if st == DialogState::Gone {
            self.wire.reply(key, &req, 481);
            return;
        }
        if let Err(code) = self.remote_seq(side, st, &req) {
            self.wire.reply(key, &req, code);
            return;
        }
        let method = req.method().cloned().unwrap_or(Method::Extension(Default::default()));
        let relays = self.wire.settings.relays(&method);
        match (&method, st) {
            (Method::Bye, DialogState::Early) if side == Side::Caller => {
                // RFC 3261 15.1.2: the pending INVITE gets a 487.
                self.wire.reply(key, &req, 200);
                self.caller_lost(Some(487), false);
            }
            (Method::Bye, DialogState::Confirmed) => {
                self.wire.reply(key, &req, 200);
                if matches!(self.call.caller.state(), CallerState::ByeAfterAck)
                    && side == Side::Caller
                {
                    // The caller ends it first: our waiting BYE is moot.
                    self.drop_pending(side);
                    self.call.caller.ended();
                } else {
                    self.side_hung_up(side);
                }
            }
            (Method::Bye, _) => self.wire.reply(key, &req, 481),
            (Method::Prack, DialogState::Early) if side == Side::Caller => {
                self.caller_prack(key, &req)
            }
            (Method::Prack, _) => self.wire.reply(key, &req, 481),
            (_, DialogState::Confirmed) if relays => self.relay(side, key, req, peer),
            (_, _) if relays => self.wire.reply(key, &req, refusal(&method)),
            _ => self.wire.reply(key, &req, 405),
        }
    }

    /// Records the CSeq of a request in `side`'s dialog (the caller's, or
    /// a leg's confirmed one); `Err` is the status that refuses it: 400
    /// without a CSeq, 500 out of order (RFC 3261 12.2.2).
    fn remote_seq(&mut self, side: Side, st: DialogState, req: &Message) -> Result<(), u16> {
        let seq = req.cseq().ok().map(|c| c.seq).ok_or(400u16)?;
        let tracked = match (side, st) {
            (Side::Caller, _) | (Side::Leg(_), DialogState::Confirmed) => {
                self.call.dialog_mut(side)
            }
            _ => None,
        };
        if let Some(d) = tracked {
            if d.remote_seq.is_some_and(|r| seq <= r) {
                return Err(500);
            }
            d.remote_seq = Some(seq);
        }
        Ok(())
    }

    /// The side's confirmed dialog ended from its side (its BYE, or a 481 or
    /// 408 to a request in it): the bridged side gets our BYE.
    pub(crate) fn side_hung_up(&mut self, side: Side) {
        if !self.call.side_up(side) {
            return;
        }
        let call = self.call.id;
        match side {
            Side::Caller => {
                self.call.caller.ended();
                self.drop_pending(side);
                self.abort_relays_from(side);
                self.wire.emit(CallEvent::CallerHungUp { call });
            }
            Side::Leg(l) => {
                self.flush_leg_ack(l);
                self.drop_pending(side);
                if let Some(leg) = self.call.leg_mut(l) {
                    leg.ended();
                }
                self.abort_relays_from(side);
                self.wire.emit(CallEvent::LegHungUp { call, leg: crate::LegRef(l) });
            }
        }
        if let Some(o) = self.call.other(side) {
            self.bye_side(o);
        }
    }

    /// Requests from `side` still being relayed get a 487 (RFC 3261 15.1.2).
    pub(crate) fn abort_relays_from(&mut self, side: Side) {
        for r in self.call.relays.iter_mut().filter(|r| r.from == side && !r.answered) {
            let msg = self.wire.settings.response(&r.request, 487).build();
            self.wire.respond(r.server_key, msg);
            r.answered = true;
        }
    }

    /// Where a request of `method` from `from` may be relayed now: the
    /// side bridged with it; `Err` is the status that refuses it (beyond
    /// the copy limits, nobody to relay to, too many relays, or an INVITE
    /// while another is in progress).
    fn relay_target(
        &mut self,
        from: Side,
        req: &Message,
        method: &Method,
        peer: Peer,
    ) -> Result<Side, u16> {
        let screening = self.wire.settings.cfg.limits.screen(req, Copied::Relay);
        self.wire.out.notices.extend(screening.notices(peer, Some(method)));
        if let Some((code, _)) = screening.refused {
            return Err(code);
        }
        let to = self.call.other(from).filter(|&t| self.call.side_up(t)).ok_or(refusal(method))?;
        if self.call.relays.iter().filter(|r| !r.answered).count() >= MAX_RELAYS {
            return Err(500);
        }
        // RFC 3261 14.1/14.2: one INVITE transaction at a time per dialog,
        // in either direction (ours wait for their ACK).
        let busy =
            || self.call.relays.iter().any(|r| r.invite && !r.answered) || self.call.awaits_ack();
        if *method == Method::Invite && busy() {
            return Err(491);
        }
        Ok(to)
    }

    /// Relays a request from `from` to the side bridged with it (a
    /// re-INVITE or UPDATE with SDP is held first when the owner anchors
    /// media: [`CallEvent::RelayOffer`]).
    fn relay(&mut self, from: Side, key: TxKey, req: Message, peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Extension(Default::default()));
        let to = match self.relay_target(from, &req, &method, peer) {
            Ok(to) => to,
            Err(code) => return self.wire.reply(key, &req, code),
        };
        let offer_update = method == Method::Invite || method == Method::Update;
        if offer_update {
            if let Some(d) = self.call.dialog_mut(from) {
                d.refresh_target(&req);
            }
        }
        let settings = self.wire.settings;
        if offer_update && settings.cfg.hold_relayed_sdp && settings.cfg.limits.body(&req).is_some()
        {
            let id = key.to_bits();
            self.own(key, Role::RelayServer);
            let what = HeldSdp::Request { key, request: req, peer };
            self.call.held.push(HeldRelay { id, from, what });
            let (call, from_leg) = (self.call.id, from.leg());
            self.wire.emit(CallEvent::RelayOffer { call, relay: RelayRef(id), from_leg });
            return;
        }
        self.send_relay(from, (key, req, peer), to, None);
    }

    /// Sends a request from `from` on to `to`, with `sdp` as its body when
    /// given (the owner's), else its own.
    fn send_relay(
        &mut self,
        from: Side,
        (key, req, peer): (TxKey, Message, Peer),
        to: Side,
        sdp: Option<Bytes>,
    ) {
        let method = req.method().cloned().unwrap_or(Method::Extension(Default::default()));
        let settings = self.wire.settings;
        let limits = &settings.cfg.limits;
        let invite = method == Method::Invite;
        let mf = dialog::max_forwards(&settings.cfg, req.max_forwards().ok().flatten());
        let Some(d) = self.call.dialog_mut(to) else {
            self.wire.reply(key, &req, 481);
            return;
        };
        let (mut b, dest) = self.wire.dialog_request(d, method, mf);
        let seq = d.local_seq;
        b = limits.pass_through(b, &req);
        let held_sdp = sdp.is_some();
        let body = match sdp {
            Some(bytes) => Some(Body { ctype: Bytes::from_static(b"application/sdp"), bytes }),
            None => limits.body(&req),
        };
        let offer = body.is_some();
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        match self.wire.tx.send_request(self.wire.now, b.build(), dest) {
            Ok(ck) => {
                self.own(ck, Role::RelayClient);
                self.own(key, Role::RelayServer);
                self.call.relays.push(Relay {
                    from,
                    server_key: key,
                    request: req,
                    peer,
                    to,
                    client_key: ck,
                    seq,
                    invite,
                    offer,
                    held_sdp,
                    answered: false,
                    got_2xx: false,
                    ack: None,
                });
            }
            Err(_) => self.wire.reply(key, &req, 500),
        }
    }

    /// Our response to relayed request `r` for `resp` from the far side,
    /// with `sdp` as its body when given (the owner's), else `resp`'s.
    fn relayed_response(&self, r: &Relay, resp: &Message, sdp: Option<Bytes>) -> Message {
        let settings = self.wire.settings;
        let code = resp.status().unwrap_or(500);
        let with_contact = r.invite || r.request.method() == Some(&Method::Update);
        let mut b = settings.response(&r.request, code);
        if with_contact && code < 300 {
            b = b.header(HeaderName::Contact, settings.contact(&r.peer));
        }
        b = settings.cfg.limits.pass_through(b, resp);
        let body = match sdp {
            Some(bytes) => Some(Body { ctype: Bytes::from_static(b"application/sdp"), bytes }),
            None => settings.cfg.limits.body(resp),
        };
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        b.build()
    }

    /// The response to a relayed request, relayed back.
    pub(crate) fn relay_response(&mut self, ck: TxKey, resp: &Message) {
        let Some(i) = self.call.relays.iter().position(|r| r.client_key == ck) else { return };
        let Some(code) = resp.status() else { return };
        let Some(r) = self.call.relays.get(i) else { return };
        let invite = r.invite;
        if code < 200 {
            if invite && code > 100 && !r.answered {
                let msg = self.relayed_response(r, resp, None);
                self.wire.respond(r.server_key, msg);
            }
            return;
        }
        // A 2xx answer to an offer whose SDP went through the owner waits
        // for the owner's answer SDP.
        let hold = r.held_sdp && code < 300 && !r.answered && !r.got_2xx;
        if hold && self.wire.settings.cfg.limits.body(resp).is_some() {
            return self.hold_answer(i, resp);
        }
        if invite && code < 300 {
            let msg = (!r.answered).then(|| self.relayed_response(r, resp, None));
            return self.relay_2xx(i, msg, resp);
        }
        if !r.answered {
            let msg = self.relayed_response(r, resp, None);
            self.wire.respond(r.server_key, msg);
        }
        let to = r.to;
        self.call.relays.remove(i);
        if code == 481 || code == 408 {
            // RFC 3261 12.2.1.2: the dialog is gone.
            self.side_hung_up(to);
        }
    }

    /// A 2xx to relayed re-INVITE `i`, relayed back as `msg` (`None`: its
    /// server side was ended). The far side's ACK goes now when the
    /// re-INVITE carried the offer, else with the answer in the ACK of our
    /// 2xx, retransmitted until it comes.
    fn relay_2xx(&mut self, i: usize, msg: Option<Message>, resp: &Message) {
        let Some(r) = self.call.relays.get(i) else { return };
        if r.got_2xx {
            if let Some(ack) = r.ack.clone() {
                self.wire.send_stateless(&ack);
            }
            return;
        }
        let (from, to, seq, ck) = (r.from, r.to, r.seq, r.client_key);
        let (server_key, peer, offer) = (r.server_key, r.peer, r.offer);
        let cseq = r.request.cseq().map(|c| c.seq).unwrap_or_default();
        if let Some(d) = self.call.dialog_mut(to) {
            d.refresh_target(resp);
        }
        let ack_now = offer || msg.is_none();
        let ack = if ack_now {
            self.call.dialog_mut(to).map(|d| self.wire.ack(d, seq, None))
        } else {
            None
        };
        if let Some(ack) = &ack {
            self.wire.send_stateless(ack);
        }
        if let Some(r) = self.call.relays.get_mut(i) {
            r.got_2xx = true;
            r.answered = true;
            r.ack = ack;
        }
        if let Some(msg) = msg {
            self.wire.respond(server_key, msg.clone());
            let hold = (!ack_now).then_some(Held::Relay(ck));
            self.drop_pending(from);
            let p = self.pending_2xx(msg, peer, cseq, hold);
            if let Some(slot) = self.call.pending_mut(from) {
                *slot = Some(p);
            }
        }
    }

    /// Holds the 2xx (with SDP) to relayed request `i` for the owner: a
    /// re-INVITE's far side is ACKed now (the offer was in the request),
    /// the response to the offerer waits for `release_relay`.
    fn hold_answer(&mut self, i: usize, resp: &Message) {
        let Some(r) = self.call.relays.get(i) else { return };
        let (from, invite, ck) = (r.from, r.invite, r.client_key);
        let pending = invite.then(|| (r.peer, r.request.cseq().map(|c| c.seq).unwrap_or_default()));
        let what = HeldSdp::Response {
            server_key: r.server_key,
            response: self.relayed_response(r, resp, None),
            far: resp.clone(),
            pending,
        };
        if invite {
            self.relay_2xx(i, None, resp);
        } else {
            self.call.relays.remove(i);
        }
        let id = ck.to_bits();
        self.call.held.push(HeldRelay { id, from, what });
        let (call, from_leg) = (self.call.id, from.leg());
        self.wire.emit(CallEvent::RelayAnswer { call, relay: RelayRef(id), from_leg });
    }

    /// Lets a held request or response go on, with `sdp` as its body
    /// (`None`: its own). A request whose far side went meanwhile gets 481.
    pub(crate) fn release_relay(&mut self, id: u64, sdp: Option<Bytes>) -> Result<(), B2buaError> {
        let i = self.call.held.iter().position(|h| h.id == id).ok_or(B2buaError::UnknownLeg)?;
        let h = self.call.held.remove(i);
        match h.what {
            HeldSdp::Request { key, request, peer } => {
                match self.call.other(h.from).filter(|&t| self.call.side_up(t)) {
                    Some(to) => self.send_relay(h.from, (key, request, peer), to, sdp),
                    None => self.wire.reply(key, &request, 481),
                }
            }
            HeldSdp::Response { server_key, response, pending, .. } => {
                let mut msg = response;
                if let Some(sdp) = sdp {
                    msg.set_body(Some(Bytes::from_static(b"application/sdp")), sdp);
                }
                self.wire.respond(server_key, msg.clone());
                if let Some((peer, cseq)) = pending {
                    self.drop_pending(h.from);
                    let p = self.pending_2xx(msg, peer, cseq, None);
                    if let Some(slot) = self.call.pending_mut(h.from) {
                        *slot = Some(p);
                    }
                }
            }
        }
        Ok(())
    }

    /// A relayed request got no response (timeout, transport error, or its
    /// transaction ended without a final).
    pub(crate) fn relay_failed(&mut self, ck: TxKey, dialog_dead: bool) {
        let Some(i) = self.call.relays.iter().position(|r| r.client_key == ck) else { return };
        let r = self.call.relays.remove(i);
        if !r.answered {
            // RFC 4320: never a 408 to a non-INVITE.
            let code = if r.invite { 408 } else { 504 };
            let msg = self.wire.settings.response(&r.request, code).build();
            self.wire.respond(r.server_key, msg);
        }
        if dialog_dead {
            self.side_hung_up(r.to);
        }
    }

    /// A relayed request's client transaction ended: an answered INVITE
    /// relay (kept for 2xx retransmissions) is forgotten.
    pub(crate) fn relay_terminated(&mut self, ck: TxKey) {
        if self.call.relays.iter().any(|r| r.client_key == ck && !r.answered) {
            self.relay_failed(ck, false);
        } else {
            self.call.relays.retain(|r| r.client_key != ck);
        }
    }
}
