//! An outbound leg and its life as one state: [`LegState`]. The methods
//! of [`Leg`] that take `&mut self` are its transitions, the only way a leg
//! changes; the steps that send its messages are in `legs.rs`.
//!
//! ```text
//!  Calling ──provisional──▶ Proceeding ──CANCEL sent──▶ Cancelling
//!     │ cancel asked            │                           │
//!     ▼                         │                           │
//!  CancelAsked ─provisional: CANCEL sent────────────────────┘
//!     (any of the four) ──2xx──▶ Confirmed ──our BYE──▶ Terminating
//!     (any of the four) ──3xx-6xx, no response──▶ Failed      │
//!                        Confirmed ──its BYE, 481, 408──▶ Ended ◀─┘
//! ```
//!
//! What a leg keeps is what it needs to send its next requests: its
//! template (our tags, Call-ID, From, the target and the peer), the INVITE
//! only while it may still be CANCELed or re-sent with credentials, then
//! the confirmed dialog and the ACK its 2xx retransmissions get again.
//! A step that must wait for something outside SIP (an anchored media
//! offer, a relay through another node) is one more state before
//! `Calling`.

use crate::dialog::{Body, Dialog, LegTemplate};
use crate::state::{Pending2xx, Stored};
use crate::{CallEvent, CallRef, LegRef};
use bytes::Bytes;
use sip_message::Message;
use sip_transaction::TxKey;
use std::time::Instant;

/// Most early dialogs kept per leg (downstream forking).
pub(crate) const MAX_EARLY: usize = 8;

/// An early dialog of a leg (one per downstream fork).
#[derive(Debug)]
pub(crate) struct Early {
    pub(crate) dialog: Dialog,
    /// RSeq of the last in-order reliable provisional.
    pub(crate) rseq: Option<u32>,
}

/// A kind of provisional response reported as a leg event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// 100 Trying.
    Trying = 1,
    /// 180-182, or 183 without SDP.
    Ringing = 2,
    /// 183 with SDP.
    EarlyMedia = 4,
}

impl Progress {
    /// The event that reports it for leg `leg` of `call`.
    pub(crate) fn event(self, call: CallRef, leg: LegRef) -> CallEvent {
        match self {
            Progress::Trying => CallEvent::LegTrying { call, leg },
            Progress::Ringing => CallEvent::LegRinging { call, leg },
            Progress::EarlyMedia => CallEvent::LegEarlyMedia { call, leg },
        }
    }
}

/// The kinds of provisional responses a leg reported already: each is
/// reported once (a set, not a state: a 180 after a 183 is still news).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reported(u8);

impl Reported {
    /// `true` the first time `p` is seen (it is recorded).
    pub(crate) fn first(&mut self, p: Progress) -> bool {
        let bit = p as u8;
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }
}

/// A leg's INVITE transaction in progress: what its CANCEL, its re-send
/// with credentials and its provisional responses need.
#[derive(Debug)]
pub(crate) struct Inviting {
    /// The INVITE as sent.
    pub(crate) request: Message,
    pub(crate) early: Vec<Early>,
    /// The latest early SDP (183), for the caller's 183.
    pub(crate) early_sdp: Option<Body>,
    pub(crate) reported: Reported,
    /// Credentials for the callee's 401/407, and how often they were used.
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) auth_tries: u8,
}

impl Inviting {
    pub(crate) fn new(request: Message, credentials: Option<(String, String)>) -> Inviting {
        Inviting {
            request,
            early: Vec::new(),
            early_sdp: None,
            reported: Reported::default(),
            credentials,
            auth_tries: 0,
        }
    }
}

/// Our ACK to a leg's 2xx.
#[derive(Debug)]
pub(crate) enum LegAck {
    /// Delayed offer: the ACK waits for the caller's answer.
    Held,
    /// Sent; sent again for each retransmission of the 2xx.
    Sent(Stored),
    /// None of ours: the leg's INVITE came to us (a call pickup), and the
    /// ACK is the phone's, for our 2xx.
    Theirs,
}

/// An answered leg: its confirmed dialog and what came with the 2xx.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) dialog: Dialog,
    pub(crate) ack: LegAck,
    /// The 2xx's body, until it goes to the caller.
    pub(crate) answer: Option<Body>,
    /// Our 2xx to a re-INVITE from the leg, until its ACK.
    pub(crate) pending: Option<Pending2xx>,
}

/// Where an outbound leg stands.
#[derive(Debug)]
pub(crate) enum LegState {
    /// The INVITE is out, no provisional response to it yet: a CANCEL must
    /// wait for one (RFC 3261 9.1).
    Calling(Box<Inviting>),
    /// As `Calling`, and a CANCEL was asked for: it goes with the first
    /// provisional response, with this Reason.
    CancelAsked(Box<Inviting>, Option<Bytes>),
    /// A provisional response came: a CANCEL may go at once.
    Proceeding(Box<Inviting>),
    /// Our CANCEL is out: without a final response by the instant, the
    /// INVITE is given up.
    Cancelling(Box<Inviting>, Instant),
    /// A 2xx: the leg's dialog is confirmed and up.
    Confirmed(Box<Answered>),
    /// Our BYE is out, in this client transaction.
    Terminating(Box<Answered>, TxKey),
    /// A 3xx-6xx, no response, or cancelled: there was no dialog.
    Failed,
    /// The confirmed dialog is over (a BYE either way, a 481 or 408);
    /// kept for the 2xx retransmissions it may still get.
    Ended(Box<Answered>),
}

