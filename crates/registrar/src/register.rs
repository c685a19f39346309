//! REGISTER processing (RFC 3261 10.3, RFC 5626 instance/reg-id).
//!
//! [`Registrar::handle`] takes a REGISTER and where it came from and returns
//! the response, after authenticating it and updating the
//! [`LocationStore`]. Order of checks:
//!
//! 1. a banned source gets 403 (or nothing, see [`BanAction`]);
//! 2. malformed To/Call-ID/CSeq/Request-URI: 400 (416 for a non-SIP
//!    Request-URI); unknown `Require` option tags: 420;
//! 3. the To URI must be `sip:`/`sips:` with a served domain (name or
//!    alias) as host, else **404**; a Request-URI host that names a
//!    *different* served domain is also 404 (an IP address or any host we do
//!    not serve is taken to mean us);
//! 4. Digest authentication in realm = the domain name: no credentials
//!    401 (two challenges); stale nonce 401 `stale=true`; wrong password
//!    **and** unknown user 403, counted towards a ban; authenticated user
//!    other than the To user 403 (not counted);
//! 5. the bindings are updated atomically per AOR, and the 200 lists them.
//!
//! Sans-IO and single-owner: the [`Registrar`] owns its accounts, location
//! store, digest verifier and ban list by value and changes them through
//! `&mut self`; nothing locks. Time is handed in (`now`, `wall`), randomness
//! (nonces, To tags) comes from RNGs seeded by the owner at construction,
//! and binding changes to persist are queued as [`BindingChange`]s for the
//! owner to drain ([`Registrar::poll_change`]).

use crate::accounts::Accounts;
use crate::digest::{Algorithm, DigestAuth, DigestConfig, Outcome};
use crate::location::{by_q_desc, BindingChange, Change, Location, LocationStore};
use crate::ratelimit::{AuthLimiter, BanAction, BanConfig, Verdict};
use crate::security::{loggable_user, SecurityEvent};
use crate::util::{derive_seed, percent_decode, sip_uri_eq};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use records::{Binding, Timestamp};
use sip_message::{Contacts, HeaderName, Message, Method, NameAddr, Peer, Uri};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Registrar settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest accepted non-zero expiry; shorter gets 423 (default 60).
    pub min_expires: u32,
    /// Longest granted expiry; longer is cut to this (default 7200).
    pub max_expires: u32,
    /// Expiry when the REGISTER gives none (default 3600).
    pub default_expires: u32,
    /// Nonce lifetime (default 300 s).
    pub nonce_lifetime: Duration,
    /// Most bindings per AOR (default 10): beyond it the bindings closest to
    /// expiry are dropped; a REGISTER adding more than this many contacts at
    /// once gets 403.
    pub max_bindings_per_aor: usize,
    /// Accept Digest credentials without qop, single-use nonce (default true).
    pub accept_rfc2069: bool,
    /// Most nonces tracked for replay protection (default 65 536).
    pub max_tracked_nonces: usize,
    /// Digest algorithms offered and accepted (default SHA-256, MD5).
    pub algorithms: Vec<Algorithm>,
    /// Failed-authentication bans.
    pub ban: BanConfig,
    /// The cluster node this registrar runs on (`[cluster] node_id`),
    /// written in every binding it makes; empty without a cluster.
    pub node_id: String,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            max_bindings_per_aor: 10,
            accept_rfc2069: true,
            max_tracked_nonces: 65_536,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            ban: BanConfig::default(),
            node_id: String::new(),
        }
    }
}

/// A response short of 200: code, reason and extra header fields.
struct Reject {
    code: u16,
    reason: Option<&'static str>,
    headers: Vec<(HeaderName, String)>,
}

impl Reject {
    fn new(code: u16) -> Reject {
        Reject { code, reason: None, headers: Vec::new() }
    }

    fn why(code: u16, reason: &'static str) -> Reject {
        Reject { code, reason: Some(reason), headers: Vec::new() }
    }
}

