//! Every kind of dialog-info body the notifier writes, validated against
//! RFC 4235's XML schema (`tests/data/dialog-info.xsd`) by `xmllint` from
//! Debian's libxml2-utils (installed by `tests/peers.sh`): the NOTIFYs of
//! lamps on an extension and on a ring group through whole calls, and
//! documents with hostile identities, every termination and missing ids.
//! A document that breaks the schema must fail, so that the check is
//! known to bite.

use pbx_features::{
    DialogEntry, DialogIds, DialogInfo, DialogState, Direction, DocumentState, Identity,
    NewSubscription, Notifier, NotifierSettings, NotifyOutcome, SubscribeRequest, Subscriber,
    Termination, TerminationEvent, Watched,
};
use sip_message::{Peer, Transport};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dialog-info.xsd")
}

/// Runs xmllint on the documents; returns, per document, whether it
/// validates.
fn validate(docs: &[(String, String)]) -> Vec<(String, bool)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, (name, xml)) in docs.iter().enumerate() {
        let path = dir.path().join(format!("{i:03}-{name}.xml"));
        std::fs::write(&path, xml).expect("write document");
        files.push(path);
    }
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema())
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("xmllint did not run ({e}): install Debian's libxml2-utils (tests/peers.sh)")
        });
    let report = String::from_utf8_lossy(&out.stderr);
    files
        .iter()
        .zip(docs)
        .map(|(path, (name, _))| {
            let line = format!("{} validates", path.display());
            (name.clone(), report.lines().any(|l| l == line))
        })
        .collect()
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: "192.0.2.10:5070".parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        conn: None,
    }
}

/// The bodies of every NOTIFY a lamp on `watched` gets while `calls`
/// happen to it, from its first NOTIFY to its last.
fn notify_bodies(watched: Watched, entity: &str, calls: &[(Watched, DialogEntry)]) -> Vec<String> {
    let now = Instant::now();
    let mut n: Notifier<()> = Notifier::new(NotifierSettings::default());
    let req = SubscribeRequest {
        call_id: "sub-1".into(),
        from_tag: "ft".into(),
        to_tag: None,
        event_id: None,
        expires: None,
    };
    let new = NewSubscription {
        subscriber: Subscriber { aor: "test11@test".into(), peer: peer() },
        watched,
        entity: entity.into(),
        local_tag: "lt".into(),
        dialog: (),
    };
    n.handle_new(now, &req, new);
    let mut bodies = Vec::new();
    let drain = |n: &mut Notifier<()>, bodies: &mut Vec<String>| {
        while let Some(x) = n.poll_notify() {
            let id = x.id;
            bodies.push(x.body);
            n.handle_notify_outcome(now, id, NotifyOutcome::Response(200));
        }
    };
    drain(&mut n, &mut bodies);
    for (w, e) in calls {
        n.handle_dialog(now, w, e.clone());
        drain(&mut n, &mut bodies);
    }
    let mut bye = req.clone();
    bye.to_tag = Some("lt".into());
    bye.expires = Some(0);
    n.handle_refresh(now, &bye);
    drain(&mut n, &mut bodies);
    bodies
}

fn leg(id: &str, state: DialogState, caller: Option<Identity>) -> DialogEntry {
    DialogEntry {
        id: id.into(),
        state,
        direction: Some(Direction::Recipient),
        ids: Some(DialogIds {
            call_id: format!("{id}@192.0.2.1"),
            local_tag: (state != DialogState::Trying).then(|| "9fxced76sl".into()),
            remote_tag: Some("sw-as7d900a".into()),
        }),
        local: Identity::new(None, "sip:test12@test"),
        remote: caller,
    }
}

fn ended(event: TerminationEvent, code: Option<u16>) -> DialogState {
    DialogState::Terminated(Termination { event: Some(event), code })
}

