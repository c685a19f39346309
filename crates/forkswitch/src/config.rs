//! The TOML configuration. A bad file fails at start naming the file, the
//! line, the key and the reason.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SIP listeners and transport limits.
    pub sip: SipConfig,
    /// The certificate of the TLS and WSS listeners (and outbound TLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[tls]` loaded (by [`Config::parse`]), or outbound-only defaults.
    #[serde(skip)]
    pub tls_settings: sip_transport::TlsSettings,
    /// RFC 3261 timers.
    #[serde(default)]
    pub timers: TimerConfig,
    /// REST API.
    #[serde(default)]
    pub http: HttpConfig,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Where records live.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// REGISTER handling.
    #[serde(default)]
    pub registrar: RegistrarSection,
    /// Customers (owners of domains, API keys).
    #[serde(default)]
    pub customers: Vec<CustomerConfig>,
    /// SIP domains served.
    #[serde(default)]
    pub domains: Vec<DomainConfig>,
    /// Phone accounts.
    #[serde(default)]
    pub extensions: Vec<ExtensionConfig>,
    /// Call and fork settings.
    #[serde(default)]
    pub calls: CallsConfig,
    /// Overload control and per-source rate limits.
    #[serde(default)]
    pub overload: OverloadConfig,
    /// DNS for SIP destinations (RFC 3263).
    #[serde(default)]
    pub dns: DnsConfig,
    /// PSTN trunks.
    #[serde(default)]
    pub carriers: Vec<switch::Carrier>,
    /// E.164 prefix routes to carriers.
    #[serde(default)]
    pub routes: Vec<switch::Route>,
    /// Ring groups.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// `[blf]`: busy lamp subscriptions (expiries and limits).
    #[serde(default)]
    pub blf: BlfConfig,
    /// `[feature_codes]`: call pickup and login codes of every domain
    /// that sets none of its own (`[[domains]] feature_codes`).
    #[serde(default)]
    pub feature_codes: pbx_features::FeatureCodes,
    /// Call traces: the SIP messages of recent calls, kept for the API.
    #[serde(default)]
    pub trace: TraceConfig,
    /// HEP v3 to a capture server (Homer); none: off.
    #[serde(default)]
    pub hep: Option<HepConfig>,
    /// Media anchoring through rtpengine (`mode = "off"` by default).
    #[serde(default)]
    pub media: media_anchor::MediaSection,
    /// This node's place in a cluster of nodes sharing one PostgreSQL;
    /// none: a single node.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: several forkswitch nodes on one PostgreSQL (README
/// "Cluster").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (1..=64 of letters, digits,
    /// `.`, `_`, `-`): in every record and binding it writes. A restarted
    /// node takes it back.
    pub node_id: String,
    /// The UDP address other nodes send this node the legs it relays to
    /// its phones (one of `[sip] udp`, or its port on a wildcard one).
    pub advertise: SocketAddr,
    /// How often the node renews its lease.
    #[serde(default = "heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a lease lasts unrenewed: then the node is dead for the
    /// others (its live records closed, its bindings unreachable, legs
    /// through it failed). At least three heartbeats.
    #[serde(default = "lease_ms")]
    pub lease_ms: u64,
}

fn heartbeat_ms() -> u64 {
    1000
}
fn lease_ms() -> u64 {
    5000
}

/// `[trace]`: every SIP message received and sent, kept in memory for
/// `GET /v1.0/groupcalls/{id}/messages` (the oldest go first).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// On by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most bytes held (messages and their bookkeeping).
    #[serde(default = "trace_max_bytes")]
    pub max_bytes: usize,
    /// Messages older than this leave.
    #[serde(default = "trace_keep_secs")]
    pub keep_secs: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig { enabled: true, max_bytes: trace_max_bytes(), keep_secs: trace_keep_secs() }
    }
}

fn trace_max_bytes() -> usize {
    64 << 20
}

fn trace_keep_secs() -> u64 {
    3600
}

/// `[hep]`: every SIP message received and sent, as HEP v3 to a collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HepConfig {
    /// The collector, `ip:port` (Homer: 9060).
    pub address: SocketAddr,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: HepTransport,
    /// Capture agent id (HEP chunk 12).
    #[serde(default = "hep_capture_id")]
    pub capture_id: u32,
    /// The collector's password (HEP chunk 14); none when empty.
    #[serde(default)]
    pub password: String,
}

fn hep_capture_id() -> u32 {
    2001
}

/// How HEP packets travel.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HepTransport {
    /// One datagram per packet.
    #[default]
    Udp,
    /// One connection, packets back to back (reconnected when it fails).
    Tcp,
}

/// `[[groups]]`: a ring group reachable by number; stored (and served) as
/// the [`records::RingGroup`] of [`GroupConfig::record`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Number dialed to reach it (Request-URI user), e.g. `800`.
    pub number: String,
    /// Domain it belongs to.
    pub domain: String,
    /// Stable id (by default [`records::config_id`] of `number@domain`).
    #[serde(default)]
    pub id: Option<uuid::Uuid>,
    /// `ring_all` (default), `linear`, `memory_hunt`, `round_robin`,
    /// `least_recent` or `random`.
    #[serde(default)]
    pub ring_method: records::RingMethod,
    /// `hangup_others`.
    #[serde(default)]
    pub answer_method: records::AnswerMethod,
    /// What to ring, in order (`type`, `target`, `ring_timeout_secs`,
    /// `delay_secs`).
    pub destinations: Vec<records::RingGroupDestination>,
    /// The longest the group rings, whatever its method.
    #[serde(default)]
    pub max_ring_secs: Option<u64>,
    /// Busy members are not rung and their 486 not counted.
    #[serde(default)]
    pub skip_busy: bool,
    /// `Reason: SIP;cause=200` on the CANCELs of losing legs.
    #[serde(default = "yes")]
    pub send_reason: bool,
}

impl GroupConfig {
    /// The group's id: configured, or derived from `number@domain`.
    pub fn id(&self) -> uuid::Uuid {
        self.id.unwrap_or_else(|| records::config_id(&format!("{}@{}", self.number, self.domain)))
    }

    /// The record of this group (origin config), owned by `customer_id`
    /// (its domain's), at `now`.
    pub fn record(&self, customer_id: uuid::Uuid, now: records::Timestamp) -> records::RingGroup {
        records::RingGroup {
            id: self.id(),
            customer_id,
            number: self.number.clone(),
            domain: self.domain.clone(),
            ring_method: self.ring_method,
            answer_method: self.answer_method,
            destinations: self.destinations.clone(),
            max_ring_secs: self.max_ring_secs,
            skip_busy: self.skip_busy,
            send_reason: self.send_reason,
            origin: records::Origin::Config,
            tm_create: now,
            tm_update: now,
            tm_delete: records::Timestamp::NOT_YET,
        }
    }
}

/// A broken rule of the file: the table, the key (its line is found by
/// it), and why.
type Broken = (&'static str, &'static str, String);

/// `[tls]`: PEM files for the TLS and WSS listeners (`forkswitch gen-cert`
/// makes a self-signed pair for local tests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (also shown to TLS servers that ask for a
    /// client certificate).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// CA certificates: when set, TLS and WSS clients must present a
    /// certificate signed by one of them (outbound TLS trusts them too).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// With `ca`: `false` lets clients connect without a certificate (one
    /// they present must still be signed by `ca`). Default `true`.
    #[serde(default)]
    pub require_client_cert: Option<bool>,
}

