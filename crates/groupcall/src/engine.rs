//! The fork state machine.

use crate::best::{best_response, caller_response, normalize};
use crate::build::{
    self, is_busy, remembers, CancelCause, GroupPhase, Hunt, ItemKind, ItemState, LegPhase,
    RecordMaker, Tree,
};
use crate::{
    Action, BuildError, CancelReason, Directory, ForkConfig, GroupSpec, Hop, HuntMemoryUpdate,
    LegEvent, LegId, LegTarget, Now, Record, ResolveId,
};
use records::{
    Call, CallStatus, Direction, Groupcall, GroupcallStatus, HangupBy, HangupReason, Timestamp,
    NIL, NO_RESPONSE,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the caller was told while the fork hunts: each at most once, and
/// a 183 with early media is also the alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Alerted {
    Nothing,
    /// `RelayRinging` sent.
    Ringing,
    /// `RelayEarlyMedia` sent.
    EarlyMedia,
}

/// Where the fork stands with its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Built; nothing is dialed before [`Fork::start`].
    Ready,
    /// Ringing destinations; the caller's side not settled. The overall
    /// timeout ends the hunt at `deadline`.
    Hunting { deadline: Option<Instant>, alerted: Alerted },
    /// `AnswerCaller` sent with leg `winner`; the caller is on the call.
    Answered { winner: usize },
    /// The caller left the answered call (its BYE, or `ByeCaller` sent);
    /// `winner` is hung up.
    CallerGone { winner: usize },
    /// `RejectCaller` sent.
    Rejected,
    /// Every groupcall is over: `Action::Finished` was emitted.
    Finished { answered: bool },
}

/// A timer of a group that is due.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// The group's `max_ring` is over.
    GiveUp(usize),
    /// The group's memory hunt step is over.
    Step(usize),
    /// An item's ring timeout is over.
    RingTimeout(usize, usize),
    /// An item's delay is over: dial it.
    Dial(usize, usize),
}

/// The forking engine for one served call. See the crate documentation.
pub struct Fork {
    cfg: ForkConfig,
    tree: Tree,
    maker: RecordMaker,
    actions: VecDeque<Action>,
    memory_updates: VecDeque<HuntMemoryUpdate>,
    stage: Stage,
}

/// Longest SIP Call-ID kept in a call record, in bytes.
pub const MAX_SIP_CALL_ID: usize = 256;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

/// Moves a call record forward to `next` when allowed, stamping the time.
fn advance(rec: &mut Call, next: CallStatus, wall: Timestamp) {
    if rec.status == next || !rec.status.can_become(next) {
        return;
    }
    rec.status = next;
    match next {
        CallStatus::Ringing if rec.tm_ringing.is_not_yet() => rec.tm_ringing = wall,
        CallStatus::Progressing => rec.tm_progressing = wall,
        CallStatus::Hangup => rec.tm_hangup = wall,
        _ => {}
    }
}

/// Fills hangup_by / hangup_reason where still empty.
fn blame(rec: &mut Call, by: HangupBy, reason: HangupReason) {
    if rec.hangup_by == HangupBy::None {
        rec.hangup_by = by;
    }
    if rec.hangup_reason == HangupReason::None {
        rec.hangup_reason = reason;
    }
}

impl Fork {
    /// Expands the tree of `root` (endpoints through `dir.contacts`, nested
    /// groups through `dir.group`, `sip` and `tel` destinations through
    /// `dir.reach`, the memory of `round_robin` and `least_recent` groups
    /// through `dir.hunt_memory`) and makes the root
    /// groupcall record (emitted as the first action). Nothing is dialed
    /// before [`Fork::start`].
    ///
    /// Every id the fork makes (groupcalls, call records, also those made
    /// later) and the order of every `random` group come from a generator
    /// seeded with `seed`: the same seed and the same inputs give the same
    /// actions.
    pub fn build(
        root: GroupSpec,
        dir: &dyn Directory,
        cfg: ForkConfig,
        now: Now,
        seed: u64,
    ) -> Result<Fork, BuildError> {
        let mut maker = RecordMaker::new(&root, seed);
        let tree = build::expand(&root, dir, &cfg, &mut maker, now.wall)?;
        let mut fork = Fork {
            cfg,
            tree,
            maker,
            actions: VecDeque::new(),
            memory_updates: VecDeque::new(),
            stage: Stage::Ready,
        };
        fork.emit_group(0);
        Ok(fork)
    }

    /// Starts ringing: dials per the ring methods and arms the overall
    /// timeout. Only the first call counts.
    pub fn start(&mut self, now: Now) {
        if self.stage != Stage::Ready {
            return;
        }
        let deadline = after(now.at, self.cfg.overall_timeout);
        self.stage = Stage::Hunting { deadline, alerted: Alerted::Nothing };
        self.start_group(now, 0);
        self.settle(now);
    }

    /// What a leg did. Events of unknown, undialed or finished legs are
    /// ignored.
    pub fn leg_event(&mut self, now: Now, leg: LegId, ev: LegEvent) {
        if self.is_finished() {
            return;
        }
        let l = leg.0 as usize;
        let Some(phase) = self.tree.legs.get(l).map(|n| n.phase) else { return };
        match phase {
            LegPhase::Idle | LegPhase::Ended => return,
            LegPhase::Live => self.on_live(now, l, ev),
            LegPhase::Winner => {
                if matches!(ev, LegEvent::HungUp | LegEvent::Ended) {
                    self.end_leg(now, l, HangupBy::Remote, HangupReason::Normal);
                    self.bye_caller();
                }
            }
            LegPhase::Cancelling { cause, .. } => match ev {
                LegEvent::Answered => {
                    if cause == CancelCause::RingTimeout && self.is_live() {
                        // Cancelled for ring timeout, but it answered while
                        // nothing else had: a connected call is preferred.
                        self.win(now, l);
                    } else {
                        self.ack_and_bye(now, l);
                    }
                }
                LegEvent::Failed { .. }
                | LegEvent::Cancelled
                | LegEvent::NoResponse
                | LegEvent::HungUp
                | LegEvent::Ended => self.end_leg(now, l, HangupBy::Local, HangupReason::Cancel),
                LegEvent::Trying | LegEvent::Ringing | LegEvent::EarlyMedia => {}
            },
            LegPhase::Terminating { .. } => match ev {
                LegEvent::Failed { .. }
                | LegEvent::Cancelled
                | LegEvent::NoResponse
                | LegEvent::HungUp
                | LegEvent::Ended => self.end_leg(now, l, HangupBy::Local, HangupReason::Normal),
                _ => {}
            },
        }
        self.settle(now);
    }

