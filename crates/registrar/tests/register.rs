//! REGISTER flows through `Registrar::handle`, with virtual time and
//! messages parsed from text.

use bytes::Bytes;
use records::{Binding, Customer, Domain, Timestamp};
use registrar::{
    extension_with_password, Accounts, Algorithm, BanAction, BanConfig, BindingChange, Registrar,
    RegistrarConfig,
};
use sip_message::digest::{QopAuth, RequestDigest};
use sip_message::{AuthParams, HeaderName, Message, Peer, Transport};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The database writer of the test: every [`BindingChange`] the registrar
/// queued, drained after each call as the owner does, one line each.
#[derive(Default)]
struct Recorder(Vec<String>);

impl Recorder {
    fn drain(&mut self, reg: &mut Registrar) {
        while let Some(c) = reg.poll_change() {
            self.0.push(match c {
                BindingChange::Upsert(b) => format!("upsert {} {}", b.aor, b.contact),
                BindingChange::Remove { aor, contact } => format!("remove {aor} {contact}"),
            });
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0)
    }
}

struct Env {
    reg: Registrar,
    rec: Recorder,
    t0: Instant,
    wall0: Timestamp,
}

fn accounts() -> Accounts {
    let cid = Uuid::from_u128(1);
    Accounts::new(
        vec![Customer { id: cid, name: "c".into(), api_keys: vec!["key".into()] }],
        vec![Domain {
            name: "test".into(),
            aliases: vec!["pbx.example.com".into()],
            customer_id: cid,
        }],
        vec![
            extension_with_password("test11", "test", "secret11"),
            extension_with_password("test12", "test", "secret12"),
        ],
    )
}

fn env_with(cfg: RegistrarConfig) -> Env {
    let rec = Recorder::default();
    let reg = Registrar::with_secret(cfg, accounts(), [3u8; 32]);
    Env { reg, rec, t0: Instant::now(), wall0: Timestamp::from_micros(1_700_000_000_000_000) }
}

fn env_seeded(seed: u64) -> Env {
    let reg = Registrar::new(RegistrarConfig::default(), accounts(), seed);
    let rec = Recorder::default();
    Env { reg, rec, t0: Instant::now(), wall0: Timestamp::from_micros(1_700_000_000_000_000) }
}

fn env() -> Env {
    env_with(RegistrarConfig::default())
}

fn peer(port: u16) -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: format!("192.0.2.10:{port}").parse().expect("addr"),
        local: "192.0.2.1:5060".parse().expect("addr"),
        conn: None,
    }
}

/// A REGISTER as text.
#[derive(Clone)]
struct Reg {
    ruri: String,
    to: String,
    call_id: String,
    cseq: u32,
    contacts: Vec<String>,
    expires: Option<u32>,
    extra: Vec<String>,
}

impl Reg {
    fn new(user: &str) -> Reg {
        Reg {
            ruri: "sip:test".into(),
            to: format!("<sip:{user}@test>"),
            call_id: format!("call-{user}"),
            cseq: 1,
            contacts: vec![format!("<sip:{user}@192.0.2.10:5060>")],
            expires: None,
            extra: Vec::new(),
        }
    }

