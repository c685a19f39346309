//! The ng commands forkswitch sends: `ping`, `offer`, `answer`, `delete`,
//! `query` and `list`, typed, with their encoding (and the decoding the
//! simulated rtpengine uses).

use crate::bencode::{decode_dict, DictView, DictWriter};
use crate::codec::{frame, unframe, CodecError, Cookie};
use crate::options::{DeleteFlag, Dtls, Flag, Ice, Replace, RtcpMux, Sdes, TransportProtocol};
use bytes::Bytes;
use std::fmt;
use std::net::IpAddr;

/// Longest list of option values read from a command.
const MAX_OPTIONS: usize = 32;

/// What an `offer` or `answer` asks rtpengine to do with the SDP, beside
/// anchoring it. Empty means rtpengine's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpOptions {
    /// `flags`.
    pub flags: Vec<Flag>,
    /// `replace`: the SDP parts rewritten to rtpengine's address.
    pub replace: Vec<Replace>,
    /// `ICE`.
    pub ice: Option<Ice>,
    /// `DTLS`.
    pub dtls: Option<Dtls>,
    /// `SDES`.
    pub sdes: Vec<Sdes>,
    /// `rtcp-mux`.
    pub rtcp_mux: Vec<RtcpMux>,
    /// `transport protocol`.
    pub transport_protocol: Option<TransportProtocol>,
    /// `received from`: the SIP message's source address (used with
    /// [`Flag::SipSourceAddress`]).
    pub received_from: Option<IpAddr>,
    /// `media address`: overrides the SDP's address and `received from`.
    pub media_address: Option<IpAddr>,
    /// `label`: a name rtpengine reports back in `query`.
    pub label: Option<String>,
}

/// `offer`: anchor an SDP offer. One per leg of a fork, each with its own
/// `via_branch` under the caller's Call-ID and From tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The From tag.
    pub from_tag: String,
    /// The leg's Via branch (one media branch per leg of a fork).
    pub via_branch: Option<String>,
    /// The SDP offer.
    pub sdp: Bytes,
    /// What to do with it.
    pub options: SdpOptions,
}

/// `answer`: anchor the SDP answer of one leg (its To tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The From tag of the offer.
    pub from_tag: String,
    /// The answering leg's To tag.
    pub to_tag: String,
    /// The leg's Via branch, as in its offer.
    pub via_branch: Option<String>,
    /// The SDP answer.
    pub sdp: Bytes,
    /// What to do with it.
    pub options: SdpOptions,
}

/// `delete`: with `via_branch` (and the leg's `to_tag`) one losing leg's
/// media; without, the whole call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The From tag.
    pub from_tag: String,
    /// The leg's To tag, when it had one.
    pub to_tag: Option<String>,
    /// The leg's Via branch.
    pub via_branch: Option<String>,
    /// `delete delay` in seconds (0: at once), else rtpengine's setting.
    pub delete_delay: Option<u32>,
    /// `flags`.
    pub flags: Vec<DeleteFlag>,
}

impl Delete {
    /// A delete of the whole call (no leg named).
    pub fn whole_call(call_id: &str, from_tag: &str) -> Delete {
        Delete {
            call_id: call_id.to_owned(),
            from_tag: from_tag.to_owned(),
            to_tag: None,
            via_branch: None,
            delete_delay: None,
            flags: Vec::new(),
        }
    }

    /// A delete of one leg's media: its Via branch and To tag.
    pub fn branch(call_id: &str, from_tag: &str, via_branch: &str, to_tag: Option<&str>) -> Delete {
        Delete {
            via_branch: Some(via_branch.to_owned()),
            to_tag: to_tag.map(str::to_owned),
            ..Delete::whole_call(call_id, from_tag)
        }
    }

    /// `true` when it tears down the whole call.
    pub fn is_whole_call(&self) -> bool {
        self.via_branch.is_none() && self.to_tag.is_none()
    }
}

/// `query`: a call's state and packet counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The SIP Call-ID.
    pub call_id: String,
    /// Restrict to one From tag.
    pub from_tag: Option<String>,
    /// Restrict to one To tag.
    pub to_tag: Option<String>,
}

