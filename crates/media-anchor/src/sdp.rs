//! What the switch reads of the SDP rtpengine gives a leg: the address of
//! its first audio stream, for the leg's call record.

use std::net::{IpAddr, SocketAddr};

/// The `IP:port` of the first `m=audio` of `sdp`: its own `c=` line, else
/// the session's. `None` without an audio stream, an address or a port.
pub fn audio_address(sdp: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(sdp).ok()?;
    let (mut session, mut media, mut port) = (None, None, None);
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break;
            }
            port = m.strip_prefix("audio ").and_then(|r| r.split(' ').next()?.parse::<u16>().ok());
        } else if let Some(c) = line.strip_prefix("c=IN ") {
            let ip = c.split(' ').nth(1).and_then(|a| a.parse::<IpAddr>().ok());
            if port.is_some() {
                media = media.or(ip);
            } else if media.is_none() {
                session = ip;
            }
        }
    }
    Some(SocketAddr::new(media.or(session)?, port?))
}

#[cfg(test)]
mod tests {
    use super::audio_address;

    #[test]
    fn the_first_audio_stream_with_its_own_or_the_session_address() {
        let session = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        assert_eq!(audio_address(session), Some("192.0.2.1:30000".parse().unwrap()));
        let own = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP6 ::1\r\n\
                    m=audio 40000 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\n";
        assert_eq!(audio_address(own), Some("[::1]:30002".parse().unwrap()));
    }

    #[test]
    fn no_audio_no_address() {
        assert_eq!(audio_address(b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 9 RTP/AVP 96\r\n"), None);
        assert_eq!(audio_address(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
        assert_eq!(audio_address(b"v=0\r\nc=IN IP4 x\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
        assert_eq!(audio_address(b"m=audio 99999 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n"), None);
        assert_eq!(audio_address(&[0xff, 0xfe]), None);
    }
}
