//! Which ringing call a pickup takes, decided over a snapshot of the
//! switch's calls: a pure rule, so that the switch only gathers the
//! snapshot and then answers the caller from the picker's INVITE.
//!
//! - **Group pickup** (`*8`): the oldest call still ringing any ring group
//!   the picker is a member of.
//! - **Directed pickup** (`**<ext>`): the oldest call still ringing that
//!   extension.
//! - **Pickup by `Replaces`** (RFC 3891, a BLF key): the call one of whose
//!   legs is the early dialog the header names.
//!
//! Only calls of the picker's own customer are seen, and never a call the
//! picker itself is making. Ties on age go to the smaller call key, so the
//! choice is the same on every run.

use crate::dialog_info::DialogIds;
use crate::replaces::Replaces;
use std::time::Instant;
use uuid::Uuid;

/// Whether a call is still ringing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    /// No leg has answered: it can be picked up.
    Ringing,
    /// A leg (or a pickup) answered it.
    Answered,
}

/// One leg of a call, toward an extension's phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingingLeg {
    /// The extension rung, by AOR (`test12@test`).
    pub extension: String,
    /// The leg's dialog as busy lamps were shown it (Call-ID, the phone's
    /// tag, the switch's tag), once the phone answered with a tag.
    pub dialog: Option<DialogIds>,
}

/// A call of the switch, as a pickup sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingingCall<K> {
    /// The switch's handle of the call.
    pub call: K,
    /// Its customer.
    pub customer: Uuid,
    /// When it began ringing: the oldest goes first.
    pub since: Instant,
    /// Ringing or answered.
    pub phase: CallPhase,
    /// The caller's AOR, when the caller is an extension of the switch.
    pub caller: Option<String>,
    /// The ring groups it is ringing through (`800@test`), nested ones
    /// included.
    pub groups: Vec<String>,
    /// Its legs toward extensions.
    pub legs: Vec<RingingLeg>,
}

/// Who dials the pickup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Picker<'a> {
    /// The picker's AOR (authenticated, like any INVITE).
    pub aor: &'a str,
    /// Its customer.
    pub customer: Uuid,
    /// The ring groups it is a member of (`800@test`).
    pub groups: &'a [String],
}

