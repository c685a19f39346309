//! Anchored media: the switch's side of rtpengine's ng protocol, one more
//! input/output pair of the core like DNS. The [`media_anchor::NgClient`]
//! (cookies, retries, failover, instance health) lives here; what it sends
//! goes out as [`crate::Output::Media`], what comes back goes in as
//! [`crate::Input::MediaDatagram`], its deadline is one timer of the
//! switch's queue.
//!
//! Per forked call ([`MediaCall`]): one `offer` per fork leg, with its own
//! via-branch under the caller's Call-ID and From tag, before the leg's
//! INVITE goes out (the leg waits in [`LegMedia::Offering`]); one `answer`
//! with the leg's To tag before its 183 or 2xx SDP goes to the caller; one
//! branch `delete` per losing leg (failed, cancelled, never answered, or
//! the loser of a double answer), never one for the winner; one bare
//! `delete` of the whole call when its dialogs are over.

use b2bua::{CallRef, DialTarget, RelayRef};
use bytes::Bytes;
use groupcall::LegId;
use media_anchor::{
    Answer, ClientEvent, Command, Delete, Done, Failure, InstanceState, NgClient, Offer, OnFailure,
    Profile, Reply, RequestToken, RtpengineSettings, SdpRole,
};
use rustc_hash::FxHashMap;
use sip_message::Transport;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A datagram for an rtpengine's ng port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaTransmit {
    /// The ng address.
    pub to: SocketAddr,
    /// `<cookie> <bencoded dictionary>`.
    pub bytes: Bytes,
}

/// What happened on the ng side, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// A request is done: its command, its result (`ok`, `error`,
    /// `timeout`, ...: [`media_anchor::Done::result_label`]) and latency.
    Request {
        /// `offer`, `answer`, `delete`, `ping`, ...
        command: &'static str,
        /// How it ended.
        result: &'static str,
        /// From the first send to the outcome.
        latency: Duration,
    },
    /// An rtpengine stopped answering (`up: false`) or came back.
    Instance {
        /// Its ng address.
        addr: SocketAddr,
        /// Its new state.
        up: bool,
    },
    /// A request got no usable answer: the call went on as `on_failure`
    /// says.
    Failed {
        /// The command.
        command: &'static str,
        /// The caller's SIP Call-ID.
        call_id: String,
        /// Why (the error reason, or the failure).
        reason: String,
    },
}

/// Where one fork leg's media stands.
#[derive(Debug)]
enum LegMedia {
    /// Its offer is out; the INVITE waits for the reply.
    Offering(Box<DialTarget>),
    /// Its offer was cancelled while out: the reply gets a delete.
    Abandoned,
    /// Anchored: rtpengine holds its branch; the leg's transport.
    Anchored(Transport),
    /// It won (its To tag): only the whole call's delete touches it.
    Won(Transport, String),
    /// Its branch was deleted (or was never anchored).
    Gone,
}

/// One call's media at rtpengine.
#[derive(Debug)]
struct MediaCall {
    /// The caller's SIP Call-ID and From tag: rtpengine's call.
    call_id: String,
    from_tag: String,
    /// The caller's offer and the transport it came over.
    caller_sdp: Bytes,
    caller_transport: Transport,
    /// By fork leg.
    legs: FxHashMap<LegId, LegMedia>,
    /// The bare delete went out.
    ended: bool,
}

impl MediaCall {
    fn branch(&self, cref: CallRef, leg: LegId) -> String {
        format!("fs{}-{}", cref.as_u64(), leg.0)
    }
}

/// What a request's reply is awaited for.
#[derive(Clone, Copy, Debug)]
enum Awaited {
    /// A fork leg's offer: its INVITE waits.
    Offer { call: CallRef, leg: LegId },
    /// A leg's SDP toward the caller: its 183 (`early`) or 2xx waits.
    Answer { call: CallRef, leg: LegId, early: bool },
    /// A relayed re-INVITE's or UPDATE's offer, or its 2xx's answer.
    Relay { call: CallRef, relay: RelayRef },
    /// A delete: nothing waits.
    Delete,
}

