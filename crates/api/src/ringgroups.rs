//! `/v1.0/ringgroups`: ring groups reachable by number in a domain (what
//! `[[groups]]` in the config file defines), with their ring method, answer
//! method, destinations (each with its own options: ring timeout today) and
//! whether losing legs get a `Reason` header. A change is checked by the
//! provisioning rules (those of the config file's `[[groups]]`) and sent to
//! the switch (`PutGroup` / `RemoveGroup`), which puts it in effect at once
//! and has it stored; config-file groups show `origin: config` and refuse
//! changes.

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Body, IdPath, Params};
use crate::paging::{page, page_type, PageQuery};
use crate::provision::{change, rejected, Reading, Resource, Stored};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use records::{
    AddressType, AnswerMethod, Origin, RingGroup, RingGroupDestination, RingMethod, Timestamp,
};
use serde::Deserialize;
use switch::Command;
use uuid::Uuid;

page_type!(RingGroupPage, RingGroup, "A page of ring groups.");

/// One destination in a request body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingGroupDestinationIn {
    /// `endpoint`, `tel`, `sip` or `groupcall` (a nested ring group).
    #[serde(rename = "type")]
    pub kind: AddressType,
    /// What to ring.
    #[schema(min_length = 1)]
    pub target: String,
    /// Seconds it rings (linear: then the next); default: the switch's.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    pub ring_timeout_secs: Option<u64>,
    /// Staggered ringing: seconds after the group started (ring_all) or
    /// after the hunt reached it before it is dialed; default: at once.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600)]
    pub delay_secs: Option<u64>,
}

/// `POST /v1.0/ringgroups` and `PUT /v1.0/ringgroups/{id}` (all of it).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingGroupBody {
    /// The number dialed to reach it (`800`).
    #[schema(pattern = r"^[A-Za-z0-9*#+._-]{1,32}$")]
    pub number: String,
    /// One of your SIP domains; may be left out when you have only one.
    #[serde(default)]
    pub domain: String,
    /// `ring_all` (default), `linear`, `memory_hunt`, `round_robin`,
    /// `least_recent` or `random`.
    #[serde(default)]
    pub ring_method: RingMethod,
    /// `hangup_others` (default).
    #[serde(default)]
    pub answer_method: AnswerMethod,
    /// What to ring, in order (1..64).
    #[schema(min_items = 1, max_items = 64)]
    pub destinations: Vec<RingGroupDestinationIn>,
    /// The longest the group rings, seconds, whatever its method; default:
    /// no limit of its own.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ring_secs: Option<u64>,
    /// Do not ring members that are busy (at their `max_calls`); when all
    /// are, the caller gets 486 at once (default false: a busy member
    /// counts as a 486).
    #[serde(default)]
    pub skip_busy: bool,
    /// Send `Reason: SIP;cause=200` on the CANCELs of losing legs (default true).
    #[serde(default)]
    pub send_reason: Option<bool>,
}

/// How the errors of a ring group change are called (the body's fields
/// are the record's).
const RING_GROUP: Resource =
    Resource { refused: "RINGGROUP_REFUSED", taken: "RINGGROUP_EXISTS", field: |f| f };

async fn owned(state: &ApiState, customer: CustomerId, id: Uuid) -> Result<RingGroup, ApiError> {
    match state.db(move |s| s.ringgroup(id)).await? {
        Some(g) if g.customer_id == customer.0 => Ok(g),
        _ => Err(ApiError::not_found("RINGGROUP_NOT_FOUND", format!("no ring group {id}"))),
    }
}

/// The record `id` of a body, checked by the provisioning rules against
/// what the store holds.
async fn record_of(
    state: &ApiState,
    customer: CustomerId,
    id: Uuid,
    body: RingGroupBody,
) -> Result<RingGroup, ApiError> {
    let stored = Stored::read(state, Reading::Everything).await?;
    let domain = stored.domain_of(customer.0, body.domain.trim(), "domain")?;
    let now = crate::now();
    let g = RingGroup {
        id,
        customer_id: customer.0,
        number: body.number.trim().to_owned(),
        domain,
        ring_method: body.ring_method,
        answer_method: body.answer_method,
        destinations: body
            .destinations
            .into_iter()
            .map(|d| RingGroupDestination {
                kind: d.kind,
                target: d.target.trim().to_owned(),
                ring_timeout_secs: d.ring_timeout_secs,
                delay_secs: d.delay_secs,
            })
            .collect(),
        max_ring_secs: body.max_ring_secs,
        skip_busy: body.skip_busy,
        send_reason: body.send_reason.unwrap_or(true),
        origin: Origin::Api,
        tm_create: now,
        tm_update: now,
        tm_delete: Timestamp::NOT_YET,
    };
    provisioning::check_ring_group(&g, &stored.known()).map_err(|e| rejected(e, &RING_GROUP))?;
    Ok(g)
}

