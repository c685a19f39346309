//! Outbound TLS between two transports on 127.0.0.1: the server's
//! certificate is verified against the name given by `set_tls_name` (or the
//! IP address), the connection is reused both ways, a wrong name fails the
//! send, and a WebSocket peer without a connection cannot be sent to.

use bytes::Bytes;
use sip_message::{Peer, Transport};
use sip_transport::{Inbound, Notice, SipTransport, TlsSettings, TransportConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    t: SipTransport,
    inbound: mpsc::Receiver<Inbound>,
    notices: mpsc::UnboundedReceiver<Notice>,
}

async fn start(cfg: TransportConfig) -> Running {
    let (in_tx, inbound) = mpsc::channel(16);
    let (note_tx, notices) = mpsc::unbounded_channel();
    let t = SipTransport::bind(cfg, in_tx, note_tx).await.expect("bind");
    Running { t, inbound, notices }
}

/// A certificate for localhost and 127.0.0.1: (cert PEM, key PEM).
fn cert() -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let c = rcgen::generate_simple_self_signed(names).expect("cert");
    (c.cert.pem(), c.key_pair.serialize_pem())
}

/// A server with one TLS listener and a client that trusts its certificate.
async fn pair() -> (Running, Running, SocketAddr) {
    let (cert, key) = cert();
    let server = start(TransportConfig {
        tls: vec!["127.0.0.1:0".parse().expect("addr")],
        tls_settings: TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), None).expect("tls"),
        ..Default::default()
    })
    .await;
    let addr = server.t.local_addrs()[0].1;
    let trusting = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes()));
    let client =
        start(TransportConfig { tls_settings: trusting.expect("tls"), ..Default::default() }).await;
    (server, client, addr)
}

fn options(call_id: &str) -> Bytes {
    Bytes::from(format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK{call_id}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ))
}

fn to(transport: Transport, remote: SocketAddr) -> Peer {
    Peer { transport, remote, local: "127.0.0.1:0".parse().expect("addr"), conn: None }
}

async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("within the wait").expect("open")
}

async fn failure(rx: &mut mpsc::UnboundedReceiver<Notice>) -> u64 {
    loop {
        match tokio::time::timeout(WAIT, rx.recv()).await.expect("within the wait") {
            Some(Notice::SendFailed(f)) => return f.token,
            Some(Notice::Closed(_)) => continue,
            None => panic!("notices closed"),
        }
    }
}

#[tokio::test]
async fn outbound_tls_by_name_and_by_ip_reuses_the_connection() {
    let (mut server, mut client, addr) = pair().await;
    client.t.set_tls_name(addr, "localhost");
    client.t.send_bytes(&to(Transport::Tls, addr), options("one"), 1);
    let got = next(&mut server.inbound).await;
    assert_eq!(got.peer.transport, Transport::Tls);
    assert!(got.bytes.starts_with(b"OPTIONS"));
    // The answer goes back over that connection.
    server.t.send_bytes(&got.peer, options("back"), 2);
    let back = next(&mut client.inbound).await;
    assert_eq!((back.peer.transport, back.peer.remote), (Transport::Tls, addr));
    // The next request reuses it.
    client.t.send_bytes(&to(Transport::Tls, addr), options("two"), 3);
    assert_eq!(next(&mut server.inbound).await.peer.conn, got.peer.conn);
    assert_eq!(client.t.tcp_connections(), 1);

    // Without a name, the certificate must name the IP address (it does).
    let (mut server, client, addr) = pair().await;
    client.t.send_bytes(&to(Transport::Tls, addr), options("ip"), 4);
    assert_eq!(next(&mut server.inbound).await.peer.transport, Transport::Tls);
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_the_send() {
    let (_server, mut client, addr) = pair().await;
    client.t.set_tls_name(addr, "sip.example.com");
    client.t.send_bytes(&to(Transport::Tls, addr), options("wrong"), 42);
    assert_eq!(failure(&mut client.notices).await, 42);
}

#[tokio::test]
async fn no_websocket_connection_no_send() {
    let mut r = start(TransportConfig::default()).await;
    let remote = "127.0.0.1:9".parse().expect("addr");
    r.t.send_bytes(&to(Transport::Ws, remote), options("ws"), 7);
    assert_eq!(failure(&mut r.notices).await, 7);
}
