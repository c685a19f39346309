//! `/v1.0/extensions`: phone accounts in VoIPBin's shape (`id, customer_id,
//! name, detail, extension, domain_name, username, tm_*`). The password is
//! write-only: only its HA1 hashes (MD5 and SHA-256, realm = domain) are
//! kept, and no response carries it. A change is checked by the
//! provisioning rules (those of the config file's `[[extensions]]`) and sent
//! to the switch (`PutExtension` / `RemoveExtension`), which puts it in
//! effect for the next REGISTER or INVITE without a restart and has it
//! stored; extensions from the config file are shown with `origin: config`
//! and refuse changes (409 READ_ONLY).
//! Beyond VoIPBin's shape, each extension carries how it takes calls
//! (`max_calls`, `dnd`, `forward_always`, `forward_busy`,
//! `forward_noanswer`, `forward_noanswer_secs`: see [`CallHandling`]),
//! which the fork engine follows on the next call.

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Body, IdPath, Params};
use crate::paging::{page, page_type, PageQuery};
use crate::provision::{change, rejected, Reading, Resource, Stored};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use records::{Address, CallHandling, ExtensionRecord, Origin, Timestamp};
use serde::{Deserialize, Serialize};
use switch::Command;
use uuid::Uuid;

/// An extension as the API shows it (never a password or a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Extension {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub customer_id: Uuid,
    /// Display name (caller-ID name).
    pub name: String,
    /// Free text.
    pub detail: String,
    /// The extension (SIP user part, `test11`).
    pub extension: String,
    /// The SIP domain (`test`): the phone registers as `extension@domain_name`.
    pub domain_name: String,
    /// The digest username (the extension).
    pub username: String,
    /// `config` (read-only) or `api`.
    pub origin: Origin,
    /// Concurrent-call limit, do-not-disturb and call forwards.
    #[serde(flatten)]
    pub handling: CallHandling,
    /// Created.
    pub tm_create: Timestamp,
    /// Last changed.
    pub tm_update: Timestamp,
    /// Deleted.
    pub tm_delete: Timestamp,
}

impl From<&ExtensionRecord> for Extension {
    fn from(r: &ExtensionRecord) -> Self {
        Extension {
            id: r.id,
            customer_id: r.customer_id,
            name: r.extension.display_name.clone(),
            detail: r.detail.clone(),
            extension: r.extension.name.clone(),
            domain_name: r.extension.domain.clone(),
            username: r.extension.name.clone(),
            origin: r.origin,
            handling: r.extension.handling.clone(),
            tm_create: r.tm_create,
            tm_update: r.tm_update,
            tm_delete: r.tm_delete,
        }
    }
}

page_type!(ExtensionPage, Extension, "A page of extensions.");

/// `POST /v1.0/extensions`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionCreate {
    /// The extension (SIP user part): letters, digits, `.`, `_`, `-`, `+`, `~`.
    #[schema(pattern = r"^[A-Za-z0-9._~+-]{1,64}$")]
    pub extension: String,
    /// The SIP password (write-only; only its hashes are kept).
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// One of your SIP domains; may be left out when you have only one.
    #[serde(default)]
    pub domain_name: String,
    /// Most concurrent calls in or out (1..1000); default unlimited.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_calls: Option<u32>,
    /// Do not disturb (default false).
    #[serde(default)]
    pub dnd: bool,
    /// Every call goes there instead.
    #[serde(default)]
    pub forward_always: Option<Address>,
    /// Where calls go when it is busy.
    #[serde(default)]
    pub forward_busy: Option<Address>,
    /// Where calls go when it does not answer.
    #[serde(default)]
    pub forward_noanswer: Option<Address>,
    /// Seconds it rings before `forward_noanswer` (1..3600, default 20);
    /// only with `forward_noanswer`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    pub forward_noanswer_secs: Option<u64>,
}

