//! The tokio shell around the switch core: the only place with sockets, a
//! clock, a resolver, a database and signals. It turns what happens into
//! [`Input`]s for the [`Switch`], and does what the switch's outputs say.
//! The switch holds all SIP logic; this file only moves data.

use crate::config::Config;
use crate::dns::SipResolver;
use api::{PortRequest, Snapshot, Webhooks};
use records::ExtensionRecord;
use records::Timestamp;
use registrar::SecurityEvent;
use sip_message::Transport;
use sip_transport::{Inbound, Notice, SipTransport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::Store;
use switch::{CommandId, CommandOutcome, Datagram, Event, Input, Now, Output};
use switch::{Persist, QueryId, Switch, SwitchState, Target, Token};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Depth of the transport -> core queue; beyond it UDP input is dropped.
const INBOUND_QUEUE: usize = 65_536;

/// The clock, read here and nowhere else.
fn now() -> Now {
    Now { at: Instant::now(), wall: Timestamp::from_system(SystemTime::now()) }
}

/// Opens the configured store: SQLite or PostgreSQL by `[database] url`
/// (or `path`), or memory when `path = ""`.
fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    let Some(url) = cfg.database.store_url() else {
        return Ok(Arc::new(store::MemoryStore::new()));
    };
    let opts = store::Options {
        max_delay: Duration::from_millis(cfg.database.commit_delay_ms),
        max_pending: cfg.database.max_pending,
        ..store::Options::default()
    };
    store::open(&url, opts)
        .map_err(|e| format!("{}: cannot open the database: {e}", store::display_url(&url)))
}

/// Every this many stats ticks (10 s), the writer is asked to delete
/// records past `[database] keep_days`.
const RETENTION_TICKS: u32 = 6;

/// Asks the store to delete ended records past `keep_days` (0: never).
fn expire_records(cfg: &Config, db: &dyn Store) {
    let days = i64::from(cfg.database.keep_days);
    if days > 0 {
        let cutoff = now().wall.micros() - days * 86_400_000_000;
        db.expire_records(Timestamp::from_micros(cutoff));
    }
}

/// Writes what the config file defines to the store (it wins over what a
/// previous run stored, and shows in the API as read-only).
fn store_config(cfg: &Config, db: &dyn Store, wall: Timestamp) -> Result<(), String> {
    let (customers, domains, extensions) = cfg.accounts();
    for c in &customers {
        db.upsert_customer(c);
    }
    for d in &domains {
        db.upsert_domain(d);
    }
    let ext_records: Vec<ExtensionRecord> = extensions
        .iter()
        .map(|e| ExtensionRecord::from_config(e.clone(), cfg.owner(&e.domain), wall))
        .collect();
    db.replace_config_extensions(&ext_records);
    db.replace_config_ringgroups(&cfg.ring_groups(wall));
    let hooks: Vec<records::Webhook> = cfg
        .customers
        .iter()
        .filter_map(|c| {
            Some(records::Webhook {
                customer_id: c.id,
                url: c.webhook_url.clone()?,
                secret: c.webhook_secret.clone()?,
                origin: records::Origin::Config,
                tm_create: wall,
                tm_update: wall,
            })
        })
        .collect();
    db.replace_config_webhooks(&hooks);
    db.flush().map_err(|e| format!("cannot write the config's records: {e}"))
}

/// What the switch starts with: accounts and ring groups (the config
/// file's, just stored, and the API's), live bindings, carriers, routes.
fn load_state(cfg: &Config, db: &dyn Store, wall: Timestamp) -> Result<SwitchState, String> {
    store_config(cfg, db, wall)?;
    Ok(SwitchState {
        customers: db.customers().map_err(|e| e.to_string())?,
        domains: db.domains().map_err(|e| e.to_string())?,
        extensions: db.extensions().map_err(|e| e.to_string())?,
        bindings: db.load_bindings(wall).map_err(|e| format!("cannot load bindings: {e}"))?,
        carriers: cfg.carriers.clone(),
        routes: cfg.routes.clone(),
        ring_groups: db.ringgroups().map_err(|e| format!("cannot read ring groups: {e}"))?,
        hunt: db.hunt_memories().map_err(|e| format!("cannot load hunt memories: {e}"))?,
    })
}

