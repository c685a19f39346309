//! Everything a call's handlers share beside the call itself: settings,
//! randomness, the indexes and the output queues.

use crate::dialog::{self, Body, Dialog};
use crate::state::{Call, Owner, Role, Side, Stored};
use crate::{B2buaConfig, CallEvent, CallRef, LocalContact, Stateless};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use rustc_hash::FxHashMap;
use sip_message::{HeaderName, Message, MessageBuilder, Method, Peer};
use sip_transaction::{TransactionLayer, TxKey};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const TOKEN_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `now + d`, saturating.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

pub(crate) struct Env {
    pub(crate) cfg: B2buaConfig,
    /// The `Allow` value of our dialogs' messages.
    pub(crate) allow: Bytes,
    pub(crate) locals: Vec<LocalContact>,
    pub(crate) rng: StdRng,
    /// Keyed by the transaction layer's own handles: a fast hash.
    pub(crate) owned: FxHashMap<TxKey, Owner>,
    /// Keyed by Call-ID and tag from the wire: the default (keyed) hash.
    pub(crate) dialogs: HashMap<Box<[u8]>, (CallRef, Side)>,
    pub(crate) events: VecDeque<CallEvent>,
    pub(crate) stateless: VecDeque<Stateless>,
    /// Values beyond the copy limits, for the owner's log.
    pub(crate) notices: VecDeque<crate::limits::Notice>,
}

impl Env {
    /// `true` when an in-dialog request of `method` is relayed (see
    /// [`sip_message::SUPPORTED`]).
    pub(crate) fn relays(&self, method: &Method) -> bool {
        method.is_relayed_in_dialog()
    }

    /// `n` random alphanumerics.
    pub(crate) fn token(&mut self, n: usize) -> Bytes {
        let v: Vec<u8> =
            (0..n).map(|_| TOKEN_ALPHABET[self.rng.gen_range(0..TOKEN_ALPHABET.len())]).collect();
        Bytes::from(v)
    }

    pub(crate) fn emit(&mut self, ev: CallEvent) {
        self.events.push_back(ev);
    }

    pub(crate) fn send_stateless(&mut self, s: &Stored) {
        self.stateless.push_back(Stateless { peer: s.peer, message: s.message.clone() });
    }

    /// Records a key owned by `call`.
    pub(crate) fn own(&mut self, call: &mut Call, key: TxKey, role: Role) {
        self.owned.insert(key, Owner::Call(call.id, role));
        call.keys.push(key);
    }

    /// Records a key whose events are swallowed.
    pub(crate) fn detach(&mut self, key: TxKey) {
        self.owned.insert(key, Owner::Detached);
    }

    pub(crate) fn index_dialog(
        &mut self,
        call_id: &[u8],
        local_tag: &[u8],
        call: CallRef,
        s: Side,
    ) {
        self.dialogs.insert(dialog::dialog_key(call_id, local_tag).into_boxed_slice(), (call, s));
    }

    /// Answers a server transaction we do not track further.
    pub(crate) fn reply(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        key: TxKey,
        req: &Message,
        code: u16,
    ) {
        let mut b = self.response(req, code);
        if code == 405 {
            b = b.header(HeaderName::Allow, self.allow.clone());
        }
        if code == 500 || code == 491 {
            b = b.header(HeaderName::RetryAfter, "1");
        }
        // A refusal means the transaction is gone already: nothing to do.
        let _ = tx.send_response(now, key, b.build());
        self.detach(key);
    }

    /// `response_to(req, code)` plus our Server header.
    pub(crate) fn response(&self, req: &Message, code: u16) -> MessageBuilder {
        let b = Message::response_to(req, code);
        if self.cfg.user_agent.is_empty() {
            b
        } else {
            b.header(HeaderName::Server, self.cfg.user_agent.clone())
        }
    }

    /// A new request in dialog `d` (its CSeq advanced), with our Contact for
    /// target refresh requests, and where it goes.
    pub(crate) fn dialog_request(
        &mut self,
        tx: &mut TransactionLayer,
        d: &mut Dialog,
        method: Method,
        mf: u8,
    ) -> (MessageBuilder, Peer) {
        d.local_seq = d.local_seq.wrapping_add(1);
        let refresh = matches!(method, Method::Invite | Method::Update);
        let branch = tx.new_branch();
        let (mut b, dest) =
            dialog::request_in(d, method, d.local_seq, &branch, &self.locals, &self.cfg, mf);
        if refresh {
            b = b.header(HeaderName::Contact, dialog::contact_value(&self.locals, &dest));
        }
        (b, dest)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `seq` in dialog `d`
    /// (13.2.2.4), with `body` (the answer of a delayed offer).
    pub(crate) fn ack(
        &mut self,
        tx: &mut TransactionLayer,
        d: &Dialog,
        seq: u32,
        body: Option<Body>,
    ) -> Stored {
        let branch = tx.new_branch();
        let (mut b, peer) = dialog::request_in(
            d,
            Method::Ack,
            seq,
            &branch,
            &self.locals,
            &self.cfg,
            self.cfg.max_forwards,
        );
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        Stored { message: b.build(), peer }
    }

    /// Sends a BYE in `d`; the key is returned (not recorded).
    pub(crate) fn bye(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        d: &mut Dialog,
    ) -> Option<TxKey> {
        let mf = self.cfg.max_forwards;
        let (b, dest) = self.dialog_request(tx, d, Method::Bye, mf);
        tx.send_request(now, b.build(), dest).ok()
    }
}
