//! Matching keys (RFC 3261 17.1.3 and 17.2.3), written as length-prefixed
//! byte strings so that no crafted field can make two different keys equal.

use sip_message::{Message, Method, Via, MAGIC_COOKIE};

/// How a server transaction is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Matching {
    /// Branch with the magic cookie + sent-by + method.
    Rfc3261,
    /// RFC 2543 fallback: Request-URI, tags, Call-ID, CSeq, top Via.
    Rfc2543,
}

const TAG_BRANCH: u8 = 1;
const TAG_2543: u8 = 2;

fn field(out: &mut Vec<u8>, f: &[u8]) {
    out.extend_from_slice(&(f.len() as u32).to_le_bytes());
    out.extend_from_slice(f);
}

/// `true` for an RFC 3261 branch: the magic cookie and something after it
/// (the same rule as [`Via::has_rfc3261_branch`], without a second scan).
pub(crate) fn is_rfc3261(branch: &[u8]) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE.as_bytes())
}

/// Branch + sent-by (host case-insensitive, port as written) + method.
pub(crate) fn branch_key(out: &mut Vec<u8>, method: &[u8], via: &Via<'_>, branch: &[u8]) {
    out.clear();
    out.push(TAG_BRANCH);
    field(out, method);
    out.extend_from_slice(&(via.host.len() as u32).to_le_bytes());
    out.extend(via.host.iter().map(u8::to_ascii_lowercase));
    match via.port {
        Some(p) => {
            out.push(1);
            out.extend_from_slice(&p.to_le_bytes());
        }
        None => out.push(0),
    }
    field(out, branch);
}

/// The key of the client transaction a response belongs to: its top Via's
/// branch and sent-by, and its CSeq method. `None` when either header is
/// unusable.
pub(crate) fn response_key(resp: &Message, out: &mut Vec<u8>) -> Option<()> {
    let via = resp.top_via().ok()?;
    let branch = via.branch()?;
    let cseq = resp.cseq().ok()?;
    branch_key(out, cseq.method.as_bytes(), &via, branch);
    Some(())
}

/// The key of the server transaction a request belongs to. With `as_invite`
/// the key is the one of an INVITE (for ACK, and for the INVITE a CANCEL
/// targets). RFC 2543 keys of INVITE leave the To tag out: the layer checks
/// it on a hit (an ACK carries the tag of the response, not the INVITE's).
pub(crate) fn request_key(req: &Message, as_invite: bool, out: &mut Vec<u8>) -> Option<Matching> {
    let method = req.method()?;
    let invite = as_invite || *method == Method::Invite || *method == Method::Ack;
    let mname: &[u8] = if invite { b"INVITE" } else { method.as_bytes() };
    let via = req.top_via().ok()?;
    if let Some(branch) = via.branch().filter(|b| is_rfc3261(b)) {
        branch_key(out, mname, &via, branch);
        return Some(Matching::Rfc3261);
    }
    out.clear();
    out.push(TAG_2543);
    field(out, mname);
    field(out, req.request_uri_bytes()?);
    field(out, req.from_tag().unwrap_or_default());
    field(out, req.call_id().ok()?);
    out.extend_from_slice(&req.cseq().ok()?.seq.to_le_bytes());
    field(out, req.values(sip_message::HeaderName::Via).next()?);
    if !invite {
        field(out, req.to_tag().unwrap_or_default());
    }
    Some(Matching::Rfc2543)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parse(s: &'static str) -> Message {
        Message::parse(Bytes::from_static(s.as_bytes())).unwrap()
    }

    #[test]
    fn ack_and_invite_share_a_key_cancel_does_not() {
        let inv = parse("INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP A.example:5060;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
        let ack = parse("ACK sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n");
        let can = parse("CANCEL sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 CANCEL\r\n\r\n");
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        assert_eq!(request_key(&inv, false, &mut a), Some(Matching::Rfc3261));
        request_key(&ack, false, &mut b);
        request_key(&can, false, &mut c);
        request_key(&can, true, &mut d);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, d);
    }

    #[test]
    fn sent_by_port_matters() {
        let x = parse("OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a:5060;branch=z9hG4bKx\r\nCSeq: 1 OPTIONS\r\n\r\n");
        let y = parse("OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a:5061;branch=z9hG4bKx\r\nCSeq: 1 OPTIONS\r\n\r\n");
        let z = parse("OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nCSeq: 1 OPTIONS\r\n\r\n");
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        request_key(&x, false, &mut a);
        request_key(&y, false, &mut b);
        request_key(&z, false, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn unusable_requests_have_no_key() {
        let m = parse("OPTIONS sip:b@h SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(request_key(&m, false, &mut Vec::new()), None);
        // RFC 2543 matching needs Call-ID and CSeq.
        let m = parse("OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n");
        assert_eq!(request_key(&m, false, &mut Vec::new()), None);
        let r = parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\nCSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(response_key(&r, &mut Vec::new()), None);
    }
}
