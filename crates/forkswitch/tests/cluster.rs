//! Two forkswitch nodes on one PostgreSQL (issue 25): node `a` on
//! 127.0.0.2, node `b` on 127.0.0.3, both on a throwaway PostgreSQL
//! cluster the test starts, with a 1 s lease renewed every 200 ms.
//!
//! - A phone registered on `a` is called through `b`: `b` learns the
//!   binding from the database, relays the leg through `a` (which holds the
//!   phone's flow), the call is answered, ACKed and hung up across the hop,
//!   and the records (in the one database) are `b`'s, the leg naming `a`
//!   as the node it was relayed through.
//! - `a` killed with `kill -9` while it carries a ringing call and relays
//!   one of `b`'s: within the lease `b` fails its leg through `a` (the
//!   caller gets a final answer, no timer waited for), closes `a`'s live
//!   records (hangup, local, failed: what `a` committed is there) and
//!   marks `a`'s bindings unreachable; `b`'s own records are its own.
//!   `a` restarted takes its id back (one incarnation more).

mod common;

use common::fork::{self, trusted};
use common::*;
use records::{CallStatus, Direction, HangupBy, HangupReason};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 1000;
const HEARTBEAT_MS: u64 = 200;

/// Node `id` on `ip`, UDP on a port picked now (other nodes must know it).
fn node(id: &str, ip: &str, url: &str) -> Server {
    let port = free_udp_port(ip);
    let text = format!(
        "[sip]\nudp = [\"{ip}:{port}\"]\ntcp = [\"{ip}:0\"]\n[log]\nlevel = \"debug\"\n\
         [database]\nurl = \"{url}\"\n[http]\nlisten = \"{ip}:0\"\n\
         [cluster]\nnode_id = \"{id}\"\nadvertise = \"{ip}:{port}\"\n\
         heartbeat_ms = {HEARTBEAT_MS}\nlease_ms = {LEASE_MS}\n{}\
         [[extensions]]\nname = \"test12\"\ndomain = \"test\"\npassword = \"pw12\"\n\
         [[extensions]]\nname = \"test13\"\ndomain = \"test\"\npassword = \"pw13\"\n",
        trusted(&fork::group(
            "800",
            "ring_all",
            &[("endpoint", "test12@test".into(), None), ("endpoint", "test13@test".into(), None)],
        ))
    );
    Server::start_text(&text)
}

/// A throwaway PostgreSQL, its database's URL, and nodes `a` and `b` on it.
fn two_nodes() -> (pgcluster::Cluster, String, Server, Server) {
    let pg = pgcluster::Cluster::start();
    let url = pg.database();
    let a = node("a", "127.0.0.2", &url);
    let b = node("b", "127.0.0.3", &url);
    (pg, url, a, b)
}

fn free_udp_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let port = ports::candidate();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port on {ip}");
}

/// Waits for `server` to hold at least `n` bindings of other nodes.
fn await_remote_bindings(server: &mut Server, n: u64) {
    server.wait_log(
        |v| v["message"] == "cluster: other nodes' bindings" && v["held"].as_u64() >= Some(n),
        WAIT,
        |_, _| {},
    );
}

/// Every call record in the database (both nodes').
fn all_calls(db: &dyn store::Store) -> Vec<records::Call> {
    db.list_calls(customer(), 200, None).expect("list calls")
}

