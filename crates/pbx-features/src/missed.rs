//! The missed-groupcall notice: when a groupcall ends with nobody having
//! answered (the caller gave up, the group timed out, everyone was busy),
//! the customer's webhook gets one `groupcall_missed` event naming the
//! members that were rung, so a phone or a CRM can show "missed (group
//! 800)".
//!
//! Delivered in the webhooks' envelope, like every other event:
//!
//! ```json
//! {"type": "groupcall_missed",
//!  "data": {"groupcall_id": "…", "customer_id": "…", "call_id": "…",
//!           "source": {"type": "endpoint", "target": "test11@test", "name": "Alice", …},
//!           "destination": {"type": "groupcall", "target": "800@test", …},
//!           "hangup_reason": "cancel",
//!           "members": [{"target": "test12@test", "name": "Reception",
//!                        "call_ids": ["…"], "outcome": "rang"}, …],
//!           "tm_create": "2024-05-01 09:00:00.000000",
//!           "tm_hangup": "2024-05-01 09:00:21.500000"}}
//! ```
//!
//! [`GroupcallMissed::from_records`] derives it from the records the
//! switch persists: the root groupcall (over, unanswered), the inbound call
//! it served, and the leg calls of the groupcall's whole tree.

use records::{
    Address, Call, CallStatus, Groupcall, GroupcallStatus, HangupReason, Timestamp, NIL,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The webhook event type.
pub const EVENT_TYPE: &str = "groupcall_missed";

/// The `data` of a `groupcall_missed` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupcallMissed {
    /// The root groupcall nobody answered.
    pub groupcall_id: Uuid,
    /// Its customer.
    pub customer_id: Uuid,
    /// The inbound call it served (nil for a groupcall the API started).
    pub call_id: Uuid,
    /// The caller.
    pub source: Address,
    /// What the caller dialed (the ring group `800@test`, an extension).
    pub destination: Address,
    /// Why the inbound call ended: `cancel` (the caller gave up),
    /// `noanswer`/`timeout` (nobody in time), `busy` (all busy), `failed`.
    pub hangup_reason: HangupReason,
    /// The members a leg was sent to, in the order they were first dialed.
    pub members: Vec<RungMember>,
    /// When the groupcall was created.
    pub tm_create: Timestamp,
    /// When it ended.
    pub tm_hangup: Timestamp,
}

/// One member a groupcall tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RungMember {
    /// The member (`test12@test`, a number, a SIP URI).
    pub target: String,
    /// Its display name, as in the leg's destination.
    pub name: String,
    /// Its leg calls (one per registered phone, and per retry).
    pub call_ids: Vec<Uuid>,
    /// How the member fared: the best of its legs.
    pub outcome: MemberOutcome,
}

/// How a member fared, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberOutcome {
    /// A phone of the member rang (a missed call for it).
    Rang,
    /// It was busy.
    Busy,
    /// The call ended before any of its phones rang.
    NotReached,
    /// Its legs failed (unreachable, refused, error).
    Failed,
}

impl MemberOutcome {
    /// How one leg fared.
    fn of(leg: &Call) -> MemberOutcome {
        if !leg.tm_ringing.is_not_yet() {
            return MemberOutcome::Rang;
        }
        match leg.hangup_reason {
            HangupReason::Busy => MemberOutcome::Busy,
            HangupReason::Failed | HangupReason::Dialout => MemberOutcome::Failed,
            _ => MemberOutcome::NotReached,
        }
    }
}

