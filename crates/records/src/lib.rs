//! # records: what forkswitch remembers about calls
//!
//! The groupcall and call records, in the JSON shape of the VoIPBin API
//! (`../shared/spec/README.md`): addresses, statuses that only move forward,
//! nil UUIDs for "none", and `tm_*` timestamps written
//! `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) with `9999-01-01 00:00:00.000000`
//! meaning "not yet". Plain data: no I/O, no clock (times are passed in).
#![deny(missing_docs)]

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// The nil UUID, meaning "none" in every id field.
pub const NIL: Uuid = Uuid::nil();

/// A point in time, microsecond precision, UTC; or "not yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The "not happened yet" sentinel, `9999-01-01 00:00:00.000000`.
    pub const NOT_YET: Timestamp = Timestamp(253_370_764_800_000_000);

    /// From microseconds since the Unix epoch.
    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    /// From a `SystemTime` (the caller reads the clock, not this crate).
    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        let us = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Timestamp(us)
    }

    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// `true` for the sentinel.
    pub fn is_not_yet(self) -> bool {
        self == Self::NOT_YET
    }

    /// Parses `YYYY-MM-DD HH:MM:SS.ffffff`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let dt = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok()?;
        Some(Timestamp(dt.and_utc().timestamp_micros()))
    }
}

/// In the OpenAPI document: a string `YYYY-MM-DD HH:MM:SS.ffffff` (UTC).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$"))
            .description(Some(
                "UTC time, `YYYY-MM-DD HH:MM:SS.ffffff`; `9999-01-01 00:00:00.000000` means \
                 not happened yet.",
            ))
            .examples(["2023-04-21 15:33:28.569053"])
            .build()
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

impl Default for Timestamp {
    fn default() -> Self {
        Self::NOT_YET
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic
/// Gregorian; H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand: records are formatted on every change, and
        // chrono's format-string interpretation showed in profiles.
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        if !(0..=9999).contains(&y) {
            return f.write_str("9999-01-01 00:00:00.000000");
        }
        write!(
            f,
            "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(Timestamp::NOT_YET);
        }
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {s:?}")))
    }
}

/// What an [`Address`] points at.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressType {
    /// A phone account `ext@domain`: every registered contact.
    #[serde(alias = "extension")]
    Endpoint,
    /// An E.164 number, routed to a carrier.
    Tel,
    /// A SIP URI.
    Sip,
    /// A stored ring group (nested groupcall), by id or number.
    Groupcall,
}

/// A party: caller, callee or destination.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Kind of target.
    #[serde(rename = "type")]
    pub kind: AddressType,
    /// `test11@test`, `+15551234567`, `sip:bob@example.com`, a group id.
    pub target: String,
    /// Display name of the target.
    #[serde(default)]
    pub target_name: String,
    /// Display name (caller-ID name on a source).
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
}

impl Address {
    /// An address with only type and target.
    pub fn new(kind: AddressType, target: impl Into<String>) -> Address {
        Address {
            kind,
            target: target.into(),
            target_name: String::new(),
            name: String::new(),
            detail: String::new(),
        }
    }
}

/// How destinations are rung. Empty means `ring_all`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingMethod {
    /// All at once; the first answer wins.
    #[default]
    #[serde(alias = "")]
    RingAll,
    /// One after another, in list order.
    Linear,
    /// The first, then the first two, then the first three...: each step
    /// adds the next destination for its ring timeout, the others keep
    /// ringing (FreePBX `memoryhunt`).
    MemoryHunt,
    /// One after another, starting after the member that answered this
    /// group's last answered call, wrapping around (Asterisk `rrmemory`).
    RoundRobin,
    /// One after another, the member that answered a call of this group
    /// longest ago (or never) first (Asterisk `leastrecent`).
    LeastRecent,
    /// One after another, in a random order.
    Random,
}

/// What happens when a destination answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMethod {
    /// Every other leg is cancelled or hung up.
    #[default]
    #[serde(alias = "")]
    HangupOthers,
}

