//! Errors in VoIPBin's envelope, and the request context that every
//! request runs in. Why one place: every failure (a handler's, a body the
//! extractor refused, an unknown route, a wrong method) must answer with the
//! same envelope carrying the same `request_id` that the response header
//! and the request's log line carry, so a support ticket finds the log.
//!
//! A handler returns [`ApiError`]; its response carries the error as an
//! extension and no body. `request_context` (the outermost layer) gives
//! each request its id, renders the envelope with it, turns any other
//! error response into an envelope too (never a framework's text), sets
//! `X-Request-Id`, counts the request and logs one line.

use crate::ApiState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Instant;
use tracing::Instrument;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One offending field of a bad request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The field, as a path into the body (`destinations[0].type`), or the
    /// query or path parameter.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// VoIPBin's error object.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Canonical status, one per HTTP code: INVALID_ARGUMENT (400),
    /// UNAUTHENTICATED (401), PERMISSION_DENIED (403), NOT_FOUND (404),
    /// ALREADY_EXISTS or FAILED_PRECONDITION (409), RESOURCE_EXHAUSTED (413,
    /// 429), INTERNAL (500), UNAVAILABLE (503).
    pub status: String,
    /// An UPPER_SNAKE code naming the error (`GROUPCALL_NOT_FOUND`).
    pub reason: String,
    /// For a person.
    pub message: String,
    /// `req_...`: also the `X-Request-Id` header and in the request's log line.
    pub request_id: String,
    /// The offending fields of a bad request, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// An error answer: HTTP status, canonical status, reason, message, details.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub http: StatusCode,
    /// Canonical status string.
    pub status: &'static str,
    /// UPPER_SNAKE reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Offending fields.
    pub details: Vec<ErrorDetail>,
}

fn canonical(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 | 405 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        413 | 429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl ApiError {
    /// An error with the canonical status of `http`.
    pub fn new(http: StatusCode, reason: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            http,
            status: canonical(http),
            reason: reason.into(),
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400 INVALID_ARGUMENT.
    pub fn bad_request(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    /// 400 naming the offending field.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        Self::bad_request("INVALID_FIELD", format!("{field}: {description}"))
            .with_detail(field, description)
    }

    /// 404 NOT_FOUND.
    pub fn not_found(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason, message)
    }

    /// 409 ALREADY_EXISTS.
    pub fn already_exists(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, reason, message)
    }

    /// 409 FAILED_PRECONDITION (the state does not allow it).
    pub fn failed_precondition(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: "FAILED_PRECONDITION",
            ..Self::new(StatusCode::CONFLICT, reason, message)
        }
    }

    /// 409 READ_ONLY: defined in the config file.
    pub fn read_only(what: &str) -> Self {
        Self::failed_precondition(
            "READ_ONLY",
            format!("this {what} is defined in the config file and cannot be changed by the API"),
        )
    }

    /// 503 UNAVAILABLE: the switch core did not answer.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SWITCH_UNAVAILABLE",
            "the switch core did not answer; try again",
        )
    }

    /// 503 UNAVAILABLE: the database cannot be read now (PostgreSQL down,
    /// connection lost); `cause` is logged at WARN, not sent.
    pub fn database_unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "api: database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "the database cannot be reached; try again",
        )
    }

    /// 500 INTERNAL; `cause` is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "api: internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
    }

    /// Adds an offending field.
    pub fn with_detail(mut self, field: &str, description: impl Into<String>) -> Self {
        self.details.push(ErrorDetail { field: field.to_owned(), description: description.into() });
        self
    }

    /// The envelope with `request_id`.
    pub fn envelope(&self, request_id: &str) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                status: self.status.to_owned(),
                reason: self.reason.clone(),
                message: self.message.clone(),
                request_id: request_id.to_owned(),
                details: self.details.clone(),
            },
        }
    }

    fn render(&self, request_id: &str) -> Response {
        let body = serde_json::to_vec(&self.envelope(request_id)).unwrap_or_default();
        let mut r = (self.http, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.http == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }

    /// The error for a bare error status some layer answered with.
    fn for_status(code: StatusCode) -> ApiError {
        let (reason, message) = match code.as_u16() {
            404 => ("ROUTE_NOT_FOUND", "no such resource"),
            405 => ("METHOD_NOT_ALLOWED", "method not allowed on this resource"),
            413 => ("BODY_TOO_LARGE", "the request body is too large"),
            415 => ("UNSUPPORTED_MEDIA_TYPE", "send JSON"),
            400..=499 => ("BAD_REQUEST", "bad request"),
            _ => ("INTERNAL", "internal error"),
        };
        ApiError::new(code, reason, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.http.as_u16(), self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    /// No body yet: the request layer renders it with the request id.
    fn into_response(self) -> Response {
        let mut r = self.http.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

impl From<crate::Unavailable> for ApiError {
    fn from(_: crate::Unavailable) -> Self {
        ApiError::unavailable()
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Unavailable(_) => ApiError::database_unavailable(e),
            e => ApiError::internal(e),
        }
    }
}

/// The id of one request: `req_` and 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn new() -> RequestId {
        RequestId(format!("req_{}", uuid::Uuid::new_v4().simple()))
    }
}

/// The route template (`/v1.0/groupcalls/{id}`) a request matched, passed
/// from [`remember_route`] (inside the router) to [`request_context`].
#[derive(Clone, Debug)]
struct RouteTemplate(String);

/// Inside the router (a route layer): notes which route matched.
pub(crate) async fn remember_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteTemplate(r));
    }
    resp
}

/// The outermost layer: request id, envelope, header, metric, log line.
pub(crate) async fn request_context(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = RequestId::new();
    let method: Method = req.method().clone();
    let start = Instant::now();
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("api", request_id = %id.0);
    let mut resp = next.run(req).instrument(span).await;
    let route = resp
        .extensions()
        .get::<RouteTemplate>()
        .map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    let status = resp.status();
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        resp = err.render(&id.0);
    } else if status.is_client_error() || status.is_server_error() {
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            resp = ApiError::for_status(status).render(&id.0);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let latency = start.elapsed();
    state.metrics().api_request(&route, method.as_str(), status.as_u16(), latency);
    tracing::info!(
        request_id = %id.0,
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "api request"
    );
    resp
}

/// The router's fallback: no such route.
pub(crate) async fn no_route() -> ApiError {
    ApiError::for_status(StatusCode::NOT_FOUND)
}

/// The method routers' fallback: wrong method.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::for_status(StatusCode::METHOD_NOT_ALLOWED)
}