/// Stores what the switch asks to (in the order it asks), for every
/// backend through the [`Store`] trait.
fn persist(db: &dyn Store, p: &Persist) {
    match p {
        Persist::Groupcall(g) => db.upsert_groupcall(g),
        Persist::Call(c) => db.upsert_call(c),
        Persist::Binding(b) => db.upsert_binding(b),
        Persist::HuntMemory(m) => db.upsert_hunt_memory(m),
        Persist::BindingRemoved { aor, contact } => db.remove_binding(aor, contact),
        Persist::Extension(r) => db.upsert_extension_record(r),
        Persist::ExtensionRemoved { name, domain } => db.delete_extension(name, domain),
        Persist::RingGroup(g) => db.upsert_ringgroup(g),
        Persist::RingGroupRemoved { id } => db.delete_ringgroup(*id),
    }
}

/// Commands waiting for their outcome, by id.
#[derive(Default)]
struct Pending {
    next: u64,
    replies: HashMap<u64, oneshot::Sender<CommandOutcome>>,
}

/// The I/O the switch's outputs go to.
struct Shell {
    transport: SipTransport,
    db: Arc<dyn Store>,
    resolver: SipResolver,
    resolved: mpsc::UnboundedSender<(QueryId, Vec<Target>)>,
    pending: Pending,
    webhooks: Webhooks,
    capture: crate::capture::Capture,
    events: api::LiveEvents,
}

impl Shell {
    /// Hands a request from the API to the switch (a command) or answers it
    /// (a snapshot).
    fn request(&mut self, sw: &mut Switch, r: PortRequest) {
        match r {
            PortRequest::Command { command, reply } => {
                self.pending.next += 1;
                let id = self.pending.next;
                self.pending.replies.insert(id, reply);
                sw.handle_input(now(), Input::Command { id: CommandId(id), command });
            }
            PortRequest::Snapshot { reply } => {
                let _ = reply.send(Snapshot { counters: sw.counters(), stats: sw.stats() });
            }
        }
    }

    /// Sends a message, serialized once: the capture tap sees the bytes
    /// that go. A request too large for UDP goes through `send_request`,
    /// which may move it to TCP (RFC 3261 18.1.1) and serializes it again.
    fn transmit(&mut self, t: switch::Transmit) {
        let bytes = t.message.to_bytes();
        self.capture.sent(&t.peer, &bytes);
        let big_udp_request = t.message.is_request()
            && t.peer.transport == Transport::Udp
            && bytes.len() > sip_transport::UDP_MTU_LIMIT;
        if big_udp_request {
            self.transport.send_request(&t.peer, &t.message, t.token.0);
        } else {
            self.transport.send_bytes(&t.peer, bytes, t.token.0);
        }
    }

