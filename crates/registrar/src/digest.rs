//! Server-side HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616,
//! RFC 8760; RFC 2617/2069 compatibility).
//!
//! - Challenges offer SHA-256 then MD5, both `qop="auth"`, sharing one nonce.
//! - Nonces are stateless and self-verifying: 32 bytes in hex = issue time
//!   (milliseconds since the first `now` seen) + 8 random bytes + HMAC-SHA256
//!   of both and the realm under a secret (truncated to 16 bytes). They live
//!   [`DigestConfig::nonce_lifetime`].
//! - Replay: a nonce's `nc` must strictly increase. Only nonces that were
//!   answered correctly are tracked, in a bounded table; when it is full the
//!   oldest nonces are forgotten *and* refused from then on, so forgetting
//!   never reopens a replay.
//! - Credentials without `qop` (RFC 2069) are accepted only when
//!   [`DigestConfig::accept_rfc2069`] is set, and then each nonce works once.
//! - A correct response with an expired, unknown or reused nonce gives
//!   [`Outcome::Stale`] (challenge again with `stale=true`): only someone who
//!   knows the password can get it, and they cannot reuse the request.
//! - Unknown users are checked against a dummy HA1 with the same work, so the
//!   outcome ([`Outcome::Rejected`]) cannot tell them from a wrong password.
//!
//! Sans-IO and single-owner: time is handed in (`now`), the secret and the
//! nonces' random bytes come from a seeded [`StdRng`] that the owner chooses
//! ([`DigestAuth::new`], [`DigestAuth::with_secret`]), so the same seed and
//! the same calls give the same nonces. Issuing nonces and verifying
//! credentials (which records nonce use) take `&mut self`; nothing locks.

use crate::util::{derive_seed, sip_uri_eq, unescape_quoted};

/// `true` when both are SIP URIs naming the same host and port (the user
/// part and parameters aside): the digest `uri` SIPp and some phones send.
fn same_host_port(a: &[u8], b: &[u8]) -> bool {
    match (sip_message::Uri::parse(a), sip_message::Uri::parse(b)) {
        (Ok(x), Ok(y)) => {
            x.is_sip() && y.is_sip() && x.host.eq_ignore_ascii_case(y.host) && x.port == y.port
        }
        _ => false,
    }
}
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::Sha256;
pub use sip_message::digest::Algorithm;
use sip_message::digest::{QopAuth, RequestDigest};
use sip_message::hex;
use sip_message::{AuthParams, HeaderName, Message, Transport};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Digest settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestConfig {
    /// How long a nonce is good for (default 300 s).
    pub nonce_lifetime: Duration,
    /// Accept credentials without `qop` (RFC 2069); each nonce then works
    /// once (default `true`).
    pub accept_rfc2069: bool,
    /// Most nonces tracked for replay protection (default 65 536).
    pub max_tracked_nonces: usize,
    /// Algorithms offered, one challenge each in this order, and accepted
    /// (default SHA-256 then MD5). Leave one out when the stored HA1s lack
    /// it: offering it per user would tell which users exist.
    pub algorithms: Vec<Algorithm>,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            nonce_lifetime: Duration::from_secs(300),
            accept_rfc2069: true,
            max_tracked_nonces: 65_536,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }
}

/// The result of checking a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials are good.
    Authenticated {
        /// The `username` (unescaped).
        username: String,
        /// The algorithm used.
        algorithm: Algorithm,
    },
    /// No Digest credentials for this realm: send a challenge.
    Missing,
    /// The response was right but the nonce expired, is not ours any more,
    /// or its `nc` was already used: challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, or a `uri` that is not the
    /// Request-URI.
    Rejected,
    /// Credentials that cannot be checked (missing or bad parameters,
    /// unsupported algorithm or qop).
    Malformed(&'static str),
}

const NONCE_BYTES: usize = 32;

struct NonceEntry {
    issued_ms: u64,
    /// Highest `nc` seen; `u32::MAX` once used without qop.
    max_nc: u32,
}

struct NonceTable {
    map: HashMap<[u8; 16], NonceEntry>,
    /// Nonces issued at or before this were forgotten and are refused.
    floor_ms: Option<u64>,
}

enum NonceState {
    Fresh { key: [u8; 16], issued_ms: u64 },
    Expired,
    Invalid,
}

