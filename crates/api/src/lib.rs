//! # api: forkswitch's REST API
//!
//! What a VoIPBin groupcall client needs, unchanged (`../shared/spec/README.md`):
//! groupcalls you can create (click-to-call), list, watch, hang up and
//! delete; calls (one per leg) you can watch and hang up; and what an
//! operator needs to run the switch without editing its config file:
//! extensions (phone accounts), ring groups, the current registrations, and
//! the customer's webhook. Plus `GET /metrics` (Prometheus/OpenMetrics
//! text), `GET /v1.0/openapi.json` (generated from the code) and `GET
//! /phone` (a JsSIP browser phone).
//!
//! What it never does: it never holds the switch core or reads its call
//! state. Live changes go through [`SwitchPort`] (a
//! [`switch::Command`] in, a [`switch::CommandOutcome`] out), live records
//! are read from the [`store::Store`] the shell writes the switch's
//! [`switch::Persist`] outputs to, and events come in through
//! [`Webhooks::publish`]. It never blocks call processing: webhooks are
//! queued (bounded, dropped and counted when full) and delivered by tasks
//! on the API's own runtime. It never keeps a password or an API key in
//! clear.
//!
//! ## For the shell
//!
//! - Build a [`Webhooks`] dispatcher ([`Webhooks::new`], on the API's
//!   runtime) and load the stored targets ([`Webhooks::load`]); call
//!   [`Webhooks::publish`] for every [`switch::Persist`] the switch outputs
//!   (cheap, non-blocking, callable from any thread).
//! - Make a [`SwitchPort`]: [`port::channel`] gives a [`ChannelPort`] and
//!   the receiver of [`PortRequest`]s to serve next to the switch.
//! - [`ApiState::new`], [`router`], then [`serve`] on a bound listener,
//!   with [`tls::load`] when `[http] tls_cert`/`tls_key` are set.
//!
//! ## Files
//!
//! [`error`] (the envelope, request ids, the request log line), [`extract`]
//! (bodies, queries, path ids), [`auth`], [`paging`], [`groupcalls`],
//! [`calls`], [`extensions`], [`ringgroups`], [`registrations`],
//! [`webhooks`], [`metrics`], [`openapi`], [`port`], [`tls`], [`phone`]
//! (the browser phone page, `GET /phone`), [`traces`] (a call's SIP
//! messages, JSON or pcap), [`console`] (the operator's console, `GET
//! /console`, and its event stream).
//!
//! Main types: [`ApiState`], [`ApiOptions`], [`SwitchPort`], [`Snapshot`],
//! [`Webhooks`], [`ApiError`].
#![deny(missing_docs)]

pub mod auth;
pub mod calls;
pub mod console;
pub mod error;
pub mod extensions;
pub mod extract;
pub mod groupcalls;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod phone;
pub mod port;
mod provision;
pub mod registrations;
pub mod ringgroups;
pub mod tls;
pub mod traces;
pub mod webhooks;

pub use console::LiveEvents;
pub use error::ApiError;
pub use port::{channel, BoxFuture, ChannelPort, PortRequest, Snapshot, SwitchPort, Unavailable};
pub use webhooks::{WebhookOptions, Webhooks};

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use records::Timestamp;
use std::future::Future;
use std::sync::Arc;
use store::{Store, StoreError};

/// Limits of the API (those of what it provisions are the `provisioning`
/// rules').
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Largest request body, bytes (413 beyond). Default 64 KiB.
    pub body_limit: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions { body_limit: 64 * 1024 }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    switch: Arc<dyn SwitchPort>,
    webhooks: Webhooks,
    metrics: metrics::Metrics,
    options: ApiOptions,
    /// The shell's call trace store, once given ([`ApiState::set_traces`]).
    traces: std::sync::OnceLock<traces::Traces>,
    events: console::LiveEvents,
}

/// What every handler shares: the store, the switch port, the webhook
/// dispatcher, the metrics and the limits. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state over a store, a switch port and a webhook dispatcher.
    pub fn new(
        store: Arc<dyn Store>,
        switch: Arc<dyn SwitchPort>,
        webhooks: Webhooks,
        options: ApiOptions,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                store,
                switch,
                webhooks,
                metrics: metrics::Metrics::default(),
                options,
                traces: std::sync::OnceLock::new(),
                events: console::LiveEvents::default(),
            }),
        }
    }

    /// The webhook dispatcher (for [`Webhooks::publish`]).
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// Serves the call traces from `traces` (the shell's store; `[trace]`
    /// on). Without it the messages endpoints answer an empty list. Set once.
    pub fn set_traces(&self, traces: traces::Traces) {
        let _ = self.inner.traces.set(traces);
    }

    /// Where the shell publishes persisted records for the consoles
    /// ([`LiveEvents::publish`]).
    pub fn events(&self) -> &console::LiveEvents {
        &self.inner.events
    }

    pub(crate) fn traces(&self) -> Option<&traces::Traces> {
        self.inner.traces.get()
    }

    pub(crate) fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    pub(crate) fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Runs a store call off the async threads (reads may do I/O, a flush
    /// waits for a commit).
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::internal(format!("store task failed: {e}"))),
        }
    }

    /// Sends a command to the switch core.
    pub(crate) async fn command(
        &self,
        c: switch::Command,
    ) -> Result<switch::CommandOutcome, ApiError> {
        Ok(self.inner.switch.command(c).await?)
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot, Unavailable> {
        self.inner.switch.snapshot().await
    }
}

/// The wall clock, read here for the API's own records.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

/// Every route: `/v1.0/...`, `/metrics`; the fallbacks and layers that
/// make every error an envelope with a request id.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.options().body_limit;
    Router::new()
        .route("/v1.0/groupcalls", post(groupcalls::create).get(groupcalls::list))
        .route("/v1.0/groupcalls/{id}", get(groupcalls::get).delete(groupcalls::delete))
        .route("/v1.0/groupcalls/{id}/hangup", post(groupcalls::hangup))
        .route("/v1.0/groupcalls/{id}/messages", get(traces::groupcall_messages))
        .route("/v1.0/calls", get(calls::list))
        .route("/v1.0/calls/{id}", get(calls::get))
        .route("/v1.0/calls/{id}/hangup", post(calls::hangup))
        .route("/v1.0/calls/{id}/messages", get(traces::call_messages))
        .route("/v1.0/extensions", post(extensions::create).get(extensions::list))
        .route(
            "/v1.0/extensions/{id}",
            get(extensions::get).put(extensions::update).delete(extensions::delete),
        )
        .route("/v1.0/ringgroups", post(ringgroups::create).get(ringgroups::list))
        .route(
            "/v1.0/ringgroups/{id}",
            get(ringgroups::get).put(ringgroups::update).delete(ringgroups::delete),
        )
        .route("/v1.0/registrations", get(registrations::list))
        .route(
            "/v1.0/webhook",
            get(webhooks::get_config).put(webhooks::put_config).delete(webhooks::delete_config),
        )
        .route("/v1.0/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::scrape))
        .route("/v1.0/events", get(console::events))
        .route("/console", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/phone", get(phone::page))
        .route("/phone/phone.js", get(phone::script))
        .route("/phone/jssip.min.js", get(phone::jssip))
        .method_not_allowed_fallback(error::wrong_method)
        .route_layer(from_fn(error::remember_route))
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(state.clone(), error::request_context))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves: plain HTTP, or
/// HTTPS when `tls` is given (see [`tls::load`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
        Some(cfg) => tls::serve(listener, router, cfg, shutdown).await,
    }
}
