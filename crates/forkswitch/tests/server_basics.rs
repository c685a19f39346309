//! The server answers SIP on UDP and TCP: OPTIONS (raw sockets and SIPp),
//! every RFC 4475 torture message with the right verdict and still alive
//! afterwards, stream framing, keep-alives, config errors, SIGTERM.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn options_over_udp() {
    let server = Server::start();
    let c = udp_client();
    let local = c.local_addr().expect("addr");
    c.send_to(options(local, server.udp, "UDP", "udp-opt-1").as_bytes(), server.udp).expect("send");
    let resp = recv(&c);
    assert_eq!(status_of(&resp), 200);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("Allow: INVITE"), "{text}");
    assert!(text.contains("received=127.0.0.1"), "{text}");
    assert!(text.contains(&format!("rport={}", local.port())), "{text}");
}

#[test]
fn options_over_tcp_and_split_writes() {
    let server = Server::start();
    let mut s = tcp_client(server.tcp);
    let local = s.local_addr().expect("addr");
    let mut pending = Vec::new();
    s.write_all(options(local, server.tcp, "TCP", "tcp-opt-1").as_bytes()).expect("write");
    let resp = read_stream_message(&mut s, &mut pending);
    assert_eq!(status_of(&resp), 200);
    // Same connection: one message in 1..7-byte pieces, paced so that they
    // arrive as separate segments.
    let msg = options(local, server.tcp, "TCP", "tcp-opt-2");
    for chunk in msg.as_bytes().chunks(7) {
        s.write_all(chunk).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(1));
    }
    let resp = read_stream_message(&mut s, &mut pending);
    assert_eq!(status_of(&resp), 200);
    assert_eq!(call_id_of(&resp), "tcp-opt-2");
    // RFC 5626 keep-alive: CRLFCRLF is answered with CRLF.
    s.write_all(b"\r\n\r\n").expect("write");
    let mut pong = [0u8; 2];
    std::io::Read::read_exact(&mut s, &mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
    // Two messages in one write.
    let two = format!(
        "{}{}",
        options(local, server.tcp, "TCP", "tcp-opt-3"),
        options(local, server.tcp, "TCP", "tcp-opt-4")
    );
    s.write_all(two.as_bytes()).expect("write");
    assert_eq!(call_id_of(&read_stream_message(&mut s, &mut pending)), "tcp-opt-3");
    assert_eq!(call_id_of(&read_stream_message(&mut s, &mut pending)), "tcp-opt-4");
}

#[test]
fn tcp_framing_error_closes_connection() {
    let server = Server::start();
    let mut s = tcp_client(server.tcp);
    s.write_all(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection should be closed after a message without Content-Length");
    // The server is still alive for others.
    let c = udp_client();
    let local = c.local_addr().expect("addr");
    c.send_to(options(local, server.udp, "UDP", "alive").as_bytes(), server.udp).expect("send");
    assert_eq!(status_of(&recv(&c)), 200);
}

#[test]
fn sipp_options_udp_and_tcp() {
    let server = Server::start();
    for (transport, addr) in [("u1", server.udp), ("t1", server.tcp)] {
        let args: Vec<String> = [
            "-sf",
            &scenario("options.xml"),
            &addr.to_string(),
            "-m",
            "100",
            "-r",
            "200",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (st, err) = sipp(server.dir.path(), &args, Duration::from_secs(30));
        assert!(st.success(), "sipp over {transport} failed: {st:?} {err}");
    }
}

/// Expected answer of the server to each torture message: a status code,
/// "none" (dropped, or a response: never answered), or "any" (accepted and
/// answered by routing: 200/404/483/481, never a codec rejection).
fn expected(file: &str) -> &'static str {
    match file {
        "intmeth.dat" | "esc02.dat" | "mismatch02.dat" => "501",
        // MESSAGE is valid SIP but this switch does not implement it.
        "mpart01.dat" => "501",
        "badinv01.dat" | "clerr.dat" | "ncl.dat" | "scalar02.dat" | "quotbal.dat"
        | "ltgtruri.dat" | "lwsruri.dat" | "lwsstart.dat" | "trws.dat" | "escruri.dat"
        | "regbadct.dat" | "badaspec.dat" | "baddn.dat" | "mismatch01.dat" | "insuf.dat"
        | "multi01.dat" | "mcl01.dat" => "400",
        "badvers.dat" => "505",
        "unkscm.dat" | "novelsc.dat" => "416",
        "bext01.dat" => "420",
        "zeromf.dat" => "483",
        // responses, and a request with no Via
        "unreason.dat" | "noreason.dat" | "scalarlg.dat" | "bigcode.dat" | "bcast.dat"
        | "test.dat" => "none",
        _ => "any",
    }
}

#[test]
fn rfc4475_over_udp_with_liveness() {
    let server = Server::start();
    let c = udp_client();
    let local = c.local_addr().expect("addr");
    let dir = repo_root().join("tests/data/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50);
    let mut failures = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let raw = std::fs::read(dir.join(f)).expect("read");
        c.send_to(&raw, server.udp).expect("send");
        // The liveness OPTIONS goes right behind it; the server handles one
        // socket in order, so any answer to the torture message comes first.
        let ping_id = format!("live-{i}");
        c.send_to(options(local, server.udp, "UDP", &ping_id).as_bytes(), server.udp)
            .expect("send");
        let first = recv(&c);
        let want = expected(f);
        let got_ping_first = call_id_of(&first) == ping_id;
        match want {
            "none" => {
                if !got_ping_first {
                    failures.push(format!("{f}: expected no answer, got {}", status_of(&first)));
                    let _ = recv(&c);
                }
                continue;
            }
            _ if got_ping_first => {
                failures.push(format!("{f}: expected {want}, got no answer"));
                continue;
            }
            "any" => {
                let st = status_of(&first);
                if [400, 416, 420, 501, 505].contains(&st) {
                    failures.push(format!("{f}: accepted message answered {st}"));
                }
            }
            code => {
                let st = status_of(&first).to_string();
                if st != code {
                    failures.push(format!("{f}: expected {code}, got {st}"));
                }
            }
        }
        let ping = recv(&c);
        assert_eq!(call_id_of(&ping), ping_id, "{f}: liveness OPTIONS not answered");
        assert_eq!(status_of(&ping), 200, "{f}: liveness OPTIONS");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rejection_says_what_was_wrong() {
    let server = Server::start();
    let c = udp_client();
    let raw = std::fs::read(repo_root().join("tests/data/rfc4475/mismatch01.dat")).expect("read");
    c.send_to(&raw, server.udp).expect("send");
    let resp = String::from_utf8_lossy(&recv(&c)).into_owned();
    assert!(resp.starts_with("SIP/2.0 400 Bad Request (CSeq method"), "{resp}");
    assert!(resp.contains("Warning: 399 forkswitch"), "{resp}");
}

#[test]
fn sigterm_exits_zero() {
    let server = Server::start();
    let st = server.terminate();
    assert!(st.success(), "{st:?}");
}

#[test]
fn bad_config_names_file_line_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[sip]\nudp = [\"127.0.0.1:5060\"]\n\n[timers]\nt1_ms = \"fast\"\n")
        .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_forkswitch"))
        .arg("check-config")
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_forkswitch"))
        .arg("check-config")
        .arg(repo_root().join("config/forkswitch.toml"))
        .output()
        .expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}
