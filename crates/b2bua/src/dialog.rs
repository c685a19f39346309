//! Dialog state (RFC 3261 section 12) and the messages built from it.

use crate::{B2buaConfig, LocalContact};
use bytes::{BufMut, Bytes, BytesMut};
use sip_message::{HeaderName, Message, NameAddr, Peer, Scheme, Transport, Uri};
use std::net::{IpAddr, SocketAddr};

/// Most Record-Route values kept in a route set.
const MAX_ROUTES: usize = 16;

/// A message body and its Content-Type, shared with the message it came
/// from.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    pub(crate) ctype: Bytes,
    pub(crate) bytes: Bytes,
}

impl Body {
    /// The body of `m`, if it has one.
    pub(crate) fn of(m: &Message) -> Option<Body> {
        if m.body().is_empty() {
            return None;
        }
        let ctype = m
            .header_bytes(HeaderName::ContentType)
            .unwrap_or_else(|| Bytes::from_static(b"application/sdp"));
        Some(Body { ctype, bytes: m.body_bytes() })
    }
}

/// An SDP answer that rejects every stream of `offer` (each `m=` line with
/// port 0, RFC 3264 section 6), for an ACK that must answer an offer we
/// cannot accept.
pub(crate) fn rejecting_answer(offer: &Body) -> Body {
    let text = String::from_utf8_lossy(&offer.bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("m=") {
            Some(rest) => {
                let mut parts = rest.splitn(3, ' ');
                let media = parts.next().unwrap_or("audio");
                let _port = parts.next();
                let tail = parts.next().unwrap_or("RTP/AVP 0\r\n");
                out.push_str(&format!("m={media} 0 {tail}"));
            }
            None => out.push_str(line),
        }
    }
    Body { ctype: offer.ctype.clone(), bytes: Bytes::from(out) }
}

/// One side of a dialog we are a party of.
#[derive(Clone, Debug)]
pub(crate) struct Dialog {
    pub(crate) call_id: Bytes,
    pub(crate) local_tag: Bytes,
    pub(crate) remote_tag: Bytes,
    /// From of our requests (with our tag).
    pub(crate) local: Bytes,
    /// To of our requests (with the remote tag).
    pub(crate) remote: Bytes,
    pub(crate) local_seq: u32,
    pub(crate) remote_seq: Option<u32>,
    pub(crate) remote_target: Bytes,
    /// Route values, in the order they go into our requests.
    pub(crate) route_set: Vec<Bytes>,
    /// The peer the dialog was set up with: where requests go when the
    /// remote target or first route is not an IP address.
    pub(crate) peer: Peer,
}

/// Our side of an outbound leg's dialogs, known from its INVITE before any
/// response: what every dialog of the leg (early, confirmed, or another
/// downstream fork's) is made from with [`Dialog::uac`].
#[derive(Clone, Debug)]
pub(crate) struct LegTemplate {
    pub(crate) call_id: Bytes,
    pub(crate) local_tag: Bytes,
    /// From of the INVITE (with our tag).
    pub(crate) local: Bytes,
    /// The INVITE's Request-URI: the remote target until a Contact says
    /// otherwise.
    pub(crate) request_uri: Bytes,
    /// Where the INVITE went.
    pub(crate) peer: Peer,
    /// CSeq of the current INVITE (1, or more after a digest challenge).
    pub(crate) invite_seq: u32,
}

impl Dialog {
    /// The UAC side of the dialog a response with a To tag makes (12.1.2)
    /// from our side of it, `t` (its `local_seq` is the INVITE's CSeq).
    pub(crate) fn uac(t: &LegTemplate, resp: &Message) -> Dialog {
        Dialog {
            call_id: t.call_id.clone(),
            local_tag: t.local_tag.clone(),
            remote_tag: Bytes::copy_from_slice(resp.to_tag().unwrap_or_default()),
            local: t.local.clone(),
            // A copy: the dialog outlives the response's datagram.
            remote: Bytes::copy_from_slice(resp.header(HeaderName::To).unwrap_or_default()),
            local_seq: t.invite_seq,
            remote_seq: None,
            remote_target: contact_uri(resp).unwrap_or_else(|| t.request_uri.clone()),
            route_set: record_route(resp, true),
            peer: t.peer,
        }
    }

