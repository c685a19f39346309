//! The parsed (or built) SIP message: start line, header fields and body.
//!
//! A parsed [`Message`] owns one [`Bytes`] buffer and stores every part as a
//! range into it, so parsing copies no message bytes. Header values are parsed
//! into typed views only when asked ([`Message::top_via`], [`Message::cseq`],
//! ...). Edits and built messages hold their new parts as owned [`Bytes`].

use crate::addr::{Contacts, NameAddr};
use crate::error::{HeaderError, ParseError};
use crate::header::HeaderName;
use crate::method::Method;
use crate::scan::{self, CommaSplit};
use crate::typed::{CSeq, RAck};
use crate::uri::Uri;
use crate::via::Via;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Most header fields accepted in one message; more is a defect (bounded work).
pub const MAX_HEADERS: usize = 256;

/// Bytes of one message part: a range of the message buffer, an index into
/// the message's owned values (edits and built messages), or the canonical
/// spelling of the header's name. 12 bytes, so a header entry stays small.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Text {
    Span(u32, u32),
    Owned(u32),
    Canonical,
}

/// One header field line (possibly folded over several physical lines).
#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub(crate) name: HeaderName,
    pub(crate) name_text: Text,
    pub(crate) value: Text,
    /// The whole line as received (name to last byte before CRLF), written back
    /// verbatim while the header is unmodified.
    pub(crate) line: Option<(u32, u32)>,
}

/// A borrowed view of one header field.
#[derive(Clone, Copy, Debug)]
pub struct HeaderRef<'a> {
    /// The recognised name ([`HeaderName::Other`] for extensions).
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `X-Foo`...).
    pub raw_name: &'a [u8],
    /// The value, trimmed; a folded value keeps its CRLF+WS inside.
    pub value: &'a [u8],
}

/// The first line of a message.
#[derive(Clone, Debug)]
pub(crate) enum StartLine {
    Request { method: Method, uri: Text, version: Text },
    Response { version: Text, code: u16, reason: Text },
}

/// A SIP request or response. Cloning is cheap (a reference count): the
/// parts are shared and copied only when a clone is edited.
#[derive(Clone, Debug)]
pub struct Message {
    pub(crate) p: Arc<Parts>,
}

/// The parts of a message, shared between clones.
#[derive(Clone, Debug)]
pub(crate) struct Parts {
    pub(crate) buf: Bytes,
    /// Values that are not ranges of `buf` (edits, built messages).
    pub(crate) owned: Vec<Bytes>,
    pub(crate) start: StartLine,
    /// Range of the start line as received; `None` once rebuilt.
    pub(crate) start_raw: Option<(u32, u32)>,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Text,
    /// Range of the whole message in `buf` while nothing was edited.
    pub(crate) pristine: Option<(u32, u32)>,
    /// Syntax problems found while framing; any makes a request a 400.
    pub(crate) defects: Vec<&'static str>,
}

impl Parts {
    /// The bytes of `t`; `name` resolves [`Text::Canonical`].
    #[inline]
    pub(crate) fn text(&self, t: &Text, name: HeaderName) -> &[u8] {
        match t {
            Text::Span(s, e) => &self.buf[*s as usize..*e as usize],
            Text::Owned(i) => self.owned.get(*i as usize).map_or(&[][..], |b| &b[..]),
            Text::Canonical => name.canonical().unwrap_or("").as_bytes(),
        }
    }

    /// The bytes of `t` as shared [`Bytes`] (no copy).
    pub(crate) fn text_bytes(&self, t: &Text, name: HeaderName) -> Bytes {
        match t {
            Text::Span(s, e) => self.buf.slice(*s as usize..*e as usize),
            Text::Owned(i) => self.owned.get(*i as usize).cloned().unwrap_or_default(),
            Text::Canonical => Bytes::from_static(name.canonical().unwrap_or("").as_bytes()),
        }
    }

    /// Stores an owned value and returns its [`Text`].
    pub(crate) fn own(&mut self, b: Bytes) -> Text {
        self.owned.push(b);
        Text::Owned((self.owned.len() - 1) as u32)
    }

    #[inline]
    pub(crate) fn value(&self, h: &Header) -> &[u8] {
        self.text(&h.value, h.name)
    }

