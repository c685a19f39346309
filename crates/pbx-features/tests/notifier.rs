//! The notifier in virtual time: subscriptions from SUBSCRIBE to their
//! last NOTIFY, the watched dialogs, limits, and the invariants (one
//! NOTIFY in flight, versions 0, 1, 2..., nothing after `terminated`,
//! every subscription ends) over random runs.

use pbx_features::{
    DialogEntry, DialogIds, DialogState, Direction, Identity, NewSubscription, Notifier,
    NotifierSettings, NotifyDialog, NotifyOutcome, Refusal, SubscribeAnswer, SubscribeRequest,
    Subscriber, SubscriberGone, SubscriptionId, Termination, TerminationEvent, Watched,
};
use proptest::prelude::*;
use sip_message::{Peer, Transport};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The switch's dialog, as far as these tests care: which subscription it
/// is and the CSeq of its NOTIFYs.
#[derive(Debug)]
struct Dialog {
    name: String,
    cseq: u32,
}

/// A NOTIFY as the switch would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    id: SubscriptionId,
    dialog: String,
    cseq: u32,
    event: String,
    state: String,
    body: String,
    last: bool,
}

struct Run {
    n: Notifier<Dialog>,
    now: Instant,
    t0: Instant,
}

fn peer(port: u16, conn: Option<u64>) -> Peer {
    let transport = if conn.is_some() { Transport::Tcp } else { Transport::Udp };
    Peer {
        transport,
        remote: format!("192.0.2.10:{port}").parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        conn,
    }
}

fn request(call: &str, to_tag: Option<&str>, expires: Option<u32>) -> SubscribeRequest {
    SubscribeRequest {
        call_id: call.to_owned(),
        from_tag: format!("from-{call}"),
        to_tag: to_tag.map(str::to_owned),
        event_id: None,
        expires,
    }
}

fn ext(aor: &str) -> Watched {
    Watched::Extension(aor.to_owned())
}

impl Run {
    fn new(cfg: NotifierSettings) -> Run {
        let t0 = Instant::now();
        Run { n: Notifier::new(cfg), now: t0, t0 }
    }

    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
    }

    /// A new subscription of `aor` (from `peer`) to `watched`; our tag is
    /// `lt-<call>`.
    fn subscribe(
        &mut self,
        call: &str,
        aor: &str,
        peer: Peer,
        watched: &Watched,
        expires: Option<u32>,
    ) -> SubscribeAnswer {
        let entity = match watched {
            Watched::Extension(a) | Watched::RingGroup(a) => format!("sip:{a}"),
            Watched::MemberLogin { group, .. } => format!("sip:*45{group}"),
        };
        let new = NewSubscription {
            subscriber: Subscriber { aor: aor.to_owned(), peer },
            watched: watched.clone(),
            entity,
            local_tag: format!("lt-{call}"),
            dialog: Dialog { name: call.to_owned(), cseq: 0 },
        };
        self.n.handle_new(self.now, &request(call, None, expires), new)
    }

    fn refresh(&mut self, call: &str, expires: Option<u32>) -> SubscribeAnswer {
        let lt = format!("lt-{call}");
        self.n.handle_refresh(self.now, &request(call, Some(&lt), expires))
    }

    fn dialog(&mut self, watched: &Watched, entry: DialogEntry) {
        self.n.handle_dialog(self.now, watched, entry);
    }

    /// Every NOTIFY ready now, sent (the dialog's CSeq counts them).
    fn drain(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        while let Some(mut n) = self.n.poll_notify() {
            n.dialog.cseq += 1;
            let last = matches!(n.dialog, NotifyDialog::Last(_));
            out.push(Sent {
                id: n.id,
                dialog: n.dialog.name.clone(),
                cseq: n.dialog.cseq,
                event: n.event,
                state: n.state.to_string(),
                body: n.body,
                last,
            });
        }
        out
    }

    fn ok(&mut self, id: SubscriptionId) {
        self.n.handle_notify_outcome(self.now, id, NotifyOutcome::Response(200));
    }

    fn tick(&mut self) {
        self.n.handle_timeout(self.now);
    }
}

fn accepted(a: SubscribeAnswer) -> (SubscriptionId, u32) {
    match a {
        SubscribeAnswer::Accepted { id, expires } => (id, expires),
        other => panic!("refused: {other:?}"),
    }
}

