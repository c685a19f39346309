//! SIP request methods, and [`SUPPORTED`]: the one list of those forkswitch
//! implements.

use bytes::Bytes;
use std::fmt;

/// A SIP method. Methods are case-sensitive (RFC 3261 7.1): `invite` is an
/// extension method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261)
    Invite,
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// OPTIONS (RFC 3261)
    Options,
    /// REGISTER (RFC 3261)
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other token, kept as received.
    Extension(Bytes),
}

impl Method {
    /// Classifies a method token. Unknown tokens become [`Method::Extension`]
    /// holding `raw` (or a copy of `token` when `raw` is `None`).
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            other => Method::Extension(Bytes::copy_from_slice(other)),
        }
    }

    /// The token of a method this codec knows by name; `None` for an
    /// extension. `const`, so that tables can be derived from [`SUPPORTED`]
    /// at compile time.
    pub const fn known_token(&self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Extension(_) => return None,
        })
    }

    /// The method's token on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Extension(b) => b,
            known => known.known_token().map_or(&[], str::as_bytes),
        }
    }

    /// `true` for a method on [`SUPPORTED`].
    pub fn is_supported(&self) -> bool {
        SUPPORTED.iter().any(|(m, _)| m == self)
    }

    /// `true` when a request of this method inside a dialog is passed on to
    /// the other leg ([`InDialog::Relayed`] on [`SUPPORTED`]).
    pub fn is_relayed_in_dialog(&self) -> bool {
        SUPPORTED.iter().any(|(m, d)| m == self && *d == InDialog::Relayed)
    }

    /// `true` for an extension method this codec does not know.
    pub fn is_extension(&self) -> bool {
        matches!(self, Method::Extension(_))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What forkswitch does with a request of a supported method inside a
/// dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InDialog {
    /// Passed on to the other leg (a re-INVITE, UPDATE, INFO, OPTIONS).
    Relayed,
    /// Handled by the leg's own dialog or transaction (ACK, CANCEL, BYE,
    /// PRACK).
    Local,
    /// Never sent inside a dialog (REGISTER).
    Outside,
}

/// The one list of methods forkswitch implements, in `Allow` order, with
/// what its dialogs do with each. Every `Allow` header ([`allow`]), the
/// codec's 501 decision ([`crate::Policy::default`]), which in-dialog
/// requests the B2BUA relays ([`Method::is_relayed_in_dialog`]) and the
/// methods the switch counts derive from it, so they cannot disagree.
///
/// MESSAGE is not on it: the switch does not route pager-mode MESSAGE
/// (RFC 3428), so a MESSAGE gets 501 inside a dialog as well as outside.
pub const SUPPORTED: &[(Method, InDialog)] = &[
    (Method::Invite, InDialog::Relayed),
    (Method::Ack, InDialog::Local),
    (Method::Cancel, InDialog::Local),
    (Method::Bye, InDialog::Local),
    (Method::Options, InDialog::Relayed),
    (Method::Register, InDialog::Outside),
    (Method::Prack, InDialog::Local),
    (Method::Update, InDialog::Relayed),
    (Method::Info, InDialog::Relayed),
    (Method::Subscribe, InDialog::Local),
];

/// Option tags forkswitch supports: its `Supported` header, and the 420
/// decision ([`crate::Policy::default`]).
pub const SUPPORTED_OPTIONS: &[&str] = &["100rel"];

/// The `Allow` header value: the methods of [`SUPPORTED`], in order.
pub fn allow() -> String {
    let names: Vec<&str> = SUPPORTED.iter().filter_map(|(m, _)| m.known_token()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE"]
            .into_iter()
            .chain(["NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "invite", "FOO"])
        {
            let m = Method::from_token(t.as_bytes());
            assert_eq!(m.as_bytes(), t.as_bytes());
            assert_eq!(m.known_token().is_none(), m.is_extension(), "{t}");
        }
    }

    #[test]
    fn allow_lists_every_supported_method_once_in_order() {
        assert_eq!(
            allow(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, SUBSCRIBE"
        );
        let relayed: Vec<&str> = SUPPORTED
            .iter()
            .filter(|(m, _)| m.is_relayed_in_dialog())
            .filter_map(|(m, _)| m.known_token())
            .collect();
        assert_eq!(relayed, ["INVITE", "OPTIONS", "UPDATE", "INFO"]);
        assert!(!Method::Message.is_supported() && !Method::Message.is_relayed_in_dialog());
    }
}
