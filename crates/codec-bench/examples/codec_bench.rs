//! Codec throughput on one core: forkswitch's sip-message against rsip 0.4.
//!
//! `cargo run --release -p codec-bench --example codec_bench`
//!
//! For a typical 700-byte INVITE with SDP it measures
//! - parse: bytes -> message;
//! - typed: parse, then read Via (branch), From (tag), To, Call-ID, CSeq and
//!   Contact, as a B2BUA does for every request;
//! - serialise: writing a message whose headers are not the received bytes
//!   (after an edit, as for a relayed or newly built message), so it cannot
//!   take the zero-copy path. Unmodified messages serialise as a slice of the
//!   received buffer and are not measured here.
//!
//! The last line is `invite_parse_per_sec=N typed_headers_per_sec=M serialise_per_sec=K`.

use bytes::{Bytes, BytesMut};
use sip_message::Message;
use std::hint::black_box;
use std::time::{Duration, Instant};

const INVITE: &[u8] = b"INVITE sip:test11@test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:test11@test>\r\n\
From: \"Alice Carrier\" <sip:+15551234567@carrier.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.carrier.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15551234567@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n\
Supported: 100rel, timer\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 250\r\n\
\r\n\
v=0\r\n\
o=- 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// Runs `f` repeatedly for about `dur` and returns operations per second.
fn rate(dur: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up.
    for _ in 0..10_000 {
        f();
    }
    let mut n: u64 = 0;
    let start = Instant::now();
    loop {
        for _ in 0..10_000 {
            f();
        }
        n += 10_000;
        let el = start.elapsed();
        if el >= dur {
            return n as f64 / el.as_secs_f64();
        }
    }
}

fn ours(dur: Duration) -> (f64, f64, f64) {
    let buf = Bytes::from_static(INVITE);
    let parse = rate(dur, || {
        let m = Message::parse(black_box(buf.clone())).expect("parse");
        black_box(&m);
    });
    let typed = rate(dur, || {
        let m = Message::parse(black_box(buf.clone())).expect("parse");
        let via = m.top_via().expect("via");
        black_box(via.branch());
        black_box(m.from_header().expect("from").tag());
        black_box(m.to_header().expect("to").uri.user);
        black_box(m.call_id().expect("call-id"));
        black_box(m.cseq().expect("cseq").seq);
        black_box(m.contacts().expect("contact").list().len());
    });
    let mut edited = Message::parse(buf.clone()).expect("parse");
    edited.replace_top_via(Bytes::from_static(
        b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10",
    ));
    let mut out = BytesMut::with_capacity(2048);
    let ser = rate(dur, || {
        out.clear();
        black_box(&edited).write_to(&mut out);
        black_box(&out);
    });
    assert!(out.len() > 650, "serialised {} bytes", out.len());
    (parse, typed, ser)
}

/// Builds a new outbound leg INVITE from the parsed inbound one (new Via,
/// From tag, Call-ID; SDP shared, not copied) and writes it: the B2BUA's
/// per-leg cost.
fn ours_build(dur: Duration) -> f64 {
    use sip_message::{HeaderName, Method};
    let inbound = Message::parse(Bytes::from_static(INVITE)).expect("parse");
    let mut out = BytesMut::with_capacity(2048);
    rate(dur, || {
        let leg =
            Message::request(Method::Invite, Bytes::from_static(b"sip:test11@192.0.2.20:5062"))
                .header(
                    HeaderName::Via,
                    Bytes::from_static(
                        b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKleg1a2b3c4d5e6f7",
                    ),
                )
                .header(HeaderName::MaxForwards, Bytes::from_static(b"69"))
                .header(HeaderName::From, inbound.header_bytes(HeaderName::From).expect("from"))
                .header(HeaderName::To, Bytes::from_static(b"<sip:test11@test>"))
                .header(HeaderName::CallId, Bytes::from_static(b"4b1f0c2e-leg-1@forkswitch"))
                .header(HeaderName::CSeq, Bytes::from_static(b"1 INVITE"))
                .header(HeaderName::Contact, Bytes::from_static(b"<sip:forkswitch@127.0.0.1:5060>"))
                .body(Bytes::from_static(b"application/sdp"), inbound.body_bytes())
                .build();
        out.clear();
        leg.write_to(&mut out);
        black_box(&out);
    })
}

fn rsip_rates(dur: Duration) -> (f64, f64, f64) {
    use rsip::prelude::*;
    let parse = rate(dur, || {
        let m = rsip::SipMessage::try_from(black_box(INVITE)).expect("rsip parse");
        black_box(&m);
    });
    let typed = rate(dur, || {
        let m = rsip::SipMessage::try_from(black_box(INVITE)).expect("rsip parse");
        black_box(m.via_header().expect("via").typed().expect("typed via").branch().cloned());
        black_box(m.from_header().expect("from").typed().expect("typed from").tag().cloned());
        black_box(m.to_header().expect("to").typed().expect("typed to").uri);
        black_box(m.call_id_header().expect("call-id").value().len());
        black_box(m.cseq_header().expect("cseq").typed().expect("typed cseq").seq);
        black_box(m.contact_header().expect("contact").typed().expect("typed contact").uri);
    });
    let m = rsip::SipMessage::try_from(INVITE).expect("rsip parse");
    let ser = rate(dur, || {
        let s = black_box(&m).to_string();
        black_box(s);
    });
    (parse, typed, ser)
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let dur = Duration::from_secs_f64(secs);
    println!(
        "message: {} bytes (INVITE with SDP), {secs} s per measurement, one thread",
        INVITE.len()
    );
    let (rp, rt, rs) = rsip_rates(dur);
    println!("rsip 0.4.0:  parse_per_sec={rp:.0} typed_headers_per_sec={rt:.0} serialise_per_sec={rs:.0}");
    let (p, t, s) = ours(dur);
    println!(
        "sip-message: parse_per_sec={p:.0} typed_headers_per_sec={t:.0} serialise_per_sec={s:.0}"
    );
    let b = ours_build(dur);
    println!("sip-message: build_and_serialise_leg_invite_per_sec={b:.0}");
    println!("invite_parse_per_sec={p:.0} typed_headers_per_sec={t:.0} serialise_per_sec={s:.0}");
}
