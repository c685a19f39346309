//! # groupcall: the call forking engine of forkswitch
//!
//! One [`Fork`] serves one call that rings a groupcall: it expands the
//! groupcall into a tree (endpoints become child groupcalls over their
//! registered contacts, stored ring groups become nested child groupcalls,
//! a destination reachable over several next hops becomes a failover child
//! groupcall), decides which legs to dial and when (the ring method of each
//! group, per level: see "Ring methods"; destination delays; failover),
//! relays ringing and early media to the caller once, picks the
//! first answer (set once, on every level), cancels every other leg at every
//! level (`hangup_others`, with `Reason: SIP;cause=200;text="Call completed
//! elsewhere"`), or picks the best failure per RFC 3261 section 16.7 step 6.
//! Every change to a groupcall or call record is emitted for the store.
//!
//! It is sans-IO, in the style of str0m and quinn-proto: `&mut self`
//! methods take inputs stamped with the time ([`Now`]), and outputs are
//! polled ([`Fork::poll_action`], [`Fork::poll_timeout`]). It never reads a
//! clock, never touches a socket, never resolves a name, never uses an OS
//! random source (every id comes from the seed given to [`Fork::build`], so
//! a run can be replayed), never parses or builds a SIP message (it only
//! names a transport, [`sip_message::Transport`], in a [`Hop`]) and never
//! spawns a task: the B2BUA turns each [`Action`] into SIP and reports what
//! each leg did as a [`LegEvent`].
//!
//! ## Ring methods
//!
//! Each group, the root and every nested one, hunts by its own
//! [`GroupDef::ring_method`]:
//!
//! - `ring_all`: every destination at once; fails when all failed.
//! - `linear`: one at a time in list order; a destination failing or
//!   reaching its ring timeout moves the hunt to the next.
//! - `memory_hunt` (FreePBX): the 1st rings; when its ring timeout is over
//!   the 2nd is added and the 1st keeps ringing, then the 3rd... The
//!   ringing set is always a prefix of the list that only grows; each step
//!   lasts the newly added destination's ring timeout, and ends at once
//!   when that destination fails. After the last step the group gives up
//!   (480); when every destination failed, it fails with the best code.
//! - `round_robin` (Asterisk `rrmemory`): one at a time like `linear`,
//!   starting after the member that answered the group's last answered call,
//!   wrapping around; every member is tried before any twice.
//! - `least_recent` (Asterisk `leastrecent`): one at a time, the member that
//!   answered a call of this group longest ago first; members that never
//!   answered come first, in list order.
//! - `random`: one at a time, in an order drawn from the fork's seeded
//!   generator (the same seed gives the same order).
//!
//! `round_robin` and `least_recent` remember who answered across calls: the
//! owner hands each group's [`HuntMemory`] in through
//! [`Directory::hunt_memory`] and stores what [`Fork::poll_hunt_memory`]
//! reports after an answer ([`HuntMemoryUpdate`]), so that the rotation
//! survives restarts.
//!
//! A group's [`GroupDef::options`] ([`GroupOptions`]) hold per
//! destination `delay_secs` (a destination is dialed that long after it is
//! reached, in `ring_all` after the group started, and never if the call
//! was answered or ended first; its ring timeout counts from the dial) and
//! per group `max_ring_secs` (from its own start the group gives up, its
//! legs CANCELed, and fails with 480, whatever its method; nested groups
//! have their own). A destination's ring timeout is
//! [`Destination::ring_timeout`].
//!
//! ## Busy, do not disturb, forwards
//!
//! An `endpoint` destination rings as [`Directory::endpoint_policy`] says
//! ([`EndpointPolicy`], read when the fork is built). In do-not-disturb,
//! or busy in a group with [`GroupOptions::skip_busy`], it is skipped: not
//! dialed, no record, its 486 not counted unless every destination of the
//! group was skipped (an all-busy group fails with 486 at once). Busy
//! without `skip_busy`, it counts as a 486 without being dialed. A forward
//! (`forward_always`, `forward_busy`, `forward_noanswer`) makes a
//! **forward child**: a groupcall (`linear` in its record) whose
//! destinations are the extension, when it still rings, then the forward
//! with `detail` naming it; after the extension fails, a busy answer (486,
//! 600) goes to `forward_busy` and anything else (its no-answer time
//! [`NoAnswerForward::after`] included) to `forward_noanswer`; the child
//! fails with the last code. A forward's destination is any address (an
//! extension with its own policy, so forwards chain; a group; a URI). A
//! forward to an extension the fork rings already, or back along its own
//! chain of forwards, or to a group on its own path, is cut (skipped, 482);
//! past [`ForkConfig::max_depth`], 483. The destination's ring timeout on
//! the parent covers its forwards, as it covers an endpoint's contacts.
//!
//! ## Failover
//!
//! Carrier failover of a `tel` destination and RFC 3263 failover of a `sip`
//! one are part of the fork, visible in the records like any other hunt.
//! [`Directory::reach`] says how such a destination is reached
//! ([`Reach`]): as it is, over [`Hop`]s known at build time, over hops found
//! when it is reached ([`Action::Resolve`], answered by [`Fork::resolved`]),
//! or not at all. Two hops or more make a child groupcall (`linear` in its
//! record, one leg per hop, destinations showing the hop in `detail`) that
//! hunts with the **failover rule**: after a hop fails, the next one is
//! dialed only if the failure was no response ([`LegEvent::NoResponse`],
//! counted as 408), a 408 or a 5xx, which say the server failed, not the
//! callee. Any other failure (486, 480, 404, 603, a 3xx counted as 480...)
//! ends the child at once with the best response of its codes so far, and
//! the parent goes on as after any failed destination. When every hop
//! failed, the child fails with the best of all its codes (503, 503 gives
//! 503, which the root still sends to the caller as 500). The destination's
//! ring timeout covers the whole hunt; hops have none of their own.
//!
//! Stored ring groups are the [`records::RingGroup`] records themselves:
//! the [`Directory`] hands them out as they are, and the fork builds its own
//! view of each ([`GroupDef`], `GroupDef::from(&RingGroup)`) as it expands
//! the tree.
//!
//! Main types: [`Fork`] (the state machine), [`GroupSpec`] and [`GroupDef`]
//! (what to ring), [`Directory`] (contacts, stored ring groups, their
//! memory, and how destinations are reached, provided by the B2BUA),
//! [`GroupOptions`], [`EndpointPolicy`], [`HuntMemory`], [`Reach`] and
//! [`Hop`], [`ForkConfig`],
//! [`LegEvent`] (inputs), [`Action`] and [`HuntMemoryUpdate`] (outputs).
#![deny(missing_docs)]

