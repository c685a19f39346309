//! The switch core driven directly, in virtual time: bytes in, outputs out,
//! no sockets and no clock. Focused checks of the contract; whole calls
//! under loss are the simulation's job (`tests/simulation.rs`).

use bytes::Bytes;
use records::{RingGroup, RingGroupDestination, Timestamp, NIL};
use sip_message::digest::{Algorithm, QopAuth, RequestDigest};
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switch::{Carrier, Route, Switch, SwitchConfig};
use switch::{Command, CommandId, CommandOutcome, Datagram, Event, Input, Now, Output, Persist};
use switch::{SwitchState, Token};
use uuid::Uuid;

const US: &str = "192.0.2.1:5060";
const CUSTOMER: Uuid = Uuid::from_u128(0xC0FFEE);

/// A switch, virtual time, and everything it output.
struct World {
    sw: Switch,
    t0: Instant,
    now: Duration,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn carrier(name: &str, address: &str, transport: &str) -> Carrier {
    Carrier {
        name: name.into(),
        address: address.into(),
        transport: transport.into(),
        strip: String::new(),
        prefix: String::new(),
        domain: String::new(),
        headers: Vec::new(),
        username: String::new(),
        password: String::new(),
        inbound_sources: Vec::new(),
        inbound_domain: String::new(),
    }
}

/// Ring group `number` of domain `test` (owned by [`CUSTOMER`]), `ring_all`.
fn ring_group(number: &str, destinations: Vec<RingGroupDestination>) -> RingGroup {
    RingGroup {
        id: records::config_id(&format!("{number}@test")),
        customer_id: CUSTOMER,
        number: number.into(),
        domain: "test".into(),
        ring_method: records::RingMethod::RingAll,
        answer_method: records::AnswerMethod::HangupOthers,
        destinations,
        max_ring_secs: None,
        skip_busy: false,
        send_reason: true,
        origin: records::Origin::Config,
        tm_create: Timestamp::NOT_YET,
        tm_update: Timestamp::NOT_YET,
        tm_delete: Timestamp::NOT_YET,
    }
}

fn state(seed_groups: Vec<RingGroup>, carriers: Vec<Carrier>, routes: Vec<Route>) -> SwitchState {
    let mut trusted = carrier("pstn-in", "198.51.100.1:5060", "udp");
    trusted.inbound_sources = vec!["198.51.100.0/24".parse().expect("net")];
    trusted.inbound_domain = "test".into();
    let mut all = vec![trusted];
    all.extend(carriers);
    SwitchState {
        customers: vec![records::Customer { id: CUSTOMER, name: "c".into(), api_keys: Vec::new() }],
        domains: vec![records::Domain {
            name: "test".into(),
            aliases: Vec::new(),
            customer_id: CUSTOMER,
        }],
        extensions: vec![registrar::extension_with_password("e1", "test", "pw1")],
        bindings: Vec::new(),
        carriers: all,
        routes,
        ring_groups: seed_groups,
        hunt: Vec::new(),
    }
}

impl World {
    fn new(st: SwitchState, seed: u64) -> (World, Vec<Output>) {
        let cfg = SwitchConfig::new(vec![(Transport::Udp, addr(US)), (Transport::Tcp, addr(US))]);
        World::with_config(cfg, st, seed)
    }

    fn with_config(cfg: SwitchConfig, st: SwitchState, seed: u64) -> (World, Vec<Output>) {
        let t0 = Instant::now();
        let now = Now { at: t0, wall: Timestamp::from_micros(1_700_000_000_000_000) };
        let sw = Switch::new(cfg, st, seed, now).expect("switch");
        let mut w = World { sw, t0, now: Duration::ZERO };
        let first = w.drain();
        (w, first)
    }

    fn now(&self) -> Now {
        let wall = Timestamp::from_micros(1_700_000_000_000_000 + self.now.as_micros() as i64);
        Now { at: self.t0 + self.now, wall }
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut v = Vec::new();
        loop {
            match self.sw.poll_output() {
                Output::Timeout(_) => return v,
                o => v.push(o),
            }
        }
    }

    fn input(&mut self, i: Input) -> Vec<Output> {
        let now = self.now();
        self.sw.handle_input(now, i);
        self.drain()
    }

    fn datagram(&mut self, from: &str, text: &str) -> Vec<Output> {
        let peer =
            Peer { transport: Transport::Udp, remote: addr(from), local: addr(US), conn: None };
        self.input(Input::Datagram(Datagram { peer, bytes: Bytes::from(text.to_owned()) }))
    }

    /// Moves virtual time on by `d`, running every timer on the way.
    fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            let next = match self.sw.poll_output() {
                Output::Timeout(at) => at,
                o => {
                    out.push(o);
                    continue;
                }
            };
            let next = next.saturating_duration_since(self.t0);
            if next > end {
                self.now = end;
                return out;
            }
            self.now = next.max(self.now);
            out.extend(self.input(Input::Timeout));
        }
    }
}

fn transmits(out: &[Output]) -> Vec<(Peer, Message, Token)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => {
                let wire = Message::parse(t.message.to_bytes()).expect("what we send parses");
                Some((t.peer, wire, t.token))
            }
            _ => None,
        })
        .collect()
}

fn invite(from: &str, ruri: &str, call_id: &str) -> String {
    let sdp = "v=0\r\no=a 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001@pstn>;tag=c1\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[test]
fn ipv6_udp_inbound_is_stamped() {
    // Moved here from sip-transport with the code that stamps.
    let (mut w, _) = World::new(state(vec![], vec![], vec![]), 1);
    let msg = "OPTIONS sip:[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK6;rport\r\nFrom: <sip:a@[::1]>;tag=1\r\nTo: <sip:[::1]>\r\nCall-ID: v6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let peer = Peer {
        transport: Transport::Udp,
        remote: addr("[::1]:40000"),
        local: addr("[::1]:5060"),
        conn: None,
    };
    let out = w.input(Input::Datagram(Datagram { peer, bytes: Bytes::from(msg) }));
    let t = transmits(&out);
    assert_eq!(t.len(), 1);
    let (to, resp, _) = &t[0];
    let via = resp.top_via().expect("via");
    assert_eq!(via.received(), Some(&b"::1"[..]));
    assert_eq!(via.rport(), Some(Some(40000)));
    assert_eq!(to.remote, addr("[::1]:40000"), "the response goes to received:rport");
}

