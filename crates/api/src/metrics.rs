//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (which Prometheus scrapes natively), with the `prometheus-client` crate.
//! The switch's numbers are read at scrape time, through the
//! [`crate::SwitchPort`] ([`crate::Snapshot`]: `switch::Counters` and
//! `switch::SwitchStats`), and written by a collector; the API's own
//! (requests by route template, method and status; key failures) are
//! counted as requests come; the webhook dispatcher's and the store's are
//! read from them. Names follow the Prometheus conventions: a
//! `forkswitch_` prefix, `_total` on counters, base units (`_seconds`).

use crate::webhooks::WebhookStats;
use crate::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::time::Duration;
use store::StoreStats;
use switch::counters::{Histogram, COUNTED_METHODS, SECURITY_EVENTS};

/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the switch's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

/// The API's own metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    auth_failures: Counter,
}

impl Metrics {
    /// Counts one request (route template, not the raw path: bounded labels).
    pub(crate) fn api_request(&self, route: &str, method: &str, status: u16, _took: Duration) {
        let labels = RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a request refused for its API key.
    pub(crate) fn auth_failure(&self) {
        self.auth_failures.inc();
    }
}

/// Everything read at one scrape.
#[derive(Debug)]
struct Scrape {
    snapshot: Option<crate::Snapshot>,
    store: StoreStats,
    webhooks: WebhookStats,
    traces: Option<sip_trace::TraceStats>,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram<const N: usize>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram<N>,
) -> std::fmt::Result {
    let mut buckets: Vec<(f64, u64)> = h.bounds.iter().copied().zip(h.buckets).collect();
    buckets.push((f64::MAX, h.above));
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &buckets, None)
}

/// Media anchoring: ng requests by command and result, their latency,
/// rtpengine instances configured and up.
fn media(e: &mut DescriptorEncoder, m: &switch::counters::MediaCounters) -> std::fmt::Result {
    use switch::counters::{MEDIA_COMMANDS, MEDIA_RESULTS};
    let h = "ng requests to rtpengine, by command and result";
    let mut d = e.encode_descriptor("media_ng_requests", h, None, MetricType::Counter)?;
    for (command, row) in MEDIA_COMMANDS.iter().zip(&m.requests) {
        for (result, n) in MEDIA_RESULTS.iter().zip(row) {
            let labels = [("command", *command), ("result", *result)];
            ConstCounter::new(*n).encode(d.encode_family(&labels)?)?;
        }
    }
    let h = "ng request latency (first send to reply or failure)";
    histogram(e, "media_ng_latency_seconds", h, &m.latency_seconds)?;
    let n = i64::try_from(m.instances).unwrap_or(i64::MAX);
    gauge(e, "media_rtpengine_instances", "rtpengine instances configured ([media])", n)?;
    let up = i64::try_from(m.instances_up).unwrap_or(i64::MAX);
    gauge(e, "media_rtpengine_up", "rtpengine instances answering", up)
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
const OUTCOMES: [&str; 5] = ["answered", "cancelled", "busy", "no_answer", "failed"];

fn zip<'a>(names: &[&'a str], values: &[u64]) -> Vec<(&'a str, u64)> {
    names.iter().copied().zip(values.iter().copied()).collect()
}

