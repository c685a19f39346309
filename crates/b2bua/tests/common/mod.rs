//! A switch-side world for the B2BUA tests: a `CallManager` and a
//! `TransactionLayer` in virtual time, and scripted far ends built with
//! sip-message. Everything sent is serialised and parsed again, as the far
//! end would see it.
#![allow(dead_code)]

use b2bua::{B2buaConfig, CallEvent, CallManager, CallRef, DialTarget, LegRef, LocalContact};
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use sip_transaction::{Config, Event, TransactionLayer};
use std::time::{Duration, Instant};

pub const SDP_CALLER: &str = "v=0\r\no=alice 1 1 IN IP4 198.51.100.10\r\ns=-\r\n\
    c=IN IP4 198.51.100.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
pub const SDP_BOB: &str = "v=0\r\no=bob 7 7 IN IP4 198.51.100.20\r\ns=-\r\n\
    c=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
pub const SDP_CAROL: &str = "v=0\r\no=carol 9 9 IN IP4 198.51.100.30\r\ns=-\r\n\
    c=IN IP4 198.51.100.30\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

pub const CALLER_CALL_ID: &str = "caller-call-1@a.example";
pub const OUR_ADDR: &str = "203.0.113.1:5060";
pub const REASON: &str = r#"SIP;cause=200;text="Call completed elsewhere""#;

pub fn peer(remote: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: remote.parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        conn: None,
    }
}

pub fn caller_peer() -> Peer {
    peer("192.0.2.10:5060")
}

/// Bob (leg A) and Carol (leg B).
pub fn peer_a() -> Peer {
    peer("192.0.2.20:5060")
}

pub fn peer_b() -> Peer {
    peer("192.0.2.30:5060")
}

pub fn cfg() -> B2buaConfig {
    B2buaConfig::default()
}

pub fn locals() -> Vec<LocalContact> {
    vec![
        LocalContact { transport: Transport::Udp, addr: OUR_ADDR.parse().unwrap() },
        LocalContact { transport: Transport::Tcp, addr: OUR_ADDR.parse().unwrap() },
    ]
}

pub fn target(user: &str, p: Peer) -> DialTarget {
    DialTarget {
        request_uri: format!("sip:{user}@{}", p.remote),
        to: format!("<sip:{user}@b.example>"),
        from: "\"Alice\" <sip:alice@a.example>".to_owned(),
        next_hop: p,
        credentials: None,
        extra_headers: vec![("X-Leg".to_owned(), user.to_owned())],
        sdp: None,
    }
}

/// Serialises and parses again.
pub fn wire(m: &Message) -> Message {
    Message::parse(m.to_bytes()).expect("re-parse")
}

/// The caller's INVITE (offer unless `sdp` is `None`).
pub fn caller_invite(sdp: Option<&str>, extra: &[(&str, &str)]) -> Message {
    let mut b = Message::request(Method::Invite, "sip:ring@203.0.113.1")
        .header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport")
        .header(HeaderName::Via, "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinner")
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::RecordRoute, "<sip:rr.a.example;lr>")
        .header(HeaderName::From, "\"Alice\" <sip:alice@a.example>;tag=atag")
        .header(HeaderName::To, "<sip:ring@203.0.113.1>")
        .header(HeaderName::CallId, CALLER_CALL_ID)
        .header(HeaderName::CSeq, "10 INVITE")
        .header(HeaderName::Contact, "<sip:alice@192.0.2.10:5060>");
    for (n, v) in extra {
        b = b.header_named(n, v.to_string());
    }
    if let Some(s) = sdp {
        b = b.body("application/sdp", s.to_owned());
    }
    wire(&b.build())
}

/// A response of a far end to `req`.
pub fn answer(
    req: &Message,
    code: u16,
    tag: Option<&str>,
    contact: Option<&str>,
    body: Option<&str>,
) -> Message {
    let mut b = Message::response_to(req, code);
    if let Some(t) = tag {
        b = b.to_tag(t);
    }
    if let Some(c) = contact {
        b = b.header(HeaderName::Contact, c.to_owned());
    }
    if let Some(s) = body {
        b = b.body("application/sdp", s.to_owned());
    }
    wire(&b.build())
}

fn cseq_text(seq: u32, m: &Method) -> String {
    format!("{seq} {m}")
}

/// A request the callee sends in the leg's dialog (it is the UAS of
/// `leg_invite`, with To tag `tag`), with CSeq `seq method`.
pub fn callee_request(
    leg_invite: &Message,
    tag: &str,
    (method, seq): (Method, u32),
    branch: &str,
    body: Option<&str>,
) -> Message {
    let contact = leg_invite.contacts().unwrap().list()[0].uri.raw.to_vec();
    let to = String::from_utf8(leg_invite.header(HeaderName::To).unwrap().to_vec()).unwrap();
    let mut b = Message::request(method.clone(), String::from_utf8(contact).unwrap())
        .header(HeaderName::Via, format!("SIP/2.0/UDP 192.0.2.20:5060;branch={branch}"))
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, format!("{to};tag={tag}"))
        .header(HeaderName::To, leg_invite.header_bytes(HeaderName::From).unwrap())
        .header(HeaderName::CallId, leg_invite.header_bytes(HeaderName::CallId).unwrap())
        .header(HeaderName::CSeq, cseq_text(seq, &method))
        .header(HeaderName::Contact, "<sip:bob@192.0.2.21:5070>");
    if let Some(s) = body {
        b = b.body("application/sdp", s.to_owned());
    }
    wire(&b.build())
}