fn ringing(id: &str, caller: &str) -> DialogEntry {
    DialogEntry {
        id: id.to_owned(),
        state: DialogState::Early,
        direction: Some(Direction::Recipient),
        ids: Some(DialogIds {
            call_id: format!("leg-{id}"),
            local_tag: Some("phone".into()),
            remote_tag: Some("switch".into()),
        }),
        local: None,
        remote: Identity::new(Some(caller), "sip:test11@test"),
    }
}

fn state(id: &str, s: DialogState) -> DialogEntry {
    DialogEntry::new(id, s)
}

/// The dialog-info `version` of a body.
fn version(body: &str) -> u32 {
    let root = body.split("<dialog-info ").nth(1).unwrap();
    let v = root.split(" version=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    v.parse().unwrap()
}

#[test]
fn a_call_seen_by_a_lamp_from_subscribe_to_unsubscribe() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    let (id, expires) =
        accepted(r.subscribe("s1", "test11@test", peer(5070, None), &w, Some(1800)));
    assert_eq!(expires, 1800);
    let first = r.drain();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].state.as_str(), first[0].event.as_str()),
        ("active;expires=1800", "dialog")
    );
    assert!(first[0].body.contains("state=\"full\" entity=\"sip:test12@test\""));
    assert_eq!(version(&first[0].body), 0);
    assert!(!first[0].body.contains("<dialog "), "idle: no dialog");
    // Trying while the first NOTIFY is unanswered: it waits.
    r.dialog(&w, state("c1", DialogState::Trying));
    assert!(r.drain().is_empty());
    r.at(10);
    r.ok(id);
    let n = r.drain();
    assert_eq!(n.len(), 1);
    assert!(n[0].body.contains("<state>trying</state>"));
    assert_eq!(
        (version(&n[0].body), n[0].cseq, n[0].state.as_str()),
        (1, 2, "active;expires=1790")
    );
    r.ok(id);
    // Ringing, with the caller.
    r.dialog(&w, ringing("c1", "Alice"));
    let n = r.drain();
    assert!(n[0].body.contains("<state>early</state>"), "{}", n[0].body);
    assert!(n[0].body.contains("<identity display=\"Alice\">sip:test11@test</identity>"));
    assert!(n[0].body.contains("call-id=\"leg-c1\" local-tag=\"phone\" remote-tag=\"switch\""));
    r.ok(id);
    r.dialog(&w, state("c1", DialogState::Confirmed));
    let n = r.drain();
    assert!(n[0].body.contains("<state>confirmed</state>"));
    assert!(n[0].body.contains("display=\"Alice\""), "the caller stays known");
    r.ok(id);
    let bye = Termination { event: Some(TerminationEvent::RemoteBye), code: None };
    r.dialog(&w, state("c1", DialogState::Terminated(bye)));
    let n = r.drain();
    assert!(n[0].body.contains("<state event=\"remote-bye\">terminated</state>"));
    assert_eq!(version(&n[0].body), 4);
    r.ok(id);
    // A refresh: full state again (the ended call still shown once).
    r.at(20);
    assert_eq!(accepted(r.refresh("s1", None)), (id, 3600));
    let n = r.drain();
    assert_eq!((n[0].state.as_str(), version(&n[0].body)), ("active;expires=3600", 5));
    r.ok(id);
    // Unsubscribe: the last NOTIFY hands the dialog back.
    assert_eq!(accepted(r.refresh("s1", Some(0))), (id, 0));
    let n = r.drain();
    assert_eq!(n.len(), 1);
    assert!(n[0].last);
    assert_eq!(n[0].state, "terminated;reason=timeout");
    assert_eq!((n[0].cseq, version(&n[0].body)), (7, 6));
    assert!(r.n.is_empty());
    // Nothing after the last one: not a change, not its answer.
    r.ok(id);
    r.dialog(&w, ringing("c2", "Bob"));
    assert!(r.drain().is_empty());
    assert_eq!(r.refresh("s1", None), SubscribeAnswer::Refused(Refusal::NoSuchSubscription));
    let c = r.n.counters();
    assert_eq!((c.accepted, c.refused, c.notifies, c.ended, c.dropped), (1, 1, 7, 1, 0));
}

