//! Cursor paging, as VoIPBin's lists: `page_size` 1..100 (anything else,
//! or none, is 100), `page_token` opaque to the client, newest first,
//! `next_page_token` empty on the last page. The token names the last item
//! by `(tm_create, id)`, so that records sharing a `tm_create` are neither
//! skipped nor repeated; VoIPBin's own token (a bare `tm_create`) is
//! accepted too. One more item than asked is read to know whether a next
//! page exists.

use crate::error::ApiError;
use records::Timestamp;
use serde::Deserialize;
use store::Cursor;
use uuid::Uuid;

/// Most items in a page, and the default.
pub const MAX_PAGE_SIZE: usize = 100;

/// `?page_size=&page_token=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page: an integer 1..100; anything else (or nothing) means 100.
    #[param(value_type = Option<String>)]
    pub page_size: Option<String>,
    /// `next_page_token` of the previous page; empty or absent: the first.
    /// (VoIPBin's bare `tm_create` is accepted too.)
    #[param(
        pattern = r"^(-?[0-9]{1,18}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub page_token: Option<String>,
}

impl PageQuery {
    /// The page size to use.
    pub fn size(&self) -> usize {
        match self.page_size.as_deref().map(str::trim).map(str::parse::<usize>) {
            Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => MAX_PAGE_SIZE,
        }
    }

    /// The cursor of the token, if any.
    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        match self.page_token.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => decode(t).map(Some).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_PAGE_TOKEN",
                    "page_token is not a token of this list",
                )
                .with_detail("page_token", "not a page token")
            }),
        }
    }
}

/// The token after the item `(tm_create, id)`: `<micros>.<uuid>`.
pub fn encode(tm_create: Timestamp, id: Uuid) -> String {
    format!("{}.{}", tm_create.micros(), id)
}

/// The cursor of a token: ours, or VoIPBin's bare `tm_create`.
pub fn decode(token: &str) -> Option<Cursor> {
    if let Some((us, id)) = token.split_once('.') {
        if let (Ok(us), Ok(id)) = (us.parse::<i64>(), Uuid::parse_str(id)) {
            return Some(Cursor::after(Timestamp::from_micros(us), id));
        }
    }
    Timestamp::parse(token).map(Cursor::before)
}

/// Cuts the `size + 1` items read down to a page and its next token.
pub fn page<T>(
    mut items: Vec<T>,
    size: usize,
    key: impl Fn(&T) -> (Timestamp, Uuid),
) -> (Vec<T>, String) {
    if items.len() <= size {
        return (items, String::new());
    }
    items.truncate(size);
    let next = items.last().map(|t| {
        let (tm, id) = key(t);
        encode(tm, id)
    });
    (items, next.unwrap_or_default())
}

/// A page of records as their stored JSON text, written out as
/// `{"result": [...], "next_page_token": "..."}` without decoding and
/// encoding each record again (the text is what serde wrote for the same
/// type, so the body is the one [`page_type`] would give).
#[derive(Debug)]
pub struct JsonPage {
    items: Vec<store::JsonRecord>,
    next_page_token: String,
}

impl JsonPage {
    /// The page of the `size + 1` records read.
    pub fn new(items: Vec<store::JsonRecord>, size: usize) -> JsonPage {
        let (items, next_page_token) = page(items, size, |r| (r.tm_create, r.id));
        JsonPage { items, next_page_token }
    }
}

impl axum::response::IntoResponse for JsonPage {
    fn into_response(self) -> axum::response::Response {
        let len: usize = self.items.iter().map(|r| r.json.len() + 1).sum();
        let mut body = String::with_capacity(len + 64);
        body.push_str("{\"result\":[");
        for (i, r) in self.items.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&r.json);
        }
        // The token is digits, a dot and a UUID: nothing to escape.
        body.push_str("],\"next_page_token\":\"");
        body.push_str(&self.next_page_token);
        body.push_str("\"}");
        let json = axum::http::HeaderValue::from_static("application/json");
        ([(axum::http::header::CONTENT_TYPE, json)], body).into_response()
    }
}

/// A page of `T`s: `{"result": [...], "next_page_token": "..."}`.
macro_rules! page_type {
    ($name:ident, $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            /// The items, newest first.
            pub result: Vec<$item>,
            /// Pass as `page_token` for the next page; empty on the last page.
            pub next_page_token: String,
        }
    };
}
pub(crate) use page_type;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let id = Uuid::new_v4();
        let t = Timestamp::from_micros(1_682_091_208_569_053);
        assert_eq!(decode(&encode(t, id)), Some(Cursor::after(t, id)));
        assert_eq!(decode("2023-04-21 15:33:28.569053"), Some(Cursor::before(t)));
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode("12.not-a-uuid"), None);
        let q = |s: &str| PageQuery { page_size: Some(s.into()), page_token: None }.size();
        assert_eq!(
            (q("1"), q("100"), q("0"), q("101"), q("x"), q("-3")),
            (1, 100, 100, 100, 100, 100)
        );
    }
}
