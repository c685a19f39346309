//! # provisioning: what a valid extension or ring group is
//!
//! One rule set for the phone accounts ([`Extension`]) and ring groups
//! ([`RingGroup`]) of the switch, whoever provisions them: the config loader
//! checks `[[extensions]]` and `[[groups]]` with it (and reports
//! `file:line: key: reason`), the REST API checks a request with it (a 400
//! naming the field), and the switch core checks every command that puts an
//! extension or a ring group with it before applying it. An [`Invalid`]
//! carries the field and one reason text, the same for all three.
//!
//! What exists already (domains and their owners, extensions, ring groups)
//! is asked through [`Known`], which each caller answers from what it holds:
//! the config file, the store, the switch's own tables. [`Listed`] answers
//! from plain lists.
//!
//! It is a crate of its own, not part of `records`, because the rules need
//! the SIP URI parser (`sip-message`), which the plain data of `records` (read
//! by the store and the API) has no business depending on. It never does
//! I/O, never reads a clock and never changes what it checks.
//!
//! ## The rules
//!
//! - An extension's name is 1..64 of letters, digits, `. _ - + ~`; its
//!   domain is served; its display name is at most [`MAX_TEXT`] bytes.
//! - `max_calls` is 1..=[`MAX_CALLS`] (left out: no limit).
//!   `forward_noanswer_secs` needs `forward_noanswer` and is
//!   1..=[`MAX_NOANSWER_SECS`].
//! - A forward goes to a [destination](#destinations), not to the extension
//!   itself, and when it is an `endpoint`, to an extension that exists: a
//!   forward replaces the extension's own ringing, so a typo would lose
//!   every call it forwards.
//! - A ring group's number is 1..32 of letters, digits, `* # + . _ -`, not
//!   taken by another group of its domain ([`Fault::Taken`]); its domain is
//!   served and its owner's; 1..=[`MAX_DESTINATIONS`] destinations, each
//!   with a ring timeout of 1..=[`MAX_RING_TIMEOUT_SECS`] and a delay of
//!   0..=[`MAX_DELAY_SECS`] when given; `max_ring_secs` 1..=[`MAX_RING_SECS`].
//!
//! ### Destinations
//!
//! What a ring group, a click-to-call or a forward may ring: an `endpoint`
//! `name@domain` in one of the owner's domains (it may be provisioned later:
//! until it registers it is not rung); a `tel` E.164 number ([`is_e164`]); a
//! `sip` URI that parses (`sip:` may be left out); a `groupcall`: an
//! existing ring group of the owner, by number in the domain, by
//! `number@domain`, or by id.
//!
//! Main types: [`Known`], [`Listed`], [`Invalid`]; the checks
//! [`check_extension`], [`check_ring_group`], [`check_destinations`].
#![deny(missing_docs)]

use records::{Address, AddressType, Domain, Extension, RingGroup, RingGroupDestination};
use std::fmt;
use uuid::Uuid;

/// Most concurrent calls an extension may be limited to.
pub const MAX_CALLS: u32 = 1000;
/// Longest `forward_noanswer_secs`.
pub const MAX_NOANSWER_SECS: u64 = 3600;
/// Longest ring timeout of a destination.
pub const MAX_RING_TIMEOUT_SECS: u64 = 3600;
/// Longest delay of a destination (staggered ringing).
pub const MAX_DELAY_SECS: u64 = 3600;
/// Longest `max_ring_secs` of a ring group (a day).
pub const MAX_RING_SECS: u64 = 86_400;
/// Most destinations of a ring group or a click-to-call.
pub const MAX_DESTINATIONS: usize = 64;
/// Longest display name, bytes.
pub const MAX_TEXT: usize = 1024;

/// What exists already, as the caller of a check knows it.
pub trait Known {
    /// The customer owning SIP domain `domain` (its name or an alias, any
    /// case); `None` when it is not served.
    fn domain_owner(&self, domain: &str) -> Option<Uuid>;
    /// Whether extension `name` of `domain` exists.
    fn has_extension(&self, name: &str, domain: &str) -> bool;
    /// The ring group `key` names, seen from `domain`: its number in
    /// `domain`, `number@domain`, or its id.
    fn ring_group(&self, key: &str, domain: &str) -> Option<&RingGroup>;
}

/// [`Known`] over plain lists (the config file's, or the store's).
#[derive(Clone, Copy, Debug)]
pub struct Listed<'a> {
    /// The served domains.
    pub domains: &'a [Domain],
    /// The extensions.
    pub extensions: &'a [Extension],
    /// The ring groups.
    pub ring_groups: &'a [RingGroup],
}

