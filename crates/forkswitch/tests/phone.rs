//! The browser phone (`GET /phone`, JsSIP) against the real binary on the
//! shipped config with WS and WSS listeners: two pages in Debian's headless
//! Chromium (driven by playwright-core, `tests/browser/phones.mjs`)
//! register as test12 (over WS) and test13 (over WSS); a SIPp caller dials
//! ring group 800, one page answers and the other shows "answered
//! elsewhere"; and a page calls the other and gives up while it rings (a
//! missed call there), then calls again until WebRTC media flows on
//! loopback. Each test runs in a network
//! namespace of its own with only `lo` ([`common::netns`]): Chromium would
//! otherwise also try the machine's other addresses for WebRTC.
//! Needs /usr/bin/chromium and `npm ci` in tests/browser (`.ci/run` does
//! both): without them these tests fail, saying so.

mod common;

use common::script::Script;
use common::*;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The shipped config with WS and WSS listeners (WSS on a fresh
/// [`gen_cert`] certificate, kept in the second value).
fn server() -> (Server, tempfile::TempDir) {
    let certs = gen_cert();
    let sip = "ws = [\"127.0.0.1:0\"]\nwss = [\"127.0.0.1:0\"]\n";
    (Server::start_default_config(sip, &tls_section(certs.path())), certs)
}

/// Checks the browser and the node modules are there, loudly.
fn prerequisites() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)"
    );
    let pw = repo_root().join("tests/browser/node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "playwright-core is missing: run `npm ci` in tests/browser (.ci/run does)"
    );
}

/// `tests/browser/phones.mjs` running `scenario`. The pages reach the
/// switch over WS, and test13's over WSS in the ring group scenario:
/// Chromium trusts exactly the certificate in `certs` (by its public key).
fn phones(server: &Server, certs: &std::path::Path, scenario: &str) -> Script {
    prerequisites();
    let args = [
        "tests/browser/phones.mjs".to_owned(),
        scenario.to_owned(),
        format!("http://{}", server.http),
        format!("ws://{}", server.ws),
        format!("wss://{}", server.wss),
        certs.join("cert.pem").to_string_lossy().into_owned(),
    ];
    Script::start(scenario, server.dir.path(), "node", &args)
}

#[test]
fn phone_page_is_served_without_an_api_key() {
    let (server, _certs) = server();
    let get = |path: &str| {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http::request(server.http, head.as_bytes(), b"")
    };
    let page = get("/phone?user=test12");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("/phone/jssip.min.js") && page.body.contains("data-state"));
    let script = get("/phone/phone.js");
    assert_eq!(script.status, 200);
    assert!(script.body.contains("answered-elsewhere"));
    let jssip = get("/phone/jssip.min.js");
    assert_eq!(jssip.status, 200);
    assert!(jssip.body.contains("JsSIP 3.13.8") && jssip.body.contains("License: MIT"));
    assert_eq!(get("/phone/nothing").status, 404);
}

#[test]
fn ring_group_call_answered_in_one_browser_shows_answered_elsewhere_in_the_other() {
    common::netns::enter();
    let (server, certs) = server();
    let mut phones = phones(&server, certs.path(), "ring-group");
    let browser = phones.expect("browser", Duration::from_secs(30));
    eprintln!("browser: {browser}");
    phones.expect("ready", Duration::from_secs(40));
    // The switch holds test12's binding over WS and test13's over WSS.
    let api = http::Api::new(server.http, "demo-api-key");
    // Stored within one commit window of the REGISTERs.
    let regs = api.get_until("/v1.0/registrations", "both phones stored", |v| {
        v["result"].as_array().is_some_and(|r| r.len() >= 2)
    });
    let transport = |aor: &str| {
        let all = regs["result"].as_array().cloned().unwrap_or_default();
        let reg = all.into_iter().find(|r| r["aor"] == aor);
        reg.unwrap_or_else(|| panic!("no {aor} in {regs:#}"))["transport"].clone()
    };
    assert_eq!(transport("test12@test"), "WS", "{regs:#}");
    assert_eq!(transport("test13@test"), "WSS", "{regs:#}");
    // test11 (digest) dials 800 with a WebRTC-shaped offer, and waits for
    // the browser's BYE.
    let mut caller = start_caller(
        server.dir.path(),
        server.udp,
        "800",
        "uac_auth_webrtc.xml",
        &[
            "-set",
            "ext",
            "test11",
            "-set",
            "domain",
            "test",
            "-au",
            "test11",
            "-ap",
            "test11-secret",
        ],
    );
    let done = phones.expect("done", Duration::from_secs(60));
    // The caller's display name (the scenario's From: "Ext").
    assert_eq!(done["shown"], "Ext: answered elsewhere", "{done}");
    phones.assert_success(Duration::from_secs(10));
    match caller.wait_for(Duration::from_secs(20)) {
        Some(st) => assert!(st.success(), "caller: {st:?} {}", caller.stderr()),
        None => panic!("caller did not finish\n{}", caller.output()),
    }
    // The store agrees: the group's two endpoints rang, one answered.
    let (root, _) = finished_groupcall(&server);
    assert_eq!(root.destinations.len(), 2, "{root:?}");
    assert_eq!(root.groupcall_ids.len(), 2, "{root:?}");
    assert_ne!(root.answer_call_id, records::NIL, "{root:?}");
}

#[test]
fn browser_calls_browser_missed_then_webrtc_media_flows_on_loopback() {
    common::netns::enter();
    let (server, certs) = server();
    let mut phones = phones(&server, certs.path(), "webrtc-call");
    phones.expect("browser", Duration::from_secs(30));
    phones.expect("ready", Duration::from_secs(40));
    let done = phones.expect("done", Duration::from_secs(80));
    eprintln!("webrtc call: {done}");
    for user in ["test12", "test13"] {
        assert!(done[user]["rtp"].as_u64().unwrap_or(0) > 0, "{done}");
        // Both ends of the selected ICE pair: the namespace has no other
        // address.
        for end in ["local", "remote"] {
            assert_eq!(done[user][end]["address"], "127.0.0.1", "{done}");
        }
    }
    phones.assert_success(Duration::from_secs(10));
}
