//! The REST API over in-process HTTP (the router as a tower service), with a
//! fake switch port and a temporary SQLite store; webhooks against a local
//! HTTP server. Every wait is bounded.

use api::{
    ApiOptions, ApiState, BoxFuture, Snapshot, SwitchPort, Unavailable, WebhookOptions, Webhooks,
};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use records::{
    config_id, Address, AddressType, AnswerMethod, Binding, Call, CallStatus, Customer, Domain,
    ExtensionRecord, Groupcall, GroupcallStatus, HangupBy, HangupReason, Origin, RingGroup,
    RingGroupDestination, RingMethod, Timestamp, NIL,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{SqliteStore, Store};
use switch::{Command, CommandOutcome, Persist};
use tower::ServiceExt;
use uuid::Uuid;

const KEY_A: &str = "key-a-0123456789abcdef0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef0123456789abcdef";
const T0: i64 = 1_700_000_000_000_000;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_micros(T0 + s * 1_000_000)
}

type Responder = Box<dyn Fn(&Command) -> Result<CommandOutcome, Unavailable> + Send + Sync>;

/// The switch as a script: records every command, answers with `respond`;
/// a change of an extension or a ring group it carries out is written to
/// `db`, as the shell writes the switch's `Persist` outputs.
struct FakePort {
    commands: Mutex<Vec<Command>>,
    respond: Mutex<Responder>,
    snapshot: Mutex<Option<Snapshot>>,
    db: Arc<dyn Store>,
}

impl FakePort {
    fn new(db: Arc<dyn Store>) -> Arc<FakePort> {
        Arc::new(FakePort {
            commands: Mutex::new(Vec::new()),
            respond: Mutex::new(Box::new(|_| Ok(CommandOutcome::Done))),
            snapshot: Mutex::new(Some(Snapshot::default())),
            db,
        })
    }

    /// What the switch would persist for `c` carried out.
    fn persist(&self, c: &Command) {
        match c {
            Command::PutExtension(r) => self.db.upsert_extension_record(r),
            Command::RemoveExtension { name, domain } => self.db.delete_extension(name, domain),
            Command::PutGroup(g) => self.db.upsert_ringgroup(g),
            Command::RemoveGroup { id } => self.db.delete_ringgroup(*id),
            _ => {}
        }
    }

    fn answer(
        &self,
        f: impl Fn(&Command) -> Result<CommandOutcome, Unavailable> + Send + Sync + 'static,
    ) {
        *self.respond.lock().expect("lock") = Box::new(f);
    }

    fn commands(&self) -> Vec<Command> {
        self.commands.lock().expect("lock").clone()
    }
}

impl SwitchPort for FakePort {
    fn command(&self, c: Command) -> BoxFuture<Result<CommandOutcome, Unavailable>> {
        let r = (self.respond.lock().expect("lock"))(&c);
        if matches!(r, Ok(CommandOutcome::Done)) {
            self.persist(&c);
        }
        self.commands.lock().expect("lock").push(c);
        Box::pin(async move { r })
    }

    fn snapshot(&self) -> BoxFuture<Result<Snapshot, Unavailable>> {
        let s = self.snapshot.lock().expect("lock").clone();
        Box::pin(async move { s.ok_or(Unavailable) })
    }
}

struct Harness {
    app: Router,
    db: Arc<SqliteStore>,
    port: Arc<FakePort>,
    webhooks: Webhooks,
    a: Uuid,
    b: Uuid,
    _dir: tempfile::TempDir,
}

fn harness_with(opts: WebhookOptions) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(SqliteStore::open(dir.path().join("forkswitch.db")).expect("open"));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    db.upsert_customer(&Customer { id: a, name: "acme".into(), api_keys: vec![KEY_A.into()] });
    db.upsert_customer(&Customer { id: b, name: "globex".into(), api_keys: vec![KEY_B.into()] });
    db.upsert_domain(&Domain { name: "test".into(), aliases: vec![], customer_id: a });
    db.upsert_domain(&Domain { name: "other".into(), aliases: vec![], customer_id: b });
    let cfg_ext = registrar::extension_with_password("test11", "test", "pw");
    db.replace_config_extensions(&[ExtensionRecord::from_config(cfg_ext, a, ts(0))]);
    db.flush().expect("flush");
    let port = FakePort::new(db.clone());
    let webhooks = Webhooks::new(opts, tokio::runtime::Handle::current());
    let state = ApiState::new(db.clone(), port.clone(), webhooks.clone(), ApiOptions::default());
    Harness { app: api::router(state), db, port, webhooks, a, b, _dir: dir }
}

fn harness() -> Harness {
    harness_with(WebhookOptions::default())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Checks the error envelope and returns its `error` object.
    fn error(&self, status: u16, canonical: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        let e = v["error"].clone();
        assert_eq!(e["status"], canonical, "{}", self.text);
        let id = e["request_id"].as_str().expect("request_id").to_owned();
        assert!(id.starts_with("req_"), "{id}");
        assert_eq!(
            self.headers.get("x-request-id").and_then(|h| h.to_str().ok()),
            Some(id.as_str())
        );
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(e["message"].is_string());
        e
    }
}

impl Harness {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(body.map_or_else(Body::empty, Body::from)).expect("request");
        self.raw(req).await
    }

    async fn raw(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        Answer { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, Some(KEY_A), None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.send(Method::POST, uri, Some(KEY_A), Some(body.to_string())).await
    }
}

