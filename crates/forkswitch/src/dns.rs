//! Finding a SIP server per RFC 3263 section 4: a URI's host becomes an
//! ordered list of (transport, address) to try. NAPTR (SIP+D2U, SIP+D2T,
//! SIPS+D2T), then SRV (`_sip._udp`, `_sip._tcp`, by priority then weight),
//! then A/AAAA on port 5060. A TLS target (`sips:`, `transport=tls`) asks
//! `_sips._tcp`, then A/AAAA on port 5061. An explicit port skips NAPTR and
//! SRV; an explicit transport skips NAPTR. IP addresses need no lookup and
//! never come here. Runs in the I/O shell: the call core only sees the
//! resulting list.

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioAsyncResolver;
use sip_message::Transport;
use std::net::SocketAddr;
use std::time::Duration;

/// A stub resolver for SIP targets.
#[derive(Clone)]
pub struct SipResolver {
    r: TokioAsyncResolver,
    tcp: bool,
}

impl SipResolver {
    /// Uses `servers` (all on port 53 unless given), or the system's
    /// resolv.conf when empty. `tcp`: whether TCP targets may be chosen.
    pub fn new(servers: &[SocketAddr], timeout: Duration, tcp: bool) -> Result<Self, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        let r = if servers.is_empty() {
            let (cfg, mut sys) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
            sys.timeout = timeout;
            sys.attempts = 2;
            TokioAsyncResolver::tokio(cfg, sys)
        } else {
            let mut group = NameServerConfigGroup::new();
            for s in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true));
            }
            TokioAsyncResolver::tokio(ResolverConfig::from_parts(None, vec![], group), opts)
        };
        Ok(SipResolver { r, tcp })
    }

    async fn addresses(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        match self.r.lookup_ip(host).await {
            Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// SRV records of `name` in RFC 2782 order (priority, then weight,
    /// heaviest first), each resolved to addresses.
    async fn srv(&self, name: &str, t: Transport, out: &mut Vec<(Transport, SocketAddr)>) -> bool {
        let Ok(lookup) = self.r.srv_lookup(name).await else { return false };
        let mut recs: Vec<_> = lookup.iter().cloned().collect();
        if recs.is_empty() {
            return false;
        }
        recs.sort_by_key(|s| (s.priority(), std::cmp::Reverse(s.weight())));
        for s in recs {
            let target = s.target().to_utf8();
            for a in self.addresses(target.trim_end_matches('.'), s.port()).await {
                out.push((t, a));
            }
        }
        true
    }

    /// The ordered targets for `host` with optional `port` and `transport`.
    pub async fn targets(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
    ) -> Vec<(Transport, SocketAddr)> {
        let mut out = Vec::new();
        if let Some(p) = port {
            let t = transport.unwrap_or(Transport::Udp);
            return self.addresses(host, p).await.into_iter().map(|a| (t, a)).collect();
        }
        if let Some(t) = transport {
            let name = match t {
                Transport::Tls => format!("_sips._tcp.{host}"),
                t => format!("_sip._{}.{host}", t.uri_param()),
            };
            if !self.srv(&name, t, &mut out).await {
                let port = t.default_port();
                out.extend(self.addresses(host, port).await.into_iter().map(|a| (t, a)));
            }
            return out;
        }
        // NAPTR: services SIP+D2U / SIP+D2T / SIPS+D2T with the "s" flag point at SRV
        // names, in order, then preference.
        if let Ok(naptr) = self.r.lookup(host, RecordType::NAPTR).await {
            let mut recs: Vec<_> = naptr
                .iter()
                .filter_map(|r| match r {
                    RData::NAPTR(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            recs.sort_by_key(|n| (n.order(), n.preference()));
            for n in recs {
                let service = String::from_utf8_lossy(n.services()).to_ascii_uppercase();
                let t = match service.as_str() {
                    "SIP+D2U" => Transport::Udp,
                    "SIP+D2T" if self.tcp => Transport::Tcp,
                    "SIPS+D2T" => Transport::Tls,
                    _ => continue,
                };
                if !n.flags().eq_ignore_ascii_case(b"s") {
                    continue;
                }
                let name = n.replacement().to_utf8();
                self.srv(name.trim_end_matches('.'), t, &mut out).await;
            }
            if !out.is_empty() {
                return out;
            }
        }
        let mut found = self.srv(&format!("_sip._udp.{host}"), Transport::Udp, &mut out).await;
        if self.tcp {
            found |= self.srv(&format!("_sip._tcp.{host}"), Transport::Tcp, &mut out).await;
        }
        if !found {
            out.extend(self.addresses(host, 5060).await.into_iter().map(|a| (Transport::Udp, a)));
        }
        out
    }
}
