//! Webhooks: the customer's events POSTed to its URL in VoIPBin's envelope
//! `{"type": "<event>", "data": {<the resource as GET returns it>}}`, signed
//! with `X-Forkswitch-Signature: sha256=<hex HMAC-SHA256(secret, body)>`
//! (header name configurable), plus the `/v1.0/webhook` resource that sets
//! the URL and secret.
//!
//! Why this shape: the switch must never wait for a customer's server.
//! [`Webhooks::publish`] is called by the shell for every record the switch
//! persists; it derives the events from status changes (a little state per
//! live record, dropped at hangup, bounded), and enqueues them with
//! `try_send` to the customer's bounded queue: a full queue drops the event
//! and counts it. One task per customer delivers in order, retrying with
//! exponential backoff on connection errors and 5xx only (a receiver must
//! expect duplicates). With no webhook for the customer, publishing costs
//! one map lookup (plus the groupcall bookkeeping `/metrics` counts).

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::Body;
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use hmac::{Hmac, Mac};
use records::{Call, CallStatus, Groupcall, GroupcallStatus, Origin, Timestamp, Webhook, NIL};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Tuning of the dispatcher.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The signature header. Default `X-Forkswitch-Signature`.
    pub signature_header: String,
    /// Events waiting per customer; beyond, new ones are dropped (counted).
    /// Default 1000.
    pub queue_len: usize,
    /// Attempts per event (the first and the retries). Default 4.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each next one (1 s, 2 s,
    /// 4 s by default).
    pub backoff: Duration,
    /// Longest one attempt may take. Default 10 s.
    pub timeout: Duration,
    /// Most live records followed to derive events. Default 100,000.
    pub max_tracked: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            signature_header: "X-Forkswitch-Signature".into(),
            queue_len: 1000,
            max_attempts: 4,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_tracked: 100_000,
        }
    }
}

/// What the dispatcher counted (since it started), and the groupcalls it
/// saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events delivered (a 2xx answer).
    pub delivered: u64,
    /// Events given up on (a 4xx, or every attempt failed).
    pub failed: u64,
    /// Attempts that were retried.
    pub retried: u64,
    /// Events dropped because the customer's queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Clone, Debug)]
struct Target {
    url: String,
    secret: String,
}

/// The resource of an event, serialized as GET returns it.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum Resource {
    Groupcall(Box<Groupcall>),
    Call(Box<Call>),
    Missed(Box<pbx_features::GroupcallMissed>),
}

struct Queued {
    kind: &'static str,
    data: Resource,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a Resource,
}

/// What is remembered of a live record between two of its writes.
#[derive(Clone, Copy)]
enum Seen {
    Groupcall { answered: bool },
    Call { status: CallStatus },
}

struct Inner {
    opts: WebhookOptions,
    handle: tokio::runtime::Handle,
    client: reqwest::Client,
    targets: RwLock<HashMap<Uuid, Target>>,
    queues: Mutex<HashMap<Uuid, mpsc::Sender<Queued>>>,
    seen: Mutex<HashMap<Uuid, Seen>>,
    counters: Counters,
    /// How many customers have a target (0: publishing is one load).
    hooks: AtomicUsize,
}

/// The webhook dispatcher. Cheap to clone; [`Webhooks::publish`] may be
/// called from any thread.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length: cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", sip_message::hex::encode(&mac.finalize().into_bytes()))
}

fn call_event(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Dialing => "call_dialing",
        CallStatus::Ringing => "call_ringing",
        CallStatus::Progressing => "call_progressing",
        CallStatus::Canceling => "call_canceling",
        CallStatus::Terminating => "call_terminating",
        CallStatus::Hangup => "call_hangup",
    }
}

