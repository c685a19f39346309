//! Busy lamps (BLF): `SUBSCRIBE` with `Event: dialog` (RFC 4235, RFC 6665)
//! to an extension or a ring group of the subscriber's customer,
//! authenticated like an INVITE; every dialog change of every call goes
//! into the [`pbx_features::Notifier`], whose NOTIFYs are sent in each
//! subscription's dialog through the B2BUA's in-dialog request builder
//! ([`b2bua::CallManager::dialog_request`]) in client transactions of
//! their own. Subscriptions end when they expire, on unsubscribe, when the
//! phone's connection closes or its last binding goes.

use crate::caller::{self, Identified};
use crate::calls::ForkedCall;
use crate::input::Now;
use crate::switch::Switch;
use b2bua::{DialogRequest, UasDialog};
use groupcall::LegTarget;
use pbx_features::dialog_info::CONTENT_TYPE;
use pbx_features::subscribe::SUBSCRIPTION_STATE_HEADER;
use pbx_features::{
    DialogEntry, DialogIds, DialogState, Direction, Identity, NewSubscription, Notifier,
    NotifierSettings, NotifyOutcome, Refusal, SubscribeAnswer, SubscribeRequest, Subscriber,
    SubscriberGone, SubscriptionId, Termination, Watched,
};
use records::{AddressType, Call, CallStatus};
use routing::Caller;
use rustc_hash::FxHashMap;
use sip_message::{HeaderName, Message, Method, Peer};
use sip_transaction::TxKey;
use std::time::Instant;

/// The busy lamp subscriptions and the NOTIFYs in flight.
pub(crate) struct Lamps {
    pub(crate) notifier: Notifier<UasDialog>,
    /// NOTIFY client transactions in flight: their subscription.
    in_flight: FxHashMap<TxKey, SubscriptionId>,
    /// The notifier's deadline filed in the switch's timer queue.
    pub(crate) deadline: Option<Instant>,
}

impl Lamps {
    pub(crate) fn new(cfg: NotifierSettings) -> Lamps {
        Lamps { notifier: Notifier::new(cfg), in_flight: FxHashMap::default(), deadline: None }
    }
}

/// The state a call record shows a busy lamp.
fn state_of(c: &Call) -> DialogState {
    match c.status {
        CallStatus::Dialing => DialogState::Trying,
        CallStatus::Ringing => DialogState::Early,
        CallStatus::Progressing => DialogState::Confirmed,
        CallStatus::Canceling | CallStatus::Terminating | CallStatus::Hangup => {
            DialogState::Terminated(Termination::of_leg(c.hangup_reason, c.hangup_by, None))
        }
    }
}

/// The caller of a call, as a lamp shows it.
fn caller_identity(c: &Call) -> Option<Identity> {
    let uri = match c.source.kind {
        AddressType::Endpoint => format!("sip:{}", c.source.target),
        AddressType::Tel => format!("tel:{}", c.source.target),
        _ => c.source.target.clone(),
    };
    let name = (!c.source.name.is_empty()).then_some(c.source.name.as_str());
    Identity::new(name, &uri)
}

impl Switch {
    /// A SUBSCRIBE outside or inside a subscription's dialog.
    pub(crate) fn on_subscribe(&mut self, now: Now, key: TxKey, req: Message, peer: Peer) {
        let sr = match SubscribeRequest::from_message(&req) {
            Ok(sr) => sr,
            Err(r) => return self.refuse_subscribe(now, key, &req, r),
        };
        let who = match caller::identify(&mut self.registrar, &self.routes, now.at, &req, &peer) {
            Ok(who) => who,
            Err(refusal) => return self.refuse(now, key, &req, &peer, refusal),
        };
        let Caller::Extension { aor, .. } = &who.caller else {
            let resp = self.local.status(&req, 403);
            return self.respond(now, key, resp);
        };
        if sr.is_refresh() {
            let answer = self.lamps.notifier.handle_refresh(now.at, &sr);
            if let SubscribeAnswer::Accepted { id, .. } = answer {
                if let Some(d) = self.lamps.notifier.dialog_mut(id) {
                    d.refresh(&req);
                }
            }
            return self.answer_subscribe(now, (key, &req, &peer), answer, None);
        }
        let Some(watched) = self.watched(&req, &who) else {
            let resp = self.local.status(&req, 404);
            return self.respond(now, key, resp);
        };
        let entity = match &watched {
            Watched::Extension(a) | Watched::RingGroup(a) => format!("sip:{a}"),
            Watched::MemberLogin { group, .. } => format!("sip:{group}"),
        };
        let dialog = self.b2bua.uas_dialog(&req, peer);
        let tag = dialog.local_tag().to_owned();
        let subscriber = Subscriber { aor: aor.clone(), peer };
        let new = NewSubscription { subscriber, watched, entity, local_tag: tag.clone(), dialog };
        let answer = self.lamps.notifier.handle_new(now.at, &sr, new);
        self.answer_subscribe(now, (key, &req, &peer), answer, Some(&tag));
    }

    /// What a SUBSCRIBE's Request-URI names in the subscriber's domain: an
    /// extension or a ring group.
    fn watched(&self, req: &Message, who: &Identified) -> Option<Watched> {
        let user = match req.request_uri()? {
            Ok(u) => String::from_utf8_lossy(u.user?).into_owned(),
            Err(_) => return None,
        };
        let domain = &who.domain;
        if self.registrar.accounts().extension(&user, domain).is_some() {
            return Some(Watched::Extension(format!("{user}@{domain}")));
        }
        let g = self.routes.group(&user, domain)?;
        Some(Watched::RingGroup(format!("{}@{}", g.number, g.domain)))
    }

