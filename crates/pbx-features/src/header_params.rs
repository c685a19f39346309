//! `value *(;name[=value])` header values (Event, Replaces), split with
//! bounds: at most [`MAX_PARAMS`] parameters, names compared
//! case-insensitively by the callers.

use sip_message::scan;

/// Most parameters read from one value; more is refused.
pub(crate) const MAX_PARAMS: usize = 8;

/// A header value split at its first `;`: the leading value (trimmed) and
/// its parameters, values unquoted. `None` when the value is empty, a
/// parameter has an empty name or `=` without a value, or there are more
/// than [`MAX_PARAMS`].
pub(crate) struct HeaderParams<'a> {
    pub(crate) value: &'a [u8],
    pub(crate) params: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

impl<'a> HeaderParams<'a> {
    pub(crate) fn split(raw: &'a [u8]) -> Option<HeaderParams<'a>> {
        let mut parts = raw.split(|&b| b == b';');
        let value = scan::trim(parts.next()?);
        if value.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            if params.len() == MAX_PARAMS {
                return None;
            }
            let (name, v) = match p.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let v = scan::unquote(scan::trim(&p[eq + 1..]));
                    if v.is_empty() {
                        return None;
                    }
                    (scan::trim(&p[..eq]), Some(v))
                }
                None => (scan::trim(p), None),
            };
            if !scan::is_token_str(name) {
                return None;
            }
            params.push((name, v));
        }
        Some(HeaderParams { value, params })
    }

    /// The value of parameter `name`: `Some(None)` for a bare flag, `None`
    /// when absent or given more than once (ambiguous).
    pub(crate) fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        let mut found = self.params.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Some(first.1)
    }

    /// `true` when parameter `name` appears more than once.
    pub(crate) fn repeated(&self, name: &str) -> bool {
        self.params.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).count() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_values_and_parameters() {
        let h = HeaderParams::split(b" dialog ; id = \"a1\" ;Early-Only").unwrap();
        assert_eq!(h.value, b"dialog");
        assert_eq!(h.get("id"), Some(Some(&b"a1"[..])));
        assert_eq!(h.get("early-only"), Some(None));
        assert_eq!(h.get("x"), None);
        assert!(HeaderParams::split(b"").is_none());
        assert!(HeaderParams::split(b" ;id=1").is_none());
        assert!(HeaderParams::split(b"a;=1").is_none());
        assert!(HeaderParams::split(b"a;id=").is_none());
        assert!(HeaderParams::split(b"a;b c=1").is_none());
        assert!(HeaderParams::split(&b"a;p".repeat(MAX_PARAMS + 1)[..]).is_none());
        let twice = HeaderParams::split(b"a;id=1;ID=2").unwrap();
        assert_eq!(twice.get("id"), None);
        assert!(twice.repeated("id"));
    }
}