/// Groupcall status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum GroupcallStatus {
    /// From creation until it ends (also while answered).
    #[default]
    Progressing,
    /// A hangup was asked for; legs are going away.
    Hangingup,
    /// Every leg has ended.
    Hangup,
}

/// A groupcall record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Groupcall {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub customer_id: Uuid,
    /// The caller.
    pub source: Address,
    /// What to ring, in order.
    pub destinations: Vec<Address>,
    /// `ring_all` or `linear`.
    pub ring_method: RingMethod,
    /// `hangup_others`.
    pub answer_method: AnswerMethod,
    /// Status.
    pub status: GroupcallStatus,
    /// The leg that answered; nil until then; set once.
    pub answer_call_id: Uuid,
    /// The child groupcall the answer came through; nil otherwise.
    pub answer_groupcall_id: Uuid,
    /// One call per leg dialed by this groupcall.
    pub call_ids: Vec<Uuid>,
    /// Child groupcalls (endpoint and nested-group destinations).
    pub groupcall_ids: Vec<Uuid>,
    /// The inbound call served, if any.
    pub master_call_id: Uuid,
    /// The parent groupcall of a child.
    pub master_groupcall_id: Uuid,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
    /// Deleted.
    pub tm_delete: Timestamp,
    /// The cluster node that carries it (`[cluster] node_id`); empty
    /// without a cluster (and then not in the JSON).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
}

/// Call status: only moves forward.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// INVITE sent (or received), nothing back yet.
    #[default]
    Dialing,
    /// 180/183 seen.
    Ringing,
    /// Answered.
    Progressing,
    /// Being cancelled (before answer).
    Canceling,
    /// Being hung up (after answer).
    Terminating,
    /// Over.
    Hangup,
}

impl CallStatus {
    /// `true` when moving from `self` to `next` is allowed (forward only:
    /// dialing -> ringing -> progressing -> terminating -> hangup, or
    /// canceling -> hangup from dialing/ringing).
    pub fn can_become(self, next: CallStatus) -> bool {
        use CallStatus::*;
        match (self, next) {
            (Hangup, _) => false,
            (_, Hangup) => true,
            (Dialing, Ringing | Progressing | Canceling | Terminating) => true,
            (Ringing, Progressing | Canceling | Terminating) => true,
            (Progressing, Terminating) => true,
            _ => false,
        }
    }
}

/// Call direction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the switch.
    #[default]
    Incoming,
    /// Out of the switch (a leg).
    Outgoing,
}

/// Who ended a call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupBy {
    /// Not ended.
    #[default]
    #[serde(rename = "")]
    None,
    /// The switch (CANCEL as a loser, API hangup).
    Local,
    /// The far end.
    Remote,
}

/// Why a call ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupReason {
    /// Not ended.
    #[default]
    #[serde(rename = "")]
    None,
    /// Normal end of a conversation.
    Normal,
    /// Failed: a final failure status not named below.
    Failed,
    /// Busy (486/600).
    Busy,
    /// Cancelled (a CANCEL, 487, an answer elsewhere).
    Cancel,
    /// A limit of the switch's ran out (the fork's overall time, a leg's
    /// cleanup); never a status.
    Timeout,
    /// Not answered: its ring time ran out, 408, 480, a 3xx, or no response
    /// at all.
    Noanswer,
    /// Could not be dialed.
    Dialout,
}

/// The status an INVITE that got no response at all (Timer B, a transport
/// error) counts as: 408 Request Timeout (RFC 3261 8.1.3.1, 16.7).
pub const NO_RESPONSE: u16 = 408;

impl HangupReason {
    /// Why a call ended with the final `status` it sent or received
    /// ([`NO_RESPONSE`] for none at all): the one place a SIP status becomes a hangup reason, for legs
    /// and callers alike. 486 and 600 are busy, 487 a cancel, 408 and 480
    /// no answer (a 3xx too: redirects are not followed, it counts as 480),
    /// a 2xx normal, anything else a failure. (VoIPBin's `timeout` is a
    /// limit on an answered call, never a status.)
    pub fn for_status(status: u16) -> HangupReason {
        match status {
            200..=299 => HangupReason::Normal,
            486 | 600 => HangupReason::Busy,
            487 => HangupReason::Cancel,
            300..=399 | 408 | 480 => HangupReason::Noanswer,
            _ => HangupReason::Failed,
        }
    }
}

