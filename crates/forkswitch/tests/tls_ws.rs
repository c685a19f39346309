//! TLS and WebSocket transports (RFC 3261 26, RFC 7118), against the real
//! binary with a certificate from `forkswitch gen-cert`: digest REGISTER
//! over TLS, WS and WSS; a call from a UDP SIPp caller that reaches the
//! phone over its own TLS or WS connection (the WS phone has a `.invalid`
//! Contact host, as browsers do); a closed WS connection makes its binding
//! unreachable; a `sips:` destination is called over mutual TLS; an
//! upgrade without the `sip` subprotocol is refused; CRLF
//! keep-alive pings get pongs on TCP and TLS; a missing certificate file is
//! a config error naming file, line and key.

mod common;

use common::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tungstenite::client::IntoClientRequest;

/// A server with TLS, WS and WSS listeners, domain `test` (127.0.0.1 a
/// trusted carrier source, so the SIPp caller needs no digest), extension
/// `user` (password `pw-<user>`) and group 816 ringing it.
fn server(certs: &Path, user: &str) -> Server {
    server_with(certs, user, "")
}

/// The `[tls] ca` line trusting `certs`' own (self-signed) certificate.
fn ca_line(certs: &Path) -> String {
    format!("ca = {:?}\n", certs.join("cert.pem").to_string_lossy())
}

