//! Admission before forking: overload control and per-source rate limits
//! (RFC 7339's idea without its header negotiation, and Kamailio's pike).
//!
//! **The load signal is the input queue delay**: how long the datagram
//! just taken waited between the transport reading it and the switch
//! getting it, reported by the shell ([`Load`]). It is what callers feel
//! (every message of a call setup waits in that queue) and it rises only
//! when the switch cannot keep up, whatever the message mix; the number of
//! live transactions grows with the call rate even when all is well (64*T1
//! of state per transaction), so it is kept only as a memory cap. When the
//! delay passes [`AdmissionConfig::max_queue_delay`] the switch is
//! overloaded until it falls under [`AdmissionConfig::resume_queue_delay`]
//! (hysteresis, so admission does not flap on every datagram). A burst is
//! not overload: the delay must stay past the limit for
//! [`AdmissionConfig::sustain`] (100 ms) first, unless an overload ended
//! within the last second (then at once, as CoDel re-enters dropping).
//! Defaults 50 / 10 ms: measured with `tests/bench/overload.sh`, a plain
//! 100 / 20 ms limit kept clean rates clean but let admitted calls' p99
//! setup reach 280 ms at twice the capacity, and a plain 50 ms limit shed
//! calls at the start of every load step. Meanwhile
//! every *new* INVITE is answered `503` with `Retry-After`, statelessly and
//! before any transaction, routing or fork exists: a refusal costs one
//! parse and one send. Retransmissions of admitted INVITEs, in-dialog
//! requests, ACK, CANCEL, BYE and responses are never shed (they finish
//! calls already paid for), and OPTIONS keep their answers. New REGISTERs
//! beyond [`AdmissionConfig::max_register_rate`] per second get 503 too.
//!
//! **Per-source limits**: requests from one source (an IPv4 address or an
//! IPv6 /64; carriers are exempt) beyond [`AdmissionConfig::source_rate`]
//! per second ban the source for [`AdmissionConfig::source_ban`]: its
//! requests are then dropped unanswered, as pike does (an answer is what a
//! flood wants). Each ban is one `rate_limited` security event.

use registrar::ratelimit::source_key;
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Admission settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Input queue delay beyond which new INVITEs are shed; zero: never.
    pub max_queue_delay: Duration,
    /// Delay under which shedding stops.
    pub resume_queue_delay: Duration,
    /// How long the delay must stay past the limit before shedding starts
    /// (a burst shorter than this is queued, not refused), unless the last
    /// overload ended less than [`AdmissionConfig::calm`] ago (then at
    /// once, as CoDel re-enters dropping).
    pub sustain: Duration,
    /// How long after an overload a new one still starts at once.
    pub calm: Duration,
    /// Live transactions beyond which new INVITEs are shed (a memory cap);
    /// 0: none.
    pub max_transactions: usize,
    /// `Retry-After` of the 503, seconds.
    pub retry_after_secs: u32,
    /// New REGISTERs admitted per second; 0: no limit.
    pub max_register_rate: u32,
    /// Requests per second from one source; 0: no limit.
    pub source_rate: u32,
    /// How long a source beyond its rate is banned.
    pub source_ban: Duration,
    /// Most sources whose rate is counted at once (memory bound).
    pub max_sources: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_queue_delay: Duration::from_millis(50),
            resume_queue_delay: Duration::from_millis(10),
            sustain: Duration::from_millis(100),
            calm: Duration::from_secs(1),
            max_transactions: 500_000,
            retry_after_secs: 5,
            max_register_rate: 2000,
            source_rate: 0,
            source_ban: Duration::from_secs(60),
            max_sources: 100_000,
        }
    }
}

/// The load the shell measured, handed to [`crate::Switch::set_load`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// How long the datagram about to be handed in waited in the input
    /// queue.
    pub queue_delay: Duration,
    /// Datagrams waiting behind it.
    pub queue_depth: usize,
}

/// What admission says of a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Take it.
    Yes,
    /// Answer 503 with `Retry-After`.
    Shed,
}

/// One counted second of a source.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
    banned_until: Option<Instant>,
}

/// A source passed its rate: the event to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateBan {
    pub(crate) src: IpAddr,
}

/// Overload state, the REGISTER rate and per-source windows.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) cfg: AdmissionConfig,
    overloaded: bool,
    /// Since when the delay has been past the limit (not overloaded yet).
    above_since: Option<Instant>,
    /// When the last overload ended.
    ended_at: Option<Instant>,
    /// New INVITEs shed since the switch started.
    pub(crate) shed_invites: u64,
    /// New REGISTERs shed.
    pub(crate) shed_registers: u64,
    /// Shed in the current overload episode (for its log event).
    episode_shed: u64,
    register_window: (Instant, u32),
    sources: FxHashMap<IpAddr, Window>,
}

