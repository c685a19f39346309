//! What crosses the B2BUA from one leg to another, and how much of it.
//!
//! A B2BUA re-originates every leg, so nothing of a caller's message
//! reaches a callee unless it is copied on purpose: the caller's display
//! name and user part (the From the callees see), the body and the few
//! headers that describe it, and the pass-through headers of relayed
//! in-dialog requests and responses. Every one of those copies is bounded
//! here and re-encoded, so a hostile caller cannot hand a phone a 33 kB
//! display name (PROTOS c07-sip) or a flood of Subject headers. One
//! [`CopyLimits`] holds the caps; [`CopyLimits::screen`] says, before a
//! message is taken, whether it is refused (with the RFC 3261 status) or
//! what of it will be trimmed, so the owner can log it; the copy functions
//! then apply the same caps.

use crate::dialog::Body;
use bytes::Bytes;
use sip_message::{HeaderName, Message, MessageBuilder, Method, Peer};

/// Caps on what is copied from one leg's messages onto another's. The
/// defaults are generous for real traffic (a display name of 128 bytes is
/// longer than any phone shows; an SDP offer with video and ICE candidates
/// is 2-6 kB) and small enough that a phone's parser is never the victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyLimits {
    /// Display name of the caller, in bytes after control characters are
    /// removed; longer ones are cut (at a character boundary).
    pub display_name: usize,
    /// User part of the caller's From URI; longer: 400. (RFC 4475's
    /// `longreq`, a valid request, has one of 125 bytes.)
    pub user: usize,
    /// Request-URI of a new INVITE; longer: 414.
    pub request_uri: usize,
    /// One copied header value; longer values are not copied.
    pub header_value: usize,
    /// Values of one copied header name; the rest are not copied.
    pub header_values: usize,
    /// Content-Type of a relayed body; longer: 400.
    pub content_type: usize,
    /// A relayed body; larger: 413.
    pub body: usize,
}

impl Default for CopyLimits {
    fn default() -> Self {
        CopyLimits {
            display_name: 128,
            user: 256,
            request_uri: 256,
            header_value: 256,
            header_values: 4,
            content_type: 128,
            body: 16 * 1024,
        }
    }
}

/// Which copied value was beyond its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    /// The From display name.
    DisplayName,
    /// The From URI's user part.
    User,
    /// The Request-URI.
    RequestUri,
    /// A copied header's value.
    HeaderValue,
    /// The number of values of a copied header.
    HeaderCount,
    /// The Content-Type.
    ContentType,
    /// The body.
    Body,
}

impl Oversized {
    /// The name used in logs: `display_name`, `user`, `request_uri`...
    pub fn as_str(self) -> &'static str {
        match self {
            Oversized::DisplayName => "display_name",
            Oversized::User => "user",
            Oversized::RequestUri => "request_uri",
            Oversized::HeaderValue => "header_value",
            Oversized::HeaderCount => "header_count",
            Oversized::ContentType => "content_type",
            Oversized::Body => "body",
        }
    }
}

/// What screening decided about a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screening {
    /// Refused: the status to answer and the value that was too large.
    pub refused: Option<(u16, Oversized)>,
    /// Taken, but these values will be cut or left out of the copies.
    pub trimmed: Vec<Oversized>,
}

/// A value beyond its cap, for the owner's log: where the message came
/// from, which value, and whether the message was refused or trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Who sent the message.
    pub peer: Peer,
    /// Its method (of the request, or of the request a response answers).
    pub method: Option<Method>,
    /// The value beyond its cap.
    pub what: Oversized,
    /// `Some(status)`: the request was refused with it; `None`: the value
    /// was cut or left out of the copy.
    pub refused: Option<u16>,
}

impl Screening {
    /// The notices for the log of a message from `peer`.
    pub fn notices(&self, peer: Peer, method: Option<&Method>) -> Vec<Notice> {
        let note = |what, refused| Notice { peer, method: method.cloned(), what, refused };
        let mut out: Vec<Notice> = self.refused.iter().map(|&(c, w)| note(w, Some(c))).collect();
        if self.refused.is_none() {
            out.extend(self.trimmed.iter().map(|&w| note(w, None)));
        }
        out
    }
}

/// What a message is screened as: the copies differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copied {
    /// A new INVITE, forked to callees: From, body, [`INVITE_COPIED`].
    Invite,
    /// A request or response relayed inside a dialog: body and
    /// [`PASS_THROUGH`].
    Relay,
}

/// Headers of the caller's INVITE copied to every leg: they describe the
/// body, or are plain information for the callee.
pub const INVITE_COPIED: &[HeaderName] = &[
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::Subject,
    HeaderName::Priority,
];

/// Headers of a relayed request or response that describe its body or are
/// meant for the far end, passed through. (Not Warning: it names a host.)
pub const PASS_THROUGH: &[HeaderName] = &[
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::Reason,
    HeaderName::Subject,
    HeaderName::RetryAfter,
];

