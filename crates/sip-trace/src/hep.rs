//! HEP v3 (the Extensible Encapsulation Protocol of the HOMER project):
//! one captured SIP message as one HEP packet, as Kamailio's `siptrace`,
//! FreeSWITCH's capture server and Asterisk's `res_hep` send them to a
//! capture server (Homer's heplify-server, Kamailio's `sipcapture`).
//!
//! A packet is `HEP3`, its total length (16 bits, network order), then
//! chunks: vendor id 0 (generic), a type, the chunk's length with its
//! 6-byte header, the value. Sent here: IP family (1), IP protocol (2),
//! IPv4 or IPv6 source and destination (3, 4 or 5, 6), ports (7, 8),
//! seconds and microseconds (9, 10), protocol type SIP (11 = 1), capture
//! agent id (12), the password when one is set (14), the message (15) and
//! the correlation id (17), which ties a call's legs together.

use crate::{Captured, Ends};
use sip_message::Transport;

/// Protocol type of a SIP payload (chunk 11).
const PROTO_SIP: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Who sends: the capture agent id and the password of the collector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agent {
    /// Capture agent id (chunk 12), as the collector knows this node.
    pub capture_id: u32,
    /// Authentication key (chunk 14); none when empty.
    pub password: String,
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // A value longer than a chunk can say is cut (a SIP message is far
    // below 65,529 bytes; the collector then sees a cut message).
    let value = &value[..value.len().min(usize::from(u16::MAX) - 6)];
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((value.len() + 6) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The HEP v3 packet of `m`, with `correlation` (chunk 17; left out when
/// empty). A packet is at most 65,535 bytes: a payload that would not fit
/// is cut to fit.
pub fn encode(m: &Captured, agent: &Agent, correlation: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.bytes.len() + 128 + correlation.len());
    out.extend_from_slice(b"HEP3\0\0");
    let (family, src, dst): (u8, Vec<u8>, Vec<u8>) = match Ends::of(m.src, m.dst) {
        Ends::V4(s, d) => (AF_INET, s.to_vec(), d.to_vec()),
        Ends::V6(s, d) => (AF_INET6, s.to_vec(), d.to_vec()),
    };
    chunk(&mut out, 1, &[family]);
    let proto = if m.transport == Transport::Udp { IPPROTO_UDP } else { IPPROTO_TCP };
    chunk(&mut out, 2, &[proto]);
    let (src_kind, dst_kind) = if family == AF_INET { (3, 4) } else { (5, 6) };
    chunk(&mut out, src_kind, &src);
    chunk(&mut out, dst_kind, &dst);
    chunk(&mut out, 7, &m.src.port().to_be_bytes());
    chunk(&mut out, 8, &m.dst.port().to_be_bytes());
    chunk(&mut out, 9, &(m.time_us.div_euclid(1_000_000) as u32).to_be_bytes());
    chunk(&mut out, 10, &(m.time_us.rem_euclid(1_000_000) as u32).to_be_bytes());
    chunk(&mut out, 11, &[PROTO_SIP]);
    chunk(&mut out, 12, &agent.capture_id.to_be_bytes());
    if !agent.password.is_empty() {
        chunk(&mut out, 14, agent.password.as_bytes());
    }
    if !correlation.is_empty() {
        chunk(&mut out, 17, correlation);
    }
    let room = usize::from(u16::MAX) - out.len() - 6;
    chunk(&mut out, 15, &m.bytes[..m.bytes.len().min(room)]);
    let len = out.len() as u16;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use bytes::Bytes;

    /// The chunks of a packet: (type, value), checking every length.
    fn chunks(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
        let mut out = Vec::new();
        let mut at = 6;
        while at < p.len() {
            assert_eq!(&p[at..at + 2], &[0, 0], "vendor 0");
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
            out.push((kind, p[at + 6..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, p.len());
        out
    }

    fn sample(src: &str, dst: &str, transport: Transport) -> Captured {
        Captured {
            time_us: 1_700_000_001_000_042,
            direction: Direction::In,
            transport,
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            bytes: Bytes::from_static(b"BYE sip:x SIP/2.0\r\n\r\n"),
            call_id_range: 0..0,
        }
    }

    #[test]
    fn ipv4_udp_with_every_chunk() {
        let agent = Agent { capture_id: 2001, password: "secret".into() };
        let p =
            encode(&sample("192.0.2.1:5062", "127.0.0.1:5060", Transport::Udp), &agent, b"corr");
        let c = chunks(&p);
        let want: Vec<(u16, Vec<u8>)> = vec![
            (1, vec![2]),
            (2, vec![17]),
            (3, vec![192, 0, 2, 1]),
            (4, vec![127, 0, 0, 1]),
            (7, 5062u16.to_be_bytes().to_vec()),
            (8, 5060u16.to_be_bytes().to_vec()),
            (9, 1_700_000_001u32.to_be_bytes().to_vec()),
            (10, 42u32.to_be_bytes().to_vec()),
            (11, vec![1]),
            (12, 2001u32.to_be_bytes().to_vec()),
            (14, b"secret".to_vec()),
            (17, b"corr".to_vec()),
            (15, b"BYE sip:x SIP/2.0\r\n\r\n".to_vec()),
        ];
        assert_eq!(c, want);
    }

    #[test]
    fn ipv6_tcp_without_password_or_correlation() {
        let p = encode(
            &sample("[2001:db8::1]:5061", "[::1]:5060", Transport::Tls),
            &Agent::default(),
            b"",
        );
        let c = chunks(&p);
        assert_eq!(c[0], (1, vec![10]));
        assert_eq!(c[1], (2, vec![6]));
        assert_eq!(c[2].0, 5);
        assert_eq!(c[3], (6, std::net::Ipv6Addr::LOCALHOST.octets().to_vec()));
        assert!(!c.iter().any(|(k, _)| *k == 14 || *k == 17));
    }

    #[test]
    fn a_huge_payload_is_cut_to_one_packet() {
        let mut m = sample("127.0.0.1:1", "127.0.0.1:2", Transport::Tcp);
        m.bytes = Bytes::from(vec![b'a'; 70_000]);
        let p = encode(&m, &Agent::default(), b"x");
        assert_eq!(p.len(), 65_535);
        let c = chunks(&p);
        assert_eq!(c.last().map(|(k, _)| *k), Some(15));
    }
}