/// What the switch does next with a reply.
#[derive(Debug)]
pub(crate) enum MediaStep {
    /// Dial the leg (with rtpengine's offer, or the caller's one when
    /// `on_failure = "passthrough"` let it through unanchored: no
    /// `anchor`).
    Dial { call: CallRef, leg: LegId, target: Box<DialTarget>, anchor: Option<LegAnchor> },
    /// The leg's offer failed and `on_failure = "reject"`: fail the leg and
    /// refuse the call (503).
    FailLeg { call: CallRef, leg: LegId },
    /// Send the leg's 183 or 2xx to the caller, with rtpengine's SDP
    /// (`None`: the leg's own, when the answer failed).
    /// `anchor`: where the caller's media is, when rtpengine answered.
    Relay { call: CallRef, leg: LegId, early: bool, sdp: Option<Bytes>, anchor: Option<LegAnchor> },
    /// Let a held in-dialog relay go on with rtpengine's SDP (`None`: its
    /// own: an established call is never torn down for its media).
    Release { call: CallRef, relay: RelayRef, sdp: Option<Bytes> },
}

/// Where a leg's media is anchored, for its call record.
#[derive(Debug)]
pub(crate) struct LegAnchor {
    /// The ng address of the rtpengine that holds it.
    pub(crate) rtpengine: SocketAddr,
    /// The audio address rtpengine's offer gives the leg.
    pub(crate) address: Option<SocketAddr>,
}

impl LegAnchor {
    /// Its rtpengine and address as the call record has them (`IP:port`;
    /// no address: empty).
    fn texts(&self) -> (String, String) {
        let address = self.address.map(|a| a.to_string()).unwrap_or_default();
        (self.rtpengine.to_string(), address)
    }
}

/// A re-INVITE's or UPDATE's SDP (or its 2xx's) held by the B2BUA.
pub(crate) struct HeldSdp {
    pub(crate) call: CallRef,
    pub(crate) relay: RelayRef,
    /// The offerer: the caller (`None`) or a fork leg.
    pub(crate) from_leg: Option<LegId>,
    pub(crate) sdp: Bytes,
    /// The 2xx's answer (else the request's offer).
    pub(crate) answer: bool,
}

/// The ng client and every anchored call.
pub(crate) struct MediaControl {
    client: NgClient,
    on_failure: OnFailure,
    profile: Profile,
    next_token: u64,
    awaited: FxHashMap<u64, Awaited>,
    calls: FxHashMap<CallRef, MediaCall>,
    /// The client's deadline as filed in the switch's timer queue.
    pub(crate) filed: Option<Instant>,
    events: VecDeque<MediaEvent>,
}

/// What an anchored offer of one leg is made of.
pub(crate) struct LegOffer<'a> {
    pub(crate) call: CallRef,
    pub(crate) leg: LegId,
    pub(crate) target: DialTarget,
    /// The caller's side, when the call has no media state yet.
    pub(crate) caller: &'a b2bua::CallerMedia,
}

impl MediaControl {
    /// The client for `settings`, its randomness from `seed`, anchoring
    /// every leg with `profile`.
    pub(crate) fn new(
        settings: &RtpengineSettings,
        profile: Profile,
        seed: u64,
        now: Instant,
    ) -> MediaControl {
        MediaControl {
            client: NgClient::new(settings, seed, now),
            on_failure: settings.on_failure,
            profile,
            next_token: 0,
            awaited: FxHashMap::default(),
            calls: FxHashMap::default(),
            filed: None,
            events: VecDeque::new(),
        }
    }

    fn send(&mut self, now: Instant, command: Command, awaited: Awaited) {
        self.next_token += 1;
        self.awaited.insert(self.next_token, awaited);
        self.client.send(now, RequestToken(self.next_token), command);
    }

