//! Outbound legs: the INVITE, its responses (PRACK, ACK, forks), CANCEL.

use crate::dialog::{self, Dialog};
use crate::env::{after, Env};
use crate::limits::INVITE_COPIED;
use crate::state::{
    Call, CallerState, Cancel, Early, Leg, Origin, Role, Side, Stored, MAX_EARLY, MAX_FORKS,
    MAX_LEGS, SEEN_EARLY_MEDIA, SEEN_RINGING, SEEN_TRYING,
};
use crate::{B2buaError, CallEvent, DialTarget, LegRef};
use bytes::Bytes;
use sip_message::{digest, HeaderName, Message, Method};
use sip_transaction::{cancel_for, TransactionLayer};
use std::time::Instant;

impl Leg {
    /// The dialog fields known before any response: what a fork's dialog
    /// is made from.
    pub(crate) fn template(&self) -> Dialog {
        Dialog {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: Bytes::new(),
            local: self.local.clone(),
            remote: Bytes::new(),
            local_seq: self.invite_seq,
            remote_seq: None,
            remote_target: self.request_uri.clone(),
            route_set: Vec::new(),
            peer: self.peer,
        }
    }

    /// The CSeq our last request in the early dialog with `tag` used.
    pub(crate) fn early_seq(&self, tag: &[u8]) -> u32 {
        self.early
            .iter()
            .find(|e| e.dialog.remote_tag == tag)
            .map_or(self.invite_seq, |e| e.dialog.local_seq)
    }
}

impl Env {
    /// Sends a leg's INVITE.
    pub(crate) fn dial(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        target: DialTarget,
    ) -> Result<LegRef, B2buaError> {
        if call.caller.state != CallerState::Proceeding {
            return Err(B2buaError::InvalidState("the caller already has a final response"));
        }
        if call.legs.len() >= MAX_LEGS {
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
        let l = call.legs.len() as u32;
        let call_id = self.token(24);
        let tag = self.token(10);
        let peer = target.next_hop;
        let local = dialog::with_tag(dialog::name_addr(&target.from).as_bytes(), &tag);
        let request_uri = Bytes::from(target.request_uri);
        let mf = dialog::max_forwards(&self.cfg, call.caller.max_forwards);
        let branch = tx.new_branch();
        let mut b = Message::request(Method::Invite, request_uri.clone())
            .header(HeaderName::Via, dialog::via_value(&self.locals, &peer, &branch))
            .header(HeaderName::MaxForwards, mf.to_string())
            .header(HeaderName::From, local.clone())
            .header(HeaderName::To, dialog::name_addr(&target.to))
            .header(HeaderName::CallId, call_id.clone())
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, dialog::contact_value(&self.locals, &peer))
            .header(HeaderName::Allow, self.allow.clone());
        if call.caller.offer.is_some() {
            // We PRACK reliable provisionals ourselves. With a delayed
            // offer the leg's offer must come in the 2xx, so no 100rel.
            b = b.header(HeaderName::Supported, "100rel");
        }
        if !self.cfg.user_agent.is_empty() {
            b = b.header(HeaderName::UserAgent, self.cfg.user_agent.clone());
        }
        b = self.cfg.limits.copy_headers(b, &call.caller.invite, INVITE_COPIED);
        for (n, v) in &target.extra_headers {
            if dialog::safe_name(n) && dialog::safe_value(v) {
                b = b.header_named(n, Bytes::from(v.clone()));
            }
        }
        if let Some(body) = &call.caller.offer {
            b = b.body(body.ctype.clone(), body.bytes.clone());
        }
        let invite = b.build();
        let key = tx.send_request(now, invite.clone(), peer).map_err(B2buaError::Transaction)?;
        call.legs.push(Leg {
            peer,
            invite,
            invite_key: key,
            invite_seq: 1,
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            local,
            request_uri,
            early: Vec::new(),
            dialog: None,
            provisional: false,
            final_code: None,
            gave_up: false,
            ack: None,
            ack_held: false,
            early_sdp: None,
            answer: None,
            cancel: Cancel::None,
            bye_key: None,
            ended: false,
            pending: None,
            seen: 0,
            forks: Vec::new(),
            credentials: target.credentials,
            auth_tries: 0,
        });
        self.own(call, key, Role::LegInvite(l));
        self.index_dialog(&call_id, &tag, call.id, Side::Leg(l));
        Ok(LegRef(l))
    }