impl Known for Listed<'_> {
    fn domain_owner(&self, domain: &str) -> Option<Uuid> {
        let named = |d: &&Domain| {
            d.name.eq_ignore_ascii_case(domain)
                || d.aliases.iter().any(|a| a.eq_ignore_ascii_case(domain))
        };
        self.domains.iter().find(named).map(|d| d.customer_id)
    }

    fn has_extension(&self, name: &str, domain: &str) -> bool {
        self.extensions.iter().any(|e| e.name == name && e.domain.eq_ignore_ascii_case(domain))
    }

    fn ring_group(&self, key: &str, domain: &str) -> Option<&RingGroup> {
        let numbered = |n: &str, d: &str| {
            self.ring_groups.iter().find(|g| g.number == n && g.domain.eq_ignore_ascii_case(d))
        };
        numbered(key, domain)
            .or_else(|| key.split_once('@').and_then(|(n, d)| numbered(n, d)))
            .or_else(|| {
                let id = Uuid::parse_str(key).ok()?;
                self.ring_groups.iter().find(|g| g.id == id)
            })
    }
}

/// What kind of rule an [`Invalid`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A value is out of range, malformed, or names nothing that can be rung.
    Value,
    /// The ring group's number is another group's in the same domain.
    Taken,
}

/// A rule broken: which field, why, and what kind of rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The record's top-level field at fault (`max_calls`, `destinations`):
    /// a config file's line is found by it.
    pub key: &'static str,
    /// The field's path (`destinations[1].delay_secs`); `key` itself for a
    /// top-level field.
    pub field: String,
    /// Why, in words (the same text for the config file and the API).
    pub reason: String,
    /// What kind of rule.
    pub fault: Fault,
}

impl Invalid {
    fn value(key: &'static str, reason: impl Into<String>) -> Invalid {
        Invalid { key, field: key.to_owned(), reason: reason.into(), fault: Fault::Value }
    }

    fn at(key: &'static str, field: String, reason: impl Into<String>) -> Invalid {
        Invalid { key, field, reason: reason.into(), fault: Fault::Value }
    }
}

/// `field: reason`.
impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// `true` for an E.164 number: `+` and 2 to 15 digits.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else { return false };
    (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
}

/// `true` for an extension name (a SIP user part): 1..64 of letters,
/// digits, `. _ - + ~`.
pub fn is_extension_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
}

/// `true` for a ring group number: 1..32 of letters, digits, `* # + . _ -`.
pub fn is_group_number(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"*#+._-".contains(&b))
}

/// Checks an extension against the rules (see the crate documentation).
pub fn check_extension(e: &Extension, known: &dyn Known) -> Result<(), Invalid> {
    if !is_extension_name(&e.name) {
        return Err(Invalid::value("name", "1..64 of letters, digits, . _ - + ~"));
    }
    let Some(owner) = known.domain_owner(&e.domain) else {
        return Err(Invalid::value("domain", not_served(&e.domain)));
    };
    if e.display_name.len() > MAX_TEXT {
        return Err(Invalid::value("display_name", format!("at most {MAX_TEXT} bytes")));
    }
    let h = &e.handling;
    match h.max_calls {
        Some(0) => {
            return Err(Invalid::value(
                "max_calls",
                "must be at least 1 (leave it out for no limit)",
            ))
        }
        Some(n) if n > MAX_CALLS => {
            return Err(Invalid::value(
                "max_calls",
                format!("must be at most {MAX_CALLS} (leave it out for no limit)"),
            ))
        }
        _ => {}
    }
    if let Some(s) = h.forward_noanswer_secs {
        if h.forward_noanswer.is_none() {
            return Err(Invalid::value("forward_noanswer_secs", "set without forward_noanswer"));
        }
        if !(1..=MAX_NOANSWER_SECS).contains(&s) {
            let why = format!("must be 1..={MAX_NOANSWER_SECS}");
            return Err(Invalid::value("forward_noanswer_secs", why));
        }
    }
    let forwards = [
        ("forward_always", &h.forward_always),
        ("forward_busy", &h.forward_busy),
        ("forward_noanswer", &h.forward_noanswer),
    ];
    let from = Home { owner, domain: &e.domain };
    for (key, to) in forwards {
        if let Some(to) = to {
            forward_target(to, &e.aor(), from, known).map_err(|why| Invalid::value(key, why))?;
        }
    }
    Ok(())
}

