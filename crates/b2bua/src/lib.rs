//! # b2bua: call legs, dialogs and bridging for forkswitch
//!
//! One B2BUA *call* is one inbound (UAS) leg, the caller, and any number of
//! outbound (UAC) legs. [`CallManager`] turns the decisions of the fork
//! engine ("dial this leg", "cancel it", "answer the caller with that leg")
//! into correct SIP, and turns the SIP that comes back into [`CallEvent`]s.
//!
//! It is sans-IO: it never reads a clock or a socket. It drives a
//! [`sip_transaction::TransactionLayer`] given with every call, and gives
//! back what must go outside transactions (ACKs for 2xx and 2xx
//! retransmissions) as [`Stateless`] messages. It never decides *who* to
//! ring: that is the `groupcall` engine's job.
//!
//! What it does:
//! - every outbound leg is a dialog of its own (own Call-ID, tags, CSeq,
//!   Via, Contact): nothing of one side (Via, Record-Route, Contact,
//!   Call-ID, tags) appears on the other; the caller's SDP is shared, not
//!   copied;
//! - leg responses become events; reliable provisionals are PRACKed per
//!   early dialog (RFC 3262); 2xx are ACKed per leg (RFC 3261 13.2.2.4),
//!   a 2xx of a second downstream fork is ACKed and BYEd;
//! - CANCEL only after a provisional (RFC 3261 9.1), with an optional
//!   Reason (RFC 3326), and the 64*T1 give-up;
//! - the caller's 2xx is retransmitted until its ACK (13.3.1.4); delayed
//!   offers hold the winner's ACK until the caller's ACK brings the answer;
//! - a call pickup ([`CallManager::pick_up`]): another phone's INVITE
//!   becomes an answered leg of a ringing call (`pickup.rs`);
//! - a dialog made by a request outside any call (a subscription:
//!   [`UasDialog`]) and its in-dialog requests (NOTIFY) through the same
//!   builder as the legs' ([`CallManager::dialog_request`]);
//! - once bridged, in-dialog requests (BYE, and those
//!   [`sip_message::SUPPORTED`] marks relayed: re-INVITE, UPDATE, INFO,
//!   OPTIONS) are relayed between the two dialogs and their responses
//!   relayed back; with [`B2buaConfig::hold_relayed_sdp`] the SDP of a
//!   relayed re-INVITE/UPDATE and of its 2xx waits for its owner (media
//!   anchoring: [`CallEvent::RelayOffer`], [`CallManager::release_relay`]).
//!
//! What its owner (the switch core) must do:
//! - feed *every* transaction event to [`CallManager::handle_event`]
//!   (Terminated, Timeout and TransportError included: the manager keeps
//!   the keys it owns until their Terminated) and handle what it gives back
//!   (a new INVITE: route it, then [`CallManager::accept_inbound`]);
//! - after every call, send [`CallManager::poll_stateless`] messages before
//!   the layer's `poll_transmit` ones (an ACK precedes the BYE after it),
//!   pass [`CallManager::poll_event`] events to the fork engine, and log
//!   [`CallManager::poll_notice`] values (what the copy limits cut);
//! - call [`CallManager::handle_timeout`] at [`CallManager::poll_timeout`]
//!   (or, made with [`CallManager::with_owner_timers`], file every
//!   [`CallManager::poll_timer`] deadline in its own queue and call
//!   [`CallManager::handle_call_timer`] when it comes);
//! - use the transaction layer's T1 in [`B2buaConfig`]; reject an INVITE
//!   with Max-Forwards 0 (483) or an unsupported Require (420) itself.
//!
//! How it is built (one `&mut self` machine, like str0m's `Rtc`):
//! - a call is data (`state.rs`): the caller's side, whose life is one
//!   `CallerState` (`caller_state.rs`: Proceeding, AnswerHeld, Confirmed,
//!   ByeAfterAck, Terminating, Ended, Closed), and its legs, each one
//!   `LegState` (`leg_state.rs`: Calling, CancelAsked, Proceeding,
//!   Cancelling, Confirmed, Terminating, Failed, Ended). Their transitions
//!   are the only way either changes; a leg keeps its INVITE only while it
//!   may be CANCELed or re-sent with credentials, then its dialog and ACK;
//! - every step of a call is a method of one per-call context, `CallTurn`
//!   (`turn.rs`): the call, and the `Wire` it acts through (the time, the
//!   transaction layer, the settings, the identifiers, the index of keys
//!   and dialogs, the output queues). `legs.rs` (the legs' INVITEs,
//!   responses, CANCEL), `caller.rs` (responses to the caller, BYEs),
//!   `relay.rs` (in-dialog requests) and `timers.rs` hold the steps;
//! - a transaction event is routed to its call, then taken by it
//!   (`events.rs`).
//!
//! Main types: [`CallManager`], [`B2buaConfig`], [`DialTarget`],
//! [`CallEvent`], [`Stateless`], [`CallRef`], [`LegRef`].
#![deny(missing_docs)]

