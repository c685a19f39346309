//! Small typed header values: CSeq, RAck, Reason, and the auth headers.

use crate::error::HeaderError;
use crate::method::Method;
use crate::params::Params;
use crate::scan::{self, is_lws, quoted_end, skip_lws, token_end};

/// CSeq: sequence number and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (at most 2^32-1).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

fn number_then_rest<'a>(v: &'a [u8], what: &'static str) -> Result<(u64, &'a [u8]), HeaderError> {
    let v = scan::trim(v);
    let de = v.iter().position(|b| !b.is_ascii_digit()).unwrap_or(v.len());
    let n = scan::parse_u64(&v[..de], u64::from(u32::MAX))
        .ok_or(HeaderError::new(what, "number missing or larger than 2^32-1"))?;
    Ok((n, &v[de..]))
}

impl CSeq {
    /// Parses `123 INVITE`.
    pub fn parse(v: &[u8]) -> Result<CSeq, HeaderError> {
        let (seq, rest) = number_then_rest(v, "CSeq")?;
        let ms = skip_lws(rest, 0);
        if ms == 0 {
            return Err(HeaderError::new("CSeq", "no space before method"));
        }
        let m = scan::trim(&rest[ms..]);
        if !scan::is_token_str(m) {
            return Err(HeaderError::new("CSeq", "method is not a token"));
        }
        Ok(CSeq { seq: seq as u32, method: Method::from_token(m) })
    }
}

/// RAck (RFC 3262): response number, CSeq number, method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RAck {
    /// RSeq of the reliable provisional response being acknowledged.
    pub rseq: u32,
    /// CSeq number of the INVITE.
    pub cseq: u32,
    /// CSeq method (INVITE).
    pub method: Method,
}

impl RAck {
    /// Parses `776656 1 INVITE`.
    pub fn parse(v: &[u8]) -> Result<RAck, HeaderError> {
        let (rseq, rest) = number_then_rest(v, "RAck")?;
        let c = CSeq::parse(rest).map_err(|_| HeaderError::new("RAck", "malformed"))?;
        Ok(RAck { rseq: rseq as u32, cseq: c.seq, method: c.method })
    }
}

/// One Reason value (RFC 3326): `SIP ;cause=200 ;text="Call completed elsewhere"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason<'a> {
    /// `SIP`, `Q.850`, ...
    pub protocol: &'a [u8],
    /// `cause`, `text`, ...
    pub params: Params<'a>,
}

impl<'a> Reason<'a> {
    /// Parses one Reason value.
    pub fn parse(v: &'a [u8]) -> Result<Reason<'a>, &'static str> {
        let v = scan::trim(v);
        let pe = token_end(v, 0);
        if pe == 0 {
            return Err("missing protocol");
        }
        Ok(Reason { protocol: &v[..pe], params: Params::validate(&v[pe..])? })
    }

    /// The `cause` code.
    pub fn cause(&self) -> Option<u16> {
        self.params.get("cause").flatten().and_then(|c| scan::parse_u64(c, 65535)).map(|c| c as u16)
    }

    /// The `text`, without quotes.
    pub fn text(&self) -> Option<&'a [u8]> {
        self.params.get_unquoted("text")
    }
}

/// Authorization / Proxy-Authorization credentials or a WWW-/Proxy-
/// Authenticate challenge: a scheme and comma-separated `name=value` pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams<'a> {
    /// `Digest`, or any other scheme as written.
    pub scheme: &'a [u8],
    /// Parameters in order, values without quotes (escapes kept).
    pub params: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> AuthParams<'a> {
    /// Parses `Digest username="a", realm="b", nonce="c", ...`.
    pub fn parse(v: &'a [u8]) -> Result<AuthParams<'a>, &'static str> {
        let v = scan::trim(v);
        let se = token_end(v, 0);
        if se == 0 {
            return Err("missing auth scheme");
        }
        let mut params = Vec::with_capacity(10);
        let mut i = skip_lws(v, se);
        while i < v.len() {
            let ns = i;
            let ne = token_end(v, ns);
            if ne == ns {
                return Err("invalid auth parameter name");
            }
            let mut j = skip_lws(v, ne);
            if v.get(j) != Some(&b'=') {
                return Err("auth parameter without '='");
            }
            j = skip_lws(v, j + 1);
            let (val, next) = if v.get(j) == Some(&b'"') {
                let e = quoted_end(v, j).ok_or("unterminated quoted auth parameter")?;
                (&v[j + 1..e - 1], e)
            } else {
                let mut e = j;
                while e < v.len() && !is_lws(v[e]) && v[e] != b',' {
                    e += 1;
                }
                (&v[j..e], e)
            };
            params.push((&v[ns..ne], val));
            i = skip_lws(v, next);
            if i < v.len() {
                if v[i] != b',' {
                    return Err("auth parameters must be separated by ','");
                }
                i = skip_lws(v, i + 1);
            }
        }
        Ok(AuthParams { scheme: &v[..se], params })
    }

    /// The value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
    }

    /// `true` for the Digest scheme.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_forms() {
        let c = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert!(CSeq::parse(b"36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse(b"4294967296 INVITE").is_err());
        assert!(CSeq::parse(b"1INVITE").is_err());
        let r = RAck::parse(b"776656 1 INVITE").unwrap();
        assert_eq!((r.rseq, r.cseq, r.method), (776656, 1, Method::Invite));
    }

    #[test]
    fn reason_and_auth() {
        let r = Reason::parse(b"SIP ;cause=200 ;text=\"Call completed elsewhere\"").unwrap();
        assert_eq!(r.cause(), Some(200));
        assert_eq!(r.text(), Some(&b"Call completed elsewhere"[..]));
        let a = AuthParams::parse(
            b"Digest username=\"bob\", realm=\"test\", nonce=\"n,1\", uri=\"sip:test\", response=\"abc\", qop=auth, nc=00000001",
        )
        .unwrap();
        assert!(a.is_digest());
        assert_eq!(a.get("nonce"), Some(&b"n,1"[..]));
        assert_eq!(a.get("qop"), Some(&b"auth"[..]));
        assert_eq!(a.get("NC"), Some(&b"00000001"[..]));
    }
}
