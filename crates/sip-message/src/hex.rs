//! Lowercase hex: digest values, nonces, page tokens, signatures. The one
//! hex encoder and decoder of the workspace.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case) into `out`; `false` unless `s` is exactly
/// `2 * out.len()` hex digits.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (pair.first().copied().and_then(value), pair.get(1).copied().and_then(value)) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

/// Decodes hex (either case); `None` for an odd length or a non-hex digit.
pub fn decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    decode_into(s, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0x00, 0xab, 0x7f]), "00ab7f");
        let mut b = [0u8; 3];
        assert!(decode_into(b"00AB7f", &mut b));
        assert_eq!(b, [0x00, 0xab, 0x7f]);
        assert!(!decode_into(b"00AB7", &mut b));
        assert!(!decode_into(b"00AB7g", &mut b));
        assert_eq!(decode(b"6869"), Some(b"hi".to_vec()));
        assert_eq!(decode(b""), Some(Vec::new()));
        assert_eq!(decode(b"686"), None);
        assert_eq!(decode(b"zz"), None);
    }
}
