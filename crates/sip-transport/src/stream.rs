//! Stream connections: accepting (TCP, TLS, WS, WSS), connecting (TCP,
//! TLS), one reader and one writer task per connection, stream framing for
//! TCP and TLS, RFC 5626 4.4.1 keep-alive answers (a CRLF pong to a
//! double-CRLF ping), idle timeout, per-IP cap. WebSocket message handling
//! is in `ws.rs`; everything else about a connection is here, the same for
//! every transport.

use crate::{fail, inbound, tls, udp_send, ws, ConnEntry, Inner, Notice};
use bytes::Bytes;
use sip_message::{ConnId, Peer, StreamDecoder, StreamItem, Transport};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Messages queued per connection before sends fail.
const CONN_QUEUE: usize = 1024;

/// What a listener speaks above TCP.
#[derive(Clone)]
pub(crate) enum Listener {
    /// Plain TCP.
    Tcp,
    /// TLS.
    Tls(tokio_rustls::TlsAcceptor),
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss(tokio_rustls::TlsAcceptor),
}

impl Listener {
    fn transport(&self) -> Transport {
        match self {
            Listener::Tcp => Transport::Tcp,
            Listener::Tls(_) => Transport::Tls,
            Listener::Ws => Transport::Ws,
            Listener::Wss(_) => Transport::Wss,
        }
    }
}

/// One connection's identity: its id, its peer (with `conn` set) and
/// whether it was accepted (and so counts against the per-IP cap).
#[derive(Clone, Copy)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) peer: Peer,
    accepted: bool,
}

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, kind: Listener) {
    let mut shutdown = inner.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        {
            let mut count = inner.per_ip.entry(remote.ip()).or_insert(0);
            if *count >= inner.cfg.tcp_max_conns_per_ip {
                debug!(%remote, "too many connections from this IP; refused");
                continue;
            }
            *count += 1;
        }
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => {
                release_ip(&inner, remote);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = Peer { transport: kind.transport(), remote, local, conn: Some(id) };
        let conn = Conn { id, peer, accepted: true };
        tokio::spawn(serve_accepted(inner.clone(), stream, conn, kind.clone()));
    }
}

/// Runs the handshakes `kind` needs (bounded in time), then the connection.
async fn serve_accepted(inner: Arc<Inner>, stream: TcpStream, conn: Conn, kind: Listener) {
    match kind {
        Listener::Tcp => {
            let rx = register(&inner, conn);
            let (rd, wr) = stream.into_split();
            run_framed(inner, rd, wr, conn, rx).await;
        }
        Listener::Tls(acceptor) => match tls_accept(acceptor, stream, &conn).await {
            Some(s) => {
                let rx = register(&inner, conn);
                let (rd, wr) = tokio::io::split(s);
                run_framed(inner, rd, wr, conn, rx).await;
            }
            None => release_ip(&inner, conn.peer.remote),
        },
        Listener::Ws => ws::serve(inner, stream, conn).await,
        Listener::Wss(acceptor) => match tls_accept(acceptor, stream, &conn).await {
            Some(s) => ws::serve(inner, s, conn).await,
            None => release_ip(&inner, conn.peer.remote),
        },
    }
}

/// The TLS server handshake, bounded in time; `None` when it failed.
async fn tls_accept(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    conn: &Conn,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(peer = %conn.peer, "TLS handshake timed out");
            None
        }
    }
}

/// Makes the connection reachable for sends; returns its send queue.
pub(crate) fn register(inner: &Inner, conn: Conn) -> mpsc::Receiver<(Bytes, u64)> {
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    insert(inner, conn.id, conn.peer, tx);
    rx
}

fn insert(inner: &Inner, id: ConnId, peer: Peer, tx: mpsc::Sender<(Bytes, u64)>) {
    inner.conns.insert(id, ConnEntry { tx, remote: peer.remote, transport: peer.transport });
    inner.by_remote.insert((peer.transport, peer.remote), id);
}

fn unregister(inner: &Inner, id: ConnId, transport: Transport, remote: SocketAddr) {
    inner.conns.remove(&id);
    inner.by_remote.remove_if(&(transport, remote), |_, v| *v == id);
}

pub(crate) fn release_ip(inner: &Inner, remote: SocketAddr) {
    if let dashmap::mapref::entry::Entry::Occupied(mut e) = inner.per_ip.entry(remote.ip()) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

/// The connection is gone: it is no longer reachable, its per-IP slot is
/// free, and the layer above hears of it ([`Notice::Closed`]).
pub(crate) fn closed(inner: &Inner, conn: Conn) {
    unregister(inner, conn.id, conn.peer.transport, conn.peer.remote);
    if conn.accepted {
        release_ip(inner, conn.peer.remote);
    }
    let _ = inner.notices.send(Notice::Closed(conn.id));
}

/// Sends over the connection `peer.conn`, else the one open to
/// `peer.remote` over `peer.transport`, else a new one (TCP and TLS only:
/// WebSocket peers connect to us). `udp_fallback`: what to send over UDP
/// if the connection cannot be made (RFC 3261 18.1.1).
pub(crate) fn send(
    inner: &Arc<Inner>,
    peer: &Peer,
    bytes: Bytes,
    token: u64,
    udp_fallback: Option<Bytes>,
) {
    let id = peer
        .conn
        .filter(|id| inner.conns.get(id).is_some_and(|c| c.transport == peer.transport))
        .or_else(|| inner.by_remote.get(&(peer.transport, peer.remote)).map(|e| *e));
    let mut bytes = bytes;
    if let Some(id) = id {
        if let Some(c) = inner.conns.get(&id) {
            match c.tx.try_send((bytes, token)) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    drop(c);
                    fail(inner, token, peer, "connection send queue full".into());
                    return;
                }
                Err(mpsc::error::TrySendError::Closed((b, _))) => {
                    let (transport, remote) = (c.transport, c.remote);
                    drop(c);
                    unregister(inner, id, transport, remote);
                    bytes = b;
                }
            }
        }
    }
    if matches!(peer.transport, Transport::Ws | Transport::Wss) {
        fail(inner, token, peer, "no open WebSocket connection to this peer".into());
        return;
    }
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let _ = tx.try_send((bytes, token));
    insert(inner, id, *peer, tx);
    tokio::spawn(connect_and_run(inner.clone(), *peer, id, rx, udp_fallback));
}