/// What a leg keeps of other downstream forks once its INVITE is over.
#[derive(Debug, Default)]
pub(crate) struct OtherForks {
    /// The last CSeq of each early dialog, by remote tag: a late 2xx of
    /// that fork is BYEd with the next one.
    pub(crate) early_seqs: Vec<(Bytes, u32)>,
    /// The 2xx of forks we ACKed and BYEd: their tag and our ACK, sent
    /// again for each retransmission.
    pub(crate) killed: Vec<(Bytes, Stored)>,
}

/// An outbound leg.
#[derive(Debug)]
pub(crate) struct Leg {
    template: LegTemplate,
    /// The current INVITE client transaction.
    invite_key: TxKey,
    state: LegState,
    forks: OtherForks,
}

impl Leg {
    /// A leg whose INVITE `request` (made from `template`) went out in
    /// transaction `key`.
    pub(crate) fn calling(
        template: LegTemplate,
        key: TxKey,
        request: Message,
        credentials: Option<(String, String)>,
    ) -> Leg {
        let inviting = Box::new(Inviting::new(request, credentials));
        Leg {
            template,
            invite_key: key,
            state: LegState::Calling(inviting),
            forks: Default::default(),
        }
    }

    /// A leg whose INVITE came to us (server transaction `key`) and was
    /// answered at once with our 2xx (a call pickup): `Confirmed` in
    /// `dialog`, with the phone's offer to go to the caller.
    pub(crate) fn picked(template: LegTemplate, key: TxKey, answered: Answered) -> Leg {
        Leg {
            template,
            invite_key: key,
            state: LegState::Confirmed(Box::new(answered)),
            forks: Default::default(),
        }
    }

    // ----- what it is ------------------------------------------------------

    pub(crate) fn template(&self) -> &LegTemplate {
        &self.template
    }

    pub(crate) fn invite_key(&self) -> TxKey {
        self.invite_key
    }

    pub(crate) fn state(&self) -> &LegState {
        &self.state
    }

    pub(crate) fn forks(&self) -> &OtherForks {
        &self.forks
    }

    /// The INVITE has a final response or was given up.
    pub(crate) fn invite_over(&self) -> bool {
        self.inviting().is_none()
    }

    /// The INVITE in progress.
    pub(crate) fn inviting(&self) -> Option<&Inviting> {
        match &self.state {
            LegState::Calling(i)
            | LegState::CancelAsked(i, _)
            | LegState::Proceeding(i)
            | LegState::Cancelling(i, _) => Some(i),
            _ => None,
        }
    }

    /// The INVITE in progress, to record its early dialogs and SDP.
    pub(crate) fn inviting_mut(&mut self) -> Option<&mut Inviting> {
        self.template_and_inviting().map(|(_, i)| i)
    }

    /// The template with the INVITE in progress, to make an early dialog
    /// from.
    pub(crate) fn template_and_inviting(&mut self) -> Option<(&LegTemplate, &mut Inviting)> {
        let t = &self.template;
        match &mut self.state {
            LegState::Calling(i)
            | LegState::CancelAsked(i, _)
            | LegState::Proceeding(i)
            | LegState::Cancelling(i, _) => Some((t, i)),
            _ => None,
        }
    }

