//! The state of one call: the caller's side, the legs and the relays.

use crate::dialog::{Body, Dialog};
use crate::CallRef;
use bytes::Bytes;
use sip_message::{Message, Peer};
use sip_transaction::TxKey;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most legs one call may hold.
pub(crate) const MAX_LEGS: usize = 256;
/// Most early dialogs kept per leg (downstream forking).
pub(crate) const MAX_EARLY: usize = 8;
/// Most second-fork 2xx ACKed and BYEd per leg.
pub(crate) const MAX_FORKS: usize = 8;
/// Most in-dialog requests being relayed at once per call.
pub(crate) const MAX_RELAYS: usize = 8;
/// Most reliable provisionals queued behind an unacknowledged one.
pub(crate) const MAX_REL_QUEUE: usize = 4;

/// A side of the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    Caller,
    Leg(u32),
}

/// What a transaction we own is to its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The caller's INVITE server transaction.
    CallerInvite,
    /// A leg's INVITE client transaction.
    LegInvite(u32),
    /// Our BYE to a side.
    Bye(Side),
    /// A request we relay (client side).
    RelayClient,
    /// A request being relayed (server side).
    RelayServer,
}

/// Who owns a transaction key.
#[derive(Debug)]
pub(crate) enum Owner {
    Call(CallRef, Role),
    /// The INVITE client transaction of a leg of an ended call, kept until
    /// it terminates to re-ACK 2xx retransmissions and kill late forks.
    Orphan(Box<Orphan>),
    /// Ours, but nothing to do with its events (CANCEL, PRACK, answered
    /// server transactions, the BYE to a killed fork...).
    Detached,
}

/// What is left of an answered leg once its call ended.
#[derive(Debug)]
pub(crate) struct Orphan {
    pub(crate) dialog: Dialog,
    pub(crate) invite_seq: u32,
    pub(crate) acks: Vec<(Bytes, Stored)>,
}

/// An ACK we sent and where, for 2xx retransmissions.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) message: Message,
    pub(crate) peer: Peer,
}

/// Whose ACK waits for the body of the ACK a pending 2xx is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// The leg's ACK for its 2xx to our initial INVITE.
    LegInvite(u32),
    /// The ACK of a relayed re-INVITE (client key).
    Relay(TxKey),
}

/// A 2xx we sent to an INVITE and retransmit until its ACK (13.3.1.4).
#[derive(Debug)]
pub(crate) struct Pending2xx {
    pub(crate) response: Message,
    pub(crate) peer: Peer,
    pub(crate) cseq: u32,
    pub(crate) interval: Duration,
    /// Next retransmission; `None` over a reliable transport.
    pub(crate) next: Option<Instant>,
    pub(crate) give_up: Instant,
    pub(crate) hold: Option<Held>,
}

/// Where the caller's INVITE stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallerState {
    /// No final response yet.
    Proceeding,
    /// 2xx sent (or held until a PRACK).
    Answered,
    /// A non-2xx final response was sent.
    Closed,
}

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

/// The inbound leg.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) key: TxKey,
    pub(crate) invite: Message,
    pub(crate) peer: Peer,
    pub(crate) dialog: Dialog,
    pub(crate) offer: Option<Body>,
    pub(crate) max_forwards: Option<u8>,
    pub(crate) state: CallerState,
    /// The dialog is over for us (BYE either way, no ACK).
    pub(crate) ended: bool,
    pub(crate) bye_key: Option<TxKey>,
    /// A BYE waits for the ACK of our 2xx (RFC 3261 15).
    pub(crate) bye_wanted: bool,
    pub(crate) pending: Option<Pending2xx>,
    pub(crate) rel: Option<Reliable>,
    /// A 2xx held until the PRACK of a reliable provisional with SDP.
    pub(crate) held_final: Option<(Message, Option<Held>)>,
}

impl Caller {
    pub(crate) fn done(&self) -> bool {
        match self.state {
            CallerState::Proceeding => false,
            CallerState::Closed => true,
            CallerState::Answered => {
                self.ended
                    && self.bye_key.is_none()
                    && !self.bye_wanted
                    && self.pending.is_none()
                    && self.held_final.is_none()
            }
        }
    }

    /// The dialog is confirmed and up (2xx sent, no BYE).
    pub(crate) fn up(&self) -> bool {
        self.state == CallerState::Answered && !self.ended && self.held_final.is_none()
    }
}

/// Our CANCEL of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    None,
    /// Asked before any provisional: sent with the first one.
    Pending(Option<Bytes>),
    /// Sent; the INVITE is given up at the deadline.
    Sent(Instant),
    /// The leg's INVITE is over.
    Done,
}

/// An early dialog of a leg (one per downstream fork).
#[derive(Debug)]
pub(crate) struct Early {
    pub(crate) dialog: Dialog,
    /// RSeq of the last in-order reliable provisional.
    pub(crate) rseq: Option<u32>,
}

/// Flags of leg events already reported.
pub(crate) const SEEN_TRYING: u8 = 1;
pub(crate) const SEEN_RINGING: u8 = 2;
pub(crate) const SEEN_EARLY_MEDIA: u8 = 4;

