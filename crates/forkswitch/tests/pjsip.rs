//! pjsip (PyPI `pjsua2-python`, `tests/pjsip/phone.py`) against the real
//! binary on the shipped config with a TLS listener and a certificate from
//! `forkswitch gen-cert`: test12 registers over TLS with digest (verifying
//! the switch's certificate); test11, registered the same way, calls ring
//! group 800 over TLS (digest on the 407); test12 is rung over its own
//! connection and answers; RTP flows between the two; test11 hangs up.
//! And pjsip refuses a switch whose certificate its CA did not sign.
//! And with `[media] mode = "rtpengine"` (a real rtpengine, started and
//! killed by the test): test11 calls 800 over UDP, test12 answers while
//! test13 rings; every SDP a phone sees names rtpengine's ports, RTP
//! reaches both phones from rtpengine, and rtpengine holds nothing after
//! the hangup.
//! (pjsua2-python 2.15.1.post1 bundles OpenSSL 1.0.2k: TLS 1.2 at most.)
//! Needs `python3` with pjsua2 (`.ci/run` installs it): without it these
//! tests fail, saying so.

mod common;

use common::script::Script;
use common::*;
use rtpengine_harness::{NgDriver, Rtpengine};
use std::time::{Duration, Instant};

fn pjsua2_present() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import pjsua2"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pjsua2 is missing: `pip install pjsua2-python` (.ci/run does)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pjsip(server: &Server, name: &str, args: &[&str]) -> Script {
    let mut all = vec!["tests/pjsip/phone.py".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    Script::start(name, server.dir.path(), "python3", &all)
}

/// The shipped config with a TLS listener on `certs`' certificate.
fn tls_server(certs: &std::path::Path) -> Server {
    Server::start_default_config("tls = [\"127.0.0.1:0\"]\n", &tls_section(certs))
}

#[test]
fn pjsip_phones_register_ring_and_answer_over_tls() {
    common::netns::enter();
    pjsua2_present();
    let certs = gen_cert();
    let cert = certs.path().join("cert.pem").to_string_lossy().into_owned();
    let server = tls_server(certs.path());
    let tls = server.tls.to_string();
    let common = ["--server", &tls, "--transport", "tls", "--ca", &cert];

    let mut callee = pjsip(
        &server,
        "pjsip-test12",
        &[&["answer", "--user", "test12", "--password", "test12-secret"], &common[..]].concat(),
    );
    let started = callee.expect("started", Duration::from_secs(20));
    eprintln!("callee: {started}");
    callee.expect("registered", Duration::from_secs(20));
    let mut caller = pjsip(
        &server,
        "pjsip-test11",
        &[
            &["call", "--user", "test11", "--password", "test11-secret", "--dial", "800"],
            &common[..],
        ]
        .concat(),
    );
    caller.expect("registered", Duration::from_secs(20));
    callee.expect("answered", Duration::from_secs(20));
    caller.expect("answered", Duration::from_secs(20));
    let done = caller.expect("done", Duration::from_secs(30));
    assert!(done["rtp_received"].as_u64().unwrap_or(0) > 0, "{done}");
    callee.expect("done", Duration::from_secs(20));
    caller.assert_success(Duration::from_secs(20));
    callee.assert_success(Duration::from_secs(20));
    let (root, _calls) = finished_groupcall(&server);
    assert_ne!(root.answer_call_id, records::NIL, "{root:?}");
}

#[test]
fn pjsip_refuses_a_switch_certificate_it_does_not_trust() {
    common::netns::enter();
    pjsua2_present();
    let (certs, other) = (gen_cert(), gen_cert());
    let server = tls_server(certs.path());
    let tls = server.tls.to_string();
    let ca = other.path().join("cert.pem").to_string_lossy().into_owned();
    let args = ["answer", "--user", "test12", "--password", "test12-secret", "--server", &tls];
    let mut phone = pjsip(&server, "pjsip-untrusted", &[&args[..], &["--ca", &ca]].concat());
    let reg = phone.expect("reg_state", Duration::from_secs(20));
    assert_eq!(reg["code"], 503, "{reg}");
    assert!(reg["reason"].as_str().unwrap_or("").contains("PJSIP_TLS_ECERTVERIF"), "{reg}");
    assert!(!phone.assert_exit(Duration::from_secs(20)).success());
}

/// The port of "IP:port" on 127.0.0.1 in a phone's JSON line.
fn loopback_port(v: &serde_json::Value) -> u16 {
    let s = v.as_str().unwrap_or_else(|| panic!("an address: {v}"));
    let (ip, port) = s.rsplit_once(':').unwrap_or_else(|| panic!("IP:port: {s}"));
    assert_eq!(ip, "127.0.0.1", "{s}");
    port.parse().unwrap_or_else(|_| panic!("a port: {s}"))
}

