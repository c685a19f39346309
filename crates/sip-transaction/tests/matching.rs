//! Matching (RFC 3261 17.1.3, 17.2.3 with the RFC 2543 fallback, 9.2 for
//! CANCEL), strays, keys and layer bookkeeping.

mod common;

use common::*;
use sip_message::{HeaderName, Message, Method};
use sip_transaction::{
    ack_for, cancel_for, Config, Error, Event, TransactionLayer, TxKey, TxState,
};
use std::collections::HashSet;
use std::time::Instant;

fn layer() -> TransactionLayer {
    TransactionLayer::new(Config::default(), rand::random()) // each layer a restart: a fresh seed
}

fn answer(req: &Message, code: u16) -> Message {
    Message::response_to(req, code).to_tag("srv").build()
}

fn cancel_target(l: &mut TransactionLayer) -> Option<TxKey> {
    match events(l).as_slice() {
        [Event::Cancel { cancels, .. }] => *cancels,
        other => panic!("expected one Cancel, got {other:?}"),
    }
}

// ----- responses to client transactions ---------------------------------------

#[test]
fn response_matching_no_transaction_is_stray() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKm1");
    l.handle_incoming(t0, response(&inv, 200, Some("x")), udp());
    let ev = events(&mut l);
    assert!(
        matches!(ev.as_slice(), [Event::Stray { message, peer }] if message.status() == Some(200) && *peer == udp())
    );
    assert!(sent(&mut l).is_empty(), "never forwarded or answered");
    assert!(l.is_empty());
}

#[test]
fn response_needs_branch_sent_by_and_method() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKm2");
    l.send_request(t0, inv.clone(), udp()).unwrap();
    // Same branch, other sent-by.
    let other_host = request_with_via(
        Method::Invite,
        "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKm2",
        "call-1@a.example",
    );
    l.handle_incoming(t0, response(&other_host, 180, None), udp());
    // Same branch and sent-by, other method (a CANCEL response).
    l.handle_incoming(t0, response(&cancel_for(&inv), 200, None), udp());
    assert_eq!(names(&mut l), ["stray:180", "stray:200"]);
    // The right one matches.
    l.handle_incoming(t0, response(&inv, 180, None), udp());
    assert_eq!(names(&mut l), ["resp:180"]);
}

#[test]
fn host_case_is_ignored_branch_case_is_not() {
    let (mut l, t0) = (layer(), Instant::now());
    let req =
        request_with_via(Method::Options, "SIP/2.0/UDP Host.Example:5060;branch=z9hG4bKAbC", "c");
    l.send_request(t0, req, udp()).unwrap();
    let lower =
        request_with_via(Method::Options, "SIP/2.0/UDP host.example:5060;branch=z9hG4bKAbC", "c");
    let other_case =
        request_with_via(Method::Options, "SIP/2.0/UDP host.example:5060;branch=z9hG4bKabc", "c");
    l.handle_incoming(t0, response(&lower, 200, None), udp());
    l.handle_incoming(t0, response(&other_case, 200, None), udp());
    assert_eq!(names(&mut l), ["resp:200", "stray:200"]);
}

// ----- requests to server transactions ----------------------------------------

#[test]
fn ack_matching_nothing_is_stray() {
    let (mut l, t0) = (layer(), Instant::now());
    l.handle_incoming(t0, wire(&request(Method::Ack, "z9hG4bKm3")), udp());
    assert_eq!(names(&mut l), ["stray:ACK"]);
    assert!(l.is_empty());
}

#[test]
fn request_without_via_is_stray() {
    let (mut l, t0) = (layer(), Instant::now());
    let m =
        Message::request(Method::Options, "sip:x@y").header(HeaderName::CSeq, "1 OPTIONS").build();
    l.handle_incoming(t0, wire(&m), udp());
    assert_eq!(names(&mut l), ["stray:OPTIONS"]);
    assert!(l.is_empty());
}

#[test]
fn same_branch_other_sent_by_is_another_transaction() {
    let (mut l, t0) = (layer(), Instant::now());
    let a =
        request_with_via(Method::Options, "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKdup", "c1");
    let b =
        request_with_via(Method::Options, "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKdup", "c2");
    l.handle_incoming(t0, wire(&a), udp());
    l.handle_incoming(t0, wire(&b), udp());
    assert_eq!(names(&mut l), ["new", "new"]);
    assert_eq!(l.len(), 2);
}

#[test]
fn duplicated_request_gives_one_new_request() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKm4");
    for i in 0..5 {
        l.handle_incoming(ms(t0, i), wire(&inv), udp());
    }
    assert_eq!(names(&mut l), ["new"]);
    assert_eq!(l.len(), 1);
}

