//! pjsip (PyPI `pjsua2-python`, `tests/pjsip/phone.py`) against the real
//! binary on the shipped config with a TLS listener and a certificate from
//! `forkswitch gen-cert`: test12 registers over TLS with digest (verifying
//! the switch's certificate); test11, registered the same way, calls ring
//! group 800 over TLS (digest on the 407); test12 is rung over its own
//! connection and answers; RTP flows between the two; test11 hangs up.
//! And pjsip refuses a switch whose certificate its CA did not sign.
//! (pjsua2-python 2.15.1.post1 bundles OpenSSL 1.0.2k: TLS 1.2 at most.)
//! Needs `python3` with pjsua2 (`.ci/run` installs it): without it these
//! tests fail, saying so.

mod common;

use common::script::Script;
use common::*;
use std::time::Duration;

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
