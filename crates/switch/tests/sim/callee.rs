//! The answering side of a call, shared by registered phones and carriers:
//! per incoming INVITE it follows a [`Plan`] drawn from the seed (answer,
//! reject, ring until CANCEL, answer twice through two downstream forks,
//! silence), keeps its UAS dialogs (RFC 3261 12.1.1), retransmits its 2xx
//! until the ACK (13.3.1.4, BYE at the give-up), answers CANCEL with 200
//! and 487, BYE and re-INVITE in its dialogs, 481 outside them, and hangs
//! up from its side when the plan says so. It exists so that phones and
//! carriers differ only in how they pick plans and who they authenticate.

use crate::sim::carrier::CarrierAuth;
use crate::sim::net::{ms, secs, Nanos};
use crate::sim::phone::Registration;
use crate::sim::sip::{self, Dialog};
use crate::sim::ua::{Action, Agent, Env, Stack};
use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Peer};
use sip_transaction::{Event as TxEvent, TxKey};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// How a callee treats one incoming INVITE.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// 180 (or 183 with SDP first) if `ring`, 200 after `after`; a BYE
    /// from our side `bye_after` the ACK.
    Answer { ring: bool, early_media: bool, after: Nanos, bye_after: Option<Nanos> },
    /// A final failure after `after` (a 180 first if `ring`).
    Reject { ring: bool, after: Nanos, code: u16 },
    /// 180 (or 183) and nothing more, until CANCEL.
    RingForever { early_media: bool },
    /// A downstream forking proxy: two early dialogs, then a 200 from each
    /// (different To tags), `gap` apart.
    TwoForks { after: Nanos, gap: Nanos, bye_after: Option<Nanos> },
    /// Nothing at all: every message of the call is ignored.
    Silent,
    /// A digest challenge (401 or 407), 100 Trying first if `trying`.
    Challenge { code: u16, trying: bool },
    /// Credentials that did not check: 403.
    Forbidden,
}

/// What kind of callee: a registered phone or a carrier.
pub enum Role {
    Phone(Registration),
    Carrier(CarrierAuth),
}

struct Incoming {
    key: TxKey,
    invite: Message,
    peer: Peer,
    plan: Plan,
    /// Our To tag per fork (one, two for TwoForks).
    tags: Vec<String>,
    /// Dialogs of the forks that answered.
    dialogs: Vec<usize>,
    final_sent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DState {
    /// 2xx sent, no ACK yet.
    AwaitingAck,
    Confirmed,
    /// Our BYE is out.
    ByeSent,
    Ended,
}

struct Retx {
    msg: Message,
    cseq: u32,
    interval: Nanos,
    give_up: Nanos,
}

struct UasDialog {
    d: Dialog,
    state: DState,
    retx: Option<Retx>,
    gen: u32,
    bye_after: Option<Nanos>,
    bye_key: Option<TxKey>,
    /// A re-INVITE from our side this long after the ACK.
    reinvite_after: Option<Nanos>,
    /// The ACK of our re-INVITE's 2xx, for its retransmissions.
    reinvite_ack: Option<Message>,
}

/// A phone or a carrier.
pub struct Callee {
    pub stack: Stack,
    /// User part of our Contact.
    pub user: String,
    pub role: Role,
    t1: Nanos,
    invites: Vec<Incoming>,
    by_key: HashMap<TxKey, usize>,
    dialogs: Vec<UasDialog>,
    by_tag: HashMap<Bytes, usize>,
    silent: HashSet<Bytes>,
    /// INVITEs (Call-ID, CSeq) already given a plan.
    seen: HashSet<(Bytes, u32)>,
    plans: HashMap<(Bytes, u32), Plan>,
    byes: HashMap<TxKey, usize>,
    reinvites: HashMap<TxKey, usize>,
}

const T2: Nanos = secs(4);

impl Callee {
    pub fn new(stack: Stack, user: String, role: Role, t1: Nanos) -> Callee {
        Callee {
            stack,
            user,
            role,
            t1,
            invites: Vec::new(),
            by_key: HashMap::new(),
            dialogs: Vec::new(),
            by_tag: HashMap::new(),
            silent: HashSet::new(),
            seen: HashSet::new(),
            plans: HashMap::new(),
            byes: HashMap::new(),
            reinvites: HashMap::new(),
        }
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.user, self.stack.addr)
    }

    fn respond(&mut self, env: &mut Env, key: TxKey, msg: Message) {
        // A refusal means the transaction is gone: nothing to do.
        let _ = self.stack.tx.send_response(env.instant(), key, msg);
    }

