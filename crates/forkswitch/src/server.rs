//! The running server: the tokio shell around the sans-IO cores. It feeds
//! what the transport receives and what time it is into the transaction
//! layer, sends what the layer wants sent, answers the requests the layer
//! hands up, and stops on SIGINT/SIGTERM after in-flight transactions finish
//! (bounded by the grace time).

use crate::config::Config;
use crate::local::{self, LocalIdentity};
use sip_message::{validate, Message, Method, Peer, Policy, Verdict};
use sip_transaction::{Event, TransactionLayer, TxKey};
use sip_transport::{Inbound, SendFailure, SipTransport};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Depth of the transport -> core queue; beyond it UDP input is dropped.
const INBOUND_QUEUE: usize = 65_536;

/// The SIP core: everything the event loop owns. One owner, no locks.
pub struct Core {
    transport: SipTransport,
    tx: TransactionLayer,
    policy: Policy,
    identity: LocalIdentity,
    server_header: String,
}

impl Core {
    /// A message from the network.
    fn on_inbound(&mut self, inb: Inbound) {
        let Inbound { message, peer, received_at } = inb;
        match validate(&message, &self.policy) {
            Verdict::Drop(why) => debug!(%peer, %why, "dropped"),
            Verdict::Reject(r) => {
                // Malformed requests are answered statelessly: they may lack
                // what a transaction is keyed on.
                debug!(%peer, status = r.status, detail = %r.detail, "rejected");
                let resp = local::rejection(&message, &r, &self.server_header);
                self.transport.send_response(&peer, &resp, 0);
            }
            Verdict::Accept => {
                self.tx.handle_incoming(received_at, message, peer);
                self.pump(received_at);
            }
        }
    }

    /// Drains the transaction layer: events to handle, messages to send.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(ev) = self.tx.poll_event() {
                busy = true;
                self.on_event(now, ev);
            }
            while let Some(t) = self.tx.poll_transmit() {
                busy = true;
                if t.message.is_request() {
                    self.transport.send_request(&t.peer, &t.message, 0);
                } else {
                    self.transport.send_response(&t.peer, &t.message, 0);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::NewRequest { key, request, peer } => self.on_request(now, key, request, peer),
            Event::Cancel { key, request, cancels, .. } => {
                // Nothing of ours is pending long enough to be cancelled yet:
                // every INVITE is answered at once.
                let code = if cancels.is_some() { 200 } else { 481 };
                let resp = local::response(&request, code, &self.server_header).build();
                self.respond(now, key, resp);
            }
            Event::Stray { message, peer } => {
                debug!(%peer, method = ?message.method(), status = ?message.status(), "stray message");
            }
            Event::Response { key, .. } => {
                debug!(%key, "response for an unknown client transaction")
            }
            Event::Timeout { key } => debug!(%key, "transaction timeout"),
            Event::TransportError { key } => debug!(%key, "transaction transport error"),
            Event::Terminated { .. } => {}
        }
    }

    fn respond(&mut self, now: Instant, key: TxKey, resp: Message) {
        if let Err(e) = self.tx.send_response(now, key, resp) {
            warn!(%key, error = ?e, "could not send response");
        }
    }

    fn on_request(&mut self, now: Instant, key: TxKey, req: Message, _peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Ack);
        let to_us = match req.request_uri() {
            Some(Ok(u)) => self.identity.is_local(&u),
            _ => false,
        };
        let resp = if method == Method::Options && to_us {
            local::options_ok(&req, &self.server_header)
        } else if req.max_forwards().ok().flatten() == Some(0) {
            local::response(&req, 483, &self.server_header).build()
        } else {
            match method {
                Method::Bye => local::response(&req, 481, &self.server_header).build(),
                _ => local::response(&req, 404, &self.server_header).build(),
            }
        };
        self.respond(now, key, resp);
    }

    fn on_timer(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.pump(now);
    }
}

async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Sleeps until the core's next deadline (forever when there is none).
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Runs the server until a stop signal; returns when it has shut down.
pub async fn run(cfg: Config) -> Result<(), String> {
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<SendFailure>();
    let transport = SipTransport::bind(cfg.transport(), in_tx, fail_tx)
        .await
        .map_err(|e| format!("cannot bind SIP listeners: {e}"))?;
    let addrs = transport.local_addrs();
    for (t, a) in &addrs {
        info!(transport = %t, addr = %a, "listening");
    }
    let mut core = Core {
        transport: transport.clone(),
        tx: TransactionLayer::new(cfg.transaction()),
        policy: local::policy(),
        identity: LocalIdentity {
            names: cfg.sip.aliases.clone(),
            addrs: addrs.iter().map(|(_, a)| *a).collect(),
        },
        server_header: cfg.sip.user_agent.clone(),
    };
    info!(version = env!("CARGO_PKG_VERSION"), "forkswitch ready");
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(inb) = in_rx.recv() => core.on_inbound(inb),
            Some(f) = fail_rx.recv() => debug!(peer = %f.peer, reason = %f.reason, "send failed"),
            _ = until(core.tx.poll_timeout()) => core.on_timer(Instant::now()),
            sig = &mut stop => {
                info!(signal = sig, "stopping: no new requests");
                break;
            }
        }
    }
    transport.stop_receiving();
    // Finish what is queued and let live transactions run their course, for
    // at most the grace time.
    let grace_end = Instant::now() + Duration::from_secs(cfg.shutdown.grace_secs);
    while let Ok(inb) = in_rx.try_recv() {
        core.on_inbound(inb);
    }
    while !core.tx.is_empty() {
        let next = core.tx.poll_timeout().map_or(grace_end, |d| d.min(grace_end));
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        let now = Instant::now();
        if now >= grace_end {
            warn!(live_transactions = core.tx.len(), "grace time over with work left");
            break;
        }
        core.on_timer(now);
    }
    info!("stopped");
    Ok(())
}
