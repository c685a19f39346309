//! Stream framing (RFC 3261 18.3) for TCP: an incremental decoder that says
//! "need more bytes", bounds the message size, and reports framing errors
//! after which the connection must be closed. Also recognises RFC 5626
//! keep-alives (CRLFCRLF ping, CRLF pong).

use crate::error::ParseError;
use crate::message::Message;
use bytes::{Buf, BytesMut};
use std::fmt;

/// What the decoder produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // boxing would cost an allocation per message
pub enum StreamItem {
    /// One complete message.
    Message(Message),
    /// A CRLFCRLF keep-alive ping: answer with a single CRLF (RFC 5626 3.5.1).
    Ping,
    /// A lone CRLF (a pong, or a stray empty line): nothing to do.
    Pong,
}

/// A framing error: the stream cannot be resynchronised; close it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Header block or message larger than the limit.
    TooLarge,
    /// No Content-Length, which stream transports require.
    MissingContentLength,
    /// Content-Length unreadable or given twice.
    BadContentLength,
    /// The bytes are not a SIP message.
    Parse(ParseError),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TooLarge => f.write_str("message larger than the limit"),
            FramingError::MissingContentLength => f.write_str("no Content-Length on a stream"),
            FramingError::BadContentLength => f.write_str("invalid Content-Length"),
            FramingError::Parse(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FramingError {}

/// Incremental decoder for one stream connection.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    max_message: usize,
    /// Bytes of `buf` already searched for the end of the header block.
    scanned: usize,
}

impl StreamDecoder {
    /// A decoder refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamDecoder { buf: BytesMut::with_capacity(4096), max_message, scanned: 0 }
    }

    /// The receive buffer, to read into directly (`read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next item; `Ok(None)` means "need more bytes".
    pub fn decode(&mut self) -> Result<Option<StreamItem>, FramingError> {
        if self.buf.starts_with(b"\r\n") {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                self.scanned = 0;
                return Ok(Some(StreamItem::Ping));
            }
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                return Ok(None);
            }
            self.buf.advance(2);
            self.scanned = 0;
            return Ok(Some(StreamItem::Pong));
        }
        let from = self.scanned.saturating_sub(3);
        let Some(pos) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n").map(|p| p + from)
        else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_message {
                return Err(FramingError::TooLarge);
            }
            return Ok(None);
        };
        let head_end = pos + 4;
        let cl = content_length(&self.buf[..pos])?;
        let total = head_end.checked_add(cl).ok_or(FramingError::TooLarge)?;
        if total > self.max_message {
            return Err(FramingError::TooLarge);
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        self.scanned = 0;
        Message::parse(frame).map(|m| Some(StreamItem::Message(m))).map_err(FramingError::Parse)
    }
}

/// Finds the one Content-Length (long or compact form) in a header block.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = crate::scan::trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if found.is_some() {
                return Err(FramingError::BadContentLength);
            }
            let v = crate::scan::trim(&line[colon + 1..]);
            let n = crate::scan::parse_u64(v, u64::from(u32::MAX))
                .ok_or(FramingError::BadContentLength)?;
            found = Some(n as usize);
        }
    }
    found.ok_or(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 4\r\n\r\nbody";

    #[test]
    fn byte_by_byte_and_keepalive() {
        let mut d = StreamDecoder::new(65536);
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(MSG);
        let mut got = Vec::new();
        for b in stream {
            d.extend(&[b]);
            while let Some(item) = d.decode().unwrap() {
                got.push(item);
            }
        }
        assert!(matches!(got[0], StreamItem::Ping));
        assert_eq!(got.len(), 3);
        for g in &got[1..] {
            match g {
                StreamItem::Message(m) => assert_eq!(m.body(), b"body"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn errors() {
        let mut d = StreamDecoder::new(100);
        d.extend(&[b'A'; 101]);
        assert_eq!(d.decode().unwrap_err(), FramingError::TooLarge);
        let mut d = StreamDecoder::new(1000);
        d.extend(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(d.decode().unwrap_err(), FramingError::MissingContentLength);
        let mut d = StreamDecoder::new(1000);
        d.extend(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\n");
        assert_eq!(d.decode().unwrap_err(), FramingError::BadContentLength);
        let mut d = StreamDecoder::new(100);
        d.extend(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 500\r\n\r\n");
        assert_eq!(d.decode().unwrap_err(), FramingError::TooLarge);
    }
}