#[test]
fn same_seed_same_outputs() {
    let run = |seed: u64| {
        let dest = RingGroupDestination {
            kind: records::AddressType::Sip,
            target: "sip:b@203.0.113.9:5070".into(),
            ring_timeout_secs: None,
            delay_secs: None,
        };
        let g = ring_group("800", vec![dest]);
        let (mut w, _) = World::new(state(vec![g], vec![], vec![]), seed);
        let mut all =
            w.datagram("198.51.100.7:5060", &invite("198.51.100.7:5060", "sip:800@test", "d1"));
        all.extend(w.advance(Duration::from_secs(40)));
        all.iter()
            .map(|o| match o {
                Output::Transmit(t) => {
                    format!("{} {}", t.peer, String::from_utf8_lossy(&t.message.to_bytes()))
                }
                o => format!("{o:?}"),
            })
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert!(a.len() > 10, "a call happened: {a:?}");
    assert_eq!(a, run(7), "same seed, same inputs: the same outputs, byte for byte");
    assert_ne!(a, run(8), "another seed: other tags, branches and ids");
}

#[test]
fn send_failure_fails_over_to_the_next_carrier_at_once() {
    let carriers =
        vec![carrier("a", "203.0.113.10:5060", "tcp"), carrier("b", "203.0.113.11:5060", "udp")];
    let routes = vec![Route { prefix: "+1".into(), carriers: vec!["a".into(), "b".into()] }];
    // Carriers may not call out: extension e1 dials, with digest.
    let (mut w, _) = World::new(state(vec![], carriers, routes), 3);
    let caller = "192.0.2.50:5062";
    let mut text = invite(caller, "sip:+15557654321@test", "f1");
    text = text.replace("From: <sip:+15550001@pstn>;tag=c1", "From: <sip:e1@test>;tag=c1");
    let out = w.datagram(caller, &text);
    let (_, challenge, _) = transmits(&out).into_iter().next().expect("407");
    assert_eq!(challenge.status(), Some(407));
    let pa = String::from_utf8_lossy(
        challenge.header(HeaderName::ProxyAuthenticate).expect("challenge"),
    )
    .into_owned();
    let nonce = pa.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let uri = "sip:+15557654321@test";
    let ha1 = registrar::ha1_md5("e1", "test", "pw1");
    let resp = RequestDigest {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        qop: Some(QopAuth { nc: b"00000001", cnonce: b"x", qop: b"auth" }),
        method: b"INVITE",
        uri: uri.as_bytes(),
    }
    .hex(&ha1);
    let auth = format!("Proxy-Authorization: Digest username=\"e1\", realm=\"test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"x\"\r\n");
    let text = text
        .replace("branch=z9hG4bKf1", "branch=z9hG4bKf2")
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Content-Type:", &format!("{auth}Content-Type:"));
    let out = w.datagram(caller, &text);
    let first: Vec<_> = transmits(&out)
        .into_iter()
        .filter(|(_, m, _)| m.method() == Some(&Method::Invite))
        .collect();
    assert_eq!(first.len(), 1, "one carrier at a time");
    let (peer, _, token) = &first[0];
    assert_eq!(peer.remote, addr("203.0.113.10:5060"));
    assert_eq!(peer.transport, Transport::Tcp);
    assert_ne!(*token, Token::NONE, "a transaction's transmit names it");
    // The TCP connection is refused: the next carrier's INVITE leaves now,
    // in the same instant, not after Timer B.
    let out = w.input(Input::SendFailed { token: *token });
    let next: Vec<_> = transmits(&out)
        .into_iter()
        .filter(|(_, m, _)| m.method() == Some(&Method::Invite))
        .collect();
    assert_eq!(next.len(), 1, "{out:?}");
    assert_eq!(next[0].0.remote, addr("203.0.113.11:5060"));
}

#[test]
fn commands_hang_up_a_ringing_groupcall_and_unknown_ids_are_reported() {
    let dest = |t: &str| RingGroupDestination {
        kind: records::AddressType::Sip,
        target: t.into(),
        ring_timeout_secs: None,
        delay_secs: None,
    };
    let g = ring_group("801", vec![dest("sip:x@203.0.113.20"), dest("sip:y@203.0.113.21")]);
    let (mut w, _) = World::new(state(vec![g], vec![], vec![]), 5);
    let caller = "198.51.100.7:5060";
    let out = w.datagram(caller, &invite(caller, "sip:801@test", "h1"));
    let root = out
        .iter()
        .find_map(|o| match o {
            Output::Persist(Persist::Groupcall(g)) if g.master_groupcall_id == NIL => Some(g.id),
            _ => None,
        })
        .expect("root groupcall record");
    // The legs ring.
    for (peer, m, _) in
        transmits(&out).into_iter().filter(|(_, m, _)| m.method() == Some(&Method::Invite))
    {
        let ringing = Message::response_to(&m, 180).to_tag("r").build();
        let from = peer.remote.to_string();
        w.datagram(&from, &String::from_utf8_lossy(&ringing.to_bytes()));
    }
    let out = w
        .input(Input::Command { id: CommandId(1), command: Command::HangupGroupcall { id: root } });
    let t = transmits(&out);
    let cancels = t.iter().filter(|(_, m, _)| m.method() == Some(&Method::Cancel)).count();
    assert_eq!(cancels, 2, "every ringing leg is CANCELed");
    assert!(t.iter().any(|(_, m, _)| m.status() == Some(487)), "the caller gets 487");
    let done = |out: &[Output], want: u64, outcome: CommandOutcome| {
        out.iter().any(|o| {
            matches!(o, Output::Event(Event::CommandDone { id, outcome: got })
                if *id == CommandId(want) && *got == outcome)
        })
    };
    assert!(done(&out, 1, CommandOutcome::Done));
    let command = Command::HangupCall { id: Uuid::from_u128(42) };
    let out = w.input(Input::Command { id: CommandId(2), command });
    assert!(done(&out, 2, CommandOutcome::NotFound), "an id that is not live: {out:?}");
}

/// A binding of e1@test at `at` over UDP, registered until far ahead.
fn binding(at: &str) -> records::Binding {
    records::Binding {
        aor: "e1@test".into(),
        contact: format!("sip:e1@{at}"),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at: Timestamp::from_micros(1_800_000_000_000_000),
        call_id: "reg".into(),
        cseq: 1,
        transport: "UDP".into(),
        source: addr(at),
        local: addr(US),
        user_agent: String::new(),
        node_id: String::new(),
        conn: None,
        unreachable: false,
    }
}

/// A response to `to` from the party at `at` (its Contact).
fn reply(to: &Message, code: u16, tag: &str, sdp: Option<&str>, at: &str) -> String {
    let mut b = Message::response_to(to, code).to_tag(tag);
    if (200..300).contains(&code) {
        b = b.header(HeaderName::Contact, format!("<sip:x@{at}>"));
    }
    if let Some(s) = sdp {
        b = b.body("application/sdp", s.to_owned());
    }
    String::from_utf8_lossy(&b.build().to_bytes()).into_owned()
}

/// A click-to-call from e1@test (rung at its binding first) to
/// sip:b@203.0.113.9:5070.
fn click_to_call_e1_to_b() -> Command {
    Command::StartGroupcall(Box::new(switch::ClickToCall {
        customer_id: CUSTOMER,
        source: records::Address::new(records::AddressType::Endpoint, "e1@test"),
        destinations: vec![switch::ClickDestination {
            address: records::Address::new(records::AddressType::Sip, "sip:b@203.0.113.9:5070"),
            ring_timeout: None,
        }],
        ring_method: records::RingMethod::RingAll,
        answer_method: records::AnswerMethod::HangupOthers,
    }))
}

/// The groupcall and the source's call record that command `id` started.
fn started(out: &[Output], id: CommandId) -> (records::Groupcall, records::Call) {
    out.iter()
        .find_map(|o| match o {
            Output::Event(Event::CommandDone {
                id: done,
                outcome: CommandOutcome::Started { groupcall, call },
            }) if *done == id => Some(((**groupcall).clone(), (**call).clone())),
            _ => None,
        })
        .expect("started")
}

#[test]
fn click_to_call_rings_the_source_first_then_forks_with_its_offer() {
    let mut st = state(vec![], vec![], vec![]);
    st.bindings = vec![binding("192.0.2.60:5060")];
    let (mut w, _) = World::new(st, 9);
    let out = w.input(Input::Command { id: CommandId(7), command: click_to_call_e1_to_b() });
    let (groupcall, call) = started(&out, CommandId(7));
    assert_eq!(groupcall.master_call_id, call.id, "the source's call is the groupcall's master");
    let t = transmits(&out);
    let (to, inv_a, _) =
        t.iter().find(|(_, m, _)| m.method() == Some(&Method::Invite)).expect("INVITE");
    assert_eq!(to.remote, addr("192.0.2.60:5060"), "the source is rung first");
    assert!(inv_a.body().is_empty(), "without an offer");
    assert!(!t.iter().any(|(p, _, _)| p.remote == addr("203.0.113.9:5070")), "no destination yet");
    let offer = "v=0\r\no=e1 1 1 IN IP4 192.0.2.60\r\ns=-\r\nc=IN IP4 192.0.2.60\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let out =
        w.datagram("192.0.2.60:5060", &reply(inv_a, 200, "srcTag", Some(offer), "192.0.2.60:5060"));
    let t = transmits(&out);
    let (_, inv_b, _) = t
        .iter()
        .find(|(p, m, _)| {
            m.method() == Some(&Method::Invite) && p.remote == addr("203.0.113.9:5070")
        })
        .expect("the destination is rung once the source answered");
    assert_eq!(inv_b.body(), offer.as_bytes(), "with the source's offer");
    assert!(!t
        .iter()
        .any(|(p, m, _)| m.method() == Some(&Method::Ack) && p.remote == addr("192.0.2.60:5060")));
    let answer = "v=0\r\no=b 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    let out = w
        .datagram("203.0.113.9:5070", &reply(inv_b, 200, "bTag", Some(answer), "203.0.113.9:5070"));
    let t = transmits(&out);
    let ack_src = t
        .iter()
        .find(|(p, m, _)| m.method() == Some(&Method::Ack) && p.remote == addr("192.0.2.60:5060"))
        .expect("the source's ACK");
    assert_eq!(ack_src.1.body(), answer.as_bytes(), "with the destination's answer");
    assert!(t
        .iter()
        .any(|(p, m, _)| m.method() == Some(&Method::Ack) && p.remote == addr("203.0.113.9:5070")));
    // Hang up through the API: both get a BYE and the records end.
    let command = Command::HangupGroupcall { id: groupcall.id };
    let out = w.input(Input::Command { id: CommandId(8), command });
    let byes =
        transmits(&out).into_iter().filter(|(_, m, _)| m.method() == Some(&Method::Bye)).count();
    assert_eq!(byes, 2, "{out:?}");
}

fn group_800() -> RingGroup {
    ring_group(
        "800",
        vec![RingGroupDestination {
            kind: records::AddressType::Sip,
            target: "sip:b@203.0.113.9:5070".into(),
            ring_timeout_secs: None,
            delay_secs: None,
        }],
    )
}

fn statuses(out: &[Output]) -> Vec<u16> {
    transmits(out).iter().filter_map(|(_, m, _)| m.status()).collect()
}

#[test]
fn overload_sheds_new_invites_statelessly_and_nothing_else() {
    let (mut w, _) = World::new(state(vec![group_800()], vec![], vec![]), 11);
    let carrier = "198.51.100.7:5060";
    let calm = switch::Load { queue_delay: Duration::from_millis(2), queue_depth: 0 };
    let busy = switch::Load { queue_delay: Duration::from_millis(150), queue_depth: 5000 };
    // A call admitted while calm, ringing at the phone.
    w.sw.set_load(calm);
    let first = invite(carrier, "sip:800@test", "ov1");
    let out = w.datagram(carrier, &first);
    let leg = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Invite))
        .expect("the leg's INVITE");
    // Overload begins once the delay stayed past the limit for 100 ms.
    w.sw.set_load(busy);
    w.advance(Duration::from_millis(1100));
    w.sw.set_load(busy);
    let out = w.datagram(carrier, &invite(carrier, "sip:800@test", "ov2"));
    assert!(
        out.iter().any(|o| matches!(o, Output::Event(Event::Overload { began: true, .. }))),
        "{out:?}"
    );
    let sent = transmits(&out);
    assert_eq!(sent.len(), 1, "one stateless 503, no leg: {sent:?}");
    let (peer, resp, token) = &sent[0];
    assert_eq!(resp.status(), Some(503));
    assert_eq!(resp.header(HeaderName::RetryAfter), Some(&b"5"[..]));
    assert_eq!(*token, Token::NONE, "no transaction was spent on it");
    assert_eq!(peer.remote, addr(carrier));
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))), "no record for a shed call");
    // Its ACK is absorbed; its retransmission gets another 503.
    let ack = first.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK");
    let ack = ack.replace("ov1", "ov2");
    assert!(statuses(&w.datagram(carrier, &ack)).is_empty());
    let again = w.datagram(carrier, &invite(carrier, "sip:800@test", "ov2"));
    assert_eq!(statuses(&again), vec![503]);
    // The admitted call's retransmitted INVITE is not shed (100 Trying at
    // most), and the phone's answer goes through to the caller.
    let out = w.datagram(carrier, &first);
    assert!(statuses(&out).iter().all(|&s| s == 100), "{:?}", statuses(&out));
    let ok = reply(&leg.1, 200, "ph", Some("v=0\r\n"), "203.0.113.9:5070");
    let out = w.datagram("203.0.113.9:5070", &ok);
    assert!(statuses(&out).contains(&200), "the caller is answered: {:?}", statuses(&out));
    // OPTIONS are answered.
    let opts = "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKo1\r\nMax-Forwards: 70\r\nFrom: <sip:x@test>;tag=o\r\nTo: <sip:test>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(statuses(&w.datagram(carrier, opts)), vec![200]);
    // Calm again: new calls are taken.
    w.sw.set_load(calm);
    let out = w.datagram(carrier, &invite(carrier, "sip:800@test", "ov3"));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::Overload { began: false, shed: 2, .. }))),
        "{out:?}"
    );
    assert!(transmits(&out).iter().any(|(_, m, _)| m.method() == Some(&Method::Invite)));
    assert_eq!(w.sw.counters().shed_invites, 2);
}

