//! Server transactions: RFC 3261 figures 7 (INVITE) and 8 (non-INVITE),
//! with the RFC 6026 Accepted state and the RFC 4320 rules. Virtual time.

mod common;

use common::*;
use sip_message::{Message, Method};
use sip_transaction::{Config, Error, TransactionLayer, TxKey, TxState};
use std::time::{Duration, Instant};

fn layer() -> TransactionLayer {
    TransactionLayer::new(Config::default(), 1)
}

fn answer(req: &Message, code: u16) -> Message {
    Message::response_to(req, code).to_tag("srv").build()
}

/// A layer holding one new server transaction for `req` received at `t0`.
fn received(req: &Message, peer: sip_message::Peer) -> (TransactionLayer, Instant, TxKey) {
    let (mut l, t0) = (layer(), Instant::now());
    l.handle_incoming(t0, wire(req), peer);
    let k = new_key(&mut l);
    (l, t0, k)
}

/// The ACK a client sends for a non-2xx: same branch as the INVITE.
fn ack_of(inv: &Message, resp: &Message) -> Message {
    wire(&sip_transaction::ack_for(inv, resp))
}

// ----- INVITE server (figure 7) ---------------------------------------------

#[test]
fn invite_100_trying_after_200ms_when_tu_is_silent() {
    let inv = invite("z9hG4bKs1");
    let (mut l, t0, k) = received(&inv, udp());
    assert_eq!(l.state(k), Some(TxState::Proceeding));
    assert!(sent(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(ms(t0, 200)));
    l.handle_timeout(ms(t0, 199));
    assert!(sent(&mut l).is_empty());
    l.handle_timeout(ms(t0, 200));
    let tx = transmits(&mut l);
    assert_eq!(tx.len(), 1);
    let trying = wire(&tx[0].message);
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.top_via().unwrap().branch(), Some(&b"z9hG4bKs1"[..]));
    assert_eq!(tx[0].peer, udp());
    // A retransmitted INVITE gets the 100 again.
    l.handle_incoming(ms(t0, 500), wire(&inv), udp());
    assert_eq!(sent(&mut l), ["100"]);
    assert!(names(&mut l).is_empty(), "retransmission absorbed");
    assert_eq!(l.poll_timeout(), None, "Proceeding has no timer");
}

#[test]
fn no_100_when_the_tu_answers_first() {
    let inv = invite("z9hG4bKs2");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(ms(t0, 50), k, answer(&inv, 180)).unwrap();
    assert_eq!(sent(&mut l), ["180"]);
    assert_eq!(l.poll_timeout(), None);
    l.handle_timeout(ms(t0, 1000));
    assert!(sent(&mut l).is_empty());
    let (mut l, t0, k) = received(&inv, tcp());
    l.send_response(ms(t0, 150), k, answer(&inv, 486)).unwrap();
    l.handle_timeout(ms(t0, 250));
    assert_eq!(sent(&mut l), ["486"]);
}

#[test]
fn invite_retransmission_in_proceeding_resends_the_last_provisional() {
    let inv = invite("z9hG4bKs3");
    let (mut l, t0, k) = received(&inv, udp());
    // Nothing sent yet: absorbed silently.
    l.handle_incoming(ms(t0, 100), wire(&inv), udp());
    assert!(sent(&mut l).is_empty() && names(&mut l).is_empty());
    l.send_response(ms(t0, 110), k, answer(&inv, 180)).unwrap();
    l.send_response(ms(t0, 120), k, answer(&inv, 183)).unwrap();
    assert_eq!(sent(&mut l), ["180", "183"]);
    l.handle_incoming(ms(t0, 600), wire(&inv), udp());
    assert_eq!(sent(&mut l), ["183"]);
    assert!(names(&mut l).is_empty());
}

