//! `/v1.0/groupcalls`: start a click-to-call (RFC 3725: the switch rings
//! the `source` phone first, then forks to the destinations), list the
//! customer's groupcalls, read one as it lives (status, `call_ids` as legs
//! are dialed, `answer_call_id` once answered: the store holds what the
//! switch persisted), hang one up, delete one. Scoping and the VoIPBin
//! shape are the API's; the destinations are checked by the provisioning
//! rules' destination check (as a ring group's), here against the store for
//! a 400, and again by the switch, which gets a [`switch::Command`].

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Body, IdPath, Params};
use crate::paging::{page_type, JsonPage, PageQuery};
use crate::provision::{rejected, Reading, Resource, Stored};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use provisioning::Home;
use records::{
    Address, AddressType, AnswerMethod, Groupcall, GroupcallStatus, RingGroupDestination,
    RingMethod,
};
use serde::Deserialize;
use std::time::Duration;
use switch::{ClickDestination, ClickToCall, Command, CommandOutcome};
use uuid::Uuid;

page_type!(GroupcallPage, Groupcall, "A page of groupcalls.");

/// How the errors of a click-to-call are called (the body's fields are
/// the rules' own).
const GROUPCALL: Resource =
    Resource { refused: "GROUPCALL_REFUSED", taken: "GROUPCALL_REFUSED", field: |f| f };

/// An address in a request body (unknown fields refused).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressIn {
    /// `endpoint` (alias `extension`), `tel`, `sip` or `groupcall`.
    #[serde(rename = "type")]
    pub kind: AddressType,
    /// `test11@test`, `+15551234567`, `sip:bob@example.com`, a ring group.
    #[schema(min_length = 1)]
    pub target: String,
    /// Display name of the target.
    #[serde(default)]
    pub target_name: String,
    /// Display name (caller-ID name on the source).
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
}