    /// Sends a leg's offer; its INVITE waits for [`MediaStep::Dial`].
    pub(crate) fn offer(&mut self, now: Instant, o: LegOffer<'_>) {
        let mc = self.calls.entry(o.call).or_insert_with(|| MediaCall {
            call_id: o.caller.call_id.clone(),
            from_tag: o.caller.from_tag.clone(),
            caller_sdp: o.caller.sdp.clone(),
            caller_transport: o.caller.transport,
            legs: FxHashMap::default(),
            ended: false,
        });
        let options = self.profile.for_leg(o.target.next_hop.transport).options(SdpRole::Offer);
        let command = Command::Offer(Offer {
            call_id: mc.call_id.clone(),
            from_tag: mc.from_tag.clone(),
            via_branch: Some(mc.branch(o.call, o.leg)),
            sdp: mc.caller_sdp.clone(),
            options,
        });
        mc.legs.insert(o.leg, LegMedia::Offering(Box::new(o.target)));
        self.send(now, command, Awaited::Offer { call: o.call, leg: o.leg });
    }

    /// `true` when the leg's media is anchored (its SDP toward the caller
    /// must go through an answer).
    pub(crate) fn is_anchored(&self, call: CallRef, leg: LegId) -> bool {
        self.calls.get(&call).is_some_and(|c| {
            matches!(c.legs.get(&leg), Some(LegMedia::Anchored(_) | LegMedia::Won(..)))
        })
    }

    /// `true` when the leg's INVITE waits for its offer.
    pub(crate) fn is_offering(&self, call: CallRef, leg: LegId) -> bool {
        self.calls
            .get(&call)
            .is_some_and(|c| matches!(c.legs.get(&leg), Some(LegMedia::Offering(_))))
    }

    /// Sends the `answer` for leg `leg`'s SDP (183 when `early`, else
    /// 2xx) under its To tag; the relay to the caller waits for
    /// [`MediaStep::Relay`]. A winning 2xx makes the leg the winner.
    pub(crate) fn answer(&mut self, now: Instant, a: LegAnswer) {
        let Some(mc) = self.calls.get_mut(&a.call) else { return };
        let branch = mc.branch(a.call, a.leg);
        if !a.early {
            if let Some(l) = mc.legs.get_mut(&a.leg) {
                if let LegMedia::Anchored(t) = *l {
                    *l = LegMedia::Won(t, a.to_tag.clone());
                }
            }
        }
        let options = self.profile.for_leg(mc.caller_transport).options(SdpRole::Answer);
        let command = Command::Answer(Answer {
            call_id: mc.call_id.clone(),
            from_tag: mc.from_tag.clone(),
            to_tag: a.to_tag,
            via_branch: Some(branch),
            sdp: a.sdp,
            options,
        });
        let awaited = Awaited::Answer { call: a.call, leg: a.leg, early: a.early };
        self.send(now, command, awaited);
    }

    /// Sends the offer (or answer) of a held in-dialog relay through the
    /// winner's branch; `false` when the call is not anchored (let it go
    /// as it is).
    pub(crate) fn relay_sdp(&mut self, now: Instant, h: HeldSdp) -> bool {
        let Some(mc) = self.calls.get(&h.call) else { return false };
        let winner = mc.legs.iter().find_map(|(l, m)| match m {
            LegMedia::Won(t, tag) => Some((*l, *t, tag.clone())),
            _ => None,
        });
        let Some((leg, leg_transport, leg_tag)) = winner else { return false };
        if h.from_leg.is_some_and(|l| l != leg) {
            return false;
        }
        // Tags by who offered; the options fit the side the SDP goes to.
        let (offerer, answerer) = match h.from_leg {
            None => (mc.from_tag.clone(), leg_tag),
            Some(_) => (leg_tag, mc.from_tag.clone()),
        };
        let toward_leg = h.from_leg.is_none() != h.answer;
        let transport = if toward_leg { leg_transport } else { mc.caller_transport };
        let role = if h.answer { SdpRole::Answer } else { SdpRole::Offer };
        let options = self.profile.for_leg(transport).options(role);
        let (call_id, via_branch) = (mc.call_id.clone(), Some(mc.branch(h.call, leg)));
        let command = if h.answer {
            let (from_tag, to_tag) = (offerer, answerer);
            Command::Answer(Answer { call_id, from_tag, to_tag, via_branch, sdp: h.sdp, options })
        } else {
            Command::Offer(Offer { call_id, from_tag: offerer, via_branch, sdp: h.sdp, options })
        };
        self.send(now, command, Awaited::Relay { call: h.call, relay: h.relay });
        true
    }

