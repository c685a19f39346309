//! Banning sources that keep failing authentication.
//!
//! Failures are counted per source in a fixed window that starts at the
//! first failure; reaching [`BanConfig::max_failures`] within
//! [`BanConfig::window`] bans the source for [`BanConfig::ban_for`]. A
//! source is an IPv4 address, or the /64 prefix of an IPv6 address (one
//! host usually owns a whole /64); IPv4-mapped IPv6 counts as IPv4.
//!
//! Memory is bounded by [`BanConfig::max_tracked`]: when the table is full,
//! finished entries are dropped first, then unbanned counters, oldest window
//! first (never bans); when only bans are left, new failures go uncounted.
//! Sources are kept in address order, so which counter makes room and the
//! order of ended bans are the same on every run.
//!
//! Single owner, no locks: counting takes `&mut self`, asking `&self`; time
//! is handed in.
//!
//! Note that over UDP a source address can be forged, so a ban can be
//! provoked against someone else's address; keep `ban_for` moderate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// What to do with a REGISTER from a banned source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BanAction {
    /// Answer 403 Forbidden.
    #[default]
    Reject,
    /// Send nothing.
    Drop,
}

/// Ban settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanConfig {
    /// Failures that trigger a ban (default 10; 0 disables banning).
    pub max_failures: u32,
    /// The window they must fall in (default 60 s).
    pub window: Duration,
    /// How long a ban lasts (default 300 s).
    pub ban_for: Duration,
    /// Answer or drop while banned (default [`BanAction::Reject`]).
    pub action: BanAction,
    /// Most sources tracked at once (default 65 536).
    pub max_tracked: usize,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban_for: Duration::from_secs(300),
            action: BanAction::Reject,
            max_tracked: 65_536,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

impl Entry {
    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    fn finished(&self, now: Instant, window: Duration) -> bool {
        !self.banned(now) && now.saturating_duration_since(self.window_start) >= window
    }
}

/// What one counted failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the source is not banned.
    Counted,
    /// This failure banned the source, for this long.
    Banned(Duration),
    /// The source was banned already.
    StillBanned,
    /// Not counted: banning is off, or the table is full of bans.
    Untracked,
}

impl Verdict {
    /// `true` when the source is banned after this failure.
    pub fn banned(self) -> bool {
        matches!(self, Verdict::Banned(_) | Verdict::StillBanned)
    }
}

/// The failure counter and ban list.
pub struct AuthLimiter {
    cfg: BanConfig,
    map: BTreeMap<IpAddr, Entry>,
    /// Sources whose ban ended, not yet returned by [`AuthLimiter::sweep`].
    unbanned: Vec<IpAddr>,
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimiter").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The key a source address is counted under.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthLimiter {
    /// An empty limiter.
    pub fn new(cfg: BanConfig) -> AuthLimiter {
        AuthLimiter { cfg, map: BTreeMap::new(), unbanned: Vec::new() }
    }

    /// The settings.
    pub fn config(&self) -> &BanConfig {
        &self.cfg
    }

