//! The per-call context. Every step of a call (in `legs.rs`, `caller.rs`,
//! `relay.rs`) is a method of [`CallTurn`]: one call, worked on at one
//! instant, with the [`Wire`] through which it acts on the outside.

use crate::dialog::{Body, Dialog, LegTemplate};
use crate::index::CallIndex;
use crate::limits::Notice;
use crate::settings::{Settings, Tokens};
use crate::state::{Call, Role, Stored};
use crate::{CallEvent, Stateless};
use sip_message::{HeaderName, Message, MessageBuilder, Method, Peer};
use sip_transaction::{TransactionLayer, TxKey};
use std::collections::VecDeque;
use std::time::Instant;

/// What a manager hands its owner: call events, messages to send outside
/// any transaction, and values found beyond the copy limits.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) events: VecDeque<CallEvent>,
    pub(crate) stateless: VecDeque<Stateless>,
    pub(crate) notices: VecDeque<Notice>,
}

/// Everything a step uses to act on the outside at one instant: the time,
/// the owner's transaction layer, our settings and identifiers, the index
/// that files the keys and dialogs it makes, and the output queues.
pub(crate) struct Wire<'a> {
    pub(crate) now: Instant,
    pub(crate) tx: &'a mut TransactionLayer,
    pub(crate) settings: &'a Settings,
    pub(crate) tokens: &'a mut Tokens,
    pub(crate) index: &'a mut CallIndex,
    pub(crate) out: &'a mut Outputs,
}

impl Wire<'_> {
    pub(crate) fn emit(&mut self, ev: CallEvent) {
        self.out.events.push_back(ev);
    }

    /// Sends `s` outside any transaction.
    pub(crate) fn send_stateless(&mut self, s: &Stored) {
        self.out.stateless.push_back(Stateless { peer: s.peer, message: s.message.clone() });
    }

    /// Sends a response in server transaction `key`. A refusal means the
    /// transaction is gone already (a transport error): nothing to do.
    pub(crate) fn respond(&mut self, key: TxKey, msg: Message) {
        let _ = self.tx.send_response(self.now, key, msg);
    }

    /// Sends a request in a new client transaction whose events are
    /// swallowed (CANCEL, PRACK, the BYE of a killed fork).
    pub(crate) fn send_detached(&mut self, msg: Message, peer: Peer) {
        if let Ok(k) = self.tx.send_request(self.now, msg, peer) {
            self.index.detach(k);
        }
    }

    /// Answers a server transaction we do not track further.
    pub(crate) fn reply(&mut self, key: TxKey, req: &Message, code: u16) {
        let mut b = self.settings.response(req, code);
        if code == 405 {
            b = b.header(HeaderName::Allow, self.settings.allow.clone());
        }
        if code == 500 || code == 491 {
            b = b.header(HeaderName::RetryAfter, "1");
        }
        self.respond(key, b.build());
        self.index.detach(key);
    }

    /// A new request in dialog `d` (its CSeq advanced) with Max-Forwards
    /// `mf`, with our Contact for target refresh requests, and where it
    /// goes.
    pub(crate) fn dialog_request(
        &mut self,
        d: &mut Dialog,
        method: Method,
        mf: u8,
    ) -> (MessageBuilder, Peer) {
        d.local_seq = d.local_seq.wrapping_add(1);
        let refresh = matches!(method, Method::Invite | Method::Update);
        let branch = self.tx.new_branch();
        let (mut b, dest) = self.settings.request_in(d, method, d.local_seq, &branch, mf);
        if refresh {
            b = b.header(HeaderName::Contact, self.settings.contact(&dest));
        }
        (b, dest)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `seq` in dialog `d`
    /// (13.2.2.4), with `body` (the answer of a delayed offer); not sent.
    pub(crate) fn ack(&mut self, d: &Dialog, seq: u32, body: Option<Body>) -> Stored {
        let branch = self.tx.new_branch();
        self.settings.ack(d, seq, &branch, body)
    }

    /// Sends a BYE in `d`; the key is returned (not recorded).
    pub(crate) fn bye(&mut self, d: &mut Dialog) -> Option<TxKey> {
        let mf = self.settings.cfg.max_forwards;
        let (b, dest) = self.dialog_request(d, Method::Bye, mf);
        self.tx.send_request(self.now, b.build(), dest).ok()
    }

    /// ACKs a 2xx of a leg made from `t` that must not become a dialog of
    /// ours (the early dialog of its fork used CSeq `seq`), then BYEs it.
    /// The ACK is returned, to send again on retransmissions.
    pub(crate) fn kill_fork(&mut self, t: &LegTemplate, seq: u32, resp: &Message) -> Stored {
        let mut d = Dialog::uac(t, resp);
        d.local_seq = seq;
        let ack = self.ack(&d, t.invite_seq, None);
        self.send_stateless(&ack);
        if let Some(k) = self.bye(&mut d) {
            self.index.detach(k);
        }
        ack
    }
}

/// One call being worked on: the per-call context every step takes. The
/// call's own state changes only through its transitions (see
/// `caller_state.rs` and `leg_state.rs`); what a step sends goes through
/// the [`Wire`].
pub(crate) struct CallTurn<'a> {
    pub(crate) call: &'a mut Call,
    pub(crate) wire: Wire<'a>,
}

impl CallTurn<'_> {
    pub(crate) fn now(&self) -> Instant {
        self.wire.now
    }

    /// Records a key owned by the call.
    pub(crate) fn own(&mut self, key: TxKey, role: Role) {
        self.wire.index.own(self.call, key, role);
    }
}