use records::{Address, AnswerMethod, Call, Groupcall, RingGroup, RingMethod, Timestamp};
use std::fmt;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod best;
mod build;
mod engine;

pub use best::{best_response, caller_response};
pub use engine::{Fork, MAX_SIP_CALL_ID};

/// The current time, given with every input: a monotonic instant for
/// deadlines and a wall-clock timestamp for the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub at: Instant,
    /// Wall-clock time, written in `tm_*` fields.
    pub wall: Timestamp,
}

/// Limits and timers of a fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkConfig {
    /// How long a destination rings when its [`Destination::ring_timeout`]
    /// is not set (legs and endpoints; nested groups have no default).
    pub default_ring_timeout: Duration,
    /// From [`Fork::start`] until the caller is rejected with 480.
    pub overall_timeout: Duration,
    /// Most legs (contacts, SIP and tel destinations, hops) a fork may
    /// hold; also the most child groupcalls.
    pub max_legs: usize,
    /// A 6xx from any leg stops the whole fork (RFC 3261 16.7 step 5).
    pub stop_on_6xx: bool,
    /// Deepest nesting of child groupcalls (the root is depth 0).
    pub max_depth: usize,
    /// After a `CANCEL` or `BYE` is asked for, how long to wait for the
    /// leg to report its end before the fork considers it over anyway
    /// (64*T1 by default), so that [`Action::Finished`] always comes.
    pub leg_cleanup_timeout: Duration,
}

impl Default for ForkConfig {
    fn default() -> Self {
        ForkConfig {
            default_ring_timeout: Duration::from_secs(30),
            overall_timeout: Duration::from_secs(120),
            max_legs: 64,
            stop_on_6xx: true,
            max_depth: 8,
            leg_cleanup_timeout: Duration::from_secs(32),
        }
    }
}

/// One destination of a group, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// What to ring.
    pub address: Address,
    /// How long it rings, from when it is dialed (in a `memory_hunt`: how
    /// long its step lasts before the next destination is added); `None`
    /// uses [`ForkConfig::default_ring_timeout`] (for a nested `groupcall`
    /// destination, `None` means no limit of its own).
    pub ring_timeout: Option<Duration>,
}

