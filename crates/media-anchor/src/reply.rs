//! rtpengine's replies, typed by the command they answer: `pong`, the
//! rewritten SDP of `offer`/`answer`, the statistics of `delete`/`query`,
//! the Call-IDs of `list`; `error` with its reason for any of them, and the
//! `warning` an `ok` may carry.

use crate::bencode::{decode_dict, DictView, DictWriter};
use crate::codec::{frame, unframe, CodecError, Cookie};
use crate::command::CommandKind;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};

/// Most SIP tags read from one call's statistics.
pub const MAX_TAGS: usize = 64;
/// Most media sections read per tag.
pub const MAX_MEDIAS: usize = 16;
/// Most packet streams read per media section.
pub const MAX_STREAMS: usize = 8;
/// Most flags read per media section or stream.
pub const MAX_FLAGS: usize = 16;
/// Most Call-IDs read from a `list` reply.
pub const MAX_CALLS: usize = 4096;

/// A reply to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `result` = `ok` (or `pong`).
    Ok {
        /// What the command returns.
        body: ReplyBody,
        /// A non-fatal problem (e.g. a `delete` that matched nothing).
        warning: Option<String>,
    },
    /// `result` = `error`.
    Error {
        /// `error-reason`.
        reason: String,
    },
}

/// The payload of an `ok` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    /// `ping` was answered.
    Pong,
    /// `offer`/`answer`: the SDP to send on.
    Sdp(Bytes),
    /// `query`, or a `delete` that found the call: its statistics.
    Stats(Box<CallStats>),
    /// `list`: Call-IDs.
    Calls(Vec<String>),
    /// A `delete` without statistics (it matched nothing: see the warning).
    Empty,
}

/// Packet counters of a stream, or a call's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounts {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Errors.
    pub errors: u64,
}

/// One packet stream (RTP or RTCP) of a media section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// rtpengine's local port.
    pub local_port: Option<u16>,
    /// rtpengine's local address.
    pub local_address: Option<IpAddr>,
    /// Where rtpengine sends to (learned or from the SDP).
    pub endpoint: Option<SocketAddr>,
    /// The address the SDP advertised.
    pub advertised_endpoint: Option<SocketAddr>,
    /// The SRTP crypto suite in use.
    pub crypto_suite: Option<String>,
    /// `RTP`, `RTCP`, `filled`, `confirmed`, ...
    pub flags: Vec<String>,
    /// Its counters.
    pub stats: PacketCounts,
}

/// One SDP media section of a tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// 1-based index.
    pub index: i64,
    /// `audio`, `video`, ...
    pub media_type: String,
    /// `RTP/AVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub protocol: Option<String>,
    /// `initialized`, `rtcp-mux`, `DTLS-SRTP`, `ICE`, ...
    pub flags: Vec<String>,
    /// Its packet streams.
    pub streams: Vec<StreamStats>,
}

/// One SIP tag (one side of a dialogue, or a branch not yet answered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagStats {
    /// The key rtpengine listed it under (`<untagged N>` for a branch with
    /// no To tag yet).
    pub key: String,
    /// The SIP tag (empty before the leg answered).
    pub tag: String,
    /// The Via branch of the leg, when the offer named one.
    pub via_branch: Option<String>,
    /// The label given in its offer or answer.
    pub label: Option<String>,
    /// Its media sections.
    pub medias: Vec<MediaStats>,
}

/// A call's statistics (`query`, `delete`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// When rtpengine created the call (UNIX seconds).
    pub created: Option<i64>,
    /// The last signalling event (UNIX seconds).
    pub last_signal: Option<i64>,
    /// Per tag, in key order.
    pub tags: Vec<TagStats>,
    /// Totals over the call.
    pub rtp: PacketCounts,
    /// RTCP totals.
    pub rtcp: PacketCounts,
}

impl CallStats {
    /// The tag of a leg by its Via branch.
    pub fn branch(&self, via_branch: &str) -> Option<&TagStats> {
        self.tags.iter().find(|t| t.via_branch.as_deref() == Some(via_branch))
    }

    /// The tag named `tag`.
    pub fn tag(&self, tag: &str) -> Option<&TagStats> {
        self.tags.iter().find(|t| t.tag == tag)
    }
}

impl Reply {
    /// The `ok` reply carrying `body`.
    pub fn ok(body: ReplyBody) -> Reply {
        Reply::Ok { body, warning: None }
    }

    /// The SDP of an `offer`/`answer` reply.
    pub fn sdp(&self) -> Option<&Bytes> {
        match self {
            Reply::Ok { body: ReplyBody::Sdp(s), .. } => Some(s),
            _ => None,
        }
    }

