//! # sip-transport: SIP over UDP, TCP, TLS, WS and WSS
//!
//! The only forkswitch crate that touches SIP sockets. It binds UDP, TCP,
//! TLS (RFC 3261 26), WebSocket and secure WebSocket (RFC 7118) listeners
//! (IPv4 and IPv6, made with socket2: SO_REUSEADDR, large buffers, optional
//! SO_REUSEPORT with several UDP sockets), frames what arrives on TCP and
//! TLS streams (one WebSocket message is one SIP message), and hands every
//! message up unparsed as an [`Inbound`] carrying its [`Peer`] and receive
//! time. Streams are served by tokio tasks and their messages come up a
//! channel; UDP is read and written in batches by the thread that owns the
//! switch ([`UdpReceiver`], [`Outbox`], waiting in a [`Poller`]: `udp.rs`,
//! `poll.rs`), with no task in between. Sending goes through an [`Outbox`]
//! (or [`SipTransport`] directly): UDP, or a stream connection per remote
//! address and transport, reused; outbound connections are TCP or TLS
//! ([`TlsSettings`]: certificates verified, SNI from the host name given by
//! [`SipTransport::set_tls_name`]). WebSocket peers (browsers) connect in
//! and are only reached over their own connection. What it learns on the
//! way (a send that failed, a connection that closed) comes up as a
//! [`Notice`], the same for every stream transport.
//!
//! It never interprets a message beyond stream framing, RFC 5626 keep-alive
//! pongs and, for a request too large for UDP, the switch to TCP (RFC 3261
//! 18.1.1): parsing, Via stamping and response routing belong to the switch
//! core.
#![deny(missing_docs)]

mod arrival;
mod poll;
pub mod socket;
mod stream;
mod tls;
mod udp;
pub mod via_stamp;
mod ws;

use bytes::Bytes;
use dashmap::DashMap;
use sip_message::{ConnId, Message, Peer, Transport};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::debug;

pub use poll::{Doorbell, Interest, Poller};
pub use tls::{ClientCerts, PemInput, TlsError, TlsSettings};
pub use udp::{Outbox, UdpReceiver, BATCH};
pub use via_stamp::via_to_tcp;

/// RFC 3261 18.1.1: requests larger than this go over TCP when possible.
pub const UDP_MTU_LIMIT: usize = 1300;

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP addresses to listen on (port 0 picks a free port).
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    pub tcp: Vec<SocketAddr>,
    /// TLS addresses to listen on (need a certificate in `tls_settings`).
    pub tls: Vec<SocketAddr>,
    /// WebSocket addresses to listen on.
    pub ws: Vec<SocketAddr>,
    /// Secure WebSocket addresses to listen on (need a certificate in `tls_settings`).
    pub wss: Vec<SocketAddr>,
    /// Certificates for the TLS and WSS listeners and outbound TLS.
    pub tls_settings: TlsSettings,
    /// UDP sockets per address (SO_REUSEPORT when > 1).
    pub udp_sockets_per_addr: usize,
    /// SO_RCVBUF in bytes.
    pub recv_buffer: usize,
    /// SO_SNDBUF in bytes.
    pub send_buffer: usize,
    /// Largest message accepted on a stream (datagrams are bounded by UDP).
    pub max_message: usize,
    /// A stream connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Open stream connections (all transports) allowed per remote IP.
    pub tcp_max_conns_per_ip: usize,
    /// Timeout for opening an outbound TCP (or TLS) connection.
    pub tcp_connect_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            udp: vec![],
            tcp: vec![],
            tls: vec![],
            ws: vec![],
            wss: vec![],
            tls_settings: TlsSettings::default(),
            udp_sockets_per_addr: 1,
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            max_message: 65_535,
            tcp_idle_timeout: Duration::from_secs(300),
            tcp_max_conns_per_ip: 64,
            tcp_connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A message received from the network: a datagram, or one message framed
/// out of a stream.
#[derive(Debug)]
pub struct Inbound {
    /// Its bytes, unparsed.
    pub bytes: Bytes,
    /// Where it came from.
    pub peer: Peer,
    /// When it arrived: the kernel's receive stamp for UDP (time spent in
    /// the socket buffer counts, see `arrival.rs`), the read time for
    /// streams.
    pub received_at: Instant,
}

/// Something the transport learned on its own.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A send failed after [`SipTransport::send_request`] or
    /// [`SipTransport::send_bytes`] returned.
    SendFailed(SendFailure),
    /// A stream connection closed (either side, idle timeout, framing
    /// error).
    Closed(ConnId),
}

/// A send that failed after [`SipTransport::send`] returned, reported with
/// the caller's token (a transaction key, for instance).
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// The token given to `send`.
    pub token: u64,
    /// The destination.
    pub peer: Peer,
    /// Why.
    pub reason: String,
}

/// Counters, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams and stream messages received.
    pub received: AtomicU64,
    /// Stream bytes that could not be framed (the connection was closed),
    /// and datagrams larger than a receive buffer.
    pub unparsable: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Send errors.
    pub send_errors: AtomicU64,
}

