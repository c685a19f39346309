//! Building new requests and responses (B2BUA legs, local answers).

use crate::addr::NameAddr;
use crate::header::HeaderName;
use crate::message::{itoa_buf, Header, Message, Parts, StartLine, Text};
use crate::method::Method;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

const SIP2: Bytes = Bytes::from_static(b"SIP/2.0");

/// Builds a [`Message`]; Content-Length is added by [`MessageBuilder::build`].
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    start: StartLine,
    headers: Vec<Header>,
    owned: Vec<Bytes>,
    body: Bytes,
    content_type: Option<Bytes>,
}

/// The RFC 3261 reason phrase for common status codes.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// The owned-values vector of a new message, sized for a typical one.
fn owned_with(a: Bytes, b: Bytes) -> Vec<Bytes> {
    let mut v = Vec::with_capacity(16);
    v.push(a);
    v.push(b);
    v
}

impl MessageBuilder {
    fn new(start: StartLine, owned: Vec<Bytes>) -> Self {
        MessageBuilder {
            start,
            headers: Vec::with_capacity(12),
            owned,
            body: Bytes::new(),
            content_type: None,
        }
    }

    fn own(&mut self, b: Bytes) -> Text {
        self.owned.push(b);
        Text::Owned((self.owned.len() - 1) as u32)
    }

    fn push(&mut self, name: HeaderName, value: Bytes) {
        let value = self.own(value);
        let name_text = if name == HeaderName::Other {
            self.own(Bytes::from_static(b"X-Unknown"))
        } else {
            Text::Canonical
        };
        self.headers.push(Header { name, name_text, value, line: None });
    }
}

impl Message {
    /// Starts a new request: `METHOD uri SIP/2.0`.
    pub fn request(method: Method, uri: impl Into<Bytes>) -> MessageBuilder {
        MessageBuilder::new(
            StartLine::Request { method, uri: Text::Owned(0), version: Text::Owned(1) },
            owned_with(uri.into(), SIP2),
        )
    }

    /// Starts a new response with `code` and `reason` (see [`default_reason`]).
    pub fn response(code: u16, reason: impl Into<Bytes>) -> MessageBuilder {
        MessageBuilder::new(
            StartLine::Response { version: Text::Owned(0), code, reason: Text::Owned(1) },
            owned_with(SIP2, reason.into()),
        )
    }

    /// Starts a response to `req` per RFC 3261 8.2.6: Via (all values, in
    /// order), From, To, Call-ID and CSeq are copied (sharing `req`'s bytes),
    /// and Timestamp for a 100. Add a To tag with [`MessageBuilder::to_tag`].
    pub fn response_to(req: &Message, code: u16) -> MessageBuilder {
        let mut b = Message::response(code, default_reason(code));
        let p = &*req.p;
        for h in p.headers.iter() {
            let keep = match h.name {
                HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq => true,
                HeaderName::Timestamp => code == 100,
                _ => false,
            };
            if keep {
                b.push(h.name, p.text_bytes(&h.value, h.name));
            }
        }
        b
    }
}

impl MessageBuilder {
    /// Appends a header field.
    pub fn header(mut self, name: HeaderName, value: impl Into<Bytes>) -> Self {
        self.push(name, value.into());
        self
    }

    /// Appends an extension header (`X-Foo: bar`), or a known one by name.
    pub fn header_named(mut self, name: &str, value: impl Into<Bytes>) -> Self {
        let name_text = self.own(Bytes::copy_from_slice(name.as_bytes()));
        let value = self.own(value.into());
        self.headers.push(Header {
            name: HeaderName::parse(name.as_bytes()),
            name_text,
            value,
            line: None,
        });
        self
    }

    /// Replaces the reason phrase of a response.
    pub fn reason(mut self, text: impl Into<Bytes>) -> Self {
        let t = self.own(text.into());
        if let StartLine::Response { reason, .. } = &mut self.start {
            *reason = t;
        }
        self
    }

    /// Adds `;tag=TAG` to the To header when it has no tag yet.
    pub fn to_tag(mut self, tag: &str) -> Self {
        let Some(at) = self.headers.iter().position(|h| h.name == HeaderName::To) else {
            return self;
        };
        let Text::Owned(i) = self.headers[at].value else { return self };
        let Some(v) = self.owned.get(i as usize) else { return self };
        let has_tag = NameAddr::parse(v).map(|a| a.tag().is_some()).unwrap_or(false);
        if !has_tag {
            let mut nv = BytesMut::with_capacity(v.len() + 5 + tag.len());
            nv.put_slice(v);
            nv.put_slice(b";tag=");
            nv.put_slice(tag.as_bytes());
            self.owned[i as usize] = nv.freeze();
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: impl Into<Bytes>, body: impl Into<Bytes>) -> Self {
        self.content_type = Some(content_type.into());
        self.body = body.into();
        self
    }

    /// Finishes the message: Content-Type (with a body) and Content-Length
    /// are appended last.
    pub fn build(mut self) -> Message {
        if let Some(ct) = self.content_type.take() {
            self.push(HeaderName::ContentType, ct);
        }
        let len = itoa_buf(self.body.len() as u64);
        self.push(HeaderName::ContentLength, Bytes::copy_from_slice(len.as_slice()));
        let body = std::mem::take(&mut self.body);
        let body = self.own(body);
        Message {
            p: Arc::new(Parts {
                buf: Bytes::new(),
                owned: self.owned,
                start: self.start,
                start_raw: None,
                headers: self.headers,
                body,
                pristine: None,
                defects: Vec::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn response_copies_8_2_6_headers() {
        let req = Message::parse(Bytes::from_static(
            b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z9hG4bK0\r\nVia: SIP/2.0/UDP q;branch=z9hG4bKq\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let resp = Message::response_to(&req, 180).to_tag("xyz").build();
        let wire = resp.to_bytes();
        let back = Message::parse(wire).unwrap();
        assert_eq!(back.status(), Some(180));
        assert_eq!(back.reason_phrase(), b"Ringing");
        assert_eq!(back.vias().count(), 3);
        assert_eq!(back.to_tag(), Some(&b"xyz"[..]));
        assert_eq!(back.from_tag(), Some(&b"1"[..]));
        assert_eq!(back.call_id().unwrap(), b"c1");
        assert_eq!(back.header(HeaderName::MaxForwards), None);
        assert_eq!(back.content_length().unwrap(), Some(0));
    }

    #[test]
    fn request_with_body() {
        let m = Message::request(Method::Invite, "sip:x@y")
            .header(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bKa")
            .header_named("X-Leg", "1")
            .body("application/sdp", Bytes::from_static(b"v=0\r\n\x00\xff"))
            .build();
        let back = Message::parse(m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.body(), b"v=0\r\n\x00\xff");
        assert_eq!(back.header_named("x-leg"), Some(&b"1"[..]));
    }
}
