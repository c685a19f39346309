//! The option values of `offer` and `answer` (and `delete`'s flags), as
//! rtpengine's ng protocol document names them. Each is written the way
//! the document spells it; reading also takes the hyphenated spelling
//! (`trust-address` for `trust address`), as rtpengine does.

macro_rules! ng_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The value as written on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The value named `s` (spaces and hyphens are the same).
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| same_words(v.as_str(), s))
            }
        }
    };
}

/// `a` and `b` are equal when hyphens count as spaces.
fn same_words(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'-' { b' ' } else { c };
            n(x) == n(y)
        })
}

ng_values! {
    /// A string of the `flags` list of `offer` and `answer`.
    Flag {
        /// Use the addresses in the SDP (rtpengine's default).
        TrustAddress = "trust address",
        /// Use the SIP message's source (`received from`) instead.
        SipSourceAddress = "SIP source address",
        /// Symmetric RTP (the default).
        Symmetric = "symmetric",
        /// The endpoint sends from another port than it receives on.
        Asymmetric = "asymmetric",
        /// Drop packets from any source but the learned one.
        StrictSource = "strict source",
        /// Re-learn the endpoint when packets come from a new source.
        MediaHandover = "media handover",
        /// Keep local ports when the remote port changes.
        PortLatching = "port latching",
        /// Change local ports when the remote port changes, even with ICE.
        NoPortLatching = "no port latching",
        /// Add `a=mid` when the SDP has none (WebRTC needs it).
        GenerateMid = "generate mid",
        /// Forget what was learned about the endpoint (ICE, SRTP support).
        Reset = "reset",
        /// Mark the SDP so that rtpengine never rewrites it twice.
        LoopProtect = "loop protect",
        /// Leave out `a=rtcp`.
        NoRtcpAttribute = "no rtcp attribute",
        /// Write `a=rtcp` with its address.
        FullRtcpAttribute = "full rtcp attribute",
        /// Send empty packets to the peer until it sends (opens NATs).
        PierceNat = "pierce NAT",
        /// Keep the SDP's direction attributes as they are.
        OriginalSendrecv = "original sendrecv",
        /// Advertise trickle ICE.
        TrickleIce = "trickle ICE",
        /// Reject the ICE of this offer.
        RejectIce = "reject ICE",
    }
}

ng_values! {
    /// A part of the SDP that rtpengine rewrites (`replace` list).
    Replace {
        /// The address of the `o=` line.
        Origin = "origin",
        /// The session-level `c=` line.
        SessionConnection = "session connection",
        /// The `o=` version, increased whenever the SDP changes.
        SdpVersion = "SDP version",
        /// The `o=` user name, kept the same toward each endpoint.
        Username = "username",
        /// The `s=` line.
        SessionName = "session name",
        /// A zero address is replaced by a real one.
        ZeroAddress = "zero address",
        /// Increase the SDP version even when nothing changed.
        ForceIncrementSdpVersion = "force-increment-sdp-ver",
    }
}

ng_values! {
    /// What rtpengine does about ICE (`ICE` key).
    Ice {
        /// Strip ICE attributes.
        Remove = "remove",
        /// Strip them and make rtpengine the only candidate.
        Force = "force",
        /// `force` if the SDP had ICE, else nothing.
        Default = "default",
        /// Keep candidates, add rtpengine as a relay candidate.
        ForceRelay = "force-relay",
        /// Add ICE if absent, else add rtpengine as a low-priority candidate.
        Optional = "optional",
    }
}

ng_values! {
    /// DTLS-SRTP behaviour (`DTLS` key).
    Dtls {
        /// Never offer or accept DTLS-SRTP.
        Off = "off",
        /// Prefer the passive (server) role.
        Passive = "passive",
        /// Prefer the active (client) role.
        Active = "active",
    }
}

ng_values! {
    /// SDES behaviour (`SDES` list).
    Sdes {
        /// Never offer SDES.
        Off = "off",
        /// Add no crypto suite that was not offered.
        Nonew = "nonew",
        /// Keep base64 padding in keys.
        Pad = "pad",
        /// Add the key lifetime parameter.
        Lifetime = "lifetime",
    }
}

ng_values! {
    /// rtcp-mux behaviour (`rtcp-mux` list).
    RtcpMux {
        /// Always offer rtcp-mux.
        Offer = "offer",
        /// Offer it as if already accepted (no separate RTCP port).
        Require = "require",
        /// Do not pass an offered rtcp-mux on, but accept it back.
        Demux = "demux",
        /// Accept rtcp-mux and pass the offer on.
        Accept = "accept",
        /// Reject an offered rtcp-mux.
        Reject = "reject",
    }
}

ng_values! {
    /// The transport protocol written into the SDP (`transport protocol`).
    TransportProtocol {
        /// Plain RTP.
        RtpAvp = "RTP/AVP",
        /// RTP with RTCP feedback.
        RtpAvpf = "RTP/AVPF",
        /// SRTP (SDES keys).
        RtpSavp = "RTP/SAVP",
        /// SRTP with RTCP feedback.
        RtpSavpf = "RTP/SAVPF",
        /// DTLS-SRTP.
        UdpTlsRtpSavp = "UDP/TLS/RTP/SAVP",
        /// DTLS-SRTP with RTCP feedback: what browsers speak (RFC 8834).
        UdpTlsRtpSavpf = "UDP/TLS/RTP/SAVPF",
    }
}

ng_values! {
    /// A string of `delete`'s `flags` list.
    DeleteFlag {
        /// Answer `error` (not a warning) when nothing matched.
        Fatal = "fatal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(Flag::parse("trust-address"), Some(Flag::TrustAddress));
        assert_eq!(Flag::parse("trust address"), Some(Flag::TrustAddress));
        assert_eq!(Flag::parse("generate-mid"), Some(Flag::GenerateMid));
        assert_eq!(Flag::parse("Trust address"), None, "values are case-sensitive");
        assert_eq!(Replace::parse("session-connection"), Some(Replace::SessionConnection));
        assert_eq!(Ice::parse("force relay"), Some(Ice::ForceRelay));
        assert_eq!(
            TransportProtocol::parse("UDP/TLS/RTP/SAVPF"),
            Some(TransportProtocol::UdpTlsRtpSavpf)
        );
        for f in Flag::ALL {
            assert_eq!(Flag::parse(f.as_str()), Some(*f));
        }
    }
}
