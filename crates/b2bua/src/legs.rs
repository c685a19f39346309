//! Outbound legs: the INVITE, its responses (PRACK, ACK, forks), CANCEL.
//! Each step is a method of the call's [`CallTurn`]; what it does to a leg
//! is one of the leg's transitions (`leg_state.rs`).

use crate::caller_state::Offer;
use crate::dialog::{self, Dialog, LegTemplate};
use crate::leg_state::{Early, Leg, LegAck, LegState, Progress, MAX_EARLY};
use crate::limits::INVITE_COPIED;
use crate::settings::after;
use crate::state::{Role, Side, MAX_FORKS, MAX_LEGS};
use crate::turn::CallTurn;
use crate::{B2buaError, CallEvent, DialTarget, LegRef};
use bytes::Bytes;
use sip_message::{digest, HeaderName, Message, MessageBuilder, Method};
use sip_transaction::cancel_for;

impl CallTurn<'_> {
    /// Sends a leg's INVITE.
    pub(crate) fn dial(&mut self, target: DialTarget) -> Result<LegRef, B2buaError> {
        if !self.call.caller.is_proceeding() {
            return Err(B2buaError::InvalidState("the caller already has a final response"));
        }
        if self.call.legs.len() >= MAX_LEGS {
            return Err(B2buaError::TooManyLegs(MAX_LEGS));
        }
        let ruri_ok = !target.request_uri.is_empty()
            && !target.request_uri.bytes().any(|b| b.is_ascii_whitespace() || b == 0);
        if !ruri_ok {
            return Err(B2buaError::BadTarget("Request-URI"));
        }
        if !dialog::safe_value(&target.to) || !dialog::safe_value(&target.from) {
            return Err(B2buaError::BadTarget("To or From"));
        }
        let l = self.call.legs.len() as u32;
        let call_id = self.wire.tokens.token(24);
        let tag = self.wire.tokens.token(10);
        let template = LegTemplate {
            local: dialog::with_tag(dialog::name_addr(&target.from).as_bytes(), &tag),
            call_id,
            local_tag: tag,
            request_uri: Bytes::from(target.request_uri.clone()),
            peer: target.next_hop,
            invite_seq: 1,
        };
        let invite = self.leg_invite(&template, &target).build();
        let key = self
            .wire
            .tx
            .send_request(self.now(), invite.clone(), template.peer)
            .map_err(B2buaError::Transaction)?;
        let (id, cid, ltag) = (self.call.id, template.call_id.clone(), template.local_tag.clone());
        self.call.legs.push(Leg::calling(template, key, invite, target.credentials));
        self.own(key, Role::LegInvite(l));
        self.wire.index.add_dialog(&cid, &ltag, id, Side::Leg(l));
        Ok(LegRef(l))
    }

    /// The INVITE of a leg made from `t` toward `target`: our own dialog,
    /// the caller's offer shared, the few headers copied within limits.
    fn leg_invite(&mut self, t: &LegTemplate, target: &DialTarget) -> MessageBuilder {
        let settings = self.wire.settings;
        let caller = &self.call.caller;
        let invite = caller.invite();
        let mf = dialog::max_forwards(&settings.cfg, invite.and_then(|i| i.max_forwards));
        let branch = self.wire.tx.new_branch();
        let mut b = Message::request(Method::Invite, t.request_uri.clone())
            .header(HeaderName::Via, settings.via(&t.peer, &branch))
            .header(HeaderName::MaxForwards, mf.to_string())
            .header(HeaderName::From, t.local.clone())
            .header(HeaderName::To, dialog::name_addr(&target.to))
            .header(HeaderName::CallId, t.call_id.clone())
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, settings.contact(&t.peer))
            .header(HeaderName::Allow, settings.allow.clone());
        if !matches!(caller.offer, Offer::Delayed) {
            // We PRACK reliable provisionals ourselves. With a delayed
            // offer the leg's offer must come in the 2xx, so no 100rel.
            b = b.header(HeaderName::Supported, "100rel");
        }
        if !settings.cfg.user_agent.is_empty() {
            b = b.header(HeaderName::UserAgent, settings.cfg.user_agent.clone());
        }
        if let Some(i) = invite {
            b = settings.cfg.limits.copy_headers(b, &i.request, INVITE_COPIED);
        }
        for (n, v) in &target.extra_headers {
            if dialog::safe_name(n) && dialog::safe_value(v) {
                b = b.header_named(n, Bytes::from(v.clone()));
            }
        }
        if let Some(sdp) = &target.sdp {
            b = b.body(Bytes::from_static(b"application/sdp"), sdp.clone());
        } else if let Some(body) = caller.offer.sdp() {
            b = b.body(body.ctype.clone(), body.bytes.clone());
        }
        b
    }

    /// A response to a leg's INVITE (from its transaction).
    pub(crate) fn leg_response(&mut self, l: u32, resp: &Message) {
        match resp.status() {
            Some(code @ 100..=199) => self.leg_provisional(l, code, resp),
            Some(200..=299) => self.leg_2xx(l, resp),
            Some(401 | 407) if self.leg_authenticate(l, resp) => {}
            Some(code) => self.leg_final(l, code),
            None => {}
        }
    }

    /// Answers a callee's 401/407 with credentials: the same INVITE (Call-ID,
    /// From tag, body) with CSeq + 1, a new branch and the digest header.
    /// At most twice per leg (a second challenge may be a stale nonce), and
    /// not once a CANCEL was asked for. `false` when there is nothing to
    /// answer with.
    fn leg_authenticate(&mut self, l: u32, resp: &Message) -> bool {
        let Some(leg) = self.call.leg(l) else { return false };
        let inviting = match leg.state() {
            LegState::Calling(i) | LegState::Proceeding(i) if i.auth_tries < 2 => i,
            _ => return false,
        };
        let Some((user, pass)) = inviting.credentials.as_ref() else { return false };
        let (challenge_name, answer_name) = if resp.status() == Some(407) {
            (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization)
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        let t = leg.template();
        let uri = String::from_utf8_lossy(&t.request_uri).into_owned();
        let cnonce = String::from_utf8_lossy(&self.wire.tokens.token(16)).into_owned();
        let who = digest::Credentials { user, password: pass };
        let Some(answer) = resp
            .header_values(challenge_name)
            .find_map(|ch| digest::authorization(ch, "INVITE", &uri, who, &cnonce))
        else {
            return false;
        };
        let seq = t.invite_seq + 1;
        let branch = self.wire.tx.new_branch();
        let mut invite = inviting.request.clone();
        invite.replace_top_via(Bytes::from(self.wire.settings.via(&t.peer, &branch)));
        invite.set_header(HeaderName::CSeq, format!("{seq} INVITE"));
        invite.remove_headers(HeaderName::Authorization);
        invite.remove_headers(HeaderName::ProxyAuthorization);
        invite.insert_header_before(HeaderName::CSeq, answer_name, answer);
        let sent = self.wire.tx.send_request(self.wire.now, invite.clone(), t.peer);
        let Ok(key) = sent else { return false };
        if let Some(leg) = self.call.leg_mut(l) {
            leg.reinvited(invite, key, seq);
        }
        self.own(key, Role::LegInvite(l));
        true
    }

    /// A provisional response to a leg's INVITE: its early dialog (PRACKed
    /// when reliable), the first of each kind reported, and a CANCEL that
    /// waited for it sent.
    fn leg_provisional(&mut self, l: u32, code: u16, resp: &Message) {
        let id = self.call.id;
        if self.call.leg(l).is_none_or(Leg::invite_over) {
            return;
        }
        if let (true, Some(tag)) = (code > 100, resp.to_tag()) {
            if !self.early_dialog(l, tag, resp) {
                // Retransmitted or out of order: dropped (RFC 3262 4).
                return;
            }
        }
        let settings = self.wire.settings;
        let limits = &settings.cfg.limits;
        let Some(leg) = self.call.legs.get_mut(l as usize) else { return };
        let Some(inviting) = leg.inviting_mut() else { return };
        let progress = if code == 100 {
            Progress::Trying
        } else if let Some(sdp) = limits.body(resp) {
            inviting.early_sdp = Some(sdp);
            Progress::EarlyMedia
        } else {
            Progress::Ringing
        };
        let news = inviting.reported.first(progress);
        let cancel_now = leg.provisional();
        if news {
            self.wire.emit(progress.event(id, LegRef(l)));
        }
        if let Some(reason) = cancel_now {
            self.send_cancel(l, reason);
        }
    }

    /// The early dialog of a provisional with To tag `tag` (made, or its
    /// target refreshed), and its PRACK when it is reliable (RFC 3262 4).
    /// `false` for a reliable provisional retransmitted or out of order.
    fn early_dialog(&mut self, l: u32, tag: &[u8], resp: &Message) -> bool {
        let Some(leg) = self.call.legs.get_mut(l as usize) else { return false };
        let Some((template, inviting)) = leg.template_and_inviting() else { return false };
        let found = inviting.early.iter().position(|e| e.dialog.remote_tag == tag);
        let idx = match found {
            Some(i) => {
                if let Some(e) = inviting.early.get_mut(i) {
                    e.dialog.refresh_target(resp);
                }
                Some(i)
            }
            None if inviting.early.len() < MAX_EARLY => {
                inviting.early.push(Early { dialog: Dialog::uac(template, resp), rseq: None });
                Some(inviting.early.len() - 1)
            }
            None => None,
        };
        let rseq = if resp.requires("100rel") { resp.rseq().ok().flatten() } else { None };
        let (Some(i), Some(rseq)) = (idx, rseq) else { return true };
        let Some(e) = inviting.early.get_mut(i) else { return false };
        if e.rseq.is_some_and(|last| rseq != last.wrapping_add(1)) {
            return false;
        }
        e.rseq = Some(rseq);
        let mf = self.wire.settings.cfg.max_forwards;
        let (b, dest) = self.wire.dialog_request(&mut e.dialog, Method::Prack, mf);
        let rack = format!("{rseq} {} INVITE", template.invite_seq);
        self.wire.send_detached(b.header(HeaderName::RAck, rack).build(), dest);
        true
    }

    /// A 2xx to a leg's INVITE (from its transaction, or past it): the
    /// answer, a retransmission, or another fork's (ACKed and BYEd).
    pub(crate) fn leg_2xx(&mut self, l: u32, resp: &Message) {
        let Some(leg) = self.call.leg(l) else { return };
        let tag = resp.to_tag().unwrap_or_default();
        if !leg.invite_over() {
            return self.leg_answered(l, resp);
        }
        if let Some(a) = leg.answered().filter(|a| a.dialog.remote_tag == tag) {
            if let LegAck::Sent(ack) = &a.ack {
                let ack = ack.clone();
                self.wire.send_stateless(&ack);
            }
            return;
        }
        if let Some((_, ack)) = leg.forks().killed.iter().find(|(t, _)| t == tag) {
            let ack = ack.clone();
            self.wire.send_stateless(&ack);
            return;
        }
        if leg.forks().killed.len() >= MAX_FORKS {
            return;
        }
        let ack = self.wire.kill_fork(leg.template(), leg.early_seq(tag), resp);
        if let Some(leg) = self.call.leg_mut(l) {
            leg.fork_killed(Bytes::copy_from_slice(tag), ack);
        }
    }

    /// The first 2xx of a leg: its dialog is confirmed, ACKed at once, or,
    /// with a delayed offer, when the caller's ACK brings the answer.
    fn leg_answered(&mut self, l: u32, resp: &Message) {
        let Some(leg) = self.call.leg(l) else { return };
        let mut d = Dialog::uac(leg.template(), resp);
        d.local_seq = leg.early_seq(resp.to_tag().unwrap_or_default());
        let invite_seq = leg.template().invite_seq;
        let answer = self.wire.settings.cfg.limits.body(resp);
        let delayed = matches!(self.call.caller.offer, Offer::Delayed);
        if self.call.origin == crate::state::Origin::Source(l) {
            // The source's offer: what the other legs are sent.
            self.call.caller.offer = answer.clone().into();
        }
        let ack = if delayed {
            LegAck::Held
        } else {
            let ack = self.wire.ack(&d, invite_seq, None);
            self.wire.send_stateless(&ack);
            LegAck::Sent(ack)
        };
        if let Some(leg) = self.call.leg_mut(l) {
            leg.confirmed(d, ack, answer);
        }
        self.wire.emit(CallEvent::LegAnswered { call: self.call.id, leg: LegRef(l) });
    }

    /// A 3xx-6xx to a leg's INVITE.
    fn leg_final(&mut self, l: u32, code: u16) {
        let Some(leg) = self.call.leg_mut(l) else { return };
        if leg.invite_over() {
            return;
        }
        let cancelled = leg.failed() && code == 487;
        let (call, leg) = (self.call.id, LegRef(l));
        self.wire.emit(if cancelled {
            CallEvent::LegCancelled { call, leg }
        } else {
            CallEvent::LegFailed { call, leg, code }
        });
    }

    /// Timer B, a transport error, or the CANCEL give-up.
    pub(crate) fn leg_gave_up(&mut self, l: u32) {
        let Some(leg) = self.call.leg_mut(l) else { return };
        if leg.invite_over() {
            return;
        }
        leg.failed();
        self.wire.emit(CallEvent::LegNoResponse { call: self.call.id, leg: LegRef(l) });
    }

    /// CANCEL now when a provisional came, else at the first one.
    pub(crate) fn cancel_leg(&mut self, l: u32, reason: Option<&str>) -> Result<(), B2buaError> {
        let leg = self.call.leg_mut(l).ok_or(B2buaError::UnknownLeg)?;
        let reason = reason
            .filter(|r| !r.is_empty() && dialog::safe_value(r))
            .map(|r| Bytes::from(r.to_owned()));
        match leg.state() {
            LegState::Calling(_) => {
                leg.cancel_asked(reason);
            }
            LegState::Proceeding(_) => self.send_cancel(l, reason),
            _ => {}
        }
        Ok(())
    }

    /// Sends the CANCEL of a leg's INVITE; it is given up 64*T1 later.
    fn send_cancel(&mut self, l: u32, reason: Option<Bytes>) {
        let Some(leg) = self.call.leg_mut(l) else { return };
        let Some(inviting) = leg.inviting() else { return };
        let mut cancel = cancel_for(&inviting.request);
        if let Some(r) = reason {
            cancel.insert_header_before(HeaderName::ContentLength, HeaderName::Reason, r);
        }
        self.wire.send_detached(cancel, leg.template().peer);
        leg.cancel_sent(after(self.wire.now, self.wire.settings.cfg.t1.saturating_mul(64)));
    }

    /// The CANCEL give-up (RFC 3261 9.1): no final 64*T1 after the CANCEL.
    pub(crate) fn leg_timers(&mut self) {
        for l in 0..self.call.legs.len() as u32 {
            let Some(leg) = self.call.leg(l) else { continue };
            if leg.cancel_deadline().is_some_and(|d| d <= self.wire.now) {
                self.wire.tx.terminate(leg.invite_key());
                self.leg_gave_up(l);
            }
        }
    }
}
