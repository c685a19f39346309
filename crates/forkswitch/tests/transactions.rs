//! The server's transaction layer on real loopback UDP: retransmitted
//! requests get the same response from the transaction; a final response to
//! an INVITE is retransmitted on the RFC 3261 Timer G schedule until the ACK,
//! measured on the wire.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn invite(local: std::net::SocketAddr, server: std::net::SocketAddr, branch: &str) -> String {
    format!(
        "INVITE sip:nobody@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=a1\r\nTo: <sip:nobody@{server}>\r\nCall-ID: {branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:t@{local}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn ack(
    local: std::net::SocketAddr,
    server: std::net::SocketAddr,
    branch: &str,
    to_tag: &str,
) -> String {
    format!(
        "ACK sip:nobody@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=a1\r\nTo: <sip:nobody@{server}>;tag={to_tag}\r\nCall-ID: {branch}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

fn to_tag(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    let to = text.split("\r\n").find(|l| l.starts_with("To:")).expect("To");
    to.split("tag=").nth(1).expect("tag").trim().to_owned()
}

#[test]
fn retransmitted_options_gets_the_same_response() {
    let server = Server::start();
    let c = udp_client();
    let local = c.local_addr().expect("addr");
    let req = options(local, server.udp, "UDP", "same-branch-1");
    c.send_to(req.as_bytes(), server.udp).expect("send");
    let first = recv(&c);
    c.send_to(req.as_bytes(), server.udp).expect("send");
    let second = recv(&c);
    assert_eq!(status_of(&first), 200);
    assert_eq!(first, second, "the transaction resends its response byte for byte");
    // A new transaction (new branch) gets a new response with a new To tag.
    let req2 = options(local, server.udp, "UDP", "same-branch-2");
    c.send_to(req2.as_bytes(), server.udp).expect("send");
    let third = recv(&c);
    assert_ne!(to_tag(&first), to_tag(&third));
}

#[test]
fn final_response_retransmitted_on_timer_g_until_ack() {
    // T1 = 100 ms, T2 = 400 ms: Timer G fires at 100, 200, 400, 400... ms
    // intervals; Timer H would end it at 64*T1 = 6.4 s.
    let server = Server::start_with("[timers]\nt1_ms = 100\nt2_ms = 400\n");
    let c = udp_client();
    let local = c.local_addr().expect("addr");
    let branch = "z9hG4bKtimerg1";
    c.send_to(invite(local, server.udp, branch).as_bytes(), server.udp).expect("send");
    let first = recv(&c);
    let t0 = Instant::now();
    assert!(status_of(&first) >= 400, "a final error response");
    let mut arrivals = Vec::new();
    for _ in 0..5 {
        let again = recv(&c);
        assert_eq!(again, first, "retransmission is identical");
        arrivals.push(t0.elapsed());
    }
    let expected_ms = [100u64, 300, 700, 1100, 1500];
    for (got, want) in arrivals.iter().zip(expected_ms) {
        let got_ms = got.as_millis() as i64;
        assert!(
            (got_ms - want as i64).abs() <= 80,
            "retransmission at {got_ms} ms, expected {want} ms (all: {arrivals:?})"
        );
    }
    // The ACK stops them: nothing more within three Timer G intervals.
    c.send_to(ack(local, server.udp, branch, &to_tag(&first)).as_bytes(), server.udp)
        .expect("send");
    c.set_read_timeout(Some(Duration::from_millis(1300))).expect("timeout");
    let mut buf = [0u8; 4096];
    // One retransmission may already be in flight when the ACK lands.
    let mut late = 0;
    while let Ok((n, _)) = c.recv_from(&mut buf) {
        assert_eq!(&buf[..n], &first[..]);
        late += 1;
        assert!(late <= 1, "retransmissions continued after the ACK");
    }
}