impl Webhooks {
    /// A dispatcher whose delivery tasks run on `handle` (the API's
    /// runtime). No targets yet: see [`Webhooks::load`].
    pub fn new(opts: WebhookOptions, handle: tokio::runtime::Handle) -> Webhooks {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhooks: default HTTP client");
                reqwest::Client::new()
            });
        Webhooks {
            inner: Arc::new(Inner {
                opts,
                handle,
                client,
                targets: RwLock::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
                seen: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                hooks: AtomicUsize::new(0),
            }),
        }
    }

    /// Loads every stored webhook (config and API ones) as a target;
    /// returns how many.
    pub fn load(&self, store: &dyn store::Store) -> Result<usize, store::StoreError> {
        let all = store.webhooks()?;
        let n = all.len();
        for w in all {
            self.set_target(w.customer_id, &w.url, &w.secret);
        }
        Ok(n)
    }

    /// Events of `customer` go to `url`, signed with `secret`, from now on.
    pub fn set_target(&self, customer: Uuid, url: &str, secret: &str) {
        let t = Target { url: url.to_owned(), secret: secret.to_owned() };
        let mut targets = self.inner.targets.write().unwrap_or_else(|e| e.into_inner());
        targets.insert(customer, t);
        self.inner.hooks.store(targets.len(), Relaxed);
    }

    /// No more events for `customer` (queued ones are dropped as they come).
    pub fn remove_target(&self, customer: Uuid) {
        let mut targets = self.inner.targets.write().unwrap_or_else(|e| e.into_inner());
        targets.remove(&customer);
        self.inner.hooks.store(targets.len(), Relaxed);
    }

    fn hooked(&self, customer: Uuid) -> bool {
        // The fast path: no webhook anywhere (the common case) costs one
        // atomic load per record.
        if self.inner.hooks.load(Relaxed) == 0 {
            return false;
        }
        self.inner.targets.read().unwrap_or_else(|e| e.into_inner()).contains_key(&customer)
    }

    /// Counters.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.inner.counters;
        WebhookStats {
            delivered: c.delivered.load(Relaxed),
            failed: c.failed.load(Relaxed),
            retried: c.retried.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }

    /// Takes one record the switch persisted: derives its events and queues
    /// them for the customer's webhook, if any. Never blocks.
    pub fn publish(&self, p: &switch::Persist) {
        match p {
            switch::Persist::Groupcall(g) => self.groupcall(g),
            switch::Persist::Call(c) => self.call(c),
            _ => {}
        }
    }

    /// Queues `groupcall_missed`: a ring group call nobody answered.
    pub fn publish_missed(&self, m: &pbx_features::GroupcallMissed) {
        if self.hooked(m.customer_id) {
            let data = Resource::Missed(Box::new(m.clone()));
            self.enqueue(m.customer_id, pbx_features::missed::EVENT_TYPE, data);
        }
    }

    /// Queues `groupcall_deleted` (the API deleted it).
    pub fn publish_deleted(&self, g: &Groupcall) {
        if self.hooked(g.customer_id) {
            let data = Resource::Groupcall(Box::new(g.clone()));
            self.enqueue(g.customer_id, "groupcall_deleted", data);
        }
    }

    fn groupcall(&self, g: &Groupcall) {
        if !self.hooked(g.customer_id) {
            return;
        }
        let answered = g.answer_call_id != NIL;
        let over = g.status == GroupcallStatus::Hangup;
        let mut events: [Option<&'static str>; 3] = [None; 3];
        {
            let mut seen = lock(&self.inner.seen);
            let before = match seen.get(&g.id) {
                Some(Seen::Groupcall { answered }) => Some(*answered),
                _ => None,
            };
            if before.is_none() {
                events[0] = Some("groupcall_created");
            }
            if answered && before != Some(true) {
                events[1] = Some("groupcall_progressing");
            }
            if over {
                events[2] = Some("groupcall_hangup");
                seen.remove(&g.id);
            } else if before.is_some() || seen.len() < self.inner.opts.max_tracked {
                seen.insert(g.id, Seen::Groupcall { answered });
            }
        }
        for kind in events.into_iter().flatten() {
            self.enqueue(g.customer_id, kind, Resource::Groupcall(Box::new(g.clone())));
        }
    }

    fn call(&self, c: &Call) {
        let over = c.status == CallStatus::Hangup;
        if !self.hooked(c.customer_id) {
            return;
        }
        let mut events: [Option<&'static str>; 2] = [None; 2];
        {
            let mut seen = lock(&self.inner.seen);
            let before = match seen.get(&c.id) {
                Some(Seen::Call { status }) => Some(*status),
                _ => None,
            };
            match before {
                None => {
                    events[0] = Some("call_created");
                    events[1] = Some(call_event(c.status));
                }
                Some(s) if s != c.status => events[1] = Some(call_event(c.status)),
                Some(_) => {}
            }
            if over {
                seen.remove(&c.id);
            } else if before.is_some() || seen.len() < self.inner.opts.max_tracked {
                seen.insert(c.id, Seen::Call { status: c.status });
            }
        }
        for kind in events.into_iter().flatten() {
            self.enqueue(c.customer_id, kind, Resource::Call(Box::new(c.clone())));
        }
    }

    fn enqueue(&self, customer: Uuid, kind: &'static str, data: Resource) {
        let tx = {
            let mut queues = lock(&self.inner.queues);
            queues
                .entry(customer)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(self.inner.opts.queue_len.max(1));
                    let weak = Arc::downgrade(&self.inner);
                    self.inner.handle.spawn(deliver_all(weak, customer, rx));
                    tx
                })
                .clone()
        };
        if tx.try_send(Queued { kind, data }).is_err() {
            let n = self.inner.counters.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(%customer, dropped = n, "webhooks: queue full, event dropped");
            }
        }
    }
}

