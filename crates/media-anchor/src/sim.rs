//! A simulated rtpengine for the deterministic simulation: a pure model of
//! what rtpengine does with the commands forkswitch sends (calls, their
//! media branches by Via branch, answers by To tag, deletes by branch or
//! whole call, the reply cache that makes a repeated cookie harmless), and
//! of how it fails (an `error` reply, a request it never answers, a slow
//! reply, silence while it is "dead").
//!
//! It keeps a ledger of every branch ever offered so that a run can be
//! judged at its end ([`SimRtpengine::violations`]): every offered branch
//! deleted exactly once (per life: an offer after its delete starts a new
//! one), by its branch or with its call; no branch delete for the
//! branch that won; no call left.

use crate::codec::{unframe, Cookie};
use crate::command::{Answer, Command, Delete, Offer};
use crate::reply::{encode_reply, CallStats, Reply, ReplyBody, TagStats};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// Replies kept for repeated cookies (rtpengine keeps them ~30 s).
const REPLY_CACHE: usize = 65_536;

/// How the simulated rtpengine misbehaves (all rates in 0.0..=1.0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimFaults {
    /// Share of `offer`/`answer` answered `error` (nothing changes).
    pub error_rate: f64,
    /// Share of requests never answered (nothing changes).
    pub drop_rate: f64,
    /// Share of replies sent after `slow_delay`.
    pub slow_rate: f64,
    /// The delay of a slow reply.
    pub slow_delay: Duration,
}

impl SimFaults {
    /// An rtpengine that always answers at once.
    pub const NONE: SimFaults =
        SimFaults { error_rate: 0.0, drop_rate: 0.0, slow_rate: 0.0, slow_delay: Duration::ZERO };
}

/// What the simulated rtpengine does with one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimAnswer {
    /// Send `bytes` back to the sender after `after`.
    Reply {
        /// The reply datagram.
        bytes: Bytes,
        /// How long rtpengine takes.
        after: Duration,
    },
    /// Nothing comes back.
    Silent,
}

/// The life of one offered media branch (Call-ID, Via branch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BranchLedger {
    /// `offer`s executed for it (re-offers included).
    pub offers: u32,
    /// `answer`s executed for it.
    pub answers: u32,
    /// Times it came to life: its first offer, and an offer after a delete.
    pub lives: u32,
    /// The To tag of its answer.
    pub to_tag: Option<String>,
    /// Effective `delete`s naming its Via branch.
    pub deleted_by_branch: u32,
    /// Times it was still live when its call was deleted whole.
    pub deleted_by_call: u32,
}

/// Counts of what the simulated rtpengine did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams received.
    pub received: u64,
    /// Commands executed (repeats from the cache not counted).
    pub executed: u64,
    /// Replies sent from the cache for a repeated cookie.
    pub repeats: u64,
    /// `error` replies injected.
    pub injected_errors: u64,
    /// Requests dropped (fault or silence).
    pub dropped: u64,
    /// Slow replies.
    pub slow: u64,
}

struct SimBranch {
    to_tag: Option<String>,
    deleted: bool,
}

struct SimCall {
    branches: BTreeMap<String, SimBranch>,
}

/// The simulated rtpengine.
pub struct SimRtpengine {
    faults: SimFaults,
    silent: bool,
    media_ip: IpAddr,
    next_port: u16,
    rng: StdRng,
    calls: BTreeMap<String, SimCall>,
    ledger: BTreeMap<(String, String), BranchLedger>,
    cache: BTreeMap<Cookie, Bytes>,
    cache_order: VecDeque<Cookie>,
    misuse: Vec<String>,
    stats: SimStats,
}

impl SimRtpengine {
    /// An rtpengine whose SDPs name `media_ip`, failing per `faults`, its
    /// random choices drawn from `seed`.
    pub fn new(media_ip: IpAddr, faults: SimFaults, seed: u64) -> SimRtpengine {
        SimRtpengine {
            faults,
            silent: false,
            media_ip,
            next_port: 30_000,
            rng: StdRng::seed_from_u64(seed),
            calls: BTreeMap::new(),
            ledger: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_order: VecDeque::new(),
            misuse: Vec::new(),
            stats: SimStats::default(),
        }
    }