mod caller;
mod caller_state;
mod dialog;
mod events;
mod index;
mod leg_state;
mod legs;
pub mod limits;
mod manager;
mod pickup;
mod relay;
mod settings;
mod state;
mod timers;
mod turn;
mod uas_dialog;

pub use limits::CopyLimits;
pub use manager::CallManager;
pub use pickup::PickupInvite;
pub use uas_dialog::{DialogRequest, UasDialog};

use sip_message::{Message, Peer, Transport};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a [`CallManager`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct B2buaConfig {
    /// `User-Agent` of our requests and `Server` of our responses; empty:
    /// none.
    pub user_agent: String,
    /// RTT estimate: the 2xx and reliable provisional retransmission start
    /// (and 64*T1 the give-up). Use the transaction layer's value.
    pub t1: Duration,
    /// Cap of the 2xx retransmission interval.
    pub t2: Duration,
    /// Max-Forwards of our requests (lowered to the caller's value minus
    /// one when that is smaller).
    pub max_forwards: u8,
    /// Send 180/183 reliably (RFC 3262) to a caller that supports 100rel.
    /// A caller that *requires* 100rel always gets reliable provisionals.
    pub send_100rel_to_caller: bool,
    /// Caps on what is copied from one leg onto another.
    pub limits: CopyLimits,
    /// Hold the SDP of relayed re-INVITEs and UPDATEs (and of their 2xx)
    /// for the owner to replace: [`CallEvent::RelayOffer`] /
    /// [`CallEvent::RelayAnswer`], then [`CallManager::release_relay`]
    /// (media anchoring). Off: bodies are relayed as they come.
    pub hold_relayed_sdp: bool,
}

impl Default for B2buaConfig {
    fn default() -> Self {
        B2buaConfig {
            user_agent: "forkswitch".to_owned(),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            max_forwards: 70,
            send_100rel_to_caller: false,
            limits: CopyLimits::default(),
            hold_relayed_sdp: false,
        }
    }
}

/// Our own address for one transport: the sent-by of our Via and the host
/// of our Contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalContact {
    /// The transport.
    pub transport: Transport,
    /// The address advertised for it.
    pub addr: SocketAddr,
}

/// One B2BUA call: the caller's leg plus the outbound legs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct CallRef(u64);

impl CallRef {
    /// The number behind the handle (unique for the manager's life).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A relayed request or response held for its SDP
/// ([`CallEvent::RelayOffer`], [`CallEvent::RelayAnswer`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RelayRef(pub(crate) u64);

/// An outbound leg of a call; legs are numbered from 0 in dial order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct LegRef(pub(crate) u32);

impl LegRef {
    /// The leg's number within its call (0 for the first one dialed).
    pub fn as_u32(self) -> u32 {
        self.0
    }
}

/// Where and how to dial a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialTarget {
    /// The Request-URI.
    pub request_uri: String,
    /// The To header value (no tag).
    pub to: String,
    /// The From header value without tag: the caller identity presented to
    /// the callee.
    pub from: String,
    /// Where to send the INVITE (resolved): transport, remote, local, conn.
    pub next_hop: Peer,
    /// Digest credentials (username, password) to answer the callee's own
    /// 401/407 with (a carrier trunk that authenticates us); `None`: a
    /// 401/407 is a failure like any other.
    pub credentials: Option<(String, String)>,
    /// Extra header fields; a name that is not a token or a value with CR
    /// or LF is skipped.
    pub extra_headers: Vec<(String, String)>,
    /// The offer (SDP) for this leg instead of the caller's: the media
    /// relay's offer when media is anchored; `None`: the caller's.
    pub sdp: Option<bytes::Bytes>,
}

