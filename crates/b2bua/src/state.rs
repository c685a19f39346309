//! One call as data: the caller's side, the legs, the relays between them,
//! and the small types they share. The caller's and the legs' own states
//! are in `caller_state.rs` and `leg_state.rs`.

use crate::caller_state::Caller;
use crate::dialog::{Dialog, LegTemplate};
use crate::leg_state::Leg;
use crate::CallRef;
use bytes::Bytes;
use sip_message::{Message, Peer};
use sip_transaction::TxKey;
use std::time::{Duration, Instant};

/// Most legs one call may hold.
pub(crate) const MAX_LEGS: usize = 256;
/// Most second-fork 2xx ACKed and BYEd per leg.
pub(crate) const MAX_FORKS: usize = 8;
/// Most in-dialog requests being relayed at once per call.
pub(crate) const MAX_RELAYS: usize = 8;

/// A side of the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    Caller,
    Leg(u32),
}

impl Side {
    /// The leg, `None` for the caller.
    pub(crate) fn leg(self) -> Option<crate::LegRef> {
        match self {
            Side::Caller => None,
            Side::Leg(l) => Some(crate::LegRef(l)),
        }
    }
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
    pub(crate) template: LegTemplate,
    /// Our ACK per 2xx tag (the answer's and the killed forks').
    pub(crate) acks: Vec<(Bytes, Stored)>,
}

/// A message we sent outside any transaction and where, kept to send
/// again: an ACK for a 2xx, re-sent on the 2xx's retransmissions.
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

impl Pending2xx {
    /// Its next deadline: a retransmission or the give-up.
    pub(crate) fn deadline(&self) -> Instant {
        self.next.map_or(self.give_up, |n| n.min(self.give_up))
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
    /// Its SDP went through the owner: so does its 2xx's.
    pub(crate) held_sdp: bool,
    /// The final response went back (or the server side was ended).
    pub(crate) answered: bool,
    /// A 2xx came back: later ones are retransmissions.
    pub(crate) got_2xx: bool,
    pub(crate) ack: Option<Stored>,
}

/// A relayed request or response held for its SDP (media anchoring).
#[derive(Debug)]
pub(crate) struct HeldRelay {
    pub(crate) id: u64,
    pub(crate) from: Side,
    pub(crate) what: HeldSdp,
}

/// What a [`HeldRelay`] holds.
#[derive(Debug)]
pub(crate) enum HeldSdp {
    /// A request from `from`, not sent on yet.
    Request { key: TxKey, request: Message, peer: Peer },
    /// Our response to `from`'s request (server transaction
    /// `server_key`), made from `far`'s; `pending`: a re-INVITE's 2xx,
    /// retransmitted until the ACK (its peer and CSeq).
    Response { server_key: TxKey, response: Message, far: Message, pending: Option<(Peer, u32)> },
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
    /// Relayed requests and responses waiting for their SDP.
    pub(crate) held: Vec<HeldRelay>,
    /// Keys whose owner is this call.
    pub(crate) keys: Vec<TxKey>,
    /// The deadline registered in the manager's schedule.
    pub(crate) sched: Option<Instant>,
}

impl Call {
    pub(crate) fn new(id: CallRef, origin: Origin, caller: Caller) -> Call {
        Call {
            id,
            origin,
            caller,
            legs: Vec::new(),
            bridged: None,
            relays: Vec::new(),
            held: Vec::new(),
            keys: Vec::new(),
            sched: None,
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.caller.done()
            && self.legs.iter().all(Leg::done)
            && self.relays.iter().all(|r| r.answered)
            && self.held.is_empty()
    }

    /// The caller side: the inbound caller, or the source leg.
    pub(crate) fn caller_side(&self) -> Side {
        match self.origin {
            Origin::Inbound => Side::Caller,
            Origin::Source(l) => Side::Leg(l),
        }
    }

    pub(crate) fn leg(&self, l: u32) -> Option<&Leg> {
        self.legs.get(l as usize)
    }

    pub(crate) fn leg_mut(&mut self, l: u32) -> Option<&mut Leg> {
        self.legs.get_mut(l as usize)
    }

    /// `true` when `key` is leg `l`'s current INVITE transaction (not one
    /// it re-sent with credentials after a 401/407).
    pub(crate) fn is_leg_invite(&self, l: u32, key: TxKey) -> bool {
        self.leg(l).is_some_and(|leg| leg.invite_key() == key)
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
            Side::Leg(l) => self.leg_mut(l)?.answered_mut().map(|a| &mut a.dialog),
        }
    }

    /// `true` when the side's confirmed dialog is up.
    pub(crate) fn side_up(&self, side: Side) -> bool {
        match side {
            Side::Caller => self.caller.is_up(),
            Side::Leg(l) => self.leg(l).is_some_and(Leg::is_up),
        }
    }

    /// Where a side's 2xx awaiting its ACK is kept.
    pub(crate) fn pending_mut(&mut self, side: Side) -> Option<&mut Option<Pending2xx>> {
        match side {
            Side::Caller => Some(&mut self.caller.pending),
            Side::Leg(l) => Some(&mut self.leg_mut(l)?.answered_mut()?.pending),
        }
    }

    /// `true` while an INVITE transaction of ours in the call waits for
    /// its ACK (a 2xx pending, or a leg's ACK held): RFC 3261 14.1 allows
    /// no other INVITE meanwhile.
    pub(crate) fn awaits_ack(&self) -> bool {
        self.caller.pending.is_some()
            || self
                .legs
                .iter()
                .any(|l| l.ack_held() || l.answered().is_some_and(|a| a.pending.is_some()))
    }

    /// The earliest deadline of any timer of the call.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let caller = self.caller.pending.as_ref().map(Pending2xx::deadline);
        let reliable = self
            .caller
            .invite()
            .and_then(|i| i.rel.as_ref())
            .and_then(|r| r.unacked.as_ref())
            .map(|u| u.next.map_or(u.give_up, |n| n.min(u.give_up)));
        let legs = self.legs.iter().flat_map(|leg| {
            let pending = leg.answered().and_then(|a| a.pending.as_ref()).map(Pending2xx::deadline);
            [pending, leg.cancel_deadline()]
        });
        [caller, reliable].into_iter().chain(legs).flatten().min()
    }
}
