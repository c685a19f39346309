//! Who is asking: an API key, from `Authorization: Bearer KEY`, the
//! `accesskey` query parameter or the `accesskey` cookie (VoIPBin reads all
//! three), becomes the [`CustomerId`] every handler scopes its queries to.
//! Only the key's SHA-256 is looked up (`store::hash_api_key`): the store
//! never holds a key in clear. Why an extractor: a handler that takes a
//! `CustomerId` cannot run unauthenticated, and one that forgets to scope
//! has no customer to forget.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use uuid::Uuid;

/// The customer the request's API key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomerId(pub Uuid);

/// The key the request presents, if any; `Err` for a malformed
/// `Authorization` header.
fn presented_key(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| unauthenticated("INVALID_API_KEY"))?;
        let (scheme, key) =
            v.trim().split_once(' ').ok_or_else(|| unauthenticated("INVALID_API_KEY"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(unauthenticated("INVALID_API_KEY"));
        }
        return Ok(Some(key.trim().to_owned()));
    }
    if let Some(q) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        if let Some((_, k)) = pairs.into_iter().find(|(n, _)| n == "accesskey") {
            return Ok(Some(k));
        }
    }
    for v in parts.headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for c in v.split(';') {
            if let Some(("accesskey", k)) = c.trim().split_once('=') {
                return Ok(Some(k.to_owned()));
            }
        }
    }
    Ok(None)
}

fn unauthenticated(reason: &str) -> ApiError {
    let message = if reason == "MISSING_API_KEY" {
        "an API key is required: Authorization: Bearer KEY, or ?accesskey=KEY"
    } else {
        "the API key is not valid"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, reason, message)
}

impl FromRequestParts<ApiState> for CustomerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let key = match presented_key(parts) {
            Ok(Some(k)) if !k.is_empty() => k,
            Ok(_) => {
                state.metrics().auth_failure();
                return Err(unauthenticated("MISSING_API_KEY"));
            }
            Err(e) => {
                state.metrics().auth_failure();
                return Err(e);
            }
        };
        let hash = store::hash_api_key(&key);
        match state.db(move |s| s.api_key_customer(&hash)).await? {
            Some(c) => Ok(CustomerId(c)),
            None => {
                state.metrics().auth_failure();
                Err(unauthenticated("INVALID_API_KEY"))
            }
        }
    }
}