impl Destination {
    /// A destination with the default ring timeout.
    pub fn new(address: Address) -> Destination {
        Destination { address, ring_timeout: None }
    }
}

/// What a group of a fork rings, and how: the fork's view of a stored
/// [`RingGroup`] (`GroupDef::from(&ring_group)`), or the root of a fork that
/// rings destinations of its own (a direct call, a click-to-call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDef {
    /// Identity of the group (a stored group's id); loops are found by it.
    pub id: Uuid,
    /// How it hunts through its destinations (see the crate documentation,
    /// "Ring methods").
    pub ring_method: RingMethod,
    /// `hangup_others`.
    pub answer_method: AnswerMethod,
    /// What to ring, in order.
    pub destinations: Vec<Destination>,
    /// Send `Reason: SIP;cause=200;text="Call completed elsewhere"` on the
    /// CANCELs of this group's legs when another leg answered.
    pub send_reason: bool,
    /// Its own ring limit, its destinations' delays, whether it skips busy
    /// members.
    pub options: GroupOptions,
}

impl GroupDef {
    /// A group with `hangup_others` and `send_reason` on, and no options.
    pub fn new(id: Uuid, ring_method: RingMethod, destinations: Vec<Destination>) -> GroupDef {
        GroupDef {
            id,
            ring_method,
            answer_method: AnswerMethod::HangupOthers,
            destinations,
            send_reason: true,
            options: GroupOptions::default(),
        }
    }
}

/// The fork's view of a stored ring group: its destinations with their ring
/// timeouts (unset: [`ForkConfig::default_ring_timeout`]) and delays, its
/// `max_ring_secs` and `skip_busy`.
impl From<&RingGroup> for GroupDef {
    fn from(g: &RingGroup) -> GroupDef {
        let secs = Duration::from_secs;
        GroupDef {
            id: g.id,
            ring_method: g.ring_method,
            answer_method: g.answer_method,
            destinations: g
                .destinations
                .iter()
                .map(|d| Destination {
                    address: Address::new(d.kind, d.target.clone()),
                    ring_timeout: d.ring_timeout_secs.map(secs),
                })
                .collect(),
            send_reason: g.send_reason,
            options: GroupOptions {
                skip_busy: g.skip_busy,
                max_ring: g.max_ring_secs.map(secs),
                delays: g.destinations.iter().map(|d| secs(d.delay_secs.unwrap_or(0))).collect(),
            },
        }
    }
}

/// Settings of a group beyond what and how it rings ([`GroupDef::options`]):
/// the group's own limit, the delays of its destinations and whether it
/// skips busy members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupOptions {
    /// `skip_busy` (Asterisk `ringinuse=no`): a busy member
    /// ([`EndpointPolicy::busy`]) is skipped, its 486 not counted, instead
    /// of counting as a 486 from that member. Either way it is not dialed.
    pub skip_busy: bool,
    /// `max_ring_secs`: from the group's start, how long it may ring before
    /// it gives up (its legs CANCELed, the group failing with 480),
    /// whatever its ring method; `None` for no limit of its own.
    pub max_ring: Option<Duration>,
    /// `delay_secs` of each destination, by position in
    /// [`GroupDef::destinations`] (missing entries: no delay): a destination
    /// is dialed this long after it is reached (in `ring_all`, after the
    /// group started); its ring timeout counts from when it is dialed.
    pub delays: Vec<Duration>,
}

impl GroupOptions {
    /// The delay of destination `index` (zero when not set).
    pub fn delay(&self, index: usize) -> Duration {
        self.delays.get(index).copied().unwrap_or_default()
    }
}

/// How an `endpoint` (an extension) takes calls, as the directory knows
/// when the fork is built ([`Directory::endpoint_policy`]). The fork applies
/// it in this order: `forward_always`; `dnd` (skipped, 486); `busy`
/// (`forward_busy`, or 486: skipped in a `skip_busy` group); no registered
/// contact (`forward_noanswer` at once, or 480); else its contacts ring,
/// followed by `forward_busy` when they answer busy (486, 600) and by
/// `forward_noanswer` after [`NoAnswerForward::after`] or any other failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Do not disturb: never rung (skipped; a direct call gets 486).
    pub dnd: bool,
    /// On as many calls as it may take (`max_calls`): not rung.
    pub busy: bool,
    /// Every call goes there instead.
    pub forward_always: Option<Address>,
    /// Where a call goes when the extension is busy.
    pub forward_busy: Option<Address>,
    /// Where a call goes when the extension does not answer.
    pub forward_noanswer: Option<NoAnswerForward>,
}

