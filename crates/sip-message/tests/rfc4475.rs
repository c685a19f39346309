//! Every message of the RFC 4475 torture corpus, with the verdict a
//! softswitch must reach and the parsed values the RFC says parsers get wrong.

use bytes::Bytes;
use sip_message::{validate, HeaderName, Message, Method, Policy, Scheme, Verdict};
use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/rfc4475")
}

fn load(name: &str) -> Bytes {
    let p = corpus_dir().join(name);
    Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// Verdict per file: "accept", "drop", or a status code. Where RFC 4475
/// allows several reactions, the comment says which one we chose and why.
pub const VERDICTS: &[(&str, &str)] = &[
    // 3.1.1 valid messages
    ("wsinv.dat", "accept"),
    ("intmeth.dat", "501"), // valid syntax, unknown extension method
    ("esc01.dat", "accept"),
    ("escnull.dat", "accept"),
    ("esc02.dat", "501"), // RE%47IST%45R is not REGISTER
    ("lwsdisp.dat", "accept"),
    ("longreq.dat", "accept"),
    ("dblreq.dat", "accept"), // trailing INVITE-looking octets ignored
    ("semiuri.dat", "accept"),
    ("transports.dat", "accept"),
    ("mpart01.dat", "accept"),
    ("unreason.dat", "accept"), // response
    ("noreason.dat", "accept"), // response
    // 3.1.2 invalid messages
    ("badinv01.dat", "400"),
    ("clerr.dat", "400"),
    ("ncl.dat", "400"),
    ("scalar02.dat", "400"),
    ("scalarlg.dat", "drop"), // response
    ("quotbal.dat", "400"),
    ("ltgtruri.dat", "400"),
    ("lwsruri.dat", "400"),
    ("lwsstart.dat", "400"), // strict: we never forward what we cannot re-emit exactly
    ("trws.dat", "400"),
    ("escruri.dat", "400"),
    ("baddate.dat", "accept"), // liberal: Date does not matter to us
    ("regbadct.dat", "400"),
    ("badaspec.dat", "400"),
    ("baddn.dat", "400"),
    ("badvers.dat", "505"),
    ("mismatch01.dat", "400"),
    ("mismatch02.dat", "501"), // preferred over 400
    ("bigcode.dat", "drop"),
    // 3.2 / 3.3 / 3.4 transaction-layer and application-layer cases: the codec
    // accepts; the transaction layer, registrar or router decides later.
    ("badbranch.dat", "accept"), // falls back to RFC 2543 matching
    ("insuf.dat", "400"),
    ("unkscm.dat", "416"),
    ("novelsc.dat", "416"),
    ("unksm2.dat", "accept"), // registrar answers 400 (To not a SIP AOR)
    ("bext01.dat", "420"),
    ("invut.dat", "accept"),    // 415 is the callee's call; a B2BUA relays
    ("regaut01.dat", "accept"), // registrar answers 401
    ("multi01.dat", "400"),
    ("mcl01.dat", "400"),
    ("bcast.dat", "accept"),  // response: well formed; dropped as stray later
    ("zeromf.dat", "accept"), // 483 is the router's decision (OPTIONS to us: 200)
    ("cparam01.dat", "accept"),
    ("cparam02.dat", "accept"),
    ("regescrt.dat", "accept"),
    ("sdp01.dat", "accept"), // 406 is the callee's call
    ("inv2543.dat", "accept"),
    ("test.dat", "drop"), // no SIP-Version and no Via: nothing to answer along
];

/// The policy the corpus is judged under: forkswitch's, plus MESSAGE
/// (mpart01 is one, valid; forkswitch itself answers MESSAGE 501, see
/// `sip_message::SUPPORTED`).
fn corpus_policy() -> Policy {
    let mut p = Policy::default();
    p.methods.push(Method::Message);
    p
}

fn verdict_of(bytes: Bytes) -> String {
    match Message::parse(bytes) {
        Err(_) => "drop".into(),
        Ok(m) => match validate(&m, &corpus_policy()) {
            Verdict::Accept => "accept".into(),
            Verdict::Drop(_) => "drop".into(),
            Verdict::Reject(r) => r.status.to_string(),
        },
    }
}

#[test]
fn every_corpus_file_has_its_verdict() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50, "the corpus has 50 messages");
    let mut wrong = Vec::new();
    for f in &files {
        let expected = VERDICTS
            .iter()
            .find(|(n, _)| n == f)
            .unwrap_or_else(|| panic!("no verdict listed for {f}"))
            .1;
        let got = verdict_of(load(f));
        if got != expected {
            wrong.push(format!("{f}: expected {expected}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn expected_tsv_agrees_on_validity() {
    // Files EXPECTED.tsv calls valid (the 13 of RFC 4475 3.1.1 plus cparam01,
    // cparam02 and regescrt) are never rejected with 400 by us.
    let tsv = String::from_utf8(load("EXPECTED.tsv").to_vec()).expect("utf8");
    let mut valid = 0;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() > 2 && cols[2] == "valid" {
            valid += 1;
            let v = verdict_of(load(cols[0]));
            assert!(v == "accept" || v == "501", "{} is valid, got {v}", cols[0]);
        }
    }
    assert_eq!(valid, 16);
}

fn parse(name: &str) -> Message {
    Message::parse(load(name)).expect("parses")
}

#[test]
fn wsinv_folding_and_lws() {
    let m = parse("wsinv.dat");
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let c = m.cseq().unwrap();
    assert_eq!((c.seq, c.method), (9, Method::Invite));
    assert_eq!(m.to_tag(), Some(&b"1918181833n"[..]));
    assert_eq!(m.call_id().unwrap(), b"wsinv.ndaksdj@192.0.2.1");
    let vias: Vec<_> = m.vias().collect::<Result<_, _>>().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    let contacts = m.contacts().unwrap();
    let c = &contacts.list()[0];
    assert_eq!(c.params.get("newparam"), Some(Some(&b"newvalue"[..])));
    assert_eq!(c.q(), Ok(Some(330)));
    assert_eq!(m.body().len(), m.content_length().unwrap().unwrap() as usize);
}

#[test]
fn esc02_has_two_contacts_and_unknown_method() {
    let m = parse("esc02.dat");
    assert_eq!(m.method(), Some(&Method::Extension(Bytes::from_static(b"RE%47IST%45R"))));
    assert_eq!(m.contacts().unwrap().list().len(), 2);
    assert_eq!(m.header_named("C%6Fntact"), Some(&b"<sip:alias2@host2.example.com>"[..]));
}

#[test]
fn escnull_two_distinct_contacts() {
    let m = parse("escnull.dat");
    let contacts = m.contacts().unwrap();
    let users: Vec<&[u8]> = contacts.list().iter().map(|c| c.uri.user.unwrap()).collect();
    assert_eq!(users, vec![&b"%00"[..], b"%00%00"]);
    assert_eq!(m.to_header().unwrap().uri.user, Some(&b"null-%00-null"[..]));
}

#[test]
fn esc01_escapes_kept() {
    let m = parse("esc01.dat");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(uri.user, Some(&b"sips%3Auser%40example.com"[..]));
    assert_eq!(uri.host, b"example.net");
}

#[test]
fn semiuri_user_keeps_semicolon() {
    let m = parse("semiuri.dat");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(uri.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(uri.host, b"example.com");
    assert!(uri.params.is_empty());
    assert_eq!(m.values(HeaderName::Accept).count(), 6);
}

#[test]
fn dblreq_trailing_octets_ignored() {
    let raw = load("dblreq.dat");
    let m = Message::parse(raw.clone()).unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"");
    assert!(m.to_bytes().len() < raw.len());
}

#[test]
fn mpart01_binary_body_exact() {
    let raw = load("mpart01.dat");
    let m = Message::parse(raw.clone()).unwrap();
    let cl = m.content_length().unwrap().unwrap() as usize;
    assert_eq!(m.body().len(), cl);
    assert_eq!(m.body(), &raw[raw.len() - cl..]);
}

#[test]
fn transports_unknown_tokens() {
    let m = parse("transports.dat");
    let t: Vec<&[u8]> = m.vias().map(|v| v.unwrap().transport).collect();
    assert!(t.contains(&&b"UNKNOWN"[..]));
    assert!(t.contains(&&b"SCTP"[..]));
}

#[test]
fn cparam_contact_vs_url_params() {
    let m = parse("cparam01.dat");
    let c = m.contacts().unwrap();
    assert!(c.list()[0].params.has("unknownparam"));
    assert!(!c.list()[0].uri.params.has("unknownparam"));
    let m = parse("cparam02.dat");
    let c = m.contacts().unwrap();
    assert!(c.list()[0].uri.params.has("unknownparam"));
    let m = parse("regescrt.dat");
    let c = m.contacts().unwrap();
    assert!(c.list()[0].uri.headers.is_some());
    assert_eq!(m.count(HeaderName::Route), 0);
}

#[test]
fn unknown_schemes_in_headers_parse() {
    let m = parse("unksm2.dat");
    assert!(matches!(m.to_header().unwrap().uri.scheme, Scheme::Other(_)));
}

#[test]
fn responses_with_odd_reasons() {
    let m = parse("unreason.dat");
    assert_eq!(m.status(), Some(200));
    assert!(!m.reason_phrase().is_ascii());
    let m = parse("noreason.dat");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason_phrase(), b"");
}

#[test]
fn longreq_long_values() {
    let m = parse("longreq.dat");
    assert!(m.from_tag().expect("From tag").len() > 150);
    assert!(m.call_id().expect("Call-ID").len() > 140);
    let vias: Vec<_> = m.vias().collect::<Result<_, _>>().expect("all Vias parse");
    assert_eq!(vias.len(), 34); // including the `V :` forms
}

#[test]
fn unmodified_messages_serialise_byte_exact() {
    for (f, _) in VERDICTS {
        let raw = load(f);
        if let Ok(m) = Message::parse(raw.clone()) {
            let out = m.to_bytes();
            assert!(raw.starts_with(&out), "{f}");
        }
    }
}
