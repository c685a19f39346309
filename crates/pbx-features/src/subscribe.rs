//! A SUBSCRIBE for the `dialog` event package, read from the wire
//! (RFC 6665 section 4.2.1, RFC 4235 section 3), and the answers a
//! notifier gives: accepted with an expiry, or refused with the status and
//! the header field RFC 6665 and RFC 3261 ask for.

use crate::dialog_info::CONTENT_TYPE;
use crate::header_params::HeaderParams;
use sip_message::{HeaderName, Message, Method};
use std::fmt;

/// The event package served: RFC 4235's `dialog`.
pub const EVENT_PACKAGE: &str = "dialog";

/// The name of the NOTIFY header carrying a [`SubscriptionState`] (it has
/// no [`HeaderName`] of its own: write it with `header_named`).
pub const SUBSCRIPTION_STATE_HEADER: &str = "Subscription-State";

/// Longest Call-ID taken from a SUBSCRIBE, in bytes.
pub const MAX_CALL_ID: usize = 256;
/// Longest From/To tag taken from a SUBSCRIBE, in bytes.
pub const MAX_TAG: usize = 128;
/// Longest Event `id` parameter taken from a SUBSCRIBE, in bytes.
pub const MAX_EVENT_ID: usize = 64;

/// What identifies a subscription (RFC 6665 section 4.1.2): its dialog
/// (Call-ID and both tags) and the Event header's `id` parameter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionKey {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (the To tag of the subscriber's requests).
    pub local_tag: String,
    /// The subscriber's tag (its From tag).
    pub remote_tag: String,
    /// The Event `id`, if any.
    pub event_id: Option<String>,
}

/// A SUBSCRIBE for the dialog package, checked and bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The Call-ID.
    pub call_id: String,
    /// The subscriber's tag (From).
    pub from_tag: String,
    /// Our tag (To): present in a refresh or an unsubscribe, absent in a
    /// new subscription.
    pub to_tag: Option<String>,
    /// The Event header's `id` parameter.
    pub event_id: Option<String>,
    /// The Expires asked for (`None`: the package default).
    pub expires: Option<u32>,
}

impl SubscribeRequest {
    /// Reads a SUBSCRIBE. Refuses (with the answer to send) one whose Event
    /// is not exactly one `dialog` (489), whose Accept leaves out
    /// `application/dialog-info+xml` (406), or whose Expires, Call-ID or
    /// tags are malformed or longer than their caps (400).
    pub fn from_message(msg: &Message) -> Result<SubscribeRequest, Refusal> {
        if msg.method() != Some(&Method::Subscribe) {
            return Err(Refusal::BadRequest("not a SUBSCRIBE"));
        }
        let event_id = event_id(msg)?;
        if !accepts_dialog_info(msg) {
            return Err(Refusal::NotAcceptable);
        }
        let expires = msg.expires().map_err(|_| Refusal::BadRequest("malformed Expires"))?;
        let call_id = bounded(msg.call_id().ok(), MAX_CALL_ID, "Call-ID")?
            .ok_or(Refusal::BadRequest("missing Call-ID"))?;
        let from_tag = bounded(msg.from_tag(), MAX_TAG, "From tag")?
            .ok_or(Refusal::BadRequest("missing From tag"))?;
        let to_tag = bounded(msg.to_tag(), MAX_TAG, "To tag")?;
        Ok(SubscribeRequest { call_id, from_tag, to_tag, event_id, expires })
    }

    /// `true` for a SUBSCRIBE inside an existing subscription (a refresh or
    /// an unsubscribe): it has a To tag.
    pub fn is_refresh(&self) -> bool {
        self.to_tag.is_some()
    }

    /// The key of the subscription this request names, with `local_tag`
    /// as our tag (the To tag of a refresh, or the one chosen for a new
    /// subscription).
    pub fn key(&self, local_tag: &str) -> SubscriptionKey {
        SubscriptionKey {
            call_id: self.call_id.clone(),
            local_tag: local_tag.to_owned(),
            remote_tag: self.from_tag.clone(),
            event_id: self.event_id.clone(),
        }
    }
}

/// The Event header's `id`, after checking that the package is `dialog`.
fn event_id(msg: &Message) -> Result<Option<String>, Refusal> {
    let mut events = msg.header_values(HeaderName::Event);
    let (Some(raw), None) = (events.next(), events.next()) else {
        return Err(Refusal::BadEvent);
    };
    let h = HeaderParams::split(raw).ok_or(Refusal::BadEvent)?;
    // Event types are tokens; compared without regard to case so that a
    // phone writing `Dialog` is served rather than refused.
    if !h.value.eq_ignore_ascii_case(EVENT_PACKAGE.as_bytes()) || h.repeated("id") {
        return Err(Refusal::BadEvent);
    }
    match h.get("id") {
        None => Ok(None),
        Some(None) => Err(Refusal::BadRequest("Event id without a value")),
        Some(Some(id)) => bounded(Some(id), MAX_EVENT_ID, "Event id"),
    }
}