    /// `true` while `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        self.map.get(&key).is_some_and(|e| e.banned(now))
    }

    /// Counts a failed authentication from `ip`; `true` when `ip` is banned
    /// (now or already).
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.record(ip, now).banned()
    }

    /// Counts a failed authentication from `ip` and says what it did.
    pub fn record(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.cfg.max_failures == 0 {
            return Verdict::Untracked;
        }
        let key = source_key(ip);
        let cap = self.cfg.max_tracked.max(1);
        if !self.map.contains_key(&key) && self.map.len() >= cap {
            self.make_room(now);
            if self.map.len() >= cap {
                return Verdict::Untracked;
            }
        }
        let e = self.map.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        if e.banned(now) {
            return Verdict::StillBanned;
        }
        let ban_ended = e.banned_until.is_some();
        if ban_ended || now.saturating_duration_since(e.window_start) >= self.cfg.window {
            if ban_ended {
                self.unbanned.push(key);
            }
            *e = Entry { window_start: now, failures: 0, banned_until: None };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.cfg.max_failures {
            let ban = self.cfg.ban_for.min(Duration::from_secs(365 * 86_400));
            e.banned_until = now.checked_add(ban);
            return Verdict::Banned(ban);
        }
        Verdict::Counted
    }

    fn make_room(&mut self, now: Instant) {
        let window = self.cfg.window;
        let m = &mut self.map;
        m.retain(|_, e| !e.finished(now, window));
        let cap = self.cfg.max_tracked.max(1);
        if m.len() < cap {
            return;
        }
        // Free an eighth of the table from counters, oldest window first
        // (bans are kept), so the next inserts are cheap again.
        let mut counters: Vec<(Instant, IpAddr)> =
            m.iter().filter(|(_, e)| !e.banned(now)).map(|(ip, e)| (e.window_start, *ip)).collect();
        counters.sort_unstable();
        for (_, ip) in counters.into_iter().take((cap / 8).max(1)) {
            m.remove(&ip);
        }
    }

    /// Drops finished entries (ended bans, old windows); returns the
    /// sources whose ban has ended since the last sweep (as counted: an
    /// IPv6 source by its /64).
    pub fn sweep(&mut self, now: Instant) -> Vec<IpAddr> {
        let window = self.cfg.window;
        let mut unbanned = std::mem::take(&mut self.unbanned);
        for (ip, e) in self.map.iter_mut() {
            if let Some(t) = e.banned_until.filter(|t| now >= *t) {
                unbanned.push(*ip);
                // A new window from the end of the ban: the next failure
                // counts from one again.
                *e = Entry { window_start: t, failures: 0, banned_until: None };
            }
        }
        self.map.retain(|_, e| !e.finished(now, window));
        unbanned.sort();
        unbanned.dedup();
        unbanned
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bans_after_n_failures_in_window() {
        let mut l = AuthLimiter::new(BanConfig { max_failures: 3, ..BanConfig::default() });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(!l.record_failure(a, t0));
        assert!(!l.record_failure(a, t0 + Duration::from_secs(1)));
        assert!(!l.is_banned(a, t0 + Duration::from_secs(1)));
        assert!(l.record_failure(a, t0 + Duration::from_secs(2)));
        assert!(l.is_banned(a, t0 + Duration::from_secs(3)));
        assert!(!l.is_banned(ip("192.0.2.2"), t0));
        assert!(l.is_banned(a, t0 + Duration::from_secs(301)));
        assert!(!l.is_banned(a, t0 + Duration::from_secs(303)));
        // After the ban, counting starts over.
        assert!(!l.record_failure(a, t0 + Duration::from_secs(303)));
    }

    #[test]
    fn verdicts_and_unbans_are_reported_once() {
        let mut l = AuthLimiter::new(BanConfig { max_failures: 2, ..BanConfig::default() });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(l.record(a, t0), Verdict::Counted);
        assert_eq!(l.record(a, t0), Verdict::Banned(Duration::from_secs(300)));
        assert_eq!(l.record(a, t0), Verdict::StillBanned);
        assert_eq!(l.sweep(t0 + Duration::from_secs(299)), Vec::<IpAddr>::new());
        assert_eq!(l.sweep(t0 + Duration::from_secs(300)), vec![a]);
        assert_eq!(l.sweep(t0 + Duration::from_secs(301)), Vec::<IpAddr>::new());
        // A ban that ends between sweeps and is followed by a failure is
        // reported by the next sweep.
        let b = ip("192.0.2.2");
        l.record(b, t0);
        l.record(b, t0);
        assert_eq!(l.record(b, t0 + Duration::from_secs(400)), Verdict::Counted);
        assert_eq!(l.sweep(t0 + Duration::from_secs(401)), vec![b]);
        let mut off = AuthLimiter::new(BanConfig { max_failures: 0, ..BanConfig::default() });
        assert_eq!(off.record(a, t0), Verdict::Untracked);
    }

    #[test]
    fn window_resets() {
        let mut l = AuthLimiter::new(BanConfig { max_failures: 3, ..BanConfig::default() });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        l.record_failure(a, t0);
        l.record_failure(a, t0 + Duration::from_secs(30));
        assert!(!l.record_failure(a, t0 + Duration::from_secs(61)));
        assert!(!l.record_failure(a, t0 + Duration::from_secs(62)));
        assert!(l.record_failure(a, t0 + Duration::from_secs(63)));
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_v4() {
        let mut l = AuthLimiter::new(BanConfig { max_failures: 2, ..BanConfig::default() });
        let t0 = Instant::now();
        l.record_failure(ip("2001:db8:1:2::1"), t0);
        assert!(l.record_failure(ip("2001:db8:1:2::ffff"), t0));
        assert!(l.is_banned(ip("2001:db8:1:2:aaaa::9"), t0));
        assert!(!l.is_banned(ip("2001:db8:1:3::1"), t0));
        l.record_failure(ip("::ffff:192.0.2.9"), t0);
        assert!(l.record_failure(ip("192.0.2.9"), t0));
    }

    #[test]
    fn bounded_and_bans_survive_pressure() {
        let mut l = AuthLimiter::new(BanConfig {
            max_failures: 2,
            max_tracked: 16,
            ..BanConfig::default()
        });
        let t0 = Instant::now();
        let victim = ip("198.51.100.1");
        l.record_failure(victim, t0);
        assert!(l.record_failure(victim, t0));
        for k in 0..1000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + k));
            l.record_failure(a, t0);
            assert!(l.tracked() <= 16);
        }
        assert!(l.is_banned(victim, t0 + Duration::from_secs(1)));
        l.sweep(t0 + Duration::from_secs(400));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_full_table_forgets_the_oldest_counter_first() {
        let mut l =
            AuthLimiter::new(BanConfig { max_failures: 2, max_tracked: 3, ..BanConfig::default() });
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (a, b, c, d) = (ip("192.0.2.4"), ip("192.0.2.3"), ip("192.0.2.2"), ip("192.0.2.1"));
        l.record(a, t0);
        l.record(b, t0 + s(1));
        l.record(c, t0 + s(2));
        l.record(d, t0 + s(3));
        // a (the oldest window) made room: its next failure counts from one.
        assert_eq!(l.record(b, t0 + s(4)), Verdict::Banned(s(300)));
        assert_eq!(l.record(c, t0 + s(4)), Verdict::Banned(s(300)));
        assert_eq!(l.record(d, t0 + s(4)), Verdict::Banned(s(300)));
        // Only bans are left: a's failure is not counted.
        assert_eq!(l.record(a, t0 + s(5)), Verdict::Untracked);
        assert_eq!(l.sweep(t0 + s(305)), vec![d, c, b], "ended bans in address order");
    }

    #[test]
    fn zero_disables() {
        let mut l = AuthLimiter::new(BanConfig { max_failures: 0, ..BanConfig::default() });
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(!l.record_failure(ip("192.0.2.1"), t0));
        }
        assert_eq!(l.tracked(), 0);
    }
}