fn rfc2543_flow(via: &str) {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = request_with_via(Method::Invite, via, "old@a.example");
    l.handle_incoming(t0, wire(&inv), udp());
    let k = new_key(&mut l);
    // Retransmission absorbed; after a 180 it is answered with the 180.
    l.handle_incoming(ms(t0, 100), wire(&inv), udp());
    assert!(names(&mut l).is_empty() && sent(&mut l).is_empty());
    l.send_response(ms(t0, 150), k, answer(&inv, 180)).unwrap();
    l.handle_incoming(ms(t0, 600), wire(&inv), udp());
    assert_eq!(sent(&mut l), ["180", "180"]);
    // Another CSeq is another transaction.
    let mut next = inv.clone();
    next.set_header(HeaderName::CSeq, "2 INVITE");
    l.handle_incoming(ms(t0, 700), wire(&next), udp());
    assert_eq!(names(&mut l), ["new"]);
    // The final, then an ACK with another To tag (for someone's 2xx): stray.
    let busy = answer(&inv, 486);
    l.send_response(ms(t0, 800), k, busy.clone()).unwrap();
    assert_eq!(sent(&mut l), ["486"]);
    let mut other_ack = ack_for(&inv, &wire(&busy));
    other_ack.set_header(HeaderName::To, "<sip:bob@b.example>;tag=nope");
    l.handle_incoming(ms(t0, 900), wire(&other_ack), udp());
    assert_eq!(names(&mut l), ["stray:ACK"]);
    assert_eq!(l.state(k), Some(TxState::Completed));
    // The ACK with the response's To tag (no branch, same top Via) is absorbed.
    let ack = ack_for(&inv, &wire(&busy));
    assert_eq!(ack.values(HeaderName::Via).next(), inv.values(HeaderName::Via).next());
    l.handle_incoming(ms(t0, 1000), wire(&ack), udp());
    assert!(names(&mut l).is_empty());
    assert_eq!(l.state(k), Some(TxState::Confirmed));
    // Non-INVITE: retransmission absorbed, final resent.
    let opt = request_with_via(Method::Options, via, "opt@a.example");
    l.handle_incoming(ms(t0, 1100), wire(&opt), udp());
    let ko = new_key(&mut l);
    l.send_response(ms(t0, 1200), ko, answer(&opt, 200)).unwrap();
    l.handle_incoming(ms(t0, 1300), wire(&opt), udp());
    assert_eq!(sent(&mut l), ["200", "200"]);
    assert!(names(&mut l).is_empty());
}

#[test]
fn rfc2543_matching_without_branch() {
    rfc2543_flow("SIP/2.0/UDP 192.0.2.10:5060");
}

#[test]
fn rfc2543_matching_with_branch_lacking_the_cookie() {
    rfc2543_flow("SIP/2.0/UDP 192.0.2.10:5060;branch=1234abcd");
}

#[test]
fn rfc2543_fields_each_matter() {
    let via = "SIP/2.0/UDP 192.0.2.10:5060";
    let base = request_with_via(Method::Options, via, "c@a");
    let mut variants = vec![base.clone()];
    let mut m = base.clone();
    m.set_request_uri("sip:carol@b.example".into());
    variants.push(m);
    let mut m = base.clone();
    m.set_header(HeaderName::From, "<sip:alice@a.example>;tag=f2");
    variants.push(m);
    let mut m = base.clone();
    m.set_header(HeaderName::To, "<sip:bob@b.example>;tag=t2");
    variants.push(m);
    let mut m = base.clone();
    m.set_header(HeaderName::CallId, "d@a");
    variants.push(m);
    let mut m = base.clone();
    m.set_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.10:5062");
    variants.push(m);
    let (mut l, t0) = (layer(), Instant::now());
    for v in &variants {
        l.handle_incoming(t0, wire(v), udp());
    }
    assert_eq!(names(&mut l).len(), variants.len(), "six distinct transactions");
    for v in &variants {
        l.handle_incoming(t0, wire(v), udp());
    }
    assert!(names(&mut l).is_empty(), "and their retransmissions are absorbed");
}

// ----- CANCEL (9.2) -------------------------------------------------------------