#[test]
fn invite_non2xx_timer_g_caps_at_t2_then_timer_h_times_out() {
    let inv = invite("z9hG4bKs4");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 486)).unwrap();
    assert_eq!(sent(&mut l), ["486"]);
    assert_eq!(l.state(k), Some(TxState::Completed));
    let log = run_until(&mut l, t0, ms(t0, 40_000));
    let times: Vec<u64> = log.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]);
    assert!(log.iter().all(|(_, s)| s == "486"));
    assert_eq!(names(&mut l), ["timeout", "term"]);
    assert!(l.is_empty());
}

#[test]
fn invite_retransmission_in_completed_resends_the_final() {
    let inv = invite("z9hG4bKs5");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 180)).unwrap();
    l.send_response(ms(t0, 10), k, answer(&inv, 404)).unwrap();
    transmits(&mut l);
    l.handle_incoming(ms(t0, 20), wire(&inv), udp());
    assert_eq!(sent(&mut l), ["404"]);
    assert!(names(&mut l).is_empty());
}

#[test]
fn ack_for_non2xx_is_absorbed_confirmed_then_timer_i() {
    let inv = invite("z9hG4bKs6");
    let (mut l, t0, k) = received(&inv, udp());
    let busy = answer(&inv, 486);
    l.send_response(t0, k, busy.clone()).unwrap();
    transmits(&mut l);
    l.handle_timeout(ms(t0, 500));
    assert_eq!(sent(&mut l), ["486"]);
    let ack = ack_of(&inv, &wire(&busy));
    l.handle_incoming(ms(t0, 600), ack.clone(), udp());
    assert!(names(&mut l).is_empty(), "ACK absorbed");
    assert_eq!(l.state(k), Some(TxState::Confirmed));
    // G stopped; ACK and INVITE retransmissions absorbed in Confirmed.
    l.handle_incoming(ms(t0, 700), ack, udp());
    l.handle_incoming(ms(t0, 800), wire(&inv), udp());
    assert!(names(&mut l).is_empty() && sent(&mut l).is_empty());
    // Timer I = T4 after the ACK.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 5600)));
    l.handle_timeout(ms(t0, 5600));
    assert!(sent(&mut l).is_empty());
    assert_eq!(names(&mut l), ["term"]);
}

#[test]
fn invite_over_tcp_no_timer_g_and_timer_i_zero() {
    let inv = invite("z9hG4bKs7");
    let (mut l, t0, k) = received(&inv, tcp());
    let busy = answer(&inv, 486);
    l.send_response(t0, k, busy.clone()).unwrap();
    assert_eq!(sent(&mut l), ["486"]);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)), "only Timer H");
    l.handle_incoming(ms(t0, 10), ack_of(&inv, &wire(&busy)), tcp());
    assert_eq!(names(&mut l), ["term"]);
    assert!(l.is_empty());
}

#[test]
fn timer_h_over_tcp_when_no_ack_arrives() {
    let inv = invite("z9hG4bKs8");
    let (mut l, t0, k) = received(&inv, tcp());
    l.send_response(t0, k, answer(&inv, 500)).unwrap();
    transmits(&mut l);
    assert!(run_until(&mut l, t0, ms(t0, 40_000)).is_empty());
    assert_eq!(names(&mut l), ["timeout", "term"]);
}