/// A call record: one per leg, and one per inbound call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub customer_id: Uuid,
    /// The groupcall that dialed this leg; nil for an inbound call.
    pub groupcall_id: Uuid,
    /// From.
    pub source: Address,
    /// To.
    pub destination: Address,
    /// Direction.
    pub direction: Direction,
    /// Status.
    pub status: CallStatus,
    /// Who hung up.
    pub hangup_by: HangupBy,
    /// Why.
    pub hangup_reason: HangupReason,
    /// The SIP Call-ID of this leg on the wire.
    pub sip_call_id: String,
    /// First ringing.
    pub tm_ringing: Timestamp,
    /// Answered.
    pub tm_progressing: Timestamp,
    /// Ended.
    pub tm_hangup: Timestamp,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
    /// Deleted.
    pub tm_delete: Timestamp,
    /// The cluster node that carries the call and writes this record
    /// (`[cluster] node_id`); empty without a cluster (and then not in the
    /// JSON).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    /// A leg to a phone registered on another node: that node, which
    /// relayed the leg over its flow to the phone. Empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub relay_node_id: String,
    /// The rtpengine (its ng address, `IP:port`) that anchors this leg's
    /// media; empty when its media is not anchored.
    #[serde(default)]
    pub media_anchor: String,
    /// The media address (`IP:port` of the first audio stream) rtpengine
    /// gave this leg in its SDP; empty when its media is not anchored.
    #[serde(default)]
    pub media_address: String,
}

