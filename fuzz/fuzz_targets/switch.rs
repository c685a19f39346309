//! Fuzzes the switch core (`switch::Switch`) as a whole: sequences of
//! datagrams from a few fixed peers, interleaved with the passing of
//! (virtual) time, so that transaction timers, fork timeouts and the sweep
//! fire between and after them.
//!
//! # How the input bytes are decoded
//!
//! The first byte chooses a few settings (reliable provisionals towards the
//! caller, forced rport, NAT keep-alive pings, stopping on 6xx). The rest is
//! a sequence of steps, each one opcode byte followed by the bytes it reads
//! (a step cut short reads zeroes). A step is one of:
//!
//! - a time advance, small (up to 2 s, in milliseconds) or large (up to
//!   40 s), firing every deadline on the way in order;
//! - a raw datagram: fuzzer bytes, from one of the fixed peers (the
//!   registered phone, a second phone over TCP, the trusted carrier source
//!   over UDP and TCP, an unknown address over UDP and TCP, a callee);
//! - a SIP message built from a template, then mutated (bytes overwritten,
//!   inserted, removed, truncated, or a header line from a list of awkward
//!   ones spliced in), every choice drawn from the input:
//!   - a new request: INVITE to a ring group, an extension, a PSTN number,
//!     an unknown user; REGISTER; OPTIONS; out-of-dialog BYE, INFO...
//!   - INVITE or REGISTER with digest credentials answering the switch's
//!     most recent 401/407 challenge (right or wrong password);
//!   - CANCEL of, or an exact retransmission of, a request sent earlier;
//!   - a response (100/180/183/200/3xx/4xx/5xx/6xx, reliable provisionals,
//!     carrier challenges) to one of the switch's own recent requests, from
//!     where it was sent, with its Via branch, Call-ID, From and CSeq copied
//!     and one of a few To tags;
//!   - ACK, BYE, re-INVITE, PRACK, UPDATE, INFO in the dialog of one of the
//!     switch's recent responses (the caller's side) or of one of its
//!     INVITEs (the callee's side);
//! - a transport report: a send failure of a recent transmit's token, a
//!   closed TCP connection, the answer to a pending DNS question;
//! - an API command: hang up a known call or groupcall record, start a
//!   click-to-call, remove an extension.
//!
//! At the end the input is settled: time runs on with no input, every call
//! still live is hung up through the API, and time runs on again.
//!
//! # What is checked
//!
//! After every input, outputs are drained until `Output::Timeout`, and:
//!
//! - nothing panics (the switch, the codec and every layer in between);
//! - every transmitted message re-parses with `Message::parse`; a request
//!   carries exactly one Via, ours (listen address, transport of the peer,
//!   an RFC 3261 branch): a B2BUA never relays Vias; every transmit leaves
//!   from a listen address;
//! - the next deadline is not before the input's time, is after it once a
//!   `Timeout` input ran the due timers (else a shell would spin), and is at
//!   most one second ahead (the sweep always runs);
//! - a `CallEnded` names a call that was announced (`CallStarted`, or a
//!   click-to-call's `Started`) and not ended yet; every command is
//!   answered exactly once;
//! - once settled: no transaction is left after the quiet time, every live
//!   call can be hung up (`Done`), and afterwards the switch is idle with no
//!   call, dialog or transaction left.
//!
//! Three known findings (leaks, replayed in
//! `crates/switch/tests/fuzz_regressions.rs`) are looked past while
//! [`KNOWN_CLICK_TO_CALL_LEAKS`] and [`KNOWN_STRAY_2XX_LEAK`] are `true`.
//!
//! The switch is built with a fixed seed, so every run of an input is the
//! same run.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use records::{Address, AddressType, Timestamp};
use records::{RingGroup, RingGroupDestination};
use sip_message::{digest, AuthParams, ConnId, HeaderName, Message, Method, Peer, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use switch::{Carrier, ClickDestination, ClickToCall, Command, CommandId, CommandOutcome};
use switch::{Datagram, Event, Input, Now, Output, Persist, QueryId, Route, Switch};
use switch::{SwitchConfig, SwitchState, Target, Token};
use uuid::Uuid;

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

/// The switch's listen address (UDP and TCP).
const US: SocketAddr = v4(192, 0, 2, 1, 5060);
/// e1@test, registered over UDP from the start.
const PHONE: SocketAddr = v4(192, 0, 2, 60, 5060);
/// Where e2@test may register from, over TCP.
const PHONE2: SocketAddr = v4(192, 0, 2, 61, 5062);
/// Inside the trusted carrier's inbound source range.
const CARRIER: SocketAddr = v4(198, 51, 100, 1, 5060);
/// Nobody we know.
const UNKNOWN: SocketAddr = v4(203, 0, 113, 99, 5099);
/// A SIP destination of ring group 800.
const CALLEE: SocketAddr = v4(203, 0, 113, 9, 5070);

const DOMAIN: &str = "test";
const CUSTOMER: Uuid = Uuid::from_u128(0xC0FFEE);
const SEED: u64 = 0x5EED_F022;
const WALL0: i64 = 1_700_000_000_000_000;
/// Steps per input, at most.
const MAX_STEPS: usize = 256;
/// Timer firings in one advance before it is called a timer storm.
const MAX_FIRINGS: usize = 100_000;
/// How many of the switch's transmits (and of our requests) are remembered.
const HISTORY: usize = 24;
/// Two known findings, not fixed yet, both leaks of click-to-call calls
/// (see `crates/switch/tests/fuzz_regressions.rs`):
///
/// 1. a source phone that answers 1xx but never a final response is never
///    given up (the source leg has no ring timeout; the fork's timers only
///    start once the source answered);
/// 2. a source that answers (2xx) after the call was hung up through the API
///    is neither ACKed nor sent a BYE, and the call is never forgotten.
///
/// While this is `true`, settling hangs up unanswered click-to-calls through
/// the API before the quiet time (1), and leaves out of the final checks the
/// click-to-calls whose record is over but that are still live (2), instead
/// of failing on them, so that fuzzing can look past them. Set it to `false`
/// once both are fixed.
const KNOWN_CLICK_TO_CALL_LEAKS: bool = false;
/// A third known finding, not fixed yet (see the same file): a 2xx to a
/// leg's INVITE that its client transaction does not match (its top Via is
/// not the one the switch sent: an extra Via, a changed branch) is taken by
/// the B2BUA as the leg's answer through the dialog, while the leg's INVITE
/// transaction, in Proceeding, is never ended: it outlives the call forever.
/// While this is `true`, an input that sent such a 2xx is not checked for
/// transactions left after the quiet time. Set it to `false` once fixed.
const KNOWN_STRAY_2XX_LEAK: bool = false;

/// The peers new messages come from: (transport, address, connection).
const PEERS: [(Transport, SocketAddr, Option<ConnId>); 7] = [
    (Transport::Udp, PHONE, None),
    (Transport::Tcp, PHONE2, Some(1)),
    (Transport::Udp, CARRIER, None),
    (Transport::Tcp, CARRIER, Some(2)),
    (Transport::Udp, UNKNOWN, None),
    (Transport::Tcp, UNKNOWN, Some(3)),
    (Transport::Udp, CALLEE, None),
];

/// Request-URIs of new requests.
const RURIS: [&str; 14] = [
    "sip:800@test",
    "sip:801@test",
    "sip:802@test",
    "sip:803@test",
    "sip:e1@test",
    "sip:e2@test",
    "sip:e3@test",
    "sip:+15557654321@test",
    "sip:+442071234567@test",
    "tel:+15550000",
    "sip:nobody@test",
    "sip:800@192.0.2.1:5060",
    "sip:800@elsewhere.example",
    "sip:test",
];

/// From addresses of new requests (a tag is added).
const FROMS: [&str; 5] = [
    "<sip:+15550001@pstn>",
    "<sip:e1@test>",
    "\"Two\" <sip:e2@test>",
    "<sip:anonymous@anonymous.invalid>",
    "<sip:e3@test>",
];

/// Credentials the fuzzer may answer a challenge with.
const CREDENTIALS: [(&str, &str); 4] =
    [("e1", "pw1"), ("e2", "pw2"), ("e1", "wrong"), ("e3", "pw3")];

/// To tags of responses and in-dialog requests of callees.
const TAGS: [&str; 4] = ["t0", "t1", "t2", ""];

/// Header lines spliced in by the mutator.
const AWKWARD: [&str; 22] = [
    "Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKinjected\r\n",
    "Require: 100rel\r\n",
    "Require: foo\r\n",
    "Supported: 100rel, timer\r\n",
    "Content-Length: 9999\r\n",
    "Content-Length: 0\r\n",
    "Route: <sip:192.0.2.1;lr>\r\n",
    "Record-Route: <sip:198.51.100.9;lr>\r\n",
    "Max-Forwards: 0\r\n",
    "Max-Forwards: 1\r\n",
    "Expires: 0\r\n",
    "Contact: *\r\n",
    "Contact: <sip:x@192.0.2.1:5060>\r\n",
    "RSeq: 1\r\n",
    "RAck: 1 1 INVITE\r\n",
    "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
    "Call-ID: other\r\n",
    "To: <sip:800@test>;tag=dup\r\n",
    "CSeq: 4294967295 INVITE\r\n",
    "Content-Type: application/sdp\r\n",
    "Timestamp: 1.5 0.2\r\n",
    "Proxy-Authorization: Digest username=\"e1\", realm=\"test\", nonce=\"x\", uri=\"sip:800@test\", response=\"00\"\r\n",
];

/// Response codes to the switch's requests; `+1000`: a reliable provisional.
const CODES: [u16; 26] = [
    100, 180, 181, 183, 200, 202, 300, 302, 400, 401, 403, 404, 407, 408, 480, 481, 486, 487, 488,
    500, 503, 600, 603, 699, 1180, 1183,
];

/// Methods of in-dialog requests.
const DIALOG_METHODS: [&str; 9] =
    ["BYE", "ACK", "INVITE", "UPDATE", "INFO", "PRACK", "OPTIONS", "MESSAGE", "CANCEL"];

/// Methods of new out-of-dialog requests besides INVITE and REGISTER.
const OTHER_METHODS: [&str; 8] =
    ["OPTIONS", "BYE", "INFO", "MESSAGE", "SUBSCRIBE", "ACK", "PRACK", "FOO"];

/// The input bytes, read front to back; zeroes once they run out.
struct Data<'a>(&'a [u8]);

