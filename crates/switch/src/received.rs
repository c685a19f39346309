//! RFC 3261 18.2 and RFC 3581 on the switch's side of the transport:
//! stamping `received`/`rport` on a received request, and choosing where a
//! response goes. (Moved here from sip-transport: it is message work, and the
//! core does it before the transaction layer sees the request.)

use bytes::{BufMut, BytesMut};
use sip_message::{HeaderName, Message, Peer};
use std::net::{IpAddr, SocketAddr};

fn host_ip(host: &[u8]) -> Option<IpAddr> {
    let h = std::str::from_utf8(host).ok()?;
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.parse().ok()
}

/// Stamps the top Via of a received request (RFC 3261 18.2.1, RFC 3581 4):
/// `received=<source ip>` when the sent-by host differs from the source
/// address or `rport` is present, and `rport=<source port>` when the client
/// asked for it. Leaves the message untouched (and zero-copy) otherwise.
/// With `force_rport` (Kamailio's `force_rport()`), `rport` is filled in even
/// when the client did not ask, so responses return to the source port: what
/// NAT'ed phones without RFC 3581 need.
/// Returns `false` when there is no parsable top Via.
pub fn stamp_received(msg: &mut Message, src: SocketAddr, force_rport: bool) -> bool {
    let new_value = {
        let Ok(via) = msg.top_via() else { return false };
        let rport = if force_rport { Some(via.rport().flatten()) } else { via.rport() };
        let same_host = host_ip(via.host) == Some(src.ip());
        if same_host && (rport.is_none() || rport == Some(Some(src.port()))) {
            return true;
        }
        let Some(raw) = msg.values(HeaderName::Via).next() else { return false };
        let mut out = BytesMut::with_capacity(raw.len() + 48);
        // Rewrite the parameter list: drop old received/rport, re-add ours.
        let params = via.params.as_bytes();
        let head_len = raw.len() - params.len();
        out.put_slice(&raw[..head_len]);
        for (name, value) in via.params.iter() {
            if name.eq_ignore_ascii_case(b"received") || name.eq_ignore_ascii_case(b"rport") {
                continue;
            }
            out.put_u8(b';');
            out.put_slice(name);
            if let Some(v) = value {
                out.put_u8(b'=');
                out.put_slice(v);
            }
        }
        out.put_slice(b";received=");
        out.put_slice(src.ip().to_string().as_bytes());
        if rport.is_some() {
            out.put_slice(b";rport=");
            out.put_slice(src.port().to_string().as_bytes());
        }
        out.freeze()
    };
    msg.replace_top_via(new_value);
    true
}

/// Where to send a response (RFC 3261 18.2.2, RFC 3581 4), given the peer the
/// request came from: over the same connection for TCP, TLS, WS and WSS (the transport falls
/// back to `received`:sent-by port when it has closed); for UDP to
/// `received`:`rport`, else `received` (or sent-by host):sent-by port (5060).
pub fn response_target(resp: &Message, request_peer: &Peer) -> Peer {
    let Ok(via) = resp.top_via() else { return *request_peer };
    let ip = via.received().and_then(host_ip).or_else(|| host_ip(via.host));
    // rport when filled in, else the sent-by port, else 5060.
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    match (request_peer.transport, ip) {
        (_, None) => *request_peer,
        // Keep an open connection; the address is the fallback once closed.
        (t, Some(_)) if t.is_reliable() && request_peer.conn.is_some() => *request_peer,
        (_, Some(ip)) => Peer { remote: SocketAddr::new(ip, port), ..*request_peer },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sip_message::Transport;

    fn req(via: &str) -> Message {
        Message::parse(Bytes::from(format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP second;branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )))
        .expect("parse")
    }

    fn udp_peer(remote: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: remote.parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            conn: None,
        }
    }

    #[test]
    fn stamps_received_and_rport() {
        let mut m = req("SIP/2.0/UDP phone.example.com:5070;branch=z9hG4bKa;rport");
        assert!(stamp_received(&mut m, "192.0.2.7:40000".parse().expect("addr"), false));
        let v = m.top_via().expect("via");
        assert_eq!(v.received(), Some(&b"192.0.2.7"[..]));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(v.branch(), Some(&b"z9hG4bKa"[..]));
        assert_eq!(m.vias().count(), 2);
        let target = response_target(&m, &udp_peer("192.0.2.7:40000"));
        assert_eq!(target.remote, "192.0.2.7:40000".parse().expect("addr"));
    }

    #[test]
    fn no_stamp_when_sent_by_matches() {
        let mut m = req("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKa");
        let before = m.to_bytes();
        assert!(stamp_received(&mut m, "192.0.2.7:5070".parse().expect("addr"), false));
        assert_eq!(m.to_bytes(), before);
        let target = response_target(&m, &udp_peer("192.0.2.7:5070"));
        assert_eq!(target.remote.port(), 5070);
    }

    #[test]
    fn received_without_rport_uses_sent_by_port() {
        let mut m = req("SIP/2.0/UDP phone.example.com;branch=z9hG4bKa");
        assert!(stamp_received(&mut m, "192.0.2.9:40000".parse().expect("addr"), false));
        let target = response_target(&m, &udp_peer("192.0.2.9:40000"));
        assert_eq!(target.remote, "192.0.2.9:5060".parse().expect("addr"));
    }

    #[test]
    fn ipv6_received() {
        let mut m = req("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport");
        assert!(stamp_received(&mut m, "[::1]:40000".parse().expect("addr"), false));
        assert_eq!(m.top_via().expect("via").received(), Some(&b"::1"[..]));
        let t = response_target(&m, &udp_peer("[::1]:40000"));
        assert_eq!(t.remote, "[::1]:40000".parse().expect("addr"));
    }

    #[test]
    fn stream_requests_are_answered_over_their_connection() {
        // A browser's Via names a .invalid host: only the connection reaches it.
        for (transport, via) in [
            (Transport::Ws, "SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa"),
            (Transport::Tls, "SIP/2.0/TLS phone.example.com:5061;branch=z9hG4bKa"),
        ] {
            let mut m = req(via);
            let src = "192.0.2.9:40000".parse().expect("addr");
            assert!(stamp_received(&mut m, src, false));
            let peer = Peer { transport, conn: Some(3), ..udp_peer("192.0.2.9:40000") };
            assert_eq!(response_target(&m, &peer), peer);
        }
    }

    #[test]
    fn forced_rport() {
        let mut m = req("SIP/2.0/UDP phone.example.com;branch=z9hG4bKa");
        assert!(stamp_received(&mut m, "192.0.2.9:40000".parse().expect("addr"), true));
        assert_eq!(m.top_via().expect("via").rport(), Some(Some(40000)));
        let target = response_target(&m, &udp_peer("192.0.2.9:40000"));
        assert_eq!(target.remote, "192.0.2.9:40000".parse().expect("addr"));
    }
}