/// One ng command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `ping`: answered `pong`.
    Ping,
    /// `offer`.
    Offer(Offer),
    /// `answer`.
    Answer(Answer),
    /// `delete`.
    Delete(Delete),
    /// `query`.
    Query(Query),
    /// `list`: the Call-IDs rtpengine holds (at most `limit`, default 32).
    List {
        /// How many at most.
        limit: Option<u32>,
    },
}

/// Which command a request is (metrics label, reply decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandKind {
    /// `ping`.
    Ping,
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
    /// `delete`.
    Delete,
    /// `query`.
    Query,
    /// `list`.
    List,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 6] = [
        CommandKind::Ping,
        CommandKind::Offer,
        CommandKind::Answer,
        CommandKind::Delete,
        CommandKind::Query,
        CommandKind::List,
    ];

    /// The `command` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::Offer => "offer",
            CommandKind::Answer => "answer",
            CommandKind::Delete => "delete",
            CommandKind::Query => "query",
            CommandKind::List => "list",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Command {
    /// Which command it is.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Ping => CommandKind::Ping,
            Command::Offer(_) => CommandKind::Offer,
            Command::Answer(_) => CommandKind::Answer,
            Command::Delete(_) => CommandKind::Delete,
            Command::Query(_) => CommandKind::Query,
            Command::List { .. } => CommandKind::List,
        }
    }

    /// The Call-ID it is about, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Command::Offer(o) => Some(&o.call_id),
            Command::Answer(a) => Some(&a.call_id),
            Command::Delete(d) => Some(&d.call_id),
            Command::Query(q) => Some(&q.call_id),
            Command::Ping | Command::List { .. } => None,
        }
    }

    /// The bencoded dictionary.
    pub fn encode(&self) -> Bytes {
        let mut d = DictWriter::new();
        d.str("command", self.kind().as_str());
        match self {
            Command::Ping => {}
            Command::Offer(o) => {
                write_ids(&mut d, &o.call_id, &o.from_tag, None, o.via_branch.as_deref());
                write_sdp(&mut d, &o.sdp, &o.options);
            }
            Command::Answer(a) => {
                let (to, via) = (Some(a.to_tag.as_str()), a.via_branch.as_deref());
                write_ids(&mut d, &a.call_id, &a.from_tag, to, via);
                write_sdp(&mut d, &a.sdp, &a.options);
            }
            Command::Delete(x) => {
                let (to, via) = (x.to_tag.as_deref(), x.via_branch.as_deref());
                write_ids(&mut d, &x.call_id, &x.from_tag, to, via);
                if let Some(s) = x.delete_delay {
                    d.int("delete delay", i64::from(s));
                }
                d.str_list("flags", x.flags.iter().map(|f| f.as_str()));
            }
            Command::Query(q) => {
                d.str("call-id", &q.call_id);
                d.opt_str("from-tag", q.from_tag.as_deref());
                d.opt_str("to-tag", q.to_tag.as_deref());
            }
            Command::List { limit } => {
                if let Some(n) = limit {
                    d.int("limit", i64::from(*n));
                }
            }
        }
        d.encode()
    }

    /// Reads a command dictionary.
    pub fn decode(dict: &[u8]) -> Result<Command, CodecError> {
        let value = decode_dict(dict)?;
        let d = DictView::of(&value).ok_or(CodecError::NotADictionary)?;
        let command = d.required_str("command")?;
        let kind = CommandKind::ALL
            .into_iter()
            .find(|k| k.as_str() == command)
            .ok_or_else(|| CodecError::Unknown(command.to_owned()))?;
        let s = |k| d.required_str(k).map(str::to_owned);
        let opt = |k| d.str(k).map(|v| v.map(str::to_owned));
        Ok(match kind {
            CommandKind::Ping => Command::Ping,
            CommandKind::Offer => Command::Offer(Offer {
                call_id: s("call-id")?,
                from_tag: s("from-tag")?,
                via_branch: opt("via-branch")?,
                sdp: read_sdp(d)?,
                options: read_options(d)?,
            }),
            CommandKind::Answer => Command::Answer(Answer {
                call_id: s("call-id")?,
                from_tag: s("from-tag")?,
                to_tag: s("to-tag")?,
                via_branch: opt("via-branch")?,
                sdp: read_sdp(d)?,
                options: read_options(d)?,
            }),
            CommandKind::Delete => Command::Delete(Delete {
                call_id: s("call-id")?,
                from_tag: s("from-tag")?,
                to_tag: opt("to-tag")?,
                via_branch: opt("via-branch")?,
                delete_delay: read_u32(d, "delete delay")?,
                flags: parse_all(&d.str_list("flags", MAX_OPTIONS)?, "flags", DeleteFlag::parse)?,
            }),
            CommandKind::Query => Command::Query(Query {
                call_id: s("call-id")?,
                from_tag: opt("from-tag")?,
                to_tag: opt("to-tag")?,
            }),
            CommandKind::List => Command::List { limit: read_u32(d, "limit")? },
        })
    }
}

