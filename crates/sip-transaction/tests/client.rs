//! Client transactions: RFC 3261 figures 5 (INVITE) and 6 (non-INVITE),
//! with the RFC 6026 Accepted state. Virtual time only.

mod common;

use common::*;
use sip_message::{HeaderName, Method};
use sip_transaction::{cancel_for, Config, Error, Event, TransactionLayer, TxState};
use std::time::{Duration, Instant};

fn layer() -> TransactionLayer {
    TransactionLayer::new(Config::default(), 1)
}

fn retrans_times(log: &[(u64, String)], what: &str) -> Vec<u64> {
    log.iter().filter(|(_, s)| s == what).map(|(t, _)| *t).collect()
}

// ----- INVITE client (figure 5) -----------------------------------------------

#[test]
fn invite_udp_timer_a_doubles_then_timer_b_times_out() {
    let (mut l, t0) = (layer(), Instant::now());
    let k = l.send_request(t0, invite("z9hG4bKa1"), udp()).unwrap();
    assert_eq!(sent(&mut l), ["INVITE"]);
    assert_eq!(l.state(k), Some(TxState::Calling));
    assert_eq!(l.poll_timeout(), Some(ms(t0, 500)));
    let log = run_until(&mut l, t0, ms(t0, 40_000));
    assert_eq!(retrans_times(&log, "INVITE"), [500, 1500, 3500, 7500, 15_500, 31_500]);
    assert_eq!(names(&mut l), ["timeout", "term"]);
    assert_eq!(l.len(), 0);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_tcp_never_retransmits_timer_b_still_runs() {
    let (mut l, t0) = (layer(), Instant::now());
    let k = l.send_request(t0, invite("z9hG4bKa2"), tcp()).unwrap();
    assert_eq!(sent(&mut l), ["INVITE"]);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)));
    assert!(run_until(&mut l, t0, ms(t0, 31_999)).is_empty());
    l.handle_timeout(ms(t0, 32_000));
    assert!(sent(&mut l).is_empty());
    assert_eq!(names(&mut l), ["timeout", "term"]);
    assert_eq!(l.state(k), None);
}

#[test]
fn invite_calling_to_proceeding_stops_a_and_b() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa3");
    let k = l.send_request(t0, inv.clone(), udp()).unwrap();
    transmits(&mut l);
    l.handle_timeout(ms(t0, 500));
    assert_eq!(sent(&mut l), ["INVITE"]);
    l.handle_incoming(ms(t0, 600), response(&inv, 100, None), udp());
    assert_eq!(names(&mut l), ["resp:100"]);
    assert_eq!(l.state(k), Some(TxState::Proceeding));
    assert_eq!(l.poll_timeout(), None, "Timer A and B stop in Proceeding");
    l.handle_incoming(ms(t0, 700), response(&inv, 180, Some("t")), udp());
    l.handle_incoming(ms(t0, 800), response(&inv, 183, Some("t")), udp());
    assert_eq!(names(&mut l), ["resp:180", "resp:183"]);
    l.handle_timeout(ms(t0, 100_000));
    assert!(sent(&mut l).is_empty() && names(&mut l).is_empty());
    assert_eq!(l.state(k), Some(TxState::Proceeding));
}

