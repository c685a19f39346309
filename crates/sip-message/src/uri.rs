//! URIs: `sip:`, `sips:`, `tel:` (RFC 3966) and any other absolute URI.
//!
//! Escapes (`%40`) are kept exactly as received: comparing or forwarding a
//! URI never unescapes it (RFC 4475 esc01, escnull).

use crate::params::Params;

/// A URI scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme<'a> {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme, as written.
    Other(&'a [u8]),
}

/// A parsed URI, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The whole URI as written.
    pub raw: &'a [u8],
    /// Its scheme.
    pub scheme: Scheme<'a>,
    /// SIP user part (escapes kept; may contain `;`, RFC 4475 semiuri), or the
    /// telephone number of a `tel:` URI.
    pub user: Option<&'a [u8]>,
    /// SIP password part (deprecated, but legal).
    pub password: Option<&'a [u8]>,
    /// Host: name, IPv4 or `[IPv6]` reference. Empty for tel and other schemes.
    pub host: &'a [u8],
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), tel parameters for `tel:`.
    pub params: Params<'a>,
    /// URI headers after `?`, as written.
    pub headers: Option<&'a [u8]>,
}

fn scheme_end(s: &[u8]) -> Option<usize> {
    let colon = s.iter().position(|&b| b == b':')?;
    let sch = &s[..colon];
    if sch.is_empty()
        || !sch[0].is_ascii_alphabetic()
        || !sch.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    Some(colon)
}

fn valid_host(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    if h[0] == b'[' {
        return h.len() > 2
            && h[h.len() - 1] == b']'
            && h[1..h.len() - 1].iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    h.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Splits `host[:port]` starting at `s`; returns (host, port, rest).
/// (host, port, rest) of a `host[:port]...` text.
pub(crate) type HostPort<'a> = (&'a [u8], Option<u16>, &'a [u8]);

pub(crate) fn host_port(s: &[u8]) -> Result<HostPort<'_>, &'static str> {
    let host_end = if s.first() == Some(&b'[') {
        s.iter().position(|&b| b == b']').ok_or("unterminated IPv6 reference")? + 1
    } else {
        s.iter().position(|&b| matches!(b, b':' | b';' | b'?')).unwrap_or(s.len())
    };
    let host = &s[..host_end];
    if !valid_host(host) {
        return Err("invalid host");
    }
    let mut rest = &s[host_end..];
    let mut port = None;
    if rest.first() == Some(&b':') {
        let pe = rest[1..].iter().position(|&b| !b.is_ascii_digit()).map_or(rest.len(), |p| p + 1);
        let digits = &rest[1..pe];
        port = Some(crate::scan::parse_u64(digits, 65535).ok_or("invalid port")? as u16);
        rest = &rest[pe..];
    }
    Ok((host, port, rest))
}

impl<'a> Uri<'a> {
    /// Parses a URI. White space anywhere is an error (RFC 4475 lwsruri), as
    /// are `<...>` around it (ltgtruri).
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, &'static str> {
        if s.iter().any(|&b| crate::scan::is_lws(b) || matches!(b, b'<' | b'>' | b'"')) {
            return Err("white space, quote or angle bracket inside a URI");
        }
        let colon = scheme_end(s).ok_or("URI has no scheme")?;
        let sch = &s[..colon];
        let rest = &s[colon + 1..];
        let scheme = if sch.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if sch.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if sch.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            if rest.is_empty() {
                return Err("empty URI");
            }
            return Ok(Uri {
                raw: s,
                scheme: Scheme::Other(sch),
                user: None,
                password: None,
                host: b"",
                port: None,
                params: Params::default(),
                headers: None,
            });
        };
        if scheme == Scheme::Tel {
            return Self::parse_tel(s, rest);
        }
        // userinfo ends at the first '@' (an unescaped '@' is not legal in it).
        let (user, password, hp) = match rest.iter().position(|&b| b == b'@') {
            Some(at) => {
                let ui = &rest[..at];
                let (u, p) = match ui.iter().position(|&b| b == b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err("empty user part");
                }
                (Some(u), p, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        let (host, port, mut tail) = host_port(hp)?;
        let mut headers = None;
        let params_end = tail.iter().position(|&b| b == b'?').unwrap_or(tail.len());
        if params_end < tail.len() {
            let h = &tail[params_end + 1..];
            if h.is_empty() {
                return Err("empty URI headers");
            }
            headers = Some(h);
        }
        let params = Params::validate(&tail[..params_end])?;
        tail = &tail[params_end..];
        let _ = tail;
        Ok(Uri { raw: s, scheme, user, password, host, port, params, headers })
    }

    fn parse_tel(s: &'a [u8], rest: &'a [u8]) -> Result<Uri<'a>, &'static str> {
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        let number = &rest[..end];
        let global = number.first() == Some(&b'+');
        let digits = if global { &number[1..] } else { number };
        if digits.is_empty()
            || !digits.iter().all(|&b| {
                b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')')
            })
            || (global && !digits.iter().any(u8::is_ascii_digit))
        {
            return Err("invalid telephone number");
        }
        let params = Params::validate(&rest[end..])?;
        Ok(Uri {
            raw: s,
            scheme: Scheme::Tel,
            user: Some(number),
            password: None,
            host: b"",
            port: None,
            params,
            headers: None,
        })
    }

    /// `true` for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// The `transport` URI parameter, if any.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.params.get("transport").flatten()
    }

    /// The `phone-context` of a tel URI (or of a SIP URI with `user=phone`).
    pub fn phone_context(&self) -> Option<&'a [u8]> {
        self.params.get("phone-context").flatten()
    }

    /// The telephone number without visual separators (`+1-555-123` gives
    /// `+1555123`), for tel URIs and SIP URIs whose user part is a number.
    pub fn phone_digits(&self) -> Option<String> {
        let u = self.user?;
        let u = match self.scheme {
            Scheme::Tel => u,
            _ => &u[..u.iter().position(|&b| b == b';').unwrap_or(u.len())],
        };
        let out: String = u
            .iter()
            .filter(|&&b| !matches!(b, b'-' | b'.' | b'(' | b')'))
            .map(|&b| b as char)
            .collect();
        let body = out.strip_prefix('+').unwrap_or(&out);
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
        {
            return None;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse(b"sip:alice:pw@[2001:db8::10]:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"pw"[..]));
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert!(u.params.has("lr"));
        assert_eq!(u.headers, Some(&b"subject=x"[..]));
    }

    #[test]
    fn semicolon_in_user_part() {
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
    }

    #[test]
    fn tel_uris() {
        let u = Uri::parse(b"tel:+1-201-555-0123").unwrap();
        assert_eq!(u.phone_digits().as_deref(), Some("+12015550123"));
        let u = Uri::parse(b"tel:7042;phone-context=example.com").unwrap();
        assert_eq!(u.phone_context(), Some(&b"example.com"[..]));
        assert!(Uri::parse(b"tel:+").is_err());
    }

    #[test]
    fn rejects() {
        assert!(Uri::parse(b"sip:user@example.com; lr").is_err());
        assert!(Uri::parse(b"<sip:user@example.com>").is_err());
        assert!(Uri::parse(b"sip:user@exa mple.com").is_err());
        assert!(Uri::parse(b"sip:@example.com").is_err());
        assert!(Uri::parse(b"sip:a@b:99999").is_err());
        assert!(Uri::parse(b"nocolon").is_err());
    }
}