#[test]
fn invite_2xx_accepted_then_timer_l() {
    let inv = invite("z9hG4bKs9");
    let (mut l, t0, k) = received(&inv, udp());
    let ok = answer(&inv, 200);
    l.send_response(ms(t0, 10), k, ok.clone()).unwrap();
    assert_eq!(sent(&mut l), ["200"]);
    assert_eq!(l.state(k), Some(TxState::Accepted));
    // The layer does not retransmit the 2xx itself; the TU's retransmissions pass.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_010)), "only Timer L");
    l.send_response(ms(t0, 510), k, ok.clone()).unwrap();
    assert_eq!(sent(&mut l), ["200"]);
    // INVITE retransmissions are absorbed in Accepted.
    l.handle_incoming(ms(t0, 520), wire(&inv), udp());
    assert!(sent(&mut l).is_empty() && names(&mut l).is_empty());
    // The ACK for the 2xx (a new branch) is the TU's: a stray.
    let mut ack2xx = sip_transaction::ack_for(&inv, &wire(&ok));
    ack2xx.replace_top_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKother".into());
    l.handle_incoming(ms(t0, 530), wire(&ack2xx), udp());
    assert_eq!(names(&mut l), ["stray:ACK"]);
    // Even one on the INVITE's branch is handed up in Accepted (RFC 6026).
    l.handle_incoming(ms(t0, 540), ack_of(&inv, &wire(&ok)), udp());
    assert_eq!(names(&mut l), ["stray:ACK"]);
    // A non-2xx after a 2xx is refused.
    assert_eq!(
        l.send_response(ms(t0, 550), k, answer(&inv, 486)),
        Err(Error::InvalidState(TxState::Accepted))
    );
    l.handle_timeout(ms(t0, 32_010));
    assert_eq!(names(&mut l), ["term"]);
    assert_eq!(l.send_response(ms(t0, 33_000), k, ok), Err(Error::UnknownTransaction));
}

#[test]
fn invite_transport_errors() {
    let inv = invite("z9hG4bKs10");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 180)).unwrap();
    l.transport_error(t0, k);
    assert_eq!(names(&mut l), ["terror", "term"]);
    assert!(l.is_empty());
    // In Accepted the transaction lives on to absorb retransmissions.
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 200)).unwrap();
    l.transport_error(t0, k);
    assert_eq!(names(&mut l), ["terror"]);
    assert_eq!(l.state(k), Some(TxState::Accepted));
    // In Completed it ends.
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 503)).unwrap();
    l.transport_error(t0, k);
    assert_eq!(names(&mut l), ["terror", "term"]);
}

#[test]
fn invite_second_final_is_refused() {
    let inv = invite("z9hG4bKs11");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 486)).unwrap();
    assert_eq!(
        l.send_response(t0, k, answer(&inv, 200)),
        Err(Error::InvalidState(TxState::Completed))
    );
    assert_eq!(
        l.send_response(t0, k, answer(&inv, 180)),
        Err(Error::InvalidState(TxState::Completed))
    );
    assert_eq!(l.send_response(t0, k, inv.clone()), Err(Error::NotAResponse));
    assert_eq!(sent(&mut l), ["486"]);
}

// ----- non-INVITE server (figure 8) -----------------------------------------

#[test]
fn non_invite_trying_absorbs_retransmissions() {
    let req = request(Method::Options, "z9hG4bKt1");
    let (mut l, t0, k) = received(&req, udp());
    assert_eq!(l.state(k), Some(TxState::Trying));
    l.handle_incoming(ms(t0, 500), wire(&req), udp());
    l.handle_incoming(ms(t0, 1500), wire(&req), udp());
    assert!(sent(&mut l).is_empty() && names(&mut l).is_empty());
}

#[test]
fn non_invite_no_100_before_timer_e_reaches_t2_then_one_100() {
    let req = request(Method::Bye, "z9hG4bKt2");
    let (mut l, t0, k) = received(&req, udp());
    // RFC 4320 4.1: a client's Timer E reaches T2 after 0.5 + 1 + 2 s.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 3500)));
    // A TU's 100 before that over UDP is not sent.
    l.send_response(ms(t0, 1000), k, answer(&req, 100)).unwrap();
    l.handle_timeout(ms(t0, 3499));
    assert!(sent(&mut l).is_empty());
    assert_eq!(l.state(k), Some(TxState::Trying));
    // Then, without an answer, the layer sends 100 once.
    l.handle_timeout(ms(t0, 3500));
    assert_eq!(sent(&mut l), ["100"]);
    assert_eq!(l.state(k), Some(TxState::Proceeding));
    l.handle_incoming(ms(t0, 4500), wire(&req), udp());
    assert_eq!(sent(&mut l), ["100"], "Proceeding resends the last provisional");
    l.send_response(ms(t0, 5000), k, answer(&req, 200)).unwrap();
    assert_eq!(sent(&mut l), ["200"]);
    assert_eq!(l.state(k), Some(TxState::Completed));
    l.handle_incoming(ms(t0, 5500), wire(&req), udp());
    assert_eq!(sent(&mut l), ["200"], "Completed resends the final");
    assert!(names(&mut l).is_empty());
    // Timer J = 64*T1 after the final.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 37_000)));
    l.handle_timeout(ms(t0, 37_000));
    assert_eq!(names(&mut l), ["term"]);
    assert!(sent(&mut l).is_empty());
}

