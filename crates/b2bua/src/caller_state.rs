//! The inbound leg (the caller) and its life as one state:
//! [`CallerState`]. The methods of [`Caller`] that take `&mut self` are its
//! transitions; the steps that send its responses and BYE are in
//! `caller.rs`.
//!
//! ```text
//!  Proceeding ──2xx sent──────────────────────▶ Confirmed ──its BYE──▶ Ended
//!     │  └─2xx held for a PRACK─▶ AnswerHeld ─PRACK─┘  │ our BYE, 2xx not ACKed
//!     │                              │                 ▼
//!     └──3xx-6xx sent──▶ Closed ◀────┘          ByeAfterAck ─ACK─┐
//!                                    Confirmed ──our BYE──▶ Terminating ──▶ Ended
//! ```
//!
//! The caller's INVITE (and its offer) is kept only while the INVITE has no
//! final response; a step that must wait before answering the caller (an
//! anchored media answer) is one more state after `Proceeding`.

use crate::dialog::{Body, Dialog};
use crate::state::{Held, Pending2xx};
use sip_message::{Message, Peer};
use sip_transaction::TxKey;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most reliable provisionals queued behind an unacknowledged one.
pub(crate) const MAX_REL_QUEUE: usize = 4;

/// A reliable provisional response sent to the caller, not yet PRACKed.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub(crate) response: Message,
    pub(crate) rseq: u32,
    pub(crate) has_sdp: bool,
    pub(crate) interval: Duration,
    pub(crate) next: Option<Instant>,
    pub(crate) give_up: Instant,
}

/// RFC 3262 toward the caller.
#[derive(Debug, Default)]
pub(crate) struct Reliable {
    pub(crate) next_rseq: u32,
    pub(crate) unacked: Option<Unacked>,
    pub(crate) queue: VecDeque<(u16, Option<Body>)>,
}

/// The caller's INVITE while it has no final response from us: what our
/// responses to it and the legs' INVITEs are made from.
#[derive(Debug)]
pub(crate) struct InboundInvite {
    pub(crate) request: Message,
    pub(crate) max_forwards: Option<u8>,
    /// RFC 3262 in use toward the caller.
    pub(crate) rel: Option<Reliable>,
}

/// The caller's offer, shared by every leg's INVITE.
#[derive(Clone, Debug)]
pub(crate) enum Offer {
    /// No offer (yet): each leg's offer comes in its 2xx, and its ACK
    /// waits for the caller's answer (RFC 3264 delayed offer).
    Delayed,
    /// The offer (for a click-to-call, the source's 2xx offer).
    Sdp(Body),
    /// There was one, and the caller is answered: it is needed no more
    /// (nor the caller's INVITE it was part of).
    Used,
}

impl Offer {
    /// The offer, when one is there and still needed.
    pub(crate) fn sdp(&self) -> Option<&Body> {
        match self {
            Offer::Sdp(b) => Some(b),
            Offer::Delayed | Offer::Used => None,
        }
    }
}

impl From<Option<Body>> for Offer {
    fn from(body: Option<Body>) -> Offer {
        body.map_or(Offer::Delayed, Offer::Sdp)
    }
}

/// A 2xx to the caller held until the PRACK of a reliable provisional with
/// SDP (RFC 3262 3), and whose ACK waits for the caller's.
#[derive(Debug)]
pub(crate) struct HeldAnswer {
    pub(crate) response: Message,
    pub(crate) hold: Option<Held>,
}

/// Where the caller's side stands.
#[derive(Debug)]
pub(crate) enum CallerState {
    /// No final response yet.
    Proceeding(Box<InboundInvite>),
    /// Our 2xx is built and waits for a PRACK.
    AnswerHeld(Box<InboundInvite>, HeldAnswer),
    /// Our 2xx went out: the dialog is up.
    Confirmed,
    /// We hang up, once our 2xx is ACKed (RFC 3261 15).
    ByeAfterAck,
    /// Our BYE is out, in this client transaction.
    Terminating(TxKey),
    /// The dialog is over (for a click-to-call's stand-in caller: it was
    /// bridged, and the source leg stands for it).
    Ended,
    /// A 3xx-6xx went out (or the INVITE ended without one).
    Closed,
}

/// The inbound leg; for a click-to-call a stand-in that holds the source's
/// offer and is never sent anything.
#[derive(Debug)]
pub(crate) struct Caller {
    /// The INVITE server transaction.
    pub(crate) key: TxKey,
    pub(crate) peer: Peer,
    /// Our dialog with the caller (our tag from the start).
    pub(crate) dialog: Dialog,
    pub(crate) offer: Offer,
    state: CallerState,
    /// Our last 2xx to the caller (to its INVITE or a re-INVITE), until
    /// its ACK (13.3.1.4).
    pub(crate) pending: Option<Pending2xx>,
}