/// `true` unless an Accept header is present and names neither
/// `application/dialog-info+xml` nor a range covering it.
fn accepts_dialog_info(msg: &Message) -> bool {
    if msg.header(HeaderName::Accept).is_none() {
        return true;
    }
    msg.values(HeaderName::Accept).any(|range| {
        let media = range.split(|&b| b == b';').next().unwrap_or_default();
        let media = sip_message::scan::trim(media);
        [CONTENT_TYPE.as_bytes(), b"application/*", b"*/*"]
            .iter()
            .any(|ok| media.eq_ignore_ascii_case(ok))
    })
}

/// A header value as an owned string, refused (400) when longer than `max`,
/// not UTF-8 or holding control characters.
fn bounded(v: Option<&[u8]>, max: usize, what: &'static str) -> Result<Option<String>, Refusal> {
    let Some(v) = v else { return Ok(None) };
    let bad = Refusal::BadRequest(what);
    if v.is_empty() || v.len() > max {
        return Err(bad);
    }
    let s = std::str::from_utf8(v).map_err(|_| bad)?;
    if s.chars().any(char::is_control) {
        return Err(bad);
    }
    Ok(Some(s.to_owned()))
}

/// A SUBSCRIBE refused: the status, the reason phrase and the header field
/// the answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed (says what).
    BadRequest(&'static str),
    /// 489 with `Allow-Events: dialog`: no Event, or another package.
    BadEvent,
    /// 406 with `Accept: application/dialog-info+xml`.
    NotAcceptable,
    /// 423 with `Min-Expires`: a non-zero Expires below the minimum.
    IntervalTooBrief {
        /// The shortest expiry taken, in seconds.
        min: u32,
    },
    /// 481: a refresh of no subscription we hold.
    NoSuchSubscription,
    /// 403: the subscriber holds as many subscriptions as it may. Not
    /// worth retrying until it ends some (RFC 3261 21.4.4).
    TooManyForSubscriber,
    /// 480 with `Retry-After`: the resource has as many watchers as it
    /// may; one may leave.
    TooManyWatchers {
        /// Seconds before trying again.
        retry_after: u32,
    },
    /// 503 with `Retry-After`: the notifier holds as many subscriptions as
    /// it may in all.
    Overloaded {
        /// Seconds before trying again.
        retry_after: u32,
    },
}

impl Refusal {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::BadEvent => 489,
            Refusal::NotAcceptable => 406,
            Refusal::IntervalTooBrief { .. } => 423,
            Refusal::NoSuchSubscription => 481,
            Refusal::TooManyForSubscriber => 403,
            Refusal::TooManyWatchers { .. } => 480,
            Refusal::Overloaded { .. } => 503,
        }
    }

    /// The reason phrase: the standard one, or what a limit was.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "Bad Request",
            Refusal::BadEvent => "Bad Event",
            Refusal::NotAcceptable => "Not Acceptable",
            Refusal::IntervalTooBrief { .. } => "Interval Too Brief",
            Refusal::NoSuchSubscription => "Call/Transaction Does Not Exist",
            Refusal::TooManyForSubscriber => "Too Many Subscriptions",
            Refusal::TooManyWatchers { .. } => "Too Many Watchers",
            Refusal::Overloaded { .. } => "Service Unavailable",
        }
    }

    /// The header field the answer must carry, if any.
    pub fn header(&self) -> Option<(HeaderName, String)> {
        match self {
            Refusal::BadEvent => Some((HeaderName::AllowEvents, EVENT_PACKAGE.to_owned())),
            Refusal::NotAcceptable => Some((HeaderName::Accept, CONTENT_TYPE.to_owned())),
            Refusal::IntervalTooBrief { min } => Some((HeaderName::MinExpires, min.to_string())),
            Refusal::TooManyWatchers { retry_after } | Refusal::Overloaded { retry_after } => {
                Some((HeaderName::RetryAfter, retry_after.to_string()))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest(what) => write!(f, "400 Bad Request ({what})"),
            r => write!(f, "{} {}", r.status(), r.reason_phrase()),
        }
    }
}

/// The answer to a SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeAnswer {
    /// 200 with `Expires: expires` (0 for an unsubscribe or a fetch).
    Accepted {
        /// The subscription.
        id: crate::SubscriptionId,
        /// The expiry granted, in seconds.
        expires: u32,
    },
    /// Refused.
    Refused(Refusal),
}

/// The `Subscription-State` of a NOTIFY (RFC 6665 section 8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionState {
    /// `active;expires=N`: N seconds left.
    Active {
        /// Seconds left.
        expires: u32,
    },
    /// `terminated;reason=R`: the last NOTIFY of the subscription.
    Terminated(TerminationReason),
}