/// Every call record, once (bounded) `n` of them are there, all ended.
fn ended_calls(db: &dyn store::Store, n: usize) -> Vec<records::Call> {
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = all_calls(db);
        if calls.len() == n && calls.iter().all(|c| c.status == CallStatus::Hangup) {
            return calls;
        }
        assert!(Instant::now() < deadline, "{n} ended call records: {calls:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_phone_registered_on_one_node_is_called_through_another() {
    let (_pg, url, a, mut b) = two_nodes();
    let phone = phone_registered_on(&a, "test12", "uas_answer.xml", &[]);
    await_remote_bindings(&mut b, 1);

    caller(b.dir.path(), b.udp, "test12", "uac.xml", &[]);
    phone.assert_ok();

    let db = store::open(&url, store::Options::default()).expect("db");
    let calls = ended_calls(db.as_ref(), 2);
    // a's API reads b's records (one database).
    let listed = common::http::Api::new(a.http, fork::KEY).get_ok("/v1.0/calls");
    let listed = listed["result"].as_array().expect("a list").clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|c| c["node_id"] == "b"), "{listed:?}");
    // Both records are b's (a relayed the leg and wrote none); the leg
    // names a, whose flow reached the phone.
    assert!(calls.iter().all(|c| c.node_id == "b"), "{calls:#?}");
    let leg = calls.iter().find(|c| c.direction == Direction::Outgoing).expect("the leg");
    assert_eq!(leg.relay_node_id, "a");
    assert_eq!(leg.destination.target, "test12@test");
    assert!(!leg.tm_progressing.is_not_yet(), "answered across the hop: {leg:?}");
    assert_eq!(leg.hangup_reason, HangupReason::Normal);
    let inbound = calls.iter().find(|c| c.direction == Direction::Incoming).expect("inbound");
    assert_eq!(inbound.relay_node_id, "");
    let bindings = db.load_bindings(records::Timestamp::from_micros(0)).expect("bindings");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!((bindings[0].node_id.as_str(), bindings[0].unreachable), ("a", false));

    // Only a node of the cluster may relay through a: a made-up token is
    // refused, and rings nothing.
    let contact = &bindings[0].contact;
    let forged = RawCaller::invite_with(
        a.udp,
        "test12",
        "forged",
        "X-Forkswitch-Hop: b;ts=0;mac=00000000000000000000000000000000\r\n",
    );
    assert_eq!(forged.status_at_least(200, WAIT), 403, "{contact}");
}

/// Group 800 rings test12 (on a) and test13 (on b) for a caller on b:
/// test13 answers, test12 (through a) gets CANCEL with the Reason header
/// b sent a; b's records show the whole groupcall.
#[test]
fn a_ring_group_over_two_nodes_cancels_the_other_node_s_phone_with_the_reason() {
    let (_pg, url, a, mut b) = two_nodes();
    let far = phone_registered_on(&a, "test12", "uas_ring_cancel_reason.xml", &[]);
    let near = phone_registered_on(&b, "test13", "uas_answer.xml", &["-d", "500"]);
    await_remote_bindings(&mut b, 1);

    caller(b.dir.path(), b.udp, "800", "uac.xml", &[]);
    far.assert_ok();
    near.assert_ok();

    let db = store::open(&url, store::Options::default()).expect("db");
    let calls = ended_calls(db.as_ref(), 3);
    assert!(calls.iter().all(|c| c.node_id == "b"), "{calls:#?}");
    let leg = |aor: &str| {
        calls.iter().find(|c| c.destination.target == aor).unwrap_or_else(|| panic!("{aor}"))
    };
    assert_eq!(
        (leg("test12@test").relay_node_id.as_str(), leg("test12@test").hangup_reason),
        ("a", HangupReason::Cancel)
    );
    assert_eq!(leg("test13@test").relay_node_id, "");
    assert!(!leg("test13@test").tm_progressing.is_not_yet());
}

/// An extension and a ring group made through b's API are in effect on a
/// within a heartbeat: the extension registers on a, and the group, called
/// on a, rings it.
#[test]
fn provisioning_made_on_one_node_is_in_effect_on_the_other() {
    let (_pg, _url, mut a, b) = two_nodes();
    let api = common::http::Api::new(b.http, fork::KEY);
    let body = serde_json::json!({"extension": "t50", "password": "pw-50"});
    api.post_ok("/v1.0/extensions", &body);
    let body = serde_json::json!({"number": "850", "destinations": [{"type": "endpoint", "target": "t50@test"}]});
    api.post_ok("/v1.0/ringgroups", &body);
    let made = Instant::now();
    a.wait_log(
        |v| {
            v["message"] == "cluster: provisioning changed"
                && v["extensions"] == 3
                && v["ring_groups"] == 2
        },
        WAIT,
        |_, _| {},
    );
    let took = made.elapsed();
    assert!(took < Duration::from_secs(1), "in effect on a after {took:?}");
    let register = |sock: &UdpSocket| {
        let resp = register_from(sock, a.udp, "t50", "pw-50");
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    };
    let unregister = |_| unregister_all(a.udp, "t50", "pw-50");
    let phone =
        Phone::start_announced(a.dir.path(), "uas_answer.xml", &[], None, register, unregister);
    caller(a.dir.path(), a.udp, "850", "uac.xml", &[]);
    phone.assert_ok();
}

