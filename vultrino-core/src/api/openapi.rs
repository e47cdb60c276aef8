//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, written by hand
//! (`openapi.json` beside this file) and compiled in, so the local server and the worker serve
//! the same bytes. It is kept true by tests rather than generated: the unit test below checks
//! that it lists exactly the routes of [`super::allow::ROUTES`] with their methods, and the HTTP
//! suite (tests/http) checks every reply it receives against the document's schemas and
//! statuses on both backends, as Schemathesis does with generated requests
//! (docs/decisions/0103-openapi-document.md).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The reply to `GET /openapi.json` (public: it holds no secret).
pub(super) fn response() -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(DOCUMENT.as_bytes()));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use crate::api::allow::ROUTES;

    /// The methods the document gives `path`, in `Allow` order (as the table writes them).
    fn documented(doc: &serde_json::Value, path: &str) -> Option<String> {
        let item = doc["paths"].get(path)?.as_object()?;
        let methods: Vec<&str> = ["get", "put", "post", "delete", "patch"]
            .into_iter()
            .filter(|m| item.contains_key(*m))
            .collect();
        let mut upper: Vec<String> = methods.iter().map(|m| m.to_uppercase()).collect();
        // The table's order: GET, then PUT before DELETE, POST after GET.
        upper.sort_by_key(|m| match m.as_str() {
            "GET" => 0,
            "POST" => 1,
            "PUT" => 2,
            "PATCH" => 3,
            _ => 4,
        });
        Some(upper.join(", "))
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, allow) in ROUTES {
            assert_eq!(
                documented(&doc, path).as_deref(),
                Some(*allow),
                "{path}: the document's methods differ from the router's"
            );
        }
        for path in doc["paths"].as_object().expect("paths").keys() {
            assert!(
                path.starts_with("/proxy/") || ROUTES.iter().any(|(p, _)| p == path),
                "{path} is documented but is no route of the router"
            );
        }
    }
}