impl Call {
    /// A new call record in `dialing`, created at `wall`: nothing has
    /// happened yet (every other time is the 9999 sentinel, no hangup).
    /// Set `direction`, `groupcall_id` and `sip_call_id` with struct update
    /// syntax where they differ from incoming, nil and empty.
    pub fn dialing(
        id: Uuid,
        customer_id: Uuid,
        source: Address,
        destination: Address,
        wall: Timestamp,
    ) -> Call {
        Call {
            id,
            customer_id,
            groupcall_id: NIL,
            source,
            destination,
            direction: Direction::Incoming,
            status: CallStatus::Dialing,
            hangup_by: HangupBy::None,
            hangup_reason: HangupReason::None,
            sip_call_id: String::new(),
            tm_ringing: Timestamp::NOT_YET,
            tm_progressing: Timestamp::NOT_YET,
            tm_hangup: Timestamp::NOT_YET,
            tm_create: wall,
            tm_update: wall,
            tm_delete: Timestamp::NOT_YET,
            node_id: String::new(),
            relay_node_id: String::new(),
            media_anchor: String::new(),
            media_address: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_class_has_one_hangup_reason() {
        use HangupReason::*;
        let table = [
            // 1xx never end a call; a 2xx ends one normally.
            (100, Failed),
            (180, Failed),
            (183, Failed),
            (200, Normal),
            (202, Normal),
            // Redirects are not followed: they count as 480.
            (300, Noanswer),
            (302, Noanswer),
            (400, Failed),
            (403, Failed),
            (404, Failed),
            (408, Noanswer),
            (480, Noanswer),
            (486, Busy),
            (487, Cancel),
            (488, Failed),
            (500, Failed),
            (503, Failed),
            (600, Busy),
            (603, Failed),
            (604, Failed),
            (606, Failed),
            (NO_RESPONSE, Noanswer),
        ];
        for (status, reason) in table {
            assert_eq!(HangupReason::for_status(status), reason, "{status}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(Timestamp::NOT_YET.to_string(), "9999-01-01 00:00:00.000000");
        assert_eq!(Timestamp::parse("9999-01-01 00:00:00.000000"), Some(Timestamp::NOT_YET));
        let t = Timestamp::parse("2023-04-21 15:33:28.569053").expect("parse");
        assert_eq!(t.to_string(), "2023-04-21 15:33:28.569053");
    }

    #[test]
    fn formatting_agrees_with_chrono() {
        for us in [0i64, 1, 951_782_400_000_000, 1_682_091_208_569_053, 4_102_444_799_999_999, -1] {
            let t = Timestamp::from_micros(us);
            let want = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
                .expect("in range")
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            assert_eq!(t.to_string(), want, "{us}");
            assert_eq!(Timestamp::parse(&want), Some(t));
        }
    }

    #[test]
    fn seed_example_round_trips() {
        let json = r#"{"id":"d8596b14-4d8e-4a86-afde-642b46d59ac7","customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","source":{"type":"tel","target":"+15551234567","target_name":"","name":"","detail":""},"destinations":[{"type":"endpoint","target":"test11@test","target_name":"","name":"","detail":""},{"type":"extension","target":"test12@test"}],"ring_method":"","answer_method":"","status":"progressing","answer_call_id":"00000000-0000-0000-0000-000000000000","answer_groupcall_id":"00000000-0000-0000-0000-000000000000","call_ids":["3c77eb43-2098-4890-bb6c-5af0707ba4a6"],"groupcall_ids":[],"master_call_id":"00000000-0000-0000-0000-000000000000","master_groupcall_id":"00000000-0000-0000-0000-000000000000","tm_create":"2023-04-21 15:33:28.569053","tm_update":"9999-01-01 00:00:00.000000","tm_delete":"9999-01-01 00:00:00.000000"}"#;
        let g: Groupcall = serde_json::from_str(json).expect("parse");
        assert_eq!(g.ring_method, RingMethod::RingAll);
        assert_eq!(g.destinations[1].kind, AddressType::Endpoint);
        assert_eq!(g.answer_call_id, NIL);
        assert!(g.tm_update.is_not_yet());
        let out = serde_json::to_value(&g).expect("json");
        assert_eq!(out["ring_method"], "ring_all");
        assert_eq!(out["tm_create"], "2023-04-21 15:33:28.569053");
        assert_eq!(out["destinations"][1]["type"], "endpoint");
    }

    #[test]
    fn call_status_only_forward() {
        use CallStatus::*;
        assert!(Dialing.can_become(Ringing));
        assert!(Ringing.can_become(Progressing));
        assert!(!Progressing.can_become(Ringing));
        assert!(!Hangup.can_become(Hangup));
        assert!(Ringing.can_become(Canceling));
        assert!(!Progressing.can_become(Canceling));
    }

    #[test]
    fn config_ids_are_stable_v5() {
        let a = config_id("800@test");
        assert_eq!(a, config_id("800@test"));
        assert_ne!(a, config_id("801@test"));
        assert_eq!(a.get_version_num(), 5);
        let e = Extension {
            name: "test11".into(),
            domain: "test".into(),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            display_name: String::new(),
            handling: CallHandling::default(),
        };
        let r = ExtensionRecord::from_config(e, NIL, Timestamp::from_micros(1));
        assert_eq!(r.id, config_id("test11@test"));
        assert_eq!(r.origin, Origin::Config);
        assert!(r.tm_delete.is_not_yet());
        assert_eq!(Origin::from_str_lossy(Origin::Api.as_str()), Origin::Api);
    }
    #[test]
    fn hunt_memories_merge_in_any_order() {
        let m = |t: &str| Address::new(AddressType::Endpoint, t);
        let at = Timestamp::from_micros;
        let a = HuntMemoryRecord {
            group_id: Uuid::nil(),
            last_answered: Some(m("x@t")),
            answered_at: vec![(m("x@t"), at(5)), (m("y@t"), at(1))],
        };
        let b = HuntMemoryRecord {
            group_id: Uuid::nil(),
            last_answered: Some(m("y@t")),
            answered_at: vec![(m("y@t"), at(7)), (m("z@t"), at(2))],
        };
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&a);
        assert_eq!(ab.last_answered, Some(m("y@t")));
        assert_eq!(ba.last_answered, Some(m("y@t")));
        let sorted = |r: &HuntMemoryRecord| {
            let mut v = r.answered_at.clone();
            v.sort_by(|x, y| x.0.target.cmp(&y.0.target));
            v
        };
        assert_eq!(sorted(&ab), [(m("x@t"), at(5)), (m("y@t"), at(7)), (m("z@t"), at(2))]);
        assert_eq!(sorted(&ab), sorted(&ba));
    }
}

/// A customer: owns SIP domains, extensions, groupcalls; authenticates to the
/// REST API with its API keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// API keys (`Authorization: Bearer KEY` or `?accesskey=KEY`).
    #[serde(default)]
    pub api_keys: Vec<String>,
}

/// A SIP domain served by the switch (`test`), owned by one customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The domain name used in AORs (`test11@test`) and as digest realm.
    pub name: String,
    /// Other host names meaning the same domain (FQDN aliases).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Owner.
    pub customer_id: Uuid,
}

/// A phone account: extension `name` in `domain`. Only password hashes are
/// kept: HA1 = H(name ":" domain ":" password) for MD5 and SHA-256.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Extension name (the user part: `test11`).
    pub name: String,
    /// Domain name.
    pub domain: String,
    /// HA1 with MD5, lowercase hex; empty when not available.
    #[serde(default)]
    pub ha1_md5: String,
    /// HA1 with SHA-256, lowercase hex; empty when not available.
    #[serde(default)]
    pub ha1_sha256: String,
    /// Display name (caller-ID name).
    #[serde(default)]
    pub display_name: String,
    /// Concurrent-call limit, do-not-disturb and call forwards.
    #[serde(default)]
    pub handling: CallHandling,
}