/// Has the switch put the group in effect (and stored); the group as
/// stored (its first `tm_create` kept).
async fn put(state: &ApiState, g: RingGroup) -> Result<RingGroup, ApiError> {
    change(state, Command::PutGroup(Box::new(g.clone())), &RING_GROUP).await?;
    let id = g.id;
    Ok(state.db(move |s| s.ringgroup(id)).await?.unwrap_or(g))
}

/// Create a ring group.
#[utoipa::path(post, path = "/v1.0/ringgroups", tag = "ringgroups",
    request_body = RingGroupBody,
    responses(
        (status = 200, description = "The ring group", body = RingGroup),
        (status = 400, description = "Bad body", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 409, description = "The number is taken, or the switch refused", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    customer: CustomerId,
    Body(body): Body<RingGroupBody>,
) -> Result<Json<RingGroup>, ApiError> {
    let g = record_of(&state, customer, Uuid::new_v4(), body).await?;
    Ok(Json(put(&state, g).await?))
}

/// List the customer's ring groups, newest first.
#[utoipa::path(get, path = "/v1.0/ringgroups", tag = "ringgroups", params(PageQuery),
    responses(
        (status = 200, description = "A page", body = RingGroupPage),
        (status = 400, description = "Bad page token", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    customer: CustomerId,
    Params(q): Params<PageQuery>,
) -> Result<Json<RingGroupPage>, ApiError> {
    let (size, after) = (q.size(), q.cursor()?);
    let items = state.db(move |s| s.list_ringgroups(customer.0, size + 1, after)).await?;
    let (result, next_page_token) = page(items, size, |g| (g.tm_create, g.id));
    Ok(Json(RingGroupPage { result, next_page_token }))
}

/// One ring group.
#[utoipa::path(get, path = "/v1.0/ringgroups/{id}", tag = "ringgroups",
    params(("id" = Uuid, Path, description = "Ring group id")),
    responses(
        (status = 200, description = "The ring group", body = RingGroup),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such ring group (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<RingGroup>, ApiError> {
    Ok(Json(owned(&state, customer, id).await?))
}

/// Replace a ring group.
#[utoipa::path(put, path = "/v1.0/ringgroups/{id}", tag = "ringgroups",
    params(("id" = Uuid, Path, description = "Ring group id")),
    request_body = RingGroupBody,
    responses(
        (status = 200, description = "The ring group", body = RingGroup),
        (status = 400, description = "Bad body or id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such ring group (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file), number taken, or refused", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn update(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
    Body(body): Body<RingGroupBody>,
) -> Result<Json<RingGroup>, ApiError> {
    let old = owned(&state, customer, id).await?;
    if old.origin == Origin::Config {
        return Err(ApiError::read_only("ring group"));
    }
    let g = record_of(&state, customer, id, body).await?;
    Ok(Json(put(&state, RingGroup { tm_create: old.tm_create, ..g }).await?))
}

/// Delete a ring group.
#[utoipa::path(delete, path = "/v1.0/ringgroups/{id}", tag = "ringgroups",
    params(("id" = Uuid, Path, description = "Ring group id")),
    responses(
        (status = 200, description = "The deleted ring group", body = RingGroup),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such ring group (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<RingGroup>, ApiError> {
    let mut g = owned(&state, customer, id).await?;
    if g.origin == Origin::Config {
        return Err(ApiError::read_only("ring group"));
    }
    change(&state, Command::RemoveGroup { id }, &RING_GROUP).await?;
    let now = crate::now();
    g.tm_update = now;
    g.tm_delete = now;
    Ok(Json(g))
}
