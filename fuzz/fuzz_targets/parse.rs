//! Fuzzes everything the server does with received bytes: datagram parse,
//! stream framing, validation and every typed accessor.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sip_message::{validate, AuthParams, HeaderName, Message, Policy, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let mut d = StreamDecoder::new(8192);
    for chunk in data.chunks(97) {
        d.extend(chunk);
        while let Ok(Some(_)) = d.decode() {}
    }
    if let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) {
        let _ = validate(&m, &Policy::default());
        let _ = m.vias().count();
        let _ = m.cseq();
        let _ = m.from_header();
        let _ = m.to_header();
        if let Ok(c) = m.contacts() {
            for a in c.list() {
                let _ = (a.expires(), a.q(), a.instance(), a.reg_id());
            }
        }
        let _ = m.request_uri().map(|u| u.map(|u| u.phone_digits()));
        let _ = m.routes().count();
        let _ = (m.rack(), m.rseq(), m.expires(), m.max_forwards());
        for v in m.values(HeaderName::Reason) {
            let _ = sip_message::Reason::parse(v);
        }
        for name in [HeaderName::Authorization, HeaderName::WwwAuthenticate] {
            if let Some(v) = m.header(name) {
                let _ = AuthParams::parse(v);
            }
        }
        let wire = m.to_bytes();
        // An unmodified message re-parses to the same message.
        let again = Message::parse(wire).expect("re-parse of own output");
        assert!(again == m);
    }
});