struct UdpEndpoint {
    local: SocketAddr,
    sockets: Vec<Arc<std::net::UdpSocket>>,
}

pub(crate) struct ConnEntry {
    pub(crate) tx: mpsc::Sender<(Bytes, u64)>,
    pub(crate) remote: SocketAddr,
    pub(crate) transport: Transport,
}

pub(crate) struct Inner {
    pub(crate) cfg: TransportConfig,
    udp: Vec<UdpEndpoint>,
    pub(crate) tcp_locals: Vec<SocketAddr>,
    /// TLS, WS and WSS listeners.
    stream_locals: Vec<(Transport, SocketAddr)>,
    pub(crate) conns: DashMap<ConnId, ConnEntry>,
    pub(crate) by_remote: DashMap<(Transport, SocketAddr), ConnId>,
    /// Host names to verify outbound TLS servers against, by address.
    pub(crate) tls_names: DashMap<SocketAddr, String>,
    pub(crate) per_ip: DashMap<IpAddr, usize>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) notices: mpsc::UnboundedSender<Notice>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) stats: Stats,
}

/// Handle to the running transport; cheap to clone.
#[derive(Clone)]
pub struct SipTransport {
    inner: Arc<Inner>,
    stop: Arc<watch::Sender<bool>>,
}

impl SipTransport {
    /// Binds every listener in `cfg` and starts the stream tasks (in the
    /// runtime it is called from). Messages received on streams go to
    /// `inbound`; send failures and closed connections to `notices`; UDP
    /// sockets are read by a [`UdpReceiver`].
    pub async fn bind(
        cfg: TransportConfig,
        inbound: mpsc::Sender<Inbound>,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> std::io::Result<SipTransport> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut udp = Vec::new();
        for addr in &cfg.udp {
            let n = cfg.udp_sockets_per_addr.max(1);
            let first = socket::udp_socket(*addr, &cfg, n > 1)?;
            arrival::enable(&first);
            let local = first.local_addr()?;
            let mut sockets = vec![Arc::new(first)];
            for _ in 1..n {
                let s = socket::udp_socket(local, &cfg, true)?;
                arrival::enable(&s);
                sockets.push(Arc::new(s));
            }
            udp.push(UdpEndpoint { local, sockets });
        }
        let acceptor = cfg.tls_settings.acceptor();
        if acceptor.is_none() && !(cfg.tls.is_empty() && cfg.wss.is_empty()) {
            let why = "TLS and WSS listeners need a certificate";
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        }
        let mut listeners = Vec::new();
        let mut tcp_locals = Vec::new();
        let mut stream_locals = Vec::new();
        let kinds = [
            (&cfg.tcp, Transport::Tcp, Some(stream::Listener::Tcp)),
            (&cfg.tls, Transport::Tls, acceptor.clone().map(stream::Listener::Tls)),
            (&cfg.ws, Transport::Ws, Some(stream::Listener::Ws)),
            (&cfg.wss, Transport::Wss, acceptor.map(stream::Listener::Wss)),
        ];
        for (addrs, transport, kind) in kinds {
            // `None` only without a certificate, and then without addresses.
            let Some(kind) = kind else { continue };
            for addr in addrs {
                let l = socket::tcp_listener(*addr, &cfg)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                let local = l.local_addr()?;
                match transport {
                    Transport::Tcp => tcp_locals.push(local),
                    t => stream_locals.push((t, local)),
                }
                listeners.push((l, kind.clone()));
            }
        }
        let inner = Arc::new(Inner {
            cfg,
            udp,
            tcp_locals,
            stream_locals,
            conns: DashMap::new(),
            by_remote: DashMap::new(),
            tls_names: DashMap::new(),
            per_ip: DashMap::new(),
            next_conn: AtomicU64::new(1),
            inbound,
            notices,
            shutdown: stop_rx,
            stats: Stats::default(),
        });
        for (l, kind) in listeners {
            tokio::spawn(stream::accept_loop(inner.clone(), l, kind));
        }
        Ok(SipTransport { inner, stop: Arc::new(stop_tx) })
    }