impl SubscriptionState {
    /// `true` for the last NOTIFY of a subscription.
    pub fn is_terminated(&self) -> bool {
        matches!(self, SubscriptionState::Terminated(_))
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionState::Active { expires } => write!(f, "active;expires={expires}"),
            SubscriptionState::Terminated(r) => write!(f, "terminated;reason={}", r.as_str()),
        }
    }
}

/// Why a subscription ended (RFC 6665 section 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    /// It expired, or the subscriber unsubscribed (Expires: 0).
    Timeout,
    /// The notifier ended it (the subscriber's registration went): the
    /// subscriber may subscribe again at once.
    Deactivated,
    /// The watched resource no longer exists (extension or group deleted).
    Noresource,
}

impl TerminationReason {
    /// The `reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Timeout => "timeout",
            TerminationReason::Deactivated => "deactivated",
            TerminationReason::Noresource => "noresource",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn subscribe(extra: &str) -> Message {
        let text = format!(
            "SUBSCRIBE sip:test12@test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:test11@test>;tag=ft\r\nTo: <sip:test12@test>\r\nCall-ID: c1@h\r\nCSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    #[test]
    fn reads_a_dialog_subscribe() {
        let r = SubscribeRequest::from_message(&subscribe(
            "Event: dialog;id=7\r\nExpires: 1800\r\nAccept: application/dialog-info+xml, application/rlmi+xml\r\n",
        ))
        .unwrap();
        assert_eq!(r.call_id, "c1@h");
        assert_eq!(r.from_tag, "ft");
        assert_eq!(r.to_tag, None);
        assert!(!r.is_refresh());
        assert_eq!(r.event_id.as_deref(), Some("7"));
        assert_eq!(r.expires, Some(1800));
        let k = r.key("lt");
        assert_eq!((k.local_tag.as_str(), k.remote_tag.as_str()), ("lt", "ft"));
        // The package name in any case, no Accept, no Expires.
        let r = SubscribeRequest::from_message(&subscribe("Event: Dialog\r\n")).unwrap();
        assert_eq!((r.event_id, r.expires), (None, None));
        let r = SubscribeRequest::from_message(&subscribe("Event: dialog\r\nAccept: */*\r\n"));
        assert!(r.is_ok());
    }

    #[test]
    fn refuses_with_the_right_answer() {
        let refuse = |extra: &str| SubscribeRequest::from_message(&subscribe(extra)).unwrap_err();
        assert_eq!(refuse(""), Refusal::BadEvent);
        assert_eq!(refuse("Event: presence\r\n"), Refusal::BadEvent);
        assert_eq!(refuse("Event: dialog.winfo\r\n"), Refusal::BadEvent);
        assert_eq!(refuse("Event: dialog\r\nEvent: dialog\r\n"), Refusal::BadEvent);
        assert_eq!(refuse("Event: dialog;id=1;id=2\r\n"), Refusal::BadEvent);
        assert_eq!(refuse("Event: dialog;id\r\n"), Refusal::BadRequest("Event id without a value"));
        let long_id = format!("Event: dialog;id={}\r\n", "i".repeat(MAX_EVENT_ID + 1));
        assert_eq!(refuse(&long_id), Refusal::BadRequest("Event id"));
        assert_eq!(
            refuse("Event: dialog\r\nAccept: application/pidf+xml\r\n"),
            Refusal::NotAcceptable
        );
        assert_eq!(
            refuse("Event: dialog\r\nExpires: soon\r\n"),
            Refusal::BadRequest("malformed Expires")
        );
        let bad = refuse("Event: presence\r\n");
        assert_eq!(
            (bad.status(), bad.header()),
            (489, Some((HeaderName::AllowEvents, "dialog".into())))
        );
        assert_eq!(bad.to_string(), "489 Bad Event");
        let r = Refusal::IntervalTooBrief { min: 60 };
        assert_eq!(r.header(), Some((HeaderName::MinExpires, "60".into())));
        assert_eq!(Refusal::TooManyWatchers { retry_after: 30 }.header().unwrap().1, "30");
        assert_eq!(Refusal::TooManyForSubscriber.status(), 403);
        assert_eq!(Refusal::BadRequest("x").to_string(), "400 Bad Request (x)");
    }

    #[test]
    fn subscription_state_values() {
        assert_eq!(SubscriptionState::Active { expires: 59 }.to_string(), "active;expires=59");
        let t = SubscriptionState::Terminated(TerminationReason::Noresource);
        assert_eq!(t.to_string(), "terminated;reason=noresource");
        assert!(t.is_terminated());
        assert_eq!(TerminationReason::Deactivated.as_str(), "deactivated");
    }
}
