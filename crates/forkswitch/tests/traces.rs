//! Call traces (`[trace]`) of the real binary: after a ring group call made
//! with SIPp, `GET /v1.0/groupcalls/{id}/messages` has every message of
//! every leg in time order (the loser's CANCEL with its Reason header), a
//! call's own messages are only its leg's, another customer gets 404, the
//! pcap download opens in tshark as the same SIP messages; and a flood of
//! messages leaves the store within `[trace] max_bytes`.

mod common;

use common::fork::{ring_group_call, KEY, OTHER_KEY};
use common::http::Api;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;

fn messages(api: &Api, path: &str) -> Vec<Value> {
    api.get_ok(path)["result"].as_array().expect("result").clone()
}

fn first_line(m: &Value) -> String {
    m["message"].as_str().expect("message").lines().next().unwrap_or("").to_owned()
}

/// The messages of one leg: (direction, first line).
fn ladder(all: &[Value], call_id: &str) -> Vec<(String, String)> {
    all.iter()
        .filter(|m| m["call_id"] == call_id)
        .map(|m| (m["direction"].as_str().expect("direction").to_owned(), first_line(m)))
        .collect()
}

fn has(ladder: &[(String, String)], direction: &str, start: &str) -> bool {
    ladder.iter().any(|(d, l)| d == direction && l.starts_with(start))
}

#[test]
fn a_ring_group_calls_messages_as_json_and_pcap() {
    let server = ring_group_call("");
    let (root, legs) = finished_groupcall(&server);
    let api = Api::new(server.http, KEY);
    let all = messages(&api, &format!("/v1.0/groupcalls/{}/messages", root.id));

    // Time order, every field there.
    let times: Vec<&str> = all.iter().map(|m| m["time"].as_str().expect("time")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for m in &all {
        assert_eq!(m["transport"], "UDP", "{m}");
        for k in ["src", "dst", "call_id"] {
            assert!(m[k].as_str().is_some_and(|v| !v.is_empty()), "{k}: {m}");
        }
    }
    // The caller's leg: INVITE in, 200 out, ACK and BYE in.
    let inbound = db(&server).call(root.master_call_id).expect("read").expect("inbound call");
    let caller = ladder(&all, &inbound.sip_call_id);
    for (d, start) in [("in", "INVITE "), ("out", "SIP/2.0 200"), ("in", "ACK "), ("in", "BYE ")] {
        assert!(has(&caller, d, start), "caller leg lacks {d} {start}: {caller:?}");
    }
    // Each dialed leg: INVITE out; the winner's 200 in; the loser's CANCEL
    // out with the Reason header, and its 487 in.
    for leg in &legs {
        let l = ladder(&all, &leg.sip_call_id);
        assert!(has(&l, "out", "INVITE "), "{l:?}");
        if leg.id == root.answer_call_id {
            assert!(has(&l, "in", "SIP/2.0 200"), "{l:?}");
        } else {
            assert!(has(&l, "out", "CANCEL "), "{l:?}");
            assert!(has(&l, "in", "SIP/2.0 487"), "{l:?}");
            let cancel = all
                .iter()
                .find(|m| {
                    m["call_id"] == leg.sip_call_id.as_str() && first_line(m).starts_with("CANCEL")
                })
                .expect("cancel");
            let text = cancel["message"].as_str().expect("text");
            assert!(
                text.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
                "{text}"
            );
        }
    }
    let per_leg: usize = legs.iter().map(|l| ladder(&all, &l.sip_call_id).len()).sum();
    assert_eq!(all.len(), per_leg + caller.len(), "only this call's messages");

    // A call's own: its leg only.
    let loser = legs.iter().find(|c| c.id != root.answer_call_id).expect("a loser");
    let own = messages(&api, &format!("/v1.0/calls/{}/messages", loser.id));
    assert_eq!(own.len(), ladder(&all, &loser.sip_call_id).len());
    assert!(own.iter().all(|m| m["call_id"] == loser.sip_call_id.as_str()));
    // Another customer's key: 404, as for the records themselves.
    let other = Api::new(server.http, OTHER_KEY);
    other.get(&format!("/v1.0/groupcalls/{}/messages", root.id)).error(404, "NOT_FOUND");
    other.get(&format!("/v1.0/calls/{}/messages", loser.id)).error(404, "NOT_FOUND");

    // The pcap: tshark reads the same SIP messages.
    let head = format!(
        "GET /v1.0/groupcalls/{}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nAccept: application/vnd.tcpdump.pcap\r\n\r\n",
        root.id
    );
    let (status_line, pcap_bytes) = raw_get(server.http, &head);
    assert!(
        status_line.contains("200") && status_line.contains("application/vnd.tcpdump.pcap"),
        "{status_line}"
    );
    let pcap = server.dir.path().join("call.pcap");
    std::fs::write(&pcap, pcap_bytes).expect("write pcap");
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(["--enable-heuristic", "sip_udp", "-Y", "sip"])
        .args([
            "-T",
            "fields",
            "-e",
            "sip.Call-ID",
            "-e",
            "sip.CSeq.method",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
        ])
        .output()
        .expect("tshark (Debian; tests/peers.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), all.len(), "tshark's SIP packets:\n{text}");
    for (row, m) in rows.iter().zip(&all) {
        assert_eq!(row[0], m["call_id"].as_str().expect("call id"), "{text}");
        assert_eq!(format!("{}:{}", row[2], row[3]), m["src"].as_str().expect("src"));
    }
    assert!(rows.iter().any(|r| r[1] == "CANCEL"), "{text}");
}

/// One HTTP/1.1 request (`Connection: close`); the response head and its
/// body as bytes (the harness's client reads bodies as text).
fn raw_get(addr: std::net::SocketAddr, head: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    (String::from_utf8_lossy(&raw[..split]).to_lowercase(), raw[split + 4..].to_vec())
}

/// A flood of OPTIONS, each a fresh Call-ID with a 1 kB tail: the store
/// lets the oldest go and stays within its budget.
#[test]
fn a_flood_stays_within_the_trace_budget() {
    let budget = 1 << 20;
    let server = Server::start_with(&format!("[trace]\nmax_bytes = {budget}\nkeep_secs = 60\n"));
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    let pad = "x".repeat(1000);
    for i in 0..3000 {
        let mut m = options(local, server.udp, "UDP", &format!("flood-{i}"));
        m.push_str(&pad);
        sock.send_to(m.as_bytes(), server.udp).expect("send");
    }
    let api = Api::new(server.http, "none");
    let metric = |name: &str| -> u64 {
        let body = api.get("/metrics").body;
        let line = body.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or("");
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {body}"))
    };
    // Wait (bounded) until the store has let messages go.
    let deadline = std::time::Instant::now() + WAIT;
    while metric("forkswitch_trace_evicted_total") == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing evicted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let held = metric("forkswitch_trace_bytes");
    assert!(held <= budget, "the store holds {held} bytes, budget {budget}");
    assert!(held > budget / 2, "the store holds only {held} bytes");
}