    /// A losing leg: its branch is deleted (once; never the winner's). A
    /// leg whose offer is still out is deleted when the reply comes.
    pub(crate) fn leg_lost(
        &mut self,
        now: Instant,
        call: CallRef,
        leg: LegId,
        to_tag: Option<&str>,
    ) {
        let Some(mc) = self.calls.get_mut(&call) else { return };
        let Some(state) = mc.legs.get_mut(&leg) else { return };
        match state {
            LegMedia::Offering(_) => *state = LegMedia::Abandoned,
            LegMedia::Anchored(_) => {
                *state = LegMedia::Gone;
                let d = Delete::branch(&mc.call_id, &mc.from_tag, &mc.branch(call, leg), to_tag);
                self.send(now, Command::Delete(d), Awaited::Delete);
            }
            LegMedia::Abandoned | LegMedia::Won(..) | LegMedia::Gone => {}
        }
    }

    /// The call's dialogs are over: one bare delete of the whole call.
    pub(crate) fn call_ended(&mut self, now: Instant, call: CallRef) {
        let Some(mc) = self.calls.get_mut(&call) else { return };
        for l in mc.legs.values_mut() {
            if matches!(l, LegMedia::Offering(_)) {
                *l = LegMedia::Abandoned;
            }
        }
        if !mc.ended {
            mc.ended = true;
            let d = Delete::whole_call(&mc.call_id, &mc.from_tag);
            self.send(now, Command::Delete(d), Awaited::Delete);
        }
        self.forget_if_done(call);
    }

    /// Drops a call's state once it ended and no offer of it is out.
    fn forget_if_done(&mut self, call: CallRef) {
        let done = self.calls.get(&call).is_some_and(|mc| {
            mc.ended
                && !mc
                    .legs
                    .values()
                    .any(|l| matches!(l, LegMedia::Offering(_) | LegMedia::Abandoned))
        });
        if done {
            self.calls.remove(&call);
        }
    }

