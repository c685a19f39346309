//! SIP as the simulated user agents write it: requests and responses built
//! with the project's codec, their dialogs (RFC 3261 section 12), unique
//! SDP bodies (so that the oracle can tell which leg's answer reached the
//! caller), and digest answers and checks (MD5). It exists so that phones,
//! carriers and callers share one correct way of speaking SIP.

use bytes::Bytes;
use sip_message::digest::{self, Algorithm, Credentials, QopAuth, RequestDigest};
use sip_message::{AuthParams, HeaderName, Message, MessageBuilder, Method, Peer, Transport};
use std::net::SocketAddr;

/// A UDP peer from `local` to `remote`.
pub fn udp(local: SocketAddr, remote: SocketAddr) -> Peer {
    Peer { transport: Transport::Udp, remote, local, conn: None }
}

/// Our Via for a request from `addr`.
pub fn via(addr: SocketAddr, branch: &str) -> String {
    format!("SIP/2.0/UDP {addr};branch={branch};rport")
}

/// A session description no other party sends: `id` is unique per run.
pub fn sdp(addr: SocketAddr, id: u64) -> Bytes {
    let ip = addr.ip();
    Bytes::from(format!(
        "v=0\r\no=sim {id} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
        10_000 + (id % 50_000) * 2
    ))
}

/// A header value as bytes (empty when absent).
pub fn hv(m: &Message, h: HeaderName) -> Bytes {
    m.header_bytes(h).unwrap_or_default()
}

/// The URI of the first Contact, or `fallback`.
pub fn contact_uri(m: &Message, fallback: &Bytes) -> Bytes {
    m.contacts()
        .ok()
        .and_then(|c| c.list().first().map(|na| Bytes::copy_from_slice(na.uri.raw)))
        .unwrap_or_else(|| fallback.clone())
}

/// `value;tag=tag`.
pub fn with_tag(value: &[u8], tag: &str) -> Bytes {
    let mut v = value.to_vec();
    v.extend_from_slice(b";tag=");
    v.extend_from_slice(tag.as_bytes());
    Bytes::from(v)
}

/// One side of a dialog held by a simulated UA.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: Bytes,
    pub local_tag: Bytes,
    pub remote_tag: Bytes,
    /// From of our requests (with our tag).
    pub local: Bytes,
    /// To of our requests (with the remote tag).
    pub remote: Bytes,
    /// Request-URI of our requests (the remote Contact).
    pub target: Bytes,
    pub local_seq: u32,
    /// Where our requests go (always the switch here).
    pub peer: Peer,
}

impl Dialog {
    /// The UAS side of the dialog an INVITE makes with our `tag`.
    pub fn uas(invite: &Message, tag: &str, peer: Peer) -> Dialog {
        Dialog {
            call_id: hv(invite, HeaderName::CallId),
            local_tag: Bytes::copy_from_slice(tag.as_bytes()),
            remote_tag: Bytes::copy_from_slice(invite.from_tag().unwrap_or_default()),
            local: with_tag(&hv(invite, HeaderName::To), tag),
            remote: hv(invite, HeaderName::From),
            target: contact_uri(invite, &Bytes::from(format!("sip:{}", peer.remote))),
            local_seq: 0,
            peer,
        }
    }

    /// The UAC side of the dialog a 2xx to our `invite` makes.
    pub fn uac(invite: &Message, resp: &Message, peer: Peer) -> Dialog {
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        Dialog {
            call_id: hv(invite, HeaderName::CallId),
            local_tag: Bytes::copy_from_slice(invite.from_tag().unwrap_or_default()),
            remote_tag: Bytes::copy_from_slice(resp.to_tag().unwrap_or_default()),
            local: hv(invite, HeaderName::From),
            remote: hv(resp, HeaderName::To),
            target: contact_uri(resp, &Bytes::from(format!("sip:{}", peer.remote))),
            local_seq: cseq,
            peer,
        }
    }

    /// A request in the dialog with CSeq `seq` (12.2.1.1; no route set:
    /// the switch does not Record-Route).
    pub fn request(&self, method: Method, seq: u32, branch: &str) -> MessageBuilder {
        let name = String::from_utf8_lossy(method.as_bytes()).into_owned();
        Message::request(method, self.target.clone())
            .header(HeaderName::Via, via(self.peer.local, branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.local.clone())
            .header(HeaderName::To, self.remote.clone())
            .header(HeaderName::CallId, self.call_id.clone())
            .header(HeaderName::CSeq, format!("{seq} {name}"))
    }

    /// The next request in the dialog (CSeq advanced).
    pub fn next_request(&mut self, method: Method, branch: &str) -> MessageBuilder {
        self.local_seq += 1;
        self.request(method, self.local_seq, branch)
    }

    /// Our Contact.
    pub fn contact(&self, user: &str) -> String {
        format!("<sip:{user}@{}>", self.peer.local)
    }
}

/// `true` when `m` is in dialog `d` as seen by us (Call-ID, our tag in To
/// of a request, the remote tag in From).
pub fn request_in(m: &Message, call_id: &[u8], local_tag: &[u8]) -> bool {
    m.call_id().is_ok_and(|c| c == call_id) && m.to_tag() == Some(local_tag)
}

/// The Authorization value answering the first MD5 challenge among
/// `challenges` (RFC 7616 with qop=auth), from `sip_message::digest`.
pub fn answer_md5<'a>(
    mut challenges: impl Iterator<Item = &'a [u8]>,
    method: &str,
    uri: &str,
    who: Credentials<'_>,
    cnonce: &str,
) -> Option<String> {
    let md5 = |ch: &[u8]| {
        AuthParams::parse(ch).is_ok_and(|p| {
            p.is_digest() && p.get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case(b"MD5"))
        })
    };
    challenges.find(|ch| md5(ch)).and_then(|ch| digest::authorization(ch, method, uri, who, cnonce))
}

/// Checks MD5 digest credentials `creds` of `who` against what we
/// challenged with (`realm`, `nonce`) for a request of `method` to `ruri`.
pub fn check_md5(
    creds: &[u8],
    method: &str,
    ruri: &str,
    who: Credentials<'_>,
    (realm, nonce): (&str, &str),
) -> bool {
    let Credentials { user, password: pass } = who;
    let Ok(p) = AuthParams::parse(creds) else { return false };
    let text = |n: &str| p.get(n).map(|v| String::from_utf8_lossy(v).into_owned());
    if text("username").as_deref() != Some(user)
        || text("realm").as_deref() != Some(realm)
        || text("nonce").as_deref() != Some(nonce)
        || text("uri").as_deref() != Some(ruri)
    {
        return false;
    }
    let qop = p.get("qop").map(|qop| QopAuth {
        nc: p.get("nc").unwrap_or_default(),
        cnonce: p.get("cnonce").unwrap_or_default(),
        qop,
    });
    let (method, uri, nonce) = (method.as_bytes(), ruri.as_bytes(), nonce.as_bytes());
    let want = RequestDigest { algorithm: Algorithm::Md5, nonce, qop, method, uri }
        .hex(&digest::ha1(Algorithm::Md5, user, realm, pass));
    text("response").as_deref() == Some(want.as_str())
}
