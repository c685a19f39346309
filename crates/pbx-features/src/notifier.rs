//! The notifier of the `dialog` event package (RFC 6665, RFC 4235): every
//! busy-lamp subscription of a switch, as one sans-IO machine.
//!
//! It decides; the switch sends. A SUBSCRIBE's answer comes back from
//! [`Notifier::handle_new`] / [`Notifier::handle_refresh`]; every NOTIFY
//! to send comes out of [`Notifier::poll_notify`] as a typed intent: the
//! Event and Subscription-State values and the dialog-info body, with the
//! subscription's dialog `D`. `D` is the switch's own dialog type (Call-ID,
//! tags, remote target, route set, CSeq, peer), kept here untouched so
//! that one owner holds a subscription and its dialog, while building and
//! sending in-dialog requests stays with the switch's one dialog and
//! transaction mechanism.
//!
//! Rules kept here:
//! - a NOTIFY with full state at once on every new subscription and
//!   refresh, and after every change of the watched resource;
//! - **full state every time**, never partial: many phones (and every
//!   phone after a lost NOTIFY) only handle full state, a full document is
//!   small (at most [`NotifierSettings::max_dialogs_shown`] dialogs), and it
//!   makes a lost or reordered NOTIFY harmless since the next one replaces
//!   everything;
//! - one NOTIFY in flight per subscription: changes while one is in flight
//!   are folded into one more NOTIFY with the state current when it
//!   completes (so CSeqs never cross on UDP);
//! - `version` 0, 1, 2... per subscription;
//! - expiry (`terminated;reason=timeout`), unsubscribe and fetch (Expires 0),
//!   the subscriber's registration gone (`deactivated`), the resource gone
//!   (`noresource`), its connection closed or a NOTIFY failed (ended
//!   without a NOTIFY: nothing reaches it); no NOTIFY after the one that
//!   says `terminated`;
//! - bounds: per subscriber AOR, per watched resource, in all.

use crate::dialog_info::{DialogEntry, DialogInfo, DocumentState};
use crate::subscribe::{
    Refusal, SubscribeAnswer, SubscribeRequest, SubscriptionKey, SubscriptionState,
    TerminationReason, EVENT_PACKAGE,
};
use crate::watched::{Watched, WatchedDialogs};
use sip_message::{ConnId, Peer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};
use timer_queue::TimerQueue;

/// Names one subscription; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// The notifier's settings (the `[blf]` section, when the switch has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifierSettings {
    /// Shortest expiry taken (423 below), seconds. Default 60.
    pub min_expires: u32,
    /// Longest expiry granted (longer asks get this), seconds. Default 3600.
    pub max_expires: u32,
    /// Expiry of a SUBSCRIBE without Expires: RFC 4235's 3600.
    pub default_expires: u32,
    /// Subscriptions one AOR may hold (403 beyond). Default 200: a phone
    /// with three 60-key expansion modules fits.
    pub max_per_subscriber: usize,
    /// Subscriptions of one resource (480 beyond). Default 200.
    pub max_per_watched: usize,
    /// Subscriptions in all (503 beyond). Default 50,000.
    pub max_total: usize,
    /// Dialogs a document lists for one resource. Default 4: a NOTIFY
    /// stays near 2 kB, under a UDP datagram's usual size.
    pub max_dialogs_shown: usize,
    /// How long a NOTIFY may stay unanswered before its subscription is
    /// dropped (a guard over the transaction layer's own 32 s). Default 40 s.
    pub notify_give_up: Duration,
    /// `Retry-After` of 480 and 503 refusals, seconds. Default 60.
    pub retry_after: u32,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        NotifierSettings {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_per_subscriber: 200,
            max_per_watched: 200,
            max_total: 50_000,
            max_dialogs_shown: 4,
            notify_give_up: Duration::from_secs(40),
            retry_after: 60,
        }
    }
}

/// A setting that does not hold: its key and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The key, as in the config file.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

