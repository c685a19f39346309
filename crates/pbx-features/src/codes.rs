//! Feature codes: what a phone dials to pick up a call or to log in and
//! out of a ring group, per domain, and the check that they clash with
//! nothing.
//!
//! | code | default | dialed | does |
//! |---|---|---|---|
//! | `group_pickup` | `*8` | exactly the code | answer the oldest call ringing a group the picker belongs to |
//! | `directed_pickup` | `**` | the code, then an extension | answer a call ringing that extension |
//! | `login_toggle` | `*45` | the code, then a group number | log the member in or out of that group |
//!
//! A code is made of digits and `*` and starts with `*`, so that no number
//! dialed out (an E.164 number to a carrier) is ever taken for one; `#`
//! is left out because phones send it as `%23`. An empty code turns its
//! feature off. The check refuses a code that makes a dialed string
//! ambiguous (one code is the start of another prefix code) or that an
//! extension or group number of the domain starts with.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest code, in bytes.
pub const MAX_CODE: usize = 16;
/// Longest extension or group after a prefix code, in bytes.
pub const MAX_TARGET: usize = 64;

/// One domain's feature codes; an empty string turns a feature off. As a
/// config table, keys left out take the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureCodes {
    /// Group pickup, dialed exactly. Default `*8`.
    pub group_pickup: String,
    /// Directed pickup, a prefix before the extension. Default `**`.
    pub directed_pickup: String,
    /// Login toggle, a prefix before the group number. Default `*45`.
    pub login_toggle: String,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        FeatureCodes {
            group_pickup: "*8".into(),
            directed_pickup: "**".into(),
            login_toggle: "*45".into(),
        }
    }
}

/// What a dialed user part asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureCode<'a> {
    /// Pick up the oldest call ringing one of the picker's groups.
    GroupPickup,
    /// Pick up a call ringing `extension` (as dialed, in the picker's
    /// domain).
    DirectedPickup {
        /// The extension dialed after the code.
        extension: &'a str,
    },
    /// Log the caller in or out of group `group` (as dialed).
    LoginToggle {
        /// The group number dialed after the code.
        group: &'a str,
    },
}

/// A number of the domain the codes are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialable<'a> {
    /// An extension's name (`test11`).
    Extension(&'a str),
    /// A ring group's number (`800`).
    RingGroup(&'a str),
}

impl Dialable<'_> {
    fn describe(&self) -> String {
        match self {
            Dialable::Extension(n) => format!("extension {n}"),
            Dialable::RingGroup(n) => format!("ring group {n}"),
        }
    }

    fn number(&self) -> &str {
        match self {
            Dialable::Extension(n) | Dialable::RingGroup(n) => n,
        }
    }
}

/// A code that does not hold: its key and why (the loader adds the file
/// and line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeError {
    /// `group_pickup`, `directed_pickup` or `login_toggle`.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

/// Whether a code is dialed exactly or as a prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Exact,
    Prefix,
}

impl FeatureCodes {
    /// The enabled codes: key, code, shape.
    fn codes(&self) -> impl Iterator<Item = (&'static str, &str, Shape)> {
        [
            ("group_pickup", self.group_pickup.as_str(), Shape::Exact),
            ("directed_pickup", self.directed_pickup.as_str(), Shape::Prefix),
            ("login_toggle", self.login_toggle.as_str(), Shape::Prefix),
        ]
        .into_iter()
        .filter(|(_, c, _)| !c.is_empty())
    }

    /// What `user` (a dialed Request-URI user part) asks for, if it is a
    /// feature code. A prefix code alone, or followed by more than
    /// [`MAX_TARGET`] bytes, is none.
    pub fn classify<'a>(&self, user: &'a str) -> Option<FeatureCode<'a>> {
        if !self.group_pickup.is_empty() && user == self.group_pickup {
            return Some(FeatureCode::GroupPickup);
        }
        let after = |code: &str| {
            let rest = user.strip_prefix(code).filter(|_| !code.is_empty())?;
            (!rest.is_empty() && rest.len() <= MAX_TARGET).then_some(rest)
        };
        if let Some(extension) = after(&self.directed_pickup) {
            return Some(FeatureCode::DirectedPickup { extension });
        }
        after(&self.login_toggle).map(|group| FeatureCode::LoginToggle { group })
    }

    /// Checks the codes against each other and against the domain's
    /// extension and group numbers; every problem is listed.
    pub fn check<'a>(&self, numbers: impl IntoIterator<Item = Dialable<'a>>) -> Vec<CodeError> {
        let mut errors = Vec::new();
        let codes: Vec<_> = self.codes().collect();
        for &(key, code, _) in &codes {
            if let Err(reason) = well_formed(code) {
                errors.push(CodeError { key, reason });
            }
        }
        for (i, &(key, code, shape)) in codes.iter().enumerate() {
            for &(other_key, other, other_shape) in &codes[..i] {
                if let Some(reason) = ambiguous((code, shape), (other, other_shape), other_key) {
                    errors.push(CodeError { key, reason });
                }
            }
        }
        for n in numbers {
            for &(key, code, shape) in &codes {
                let clash = match shape {
                    Shape::Exact => n.number() == code,
                    Shape::Prefix => n.number().starts_with(code),
                };
                if clash {
                    let what = if shape == Shape::Exact { "is" } else { "starts with" };
                    let reason =
                        format!("{code:?} clashes with {} ({what} the code)", n.describe());
                    errors.push(CodeError { key, reason });
                }
            }
        }
        errors
    }
}

