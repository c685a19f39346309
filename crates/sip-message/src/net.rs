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
    /// TLS over TCP (RFC 3261 26, `sips:`): reliable, stream framed.
    Tls,
    /// WebSocket (RFC 7118): reliable, one SIP message per WebSocket message.
    Ws,
    /// Secure WebSocket (WebSocket over TLS, RFC 7118).
    Wss,
}

impl Transport {
    /// `true` for reliable transports (no retransmission timers): all but
    /// UDP, each over a connection that messages to the peer go back over.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// `true` for transports that are encrypted (TLS, WSS).
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// The secure form of this transport, for a `sips:` URI (RFC 5630 4:
    /// over TCP means TLS; over WS, WSS). UDP has none: TLS, as RFC 3261
    /// 26.2.2 says for a `sips:` URI without a transport.
    pub fn secured(self) -> Transport {
        match self {
            Transport::Udp | Transport::Tcp | Transport::Tls => Transport::Tls,
            Transport::Ws | Transport::Wss => Transport::Wss,
        }
    }

    /// The token used in Via (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The `transport=` URI parameter value (`udp`, `tcp`, `tls`, `ws`,
    /// `wss`).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The port a URI without one means (RFC 3261 19.1.2, RFC 7118 5:
    /// WebSocket URIs carry theirs).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }

    /// Parses a Via transport token or `transport=` URI parameter.
    pub fn from_token(t: &[u8]) -> Option<Transport> {
        if t.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else if t.eq_ignore_ascii_case(b"tls") {
            Some(Transport::Tls)
        } else if t.eq_ignore_ascii_case(b"ws") {
            Some(Transport::Ws)
        } else if t.eq_ignore_ascii_case(b"wss") {
            Some(Transport::Wss)
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
    /// The stream connection, for TCP, TLS, WS and WSS; `None` to let the transport pick or
    /// open one.
    pub conn: Option<ConnId>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls, Transport::Ws, Transport::Wss] {
            assert_eq!(Transport::from_token(t.via_token().as_bytes()), Some(t));
            assert_eq!(Transport::from_token(t.uri_param().as_bytes()), Some(t));
            assert_eq!(t.is_reliable(), t != Transport::Udp);
        }
        assert_eq!(Transport::from_token(b"sctp"), None);
        assert!(Transport::Wss.is_secure() && Transport::Tls.is_secure());
        assert!(!Transport::Ws.is_secure());
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Udp.secured(), Transport::Tls);
        assert_eq!(Transport::Ws.secured(), Transport::Wss);
    }
}
