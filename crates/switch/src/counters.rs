//! What the switch counts for metrics: plain numbers the core bumps as it
//! works (no clock, no atomics: one owner), read by the shell with
//! [`crate::Switch::counters`] and turned into Prometheus metrics by the API.

use sip_message::{Message, SUPPORTED};

/// How many request methods are counted: each supported one, then `OTHER`.
const COUNTED: usize = SUPPORTED.len() + 1;

/// The methods counted one by one: those of [`SUPPORTED`], in its order,
/// then `OTHER` for any other.
pub const COUNTED_METHODS: [&str; COUNTED] = {
    let mut names = ["OTHER"; COUNTED];
    let mut i = 0;
    while i < SUPPORTED.len() {
        if let Some(t) = SUPPORTED[i].0.known_token() {
            names[i] = t;
        }
        i += 1;
    }
    names
};

/// SIP messages by request method and by response status class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Requests, indexed like [`COUNTED_METHODS`].
    pub requests: [u64; COUNTED],
    /// Responses by class: index 0 is 1xx ... index 5 is 6xx.
    pub responses: [u64; 6],
}

impl MessageCounts {
    /// Counts one message.
    pub fn count(&mut self, m: &Message) {
        if let Some(status) = m.status() {
            if let Some(n) =
                (status / 100).checked_sub(1).and_then(|i| self.responses.get_mut(usize::from(i)))
            {
                *n += 1;
            }
            return;
        }
        let i = m
            .method()
            .and_then(|method| SUPPORTED.iter().position(|(s, _)| s == method))
            .unwrap_or(COUNTED - 1);
        if let Some(n) = self.requests.get_mut(i) {
            *n += 1;
        }
    }
}

/// A histogram with fixed bucket bounds (cumulative counts are the
/// exporter's job: these are per bucket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Histogram<const N: usize> {
    /// Upper bounds of the buckets, increasing.
    pub bounds: [f64; N],
    /// Observations per bucket (an observation goes to the first bucket
    /// whose bound it does not exceed); the last slot is above every bound.
    pub buckets: [u64; N],
    /// Observations above the last bound.
    pub above: u64,
    /// Sum of every observation.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `bounds`.
    pub const fn new(bounds: [f64; N]) -> Self {
        Histogram { bounds, buckets: [0; N], above: 0, sum: 0.0, count: 0 }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        match self.bounds.iter().position(|b| v <= *b) {
            Some(i) => {
                if let Some(n) = self.buckets.get_mut(i) {
                    *n += 1;
                }
            }
            None => self.above += 1,
        }
    }
}

/// How a served call ended, for the calls-by-outcome counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered (and later hung up).
    Answered,
    /// The caller cancelled or hung up before an answer.
    Cancelled,
    /// Busy everywhere (486/600).
    Busy,
    /// Nobody answered (408/480).
    NoAnswer,
    /// Any other failure.
    Failed,
}

/// Every counter of the switch, since it started.
#[derive(Clone, Debug, PartialEq)]
pub struct Counters {
    /// Messages received (parsed).
    pub messages_in: MessageCounts,
    /// Messages sent (retransmissions included).
    pub messages_out: MessageCounts,
    /// Datagrams dropped before any transaction (unparsable, or to be
    /// dropped per RFC 3261).
    pub dropped_in: u64,
    /// Messages the transaction layer sent again.
    pub retransmissions: u64,
    /// Failed digest authentications of INVITEs.
    pub auth_failures: u64,
    /// New INVITEs answered 503 by overload control.
    pub shed_invites: u64,
    /// New REGISTERs answered 503 beyond the REGISTER rate.
    pub shed_registers: u64,
    /// Requests dropped from sources banned for their rate.
    pub rate_limited: u64,
    /// Security events by kind, indexed like [`SECURITY_EVENTS`].
    pub security_events: [u64; 4],
    /// Calls served, and how those that ended went: answered, cancelled,
    /// busy, no answer, failed.
    pub calls_started: u64,
    /// Ended calls by outcome, indexed by [`CallOutcome`] order.
    pub calls_ended: [u64; 5],
    /// Ringing calls answered by a pickup (group, directed or `Replaces`).
    pub pickups: u64,
    /// Setup time of answered calls (INVITE received to answer), seconds.
    pub setup_seconds: Histogram<10>,
    /// Legs dialed per root groupcall, counted when the call ends.
    pub legs_per_groupcall: Histogram<8>,
    /// Media anchoring: ng requests to rtpengine and its instances.
    pub media: MediaCounters,
}

