//! A pcap file (the classic libpcap format, microsecond stamps) of
//! captured messages, which Wireshark and tshark open and decode as SIP.
//!
//! Each message is one UDP datagram in a raw IP packet (`LINKTYPE_RAW`:
//! no link layer), from its source to its destination address, whatever
//! transport carried it: over TLS and WebSocket the switch holds the SIP
//! text, not the encrypted or framed bytes, and one datagram per message is
//! what lets any tool show one SIP message per packet. The transport is in
//! the API's JSON (`transport`). Checksums are computed, so tools flag
//! nothing.

use crate::{Captured, Ends};
use std::net::SocketAddr;

/// The pcap content type (`Accept` of the API's download).
pub const CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

/// `LINKTYPE_RAW`: each packet starts with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
/// Largest UDP payload written (an IPv4 packet's length is 16 bits); a
/// longer message is cut (its packet then says so by its original length).
const MAX_PAYLOAD: usize = 65_000;

/// The pcap file of `messages`, in their order.
pub fn write(messages: &[Captured]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(24 + messages.iter().map(|m| m.bytes.len() + 64).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for m in messages {
        let packet = ip_udp_packet(m.src, m.dst, &m.bytes[..m.bytes.len().min(MAX_PAYLOAD)]);
        let secs = m.time_us.div_euclid(1_000_000);
        let micros = m.time_us.rem_euclid(1_000_000);
        out.extend_from_slice(&(secs as u32).to_le_bytes());
        out.extend_from_slice(&(micros as u32).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        let original = packet.len() + m.bytes.len().saturating_sub(MAX_PAYLOAD);
        out.extend_from_slice(&(original as u32).to_le_bytes());
        out.extend_from_slice(&packet);
    }
    out
}

/// One's-complement sum of 16-bit words (an odd byte padded with zero).
fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The UDP header and payload, with the checksum over `pseudo` (the IP
/// pseudo-header's sum).
fn udp(src_port: u16, dst_port: u16, payload: &[u8], pseudo: u32) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let sum = fold(ones_sum(pseudo + u32::from(len) + 17, &d));
    // 0 means "no checksum" in UDP: an all-ones result is sent as such.
    let sum = if sum == 0 { 0xffff } else { sum };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

/// A raw IPv4 or IPv6 packet carrying `payload` in UDP from `src` to `dst`.
pub(crate) fn ip_udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    match Ends::of(src, dst) {
        Ends::V4(s, d) => {
            let pseudo = ones_sum(ones_sum(0, &s), &d);
            let datagram = udp(src.port(), dst.port(), payload, pseudo);
            let total = (20 + datagram.len()) as u16;
            let mut p = Vec::with_capacity(usize::from(total));
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, TTL, UDP, checksum
            p.extend_from_slice(&s);
            p.extend_from_slice(&d);
            let sum = fold(ones_sum(0, &p));
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(&datagram);
            p
        }
        Ends::V6(s, d) => {
            let pseudo = ones_sum(ones_sum(0, &s), &d);
            let datagram = udp(src.port(), dst.port(), payload, pseudo);
            let mut p = Vec::with_capacity(40 + datagram.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
            p.extend_from_slice(&[17, 64]); // next header UDP, hop limit
            p.extend_from_slice(&s);
            p.extend_from_slice(&d);
            p.extend_from_slice(&datagram);
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use bytes::Bytes;
    use sip_message::Transport;

    fn captured(src: &str, dst: &str, text: &str) -> Captured {
        Captured {
            time_us: 1_700_000_000_123_456,
            direction: Direction::Out,
            transport: Transport::Udp,
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            call_id_range: 0..0,
        }
    }

    #[test]
    fn header_and_one_ipv4_packet() {
        let f = write(&[captured("127.0.0.1:5060", "127.0.0.2:5062", "OPTIONS x SIP/2.0\r\n\r\n")]);
        assert_eq!(&f[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(f[20..24].try_into().expect("4")), 101);
        let rec = &f[24..];
        assert_eq!(u32::from_le_bytes(rec[0..4].try_into().expect("4")), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().expect("4")), 123_456);
        let len = u32::from_le_bytes(rec[8..12].try_into().expect("4")) as usize;
        let ip = &rec[16..];
        assert_eq!(ip.len(), len);
        assert_eq!(len, 20 + 8 + 21);
        // The IPv4 header checksums to zero, and so does the UDP datagram
        // with its pseudo-header.
        assert_eq!(fold(ones_sum(0, &ip[..20])), 0);
        let pseudo = ones_sum(ones_sum(0, &ip[12..16]), &ip[16..20]);
        assert_eq!(fold(ones_sum(pseudo + 17 + (len as u32 - 20), &ip[20..])), 0);
        assert_eq!(&ip[20..22], &5060u16.to_be_bytes());
        assert_eq!(&ip[28..], b"OPTIONS x SIP/2.0\r\n\r\n");
    }

    #[test]
    fn ipv6_and_mixed_families() {
        let p = ip_udp_packet(
            "[::1]:5060".parse().expect("addr"),
            "127.0.0.1:5070".parse().expect("addr"),
            b"odd",
        );
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(
            &p[24..40],
            &"127.0.0.1".parse::<std::net::Ipv4Addr>().expect("ip").to_ipv6_mapped().octets()
        );
        let pseudo = ones_sum(ones_sum(0, &p[8..24]), &p[24..40]);
        assert_eq!(fold(ones_sum(pseudo + 17 + 11, &p[40..])), 0);
    }
}
