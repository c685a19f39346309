//! `GET /v1.0/registrations`: the phones registered in the customer's
//! domains now (their bindings), with where each really is (source address
//! and transport: what a phone behind NAT is reached at) and when it
//! expires. Read-only; read from the store, which the switch keeps current.
//! Ordered by address-of-record and contact; the page token names the last
//! binding (hex, so that any contact URI fits in a query).

use crate::auth::CustomerId;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::Params;
use crate::paging::{page_type, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use records::{Binding, Timestamp};
use serde::Serialize;
use sip_message::hex;

/// One registered contact.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Registration {
    /// The address-of-record, `ext@domain`.
    pub aor: String,
    /// The Contact URI as registered.
    pub contact: String,
    /// RFC 5626 `+sip.instance`; empty when none.
    pub instance: String,
    /// RFC 5626 `reg-id`; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reg_id: Option<u32>,
    /// q-value, 0..1.
    pub q: f64,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Seconds until then.
    pub expires: i64,
    /// `UDP` or `TCP`.
    pub transport: String,
    /// Where the REGISTER came from (`ip:port`): where calls to it go.
    pub source: String,
    /// The switch's address it arrived on.
    pub local: String,
    /// The phone's User-Agent.
    pub user_agent: String,
    /// Call-ID of its last REGISTER.
    pub call_id: String,
    /// Its CSeq.
    pub cseq: u32,
}

impl Registration {
    fn of(b: &Binding, now: Timestamp) -> Registration {
        Registration {
            aor: b.aor.clone(),
            contact: b.contact.clone(),
            instance: b.instance.clone().unwrap_or_default(),
            reg_id: b.reg_id,
            q: f64::from(b.q) / 1000.0,
            expires_at: b.expires_at,
            expires: (b.expires_at.micros() - now.micros()).max(0) / 1_000_000,
            transport: b.transport.clone(),
            source: b.source.to_string(),
            local: b.local.to_string(),
            user_agent: b.user_agent.clone(),
            call_id: b.call_id.clone(),
            cseq: b.cseq,
        }
    }
}

page_type!(RegistrationPage, Registration, "A page of registrations.");

/// `?page_size=&page_token=` of the registrations (a token of its own).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegistrationQuery {
    /// Items per page: an integer 1..100; anything else (or nothing) means 100.
    #[param(value_type = Option<String>)]
    pub page_size: Option<String>,
    /// `next_page_token` of the previous page (hex); empty or absent: the first.
    #[param(pattern = r"^([0-9a-fA-F]{2})*$")]
    pub page_token: Option<String>,
}

fn encode(aor: &str, contact: &str) -> String {
    hex::encode(format!("{aor}\n{contact}").as_bytes())
}

fn decode(token: &str) -> Option<(String, String)> {
    // Any hex names a place in the (aor, contact) order: ours name the last
    // binding of a page; anything else still names some place.
    let text = String::from_utf8_lossy(&hex::decode(token.as_bytes())?).into_owned();
    let (a, c) = text.split_once('\n').unwrap_or((&text, ""));
    Some((a.to_owned(), c.to_owned()))
}

/// The customer's current registrations.
#[utoipa::path(get, path = "/v1.0/registrations", tag = "registrations", params(RegistrationQuery),
    responses(
        (status = 200, description = "A page", body = RegistrationPage),
        (status = 400, description = "Bad page token", body = ErrorEnvelope),
        (status = 401, description = "No or bad API key", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    customer: CustomerId,
    Params(q): Params<RegistrationQuery>,
) -> Result<Json<RegistrationPage>, ApiError> {
    let size = PageQuery { page_size: q.page_size.clone(), page_token: None }.size();
    let after = match q.page_token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(decode(t).ok_or_else(|| {
            ApiError::bad_request("INVALID_PAGE_TOKEN", "page_token is not a token of this list")
                .with_detail("page_token", "not a page token")
        })?),
    };
    let now = crate::now();
    let mut items = state.db(move |s| s.list_bindings(customer.0, now, size + 1, after)).await?;
    let next_page_token = if items.len() > size {
        items.truncate(size);
        items.last().map(|b| encode(&b.aor, &b.contact)).unwrap_or_default()
    } else {
        String::new()
    };
    let result = items.iter().map(|b| Registration::of(b, now)).collect();
    Ok(Json(RegistrationPage { result, next_page_token }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_round_trip() {
        let t = super::encode("a@test", "sip:a@192.0.2.1;transport=tcp?x=é");
        assert_eq!(
            super::decode(&t),
            Some(("a@test".into(), "sip:a@192.0.2.1;transport=tcp?x=é".into()))
        );
        assert_eq!(super::decode("zz"), None);
        assert_eq!(super::decode("61"), Some(("a".into(), String::new())));
    }
}