impl GroupcallMissed {
    /// The notice for `root` when it is a root groupcall that ended without
    /// an answer, else `None`. `inbound` is the call it served (its
    /// `master_call_id`); `legs` are the leg calls of its tree (nested
    /// groupcalls included; others are ignored).
    pub fn from_records(
        root: &Groupcall,
        inbound: Option<&Call>,
        legs: &[Call],
    ) -> Option<GroupcallMissed> {
        let over = root.status == GroupcallStatus::Hangup;
        if !over || root.answer_call_id != NIL || root.master_groupcall_id != NIL {
            return None;
        }
        let inbound = inbound.filter(|c| c.id == root.master_call_id);
        let mut members: Vec<RungMember> = Vec::new();
        for leg in legs.iter().filter(|l| l.groupcall_id != NIL && l.status == CallStatus::Hangup) {
            let outcome = MemberOutcome::of(leg);
            let target = &leg.destination.target;
            match members.iter_mut().find(|m| &m.target == target) {
                Some(m) => {
                    m.call_ids.push(leg.id);
                    m.outcome = m.outcome.min(outcome);
                }
                None => members.push(RungMember {
                    target: target.clone(),
                    name: leg.destination.target_name.clone(),
                    call_ids: vec![leg.id],
                    outcome,
                }),
            }
        }
        Some(GroupcallMissed {
            groupcall_id: root.id,
            customer_id: root.customer_id,
            call_id: inbound.map_or(NIL, |c| c.id),
            source: inbound.map_or_else(|| root.source.clone(), |c| c.source.clone()),
            destination: inbound.map_or_else(
                || Address::new(records::AddressType::Groupcall, root.id.to_string()),
                |c| c.destination.clone(),
            ),
            hangup_reason: inbound.map_or(HangupReason::Noanswer, |c| c.hangup_reason),
            members,
            tm_create: root.tm_create,
            tm_hangup: inbound.map_or(root.tm_update, |c| c.tm_hangup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records::{AddressType, AnswerMethod, Direction, RingMethod};

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn groupcall(id: u128) -> Groupcall {
        Groupcall {
            id: Uuid::from_u128(id),
            customer_id: Uuid::from_u128(7),
            source: Address::new(AddressType::Endpoint, "test11@test"),
            destinations: vec![],
            ring_method: RingMethod::RingAll,
            answer_method: AnswerMethod::HangupOthers,
            status: GroupcallStatus::Hangup,
            answer_call_id: NIL,
            answer_groupcall_id: NIL,
            call_ids: vec![],
            groupcall_ids: vec![],
            master_call_id: Uuid::from_u128(100),
            master_groupcall_id: NIL,
            tm_create: t("2024-05-01 09:00:00.000000"),
            tm_update: t("2024-05-01 09:00:21.000000"),
            tm_delete: Timestamp::NOT_YET,
            node_id: String::new(),
        }
    }

    fn leg(id: u128, target: &str, rang: bool, reason: HangupReason) -> Call {
        let mut dest = Address::new(AddressType::Endpoint, target);
        dest.target_name = format!("{target} phone");
        let wall = t("2024-05-01 09:00:00.100000");
        Call {
            groupcall_id: Uuid::from_u128(2),
            direction: Direction::Outgoing,
            status: CallStatus::Hangup,
            hangup_reason: reason,
            tm_ringing: if rang { t("2024-05-01 09:00:01.000000") } else { Timestamp::NOT_YET },
            ..Call::dialing(
                Uuid::from_u128(id),
                Uuid::from_u128(7),
                Address::new(AddressType::Endpoint, "test11@test"),
                dest,
                wall,
            )
        }
    }

    fn inbound() -> Call {
        let mut source = Address::new(AddressType::Endpoint, "test11@test");
        source.name = "Alice".into();
        Call {
            status: CallStatus::Hangup,
            hangup_reason: HangupReason::Cancel,
            tm_hangup: t("2024-05-01 09:00:21.500000"),
            ..Call::dialing(
                Uuid::from_u128(100),
                Uuid::from_u128(7),
                source,
                Address::new(AddressType::Groupcall, "800@test"),
                t("2024-05-01 09:00:00.000000"),
            )
        }
    }

    #[test]
    fn names_every_member_tried_with_its_best_outcome() {
        let legs = [
            leg(11, "test12@test", false, HangupReason::Cancel),
            leg(12, "test12@test", true, HangupReason::Cancel),
            leg(13, "test13@test", false, HangupReason::Busy),
            leg(14, "test14@test", false, HangupReason::Failed),
            leg(15, "test15@test", false, HangupReason::Cancel),
        ];
        let m = GroupcallMissed::from_records(&groupcall(1), Some(&inbound()), &legs).unwrap();
        assert_eq!(m.call_id, Uuid::from_u128(100));
        assert_eq!((m.source.name.as_str(), m.destination.target.as_str()), ("Alice", "800@test"));
        assert_eq!(m.hangup_reason, HangupReason::Cancel);
        let got: Vec<_> =
            m.members.iter().map(|r| (r.target.as_str(), r.call_ids.len(), r.outcome)).collect();
        assert_eq!(
            got,
            [
                ("test12@test", 2, MemberOutcome::Rang),
                ("test13@test", 1, MemberOutcome::Busy),
                ("test14@test", 1, MemberOutcome::Failed),
                ("test15@test", 1, MemberOutcome::NotReached),
            ]
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["members"][0]["outcome"], "rang");
        assert_eq!(json["members"][0]["name"], "test12@test phone");
        assert_eq!(json["hangup_reason"], "cancel");
        assert_eq!(json["tm_hangup"], "2024-05-01 09:00:21.500000");
        assert_eq!(serde_json::from_value::<GroupcallMissed>(json).unwrap(), m);
    }

    #[test]
    fn only_for_a_root_groupcall_over_without_an_answer() {
        let legs = [leg(11, "test12@test", true, HangupReason::Cancel)];
        let mut g = groupcall(1);
        g.answer_call_id = Uuid::from_u128(11);
        assert!(GroupcallMissed::from_records(&g, Some(&inbound()), &legs).is_none());
        let mut g = groupcall(1);
        g.status = GroupcallStatus::Progressing;
        assert!(GroupcallMissed::from_records(&g, Some(&inbound()), &legs).is_none());
        let mut g = groupcall(1);
        g.master_groupcall_id = Uuid::from_u128(9);
        assert!(GroupcallMissed::from_records(&g, Some(&inbound()), &legs).is_none());
        // Without its inbound call (an API groupcall): the groupcall's own.
        let m = GroupcallMissed::from_records(&groupcall(1), None, &legs).unwrap();
        assert_eq!((m.call_id, m.hangup_reason), (NIL, HangupReason::Noanswer));
        assert_eq!(m.destination.kind, AddressType::Groupcall);
        assert_eq!(m.tm_hangup, t("2024-05-01 09:00:21.000000"));
    }
}
