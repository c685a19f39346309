//! Media profiles: what the SDP a leg receives must look like, and the ng
//! options that make rtpengine write it so. The options of an `offer` or
//! `answer` shape the SDP going *toward* a leg, so they follow the profile
//! of the leg that receives the SDP (the callee's for the offer, the
//! caller's for the answer).

use crate::command::SdpOptions;
use crate::options::{Dtls, Flag, Ice, Replace, RtcpMux, Sdes, TransportProtocol};
use serde::Deserialize;
use sip_message::Transport;
use std::fmt;

/// A media profile as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// WebRTC for a leg over WebSocket (WS/WSS), plain RTP otherwise.
    #[default]
    Auto,
    /// Plain RTP (`RTP/AVP`), no ICE, no DTLS.
    Rtp,
    /// SRTP keyed by SDES (`RTP/SAVP`, `a=crypto`), no ICE, no DTLS.
    SrtpSdes,
    /// WebRTC: ICE, DTLS-SRTP, rtcp-mux, `a=mid`.
    Webrtc,
}

impl Profile {
    /// The profile as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Auto => "auto",
            Profile::Rtp => "rtp",
            Profile::SrtpSdes => "srtp-sdes",
            Profile::Webrtc => "webrtc",
        }
    }

    /// What a leg over `transport` gets.
    pub fn for_leg(self, transport: Transport) -> LegMedia {
        match self {
            Profile::Auto if matches!(transport, Transport::Ws | Transport::Wss) => {
                LegMedia::Webrtc
            }
            Profile::Auto | Profile::Rtp => LegMedia::Rtp,
            Profile::SrtpSdes => LegMedia::SrtpSdes,
            Profile::Webrtc => LegMedia::Webrtc,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media one leg speaks (a [`Profile`] resolved for the leg).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegMedia {
    /// Plain RTP.
    Rtp,
    /// SDES-keyed SRTP.
    SrtpSdes,
    /// WebRTC (ICE, DTLS-SRTP, rtcp-mux).
    Webrtc,
}

/// Which half of the offer/answer exchange the SDP is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpRole {
    /// An offer (INVITE, re-INVITE, UPDATE, or a 2xx to an offerless INVITE).
    Offer,
    /// An answer.
    Answer,
}

impl LegMedia {
    /// The ng options for an SDP `role` sent toward a leg of this media.
    /// The origin and session connection always become rtpengine's.
    pub fn options(self, role: SdpRole) -> SdpOptions {
        let mut o = SdpOptions {
            replace: vec![Replace::Origin, Replace::SessionConnection],
            ..SdpOptions::default()
        };
        match self {
            LegMedia::Rtp | LegMedia::SrtpSdes => {
                o.ice = Some(Ice::Remove);
                o.dtls = Some(Dtls::Off);
                o.rtcp_mux = vec![RtcpMux::Demux];
                o.transport_protocol = Some(if self == LegMedia::Rtp {
                    TransportProtocol::RtpAvp
                } else {
                    TransportProtocol::RtpSavp
                });
            }
            LegMedia::Webrtc => {
                o.ice = Some(Ice::Force);
                o.dtls = Some(Dtls::Passive);
                o.sdes = vec![Sdes::Off];
                o.transport_protocol = Some(TransportProtocol::UdpTlsRtpSavpf);
                o.flags = vec![Flag::GenerateMid];
                o.rtcp_mux = vec![match role {
                    SdpRole::Offer => RtcpMux::Offer,
                    SdpRole::Answer => RtcpMux::Require,
                }];
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_webrtc_for_websocket_legs() {
        for t in [Transport::Ws, Transport::Wss] {
            assert_eq!(Profile::Auto.for_leg(t), LegMedia::Webrtc);
        }
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            assert_eq!(Profile::Auto.for_leg(t), LegMedia::Rtp);
        }
        assert_eq!(Profile::Webrtc.for_leg(Transport::Udp), LegMedia::Webrtc);
        assert_eq!(Profile::Rtp.for_leg(Transport::Wss), LegMedia::Rtp);
        assert_eq!(Profile::SrtpSdes.for_leg(Transport::Tls), LegMedia::SrtpSdes);
    }

    #[test]
    fn options_per_the_issue() {
        let w = LegMedia::Webrtc.options(SdpRole::Offer);
        assert_eq!(w.ice, Some(Ice::Force));
        assert_eq!(w.dtls, Some(Dtls::Passive));
        assert_eq!(w.rtcp_mux, [RtcpMux::Offer]);
        assert_eq!(w.flags, [Flag::GenerateMid]);
        assert_eq!(w.transport_protocol, Some(TransportProtocol::UdpTlsRtpSavpf));
        let r = LegMedia::Rtp.options(SdpRole::Answer);
        assert_eq!(r.ice, Some(Ice::Remove));
        assert_eq!(r.dtls, Some(Dtls::Off));
        assert_eq!(r.rtcp_mux, [RtcpMux::Demux]);
        assert_eq!(r.transport_protocol, Some(TransportProtocol::RtpAvp));
        assert_eq!(
            LegMedia::SrtpSdes.options(SdpRole::Offer).transport_protocol,
            Some(TransportProtocol::RtpSavp)
        );
    }
}