#[test]
fn a_source_beyond_its_rate_is_banned_and_carriers_are_exempt() {
    let st = state(vec![group_800()], vec![], vec![]);
    let t0 = Instant::now();
    let mut cfg = SwitchConfig::new(vec![(Transport::Udp, addr(US))]);
    cfg.admission.source_rate = 3;
    let now = Now { at: t0, wall: Timestamp::from_micros(1_700_000_000_000_000) };
    let mut w =
        World { sw: Switch::new(cfg, st, 5, now).expect("switch"), t0, now: Duration::ZERO };
    w.drain();
    let opts = |from: &str, n: u32| {
        format!("OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKr{n}\r\nMax-Forwards: 70\r\nFrom: <sip:x@test>;tag=o\r\nTo: <sip:test>\r\nCall-ID: r{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    };
    let flood = "192.0.2.66:5060";
    let mut answered = 0;
    let mut events = Vec::new();
    for n in 0..10 {
        let out = w.datagram(flood, &opts(flood, n));
        answered += statuses(&out).len();
        events.extend(out.into_iter().filter_map(|o| match o {
            Output::Event(Event::Security(e)) => Some(e),
            _ => None,
        }));
    }
    assert_eq!(answered, 3, "three in its second, the rest dropped");
    assert_eq!(events.len(), 1, "one event per ban: {events:?}");
    assert_eq!(events[0].name(), "rate_limited");
    let carrier = "198.51.100.7:5060";
    for n in 20..30 {
        assert_eq!(statuses(&w.datagram(carrier, &opts(carrier, n))), vec![200], "carrier {n}");
    }
    assert_eq!(w.sw.counters().rate_limited, 7);
}

/// Every output as text, in order: a transmit as its peer and bytes.
fn as_text(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Transmit(t) => {
                format!("{} {}", t.peer, String::from_utf8_lossy(&t.message.to_bytes()))
            }
            o => format!("{o:?}"),
        })
        .collect()
}