impl AddressIn {
    fn address(&self) -> Address {
        Address {
            kind: self.kind,
            target: self.target.trim().to_owned(),
            target_name: self.target_name.clone(),
            name: self.name.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// A destination in a request body: an address and its own ring timeout.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationIn {
    /// `endpoint` (alias `extension`), `tel`, `sip` or `groupcall`.
    #[serde(rename = "type")]
    pub kind: AddressType,
    /// What to ring.
    #[schema(min_length = 1)]
    pub target: String,
    /// Display name of the target.
    #[serde(default)]
    pub target_name: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// Seconds this destination rings (linear: then the next); default: the
    /// switch's.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    pub ring_timeout_secs: Option<u64>,
}

/// `POST /v1.0/groupcalls`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupcallCreate {
    /// The phone rung first (an `endpoint` of one of your domains); the
    /// caller ID of every destination leg.
    pub source: AddressIn,
    /// What to ring once the source answered, in order (1..64).
    #[schema(min_items = 1, max_items = 64)]
    pub destinations: Vec<DestinationIn>,
    /// `ring_all` (default, also `""`), `linear`, `memory_hunt`,
    /// `round_robin`, `least_recent` or `random`.
    #[serde(default)]
    pub ring_method: RingMethod,
    /// `hangup_others` (default, also `""`).
    #[serde(default)]
    pub answer_method: AnswerMethod,
}

/// The customer's groupcall `id`, or 404 (another customer's too).
pub(crate) async fn owned(
    state: &ApiState,
    customer: CustomerId,
    id: Uuid,
) -> Result<Groupcall, ApiError> {
    match state.db(move |s| s.groupcall(id)).await? {
        Some(g) if g.customer_id == customer.0 => Ok(g),
        _ => Err(ApiError::not_found("GROUPCALL_NOT_FOUND", format!("no groupcall {id}"))),
    }
}

/// Re-reads a record after everything queued before (the switch's writes
/// that came with the command's outcome) is committed.
async fn reread(state: &ApiState, id: Uuid, fallback: Groupcall) -> Result<Groupcall, ApiError> {
    Ok(state
        .db(move |s| {
            s.flush()?;
            s.groupcall(id)
        })
        .await?
        .unwrap_or(fallback))
}

/// Start a click-to-call groupcall.
#[utoipa::path(post, path = "/v1.0/groupcalls", tag = "groupcalls",
    request_body = GroupcallCreate,
    responses(
        (status = 200, description = "The groupcall, as created", body = Groupcall),
        (status = 400, description = "Bad body", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 409, description = "The switch refused (source not registered...)", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    customer: CustomerId,
    Body(body): Body<GroupcallCreate>,
) -> Result<Json<Groupcall>, ApiError> {
    if body.source.kind != AddressType::Endpoint {
        return Err(ApiError::invalid_field(
            "source.type",
            "the source must be an endpoint (a phone account ext@domain)",
        ));
    }
    let dests: Vec<RingGroupDestination> = body
        .destinations
        .iter()
        .map(|d| RingGroupDestination {
            kind: d.kind,
            target: d.target.trim().to_owned(),
            ring_timeout_secs: d.ring_timeout_secs,
            delay_secs: None,
        })
        .collect();
    let nested = dests.iter().any(|d| d.kind == AddressType::Groupcall);
    let reading = if nested { Reading::RingGroups } else { Reading::DomainsOnly };
    let stored = Stored::read(&state, reading).await?;
    let source = body.source.target.trim();
    if !provisioning::is_endpoint_of(source, customer.0, &stored.known()) {
        return Err(ApiError::invalid_field(
            "source.target",
            "not an extension (ext@domain) of one of your domains",
        ));
    }
    let domain = source.split_once('@').map_or("", |(_, d)| d);
    let home = Home { owner: customer.0, domain };
    provisioning::check_destinations(&dests, home, &stored.known())
        .map_err(|e| rejected(e, &GROUPCALL))?;
    let c2c = ClickToCall {
        customer_id: customer.0,
        source: body.source.address(),
        destinations: body
            .destinations
            .iter()
            .map(|d| ClickDestination {
                address: Address {
                    kind: d.kind,
                    target: d.target.trim().to_owned(),
                    target_name: d.target_name.clone(),
                    name: d.name.clone(),
                    detail: d.detail.clone(),
                },
                ring_timeout: d.ring_timeout_secs.map(Duration::from_secs),
            })
            .collect(),
        ring_method: body.ring_method,
        answer_method: body.answer_method,
    };
    match state.command(Command::StartGroupcall(Box::new(c2c))).await? {
        CommandOutcome::Started { groupcall, .. } => {
            let id = groupcall.id;
            Ok(Json(reread(&state, id, *groupcall).await?))
        }
        CommandOutcome::Refused(reason) => {
            Err(ApiError::failed_precondition(GROUPCALL.refused, reason))
        }
        CommandOutcome::Invalid(e) => Err(rejected(e, &GROUPCALL)),
        CommandOutcome::NotFound => Err(ApiError::failed_precondition(
            "SOURCE_NOT_FOUND",
            "the source is not a registered phone",
        )),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// List the customer's groupcalls, newest first (deleted ones left out).
#[utoipa::path(get, path = "/v1.0/groupcalls", tag = "groupcalls", params(PageQuery),
    responses(
        (status = 200, description = "A page", body = GroupcallPage),
        (status = 400, description = "Bad page token", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    customer: CustomerId,
    Params(q): Params<PageQuery>,
) -> Result<JsonPage, ApiError> {
    let (size, after) = (q.size(), q.cursor()?);
    let items = state.db(move |s| s.list_groupcalls_json(customer.0, size + 1, after)).await?;
    Ok(JsonPage::new(items, size))
}

/// One groupcall, as it is now.
#[utoipa::path(get, path = "/v1.0/groupcalls/{id}", tag = "groupcalls",
    params(("id" = Uuid, Path, description = "Groupcall id")),
    responses(
        (status = 200, description = "The groupcall", body = Groupcall),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such groupcall (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Groupcall>, ApiError> {
    Ok(Json(owned(&state, customer, id).await?))
}

/// Hang up a groupcall: every live leg is CANCELed or BYEd; it ends `hangup`.
#[utoipa::path(post, path = "/v1.0/groupcalls/{id}/hangup", tag = "groupcalls",
    params(("id" = Uuid, Path, description = "Groupcall id")),
    responses(
        (status = 200, description = "The groupcall (hangingup, or already over)", body = Groupcall),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such groupcall (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "The switch refused", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn hangup(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Groupcall>, ApiError> {
    let g = owned(&state, customer, id).await?;
    match state.command(Command::HangupGroupcall { id }).await? {
        // NotFound: nothing live has the id; the record says how it ended.
        CommandOutcome::Done | CommandOutcome::NotFound => Ok(Json(reread(&state, id, g).await?)),
        CommandOutcome::Refused(reason) => {
            Err(ApiError::failed_precondition("HANGUP_REFUSED", reason))
        }
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Delete a groupcall: hung up first if live, then `tm_delete` is set and
/// it leaves the list.
#[utoipa::path(delete, path = "/v1.0/groupcalls/{id}", tag = "groupcalls",
    params(("id" = Uuid, Path, description = "Groupcall id")),
    responses(
        (status = 200, description = "The deleted groupcall", body = Groupcall),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such groupcall (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Groupcall>, ApiError> {
    let g = owned(&state, customer, id).await?;
    if g.status != GroupcallStatus::Hangup {
        if let CommandOutcome::Refused(reason) =
            state.command(Command::HangupGroupcall { id }).await?
        {
            tracing::info!(%id, %reason, "api: hangup before delete refused");
        }
    }
    let at = crate::now();
    let deleted = state
        .db(move |s| {
            s.delete_groupcall(id, at);
            s.flush()?;
            s.groupcall(id)
        })
        .await?
        .unwrap_or(Groupcall { tm_delete: at, tm_update: at, ..g });
    state.webhooks().publish_deleted(&deleted);
    Ok(Json(deleted))
}
