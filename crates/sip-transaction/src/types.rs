//! The plain data the layer takes and gives: configuration, keys, outputs,
//! errors.

use sip_message::{Message, Peer};
use std::fmt;
use std::time::Duration;

/// Timer values (RFC 3261 table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// RTT estimate (default 500 ms). Timers A, E, G start at T1; B, F, H,
    /// J, L and M are 64*T1. Values under 1 ms are raised to 1 ms.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE
    /// responses (default 4 s). At least 1 ms. A non-INVITE server
    /// transaction sends 100 Trying (never before, over UDP) when a
    /// client's Timer E reaches T2 without a response from the TU (RFC 4320
    /// 4.1): T1 + 2*T1 + 4*T1 = 3.5 s with the defaults.
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s): timers I
    /// and K.
    pub t4: Duration,
    /// Delay before an INVITE server transaction sends 100 Trying on its own
    /// when the TU has not answered (default 200 ms, RFC 3261 17.2.1).
    pub trying_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

/// An opaque handle to one transaction (client or server) of one
/// [`crate::TransactionLayer`]. Keys are not reused while their transaction
/// lives; a key of a terminated transaction is simply unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey(u64);

impl TxKey {
    pub(crate) fn new(idx: u32, gen: u32) -> TxKey {
        TxKey((u64::from(gen) << 32) | u64::from(idx))
    }

    pub(crate) fn idx(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The key as a number, to travel through I/O as a token (a send
    /// failure comes back with it).
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// The key a [`TxKey::to_bits`] number names. A number that names no
    /// live transaction is simply an unknown key.
    pub fn from_bits(bits: u64) -> TxKey {
        TxKey(bits)
    }
}

impl fmt::Display for TxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}.{}", self.idx(), self.gen())
    }
}

/// A message the transport must send (it serialises it).
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Where to send it.
    pub peer: Peer,
    /// What to send.
    pub message: Message,
    /// The transaction it belongs to: report a failure to send it with
    /// [`crate::TransactionLayer::transport_error`].
    pub key: TxKey,
}

/// Something the transaction user (TU) must learn about.
#[derive(Clone, Debug)]
pub enum Event {
    /// A request that made a new server transaction (any method but ACK and
    /// CANCEL). Answer it with [`crate::TransactionLayer::send_response`].
    NewRequest {
        /// The new server transaction.
        key: TxKey,
        /// The request.
        request: Message,
        /// Where it came from (responses go back there).
        peer: Peer,
    },
    /// A CANCEL: a new non-INVITE server transaction of its own (answer it
    /// with 200 or 481), plus the INVITE server transaction it matches per
    /// RFC 3261 9.2, in whatever state that one is.
    Cancel {
        /// The CANCEL's server transaction.
        key: TxKey,
        /// The CANCEL request.
        request: Message,
        /// Where it came from.
        peer: Peer,
        /// The INVITE server transaction it cancels; `None`: no match (481).
        cancels: Option<TxKey>,
    },
    /// A response for a client transaction: provisional and final, a 2xx to
    /// INVITE, and (RFC 6026) every further 2xx received in Accepted.
    Response {
        /// The client transaction.
        key: TxKey,
        /// The response.
        response: Message,
    },
    /// A message no transaction takes: an ACK that matches no transaction
    /// or acknowledges a 2xx (the dialog layer owns it), a response that
    /// matches no client transaction (forked 2xx after Timer M, ...), a 2xx
    /// reaching an INVITE client transaction that already took a non-2xx,
    /// or a request without a usable top Via or CSeq. Never answered or
    /// forwarded by this layer.
    Stray {
        /// The message.
        message: Message,
        /// Where it came from.
        peer: Peer,
    },
    /// Timer B or F (client: treat as 408 Request Timeout) or Timer H
    /// (server: no ACK for a final non-2xx). [`Event::Terminated`] follows.
    Timeout {
        /// The transaction.
        key: TxKey,
    },
    /// The transport reported a failure for this transaction
    /// ([`crate::TransactionLayer::transport_error`]). [`Event::Terminated`]
    /// follows, except for an INVITE server transaction in Accepted, which
    /// lives on to absorb INVITE retransmissions.
    TransportError {
        /// The transaction.
        key: TxKey,
    },
    /// The transaction is gone; its key is now unknown.
    Terminated {
        /// The transaction.
        key: TxKey,
    },
}

/// The state of a live transaction (RFC 3261 figures 5-8, RFC 6026).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxState {
    /// INVITE client: request sent, nothing heard.
    Calling,
    /// Non-INVITE client (request sent) or server (request received, no
    /// response sent).
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent.
    Completed,
    /// INVITE server: the ACK for the non-2xx final response arrived.
    Confirmed,
    /// RFC 6026: a 2xx to INVITE was received (client) or sent (server).
    Accepted,
}

/// Why a call into the layer was refused. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `send_request` got a response.
    NotARequest,
    /// `send_response` got a request.
    NotAResponse,
    /// ACK is not a transaction: the ACK for a non-2xx is sent by the client
    /// transaction, the ACK for a 2xx by the TU straight to the transport.
    AckIsNotATransaction,
    /// The top Via is missing or has no RFC 3261 branch (`z9hG4bK...`).
    NoBranch,
    /// A client transaction with this branch, sent-by and method exists.
    DuplicateTransaction,
    /// No live transaction has this key.
    UnknownTransaction,
    /// The key is a client transaction; responses go to server ones.
    NotAServerTransaction,
    /// This response cannot be sent in the transaction's current state (a
    /// second final response, a non-2xx after a 2xx, ...).
    InvalidState(TxState),
    /// RFC 4320: a 408 is never sent to a non-INVITE request.
    Forbidden408,
    /// RFC 4320: the only provisional response to a non-INVITE request is
    /// 100, and the layer sends that one itself when it is due.
    NonInviteProvisional,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotARequest => f.write_str("not a request"),
            Error::NotAResponse => f.write_str("not a response"),
            Error::AckIsNotATransaction => f.write_str("ACK does not make a transaction"),
            Error::NoBranch => f.write_str("top Via has no RFC 3261 branch"),
            Error::DuplicateTransaction => {
                f.write_str("a client transaction with this branch exists")
            }
            Error::UnknownTransaction => f.write_str("unknown transaction"),
            Error::NotAServerTransaction => f.write_str("not a server transaction"),
            Error::InvalidState(s) => write!(f, "response not allowed in state {s:?}"),
            Error::Forbidden408 => {
                f.write_str("408 must not answer a non-INVITE request (RFC 4320)")
            }
            Error::NonInviteProvisional => {
                f.write_str("a non-INVITE request gets no provisional but 100 (RFC 4320)")
            }
        }
    }
}

impl std::error::Error for Error {}