/// The housekeeping that walks tables: NAT keep-alives to every UDP
/// binding (a branch each, from the seeded generator), failed-auth counting
/// in a full table (which counters make room), bans and their ends.
fn housekeeping_run(seed: u64) -> Vec<String> {
    let mut cfg = SwitchConfig::new(vec![(Transport::Udp, addr(US))]);
    cfg.keepalive_interval = Some(Duration::from_secs(10));
    cfg.registrar.ban = registrar::BanConfig {
        max_failures: 2,
        window: Duration::from_secs(60),
        ban_for: Duration::from_secs(30),
        action: registrar::BanAction::Reject,
        max_tracked: 4,
    };
    let mut st = state(vec![], vec![], vec![]);
    st.bindings = (0..12)
        .map(|i| records::Binding {
            aor: format!("k{i}@test"),
            contact: format!("sip:k{i}@192.0.2.{}:5060", 100 + i),
            ..binding(&format!("192.0.2.{}:5060", 100 + i))
        })
        .collect();
    let (mut w, first) = World::with_config(cfg, st, seed);
    let mut all = as_text(&first);
    let register = |from: &str, n: u32| {
        format!("REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKreg{n}\r\nMax-Forwards: 70\r\nFrom: <sip:e1@test>;tag=r{n}\r\nTo: <sip:e1@test>\r\nCall-ID: reg{n}@{from}\r\nCSeq: {n} REGISTER\r\nContact: <sip:e1@{from}>\r\nAuthorization: Digest username=\"e1\", realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
    };
    // Five sources fail in a table of four (the fifth makes room), then
    // four of them fail again: a second failure bans.
    for (n, s) in [1, 2, 3, 4, 5, 2, 3, 4, 1].into_iter().enumerate() {
        let from = format!("203.0.113.{s}:5060");
        all.extend(as_text(&w.datagram(&from, &register(&from, n as u32 + 1))));
        all.extend(as_text(&w.advance(Duration::from_millis(100))));
    }
    // Keep-alives every 10 s; the bans end at 30 s.
    all.extend(as_text(&w.advance(Duration::from_secs(45))));
    all
}

#[test]
fn same_seed_same_housekeeping_outputs() {
    let a = housekeeping_run(21);
    let count = |what: &str| a.iter().filter(|o| o.contains(what)).count();
    assert!(count("<sip:keepalive@") >= 24, "keep-alives to every UDP binding: {a:#?}");
    assert!(count("Banned") >= 1, "a source was banned: {a:#?}");
    assert!(count("Unbanned") >= 1, "a ban ended: {a:#?}");
    for run in 0..3 {
        assert_eq!(a, housekeeping_run(21), "run {run}: the same outputs, in the same order");
    }
}

/// A request from the trusted carrier: `to_tag` makes it in-dialog.
fn request(method: &str, ruri: &str, call_id: &str, cseq: u32, to_tag: Option<&str>) -> String {
    let from = "198.51.100.7:5060";
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!("{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001@pstn>;tag=c1\r\nTo: <sip:800@test>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:c@{from}>\r\nContent-Length: 0\r\n\r\n")
}

/// Every method the codec knows, and an extension.
fn every_method() -> Vec<Method> {
    let known = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE"];
    let more = ["NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "FOO"];
    known.iter().chain(&more).map(|t| Method::from_token(t.as_bytes())).collect()
}

/// The one method list (`sip_message::SUPPORTED`) decides everywhere: a
/// method off it gets 501 with the one `Allow`, outside a dialog and
/// inside; every `Allow` the switch sends (OPTIONS, 501, the leg's INVITE,
/// the caller's 200) is that list; inside a bridged dialog exactly the
/// methods it marks relayed reach the other leg. A second list anywhere
/// (the codec's policy, the B2BUA's relay set or its `Allow`) fails this.
#[test]
fn every_method_is_judged_by_the_one_list() {
    let allow = sip_message::method::allow();
    let allow = allow.as_bytes();
    let (mut w, _) = World::new(state(vec![group_800()], vec![], vec![]), 13);
    let carrier = "198.51.100.7:5060";
    for (n, m) in every_method().iter().enumerate() {
        let ruri = if *m == Method::Options { "sip:192.0.2.1:5060" } else { "sip:nobody@test" };
        let out = w.datagram(carrier, &request(&m.to_string(), ruri, &format!("o{n}"), 1, None));
        let replies = transmits(&out);
        let not_implemented = replies.iter().find(|(_, r, _)| r.status() == Some(501));
        assert_eq!(not_implemented.is_some(), !m.is_supported(), "{m} outside a dialog");
        for (_, r, _) in replies.iter().filter(|(_, r, _)| matches!(r.status(), Some(200 | 501))) {
            assert_eq!(r.header(HeaderName::Allow), Some(allow), "{m}: {r:?}");
        }
    }
    // A bridged call: the caller's 200 and the leg's INVITE carry the list.
    let out = w.datagram(carrier, &invite(carrier, "sip:800@test", "d1"));
    let (_, leg_invite, _) = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Invite))
        .expect("the leg's INVITE");
    assert_eq!(leg_invite.header(HeaderName::Allow), Some(allow));
    let callee = "203.0.113.9:5070";
    let out = w.datagram(callee, &reply(&leg_invite, 200, "leg", Some("v=0\r\n"), callee));
    let (_, ok, _) = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.status() == Some(200))
        .expect("the caller's 200");
    assert_eq!(ok.header(HeaderName::Allow), Some(allow));
    let tag = ok.to_header().expect("To").tag().map(|t| String::from_utf8_lossy(t).into_owned());
    let contact = ok.contacts().expect("Contact");
    let ruri = match contact {
        sip_message::Contacts::List(l) => String::from_utf8_lossy(l[0].uri.raw).into_owned(),
        sip_message::Contacts::Star => unreachable!("a 200's Contact"),
    };
    w.datagram(carrier, &request("ACK", &ruri, "d1", 1, tag.as_deref()));
    // Inside it (a re-INVITE last: its answer would want an ACK).
    let mut inside: Vec<Method> = every_method()
        .into_iter()
        .filter(|m| !matches!(m, Method::Ack | Method::Bye | Method::Cancel | Method::Invite))
        .collect();
    inside.push(Method::Invite);
    for (n, m) in inside.iter().enumerate() {
        let cseq = n as u32 + 2;
        let out = w.datagram(carrier, &request(&m.to_string(), &ruri, "d1", cseq, tag.as_deref()));
        let sent = transmits(&out);
        let relayed: Vec<&Message> = sent
            .iter()
            .filter(|(p, r, _)| p.remote == addr(callee) && r.method() == Some(m))
            .map(|(_, r, _)| r)
            .collect();
        assert_eq!(relayed.len(), usize::from(m.is_relayed_in_dialog()), "{m} inside: {sent:?}");
        let not_implemented = sent.iter().find(|(_, r, _)| r.status() == Some(501));
        assert_eq!(not_implemented.is_some(), !m.is_supported(), "{m} inside: {sent:?}");
        if let Some((_, r, _)) = not_implemented {
            assert_eq!(r.header(HeaderName::Allow), Some(allow), "{m}");
        }
        if let Some(fwd) = relayed.first().filter(|_| *m != Method::Invite) {
            let ok = String::from_utf8_lossy(&Message::response_to(fwd, 200).build().to_bytes())
                .into_owned();
            w.datagram(callee, &ok);
        }
    }
}

/// Settings where nothing stops ringing before Timer B (32 s).
fn rings_past_timer_b() -> SwitchConfig {
    let mut cfg = SwitchConfig::new(vec![(Transport::Udp, addr(US))]);
    cfg.calls.default_ring_timeout = Duration::from_secs(60);
    cfg
}

/// The party at `at` answers `invite` with `status`; `None`: it never
/// answers (Timer B runs out). What the switch output meanwhile.
fn ends_with(w: &mut World, invite: &Message, at: &str, status: Option<u16>) -> Vec<Output> {
    match status {
        Some(code) => w.datagram(at, &reply(invite, code, "end", None, at)),
        None => w.advance(Duration::from_secs(40)),
    }
}

/// The last call record in `out` that `which` picks.
fn last_call(out: &[Output], which: impl Fn(&records::Call) -> bool) -> records::Call {
    out.iter()
        .rev()
        .find_map(|o| match o {
            Output::Persist(Persist::Call(c)) if which(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a call record")
}

/// One leg (group 800) ends with `status` (`None`: no response at all):
/// the last records of the leg and of the caller, and the caller's final.
fn one_leg_ends(status: Option<u16>) -> (records::Call, records::Call, Option<u16>) {
    let st = state(vec![group_800()], vec![], vec![]);
    let (mut w, _) = World::with_config(rings_past_timer_b(), st, 17);
    let carrier = "198.51.100.7:5060";
    let mut out = w.datagram(carrier, &invite(carrier, "sip:800@test", "s1"));
    let (_, leg_invite, _) = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Invite))
        .expect("the leg's INVITE");
    out.extend(ends_with(&mut w, &leg_invite, "203.0.113.9:5070", status));
    let caller_final = transmits(&out)
        .iter()
        .filter(|(p, _, _)| p.remote == addr(carrier))
        .filter_map(|(_, m, _)| m.status())
        .find(|s| *s >= 200);
    let leg = last_call(&out, |c| c.direction == records::Direction::Outgoing);
    let caller = last_call(&out, |c| c.direction == records::Direction::Incoming);
    (leg, caller, caller_final)
}

/// A click-to-call whose source (the party rung first) ends with `status`
/// (`None`: no response at all): the source's last record.
fn source_ends(status: Option<u16>) -> records::Call {
    let mut st = state(vec![], vec![], vec![]);
    st.bindings = vec![binding("192.0.2.60:5060")];
    let (mut w, _) = World::with_config(rings_past_timer_b(), st, 19);
    let mut out = w.input(Input::Command { id: CommandId(1), command: click_to_call_e1_to_b() });
    let id = started(&out, CommandId(1)).1.id;
    let (_, invite, _) = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Invite))
        .expect("the source's INVITE");
    out.extend(ends_with(&mut w, &invite, "192.0.2.60:5060", status));
    last_call(&out, |c| c.id == id)
}

