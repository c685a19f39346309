//! The `[media]` section of the configuration and each destination's
//! `media` setting: what the operator writes (serde), checked into what the
//! switch runs with. A problem comes back as a [`SettingsError`] naming the
//! key, so that the loader can add the file and line.

use crate::profile::Profile;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The most rtpengine instances one switch drives.
pub const MAX_INSTANCES: usize = 64;
/// The largest weight of an instance.
pub const MAX_WEIGHT: u32 = 1000;

/// `[media]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// `"off"` (default: SDP passes end to end) or `"rtpengine"`.
    #[serde(default)]
    pub mode: MediaMode,
    /// ng control addresses, `"IP:port"` or `"IP:port=weight"` (weight
    /// 1..=1000, default 1; IPv6 as `"[::1]:2223"`).
    #[serde(default)]
    pub rtpengine: Vec<String>,
    /// How long to wait for a reply before sending the request again.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How many times a request is sent again to one instance before the
    /// next instance is tried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How often an instance marked down is pinged.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// What a call gets when no rtpengine answers.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Whether calls are anchored unless their destination says otherwise.
    #[serde(default = "default_anchor")]
    pub anchor: bool,
    /// The profile of legs whose destination names none.
    #[serde(default)]
    pub profile: Profile,
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    2
}
fn default_probe_interval_ms() -> u64 {
    5000
}
fn default_anchor() -> bool {
    true
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            mode: MediaMode::Off,
            rtpengine: Vec::new(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            probe_interval_ms: default_probe_interval_ms(),
            on_failure: OnFailure::default(),
            anchor: default_anchor(),
            profile: Profile::default(),
        }
    }
}

/// `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaMode {
    /// No media anchoring.
    #[default]
    Off,
    /// Anchor media through rtpengine.
    Rtpengine,
}

/// `on_failure`: a call whose media no rtpengine anchors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Refuse it: 503 to the caller.
    #[default]
    Reject,
    /// Let it through with its SDP untouched.
    Passthrough,
}

/// One configured rtpengine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Its ng control address.
    pub addr: SocketAddr,
    /// Its share of new calls, relative to the others.
    pub weight: u32,
}

/// The rtpengine side of a checked `[media]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpengineSettings {
    /// The instances, in the configured order (failover order).
    pub instances: Vec<InstanceSpec>,
    /// Reply timeout per attempt.
    pub timeout: Duration,
    /// Retransmissions per instance.
    pub retries: u32,
    /// Ping interval of an instance marked down.
    pub probe_interval: Duration,
    /// What a call gets when no rtpengine answers.
    pub on_failure: OnFailure,
}

impl RtpengineSettings {
    /// Settings for `instances` with the defaults of `[media]`.
    pub fn new(instances: Vec<InstanceSpec>) -> RtpengineSettings {
        let d = MediaSection::default();
        RtpengineSettings {
            instances,
            timeout: Duration::from_millis(d.timeout_ms),
            retries: d.retries,
            probe_interval: Duration::from_millis(d.probe_interval_ms),
            on_failure: d.on_failure,
        }
    }
}

/// What a destination's media gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchoring {
    /// SDP passes untouched; media flows end to end.
    Direct,
    /// Media is anchored in rtpengine, the leg speaking this profile.
    Anchored(Profile),
}

/// A checked `[media]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSettings {
    /// No anchoring at all.
    Off,
    /// Anchoring through rtpengine.
    Rtpengine {
        /// The instances and the client's timing.
        rtpengine: RtpengineSettings,
        /// What a destination gets unless it says otherwise.
        default: Anchoring,
    },
}

impl MediaSettings {
    /// What a destination with `media` gets (Direct when anchoring is off).
    pub fn anchoring(&self, media: Option<&DestinationMedia>) -> Anchoring {
        match self {
            MediaSettings::Off => Anchoring::Direct,
            MediaSettings::Rtpengine { default, .. } => {
                media.map_or(*default, |m| m.resolve(*default))
            }
        }
    }
}

/// A problem in `[media]` or a destination's `media`: the key (relative to
/// its table) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The key, e.g. `rtpengine` or `timeout_ms`.
    pub key: &'static str,
    /// Why its value is refused.
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for SettingsError {}

fn refuse(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError { key, reason: reason.into() }
}

