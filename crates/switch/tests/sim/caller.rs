//! A caller: one call, placed by an extension (digest over the switch's
//! 407) or by a carrier (recognised by its source address), to a group, an
//! extension or an E.164 number, and ended the way its [`Hangup`] plan
//! says: CANCEL before any 1xx (sent once one comes, RFC 3261 9.1) or after
//! the 180, BYE after the answer, a re-INVITE first, or waiting for the
//! callee's BYE. It ACKs every 2xx (again for each retransmission), BYEs a
//! 2xx that crossed its CANCEL, and answers the switch's BYE. It exists to
//! be the inbound side of every call the oracle judges.

use crate::sim::net::{ms, secs, Nanos};
use crate::sim::sip::{self, Dialog};
use crate::sim::ua::{Action, Agent, Env, Stack};
use crate::sim::world::DOMAIN;
use bytes::Bytes;
use rand::Rng;
use sip_message::digest::Credentials;
use sip_message::{HeaderName, Message, Method};
use sip_transaction::{cancel_for, Event as TxEvent, TxKey};

/// How a caller ends its call.
#[derive(Clone, Copy, Debug)]
pub enum Hangup {
    /// Decides to hang up `decide` after dialing, before any 1xx came.
    CancelEarly { decide: Nanos },
    /// Hangs up `after` the 180 (or 183).
    CancelLate { after: Nanos },
    /// BYE `talk` after the answer.
    Bye { talk: Nanos },
    /// A re-INVITE `at` after the answer, BYE `talk` after that.
    Reinvite { at: Nanos, talk: Nanos },
    /// Waits for the callee's BYE (BYE itself after `cap`).
    WaitForBye { cap: Nanos },
}

impl Hangup {
    pub fn draw(env: &mut Env) -> Hangup {
        match env.rng.gen_range(0..100) {
            0..=7 => Hangup::CancelEarly { decide: env.between(ms(1), ms(400)) },
            8..=22 => Hangup::CancelLate { after: env.between(ms(1), secs(20)) },
            23..=62 => Hangup::Bye { talk: env.between(ms(10), secs(30)) },
            63..=82 => Hangup::Reinvite {
                at: env.between(ms(10), secs(5)),
                talk: env.between(ms(10), secs(20)),
            },
            _ => Hangup::WaitForBye { cap: secs(60) },
        }
    }
}

/// Who calls.
#[derive(Clone, Debug)]
pub enum Identity {
    /// An extension and its password.
    Extension { ext: String, password: String },
    /// A carrier's inbound call (its source address is in the trunk's
    /// inbound sources); `from` is the calling number.
    Carrier { from: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Inviting,
    Up,
    ByeSent,
    Done,
}

/// How the call ended, for the run's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Answered,
    Rejected(u16),
    TimedOut,
}

/// One call's caller.
pub struct Caller {
    pub stack: Stack,
    pub who: Identity,
    /// The Request-URI user dialed.
    pub target: String,
    pub plan: Hangup,
    /// No SDP in the INVITE: the answer goes in our ACK (RFC 3264 delayed
    /// offer).
    pub delayed_offer: bool,
    invite: Option<Message>,
    invite_key: Option<TxKey>,
    auth_tries: u32,
    provisional: bool,
    ringing: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    dialog: Option<Dialog>,
    ack: Option<Message>,
    reinvite_key: Option<TxKey>,
    reinvite_ack: Option<Message>,
    bye_key: Option<TxKey>,
    /// Our 2xx to a re-INVITE from the callee, retransmitted until its ACK
    /// (13.3.1.4): message, CSeq, interval, give-up time, generation.
    uas_2xx: Option<(Message, u32, Nanos, Nanos)>,
    uas_gen: u32,
    t1: Nanos,
    pub state: State,
    pub outcome: Option<Outcome>,
}

impl Caller {
    /// A caller that dials `target` and ends the call as `plan` says,
    /// with its offer in the INVITE unless `delayed_offer`.
    pub fn new(
        stack: Stack,
        who: Identity,
        target: String,
        (plan, delayed_offer): (Hangup, bool),
        t1: Nanos,
    ) -> Caller {
        Caller {
            stack,
            who,
            target,
            plan,
            delayed_offer,
            invite: None,
            invite_key: None,
            auth_tries: 0,
            provisional: false,
            ringing: false,
            cancel_wanted: false,
            cancel_sent: false,
            dialog: None,
            ack: None,
            reinvite_key: None,
            reinvite_ack: None,
            bye_key: None,
            uas_2xx: None,
            uas_gen: 0,
            t1,
            state: State::Inviting,
            outcome: None,
        }
    }