    /// Dialogs still up, and INVITEs still waiting for a final response:
    /// what must not be left when the run ends.
    pub fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in &self.dialogs {
            if matches!(d.state, DState::AwaitingAck | DState::Confirmed) {
                v.push(format!(
                    "{} still has dialog {} (tag {}) {:?}",
                    self.stack.addr,
                    String::from_utf8_lossy(&d.d.call_id),
                    String::from_utf8_lossy(&d.d.local_tag),
                    d.state
                ));
            }
        }
        for inv in &self.invites {
            if !inv.final_sent {
                v.push(format!(
                    "{} still rings for INVITE {} ({:?})",
                    self.stack.addr,
                    String::from_utf8_lossy(inv.invite.call_id().unwrap_or_default()),
                    inv.plan
                ));
            }
        }
        v
    }

    /// Call-IDs of the dialogs and INVITEs [`Callee::leftovers`] lists,
    /// with the tag (empty for an INVITE).
    pub fn leftover_ids(&self) -> Vec<(Bytes, Bytes)> {
        let mut v = Vec::new();
        for d in &self.dialogs {
            if matches!(d.state, DState::AwaitingAck | DState::Confirmed) {
                v.push((d.d.call_id.clone(), d.d.local_tag.clone()));
            }
        }
        for inv in &self.invites {
            if !inv.final_sent {
                v.push((sip::hv(&inv.invite, HeaderName::CallId), Bytes::new()));
            }
        }
        v
    }

    /// A new INVITE (first copy): its plan, decided before the transaction
    /// layer sees it (a silent callee must not even send 100 Trying).
    fn plan_for(&mut self, env: &mut Env, msg: &Message) -> Plan {
        match &mut self.role {
            Role::Phone(_) => crate::sim::phone::draw_plan(env),
            Role::Carrier(a) => a.plan_for(env, msg),
        }
    }

    fn start(&mut self, env: &mut Env, key: TxKey, invite: Message, peer: Peer) {
        let cid = sip::hv(&invite, HeaderName::CallId);
        let seq = invite.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(plan) = self.plans.remove(&(cid, seq)) else {
            let r = Message::response_to(&invite, 500).build();
            return self.respond(env, key, r);
        };
        let i = self.invites.len();
        let forks = if matches!(plan, Plan::TwoForks { .. }) { 2 } else { 1 };
        let tags = (0..forks).map(|_| env.token()).collect();
        self.invites.push(Incoming {
            key,
            invite,
            peer,
            plan,
            tags,
            dialogs: Vec::new(),
            final_sent: false,
        });
        self.by_key.insert(key, i);
        let id = self.stack.id;
        match plan {
            Plan::Answer { ring, after, .. } => {
                if ring {
                    let d = env.between(0, ms(200)).min(after);
                    env.after(d, id, Action::Ring(i));
                }
                env.after(after, id, Action::Answer(i));
            }
            Plan::Reject { ring, after, code } => {
                if ring {
                    let d = env.between(0, ms(200)).min(after);
                    env.after(d, id, Action::Ring(i));
                }
                env.after(after, id, Action::Reject(i, code));
            }
            Plan::RingForever { .. } => {
                let d = env.between(0, ms(300));
                env.after(d, id, Action::Ring(i));
            }
            Plan::TwoForks { after, gap, .. } => {
                let d = env.between(0, ms(200)).min(after);
                env.after(d, id, Action::Ring(i));
                env.after(after, id, Action::Answer(i));
                env.after(after + gap, id, Action::SecondFork(i));
            }
            Plan::Challenge { code, trying } => {
                let Role::Carrier(a) = &mut self.role else { return };
                let (name, value) = a.challenge(env, &self.invites[i].invite, code);
                if trying {
                    let t = Message::response_to(&self.invites[i].invite, 100).build();
                    self.respond(env, key, t);
                }
                let tag = self.invites[i].tags[0].clone();
                let r = Message::response_to(&self.invites[i].invite, code)
                    .to_tag(&tag)
                    .header(name, value)
                    .build();
                self.invites[i].final_sent = true;
                self.respond(env, key, r);
            }
            Plan::Forbidden => {
                let tag = self.invites[i].tags[0].clone();
                let r = Message::response_to(&self.invites[i].invite, 403).to_tag(&tag).build();
                self.invites[i].final_sent = true;
                self.respond(env, key, r);
            }
            Plan::Silent => {}
        }
    }

    fn ring(&mut self, env: &mut Env, i: usize) {
        let Some(inv) = self.invites.get(i) else { return };
        if inv.final_sent {
            return;
        }
        let early_media = match inv.plan {
            Plan::Answer { early_media, .. } | Plan::RingForever { early_media } => early_media,
            Plan::TwoForks { .. } => true,
            _ => false,
        };
        let (key, contact) = (inv.key, self.contact());
        let tags = inv.tags.clone();
        for (n, tag) in tags.iter().enumerate() {
            let Some(inv) = self.invites.get(i) else { return };
            let mut b = Message::response_to(
                &inv.invite,
                if early_media && n == tags.len() - 1 { 183 } else { 180 },
            )
            .to_tag(tag)
            .header(HeaderName::Contact, contact.clone());
            if early_media && n == tags.len() - 1 {
                let body = env.sdp(self.stack.addr);
                b = b.body("application/sdp", body);
            }
            let r = b.build();
            self.respond(env, key, r);
        }
    }

    /// A 2xx from fork `fork` of INVITE `i`; a dialog starts.
    fn answer(&mut self, env: &mut Env, i: usize, fork: usize) {
        let Some(inv) = self.invites.get(i) else { return };
        // The second fork answers only if the first did (not after 487).
        if (fork == 0 && inv.final_sent) || (fork == 1 && inv.dialogs.is_empty()) {
            return;
        }
        let bye_after = match inv.plan {
            Plan::Answer { bye_after, .. } | Plan::TwoForks { bye_after, .. } => bye_after,
            _ => None,
        };
        let Some(tag) = inv.tags.get(fork).cloned() else { return };
        let (key, peer) = (inv.key, inv.peer);
        let body = env.sdp(self.stack.addr);
        let r = Message::response_to(&inv.invite, 200)
            .to_tag(&tag)
            .header(HeaderName::Contact, self.contact())
            .body("application/sdp", body)
            .build();
        let d = Dialog::uas(&inv.invite, &tag, peer);
        let cseq = inv.invite.cseq().map(|c| c.seq).unwrap_or(1);
        self.respond(env, key, r.clone());
        let dlg = self.dialogs.len();
        self.by_tag.insert(d.local_tag.clone(), dlg);
        let t1 = self.t1;
        let reinvite_after =
            if fork == 0 && env.chance(0.12) { Some(env.between(ms(50), secs(5))) } else { None };
        self.dialogs.push(UasDialog {
            d,
            reinvite_after,
            reinvite_ack: None,
            state: DState::AwaitingAck,
            retx: Some(Retx { msg: r, cseq, interval: t1, give_up: env.now + 64 * t1 }),
            gen: 0,
            // The second fork of a pair never hangs up by itself: the
            // switch must do it.
            bye_after: if fork == 0 { bye_after } else { None },
            bye_key: None,
        });
        if let Some(inv) = self.invites.get_mut(i) {
            inv.final_sent = true;
            inv.dialogs.push(dlg);
        }
        env.after(t1, self.stack.id, Action::Retransmit(dlg, 0));
    }

    fn reject(&mut self, env: &mut Env, i: usize, code: u16) {
        let Some(inv) = self.invites.get_mut(i) else { return };
        if inv.final_sent {
            return;
        }
        inv.final_sent = true;
        let r = Message::response_to(&inv.invite, code).to_tag(&inv.tags[0]).build();
        let key = inv.key;
        self.respond(env, key, r);
    }

    fn retransmit(&mut self, env: &mut Env, dlg: usize, gen: u32) {
        let id = self.stack.id;
        let addr = self.stack.addr;
        let Some(d) = self.dialogs.get_mut(dlg) else { return };
        if d.gen != gen {
            return;
        }
        let Some(r) = d.retx.as_mut() else { return };
        if env.now >= r.give_up {
            d.retx = None;
            if d.state == DState::AwaitingAck {
                // 13.3.1.4: no ACK, the dialog is ended with a BYE.
                self.bye(env, dlg);
            }
            return;
        }
        env.send(addr, d.d.peer.remote, &r.msg);
        r.interval = (r.interval * 2).min(T2);
        let next = r.interval.min(r.give_up - env.now);
        env.after(next, id, Action::Retransmit(dlg, gen));
    }

    fn bye(&mut self, env: &mut Env, dlg: usize) {
        let branch = self.stack.tx.new_branch();
        let Some(d) = self.dialogs.get_mut(dlg) else { return };
        if !matches!(d.state, DState::AwaitingAck | DState::Confirmed) {
            return;
        }
        d.retx = None;
        d.gen += 1;
        let msg = d.d.next_request(Method::Bye, &branch).build();
        let peer = d.d.peer;
        match self.stack.tx.send_request(env.instant(), msg, peer) {
            Ok(k) => {
                d.bye_key = Some(k);
                d.state = DState::ByeSent;
                self.byes.insert(k, dlg);
            }
            Err(_) => d.state = DState::Ended,
        }
    }

    /// A re-INVITE from our side (an offer; the caller answers through
    /// the switch).
    fn reinvite(&mut self, env: &mut Env, dlg: usize) {
        let branch = self.stack.tx.new_branch();
        let contact = self.contact();
        let body = env.sdp(self.stack.addr);
        let Some(d) = self.dialogs.get_mut(dlg) else { return };
        if d.state != DState::Confirmed {
            return;
        }
        let msg =
            d.d.next_request(Method::Invite, &branch)
                .header(HeaderName::Contact, contact)
                .body("application/sdp", body)
                .build();
        let peer = d.d.peer;
        d.reinvite_ack = None;
        if let Ok(k) = self.stack.tx.send_request(env.instant(), msg, peer) {
            self.reinvites.insert(k, dlg);
        }
    }

    /// A response to our re-INVITE: its 2xx is ACKed (again for each
    /// retransmission).
    fn reinvite_response(&mut self, env: &mut Env, dlg: usize, resp: &Message) {
        let Some(code) = resp.status() else { return };
        let branch = self.stack.tx.new_branch();
        let addr = self.stack.addr;
        let Some(d) = self.dialogs.get_mut(dlg) else { return };
        if (200..300).contains(&code) {
            let seq = resp.cseq().map(|c| c.seq).unwrap_or(d.d.local_seq);
            let ack = d
                .reinvite_ack
                .get_or_insert_with(|| d.d.request(Method::Ack, seq, &branch).build());
            env.send(addr, d.d.peer.remote, ack);
        } else if (code == 481 || code == 408) && d.state == DState::Confirmed {
            d.state = DState::Ended;
        }
    }

    fn in_dialog(&mut self, env: &mut Env, key: TxKey, req: Message) {
        let tag = Bytes::copy_from_slice(req.to_tag().unwrap_or_default());
        let method = req.method().cloned();
        let found = self.by_tag.get(&tag).copied().filter(|&i| {
            self.dialogs.get(i).is_some_and(|d| {
                req.call_id().is_ok_and(|c| c == d.d.call_id)
                    && req.from_tag() == Some(&d.d.remote_tag[..])
            })
        });
        let Some(i) = found else {
            let r = Message::response_to(&req, 481).build();
            return self.respond(env, key, r);
        };
        let state = self.dialogs[i].state;
        match method {
            Some(Method::Bye) if state != DState::Ended => {
                let r = Message::response_to(&req, 200).build();
                self.respond(env, key, r);
                let d = &mut self.dialogs[i];
                d.state = DState::Ended;
                d.retx = None;
                d.gen += 1;
            }
            Some(Method::Invite) if matches!(state, DState::AwaitingAck | DState::Confirmed) => {
                let body = env.sdp(self.stack.addr);
                let r = Message::response_to(&req, 200)
                    .header(HeaderName::Contact, self.contact())
                    .body("application/sdp", body)
                    .build();
                self.respond(env, key, r.clone());
                let t1 = self.t1;
                let d = &mut self.dialogs[i];
                d.gen += 1;
                let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
                d.retx = Some(Retx { msg: r, cseq, interval: t1, give_up: env.now + 64 * t1 });
                let gen = d.gen;
                env.after(t1, self.stack.id, Action::Retransmit(i, gen));
            }
            Some(Method::Ack) => {}
            _ if matches!(state, DState::AwaitingAck | DState::Confirmed) => {
                let r = Message::response_to(&req, 200).build();
                self.respond(env, key, r);
            }
            _ => {
                let r = Message::response_to(&req, 481).build();
                self.respond(env, key, r);
            }
        }
    }

    fn ack(&mut self, env: &mut Env, ack: &Message) {
        let tag = Bytes::copy_from_slice(ack.to_tag().unwrap_or_default());
        let Some(&i) = self.by_tag.get(&tag) else { return };
        let id = self.stack.id;
        let Some(d) = self.dialogs.get_mut(i) else { return };
        if !ack.call_id().is_ok_and(|c| c == d.d.call_id) {
            return;
        }
        let seq = ack.cseq().map(|c| c.seq).ok();
        if d.retx.as_ref().is_some_and(|r| Some(r.cseq) == seq) {
            d.retx = None;
            d.gen += 1;
        }
        if d.state == DState::AwaitingAck {
            d.state = DState::Confirmed;
            if let Some(after) = d.bye_after.take() {
                env.after(after, id, Action::CalleeBye(i));
            }
            if let Some(after) = d.reinvite_after.take() {
                env.after(after, id, Action::CalleeReinvite(i));
            }
        }
    }

    fn cancel(&mut self, env: &mut Env, key: TxKey, req: Message, cancels: Option<TxKey>) {
        let Some(i) = cancels.and_then(|k| self.by_key.get(&k).copied()) else {
            let r = Message::response_to(&req, 481).build();
            return self.respond(env, key, r);
        };
        let tag = self.invites[i].tags[0].clone();
        let r = Message::response_to(&req, 200).to_tag(&tag).build();
        self.respond(env, key, r);
        let inv = &mut self.invites[i];
        if !inv.final_sent {
            inv.final_sent = true;
            let r = Message::response_to(&inv.invite, 487).to_tag(&tag).build();
            let k = inv.key;
            self.respond(env, k, r);
        }
    }
}

