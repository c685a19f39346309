//! The shell's tap on SIP messages: every datagram or stream message that
//! comes in and every transmit that goes out is captured once
//! ([`Capture::received`], [`Capture::sent`]: one line each in the shell's
//! loop) into the call trace store (`[trace]`, read by the API) and, when
//! `[hep]` names a collector, sent as HEP v3 at the end of the round of
//! outputs ([`Capture::flush`]), with the inbound call's Call-ID as the
//! correlation id of every leg's messages, learnt from the records the
//! switch persists ([`Capture::persisted`]) as Kamailio's siptrace is told
//! it by its script.
//!
//! Neither may cost calls anything when it is slow or broken: the store is
//! bounded (sip-trace) and takes a lock the API holds only to copy a call's
//! messages out; HEP packets are handed to a thread of their own through a
//! queue bounded in packets and bytes, with `try_send` (full: the packet is
//! dropped and counted), and that thread alone waits on the network.

use crate::config::{HepConfig, HepTransport, TraceConfig};
use bytes::Bytes;
use records::{Timestamp, NIL};
use sip_message::Peer;
use sip_trace::{Captured, Direction, TraceLimits, TraceStore};
use sip_transport::Inbound;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use switch::Persist;
use tracing::{info, warn};
use uuid::Uuid;

/// The call trace store as the shell and the API share it.
pub type SharedTraces = Arc<Mutex<TraceStore>>;

/// What the tap feeds.
pub struct Capture {
    traces: Option<SharedTraces>,
    hep: Option<HepSender>,
    correlation: Correlation,
}

fn wall_micros() -> i64 {
    Timestamp::from_system(SystemTime::now()).micros()
}

impl Capture {
    /// The tap for `[trace]` and `[hep]`; also returns the store for the API
    /// (none when `[trace] enabled = false`).
    pub fn start(trace: &TraceConfig, hep: Option<&HepConfig>) -> (Capture, Option<SharedTraces>) {
        let traces = trace.enabled.then(|| {
            let limits = TraceLimits {
                max_bytes: trace.max_bytes,
                keep_us: i64::try_from(trace.keep_secs).unwrap_or(i64::MAX / 1_000_000) * 1_000_000,
            };
            Arc::new(Mutex::new(TraceStore::new(limits)))
        });
        let hep = hep.map(HepSender::start);
        let correlation = Correlation::default();
        (Capture { traces: traces.clone(), hep, correlation }, traces)
    }

    fn on(&self) -> bool {
        self.traces.is_some() || self.hep.is_some()
    }

    /// A message that came in (before the switch parses it).
    pub fn received(&mut self, inb: &Inbound) {
        if !self.on() {
            return;
        }
        let p = &inb.peer;
        // A buffer of its own: what the store counts is what it holds.
        let bytes = Bytes::copy_from_slice(&inb.bytes);
        self.capture(Direction::In, p, p.remote, p.local, bytes);
    }

    /// A message the switch sends, as the bytes that go.
    pub fn sent(&mut self, peer: &Peer, bytes: &Bytes) {
        if !self.on() {
            return;
        }
        self.capture(Direction::Out, peer, peer.local, peer.remote, bytes.clone());
    }

    fn capture(
        &mut self,
        direction: Direction,
        peer: &Peer,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        bytes: Bytes,
    ) {
        let c = Captured {
            time_us: wall_micros(),
            direction,
            transport: peer.transport,
            src,
            dst,
            call_id_range: sip_trace::call_id_range(&bytes),
            bytes,
        };
        if self.hep.is_some() {
            // Sent at the end of this round of outputs, when the records
            // that name this message's call have been seen too.
            self.correlation.pending.push(c.clone());
        }
        if let Some(t) = &self.traces {
            t.lock().unwrap_or_else(|e| e.into_inner()).record(c);
        }
    }

    /// A record the switch persisted: which leg belongs to which call
    /// (HEP's correlation id is the inbound call's Call-ID on every leg).
    pub fn persisted(&mut self, p: &Persist) {
        if self.hep.is_some() {
            self.correlation.learn(p);
        }
    }

    /// The end of a round of outputs: HEP packets of what was captured go.
    pub fn flush(&mut self) {
        let Some(h) = &self.hep else { return };
        for c in self.correlation.pending.drain(..) {
            let corr = match self.correlation.legs.get(c.call_id()) {
                Some(root) => root.clone(),
                None => Bytes::copy_from_slice(c.call_id()),
            };
            h.send(c, corr);
        }
    }
}

/// Most calls, legs and groupcalls remembered for HEP correlation; the
/// oldest are forgotten first (their late messages then carry their own
/// Call-ID).
const MAX_CORRELATED: usize = 200_000;

/// Which inbound call each leg's Call-ID belongs to, learnt from the
/// records (an inbound call, then its groupcall tree, then each leg).
#[derive(Default)]
struct Correlation {
    /// Inbound call record id -> its Call-ID.
    inbound: HashMap<Uuid, Bytes>,
    /// Groupcall id -> the inbound call's Call-ID.
    groupcalls: HashMap<Uuid, Bytes>,
    /// A Call-ID (any leg's, the inbound one's) -> the inbound call's.
    legs: HashMap<Bytes, Bytes>,
    /// Insertion order, to forget the oldest.
    order: VecDeque<Remembered>,
    /// Captured this round, not yet handed to HEP.
    pending: Vec<Captured>,
}

enum Remembered {
    Call(Uuid),
    Groupcall(Uuid),
    Leg(Bytes),
}

