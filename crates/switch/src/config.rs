//! Everything the switch core is built from: its settings and the state it
//! starts with (accounts, bindings and routes loaded by the shell).

use records::{Binding, Customer, Domain, Extension};
use registrar::RegistrarConfig;
use routing::RouteTable;
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
    pub transactions: sip_transaction::Config,
    /// B2BUA settings.
    pub b2bua: b2bua::B2buaConfig,
    /// Fork engine settings.
    pub fork: groupcall::ForkConfig,
    /// Registrar settings.
    pub registrar: RegistrarConfig,
    /// NAT keep-alive OPTIONS to UDP contacts every this often; `None`: off.
    pub keepalive_interval: Option<Duration>,
    /// How often carriers given by DNS name are resolved again.
    pub carrier_dns_interval: Duration,
    /// Overload control and per-source rate limits.
    pub admission: crate::AdmissionConfig,
}

impl SwitchConfig {
    /// Defaults around the given listen addresses.
    pub fn new(listen: Vec<(Transport, SocketAddr)>) -> Self {
        SwitchConfig {
            listen,
            aliases: vec!["localhost".into()],
            user_agent: "forkswitch".into(),
            force_rport: true,
            transactions: sip_transaction::Config::default(),
            b2bua: b2bua::B2buaConfig::default(),
            fork: groupcall::ForkConfig::default(),
            registrar: RegistrarConfig::default(),
            keepalive_interval: None,
            carrier_dns_interval: Duration::from_secs(300),
            admission: crate::AdmissionConfig::default(),
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
    /// Carriers, routes and ring groups.
    pub routes: RouteTable,
    /// What round-robin and least-recent ring groups remembered.
    pub hunt: Vec<records::HuntMemoryRecord>,
}