/// One function turns a status into a hangup reason for legs and callers
/// alike (`records::HangupReason::for_status`): every class a leg can end
/// with, the codes it singles out, and no response at all, through the
/// core, for a fork's leg, a click-to-call's source and the inbound
/// caller. The same status gives the same reason on each; 3xx and 503
/// reach the caller as 480 and 500.
#[test]
fn legs_and_callers_get_their_hangup_reason_from_one_table() {
    use records::HangupBy::{Local, Remote};
    use records::HangupReason::{Busy, Cancel, Failed, Noanswer};
    let table = [
        (Some(302), (Remote, Noanswer), 480, Noanswer),
        (Some(400), (Remote, Failed), 400, Failed),
        (Some(404), (Remote, Failed), 404, Failed),
        (Some(408), (Remote, Noanswer), 408, Noanswer),
        (Some(480), (Remote, Noanswer), 480, Noanswer),
        (Some(486), (Remote, Busy), 486, Busy),
        (Some(487), (Remote, Cancel), 487, Cancel),
        (Some(488), (Remote, Failed), 488, Failed),
        (Some(500), (Remote, Failed), 500, Failed),
        (Some(503), (Remote, Failed), 500, Failed),
        (Some(600), (Remote, Busy), 600, Busy),
        (Some(603), (Remote, Failed), 603, Failed),
        (Some(606), (Remote, Failed), 606, Failed),
        (None, (Local, Noanswer), 408, Noanswer),
    ];
    for (status, leg_end, caller_code, caller_reason) in table {
        let (leg, caller, caller_final) = one_leg_ends(status);
        assert_eq!((leg.hangup_by, leg.hangup_reason), leg_end, "{status:?}: the leg");
        let source = source_ends(status);
        assert_eq!((source.hangup_by, source.hangup_reason), leg_end, "{status:?}: the source");
        assert_eq!(caller_final, Some(caller_code), "{status:?}: the caller's final");
        assert_eq!(
            (caller.status, caller.hangup_reason),
            (records::CallStatus::Hangup, caller_reason),
            "{status:?}: the caller"
        );
        assert_eq!(caller_reason, records::HangupReason::for_status(caller_code));
    }
}