/// `[dns]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers (`IP:port`); empty uses the system's resolv.conf.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// Per-query timeout in milliseconds (default 2000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `[blf]`: busy lamp (`SUBSCRIBE` to the `dialog` package) expiries, in
/// seconds, and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlfConfig {
    /// Shortest expiry taken (423 below).
    pub min_expires: u32,
    /// Longest expiry granted.
    pub max_expires: u32,
    /// Expiry of a SUBSCRIBE without Expires.
    pub default_expires: u32,
    /// Subscriptions one AOR may hold (403 beyond).
    pub max_per_subscriber: usize,
    /// Subscriptions of one extension or group (480 beyond).
    pub max_per_watched: usize,
    /// Subscriptions in all (503 beyond).
    pub max_total: usize,
    /// Dialogs one document lists.
    pub max_dialogs_shown: usize,
}

impl Default for BlfConfig {
    fn default() -> Self {
        let d = pbx_features::NotifierSettings::default();
        BlfConfig {
            min_expires: d.min_expires,
            max_expires: d.max_expires,
            default_expires: d.default_expires,
            max_per_subscriber: d.max_per_subscriber,
            max_per_watched: d.max_per_watched,
            max_total: d.max_total,
            max_dialogs_shown: d.max_dialogs_shown,
        }
    }
}

impl BlfConfig {
    /// The notifier's settings.
    pub fn settings(&self) -> pbx_features::NotifierSettings {
        pbx_features::NotifierSettings {
            min_expires: self.min_expires,
            max_expires: self.max_expires,
            default_expires: self.default_expires,
            max_per_subscriber: self.max_per_subscriber,
            max_per_watched: self.max_per_watched,
            max_total: self.max_total,
            max_dialogs_shown: self.max_dialogs_shown,
            ..Default::default()
        }
    }
}

/// `[overload]`: admission control (see the switch crate's `admission.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Input queue delay admission keeps calls under: past it (sustained),
    /// new INVITEs get 503 in the proportion needed; 0: never.
    pub max_queue_delay_ms: u64,
    /// Delay under which, nothing refused any more, the overload ends.
    pub resume_queue_delay_ms: u64,
    /// How long the delay must stay past the limit before shedding starts.
    pub sustain_ms: u64,
    /// Live transactions beyond which new INVITEs get 503; 0: no cap.
    pub max_transactions: usize,
    /// `Retry-After` of those 503s, seconds.
    pub retry_after_secs: u32,
    /// New REGISTERs admitted per second; 0: no limit.
    pub max_register_rate: u32,
    /// Requests per second from one source IP (carriers exempt); 0: off.
    pub source_rate: u32,
    /// How long a source beyond that rate is banned.
    pub source_ban_secs: u64,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        let d = switch::AdmissionConfig::default();
        OverloadConfig {
            max_queue_delay_ms: d.max_queue_delay.as_millis() as u64,
            resume_queue_delay_ms: d.resume_queue_delay.as_millis() as u64,
            sustain_ms: d.sustain.as_millis() as u64,
            max_transactions: d.max_transactions,
            retry_after_secs: d.retry_after_secs,
            max_register_rate: d.max_register_rate,
            source_rate: d.source_rate,
            source_ban_secs: d.source_ban.as_secs(),
        }
    }
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Ring time of a destination that sets none (linear: then the next).
    #[serde(default = "ring_secs")]
    pub default_ring_timeout_secs: u64,
    /// Longest a groupcall rings before the caller gets 480.
    #[serde(default = "overall_secs")]
    pub overall_timeout_secs: u64,
    /// Most legs one call may fork into.
    #[serde(default = "max_legs")]
    pub max_legs: usize,
    /// A 6xx from one leg ends the whole fork (RFC 3261 16.7).
    #[serde(default = "yes")]
    pub stop_on_6xx: bool,
    /// Send reliable 180/183 (RFC 3262) to callers that support 100rel.
    #[serde(default)]
    pub send_100rel_to_caller: bool,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            default_ring_timeout_secs: ring_secs(),
            overall_timeout_secs: overall_secs(),
            max_legs: max_legs(),
            stop_on_6xx: true,
            send_100rel_to_caller: false,
        }
    }
}

fn ring_secs() -> u64 {
    30
}
fn overall_secs() -> u64 {
    120
}
fn max_legs() -> usize {
    64
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB` (`?host=/dir` for a
    /// Unix socket); set it or `path`, not both.
    #[serde(default)]
    pub url: Option<String>,
    /// SQLite file (the older key); "" keeps everything in memory (lost on
    /// restart). Without `url` or `path`: `forkswitch.db`.
    #[serde(default)]
    pub path: Option<String>,
    /// The writer's commit window (0..=200 ms): each record is written once
    /// per window in its latest version (a short call that starts, rings,
    /// answers and ends inside one window is one row write), and a crash
    /// can lose at most the last window. 0 commits as soon as nothing more
    /// is queued (group commit).
    #[serde(default = "commit_delay_ms")]
    pub commit_delay_ms: u64,
    /// Most record changes held while the database is away (or slow);
    /// past it the newest are dropped and counted.
    #[serde(default = "max_pending")]
    pub max_pending: u64,
    /// Ended groupcall and call records older than this many days are
    /// deleted, in small batches by the writer; 0 keeps them forever.
    #[serde(default)]
    pub keep_days: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            path: None,
            commit_delay_ms: commit_delay_ms(),
            max_pending: max_pending(),
            keep_days: 0,
        }
    }
}

impl DatabaseConfig {
    /// The store's URL; `None`: in memory (`path = ""`).
    pub fn store_url(&self) -> Option<String> {
        match (&self.url, self.path.as_deref()) {
            (Some(url), _) => Some(url.clone()),
            (None, Some("")) => None,
            (None, Some(path)) => Some(format!("sqlite:{path}")),
            (None, None) => Some(format!("sqlite:{}", db_path())),
        }
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.url.is_some() && self.path.is_some() {
            return Err(("url", "set url or path, not both".into()));
        }
        if let Some(url) = &self.url {
            store::parse_url(url).map_err(|e| ("url", e.to_string()))?;
        }
        if self.commit_delay_ms > 200 {
            return Err(("commit_delay_ms", "must be 0..=200".into()));
        }
        if self.max_pending == 0 {
            return Err(("max_pending", "must be at least 1".into()));
        }
        if self.keep_days > 36_500 {
            return Err(("keep_days", "must be 0..=36500 (0: keep forever)".into()));
        }
        Ok(())
    }
}

fn db_path() -> String {
    "forkswitch.db".into()
}
/// 100 ms: at 1,500 forked calls/s it cut the writer's CPU per call by
/// most of what coalescing can (see README "Records in PostgreSQL");
/// records are at most that old when read, and a crash loses at most that.
fn commit_delay_ms() -> u64 {
    100
}
fn max_pending() -> u64 {
    500_000
}

/// `[registrar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSection {
    /// Shortest non-zero expiry accepted (shorter gets 423).
    #[serde(default = "min_exp")]
    pub min_expires: u32,
    /// Longest expiry granted.
    #[serde(default = "max_exp")]
    pub max_expires: u32,
    /// Expiry when the phone gives none.
    #[serde(default = "def_exp")]
    pub default_expires: u32,
    /// How long a digest nonce is good for.
    #[serde(default = "nonce_secs")]
    pub nonce_lifetime_secs: u64,
    /// Most contacts per address-of-record.
    #[serde(default = "max_bind")]
    pub max_bindings_per_aor: usize,
    /// Digest algorithms offered: "SHA-256", "MD5".
    #[serde(default = "algs")]
    pub algorithms: Vec<String>,
    /// Failed authentications from one IP before it is banned (0: never).
    #[serde(default = "ban_fail")]
    pub ban_max_failures: u32,
    /// Window those failures must fall in.
    #[serde(default = "ban_window")]
    pub ban_window_secs: u64,
    /// Ban length.
    #[serde(default = "ban_secs")]
    pub ban_secs: u64,
    /// While banned: "reject" (403) or "drop".
    #[serde(default = "ban_action")]
    pub ban_action: String,
    /// OPTIONS keep-alive to UDP contacts every this many seconds (0: off).
    #[serde(default)]
    pub keepalive_interval_secs: u64,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        RegistrarSection {
            min_expires: min_exp(),
            max_expires: max_exp(),
            default_expires: def_exp(),
            nonce_lifetime_secs: nonce_secs(),
            max_bindings_per_aor: max_bind(),
            algorithms: algs(),
            ban_max_failures: ban_fail(),
            ban_window_secs: ban_window(),
            ban_secs: ban_secs(),
            ban_action: ban_action(),
            keepalive_interval_secs: 0,
        }
    }
}

fn min_exp() -> u32 {
    60
}
fn max_exp() -> u32 {
    7200
}
fn def_exp() -> u32 {
    3600
}
fn nonce_secs() -> u64 {
    300
}
fn max_bind() -> usize {
    10
}
fn algs() -> Vec<String> {
    vec!["MD5".into(), "SHA-256".into()]
}
fn ban_fail() -> u32 {
    10
}
fn ban_window() -> u64 {
    60
}
fn ban_secs() -> u64 {
    300
}
fn ban_action() -> String {
    "reject".into()
}

/// `[[customers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerConfig {
    /// UUID.
    pub id: uuid::Uuid,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// API keys for the REST API (stored hashed).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Where this customer's webhook events are POSTed.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The HMAC secret that signs them.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// `[[domains]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Domain name (the part after `@`, and the digest realm).
    pub name: String,
    /// Other host names for it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Owning customer's id.
    pub customer_id: uuid::Uuid,
    /// This domain's feature codes, instead of `[feature_codes]`.
    #[serde(default)]
    pub feature_codes: Option<pbx_features::FeatureCodes>,
}