/// One Contact of a REGISTER, checked.
struct NewContact {
    uri: String,
    instance: Option<String>,
    reg_id: Option<u32>,
    q: u16,
    /// Granted seconds (0 removes).
    expires: u32,
}

/// The REGISTER handler, and the owner of the location service. One owner,
/// `&mut self` to change anything.
pub struct Registrar {
    cfg: RegistrarConfig,
    accounts: Accounts,
    location: LocationStore,
    digest: DigestAuth,
    limiter: AuthLimiter,
    /// Security events not yet polled.
    security: std::collections::VecDeque<SecurityEvent>,
    /// To tags.
    rng: StdRng,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("cfg", &self.cfg)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn digest_config(cfg: &RegistrarConfig) -> DigestConfig {
    DigestConfig {
        nonce_lifetime: cfg.nonce_lifetime,
        accept_rfc2069: cfg.accept_rfc2069,
        max_tracked_nonces: cfg.max_tracked_nonces,
        algorithms: cfg.algorithms.clone(),
    }
}

/// `q` in thousandths written as a qvalue (`500` gives `0.5`).
fn qvalue(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Registrar {
    /// A registrar whose randomness (the nonce secret, the nonces' random
    /// bytes, To tags) all derives from `seed`. The owner picks the seed:
    /// from the OS in production (the nonce secret must not be guessable),
    /// fixed in tests; the same seed and the same calls give the same
    /// answers. A `u64` seed gives the nonce secret at most 64 bits of
    /// entropy: for the full 256, use [`Registrar::with_secret`] with 32
    /// random bytes.
    pub fn new(cfg: RegistrarConfig, accounts: Accounts, seed: u64) -> Self {
        let mut master = StdRng::seed_from_u64(seed);
        let digest = DigestAuth::new(digest_config(&cfg), master.next_u64());
        let mut tag_seed = [0u8; 32];
        master.fill_bytes(&mut tag_seed);
        Self::build(cfg, accounts, digest, StdRng::from_seed(tag_seed))
    }

    /// A registrar with a given nonce secret (tests, several processes
    /// sharing nonces); the rest of its randomness is seeded from the secret
    /// (deterministic too).
    pub fn with_secret(cfg: RegistrarConfig, accounts: Accounts, secret: [u8; 32]) -> Self {
        let digest = DigestAuth::with_secret(digest_config(&cfg), secret);
        let rng = StdRng::from_seed(derive_seed(&secret, b"forkswitch registrar to-tag rng"));
        Self::build(cfg, accounts, digest, rng)
    }

    fn build(cfg: RegistrarConfig, accounts: Accounts, digest: DigestAuth, rng: StdRng) -> Self {
        let limiter = AuthLimiter::new(cfg.ban.clone());
        Registrar {
            cfg,
            accounts,
            location: LocationStore::new(),
            digest,
            limiter,
            security: std::collections::VecDeque::new(),
            rng,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// The current account directory.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Replaces the account directory (accounts changed through the API).
    /// Existing bindings are kept (see [`LocationStore::remove_aor`]).
    pub fn set_accounts(&mut self, accounts: Accounts) {
        self.accounts = accounts;
    }

    /// The location service it updates.
    pub fn location(&self) -> &LocationStore {
        &self.location
    }

    /// The location service, to change (load at start-up, connection
    /// closed, AOR removed, ...).
    pub fn location_mut(&mut self) -> &mut LocationStore {
        &mut self.location
    }

    /// The next binding change to store durably (see
    /// [`LocationStore::poll_change`]); drain after every call that can
    /// change bindings ([`Registrar::handle`], [`Registrar::sweep`], changes
    /// through [`Registrar::location_mut`]).
    pub fn poll_change(&mut self) -> Option<BindingChange> {
        self.location.poll_change()
    }

    /// The digest verifier.
    pub fn digest(&self) -> &DigestAuth {
        &self.digest
    }

    /// The digest verifier, to authenticate other requests with the same
    /// nonces.
    pub fn digest_mut(&mut self) -> &mut DigestAuth {
        &mut self.digest
    }

    /// Checks the digest credentials of a request other than REGISTER (an
    /// INVITE's `Proxy-Authorization`, say) against this registrar's
    /// extensions in `realm`, with the same nonces and replay protection.
    pub fn authenticate(
        &mut self,
        now: Instant,
        req: &Message,
        header: HeaderName,
        realm: &str,
    ) -> Outcome {
        let accounts = &self.accounts;
        self.digest.verify_request(now, req, header, realm, |user, alg| {
            accounts
                .extension(user, realm)
                .map(|e| match alg {
                    Algorithm::Md5 => e.ha1_md5.as_str(),
                    Algorithm::Sha256 => e.ha1_sha256.as_str(),
                })
                .filter(|h| !h.is_empty())
        })
    }

    /// The failed-authentication limiter.
    pub fn limiter(&self) -> &AuthLimiter {
        &self.limiter
    }

    /// The failed-authentication limiter, to change (failures of other
    /// requests).
    pub fn limiter_mut(&mut self) -> &mut AuthLimiter {
        &mut self.limiter
    }

    /// Counts a failed authentication of `user` from `src` (REGISTER here;
    /// INVITE from the switch) towards a ban, and queues its security
    /// events.
    pub fn auth_failed(&mut self, now: Instant, src: IpAddr, user: &str, method: &'static str) {
        let verdict = self.limiter.record(src, now);
        if verdict == Verdict::StillBanned {
            return;
        }
        let user = loggable_user(user);
        self.security.push_back(SecurityEvent::AuthFailed { src, user: user.clone(), method });
        if let Verdict::Banned(d) = verdict {
            let src = crate::ratelimit::source_key(src);
            self.security.push_back(SecurityEvent::Banned { src, user, method, secs: d.as_secs() });
        }
    }

    /// The next security event (failed authentication, ban, end of a ban).
    pub fn poll_security(&mut self) -> Option<SecurityEvent> {
        self.security.pop_front()
    }

    /// Periodic housekeeping: forgets old nonces and ban entries, and
    /// removes expired bindings (returned; their removals are queued as
    /// [`BindingChange`]s).
    pub fn sweep(&mut self, now: Instant, wall: Timestamp) -> Vec<(String, Binding)> {
        self.digest.sweep(now);
        for src in self.limiter.sweep(now) {
            self.security.push_back(SecurityEvent::Unbanned { src });
        }
        self.location.expire(wall)
    }

    /// Handles a REGISTER received from `peer`: returns the response to
    /// send, or `None` when the request is to be dropped (banned source with
    /// [`BanAction::Drop`]). `now` drives nonces and bans, `wall` binding
    /// expiry.
    pub fn handle(
        &mut self,
        now: Instant,
        wall: Timestamp,
        req: &Message,
        peer: &Peer,
    ) -> Option<Message> {
        if self.limiter.is_banned(peer.remote.ip(), now) {
            return match self.cfg.ban.action {
                BanAction::Reject => Some(respond(req, Reject::new(403), &mut self.rng)),
                BanAction::Drop => None,
            };
        }
        Some(match self.process(now, wall, req, peer) {
            Ok(m) => m,
            Err(r) => respond(req, r, &mut self.rng),
        })
    }

    /// The steps of the module's order: read the request, find the served
    /// AOR, authenticate, then change the bindings and list them.
    fn process(
        &mut self,
        now: Instant,
        wall: Timestamp,
        req: &Message,
        peer: &Peer,
    ) -> Result<Message, Reject> {
        let r = read_register(req)?;
        let (realm, to_user) = served_aor(&self.accounts, &r)?;
        self.authenticate_register(now, req, peer, &realm, &to_user)?;
        let Some(ext) = self.accounts.extension(&to_user, &realm) else {
            return Err(Reject::new(403));
        };
        let requested = requested_bindings(&self.cfg, req)?;
        let template = Binding {
            node_id: self.cfg.node_id.clone(),
            ..binding_template(req, &r, peer, ext.aor(), wall)
        };
        let after = self.apply(&template, &requested, peer, wall)?;
        let outbound = requested.opens_flows() && req.supports("outbound");
        Ok(self.listing(req, after, wall, outbound))
    }

    /// Step 4: Digest authentication in `realm`, with the same answers for
    /// unknown users as for wrong passwords (no enumeration); failures
    /// count towards a ban. The authenticated user must be `to_user`.
    fn authenticate_register(
        &mut self,
        now: Instant,
        req: &Message,
        peer: &Peer,
        realm: &str,
        to_user: &str,
    ) -> Result<(), Reject> {
        let accounts = &self.accounts;
        let outcome =
            self.digest.verify_request(now, req, HeaderName::Authorization, realm, |u, alg| {
                accounts.extension(u, realm).map(|e| match alg {
                    Algorithm::Md5 => e.ha1_md5.as_str(),
                    Algorithm::Sha256 => e.ha1_sha256.as_str(),
                })
            });
        let username = match outcome {
            Outcome::Authenticated { username, .. } => username,
            Outcome::Missing | Outcome::Stale => {
                let mut r = Reject::new(401);
                let stale = outcome == Outcome::Stale;
                for c in self.digest.challenges_over(now, realm, stale, peer.transport) {
                    r.headers.push((HeaderName::WwwAuthenticate, c));
                }
                return Err(r);
            }
            Outcome::Rejected => {
                self.auth_failed(now, peer.remote.ip(), to_user, "REGISTER");
                return Err(Reject::new(403));
            }
            Outcome::Malformed(why) => {
                self.auth_failed(now, peer.remote.ip(), to_user, "REGISTER");
                return Err(Reject::why(400, why));
            }
        };
        if username != to_user {
            return Err(Reject::why(403, "Not Allowed To Register This AOR"));
        }
        Ok(())
    }

    /// Step 5: the changes `requested` to the AOR of `template`, made
    /// atomically; the AOR's bindings afterwards (expired ones included).
    fn apply(
        &mut self,
        template: &Binding,
        requested: &Requested,
        peer: &Peer,
        wall: Timestamp,
    ) -> Result<Vec<Location>, Reject> {
        let conn = if peer.transport.is_reliable() { peer.conn } else { None };
        let new = Location { binding: template.clone(), conn, closed: false, via: None };
        let max_bindings = self.cfg.max_bindings_per_aor;
        let (after, ()) = self.location.update(&template.aor, |current| {
            let changes = match requested {
                Requested::RemoveAll => remove_all(current, &new.binding, wall)?,
                Requested::Fetch => Vec::new(),
                Requested::Contacts(v) => plan(max_bindings, current, v, &new, wall)?,
            };
            Ok((changes, ()))
        })?;
        Ok(after)
    }

    /// The 200: the AOR's unexpired bindings, highest q first, and
    /// `Require: outbound` when a flow was registered (RFC 5626).
    fn listing(
        &mut self,
        req: &Message,
        after: Vec<Location>,
        wall: Timestamp,
        outbound: bool,
    ) -> Message {
        let mut current: Vec<Location> =
            after.into_iter().filter(|l| !l.is_expired(wall)).collect();
        by_q_desc(&mut current);
        let mut b = Message::response_to(req, 200).to_tag(&tag(&mut self.rng));
        for l in &current {
            b = b.header(HeaderName::Contact, contact_value(l, wall));
        }
        if outbound {
            b = b.header(HeaderName::Require, "outbound");
        }
        b = b.header(HeaderName::Date, http_date(wall));
        b.build()
    }
}

/// A REGISTER's headers, checked before anyone is authenticated.
struct Register<'m> {
    to: NameAddr<'m>,
    call_id: &'m [u8],
    cseq: u32,
    ruri: Uri<'m>,
}

/// Steps 2 and 3's reading: a REGISTER (else 405) with well-formed To,
/// Call-ID, CSeq and SIP Request-URI (400, 416), requiring no option tag
/// but `outbound` (420).
fn read_register(req: &Message) -> Result<Register<'_>, Reject> {
    if req.method() != Some(&Method::Register) {
        let mut r = Reject::new(405);
        r.headers.push((HeaderName::Allow, "REGISTER".into()));
        return Err(r);
    }
    let to = req.to_header().map_err(|_| Reject::why(400, "Bad To"))?;
    let call_id = req.call_id().map_err(|_| Reject::why(400, "Bad Call-ID"))?;
    let cseq = req.cseq().map_err(|_| Reject::why(400, "Bad CSeq"))?;
    if cseq.method != Method::Register {
        return Err(Reject::why(400, "CSeq Method Mismatch"));
    }
    let ruri = match req.request_uri() {
        Some(Ok(u)) => u,
        _ => return Err(Reject::why(400, "Bad Request-URI")),
    };
    if !ruri.is_sip() {
        return Err(Reject::new(416));
    }
    let unsupported: Vec<String> = req
        .tokens(HeaderName::Require)
        .filter(|t| !t.eq_ignore_ascii_case(b"outbound"))
        .map(text)
        .collect();
    if !unsupported.is_empty() {
        let mut r = Reject::new(420);
        r.headers.push((HeaderName::Unsupported, unsupported.join(", ")));
        return Err(r);
    }
    Ok(Register { to, call_id, cseq: cseq.seq, ruri })
}

/// Step 3: the realm (the served domain's name) and the unescaped user of
/// the To URI. The To host must be a served domain, and a Request-URI host
/// naming a different served one is refused (404).
fn served_aor(accounts: &Accounts, r: &Register<'_>) -> Result<(String, String), Reject> {
    let served =
        |host: &[u8]| std::str::from_utf8(host).ok().and_then(|h| accounts.domain_for_host(h));
    let domain = if r.to.uri.is_sip() { served(r.to.uri.host) } else { None };
    let Some(domain) = domain else { return Err(Reject::why(404, "Domain Not Served")) };
    if served(r.ruri.host).is_some_and(|d| d.name != domain.name) {
        return Err(Reject::why(404, "Not Found"));
    }
    let to_user = match r.to.uri.user {
        Some(u) => percent_decode(u).ok_or(Reject::why(400, "Bad To"))?,
        None => String::new(),
    };
    Ok((domain.name.clone(), to_user))
}

/// What a REGISTER's Contact headers ask for.
enum Requested {
    /// `Contact: *` (with `Expires: 0`): remove every binding.
    RemoveAll,
    /// No Contact: list the bindings.
    Fetch,
    /// Add, refresh or remove these.
    Contacts(Vec<NewContact>),
}

impl Requested {
    /// `true` when an RFC 5626 flow is registered (instance, reg-id and a
    /// non-zero expiry).
    fn opens_flows(&self) -> bool {
        let Requested::Contacts(v) = self else { return false };
        v.iter().any(|c| c.instance.is_some() && c.reg_id.is_some() && c.expires > 0)
    }
}

/// The Contact and Expires headers checked against the settings (400, 423,
/// and 403 for more contacts than an AOR may have).
fn requested_bindings(cfg: &RegistrarConfig, req: &Message) -> Result<Requested, Reject> {
    let contacts = req.contacts().map_err(|_| Reject::why(400, "Bad Contact"))?;
    let expires_hdr = req.expires().map_err(|_| Reject::why(400, "Bad Expires"))?;
    match &contacts {
        Contacts::Star if expires_hdr != Some(0) => {
            Err(Reject::why(400, "Contact * Needs Expires: 0"))
        }
        Contacts::Star => Ok(Requested::RemoveAll),
        Contacts::List(list) if list.is_empty() => Ok(Requested::Fetch),
        Contacts::List(list) => {
            let v = list
                .iter()
                .map(|c| check_contact(cfg, c, expires_hdr))
                .collect::<Result<Vec<NewContact>, Reject>>()?;
            if v.iter().filter(|c| c.expires > 0).count() > cfg.max_bindings_per_aor {
                return Err(Reject::why(403, "Too Many Contacts"));
            }
            Ok(Requested::Contacts(v))
        }
    }
}

/// What every binding this REGISTER makes shares: its AOR, Call-ID and
/// CSeq, where it came from, its User-Agent (at most 256 characters).
fn binding_template(
    req: &Message,
    r: &Register<'_>,
    peer: &Peer,
    aor: String,
    wall: Timestamp,
) -> Binding {
    let user_agent: String = req
        .header(HeaderName::UserAgent)
        .map(|u| text(u).chars().take(256).collect())
        .unwrap_or_default();
    Binding {
        aor,
        contact: String::new(),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at: wall,
        call_id: text(r.call_id),
        cseq: r.cseq,
        transport: peer.transport.via_token().to_owned(),
        source: peer.remote,
        local: peer.local,
        user_agent,
        node_id: String::new(),
        conn: peer.conn,
        unreachable: false,
    }
}

/// One Contact of a REGISTER checked against the settings (423 for too
/// brief an interval).
fn check_contact(
    cfg: &RegistrarConfig,
    c: &NameAddr<'_>,
    hdr: Option<u32>,
) -> Result<NewContact, Reject> {
    if !c.uri.is_sip() {
        return Err(Reject::why(400, "Contact Must Be A SIP URI"));
    }
    let param = c.expires().map_err(|_| Reject::why(400, "Bad Contact Expires"))?;
    let requested = param.or(hdr).unwrap_or(cfg.default_expires);
    if requested > 0 && requested < cfg.min_expires && requested < 3600 {
        let mut r = Reject::new(423);
        r.headers.push((HeaderName::MinExpires, cfg.min_expires.to_string()));
        return Err(r);
    }
    let q = c.q().map_err(|_| Reject::why(400, "Bad Contact q"))?.unwrap_or(1000);
    let instance = c.instance().map(text).filter(|i| !i.is_empty());
    let reg_id = if instance.is_some() { c.reg_id() } else { None };
    Ok(NewContact {
        uri: text(c.uri.raw),
        instance,
        reg_id,
        q,
        expires: requested.min(cfg.max_expires),
    })
}

/// RFC 3261 10.3 step 7 with RFC 5626 flows: the changes for `new`
/// contacts against the `current` bindings (at most `max` unexpired ones),
/// each made from `made` (the request's binding template and connection),
/// or the failure.
fn plan(
    max: usize,
    current: &[Location],
    new: &[NewContact],
    made: &Location,
    wall: Timestamp,
) -> Result<Vec<Change>, Reject> {
    let template = &made.binding;
    // (location, made by this request)
    let mut work: Vec<(Location, bool)> = current.iter().map(|l| (l.clone(), false)).collect();
    for c in new {
        let mut keep = Vec::with_capacity(work.len());
        for (l, touched) in work {
            let b = &l.binding;
            let same_flow = c.instance.as_deref().is_some_and(|i| {
                b.instance.as_deref().is_some_and(|j| i.eq_ignore_ascii_case(j))
                    && b.reg_id == c.reg_id
            });
            let matched = same_flow || sip_uri_eq(b.contact.as_bytes(), c.uri.as_bytes());
            if !matched {
                keep.push((l, touched));
                continue;
            }
            if !touched
                && !l.is_expired(wall)
                && b.call_id == template.call_id
                && template.cseq <= b.cseq
            {
                return Err(Reject::why(500, "Out Of Order CSeq"));
            }
            // Matched: replaced below, or removed when expires is 0.
        }
        work = keep;
        if c.expires > 0 {
            let mut b = template.clone();
            b.contact = c.uri.clone();
            b.instance = c.instance.clone();
            b.reg_id = c.reg_id;
            b.q = c.q;
            b.expires_at = Timestamp::from_micros(
                wall.micros().saturating_add(i64::from(c.expires) * 1_000_000),
            );
            work.push((Location { binding: b, conn: made.conn, closed: false, via: None }, true));
        }
    }
    // Too many: drop the older bindings closest to expiry.
    while work.iter().filter(|(l, _)| !l.is_expired(wall)).count() > max {
        let victim = work
            .iter()
            .enumerate()
            .filter(|(_, (l, t))| !t && !l.is_expired(wall))
            .min_by_key(|(_, (l, _))| l.binding.expires_at)
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                work.remove(i);
            }
            None => break,
        }
    }
    let mut changes = Vec::new();
    for l in current {
        if !work.iter().any(|(w, _)| w.binding.contact == l.binding.contact) {
            changes.push(Change::Remove(l.binding.contact.clone()));
        }
    }
    for (l, touched) in work {
        if touched {
            changes.push(Change::Upsert(l));
        }
    }
    Ok(changes)
}

