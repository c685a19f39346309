//! name-addr / addr-spec values: From, To, Contact, Route, Record-Route.

use crate::params::Params;
use crate::scan::{self, is_lws, quoted_end, skip_lws};
use crate::uri::Uri;

/// `"Display" <uri>;params` or `uri;params`, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written: quoted (with quotes) or a run of tokens.
    pub display: Option<&'a [u8]>,
    /// The URI.
    pub uri: Uri<'a>,
    /// Header parameters after the URI (`tag`, `expires`, `q`, ...).
    pub params: Params<'a>,
    /// `true` when the URI was written inside `<...>`.
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses one value.
    pub fn parse(s: &'a [u8]) -> Result<NameAddr<'a>, &'static str> {
        let s = scan::trim(s);
        if s.is_empty() {
            return Err("empty value");
        }
        let (display, lt) = if s[0] == b'"' {
            let qe = quoted_end(s, 0).ok_or("unterminated quoted display name")?;
            let lt = skip_lws(s, qe);
            if s.get(lt) != Some(&b'<') {
                return Err("quoted display name not followed by <");
            }
            (Some(&s[..qe]), Some(lt))
        } else {
            match s.iter().position(|&b| b == b'<') {
                Some(lt) => {
                    let d = scan::trim(&s[..lt]);
                    if !d.iter().all(|&b| scan::is_token(b) || is_lws(b)) {
                        return Err("display name has non-token characters and is not quoted");
                    }
                    (if d.is_empty() { None } else { Some(d) }, Some(lt))
                }
                None => (None, None),
            }
        };
        match lt {
            Some(lt) => {
                let gt = s[lt..].iter().position(|&b| b == b'>').ok_or("unterminated <")? + lt;
                let inner = &s[lt + 1..gt];
                if inner.first().is_some_and(|&b| is_lws(b))
                    || inner.last().is_some_and(|&b| is_lws(b))
                {
                    return Err("white space inside <...>");
                }
                let uri = Uri::parse(inner)?;
                let params = Params::validate(&s[gt + 1..])?;
                Ok(NameAddr { display, uri, params, bracketed: true })
            }
            None => {
                let end = s.iter().position(|&b| b == b';' || is_lws(b)).unwrap_or(s.len());
                let uri_b = &s[..end];
                if uri_b.contains(&b'?') {
                    return Err("URI with headers must be enclosed in <>");
                }
                let uri = Uri::parse(uri_b)?;
                let params = Params::validate(&s[end..])?;
                Ok(NameAddr { display: None, uri, params, bracketed: false })
            }
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.get("tag").flatten()
    }

    /// The display name without quotes (escapes kept).
    pub fn display_name(&self) -> Option<&'a [u8]> {
        self.display.map(scan::unquote)
    }

    /// `expires` contact parameter; `Err` when it is not a number that fits
    /// in 32 bits (RFC 4475 scalar02).
    pub fn expires(&self) -> Result<Option<u32>, &'static str> {
        match self.params.get("expires") {
            None => Ok(None),
            Some(None) => Err("expires without a value"),
            Some(Some(v)) => scan::parse_u64(v, u64::from(u32::MAX))
                .map(|n| Some(n as u32))
                .ok_or("expires is not a number that fits in 32 bits"),
        }
    }

    /// `q` contact parameter in thousandths (`q=0.5` gives 500); `Err` when
    /// malformed.
    pub fn q(&self) -> Result<Option<u16>, &'static str> {
        let Some(v) = self.params.get("q") else { return Ok(None) };
        let v = v.ok_or("q without a value")?;
        parse_qvalue(v).map(Some).ok_or("q is not a qvalue")
    }

    /// `+sip.instance` (RFC 5626), without quotes and angle brackets.
    pub fn instance(&self) -> Option<&'a [u8]> {
        let v = self.params.get_unquoted("+sip.instance")?;
        Some(v.strip_prefix(b"<").and_then(|v| v.strip_suffix(b">")).unwrap_or(v))
    }

    /// `reg-id` (RFC 5626).
    pub fn reg_id(&self) -> Option<u32> {
        self.params
            .get("reg-id")
            .flatten()
            .and_then(|v| scan::parse_u64(v, u64::from(u32::MAX)))
            .map(|n| n as u32)
    }
}

/// RFC 3261 qvalue: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut milli: u16 = 0;
    for k in 0..3 {
        milli = milli * 10 + frac.get(k).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(milli),
        b'1' if milli == 0 => Some(1000),
        _ => None,
    }
}

/// The Contact header(s) of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *` (REGISTER removing every binding).
    Star,
    /// Zero or more name-addrs, in order.
    List(Vec<NameAddr<'a>>),
}

impl<'a> Contacts<'a> {
    pub(crate) fn parse(values: impl Iterator<Item = &'a [u8]>) -> Result<Self, &'static str> {
        let mut list = Vec::new();
        let mut star = false;
        for v in values {
            if v == b"*" {
                star = true;
            } else {
                list.push(NameAddr::parse(v)?);
            }
        }
        match (star, list.is_empty()) {
            (true, true) => Ok(Contacts::Star),
            (true, false) => Err("'*' mixed with other contacts"),
            (false, _) => Ok(Contacts::List(list)),
        }
    }

    /// The list (empty for `*`).
    pub fn list(&self) -> &[NameAddr<'a>] {
        match self {
            Contacts::Star => &[],
            Contacts::List(l) => l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse(b"\"A \\\"b\\\"\" <sip:a@b>;tag=x").unwrap();
        assert_eq!(a.display, Some(&b"\"A \\\"b\\\"\""[..]));
        assert_eq!(a.tag(), Some(&b"x"[..]));
        let a = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display, Some(&b"caller"[..]));
        let a = NameAddr::parse(b"sip:+1972@gw1.example.net;unknownparam").unwrap();
        assert!(a.params.has("unknownparam"));
        assert!(a.uri.params.is_empty());
        let a = NameAddr::parse(b"<sip:+1972@gw1.example.net;unknownparam>").unwrap();
        assert!(a.uri.params.has("unknownparam"));
        let a = NameAddr::parse(
            b"<sip:a@192.0.2.1:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1;q=0.7;expires=60",
        )
        .unwrap();
        assert_eq!(a.instance(), Some(&b"urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF"[..]));
        assert_eq!(a.reg_id(), Some(1));
        assert_eq!(a.q(), Ok(Some(700)));
        assert_eq!(a.expires(), Ok(Some(60)));
    }

    #[test]
    fn rejects() {
        assert!(NameAddr::parse(b"\"Watson <sip:t@example.org>").is_err());
        assert!(NameAddr::parse(b"\"W\" < sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse(b"<sip:joe@example.org>;;;;").is_err());
    }
}