impl Data<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    /// An index below `len` (which must not be 0).
    fn index(&mut self, len: usize) -> usize {
        usize::from(self.byte()) % len
    }

    fn pick<T: Copy>(&mut self, list: &[T]) -> T {
        list[self.index(list.len())]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
}

/// One of the switch's transmits, as re-parsed from its bytes.
struct Sent {
    peer: Peer,
    message: Message,
    token: Token,
}

/// A switch in virtual time, and what the fuzzer remembers of the run.
struct Harness {
    sw: Switch,
    t0: Instant,
    now: Duration,
    /// The switch's recent transmits, newest last.
    sent: Vec<Sent>,
    /// Our recent requests (as sent, after mutation), newest last.
    ours: Vec<(Peer, Bytes)>,
    /// The latest challenge: (is it Proxy-Authenticate, its values).
    challenge: Option<(bool, Vec<Bytes>)>,
    /// DNS questions not answered yet.
    queries: Vec<QueryId>,
    /// Record ids seen (groupcalls and calls).
    ids: Vec<Uuid>,
    /// Announced calls not ended yet.
    live: BTreeSet<Uuid>,
    /// Click-to-call source records: the latest status of each.
    click_sources: BTreeMap<Uuid, records::CallStatus>,
    /// Commands not answered yet.
    pending: BTreeSet<u64>,
    /// The outcome of each answered command.
    outcomes: Vec<(u64, CommandOutcome)>,
    next_command: u64,
    next_branch: u32,
    next_conn: ConnId,
    /// Answer DNS questions at once, with no targets (while settling).
    auto_dns: bool,
    /// Top Via branches of the INVITEs the switch sent.
    invite_branches: BTreeSet<Vec<u8>>,
    /// A 2xx to INVITE that matches none of them was sent to the switch.
    stray_2xx: bool,
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

fn dest(kind: AddressType, target: &str, ring: Option<u64>) -> RingGroupDestination {
    RingGroupDestination { kind, target: target.into(), ring_timeout_secs: ring, delay_secs: None }
}

fn group(
    number: &str,
    ring_method: records::RingMethod,
    d: Vec<RingGroupDestination>,
) -> RingGroup {
    RingGroup {
        id: records::config_id(&format!("{number}@{DOMAIN}")),
        customer_id: CUSTOMER,
        number: number.into(),
        domain: DOMAIN.into(),
        ring_method,
        answer_method: records::AnswerMethod::HangupOthers,
        destinations: d,
        max_ring_secs: None,
        skip_busy: false,
        send_reason: true,
        origin: records::Origin::Config,
        tm_create: Timestamp::NOT_YET,
        tm_update: Timestamp::NOT_YET,
        tm_delete: Timestamp::NOT_YET,
    }
}

/// Accounts e1..e3, e1 registered; carriers (one trusted inbound, two
/// outbound with credentials on one, one given by DNS name); ring groups
/// with SIP, endpoint, tel, nested and DNS-named destinations.
fn state() -> SwitchState {
    use records::RingMethod::{Linear, RingAll};
    use AddressType::{Endpoint as E, Groupcall as G, Sip as S, Tel as T};
    let mut inbound = carrier("pstn-in", "198.51.100.1:5060", "udp");
    inbound.inbound_sources = vec!["198.51.100.0/24".parse().expect("constant net")];
    inbound.inbound_domain = DOMAIN.into();
    let mut a = carrier("out-a", "203.0.113.10:5060", "udp");
    a.username = "trunk".into();
    a.password = "trunkpw".into();
    a.headers = vec![("X-Trunk".into(), "a".into())];
    let carriers = vec![
        inbound,
        a,
        carrier("out-b", "203.0.113.11:5060", "tcp"),
        carrier("out-dns", "carrier.example.net", "udp"),
    ];
    let routes = vec![
        Route { prefix: "+1".into(), carriers: vec!["out-a".into(), "out-b".into()] },
        Route { prefix: "+44".into(), carriers: vec!["out-dns".into(), "out-a".into()] },
    ];
    let groups = vec![
        group(
            "800",
            RingAll,
            vec![
                dest(E, "e1@test", None),
                dest(S, "sip:b@203.0.113.9:5070", None),
                dest(E, "e2@test", None),
            ],
        ),
        group(
            "801",
            Linear,
            vec![
                dest(S, "sip:x@203.0.113.20", Some(3)),
                dest(T, "+15551234567", Some(5)),
                dest(G, "800", None),
            ],
        ),
        group(
            "802",
            RingAll,
            vec![dest(S, "sip:y@dest.example.org", None), dest(E, "e1@test", Some(4))],
        ),
        group("803", Linear, vec![dest(G, "801", Some(6)), dest(E, "e3@test", None)]),
    ];
    let binding = records::Binding {
        aor: "e1@test".into(),
        contact: format!("sip:e1@{PHONE}"),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at: Timestamp::from_micros(WALL0 + 3_600_000_000),
        call_id: "reg-e1".into(),
        cseq: 1,
        transport: "UDP".into(),
        source: PHONE,
        local: US,
        user_agent: String::new(),
    };
    SwitchState {
        customers: vec![records::Customer { id: CUSTOMER, name: "c".into(), api_keys: Vec::new() }],
        domains: vec![records::Domain {
            name: DOMAIN.into(),
            aliases: Vec::new(),
            customer_id: CUSTOMER,
        }],
        extensions: vec![
            registrar::extension_with_password("e1", DOMAIN, "pw1"),
            registrar::extension_with_password("e2", DOMAIN, "pw2"),
            registrar::extension_with_password("e3", DOMAIN, "pw3"),
        ],
        bindings: vec![binding],
        carriers,
        routes,
        ring_groups: groups,
        hunt: Vec::new(),
    }
}

fn config(flags: u8) -> SwitchConfig {
    let mut cfg = SwitchConfig::new(vec![(Transport::Udp, US), (Transport::Tcp, US)]);
    cfg.calls.send_100rel_to_caller = flags & 1 != 0;
    cfg.force_rport = flags & 2 != 0;
    cfg.keepalive_interval = (flags & 4 != 0).then_some(Duration::from_secs(5));
    cfg.calls.stop_on_6xx = flags & 8 == 0;
    cfg.calls.default_ring_timeout = Duration::from_secs(8);
    cfg.calls.overall_timeout = Duration::from_secs(60);
    cfg
}

fn sdp(at: SocketAddr) -> String {
    let ip = at.ip();
    format!(
        "v=0\r\no=f 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
}

/// The value of a header as text (empty when absent).
fn text(m: &Message, h: HeaderName) -> String {
    m.header(h).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

/// The first Contact URI of `m`, or `fallback`.
fn contact_uri(m: &Message, fallback: String) -> String {
    m.contacts()
        .ok()
        .and_then(|c| c.list().first().map(|na| String::from_utf8_lossy(na.uri.raw).into_owned()))
        .unwrap_or(fallback)
}

/// The Authorization value answering the first MD5 challenge of
/// `challenges` as `user`/`pass` (qop=auth when offered), for `method` to
/// `uri`.
fn answer(challenges: &[Bytes], method: &str, uri: &str, user: &str, pass: &str) -> Option<String> {
    let md5 = |ch: &Bytes| {
        AuthParams::parse(ch).is_ok_and(|p| {
            p.is_digest() && p.get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case(b"MD5"))
        })
    };
    let who = digest::Credentials { user, password: pass };
    challenges
        .iter()
        .find(|ch| md5(ch))
        .and_then(|ch| digest::authorization(ch, method, uri, who, "fz"))
}

/// Where the header block of `b` ends (the blank line), or its length.
fn header_end(b: &[u8]) -> usize {
    b.windows(4).position(|w| w == b"\r\n\r\n").map_or(b.len(), |p| p + 2)
}

/// Applies 0-3 fuzzer-chosen mutations to `b`.
fn mutate(d: &mut Data, b: &mut Vec<u8>) {
    for _ in 0..d.byte() % 4 {
        let kind = d.byte() % 6;
        let at = if b.is_empty() { 0 } else { usize::from(d.u16()) % (b.len() + 1) };
        match kind {
            0 => {
                let v = d.byte();
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            1 => {
                let n = usize::from(d.byte() % 16);
                let ins = d.bytes(n).to_vec();
                b.splice(at..at, ins);
            }
            2 => {
                let n = usize::from(d.byte() % 32);
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            3 => b.truncate(at),
            _ => {
                // An awkward header line, at the end of the header block
                // or after the start line.
                let line = d.pick(&AWKWARD).as_bytes().to_vec();
                let pos = if d.flag() {
                    header_end(b)
                } else {
                    b.iter().position(|&c| c == b'\n').map_or(0, |p| p + 1)
                };
                b.splice(pos..pos, line);
            }
        }
    }
}

/// Our Via for a request from `peer`.
fn via(peer: &Peer, branch: &str) -> String {
    format!("SIP/2.0/{} {};branch={branch};rport", peer.transport, peer.remote)
}

fn peer_of(p: (Transport, SocketAddr, Option<ConnId>)) -> Peer {
    Peer { transport: p.0, remote: p.1, local: US, conn: p.2 }
}

impl Harness {
    fn new(flags: u8) -> Harness {
        static T0: OnceLock<Instant> = OnceLock::new();
        let t0 = *T0.get_or_init(Instant::now);
        let now = Now { at: t0, wall: Timestamp::from_micros(WALL0) };
        let sw = Switch::new(config(flags), state(), SEED, now).expect("constant state");
        let mut h = Harness {
            sw,
            t0,
            now: Duration::ZERO,
            sent: Vec::new(),
            ours: Vec::new(),
            challenge: None,
            queries: Vec::new(),
            ids: Vec::new(),
            live: BTreeSet::new(),
            click_sources: BTreeMap::new(),
            pending: BTreeSet::new(),
            outcomes: Vec::new(),
            next_command: 1,
            next_branch: 0,
            next_conn: 100,
            auto_dns: false,
            invite_branches: BTreeSet::new(),
            stray_2xx: false,
        };
        h.drain(false);
        h
    }

    fn now(&self) -> Now {
        let micros = i64::try_from(self.now.as_micros()).unwrap_or(i64::MAX);
        Now { at: self.t0 + self.now, wall: Timestamp::from_micros(WALL0.saturating_add(micros)) }
    }

    fn input(&mut self, i: Input) {
        let timeout = matches!(i, Input::Timeout);
        if let Input::Datagram(d) = &i {
            self.note_stray_2xx(&d.bytes);
        }
        let now = self.now();
        self.sw.handle_input(now, i);
        self.drain(timeout);
    }

    /// Polls until `Output::Timeout`, checking every output; returns the
    /// deadline.
    fn drain(&mut self, after_timeout: bool) -> Instant {
        let now = self.now().at;
        loop {
            match self.sw.poll_output() {
                Output::Timeout(at) => {
                    assert!(at >= now, "deadline {:?} before the input", now - at);
                    if after_timeout {
                        assert!(at > now, "deadline still due after the timers ran");
                    }
                    assert!(
                        at <= now + Duration::from_secs(1),
                        "deadline {:?} ahead: the sweep must run every second",
                        at - now
                    );
                    return at;
                }
                Output::Transmit(t) => self.on_transmit(t),
                Output::Resolve(q) => {
                    if self.auto_dns {
                        let query = q.id;
                        let now = self.now();
                        self.sw.handle_input(now, Input::Resolved { query, targets: Vec::new() });
                    } else {
                        self.queries.push(q.id);
                    }
                }
                Output::Persist(p) => match p {
                    Persist::Groupcall(g) => self.remember_id(g.id),
                    Persist::Call(c) => {
                        if let Some(st) = self.click_sources.get_mut(&c.id) {
                            *st = c.status;
                        }
                        self.remember_id(c.id)
                    }
                    _ => {}
                },
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    /// Notes a 2xx to INVITE whose top Via is not the one of an INVITE the
    /// switch sent (see [`KNOWN_STRAY_2XX_LEAK`]).
    fn note_stray_2xx(&mut self, bytes: &Bytes) {
        let Ok(m) = Message::parse(bytes.clone()) else { return };
        let is_2xx = m.status().is_some_and(|s| (200..300).contains(&s));
        if !is_2xx || !m.cseq().is_ok_and(|c| c.method == Method::Invite) {
            return;
        }
        let ours = m.top_via().ok().is_some_and(|v| {
            v.host == b"192.0.2.1"
                && v.port == Some(5060)
                && v.branch().is_some_and(|b| self.invite_branches.contains(b))
        });
        if !ours || m.count(HeaderName::Via) != 1 {
            self.stray_2xx = true;
        }
    }

    fn remember_id(&mut self, id: Uuid) {
        if !self.ids.contains(&id) {
            self.ids.push(id);
            if self.ids.len() > HISTORY {
                self.ids.remove(0);
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::CallStarted { call, .. } => {
                assert!(self.live.insert(call), "call {call} started twice");
            }
            Event::CallEnded { call } => {
                assert!(self.live.remove(&call), "call {call} ended but is not live");
            }
            Event::CommandDone { id, outcome } => {
                assert!(
                    self.pending.remove(&id.0),
                    "command {id:?} answered twice, or never asked"
                );
                if let CommandOutcome::Started { call, .. } = &outcome {
                    assert!(self.live.insert(call.id), "click-to-call {} started twice", call.id);
                    self.click_sources.insert(call.id, call.status);
                }
                self.outcomes.push((id.0, outcome));
            }
            _ => {}
        }
    }

    fn on_transmit(&mut self, t: switch::Transmit) {
        let wire = t.message.to_bytes();
        let m = match Message::parse(wire.clone()) {
            Ok(m) => m,
            Err(e) => {
                panic!("a transmit does not re-parse ({e}): {:?}", String::from_utf8_lossy(&wire))
            }
        };
        assert_eq!(t.peer.local, US, "a transmit leaves from a listen address");
        if m.is_request() {
            assert_eq!(
                m.count(HeaderName::Via),
                1,
                "one Via on our request: {:?}",
                String::from_utf8_lossy(&wire)
            );
            let v = m.top_via().expect("our Via parses");
            assert!(v.has_rfc3261_branch(), "RFC 3261 branch on our request");
            if m.method() == Some(&Method::Invite) {
                if let Some(b) = v.branch() {
                    self.invite_branches.insert(b.to_vec());
                }
            }
            assert_eq!(v.host, b"192.0.2.1", "our sent-by");
            assert_eq!(v.port, Some(5060), "our sent-by port");
            assert!(
                v.transport.eq_ignore_ascii_case(t.peer.transport.via_token().as_bytes()),
                "Via transport matches the transport used: {:?} over {}",
                String::from_utf8_lossy(&wire),
                t.peer.transport
            );
        }
        if matches!(m.status(), Some(401 | 407)) {
            let h = if m.status() == Some(407) {
                HeaderName::ProxyAuthenticate
            } else {
                HeaderName::WwwAuthenticate
            };
            let v: Vec<Bytes> = m.all_header_bytes(h).collect();
            if !v.is_empty() {
                self.challenge = Some((h == HeaderName::ProxyAuthenticate, v));
            }
        }
        self.sent.push(Sent { peer: t.peer, message: m, token: t.token });
        if self.sent.len() > HISTORY {
            self.sent.remove(0);
        }
    }

    /// Moves virtual time on by `d`, running every timer on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..MAX_FIRINGS {
            let next = match self.sw.poll_output() {
                Output::Timeout(at) => at,
                other => {
                    // Nothing is left unpolled after an input; the first
                    // poll of a round is the deadline.
                    panic!("an output was left in the queue: {other:?}");
                }
            };
            let next = next.saturating_duration_since(self.t0);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next.max(self.now);
            self.input(Input::Timeout);
        }
        panic!("timer storm: {MAX_FIRINGS} firings within {d:?}");
    }

    fn branch(&mut self) -> String {
        self.next_branch += 1;
        format!("z9hG4bKfz{}", self.next_branch)
    }

    /// A connection for a reply over TCP to a transmit that had none.
    fn conn_for(&mut self, p: Peer) -> Peer {
        if p.transport == Transport::Tcp && p.conn.is_none() {
            self.next_conn += 1;
            return Peer { conn: Some(self.next_conn), ..p };
        }
        p
    }

    /// Mutates and sends `msg` from `peer`; remembers requests.
    fn send(&mut self, d: &mut Data, peer: Peer, msg: String) {
        let mut b = msg.into_bytes();
        mutate(d, &mut b);
        let bytes = Bytes::from(b);
        if bytes.first().is_some_and(|c| c.is_ascii_uppercase()) && !bytes.starts_with(b"SIP/") {
            self.ours.push((peer, bytes.clone()));
            if self.ours.len() > HISTORY {
                self.ours.remove(0);
            }
        }
        self.input(Input::Datagram(Datagram { peer, bytes }));
    }

    /// A recent transmit chosen by the input among those `want` accepts,
    /// counted from the newest.
    fn pick_sent(&self, d: &mut Data, want: impl Fn(&Message) -> bool) -> Option<usize> {
        let fits: Vec<usize> =
            (0..self.sent.len()).rev().filter(|&i| want(&self.sent[i].message)).collect();
        if fits.is_empty() {
            return None;
        }
        Some(fits[d.index(fits.len())])
    }

    fn step(&mut self, d: &mut Data) {
        match d.byte() % 16 {
            0 | 1 => self.advance(Duration::from_millis(u64::from(d.u16() % 2000))),
            2 => self.advance(Duration::from_secs(1 + u64::from(d.byte() % 40))),
            3 => {
                let peer = peer_of(d.pick(&PEERS));
                let n = usize::from(d.u16() % 2048);
                let bytes = Bytes::copy_from_slice(d.bytes(n));
                self.input(Input::Datagram(Datagram { peer, bytes }));
            }
            4 | 5 => self.new_request(d, None),
            6 | 7 => self.respond(d),
            8 => self.caller_in_dialog(d),
            9 => self.callee_in_dialog(d),
            10 => self.cancel_ours(d),
            11 => self.register(d),
            12 => {
                let creds = d.pick(&CREDENTIALS);
                self.new_request(d, Some(creds));
            }
            13 => self.retransmit(d),
            14 => self.transport_report(d),
            _ => self.command(d),
        }
    }

    /// A new request outside any dialog: mostly INVITE; with `creds`, an
    /// INVITE answering the latest challenge.
    fn new_request(&mut self, d: &mut Data, creds: Option<(&str, &str)>) {
        let peer = peer_of(d.pick(&PEERS));
        let ruri = d.pick(&RURIS);
        let from = d.pick(&FROMS);
        let method = match (creds, d.byte() % 4) {
            (Some(_), _) | (None, 0 | 1) => "INVITE",
            (None, 2) => "REGISTER",
            _ => d.pick(&OTHER_METHODS),
        };
        let call_id = format!("cid{}", d.byte() % 8);
        let cseq = u32::from(d.byte() % 8) + 1;
        let branch = self.branch();
        let mut extra = String::new();
        if creds.is_some() || d.flag() {
            let (user, pass) = creds.unwrap_or(("e1", "pw1"));
            if let Some((proxy, ch)) = &self.challenge {
                if let Some(v) = answer(ch, method, ruri, user, pass) {
                    let h = if *proxy { "Proxy-Authorization" } else { "Authorization" };
                    extra.push_str(&format!("{h}: {v}\r\n"));
                }
            }
        }
        match d.byte() % 4 {
            1 => extra.push_str("Supported: 100rel\r\n"),
            2 => extra.push_str("Require: 100rel\r\n"),
            _ => {}
        }
        let body = if method == "INVITE" && !d.byte().is_multiple_of(4) {
            sdp(peer.remote)
        } else {
            String::new()
        };
        if !body.is_empty() {
            extra.push_str("Content-Type: application/sdp\r\n");
        }
        let mf = d.pick(&["70", "70", "0", "1"]);
        let msg = format!(
            "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: {mf}\r\nFrom: {from};tag=f{}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:c@{}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            via(&peer, &branch),
            d.byte() % 4,
            peer.remote,
            body.len()
        );
        self.send(d, peer, msg);
    }

    /// REGISTER of e1/e2/e3, answering the latest challenge or not.
    fn register(&mut self, d: &mut Data) {
        let peer = peer_of(d.pick(&[PEERS[0], PEERS[1], PEERS[4], PEERS[5]]));
        let (user, pass) = d.pick(&CREDENTIALS);
        let ruri = d.pick(&["sip:test", "sip:192.0.2.1:5060", "sip:elsewhere.example"]);
        let contact = match d.byte() % 6 {
            0 => "*".to_owned(),
            1 => format!("<sip:{user}@{}>;expires=0", peer.remote),
            2 => format!("<sip:{user}@{};transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1", peer.remote),
            3 => format!("<sip:{user}@{}>;q=0.5, <sip:{user}@198.51.100.77:5060>", peer.remote),
            _ => format!("<sip:{user}@{}>", peer.remote),
        };
        let expires = d.pick(&["3600", "0", "30", "1", "4294967296", ""]);
        let mut extra = String::new();
        if !expires.is_empty() {
            extra.push_str(&format!("Expires: {expires}\r\n"));
        }
        if !d.byte().is_multiple_of(4) {
            if let Some((proxy, ch)) = &self.challenge {
                if let Some(v) = answer(ch, "REGISTER", ruri, user, pass) {
                    let h = if *proxy { "Proxy-Authorization" } else { "Authorization" };
                    extra.push_str(&format!("{h}: {v}\r\n"));
                }
            }
        }
        let cseq = d.u16();
        let msg = format!(
            "REGISTER {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@test>;tag=r{}\r\nTo: <sip:{user}@test>\r\nCall-ID: reg-{user}-{}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{extra}Content-Length: 0\r\n\r\n",
            via(&peer, &self.branch()),
            d.byte() % 2,
            d.byte() % 2,
        );
        self.send(d, peer, msg);
    }

    /// A response to one of the switch's recent requests, from where it
    /// went.
    fn respond(&mut self, d: &mut Data) {
        let Some(i) = self.pick_sent(d, Message::is_request) else { return };
        let code = d.pick(&CODES);
        let tag = d.pick(&TAGS);
        let with_sdp = d.flag();
        let rseq = u32::from(d.byte() % 4) + 1;
        let s = &self.sent[i];
        let (reliable, code) = if code > 1000 { (true, code - 1000) } else { (false, code) };
        let mut b = Message::response_to(&s.message, code);
        if !tag.is_empty() {
            b = b.to_tag(tag);
        }
        let remote = s.peer.remote;
        if (101..300).contains(&code) {
            b = b.header(HeaderName::Contact, format!("<sip:callee@{remote}>"));
        }
        if (300..400).contains(&code) {
            b = b.header(HeaderName::Contact, "<sip:z@203.0.113.30>, <sip:e2@test>");
        }
        if reliable {
            b = b.header(HeaderName::Require, "100rel").header(HeaderName::RSeq, rseq.to_string());
        }
        match code {
            401 => {
                b = b.header(
                    HeaderName::WwwAuthenticate,
                    "Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\"",
                )
            }
            407 => {
                b = b
                    .header(HeaderName::ProxyAuthenticate, "Digest realm=\"carrier\", nonce=\"n2\"")
            }
            _ => {}
        }
        if with_sdp && (code == 183 || code == 200 || reliable) {
            b = b.body("application/sdp", sdp(remote));
        }
        let msg = String::from_utf8_lossy(&b.build().to_bytes()).into_owned();
        let peer = self.conn_for(s.peer);
        self.send(d, peer, msg);
    }

    /// A request in the dialog of one of the switch's responses to an
    /// INVITE, from the caller it went to: ACK (of a 2xx or a failure), BYE,
    /// re-INVITE, PRACK...
    fn caller_in_dialog(&mut self, d: &mut Data) {
        let Some(i) = self.pick_sent(d, |m| m.status().is_some()) else { return };
        let method = d.pick(&DIALOG_METHODS);
        let bump = d.byte() % 3;
        let s = &self.sent[i];
        let m = &s.message;
        let Ok(cseq) = m.cseq() else { return };
        let status = m.status().unwrap_or(0);
        let (branch, seq) = match method {
            "ACK" if status >= 300 => {
                let b = m
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch())
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                (b, cseq.seq)
            }
            "ACK" | "CANCEL" => (None, cseq.seq),
            _ => (None, cseq.seq.saturating_add(1 + u32::from(bump))),
        };
        let ruri = contact_uri(m, "sip:800@test".into());
        let mut extra = String::new();
        if method == "PRACK" {
            let rseq = m.rseq().ok().flatten().unwrap_or(1);
            extra.push_str(&format!("RAck: {rseq} {} INVITE\r\n", cseq.seq));
        }
        let body = if method == "INVITE" || method == "UPDATE" {
            sdp(s.peer.remote)
        } else {
            String::new()
        };
        if !body.is_empty() {
            extra.push_str("Content-Type: application/sdp\r\n");
        }
        let peer = s.peer;
        let head = format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\nContact: <sip:c@{}>\r\n",
            text(m, HeaderName::From),
            text(m, HeaderName::To),
            text(m, HeaderName::CallId),
            peer.remote
        );
        let branch = branch.unwrap_or_else(|| self.branch());
        let peer = self.conn_for(peer);
        let msg = format!(
            "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{head}{extra}Content-Length: {}\r\n\r\n{body}",
            via(&peer, &branch),
            body.len()
        );
        self.send(d, peer, msg);
    }

    /// A request in the dialog of one of the switch's INVITEs, from the
    /// callee it went to (with one of the To tags responses use).
    fn callee_in_dialog(&mut self, d: &mut Data) {
        let Some(i) = self.pick_sent(d, |m| m.method() == Some(&Method::Invite)) else { return };
        let method = d.pick(&DIALOG_METHODS);
        let tag = d.pick(&TAGS);
        let seq = u32::from(d.byte() % 4) + 1;
        let s = &self.sent[i];
        let m = &s.message;
        let ruri = contact_uri(m, format!("sip:{US}"));
        let body = if method == "INVITE" || method == "UPDATE" {
            sdp(s.peer.remote)
        } else {
            String::new()
        };
        let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        let peer = s.peer;
        let head = format!(
            "From: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\nContact: <sip:callee@{}>\r\n",
            text(m, HeaderName::To),
            text(m, HeaderName::From),
            text(m, HeaderName::CallId),
            peer.remote
        );
        let peer = self.conn_for(peer);
        let msg = format!(
            "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{head}{ct}Content-Length: {}\r\n\r\n{body}",
            via(&peer, &self.branch()),
            body.len()
        );
        self.send(d, peer, msg);
    }

    /// CANCEL of one of our recent INVITEs (same branch, Request-URI, From,
    /// To, Call-ID and CSeq number).
    fn cancel_ours(&mut self, d: &mut Data) {
        let invites: Vec<(Peer, Message)> = self
            .ours
            .iter()
            .rev()
            .filter_map(|(p, b)| Message::parse(b.clone()).ok().map(|m| (*p, m)))
            .filter(|(_, m)| m.method() == Some(&Method::Invite))
            .collect();
        if invites.is_empty() {
            return;
        }
        let (peer, m) = &invites[d.index(invites.len())];
        let Some(ruri) = m.request_uri_bytes() else { return };
        let seq = m.cseq().map(|c| c.seq).unwrap_or(1);
        let msg = format!(
            "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} CANCEL\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(ruri),
            text(m, HeaderName::Via),
            text(m, HeaderName::From),
            text(m, HeaderName::To),
            text(m, HeaderName::CallId),
        );
        let peer = *peer;
        self.send(d, peer, msg);
    }

    /// One of our recent requests again, byte for byte (a retransmission),
    /// or one of the switch's responses bounced back at it.
    fn retransmit(&mut self, d: &mut Data) {
        if d.flag() {
            if self.ours.is_empty() {
                return;
            }
            let (peer, bytes) = self.ours[d.index(self.ours.len())].clone();
            self.input(Input::Datagram(Datagram { peer, bytes }));
        } else {
            let Some(i) = self.pick_sent(d, |_| true) else { return };
            let s = &self.sent[i];
            let (peer, bytes) = (s.peer, s.message.to_bytes());
            let peer = self.conn_for(peer);
            self.input(Input::Datagram(Datagram { peer, bytes }));
        }
    }

    /// A send failure, a closed connection, or a DNS answer.
    fn transport_report(&mut self, d: &mut Data) {
        match d.byte() % 3 {
            0 => {
                let Some(i) = self.pick_sent(d, |_| true) else { return };
                let token = self.sent[i].token;
                self.input(Input::SendFailed { token });
            }
            1 => {
                let conn = d.pick(&[1, 2, 3, 101, 102, 103]);
                self.input(Input::ConnectionClosed { conn });
            }
            _ => {
                if self.queries.is_empty() {
                    return;
                }
                let query = self.queries.remove(d.index(self.queries.len()));
                let all = [
                    Target { transport: Transport::Udp, address: v4(203, 0, 113, 40, 5060) },
                    Target { transport: Transport::Tcp, address: v4(203, 0, 113, 41, 5060) },
                    Target {
                        transport: Transport::Udp,
                        address: SocketAddr::new(
                            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5)),
                            5060,
                        ),
                    },
                    Target { transport: Transport::Udp, address: US },
                ];
                let targets = (0..d.byte() % 3).map(|_| d.pick(&all)).collect();
                self.input(Input::Resolved { query, targets });
            }
        }
    }

    fn ask(&mut self, command: Command) {
        let id = self.next_command;
        self.next_command += 1;
        self.pending.insert(id);
        self.input(Input::Command { id: CommandId(id), command });
        assert!(!self.pending.contains(&id), "command {id} not answered at once");
    }

    /// An API command.
    fn command(&mut self, d: &mut Data) {
        let known = |h: &Harness, d: &mut Data| {
            if h.ids.is_empty() || d.byte().is_multiple_of(8) {
                Uuid::from_u128(u128::from(d.u32()))
            } else {
                h.ids[d.index(h.ids.len())]
            }
        };
        let command = match d.byte() % 5 {
            0 => Command::HangupCall { id: known(self, d) },
            1 => Command::HangupGroupcall { id: known(self, d) },
            2 | 3 => {
                let all = [
                    (AddressType::Sip, "sip:b@203.0.113.9:5070"),
                    (AddressType::Endpoint, "e2@test"),
                    (AddressType::Tel, "+15557654321"),
                    (AddressType::Groupcall, "800"),
                    (AddressType::Sip, "sip:y@dest.example.org"),
                ];
                let destinations = (0..1 + d.byte() % 3)
                    .map(|_| {
                        let (kind, target) = d.pick(&all);
                        ClickDestination { address: Address::new(kind, target), ring_timeout: None }
                    })
                    .collect();
                let source = d.pick(&["e1@test", "e2@test", "e3@test"]);
                Command::StartGroupcall(Box::new(ClickToCall {
                    customer_id: CUSTOMER,
                    source: Address::new(AddressType::Endpoint, source),
                    destinations,
                    ring_method: d
                        .pick(&[records::RingMethod::RingAll, records::RingMethod::Linear]),
                    answer_method: records::AnswerMethod::HangupOthers,
                }))
            }
            _ => Command::RemoveExtension {
                name: d.pick(&["e1", "e2", "e3"]).into(),
                domain: DOMAIN.into(),
            },
        };
        self.ask(command);
    }

    /// The end of an input: quiet, then every live call hung up, then quiet
    /// again; the switch must be idle.
    fn settle(&mut self) {
        self.auto_dns = true;
        for query in std::mem::take(&mut self.queries) {
            self.input(Input::Resolved { query, targets: Vec::new() });
        }
        if KNOWN_CLICK_TO_CALL_LEAKS {
            use records::CallStatus::{Dialing, Ringing};
            let unanswered: Vec<Uuid> = self
                .click_sources
                .iter()
                .filter(|(id, st)| self.live.contains(id) && matches!(st, Dialing | Ringing))
                .map(|(id, _)| *id)
                .collect();
            for id in unanswered {
                self.ask(Command::HangupCall { id });
            }
        }
        self.advance(Duration::from_secs(240));
        let known_stray = KNOWN_STRAY_2XX_LEAK && self.stray_2xx;
        assert!(
            known_stray || self.sw.stats().transactions == 0,
            "transactions left after 240 s of quiet: {:?}",
            self.sw.stats()
        );
        let live: Vec<Uuid> = self.live.iter().copied().collect();
        for id in live {
            let asked = self.next_command;
            self.ask(Command::HangupCall { id });
            let outcome = self.outcomes.iter().find(|(c, _)| *c == asked).map(|(_, o)| o.clone());
            assert_eq!(outcome, Some(CommandOutcome::Done), "hanging up live call {id}");
        }
        self.advance(Duration::from_secs(120));
        let mut known = 0;
        if KNOWN_CLICK_TO_CALL_LEAKS {
            for (id, st) in &self.click_sources {
                if *st == records::CallStatus::Hangup && self.live.remove(id) {
                    known += 1;
                }
            }
        }
        let stats = self.sw.stats();
        assert!(self.live.is_empty(), "calls never ended: {:?} ({stats:?})", self.live);
        if known == 0 {
            assert_eq!((stats.calls, stats.dialog_calls), (0, 0), "calls left: {stats:?}");
            assert!(
                known_stray || self.sw.is_idle(),
                "not idle after every call was hung up: {stats:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Data(data);
    let mut h = Harness::new(d.byte());
    for _ in 0..MAX_STEPS {
        if d.is_empty() {
            break;
        }
        h.step(&mut d);
    }
    h.settle();
});
