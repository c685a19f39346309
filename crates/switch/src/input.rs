//! What the switch core is told: bytes from the network, the time, DNS
//! answers, transport failures and commands from the API. Everything the
//! shell learns becomes one [`Input`]; nothing reaches the core any other
//! way.

use bytes::Bytes;
use records::Timestamp;
use sip_message::{ConnId, Peer, Transport};
use std::net::SocketAddr;
use std::time::Instant;
use uuid::Uuid;

use crate::output::{QueryId, Token};

/// The time, given with every input: a monotonic instant for deadlines and
/// a wall-clock timestamp for the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub at: Instant,
    /// Wall-clock time, written in `tm_*` fields.
    pub wall: Timestamp,
}

/// One SIP message as it arrived: a UDP datagram, or one message framed out
/// of a stream connection.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Where it came from: transport, remote and local address, and the
    /// stream connection for TCP.
    pub peer: Peer,
    /// The bytes, unparsed.
    pub bytes: Bytes,
}

/// A next hop found by DNS (RFC 3263): transport and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Transport to use.
    pub transport: Transport,
    /// Address to send to.
    pub address: SocketAddr,
}

/// What the API asks of the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Hang up the live call a groupcall (root or child) belongs to: ringing
    /// legs are CANCELed and the caller gets 487; after the answer both
    /// sides get a BYE. The groupcall ends `hangup`.
    HangupGroupcall {
        /// The groupcall record id.
        id: Uuid,
    },
    /// Hang up one call record: a leg still ringing is CANCELed (the rest of
    /// its group goes on); the answered leg, or the inbound call, hangs up
    /// the whole call.
    HangupCall {
        /// The call record id.
        id: Uuid,
    },
}

/// One input to [`crate::Switch::handle_input`].
#[derive(Clone, Debug)]
pub enum Input {
    /// A message from the network.
    Datagram(Datagram),
    /// The deadline of the last [`crate::Output::Timeout`] has come (or any
    /// time later: due timers run, others wait).
    Timeout,
    /// The answer to an [`crate::Output::Resolve`]; empty when the name
    /// did not resolve.
    Resolved {
        /// The question answered.
        query: QueryId,
        /// Next hops in RFC 3263 order.
        targets: Vec<Target>,
    },
    /// A [`crate::Output::Transmit`] could not be sent (refused connection,
    /// unreachable network, full queue).
    SendFailed {
        /// The token of that transmit.
        token: Token,
    },
    /// A stream connection closed (either side, or an error).
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A command from the API.
    Command(Command),
}