    /// A response to a leg's INVITE (from its transaction, or a stray 2xx).
    pub(crate) fn leg_response(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        resp: &Message,
    ) {
        match resp.status() {
            Some(code @ 100..=199) => self.leg_provisional(tx, now, call, l, code, resp),
            Some(200..=299) => self.leg_2xx(tx, now, call, l, resp),
            Some(401 | 407) if self.leg_authenticate(tx, now, call, l, resp) => {}
            Some(code) => self.leg_final(call, l, code),
            None => {}
        }
    }

    /// Answers a callee's 401/407 with credentials: the same INVITE (Call-ID,
    /// From tag, body) with CSeq + 1, a new branch and the digest header.
    /// At most twice per leg (a second challenge may be a stale nonce).
    /// `false` when there is nothing to answer with.
    fn leg_authenticate(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        resp: &Message,
    ) -> bool {
        let Some(leg) = call.legs.get_mut(l as usize) else { return false };
        if leg.invite_over() || leg.auth_tries >= 2 || !matches!(leg.cancel, Cancel::None) {
            return false;
        }
        let Some((user, pass)) = leg.credentials.clone() else { return false };
        let proxy = resp.status() == Some(407);
        let (challenge_name, answer_name) = if proxy {
            (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization)
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        let uri = String::from_utf8_lossy(&leg.request_uri).into_owned();
        let cnonce = String::from_utf8_lossy(&self.token(16)).into_owned();
        let who = digest::Credentials { user: &user, password: &pass };
        let Some(answer) = resp
            .header_values(challenge_name)
            .find_map(|ch| digest::authorization(ch, "INVITE", &uri, who, &cnonce))
        else {
            return false;
        };
        let seq = leg.invite_seq + 1;
        let branch = tx.new_branch();
        let mut invite = leg.invite.clone();
        invite.replace_top_via(Bytes::from(dialog::via_value(&self.locals, &leg.peer, &branch)));
        invite.set_header(HeaderName::CSeq, format!("{seq} INVITE"));
        invite.remove_headers(HeaderName::Authorization);
        invite.remove_headers(HeaderName::ProxyAuthorization);
        invite.insert_header_before(HeaderName::CSeq, answer_name, answer);
        let Ok(key) = tx.send_request(now, invite.clone(), leg.peer) else { return false };
        leg.invite = invite;
        leg.invite_key = key;
        leg.invite_seq = seq;
        leg.auth_tries += 1;
        // A new INVITE transaction: a CANCEL waits for a provisional
        // response to it (RFC 3261 9.1), not to the one challenged.
        leg.provisional = false;
        self.own(call, key, Role::LegInvite(l));
        true
    }

    fn leg_provisional(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        code: u16,
        resp: &Message,
    ) {
        let id = call.id;
        let Some(leg) = call.legs.get_mut(l as usize) else { return };
        if leg.invite_over() {
            return;
        }
        if let (true, Some(tag)) = (code > 100, resp.to_tag()) {
            let idx = match leg.early.iter().position(|e| e.dialog.remote_tag == tag) {
                Some(i) => {
                    if let Some(e) = leg.early.get_mut(i) {
                        e.dialog.refresh_target(resp);
                    }
                    Some(i)
                }
                None if leg.early.len() < MAX_EARLY => {
                    let t = leg.template();
                    let d = Dialog::uac(
                        t.call_id,
                        t.local_tag,
                        t.local,
                        t.local_seq,
                        t.peer,
                        &t.remote_target,
                        resp,
                    );
                    leg.early.push(Early { dialog: d, rseq: None });
                    Some(leg.early.len() - 1)
                }
                None => None,
            };
            // RFC 3262 4: PRACK in-order reliable provisionals; drop the
            // retransmitted and out-of-order ones.
            let rseq = if resp.requires("100rel") { resp.rseq().ok().flatten() } else { None };
            if let (Some(i), Some(rseq)) = (idx, rseq) {
                let invite_seq = leg.invite_seq;
                let Some(e) = leg.early.get_mut(i) else { return };
                if e.rseq.is_some_and(|last| rseq != last.wrapping_add(1)) {
                    return;
                }
                e.rseq = Some(rseq);
                let mf = self.cfg.max_forwards;
                let (b, dest) = self.dialog_request(tx, &mut e.dialog, Method::Prack, mf);
                let prack =
                    b.header(HeaderName::RAck, format!("{rseq} {invite_seq} INVITE")).build();
                if let Ok(k) = tx.send_request(now, prack, dest) {
                    self.detach(k);
                }
            }
        }
        leg.provisional = true;
        if code == 100 {
            if leg.seen & SEEN_TRYING == 0 {
                leg.seen |= SEEN_TRYING;
                self.emit(CallEvent::LegTrying { call: id, leg: LegRef(l) });
            }
        } else if let Some(sdp) = self.cfg.limits.body(resp) {
            leg.early_sdp = Some(sdp);
            if leg.seen & SEEN_EARLY_MEDIA == 0 {
                leg.seen |= SEEN_EARLY_MEDIA;
                self.emit(CallEvent::LegEarlyMedia { call: id, leg: LegRef(l) });
            }
        } else if leg.seen & SEEN_RINGING == 0 {
            leg.seen |= SEEN_RINGING;
            self.emit(CallEvent::LegRinging { call: id, leg: LegRef(l) });
        }
        if let Cancel::Pending(reason) = &leg.cancel {
            let reason = reason.clone();
            self.send_cancel(tx, now, call, l, reason);
        }
    }

    /// A 2xx to a leg's INVITE: the answer, a retransmission, or another
    /// fork's (ACKed and BYEd).
    pub(crate) fn leg_2xx(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        resp: &Message,
    ) {
        let id = call.id;
        let delayed = call.caller.offer.is_none();
        let Some(leg) = call.legs.get_mut(l as usize) else { return };
        let tag = resp.to_tag().unwrap_or_default();
        let confirmed_tag = leg.dialog.as_ref().map(|d| d.remote_tag.clone());
        match confirmed_tag {
            None if !leg.invite_over() => {
                let t = leg.template();
                let mut d = Dialog::uac(
                    t.call_id,
                    t.local_tag,
                    t.local,
                    t.local_seq,
                    t.peer,
                    &t.remote_target,
                    resp,
                );
                d.local_seq = leg.early_seq(tag);
                leg.final_code = resp.status();
                leg.cancel = Cancel::Done;
                leg.answer = self.cfg.limits.body(resp);
                if call.origin == Origin::Source(l) {
                    // The source's offer: what the other legs are sent.
                    call.caller.offer = leg.answer.clone();
                }
                if delayed {
                    leg.ack_held = true;
                } else {
                    let ack = self.ack(tx, &d, leg.invite_seq, None);
                    self.send_stateless(&ack);
                    leg.ack = Some(ack);
                }
                leg.dialog = Some(d);
                self.emit(CallEvent::LegAnswered { call: id, leg: LegRef(l) });
            }
            Some(t) if t == tag => {
                if let Some(ack) = leg.ack.clone() {
                    self.send_stateless(&ack);
                }
            }
            _ => {
                if let Some((_, ack)) = leg.forks.iter().find(|(t, _)| t == tag) {
                    let ack = ack.clone();
                    self.send_stateless(&ack);
                    return;
                }
                if leg.forks.len() >= MAX_FORKS {
                    return;
                }
                let seq = leg.early_seq(tag);
                let ack = self.kill_fork(tx, now, &leg.template(), seq, leg.invite_seq, resp);
                leg.forks.push((Bytes::copy_from_slice(tag), ack));
            }
        }
    }

    /// ACKs a 2xx that must not become a dialog of ours, then BYEs it.
    pub(crate) fn kill_fork(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        t: &Dialog,
        seq: u32,
        invite_seq: u32,
        resp: &Message,
    ) -> Stored {
        let mut d = Dialog::uac(
            t.call_id.clone(),
            t.local_tag.clone(),
            t.local.clone(),
            seq,
            t.peer,
            &t.remote_target,
            resp,
        );
        let ack = self.ack(tx, &d, invite_seq, None);
        self.send_stateless(&ack);
        if let Some(k) = self.bye(tx, now, &mut d) {
            self.detach(k);
        }
        ack
    }

    /// A 3xx-6xx to a leg's INVITE.
    fn leg_final(&mut self, call: &mut Call, l: u32, code: u16) {
        let id = call.id;
        let Some(leg) = call.legs.get_mut(l as usize) else { return };
        if leg.invite_over() {
            return;
        }
        leg.final_code = Some(code);
        let cancelled = matches!(leg.cancel, Cancel::Sent(_)) && code == 487;
        leg.cancel = Cancel::Done;
        self.emit(if cancelled {
            CallEvent::LegCancelled { call: id, leg: LegRef(l) }
        } else {
            CallEvent::LegFailed { call: id, leg: LegRef(l), code }
        });
    }

    /// Timer B, a transport error, or the CANCEL give-up.
    pub(crate) fn leg_gave_up(&mut self, call: &mut Call, l: u32) {
        let id = call.id;
        let Some(leg) = call.legs.get_mut(l as usize) else { return };
        if leg.invite_over() {
            return;
        }
        leg.gave_up = true;
        leg.cancel = Cancel::Done;
        self.emit(CallEvent::LegNoResponse { call: id, leg: LegRef(l) });
    }

    /// CANCEL now when a provisional came, else at the first one.
    pub(crate) fn cancel_leg(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        reason: Option<&str>,
    ) -> Result<(), B2buaError> {
        let leg = call.legs.get_mut(l as usize).ok_or(B2buaError::UnknownLeg)?;
        if leg.invite_over() || leg.cancel != Cancel::None {
            return Ok(());
        }
        let reason = reason
            .filter(|r| !r.is_empty() && dialog::safe_value(r))
            .map(|r| Bytes::from(r.to_owned()));
        if leg.provisional {
            self.send_cancel(tx, now, call, l, reason);
        } else {
            leg.cancel = Cancel::Pending(reason);
        }
        Ok(())
    }

    fn send_cancel(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        call: &mut Call,
        l: u32,
        reason: Option<Bytes>,
    ) {
        let Some(leg) = call.legs.get_mut(l as usize) else { return };
        let mut cancel = cancel_for(&leg.invite);
        if let Some(r) = reason {
            cancel.insert_header_before(HeaderName::ContentLength, HeaderName::Reason, r);
        }
        if let Ok(k) = tx.send_request(now, cancel, leg.peer) {
            self.detach(k);
        }
        leg.cancel = Cancel::Sent(after(now, self.cfg.t1.saturating_mul(64)));
    }

    /// The CANCEL give-up (RFC 3261 9.1): no final 64*T1 after the CANCEL.
    pub(crate) fn leg_timers(&mut self, tx: &mut TransactionLayer, now: Instant, call: &mut Call) {
        for l in 0..call.legs.len() as u32 {
            let due = match call.legs.get(l as usize).map(|leg| (&leg.cancel, leg.invite_key)) {
                Some((Cancel::Sent(d), key)) if *d <= now => Some(key),
                _ => None,
            };
            if let Some(key) = due {
                tx.terminate(key);
                self.leg_gave_up(call, l);
            }
        }
    }
}
