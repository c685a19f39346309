//! The transport on real loopback sockets: outbound TCP reuse, the RFC 3261
//! 18.1.1 switch to TCP for large requests, IPv6, and the inbound path.

use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use sip_transport::{Inbound, Interest, Poller, SipTransport, TransportConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn transport(addr: &str) -> (SipTransport, mpsc::Receiver<Inbound>) {
    let a: SocketAddr = addr.parse().expect("addr");
    let cfg = TransportConfig { udp: vec![a], tcp: vec![a], ..Default::default() };
    let (tx, rx) = mpsc::channel(64);
    let (ftx, _frx) = mpsc::unbounded_channel();
    let t = SipTransport::bind(cfg, tx, ftx).await.expect("bind");
    (t, rx)
}

fn request(body_len: usize) -> Message {
    Message::request(Method::Message, "sip:bob@127.0.0.1")
        .header(HeaderName::Via, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbig")
        .header(HeaderName::From, "<sip:a@127.0.0.1>;tag=1")
        .header(HeaderName::To, "<sip:bob@127.0.0.1>")
        .header(HeaderName::CallId, "big-1")
        .header(HeaderName::CSeq, "1 MESSAGE")
        .header(HeaderName::MaxForwards, "70")
        .body("text/plain", Bytes::from(vec![b'x'; body_len]))
        .build()
}

async fn read_message(s: &mut tokio::net::TcpStream) -> Message {
    let mut dec = sip_message::StreamDecoder::new(1 << 16);
    loop {
        if let Some(sip_message::StreamItem::Message(m)) = dec.decode().expect("framing") {
            return m;
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(dec.buffer_mut()))
            .await
            .expect("read in time")
            .expect("read");
        assert!(n > 0, "closed");
    }
}

#[tokio::test]
async fn large_udp_request_goes_over_tcp_and_connections_are_reused() {
    let (t, _rx) = transport("127.0.0.1:0").await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target_addr = target.local_addr().expect("addr");
    let local = t.local_for(Transport::Udp, target_addr).expect("local");
    let peer = Peer { transport: Transport::Udp, remote: target_addr, local, conn: None };
    t.send_request(&peer, &request(2000), 1);
    let (mut conn, _) =
        tokio::time::timeout(WAIT, target.accept()).await.expect("accept").expect("ok");
    let m = read_message(&mut conn).await;
    assert_eq!(m.top_via().expect("via").transport, b"TCP");
    assert_eq!(m.body().len(), 2000);
    // A second large request reuses the same connection.
    t.send_request(&peer, &request(1500), 2);
    let m2 = read_message(&mut conn).await;
    assert_eq!(m2.body().len(), 1500);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), target.accept()).await.is_err(),
        "no second connection"
    );
    assert_eq!(t.tcp_connections(), 1);
}

#[tokio::test]
async fn small_udp_request_stays_udp() {
    let (t, _rx) = transport("127.0.0.1:0").await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let remote = sock.local_addr().expect("addr");
    let local = t.local_for(Transport::Udp, remote).expect("local");
    t.send_request(
        &Peer { transport: Transport::Udp, remote, local, conn: None },
        &request(100),
        1,
    );
    let mut buf = vec![0u8; 65536];
    let (n, from) =
        tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.expect("in time").expect("recv");
    assert_eq!(from, local);
    let m = Message::parse(Bytes::copy_from_slice(&buf[..n])).expect("parse");
    assert_eq!(m.top_via().expect("via").transport, b"UDP");
}

#[tokio::test]
async fn ipv6_udp_inbound_comes_up_unparsed_with_its_peer() {
    // (Stamping received/rport moved to the switch core with the code that
    // does it: see crates/switch/tests/core.rs, ipv6_udp_inbound_is_stamped.)
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let (t, _rx) = transport("[::1]:0").await;
    let server = t.local_addrs()[0].1;
    let sock = tokio::net::UdpSocket::bind("[::1]:0").await.expect("bind");
    let msg = "OPTIONS sip:[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK6;rport\r\nFrom: <sip:a@[::1]>;tag=1\r\nTo: <sip:[::1]>\r\nCall-ID: v6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(msg.as_bytes(), server).await.expect("send");
    // UDP is read by the thread that owns the switch: a poller and a
    // batch reader, as the shell does.
    let mut udp = t.udp_receiver();
    let fd = udp.fds()[0];
    let mut poller = Poller::new().expect("poller");
    poller.set(fd, Interest { read: true, write: false });
    poller.wait(Some(WAIT)).expect("wait");
    assert_eq!(poller.ready().count(), 1, "the socket is readable in time");
    let mut got = Vec::new();
    udp.recv(fd, |inb, _| got.push(inb));
    let inb = got.pop().expect("inbound");
    assert_eq!(inb.peer.transport, Transport::Udp);
    assert_eq!(inb.peer.remote, sock.local_addr().expect("addr"));
    assert_eq!(inb.peer.local, server);
    assert_eq!(&inb.bytes[..], msg.as_bytes(), "bytes as sent, unparsed");
}
