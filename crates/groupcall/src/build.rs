//! The fork's tree: its expansion from a [`GroupSpec`], and its growth when a
//! destination's hops are resolved.

use crate::best::normalize;
use crate::{
    BuildError, ContactTarget, Directory, ForkConfig, GroupDef, GroupSpec, Hop, HuntMemory, LegId,
    LegTarget, Reach,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use records::{
    Address, AddressType, AnswerMethod, Call, Groupcall, GroupcallStatus, RingMethod, Timestamp,
    NIL,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Makes the fork's records: the fields they all share (owner, caller,
/// served call) and their ids, drawn from the fork's seeded generator (never
/// from the OS), so that a run can be replayed.
pub(crate) struct RecordMaker {
    pub customer_id: Uuid,
    pub source: Address,
    pub master_call_id: Uuid,
    rng: StdRng,
}

impl RecordMaker {
    pub fn new(spec: &GroupSpec, seed: u64) -> RecordMaker {
        RecordMaker {
            customer_id: spec.customer_id,
            source: spec.source.clone(),
            master_call_id: spec.master_call_id,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A fresh (version 4) UUID from the seeded generator.
    pub fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid()
    }

    /// `v` in an order drawn from the seeded generator.
    pub fn shuffle(&mut self, v: &mut [usize]) {
        v.shuffle(&mut self.rng);
    }

    /// A groupcall record, `progressing`, with a fresh id.
    pub fn groupcall(
        &mut self,
        destinations: Vec<Address>,
        ring_method: RingMethod,
        answer_method: AnswerMethod,
        master_groupcall_id: Uuid,
        wall: Timestamp,
    ) -> Groupcall {
        Groupcall {
            id: self.uuid(),
            customer_id: self.customer_id,
            source: self.source.clone(),
            destinations,
            ring_method,
            answer_method,
            status: GroupcallStatus::Progressing,
            answer_call_id: NIL,
            answer_groupcall_id: NIL,
            call_ids: Vec::new(),
            groupcall_ids: Vec::new(),
            master_call_id: self.master_call_id,
            master_groupcall_id,
            tm_create: wall,
            tm_update: wall,
            tm_delete: Timestamp::NOT_YET,
            node_id: String::new(),
        }
    }
}

/// Where a groupcall is in its life. It only moves down this list (a group
/// closed before it was reached is `Skipped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupPhase {
    /// A child not reached yet: no record, nothing dialed.
    Unreached,
    /// Closed before it was reached (an answer elsewhere, a stop, its
    /// parent's ring timeout): it never will be, and has no record.
    Skipped,
    /// The root before [`crate::Fork::start`]: its record exists, nothing
    /// is dialed yet.
    Ready,
    /// Its destinations are being or have been dialed.
    Hunting,
    /// Nothing more will be dialed; its legs and children are ending.
    Closed,
    /// Status `hangup` emitted.
    Over,
}

impl GroupPhase {
    /// Its record exists (shown to the store).
    pub fn has_record(self) -> bool {
        !matches!(self, GroupPhase::Unreached | GroupPhase::Skipped)
    }

    /// Nothing more will be dialed.
    pub fn is_closed(self) -> bool {
        matches!(self, GroupPhase::Skipped | GroupPhase::Closed | GroupPhase::Over)
    }

    /// The phase after closing.
    pub fn closed(self) -> GroupPhase {
        match self {
            GroupPhase::Unreached => GroupPhase::Skipped,
            GroupPhase::Ready | GroupPhase::Hunting => GroupPhase::Closed,
            p => p,
        }
    }
}

/// How a group hunts through its destinations: the fork policy of a group
/// node. Every rule that differs between kinds of groups is here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hunt {
    /// Every destination at once; fails when all failed.
    RingAll,
    /// One destination after the other in the group's hunt order (list
    /// order for `linear`, drawn at build time for `round_robin`,
    /// `least_recent` and `random`), whatever each failed with.
    Sequential,
    /// A growing prefix of the list: each step adds the next destination
    /// for its ring timeout (or at once when the newest one failed), the
    /// others keep ringing; after the last step the group gives up.
    GrowingPrefix,
    /// One hop after the other (a destination's failover child), the next
    /// only when the last got no response, a 408 or a 5xx; any other failure
    /// ends the group at once.
    Failover,
    /// An extension's forward child: its first item rings (the extension,
    /// or the forward when the extension is not rung); after the extension
    /// fails, the `busy` item follows a busy answer ([`is_busy`]) and the
    /// `no_answer` item any other failure; after a forward fails, the
    /// group fails.
    Forward {
        /// Item index of `forward_busy`.
        busy: Option<usize>,
        /// Item index of `forward_noanswer` (or `forward_always`).
        no_answer: Option<usize>,
    },
}

impl Hunt {
    /// For a stored group's ring method.
    pub fn of(method: RingMethod) -> Hunt {
        match method {
            RingMethod::RingAll => Hunt::RingAll,
            RingMethod::MemoryHunt => Hunt::GrowingPrefix,
            RingMethod::Linear
            | RingMethod::RoundRobin
            | RingMethod::LeastRecent
            | RingMethod::Random => Hunt::Sequential,
        }
    }

    /// After a destination failed with `code` (as counted: no response is
    /// 408, a 3xx is 480), whether the next one is tried.
    pub fn goes_on_after(self, code: u16) -> bool {
        match self {
            Hunt::RingAll | Hunt::Sequential | Hunt::GrowingPrefix => true,
            Hunt::Failover => code == 408 || (500..=599).contains(&code),
            Hunt::Forward { .. } => false,
        }
    }
}

/// Whether a group of this ring method keeps a [`HuntMemory`] across calls.
pub(crate) fn remembers(method: RingMethod) -> bool {
    matches!(method, RingMethod::RoundRobin | RingMethod::LeastRecent)
}

/// The order a sequential group hunts its `members` in: list order, after
/// the last answerer (`round_robin`), the longest since answering first
/// (`least_recent`, never answered first, ties in list order), or drawn
/// from the fork's generator (`random`).
fn hunt_order(
    method: RingMethod,
    members: &[Address],
    memory: &HuntMemory,
    maker: &mut RecordMaker,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    match method {
        RingMethod::RoundRobin => {
            if let Some(last) = memory.last_answered_position(members) {
                order.rotate_left(last + 1);
            }
        }
        // Stable: equal times (and never) keep list order; never sorts
        // before any time.
        RingMethod::LeastRecent => order.sort_by_key(|&i| memory.last_answer(&members[i])),
        RingMethod::Random => maker.shuffle(&mut order),
        RingMethod::RingAll | RingMethod::Linear | RingMethod::MemoryHunt => {}
    }
    order
}

/// One groupcall of the tree.
pub(crate) struct GroupNode {
    /// Its record (shown once it [`GroupPhase::has_record`]).
    pub rec: Groupcall,
    /// Parent group and the index of this group among its items.
    pub parent: Option<(usize, usize)>,
    /// `Reason` on CANCELs of this group's legs.
    pub send_reason: bool,
    /// How it hunts.
    pub hunt: Hunt,
    /// Destinations, in order.
    pub items: Vec<Item>,
    /// Where it is in its life.
    pub phase: GroupPhase,
    /// Re-entrancy guard, set only while the group starts a destination
    /// (all of them for `ring_all`): a destination failing at once is only
    /// recorded, and the starting loop moves on.
    pub starting: bool,
    /// Sequential and failover: the order its items are hunted in (item
    /// indices, each once).
    pub order: Vec<usize>,
    /// Sequential and failover: the position in `order` of the destination
    /// ringing now; memory hunt: the index of the newest destination.
    pub cursor: Option<usize>,
    /// Final codes of its failed destinations, in the order received.
    pub codes: Vec<u16>,
    /// Codes of its skipped destinations ([`ItemKind::Skipped`]), used
    /// only when no destination failed otherwise.
    pub skipped: Vec<u16>,
    /// `max_ring_secs`: how long it may ring from its start.
    pub max_ring: Option<Duration>,
    /// When it gives up (its start plus `max_ring`), once started.
    pub give_up_at: Option<Instant>,
    /// Memory hunt: when the current step ends (the next destination is
    /// added, or after the last one the group gives up).
    pub step_until: Option<Instant>,
    /// The id of the root or stored group it is made from (none for
    /// endpoint and failover children).
    pub def_id: Option<Uuid>,
    /// What it remembers across calls (`round_robin`, `least_recent`).
    pub memory: HuntMemory,
}

/// One destination of a group.
pub(crate) struct Item {
    pub kind: ItemKind,
    pub ring_timeout: Option<Duration>,
    /// How long after it is reached it is dialed (`delay_secs`).
    pub delay: Duration,
    pub state: ItemState,
    /// `Active`: its ring timeout; `Delayed`: when it is dialed.
    pub deadline: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// A leg (index into the legs).
    Leg(usize),
    /// A child group (index into the groups).
    Child(usize),
    /// Fails with this code when reached (an endpoint with no registered
    /// contact: 480; a busy one: 486; a destination the directory cannot
    /// reach).
    Fails(u16),
    /// Not rung, and its code not counted (a member in do-not-disturb, a
    /// busy member of a `skip_busy` group, a forward cut as a loop): when
    /// every destination of a group is skipped, the group fails with this
    /// code.
    Skipped(u16),
    /// Its hops are asked for when it is reached (index into the resolves,
    /// also its [`crate::ResolveId`]); it becomes a `Leg`, a `Child` or
    /// fails once they come.
    Resolve(usize),
}

/// A `sip` or `tel` destination in the tree.
#[derive(Clone)]
pub(crate) struct DestinationRef {
    /// The group it belongs to.
    pub group: usize,
    /// Its index among the group's items.
    pub item: usize,
    /// Depth of `group` (the root is 0).
    pub depth: usize,
    /// The destination, as its legs' records show it.
    pub address: Address,
}

/// A destination whose hops are found when it is reached.
pub(crate) struct PendingResolve {
    /// Where it is.
    pub at: DestinationRef,
    /// What to resolve.
    pub target: LegTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemState {
    /// Not reached yet.
    Pending,
    /// Reached, waiting for its delay before it is dialed.
    Delayed,
    /// Dialed (or its hops asked for, or its child group started).
    Active,
    Failed(u16),
    Answered,
}

/// Why the fork cancels a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelCause {
    CompletedElsewhere,
    RingTimeout,
    CallerCancel,
    ApiHangup,
    OverallTimeout,
    Stop6xx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LegPhase {
    /// Not dialed.
    Idle,
    /// INVITE out, no final response.
    Live,
    /// The answer, bridged to the caller.
    Winner,
    /// CANCEL asked for; waiting for the leg to end.
    Cancelling { cause: CancelCause, deadline: Option<Instant> },
    /// BYE (or ACK+BYE) asked for; waiting for the leg to end.
    Terminating { deadline: Option<Instant> },
    /// Over.
    Ended,
}

/// One leg.
pub(crate) struct LegNode {
    pub id: LegId,
    pub group: usize,
    pub call_id: Uuid,
    pub target: LegTarget,
    pub destination: Address,
    pub phase: LegPhase,
    /// Its call record, from the Dial on.
    pub rec: Option<Call>,
}

/// The groups of a fork; the root always exists.
pub(crate) struct Groups {
    root: GroupNode,
    rest: Vec<GroupNode>,
}

impl Groups {
    pub fn root(&self) -> &GroupNode {
        &self.root
    }

    pub fn get(&self, g: usize) -> Option<&GroupNode> {
        match g.checked_sub(1) {
            None => Some(&self.root),
            Some(i) => self.rest.get(i),
        }
    }

    pub fn get_mut(&mut self, g: usize) -> Option<&mut GroupNode> {
        match g.checked_sub(1) {
            None => Some(&mut self.root),
            Some(i) => self.rest.get_mut(i),
        }
    }

    pub fn len(&self) -> usize {
        self.rest.len() + 1
    }

    pub fn iter(&self) -> impl Iterator<Item = &GroupNode> {
        std::iter::once(&self.root).chain(self.rest.iter())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut GroupNode> {
        std::iter::once(&mut self.root).chain(self.rest.iter_mut())
    }
}

/// The expanded tree. Groups are numbered in pre-order: a child's index is
/// always greater than its parent's.
pub(crate) struct Tree {
    pub groups: Groups,
    pub legs: Vec<LegNode>,
    pub resolves: Vec<PendingResolve>,
}

fn node(
    rec: Groupcall,
    parent: Option<(usize, usize)>,
    send_reason: bool,
    hunt: Hunt,
) -> GroupNode {
    GroupNode {
        hunt,
        rec,
        parent,
        send_reason,
        items: Vec::new(),
        phase: GroupPhase::Unreached,
        starting: false,
        order: Vec::new(),
        cursor: None,
        codes: Vec::new(),
        skipped: Vec::new(),
        max_ring: None,
        give_up_at: None,
        step_until: None,
        def_id: None,
        memory: HuntMemory::default(),
    }
}

fn item(kind: ItemKind, ring_timeout: Option<Duration>) -> Item {
    Item { kind, ring_timeout, delay: Duration::ZERO, state: ItemState::Pending, deadline: None }
}

/// `sip:` prepended when the target has no `sip:`/`sips:` scheme.
fn sip_uri(target: &str) -> String {
    let lower = target.get(..5).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        target.to_string()
    } else {
        format!("sip:{target}")
    }
}

impl Tree {
    /// The record id of group `g` (nil when there is none).
    pub fn group_id(&self, g: usize) -> Uuid {
        self.groups.get(g).map_or(NIL, |n| n.rec.id)
    }

    /// Appends a child group; its index is greater than every other's.
    pub fn push_child(&mut self, limit: usize, n: GroupNode) -> Result<usize, BuildError> {
        if self.groups.rest.len() >= limit {
            return Err(BuildError::TooManyGroups { limit });
        }
        self.groups.rest.push(n);
        Ok(self.groups.len() - 1)
    }

    /// Appends a leg of group `group`, not dialed yet.
    pub fn add_leg(
        &mut self,
        limit: usize,
        maker: &mut RecordMaker,
        group: usize,
        target: LegTarget,
        destination: Address,
    ) -> Result<usize, BuildError> {
        let too_many = BuildError::TooManyLegs { limit };
        if self.legs.len() >= limit {
            return Err(too_many);
        }
        let id = u32::try_from(self.legs.len()).map_err(|_| too_many)?;
        self.legs.push(LegNode {
            id: LegId(id),
            group,
            call_id: maker.uuid(),
            target,
            destination,
            phase: LegPhase::Idle,
            rec: None,
        });
        Ok(self.legs.len() - 1)
    }

    /// Appends a leg of group `group` over one hop of `destination`.
    pub fn add_hop_leg(
        &mut self,
        limit: usize,
        maker: &mut RecordMaker,
        group: usize,
        destination: &Address,
        hop: Hop,
    ) -> Result<usize, BuildError> {
        let address = hop_address(destination, &hop);
        self.add_leg(limit, maker, group, LegTarget::Hop { hop }, address)
    }

    /// The item of destination `at` reached over `hops`, in failover
    /// order: failing with 503 without any, one hop leg for one, a failover
    /// child for more (appended, with its legs). Limits are checked first:
    /// on an error nothing was added.
    pub fn hops_item(
        &mut self,
        cfg: &ForkConfig,
        maker: &mut RecordMaker,
        at: &DestinationRef,
        mut hops: Vec<Hop>,
        wall: Timestamp,
    ) -> Result<ItemKind, BuildError> {
        let limit = cfg.max_legs;
        if hops.len() >= 2 && at.depth >= cfg.max_depth {
            return Err(BuildError::TooDeep { limit: cfg.max_depth });
        }
        if self.legs.len().saturating_add(hops.len()) > limit {
            return Err(BuildError::TooManyLegs { limit });
        }
        if hops.len() >= 2 && self.groups.rest.len() >= limit {
            return Err(BuildError::TooManyGroups { limit });
        }
        match hops.len() {
            0 => Ok(ItemKind::Fails(503)),
            1 => {
                let hop = hops.remove(0);
                Ok(ItemKind::Leg(self.add_hop_leg(limit, maker, at.group, &at.address, hop)?))
            }
            _ => Ok(ItemKind::Child(self.failover_child(cfg, maker, at, hops, wall)?)),
        }
    }

    /// Appends the failover child of destination `at` over `hops`: linear,
    /// one leg per hop, no ring timeout per hop (the destination's own, on
    /// the parent's item, covers the whole child, as for an endpoint).
    fn failover_child(
        &mut self,
        cfg: &ForkConfig,
        maker: &mut RecordMaker,
        at: &DestinationRef,
        hops: Vec<Hop>,
        wall: Timestamp,
    ) -> Result<usize, BuildError> {
        let rec = maker.groupcall(
            hops.iter().map(|h| hop_address(&at.address, h)).collect(),
            RingMethod::Linear,
            AnswerMethod::HangupOthers,
            self.group_id(at.group),
            wall,
        );
        let send_reason = self.groups.get(at.group).map(|n| n.send_reason) != Some(false);
        let n = node(rec, Some((at.group, at.item)), send_reason, Hunt::Failover);
        let c = self.push_child(cfg.max_legs, n)?;
        let mut items = Vec::with_capacity(hops.len());
        for hop in hops {
            let l = self.add_hop_leg(cfg.max_legs, maker, c, &at.address, hop)?;
            items.push(item(ItemKind::Leg(l), None));
        }
        if let Some(n) = self.groups.get_mut(c) {
            n.order = (0..items.len()).collect();
            n.items = items;
        }
        Ok(c)
    }
}

/// The destination as a hop leg's record shows it: `detail` says which hop.
fn hop_address(destination: &Address, hop: &Hop) -> Address {
    with_detail(destination, hop.to_string())
}

/// `address` with `detail` set: how the records say which hop or which
/// forward a destination is.
fn with_detail(address: &Address, detail: impl Into<String>) -> Address {
    let mut a = address.clone();
    a.detail = detail.into();
    a
}

struct Builder<'a> {
    /// The root group, for [`Builder::rings_already`].
    root: &'a GroupDef,
    dir: &'a dyn Directory,
    cfg: &'a ForkConfig,
    wall: Timestamp,
    maker: &'a mut RecordMaker,
    tree: Tree,
    /// The ids of the stored groups from the root to the group being
    /// filled: a group met again is a loop.
    path: Vec<Uuid>,
    /// The AORs of every `endpoint` destination of the groups as
    /// configured (the root and its nested groups): a forward to one of
    /// them would ring a phone that rings already, and is cut. Gathered
    /// the first time a forward to an extension is met (most calls have
    /// none).
    ringing: Option<HashSet<String>>,
    /// The extensions whose forwards are being followed, outermost first: a
    /// forward back to one of them is a loop, and is cut.
    forwarding: Vec<String>,
}

/// Why a forward's destination is not rung: 482 Loop Detected, for one
/// that rings already or is being forwarded from; 483 Too Many Hops past
/// the deepest nesting.
const FORWARD_LOOP: u16 = 482;
const FORWARD_TOO_DEEP: u16 = 483;

/// Failure codes that mean "busy" to `forward_busy`: those the one
/// status-to-hangup-reason function calls busy.
pub(crate) fn is_busy(code: u16) -> bool {
    records::HangupReason::for_status(code) == records::HangupReason::Busy
}

/// What a forward child holds besides the extension's own contacts.
struct ForwardPlan {
    /// The extension rings first (its contacts), for this long when a
    /// `forward_noanswer` follows; `None`: it is not rung.
    member: Option<(Vec<ContactTarget>, Option<Duration>)>,
    /// `forward_busy`, after a busy answer (or alone, when it was busy).
    busy: Option<Address>,
    /// `forward_noanswer`, after no answer (or alone: `forward_always`, or
    /// no registered contact).
    no_answer: Option<Address>,
}

impl Builder<'_> {
    fn add_leg(
        &mut self,
        group: usize,
        target: LegTarget,
        destination: Address,
    ) -> Result<usize, BuildError> {
        self.tree.add_leg(self.cfg.max_legs, self.maker, group, target, destination)
    }

    /// Fills the items of group `g` from `def`; `depth` is `g`'s depth.
    fn fill(&mut self, g: usize, def: &GroupDef, depth: usize) -> Result<(), BuildError> {
        let options = &def.options;
        let mut items = Vec::with_capacity(def.destinations.len());
        for (i, d) in def.destinations.iter().enumerate() {
            let timeout = Some(d.ring_timeout.unwrap_or(self.cfg.default_ring_timeout));
            let at = DestinationRef { group: g, item: i, depth, address: d.address.clone() };
            let it = match d.address.kind {
                AddressType::Endpoint => self.endpoint_item(at, timeout, options.skip_busy)?,
                AddressType::Groupcall => {
                    let child = self.dir.group(&d.address.target).map(GroupDef::from);
                    let child = child.ok_or_else(|| BuildError::UnknownGroup {
                        key: d.address.target.clone(),
                    })?;
                    if self.path.contains(&child.id) {
                        // Back to a group on the path: inside a forward the
                        // forward made the loop, and is cut there.
                        if !self.forwarding.is_empty() {
                            items.push(item(ItemKind::Skipped(FORWARD_LOOP), None));
                            continue;
                        }
                        return Err(BuildError::Loop { group: child.id });
                    }
                    let c = self.nested_group(&at, &child)?;
                    item(ItemKind::Child(c), d.ring_timeout)
                }
                AddressType::Sip | AddressType::Tel => self.uri_item(at, timeout)?,
            };
            items.push(it);
        }
        for (i, it) in items.iter_mut().enumerate() {
            if !matches!(it.kind, ItemKind::Fails(_) | ItemKind::Skipped(_)) {
                it.delay = options.delay(i);
            }
        }
        let memory = if remembers(def.ring_method) {
            self.dir.hunt_memory(def.id)
        } else {
            HuntMemory::default()
        };
        let members: Vec<Address> = def.destinations.iter().map(|d| d.address.clone()).collect();
        let order = hunt_order(def.ring_method, &members, &memory, self.maker);
        if let Some(n) = self.tree.groups.get_mut(g) {
            n.items = items;
            n.order = order;
            n.max_ring = options.max_ring;
            n.def_id = Some(def.id);
            n.memory = memory;
        }
        Ok(())
    }

    /// A stored group nested at destination `at`: a child groupcall
    /// (appended, filled). The caller has checked for loops.
    fn nested_group(&mut self, at: &DestinationRef, child: &GroupDef) -> Result<usize, BuildError> {
        if at.depth >= self.cfg.max_depth {
            return Err(BuildError::TooDeep { limit: self.cfg.max_depth });
        }
        let rec = self.maker.groupcall(
            child.destinations.iter().map(|d| d.address.clone()).collect(),
            child.ring_method,
            child.answer_method,
            self.tree.group_id(at.group),
            self.wall,
        );
        let n =
            node(rec, Some((at.group, at.item)), child.send_reason, Hunt::of(child.ring_method));
        let c = self.tree.push_child(self.cfg.max_legs, n)?;
        self.path.push(child.id);
        let filled = self.fill(c, child, at.depth + 1);
        self.path.pop();
        filled?;
        Ok(c)
    }

    /// A `sip` or `tel` destination.
    fn uri_item(
        &mut self,
        at: DestinationRef,
        timeout: Option<Duration>,
    ) -> Result<Item, BuildError> {
        let target = match at.address.kind {
            AddressType::Tel => LegTarget::Tel { number: at.address.target.clone() },
            _ => LegTarget::Sip { uri: sip_uri(&at.address.target) },
        };
        self.reached(at, target, timeout)
    }

    /// An `endpoint` destination, as its [`crate::EndpointPolicy`] says
    /// (see there for the order): a forward child, skipped, failing, or a
    /// child ringing its contacts.
    fn endpoint_item(
        &mut self,
        at: DestinationRef,
        timeout: Option<Duration>,
        skip_busy: bool,
    ) -> Result<Item, BuildError> {
        let aor = at.address.target.clone();
        let policy = self.dir.endpoint_policy(&aor);
        let mut plan = ForwardPlan { member: None, busy: None, no_answer: None };
        if let Some(to) = policy.forward_always {
            plan.no_answer = Some(with_detail(&to, "forward_always"));
        } else if policy.dnd {
            return Ok(item(ItemKind::Skipped(486), None));
        } else if policy.busy {
            match policy.forward_busy {
                Some(to) => plan.busy = Some(with_detail(&to, "forward_busy")),
                None if skip_busy => return Ok(item(ItemKind::Skipped(486), None)),
                None => return Ok(item(ItemKind::Fails(486), None)),
            }
        } else {
            let mut contacts = self.dir.contacts(&aor);
            // Highest q first; stable, so equal q keep their order.
            contacts.sort_by_key(|c| std::cmp::Reverse(c.q));
            let no_answer =
                policy.forward_noanswer.map(|f| (with_detail(&f.to, "forward_noanswer"), f.after));
            if contacts.is_empty() {
                match no_answer {
                    // Not registered: it cannot answer, the forward rings now.
                    Some((to, _)) => plan.no_answer = Some(to),
                    None => return Ok(item(ItemKind::Fails(480), None)),
                }
            } else if policy.forward_busy.is_none() && no_answer.is_none() {
                if at.depth >= self.cfg.max_depth {
                    return Err(BuildError::TooDeep { limit: self.cfg.max_depth });
                }
                let c = self.endpoint(&at, contacts)?;
                return Ok(item(ItemKind::Child(c), timeout));
            } else {
                plan.member = Some((contacts, no_answer.as_ref().map(|(_, after)| *after)));
                plan.busy = policy.forward_busy.map(|to| with_detail(&to, "forward_busy"));
                plan.no_answer = no_answer.map(|(to, _)| to);
            }
        }
        if at.depth + 1 >= self.cfg.max_depth {
            return Ok(item(ItemKind::Skipped(FORWARD_TOO_DEEP), None));
        }
        self.forwarding.push(aor);
        let child = self.forward_child(&at, plan);
        self.forwarding.pop();
        Ok(item(ItemKind::Child(child?), timeout))
    }

    /// The forward child of extension `at` (a `linear` groupcall in the
    /// records, its destinations the extension when it rings, then its
    /// forwards with `detail` saying which), hunting by [`Hunt::Forward`].
    fn forward_child(
        &mut self,
        at: &DestinationRef,
        plan: ForwardPlan,
    ) -> Result<usize, BuildError> {
        let mut destinations = Vec::with_capacity(3);
        if plan.member.is_some() {
            destinations.push(at.address.clone());
        }
        let busy = plan.busy.map(|to| {
            destinations.push(to);
            destinations.len() - 1
        });
        let no_answer = plan.no_answer.map(|to| {
            destinations.push(to);
            destinations.len() - 1
        });
        let rec = self.maker.groupcall(
            destinations.clone(),
            RingMethod::Linear,
            AnswerMethod::HangupOthers,
            self.tree.group_id(at.group),
            self.wall,
        );
        let send_reason = self.tree.groups.get(at.group).map(|n| n.send_reason) != Some(false);
        let n =
            node(rec, Some((at.group, at.item)), send_reason, Hunt::Forward { busy, no_answer });
        let f = self.tree.push_child(self.cfg.max_legs, n)?;
        let depth = at.depth + 1;
        let mut items = Vec::with_capacity(destinations.len());
        for (i, address) in destinations.into_iter().enumerate() {
            let here = DestinationRef { group: f, item: i, depth, address };
            let it = match &plan.member {
                Some((contacts, after)) if i == 0 => {
                    let c = self.endpoint(&here, contacts.clone())?;
                    item(ItemKind::Child(c), *after)
                }
                _ => self.forward_target(here)?,
            };
            items.push(it);
        }
        if let Some(n) = self.tree.groups.get_mut(f) {
            n.order = (0..items.len()).collect();
            n.items = items;
        }
        Ok(f)
    }

    /// A forward's destination, rung like any destination (an extension
    /// with its own policy, so forwards chain), but cut (482) when it
    /// would ring an extension that rings already or loops back.
    fn forward_target(&mut self, at: DestinationRef) -> Result<Item, BuildError> {
        let timeout = Some(self.cfg.default_ring_timeout);
        match at.address.kind {
            AddressType::Endpoint => {
                let aor = &at.address.target;
                if self.rings_already(aor) || self.forwarding.iter().any(|f| f == aor) {
                    return Ok(item(ItemKind::Skipped(FORWARD_LOOP), None));
                }
                self.endpoint_item(at, timeout, false)
            }
            AddressType::Groupcall => {
                let Some(child) = self.dir.group(&at.address.target).map(GroupDef::from) else {
                    return Ok(item(ItemKind::Fails(404), None));
                };
                if self.path.contains(&child.id) {
                    return Ok(item(ItemKind::Skipped(FORWARD_LOOP), None));
                }
                if at.depth >= self.cfg.max_depth {
                    return Ok(item(ItemKind::Skipped(FORWARD_TOO_DEEP), None));
                }
                let c = self.nested_group(&at, &child)?;
                Ok(item(ItemKind::Child(c), None))
            }
            AddressType::Sip | AddressType::Tel => self.uri_item(at, timeout),
        }
    }

    /// Whether `aor` is an `endpoint` destination of the groups as
    /// configured.
    fn rings_already(&mut self, aor: &str) -> bool {
        let (root, dir) = (self.root, self.dir);
        self.ringing.get_or_insert_with(|| configured_endpoints(root, dir)).contains(aor)
    }

    /// A `sip` or `tel` destination, as the directory says it is reached.
    fn reached(
        &mut self,
        at: DestinationRef,
        target: LegTarget,
        timeout: Option<Duration>,
    ) -> Result<Item, BuildError> {
        let kind = match self.dir.reach(&target) {
            Reach::Direct => ItemKind::Leg(self.add_leg(at.group, target, at.address)?),
            Reach::Unreachable(code) => ItemKind::Fails(normalize(code)),
            Reach::Hops(hops) => self.tree.hops_item(self.cfg, self.maker, &at, hops, self.wall)?,
            Reach::Resolve => {
                let too_many = BuildError::TooManyLegs { limit: self.cfg.max_legs };
                u32::try_from(self.tree.resolves.len()).map_err(|_| too_many)?;
                self.tree.resolves.push(PendingResolve { at, target });
                ItemKind::Resolve(self.tree.resolves.len() - 1)
            }
        };
        let timeout = if matches!(kind, ItemKind::Fails(_)) { None } else { timeout };
        Ok(item(kind, timeout))
    }

    /// A child `ring_all` group over the contacts of the extension at
    /// `at`; the endpoint's ring timeout is on the parent's item, so the
    /// contacts have none.
    fn endpoint(
        &mut self,
        at: &DestinationRef,
        contacts: Vec<ContactTarget>,
    ) -> Result<usize, BuildError> {
        let rec = self.maker.groupcall(
            contacts.iter().map(|c| Address::new(AddressType::Sip, c.uri.clone())).collect(),
            RingMethod::RingAll,
            AnswerMethod::HangupOthers,
            self.tree.group_id(at.group),
            self.wall,
        );
        let send_reason = self.tree.groups.get(at.group).map(|n| n.send_reason) != Some(false);
        let n = node(rec, Some((at.group, at.item)), send_reason, Hunt::RingAll);
        let c = self.tree.push_child(self.cfg.max_legs, n)?;
        let mut items = Vec::with_capacity(contacts.len());
        for contact in contacts {
            let t = LegTarget::Contact { aor: at.address.target.clone(), contact };
            items.push(item(ItemKind::Leg(self.add_leg(c, t, at.address.clone())?), None));
        }
        if let Some(n) = self.tree.groups.get_mut(c) {
            n.order = (0..items.len()).collect();
            n.items = items;
        }
        Ok(c)
    }
}