    /// The B2BUA sent leg `leg`'s INVITE with this SIP Call-ID: it goes in
    /// the leg's call record (`sip_call_id`, emitted). Bounded to
    /// [`MAX_SIP_CALL_ID`] bytes (cut at a character boundary). Ignored for
    /// unknown or undialed legs and once the fork is finished.
    pub fn leg_dialed(&mut self, now: Now, leg: LegId, sip_call_id: &str) {
        if self.is_finished() {
            return;
        }
        let value = truncated(sip_call_id, MAX_SIP_CALL_ID);
        self.update_call(now, leg.0 as usize, |r| {
            if r.sip_call_id != value {
                r.sip_call_id = value.to_owned();
            }
        });
    }

    /// Leg `leg`'s media is anchored: rtpengine `anchor` (its ng address)
    /// holds it and gave it `address` (`IP:port`, empty when its SDP named
    /// none); on the leg's call record (emitted). Ignored for unknown or
    /// undialed legs and once the fork is finished.
    pub fn leg_media(&mut self, now: Now, leg: LegId, anchor: &str, address: &str) {
        if self.is_finished() {
            return;
        }
        self.update_call(now, leg.0 as usize, |r| {
            r.media_anchor = anchor.to_owned();
            r.media_address = address.to_owned();
        });
    }

    /// The caller CANCELed before an answer: every leg is cancelled and the
    /// caller gets 487. Ignored once the caller's side is settled.
    pub fn caller_cancelled(&mut self, now: Now) {
        if !self.is_pending() {
            return;
        }
        self.stop(now, CancelCause::CallerCancel, 487);
        self.settle(now);
    }

    /// The caller cancelled because the call was answered elsewhere (a
    /// cluster node relaying a leg for the node that carries the call):
    /// the legs get CANCEL with that Reason, the caller 487.
    pub fn caller_cancelled_elsewhere(&mut self, now: Now) {
        if !self.is_pending() {
            return;
        }
        self.stop(now, CancelCause::CompletedElsewhere, 487);
        self.settle(now);
    }

    /// The caller sent BYE. After the answer the winner gets a BYE; before
    /// it, this is a caller cancel.
    pub fn caller_hung_up(&mut self, now: Now) {
        match self.stage {
            Stage::Ready | Stage::Hunting { .. } => self.stop(now, CancelCause::CallerCancel, 487),
            Stage::Answered { winner } | Stage::CallerGone { winner } => {
                self.stage = Stage::CallerGone { winner };
                self.bye(now, winner);
            }
            Stage::Rejected => {}
            Stage::Finished { .. } => return,
        }
        self.settle(now);
    }

    /// Hangup asked through the API: every live groupcall becomes
    /// `hangingup`; ringing legs are cancelled and the caller gets 487, or
    /// after the answer both sides get a BYE. Asking again changes nothing.
    pub fn hangup(&mut self, now: Now) {
        if self.is_finished() {
            return;
        }
        for g in 0..self.tree.groups.len() {
            let Some(n) = self.tree.groups.get_mut(g) else { continue };
            if n.phase.has_record()
                && n.phase != GroupPhase::Over
                && n.rec.status < GroupcallStatus::Hangingup
            {
                n.rec.status = GroupcallStatus::Hangingup;
                self.touch_group(now, g);
            }
        }
        match self.stage {
            Stage::Ready | Stage::Hunting { .. } => self.stop(now, CancelCause::ApiHangup, 487),
            Stage::Answered { winner } | Stage::CallerGone { winner } => {
                self.bye(now, winner);
                self.bye_caller();
            }
            Stage::Rejected | Stage::Finished { .. } => {}
        }
        self.settle(now);
    }

    /// The switch cannot serve the call (its media relay failed and
    /// `on_failure = "reject"`): before the answer, every ringing leg is
    /// cancelled and the caller gets `code` as it is (a 503 stays a 503:
    /// it is this switch that is unavailable). After the answer, or asked
    /// again, it changes nothing.
    pub fn refuse(&mut self, now: Now, code: u16) {
        if matches!(self.stage, Stage::Ready | Stage::Hunting { .. }) {
            self.stop(now, CancelCause::ApiHangup, code);
            self.settle(now);
        }
    }

    /// Hangup of one leg asked through the API, by its call record id: a
    /// leg still ringing is CANCELed and its destination counts as failed
    /// (487), so the rest of the group goes on; the answered leg hangs up
    /// the whole call ([`Fork::hangup`]). Unknown ids, undialed legs and
    /// legs already going away are ignored.
    pub fn hangup_call(&mut self, now: Now, call_id: Uuid) {
        if self.is_finished() {
            return;
        }
        let found = self.tree.legs.iter().position(|n| n.call_id == call_id && n.rec.is_some());
        let Some(l) = found else { return };
        match self.tree.legs.get(l).map(|n| n.phase) {
            Some(LegPhase::Winner) => return self.hangup(now),
            Some(LegPhase::Live) => {
                self.cancel_leg(now, l, CancelCause::ApiHangup);
                if let Some((g, i)) = self.item_of_leg(l) {
                    self.item_failed(now, g, i, 487);
                }
            }
            _ => {}
        }
        self.settle(now);
    }

    /// `true` while the fork hunts and nobody answered: a pickup may take
    /// the call.
    pub fn is_ringing(&self) -> bool {
        self.is_live()
    }

    /// Every leg dialed (or picked up), in leg order: where it goes and its
    /// call record (whose status says ringing, answered or over).
    pub fn legs(&self) -> impl Iterator<Item = (LegId, &LegTarget, &Call)> {
        self.tree.legs.iter().filter_map(|n| Some((n.id, &n.target, n.rec.as_ref()?)))
    }

