//! What a manager knows of itself for all its calls: its settings, the
//! `Allow` value made from them, its own addresses, and the random source
//! of its identifiers.

use crate::dialog::{self, Body, Dialog};
use crate::state::Stored;
use crate::{B2buaConfig, LocalContact};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_message::{HeaderName, Message, MessageBuilder, Method, Peer};
use std::time::{Duration, Instant};

const TOKEN_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `now + d`, saturating.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// The manager's settings and what is derived from them once: fixed for
/// its life, shared by every call.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) cfg: B2buaConfig,
    /// The `Allow` value of our dialogs' messages.
    pub(crate) allow: Bytes,
    /// Our address per transport (Via sent-by, Contact).
    pub(crate) locals: Vec<LocalContact>,
}

impl Settings {
    pub(crate) fn new(cfg: B2buaConfig, locals: Vec<LocalContact>) -> Settings {
        Settings { allow: Bytes::from(sip_message::method::allow()), cfg, locals }
    }

    /// `true` when an in-dialog request of `method` is relayed (see
    /// [`sip_message::SUPPORTED`]).
    pub(crate) fn relays(&self, method: &Method) -> bool {
        method.is_relayed_in_dialog()
    }

    /// `response_to(req, code)` plus our Server header.
    pub(crate) fn response(&self, req: &Message, code: u16) -> MessageBuilder {
        let b = Message::response_to(req, code);
        if self.cfg.user_agent.is_empty() {
            b
        } else {
            b.header(HeaderName::Server, self.cfg.user_agent.clone())
        }
    }

    /// Our Contact value for messages sent to `peer`.
    pub(crate) fn contact(&self, peer: &Peer) -> Bytes {
        dialog::contact_value(&self.locals, peer)
    }

    /// Our Via value for a request sent to `peer` on `branch`.
    pub(crate) fn via(&self, peer: &Peer, branch: &str) -> String {
        dialog::via_value(&self.locals, peer, branch)
    }

    /// A request inside dialog `d` with CSeq `seq` and Max-Forwards `mf`
    /// on `branch`: start line, Via, Max-Forwards, Route, From, To,
    /// Call-ID, CSeq (and User-Agent); and where to send it.
    pub(crate) fn request_in(
        &self,
        d: &Dialog,
        method: Method,
        seq: u32,
        branch: &str,
        mf: u8,
    ) -> (MessageBuilder, Peer) {
        let dest = d.destination(&self.locals);
        let (ruri, routes) = d.routing();
        let cseq = format!("{seq} {}", String::from_utf8_lossy(method.as_bytes()));
        let mut b = Message::request(method, ruri)
            .header(HeaderName::Via, self.via(&dest, branch))
            .header(HeaderName::MaxForwards, mf.to_string());
        for r in routes {
            b = b.header(HeaderName::Route, r);
        }
        b = b
            .header(HeaderName::From, d.local.clone())
            .header(HeaderName::To, d.remote.clone())
            .header(HeaderName::CallId, d.call_id.clone())
            .header(HeaderName::CSeq, cseq);
        if !self.cfg.user_agent.is_empty() {
            b = b.header(HeaderName::UserAgent, self.cfg.user_agent.clone());
        }
        (b, dest)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `seq` in dialog `d`
    /// (13.2.2.4), with `body` (the answer of a delayed offer), on `branch`.
    pub(crate) fn ack(&self, d: &Dialog, seq: u32, branch: &str, body: Option<Body>) -> Stored {
        let (mut b, peer) = self.request_in(d, Method::Ack, seq, branch, self.cfg.max_forwards);
        if let Some(body) = body {
            b = b.body(body.ctype, body.bytes);
        }
        Stored { message: b.build(), peer }
    }
}

/// The random source of a manager's identifiers: tags, Call-IDs, cnonces
/// and RSeq starts (a seeded generator: a test replays exactly).
#[derive(Debug)]
pub(crate) struct Tokens {
    rng: StdRng,
}

impl Tokens {
    pub(crate) fn seeded(seed: u64) -> Tokens {
        Tokens { rng: StdRng::seed_from_u64(seed) }
    }

    /// `n` random alphanumerics.
    pub(crate) fn token(&mut self, n: usize) -> Bytes {
        let v: Vec<u8> =
            (0..n).map(|_| TOKEN_ALPHABET[self.rng.gen_range(0..TOKEN_ALPHABET.len())]).collect();
        Bytes::from(v)
    }

    /// The first RSeq of a caller's reliable provisionals (RFC 3262 3).
    pub(crate) fn first_rseq(&mut self) -> u32 {
        self.rng.gen_range(1..=1_000_000)
    }
}
