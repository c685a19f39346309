//! # routing: where a call goes
//!
//! Pure decisions, no I/O: given who is calling (an authenticated extension,
//! a carrier recognised by its source address, or nobody known) and the
//! Request-URI user, the [`RouteTable`] answers an extension, a ring group, a
//! list of carrier targets for an E.164 number, or a refusal. It also holds
//! the ring groups (`[[groups]]`) that the fork engine expands, and the
//! carriers' failover order (`[[routes]]`: longest prefix, then priority).
//!
//! Carrier addresses are IP:port here; DNS (RFC 3263) belongs to the I/O
//! shell that resolves a [`CarrierTarget`] before dialing.
#![deny(missing_docs)]

use ipnet::IpNet;
use provisioning::is_e164;
use records::RingGroup;
use serde::Deserialize;
use sip_message::Transport;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// `[[carriers]]`: a trunk to (and from) the PSTN.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    /// Name used by routes.
    pub name: String,
    /// Where to send calls: `IP:port`, or a DNS name (`sip.carrier.example`
    /// or `sip.carrier.example:5060`) that the server resolves (RFC 3263)
    /// at start and every few minutes.
    pub address: String,
    /// `udp` or `tcp`.
    #[serde(default = "udp")]
    pub transport: String,
    /// Leading characters removed from the number before sending (`+`).
    #[serde(default)]
    pub strip: String,
    /// Prepended after stripping (`00`).
    #[serde(default)]
    pub prefix: String,
    /// Host part of the Request-URI sent to the carrier (default: its IP).
    #[serde(default)]
    pub domain: String,
    /// Extra headers on every INVITE to this carrier.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Digest credentials to answer the carrier's 401/407.
    #[serde(default)]
    pub username: String,
    /// Password for `username`.
    #[serde(default)]
    pub password: String,
    /// Source networks its inbound calls come from (`192.0.2.0/24`).
    #[serde(default)]
    pub inbound_sources: Vec<IpNet>,
    /// SIP domain whose extensions and groups inbound calls from this carrier
    /// are routed in.
    #[serde(default)]
    pub inbound_domain: String,
}

impl Carrier {
    /// Host and port of `address` (`host`, `host:port`, `IP:port`).
    pub fn host_port(&self) -> (String, Option<u16>) {
        if let Ok(a) = self.address.parse::<SocketAddr>() {
            return (a.ip().to_string(), Some(a.port()));
        }
        match self.address.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()),
            None => (self.address.clone(), None),
        }
    }
}

fn udp() -> String {
    "udp".into()
}

/// `[[routes]]`: numbers starting with `prefix` go to `carriers`, in order.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// E.164 prefix including `+` (`+1`, `+4420`); empty matches everything.
    #[serde(default)]
    pub prefix: String,
    /// Carrier names in priority order (failover order).
    pub carriers: Vec<String>,
}

/// Who is calling, as established by the server (digest auth or source IP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An extension that passed digest authentication.
    Extension {
        /// `name@domain`.
        aor: String,
        /// Its domain.
        domain: String,
    },
    /// A configured carrier, recognised by source address.
    Carrier {
        /// Carrier name.
        name: String,
    },
    /// Nobody we know: must authenticate first.
    Unknown,
}

/// Where a carrier call goes: the Request-URI and the next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierTarget {
    /// Carrier name.
    pub carrier: String,
    /// Request-URI (`sip:0015551234567@carrier`).
    pub request_uri: String,
    /// Next hop (resolved).
    pub address: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Credentials for the carrier's challenge (empty: none).
    pub username: String,
    /// Password.
    pub password: String,
}

/// The routing decision for an inbound INVITE.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Ring every registered contact of this AOR.
    Extension {
        /// `name@domain`.
        aor: String,
    },
    /// Ring this group.
    Group(Box<RingGroup>),
    /// An E.164 number to carriers, in failover order.
    Tel {
        /// The number as dialed (`+15551234567`).
        number: String,
        /// Carriers in order.
        targets: Vec<CarrierTarget>,
    },
    /// 404: no such extension, group or route.
    NotFound,
    /// 403: not allowed (a carrier calling out to the PSTN, no toll fraud).
    Forbidden,
    /// 407: authenticate first.
    AuthRequired,
}

