//! Who is calling: a carrier recognised by its source address, or an
//! extension that passes digest authentication (407 challenge), and what
//! the callees are shown of the caller.

use b2bua::CopyLimits;
use records::{Address, AddressType};
use registrar::{Outcome, Registrar};
use routing::{Caller, RouteTable};
use sip_message::{HeaderName, Message, Peer};
use std::time::Instant;

/// A caller who may place calls, as established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identified {
    /// Who it is, for routing.
    pub(crate) caller: Caller,
    /// The domain its calls are routed in.
    pub(crate) domain: String,
}

/// Why a caller is refused: the response to give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A final status (400, 403).
    Status(u16),
    /// 407 with these `Proxy-Authenticate` challenges.
    Challenge(Vec<String>),
    /// The source is banned (failed authentications): 403, or nothing when
    /// the ban action is to drop.
    Banned,
    /// A failed authentication: 403, and worth an operator's attention.
    AuthFailed {
        /// The user named in the credentials or the From.
        user: String,
    },
}

/// Identifies the caller of `req` received from `peer`.
pub(crate) fn identify(
    registrar: &mut Registrar,
    routes: &RouteTable,
    now: Instant,
    req: &Message,
    peer: &Peer,
) -> Result<Identified, Refusal> {
    if let Some(c) = routes.carrier_for_source(peer.remote.ip()) {
        let domain = c.inbound_domain.clone();
        return Ok(Identified { caller: Caller::Carrier { name: c.name.clone() }, domain });
    }
    if registrar.limiter().is_banned(peer.remote.ip(), now) {
        return Err(Refusal::Banned);
    }
    let from = req.from_header().map_err(|_| Refusal::Status(400))?;
    let from_user =
        from.uri.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
    let from_host = String::from_utf8_lossy(from.uri.host).into_owned();
    let Some(realm) = registrar.accounts().domain_for_host(&from_host).map(|d| d.name.clone())
    else {
        return Err(Refusal::Status(403));
    };
    let outcome = registrar.authenticate(now, req, HeaderName::ProxyAuthorization, &realm);
    match outcome {
        Outcome::Authenticated { username, .. } if username == from_user => Ok(Identified {
            caller: Caller::Extension { aor: format!("{username}@{realm}"), domain: realm.clone() },
            domain: realm,
        }),
        Outcome::Authenticated { .. } => Err(Refusal::Status(403)),
        Outcome::Missing | Outcome::Stale => {
            let stale = outcome == Outcome::Stale;
            let digest = registrar.digest_mut();
            Err(Refusal::Challenge(digest.challenges_over(now, &realm, stale, peer.transport)))
        }
        Outcome::Rejected => Err(Refusal::AuthFailed { user: from_user }),
        Outcome::Malformed(_) => Err(Refusal::Status(400)),
    }
}

/// What callees see of the caller: the `source` address of the records,
/// and the From header value (display name and URI, no tag) of every leg.
pub(crate) struct CallerId {
    pub(crate) source: Address,
    pub(crate) from: String,
}

/// The caller ID of `req` from an identified caller; `host` is our address
/// the request came in on (the From host legs show). The display name and
/// user part are re-encoded within `limits` (screening refused a user part
/// beyond them; a long display name is cut).
pub(crate) fn caller_id(
    req: &Message,
    who: &Identified,
    host: std::net::SocketAddr,
    limits: &CopyLimits,
) -> CallerId {
    let from = req.from_header().ok();
    let name = from.and_then(|f| f.display_name()).map(|d| limits.display_text(d).0);
    let name = name.unwrap_or_default();
    let from_user = from.and_then(|f| f.uri.user).map(|u| limits.user(u)).unwrap_or_default();
    // A From without a user part (or with an empty one) is shown as
    // anonymous (RFC 3323's convention): `sip:@host` is not a valid URI.
    let shown_user = if from_user.is_empty() { "anonymous" } else { from_user.as_str() };
    let source = match &who.caller {
        Caller::Extension { aor, .. } => {
            let mut a = Address::new(AddressType::Endpoint, aor.clone());
            // The record shows the name cut and cleaned, not quoted.
            a.name = name.clone();
            a
        }
        _ => Address::new(AddressType::Tel, from_user.clone()),
    };
    let from = match name.as_str() {
        "" => format!("<sip:{shown_user}@{host}>"),
        n => format!("{} <sip:{shown_user}@{host}>", b2bua::limits::quoted(n)),
    };
    CallerId { source, from }
}
