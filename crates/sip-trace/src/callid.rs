//! The Call-ID of a message that is still bytes: the tap sees datagrams
//! before the switch parses them, and a message that never parses is kept
//! too (under the empty Call-ID).

/// Longest Call-ID taken; a longer one is not a Call-ID the switch would
/// accept, and the message is kept without one.
pub const MAX_CALL_ID: usize = 256;

/// The value of the first `Call-ID` (or compact `i`) header of `msg`, in
/// its header section, trimmed; `None` without one (or with one longer
/// than [`MAX_CALL_ID`]).
pub fn call_id_of(msg: &[u8]) -> Option<&[u8]> {
    // One pass over the line ends (the tap runs this on every message):
    // only a line starting with `C`, `c`, `I` or `i` is looked at; the
    // empty line that ends the headers ends the search.
    let mut ends = memchr::memchr_iter(b'\n', msg);
    let mut at = ends.next()? + 1;
    for end in ends.chain(std::iter::once(msg.len())) {
        let line = trim_cr(&msg[at..end]);
        match line.first() {
            None => return None,
            Some(b'C' | b'c' | b'I' | b'i') => {
                if let Some(v) = header_value(line) {
                    return (v.len() <= MAX_CALL_ID && !v.is_empty()).then_some(v);
                }
            }
            Some(_) => {}
        }
        at = end + 1;
        if at >= msg.len() {
            break;
        }
    }
    None
}

/// Where [`call_id_of`] finds the Call-ID in `msg`; `0..0` without one.
pub fn call_id_range(msg: &[u8]) -> std::ops::Range<usize> {
    match call_id_of(msg) {
        Some(v) => {
            let start = v.as_ptr() as usize - msg.as_ptr() as usize;
            start..start + v.len()
        }
        None => 0..0,
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The value of `line` when it is a Call-ID header line.
fn header_value(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii_end();
    if !(name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i")) {
        return None;
    }
    Some(line[colon + 1..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_compact_forms() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\nCall-ID:  abc@h \r\n\r\nbody";
        assert_eq!(call_id_of(m), Some(&b"abc@h"[..]));
        let m = b"SIP/2.0 200 OK\ni : xyz\n\n";
        assert_eq!(call_id_of(m), Some(&b"xyz"[..]));
        let m = b"SIP/2.0 200 OK\r\ncall-id:q\r\n\r\n";
        assert_eq!(call_id_of(m), Some(&b"q"[..]));
    }

    #[test]
    fn the_range_points_at_it() {
        let m = b"BYE sip:a SIP/2.0\r\nCall-ID: xyz\r\n\r\n";
        assert_eq!(&m[call_id_range(m)], b"xyz");
        assert_eq!(call_id_range(b"BYE sip:a SIP/2.0\r\n\r\n"), 0..0);
    }

    #[test]
    fn none_in_the_body_none_too_long_none_at_all() {
        assert_eq!(call_id_of(b"OPTIONS sip:a SIP/2.0\r\nTo: x\r\n\r\nCall-ID: body"), None);
        let long = format!("A sip:a SIP/2.0\r\nCall-ID: {}\r\n\r\n", "x".repeat(300));
        assert_eq!(call_id_of(long.as_bytes()), None);
        assert_eq!(call_id_of(b""), None);
        assert_eq!(call_id_of(b"garbage"), None);
        assert_eq!(call_id_of(b"A\r\nCall-IDx: no\r\nCall-ID:\r\n\r\n"), None);
    }
}