#[test]
fn changes_during_a_notify_fold_into_one_with_the_latest_state() {
    let mut r = Run::new(NotifierSettings::default());
    let w = Watched::RingGroup("800@test".into());
    let (id, _) = accepted(r.subscribe("s1", "test11@test", peer(5070, None), &w, None));
    assert_eq!(r.drain().len(), 1);
    r.dialog(&w, state("a", DialogState::Trying));
    r.dialog(&w, ringing("a", "Alice"));
    r.dialog(&w, ringing("b", "Bob"));
    assert!(r.drain().is_empty());
    r.n.handle_notify_outcome(r.now, id, NotifyOutcome::Response(100));
    assert!(r.drain().is_empty(), "a provisional answer is not the end");
    r.ok(id);
    let n = r.drain();
    assert_eq!(n.len(), 1);
    assert_eq!(version(&n[0].body), 1);
    assert_eq!(n[0].body.matches("<state>early</state>").count(), 2);
    r.ok(id);
    assert!(r.drain().is_empty());
}

#[test]
fn expiries_are_granted_within_bounds() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    let p = peer(5070, None);
    assert_eq!(accepted(r.subscribe("a", "test11@test", p, &w, None)).1, 3600);
    assert_eq!(accepted(r.subscribe("b", "test11@test", p, &w, Some(86_400))).1, 3600);
    assert_eq!(accepted(r.subscribe("c", "test11@test", p, &w, Some(60))).1, 60);
    let brief = r.subscribe("d", "test11@test", p, &w, Some(59));
    assert_eq!(brief, SubscribeAnswer::Refused(Refusal::IntervalTooBrief { min: 60 }));
    assert_eq!(
        r.refresh("a", Some(30)),
        SubscribeAnswer::Refused(Refusal::IntervalTooBrief { min: 60 })
    );
    let stale = r.n.handle_refresh(r.now, &request("a", Some("other-tag"), None));
    assert_eq!(stale, SubscribeAnswer::Refused(Refusal::NoSuchSubscription));
    assert_eq!(r.n.len(), 3);
}

#[test]
fn subscriptions_expire_in_virtual_time() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    let (id, _) = accepted(r.subscribe("s1", "test11@test", peer(5070, None), &w, Some(120)));
    r.drain();
    r.ok(id);
    assert_eq!(r.n.poll_timeout(), Some(r.t0 + Duration::from_secs(120)));
    r.at(60);
    assert_eq!(accepted(r.refresh("s1", Some(120))).1, 120);
    r.drain();
    r.ok(id);
    assert_eq!(r.n.poll_timeout(), Some(r.t0 + Duration::from_secs(180)), "the refresh moved it");
    r.at(179);
    r.tick();
    assert!(r.drain().is_empty());
    r.at(180);
    r.tick();
    let n = r.drain();
    assert_eq!((n.len(), n[0].state.as_str(), n[0].last), (1, "terminated;reason=timeout", true));
    assert_eq!(r.n.poll_timeout(), None);
    assert!(r.n.is_empty());
}

#[test]
fn a_fetch_gets_one_notify_with_full_state() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    r.dialog(&w, ringing("c1", "Alice"));
    let (_, expires) = accepted(r.subscribe("f", "test11@test", peer(5070, None), &w, Some(0)));
    assert_eq!(expires, 0);
    let n = r.drain();
    assert_eq!((n.len(), n[0].state.as_str(), n[0].last), (1, "terminated;reason=timeout", true));
    assert!(n[0].body.contains("<state>early</state>"), "a call ringing before is shown");
    assert!(r.n.is_empty());
}

#[test]
fn an_end_decided_while_a_notify_is_out_waits_for_it() {
    let give_up = Duration::from_secs(100);
    let mut r =
        Run::new(NotifierSettings { notify_give_up: give_up, ..NotifierSettings::default() });
    let w = ext("test12@test");
    let (id, _) = accepted(r.subscribe("s1", "test11@test", peer(5070, None), &w, Some(60)));
    r.drain();
    // Expiry while the first NOTIFY is out: the last one follows its answer.
    r.at(60);
    r.tick();
    assert!(r.drain().is_empty());
    r.dialog(&w, ringing("c1", "Alice"));
    r.ok(id);
    let n = r.drain();
    assert_eq!((n.len(), n[0].state.as_str()), (1, "terminated;reason=timeout"));
    assert!(n[0].body.contains("early"), "with the state current then");
    // Unsubscribe while a NOTIFY is out.
    let (id2, _) = accepted(r.subscribe("s2", "test11@test", peer(5070, None), &w, None));
    r.drain();
    r.refresh("s2", Some(0));
    assert!(r.drain().is_empty());
    r.ok(id2);
    assert!(r.drain()[0].last);
    assert!(r.n.is_empty());
}