/// `[[extensions]]`: give `password`, or `ha1_md5` and/or `ha1_sha256`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    /// Extension name (user part).
    pub name: String,
    /// Domain name.
    pub domain: String,
    /// Plain-text password (only its hashes are stored).
    #[serde(default)]
    pub password: Option<String>,
    /// MD5(name:domain:password), hex.
    #[serde(default)]
    pub ha1_md5: Option<String>,
    /// SHA-256(name:domain:password), hex.
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// Caller-ID name.
    #[serde(default)]
    pub display_name: String,
    /// Most concurrent calls in or out; at the limit it is busy (not rung:
    /// 486 or `forward_busy`). Absent: unlimited.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// Do not disturb: direct calls get 486, ring groups skip it.
    #[serde(default)]
    pub dnd: bool,
    /// Every call goes there instead (`{ type = "endpoint", target = "test13@test" }`).
    #[serde(default)]
    pub forward_always: Option<records::Address>,
    /// Where calls go when it is busy.
    #[serde(default)]
    pub forward_busy: Option<records::Address>,
    /// Where calls go when it does not answer (or is not registered).
    #[serde(default)]
    pub forward_noanswer: Option<records::Address>,
    /// Seconds it rings before `forward_noanswer` (default 20).
    #[serde(default)]
    pub forward_noanswer_secs: Option<u64>,
}

impl ExtensionConfig {
    /// Its call handling, as the records keep it.
    pub fn handling(&self) -> records::CallHandling {
        records::CallHandling {
            max_calls: self.max_calls,
            dnd: self.dnd,
            forward_always: self.forward_always.clone(),
            forward_busy: self.forward_busy.clone(),
            forward_noanswer: self.forward_noanswer.clone(),
            forward_noanswer_secs: self.forward_noanswer_secs,
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen addresses.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses (need `[tls]`).
    #[serde(default)]
    pub tls: Vec<SocketAddr>,
    /// WebSocket listen addresses (RFC 7118).
    #[serde(default)]
    pub ws: Vec<SocketAddr>,
    /// Secure WebSocket listen addresses (need `[tls]`).
    #[serde(default)]
    pub wss: Vec<SocketAddr>,
    /// Host names meaning "this switch".
    #[serde(default = "default_aliases")]
    pub aliases: Vec<String>,
    /// UDP sockets per address (SO_REUSEPORT when > 1).
    #[serde(default = "one")]
    pub udp_sockets_per_addr: usize,
    /// SO_RCVBUF.
    #[serde(default = "four_mib")]
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF.
    #[serde(default = "four_mib")]
    pub send_buffer_bytes: usize,
    /// Largest message on a stream.
    #[serde(default = "max_msg")]
    pub max_message_bytes: usize,
    /// TCP idle timeout.
    #[serde(default = "idle")]
    pub tcp_idle_timeout_secs: u64,
    /// TCP connections per remote IP.
    #[serde(default = "conns_per_ip")]
    pub tcp_max_connections_per_ip: usize,
    /// Answer to the source port of every UDP request, as if it had asked
    /// for `rport` (NAT'ed phones); `false` follows RFC 3261 18.2.2 strictly.
    #[serde(default = "yes")]
    pub force_rport: bool,
    /// Server / User-Agent header value.
    #[serde(default = "default_ua")]
    pub user_agent: String,
}

/// `[timers]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerConfig {
    /// T1 (RTT estimate), ms.
    #[serde(default = "t1")]
    pub t1_ms: u64,
    /// T2 (max retransmit interval), ms.
    #[serde(default = "t2")]
    pub t2_ms: u64,
    /// T4 (max message lifetime), ms.
    #[serde(default = "t4")]
    pub t4_ms: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the REST API (port 0 picks one, logged at start).
    #[serde(default = "http_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS (with `tls_key`); none: plain HTTP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, bytes.
    #[serde(default = "body_limit")]
    pub body_limit_bytes: usize,
    /// Scheduling niceness of the API's threads (Linux, 0..=19): when the
    /// CPU is short, SIP processing runs first and the API waits.
    #[serde(default = "http_nice")]
    pub nice: i32,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
    #[serde(default = "signature_header")]
    pub signature_header: String,
    /// Events waiting per customer; beyond, new ones are dropped (counted).
    #[serde(default = "queue_len")]
    pub queue_len: usize,
    /// Attempts per event (the first and the retries).
    #[serde(default = "max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each next one, ms.
    #[serde(default = "backoff_ms")]
    pub backoff_ms: u64,
    /// Longest one attempt may take, ms.
    #[serde(default = "webhook_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level filter.
    #[serde(default = "info")]
    pub level: String,
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for in-flight work after a stop signal.
    #[serde(default = "grace")]
    pub grace_secs: u64,
}

fn default_aliases() -> Vec<String> {
    vec!["localhost".into()]
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn four_mib() -> usize {
    4 << 20
}
fn max_msg() -> usize {
    65_535
}
fn idle() -> u64 {
    300
}
fn conns_per_ip() -> usize {
    64
}
fn default_ua() -> String {
    "forkswitch".into()
}
fn t1() -> u64 {
    500
}
fn t2() -> u64 {
    4000
}
fn t4() -> u64 {
    5000
}
fn http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn info() -> String {
    "info".into()
}
fn body_limit() -> usize {
    64 << 10
}
fn http_nice() -> i32 {
    10
}
fn signature_header() -> String {
    "X-Forkswitch-Signature".into()
}
fn queue_len() -> usize {
    1000
}
fn max_attempts() -> u32 {
    4
}
fn backoff_ms() -> u64 {
    1000
}
fn webhook_timeout_ms() -> u64 {
    10_000
}
fn grace() -> u64 {
    5
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig { t1_ms: t1(), t2_ms: t2(), t4_ms: t4() }
    }
}
impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: http_listen(),
            tls_cert: None,
            tls_key: None,
            body_limit_bytes: body_limit(),
            nice: http_nice(),
        }
    }
}
impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            signature_header: signature_header(),
            queue_len: queue_len(),
            max_attempts: max_attempts(),
            backoff_ms: backoff_ms(),
            timeout_ms: webhook_timeout_ms(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: info(), format: LogFormat::Human }
    }
}
impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_secs: grace() }
    }
}

