//! Throughput of the transaction layer: INVITE client + server transaction
//! pairs run to completion through two layers, no sockets, virtual time.
//!
//! Each pair: INVITE -> 100 Trying (the server layer's own, after 200 ms
//! of virtual time) -> 180 -> 200 + ACK from the client TU (half the
//! pairs) or 486 + the client transaction's ACK (the other half), then
//! virtual time jumps past every Timer D/I/L/M so that both transactions
//! terminate. Pairs run in waves of 100 and of 10,000 live at once (the
//! second is memory-bound: every message's headers miss the cache), over
//! TCP peers (reliable) and UDP peers. By default every message is serialised with
//! `to_bytes()` and parsed back with `Message::parse` between the layers,
//! as it would be off the wire; a second run hands `Message`s over as is.
//!
//! `cargo run --release -p sip-transaction --example tx_bench [pairs]`
//!
//! The last line is `transactions_per_sec=N state_bytes_per_tx=M`: N is
//! pairs (one client plus one server transaction) completed per second of
//! wall-clock time with the re-parse, 10,000 live, over both transports; M is
//! [`TransactionLayer::state_bytes_per_transaction`].

use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use sip_transaction::{Config, Event, TransactionLayer, TxKey};
use std::time::{Duration, Instant};

/// Pairs live at once: a lightly and a heavily loaded server.
const WAVES: [usize; 2] = [100, 10_000];
const SDP: &[u8] = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";

struct Bench {
    client: TransactionLayer,
    server: TransactionLayer,
    to_server: Peer,
    to_client: Peer,
    reparse: bool,
    via_prefix: String,
}

impl Bench {
    fn new(transport: Transport, reparse: bool) -> Bench {
        let c = "192.0.2.1:5060".parse().unwrap();
        let s = "192.0.2.2:5060".parse().unwrap();
        Bench {
            client: TransactionLayer::new(Config::default(), 1),
            server: TransactionLayer::new(Config::default(), 2),
            to_server: Peer { transport, remote: s, local: c, conn: None },
            to_client: Peer { transport, remote: c, local: s, conn: None },
            reparse,
            via_prefix: format!("SIP/2.0/{} 192.0.2.1:5060;branch=", transport.via_token()),
        }
    }

    fn carry(&self, m: Message) -> Message {
        if self.reparse {
            Message::parse(m.to_bytes()).expect("parse")
        } else {
            m
        }
    }

