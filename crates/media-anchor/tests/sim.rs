//! The simulated rtpengine: what it does with a forked call, and what its
//! ledger tells at the end of a run.

use bytes::Bytes;
use media_anchor::command::{encode_request, Answer, Query};
use media_anchor::reply::decode_reply;
use media_anchor::{
    Command, CommandKind, Cookie, Delete, Offer, Reply, ReplyBody, SdpOptions, SimAnswer,
    SimFaults, SimRtpengine,
};
use std::time::Duration;

struct Driver {
    engine: SimRtpengine,
    n: u64,
}

impl Driver {
    fn new(faults: SimFaults) -> Driver {
        Driver { engine: SimRtpengine::new("192.0.2.10".parse().unwrap(), faults, 1), n: 0 }
    }

    /// Sends `c` with a fresh cookie; the reply, if any.
    fn ask(&mut self, c: Command) -> Option<Reply> {
        self.n += 1;
        self.ask_with(&Cookie::from_bits(self.n), c)
    }

    fn ask_with(&mut self, cookie: &Cookie, c: Command) -> Option<Reply> {
        let kind = c.kind();
        match self.engine.handle_datagram(&encode_request(cookie, &c)) {
            SimAnswer::Reply { bytes, .. } => {
                let (k, r) = decode_reply(kind, &bytes).unwrap();
                assert_eq!(&k, cookie);
                Some(r)
            }
            SimAnswer::Silent => None,
        }
    }
}

fn offer(branch: &str) -> Command {
    Command::Offer(Offer {
        call_id: "call".into(),
        from_tag: "ft".into(),
        via_branch: Some(branch.into()),
        sdp: Bytes::from_static(b"v=0\r\n"),
        options: SdpOptions::default(),
    })
}

fn answer(branch: &str, to_tag: &str) -> Command {
    Command::Answer(Answer {
        call_id: "call".into(),
        from_tag: "ft".into(),
        to_tag: to_tag.into(),
        via_branch: Some(branch.into()),
        sdp: Bytes::from_static(b"v=0\r\n"),
        options: SdpOptions::default(),
    })
}

fn delete_branch(branch: &str, to_tag: &str) -> Command {
    Command::Delete(Delete::branch("call", "ft", branch, Some(to_tag)))
}

fn whole_call() -> Command {
    Command::Delete(Delete::whole_call("call", "ft"))
}

fn won_b1(_: &str, branch: &str) -> bool {
    branch == "b1"
}

#[test]
fn a_fork_done_right_leaves_nothing() {
    let mut d = Driver::new(SimFaults::NONE);
    for b in ["b1", "b2", "b3"] {
        let r = d.ask(offer(b)).unwrap();
        let sdp = String::from_utf8(r.sdp().unwrap().to_vec()).unwrap();
        assert!(sdp.contains("c=IN IP4 192.0.2.10"), "{sdp}");
    }
    assert!(d.ask(answer("b1", "t1")).unwrap().sdp().is_some());
    let q = d
        .ask(Command::Query(Query { call_id: "call".into(), from_tag: None, to_tag: None }))
        .unwrap();
    let Reply::Ok { body: ReplyBody::Stats(s), .. } = q else { panic!("{q:?}") };
    assert_eq!(s.branch("b1").unwrap().tag, "t1");
    assert_eq!(s.tags.len(), 3);
    d.ask(delete_branch("b2", "t2")).unwrap();
    d.ask(delete_branch("b3", "t3")).unwrap();
    let again = d.ask(delete_branch("b3", "t3")).unwrap();
    assert!(matches!(again, Reply::Ok { warning: Some(_), .. }), "a second delete only warns");
    assert_eq!(
        d.ask(Command::List { limit: None }).unwrap(),
        Reply::ok(ReplyBody::Calls(vec!["call".into()]))
    );
    d.ask(whole_call()).unwrap();
    assert_eq!(d.ask(Command::List { limit: None }).unwrap(), Reply::ok(ReplyBody::Calls(vec![])));
    assert_eq!(d.engine.violations(won_b1), Vec::<String>::new());
    let l = &d.engine.ledger()[&("call".to_owned(), "b1".to_owned())];
    assert_eq!((l.lives, l.answers, l.deleted_by_branch, l.deleted_by_call), (1, 1, 0, 1));
    assert_eq!(l.to_tag.as_deref(), Some("t1"));
}