/// Reads `"IP:port"` or `"IP:port=weight"`.
pub fn parse_instance(s: &str) -> Result<InstanceSpec, String> {
    let (addr, weight) = match s.rsplit_once('=') {
        Some((a, w)) => {
            let w: u32 =
                w.trim().parse().map_err(|_| format!("{s:?}: weight {w:?} is not a number"))?;
            if !(1..=MAX_WEIGHT).contains(&w) {
                return Err(format!("{s:?}: weight must be 1..={MAX_WEIGHT}"));
            }
            (a, w)
        }
        None => (s, 1),
    };
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not IP:port (an IP address, not a host name)"))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("{s:?}: needs a real address and a port"));
    }
    Ok(InstanceSpec { addr, weight })
}

impl MediaSection {
    /// Checks the section into what the switch runs with.
    pub fn validate(&self) -> Result<MediaSettings, SettingsError> {
        let instances = self.instances()?;
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(refuse("timeout_ms", "must be 10..=60000"));
        }
        if self.retries > 10 {
            return Err(refuse("retries", "must be 0..=10"));
        }
        if !(100..=3_600_000).contains(&self.probe_interval_ms) {
            return Err(refuse("probe_interval_ms", "must be 100..=3600000"));
        }
        if self.mode == MediaMode::Off {
            return Ok(MediaSettings::Off);
        }
        if instances.is_empty() {
            return Err(refuse("rtpengine", "mode = \"rtpengine\" needs at least one ng address"));
        }
        let default =
            if self.anchor { Anchoring::Anchored(self.profile) } else { Anchoring::Direct };
        Ok(MediaSettings::Rtpengine {
            rtpengine: RtpengineSettings {
                instances,
                timeout: Duration::from_millis(self.timeout_ms),
                retries: self.retries,
                probe_interval: Duration::from_millis(self.probe_interval_ms),
                on_failure: self.on_failure,
            },
            default,
        })
    }

    fn instances(&self) -> Result<Vec<InstanceSpec>, SettingsError> {
        if self.rtpengine.len() > MAX_INSTANCES {
            return Err(refuse("rtpengine", format!("at most {MAX_INSTANCES} instances")));
        }
        let mut out: Vec<InstanceSpec> = Vec::with_capacity(self.rtpengine.len());
        for s in &self.rtpengine {
            let i = parse_instance(s).map_err(|r| refuse("rtpengine", r))?;
            if out.iter().any(|o| o.addr == i.addr) {
                return Err(refuse("rtpengine", format!("{} is listed twice", i.addr)));
            }
            out.push(i);
        }
        Ok(out)
    }
}

/// A destination's `media` (extension, carrier, ring-group destination),
/// e.g. `media = { profile = "webrtc" }` or `media = { anchor = false }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationMedia {
    /// Anchor this destination's legs (default: `[media] anchor`).
    #[serde(default)]
    pub anchor: Option<bool>,
    /// Their profile (default: `[media] profile`).
    #[serde(default)]
    pub profile: Option<Profile>,
}

