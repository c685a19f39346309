//! A lossy network link for the tests: a UDP relay on 127.0.0.1 that sits
//! between one party (a SIPp caller or phone) and the switch and, with a
//! seeded random generator, drops, duplicates and delays (reorders) the
//! datagrams it forwards, counting what it did in each direction.
//!
//! Why a relay: the kernel here has no netem, and network namespaces (for
//! nftables) may not be permitted in CI's container; a relay of our own
//! runs anywhere, needs no privileges and counts exactly what it did.
//!
//! How it is wired: a [`Link`] has two sockets on ports the kernel picks.
//! The party sends to [`Link::party_side`] (the switch, as the party sees
//! it) and the switch sends to [`Link::switch_side`] (the party, as the
//! switch sees it): a one-mapping NAT on a bad line. A datagram that reaches
//! one socket leaves from the other, to the address last seen on the far
//! side (or the one given with [`Link::set_party`] / [`Link::set_switch`]
//! before anything came from there). The party should announce
//! `switch_side` as its own address (Via, Contact, or the switch's
//! configured destination), so that everything the switch sends it, in and
//! out of dialogs, crosses the link.
//!
//! Each datagram's fate is drawn from the direction's own generator, seeded
//! from the link's seed: dropped, sent twice, held back for a while (so that
//! later datagrams overtake it), or sent at once. The nth datagram of a
//! direction always meets the same fate for a given seed. The link also
//! reads the first line and the Call-ID of what it carries (before its fate
//! is drawn: what the sender sent), so a test can tell how many requests of
//! each kind crossed and how many of them were retransmissions.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a reader blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What one direction of a link does to the datagrams it carries. The
/// probabilities are of exclusive fates (a datagram is dropped, or
/// duplicated, or delayed, or sent as is).
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Probability that a datagram is lost.
    pub drop: f64,
    /// Probability that it arrives twice (the copy right after it).
    pub duplicate: f64,
    /// Probability that it is held back, so later datagrams overtake it.
    pub delay: f64,
    /// How long a held-back datagram waits (uniform in this range).
    pub delay_range: (Duration, Duration),
}

impl Impairment {
    /// 5% loss, 2% duplication, 2% held back by 20-60 ms.
    pub const LOSSY: Impairment = Impairment {
        drop: 0.05,
        duplicate: 0.02,
        delay: 0.02,
        delay_range: (Duration::from_millis(20), Duration::from_millis(60)),
    };
}

/// The two directions of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the party to the switch.
    ToSwitch,
    /// From the switch to the party.
    FromSwitch,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToSwitch => 0,
            Dir::FromSwitch => 1,
        }
    }
}

/// One kind of SIP message (a request's method, or a response's status
/// and CSeq method, e.g. `200 INVITE`) seen going one way.
#[derive(Clone, Debug, Default)]
pub struct Kind {
    /// Datagrams of this kind that reached the link (sender's
    /// retransmissions included; the link's own copies not).
    pub datagrams: u64,
    /// The distinct Call-IDs among them.
    pub calls: HashSet<String>,
}

impl Kind {
    /// Datagrams beyond the first of each call: the sender's
    /// retransmissions (and, for ACKs, ACKs sent again).
    pub fn repeats(&self) -> u64 {
        self.datagrams.saturating_sub(self.calls.len() as u64)
    }
}

/// What one direction of a link saw and did.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Datagrams that reached the link.
    pub received: u64,
    /// Lost on purpose.
    pub dropped: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Held back.
    pub delayed: u64,
    /// Held back and, in the end, overtaken by a later datagram: really
    /// reordered.
    pub overtaken: u64,
    /// Datagrams sent on (copies included).
    pub sent: u64,
    /// Datagrams with no one to send them to yet (the far side unknown).
    pub unroutable: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// What was carried, by kind.
    pub kinds: BTreeMap<String, Kind>,
}

impl Counts {
    /// The kind `name` (`INVITE`, `200 BYE`, ...), empty if never seen.
    pub fn kind(&self, name: &str) -> Kind {
        self.kinds.get(name).cloned().unwrap_or_default()
    }

