//! The shell around the switch core: the only place with sockets, a
//! clock, a resolver, a database and signals. It turns what happens into
//! [`Input`]s for the [`Switch`], and does what the switch's outputs say.
//! The switch holds all SIP logic; this file only moves data.
//!
//! The switch runs on the thread that calls [`run`], in one loop
//! ([`SwitchLoop`]): it reads UDP in batches straight into the switch,
//! writes what the switch sends in batches after each, and waits in one
//! `poll(2)` for its sockets, its next deadline and a doorbell that the
//! tokio runtime's tasks ring (stream connections, DNS answers, rtpengine
//! ng datagrams, API requests, the stop signal reach it through channels).
//! Every message
//! received passes [`Shell::receive`], every message sent
//! [`Shell::transmit`]: the two places to tap SIP traffic.

use crate::config::Config;
use crate::dns::SipResolver;
use api::{PortRequest, Snapshot, Webhooks};
use records::ExtensionRecord;
use records::Timestamp;
use registrar::SecurityEvent;
use sip_message::Transport;
use sip_transport::{Inbound, Interest, Notice, Outbox, Poller, SipTransport, UdpReceiver};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};
use store::Store;
use switch::{CommandId, CommandOutcome, Datagram, Event, Input, Now, Output, Query};
use switch::{Persist, QueryId, Switch, SwitchState, Target, Token, Transmit};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Depth of the stream transports' message queue to the switch (their
/// readers wait while it is full).
const STREAM_QUEUE: usize = 65_536;

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
fn expire_records(keep_days: u32, db: &dyn Store) {
    let days = i64::from(keep_days);
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

/// The switch and the I/O its outputs go to.
struct Shell {
    sw: Switch,
    /// The switch's next deadline.
    deadline: Instant,
    transport: SipTransport,
    /// Every message the switch sends passes [`Shell::transmit`] into it.
    outbox: Outbox,
    db: Arc<dyn Store>,
    resolver: SipResolver,
    resolved: mpsc::UnboundedSender<(QueryId, Vec<Target>)>,
    pending: Pending,
    webhooks: Webhooks,
    capture: crate::capture::Capture,
    events: api::LiveEvents,
    /// The one UDP socket to the rtpengines' ng ports (media on).
    ng: Option<Arc<tokio::net::UdpSocket>>,
}

impl Shell {
    /// Every message received, over any transport, passes here: the load
    /// it measured (for admission control), then the switch. `behind`:
    /// messages read with it and waiting.
    fn receive(&mut self, inb: Inbound, behind: usize) {
        let now = now();
        let queue_delay = now.at.saturating_duration_since(inb.received_at);
        self.sw.set_load(switch::Load { queue_delay, queue_depth: behind });
        self.capture.received(&inb);
        let input = Input::Datagram(Datagram { peer: inb.peer, bytes: inb.bytes });
        self.sw.handle_input(now, input);
        self.drain();
    }

    /// Every message the switch sends, over any transport, passes here,
    /// serialized once: the capture tap sees the bytes that go. Datagrams
    /// wait in the outbox for the loop's next flush. A request too large
    /// for UDP goes through [`Outbox::send`], which may move it to TCP
    /// (RFC 3261 18.1.1) and serializes it again.
    fn transmit(&mut self, t: Transmit) {
        let bytes = t.message.to_bytes();
        self.capture.sent(&t.peer, &bytes);
        let big_udp_request = t.message.is_request()
            && t.peer.transport == Transport::Udp
            && bytes.len() > sip_transport::UDP_MTU_LIMIT;
        if big_udp_request {
            self.outbox.send(&t.peer, &t.message, t.token.0);
        } else {
            self.outbox.send_bytes(&t.peer, bytes, t.token.0);
        }
    }

    /// Hands `input` to the switch and does what it says.
    fn feed(&mut self, input: Input) {
        self.sw.handle_input(now(), input);
        self.drain();
    }

    /// Hands a request from the API to the switch (a command) or answers it
    /// (a snapshot).
    fn request(&mut self, r: PortRequest) {
        match r {
            PortRequest::Command { command, reply } => {
                self.pending.next += 1;
                let id = self.pending.next;
                self.pending.replies.insert(id, reply);
                self.feed(Input::Command { id: CommandId(id), command });
            }
            PortRequest::Snapshot { reply } => {
                let sw = &self.sw;
                let _ = reply.send(Snapshot { counters: sw.counters(), stats: sw.stats() });
            }
        }
    }

    /// Does what the switch asks until it names its next deadline.
    fn drain(&mut self) {
        loop {
            match self.sw.poll_output() {
                Output::Transmit(t) => self.transmit(t),
                Output::Resolve(q) => self.resolve(q),
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
                Output::Event(Event::GroupcallMissed(m)) => {
                    debug!(groupcall = %m.groupcall_id, members = m.members.len(), "groupcall missed");
                    self.webhooks.publish_missed(&m);
                }
                Output::Media(t) => {
                    // A datagram that cannot go now is a loss: the ng
                    // client sends it again (same cookie) or fails over.
                    if let Some(ng) = &self.ng {
                        if let Err(e) = ng.try_send_to(&t.bytes, t.to) {
                            debug!(to = %t.to, error = %e, "ng datagram not sent");
                        }
                    }
                }
                Output::Event(e) => log_event(&e),
                Output::Timeout(at) => {
                    self.capture.flush();
                    return self.deadline = at;
                }
            }
        }
    }

    /// Resolves a name on the I/O runtime; the answer comes back as an
    /// input.
    fn resolve(&self, q: Query) {
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
}

/// What the switch's thread waits for besides its UDP sockets: channels
/// from the I/O runtime, polled with the poller's doorbell as their waker.
struct Channels {
    /// Messages framed out of stream connections.
    stream: mpsc::Receiver<Inbound>,
    notices: mpsc::UnboundedReceiver<Notice>,
    resolved: mpsc::UnboundedReceiver<(QueryId, Vec<Target>)>,
    /// Datagrams from the rtpengines' ng ports.
    ng: mpsc::UnboundedReceiver<(std::net::SocketAddr, bytes::Bytes)>,
    requests: mpsc::Receiver<PortRequest>,
    /// What other cluster nodes changed (never yields without a cluster).
    cluster: mpsc::UnboundedReceiver<switch::ClusterChange>,
    /// The stop signal's name.
    stop: oneshot::Receiver<&'static str>,
}

/// Whether the switch takes new messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopped receiving: live transactions and calls finish.
    Stopping,
}

/// Inputs taken from one channel per turn of the loop, so that the
/// others and the sockets get theirs.
const CHANNEL_TURN: usize = 64;
/// How often the stats line is logged.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// The switch's thread: the shell, its inputs, one `poll(2)`.
struct SwitchLoop {
    shell: Shell,
    udp: UdpReceiver,
    poller: Poller,
    waker: Waker,
    channels: Channels,
    /// The socket a flush waits to write to.
    write_wait: Option<RawFd>,
    /// Descriptors the last wait found ready.
    ready: Vec<(RawFd, Interest)>,
    next_stats: Instant,
    /// Stats lines until the next expiry of old records.
    retention_in: u32,
    /// `[database] keep_days`.
    keep_days: u32,
    phase: Phase,
}

impl SwitchLoop {
    /// One turn: channels, timers, the datagrams sent, one wait, the
    /// datagrams received. Returns the stop signal once it came.
    fn turn(&mut self) -> Result<Option<&'static str>, String> {
        let more = self.poll_channels();
        let stop = match self.phase {
            Phase::Running => self.stop_signal(),
            Phase::Stopping => None,
        };
        let now = Instant::now();
        if self.shell.deadline <= now {
            self.shell.feed(Input::Timeout);
        }
        if self.next_stats <= now {
            self.next_stats = now + STATS_EVERY;
            self.log_stats();
            self.expire_records();
        }
        self.flush();
        if stop.is_some() {
            return Ok(stop);
        }
        let until = self.shell.deadline.min(self.next_stats);
        let timeout = if more { Duration::ZERO } else { until.saturating_duration_since(now) };
        self.poller.wait(Some(timeout)).map_err(|e| format!("poll: {e}"))?;
        self.ready.clear();
        self.ready.extend(self.poller.ready());
        for i in 0..self.ready.len() {
            let (fd, ready) = self.ready[i];
            if ready.read && self.phase == Phase::Running {
                let shell = &mut self.shell;
                self.udp.recv(fd, |inb, behind| shell.receive(inb, behind));
            }
        }
        Ok(None)
    }

    /// Writes the datagrams sent; when a socket's buffer is full, waits
    /// for it to be writable too.
    fn flush(&mut self) {
        let blocked = self.shell.outbox.flush();
        if blocked == self.write_wait {
            return;
        }
        let read = self.phase == Phase::Running;
        if let Some(fd) = self.write_wait {
            self.poller.set(fd, Interest { read, write: false });
        }
        if let Some(fd) = blocked {
            self.poller.set(fd, Interest { read, write: true });
        }
        self.write_wait = blocked;
    }

    /// Takes what the channels hold (up to [`CHANNEL_TURN`] each). `true`
    /// when one has more.
    fn poll_channels(&mut self) -> bool {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let running = self.phase == Phase::Running;
        let c = &mut self.channels;
        let shell = &mut self.shell;
        let mut more = false;
        for i in 0..CHANNEL_TURN {
            let Some(inb) = running.then(|| c.stream.poll_recv(&mut cx)).and_then(ready) else {
                break;
            };
            shell.receive(inb, c.stream.len());
            more |= i + 1 == CHANNEL_TURN;
        }
        for i in 0..CHANNEL_TURN {
            let Some(n) = ready(c.notices.poll_recv(&mut cx)) else { break };
            shell.feed(notice(n));
            more |= i + 1 == CHANNEL_TURN;
        }
        for i in 0..CHANNEL_TURN {
            let Some((query, targets)) = ready(c.resolved.poll_recv(&mut cx)) else { break };
            shell.feed(Input::Resolved { query, targets });
            more |= i + 1 == CHANNEL_TURN;
        }
        for i in 0..CHANNEL_TURN {
            let Some((from, bytes)) = ready(c.ng.poll_recv(&mut cx)) else { break };
            shell.feed(Input::MediaDatagram { from, bytes });
            more |= i + 1 == CHANNEL_TURN;
        }
        for i in 0..CHANNEL_TURN {
            let Some(change) = ready(c.cluster.poll_recv(&mut cx)) else { break };
            shell.feed(Input::Cluster(change));
            more |= i + 1 == CHANNEL_TURN;
        }
        for i in 0..CHANNEL_TURN {
            let Some(r) = running.then(|| c.requests.poll_recv(&mut cx)).and_then(ready) else {
                break;
            };
            shell.request(r);
            more |= i + 1 == CHANNEL_TURN;
        }
        more
    }

    /// The stop signal, once it came.
    fn stop_signal(&mut self) -> Option<&'static str> {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut self.channels.stop).poll(&mut cx) {
            Poll::Ready(sig) => Some(sig.unwrap_or("stop")),
            Poll::Pending => None,
        }
    }

    /// Stops reading: stream connections close, UDP sockets are no longer
    /// read (sends go on).
    fn stop_receiving(&mut self) {
        self.phase = Phase::Stopping;
        self.shell.transport.stop_receiving();
        for fd in self.udp.fds() {
            let write = self.write_wait == Some(fd);
            self.poller.set(fd, Interest { read: false, write });
        }
        // What the streams delivered before the stop is still handled.
        while let Ok(inb) = self.channels.stream.try_recv() {
            self.shell.receive(inb, 0);
        }
    }

    /// Every [`RETENTION_TICKS`] stats lines, asks the store to delete
    /// records past `keep_days`.
    fn expire_records(&mut self) {
        if self.retention_in == 0 {
            expire_records(self.keep_days, self.shell.db.as_ref());
            self.retention_in = RETENTION_TICKS;
        }
        self.retention_in -= 1;
    }

    fn log_stats(&self) {
        let s = self.shell.sw.stats();
        let received = self.shell.transport.stats().received.load(Ordering::Relaxed);
        info!(
            calls = s.calls,
            b2bua_calls = s.dialog_calls,
            transactions = s.transactions,
            bindings = s.bindings,
            timers = s.timers,
            received,
            "stats"
        );
    }
}