/// The customer's delivery task: one event at a time, in order.
async fn deliver_all(inner: Weak<Inner>, customer: Uuid, mut rx: mpsc::Receiver<Queued>) {
    while let Some(q) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let target =
            inner.targets.read().unwrap_or_else(|e| e.into_inner()).get(&customer).cloned();
        let Some(target) = target else { continue };
        let body = match serde_json::to_vec(&Envelope { kind: q.kind, data: &q.data }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot serialize an event");
                continue;
            }
        };
        deliver(&inner, &target, q.kind, body).await;
    }
}

async fn deliver(inner: &Inner, target: &Target, kind: &str, body: Vec<u8>) {
    let sig = signature(&target.secret, &body);
    let opts = &inner.opts;
    let c = &inner.counters;
    let attempts = opts.max_attempts.max(1);
    for attempt in 1..=attempts {
        let r = inner
            .client
            .post(&target.url)
            .header("content-type", "application/json")
            .header(opts.signature_header.as_str(), sig.as_str())
            .header("x-forkswitch-event", kind)
            .timeout(opts.timeout)
            .body(body.clone())
            .send()
            .await;
        let why = match r {
            Ok(resp) if resp.status().is_success() => {
                c.delivered.fetch_add(1, Relaxed);
                return;
            }
            Ok(resp) if resp.status().is_server_error() => format!("status {}", resp.status()),
            Ok(resp) => {
                c.failed.fetch_add(1, Relaxed);
                tracing::info!(url = %target.url, event = kind, status = resp.status().as_u16(),
                    "webhooks: refused by the receiver, not retried");
                return;
            }
            Err(e) => e.to_string(),
        };
        if attempt == attempts {
            c.failed.fetch_add(1, Relaxed);
            tracing::warn!(url = %target.url, event = kind, attempts, error = %why,
                "webhooks: delivery failed");
            return;
        }
        c.retried.fetch_add(1, Relaxed);
        tracing::debug!(url = %target.url, event = kind, attempt, error = %why, "webhooks: retrying");
        tokio::time::sleep(opts.backoff.saturating_mul(1 << (attempt - 1).min(16))).await;
    }
}

