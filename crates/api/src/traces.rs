//! `GET /v1.0/groupcalls/{id}/messages` and `GET /v1.0/calls/{id}/messages`:
//! the SIP messages of a call, as the switch received and sent them, from
//! the shell's call trace store (`[trace]`), in time order; JSON, or a pcap
//! file with `Accept: application/vnd.tcpdump.pcap` (Wireshark and tshark
//! open it as SIP).
//!
//! The store knows messages by SIP Call-ID; the records say which Call-IDs
//! a call has: a groupcall's are those of its inbound call
//! (`master_call_id`), of every leg it dialed (`call_ids`) and, the same
//! way, of its child groupcalls (`groupcall_ids`, nested groups, forwards,
//! carrier failover). A call's are its own leg's. Only the customer's own
//! records answer (another's id is 404, as everywhere).

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::IdPath;
use crate::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use records::{Groupcall, Timestamp, NIL};
use serde::Serialize;
use sip_trace::{Captured, TraceStore};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use store::Store;

/// The shell's trace store, shared with the API.
pub type Traces = Arc<Mutex<TraceStore>>;

/// Most groupcalls of one tree walked for its Call-IDs.
const MAX_GROUPCALLS: usize = 256;

/// One SIP message of a call.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SipMessage {
    /// When the switch received or sent it (UTC, microseconds).
    #[schema(value_type = String, example = "2026-12-07 19:40:00.123456")]
    pub time: Timestamp,
    /// `in` (received by the switch) or `out` (sent).
    #[schema(pattern = "^(in|out)$")]
    pub direction: String,
    /// `UDP`, `TCP`, `TLS`, `WS` or `WSS`.
    pub transport: String,
    /// Source `ip:port`.
    pub src: String,
    /// Destination `ip:port`.
    pub dst: String,
    /// Its SIP Call-ID.
    pub call_id: String,
    /// The message as on the wire (not UTF-8 bytes replaced).
    pub message: String,
}

/// The messages of a call, oldest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SipMessages {
    /// The messages.
    pub result: Vec<SipMessage>,
}

impl From<&Captured> for SipMessage {
    fn from(c: &Captured) -> Self {
        SipMessage {
            time: Timestamp::from_micros(c.time_us),
            direction: c.direction.as_str().to_owned(),
            transport: c.transport.to_string(),
            src: c.src.to_string(),
            dst: c.dst.to_string(),
            call_id: String::from_utf8_lossy(c.call_id()).into_owned(),
            message: String::from_utf8_lossy(&c.bytes).into_owned(),
        }
    }
}

/// The SIP Call-IDs of a groupcall's tree (bounded walk).
fn groupcall_call_ids(s: &dyn Store, root: Groupcall) -> Result<Vec<String>, store::StoreError> {
    let mut call_ids = BTreeSet::new();
    let mut seen = BTreeSet::from([root.id]);
    let mut todo = vec![root];
    while let Some(g) = todo.pop() {
        let calls =
            g.call_ids.iter().copied().chain((g.master_call_id != NIL).then_some(g.master_call_id));
        for id in calls {
            if let Some(c) = s.call(id)? {
                call_ids.insert(c.sip_call_id);
            }
        }
        for child in &g.groupcall_ids {
            if seen.len() < MAX_GROUPCALLS && seen.insert(*child) {
                if let Some(c) = s.groupcall(*child)? {
                    todo.push(c);
                }
            }
        }
    }
    call_ids.remove("");
    Ok(call_ids.into_iter().collect())
}

fn wants_pcap(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(sip_trace::pcap::CONTENT_TYPE))
}

/// The messages of `call_ids`, as JSON or pcap.
fn answer(state: &ApiState, call_ids: &[String], headers: &HeaderMap) -> Response {
    let messages = match state.traces() {
        Some(t) => {
            let ids: Vec<&[u8]> = call_ids.iter().map(|c| c.as_bytes()).collect();
            t.lock().unwrap_or_else(|e| e.into_inner()).messages(&ids, crate::now().micros())
        }
        None => Vec::new(),
    };
    if wants_pcap(headers) {
        let body = sip_trace::pcap::write(&messages);
        let ct = HeaderValue::from_static(sip_trace::pcap::CONTENT_TYPE);
        return (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response();
    }
    Json(SipMessages { result: messages.iter().map(SipMessage::from).collect() }).into_response()
}

/// The SIP messages of a groupcall: its inbound call's, every leg's, and
/// its child groupcalls', oldest first (JSON, or pcap with
/// `Accept: application/vnd.tcpdump.pcap`). Messages older than `[trace]
/// keep_secs`, or pushed out by newer ones beyond `max_bytes`, are gone.
#[utoipa::path(get, path = "/v1.0/groupcalls/{id}/messages", tag = "groupcalls",
    params(("id" = Uuid, Path, description = "Groupcall id")),
    responses(
        (status = 200, description = "Its messages", content(
            (SipMessages = "application/json"),
            (Vec<u8> = "application/vnd.tcpdump.pcap"),
        )),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such groupcall (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn groupcall_messages(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let root = crate::groupcalls::owned(&state, customer, id).await?;
    let call_ids = state.db(move |s| groupcall_call_ids(s, root)).await?;
    Ok(answer(&state, &call_ids, &headers))
}

/// The SIP messages of one call (one leg, or the inbound call), oldest
/// first (JSON, or pcap with `Accept: application/vnd.tcpdump.pcap`).
#[utoipa::path(get, path = "/v1.0/calls/{id}/messages", tag = "calls",
    params(("id" = Uuid, Path, description = "Call id")),
    responses(
        (status = 200, description = "Its messages", content(
            (SipMessages = "application/json"),
            (Vec<u8> = "application/vnd.tcpdump.pcap"),
        )),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such call (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn call_messages(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let call = crate::calls::owned(&state, customer, id).await?;
    let ids: Vec<String> = [call.sip_call_id].into_iter().filter(|c| !c.is_empty()).collect();
    Ok(answer(&state, &ids, &headers))
}