/// Extension headers passed through the same way (RFC 6086 INFO packages).
pub const PASS_THROUGH_NAMED: &[&str] = &["Info-Package", "Recv-Info"];

/// `true` for a value that can be written as a header value as it is: no
/// control character but tab (which also keeps CR, LF and NUL out).
fn plain(v: &[u8]) -> bool {
    !v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// `"` and `\` are escaped in a quoted string (RFC 3261 25.1).
fn needs_escape(c: char) -> bool {
    c == '"' || c == '\\'
}

/// `text` as a quoted string (`"` and `\` escaped); empty for empty text.
pub fn quoted(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if needs_escape(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl CopyLimits {
    /// Screens `m` before it is taken: `refused` says it must be answered
    /// with that status; `trimmed` lists what the copies will cut.
    pub fn screen(&self, m: &Message, copied: Copied) -> Screening {
        let mut s = Screening::default();
        let refuse = |s: &mut Screening, code, what| {
            if s.refused.is_none() {
                s.refused = Some((code, what));
            }
        };
        if m.body().len() > self.body {
            refuse(&mut s, 413, Oversized::Body);
        }
        if let Some(ct) = m.header_bytes(HeaderName::ContentType) {
            if ct.len() > self.content_type || !plain(&ct) {
                refuse(&mut s, 400, Oversized::ContentType);
            }
        }
        let headers = match copied {
            Copied::Invite => {
                if m.request_uri_bytes().is_some_and(|u| u.len() > self.request_uri) {
                    refuse(&mut s, 414, Oversized::RequestUri);
                }
                if let Ok(from) = m.from_header() {
                    if from.uri.user.is_some_and(|u| u.len() > self.user) {
                        refuse(&mut s, 400, Oversized::User);
                    }
                    let shown = from.display_name().map(|d| self.display_name(d));
                    if shown.is_some_and(|(_, cut)| cut) {
                        s.trimmed.push(Oversized::DisplayName);
                    }
                }
                INVITE_COPIED
            }
            Copied::Relay => PASS_THROUGH,
        };
        let (mut too_many, mut too_long) = (false, false);
        for &h in headers {
            let mut n = 0;
            for v in m.all_header_bytes(h) {
                n += 1;
                too_many |= n > self.header_values;
                too_long |= v.len() > self.header_value || !plain(&v);
            }
        }
        if matches!(copied, Copied::Relay) {
            for &name in PASS_THROUGH_NAMED {
                if let Some(v) = m.header_named(name) {
                    too_long |= v.len() > self.header_value || !plain(v);
                }
            }
        }
        if too_many {
            s.trimmed.push(Oversized::HeaderCount);
        }
        if too_long {
            s.trimmed.push(Oversized::HeaderValue);
        }
        s
    }

    /// The display name `raw` (unquoted, as the codec gives it) as text:
    /// control characters removed, cut at a character boundary so that its
    /// quoted form ([`quoted`]: `"` and `\` escaped) fits the cap; and
    /// whether anything was cut.
    pub fn display_text(&self, raw: &[u8]) -> (String, bool) {
        let text = String::from_utf8_lossy(raw);
        let mut out = String::with_capacity(raw.len().min(self.display_name));
        let mut cut = false;
        let mut used = 0;
        for c in text.trim().chars() {
            if c.is_control() {
                cut = true;
                continue;
            }
            let need = c.len_utf8() + usize::from(needs_escape(c));
            if used + need > self.display_name {
                cut = true;
                break;
            }
            out.push(c);
            used += need;
        }
        (out, cut)
    }

    /// The display name `raw` quoted afresh ([`CopyLimits::display_text`],
    /// then [`quoted`]), and whether anything was cut. An empty name gives
    /// an empty string.
    pub fn display_name(&self, raw: &[u8]) -> (String, bool) {
        let (text, cut) = self.display_text(raw);
        (quoted(&text), cut)
    }

    /// A user part re-encoded for a SIP URI (RFC 3261 25.1 `user`):
    /// unreserved and user-unreserved characters as they are, every other
    /// byte %-escaped (an escape already there is kept), cut to the cap.
    pub fn user(&self, raw: &[u8]) -> String {
        let raw = raw.get(..self.user).unwrap_or(raw);
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while let Some(&b) = raw.get(i) {
            let escape_kept = b == b'%'
                && raw.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && raw.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            let keep = b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b);
            if keep || escape_kept {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
            i += 1;
        }
        out
    }

    /// The body of `m` to copy, with its Content-Type; `None` when it has
    /// none, or when it is beyond the caps (screening refused it).
    pub(crate) fn body(&self, m: &Message) -> Option<Body> {
        let body = Body::of(m)?;
        let fits = body.bytes.len() <= self.body
            && body.ctype.len() <= self.content_type
            && plain(&body.ctype);
        fits.then_some(body)
    }

    /// Copies the values of `names` from `from` into `b`, at most
    /// `header_values` of each, each at most `header_value` bytes and
    /// plain; the rest are left out.
    pub(crate) fn copy_headers(
        &self,
        mut b: MessageBuilder,
        from: &Message,
        names: &[HeaderName],
    ) -> MessageBuilder {
        for &h in names {
            let fit = |v: &Bytes| v.len() <= self.header_value && plain(v);
            for v in from.all_header_bytes(h).filter(fit).take(self.header_values) {
                b = b.header(h, v);
            }
        }
        b
    }

    /// [`CopyLimits::copy_headers`] of [`PASS_THROUGH`] and
    /// [`PASS_THROUGH_NAMED`].
    pub(crate) fn pass_through(&self, b: MessageBuilder, from: &Message) -> MessageBuilder {
        let mut b = self.copy_headers(b, from, PASS_THROUGH);
        for &n in PASS_THROUGH_NAMED {
            if let Some(v) = from.header_named(n) {
                if v.len() <= self.header_value && plain(v) {
                    b = b.header_named(n, Bytes::copy_from_slice(v));
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(from: &str, extra: &str, body: &str) -> Message {
        let text = format!(
            "INVITE sip:200@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: {from};tag=1\r\nTo: <sip:200@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(Bytes::from(text)).expect("test INVITE parses")
    }

    #[test]
    fn display_names_are_cleaned_cut_and_quoted_afresh() {
        let l = CopyLimits::default();
        assert_eq!(l.display_name(b"Alice"), ("\"Alice\"".into(), false));
        assert_eq!(l.display_name(b"A\"b\\c"), ("\"A\\\"b\\\\c\"".into(), false));
        assert_eq!(l.display_name(b"a\x01b\x7fc"), ("\"abc\"".into(), true));
        assert_eq!(l.display_name(b"  "), (String::new(), false));
        let long = "\u{e9}".repeat(100); // 200 bytes
        let (q, cut) = l.display_name(long.as_bytes());
        assert!(cut);
        assert_eq!(q.len(), 2 + 128);
        assert!(q.starts_with('"') && q.ends_with('"'));
        let quotes = "\"".repeat(100);
        let (q, cut) = l.display_name(quotes.as_bytes());
        assert!(cut && q.len() == 2 + 128, "escapes count against the cap: {}", q.len());
    }

    #[test]
    fn user_parts_are_reencoded_and_capped() {
        let l = CopyLimits::default();
        assert_eq!(l.user(b"+4930123"), "+4930123");
        assert_eq!(l.user(b"a b>c"), "a%20b%3Ec");
        assert_eq!(l.user(b"a%41"), "a%41");
        assert_eq!(l.user(b"%zz"), "%25zz");
        assert_eq!(l.user(&[b'1'; 300]).len(), 256);
    }

    #[test]
    fn screening_refuses_with_the_rfc_status_and_names_what_it_trims() {
        let l = CopyLimits::default();
        let ok = invite("\"Alice\" <sip:alice@example.com>", "Subject: hi\r\n", "v=0\r\n");
        assert_eq!(l.screen(&ok, Copied::Invite), Screening::default());

        let user = format!("<sip:{}@example.com>", "1".repeat(257));
        let s = l.screen(&invite(&user, "", ""), Copied::Invite);
        assert_eq!(s.refused, Some((400, Oversized::User)));

        let big = "a".repeat(16 * 1024 + 1);
        let s = l.screen(&invite("<sip:a@example.com>", "", &big), Copied::Invite);
        assert_eq!(s.refused, Some((413, Oversized::Body)));

        let long_name = format!("\"{}\" <sip:a@example.com>", "x".repeat(33_000));
        let subjects = "Subject: s\r\n".repeat(10);
        let long_subject = format!("Priority: {}\r\n", "u".repeat(300));
        let m = invite(&long_name, &format!("{subjects}{long_subject}"), "");
        let s = l.screen(&m, Copied::Invite);
        assert_eq!(s.refused, None);
        assert_eq!(
            s.trimmed,
            vec![Oversized::DisplayName, Oversized::HeaderCount, Oversized::HeaderValue]
        );
        let b =
            l.copy_headers(Message::request(sip_message::Method::Info, "sip:x"), &m, INVITE_COPIED);
        let copied = b.build();
        assert_eq!(copied.all_header_bytes(HeaderName::Subject).count(), 4);
        assert_eq!(copied.all_header_bytes(HeaderName::Priority).count(), 0);
    }

    #[test]
    fn long_request_uris_get_414() {
        let l = CopyLimits::default();
        let text = format!(
            "INVITE sip:{}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            "9".repeat(300)
        );
        let m = Message::parse(Bytes::from(text)).expect("parses");
        assert_eq!(l.screen(&m, Copied::Invite).refused, Some((414, Oversized::RequestUri)));
        assert_eq!(l.screen(&m, Copied::Relay).refused, None);
    }
}