    /// Share of the datagrams received that were dropped.
    pub fn drop_rate(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            self.dropped as f64 / self.received as f64
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {}, dropped {} ({:.2}%), duplicated {}, delayed {} (overtaken {}), sent {}, unroutable {}, send errors {}; by kind (datagrams/calls):",
            self.received,
            self.dropped,
            100.0 * self.drop_rate(),
            self.duplicated,
            self.delayed,
            self.overtaken,
            self.sent,
            self.unroutable,
            self.send_errors
        )?;
        for (name, k) in &self.kinds {
            write!(f, " {name} {}/{}", k.datagrams, k.calls.len())?;
        }
        Ok(())
    }
}

/// One direction's state: its generator, its counters, and the order in
/// which its datagrams arrived and left (to tell a real reordering).
struct Direction {
    impairment: Impairment,
    rng: StdRng,
    counts: Counts,
    /// Arrival number of the next datagram.
    next_seq: u64,
    /// Highest arrival number sent so far.
    highest_sent: Option<u64>,
}

impl Direction {
    /// Sends datagram `seq` and counts it.
    fn send(&mut self, sock: &UdpSocket, bytes: &[u8], to: SocketAddr, seq: u64) {
        if sock.send_to(bytes, to).is_err() {
            self.counts.send_errors += 1;
            return;
        }
        self.counts.sent += 1;
        self.highest_sent = Some(self.highest_sent.map_or(seq, |h| h.max(seq)));
    }
}

/// A datagram held back until `due`.
struct Held {
    due: Instant,
    seq: u64,
    dir: Dir,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed: the earliest due comes first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct Shared {
    stop: AtomicBool,
    /// Where the party is (learned from its datagrams, or set).
    party: Mutex<Option<SocketAddr>>,
    /// Where the switch is (learned from its datagrams, or set).
    switch: Mutex<Option<SocketAddr>>,
    dirs: [Mutex<Direction>; 2],
    held: Mutex<BinaryHeap<Held>>,
    wake: Condvar,
    /// The socket the party talks to, and the one the switch talks to.
    party_sock: UdpSocket,
    switch_sock: UdpSocket,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The socket a datagram going `dir` leaves from, and where to.
    fn out(&self, dir: Dir) -> (&UdpSocket, Option<SocketAddr>) {
        match dir {
            Dir::ToSwitch => (&self.switch_sock, *lock(&self.switch)),
            Dir::FromSwitch => (&self.party_sock, *lock(&self.party)),
        }
    }

    /// One datagram that reached the link going `dir`: its fate.
    fn forward(&self, dir: Dir, bytes: &[u8]) {
        let (sock, to) = self.out(dir);
        let mut d = lock(&self.dirs[dir.index()]);
        let seq = d.next_seq;
        d.next_seq += 1;
        d.counts.received += 1;
        if let Some((kind, call_id)) = classify(bytes) {
            let k = d.counts.kinds.entry(kind).or_default();
            k.datagrams += 1;
            k.calls.insert(call_id);
        }
        let Some(to) = to else {
            d.counts.unroutable += 1;
            return;
        };
        let imp = d.impairment;
        let r: f64 = d.rng.gen();
        if r < imp.drop {
            d.counts.dropped += 1;
        } else if r < imp.drop + imp.duplicate {
            d.counts.duplicated += 1;
            d.send(sock, bytes, to, seq);
            d.send(sock, bytes, to, seq);
        } else if r < imp.drop + imp.duplicate + imp.delay {
            d.counts.delayed += 1;
            let (lo, hi) = imp.delay_range;
            let wait = d.rng.gen_range(lo..=hi);
            drop(d);
            let due = Instant::now() + wait;
            lock(&self.held).push(Held { due, seq, dir, to, bytes: bytes.to_vec() });
            self.wake.notify_all();
        } else {
            d.send(sock, bytes, to, seq);
        }
    }

    /// Sends held-back datagrams when they are due, until stopped.
    fn release_held(&self) {
        let mut held = lock(&self.held);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = held.peek().map_or(POLL, |h| h.due.saturating_duration_since(now));
            if !wait.is_zero() {
                held = match self.wake.wait_timeout(held, wait) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
                continue;
            }
            let Some(h) = held.pop() else { continue };
            drop(held);
            let (sock, _) = self.out(h.dir);
            let mut d = lock(&self.dirs[h.dir.index()]);
            if d.highest_sent.is_some_and(|s| s > h.seq) {
                d.counts.overtaken += 1;
            }
            d.send(sock, &h.bytes, h.to, h.seq);
            drop(d);
            held = lock(&self.held);
        }
    }

