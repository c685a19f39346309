//! Answers the switch gives by itself, without routing: OPTIONS to the
//! switch, and the error responses a request earns before it is routed
//! (400/416/420/501/505 from the codec's verdict, 483 for Max-Forwards 0).

use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Policy, Rejection, Uri};
use std::net::SocketAddr;

/// Methods the switch implements (Allow header, 501 decision).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO";

/// Option tags the switch supports.
pub const SUPPORTED: &str = "100rel";

/// The codec policy matching [`ALLOW`] and [`SUPPORTED`].
pub fn policy() -> Policy {
    use Method::*;
    Policy {
        methods: vec![Invite, Ack, Cancel, Bye, Options, Register, Prack, Update, Info],
        supported: SUPPORTED.split(", ").map(str::to_owned).collect(),
    }
}

/// What identifies "this switch" in a Request-URI.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    /// Host names (aliases).
    pub names: Vec<String>,
    /// Bound addresses.
    pub addrs: Vec<SocketAddr>,
}

impl LocalIdentity {
    /// `true` when the URI's host is one of our names or addresses.
    pub fn is_local(&self, uri: &Uri<'_>) -> bool {
        let Ok(host) = std::str::from_utf8(uri.host) else { return false };
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return true;
        }
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let Ok(ip) = bare.parse::<std::net::IpAddr>() else { return false };
        self.addrs.iter().any(|a| {
            (a.ip() == ip || (a.ip().is_unspecified() && ip.is_loopback()))
                && uri.port.is_none_or(|p| p == a.port())
        })
    }
}

/// A random tag for To headers of local responses.
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A response to `req` with `code`, a To tag and our Server header.
pub fn response(req: &Message, code: u16, server: &str) -> sip_message::MessageBuilder {
    let b =
        Message::response_to(req, code).header(HeaderName::Server, Bytes::from(server.to_owned()));
    if code == 100 {
        b
    } else {
        b.to_tag(&new_tag())
    }
}

/// The response to a request the codec rejected.
pub fn rejection(req: &Message, r: &Rejection, server: &str) -> Message {
    let mut b = response(req, r.status, server);
    if r.status == 400 {
        b = b.reason(Bytes::from(format!("Bad Request ({})", r.detail)));
    }
    b = b.header(
        HeaderName::Warning,
        Bytes::from(format!("399 forkswitch \"{}\"", r.detail.replace('"', "'"))),
    );
    if r.status == 420 {
        b = b.header(HeaderName::Unsupported, Bytes::from(r.unsupported.join(", ")));
    }
    if matches!(r.status, 501 | 505) {
        b = b.header(HeaderName::Allow, ALLOW);
    }
    b.build()
}

/// 200 OK to an OPTIONS for the switch itself (RFC 3261 11.2).
pub fn options_ok(req: &Message, server: &str) -> Message {
    response(req, 200, server)
        .header(HeaderName::Allow, ALLOW)
        .header(HeaderName::Accept, "application/sdp")
        .header(HeaderName::AcceptLanguage, "en")
        .header(HeaderName::Supported, SUPPORTED)
        .build()
}

/// An OPTIONS keep-alive to a registered UDP contact (sent statelessly).
pub fn keepalive_options(peer: &sip_message::Peer, branch: &str, server: &str) -> Message {
    let local = peer.local;
    let remote = peer.remote;
    Message::request(Method::Options, Bytes::from(format!("sip:{remote}")))
        .header(HeaderName::Via, Bytes::from(format!("SIP/2.0/UDP {local};branch={branch};rport")))
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, Bytes::from(format!("<sip:keepalive@{local}>;tag={}", new_tag())))
        .header(HeaderName::To, Bytes::from(format!("<sip:{remote}>")))
        .header(HeaderName::CallId, Bytes::from(format!("{}@forkswitch", new_tag())))
        .header(HeaderName::CSeq, "1 OPTIONS")
        .header(HeaderName::UserAgent, Bytes::from(server.to_owned()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_identity() {
        let id = LocalIdentity {
            names: vec!["localhost".into()],
            addrs: vec!["127.0.0.1:5060".parse().expect("addr")],
        };
        let uri = |s: &'static str| Uri::parse(s.as_bytes()).expect("uri");
        assert!(id.is_local(&uri("sip:service@127.0.0.1:5060")));
        assert!(id.is_local(&uri("sip:127.0.0.1")));
        assert!(id.is_local(&uri("sip:x@LOCALHOST")));
        assert!(!id.is_local(&uri("sip:x@127.0.0.1:5070")));
        assert!(!id.is_local(&uri("sip:x@example.com")));
    }
}
