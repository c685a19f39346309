//! RFC 4235 `application/dialog-info+xml` documents: what a busy lamp
//! (BLF) key is told about the dialogs of the extension or ring group it
//! watches.
//!
//! A [`DialogInfo`] is one document: its `version` (counted per
//! subscription by the [`crate::Notifier`]), `full` or `partial` state, the
//! watched `entity`, and its [`DialogEntry`]s. [`DialogInfo::to_xml`] writes
//! it; the crate's `tests/schema.rs` validates what it writes against RFC
//! 4235's schema with `xmllint`.
//!
//! Everything written is bounded and re-encoded, never passed through:
//! text is XML-escaped, control characters are dropped, a display name is
//! cut at [`MAX_DISPLAY`] bytes (at a character boundary), a URI is
//! percent-encoded where it holds characters a URI may not (so that it is
//! a valid `xs:anyURI`), and an identity URI, Call-ID or tag longer than
//! its cap is left out rather than cut (a cut URI would name someone else).

use records::{HangupBy, HangupReason};
use sip_message::NameAddr;
use std::fmt::Write as _;

/// The Content-Type of a dialog-info body.
pub const CONTENT_TYPE: &str = "application/dialog-info+xml";

/// The RFC 4235 XML namespace.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:dialog-info";

/// Longest display name written, in bytes (the B2BUA's copy limit).
pub const MAX_DISPLAY: usize = 128;
/// Longest URI written (identity or entity), in bytes.
pub const MAX_URI: usize = 256;
/// Longest Call-ID, tag or dialog id written, in bytes.
pub const MAX_ID: usize = 256;

/// The state of one dialog (RFC 4235 section 3.7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// An INVITE was sent or received, no provisional response yet.
    Trying,
    /// A provisional response without a To tag (100 aside).
    Proceeding,
    /// Ringing: a provisional response with a To tag.
    Early,
    /// Answered.
    Confirmed,
    /// Over, and how.
    Terminated(Termination),
}

impl DialogState {
    /// The element text: `trying`, `proceeding`, `early`, `confirmed`,
    /// `terminated`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated(_) => "terminated",
        }
    }

    /// `true` for [`DialogState::Terminated`].
    pub fn is_terminated(&self) -> bool {
        matches!(self, DialogState::Terminated(_))
    }
}

/// How a dialog ended: the `event` and `code` attributes of `<state>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Termination {
    /// What ended it, when known.
    pub event: Option<TerminationEvent>,
    /// The SIP status that ended it (written only within 100-699, as the
    /// schema requires).
    pub code: Option<u16>,
}

impl Termination {
    /// How a leg toward the watched phone ended, from its call record: the
    /// record's hangup reason (the one place a SIP status becomes a reason)
    /// and who hung up, read from the watched phone's side (the phone
    /// hanging up is `local-bye`, the switch on the other party's behalf
    /// `remote-bye`), with the final status when there was one.
    pub fn of_leg(reason: HangupReason, by: HangupBy, code: Option<u16>) -> Termination {
        let event = match (reason, by) {
            (HangupReason::Cancel, _) => Some(TerminationEvent::Cancelled),
            (HangupReason::Busy | HangupReason::Failed, _) => Some(TerminationEvent::Rejected),
            (HangupReason::Noanswer | HangupReason::Timeout, _) => Some(TerminationEvent::Timeout),
            (HangupReason::Dialout, _) => Some(TerminationEvent::Error),
            (HangupReason::Normal, HangupBy::Remote) => Some(TerminationEvent::LocalBye),
            (HangupReason::Normal, HangupBy::Local) => Some(TerminationEvent::RemoteBye),
            (HangupReason::Normal | HangupReason::None, _) => None,
        };
        Termination { event, code }
    }
}

/// The `event` attribute of a terminated dialog's `<state>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationEvent {
    /// CANCELed before an answer (a loser of a fork, or the caller gave up).
    Cancelled,
    /// Refused with a final error response.
    Rejected,
    /// Replaced (RFC 3891): picked up by another phone.
    Replaced,
    /// The watched party hung up.
    LocalBye,
    /// The other party hung up.
    RemoteBye,
    /// A transport or protocol error.
    Error,
    /// No answer in time.
    Timeout,
}

impl TerminationEvent {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationEvent::Cancelled => "cancelled",
            TerminationEvent::Rejected => "rejected",
            TerminationEvent::Replaced => "replaced",
            TerminationEvent::LocalBye => "local-bye",
            TerminationEvent::RemoteBye => "remote-bye",
            TerminationEvent::Error => "error",
            TerminationEvent::Timeout => "timeout",
        }
    }
}

/// Who sent the INVITE, seen from the watched entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The watched entity called out.
    Initiator,
    /// The watched entity is being called.
    Recipient,
}