    /// Does what the switch asks until it names its next deadline.
    fn drain(&mut self, sw: &mut Switch) -> Instant {
        loop {
            match sw.poll_output() {
                Output::Transmit(t) => self.transmit(t),
                Output::Resolve(q) => {
                    let resolver = self.resolver.clone();
                    let done = self.resolved.clone();
                    let transport = self.transport.clone();
                    tokio::spawn(async move {
                        let targets = resolver.targets(&q.host, q.port, q.transport).await;
                        let targets = targets
                            .into_iter()
                            .inspect(|(t, address)| {
                                // TLS verifies the certificate against the name.
                                if *t == Transport::Tls {
                                    transport.set_tls_name(*address, &q.host);
                                }
                            })
                            .map(|(transport, address)| Target { transport, address })
                            .collect();
                        let _ = done.send((q.id, targets));
                    });
                }
                Output::Persist(p) => {
                    self.capture.persisted(&p);
                    persist(self.db.as_ref(), &p);
                    self.webhooks.publish(&p);
                    self.events.publish(&p);
                }
                Output::Event(Event::CommandDone { id, outcome }) => {
                    if let Some(reply) = self.pending.replies.remove(&id.0) {
                        let _ = reply.send(outcome);
                    }
                }
                Output::Event(e) => log_event(&e),
                Output::Timeout(at) => {
                    self.capture.flush();
                    return at;
                }
            }
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::Dropped { peer, reason } => debug!(%peer, %reason, "dropped"),
        Event::CallStarted { call, groupcall } => debug!(%call, %groupcall, "call started"),
        Event::CallEnded { call } => debug!(%call, "call ended"),
        Event::CarrierResolved { name, address } => {
            debug!(carrier = %name, addr = %address, "carrier resolved")
        }
        Event::CarrierUnresolved { name } => {
            warn!(carrier = %name, "carrier host name did not resolve")
        }
        Event::BindingsUnreachable { count } => {
            info!(count, "connection closed: its bindings are unreachable")
        }
        Event::Security(ev) => log_security(ev),
        Event::NodeDown { node, bindings } => {
            warn!(%node, bindings, "cluster: node down: its bindings unreachable, legs through it failed")
        }
        Event::ClusterBindings { held } => info!(held, "cluster: other nodes' bindings"),
        Event::Overload { began: true, queue_delay, queue_depth, .. } => {
            let delay_ms = queue_delay.as_millis() as u64;
            warn!(target: "security", event = "overload", src = "", user = "", method = "INVITE",
                  delay_ms, queue = queue_depth, "security event")
        }
        Event::Overload { began: false, queue_delay, shed, .. } => {
            let delay_ms = queue_delay.as_millis() as u64;
            info!(delay_ms, shed, "overload over: new calls admitted again")
        }
        Event::Oversize(n) => {
            let src = n.peer.remote;
            let method = n.method.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let what = n.what.as_str();
            match n.refused {
                Some(status) => {
                    warn!(target: "limits", %src, %method, what, status, "refused: beyond the copy limits")
                }
                None => {
                    info!(target: "limits", %src, %method, what, "trimmed: beyond the copy limits")
                }
            }
        }
        other => debug!(event = ?other, "event"),
    }
}

/// A security event as a WARN line of target `security`, the same fields
/// in every event (`event src user method`, plus `secs` of a ban): what
/// `config/fail2ban/filter.d/forkswitch.conf` matches, in the human and
/// the JSON log format. `user` arrives sanitised (no spaces, quotes or
/// control characters: [`registrar::security::loggable_user`]).
fn log_security(ev: &SecurityEvent) {
    let event = ev.name();
    match ev {
        SecurityEvent::AuthFailed { src, user, method } => {
            warn!(target: "security", event = %event, %src, %user, %method, "security event")
        }
        SecurityEvent::Banned { src, user, method, secs } => {
            warn!(target: "security", event = %event, %src, %user, %method, secs, "security event")
        }
        SecurityEvent::RateLimited { src, method, secs } => {
            warn!(target: "security", event = %event, %src, user = %"", %method, secs, "security event")
        }
        SecurityEvent::Unbanned { src } => {
            warn!(target: "security", event = %event, %src, user = %"", method = %"", "security event")
        }
    }
}

/// The stop signals, registered now: a SIGTERM that arrives right after
/// "forkswitch ready" must stop the server cleanly, not kill it with the
/// default action (seen under load: the handler was installed only when the
/// loop first polled it). The future resolves to the signal's name.
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match signals {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

fn datagram(inb: Inbound) -> Input {
    Input::Datagram(Datagram { peer: inb.peer, bytes: inb.bytes })
}

fn notice(n: Notice) -> Input {
    match n {
        Notice::SendFailed(f) => {
            debug!(peer = %f.peer, reason = %f.reason, "send failed");
            Input::SendFailed { token: Token(f.token) }
        }
        Notice::Closed(conn) => Input::ConnectionClosed { conn },
    }
}

/// Runs the server until a stop signal; returns when it has shut down.
pub async fn run(cfg: Config) -> Result<(), String> {
    let db = open_store(&cfg)?;
    let joined = crate::cluster::join(&cfg)?;
    let start = now().wall;
    // Records a previous run left live (a crash, kill -9) are closed now.
    let own = cfg.cluster.as_ref().map(|c| c.node_id.as_str());
    let closed =
        db.close_live_records(start, own).map_err(|e| format!("cannot close records: {e}"))?;
    if closed.groupcalls > 0 || closed.calls > 0 {
        warn!(
            groupcalls = closed.groupcalls,
            calls = closed.calls,
            "closed records a previous run left live"
        );
    }
    let state = load_state(&cfg, db.as_ref(), start)?;
    info!(
        bindings = state.bindings.len(),
        extensions = state.extensions.len(),
        domains = state.domains.len(),
        database = %cfg.database.store_url().map_or("memory".into(), |u| store::display_url(&u)),
        "location loaded"
    );
    let resolver = SipResolver::new(
        &cfg.dns.servers,
        Duration::from_millis(cfg.dns.timeout_ms.unwrap_or(2000)),
        !cfg.sip.tcp.is_empty(),
    )?;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<Notice>();
    let transport = SipTransport::bind(cfg.transport(), in_tx, note_tx)
        .await
        .map_err(|e| format!("cannot bind SIP listeners: {e}"))?;
    let addrs = transport.local_addrs();
    for (t, a) in &addrs {
        info!(transport = %t, addr = %a, "listening");
    }
    let (resolved_tx, mut resolved_rx) = mpsc::unbounded_channel();
    let (capture, traces) = crate::capture::Capture::start(&cfg.trace, cfg.hep.as_ref());
    let http = crate::http::start(&cfg, db.clone(), traces)?;
    let mut request_rx = http.requests;
    let mut shell = Shell {
        transport: transport.clone(),
        db: db.clone(),
        resolver,
        resolved: resolved_tx,
        pending: Pending::default(),
        webhooks: http.webhooks,
        capture,
        events: http.events,
    };
    let mut switch_cfg = cfg.switch(addrs);
    switch_cfg.cluster = joined.as_ref().map(|j| j.settings.clone());
    let loaded = records::Provisioning {
        customers: state.customers.clone(),
        domains: state.domains.clone(),
        extensions: state.extensions.clone(),
        ring_groups: state.ring_groups.clone(),
    };
    let mut sw = Switch::new(switch_cfg, state, rand::random(), now())
        .map_err(|e| format!("{}.{}: {}", e.table, e.key, e.reason))?;
    let (cluster, mut cluster_rx) = match joined {
        Some(j) => {
            let (thread, rx) = crate::cluster::start(j, loaded)?;
            (Some(thread), rx)
        }
        // No cluster: a receiver that never yields.
        None => (None, mpsc::unbounded_channel().1),
    };
    let mut deadline = shell.drain(&mut sw);
    let mut stats = tokio::time::interval(Duration::from_secs(10));
    let mut retention_in = 0u32;
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stop_signal();
    info!(version = env!("CARGO_PKG_VERSION"), "forkswitch ready");
    tokio::pin!(stop);
    loop {
        let input = tokio::select! {
            Some(inb) = in_rx.recv() => {
                let load = switch::Load {
                    queue_delay: inb.received_at.elapsed(),
                    queue_depth: in_rx.len(),
                };
                sw.set_load(load);
                shell.capture.received(&inb);
                datagram(inb)
            }
            Some(n) = note_rx.recv() => notice(n),
            Some((query, targets)) = resolved_rx.recv() => Input::Resolved { query, targets },
            Some(change) = cluster_rx.recv() => Input::Cluster(change),
            Some(r) = request_rx.recv() => {
                shell.request(&mut sw, r);
                deadline = shell.drain(&mut sw);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => Input::Timeout,
            _ = stats.tick() => {
                if retention_in == 0 {
                    expire_records(&cfg, db.as_ref());
                    retention_in = RETENTION_TICKS;
                }
                retention_in -= 1;
                let s = sw.stats();
                let t = transport.stats();
                use std::sync::atomic::Ordering::Relaxed;
                info!(calls = s.calls, b2bua_calls = s.dialog_calls, transactions = s.transactions,
                      bindings = s.bindings, timers = s.timers,
                      received = t.received.load(Relaxed), overload_drops = t.overload_drops.load(Relaxed),
                      "stats");
                continue;
            }
            sig = &mut stop => {
                info!(signal = sig, "stopping: no new requests");
                break;
            }
        };
        sw.handle_input(now(), input);
        deadline = shell.drain(&mut sw);
    }
    transport.stop_receiving();
    // Finish what is queued and let live transactions and calls run their
    // course, for at most the grace time.
    let grace_end = Instant::now() + Duration::from_secs(cfg.shutdown.grace_secs);
    while let Ok(inb) = in_rx.try_recv() {
        sw.handle_input(now(), datagram(inb));
        deadline = shell.drain(&mut sw);
    }
    while !sw.can_stop() {
        if Instant::now() >= grace_end {
            warn!(live_transactions = sw.stats().transactions, "grace time over with work left");
            break;
        }
        let input = tokio::select! {
            Some(n) = note_rx.recv() => notice(n),
            Some((query, targets)) = resolved_rx.recv() => Input::Resolved { query, targets },
            _ = tokio::time::sleep_until(deadline.min(grace_end).into()) => Input::Timeout,
        };
        sw.handle_input(now(), input);
        deadline = shell.drain(&mut sw);
    }
    http.server.stop();
    drop(cluster);
    if let Err(e) = db.flush() {
        warn!(error = %e, "store flush at shutdown failed");
    }
    info!("stopped");
    Ok(())
}