/// How overload changed with a load report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// It started.
    Began,
    /// It ended; this many new requests were shed during it.
    Ended {
        shed: u64,
    },
}

impl Admission {
    pub(crate) fn new(cfg: AdmissionConfig, now: Instant) -> Admission {
        Admission {
            cfg,
            overloaded: false,
            above_since: None,
            ended_at: None,
            shed_invites: 0,
            shed_registers: 0,
            episode_shed: 0,
            register_window: (now, 0),
            sources: FxHashMap::default(),
        }
    }

    /// Takes the shell's measure at `now`; says when overload begins or
    /// ends.
    pub(crate) fn set_load(&mut self, load: Load, now: Instant) -> Transition {
        let cfg = self.cfg;
        if cfg.max_queue_delay.is_zero() {
            return Transition::None;
        }
        if self.overloaded {
            if load.queue_delay < cfg.resume_queue_delay {
                self.overloaded = false;
                self.ended_at = Some(now);
                return Transition::Ended { shed: self.episode_shed };
            }
            return Transition::None;
        }
        if load.queue_delay <= cfg.max_queue_delay {
            self.above_since = None;
            return Transition::None;
        }
        let since = *self.above_since.get_or_insert(now);
        let recent = self.ended_at.is_some_and(|t| now.saturating_duration_since(t) < cfg.calm);
        if recent || now.saturating_duration_since(since) >= cfg.sustain {
            self.overloaded = true;
            self.above_since = None;
            self.episode_shed = 0;
            return Transition::Began;
        }
        Transition::None
    }

    /// `true` while new INVITEs are shed (overloaded, or `live`
    /// transactions at the cap).
    pub(crate) fn sheds_invites(&self, live: usize) -> bool {
        let full = self.cfg.max_transactions > 0 && live >= self.cfg.max_transactions;
        self.overloaded || full
    }

    /// A new INVITE (not a retransmission, not in a dialog), with `live`
    /// transactions.
    pub(crate) fn invite(&mut self, live: usize) -> Admit {
        if self.sheds_invites(live) {
            self.shed_invites += 1;
            self.episode_shed += 1;
            Admit::Shed
        } else {
            Admit::Yes
        }
    }

    /// A new REGISTER at `now`.
    pub(crate) fn register(&mut self, now: Instant) -> Admit {
        let rate = self.cfg.max_register_rate;
        if rate == 0 {
            return Admit::Yes;
        }
        let (start, count) = &mut self.register_window;
        if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        if *count > rate {
            self.shed_registers += 1;
            self.episode_shed += 1;
            Admit::Shed
        } else {
            Admit::Yes
        }
    }

