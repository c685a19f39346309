//! Call pickup: an extension dials the group pickup code (`*8`: the oldest
//! call ringing a group it is a member of) or the directed pickup code
//! (`**<ext>`: a call ringing that extension), or sends an INVITE with
//! `Replaces` (RFC 3891) naming the early dialog of a leg (a busy lamp
//! key: the call ringing that leg's phone). The choice is
//! `pbx_features::choose_pickup` over a snapshot of the calls served; the
//! taking goes through the B2BUA (the picker's INVITE becomes the answered
//! leg, `b2bua::PickupInvite`) and the fork's one-answer rule
//! ([`groupcall::Fork::pick_up`]: the caller is answered, every leg still
//! ringing is CANCELed with `Reason: SIP;cause=200;text="Call completed
//! elsewhere"`). Nothing to take: 480 at once. Only calls of the picker's
//! customer are seen.

use crate::caller::Identified;
use crate::calls::ForkedCall;
use crate::input::Now;
use crate::output::{Event, Output};
use crate::switch::Switch;
use b2bua::{B2buaError, CallRef, PickupInvite};
use groupcall::LegTarget;
use pbx_features::{choose_pickup, CallPhase, FeatureCode, Picker, Pickup, PickupVerdict};
use pbx_features::{DialogIds, Replaces, RingingCall, RingingLeg};
use records::{Address, AddressType, NIL};
use routing::{Caller, RouteTable};
use sip_message::Message;
use tracing::debug;

/// Deepest nesting of ring groups followed when listing the groups a call
/// rings through.
const MAX_NESTING: usize = 8;

/// What a pickup INVITE asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PickupAsk {
    /// The group pickup code.
    Group,
    /// The directed pickup code and the extension's AOR.
    Directed(String),
    /// An INVITE with `Replaces` (RFC 3891) naming a leg's early dialog,
    /// as a busy lamp key sends it.
    Replaces(Replaces),
}

/// The extension picking up: its AOR and domain.
struct PickerId<'a> {
    aor: &'a str,
    domain: &'a str,
}

impl Switch {
    /// The pickup an extension's INVITE asks for by its `Replaces` header
    /// or its dialed user part (the codes of the caller's domain); `None`
    /// for anything else, `Err` for a malformed `Replaces` (400).
    pub(crate) fn pickup_asked(
        &self,
        who: &Identified,
        req: &Message,
        user: &str,
    ) -> Result<Option<PickupAsk>, u16> {
        let Caller::Extension { domain, .. } = &who.caller else { return Ok(None) };
        if let Some(r) = Replaces::from_message(req).map_err(|_| 400u16)? {
            return Ok(Some(PickupAsk::Replaces(r)));
        }
        Ok(self.code_asked(domain, user))
    }

    /// The pickup a dialed user part asks for in `domain`.
    fn code_asked(&self, domain: &str, user: &str) -> Option<PickupAsk> {
        match self.feature_codes.for_domain(domain).classify(user)? {
            FeatureCode::GroupPickup => Some(PickupAsk::Group),
            FeatureCode::DirectedPickup { extension } => {
                Some(PickupAsk::Directed(format!("{extension}@{domain}")))
            }
            FeatureCode::LoginToggle { .. } => None,
        }
    }

    /// Serves a pickup INVITE: takes the call chosen, or answers the
    /// picker with the refusal's status.
    pub(crate) fn pick_up(
        &mut self,
        now: Now,
        invite: PickupInvite,
        who: &Identified,
        ask: PickupAsk,
    ) {
        let Caller::Extension { aor, domain } = &who.caller else { return };
        let picker = PickerId { aor, domain };
        let verdict = self.choose(&picker, &ask);
        debug!(picker = aor, ?ask, ?verdict, "pickup");
        let code = match verdict {
            PickupVerdict::Take(cref) => match self.take(now, cref, &invite, aor) {
                Ok(()) => return,
                Err(B2buaError::NoOffer) => 488,
                Err(_) => 480,
            },
            other => other.status().unwrap_or(480),
        };
        let resp = self.local.status(&invite.request, code);
        self.respond(now, invite.key, resp);
    }

    /// Which call the picker takes, over a snapshot of the calls served.
    fn choose(&self, picker: &PickerId<'_>, ask: &PickupAsk) -> PickupVerdict<CallRef> {
        let customer =
            self.registrar.accounts().domain_for_host(picker.domain).map_or(NIL, |d| d.customer_id);
        let groups = groups_of_member(&self.routes, picker.aor);
        let snapshot: Vec<RingingCall<CallRef>> =
            self.calls.iter().filter_map(|c| self.ringing_call(c)).collect();
        let p = Picker { aor: picker.aor, customer, groups: &groups };
        let pickup = match ask {
            PickupAsk::Group => Pickup::Group,
            PickupAsk::Directed(ext) => Pickup::Directed { extension: ext },
            PickupAsk::Replaces(r) => Pickup::Replaces(r),
        };
        choose_pickup(&snapshot, &p, pickup)
    }