/// Encodes a request datagram: `<cookie> <command>`.
pub fn encode_request(cookie: &Cookie, command: &Command) -> Bytes {
    frame(cookie, &command.encode())
}

/// Decodes a request datagram (what rtpengine, or the simulated one, reads).
pub fn decode_request(datagram: &[u8]) -> Result<(Cookie, Command), CodecError> {
    let (cookie, dict) = unframe(datagram)?;
    Ok((cookie, Command::decode(dict)?))
}

fn write_ids(d: &mut DictWriter, call_id: &str, from: &str, to: Option<&str>, via: Option<&str>) {
    d.str("call-id", call_id)
        .str("from-tag", from)
        .opt_str("to-tag", to)
        .opt_str("via-branch", via);
}

fn write_sdp(d: &mut DictWriter, sdp: &[u8], o: &SdpOptions) {
    d.bytes("sdp", sdp);
    d.str_list("flags", o.flags.iter().map(|f| f.as_str()));
    d.str_list("replace", o.replace.iter().map(|f| f.as_str()));
    d.opt_str("ICE", o.ice.map(Ice::as_str));
    d.opt_str("DTLS", o.dtls.map(Dtls::as_str));
    d.str_list("SDES", o.sdes.iter().map(|f| f.as_str()));
    d.str_list("rtcp-mux", o.rtcp_mux.iter().map(|f| f.as_str()));
    d.opt_str("transport protocol", o.transport_protocol.map(TransportProtocol::as_str));
    if let Some(ip) = o.received_from {
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        d.str_list("received from", [family, &ip.to_string()]);
    }
    d.opt_str("media address", o.media_address.map(|a| a.to_string()).as_deref());
    d.opt_str("label", o.label.as_deref());
}

fn read_sdp(d: DictView<'_, '_>) -> Result<Bytes, CodecError> {
    d.bytes("sdp")?.map(Bytes::copy_from_slice).ok_or(CodecError::Missing("sdp"))
}

fn read_u32(d: DictView<'_, '_>, key: &'static str) -> Result<Option<u32>, CodecError> {
    d.int(key)?.map(|n| u32::try_from(n).map_err(|_| CodecError::BadValue(key))).transpose()
}