impl NotifierSettings {
    /// Checks the settings: expiries ordered and non-zero, caps non-zero.
    pub fn check(&self) -> Result<(), SettingsError> {
        let refuse = |key, reason: &str| Err(SettingsError { key, reason: reason.to_owned() });
        if self.min_expires == 0 {
            return refuse("min_expires", "must be at least 1");
        }
        if self.max_expires < self.min_expires {
            return refuse("max_expires", "must not be below min_expires");
        }
        if !(self.min_expires..=self.max_expires).contains(&self.default_expires) {
            return refuse("default_expires", "must be within min_expires..=max_expires");
        }
        let caps = [
            ("max_per_subscriber", self.max_per_subscriber),
            ("max_per_watched", self.max_per_watched),
            ("max_total", self.max_total),
            ("max_dialogs_shown", self.max_dialogs_shown),
        ];
        for (key, v) in caps {
            if v == 0 {
                return refuse(key, "must be at least 1");
            }
        }
        if self.notify_give_up.is_zero() {
            return refuse("notify_give_up", "must be more than 0");
        }
        Ok(())
    }
}

/// Who subscribed: the authenticated AOR and where its SUBSCRIBE came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The AOR it authenticated as (`test11@test`).
    pub aor: String,
    /// Where the SUBSCRIBE came from (its connection, for stream transports).
    pub peer: Peer,
}

/// A new subscription, once the switch has authenticated the SUBSCRIBE and
/// resolved its Request-URI to a resource of the subscriber's customer.
#[derive(Debug)]
pub struct NewSubscription<D> {
    /// Who.
    pub subscriber: Subscriber,
    /// What it watches.
    pub watched: Watched,
    /// The `entity` of its documents: the URI subscribed to
    /// (`sip:test12@test`).
    pub entity: String,
    /// Our tag for the subscription's dialog (the To tag of the 200),
    /// from the switch's seeded generator.
    pub local_tag: String,
    /// The subscription's dialog, as the switch keeps dialogs.
    pub dialog: D,
}

/// How a NOTIFY's client transaction ended, as the switch saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// A final response with this status.
    Response(u16),
    /// No final response in time (Timer F).
    Timeout,
    /// The transport could not send it.
    TransportError,
}

/// A subscriber that is gone, so its subscriptions end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriberGone<'a> {
    /// A stream connection closed: its subscriptions end without a NOTIFY
    /// (nothing can reach the phone any more).
    Connection(ConnId),
    /// A binding of `aor` registered from `source` expired or was removed:
    /// the subscriptions that came from there end (`deactivated`).
    Binding {
        /// The AOR.
        aor: &'a str,
        /// Where its REGISTER came from.
        source: SocketAddr,
    },
    /// Every binding of `aor` is gone, or the extension was deleted.
    Aor(&'a str),
}

/// The dialog a NOTIFY is sent in: still the subscription's, or handed
/// back with the last NOTIFY (send it, then drop it).
#[derive(Debug)]
pub enum NotifyDialog<'a, D> {
    /// The subscription goes on.
    Live(&'a mut D),
    /// The subscription is over: this is its last NOTIFY.
    Last(D),
}

impl<D> Deref for NotifyDialog<'_, D> {
    type Target = D;
    fn deref(&self) -> &D {
        match self {
            NotifyDialog::Live(d) => d,
            NotifyDialog::Last(d) => d,
        }
    }
}

impl<D> DerefMut for NotifyDialog<'_, D> {
    fn deref_mut(&mut self) -> &mut D {
        match self {
            NotifyDialog::Live(d) => d,
            NotifyDialog::Last(d) => d,
        }
    }
}

/// A NOTIFY to send in a subscription's dialog.
#[derive(Debug)]
pub struct Notify<'a, D> {
    /// The subscription (report its outcome with
    /// [`Notifier::handle_notify_outcome`]).
    pub id: SubscriptionId,
    /// The Event header value (`dialog`, or `dialog;id=...`).
    pub event: String,
    /// The Subscription-State header value.
    pub state: SubscriptionState,
    /// The body, of type [`crate::dialog_info::CONTENT_TYPE`].
    pub body: String,
    /// The dialog to send it in.
    pub dialog: NotifyDialog<'a, D>,
}

/// What the notifier counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifierCounters {
    /// Subscriptions accepted (fetches included).
    pub accepted: u64,
    /// SUBSCRIBEs refused by the notifier (limits, expiry, unknown).
    pub refused: u64,
    /// NOTIFYs handed out.
    pub notifies: u64,
    /// Subscriptions ended with a last NOTIFY.
    pub ended: u64,
    /// Subscriptions dropped without one (connection closed, NOTIFY failed).
    pub dropped: u64,
}