/// The AORs of the `endpoint` destinations of `root` and of the stored
/// groups nested in it (each group once).
fn configured_endpoints(root: &GroupDef, dir: &dyn Directory) -> HashSet<String> {
    let mut aors = HashSet::new();
    let mut seen = vec![root.id];
    let mut todo = gather(root, dir, &mut aors, &mut seen);
    while let Some(g) = todo.pop() {
        todo.extend(gather(&g, dir, &mut aors, &mut seen));
    }
    aors
}

/// Adds the `endpoint` destinations of `g` to `aors`; returns the groups
/// nested in it that are not `seen` yet (marking them seen, 256 at most).
fn gather(
    g: &GroupDef,
    dir: &dyn Directory,
    aors: &mut HashSet<String>,
    seen: &mut Vec<Uuid>,
) -> Vec<GroupDef> {
    let mut nested = Vec::new();
    for d in &g.destinations {
        match d.address.kind {
            AddressType::Endpoint => {
                aors.insert(d.address.target.clone());
            }
            AddressType::Groupcall => {
                if let Some(child) = dir.group(&d.address.target) {
                    if !seen.contains(&child.id) && seen.len() < 256 {
                        seen.push(child.id);
                        nested.push(GroupDef::from(child));
                    }
                }
            }
            AddressType::Sip | AddressType::Tel => {}
        }
    }
    nested
}

