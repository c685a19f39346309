//! `;name=value` parameter lists of URIs and header values.

use crate::scan::{self, is_lws, quoted_end, skip_lws};

/// A parameter list, borrowed from the message: `;tag=1;q=0.5;lr`.
/// Names compare case-insensitively; values are returned as written (a quoted
/// value with its quotes, see [`Params::get_unquoted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
}

impl<'a> Params<'a> {
    /// Checks syntax: every parameter has a non-empty token name, values are
    /// well-formed, quoted strings are closed.
    pub(crate) fn validate(raw: &'a [u8]) -> Result<Params<'a>, &'static str> {
        let mut i = skip_lws(raw, 0);
        while i < raw.len() {
            if raw[i] != b';' {
                return Err("unexpected text between parameters");
            }
            let (next, name, value) = param_at(raw, i)?;
            if name.is_empty() || !scan::is_token_str(name) {
                return Err("empty or invalid parameter name");
            }
            if let Some(v) = value {
                if v.is_empty() {
                    return Err("parameter with '=' but no value");
                }
            }
            i = skip_lws(raw, next);
        }
        Ok(Params { raw })
    }

    /// The list as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// `true` when there are no parameters.
    pub fn is_empty(&self) -> bool {
        scan::trim(self.raw).is_empty()
    }

    /// Iterates `(name, value)` pairs.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { raw: self.raw, pos: 0 }
    }

    /// `Some(Some(v))` for `name=v`, `Some(None)` for a bare `name`, `None`
    /// when absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The value of `name` without surrounding quotes (escapes kept).
    pub fn get_unquoted(&self, name: &str) -> Option<&'a [u8]> {
        self.get(name).flatten().map(scan::unquote)
    }

    /// `true` when `name` is present, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Parses one parameter starting at `raw[i] == b';'`.
/// Returns (index after it, name, value).
/// One parsed parameter: (index after it, name, value).
type ParamAt<'a> = (usize, &'a [u8], Option<&'a [u8]>);

fn param_at(raw: &[u8], i: usize) -> Result<ParamAt<'_>, &'static str> {
    let ns = skip_lws(raw, i + 1);
    let mut ne = ns;
    while ne < raw.len() && !is_lws(raw[ne]) && !matches!(raw[ne], b'=' | b';') {
        ne += 1;
    }
    let name = &raw[ns..ne];
    let mut j = skip_lws(raw, ne);
    if j < raw.len() && raw[j] == b'=' {
        j = skip_lws(raw, j + 1);
        let vs = j;
        if j < raw.len() && raw[j] == b'"' {
            j = quoted_end(raw, j).ok_or("unterminated quoted parameter value")?;
        } else {
            while j < raw.len() && !is_lws(raw[j]) && raw[j] != b';' {
                j += 1;
            }
        }
        Ok((j, name, Some(&raw[vs..j])))
    } else {
        Ok((ne, name, None))
    }
}

/// Iterator over a [`Params`] list.
pub struct ParamIter<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        let mut i = skip_lws(raw, self.pos);
        while i < raw.len() && raw[i] != b';' {
            i += 1;
        }
        if i >= raw.len() {
            return None;
        }
        match param_at(raw, i) {
            Ok((next, name, value)) => {
                self.pos = next;
                Some((name, value))
            }
            Err(_) => {
                self.pos = raw.len();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_with_lws_and_quotes() {
        let p = Params::validate(b" ;  tag    = 1918181833n ;q=0.5;lr;x=\"a;b\"").unwrap();
        assert_eq!(p.get("TAG"), Some(Some(&b"1918181833n"[..])));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get_unquoted("x"), Some(&b"a;b"[..]));
        assert!(Params::validate(b";;").is_err());
        assert!(Params::validate(b";a=\"x").is_err());
    }
}