    fn text(&self, auth: Option<&str>) -> String {
        let mut s = format!(
            "REGISTER {} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{}{}\r\nMax-Forwards: 70\r\nFrom: {};tag=ft\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n",
            self.ruri, self.call_id, self.cseq, self.to, self.to, self.call_id, self.cseq
        );
        for c in &self.contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        for x in &self.extra {
            s.push_str(x);
            s.push_str("\r\n");
        }
        if let Some(a) = auth {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str("User-Agent: TestPhone/1.0\r\nContent-Length: 0\r\n\r\n");
        s
    }

    fn msg(&self, auth: Option<&str>) -> Message {
        Message::parse(Bytes::from(self.text(auth))).expect("REGISTER parses")
    }
}

/// Serialises and re-parses a response, as a phone would see it.
fn wire(m: Message) -> Message {
    Message::parse(m.to_bytes()).expect("response parses")
}

fn challenge_nonce(resp: &Message, alg: Algorithm) -> String {
    for v in resp.header_values(HeaderName::WwwAuthenticate) {
        let p = AuthParams::parse(v).expect("challenge parses");
        if p.get("algorithm") == Some(alg.token().as_bytes()) {
            return String::from_utf8(p.get("nonce").expect("nonce").to_vec()).expect("utf8");
        }
    }
    panic!("no {alg:?} challenge")
}

fn authorization(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: u32, uri: &str) -> String {
    let ha1 = match alg {
        Algorithm::Md5 => registrar::ha1_md5(user, "test", pw),
        Algorithm::Sha256 => registrar::ha1_sha256(user, "test", pw),
    };
    let nc = format!("{nc:08x}");
    let qop = Some(QopAuth { nc: nc.as_bytes(), cnonce: b"0a4f113b", qop: b"auth" });
    let (method, uri_bytes) = (&b"REGISTER"[..], uri.as_bytes());
    let r = RequestDigest { algorithm: alg, nonce: nonce.as_bytes(), qop, method, uri: uri_bytes }
        .hex(&ha1);
    format!(
        "Digest username=\"{user}\", realm=\"test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"0a4f113b\"",
        alg.token()
    )
}

impl Env {
    fn at(&self, s: u64) -> (Instant, Timestamp) {
        let us = i64::try_from(s).expect("small") * 1_000_000;
        (self.t0 + Duration::from_secs(s), Timestamp::from_micros(self.wall0.micros() + us))
    }

    fn send(&mut self, s: u64, r: &Reg, auth: Option<&str>, p: Peer) -> Option<Message> {
        let (now, wall) = self.at(s);
        let out = self.reg.handle(now, wall, &r.msg(auth), &p).map(wire);
        self.rec.drain(&mut self.reg);
        out
    }

    /// [`Registrar::sweep`], persisting what it removed.
    fn sweep(&mut self, now: Instant, wall: Timestamp) -> Vec<(String, Binding)> {
        let gone = self.reg.sweep(now, wall);
        self.rec.drain(&mut self.reg);
        gone
    }

    /// Unauthenticated attempt, then the answer to its challenge.
    fn register_as(&mut self, s: u64, r: &Reg, user: &str, pw: &str, p: Peer) -> Message {
        let c = self.send(s, r, None, p).expect("answered");
        assert_eq!(c.status(), Some(401));
        let nonce = challenge_nonce(&c, Algorithm::Sha256);
        let mut r2 = r.clone();
        r2.cseq += 1;
        let a = authorization(Algorithm::Sha256, user, pw, &nonce, 1, &r.ruri);
        self.send(s, &r2, Some(&a), p).expect("answered")
    }

    fn register(&mut self, s: u64, r: &Reg, p: Peer) -> Message {
        let user = r.to.trim_start_matches("<sip:").split('@').next().expect("user").to_owned();
        let pw = format!("secret{}", user.trim_start_matches("test"));
        self.register_as(s, r, &user, &pw, p)
    }

