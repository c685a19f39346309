//! The operator's console: `GET /console` (API key required, e.g.
//! `?accesskey=KEY`), a page that shows the customer's live groupcalls as
//! trees (root, child groupcalls, legs and their state as it changes) and,
//! for any of them, the SIP ladder of its messages (`web/console/`, vanilla
//! JavaScript embedded in the binary, no build step); and the event stream
//! it listens to, `GET /v1.0/events` (Server-Sent Events: `groupcall` and
//! `call`, each the record as `GET` returns it, as the switch persists it).
//!
//! [`LiveEvents`] is fed by the shell with every persisted record (like the
//! webhooks). With no console open it costs one atomic load per record; a
//! slow page misses events (a bounded channel) and is told to reload
//! (`event: resync`).

use crate::auth::CustomerId;
use crate::error::ErrorEnvelope;
use crate::ApiState;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use switch::Persist;
use tokio::sync::broadcast;
use uuid::Uuid;

const PAGE: &str = include_str!("../../../web/console/index.html");
const SCRIPT: &str = include_str!("../../../web/console/console.js");

/// Records waiting for each open console; a slower one skips ahead.
const CHANNEL: usize = 4096;

/// One record change for the consoles.
#[derive(Clone, Debug)]
enum Live {
    Groupcall(Box<records::Groupcall>),
    Call(Box<records::Call>),
}

impl Live {
    fn customer(&self) -> Uuid {
        match self {
            Live::Groupcall(g) => g.customer_id,
            Live::Call(c) => c.customer_id,
        }
    }

    fn event(&self) -> Event {
        let (name, data) = match self {
            Live::Groupcall(g) => ("groupcall", serde_json::to_string(g)),
            Live::Call(c) => ("call", serde_json::to_string(c)),
        };
        Event::default().event(name).data(data.unwrap_or_default())
    }
}

/// Where the shell publishes persisted records for the consoles. Cheap to
/// clone; [`LiveEvents::publish`] never blocks.
#[derive(Clone, Debug)]
pub struct LiveEvents {
    tx: broadcast::Sender<Arc<Live>>,
}

impl Default for LiveEvents {
    fn default() -> Self {
        LiveEvents { tx: broadcast::channel(CHANNEL).0 }
    }
}

impl LiveEvents {
    /// Hands a persisted groupcall or call to every open console (nothing
    /// to do, and nothing copied, when none is open).
    pub fn publish(&self, p: &Persist) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let live = match p {
            Persist::Groupcall(g) => Live::Groupcall(Box::new(g.clone())),
            Persist::Call(c) => Live::Call(Box::new(c.clone())),
            _ => return,
        };
        let _ = self.tx.send(Arc::new(live));
    }
}

/// The next event for `customer` from `rx`: theirs, or a resync after a
/// gap.
async fn next_event(
    mut rx: broadcast::Receiver<Arc<Live>>,
    customer: Uuid,
) -> Option<(Result<Event, Infallible>, broadcast::Receiver<Arc<Live>>)> {
    loop {
        match rx.recv().await {
            Ok(live) if live.customer() == customer => return Some((Ok(live.event()), rx)),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let ev = Event::default().event("resync").data(n.to_string());
                return Some((Ok(ev), rx));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The customer's groupcall and call records as the switch persists them
/// (Server-Sent Events `groupcall`, `call`; `resync` when some were
/// missed: read the lists again).
#[utoipa::path(get, path = "/v1.0/events", tag = "groupcalls",
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
    ))]
pub async fn events(State(state): State<ApiState>, customer: CustomerId) -> impl IntoResponse {
    let rx = state.events().tx.subscribe();
    let stream = futures_util::stream::unfold(rx, move |rx| next_event(rx, customer.0));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /console`: the page (the API key is checked; the page reads it from
/// its own URL for the API calls it makes).
pub async fn page(_customer: CustomerId) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        PAGE,
    )
}

/// `GET /console/console.js`: the page's script (code only, no data: no
/// key needed).
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}