/// `Contact: *` with `Expires: 0`: remove everything, unless a binding from
/// the request's Call-ID has an equal or higher CSeq (RFC 3261 10.3 step 6).
fn remove_all(
    current: &[Location],
    request: &Binding,
    wall: Timestamp,
) -> Result<Vec<Change>, Reject> {
    let (call_id, cseq) = (&request.call_id, request.cseq);
    if current
        .iter()
        .any(|l| !l.is_expired(wall) && l.binding.call_id == *call_id && cseq <= l.binding.cseq)
    {
        return Err(Reject::why(500, "Out Of Order CSeq"));
    }
    Ok(current.iter().map(|l| Change::Remove(l.binding.contact.clone())).collect())
}

fn contact_value(l: &Location, wall: Timestamp) -> String {
    let b = &l.binding;
    let mut v = format!("<{}>;expires={}", b.contact, l.expires_in(wall));
    if b.q < 1000 {
        v.push_str(";q=");
        v.push_str(&qvalue(b.q));
    }
    if let Some(i) = &b.instance {
        v.push_str(";+sip.instance=\"<");
        v.push_str(i);
        v.push_str(">\"");
        if let Some(r) = b.reg_id {
            v.push_str(";reg-id=");
            v.push_str(&r.to_string());
        }
    }
    v
}

