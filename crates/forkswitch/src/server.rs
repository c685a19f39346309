//! The running server: the tokio shell around the sans-IO cores. It feeds
//! what the transport receives and what time it is into the transaction
//! layer, sends what the layer wants sent, answers the requests the layer
//! hands up, and stops on SIGINT/SIGTERM after in-flight transactions finish
//! (bounded by the grace time).

use crate::calls::{Calls, Dir, NewCall, Resolve};
use crate::config::Config;
use crate::dns::SipResolver;
use crate::local::{self, LocalIdentity};
use groupcall::{Destination, GroupDef};
use records::{Address, AddressType, RingMethod, NIL};
use records::{Binding, Timestamp};
use registrar::{Accounts, BindingPersistence, LocationStore, Registrar};
use registrar::{Algorithm, Outcome};
use routing::{Caller, Decision, RouteTable};
use sip_message::HeaderName;
use sip_message::{validate, Message, Method, Peer, Policy, Verdict};
use sip_transaction::{Event, TransactionLayer, TxKey};
use sip_transport::{Inbound, SendFailure, SipTransport};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::Store;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use uuid::Uuid;

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
    calls: Calls,
    routes: RouteTable,
    resolver: SipResolver,
    resolved: mpsc::UnboundedSender<(Resolve, Vec<(sip_message::Transport, std::net::SocketAddr)>)>,
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
            if self.calls.drive(&mut self.tx, now, wall(), &self.routes) {
                busy = true;
            }
            // ACKs for 2xx and 2xx retransmissions go outside transactions,
            // and before the transaction layer's output (ACK before BYE).
            while let Some(st) = self.calls.mgr.poll_stateless() {
                busy = true;
                if st.message.is_request() {
                    self.transport.send_request(&st.peer, &st.message, 0);
                } else {
                    self.transport.send_response(&st.peer, &st.message, 0);
                }
            }
            for r in self.calls.take_resolves() {
                busy = true;
                let resolver = self.resolver.clone();
                let done = self.resolved.clone();
                tokio::spawn(async move {
                    let targets = resolver.targets(&r.host, r.port, r.transport).await;
                    let _ = done.send((r, targets));
                });
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
        let Some(ev) = self.calls.mgr.handle_event(&mut self.tx, now, ev) else { return };
        match ev {
            Event::NewRequest { key, request, peer } => self.on_request(now, key, request, peer),
            Event::Cancel { key, request, cancels, .. } => {
                // CANCELs of calls we serve were taken by the call manager;
                // this one matched none. If it matched an INVITE transaction
                // we answered at once (404, 407...), it is simply confirmed.
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

    fn on_request(&mut self, now: Instant, key: TxKey, req: Message, peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Ack);
        let to_us = match req.request_uri() {
            Some(Ok(u)) => self.identity.is_local(&u),
            _ => false,
        };
        if method == Method::Invite {
            self.invite(now, key, req, peer);
            return;
        }
        if method == Method::Register {
            match self.registrar.handle(now, wall(), &req, &peer) {
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

    /// A DNS lookup finished: dial the leg that waited for it.
    fn on_resolved(
        &mut self,
        r: Resolve,
        targets: Vec<(sip_message::Transport, std::net::SocketAddr)>,
    ) {
        let now = Instant::now();
        self.calls.resolved(&mut self.tx, now, wall(), &self.routes, r, targets);
        self.pump(now);
    }

    fn on_timer(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.calls.handle_timeout(&mut self.tx, now, wall(), &self.routes);
        self.pump(now);
    }

    /// The earliest deadline of the transaction layer and the calls.
    fn next_deadline(&self) -> Option<Instant> {
        match (self.tx.poll_timeout(), self.calls.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Who is calling: a carrier by source address, else an extension that
    /// passes digest authentication (407 challenge). `Err` is the response.
    fn identify(
        &mut self,
        now: Instant,
        req: &Message,
        peer: &Peer,
    ) -> Result<(Caller, String), Message> {
        if let Some(c) = self.routes.carrier_for_source(peer.remote.ip()) {
            return Ok((Caller::Carrier { name: c.name.clone() }, c.inbound_domain.clone()));
        }
        let accounts = self.registrar.accounts();
        let from = req
            .from_header()
            .map_err(|_| local::response(req, 400, &self.server_header).build())?;
        let from_user =
            from.uri.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
        let from_host = String::from_utf8_lossy(from.uri.host).into_owned();
        let Some(domain) = accounts.domain_for_host(&from_host) else {
            return Err(local::response(req, 403, &self.server_header).build());
        };
        let realm = domain.name.clone();
        let outcome = self.registrar.digest().verify_request(
            now,
            req,
            HeaderName::ProxyAuthorization,
            &realm,
            |user, alg| {
                accounts
                    .extension(user, &realm)
                    .map(|e| match alg {
                        Algorithm::Md5 => e.ha1_md5.as_str(),
                        Algorithm::Sha256 => e.ha1_sha256.as_str(),
                    })
                    .filter(|h| !h.is_empty())
            },
        );
        let challenge = |stale: bool, core: &Core| {
            let mut b = local::response(req, 407, &core.server_header);
            for ch in core.registrar.digest().challenges(now, &realm, stale) {
                b = b.header(HeaderName::ProxyAuthenticate, bytes::Bytes::from(ch));
            }
            b.build()
        };
        match outcome {
            Outcome::Authenticated { username, .. } if username == from_user => Ok((
                Caller::Extension { aor: format!("{username}@{realm}"), domain: realm.clone() },
                realm,
            )),
            Outcome::Authenticated { .. } => {
                Err(local::response(req, 403, &self.server_header).build())
            }
            Outcome::Missing => Err(challenge(false, self)),
            Outcome::Stale => Err(challenge(true, self)),
            Outcome::Rejected => Err(local::response(req, 403, &self.server_header).build()),
            Outcome::Malformed(_) => Err(local::response(req, 400, &self.server_header).build()),
        }
    }

    /// A new INVITE outside any dialog: identify, route, fork.
    fn invite(&mut self, now: Instant, key: TxKey, req: Message, peer: Peer) {
        if req.max_forwards().ok().flatten() == Some(0) {
            let resp = local::response(&req, 483, &self.server_header).build();
            self.respond(now, key, resp);
            return;
        }
        let (caller, domain) = match self.identify(now, &req, &peer) {
            Ok(c) => c,
            Err(resp) => {
                self.respond(now, key, resp);
                return;
            }
        };
        let user = match req.request_uri() {
            Some(Ok(u)) => match u.scheme {
                sip_message::Scheme::Tel => u.phone_digits().unwrap_or_default(),
                _ => u.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default(),
            },
            _ => String::new(),
        };
        let accounts = self.registrar.accounts();
        let decision = self.routes.route(&caller, &user, |n, d| accounts.extension(n, d).is_some());
        let (group, dest) = match decision {
            Decision::Extension { aor } => (
                GroupDef::new(
                    Uuid::new_v4(),
                    RingMethod::RingAll,
                    vec![Destination::new(Address::new(AddressType::Endpoint, aor.clone()))],
                ),
                Address::new(AddressType::Endpoint, aor),
            ),
            Decision::Group(g) => (
                g.def(None),
                Address::new(AddressType::Groupcall, format!("{}@{}", g.number, g.domain)),
            ),
            Decision::Tel { number, .. } => (
                GroupDef::new(
                    Uuid::new_v4(),
                    RingMethod::RingAll,
                    vec![Destination::new(Address::new(AddressType::Tel, number.clone()))],
                ),
                Address::new(AddressType::Tel, number),
            ),
            Decision::NotFound | Decision::AuthRequired => {
                let resp = local::response(&req, 404, &self.server_header).build();
                self.respond(now, key, resp);
                return;
            }
            Decision::Forbidden => {
                let resp = local::response(&req, 403, &self.server_header).build();
                self.respond(now, key, resp);
                return;
            }
        };
        let customer_id = accounts.domain_for_host(&domain).map_or(NIL, |d| d.customer_id);
        let from = req.from_header().ok();
        let display =
            from.and_then(|f| f.display_name()).map(|d| String::from_utf8_lossy(d).into_owned());
        let from_user = from
            .and_then(|f| f.uri.user)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        let source = match &caller {
            Caller::Extension { aor, .. } => {
                let mut a = Address::new(AddressType::Endpoint, aor.clone());
                a.name = display.clone().unwrap_or_default();
                a
            }
            _ => Address::new(AddressType::Tel, from_user.clone()),
        };
        let host = peer.local;
        let from_hdr = match &display {
            Some(d) => format!("\"{}\" <sip:{from_user}@{host}>", d.replace('"', "")),
            None => format!("<sip:{from_user}@{host}>"),
        };
        let wall_now = wall();
        let location = self.registrar.location().clone();
        let dir =
            Dir { location: &location, routes: &self.routes, domain: &domain, wall: wall_now };
        let new = NewCall { customer_id, source, destination: dest, group, from: from_hdr };
        let req_for_reject = req.clone();
        if let Err(code) =
            self.calls.start(&mut self.tx, now, wall_now, key, req, peer, new, &dir, &self.routes)
        {
            let resp = local::response(&req_for_reject, code, &self.server_header).build();
            self.respond(now, key, resp);
        }
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
    let routes = cfg.route_table().map_err(|e| format!("{}.{}: {}", e.table, e.key, e.reason))?;
    let resolver = SipResolver::new(
        &cfg.dns.servers,
        Duration::from_millis(cfg.dns.timeout_ms.unwrap_or(2000)),
        !cfg.sip.tcp.is_empty(),
    )?;
    let (resolved_tx, mut resolved_rx) = mpsc::unbounded_channel();
    let (carrier_tx, mut carrier_rx) = mpsc::unbounded_channel::<(String, std::net::SocketAddr)>();
    // Carriers given by DNS name: resolved (RFC 3263) now and every 5
    // minutes, off the SIP path; the first target found is used.
    let carrier_resolver = resolver.clone();
    let resolve_carriers = move |routes: &RouteTable| {
        for (name, host, port, transport) in routes.carriers_to_resolve() {
            let resolver = carrier_resolver.clone();
            let done = carrier_tx.clone();
            tokio::spawn(async move {
                match resolver.targets(&host, port, Some(transport)).await.first() {
                    Some((_, addr)) => {
                        let _ = done.send((name, *addr));
                    }
                    None => warn!(carrier = %name, %host, "carrier host name did not resolve"),
                }
            });
        }
    };
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
        calls: Calls::new(
            b2bua::CallManager::new(
                cfg.b2bua(),
                addrs
                    .iter()
                    .map(|(t, a)| b2bua::LocalContact { transport: *t, addr: *a })
                    .collect(),
            ),
            cfg.fork(),
            db.clone(),
            addrs.clone(),
        ),
        routes,
        resolver,
        resolved: resolved_tx,
    };
    let keepalive_every = Duration::from_secs(cfg.registrar.keepalive_interval_secs.max(1));
    let mut keepalive = tokio::time::interval(keepalive_every);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_on = cfg.registrar.keepalive_interval_secs > 0;
    let mut carrier_dns = tokio::time::interval(Duration::from_secs(300));
    carrier_dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats = tokio::time::interval(Duration::from_secs(10));
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(version = env!("CARGO_PKG_VERSION"), "forkswitch ready");
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(inb) = in_rx.recv() => core.on_inbound(inb),
            Some(f) = fail_rx.recv() => debug!(peer = %f.peer, reason = %f.reason, "send failed"),
            Some((r, targets)) = resolved_rx.recv() => core.on_resolved(r, targets),
            _ = carrier_dns.tick() => resolve_carriers(&core.routes),
            Some((name, addr)) = carrier_rx.recv() => {
                debug!(carrier = %name, %addr, "carrier resolved");
                core.routes.set_carrier_address(&name, addr);
            }
            _ = until(core.next_deadline()) => core.on_timer(Instant::now()),
            _ = keepalive.tick(), if keepalive_on => core.keepalive(),
            _ = stats.tick() => {
                let t = core.transport.stats();
                info!(
                    calls = core.calls.len(),
                    b2bua_calls = core.calls.mgr.len(),
                    transactions = core.tx.len(),
                    bindings = core.registrar.location().len(),
                    received = t.received.load(std::sync::atomic::Ordering::Relaxed),
                    overload_drops = t.overload_drops.load(std::sync::atomic::Ordering::Relaxed),
                    "stats"
                );
            }
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
    while !core.tx.is_empty() || core.calls.len() > 0 {
        let next = core.next_deadline().map_or(grace_end, |d| d.min(grace_end));
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