    fn aor(&self, aor: &str, s: u64) -> Vec<Binding> {
        self.reg.location().lookup(aor, self.at(s).1)
    }
}

fn contacts(m: &Message) -> Vec<String> {
    m.values(HeaderName::Contact).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

#[test]
fn unauthenticated_register_gets_two_challenges() {
    let mut e = env();
    let r = e.send(0, &Reg::new("test11"), None, peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(401));
    assert!(r.to_tag().is_some());
    let ch: Vec<AuthParams> = r
        .header_values(HeaderName::WwwAuthenticate)
        .map(|v| AuthParams::parse(v).expect("parse"))
        .collect();
    assert_eq!(ch.len(), 2);
    assert_eq!(ch[0].get("algorithm"), Some(&b"SHA-256"[..]));
    assert_eq!(ch[1].get("algorithm"), Some(&b"MD5"[..]));
    for c in &ch {
        assert!(c.is_digest());
        assert_eq!(c.get("realm"), Some(&b"test"[..]));
        assert_eq!(c.get("qop"), Some(&b"auth"[..]));
        assert_eq!(c.get("stale"), None);
    }
    assert!(e.aor("test11@test", 0).is_empty());
}

#[test]
fn authenticated_register_lists_binding() {
    let mut e = env();
    let r = e.register(0, &Reg::new("test11"), peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(contacts(&r), ["<sip:test11@192.0.2.10:5060>;expires=3600"]);
    assert!(r.header(HeaderName::Date).is_some_and(|d| d.ends_with(b" GMT")));
    assert!(r.to_tag().is_some());
    let b = e.aor("test11@test", 0);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].source, peer(5060).remote);
    assert_eq!(b[0].transport, "UDP");
    assert_eq!(b[0].local, peer(5060).local);
    assert_eq!(b[0].call_id, "call-test11");
    assert_eq!(b[0].cseq, 2);
    assert_eq!(b[0].user_agent, "TestPhone/1.0");
    assert_eq!(e.rec.take(), ["upsert test11@test sip:test11@192.0.2.10:5060"]);
}

#[test]
fn md5_credentials_work_too() {
    let mut e = env();
    let reg = Reg::new("test12");
    let c = e.send(0, &reg, None, peer(5060)).expect("answered");
    let nonce = challenge_nonce(&c, Algorithm::Md5);
    let a = authorization(Algorithm::Md5, "test12", "secret12", &nonce, 1, "sip:test");
    let r = e.send(0, &reg, Some(&a), peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(200));
}

#[test]
fn tcp_binding_keeps_connection() {
    let mut e = env();
    let p = Peer { transport: Transport::Tcp, conn: Some(77), ..peer(40000) };
    let r = e.register(0, &Reg::new("test11"), p);
    assert_eq!(r.status(), Some(200));
    let l = e.reg.location().locations("test11@test", e.at(0).1);
    assert_eq!(l[0].conn, Some(77));
    assert_eq!(l[0].binding.transport, "TCP");
    let t = l[0].target();
    assert_eq!((t.transport, t.remote, t.conn), (Transport::Tcp, p.remote, Some(77)));
}

#[test]
fn refresh_then_expires_zero_removes() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    reg.cseq = 3;
    reg.expires = Some(600);
    let r = e.register(100, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(contacts(&r), ["<sip:test11@192.0.2.10:5060>;expires=600"]);
    let b = e.aor("test11@test", 100);
    assert_eq!(b.len(), 1, "a refresh does not add a binding");
    assert_eq!(b[0].cseq, 4);
    assert_eq!(b[0].expires_at, e.at(700).1);
    reg.cseq = 5;
    reg.contacts = vec!["<sip:test11@192.0.2.10:5060>;expires=0".into()];
    reg.expires = None;
    let r = e.register(200, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert!(contacts(&r).is_empty());
    assert!(e.aor("test11@test", 200).is_empty());
    assert_eq!(
        e.rec.take(),
        [
            "upsert test11@test sip:test11@192.0.2.10:5060",
            "upsert test11@test sip:test11@192.0.2.10:5060",
            "remove test11@test sip:test11@192.0.2.10:5060",
        ]
    );
}

#[test]
fn expires_header_zero_removes_and_query_lists() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    // A query (no Contact) lists the bindings and changes nothing.
    let mut q = reg.clone();
    q.contacts.clear();
    q.cseq = 10;
    let r = e.register(10, &q, peer(5060));
    assert_eq!(contacts(&r), ["<sip:test11@192.0.2.10:5060>;expires=3590"]);
    reg.cseq = 20;
    reg.expires = Some(0);
    assert_eq!(e.register(20, &reg, peer(5060)).status(), Some(200));
    assert!(e.aor("test11@test", 20).is_empty());
}

#[test]
fn star_removes_all_and_needs_expires_zero_alone() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.contacts =
        vec!["<sip:test11@192.0.2.10:5060>".into(), "<sip:test11@192.0.2.10:5062>;q=0.5".into()];
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    assert_eq!(e.aor("test11@test", 0).len(), 2);

    let mut bad = reg.clone();
    bad.cseq = 10;
    bad.contacts = vec!["*".into(), "<sip:test11@192.0.2.10:5060>".into()];
    bad.expires = Some(0);
    assert_eq!(e.register(1, &bad, peer(5060)).status(), Some(400));
    bad.contacts = vec!["*".into()];
    bad.expires = None;
    assert_eq!(e.register(1, &bad, peer(5060)).status(), Some(400));
    bad.expires = Some(60);
    assert_eq!(e.register(1, &bad, peer(5060)).status(), Some(400));
    assert_eq!(e.aor("test11@test", 1).len(), 2);

