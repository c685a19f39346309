//! The harness's own port handling (common/ports.rs): readiness read from
//! /proc without touching the port, and starts that move to a fresh port
//! when theirs is taken.

mod common;

use common::ports::{self, Proto};
use common::*;
use std::process::Command;

#[test]
fn held_by_sees_the_process_s_own_sockets_only() {
    let udp = ports::udp_peer();
    let port = udp.local_addr().expect("addr").port();
    let me = std::process::id();
    assert!(ports::held_by(me, Proto::Udp, port));
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    assert!(ports::held_by(me, Proto::Tcp, tcp.local_addr().expect("addr").port()));
    // Another process does not hold them, and a port nobody has is not held.
    let mut other = Command::new("sleep").arg("5").spawn().expect("sleep");
    assert!(!ports::held_by(other.id(), Proto::Udp, port));
    let _ = other.kill();
    let _ = other.wait();
    assert!(!ports::held_by(me, Proto::Udp, ports::candidate()));
}

#[test]
fn candidates_are_outside_the_ephemeral_range_and_never_repeat() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("range");
    let eph: Vec<u16> = range.split_whitespace().map(|v| v.parse().expect("port")).collect();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let p = ports::candidate();
        assert!(p < eph[0] || p > eph[1] || eph[0] <= 20000, "{p} is ephemeral ({eph:?})");
        assert!(seen.insert(p), "{p} handed out twice");
    }
}

#[test]
fn sipp_whose_port_is_taken_starts_on_a_fresh_one() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = ports::bind_udp_candidate();
    let taken_port = taken.local_addr().expect("addr").port();
    let mut offered = vec![taken_port];
    let mut sipp = ports::spawn_on_ports(
        "phone sipp uas_answer.xml",
        Proto::Udp,
        || offered.pop().unwrap_or_else(ports::candidate),
        |port| phone_command(dir.path(), "uas_answer.xml", &[], port),
    );
    assert_ne!(sipp.port, taken_port);
    assert!(sipp.status().is_none(), "{}", sipp.output());
    assert!(ports::held_by(sipp.pid(), Proto::Udp, sipp.port));
    assert!(ports::held_by(std::process::id(), Proto::Udp, taken_port), "ours all along");
}

#[test]
fn announced_phone_withdraws_a_lost_port_and_announces_a_fresh_one() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = ports::bind_udp_candidate();
    let taken_port = taken.local_addr().expect("addr").port();
    let mut announced = Vec::new();
    let mut withdrawn = Vec::new();
    let phone = Phone::start_announced(
        dir.path(),
        "uas_answer.xml",
        &[],
        Some(taken_port),
        |sock| announced.push(sock.local_addr().expect("addr").port()),
        |port| withdrawn.push(port),
    );
    assert_eq!(withdrawn, [taken_port]);
    assert_eq!(announced, [phone.port]);
}

#[test]
fn a_child_that_exits_for_another_reason_is_returned_not_retried() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo scenario error >&2; exit 3"]);
    let mut run = ports::spawn_on("sh", Proto::Udp, ports::candidate(), cmd)
        .unwrap_or_else(|out| panic!("not a bind failure: {out}"));
    assert_eq!(run.status().and_then(|s| s.code()), Some(3));
    assert!(run.stderr().contains("scenario error"));
}

#[test]
fn a_child_that_never_binds_fails_with_its_output() {
    let failed = std::panic::catch_unwind(|| {
        ports::spawn_on_free_port("sh", Proto::Udp, |port| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("echo Unable to bind main socket {port} >&2; exit 254")]);
            cmd
        })
    });
    let payload = failed.err().expect("five failed binds fail the start");
    let msg = payload.downcast_ref::<String>().expect("a formatted panic");
    assert!(msg.contains("could not bind a port in 5 attempts"), "{msg}");
    assert_eq!(msg.matches("--- stderr ---\nUnable to bind main socket").count(), 5, "{msg}");
}

#[test]
fn unregister_all_removes_the_binding_a_lost_port_left() {
    let customer = "5e4a0680-804e-11ec-8477-2fea5968d85b";
    let server = Server::start_with(&format!(
        "[registrar]\nalgorithms = [\"MD5\"]\n[[customers]]\nid = \"{customer}\"\n\
         [[domains]]\nname = \"test\"\ncustomer_id = \"{customer}\"\n\
         [[extensions]]\nname = \"e1\"\ndomain = \"test\"\npassword = \"pw-e1\"\n"
    ));
    let sock = udp_client();
    let ok = register_from(&sock, server.udp, "e1", "pw-e1");
    assert!(ok.contains("Contact: <sip:e1@127.0.0.1:"), "{ok}");
    unregister_all(server.udp, "e1", "pw-e1");
    let query = register_as(&udp_client(), server.udp, "e1", "pw-e1", false);
    assert!(query.starts_with("SIP/2.0 200"), "{query}");
    assert!(!query.contains("Contact:"), "{query}");
}
