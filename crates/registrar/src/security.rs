//! Security events: what an operator (or fail2ban) must see of attacks on
//! authentication. The [`crate::Registrar`] queues them as they happen;
//! its owner drains them ([`crate::Registrar::poll_security`]) and logs
//! them. A banned source's further requests are not events (one line per
//! ban, not one per packet of a flood).

use std::net::IpAddr;

/// One security event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A request's digest credentials were wrong or malformed.
    AuthFailed {
        /// The source address.
        src: IpAddr,
        /// The user the request named (To of a REGISTER, From of an INVITE).
        user: String,
        /// `REGISTER` or `INVITE`.
        method: &'static str,
    },
    /// That failure banned the source.
    Banned {
        /// The source as counted (an IPv6 source by its /64).
        src: IpAddr,
        /// The user of the failure that banned it.
        user: String,
        /// Its method.
        method: &'static str,
        /// How long the ban lasts, seconds.
        secs: u64,
    },
    /// A source sent more requests per second than allowed and is banned
    /// for a while (its requests dropped).
    RateLimited {
        /// The source as counted (an IPv6 source by its /64).
        src: IpAddr,
        /// The method of the request that passed the rate.
        method: String,
        /// How long the ban lasts, seconds.
        secs: u64,
    },
    /// A ban ended.
    Unbanned {
        /// The source as counted.
        src: IpAddr,
    },
}

impl SecurityEvent {
    /// The event's name in the log: `auth_failed`, `banned`, `unbanned`,
    /// `rate_limited`.
    pub fn name(&self) -> &'static str {
        match self {
            SecurityEvent::AuthFailed { .. } => "auth_failed",
            SecurityEvent::Banned { .. } => "banned",
            SecurityEvent::Unbanned { .. } => "unbanned",
            SecurityEvent::RateLimited { .. } => "rate_limited",
        }
    }
}

/// Longest user name an event carries, bytes.
pub const MAX_USER: usize = 64;

/// `user` as an event may carry it into a log line: at most [`MAX_USER`]
/// bytes of printable ASCII other than quotes and backslashes, each other
/// byte as `?`. A name from the network can then neither forge a log line
/// (a newline and a fake `src=`) nor make one huge.
pub fn loggable_user(user: &str) -> String {
    user.bytes()
        .take(MAX_USER)
        .map(|b| match b {
            b'"' | b'\\' => '?',
            0x21..=0x7e => b as char,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_cannot_forge_log_lines() {
        assert_eq!(loggable_user("alice"), "alice");
        assert_eq!(loggable_user("a\nsrc=10.0.0.1 \"x"), "a?src=10.0.0.1??x");
        assert_eq!(loggable_user(&"x".repeat(1000)).len(), MAX_USER);
        assert_eq!(loggable_user("jos\u{e9}"), "jos??");
    }
}
