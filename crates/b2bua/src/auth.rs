//! Digest answers (RFC 7616 / RFC 8760) to a callee's 401/407, for trunks
//! that authenticate the switch.

use md5::Md5;
use sha2::{Digest, Sha256};
use sip_message::AuthParams;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(sha256: bool, parts: &[&str]) -> String {
    let joined = parts.join(":");
    if sha256 {
        hex(&Sha256::digest(joined.as_bytes()))
    } else {
        hex(&Md5::digest(joined.as_bytes()))
    }
}

/// The Authorization value answering one challenge, or `None` when the
/// challenge is not a Digest one we can answer (MD5 / SHA-256, qop auth or
/// none).
pub(crate) fn answer(
    challenge: &[u8],
    method: &str,
    uri: &str,
    user: &str,
    pass: &str,
    cnonce: &str,
) -> Option<String> {
    let ch = AuthParams::parse(challenge).ok()?;
    if !ch.is_digest() {
        return None;
    }
    let text = |name: &str| ch.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let realm = text("realm")?;
    let nonce = text("nonce")?;
    let algorithm = text("algorithm").unwrap_or_else(|| "MD5".to_owned());
    let sha256 = match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => false,
        "SHA-256" => true,
        _ => return None,
    };
    let qop_auth = match text("qop") {
        None => false,
        Some(q) => {
            if !q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                return None;
            }
            true
        }
    };
    let ha1 = hash(sha256, &[user, &realm, pass]);
    let ha2 = hash(sha256, &[method, uri]);
    let nc = "00000001";
    let response = if qop_auth {
        hash(sha256, &[&ha1, &nonce, nc, cnonce, "auth", &ha2])
    } else {
        hash(sha256, &[&ha1, &nonce, &ha2])
    };
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}"
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

    #[test]
    fn rfc_2617_example() {
        // RFC 2617 3.5 (Mufasa), adapted to SIP's method and uri.
        let ch = br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let a = answer(ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b")
            .expect("answer");
        assert!(a.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{a}");
        assert!(a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(answer(b"Basic realm=\"x\"", "INVITE", "sip:x", "u", "p", "c").is_none());
        // No qop (RFC 2069 form), as a trunk's 407 may ask; checked by hand:
        // MD5(MD5(user:realm:pass):nonce:MD5(INVITE:uri)).
        let ch = br#"Digest realm="carrier.example", nonce="4e6f6e63651", algorithm=MD5"#;
        let a =
            answer(ch, "INVITE", "sip:+4930123456@127.0.0.1:16301", "trunkuser", "trunkpass", "x")
                .expect("answer");
        assert!(a.contains("response=\"dfa45f3f03a6c1d6d567615646e88184\""), "{a}");
        assert!(!a.contains("qop"));
        assert!(answer(
            br#"Digest realm="r", nonce="n", algorithm=MD5-sess"#,
            "INVITE",
            "sip:x",
            "u",
            "p",
            "c"
        )
        .is_none());
    }
}
