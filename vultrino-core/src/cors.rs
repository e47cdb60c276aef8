//! CORS: off by default; when configured, an explicit list of origins — never `*`, since admin
//! sessions carry credentials. The same list decides which browser origins may call `/mcp` and
//! which cross-origin cookie requests pass the CSRF check.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

/// Whether `origin` is one of the configured origins (exact match).
pub fn allows(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| o == origin)
}

/// The answer to an `OPTIONS` preflight: 204, with the CORS grant when `origin` is allowed.
pub fn preflight(origins: &[String], origin: Option<&str>) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let Some(o) = origin.filter(|o| allows(origins, o)) else {
        return r;
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(o) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, x-csrf-token, mcp-protocol-version, mcp-method, mcp-name",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// Grant `origin` on a response when it is allowed.
pub fn grant(origins: &[String], origin: Option<&str>, h: &mut HeaderMap) {
    if let Some(o) = origin.filter(|o| allows(origins, o)) {
        if let Ok(v) = HeaderValue::from_str(o) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