fn signed(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let up = i64::from(self.snapshot.is_some());
        gauge(&mut e, "switch_up", "1 when the switch core answered this scrape", up)?;
        if let Some(s) = &self.snapshot {
            let c = &s.counters;
            let (i, o) = (&c.messages_in, &c.messages_out);
            let h = "SIP requests received (parsed), by method";
            labelled(
                &mut e,
                "sip_requests_received",
                h,
                "method",
                &zip(&COUNTED_METHODS, &i.requests),
            )?;
            let h = "SIP requests sent (retransmissions included), by method";
            labelled(
                &mut e,
                "sip_requests_sent",
                h,
                "method",
                &zip(&COUNTED_METHODS, &o.requests),
            )?;
            let h = "SIP responses received, by status class";
            labelled(&mut e, "sip_responses_received", h, "class", &zip(&CLASSES, &i.responses))?;
            let h = "SIP responses sent, by status class";
            labelled(&mut e, "sip_responses_sent", h, "class", &zip(&CLASSES, &o.responses))?;
            let h = "Datagrams dropped before any transaction (unparsable or invalid)";
            counter(&mut e, "sip_messages_dropped", h, c.dropped_in)?;
            let h = "Messages sent again by the transaction layer";
            counter(&mut e, "sip_retransmissions", h, c.retransmissions)?;
            let h = "Failed SIP digest authentications (INVITE)";
            counter(&mut e, "sip_auth_failures", h, c.auth_failures)?;
            let h = "New INVITEs answered 503 by overload control";
            counter(&mut e, "sip_invites_shed", h, c.shed_invites)?;
            let h = "New REGISTERs answered 503 beyond the REGISTER rate";
            counter(&mut e, "sip_registers_shed", h, c.shed_registers)?;
            let h = "Requests dropped from sources banned for their request rate";
            counter(&mut e, "sip_rate_limited", h, c.rate_limited)?;
            let h =
                "Security events (REGISTER and INVITE): failed authentications, bans, rate limits";
            let events = zip(&SECURITY_EVENTS, &c.security_events);
            labelled(&mut e, "security_events", h, "event", &events)?;
            counter(&mut e, "calls_started", "Inbound calls served", c.calls_started)?;
            counter(&mut e, "call_pickups", "Ringing calls answered by a pickup", c.pickups)?;
            let h = "Calls ended, by outcome";
            labelled(&mut e, "calls", h, "outcome", &zip(&OUTCOMES, &c.calls_ended))?;
            let h = "Setup time of answered calls (INVITE to answer)";
            histogram(&mut e, "call_setup_seconds", h, &c.setup_seconds)?;
            let h = "Legs dialed per groupcall (counted when its call ends)";
            histogram(&mut e, "groupcall_legs", h, &c.legs_per_groupcall)?;
            media(&mut e, &c.media)?;
            let st = &s.stats;
            gauge(&mut e, "calls_active", "Calls being served", signed(st.calls))?;
            gauge(&mut e, "dialogs_active", "B2BUA calls (dialogs) held", signed(st.dialog_calls))?;
            let h = "Live SIP transactions";
            gauge(&mut e, "sip_transactions_active", h, signed(st.transactions))?;
            gauge(&mut e, "registrations", "Registered bindings", signed(st.bindings))?;
            let h = "Busy lamp (dialog package) subscriptions held";
            gauge(&mut e, "blf_subscriptions", h, signed(st.subscriptions))?;
            gauge(&mut e, "timers", "Entries in the timer queue", signed(st.timers))?;
            gauge(
                &mut e,
                "dns_queries_in_flight",
                "DNS questions in flight",
                signed(st.dns_queries),
            )?;
            // Every served call is one root groupcall.
            let h = "Root groupcalls live (one per call served)";
            gauge(&mut e, "groupcalls_active", h, signed(st.calls))?;
            let answered = c.calls_ended.first().copied().unwrap_or(0);
            let unanswered = c.calls_ended.iter().skip(1).sum();
            let values = [("answered", answered), ("unanswered", unanswered)];
            labelled(
                &mut e,
                "groupcalls",
                "Root groupcalls ended, by outcome",
                "outcome",
                &values,
            )?;
        }
        let w = &self.webhooks;
        let values = [("delivered", w.delivered), ("failed", w.failed), ("retried", w.retried)];
        labelled(
            &mut e,
            "webhook_deliveries",
            "Webhook delivery attempts, by result",
            "result",
            &values,
        )?;
        let h = "Webhook events dropped because the customer's queue was full";
        counter(&mut e, "webhook_events_dropped", h, w.dropped)?;
        let st = &self.store;
        let values = [("written", st.written), ("failed", st.failed), ("dropped", st.dropped)];
        labelled(&mut e, "store_writes", "Store writes, by result", "result", &values)?;
        let h = "Store transactions committed (each holds the writes queued meanwhile)";
        counter(&mut e, "store_commits", h, st.batches)?;
        let h = "Store writes pending: queued, or held in the commit window (also while the \
                 database is away)";
        gauge(&mut e, "store_queue_depth", h, i64::try_from(st.queued).unwrap_or(i64::MAX))?;
        if let Some(t) = &self.traces {
            let h =
                "Bytes the call trace store holds (messages and bookkeeping; [trace] max_bytes)";
            gauge(&mut e, "trace_bytes", h, signed(t.bytes))?;
            gauge(
                &mut e,
                "trace_messages",
                "SIP messages the call trace store holds",
                signed(t.messages),
            )?;
            let h = "SIP messages the call trace store let go (budget or age)";
            counter(&mut e, "trace_evicted", h, t.evicted)?;
        }
        let h = "Most store writes held ([database] max_pending); past it the newest are dropped";
        gauge(&mut e, "store_queue_limit", h, i64::try_from(st.max_pending).unwrap_or(i64::MAX))?;
        let h = "1 when the last store commit reached the database, 0 while it is away";
        gauge(&mut e, "store_database_up", h, i64::from(st.available))?;
        let h = "Ended records deleted by retention ([database] keep_days)";
        counter(&mut e, "store_records_expired", h, st.expired)?;
        Ok(())
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "metrics", security(()),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub async fn scrape(State(state): State<ApiState>) -> Response {
    let snapshot = match tokio::time::timeout(SNAPSHOT_TIMEOUT, state.snapshot()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    let traces = state.traces().map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).stats());
    let scrape = Scrape {
        snapshot,
        store: state.store().stats(),
        webhooks: state.webhooks().stats(),
        traces,
    };
    let m = state.metrics();
    let mut registry = Registry::with_prefix("forkswitch");
    registry.register(
        "api_requests",
        "API requests, by route, method and status",
        m.requests.clone(),
    );
    registry.register(
        "api_auth_failures",
        "API requests refused for a missing or bad API key",
        m.auth_failures.clone(),
    );
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return crate::ApiError::internal(format!("metrics encoding: {e}")).into_response();
    }
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}