    /// Moves every pending transmit of one layer into the other.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                let m = self.carry(t.message);
                self.server.handle_incoming(now, m, self.to_client);
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit() {
                let m = self.carry(t.message);
                self.client.handle_incoming(now, m, self.to_server);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// The client TU: ACKs 2xx (a new branch, straight to the transport).
    fn client_events(&mut self, now: Instant, stats: &mut Stats) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::Response { response, .. } => {
                    let code = response.status().unwrap_or(0);
                    if code >= 200 {
                        stats.finals += 1;
                    }
                    if (200..300).contains(&code) {
                        let branch = self.client.new_branch();
                        let ack = Message::request(Method::Ack, "sip:bob@192.0.2.2")
                            .header(HeaderName::Via, format!("{}{branch}", self.via_prefix))
                            .header(HeaderName::MaxForwards, "70")
                            .header(
                                HeaderName::From,
                                response.header_bytes(HeaderName::From).unwrap_or_default(),
                            )
                            .header(
                                HeaderName::To,
                                response.header_bytes(HeaderName::To).unwrap_or_default(),
                            )
                            .header(
                                HeaderName::CallId,
                                response.header_bytes(HeaderName::CallId).unwrap_or_default(),
                            )
                            .header(HeaderName::CSeq, "1 ACK")
                            .build();
                        let ack = self.carry(ack);
                        self.server.handle_incoming(now, ack, self.to_client);
                    }
                }
                Event::Terminated { .. } => stats.terminated += 1,
                _ => {}
            }
        }
    }

    fn server_events(&mut self, news: &mut Vec<(TxKey, Message)>, stats: &mut Stats) {
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::NewRequest { key, request, .. } => news.push((key, request)),
                Event::Stray { .. } => stats.acks_2xx += 1,
                Event::Terminated { .. } => stats.terminated += 1,
                _ => {}
            }
        }
    }

    fn wave(&mut self, t: Instant, first: usize, n: usize, stats: &mut Stats) {
        // INVITEs out.
        for i in first..first + n {
            let branch = self.client.new_branch();
            let inv = Message::request(Method::Invite, "sip:bob@192.0.2.2")
                .header(HeaderName::Via, format!("{}{branch}", self.via_prefix))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, "\"Alice\" <sip:alice@192.0.2.1>;tag=9fxced76sl")
                .header(HeaderName::To, "<sip:bob@192.0.2.2>")
                .header(HeaderName::CallId, format!("{i}-3848276298220188511@192.0.2.1"))
                .header(HeaderName::CSeq, "1 INVITE")
                .header(HeaderName::Contact, "<sip:alice@192.0.2.1:5060>")
                .body("application/sdp", Bytes::from_static(SDP))
                .build();
            self.client.send_request(t, inv, self.to_server).expect("send INVITE");
        }
        self.pump(t);
        let mut news = Vec::with_capacity(n);
        self.server_events(&mut news, stats);
        // 100 Trying from the server layer's timer.
        let t = t + Duration::from_millis(200);
        self.server.handle_timeout(t);
        self.client.handle_timeout(t);
        self.pump(t);
        self.client_events(t, stats);
        // 180, then the final.
        for (key, req) in &news {
            let r = Message::response_to(req, 180).to_tag("a6c85cf").build();
            self.server.send_response(t, *key, r).expect("180");
        }
        self.pump(t);
        self.client_events(t, stats);
        for (k, (key, req)) in news.iter().enumerate() {
            let code = if k % 2 == 0 { 200 } else { 486 };
            let r = Message::response_to(req, code).to_tag("a6c85cf").build();
            self.server.send_response(t, *key, r).expect("final");
        }
        self.pump(t);
        self.client_events(t, stats);
        self.server_events(&mut news, stats);
        // Past every Timer D, I, L, M.
        let t = t + Duration::from_secs(40);
        self.client.handle_timeout(t);
        self.server.handle_timeout(t);
        self.client_events(t, stats);
        self.server_events(&mut news, stats);
        assert!(self.client.is_empty() && self.server.is_empty(), "transactions leaked");
    }
}

#[derive(Default)]
struct Stats {
    finals: usize,
    acks_2xx: usize,
    terminated: usize,
}

/// Runs `pairs` pairs, `live` at a time; returns the wall-clock time.
fn run(transport: Transport, reparse: bool, pairs: usize, live: usize) -> Duration {
    let mut b = Bench::new(transport, reparse);
    let mut stats = Stats::default();
    let t0 = Instant::now();
    let start = Instant::now();
    let mut done = 0;
    let mut wave = 0u32;
    while done < pairs {
        let n = live.min(pairs - done);
        b.wave(t0 + Duration::from_secs(60) * wave, done, n, &mut stats);
        done += n;
        wave += 1;
    }
    let took = start.elapsed();
    assert_eq!(stats.finals, pairs);
    assert_eq!(stats.acks_2xx, pairs.div_ceil(2));
    assert_eq!(stats.terminated, 2 * pairs);
    took
}

fn main() {
    let pairs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    // Warm-up (allocator, caches).
    run(Transport::Udp, true, 10_000, 100);
    let mut total = Duration::ZERO;
    for live in WAVES {
        for reparse in [false, true] {
            for transport in [Transport::Tcp, Transport::Udp] {
                let took = run(transport, reparse, pairs, live);
                let rate = pairs as f64 / took.as_secs_f64();
                println!(
                    "live={live} transport={transport} reparse={} pairs={pairs} secs={:.3} \
                     pairs_per_sec={rate:.0}",
                    if reparse { "yes" } else { "no" },
                    took.as_secs_f64()
                );
                if reparse && live == WAVES[1] {
                    total += took;
                }
            }
        }
    }
    // The figure: with the re-parse, 10,000 pairs live, both transports.
    let rate = (2 * pairs) as f64 / total.as_secs_f64();
    println!(
        "transactions_per_sec={rate:.0} state_bytes_per_tx={}",
        TransactionLayer::state_bytes_per_transaction()
    );
}