    /// The bencoded dictionary.
    pub fn encode(&self) -> Bytes {
        let mut d = DictWriter::new();
        match self {
            Reply::Error { reason } => {
                d.str("result", "error").str("error-reason", reason);
            }
            Reply::Ok { body, warning } => {
                d.str("result", if *body == ReplyBody::Pong { "pong" } else { "ok" });
                d.opt_str("warning", warning.as_deref());
                match body {
                    ReplyBody::Pong | ReplyBody::Empty => {}
                    ReplyBody::Sdp(s) => {
                        d.bytes("sdp", s);
                    }
                    ReplyBody::Calls(c) => {
                        d.str_list("calls", c.iter().map(String::as_str));
                        if c.is_empty() {
                            d.dict_list("calls", Vec::new());
                        }
                    }
                    ReplyBody::Stats(s) => write_stats(&mut d, s),
                }
            }
        }
        d.encode()
    }

    /// Reads the reply dictionary to a `kind` command.
    pub fn decode(kind: CommandKind, dict: &[u8]) -> Result<Reply, CodecError> {
        let value = decode_dict(dict)?;
        let d = DictView::of(&value).ok_or(CodecError::NotADictionary)?;
        let result = d.required_str("result")?;
        let warning = d.str("warning")?.map(str::to_owned);
        let body = match (result, kind) {
            ("error", _) => {
                let reason = d.str("error-reason")?.unwrap_or("(no reason given)").to_owned();
                return Ok(Reply::Error { reason });
            }
            ("pong", CommandKind::Ping) => ReplyBody::Pong,
            ("ok", CommandKind::Offer | CommandKind::Answer) => {
                let sdp = d.bytes("sdp")?.ok_or(CodecError::Missing("sdp"))?;
                ReplyBody::Sdp(Bytes::copy_from_slice(sdp))
            }
            ("ok", CommandKind::List) => {
                let calls = d.str_list("calls", MAX_CALLS)?;
                ReplyBody::Calls(calls.into_iter().map(str::to_owned).collect())
            }
            ("ok", CommandKind::Query) => ReplyBody::Stats(Box::new(read_stats(d)?)),
            ("ok", CommandKind::Delete) if d.get("tags").is_some() || d.get("totals").is_some() => {
                ReplyBody::Stats(Box::new(read_stats(d)?))
            }
            ("ok", CommandKind::Delete) => ReplyBody::Empty,
            (other, _) => return Err(CodecError::Unknown(other.to_owned())),
        };
        Ok(Reply::Ok { body, warning })
    }
}

/// Encodes a reply datagram: `<cookie> <reply>`.
pub fn encode_reply(cookie: &Cookie, reply: &Reply) -> Bytes {
    frame(cookie, &reply.encode())
}

/// Decodes a reply datagram to a `kind` command.
pub fn decode_reply(kind: CommandKind, datagram: &[u8]) -> Result<(Cookie, Reply), CodecError> {
    let (cookie, dict) = unframe(datagram)?;
    Ok((cookie, Reply::decode(kind, dict)?))
}

fn counts(d: DictView<'_, '_>) -> Result<PacketCounts, CodecError> {
    let n = |k| d.int(k).map(|v| v.map_or(0, |n| u64::try_from(n).unwrap_or(0)));
    Ok(PacketCounts { packets: n("packets")?, bytes: n("bytes")?, errors: n("errors")? })
}