/// [`server`] with more `[tls]` settings.
fn server_with(certs: &Path, user: &str, tls: &str) -> Server {
    let extra = format!(
        "{}{tls}[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [[extensions]]\nname = \"{user}\"\ndomain = \"test\"\npassword = \"pw-{user}\"\n[registrar]\nalgorithms = [\"MD5\"]\n\
         [[groups]]\nnumber = \"816\"\ndomain = \"test\"\ndestinations = [{{ type = \"endpoint\", target = \"{user}@test\" }}]\n",
        tls_section(certs)
    );
    let sip = "tls = [\"127.0.0.1:0\"]\nws = [\"127.0.0.1:0\"]\nwss = [\"127.0.0.1:0\"]\n";
    Server::start_with_sip(sip, &extra)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` trusting only the generated certificate,
/// verified as `localhost`.
fn tls_client(addr: SocketAddr, certs: &Path) -> TlsStream {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("cert.pem")).expect("cert.pem") {
        roots.add(c.expect("certificate")).expect("trust it");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    rustls::StreamOwned::new(conn, tcp_client(addr))
}

/// One SIP message at a time, whatever carries it.
trait Wire {
    fn send(&mut self, msg: &str);
    fn recv(&mut self) -> String;
}

/// A stream (TLS): messages framed by Content-Length.
struct Framed<S> {
    s: S,
    pending: Vec<u8>,
}

impl<S: Read + Write> Wire for Framed<S> {
    fn send(&mut self, msg: &str) {
        self.s.write_all(msg.as_bytes()).expect("write");
        self.s.flush().expect("flush");
    }
    fn recv(&mut self) -> String {
        String::from_utf8_lossy(&read_stream_message(&mut self.s, &mut self.pending)).into_owned()
    }
}

/// A WebSocket: one message per WebSocket message.
struct Ws<S>(tungstenite::WebSocket<S>);

impl<S: Read + Write> Wire for Ws<S> {
    fn send(&mut self, msg: &str) {
        self.0.send(tungstenite::Message::text(msg)).expect("ws send");
    }
    fn recv(&mut self) -> String {
        loop {
            match self.0.read().expect("a WebSocket message within the wait") {
                tungstenite::Message::Text(t) => return t.as_str().to_owned(),
                tungstenite::Message::Binary(b) => return String::from_utf8_lossy(&b).into(),
                tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }
}

/// The WebSocket upgrade offering subprotocol `sip` over `stream`.
fn ws_connect<S: Read + Write>(url: &str, stream: S) -> Ws<S> {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().expect("header"));
    let (ws, resp) = tungstenite::client(req, stream).expect("handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "sip");
    Ws(ws)
}

/// REGISTER `user@test` with Via `via` (`TLS host:port`) and `contact`,
/// answering the digest challenge; asserts the 200.
fn register(w: &mut impl Wire, server: SocketAddr, user: &str, via: &str, contact: &str) {
    let uri = format!("sip:{server}");
    let build = |cseq: u32, auth: String| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bKreg{user}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@test>;tag=r{user}\r\nTo: <sip:{user}@test>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    w.send(&build(1, String::new()));
    let challenge = w.recv();
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce")
        .to_owned();
    let auth = digest_answer(user, &format!("pw-{user}"), "REGISTER", &uri, &nonce);
    w.send(&build(2, format!("Authorization: {auth}\r\n")));
    let ok = w.recv();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains(&format!("Via: SIP/2.0/{via}")), "{ok}");
}

fn header(m: &str, name: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    m.split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .unwrap_or_default()
        .to_owned()
}

/// The answer to `req` with `status`, copying its dialog headers.
fn response(req: &str, status: &str, extra: &str, body: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\n{}\r\n{}\r\n{}\r\n{}\r\n{}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "Via"),
        header(req, "From"),
        header(req, "To"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

/// A SIPp caller (UDP) dials 816; the phone must get the INVITE over `w`
/// with a top Via of `transport`, answer, and see the ACK and the BYE there.
fn call_reaches(w: &mut impl Wire, server: &Server, user: &str, transport: &str, contact: &str) {
    let dir = server.dir.path().to_owned();
    let target = server.udp;
    let call = std::thread::spawn(move || caller(&dir, target, "816", "uac.xml", &[]));
    answer_call(w, &format!("INVITE sip:{user}@"), transport, contact);
    call.join().expect("caller");
}

/// Gets an INVITE whose request line starts with `request` over `w` (top
/// Via of `transport`), answers 200, and takes the ACK and the BYE.
fn answer_call(w: &mut impl Wire, request: &str, transport: &str, contact: &str) {
    let invite = w.recv();
    assert!(invite.starts_with(request), "{invite}");
    assert!(header(&invite, "Via").starts_with(&format!("Via: SIP/2.0/{transport} ")), "{invite}");
    let sdp = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7002 RTP/AVP 0\r\n";
    let with_tag = response(&invite, "200 OK", "", sdp).replacen(
        &header(&invite, "To"),
        &format!("{};tag=phone", header(&invite, "To")),
        1,
    );
    let ok = with_tag.replacen(
        "\r\nContent-Length",
        &format!("\r\nContact: {contact}\r\nContent-Type: application/sdp\r\nContent-Length"),
        1,
    );
    w.send(&ok);
    let ack = w.recv();
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = w.recv();
    assert!(bye.starts_with("BYE "), "{bye}");
    w.send(&response(&bye, "200 OK", "", ""));
}

#[test]
fn register_and_call_over_tls() {
    let certs = gen_cert();
    let server = server(certs.path(), "t1");
    let conn = tls_client(server.tls, certs.path());
    let local = conn.sock.local_addr().expect("addr");
    let mut phone = Framed { s: conn, pending: Vec::new() };
    let contact = format!("<sip:t1@{local};transport=tls>");
    register(&mut phone, server.tls, "t1", &format!("TLS {local}"), &contact);
    call_reaches(&mut phone, &server, "t1", "TLS", &contact);
}

#[test]
fn register_and_call_over_ws_then_close() {
    let certs = gen_cert();
    let mut server = server(certs.path(), "w1");
    let mut phone = ws_connect(&format!("ws://{}/", server.ws), tcp_client(server.ws));
    let contact = "<sip:w1@df7jal23ls0d.invalid;transport=ws>";
    register(&mut phone, server.ws, "w1", "WS df7jal23ls0d.invalid", contact);
    call_reaches(&mut phone, &server, "w1", "WS", contact);
    // The browser goes away: its binding is unreachable, as over TCP.
    drop(phone);
    server.wait_log(
        |v| v["message"] == "connection closed: its bindings are unreachable" && v["count"] == 1,
        WAIT,
        |_, _| {},
    );
}

#[test]
fn register_over_wss() {
    let certs = gen_cert();
    let server = server(certs.path(), "s1");
    let tls = tls_client(server.wss, certs.path());
    let mut phone = ws_connect(&format!("wss://localhost:{}/", server.wss.port()), tls);
    let contact = "<sip:s1@k2m9q.invalid;transport=wss>";
    register(&mut phone, server.wss, "s1", "WSS k2m9q.invalid", contact);
}

/// With `[tls] ca` a client must show a certificate signed by it, unless
/// `require_client_cert = false`: then one without any registers over TLS.
#[test]
fn client_certificates_required_unless_optional() {
    let certs = gen_cert();
    let ca = ca_line(certs.path());
    // tls_client shows no certificate.
    let strict = server_with(certs.path(), "c1", &ca);
    let mut conn = tls_client(strict.tls, certs.path());
    let wrote = conn.write_all(b"\r\n\r\n").and_then(|_| conn.flush());
    let mut buf = [0u8; 64];
    let read = wrote.and_then(|_| conn.read(&mut buf));
    assert!(matches!(read, Err(_) | Ok(0)), "no certificate, yet {read:?}");
    drop(strict);
    let lax = server_with(certs.path(), "c2", &format!("{ca}require_client_cert = false\n"));
    let conn = tls_client(lax.tls, certs.path());
    let local = conn.sock.local_addr().expect("addr");
    let mut phone = Framed { s: conn, pending: Vec::new() };
    let contact = format!("<sip:c2@{local};transport=tls>");
    register(&mut phone, lax.tls, "c2", &format!("TLS {local}"), &contact);
}

/// A WebSocket ping (a browser's or a proxy's keepalive) gets its pong,
/// on a registered connection that stays usable.
#[test]
fn websocket_ping_gets_a_pong() {
    let certs = gen_cert();
    let server = server(certs.path(), "k1");
    let mut phone = ws_connect(&format!("ws://{}/", server.ws), tcp_client(server.ws));
    let contact = "<sip:k1@p0ng9.invalid;transport=ws>";
    register(&mut phone, server.ws, "k1", "WS p0ng9.invalid", contact);
    phone.0.send(tungstenite::Message::Ping(b"keepalive".to_vec().into())).expect("ping");
    loop {
        match phone.0.read().expect("a pong within the wait") {
            tungstenite::Message::Pong(p) => break assert_eq!(&p[..], b"keepalive"),
            tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
    call_reaches(&mut phone, &server, "k1", "WS", contact);
}

#[test]
fn ws_upgrade_without_sip_subprotocol_is_refused() {
    let certs = gen_cert();
    let server = server(certs.path(), "x1");
    let req = format!("ws://{}/", server.ws).into_client_request().expect("request");
    match tungstenite::client(req, tcp_client(server.ws)) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 400)
        }
        Err(e) => panic!("refused, but not with a 400: {e}"),
        Ok(_) => panic!("an upgrade without the sip subprotocol was accepted"),
    }
    // A wrong subprotocol is no better.
    let mut req = format!("ws://{}/", server.ws).into_client_request().expect("request");
    req.headers_mut().insert("Sec-WebSocket-Protocol", "chat".parse().expect("header"));
    assert!(tungstenite::client(req, tcp_client(server.ws)).is_err());
}

#[test]
fn crlf_ping_gets_a_pong_on_tcp_and_tls() {
    let certs = gen_cert();
    let server = server(certs.path(), "p1");
    let mut tcp = tcp_client(server.tcp);
    let mut tls = tls_client(server.tls, certs.path());
    let streams: [&mut dyn ReadWrite; 2] = [&mut tcp, &mut tls];
    for s in streams {
        s.write_all(b"\r\n\r\n").expect("ping");
        s.flush().expect("flush");
        let mut pong = [0u8; 2];
        s.read_exact(&mut pong).expect("a pong within the wait");
        assert_eq!(&pong, b"\r\n");
        // The connection still carries SIP afterwards.
        s.write_all(options(server.tcp, server.tcp, "TCP", "after-ping").as_bytes()).expect("w");
        s.flush().expect("flush");
        let resp = read_stream_message(s, &mut Vec::new());
        assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    }
}

/// A `sips:` destination: the switch dials it over TLS, verifies the
/// callee's certificate (by IP address, against `[tls] ca`) and shows its
/// own certificate to a callee that requires one.
#[test]
fn sips_destination_is_called_over_mutual_tls() {
    let certs = gen_cert();
    let callee = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let callee_addr = callee.local_addr().expect("addr");
    let extra = format!(
        "{}{}[[customers]]\nid = \"{CUSTOMER}\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         [[groups]]\nnumber = \"817\"\ndomain = \"test\"\ndestinations = [{{ type = \"sip\", target = \"sips:p@{callee_addr}\" }}]\n",
        tls_section(certs.path()),
        ca_line(certs.path())
    );
    let server = Server::start_with_sip("tls = [\"127.0.0.1:0\"]\n", &extra);
    let dir = server.dir.path().to_owned();
    let target = server.udp;
    let call = std::thread::spawn(move || caller(&dir, target, "817", "uac.xml", &[]));
    let tcp = accept_within(&callee);
    let mut phone = Framed { s: tls_server(tcp, certs.path()), pending: Vec::new() };
    let contact = format!("<sips:p@{callee_addr}>");
    answer_call(&mut phone, &format!("INVITE sips:p@{callee_addr}"), "TLS", &contact);
    let client_cert = phone.s.conn.peer_certificates().map(|c| c.len());
    assert_eq!(client_cert, Some(1), "the switch showed its certificate");
    call.join().expect("caller");
}

/// After a restart the TLS connection a phone registered over is gone (and
/// its source port was ephemeral): the binding is dialed over a new TLS
/// connection to its Contact's address, where the phone listens. A
/// WebSocket binding, which nothing can connect to, is skipped until it
/// registers again (the call fails at once instead of trying it).
#[test]
fn after_a_restart_a_tls_binding_is_dialed_at_its_contact() {
    let certs = gen_cert();
    // ca: the switch trusts the phone's certificate when it connects to it;
    // the phone registers without one.
    let tls = format!("{}require_client_cert = false\n", ca_line(certs.path()));
    let mut server = server_with(certs.path(), "r1", &tls);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = listener.local_addr().expect("addr");
    let conn = tls_client(server.tls, certs.path());
    let local = conn.sock.local_addr().expect("addr");
    let mut phone = Framed { s: conn, pending: Vec::new() };
    let contact = format!("<sip:r1@{listen};transport=tls>");
    register(&mut phone, server.tls, "r1", &format!("TLS {local}"), &contact);
    let mut browser = ws_connect(&format!("ws://{}/", server.ws), tcp_client(server.ws));
    let ws_contact = "<sip:r1@q8z2w.invalid;transport=ws>";
    register(&mut browser, server.ws, "r1", "WS q8z2w.invalid", ws_contact);
    server.stop_and_restart();
    drop((phone, browser));
    let (dir, target) = (server.dir.path().to_owned(), server.udp);
    let call = std::thread::spawn(move || caller(&dir, target, "816", "uac.xml", &[]));
    let tcp = accept_within(&listener);
    let mut callee = Framed { s: tls_server(tcp, certs.path()), pending: Vec::new() };
    answer_call(&mut callee, &format!("INVITE sip:r1@{listen}"), "TLS", &contact);
    call.join().expect("caller");
    // One leg in r1's group of contacts: the WebSocket binding was not
    // dialed.
    let (root, _) = finished_groupcall(&server);
    let db = common::db(&server);
    let r1 = db.groupcall(root.answer_groupcall_id).expect("read").expect("r1's groupcall");
    assert_eq!(r1.call_ids.len(), 1, "{r1:?}");
}

fn accept_within(l: &std::net::TcpListener) -> TcpStream {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "the switch never connected");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The callee's side of TLS: the generated certificate, and a client
/// certificate required, signed by it.
fn tls_server(
    tcp: TcpStream,
    certs: &Path,
) -> rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("cert.pem"))
        .expect("cert.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(certs.join("key.pem")).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(chain[0].clone()).expect("trust it");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let conn = rustls::ServerConnection::new(Arc::new(cfg)).expect("server");
    rustls::StreamOwned::new(conn, tcp)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn missing_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("forkswitch.toml");
    let missing = dir.path().join("nope.pem");
    std::fs::write(
        &file,
        format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]\n[tls]\ncert = {:?}\nkey = {:?}\n",
            missing.to_string_lossy(),
            missing.to_string_lossy()
        ),
    )
    .expect("write");
    for cmd in [&["check-config"][..], &["run", "--config"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_forkswitch"))
            .args(cmd)
            .arg(&file)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        let want = format!("{}:5: tls.cert: cannot read {}", file.display(), missing.display());
        assert!(err.starts_with(&want), "{cmd:?}: {err}");
    }
}