/// How an extension takes calls (FreePBX's DND, call forwarding and
/// Follow-Me; Asterisk's `ringinuse=no` with a call limit). Forwards go to
/// any [`Address`]: another extension, a number, a SIP URI, a ring group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallHandling {
    /// Most concurrent calls, in or out (an answered call to it, or a call
    /// it placed); at the limit it is busy: not rung, 486 or
    /// `forward_busy`. `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
    /// Do not disturb: a direct call gets 486, groups skip it.
    #[serde(default)]
    pub dnd: bool,
    /// Every call goes there instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_always: Option<Address>,
    /// Where calls go when it is busy (at `max_calls`, or its phone
    /// answers 486 or 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_busy: Option<Address>,
    /// Where calls go when it does not answer within
    /// `forward_noanswer_secs`, fails otherwise, or is not registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_noanswer: Option<Address>,
    /// Seconds it rings before `forward_noanswer` (default
    /// [`CallHandling::DEFAULT_NOANSWER_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_noanswer_secs: Option<u64>,
}

impl CallHandling {
    /// Seconds an extension rings before its `forward_noanswer` when
    /// `forward_noanswer_secs` is not set.
    pub const DEFAULT_NOANSWER_SECS: u64 = 20;

    /// Whether it changes anything (not the default).
    pub fn is_default(&self) -> bool {
        *self == CallHandling::default()
    }

    /// Seconds before `forward_noanswer`.
    pub fn noanswer_secs(&self) -> u64 {
        self.forward_noanswer_secs.unwrap_or(Self::DEFAULT_NOANSWER_SECS)
    }
}

impl Extension {
    /// The address-of-record `name@domain`.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.name, self.domain)
    }
}

