//! Connection benchmark client (`tests/bench/conns.sh` runs it): opens N
//! TLS or WSS connections to a forkswitch, registers one extension over
//! each with digest auth (REGISTER, 401, REGISTER with Authorization, 200),
//! and keeps them all open until told to stop, so that the server's memory
//! per held connection can be read off. Prints one line when all are
//! registered:
//!
//! `conns=N registered=R failed=F seconds=S register_per_sec=X`
//!
//! (a registration is the whole digest exchange, two REGISTERs), then waits
//! for a line on stdin before closing everything.
//!
//! ```sh
//! register_conns --transport tls --server 127.0.0.1:5061 --ca cert.pem \
//!     --conns 10000 --user-prefix b --password-prefix pw
//! ```

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use sip_message::digest::{self, Algorithm, QopAuth, RequestDigest};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    transport: String,
    server: SocketAddr,
    ca: String,
    conns: usize,
    user_prefix: String,
    password_prefix: String,
    /// Handshakes in flight at once.
    parallel: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        transport: "tls".into(),
        server: "127.0.0.1:5061".parse().map_err(|e| format!("{e}"))?,
        ca: "cert.pem".into(),
        conns: 1000,
        user_prefix: "b".into(),
        password_prefix: "pw".into(),
        parallel: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--transport" => a.transport = v,
            "--server" => a.server = v.parse().map_err(|e| format!("--server: {e}"))?,
            "--ca" => a.ca = v,
            "--conns" => a.conns = v.parse().map_err(|e| format!("--conns: {e}"))?,
            "--user-prefix" => a.user_prefix = v,
            "--password-prefix" => a.password_prefix = v,
            "--parallel" => a.parallel = v.parse().map_err(|e| format!("--parallel: {e}"))?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if !matches!(a.transport.as_str(), "tls" | "wss") {
        return Err("--transport is tls or wss".into());
    }
    Ok(a)
}

/// `name="value"` or `name=value` from a challenge.
fn param(header: &str, name: &str) -> Option<String> {
    let at = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[at..];
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next().map(str::to_owned)
    } else {
        rest.split([',', ' ', '\r']).next().map(str::to_owned)
    }
}

