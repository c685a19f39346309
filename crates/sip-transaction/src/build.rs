//! Requests the transaction layer (or its TU) derives from an INVITE: the
//! ACK for a non-2xx final response and the CANCEL.

use bytes::Bytes;
use sip_message::scan::CommaSplit;
use sip_message::{HeaderName, Message, MessageBuilder, Method};

/// `part` as a [`Bytes`] sharing `parent` when it lies inside it, else a copy.
fn sub_bytes(parent: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(parent.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if start <= parent.len() && end <= parent.len() => parent.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// The topmost Via value (the first element of the first Via line).
fn top_via(m: &Message) -> Option<Bytes> {
    let line = m.header_bytes(HeaderName::Via)?;
    let top = CommaSplit::new(&line).next()?;
    Some(sub_bytes(&line, top))
}

fn cseq_value(invite: &Message, method: &str) -> Bytes {
    let seq = invite.cseq().map(|c| c.seq).unwrap_or_default();
    Bytes::from(format!("{seq} {method}"))
}

/// Via (the INVITE's top one only), Route, Max-Forwards, From, `to`,
/// Call-ID, CSeq `n METHOD`.
fn derived(invite: &Message, method: Method, to: Option<Bytes>) -> Message {
    let name = if method == Method::Ack { "ACK" } else { "CANCEL" };
    let uri = Bytes::copy_from_slice(invite.request_uri_bytes().unwrap_or_default());
    let mut b: MessageBuilder = Message::request(method, uri);
    if let Some(v) = top_via(invite) {
        b = b.header(HeaderName::Via, v);
    }
    for r in invite.all_header_bytes(HeaderName::Route) {
        b = b.header(HeaderName::Route, r);
    }
    b = b.header(
        HeaderName::MaxForwards,
        invite.header_bytes(HeaderName::MaxForwards).unwrap_or(Bytes::from_static(b"70")),
    );
    for (h, v) in [
        (HeaderName::From, invite.header_bytes(HeaderName::From)),
        (HeaderName::To, to),
        (HeaderName::CallId, invite.header_bytes(HeaderName::CallId)),
    ] {
        if let Some(v) = v {
            b = b.header(h, v);
        }
    }
    b.header(HeaderName::CSeq, cseq_value(invite, name)).build()
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's
/// Request-URI, top Via (same branch: it belongs to the INVITE
/// transaction), Route headers, Max-Forwards, From and Call-ID, the To of
/// the response (with its tag), and CSeq with the INVITE's number and
/// method ACK. No body.
///
/// The client INVITE transaction sends it by itself; this is public for
/// tests and for stateless use. An ACK for a 2xx is the dialog layer's
/// business (a new branch, the route set), not this one.
pub fn ack_for(invite: &Message, response: &Message) -> Message {
    let to = response.header_bytes(HeaderName::To).or_else(|| invite.header_bytes(HeaderName::To));
    derived(invite, Method::Ack, to)
}

/// The CANCEL for an INVITE (RFC 3261 9.1): the INVITE's Request-URI, top
/// Via (same branch), Route headers, Max-Forwards, From, To, Call-ID, and
/// CSeq with the INVITE's number and method CANCEL. Send it with
/// [`crate::TransactionLayer::send_request`] to the INVITE's peer: it is a
/// non-INVITE client transaction of its own (same branch, other method).
pub fn cancel_for(invite: &Message) -> Message {
    derived(invite, Method::Cancel, invite.header_bytes(HeaderName::To))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP a.example:5060;branch=z9hG4bKabc, SIP/2.0/UDP p.example;branch=z9hG4bKp\r\n\
        Via: SIP/2.0/UDP q.example;branch=z9hG4bKq\r\n\
        Max-Forwards: 69\r\n\
        Route: <sip:r1.example;lr>, <sip:r2.example;lr>\r\n\
        Route: <sip:r3.example;lr>\r\n\
        From: <sip:alice@a.example>;tag=f1\r\n\
        To: <sip:bob@b.example>\r\n\
        Call-ID: call-1\r\n\
        CSeq: 314 INVITE\r\n\
        Contact: <sip:alice@192.0.2.1>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn wire(m: &Message) -> Message {
        Message::parse(m.to_bytes()).unwrap()
    }

    #[test]
    fn ack_per_17_1_1_3() {
        let inv = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
        let resp = Message::response_to(&inv, 486).to_tag("t9").build();
        let ack = wire(&ack_for(&inv, &resp));
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.request_uri_bytes(), Some(&b"sip:bob@b.example"[..]));
        let vias: Vec<_> = ack.vias().map(|v| v.unwrap().branch().unwrap().to_vec()).collect();
        assert_eq!(vias, vec![b"z9hG4bKabc".to_vec()]);
        let routes: Vec<_> = ack.values(HeaderName::Route).map(<[u8]>::to_vec).collect();
        assert_eq!(routes.len(), 3);
        assert_eq!(ack.to_tag(), Some(&b"t9"[..]));
        assert_eq!(ack.from_tag(), Some(&b"f1"[..]));
        assert_eq!(ack.call_id().unwrap(), b"call-1");
        let cseq = ack.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (314, Method::Ack));
        assert_eq!(ack.max_forwards().unwrap(), Some(69));
        assert!(ack.body().is_empty());
        assert_eq!(ack.header(HeaderName::Contact), None);
    }

    #[test]
    fn cancel_per_9_1() {
        let inv = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
        let c = wire(&cancel_for(&inv));
        assert_eq!(c.method(), Some(&Method::Cancel));
        assert_eq!(c.request_uri_bytes(), Some(&b"sip:bob@b.example"[..]));
        assert_eq!(c.vias().count(), 1);
        assert_eq!(c.top_via().unwrap().branch(), Some(&b"z9hG4bKabc"[..]));
        assert_eq!(c.to_tag(), None);
        assert_eq!(c.header(HeaderName::To), Some(&b"<sip:bob@b.example>"[..]));
        let cseq = c.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (314, Method::Cancel));
        assert_eq!(c.values(HeaderName::Route).count(), 3);
    }

    #[test]
    fn sub_bytes_copies_foreign_slices() {
        let parent = Bytes::from_static(b"abcdef");
        assert_eq!(sub_bytes(&parent, &parent[2..4]), Bytes::from_static(b"cd"));
        assert_eq!(sub_bytes(&parent, b"zz"), Bytes::from_static(b"zz"));
    }
}