/// What a command output, as (persisted records, its outcome).
fn command(w: &mut World, id: u64, command: Command) -> (Vec<Persist>, CommandOutcome) {
    let out = w.input(Input::Command { id: CommandId(id), command });
    let mut persisted = Vec::new();
    for o in out {
        match o {
            Output::Persist(p) => persisted.push(p),
            Output::Event(Event::CommandDone { id: done, outcome }) => {
                assert_eq!(done, CommandId(id));
                return (persisted, outcome);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no outcome for command {id}")
}

#[test]
fn provisioning_commands_are_checked_applied_and_persisted_before_their_outcome() {
    let (mut w, _) = World::new(state(vec![group_800()], vec![], vec![]), 3);
    let mut e = records::ExtensionRecord::from_config(
        registrar::extension_with_password("e2", "test", "pw2"),
        CUSTOMER,
        Timestamp::from_micros(1),
    );
    e.extension.handling.max_calls = Some(1001);
    let (p, outcome) = command(&mut w, 1, Command::PutExtension(Box::new(e.clone())));
    let CommandOutcome::Invalid(why) = outcome else { panic!("{outcome:?}") };
    assert_eq!(why.to_string(), "max_calls: must be at most 1000 (leave it out for no limit)");
    assert!(p.is_empty(), "nothing stored: {p:?}");
    e.extension.handling.max_calls = Some(2);
    let (p, outcome) = command(&mut w, 2, Command::PutExtension(Box::new(e.clone())));
    assert_eq!(outcome, CommandOutcome::Done);
    assert_eq!(p, vec![Persist::Extension(Box::new(e.clone()))]);
    // In effect at once: e2 can be a forward now.
    let mut e1 = records::ExtensionRecord::from_config(
        registrar::extension_with_password("e1", "test", "pw1"),
        CUSTOMER,
        Timestamp::from_micros(1),
    );
    let to_e2 = records::Address::new(records::AddressType::Endpoint, "e2@test");
    e1.extension.handling.forward_busy = Some(to_e2);
    let (_, outcome) = command(&mut w, 3, Command::PutExtension(Box::new(e1)));
    assert_eq!(outcome, CommandOutcome::Done);

    let taken = RingGroup { id: Uuid::from_u128(9), ..group_800() };
    let (p, outcome) = command(&mut w, 4, Command::PutGroup(Box::new(taken)));
    let CommandOutcome::Invalid(why) = outcome else { panic!("{outcome:?}") };
    assert_eq!((why.fault, p.len()), (provisioning::Fault::Taken, 0));
    let g = RingGroup { skip_busy: true, ..group_800() };
    let (p, outcome) = command(&mut w, 5, Command::PutGroup(Box::new(g.clone())));
    assert_eq!((p, outcome), (vec![Persist::RingGroup(Box::new(g.clone()))], CommandOutcome::Done));

    // Removals reach the store even when the switch had nothing.
    let (p, outcome) = command(&mut w, 6, Command::RemoveGroup { id: g.id });
    assert_eq!((p, outcome), (vec![Persist::RingGroupRemoved { id: g.id }], CommandOutcome::Done));
    let (p, outcome) = command(&mut w, 7, Command::RemoveGroup { id: g.id });
    assert_eq!(
        (p, outcome),
        (vec![Persist::RingGroupRemoved { id: g.id }], CommandOutcome::NotFound)
    );
    let gone = Persist::ExtensionRemoved { name: "e2".into(), domain: "test".into() };
    let remove = || Command::RemoveExtension { name: "e2".into(), domain: "test".into() };
    let (p, outcome) = command(&mut w, 8, remove());
    assert_eq!((p, outcome), (vec![gone.clone()], CommandOutcome::Done));
    let (p, outcome) = command(&mut w, 9, remove());
    assert_eq!((p, outcome), (vec![gone], CommandOutcome::NotFound));
}

// ----- pickers and busy lamps, in virtual time ------------------------------

/// The caller (a trusted carrier source), the members' phones, the second
/// phone of e3 that picks up, and e1's phone with busy lamps.
const OFFICE_CALLER: &str = "198.51.100.7:5060";
const E2: &str = "192.0.2.62:5060";
const E3: &str = "192.0.2.63:5060";
const PICKER: &str = "192.0.2.73:5060";
const WATCHER: &str = "192.0.2.71:5060";

fn endpoint(aor: &str) -> RingGroupDestination {
    RingGroupDestination {
        kind: records::AddressType::Endpoint,
        target: aor.into(),
        ring_timeout_secs: None,
        delay_secs: None,
    }
}

/// Group 800 rings e2 and e3 (registered); e1 watches, e3 picks up.
fn office_state() -> SwitchState {
    let mut st = state(
        vec![ring_group("800", vec![endpoint("e2@test"), endpoint("e3@test")])],
        vec![],
        vec![],
    );
    st.extensions.push(registrar::extension_with_password("e2", "test", "pw2"));
    st.extensions.push(registrar::extension_with_password("e3", "test", "pw3"));
    let bind = |aor: &str, at: &str| records::Binding {
        aor: format!("{aor}@test"),
        contact: format!("sip:{aor}@{at}"),
        ..binding(at)
    };
    st.bindings = vec![bind("e2", E2), bind("e3", E3)];
    st
}

/// Sends `text` (CSeq n, its branch ending in n) from `at`, then again
/// (CSeq n+1) with the digest of `user` (password `pw`) over the 407: the
/// outputs of both.
fn authorized(w: &mut World, at: &str, text: &str, (user, pw): (&str, &str)) -> Vec<Output> {
    let mut out = w.datagram(at, text);
    let challenge = transmits(&out)
        .into_iter()
        .map(|(_, m, _)| m)
        .find(|m| m.status() == Some(407))
        .expect("407");
    let pa = String::from_utf8_lossy(challenge.header(HeaderName::ProxyAuthenticate).expect("pa"))
        .into_owned();
    let nonce = pa.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let (method, rest) = text.split_once(' ').expect("method");
    let uri = rest.split(' ').next().expect("uri");
    let resp = RequestDigest {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        qop: Some(QopAuth { nc: b"00000001", cnonce: b"x", qop: b"auth" }),
        method: method.as_bytes(),
        uri: uri.as_bytes(),
    }
    .hex(&registrar::ha1_md5(user, "test", pw));
    let auth = format!("Proxy-Authorization: Digest username=\"{user}\", realm=\"test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"x\"\r\n");
    let n: u32 = text
        .split("CSeq: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("CSeq");
    let again = text
        .replacen(&format!("{n};rport"), &format!("{};rport", n + 1), 1)
        .replacen(&format!("CSeq: {n} "), &format!("CSeq: {} ", n + 1), 1)
        .replacen("Content-Length:", &format!("{auth}Content-Length:"), 1);
    out.extend(w.datagram(at, &again));
    out
}

/// A SUBSCRIBE from e1's phone to `user`'s dialogs, with CSeq `seq`; a
/// refresh when `to_tag` is the switch's tag.
fn subscribe_text(call_id: &str, (user, to_tag): (&str, &str), expires: u32, seq: u32) -> String {
    let tag = if to_tag.is_empty() { String::new() } else { format!(";tag={to_tag}") };
    format!(
        "SUBSCRIBE sip:{user}@test SIP/2.0\r\nVia: SIP/2.0/UDP {WATCHER};branch=z9hG4bK{call_id}{seq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:e1@test>;tag=w{call_id}\r\nTo: <sip:{user}@test>{tag}\r\nCall-ID: {call_id}\r\nCSeq: {seq} SUBSCRIBE\r\nContact: <sip:e1@{WATCHER}>\r\nEvent: dialog\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An ACK from `at` for `resp` (a final response to an INVITE): in the
/// dialog for a 2xx, hop by hop (its Via) otherwise.
fn ack_for(resp: &Message, at: &str) -> String {
    let h = |n| String::from_utf8_lossy(resp.header(n).unwrap_or_default()).into_owned();
    let seq = resp.cseq().map(|c| c.seq).unwrap_or(1);
    let (ruri, via) = if resp.status().is_some_and(|s| s < 300) {
        let contact = h(HeaderName::Contact);
        let target = contact.trim_matches(|c| c == '<' || c == '>').to_owned();
        (target, format!("SIP/2.0/UDP {at};branch=z9hG4bKack{seq}{}", h(HeaderName::CallId)))
    } else {
        ("sip:x@test".to_owned(), h(HeaderName::Via))
    };
    format!(
        "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} ACK\r\nContent-Length: 0\r\n\r\n",
        h(HeaderName::From),
        h(HeaderName::To),
        h(HeaderName::CallId)
    )
}

/// What the phones saw, and the invariants broken.
#[derive(Default)]
struct Office {
    /// INVITEs the members' phones got, by phone, not answered yet.
    ringing: Vec<(String, Message)>,
    /// 2xx To tags the caller got.
    caller_answers: Vec<String>,
    /// The 2xx the caller got (to hang up with).
    caller_ok: Option<Message>,
    picker_answered: bool,
    /// Subscriptions accepted (Call-ID, the switch's tag), and those ended
    /// by a NOTIFY.
    subscribed: Vec<(String, String)>,
    ended: Vec<String>,
    /// The answer of each groupcall, once set.
    answers: Vec<(Uuid, Uuid)>,
    /// Leg call records that were answered, by groupcall.
    answered_legs: Vec<(Uuid, Uuid)>,
    broken: Vec<String>,
}

impl Office {
    /// Plays every phone's part in `out` (and in what that causes).
    fn react(&mut self, w: &mut World, out: Vec<Output>) {
        let mut queue = std::collections::VecDeque::from(out);
        while let Some(o) = queue.pop_front() {
            let more = match o {
                Output::Transmit(t) => self.phone(w, &t.peer.remote.to_string(), &t.message),
                Output::Persist(p) => {
                    self.record(&p);
                    Vec::new()
                }
                _ => Vec::new(),
            };
            queue.extend(more);
        }
    }

    fn record(&mut self, p: &Persist) {
        match p {
            Persist::Groupcall(g) if g.answer_call_id != NIL => {
                match self.answers.iter().find(|(id, _)| *id == g.id) {
                    Some((_, a)) if *a != g.answer_call_id => {
                        self.broken.push(format!("groupcall {} answered twice", g.id))
                    }
                    Some(_) => {}
                    None => self.answers.push((g.id, g.answer_call_id)),
                }
            }
            Persist::Call(c) if c.groupcall_id != NIL && !c.tm_progressing.is_not_yet() => {
                if !self.answered_legs.contains(&(c.groupcall_id, c.id)) {
                    self.answered_legs.push((c.groupcall_id, c.id));
                }
                let n = self.answered_legs.iter().filter(|(g, _)| *g == c.groupcall_id).count();
                if n > 1 {
                    self.broken.push(format!("groupcall {}: {n} legs answered", c.groupcall_id));
                }
            }
            _ => {}
        }
    }

    /// What the phone at `at` does with `m`.
    fn phone(&mut self, w: &mut World, at: &str, m: &Message) -> Vec<Output> {
        let method = m.method().cloned();
        let status = m.status();
        let cseq = m.cseq().map(|c| c.method).ok();
        match (at, method, status) {
            (E2 | E3, Some(Method::Invite), _) => {
                let tag = if at == E2 { "e2tag" } else { "e3tag" };
                self.ringing.push((at.to_owned(), m.clone()));
                w.datagram(at, &reply(m, 180, tag, None, at))
            }
            (E2 | E3, Some(Method::Cancel), _) => {
                let mut out = w.datagram(at, &reply(m, 200, "x", None, at));
                let cid = m.call_id().map(|c| c.to_vec()).unwrap_or_default();
                if let Some(i) = self.ringing.iter().position(|(p, inv)| {
                    p == at && inv.call_id().map(|c| c.to_vec()).unwrap_or_default() == cid
                }) {
                    let (_, inv) = self.ringing.remove(i);
                    let tag = if at == E2 { "e2tag" } else { "e3tag" };
                    out.extend(w.datagram(at, &reply(&inv, 487, tag, None, at)));
                }
                out
            }
            (_, Some(Method::Bye), _) => w.datagram(at, &reply(m, 200, "x", None, at)),
            (WATCHER, Some(Method::Notify), _) => {
                self.notified(m);
                w.datagram(at, &reply(m, 200, "x", None, at))
            }
            (WATCHER, None, Some(200)) if cseq == Some(Method::Subscribe) => {
                let cid = String::from_utf8_lossy(m.call_id().unwrap_or_default()).into_owned();
                let tag = String::from_utf8_lossy(m.to_tag().unwrap_or_default()).into_owned();
                if !self.subscribed.iter().any(|(c, _)| *c == cid) {
                    self.subscribed.push((cid, tag));
                }
                Vec::new()
            }
            (OFFICE_CALLER | PICKER, None, Some(s)) if s >= 200 && cseq == Some(Method::Invite) => {
                if (200..300).contains(&s) {
                    let tag = String::from_utf8_lossy(m.to_tag().unwrap_or_default()).into_owned();
                    if at == OFFICE_CALLER {
                        if !self.caller_answers.contains(&tag) {
                            self.caller_answers.push(tag);
                        }
                        self.caller_ok = Some(m.clone());
                    } else {
                        self.picker_answered = true;
                    }
                }
                w.datagram(at, &ack_for(m, at))
            }
            _ => Vec::new(),
        }
    }

    fn notified(&mut self, n: &Message) {
        let cid = String::from_utf8_lossy(n.call_id().unwrap_or_default()).into_owned();
        let state = n
            .headers()
            .find(|h| h.raw_name.eq_ignore_ascii_case(b"subscription-state"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .unwrap_or_default();
        if self.ended.contains(&cid) {
            self.broken.push(format!("NOTIFY in {cid} after its subscription ended: {state}"));
        }
        if state.starts_with("terminated") && !self.ended.contains(&cid) {
            self.ended.push(cid);
        }
    }

    /// Advances virtual time to `to`, in steps, playing every phone.
    fn until(&mut self, w: &mut World, to: Duration) {
        while w.now < to {
            let step = (to - w.now).min(Duration::from_millis(50));
            let out = w.advance(step);
            self.react(w, out);
        }
    }
}

/// One seed: e1 watches e2 and group 800; a carrier call rings 800; at
/// random instants e2 answers, e3's other phone picks up (group or
/// directed), the caller gives up, a lamp unsubscribes; then everything
/// runs out.
fn office_run(seed: u64) -> Office {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut w, first) = World::new(office_state(), seed);
    let mut o = Office::default();
    o.react(&mut w, first);
    let exp = rng.gen_range(60..=120);
    for (cid, user) in [("lamp-e2", "e2"), ("lamp-800", "800")] {
        let text = subscribe_text(cid, (user, ""), exp, 1);
        let out = authorized(&mut w, WATCHER, &text, ("e1", "pw1"));
        o.react(&mut w, out);
    }
    o.until(&mut w, Duration::from_millis(100));
    let out = w.datagram(OFFICE_CALLER, &invite(OFFICE_CALLER, "sip:800@test", "office-call"));
    o.react(&mut w, out);
    // Each step at its own instant (ms), or never.
    let at =
        |rng: &mut rand::rngs::StdRng, p: f64| rng.gen_bool(p).then(|| rng.gen_range(150..3000u64));
    let mut steps: Vec<(u64, u8)> = Vec::new();
    steps.extend(at(&mut rng, 0.5).map(|t| (t, 0)));
    steps.extend(at(&mut rng, 0.7).map(|t| (t, 1)));
    steps.extend(at(&mut rng, 0.2).map(|t| (t, 2)));
    steps.extend(at(&mut rng, 0.3).map(|t| (t, 3)));
    steps.sort();
    let directed = rng.gen_bool(0.5);
    for (t, what) in steps {
        o.until(&mut w, Duration::from_millis(t));
        let out = match what {
            0 => match o.ringing.iter().position(|(p, _)| p == E2) {
                Some(i) => {
                    let (_, inv) = o.ringing.remove(i);
                    let sdp = "v=0\r\no=e2 1 1 IN IP4 192.0.2.62\r\ns=-\r\nc=IN IP4 192.0.2.62\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
                    w.datagram(E2, &reply(&inv, 200, "e2tag", Some(sdp), E2))
                }
                None => Vec::new(),
            },
            1 => {
                let code = if directed { "**e2" } else { "*8" };
                let text = invite(PICKER, &format!("sip:{code}@test"), "office-pick")
                    .replace("From: <sip:+15550001@pstn>;tag=c1", "From: <sip:e3@test>;tag=p1")
                    .replace("branch=z9hG4bKoffice-pick", "branch=z9hG4bKoffice-pick1");
                authorized(&mut w, PICKER, &text, ("e3", "pw3"))
            }
            2 => {
                let text = invite(OFFICE_CALLER, "sip:800@test", "office-call")
                    .replacen("INVITE sip:800@test", "CANCEL sip:800@test", 1)
                    .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
                let head = text.split("Content-Type:").next().unwrap_or_default().to_owned();
                w.datagram(OFFICE_CALLER, &format!("{head}Content-Length: 0\r\n\r\n"))
            }
            _ => {
                // e1 unsubscribes from e2's lamp (Expires: 0).
                let tag = o.subscribed.iter().find(|(c, _)| c == "lamp-e2").map(|(_, t)| t.clone());
                let text = subscribe_text("lamp-e2", ("e2", &tag.unwrap_or_default()), 0, 3);
                authorized(&mut w, WATCHER, &text, ("e1", "pw1"))
            }
        };
        o.react(&mut w, out);
    }
    // The caller hangs up an answered call a little later.
    o.until(&mut w, Duration::from_secs(5));
    if let Some(ok) = o.caller_ok.clone() {
        let bye =
            ack_for(&ok, OFFICE_CALLER).replace("ACK ", "BYE ").replace(" ACK\r\n", " BYE\r\n");
        let bye = bye
            .replace(&format!("CSeq: {} BYE", 1), "CSeq: 2 BYE")
            .replace("branch=z9hG4bKack", "branch=z9hG4bKbye");
        let out = w.datagram(OFFICE_CALLER, &bye);
        o.react(&mut w, out);
    }
    o.until(&mut w, Duration::from_secs(300));
    o
}

#[test]
fn pickers_and_lamps_keep_one_answer_and_every_subscription_ends() {
    let mut pickups = 0;
    for seed in 1..=40 {
        let o = office_run(seed);
        assert!(o.broken.is_empty(), "seed {seed}: {:?}", o.broken);
        assert!(o.caller_answers.len() <= 1, "seed {seed}: caller answered {:?}", o.caller_answers);
        assert_eq!(o.subscribed.len(), 2, "seed {seed}: both lamps subscribed");
        for (cid, _) in &o.subscribed {
            assert!(o.ended.contains(cid), "seed {seed}: subscription {cid} never ended");
        }
        if o.picker_answered {
            assert_eq!(o.caller_answers.len(), 1, "seed {seed}: a pickup answers the caller");
        }
        pickups += usize::from(o.picker_answered);
    }
    assert!(pickups > 0, "some seeds picked up");
}

// ----- media anchoring (a simulated rtpengine) ------------------------------

use media_anchor::{
    Anchoring, InstanceSpec, MediaSettings, OnFailure, Profile, RtpengineSettings, SimAnswer,
    SimFaults, SimRtpengine,
};

/// rtpengine's ng address and the address its SDPs name.
const NG: &str = "192.0.2.50:2223";
const RELAY_IP: &str = "192.0.2.50";
/// The caller's media address (in [`invite`]'s SDP).
const CALLER_MEDIA: &str = "198.51.100.7";

/// A switch anchoring every leg through the rtpengine at [`NG`], with
/// ring group 800 over two destinations: b (203.0.113.9) and c
/// (203.0.113.10).
fn media_world(on_failure: OnFailure, seed: u64) -> (World, Vec<Output>) {
    let mut cfg = SwitchConfig::new(vec![(Transport::Udp, addr(US)), (Transport::Tcp, addr(US))]);
    let mut ng = RtpengineSettings::new(vec![InstanceSpec { addr: addr(NG), weight: 1 }]);
    ng.timeout = Duration::from_millis(200);
    ng.retries = 1;
    ng.on_failure = on_failure;
    cfg.media =
        MediaSettings::Rtpengine { rtpengine: ng, default: Anchoring::Anchored(Profile::Auto) };
    let dest = |target: &str| RingGroupDestination {
        kind: records::AddressType::Sip,
        target: target.into(),
        ring_timeout_secs: None,
        delay_secs: None,
    };
    let group =
        ring_group("800", vec![dest("sip:b@203.0.113.9:5070"), dest("sip:c@203.0.113.10:5070")]);
    World::with_config(cfg, state(vec![group], Vec::new(), Vec::new()), seed)
}

/// [`media_world`] with its simulated rtpengine (seeded with `seed` too),
/// the switch's first pings answered.
fn media_started(on_failure: OnFailure, seed: u64) -> (World, SimRtpengine) {
    let mut rtp = SimRtpengine::new(RELAY_IP.parse().expect("ip"), SimFaults::NONE, seed);
    let (mut w, first) = media_world(on_failure, seed);
    through(&mut w, &mut rtp, first);
    (w, rtp)
}

/// Hands every ng datagram of `out` to `rtp` and its replies back to the
/// switch, until no more come; returns the other outputs, in order.
fn through(w: &mut World, rtp: &mut SimRtpengine, out: Vec<Output>) -> Vec<Output> {
    let mut pending: std::collections::VecDeque<Output> = out.into();
    let mut rest = Vec::new();
    while let Some(o) = pending.pop_front() {
        let Output::Media(t) = o else {
            rest.push(o);
            continue;
        };
        assert_eq!(t.to, addr(NG));
        if let SimAnswer::Reply { bytes, .. } = rtp.handle_datagram(&t.bytes) {
            pending.extend(w.input(Input::MediaDatagram { from: addr(NG), bytes }));
        }
    }
    rest
}

/// A datagram from `from` to the switch, through `rtp`.
fn exchange(w: &mut World, rtp: &mut SimRtpengine, from: &str, text: &str) -> Vec<Output> {
    let out = w.datagram(from, text);
    through(w, rtp, out)
}

/// Moves virtual time on by `d` in 50 ms steps, through `rtp`.
fn advance_through(w: &mut World, rtp: &mut SimRtpengine, d: Duration) -> Vec<Output> {
    let mut out = Vec::new();
    for _ in 0..d.as_millis().div_ceil(50) {
        let step = w.advance(Duration::from_millis(50));
        out.extend(through(w, rtp, step));
    }
    out
}

fn media_count(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Media(_))).count()
}

/// The INVITEs sent to the legs (retransmissions left out), in order.
fn leg_invites(out: &[Output]) -> Vec<Message> {
    let mut seen = Vec::new();
    transmits(out)
        .into_iter()
        .filter(|(p, m, _)| m.method() == Some(&Method::Invite) && p.remote.port() == 5070)
        .filter(|(_, m, _)| {
            let id = m.call_id().map(<[u8]>::to_vec).unwrap_or_default();
            !seen.contains(&id) && {
                seen.push(id);
                true
            }
        })
        .map(|(_, m, _)| m)
        .collect()
}

fn sdp_text(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

const CALLER: &str = "198.51.100.1:5060";

#[test]
fn an_anchored_fork_offers_per_leg_answers_the_winner_and_deletes_every_offer_once() {
    let (mut w, mut rtp) = media_started(OnFailure::Reject, 7);
    // The INVITE: one offer per leg goes out, and no leg INVITE before
    // its offer's reply.
    let out = w.datagram(CALLER, &invite(CALLER, "sip:800@test", "m1"));
    assert_eq!(media_count(&out), 2, "{out:?}");
    assert!(leg_invites(&out).is_empty(), "no INVITE before the offers' replies");
    let out = through(&mut w, &mut rtp, out);
    let invites = leg_invites(&out);
    assert_eq!(invites.len(), 2);
    for i in &invites {
        let s = sdp_text(i);
        assert!(s.contains(&format!("c=IN IP4 {RELAY_IP}")) && !s.contains(CALLER_MEDIA), "{s}");
        // The leg's record names rtpengine and the address offered to it.
        let offered = media_anchor::audio_address(i.body()).expect("an audio address");
        let leg = last_call(&out, |c| c.media_address == offered.to_string());
        assert_eq!((leg.media_anchor.as_str(), leg.direction), (NG, records::Direction::Outgoing));
    }
    let (b, c) = (&invites[0], &invites[1]);
    // c rings, b answers: the caller's 2xx carries rtpengine's answer.
    exchange(
        &mut w,
        &mut rtp,
        "203.0.113.10:5070",
        &reply(c, 180, "tagc", None, "203.0.113.10:5070"),
    );
    let b_sdp = "v=0\r\no=b 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    let out =
        w.datagram("203.0.113.9:5070", &reply(b, 200, "tagb", Some(b_sdp), "203.0.113.9:5070"));
    assert_eq!(statuses(&out), Vec::<u16>::new(), "the 2xx waits for the answer");
    let out = through(&mut w, &mut rtp, out);
    let ok = transmits(&out)
        .into_iter()
        .find(|(p, m, _)| m.status() == Some(200) && p.remote == addr(CALLER))
        .expect("the caller's 2xx")
        .1;
    let s = sdp_text(&ok);
    assert!(s.contains(&format!("c=IN IP4 {RELAY_IP}")) && !s.contains("203.0.113.9"), "{s}");
    // The caller's record: rtpengine, and the address it was answered with.
    let answered = media_anchor::audio_address(ok.body()).expect("an audio address").to_string();
    let caller = last_call(&out, |c| c.direction == records::Direction::Incoming);
    assert_eq!((caller.media_anchor.as_str(), caller.media_address), (NG, answered));
    // c is CANCELed and ends (487): its branch is deleted.
    let cancel = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Cancel))
        .expect("CANCEL to c")
        .1;
    exchange(
        &mut w,
        &mut rtp,
        "203.0.113.10:5070",
        &reply(&cancel, 200, "tagc", None, "203.0.113.10:5070"),
    );
    exchange(
        &mut w,
        &mut rtp,
        "203.0.113.10:5070",
        &reply(c, 487, "tagc", None, "203.0.113.10:5070"),
    );
    // The caller's ACK and BYE; b's 200 to our BYE ends the call.
    let to = ok.header(HeaderName::To).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap();
    let ack = format!("ACK sip:x@{US} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKack1\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001@pstn>;tag=c1\r\nTo: {to}\r\nCall-ID: m1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    exchange(&mut w, &mut rtp, CALLER, &ack);
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("z9hG4bKack1", "z9hG4bKbye1");
    let out = exchange(&mut w, &mut rtp, CALLER, &bye);
    let leg_bye = transmits(&out)
        .into_iter()
        .find(|(_, m, _)| m.method() == Some(&Method::Bye))
        .expect("BYE to b")
        .1;
    exchange(
        &mut w,
        &mut rtp,
        "203.0.113.9:5070",
        &reply(&leg_bye, 200, "tagb", None, "203.0.113.9:5070"),
    );
    advance_through(&mut w, &mut rtp, Duration::from_secs(40));
    // Every offer deleted exactly once, never the winner by its branch,
    // nothing left at rtpengine or in the switch.
    let winner = |call: &str, branch: &str| {
        rtp.ledger().get(&(call.to_owned(), branch.to_owned())).and_then(|l| l.to_tag.as_deref())
            == Some("tagb")
    };
    assert_eq!(rtp.violations(winner), Vec::<String>::new());
    assert_eq!(rtp.ledger().len(), 2, "two branches offered");
    assert_eq!(rtp.live_calls().count(), 0);
    assert_eq!(w.sw.media_calls(), 0);
    assert!(w.sw.is_idle());
}

/// The caller's INVITE to group 800 with rtpengine failing per `faults`
/// (or silent); the outputs over `wait` of virtual time.
fn failing_call(on_failure: OnFailure, faults: Option<SimFaults>, wait: Duration) -> Vec<Output> {
    let (mut w, mut rtp) = media_started(on_failure, 9);
    match faults {
        Some(f) => rtp.set_faults(f),
        None => rtp.set_silent(true),
    }
    let out = w.datagram(CALLER, &invite(CALLER, "sip:800@test", "m2"));
    let mut out = through(&mut w, &mut rtp, out);
    out.extend(advance_through(&mut w, &mut rtp, wait));
    out
}

#[test]
fn an_error_reply_or_silence_gets_503_or_the_call_unanchored() {
    let errors = SimFaults { error_rate: 1.0, ..SimFaults::NONE };
    // reject: 503 to the caller, no leg dialed.
    for faults in [Some(errors), None] {
        let out = failing_call(OnFailure::Reject, faults, Duration::from_secs(2));
        assert!(leg_invites(&out).is_empty(), "{faults:?}");
        assert!(statuses(&out).contains(&503), "{faults:?}: {:?}", statuses(&out));
    }
    // passthrough: the legs get the caller's own offer.
    for faults in [Some(errors), None] {
        let out = failing_call(OnFailure::Passthrough, faults, Duration::from_secs(2));
        let invites = leg_invites(&out);
        assert_eq!(invites.len(), 2, "{faults:?}");
        assert!(invites.iter().all(|i| sdp_text(i).contains(CALLER_MEDIA)));
        assert!(!statuses(&out).contains(&503));
    }
}

#[test]
fn a_reply_with_a_wrong_cookie_or_from_elsewhere_is_dropped() {
    let (mut w, mut rtp) = media_started(OnFailure::Reject, 11);
    let out = w.datagram(CALLER, &invite(CALLER, "sip:800@test", "m3"));
    let offers: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Media(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let SimAnswer::Reply { bytes, .. } = rtp.handle_datagram(&offers[0].bytes) else {
        panic!("no reply")
    };
    // The right reply from another address, then a cookie nobody sent.
    let elsewhere =
        w.input(Input::MediaDatagram { from: addr("192.0.2.66:2223"), bytes: bytes.clone() });
    let mut forged = b"forged-cookie".to_vec();
    forged.extend_from_slice(&bytes[bytes.iter().position(|&c| c == b' ').unwrap()..]);
    let unknown = w.input(Input::MediaDatagram { from: addr(NG), bytes: Bytes::from(forged) });
    let garbage =
        w.input(Input::MediaDatagram { from: addr(NG), bytes: Bytes::from_static(b"\xff\x00") });
    for out in [&elsewhere, &unknown, &garbage] {
        assert!(leg_invites(out).is_empty(), "{out:?}");
    }
    // The real reply lets the leg go.
    let out = w.input(Input::MediaDatagram { from: addr(NG), bytes });
    assert_eq!(leg_invites(&out).len(), 1);
}
