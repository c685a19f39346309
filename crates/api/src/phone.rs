//! `GET /phone`: the browser phone (`web/phone/`, JsSIP over WS or WSS),
//! static files embedded in the binary. No API key: the page holds no data;
//! the phone authenticates to the switch with its own SIP digest.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../../web/phone/index.html");
const SCRIPT: &str = include_str!("../../../web/phone/phone.js");
/// JsSIP 3.13.8 (MIT), built from the npm package: see `web/phone/README.md`.
const JSSIP: &str = include_str!("../../../web/phone/jssip.min.js");

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// `GET /phone`: the page.
pub async fn page() -> impl IntoResponse {
    file("text/html; charset=utf-8", PAGE)
}

/// `GET /phone/phone.js`: the page's script.
pub async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /phone/jssip.min.js`: the vendored JsSIP build.
pub async fn jssip() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", JSSIP)
}
