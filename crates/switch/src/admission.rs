//! Admission before forking: overload control and per-source rate limits
//! (RFC 7339's idea without its header negotiation, and Kamailio's pike).
//!
//! **The load signal is the input queue delay**: how long the datagram
//! just taken waited between its arrival (the kernel's stamp) and the
//! switch getting it, reported by the shell ([`Load`]). It is what callers
//! feel (every message of a call setup waits in that queue) and it rises
//! only when the switch cannot keep up, whatever the message mix; the
//! number of live transactions grows with the call rate even when all is
//! well (64*T1 of state per transaction), so it is kept only as a memory
//! cap.
//!
//! **New INVITEs are refused only in the proportion the switch cannot
//! serve.** While the delay stays under [`AdmissionConfig::max_queue_delay`]
//! (the target) every call is taken. A burst is not overload: only when the
//! delay has stayed past the target for [`AdmissionConfig::sustain`] (or at
//! once, if an overload ended within [`AdmissionConfig::calm`]) does
//! shedding begin, at the fraction the queue's growth over that time calls
//! for (growing by g seconds a second means 1 + g times the work the switch
//! does: refusing g / (1 + g) of new calls balances it). From then on a
//! proportional-integral controller moves the fraction every
//! [`UPDATE`] on the smallest delay seen in that time (the standing queue,
//! not its spikes): up while it is past the target or rising, down while
//! it is under the target or falling, halved when the queue emptied, and
//! at one (every new INVITE refused) while the standing delay is past
//! twice the target, where admitted calls' own messages, and soon their
//! retransmissions, are more than the switch can take. So the admitted
//! rate settles where the queue stays near the target,
//! instead of everything being refused until the queue is empty and
//! admitted again until it is full. Refusals
//! are spread evenly (a running credit, no random draw), and a refused
//! INVITE's retransmission is refused again (the last [`REFUSED_MEMORY`]
//! refusals are remembered by Call-ID and branch: a caller whose 503 was
//! lost must not get a call it was told it would not). Once the fraction
//! is back to zero and the delay under
//! [`AdmissionConfig::resume_queue_delay`], the overload is over. Defaults
//! 50 / 10 / 100 ms, measured on `tests/bench/overload.sh` and the
//! side-by-side bench (setup p99 under 150 ms with a 20 ms ring: a setup
//! crosses the queue about twice, its INVITE and its 200). A refused call
//! gets `503` with `Retry-After`, statelessly and before any transaction,
//! routing or fork exists: a refusal costs one parse and one send.
//! Retransmissions of admitted INVITEs, in-dialog requests, ACK, CANCEL,
//! BYE and responses are never shed (they finish calls already paid for),
//! and OPTIONS keep their answers. New REGISTERs beyond
//! [`AdmissionConfig::max_register_rate`] per second get 503 too.
//!
//! **Per-source limits**: requests from one source (an IPv4 address or an
//! IPv6 /64; carriers are exempt) beyond [`AdmissionConfig::source_rate`]
//! per second ban the source for [`AdmissionConfig::source_ban`]: its
//! requests are then dropped unanswered, as pike does (an answer is what a
//! flood wants). Each ban is one `rate_limited` security event.

use registrar::ratelimit::source_key;
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use std::collections::VecDeque;
use std::hash::Hasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Admission settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// The input queue delay admission keeps calls under: past it
    /// (sustained), new INVITEs are shed in the proportion needed to bring
    /// it back; zero: never.
    pub max_queue_delay: Duration,
    /// Delay under which, the shed fraction back to zero, the overload
    /// ends.
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

/// How often the shed fraction is adjusted.
pub(crate) const UPDATE: Duration = Duration::from_millis(10);
/// Proportional gain: the fraction moves this much per second the
/// standing delay moves. The gains follow the SIMC rules for an
/// integrating process with dead time (the queue integrates the excess
/// load; an admitted call's later messages arrive some 100 ms after its
/// INVITE): 1 / (K (tc + L)) with K = 2 (at twice the capacity a whole
/// fraction moves the queue 2 s a second) and tc = L = 0.1 s, and an
/// integral time of 4 (tc + L). Larger gains made the admitted rate swing
/// between half and one and a half times the capacity on the overload
/// bench.
const GAIN_PER_DELAY: f64 = 2.5;
/// Integral gain: the fraction moves this much per second of delay past
/// (or under) the target, per second.
const GAIN_PER_EXCESS: f64 = 3.0;
/// Bounds of the fraction shed when an overload begins.
const START_FRACTION: (f64, f64) = (0.05, 0.9);
/// A smaller fraction is none.
const MIN_FRACTION: f64 = 0.01;
/// A standing delay this many times the target refuses every new INVITE.
const CEILING: u32 = 2;
/// Refused INVITEs remembered, so that their retransmissions are refused
/// too (at 1,000 refusals a second, four seconds of them: past Timer A's
/// first retransmissions).
pub(crate) const REFUSED_MEMORY: usize = 4096;