impl DestinationMedia {
    /// Checks it; the key is relative to the destination (`media.profile`).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.anchor == Some(false) && self.profile.is_some() {
            return Err(refuse("media.profile", "has no effect with anchor = false"));
        }
        Ok(())
    }

    /// What this destination gets when the default is `default`.
    pub fn resolve(&self, default: Anchoring) -> Anchoring {
        let fallback = match default {
            Anchoring::Anchored(p) => p,
            Anchoring::Direct => Profile::Auto,
        };
        match (self.anchor, self.profile) {
            (Some(false), _) => Anchoring::Direct,
            (Some(true), p) => Anchoring::Anchored(p.unwrap_or(fallback)),
            (None, Some(p)) => Anchoring::Anchored(p),
            (None, None) => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<MediaSection, toml::de::Error> {
        #[derive(Deserialize)]
        struct File {
            media: MediaSection,
        }
        toml::from_str::<File>(text).map(|f| f.media)
    }

    fn check(text: &str) -> Result<MediaSettings, SettingsError> {
        section(text).expect("parses").validate()
    }

    #[test]
    fn off_by_default() {
        assert_eq!(MediaSection::default().validate(), Ok(MediaSettings::Off));
        assert_eq!(check("[media]\n"), Ok(MediaSettings::Off));
        assert_eq!(MediaSettings::Off.anchoring(None), Anchoring::Direct);
    }

    #[test]
    fn a_full_section() {
        let s = check(
            r#"[media]
mode = "rtpengine"
rtpengine = ["127.0.0.1:2223", "127.0.0.2:2223=3", "[::1]:2224"]
timeout_ms = 500
retries = 1
on_failure = "passthrough"
profile = "webrtc"
"#,
        )
        .unwrap();
        let MediaSettings::Rtpengine { rtpengine, default } = s else { panic!("{s:?}") };
        assert_eq!(default, Anchoring::Anchored(Profile::Webrtc));
        assert_eq!(rtpengine.timeout, Duration::from_millis(500));
        assert_eq!(rtpengine.retries, 1);
        assert_eq!(rtpengine.on_failure, OnFailure::Passthrough);
        let w: Vec<_> =
            rtpengine.instances.iter().map(|i| (i.addr.to_string(), i.weight)).collect();
        assert_eq!(
            w,
            [("127.0.0.1:2223".into(), 1), ("127.0.0.2:2223".into(), 3), ("[::1]:2224".into(), 1)]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("mode = \"rtpengine\"", "rtpengine"),
            ("mode = \"rtpengine\"\nrtpengine = [\"rtp.example:2223\"]", "rtpengine"),
            ("rtpengine = [\"127.0.0.1:2223=0\"]", "rtpengine"),
            ("rtpengine = [\"127.0.0.1:2223=x\"]", "rtpengine"),
            ("rtpengine = [\"127.0.0.1:0\"]", "rtpengine"),
            ("rtpengine = [\"0.0.0.0:2223\"]", "rtpengine"),
            ("rtpengine = [\"127.0.0.1:1\", \"127.0.0.1:1=2\"]", "rtpengine"),
            ("timeout_ms = 0", "timeout_ms"),
            ("retries = 11", "retries"),
            ("probe_interval_ms = 1", "probe_interval_ms"),
        ];
        for (body, key) in cases {
            let e = check(&format!("[media]\n{body}\n")).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
            assert!(!e.reason.is_empty());
        }
        assert!(section("[media]\nmode = \"rtpproxy\"\n").is_err(), "unknown mode");
        assert!(section("[media]\nprofile = \"sip\"\n").is_err(), "unknown profile");
        assert!(section("[media]\ntimeout = 5\n").is_err(), "unknown key");
    }

    #[test]
    fn the_media_bench_config_is_valid() {
        let text = include_str!("../../../tests/bench/media/forkswitch.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        let media: MediaSection = table["media"].clone().try_into().unwrap();
        let MediaSettings::Rtpengine { rtpengine, default } = media.validate().unwrap() else {
            panic!("the media bench anchors")
        };
        assert_eq!(rtpengine.instances[0].addr, "127.0.0.1:2223".parse().unwrap());
        assert_eq!(default, Anchoring::Anchored(Profile::Rtp));
    }

    #[test]
    fn destinations() {
        let on = MediaSettings::Rtpengine {
            rtpengine: RtpengineSettings::new(vec![parse_instance("127.0.0.1:1").unwrap()]),
            default: Anchoring::Anchored(Profile::Auto),
        };
        let d = |anchor, profile| DestinationMedia { anchor, profile };
        assert_eq!(on.anchoring(None), Anchoring::Anchored(Profile::Auto));
        assert_eq!(on.anchoring(Some(&d(Some(false), None))), Anchoring::Direct);
        assert_eq!(
            on.anchoring(Some(&d(None, Some(Profile::Rtp)))),
            Anchoring::Anchored(Profile::Rtp)
        );
        assert_eq!(MediaSettings::Off.anchoring(Some(&d(Some(true), None))), Anchoring::Direct);
        let direct_default = Anchoring::Direct;
        assert_eq!(d(Some(true), None).resolve(direct_default), Anchoring::Anchored(Profile::Auto));
        assert_eq!(d(None, None).resolve(direct_default), Anchoring::Direct);
        assert_eq!(d(Some(false), Some(Profile::Rtp)).validate().unwrap_err().key, "media.profile");
        assert_eq!(d(Some(true), Some(Profile::SrtpSdes)).validate(), Ok(()));
    }
}
