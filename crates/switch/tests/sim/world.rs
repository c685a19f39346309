//! The world a run takes place in: the switch's configuration (customer,
//! domain, extensions, ring groups of every kind, carriers by IP with
//! inbound sources and E.164 routes with failover, one carrier that
//! challenges), and where every party sits on the simulated network. It
//! exists so that the switch core, the simulated UAs and the oracle agree
//! on one description of the deployment.

use records::{AddressType, Customer, Domain, RingGroup, RingGroupDestination, RingMethod};
use sip_message::Transport;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use switch::{Carrier, Route, SwitchConfig, SwitchState};
use uuid::Uuid;

/// The SIP domain of every extension and group.
pub const DOMAIN: &str = "sim";
/// The source network of inbound carrier calls.
pub const PSTN_IN: &str = "pstn-in";

fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

/// A registered phone: one contact of extension `ext`.
#[derive(Clone, Debug)]
pub struct PhoneSpec {
    pub ext: String,
    pub password: String,
    pub addr: SocketAddr,
}

/// A carrier trunk the switch calls out through.
#[derive(Clone, Debug)]
pub struct TrunkSpec {
    pub name: String,
    pub addr: SocketAddr,
    /// Credentials the carrier demands with a 401/407 (the switch has them).
    pub credentials: Option<(String, String)>,
}

/// An extension that places calls (digest over the switch's 407).
#[derive(Clone, Debug)]
pub struct CallerAccount {
    pub ext: String,
    pub password: String,
}

/// Every party and the switch's configuration.
pub struct World {
    pub switch_addr: SocketAddr,
    pub phones: Vec<PhoneSpec>,
    pub trunks: Vec<TrunkSpec>,
    pub caller_accounts: Vec<CallerAccount>,
    /// Extensions a call may dial (registered, and one that never is).
    pub dial_extensions: Vec<String>,
    /// Group numbers.
    pub dial_groups: Vec<String>,
    /// E.164 numbers (routed, and one without a route).
    pub dial_numbers: Vec<String>,
    /// The fork's overall timeout (the oracle tells a 480 of the overall
    /// timeout from others by it).
    pub overall_timeout: Duration,
    /// RFC 3261 T1.
    pub t1: Duration,
    groups: Vec<RingGroup>,
}

/// Where the n-th call of a run calls from: extension callers and carrier
/// callers each get a port of their own.
pub fn caller_addr(carrier: bool, n: usize) -> SocketAddr {
    let (net, port) = (if carrier { 3 } else { 2 }, n % 50_000);
    addr(10, 0, net, 1 + (n / 50_000) as u8, 10_000 + port as u16)
}

/// The one customer, owner of the domain and of every group.
const CUSTOMER: Uuid = Uuid::from_u128(0x5e4a_0680_804e_11ec_8477_2fea_5968_d85b);

fn dest(kind: AddressType, target: &str, ring: Option<u64>) -> RingGroupDestination {
    RingGroupDestination {
        kind,
        target: target.to_owned(),
        ring_timeout_secs: ring,
        delay_secs: None,
    }
}

fn group(
    number: &str,
    method: RingMethod,
    send_reason: bool,
    d: Vec<RingGroupDestination>,
) -> RingGroup {
    RingGroup {
        id: records::config_id(&format!("{number}@{DOMAIN}")),
        customer_id: CUSTOMER,
        number: number.to_owned(),
        domain: DOMAIN.to_owned(),
        ring_method: method,
        answer_method: Default::default(),
        destinations: d,
        max_ring_secs: None,
        skip_busy: false,
        send_reason,
        origin: records::Origin::Config,
        tm_create: records::Timestamp::NOT_YET,
        tm_update: records::Timestamp::NOT_YET,
        tm_delete: records::Timestamp::NOT_YET,
    }
}

