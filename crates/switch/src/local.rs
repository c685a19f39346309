//! Answers the switch gives by itself, without routing: OPTIONS to the
//! switch, the error responses a request earns before it is routed
//! (400/416/420/501/505 from the codec's verdict, 483 for Max-Forwards 0,
//! 404/403/407), and the OPTIONS keep-alive to registered UDP contacts.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use sip_message::{HeaderName, Message, MessageBuilder, Method, Peer, Rejection, Uri};
use std::net::SocketAddr;

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

/// Builds the switch's own responses and requests; owns the generator
/// their tags and Call-IDs come from.
#[derive(Debug)]
pub(crate) struct LocalAnswers {
    server: String,
    allow: String,
    rng: StdRng,
}

impl LocalAnswers {
    pub(crate) fn new(server: String, rng: StdRng) -> Self {
        LocalAnswers { server, allow: sip_message::method::allow(), rng }
    }

    /// A random tag.
    pub(crate) fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.gen::<u64>())
    }

    /// A response to `req` with `code`, a To tag and our Server header.
    pub(crate) fn response(&mut self, req: &Message, code: u16) -> MessageBuilder {
        let b = Message::response_to(req, code)
            .header(HeaderName::Server, Bytes::from(self.server.clone()));
        if code == 100 {
            b
        } else {
            let tag = self.tag();
            b.to_tag(&tag)
        }
    }

    /// [`LocalAnswers::response`], built.
    pub(crate) fn status(&mut self, req: &Message, code: u16) -> Message {
        self.response(req, code).build()
    }

    /// The response to a request the codec rejected.
    pub(crate) fn rejection(&mut self, req: &Message, r: &Rejection) -> Message {
        let mut b = self.response(req, r.status);
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
            b = b.header(HeaderName::Allow, Bytes::from(self.allow.clone()));
        }
        b.build()
    }

    /// 200 OK to an OPTIONS for the switch itself (RFC 3261 11.2).
    pub(crate) fn options_ok(&mut self, req: &Message) -> Message {
        let allow = Bytes::from(self.allow.clone());
        self.response(req, 200)
            .header(HeaderName::Allow, allow)
            .header(HeaderName::Accept, "application/sdp")
            .header(HeaderName::AcceptLanguage, "en")
            .header(HeaderName::Supported, sip_message::SUPPORTED_OPTIONS.join(", "))
            .build()
    }

    /// An OPTIONS keep-alive to a registered UDP contact (sent statelessly).
    pub(crate) fn keepalive_options(&mut self, peer: &Peer, branch: &str) -> Message {
        let (local, remote) = (peer.local, peer.remote);
        let tag = self.tag();
        let call_id = self.tag();
        Message::request(Method::Options, Bytes::from(format!("sip:{remote}")))
            .header(
                HeaderName::Via,
                Bytes::from(format!("SIP/2.0/UDP {local};branch={branch};rport")),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, Bytes::from(format!("<sip:keepalive@{local}>;tag={tag}")))
            .header(HeaderName::To, Bytes::from(format!("<sip:{remote}>")))
            .header(HeaderName::CallId, Bytes::from(format!("{call_id}@forkswitch")))
            .header(HeaderName::CSeq, "1 OPTIONS")
            .header(HeaderName::UserAgent, Bytes::from(self.server.clone()))
            .build()
    }
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