/// The ng commands counted, in [`MediaCounters::requests`] order.
pub const MEDIA_COMMANDS: [&str; 6] = ["ping", "offer", "answer", "delete", "query", "list"];
/// The results of an ng request ([`media_anchor::Done::result_label`]).
pub const MEDIA_RESULTS: [&str; 6] =
    ["ok", "error", "timeout", "no_instance", "overloaded", "bad_reply"];

/// What media anchoring counts.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaCounters {
    /// ng requests done, by command ([`MEDIA_COMMANDS`]) then result
    /// ([`MEDIA_RESULTS`]).
    pub requests: [[u64; MEDIA_RESULTS.len()]; MEDIA_COMMANDS.len()],
    /// ng request latency (first send to outcome), seconds.
    pub latency_seconds: Histogram<8>,
    /// rtpengine instances configured, and those up (a gauge).
    pub instances: u64,
    /// Instances answering.
    pub instances_up: u64,
}

impl Default for MediaCounters {
    fn default() -> Self {
        MediaCounters {
            requests: [[0; MEDIA_RESULTS.len()]; MEDIA_COMMANDS.len()],
            latency_seconds: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0]),
            instances: 0,
            instances_up: 0,
        }
    }
}

impl MediaCounters {
    /// Counts a done ng request.
    pub fn request(&mut self, command: &str, result: &str, latency: std::time::Duration) {
        let c = MEDIA_COMMANDS.iter().position(|n| *n == command);
        let r = MEDIA_RESULTS.iter().position(|n| *n == result);
        if let Some(n) = c.zip(r).and_then(|(c, r)| self.requests.get_mut(c)?.get_mut(r)) {
            *n += 1;
        }
        self.latency_seconds.observe(latency.as_secs_f64());
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            messages_in: MessageCounts::default(),
            messages_out: MessageCounts::default(),
            dropped_in: 0,
            retransmissions: 0,
            auth_failures: 0,
            shed_invites: 0,
            shed_registers: 0,
            rate_limited: 0,
            security_events: [0; 4],
            calls_started: 0,
            calls_ended: [0; 5],
            pickups: 0,
            setup_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            legs_per_groupcall: Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 64.0]),
            media: MediaCounters::default(),
        }
    }
}

/// The names of [`Counters::security_events`], in order
/// ([`registrar::SecurityEvent::name`]).
pub const SECURITY_EVENTS: [&str; 4] = ["auth_failed", "banned", "unbanned", "rate_limited"];

impl Counters {
    /// Counts a security event (failed authentication, ban, end of a ban,
    /// rate limit), REGISTER and INVITE alike.
    pub fn security_event(&mut self, ev: &registrar::SecurityEvent) {
        if let Some(i) = SECURITY_EVENTS.iter().position(|n| *n == ev.name()) {
            self.security_events[i] += 1;
        }
    }

    /// Counts an ended call.
    pub fn call_ended(&mut self, outcome: CallOutcome) {
        let i = match outcome {
            CallOutcome::Answered => 0,
            CallOutcome::Cancelled => 1,
            CallOutcome::Busy => 2,
            CallOutcome::NoAnswer => 3,
            CallOutcome::Failed => 4,
        };
        if let Some(n) = self.calls_ended.get_mut(i) {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_message::Method;

    #[test]
    fn each_supported_method_is_counted_by_name_and_any_other_as_other() {
        let names: Vec<&str> = SUPPORTED.iter().filter_map(|(m, _)| m.known_token()).collect();
        assert_eq!(COUNTED_METHODS[..names.len()], names[..]);
        assert_eq!(COUNTED_METHODS.last(), Some(&"OTHER"));
        let others = [Method::Message, Method::Subscribe, Method::from_token(b"FOO")];
        for m in SUPPORTED.iter().map(|(m, _)| m.clone()).chain(others) {
            let mut c = MessageCounts::default();
            c.count(&Message::request(m.clone(), "sip:x@test").build());
            let name = m.known_token().filter(|_| m.is_supported()).unwrap_or("OTHER");
            let i = COUNTED_METHODS.iter().position(|n| *n == name).expect("a counted name");
            assert_eq!(c.requests[i], 1, "{m}");
            assert_eq!(c.requests.iter().sum::<u64>(), 1, "{m}");
        }
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::new([1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.buckets, [2, 1]);
        assert_eq!(h.above, 1);
        assert_eq!(h.count, 4);
        assert!((h.sum - 6.0).abs() < 1e-9);
    }
}