#[test]
fn leaks_and_wrong_deletes_are_violations() {
    let mut d = Driver::new(SimFaults::NONE);
    d.ask(offer("b1")).unwrap();
    d.ask(offer("b2")).unwrap();
    d.ask(answer("b1", "t1")).unwrap();
    d.ask(delete_branch("b1", "t1")).unwrap(); // the winner's media deleted
    let v = d.engine.violations(won_b1);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v[0].contains("b1") && v[0].contains("won"), "{v:?}");
    assert!(v[1].contains("b2") && v[1].contains("deleted 0"), "{v:?}");
    assert!(v[2].contains("left in rtpengine"), "{v:?}");
}

#[test]
fn answers_rtpengine_cannot_do() {
    let mut d = Driver::new(SimFaults::NONE);
    assert!(matches!(d.ask(answer("b9", "t9")), Some(Reply::Error { .. })), "no offer");
    d.ask(offer("b1")).unwrap();
    d.ask(answer("b1", "t1")).unwrap();
    d.ask(answer("b1", "t2")).unwrap(); // a second To tag on one branch
    d.ask(whole_call()).unwrap();
    let v = d.engine.violations(won_b1);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("without a live offer"));
    assert!(v[1].contains("To tags"));
}

#[test]
fn a_branch_offered_again_after_its_delete_lives_again() {
    let mut d = Driver::new(SimFaults::NONE);
    d.ask(offer("b1")).unwrap();
    d.ask(delete_branch("b1", "t1")).unwrap();
    d.ask(offer("b1")).unwrap();
    assert!(d.engine.violations(|_, _| false).len() == 2, "its second life is not deleted");
    d.ask(whole_call()).unwrap();
    assert_eq!(d.engine.violations(|_, _| false), Vec::<String>::new());
}

#[test]
fn a_repeated_cookie_gets_the_first_reply() {
    let mut d = Driver::new(SimFaults::NONE);
    let c = Cookie::new("k1").unwrap();
    let first = d.ask_with(&c, offer("b1")).unwrap();
    let second = d.ask_with(&c, offer("b1")).unwrap();
    assert_eq!(first, second);
    assert_eq!(d.engine.stats().repeats, 1);
    assert_eq!(d.engine.ledger()[&("call".to_owned(), "b1".to_owned())].offers, 1);
}

#[test]
fn faults() {
    let mut d = Driver::new(SimFaults { error_rate: 1.0, ..SimFaults::NONE });
    assert_eq!(d.ask(offer("b1")), Some(Reply::Error { reason: "simulated failure".into() }));
    assert_eq!(d.engine.live_calls().count(), 0, "an error changes nothing");
    assert!(matches!(d.ask(whole_call()), Some(Reply::Ok { .. })), "deletes never fail");
    d.engine.set_faults(SimFaults { drop_rate: 1.0, ..SimFaults::NONE });
    assert_eq!(d.ask(Command::Ping), None);
    d.engine.set_faults(SimFaults {
        slow_rate: 1.0,
        slow_delay: Duration::from_secs(2),
        ..SimFaults::NONE
    });
    let c = encode_request(&Cookie::from_bits(99), &Command::Ping);
    let SimAnswer::Reply { after, .. } = d.engine.handle_datagram(&c) else { panic!("silent") };
    assert_eq!(after, Duration::from_secs(2));
    d.engine.set_faults(SimFaults::NONE);
    d.engine.set_silent(true);
    assert_eq!(d.ask(Command::Ping), None);
    d.engine.set_silent(false);
    assert_eq!(d.ask(Command::Ping), Some(Reply::ok(ReplyBody::Pong)));
    let s = d.engine.stats();
    assert_eq!((s.injected_errors, s.dropped, s.slow), (1, 2, 1));
    // A request it cannot read gets an error with the reason.
    let bad = d.engine.handle_datagram(b"c1 d7:command5:offere");
    let SimAnswer::Reply { bytes, .. } = bad else { panic!("silent") };
    let (_, r) = decode_reply(CommandKind::Offer, &bytes).unwrap();
    assert!(matches!(r, Reply::Error { reason } if reason.contains("call-id")));
}
