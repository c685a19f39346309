//! Whatever arrives from the network, the readers answer without
//! panicking, and what they keep is within its bounds.

use bytes::Bytes;
use pbx_features::{Dialable, FeatureCodes, Replaces, SubscribeRequest};
use proptest::prelude::*;
use sip_message::Message;

fn subscribe(headers: &str) -> Option<Message> {
    let text = format!(
        "SUBSCRIBE sip:test12@test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:test11@test>;tag=ft\r\nTo: <sip:test12@test>\r\nCall-ID: c1@h\r\nCSeq: 1 SUBSCRIBE\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).ok()
}

proptest! {
    #[test]
    fn replaces_values_never_panic(v in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(r) = Replaces::parse(&v) {
            prop_assert!(r.call_id.len() <= 256 && r.to_tag.len() <= 128 && r.from_tag.len() <= 128);
        }
    }

    #[test]
    fn replaces_shaped_values_never_panic(v in "[a-z0-9@.; =\"-]{0,80}(;(to|from)-tag=[a-z0-9;=\"]{0,8}){0,4}(;early-only)?") {
        let _ = Replaces::parse(v.as_bytes());
    }

    #[test]
    fn subscribe_headers_never_panic(
        event in "[ -~]{0,60}",
        accept in "[ -~]{0,60}",
        expires in "[ -~]{0,12}",
    ) {
        let headers = format!("Event: {event}\r\nAccept: {accept}\r\nExpires: {expires}\r\n");
        if let Some(m) = subscribe(&headers) {
            if let Ok(r) = SubscribeRequest::from_message(&m) {
                prop_assert!(r.event_id.as_ref().map_or(0, String::len) <= 64);
            }
        }
    }

    #[test]
    fn codes_never_panic(g in "\\PC{0,20}", d in "\\PC{0,20}", l in "\\PC{0,20}", dialed in "\\PC{0,90}") {
        let codes = FeatureCodes { group_pickup: g, directed_pickup: d, login_toggle: l };
        let _ = codes.classify(&dialed);
        let _ = codes.check([Dialable::Extension(&dialed), Dialable::RingGroup("800")]);
    }
}
