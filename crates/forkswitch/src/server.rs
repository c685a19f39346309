//! The running server: the tokio shell around the sans-IO cores. It feeds
//! what the transport receives and what time it is into the transaction
//! layer, sends what the layer wants sent, answers the requests the layer
//! hands up, and stops on SIGINT/SIGTERM after in-flight transactions finish
//! (bounded by the grace time).

use crate::config::Config;
use crate::local::{self, LocalIdentity};
use records::{Binding, Timestamp};
use registrar::{Accounts, BindingPersistence, LocationStore, Registrar};
use sip_message::{validate, Message, Method, Peer, Policy, Verdict};
use sip_transaction::{Event, TransactionLayer, TxKey};
use sip_transport::{Inbound, SendFailure, SipTransport};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::Store;
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
    registrar: Registrar,
}

/// Bindings written through to the store (queued, batched off the hot path).
struct StoreBindings(Arc<dyn Store>);

impl BindingPersistence for StoreBindings {
    fn upsert(&self, b: &Binding) {
        self.0.upsert_binding(b);
    }
    fn remove(&self, aor: &str, contact: &str) {
        self.0.remove_binding(aor, contact);
    }
}

/// Wall-clock time for records (the shell reads clocks; the cores don't).
fn wall() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// Opens the configured store: SQLite, or memory when no path is set.
fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    if cfg.database.path.is_empty() {
        return Ok(Arc::new(store::MemoryStore::new()));
    }
    store::SqliteStore::open(std::path::Path::new(&cfg.database.path))
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| format!("{}: cannot open the database: {e}", cfg.database.path))
}

/// Accounts: what the store has, overlaid with the config file's (the config
/// wins and is written back, so the store always holds the latest).
fn load_accounts(cfg: &Config, db: &dyn Store) -> Result<Accounts, String> {
    let (customers, domains, extensions) = cfg.accounts();
    for c in &customers {
        db.upsert_customer(c);
    }
    for d in &domains {
        db.upsert_domain(d);
    }
    for e in &extensions {
        db.upsert_extension(e);
    }
    db.flush().map_err(|e| format!("cannot write accounts: {e}"))?;
    let customers = db.customers().map_err(|e| e.to_string())?;
    let domains = db.domains().map_err(|e| e.to_string())?;
    let extensions = db.extensions().map_err(|e| e.to_string())?;
    Ok(Accounts::new(customers, domains, extensions))
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
        if method == Method::Register {
            match self.registrar.handle(now, wall(), &req, &_peer) {
                Some(resp) => self.respond(now, key, resp),
                None => self.tx.terminate(key),
            }
            return;
        }
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

    /// OPTIONS to every UDP contact, keeping NAT pinholes open. Sent
    /// outside transactions: the answers are strays and are dropped.
    fn keepalive(&mut self) {
        for peer in self.registrar.location().udp_targets(wall()) {
            let branch = self.tx.new_branch();
            let ping = local::keepalive_options(&peer, &branch, &self.server_header);
            self.transport.send_request(&peer, &ping, 0);
        }
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
    let db = open_store(&cfg)?;
    let accounts = load_accounts(&cfg, db.as_ref())?;
    let location = Arc::new(LocationStore::new(Some(Arc::new(StoreBindings(db.clone())))));
    let bindings = db.load_bindings(wall()).map_err(|e| format!("cannot load bindings: {e}"))?;
    let loaded = bindings.len();
    location.load(bindings);
    info!(
        bindings = loaded,
        extensions = accounts.extensions().count(),
        domains = accounts.domains().len(),
        database = %cfg.database.path,
        "location loaded"
    );
    let registrar = Registrar::new(cfg.registrar(), accounts, location.clone());
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
        registrar,
    };
    let keepalive_every = Duration::from_secs(cfg.registrar.keepalive_interval_secs.max(1));
    let mut keepalive = tokio::time::interval(keepalive_every);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_on = cfg.registrar.keepalive_interval_secs > 0;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(version = env!("CARGO_PKG_VERSION"), "forkswitch ready");
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(inb) = in_rx.recv() => core.on_inbound(inb),
            Some(f) = fail_rx.recv() => debug!(peer = %f.peer, reason = %f.reason, "send failed"),
            _ = until(core.tx.poll_timeout()) => core.on_timer(Instant::now()),
            _ = keepalive.tick(), if keepalive_on => core.keepalive(),
            _ = sweep.tick() => {
                let gone = core.registrar.sweep(Instant::now(), wall());
                if !gone.is_empty() {
                    debug!(expired = gone.len(), "bindings expired");
                }
            }
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
    if let Err(e) = db.flush() {
        warn!(error = %e, "store flush at shutdown failed");
    }
    info!("stopped");
    Ok(())
}
