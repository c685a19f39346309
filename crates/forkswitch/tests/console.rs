//! The operator's console (`GET /console`) against the real binary, in
//! Debian's headless Chromium (playwright-core, `tests/browser/console.mjs`):
//! a SIPp ring group call appears live as a tree, its two legs ringing, then
//! one answered and the other cancelled; the groupcall's ladder shows the
//! CANCEL on the loser's lane with its Reason header. Screenshots are left
//! in `target/tmp/console/` (`CARGO_TARGET_TMPDIR`). The page needs the API
//! key. Runs in a network namespace of its own ([`common::netns`]).

mod common;

use common::fork::{phones_group, trusted, KEY};
use common::http::Api;
use common::script::Script;
use common::*;
use std::time::Duration;

#[test]
fn console_needs_an_api_key() {
    let server = Server::start_with(&trusted(""));
    let anonymous = common::http::Api { addr: server.http, key: None };
    anonymous.get("/console").error(401, "UNAUTHENTICATED");
    anonymous.get("/v1.0/events").error(401, "UNAUTHENTICATED");
    let page = Api::new(server.http, KEY).get("/console");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("forkswitch console"), "{}", page.body);
    let script = anonymous.get("/console/console.js");
    assert_eq!(script.status, 200, "the script holds no data: no key needed");
}

#[test]
fn a_ring_group_call_shows_live_and_its_ladder_has_the_cancel_with_reason() {
    common::netns::enter();
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing");
    let dir = tempfile::tempdir().expect("dir");
    // The first phone answers after 2 s: both legs ring that long.
    let (groups, phones) = phones_group(
        dir.path(),
        "800",
        "ring_all",
        &[("uas_answer.xml", &["-d", "2000"]), ("uas_ring_cancel_reason.xml", &[])],
    );
    let loser = format!("127.0.0.1:{}", phones[1].port);
    let server = Server::start_with(&trusted(&groups));
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    for old in ["1-ringing.png", "2-ladder-cancel.png"] {
        let _ = std::fs::remove_file(shots.join(old));
    }
    let args = [
        repo_root().join("tests/browser/console.mjs").to_string_lossy().into_owned(),
        format!("http://{}/console?accesskey={KEY}", server.http),
        loser.clone(),
        shots.to_string_lossy().into_owned(),
    ];
    let mut page = Script::start("console", server.dir.path(), "node", &args);
    page.expect("browser", Duration::from_secs(30));
    page.expect("ready", Duration::from_secs(30));
    let mut call = start_caller(server.dir.path(), server.udp, "800", "uac.xml", &[]);
    page.expect("ringing", Duration::from_secs(30));
    let done = page.expect("done", Duration::from_secs(40));
    eprintln!("console: {done}");
    page.assert_success(Duration::from_secs(10));
    match call.wait_for(Duration::from_secs(20)) {
        Some(st) => assert!(st.success(), "caller: {st:?} {}", call.stderr()),
        None => panic!("caller did not finish\n{}", call.output()),
    }
    for p in phones {
        p.assert_ok();
    }
    for shot in ["1-ringing.png", "2-ladder-cancel.png"] {
        let png = std::fs::read(shots.join(shot)).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{shot}: {} bytes", png.len());
    }
    let lanes = done["lanes"].to_string();
    assert!(lanes.contains("forkswitch"), "{lanes}");
}
