//! # sip-transaction: the forkswitch SIP transaction layer
//!
//! The four transaction state machines of RFC 3261 section 17 (INVITE and
//! non-INVITE, client and server), as updated by RFC 6026 (the Accepted
//! states, Timers L and M) and RFC 4320 (no 408 and no early 100 Trying to
//! a non-INVITE request), with matching per 17.1.3 and 17.2.3 (RFC 2543
//! fallback included) and CANCEL matching per 9.2.
//!
//! It is sans-IO, in the style of quinn-proto: one [`TransactionLayer`]
//! owns every transaction of a process or shard and is driven by plain
//! calls. It never reads a clock or a socket and never spawns a task: the
//! current [`std::time::Instant`] is an input, and its outputs are polled.
//!
//! - inputs: [`TransactionLayer::handle_incoming`] (a parsed message and
//!   its [`Peer`](sip_message::Peer)), [`TransactionLayer::send_request`]
//!   and [`TransactionLayer::send_response`] from the TU,
//!   [`TransactionLayer::transport_error`],
//!   [`TransactionLayer::handle_timeout`];
//! - outputs: [`TransactionLayer::poll_transmit`] ([`Transmit`]: a message
//!   and where to send it), [`TransactionLayer::poll_event`] ([`Event`]:
//!   new requests, responses, timeouts, strays, terminations) and
//!   [`TransactionLayer::poll_timeout`] (the next deadline).
//!
//! Transactions are named by an opaque [`TxKey`]. Timers live in one
//! `timer-queue` for the whole layer when it runs alone
//! ([`TransactionLayer::new`]), or in its owner's one queue
//! ([`TransactionLayer::with_owner_timers`]: the switch core); over a
//! reliable transport there are no retransmissions and timers D, I, J and
//! K are zero. Branches come from a generator seeded by the owner. [`ack_for`] and
//! [`cancel_for`] build the ACK for a non-2xx and the CANCEL of an INVITE.
//!
//! It never answers or forwards anything on its own beyond what section 17
//! requires (retransmissions, the ACK for a non-2xx, 100 Trying): messages
//! no transaction takes come up as [`Event::Stray`].
#![deny(missing_docs)]

mod build;
mod key;
mod layer;
mod tx;
mod types;

pub use build::{ack_for, cancel_for};
pub use layer::TransactionLayer;
pub use types::{Config, Error, Event, Transmit, TxKey, TxState};