/// A registered contact of an address-of-record (RFC 3261 10.3), with where
/// it really came from (NAT: source address and transport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// `ext@domain`.
    pub aor: String,
    /// The Contact URI exactly as registered.
    pub contact: String,
    /// RFC 5626 `+sip.instance` (without `<>`), if given.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`, if given.
    pub reg_id: Option<u32>,
    /// q-value in thousandths (1000 = 1.0).
    pub q: u16,
    /// When the binding expires (wall clock).
    pub expires_at: Timestamp,
    /// Call-ID of the REGISTER that made or refreshed it.
    pub call_id: String,
    /// Its CSeq.
    pub cseq: u32,
    /// Transport it arrived over: `UDP` or `TCP`.
    pub transport: String,
    /// Source address of the REGISTER (where requests to this contact go).
    pub source: std::net::SocketAddr,
    /// Local address it arrived on.
    pub local: std::net::SocketAddr,
    /// User-Agent of the phone.
    #[serde(default)]
    pub user_agent: String,
    /// The cluster node whose flow reaches the phone (it registered there):
    /// calls from other nodes are relayed through it. Empty without a
    /// cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    /// The stream connection (on `node_id`) it registered over: the flow
    /// (RFC 5626) that reaches it; `None` over UDP (the flow is `source`
    /// and `local`) or once that connection is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// Its node's lease ran out (the node died): no node reaches it until
    /// the phone registers again (or its node comes back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
}

/// Where a configuration record (extension, ring group, webhook, API key)
/// comes from: the config file (shown by the API, read-only) or the API.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Defined in the config file: the API shows it and refuses to change it.
    #[default]
    Config,
    /// Created through the REST API.
    Api,
}

impl Origin {
    /// `config` or `api` (as stored).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }

    /// The inverse of [`Origin::as_str`]; anything else is `config`.
    pub fn from_str_lossy(s: &str) -> Origin {
        if s == "api" {
            Origin::Api
        } else {
            Origin::Config
        }
    }
}

/// The stable id of a config-defined record named `key` (`name@domain`,
/// `number@domain`): UUID v5 in the OID namespace, the same on every start.
pub fn config_id(key: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes())
}

/// A phone account as the REST API manages it: the registrar's
/// [`Extension`] (name, domain, HA1 hashes, display name; unchanged) plus
/// its identity, owner, free text, origin and times. The plain password is
/// never kept: only the HA1 hashes in `extension`.
///
/// (A wrapper rather than more fields on [`Extension`], which the registrar
/// and the config loader build with struct literals.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRecord {
    /// Id: random for API ones, [`config_id`] of `name@domain` for config ones.
    pub id: Uuid,
    /// Owner (the customer owning the domain).
    pub customer_id: Uuid,
    /// The account itself.
    pub extension: Extension,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// Config file or API.
    pub origin: Origin,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
    /// Deleted ("not yet" while it exists).
    pub tm_delete: Timestamp,
}

impl ExtensionRecord {
    /// The record of a config-defined extension: id [`config_id`] of
    /// `name@domain`, origin config, created (and updated) at `now`. A store
    /// keeps the first `tm_create` when the same record is written again.
    pub fn from_config(extension: Extension, customer_id: Uuid, now: Timestamp) -> ExtensionRecord {
        ExtensionRecord {
            id: config_id(&extension.aor()),
            customer_id,
            extension,
            detail: String::new(),
            origin: Origin::Config,
            tm_create: now,
            tm_update: now,
            tm_delete: Timestamp::NOT_YET,
        }
    }
}

/// One destination of a [`RingGroup`]. A struct, so that per-destination
/// options (a delay before ringing, say) can be added without changing the
/// shape of the others.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingGroupDestination {
    /// `endpoint`, `tel`, `sip` or `groupcall`.
    #[serde(rename = "type")]
    pub kind: AddressType,
    /// `test11@test`, `+15551234567`, `sip:bob@example.com`, a group number.
    pub target: String,
    /// How long it rings (linear: then the next); `None`: the default.
    #[serde(default)]
    pub ring_timeout_secs: Option<u64>,
    /// Staggered ringing: dialed this long after it is reached (in
    /// `ring_all`, after the group started); `None`: at once.
    #[serde(default)]
    pub delay_secs: Option<u64>,
}

