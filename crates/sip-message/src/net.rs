//! Where a message came from or goes to. Plain data, shared by the transport
//! (which fills it in) and the transaction and dialog layers (which only read
//! it): the layers above never touch a socket.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable; transactions retransmit.
    Udp,
    /// TCP: reliable, stream framed.
    Tcp,
}

impl Transport {
    /// `true` for reliable transports (no retransmission timers).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token used in Via (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Parses a Via transport token or `transport=` URI parameter.
    pub fn from_token(t: &[u8]) -> Option<Transport> {
        if t.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Identifies one open stream connection inside the transport.
pub type ConnId = u64;

/// The far end of a message and how to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport used.
    pub transport: Transport,
    /// The remote address (source of a received message, destination of a
    /// sent one).
    pub remote: SocketAddr,
    /// The local address the message arrived on / leaves from.
    pub local: SocketAddr,
    /// The stream connection, for TCP; `None` to let the transport pick or
    /// open one.
    pub conn: Option<ConnId>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.remote)
    }
}