#[test]
fn invite_non2xx_sends_ack_and_waits_timer_d_over_udp() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa4");
    let k = l.send_request(t0, inv.clone(), udp()).unwrap();
    transmits(&mut l);
    l.handle_incoming(ms(t0, 100), response(&inv, 180, Some("t")), udp());
    let busy = response(&inv, 486, Some("t"));
    l.handle_incoming(ms(t0, 200), busy.clone(), udp());
    assert_eq!(names(&mut l), ["resp:180", "resp:486"]);
    let tx = transmits(&mut l);
    assert_eq!(tx.len(), 1);
    let ack = wire(&tx[0].message);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), Some(&b"z9hG4bKa4"[..]));
    assert_eq!(ack.to_tag(), Some(&b"t"[..]));
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(tx[0].peer, udp());
    assert_eq!(l.state(k), Some(TxState::Completed));
    // A retransmitted final: the ACK again, nothing to the TU.
    l.handle_incoming(ms(t0, 700), busy.clone(), udp());
    assert_eq!(sent(&mut l), ["ACK"]);
    assert!(names(&mut l).is_empty());
    // Timer D: 32 s, then Terminated (not a timeout).
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_200)));
    l.handle_timeout(ms(t0, 32_199));
    assert_eq!(l.state(k), Some(TxState::Completed));
    l.handle_timeout(ms(t0, 32_200));
    assert_eq!(names(&mut l), ["term"]);
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_non2xx_over_tcp_timer_d_is_zero() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa5");
    l.send_request(t0, inv.clone(), tcp()).unwrap();
    transmits(&mut l);
    l.handle_incoming(ms(t0, 10), response(&inv, 603, Some("t")), tcp());
    assert_eq!(sent(&mut l), ["ACK"]);
    assert_eq!(names(&mut l), ["resp:603", "term"]);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_2xx_accepted_passes_every_2xx_up_until_timer_m() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa6");
    let k = l.send_request(t0, inv.clone(), udp()).unwrap();
    transmits(&mut l);
    // Straight from Calling to Accepted.
    let ok = response(&inv, 200, Some("t1"));
    l.handle_incoming(ms(t0, 100), ok.clone(), udp());
    assert_eq!(names(&mut l), ["resp:200"]);
    assert!(sent(&mut l).is_empty(), "no ACK for a 2xx from the transaction");
    assert_eq!(l.state(k), Some(TxState::Accepted));
    // Retransmission and a forked 2xx: passed up. Late 1xx and non-2xx: absorbed.
    l.handle_incoming(ms(t0, 600), ok, udp());
    l.handle_incoming(ms(t0, 700), response(&inv, 200, Some("t2")), udp());
    l.handle_incoming(ms(t0, 800), response(&inv, 180, Some("t3")), udp());
    l.handle_incoming(ms(t0, 900), response(&inv, 486, Some("t4")), udp());
    assert_eq!(names(&mut l), ["resp:200", "resp:200"]);
    assert!(sent(&mut l).is_empty());
    // Timer M = 64*T1 after the first 2xx; no retransmissions meanwhile.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_100)));
    l.handle_timeout(ms(t0, 32_100));
    assert_eq!(names(&mut l), ["term"]);
    assert!(sent(&mut l).is_empty());
    // After M, a 2xx is a stray for the TU.
    l.handle_incoming(ms(t0, 33_000), response(&inv, 200, Some("t5")), udp());
    assert_eq!(names(&mut l), ["stray:200"]);
}

#[test]
fn invite_proceeding_to_accepted() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa7");
    let k = l.send_request(t0, inv.clone(), tcp()).unwrap();
    l.handle_incoming(ms(t0, 10), response(&inv, 180, Some("t")), tcp());
    l.handle_incoming(ms(t0, 20), response(&inv, 200, Some("t")), tcp());
    assert_eq!(names(&mut l), ["resp:180", "resp:200"]);
    assert_eq!(l.state(k), Some(TxState::Accepted));
    // Timer M runs over reliable transports too.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_020)));
}

#[test]
fn invite_2xx_after_non2xx_is_stray() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa8");
    l.send_request(t0, inv.clone(), udp()).unwrap();
    l.handle_incoming(ms(t0, 10), response(&inv, 486, Some("a")), udp());
    l.handle_incoming(ms(t0, 20), response(&inv, 200, Some("b")), udp());
    assert_eq!(names(&mut l), ["resp:486", "stray:200"]);
}

#[test]
fn invite_transport_error_terminates() {
    let (mut l, t0) = (layer(), Instant::now());
    let k = l.send_request(t0, invite("z9hG4bKa9"), udp()).unwrap();
    l.transport_error(ms(t0, 1), k);
    assert_eq!(names(&mut l), ["terror", "term"]);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
    // Unknown keys are ignored.
    l.transport_error(ms(t0, 2), k);
    assert!(names(&mut l).is_empty());
}