/// PostgreSQL stopped for longer than a lease, then started again: every
/// lease ran out on its clock meanwhile, yet no node reaps another (each
/// judges again only after a lease of renewing), both keep their
/// incarnation, and a call still crosses the hop.
#[test]
fn postgres_restarted_under_the_nodes_reaps_nobody() {
    let (pg, url, mut a, mut b) = two_nodes();
    let phone = phone_registered_on(&a, "test12", "uas_answer.xml", &[]);
    await_remote_bindings(&mut b, 1);

    pg.stop();
    for n in [&mut a, &mut b] {
        n.wait_log(|v| v["message"] == "cluster: heartbeat failed", WAIT, |_, _| {});
    }
    // The outage is the scenario: longer than a lease.
    std::thread::sleep(Duration::from_millis(LEASE_MS * 3 / 2));
    pg.resume();
    for n in [&mut a, &mut b] {
        let judging = "cluster: database back for a lease: judging leases again";
        n.wait_log(|v| v["message"] == judging, WAIT, |_, _| {});
    }
    // One more heartbeat of judging on each, then the verdict.
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS * 2));
    let nodes = pg.psql_in(
        &db_name(&url),
        "SELECT node_id || ' ' || state || ' ' || incarnation FROM cluster_nodes ORDER BY 1",
    );
    assert_eq!(nodes.trim(), "a live 1\nb live 1");
    for n in [&a, &b] {
        let log = n.stdout_log();
        assert!(!log.contains("cluster: node down"), "a node was taken for dead");
        assert!(!log.contains("its records closed"), "a node was reaped");
    }
    caller(b.dir.path(), b.udp, "test12", "uac.xml", &[]);
    phone.assert_ok();
}

/// A phone that answers every new INVITE with 180 and nothing more.
struct RingingPhone {
    sock: UdpSocket,
    seen: Vec<String>,
}

impl RingingPhone {
    /// Rings one more INVITE (retransmissions of one already rung are
    /// skipped); returns its Call-ID.
    fn ring_next(&mut self) -> String {
        loop {
            let mut buf = vec![0; 65_535];
            let (n, node) = self.sock.recv_from(&mut buf).expect("an INVITE");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let id = call_id_of(msg.as_bytes());
            if !msg.starts_with("INVITE ") || self.seen.contains(&id) {
                continue;
            }
            let from = self.sock.local_addr().expect("addr");
            let ringing = format!(
                "SIP/2.0 180 Ringing\r\n{}\r\nContact: <sip:test12@{from}>\r\nContent-Length: 0\r\n\r\n",
                copied_headers(&msg, "p1")
            );
            self.sock.send_to(ringing.as_bytes(), node).expect("send 180");
            self.seen.push(id.clone());
            return id;
        }
    }
}

/// The Via, From, To (tagged), Call-ID and CSeq lines of a request, for
/// its response.
fn copied_headers(req: &str, tag: &str) -> String {
    let mut out = Vec::new();
    for line in req.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out.push(line.to_owned()),
            "to" | "t" => out.push(format!("{line};tag={tag}")),
            _ => {}
        }
    }
    out.join("\r\n")
}

/// A caller (a trusted carrier on 127.0.0.1) that sends one INVITE for
/// `user` to `server` and reads its answers.
struct RawCaller {
    sock: UdpSocket,
}

impl RawCaller {
    fn invite(server: SocketAddr, user: &str, call_id: &str) -> RawCaller {
        Self::invite_with(server, user, call_id, "")
    }

    /// [`RawCaller::invite`] with `extra` header lines (each ending CRLF).
    fn invite_with(server: SocketAddr, user: &str, call_id: &str, extra: &str) -> RawCaller {
        let sock = udp_client();
        let local = sock.local_addr().expect("addr");
        let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE sip:{user}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{call_id}\r\nTo: <sip:{user}@test>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sock.send_to(invite.as_bytes(), server).expect("send INVITE");
        RawCaller { sock }
    }

