//! The `Replaces` header (RFC 3891): `Replaces: call-id;to-tag=a;from-tag=b
//! [;early-only]`, which a phone puts in an INVITE to take over a dialog;
//! a phone with a busy lamp does so to pick up the call ringing the
//! extension it watches, naming the dialog its NOTIFY showed.

use crate::dialog_info::DialogIds;
use crate::header_params::HeaderParams;
use sip_message::{scan, Message};

/// Longest Replaces value read, in bytes.
pub const MAX_REPLACES: usize = 512;
/// Longest Call-ID in it, in bytes.
pub const MAX_CALL_ID: usize = 256;
/// Longest tag in it, in bytes.
pub const MAX_TAG: usize = 128;

/// A parsed `Replaces` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaces {
    /// The Call-ID of the dialog to replace.
    pub call_id: String,
    /// The `to-tag`.
    pub to_tag: String,
    /// The `from-tag`.
    pub from_tag: String,
    /// `early-only`: only an early dialog may be replaced (486 otherwise).
    pub early_only: bool,
}

impl Replaces {
    /// Parses one value. Refuses (the reason for a 400) a value longer than
    /// [`MAX_REPLACES`], a Call-ID that is empty, holds white space or is
    /// longer than [`MAX_CALL_ID`], a missing, repeated, non-token or
    /// over-long tag, or a malformed parameter.
    pub fn parse(value: &[u8]) -> Result<Replaces, &'static str> {
        if value.len() > MAX_REPLACES {
            return Err("Replaces too long");
        }
        let h = HeaderParams::split(value).ok_or("malformed Replaces")?;
        let call_id = text(h.value, MAX_CALL_ID).ok_or("bad Call-ID in Replaces")?;
        if call_id.bytes().any(|b| scan::is_lws(b) || b.is_ascii_control()) {
            return Err("bad Call-ID in Replaces");
        }
        let tag = |name: &str| -> Result<String, &'static str> {
            if h.repeated(name) {
                return Err("repeated tag in Replaces");
            }
            let v = h.get(name).flatten().ok_or("Replaces without to-tag and from-tag")?;
            if !scan::is_token_str(v) {
                return Err("bad tag in Replaces");
            }
            text(v, MAX_TAG).ok_or("bad tag in Replaces")
        };
        let to_tag = tag("to-tag")?;
        let from_tag = tag("from-tag")?;
        let early_only = match h.get("early-only") {
            Some(None) => true,
            Some(Some(_)) => return Err("early-only takes no value"),
            None if h.repeated("early-only") => return Err("early-only repeated"),
            None => false,
        };
        Ok(Replaces { call_id, to_tag, from_tag, early_only })
    }

    /// The Replaces of an INVITE: `Ok(None)` without one; refused (400,
    /// RFC 3891 section 3) when there are several or it is malformed.
    pub fn from_message(msg: &Message) -> Result<Option<Replaces>, &'static str> {
        let mut values =
            msg.headers().filter(|h| h.raw_name.eq_ignore_ascii_case(b"replaces")).map(|h| h.value);
        let Some(first) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err("more than one Replaces");
        }
        Replaces::parse(first).map(Some)
    }

    /// `true` when this names the dialog `ids` describe: the same Call-ID
    /// and both tags. The tags are taken in either order: RFC 3891 reads
    /// them from the side of the INVITE's recipient and RFC 4235 shows them
    /// from the watched phone's side, and phones differ in how they map
    /// one onto the other; two random tags matching crosswise name the
    /// same dialog all the same.
    pub fn matches(&self, ids: &DialogIds) -> bool {
        let (Some(local), Some(remote)) = (&ids.local_tag, &ids.remote_tag) else {
            return false;
        };
        let (to, from) = (&self.to_tag, &self.from_tag);
        ids.call_id == self.call_id
            && ((to == local && from == remote) || (to == remote && from == local))
    }
}

