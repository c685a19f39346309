//! The codec and the client against the real rtpengine (Debian's
//! `rtpengine-daemon`, userspace): ping, a forked call with media relayed,
//! the loser deleted by branch and the call by a bare delete, `error`
//! replies, the WebRTC profile's SDP, and failover when one is killed.

use bytes::Bytes;
use media_anchor::{
    Answer, ClientEvent, Command, Delete, Failure, InstanceId, InstanceSpec, LegMedia, Offer,
    Reply, ReplyBody, RtpengineSettings, SdpOptions, SdpRole,
};
use rtpengine_harness::{audio_port, relay_rtp as relay, NgDriver, Rtpengine};
use std::net::UdpSocket;
use std::time::Duration;

const FIRST: InstanceId = InstanceId(0);

fn start() -> (Rtpengine, NgDriver) {
    let r = Rtpengine::start().expect("rtpengine starts");
    let d = NgDriver::new(&[r.ng_addr()]).expect("driver");
    (r, d)
}

fn sdp_for(port: u16) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ))
}

fn offer(call: &str, branch: &str, sdp: Bytes, options: SdpOptions) -> Command {
    Command::Offer(Offer {
        call_id: call.into(),
        from_tag: "caller-tag".into(),
        via_branch: Some(branch.into()),
        sdp,
        options,
    })
}

fn answer(call: &str, branch: &str, to_tag: &str, sdp: Bytes) -> Command {
    Command::Answer(Answer {
        call_id: call.into(),
        from_tag: "caller-tag".into(),
        to_tag: to_tag.into(),
        via_branch: Some(branch.into()),
        sdp,
        options: LegMedia::Rtp.options(SdpRole::Answer),
    })
}

/// The SDP of an `ok` offer/answer reply, as text.
fn sdp_of(r: Result<Reply, Failure>) -> String {
    match r {
        Ok(Reply::Ok { body: ReplyBody::Sdp(s), .. }) => String::from_utf8(s.to_vec()).unwrap(),
        other => panic!("no SDP: {other:?}"),
    }
}

fn udp() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[test]
fn ping_and_an_empty_list() {
    let (_r, mut d) = start();
    assert_eq!(d.request(Command::Ping), Ok(Reply::ok(ReplyBody::Pong)));
    assert_eq!(d.list(FIRST), Vec::<String>::new());
}

#[test]
fn a_forked_call_relays_media_and_leaves_nothing() {
    let (r, mut d) = start();
    let (caller, caller_port) = udp();
    let (callee, callee_port) = udp();
    let call = "fork-1@test";
    let rtp = LegMedia::Rtp.options(SdpRole::Offer);
    // One offer per leg of the fork, each with its own Via branch.
    let to_b1 = sdp_of(d.request(offer(call, "z9hG4bK-b1", sdp_for(caller_port), rtp.clone())));
    let to_b2 = sdp_of(d.request(offer(call, "z9hG4bK-b2", sdp_for(caller_port), rtp)));
    for s in [&to_b1, &to_b2] {
        assert!(s.contains("c=IN IP4 127.0.0.1"), "{s}");
        let p = audio_port(s);
        assert!((r.ports().0..=r.ports().1).contains(&p), "port {p} is rtpengine's: {s}");
        assert_ne!(p, caller_port, "the callee never sees the caller's port");
    }
    assert_ne!(audio_port(&to_b1), audio_port(&to_b2), "each leg has its own ports");
    // Leg b1 answers.
    let to_caller = sdp_of(d.request(answer(call, "z9hG4bK-b1", "callee-1", sdp_for(callee_port))));
    let caller_sends_to = audio_port(&to_caller);
    assert_ne!(caller_sends_to, callee_port);
    // Media flows both ways through rtpengine.
    assert_eq!(relay(&caller, caller_sends_to, &callee, 5), 5, "caller -> callee; {}", r.log());
    assert_eq!(relay(&callee, audio_port(&to_b1), &caller, 5), 5, "callee -> caller");
    // The loser is deleted by its Via branch and To tag; a repeat finds nothing.
    let loser = Command::Delete(Delete::branch(call, "caller-tag", "z9hG4bK-b2", Some("callee-2")));
    let first = d.request(loser.clone()).unwrap();
    assert!(matches!(first, Reply::Ok { body: ReplyBody::Stats(_), warning: None }), "{first:?}");
    let again = d.request(loser).unwrap();
    assert!(matches!(again, Reply::Ok { warning: Some(_), .. }), "deleted already: {again:?}");
    // The winner's media still flows; query counts it per tag and in total.
    assert_eq!(relay(&caller, caller_sends_to, &callee, 3), 3, "after the loser's delete");
    let q = d.query(call);
    assert_eq!(q.rtp.packets, 13, "{q:?}");
    assert_eq!(q.branch("z9hG4bK-b1").map(|t| t.tag.as_str()), Some("callee-1"));
    let caller_tag = q.tag("caller-tag").expect("the caller's tag");
    let received: u64 =
        caller_tag.medias.iter().flat_map(|m| &m.streams).map(|s| s.stats.packets).sum();
    assert_eq!(received, 8, "rtpengine received 8 from the caller");
    assert_eq!(d.list(FIRST), vec![call.to_owned()]);
    // A bare delete ends the call, the winner's media included.
    let end = d.request(Command::Delete(Delete::whole_call(call, "caller-tag"))).unwrap();
    let Reply::Ok { body: ReplyBody::Stats(totals), warning: None } = end else {
        panic!("{end:?}")
    };
    assert_eq!(totals.rtp.packets, 13);
    assert_eq!(d.list(FIRST), Vec::<String>::new(), "nothing left");
    assert_eq!(d.client().calls(), 0, "the client forgot the call");
    assert_eq!(relay(&caller, caller_sends_to, &callee, 1), 0, "no relay after the delete");
}

