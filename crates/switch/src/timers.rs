//! The switch core's one timer queue. Every timer of the machine is an
//! entry here, named by what owns it: a transaction, the dialogs of a call,
//! the fork of a call, or one of the switch's own housekeeping jobs. Each
//! owner keeps its current deadline; entries that no longer match it are
//! stale and are skipped (see `timer-queue`).

use b2bua::CallRef;
use sip_transaction::TxKey;
use std::time::{Duration, Instant};
use timer_queue::TimerQueue;

/// What a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKey {
    /// A transaction's RFC 3261 timers (A-M).
    Transaction(TxKey),
    /// A call's dialog timers: 2xx and reliable provisional retransmission,
    /// the CANCEL give-up.
    Dialogs(CallRef),
    /// A call's fork: ring timeouts, the overall timeout, leg clean-up.
    Fork(CallRef),
    /// Housekeeping.
    Job(Job),
    /// Busy lamp subscriptions: expiries and NOTIFY give-ups.
    Subscriptions,
    /// The ng client's retransmissions, timeouts and health probes.
    Media,
}

/// The switch's own periodic work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Job {
    /// Expired bindings, old nonces and bans (every second).
    Sweep,
    /// OPTIONS pings to UDP contacts (NAT keep-alive), when configured.
    Keepalive,
    /// Carriers given by DNS name are resolved again (every 5 minutes).
    CarrierDns,
}

/// How often each job runs; `None` when it is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobIntervals {
    pub(crate) sweep: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) carrier_dns: Duration,
}

/// The deadlines of the jobs and how often they run.
#[derive(Debug)]
pub(crate) struct Jobs {
    sweep: Option<Instant>,
    keepalive: Option<Instant>,
    carrier_dns: Option<Instant>,
    every: JobIntervals,
}

impl Jobs {
    fn slot(&mut self, job: Job) -> &mut Option<Instant> {
        match job {
            Job::Sweep => &mut self.sweep,
            Job::Keepalive => &mut self.keepalive,
            Job::CarrierDns => &mut self.carrier_dns,
        }
    }

    /// `true` when `at` is `job`'s current deadline.
    pub(crate) fn is_current(&self, job: Job, at: Instant) -> bool {
        let d = match job {
            Job::Sweep => self.sweep,
            Job::Keepalive => self.keepalive,
            Job::CarrierDns => self.carrier_dns,
        };
        d == Some(at)
    }

    /// Marks `job` as running (its deadline is gone).
    pub(crate) fn take(&mut self, job: Job) {
        *self.slot(job) = None;
    }
}

/// The one queue, and the jobs (every other owner keeps its own deadline).
#[derive(Debug)]
pub(crate) struct Timers {
    pub(crate) queue: TimerQueue<Instant, TimerKey>,
    pub(crate) jobs: Jobs,
}

impl Timers {
    pub(crate) fn new(every: JobIntervals) -> Self {
        Timers {
            queue: TimerQueue::new(),
            jobs: Jobs { sweep: None, keepalive: None, carrier_dns: None, every },
        }
    }

    /// Files `job` at `at`.
    pub(crate) fn schedule_job(&mut self, job: Job, at: Instant) {
        *self.jobs.slot(job) = Some(at);
        self.queue.push(at, TimerKey::Job(job));
    }

    /// Files the next run of `job` one interval after `now`, when it is on.
    pub(crate) fn reschedule_job(&mut self, job: Job, now: Instant) {
        let every = match job {
            Job::Sweep => Some(self.jobs.every.sweep),
            Job::Keepalive => self.jobs.every.keepalive,
            Job::CarrierDns => Some(self.jobs.every.carrier_dns),
        };
        match every.and_then(|d| now.checked_add(d)) {
            Some(at) => self.schedule_job(job, at),
            None => self.jobs.take(job),
        }
    }
}