fn groupcall(customer: Uuid, tm: Timestamp) -> Groupcall {
    Groupcall {
        id: Uuid::new_v4(),
        customer_id: customer,
        source: Address::new(AddressType::Endpoint, "test11@test"),
        destinations: vec![Address::new(AddressType::Tel, "+15551234567")],
        ring_method: RingMethod::RingAll,
        answer_method: AnswerMethod::HangupOthers,
        status: GroupcallStatus::Progressing,
        answer_call_id: NIL,
        answer_groupcall_id: NIL,
        call_ids: vec![],
        groupcall_ids: vec![],
        master_call_id: NIL,
        master_groupcall_id: NIL,
        tm_create: tm,
        tm_update: tm,
        tm_delete: Timestamp::NOT_YET,
        node_id: String::new(),
    }
}

fn call(customer: Uuid, status: CallStatus) -> Call {
    Call {
        status,
        ..Call::dialing(
            Uuid::new_v4(),
            customer,
            Address::new(AddressType::Endpoint, "test11@test"),
            Address::new(AddressType::Tel, "+15551234567"),
            ts(1),
        )
    }
}

fn click_body() -> Value {
    json!({
        "source": {"type": "endpoint", "target": "test11@test", "name": "Alice"},
        "destinations": [
            {"type": "tel", "target": "+15551234567", "ring_timeout_secs": 20},
            {"type": "extension", "target": "test12@test"}
        ],
        "ring_method": "linear",
        "answer_method": ""
    })
}

// ---- auth and scoping ------------------------------------------------------

#[tokio::test]
async fn auth_bearer_accesskey_cookie_and_failures() {
    let h = harness();
    let e = h.send(Method::GET, "/v1.0/groupcalls", None, None).await.error(401, "UNAUTHENTICATED");
    assert_eq!(e["reason"], "MISSING_API_KEY");
    let e = h
        .send(Method::GET, "/v1.0/groupcalls", Some("nope"), None)
        .await
        .error(401, "UNAUTHENTICATED");
    assert_eq!(e["reason"], "INVALID_API_KEY");
    let bad =
        Request::get("/v1.0/groupcalls").header("authorization", "Basic abc").body(Body::empty());
    h.raw(bad.expect("req")).await.error(401, "UNAUTHENTICATED");
    assert_eq!(h.get("/v1.0/groupcalls").await.status, StatusCode::OK);
    let q = h
        .send(Method::GET, &format!("/v1.0/groupcalls?accesskey={KEY_A}&page_size=5"), None, None)
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text);
    let cookie = Request::get("/v1.0/groupcalls")
        .header("cookie", format!("theme=dark; accesskey={KEY_B}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(h.raw(cookie).await.status, StatusCode::OK);
}

#[tokio::test]
async fn another_customers_records_are_not_found() {
    let h = harness();
    let theirs = groupcall(h.b, ts(1));
    let mine = groupcall(h.a, ts(2));
    let their_call = call(h.b, CallStatus::Ringing);
    h.db.upsert_groupcall(&theirs);
    h.db.upsert_groupcall(&mine);
    h.db.upsert_call(&their_call);
    h.db.flush().expect("flush");
    let e = h.get(&format!("/v1.0/groupcalls/{}", theirs.id)).await.error(404, "NOT_FOUND");
    assert_eq!(e["reason"], "GROUPCALL_NOT_FOUND");
    h.post(&format!("/v1.0/groupcalls/{}/hangup", theirs.id), json!({}))
        .await
        .error(404, "NOT_FOUND");
    h.send(Method::DELETE, &format!("/v1.0/groupcalls/{}", theirs.id), Some(KEY_A), None)
        .await
        .error(404, "NOT_FOUND");
    h.get(&format!("/v1.0/calls/{}", their_call.id)).await.error(404, "NOT_FOUND");
    h.post(&format!("/v1.0/calls/{}/hangup", their_call.id), json!({}))
        .await
        .error(404, "NOT_FOUND");
    assert!(h.port.commands().is_empty(), "nothing reached the switch");
    let list = h.get("/v1.0/groupcalls").await.json();
    let ids: Vec<&str> =
        list["result"].as_array().expect("array").iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids, vec![mine.id.to_string()]);
    // The same id is theirs to read.
    let r =
        h.send(Method::GET, &format!("/v1.0/groupcalls/{}", theirs.id), Some(KEY_B), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

// ---- the envelope on every error path ----------------------------------------

#[tokio::test]
async fn errors_are_envelopes() {
    let h = harness();
    let e = h.get("/v1.0/groupcalls/not-a-uuid").await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["reason"], "INVALID_ID");
    assert_eq!(e["details"][0]["field"], "id");
    h.get("/v1.0/nothing-here").await.error(404, "NOT_FOUND");
    h.send(Method::GET, "/nowhere", None, None).await.error(404, "NOT_FOUND");
    h.send(Method::PATCH, "/v1.0/groupcalls", Some(KEY_A), None)
        .await
        .error(405, "INVALID_ARGUMENT");
    let e = h.get("/v1.0/groupcalls?page_token=garbage").await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["reason"], "INVALID_PAGE_TOKEN");
    // Bad JSON, unknown fields (top level and nested), a bad enum value.
    let r = h.send(Method::POST, "/v1.0/groupcalls", Some(KEY_A), Some("{nope".into())).await;
    assert_eq!(r.error(400, "INVALID_ARGUMENT")["reason"], "INVALID_JSON");
    let mut body = click_body();
    body["bogus"] = json!(1);
    let e = h.post("/v1.0/groupcalls", body).await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["reason"], "UNKNOWN_FIELD");
    assert_eq!(e["details"][0]["field"], "bogus");
    let mut body = click_body();
    body["destinations"][1]["color"] = json!("red");
    let e = h.post("/v1.0/groupcalls", body).await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["field"], "destinations[1].color");
    let mut body = click_body();
    body["ring_method"] = json!("sideways");
    let e = h.post("/v1.0/groupcalls", body).await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["field"], "ring_method");
    let e = h
        .post("/v1.0/groupcalls", json!({"destinations": []}))
        .await
        .error(400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["field"], "source");
    // Too large: 413, still the envelope.
    let big =
        json!({"source": {"type": "endpoint", "target": "x".repeat(70_000)}, "destinations": []});
    let e = h.post("/v1.0/groupcalls", big).await.error(413, "RESOURCE_EXHAUSTED");
    assert_eq!(e["reason"], "BODY_TOO_LARGE");
    assert!(h.port.commands().is_empty());
}