/// An outbound leg.
#[derive(Debug)]
pub(crate) struct Leg {
    pub(crate) peer: Peer,
    pub(crate) invite: Message,
    pub(crate) invite_key: TxKey,
    pub(crate) invite_seq: u32,
    pub(crate) call_id: Bytes,
    pub(crate) local_tag: Bytes,
    /// From of the INVITE (with our tag).
    pub(crate) local: Bytes,
    pub(crate) request_uri: Bytes,
    pub(crate) early: Vec<Early>,
    pub(crate) dialog: Option<Dialog>,
    /// A provisional response came: a CANCEL may be sent.
    pub(crate) provisional: bool,
    pub(crate) final_code: Option<u16>,
    /// Timer B, transport error or the CANCEL give-up.
    pub(crate) gave_up: bool,
    pub(crate) ack: Option<Stored>,
    /// Delayed offer: the ACK waits for the caller's answer.
    pub(crate) ack_held: bool,
    pub(crate) early_sdp: Option<Body>,
    pub(crate) answer: Option<Body>,
    pub(crate) cancel: Cancel,
    pub(crate) bye_key: Option<TxKey>,
    /// The confirmed dialog is over for us.
    pub(crate) ended: bool,
    pub(crate) pending: Option<Pending2xx>,
    pub(crate) seen: u8,
    /// Second forks ACKed and BYEd: their tag and ACK.
    pub(crate) forks: Vec<(Bytes, Stored)>,
    /// Credentials for the callee's 401/407, and how often they were used.
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) auth_tries: u8,
}

impl Leg {
    pub(crate) fn invite_over(&self) -> bool {
        self.final_code.is_some() || self.gave_up
    }

    pub(crate) fn answered(&self) -> bool {
        self.dialog.is_some()
    }

    /// Answered and not hung up.
    pub(crate) fn up(&self) -> bool {
        self.dialog.is_some() && !self.ended
    }

    pub(crate) fn done(&self) -> bool {
        self.invite_over()
            && (self.dialog.is_none()
                || (self.ended && self.bye_key.is_none() && self.pending.is_none()))
    }
}

/// An in-dialog request relayed from one side to the other.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) from: Side,
    pub(crate) server_key: TxKey,
    pub(crate) request: Message,
    pub(crate) peer: Peer,
    pub(crate) to: Side,
    pub(crate) client_key: TxKey,
    pub(crate) seq: u32,
    pub(crate) invite: bool,
    /// The request carried a body (an offer, for an INVITE).
    pub(crate) offer: bool,
    /// The final response went back (or the server side was ended).
    pub(crate) answered: bool,
    /// A 2xx came back: later ones are retransmissions.
    pub(crate) got_2xx: bool,
    pub(crate) ack: Option<Stored>,
}

/// Where a call's caller side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The caller's INVITE came to us: the caller side is [`Caller`].
    Inbound,
    /// We called the source first (RFC 3725 flow I, click-to-call): the
    /// caller side is this outbound leg, whose 2xx offer the other legs get
    /// and whose ACK carries the answer of the leg bridged with it.
    Source(u32),
}

/// One B2BUA call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) id: CallRef,
    pub(crate) origin: Origin,
    /// The inbound caller; for an [`Origin::Source`] call a stand-in that
    /// holds the source's offer and is never sent anything.
    pub(crate) caller: Caller,
    pub(crate) legs: Vec<Leg>,
    pub(crate) bridged: Option<u32>,
    pub(crate) relays: Vec<Relay>,
    /// Keys whose owner is this call.
    pub(crate) keys: Vec<TxKey>,
    /// The deadline registered in the manager's heap.
    pub(crate) sched: Option<Instant>,
}

impl Call {
    pub(crate) fn done(&self) -> bool {
        self.caller.done()
            && self.legs.iter().all(Leg::done)
            && self.relays.iter().all(|r| r.answered)
    }

    /// The caller side: the inbound caller, or the source leg.
    pub(crate) fn caller_side(&self) -> Side {
        match self.origin {
            Origin::Inbound => Side::Caller,
            Origin::Source(l) => Side::Leg(l),
        }
    }

    /// `true` when `key` is leg `l`'s current INVITE transaction (not one
    /// it re-sent with credentials after a 401/407).
    pub(crate) fn is_leg_invite(&self, l: u32, key: TxKey) -> bool {
        self.legs.get(l as usize).is_some_and(|leg| leg.invite_key == key)
    }

    /// The side bridged with `side`.
    pub(crate) fn other(&self, side: Side) -> Option<Side> {
        let b = Side::Leg(self.bridged?);
        let c = self.caller_side();
        if side == c {
            Some(b)
        } else if side == b {
            Some(c)
        } else {
            None
        }
    }

    /// The confirmed dialog of a side.
    pub(crate) fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::Caller => Some(&mut self.caller.dialog),
            Side::Leg(l) => self.legs.get_mut(l as usize)?.dialog.as_mut(),
        }
    }

    /// `true` when the side's confirmed dialog is up.
    pub(crate) fn side_up(&self, side: Side) -> bool {
        match side {
            Side::Caller => self.caller.up(),
            Side::Leg(l) => self.legs.get(l as usize).is_some_and(Leg::up),
        }
    }

    pub(crate) fn pending_mut(&mut self, side: Side) -> Option<&mut Option<Pending2xx>> {
        match side {
            Side::Caller => Some(&mut self.caller.pending),
            Side::Leg(l) => Some(&mut self.legs.get_mut(l as usize)?.pending),
        }
    }

    /// The earliest deadline of any timer of the call.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        let pend = |p: &Option<Pending2xx>| {
            p.as_ref().map(|p| p.next.map_or(p.give_up, |n| n.min(p.give_up)))
        };
        add(pend(&self.caller.pending));
        if let Some(u) = self.caller.rel.as_ref().and_then(|r| r.unacked.as_ref()) {
            add(Some(u.next.map_or(u.give_up, |n| n.min(u.give_up))));
        }
        for leg in &self.legs {
            add(pend(&leg.pending));
            if let Cancel::Sent(d) = leg.cancel {
                add(Some(d));
            }
        }
        t
    }
}