    /// Stops answering anything (a dead or unreachable rtpengine), or
    /// starts again (its calls are still there, as after a network outage).
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }

    /// Changes how it fails from now on.
    pub fn set_faults(&mut self, faults: SimFaults) {
        self.faults = faults;
    }

    /// Takes one request datagram.
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> SimAnswer {
        self.stats.received += 1;
        if self.silent || self.rng.gen_bool(self.faults.drop_rate.clamp(0.0, 1.0)) {
            self.stats.dropped += 1;
            return SimAnswer::Silent;
        }
        let Ok((cookie, dict)) = unframe(datagram) else {
            self.stats.dropped += 1;
            return SimAnswer::Silent;
        };
        let bytes = match self.cache.get(&cookie) {
            Some(b) => {
                self.stats.repeats += 1;
                b.clone()
            }
            None => {
                let reply = match Command::decode(dict) {
                    Ok(c) => self.execute(c),
                    Err(e) => Reply::Error { reason: e.to_string() },
                };
                let b = encode_reply(&cookie, &reply);
                self.remember(cookie, b.clone());
                b
            }
        };
        let slow = self.rng.gen_bool(self.faults.slow_rate.clamp(0.0, 1.0));
        self.stats.slow += u64::from(slow);
        SimAnswer::Reply {
            bytes,
            after: if slow { self.faults.slow_delay } else { Duration::ZERO },
        }
    }

    /// Calls it holds now.
    pub fn live_calls(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }

    /// Every branch ever offered: (Call-ID, Via branch or "") and its life.
    pub fn ledger(&self) -> &BTreeMap<(String, String), BranchLedger> {
        &self.ledger
    }

    /// What it did.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// What is wrong at the end of a run: an offer not deleted exactly
    /// once, a branch delete for a branch that `won(call_id, via_branch)`,
    /// a call left, or commands rtpengine cannot do (two answers with
    /// different To tags on one branch, an answer for an unknown branch).
    pub fn violations(&self, won: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let mut v = self.misuse.clone();
        for ((call, branch), l) in &self.ledger {
            let deletes = l.deleted_by_branch + l.deleted_by_call;
            if deletes != l.lives {
                v.push(format!(
                    "{call} branch {branch:?}: offered {} time(s), deleted {deletes} time(s)",
                    l.lives
                ));
            }
            if l.deleted_by_branch > 0 && won(call, branch) {
                v.push(format!("{call} branch {branch:?}: won, yet deleted by branch"));
            }
        }
        v.extend(self.calls.keys().map(|c| format!("{c}: left in rtpengine")));
        v
    }

    fn remember(&mut self, cookie: Cookie, reply: Bytes) {
        if self.cache_order.len() >= REPLY_CACHE {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache_order.push_back(cookie.clone());
        self.cache.insert(cookie, reply);
    }

    fn execute(&mut self, c: Command) -> Reply {
        self.stats.executed += 1;
        let inject = matches!(c, Command::Offer(_) | Command::Answer(_))
            && self.rng.gen_bool(self.faults.error_rate.clamp(0.0, 1.0));
        if inject {
            self.stats.injected_errors += 1;
            return Reply::Error { reason: "simulated failure".into() };
        }
        match c {
            Command::Ping => Reply::ok(ReplyBody::Pong),
            Command::Offer(o) => self.offer(o),
            Command::Answer(a) => self.answer(a),
            Command::Delete(d) => self.delete(d),
            Command::Query(q) => match self.calls.get(&q.call_id) {
                Some(call) => Reply::ok(ReplyBody::Stats(Box::new(stats_of(call)))),
                None => Reply::Error { reason: "Unknown call-id".into() },
            },
            Command::List { limit } => {
                let n = limit.unwrap_or(32) as usize;
                Reply::ok(ReplyBody::Calls(self.calls.keys().take(n).cloned().collect()))
            }
        }
    }

    /// An SDP naming rtpengine's address and a fresh port.
    fn sdp(&mut self) -> Bytes {
        let port = self.next_port;
        self.next_port = if port >= 60_000 { 30_000 } else { port + 2 };
        let ip = self.media_ip;
        let v = if ip.is_ipv4() { 4 } else { 6 };
        Bytes::from(format!(
            "v=0\r\no=- 1 1 IN IP{v} {ip}\r\ns=-\r\nc=IN IP{v} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        ))
    }

    fn offer(&mut self, o: Offer) -> Reply {
        let branch = o.via_branch.unwrap_or_default();
        let call =
            self.calls.entry(o.call_id.clone()).or_insert(SimCall { branches: BTreeMap::new() });
        let b = call
            .branches
            .entry(branch.clone())
            .or_insert(SimBranch { to_tag: None, deleted: true });
        let l = self.ledger.entry((o.call_id, branch)).or_default();
        l.offers += 1;
        if b.deleted {
            // A new branch, or one offered again after its delete.
            *b = SimBranch { to_tag: None, deleted: false };
            l.lives += 1;
        }
        Reply::ok(ReplyBody::Sdp(self.sdp()))
    }

    fn answer(&mut self, a: Answer) -> Reply {
        let branch = a.via_branch.unwrap_or_default();
        let Some(b) = self.calls.get_mut(&a.call_id).and_then(|c| c.branches.get_mut(&branch))
        else {
            self.misuse
                .push(format!("{} branch {branch:?}: answer without a live offer", a.call_id));
            return Reply::Error { reason: "Unknown call-id".into() };
        };
        if b.deleted {
            self.misuse.push(format!("{} branch {branch:?}: answer after its delete", a.call_id));
            return Reply::Error { reason: "Unknown call-id".into() };
        }
        match &b.to_tag {
            Some(t) if *t != a.to_tag => self.misuse.push(format!(
                "{} branch {branch:?}: answered by To tags {t:?} and {:?}",
                a.call_id, a.to_tag
            )),
            _ => b.to_tag = Some(a.to_tag.clone()),
        }
        let l = self.ledger.entry((a.call_id, branch)).or_default();
        l.answers += 1;
        l.to_tag = Some(a.to_tag);
        Reply::ok(ReplyBody::Sdp(self.sdp()))
    }

    fn delete(&mut self, d: Delete) -> Reply {
        let not_found = Reply::Ok {
            body: ReplyBody::Empty,
            warning: Some("Call-ID not found or tags didn't match".into()),
        };
        let Some(call) = self.calls.get_mut(&d.call_id) else { return not_found };
        let stats = stats_of(call);
        match d.via_branch {
            Some(branch) => {
                let Some(b) = call.branches.get_mut(&branch).filter(|b| !b.deleted) else {
                    return not_found;
                };
                b.deleted = true;
                self.ledger.entry((d.call_id, branch)).or_default().deleted_by_branch += 1;
            }
            None => {
                for (branch, b) in &call.branches {
                    if !b.deleted {
                        let key = (d.call_id.clone(), branch.clone());
                        self.ledger.entry(key).or_default().deleted_by_call += 1;
                    }
                }
                self.calls.remove(&d.call_id);
            }
        }
        Reply::ok(ReplyBody::Stats(Box::new(stats)))
    }
}

fn stats_of(call: &SimCall) -> CallStats {
    let tags =
        call.branches.iter().filter(|(_, b)| !b.deleted).enumerate().map(|(n, (branch, b))| {
            let tag = b.to_tag.clone().unwrap_or_default();
            TagStats {
                key: if tag.is_empty() { format!("<untagged {}>", n + 1) } else { tag.clone() },
                tag,
                via_branch: (!branch.is_empty()).then(|| branch.clone()),
                ..TagStats::default()
            }
        });
    CallStats { tags: tags.collect(), ..CallStats::default() }
}
