//! The one list of SIP methods the switch supports. It makes the codec's
//! 501 decision, every `Allow` header the switch sends (OPTIONS, 405, 501,
//! and the B2BUA's dialog messages) and which in-dialog requests the B2BUA
//! relays: one list, so they cannot disagree.
//!
//! MESSAGE is not on it: the switch does not route pager-mode MESSAGE
//! (RFC 3428), so a MESSAGE gets 501 inside a dialog as well as outside.

use sip_message::{Method, Policy};

/// Supported methods, in `Allow` order.
pub fn supported() -> Vec<Method> {
    use Method::*;
    vec![Invite, Ack, Cancel, Bye, Options, Register, Prack, Update, Info]
}

/// The `Allow` header value.
pub fn allow() -> String {
    let names: Vec<String> =
        supported().iter().map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned()).collect();
    names.join(", ")
}

/// Option tags the switch supports (`Supported`, and the 420 decision).
pub const SUPPORTED_OPTIONS: &str = "100rel";

/// The codec policy matching [`supported`] and [`SUPPORTED_OPTIONS`].
pub fn policy() -> Policy {
    Policy {
        methods: supported(),
        supported: SUPPORTED_OPTIONS.split(", ").map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn allow_lists_every_supported_method_once() {
        assert_eq!(
            super::allow(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO"
        );
        assert_eq!(super::policy().methods, super::supported());
    }
}