/// A ring group reachable by `number` in `domain`, as stored by the API (or
/// copied from the config file, read-only).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingGroup {
    /// Id: random for API ones, [`config_id`] of `number@domain` (or the
    /// configured id) for config ones.
    pub id: Uuid,
    /// Owner (the customer owning the domain).
    pub customer_id: Uuid,
    /// The number dialed to reach it (Request-URI user).
    pub number: String,
    /// Its SIP domain.
    pub domain: String,
    /// `ring_all`, `linear`, `memory_hunt`, `round_robin`, `least_recent` or
    /// `random`.
    pub ring_method: RingMethod,
    /// `hangup_others`.
    pub answer_method: AnswerMethod,
    /// What to ring, in order.
    pub destinations: Vec<RingGroupDestination>,
    /// The longest the group rings, whatever its method; `None`: no limit
    /// of its own.
    #[serde(default)]
    pub max_ring_secs: Option<u64>,
    /// Busy members are not rung (their 486 not counted); all busy: 486.
    #[serde(default)]
    pub skip_busy: bool,
    /// Send `Reason: SIP;cause=200` on the CANCELs of losing legs.
    pub send_reason: bool,
    /// Config file or API.
    pub origin: Origin,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
    /// Deleted ("not yet" while it exists).
    pub tm_delete: Timestamp,
}

/// Accounts and ring groups as the database holds them now: what a
/// cluster node reads of what any node (its API, its config file) made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provisioning {
    /// Customers.
    pub customers: Vec<Customer>,
    /// Domains.
    pub domains: Vec<Domain>,
    /// Extensions.
    pub extensions: Vec<Extension>,
    /// Ring groups.
    pub ring_groups: Vec<RingGroup>,
}

/// What a `round_robin` or `least_recent` ring group remembers of its past
/// calls (who answered last, and when each member last answered), stored
/// so that the rotation survives a restart. Members are destinations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntMemoryRecord {
    /// The ring group's id.
    pub group_id: Uuid,
    /// The member that answered the group's last answered call.
    pub last_answered: Option<Address>,
    /// When each member last answered a call of the group.
    pub answered_at: Vec<(Address, Timestamp)>,
}

impl HuntMemoryRecord {
    /// Folds in what another node remembers of the same group (cluster):
    /// each member keeps its latest answer time, and the last answered is
    /// the member with the latest one (this record's on a tie). The order
    /// of merging does not matter, so nodes that answer calls of one group
    /// at the same time converge on the same memory.
    pub fn merge(&mut self, other: &HuntMemoryRecord) {
        for (member, at) in &other.answered_at {
            match self.answered_at.iter_mut().find(|(m, _)| m == member) {
                Some((_, mine)) => *mine = (*mine).max(*at),
                None => self.answered_at.push((member.clone(), *at)),
            }
        }
        let latest = self.answered_at.iter().max_by_key(|(_, at)| *at).map(|(m, _)| m.clone());
        let ours = self
            .last_answered
            .as_ref()
            .and_then(|m| self.answered_at.iter().find(|(x, _)| x == m).map(|(_, at)| *at));
        let newest = self.answered_at.iter().map(|(_, at)| *at).max();
        if latest.is_some() && (ours.is_none() || ours < newest) {
            self.last_answered = latest;
        } else if self.last_answered.is_none() {
            self.last_answered.clone_from(&other.last_answered);
        }
    }
}

/// Where a customer's events are posted. The secret is stored as given:
/// it is needed to sign every delivery (HMAC-SHA256), so it cannot be
/// hashed; the API never returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Owner.
    pub customer_id: Uuid,
    /// `http://` or `https://` URL events are POSTed to.
    pub url: String,
    /// HMAC key of the signature header.
    pub secret: String,
    /// Config file or API.
    pub origin: Origin,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
}

/// An API key as stored: only a hash of it (see `store::hash_api_key`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Lowercase hex SHA-256 of the key.
    pub hash: String,
    /// The customer it authenticates as.
    pub customer_id: Uuid,
    /// Config file or API.
    pub origin: Origin,
    /// Created.
    pub tm_create: Timestamp,
}