/// `forward_noanswer`: where, and after how long ringing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoAnswerForward {
    /// The forward's destination.
    pub to: Address,
    /// How long the extension rings before the forward is dialed.
    pub after: Duration,
}

/// What a group remembers across calls for `round_robin` and
/// `least_recent`: who answered it, and when. The owner keeps one per
/// group id (in its store, so that it survives restarts), hands it to the
/// fork through [`Directory::hunt_memory`], and stores what
/// [`Fork::poll_hunt_memory`] reports. Members are destinations, known by
/// their address type and target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HuntMemory {
    /// The member that answered the group's last answered call:
    /// `round_robin` starts after it.
    pub last_answered: Option<Address>,
    /// When each member last answered a call of this group (wall clock),
    /// one entry per member: `least_recent` rings the oldest first.
    pub answered_at: Vec<(Address, Timestamp)>,
}

/// The same member of a group: same address type and target.
fn same_member(a: &Address, b: &Address) -> bool {
    a.kind == b.kind && a.target == b.target
}

impl HuntMemory {
    /// When `member` last answered a call of the group, if ever.
    pub fn last_answer(&self, member: &Address) -> Option<Timestamp> {
        self.answered_at.iter().find(|(m, _)| same_member(m, member)).map(|(_, at)| *at)
    }

    /// `member` answered a call of the group at `at`.
    pub fn record_answer(&mut self, member: &Address, at: Timestamp) {
        self.last_answered = Some(member.clone());
        match self.answered_at.iter_mut().find(|(m, _)| same_member(m, member)) {
            Some(entry) => entry.1 = at,
            None => self.answered_at.push((member.clone(), at)),
        }
    }

    /// Forgets the members that are not in `members` any more.
    pub fn retain_members(&mut self, members: &[Address]) {
        let known = |a: &Address| members.iter().any(|m| same_member(m, a));
        if self.last_answered.as_ref().is_some_and(|a| !known(a)) {
            self.last_answered = None;
        }
        self.answered_at.retain(|(m, _)| known(m));
    }

    /// Position in `members` of the member that answered last, if it is
    /// still one.
    pub fn last_answered_position(&self, members: &[Address]) -> Option<usize> {
        let last = self.last_answered.as_ref()?;
        members.iter().position(|m| same_member(m, last))
    }
}

/// A group's [`HuntMemory`] changed (a member of a `round_robin` or
/// `least_recent` group answered): store it for the group's next calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HuntMemoryUpdate {
    /// The group's id ([`GroupDef::id`]).
    pub group: Uuid,
    /// Its memory now (the whole of it, replacing the stored one).
    pub memory: HuntMemory,
}

/// What a fork serves: the root group, its owner and its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// Owner of every record made.
    pub customer_id: Uuid,
    /// The caller: `source` of every groupcall and leg.
    pub source: Address,
    /// The inbound call served (nil for a click-to-call).
    pub master_call_id: Uuid,
    /// The root group.
    pub group: GroupDef,
}

/// A registered contact of an address-of-record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContactTarget {
    /// Contact URI, where the INVITE goes.
    pub uri: String,
    /// Opaque key of the binding, for the B2BUA (flow, NAT source...).
    pub binding_key: String,
    /// q-value in thousandths; higher is dialed first.
    pub q: u16,
}

/// One way to reach a destination: a Request-URI and where to send it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The Request-URI to send.
    pub request_uri: String,
    /// Transport to the next hop.
    pub transport: sip_message::Transport,
    /// The next hop's address.
    pub address: std::net::SocketAddr,
    /// The trunk (carrier) the hop belongs to, whose credentials and headers
    /// the dialer uses; `None` for a DNS target.
    pub trunk: Option<String>,
}

/// `<trunk> <transport> <address>`, or `<transport> <address>` without a
/// trunk: the `detail` of a hop leg's destination in the records.
impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.trunk.as_deref().filter(|t| !t.is_empty()) {
            Some(trunk) => write!(f, "{trunk} {} {}", self.transport, self.address),
            None => write!(f, "{} {}", self.transport, self.address),
        }
    }
}

