//! The Via header (RFC 3261 20.42, RFC 3581 rport).

use crate::params::Params;
use crate::scan::{self, skip_lws, token_end};
use crate::uri::host_port;

/// The magic cookie that starts an RFC 3261 branch.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name (`SIP`).
    pub protocol: &'a [u8],
    /// Protocol version (`2.0`).
    pub version: &'a [u8],
    /// Transport (`UDP`, `TCP`, `TLS`, `SCTP`, `WS` or any token).
    pub transport: &'a [u8],
    /// sent-by host (IPv6 references keep their brackets).
    pub host: &'a [u8],
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters (`branch`, `received`, `rport`, `maddr`, `ttl`, ...).
    pub params: Params<'a>,
}

fn slash(s: &[u8], i: usize) -> Result<usize, &'static str> {
    let i = skip_lws(s, i);
    if s.get(i) != Some(&b'/') {
        return Err("sent-protocol needs '/'");
    }
    Ok(skip_lws(s, i + 1))
}

impl<'a> Via<'a> {
    /// Parses one Via value (LWS is allowed around `/`, `:` and `;`).
    pub fn parse(s: &'a [u8]) -> Result<Via<'a>, &'static str> {
        let s = scan::trim(s);
        let pe = token_end(s, 0);
        if pe == 0 {
            return Err("missing protocol name");
        }
        let protocol = &s[..pe];
        let vs = slash(s, pe)?;
        let ve = token_end(s, vs);
        let ts = slash(s, ve)?;
        let te = token_end(s, ts);
        if ve == vs || te == ts {
            return Err("incomplete sent-protocol");
        }
        let hs = skip_lws(s, te);
        if hs == te {
            return Err("no space before sent-by");
        }
        let mut he = hs;
        if s.get(hs) == Some(&b'[') {
            he = s[hs..].iter().position(|&b| b == b']').ok_or("unterminated IPv6")? + hs + 1;
        } else {
            while he < s.len() && !scan::is_lws(s[he]) && !matches!(s[he], b':' | b';') {
                he += 1;
            }
        }
        let (host, _, _) = host_port(&s[hs..he])?;
        // LWS is allowed around the port colon (COLON = SWS ":" SWS).
        let after = skip_lws(s, he);
        let (port, next) = if s.get(after) == Some(&b':') {
            let ps = skip_lws(s, after + 1);
            let pe = ps + s[ps..].iter().take_while(|b| b.is_ascii_digit()).count();
            let port = scan::parse_u64(&s[ps..pe], 65535).ok_or("invalid sent-by port")?;
            (Some(port as u16), pe)
        } else {
            (None, he)
        };
        let params = Params::validate(&s[next..])?;
        Ok(Via { protocol, version: &s[vs..ve], transport: &s[ts..te], host, port, params })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params.get("branch").flatten()
    }

    /// `true` when the branch starts with the RFC 3261 magic cookie and has
    /// something after it (RFC 4475 badbranch has only the cookie).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE.as_bytes()))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a [u8]> {
        self.params.get("received").flatten()
    }

    /// `None`: no rport; `Some(None)`: `rport` without value (the client asks
    /// for it, RFC 3581); `Some(Some(p))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| scan::parse_u64(p, 65535)).map(|p| p as u16))
    }

    /// `true` for a reliable transport (anything but UDP).
    pub fn is_reliable(&self) -> bool {
        !self.transport.eq_ignore_ascii_case(b"UDP")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lws_everywhere() {
        let v = Via::parse(b"SIP  / 2.0  / UDP  192.0.2.2 ;  branch  =  390skdjuw").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(b"SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(v.host, b"[2001:db8::9]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse(b"SIP/2.0/UDP h:5060;rport=7;received=10.0.0.1").unwrap();
        assert_eq!(v.rport(), Some(Some(7)));
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse(b"").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
    }
}