/// Whether a NOTIFY is out, and what comes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flight {
    /// No NOTIFY out.
    Idle,
    /// One NOTIFY handed out and not yet answered.
    Sent {
        /// When the subscription is dropped if it stays unanswered.
        give_up_at: Instant,
        /// What follows its answer.
        then: AfterFlight,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterFlight {
    /// Nothing changed meanwhile.
    Nothing,
    /// The state changed: one more NOTIFY with the state then.
    Notify,
    /// The subscription ends: its last NOTIFY.
    End(TerminationReason),
}

#[derive(Debug)]
struct Subscription<D> {
    key: SubscriptionKey,
    subscriber: Subscriber,
    watched: Watched,
    entity: String,
    expires_at: Instant,
    /// The `version` of the next document.
    version: u32,
    flight: Flight,
    dialog: D,
}

impl<D> Subscription<D> {
    /// The timer deadline: expiry, or the give-up of the NOTIFY out
    /// (only the give-up once the end is already decided).
    fn deadline(&self) -> Instant {
        match self.flight {
            Flight::Idle => self.expires_at,
            Flight::Sent { give_up_at, then: AfterFlight::End(_) } => give_up_at,
            Flight::Sent { give_up_at, .. } => give_up_at.min(self.expires_at),
        }
    }

    fn event(&self) -> String {
        match &self.key.event_id {
            Some(id) => format!("{EVENT_PACKAGE};id={id}"),
            None => EVENT_PACKAGE.to_owned(),
        }
    }
}

/// A NOTIFY decided on, waiting for [`Notifier::poll_notify`].
#[derive(Debug)]
struct Prepared {
    id: SubscriptionId,
    event: String,
    state: SubscriptionState,
    body: String,
}

#[derive(Debug)]
enum Queued<D> {
    /// In a subscription that goes on (skipped if it was dropped since).
    Live(Prepared),
    /// The last one, with the dialog handed back.
    Last(Prepared, D),
}

/// Every dialog-package subscription, and the dialogs of every resource:
/// see the module documentation and the crate's contract.
#[derive(Debug)]
pub struct Notifier<D> {
    cfg: NotifierSettings,
    next_id: u64,
    subs: BTreeMap<SubscriptionId, Subscription<D>>,
    by_key: BTreeMap<SubscriptionKey, SubscriptionId>,
    by_aor: BTreeMap<String, BTreeSet<SubscriptionId>>,
    by_conn: BTreeMap<ConnId, BTreeSet<SubscriptionId>>,
    by_watched: BTreeMap<Watched, BTreeSet<SubscriptionId>>,
    resources: BTreeMap<Watched, WatchedDialogs>,
    timers: TimerQueue<Instant, SubscriptionId>,
    queue: VecDeque<Queued<D>>,
    counters: NotifierCounters,
}

impl<D> Notifier<D> {
    /// An empty notifier.
    pub fn new(cfg: NotifierSettings) -> Notifier<D> {
        Notifier {
            cfg,
            next_id: 1,
            subs: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_aor: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            by_watched: BTreeMap::new(),
            resources: BTreeMap::new(),
            timers: TimerQueue::new(),
            queue: VecDeque::new(),
            counters: NotifierCounters::default(),
        }
    }

    // ----- inputs -----------------------------------------------------------

    /// A SUBSCRIBE without a To tag: a new subscription (or a fetch, with
    /// Expires 0: one NOTIFY, then over). Answer it as told; on acceptance
    /// the first NOTIFY is ready in [`Notifier::poll_notify`].
    pub fn handle_new(
        &mut self,
        now: Instant,
        req: &SubscribeRequest,
        new: NewSubscription<D>,
    ) -> SubscribeAnswer {
        if req.is_refresh() {
            return self.handle_refresh(now, req);
        }
        let answer = self.admit(req, &new);
        let expires = match answer {
            Ok(expires) => expires,
            Err(r) => return self.refuse(r),
        };
        let id = SubscriptionId(self.next_id);
        self.next_id += 1;
        let key = req.key(&new.local_tag);
        self.by_key.insert(key.clone(), id);
        self.by_aor.entry(new.subscriber.aor.clone()).or_default().insert(id);
        if let Some(conn) = new.subscriber.peer.conn {
            self.by_conn.entry(conn).or_default().insert(id);
        }
        self.by_watched.entry(new.watched.clone()).or_default().insert(id);
        let sub = Subscription {
            key,
            subscriber: new.subscriber,
            watched: new.watched,
            entity: new.entity,
            expires_at: now + Duration::from_secs(expires.into()),
            version: 0,
            flight: Flight::Idle,
            dialog: new.dialog,
        };
        self.subs.insert(id, sub);
        self.counters.accepted += 1;
        if expires == 0 {
            self.end(id, TerminationReason::Timeout);
        } else {
            self.notify(now, id);
        }
        SubscribeAnswer::Accepted { id, expires }
    }

    /// A SUBSCRIBE with a To tag: a refresh (a NOTIFY with full state
    /// follows) or, with Expires 0, an unsubscribe (the last NOTIFY
    /// follows). 481 when it names no subscription.
    pub fn handle_refresh(&mut self, now: Instant, req: &SubscribeRequest) -> SubscribeAnswer {
        let Some(to_tag) = &req.to_tag else {
            return self.refuse(Refusal::BadRequest("refresh without a To tag"));
        };
        let Some(&id) = self.by_key.get(&req.key(to_tag)) else {
            return self.refuse(Refusal::NoSuchSubscription);
        };
        let expires = match self.grant(req.expires) {
            Ok(e) => e,
            Err(r) => return self.refuse(r),
        };
        if expires == 0 {
            self.end(id, TerminationReason::Timeout);
        } else if let Some(sub) = self.subs.get_mut(&id) {
            sub.expires_at = now + Duration::from_secs(expires.into());
            self.notify(now, id);
            self.schedule(id);
        }
        SubscribeAnswer::Accepted { id, expires }
    }

    /// A dialog of `watched` changed (or began): its watchers are notified
    /// when what they see changes. Feed every change of every extension and
    /// ring group, watched or not.
    pub fn handle_dialog(&mut self, now: Instant, watched: &Watched, update: DialogEntry) {
        let cap = self.cfg.max_dialogs_shown;
        let watchers: Vec<SubscriptionId> =
            self.by_watched.get(watched).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let changed = match self.resources.get_mut(watched) {
            Some(r) => r.apply(update, cap),
            None => {
                let mut r = WatchedDialogs::default();
                let changed = r.apply(update, cap);
                self.resources.insert(watched.clone(), r);
                changed
            }
        };
        if watchers.is_empty() {
            self.forget_unwatched(watched);
            return;
        }
        if changed {
            for id in watchers {
                self.notify(now, id);
            }
        }
    }

    /// How a NOTIFY handed out by [`Notifier::poll_notify`] ended. A 2xx
    /// lets the next NOTIFY go; anything else (error response, timeout,
    /// transport error) drops the subscription without another NOTIFY
    /// (RFC 6665 section 4.2.2). Provisional responses and outcomes of a
    /// last NOTIFY are ignored.
    pub fn handle_notify_outcome(&mut self, now: Instant, id: SubscriptionId, out: NotifyOutcome) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        let Flight::Sent { then, .. } = sub.flight else { return };
        match out {
            NotifyOutcome::Response(code) if code < 200 => {}
            NotifyOutcome::Response(code) if code < 300 => {
                sub.flight = Flight::Idle;
                match then {
                    AfterFlight::Nothing => self.schedule(id),
                    AfterFlight::Notify => self.notify(now, id),
                    AfterFlight::End(reason) => self.end(id, reason),
                }
            }
            _ => self.drop_silently(id),
        }
    }

    /// A subscriber is gone: its subscriptions end (see [`SubscriberGone`]).
    pub fn handle_subscriber_gone(&mut self, gone: SubscriberGone<'_>) {
        match gone {
            SubscriberGone::Connection(conn) => {
                for id in self.by_conn.get(&conn).cloned().unwrap_or_default() {
                    self.drop_silently(id);
                }
            }
            SubscriberGone::Binding { aor, source } => {
                let ids = self.by_aor.get(aor).cloned().unwrap_or_default();
                for id in ids {
                    if self.subs.get(&id).is_some_and(|s| s.subscriber.peer.remote == source) {
                        self.end(id, TerminationReason::Deactivated);
                    }
                }
            }
            SubscriberGone::Aor(aor) => {
                for id in self.by_aor.get(aor).cloned().unwrap_or_default() {
                    self.end(id, TerminationReason::Deactivated);
                }
            }
        }
    }

    /// A resource no longer exists (extension or group deleted): its
    /// subscriptions end (`noresource`) and its dialogs are forgotten.
    pub fn handle_resource_gone(&mut self, watched: &Watched) {
        for id in self.by_watched.get(watched).cloned().unwrap_or_default() {
            self.end(id, TerminationReason::Noresource);
        }
        self.resources.remove(watched);
    }

    /// Expiries and NOTIFY give-ups due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(sub) = self.subs.get_mut(&id) else { continue };
            if sub.deadline() != at {
                continue;
            }
            match sub.flight {
                Flight::Sent { give_up_at, .. } if give_up_at <= now => self.drop_silently(id),
                _ => self.end(id, TerminationReason::Timeout),
            }
        }
    }

    // ----- outputs ----------------------------------------------------------

    /// The next NOTIFY to send, in order. Report how it went with
    /// [`Notifier::handle_notify_outcome`] (the last one's outcome may be
    /// reported too; it is ignored).
    pub fn poll_notify(&mut self) -> Option<Notify<'_, D>> {
        loop {
            match self.queue.pop_front()? {
                Queued::Last(p, dialog) => {
                    self.counters.notifies += 1;
                    return Some(prepared_notify(p, NotifyDialog::Last(dialog)));
                }
                Queued::Live(p) => {
                    if !self.subs.contains_key(&p.id) {
                        continue; // dropped since
                    }
                    self.counters.notifies += 1;
                    let sub = self.subs.get_mut(&p.id)?;
                    return Some(prepared_notify(p, NotifyDialog::Live(&mut sub.dialog)));
                }
            }
        }
    }

    /// When [`Notifier::handle_timeout`] is due next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let subs = &self.subs;
        self.timers.prune(|at, id| subs.get(&id).is_some_and(|s| s.deadline() == at));
        self.timers.peek().map(|(at, _)| at)
    }

    // ----- getters ----------------------------------------------------------

    /// A live subscription's dialog (to take a refresh's new Contact).
    pub fn dialog_mut(&mut self, id: SubscriptionId) -> Option<&mut D> {
        self.subs.get_mut(&id).map(|s| &mut s.dialog)
    }

    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// `true` when none is held.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Subscriptions of `watched`.
    pub fn watchers(&self, watched: &Watched) -> usize {
        self.by_watched.get(watched).map_or(0, BTreeSet::len)
    }

    /// Resources with dialogs listed (watched or ringing now).
    pub fn resources(&self) -> usize {
        self.resources.len()
    }

    /// Counters.
    pub fn counters(&self) -> NotifierCounters {
        self.counters
    }

    // ----- steps ------------------------------------------------------------

    /// The expiry to grant, or the refusal for the Expires asked.
    fn grant(&self, asked: Option<u32>) -> Result<u32, Refusal> {
        match asked.unwrap_or(self.cfg.default_expires) {
            0 => Ok(0),
            e if e < self.cfg.min_expires => {
                Err(Refusal::IntervalTooBrief { min: self.cfg.min_expires })
            }
            e => Ok(e.min(self.cfg.max_expires)),
        }
    }

    /// The expiry of a new subscription, or why it is refused.
    fn admit(&self, req: &SubscribeRequest, new: &NewSubscription<D>) -> Result<u32, Refusal> {
        let expires = self.grant(req.expires)?;
        let retry_after = self.cfg.retry_after;
        if self.subs.len() >= self.cfg.max_total {
            return Err(Refusal::Overloaded { retry_after });
        }
        let held = self.by_aor.get(&new.subscriber.aor).map_or(0, BTreeSet::len);
        if held >= self.cfg.max_per_subscriber {
            return Err(Refusal::TooManyForSubscriber);
        }
        if self.watchers(&new.watched) >= self.cfg.max_per_watched {
            return Err(Refusal::TooManyWatchers { retry_after });
        }
        if self.by_key.contains_key(&req.key(&new.local_tag)) {
            return Err(Refusal::BadRequest("subscription exists"));
        }
        Ok(expires)
    }

    fn refuse(&mut self, r: Refusal) -> SubscribeAnswer {
        self.counters.refused += 1;
        SubscribeAnswer::Refused(r)
    }

    /// A NOTIFY with the current state: now if none is out, else after it.
    fn notify(&mut self, now: Instant, id: SubscriptionId) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        match &mut sub.flight {
            Flight::Idle => {
                let left = sub.expires_at.saturating_duration_since(now);
                let state = SubscriptionState::Active { expires: whole_seconds(left) };
                let p = prepare(id, sub, &self.resources, state);
                let give_up_at = now + self.cfg.notify_give_up;
                sub.flight = Flight::Sent { give_up_at, then: AfterFlight::Nothing };
                self.queue.push_back(Queued::Live(p));
                self.schedule(id);
            }
            Flight::Sent { then: then @ AfterFlight::Nothing, .. } => *then = AfterFlight::Notify,
            Flight::Sent { .. } => {}
        }
    }

    /// Ends a subscription: its last NOTIFY now, or after the one out.
    fn end(&mut self, id: SubscriptionId, reason: TerminationReason) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        match &mut sub.flight {
            Flight::Idle => {
                let p = prepare(id, sub, &self.resources, SubscriptionState::Terminated(reason));
                if let Some(sub) = self.remove(id) {
                    self.counters.ended += 1;
                    self.queue.push_back(Queued::Last(p, sub.dialog));
                }
            }
            Flight::Sent { then, .. } => {
                *then = AfterFlight::End(reason);
                self.schedule(id);
            }
        }
    }

    /// Drops a subscription without a NOTIFY (nothing can reach it).
    fn drop_silently(&mut self, id: SubscriptionId) {
        if self.remove(id).is_some() {
            self.counters.dropped += 1;
        }
    }

    /// Files the subscription's current deadline.
    fn schedule(&mut self, id: SubscriptionId) {
        if let Some(sub) = self.subs.get(&id) {
            self.timers.push(sub.deadline(), id);
        }
        let subs = &self.subs;
        self.timers.purge_if_bloated(subs.len(), |at, id| {
            subs.get(&id).is_some_and(|s| s.deadline() == at)
        });
    }

    /// Takes a subscription out of every index.
    fn remove(&mut self, id: SubscriptionId) -> Option<Subscription<D>> {
        let sub = self.subs.remove(&id)?;
        self.by_key.remove(&sub.key);
        remove_from(&mut self.by_aor, &sub.subscriber.aor, id);
        if let Some(conn) = sub.subscriber.peer.conn {
            remove_from(&mut self.by_conn, &conn, id);
        }
        remove_from(&mut self.by_watched, &sub.watched, id);
        if !self.by_watched.contains_key(&sub.watched) {
            self.forget_unwatched(&sub.watched);
        }
        Some(sub)
    }

    /// Nobody watches `watched`: terminated dialogs go, and the resource
    /// with them when it has none left.
    fn forget_unwatched(&mut self, watched: &Watched) {
        if let Some(r) = self.resources.get_mut(watched) {
            r.drop_terminated();
            if r.is_empty() {
                self.resources.remove(watched);
            }
        }
    }
}

