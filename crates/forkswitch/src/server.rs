//! The running server: binds the transport, runs the SIP event loop, stops
//! on SIGINT/SIGTERM after finishing in-flight work for a bounded time.

use crate::config::Config;
use crate::local::{self, LocalIdentity};
use sip_message::{validate, Message, Method, Policy, Verdict};
use sip_transport::{Inbound, SendFailure, SipTransport};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Depth of the transport -> core queue; beyond it UDP input is dropped.
const INBOUND_QUEUE: usize = 65_536;

/// The SIP core: everything the event loop owns.
pub struct Core {
    transport: SipTransport,
    policy: Policy,
    identity: LocalIdentity,
    server_header: String,
}

impl Core {
    fn handle(&mut self, inb: Inbound) {
        let Inbound { message, peer, .. } = inb;
        match validate(&message, &self.policy) {
            Verdict::Drop(why) => {
                debug!(%peer, %why, "dropped");
            }
            Verdict::Reject(r) => {
                debug!(%peer, status = r.status, detail = %r.detail, "rejected");
                let resp = local::rejection(&message, &r, &self.server_header);
                self.transport.send_response(&peer, &resp, 0);
            }
            Verdict::Accept => {
                if message.is_request() {
                    self.request(message, peer);
                } else {
                    debug!(%peer, status = message.status(), "stray response dropped");
                }
            }
        }
    }

    fn request(&mut self, req: Message, peer: sip_message::Peer) {
        let method = req.method().cloned().unwrap_or(Method::Ack);
        if method == Method::Ack {
            return;
        }
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
                Method::Cancel | Method::Bye => {
                    local::response(&req, 481, &self.server_header).build()
                }
                _ => local::response(&req, 404, &self.server_header).build(),
            }
        };
        self.transport.send_response(&peer, &resp, 0);
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
            Some(inb) = in_rx.recv() => core.handle(inb),
            Some(f) = fail_rx.recv() => debug!(peer = %f.peer, reason = %f.reason, "send failed"),
            sig = &mut stop => {
                info!(signal = sig, "stopping: no new requests");
                break;
            }
        }
    }
    transport.stop_receiving();
    // Finish what is already queued, for at most the grace time.
    let grace = Duration::from_secs(cfg.shutdown.grace_secs);
    let drain = async {
        while let Ok(inb) = in_rx.try_recv() {
            core.handle(inb);
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        warn!("grace time over with work left");
    }
    info!("stopped");
    Ok(())
}