#[test]
fn pjsip_phones_talk_through_rtpengine_while_a_third_rings() {
    common::netns::enter();
    pjsua2_present();
    let rtpengine = Rtpengine::start().expect("rtpengine starts (bash tests/peers.sh)");
    let (lo, hi) = rtpengine.ports();
    let anchored = |port: u16| (lo..=hi).contains(&port);
    let media = format!(
        "[media]\nmode = \"rtpengine\"\nrtpengine = [\"{}\"]\non_failure = \"reject\"\n",
        rtpengine.ng_addr()
    );
    let server = Server::start_default_config("", &media);
    let udp = server.udp.to_string();
    let common = ["--server", &udp, "--transport", "udp"];
    let phone = |name: &str, mode: &str, user: &str, more: &[&str]| {
        let password = format!("{user}-secret");
        let args = [&[mode, "--user", user, "--password", &password], &common[..], more].concat();
        pjsip(&server, name, &args)
    };

    // test12 answers when told: once test13 rings too (each leg's INVITE
    // waits for its offer at rtpengine, so an instant answer could beat
    // test13's INVITE).
    let go = server.dir.path().join("answer-test12");
    let go_arg = go.to_string_lossy().into_owned();
    let mut callee = phone("pjsip-media-test12", "answer", "test12", &["--answer-when", &go_arg]);
    let mut ringing = phone("pjsip-media-test13", "ring", "test13", &[]);
    callee.expect("registered", Duration::from_secs(20));
    ringing.expect("registered", Duration::from_secs(20));
    let mut caller =
        phone("pjsip-media-test11", "call", "test11", &["--dial", "800", "--packets", "25"]);
    caller.expect("registered", Duration::from_secs(20));
    // Each rung phone is offered rtpengine's address, on ports of its own.
    let offered = callee.expect("incoming", Duration::from_secs(20));
    let offered_ringing = ringing.expect("incoming", Duration::from_secs(20));
    let (callee_offer, ringing_offer) =
        (loopback_port(&offered["offer"]), loopback_port(&offered_ringing["offer"]));
    assert!(anchored(callee_offer), "rtpengine's port ({lo}-{hi}): {offered}");
    assert!(anchored(ringing_offer), "rtpengine's port ({lo}-{hi}): {offered_ringing}");
    assert_ne!(callee_offer, ringing_offer, "each leg has its own ports");
    std::fs::write(&go, "").expect("the go-ahead to answer");
    callee.expect("answered", Duration::from_secs(20));
    caller.expect("answered", Duration::from_secs(20));
    // The phone that rang is CANCELed.
    let cancelled = ringing.expect("done", Duration::from_secs(20));
    assert_eq!(cancelled["code"], 487, "{cancelled}");

    let said = caller.expect("done", Duration::from_secs(30));
    let heard = callee.expect("done", Duration::from_secs(20));
    eprintln!("rtpengine {lo}-{hi}\ncaller: {said}\ncallee: {heard}");
    // Half a second of audio (20 ms packets) each way.
    assert!(said["rtp_received"].as_u64().unwrap_or(0) >= 25, "{said}");
    for (who, done) in [("caller", &said), ("callee", &heard)] {
        assert!(done["rtp_received"].as_u64().unwrap_or(0) > 10, "{who}: {done}");
        let media = &done["media"];
        // It sends to rtpengine and hears rtpengine, never the other phone.
        assert!(anchored(loopback_port(&media["remote"])), "{who} sends to rtpengine: {done}");
        assert!(anchored(loopback_port(&media["source"])), "{who} hears rtpengine: {done}");
    }
    let (caller_rtp, callee_rtp) =
        (loopback_port(&said["media"]["local"]), loopback_port(&heard["media"]["local"]));
    assert_eq!(loopback_port(&heard["media"]["remote"]), callee_offer, "{heard}");
    for port in [caller_rtp, callee_rtp] {
        assert!(!anchored(port), "a phone's own port is not rtpengine's: {port}");
    }
    caller.assert_success(Duration::from_secs(20));
    callee.assert_success(Duration::from_secs(20));
    ringing.assert_success(Duration::from_secs(20));

    // After the hangup rtpengine holds nothing of ours.
    let mut ng = NgDriver::new(&[rtpengine.ng_addr()]).expect("ng driver");
    let deadline = Instant::now() + WAIT;
    let mut left = ng.list(media_anchor::InstanceId(0));
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = ng.list(media_anchor::InstanceId(0));
    }
    assert!(left.is_empty(), "calls left in rtpengine: {left:?}\n{}", rtpengine.log());
    let (root, _calls) = finished_groupcall(&server);
    assert_ne!(root.answer_call_id, records::NIL, "{root:?}");
}