    #[inline]
    pub(crate) fn name_of(&self, h: &Header) -> &[u8] {
        self.text(&h.name_text, h.name)
    }
}

#[inline]
fn span(s: usize, e: usize) -> Text {
    Text::Span(s as u32, e as u32)
}

fn trim_end_ws(line: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    end
}

/// `SIP/x.y` with digits; returns whether it is exactly `SIP/2.0`.
fn check_version(v: &[u8]) -> Result<bool, ()> {
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(());
    }
    let rest = &v[4..];
    let dot = rest.iter().position(|&b| b == b'.').ok_or(())?;
    let (maj, min) = (&rest[..dot], &rest[dot + 1..]);
    if maj.is_empty() || min.is_empty() || !maj.iter().chain(min).all(u8::is_ascii_digit) {
        return Err(());
    }
    Ok(maj == b"2" && min == b"0")
}

impl Message {
    /// Parses one message from a datagram (RFC 3261 18.3): Content-Length is
    /// honoured and trailing octets ignored; without Content-Length the body
    /// is the rest of the datagram. Leading CRLFs are skipped.
    ///
    /// Fails only when no start line can be recognised; every other syntax
    /// problem is kept as a defect that [`crate::validate`] turns into a 400.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        let b: &[u8] = &buf;
        if b.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge);
        }
        let mut defects: Vec<&'static str> = Vec::new();
        let mut i = 0;
        while b.len() >= i + 2 && &b[i..i + 2] == b"\r\n" {
            i += 2;
        }
        let msg_start = i;
        let nl = memchr::memchr(b'\n', &b[i..]).ok_or(ParseError::NoStartLine)? + i;
        let line_end = if nl > i && b[nl - 1] == b'\r' { nl - 1 } else { nl };
        let line = &b[i..line_end];
        let start = if line.starts_with(b"SIP/") || line.starts_with(b"sip/") {
            parse_status_line(line, i, &mut defects)?
        } else {
            parse_request_line(line, i, &mut defects)?
        };
        let start_raw = Some((i as u32, line_end as u32));
        i = nl + 1;

        let mut headers: Vec<Header> = Vec::with_capacity(16);
        let mut content_length: Option<usize> = None;
        let mut cl_count = 0usize;
        let mut body_start = None;
        while i < b.len() {
            let nl = memchr::memchr(b'\n', &b[i..]).map(|p| p + i);
            let next = nl.map_or(b.len(), |p| p + 1);
            let mut le = nl.unwrap_or(b.len());
            if le > i && b[le - 1] == b'\r' {
                le -= 1;
            }
            if le == i {
                body_start = Some(next);
                break;
            }
            if nl.is_none() {
                defects.push("header block not terminated by an empty line");
            }
            if matches!(b[i], b' ' | b'\t') {
                // Folded continuation of the previous header (RFC 3261 7.3.1).
                match headers.last_mut() {
                    Some(h) => {
                        let ve = trim_end_ws(b, i, le);
                        if let Text::Span(vs, old_ve) = &mut h.value {
                            if *vs == *old_ve {
                                let mut s = i;
                                while s < ve && matches!(b[s], b' ' | b'\t') {
                                    s += 1;
                                }
                                *vs = s as u32;
                            }
                            *old_ve = ve.max(*vs as usize) as u32;
                        }
                        if let Some(l) = &mut h.line {
                            l.1 = le as u32;
                        }
                    }
                    None => defects.push("continuation line before any header"),
                }
                i = next;
                continue;
            }
            let Some(colon) = memchr::memchr(b':', &b[i..le]).map(|p| p + i) else {
                defects.push("header line without a colon");
                i = next;
                continue;
            };
            let name_end = trim_end_ws(b, i, colon);
            let name_b = &b[i..name_end];
            if !scan::is_token_str(name_b) {
                defects.push("header name is not a token");
            }
            let name = HeaderName::parse(name_b);
            let mut vs = colon + 1;
            while vs < le && matches!(b[vs], b' ' | b'\t') {
                vs += 1;
            }
            let ve = trim_end_ws(b, vs, le);
            if name == HeaderName::ContentLength {
                cl_count += 1;
                match scan::parse_u64(&b[vs..ve], u64::from(u32::MAX)) {
                    Some(n) => content_length = Some(n as usize),
                    None => defects.push("Content-Length is not a valid number"),
                }
            }
            if headers.len() == MAX_HEADERS {
                defects.push("too many header fields");
            } else {
                headers.push(Header {
                    name,
                    name_text: span(i, name_end),
                    value: span(vs, ve),
                    line: Some((i as u32, le as u32)),
                });
            }
            i = next;
        }
        if cl_count > 1 {
            defects.push("more than one Content-Length");
        }
        // Folded Content-Length values are re-read from the final span.
        if cl_count == 1 {
            if let Some(h) = headers.iter().find(|h| h.name == HeaderName::ContentLength) {
                let v = match h.value {
                    Text::Span(s, e) => scan::trim(&b[s as usize..e as usize]),
                    _ => &[][..],
                };
                content_length = scan::parse_u64(v, u64::from(u32::MAX)).map(|n| n as usize);
            }
        }
        let body_start = match body_start {
            Some(s) => s,
            None => {
                if !defects.contains(&"header block not terminated by an empty line") {
                    defects.push("header block not terminated by an empty line");
                }
                b.len()
            }
        };
        let available = b.len() - body_start;
        let body_len = match content_length {
            Some(n) if n > available => {
                defects.push("Content-Length larger than the message");
                available
            }
            Some(n) => n,
            None => available,
        };
        let msg_end = body_start + body_len;
        Ok(Message {
            p: Arc::new(Parts {
                start,
                start_raw,
                headers,
                body: span(body_start, msg_end),
                pristine: Some((msg_start as u32, msg_end as u32)),
                defects,
                buf,
                owned: Vec::new(),
            }),
        })
    }

    // ----- start line -------------------------------------------------------

    /// `true` for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.p.start, StartLine::Request { .. })
    }

    /// The method of a request; `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.p.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.p.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (any bytes, possibly empty).
    pub fn reason_phrase(&self) -> &[u8] {
        match &self.p.start {
            StartLine::Response { reason, .. } => self.p.text(reason, HeaderName::Other),
            StartLine::Request { .. } => b"",
        }
    }

    /// The SIP-Version text (`SIP/2.0`).
    pub fn version(&self) -> &[u8] {
        match &self.p.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => {
                self.p.text(version, HeaderName::Other)
            }
        }
    }

    /// `true` when the version is `SIP/2.0`.
    pub fn is_sip2(&self) -> bool {
        check_version(self.version()) == Ok(true)
    }

    /// The Request-URI as received.
    pub fn request_uri_bytes(&self) -> Option<&[u8]> {
        match &self.p.start {
            StartLine::Request { uri, .. } => Some(self.p.text(uri, HeaderName::Other)),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI parsed; `None` for a response.
    pub fn request_uri(&self) -> Option<Result<Uri<'_>, HeaderError>> {
        self.request_uri_bytes()
            .map(|u| Uri::parse(u).map_err(|r| HeaderError::new("Request-URI", r)))
    }

    /// Syntax defects found while framing (empty for a well-formed message).
    pub fn defects(&self) -> &[&'static str] {
        &self.p.defects
    }

    // ----- headers ----------------------------------------------------------

    /// Every header field in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> + '_ {
        self.p.headers.iter().map(move |h| HeaderRef {
            name: h.name,
            raw_name: self.p.name_of(h),
            value: self.p.value(h),
        })
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.p.headers.len()
    }

    /// Values of every header field called `name` (whole lines, not split).
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.p.headers.iter().filter(move |h| h.name == name).map(move |h| self.p.value(h))
    }

    /// The value of the first header field called `name`.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.header_values(name).next()
    }

    /// The value of the first header with this (extension) name, compared
    /// case-insensitively.
    pub fn header_named(&self, name: &str) -> Option<&[u8]> {
        let known = HeaderName::parse(name.as_bytes());
        self.p
            .headers
            .iter()
            .find(|h| {
                if known == HeaderName::Other {
                    h.name == HeaderName::Other
                        && self.p.name_of(h).eq_ignore_ascii_case(name.as_bytes())
                } else {
                    h.name == known
                }
            })
            .map(|h| self.p.value(h))
    }

    /// The first value of `name` as [`Bytes`] sharing the message buffer (no
    /// copy), for reuse in a new message.
    pub fn header_bytes(&self, name: HeaderName) -> Option<Bytes> {
        self.p.headers.iter().find(|h| h.name == name).map(|h| self.p.text_bytes(&h.value, h.name))
    }

    /// All values of `name` as [`Bytes`] (whole lines), in order, no copy.
    pub fn all_header_bytes(&self, name: HeaderName) -> impl Iterator<Item = Bytes> + '_ {
        self.p
            .headers
            .iter()
            .filter(move |h| h.name == name)
            .map(move |h| self.p.text_bytes(&h.value, h.name))
    }

    /// Every element of a list header across all its lines: `Via: a, b` and a
    /// second `Via: c` give `a`, `b`, `c`.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.header_values(name).flat_map(CommaSplit::new)
    }

    /// Number of header fields called `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.p.headers.iter().filter(|h| h.name == name).count()
    }

    fn single(&self, name: HeaderName, what: &'static str) -> Result<&[u8], HeaderError> {
        let mut it = self.header_values(name);
        let v = it.next().ok_or(HeaderError::new(what, "missing"))?;
        if it.next().is_some() {
            return Err(HeaderError::new(what, "appears more than once"));
        }
        Ok(v)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&[u8], HeaderError> {
        let v = self.single(HeaderName::CallId, "Call-ID")?;
        if v.is_empty() || v.iter().any(|&b| scan::is_lws(b)) {
            return Err(HeaderError::new("Call-ID", "not a single word"));
        }
        Ok(v)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.single(HeaderName::CSeq, "CSeq")?)
    }

    /// The From header.
    pub fn from_header(&self) -> Result<NameAddr<'_>, HeaderError> {
        NameAddr::parse(self.single(HeaderName::From, "From")?)
            .map_err(|r| HeaderError::new("From", r))
    }

    /// The To header.
    pub fn to_header(&self) -> Result<NameAddr<'_>, HeaderError> {
        NameAddr::parse(self.single(HeaderName::To, "To")?).map_err(|r| HeaderError::new("To", r))
    }

    /// The From tag, if any.
    pub fn from_tag(&self) -> Option<&[u8]> {
        self.from_header().ok().and_then(|f| f.tag())
    }

    /// The To tag, if any.
    pub fn to_tag(&self) -> Option<&[u8]> {
        self.to_header().ok().and_then(|t| t.tag())
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via<'_>, HeaderError> {
        let v = self.values(HeaderName::Via).next().ok_or(HeaderError::new("Via", "missing"))?;
        Via::parse(v).map_err(|r| HeaderError::new("Via", r))
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, HeaderError>> + '_ {
        self.values(HeaderName::Via).map(|v| Via::parse(v).map_err(|r| HeaderError::new("Via", r)))
    }

    /// The Contact header(s): `*` or a list of name-addrs.
    pub fn contacts(&self) -> Result<Contacts<'_>, HeaderError> {
        Contacts::parse(self.values(HeaderName::Contact))
            .map_err(|r| HeaderError::new("Contact", r))
    }

    /// Route values, top first.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> + '_ {
        self.values(HeaderName::Route)
            .map(|v| NameAddr::parse(v).map_err(|r| HeaderError::new("Route", r)))
    }

    /// Record-Route values, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> + '_ {
        self.values(HeaderName::RecordRoute)
            .map(|v| NameAddr::parse(v).map_err(|r| HeaderError::new("Record-Route", r)))
    }

    fn optional_number(
        &self,
        name: HeaderName,
        what: &'static str,
        max: u64,
    ) -> Result<Option<u64>, HeaderError> {
        let mut it = self.header_values(name);
        let Some(v) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(HeaderError::new(what, "appears more than once"));
        }
        scan::parse_u64(scan::trim(v), max)
            .map(Some)
            .ok_or(HeaderError::new(what, "not a number in range"))
    }

    /// Max-Forwards (0..=255).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        Ok(self.optional_number(HeaderName::MaxForwards, "Max-Forwards", 255)?.map(|n| n as u8))
    }

    /// Expires (delta-seconds, at most 2^32-1).
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        Ok(self
            .optional_number(HeaderName::Expires, "Expires", u64::from(u32::MAX))?
            .map(|n| n as u32))
    }

    /// Min-Expires.
    pub fn min_expires(&self) -> Result<Option<u32>, HeaderError> {
        Ok(self
            .optional_number(HeaderName::MinExpires, "Min-Expires", u64::from(u32::MAX))?
            .map(|n| n as u32))
    }

    /// Content-Length as written (the body length of a parsed message is
    /// already bounded by it).
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        Ok(self
            .optional_number(HeaderName::ContentLength, "Content-Length", u64::from(u32::MAX))?
            .map(|n| n as u32))
    }

    /// Content-Type media type (`application/sdp`), parameters dropped.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header(HeaderName::ContentType).map(|v| {
            let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
            scan::trim(&v[..end])
        })
    }

    /// RSeq (RFC 3262), 1..=2^31-1.
    pub fn rseq(&self) -> Result<Option<u32>, HeaderError> {
        match self.optional_number(HeaderName::RSeq, "RSeq", (1 << 31) - 1)? {
            Some(0) => Err(HeaderError::new("RSeq", "must not be 0")),
            n => Ok(n.map(|n| n as u32)),
        }
    }

    /// RAck (RFC 3262).
    pub fn rack(&self) -> Result<Option<RAck>, HeaderError> {
        let mut it = self.header_values(HeaderName::RAck);
        let Some(v) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(HeaderError::new("RAck", "appears more than once"));
        }
        RAck::parse(v).map(Some)
    }

    /// Option tags of Require, Supported, Proxy-Require, Unsupported or Allow
    /// methods: every element of the list header `name`.
    pub fn tokens(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(name).filter(|v| !v.is_empty())
    }

    /// `true` when a Supported or Require header lists `tag`.
    pub fn supports(&self, tag: &str) -> bool {
        self.tokens(HeaderName::Supported)
            .chain(self.tokens(HeaderName::Require))
            .any(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
    }

    /// `true` when a Require header lists `tag`.
    pub fn requires(&self, tag: &str) -> bool {
        self.tokens(HeaderName::Require).any(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
    }

    // ----- body -------------------------------------------------------------

    /// The body bytes (exactly Content-Length of them).
    pub fn body(&self) -> &[u8] {
        self.p.text(&self.p.body, HeaderName::Other)
    }

    /// The body as [`Bytes`] sharing the message buffer (no copy).
    pub fn body_bytes(&self) -> Bytes {
        self.p.text_bytes(&self.p.body, HeaderName::Other)
    }

    // ----- edits ------------------------------------------------------------

    /// The parts, for editing: shared parts are copied first, and the message
    /// is no longer written back verbatim.
    fn edit(&mut self) -> &mut Parts {
        let p = Arc::make_mut(&mut self.p);
        p.pristine = None;
        p
    }

    fn new_header(p: &mut Parts, name: HeaderName, value: Bytes) -> Header {
        let value = p.own(value);
        let name_text = if name == HeaderName::Other {
            p.own(Bytes::from_static(b"X-Unknown"))
        } else {
            Text::Canonical
        };
        Header { name, name_text, value, line: None }
    }

    /// Appends a header field.
    pub fn push_header(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        let p = self.edit();
        let h = Self::new_header(p, name, value.into());
        p.headers.push(h);
    }

    /// Appends an extension header field (`X-Foo: bar`).
    pub fn push_header_named(&mut self, name: &str, value: impl Into<Bytes>) {
        let p = self.edit();
        let kind = HeaderName::parse(name.as_bytes());
        let name_text = p.own(Bytes::copy_from_slice(name.as_bytes()));
        let value = p.own(value.into());
        p.headers.push(Header { name: kind, name_text, value, line: None });
    }

    /// Inserts a header field before the first field called `before`, or at
    /// the top when there is none.
    pub fn insert_header_before(
        &mut self,
        before: HeaderName,
        name: HeaderName,
        value: impl Into<Bytes>,
    ) {
        let p = self.edit();
        let at = p.headers.iter().position(|h| h.name == before).unwrap_or(0);
        let h = Self::new_header(p, name, value.into());
        p.headers.insert(at, h);
    }

    /// Removes every header field called `name`; returns how many.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        if !self.p.headers.iter().any(|h| h.name == name) {
            return 0;
        }
        let p = self.edit();
        let before = p.headers.len();
        p.headers.retain(|h| h.name != name);
        before - p.headers.len()
    }

    /// Replaces every field called `name` by one with `value`, kept at the
    /// position of the first one (appended when absent).
    pub fn set_header(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        let p = self.edit();
        let h = Self::new_header(p, name, value.into());
        match p.headers.iter().position(|h| h.name == name) {
            Some(at) => {
                p.headers[at] = h;
                let mut k = 0;
                p.headers.retain(|h| {
                    k += 1;
                    k - 1 <= at || h.name != name
                });
            }
            None => p.headers.push(h),
        }
    }

    /// Replaces the body and its Content-Type; Content-Length follows.
    pub fn set_body(&mut self, content_type: Option<Bytes>, body: Bytes) {
        match content_type {
            Some(ct) => self.set_header(HeaderName::ContentType, ct),
            None => {
                self.remove_headers(HeaderName::ContentType);
            }
        }
        self.set_header(HeaderName::ContentLength, body.len().to_string());
        let p = self.edit();
        p.body = p.own(body);
    }

    /// Replaces the topmost Via value with `value` (used to stamp
    /// `received`/`rport`, RFC 3261 18.2.1 and RFC 3581). The other values of
    /// a multi-value Via line are kept on their own line.
    pub fn replace_top_via(&mut self, value: Bytes) {
        let Some(at) = self.p.headers.iter().position(|h| h.name == HeaderName::Via) else {
            return;
        };
        let rest: Vec<Bytes> = {
            let whole = self.p.value(&self.p.headers[at]);
            let mut parts = CommaSplit::new(whole);
            let _top = parts.next();
            parts.map(Bytes::copy_from_slice).collect()
        };
        let p = self.edit();
        let h = Self::new_header(p, HeaderName::Via, value);
        p.headers[at] = h;
        if !rest.is_empty() {
            let mut joined = BytesMut::new();
            for (k, r) in rest.iter().enumerate() {
                if k > 0 {
                    joined.put_slice(b", ");
                }
                joined.put_slice(r);
            }
            let h = Self::new_header(p, HeaderName::Via, joined.freeze());
            p.headers.insert(at + 1, h);
        }
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, new_uri: Bytes) {
        if !self.is_request() {
            return;
        }
        let p = self.edit();
        let t = p.own(new_uri);
        if let StartLine::Request { uri, .. } = &mut p.start {
            *uri = t;
        }
        p.start_raw = None;
    }

    // ----- serialisation ----------------------------------------------------

    /// Writes the message in wire form. An unmodified parsed message is
    /// written byte for byte as received.
    pub fn write_to(&self, out: &mut BytesMut) {
        let p = &*self.p;
        if let Some((s, e)) = p.pristine {
            out.extend_from_slice(&p.buf[s as usize..e as usize]);
            return;
        }
        let other = HeaderName::Other;
        match (p.start_raw, &p.start) {
            (Some((s, e)), _) => out.extend_from_slice(&p.buf[s as usize..e as usize]),
            (None, StartLine::Request { method, uri, version }) => {
                out.extend_from_slice(method.as_bytes());
                out.put_u8(b' ');
                out.extend_from_slice(p.text(uri, other));
                out.put_u8(b' ');
                out.extend_from_slice(p.text(version, other));
            }
            (None, StartLine::Response { version, code, reason }) => {
                out.extend_from_slice(p.text(version, other));
                out.put_u8(b' ');
                out.extend_from_slice(itoa_buf(u64::from(*code)).as_slice());
                out.put_u8(b' ');
                out.extend_from_slice(p.text(reason, other));
            }
        }
        out.extend_from_slice(b"\r\n");
        for h in &p.headers {
            match h.line {
                Some((s, e)) => out.extend_from_slice(&p.buf[s as usize..e as usize]),
                None => {
                    out.extend_from_slice(p.name_of(h));
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(p.value(h));
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p.text(&p.body, other));
    }

    /// The message in wire form. Zero-copy for an unmodified parsed message.
    pub fn to_bytes(&self) -> Bytes {
        if let Some((s, e)) = self.p.pristine {
            return self.p.buf.slice(s as usize..e as usize);
        }
        let mut out = BytesMut::with_capacity(self.wire_len_hint());
        self.write_to(&mut out);
        out.freeze()
    }

    fn wire_len_hint(&self) -> usize {
        let p = &*self.p;
        let hdrs: usize = p.headers.iter().map(|h| p.name_of(h).len() + p.value(h).len() + 4).sum();
        64 + hdrs + p.text(&p.body, HeaderName::Other).len()
    }
}

/// Formats a small unsigned number without allocating.
pub(crate) fn itoa_buf(mut n: u64) -> SmallDigits {
    let mut d = SmallDigits { buf: [0; 20], len: 0 };
    if n == 0 {
        d.buf[0] = b'0';
        d.len = 1;
        return d;
    }
    let mut tmp = [0u8; 20];
    let mut k = 0;
    while n > 0 {
        tmp[k] = b'0' + (n % 10) as u8;
        n /= 10;
        k += 1;
    }
    for j in 0..k {
        d.buf[j] = tmp[k - 1 - j];
    }
    d.len = k;
    d
}

/// Digits of a number, on the stack.
pub(crate) struct SmallDigits {
    buf: [u8; 20],
    len: usize,
}

impl SmallDigits {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn parse_status_line(
    line: &[u8],
    off: usize,
    defects: &mut Vec<&'static str>,
) -> Result<StartLine, ParseError> {
    let sp = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine("no status code"))?;
    let version = &line[..sp];
    if check_version(version).is_err() {
        defects.push("malformed SIP-Version");
    }
    let rest = &line[sp + 1..];
    let code_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let code_b = &rest[..code_end];
    if code_b.len() != 3 {
        return Err(ParseError::BadStartLine("status code is not three digits"));
    }
    let code = scan::parse_u64(code_b, 699)
        .filter(|c| *c >= 100)
        .ok_or(ParseError::BadStartLine("status code out of range 100-699"))? as u16;
    let reason_start = (sp + 1 + code_end + 1).min(line.len());
    Ok(StartLine::Response {
        version: span(off, off + sp),
        code,
        reason: span(off + reason_start, off + line.len()),
    })
}

fn parse_request_line(
    line: &[u8],
    off: usize,
    defects: &mut Vec<&'static str>,
) -> Result<StartLine, ParseError> {
    let sp = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine("no Request-URI"))?;
    let method_b = &line[..sp];
    if !scan::is_token_str(method_b) {
        return Err(ParseError::BadStartLine("method is not a token"));
    }
    let rest_start = sp + 1;
    let rest = &line[rest_start..];
    let (uri_s, uri_e, ver_s) = match memchr::memrchr(b' ', rest) {
        Some(last) => (rest_start, rest_start + last, rest_start + last + 1),
        None => {
            defects.push("Request-Line has no SIP-Version");
            (rest_start, line.len(), line.len())
        }
    };
    let uri = &line[uri_s..uri_e];
    if uri.is_empty() || uri.iter().any(|&b| matches!(b, b' ' | b'\t')) {
        defects.push("Request-Line elements not separated by single spaces");
    }
    let version = &line[ver_s..];
    if ver_s < line.len() && check_version(version).is_err() {
        defects.push("malformed SIP-Version");
    }
    if ver_s == line.len() && uri_e != line.len() {
        defects.push("Request-Line ends with a space");
    }
    Ok(StartLine::Request {
        method: Method::from_token(method_b),
        uri: span(off + uri_s, off + uri_e),
        version: span(off + ver_s, off + line.len()),
    })
}

impl PartialEq for Message {
    /// Semantic equality: same start line, same header names and values in
    /// the same order, same body.
    fn eq(&self, other: &Self) -> bool {
        self.method() == other.method()
            && self.status() == other.status()
            && self.request_uri_bytes() == other.request_uri_bytes()
            && self.reason_phrase() == other.reason_phrase()
            && self.version() == other.version()
            && self.p.headers.len() == other.p.headers.len()
            && self
                .headers()
                .zip(other.headers())
                .all(|(a, b)| a.raw_name == b.raw_name && a.value == b.value)
            && self.body() == other.body()
    }
}