/// One log line per request, carrying the id the client sees.
#[tokio::test]
async fn one_log_line_per_request_with_its_id() {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The interest of every callsite is cached process-wide, computed by
    // the first thread to reach it: a test on another thread with no
    // subscriber would cache the log line's callsite as "never" and this
    // test would see nothing (a flake seen once in 20 workspace runs). A
    // global subscriber that records nothing makes every thread interested;
    // the thread-local one below then gets the events.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let h = harness();
    let r = h.get(&format!("/v1.0/groupcalls/{}", Uuid::new_v4())).await;
    let id = r.error(404, "NOT_FOUND")["request_id"].as_str().expect("id").to_owned();
    let log = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf8");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("api request")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    for want in [
        format!("request_id={id}"),
        "method=GET".into(),
        "route=/v1.0/groupcalls/{id}".into(),
        "status=404".into(),
        "latency_ms=".into(),
    ] {
        assert!(line.contains(&want), "{want} not in {line}");
    }
}

// ---- paging ----------------------------------------------------------------

#[tokio::test]
async fn paging_250_groupcalls_with_tied_times() {
    let h = harness();
    let mut all: Vec<Groupcall> = (0..250).map(|i| groupcall(h.a, ts(i % 4))).collect();
    for g in &all {
        h.db.upsert_groupcall(g);
    }
    for i in 0..10 {
        h.db.upsert_groupcall(&groupcall(h.b, ts(i % 4)));
    }
    h.db.flush().expect("flush");
    all.sort_by_key(|g| std::cmp::Reverse((g.tm_create, g.id)));
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    for round in 0.. {
        assert!(round < 100, "paging does not end");
        let r = h.get(&format!("/v1.0/groupcalls?page_size=7&page_token={token}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let v = r.json();
        let page = v["result"].as_array().expect("result");
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|g| g["id"].as_str().expect("id").to_owned()));
        token = v["next_page_token"].as_str().expect("token").to_owned();
        if token.is_empty() {
            break;
        }
    }
    let want: Vec<String> = all.iter().map(|g| g.id.to_string()).collect();
    assert_eq!(seen, want, "every record exactly once, newest first");
    // Outside 1..100 means 100.
    let v = h.get("/v1.0/groupcalls?page_size=1000").await.json();
    assert_eq!(v["result"].as_array().map(Vec::len), Some(100));
    let v = h.get("/v1.0/groupcalls?page_size=0").await.json();
    assert_eq!(v["result"].as_array().map(Vec::len), Some(100));
}

// ---- groupcalls and calls through the switch ---------------------------------

