//! # sip-trace: the SIP messages of recent calls, kept and exported
//!
//! What an operator reaches for when a call goes wrong: its messages. This
//! crate keeps every SIP message the switch receives and sends
//! ([`Captured`]: time, direction, transport, addresses, bytes) in a
//! [`TraceStore`] bounded in bytes and in age (the oldest go first, so a
//! flood of hostile messages cannot grow it past its budget), indexed by
//! Call-ID; and it encodes messages for tools: a pcap file that Wireshark and
//! tshark open as SIP ([`pcap`]), and HEP v3 packets for Homer and other
//! capture servers ([`hep`]).
//!
//! It is pure: it never reads a clock or touches a socket. Times come in
//! with the messages (microseconds since the Unix epoch) and "now" is an
//! argument. The shell captures (its tap where datagrams come in and
//! transmits go out), the API reads.
//!
//! Main types: [`TraceStore`], [`TraceLimits`], [`Captured`], [`Direction`];
//! functions [`call_id_of`], [`call_id_range`], [`pcap::write`],
//! [`hep::encode`].
#![deny(missing_docs)]

mod callid;
pub mod hep;
pub mod pcap;
mod store;

pub use callid::{call_id_of, call_id_range};
pub use store::{TraceLimits, TraceStats, TraceStore};

use bytes::Bytes;
use sip_message::Transport;
use std::net::{IpAddr, SocketAddr};

/// Both addresses of a message in one IP family, as packet formats carry
/// them: IPv4 when both are, else IPv6 (an IPv4 address as IPv4-mapped).
pub(crate) enum Ends {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

impl Ends {
    pub(crate) fn of(src: SocketAddr, dst: SocketAddr) -> Ends {
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        };
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ends::V4(s.octets(), d.octets()),
            (s, d) => Ends::V6(v6(s), v6(d)),
        }
    }
}

/// Which way a message went, seen from the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the switch.
    In,
    /// Sent by the switch.
    Out,
}

impl Direction {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One SIP message as it crossed the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// When, microseconds since the Unix epoch.
    pub time_us: i64,
    /// Received or sent.
    pub direction: Direction,
    /// Over what.
    pub transport: Transport,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// Where the message's Call-ID is in `bytes` ([`call_id_range`]:
    /// empty when it has none). A range, not a copy: the tap stores it for
    /// every message.
    pub call_id_range: std::ops::Range<usize>,
    /// The message, as on the wire.
    pub bytes: Bytes,
}

impl Captured {
    /// The message's Call-ID (empty when it has none).
    pub fn call_id(&self) -> &[u8] {
        self.bytes.get(self.call_id_range.clone()).unwrap_or_default()
    }
}