#[test]
fn error_replies() {
    let (_r, mut d) = start();
    let unknown = d.request(answer("no-such-call", "b", "t", sdp_for(4000)));
    assert!(matches!(&unknown, Ok(Reply::Error { reason }) if !reason.is_empty()), "{unknown:?}");
    let garbage =
        d.request(offer("c-bad", "b", Bytes::from_static(b"not an SDP"), SdpOptions::default()));
    assert!(matches!(&garbage, Ok(Reply::Error { .. })), "{garbage:?}");
    let q = media_anchor::Query { call_id: "no-such-call".into(), from_tag: None, to_tag: None };
    assert!(matches!(d.request(Command::Query(q)), Ok(Reply::Error { .. })));
    assert_eq!(d.list(FIRST), Vec::<String>::new());
}

#[test]
fn the_webrtc_profile_and_back() {
    let (_r, mut d) = start();
    // A desk phone's plain RTP offer toward a browser.
    let webrtc = LegMedia::Webrtc.options(SdpRole::Offer);
    let to_browser = sdp_of(d.request(offer("w1", "b1", sdp_for(4000), webrtc)));
    for needle in [
        "m=audio ",
        " UDP/TLS/RTP/SAVPF 0",
        "a=candidate:",
        "typ host",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=fingerprint:sha-256 ",
        "a=setup:actpass",
        "a=rtcp-mux",
        "a=mid:",
    ] {
        assert!(to_browser.contains(needle), "{needle:?} not in {to_browser}");
    }
    assert!(!to_browser.contains("a=crypto"), "no SDES toward a browser: {to_browser}");
    // That WebRTC SDP, offered toward a plain SIP phone, loses ICE and DTLS.
    let plain = LegMedia::Rtp.options(SdpRole::Offer);
    let to_phone = sdp_of(d.request(offer("w2", "b1", Bytes::from(to_browser), plain)));
    assert!(to_phone.contains(" RTP/AVP 0"), "{to_phone}");
    for absent in ["a=candidate", "a=fingerprint", "a=ice-", "a=rtcp-mux", "SAVP"] {
        assert!(!to_phone.contains(absent), "{absent:?} in {to_phone}");
    }
    // The phone's plain answer, back toward the browser: WebRTC again, with
    // rtpengine in the passive DTLS role and rtcp-mux.
    let back = Command::Answer(Answer {
        call_id: "w2".into(),
        from_tag: "caller-tag".into(),
        to_tag: "phone".into(),
        via_branch: Some("b1".into()),
        sdp: sdp_for(4004),
        options: LegMedia::Webrtc.options(SdpRole::Answer),
    });
    let to_browser = sdp_of(d.request(back));
    for needle in [
        " UDP/TLS/RTP/SAVPF 0",
        "a=candidate:",
        "a=fingerprint:",
        "a=setup:passive",
        "a=rtcp-mux",
        "a=mid:",
    ] {
        assert!(to_browser.contains(needle), "{needle:?} not in the answer {to_browser}");
    }
    let srtp = LegMedia::SrtpSdes.options(SdpRole::Offer);
    let sdes = sdp_of(d.request(offer("w3", "b1", sdp_for(4002), srtp)));
    assert!(sdes.contains(" RTP/SAVP 0") && sdes.contains("a=crypto:"), "{sdes}");
    for call in ["w1", "w2", "w3"] {
        d.request(Command::Delete(Delete::whole_call(call, "caller-tag"))).unwrap();
    }
    assert_eq!(d.list(FIRST), Vec::<String>::new());
}

#[test]
fn a_killed_instance_is_marked_down_and_new_calls_go_to_the_other() {
    let mut a = Rtpengine::start().expect("rtpengine a");
    let b = Rtpengine::start().expect("rtpengine b");
    // a takes nearly every new call while it is up.
    let instances = [(a.ng_addr(), 1000), (b.ng_addr(), 1)];
    let mut s = RtpengineSettings::new(
        instances.map(|(addr, weight)| InstanceSpec { addr, weight }).to_vec(),
    );
    s.timeout = Duration::from_millis(200);
    let mut d = NgDriver::with_settings(&s, 7).unwrap();
    assert_eq!(d.request_to(InstanceId(0), Command::Ping), Ok(Reply::ok(ReplyBody::Pong)));
    a.kill();
    // The first new call goes to a, gets no reply, and fails over to b;
    // a is marked down, and the next calls go straight to b.
    let rtp = LegMedia::Rtp.options(SdpRole::Offer);
    for n in 0..4 {
        let r = d.request(offer(&format!("k{n}"), "b1", sdp_for(4000), rtp.clone()));
        assert!(r.as_ref().is_ok_and(|r| r.sdp().is_some()), "{r:?}");
        assert_eq!(d.client().call_instance(&format!("k{n}")).unwrap().0, InstanceId(1));
    }
    assert_eq!(d.client().counters().failovers, 1);
    let down = d
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::InstanceDown { instance: InstanceId(0), .. }));
    assert_eq!(down.count(), 1);
    let mut listed = d.list(InstanceId(1));
    listed.sort();
    assert_eq!(listed, ["k0", "k1", "k2", "k3"]);
    for n in 0..4 {
        d.request(Command::Delete(Delete::whole_call(&format!("k{n}"), "caller-tag"))).unwrap();
    }
    assert_eq!(d.list(InstanceId(1)), Vec::<String>::new());
}