/// A request the caller sends in its dialog with us; `ok` is our 2xx (or
/// any response with our To tag).
pub fn caller_request(
    ok: &Message,
    method: Method,
    seq: u32,
    branch: &str,
    body: Option<&str>,
) -> Message {
    let contact = ok.contacts().unwrap().list()[0].uri.raw.to_vec();
    let mut b = Message::request(method.clone(), String::from_utf8(contact).unwrap())
        .header(HeaderName::Via, format!("SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"))
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, ok.header_bytes(HeaderName::From).unwrap())
        .header(HeaderName::To, ok.header_bytes(HeaderName::To).unwrap())
        .header(HeaderName::CallId, ok.header_bytes(HeaderName::CallId).unwrap())
        .header(HeaderName::CSeq, cseq_text(seq, &method))
        .header(HeaderName::Contact, "<sip:alice@192.0.2.10:5060>");
    if let Some(s) = body {
        b = b.body("application/sdp", s.to_owned());
    }
    wire(&b.build())
}

/// The caller's ACK for our 2xx `ok` to its INVITE with CSeq `seq`.
pub fn caller_ack(ok: &Message, seq: u32, body: Option<&str>) -> Message {
    caller_request(ok, Method::Ack, seq, &format!("z9hG4bKack{seq}"), body)
}

/// The callee's ACK for our 2xx `ok` to a re-INVITE we relayed to it.
pub fn callee_ack(ok: &Message, body: Option<&str>) -> Message {
    let seq = ok.cseq().unwrap().seq;
    let contact = ok.contacts().unwrap().list()[0].uri.raw.to_vec();
    let mut b = Message::request(Method::Ack, String::from_utf8(contact).unwrap())
        .header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKboback")
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, ok.header_bytes(HeaderName::From).unwrap())
        .header(HeaderName::To, ok.header_bytes(HeaderName::To).unwrap())
        .header(HeaderName::CallId, ok.header_bytes(HeaderName::CallId).unwrap())
        .header(HeaderName::CSeq, format!("{seq} ACK"));
    if let Some(s) = body {
        b = b.body("application/sdp", s.to_owned());
    }
    wire(&b.build())
}

/// One message the switch sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub peer: Peer,
    /// As the far end parses it.
    pub msg: Message,
    /// As built (shares buffers with the messages it came from).
    pub raw: Message,
    /// Sent outside transactions (`poll_stateless`).
    pub stateless: bool,
    /// When (ms after the start).
    pub t: u64,
}

impl Sent {
    /// `INVITE`, `200 INVITE`, `ACK*` (stateless marked with `*`).
    pub fn name(&self) -> String {
        let base = match self.msg.status() {
            Some(c) => format!("{c} {}", self.msg.cseq().map(|c| c.method.to_string()).unwrap()),
            None => self.msg.method().unwrap().to_string(),
        };
        if self.stateless {
            format!("{base}*")
        } else {
            base
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.msg.to_bytes()).into_owned()
    }
}

pub struct World {
    pub tx: TransactionLayer,
    pub cm: CallManager,
    pub t0: Instant,
    pub now: Instant,
    pub out: Vec<Sent>,
    pub events: Vec<CallEvent>,
    pub given_back: Vec<Event>,
}

impl World {
    pub fn new(cfg: B2buaConfig) -> World {
        let t0 = Instant::now();
        World {
            tx: TransactionLayer::new(Config::default(), 11),
            cm: CallManager::new(cfg, locals(), 12),
            t0,
            now: t0,
            out: Vec::new(),
            events: Vec::new(),
            given_back: Vec::new(),
        }
    }

    /// Runs the glue: transaction events into the manager, then the
    /// manager's stateless messages before the layer's transmits.
    pub fn pump(&mut self) {
        loop {
            let mut any = false;
            while let Some(ev) = self.tx.poll_event() {
                any = true;
                if let Some(back) = self.cm.handle_event(&mut self.tx, self.now, ev) {
                    match back {
                        Event::Terminated { .. } => {}
                        other => self.given_back.push(other),
                    }
                }
            }
            while let Some(s) = self.cm.poll_stateless() {
                any = true;
                let (msg, t) = (wire(&s.message), self.ms());
                self.out.push(Sent { peer: s.peer, msg, raw: s.message, stateless: true, t });
            }
            while let Some(t) = self.tx.poll_transmit() {
                any = true;
                let (msg, ms) = (wire(&t.message), self.ms());
                self.out.push(Sent { peer: t.peer, msg, raw: t.message, stateless: false, t: ms });
            }
            while let Some(e) = self.cm.poll_event() {
                self.events.push(e);
            }
            if !any {
                break;
            }
        }
    }