// ---- the /v1.0/webhook resource ------------------------------------------

/// The customer's webhook as the API shows it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookConfig {
    /// Owner.
    pub customer_id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// `config` (read-only) or `api`.
    pub origin: Origin,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
}

impl From<&Webhook> for WebhookConfig {
    fn from(w: &Webhook) -> Self {
        WebhookConfig {
            customer_id: w.customer_id,
            url: w.url.clone(),
            origin: w.origin,
            tm_create: w.tm_create,
            tm_update: w.tm_update,
        }
    }
}

/// `PUT /v1.0/webhook`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPut {
    /// `http://` or `https://` URL.
    #[schema(
        pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        max_length = 2048
    )]
    pub url: String,
    /// HMAC-SHA256 key of the signature header (write-only).
    #[schema(min_length = 1, max_length = 256)]
    pub secret: String,
}

fn not_found() -> ApiError {
    ApiError::not_found("WEBHOOK_NOT_FOUND", "no webhook is set")
}

/// The customer's webhook.
#[utoipa::path(get, path = "/v1.0/webhook", tag = "webhook",
    responses(
        (status = 200, description = "The webhook", body = WebhookConfig),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "None set", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn get_config(
    State(state): State<ApiState>,
    customer: CustomerId,
) -> Result<Json<WebhookConfig>, ApiError> {
    match state.db(move |s| s.webhook(customer.0)).await? {
        Some(w) => Ok(Json(WebhookConfig::from(&w))),
        None => Err(not_found()),
    }
}

/// Set the customer's webhook URL and secret.
#[utoipa::path(put, path = "/v1.0/webhook", tag = "webhook", request_body = WebhookPut,
    responses(
        (status = 200, description = "The webhook", body = WebhookConfig),
        (status = 400, description = "Bad body", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file)", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn put_config(
    State(state): State<ApiState>,
    customer: CustomerId,
    Body(body): Body<WebhookPut>,
) -> Result<Json<WebhookConfig>, ApiError> {
    let url = body.url.trim().to_owned();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.len() > 2048 || reqwest::Url::parse(&url).is_err() {
        return Err(ApiError::invalid_field("url", "an http:// or https:// URL"));
    }
    if !(1..=256).contains(&body.secret.len()) {
        return Err(ApiError::invalid_field("secret", "1..256 characters"));
    }
    let old = state.db(move |s| s.webhook(customer.0)).await?;
    if old.as_ref().is_some_and(|w| w.origin == Origin::Config) {
        return Err(ApiError::read_only("webhook"));
    }
    let now = crate::now();
    let w = Webhook {
        customer_id: customer.0,
        url,
        secret: body.secret,
        origin: Origin::Api,
        tm_create: old.map_or(now, |o| o.tm_create),
        tm_update: now,
    };
    let stored = w.clone();
    state
        .db(move |s| {
            s.upsert_webhook(&stored);
            s.flush()
        })
        .await?;
    state.webhooks().set_target(customer.0, &w.url, &w.secret);
    Ok(Json(WebhookConfig::from(&w)))
}

/// Remove the customer's webhook.
#[utoipa::path(delete, path = "/v1.0/webhook", tag = "webhook",
    responses(
        (status = 200, description = "The removed webhook", body = WebhookConfig),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "None set", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn delete_config(
    State(state): State<ApiState>,
    customer: CustomerId,
) -> Result<Json<WebhookConfig>, ApiError> {
    let Some(w) = state.db(move |s| s.webhook(customer.0)).await? else { return Err(not_found()) };
    if w.origin == Origin::Config {
        return Err(ApiError::read_only("webhook"));
    }
    state
        .db(move |s| {
            s.delete_webhook(customer.0);
            s.flush()
        })
        .await?;
    state.webhooks().remove_target(customer.0);
    Ok(Json(WebhookConfig::from(&w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