    /// Counts a request from `ip` at `now`: `Err(Some(ban))` when this one
    /// banned the source, `Err(None)` when it was banned already (drop
    /// it), `Ok` to go on.
    pub(crate) fn source(&mut self, ip: IpAddr, now: Instant) -> Result<(), Option<RateBan>> {
        let rate = self.cfg.source_rate;
        if rate == 0 {
            return Ok(());
        }
        let key = source_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.cfg.max_sources {
            // Full: forget the sources whose second is over and that are
            // not banned; if none is, this one goes uncounted.
            self.sweep(now);
            if self.sources.len() >= self.cfg.max_sources {
                return Ok(());
            }
        }
        let w =
            self.sources.entry(key).or_insert(Window { start: now, count: 0, banned_until: None });
        if let Some(until) = w.banned_until {
            if now < until {
                return Err(None);
            }
            *w = Window { start: now, count: 0, banned_until: None };
        }
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            (w.start, w.count) = (now, 0);
        }
        w.count += 1;
        if w.count > rate {
            w.banned_until = Some(now + self.cfg.source_ban);
            return Err(Some(RateBan { src: key }));
        }
        Ok(())
    }

    /// Forgets sources whose window is over and that are not banned.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let second = Duration::from_secs(1);
        self.sources.retain(|_, w| match w.banned_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(w.start) < second,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn overload_begins_past_the_limit_sustained_and_ends_under_the_resume_delay() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        let at = |d| Load { queue_delay: ms(d), queue_depth: 0 };
        assert_eq!(a.set_load(at(40), t0), Transition::None);
        assert_eq!(a.set_load(at(60), t0 + ms(10)), Transition::None, "a burst is queued");
        assert_eq!(a.set_load(at(45), t0 + ms(50)), Transition::None, "and over");
        assert_eq!(a.set_load(at(60), t0 + ms(100)), Transition::None);
        assert_eq!(a.invite(0), Admit::Yes);
        assert_eq!(a.set_load(at(80), t0 + ms(199)), Transition::None);
        assert_eq!(a.set_load(at(80), t0 + ms(200)), Transition::Began, "past it for 100 ms");
        assert_eq!(a.invite(0), Admit::Shed);
        assert_eq!(a.set_load(at(30), t0 + ms(210)), Transition::None, "hysteresis: over 10 ms");
        assert_eq!(a.invite(0), Admit::Shed);
        assert_eq!(a.set_load(at(9), t0 + ms(220)), Transition::Ended { shed: 2 });
        assert_eq!(a.invite(0), Admit::Yes);
        assert_eq!(a.shed_invites, 2);
        // Soon after, a new overload starts at once; once calm, it waits again.
        assert_eq!(a.set_load(at(60), t0 + ms(500)), Transition::Began, "within 1 s: at once");
        assert_eq!(a.set_load(at(5), t0 + ms(600)), Transition::Ended { shed: 0 });
        assert_eq!(a.set_load(at(60), t0 + ms(1700)), Transition::None, "calm again: waits");
    }

    #[test]
    fn the_transaction_cap_sheds_and_zero_delay_disables_overload() {
        let t0 = Instant::now();
        let cfg = AdmissionConfig {
            max_queue_delay: Duration::ZERO,
            max_transactions: 10,
            ..Default::default()
        };
        let mut a = Admission::new(cfg, t0);
        let busy = Load { queue_delay: ms(5000), queue_depth: 9 };
        assert_eq!(a.set_load(busy, t0 + ms(500)), Transition::None);
        assert_eq!(a.invite(9), Admit::Yes);
        assert_eq!(a.invite(10), Admit::Shed);
    }

    #[test]
    fn registers_beyond_the_rate_are_shed_per_second() {
        let t0 = Instant::now();
        let cfg = AdmissionConfig { max_register_rate: 3, ..Default::default() };
        let mut a = Admission::new(cfg, t0);
        let got: Vec<Admit> = (0..5).map(|_| a.register(t0)).collect();
        assert_eq!(got, [Admit::Yes, Admit::Yes, Admit::Yes, Admit::Shed, Admit::Shed]);
        assert_eq!(a.register(t0 + ms(1000)), Admit::Yes);
        assert_eq!(a.shed_registers, 2);
    }

    #[test]
    fn a_source_beyond_its_rate_is_banned_once_then_dropped_until_the_ban_ends() {
        let t0 = Instant::now();
        let cfg = AdmissionConfig { source_rate: 2, source_ban: ms(5000), ..Default::default() };
        let mut a = Admission::new(cfg, t0);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(a.source(ip, t0), Ok(()));
        assert_eq!(a.source(ip, t0), Ok(()));
        assert_eq!(a.source(ip, t0), Err(Some(RateBan { src: ip })));
        assert_eq!(a.source(ip, t0 + ms(10)), Err(None));
        assert_eq!(a.source(other, t0 + ms(10)), Ok(()), "others are not affected");
        assert_eq!(a.source(ip, t0 + ms(4999)), Err(None));
        assert_eq!(a.source(ip, t0 + ms(5000)), Ok(()), "the ban ended");
        // A new second starts a new count.
        assert_eq!(a.source(other, t0 + ms(1010)), Ok(()));
        assert_eq!(a.source(other, t0 + ms(1010)), Ok(()));
    }

    #[test]
    fn the_source_table_is_bounded() {
        let t0 = Instant::now();
        let cfg = AdmissionConfig { source_rate: 1, max_sources: 2, ..Default::default() };
        let mut a = Admission::new(cfg, t0);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        assert_eq!(a.source(ip(1), t0), Ok(()));
        assert_eq!(a.source(ip(2), t0), Ok(()));
        assert_eq!(a.source(ip(3), t0), Ok(()), "uncounted while full");
        assert_eq!(a.source(ip(3), t0), Ok(()));
        assert_eq!(a.source(ip(3), t0 + ms(1000)), Ok(()), "a swept slot is reused");
        assert_eq!(a.source(ip(3), t0 + ms(1000)), Err(Some(RateBan { src: ip(3) })));
    }
}