/// Digits and `*`, starting with `*`, at most [`MAX_CODE`] bytes.
fn well_formed(code: &str) -> Result<(), String> {
    if code.len() > MAX_CODE {
        return Err(format!("{code:?} is longer than {MAX_CODE} characters"));
    }
    if !code.starts_with('*') {
        return Err(format!("{code:?} must start with '*' (so no dialed number is taken for it)"));
    }
    if !code.bytes().all(|b| b.is_ascii_digit() || b == b'*') {
        return Err(format!(
            "{code:?} may hold only digits and '*' ('#' reaches the switch as %23)"
        ));
    }
    Ok(())
}

/// Why two codes make a dialed string ambiguous, if they do: equal codes,
/// an exact code that a prefix code starts, or two prefixes one of which
/// starts the other.
fn ambiguous(a: (&str, Shape), b: (&str, Shape), b_key: &str) -> Option<String> {
    let ((code, shape), (other, other_shape)) = (a, b);
    let clash = match (shape, other_shape) {
        (Shape::Exact, Shape::Exact) => code == other,
        (Shape::Exact, Shape::Prefix) => code.starts_with(other),
        (Shape::Prefix, Shape::Exact) => other.starts_with(code),
        (Shape::Prefix, Shape::Prefix) => code.starts_with(other) || other.starts_with(code),
    };
    clash.then(|| {
        format!("{code:?} clashes with {b_key} {other:?}: a dialed string would match both")
    })
}

/// Feature codes of every domain: the defaults, and the domains that set
/// their own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureCodeSettings {
    /// The codes of a domain that sets none.
    pub default: FeatureCodes,
    /// Per domain (by its name), replacing the defaults there.
    pub per_domain: BTreeMap<String, FeatureCodes>,
}

impl FeatureCodeSettings {
    /// The codes of `domain`.
    pub fn for_domain(&self, domain: &str) -> &FeatureCodes {
        self.per_domain.get(domain).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_dialed_user_parts() {
        let c = FeatureCodes::default();
        assert_eq!(c.classify("*8"), Some(FeatureCode::GroupPickup));
        assert_eq!(
            c.classify("**test12"),
            Some(FeatureCode::DirectedPickup { extension: "test12" })
        );
        assert_eq!(c.classify("*45800"), Some(FeatureCode::LoginToggle { group: "800" }));
        for none in ["*80", "*", "**", "*45", "test11", "800", "+15551234567", ""] {
            assert_eq!(c.classify(none), None, "{none}");
        }
        let long = format!("**{}", "1".repeat(MAX_TARGET + 1));
        assert_eq!(c.classify(&long), None);
        let off = FeatureCodes { group_pickup: String::new(), login_toggle: String::new(), ..c };
        assert_eq!(off.classify("*8"), None);
        assert_eq!(off.classify("*45800"), None);
        assert_eq!(off.classify(""), None);
        assert_eq!(off.classify("**1"), Some(FeatureCode::DirectedPickup { extension: "1" }));
    }

    #[test]
    fn defaults_clash_with_nothing_usual() {
        let c = FeatureCodes::default();
        let numbers = [Dialable::Extension("test11"), Dialable::RingGroup("800")];
        assert_eq!(c.check(numbers), vec![]);
    }

    #[test]
    fn clashes_between_codes_and_with_numbers() {
        let keys = |errs: Vec<CodeError>| errs.into_iter().map(|e| e.key).collect::<Vec<_>>();
        // An exact code a prefix starts; two prefixes, one starting the other.
        let c = FeatureCodes {
            group_pickup: "*45".into(),
            directed_pickup: "*4".into(),
            login_toggle: "*45".into(),
        };
        let errs = c.check([]);
        assert_eq!(keys(errs.clone()), ["directed_pickup", "login_toggle", "login_toggle"]);
        assert!(errs[0].reason.contains("group_pickup \"*45\""), "{}", errs[0].reason);
        // Numbers equal to the exact code, or starting with a prefix.
        let c = FeatureCodes::default();
        let errs = c.check([
            Dialable::Extension("*8"),
            Dialable::RingGroup("**1"),
            Dialable::RingGroup("*45"),
            Dialable::Extension("*81"),
        ]);
        assert_eq!(keys(errs.clone()), ["group_pickup", "directed_pickup", "login_toggle"]);
        assert_eq!(errs[1].reason, "\"**\" clashes with ring group **1 (starts with the code)");
        assert_eq!(errs[0].reason, "\"*8\" clashes with extension *8 (is the code)");
    }

    #[test]
    fn malformed_codes() {
        let c = FeatureCodes {
            group_pickup: "8".into(),
            directed_pickup: "*#".into(),
            login_toggle: format!("*{}", "4".repeat(MAX_CODE)),
        };
        let errs = c.check([]);
        assert_eq!(errs.len(), 3);
        assert!(errs[0].reason.contains("must start with '*'"));
        assert!(errs[1].reason.contains("only digits and '*'"));
        assert!(errs[2].reason.contains("longer than 16"));
    }

    #[test]
    fn per_domain_codes_and_their_config_table() {
        let table: FeatureCodes = toml::from_str("group_pickup = \"*9\"").unwrap();
        assert_eq!(table, FeatureCodes { group_pickup: "*9".into(), ..FeatureCodes::default() });
        let off: FeatureCodes = toml::from_str("login_toggle = \"\"").unwrap();
        assert_eq!(off.classify("*45800"), None);
        assert!(toml::from_str::<FeatureCodes>("pickup = \"*8\"").is_err());
        let mut s = FeatureCodeSettings::default();
        s.per_domain.insert("example.com".into(), table);
        assert_eq!(s.for_domain("example.com").classify("*9"), Some(FeatureCode::GroupPickup));
        assert_eq!(s.for_domain("test").classify("*9"), None);
        assert_eq!(s.for_domain("test").classify("*8"), Some(FeatureCode::GroupPickup));
    }
}