    /// The call's Call-ID (empty before dialing).
    pub fn call_id(&self) -> Bytes {
        self.invite.as_ref().map(|i| sip::hv(i, HeaderName::CallId)).unwrap_or_default()
    }

    fn switch(&self, env: &Env) -> sip_message::Peer {
        self.stack.peer(env.oracle.switch_addr)
    }

    fn ruri(&self, env: &Env) -> String {
        match self.who {
            Identity::Extension { .. } => format!("sip:{}@{DOMAIN}", self.target),
            Identity::Carrier { .. } => format!("sip:{}@{}", self.target, env.oracle.switch_addr),
        }
    }

    fn dial(&mut self, env: &mut Env) {
        let (from, user) = match &self.who {
            Identity::Extension { ext, .. } => {
                (format!("\"Caller {ext}\" <sip:{ext}@{DOMAIN}>;tag={}", env.token()), ext.clone())
            }
            Identity::Carrier { from } => {
                (format!("<sip:{from}@10.0.3.254>;tag={}", env.token()), from.clone())
            }
        };
        let addr = self.stack.addr;
        let mut b = Message::request(Method::Invite, self.ruri(env))
            .header(HeaderName::Via, sip::via(addr, &self.stack.tx.new_branch()))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, format!("<sip:{}@{DOMAIN}>", self.target))
            .header(HeaderName::CallId, format!("{}@{}", env.token(), addr.ip()))
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, format!("<sip:{user}@{addr}>"));
        if !self.delayed_offer {
            b = b.body("application/sdp", env.sdp(addr));
        }
        self.send_invite(env, b.build());
        if let Hangup::CancelEarly { decide } = self.plan {
            env.after(decide, self.stack.id, Action::Cancel);
        }
    }

    fn send_invite(&mut self, env: &mut Env, m: Message) {
        let peer = self.switch(env);
        self.provisional = false;
        match self.stack.tx.send_request(env.instant(), m.clone(), peer) {
            Ok(k) => {
                self.invite_key = Some(k);
                self.invite = Some(m);
            }
            Err(e) => {
                env.oracle.violation(format!("caller: INVITE refused by its own layer: {e}"));
                self.state = State::Done;
            }
        }
    }

    /// The INVITE again with credentials for the switch's 407.
    fn authenticate(&mut self, env: &mut Env, resp: &Message) -> bool {
        let Identity::Extension { ext, password } = &self.who else { return false };
        let Some(inv) = self.invite.clone() else { return false };
        let uri = String::from_utf8_lossy(inv.request_uri_bytes().unwrap_or_default()).into_owned();
        let Some(auth) = sip::answer_md5(
            resp.header_values(HeaderName::ProxyAuthenticate),
            "INVITE",
            &uri,
            Credentials { user: ext, password },
            &env.token(),
        ) else {
            env.oracle.violation("caller: no MD5 challenge in the switch's 407".into());
            return false;
        };
        let mut m = inv;
        let branch = self.stack.tx.new_branch();
        m.replace_top_via(Bytes::from(sip::via(self.stack.addr, &branch)));
        m.set_header(HeaderName::CSeq, "2 INVITE");
        m.insert_header_before(HeaderName::CSeq, HeaderName::ProxyAuthorization, auth);
        self.auth_tries += 1;
        self.send_invite(env, m);
        true
    }

    fn on_invite_response(&mut self, env: &mut Env, resp: &Message) {
        let Some(code) = resp.status() else { return };
        match code {
            100..=199 => {
                self.provisional = true;
                if code > 100 && !self.ringing {
                    self.ringing = true;
                    if let Hangup::CancelLate { after } = self.plan {
                        env.after(after, self.stack.id, Action::Cancel);
                    }
                }
                if self.cancel_wanted && !self.cancel_sent && self.state == State::Inviting {
                    self.send_cancel(env);
                }
            }
            200..=299 => self.on_2xx(env, resp),
            407 if self.auth_tries == 0 && !self.cancel_wanted => {
                if !self.authenticate(env, resp) {
                    self.finish(Outcome::Rejected(code));
                }
            }
            _ => {
                if (code == 407 || code == 403) && self.auth_tries > 0 {
                    env.oracle.violation(format!(
                        "caller {}: the switch refused correct credentials with {code}",
                        String::from_utf8_lossy(
                            self.invite.as_ref().and_then(|i| i.call_id().ok()).unwrap_or_default()
                        )
                    ));
                }
                if self.state == State::Inviting {
                    self.finish(Outcome::Rejected(code));
                }
            }
        }
    }

    fn finish(&mut self, o: Outcome) {
        self.state = State::Done;
        self.outcome.get_or_insert(o);
    }

    fn on_2xx(&mut self, env: &mut Env, resp: &Message) {
        let Some(inv) = self.invite.clone() else { return };
        let tag = resp.to_tag().unwrap_or_default();
        if let Some(d) = &self.dialog {
            if d.remote_tag == tag {
                // A retransmission: the same ACK again (13.2.2.4).
                if let Some(ack) = &self.ack {
                    let (addr, to) = (self.stack.addr, d.peer.remote);
                    env.send(addr, to, ack);
                }
                return;
            }
            // A second dialog: ACK and BYE it (the oracle flags the 2xx).
            let mut d2 = Dialog::uac(&inv, resp, self.switch(env));
            let seq = d2.local_seq;
            let ack = d2.request(Method::Ack, seq, &self.stack.tx.new_branch()).build();
            env.send(self.stack.addr, d2.peer.remote, &ack);
            let bye = d2.next_request(Method::Bye, &self.stack.tx.new_branch()).build();
            let _ = self.stack.tx.send_request(env.instant(), bye, d2.peer);
            return;
        }
        let d = Dialog::uac(&inv, resp, self.switch(env));
        let seq = d.local_seq;
        let mut ack = d.request(Method::Ack, seq, &self.stack.tx.new_branch());
        if self.delayed_offer {
            ack = ack.body("application/sdp", env.sdp(self.stack.addr));
        }
        let ack = ack.build();
        env.send(self.stack.addr, d.peer.remote, &ack);
        self.ack = Some(ack);
        self.dialog = Some(d);
        self.outcome = Some(Outcome::Answered);
        if self.state != State::Inviting {
            // We gave up (Timer B) before this 2xx came: end the call.
            self.state = State::Up;
            return self.bye(env);
        }
        self.state = State::Up;
        let id = self.stack.id;
        match self.plan {
            _ if self.cancel_wanted => self.bye(env),
            Hangup::CancelEarly { .. } | Hangup::CancelLate { .. } => {
                let d = env.between(ms(200), secs(3));
                env.after(d, id, Action::Bye);
            }
            Hangup::Bye { talk } => env.after(talk, id, Action::Bye),
            Hangup::Reinvite { at, talk } => {
                env.after(at, id, Action::Reinvite);
                env.after(at + talk, id, Action::Bye);
            }
            Hangup::WaitForBye { cap } => env.after(cap, id, Action::Bye),
        }
    }

    fn send_cancel(&mut self, env: &mut Env) {
        let Some(inv) = &self.invite else { return };
        let c = cancel_for(inv);
        let peer = self.switch(env);
        self.cancel_sent = true;
        let _ = self.stack.tx.send_request(env.instant(), c, peer);
    }

    fn bye(&mut self, env: &mut Env) {
        if self.state != State::Up {
            return;
        }
        let branch = self.stack.tx.new_branch();
        let Some(d) = self.dialog.as_mut() else { return };
        let m = d.next_request(Method::Bye, &branch).build();
        let peer = d.peer;
        self.bye_key = self.stack.tx.send_request(env.instant(), m, peer).ok();
        self.state = State::ByeSent;
    }

    fn reinvite(&mut self, env: &mut Env) {
        if self.state != State::Up || self.reinvite_key.is_some() {
            return;
        }
        let branch = self.stack.tx.new_branch();
        let addr = self.stack.addr;
        let body = env.sdp(addr);
        let Some(d) = self.dialog.as_mut() else { return };
        let contact = d.contact("caller");
        let m = d
            .next_request(Method::Invite, &branch)
            .header(HeaderName::Contact, contact)
            .body("application/sdp", body)
            .build();
        let peer = d.peer;
        self.reinvite_key = self.stack.tx.send_request(env.instant(), m, peer).ok();
    }

    fn on_reinvite_response(&mut self, env: &mut Env, resp: &Message) {
        let Some(code) = resp.status() else { return };
        if code < 200 {
            return;
        }
        if code < 300 {
            if self.reinvite_ack.is_none() {
                let branch = self.stack.tx.new_branch();
                let Some(d) = self.dialog.as_ref() else { return };
                let seq = resp.cseq().map(|c| c.seq).unwrap_or(d.local_seq);
                self.reinvite_ack = Some(d.request(Method::Ack, seq, &branch).build());
            }
            if let (Some(ack), Some(d)) = (&self.reinvite_ack, &self.dialog) {
                env.send(self.stack.addr, d.peer.remote, ack);
            }
        } else if (code == 481 || code == 408) && self.state == State::Up {
            // RFC 3261 12.2.1.2: the dialog is gone.
            self.state = State::Done;
        }
    }

    fn in_dialog(&mut self, env: &mut Env, key: TxKey, req: Message) {
        let ours = self.dialog.as_ref().is_some_and(|d| {
            sip::request_in(&req, &d.call_id, &d.local_tag)
                && req.from_tag() == Some(&d.remote_tag[..])
        });
        let up = matches!(self.state, State::Up | State::ByeSent);
        let code = match req.method() {
            Some(Method::Bye) if ours && up => {
                self.state = State::Done;
                self.uas_2xx = None;
                200
            }
            Some(Method::Ack) => return,
            Some(Method::Invite) if ours && self.state == State::Up => {
                return self.answer_reinvite(env, key, &req);
            }
            Some(Method::Invite) => 481,
            _ if ours && up => 200,
            _ => 481,
        };
        let r = Message::response_to(&req, code).build();
        let _ = self.stack.tx.send_response(env.instant(), key, r);
    }
}