#[test]
fn completed_transport_error_terminates() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKa10");
    let k = l.send_request(t0, inv.clone(), udp()).unwrap();
    l.handle_incoming(ms(t0, 10), response(&inv, 500, Some("a")), udp());
    l.transport_error(ms(t0, 11), k);
    assert_eq!(names(&mut l), ["resp:500", "terror", "term"]);
}

#[test]
fn cancel_is_its_own_transaction_on_the_same_branch() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKc1");
    let ki = l.send_request(t0, inv.clone(), udp()).unwrap();
    l.handle_incoming(ms(t0, 10), response(&inv, 180, Some("t")), udp());
    let cancel = cancel_for(&inv);
    let kc = l.send_request(ms(t0, 20), cancel.clone(), udp()).unwrap();
    assert_ne!(ki, kc);
    assert_eq!(sent(&mut l), ["INVITE", "CANCEL"]);
    let sent_cancel = &cancel;
    assert_eq!(sent_cancel.top_via().unwrap().branch(), Some(&b"z9hG4bKc1"[..]));
    // 200 (CANCEL) goes to the CANCEL transaction, 487 (INVITE) to the INVITE one.
    l.handle_incoming(ms(t0, 30), response(&cancel, 200, Some("t")), udp());
    l.handle_incoming(ms(t0, 40), response(&inv, 487, Some("t")), udp());
    let ev = events(&mut l);
    let keys: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Response { key, response } => Some((*key, response.status().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(keys, [(ki, 180), (kc, 200), (ki, 487)]);
    assert_eq!(l.state(kc), Some(TxState::Completed));
    assert_eq!(l.state(ki), Some(TxState::Completed));
}

#[test]
fn send_request_refusals() {
    let (mut l, t0) = (layer(), Instant::now());
    l.send_request(t0, invite("z9hG4bKd1"), udp()).unwrap();
    assert_eq!(l.send_request(t0, invite("z9hG4bKd1"), udp()), Err(Error::DuplicateTransaction));
    assert_eq!(
        l.send_request(t0, request(Method::Ack, "z9hG4bKd2"), udp()),
        Err(Error::AckIsNotATransaction)
    );
    assert_eq!(l.send_request(t0, invite("1234"), udp()), Err(Error::NoBranch));
    assert_eq!(l.send_request(t0, invite("z9hG4bK"), udp()), Err(Error::NoBranch));
    let no_via = sip_message::Message::request(Method::Options, "sip:x@y")
        .header(HeaderName::CSeq, "1 OPTIONS")
        .build();
    assert_eq!(l.send_request(t0, no_via, udp()), Err(Error::NoBranch));
    let resp = response(&invite("z9hG4bKd3"), 200, None);
    assert_eq!(l.send_request(t0, resp.clone(), udp()), Err(Error::NotARequest));
    assert_eq!(l.len(), 1);
    assert_eq!(sent(&mut l), ["INVITE"]);
}

// ----- non-INVITE client (figure 6) -------------------------------------------

#[test]
fn non_invite_udp_timer_e_caps_at_t2_then_timer_f() {
    let (mut l, t0) = (layer(), Instant::now());
    let k = l.send_request(t0, request(Method::Options, "z9hG4bKn1"), udp()).unwrap();
    assert_eq!(sent(&mut l), ["OPTIONS"]);
    assert_eq!(l.state(k), Some(TxState::Trying));
    let log = run_until(&mut l, t0, ms(t0, 40_000));
    assert_eq!(
        retrans_times(&log, "OPTIONS"),
        [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert_eq!(names(&mut l), ["timeout", "term"]);
    assert!(l.is_empty());
}

#[test]
fn non_invite_proceeding_retransmits_every_t2_and_still_times_out() {
    let (mut l, t0) = (layer(), Instant::now());
    let req = request(Method::Bye, "z9hG4bKn2");
    let k = l.send_request(t0, req.clone(), udp()).unwrap();
    transmits(&mut l);
    l.handle_timeout(ms(t0, 500));
    assert_eq!(sent(&mut l), ["BYE"]);
    l.handle_incoming(ms(t0, 600), response(&req, 100, None), udp());
    assert_eq!(names(&mut l), ["resp:100"]);
    assert_eq!(l.state(k), Some(TxState::Proceeding));
    let log = run_until(&mut l, t0, ms(t0, 40_000));
    // E was due at 1.5 s; from then on it is T2 (4 s).
    assert_eq!(
        retrans_times(&log, "BYE"),
        [1500, 5500, 9500, 13_500, 17_500, 21_500, 25_500, 29_500]
    );
    assert_eq!(names(&mut l), ["timeout", "term"]);
}

#[test]
fn non_invite_final_completed_absorbs_then_timer_k() {
    let (mut l, t0) = (layer(), Instant::now());
    let req = request(Method::Options, "z9hG4bKn3");
    let k = l.send_request(t0, req.clone(), udp()).unwrap();
    transmits(&mut l);
    l.handle_incoming(ms(t0, 100), response(&req, 180, Some("x")), udp());
    let ok = response(&req, 200, Some("x"));
    l.handle_incoming(ms(t0, 200), ok.clone(), udp());
    assert_eq!(names(&mut l), ["resp:180", "resp:200"]);
    assert_eq!(l.state(k), Some(TxState::Completed));
    l.handle_incoming(ms(t0, 300), ok, udp());
    assert!(names(&mut l).is_empty() && sent(&mut l).is_empty());
    // Timer K = T4 = 5 s; no more retransmissions of the request.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 5200)));
    l.handle_timeout(ms(t0, 5200));
    assert_eq!(names(&mut l), ["term"]);
    assert!(sent(&mut l).is_empty());
}

#[test]
fn non_invite_over_tcp_no_retransmission_timer_k_zero() {
    let (mut l, t0) = (layer(), Instant::now());
    let req = request(Method::Register, "z9hG4bKn4");
    l.send_request(t0, req.clone(), tcp()).unwrap();
    assert_eq!(sent(&mut l), ["REGISTER"]);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)), "only Timer F");
    l.handle_incoming(ms(t0, 50), response(&req, 401, Some("x")), tcp());
    assert_eq!(names(&mut l), ["resp:401", "term"]);
    assert!(l.is_empty());
}