/// Removes `id` from the set under `key`, and the set when it empties.
fn remove_from<K, Q>(index: &mut BTreeMap<Q, BTreeSet<SubscriptionId>>, key: &K, id: SubscriptionId)
where
    K: Ord + ?Sized,
    Q: Ord + std::borrow::Borrow<K>,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The next document of `sub` with `state`: full state, next version.
fn prepare<D>(
    id: SubscriptionId,
    sub: &mut Subscription<D>,
    resources: &BTreeMap<Watched, WatchedDialogs>,
    state: SubscriptionState,
) -> Prepared {
    let dialogs = resources.get(&sub.watched).map_or(&[][..], |r| &r.dialogs[..]);
    let body = DialogInfo {
        version: sub.version,
        state: DocumentState::Full,
        entity: &sub.entity,
        dialogs,
    }
    .to_xml();
    sub.version = sub.version.wrapping_add(1);
    Prepared { id, event: sub.event(), state, body }
}

fn prepared_notify<D>(p: Prepared, dialog: NotifyDialog<'_, D>) -> Notify<'_, D> {
    Notify { id: p.id, event: p.event, state: p.state, body: p.body, dialog }
}

/// Seconds, rounded up (a subscription with 0.2 s left is still active).
fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_by_key() {
        assert_eq!(NotifierSettings::default().check(), Ok(()));
        let bad = |s: NotifierSettings| s.check().unwrap_err().key;
        let d = NotifierSettings::default;
        assert_eq!(bad(NotifierSettings { min_expires: 0, ..d() }), "min_expires");
        assert_eq!(bad(NotifierSettings { max_expires: 30, ..d() }), "max_expires");
        assert_eq!(bad(NotifierSettings { default_expires: 7200, ..d() }), "default_expires");
        assert_eq!(bad(NotifierSettings { max_per_watched: 0, ..d() }), "max_per_watched");
        assert_eq!(bad(NotifierSettings { max_dialogs_shown: 0, ..d() }), "max_dialogs_shown");
        assert_eq!(
            bad(NotifierSettings { notify_give_up: Duration::ZERO, ..d() }),
            "notify_give_up"
        );
    }

    #[test]
    fn seconds_left_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