/// The value of a ready channel poll (`None`: empty or closed).
fn ready<T>(p: Poll<Option<T>>) -> Option<T> {
    match p {
        Poll::Ready(v) => v,
        Poll::Pending => None,
    }
}

/// Runs the server on this thread until a stop signal; returns when it has
/// shut down. This thread becomes the switch's: it owns the core and the
/// UDP sockets (read and written in batches, no task between them) and
/// waits in one `poll(2)`; `io` runs the rest (stream connections, DNS,
/// signals) and reaches the switch through channels.
pub fn run(cfg: Config, io: &tokio::runtime::Runtime) -> Result<(), String> {
    let _io = io.enter();
    let db = open_store(&cfg)?;
    let joined = crate::cluster::join(&cfg)?;
    let start = now().wall;
    // Records a previous run left live (a crash, kill -9) are closed now
    // (in a cluster, only this node's).
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
    let (in_tx, stream) = mpsc::channel::<Inbound>(STREAM_QUEUE);
    let (note_tx, notices) = mpsc::unbounded_channel::<Notice>();
    let transport = io
        .block_on(SipTransport::bind(cfg.transport(), in_tx, note_tx))
        .map_err(|e| format!("cannot bind SIP listeners: {e}"))?;
    let addrs = transport.local_addrs();
    for (t, a) in &addrs {
        info!(transport = %t, addr = %a, "listening");
    }
    let (resolved_tx, resolved) = mpsc::unbounded_channel();
    let (capture, traces) = crate::capture::Capture::start(&cfg.trace, cfg.hep.as_ref());
    let http = crate::http::start(&cfg, db.clone(), traces)?;
    let (ng_tx, ng_rx) = mpsc::unbounded_channel();
    let ng = io.block_on(open_ng_socket(&cfg, ng_tx))?;
    let (stop_tx, stop) = oneshot::channel();
    let signal = stop_signal();
    io.spawn(async move {
        let _ = stop_tx.send(signal.await);
    });
    let udp = transport.udp_receiver();
    let mut poller = Poller::new().map_err(|e| format!("cannot make the poller: {e}"))?;
    for fd in udp.fds() {
        poller.set(fd, Interest { read: true, write: false });
    }
    let mut switch_cfg = cfg.switch(addrs);
    switch_cfg.cluster = joined.as_ref().map(|j| j.settings.clone());
    let loaded = records::Provisioning {
        customers: state.customers.clone(),
        domains: state.domains.clone(),
        extensions: state.extensions.clone(),
        ring_groups: state.ring_groups.clone(),
    };
    let sw = Switch::new(switch_cfg, state, rand::random(), now())
        .map_err(|e| format!("{}.{}: {}", e.table, e.key, e.reason))?;
    let (cluster, cluster_rx) = match joined {
        Some(j) => {
            let (thread, rx) = crate::cluster::start(j, loaded)?;
            (Some(thread), rx)
        }
        // No cluster: a receiver that never yields.
        None => (None, mpsc::unbounded_channel().1),
    };
    let mut shell = Shell {
        sw,
        deadline: Instant::now(),
        outbox: transport.outbox(),
        transport,
        db: db.clone(),
        resolver,
        resolved: resolved_tx,
        pending: Pending::default(),
        webhooks: http.webhooks,
        capture,
        events: http.events,
        ng,
    };
    shell.drain();
    let mut lp = SwitchLoop {
        shell,
        udp,
        waker: poller.waker(),
        poller,
        channels: Channels {
            stream,
            notices,
            resolved,
            ng: ng_rx,
            requests: http.requests,
            cluster: cluster_rx,
            stop,
        },
        write_wait: None,
        ready: Vec::new(),
        next_stats: Instant::now() + STATS_EVERY,
        retention_in: 0,
        keep_days: cfg.database.keep_days,
        phase: Phase::Running,
    };
    info!(version = env!("CARGO_PKG_VERSION"), "forkswitch ready");
    let sig = loop {
        if let Some(sig) = lp.turn()? {
            break sig;
        }
    };
    info!(signal = sig, "stopping: no new requests");
    lp.stop_receiving();
    // Let live transactions and calls run their course, for at most the
    // grace time.
    let grace_end = Instant::now() + Duration::from_secs(cfg.shutdown.grace_secs);
    while !lp.shell.sw.can_stop() {
        if Instant::now() >= grace_end {
            let live = lp.shell.sw.stats().transactions;
            warn!(live_transactions = live, "grace time over with work left");
            break;
        }
        lp.shell.deadline = lp.shell.deadline.min(grace_end);
        lp.turn()?;
    }
    lp.flush();
    http.server.stop();
    drop(cluster);
    if let Err(e) = db.flush() {
        warn!(error = %e, "store flush at shutdown failed");
    }
    info!("stopped");
    Ok(())
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
        Event::Media(ev) => log_media(ev),
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

/// Media anchoring: an rtpengine going down or coming back is a WARN line,
/// a call going on without the media relay too; requests are debug.
fn log_media(ev: &switch::MediaEvent) {
    match ev {
        switch::MediaEvent::Instance { addr, up: false } => {
            warn!(target: "media", rtpengine = %addr, "rtpengine stopped answering: marked down")
        }
        switch::MediaEvent::Instance { addr, up: true } => {
            warn!(target: "media", rtpengine = %addr, "rtpengine answers again: marked up")
        }
        switch::MediaEvent::Failed { command, call_id, reason } => {
            warn!(target: "media", command, call_id = %call_id, reason = %reason, "rtpengine request failed")
        }
        switch::MediaEvent::Request { command, result, latency } => {
            debug!(target: "media", command, result, latency_ms = latency.as_secs_f64() * 1e3, "ng request done")
        }
    }
}

/// The ng socket when `[media] mode = "rtpengine"`: bound on loopback or
/// any address (the family of the first rtpengine), and a task that reads
/// it into `tx`.
async fn open_ng_socket(
    cfg: &Config,
    tx: mpsc::UnboundedSender<(std::net::SocketAddr, bytes::Bytes)>,
) -> Result<Option<Arc<tokio::net::UdpSocket>>, String> {
    let Some(first) = cfg
        .media
        .rtpengine
        .first()
        .filter(|_| !matches!(cfg.media_settings(), media_anchor::MediaSettings::Off))
    else {
        return Ok(None);
    };
    let addr = media_anchor::settings::parse_instance(first)?.addr;
    let bind: std::net::SocketAddr = match addr {
        std::net::SocketAddr::V4(a) if a.ip().is_loopback() => ([127, 0, 0, 1], 0).into(),
        std::net::SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot bind the ng socket {bind}: {e}"))?;
    let socket = Arc::new(socket);
    let reader = socket.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; media_anchor::codec::MAX_DATAGRAM];
        loop {
            match reader.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if tx.send((from, bytes::Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        return;
                    }
                }
                // ICMP port unreachable from a dead rtpengine: a loss.
                Err(e) => debug!(error = %e, "ng socket"),
            }
        }
    });
    Ok(Some(socket))
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

fn notice(n: Notice) -> Input {
    match n {
        Notice::SendFailed(f) => {
            debug!(peer = %f.peer, reason = %f.reason, "send failed");
            Input::SendFailed { token: Token(f.token) }
        }
        Notice::Closed(conn) => Input::ConnectionClosed { conn },
    }
}