/// Checks a ring group against the rules (see the crate documentation):
/// [`Fault::Taken`] when another group of its domain has its number.
pub fn check_ring_group(g: &RingGroup, known: &dyn Known) -> Result<(), Invalid> {
    if !is_group_number(&g.number) {
        return Err(Invalid::value("number", "1..32 of letters, digits, * # + . _ -"));
    }
    match known.domain_owner(&g.domain) {
        None => return Err(Invalid::value("domain", not_served(&g.domain))),
        Some(owner) if owner != g.customer_id => {
            let why = format!("{:?} is not a domain of the group's owner", g.domain);
            return Err(Invalid::value("domain", why));
        }
        Some(_) => {}
    }
    check_destinations(&g.destinations, Home { owner: g.customer_id, domain: &g.domain }, known)?;
    if g.max_ring_secs.is_some_and(|s| !(1..=MAX_RING_SECS).contains(&s)) {
        return Err(Invalid::value("max_ring_secs", format!("must be 1..={MAX_RING_SECS}")));
    }
    match known.ring_group(&g.number, &g.domain) {
        Some(other) if other.id != g.id => Err(Invalid {
            key: "number",
            field: "number".into(),
            reason: format!("ring group {}@{} exists already", g.number, g.domain),
            fault: Fault::Taken,
        }),
        _ => Ok(()),
    }
}

/// Whose destinations are checked, and from which domain: the owner's
/// domains hold its `endpoint` destinations, and a `groupcall` number is
/// looked up in `domain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Home<'a> {
    /// The customer owning the group, extension or call.
    pub owner: Uuid,
    /// The SIP domain it belongs to.
    pub domain: &'a str,
}

/// Checks the destinations of a ring group or a click-to-call: their
/// number, each target (see "Destinations" in the crate documentation), ring
/// timeouts and delays.
pub fn check_destinations(
    dests: &[RingGroupDestination],
    from: Home<'_>,
    known: &dyn Known,
) -> Result<(), Invalid> {
    if dests.is_empty() {
        return Err(Invalid::value("destinations", "at least one destination is needed"));
    }
    if dests.len() > MAX_DESTINATIONS {
        let why = format!("at most {MAX_DESTINATIONS} destinations");
        return Err(Invalid::value("destinations", why));
    }
    for (i, d) in dests.iter().enumerate() {
        let at = |field: &str| format!("destinations[{i}].{field}");
        destination_target(d.kind, d.target.trim(), from, known)
            .map_err(|why| Invalid::at("destinations", at("target"), why))?;
        if d.ring_timeout_secs.is_some_and(|t| !(1..=MAX_RING_TIMEOUT_SECS).contains(&t)) {
            let why = format!("must be 1..={MAX_RING_TIMEOUT_SECS}");
            return Err(Invalid::at("destinations", at("ring_timeout_secs"), why));
        }
        if d.delay_secs.is_some_and(|s| s > MAX_DELAY_SECS) {
            let why = format!("must be 0..={MAX_DELAY_SECS}");
            return Err(Invalid::at("destinations", at("delay_secs"), why));
        }
    }
    Ok(())
}

/// `true` when `target` is `name@domain` in one of `owner`'s domains (the
/// extension need not exist).
pub fn is_endpoint_of(target: &str, owner: Uuid, known: &dyn Known) -> bool {
    target
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && known.domain_owner(domain) == Some(owner))
}

fn not_served(domain: &str) -> String {
    format!("{domain:?} is not a domain of this switch")
}

/// A destination's target `t` (trimmed): the reason it cannot be rung.
fn destination_target(
    kind: AddressType,
    t: &str,
    from: Home<'_>,
    known: &dyn Known,
) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty".into());
    }
    let ok = match kind {
        AddressType::Endpoint => is_endpoint_of(t, from.owner, known),
        AddressType::Tel => is_e164(t),
        AddressType::Sip => {
            let uri = if t.contains(':') { t.to_owned() } else { format!("sip:{t}") };
            sip_message::Uri::parse(uri.as_bytes()).is_ok()
        }
        AddressType::Groupcall => {
            known.ring_group(t, from.domain).is_some_and(|g| g.customer_id == from.owner)
        }
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        AddressType::Endpoint => format!("{t:?} is not name@domain in one of the owner's domains"),
        AddressType::Tel => format!("{t:?} is not an E.164 number (+ and digits)"),
        AddressType::Sip => format!("{t:?} is not a SIP URI"),
        AddressType::Groupcall => {
            format!("{t:?} is not a [[groups]] number in {}, nor a ring group's id", from.domain)
        }
    })
}

/// A forward of extension `aor`: a destination, not `aor` itself, and an
/// extension that exists when it is an `endpoint`.
fn forward_target(
    to: &Address,
    aor: &str,
    from: Home<'_>,
    known: &dyn Known,
) -> Result<(), String> {
    let t = to.target.trim();
    if to.kind != AddressType::Endpoint {
        return destination_target(to.kind, t, from, known);
    }
    if t.eq_ignore_ascii_case(aor) {
        return Err("forwards to itself".into());
    }
    let (user, domain) = t.split_once('@').unwrap_or((t, ""));
    if !known.has_extension(user, domain) {
        return Err(format!("{t:?} is not an extension (write name@domain)"));
    }
    destination_target(to.kind, t, from, known)
}

#[cfg(test)]
mod tests;
