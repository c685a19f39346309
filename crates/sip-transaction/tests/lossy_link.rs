//! A client layer and a server layer joined by a simulated UDP link that
//! drops, duplicates, delays and reorders datagrams, with small TUs on both
//! sides, over a few hundred seeds. Virtual time only.
//!
//! Server TU: INVITE -> 180 then a final (200 or 486, as the request's
//! `X-Final` asks), retransmitting a 2xx itself until the ACK (13.3.1.4);
//! non-INVITE -> 200 after up to 6 s (past 3.5 s, so the RFC 4320 100 shows).
//! Client TU: ACKs every 2xx; CANCELs an INVITE stuck in Proceeding for
//! 40 s and abandons it 64*T1 later (9.1).

mod common;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use sip_transaction::{ack_for, cancel_for, Config, Event, TransactionLayer, TxKey, TxState};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CLIENT: &str = "192.0.2.1:5060";
const SERVER: &str = "192.0.2.2:5060";

fn peer(remote: &str, local: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: remote.parse().unwrap(),
        local: local.parse().unwrap(),
        conn: None,
    }
}

/// In flight: (arrival, sequence, towards the server, bytes).
type Datagram = (Instant, u64, bool, Vec<u8>);

#[derive(Debug)]
enum Action {
    ClientSend(usize),
    ClientCheck(usize),
    ClientAbandon(usize),
    ServerRespond(TxKey, Message),
    Server2xx { key: TxKey, resp: Message, iv: Duration, started: Instant },
}

#[derive(Default, Debug)]
struct Call {
    invite: bool,
    expected: u16,
    request: Option<Message>,
    key: Option<TxKey>,
    finals: Vec<u16>,
    provisionals: usize,
    timeout_at: Option<Instant>,
    terminated: bool,
    cancelled: bool,
    // Link facts.
    request_reached_server: bool,
    final_reached_client_at: Option<Instant>,
    ack_reached_server_at: Option<Instant>,
    // Server facts.
    server_new: usize,
    server_key: Option<TxKey>,
    server_timeout_at: Option<Instant>,
    server_terminated: bool,
    acked_2xx: bool,
}

struct Sim {
    rng: StdRng,
    loss: f64,
    dup: f64,
    now: Instant,
    seq: u64,
    link: BinaryHeap<Reverse<Datagram>>,
    actions: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Action>,
    client: TransactionLayer,
    server: TransactionLayer,
    calls: Vec<Call>,
    by_call_id: HashMap<Vec<u8>, usize>,
    client_keys: HashMap<TxKey, usize>,
    server_keys: HashMap<TxKey, usize>,
}

impl Sim {
    fn schedule(&mut self, at: Instant, a: Action) {
        self.seq += 1;
        self.pending.insert(self.seq, a);
        self.actions.push(Reverse((at, self.seq)));
    }

