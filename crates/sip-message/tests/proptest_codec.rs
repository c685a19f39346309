//! Property tests: generated messages survive serialise -> parse unchanged,
//! and no input bytes make the parser, the validator or a typed accessor
//! panic.

use bytes::Bytes;
use proptest::prelude::*;
use sip_message::{validate, HeaderName, Message, Method, Policy, StreamDecoder};

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        Just(Method::Register),
        Just(Method::Info),
        "[A-Z][A-Z0-9_.!%*+~-]{0,12}".prop_map(|t| Method::from_token(t.as_bytes())),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._!%*+~-]{0,15}"
}

fn header_value() -> impl Strategy<Value = String> {
    // Printable text with inner spaces, as header values carry; never
    // leading/trailing white space (the parser trims it).
    "[!-~]([ -~]{0,40}[!-~])?"
}

fn extension_header() -> impl Strategy<Value = (String, String)> {
    ("X-[A-Za-z0-9-]{1,12}", header_value())
}

prop_compose! {
    fn request()(
        m in method(),
        user in token(),
        host in "[a-z][a-z0-9.-]{0,20}",
        port in proptest::option::of(1u16..),
        branch in "[A-Za-z0-9]{4,20}",
        tag in token(),
        call_id in "[A-Za-z0-9@.-]{1,30}",
        seq in any::<u32>(),
        mf in any::<u8>(),
        ext in proptest::collection::vec(extension_header(), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) -> Message {
        let hostport = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
        let mut b = Message::request(m.clone(), format!("sip:{user}@{hostport}"))
            .header(HeaderName::Via, format!("SIP/2.0/UDP {hostport};branch=z9hG4bK{branch};rport"))
            .header(HeaderName::From, format!("\"{user}\" <sip:{user}@{host}>;tag={tag}"))
            .header(HeaderName::To, format!("<sip:{user}@{host}>"))
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{seq} {m}"))
            .header(HeaderName::MaxForwards, mf.to_string());
        for (n, v) in ext {
            b = b.header_named(&n, v);
        }
        if !body.is_empty() {
            b = b.body("application/octet-stream", Bytes::from(body));
        }
        b.build()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(m in request()) {
        let wire = m.to_bytes();
        let back = Message::parse(wire.clone()).expect("parses");
        prop_assert_eq!(&back, &m);
        prop_assert!(back.defects().is_empty(), "{:?}", back.defects());
        // Re-serialising the parsed message gives the same bytes.
        prop_assert_eq!(back.to_bytes(), wire.clone());
        // Typed values agree with what was built.
        let cseq = back.cseq().expect("cseq");
        prop_assert_eq!(Some(&cseq.method), m.method());
        prop_assert_eq!(back.body(), m.body());
        prop_assert!(back.top_via().expect("via").has_rfc3261_branch());
        // And it survives a stream decoder fed in small pieces.
        let mut d = StreamDecoder::new(1 << 16);
        let mut got = None;
        for chunk in wire.chunks(7) {
            d.extend(chunk);
            if let Some(sip_message::StreamItem::Message(m2)) = d.decode().expect("framing") {
                got = Some(m2);
            }
        }
        prop_assert_eq!(got.as_ref(), Some(&m));
    }

    #[test]
    fn response_round_trips(m in request(), code in 100u16..700, reason in "[ -~]{0,20}") {
        let r = Message::response_to(&m, code).reason(reason.clone()).to_tag("t1").build();
        let back = Message::parse(r.to_bytes()).expect("parses");
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(back.status(), Some(code));
        prop_assert_eq!(back.reason_phrase(), reason.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(Bytes::from(data));
    }

    #[test]
    fn mutated_sip_never_panics(
        m in request(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut raw = m.to_bytes().to_vec();
        for (at, byte) in cuts {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        exercise(Bytes::from(raw));
    }
}

/// Runs everything a server does with received bytes.
fn exercise(data: Bytes) {
    let mut d = StreamDecoder::new(4096);
    d.extend(&data);
    while let Ok(Some(_)) = d.decode() {}
    if let Ok(m) = Message::parse(data) {
        let _ = validate(&m, &Policy::default());
        let _ = m.top_via();
        let _ = m.vias().count();
        let _ = m.cseq();
        let _ = m.from_header();
        let _ = m.to_header();
        let _ = m.contacts();
        let _ = m.request_uri();
        let _ = m.routes().count();
        let _ = m.rack();
        let _ = m.to_bytes();
        if let Some(v) = m.header(HeaderName::Authorization) {
            let _ = sip_message::AuthParams::parse(v);
        }
    }
}
