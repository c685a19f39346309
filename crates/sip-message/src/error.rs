//! Error types.

use std::fmt;

/// Why a byte buffer is not a SIP message at all (no start line can be read).
/// Lesser problems are kept as defects on the parsed [`crate::Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No line feed: not even a start line.
    NoStartLine,
    /// The start line is neither a Request-Line nor a Status-Line.
    BadStartLine(&'static str),
    /// Larger than this codec handles.
    TooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoStartLine => f.write_str("no start line"),
            ParseError::BadStartLine(why) => write!(f, "bad start line: {why}"),
            ParseError::TooLarge => f.write_str("message too large"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A header (or the Request-URI) that is missing or does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderError {
    /// Which header.
    pub header: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl HeaderError {
    /// Makes an error for `header`.
    pub const fn new(header: &'static str, reason: &'static str) -> Self {
        HeaderError { header, reason }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.header, self.reason)
    }
}

impl std::error::Error for HeaderError {}
