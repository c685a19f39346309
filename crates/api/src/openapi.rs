//! `GET /v1.0/openapi.json`: the OpenAPI document, generated with utoipa
//! from the handlers' annotations and the very types they serialize (the
//! records derive their schemas), so that it cannot drift from the code.
//! It names the security schemes (bearer key, `accesskey` query parameter),
//! every field, and the error envelope of every error status a path
//! answers, so that a schema-driven tester (schemathesis) can check the
//! live API against it.

use crate::{
    calls, console, error, extensions, groupcalls, metrics, registrations, ringgroups, traces,
    webhooks,
};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "forkswitch API",
        description = "Groupcalls and calls in VoIPBin's shape; extensions, ring groups, registrations, webhooks.",
    ),
    paths(
        groupcalls::create, groupcalls::list, groupcalls::get, groupcalls::hangup, groupcalls::delete,
        calls::list, calls::get, calls::hangup,
        extensions::create, extensions::list, extensions::get, extensions::update, extensions::delete,
        ringgroups::create, ringgroups::list, ringgroups::get, ringgroups::update, ringgroups::delete,
        registrations::list,
        webhooks::get_config, webhooks::put_config, webhooks::delete_config,
        metrics::scrape, document,
        traces::groupcall_messages, traces::call_messages, console::events,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::ErrorDetail)),
    modifiers(&Security),
    security(("bearer" = []), ("accesskey" = [])),
    tags(
        (name = "groupcalls", description = "Groupcalls: click-to-call, watch, hang up"),
        (name = "calls", description = "Calls: one per leg and per inbound call"),
        (name = "extensions", description = "Phone accounts"),
        (name = "ringgroups", description = "Ring groups"),
        (name = "registrations", description = "Registered phones"),
        (name = "webhook", description = "Where events go"),
        (name = "metrics", description = "Prometheus metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "accesskey",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("accesskey"))),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/v1.0/openapi.json", tag = "metrics", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
