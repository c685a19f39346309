//! Checks, against the real `rsip` crate (pinned to 0.4.0, the latest on crates.io), the
//! claims an issue makes about it. Every test asserts what rsip ACTUALLY does, so the suite
//! passes and documents reality; where a claim is false or only partly true, the comment says so.
//!
//! No network: all inputs are inline or read from `tests/data/rfc4475` in the workspace.

use rsip::prelude::*;
use rsip::{Header, SipMessage};

/// The only parse entry point a datagram receiver has: `SipMessage::try_from(&[u8])`.
fn parse(bytes: &[u8]) -> Result<SipMessage, rsip::Error> {
    SipMessage::try_from(bytes)
}

/// Mandatory headers shared by the hand-written requests below.
const HDRS: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
                    Max-Forwards: 70\r\n\
                    To: <sip:b@example.com>\r\n\
                    From: <sip:a@example.com>;tag=1928301774\r\n\
                    Call-ID: a84b4c76e66710\r\n\
                    CSeq: 1 INVITE\r\n";

fn request(start_line: &str, extra_headers: &str) -> Vec<u8> {
    format!("{start_line}\r\n{HDRS}{extra_headers}Content-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn sanity_plain_invite_parses() {
    let msg = parse(&request("INVITE sip:a@b SIP/2.0", "")).expect("plain INVITE must parse");
    let SipMessage::Request(req) = msg else {
        panic!("expected a request");
    };
    assert_eq!(req.method, rsip::Method::Invite);
    assert_eq!(req.headers.iter().count(), 7);
}

/// Claim 1: TRUE. `Method` is a closed enum of 14 methods; anything else is a hard parse
/// error of the whole message, so there is no Request left to answer with 501.
#[test]
fn claim1_unknown_extension_method_is_rejected() {
    let input = request("FOO sip:a@b SIP/2.0", "");
    match parse(&input) {
        Err(rsip::Error::ParseError(m)) => assert_eq!(m, "invalid method: FOO"),
        other => panic!("unexpected: {other:?}"),
    }
    // Same through rsip::Request directly.
    assert_eq!(
        rsip::Request::try_from(input.as_slice()),
        Err(rsip::Error::ParseError("invalid method: FOO".into()))
    );
}

/// Claim 2: TRUE. Both Request-URIs reject the whole message. The errors are accidental:
/// rsip's URI tokenizer only knows `sip:`/`sips:`/`x://`, so `tel:+1555...` is read as
/// host `tel` with port `+15551234567` (u16 overflow), and the IPv6 host is split at the
/// first ':' (`[2001` / port `db8::10]:5060`).
#[test]
fn claim2_tel_and_ipv6_request_uris_are_rejected() {
    let tel = request("INVITE tel:+15551234567;phone-context=example.com SIP/2.0", "");
    assert_eq!(
        parse(&tel),
        Err(rsip::Error::ParseError("number too large to fit in target type".into()))
    );

    for ruri in ["sip:[2001:db8::10]:5060", "sip:alice@[2001:db8::10]:5060"] {
        let v6 = request(&format!("INVITE {ruri} SIP/2.0"), "");
        assert_eq!(
            parse(&v6),
            Err(rsip::Error::ParseError("invalid digit found in string".into())),
            "{ruri}"
        );
    }

    // An IPv6 sent-by in Via is not a parse-time problem (headers stay untyped strings),
    // but the typed Via cannot be read.
    let v6_via = b"OPTIONS sip:a@b SIP/2.0\r\n\
                   Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK1\r\n\
                   Content-Length: 0\r\n\r\n";
    let msg = parse(v6_via).expect("untyped Via with IPv6 parses");
    let via = msg.via_header().expect("Via present");
    assert!(via.typed().is_err(), "typed IPv6 Via: {:?}", via.typed());
}

/// Claim 3: TRUE. A continuation line (starting with SP/HT) does not match the header
/// tokenizer (`token ":" ...`), leaving trailing input, and the whole message is rejected
/// with a TokenizeError. (Related: `Via :` with SP before the colon is also rejected, which
/// is what kills RFC 4475 wsinv.dat and longreq.dat.)
#[test]
fn claim3_folded_header_lines_are_rejected() {
    for fold in ["  world", "\tworld"] {
        let input = request("INVITE sip:a@b SIP/2.0", &format!("Subject: hello\r\n{fold}\r\n"));
        match parse(&input) {
            Err(rsip::Error::TokenizeError(m)) => {
                let expected = format!("failed to tokenize headers: {fold}\r\nContent-Length: 0");
                assert!(m.contains(&expected), "{m}");
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    let sp_before_colon = request("INVITE sip:a@b SIP/2.0", "Subject : hi\r\n");
    assert!(matches!(parse(&sp_before_colon), Err(rsip::Error::TokenizeError(_))));
}

/// Claim 4: TRUE. The header-name match has no compact aliases; `v f t i m l` all land in
/// `Header::Other`, so `via_header()`, `from_header()` ... report the header as missing.
#[test]
fn claim4_compact_forms_become_other_headers() {
    let input = b"INVITE sip:a@b SIP/2.0\r\n\
                  v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
                  Max-Forwards: 70\r\n\
                  t: <sip:b@example.com>\r\n\
                  f: <sip:a@example.com>;tag=1928301774\r\n\
                  i: a84b4c76e66710\r\n\
                  CSeq: 1 INVITE\r\n\
                  m: <sip:a@192.0.2.1:5060>\r\n\
                  l: 0\r\n\r\n";
    let msg = parse(input).expect("message with compact headers parses");

    let others: Vec<(String, String)> = msg
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Other(n, v) => Some((n.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = others.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["v", "t", "f", "i", "m", "l"]);
    assert_eq!(others[5].1, "0");

    assert!(!msg.headers().iter().any(|h| matches!(
        h,
        Header::Via(_)
            | Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::Contact(_)
            | Header::ContentLength(_)
    )));
    assert_eq!(msg.via_header(), Err(rsip::Error::MissingHeader("Via".into())));
    assert_eq!(msg.from_header(), Err(rsip::Error::MissingHeader("From".into())));
    assert_eq!(msg.to_header(), Err(rsip::Error::MissingHeader("To".into())));
    assert_eq!(msg.call_id_header(), Err(rsip::Error::MissingHeader("CallID".into())));
    assert!(msg.contact_header().is_err());
}

/// Claim 5: TRUE. The comma-joined line is stored as ONE untyped `Header::Via` holding the
/// whole text; `typed()` parses the first value and silently discards the rest (Ok, no error).
#[test]
fn claim5_second_comma_separated_via_is_dropped_by_typed_access() {
    let input = b"INVITE sip:a@b SIP/2.0\r\n\
                  Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
                  Max-Forwards: 70\r\n\
                  Content-Length: 0\r\n\r\n";
    let msg = parse(input).expect("parses");

    let vias: Vec<&rsip::headers::Via> = msg
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(vias.len(), 1, "one untyped Via for the comma list");
    assert_eq!(vias[0].value(), "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2");

    let typed = vias[0].typed().expect("typed Via of a comma list is Ok");
    assert_eq!(typed.uri.host_with_port.to_string(), "a");
    assert_eq!(typed.branch().map(|b| b.to_string()), Some("z9hG4bK1".into()));
    // Everything after the first value (", SIP/2.0/UDP b;branch=z9hG4bK2") is gone.
    assert_eq!(typed.params.len(), 1);
    assert!(!typed.to_string().contains("z9hG4bK2"));

    // For contrast: two separate Via lines give two typed Vias.
    let two_lines = b"INVITE sip:a@b SIP/2.0\r\n\
                      Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
                      Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
                      Content-Length: 0\r\n\r\n";
    let msg = parse(two_lines).expect("parses");
    let branches: Vec<String> = msg
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => v.typed().ok()?.branch().map(|b| b.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(branches, ["z9hG4bK1", "z9hG4bK2"]);
}

/// Claim 6: TRUE (at typed-access time, not at parse time). The message parses and keeps
/// the Contact text verbatim, but uri params only accept token chars, so the quoted
/// `+sip.instance` value leaves trailing input and `typed()` / `uri()` / `params()` fail.
#[test]
fn claim6_quoted_contact_param_fails_typed_contact() {
    let contact = "<sip:a@192.0.2.1:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1";
    let input = request("REGISTER sip:a@b SIP/2.0", &format!("Contact: {contact}\r\n"));
    let msg = parse(&input).expect("parse time: accepted");
    let untyped = msg.contact_header().expect("Contact present");
    assert_eq!(untyped.value(), contact);

    match untyped.typed() {
        Err(rsip::Error::TokenizeError(m)) => assert_eq!(
            m,
            format!("failed to tokenize params tokenizing left trailing input: {contact}")
        ),
        other => panic!("unexpected: {other:?}"),
    }
    assert!(untyped.uri().is_err());
    assert!(untyped.params().is_err());
}

/// Claim 7: TRUE. The body is everything after the first CRLFCRLF; Content-Length is never
/// consulted, so the second message becomes the body of the first.
#[test]
fn claim7_content_length_is_ignored() {
    let first = request("REGISTER sip:a@b SIP/2.0", "");
    let second = request("INVITE sip:a@b SIP/2.0", "");
    let datagram = [first.as_slice(), second.as_slice()].concat();

    let msg = parse(&datagram).expect("parses");
    let SipMessage::Request(req) = &msg else {
        panic!("expected a request");
    };
    assert_eq!(req.method, rsip::Method::Register);
    let cl = msg.headers().iter().find_map(|h| match h {
        Header::ContentLength(cl) => Some(cl.value().to_string()),
        _ => None,
    });
    assert_eq!(cl.as_deref(), Some("0"));
    assert_eq!(msg.body().as_slice(), second.as_slice());

    // The reverse also holds: a Content-Length larger than the body is not an error.
    let short = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 500\r\n\r\nabc";
    let msg = parse(short).expect("Content-Length 500 with 3 body bytes accepted");
    assert_eq!(msg.body().as_slice(), b"abc");
}

/// Claim 8: FALSE for parsing, TRUE for serialising. The parsed body is a byte-exact
/// `Vec<u8>`, but every encoder (`Display`, `Into<String|Vec<u8>|Bytes>`) goes through
/// `String::from_utf8_lossy`, replacing invalid bytes with U+FFFD.
#[test]
fn claim8_binary_body_exact_on_parse_lossy_on_serialise() {
    let binary = [0x00u8, 0xFF, 0xFE, 0x80];
    let mut input = format!(
        "MESSAGE sip:a@b SIP/2.0\r\n{HDRS}Content-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n"
    )
    .into_bytes();
    input.extend_from_slice(&binary);

    let msg = parse(&input).expect("parses");
    assert_eq!(msg.body().as_slice(), &binary, "parse keeps bytes exactly");

    let encoded: Vec<u8> = msg.clone().into();
    let encoded_bytes: bytes::Bytes = msg.into();
    assert_eq!(encoded.as_slice(), encoded_bytes.as_ref());
    assert!(!encoded.ends_with(&binary), "serialised body is not byte-exact");
    // 0x00 survives; 0xFF, 0xFE, 0x80 each become U+FFFD (EF BF BD).
    let lossy: &[u8] = &[0x00, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD];
    assert!(encoded.ends_with(lossy));
}

#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    rejected: Vec<String>,
}

/// Claim 9: TRUE for the 13 `valid` messages of RFC 4475 section 3.1.1 (7 accepted), but
/// EXPECTED.tsv marks 16 files `valid` (plus cparam01, cparam02, regescrt from 3.3.12-14,
/// all accepted): 10 of 16. "Accepted" = `SipMessage::try_from` returned Ok; it says nothing
/// about typed headers (e.g. dblreq.dat is "accepted" with the trailing INVITE as body).
#[test]
fn claim9_rfc4475_corpus_counts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/rfc4475");
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv readable");

    let mut by_verdict: std::collections::BTreeMap<String, Tally> = Default::default();
    let mut valid_3_1_1 = Tally::default();
    let mut panicked = Vec::new();

    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 3, "bad TSV line: {line}");
        let (name, section, verdict) = (cols[0], cols[1], cols[2]);
        let data = std::fs::read(dir.join(name)).expect("corpus file readable");

        let outcome = std::panic::catch_unwind(|| parse(&data).is_ok());
        let accepted = match outcome {
            Ok(ok) => ok,
            Err(_) => {
                panicked.push(name.to_string());
                false
            }
        };
        let tally = by_verdict.entry(verdict.to_string()).or_default();
        let list = if accepted { &mut tally.accepted } else { &mut tally.rejected };
        list.push(name.to_string());
        if verdict == "valid" && section.starts_with("3.1.1.") {
            if accepted {
                valid_3_1_1.accepted.push(name.to_string());
            } else {
                valid_3_1_1.rejected.push(name.to_string());
            }
        }
    }

    for (verdict, t) in &by_verdict {
        println!(
            "{verdict}: {} accepted / {} total\n  accepted: {:?}\n  rejected: {:?}",
            t.accepted.len(),
            t.accepted.len() + t.rejected.len(),
            t.accepted,
            t.rejected
        );
    }
    println!(
        "valid (RFC 4475 3.1.1 only): {} accepted / {} total",
        valid_3_1_1.accepted.len(),
        valid_3_1_1.accepted.len() + valid_3_1_1.rejected.len()
    );
    println!("panicked: {panicked:?}");

    assert!(panicked.is_empty(), "rsip panicked on {panicked:?}");

    let valid = &by_verdict["valid"];
    assert_eq!(valid.accepted.len() + valid.rejected.len(), 16);
    assert_eq!(
        valid.accepted,
        [
            "escnull.dat",
            "lwsdisp.dat",
            "dblreq.dat",
            "transports.dat",
            "mpart01.dat",
            "unreason.dat",
            "noreason.dat",
            "cparam01.dat",
            "cparam02.dat",
            "regescrt.dat",
        ]
    );
    assert_eq!(
        valid.rejected,
        ["wsinv.dat", "intmeth.dat", "esc01.dat", "esc02.dat", "longreq.dat", "semiuri.dat",]
    );
    assert_eq!(valid_3_1_1.accepted.len(), 7);
    assert_eq!(valid_3_1_1.rejected.len(), 6);

    let invalid = &by_verdict["invalid"];
    assert_eq!(invalid.accepted.len() + invalid.rejected.len(), 23);
    assert_eq!(
        invalid.accepted,
        [
            "badinv01.dat",
            "clerr.dat",
            "ncl.dat",
            "scalarlg.dat",
            "quotbal.dat",
            "ltgtruri.dat",
            "baddate.dat",
            "regbadct.dat",
            "badaspec.dat",
            "baddn.dat",
            "mismatch01.dat",
            "insuf.dat",
            "multi01.dat",
            "mcl01.dat",
        ]
    );

    let tricky = &by_verdict["valid-but-tricky"];
    assert_eq!(tricky.accepted.len() + tricky.rejected.len(), 11);
    assert_eq!(tricky.rejected, ["unkscm.dat"]);
}