fn parse_all<T>(
    items: &[&str],
    key: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, CodecError> {
    items.iter().map(|s| parse(s).ok_or(CodecError::BadValue(key))).collect()
}

fn parse_one<T>(
    d: DictView<'_, '_>,
    key: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, CodecError> {
    d.str(key)?.map(|s| parse(s).ok_or(CodecError::BadValue(key))).transpose()
}

fn read_ip(d: DictView<'_, '_>, key: &'static str) -> Result<Option<IpAddr>, CodecError> {
    d.str(key)?.map(|s| s.parse().map_err(|_| CodecError::BadValue(key))).transpose()
}

fn read_options(d: DictView<'_, '_>) -> Result<SdpOptions, CodecError> {
    let received_from = match d.str_list("received from", 2)?.as_slice() {
        [] => None,
        [_, ip] => Some(ip.parse().map_err(|_| CodecError::BadValue("received from"))?),
        _ => return Err(CodecError::BadValue("received from")),
    };
    let list = |key| d.str_list(key, MAX_OPTIONS);
    Ok(SdpOptions {
        flags: parse_all(&list("flags")?, "flags", Flag::parse)?,
        replace: parse_all(&list("replace")?, "replace", Replace::parse)?,
        ice: parse_one(d, "ICE", Ice::parse)?,
        dtls: parse_one(d, "DTLS", Dtls::parse)?,
        sdes: parse_all(&list("SDES")?, "SDES", Sdes::parse)?,
        rtcp_mux: parse_all(&list("rtcp-mux")?, "rtcp-mux", RtcpMux::parse)?,
        transport_protocol: parse_one(d, "transport protocol", TransportProtocol::parse)?,
        received_from,
        media_address: read_ip(d, "media address")?,
        label: d.str("label")?.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            call_id: "c1@host".into(),
            from_tag: "ft".into(),
            via_branch: Some("z9hG4bK-1".into()),
            sdp: Bytes::from_static(b"v=0\r\n"),
            options: SdpOptions {
                flags: vec![Flag::TrustAddress, Flag::GenerateMid],
                replace: vec![Replace::Origin, Replace::SessionConnection],
                ice: Some(Ice::Force),
                dtls: Some(Dtls::Passive),
                sdes: vec![Sdes::Off],
                rtcp_mux: vec![RtcpMux::Offer],
                transport_protocol: Some(TransportProtocol::UdpTlsRtpSavpf),
                received_from: Some("192.0.2.7".parse().unwrap()),
                media_address: None,
                label: Some("leg-1".into()),
            },
        }
    }

    #[test]
    fn ping_is_the_documented_bytes() {
        let c = Cookie::new("5323_1").unwrap();
        assert_eq!(&encode_request(&c, &Command::Ping)[..], b"5323_1 d7:command4:pinge");
    }

    #[test]
    fn commands_round_trip() {
        let cmds = [
            Command::Ping,
            Command::Offer(offer()),
            Command::Answer(Answer {
                call_id: "c".into(),
                from_tag: "f".into(),
                to_tag: "t".into(),
                via_branch: None,
                sdp: Bytes::from_static(b"v=0\r\n"),
                options: SdpOptions::default(),
            }),
            Command::Delete(Delete::branch("c", "f", "b", Some("t"))),
            Command::Delete(Delete {
                delete_delay: Some(0),
                flags: vec![DeleteFlag::Fatal],
                ..Delete::whole_call("c", "f")
            }),
            Command::Query(Query { call_id: "c".into(), from_tag: Some("f".into()), to_tag: None }),
            Command::List { limit: Some(100) },
            Command::List { limit: None },
        ];
        for c in cmds {
            let cookie = Cookie::from_bits(7);
            let (k, back) = decode_request(&encode_request(&cookie, &c)).unwrap();
            assert_eq!((k, back), (cookie, c));
        }
    }

    #[test]
    fn offer_wire_names() {
        let bytes = Command::Offer(offer()).encode();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "7:command5:offer",
            "8:from-tag2:ft",
            "10:via-branch9:z9hG4bK-1",
            "5:flagsl13:trust address12:generate mide",
            "7:replacel6:origin18:session connectione",
            "3:ICE5:force",
            "4:DTLS7:passive",
            "4:SDESl3:offe",
            "8:rtcp-muxl5:offere",
            "18:transport protocol17:UDP/TLS/RTP/SAVPF",
            "13:received froml3:IP49:192.0.2.7e",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn unsorted_and_hyphenated_input() {
        let raw = b"d7:command5:offer3:sdp5:v=0\r\n8:from-tag1:f7:call-id1:c5:flagsl13:trust-addresse18:transport-protocol7:RTP/AVPe";
        let Command::Offer(o) = Command::decode(raw).unwrap() else { panic!("not an offer") };
        assert_eq!(o.options.flags, vec![Flag::TrustAddress]);
        // "transport-protocol" is another key than "transport protocol": not read.
        assert_eq!(o.options.transport_protocol, None);
        assert_eq!(o.call_id, "c");
    }

    #[test]
    fn bad_commands() {
        assert_eq!(Command::decode(b"d7:command3:fooe"), Err(CodecError::Unknown("foo".into())));
        assert_eq!(Command::decode(b"d7:command5:offere"), Err(CodecError::Missing("call-id")));
        assert_eq!(Command::decode(b"le"), Err(CodecError::NotADictionary));
        assert_eq!(Command::decode(b"d7:commandi1ee"), Err(CodecError::WrongType("command")));
        assert!(matches!(Command::decode(b"d7:command4:ping"), Err(CodecError::Bencode(_))));
        assert!(matches!(
            Command::decode(b"d7:command4:ping7:command4:pinge"),
            Err(CodecError::Bencode(_))
        ));
        let neg = b"d7:command4:list5:limiti-1ee";
        assert_eq!(Command::decode(neg), Err(CodecError::BadValue("limit")));
    }
}
