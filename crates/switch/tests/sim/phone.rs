//! A registered phone: it REGISTERs first (digest MD5 over the
//! registrar's 401), then answers every INVITE as a [`Callee`] with a plan
//! drawn from the seed: answer after a random delay (with SDP, sometimes
//! early media first, sometimes hanging up later itself), 486, 603, ring
//! until CANCEL, answer twice through two downstream forks, or nothing at
//! all. It exists to be the callee side of extensions and ring groups.
//!
//! [`Callee`]: crate::sim::callee::Callee

use crate::sim::callee::Plan;
use crate::sim::net::{ms, secs};
use crate::sim::sip;
use crate::sim::ua::{Action, Env};
use crate::sim::world::DOMAIN;
use rand::Rng;
use sip_message::digest::Credentials;
use sip_message::{HeaderName, Message, Method};
use sip_transaction::{TransactionLayer, TxKey};
use std::net::SocketAddr;

/// A phone's REGISTER client.
pub struct Registration {
    pub ext: String,
    pub password: String,
    call_id: String,
    tag: String,
    cseq: u32,
    key: Option<TxKey>,
    pub registered: bool,
    tried_auth: bool,
}

impl Registration {
    pub fn new(ext: String, password: String) -> Registration {
        Registration {
            ext,
            password,
            call_id: String::new(),
            tag: String::new(),
            cseq: 0,
            key: None,
            registered: false,
            tried_auth: false,
        }
    }

    fn request(
        &mut self,
        tx: &mut TransactionLayer,
        addr: SocketAddr,
        auth: Option<String>,
    ) -> Message {
        self.cseq += 1;
        let aor = format!("<sip:{}@{DOMAIN}>", self.ext);
        let mut b = Message::request(Method::Register, format!("sip:{DOMAIN}"))
            .header(HeaderName::Via, sip::via(addr, &tx.new_branch()))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, format!("{aor};tag={}", self.tag))
            .header(HeaderName::To, aor)
            .header(HeaderName::CallId, self.call_id.clone())
            .header(HeaderName::CSeq, format!("{} REGISTER", self.cseq))
            .header(HeaderName::Contact, format!("<sip:{}@{addr}>", self.ext))
            .header(HeaderName::Expires, "3600");
        if let Some(a) = auth {
            b = b.header(HeaderName::Authorization, a);
        }
        b.build()
    }

    /// Sends the first REGISTER.
    pub fn start(
        &mut self,
        env: &mut Env,
        tx: &mut TransactionLayer,
        _id: usize,
        addr: SocketAddr,
    ) {
        self.call_id = format!("reg-{}@{}", env.token(), addr.ip());
        self.tag = env.token();
        let m = self.request(tx, addr, None);
        let peer = sip::udp(addr, env.oracle.switch_addr);
        self.key = tx.send_request(env.instant(), m, peer).ok();
    }

    /// A response to one of our REGISTERs.
    pub fn on_response(
        &mut self,
        env: &mut Env,
        tx: &mut TransactionLayer,
        addr: SocketAddr,
        key: TxKey,
        resp: &Message,
    ) {
        if self.key != Some(key) {
            return;
        }
        let Some(code) = resp.status() else { return };
        if code < 200 {
            return;
        }
        match code {
            200..=299 => self.registered = true,
            401 if !self.tried_auth => {
                self.tried_auth = true;
                let auth = sip::answer_md5(
                    resp.header_values(HeaderName::WwwAuthenticate),
                    "REGISTER",
                    &format!("sip:{DOMAIN}"),
                    Credentials { user: &self.ext, password: &self.password },
                    &env.token(),
                );
                let Some(auth) = auth else {
                    let v = format!("phone {}: no MD5 challenge in the 401", self.ext);
                    return env.oracle.violation(v);
                };
                let m = self.request(tx, addr, Some(auth));
                let peer = sip::udp(addr, env.oracle.switch_addr);
                self.key = tx.send_request(env.instant(), m, peer).ok();
            }
            _ => env.oracle.violation(format!(
                "phone {} with the right password got {code} to its REGISTER",
                self.ext
            )),
        }
    }
}

/// How a phone treats an incoming INVITE.
pub fn draw_plan(env: &mut Env) -> Plan {
    let r: u32 = env.rng.gen_range(0..100);
    let bye_after = if env.chance(0.3) { Some(env.between(ms(500), secs(25))) } else { None };
    match r {
        0..=27 => Plan::Answer {
            ring: env.chance(0.8),
            early_media: false,
            after: env.between(ms(50), secs(6)),
            bye_after,
        },
        28..=35 => Plan::Answer {
            ring: true,
            early_media: true,
            after: env.between(ms(200), secs(6)),
            bye_after,
        },
        36..=45 => {
            Plan::Reject { ring: env.chance(0.5), after: env.between(ms(10), secs(2)), code: 486 }
        }
        46..=49 => {
            Plan::Reject { ring: env.chance(0.5), after: env.between(ms(10), secs(3)), code: 603 }
        }
        50..=74 => Plan::RingForever { early_media: env.chance(0.2) },
        75..=82 => Plan::TwoForks {
            after: env.between(ms(100), secs(5)),
            gap: env.between(0, ms(300)),
            bye_after,
        },
        _ => Plan::Silent,
    }
}

/// Schedules a phone's registration at a random moment of the run's first
/// second and a half.
pub fn schedule_register(env: &mut Env, id: usize) {
    let d = env.between(0, ms(1500));
    env.after(d, id, Action::Register);
}
