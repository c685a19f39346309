//! Byte-level scanning helpers shared by the typed parsers.
//!
//! Header values keep their line folding (CRLF followed by SP/HT), so every
//! "skip white space" here also skips CR and LF: inside a header value they can
//! only be part of a fold.

/// `true` for bytes of the RFC 3261 `token` production.
#[inline]
pub fn is_token(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// `true` for linear white space inside a header value (folds included).
#[inline]
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Index of the first non-LWS byte at or after `i`.
#[inline]
pub fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws(s[i]) {
        i += 1;
    }
    i
}

/// `s` without leading and trailing LWS.
#[inline]
pub fn trim(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    while end > start && is_lws(s[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Index after the run of token bytes starting at `i`.
#[inline]
pub fn token_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_token(s[i]) {
        i += 1;
    }
    i
}

/// `true` when `s` is a non-empty token.
pub fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Given `s[i] == b'"'`, the index just after the closing quote, honouring
/// `\` escapes. `None` when the quoted string is not terminated.
pub fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    debug_assert_eq!(s.get(i), Some(&b'"'));
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Splits a comma-separated header value into its elements, ignoring commas
/// inside quoted strings and `<...>`. Empty elements are returned as empty
/// slices so that a validator can reject them.
pub struct CommaSplit<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> CommaSplit<'a> {
    /// Splits `s`.
    pub fn new(s: &'a [u8]) -> Self {
        CommaSplit { s, pos: 0, done: s.is_empty() }
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        let mut i = start;
        while let Some(off) = memchr::memchr3(b',', b'"', b'<', &s[i..]) {
            let j = i + off;
            match s[j] {
                b',' => {
                    self.pos = j + 1;
                    return Some(trim(&s[start..j]));
                }
                b'"' => match quoted_end(s, j) {
                    Some(e) => i = e,
                    None => break,
                },
                _ => match memchr::memchr(b'>', &s[j..]) {
                    Some(g) => i = j + g + 1,
                    None => break,
                },
            }
            if i >= s.len() {
                break;
            }
        }
        self.done = true;
        Some(trim(&s[start..]))
    }
}

/// Parses an unsigned decimal of at most `max` value. Leading zeros are
/// allowed (RFC 4475 wsinv). Overlarge values are errors, never wrapped.
pub fn parse_u64(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

/// Content of a quoted string without the quotes (escapes kept as received);
/// other values are returned unchanged.
pub fn unquote(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let v: Vec<&[u8]> = CommaSplit::new(b"\"a, b\" <sip:x@y;p=1,2>, <sip:z@w> ,x").collect();
        assert_eq!(v, vec![&b"\"a, b\" <sip:x@y;p=1,2>"[..], b"<sip:z@w>", b"x"]);
        let v: Vec<&[u8]> = CommaSplit::new(b"a,,b").collect();
        assert_eq!(v, vec![&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn numbers_do_not_wrap() {
        assert_eq!(parse_u64(b"0068", 255), Some(68));
        assert_eq!(parse_u64(b"256", 255), None);
        assert_eq!(parse_u64(b"4294967296", u64::from(u32::MAX)), None);
        assert_eq!(parse_u64(b"99999999999999999999999", u64::MAX), None);
        assert_eq!(parse_u64(b"-1", 10), None);
    }
}