impl Caller {
    /// A caller whose INVITE `invite` (server transaction `key`, from
    /// `peer`, with `offer`) has no final response yet.
    pub(crate) fn proceeding(
        key: TxKey,
        peer: Peer,
        dialog: Dialog,
        offer: Offer,
        invite: InboundInvite,
    ) -> Caller {
        let state = CallerState::Proceeding(Box::new(invite));
        Caller { key, peer, dialog, offer, state, pending: None }
    }

    // ----- what it is ------------------------------------------------------

    pub(crate) fn state(&self) -> &CallerState {
        &self.state
    }

    /// No final response yet (nor a 2xx held).
    pub(crate) fn is_proceeding(&self) -> bool {
        matches!(self.state, CallerState::Proceeding(_))
    }

    /// The INVITE is not over for the caller: no final response went out
    /// (a 2xx may be held for a PRACK).
    pub(crate) fn is_early(&self) -> bool {
        matches!(self.state, CallerState::Proceeding(_) | CallerState::AnswerHeld(..))
    }

    /// A 2xx was sent or held.
    pub(crate) fn is_answered(&self) -> bool {
        !matches!(self.state, CallerState::Proceeding(_) | CallerState::Closed)
    }

    /// The dialog is confirmed and up (2xx sent, no BYE).
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, CallerState::Confirmed)
    }

    /// Nothing more will happen on the caller's side.
    pub(crate) fn done(&self) -> bool {
        match self.state {
            CallerState::Proceeding(_)
            | CallerState::AnswerHeld(..)
            | CallerState::Confirmed
            | CallerState::ByeAfterAck
            | CallerState::Terminating(_) => false,
            CallerState::Ended => self.pending.is_none(),
            CallerState::Closed => true,
        }
    }

    /// The caller's INVITE, while it has no final response.
    pub(crate) fn invite(&self) -> Option<&InboundInvite> {
        match &self.state {
            CallerState::Proceeding(i) | CallerState::AnswerHeld(i, _) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn invite_mut(&mut self) -> Option<&mut InboundInvite> {
        match &mut self.state {
            CallerState::Proceeding(i) | CallerState::AnswerHeld(i, _) => Some(i),
            _ => None,
        }
    }

    /// RFC 3262 toward the caller, while its INVITE is not over.
    pub(crate) fn reliable_mut(&mut self) -> Option<&mut Reliable> {
        self.invite_mut().and_then(|i| i.rel.as_mut())
    }

    /// The held 2xx, to clear the ACK it would release.
    pub(crate) fn held_answer_mut(&mut self) -> Option<&mut HeldAnswer> {
        match &mut self.state {
            CallerState::AnswerHeld(_, h) => Some(h),
            _ => None,
        }
    }

    // ----- transitions -----------------------------------------------------

    /// Our 2xx waits for a PRACK: `AnswerHeld`.
    pub(crate) fn answer_held(&mut self, held: HeldAnswer) {
        self.offer_used();
        self.state = match std::mem::replace(&mut self.state, CallerState::Closed) {
            CallerState::Proceeding(i) => CallerState::AnswerHeld(i, held),
            other => other,
        };
    }

    /// Our 2xx went out: `Confirmed`. From `AnswerHeld`, the held 2xx
    /// (to send now).
    pub(crate) fn confirmed(&mut self) -> Option<HeldAnswer> {
        self.offer_used();
        match std::mem::replace(&mut self.state, CallerState::Confirmed) {
            CallerState::AnswerHeld(_, held) => Some(held),
            CallerState::Proceeding(_) => None,
            other => {
                self.state = other;
                None
            }
        }
    }

    /// A click-to-call's stand-in caller was bridged: the source leg stands
    /// for it from now on.
    pub(crate) fn bridged_to_source(&mut self) {
        self.offer_used();
        self.state = CallerState::Ended;
    }

    fn offer_used(&mut self) {
        if let Offer::Sdp(_) = self.offer {
            self.offer = Offer::Used;
        }
    }

    /// A final non-2xx went out, or the INVITE ended without one.
    pub(crate) fn closed(&mut self) {
        self.state = CallerState::Closed;
    }

    /// We want to hang up, but our 2xx is not ACKed yet.
    pub(crate) fn bye_after_ack(&mut self) {
        if matches!(self.state, CallerState::Confirmed) {
            self.state = CallerState::ByeAfterAck;
        }
    }

    /// Our BYE went out in transaction `key`.
    pub(crate) fn bye_sent(&mut self, key: TxKey) {
        self.state = CallerState::Terminating(key);
    }

    /// The dialog is over: its BYE, our BYE done (or unsendable), or a 481
    /// or 408 to a request in it.
    pub(crate) fn ended(&mut self) {
        if matches!(
            self.state,
            CallerState::Confirmed | CallerState::ByeAfterAck | CallerState::Terminating(_)
        ) {
            self.state = CallerState::Ended;
        }
    }
}