#[test]
fn every_notify_body_of_whole_calls_validates() {
    let ext = Watched::Extension("test12@test".into());
    let group = Watched::RingGroup("800@test".into());
    let alice = Identity::new(Some("Alice O'Neil & <Co>"), "sip:test11@test");
    let carrier = Identity::new(None, "sip:+15551234567@carrier.example;user=phone");
    // A call to the extension, answered and hung up; a second one cancelled.
    let mut calls = vec![
        (ext.clone(), leg("c1", DialogState::Trying, None)),
        (ext.clone(), leg("c1", DialogState::Proceeding, None)),
        (ext.clone(), leg("c1", DialogState::Early, alice.clone())),
        (ext.clone(), leg("c1", DialogState::Confirmed, None)),
        (ext.clone(), leg("c1", ended(TerminationEvent::RemoteBye, None), None)),
        (ext.clone(), leg("c2", DialogState::Early, carrier.clone())),
        (ext.clone(), leg("c2", ended(TerminationEvent::Cancelled, Some(487)), None)),
    ];
    // An outgoing call of the extension, refused.
    let mut out = DialogEntry::new("c3", DialogState::Trying);
    out.direction = Some(Direction::Initiator);
    out.remote = Identity::new(Some("Front desk"), "sip:test13@test");
    calls.push((ext.clone(), out.clone()));
    out.state = ended(TerminationEvent::Rejected, Some(486));
    calls.push((ext.clone(), out));
    let mut docs: Vec<(String, String)> = notify_bodies(ext, "sip:test12@test", &calls)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("extension-{i}"), b))
        .collect();
    assert_eq!(docs.len(), 11, "the first, one per change, the last");
    // A ring group ringing two calls, one picked up (replaced), one timing out.
    let group_calls = [
        (group.clone(), leg("g1", DialogState::Early, alice)),
        (group.clone(), leg("g2", DialogState::Early, carrier)),
        (group.clone(), leg("g1", ended(TerminationEvent::Replaced, None), None)),
        (group.clone(), leg("g2", ended(TerminationEvent::Timeout, Some(408)), None)),
    ];
    let group_docs = notify_bodies(group, "sip:800@test", &group_calls);
    assert_eq!(group_docs.len(), 6);
    docs.extend(group_docs.into_iter().enumerate().map(|(i, b)| (format!("group-{i}"), b)));
    for (name, ok) in validate(&docs) {
        assert!(ok, "{name} does not validate:\n{}", docs.iter().find(|d| d.0 == name).unwrap().1);
    }
}

#[test]
fn edge_documents_validate_and_a_broken_one_does_not() {
    let hostile = "\"Evil\" <x> & 'y'\u{0}\u{1b}\r\n".repeat(20);
    let dialogs = vec![
        DialogEntry {
            remote: Identity::new(Some(&hostile), "sip:a@b;p=\"<&>\""),
            ..leg("h", DialogState::Early, None)
        },
        DialogEntry {
            remote: Identity::new(Some("IPv6 carrier"), "sip:+15551234567@[2001:db8::1]:5060"),
            ..DialogEntry::new("v6", DialogState::Trying)
        },
        DialogEntry::new("bare", DialogState::Confirmed),
        DialogEntry::new("t1", ended(TerminationEvent::Error, Some(500))),
        DialogEntry::new("t2", ended(TerminationEvent::LocalBye, Some(99))),
        DialogEntry::new("t3", DialogState::Terminated(Termination::default())),
        DialogEntry {
            ids: Some(DialogIds { call_id: "x".repeat(300), local_tag: None, remote_tag: None }),
            ..DialogEntry::new("long-ids", DialogState::Early)
        },
    ];
    let doc = |state, dialogs: &[DialogEntry]| {
        DialogInfo { version: 7, state, entity: "sip:test12@test", dialogs }.to_xml()
    };
    let good = vec![
        ("edges".to_owned(), doc(DocumentState::Full, &dialogs)),
        ("partial".to_owned(), doc(DocumentState::Partial, &dialogs[2..3])),
        ("empty".to_owned(), doc(DocumentState::Full, &[])),
    ];
    let broken = doc(DocumentState::Full, &dialogs[2..3])
        .replace("<state>confirmed", "<state x=\"1\">confirmed");
    let mut all = good.clone();
    all.push(("broken".to_owned(), broken));
    let verdicts = validate(&all);
    for (name, ok) in &verdicts[..good.len()] {
        assert!(ok, "{name} does not validate");
    }
    assert_eq!(
        verdicts[good.len()],
        ("broken".to_owned(), false),
        "xmllint must refuse a broken one"
    );
}

#[test]
fn documents_of_random_hostile_text_validate() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    // Any characters (controls, quotes, brackets, ampersands, non-ASCII,
    // U+FFFE), in every place text goes; a fixed seed, one xmllint run.
    let text = proptest::string::string_regex("(?s).{0,40}").unwrap();
    let mut runner = TestRunner::deterministic();
    let mut docs = Vec::new();
    for i in 0..200 {
        let mut pick = || text.new_tree(&mut runner).unwrap().current();
        let (id, call_id, tag, display, user) = (pick(), pick(), pick(), pick(), pick());
        let dialog = DialogEntry {
            id: format!("d{id}"),
            state: DialogState::Early,
            direction: Some(Direction::Recipient),
            ids: Some(DialogIds { call_id, local_tag: Some(tag.clone()), remote_tag: Some(tag) }),
            local: None,
            remote: Identity::new(Some(&display), &format!("sip:{}@test", user.trim())),
        };
        let entity = format!("sip:{}@test", pick().trim());
        let xml = DialogInfo {
            version: i,
            state: DocumentState::Full,
            entity: &entity,
            dialogs: &[dialog],
        }
        .to_xml();
        docs.push((format!("random-{i}"), xml));
    }
    for (name, ok) in validate(&docs) {
        assert!(ok, "{name} does not validate:\n{}", docs.iter().find(|d| d.0 == name).unwrap().1);
    }
}
