//! `/v1.0/calls`: the call records (one per leg a groupcall dialed, one per
//! inbound call), read as the switch persisted them, and hung up through
//! the switch. A ringing leg is CANCELed alone (the rest of its group goes
//! on); the answered leg or the inbound call ends the whole call.

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{IdPath, Params};
use crate::paging::{page_type, JsonPage, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use records::Call;
use switch::{Command, CommandOutcome};
use uuid::Uuid;

page_type!(CallPage, Call, "A page of calls.");

pub(crate) async fn owned(
    state: &ApiState,
    customer: CustomerId,
    id: Uuid,
) -> Result<Call, ApiError> {
    match state.db(move |s| s.call(id)).await? {
        Some(c) if c.customer_id == customer.0 => Ok(c),
        _ => Err(ApiError::not_found("CALL_NOT_FOUND", format!("no call {id}"))),
    }
}

/// List the customer's calls, newest first.
#[utoipa::path(get, path = "/v1.0/calls", tag = "calls", params(PageQuery),
    responses(
        (status = 200, description = "A page", body = CallPage),
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
    let items = state.db(move |s| s.list_calls_json(customer.0, size + 1, after)).await?;
    Ok(JsonPage::new(items, size))
}

/// One call, as it is now.
#[utoipa::path(get, path = "/v1.0/calls/{id}", tag = "calls",
    params(("id" = Uuid, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call", body = Call),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such call (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Call>, ApiError> {
    Ok(Json(owned(&state, customer, id).await?))
}

/// Hang up one call.
#[utoipa::path(post, path = "/v1.0/calls/{id}/hangup", tag = "calls",
    params(("id" = Uuid, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call (being hung up, or already over)", body = Call),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such call (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "The switch refused", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn hangup(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Call>, ApiError> {
    let c = owned(&state, customer, id).await?;
    match state.command(Command::HangupCall { id }).await? {
        CommandOutcome::Done | CommandOutcome::NotFound => {
            let now = state
                .db(move |s| {
                    s.flush()?;
                    s.call(id)
                })
                .await?;
            Ok(Json(now.unwrap_or(c)))
        }
        CommandOutcome::Refused(reason) => {
            Err(ApiError::failed_precondition("HANGUP_REFUSED", reason))
        }
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}