/// UTF-8 text of at most `max` bytes.
fn text(v: &[u8], max: usize) -> Option<String> {
    if v.is_empty() || v.len() > max {
        return None;
    }
    std::str::from_utf8(v).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parses_rfc_3891_values() {
        let r = Replaces::parse(b"98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff").unwrap();
        assert_eq!(r.call_id, "98732@sip.example.com");
        assert_eq!(
            (r.to_tag.as_str(), r.from_tag.as_str(), r.early_only),
            ("ff87ff", "r33th4x0r", false)
        );
        let r = Replaces::parse(
            b" 425928@bobster.example.org ; To-Tag=7743 ; from-tag=6472 ; early-only",
        )
        .unwrap();
        assert_eq!((r.to_tag.as_str(), r.early_only), ("7743", true));
    }

    #[test]
    fn refuses_malformed_or_oversized_values() {
        let long_call = format!("{};to-tag=a;from-tag=b", "c".repeat(MAX_CALL_ID + 1));
        let long_tag = format!("c;to-tag={};from-tag=b", "t".repeat(MAX_TAG + 1));
        let bad: [&[u8]; 11] = [
            b"",
            b"c1;to-tag=a",
            b"c1;from-tag=b",
            b"c1;to-tag=a;to-tag=x;from-tag=b",
            b"c1;to-tag=a b;from-tag=b",
            b"c 1;to-tag=a;from-tag=b",
            b"c1;to-tag=a;from-tag=b;early-only=yes",
            b"c1;to-tag=a;from-tag=b;early-only;early-only",
            b";to-tag=a;from-tag=b",
            long_call.as_bytes(),
            long_tag.as_bytes(),
        ];
        for v in bad {
            assert!(Replaces::parse(v).is_err(), "{}", String::from_utf8_lossy(v));
        }
        assert_eq!(Replaces::parse(&vec![b'a'; MAX_REPLACES + 1]), Err("Replaces too long"));
    }

    #[test]
    fn matches_a_dialog_with_tags_either_way() {
        let ids = DialogIds {
            call_id: "leg-1@h".into(),
            local_tag: Some("phone".into()),
            remote_tag: Some("switch".into()),
        };
        let r = Replaces::parse(b"leg-1@h;to-tag=switch;from-tag=phone").unwrap();
        assert!(r.matches(&ids));
        let swapped = Replaces::parse(b"leg-1@h;to-tag=phone;from-tag=switch").unwrap();
        assert!(swapped.matches(&ids));
        assert!(!Replaces::parse(b"leg-2@h;to-tag=switch;from-tag=phone").unwrap().matches(&ids));
        assert!(!Replaces::parse(b"leg-1@h;to-tag=switch;from-tag=other").unwrap().matches(&ids));
        assert!(!Replaces::parse(b"leg-1@h;to-tag=phone;from-tag=phone").unwrap().matches(&ids));
        let trying = DialogIds { local_tag: None, ..ids };
        assert!(!r.matches(&trying), "no tag of the phone yet: nothing to match");
    }

    #[test]
    fn reads_the_header_of_an_invite() {
        let invite = |extra: &str| {
            let text = format!("INVITE sip:*8@test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@test>;tag=1\r\nTo: <sip:b@test>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n");
            Message::parse(Bytes::from(text)).unwrap()
        };
        assert_eq!(Replaces::from_message(&invite("")), Ok(None));
        let one = Replaces::from_message(&invite("replaces: c1;to-tag=a;from-tag=b\r\n")).unwrap();
        assert_eq!(one.map(|r| r.call_id), Some("c1".to_owned()));
        let two = "Replaces: c1;to-tag=a;from-tag=b\r\nReplaces: c2;to-tag=a;from-tag=b\r\n";
        assert_eq!(Replaces::from_message(&invite(two)), Err("more than one Replaces"));
        assert!(Replaces::from_message(&invite("Replaces: c1\r\n")).is_err());
    }
}