impl Direction {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Initiator => "initiator",
            Direction::Recipient => "recipient",
        }
    }
}

/// The SIP identifiers of a dialog as the watched entity sees it: a phone
/// copies them into the `Replaces` of a pickup INVITE (RFC 3891), so they
/// name the leg toward the watched phone, never another leg (topology
/// hiding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogIds {
    /// The Call-ID.
    pub call_id: String,
    /// The watched phone's tag (unknown while trying).
    pub local_tag: Option<String>,
    /// The other end's tag (the switch's tag on the leg).
    pub remote_tag: Option<String>,
}

/// A party of a dialog: `<identity display="...">uri</identity>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    display: Option<String>,
    uri: String,
}

impl Identity {
    /// An identity, bounded: control characters are removed from the
    /// display name, which is cut at [`MAX_DISPLAY`] bytes; the URI is
    /// percent-encoded where it must be. `None` when the URI is empty or,
    /// encoded, longer than [`MAX_URI`].
    pub fn new(display: Option<&str>, uri: &str) -> Option<Identity> {
        let uri = encode_uri(uri.trim());
        if uri.is_empty() || uri.len() > MAX_URI {
            return None;
        }
        let display = display.map(|d| bounded_text(d.trim(), MAX_DISPLAY));
        let display = display.filter(|d| !d.is_empty());
        Some(Identity { display, uri })
    }

    /// The identity of a From/To/Contact value: its display name unquoted
    /// and unescaped (RFC 3261 quoted-pair), and its URI.
    pub fn from_name_addr(na: &NameAddr<'_>) -> Option<Identity> {
        let uri = std::str::from_utf8(na.uri.raw).ok()?;
        let display = na.display_name().map(unescape_quoted);
        Identity::new(display.as_deref(), uri)
    }

    /// The display name, as written.
    pub fn display(&self) -> Option<&str> {
        self.display.as_deref()
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// `a\"b` -> `a"b`: the quoted-pairs of a display name read as the
/// characters they stand for (invalid UTF-8 replaced).
fn unescape_quoted(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `s` without control characters, at most `max` bytes, cut at a
/// character boundary.
fn bounded_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// One `<dialog>` of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogEntry {
    /// Stable for the dialog's life (the switch's call or leg id).
    pub id: String,
    /// Its state.
    pub state: DialogState,
    /// Who called whom, when known.
    pub direction: Option<Direction>,
    /// Call-ID and tags, when they are to be shown (BLF pickup needs them).
    pub ids: Option<DialogIds>,
    /// The watched party (its own identity).
    pub local: Option<Identity>,
    /// The other party: the caller of a ringing call.
    pub remote: Option<Identity>,
}

impl DialogEntry {
    /// An entry with only an id and a state.
    pub fn new(id: impl Into<String>, state: DialogState) -> DialogEntry {
        DialogEntry { id: id.into(), state, direction: None, ids: None, local: None, remote: None }
    }
}

/// Whether a document holds every dialog of the entity or only changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentState {
    /// Every dialog; replaces what the watcher knew.
    Full,
    /// Only the dialogs that changed since the previous version.
    Partial,
}

impl DocumentState {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentState::Full => "full",
            DocumentState::Partial => "partial",
        }
    }
}

/// One dialog-info document.
#[derive(Clone, Copy, Debug)]
pub struct DialogInfo<'a> {
    /// 0 for the first document of a subscription, then one more each time.
    pub version: u32,
    /// Full or partial.
    pub state: DocumentState,
    /// The watched resource's URI (`sip:test11@test`).
    pub entity: &'a str,
    /// Its dialogs.
    pub dialogs: &'a [DialogEntry],
}

impl DialogInfo<'_> {
    /// The document as XML (UTF-8).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(160 + 400 * self.dialogs.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            out,
            "<dialog-info xmlns=\"{NAMESPACE}\" version=\"{}\" state=\"{}\" entity=\"",
            self.version,
            self.state.as_str()
        );
        push_escaped(&mut out, &entity_uri(self.entity));
        out.push_str("\">\n");
        for d in self.dialogs {
            write_dialog(&mut out, d);
        }
        out.push_str("</dialog-info>\n");
        out
    }
}