    pub fn feed(&mut self, m: Message, from: Peer) {
        self.tx.handle_incoming(self.now, m, from);
        self.pump();
    }

    /// Runs every timer up to `ms` after the start.
    pub fn at(&mut self, ms: u64) {
        let until = self.t0 + Duration::from_millis(ms);
        loop {
            let next = [self.tx.poll_timeout(), self.cm.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.tx.handle_timeout(self.now);
                    self.cm.handle_timeout(&mut self.tx, self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    pub fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    pub fn take(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.out)
    }

    pub fn take_events(&mut self) -> Vec<CallEvent> {
        std::mem::take(&mut self.events)
    }

    /// Feeds the caller's INVITE and accepts it as a call.
    pub fn start_call(&mut self, invite: Message) -> CallRef {
        self.feed(invite, caller_peer());
        match self.given_back.pop() {
            Some(Event::NewRequest { key, request, peer }) => {
                self.cm.accept_inbound(key, request, peer)
            }
            other => panic!("expected the caller's INVITE, got {other:?}"),
        }
    }

    pub fn dial(&mut self, call: CallRef, t: DialTarget) -> LegRef {
        let leg = self.cm.dial(&mut self.tx, self.now, call, t).unwrap();
        self.pump();
        leg
    }

    pub fn ring_caller(&mut self, call: CallRef) {
        self.cm.ring_caller(&mut self.tx, self.now, call).unwrap();
        self.pump();
    }

    pub fn early_media_caller(&mut self, call: CallRef, leg: LegRef) {
        self.cm.early_media_caller(&mut self.tx, self.now, call, leg).unwrap();
        self.pump();
    }

    pub fn answer_caller(&mut self, call: CallRef, leg: LegRef) {
        self.cm.answer_caller(&mut self.tx, self.now, call, leg).unwrap();
        self.pump();
    }

    pub fn reject_caller(&mut self, call: CallRef, code: u16) {
        self.cm.reject_caller(&mut self.tx, self.now, call, code).unwrap();
        self.pump();
    }

    pub fn cancel_leg(&mut self, call: CallRef, leg: LegRef, reason: Option<&str>) {
        self.cm.cancel_leg(&mut self.tx, self.now, call, leg, reason).unwrap();
        self.pump();
    }

    pub fn ack_and_bye(&mut self, call: CallRef, leg: LegRef) {
        self.cm.ack_and_bye(&mut self.tx, self.now, call, leg).unwrap();
        self.pump();
    }

    pub fn bye_leg(&mut self, call: CallRef, leg: LegRef) {
        self.cm.bye_leg(&mut self.tx, self.now, call, leg).unwrap();
        self.pump();
    }

    pub fn bye_caller(&mut self, call: CallRef) {
        self.cm.bye_caller(&mut self.tx, self.now, call).unwrap();
        self.pump();
    }

    /// The call is gone and nothing of it is left.
    pub fn assert_ended(&mut self, call: CallRef) {
        assert!(
            self.events.contains(&CallEvent::CallEnded { call }),
            "no CallEnded in {:?}",
            self.events
        );
        assert_eq!(self.cm.len(), 0);
        assert!(self.cm.is_empty());
    }
}

/// Names of the messages sent, in order.
pub fn names(out: &[Sent]) -> Vec<String> {
    out.iter().map(Sent::name).collect()
}

/// Names of the messages sent to `p`, in order.
pub fn names_to(out: &[Sent], p: Peer) -> Vec<String> {
    out.iter().filter(|s| s.peer.remote == p.remote).map(Sent::name).collect()
}

/// The only message called `name` (see [`Sent::name`]).
pub fn one<'a>(out: &'a [Sent], name: &str) -> &'a Sent {
    let v: Vec<&Sent> = out.iter().filter(|s| s.name() == name).collect();
    assert_eq!(v.len(), 1, "expected one {name} in {:?}", names(out));
    v[0]
}

/// The only message called `name` sent to `p`.
pub fn one_to<'a>(out: &'a [Sent], name: &str, p: Peer) -> &'a Sent {
    let v: Vec<&Sent> =
        out.iter().filter(|s| s.name() == name && s.peer.remote == p.remote).collect();
    assert_eq!(v.len(), 1, "expected one {name} to {} in {:?}", p.remote, names(out));
    v[0]
}

/// The leg's INVITE among the messages sent.
pub fn invite_to(out: &[Sent], p: Peer) -> Message {
    one_to(out, "INVITE", p).msg.clone()
}

/// `m` with one more header.
pub fn with_header(m: &Message, name: &str, value: &str) -> Message {
    let mut m = m.clone();
    m.push_header_named(name, value.to_owned());
    wire(&m)
}

/// `m` with its body replaced.
pub fn with_body(m: &Message, ctype: &str, body: &str) -> Message {
    let mut m = m.clone();
    m.set_body(Some(ctype.to_owned().into()), body.to_owned().into());
    wire(&m)
}

/// The times (ms after the start) at which messages called `name` went out.
pub fn times(out: &[Sent], name: &str) -> Vec<u64> {
    out.iter().filter(|s| s.name() == name).map(|s| s.t).collect()
}