impl World {
    pub fn new() -> World {
        use AddressType::{Endpoint as E, Groupcall as G, Tel as T};
        use RingMethod::{Linear, RingAll};
        let mut phones = Vec::new();
        for (i, ext) in (100..=124).enumerate() {
            let password = format!("pw{ext}");
            phones.push(PhoneSpec {
                ext: ext.to_string(),
                password: password.clone(),
                addr: addr(10, 0, 1, 10 + i as u8, 5060),
            });
            if ext >= 120 {
                // A second phone on the same account: the extension forks.
                phones.push(PhoneSpec {
                    ext: ext.to_string(),
                    password,
                    addr: addr(10, 0, 1, 110 + i as u8, 5062),
                });
            }
        }
        let trunks = vec![
            TrunkSpec { name: "alpha".into(), addr: addr(10, 0, 4, 1, 5060), credentials: None },
            TrunkSpec { name: "beta".into(), addr: addr(10, 0, 4, 2, 5060), credentials: None },
            TrunkSpec {
                name: "gamma".into(),
                addr: addr(10, 0, 4, 3, 5060),
                credentials: Some(("trunkuser".into(), "trunkpass".into())),
            },
        ];
        let caller_accounts = (150..=159)
            .map(|e| CallerAccount { ext: e.to_string(), password: format!("pw{e}") })
            .collect();
        let s = |n: u32| n.to_string();
        let groups = vec![
            group(
                "800",
                RingAll,
                true,
                vec![dest(E, "100@sim", None), dest(E, "101@sim", None), dest(E, "102@sim", None)],
            ),
            group(
                "801",
                Linear,
                true,
                vec![
                    dest(E, "103@sim", Some(7)),
                    dest(E, "104@sim", Some(9)),
                    dest(E, "105@sim", None),
                ],
            ),
            group("802", RingAll, true, vec![dest(G, "803", None), dest(E, "106@sim", None)]),
            group(
                "803",
                Linear,
                true,
                vec![dest(E, "107@sim", Some(6)), dest(E, "120@sim", Some(11))],
            ),
            group(
                "804",
                RingAll,
                true,
                vec![dest(E, "121@sim", None), dest(E, "122@sim", None), dest(E, "199@sim", None)],
            ),
            group(
                "805",
                Linear,
                true,
                vec![dest(T, "+15550001", Some(41)), dest(E, "108@sim", Some(10))],
            ),
            group(
                "806",
                RingAll,
                false,
                vec![dest(E, "109@sim", None), dest(E, "110@sim", None), dest(G, "801", None)],
            ),
            group("807", Linear, true, vec![dest(G, "800", Some(8)), dest(G, "804", None)]),
            group(
                "808",
                RingAll,
                true,
                vec![dest(T, "+4420000001", Some(45)), dest(E, "111@sim", None)],
            ),
        ];
        let mut dial_extensions: Vec<String> = (100..=124).map(s).collect();
        dial_extensions.push("199".into());
        World {
            switch_addr: addr(10, 0, 0, 1, 5060),
            phones,
            trunks,
            caller_accounts,
            dial_extensions,
            dial_groups: groups.iter().map(|g| g.number.clone()).collect(),
            dial_numbers: vec![
                "+15551230001".into(),
                "+4420777001".into(),
                "+4930111222".into(),
                "+3312345678".into(),
            ],
            overall_timeout: Duration::from_secs(120),
            t1: Duration::from_millis(500),
            groups,
        }
    }

    /// The switch's settings and starting state.
    pub fn switch_config(&self) -> (SwitchConfig, SwitchState) {
        let mut cfg = SwitchConfig::new(vec![(Transport::Udp, self.switch_addr)]);
        cfg.calls.default_ring_timeout = Duration::from_secs(29);
        cfg.calls.overall_timeout = self.overall_timeout;
        cfg.timers.t1 = self.t1;
        let customer = CUSTOMER;
        let mut extensions: Vec<records::Extension> = self
            .phones
            .iter()
            .map(|p| registrar::extension_with_password(&p.ext, DOMAIN, &p.password))
            .collect();
        extensions.dedup_by(|a, b| a.name == b.name);
        extensions.push(registrar::extension_with_password("199", DOMAIN, "pw199"));
        for c in &self.caller_accounts {
            let mut e = registrar::extension_with_password(&c.ext, DOMAIN, &c.password);
            e.display_name = format!("Caller {}", c.ext);
            extensions.push(e);
        }
        let mut carriers: Vec<Carrier> = self
            .trunks
            .iter()
            .map(|t| Carrier {
                name: t.name.clone(),
                address: t.addr.to_string(),
                transport: "udp".into(),
                strip: String::new(),
                prefix: String::new(),
                domain: String::new(),
                headers: vec![("X-Trunk".into(), t.name.clone())],
                username: t.credentials.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
                password: t.credentials.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
                inbound_sources: Vec::new(),
                inbound_domain: String::new(),
            })
            .collect();
        carriers.push(Carrier {
            name: PSTN_IN.into(),
            address: "10.0.3.254:5060".into(),
            transport: "udp".into(),
            strip: String::new(),
            prefix: String::new(),
            domain: String::new(),
            headers: Vec::new(),
            username: String::new(),
            password: String::new(),
            inbound_sources: vec!["10.0.3.0/24".parse().expect("net")],
            inbound_domain: DOMAIN.into(),
        });
        let routes = vec![
            Route { prefix: "+1".into(), carriers: vec!["alpha".into(), "beta".into()] },
            Route { prefix: "+44".into(), carriers: vec!["gamma".into(), "alpha".into()] },
            Route {
                prefix: "+49".into(),
                carriers: vec!["beta".into(), "gamma".into(), "alpha".into()],
            },
        ];
        let state = SwitchState {
            customers: vec![Customer { id: customer, name: "sim".into(), api_keys: Vec::new() }],
            domains: vec![Domain {
                name: DOMAIN.into(),
                aliases: Vec::new(),
                customer_id: customer,
            }],
            extensions,
            bindings: Vec::new(),
            carriers,
            routes,
            ring_groups: self.groups.clone(),
            hunt: Vec::new(),
        };
        (cfg, state)
    }
}
