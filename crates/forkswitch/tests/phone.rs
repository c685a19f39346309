//! The browser phone (`GET /phone`, JsSIP) against the real binary on the
//! shipped config with a WS listener: two pages in Debian's headless
//! Chromium (driven by playwright-core, `tests/browser/phones.mjs`)
//! register as test12 and test13; a SIPp caller dials ring group 800, one
//! page answers and the other shows "answered elsewhere"; and a page calls
//! the other and gives up while it rings (a missed call there), then calls
//! again until WebRTC media flows on loopback.
//! Needs /usr/bin/chromium and `npm ci` in tests/browser (`.ci/run` does
//! both): without them these tests fail, saying so.

mod common;

use common::script::Script;
use common::*;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The shipped config with a WS listener.
fn server() -> Server {
    Server::start_default_config("ws = [\"127.0.0.1:0\"]\n", "")
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

fn phones(server: &Server, scenario: &str) -> Script {
    prerequisites();
    let args = [
        "tests/browser/phones.mjs".to_owned(),
        scenario.to_owned(),
        format!("http://{}", server.http),
        format!("ws://{}", server.ws),
    ];
    Script::start(scenario, server.dir.path(), "node", &args)
}

#[test]
fn phone_page_is_served_without_an_api_key() {
    let server = server();
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
    let server = server();
    let mut phones = phones(&server, "ring-group");
    let browser = phones.expect("browser", Duration::from_secs(30));
    eprintln!("browser: {browser}");
    phones.expect("ready", Duration::from_secs(40));
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
    let server = server();
    let mut phones = phones(&server, "webrtc-call");
    phones.expect("browser", Duration::from_secs(30));
    phones.expect("ready", Duration::from_secs(40));
    let done = phones.expect("done", Duration::from_secs(80));
    eprintln!("webrtc call: {done}");
    for user in ["test12", "test13"] {
        assert!(done[user]["rtp"].as_u64().unwrap_or(0) > 0, "{done}");
        let ends = [&done[user]["local"]["address"], &done[user]["remote"]["address"]];
        assert!(ends.contains(&&serde_json::json!("127.0.0.1")), "{done}");
    }
    phones.assert_success(Duration::from_secs(10));
}