/// How the legs of a destination reach it, as the directory knows when the
/// fork is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Dial the leg target as it is: one leg (the default; tests use it).
    Direct,
    /// These hops in failover order: one leg per hop, the next only on no
    /// answer, 408 or 5xx. One hop is one [`LegTarget::Hop`] leg; two or
    /// more make a failover child groupcall; none fails the destination with
    /// 503, as an empty [`Fork::resolved`] does.
    Hops(Vec<Hop>),
    /// The hops are found when the destination is reached: emit
    /// [`Action::Resolve`] and wait for [`Fork::resolved`].
    Resolve,
    /// It cannot be reached: the destination fails with this code when
    /// reached (e.g. 404 no route, 416 bad URI).
    Unreachable(u16),
}

/// Lookups the B2BUA provides while a fork is built.
pub trait Directory {
    /// Registered contacts of an `endpoint` AOR (`test11@test`).
    fn contacts(&self, aor: &str) -> Vec<ContactTarget>;
    /// A stored ring group, by id or number.
    fn group(&self, key: &str) -> Option<&RingGroup>;
    /// How `target` is reached: asked for every `sip` destination (with a
    /// [`LegTarget::Sip`]) and every `tel` destination (with a
    /// [`LegTarget::Tel`]), never for endpoint contacts. The default dials
    /// the target as it is.
    fn reach(&self, target: &LegTarget) -> Reach {
        let _ = target;
        Reach::Direct
    }
    /// How extension `aor` takes calls now: do-not-disturb, busy, call
    /// forwards. The default rings every endpoint as it is.
    fn endpoint_policy(&self, aor: &str) -> EndpointPolicy {
        let _ = aor;
        EndpointPolicy::default()
    }
    /// What group `group` remembers of its past calls, for `round_robin`
    /// and `least_recent` (asked for those only). The default remembers
    /// nothing: the hunt starts with the first member.
    fn hunt_memory(&self, group: Uuid) -> HuntMemory {
        let _ = group;
        HuntMemory::default()
    }
}

/// Where a leg goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LegTarget {
    /// A registered contact of an endpoint.
    Contact {
        /// The endpoint's AOR.
        aor: String,
        /// The contact.
        contact: ContactTarget,
    },
    /// A SIP URI (`sip:` added when the destination left it out).
    Sip {
        /// The URI.
        uri: String,
    },
    /// A PSTN number, for the carrier routing.
    Tel {
        /// E.164 number.
        number: String,
    },
    /// One hop of a `sip` or `tel` destination (see [`Reach`]): send the
    /// hop's Request-URI to its address.
    Hop {
        /// The hop.
        hop: Hop,
    },
    /// A phone that picked the call up ([`Fork::pick_up`]): its INVITE
    /// came to the switch, nothing is dialed.
    Pickup {
        /// The picking extension's AOR.
        aor: String,
    },
}

/// A leg of a fork, stable for the fork's life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct LegId(pub u32);

/// A question for the B2BUA's resolver ([`Action::Resolve`]), unique within
/// its fork; answered with [`Fork::resolved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolveId(pub u32);

/// What a leg did, as reported by the B2BUA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegEvent {
    /// 100 Trying.
    Trying,
    /// 180, or 183 without SDP.
    Ringing,
    /// 183 with SDP.
    EarlyMedia,
    /// 2xx to the INVITE.
    Answered,
    /// A 3xx-6xx final response (3xx are not followed: counted as 480).
    Failed {
        /// Status code.
        code: u16,
    },
    /// No response (Timer B) or a transport error.
    NoResponse,
    /// 487 after our CANCEL.
    Cancelled,
    /// BYE from the leg.
    HungUp,
    /// The leg's dialog is over after our BYE (its 2xx, an error or a
    /// timeout).
    Ended,
}

/// Why a leg is cancelled, when the CANCEL should say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// Another leg answered.
    CompletedElsewhere,
}

impl CancelReason {
    /// The `Reason` header value (RFC 3326) to put on the CANCEL.
    pub fn header_value(self) -> &'static str {
        match self {
            CancelReason::CompletedElsewhere => r#"SIP;cause=200;text="Call completed elsewhere""#,
        }
    }
}

/// A record that changed, for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A groupcall (the root or a child).
    Groupcall(Groupcall),
    /// A leg's call record.
    Call(Call),
}

