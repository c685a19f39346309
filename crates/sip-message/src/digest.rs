//! HTTP Digest as SIP uses it (RFC 3261 22, RFC 7616, RFC 8760; RFC 2617 and
//! RFC 2069 forms): the one place its hashes are computed, for the server
//! that checks credentials (the registrar) and the client that answers a
//! challenge (the B2BUA towards a trunk) alike.
//!
//! - [`ha1`]: `H(user:realm:password)`, what an account stores.
//! - [`RequestDigest`]: the `response=` value over a request and a nonce.
//! - [`authorization`]: the whole `Authorization` value answering one
//!   challenge.
//!
//! Nonces, replay protection and bans are the server's business, not this
//! module's.

use crate::hex;
use crate::typed::AuthParams;
use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (also the meaning of an absent `algorithm`).
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token written in `algorithm=`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm` value (case-insensitive); `-sess` and other
    /// variants are not supported.
    pub fn from_token(t: &[u8]) -> Option<Algorithm> {
        if t.eq_ignore_ascii_case(b"MD5") {
            Some(Algorithm::Md5)
        } else if t.eq_ignore_ascii_case(b"SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of the hash in bytes.
    pub fn hash_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
        }
    }

    /// The hash of `parts` one after the other.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn of<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            parts.iter().for_each(|p| h.update(p));
            h.finalize().to_vec()
        }
        match self {
            Algorithm::Md5 => of::<Md5>(parts),
            Algorithm::Sha256 => of::<Sha256>(parts),
        }
    }
}

/// HA1, what an account stores instead of its password: lowercase hex of
/// `H(user ":" realm ":" password)`.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    hex::encode(&alg.hash(&[user.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()]))
}

/// The values `qop=auth` adds to a digest: the nonce count, the client
/// nonce, and the qop token as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// `nc`: eight hex digits.
    pub nc: &'a [u8],
    /// `cnonce`.
    pub cnonce: &'a [u8],
    /// `qop` (`auth`).
    pub qop: &'a [u8],
}

/// What a request-digest (`response=`) covers: the algorithm, the server's
/// nonce, the qop values (`None`: the RFC 2069 form), and the request's
/// method and digest `uri`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDigest<'a> {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The server's nonce.
    pub nonce: &'a [u8],
    /// `qop=auth` and its values, or `None`.
    pub qop: Option<QopAuth<'a>>,
    /// The request's method.
    pub method: &'a [u8],
    /// The `uri` of the credentials.
    pub uri: &'a [u8],
}

impl RequestDigest<'_> {
    /// The digest for the stored `ha1` (lowercase hex): with qop
    /// `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`, without
    /// `H(HA1:nonce:H(method:uri))`.
    pub fn bytes(&self, ha1: &[u8]) -> Vec<u8> {
        let alg = self.algorithm;
        let ha2 = hex::encode(&alg.hash(&[self.method, b":", self.uri]));
        let (ha2, nonce) = (ha2.as_bytes(), self.nonce);
        match self.qop {
            Some(QopAuth { nc, cnonce, qop }) => {
                alg.hash(&[ha1, b":", nonce, b":", nc, b":", cnonce, b":", qop, b":", ha2])
            }
            None => alg.hash(&[ha1, b":", nonce, b":", ha2]),
        }
    }

    /// [`RequestDigest::bytes`] as lowercase hex: the `response=` value.
    pub fn hex(&self, ha1: &str) -> String {
        hex::encode(&self.bytes(ha1.as_bytes()))
    }
}

/// Who answers a challenge.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// The user name.
    pub user: &'a str,
    /// The password.
    pub password: &'a str,
}

/// The `Authorization` (or `Proxy-Authorization`) value answering one
/// `challenge` for a request of `method` to `uri`, with client nonce
/// `cnonce` and nonce count 1; `None` when it is not a Digest challenge we
/// can answer (MD5 or SHA-256; qop `auth` or none).
pub fn authorization(
    challenge: &[u8],
    method: &str,
    uri: &str,
    who: Credentials<'_>,
    cnonce: &str,
) -> Option<String> {
    let ch = AuthParams::parse(challenge).ok()?;
    if !ch.is_digest() {
        return None;
    }
    let text = |name: &str| ch.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let realm = text("realm")?;
    let nonce = text("nonce")?;
    // The algorithm as the challenge wrote it (absent: MD5).
    let written = text("algorithm").unwrap_or_else(|| "MD5".to_owned());
    let algorithm = Algorithm::from_token(written.as_bytes())?;
    let qop_auth = match ch.get("qop") {
        None => false,
        Some(q) => q.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"auth")),
    };
    if ch.get("qop").is_some() && !qop_auth {
        return None;
    }
    let nc = "00000001";
    let qop =
        qop_auth.then_some(QopAuth { nc: nc.as_bytes(), cnonce: cnonce.as_bytes(), qop: b"auth" });
    let digest = RequestDigest {
        algorithm,
        nonce: nonce.as_bytes(),
        qop,
        method: method.as_bytes(),
        uri: uri.as_bytes(),
    };
    let response = digest.hex(&ha1(algorithm, who.user, &realm, who.password));
    let user = who.user;
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={written}"
    );
    if qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = text("opaque") {
        out.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "http-auth@example.org";
    const NONCE: &[u8] = b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &[u8] = b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(algorithm: Algorithm) -> String {
        let qop = QopAuth { nc: b"00000001", cnonce: CNONCE, qop: b"auth" };
        let d = RequestDigest {
            algorithm,
            nonce: NONCE,
            qop: Some(qop),
            method: b"GET",
            uri: b"/dir/index.html",
        };
        d.hex(&ha1(algorithm, "Mufasa", REALM, "Circle of Life"))
    }

    #[test]
    fn rfc7616_examples() {
        assert_eq!(rfc7616(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            rfc7616(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn authorization_answers_rfc2617_and_rfc2069_challenges() {
        // RFC 2617 3.5 (Mufasa), adapted to SIP's method and uri.
        let ch = br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let who = Credentials { user: "Mufasa", password: "Circle Of Life" };
        let a = authorization(ch, "GET", "/dir/index.html", who, "0a4f113b").expect("answer");
        assert!(a.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{a}");
        assert!(a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(a.contains("qop=auth, nc=00000001, cnonce=\"0a4f113b\""));
        let who = Credentials { user: "u", password: "p" };
        assert!(authorization(b"Basic realm=\"x\"", "INVITE", "sip:x", who, "c").is_none());
        // No qop (RFC 2069 form), as a trunk's 407 may ask; checked by hand:
        // MD5(MD5(user:realm:pass):nonce:MD5(INVITE:uri)).
        let ch = br#"Digest realm="carrier.example", nonce="4e6f6e63651", algorithm=MD5"#;
        let who = Credentials { user: "trunkuser", password: "trunkpass" };
        let a = authorization(ch, "INVITE", "sip:+4930123456@127.0.0.1:16301", who, "x")
            .expect("answer");
        assert!(a.contains("response=\"dfa45f3f03a6c1d6d567615646e88184\""), "{a}");
        assert!(!a.contains("qop"));
        let sess = br#"Digest realm="r", nonce="n", algorithm=MD5-sess"#;
        assert!(authorization(sess, "INVITE", "sip:x", who, "c").is_none());
        let int_only = br#"Digest realm="r", nonce="n", qop="auth-int""#;
        assert!(authorization(int_only, "INVITE", "sip:x", who, "c").is_none());
    }
}