    /// The picker's INVITE answers call `cref`: a B2BUA leg of its own,
    /// then the fork's answer with it.
    fn take(
        &mut self,
        now: Now,
        cref: CallRef,
        invite: &PickupInvite,
        aor: &str,
    ) -> Result<(), B2buaError> {
        if !self.calls.get(cref).is_some_and(|c| c.fork.is_ringing()) {
            return Err(B2buaError::InvalidState("the call is not ringing"));
        }
        let lr = self.b2bua.pick_up(&mut self.tx, now.at, cref, invite)?;
        let picker = Address::new(AddressType::Endpoint, aor.to_owned());
        self.on_forked_call(now, cref, |sw, call| {
            match call.fork.pick_up(now.into(), picker) {
                Some(leg) => {
                    call.map_leg(leg, lr);
                    let ev = Event::CallPickedUp {
                        call: call.inbound.id,
                        groupcall: call.fork.root().id,
                        picker: aor.to_owned(),
                    };
                    sw.out.push_back(Output::Event(ev));
                    sw.counters.pickups += 1;
                }
                // Checked ringing above, so never; the picker is let go.
                None => {
                    let _ = sw.b2bua.bye_leg(&mut sw.tx, now.at, cref, lr);
                }
            }
            sw.apply_actions(now, call);
        });
        Ok(())
    }
}

impl Switch {
    /// A served call as a pickup sees it; `None` for a click-to-call (its
    /// caller is the switch's own leg: nothing to pick up).
    fn ringing_call(&self, call: &ForkedCall) -> Option<RingingCall<CallRef>> {
        if !call.is_inbound() {
            return None;
        }
        let c = &call.inbound;
        let legs = call
            .fork
            .ringing_legs()
            .filter_map(|(leg, t)| match t {
                LegTarget::Contact { aor, .. } => Some(RingingLeg {
                    extension: aor.clone(),
                    dialog: self.early_dialog(call, leg),
                }),
                _ => None,
            })
            .collect();
        let phase = if call.fork.is_ringing() { CallPhase::Ringing } else { CallPhase::Answered };
        let caller = (c.source.kind == AddressType::Endpoint).then(|| c.source.target.clone());
        Some(RingingCall {
            call: call.cref(),
            customer: c.customer_id,
            since: call.started(),
            phase,
            caller,
            groups: groups_rung(&self.routes, &c.destination),
            legs,
        })
    }

    /// A fork leg's early dialog, as its phone sees it.
    fn early_dialog(&self, call: &ForkedCall, leg: groupcall::LegId) -> Option<DialogIds> {
        let d = self.b2bua.leg_early_dialog(call.cref(), call.leg(leg)?)?;
        Some(DialogIds {
            call_id: d.call_id.to_owned(),
            local_tag: Some(d.phone_tag.to_owned()),
            remote_tag: Some(d.our_tag.to_owned()),
        })
    }
}

/// The ring groups a call dialed to `dialed` rings through (`800@test`),
/// nested ones included.
fn groups_rung(routes: &RouteTable, dialed: &Address) -> Vec<String> {
    let mut out = Vec::new();
    if dialed.kind != AddressType::Groupcall {
        return out;
    }
    let Some((number, domain)) = dialed.target.split_once('@') else { return out };
    let mut next = vec![(number.to_owned(), 0usize)];
    while let Some((key, depth)) = next.pop() {
        let Some(g) = routes.group(&key, domain) else { continue };
        let name = format!("{}@{}", g.number, g.domain);
        if out.contains(&name) || depth > MAX_NESTING {
            continue;
        }
        out.push(name);
        for d in g.destinations.iter().filter(|d| d.kind == AddressType::Groupcall) {
            next.push((d.target.clone(), depth + 1));
        }
    }
    out
}

/// The ring groups `aor` is a member of (`800@test`).
fn groups_of_member(routes: &RouteTable, aor: &str) -> Vec<String> {
    routes
        .groups()
        .iter()
        .filter(|g| {
            g.destinations.iter().any(|d| d.kind == AddressType::Endpoint && d.target == aor)
        })
        .map(|g| format!("{}@{}", g.number, g.domain))
        .collect()
}
