//! The relay hop between two cluster nodes. A phone's flow (its NAT
//! pinhole, its TCP, TLS or WebSocket connection) belongs to the node it
//! registered with, so a call from another node reaches it through that
//! node: the calling node sends the leg's INVITE to the owner's advertised
//! address, with the phone's Contact as Request-URI, its AOR in To, and an
//! `X-Forkswitch-Hop` header that proves it comes from a node of the
//! cluster. The owner relays that one leg to the phone as a B2BUA call of
//! its own that writes no records (the calling node's records tell the
//! whole call, the leg's `relay_node_id` naming the owner).
//!
//! The token is `NODE;ts=SECS;mac=HEX`: an HMAC-SHA256, keyed with the
//! cluster's secret (kept in the shared database, so only nodes know it),
//! over the sending node, the time, the Request-URI and the AOR, cut to 128
//! bits; it is good for [`LIFETIME_SECS`] around the receiver's clock, so a
//! captured one can only ring the same phone again within that window.

use hmac::{Hmac, Mac};
use records::Timestamp;
use sha2::Sha256;

/// The header carrying the token.
pub(crate) const HEADER: &str = "X-Forkswitch-Hop";

/// How far a token's time may be from the receiver's.
pub(crate) const LIFETIME_SECS: i64 = 30;

/// What a token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    /// The node that sent the leg.
    pub(crate) node: String,
}

fn mac(secret: &[u8], node: &str, secs: i64, request_uri: &[u8], aor: &[u8]) -> [u8; 16] {
    // HMAC takes keys of any length.
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 16],
    };
    for part in [node.as_bytes(), secs.to_string().as_bytes(), request_uri, aor] {
        m.update(part);
        m.update(&[0]);
    }
    let full = m.finalize().into_bytes();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The token of a leg that `node` relays through another node at `wall`.
pub(crate) fn token(
    secret: &[u8],
    node: &str,
    wall: Timestamp,
    request_uri: &str,
    aor: &str,
) -> String {
    let secs = wall.micros().div_euclid(1_000_000);
    let mac = mac(secret, node, secs, request_uri.as_bytes(), aor.as_bytes());
    format!("{node};ts={secs};mac={}", sip_message::hex::encode(&mac))
}

/// Checks a token received at `wall` on an INVITE for `request_uri` and
/// `aor`: the node that sent it, or `None` (forged, stale, malformed).
pub(crate) fn check(
    secret: &[u8],
    value: &[u8],
    request_uri: &[u8],
    aor: &[u8],
    wall: Timestamp,
) -> Option<Hop> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split(';');
    let node = parts.next()?.trim();
    let secs: i64 = parts.next()?.trim().strip_prefix("ts=")?.parse().ok()?;
    let given = parts.next()?.trim().strip_prefix("mac=")?;
    if node.is_empty() || parts.next().is_some() {
        return None;
    }
    let now = wall.micros().div_euclid(1_000_000);
    if (now - secs).abs() > LIFETIME_SECS {
        return None;
    }
    let mut bytes = [0u8; 16];
    if !sip_message::hex::decode_into(given.as_bytes(), &mut bytes) {
        return None;
    }
    let want = mac(secret, node, secs, request_uri, aor);
    // Constant time: no early exit on the first differing byte.
    let diff = want.iter().zip(bytes.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then(|| Hop { node: node.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_prove_the_node_the_target_and_the_time() {
        let at = |s: i64| Timestamp::from_micros(s * 1_000_000);
        let secret = b"cluster secret";
        let (uri, aor) = ("sip:test12@192.0.2.7:5062", "test12@test");
        let t = token(secret, "n1", at(1000), uri, aor);
        let ok = |v: &str, u: &str, a: &str, now: i64| {
            check(secret, v.as_bytes(), u.as_bytes(), a.as_bytes(), at(now)).map(|h| h.node)
        };
        assert_eq!(ok(&t, uri, aor, 1000).as_deref(), Some("n1"));
        assert_eq!(ok(&t, uri, aor, 1000 + LIFETIME_SECS).as_deref(), Some("n1"));
        assert_eq!(ok(&t, uri, aor, 1001 + LIFETIME_SECS), None, "stale");
        assert_eq!(ok(&t, "sip:test13@192.0.2.7:5062", aor, 1000), None, "another phone");
        assert_eq!(ok(&t, uri, "test13@test", 1000), None, "another AOR");
        assert_eq!(ok(&t.replacen("n1", "n2", 1), uri, aor, 1000), None, "another node");
        let wrong = check(b"other", t.as_bytes(), uri.as_bytes(), aor.as_bytes(), at(1000));
        assert_eq!(wrong, None, "another cluster's secret");
        for bad in ["", "n1", "n1;ts=x;mac=00", "n1;ts=1000;mac=zz", ";ts=1000;mac=00"] {
            assert_eq!(ok(bad, uri, aor, 1000), None, "{bad:?}");
        }
    }
}