    /// The legs dialed and not over yet (ringing, or not answered yet), in
    /// leg order, with where they go.
    pub fn ringing_legs(&self) -> impl Iterator<Item = (LegId, &LegTarget)> {
        self.tree.legs.iter().filter(|n| n.phase == LegPhase::Live).map(|n| (n.id, &n.target))
    }

    /// A phone picked the call up (group, directed or `Replaces` pickup):
    /// it becomes the answer through the same one-answer rule as a leg
    /// that answers. A leg of the root group is added for it (its call
    /// record, `destination` the picker, goes `progressing` at once and is
    /// the root groupcall's `answer_call_id`); the caller is answered with
    /// it (`AnswerCaller`), and every leg still ringing is CANCELed with
    /// `Reason: SIP;cause=200;text="Call completed elsewhere"`. `None`
    /// (nothing changed) unless the call is still ringing.
    pub fn pick_up(&mut self, now: Now, picker: records::Address) -> Option<LegId> {
        if !self.is_live() {
            return None;
        }
        let target = LegTarget::Pickup { aor: picker.target.clone() };
        // One more than the limit: a pickup always fits, and comes once.
        let limit = self.cfg.max_legs.saturating_add(1);
        let l = self.tree.add_leg(limit, &mut self.maker, 0, target, picker).ok()?;
        let (id, _) = self.go_live(now, l)?;
        self.win(now, l);
        self.settle(now);
        Some(id)
    }

    /// The hops asked for by [`Action::Resolve`] `query`, in failover
    /// order. Ignored unless that destination is still waiting for them
    /// (not after an answer elsewhere, its ring timeout, a stop, or a
    /// second answer to the same query). No hop: the destination fails with
    /// 503; one: a [`crate::LegTarget::Hop`] leg is dialed; more: a failover
    /// child groupcall is made and started. Hops that would exceed
    /// [`ForkConfig::max_legs`] or [`ForkConfig::max_depth`] fail the
    /// destination with 500.
    pub fn resolved(&mut self, now: Now, query: ResolveId, hops: Vec<Hop>) {
        if !self.is_live() {
            return;
        }
        let r = query.0 as usize;
        let Some(pending) = self.tree.resolves.get(r) else { return };
        let (g, i) = (pending.at.group, pending.at.item);
        let waiting = self.tree.groups.get(g).is_some_and(|n| {
            n.phase == GroupPhase::Hunting
                && n.items.get(i).is_some_and(|it| {
                    it.state == ItemState::Active && it.kind == ItemKind::Resolve(r)
                })
        });
        if !waiting {
            return;
        }
        let at = pending.at.clone();
        let kind = self
            .tree
            .hops_item(&self.cfg, &mut self.maker, &at, hops, now.wall)
            .unwrap_or(ItemKind::Fails(500));
        if let Some(it) = self.tree.groups.get_mut(g).and_then(|n| n.items.get_mut(i)) {
            it.kind = kind;
        }
        match kind {
            ItemKind::Leg(l) => self.dial(now, l),
            ItemKind::Child(c) => self.start_group(now, c),
            ItemKind::Fails(code) => self.item_failed(now, g, i, code),
            ItemKind::Skipped(code) => self.item_skipped(now, g, i, code),
            ItemKind::Resolve(_) => {}
        }
        self.settle(now);
    }

    /// Runs every timer due at `now`: overall timeout, ring timeouts, and
    /// the wait for legs being cancelled or hung up.
    pub fn handle_timeout(&mut self, now: Now) {
        if matches!(self.stage, Stage::Ready | Stage::Finished { .. }) {
            return;
        }
        if self.overall_deadline().is_some_and(|d| d <= now.at) {
            self.stop(now, CancelCause::OverallTimeout, 480);
        }
        if self.is_live() {
            // Parents come before children, so a group's own timeout wins
            // over its children's at the same instant; in a group, giving
            // up comes first, then the memory hunt step, then its items.
            let is_due = |d: Option<Instant>| d.is_some_and(|d| d <= now.at);
            let mut due = Vec::new();
            for (g, n) in self.tree.groups.iter().enumerate() {
                if n.phase != GroupPhase::Hunting {
                    continue;
                }
                if is_due(n.give_up_at) {
                    due.push(Due::GiveUp(g));
                }
                if is_due(n.step_until) {
                    due.push(Due::Step(g));
                }
                for (i, it) in n.items.iter().enumerate() {
                    if is_due(it.deadline) {
                        match it.state {
                            ItemState::Active => due.push(Due::RingTimeout(g, i)),
                            ItemState::Delayed => due.push(Due::Dial(g, i)),
                            _ => {}
                        }
                    }
                }
            }
            for d in due {
                if !self.is_live() {
                    break;
                }
                match d {
                    Due::GiveUp(g) => self.give_up(now, g),
                    Due::Step(g) => self.memory_step(now, g),
                    Due::RingTimeout(g, i) => self.ring_timeout(now, g, i),
                    Due::Dial(g, i) => self.delay_over(now, g, i),
                }
            }
        }
        for l in 0..self.tree.legs.len() {
            let deadline = match self.tree.legs.get(l).map(|n| n.phase) {
                Some(
                    LegPhase::Cancelling { deadline, .. } | LegPhase::Terminating { deadline },
                ) => deadline,
                _ => None,
            };
            if deadline.is_some_and(|d| d <= now.at) {
                self.end_leg(now, l, HangupBy::Local, HangupReason::Timeout);
            }
        }
        self.settle(now);
    }