/// Issues challenges and verifies Digest credentials.
pub struct DigestAuth {
    cfg: DigestConfig,
    secret: [u8; 32],
    dummy_md5: String,
    dummy_sha256: String,
    /// The instant nonce times count from: the first `now` seen.
    base: Option<Instant>,
    nonces: NonceTable,
    /// The nonces' random bytes.
    rng: StdRng,
}

impl std::fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAuth").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl DigestAuth {
    /// With the secret and the nonces' random bytes both drawn from a
    /// [`StdRng`] seeded with `seed`. The owner picks the seed (from the OS
    /// in production, so that the secret cannot be guessed; fixed in tests).
    /// A `u64` seed gives the secret at most 64 bits of entropy: for the full
    /// 256, use [`DigestAuth::with_secret`] with 32 random bytes.
    pub fn new(cfg: DigestConfig, seed: u64) -> DigestAuth {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        DigestAuth::build(cfg, secret, rng)
    }

    /// With a given secret (several processes sharing nonces, tests). The
    /// nonces' random bytes come from a [`StdRng`] seeded from the secret:
    /// deterministic too.
    pub fn with_secret(cfg: DigestConfig, secret: [u8; 32]) -> DigestAuth {
        let rng = StdRng::from_seed(derive_seed(&secret, b"forkswitch digest nonce rng"));
        DigestAuth::build(cfg, secret, rng)
    }

    fn build(cfg: DigestConfig, secret: [u8; 32], rng: StdRng) -> DigestAuth {
        let dummy_md5 = hex::encode(&Algorithm::Md5.hash(&[&secret, b"dummy-ha1"]));
        let dummy_sha256 = hex::encode(&Algorithm::Sha256.hash(&[&secret, b"dummy-ha1"]));
        DigestAuth {
            cfg,
            secret,
            dummy_md5,
            dummy_sha256,
            base: None,
            nonces: NonceTable { map: HashMap::new(), floor_ms: None },
            rng,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DigestConfig {
        &self.cfg
    }

    /// Milliseconds from the base instant to `now` (the first call sets the
    /// base).
    fn now_ms(&mut self, now: Instant) -> u64 {
        let base = *self.base.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX)
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.cfg.nonce_lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    fn mac(&self, head: &[u8], realm: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        // HMAC accepts keys of any length: new_from_slice cannot fail here.
        if let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.secret) {
            m.update(head);
            m.update(realm.as_bytes());
            let tag = m.finalize().into_bytes();
            out.copy_from_slice(&tag[..16]);
        }
        out
    }

    /// A new nonce for `realm`.
    pub fn nonce(&mut self, now: Instant, realm: &str) -> String {
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&self.now_ms(now).to_be_bytes());
        self.rng.fill_bytes(&mut raw[8..16]);
        let mac = self.mac(&raw[..16], realm);
        raw[16..].copy_from_slice(&mac);
        hex::encode(&raw)
    }

    /// The `WWW-Authenticate` (or `Proxy-Authenticate`) values to send, one
    /// per configured algorithm (SHA-256 then MD5 by default), sharing one
    /// fresh nonce.
    pub fn challenges(&mut self, now: Instant, realm: &str, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now, realm);
        let realm = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let stale = if stale { ", stale=true" } else { "" };
        self.cfg
            .algorithms
            .iter()
            .map(|alg| {
                format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    alg.token()
                )
            })
            .collect()
    }

    /// [`DigestAuth::challenges`] for a request that came over `transport`.
    /// Over WS and WSS an offered MD5 goes last: JsSIP, the usual browser
    /// stack, keeps only the last `WWW-Authenticate` / `Proxy-Authenticate`
    /// header and aborts on any algorithm but MD5, while SIPp and many desk
    /// phones read only the first.
    pub fn challenges_over(
        &mut self,
        now: Instant,
        realm: &str,
        stale: bool,
        transport: Transport,
    ) -> Vec<String> {
        let mut c = self.challenges(now, realm, stale);
        if matches!(transport, Transport::Ws | Transport::Wss) {
            c.sort_by_key(|v| v.contains("algorithm=MD5,"));
        }
        c
    }

    fn check_nonce(&mut self, now: Instant, nonce: &[u8], realm: &str) -> NonceState {
        let mut raw = [0u8; NONCE_BYTES];
        if !hex::decode_into(nonce, &mut raw) {
            return NonceState::Invalid;
        }
        let mac = self.mac(&raw[..16], realm);
        if !bool::from(mac.ct_eq(&raw[16..])) {
            return NonceState::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued_ms = u64::from_be_bytes(ts);
        let now_ms = self.now_ms(now);
        if now_ms.saturating_sub(issued_ms) > self.lifetime_ms() {
            return NonceState::Expired;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[..16]);
        NonceState::Fresh { key, issued_ms }
    }

    /// Records a use of a fresh nonce; `false` for a replay (or a nonce
    /// older than what the table still remembers).
    fn record_use(&mut self, now: Instant, key: [u8; 16], issued_ms: u64, nc: Option<u32>) -> bool {
        let now_ms = self.now_ms(now);
        let lifetime = self.lifetime_ms();
        let cap = self.cfg.max_tracked_nonces.max(1);
        let t = &mut self.nonces;
        if t.floor_ms.is_some_and(|f| issued_ms <= f) {
            return false;
        }
        if let Some(e) = t.map.get_mut(&key) {
            return match nc {
                Some(nc) if e.max_nc != u32::MAX && nc > e.max_nc => {
                    e.max_nc = nc;
                    true
                }
                _ => false,
            };
        }
        if t.map.len() >= cap {
            t.map.retain(|_, e| now_ms.saturating_sub(e.issued_ms) <= lifetime);
        }
        if t.map.len() >= cap {
            // Forget the oldest eighth and refuse everything issued up to it.
            let mut issued: Vec<u64> = t.map.values().map(|e| e.issued_ms).collect();
            let k = (cap / 8).clamp(1, issued.len()) - 1;
            let (_, &mut floor, _) = issued.select_nth_unstable(k);
            t.map.retain(|_, e| e.issued_ms > floor);
            t.floor_ms = Some(t.floor_ms.map_or(floor, |f| f.max(floor)));
            if issued_ms <= floor {
                return false;
            }
        }
        t.map.insert(key, NonceEntry { issued_ms, max_nc: nc.unwrap_or(u32::MAX) });
        true
    }

    /// Drops replay records of expired nonces.
    pub fn sweep(&mut self, now: Instant) {
        let now_ms = self.now_ms(now);
        let lifetime = self.lifetime_ms();
        self.nonces.map.retain(|_, e| now_ms.saturating_sub(e.issued_ms) <= lifetime);
    }

    /// Nonces currently tracked for replay protection.
    pub fn tracked_nonces(&self) -> usize {
        self.nonces.map.len()
    }

    /// Checks the Digest credentials of `req` for `realm` found in the
    /// `header` fields (`Authorization` or `Proxy-Authorization`); the first
    /// Digest value whose realm matches is used. `ha1_for(username, alg)`
    /// gives the stored HA1 (hex) of a user, `None` when unknown.
    pub fn verify_request<'h>(
        &mut self,
        now: Instant,
        req: &Message,
        header: HeaderName,
        realm: &str,
        ha1_for: impl FnOnce(&str, Algorithm) -> Option<&'h str>,
    ) -> Outcome {
        let (Some(method), Some(ruri)) = (req.method(), req.request_uri_bytes()) else {
            return Outcome::Malformed("not a request");
        };
        let creds = req.header_values(header).filter_map(|v| AuthParams::parse(v).ok()).find(|a| {
            a.is_digest()
                && a.get("realm").is_some_and(|r| r.eq_ignore_ascii_case(realm.as_bytes()))
        });
        match creds {
            Some(c) => self.verify(now, method.as_bytes(), ruri, realm, &c, ha1_for),
            None => Outcome::Missing,
        }
    }

    /// Checks one set of Digest credentials (see [`DigestAuth::verify_request`]).
    pub fn verify<'h>(
        &mut self,
        now: Instant,
        method: &[u8],
        request_uri: &[u8],
        realm: &str,
        creds: &AuthParams<'_>,
        ha1_for: impl FnOnce(&str, Algorithm) -> Option<&'h str>,
    ) -> Outcome {
        if !creds.is_digest() {
            return Outcome::Missing;
        }
        if !creds.get("realm").is_some_and(|r| r.eq_ignore_ascii_case(realm.as_bytes())) {
            return Outcome::Missing;
        }
        let (Some(user), Some(nonce), Some(uri), Some(resp)) =
            (creds.get("username"), creds.get("nonce"), creds.get("uri"), creds.get("response"))
        else {
            return Outcome::Malformed("username, nonce, uri and response are required");
        };
        let alg = match creds.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::from_token(a) {
                Some(a) => a,
                None => return Outcome::Malformed("unsupported algorithm"),
            },
        };
        if !self.cfg.algorithms.contains(&alg) {
            return Outcome::Malformed("algorithm not offered");
        }
        if creds.get("userhash").is_some_and(|u| u.eq_ignore_ascii_case(b"true")) {
            return Outcome::Malformed("userhash is not supported");
        }
        let qop = match creds.get("qop") {
            None if self.cfg.accept_rfc2069 => None,
            None => return Outcome::Malformed("qop is required"),
            Some(q) if q.eq_ignore_ascii_case(b"auth") => {
                let (Some(nc), Some(cnonce)) = (creds.get("nc"), creds.get("cnonce")) else {
                    return Outcome::Malformed("nc and cnonce are required with qop");
                };
                let n = std::str::from_utf8(nc)
                    .ok()
                    .filter(|s| s.len() == 8)
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
                    .filter(|&n| n > 0);
                let Some(n) = n else { return Outcome::Malformed("bad nc") };
                if cnonce.is_empty() {
                    return Outcome::Malformed("empty cnonce");
                }
                Some((n, nc, cnonce, q))
            }
            Some(_) => return Outcome::Malformed("unsupported qop"),
        };
        let username = String::from_utf8_lossy(&unescape_quoted(user)).into_owned();

        // Same work for known and unknown users: a dummy HA1 stands in.
        let stored = ha1_for(&username, alg).filter(|h| h.len() == alg.hash_len() * 2);
        let known = stored.is_some();
        let dummy = match alg {
            Algorithm::Md5 => self.dummy_md5.as_str(),
            Algorithm::Sha256 => self.dummy_sha256.as_str(),
        };
        let ha1 = stored.unwrap_or(dummy).to_ascii_lowercase();
        let qop_values = qop.map(|(_, nc, cnonce, qop)| QopAuth { nc, cnonce, qop });
        let digest = RequestDigest { algorithm: alg, nonce, qop: qop_values, method, uri };
        let expected = digest.bytes(ha1.as_bytes());
        let mut given = [0u8; 32];
        let given = &mut given[..alg.hash_len()];
        let parsed = hex::decode_into(resp, given);
        let matches = bool::from(expected.as_slice().ct_eq(given));
        if !(matches & parsed & known) {
            return Outcome::Rejected;
        }
        if !sip_uri_eq(uri, request_uri) && !same_host_port(uri, request_uri) {
            return Outcome::Rejected;
        }
        match self.check_nonce(now, nonce, realm) {
            NonceState::Fresh { key, issued_ms } => {
                if !self.record_use(now, key, issued_ms, qop.map(|(n, ..)| n)) {
                    return Outcome::Stale;
                }
            }
            NonceState::Expired | NonceState::Invalid => return Outcome::Stale,
        }
        Outcome::Authenticated { username, algorithm: alg }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{ha1_md5, ha1_sha256};

    const SIP_REALM: &str = "test";
    const RURI: &str = "sip:test";

    fn auth(cfg: DigestConfig) -> DigestAuth {
        DigestAuth::with_secret(cfg, [7u8; 32])
    }

    fn creds(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: u32, qop: bool) -> String {
        let ha1 = match alg {
            Algorithm::Md5 => ha1_md5(user, SIP_REALM, pw),
            Algorithm::Sha256 => ha1_sha256(user, SIP_REALM, pw),
        };
        let nc = format!("{nc:08x}");
        let q = qop.then_some(QopAuth { nc: nc.as_bytes(), cnonce: b"abc", qop: b"auth" });
        let (method, uri) = (&b"REGISTER"[..], RURI.as_bytes());
        let r = RequestDigest { algorithm: alg, nonce: nonce.as_bytes(), qop: q, method, uri }
            .hex(&ha1);
        let mut s = format!(
            "Digest username=\"{user}\", realm=\"{SIP_REALM}\", nonce=\"{nonce}\", uri=\"{RURI}\", response=\"{r}\", algorithm={}",
            alg.token()
        );
        if qop {
            s.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"abc\""));
        }
        s
    }

    fn check(a: &mut DigestAuth, now: Instant, value: &str) -> Outcome {
        let p = AuthParams::parse(value.as_bytes()).expect("credentials parse");
        let md5 = ha1_md5("alice", SIP_REALM, "pw");
        let sha = ha1_sha256("alice", SIP_REALM, "pw");
        a.verify(now, b"REGISTER", RURI.as_bytes(), SIP_REALM, &p, |u, alg| {
            (u == "alice").then_some(match alg {
                Algorithm::Md5 => md5.as_str(),
                Algorithm::Sha256 => sha.as_str(),
            })
        })
    }

    fn nonce_of(challenge: &str) -> String {
        let p = AuthParams::parse(challenge.as_bytes()).expect("challenge parses");
        String::from_utf8(p.get("nonce").expect("nonce").to_vec()).expect("utf8")
    }

    #[test]
    fn challenges_sha256_first_shared_nonce() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let c = a.challenges(t0, SIP_REALM, false);
        let [c1, c2] = c.as_slice() else { panic!("two challenges") };
        assert!(c1.contains("algorithm=SHA-256") && c1.contains("qop=\"auth\""), "{c1}");
        assert!(c2.contains("algorithm=MD5") && !c2.contains("stale"), "{c2}");
        assert_eq!(nonce_of(c1), nonce_of(c2));
        assert_eq!(nonce_of(c1).len(), 64);
        let s = a.challenges(t0, SIP_REALM, true);
        assert!(s.iter().all(|s| s.ends_with(", stale=true")));
        let mut md5_only =
            auth(DigestConfig { algorithms: vec![Algorithm::Md5], ..Default::default() });
        let c = md5_only.challenges(t0, SIP_REALM, false);
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("algorithm=MD5"));
        let n = md5_only.nonce(t0, SIP_REALM);
        let sha = creds(Algorithm::Sha256, "alice", "pw", &n, 1, true);
        assert_eq!(check(&mut md5_only, t0, &sha), Outcome::Malformed("algorithm not offered"));
    }

    #[test]
    fn md5_goes_last_over_websocket_only() {
        let cfg = DigestConfig {
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            ..Default::default()
        };
        let mut a = auth(cfg);
        let t0 = Instant::now();
        let algs = |c: Vec<String>| -> Vec<bool> { c.iter().map(|v| v.contains("MD5")).collect() };
        assert_eq!(algs(a.challenges_over(t0, SIP_REALM, false, Transport::Udp)), [true, false]);
        assert_eq!(algs(a.challenges_over(t0, SIP_REALM, false, Transport::Tls)), [true, false]);
        assert_eq!(algs(a.challenges_over(t0, SIP_REALM, true, Transport::Ws)), [false, true]);
        assert_eq!(algs(a.challenges_over(t0, SIP_REALM, false, Transport::Wss)), [false, true]);
    }

    #[test]
    fn good_credentials_both_algorithms() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let n = a.nonce(t0, SIP_REALM);
            let out = check(&mut a, t0, &creds(alg, "alice", "pw", &n, 1, true));
            assert_eq!(out, Outcome::Authenticated { username: "alice".into(), algorithm: alg });
        }
    }

    #[test]
    fn nonce_expiry_gives_stale() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Sha256, "alice", "pw", &n, 1, true);
        assert_eq!(check(&mut a, t0 + Duration::from_secs(301), &c), Outcome::Stale);
        // Expired and wrong password: rejected, not stale.
        let c = creds(Algorithm::Sha256, "alice", "nope", &n, 1, true);
        assert_eq!(check(&mut a, t0 + Duration::from_secs(301), &c), Outcome::Rejected);
        // Within the lifetime it is fine.
        let c = creds(Algorithm::Sha256, "alice", "pw", &n, 1, true);
        assert!(matches!(
            check(&mut a, t0 + Duration::from_secs(299), &c),
            Outcome::Authenticated { .. }
        ));
    }

    #[test]
    fn forged_or_foreign_nonce_is_stale_not_accepted() {
        let mut a = auth(DigestConfig::default());
        let mut other = DigestAuth::with_secret(DigestConfig::default(), [8u8; 32]);
        let t0 = Instant::now();
        let n = other.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true);
        assert_eq!(check(&mut a, t0, &c), Outcome::Stale);
        let c = creds(Algorithm::Md5, "alice", "pw", "abcdef", 1, true);
        assert_eq!(check(&mut a, t0, &c), Outcome::Stale);
        // A nonce made for another realm.
        let n = a.nonce(t0, "elsewhere");
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true);
        assert_eq!(check(&mut a, t0, &c), Outcome::Stale);
    }

    #[test]
    fn replayed_nc_rejected() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let c1 = creds(Algorithm::Md5, "alice", "pw", &n, 1, true);
        assert!(matches!(check(&mut a, t0, &c1), Outcome::Authenticated { .. }));
        assert_eq!(check(&mut a, t0, &c1), Outcome::Stale);
        let c2 = creds(Algorithm::Md5, "alice", "pw", &n, 2, true);
        assert!(matches!(check(&mut a, t0, &c2), Outcome::Authenticated { .. }));
        assert_eq!(check(&mut a, t0, &c1), Outcome::Stale);
        let c5 = creds(Algorithm::Md5, "alice", "pw", &n, 5, true);
        assert!(matches!(check(&mut a, t0, &c5), Outcome::Authenticated { .. }));
        let c3 = creds(Algorithm::Md5, "alice", "pw", &n, 3, true);
        assert_eq!(check(&mut a, t0, &c3), Outcome::Stale);
        assert_eq!(a.tracked_nonces(), 1);
        a.sweep(t0 + Duration::from_secs(301));
        assert_eq!(a.tracked_nonces(), 0);
    }

    #[test]
    fn rfc2069_single_use_or_refused() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, false);
        assert!(matches!(check(&mut a, t0, &c), Outcome::Authenticated { .. }));
        assert_eq!(check(&mut a, t0, &c), Outcome::Stale);
        // Once used without qop, the nonce is spent for qop use as well.
        let q = creds(Algorithm::Md5, "alice", "pw", &n, 9, true);
        assert_eq!(check(&mut a, t0, &q), Outcome::Stale);

        let mut strict = auth(DigestConfig { accept_rfc2069: false, ..DigestConfig::default() });
        let n = strict.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, false);
        assert_eq!(check(&mut strict, t0, &c), Outcome::Malformed("qop is required"));
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let wrong = creds(Algorithm::Sha256, "alice", "guess", &n, 1, true);
        let unknown = creds(Algorithm::Sha256, "mallory", "pw", &n, 1, true);
        assert_eq!(check(&mut a, t0, &wrong), Outcome::Rejected);
        assert_eq!(check(&mut a, t0, &unknown), Outcome::Rejected);
        // A bogus response (not hex) is the same too.
        let bad = wrong.replace("response=\"", "response=\"zz");
        assert_eq!(check(&mut a, t0, &bad), Outcome::Rejected);
    }

    #[test]
    fn digest_uri_naming_the_same_host_and_port_is_accepted() {
        // SIPp (and some phones) put `sip:<server>` in `uri` for every
        // request; the credentials still only fit requests to this host.
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let ha1 = ha1_md5("alice", SIP_REALM, "pw");
        let uri = "sip:192.0.2.5:5070";
        let qop = Some(QopAuth { nc: b"00000001", cnonce: b"abc", qop: b"auth" });
        let (method, nonce) = (&b"INVITE"[..], n.as_bytes());
        let digest =
            RequestDigest { algorithm: Algorithm::Md5, nonce, qop, method, uri: uri.as_bytes() };
        let r = digest.hex(&ha1);
        let c = format!(
            "Digest username=\"alice\", realm=\"{SIP_REALM}\", nonce=\"{n}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\""
        );
        let p = AuthParams::parse(c.as_bytes()).expect("parse");
        let same =
            a.verify(t0, b"INVITE", b"sip:+15551234567@192.0.2.5:5070", SIP_REALM, &p, |_, _| {
                Some(&ha1)
            });
        assert!(matches!(same, Outcome::Authenticated { .. }), "{same:?}");
        let other =
            a.verify(t0, b"INVITE", b"sip:+15551234567@192.0.2.6:5070", SIP_REALM, &p, |_, _| {
                Some(&ha1)
            });
        assert_eq!(other, Outcome::Rejected);
    }

    #[test]
    fn uri_realm_and_params_checked() {
        let mut a = auth(DigestConfig::default());
        let t0 = Instant::now();
        let n = a.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true);
        let p = AuthParams::parse(c.as_bytes()).expect("parse");
        let out = a.verify(t0, b"REGISTER", b"sip:elsewhere", SIP_REALM, &p, |_, _| None);
        assert_eq!(out, Outcome::Rejected);
        let ha1 = ha1_md5("alice", SIP_REALM, "pw");
        let out = a.verify(t0, b"REGISTER", b"sip:elsewhere", SIP_REALM, &p, |_, _| Some(&ha1));
        assert_eq!(out, Outcome::Rejected, "uri must match the Request-URI");
        let out = a.verify(t0, b"REGISTER", RURI.as_bytes(), "other", &p, |_, _| Some(&ha1));
        assert_eq!(out, Outcome::Missing, "credentials for another realm are ignored");
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true).replace("MD5", "MD5-sess");
        assert_eq!(check(&mut a, t0, &c), Outcome::Malformed("unsupported algorithm"));
        let c =
            creds(Algorithm::Md5, "alice", "pw", &n, 1, true).replace("qop=auth", "qop=auth-int");
        assert_eq!(check(&mut a, t0, &c), Outcome::Malformed("unsupported qop"));
        let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true).replace("nc=00000001", "nc=1");
        assert_eq!(check(&mut a, t0, &c), Outcome::Malformed("bad nc"));
    }

    #[test]
    fn bounded_nonce_table_never_reopens_replay() {
        let mut a = auth(DigestConfig { max_tracked_nonces: 8, ..DigestConfig::default() });
        let t0 = Instant::now();
        let mut used = Vec::new();
        for k in 0..20u64 {
            let t = t0 + Duration::from_millis(k);
            let n = a.nonce(t, SIP_REALM);
            let c = creds(Algorithm::Md5, "alice", "pw", &n, 1, true);
            assert!(matches!(check(&mut a, t, &c), Outcome::Authenticated { .. }), "nonce {k}");
            used.push(c);
            assert!(a.tracked_nonces() <= 8);
        }
        // Every used (nc=1) credential stays refused, remembered or not.
        let t = t0 + Duration::from_millis(30);
        for c in &used {
            assert_eq!(check(&mut a, t, c), Outcome::Stale);
        }
    }

    #[test]
    fn same_seed_same_nonces_different_seed_different_nonces() {
        let t0 = Instant::now();
        let run = |mut a: DigestAuth| -> Vec<String> {
            let mut v = vec![a.nonce(t0, SIP_REALM), a.nonce(t0, SIP_REALM)];
            v.extend(a.challenges(t0 + Duration::from_millis(1500), SIP_REALM, false));
            v
        };
        let a = run(DigestAuth::new(DigestConfig::default(), 42));
        assert_eq!(a, run(DigestAuth::new(DigestConfig::default(), 42)));
        assert_ne!(a[0], a[1], "each nonce has fresh random bytes");
        let b = run(DigestAuth::new(DigestConfig::default(), 43));
        for (x, y) in a.iter().zip(&b) {
            assert_ne!(x, y);
        }
        // The same issue time: only the random bytes and the MAC differ.
        assert_eq!(a[0][..16], b[0][..16]);
        // With a given secret, deterministic as well.
        let s = run(auth(DigestConfig::default()));
        assert_eq!(s, run(auth(DigestConfig::default())));
        assert_ne!(s[0], run(DigestAuth::with_secret(DigestConfig::default(), [8u8; 32]))[0]);
    }

    #[test]
    fn seeded_nonces_verify_only_with_the_same_seed() {
        let t0 = Instant::now();
        let mut a = DigestAuth::new(DigestConfig::default(), 42);
        let mut twin = DigestAuth::new(DigestConfig::default(), 42);
        let mut other = DigestAuth::new(DigestConfig::default(), 43);
        let n = a.nonce(t0, SIP_REALM);
        let c = creds(Algorithm::Sha256, "alice", "pw", &n, 1, true);
        assert!(matches!(check(&mut a, t0, &c), Outcome::Authenticated { .. }));
        // Same seed, same secret: the twin accepts it (its own replay table).
        twin.nonce(t0, SIP_REALM);
        assert!(matches!(check(&mut twin, t0, &c), Outcome::Authenticated { .. }));
        // Another seed is another secret.
        other.nonce(t0, SIP_REALM);
        assert_eq!(check(&mut other, t0, &c), Outcome::Stale);
    }
}