/// The last refused INVITEs, by a hash of Call-ID and top Via branch
/// (a retry after the 503 has a new branch and is judged afresh).
#[derive(Debug, Default)]
struct Refused {
    set: FxHashSet<u64>,
    order: VecDeque<u64>,
}

impl Refused {
    fn key(call_id: &[u8], branch: &[u8]) -> u64 {
        let mut h = FxHasher::default();
        h.write(call_id);
        h.write_u8(0);
        h.write(branch);
        h.finish()
    }

    fn contains(&self, key: u64) -> bool {
        self.set.contains(&key)
    }

    fn insert(&mut self, key: u64) {
        if !self.set.insert(key) {
            return;
        }
        if self.order.len() == REFUSED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(key);
    }

    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}

/// How new INVITEs are taken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Control {
    /// Every one. `above`: since when, and from what delay, the queue
    /// delay has stayed past the target.
    Admitting { above: Option<(Instant, Duration)> },
    /// Overloaded: a fraction refused.
    Shedding(Shedding),
}

/// The controller of an overload.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shedding {
    /// Fraction of new INVITEs refused, 0.0 to 1.0.
    fraction: f64,
    /// Admissions owed: each new INVITE adds `1 - fraction`, each whole
    /// one admits a call.
    credit: f64,
    /// When the fraction was last adjusted, and the standing delay then.
    updated: Instant,
    last: Duration,
    /// Smallest delay seen since `updated`.
    floor: Duration,
}

impl Shedding {
    /// The start of an overload: the delay went from `from` at `since` to
    /// `delay` at `now`.
    fn begin(since: Instant, from: Duration, delay: Duration, now: Instant) -> Shedding {
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        let growth =
            if elapsed > 0.0 { delay.saturating_sub(from).as_secs_f64() / elapsed } else { 0.0 };
        let (lo, hi) = START_FRACTION;
        let fraction = (growth / (1.0 + growth)).clamp(lo, hi);
        Shedding { fraction, credit: 0.0, updated: now, last: delay, floor: delay }
    }

    /// Takes a delay measured at `now`; every [`UPDATE`], moves the
    /// fraction on the standing delay: against the target, and halved
    /// when the queue emptied (under the resume delay: more was refused
    /// than need be).
    fn measure(&mut self, delay: Duration, now: Instant, cfg: &AdmissionConfig) {
        self.floor = self.floor.min(delay);
        let dt = now.saturating_duration_since(self.updated);
        if dt < UPDATE {
            return;
        }
        // A stall (the thread not run) counts as one interval, not as its
        // length: its backlog shows in the delay already.
        let dt = dt.min(UPDATE * 2).as_secs_f64();
        let floor = self.floor.as_secs_f64();
        let rise = floor - self.last.as_secs_f64();
        let excess = floor - cfg.max_queue_delay.as_secs_f64();
        let mut fraction = self.fraction + GAIN_PER_DELAY * rise + GAIN_PER_EXCESS * excess * dt;
        if self.floor < cfg.resume_queue_delay {
            fraction /= 2.0;
        }
        if self.floor > cfg.max_queue_delay * CEILING {
            // Far past the target, admitted calls' own messages (and soon
            // their retransmissions) are more than the switch can take:
            // nothing new until the queue comes back.
            fraction = 1.0;
        }
        self.fraction = if fraction < MIN_FRACTION { 0.0 } else { fraction.min(1.0) };
        (self.updated, self.last, self.floor) = (now, self.floor, Duration::MAX);
    }

    /// A new INVITE: `true` to refuse it.
    fn refuses(&mut self) -> bool {
        self.credit += 1.0 - self.fraction;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            false
        } else {
            true
        }
    }
}