    /// The next instant [`Fork::handle_timeout`] must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        if self.is_live() {
            take(self.overall_deadline());
            for n in self.tree.groups.iter().filter(|n| n.phase == GroupPhase::Hunting) {
                take(n.give_up_at);
                take(n.step_until);
                for it in &n.items {
                    if matches!(it.state, ItemState::Active | ItemState::Delayed) {
                        take(it.deadline);
                    }
                }
            }
        }
        for leg in &self.tree.legs {
            if let LegPhase::Cancelling { deadline, .. } | LegPhase::Terminating { deadline } =
                leg.phase
            {
                take(deadline);
            }
        }
        next
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next change of a group's [`crate::HuntMemory`] to store, in
    /// order: one per `round_robin` or `least_recent` group the answer came
    /// through (poll it with the actions; a later update of the same group
    /// replaces an earlier one).
    pub fn poll_hunt_memory(&mut self) -> Option<HuntMemoryUpdate> {
        self.memory_updates.pop_front()
    }

    /// The root groupcall record.
    pub fn root(&self) -> &Groupcall {
        &self.tree.groups.root().rec
    }

    /// A groupcall record of this fork (children exist once reached).
    pub fn groupcall(&self, id: Uuid) -> Option<&Groupcall> {
        self.tree.groups.iter().find(|n| n.phase.has_record() && n.rec.id == id).map(|n| &n.rec)
    }

    /// A leg's call record (legs have one once dialed).
    pub fn call(&self, id: Uuid) -> Option<&Call> {
        self.tree.legs.iter().filter_map(|n| n.rec.as_ref()).find(|c| c.id == id)
    }

    /// The call record id of a dialed leg.
    pub fn leg_call_id(&self, leg: LegId) -> Option<Uuid> {
        self.tree.legs.get(leg.0 as usize).filter(|n| n.rec.is_some()).map(|n| n.call_id)
    }

    /// Where a leg goes.
    pub fn leg_target(&self, leg: LegId) -> Option<&LegTarget> {
        self.tree.legs.get(leg.0 as usize).map(|n| &n.target)
    }

    /// `true` once a leg answered and the caller was answered with it.
    pub fn is_answered(&self) -> bool {
        matches!(
            self.stage,
            Stage::Answered { .. } | Stage::CallerGone { .. } | Stage::Finished { answered: true }
        )
    }

    /// Legs dialed so far, over the whole tree.
    pub fn dialed_legs(&self) -> usize {
        self.tree.legs.iter().filter(|n| n.rec.is_some()).count()
    }

    /// `true` once [`Action::Finished`] was emitted.
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Finished { .. })
    }

    // ---- internals ----

    /// Started, and the caller's side not settled yet.
    fn is_live(&self) -> bool {
        matches!(self.stage, Stage::Hunting { .. })
    }

    /// The caller's side not settled yet (started or not).
    fn is_pending(&self) -> bool {
        matches!(self.stage, Stage::Ready | Stage::Hunting { .. })
    }

    /// When the overall timeout ends the hunt.
    fn overall_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Hunting { deadline, .. } => deadline,
            _ => None,
        }
    }

    /// Tells the caller `to` (ringing, early media) unless it was told as
    /// much already while hunting; `true` when it is news.
    fn alert(&mut self, to: Alerted) -> bool {
        match &mut self.stage {
            Stage::Hunting { alerted, .. } if *alerted < to => {
                *alerted = to;
                true
            }
            _ => false,
        }
    }

    /// `ByeCaller`, once: the caller of the answered call leaves it.
    fn bye_caller(&mut self) {
        if let Stage::Answered { winner } = self.stage {
            self.stage = Stage::CallerGone { winner };
            self.actions.push_back(Action::ByeCaller);
        }
    }

    fn emit_group(&mut self, g: usize) {
        if let Some(n) = self.tree.groups.get(g).filter(|n| n.phase.has_record()) {
            self.actions.push_back(Action::RecordChanged(Record::Groupcall(n.rec.clone())));
        }
    }

    fn touch_group(&mut self, now: Now, g: usize) {
        if let Some(n) = self.tree.groups.get_mut(g) {
            n.rec.tm_update = now.wall;
        }
        self.emit_group(g);
    }

    /// Applies `f` to a leg's call record; emits it when it changed.
    fn update_call(&mut self, now: Now, l: usize, f: impl FnOnce(&mut Call)) {
        let Some(rec) = self.tree.legs.get_mut(l).and_then(|n| n.rec.as_mut()) else { return };
        let before = rec.clone();
        f(rec);
        if *rec != before {
            rec.tm_update = now.wall;
            let rec = rec.clone();
            self.actions.push_back(Action::RecordChanged(Record::Call(rec)));
        }
    }

    fn set_phase(&mut self, l: usize, phase: LegPhase) {
        if let Some(n) = self.tree.legs.get_mut(l) {
            n.phase = phase;
        }
    }

    fn leg_id(&self, l: usize) -> Option<LegId> {
        self.tree.legs.get(l).map(|n| n.id)
    }

    fn start_group(&mut self, now: Now, g: usize) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        let newly = match n.phase {
            GroupPhase::Unreached => true,
            GroupPhase::Ready => false,
            _ => return,
        };
        n.phase = GroupPhase::Hunting;
        n.give_up_at = n.max_ring.and_then(|d| after(now.at, d));
        if newly {
            n.rec.tm_create = now.wall;
            n.rec.tm_update = now.wall;
        }
        let (parent, id, hunt, count) = (n.parent, n.rec.id, n.hunt, n.items.len());
        if newly {
            self.emit_group(g);
            if let Some((p, _)) = parent {
                if let Some(pn) = self.tree.groups.get_mut(p) {
                    pn.rec.groupcall_ids.push(id);
                }
                self.touch_group(now, p);
            }
        }
        match hunt {
            Hunt::RingAll => {
                self.set_starting(g, true);
                for i in 0..count {
                    if !self.is_live() {
                        break;
                    }
                    self.start_item(now, g, i);
                }
                self.set_starting(g, false);
                self.check_ring_all(now, g);
            }
            Hunt::Sequential | Hunt::Failover => self.next_linear(now, g),
            Hunt::GrowingPrefix => self.next_memory(now, g),
            Hunt::Forward { .. } => self.forward_next(now, g, 0),
        }
    }

    /// A forward child: rings item `i` (the extension or a forward); when
    /// it fails at once, the group goes on as after any failure.
    fn forward_next(&mut self, now: Now, g: usize, i: usize) {
        self.set_starting(g, true);
        self.start_item(now, g, i);
        self.set_starting(g, false);
        let state = self.tree.groups.get(g).and_then(|n| n.items.get(i)).map(|it| it.state);
        if let Some(ItemState::Failed(code)) = state {
            self.moved_on_after(now, g, i, code);
        }
    }

    /// A forward child's item `i` failed with `code`: after the extension
    /// (item 0, when it rang), its busy or no-answer forward rings; after
    /// a forward, the group fails.
    fn forward_after(&mut self, now: Now, g: usize, i: usize, code: u16) {
        let Some(n) = self.tree.groups.get(g) else { return };
        let Hunt::Forward { busy, no_answer } = n.hunt else { return };
        // Item 0 is the extension when it rang: then no forward is item 0.
        let extension_failed = i == 0 && busy != Some(0) && no_answer != Some(0);
        let next = match extension_failed {
            false => None,
            true if is_busy(code) => busy,
            true => no_answer,
        };
        match next {
            Some(j) => self.forward_next(now, g, j),
            None => self.group_failed(now, g),
        }
    }

    fn set_starting(&mut self, g: usize, on: bool) {
        if let Some(n) = self.tree.groups.get_mut(g) {
            n.starting = on;
        }
    }

    /// Destination `i` of `g` is reached: dialed now, or after its delay.
    fn start_item(&mut self, now: Now, g: usize, i: usize) {
        let Some(it) = self.tree.groups.get_mut(g).and_then(|n| n.items.get_mut(i)) else { return };
        if it.state != ItemState::Pending {
            return;
        }
        if it.delay > Duration::ZERO {
            it.state = ItemState::Delayed;
            it.deadline = after(now.at, it.delay);
            return;
        }
        self.ring_item(now, g, i);
    }

    /// The delay of destination `i` of `g` is over: it is dialed now (a
    /// failure at once moves the group on through [`Fork::item_failed`]).
    fn delay_over(&mut self, now: Now, g: usize, i: usize) {
        if self.tree.groups.get(g).is_some_and(|n| !n.phase.is_closed()) {
            self.ring_item(now, g, i);
        }
    }

    /// Dials destination `i` of `g` (or asks for its hops, or starts its
    /// child group); its ring timeout starts (in a memory hunt, the group's
    /// step timer stands for it).
    fn ring_item(&mut self, now: Now, g: usize, i: usize) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        let memory_hunt = n.hunt == Hunt::GrowingPrefix;
        let Some(it) = n.items.get_mut(i) else { return };
        if !matches!(it.state, ItemState::Pending | ItemState::Delayed) {
            return;
        }
        it.state = ItemState::Active;
        it.deadline =
            if memory_hunt { None } else { it.ring_timeout.and_then(|d| after(now.at, d)) };
        match it.kind {
            ItemKind::Leg(l) => self.dial(now, l),
            ItemKind::Child(c) => self.start_group(now, c),
            ItemKind::Fails(code) => self.item_failed(now, g, i, code),
            ItemKind::Skipped(code) => self.item_skipped(now, g, i, code),
            ItemKind::Resolve(r) => {
                let query = u32::try_from(r).map(ResolveId);
                let target = self.tree.resolves.get(r).map(|p| p.target.clone());
                if let (Ok(query), Some(target)) = (query, target) {
                    self.actions.push_back(Action::Resolve { query, target });
                } else {
                    self.item_failed(now, g, i, 500);
                }
            }
        }
    }

    /// Sequential and failover: dials the next destination in the hunt
    /// order, skipping those failing at once (as far as the group's
    /// [`Hunt`] goes on after their code); the group fails past the last
    /// one.
    fn next_linear(&mut self, now: Now, g: usize) {
        loop {
            if !self.is_live() {
                return;
            }
            let Some(n) = self.tree.groups.get_mut(g) else { return };
            if n.phase.is_closed() {
                return;
            }
            let next = n.cursor.map_or(0, |c| c + 1);
            n.cursor = Some(next);
            let Some(&next) = n.order.get(next) else {
                self.group_failed(now, g);
                return;
            };
            n.starting = true;
            self.start_item(now, g, next);
            let Some(n) = self.tree.groups.get_mut(g) else { return };
            n.starting = false;
            match n.items.get(next).map(|it| it.state) {
                Some(ItemState::Failed(code)) if n.hunt.goes_on_after(code) => {}
                Some(ItemState::Failed(_)) => {
                    if self.is_live() {
                        self.group_failed(now, g);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    /// Memory hunt: adds the next destination (the others keep ringing)
    /// and starts its step, skipping those failing at once. Past the last
    /// one, the group fails if every destination failed, else it rings on
    /// until its step ends.
    fn next_memory(&mut self, now: Now, g: usize) {
        loop {
            if !self.is_live() {
                return;
            }
            let Some(n) = self.tree.groups.get_mut(g) else { return };
            if n.phase.is_closed() {
                return;
            }
            let next = n.cursor.map_or(0, |c| c + 1);
            if next >= n.items.len() {
                if n.items.iter().all(|it| matches!(it.state, ItemState::Failed(_))) {
                    self.group_failed(now, g);
                }
                return;
            }
            n.cursor = Some(next);
            let step = n.items.get(next).and_then(|it| it.ring_timeout);
            n.step_until = step.and_then(|d| after(now.at, d));
            n.starting = true;
            self.start_item(now, g, next);
            let Some(n) = self.tree.groups.get_mut(g) else { return };
            n.starting = false;
            if !matches!(n.items.get(next).map(|it| it.state), Some(ItemState::Failed(_))) {
                return;
            }
        }
    }

    /// Memory hunt: the step of the newest destination is over: the next
    /// one is added, or after the last one the group gives up.
    fn memory_step(&mut self, now: Now, g: usize) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        if n.phase != GroupPhase::Hunting {
            return;
        }
        n.step_until = None;
        let next = n.cursor.map_or(0, |c| c + 1);
        if next < n.items.len() {
            self.next_memory(now, g);
        } else {
            self.give_up(now, g);
        }
    }

    /// Memory hunt: destination `i` failed. When it was the newest, or
    /// every destination reached so far failed, the hunt moves on.
    fn memory_failed(&mut self, now: Now, g: usize, i: usize) {
        let Some(n) = self.tree.groups.get(g) else { return };
        let reached = n.cursor.map_or(0, |c| c + 1);
        let all_failed =
            n.items.iter().take(reached).all(|it| matches!(it.state, ItemState::Failed(_)));
        if n.cursor == Some(i) || all_failed {
            self.next_memory(now, g);
        }
    }

    /// Group `g` rang long enough (its `max_ring`, or the last step of a
    /// memory hunt): its legs and children are cancelled and it fails with
    /// 480 (at the root, the caller is rejected with 480).
    fn give_up(&mut self, now: Now, g: usize) {
        let Some(n) = self.tree.groups.get(g) else { return };
        if n.phase != GroupPhase::Hunting {
            return;
        }
        let parent = n.parent;
        self.cancel_subtree(now, g, CancelCause::RingTimeout);
        match parent {
            Some((p, i)) => self.item_failed(now, p, i, 480),
            None => self.reject(480),
        }
    }

    fn check_ring_all(&mut self, now: Now, g: usize) {
        if !self.is_live() {
            return;
        }
        let Some(n) = self.tree.groups.get(g) else { return };
        if n.phase.is_closed() || n.starting {
            return;
        }
        if n.items.iter().all(|it| matches!(it.state, ItemState::Failed(_))) {
            self.group_failed(now, g);
        }
    }

    fn dial(&mut self, now: Now, l: usize) {
        let Some(leg) = self.tree.legs.get_mut(l) else { return };
        if leg.phase != LegPhase::Idle {
            return;
        }
        let (g, target) = (leg.group, leg.target.clone());
        let Some((id, call_id)) = self.go_live(now, l) else { return };
        self.touch_group(now, g);
        self.actions.push_back(Action::Dial { leg: id, call_id, target });
    }

    /// Leg `l` goes live: its call record is made (emitted) and listed in
    /// its group's `call_ids`. Returns its id and record id.
    fn go_live(&mut self, now: Now, l: usize) -> Option<(LegId, Uuid)> {
        let leg = self.tree.legs.get_mut(l)?;
        leg.phase = LegPhase::Live;
        let g = leg.group;
        let groupcall_id = self.tree.groups.get(g).map_or(NIL, |n| n.rec.id);
        let rec = Call {
            groupcall_id,
            direction: Direction::Outgoing,
            ..Call::dialing(
                leg.call_id,
                self.maker.customer_id,
                self.maker.source.clone(),
                leg.destination.clone(),
                now.wall,
            )
        };
        let (id, call_id) = (leg.id, leg.call_id);
        leg.rec = Some(rec.clone());
        self.actions.push_back(Action::RecordChanged(Record::Call(rec)));
        if let Some(n) = self.tree.groups.get_mut(g) {
            n.rec.call_ids.push(call_id);
        }
        Some((id, call_id))
    }

    fn on_live(&mut self, now: Now, l: usize, ev: LegEvent) {
        let wall = now.wall;
        match ev {
            LegEvent::Trying => {}
            LegEvent::Ringing => {
                self.update_call(now, l, |r| advance(r, CallStatus::Ringing, wall));
                if self.alert(Alerted::Ringing) {
                    self.actions.push_back(Action::RelayRinging);
                }
            }
            LegEvent::EarlyMedia => {
                self.update_call(now, l, |r| advance(r, CallStatus::Ringing, wall));
                // The caller is alerted by the 183 itself.
                if self.alert(Alerted::EarlyMedia) {
                    if let Some(leg) = self.leg_id(l) {
                        self.actions.push_back(Action::RelayEarlyMedia { leg });
                    }
                }
            }
            LegEvent::Answered => {
                if self.is_live() {
                    self.win(now, l);
                } else {
                    self.ack_and_bye(now, l);
                }
            }
            LegEvent::Failed { code } => {
                let reason = HangupReason::for_status(code);
                self.leg_failed(now, l, HangupBy::Remote, reason, normalize(code));
            }
            LegEvent::NoResponse => {
                let reason = HangupReason::for_status(NO_RESPONSE);
                self.leg_failed(now, l, HangupBy::Local, reason, NO_RESPONSE)
            }
            // Not expected before a CANCEL or an answer: the far end gave up.
            LegEvent::Cancelled => {
                self.leg_failed(now, l, HangupBy::Remote, HangupReason::Failed, 487)
            }
            LegEvent::HungUp | LegEvent::Ended => {
                self.leg_failed(now, l, HangupBy::Remote, HangupReason::Failed, 480)
            }
        }
    }

    fn leg_failed(&mut self, now: Now, l: usize, by: HangupBy, reason: HangupReason, code: u16) {
        self.end_leg(now, l, by, reason);
        if let Some((g, i)) = self.item_of_leg(l) {
            self.item_failed(now, g, i, code);
        }
    }

    fn item_of_leg(&self, l: usize) -> Option<(usize, usize)> {
        let g = self.tree.legs.get(l)?.group;
        let i = self.tree.groups.get(g)?.items.iter().position(|it| it.kind == ItemKind::Leg(l))?;
        Some((g, i))
    }

    fn end_leg(&mut self, now: Now, l: usize, by: HangupBy, reason: HangupReason) {
        self.set_phase(l, LegPhase::Ended);
        let wall = now.wall;
        self.update_call(now, l, |r| {
            advance(r, CallStatus::Hangup, wall);
            blame(r, by, reason);
        });
    }

    /// A destination failed with `code`: record it, then move the group on.
    fn item_failed(&mut self, now: Now, g: usize, i: usize, code: u16) {
        self.item_over(now, g, i, code, true);
    }

    /// A destination was skipped (not rung): as failed, its code kept apart.
    fn item_skipped(&mut self, now: Now, g: usize, i: usize, code: u16) {
        self.item_over(now, g, i, code, false);
    }

    /// A destination is over with `code`, `counted` among the group's
    /// failure codes or kept with the skipped ones; the group moves on.
    fn item_over(&mut self, now: Now, g: usize, i: usize, code: u16, counted: bool) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        let Some(it) = n.items.get_mut(i) else { return };
        if matches!(it.state, ItemState::Failed(_) | ItemState::Answered) {
            return;
        }
        it.state = ItemState::Failed(code);
        it.deadline = None;
        if counted {
            n.codes.push(code);
        } else {
            n.skipped.push(code);
        }
        let (closed, starting) = (n.phase.is_closed(), n.starting);
        if closed || !self.is_live() {
            return;
        }
        if code >= 600 && self.cfg.stop_on_6xx {
            self.stop(now, CancelCause::Stop6xx, code);
            return;
        }
        if starting {
            return;
        }
        self.moved_on_after(now, g, i, code);
    }

    /// Destination `i` of `g` failed with `code` (recorded, the group still
    /// hunting): the group goes on as its [`Hunt`] says.
    fn moved_on_after(&mut self, now: Now, g: usize, i: usize, code: u16) {
        let Some(n) = self.tree.groups.get(g) else { return };
        if n.phase.is_closed() || !self.is_live() {
            return;
        }
        let hunt = n.hunt;
        let current = n.cursor.and_then(|c| n.order.get(c)).copied();
        match hunt {
            Hunt::RingAll => self.check_ring_all(now, g),
            Hunt::GrowingPrefix => self.memory_failed(now, g, i),
            Hunt::Forward { .. } => self.forward_after(now, g, i, code),
            Hunt::Sequential | Hunt::Failover if current != Some(i) => {}
            _ if hunt.goes_on_after(code) => self.next_linear(now, g),
            // Failover: this failure is the callee's answer, not the
            // server's; the other hops would say the same.
            Hunt::Failover | Hunt::Sequential => self.group_failed(now, g),
        }
    }

    /// Every destination of `g` failed: report its best code upward, or
    /// reject the caller at the root.
    fn group_failed(&mut self, now: Now, g: usize) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        if n.phase.is_closed() {
            return;
        }
        n.phase = n.phase.closed();
        // Skipped destinations count only when nothing else failed (every
        // member busy or in DND: 486); no destination at all counts as
        // "nobody available".
        // A forward child answers with its last code: the forward's answer
        // supersedes the extension's.
        let counted = match n.hunt {
            Hunt::Forward { .. } => n.codes.last().copied(),
            _ => best_response(&n.codes),
        };
        let best = counted.or_else(|| best_response(&n.skipped)).unwrap_or(480);
        match n.parent {
            Some((p, i)) => self.item_failed(now, p, i, best),
            None => self.reject(caller_response(best)),
        }
    }

    /// The ring timeout of destination `i` of `g` expired.
    fn ring_timeout(&mut self, now: Now, g: usize, i: usize) {
        let Some(n) = self.tree.groups.get(g) else { return };
        let Some(it) = n.items.get(i) else { return };
        if n.phase.is_closed() || it.state != ItemState::Active {
            return;
        }
        match it.kind {
            ItemKind::Leg(l) => self.cancel_leg(now, l, CancelCause::RingTimeout),
            ItemKind::Child(c) => self.cancel_subtree(now, c, CancelCause::RingTimeout),
            ItemKind::Fails(_) | ItemKind::Skipped(_) | ItemKind::Resolve(_) => {}
        }
        self.item_failed(now, g, i, 480);
    }

    fn in_subtree(&self, mut g: usize, top: usize) -> bool {
        // Parents have smaller indices, so this walk ends.
        loop {
            if g == top {
                return true;
            }
            match self.tree.groups.get(g).and_then(|n| n.parent) {
                Some((p, _)) if p < g => g = p,
                _ => return false,
            }
        }
    }

    /// Closes group `top` and its descendants and cancels their live legs.
    fn cancel_subtree(&mut self, now: Now, top: usize, cause: CancelCause) {
        for g in top..self.tree.groups.len() {
            if !self.in_subtree(g, top) {
                continue;
            }
            if let Some(n) = self.tree.groups.get_mut(g) {
                n.phase = n.phase.closed();
                n.items.iter_mut().for_each(|it| it.deadline = None);
            }
        }
        for l in 0..self.tree.legs.len() {
            let g = self.tree.legs.get(l).map_or(usize::MAX, |n| n.group);
            if self.in_subtree(g, top) {
                self.cancel_leg(now, l, cause);
            }
        }
    }

    /// CANCELs a live leg.
    fn cancel_leg(&mut self, now: Now, l: usize, cause: CancelCause) {
        let Some(leg) = self.tree.legs.get_mut(l) else { return };
        if leg.phase != LegPhase::Live {
            return;
        }
        leg.phase =
            LegPhase::Cancelling { cause, deadline: after(now.at, self.cfg.leg_cleanup_timeout) };
        let (id, g) = (leg.id, leg.group);
        let send_reason = self.tree.groups.get(g).map(|n| n.send_reason) != Some(false);
        let reason = (cause == CancelCause::CompletedElsewhere && send_reason)
            .then_some(CancelReason::CompletedElsewhere);
        let why = match cause {
            CancelCause::RingTimeout => HangupReason::Noanswer,
            CancelCause::OverallTimeout => HangupReason::Timeout,
            CancelCause::CompletedElsewhere
            | CancelCause::CallerCancel
            | CancelCause::ApiHangup
            | CancelCause::Stop6xx => HangupReason::Cancel,
        };
        let wall = now.wall;
        self.update_call(now, l, |r| {
            advance(r, CallStatus::Canceling, wall);
            r.hangup_by = HangupBy::Local;
            r.hangup_reason = why;
        });
        self.actions.push_back(Action::Cancel { leg: id, reason });
    }

    /// A 2xx that is not the answer: ACK and BYE it.
    fn ack_and_bye(&mut self, now: Now, l: usize) {
        let Some(id) = self.leg_id(l) else { return };
        self.set_phase(
            l,
            LegPhase::Terminating { deadline: after(now.at, self.cfg.leg_cleanup_timeout) },
        );
        let wall = now.wall;
        self.update_call(now, l, |r| {
            advance(r, CallStatus::Terminating, wall);
            blame(r, HangupBy::Local, HangupReason::Cancel);
        });
        self.actions.push_back(Action::AckAndBye { leg: id });
    }

    /// BYEs the winner (caller hung up, or API hangup).
    fn bye(&mut self, now: Now, l: usize) {
        if self.tree.legs.get(l).map(|n| n.phase) != Some(LegPhase::Winner) {
            return;
        }
        let Some(id) = self.leg_id(l) else { return };
        self.set_phase(
            l,
            LegPhase::Terminating { deadline: after(now.at, self.cfg.leg_cleanup_timeout) },
        );
        let wall = now.wall;
        self.update_call(now, l, |r| {
            advance(r, CallStatus::Terminating, wall);
            blame(r, HangupBy::Local, HangupReason::Normal);
        });
        self.actions.push_back(Action::Bye { leg: id });
    }

    /// Leg `l` is the answer: set it on every level, answer the caller,
    /// cancel everything else.
    fn win(&mut self, now: Now, l: usize) {
        let Some(leg) = self.tree.legs.get_mut(l) else { return };
        leg.phase = LegPhase::Winner;
        let (id, call_id, first_group) = (leg.id, leg.call_id, leg.group);
        self.stage = Stage::Answered { winner: l };
        let wall = now.wall;
        self.update_call(now, l, |r| {
            advance(r, CallStatus::Progressing, wall);
            // Also when it stays `canceling` (a late answer after a ring
            // timeout): it is talking now.
            r.tm_progressing = wall;
            r.hangup_by = HangupBy::None;
            r.hangup_reason = HangupReason::None;
        });
        if let Some((g, i)) = self.item_of_leg(l) {
            self.mark_answered(g, i);
            self.remember(now, g, i);
        }
        let mut g = first_group;
        let mut via = NIL;
        while let Some(n) = self.tree.groups.get_mut(g) {
            if n.rec.answer_call_id == NIL {
                n.rec.answer_call_id = call_id;
                n.rec.answer_groupcall_id = via;
            }
            let (gid, parent) = (n.rec.id, n.parent);
            self.touch_group(now, g);
            match parent {
                Some((p, i)) if p < g => {
                    self.mark_answered(p, i);
                    self.remember(now, p, i);
                    via = gid;
                    g = p;
                }
                _ => break,
            }
        }
        self.actions.push_back(Action::AnswerCaller { leg: id });
        self.close_all();
        for other in 0..self.tree.legs.len() {
            if other != l {
                self.cancel_leg(now, other, CancelCause::CompletedElsewhere);
            }
        }
    }

    /// The answer came through destination `i` of `g`: a group that keeps
    /// a [`crate::HuntMemory`] remembers it and reports it.
    fn remember(&mut self, now: Now, g: usize, i: usize) {
        let Some(n) = self.tree.groups.get_mut(g) else { return };
        let Some(group) = n.def_id.filter(|_| remembers(n.rec.ring_method)) else { return };
        let Some(member) = n.rec.destinations.get(i) else { return };
        n.memory.record_answer(member, now.wall);
        n.memory.retain_members(&n.rec.destinations);
        self.memory_updates.push_back(HuntMemoryUpdate { group, memory: n.memory.clone() });
    }

    fn mark_answered(&mut self, g: usize, i: usize) {
        if let Some(it) = self.tree.groups.get_mut(g).and_then(|n| n.items.get_mut(i)) {
            it.state = ItemState::Answered;
            it.deadline = None;
        }
    }

    fn close_all(&mut self) {
        for n in self.tree.groups.iter_mut() {
            n.phase = n.phase.closed();
            n.items.iter_mut().for_each(|it| it.deadline = None);
        }
    }

    /// Cancels every live leg and rejects the caller with `code`.
    fn stop(&mut self, now: Now, cause: CancelCause, code: u16) {
        for l in 0..self.tree.legs.len() {
            self.cancel_leg(now, l, cause);
        }
        self.reject(code);
    }

    fn reject(&mut self, code: u16) {
        if !self.is_pending() {
            return;
        }
        self.stage = Stage::Rejected;
        self.close_all();
        self.actions.push_back(Action::RejectCaller { code });
    }

    /// Ends every groupcall whose legs and children are all over (children
    /// first), then the fork once the root is over.
    fn settle(&mut self, now: Now) {
        for g in (0..self.tree.groups.len()).rev() {
            let Some(n) = self.tree.groups.get(g) else { continue };
            if n.phase != GroupPhase::Closed {
                continue;
            }
            let legs_over = self
                .tree
                .legs
                .iter()
                .filter(|leg| leg.group == g)
                .all(|leg| matches!(leg.phase, LegPhase::Idle | LegPhase::Ended));
            let children_over = self
                .tree
                .groups
                .iter()
                .filter(|c| c.parent.is_some_and(|(p, _)| p == g))
                .all(|c| !c.phase.has_record() || c.phase == GroupPhase::Over);
            if legs_over && children_over {
                if let Some(n) = self.tree.groups.get_mut(g) {
                    n.phase = GroupPhase::Over;
                    n.rec.status = GroupcallStatus::Hangup;
                }
                self.touch_group(now, g);
            }
        }
        let answered = match self.stage {
            Stage::Answered { .. } | Stage::CallerGone { .. } => true,
            Stage::Rejected => false,
            Stage::Ready | Stage::Hunting { .. } | Stage::Finished { .. } => return,
        };
        if self.tree.groups.root().phase == GroupPhase::Over {
            self.stage = Stage::Finished { answered };
            self.actions.push_back(Action::Finished);
        }
    }
}

impl std::fmt::Debug for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fork")
            .field("root", &self.root().id)
            .field("legs", &self.tree.legs.len())
            .field("stage", &self.stage)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn truncation_at_char_boundaries() {
        assert_eq!(truncated("abc", 3), "abc");
        assert_eq!(truncated("abcd", 3), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aé", 3), "aé");
        assert_eq!(truncated("", 0), "");
        assert_eq!(truncated("é", 0), "");
    }
}