    /// The UAS side of the dialog an INVITE makes (12.1.1) once we answer
    /// it with our tag `local_tag` (its `local_seq` is 0: none sent yet).
    pub(crate) fn uas(invite: &Message, local_tag: Bytes, peer: Peer) -> Dialog {
        let to = invite.header_bytes(HeaderName::To).unwrap_or_default();
        let remote_target = contact_uri(invite)
            .or_else(|| invite.from_header().ok().map(|f| Bytes::copy_from_slice(f.uri.raw)))
            .unwrap_or_else(|| Bytes::from(format!("sip:{}", peer.remote)));
        Dialog {
            // Copies: the dialog outlives the INVITE's datagram.
            call_id: Bytes::copy_from_slice(invite.header(HeaderName::CallId).unwrap_or_default()),
            local: with_tag(&to, &local_tag),
            local_tag,
            remote_tag: Bytes::copy_from_slice(invite.from_tag().unwrap_or_default()),
            remote: Bytes::copy_from_slice(invite.header(HeaderName::From).unwrap_or_default()),
            local_seq: 0,
            remote_seq: invite.cseq().ok().map(|c| c.seq),
            remote_target,
            route_set: record_route(invite, false),
            peer,
        }
    }

    /// A target refresh: the Contact of `m` becomes the remote target.
    pub(crate) fn refresh_target(&mut self, m: &Message) {
        if let Some(t) = contact_uri(m) {
            self.remote_target = t;
        }
    }

    /// Request-URI and Route values per 12.2.1.1 (loose and strict routing).
    pub(crate) fn routing(&self) -> (Bytes, Vec<Bytes>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        match NameAddr::parse(first) {
            Ok(na) if !na.uri.params.has("lr") => {
                let ruri = Bytes::copy_from_slice(na.uri.raw);
                let mut routes: Vec<Bytes> = self.route_set.iter().skip(1).cloned().collect();
                routes.push(bracketed(&self.remote_target));
                (ruri, routes)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        }
    }

    /// Where requests of this dialog go: the first route or the remote
    /// target when its host is an IP address, else the dialog's peer.
    pub(crate) fn destination(&self, locals: &[LocalContact]) -> Peer {
        let next = match self.route_set.first() {
            Some(r) => NameAddr::parse(r).ok().map(|na| na.uri),
            None => Uri::parse(&self.remote_target).ok(),
        };
        next.and_then(|u| uri_peer(&u, &self.peer, locals)).unwrap_or(self.peer)
    }
}

/// The peer a URI with an IP address host designates; `None` for a
/// WebSocket one (only its connection, the dialog's peer, reaches it).
fn uri_peer(u: &Uri<'_>, base: &Peer, locals: &[LocalContact]) -> Option<Peer> {
    if !u.is_sip() {
        return None;
    }
    let host = std::str::from_utf8(u.host).ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let transport = match u.transport() {
        Some(t) => Transport::from_token(t)?,
        None => base.transport,
    };
    let transport = if u.scheme == Scheme::Sips { transport.secured() } else { transport };
    if matches!(transport, Transport::Ws | Transport::Wss) {
        // RFC 7118: a WebSocket client is reached over its connection only.
        return None;
    }
    let remote = SocketAddr::new(ip, u.port.unwrap_or(transport.default_port()));
    let local = if transport == base.transport {
        base.local
    } else {
        locals.iter().find(|l| l.transport == transport).map_or(base.local, |l| l.addr)
    };
    let conn = if transport == base.transport && remote == base.remote { base.conn } else { None };
    Some(Peer { transport, remote, local, conn })
}

/// `<uri>` unless already bracketed.
fn bracketed(uri: &Bytes) -> Bytes {
    if uri.first() == Some(&b'<') {
        return uri.clone();
    }
    let mut b = BytesMut::with_capacity(uri.len() + 2);
    b.put_u8(b'<');
    b.put_slice(uri);
    b.put_u8(b'>');
    b.freeze()
}

/// A name-addr for From/To: a bare addr-spec is put in angle brackets so
/// that a tag added after it is a header parameter.
pub(crate) fn name_addr(v: &str) -> String {
    let v = v.trim();
    if v.contains('<') {
        v.to_owned()
    } else {
        format!("<{v}>")
    }
}

/// `value;tag=tag`.
pub(crate) fn with_tag(value: &[u8], tag: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(value.len() + 5 + tag.len());
    b.put_slice(value);
    b.put_slice(b";tag=");
    b.put_slice(tag);
    b.freeze()
}

/// The URI of the first Contact.
pub(crate) fn contact_uri(m: &Message) -> Option<Bytes> {
    let c = m.contacts().ok()?;
    c.list().first().map(|na| Bytes::copy_from_slice(na.uri.raw))
}

/// Record-Route values (at most [`MAX_ROUTES`]), reversed for a UAC.
pub(crate) fn record_route(m: &Message, reverse: bool) -> Vec<Bytes> {
    let mut v: Vec<Bytes> =
        m.values(HeaderName::RecordRoute).take(MAX_ROUTES).map(Bytes::copy_from_slice).collect();
    if reverse {
        v.reverse();
    }
    v
}

/// The dialog index key: Call-ID and local tag, length-prefixed.
pub(crate) fn dialog_key(call_id: &[u8], local_tag: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + call_id.len() + local_tag.len());
    k.extend_from_slice(&(call_id.len() as u32).to_le_bytes());
    k.extend_from_slice(call_id);
    k.extend_from_slice(local_tag);
    k
}