/// Expands the tree of `spec`, every id drawn from `maker`; the root record
/// exists (phase `Ready`).
pub(crate) fn expand(
    spec: &GroupSpec,
    dir: &dyn Directory,
    cfg: &ForkConfig,
    maker: &mut RecordMaker,
    wall: Timestamp,
) -> Result<Tree, BuildError> {
    let def = &spec.group;
    let rec = maker.groupcall(
        def.destinations.iter().map(|d| d.address.clone()).collect(),
        def.ring_method,
        def.answer_method,
        NIL,
        wall,
    );
    let mut root = node(rec, None, def.send_reason, Hunt::of(def.ring_method));
    root.phase = GroupPhase::Ready;
    let tree =
        Tree { groups: Groups { root, rest: Vec::new() }, legs: Vec::new(), resolves: Vec::new() };
    let path = vec![def.id];
    let forwarding = Vec::new();
    let mut b = Builder { root: def, dir, cfg, wall, maker, tree, path, ringing: None, forwarding };
    b.fill(0, def, 0)?;
    Ok(b.tree)
}

#[cfg(test)]
mod tests {
    use super::sip_uri;

    #[test]
    fn sip_scheme_added_once() {
        assert_eq!(sip_uri("bob@example.com"), "sip:bob@example.com");
        assert_eq!(sip_uri("sip:bob@example.com"), "sip:bob@example.com");
        assert_eq!(sip_uri("SIPS:bob@example.com"), "SIPS:bob@example.com");
        assert_eq!(sip_uri("sip"), "sip:sip");
        assert_eq!(sip_uri("é"), "sip:é");
    }
}