#[test]
fn failed_or_unanswered_notifies_drop_the_subscription_silently() {
    let give_up = Duration::from_secs(40);
    let mut r =
        Run::new(NotifierSettings { notify_give_up: give_up, ..NotifierSettings::default() });
    let w = ext("test12@test");
    let p = peer(5070, None);
    let (a, _) = accepted(r.subscribe("a", "test11@test", p, &w, None));
    let (b, _) = accepted(r.subscribe("b", "test11@test", p, &w, None));
    let (c, _) = accepted(r.subscribe("c", "test11@test", p, &w, None));
    let (d, _) = accepted(r.subscribe("d", "test11@test", p, &w, None));
    assert_eq!(r.drain().len(), 4);
    r.n.handle_notify_outcome(r.now, a, NotifyOutcome::Response(481));
    r.n.handle_notify_outcome(r.now, b, NotifyOutcome::Timeout);
    r.n.handle_notify_outcome(r.now, c, NotifyOutcome::TransportError);
    assert_eq!(r.n.len(), 1);
    // d's NOTIFY is never answered: dropped at the give-up, no NOTIFY.
    assert_eq!(r.n.poll_timeout(), Some(r.t0 + Duration::from_secs(40)));
    r.dialog(&w, ringing("c1", "Alice"));
    r.at(40);
    r.tick();
    assert!(r.drain().is_empty());
    assert!(r.n.is_empty());
    assert_eq!(r.n.counters().dropped, 4);
    r.ok(d);
    assert!(r.drain().is_empty());
}

#[test]
fn subscribers_gone_end_their_subscriptions() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    let tcp = peer(40000, Some(7));
    accepted(r.subscribe("t", "test11@test", tcp, &w, None));
    let (u1, _) = accepted(r.subscribe("u1", "test11@test", peer(5070, None), &w, None));
    let (u2, _) = accepted(r.subscribe("u2", "test11@test", peer(5072, None), &w, None));
    let (o, _) = accepted(r.subscribe("o", "test13@test", peer(5090, None), &w, None));
    r.drain();
    for id in [u1, u2, o] {
        r.ok(id);
    }
    // The connection closed: nothing can reach that phone.
    r.n.handle_subscriber_gone(SubscriberGone::Connection(7));
    assert!(r.drain().is_empty());
    assert_eq!(r.n.len(), 3);
    // One binding of test11 (from 5072) went: only what came from there.
    let source = "192.0.2.10:5072".parse().unwrap();
    r.n.handle_subscriber_gone(SubscriberGone::Binding { aor: "test11@test", source });
    let n = r.drain();
    assert_eq!(
        n.iter().map(|s| (s.dialog.as_str(), s.state.as_str())).collect::<Vec<_>>(),
        [("u2", "terminated;reason=deactivated")]
    );
    r.n.handle_subscriber_gone(SubscriberGone::Aor("test11@test"));
    assert_eq!(r.drain().iter().map(|s| s.dialog.as_str()).collect::<Vec<_>>(), ["u1"]);
    // The watched extension deleted.
    r.n.handle_resource_gone(&w);
    let n = r.drain();
    assert_eq!((n[0].dialog.as_str(), n[0].state.as_str()), ("o", "terminated;reason=noresource"));
    assert!(r.n.is_empty());
    assert_eq!(r.n.resources(), 0);
}

#[test]
fn limits_per_subscriber_per_resource_and_in_all() {
    let cfg = NotifierSettings {
        max_per_subscriber: 2,
        max_per_watched: 3,
        max_total: 5,
        retry_after: 30,
        ..NotifierSettings::default()
    };
    let mut r = Run::new(cfg);
    let p = peer(5070, None);
    let (w1, w2) = (ext("a@test"), ext("b@test"));
    accepted(r.subscribe("1", "x@test", p, &w1, None));
    accepted(r.subscribe("2", "x@test", p, &w2, None));
    let third = r.subscribe("3", "x@test", p, &w1, None);
    assert_eq!(third, SubscribeAnswer::Refused(Refusal::TooManyForSubscriber));
    accepted(r.subscribe("4", "y@test", p, &w1, None));
    accepted(r.subscribe("5", "z@test", p, &w1, None));
    let crowd = r.subscribe("6", "v@test", p, &w1, None);
    assert_eq!(crowd, SubscribeAnswer::Refused(Refusal::TooManyWatchers { retry_after: 30 }));
    accepted(r.subscribe("7", "v@test", p, &w2, None));
    let full = r.subscribe("8", "u@test", p, &w2, None);
    assert_eq!(full, SubscribeAnswer::Refused(Refusal::Overloaded { retry_after: 30 }));
    assert_eq!(r.n.watchers(&w1), 3);
    assert_eq!(r.n.counters().refused, 3);
    // A refusal's answer: status, phrase and header.
    assert_eq!(crowd_answer(crowd), (480, "Too Many Watchers", Some("30".to_owned())));
}