impl Caller {
    /// 200 with our answer to the callee's re-INVITE, retransmitted until
    /// the ACK.
    fn answer_reinvite(&mut self, env: &mut Env, key: TxKey, req: &Message) {
        let addr = self.stack.addr;
        let body = env.sdp(addr);
        let contact = self.dialog.as_ref().map(|d| d.contact("caller")).unwrap_or_default();
        let r = Message::response_to(req, 200)
            .header(HeaderName::Contact, contact)
            .body("application/sdp", body)
            .build();
        let _ = self.stack.tx.send_response(env.instant(), key, r.clone());
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        self.uas_gen += 1;
        self.uas_2xx = Some((r, seq, self.t1, env.now + 64 * self.t1));
        env.after(self.t1, self.stack.id, Action::Retransmit(0, self.uas_gen));
    }

    fn retransmit(&mut self, env: &mut Env, gen: u32) {
        if gen != self.uas_gen {
            return;
        }
        let Some((msg, _, interval, give_up)) = self.uas_2xx.as_mut() else { return };
        if env.now >= *give_up {
            self.uas_2xx = None;
            return self.bye(env);
        }
        let to = env.oracle.switch_addr;
        env.send(self.stack.addr, to, msg);
        *interval = (*interval * 2).min(secs(4));
        let next = (*interval).min(*give_up - env.now);
        env.after(next, self.stack.id, Action::Retransmit(0, gen));
    }
}