/// One SIP message stream: TLS (framed by Content-Length) or WSS (one
/// message per WebSocket message).
enum Conn {
    Tls(Box<BufReader<tokio_rustls::client::TlsStream<TcpStream>>>),
    Wss(Box<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Conn {
    async fn send(&mut self, msg: String) -> Result<(), String> {
        match self {
            Conn::Tls(s) => s.get_mut().write_all(msg.as_bytes()).await.map_err(|e| e.to_string()),
            Conn::Wss(ws) => {
                use futures_util::SinkExt;
                ws.send(Message::text(msg)).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn recv(&mut self) -> Result<String, String> {
        match self {
            Conn::Tls(s) => read_framed(s.as_mut()).await,
            Conn::Wss(ws) => {
                use futures_util::StreamExt;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                        Some(Ok(Message::Binary(b))) => {
                            return Ok(String::from_utf8_lossy(&b).into_owned())
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("closed".into()),
                    }
                }
            }
        }
    }
}

async fn read_framed<S: AsyncRead + Unpin>(s: &mut BufReader<S>) -> Result<String, String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = s.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        if line == "\r\n" && head.is_empty() {
            continue; // keep-alive pong
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (k.eq_ignore_ascii_case("content-length") || k == "l").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0usize);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(head + &String::from_utf8_lossy(&body))
}

async fn connect(
    args: &Args,
    tls: &tokio_rustls::TlsConnector,
) -> Result<(Conn, SocketAddr), String> {
    let tcp = TcpStream::connect(args.server).await.map_err(|e| e.to_string())?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(args.server.ip().into());
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    if args.transport == "tls" {
        return Ok((Conn::Tls(Box::new(BufReader::new(stream))), local));
    }
    let mut req =
        format!("wss://{}/", args.server).into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().map_err(|_| "header")?);
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await.map_err(|e| e.to_string())?;
    Ok((Conn::Wss(Box::new(ws)), local))
}

fn register(args: &Args, i: usize, local: SocketAddr, cseq: u32, auth: &str) -> String {
    let user = format!("{}{i:06}", args.user_prefix);
    let (via, contact) = if args.transport == "tls" {
        (format!("SIP/2.0/TLS {local}"), format!("<sip:{user}@{local};transport=tls>"))
    } else {
        let host = format!("c{i}.invalid");
        (format!("SIP/2.0/WSS {host}"), format!("<sip:{user}@{host};transport=ws>;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-{i:012}>\";reg-id=1"))
    };
    format!(
        "REGISTER sip:test SIP/2.0\r\nVia: {via};branch=z9hG4bKc{i}x{cseq}\r\nMax-Forwards: 70\r\n\
         From: <sip:{user}@test>;tag=t{i}\r\nTo: <sip:{user}@test>\r\nCall-ID: conns-{i}@bench\r\n\
         CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

fn status(resp: &str) -> u16 {
    resp.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The digest exchange on `conn`; `Ok` once the 200 came.
async fn register_on(
    args: &Args,
    i: usize,
    conn: &mut Conn,
    local: SocketAddr,
) -> Result<(), String> {
    conn.send(register(args, i, local, 1, "")).await?;
    let challenge = conn.recv().await?;
    if status(&challenge) != 401 {
        return Err(format!("wanted 401, got {}", status(&challenge)));
    }
    let www = challenge
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .ok_or("no challenge")?;
    let realm = param(www, "realm").ok_or("no realm")?;
    let nonce = param(www, "nonce").ok_or("no nonce")?;
    let user = format!("{}{i:06}", args.user_prefix);
    let pw = format!("{}{i:06}", args.password_prefix);
    let cnonce = format!("{i:08x}");
    let with_qop = www.contains("qop");
    let response = RequestDigest {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        qop: with_qop.then_some(QopAuth {
            nc: b"00000001",
            cnonce: cnonce.as_bytes(),
            qop: b"auth",
        }),
        method: b"REGISTER",
        uri: b"sip:test",
    }
    .hex(&digest::ha1(Algorithm::Md5, &user, &realm, &pw));
    let qop = match with_qop {
        true => format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""),
        false => String::new(),
    };
    let opaque = param(www, "opaque").map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default();
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"sip:test\", response=\"{response}\", algorithm=MD5{qop}{opaque}\r\n"
    );
    conn.send(register(args, i, local, 2, &auth)).await?;
    let ok = conn.recv().await?;
    match status(&ok) {
        200 => Ok(()),
        s => Err(format!("wanted 200, got {s}")),
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("register_conns: {e}");
            std::process::exit(2);
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(&args.ca).and_then(|c| c.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(certs) => {
            for c in certs {
                if let Err(e) = roots.add(c) {
                    eprintln!("register_conns: {}: {e}", args.ca);
                    std::process::exit(2);
                }
            }
        }
        Err(e) => {
            eprintln!("register_conns: {}: {e}", args.ca);
            std::process::exit(2);
        }
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let (registered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(args.conns.max(1));
    let stop = Arc::new(tokio::sync::Notify::new());
    let t0 = Instant::now();
    for i in 0..args.conns {
        let (args, tls, gate) = (args.clone(), tls.clone(), gate.clone());
        let (registered, failed, done, stop) =
            (registered.clone(), failed.clone(), done_tx.clone(), stop.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let result = async {
                let (mut conn, local) = connect(&args, &tls).await?;
                tokio::time::timeout(
                    Duration::from_secs(30),
                    register_on(&args, i, &mut conn, local),
                )
                .await
                .map_err(|_| "timeout".to_string())??;
                Ok::<Conn, String>(conn)
            }
            .await;
            drop(permit);
            match result {
                Ok(conn) => {
                    registered.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(()).await;
                    stop.notified().await;
                    drop(conn);
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("register_conns: connection {i}: {e}");
                    }
                    let _ = done.send(()).await;
                }
            }
        });
    }
    drop(done_tx);
    for _ in 0..args.conns {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let ok = registered.load(Ordering::Relaxed);
    println!(
        "conns={} registered={ok} failed={} seconds={secs:.2} register_per_sec={:.0}",
        args.conns,
        failed.load(Ordering::Relaxed),
        ok as f64 / secs
    );
    // Hold every connection until a line (or EOF) on stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
    stop.notify_waiters();
}
