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
    /// RFC 3261 timers.
    #[serde(default)]
    pub timers: TimerConfig,
    /// REST API (served once the API lands; validated now so that a config
    /// written today keeps working).
    #[serde(default)]
    #[allow(dead_code)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
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
    /// Listen address of the REST API.
    #[serde(default = "http_listen")]
    #[allow(dead_code)]
    pub listen: SocketAddr,
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
        HttpConfig { listen: http_listen() }
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

/// 1-based line of the first `key =` inside `[table]` (or anywhere).
fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
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
    None
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
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError { path: path.to_owned(), line, key: None, reason: e.message().to_owned() }
        })?;
        cfg.check().map_err(|(table, key, reason)| ConfigError {
            path: path.to_owned(),
            line: line_of(text, table, key),
            key: Some(if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") }),
            reason,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), (&'static str, &'static str, String)> {
        if self.sip.udp.is_empty() && self.sip.tcp.is_empty() {
            return Err(("sip", "udp", "at least one UDP or TCP listen address is needed".into()));
        }
        if self.sip.udp_sockets_per_addr == 0 || self.sip.udp_sockets_per_addr > 64 {
            return Err(("sip", "udp_sockets_per_addr", "must be 1..=64".into()));
        }
        if !(1024..=16 << 20).contains(&self.sip.max_message_bytes) {
            return Err(("sip", "max_message_bytes", "must be 1024..=16777216".into()));
        }
        if self.sip.tcp_max_connections_per_ip == 0 {
            return Err(("sip", "tcp_max_connections_per_ip", "must be at least 1".into()));
        }
        if self.timers.t1_ms == 0 {
            return Err(("timers", "t1_ms", "must be at least 1".into()));
        }
        if self.timers.t2_ms < self.timers.t1_ms {
            return Err(("timers", "t2_ms", "must not be smaller than t1_ms".into()));
        }
        if self.log.level.parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            return Err((
                "log",
                "level",
                format!(
                    "unknown level {:?}; use error, warn, info, debug or trace",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// Transaction timers derived from `[timers]`.
    pub fn transaction(&self) -> sip_transaction::Config {
        sip_transaction::Config {
            t1: Duration::from_millis(self.timers.t1_ms),
            t2: Duration::from_millis(self.timers.t2_ms),
            t4: Duration::from_millis(self.timers.t4_ms),
            ..Default::default()
        }
    }

    /// Transport settings derived from `[sip]`.
    pub fn transport(&self) -> sip_transport::TransportConfig {
        sip_transport::TransportConfig {
            udp: self.sip.udp.clone(),
            tcp: self.sip.tcp.clone(),
            udp_sockets_per_addr: self.sip.udp_sockets_per_addr,
            recv_buffer: self.sip.recv_buffer_bytes,
            send_buffer: self.sip.send_buffer_bytes,
            max_message: self.sip.max_message_bytes,
            tcp_idle_timeout: Duration::from_secs(self.sip.tcp_idle_timeout_secs),
            tcp_max_conns_per_ip: self.sip.tcp_max_connections_per_ip,
            force_rport: self.sip.force_rport,
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
        let e = err("[sip]\nudp = []\n");
        assert!(e.contains("sip.udp"), "{e}");
        let e = err("[sip]\nudp = [\"127.0.0.1:1\"]\n[log]\nlevel = \"loud\"\n");
        assert!(e.starts_with("f.toml:4: log.level"), "{e}");
    }
}
