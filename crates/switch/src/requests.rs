//! Requests from the network before and outside any call: bytes parsed
//! and checked (400/416/420/501/505 or dropped), the transaction layer's
//! events routed to the B2BUA, REGISTER to the registrar, OPTIONS and the
//! other local answers. INVITEs go on to `invite.rs`.

use crate::input::{Datagram, Now};
use crate::output::{Event, Output, Token};
use crate::received::stamp_received;
use crate::switch::Switch;
use pbx_features::NotifyOutcome;
use sip_message::{validate, Message, Method, Peer, Verdict};
use sip_transaction::{Event as TxEvent, TxKey};
use tracing::debug;

impl Switch {
    pub(crate) fn on_datagram(&mut self, now: Now, d: Datagram) {
        if d.bytes.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)) {
            return; // a keep-alive (RFC 5626 CRLF) or padding
        }
        let peer = d.peer;
        let mut msg = match Message::parse(d.bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.dropped_in += 1;
                let reason = format!("unparsable: {e}");
                self.out.push_back(Output::Event(Event::Dropped { peer, reason }));
                return;
            }
        };
        self.counters.messages_in.count(&msg);
        if msg.is_request() {
            if !self.source_admitted(now, &msg, &peer) {
                return;
            }
            stamp_received(&mut msg, peer.remote, self.force_rport);
        }
        match validate(&msg, &self.policy) {
            Verdict::Drop(why) => {
                self.counters.dropped_in += 1;
                let reason = why.to_string();
                self.out.push_back(Output::Event(Event::Dropped { peer, reason }));
            }
            Verdict::Reject(r) => {
                // Answered statelessly: it may lack what a transaction is
                // keyed on.
                debug!(%peer, status = r.status, detail = %r.detail, "rejected");
                let resp = self.local.rejection(&msg, &r);
                self.transmit(peer, resp, Token::NONE);
            }
            Verdict::Accept => {
                if msg.is_request() && self.shed(now, &msg) {
                    let mut resp = self.local.status(&msg, 503);
                    let after = self.admission.cfg.retry_after_secs.to_string();
                    resp.push_header(sip_message::HeaderName::RetryAfter, after);
                    // Stateless (RFC 3261 8.2.7): no transaction is spent on
                    // it; its ACK matches none and is absorbed.
                    return self.transmit(peer, resp, Token::NONE);
                }
                self.tx.handle_incoming(now.at, msg, peer)
            }
        }
    }

    /// Per-source rate limit (carriers exempt): `false` when the request is
    /// dropped (its source is banned, or just was).
    fn source_admitted(&mut self, now: Now, msg: &Message, peer: &Peer) -> bool {
        if self.admission.cfg.source_rate == 0
            || self.routes.carrier_for_source(peer.remote.ip()).is_some()
        {
            return true;
        }
        match self.admission.source(peer.remote.ip(), now.at) {
            Ok(()) => true,
            Err(ban) => {
                self.counters.rate_limited += 1;
                if let Some(ban) = ban {
                    let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
                    let secs = self.admission.cfg.source_ban.as_secs();
                    let ev = registrar::SecurityEvent::RateLimited { src: ban.src, method, secs };
                    self.counters.security_event(&ev);
                    self.out.push_back(Output::Event(Event::Security(ev)));
                }
                false
            }
        }
    }

    /// Admission control: `true` when this new INVITE or REGISTER is to be
    /// answered 503. Never in-dialog requests, retransmissions, ACK,
    /// CANCEL, BYE or anything else.
    fn shed(&mut self, now: Now, msg: &Message) -> bool {
        let invite = msg.method() == Some(&Method::Invite);
        let sheddable = match msg.method() {
            Some(Method::Invite) if msg.to_tag().is_none() => {
                self.admission.sheds_invites(self.tx.len())
            }
            Some(Method::Register) => self.admission.cfg.max_register_rate > 0,
            _ => false,
        };
        // Requests already taken (retransmissions) are never shed; the
        // lookup is paid only when shedding is possible.
        if !sheddable || self.tx.matches_server(msg) {
            return false;
        }
        let verdict = if invite {
            let call_id = msg.call_id().unwrap_or_default();
            let via = msg.top_via().ok();
            let branch = via.as_ref().and_then(|v| v.branch()).unwrap_or_default();
            self.admission.invite(self.tx.len(), call_id, branch)
        } else {
            self.admission.register(now.at)
        };
        verdict == crate::admission::Admit::Shed
    }

    pub(crate) fn on_tx_event(&mut self, now: Now, ev: TxEvent) {
        // SUBSCRIBE (new, refresh or unsubscribe) is the busy lamps'
        // business, never a call's.
        let ev = match ev {
            TxEvent::NewRequest { key, request, peer }
                if request.method() == Some(&Method::Subscribe) =>
            {
                return self.on_subscribe(now, key, request, peer);
            }
            ev => ev,
        };
        let Some(ev) = self.b2bua.handle_event(&mut self.tx, now.at, ev) else { return };
        match ev {
            TxEvent::NewRequest { key, request, peer } => self.on_request(now, key, request, peer),
            TxEvent::Cancel { key, request, cancels, .. } => {
                // CANCELs of calls we serve were taken by the B2BUA; this
                // one matched none. If it matched an INVITE transaction we
                // answered at once (404, 407...), it is simply confirmed.
                let code = if cancels.is_some() { 200 } else { 481 };
                let resp = self.local.status(&request, code);
                self.respond(now, key, resp);
            }
            TxEvent::Stray { message, peer } => {
                debug!(%peer, method = ?message.method(), status = ?message.status(), "stray message");
            }
            TxEvent::Response { key, response } => {
                let code = response.status().unwrap_or_default();
                if !self.notify_outcome(now, key, NotifyOutcome::Response(code)) {
                    debug!(%key, "response for an unknown client transaction")
                }
            }
            TxEvent::Timeout { key } => {
                if !self.notify_outcome(now, key, NotifyOutcome::Timeout) {
                    debug!(%key, "transaction timeout")
                }
            }
            TxEvent::TransportError { key } => {
                if !self.notify_outcome(now, key, NotifyOutcome::TransportError) {
                    debug!(%key, "transaction transport error")
                }
            }
            TxEvent::Terminated { key } => {
                self.notify_terminated(key);
            }
        }
    }

    pub(crate) fn respond(&mut self, now: Now, key: TxKey, resp: Message) {
        if let Err(e) = self.tx.send_response(now.at, key, resp) {
            debug!(%key, error = ?e, "could not send response");
        }
    }

    fn on_request(&mut self, now: Now, key: TxKey, req: Message, peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Ack);
        match method {
            Method::Invite => return self.invite(now, key, req, peer),
            Method::Register => {
                match self.registrar.handle(now.at, now.wall, &req, &peer) {
                    Some(resp) => self.respond(now, key, resp),
                    None => self.tx.terminate(key),
                }
                return;
            }
            _ => {}
        }
        let to_us = matches!(req.request_uri(), Some(Ok(u)) if self.identity.is_local(&u));
        let resp = if method == Method::Options && to_us {
            self.local.options_ok(&req)
        } else if req.max_forwards().ok().flatten() == Some(0) {
            self.local.status(&req, 483)
        } else if method == Method::Bye {
            self.local.status(&req, 481)
        } else {
            self.local.status(&req, 404)
        };
        self.respond(now, key, resp);
    }
}