    /// The next response with a status of at least `min`, within `within`.
    fn status_at_least(&self, min: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no response >= {min} within {within:?}");
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = vec![0; 65_535];
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else { continue };
            let status = status_of(&buf[..n]);
            if status >= min {
                return status;
            }
        }
    }
}

#[test]
fn a_node_killed_has_its_records_closed_and_its_relayed_legs_failed_by_a_survivor() {
    let (pg, url, mut a, mut b) = two_nodes();
    let mut phone = RingingPhone { sock: udp_client(), seen: Vec::new() };
    let resp = register_from(&phone.sock, a.udp, "test12", "pw12");
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    await_remote_bindings(&mut b, 1);

    // A call a carries, ringing; and one b carries, relayed through a.
    let on_a = RawCaller::invite(a.udp, "test12", "on-a");
    phone.ring_next();
    assert_eq!(on_a.status_at_least(180, WAIT), 180);
    let on_b = RawCaller::invite(b.udp, "test12", "on-b");
    phone.ring_next();
    assert_eq!(on_b.status_at_least(180, WAIT), 180);
    // What a committed: its ringing call's records.
    let db = store::open(&url, store::Options::default()).expect("db");
    let deadline = Instant::now() + WAIT;
    while !all_calls(db.as_ref())
        .iter()
        .any(|c| c.node_id == "a" && c.status == CallStatus::Ringing)
    {
        assert!(Instant::now() < deadline, "a's ringing records: {:#?}", all_calls(db.as_ref()));
        std::thread::sleep(Duration::from_millis(20));
    }

    a.kill9();
    let killed = Instant::now();
    // b fails its leg through a once the lease runs out: its caller gets a
    // final answer long before any SIP timer (32 s) would fire.
    let status = on_b.status_at_least(300, Duration::from_millis(LEASE_MS * 4));
    assert!(status >= 400, "{status}");
    let failed_after = killed.elapsed();
    assert!(failed_after >= Duration::from_millis(LEASE_MS / 2), "{failed_after:?}");
    b.wait_log(
        |v| v["message"].as_str().is_some_and(|m| m.starts_with("cluster: node down")),
        WAIT,
        |_, _| {},
    );

    // A survivor closed a's live records; b's are b's, ended by b.
    let calls = ended_calls(db.as_ref(), 4);
    let of_a: Vec<_> = calls.iter().filter(|c| c.node_id == "a").collect();
    assert_eq!(of_a.len(), 2, "a's inbound call and its leg, as committed: {calls:#?}");
    for c in &of_a {
        assert_eq!(
            (c.hangup_by, c.hangup_reason),
            (HangupBy::Local, HangupReason::Failed),
            "{c:?}"
        );
    }
    let of_b: Vec<_> = calls.iter().filter(|c| c.node_id == "b").collect();
    assert_eq!(of_b.len(), 2, "{calls:#?}");
    let leg = of_b.iter().find(|c| c.direction == Direction::Outgoing).expect("b's leg");
    assert_eq!(leg.relay_node_id, "a");
    let bindings = db.load_bindings(records::Timestamp::from_micros(0)).expect("bindings");
    assert!(bindings.iter().all(|b| b.node_id == "a" && b.unreachable), "{bindings:?}");
    let reaped = pg.psql_in(&db_name(&url), "SELECT state FROM cluster_nodes WHERE node_id = 'a'");
    assert!(reaped.contains("dead"), "{reaped}");

    // a restarted takes its id back, one incarnation more, and its UDP
    // binding is reachable again.
    a.kill9_and_restart();
    let log = a.stdout_log();
    let joined: Vec<&str> = log.lines().filter(|l| l.contains("cluster: joined")).collect();
    assert_eq!(joined.len(), 2, "{joined:?}");
    assert!(joined[1].contains("\"incarnation\":2"), "{joined:?}");
    let state = pg.psql_in(
        &db_name(&url),
        "SELECT state || ' ' || incarnation FROM cluster_nodes WHERE node_id = 'a'",
    );
    assert!(state.contains("live 2"), "{state}");
    let bindings = db.load_bindings(records::Timestamp::from_micros(0)).expect("bindings");
    assert!(bindings.iter().all(|b| !b.unreachable), "{bindings:?}");
}

/// The database name of a `postgres://` URL.
fn db_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}