fn write_dialog(out: &mut String, d: &DialogEntry) {
    out.push_str("  <dialog id=\"");
    push_escaped(out, &bounded_text(&d.id, MAX_ID));
    out.push('"');
    if let Some(ids) = d.ids.as_ref().filter(|i| fits(&i.call_id)) {
        attr(out, "call-id", &ids.call_id);
        for (name, tag) in [("local-tag", &ids.local_tag), ("remote-tag", &ids.remote_tag)] {
            if let Some(t) = tag.as_deref().filter(|t| fits(t)) {
                attr(out, name, t);
            }
        }
    }
    if let Some(dir) = d.direction {
        attr(out, "direction", dir.as_str());
    }
    out.push_str(">\n    <state");
    if let DialogState::Terminated(t) = d.state {
        if let Some(e) = t.event {
            attr(out, "event", e.as_str());
        }
        if let Some(code) = t.code.filter(|c| (100..=699).contains(c)) {
            let _ = write!(out, " code=\"{code}\"");
        }
    }
    let _ = writeln!(out, ">{}</state>", d.state.as_str());
    for (name, who) in [("local", &d.local), ("remote", &d.remote)] {
        if let Some(id) = who {
            write_participant(out, name, id);
        }
    }
    out.push_str("  </dialog>\n");
}

fn write_participant(out: &mut String, name: &str, id: &Identity) {
    let _ = write!(out, "    <{name}>\n      <identity");
    if let Some(d) = id.display() {
        attr(out, "display", d);
    }
    out.push('>');
    push_escaped(out, id.uri());
    let _ = writeln!(out, "</identity>\n    </{name}>");
}

/// ` name="value"`, the value escaped.
fn attr(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " {name}=\"");
    push_escaped(out, value);
    out.push('"');
}

/// `true` for a Call-ID or tag short enough to write and free of control
/// characters.
fn fits(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_ID && !v.chars().any(char::is_control)
}

