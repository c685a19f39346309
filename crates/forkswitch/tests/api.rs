//! The REST API of the running binary over real HTTP, with SIPp phones and
//! callers on loopback: click-to-call answered and hung up through the API
//! (with its webhooks, signed and retried after a 500, and its metrics);
//! paging across 250 groupcalls of real calls; auth and customer scoping;
//! hangup of a ringing ring-group call and of an answered call; kill -9 and
//! restart with a call live; bad bodies; extensions and ring groups made by
//! the API taking effect at once and surviving a restart.

mod common;

use common::http::{Api, Hooks};
use common::*;
use hmac::Mac;
use serde_json::{json, Value};
use std::collections::HashSet;

const KEY_A: &str = "key-of-customer-a";
const KEY_B: &str = "key-of-customer-b";
const OTHER: &str = "6a2bd2f0-0c3e-11ee-9a8c-0b6c1e0f4a11";
const NIL: &str = "00000000-0000-0000-0000-000000000000";
const NOT_YET: &str = "9999-01-01 00:00:00.000000";

/// Customer A (domain `test`, extension test11, 127.0.0.1 a trusted carrier
/// source so SIPp callers need no digest) and customer B, each with a key;
/// plus `extra`.
fn config(extra: &str) -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\napi_keys = [\"{KEY_A}\"]\n\
         [[customers]]\nid = \"{OTHER}\"\napi_keys = [\"{KEY_B}\"]\n\
         [[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[domains]]\nname = \"other\"\ncustomer_id = \"{OTHER}\"\n\
         [[extensions]]\nname = \"test11\"\ndomain = \"test\"\npassword = \"pw-11\"\n\
         [registrar]\nalgorithms = [\"MD5\"]\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         {extra}"
    )
}

/// A ring group `number` ringing `sip:` destinations.
fn group(number: &str, method: &str, uris: &[String]) -> String {
    let d: Vec<String> =
        uris.iter().map(|u| format!("{{ type = \"sip\", target = \"{u}\" }}")).collect();
    format!(
        "[[groups]]\nnumber = \"{number}\"\ndomain = \"test\"\nring_method = \"{method}\"\ndestinations = [{}]\n",
        d.join(", ")
    )
}