fn crowd_answer(a: SubscribeAnswer) -> (u16, &'static str, Option<String>) {
    let SubscribeAnswer::Refused(r) = a else { panic!("accepted") };
    (r.status(), r.reason_phrase(), r.header().map(|h| h.1))
}

#[test]
fn unwatched_resources_keep_only_live_dialogs() {
    let mut r = Run::new(NotifierSettings { max_dialogs_shown: 2, ..NotifierSettings::default() });
    let w = ext("test12@test");
    r.dialog(&w, ringing("a", "Alice"));
    assert_eq!(r.n.resources(), 1);
    r.dialog(&w, state("a", DialogState::Terminated(Termination::default())));
    assert_eq!(r.n.resources(), 0, "nobody watches: forgotten at once");
    for id in ["a", "b", "c"] {
        r.dialog(&w, ringing(id, "Alice"));
    }
    accepted(r.subscribe("s", "test11@test", peer(5070, None), &w, None));
    let n = r.drain();
    assert_eq!(n[0].body.matches("<dialog ").count(), 2, "at most max_dialogs_shown");
    assert!(n[0].body.contains("id=\"a\"") && n[0].body.contains("id=\"b\""));
}

#[test]
fn the_event_id_is_echoed_and_names_the_subscription() {
    let mut r = Run::new(NotifierSettings::default());
    let w = ext("test12@test");
    let mut req = request("s", None, None);
    req.event_id = Some("k7".into());
    let new = NewSubscription {
        subscriber: Subscriber { aor: "test11@test".into(), peer: peer(5070, None) },
        watched: w.clone(),
        entity: "sip:test12@test".into(),
        local_tag: "lt-s".into(),
        dialog: Dialog { name: "s".into(), cseq: 0 },
    };
    let (id, _) = accepted(r.n.handle_new(r.now, &req, new));
    assert_eq!(r.drain()[0].event, "dialog;id=k7");
    r.ok(id);
    // A refresh must name the same id.
    assert_eq!(r.refresh("s", None), SubscribeAnswer::Refused(Refusal::NoSuchSubscription));
    let mut refresh = request("s", Some("lt-s"), None);
    refresh.event_id = Some("k7".into());
    assert_eq!(accepted(r.n.handle_refresh(r.now, &refresh)).0, id);
}

/// One step of a random run.
#[derive(Clone, Debug)]
enum Step {
    Subscribe { who: u8, what: u8, expires: u16 },
    Refresh { sub: u8, expires: u16 },
    Dialog { what: u8, call: u8, state: u8 },
    Answer { sub: u8, code: u16 },
    Gone { who: u8 },
    Advance { secs: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, 0u8..3, prop_oneof![Just(0u16), 30u16..200, Just(3600)])
            .prop_map(|(who, what, expires)| Step::Subscribe { who, what, expires }),
        (0u8..16, prop_oneof![Just(0u16), 60u16..200])
            .prop_map(|(sub, expires)| Step::Refresh { sub, expires }),
        (0u8..3, 0u8..4, 0u8..5).prop_map(|(what, call, state)| Step::Dialog { what, call, state }),
        (0u8..16, prop_oneof![Just(200u16), Just(180), Just(481), Just(500)])
            .prop_map(|(sub, code)| Step::Answer { sub, code }),
        (0u8..4).prop_map(|who| Step::Gone { who }),
        (1u16..90).prop_map(|secs| Step::Advance { secs }),
    ]
}

/// What the test knows of each subscription from the outside.
#[derive(Default)]
struct Seen {
    last_version: Option<u32>,
    out: bool,
    ended: bool,
}

