//! What a server must answer to a request it received (RFC 3261 8.2 and
//! 16.3, checked against RFC 4475): accept it, reject it with a status code,
//! or drop it silently.

use crate::header::HeaderName;
use crate::message::Message;
use crate::method::{Method, SUPPORTED, SUPPORTED_OPTIONS};
use crate::uri::Scheme;

/// What the server supports, for the 501 and 420 decisions.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Methods implemented; any other gets 501 Not Implemented.
    pub methods: Vec<Method>,
    /// Option tags supported; a Require/Proxy-Require naming another gets 420.
    pub supported: Vec<String>,
}

impl Default for Policy {
    /// What forkswitch implements: the methods of [`SUPPORTED`] and the
    /// option tags of [`SUPPORTED_OPTIONS`].
    fn default() -> Self {
        Policy {
            methods: SUPPORTED.iter().map(|(m, _)| m.clone()).collect(),
            supported: SUPPORTED_OPTIONS.iter().map(|&t| t.to_owned()).collect(),
        }
    }
}

/// A rejection: the response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Status code (400, 416, 420, 501, 505).
    pub status: u16,
    /// What was wrong, for the reason phrase or a Warning header.
    pub detail: String,
    /// For 420: the option tags to list in Unsupported.
    pub unsupported: Vec<String>,
}

/// The verdict on a received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well-formed enough to process.
    Accept,
    /// A request to answer with this error response.
    Reject(Rejection),
    /// Discard silently: a bad response, or a request that cannot be
    /// answered (no Via to send a response along).
    Drop(String),
}

impl Verdict {
    /// The status code of a rejection, `None` otherwise.
    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::Reject(r) => Some(r.status),
            _ => None,
        }
    }
}

fn reject(status: u16, detail: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection { status, detail: detail.into(), unsupported: Vec::new() })
}

/// Header-level checks shared by requests and responses. Returns the first
/// problem found.
fn check_headers(m: &Message) -> Result<(), String> {
    // Headers that may appear at most once (RFC 3261 table 2; RFC 4475
    // multi01). RSeq and RAck are checked by their accessors below.
    for name in [
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::MaxForwards,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::Expires,
    ] {
        if m.count(name) > 1 {
            return Err(format!("{} appears more than once", name.canonical().unwrap_or("?")));
        }
    }
    for v in m.vias() {
        v.map_err(|e| e.to_string())?;
    }
    m.call_id().map_err(|e| e.to_string())?;
    m.cseq().map_err(|e| e.to_string())?;
    m.from_header().map_err(|e| e.to_string())?;
    m.to_header().map_err(|e| e.to_string())?;
    m.max_forwards().map_err(|e| e.to_string())?;
    m.expires().map_err(|e| e.to_string())?;
    m.content_length().map_err(|e| e.to_string())?;
    let contacts = m.contacts().map_err(|e| e.to_string())?;
    for c in contacts.list() {
        c.expires().map_err(|e| format!("Contact: {e}"))?;
        c.q().map_err(|e| format!("Contact: {e}"))?;
    }
    for r in m.routes().chain(m.record_routes()) {
        r.map_err(|e| e.to_string())?;
    }
    m.rseq().map_err(|e| e.to_string())?;
    m.rack().map_err(|e| e.to_string())?;
    Ok(())
}

/// Classifies a received message. Responses are either accepted or dropped
/// (a response is never answered); requests are accepted or rejected with the
/// status the RFCs ask for, in this order: no Via (drop), 505, framing
/// defects (400), header syntax (400), Request-URI scheme (416) and syntax
/// (400), unknown method (501), CSeq method mismatch (400), unsupported
/// Require (420).
pub fn validate(m: &Message, policy: &Policy) -> Verdict {
    if !m.is_request() {
        if let Some(d) = m.defects().first() {
            return Verdict::Drop(format!("malformed response: {d}"));
        }
        if !m.is_sip2() {
            return Verdict::Drop("response is not SIP/2.0".into());
        }
        if m.count(HeaderName::Via) == 0 {
            return Verdict::Drop("response without Via".into());
        }
        return match check_headers(m) {
            Ok(()) => Verdict::Accept,
            Err(e) => Verdict::Drop(format!("malformed response: {e}")),
        };
    }
    if m.count(HeaderName::Via) == 0 {
        return Verdict::Drop("request without Via cannot be answered".into());
    }
    let version_ok_syntax = m.defects().iter().all(|d| !d.contains("SIP-Version"));
    if version_ok_syntax && !m.version().is_empty() && !m.is_sip2() {
        return reject(505, "only SIP/2.0 is supported");
    }
    if let Some(d) = m.defects().first() {
        return reject(400, *d);
    }
    for (name, what) in [
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::CSeq, "CSeq"),
        (HeaderName::From, "From"),
        (HeaderName::To, "To"),
    ] {
        if m.count(name) == 0 {
            return reject(400, format!("missing {what}"));
        }
    }
    if let Err(e) = check_headers(m) {
        return reject(400, e);
    }
    let method = m.method().cloned().unwrap_or(Method::Ack);
    match m.request_uri() {
        Some(Ok(u)) => {
            if let Scheme::Other(_) = u.scheme {
                return reject(416, "Request-URI scheme not supported");
            }
            if u.headers.is_some() {
                return reject(400, "Request-URI must not contain headers");
            }
        }
        Some(Err(e)) => return reject(400, e.to_string()),
        None => {}
    }
    if !policy.methods.contains(&method) {
        return reject(501, format!("method {method} not implemented"));
    }
    match m.cseq() {
        Ok(c) if c.method != method => {
            return reject(400, "CSeq method does not match the request method")
        }
        _ => {}
    }
    if !matches!(method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = m
            .tokens(HeaderName::Require)
            .chain(m.tokens(HeaderName::ProxyRequire))
            .filter(|t| !policy.supported.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(t)))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        if !unsupported.is_empty() {
            return Verdict::Reject(Rejection {
                status: 420,
                detail: "unsupported extension required".into(),
                unsupported,
            });
        }
    }
    Verdict::Accept
}
