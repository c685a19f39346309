//! The simulated network and the virtual clock: one event queue ordered by
//! (virtual time, sequence number), and UDP links that lose, duplicate,
//! delay and so reorder datagrams. It exists so that a whole run is a pure
//! function of its seed: nothing here reads a clock or touches a socket.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;

/// Virtual time: nanoseconds since the start of the run.
pub type Nanos = u64;

/// Milliseconds as [`Nanos`].
pub const fn ms(n: u64) -> Nanos {
    n * 1_000_000
}

/// Seconds as [`Nanos`].
pub const fn secs(n: u64) -> Nanos {
    n * 1_000_000_000
}

/// Who an event is for.
#[derive(Debug)]
pub enum Ev {
    /// A datagram arrives at `to`.
    Deliver { from: SocketAddr, to: SocketAddr, bytes: Bytes },
    /// The switch's deadline (stale unless it is still the current one).
    SwitchWake,
    /// A simulated UA's transaction-layer deadline (stale unless current).
    UaTx(usize),
    /// A simulated UA's own scripted step.
    Ua(usize, crate::sim::Action),
    /// The next call of the run starts.
    StartCall,
    /// An operator's hangup through the API.
    Command(switch::Command),
}

struct Entry {
    at: Nanos,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: earliest (time, seq) first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The event queue: (time, sequence number) order, so equal times keep
/// the order they were scheduled in.
#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl Queue {
    /// Schedules `ev` at `at`.
    pub fn push(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry { at, seq: self.seq, ev });
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(Nanos, Ev)> {
        self.heap.pop().map(|e| (e.at, e.ev))
    }
}

/// How bad the network of one run is (drawn from the seed).
#[derive(Clone, Copy, Debug)]
pub struct Weather {
    /// Each link's loss rate is drawn in `0..=max_loss`.
    pub max_loss: f64,
    /// Chance that a datagram is delivered twice.
    pub duplication: f64,
    /// Delivery delay range (each copy draws its own: reordering).
    pub min_delay: Nanos,
    pub max_delay: Nanos,
}

impl Weather {
    /// The weather of one run: each link loses up to `ceiling` (0.10 by
    /// default; `SIM_MAX_LOSS` raises it for stress runs).
    pub fn draw(rng: &mut StdRng, ceiling: f64) -> Weather {
        Weather {
            max_loss: rng.gen_range(0.0..=ceiling),
            duplication: rng.gen_range(0.0..=0.03),
            min_delay: ms(1),
            max_delay: ms(rng.gen_range(5..=50)),
        }
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// UDP between every pair of addresses: a loss rate per link (drawn the
/// first time the link is used), duplication and a random delay per copy.
pub struct Net {
    pub weather: Weather,
    links: HashMap<(SocketAddr, SocketAddr), f64>,
    pub stats: NetStats,
}

impl Net {
    pub fn new(weather: Weather) -> Net {
        Net { weather, links: HashMap::new(), stats: NetStats::default() }
    }

    /// Sends a datagram over the link `(from, to)` at `now`.
    pub fn transmit(
        &mut self,
        rng: &mut StdRng,
        queue: &mut Queue,
        now: Nanos,
        (from, to): (SocketAddr, SocketAddr),
        bytes: Bytes,
    ) {
        let w = self.weather;
        let loss = *self.links.entry((from, to)).or_insert_with(|| rng.gen_range(0.0..=w.max_loss));
        self.stats.sent += 1;
        let copies = if rng.gen_bool(w.duplication) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if rng.gen_bool(loss) {
                self.stats.lost += 1;
                continue;
            }
            let delay = rng.gen_range(w.min_delay..=w.max_delay);
            queue.push(now + delay, Ev::Deliver { from, to, bytes: bytes.clone() });
        }
    }
}
