//! RFC 3261 18.1.1 on the sending side: a request too large for UDP goes
//! over TCP, and its top Via says so.

use bytes::{BufMut, BytesMut};
use sip_message::{HeaderName, Message};

/// Rewrites the transport of the top Via from UDP to TCP (RFC 3261 18.1.1:
/// a request too large for UDP goes over TCP and says so in its Via).
pub fn via_to_tcp(msg: &Message) -> Option<Message> {
    let raw = msg.values(HeaderName::Via).next()?;
    let via = msg.top_via().ok()?;
    let t = via.transport;
    let off = t.as_ptr() as usize - raw.as_ptr() as usize;
    let mut v = BytesMut::with_capacity(raw.len());
    v.put_slice(&raw[..off]);
    v.put_slice(b"TCP");
    v.put_slice(&raw[off + t.len()..]);
    let mut m = msg.clone();
    m.replace_top_via(v.freeze());
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_rewritten_to_tcp() {
        let m = Message::request(sip_message::Method::Options, "sip:a@b")
            .header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKa")
            .header(HeaderName::Via, "SIP/2.0/UDP second;branch=z9hG4bK2")
            .build();
        let t = via_to_tcp(&m).expect("via");
        assert_eq!(t.top_via().expect("via").transport, b"TCP");
        assert_eq!(t.top_via().expect("via").branch(), Some(&b"z9hG4bKa"[..]));
        assert_eq!(t.vias().count(), 2, "only the top Via changes");
    }
}
