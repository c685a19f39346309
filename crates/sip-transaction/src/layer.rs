//! [`TransactionLayer`]: every transaction of one process or shard, their
//! matching indexes, and their timers: in a [`TimerQueue`] of the layer's
//! own when it runs alone, or in its owner's (the switch core's one timer
//! queue) when it is embedded.

use crate::key::{self, Matching};
use crate::tx::{dur_ns, Kind, Out, Step, Timers, Tx, NEVER};
use crate::types::{Config, Error, Event, Transmit, TxKey, TxState};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sip_message::{Message, Method, Peer, MAGIC_COOKIE};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer_queue::TimerQueue;

/// A slab slot; the generation makes stale keys and timer entries miss.
#[derive(Debug)]
struct Slot {
    gen: u32,
    tx: Option<Tx>,
}

/// Where the layer's timers live.
#[derive(Debug)]
enum Schedule {
    /// In a queue of its own (nanoseconds since the epoch): the layer runs
    /// alone and is driven by `handle_timeout` at `poll_timeout`.
    Own(TimerQueue<u64, TxKey>),
    /// In the owner's queue: new deadlines are handed out by `poll_timer`
    /// and fired one transaction at a time by `handle_timer`.
    Owner(VecDeque<(Instant, TxKey)>),
}

/// Every transaction of one server process (or shard), as one sans-IO state
/// machine: feed it messages, TU calls and the time; poll it for messages
/// to send, events for the TU and the next deadline.
///
/// Timers run in one of two ways, chosen at construction:
/// - [`TransactionLayer::new`]: the layer keeps its own timer queue; call
///   [`TransactionLayer::handle_timeout`] at [`TransactionLayer::poll_timeout`];
/// - [`TransactionLayer::with_owner_timers`]: an owner with a timer queue of
///   its own (the switch core) takes every new deadline from
///   [`TransactionLayer::poll_timer`] and calls
///   [`TransactionLayer::handle_timer`] for it when it is due.
///
/// ```
/// use sip_transaction::{Config, TransactionLayer};
/// let mut layer = TransactionLayer::new(Config::default(), 7);
/// assert!(layer.new_branch().starts_with("z9hG4bK"));
/// assert!(layer.is_empty() && layer.poll_timeout().is_none());
/// ```
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    /// Instants are kept as nanoseconds since this one.
    epoch: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    server_index: HashMap<Arc<[u8]>, TxKey>,
    client_index: HashMap<Arc<[u8]>, TxKey>,
    schedule: Schedule,
    out: Out,
    scratch: Vec<u8>,
    rng: StdRng,
}

const BRANCH_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BRANCH_RANDOM_CHARS: usize = 22;

impl TransactionLayer {
    /// A layer with no transactions and a timer queue of its own. Branches
    /// come from a generator seeded with `seed`: give every process a
    /// different one (from the OS) so that branches stay unique across
    /// restarts; a test gives a fixed one and replays exactly.
    pub fn new(config: Config, seed: u64) -> Self {
        Self::with_schedule(config, seed, Schedule::Own(TimerQueue::new()))
    }

    /// Like [`TransactionLayer::new`], but the timers go to the owner's
    /// queue: see [`TransactionLayer::poll_timer`].
    pub fn with_owner_timers(config: Config, seed: u64) -> Self {
        Self::with_schedule(config, seed, Schedule::Owner(VecDeque::new()))
    }