/// A configuration error: which file, where, and why.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key (`sip.udp`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of the first `key =` inside `[table]` (or anywhere); the
/// `[table]` line itself when the key is missing there.
fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut in_table = table.is_empty();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
            if in_table && header.is_none() {
                header = Some(i + 1);
            }
            continue;
        }
        if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    header
}

/// A provisioning rule broken by the record `who` (`a@test`, `800@test`)
/// of `table`: `key: who: reason`, the field's path before the reason when
/// it is deeper than the key (`destinations[1].delay_secs`).
fn broken(table: &'static str, who: &str, i: provisioning::Invalid) -> Broken {
    let reason = if i.field == i.key {
        format!("{who}: {}", i.reason)
    } else {
        format!("{who}: {}: {}", i.field, i.reason)
    };
    (table, i.key, reason)
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks configuration text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError { path: path.to_owned(), line, key: None, reason: e.message().to_owned() }
        })?;
        let error = |(table, key, reason): (&str, &str, String)| ConfigError {
            path: path.to_owned(),
            line: line_of(text, table, key),
            key: Some(if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") }),
            reason,
        };
        cfg.check().map_err(error)?;
        cfg.tls_settings = cfg.load_tls().map_err(error)?;
        Ok(cfg)
    }

    /// Reads `[tls]`'s PEM files; checks that TLS and WSS listeners have them.
    fn load_tls(&self) -> Result<sip_transport::TlsSettings, Broken> {
        let Some(t) = &self.tls else {
            for (key, addrs) in [("tls", &self.sip.tls), ("wss", &self.sip.wss)] {
                if !addrs.is_empty() {
                    let why = "needs a [tls] section with cert and key".into();
                    return Err(("sip", key, why));
                }
            }
            return Ok(sip_transport::TlsSettings::default());
        };
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| ("tls", key, format!("cannot read {}: {e}", path.display())))
        };
        let cert = read("cert", &t.cert)?;
        let key = read("key", &t.key)?;
        let ca = match &t.ca {
            Some(p) => Some(read("ca", p)?),
            None => None,
        };
        let client_certs = match t.require_client_cert {
            Some(_) if t.ca.is_none() => {
                return Err((
                    "tls",
                    "require_client_cert",
                    "needs ca (the CA clients' certificates chain to)".into(),
                ));
            }
            Some(false) => sip_transport::ClientCerts::Optional,
            _ => sip_transport::ClientCerts::Required,
        };
        sip_transport::TlsSettings::from_pem_with(&cert, &key, ca.as_deref(), client_certs).map_err(
            |e| {
                let (key, path) = match e.input {
                    sip_transport::PemInput::Cert => ("cert", &t.cert),
                    sip_transport::PemInput::Key => ("key", &t.key),
                    sip_transport::PemInput::Ca => ("ca", t.ca.as_ref().unwrap_or(&t.cert)),
                };
                ("tls", key, format!("{}: {e}", path.display()))
            },
        )
    }

    /// Checks the whole file, one concern after another; the first broken
    /// rule is the error.
    fn check(&self) -> Result<(), Broken> {
        self.check_http()?;
        self.check_sip()?;
        self.check_overload()?;
        self.check_storage_and_timers()?;
        self.check_accounts()?;
        self.check_provisioning()?;
        self.check_feature_codes()?;
        self.blf.settings().check().map_err(|e| ("blf", e.key, e.reason))?;
        self.check_registrar()?;
        self.check_routes()?;
        self.check_calls_and_log()?;
        self.check_capture()?;
        self.check_cluster()?;
        self.check_media()
    }

    /// `[cluster]`: PostgreSQL, a usable node id, an advertised address this
    /// node listens on, a lease of at least three heartbeats.
    fn check_cluster(&self) -> Result<(), Broken> {
        let Some(c) = &self.cluster else { return Ok(()) };
        let postgres = self
            .database
            .url
            .as_deref()
            .is_some_and(|u| matches!(store::parse_url(u), Ok(store::Backend::Postgres(_))));
        if !postgres {
            let why = "a cluster shares PostgreSQL: set [database] url = \"postgres://...\"";
            return Err(("cluster", "node_id", why.into()));
        }
        let name_ok = (1..=64).contains(&c.node_id.len())
            && c.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            let why = "must be 1..=64 of letters, digits, '.', '_', '-'";
            return Err(("cluster", "node_id", why.into()));
        }
        let listens = self.sip.udp.iter().any(|a| {
            a.port() == c.advertise.port()
                && (a.ip() == c.advertise.ip() || a.ip().is_unspecified())
        });
        if c.advertise.ip().is_unspecified() || c.advertise.port() == 0 || !listens {
            let why = format!(
                "{} must be an address other nodes reach this one at, one of [sip] udp",
                c.advertise
            );
            return Err(("cluster", "advertise", why));
        }
        if c.heartbeat_ms < 10 {
            return Err(("cluster", "heartbeat_ms", "must be at least 10".into()));
        }
        if c.lease_ms < 3 * c.heartbeat_ms {
            let why = "must be at least three heartbeats (3 * heartbeat_ms)";
            return Err(("cluster", "lease_ms", why.into()));
        }
        Ok(())
    }

    /// `[media]`: the rtpengine ng addresses, timeouts, what a call gets
    /// when none answers.
    fn check_media(&self) -> Result<(), Broken> {
        self.media.validate().map(|_| ()).map_err(|e| ("media", e.key, e.reason))
    }

    /// `[media]` checked ([`Config::parse`] refused a broken one).
    pub fn media_settings(&self) -> media_anchor::MediaSettings {
        self.media.validate().unwrap_or(media_anchor::MediaSettings::Off)
    }

    /// `[trace]` and `[hep]`.
    fn check_capture(&self) -> Result<(), Broken> {
        if self.trace.enabled && !(1 << 20..=1 << 40).contains(&self.trace.max_bytes) {
            return Err(("trace", "max_bytes", "must be 1048576 (1 MiB) ..= 2^40".into()));
        }
        if self.trace.keep_secs == 0 {
            return Err(("trace", "keep_secs", "must be at least 1".into()));
        }
        if self.hep.as_ref().is_some_and(|h| h.address.port() == 0) {
            return Err(("hep", "address", "needs a port (Homer listens on 9060)".into()));
        }
        Ok(())
    }

    /// `[sip]`: something to listen on, and sane socket limits.
    fn check_sip(&self) -> Result<(), Broken> {
        let sip = &self.sip;
        if sip.udp.is_empty() && sip.tcp.is_empty() {
            return Err(("sip", "udp", "at least one UDP or TCP listen address is needed".into()));
        }
        if sip.udp_sockets_per_addr == 0 || sip.udp_sockets_per_addr > 64 {
            return Err(("sip", "udp_sockets_per_addr", "must be 1..=64".into()));
        }
        if !(1024..=16 << 20).contains(&sip.max_message_bytes) {
            return Err(("sip", "max_message_bytes", "must be 1024..=16777216".into()));
        }
        if sip.tcp_max_connections_per_ip == 0 {
            return Err(("sip", "tcp_max_connections_per_ip", "must be at least 1".into()));
        }
        Ok(())
    }

    /// `[overload]`: a resume level under the shedding one, a usable
    /// `Retry-After`, a ban length when sources are rate limited.
    fn check_overload(&self) -> Result<(), Broken> {
        let o = &self.overload;
        if o.max_queue_delay_ms > 0 && o.resume_queue_delay_ms >= o.max_queue_delay_ms {
            let why = "must be smaller than max_queue_delay_ms".into();
            return Err(("overload", "resume_queue_delay_ms", why));
        }
        if !(1..=3600).contains(&o.retry_after_secs) {
            return Err(("overload", "retry_after_secs", "must be 1..=3600".into()));
        }
        if o.source_rate > 0 && o.source_ban_secs == 0 {
            return Err(("overload", "source_ban_secs", "must be at least 1".into()));
        }
        Ok(())
    }

    /// `[database]` and `[timers]`.
    fn check_storage_and_timers(&self) -> Result<(), Broken> {
        self.database.check().map_err(|(key, why)| ("database", key, why))?;
        if self.timers.t1_ms == 0 {
            return Err(("timers", "t1_ms", "must be at least 1".into()));
        }
        if self.timers.t2_ms < self.timers.t1_ms {
            return Err(("timers", "t2_ms", "must not be smaller than t1_ms".into()));
        }
        Ok(())
    }

    /// `[[domains]]` name known customers; `[[extensions]]` give a password
    /// or hex HA1 hashes (what the file, not the provisioning rules, is
    /// about: the rest of an extension is [`Config::check_provisioning`]'s).
    fn check_accounts(&self) -> Result<(), Broken> {
        for d in &self.domains {
            if !self.customers.iter().any(|c| c.id == d.customer_id) {
                let why = format!(
                    "domain {:?} names customer {} which is not in [[customers]]",
                    d.name, d.customer_id
                );
                return Err(("domains", "customer_id", why));
            }
        }
        for e in &self.extensions {
            if e.password.is_none() && e.ha1_md5.is_none() && e.ha1_sha256.is_none() {
                let why = format!("extension {:?} needs password, ha1_md5 or ha1_sha256", e.name);
                return Err(("extensions", "password", why));
            }
            for h in [&e.ha1_md5, &e.ha1_sha256].into_iter().flatten() {
                if !h.bytes().all(|b| b.is_ascii_hexdigit()) || !(h.len() == 32 || h.len() == 64) {
                    let why = format!("extension {:?}: HA1 must be hex", e.name);
                    return Err(("extensions", "ha1_md5", why));
                }
            }
        }
        Ok(())
    }

    /// `[[extensions]]` and `[[groups]]` by the provisioning rules (those
    /// the API and the switch apply), against the file's own domains,
    /// extensions and groups; and no group defined twice.
    fn check_provisioning(&self) -> Result<(), Broken> {
        let (_, domains, extensions) = self.accounts();
        let groups = self.ring_groups(records::Timestamp::NOT_YET);
        let known = provisioning::Listed {
            domains: &domains,
            extensions: &extensions,
            ring_groups: &groups,
        };
        for e in &extensions {
            provisioning::check_extension(e, &known)
                .map_err(|i| broken("extensions", &e.aor(), i))?;
        }
        for (i, g) in groups.iter().enumerate() {
            let name = format!("{}@{}", g.number, g.domain);
            if groups[..i].iter().any(|o| o.id == g.id) {
                return Err(("groups", "number", format!("{name}: defined twice (same id)")));
            }
            provisioning::check_ring_group(g, &known).map_err(|i| broken("groups", &name, i))?;
        }
        Ok(())
    }

    /// `[feature_codes]` and each domain's own: well formed, and no code
    /// clashes with another or with an extension or group number of the
    /// domain.
    fn check_feature_codes(&self) -> Result<(), Broken> {
        if let Some(e) = self.feature_codes.check([]).into_iter().next() {
            return Err(("feature_codes", e.key, e.reason));
        }
        let settings = self.feature_code_settings();
        for d in &self.domains {
            let codes = settings.for_domain(&d.name);
            let extensions = self
                .extensions
                .iter()
                .filter(|e| e.domain.eq_ignore_ascii_case(&d.name))
                .map(|e| pbx_features::Dialable::Extension(&e.name));
            let groups = self
                .groups
                .iter()
                .filter(|g| g.domain.eq_ignore_ascii_case(&d.name))
                .map(|g| pbx_features::Dialable::RingGroup(&g.number));
            if let Some(e) = codes.check(extensions.chain(groups)).into_iter().next() {
                let own = d.feature_codes.is_some();
                let (table, key) =
                    if own { ("domains", "feature_codes") } else { ("feature_codes", e.key) };
                let reason = if own {
                    format!("{}: {}: {}", d.name, e.key, e.reason)
                } else {
                    format!("in domain {}: {}", d.name, e.reason)
                };
                return Err((table, key, reason));
            }
        }
        Ok(())
    }

    /// The feature codes of every domain, for the switch core.
    pub fn feature_code_settings(&self) -> pbx_features::FeatureCodeSettings {
        pbx_features::FeatureCodeSettings {
            default: self.feature_codes.clone(),
            per_domain: self
                .domains
                .iter()
                .filter_map(|d| Some((d.name.clone(), d.feature_codes.clone()?)))
                .collect(),
        }
    }

    /// `[registrar]`.
    fn check_registrar(&self) -> Result<(), Broken> {
        let r = &self.registrar;
        for a in &r.algorithms {
            if !matches!(a.to_ascii_uppercase().as_str(), "MD5" | "SHA-256") {
                let why = format!("unknown algorithm {a:?}; use SHA-256 or MD5");
                return Err(("registrar", "algorithms", why));
            }
        }
        if !matches!(r.ban_action.as_str(), "reject" | "drop") {
            return Err(("registrar", "ban_action", "must be \"reject\" or \"drop\"".into()));
        }
        if r.min_expires > r.max_expires {
            return Err(("registrar", "min_expires", "must not exceed max_expires".into()));
        }
        Ok(())
    }

    /// `[[carriers]]` and `[[routes]]` (with the groups' numbers) as the
    /// switch will take them.
    fn check_routes(&self) -> Result<(), Broken> {
        let state = switch::SwitchState {
            carriers: self.carriers.clone(),
            routes: self.routes.clone(),
            ring_groups: self.ring_groups(records::Timestamp::NOT_YET),
            ..Default::default()
        };
        state.check().map_err(|e| (e.table, e.key, e.reason))
    }

    /// `[calls]` and `[log]`.
    fn check_calls_and_log(&self) -> Result<(), Broken> {
        if self.calls.max_legs == 0 || self.calls.overall_timeout_secs == 0 {
            let why = "max_legs and overall_timeout_secs must be positive".into();
            return Err(("calls", "max_legs", why));
        }
        if self.log.level.parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            let why = format!(
                "unknown level {:?}; use error, warn, info, debug or trace",
                self.log.level
            );
            return Err(("log", "level", why));
        }
        Ok(())
    }

    fn check_http(&self) -> Result<(), Broken> {
        let h = &self.http;
        match (&h.tls_cert, &h.tls_key) {
            (Some(_), None) => return Err(("http", "tls_cert", "needs tls_key too".into())),
            (None, Some(_)) => return Err(("http", "tls_key", "needs tls_cert too".into())),
            (Some(c), Some(k)) => {
                for (key, path) in [("tls_cert", c), ("tls_key", k)] {
                    if let Err(e) = std::fs::metadata(path) {
                        return Err(("http", key, format!("cannot read {}: {e}", path.display())));
                    }
                }
            }
            (None, None) => {}
        }
        if !(1024..=16 << 20).contains(&h.body_limit_bytes) {
            return Err(("http", "body_limit_bytes", "must be 1024..=16777216".into()));
        }
        if !(0..=19).contains(&h.nice) {
            return Err(("http", "nice", "must be 0..=19".into()));
        }
        let w = &self.webhooks;
        if w.queue_len == 0 || w.max_attempts == 0 {
            return Err((
                "webhooks",
                "queue_len",
                "queue_len and max_attempts must be positive".into(),
            ));
        }
        let header_ok = !w.signature_header.is_empty()
            && w.signature_header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !header_ok {
            return Err((
                "webhooks",
                "signature_header",
                "must be a header name (letters, digits, -)".into(),
            ));
        }
        for c in &self.customers {
            if c.webhook_url.is_some() != c.webhook_secret.is_some() {
                return Err((
                    "customers",
                    "webhook_url",
                    format!("customer {}: webhook_url and webhook_secret go together", c.id),
                ));
            }
            if let Some(u) = &c.webhook_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err((
                        "customers",
                        "webhook_url",
                        format!("{u:?} is not an http(s) URL"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Webhook delivery settings.
    pub fn webhooks(&self) -> api::WebhookOptions {
        let w = &self.webhooks;
        api::WebhookOptions {
            signature_header: w.signature_header.clone(),
            queue_len: w.queue_len,
            max_attempts: w.max_attempts,
            backoff: Duration::from_millis(w.backoff_ms),
            timeout: Duration::from_millis(w.timeout_ms),
            ..Default::default()
        }
    }

    /// Registrar settings derived from `[registrar]`.
    pub fn registrar(&self) -> registrar::RegistrarConfig {
        let r = &self.registrar;
        registrar::RegistrarConfig {
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            nonce_lifetime: Duration::from_secs(r.nonce_lifetime_secs),
            max_bindings_per_aor: r.max_bindings_per_aor,
            algorithms: r
                .algorithms
                .iter()
                .map(|a| {
                    if a.eq_ignore_ascii_case("MD5") {
                        registrar::Algorithm::Md5
                    } else {
                        registrar::Algorithm::Sha256
                    }
                })
                .collect(),
            ban: registrar::BanConfig {
                max_failures: r.ban_max_failures,
                window: Duration::from_secs(r.ban_window_secs),
                ban_for: Duration::from_secs(r.ban_secs),
                action: if r.ban_action == "drop" {
                    registrar::BanAction::Drop
                } else {
                    registrar::BanAction::Reject
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Accounts from the config, with passwords turned into HA1 hashes.
    pub fn accounts(
        &self,
    ) -> (Vec<records::Customer>, Vec<records::Domain>, Vec<records::Extension>) {
        let customers = self
            .customers
            .iter()
            .map(|c| records::Customer {
                id: c.id,
                name: c.name.clone(),
                api_keys: c.api_keys.clone(),
            })
            .collect();
        let domains = self
            .domains
            .iter()
            .map(|d| records::Domain {
                name: d.name.clone(),
                aliases: d.aliases.clone(),
                customer_id: d.customer_id,
            })
            .collect();
        let extensions = self
            .extensions
            .iter()
            .map(|e| {
                let mut x = match &e.password {
                    Some(pw) => registrar::extension_with_password(&e.name, &e.domain, pw),
                    None => records::Extension {
                        name: e.name.clone(),
                        domain: e.domain.clone(),
                        ha1_md5: String::new(),
                        ..Default::default()
                    },
                };
                if let Some(h) = &e.ha1_md5 {
                    x.ha1_md5 = h.to_ascii_lowercase();
                }
                if let Some(h) = &e.ha1_sha256 {
                    x.ha1_sha256 = h.to_ascii_lowercase();
                }
                x.display_name = e.display_name.clone();
                x.handling = e.handling();
                x
            })
            .collect();
        (customers, domains, extensions)
    }

    /// The owner of `domain`: the customer of its `[[domains]]` entry (nil
    /// when it has none).
    pub fn owner(&self, domain: &str) -> uuid::Uuid {
        let d = self.domains.iter().find(|d| d.name.eq_ignore_ascii_case(domain));
        d.map_or(records::NIL, |d| d.customer_id)
    }

    /// The `[[groups]]` as records (origin config), at `now`.
    pub fn ring_groups(&self, now: records::Timestamp) -> Vec<records::RingGroup> {
        self.groups.iter().map(|g| g.record(self.owner(&g.domain), now)).collect()
    }

    /// The switch core's settings, around the addresses the transport bound.
    pub fn switch(
        &self,
        listen: Vec<(sip_message::Transport, SocketAddr)>,
    ) -> switch::SwitchConfig {
        let mut c = switch::SwitchConfig::new(listen);
        c.aliases = self.sip.aliases.clone();
        c.user_agent = self.sip.user_agent.clone();
        c.force_rport = self.sip.force_rport;
        let t = &self.timers;
        c.timers = switch::SipTimers {
            t1: Duration::from_millis(t.t1_ms),
            t2: Duration::from_millis(t.t2_ms),
            t4: Duration::from_millis(t.t4_ms),
        };
        let calls = &self.calls;
        c.calls = switch::CallSettings {
            default_ring_timeout: Duration::from_secs(calls.default_ring_timeout_secs),
            overall_timeout: Duration::from_secs(calls.overall_timeout_secs),
            max_legs: calls.max_legs,
            stop_on_6xx: calls.stop_on_6xx,
            send_100rel_to_caller: calls.send_100rel_to_caller,
        };
        c.registrar = self.registrar();
        c.feature_codes = self.feature_code_settings();
        c.blf = self.blf.settings();
        let o = &self.overload;
        c.admission = switch::AdmissionConfig {
            max_queue_delay: Duration::from_millis(o.max_queue_delay_ms),
            resume_queue_delay: Duration::from_millis(o.resume_queue_delay_ms),
            sustain: Duration::from_millis(o.sustain_ms),
            max_transactions: o.max_transactions,
            retry_after_secs: o.retry_after_secs,
            max_register_rate: o.max_register_rate,
            source_rate: o.source_rate,
            source_ban: Duration::from_secs(o.source_ban_secs),
            ..Default::default()
        };
        c.media = self.media_settings();
        c.keepalive_interval = (self.registrar.keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(self.registrar.keepalive_interval_secs));
        c
    }

    /// Transport settings derived from `[sip]`.
    pub fn transport(&self) -> sip_transport::TransportConfig {
        sip_transport::TransportConfig {
            udp: self.sip.udp.clone(),
            tcp: self.sip.tcp.clone(),
            tls: self.sip.tls.clone(),
            ws: self.sip.ws.clone(),
            wss: self.sip.wss.clone(),
            tls_settings: self.tls_settings.clone(),
            udp_sockets_per_addr: self.sip.udp_sockets_per_addr,
            recv_buffer: self.sip.recv_buffer_bytes,
            send_buffer: self.sip.send_buffer_bytes,
            max_message: self.sip.max_message_bytes,
            tcp_idle_timeout: Duration::from_secs(self.sip.tcp_idle_timeout_secs),
            tcp_max_conns_per_ip: self.sip.tcp_max_connections_per_ip,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(Path::new("f.toml"), text).expect_err("should fail").to_string()
    }

    #[test]
    fn shipped_default_parses() {
        let text = include_str!("../../../config/forkswitch.toml");
        let c = Config::parse(Path::new("config/forkswitch.toml"), text).expect("default config");
        assert_eq!(c.sip.udp.len(), 1);
        assert_eq!(c.timers.t1_ms, 500);
    }

    #[test]
    fn errors_name_file_line_key() {
        let e = err("[sip]\nudp = [\"127.0.0.1:5060\"]\nbogus = 1\n");
        assert!(e.starts_with("f.toml:3: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = err("[sip]\nudp = [\"not an address\"]\n");
        assert!(e.starts_with("f.toml:2: "), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:5060\"]\n[timers]\nt1_ms = 500\nt2_ms = 10\n");
        assert_eq!(e, "f.toml:5: timers.t2_ms: must not be smaller than t1_ms");
        let e = err("[sip]\nudp = [\"127.0.0.1:5060\"]\n[database]\ncommit_delay_ms = 500\n");
        assert_eq!(e, "f.toml:4: database.commit_delay_ms: must be 0..=200");
        let e = err("[sip]\nudp = [\"127.0.0.1:5060\"]\n[database]\nurl = \"mysql://x\"\n");
        assert!(
            e.starts_with("f.toml:4: database.url: \"mysql://x\": expected sqlite:PATH"),
            "{e}"
        );
        let e =
            err("[sip]\nudp = [\"127.0.0.1:1\"]\n[database]\npath = \"a\"\nurl = \"sqlite:b\"\n");
        assert_eq!(e, "f.toml:5: database.url: set url or path, not both");
        let e = err("[sip]\nudp = []\n");
        assert!(e.contains("sip.udp"), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[log]\nlevel = \"loud\"\n");
        assert!(e.starts_with("f.toml:4: log.level"), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[media]\nmode = \"rtpengine\"\n");
        assert!(e.starts_with("f.toml:3: media.rtpengine: "), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[media]\nmode = \"rtpengine\"\nrtpengine = [\"localhost:2223\"]\n");
        assert!(
            e.starts_with("f.toml:5: media.rtpengine: \"localhost:2223\" is not IP:port"),
            "{e}"
        );
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[media]\ntimeout_ms = 1\n");
        assert_eq!(e, "f.toml:4: media.timeout_ms: must be 10..=60000");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[media]\non_failure = \"shrug\"\n");
        assert!(e.starts_with("f.toml:4: "), "{e}");
    }

    #[test]
    fn feature_code_clashes_name_file_line_key() {
        let c = "5e4a0680-804e-11ec-8477-2fea5968d85b";
        let base = format!(
            "[sip]\nudp = [\"127.0.0.1:1\"]\n[[customers]]\nid = \"{c}\"\n\
             [[groups]]\nnumber = \"**1\"\ndomain = \"test\"\nring_method = \"ring_all\"\n\
             destinations = [{{ type = \"sip\", target = \"sip:a@192.0.2.1\" }}]\n\
             [[domains]]\nname = \"test\"\ncustomer_id = \"{c}\"\n"
        );
        // The default directed pickup prefix starts ring group **1's number.
        let e = err(&format!("{base}[feature_codes]\ndirected_pickup = \"**\"\n"));
        assert!(e.starts_with("f.toml:14: feature_codes.directed_pickup: in domain test: "), "{e}");
        // The domain's own codes: group pickup is the group's number.
        let e = err(&format!(
            "{base}feature_codes = {{ group_pickup = \"**1\", directed_pickup = \"*7\" }}\n"
        ));
        assert!(e.starts_with("f.toml:13: domains.feature_codes: test: group_pickup: "), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[blf]\nmin_expires = 600\nmax_expires = 60\n");
        assert_eq!(e, "f.toml:5: blf.max_expires: must not be below min_expires");
        // Codes that clash with each other.
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[feature_codes]\ngroup_pickup = \"*4\"\nlogin_toggle = \"*4\"\n");
        assert!(e.starts_with("f.toml:5: feature_codes.login_toggle: "), "{e}");
        // A domain with codes of its own that clash with nothing.
        let ok = format!("{base}feature_codes = {{ directed_pickup = \"*7\" }}\n");
        let cfg = Config::parse(Path::new("f.toml"), &ok).expect("no clash");
        let codes = cfg.feature_code_settings();
        assert_eq!(codes.for_domain("test").directed_pickup, "*7");
        assert_eq!(codes.for_domain("other").directed_pickup, "**");
    }

    /// `[[extensions]]` with `extra`, after a customer and domain `test`
    /// and extension `b`.
    fn extension_err(extra: &str) -> String {
        let c = "5e4a0680-804e-11ec-8477-2fea5968d85b";
        err(&format!(
            "[sip]\nudp = [\"127.0.0.1:1\"]\n[[customers]]\nid = \"{c}\"\n\
             [[domains]]\nname = \"test\"\ncustomer_id = \"{c}\"\n\
             [[extensions]]\nname = \"b\"\ndomain = \"test\"\npassword = \"p\"\n\
             [[extensions]]\nname = \"a\"\ndomain = \"test\"\npassword = \"p\"\n{extra}"
        ))
    }

    #[test]
    fn call_handling_errors_name_the_key() {
        let e = extension_err("max_calls = 0\n");
        assert_eq!(e, "f.toml:16: extensions.max_calls: a@test: must be at least 1 (leave it out for no limit)");
        let e = extension_err("forward_noanswer_secs = 5\n");
        assert!(e.contains("extensions.forward_noanswer_secs: a@test: set without"), "{e}");
        let fwd = |to: &str| format!("forward_noanswer = {to}\n");
        let e = extension_err(&fwd(r#"{ type = "endpoint", target = "nobody@test" }"#));
        assert!(
            e.starts_with("f.toml:16: extensions.forward_noanswer: a@test: \"nobody@test\""),
            "{e}"
        );
        let e = extension_err(&fwd(r#"{ type = "endpoint", target = "a@test" }"#));
        assert!(e.ends_with("forwards to itself"), "{e}");
        let e = extension_err(&fwd(r#"{ type = "tel", target = "555" }"#));
        assert!(e.contains("not an E.164 number"), "{e}");
        let e = extension_err(&fwd(r#"{ type = "groupcall", target = "999" }"#));
        assert!(e.contains("not a [[groups]] number"), "{e}");
        let e = extension_err(&fwd(r#"{ type = "endpoint" }"#));
        assert!(e.starts_with("f.toml:16: ") && e.contains("target"), "{e}");
        let good = fwd(r#"{ type = "endpoint", target = "b@test" }"#);
        let ok = extension_err(&format!("{good}bogus = 1\n"));
        assert!(ok.contains("bogus"), "a good forward passes; the next error is found: {ok}");
    }

    /// `[[groups]]` `extra` after a customer, domain `test` and extension
    /// `test11`.
    fn with_groups(extra: &str) -> Result<Config, String> {
        let c = "5e4a0680-804e-11ec-8477-2fea5968d85b";
        let text = format!(
            "[sip]\nudp = [\"127.0.0.1:1\"]\n[[customers]]\nid = \"{c}\"\n\
             [[domains]]\nname = \"test\"\ncustomer_id = \"{c}\"\n\
             [[extensions]]\nname = \"test11\"\ndomain = \"test\"\npassword = \"p\"\n{extra}"
        );
        Config::parse(Path::new("f.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn groups_are_ring_group_records_checked_by_the_provisioning_rules() {
        let group = |dests: &str| {
            format!(
                "[[groups]]\nnumber = \"800\"\ndomain = \"test\"\nring_method = \"linear\"\n\
                 send_reason = false\nmax_ring_secs = 60\ndestinations = [{dests}]\n"
            )
        };
        let ok = group(
            r#"{ type = "endpoint", target = "test11@test", ring_timeout_secs = 10 },
               { type = "tel", target = "+15551234567", delay_secs = 5 }"#,
        );
        let cfg = with_groups(&ok).expect("valid");
        let at = records::Timestamp::from_micros(1);
        let [g] = cfg.ring_groups(at).try_into().expect("one group");
        assert_eq!(g.id, records::config_id("800@test"));
        assert_eq!(
            g.customer_id,
            "5e4a0680-804e-11ec-8477-2fea5968d85b".parse::<uuid::Uuid>().expect("id")
        );
        assert_eq!((g.origin, g.tm_create, g.tm_update), (records::Origin::Config, at, at));
        assert_eq!((g.ring_method, g.send_reason), (records::RingMethod::Linear, false));
        assert_eq!((g.max_ring_secs, g.skip_busy), (Some(60), false));
        let d = &g.destinations;
        assert_eq!((d[0].target.as_str(), d[0].ring_timeout_secs), ("test11@test", Some(10)));
        assert_eq!((d[1].kind, d[1].delay_secs), (records::AddressType::Tel, Some(5)));

        let e =
            with_groups(&group(r#"{ type = "tel", target = "+15551234567", delay_secs = 3601 }"#))
                .expect_err("delay");
        assert_eq!(
            e,
            "f.toml:18: groups.destinations: 800@test: destinations[0].delay_secs: must be 0..=3600"
        );
        let e = with_groups(&group(r#"{ type = "endpoint", target = "x@elsewhere" }"#))
            .expect_err("elsewhere");
        assert!(e.contains("destinations[0].target: \"x@elsewhere\" is not name@domain"), "{e}");
        let e = with_groups(&group(r#"{ type = "sip", target = "b@h", delay = 1 }"#))
            .expect_err("unknown key");
        assert!(e.starts_with("f.toml:18: ") && e.contains("delay"), "{e}");
        let twice = format!(
            "{ok}{}id = \"4b4d2c5e-0c3e-11ee-9a8c-0b6c1e0f4a13\"\n",
            group("{ type = \"groupcall\", target = \"800\" }")
        );
        let e = with_groups(&twice).expect_err("taken");
        assert!(e.ends_with("groups.number: 800@test: ring group 800@test exists already"), "{e}");
        let e = with_groups(&format!("{ok}{ok}")).expect_err("twice");
        assert!(e.ends_with("groups.number: 800@test: defined twice (same id)"), "{e}");
    }

    #[test]
    fn cluster_needs_postgres_and_an_address_it_listens_on() {
        let base = "[sip]\nudp = [\"127.0.0.2:5060\"]\n";
        let pg = "[database]\nurl = \"postgres://fs@127.0.0.1/fs\"\n";
        let cluster = |extra: &str| {
            format!("[cluster]\nnode_id = \"n1\"\nadvertise = \"127.0.0.2:5060\"\n{extra}")
        };
        let e = err(&format!("{base}{}", cluster("")));
        assert_eq!(
            e,
            "f.toml:4: cluster.node_id: a cluster shares PostgreSQL: set [database] url = \"postgres://...\""
        );
        let e = err(&format!("{base}[database]\nurl = \"sqlite:x.db\"\n{}", cluster("")));
        assert!(e.starts_with("f.toml:6: cluster.node_id: a cluster shares PostgreSQL"), "{e}");
        let ok = Config::parse(Path::new("f.toml"), &format!("{base}{pg}{}", cluster("")))
            .expect("valid");
        let c = ok.cluster.expect("cluster");
        assert_eq!((c.heartbeat_ms, c.lease_ms), (1000, 5000));
        let e = err(&format!("{base}{pg}{}", cluster("lease_ms = 2000\n")));
        assert_eq!(
            e,
            "f.toml:8: cluster.lease_ms: must be at least three heartbeats (3 * heartbeat_ms)"
        );
        let e = err(&format!(
            "{base}{pg}[cluster]\nnode_id = \"n 1\"\nadvertise = \"127.0.0.2:5060\"\n"
        ));
        assert!(e.starts_with("f.toml:6: cluster.node_id: must be 1..=64"), "{e}");
        let e = err(&format!(
            "{base}{pg}[cluster]\nnode_id = \"n1\"\nadvertise = \"127.0.0.3:5060\"\n"
        ));
        assert!(e.starts_with("f.toml:7: cluster.advertise: 127.0.0.3:5060 must be"), "{e}");
        let e = err(&format!("{base}{pg}[cluster]\nnode_id = \"n1\"\n"));
        assert!(e.starts_with("f.toml:") && e.contains("advertise"), "{e}");
        let wild = "[sip]\nudp = [\"0.0.0.0:5070\"]\n";
        let ok = format!("{wild}{pg}[cluster]\nnode_id = \"n1\"\nadvertise = \"192.0.2.5:5070\"\n");
        Config::parse(Path::new("f.toml"), &ok).expect("a wildcard listener");
    }

    #[test]
    fn tls_errors_name_file_line_key() {
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\ntls = [\"127.0.0.1:5061\"]\n");
        assert_eq!(e, "f.toml:3: sip.tls: needs a [tls] section with cert and key");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\nwss = [\"127.0.0.1:8443\"]\n");
        assert_eq!(e, "f.toml:3: sip.wss: needs a [tls] section with cert and key");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\nws = [\"localhost\"]\n");
        assert!(e.starts_with("f.toml:3: "), "{e}");
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = crate::gen_cert::write(dir.path()).expect("gen-cert");
        let section = |c: &Path, k: &Path| {
            format!(
                "[sip]\nudp = [\"127.0.0.1:1\"]\ntls = [\"127.0.0.1:0\"]\n[tls]\ncert = {:?}\nkey = {:?}\n",
                c.display().to_string(),
                k.display().to_string()
            )
        };
        let missing = dir.path().join("missing.pem");
        let e = err(&section(&missing, &key));
        assert!(e.starts_with("f.toml:5: tls.cert: cannot read "), "{e}");
        let e = err(&section(&cert, &missing));
        assert!(e.starts_with("f.toml:6: tls.key: cannot read "), "{e}");
        let e = err(&section(&key, &key));
        assert!(e.starts_with("f.toml:5: tls.cert: ") && e.contains("no certificate"), "{e}");
        let e = err(&section(&cert, &cert));
        assert!(e.starts_with("f.toml:6: tls.key: ") && e.contains("no private key"), "{e}");
        let e = err(&format!("{}require_client_cert = false\n", section(&cert, &key)));
        assert_eq!(
            e,
            "f.toml:7: tls.require_client_cert: needs ca (the CA clients' certificates chain to)"
        );
        let ok = Config::parse(Path::new("f.toml"), &section(&cert, &key)).expect("valid");
        assert!(ok.transport().tls_settings.can_serve());
    }
}