/// `Some(None)` for JSON `null` (clear it), `Some(Some(x))` for a value; a
/// field left out stays `None` (unchanged) through `#[serde(default)]`.
fn given<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /v1.0/extensions/{id}`: what is given changes.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionUpdate {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub detail: Option<String>,
    /// A new SIP password (write-only).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub password: Option<String>,
    /// Most concurrent calls (1..1000); `null`: unlimited.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub max_calls: Option<Option<u32>>,
    /// Do not disturb.
    #[serde(default)]
    pub dnd: Option<bool>,
    /// Every call goes there instead; `null` clears it.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<Address>)]
    pub forward_always: Option<Option<Address>>,
    /// Where calls go when it is busy; `null` clears it.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<Address>)]
    pub forward_busy: Option<Option<Address>>,
    /// Where calls go when it does not answer; `null` clears it (and its
    /// `forward_noanswer_secs`, unless given).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<Address>)]
    pub forward_noanswer: Option<Option<Address>>,
    /// Seconds before `forward_noanswer` (1..3600; only with
    /// `forward_noanswer`); `null`: the default.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 3600)]
    pub forward_noanswer_secs: Option<Option<u64>>,
}

/// A forward as stored: the target trimmed, display fields dropped.
fn forward(to: Option<Address>) -> Option<Address> {
    to.map(|a| Address::new(a.kind, a.target.trim()))
}

fn check_password(pw: &str) -> Result<(), ApiError> {
    if (1..=128).contains(&pw.len()) {
        Ok(())
    } else {
        Err(ApiError::invalid_field("password", "1..128 characters"))
    }
}

fn check_text(field: &str, v: &str) -> Result<(), ApiError> {
    if v.len() <= 1024 {
        Ok(())
    } else {
        Err(ApiError::invalid_field(field, "at most 1024 bytes"))
    }
}

async fn owned(
    state: &ApiState,
    customer: CustomerId,
    id: Uuid,
) -> Result<ExtensionRecord, ApiError> {
    match state.db(move |s| s.extension_record(id)).await? {
        Some(r) if r.customer_id == customer.0 => Ok(r),
        _ => Err(ApiError::not_found("EXTENSION_NOT_FOUND", format!("no extension {id}"))),
    }
}

/// How the errors of an extension change are called.
const EXTENSION: Resource =
    Resource { refused: "EXTENSION_REFUSED", taken: "EXTENSION_EXISTS", field: body_field };

/// A record field's name in the request body.
fn body_field(field: &str) -> &str {
    match field {
        "name" => "extension",
        "domain" => "domain_name",
        "display_name" => "name",
        other => other,
    }
}

/// Checks the account by the provisioning rules against what the store
/// holds, and has the switch put it in effect (and stored).
async fn put(
    state: &ApiState,
    stored: &Stored,
    r: ExtensionRecord,
) -> Result<ExtensionRecord, ApiError> {
    provisioning::check_extension(&r.extension, &stored.known())
        .map_err(|e| rejected(e, &EXTENSION))?;
    change(state, Command::PutExtension(Box::new(r.clone())), &EXTENSION).await?;
    Ok(r)
}

/// Create an extension.
#[utoipa::path(post, path = "/v1.0/extensions", tag = "extensions",
    request_body = ExtensionCreate,
    responses(
        (status = 200, description = "The extension", body = Extension),
        (status = 400, description = "Bad body", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 409, description = "It exists already, or the switch refused", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    customer: CustomerId,
    Body(body): Body<ExtensionCreate>,
) -> Result<Json<Extension>, ApiError> {
    let user = body.extension.trim().to_owned();
    check_password(&body.password)?;
    check_text("detail", &body.detail)?;
    let stored = Stored::read(&state, Reading::Everything).await?;
    let domain = stored.domain_of(customer.0, body.domain_name.trim(), "domain_name")?;
    if stored.has_extension(&user, &domain) {
        return Err(ApiError::already_exists(
            "EXTENSION_EXISTS",
            format!("extension {user}@{domain} exists already"),
        ));
    }
    let mut ext = registrar::extension_with_password(&user, &domain, &body.password);
    ext.display_name = body.name.clone();
    ext.handling = CallHandling {
        max_calls: body.max_calls,
        dnd: body.dnd,
        forward_always: forward(body.forward_always),
        forward_busy: forward(body.forward_busy),
        forward_noanswer: forward(body.forward_noanswer),
        forward_noanswer_secs: body.forward_noanswer_secs,
    };
    let now = crate::now();
    let r = ExtensionRecord {
        id: Uuid::new_v4(),
        customer_id: customer.0,
        extension: ext,
        detail: body.detail,
        origin: Origin::Api,
        tm_create: now,
        tm_update: now,
        tm_delete: Timestamp::NOT_YET,
    };
    Ok(Json(Extension::from(&put(&state, &stored, r).await?)))
}

/// List the customer's extensions, newest first.
#[utoipa::path(get, path = "/v1.0/extensions", tag = "extensions", params(PageQuery),
    responses(
        (status = 200, description = "A page", body = ExtensionPage),
        (status = 400, description = "Bad page token", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    customer: CustomerId,
    Params(q): Params<PageQuery>,
) -> Result<Json<ExtensionPage>, ApiError> {
    let (size, after) = (q.size(), q.cursor()?);
    let items = state.db(move |s| s.list_extension_records(customer.0, size + 1, after)).await?;
    let (items, next_page_token) = page(items, size, |r| (r.tm_create, r.id));
    Ok(Json(ExtensionPage { result: items.iter().map(Extension::from).collect(), next_page_token }))
}

/// One extension.
#[utoipa::path(get, path = "/v1.0/extensions/{id}", tag = "extensions",
    params(("id" = Uuid, Path, description = "Extension id")),
    responses(
        (status = 200, description = "The extension", body = Extension),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such extension (of this customer)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Extension>, ApiError> {
    Ok(Json(Extension::from(&owned(&state, customer, id).await?)))
}

/// Change an extension's name, detail, password or call handling (DND,
/// forwards, `max_calls`; `null` clears a forward or the limit).
#[utoipa::path(put, path = "/v1.0/extensions/{id}", tag = "extensions",
    params(("id" = Uuid, Path, description = "Extension id")),
    request_body = ExtensionUpdate,
    responses(
        (status = 200, description = "The extension", body = Extension),
        (status = 400, description = "Bad body or id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such extension (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file), or the switch refused", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn update(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
    Body(body): Body<ExtensionUpdate>,
) -> Result<Json<Extension>, ApiError> {
    let mut r = owned(&state, customer, id).await?;
    if r.origin == Origin::Config {
        return Err(ApiError::read_only("extension"));
    }
    if let Some(pw) = &body.password {
        check_password(pw)?;
        let fresh = registrar::extension_with_password(&r.extension.name, &r.extension.domain, pw);
        r.extension.ha1_md5 = fresh.ha1_md5;
        r.extension.ha1_sha256 = fresh.ha1_sha256;
    }
    if let Some(n) = body.name {
        r.extension.display_name = n;
    }
    if let Some(d) = body.detail {
        check_text("detail", &d)?;
        r.detail = d;
    }
    let h = &mut r.extension.handling;
    if let Some(m) = body.max_calls {
        h.max_calls = m;
    }
    if let Some(d) = body.dnd {
        h.dnd = d;
    }
    if let Some(f) = body.forward_always {
        h.forward_always = forward(f);
    }
    if let Some(f) = body.forward_busy {
        h.forward_busy = forward(f);
    }
    if let Some(f) = body.forward_noanswer {
        // Its ring time goes with a cleared forward.
        if f.is_none() && body.forward_noanswer_secs.is_none() {
            h.forward_noanswer_secs = None;
        }
        h.forward_noanswer = forward(f);
    }
    if let Some(s) = body.forward_noanswer_secs {
        h.forward_noanswer_secs = s;
    }
    r.tm_update = crate::now();
    let stored = Stored::read(&state, Reading::Everything).await?;
    Ok(Json(Extension::from(&put(&state, &stored, r).await?)))
}

/// Delete an extension (its registrations go with it).
#[utoipa::path(delete, path = "/v1.0/extensions/{id}", tag = "extensions",
    params(("id" = Uuid, Path, description = "Extension id")),
    responses(
        (status = 200, description = "The deleted extension", body = Extension),
        (status = 400, description = "Bad id", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 404, description = "No such extension (of this customer)", body = ErrorEnvelope),
        (status = 409, description = "Read-only (config file)", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
        (status = 503, description = "The switch core is unavailable", body = ErrorEnvelope),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    customer: CustomerId,
    IdPath(id): IdPath,
) -> Result<Json<Extension>, ApiError> {
    let mut r = owned(&state, customer, id).await?;
    if r.origin == Origin::Config {
        return Err(ApiError::read_only("extension"));
    }
    let (name, domain) = (r.extension.name.clone(), r.extension.domain.clone());
    change(&state, Command::RemoveExtension { name, domain }, &EXTENSION).await?;
    let now = crate::now();
    r.tm_update = now;
    r.tm_delete = now;
    Ok(Json(Extension::from(&r)))
}