    fn with_schedule(config: Config, seed: u64, schedule: Schedule) -> Self {
        TransactionLayer {
            timers: Timers::new(&config),
            epoch: None,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            schedule,
            out: Out::default(),
            scratch: Vec::with_capacity(128),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A new RFC 3261 branch: `z9hG4bK` and 22 random URL-safe characters
    /// (132 bits), unique across restarts.
    pub fn new_branch(&mut self) -> String {
        let mut s = String::with_capacity(MAGIC_COOKIE.len() + BRANCH_RANDOM_CHARS);
        s.push_str(MAGIC_COOKIE);
        let (mut bits, mut left) = (0u64, 0u32);
        for _ in 0..BRANCH_RANDOM_CHARS {
            if left < 6 {
                bits = self.rng.next_u64();
                left = 64;
            }
            s.push(char::from(BRANCH_ALPHABET[(bits & 63) as usize]));
            bits >>= 6;
            left -= 6;
        }
        s
    }

    /// `true` when `request` belongs to a live server transaction (a
    /// retransmission, or the ACK or CANCEL of one): what admission control
    /// must never shed.
    pub fn matches_server(&mut self, request: &Message) -> bool {
        key::request_key(request, false, &mut self.scratch).is_some()
            && self.server_index.contains_key(&self.scratch[..])
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Messages sent again since the layer was made: requests on timers A
    /// and E, responses on timer G or for a retransmitted request.
    pub fn retransmissions(&self) -> u64 {
        self.out.retransmissions
    }

    /// `true` when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// `true` when some live transaction still has work to do: a request
    /// waiting for its final response, or a server transaction not yet
    /// answered. Those in Completed, Confirmed or Accepted only absorb
    /// retransmissions until their timers end them. (Walks every slot:
    /// for a shutdown, not for a hot path.)
    pub fn has_work(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|s| s.tx.as_ref())
            .any(|tx| matches!(tx.state, TxState::Calling | TxState::Trying | TxState::Proceeding))
    }

    /// The state of a live transaction; `None` once it terminated.
    pub fn state(&self, key: TxKey) -> Option<TxState> {
        self.tx(key).map(|tx| tx.state)
    }

    /// An estimate of the bytes of state one live transaction costs beside
    /// its message buffers: its slab slot (the inline parts of the stored
    /// request and last response included), its index entry with the key
    /// allocation (for a typical 64-byte key), and its timer heap entries
    /// (one live, up to two stale before a purge).
    pub fn state_bytes_per_transaction() -> usize {
        use std::mem::size_of;
        let slot = size_of::<Slot>();
        // hashbrown: one control byte per bucket, load factor 7/8.
        let index = (size_of::<(Arc<[u8]>, TxKey)>() + 1) * 8 / 7;
        let key_alloc = 2 * size_of::<usize>() + 64;
        let timers = 3 * TimerQueue::<u64, TxKey>::entry_size();
        slot + index + key_alloc + timers
    }

    // ----- inputs -----------------------------------------------------------

    /// A message from the transport (already framed and validated): matched
    /// to a transaction, or a new server transaction, or [`Event::Stray`].
    pub fn handle_incoming(&mut self, now: Instant, message: Message, peer: Peer) {
        let now = self.ns(now);
        if message.is_request() {
            self.incoming_request(now, message, peer);
        } else {
            self.incoming_response(now, message, peer);
        }
        self.prune();
    }

    /// Starts a client transaction and sends `request`. The TU built it with
    /// a top Via whose branch came from [`TransactionLayer::new_branch`]. A
    /// CANCEL ([`crate::cancel_for`]) shares its INVITE's branch: it is a
    /// transaction of its own because the method differs.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        peer: Peer,
    ) -> Result<TxKey, Error> {
        let method = request.method().ok_or(Error::NotARequest)?;
        if *method == Method::Ack {
            return Err(Error::AckIsNotATransaction);
        }
        let via = request.top_via().map_err(|_| Error::NoBranch)?;
        let branch = via.branch().filter(|b| key::is_rfc3261(b)).ok_or(Error::NoBranch)?;
        key::branch_key(&mut self.scratch, method.as_bytes(), &via, branch);
        if self.client_index.contains_key(&self.scratch[..]) {
            return Err(Error::DuplicateTransaction);
        }
        let index: Arc<[u8]> = Arc::from(&self.scratch[..]);
        let now = self.ns(now);
        let mut tx = Tx::client(request, peer, now, &self.timers);
        tx.index = Some(index.clone());
        let key = self.insert(tx);
        self.out.key = key;
        if let Some(tx) = Self::live_mut(&mut self.slots, key) {
            tx.send_request(&mut self.out);
        }
        self.client_index.insert(index, key);
        self.reschedule(key);
        self.prune();
        Ok(key)
    }

    /// Sends a response on a server transaction, to the peer its request
    /// came from. In Accepted (after a 2xx) only further 2xx are taken: the
    /// TU's own 2xx retransmissions (RFC 3261 13.3.1.4). To a non-INVITE
    /// request (RFC 4320) a 408 or a provisional other than 100 is refused,
    /// and a 100 over UDP before the layer's own 100 is due is dropped
    /// (`Ok`, nothing sent).
    ///
    /// The TU must end every server transaction it is given: a request left
    /// unanswered keeps its transaction until [`TransactionLayer::terminate`].
    pub fn send_response(
        &mut self,
        now: Instant,
        key: TxKey,
        response: Message,
    ) -> Result<(), Error> {
        if response.is_request() {
            return Err(Error::NotAResponse);
        }
        let now = self.ns(now);
        let Some(tx) = Self::live_mut(&mut self.slots, key) else {
            return Err(Error::UnknownTransaction);
        };
        self.out.key = key;
        let step = tx.send_response(response, now, &self.timers, &mut self.out)?;
        self.apply(key, step);
        self.prune();
        Ok(())
    }

    /// The transport could not send a message of this transaction.
    pub fn transport_error(&mut self, _now: Instant, key: TxKey) {
        if let Some(tx) = Self::live_mut(&mut self.slots, key) {
            self.out.key = key;
            let step = tx.on_transport_error(key, &mut self.out);
            self.apply(key, step);
            self.prune();
        }
    }

    /// Stream connection `conn` closed: every client transaction still
    /// waiting for a final response over it fails as with a transport error
    /// (RFC 3261 17.1.4), so that the TU can fail over at once instead of
    /// waiting for Timer B or F. Server transactions keep going: their
    /// responses can be sent over a new connection (18.2.2).
    pub fn connection_closed(&mut self, now: Instant, conn: sip_message::ConnId) {
        self.fail_waiting(now, |peer| peer.conn == Some(conn));
    }

    /// The peer at `remote` is gone (a cluster node whose lease ran out):
    /// every client transaction still waiting for a final response from it
    /// fails at once, as when a connection closes.
    pub fn peer_lost(&mut self, now: Instant, remote: std::net::SocketAddr) {
        self.fail_waiting(now, |peer| peer.remote == remote);
    }

    /// Fails the client transactions waiting for a final response from a
    /// peer that `gone` picks.
    fn fail_waiting(&mut self, now: Instant, gone: impl Fn(&sip_message::Peer) -> bool) {
        let waiting: Vec<TxKey> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let tx = s.tx.as_ref()?;
                let pending = tx.kind.is_client()
                    && matches!(tx.state, TxState::Calling | TxState::Trying | TxState::Proceeding);
                (pending && gone(&tx.peer)).then(|| TxKey::new(i as u32, s.gen))
            })
            .collect();
        for key in waiting {
            self.transport_error(now, key);
        }
    }

    /// The TU gives up on a transaction: it is removed at once, with
    /// [`Event::Terminated`] and nothing sent. For an INVITE client
    /// transaction that got no final response 64*T1 after its CANCEL
    /// (RFC 3261 9.1), or at shutdown. Unknown keys are ignored.
    pub fn terminate(&mut self, key: TxKey) {
        self.remove(key);
        self.prune();
    }

    /// Fires every timer due at or before `now`, oldest first (a layer made
    /// with [`TransactionLayer::new`]; with owner timers it does nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.epoch.is_none() {
            return;
        }
        let now = self.ns(now);
        loop {
            let Schedule::Own(q) = &mut self.schedule else { return };
            let Some((due, key)) = q.pop_due(now) else { break };
            self.fire(key, due);
        }
        self.prune();
    }

    /// Fires the timers of transaction `key` that are due at `now` (a layer
    /// made with [`TransactionLayer::with_owner_timers`], when the owner's
    /// queue reaches a deadline [`TransactionLayer::poll_timer`] gave).
    /// Stale deadlines (the transaction rescheduled or ended) do nothing.
    pub fn handle_timer(&mut self, now: Instant, key: TxKey) {
        let now = self.ns(now);
        let due = match self.tx(key) {
            Some(tx) if tx.sched <= now => tx.sched,
            _ => return,
        };
        self.fire(key, due);
    }

    // ----- outputs ----------------------------------------------------------

    /// The earliest deadline: call [`TransactionLayer::handle_timeout`] then.
    /// Always `None` with owner timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Schedule::Own(q) = &self.schedule else { return None };
        let (due, _) = q.peek()?;
        self.epoch?.checked_add(Duration::from_nanos(due))
    }

    /// With owner timers: the next new deadline of a transaction, to file in
    /// the owner's queue. An earlier deadline of the same key becomes stale
    /// ([`TransactionLayer::timer_is_current`] says so).
    pub fn poll_timer(&mut self) -> Option<(Instant, TxKey)> {
        match &mut self.schedule {
            Schedule::Owner(q) => q.pop_front(),
            Schedule::Own(_) => None,
        }
    }

    /// `true` when `at` is transaction `key`'s current deadline (for the
    /// owner's queue to drop stale entries).
    pub fn timer_is_current(&self, at: Instant, key: TxKey) -> bool {
        let (Some(epoch), Some(tx)) = (self.epoch, self.tx(key)) else { return false };
        tx.sched != NEVER && dur_ns(at.saturating_duration_since(epoch)) == tx.sched
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    // ----- internals --------------------------------------------------------

    fn ns(&mut self, now: Instant) -> u64 {
        // An hour of slack below the first instant seen, so that an earlier
        // instant passed later still orders correctly.
        let epoch = *self
            .epoch
            .get_or_insert_with(|| now.checked_sub(Duration::from_secs(3600)).unwrap_or(now));
        dur_ns(now.saturating_duration_since(epoch))
    }

    fn tx(&self, key: TxKey) -> Option<&Tx> {
        self.slots.get(key.idx()).filter(|s| s.gen == key.gen())?.tx.as_ref()
    }

    fn live_mut(slots: &mut [Slot], key: TxKey) -> Option<&mut Tx> {
        slots.get_mut(key.idx()).filter(|s| s.gen == key.gen())?.tx.as_mut()
    }

    fn insert(&mut self, tx: Tx) -> TxKey {
        self.live += 1;
        if let Some(idx) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(idx as usize) {
                slot.tx = Some(tx);
                return TxKey::new(idx, slot.gen);
            }
        }
        let idx = self.slots.len() as u32;
        self.slots.push(Slot { gen: 0, tx: Some(tx) });
        TxKey::new(idx, 0)
    }

    fn apply(&mut self, key: TxKey, step: Step) {
        match step {
            Step::Keep => self.reschedule(key),
            Step::Terminate => self.remove(key),
        }
    }

    /// Runs the timers of `key` due at `due` (its current deadline).
    fn fire(&mut self, key: TxKey, due: u64) {
        let Some(tx) = Self::live_mut(&mut self.slots, key) else { return };
        if tx.sched != due {
            return;
        }
        tx.sched = NEVER;
        self.out.key = key;
        let step = tx.on_timer(key, due, &self.timers, &mut self.out);
        self.apply(key, step);
    }

    fn reschedule(&mut self, key: TxKey) {
        let Some(tx) = Self::live_mut(&mut self.slots, key) else { return };
        let next = tx.next_deadline();
        if next == tx.sched {
            return;
        }
        tx.sched = next;
        if next == NEVER {
            return;
        }
        match &mut self.schedule {
            Schedule::Own(q) => {
                q.push(next, key);
                let slots = &self.slots;
                q.purge_if_bloated(self.live, |due, k| Self::entry_live(slots, due, k));
            }
            Schedule::Owner(q) => {
                if let Some(at) = self.epoch.and_then(|e| e.checked_add(Duration::from_nanos(next)))
                {
                    q.push_back((at, key));
                }
            }
        }
    }

    fn entry_live(slots: &[Slot], due: u64, key: TxKey) -> bool {
        slots
            .get(key.idx())
            .filter(|s| s.gen == key.gen())
            .and_then(|s| s.tx.as_ref())
            .is_some_and(|tx| tx.sched == due)
    }

    /// Pops stale entries off the top of an own queue so that
    /// `poll_timeout` is exact.
    fn prune(&mut self) {
        if let Schedule::Own(q) = &mut self.schedule {
            let slots = &self.slots;
            q.prune(|due, k| Self::entry_live(slots, due, k));
        }
    }

    fn remove(&mut self, key: TxKey) {
        let Some(slot) = self.slots.get_mut(key.idx()).filter(|s| s.gen == key.gen()) else {
            return;
        };
        let Some(tx) = slot.tx.take() else { return };
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(key.idx() as u32);
        self.live -= 1;
        if let Some(index) = tx.index {
            let map =
                if tx.kind.is_client() { &mut self.client_index } else { &mut self.server_index };
            if map.get(&index) == Some(&key) {
                map.remove(&index);
            }
        }
        self.out.events.push_back(Event::Terminated { key });
    }

    fn incoming_response(&mut self, now: u64, response: Message, peer: Peer) {
        let found = key::response_key(&response, &mut self.scratch)
            .and_then(|()| self.client_index.get(&self.scratch[..]).copied());
        let Some(key) = found else {
            self.out.events.push_back(Event::Stray { message: response, peer });
            return;
        };
        if let Some(tx) = Self::live_mut(&mut self.slots, key) {
            self.out.key = key;
            let step = tx.on_response(key, response, peer, now, &self.timers, &mut self.out);
            self.apply(key, step);
        }
    }

    fn incoming_request(&mut self, now: u64, request: Message, peer: Peer) {
        let (ack, cancel) = match request.method() {
            Some(Method::Ack) => (true, false),
            Some(Method::Cancel) => (false, true),
            _ => (false, false),
        };
        let Some(matching) = key::request_key(&request, false, &mut self.scratch) else {
            self.out.events.push_back(Event::Stray { message: request, peer });
            return;
        };
        let mut indexed = true;
        if let Some(&key) = self.server_index.get(&self.scratch[..]) {
            if let Some(tx) = Self::live_mut(&mut self.slots, key) {
                if matching == Matching::Rfc2543 && tx.kind == Kind::InviteServer {
                    // 17.2.3: an RFC 2543 ACK matches only with the To tag
                    // of the response sent; an INVITE with its own To tag.
                    if ack {
                        let sent_tag = tx.last.as_ref().and_then(|r| r.to_tag());
                        if request.to_tag() != sent_tag {
                            self.out.events.push_back(Event::Stray { message: request, peer });
                            return;
                        }
                    } else if tx.request.as_ref().is_some_and(|r| r.to_tag() != request.to_tag()) {
                        indexed = false;
                    }
                }
                if indexed {
                    self.out.key = key;
                    let step = tx.on_request(request, peer, now, &self.timers, &mut self.out);
                    self.apply(key, step);
                    return;
                }
            }
        }
        if ack {
            self.out.events.push_back(Event::Stray { message: request, peer });
            return;
        }
        let index: Option<Arc<[u8]>> = indexed.then(|| Arc::from(&self.scratch[..]));
        let cancels = if cancel {
            key::request_key(&request, true, &mut self.scratch)
                .and_then(|_| self.server_index.get(&self.scratch[..]).copied())
                .filter(|k| self.tx(*k).is_some_and(|tx| tx.kind == Kind::InviteServer))
        } else {
            None
        };
        let mut tx = Tx::server(request.clone(), peer, now, &self.timers);
        tx.index = index.clone();
        let key = self.insert(tx);
        if let Some(index) = index {
            self.server_index.insert(index, key);
        }
        self.reschedule(key);
        self.out.events.push_back(if cancel {
            Event::Cancel { key, request, peer, cancels }
        } else {
            Event::NewRequest { key, request, peer }
        });
    }
}