    /// A datagram from the ng socket.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.client.handle_datagram(now, from, bytes);
    }

    /// The client's deadline came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.filed = None;
        self.client.handle_timeout(now);
    }

    /// The client's next deadline.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<MediaTransmit> {
        self.client.poll_transmit().map(|t| MediaTransmit { to: t.to, bytes: t.bytes })
    }

    /// The next event for logs and metrics.
    pub(crate) fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next thing the switch must do for a reply (or a failure), after
    /// the client's events are taken in. `None`: nothing now.
    pub(crate) fn poll_step(&mut self, now: Instant) -> Option<MediaStep> {
        while let Some(ev) = self.client.poll_event() {
            match ev {
                ClientEvent::Done(done) => {
                    if let Some(step) = self.on_done(now, done) {
                        return Some(step);
                    }
                }
                ClientEvent::InstanceDown { addr, .. } => {
                    self.events.push_back(MediaEvent::Instance { addr, up: false });
                }
                ClientEvent::InstanceUp { addr, .. } => {
                    self.events.push_back(MediaEvent::Instance { addr, up: true });
                }
                ClientEvent::ReplyDropped { .. } => {}
            }
        }
        None
    }

    fn on_done(&mut self, now: Instant, done: Done) -> Option<MediaStep> {
        let request = MediaEvent::Request {
            command: done.command.as_str(),
            result: done.result_label(),
            latency: done.latency,
        };
        self.events.push_back(request);
        let awaited = self.awaited.remove(&done.token?.0)?;
        let sdp = match &done.outcome {
            Ok(r @ Reply::Ok { .. }) => r.sdp().cloned(),
            _ => None,
        };
        if sdp.is_none() && !matches!(awaited, Awaited::Delete) {
            self.failed(done.command.as_str(), &awaited, &done.outcome);
        }
        let rtpengine = done.instance.and_then(|id| {
            self.client.instances().find_map(|(i, addr, _)| (i == id).then_some(addr))
        });
        let anchor = sdp.as_ref().zip(rtpengine).map(|(sdp, rtpengine)| LegAnchor {
            rtpengine,
            address: media_anchor::audio_address(sdp),
        });
        match awaited {
            Awaited::Offer { call, leg } => self.offer_done(now, (call, leg), sdp, anchor),
            Awaited::Answer { call, leg, early } => {
                Some(MediaStep::Relay { call, leg, early, sdp, anchor })
            }
            Awaited::Relay { call, relay } => Some(MediaStep::Release { call, relay, sdp }),
            Awaited::Delete => None,
        }
    }

    fn failed(
        &mut self,
        command: &'static str,
        awaited: &Awaited,
        outcome: &Result<Reply, Failure>,
    ) {
        let call = match *awaited {
            Awaited::Offer { call, .. }
            | Awaited::Answer { call, .. }
            | Awaited::Relay { call, .. } => call,
            Awaited::Delete => return,
        };
        let call_id = self.calls.get(&call).map(|c| c.call_id.clone()).unwrap_or_default();
        let reason = match outcome {
            Ok(Reply::Error { reason }) => reason.clone(),
            Ok(other) => format!("no SDP in {other:?}"),
            Err(f) => format!("{f:?}"),
        };
        self.events.push_back(MediaEvent::Failed { command, call_id, reason });
    }

    fn offer_done(
        &mut self,
        now: Instant,
        (call, leg): (CallRef, LegId),
        sdp: Option<Bytes>,
        anchor: Option<LegAnchor>,
    ) -> Option<MediaStep> {
        let mc = self.calls.get_mut(&call)?;
        let state = mc.legs.get_mut(&leg)?;
        let taken = std::mem::replace(state, LegMedia::Gone);
        match (taken, sdp) {
            (LegMedia::Offering(mut target), Some(sdp)) => {
                *state = LegMedia::Anchored(target.next_hop.transport);
                target.sdp = Some(sdp);
                Some(MediaStep::Dial { call, leg, target, anchor })
            }
            (LegMedia::Offering(target), None) => match self.on_failure {
                OnFailure::Passthrough => Some(MediaStep::Dial { call, leg, target, anchor: None }),
                OnFailure::Reject => Some(MediaStep::FailLeg { call, leg }),
            },
            (LegMedia::Abandoned, Some(_)) => {
                // Cancelled while its offer was out: rtpengine made the
                // branch all the same. After the call's own delete, the
                // offer made the call again: delete it whole.
                let d = if mc.ended {
                    Delete::whole_call(&mc.call_id, &mc.from_tag)
                } else {
                    Delete::branch(&mc.call_id, &mc.from_tag, &mc.branch(call, leg), None)
                };
                self.send(now, Command::Delete(d), Awaited::Delete);
                self.forget_if_done(call);
                None
            }
            (other, _) => {
                *state = other;
                self.forget_if_done(call);
                None
            }
        }
    }

    /// Calls with media state (for the simulation's leak check).
    pub(crate) fn calls(&self) -> usize {
        self.calls.len()
    }

    /// rtpengine instances configured, and those up.
    pub(crate) fn instances(&self) -> (u64, u64) {
        let up = self.client.instances().filter(|(_, _, s)| *s == InstanceState::Up).count();
        (self.client.instances().count() as u64, up as u64)
    }
}

