//! Everything the switch core is built from: its settings, plain values the
//! shell reads from its config file ([`SwitchConfig`]), and the state it
//! starts with ([`SwitchState`]: accounts, bindings, carriers, routes and
//! ring groups loaded by the shell). The settings of the parts inside (the
//! transaction layer's timers, the B2BUA's, the fork engine's, the route
//! table) are derived here, so that the shell never builds them.

use records::{Binding, Customer, Domain, Extension, RingGroup};
use registrar::RegistrarConfig;
use routing::{Carrier, Route, RouteError, RouteTable};
use sip_message::Transport;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a [`crate::Switch`].
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// The addresses the shell listens on, per transport: our Via sent-by,
    /// Contact host, and what "this switch" means in a Request-URI.
    pub listen: Vec<(Transport, SocketAddr)>,
    /// Host names that also mean this switch (`localhost`...).
    pub aliases: Vec<String>,
    /// `Server` / `User-Agent` of our messages.
    pub user_agent: String,
    /// Stamp `rport` on every request even when not asked (NAT'ed phones).
    pub force_rport: bool,
    /// RFC 3261 timers.
    pub timers: SipTimers,
    /// How calls ring and fork.
    pub calls: CallSettings,
    /// Registrar settings.
    pub registrar: RegistrarConfig,
    /// NAT keep-alive OPTIONS to UDP contacts every this often; `None`: off.
    pub keepalive_interval: Option<Duration>,
    /// How often carriers given by DNS name are resolved again.
    pub carrier_dns_interval: Duration,
    /// Overload control and per-source rate limits.
    pub admission: crate::AdmissionConfig,
    /// This node's cluster (`[cluster]`); `None`: a single node.
    pub cluster: Option<crate::ClusterSettings>,
    /// The feature codes (call pickup...) of every domain.
    pub feature_codes: pbx_features::FeatureCodeSettings,
    /// Busy lamp subscriptions: expiries and limits.
    pub blf: pbx_features::NotifierSettings,
    /// Media anchoring through rtpengine (`[media]`); off by default.
    pub media: media_anchor::MediaSettings,
}

/// RFC 3261 timers (section 17.1.1.1), for transactions and dialogs alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipTimers {
    /// T1, the round-trip estimate.
    pub t1: Duration,
    /// T2, the longest retransmission interval.
    pub t2: Duration,
    /// T4, the longest a message stays in the network.
    pub t4: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        let t = sip_transaction::Config::default();
        SipTimers { t1: t.t1, t2: t.t2, t4: t.t4 }
    }
}

/// How calls ring and fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSettings {
    /// How long a destination rings when it sets no ring timeout.
    pub default_ring_timeout: Duration,
    /// The longest a call rings before the caller gets 480.
    pub overall_timeout: Duration,
    /// Most legs one call may fork into.
    pub max_legs: usize,
    /// A 6xx from one leg ends the whole fork (RFC 3261 16.7).
    pub stop_on_6xx: bool,
    /// Send 180/183 reliably (RFC 3262) to callers that support 100rel.
    pub send_100rel_to_caller: bool,
}

impl Default for CallSettings {
    fn default() -> Self {
        let f = groupcall::ForkConfig::default();
        CallSettings {
            default_ring_timeout: f.default_ring_timeout,
            overall_timeout: f.overall_timeout,
            max_legs: f.max_legs,
            stop_on_6xx: f.stop_on_6xx,
            send_100rel_to_caller: b2bua::B2buaConfig::default().send_100rel_to_caller,
        }
    }
}

/// Max-Forwards of the requests the switch sends.
const MAX_FORWARDS: u8 = 70;

impl SwitchConfig {
    /// Defaults around the given listen addresses.
    pub fn new(listen: Vec<(Transport, SocketAddr)>) -> Self {
        SwitchConfig {
            listen,
            aliases: vec!["localhost".into()],
            user_agent: "forkswitch".into(),
            force_rport: true,
            timers: SipTimers::default(),
            calls: CallSettings::default(),
            registrar: RegistrarConfig::default(),
            keepalive_interval: None,
            carrier_dns_interval: Duration::from_secs(300),
            admission: crate::AdmissionConfig::default(),
            cluster: None,
            feature_codes: Default::default(),
            blf: Default::default(),
            media: media_anchor::MediaSettings::Off,
        }
    }

    /// The transaction layer's settings.
    pub(crate) fn transactions(&self) -> sip_transaction::Config {
        let SipTimers { t1, t2, t4 } = self.timers;
        sip_transaction::Config { t1, t2, t4, ..Default::default() }
    }

    /// The B2BUA's settings.
    pub(crate) fn b2bua(&self) -> b2bua::B2buaConfig {
        b2bua::B2buaConfig {
            user_agent: self.user_agent.clone(),
            t1: self.timers.t1,
            t2: self.timers.t2,
            max_forwards: MAX_FORWARDS,
            send_100rel_to_caller: self.calls.send_100rel_to_caller,
            // Anchored media: re-INVITE and UPDATE SDP go through rtpengine.
            hold_relayed_sdp: matches!(
                self.media,
                media_anchor::MediaSettings::Rtpengine {
                    default: media_anchor::Anchoring::Anchored(_),
                    ..
                }
            ),
            ..Default::default()
        }
    }

    /// The fork engine's settings: a leg asked to end is given up on after
    /// 64*T1, as a transaction is.
    pub(crate) fn fork(&self) -> groupcall::ForkConfig {
        let c = &self.calls;
        groupcall::ForkConfig {
            default_ring_timeout: c.default_ring_timeout,
            overall_timeout: c.overall_timeout,
            max_legs: c.max_legs,
            stop_on_6xx: c.stop_on_6xx,
            leg_cleanup_timeout: self.timers.t1.saturating_mul(64),
            ..Default::default()
        }
    }
}

/// What the switch starts with: read from the database and the config file
/// by the shell.
#[derive(Clone, Debug, Default)]
pub struct SwitchState {
    /// Customers.
    pub customers: Vec<Customer>,
    /// SIP domains.
    pub domains: Vec<Domain>,
    /// Phone accounts.
    pub extensions: Vec<Extension>,
    /// Bindings that were live when the last run stopped.
    pub bindings: Vec<Binding>,
    /// PSTN trunks.
    pub carriers: Vec<Carrier>,
    /// E.164 prefix routes to carriers.
    pub routes: Vec<Route>,
    /// Ring groups (the config file's and the API's).
    pub ring_groups: Vec<RingGroup>,
    /// What round-robin and least-recent ring groups remembered.
    pub hunt: Vec<records::HuntMemoryRecord>,
}

impl SwitchState {
    /// Checks the carriers, routes and ring groups as [`crate::Switch::new`]
    /// will: every route names known carriers, carrier addresses and
    /// transports are usable, a ring group number is used once per domain.
    pub fn check(&self) -> Result<(), RouteError> {
        self.route_table().map(drop)
    }

    /// The route table of the carriers, routes and ring groups.
    pub(crate) fn route_table(&self) -> Result<RouteTable, RouteError> {
        let groups = self.ring_groups.clone();
        RouteTable::new(self.carriers.clone(), self.routes.clone(), groups)
    }
}
