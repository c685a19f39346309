//! Hostile input never panics the ng codec, and every command survives
//! encoding: property tests over random bytes, mutated real messages and
//! random commands.

use bytes::Bytes;
use media_anchor::codec::{unframe, MAX_DATAGRAM};
use media_anchor::command::{decode_request, encode_request};
use media_anchor::options::{Dtls, Flag, Ice, Replace, RtcpMux, Sdes, TransportProtocol};
use media_anchor::reply::{decode_reply, encode_reply};
use media_anchor::{
    Answer, CodecError, Command, CommandKind, Cookie, Delete, Offer, Query, Reply, ReplyBody,
    SdpOptions,
};
use proptest::prelude::*;

const QUERY: &[u8] = include_bytes!("data/query_10.5.bencode");

/// Real messages to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut q = b"1a2b ".to_vec();
    q.extend_from_slice(QUERY);
    vec![
        q,
        b"5323_1 d6:result4:ponge".to_vec(),
        b"k d3:sdp5:v=0\r\n6:result2:oke".to_vec(),
        b"k d6:result5:error12:error-reason14:Unknown call-ide".to_vec(),
        b"k d5:callsl2:c1e6:result2:oke".to_vec(),
        b"k d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp3:v=05:flagsl13:trust addressee"
            .to_vec(),
    ]
}

/// Decodes `bytes` every way the crate can; only errors, never a panic.
fn decode_everything(bytes: &[u8]) {
    let _ = unframe(bytes);
    let _ = decode_request(bytes);
    for k in CommandKind::ALL {
        if let Ok((_, r)) = decode_reply(k, bytes) {
            // What decodes re-encodes and decodes the same.
            let c = Cookie::from_bits(1);
            assert_eq!(decode_reply(k, &encode_reply(&c, &r)).map(|x| x.1), Ok(r));
        }
    }
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(all, 0..=all.len().min(4))
}

fn options() -> impl Strategy<Value = SdpOptions> {
    (
        pick(Flag::ALL),
        pick(Replace::ALL),
        proptest::option::of(proptest::sample::select(Ice::ALL)),
        proptest::option::of(proptest::sample::select(Dtls::ALL)),
        pick(Sdes::ALL),
        pick(RtcpMux::ALL),
        proptest::option::of(proptest::sample::select(TransportProtocol::ALL)),
        proptest::option::of(any::<std::net::IpAddr>()),
        proptest::option::of(".{0,20}"),
    )
        .prop_map(|(flags, replace, ice, dtls, sdes, rtcp_mux, tp, ip, label)| SdpOptions {
            flags,
            replace,
            ice,
            dtls,
            sdes,
            rtcp_mux,
            transport_protocol: tp,
            received_from: ip,
            media_address: ip,
            label,
        })
}

fn command() -> impl Strategy<Value = Command> {
    let id = ".{0,40}";
    let sdp = proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
    prop_oneof![
        Just(Command::Ping),
        (id, id, proptest::option::of(id), sdp.clone(), options()).prop_map(|(c, f, v, s, o)| {
            Command::Offer(Offer { call_id: c, from_tag: f, via_branch: v, sdp: s, options: o })
        }),
        (id, id, id, proptest::option::of(id), sdp, options()).prop_map(|(c, f, t, v, s, o)| {
            Command::Answer(Answer {
                call_id: c,
                from_tag: f,
                to_tag: t,
                via_branch: v,
                sdp: s,
                options: o,
            })
        }),
        (
            id,
            id,
            proptest::option::of(id),
            proptest::option::of(id),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(c, f, t, v, dd)| {
                Command::Delete(Delete {
                    to_tag: t,
                    via_branch: v,
                    delete_delay: dd,
                    ..Delete::whole_call(&c, &f)
                })
            }),
        (id, proptest::option::of(id), proptest::option::of(id))
            .prop_map(|(c, f, t)| Command::Query(Query { call_id: c, from_tag: f, to_tag: t })),
        proptest::option::of(any::<u32>()).prop_map(|limit| Command::List { limit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut m = seeds()[which].clone();
        for (at, byte, op) in edits {
            match op {
                0 if !m.is_empty() => { let i = at.index(m.len()); m[i] = byte; }
                1 => { let i = at.index(m.len() + 1); m.insert(i, byte); }
                _ if !m.is_empty() => { let i = at.index(m.len()); m.truncate(i); }
                _ => {}
            }
        }
        decode_everything(&m);
    }

    #[test]
    fn commands_round_trip(c in command(), bits in any::<u64>()) {
        let cookie = Cookie::from_bits(bits);
        prop_assert_eq!(decode_request(&encode_request(&cookie, &c)), Ok((cookie, c)));
    }
}

#[test]
fn deep_nesting_and_huge_lengths_are_refused() {
    let mut deep = b"k ".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 30_000));
    deep.extend(std::iter::repeat_n(b'e', 30_000));
    assert!(matches!(decode_request(&deep), Err(CodecError::Bencode(_))));
    assert!(matches!(decode_reply(CommandKind::Query, &deep), Err(CodecError::Bencode(_))));
    for huge in [
        &b"k d999999999999999:xe"[..],
        b"k d99999999999999999999999:xe",
        b"k d-1:xe",
        b"k di99999999999999999999ee",
    ] {
        assert!(matches!(decode_request(huge), Err(CodecError::Bencode(_))), "{huge:?}");
    }
    let big = vec![b'x'; MAX_DATAGRAM + 1];
    assert_eq!(unframe(&big), Err(CodecError::TooLarge(MAX_DATAGRAM + 1)));
    // A reply is taken whatever the order of its keys.
    let r = decode_reply(CommandKind::Offer, b"k d6:result2:ok3:sdp3:v=0e").unwrap().1;
    assert_eq!(r, Reply::ok(ReplyBody::Sdp(Bytes::from_static(b"v=0"))));
}