/// A leg's SDP toward the caller, to be answered.
pub(crate) struct LegAnswer {
    pub(crate) call: CallRef,
    pub(crate) leg: LegId,
    pub(crate) to_tag: String,
    pub(crate) sdp: Bytes,
    /// A 183 (the leg has not won yet).
    pub(crate) early: bool,
}

// ----- the switch's media steps -------------------------------------------

use crate::calls::ForkedCall;
use crate::input::Now;
use crate::output::{Event, Output};
use b2bua::CallEvent;
use groupcall::LegEvent;

impl crate::Switch {
    /// Moves the ng client's datagrams and events out, and takes the steps
    /// its replies call for; `true` when anything moved (the pump goes
    /// round again: a step may have sent SIP or another ng request).
    pub(crate) fn pump_media(&mut self, now: Now) -> bool {
        let mut busy = false;
        while let Some(step) = self.media.as_mut().and_then(|m| m.poll_step(now.at)) {
            busy = true;
            self.media_step(now, step);
        }
        let Some(m) = &mut self.media else { return busy };
        while let Some(t) = m.poll_transmit() {
            busy = true;
            self.out.push_back(Output::Media(t));
        }
        while let Some(ev) = m.poll_event() {
            if let MediaEvent::Request { command, result, latency } = &ev {
                self.counters.media.request(command, result, *latency);
            }
            self.out.push_back(Output::Event(Event::Media(ev)));
        }
        busy
    }

    /// What a reply (or its failure) lets go on.
    fn media_step(&mut self, now: Now, step: MediaStep) {
        let call = match step {
            MediaStep::Dial { call, .. }
            | MediaStep::FailLeg { call, .. }
            | MediaStep::Relay { call, .. } => call,
            MediaStep::Release { call, relay, sdp } => {
                let _ = self.b2bua.release_relay(&mut self.tx, now.at, call, relay, sdp);
                return;
            }
        };
        self.on_forked_call(now, call, |sw, fc| {
            match step {
                MediaStep::Dial { leg, target, anchor, .. } => {
                    sw.dial_now(now, fc, leg, *target);
                    if let Some(a) = anchor {
                        let (rtpengine, address) = a.texts();
                        fc.fork.leg_media(now.into(), leg, &rtpengine, &address);
                    }
                }
                MediaStep::FailLeg { leg, .. } => {
                    // No relay for the caller's offer: no leg can be
                    // anchored, the caller gets 503.
                    fc.fork.refuse(now.into(), 503);
                    fc.fork.leg_event(now.into(), leg, LegEvent::Failed { code: 503 });
                }
                MediaStep::Relay { leg, early, sdp, anchor, .. } => {
                    if let Some(a) = anchor.filter(|_| !early) {
                        let (rtpengine, address) = a.texts();
                        fc.anchor_inbound(&mut sw.out, now, (&rtpengine, &address));
                    }
                    sw.relay_anchored(now, fc, leg, (early, sdp))
                }
                MediaStep::Release { .. } => {}
            }
            sw.apply_actions(now, fc);
        });
    }

    /// Sends a leg's 183 or 2xx to the caller with rtpengine's SDP (the
    /// leg's own when the answer failed); a 2xx the caller can no longer
    /// take (it went meanwhile) ends the leg.
    fn relay_anchored(
        &mut self,
        now: Now,
        fc: &mut ForkedCall,
        leg: LegId,
        (early, sdp): (bool, Option<Bytes>),
    ) {
        let Some(lr) = fc.leg(leg) else { return };
        let cref = fc.cref;
        if let Some(sdp) = sdp {
            self.b2bua.replace_leg_answer_sdp(cref, lr, sdp);
        }
        let (tx, at) = (&mut self.tx, now.at);
        if early {
            let _ = self.b2bua.early_media_caller(tx, at, cref, lr);
        } else if self.b2bua.answer_caller(tx, at, cref, lr).is_err() {
            let _ = self.b2bua.ack_and_bye(tx, at, cref, lr);
        }
    }