/// Our advertised address for the transport of `peer`.
pub(crate) fn our_addr(locals: &[LocalContact], peer: &Peer) -> SocketAddr {
    let same_family = |l: &&LocalContact| l.addr.is_ipv4() == peer.remote.is_ipv4();
    locals
        .iter()
        .filter(|l| l.transport == peer.transport)
        .find(same_family)
        .or_else(|| locals.iter().find(|l| l.transport == peer.transport))
        .map_or(peer.local, |l| l.addr)
}

/// Our Contact value for messages sent to `peer`. It carries a user part:
/// some UAs (SIPp among them) cannot take a remote target without one.
pub(crate) fn contact_value(locals: &[LocalContact], peer: &Peer) -> Bytes {
    let addr = our_addr(locals, peer);
    Bytes::from(match peer.transport {
        Transport::Udp => format!("<sip:forkswitch@{addr}>"),
        t => format!("<sip:forkswitch@{addr};transport={}>", t.uri_param()),
    })
}

/// Our Via value for a request sent to `peer`.
pub(crate) fn via_value(locals: &[LocalContact], peer: &Peer, branch: &str) -> String {
    format!("SIP/2.0/{} {};branch={branch};rport", peer.transport, our_addr(locals, peer))
}

/// Max-Forwards for a request caused by `incoming` (if any).
pub(crate) fn max_forwards(cfg: &B2buaConfig, incoming: Option<u8>) -> u8 {
    match incoming {
        Some(n) => cfg.max_forwards.min(n.saturating_sub(1)),
        None => cfg.max_forwards,
    }
}

/// `true` for a header name we may write: a non-empty token.
pub(crate) fn safe_name(n: &str) -> bool {
    !n.is_empty() && sip_message::scan::is_token_str(n.as_bytes())
}