    /// Puts a datagram on the link: lost, delivered once, or twice.
    fn send(&mut self, to_server: bool, bytes: Bytes) {
        let copies = if self.rng.gen_bool(self.loss) {
            0
        } else if self.rng.gen_bool(self.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rng.gen_range(5..80));
            self.seq += 1;
            self.link.push(Reverse((self.now + delay, self.seq, to_server, bytes.to_vec())));
        }
    }

    fn call_of(&self, m: &Message) -> Option<usize> {
        self.by_call_id.get(m.call_id().ok()?).copied()
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            assert_eq!(t.peer.remote, SERVER.parse::<SocketAddr>().unwrap());
            self.send(true, t.message.to_bytes());
        }
        while let Some(t) = self.server.poll_transmit() {
            assert_eq!(t.peer.remote, CLIENT.parse::<SocketAddr>().unwrap());
            self.send(false, t.message.to_bytes());
        }
        while let Some(e) = self.client.poll_event() {
            self.client_event(e);
        }
        while let Some(e) = self.server.poll_event() {
            self.server_event(e);
        }
    }

    fn client_event(&mut self, e: Event) {
        match e {
            Event::Response { key, response } => {
                let Some(&i) = self.client_keys.get(&key) else { return };
                let code = response.status().unwrap();
                let c = &mut self.calls[i];
                if code < 200 {
                    c.provisionals += 1;
                    return;
                }
                c.finals.push(code);
                if c.invite && code < 300 {
                    // The TU ACKs every 2xx, on a new branch, straight to the transport.
                    let inv = c.request.clone().unwrap();
                    let mut ack = ack_for(&inv, &response);
                    let branch = self.client.new_branch();
                    ack.replace_top_via(format!("SIP/2.0/UDP {CLIENT};branch={branch}").into());
                    self.send(true, ack.to_bytes());
                }
            }
            Event::Timeout { key } => {
                if let Some(&i) = self.client_keys.get(&key) {
                    self.calls[i].timeout_at = Some(self.now);
                }
            }
            Event::Terminated { key } => {
                if let Some(&i) = self.client_keys.get(&key) {
                    self.calls[i].terminated = true;
                }
            }
            Event::Stray { .. } => {}
            other => panic!("client got {other:?}"),
        }
    }

    fn server_event(&mut self, e: Event) {
        match e {
            Event::NewRequest { key, request, .. } => {
                let i = self.call_of(&request).expect("known call");
                self.server_keys.insert(key, i);
                let c = &mut self.calls[i];
                c.server_new += 1;
                c.server_key = Some(key);
                let t180 = self.rng.gen_range(0..400);
                let tfinal = self.rng.gen_range(t180..t180 + 6000);
                let code = std::str::from_utf8(request.header_named("X-Final").unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                if request.method() == Some(&Method::Invite) {
                    let ringing = Message::response_to(&request, 180).to_tag("s").build();
                    self.schedule(
                        self.now + Duration::from_millis(t180),
                        Action::ServerRespond(key, ringing),
                    );
                }
                let fin = Message::response_to(&request, code).to_tag("s").build();
                self.schedule(
                    self.now + Duration::from_millis(tfinal),
                    Action::ServerRespond(key, fin),
                );
            }
            Event::Cancel { key, request, cancels, .. } => {
                let code = if cancels.is_some() { 200 } else { 481 };
                let r = Message::response_to(&request, code).to_tag("s").build();
                self.server.send_response(self.now, key, r).unwrap();
            }
            Event::Stray { message, .. } => {
                assert_eq!(
                    message.method(),
                    Some(&Method::Ack),
                    "only ACKs for 2xx are strays here"
                );
                if let Some(i) = self.call_of(&message) {
                    self.calls[i].acked_2xx = true;
                }
            }
            Event::Timeout { key } => {
                let i = self.server_keys[&key];
                self.calls[i].server_timeout_at = Some(self.now);
            }
            Event::Terminated { key } => {
                if let Some(&i) = self.server_keys.get(&key) {
                    if self.calls[i].server_key == Some(key) {
                        self.calls[i].server_terminated = true;
                    }
                }
            }
            other => panic!("server got {other:?}"),
        }
    }

    fn deliver(&mut self, to_server: bool, bytes: Vec<u8>) {
        let m = Message::parse(Bytes::from(bytes)).expect("parse");
        let i = self.call_of(&m);
        if to_server {
            if let Some(i) = i {
                let c = &mut self.calls[i];
                match m.method() {
                    Some(Method::Ack) => {
                        c.ack_reached_server_at.get_or_insert(self.now);
                    }
                    Some(Method::Cancel) => {}
                    Some(_) => c.request_reached_server = true,
                    None => {}
                }
            }
            self.server.handle_incoming(self.now, m, peer(CLIENT, SERVER));
        } else {
            if let (Some(i), Some(code)) = (i, m.status()) {
                let c = &mut self.calls[i];
                let method_ok = m.cseq().unwrap().method != Method::Cancel;
                if code >= 200 && method_ok {
                    c.final_reached_client_at.get_or_insert(self.now);
                }
            }
            self.client.handle_incoming(self.now, m, peer(SERVER, CLIENT));
        }
    }

    fn act(&mut self, a: Action) {
        let t1 = Duration::from_millis(500);
        match a {
            Action::ClientSend(i) => {
                let invite = self.calls[i].invite;
                let branch = self.client.new_branch();
                let method = if invite { Method::Invite } else { Method::Options };
                let name = if invite { "INVITE" } else { "OPTIONS" };
                let req = Message::request(method, "sip:bob@192.0.2.2")
                    .header(HeaderName::Via, format!("SIP/2.0/UDP {CLIENT};branch={branch}"))
                    .header(HeaderName::MaxForwards, "70")
                    .header(HeaderName::From, "<sip:alice@192.0.2.1>;tag=c")
                    .header(HeaderName::To, "<sip:bob@192.0.2.2>")
                    .header(HeaderName::CallId, format!("call-{i}"))
                    .header(HeaderName::CSeq, format!("1 {name}"))
                    .header_named("X-Final", self.calls[i].expected.to_string())
                    .build();
                self.by_call_id.insert(format!("call-{i}").into_bytes(), i);
                let key =
                    self.client.send_request(self.now, req.clone(), peer(SERVER, CLIENT)).unwrap();
                self.client_keys.insert(key, i);
                self.calls[i].key = Some(key);
                self.calls[i].request = Some(req);
                if invite {
                    self.schedule(self.now + Duration::from_secs(40), Action::ClientCheck(i));
                }
            }
            Action::ClientCheck(i) => {
                let key = self.calls[i].key.unwrap();
                if self.client.state(key) == Some(TxState::Proceeding) {
                    let cancel = cancel_for(self.calls[i].request.as_ref().unwrap());
                    self.client.send_request(self.now, cancel, peer(SERVER, CLIENT)).unwrap();
                    self.calls[i].cancelled = true;
                    self.schedule(self.now + t1 * 64, Action::ClientAbandon(i));
                }
            }
            Action::ClientAbandon(i) => {
                let key = self.calls[i].key.unwrap();
                if self.client.state(key) == Some(TxState::Proceeding) {
                    self.client.terminate(key);
                }
            }
            Action::ServerRespond(key, resp) => {
                let code = resp.status().unwrap();
                if self.server.send_response(self.now, key, resp.clone()).is_ok() && code / 100 == 2
                {
                    let i = self.server_keys[&key];
                    if self.calls[i].invite {
                        let started = self.now;
                        self.schedule(
                            self.now + t1,
                            Action::Server2xx { key, resp, iv: t1, started },
                        );
                    }
                }
            }
            Action::Server2xx { key, resp, iv, started } => {
                let i = self.server_keys[&key];
                if self.calls[i].acked_2xx || self.now >= started + t1 * 64 {
                    return;
                }
                if self.server.send_response(self.now, key, resp.clone()).is_ok() {
                    let iv = (iv * 2).min(Duration::from_secs(4));
                    self.schedule(self.now + iv, Action::Server2xx { key, resp, iv, started });
                }
            }
        }
    }

    fn run(&mut self) {
        for _ in 0..1_000_000 {
            self.flush();
            let next = [
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                self.link.peek().map(|Reverse((t, ..))| *t),
                self.actions.peek().map(|Reverse((t, _))| *t),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            assert!(next >= self.now, "time never goes back");
            self.now = next;
            while let Some(Reverse((t, ..))) = self.link.peek() {
                if *t > self.now {
                    break;
                }
                let Reverse((_, _, to_server, bytes)) = self.link.pop().unwrap();
                self.deliver(to_server, bytes);
                self.flush();
            }
            while let Some(&Reverse((t, id))) = self.actions.peek() {
                if t > self.now {
                    break;
                }
                self.actions.pop();
                let a = self.pending.remove(&id).unwrap();
                self.act(a);
                self.flush();
            }
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
        panic!("simulation did not settle");
    }
}

#[derive(Default, Debug)]
struct Tally {
    calls: usize,
    finals: usize,
    client_timeouts: usize,
    server_timeouts: usize,
    abandoned: usize,
    extra_2xx: usize,
}

fn run_seed(seed: u64, tally: &mut Tally) {
    let mut rng = StdRng::seed_from_u64(seed);
    // A perfect link, a very bad one (timeouts), or a merely lossy one.
    let (loss, dup) = match seed % 10 {
        0 => (0.0, 0.0),
        1 | 2 => (rng.gen_range(0.6..0.95), rng.gen_range(0.0..0.3)),
        _ => (rng.gen_range(0.0..0.4), rng.gen_range(0.0..0.3)),
    };
    let t0 = Instant::now();
    let n = rng.gen_range(1..=4);
    let mut calls = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..n {
        let invite = rng.gen_bool(0.6);
        let expected = if invite && rng.gen_bool(0.5) { 486 } else { 200 };
        calls.push(Call { invite, expected, ..Call::default() });
        starts.push(Duration::from_millis(rng.gen_range(0..2000)));
    }
    let mut sim = Sim {
        rng,
        loss,
        dup,
        now: t0,
        seq: 0,
        link: BinaryHeap::new(),
        actions: BinaryHeap::new(),
        pending: HashMap::new(),
        client: TransactionLayer::new(Config::default(), 1),
        server: TransactionLayer::new(Config::default(), 2),
        calls,
        by_call_id: HashMap::new(),
        client_keys: HashMap::new(),
        server_keys: HashMap::new(),
    };
    for (i, s) in starts.into_iter().enumerate() {
        sim.schedule(t0 + s, Action::ClientSend(i));
    }
    sim.run();

    let ctx = format!("seed {seed} loss {loss:.2} dup {dup:.2}");
    assert_eq!(sim.client.len(), 0, "{ctx}: client transactions leaked");
    assert_eq!(sim.server.len(), 0, "{ctx}: server transactions leaked");
    for (i, c) in sim.calls.iter().enumerate() {
        let ctx = format!("{ctx} call {i} {c:?}");
        assert!(c.terminated, "{ctx}: client transaction never terminated");
        assert!(c.server_new <= 1, "{ctx}: retransmission made a second server transaction");
        assert_eq!(c.server_new == 1, c.request_reached_server, "{ctx}");
        if c.request_reached_server {
            assert!(c.server_terminated, "{ctx}: server transaction never terminated");
        }
        match (c.finals.first(), c.timeout_at) {
            (Some(&code), None) => {
                assert_eq!(code, c.expected, "{ctx}");
                if code >= 300 || !c.invite {
                    assert_eq!(c.finals.len(), 1, "{ctx}: retransmitted final passed up twice");
                }
            }
            (None, Some(t)) => {
                assert!(loss > 0.0, "{ctx}: timeout on a perfect link");
                assert!(
                    !matches!(c.final_reached_client_at, Some(f) if f <= t),
                    "{ctx}: timed out although a final response arrived"
                );
            }
            (None, None) => {
                // Abandoned after CANCEL: no final ever reached the client.
                assert!(c.cancelled && c.final_reached_client_at.is_none(), "{ctx}: no outcome");
            }
            (Some(_), Some(_)) => panic!("{ctx}: both a final response and a timeout"),
        }
        if let Some(h) = c.server_timeout_at {
            assert!(loss > 0.0, "{ctx}: Timer H on a perfect link");
            assert!(
                !matches!(c.ack_reached_server_at, Some(a) if a <= h),
                "{ctx}: Timer H although the ACK arrived"
            );
        }
        tally.calls += 1;
        tally.finals += usize::from(!c.finals.is_empty());
        tally.client_timeouts += usize::from(c.timeout_at.is_some());
        tally.server_timeouts += usize::from(c.server_timeout_at.is_some());
        tally.abandoned += usize::from(c.finals.is_empty() && c.timeout_at.is_none());
        tally.extra_2xx += c.finals.len().saturating_sub(1);
        if loss == 0.0 {
            assert_eq!(c.finals.len(), 1, "{ctx}");
            assert!(c.provisionals >= usize::from(c.invite), "{ctx}");
        }
    }
}

#[test]
fn lossy_udp_link_settles_for_many_seeds() {
    let mut tally = Tally::default();
    for seed in 0..400 {
        run_seed(seed, &mut tally);
    }
    eprintln!("{tally:?}");
    // The link must have been bad enough to exercise the failure paths.
    assert!(
        tally.client_timeouts > 0 && tally.server_timeouts > 0 && tally.extra_2xx > 0,
        "{tally:?}"
    );
}