fn check_sent(seen: &mut BTreeMap<SubscriptionId, Seen>, sent: &[Sent]) {
    for s in sent {
        let e = seen.entry(s.id).or_default();
        assert!(!e.ended, "a NOTIFY after the last one: {s:?}");
        assert!(!e.out, "two NOTIFYs in flight: {s:?}");
        let v = version(&s.body);
        assert_eq!(v, e.last_version.map_or(0, |p| p + 1), "versions count up by one");
        e.last_version = Some(v);
        e.out = !s.last;
        e.ended = s.last;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_keep_the_invariants(steps in proptest::collection::vec(step(), 1..80)) {
        let cfg = NotifierSettings { max_per_subscriber: 3, max_per_watched: 4, ..NotifierSettings::default() };
        let mut r = Run::new(cfg.clone());
        let mut seen: BTreeMap<SubscriptionId, Seen> = BTreeMap::new();
        let mut calls: Vec<String> = Vec::new();
        let mut secs = 0u64;
        let watched = |i: u8| ext(&format!("e{i}@test"));
        for (n, s) in steps.iter().enumerate() {
            match s {
                Step::Subscribe { who, what, expires } => {
                    let call = format!("c{n}");
                    let p = peer(5000 + u16::from(*who), None);
                    if let SubscribeAnswer::Accepted { .. } =
                        r.subscribe(&call, &format!("p{who}@test"), p, &watched(*what), Some(u32::from(*expires)))
                    {
                        calls.push(call);
                    }
                }
                Step::Refresh { sub, expires } => {
                    if let Some(call) = calls.get(usize::from(*sub)).cloned() {
                        r.refresh(&call, Some(u32::from(*expires)));
                    }
                }
                Step::Dialog { what, call, state: st } => {
                    let s = match st {
                        0 => DialogState::Trying,
                        1 => DialogState::Early,
                        2 => DialogState::Confirmed,
                        _ => DialogState::Terminated(Termination::default()),
                    };
                    r.dialog(&watched(*what), state(&format!("d{call}"), s));
                }
                Step::Answer { sub, code } => {
                    let ids: Vec<SubscriptionId> = seen.iter().filter(|(_, e)| e.out).map(|(id, _)| *id).collect();
                    if let Some(id) = ids.get(usize::from(*sub) % ids.len().max(1)) {
                        if *code >= 200 {
                            seen.get_mut(id).unwrap().out = false;
                        }
                        r.n.handle_notify_outcome(r.now, *id, NotifyOutcome::Response(*code));
                        if *code >= 300 {
                            seen.get_mut(id).unwrap().ended = true;
                        }
                    }
                }
                Step::Gone { who } => {
                    r.n.handle_subscriber_gone(SubscriberGone::Aor(&format!("p{who}@test")));
                }
                Step::Advance { secs: d } => {
                    secs += u64::from(*d);
                    r.at(secs);
                    r.tick();
                }
            }
            let sent = r.drain();
            check_sent(&mut seen, &sent);
            prop_assert!(r.n.len() <= 12);
        }
        // Every subscription ends: answer what is out, let time pass.
        for _ in 0..4 {
            let out: Vec<SubscriptionId> = seen.iter().filter(|(_, e)| e.out).map(|(id, _)| *id).collect();
            for id in out {
                seen.get_mut(&id).unwrap().out = false;
                r.ok(id);
            }
            secs += u64::from(cfg.max_expires) + 60;
            r.at(secs);
            r.tick();
            let sent = r.drain();
            check_sent(&mut seen, &sent);
        }
        prop_assert!(r.n.is_empty(), "{} subscriptions left", r.n.len());
        prop_assert_eq!(r.n.poll_timeout(), None);
    }
}

#[test]
fn the_same_inputs_give_the_same_notifies() {
    let run = || {
        let mut r = Run::new(NotifierSettings::default());
        let mut all = Vec::new();
        for i in 0..5u16 {
            let w = ext(&format!("e{}@test", i % 2));
            accepted(r.subscribe(
                &format!("s{i}"),
                &format!("p{i}@test"),
                peer(5000 + i, None),
                &w,
                None,
            ));
        }
        for i in 0..6u8 {
            all.extend(r.drain());
            let ids: Vec<SubscriptionId> = all.iter().map(|s| s.id).collect();
            for id in ids {
                r.ok(id);
            }
            r.dialog(&ext(&format!("e{}@test", i % 2)), ringing(&format!("c{i}"), "Alice"));
        }
        all.extend(r.drain());
        all
    };
    assert_eq!(run(), run());
}