impl Agent for Caller {
    fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    fn on_tx_event(&mut self, env: &mut Env, ev: TxEvent) {
        match ev {
            TxEvent::Response { key, response } => {
                if Some(key) == self.invite_key {
                    self.on_invite_response(env, &response);
                } else if Some(key) == self.reinvite_key {
                    self.on_reinvite_response(env, &response);
                } else if Some(key) == self.bye_key && response.status().is_some_and(|s| s >= 200) {
                    self.state = State::Done;
                }
            }
            TxEvent::Stray { message, .. } if message.method() == Some(&Method::Ack) => {
                let seq = message.cseq().map(|c| c.seq).ok();
                if self.uas_2xx.as_ref().is_some_and(|u| Some(u.1) == seq) {
                    self.uas_2xx = None;
                    self.uas_gen += 1;
                }
            }
            TxEvent::Stray { message, .. } => {
                let is_2xx = message.status().is_some_and(|s| (200..300).contains(&s));
                if is_2xx && message.cseq().is_ok_and(|c| c.method == Method::Invite) {
                    let initial = self.invite.as_ref().and_then(|i| i.cseq().ok()).map(|c| c.seq);
                    if message.cseq().ok().map(|c| c.seq) == initial {
                        self.on_2xx(env, &message);
                    } else {
                        self.on_reinvite_response(env, &message);
                    }
                }
            }
            TxEvent::NewRequest { key, request, .. } => self.in_dialog(env, key, request),
            TxEvent::Cancel { key, request, .. } => {
                let r = Message::response_to(&request, 481).build();
                let _ = self.stack.tx.send_response(env.instant(), key, r);
            }
            TxEvent::Timeout { key } => {
                if Some(key) == self.invite_key && self.state == State::Inviting {
                    self.finish(Outcome::TimedOut);
                } else if Some(key) == self.bye_key {
                    self.state = State::Done;
                }
            }
            TxEvent::TransportError { .. } | TxEvent::Terminated { .. } => {}
        }
    }

    fn on_action(&mut self, env: &mut Env, a: Action) {
        match a {
            Action::Dial => self.dial(env),
            Action::Cancel if self.state == State::Inviting && !self.cancel_wanted => {
                self.cancel_wanted = true;
                if self.provisional {
                    self.send_cancel(env);
                }
            }
            Action::Reinvite => self.reinvite(env),
            Action::Bye => self.bye(env),
            Action::Retransmit(_, gen) => self.retransmit(env, gen),
            _ => {}
        }
    }
}