/// A SIPp phone registered as `user` (password `pw`) that plays `scenario`.
fn registered_phone(server: &Server, scenario: &str, user: &str, pw: &str) -> Phone {
    let register = |sock: &std::net::UdpSocket| {
        let resp = register_from(sock, server.udp, user, pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    };
    let unregister = |_lost_port| unregister_all(server.udp, user, pw);
    Phone::start_announced(server.dir.path(), scenario, &[], None, register, unregister)
}

fn gc_path(id: &str) -> String {
    format!("/v1.0/groupcalls/{id}")
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field} in {v:#}"))
}

/// Every call record of a groupcall, read through the API.
fn calls_of(api: &Api, g: &Value) -> Vec<Value> {
    let ids = g["call_ids"].as_array().expect("call_ids");
    ids.iter().map(|id| api.get_ok(&format!("/v1.0/calls/{}", id.as_str().expect("id")))).collect()
}

/// Waits until the API shows the live root groupcall of the one call in
/// progress, with `legs` legs dialed; returns it.
fn live_groupcall(api: &Api, legs: usize) -> Value {
    let live = |g: &&Value| {
        g["status"] == "progressing"
            && g["master_groupcall_id"] == NIL
            && g["call_ids"].as_array().map(Vec::len) == Some(legs)
    };
    let list = api.get_until("/v1.0/groupcalls", "a live groupcall", |v| {
        v["result"].as_array().is_some_and(|r| r.iter().any(|g| live(&g)))
    });
    let found = list["result"].as_array().and_then(|r| r.iter().find(live));
    found.expect("live groupcall").clone()
}

#[test]
fn click_to_call_answered_and_hung_up_through_the_api_with_webhooks_and_metrics() {
    let hooks = Hooks::start(1);
    let secret = "whsec-test";
    // The webhook goes on customer A's block.
    let cfg = config("[webhooks]\nbackoff_ms = 100\n").replacen(
        &format!("api_keys = [\"{KEY_A}\"]\n"),
        &format!(
            "api_keys = [\"{KEY_A}\"]\nwebhook_url = \"http://{}/hooks/a\"\nwebhook_secret = \"{secret}\"\n",
            hooks.addr
        ),
        1,
    );
    let server = Server::start_with(&cfg);
    let api = Api::new(server.http, KEY_A);
    // The source phone (test11) answers the offerless INVITE with its offer,
    // gets the destination's answer in the ACK, then the API's BYE.
    let source = registered_phone(&server, "uas_answer.xml", "test11", "pw-11");
    let dest = Phone::start(server.dir.path(), "uas_answer.xml", &[]);
    let body = json!({
        "source": {"type": "endpoint", "target": "test11@test", "name": "Alice"},
        "destinations": [{"type": "sip", "target": dest.uri("bob")}],
        "ring_method": "ring_all",
        "answer_method": "hangup_others"
    });
    let created = api.post_ok("/v1.0/groupcalls", &body);
    let id = str_of(&created, "id").to_owned();
    assert_eq!(created["customer_id"], CUSTOMER);
    assert_eq!(created["tm_delete"], NOT_YET);

    let answered = api.get_until(&gc_path(&id), "answered", |g| g["answer_call_id"] != NIL);
    assert_eq!(answered["status"], "progressing");
    let leg = api.get_ok(&format!("/v1.0/calls/{}", str_of(&answered, "answer_call_id")));
    assert_eq!(leg["status"], "progressing");
    assert_ne!(leg["sip_call_id"], "", "a leg record names its own SIP Call-ID");
    let metrics = api.get("/metrics").body;
    assert!(metrics.contains("forkswitch_calls_active 1"), "{metrics}");

    let r = api.post(&format!("{}/hangup", gc_path(&id)), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    source.assert_ok();
    dest.assert_ok();
    let ended = api.get_until(&gc_path(&id), "hung up", |g| g["status"] == "hangup");
    for c in calls_of(&api, &ended) {
        assert_eq!(c["status"], "hangup", "{c:#}");
        assert_eq!(c["hangup_by"], "local", "{c:#}");
        assert_ne!(c["tm_hangup"], NOT_YET, "{c:#}");
    }
    let text = api.get("/metrics").body;
    assert!(text.contains("forkswitch_calls_active 0"), "{text}");
    assert!(text.contains("forkswitch_groupcalls_total{outcome=\"answered\"} 1"), "{text}");
    assert!(text.contains("forkswitch_webhook_deliveries_total{result=\"retried\"}"), "{text}");

    // Webhooks: every body signed with the customer's secret; the first
    // delivery got a 500 and came again; the groupcall's life in order.
    let mut first: Option<Vec<u8>> = None;
    let mut retried = false;
    let mut events = Vec::new();
    while !events.iter().any(|(t, gid): &(String, String)| t == "groupcall_hangup" && *gid == id) {
        let h = hooks.next();
        assert_eq!(h.path, "/hooks/a");
        let sig = h.header("x-forkswitch-signature").expect("signature header");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(&h.body);
        assert_eq!(
            sig,
            format!("sha256={}", sip_message::hex::encode(&mac.finalize().into_bytes()))
        );
        match &first {
            None => {
                assert_eq!(h.answered, 500);
                first = Some(h.body.clone());
                continue;
            }
            Some(b) if !retried => {
                assert_eq!(*b, h.body, "the event that got a 500 is delivered again");
                retried = true;
            }
            Some(_) => {}
        }
        let v = h.json();
        let kind = str_of(&v, "type").to_owned();
        events.push((kind, v["data"]["id"].as_str().unwrap_or("").to_owned()));
    }
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    let pos = |k: &str| kinds.iter().position(|t| *t == k).unwrap_or_else(|| panic!("{kinds:?}"));
    assert!(pos("groupcall_created") < pos("groupcall_progressing"), "{kinds:?}");
    assert!(pos("groupcall_progressing") < pos("groupcall_hangup"), "{kinds:?}");
    assert!(kinds.contains(&"call_progressing") && kinds.contains(&"call_hangup"), "{kinds:?}");
}

#[test]
fn paging_across_250_groupcalls_of_real_calls_and_customer_scoping() {
    let dir = tempfile::tempdir().expect("dir");
    // One phone busy for 250 calls; 250 calls at 100/s.
    let phone = start_sipp(
        dir.path(),
        &[
            "-sf".into(),
            scenario("uas_reject_486.xml"),
            "-i".into(),
            "127.0.0.1".into(),
            "-m".into(),
            "250".into(),
            "-nostdin".into(),
        ],
    );
    let uri = format!("sip:busy@127.0.0.1:{}", phone.port);
    let server = Server::start_with(&config(&group("820", "ring_all", &[uri])));
    let args: Vec<String> = [
        "-sf",
        &scenario("uac_expect_486.xml"),
        &server.udp.to_string(),
        "-s",
        "820",
        "-m",
        "250",
        "-r",
        "100",
        "-l",
        "50",
        "-i",
        "127.0.0.1",
        "-timeout",
        "60s",
        "-timeout_error",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (st, err) = sipp(server.dir.path(), &args, std::time::Duration::from_secs(90));
    assert!(st.success(), "250 calls: {err}");

    let api = Api::new(server.http, KEY_A);
    // All 250 stored and ended (the store writes behind the calls).
    let mut pages;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        pages = Vec::new();
        let mut token = String::new();
        loop {
            let v = api.get_ok(&format!("/v1.0/groupcalls?page_size=100&page_token={token}"));
            let next = str_of(&v, "next_page_token").to_owned();
            pages.push(v["result"].as_array().expect("result").clone());
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let all: Vec<&Value> = pages.iter().flatten().collect();
        if all.len() == 250 && all.iter().all(|g| g["status"] == "hangup") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{} groupcalls listed", all.len());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let all: Vec<&Value> = pages.iter().flatten().collect();
    let ids: HashSet<&str> = all.iter().map(|g| str_of(g, "id")).collect();
    assert_eq!(ids.len(), 250, "no groupcall twice, none lost");
    let times: Vec<&str> = all.iter().map(|g| str_of(g, "tm_create")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // Calls: 250 inbound + 250 legs, in pages of 100.
    let mut token = String::new();
    let mut calls = HashSet::new();
    loop {
        let v = api.get_ok(&format!("/v1.0/calls?page_size=100&page_token={token}"));
        for c in v["result"].as_array().expect("result") {
            assert!(calls.insert(str_of(c, "id").to_owned()), "call listed twice");
        }
        token = str_of(&v, "next_page_token").to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(calls.len(), 500);

    // Scoping: customer B sees nothing of A's and gets 404 for A's ids.
    let b = Api::new(server.http, KEY_B);
    let a_id = str_of(all[0], "id");
    assert_eq!(b.get_ok("/v1.0/groupcalls")["result"], json!([]));
    assert_eq!(b.get_ok("/v1.0/calls")["result"], json!([]));
    b.get(&gc_path(a_id)).error(404, "NOT_FOUND");
    b.post(&format!("{}/hangup", gc_path(a_id)), &json!({})).error(404, "NOT_FOUND");
    b.delete(&gc_path(a_id)).error(404, "NOT_FOUND");
    let a_call = calls.iter().next().expect("a call");
    b.get(&format!("/v1.0/calls/{a_call}")).error(404, "NOT_FOUND");
    // Auth: no key, a wrong key, the key as ?accesskey=.
    let none = Api { addr: server.http, key: None };
    none.get("/v1.0/groupcalls").error(401, "UNAUTHENTICATED");
    Api::new(server.http, "not-a-key").get("/v1.0/groupcalls").error(401, "UNAUTHENTICATED");
    let by_query = none.get_ok(&format!("/v1.0/groupcalls/{a_id}?accesskey={KEY_A}"));
    assert_eq!(by_query["id"], a_id);
    drop(phone);
}

#[test]
fn api_hangup_of_a_ringing_ring_group_call_cancels_every_leg() {
    let dir = tempfile::tempdir().expect("dir");
    let phones: Vec<Phone> =
        (0..2).map(|_| Phone::start(dir.path(), "uas_ring_cancel.xml", &[])).collect();
    let uris: Vec<String> =
        phones.iter().enumerate().map(|(i, p)| p.uri(&format!("r{i}"))).collect();
    let server = Server::start_with(&config(&group("830", "ring_all", &uris)));
    let api = Api::new(server.http, KEY_A);
    let mut caller = start_caller(server.dir.path(), server.udp, "830", "uac_expect_487.xml", &[]);
    let g = live_groupcall(&api, 2);
    let id = str_of(&g, "id");
    api.get_until(&gc_path(id), "both legs ringing", |g| {
        calls_of(&api, g).iter().all(|c| c["status"] == "ringing")
    });
    let r = api.post(&format!("{}/hangup", gc_path(id)), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    for p in phones {
        p.assert_ok();
    }
    let st = caller.wait_for(std::time::Duration::from_secs(20)).expect("caller ends");
    assert!(st.success(), "the caller got 487: {}", caller.output());
    let ended = api.get_until(&gc_path(id), "hung up", |g| g["status"] == "hangup");
    for c in calls_of(&api, &ended) {
        assert_eq!((&c["status"], &c["hangup_by"]), (&json!("hangup"), &json!("local")), "{c:#}");
        assert_eq!(c["hangup_reason"], "cancel", "{c:#}");
    }
    // Hanging up what has ended is not an error the client must handle
    // specially, and the record stays as it is.
    let again = api.post(&format!("{}/hangup", gc_path(id)), &json!({}));
    assert!(again.status == 200 || again.status == 409, "{}", again.body);
    assert_eq!(api.get_ok(&gc_path(id))["status"], "hangup");
}

#[test]
fn api_hangup_of_an_answered_call_byes_both_sides() {
    let dir = tempfile::tempdir().expect("dir");
    let phone = Phone::start(dir.path(), "uas_answer.xml", &[]);
    let server = Server::start_with(&config(&group("831", "ring_all", &[phone.uri("a")])));
    let api = Api::new(server.http, KEY_A);
    let mut caller = start_caller(server.dir.path(), server.udp, "831", "uac_wait_bye.xml", &[]);
    let g = live_groupcall(&api, 1);
    let id = str_of(&g, "id").to_owned();
    let g = api.get_until(&gc_path(&id), "answered", |g| g["answer_call_id"] != NIL);
    // Hang up the caller's own call record: both dialogs get BYE.
    let list = api.get_ok("/v1.0/calls");
    let inbound = list["result"]
        .as_array()
        .and_then(|r| r.iter().find(|c| c["direction"] == "incoming"))
        .expect("the caller's call record")
        .clone();
    // The spec: an inbound call belongs to no groupcall; the groupcall that
    // serves it names it as its master call.
    assert_eq!(inbound["groupcall_id"], NIL);
    assert_eq!(g["master_call_id"], inbound["id"]);
    let r = api.post(&format!("/v1.0/calls/{}/hangup", str_of(&inbound, "id")), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    phone.assert_ok();
    let st = caller.wait_for(std::time::Duration::from_secs(20)).expect("caller ends");
    assert!(st.success(), "the caller got BYE: {}", caller.output());
    let c = api.get_until(&format!("/v1.0/calls/{}", str_of(&inbound, "id")), "hung up", |c| {
        c["status"] == "hangup"
    });
    assert_eq!((&c["hangup_by"], &c["hangup_reason"]), (&json!("local"), &json!("normal")));
    api.get_until(&gc_path(&id), "hung up", |g| g["status"] == "hangup");
}

#[test]
fn kill9_with_a_live_call_then_restart_closes_its_records() {
    let dir = tempfile::tempdir().expect("dir");
    let phone = Phone::start(dir.path(), "uas_ring_cancel.xml", &[]);
    let mut server = Server::start_with(&config(&group("840", "ring_all", &[phone.uri("k")])));
    let api = Api::new(server.http, KEY_A);
    let _caller = start_caller(server.dir.path(), server.udp, "840", "uac.xml", &[]);
    let g = live_groupcall(&api, 1);
    let id = str_of(&g, "id").to_owned();
    let g = api.get_until(&gc_path(&id), "ringing", |g| {
        calls_of(&api, g).iter().all(|c| c["status"] == "ringing")
    });
    assert_eq!(server.closed_live, Value::Null, "nothing to close at the first start");
    server.kill9_and_restart();
    let closed = &server.closed_live;
    assert_eq!(closed["level"], "WARN", "{closed}");
    assert_eq!(closed["groupcalls"], 1, "{closed}");
    assert_eq!(closed["calls"], 2, "the caller's call and the leg: {closed}");
    let api = Api::new(server.http, KEY_A);
    let after = api.get_ok(&gc_path(&id));
    assert_eq!(after["status"], "hangup");
    let mut records = calls_of(&api, &g);
    let list = api.get_ok("/v1.0/calls");
    records.extend(list["result"].as_array().expect("calls").iter().cloned());
    for c in &records {
        assert_eq!(c["status"], "hangup", "{c:#}");
        assert_eq!((&c["hangup_by"], &c["hangup_reason"]), (&json!("local"), &json!("failed")));
        assert_ne!(c["tm_hangup"], NOT_YET);
        assert!(str_of(c, "tm_hangup") >= str_of(c, "tm_create"), "{c:#}");
    }
    drop(phone);
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let server =
        Server::start_with(&config("[http]\nlisten = \"127.0.0.1:0\"\nbody_limit_bytes = 4096\n"));
    let api = Api::new(server.http, KEY_A);
    let post = |body: &str| api.send("POST", "/v1.0/groupcalls", Some(body));
    post("{not json").error(400, "INVALID_ARGUMENT");
    post("[]").error(400, "INVALID_ARGUMENT");
    let good = json!({
        "source": {"type": "endpoint", "target": "test11@test"},
        "destinations": [{"type": "tel", "target": "+15551234567"}],
        "ring_method": "ring_all", "answer_method": "hangup_others"
    });
    let mut unknown = good.clone();
    unknown["colour"] = json!("blue");
    post(&unknown.to_string()).error(400, "INVALID_ARGUMENT");
    let mut wrong = good.clone();
    wrong["ring_method"] = json!("sometimes");
    post(&wrong.to_string()).error(400, "INVALID_ARGUMENT");
    let mut empty = good.clone();
    empty["destinations"] = json!([]);
    let e = post(&empty.to_string()).error(400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["field"], "destinations", "{e}");
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(8192));
    post(&big).error(413, "RESOURCE_EXHAUSTED");
    // test11 has not registered: the switch refuses, nothing is stored.
    post(&good.to_string()).error(409, "FAILED_PRECONDITION");
    api.get("/v1.0/groupcalls/not-a-uuid").error(400, "INVALID_ARGUMENT");
    api.get(&gc_path("4b4d2c5e-0c3e-11ee-9a8c-0b6c1e0f4a13")).error(404, "NOT_FOUND");
    api.get("/v1.0/nothing-here").error(404, "NOT_FOUND");
    assert_eq!(api.get_ok("/v1.0/groupcalls")["result"], json!([]));
    assert_eq!(api.get_ok("/v1.0/calls")["result"], json!([]));
    // The switch still answers SIP.
    let sock = udp_client();
    let local = sock.local_addr().expect("addr");
    sock.send_to(options(local, server.udp, "UDP", "after-bad-api").as_bytes(), server.udp)
        .expect("send");
    assert_eq!(status_of(&recv(&sock)), 200);
}

#[test]
fn extensions_and_ring_groups_made_by_the_api_work_at_once_and_survive_a_restart() {
    let mut server = Server::start_with(&config(""));
    let api = Api::new(server.http, KEY_A);
    let ext = api.post_ok(
        "/v1.0/extensions",
        &json!({"extension": "t50", "password": "pw-50", "name": "Desk 50", "detail": "api"}),
    );
    assert!(!ext.to_string().contains("pw-50"), "the password is write-only: {ext}");
    assert_eq!(ext["domain_name"], "test");
    let rg = api.post_ok(
        "/v1.0/ringgroups",
        &json!({"number": "850", "destinations": [{"type": "endpoint", "target": "t50@test"}]}),
    );
    assert_eq!(rg["ring_method"], "ring_all");
    // Without a restart: t50 registers, and 850 rings it.
    let phone = registered_phone(&server, "uas_answer.xml", "t50", "pw-50");
    // Stored within one commit window of the REGISTER.
    let deadline = std::time::Instant::now() + WAIT;
    let reg = loop {
        let regs = api.get_ok("/v1.0/registrations");
        if let Some(b) =
            regs["result"].as_array().and_then(|r| r.iter().find(|b| b["aor"] == "t50@test"))
        {
            break b.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{regs:#}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(reg["transport"], "UDP", "{reg:#}");
    assert_eq!(reg["source"], format!("127.0.0.1:{}", phone.port), "{reg:#}");
    caller(server.dir.path(), server.udp, "850", "uac.xml", &[]);
    phone.assert_ok();
    let (root, _) = finished_groupcall(&server);
    assert_ne!(root.answer_groupcall_id, records::NIL, "t50 answered through 850");
    // Customer B sees neither.
    let b = Api::new(server.http, KEY_B);
    b.get(&format!("/v1.0/extensions/{}", str_of(&ext, "id"))).error(404, "NOT_FOUND");
    b.get(&format!("/v1.0/ringgroups/{}", str_of(&rg, "id"))).error(404, "NOT_FOUND");

    // Both survive kill -9; deleting the extension takes effect at once.
    server.kill9_and_restart();
    let api = Api::new(server.http, KEY_A);
    assert_eq!(api.get_ok(&format!("/v1.0/extensions/{}", str_of(&ext, "id")))["id"], ext["id"]);
    assert_eq!(api.get_ok(&format!("/v1.0/ringgroups/{}", str_of(&rg, "id")))["number"], "850");
    let sock = udp_client();
    assert!(register_from(&sock, server.udp, "t50", "pw-50").starts_with("SIP/2.0 200"));
    let r = api.delete(&format!("/v1.0/extensions/{}", str_of(&ext, "id")));
    assert_eq!(r.status, 200, "{}", r.body);
    let after = register_from(&udp_client(), server.udp, "t50", "pw-50");
    assert!(!after.starts_with("SIP/2.0 200"), "a deleted extension cannot register: {after}");
}

// The tests that read records, again with the records in PostgreSQL.
also_on_postgres!(
    click_to_call_answered_and_hung_up_through_the_api_with_webhooks_and_metrics,
    paging_across_250_groupcalls_of_real_calls_and_customer_scoping,
    kill9_with_a_live_call_then_restart_closes_its_records,
    extensions_and_ring_groups_made_by_the_api_work_at_once_and_survive_a_restart,
);