impl Agent for Callee {
    fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    fn on_message(&mut self, env: &mut Env, msg: Message, from: SocketAddr) {
        let Ok(cid) = msg.call_id().map(Bytes::copy_from_slice) else { return };
        if self.silent.contains(&cid) {
            return;
        }
        if msg.method() == Some(&Method::Invite) && msg.to_tag().is_none() {
            let seq = msg.cseq().map(|c| c.seq).unwrap_or(0);
            if self.seen.insert((cid.clone(), seq)) {
                let plan = self.plan_for(env, &msg);
                if matches!(plan, Plan::Silent) {
                    self.silent.insert(cid);
                    return;
                }
                self.plans.insert((cid, seq), plan);
            }
        }
        let now = env.instant();
        let peer = self.stack.peer(from);
        self.stack.tx.handle_incoming(now, msg, peer);
    }

    fn on_tx_event(&mut self, env: &mut Env, ev: TxEvent) {
        match ev {
            TxEvent::NewRequest { key, request, peer } => {
                if request.to_tag().is_some() {
                    self.in_dialog(env, key, request);
                } else if request.method() == Some(&Method::Invite) {
                    self.start(env, key, request, peer);
                } else {
                    let r = Message::response_to(&request, 481).to_tag("x").build();
                    self.respond(env, key, r);
                }
            }
            TxEvent::Cancel { key, request, cancels, .. } => {
                self.cancel(env, key, request, cancels)
            }
            TxEvent::Stray { message, .. } => {
                if message.method() == Some(&Method::Ack) {
                    self.ack(env, &message);
                } else if message.status().is_some_and(|s| (200..300).contains(&s)) {
                    // A 2xx to our re-INVITE after its transaction ended.
                    let tag = Bytes::copy_from_slice(message.from_tag().unwrap_or_default());
                    if let Some(&d) = self.by_tag.get(&tag) {
                        self.reinvite_response(env, d, &message);
                    }
                }
            }
            TxEvent::Response { key, response } => {
                if let Some(&d) = self.reinvites.get(&key) {
                    return self.reinvite_response(env, d, &response);
                }
                if let Some(&d) = self.byes.get(&key) {
                    if response.status().is_some_and(|s| s >= 200) {
                        self.byes.remove(&key);
                        if let Some(d) = self.dialogs.get_mut(d) {
                            d.state = DState::Ended;
                        }
                    }
                    return;
                }
                if let Role::Phone(r) = &mut self.role {
                    r.on_response(env, &mut self.stack.tx, self.stack.addr, key, &response);
                }
            }
            TxEvent::Timeout { key } => {
                if let Some(d) = self.byes.remove(&key) {
                    if let Some(d) = self.dialogs.get_mut(d) {
                        d.state = DState::Ended;
                    }
                }
            }
            TxEvent::TransportError { .. } | TxEvent::Terminated { .. } => {}
        }
    }

    fn on_action(&mut self, env: &mut Env, a: Action) {
        match a {
            Action::Register => {
                let (id, addr) = (self.stack.id, self.stack.addr);
                let Role::Phone(r) = &mut self.role else { return };
                r.start(env, &mut self.stack.tx, id, addr);
            }
            Action::Ring(i) => self.ring(env, i),
            Action::Answer(i) => self.answer(env, i, 0),
            Action::SecondFork(i) => self.answer(env, i, 1),
            Action::Reject(i, code) => self.reject(env, i, code),
            Action::Retransmit(d, gen) => self.retransmit(env, d, gen),
            Action::CalleeBye(d)
                if self.dialogs.get(d).is_some_and(|d| d.state == DState::Confirmed) =>
            {
                self.bye(env, d)
            }
            Action::CalleeReinvite(d) => self.reinvite(env, d),
            _ => {}
        }
    }
}