    let mut star = reg.clone();
    star.call_id = "another-call".into();
    star.contacts = vec!["*".into()];
    star.expires = Some(0);
    let r = e.register(2, &star, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert!(contacts(&r).is_empty());
    assert!(e.aor("test11@test", 2).is_empty());
    assert_eq!(e.reg.location().aor_count(), 0);
}

#[test]
fn star_with_stale_cseq_fails() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.cseq = 50;
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    let mut star = reg.clone();
    star.cseq = 10; // same Call-ID, lower CSeq (and 11 after the challenge)
    star.contacts = vec!["*".into()];
    star.expires = Some(0);
    assert_eq!(e.register(1, &star, peer(5060)).status(), Some(500));
    assert_eq!(e.aor("test11@test", 1).len(), 1);
}

#[test]
fn interval_too_brief_and_clamping() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.expires = Some(30);
    let r = e.register(0, &reg, peer(5060));
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.min_expires().expect("parses"), Some(60));
    assert!(e.aor("test11@test", 0).is_empty());
    // The contact parameter wins over the header.
    reg.contacts = vec!["<sip:test11@192.0.2.10:5060>;expires=20".into()];
    reg.expires = Some(3600);
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(423));
    reg.contacts = vec!["<sip:test11@192.0.2.10:5060>;expires=100000".into()];
    let r = e.register(0, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(contacts(&r), ["<sip:test11@192.0.2.10:5060>;expires=7200"]);
    reg.cseq = 10;
    reg.contacts = vec!["<sip:test11@192.0.2.10:5060>".into()];
    reg.expires = Some(60);
    let r = e.register(0, &reg, peer(5060));
    assert_eq!(contacts(&r), ["<sip:test11@192.0.2.10:5060>;expires=60"]);
}

#[test]
fn cseq_ordering() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.cseq = 100;
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200)); // stored CSeq 101
    let before = e.aor("test11@test", 0);
    let mut old = reg.clone();
    old.cseq = 99; // the authenticated retry carries 100: not above 101
    old.expires = Some(600);
    let r = e.register(1, &old, peer(5060));
    assert_eq!(r.status(), Some(500));
    assert_eq!(e.aor("test11@test", 1), before, "no change");
    // Another Call-ID replaces the binding whatever its CSeq.
    let mut other = reg.clone();
    other.call_id = "new-call".into();
    other.cseq = 1;
    other.expires = Some(600);
    assert_eq!(e.register(2, &other, peer(5060)).status(), Some(200));
    let b = e.aor("test11@test", 2);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].call_id.as_str(), b[0].cseq), ("new-call", 2));
}

#[test]
fn instance_replaces_binding_from_new_port() {
    let mut e = env();
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1";
    let mut reg = Reg::new("test11");
    reg.contacts = vec![format!("<sip:test11@192.0.2.10:5060;ob>;{inst}")];
    reg.extra = vec!["Supported: outbound, path".into()];
    let r = e.register(0, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.header(HeaderName::Require), Some(&b"outbound"[..]));
    // NAT rebinding: new source port, new contact URI, new Call-ID.
    let mut again = reg.clone();
    again.call_id = "after-rebind".into();
    again.contacts = vec![format!(
        "<sip:test11@192.0.2.10:41234;ob>;{}",
        inst.replace("0A95A0E128", "0a95a0e128")
    )];
    let r = e.register(5, &again, peer(41234));
    assert_eq!(r.status(), Some(200));
    let c = contacts(&r);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0]
        .starts_with("<sip:test11@192.0.2.10:41234;ob>;expires=3600;+sip.instance=\"<urn:uuid:"));
    assert!(c[0].ends_with(">\";reg-id=1"));
    let b = e.aor("test11@test", 5);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].source.port(), 41234);
    assert_eq!(b[0].reg_id, Some(1));
    assert_eq!(
        e.rec.take(),
        [
            "upsert test11@test sip:test11@192.0.2.10:5060;ob",
            "remove test11@test sip:test11@192.0.2.10:5060;ob",
            "upsert test11@test sip:test11@192.0.2.10:41234;ob",
        ]
    );
    // A second flow (reg-id 2) of the same instance is a second binding.
    let mut flow2 = again.clone();
    flow2.cseq = 10;
    flow2.contacts =
        vec![format!("<sip:test11@192.0.2.10:41300;ob>;{}", inst.replace("reg-id=1", "reg-id=2"))];
    assert_eq!(e.register(6, &flow2, peer(41300)).status(), Some(200));
    assert_eq!(e.aor("test11@test", 6).len(), 2);
}