fn endpoint(d: Option<DictView<'_, '_>>) -> Result<Option<SocketAddr>, CodecError> {
    let Some(d) = d else { return Ok(None) };
    let (Some(addr), Some(port)) = (d.str("address")?, d.int("port")?) else { return Ok(None) };
    let ip: IpAddr = addr.parse().map_err(|_| CodecError::BadValue("address"))?;
    let port = u16::try_from(port).map_err(|_| CodecError::BadValue("port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn strings(d: DictView<'_, '_>, key: &'static str) -> Result<Vec<String>, CodecError> {
    Ok(d.str_list(key, MAX_FLAGS)?.into_iter().map(str::to_owned).collect())
}

fn read_stream(d: DictView<'_, '_>) -> Result<StreamStats, CodecError> {
    let local_address = d.str("local address")?.and_then(|s| s.parse().ok());
    let local_port = d
        .int("local port")?
        .map(|p| u16::try_from(p).map_err(|_| CodecError::BadValue("local port")));
    Ok(StreamStats {
        local_port: local_port.transpose()?,
        local_address,
        endpoint: endpoint(d.dict("endpoint")?)?,
        advertised_endpoint: endpoint(d.dict("advertised endpoint")?)?,
        crypto_suite: d.str("crypto suite")?.map(str::to_owned),
        flags: strings(d, "flags")?,
        stats: d.dict("stats")?.map(counts).transpose()?.unwrap_or_default(),
    })
}

fn read_media(d: DictView<'_, '_>) -> Result<MediaStats, CodecError> {
    let streams = d.list("streams", MAX_STREAMS)?;
    Ok(MediaStats {
        index: d.int("index")?.unwrap_or(0),
        media_type: d.str("type")?.unwrap_or_default().to_owned(),
        protocol: d.str("protocol")?.map(str::to_owned),
        flags: strings(d, "flags")?,
        streams: streams
            .into_iter()
            .map(|s| DictView::of(s).ok_or(CodecError::WrongType("streams")).and_then(read_stream))
            .collect::<Result<_, _>>()?,
    })
}

fn read_tag(key: &[u8], d: DictView<'_, '_>) -> Result<TagStats, CodecError> {
    let medias = d.list("medias", MAX_MEDIAS)?;
    Ok(TagStats {
        key: String::from_utf8_lossy(key).into_owned(),
        tag: d.str("tag")?.unwrap_or_default().to_owned(),
        via_branch: d.str("via-branch")?.map(str::to_owned),
        label: d.str("label")?.map(str::to_owned),
        medias: medias
            .into_iter()
            .map(|m| DictView::of(m).ok_or(CodecError::WrongType("medias")).and_then(read_media))
            .collect::<Result<_, _>>()?,
    })
}

fn read_stats(d: DictView<'_, '_>) -> Result<CallStats, CodecError> {
    let mut tags = Vec::new();
    if let Some(t) = d.dict("tags")? {
        for (key, v) in t.entries().into_iter().take(MAX_TAGS) {
            tags.push(read_tag(key, DictView::of(v).ok_or(CodecError::WrongType("tags"))?)?);
        }
    }
    let totals = d.dict("totals")?;
    let total = |k| totals.and_then(|t| t.dict(k).transpose()).transpose()?.map(counts).transpose();
    Ok(CallStats {
        created: d.int("created")?,
        last_signal: d.int("last signal")?,
        tags,
        rtp: total("RTP")?.unwrap_or_default(),
        rtcp: total("RTCP")?.unwrap_or_default(),
    })
}

fn write_counts(c: &PacketCounts) -> DictWriter {
    let mut d = DictWriter::new();
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    d.int("packets", n(c.packets)).int("bytes", n(c.bytes)).int("errors", n(c.errors));
    d
}

fn write_endpoint(a: SocketAddr) -> DictWriter {
    let mut d = DictWriter::new();
    let family = if a.is_ipv4() { "IPv4" } else { "IPv6" };
    d.str("family", family).str("address", &a.ip().to_string()).int("port", i64::from(a.port()));
    d
}

fn write_stream(s: &StreamStats) -> DictWriter {
    let mut d = DictWriter::new();
    if let Some(p) = s.local_port {
        d.int("local port", i64::from(p));
    }
    d.opt_str("local address", s.local_address.map(|a| a.to_string()).as_deref());
    if let Some(e) = s.endpoint {
        d.dict("endpoint", write_endpoint(e));
    }
    if let Some(e) = s.advertised_endpoint {
        d.dict("advertised endpoint", write_endpoint(e));
    }
    d.opt_str("crypto suite", s.crypto_suite.as_deref());
    d.str_list("flags", s.flags.iter().map(String::as_str));
    d.dict("stats", write_counts(&s.stats));
    d
}

fn write_stats(d: &mut DictWriter, s: &CallStats) {
    if let Some(t) = s.created {
        d.int("created", t);
    }
    if let Some(t) = s.last_signal {
        d.int("last signal", t);
    }
    let mut tags = DictWriter::new();
    for t in &s.tags {
        let mut td = DictWriter::new();
        td.str("tag", &t.tag).opt_str("via-branch", t.via_branch.as_deref());
        td.opt_str("label", t.label.as_deref());
        let medias = t.medias.iter().map(|m| {
            let mut md = DictWriter::new();
            md.int("index", m.index).str("type", &m.media_type);
            md.opt_str("protocol", m.protocol.as_deref());
            md.str_list("flags", m.flags.iter().map(String::as_str));
            md.dict_list("streams", m.streams.iter().map(write_stream).collect());
            md
        });
        td.dict_list("medias", medias.collect());
        tags.dict(&t.key, td);
    }
    d.dict("tags", tags);
    let mut totals = DictWriter::new();
    totals.dict("RTP", write_counts(&s.rtp)).dict("RTCP", write_counts(&s.rtcp));
    d.dict("totals", totals);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `query` reply as rtpengine 10.5 wrote it (keys unsorted): a call
    /// forked to branches b1 (answered, To tag t1) and b2 (untagged), three
    /// RTP packets relayed each way.
    const QUERY: &[u8] = include_bytes!("../tests/data/query_10.5.bencode");

    #[test]
    fn real_query_reply() {
        let r = Reply::decode(CommandKind::Query, QUERY).unwrap();
        let Reply::Ok { body: ReplyBody::Stats(s), warning: None } = r else { panic!("{r:?}") };
        assert_eq!(s.rtp, PacketCounts { packets: 6, bytes: 1032, errors: 0 });
        assert_eq!(s.rtcp, PacketCounts::default());
        assert_eq!(s.created, Some(1796672223));
        assert_eq!(
            s.tags.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
            ["<untagged 2>", "ft", "t1"]
        );
        assert_eq!(s.branch("b1").unwrap().tag, "t1");
        assert_eq!(s.branch("b2").unwrap().tag, "");
        let stream = &s.tag("ft").unwrap().medias[0].streams[0];
        assert_eq!(stream.local_port, Some(30054));
        assert_eq!(stream.endpoint, Some("127.0.0.1:35376".parse().unwrap()));
        assert_eq!(
            s.branch("b2").unwrap().medias[0].streams[0].endpoint,
            None,
            "an empty endpoint dictionary is none"
        );
        assert_eq!(stream.stats.packets, 3);
        assert_eq!(stream.flags, ["RTP", "filled"]);
    }

    #[test]
    fn documented_replies() {
        assert_eq!(
            Reply::decode(CommandKind::Ping, b"d6:result4:ponge").unwrap(),
            Reply::ok(ReplyBody::Pong)
        );
        let e = Reply::decode(
            CommandKind::Offer,
            b"d6:result5:error12:error-reason22:No SDP body in messagee",
        );
        assert_eq!(e.unwrap(), Reply::Error { reason: "No SDP body in message".into() });
        let w = Reply::decode(
            CommandKind::Delete,
            b"d7:warning38:Call-ID not found or tags didn't match6:result2:oke",
        );
        assert_eq!(
            w.unwrap(),
            Reply::Ok {
                body: ReplyBody::Empty,
                warning: Some("Call-ID not found or tags didn't match".into())
            }
        );
        let l = Reply::decode(CommandKind::List, b"d5:callsl2:c1e6:result2:oke").unwrap();
        assert_eq!(l, Reply::ok(ReplyBody::Calls(vec!["c1".into()])));
        let sdp = Reply::decode(CommandKind::Offer, b"d3:sdp5:v=0\r\n6:result2:oke").unwrap();
        assert_eq!(sdp.sdp().map(|b| &b[..]), Some(&b"v=0\r\n"[..]));
    }

    #[test]
    fn replies_that_do_not_fit_their_command() {
        assert_eq!(
            Reply::decode(CommandKind::Offer, b"d6:result2:oke"),
            Err(CodecError::Missing("sdp"))
        );
        assert_eq!(
            Reply::decode(CommandKind::Offer, b"d6:result4:ponge"),
            Err(CodecError::Unknown("pong".into()))
        );
        assert_eq!(
            Reply::decode(CommandKind::Ping, b"d3:foo3:bare"),
            Err(CodecError::Missing("result"))
        );
        assert_eq!(
            Reply::decode(CommandKind::List, b"d5:callsi3e6:result2:oke"),
            Err(CodecError::WrongType("calls"))
        );
    }

    #[test]
    fn replies_round_trip() {
        let query_reply = Reply::decode(CommandKind::Query, QUERY).unwrap();
        for (kind, r) in [
            (CommandKind::Ping, Reply::ok(ReplyBody::Pong)),
            (CommandKind::Offer, Reply::ok(ReplyBody::Sdp(Bytes::from_static(b"v=0\r\n")))),
            (CommandKind::List, Reply::ok(ReplyBody::Calls(vec![]))),
            (CommandKind::List, Reply::ok(ReplyBody::Calls(vec!["a".into(), "b".into()]))),
            (CommandKind::Delete, Reply::Ok { body: ReplyBody::Empty, warning: Some("w".into()) }),
            (CommandKind::Answer, Reply::Error { reason: "no".into() }),
            (CommandKind::Query, query_reply),
        ] {
            let c = Cookie::from_bits(1);
            assert_eq!(decode_reply(kind, &encode_reply(&c, &r)).unwrap(), (c, r));
        }
    }
}