async fn connect_and_run(
    inner: Arc<Inner>,
    peer: Peer,
    id: ConnId,
    mut rx: mpsc::Receiver<(Bytes, u64)>,
    udp_fallback: Option<Bytes>,
) {
    let remote = peer.remote;
    let tcp = connect(&inner, remote).await;
    let local = tcp.as_ref().ok().and_then(|s| s.local_addr().ok()).unwrap_or(peer.local);
    let conn = Conn { id, peer: Peer { local, conn: Some(id), ..peer }, accepted: false };
    let error = match (tcp, peer.transport) {
        (Ok(s), Transport::Tls) => match tls_connect(&inner, s, remote).await {
            Ok(s) => {
                let (rd, wr) = tokio::io::split(s);
                return run_framed(inner, rd, wr, conn, rx).await;
            }
            Err(e) => format!("tls connect: {e}"),
        },
        (Ok(s), _) => {
            let (rd, wr) = s.into_split();
            return run_framed(inner, rd, wr, conn, rx).await;
        }
        (Err(e), t) => format!("{} connect: {e}", t.uri_param()),
    };
    debug!(%remote, %error, "connect failed");
    unregister(&inner, id, peer.transport, remote);
    rx.close();
    let mut first = true;
    while let Ok((_, token)) = rx.try_recv() {
        match (&udp_fallback, first) {
            (Some(b), true) => {
                let udp_peer = Peer { transport: Transport::Udp, conn: None, ..peer };
                udp_send(&inner, &udp_peer, b.clone(), token);
            }
            _ => fail(&inner, token, &peer, error.clone()),
        }
        first = false;
    }
}

async fn connect(inner: &Inner, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = crate::socket::tcp_outbound(remote, &inner.cfg)?;
    let std_stream: std::net::TcpStream = sock.into();
    let sock = tokio::net::TcpSocket::from_std_stream(std_stream);
    let stream = match tokio::time::timeout(inner.cfg.tcp_connect_timeout, sock.connect(remote))
        .await
    {
        Ok(r) => r?,
        Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The TLS client handshake, verifying the server's certificate against the
/// name `remote` was resolved from (else its IP address).
async fn tls_connect(
    inner: &Inner,
    stream: TcpStream,
    remote: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = tls::server_name(inner.tls_names.get(&remote).map(|n| n.clone()), remote);
    let connect = inner.cfg.tls_settings.connector().connect(name, stream);
    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timeout")),
    }
}

/// Runs one TCP or TLS connection: a writer task draining `rx`, and the
/// reader framing messages out of the stream until it closes.
async fn run_framed<R, W>(
    inner: Arc<Inner>,
    mut rd: R,
    mut wr: W,
    conn: Conn,
    mut rx: mpsc::Receiver<(Bytes, u64)>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let winner = inner.clone();
    let writer = tokio::spawn(async move {
        while let Some((b, token)) = rx.recv().await {
            let written = match wr.write_all(&b).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                fail(&winner, token, &peer, e.to_string());
                break;
            }
            winner.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let _ = wr.shutdown().await;
    });
    let mut dec = StreamDecoder::new(inner.cfg.max_message);
    let mut shutdown = inner.shutdown.clone();
    'conn: loop {
        let read = tokio::select! {
            r = tokio::time::timeout(inner.cfg.tcp_idle_timeout, rd.read_buf(dec.buffer_mut())) => r,
            _ = shutdown.changed() => break,
        };
        match read {
            Err(_) => {
                debug!(%peer, "idle timeout");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "read error");
                break;
            }
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        loop {
            match dec.decode() {
                Ok(None) => break,
                Ok(Some(StreamItem::Ping)) => {
                    // RFC 5626 4.4.1: a double-CRLF ping gets a CRLF pong.
                    if let Some(c) = inner.conns.get(&conn.id) {
                        let _ = c.tx.try_send((Bytes::from_static(b"\r\n"), 0));
                    }
                }
                Ok(Some(StreamItem::Pong)) => {}
                Ok(Some(StreamItem::Message(m))) => {
                    let item = inbound(&inner, m.to_bytes(), peer, now);
                    if inner.inbound.send(item).await.is_err() {
                        break 'conn;
                    }
                }
                Err(e) => {
                    inner.stats.unparsable.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, error = %e, "stream framing error; closing connection");
                    break 'conn;
                }
            }
        }
    }
    closed(&inner, conn);
    // The writer ends once the queue (owned by the map entry) is dropped.
    let _ = writer.await;
}