/// `true` for a header value that cannot break the message framing.
pub(crate) fn safe_value(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Dialog {
        Dialog {
            call_id: Bytes::from_static(b"c1"),
            local_tag: Bytes::from_static(b"l"),
            remote_tag: Bytes::from_static(b"r"),
            local: Bytes::from_static(b"<sip:a@x>;tag=l"),
            remote: Bytes::from_static(b"<sip:b@y>;tag=r"),
            local_seq: 1,
            remote_seq: None,
            remote_target: Bytes::from_static(b"sip:b@192.0.2.5:5070"),
            route_set: Vec::new(),
            peer: Peer {
                transport: Transport::Udp,
                remote: "192.0.2.9:5060".parse().unwrap(),
                local: "192.0.2.1:5060".parse().unwrap(),
                conn: None,
            },
        }
    }

    fn locals() -> Vec<LocalContact> {
        vec![LocalContact { transport: Transport::Tcp, addr: "203.0.113.1:5070".parse().unwrap() }]
    }

    #[test]
    fn loose_strict_and_no_routing() {
        let mut d = base();
        assert_eq!(d.routing(), (Bytes::from_static(b"sip:b@192.0.2.5:5070"), vec![]));
        assert_eq!(d.destination(&[]).remote, "192.0.2.5:5070".parse().unwrap());
        d.route_set = vec![Bytes::from_static(b"<sip:198.51.100.7;lr>")];
        let (ruri, routes) = d.routing();
        assert_eq!(ruri, Bytes::from_static(b"sip:b@192.0.2.5:5070"));
        assert_eq!(routes, vec![Bytes::from_static(b"<sip:198.51.100.7;lr>")]);
        assert_eq!(d.destination(&[]).remote, "198.51.100.7:5060".parse().unwrap());
        // A strict router takes the Request-URI; the target goes last.
        d.route_set = vec![
            Bytes::from_static(b"<sip:198.51.100.8>"),
            Bytes::from_static(b"<sip:p2.example;lr>"),
        ];
        let (ruri, routes) = d.routing();
        assert_eq!(ruri, Bytes::from_static(b"sip:198.51.100.8"));
        assert_eq!(
            routes,
            vec![
                Bytes::from_static(b"<sip:p2.example;lr>"),
                Bytes::from_static(b"<sip:b@192.0.2.5:5070>")
            ]
        );
        assert_eq!(d.destination(&[]).remote, "198.51.100.8:5060".parse().unwrap());
    }

    #[test]
    fn destination_falls_back_to_the_dialog_peer() {
        let mut d = base();
        d.remote_target = Bytes::from_static(b"sip:bob@host.example");
        assert_eq!(d.destination(&[]), d.peer);
        d.remote_target = Bytes::from_static(b"sip:bob@[2001:db8::5]:5080;transport=tcp");
        let p = d.destination(&locals());
        assert_eq!(p.transport, Transport::Tcp);
        assert_eq!(p.remote, "[2001:db8::5]:5080".parse().unwrap());
        assert_eq!(p.local, "203.0.113.1:5070".parse().unwrap());
        d.remote_target = Bytes::from_static(b"sip:bob@192.0.2.5;transport=tls");
        let p = d.destination(&[]);
        assert_eq!((p.transport, p.remote), (Transport::Tls, "192.0.2.5:5061".parse().unwrap()));
        d.remote_target = Bytes::from_static(b"sips:bob@192.0.2.5:5071");
        let p = d.destination(&[]);
        assert_eq!((p.transport, p.remote), (Transport::Tls, "192.0.2.5:5071".parse().unwrap()));
        // A WebSocket peer is reached over its connection only, whatever
        // address its Contact names.
        d.peer.transport = Transport::Ws;
        d.peer.conn = Some(7);
        d.remote_target = Bytes::from_static(b"sip:bob@192.168.1.5:54321;transport=ws");
        assert_eq!(d.destination(&[]), d.peer);
        d.peer.transport = Transport::Udp;
        d.peer.conn = None;
        d.remote_target = Bytes::from_static(b"tel:+15551234");
        assert_eq!(d.destination(&[]), d.peer);
    }

    #[test]
    fn small_helpers() {
        assert_eq!(name_addr("sip:a@b;user=phone"), "<sip:a@b;user=phone>");
        assert_eq!(name_addr("\"A\" <sip:a@b>"), "\"A\" <sip:a@b>");
        assert_eq!(&with_tag(b"<sip:a@b>", b"t1")[..], b"<sip:a@b>;tag=t1");
        assert_ne!(dialog_key(b"ab", b"c"), dialog_key(b"a", b"bc"));
        assert!(!safe_value("a\r\nb") && safe_value("a b"));
        assert!(!safe_name("Bad Name") && safe_name("X-Ok"));
        let cfg = B2buaConfig::default();
        assert_eq!(max_forwards(&cfg, Some(70)), 69);
        assert_eq!(max_forwards(&cfg, Some(0)), 0);
        assert_eq!(max_forwards(&cfg, Some(200)), 70);
        assert_eq!(max_forwards(&cfg, None), 70);
    }
}
