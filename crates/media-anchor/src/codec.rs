//! The ng wire format: `<cookie> <bencoded dictionary>` in one UDP
//! datagram. The cookie names a request; its reply carries the same one,
//! and so does a retransmission (rtpengine answers a repeated cookie from
//! its cache instead of running the command twice).

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// The largest ng datagram read or written (a UDP payload's limit).
pub const MAX_DATAGRAM: usize = 65_507;

/// The longest cookie accepted.
pub const MAX_COOKIE: usize = 64;

/// Why bytes are not a valid ng message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// Larger than [`MAX_DATAGRAM`].
    TooLarge(usize),
    /// No `<cookie> ` prefix, or a cookie that is empty, too long or not
    /// printable ASCII.
    BadCookie,
    /// The bencode itself is broken (truncated, bad length, too deep,
    /// duplicate key, trailing bytes).
    Bencode(String),
    /// The message is bencode but not a dictionary.
    NotADictionary,
    /// A required key is missing.
    Missing(&'static str),
    /// A key holds the wrong type of value.
    WrongType(&'static str),
    /// A key holds a value outside the ones defined.
    BadValue(&'static str),
    /// An unknown `command` or `result`.
    Unknown(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge(n) => write!(f, "{n} bytes is more than an ng datagram holds"),
            CodecError::BadCookie => f.write_str("no valid cookie"),
            CodecError::Bencode(e) => write!(f, "bad bencode: {e}"),
            CodecError::NotADictionary => f.write_str("not a bencoded dictionary"),
            CodecError::Missing(k) => write!(f, "missing key {k:?}"),
            CodecError::WrongType(k) => write!(f, "key {k:?} has the wrong type"),
            CodecError::BadValue(k) => write!(f, "key {k:?} has an undefined value"),
            CodecError::Unknown(s) => write!(f, "unknown {s:?}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// The cookie of one request: printable ASCII without spaces, at most
/// [`MAX_COOKIE`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cookie(String);

impl Cookie {
    /// `s` as a cookie, if it is a valid one.
    pub fn new(s: &str) -> Option<Cookie> {
        let ok = !s.is_empty() && s.len() <= MAX_COOKIE && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Cookie(s.to_owned()))
    }

    /// A cookie made of 64 random bits (16 hex digits).
    pub fn from_bits(bits: u64) -> Cookie {
        Cookie(format!("{bits:016x}"))
    }

    /// The cookie's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Joins a cookie and an encoded dictionary into one datagram.
pub fn frame(cookie: &Cookie, dict: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(cookie.0.len() + 1 + dict.len());
    b.put_slice(cookie.0.as_bytes());
    b.put_u8(b' ');
    b.put_slice(dict);
    b.freeze()
}

/// Splits a datagram into its cookie and its (still encoded) dictionary.
pub fn unframe(datagram: &[u8]) -> Result<(Cookie, &[u8]), CodecError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(CodecError::TooLarge(datagram.len()));
    }
    let space = datagram.iter().take(MAX_COOKIE + 1).position(|&b| b == b' ');
    let space = space.ok_or(CodecError::BadCookie)?;
    let cookie = std::str::from_utf8(&datagram[..space]).ok().and_then(Cookie::new);
    Ok((cookie.ok_or(CodecError::BadCookie)?, &datagram[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_unframe() {
        let c = Cookie::new("5323_1").unwrap();
        let d = frame(&c, b"d7:command4:pinge");
        assert_eq!(&d[..], b"5323_1 d7:command4:pinge");
        let (c2, rest) = unframe(&d).unwrap();
        assert_eq!(c2, c);
        assert_eq!(rest, b"d7:command4:pinge");
    }

    #[test]
    fn bad_cookies() {
        for bad in [&b""[..], b" d6:result4:ponge", b"nospace", b"\xff\xfe d6:result4:ponge"] {
            assert_eq!(unframe(bad), Err(CodecError::BadCookie), "{bad:?}");
        }
        let long = [b'a'; MAX_COOKIE + 1];
        let mut d = long.to_vec();
        d.extend_from_slice(b" de");
        assert_eq!(unframe(&d), Err(CodecError::BadCookie));
        assert_eq!(
            unframe(&vec![b'a'; MAX_DATAGRAM + 1]),
            Err(CodecError::TooLarge(MAX_DATAGRAM + 1))
        );
        assert_eq!(Cookie::from_bits(0xab).as_str(), "00000000000000ab");
        assert!(Cookie::new("a b").is_none());
    }
}