#[test]
fn non_invite_100_delay_follows_t1_and_t2() {
    // T1 = 100 ms, T2 = 1 s: E intervals 100, 200, 400, then 800 < 1 s, so
    // E reaches T2 after 1.5 s.
    let cfg =
        Config { t1: Duration::from_millis(100), t2: Duration::from_secs(1), ..Config::default() };
    let (mut l, t0) = (TransactionLayer::new(cfg, 1), Instant::now());
    l.handle_incoming(t0, wire(&request(Method::Options, "z9hG4bKt9")), udp());
    new_key(&mut l);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 1500)));
}

#[test]
fn non_invite_final_before_t2_means_no_100_ever() {
    let req = request(Method::Options, "z9hG4bKt3");
    let (mut l, t0, k) = received(&req, udp());
    l.send_response(ms(t0, 3000), k, answer(&req, 200)).unwrap();
    assert_eq!(sent(&mut l), ["200"]);
    let log = run_until(&mut l, t0, ms(t0, 60_000));
    assert!(log.is_empty());
    assert_eq!(names(&mut l), ["term"]);
}

#[test]
fn non_invite_over_tcp_timer_j_zero_and_early_100_allowed() {
    let req = request(Method::Register, "z9hG4bKt4");
    let (mut l, t0, k) = received(&req, tcp());
    l.send_response(ms(t0, 10), k, answer(&req, 100)).unwrap();
    assert_eq!(sent(&mut l), ["100"]);
    assert_eq!(l.state(k), Some(TxState::Proceeding));
    l.send_response(ms(t0, 20), k, answer(&req, 200)).unwrap();
    assert_eq!(sent(&mut l), ["200"]);
    assert_eq!(names(&mut l), ["term"]);
    assert!(l.is_empty());
}

#[test]
fn non_invite_gets_no_provisional_but_100() {
    let req = request(Method::Message, "z9hG4bKt5");
    let (mut l, t0, k) = received(&req, udp());
    assert_eq!(l.send_response(ms(t0, 10), k, answer(&req, 182)), Err(Error::NonInviteProvisional));
    assert!(sent(&mut l).is_empty());
    assert_eq!(l.state(k), Some(TxState::Trying));
}

#[test]
fn never_408_to_a_non_invite() {
    let req = request(Method::Options, "z9hG4bKt6");
    let (mut l, t0, k) = received(&req, udp());
    assert_eq!(l.send_response(t0, k, answer(&req, 408)), Err(Error::Forbidden408));
    assert!(sent(&mut l).is_empty());
    // 408 to an INVITE is fine.
    let inv = invite("z9hG4bKt7");
    let (mut l, t0, k) = received(&inv, udp());
    l.send_response(t0, k, answer(&inv, 408)).unwrap();
    assert_eq!(sent(&mut l), ["408"]);
}

#[test]
fn non_invite_second_final_refused_and_transport_error() {
    let req = request(Method::Options, "z9hG4bKt8");
    let (mut l, t0, k) = received(&req, udp());
    l.send_response(t0, k, answer(&req, 200)).unwrap();
    assert_eq!(
        l.send_response(t0, k, answer(&req, 500)),
        Err(Error::InvalidState(TxState::Completed))
    );
    l.transport_error(t0, k);
    assert_eq!(names(&mut l), ["terror", "term"]);
}