#[test]
fn cancel_points_at_the_invite_it_cancels() {
    let (mut l, t0) = (layer(), Instant::now());
    let i1 = invite("z9hG4bKi1");
    let i2 = invite("z9hG4bKi2");
    l.handle_incoming(t0, wire(&i1), udp());
    let _k1 = new_key(&mut l);
    l.handle_incoming(t0, wire(&i2), udp());
    let k2 = new_key(&mut l);
    let c2 = wire(&cancel_for(&i2));
    l.handle_incoming(ms(t0, 10), c2.clone(), udp());
    let ev = events(&mut l);
    let Some(Event::Cancel { key: kc, cancels, request, .. }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(*cancels, Some(k2));
    assert_eq!(request.method(), Some(&Method::Cancel));
    let kc = *kc;
    assert_ne!(kc, k2);
    // The CANCEL is its own non-INVITE transaction: retransmissions absorbed,
    // its 200 resent.
    l.handle_incoming(ms(t0, 20), c2.clone(), udp());
    assert!(names(&mut l).is_empty());
    l.send_response(ms(t0, 30), kc, answer(&c2, 200)).unwrap();
    l.send_response(ms(t0, 31), k2, answer(&i2, 487)).unwrap();
    l.handle_incoming(ms(t0, 40), c2, udp());
    assert_eq!(sent(&mut l), ["200", "487", "200"]);
    // Unknown branch, or same branch from another sent-by: no target (481).
    l.handle_incoming(ms(t0, 50), wire(&cancel_for(&invite("z9hG4bKzz"))), udp());
    assert_eq!(cancel_target(&mut l), None);
    let foreign = request_with_via(
        Method::Invite,
        "SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bKi1",
        "call-1@a.example",
    );
    l.handle_incoming(ms(t0, 60), wire(&cancel_for(&foreign)), udp());
    assert_eq!(cancel_target(&mut l), None);
}

#[test]
fn cancel_matches_an_rfc2543_invite() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = request_with_via(Method::Invite, "SIP/2.0/UDP 192.0.2.10:5060", "old@a");
    l.handle_incoming(t0, wire(&inv), udp());
    let k = new_key(&mut l);
    l.handle_incoming(ms(t0, 5), wire(&cancel_for(&inv)), udp());
    assert_eq!(cancel_target(&mut l), Some(k));
}

#[test]
fn cancel_after_the_invite_ended_has_no_target() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKi3");
    l.handle_incoming(t0, wire(&inv), tcp());
    let k = new_key(&mut l);
    l.send_response(t0, k, answer(&inv, 486)).unwrap();
    l.handle_incoming(t0, wire(&ack_for(&inv, &wire(&answer(&inv, 486)))), tcp());
    assert_eq!(names(&mut l), ["term"]);
    l.handle_incoming(t0, wire(&cancel_for(&inv)), tcp());
    assert_eq!(cancel_target(&mut l), None);
}

// ----- keys and bookkeeping -----------------------------------------------------

#[test]
fn send_response_refusals() {
    let (mut l, t0) = (layer(), Instant::now());
    let inv = invite("z9hG4bKk1");
    let kc = l.send_request(t0, inv.clone(), udp()).unwrap();
    assert_eq!(l.send_response(t0, kc, answer(&inv, 200)), Err(Error::NotAServerTransaction));
    l.handle_incoming(t0, wire(&invite("z9hG4bKk2")), udp());
    let ks = new_key(&mut l);
    l.transport_error(t0, ks);
    events(&mut l);
    assert_eq!(l.send_response(t0, ks, answer(&inv, 200)), Err(Error::UnknownTransaction));
    // The slot is reused with a new key; the old one stays unknown.
    l.handle_incoming(t0, wire(&invite("z9hG4bKk3")), udp());
    let ks2 = new_key(&mut l);
    assert_ne!(ks, ks2);
    assert_eq!(l.state(ks), None);
    assert_eq!(l.state(ks2), Some(TxState::Proceeding));
}

#[test]
fn branches_are_rfc3261_unique_and_token_safe() {
    let mut l = layer();
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let b = l.new_branch();
        assert!(b.starts_with("z9hG4bK"));
        assert_eq!(b.len(), 7 + 22);
        assert!(b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert!(seen.insert(b));
    }
    // Two layers (two restarts) do not share a sequence.
    let mut other = layer();
    assert!(!seen.contains(&other.new_branch()));
}

#[test]
fn cancelled_timers_leave_no_stale_deadline() {
    let (mut l, t0) = (layer(), Instant::now());
    let mut invites = Vec::new();
    for _ in 0..3000 {
        let b = l.new_branch();
        let inv = invite(&b);
        l.send_request(t0, inv.clone(), tcp()).unwrap();
        invites.push(inv);
    }
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)));
    for inv in &invites {
        l.handle_incoming(ms(t0, 1), response(inv, 180, Some("t")), tcp());
    }
    assert_eq!(l.poll_timeout(), None, "every Timer B was cancelled");
    assert_eq!(l.len(), 3000);
    for inv in &invites {
        l.handle_incoming(ms(t0, 2), response(inv, 486, Some("t")), tcp());
    }
    assert!(l.is_empty());
    let ev = events(&mut l);
    assert_eq!(ev.iter().filter(|e| matches!(e, Event::Terminated { .. })).count(), 3000);
}

#[test]
fn state_is_small_and_the_layer_is_send() {
    fn send<T: Send>() {}
    send::<TransactionLayer>();
    send::<Event>();
    let bytes = TransactionLayer::state_bytes_per_transaction();
    eprintln!("state bytes per transaction: {bytes}");
    assert!(bytes <= 1024, "{bytes} bytes per transaction");
}
