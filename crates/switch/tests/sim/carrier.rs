//! A carrier trunk the switch calls out through: a [`Callee`] whose plans
//! are a carrier's (answer, 503, 486, ring until CANCEL, silence), and
//! which, when it has credentials, challenges every new call with a 401 or
//! 407 (sometimes after a 100 Trying) and checks the digest the switch
//! answers with. It exists to drive E.164 routes, carrier failover and the
//! switch's own digest client.
//!
//! [`Callee`]: crate::sim::callee::Callee

use crate::sim::callee::Plan;
use crate::sim::net::{ms, secs};
use crate::sim::sip;
use crate::sim::ua::Env;
use bytes::Bytes;
use rand::Rng;
use sip_message::{HeaderName, Message};
use std::collections::HashMap;

/// A carrier's authentication of the switch.
pub struct CarrierAuth {
    pub name: String,
    /// Credentials it demands; `None`: it trusts the switch.
    pub credentials: Option<(String, String)>,
    realm: String,
    /// The nonce challenged per Call-ID.
    nonces: HashMap<Bytes, String>,
}

impl CarrierAuth {
    pub fn new(name: String, credentials: Option<(String, String)>) -> CarrierAuth {
        let realm = format!("{name}.carrier.example");
        CarrierAuth { name, credentials, realm, nonces: HashMap::new() }
    }

    /// The plan for the first copy of a new INVITE.
    pub fn plan_for(&mut self, env: &mut Env, invite: &Message) -> Plan {
        let Some((user, pass)) = self.credentials.clone() else { return draw_plan(env) };
        let cid = sip::hv(invite, HeaderName::CallId);
        let creds = invite
            .header(HeaderName::Authorization)
            .or_else(|| invite.header(HeaderName::ProxyAuthorization));
        let Some(creds) = creds else {
            let code = if env.chance(0.5) { 401 } else { 407 };
            return Plan::Challenge { code, trying: env.chance(0.3) };
        };
        let ruri =
            String::from_utf8_lossy(invite.request_uri_bytes().unwrap_or_default()).into_owned();
        let ok = self.nonces.get(&cid).is_some_and(|nonce| {
            let who = sip_message::digest::Credentials { user: &user, password: &pass };
            sip::check_md5(creds, "INVITE", &ruri, who, (&self.realm, nonce))
        });
        if ok {
            draw_plan(env)
        } else {
            env.oracle.violation(format!(
                "carrier {}: the switch's digest answer for {} does not check",
                self.name,
                String::from_utf8_lossy(&cid)
            ));
            Plan::Forbidden
        }
    }

    /// The challenge header for a new INVITE.
    pub fn challenge(
        &mut self,
        env: &mut Env,
        invite: &Message,
        code: u16,
    ) -> (HeaderName, String) {
        let nonce = env.token();
        self.nonces.insert(sip::hv(invite, HeaderName::CallId), nonce.clone());
        let qop = if env.chance(0.5) { ", qop=\"auth\"" } else { "" };
        let value =
            format!("Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5{qop}", self.realm);
        let name =
            if code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
        (name, value)
    }
}

/// How a carrier treats a (checked) INVITE.
pub fn draw_plan(env: &mut Env) -> Plan {
    let r: u32 = env.rng.gen_range(0..100);
    let bye_after = if env.chance(0.3) { Some(env.between(ms(500), secs(20))) } else { None };
    match r {
        0..=39 => Plan::Answer {
            ring: env.chance(0.7),
            early_media: env.chance(0.4),
            after: env.between(ms(50), secs(5)),
            bye_after,
        },
        40..=59 => Plan::Reject { ring: false, after: env.between(ms(5), ms(500)), code: 503 },
        60..=69 => Plan::Silent,
        70..=79 => {
            Plan::Reject { ring: env.chance(0.5), after: env.between(ms(10), secs(2)), code: 486 }
        }
        _ => Plan::RingForever { early_media: env.chance(0.5) },
    }
}