    fn refuse_subscribe(&mut self, now: Now, key: TxKey, req: &Message, r: Refusal) {
        let mut b = self.local.response(req, r.status());
        if let Some((name, value)) = r.header() {
            b = b.header(name, value);
        }
        self.respond(now, key, b.build());
    }

    /// 200 with Expires and our Contact (a new subscription gets our tag),
    /// or the refusal.
    fn answer_subscribe(
        &mut self,
        now: Now,
        (key, req, peer): (TxKey, &Message, &Peer),
        answer: SubscribeAnswer,
        tag: Option<&str>,
    ) {
        match answer {
            SubscribeAnswer::Accepted { expires, .. } => {
                let mut b = self.local.response(req, 200);
                if let Some(tag) = tag {
                    b = b.to_tag(tag);
                }
                let b = b
                    .header(HeaderName::Expires, expires.to_string())
                    .header(HeaderName::Contact, self.b2bua.contact(peer));
                self.respond(now, key, b.build());
            }
            SubscribeAnswer::Refused(r) => self.refuse_subscribe(now, key, req, r),
        }
    }

    /// Sends every NOTIFY the notifier decided on; `true` when one went.
    pub(crate) fn send_notifies(&mut self, now: Now) -> bool {
        let Switch { lamps, b2bua, tx, .. } = self;
        let mut failed = Vec::new();
        let mut sent = false;
        while let Some(mut n) = lamps.notifier.poll_notify() {
            sent = true;
            let branch = tx.new_branch();
            let request = DialogRequest {
                method: Method::Notify,
                headers: vec![
                    ("Event", n.event.clone()),
                    (SUBSCRIPTION_STATE_HEADER, n.state.to_string()),
                ],
                body: Some((CONTENT_TYPE.to_owned(), std::mem::take(&mut n.body))),
            };
            let (msg, dest) = b2bua.dialog_request(&mut n.dialog, &branch, request);
            match tx.send_request(now.at, msg, dest) {
                Ok(k) => {
                    lamps.in_flight.insert(k, n.id);
                }
                Err(_) => failed.push(n.id),
            }
        }
        for id in failed {
            lamps.notifier.handle_notify_outcome(now.at, id, NotifyOutcome::TransportError);
        }
        sent
    }

    /// How a NOTIFY's transaction went; `false` when `key` is none of
    /// ours.
    pub(crate) fn notify_outcome(&mut self, now: Now, key: TxKey, out: NotifyOutcome) -> bool {
        let id = match out {
            NotifyOutcome::Response(code) if code < 200 => self.lamps.in_flight.get(&key).copied(),
            _ => self.lamps.in_flight.remove(&key),
        };
        let Some(id) = id else { return false };
        self.lamps.notifier.handle_notify_outcome(now.at, id, out);
        true
    }

    /// A transaction ended: a NOTIFY's is forgotten.
    pub(crate) fn notify_terminated(&mut self, key: TxKey) -> bool {
        self.lamps.in_flight.remove(&key).is_some()
    }

    /// The subscriptions of `gone` end.
    pub(crate) fn subscribers_gone(&mut self, gone: SubscriberGone<'_>) {
        self.lamps.notifier.handle_subscriber_gone(gone);
    }

    /// Every dialog of a call, as the lamps of the extensions and ring
    /// group it involves show them (the notifier tells watchers only what
    /// changed).
    pub(crate) fn show_call(&mut self, now: Now, call: &ForkedCall) {
        let inbound = &call.inbound;
        let remote = caller_identity(inbound);
        let caller_sees = DialogEntry {
            direction: Some(Direction::Initiator),
            ..DialogEntry::new(inbound.id.to_string(), state_of(inbound))
        };
        if inbound.source.kind == AddressType::Endpoint {
            let w = Watched::Extension(inbound.source.target.clone());
            self.lamps.notifier.handle_dialog(now.at, &w, caller_sees);
        }
        if inbound.destination.kind == AddressType::Groupcall {
            let group_sees = DialogEntry {
                direction: Some(Direction::Recipient),
                remote: remote.clone(),
                ..DialogEntry::new(inbound.id.to_string(), state_of(inbound))
            };
            let w = Watched::RingGroup(inbound.destination.target.clone());
            self.lamps.notifier.handle_dialog(now.at, &w, group_sees);
        }
        for (leg, target, rec) in call.fork.legs() {
            let (LegTarget::Contact { aor, .. } | LegTarget::Pickup { aor }) = target else {
                continue;
            };
            let ids = call.leg(leg).and_then(|lr| self.b2bua.leg_early_dialog(call.cref(), lr));
            let entry = DialogEntry {
                direction: Some(Direction::Recipient),
                remote: remote.clone(),
                ids: ids.map(|d| DialogIds {
                    call_id: d.call_id.to_owned(),
                    local_tag: Some(d.phone_tag.to_owned()),
                    remote_tag: Some(d.our_tag.to_owned()),
                }),
                ..DialogEntry::new(rec.id.to_string(), state_of(rec))
            };
            let w = Watched::Extension(aor.clone());
            self.lamps.notifier.handle_dialog(now.at, &w, entry);
        }
    }
}