    /// The bound addresses (with the real ports when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let mut v: Vec<_> = self.inner.udp.iter().map(|e| (Transport::Udp, e.local)).collect();
        v.extend(self.inner.tcp_locals.iter().map(|a| (Transport::Tcp, *a)));
        v.extend(self.inner.stream_locals.iter().copied());
        v
    }

    /// Outbound TLS to `addr` verifies the server's certificate against
    /// `host` (and sends it as SNI): the name `addr` was resolved from.
    /// Without one, the certificate must name the IP address.
    pub fn set_tls_name(&self, addr: SocketAddr, host: &str) {
        self.inner.tls_names.insert(addr, host.to_owned());
    }

    /// A local address for `transport` in the same family as `remote`.
    pub fn local_for(&self, transport: Transport, remote: SocketAddr) -> Option<SocketAddr> {
        self.local_addrs()
            .into_iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, a)| a)
            .find(|a| a.is_ipv4() == remote.is_ipv4())
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Open stream connections (TCP, TLS, WS and WSS).
    pub fn tcp_connections(&self) -> usize {
        self.inner.conns.len()
    }

    /// Closes stream connections and stops accepting new ones; sends still
    /// work so that in-flight transactions can finish. (UDP sockets are
    /// read only when their [`UdpReceiver`] is asked.)
    pub fn stop_receiving(&self) {
        let _ = self.stop.send(true);
    }

    /// A reader of every UDP socket, in batches, for the thread that owns
    /// the switch.
    pub fn udp_receiver(&self) -> UdpReceiver {
        UdpReceiver::new(self.inner.clone())
    }

    /// A sender that batches datagrams, for the thread that owns the
    /// switch.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.inner.clone())
    }

    /// Sends a message at once (an [`Outbox`] batches datagrams instead).
    /// Over UDP a request larger than [`UDP_MTU_LIMIT`] goes over TCP when
    /// this transport listens on TCP, with its top Via rewritten, falling
    /// back to UDP if TCP fails.
    pub fn send_request(&self, peer: &Peer, msg: &Message, token: u64) {
        match route(&self.inner, peer, msg) {
            Route::Udp(bytes) => udp_send(&self.inner, peer, bytes, token),
            Route::Stream { peer, bytes, udp_fallback } => {
                stream::send(&self.inner, &peer, bytes, token, udp_fallback)
            }
        }
    }

    /// Sends raw bytes to `peer` as they are, at once: one datagram, stream
    /// write or WebSocket message.
    pub fn send_bytes(&self, peer: &Peer, bytes: Bytes, token: u64) {
        match peer.transport {
            Transport::Udp => udp_send(&self.inner, peer, bytes, token),
            _ => stream::send(&self.inner, peer, bytes, token, None),
        }
    }
}

/// How a message goes out.
pub(crate) enum Route {
    /// As this datagram.
    Udp(Bytes),
    /// Over a stream connection (to `peer`, whose transport may differ
    /// from the one asked for: RFC 3261 18.1.1), with what to send over
    /// UDP if the connection cannot be made.
    Stream { peer: Peer, bytes: Bytes, udp_fallback: Option<Bytes> },
}

/// Serialises `msg` for `peer` and decides how it goes: over UDP a request
/// larger than [`UDP_MTU_LIMIT`] goes over TCP when there is a TCP
/// listener, its top Via rewritten.
pub(crate) fn route(inner: &Inner, peer: &Peer, msg: &Message) -> Route {
    let bytes = msg.to_bytes();
    if peer.transport != Transport::Udp {
        return Route::Stream { peer: *peer, bytes, udp_fallback: None };
    }
    if msg.is_request() && bytes.len() > UDP_MTU_LIMIT && !inner.tcp_locals.is_empty() {
        if let Some(tcp_msg) = via_stamp::via_to_tcp(msg) {
            let tcp_peer = Peer { transport: Transport::Tcp, conn: None, ..*peer };
            let tcp_bytes = tcp_msg.to_bytes();
            return Route::Stream { peer: tcp_peer, bytes: tcp_bytes, udp_fallback: Some(bytes) };
        }
    }
    Route::Udp(bytes)
}

/// The UDP endpoint to send to `peer` from: the one bound to `peer.local`,
/// else one of the same address family.
pub(crate) fn udp_endpoint(inner: &Inner, peer: &Peer) -> Option<usize> {
    let udp = &inner.udp;
    udp.iter()
        .position(|e| e.local == peer.local)
        .or_else(|| udp.iter().position(|e| e.local.is_ipv4() == peer.remote.is_ipv4()))
}

/// Sends one datagram at once. A full send buffer fails it (the
/// transaction layer retransmits): the thread that owns the switch sends
/// through its [`Outbox`], which waits for room instead.
pub(crate) fn udp_send(inner: &Inner, peer: &Peer, bytes: Bytes, token: u64) {
    let Some(ep) = udp_endpoint(inner, peer) else {
        fail(inner, token, peer, "no UDP socket for this address family".into());
        return;
    };
    match inner.udp[ep].sockets[0].send_to(&bytes, peer.remote) {
        Ok(_) => {
            inner.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail(inner, token, peer, e.to_string()),
    }
}

pub(crate) fn fail(inner: &Inner, token: u64, peer: &Peer, reason: String) {
    inner.stats.send_errors.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, %reason, "send failed");
    let _ = inner.notices.send(Notice::SendFailed(SendFailure { token, peer: *peer, reason }));
}

/// Wraps received bytes for the layer above.
pub(crate) fn inbound(inner: &Inner, bytes: Bytes, peer: Peer, now: Instant) -> Inbound {
    inner.stats.received.fetch_add(1, Ordering::Relaxed);
    Inbound { bytes, peer, received_at: now }
}
