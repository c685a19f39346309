//! The ng client against simulated rtpengines, in virtual time: replies,
//! retransmission of the same cookie, failover, call affinity, weights,
//! instance health, and what is dropped.

use bytes::Bytes;
use media_anchor::command::decode_request;
use media_anchor::reply::encode_reply;
use media_anchor::settings::parse_instance;
use media_anchor::{
    ClientEvent, Command, CommandKind, Delete, Done, DropReason, Failure, InstanceId,
    InstanceState, NgClient, Offer, Reply, ReplyBody, RequestToken, RtpengineSettings, SdpOptions,
    SimAnswer, SimFaults, SimRtpengine,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const RTT: Duration = Duration::from_millis(2);

/// The client, simulated rtpengines at their addresses, and the datagrams
/// on their way back, in virtual time.
struct Bench {
    now: Instant,
    client: NgClient,
    engines: Vec<(SocketAddr, SimRtpengine)>,
    in_transit: BTreeMap<(Instant, u64), (SocketAddr, Bytes)>,
    seq: u64,
    sent: Vec<(SocketAddr, Bytes)>,
    events: Vec<ClientEvent>,
}

fn settings(specs: &[&str]) -> RtpengineSettings {
    let mut s = RtpengineSettings::new(specs.iter().map(|s| parse_instance(s).unwrap()).collect());
    s.timeout = Duration::from_millis(100);
    s.retries = 2;
    s.probe_interval = Duration::from_secs(1);
    s
}

impl Bench {
    fn new(specs: &[&str], seed: u64) -> Bench {
        let now = Instant::now();
        let s = settings(specs);
        let engines = s
            .instances
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (
                    x.addr,
                    SimRtpengine::new("203.0.113.1".parse().unwrap(), SimFaults::NONE, i as u64),
                )
            })
            .collect();
        let mut b = Bench {
            now,
            client: NgClient::new(&s, seed, now),
            engines,
            in_transit: BTreeMap::new(),
            seq: 0,
            sent: Vec::new(),
            events: Vec::new(),
        };
        b.drain();
        b
    }

    fn engine(&mut self, i: usize) -> &mut SimRtpengine {
        &mut self.engines[i].1
    }

    /// Hands every transmit to its rtpengine and collects events.
    fn drain(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.sent.push((t.to, t.bytes.clone()));
            let Some((addr, engine)) = self.engines.iter_mut().find(|(a, _)| *a == t.to) else {
                continue;
            };
            if let SimAnswer::Reply { bytes, after } = engine.handle_datagram(&t.bytes) {
                self.seq += 1;
                self.in_transit.insert((self.now + RTT + after, self.seq), (*addr, bytes));
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs virtual time up to `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let reply_at = self.in_transit.keys().next().map(|k| k.0);
            let timer_at = self.client.poll_timeout();
            let next = [reply_at, timer_at].into_iter().flatten().min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    if reply_at == Some(at) {
                        let key = *self.in_transit.keys().next().unwrap();
                        let (from, bytes) = self.in_transit.remove(&key).unwrap();
                        self.client.handle_datagram(self.now, from, &bytes);
                    } else {
                        self.client.handle_timeout(self.now);
                    }
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn send(&mut self, token: u64, command: Command) {
        self.client.send(self.now, RequestToken(token), command);
        self.drain();
    }

    /// The finished request with `token`.
    fn done(&self, token: u64) -> Option<&Done> {
        self.events.iter().find_map(|e| match e {
            ClientEvent::Done(d) if d.token == Some(RequestToken(token)) => Some(d),
            _ => None,
        })
    }

    fn count(&self, f: impl Fn(&ClientEvent) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

fn offer(call: &str, branch: &str) -> Command {
    Command::Offer(Offer {
        call_id: call.into(),
        from_tag: "ft".into(),
        via_branch: Some(branch.into()),
        sdp: Bytes::from_static(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"),
        options: SdpOptions::default(),
    })
}

fn ok_sdp(d: &Done) -> bool {
    matches!(&d.outcome, Ok(Reply::Ok { body: ReplyBody::Sdp(_), .. }))
}

#[test]
fn a_request_is_answered() {
    let mut b = Bench::new(&["127.0.0.1:2223"], 1);
    b.run_for(10 * MS);
    b.send(1, Command::Ping);
    b.send(2, offer("c1", "z1"));
    b.run_for(10 * MS);
    let ping = b.done(1).unwrap();
    assert_eq!(ping.outcome, Ok(Reply::ok(ReplyBody::Pong)));
    assert_eq!((ping.command, ping.latency, ping.result_label()), (CommandKind::Ping, RTT, "ok"));
    let o = b.done(2).unwrap();
    assert!(ok_sdp(o), "{o:?}");
    assert_eq!(o.instance, Some(InstanceId(0)));
    assert_eq!(b.client.call_instance("c1").map(|x| x.0), Some(InstanceId(0)));
    assert_eq!(b.client.poll_timeout(), None, "nothing left waiting");
    assert_eq!(b.client.in_flight(), 0);
}

#[test]
fn a_lost_request_is_sent_again_with_the_same_cookie() {
    let mut b = Bench::new(&["127.0.0.1:2223"], 2);
    b.run_for(10 * MS);
    b.engine(0).set_silent(true);
    b.sent.clear();
    b.send(1, offer("c1", "z1"));
    b.run_for(150 * MS); // first attempt and one retransmission lost
    b.engine(0).set_silent(false);
    b.run_for(100 * MS);
    assert_eq!(b.sent.len(), 3, "sent, resent, resent");
    assert!(b.sent.iter().all(|s| s == &b.sent[0]), "every attempt is the same datagram");
    let d = b.done(1).unwrap();
    assert!(ok_sdp(d));
    assert_eq!(d.latency, 200 * MS + RTT);
    assert_eq!(b.client.counters().retransmissions, 2);
    assert_eq!(b.count(|e| matches!(e, ClientEvent::InstanceDown { .. })), 0);
}

#[test]
fn a_repeated_cookie_runs_the_command_once() {
    // The reply is lost, not the request: the repeat is answered from
    // rtpengine's cache, and the branch is offered once.
    let mut b = Bench::new(&["127.0.0.1:2223"], 3);
    b.run_for(10 * MS);
    b.send(1, offer("c1", "z1"));
    b.in_transit.clear(); // the reply is lost
    b.run_for(150 * MS);
    assert!(ok_sdp(b.done(1).unwrap()));
    let e = b.engine(0);
    assert_eq!(e.stats().repeats, 1);
    assert_eq!(e.ledger()[&("c1".to_owned(), "z1".to_owned())].offers, 1);
}

#[test]
fn a_silent_instance_fails_over_and_comes_back() {
    let mut b = Bench::new(&["127.0.0.1:2223", "127.0.0.1:2224"], 4);
    b.run_for(10 * MS);
    b.engine(0).set_silent(true);
    b.engine(1).set_silent(true);
    // Whichever instance the call lands on stays silent: the request
    // goes three times to each, then fails.
    b.send(1, offer("c1", "z1"));
    b.run_for(700 * MS);
    let d = b.done(1).unwrap();
    assert_eq!(d.outcome, Err(Failure::Timeout));
    assert_eq!(d.latency, 600 * MS);
    assert_eq!(b.client.counters().failovers, 1);
    assert_eq!(b.count(|e| matches!(e, ClientEvent::InstanceDown { .. })), 2);
    assert_eq!(b.client.calls(), 0, "a call no instance took is forgotten");
    // Now nothing is up: new calls fail at once.
    b.send(2, offer("c2", "z1"));
    assert_eq!(b.done(2).unwrap().outcome, Err(Failure::NoInstance));
    // Probes bring an instance back once it answers.
    b.engine(1).set_silent(false);
    b.run_for(1500 * MS);
    assert_eq!(
        b.count(|e| matches!(e, ClientEvent::InstanceUp { instance: InstanceId(1), .. })),
        1
    );
    let states: Vec<_> = b.client.instances().map(|(_, _, s)| s).collect();
    assert_eq!(states, [InstanceState::Down, InstanceState::Up]);
    b.send(3, offer("c3", "z1"));
    b.run_for(10 * MS);
    assert_eq!(b.done(3).unwrap().instance, Some(InstanceId(1)));
}

#[test]
fn a_new_call_fails_over_to_the_next_instance() {
    let mut b = Bench::new(&["127.0.0.1:2223=1000", "127.0.0.1:2224=1"], 5);
    b.run_for(10 * MS);
    b.engine(0).set_silent(true);
    b.sent.clear();
    b.send(1, offer("c1", "z1"));
    b.send(2, offer("c1", "z2")); // a second leg of the same fork
    b.run_for(400 * MS);
    for t in [1, 2] {
        let d = b.done(t).unwrap();
        assert!(ok_sdp(d), "{d:?}");
        assert_eq!(d.instance, Some(InstanceId(1)));
    }
    let to = |a: &str| b.sent.iter().filter(|(to, _)| to.to_string() == a).count();
    assert_eq!((to("127.0.0.1:2223"), to("127.0.0.1:2224")), (6, 2));
    let cookie = |i: usize| decode_request(&b.sent[i].1).unwrap().0;
    let second_try = b.sent.iter().position(|(to, _)| to.port() == 2224).unwrap();
    assert!((0..6).any(|i| cookie(i) == cookie(second_try)), "failover keeps the cookie");
    assert_eq!(b.client.call_instance("c1").unwrap().0, InstanceId(1));
    // Later commands of the call follow it.
    b.send(3, Command::Delete(Delete::whole_call("c1", "ft")));
    b.run_for(10 * MS);
    assert_eq!(b.done(3).unwrap().instance, Some(InstanceId(1)));
    assert_eq!(b.client.calls(), 0, "the whole-call delete releases the call");
    assert_eq!(b.engine(1).live_calls().count(), 0);
    assert_eq!(b.engine(1).violations(|_, _| false), Vec::<String>::new());
}

#[test]
fn an_answered_call_never_moves() {
    let mut b = Bench::new(&["127.0.0.1:2223", "127.0.0.1:2224"], 6);
    b.run_for(10 * MS);
    b.send(1, offer("c1", "z1"));
    b.run_for(10 * MS);
    let home = b.done(1).unwrap().instance.unwrap();
    b.engine(home.0).set_silent(true);
    b.sent.clear();
    b.send(2, Command::Delete(Delete::whole_call("c1", "ft")));
    b.run_for(400 * MS);
    assert_eq!(b.done(2).unwrap().outcome, Err(Failure::Timeout));
    assert!(b.sent.iter().all(|(to, _)| *to == b.engines[home.0].0), "only its instance is asked");
    assert_eq!(b.client.calls(), 0);
}

#[test]
fn weights_share_new_calls() {
    let mut b = Bench::new(&["127.0.0.1:2223=1", "127.0.0.1:2224=3"], 7);
    b.run_for(10 * MS);
    for n in 0..400 {
        b.send(n, offer(&format!("c{n}"), "z1"));
    }
    b.run_for(10 * MS);
    let on = |i| (0..400).filter(|n| b.done(*n).unwrap().instance == Some(InstanceId(i))).count();
    let (a, c) = (on(0), on(1));
    assert_eq!(a + c, 400);
    assert!((70..=130).contains(&a), "weight 1 of 4: {a} of 400");
}

#[test]
fn bad_datagrams_are_dropped_and_counted() {
    let mut b = Bench::new(&["127.0.0.1:2223", "127.0.0.1:2224"], 8);
    b.run_for(10 * MS);
    b.engine(0).set_silent(true);
    b.engine(1).set_silent(true);
    b.send(1, Command::Ping);
    let (to, req) = b.sent.last().unwrap().clone();
    let (cookie, _) = decode_request(&req).unwrap();
    let other = b.engines.iter().map(|e| e.0).find(|a| *a != to).unwrap();
    let pong = encode_reply(&cookie, &Reply::ok(ReplyBody::Pong));
    let now = b.now;
    b.client.handle_datagram(now, other, &pong); // right cookie, wrong instance
    let forged =
        encode_reply(&media_anchor::Cookie::new("nope").unwrap(), &Reply::ok(ReplyBody::Pong));
    b.client.handle_datagram(now, to, &forged); // unknown cookie
    b.client.handle_datagram(now, to, b"garbage"); // no cookie at all
    b.drain();
    let c = b.client.counters();
    assert_eq!((c.dropped_wrong_source, c.dropped_unknown_cookie, c.dropped_malformed), (1, 1, 1));
    let dropped: Vec<_> = b
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ReplyDropped { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        [DropReason::WrongSource, DropReason::UnknownCookie, DropReason::Malformed]
    );
    assert!(b.done(1).is_none(), "still waiting for its real reply");
    b.client.handle_datagram(now, to, &pong);
    b.drain();
    assert_eq!(b.done(1).unwrap().outcome, Ok(Reply::ok(ReplyBody::Pong)));
}

#[test]
fn error_and_unfitting_replies() {
    let mut b = Bench::new(&["127.0.0.1:2223"], 9);
    b.run_for(10 * MS);
    b.engine(0).set_faults(SimFaults { error_rate: 1.0, ..SimFaults::NONE });
    b.send(1, offer("c1", "z1"));
    b.run_for(10 * MS);
    let d = b.done(1).unwrap();
    assert_eq!(d.outcome, Ok(Reply::Error { reason: "simulated failure".into() }));
    assert_eq!(d.result_label(), "error");
    assert_eq!(b.client.calls(), 0, "an offer refused leaves no call");
    // A reply that does not fit its command fails the request at once.
    b.engine(0).set_silent(true);
    b.send(2, offer("c2", "z1"));
    let (to, req) = b.sent.last().unwrap().clone();
    let (cookie, _) = decode_request(&req).unwrap();
    let now = b.now;
    b.client.handle_datagram(now, to, &encode_reply(&cookie, &Reply::ok(ReplyBody::Pong)));
    b.drain();
    let d = b.done(2).unwrap();
    assert!(matches!(d.outcome, Err(Failure::BadReply(_))), "{d:?}");
    assert_eq!(d.result_label(), "bad_reply");
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut b = Bench::new(&["127.0.0.1:2223", "127.0.0.1:2224=2"], seed);
        for n in 0..20 {
            b.send(n, offer(&format!("c{n}"), "z1"));
        }
        b.run_for(10 * MS);
        b.sent
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