impl Correlation {
    fn learn(&mut self, p: &Persist) {
        match p {
            Persist::Call(c) if c.groupcall_id == NIL => {
                let cid = Bytes::copy_from_slice(c.sip_call_id.as_bytes());
                if self.inbound.insert(c.id, cid.clone()).is_none() {
                    self.remember(Remembered::Call(c.id));
                }
                self.leg(cid.clone(), cid);
            }
            Persist::Call(c) if !c.sip_call_id.is_empty() => {
                if let Some(root) = self.groupcalls.get(&c.groupcall_id).cloned() {
                    self.leg(Bytes::copy_from_slice(c.sip_call_id.as_bytes()), root);
                }
            }
            Persist::Groupcall(g) => {
                let root = match (g.master_call_id, g.master_groupcall_id) {
                    (call, _) if call != NIL => self.inbound.get(&call).cloned(),
                    (_, parent) => self.groupcalls.get(&parent).cloned(),
                };
                if let Some(root) = root {
                    if self.groupcalls.insert(g.id, root).is_none() {
                        self.remember(Remembered::Groupcall(g.id));
                    }
                }
            }
            _ => {}
        }
    }

    fn leg(&mut self, cid: Bytes, root: Bytes) {
        if self.legs.insert(cid.clone(), root).is_none() {
            self.remember(Remembered::Leg(cid));
        }
    }

    fn remember(&mut self, r: Remembered) {
        self.order.push_back(r);
        while self.order.len() > MAX_CORRELATED {
            match self.order.pop_front() {
                Some(Remembered::Call(id)) => drop(self.inbound.remove(&id)),
                Some(Remembered::Groupcall(id)) => drop(self.groupcalls.remove(&id)),
                Some(Remembered::Leg(cid)) => drop(self.legs.remove(&cid)),
                None => break,
            }
        }
    }
}

/// HEP packets waiting for the sender thread; beyond, dropped.
const HEP_QUEUE: usize = 10_000;
/// ... and the bytes they may hold (a flood of 64 kB messages must not
/// queue 640 MB).
const HEP_QUEUE_BYTES: usize = 16 << 20;

/// Hands captured messages to the HEP thread.
struct HepSender {
    queue: SyncSender<(Captured, Bytes)>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl HepSender {
    fn start(cfg: &HepConfig) -> HepSender {
        let (queue, rx) = sync_channel(HEP_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let link = HepLink {
            queued_bytes: queued_bytes.clone(),
            cfg: cfg.clone(),
            agent: sip_trace::hep::Agent {
                capture_id: cfg.capture_id,
                password: cfg.password.clone(),
            },
            dropped: dropped.clone(),
        };
        let spawned =
            std::thread::Builder::new().name("forkswitch-hep".into()).spawn(move || link.run(rx));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the HEP thread: no HEP");
        }
        info!(collector = %cfg.address, transport = ?cfg.transport, capture_id = cfg.capture_id, "HEP on");
        HepSender { queue, queued_bytes, dropped }
    }

    fn send(&self, c: Captured, correlation: Bytes) {
        let size = c.bytes.len();
        if self.queued_bytes.load(Relaxed) + size > HEP_QUEUE_BYTES {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        self.queued_bytes.fetch_add(size, Relaxed);
        match self.queue.try_send((c, correlation)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(size, Relaxed);
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The HEP thread's side: encodes and sends, reconnecting TCP as needed.
struct HepLink {
    queued_bytes: Arc<AtomicUsize>,
    cfg: HepConfig,
    agent: sip_trace::hep::Agent,
    dropped: Arc<AtomicU64>,
}

/// How the thread reaches the collector.
enum Socket {
    Udp(std::net::UdpSocket),
    Tcp(Option<std::net::TcpStream>),
}

impl HepLink {
    fn run(self, rx: Receiver<(Captured, Bytes)>) {
        let mut socket = match self.cfg.transport {
            HepTransport::Udp => match std::net::UdpSocket::bind(unspecified(self.cfg.address)) {
                Ok(s) => Socket::Udp(s),
                Err(e) => return warn!(error = %e, "HEP: cannot open a UDP socket"),
            },
            HepTransport::Tcp => Socket::Tcp(None),
        };
        let mut reported = 0;
        while let Ok((c, correlation)) = rx.recv() {
            self.queued_bytes.fetch_sub(c.bytes.len(), Relaxed);
            let packet = sip_trace::hep::encode(&c, &self.agent, &correlation);
            if let Err(e) = self.deliver(&mut socket, &packet) {
                self.dropped.fetch_add(1, Relaxed);
                let dropped = self.dropped.load(Relaxed);
                // One line per thousand drops: a collector that is down
                // must not flood the log either.
                if dropped / 1000 >= reported {
                    reported = dropped / 1000 + 1;
                    warn!(error = %e, collector = %self.cfg.address, dropped, "HEP: cannot send");
                }
            }
        }
    }

    fn deliver(&self, socket: &mut Socket, packet: &[u8]) -> std::io::Result<()> {
        match socket {
            Socket::Udp(s) => s.send_to(packet, self.cfg.address).map(|_| ()),
            Socket::Tcp(conn) => {
                if conn.is_none() {
                    let s = std::net::TcpStream::connect_timeout(
                        &self.cfg.address,
                        Duration::from_secs(2),
                    )?;
                    s.set_write_timeout(Some(Duration::from_secs(2)))?;
                    s.set_nodelay(true)?;
                    *conn = Some(s);
                }
                let Some(s) = conn.as_mut() else { return Ok(()) };
                let r = s.write_all(packet);
                if r.is_err() {
                    *conn = None;
                }
                r
            }
        }
    }
}

fn unspecified(to: std::net::SocketAddr) -> std::net::SocketAddr {
    match to {
        std::net::SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        std::net::SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    }
}
