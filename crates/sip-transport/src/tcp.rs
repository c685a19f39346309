//! TCP: accepting, connecting, one reader and one writer task per connection,
//! stream framing, RFC 5626 keep-alive answers, idle timeout, per-IP cap.

use crate::{fail, inbound, udp_send, ConnEntry, Inner, Notice};
use bytes::Bytes;
use sip_message::{ConnId, Peer, StreamDecoder, StreamItem, Transport};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Messages queued per connection before sends fail.
const CONN_QUEUE: usize = 1024;

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
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
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        register(&inner, id, remote, tx);
        tokio::spawn(run_conn(inner.clone(), stream, remote, local, id, rx, true));
    }
}

fn register(inner: &Inner, id: ConnId, remote: SocketAddr, tx: mpsc::Sender<(Bytes, u64)>) {
    inner.conns.insert(id, ConnEntry { tx, remote });
    inner.by_remote.insert(remote, id);
}

fn unregister(inner: &Inner, id: ConnId, remote: SocketAddr) {
    inner.conns.remove(&id);
    inner.by_remote.remove_if(&remote, |_, v| *v == id);
}

fn release_ip(inner: &Inner, remote: SocketAddr) {
    if let dashmap::mapref::entry::Entry::Occupied(mut e) = inner.per_ip.entry(remote.ip()) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

/// Sends over the connection `peer.conn`, else the one open to
/// `peer.remote`, else a new one. `udp_fallback`: what to send over UDP if
/// the connection cannot be made (RFC 3261 18.1.1).
pub(crate) fn send(
    inner: &Arc<Inner>,
    peer: &Peer,
    bytes: Bytes,
    token: u64,
    udp_fallback: Option<Bytes>,
) {
    let id = peer
        .conn
        .filter(|id| inner.conns.contains_key(id))
        .or_else(|| inner.by_remote.get(&peer.remote).map(|e| *e));
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
                    let remote = c.remote;
                    drop(c);
                    unregister(inner, id, remote);
                    bytes = b;
                }
            }
        }
    }
    let remote = peer.remote;
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let _ = tx.try_send((bytes, token));
    register(inner, id, remote, tx);
    let inner = inner.clone();
    let peer = *peer;
    tokio::spawn(async move {
        match connect(&inner, remote).await {
            Ok(stream) => {
                let local = stream.local_addr().unwrap_or(peer.local);
                run_conn(inner, stream, remote, local, id, rx, false).await;
            }
            Err(e) => {
                debug!(%remote, error = %e, "tcp connect failed");
                unregister(&inner, id, remote);
                let mut rx = rx;
                rx.close();
                let mut first = true;
                while let Ok((_, token)) = rx.try_recv() {
                    match (&udp_fallback, first) {
                        (Some(b), true) => {
                            let udp_peer = Peer { transport: Transport::Udp, conn: None, ..peer };
                            udp_send(&inner, &udp_peer, b.clone(), token);
                        }
                        _ => fail(&inner, token, &peer, format!("tcp connect: {e}")),
                    }
                    first = false;
                }
            }
        }
    });
}

async fn connect(inner: &Inner, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = crate::socket::tcp_outbound(remote, &inner.cfg)?;
    let std_stream: std::net::TcpStream = sock.into();
    let sock = tokio::net::TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(inner.cfg.tcp_connect_timeout, sock.connect(remote)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")),
    }
}

async fn run_conn(
    inner: Arc<Inner>,
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    id: ConnId,
    mut rx: mpsc::Receiver<(Bytes, u64)>,
    accepted: bool,
) {
    let (mut rd, mut wr) = stream.into_split();
    let peer = Peer { transport: Transport::Tcp, remote, local, conn: Some(id) };
    let winner = inner.clone();
    let writer = tokio::spawn(async move {
        while let Some((b, token)) = rx.recv().await {
            if let Err(e) = wr.write_all(&b).await {
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
                debug!(%peer, "tcp idle timeout");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "tcp read error");
                break;
            }
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        loop {
            match dec.decode() {
                Ok(None) => break,
                Ok(Some(StreamItem::Ping)) => {
                    if let Some(c) = inner.conns.get(&id) {
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
                    warn!(%peer, error = %e, "tcp framing error; closing connection");
                    break 'conn;
                }
            }
        }
    }
    unregister(&inner, id, remote);
    if accepted {
        release_ip(&inner, remote);
    }
    let _ = inner.notices.send(Notice::Closed(id));
    // The writer ends once the queue (owned by the map entry) is dropped.
    let _ = writer.await;
}
