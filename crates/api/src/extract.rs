//! Request extractors whose every refusal is an [`ApiError`] in the
//! envelope, naming the offending field: JSON bodies (unknown fields are
//! refused by the types' `deny_unknown_fields`; the size limit gives 413),
//! query parameters, and UUIDs in the path. Why not axum's own: their
//! rejections are plain text without the field.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// The text between the first pair of backticks in serde's message
/// (`unknown field `foo`, expected ...` names `foo`).
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message.get(start..)?.find('`')?;
    message.get(start..start + len)
}

/// The offending field of a body `T` could not be read from: a path into
/// the body, completed with the field serde names (unknown or missing).
fn field_of(path: &str, message: &str) -> String {
    let named = (message.starts_with("unknown field") || message.starts_with("missing field"))
        .then(|| quoted(message))
        .flatten();
    match (path, named) {
        // The path may name the field already (an unknown field does).
        (p, Some(n)) if p == n || p.ends_with(&format!(".{n}")) => p.to_owned(),
        (".", Some(n)) | ("", Some(n)) => n.to_owned(),
        (p, Some(n)) => format!("{p}.{n}"),
        (".", None) | ("", None) => "body".to_owned(),
        (p, None) => p.to_owned(),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BODY_TOO_LARGE",
                    "the request body is larger than the limit",
                )
            } else {
                ApiError::bad_request("BAD_BODY", format!("cannot read the body: {e}"))
            }
        })?;
        // Every body is an object: serde would also read a struct from an
        // array (`[null, null]`), which no client means.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("INVALID_JSON", "the body must be a JSON object")
                .with_detail("body", "not a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                let message = inner.to_string();
                let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
                let field = field_of(&path, &message);
                let reason = if message.starts_with("unknown field") {
                    "UNKNOWN_FIELD"
                } else {
                    "INVALID_FIELD"
                };
                ApiError::bad_request(reason, format!("{field}: {message}"))
                    .with_detail(&field, message)
            } else {
                ApiError::bad_request(
                    "INVALID_JSON",
                    format!("the body is not valid JSON: {inner}"),
                )
            }
        })?;
        de.end().map_err(|e| {
            ApiError::bad_request("INVALID_JSON", format!("trailing characters after JSON: {e}"))
        })?;
        Ok(Body(value))
    }
}

/// Query parameters of type `T` (unknown ones are ignored: `accesskey`
/// travels there too).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Params)
            .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("bad query: {e}")))
    }
}

/// The `{id}` of the path: a UUID, else 400 naming `id`.
#[derive(Clone, Copy, Debug)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid_field("id", "missing id"))?;
        Uuid::parse_str(&raw).map(IdPath).map_err(|_| {
            ApiError::bad_request("INVALID_ID", format!("{raw:?} is not a UUID"))
                .with_detail("id", "not a UUID")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named() {
        assert_eq!(field_of(".", "unknown field `bogus`, expected one of `a`"), "bogus");
        assert_eq!(field_of("bogus", "unknown field `bogus`, expected one of `a`"), "bogus");
        assert_eq!(field_of("d[1].x", "unknown field `x`, expected `type`"), "d[1].x");
        assert_eq!(
            field_of("destinations[0]", "unknown field `x`, expected `type`"),
            "destinations[0].x"
        );
        assert_eq!(field_of(".", "missing field `source`"), "source");
        assert_eq!(field_of("ring_method", "unknown variant `x`"), "ring_method");
        assert_eq!(field_of(".", "invalid type"), "body");
    }
}