#[test]
fn non_invite_tcp_timer_f() {
    let (mut l, t0) = (layer(), Instant::now());
    l.send_request(t0, request(Method::Options, "z9hG4bKn5"), tcp()).unwrap();
    transmits(&mut l);
    assert!(run_until(&mut l, t0, ms(t0, 40_000)).is_empty());
    assert_eq!(names(&mut l), ["timeout", "term"]);
}

#[test]
fn non_invite_transport_error() {
    let (mut l, t0) = (layer(), Instant::now());
    let k = l.send_request(t0, request(Method::Options, "z9hG4bKn6"), udp()).unwrap();
    l.transport_error(t0, k);
    assert_eq!(names(&mut l), ["terror", "term"]);
}

#[test]
fn custom_timers_are_honoured() {
    let cfg = Config {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(1000),
        trying_delay: Duration::from_millis(50),
    };
    let (mut l, t0) = (TransactionLayer::new(cfg, 1), Instant::now());
    l.send_request(t0, request(Method::Options, "z9hG4bKn7"), udp()).unwrap();
    transmits(&mut l);
    let log = run_until(&mut l, t0, ms(t0, 10_000));
    let times = retrans_times(&log, "OPTIONS");
    assert_eq!(&times[..5], [100, 300, 700, 1100, 1500]);
    assert!(times.iter().all(|&t| t < 6400));
    assert_eq!(names(&mut l), ["timeout", "term"]);
}