/// What the picker asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pickup<'a> {
    /// The group pickup code.
    Group,
    /// The directed pickup code and this extension (its AOR).
    Directed {
        /// The extension whose call is taken.
        extension: &'a str,
    },
    /// An INVITE with this `Replaces`.
    Replaces(&'a Replaces),
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickupVerdict<K> {
    /// Take this call: answer its caller with the picker's INVITE, and
    /// CANCEL its ringing legs as for any answer elsewhere.
    Take(K),
    /// Nothing the picker may take is ringing: 480 at once.
    NothingRinging,
    /// The `Replaces` names a call already answered: 486 (RFC 3891 with
    /// `early-only`; without it as well, since the switch never replaces
    /// an answered dialog).
    AlreadyAnswered,
    /// The `Replaces` names no dialog of the picker's customer: 481.
    NoSuchDialog,
}

impl<K> PickupVerdict<K> {
    /// The status to refuse the picker's INVITE with, `None` for a take.
    pub fn status(&self) -> Option<u16> {
        match self {
            PickupVerdict::Take(_) => None,
            PickupVerdict::NothingRinging => Some(480),
            PickupVerdict::AlreadyAnswered => Some(486),
            PickupVerdict::NoSuchDialog => Some(481),
        }
    }
}

/// The call `pickup` takes among `calls`, for `picker`.
pub fn choose<K: Copy + Ord>(
    calls: &[RingingCall<K>],
    picker: &Picker<'_>,
    pickup: Pickup<'_>,
) -> PickupVerdict<K> {
    let visible = calls
        .iter()
        .filter(|c| c.customer == picker.customer && c.caller.as_deref() != Some(picker.aor));
    let ringing = visible.clone().filter(|c| c.phase == CallPhase::Ringing);
    let oldest = |cs: &mut dyn Iterator<Item = &RingingCall<K>>| {
        cs.min_by_key(|c| (c.since, c.call))
            .map_or(PickupVerdict::NothingRinging, |c| PickupVerdict::Take(c.call))
    };
    match pickup {
        Pickup::Group => {
            oldest(&mut ringing.filter(|c| c.groups.iter().any(|g| picker.groups.contains(g))))
        }
        Pickup::Directed { extension } => {
            oldest(&mut ringing.filter(|c| c.legs.iter().any(|l| l.extension == extension)))
        }
        Pickup::Replaces(r) => {
            let named = |c: &&RingingCall<K>| {
                c.legs.iter().any(|l| l.dialog.as_ref().is_some_and(|d| r.matches(d)))
            };
            match visible.clone().find(named) {
                None => PickupVerdict::NoSuchDialog,
                Some(c) if c.phase == CallPhase::Answered => PickupVerdict::AlreadyAnswered,
                Some(c) => PickupVerdict::Take(c.call),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ACME: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn leg(ext: &str, tags: Option<(&str, &str, &str)>) -> RingingLeg {
        RingingLeg {
            extension: ext.into(),
            dialog: tags.map(|(c, l, r)| DialogIds {
                call_id: c.into(),
                local_tag: Some(l.into()),
                remote_tag: Some(r.into()),
            }),
        }
    }

    fn call(key: u32, secs: u64, groups: &[&str], legs: Vec<RingingLeg>) -> RingingCall<u32> {
        RingingCall {
            call: key,
            customer: ACME,
            since: base() + Duration::from_secs(secs),
            phase: CallPhase::Ringing,
            caller: Some("test20@test".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            legs,
        }
    }

    fn base() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn snapshot() -> Vec<RingingCall<u32>> {
        vec![
            call(5, 20, &["800@test"], vec![leg("test12@test", Some(("leg5", "p5", "s5")))]),
            call(3, 10, &["801@test"], vec![leg("test13@test", Some(("leg3", "p3", "s3")))]),
            call(4, 10, &["800@test", "802@test"], vec![leg("test12@test", None)]),
            RingingCall {
                customer: OTHER,
                ..call(1, 0, &["800@test"], vec![leg("test12@test", None)])
            },
            RingingCall {
                phase: CallPhase::Answered,
                ..call(2, 1, &["800@test"], vec![leg("test14@test", Some(("leg2", "p2", "s2")))])
            },
            RingingCall { caller: Some("test11@test".into()), ..call(0, 0, &["800@test"], vec![]) },
        ]
    }

    #[test]
    fn group_pickup_takes_the_oldest_call_of_the_pickers_groups() {
        let groups = ["800@test".to_owned(), "809@test".to_owned()];
        let picker = Picker { aor: "test11@test", customer: ACME, groups: &groups };
        // 1 is another customer's, 2 answered, 0 the picker's own; 4 and
        // 5 ring group 800, 4 since earlier.
        assert_eq!(choose(&snapshot(), &picker, Pickup::Group), PickupVerdict::Take(4));
        // Ties on age go to the smaller key.
        let groups = ["800@test".to_owned(), "801@test".to_owned()];
        let picker = Picker { groups: &groups, ..picker };
        assert_eq!(choose(&snapshot(), &picker, Pickup::Group), PickupVerdict::Take(3));
        let none = ["899@test".to_owned()];
        let picker = Picker { groups: &none, ..picker };
        let v = choose(&snapshot(), &picker, Pickup::Group);
        assert_eq!((v, v.status()), (PickupVerdict::NothingRinging, Some(480)));
        let picker = Picker { groups: &[], ..picker };
        assert_eq!(choose(&snapshot(), &picker, Pickup::Group), PickupVerdict::NothingRinging);
    }

    #[test]
    fn directed_pickup_takes_a_call_ringing_that_extension() {
        let picker = Picker { aor: "test11@test", customer: ACME, groups: &[] };
        let to = |extension| Pickup::Directed { extension };
        assert_eq!(choose(&snapshot(), &picker, to("test12@test")), PickupVerdict::Take(4));
        assert_eq!(choose(&snapshot(), &picker, to("test13@test")), PickupVerdict::Take(3));
        // test14's call is answered; nobody else rings test19.
        assert_eq!(choose(&snapshot(), &picker, to("test14@test")), PickupVerdict::NothingRinging);
        assert_eq!(choose(&snapshot(), &picker, to("test19@test")), PickupVerdict::NothingRinging);
        let stranger = Picker { customer: OTHER, ..picker };
        assert_eq!(
            choose(&snapshot(), &stranger, to("test13@test")),
            PickupVerdict::NothingRinging
        );
    }

    #[test]
    fn pickup_by_replaces_takes_the_named_early_dialog() {
        let picker = Picker { aor: "test11@test", customer: ACME, groups: &[] };
        let r = |v: &[u8]| Replaces::parse(v).unwrap();
        let early = r(b"leg5;to-tag=s5;from-tag=p5;early-only");
        assert_eq!(choose(&snapshot(), &picker, Pickup::Replaces(&early)), PickupVerdict::Take(5));
        let answered = r(b"leg2;to-tag=s2;from-tag=p2;early-only");
        let v = choose(&snapshot(), &picker, Pickup::Replaces(&answered));
        assert_eq!((v, v.status()), (PickupVerdict::AlreadyAnswered, Some(486)));
        let unknown = r(b"leg9;to-tag=s5;from-tag=p5");
        let v = choose(&snapshot(), &picker, Pickup::Replaces(&unknown));
        assert_eq!((v, v.status()), (PickupVerdict::NoSuchDialog, Some(481)));
        let stranger = Picker { customer: OTHER, ..picker };
        assert_eq!(
            choose(&snapshot(), &stranger, Pickup::Replaces(&early)),
            PickupVerdict::NoSuchDialog
        );
        assert_eq!(PickupVerdict::Take(1).status(), None);
    }
}