#[test]
fn without_instance_a_new_port_is_a_new_binding() {
    let mut e = env();
    let reg = Reg::new("test11");
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    let mut other = reg.clone();
    other.cseq = 10;
    other.contacts = vec!["<sip:test11@192.0.2.10:5070>".into()];
    assert_eq!(e.register(1, &other, peer(5070)).status(), Some(200));
    assert_eq!(e.aor("test11@test", 1).len(), 2);
}

#[test]
fn two_contacts_sorted_by_q() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.contacts = vec![
        "<sip:test11@192.0.2.10:5060>;q=0.3".into(),
        "<sip:test11@192.0.2.11:5060>;q=0.9, <sip:test11@192.0.2.12:5060>".into(),
    ];
    let r = e.register(0, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(
        contacts(&r),
        [
            "<sip:test11@192.0.2.12:5060>;expires=3600",
            "<sip:test11@192.0.2.11:5060>;expires=3600;q=0.9",
            "<sip:test11@192.0.2.10:5060>;expires=3600;q=0.3",
        ]
    );
    let qs: Vec<u16> = e.aor("test11@test", 0).iter().map(|b| b.q).collect();
    assert_eq!(qs, [1000, 900, 300]);
}

#[test]
fn too_many_bindings() {
    let mut e = env_with(RegistrarConfig { max_bindings_per_aor: 2, ..RegistrarConfig::default() });
    let mut reg = Reg::new("test11");
    reg.contacts = (0..3).map(|k| format!("<sip:test11@192.0.2.10:{}>", 6000 + k)).collect();
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(403));
    for k in 0..3u16 {
        let mut one = reg.clone();
        one.call_id = format!("c{k}");
        one.contacts = vec![format!("<sip:test11@192.0.2.10:{}>", 6000 + k)];
        assert_eq!(e.register(u64::from(k), &one, peer(6000 + k)).status(), Some(200));
    }
    let b = e.aor("test11@test", 3);
    let ports: Vec<&str> = b.iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(ports, ["sip:test11@192.0.2.10:6001", "sip:test11@192.0.2.10:6002"]);
}

#[test]
fn unknown_domain_and_aliases() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.to = "<sip:test11@elsewhere.example>".into();
    reg.ruri = "sip:elsewhere.example".into();
    let r = e.send(0, &reg, None, peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(404));
    // An alias is the same domain (realm is the canonical name).
    let mut alias = Reg::new("test11");
    alias.to = "<sip:test11@PBX.example.com>".into();
    alias.ruri = "sip:192.0.2.1".into();
    let r = e.register(0, &alias, peer(5060));
    assert_eq!(r.status(), Some(200));
    assert_eq!(e.aor("test11@test", 0).len(), 1);
    // tel: To is not an AOR here.
    let mut tel = Reg::new("test11");
    tel.to = "<tel:+15551234567>".into();
    assert_eq!(e.send(0, &tel, None, peer(5060)).expect("answered").status(), Some(404));
}

#[test]
fn unknown_user_looks_like_wrong_password() {
    let mut e = env();
    let shape = |m: &Message| -> (Option<u16>, Vec<u8>, Vec<String>) {
        let names = m.headers().map(|h| String::from_utf8_lossy(h.raw_name).into_owned()).collect();
        (m.status(), m.reason_phrase().to_vec(), names)
    };
    let known = e.send(0, &Reg::new("test11"), None, peer(5060)).expect("answered");
    let unknown = e.send(0, &Reg::new("nobody"), None, peer(5060)).expect("answered");
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(known.status(), Some(401));

    let wrong = e.register_as(0, &Reg::new("test11"), "test11", "guess", peer(5060));
    let nobody = e.register_as(0, &Reg::new("nobody"), "nobody", "guess", peer(5060));
    assert_eq!(wrong.status(), Some(403));
    assert_eq!(shape(&wrong), shape(&nobody));
    assert!(e.reg.location().is_empty());
}

#[test]
fn authenticated_user_must_be_the_to_user() {
    let mut e = env();
    let reg = Reg::new("test11");
    let r = e.register_as(0, &reg, "test12", "secret12", peer(5060));
    assert_eq!(r.status(), Some(403));
    assert!(e.reg.location().is_empty());
    assert!(!e.reg.limiter().is_banned(peer(5060).remote.ip(), e.at(0).0));
}

