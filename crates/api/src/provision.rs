//! The provisioning rules (the `provisioning` crate, the same the config
//! loader and the switch apply) as the API applies them: what the store
//! holds ([`Stored`], read for a check), a broken rule as an error
//! ([`rejected`]), and a change sent to the switch and answered from its
//! outcome ([`change`]). The API never writes an extension or a ring group
//! itself: the switch checks and applies the command and emits the record
//! for the shell to store, before its outcome; the API then waits for the
//! store to have it ([`store::Store::flush`]), so that a read right after
//! the answer sees it.

use crate::error::ApiError;
use crate::ApiState;
use provisioning::{Fault, Invalid, Known, Listed};
use records::{Domain, Extension, RingGroup};
use switch::{Command, CommandOutcome};
use uuid::Uuid;

/// Domains, extensions and ring groups as the store holds them.
pub(crate) struct Stored {
    domains: Vec<Domain>,
    extensions: Vec<Extension>,
    ring_groups: Vec<RingGroup>,
}

/// What [`Stored::read`] reads besides the domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Extensions and ring groups (to check an extension or a ring group).
    Everything,
    /// Ring groups only: the destination rule never asks for extensions.
    RingGroups,
    /// Nothing more (destinations that name no ring group).
    DomainsOnly,
}

impl Stored {
    /// Reads what a check needs.
    pub(crate) async fn read(state: &ApiState, reading: Reading) -> Result<Stored, ApiError> {
        state
            .db(move |s| {
                let extensions =
                    if reading == Reading::Everything { s.extensions()? } else { Vec::new() };
                let ring_groups =
                    if reading == Reading::DomainsOnly { Vec::new() } else { s.ringgroups()? };
                Ok(Stored { domains: s.domains()?, extensions, ring_groups })
            })
            .await
    }

    /// The customer's domain named `want` (any case), or its only domain
    /// when `want` is empty; errors name the body's `field`.
    pub(crate) fn domain_of(
        &self,
        customer: Uuid,
        want: &str,
        field: &str,
    ) -> Result<String, ApiError> {
        let mut mine = self.domains.iter().filter(|d| d.customer_id == customer);
        if want.is_empty() {
            return match (mine.next(), mine.next()) {
                (Some(only), None) => Ok(only.name.clone()),
                _ => Err(ApiError::invalid_field(field, "required: you have several domains")),
            };
        }
        match mine.find(|d| d.name.eq_ignore_ascii_case(want)) {
            Some(d) => Ok(d.name.clone()),
            None => Err(ApiError::invalid_field(field, "not one of your domains")),
        }
    }

    /// Whether extension `name` of `domain` exists.
    pub(crate) fn has_extension(&self, name: &str, domain: &str) -> bool {
        self.known().has_extension(name, domain)
    }

    /// As the rules ask for it.
    pub(crate) fn known(&self) -> Listed<'_> {
        Listed {
            domains: &self.domains,
            extensions: &self.extensions,
            ring_groups: &self.ring_groups,
        }
    }
}

/// A broken rule of resource `r`: 400 naming the field (as the request
/// body calls it), or 409 when a ring group number is another's.
pub(crate) fn rejected(e: Invalid, r: &Resource) -> ApiError {
    match e.fault {
        Fault::Value => ApiError::invalid_field((r.field)(&e.field), e.reason),
        Fault::Taken => ApiError::already_exists(r.taken, e.reason),
    }
}

/// What a change is called in the errors of its resource.
pub(crate) struct Resource {
    /// The reason of a 409 when the switch refuses (`EXTENSION_REFUSED`).
    pub(crate) refused: &'static str,
    /// The reason of a 409 when a number is taken (`RINGGROUP_EXISTS`).
    pub(crate) taken: &'static str,
    /// A record field's name in the request body.
    pub(crate) field: fn(&str) -> &str,
}

/// Sends a change to the switch; once it is in effect, waits for the store
/// to have it. `NotFound` is fine for a removal (the store forgets it all
/// the same).
pub(crate) async fn change(
    state: &ApiState,
    command: Command,
    r: &Resource,
) -> Result<(), ApiError> {
    match state.command(command).await? {
        CommandOutcome::Done | CommandOutcome::NotFound => {}
        CommandOutcome::Invalid(e) => return Err(rejected(e, r)),
        CommandOutcome::Refused(reason) => {
            return Err(ApiError::failed_precondition(r.refused, reason))
        }
        other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
    state.db(|s| s.flush()).await
}