/// What an anchored media offer of a call is made from
/// ([`CallManager::caller_media`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerMedia {
    /// The caller's SIP Call-ID.
    pub call_id: String,
    /// The caller's From tag.
    pub from_tag: String,
    /// The caller's offer.
    pub sdp: bytes::Bytes,
    /// The transport the caller's INVITE came over.
    pub transport: Transport,
}

/// A leg's early dialog (RFC 3261 12.1), by its identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EarlyDialog<'a> {
    /// The leg's Call-ID.
    pub call_id: &'a str,
    /// The phone's To tag.
    pub phone_tag: &'a str,
    /// Our From tag.
    pub our_tag: &'a str,
}

/// What happened to a call. Every leg gets exactly one terminal event
/// (`LegFailed`, `LegNoResponse`, `LegCancelled`, `LegHungUp` or
/// `LegEnded`), and every call ends with [`CallEvent::CallEnded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallEvent {
    /// 100 Trying from the leg (first one only).
    LegTrying {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// 180-182, or 183 without SDP (first one only).
    LegRinging {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// 183 with SDP (first one only; the SDP kept is the latest): relay it
    /// with [`CallManager::early_media_caller`].
    LegEarlyMedia {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// A 2xx: the leg's dialog is confirmed (and ACKed unless the offer is
    /// delayed). Also after [`CallManager::cancel_leg`], when the 2xx
    /// crossed the CANCEL: call [`CallManager::answer_caller`] or
    /// [`CallManager::ack_and_bye`].
    LegAnswered {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// A 3xx-6xx final response (the transaction layer ACKed it).
    LegFailed {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
        /// Status code.
        code: u16,
    },
    /// Timer B, a transport error, or no final response 64*T1 after our
    /// CANCEL.
    LegNoResponse {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// 487 after our CANCEL.
    LegCancelled {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// The answered leg's dialog ended from its side: its BYE (answered 200),
    /// or a 481, 408 or no response to a request relayed to it. When it was
    /// bridged, the caller gets a BYE from us.
    LegHungUp {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// Our BYE to the leg is done (its response, or a timeout).
    LegEnded {
        /// The call.
        call: CallRef,
        /// The leg.
        leg: LegRef,
    },
    /// The caller's INVITE ended before the answer: its CANCEL (200 and 487
    /// sent), its BYE on the early dialog, a transport error on the
    /// response, or no PRACK for a reliable provisional (500 sent).
    CallerCancelled {
        /// The call.
        call: CallRef,
        /// The caller's CANCEL said the call was answered elsewhere (RFC
        /// 3326 `Reason: SIP;cause=200`): a cluster node relaying the leg
        /// passes that on to the phone.
        completed_elsewhere: bool,
    },
    /// The caller hung up after the answer (BYE answered 200, or a 481, 408
    /// or no response to a request relayed to it); the bridged leg gets a
    /// BYE from us.
    CallerHungUp {
        /// The call.
        call: CallRef,
    },
    /// Our 2xx to the caller was never ACKed within 64*T1: both sides got a
    /// BYE from us.
    CallerNoAck {
        /// The call.
        call: CallRef,
    },
    /// A re-INVITE or UPDATE with SDP from one side waits to be relayed
    /// (only with [`B2buaConfig::hold_relayed_sdp`]): read its SDP with
    /// [`CallManager::held_sdp`], then [`CallManager::release_relay`].
    RelayOffer {
        /// The call.
        call: CallRef,
        /// The held request.
        relay: RelayRef,
        /// The side it came from: a leg, or `None` for the caller.
        from_leg: Option<LegRef>,
    },
    /// The 2xx with SDP to a relayed re-INVITE or UPDATE waits to be
    /// relayed back to `from_leg`'s side (the offerer): as `RelayOffer`.
    RelayAnswer {
        /// The call.
        call: CallRef,
        /// The held response.
        relay: RelayRef,
        /// The side the request came from: a leg, or `None`: the caller.
        from_leg: Option<LegRef>,
    },
    /// Every leg and dialog of the call is gone; the [`CallRef`] is freed.
    CallEnded {
        /// The call.
        call: CallRef,
    },
}

impl CallEvent {
    /// The call the event belongs to.
    pub fn call(&self) -> CallRef {
        match *self {
            CallEvent::LegTrying { call, .. }
            | CallEvent::LegRinging { call, .. }
            | CallEvent::LegEarlyMedia { call, .. }
            | CallEvent::LegAnswered { call, .. }
            | CallEvent::LegFailed { call, .. }
            | CallEvent::LegNoResponse { call, .. }
            | CallEvent::LegCancelled { call, .. }
            | CallEvent::LegHungUp { call, .. }
            | CallEvent::LegEnded { call, .. }
            | CallEvent::CallerCancelled { call, .. }
            | CallEvent::CallerHungUp { call }
            | CallEvent::CallerNoAck { call }
            | CallEvent::RelayOffer { call, .. }
            | CallEvent::RelayAnswer { call, .. }
            | CallEvent::CallEnded { call } => call,
        }
    }

    /// The leg, for leg events.
    pub fn leg(&self) -> Option<LegRef> {
        match *self {
            CallEvent::LegTrying { leg, .. }
            | CallEvent::LegRinging { leg, .. }
            | CallEvent::LegEarlyMedia { leg, .. }
            | CallEvent::LegAnswered { leg, .. }
            | CallEvent::LegFailed { leg, .. }
            | CallEvent::LegNoResponse { leg, .. }
            | CallEvent::LegCancelled { leg, .. }
            | CallEvent::LegHungUp { leg, .. }
            | CallEvent::LegEnded { leg, .. } => Some(leg),
            _ => None,
        }
    }
}

/// A message to send outside any transaction: an ACK for a 2xx, or a 2xx
/// retransmission to the caller (RFC 3261 13.2.2.4, 13.3.1.4).
#[derive(Clone, Debug)]
pub struct Stateless {
    /// Where to send it.
    pub peer: Peer,
    /// What to send.
    pub message: Message,
}

/// Why a [`CallManager`] call was refused. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum B2buaError {
    /// No live call has this handle.
    UnknownCall,
    /// The call has no such leg.
    UnknownLeg,
    /// Not possible in the current state (the text says why).
    InvalidState(&'static str),
    /// A call may hold at most this many legs.
    TooManyLegs(usize),
    /// A status code outside the range the call accepts.
    BadStatus(u16),
    /// A [`DialTarget`] field would break the message (the text says which).
    BadTarget(&'static str),
    /// The transaction layer refused the request.
    Transaction(sip_transaction::Error),
    /// A call pickup needs an offer in both INVITEs (the caller's and the
    /// picking phone's): one had none.
    NoOffer,
}

impl fmt::Display for B2buaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            B2buaError::UnknownCall => f.write_str("unknown call"),
            B2buaError::UnknownLeg => f.write_str("unknown leg"),
            B2buaError::NoOffer => f.write_str("a pickup needs an offer from both phones"),
            B2buaError::InvalidState(why) => write!(f, "invalid state: {why}"),
            B2buaError::TooManyLegs(n) => write!(f, "a call holds at most {n} legs"),
            B2buaError::BadStatus(c) => write!(f, "status code {c} not allowed here"),
            B2buaError::BadTarget(what) => write!(f, "bad dial target: {what}"),
            B2buaError::Transaction(e) => write!(f, "transaction layer: {e}"),
        }
    }
}

impl std::error::Error for B2buaError {}
