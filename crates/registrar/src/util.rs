//! Small byte helpers: percent-decoding, quoted-string unescaping, SIP URI
//! comparison, RNG seed derivation (hex is `sip_message::hex`).

use sha2::{Digest as _, Sha256};
use sip_message::{hex, Uri};

/// A 32-byte RNG seed derived from `secret` for one `purpose` (domain
/// separated: `SHA-256(purpose 0x00 secret)`), so that different uses of one
/// secret get unrelated random streams.
pub(crate) fn derive_seed(secret: &[u8], purpose: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(purpose);
    h.update([0u8]);
    h.update(secret);
    h.finalize().into()
}

/// Decodes `%XX` escapes (RFC 3261 10.3 step 5: the AOR is compared
/// unescaped). `None` for a bad escape or a result that is not UTF-8.
pub(crate) fn percent_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let mut octet = [0u8; 1];
            if !hex::decode_into(s.get(i + 1..i + 3)?, &mut octet) {
                return None;
            }
            out.extend(octet);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Removes quoted-pair backslashes (`\"` gives `"`) from the inside of a
/// quoted string.
pub(crate) fn unescape_quoted(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// SIP URI equality, RFC 3261 19.1.4 in its useful parts: scheme, user and
/// password (compared unescaped, case-sensitive), host (case-insensitive),
/// port (absent differs from 5060), the `user`, `ttl`, `method`, `maddr` and
/// `transport` parameters (all must agree, absent only equals absent), other
/// parameters only when both sides have them, and headers as written.
/// Anything that does not parse as a SIP URI compares byte for byte.
pub(crate) fn sip_uri_eq(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (Uri::parse(a), Uri::parse(b)) else { return false };
    if !x.is_sip() || x.scheme != y.scheme {
        return false;
    }
    fn dec(u: Option<&[u8]>) -> Option<Result<String, &[u8]>> {
        u.map(|u| percent_decode(u).ok_or(u))
    }
    if dec(x.user) != dec(y.user)
        || dec(x.password) != dec(y.password)
        || !x.host.eq_ignore_ascii_case(y.host)
        || x.port != y.port
        || x.headers != y.headers
    {
        return false;
    }
    let val_eq = |p: Option<&[u8]>, q: Option<&[u8]>| match (p, q) {
        (Some(p), Some(q)) => p.eq_ignore_ascii_case(q),
        (None, None) => true,
        _ => false,
    };
    for name in ["user", "ttl", "method", "maddr", "transport"] {
        match (x.params.get(name), y.params.get(name)) {
            (None, None) => {}
            (Some(p), Some(q)) if val_eq(p, q) => {}
            _ => return false,
        }
    }
    x.params.iter().all(|(n, v)| match y.params.iter().find(|(m, _)| m.eq_ignore_ascii_case(n)) {
        Some((_, w)) => val_eq(v, w),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(percent_decode(b"test%31%31").as_deref(), Some("test11"));
        assert_eq!(percent_decode(b"a%2"), None);
        assert_eq!(percent_decode(b"%ff"), None);
        assert_eq!(unescape_quoted(br#"a\"b\\"#), br#"a"b\"#.to_vec());
    }

    #[test]
    fn uri_comparison() {
        assert!(sip_uri_eq(b"sip:a@Host:5070;transport=TCP", b"sip:a@host:5070;transport=tcp"));
        assert!(sip_uri_eq(b"sip:%61lice@h", b"sip:alice@h"));
        assert!(sip_uri_eq(b"sip:a@h;ob", b"sip:a@h"));
        assert!(!sip_uri_eq(b"sip:a@h", b"sip:a@h:5060"));
        assert!(!sip_uri_eq(b"sip:a@h", b"sip:A@h"));
        assert!(!sip_uri_eq(b"sip:a@h;transport=tcp", b"sip:a@h"));
        assert!(!sip_uri_eq(b"sip:a@h;rinstance=1", b"sip:a@h;rinstance=2"));
        assert!(!sip_uri_eq(b"sip:a@h", b"sips:a@h"));
        assert!(sip_uri_eq(b"not a uri", b"not a uri"));
    }
}
