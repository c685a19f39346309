//! Helpers shared by the integration tests: peers, request builders, a
//! "wire" that serialises and re-parses, and output draining.
#![allow(dead_code)]

use sip_message::{HeaderName, Message, Method, Peer, Transport};
use sip_transaction::{Event, TransactionLayer, Transmit};
use std::time::{Duration, Instant};

pub fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        remote: "192.0.2.10:5060".parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        conn: None,
    }
}

pub fn udp() -> Peer {
    peer(Transport::Udp)
}

pub fn tcp() -> Peer {
    peer(Transport::Tcp)
}

pub fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// Serialises and parses again, as the transport and the far end would.
pub fn wire(m: &Message) -> Message {
    Message::parse(m.to_bytes()).expect("re-parse")
}

/// A request as a UA would build it; `via` is the whole top Via value.
pub fn request_with_via(method: Method, via: &str, call_id: &str) -> Message {
    let name = String::from_utf8_lossy(method.as_bytes()).into_owned();
    Message::request(method, "sip:bob@b.example")
        .header(HeaderName::Via, via.to_owned())
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, "<sip:alice@a.example>;tag=f1")
        .header(HeaderName::To, "<sip:bob@b.example>")
        .header(HeaderName::CallId, call_id.to_owned())
        .header(HeaderName::CSeq, format!("1 {name}"))
        .header(HeaderName::Contact, "<sip:alice@192.0.2.10>")
        .build()
}

pub fn request(method: Method, branch: &str) -> Message {
    request_with_via(
        method,
        &format!("SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"),
        "call-1@a.example",
    )
}

pub fn invite(branch: &str) -> Message {
    request(Method::Invite, branch)
}

/// A response to `req` as the far end sends it (parsed off the wire).
pub fn response(req: &Message, code: u16, tag: Option<&str>) -> Message {
    let b = Message::response_to(req, code);
    let b = match tag {
        Some(t) => b.to_tag(t),
        None => b,
    };
    wire(&b.build())
}

pub fn transmits(l: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

pub fn events(l: &mut TransactionLayer) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// Status codes (or method names) of the messages sent.
pub fn sent(l: &mut TransactionLayer) -> Vec<String> {
    transmits(l).iter().map(|t| describe(&t.message)).collect()
}

pub fn describe(m: &Message) -> String {
    match m.status() {
        Some(c) => c.to_string(),
        None => m.method().map(|m| m.to_string()).unwrap_or_default(),
    }
}

/// A short name per event: `new`, `cancel`, `resp:180`, `stray:ACK`,
/// `timeout`, `terror`, `term`.
pub fn names(l: &mut TransactionLayer) -> Vec<String> {
    events(l)
        .iter()
        .map(|e| match e {
            Event::NewRequest { .. } => "new".to_owned(),
            Event::Cancel { .. } => "cancel".to_owned(),
            Event::Response { response, .. } => format!("resp:{}", describe(response)),
            Event::Stray { message, .. } => format!("stray:{}", describe(message)),
            Event::Timeout { .. } => "timeout".to_owned(),
            Event::TransportError { .. } => "terror".to_owned(),
            Event::Terminated { .. } => "term".to_owned(),
        })
        .collect()
}

/// Runs every timer up to `until`, deadline by deadline; returns the
/// times (ms after `t0`) at which something was sent, and the sent items.
pub fn run_until(l: &mut TransactionLayer, t0: Instant, until: Instant) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while let Some(t) = l.poll_timeout() {
        if t > until {
            break;
        }
        l.handle_timeout(t);
        for s in sent(l) {
            out.push(((t - t0).as_millis() as u64, s));
        }
    }
    out
}

/// The key of the single new server transaction among the events.
pub fn new_key(l: &mut TransactionLayer) -> sip_transaction::TxKey {
    let ev = events(l);
    match ev.as_slice() {
        [Event::NewRequest { key, .. }] => *key,
        other => panic!("expected one NewRequest, got {other:?}"),
    }
}