/// `uri` with every byte a URI may not hold written `%XX`: what is not an
/// RFC 3986 unreserved or reserved character, and a `%` that does not start
/// an escape. SIP URIs are ASCII already (RFC 3261 19.1.1); this makes sure.
/// `[` and `]` are escaped too: a `sip:` URI is not hierarchical, so an
/// IPv6 host's brackets would make it an invalid `xs:anyURI` (libxml2
/// refuses `sip:a@[2001:db8::1]`); a lamp shows the user part anyway.
fn encode_uri(uri: &str) -> String {
    let b = uri.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let escape =
            c == b'%' && b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if escape || c.is_ascii_alphanumeric() || b"-_.!~*'();/?:@&=+$,".contains(&c) {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// The entity URI, encoded and cut to [`MAX_URI`] bytes, never inside an
/// escape (it is the switch's own, and required).
fn entity_uri(entity: &str) -> String {
    let mut uri = encode_uri(entity);
    if uri.len() > MAX_URI {
        let mut end = MAX_URI;
        while end > 0 && uri.as_bytes()[end.saturating_sub(2)..end].contains(&b'%') {
            end -= 1;
        }
        uri.truncate(end);
    }
    uri
}

/// Appends `s` escaped for XML text and attribute values; characters XML
/// 1.0 does not allow (controls, U+FFFE, U+FFFF) are dropped.
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{FFFE}' | '\u{FFFF}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ringing() -> DialogEntry {
        DialogEntry {
            id: "call-1".into(),
            state: DialogState::Early,
            direction: Some(Direction::Recipient),
            ids: Some(DialogIds {
                call_id: "abc@h".into(),
                local_tag: Some("phone-tag".into()),
                remote_tag: Some("sw-tag".into()),
            }),
            local: Identity::new(None, "sip:test12@test"),
            remote: Identity::new(Some("Alice <&> \"Smith\""), "sip:test11@test;x=a&b"),
        }
    }

    #[test]
    fn writes_a_full_document_with_escaped_identities() {
        let dialogs = [ringing()];
        let xml = DialogInfo {
            version: 3,
            state: DocumentState::Full,
            entity: "sip:test12@test",
            dialogs: &dialogs,
        }
        .to_xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"3\" state=\"full\" entity=\"sip:test12@test\">"), "{xml}");
        assert!(xml.contains("<dialog id=\"call-1\" call-id=\"abc@h\" local-tag=\"phone-tag\" remote-tag=\"sw-tag\" direction=\"recipient\">"), "{xml}");
        assert!(xml.contains("<state>early</state>"));
        assert!(xml.contains("<identity display=\"Alice &lt;&amp;&gt; &quot;Smith&quot;\">sip:test11@test;x=a&amp;b</identity>"), "{xml}");
        assert!(xml.ends_with("</dialog-info>\n"));
    }

    #[test]
    fn terminated_state_carries_event_and_a_code_in_range() {
        let mut d = DialogEntry::new(
            "x",
            DialogState::Terminated(Termination {
                event: Some(TerminationEvent::Rejected),
                code: Some(486),
            }),
        );
        let xml = |d: &DialogEntry| {
            DialogInfo {
                version: 0,
                state: DocumentState::Partial,
                entity: "sip:a@b",
                dialogs: std::slice::from_ref(d),
            }
            .to_xml()
        };
        assert!(xml(&d).contains("<state event=\"rejected\" code=\"486\">terminated</state>"));
        d.state = DialogState::Terminated(Termination { event: None, code: Some(99) });
        assert!(xml(&d).contains("<state>terminated</state>"));
        assert!(xml(&d).contains("state=\"partial\""));
    }

    #[test]
    fn terminations_of_leg_records() {
        use TerminationEvent::*;
        let of = |r, b| Termination::of_leg(r, b, None).event;
        assert_eq!(of(HangupReason::Cancel, HangupBy::Local), Some(Cancelled));
        assert_eq!(of(HangupReason::Busy, HangupBy::Remote), Some(Rejected));
        assert_eq!(of(HangupReason::Noanswer, HangupBy::Local), Some(Timeout));
        assert_eq!(of(HangupReason::Dialout, HangupBy::Local), Some(Error));
        assert_eq!(of(HangupReason::Normal, HangupBy::Remote), Some(LocalBye));
        assert_eq!(of(HangupReason::Normal, HangupBy::Local), Some(RemoteBye));
        assert_eq!(of(HangupReason::None, HangupBy::None), None);
        assert_eq!(
            Termination::of_leg(HangupReason::Busy, HangupBy::Remote, Some(486)).code,
            Some(486)
        );
    }

    #[test]
    fn bounds_and_control_characters() {
        let long = "é".repeat(100); // 200 bytes
        let id = Identity::new(Some(&format!("a\u{0}\r\nb{long}")), "sip:x@y").unwrap();
        let shown = id.display().unwrap();
        assert!(shown.starts_with("ab"));
        assert!(shown.len() <= MAX_DISPLAY && shown.len() >= MAX_DISPLAY - 1);
        assert!(Identity::new(None, &format!("sip:{}@y", "a".repeat(MAX_URI))).is_none());
        assert_eq!(Identity::new(None, "sip:a\r\n@y").unwrap().uri(), "sip:a%0D%0A@y");
        assert!(Identity::new(None, "  ").is_none());
        assert_eq!(Identity::new(Some(" \u{7} "), "sip:a@b").unwrap().display(), None);
        // An oversized Call-ID leaves every id attribute out; an oversized
        // tag only itself.
        let mut d = ringing();
        d.ids.as_mut().unwrap().local_tag = Some("t".repeat(MAX_ID + 1));
        let one = [d.clone()];
        let xml =
            DialogInfo { version: 0, state: DocumentState::Full, entity: "sip:a@b", dialogs: &one }
                .to_xml();
        assert!(xml.contains("call-id=\"abc@h\" remote-tag=\"sw-tag\""), "{xml}");
        d.ids.as_mut().unwrap().call_id = "c".repeat(MAX_ID + 1);
        let one = [d];
        let xml =
            DialogInfo { version: 0, state: DocumentState::Full, entity: "sip:a@b", dialogs: &one }
                .to_xml();
        assert!(!xml.contains("call-id") && !xml.contains("-tag="), "{xml}");
    }

    #[test]
    fn identity_from_a_from_header() {
        let na = NameAddr::parse(br#""Bob \"B\" Jones" <sip:bob@example.com>;tag=1"#).unwrap();
        let id = Identity::from_name_addr(&na).unwrap();
        assert_eq!(id.display(), Some("Bob \"B\" Jones"));
        assert_eq!(id.uri(), "sip:bob@example.com");
        let na = NameAddr::parse(b"sip:carol@example.com").unwrap();
        assert_eq!(Identity::from_name_addr(&na).unwrap().display(), None);
    }

    #[test]
    fn uris_are_re_encoded_and_the_entity_cut_outside_escapes() {
        assert_eq!(encode_uri("sip:+1555@h;user=phone"), "sip:+1555@h;user=phone");
        assert_eq!(encode_uri("sip:j%20d@[2001:db8::1]"), "sip:j%20d@%5B2001:db8::1%5D");
        assert_eq!(encode_uri("sip:a%zz\"b c<é>#@h%"), "sip:a%25zz%22b%20c%3C%C3%A9%3E%23@h%25");
        let long = format!("sip:{}", "é".repeat(MAX_URI));
        let cut = entity_uri(&long);
        assert!(cut.len() <= MAX_URI && cut.ends_with("%A9"), "{cut}");
        assert_eq!(entity_uri("sip:800@test"), "sip:800@test");
    }

    #[test]
    fn escaping_drops_what_xml_cannot_hold() {
        let mut s = String::new();
        push_escaped(&mut s, "a'b\u{FFFE}\u{1b}c\u{85}d");
        assert_eq!(s, "a&apos;bcd");
    }
}