#[tokio::test]
async fn post_groupcall_sends_click_to_call() {
    let h = harness();
    let db = h.db.clone();
    h.port.answer(move |c| match c {
        Command::StartGroupcall(c2c) => {
            // What the shell does: the switch's records are persisted before
            // the outcome comes back.
            let mut g = groupcall(c2c.customer_id, ts(5));
            g.destinations = c2c.destinations.iter().map(|d| d.address.clone()).collect();
            g.ring_method = c2c.ring_method;
            let leg = Call { groupcall_id: g.id, ..call(c2c.customer_id, CallStatus::Dialing) };
            g.call_ids = vec![leg.id];
            db.upsert_groupcall(&g);
            db.upsert_call(&leg);
            Ok(CommandOutcome::Started { groupcall: Box::new(g), call: Box::new(leg) })
        }
        _ => Ok(CommandOutcome::Done),
    });
    let r = h.post("/v1.0/groupcalls", click_body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let g = r.json();
    let cmds = h.port.commands();
    let [Command::StartGroupcall(c2c)] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!(c2c.customer_id, h.a);
    assert_eq!(c2c.source.kind, AddressType::Endpoint);
    assert_eq!(c2c.source.target, "test11@test");
    assert_eq!(c2c.source.name, "Alice");
    assert_eq!(c2c.ring_method, RingMethod::Linear);
    assert_eq!(c2c.answer_method, AnswerMethod::HangupOthers);
    assert_eq!(c2c.destinations.len(), 2);
    assert_eq!(c2c.destinations[0].address, Address::new(AddressType::Tel, "+15551234567"));
    assert_eq!(c2c.destinations[0].ring_timeout, Some(Duration::from_secs(20)));
    assert_eq!(c2c.destinations[1].address.kind, AddressType::Endpoint);
    assert_eq!(c2c.destinations[1].ring_timeout, None);
    // The VoIPBin shape: nil UUIDs, the 9999 sentinel, the seed's format.
    assert_eq!(g["answer_call_id"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(g["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(g["tm_create"], ts(5).to_string());
    assert_eq!(g["ring_method"], "linear");
    assert_eq!(g["status"], "progressing");
    assert_eq!(g["call_ids"].as_array().map(Vec::len), Some(1));
    let id = g["id"].as_str().expect("id");
    assert_eq!(h.get(&format!("/v1.0/groupcalls/{id}")).await.json(), g);
    let leg = g["call_ids"][0].as_str().expect("leg");
    let c = h.get(&format!("/v1.0/calls/{leg}")).await.json();
    assert_eq!((c["status"].as_str(), c["hangup_by"].as_str()), (Some("dialing"), Some("")));
    assert_eq!(h.get("/v1.0/calls").await.json()["result"].as_array().map(Vec::len), Some(1));

    // Refused and unavailable.
    h.port.answer(|_| Ok(CommandOutcome::Refused("the source is not registered".into())));
    let e = h.post("/v1.0/groupcalls", click_body()).await.error(409, "FAILED_PRECONDITION");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("not registered")));
    h.port.answer(|_| Err(Unavailable));
    h.post("/v1.0/groupcalls", click_body()).await.error(503, "UNAVAILABLE");
}

#[tokio::test]
async fn post_groupcall_validates_before_the_switch() {
    let h = harness();
    let mut b = click_body();
    b["source"] = json!({"type": "tel", "target": "+15550000000"});
    assert_eq!(
        h.post("/v1.0/groupcalls", b).await.error(400, "INVALID_ARGUMENT")["details"][0]["field"],
        "source.type"
    );
    let mut b = click_body();
    b["source"]["target"] = json!("x@other");
    assert_eq!(
        h.post("/v1.0/groupcalls", b).await.error(400, "INVALID_ARGUMENT")["details"][0]["field"],
        "source.target"
    );
    let mut b = click_body();
    b["destinations"] = json!([]);
    h.post("/v1.0/groupcalls", b).await.error(400, "INVALID_ARGUMENT");
    let mut b = click_body();
    b["destinations"] = json!((0..65)
        .map(|i| json!({"type": "tel", "target": format!("+1555000{i:04}")}))
        .collect::<Vec<_>>());
    h.post("/v1.0/groupcalls", b).await.error(400, "INVALID_ARGUMENT");
    let mut b = click_body();
    b["destinations"][1]["target"] = json!("someone@other");
    h.post("/v1.0/groupcalls", b).await.error(400, "INVALID_ARGUMENT");
    assert!(h.port.commands().is_empty());
}

#[tokio::test]
async fn hangups_go_to_the_switch() {
    let h = harness();
    let live = groupcall(h.a, ts(1));
    let leg = call(h.a, CallStatus::Ringing);
    h.db.upsert_groupcall(&live);
    h.db.upsert_call(&leg);
    h.db.flush().expect("flush");
    let db = h.db.clone();
    h.port.answer(move |c| {
        if let Command::HangupGroupcall { id } = c {
            if let Ok(Some(mut g)) = db.groupcall(*id) {
                g.status = GroupcallStatus::Hangingup;
                db.upsert_groupcall(&g);
            }
        }
        Ok(CommandOutcome::Done)
    });
    let r = h.post(&format!("/v1.0/groupcalls/{}/hangup", live.id), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["status"], "hangingup");
    let r = h.post(&format!("/v1.0/calls/{}/hangup", leg.id), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        h.port.commands(),
        vec![Command::HangupGroupcall { id: live.id }, Command::HangupCall { id: leg.id }]
    );
    // Over already: the switch knows nothing of it; the record answers.
    let mut over = groupcall(h.a, ts(2));
    over.status = GroupcallStatus::Hangup;
    h.db.upsert_groupcall(&over);
    h.db.flush().expect("flush");
    h.port.answer(|_| Ok(CommandOutcome::NotFound));
    let r = h.post(&format!("/v1.0/groupcalls/{}/hangup", over.id), json!({})).await;
    assert_eq!((r.status, r.json()["status"].clone()), (StatusCode::OK, json!("hangup")));
}

#[tokio::test]
async fn delete_hangs_up_then_hides_and_stays_deleted() {
    let h = harness();
    let live = groupcall(h.a, ts(1));
    h.db.upsert_groupcall(&live);
    h.db.flush().expect("flush");
    let r =
        h.send(Method::DELETE, &format!("/v1.0/groupcalls/{}", live.id), Some(KEY_A), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_ne!(r.json()["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(h.port.commands(), vec![Command::HangupGroupcall { id: live.id }]);
    assert_eq!(h.get("/v1.0/groupcalls").await.json()["result"], json!([]));
    // The switch writes the call as it ends: it stays deleted.
    h.db.upsert_groupcall(&Groupcall { status: GroupcallStatus::Hangup, ..live.clone() });
    h.db.flush().expect("flush");
    assert_eq!(h.get("/v1.0/groupcalls").await.json()["result"], json!([]));
    let g = h.get(&format!("/v1.0/groupcalls/{}", live.id)).await.json();
    assert_eq!(g["status"], "hangup");
    assert_ne!(g["tm_delete"], "9999-01-01 00:00:00.000000");
}

// ---- extensions --------------------------------------------------------------

#[tokio::test]
async fn extensions_crud_password_write_only_config_read_only() {
    let h = harness();
    let cfg_id = config_id("test11@test");
    let list = h.get("/v1.0/extensions").await.json();
    assert_eq!(list["result"][0]["id"], cfg_id.to_string());
    assert_eq!(list["result"][0]["origin"], "config");
    let r = h
        .send(
            Method::PUT,
            &format!("/v1.0/extensions/{cfg_id}"),
            Some(KEY_A),
            Some(json!({"name": "x"}).to_string()),
        )
        .await;
    assert_eq!(r.error(409, "FAILED_PRECONDITION")["reason"], "READ_ONLY");
    h.send(Method::DELETE, &format!("/v1.0/extensions/{cfg_id}"), Some(KEY_A), None)
        .await
        .error(409, "FAILED_PRECONDITION");

    let r = h
        .post(
            "/v1.0/extensions",
            json!({"extension": "test12", "password": "s3cret", "name": "Bob", "detail": "desk"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = r.json();
    assert!(
        !r.text.contains("s3cret") && !r.text.contains("ha1") && !r.text.contains("password"),
        "{}",
        r.text
    );
    assert_eq!(
        (e["extension"].as_str(), e["domain_name"].as_str()),
        (Some("test12"), Some("test"))
    );
    assert_eq!((e["username"].as_str(), e["name"].as_str()), (Some("test12"), Some("Bob")));
    assert_eq!(e["origin"], "api");
    let id = e["id"].as_str().expect("id").to_owned();
    let cmds = h.port.commands();
    let [Command::PutExtension(x)] = cmds.as_slice() else { panic!("{cmds:?}") };
    let x = &x.extension;
    assert_eq!(x.ha1_md5, registrar::ha1_md5("test12", "test", "s3cret"));
    assert_eq!(x.ha1_sha256, registrar::ha1_sha256("test12", "test", "s3cret"));
    assert_eq!(x.display_name, "Bob");
    let got = h.get(&format!("/v1.0/extensions/{id}")).await;
    assert_eq!(got.json(), e);
    assert!(!got.text.contains("ha1"));
    // Stored: the registrar gets it from the store at the next start too.
    assert!(h.db.extensions().expect("read").iter().any(|x| x.name == "test12"));

    let e = h
        .post("/v1.0/extensions", json!({"extension": "test12", "password": "x"}))
        .await
        .error(409, "ALREADY_EXISTS");
    assert_eq!(e["reason"], "EXTENSION_EXISTS");
    h.post("/v1.0/extensions", json!({"extension": "bad name", "password": "x"}))
        .await
        .error(400, "INVALID_ARGUMENT");
    h.post("/v1.0/extensions", json!({"extension": "z", "password": "x", "domain_name": "other"}))
        .await
        .error(400, "INVALID_ARGUMENT");
    h.post("/v1.0/extensions", json!({"extension": "z", "password": "x", "ha1_md5": "00"}))
        .await
        .error(400, "INVALID_ARGUMENT");

    let r = h
        .send(
            Method::PUT,
            &format!("/v1.0/extensions/{id}"),
            Some(KEY_A),
            Some(json!({"password": "n3w", "detail": "moved"}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["detail"], "moved");
    let Some(Command::PutExtension(x)) = h.port.commands().pop() else { panic!("no put") };
    assert_eq!(x.extension.ha1_md5, registrar::ha1_md5("test12", "test", "n3w"));
    // Call handling: set, shown, sent to the switch, cleared with null.
    let path = format!("/v1.0/extensions/{id}");
    let put =
        |body: serde_json::Value| h.send(Method::PUT, &path, Some(KEY_A), Some(body.to_string()));
    let fwd = json!({"type": "endpoint", "target": "test11@test"});
    let r = put(json!({"max_calls": 2, "dnd": true, "forward_noanswer": fwd,
                       "forward_noanswer_secs": 12}))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = r.json();
    assert_eq!((e["max_calls"].as_u64(), e["dnd"].as_bool()), (Some(2), Some(true)));
    assert_eq!(e["forward_noanswer"]["target"], "test11@test");
    assert_eq!(e["forward_noanswer_secs"], 12);
    let Some(Command::PutExtension(x)) = h.port.commands().pop() else { panic!("no put") };
    let x = &x.extension;
    assert_eq!(x.handling.max_calls, Some(2));
    assert_eq!(
        x.handling.forward_noanswer.as_ref().map(|a| a.target.as_str()),
        Some("test11@test")
    );
    let r = put(json!({"forward_noanswer": null, "max_calls": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = r.json();
    assert!(e.get("forward_noanswer").is_none() && e.get("max_calls").is_none(), "{e}");
    assert_eq!(e["dnd"], true, "a field left out stays");
    for bad in [
        json!({"max_calls": 0}),
        json!({"forward_noanswer_secs": 0}),
        json!({"forward_busy": {"type": "endpoint", "target": "test12@test"}}),
        json!({"forward_busy": {"type": "endpoint", "target": "x@elsewhere"}}),
        json!({"forward_always": {"type": "tel", "target": "12345"}}),
        json!({"forward_always": {"type": "sip", "target": ""}}),
    ] {
        put(bad.clone()).await.error(400, "INVALID_ARGUMENT");
    }
    // Another customer's id: 404.
    h.send(Method::GET, &format!("/v1.0/extensions/{id}"), Some(KEY_B), None)
        .await
        .error(404, "NOT_FOUND");
    h.send(Method::DELETE, &format!("/v1.0/extensions/{id}"), Some(KEY_B), None)
        .await
        .error(404, "NOT_FOUND");

    let r = h.send(Method::DELETE, &format!("/v1.0/extensions/{id}"), Some(KEY_A), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_ne!(r.json()["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(
        h.port.commands().pop(),
        Some(Command::RemoveExtension { name: "test12".into(), domain: "test".into() })
    );
    h.get(&format!("/v1.0/extensions/{id}")).await.error(404, "NOT_FOUND");
}

#[tokio::test]
async fn extensions_follow_the_config_files_rules_with_the_same_reasons() {
    let h = harness();
    let post = |extra: Value| {
        let mut body = json!({"extension": "t60", "password": "pw"});
        if let (Some(b), Some(x)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(x.clone());
        }
        h.post("/v1.0/extensions", body)
    };
    let cases = [
        (
            json!({"max_calls": 1001}),
            "max_calls",
            "must be at most 1000 (leave it out for no limit)",
        ),
        (
            json!({"forward_noanswer_secs": 5}),
            "forward_noanswer_secs",
            "set without forward_noanswer",
        ),
        (
            json!({"forward_busy": {"type": "endpoint", "target": "nobody@test"}}),
            "forward_busy",
            "\"nobody@test\" is not an extension (write name@domain)",
        ),
        (json!({"extension": "t 60"}), "extension", "1..64 of letters, digits, . _ - + ~"),
    ];
    for (extra, field, reason) in cases {
        let e = post(extra.clone()).await.error(400, "INVALID_ARGUMENT");
        assert_eq!(e["details"][0]["field"], field, "{extra}");
        assert_eq!(e["details"][0]["description"], reason, "{extra}");
    }
    assert!(h.port.commands().is_empty(), "nothing reached the switch");
    let r = post(json!({"forward_noanswer": {"type": "endpoint", "target": "test11@test"},
                        "forward_noanswer_secs": 5, "max_calls": 1000}))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The switch's own check (the same rules) answers the same way.
    h.port.answer(|_| {
        let why = provisioning::check_extension(
            &records::Extension { name: "x y".into(), ..Default::default() },
            &provisioning::Listed { domains: &[], extensions: &[], ring_groups: &[] },
        );
        Ok(CommandOutcome::Invalid(why.expect_err("invalid")))
    });
    let e = post(json!({"extension": "t61"})).await.error(400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["field"], "extension");
}

// ---- ring groups -------------------------------------------------------------

#[tokio::test]
async fn ringgroups_crud_and_read_only_config_groups() {
    let h = harness();
    let cfg = RingGroup {
        id: config_id("900@test"),
        customer_id: h.a,
        number: "900".into(),
        domain: "test".into(),
        ring_method: RingMethod::RingAll,
        answer_method: AnswerMethod::HangupOthers,
        destinations: vec![RingGroupDestination {
            kind: AddressType::Endpoint,
            target: "test11@test".into(),
            ring_timeout_secs: None,
            delay_secs: None,
        }],
        max_ring_secs: None,
        skip_busy: false,
        send_reason: true,
        origin: Origin::Config,
        tm_create: ts(0),
        tm_update: ts(0),
        tm_delete: Timestamp::NOT_YET,
    };
    h.db.replace_config_ringgroups(std::slice::from_ref(&cfg));
    h.db.flush().expect("flush");
    let body = json!({
        "number": "800",
        "ring_method": "linear",
        "destinations": [
            {"type": "endpoint", "target": "test11@test", "ring_timeout_secs": 15},
            {"type": "tel", "target": "+15551234567"}
        ],
        "send_reason": false
    });
    let r = h.post("/v1.0/ringgroups", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let g = r.json();
    assert_eq!(
        (g["number"].as_str(), g["domain"].as_str(), g["origin"].as_str()),
        (Some("800"), Some("test"), Some("api"))
    );
    assert_eq!(g["destinations"][0]["ring_timeout_secs"], 15);
    let id: Uuid = g["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let cmds = h.port.commands();
    let [Command::PutGroup(rg)] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!(rg.id, id);
    assert_eq!((rg.number.as_str(), rg.domain.as_str()), ("800", "test"));
    assert_eq!(rg.ring_method, RingMethod::Linear);
    assert!(!rg.send_reason);
    assert_eq!(rg.destinations[0].ring_timeout_secs, Some(15));
    assert_eq!(rg.destinations[1].kind, AddressType::Tel);

    h.post("/v1.0/ringgroups", body.clone()).await.error(409, "ALREADY_EXISTS");
    let mut dup = body.clone();
    dup["number"] = json!("900");
    h.post("/v1.0/ringgroups", dup).await.error(409, "ALREADY_EXISTS");
    let mut bad = body.clone();
    bad["destinations"][0]["delay"] = json!(1);
    h.post("/v1.0/ringgroups", bad).await.error(400, "INVALID_ARGUMENT");

    let list = h.get("/v1.0/ringgroups").await.json();
    assert_eq!(list["result"].as_array().map(Vec::len), Some(2));
    let mut upd = body.clone();
    upd["destinations"] = json!([{"type": "sip", "target": "sip:bob@192.0.2.1"}]);
    let r = h
        .send(Method::PUT, &format!("/v1.0/ringgroups/{id}"), Some(KEY_A), Some(upd.to_string()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["tm_create"], g["tm_create"]);
    assert_eq!(r.json()["destinations"][0]["type"], "sip");
    let r = h
        .send(
            Method::PUT,
            &format!("/v1.0/ringgroups/{}", cfg.id),
            Some(KEY_A),
            Some(upd.to_string()),
        )
        .await;
    assert_eq!(r.error(409, "FAILED_PRECONDITION")["reason"], "READ_ONLY");
    h.send(Method::GET, &format!("/v1.0/ringgroups/{id}"), Some(KEY_B), None)
        .await
        .error(404, "NOT_FOUND");
    let r = h.send(Method::DELETE, &format!("/v1.0/ringgroups/{id}"), Some(KEY_A), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(h.port.commands().pop(), Some(Command::RemoveGroup { id }));
    h.get(&format!("/v1.0/ringgroups/{id}")).await.error(404, "NOT_FOUND");
}

// ---- registrations -----------------------------------------------------------

#[tokio::test]
async fn registrations_are_the_customers_bindings() {
    let h = harness();
    let far = Timestamp::from_system(std::time::SystemTime::now() + Duration::from_secs(3600));
    let b = |aor: &str, transport: &str| Binding {
        aor: aor.into(),
        contact: format!("sip:{aor}"),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at: far,
        call_id: "c".into(),
        cseq: 1,
        transport: transport.into(),
        source: "192.0.2.10:5062".parse().expect("addr"),
        local: "192.0.2.1:5060".parse().expect("addr"),
        user_agent: "Phone".into(),
        node_id: String::new(),
        conn: None,
        unreachable: false,
    };
    h.db.upsert_binding(&b("test11@test", "UDP"));
    h.db.upsert_binding(&b("test12@test", "TCP"));
    h.db.upsert_binding(&b("x@other", "UDP"));
    h.db.flush().expect("flush");
    let v = h.get("/v1.0/registrations?page_size=1").await.json();
    assert_eq!(v["result"][0]["aor"], "test11@test");
    assert_eq!(v["result"][0]["source"], "192.0.2.10:5062");
    assert_eq!(v["result"][0]["transport"], "UDP");
    assert!(v["result"][0]["expires"].as_i64().is_some_and(|s| s > 3500));
    let token = v["next_page_token"].as_str().expect("token");
    let v = h.get(&format!("/v1.0/registrations?page_token={token}")).await.json();
    assert_eq!(v["result"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["result"][0]["transport"], "TCP");
    assert_eq!(v["next_page_token"], "");
}

// ---- metrics and OpenAPI -----------------------------------------------------

#[tokio::test]
async fn metrics_text_parses_and_has_the_names() {
    let h = harness();
    let mut snap = Snapshot::default();
    snap.counters.messages_in.requests[0] = 7;
    snap.counters.messages_in.responses[1] = 3;
    snap.counters.setup_seconds.observe(0.3);
    snap.counters.calls_ended[0] = 2;
    snap.stats.calls = 4;
    snap.stats.bindings = 9;
    *h.port.snapshot.lock().expect("lock") = Some(snap);
    h.get("/v1.0/groupcalls").await;
    h.send(Method::GET, "/v1.0/groupcalls", None, None).await;
    let r = h.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text")));
    let text = &r.text;
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF",
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let bare = name.split('{').next().unwrap_or(name);
        assert!(
            bare.starts_with("forkswitch_")
                && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
    for want in [
        "forkswitch_sip_requests_received_total{method=\"INVITE\"} 7",
        "forkswitch_sip_responses_received_total{class=\"2xx\"} 3",
        "forkswitch_calls_total{outcome=\"answered\"} 2",
        "forkswitch_calls_active 4",
        "forkswitch_registrations 9",
        "forkswitch_call_setup_seconds_bucket{le=\"0.5\"} 1",
        "forkswitch_call_setup_seconds_count 1",
        "forkswitch_sip_retransmissions_total 0",
        "forkswitch_sip_transactions_active 0",
        "forkswitch_sip_auth_failures_total 0",
        "forkswitch_groupcall_legs_count 0",
        "forkswitch_groupcalls_active 4",
        "forkswitch_webhook_events_dropped_total 0",
        "forkswitch_webhook_deliveries_total{result=\"delivered\"} 0",
        "forkswitch_api_requests_total{route=\"/v1.0/groupcalls\",method=\"GET\",status=\"200\"} 1",
        "forkswitch_api_requests_total{route=\"/v1.0/groupcalls\",method=\"GET\",status=\"401\"} 1",
        "forkswitch_api_auth_failures_total 1",
        "forkswitch_switch_up 1",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
    }
    // The switch gone: still an answer, saying so.
    *h.port.snapshot.lock().expect("lock") = None;
    let r = h.send(Method::GET, "/metrics", None, None).await;
    assert!(r.text.lines().any(|l| l == "forkswitch_switch_up 0"), "{}", r.text);
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let h = harness();
    let r = h.send(Method::GET, "/v1.0/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    for path in [
        "/v1.0/groupcalls",
        "/v1.0/groupcalls/{id}",
        "/v1.0/groupcalls/{id}/hangup",
        "/v1.0/calls",
        "/v1.0/calls/{id}",
        "/v1.0/calls/{id}/hangup",
        "/v1.0/extensions",
        "/v1.0/extensions/{id}",
        "/v1.0/ringgroups",
        "/v1.0/ringgroups/{id}",
        "/v1.0/registrations",
        "/v1.0/webhook",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "no {path}");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["accesskey"]["name"], "accesskey");
    let gc = &doc["components"]["schemas"]["Groupcall"]["properties"];
    for field in [
        "id",
        "customer_id",
        "source",
        "destinations",
        "ring_method",
        "answer_method",
        "status",
        "answer_call_id",
        "call_ids",
        "tm_create",
        "tm_update",
        "tm_delete",
    ] {
        assert!(gc[field].is_object(), "Groupcall.{field} undocumented");
    }
    let create = &doc["components"]["schemas"]["GroupcallCreate"];
    assert_eq!(create["additionalProperties"], false, "unknown fields are refused: say so");
    let e404 = &doc["paths"]["/v1.0/groupcalls/{id}"]["get"]["responses"]["404"];
    assert!(e404.to_string().contains("ErrorEnvelope"));
}

// ---- webhooks ----------------------------------------------------------------

/// A local receiver: answers the statuses in `script` (then 200), sends
/// (headers, body) of every request it gets.
async fn receiver(
    script: Vec<u16>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<(HeaderMap, String)>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            let script = script.clone();
            async move {
                let _ = tx.send((headers, body));
                let code = script.lock().expect("lock").next().unwrap_or(200);
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx)
}

async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(HeaderMap, String)>,
) -> (HeaderMap, Value) {
    let (h, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("receiver alive");
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    let sig = h
        .get("x-forkswitch-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature")
        .to_owned();
    assert_eq!(sig, api::webhooks::signature("hook-secret", body.as_bytes()), "signature verifies");
    (h, v)
}

#[tokio::test]
async fn webhook_delivery_signed_retried_and_events_derived() {
    let opts = WebhookOptions { backoff: Duration::from_millis(20), ..WebhookOptions::default() };
    let h = harness_with(opts);
    let (url, mut rx) = receiver(vec![500]).await;
    let r = h
        .send(
            Method::PUT,
            "/v1.0/webhook",
            Some(KEY_A),
            Some(json!({"url": url, "secret": "hook-secret"}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("hook-secret"), "the secret is write-only");
    assert_eq!(h.get("/v1.0/webhook").await.json()["url"], url.as_str());

    let mut g = groupcall(h.a, ts(1));
    h.webhooks.publish(&Persist::Groupcall(g.clone()));
    // The first attempt got a 500: the same event comes again.
    let (_, first) = next(&mut rx).await;
    let (headers, again) = next(&mut rx).await;
    assert_eq!(first, again);
    assert_eq!(first["type"], "groupcall_created");
    assert_eq!(first["data"]["id"], g.id.to_string());
    assert_eq!(first["data"]["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(
        headers.get("x-forkswitch-event").and_then(|v| v.to_str().ok()),
        Some("groupcall_created")
    );

    // A leg through its life: created, then one event per status change.
    let mut leg = call(h.a, CallStatus::Dialing);
    for s in [
        CallStatus::Dialing,
        CallStatus::Dialing,
        CallStatus::Ringing,
        CallStatus::Progressing,
        CallStatus::Terminating,
        CallStatus::Hangup,
    ] {
        leg.status = s;
        if s == CallStatus::Hangup {
            leg.hangup_by = HangupBy::Remote;
            leg.hangup_reason = HangupReason::Normal;
        }
        h.webhooks.publish(&Persist::Call(leg.clone()));
    }
    g.answer_call_id = leg.id;
    h.webhooks.publish(&Persist::Groupcall(g.clone()));
    g.status = GroupcallStatus::Hangup;
    h.webhooks.publish(&Persist::Groupcall(g.clone()));
    let mut kinds = Vec::new();
    for _ in 0..8 {
        let (_, v) = next(&mut rx).await;
        kinds.push(v["type"].as_str().expect("type").to_owned());
    }
    assert_eq!(
        kinds,
        [
            "call_created",
            "call_dialing",
            "call_ringing",
            "call_progressing",
            "call_terminating",
            "call_hangup",
            "groupcall_progressing",
            "groupcall_hangup"
        ]
    );
    // Deleted through the API: groupcall_deleted.
    h.db.upsert_groupcall(&g);
    h.db.flush().expect("flush");
    let r = h.send(Method::DELETE, &format!("/v1.0/groupcalls/{}", g.id), Some(KEY_A), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, v) = next(&mut rx).await;
    assert_eq!(v["type"], "groupcall_deleted");
    // The receiver saw the last request before its answer was counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.webhooks.stats().delivered < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = h.webhooks.stats();
    assert_eq!((stats.delivered, stats.retried, stats.failed), (10, 1, 0));
    // Another customer's records go nowhere.
    h.webhooks.publish(&Persist::Groupcall(groupcall(h.b, ts(3))));
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let opts = WebhookOptions { queue_len: 2, ..WebhookOptions::default() };
    let h = harness_with(opts);
    // Nobody answers there quickly: a listener that never accepts.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", silent.local_addr().expect("addr"));
    h.webhooks.set_target(h.a, &url, "s");
    for i in 0..20 {
        h.webhooks.publish(&Persist::Groupcall(groupcall(h.a, ts(i))));
    }
    let dropped = h.webhooks.stats().dropped;
    assert!((17..=18).contains(&dropped), "dropped {dropped}");
    let r = h.send(Method::GET, "/metrics", None, None).await;
    let want = format!("forkswitch_webhook_events_dropped_total {dropped}");
    assert!(r.text.lines().any(|l| l == want), "{}", r.text);
}

#[tokio::test]
async fn channel_port_answers_and_times_out() {
    let (port, mut rx) = api::channel(4, Duration::from_millis(200));
    let serve = tokio::spawn(async move {
        if let Some(api::PortRequest::Command { command, reply }) = rx.recv().await {
            assert_eq!(command, Command::RemoveGroup { id: NIL });
            let _ = reply.send(CommandOutcome::NotFound);
        }
        // The next one is never answered.
        let _unanswered = rx.recv().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    assert_eq!(port.command(Command::RemoveGroup { id: NIL }).await, Ok(CommandOutcome::NotFound));
    assert_eq!(port.snapshot().await, Err(Unavailable));
    serve.abort();
}

// ---- TLS ---------------------------------------------------------------------

#[tokio::test]
async fn serves_https_with_a_pem_certificate() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let err = api::tls::load(&data.join("missing.crt"), &data.join("localhost.key"))
        .expect_err("no file");
    assert!(err.contains("missing.crt"), "{err}");
    let cfg =
        api::tls::load(&data.join("localhost.crt"), &data.join("localhost.key")).expect("load");
    let h = harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, h.app.clone(), Some(cfg), async {
        let _ = stopped.await;
    }));
    let pem = std::fs::read(data.join("localhost.crt")).expect("read");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .resolve("localhost", addr)
        .no_proxy()
        .build()
        .expect("client");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client
            .get(format!("https://localhost:{}/v1.0/groupcalls", addr.port()))
            .bearer_auth(KEY_A)
            .send(),
    )
    .await
    .expect("in time")
    .expect("https request");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops")
        .expect("join")
        .expect("serve");
}