/// What the B2BUA must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // moved once from the queue to the caller
pub enum Action {
    /// Send an INVITE for this leg, then tell [`Fork::leg_dialed`] its
    /// Call-ID.
    Dial {
        /// The leg.
        leg: LegId,
        /// Its call record id.
        call_id: Uuid,
        /// Where to.
        target: LegTarget,
    },
    /// Find the hops of a destination that was reached (RFC 3263 lookup of
    /// a SIP URI, or the carrier routes of a number) and give them to
    /// [`Fork::resolved`], in failover order; none when there is none. The
    /// destination's ring timeout runs meanwhile.
    Resolve {
        /// The question, to give back.
        query: ResolveId,
        /// What to resolve: a [`LegTarget::Sip`] or [`LegTarget::Tel`].
        target: LegTarget,
    },
    /// CANCEL the leg (once it has had a provisional response).
    Cancel {
        /// The leg.
        leg: LegId,
        /// `Reason` to send; `None` sends none.
        reason: Option<CancelReason>,
    },
    /// A 2xx that must not become the answer: ACK it, then BYE.
    AckAndBye {
        /// The leg.
        leg: LegId,
    },
    /// BYE an answered leg.
    Bye {
        /// The leg.
        leg: LegId,
    },
    /// Send 180 Ringing to the caller (at most once).
    RelayRinging,
    /// Relay this leg's 183 with SDP to the caller (the first such leg only).
    RelayEarlyMedia {
        /// The leg.
        leg: LegId,
    },
    /// Answer the caller with this leg's answer and bridge them.
    AnswerCaller {
        /// The winning leg.
        leg: LegId,
    },
    /// Final failure response to the caller.
    RejectCaller {
        /// Status code.
        code: u16,
    },
    /// The answered leg is gone: BYE the caller.
    ByeCaller,
    /// A record changed; store it.
    RecordChanged(Record),
    /// Every leg and every groupcall of the fork is over; nothing follows.
    Finished,
}

/// Why a fork cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A group contains itself, directly or through others.
    Loop {
        /// The group met again.
        group: Uuid,
    },
    /// More legs than [`ForkConfig::max_legs`].
    TooManyLegs {
        /// The limit.
        limit: usize,
    },
    /// More child groupcalls than [`ForkConfig::max_legs`].
    TooManyGroups {
        /// The limit.
        limit: usize,
    },
    /// Nesting deeper than [`ForkConfig::max_depth`].
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A `groupcall` destination the [`Directory`] does not know.
    UnknownGroup {
        /// The id or number asked for.
        key: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Loop { group } => write!(f, "ring group {group} contains itself"),
            BuildError::TooManyLegs { limit } => write!(f, "more than {limit} legs"),
            BuildError::TooManyGroups { limit } => write!(f, "more than {limit} child groupcalls"),
            BuildError::TooDeep { limit } => write!(f, "groups nested deeper than {limit}"),
            BuildError::UnknownGroup { key } => write!(f, "unknown ring group {key:?}"),
        }
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;
    use records::{AddressType, Origin, RingGroupDestination, NIL};

    #[test]
    fn a_ring_group_as_the_fork_sees_it() {
        let dest = |kind, target: &str, ring, delay| RingGroupDestination {
            kind,
            target: target.into(),
            ring_timeout_secs: ring,
            delay_secs: delay,
        };
        let g = RingGroup {
            id: Uuid::from_u128(800),
            customer_id: NIL,
            number: "800".into(),
            domain: "test".into(),
            ring_method: RingMethod::Linear,
            answer_method: AnswerMethod::HangupOthers,
            destinations: vec![
                dest(AddressType::Endpoint, "test11@test", Some(10), None),
                dest(AddressType::Tel, "+15551234567", None, Some(5)),
            ],
            max_ring_secs: Some(60),
            skip_busy: true,
            send_reason: false,
            origin: Origin::Api,
            tm_create: Timestamp::NOT_YET,
            tm_update: Timestamp::NOT_YET,
            tm_delete: Timestamp::NOT_YET,
        };
        let def = GroupDef::from(&g);
        assert_eq!((def.id, def.ring_method, def.send_reason), (g.id, RingMethod::Linear, false));
        let d = &def.destinations;
        assert_eq!(d[0].address, Address::new(AddressType::Endpoint, "test11@test"));
        assert_eq!(d[0].ring_timeout, Some(Duration::from_secs(10)));
        assert_eq!(d[1].ring_timeout, None, "unset: the fork's default applies");
        let o = &def.options;
        assert_eq!((o.skip_busy, o.max_ring), (true, Some(Duration::from_secs(60))));
        assert_eq!((o.delay(0), o.delay(1)), (Duration::ZERO, Duration::from_secs(5)));
    }
}