    /// The answer and the dialog, once answered (also after it ended).
    pub(crate) fn answered(&self) -> Option<&Answered> {
        match &self.state {
            LegState::Confirmed(a) | LegState::Terminating(a, _) | LegState::Ended(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn answered_mut(&mut self) -> Option<&mut Answered> {
        match &mut self.state {
            LegState::Confirmed(a) | LegState::Terminating(a, _) | LegState::Ended(a) => Some(a),
            _ => None,
        }
    }

    /// Answered and not hung up.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, LegState::Confirmed(_))
    }

    /// Nothing more will happen on the leg.
    pub(crate) fn done(&self) -> bool {
        match self.state {
            LegState::Calling(_)
            | LegState::CancelAsked(..)
            | LegState::Proceeding(_)
            | LegState::Cancelling(..)
            | LegState::Confirmed(_)
            | LegState::Terminating(..) => false,
            LegState::Failed | LegState::Ended(_) => true,
        }
    }

    /// The confirmed dialog's ACK waits for the caller's answer.
    pub(crate) fn ack_held(&self) -> bool {
        matches!(&self.state, LegState::Confirmed(a) if matches!(a.ack, LegAck::Held))
    }

    /// When a CANCEL that got no final response gives the INVITE up.
    pub(crate) fn cancel_deadline(&self) -> Option<Instant> {
        match self.state {
            LegState::Cancelling(_, at) => Some(at),
            _ => None,
        }
    }

    /// The CSeq our last request in the early dialog with `tag` used.
    pub(crate) fn early_seq(&self, tag: &[u8]) -> u32 {
        let seq = match self.inviting() {
            Some(i) => {
                i.early.iter().find(|e| e.dialog.remote_tag == tag).map(|e| e.dialog.local_seq)
            }
            None => self.forks.early_seqs.iter().find(|(t, _)| t == tag).map(|(_, s)| *s),
        };
        seq.unwrap_or(self.template.invite_seq)
    }

    // ----- transitions -----------------------------------------------------

    /// A provisional response came: `Calling` becomes `Proceeding`. From
    /// `CancelAsked`, the Reason of the CANCEL that must go now.
    pub(crate) fn provisional(&mut self) -> Option<Option<Bytes>> {
        let (next, reason) = match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Calling(i) => (LegState::Proceeding(i), None),
            LegState::CancelAsked(i, r) => (LegState::Proceeding(i), Some(r)),
            other => (other, None),
        };
        self.state = next;
        reason
    }

    /// A CANCEL is asked for before any provisional response: it waits.
    /// `false` when the leg is not `Calling`.
    pub(crate) fn cancel_asked(&mut self, reason: Option<Bytes>) -> bool {
        match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Calling(i) => {
                self.state = LegState::CancelAsked(i, reason);
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// Our CANCEL went out: the INVITE is given up at `give_up` without a
    /// final response.
    pub(crate) fn cancel_sent(&mut self, give_up: Instant) {
        self.state = match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Proceeding(i) | LegState::CancelAsked(i, _) | LegState::Calling(i) => {
                LegState::Cancelling(i, give_up)
            }
            other => other,
        };
    }

    /// The INVITE was re-sent with credentials as `request` (CSeq `seq`)
    /// in transaction `key`: a new INVITE transaction, so a CANCEL waits
    /// for a provisional response to it (RFC 3261 9.1).
    pub(crate) fn reinvited(&mut self, request: Message, key: TxKey, seq: u32) {
        self.state = match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Calling(mut i) | LegState::Proceeding(mut i) => {
                i.request = request;
                i.auth_tries += 1;
                self.invite_key = key;
                self.template.invite_seq = seq;
                LegState::Calling(i)
            }
            other => other,
        };
    }

    /// A 2xx confirmed `dialog`: the leg is `Confirmed`.
    pub(crate) fn confirmed(&mut self, dialog: Dialog, ack: LegAck, answer: Option<Body>) {
        if let Some(i) = self.take_inviting() {
            self.keep_early_seqs(&i);
            let a = Answered { dialog, ack, answer, pending: None };
            self.state = LegState::Confirmed(Box::new(a));
        }
    }

    /// A 3xx-6xx or no final response: the leg is `Failed`. `true` when
    /// our CANCEL was out (a 487 then reports a cancelled leg).
    pub(crate) fn failed(&mut self) -> bool {
        let cancelling = matches!(self.state, LegState::Cancelling(..));
        if let Some(i) = self.take_inviting() {
            self.keep_early_seqs(&i);
            self.state = LegState::Failed;
        }
        cancelling
    }

    /// The held ACK went out.
    pub(crate) fn ack_sent(&mut self, ack: Stored) {
        if let LegState::Confirmed(a) = &mut self.state {
            a.ack = LegAck::Sent(ack);
        }
    }

    /// Our BYE went out in transaction `key`: `Terminating`.
    pub(crate) fn bye_sent(&mut self, key: TxKey) {
        self.state = match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Confirmed(mut a) => {
                a.answer = None;
                LegState::Terminating(a, key)
            }
            other => other,
        };
    }

    /// The confirmed dialog is over: its BYE, a 481 or 408 to a request in
    /// it, our BYE done, or a BYE we could not send.
    pub(crate) fn ended(&mut self) {
        self.state = match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Confirmed(mut a) | LegState::Terminating(mut a, _) => {
                a.answer = None;
                LegState::Ended(a)
            }
            other => other,
        };
    }

    /// Another fork's 2xx was ACKed (with `ack`) and BYEd.
    pub(crate) fn fork_killed(&mut self, tag: Bytes, ack: Stored) {
        self.forks.killed.push((tag, ack));
    }

    fn take_inviting(&mut self) -> Option<Box<Inviting>> {
        match std::mem::replace(&mut self.state, LegState::Failed) {
            LegState::Calling(i)
            | LegState::CancelAsked(i, _)
            | LegState::Proceeding(i)
            | LegState::Cancelling(i, _) => Some(i),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn keep_early_seqs(&mut self, i: &Inviting) {
        self.forks.early_seqs =
            i.early.iter().map(|e| (e.dialog.remote_tag.clone(), e.dialog.local_seq)).collect();
    }
}
