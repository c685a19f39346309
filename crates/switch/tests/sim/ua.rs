//! What every simulated user agent shares: the environment it acts in
//! (virtual clock, the run's one random generator, the event queue, the
//! network, the oracle that sees what it sends) and its own RFC 3261
//! transaction layer (`sip_transaction`, with its own timers). It exists so
//! that phones, carriers and callers are driven the same way.

use crate::sim::net::{Ev, Nanos, Net, Queue};
use crate::sim::oracle::Oracle;
use crate::sim::sip;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use sip_message::Message;
use sip_transaction::{Config, Event as TxEvent, TransactionLayer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A scripted step of a simulated UA, scheduled in virtual time.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// A phone registers.
    Register,
    /// A callee sends 180 (or 183 with SDP) on incoming INVITE `inv`.
    Ring(usize),
    /// A callee answers INVITE `inv` (its first fork).
    Answer(usize),
    /// A callee's second downstream fork answers INVITE `inv` too.
    SecondFork(usize),
    /// A callee rejects INVITE `inv` with this code.
    Reject(usize, u16),
    /// A callee's 2xx retransmission (13.3.1.4) in dialog `dlg`, generation.
    Retransmit(usize, u32),
    /// A callee hangs up dialog `dlg`.
    CalleeBye(usize),
    /// A callee re-INVITEs in dialog `dlg`.
    CalleeReinvite(usize),
    /// A caller places its call.
    Dial,
    /// A caller hangs up before the answer (CANCEL once a 1xx came).
    Cancel,
    /// A caller re-INVITEs.
    Reinvite,
    /// A caller hangs up after the answer.
    Bye,
}

/// Everything a UA acts on besides itself.
pub struct Env {
    pub now: Nanos,
    pub base: Instant,
    pub rng: StdRng,
    pub queue: Queue,
    pub net: Net,
    pub oracle: Oracle,
    next_sdp: u64,
}

impl Env {
    pub fn new(base: Instant, rng: StdRng, net: Net, oracle: Oracle) -> Env {
        Env { now: 0, base, rng, queue: Queue::default(), net, oracle, next_sdp: 0 }
    }

    /// Now as an `Instant`.
    pub fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    /// An `Instant` as virtual time.
    pub fn nanos(&self, at: Instant) -> Nanos {
        at.saturating_duration_since(self.base).as_nanos() as Nanos
    }

    /// Sends `msg` from a UA at `from` to `to` (the oracle sees it first).
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, msg: &Message) {
        let bytes = msg.to_bytes();
        self.oracle.ua_sent(from, to, &bytes);
        self.net.transmit(&mut self.rng, &mut self.queue, self.now, (from, to), bytes);
    }

    /// Schedules step `a` of UA `ua` in `d`.
    pub fn after(&mut self, d: Nanos, ua: usize, a: Action) {
        self.queue.push(self.now + d, Ev::Ua(ua, a));
    }

    /// A body no other party sends.
    pub fn sdp(&mut self, addr: SocketAddr) -> Bytes {
        self.next_sdp += 1;
        sip::sdp(addr, self.next_sdp)
    }

    /// A random token (tags, Call-IDs, nonces).
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.rng.gen::<u64>())
    }

    /// A random duration in `lo..=hi`.
    pub fn between(&mut self, lo: Nanos, hi: Nanos) -> Nanos {
        self.rng.gen_range(lo..=hi)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }
}

/// A UA's address and transaction layer.
pub struct Stack {
    pub id: usize,
    pub addr: SocketAddr,
    pub tx: TransactionLayer,
    /// The transaction-layer deadline filed in the event queue.
    pub wake: Option<Nanos>,
}

impl Stack {
    pub fn new(id: usize, addr: SocketAddr, seed: u64, t1: Duration) -> Stack {
        let cfg = Config { t1, ..Config::default() };
        Stack { id, addr, tx: TransactionLayer::new(cfg, seed), wake: None }
    }

    /// The peer for talking to `remote`.
    pub fn peer(&self, remote: SocketAddr) -> sip_message::Peer {
        sip::udp(self.addr, remote)
    }
}

/// A simulated UA, driven by the run.
pub trait Agent {
    fn stack(&mut self) -> &mut Stack;
    /// A transaction-layer event.
    fn on_tx_event(&mut self, env: &mut Env, ev: TxEvent);
    /// A scripted step.
    fn on_action(&mut self, env: &mut Env, a: Action);
    /// A message from the network: to the transaction layer, unless the UA
    /// ignores it.
    fn on_message(&mut self, env: &mut Env, msg: Message, from: SocketAddr) {
        let now = env.instant();
        let s = self.stack();
        let peer = s.peer(from);
        s.tx.handle_incoming(now, msg, peer);
    }
}

/// Sends what the UA's transaction layer wants sent and hands its events
/// to the UA, until nothing moves; then files its next deadline.
pub fn pump(a: &mut dyn Agent, env: &mut Env) {
    loop {
        let mut busy = false;
        loop {
            let s = a.stack();
            let addr = s.addr;
            let Some(t) = s.tx.poll_transmit() else { break };
            busy = true;
            env.send(addr, t.peer.remote, &t.message);
        }
        while let Some(ev) = a.stack().tx.poll_event() {
            busy = true;
            a.on_tx_event(env, ev);
        }
        if !busy {
            break;
        }
    }
    let s = a.stack();
    let next = s.tx.poll_timeout().map(|i| env.nanos(i).max(env.now));
    if next.is_some() && next != s.wake {
        s.wake = next;
        if let Some(at) = next {
            env.queue.push(at, Ev::UaTx(s.id));
        }
    }
}
