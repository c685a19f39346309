//! The account directory: customers, SIP domains (with aliases) and
//! extensions, held in memory and looked up by the registrar.
//!
//! Extensions keep password hashes only (HA1 for MD5 and SHA-256, realm =
//! domain name); [`extension_with_password`] makes one from a plain password.

use records::{Customer, Domain, Extension};
use sip_message::digest::{ha1, Algorithm};
use std::collections::HashMap;

/// An immutable directory of customers, domains and extensions.
///
/// Host names and domain names compare case-insensitively; extension names
/// (SIP user parts) are case-sensitive. When two domains claim the same host
/// name, or two extensions the same `name@domain`, the first one wins.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    customers: Vec<Customer>,
    api_keys: HashMap<String, usize>,
    domains: Vec<Domain>,
    /// Lower-case host name (domain name or alias) -> index in `domains`.
    hosts: HashMap<String, usize>,
    /// (index in `domains`, extension name) -> extension.
    extensions: HashMap<(usize, String), Extension>,
}

impl Accounts {
    /// Builds the directory. Extensions whose domain is not in `domains` are
    /// ignored; empty API keys are ignored.
    pub fn new(
        customers: Vec<Customer>,
        domains: Vec<Domain>,
        extensions: Vec<Extension>,
    ) -> Accounts {
        let mut api_keys = HashMap::new();
        for (i, c) in customers.iter().enumerate() {
            for k in c.api_keys.iter().filter(|k| !k.is_empty()) {
                api_keys.entry(k.clone()).or_insert(i);
            }
        }
        let mut hosts = HashMap::new();
        for (i, d) in domains.iter().enumerate() {
            for h in std::iter::once(&d.name).chain(d.aliases.iter()) {
                if !h.is_empty() {
                    hosts.entry(h.to_ascii_lowercase()).or_insert(i);
                }
            }
        }
        let mut map = HashMap::new();
        for e in extensions {
            if let Some(&di) = hosts.get(&e.domain.to_ascii_lowercase()) {
                map.entry((di, e.name.clone())).or_insert(e);
            }
        }
        Accounts { customers, api_keys, domains, hosts, extensions: map }
    }

    fn domain_index(&self, host: &str) -> Option<usize> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(&host.to_ascii_lowercase()).copied()
        } else {
            self.hosts.get(host).copied()
        }
    }

    /// The domain served under `host` (its name or an alias,
    /// case-insensitive, a trailing dot ignored).
    pub fn domain_for_host(&self, host: &str) -> Option<&Domain> {
        self.domain_index(host).and_then(|i| self.domains.get(i))
    }

    /// Extension `name` of the domain called (or aliased) `domain`.
    pub fn extension(&self, name: &str, domain: &str) -> Option<&Extension> {
        let di = self.domain_index(domain)?;
        self.extensions.get(&(di, name.to_owned()))
    }

    /// The extension of address-of-record `name@domain`.
    pub fn extension_of(&self, aor: &str) -> Option<&Extension> {
        let (name, domain) = aor.split_once('@')?;
        self.extension(name, domain)
    }

    /// The customer owning API key `key`.
    pub fn customer_by_api_key(&self, key: &str) -> Option<&Customer> {
        self.api_keys.get(key).and_then(|&i| self.customers.get(i))
    }

    /// Every domain.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Every customer.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// Every extension (in no particular order).
    pub fn extensions(&self) -> impl Iterator<Item = &Extension> + '_ {
        self.extensions.values()
    }
}

/// HA1 for MD5: lowercase hex of `MD5(user ":" realm ":" password)`.
pub fn ha1_md5(user: &str, realm: &str, password: &str) -> String {
    ha1(Algorithm::Md5, user, realm, password)
}

/// HA1 for SHA-256: lowercase hex of `SHA-256(user ":" realm ":" password)`.
pub fn ha1_sha256(user: &str, realm: &str, password: &str) -> String {
    ha1(Algorithm::Sha256, user, realm, password)
}

/// An [`Extension`] `name@domain` from a plain password: both HA1s are
/// computed with realm = `domain`, and the password is not kept.
pub fn extension_with_password(name: &str, domain: &str, password: &str) -> Extension {
    Extension {
        name: name.to_owned(),
        domain: domain.to_owned(),
        ha1_md5: ha1_md5(name, domain, password),
        ha1_sha256: ha1_sha256(name, domain, password),
        display_name: String::new(),
        handling: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn dir() -> Accounts {
        let cid = Uuid::from_u128(7);
        Accounts::new(
            vec![Customer { id: cid, name: "acme".into(), api_keys: vec!["k1".into(), "".into()] }],
            vec![
                Domain {
                    name: "test".into(),
                    aliases: vec!["Sip.Example.COM".into()],
                    customer_id: cid,
                },
                Domain {
                    name: "other".into(),
                    aliases: vec!["sip.example.com".into()],
                    customer_id: cid,
                },
            ],
            vec![
                extension_with_password("test11", "test", "pw"),
                extension_with_password("x", "nowhere", "pw"),
            ],
        )
    }

    #[test]
    fn lookups() {
        let a = dir();
        assert_eq!(a.domain_for_host("TEST").map(|d| d.name.as_str()), Some("test"));
        assert_eq!(a.domain_for_host("sip.example.com.").map(|d| d.name.as_str()), Some("test"));
        assert!(a.domain_for_host("example.com").is_none());
        assert!(a.extension("test11", "test").is_some());
        assert!(a.extension("test11", "SIP.example.com").is_some());
        assert!(a.extension("TEST11", "test").is_none());
        assert!(a.extension("x", "nowhere").is_none());
        assert_eq!(a.customer_by_api_key("k1").map(|c| c.name.as_str()), Some("acme"));
        assert!(a.customer_by_api_key("").is_none());
        assert_eq!(a.extensions().count(), 1);
    }

    #[test]
    fn ha1_values() {
        // RFC 2617 3.5 example HA1, and the RFC 7616 3.9.1 credentials.
        assert_eq!(
            ha1_md5("Mufasa", "testrealm@host.com", "Circle Of Life"),
            "939e7578ed9e3c518a452acee763bce9"
        );
        assert_eq!(
            ha1_sha256("Mufasa", "http-auth@example.org", "Circle of Life"),
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
        let e = extension_with_password("test11", "test", "secret");
        assert_eq!(e.ha1_md5.len(), 32);
        assert_eq!(e.ha1_sha256.len(), 64);
        assert_eq!(e.ha1_md5, ha1_md5("test11", "test", "secret"));
        assert_eq!(e.aor(), "test11@test");
    }
}