#[test]
fn stale_nonce_and_replay() {
    let mut e = env();
    let reg = Reg::new("test11");
    let c = e.send(0, &reg, None, peer(5060)).expect("answered");
    let nonce = challenge_nonce(&c, Algorithm::Sha256);
    let a = authorization(Algorithm::Sha256, "test11", "secret11", &nonce, 1, "sip:test");
    // Past the lifetime: a new challenge, stale=true.
    let r = e.send(301, &reg, Some(&a), peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(401));
    for v in r.header_values(HeaderName::WwwAuthenticate) {
        assert_eq!(AuthParams::parse(v).expect("parse").get("stale"), Some(&b"true"[..]));
    }
    // In time it works once; the same nc again is refused (stale, no 200).
    let r = e.send(10, &reg, Some(&a), peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(200));
    let mut replay = reg.clone();
    replay.cseq = 9;
    let r = e.send(11, &replay, Some(&a), peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(401));
    // The next nc on the same nonce is fine.
    let a2 = authorization(Algorithm::Sha256, "test11", "secret11", &nonce, 2, "sip:test");
    replay.cseq = 10;
    assert_eq!(e.send(12, &replay, Some(&a2), peer(5060)).expect("answered").status(), Some(200));
}

#[test]
fn digest_uri_must_match_request_uri() {
    let mut e = env();
    let reg = Reg::new("test11");
    let c = e.send(0, &reg, None, peer(5060)).expect("answered");
    let nonce = challenge_nonce(&c, Algorithm::Sha256);
    let a = authorization(Algorithm::Sha256, "test11", "secret11", &nonce, 1, "sip:other");
    assert_eq!(e.send(0, &reg, Some(&a), peer(5060)).expect("answered").status(), Some(403));
}

#[test]
fn ban_after_failures() {
    let mut e = env_with(RegistrarConfig {
        ban: BanConfig { max_failures: 3, ..BanConfig::default() },
        ..RegistrarConfig::default()
    });
    let reg = Reg::new("test11");
    for k in 0..3 {
        let r = e.register_as(k, &reg, "test11", "guess", peer(5060));
        assert_eq!(r.status(), Some(403));
    }
    // Banned: even good credentials (and unauthenticated requests) get 403.
    let r = e.send(4, &reg, None, peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(403));
    // Another source is not affected.
    let other = Peer { remote: "198.51.100.7:5060".parse().expect("addr"), ..peer(5060) };
    assert_eq!(e.send(4, &reg, None, other).expect("answered").status(), Some(401));
    // After the ban it works again.
    let r = e.register(310, &reg, peer(5060));
    assert_eq!(r.status(), Some(200));
}

#[test]
fn ban_can_drop() {
    let mut e = env_with(RegistrarConfig {
        ban: BanConfig { max_failures: 1, action: BanAction::Drop, ..BanConfig::default() },
        ..RegistrarConfig::default()
    });
    let reg = Reg::new("test11");
    assert_eq!(e.register_as(0, &reg, "test11", "guess", peer(5060)).status(), Some(403));
    assert!(e.send(1, &reg, None, peer(5060)).is_none());
}

#[test]
fn expiry_sweep() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.contacts = vec![
        "<sip:test11@192.0.2.10:5060>;expires=60".into(),
        "<sip:test11@192.0.2.10:5062>;expires=120".into(),
    ];
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(200));
    e.rec.take();
    let (now, wall) = e.at(60);
    let gone = e.sweep(now, wall);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0, "test11@test");
    assert_eq!(gone[0].1.contact, "sip:test11@192.0.2.10:5060");
    assert_eq!(e.rec.take(), ["remove test11@test sip:test11@192.0.2.10:5060"]);
    assert_eq!(e.aor("test11@test", 60).len(), 1);
    assert_eq!(e.aor("test11@test", 120).len(), 0, "lookup hides expired before the sweep");
    let (now, wall) = e.at(121);
    assert_eq!(e.sweep(now, wall).len(), 1);
    assert!(e.reg.location().is_empty());
}