/// Carriers, routes and groups.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    carriers: Vec<Carrier>,
    /// Current address of each carrier (IP literals at once, DNS names
    /// once resolved).
    resolved: HashMap<String, SocketAddr>,
    routes: Vec<Route>,
    groups: Vec<RingGroup>,
    by_number: HashMap<(String, String), usize>,
    by_id: HashMap<Uuid, usize>,
}

/// A problem in the routing configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    /// `carriers`, `routes` or `groups`.
    pub table: &'static str,
    /// The field.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl RouteTable {
    /// Builds and checks the table: routes name existing carriers, group
    /// numbers are unique per domain, carrier transports are known.
    pub fn new(
        carriers: Vec<Carrier>,
        mut routes: Vec<Route>,
        groups: Vec<RingGroup>,
    ) -> Result<Self, RouteError> {
        let mut resolved = HashMap::new();
        for c in &carriers {
            match c.address.parse::<SocketAddr>() {
                Ok(a) => {
                    resolved.insert(c.name.clone(), a);
                }
                Err(_) => {
                    let (host, port) = c.host_port();
                    let ok_host = !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !ok_host || (c.address.contains(':') && port.is_none()) {
                        return Err(RouteError {
                            table: "carriers",
                            key: "address",
                            reason: format!(
                                "carrier {:?}: address {:?} is neither IP:port nor host[:port]",
                                c.name, c.address
                            ),
                        });
                    }
                }
            }
            // WebSocket is for browsers that connect in: a carrier is dialled.
            let dialable = matches!(
                Transport::from_token(c.transport.as_bytes()),
                Some(Transport::Udp | Transport::Tcp | Transport::Tls)
            );
            if !dialable {
                return Err(RouteError {
                    table: "carriers",
                    key: "transport",
                    reason: format!("carrier {:?}: transport must be udp, tcp or tls", c.name),
                });
            }
        }
        for r in &routes {
            if !(r.prefix.is_empty() || r.prefix.starts_with('+')) {
                return Err(RouteError {
                    table: "routes",
                    key: "prefix",
                    reason: format!("prefix {:?} must start with + (E.164)", r.prefix),
                });
            }
            if r.carriers.is_empty() {
                return Err(RouteError {
                    table: "routes",
                    key: "carriers",
                    reason: format!("route {:?} has no carriers", r.prefix),
                });
            }
            for name in &r.carriers {
                if !carriers.iter().any(|c| &c.name == name) {
                    return Err(RouteError {
                        table: "routes",
                        key: "carriers",
                        reason: format!("route {:?} names unknown carrier {name:?}", r.prefix),
                    });
                }
            }
        }
        // Longest prefix first.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let (by_number, by_id) = index(&groups)?;
        Ok(RouteTable { carriers, resolved, routes, groups, by_number, by_id })
    }

    /// Adds a ring group, or replaces the one with its id: `Err` when its
    /// number is another group's in its domain.
    pub fn put_group(&mut self, group: RingGroup) -> Result<(), RouteError> {
        let mut groups: Vec<RingGroup> =
            self.groups.iter().filter(|g| g.id != group.id).cloned().collect();
        groups.push(group);
        self.set_groups(groups)
    }

    /// Removes the ring group with this id; `false` when there is none.
    pub fn remove_group(&mut self, id: Uuid) -> bool {
        let groups: Vec<RingGroup> = self.groups.iter().filter(|g| g.id != id).cloned().collect();
        groups.len() != self.groups.len() && self.set_groups(groups).is_ok()
    }

    /// Replaces every ring group (another cluster node changed them); `Err`
    /// and nothing changes when a number is used twice in a domain.
    pub fn set_groups(&mut self, groups: Vec<RingGroup>) -> Result<(), RouteError> {
        (self.by_number, self.by_id) = index(&groups)?;
        self.groups = groups;
        Ok(())
    }

    /// The carrier whose inbound sources contain `ip`.
    pub fn carrier_for_source(&self, ip: IpAddr) -> Option<&Carrier> {
        self.carriers.iter().find(|c| c.inbound_sources.iter().any(|n| n.contains(&ip)))
    }

    /// Carriers whose address is a DNS name: (name, host, port, transport).
    pub fn carriers_to_resolve(&self) -> Vec<(String, String, Option<u16>, Transport)> {
        self.carriers
            .iter()
            .filter(|c| c.address.parse::<SocketAddr>().is_err())
            .map(|c| {
                let (h, p) = c.host_port();
                let t = Transport::from_token(c.transport.as_bytes()).unwrap_or(Transport::Udp);
                (c.name.clone(), h, p, t)
            })
            .collect()
    }

    /// Records where a DNS-named carrier currently is.
    pub fn set_carrier_address(&mut self, name: &str, addr: SocketAddr) {
        self.resolved.insert(name.to_owned(), addr);
    }

    /// A carrier by name.
    pub fn carrier(&self, name: &str) -> Option<&Carrier> {
        self.carriers.iter().find(|c| c.name == name)
    }

    /// A group by number in a domain, by `number@domain`, or by id (for
    /// nested destinations).
    pub fn group(&self, key: &str, domain: &str) -> Option<&RingGroup> {
        if let Some(i) = self.by_number.get(&(key.to_owned(), domain.to_ascii_lowercase())) {
            return self.groups.get(*i);
        }
        // A nested destination may name a group of any domain by number@domain.
        if let Some((num, dom)) = key.split_once('@') {
            if let Some(i) = self.by_number.get(&(num.to_owned(), dom.to_ascii_lowercase())) {
                return self.groups.get(*i);
            }
        }
        Uuid::parse_str(key)
            .ok()
            .and_then(|id| self.by_id.get(&id))
            .and_then(|i| self.groups.get(*i))
    }

    /// Carrier targets for an E.164 number: the longest matching prefix's
    /// carriers, in priority order, with each carrier's number rewriting.
    pub fn tel_targets(&self, number: &str) -> Vec<CarrierTarget> {
        let Some(route) = self.routes.iter().find(|r| number.starts_with(&r.prefix)) else {
            return Vec::new();
        };
        route
            .carriers
            .iter()
            .filter_map(|name| self.carrier(name))
            .filter_map(|c| self.resolved.get(&c.name).map(|a| (c, *a)))
            .map(|(c, address)| {
                let stripped = number.strip_prefix(c.strip.as_str()).unwrap_or(number);
                let host =
                    if c.domain.is_empty() { c.address.to_string() } else { c.domain.clone() };
                CarrierTarget {
                    carrier: c.name.clone(),
                    request_uri: format!("sip:{}{}@{}", c.prefix, stripped, host),
                    address,
                    transport: Transport::from_token(c.transport.as_bytes())
                        .unwrap_or(Transport::Udp),
                    headers: c.headers.clone(),
                    username: c.username.clone(),
                    password: c.password.clone(),
                }
            })
            .collect()
    }

    /// Routes an inbound call. `user` is the Request-URI user part;
    /// `extension_exists(name, domain)` asks the account directory.
    pub fn route(
        &self,
        caller: &Caller,
        user: &str,
        extension_exists: impl Fn(&str, &str) -> bool,
    ) -> Decision {
        let domain = match caller {
            Caller::Unknown => return Decision::AuthRequired,
            Caller::Extension { domain, .. } => domain.clone(),
            Caller::Carrier { name } => {
                self.carrier(name).map(|c| c.inbound_domain.clone()).unwrap_or_default()
            }
        };
        if let Some(g) = self.group(user, &domain) {
            return Decision::Group(Box::new(g.clone()));
        }
        if !domain.is_empty() && extension_exists(user, &domain) {
            return Decision::Extension { aor: format!("{user}@{domain}") };
        }
        if is_e164(user) {
            return match caller {
                // No open relay: only our own authenticated extensions reach
                // the PSTN.
                Caller::Carrier { .. } => Decision::Forbidden,
                _ => {
                    let targets = self.tel_targets(user);
                    if targets.is_empty() {
                        Decision::NotFound
                    } else {
                        Decision::Tel { number: user.to_owned(), targets }
                    }
                }
            };
        }
        Decision::NotFound
    }

    /// Every ring group.
    pub fn groups(&self) -> &[RingGroup] {
        &self.groups
    }
}