    /// Sends leg `leg`'s offer when its media is anchored (an inbound
    /// caller with an offer, media on); the target comes back (`Some`) when
    /// it is to be dialed at once.
    pub(crate) fn offer_leg(
        &mut self,
        now: Now,
        fc: &ForkedCall,
        leg: LegId,
        target: DialTarget,
    ) -> Option<DialTarget> {
        let Some(m) = self.media.as_mut().filter(|_| fc.is_inbound()) else { return Some(target) };
        let Some(caller) = self.b2bua.caller_media(fc.cref) else { return Some(target) };
        m.offer(now.at, LegOffer { call: fc.cref, leg, target, caller: &caller });
        None
    }

    /// Sends the answer for an anchored leg's 183 (`early`) or 2xx;
    /// `false` when the leg is not anchored (relay its SDP as it is).
    pub(crate) fn answer_leg(
        &mut self,
        now: Now,
        fc: &ForkedCall,
        leg: LegId,
        early: bool,
    ) -> bool {
        let Some(m) = self.media.as_mut().filter(|m| m.is_anchored(fc.cref, leg)) else {
            return false;
        };
        let Some(lr) = fc.leg(leg) else { return false };
        let Some((sdp, to_tag)) = self.b2bua.leg_answer_sdp(fc.cref, lr) else { return false };
        m.answer(now.at, LegAnswer { call: fc.cref, leg, to_tag, sdp, early });
        true
    }

    /// A fork leg lost (failed, cancelled, or the loser of a double
    /// answer): its branch is deleted.
    pub(crate) fn media_leg_lost(&mut self, now: Now, fc: &ForkedCall, leg: LegId) {
        let Some(m) = &mut self.media else { return };
        let to_tag = fc.leg(leg).and_then(|lr| self.b2bua.leg_answer_sdp(fc.cref, lr));
        m.leg_lost(now.at, fc.cref, leg, to_tag.as_ref().map(|(_, t)| t.as_str()));
    }

    /// A CANCEL of a leg whose INVITE still waits for its offer: the leg
    /// is cancelled at once (no INVITE goes out). `false` when not waiting.
    pub(crate) fn cancel_offering(&mut self, now: Now, fc: &mut ForkedCall, leg: LegId) -> bool {
        let Some(m) = self.media.as_mut().filter(|m| m.is_offering(fc.cref, leg)) else {
            return false;
        };
        m.leg_lost(now.at, fc.cref, leg, None);
        fc.fork.leg_event(now.into(), leg, LegEvent::Cancelled);
        true
    }

    /// A re-INVITE's or UPDATE's SDP (or its 2xx's) the B2BUA holds: through
    /// rtpengine when the call is anchored, else on at once.
    pub(crate) fn media_held_relay(&mut self, now: Now, fc: &ForkedCall, ev: CallEvent) {
        let (call, relay, from_leg, answer) = match ev {
            CallEvent::RelayOffer { call, relay, from_leg } => (call, relay, from_leg, false),
            CallEvent::RelayAnswer { call, relay, from_leg } => (call, relay, from_leg, true),
            _ => return,
        };
        let sdp = self.b2bua.held_sdp(call, relay);
        let sent = match (&mut self.media, sdp) {
            (Some(m), Some(sdp)) => {
                let from_leg = from_leg.and_then(|lr| fc.fork_leg(lr));
                m.relay_sdp(now.at, HeldSdp { call, relay, from_leg, sdp, answer })
            }
            _ => false,
        };
        if !sent {
            let _ = self.b2bua.release_relay(&mut self.tx, now.at, call, relay, None);
        }
    }

    /// The call's dialogs are over: its media goes.
    pub(crate) fn media_call_ended(&mut self, now: Now, cref: CallRef) {
        if let Some(m) = &mut self.media {
            m.call_ended(now.at, cref);
        }
    }

    /// Calls holding media state at rtpengine (0 when media is off).
    pub fn media_calls(&self) -> usize {
        self.media.as_ref().map_or(0, MediaControl::calls)
    }
}