#[test]
fn bad_requests() {
    let mut e = env();
    let mut reg = Reg::new("test11");
    reg.extra = vec!["Require: foo, outbound".into()];
    let r = e.send(0, &reg, None, peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(420));
    assert_eq!(r.header(HeaderName::Unsupported), Some(&b"foo"[..]));
    let text = Reg::new("test11").text(None).replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE");
    let m = Message::parse(Bytes::from(text)).expect("parse");
    let (now, wall) = e.at(0);
    let r = e.reg.handle(now, wall, &m, &peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(400));
    let text = Reg::new("test11").text(None).replacen("REGISTER sip:test", "OPTIONS sip:test", 1);
    let m = Message::parse(Bytes::from(text)).expect("parse");
    let r = e.reg.handle(now, wall, &m, &peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(405));
    let mut reg = Reg::new("test11");
    reg.contacts = vec!["<sip:test11@192.0.2.10:5060>;q=2".into()];
    assert_eq!(e.register(0, &reg, peer(5060)).status(), Some(400));
}

/// The same conversation with a registrar: the challenge, the registration
/// answering it, and a second challenge later; every response as bytes.
fn conversation(e: &mut Env) -> Vec<Vec<u8>> {
    let reg = Reg::new("test11");
    let (now, wall) = e.at(0);
    let c = e.reg.handle(now, wall, &reg.msg(None), &peer(5060)).expect("answered");
    let nonce = challenge_nonce(&wire(c.clone()), Algorithm::Sha256);
    let a = authorization(Algorithm::Sha256, "test11", "secret11", &nonce, 1, "sip:test");
    let mut r2 = reg.clone();
    r2.cseq = 2;
    let ok = e.reg.handle(now, wall, &r2.msg(Some(&a)), &peer(5060)).expect("answered");
    assert_eq!(ok.status(), Some(200));
    let (now, wall) = e.at(7);
    let again = e.reg.handle(now, wall, &reg.msg(None), &peer(5060)).expect("answered");
    [c, ok, again].into_iter().map(|m| m.to_bytes().to_vec()).collect()
}

#[test]
fn same_seed_gives_byte_identical_answers() {
    let (mut a, mut b) = (env_seeded(2024), env_seeded(2024));
    // Different base instants: only the times relative to the first one count.
    b.t0 += Duration::from_secs(1000);
    let x = conversation(&mut a);
    let y = conversation(&mut b);
    assert_eq!(x, y);
    let first = Message::parse(Bytes::from(x[0].clone())).expect("parse");
    let last = Message::parse(Bytes::from(x[2].clone())).expect("parse");
    assert_eq!(first.status(), Some(401));
    assert_ne!(
        challenge_nonce(&first, Algorithm::Sha256),
        challenge_nonce(&last, Algorithm::Sha256),
        "every challenge has a new nonce"
    );
    assert_ne!(first.to_tag(), last.to_tag(), "and a new To tag");
    // With a given secret, deterministic as well.
    assert_eq!(conversation(&mut env()), conversation(&mut env()));
}

#[test]
fn different_seeds_give_different_nonces() {
    let mut a = env_seeded(1);
    let mut b = env_seeded(2);
    let (x, y) = (conversation(&mut a), conversation(&mut b));
    for (m, n) in x.iter().zip(&y) {
        let (m, n) = (
            Message::parse(Bytes::from(m.clone())).expect("parse"),
            Message::parse(Bytes::from(n.clone())).expect("parse"),
        );
        assert_eq!(m.status(), n.status());
        assert_ne!(m.to_tag(), n.to_tag());
    }
    let (m, n) = (
        Message::parse(Bytes::from(x[0].clone())).expect("parse"),
        Message::parse(Bytes::from(y[0].clone())).expect("parse"),
    );
    assert_ne!(challenge_nonce(&m, Algorithm::Sha256), challenge_nonce(&n, Algorithm::Sha256));
    // A nonce from one is not taken by the other (another secret): stale.
    let nonce = challenge_nonce(&m, Algorithm::Sha256);
    let auth = authorization(Algorithm::Sha256, "test11", "secret11", &nonce, 2, "sip:test");
    let mut reg = Reg::new("test11");
    reg.cseq = 20;
    let r = b.send(8, &reg, Some(&auth), peer(5060)).expect("answered");
    assert_eq!(r.status(), Some(401));
    let stale = r
        .header_values(HeaderName::WwwAuthenticate)
        .all(|v| AuthParams::parse(v).expect("parse").get("stale") == Some(&b"true"[..]));
    assert!(stale);
}