    /// Reads `dir`'s incoming socket until stopped.
    fn read(&self, dir: Dir) {
        let (sock, peer) = match dir {
            Dir::ToSwitch => (&self.party_sock, &self.party),
            Dir::FromSwitch => (&self.switch_sock, &self.switch),
        };
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    *lock(peer) = Some(from);
                    self.forward(dir, &buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ICMP port unreachable from an earlier send surfaces here
                // on Linux: not this socket's failure.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("lossy link: recv failed: {e}"),
            }
        }
    }
}

/// `(kind, Call-ID)` of a SIP message: `INVITE`, `ACK`, ... for requests,
/// `<status> <CSeq method>` for responses. `None` for anything else.
fn classify(bytes: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let (mut call_id, mut cseq_method) = (None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "call-id" | "i" => call_id = Some(value.to_owned()),
            "cseq" => cseq_method = value.split_whitespace().nth(1).map(str::to_owned),
            _ => {}
        }
    }
    let kind = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        format!("{} {}", rest.split(' ').next()?, cseq_method?)
    } else {
        first.split(' ').next()?.to_owned()
    };
    Some((kind, call_id?))
}

/// A lossy link between one party and the switch; stops (its threads
/// joined, its sockets closed) when dropped.
pub struct Link {
    /// The link's name in reports ("caller", "phone").
    pub name: String,
    /// Where the party sends: the switch, as the party sees it.
    pub party_side: SocketAddr,
    /// Where the switch sends: the party, as the switch sees it.
    pub switch_side: SocketAddr,
    /// The seed its generators were made from.
    pub seed: u64,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    /// Binds both sockets on 127.0.0.1 (ports of the kernel's choice) and
    /// starts relaying, with `impairment` both ways.
    pub fn start(name: &str, seed: u64, impairment: Impairment) -> Link {
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("lossy link: bind 127.0.0.1:0");
            s.set_read_timeout(Some(POLL)).expect("read timeout");
            s
        };
        let (party_sock, switch_sock) = (bind(), bind());
        let party_side = party_sock.local_addr().expect("addr");
        let switch_side = switch_sock.local_addr().expect("addr");
        let direction = |salt: u64| {
            Mutex::new(Direction {
                impairment,
                rng: StdRng::seed_from_u64(seed ^ salt),
                counts: Counts::default(),
                next_seq: 0,
                highest_sent: None,
            })
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            party: Mutex::new(None),
            switch: Mutex::new(None),
            dirs: [direction(0x746f_5377), direction(0x6672_5377)],
            held: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            party_sock,
            switch_sock,
        });
        let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("lossy-{name}-{what}"))
                .spawn(f)
                .expect("spawn a lossy link thread")
        };
        let threads = vec![
            spawn("to-switch", {
                let s = shared.clone();
                Box::new(move || s.read(Dir::ToSwitch))
            }),
            spawn("from-switch", {
                let s = shared.clone();
                Box::new(move || s.read(Dir::FromSwitch))
            }),
            spawn("held", {
                let s = shared.clone();
                Box::new(move || s.release_held())
            }),
        ];
        Link { name: name.to_owned(), party_side, switch_side, seed, shared, threads }
    }

    /// Where the party is, before it has sent anything (a phone that only
    /// answers).
    pub fn set_party(&self, addr: SocketAddr) {
        *lock(&self.shared.party) = Some(addr);
    }

    /// Where the switch is, before it has sent anything.
    pub fn set_switch(&self, addr: SocketAddr) {
        *lock(&self.shared.switch) = Some(addr);
    }

    /// A copy of one direction's counters.
    pub fn counts(&self, dir: Dir) -> Counts {
        lock(&self.shared.dirs[dir.index()]).counts.clone()
    }

    /// Both directions' counters, labelled, for a report.
    pub fn report(&self) -> String {
        let (to, from) = (self.counts(Dir::ToSwitch), self.counts(Dir::FromSwitch));
        format!("{n} -> switch: {to}\nswitch -> {n}: {from}", n = self.name, to = to, from = from)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
