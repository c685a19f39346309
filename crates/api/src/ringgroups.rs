//! `/v1.0/ringgroups`: ring groups reachable by number in a domain (what
//! `[[groups]]` in the config file defines), with their ring method, answer
//! method, destinations (each with its own options: ring timeout today) and
//! whether losing legs get a `Reason` header. Stored, and sent to the switch
//! (`PutGroup` / `RemoveGroup`) so that a change takes effect at once;
//! config-file groups show `origin: config` and refuse changes.
//! [`to_routing_group`] and [`from_config_group`] convert for the shell
//! (stored groups into the route table at start; config groups into the
//! store).

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Body, IdPath, Params};
use crate::groupcalls::check_destinations;
use crate::paging::{page, page_type, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use records::{
    AddressType, AnswerMethod, Origin, RingGroup, RingGroupDestination, RingMethod, Timestamp,
};
use serde::Deserialize;
use switch::{Command, CommandOutcome};
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

/// The switch's group for a stored one.
pub fn to_routing_group(g: &RingGroup) -> routing::Group {
    routing::Group {
        number: g.number.clone(),
        domain: g.domain.clone(),
        id: Some(g.id),
        ring_method: g.ring_method,
        answer_method: g.answer_method,
        destinations: g
            .destinations
            .iter()
            .map(|d| routing::GroupDestination {
                kind: d.kind,
                target: d.target.clone(),
                ring_timeout_secs: d.ring_timeout_secs,
                delay_secs: d.delay_secs,
            })
            .collect(),
        max_ring_secs: g.max_ring_secs,
        skip_busy: g.skip_busy,
        send_reason: g.send_reason,
    }
}

/// The stored record of a config-file group (id: the group's own, stable),
/// owned by `customer_id` (its domain's), at `now`.
pub fn from_config_group(g: &routing::Group, customer_id: Uuid, now: Timestamp) -> RingGroup {
    RingGroup {
        id: g.id(),
        customer_id,
        number: g.number.clone(),
        domain: g.domain.clone(),
        ring_method: g.ring_method,
        answer_method: g.answer_method,
        destinations: g
            .destinations
            .iter()
            .map(|d| RingGroupDestination {
                kind: d.kind,
                target: d.target.clone(),
                ring_timeout_secs: d.ring_timeout_secs,
                delay_secs: d.delay_secs,
            })
            .collect(),
        max_ring_secs: g.max_ring_secs,
        skip_busy: g.skip_busy,
        send_reason: g.send_reason,
        origin: Origin::Config,
        tm_create: now,
        tm_update: now,
        tm_delete: Timestamp::NOT_YET,
    }
}

async fn owned(state: &ApiState, customer: CustomerId, id: Uuid) -> Result<RingGroup, ApiError> {
    match state.db(move |s| s.ringgroup(id)).await? {
        Some(g) if g.customer_id == customer.0 => Ok(g),
        _ => Err(ApiError::not_found("RINGGROUP_NOT_FOUND", format!("no ring group {id}"))),
    }
}

/// Checks a body and makes the record `id` of it.
async fn record_of(
    state: &ApiState,
    customer: CustomerId,
    id: Uuid,
    body: RingGroupBody,
) -> Result<RingGroup, ApiError> {
    let number = body.number.trim().to_owned();
    let ok = (1..=32).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_alphanumeric() || b"*#+._-".contains(&b));
    if !ok {
        return Err(ApiError::invalid_field("number", "1..32 of letters, digits, * # + . _ -"));
    }
    let domains = state.domains_of(customer.0).await?;
    let want = body.domain.trim();
    let domain = match (want, domains.as_slice()) {
        ("", [only]) => only.name.clone(),
        ("", _) => {
            return Err(ApiError::invalid_field("domain", "required: you have several domains"))
        }
        (d, _) => match domains.iter().find(|x| x.name.eq_ignore_ascii_case(d)) {
            Some(x) => x.name.clone(),
            None => return Err(ApiError::invalid_field("domain", "not one of your domains")),
        },
    };
    let dests: Vec<_> = body
        .destinations
        .iter()
        .map(|d| (d.kind, d.target.as_str(), d.ring_timeout_secs))
        .collect();
    check_destinations(&dests, &domains, state.options().max_destinations)?;
    for (i, d) in body.destinations.iter().enumerate() {
        if d.delay_secs.is_some_and(|s| s > 3600) {
            return Err(ApiError::invalid_field(
                &format!("destinations[{i}].delay_secs"),
                "0..3600",
            ));
        }
    }
    if body.max_ring_secs.is_some_and(|s| !(1..=86_400).contains(&s)) {
        return Err(ApiError::invalid_field("max_ring_secs", "1..86400"));
    }
    let taken = {
        let (n, d) = (number.clone(), domain.clone());
        state
            .db(move |s| {
                Ok(s.ringgroups()?
                    .iter()
                    .any(|g| g.id != id && g.number == n && g.domain.eq_ignore_ascii_case(&d)))
            })
            .await?
    };
    if taken {
        return Err(ApiError::already_exists(
            "RINGGROUP_EXISTS",
            format!("ring group {number}@{domain} exists already"),
        ));
    }
    let now = crate::now();
    Ok(RingGroup {
        id,
        customer_id: customer.0,
        number,
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
    })
}

/// Sends the group to the switch, then stores it.
async fn put(state: &ApiState, g: RingGroup) -> Result<RingGroup, ApiError> {
    match state.command(Command::PutGroup(Box::new(to_routing_group(&g)))).await? {
        CommandOutcome::Done => {}
        CommandOutcome::Refused(reason) => {
            return Err(ApiError::failed_precondition("RINGGROUP_REFUSED", reason))
        }
        other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
    let id = g.id;
    let stored = g.clone();
    let now = state
        .db(move |s| {
            s.upsert_ringgroup(&stored);
            s.flush()?;
            s.ringgroup(id)
        })
        .await?;
    Ok(now.unwrap_or(g))
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
    match state.command(Command::RemoveGroup { id }).await? {
        CommandOutcome::Done | CommandOutcome::NotFound => {}
        CommandOutcome::Refused(reason) => {
            return Err(ApiError::failed_precondition("RINGGROUP_REFUSED", reason))
        }
        other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
    state
        .db(move |s| {
            s.delete_ringgroup(id);
            s.flush()
        })
        .await?;
    let now = crate::now();
    g.tm_update = now;
    g.tm_delete = now;
    Ok(Json(g))
}