/// Overload state, the REGISTER rate and per-source windows.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) cfg: AdmissionConfig,
    control: Control,
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
    /// INVITEs refused in this overload.
    refused: Refused,
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
            control: Control::Admitting { above: None },
            ended_at: None,
            shed_invites: 0,
            shed_registers: 0,
            episode_shed: 0,
            register_window: (now, 0),
            sources: FxHashMap::default(),
            refused: Refused::default(),
        }
    }

    /// Takes the shell's measure at `now`; says when overload begins or
    /// ends.
    pub(crate) fn set_load(&mut self, load: Load, now: Instant) -> Transition {
        let cfg = self.cfg;
        if cfg.max_queue_delay.is_zero() {
            return Transition::None;
        }
        let delay = load.queue_delay;
        match &mut self.control {
            Control::Shedding(s) => {
                s.measure(delay, now, &cfg);
                if s.fraction > 0.0 || delay >= cfg.resume_queue_delay {
                    return Transition::None;
                }
                self.control = Control::Admitting { above: None };
                self.ended_at = Some(now);
                self.refused.clear();
                Transition::Ended { shed: self.episode_shed }
            }
            Control::Admitting { above } => {
                if delay <= cfg.max_queue_delay {
                    *above = None;
                    return Transition::None;
                }
                let (since, from) = *above.get_or_insert((now, delay));
                let recent =
                    self.ended_at.is_some_and(|t| now.saturating_duration_since(t) < cfg.calm);
                if !recent && now.saturating_duration_since(since) < cfg.sustain {
                    return Transition::None;
                }
                self.control = Control::Shedding(Shedding::begin(since, from, delay, now));
                self.episode_shed = 0;
                Transition::Began
            }
        }
    }

    /// `true` while new INVITEs may be shed (overloaded, or `live`
    /// transactions at the cap).
    pub(crate) fn sheds_invites(&self, live: usize) -> bool {
        let full = self.cfg.max_transactions > 0 && live >= self.cfg.max_transactions;
        full || matches!(self.control, Control::Shedding(_))
    }

    /// A new INVITE (not a retransmission of one taken, not in a dialog),
    /// with `live` transactions; `call_id` and `branch` (its top Via's)
    /// name it: one refused before is refused again.
    pub(crate) fn invite(&mut self, live: usize, call_id: &[u8], branch: &[u8]) -> Admit {
        let full = self.cfg.max_transactions > 0 && live >= self.cfg.max_transactions;
        let refused = match &mut self.control {
            Control::Shedding(s) => {
                let key = Refused::key(call_id, branch);
                let refused = self.refused.contains(key) || s.refuses() || full;
                if refused {
                    self.refused.insert(key);
                }
                refused
            }
            Control::Admitting { .. } => full,
        };
        if refused {
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

    fn at(delay_ms: u64) -> Load {
        Load { queue_delay: ms(delay_ms), queue_depth: 0 }
    }

    impl Admission {
        /// A new INVITE of a call of its own.
        fn new_invite(&mut self, live: usize) -> Admit {
            use std::sync::atomic::{AtomicU64, Ordering};
            static CALLS: AtomicU64 = AtomicU64::new(0);
            let call_id = format!("call-{}", CALLS.fetch_add(1, Ordering::Relaxed));
            self.invite(live, call_id.as_bytes(), b"z9hG4bK1")
        }

        fn shed_fraction(&self) -> f64 {
            match self.control {
                Control::Shedding(s) => s.fraction,
                Control::Admitting { .. } => 0.0,
            }
        }
    }

    /// Past the 50 ms target from `t0`, growing by 1 ms every ms (twice
    /// the work the switch does) until overload begins at `t0 + 100 ms`.
    fn overload_at_twice_capacity(a: &mut Admission, t0: Instant) -> Instant {
        for i in 0..100 {
            assert_eq!(a.set_load(at(51 + i), t0 + ms(i)), Transition::None, "{i} ms");
            assert_eq!(a.new_invite(0), Admit::Yes, "taken while it may be a burst");
        }
        assert_eq!(a.set_load(at(151), t0 + ms(100)), Transition::Began);
        t0 + ms(100)
    }

    #[test]
    fn a_burst_is_queued_and_a_sustained_overload_sheds_what_its_growth_calls_for() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        assert_eq!(a.set_load(at(40), t0), Transition::None);
        assert_eq!(a.set_load(at(60), t0 + ms(10)), Transition::None, "a burst is queued");
        assert_eq!(a.set_load(at(45), t0 + ms(50)), Transition::None, "and over");
        overload_at_twice_capacity(&mut a, t0 + ms(100));
        // Half the work must go: every other new INVITE is refused.
        let got: Vec<Admit> = (0..6).map(|_| a.new_invite(0)).collect();
        use Admit::{Shed, Yes};
        assert_eq!(got, [Shed, Yes, Shed, Yes, Shed, Yes]);
        assert_eq!(a.shed_invites, 3);
    }

    #[test]
    fn a_refused_invites_retransmission_is_refused_again_and_a_retry_judged_afresh() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        overload_at_twice_capacity(&mut a, t0);
        // Every other one refused: the first is, the next would be taken.
        assert_eq!(a.invite(0, b"c1", b"z9hG4bKa"), Admit::Shed);
        assert_eq!(a.invite(0, b"c1", b"z9hG4bKa"), Admit::Shed, "its retransmission");
        assert_eq!(a.invite(0, b"c1", b"z9hG4bKb"), Admit::Yes, "a retry, new branch");
        assert_eq!(a.shed_invites, 2);
    }

    #[test]
    fn the_fraction_follows_the_standing_delay_and_the_overload_ends_back_at_zero() {
        // A target of 100 ms: the overload begins at 151 ms, under the
        // ceiling (twice the target).
        let cfg = AdmissionConfig { max_queue_delay: ms(100), ..Default::default() };
        let t0 = Instant::now();
        let mut a = Admission::new(cfg, t0);
        for i in 0..100 {
            a.set_load(at(101 + i / 2), t0 + ms(i));
        }
        assert_eq!(a.set_load(at(151), t0 + ms(100)), Transition::Began);
        let mut t = t0 + ms(100);
        let start = a.shed_fraction();
        assert!((start - 1.0 / 3.0).abs() < 1e-9, "growth 0.5: a third refused, {start}");
        // Still 50 ms past the target for a second: more is refused,
        // update by update.
        let steady = |a: &mut Admission, mut t: Instant| {
            for _ in 0..100 {
                t += UPDATE;
                assert_eq!(a.set_load(at(150), t), Transition::None);
            }
            t
        };
        t = steady(&mut a, t);
        let high = a.shed_fraction();
        assert!(high > start + 0.1 && high < 1.0, "{start} -> {high}");
        // Spikes do not count: an update sees the smallest delay of its
        // interval (a twin fed a steady 150 ms ends at the same fraction).
        let mut twin = Admission::new(cfg, t0);
        for i in 0..100 {
            twin.set_load(at(101 + i / 2), t0 + ms(i));
        }
        twin.set_load(at(151), t0 + ms(100));
        let tt = steady(&mut twin, t0 + ms(100));
        a.set_load(at(400), t + ms(5));
        a.set_load(at(150), t + UPDATE);
        twin.set_load(at(150), tt + UPDATE);
        t += UPDATE;
        assert_eq!(a.shed_fraction(), twin.shed_fraction());
        let shed = (0..10).filter(|_| a.new_invite(0) == Admit::Shed).count() as u64;
        assert!((5..10).contains(&shed), "most of ten refused: {shed}");
        // Past twice the target: every new INVITE is refused.
        for _ in 0..2 {
            t += UPDATE;
            a.set_load(at(210), t);
        }
        assert_eq!(a.shed_fraction(), 1.0);
        // The queue drains (1 ms every 10 ms) and the fraction with it.
        for d in (20..200).rev() {
            t += UPDATE;
            assert_eq!(a.set_load(at(d), t), Transition::None);
        }
        assert!(a.shed_fraction() < 0.7, "{}", a.shed_fraction());
        // Under the target the fraction falls to zero; the overload ends
        // once the delay is also under the resume delay.
        let mut ended = None;
        for _ in 0..1000 {
            t += UPDATE;
            if let Transition::Ended { shed } = a.set_load(at(20), t) {
                panic!("ended at 20 ms, past the resume delay, shed {shed}");
            }
            if a.shed_fraction() == 0.0 {
                ended = Some(a.set_load(at(9), t + ms(1)));
                break;
            }
        }
        assert_eq!(ended, Some(Transition::Ended { shed }));
        assert_eq!(a.new_invite(0), Admit::Yes);
        // Soon after, a new overload starts at once; once calm, it waits.
        assert_eq!(a.set_load(at(120), t + ms(500)), Transition::Began, "within 1 s: at once");
        assert!(a.shed_fraction() >= START_FRACTION.0);
        for _ in 0..1000 {
            t += UPDATE;
            if a.set_load(at(5), t + ms(500)) != Transition::None {
                break;
            }
        }
        assert_eq!(a.set_load(at(120), t + ms(2000)), Transition::None, "calm again: waits");
    }

    #[test]
    fn after_a_stall_everything_is_refused_until_the_backlog_is_gone_then_nothing() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        let t = overload_at_twice_capacity(&mut a, t0);
        // The thread did not run for 2 s: a backlog of a second (the
        // first update after the stall still had its floor from before).
        a.set_load(at(1000), t + ms(2000));
        a.set_load(at(990), t + ms(2000) + UPDATE);
        assert_eq!(a.shed_fraction(), 1.0);
        assert_eq!(a.new_invite(0), Admit::Shed);
        // Worked off: the queue is empty, and within a few updates
        // nothing is refused any more.
        let mut t = t + ms(2000) + UPDATE * 2;
        let mut updates = 0;
        while a.set_load(at(5), t) == Transition::None {
            updates += 1;
            assert!(updates <= 3, "still refusing {} with an empty queue", a.shed_fraction());
            t += UPDATE;
        }
        assert_eq!(a.new_invite(0), Admit::Yes);
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
        assert_eq!(a.new_invite(9), Admit::Yes);
        assert_eq!(a.new_invite(10), Admit::Shed);
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