/// The indexes of `groups`: by `(number, lowercase domain)` and by id.
type Indexes = (HashMap<(String, String), usize>, HashMap<Uuid, usize>);

/// Indexes `groups`; `Err` when a number is used twice in a domain.
fn index(groups: &[RingGroup]) -> Result<Indexes, RouteError> {
    let mut by_number = HashMap::new();
    let mut by_id = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        if by_number.insert((g.number.clone(), g.domain.to_ascii_lowercase()), i).is_some() {
            return Err(RouteError {
                table: "groups",
                key: "number",
                reason: format!("group number {:?} used twice in domain {:?}", g.number, g.domain),
            });
        }
        by_id.insert(g.id, i);
    }
    Ok((by_number, by_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    use records::{AddressType, Origin, RingGroupDestination, RingMethod, Timestamp, NIL};

    #[derive(Deserialize)]
    struct Cfg {
        #[serde(default)]
        carriers: Vec<Carrier>,
        #[serde(default)]
        routes: Vec<Route>,
    }

    fn group_800() -> RingGroup {
        let dest = |kind, target: &str, ring_timeout_secs| RingGroupDestination {
            kind,
            target: target.into(),
            ring_timeout_secs,
            delay_secs: None,
        };
        RingGroup {
            id: records::config_id("800@test"),
            customer_id: NIL,
            number: "800".into(),
            domain: "test".into(),
            ring_method: RingMethod::Linear,
            answer_method: Default::default(),
            destinations: vec![
                dest(AddressType::Endpoint, "test11@test", Some(10)),
                dest(AddressType::Tel, "+15551234567", None),
            ],
            max_ring_secs: None,
            skip_busy: false,
            send_reason: true,
            origin: Origin::Config,
            tm_create: Timestamp::NOT_YET,
            tm_update: Timestamp::NOT_YET,
            tm_delete: Timestamp::NOT_YET,
        }
    }

    fn table() -> RouteTable {
        let c: Cfg = toml::from_str(
            r#"
            [[carriers]]
            name = "a"
            address = "192.0.2.10:5060"
            strip = "+"
            prefix = "00"
            inbound_sources = ["192.0.2.0/24"]
            inbound_domain = "test"
            [[carriers]]
            name = "b"
            address = "192.0.2.20:5060"
            transport = "tcp"
            [[routes]]
            prefix = "+1"
            carriers = ["a", "b"]
            [[routes]]
            prefix = "+1555"
            carriers = ["b"]
            "#,
        )
        .expect("toml");
        RouteTable::new(c.carriers, c.routes, vec![group_800()]).expect("table")
    }

    #[test]
    fn decisions() {
        let t = table();
        let ext = Caller::Extension { aor: "test12@test".into(), domain: "test".into() };
        let exists = |n: &str, d: &str| n == "test11" && d == "test";
        assert_eq!(
            t.route(&ext, "test11", exists),
            Decision::Extension { aor: "test11@test".into() }
        );
        assert!(matches!(t.route(&ext, "800", exists), Decision::Group(g) if g.number == "800"));
        assert_eq!(t.route(&ext, "999", exists), Decision::NotFound);
        assert_eq!(t.route(&Caller::Unknown, "test11", exists), Decision::AuthRequired);
        let carrier = Caller::Carrier { name: "a".into() };
        assert_eq!(
            t.route(&carrier, "test11", exists),
            Decision::Extension { aor: "test11@test".into() }
        );
        assert_eq!(t.route(&carrier, "+15551234567", exists), Decision::Forbidden);
        match t.route(&ext, "+12125550000", exists) {
            Decision::Tel { targets, .. } => {
                assert_eq!(targets.len(), 2);
                assert_eq!(targets[0].request_uri, "sip:0012125550000@192.0.2.10:5060");
                assert_eq!(targets[1].transport, Transport::Tcp);
            }
            d => panic!("{d:?}"),
        }
        // Longest prefix wins.
        match t.route(&ext, "+15551234567", exists) {
            Decision::Tel { targets, .. } => assert_eq!(targets[0].carrier, "b"),
            d => panic!("{d:?}"),
        }
        assert_eq!(t.route(&ext, "+4420123456", exists), Decision::NotFound);
    }

    #[test]
    fn carrier_by_source_and_groups() {
        let t = table();
        assert_eq!(
            t.carrier_for_source("192.0.2.77".parse().expect("ip")).map(|c| c.name.as_str()),
            Some("a")
        );
        assert!(t.carrier_for_source("198.51.100.1".parse().expect("ip")).is_none());
        let g = t.group("800", "TEST").expect("group");
        assert_eq!(t.group(&g.id.to_string(), "other").map(|g| g.number.as_str()), Some("800"));
        assert_eq!(t.group("800@test", "other").map(|g| g.id), Some(g.id));
    }

    #[test]
    fn ring_group_numbers_are_unique_per_domain() {
        let mut t = table();
        let other = RingGroup { id: records::config_id("x"), ..group_800() };
        assert_eq!(t.put_group(other.clone()).expect_err("taken").key, "number");
        let moved = RingGroup { domain: "other".into(), ..other };
        t.put_group(moved.clone()).expect("another domain");
        assert_eq!(t.group("800", "other").map(|g| g.id), Some(moved.id));
        t.put_group(RingGroup { skip_busy: true, ..group_800() }).expect("replaced by id");
        assert!(t.group("800", "test").is_some_and(|g| g.skip_busy));
        assert!(t.remove_group(moved.id));
        assert!(!t.remove_group(moved.id));
        assert_eq!(t.groups().len(), 1);
    }

    #[test]
    fn carriers_by_dns_name() {
        let mut c: Cfg = toml::from_str(
            "[[carriers]]\nname = \"d\"\naddress = \"sip.carrier.example\"\n[[routes]]\nprefix = \"+44\"\ncarriers = [\"d\"]\n",
        )
        .expect("toml");
        let mut t = RouteTable::new(c.carriers.clone(), c.routes.clone(), vec![]).expect("table");
        assert_eq!(t.carriers_to_resolve()[0].1, "sip.carrier.example");
        assert!(t.tel_targets("+441234").is_empty(), "not resolved yet");
        t.set_carrier_address("d", "192.0.2.55:5060".parse().expect("addr"));
        let tt = t.tel_targets("+441234");
        assert_eq!(tt[0].address, "192.0.2.55:5060".parse().expect("addr"));
        assert_eq!(tt[0].request_uri, "sip:+441234@sip.carrier.example");
        c.carriers[0].address = "bad host:x".into();
        assert!(RouteTable::new(c.carriers, c.routes, vec![]).is_err());
    }

    #[test]
    fn bad_tables() {
        let c = |name: &str| Carrier {
            name: name.into(),
            address: "192.0.2.1:5060".into(),
            transport: "udp".into(),
            strip: String::new(),
            prefix: String::new(),
            domain: String::new(),
            headers: vec![],
            username: String::new(),
            password: String::new(),
            inbound_sources: vec![],
            inbound_domain: String::new(),
        };
        let r = RouteTable::new(
            vec![c("a")],
            vec![Route { prefix: "+1".into(), carriers: vec!["x".into()] }],
            vec![],
        );
        assert_eq!(r.expect_err("unknown carrier").key, "carriers");
        let r = RouteTable::new(
            vec![c("a")],
            vec![Route { prefix: "1".into(), carriers: vec!["a".into()] }],
            vec![],
        );
        assert_eq!(r.expect_err("prefix").key, "prefix");
    }
}