/// RFC 1123 date for the Date header.
fn http_date(wall: Timestamp) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_micros(wall.micros()) {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        None => "Thu, 01 Jan 1970 00:00:00 GMT".into(),
    }
}

/// A To tag: 6 random bytes in hex.
fn tag(rng: &mut StdRng) -> String {
    let mut b = [0u8; 6];
    rng.fill_bytes(&mut b);
    sip_message::hex::encode(&b)
}

fn respond(req: &Message, r: Reject, rng: &mut StdRng) -> Message {
    let mut b = Message::response_to(req, r.code).to_tag(&tag(rng));
    if let Some(reason) = r.reason {
        b = b.reason(reason);
    }
    for (n, v) in r.headers {
        b = b.header(n, v);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<Registrar>();
        check::<LocationStore>();
    }

    #[test]
    fn qvalues_and_dates() {
        assert_eq!(qvalue(1000), "1");
        assert_eq!(qvalue(500), "0.5");
        assert_eq!(qvalue(250), "0.25");
        assert_eq!(qvalue(5), "0.005");
        assert_eq!(qvalue(0), "0");
        let t = Timestamp::parse("2010-11-13 23:29:00.000000").expect("ts");
        assert_eq!(http_date(t), "Sat, 13 Nov 2010 23:29:00 GMT");
    }
}