#[test]
fn closed_flow_is_unreachable_until_it_registers_again() {
    let mut e = env();
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1";
    let tcp = |port, conn| Peer { transport: Transport::Tcp, conn: Some(conn), ..peer(port) };
    let mut reg = Reg::new("test11");
    reg.contacts = vec![format!("<sip:test11@192.0.2.10:40000;transport=tcp;ob>;{inst}")];
    reg.extra = vec!["Supported: outbound".into()];
    assert_eq!(e.register(0, &reg, tcp(40000, 5)).status(), Some(200));
    let wall = e.at(1).1;
    assert_eq!(e.reg.location().reachable("test11@test", wall).len(), 1);
    e.rec.take();

    // The flow fails: the binding stays registered but cannot be reached.
    assert_eq!(e.reg.location_mut().connection_closed(5), 1);
    assert!(e.rec.take().is_empty(), "nothing to persist");
    assert_eq!(e.reg.poll_change(), None);
    let l = e.reg.location().locations("test11@test", wall);
    assert_eq!(l.len(), 1);
    assert!(l[0].closed);
    assert_eq!(l[0].conn, None);
    assert!(e.reg.location().reachable("test11@test", wall).is_empty());

    // The phone opens a new flow and registers again (same instance/reg-id,
    // new port): a fresh binding, reachable over the new connection.
    let mut again = reg.clone();
    again.cseq = 10;
    again.contacts = vec![format!("<sip:test11@192.0.2.10:40002;transport=tcp;ob>;{inst}")];
    let r = e.register(2, &again, tcp(40002, 6));
    assert_eq!(r.status(), Some(200));
    assert_eq!(contacts(&r).len(), 1);
    let wall = e.at(3).1;
    let r = e.reg.location().reachable("test11@test", wall);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].closed, r[0].conn), (false, Some(6)));
    assert_eq!(r[0].binding.source.port(), 40002);
    assert_eq!(
        e.rec.take(),
        [
            "remove test11@test sip:test11@192.0.2.10:40000;transport=tcp;ob",
            "upsert test11@test sip:test11@192.0.2.10:40002;transport=tcp;ob",
        ]
    );

    // Refreshing the same contact over a new connection clears `closed` too.
    assert_eq!(e.reg.location_mut().connection_closed(6), 1);
    assert!(e.reg.location().reachable("test11@test", wall).is_empty());
    let mut refresh = again.clone();
    refresh.cseq = 20;
    assert_eq!(e.register(4, &refresh, tcp(40002, 7)).status(), Some(200));
    let r = e.reg.location().reachable("test11@test", e.at(5).1);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].closed, r[0].conn), (false, Some(7)));
}

#[test]
fn owner_api_accounts_and_location() {
    let mut e = env();
    assert_eq!(e.register(0, &Reg::new("test11"), peer(5060)).status(), Some(200));
    e.rec.take();
    assert!(e.reg.accounts().extension("test12", "test").is_some());
    // Accounts replaced: test12 is gone, its REGISTER is challenged then 403.
    let cid = Uuid::from_u128(1);
    e.reg.set_accounts(Accounts::new(
        vec![Customer { id: cid, name: "c".into(), api_keys: vec![] }],
        vec![Domain { name: "test".into(), aliases: vec![], customer_id: cid }],
        vec![extension_with_password("test11", "test", "secret11")],
    ));
    assert!(e.reg.accounts().extension("test12", "test").is_none());
    assert_eq!(e.register(1, &Reg::new("test12"), peer(5061)).status(), Some(403));
    let aors: Vec<(String, usize)> =
        e.reg.location().aors().map(|(a, l)| (a.to_owned(), l.len())).collect();
    assert_eq!(aors, [("test11@test".to_owned(), 1)]);
    // Removing the AOR through the owner's handle queues the removal.
    assert_eq!(e.reg.location_mut().remove_aor("test11@test").len(), 1);
    assert_eq!(
        e.reg.poll_change(),
        Some(BindingChange::Remove {
            aor: "test11@test".into(),
            contact: "sip:test11@192.0.2.10:5060".into()
        })
    );
    assert_eq!(e.reg.poll_change(), None);
    // Limiter and digest are reachable for other requests.
    let ip = peer(5060).remote.ip();
    let now = e.at(2).0;
    assert!(!e.reg.limiter_mut().record_failure(ip, now));
    assert!(!e.reg.limiter().is_banned(ip, now));
    let n = e.reg.digest_mut().nonce(now, "test");
    assert_eq!(n.len(), 64);
    assert_eq!(e.reg.digest().tracked_nonces(), 1, "the nonce test11 registered with");
}
