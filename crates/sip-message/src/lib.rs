//! # sip-message: the forkswitch SIP codec
//!
//! Parses and writes SIP requests and responses (RFC 3261) over
//! [`bytes::Bytes`] without copying the message: a parsed [`Message`] keeps
//! the received buffer and stores every part as a range of it. Typed views
//! ([`Via`], [`NameAddr`], [`Uri`], [`CSeq`], ...) are parsed on demand and
//! borrow from the message.
//!
//! - Framing: [`Message::parse`] for datagrams (Content-Length honoured,
//!   trailing octets ignored) and [`StreamDecoder`] for TCP (RFC 3261 18.3).
//! - Verdicts: [`validate`] says whether a server must accept a request,
//!   reject it (400/416/420/501/505) or drop it, as RFC 4475 expects.
//! - Building: [`Message::request`], [`Message::response`],
//!   [`Message::response_to`] (RFC 3261 8.2.6).
//! - One of each the workspace shares: the method list ([`SUPPORTED`]),
//!   the Digest hashes of client and server ([`digest`]), hex ([`hex`]).
//!
//! This crate never does I/O, never allocates per header on the parse path,
//! never unescapes URIs and never panics on input.
#![deny(missing_docs)]

pub mod addr;
pub mod builder;
pub mod digest;
pub mod error;
pub mod framing;
pub mod header;
pub mod hex;
pub mod message;
pub mod method;
pub mod net;
pub mod params;
pub mod scan;
pub mod typed;
pub mod uri;
pub mod validate;
pub mod via;

pub use addr::{Contacts, NameAddr};
pub use builder::{default_reason, MessageBuilder};
pub use error::{HeaderError, ParseError};
pub use framing::{FramingError, StreamDecoder, StreamItem};
pub use header::HeaderName;
pub use message::{HeaderRef, Message};
pub use method::{InDialog, Method, SUPPORTED, SUPPORTED_OPTIONS};
pub use net::{ConnId, Peer, Transport};
pub use params::Params;
pub use typed::{AuthParams, CSeq, RAck, Reason};
pub use uri::{Scheme, Uri};
pub use validate::{validate, Policy, Rejection, Verdict};
pub use via::{Via, MAGIC_COOKIE};
