//! Building HTTP replies: JSON bodies, the JSON error body, and the security headers every
//! response carries.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{Code, Error, ErrorKind};

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    json_body(status, value)
}

/// The first allocation of a JSON reply's body.
const JSON_BODY_CAPACITY: usize = 512;

/// A JSON response of any serializable value, written straight to bytes.
pub fn json_body<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Bytes> {
    // Room for a typical reply (an execute envelope, a listing page grows from there): one
    // allocation instead of a regrowth per doubling.
    let mut body = Vec::with_capacity(JSON_BODY_CAPACITY);
    if serde_json::to_writer(&mut body, value).is_err() {
        // Only a value that cannot be JSON gets here; the error's own body always can be.
        return error_response(&Error::internal());
    }
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

/// The headers every response carries, the page's included: no sniffing, no caching, no
/// referrer, no framing, no cross-origin embedding or window handles, and a Content-Security-
/// Policy that lets nothing load or run (kept when the response brings its own, as the admin
/// page does).
///
/// The seven come first (in the order of [`SECURITY_HEADERS`], then the CSP), the reply's own
/// headers after them in their order; the order of values of one name is kept. Applying it
/// twice gives what applying it once gives.
pub fn security_headers(h: &mut http::HeaderMap) {
    // The seven in one map built once; each reply starts from a clone of it (constant names,
    // static values: copied, not hashed again) and gets its own headers added — the reply's
    // values of the six replaced names dropped, its Content-Security-Policy kept in place of
    // the default. Seven inserts into each reply's map cost ~2.4 k instructions per execute
    // (benches/README.md, "2026-12-07 evening"). (A clone keeps the seven entries' room only:
    // the first header added regrows the list once; measured in the figure above.)
    static SECURITY: std::sync::LazyLock<http::HeaderMap> = std::sync::LazyLock::new(|| {
        let mut h = http::HeaderMap::new();
        for (name, value) in &SECURITY_HEADERS {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::ui::API_CSP),
        );
        h
    });
    let own = std::mem::replace(h, SECURITY.clone());
    let mut name: Option<header::HeaderName> = None;
    let mut own_csp = false;
    // `into_iter` names a header at its first value only (`None` for the next values of it).
    for (first, value) in own {
        if first.is_some() {
            name = first;
        }
        let Some(n) = name.as_ref() else {
            debug_assert!(false, "HeaderMap::into_iter gave a value before any name");
            continue;
        };
        if SECURITY_HEADERS.iter().any(|(s, _)| s == n) {
            continue;
        }
        if n == header::CONTENT_SECURITY_POLICY && !own_csp {
            own_csp = true;
            h.insert(header::CONTENT_SECURITY_POLICY, value);
        } else {
            h.append(n.clone(), value);
        }
    }
}

/// The six headers [`security_headers`] sets whatever the reply carried (a `static`: looked
/// up in place for each of a reply's headers, not copied).
static SECURITY_HEADERS: [(header::HeaderName, &str); 6] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

/// `Retry-After` of a 503 whose store failed for a moment: a retry soon may well work, and one
/// second keeps a retrying client from hammering a store that is struggling.
pub const STORE_RETRY_AFTER_SECS: u64 = 1;

/// The response for an error: `{"error": {"code", "message"}}`, with `Retry-After` when the error
/// says when to retry (429 rate limits and lockouts, 409 `change_in_progress` and
/// `change_not_propagated`) or when a store failed for a moment (503 `kv_unavailable`,
/// `session_store_unavailable`, `store_io`: [`STORE_RETRY_AFTER_SECS`]; decision 0107), and
/// with [`security_headers`]: backends answer some errors
/// themselves, outside [`App::handle`](crate::app::App::handle) (a body too slow or too large, a
/// worker that cannot open its store).
pub fn error_response(e: &Error) -> Response<Bytes> {
    let mut r = json_response(e.status(), &e.to_json());
    security_headers(r.headers_mut());
    let store_failed = e.kind() == ErrorKind::Unavailable
        && matches!(
            e.code(),
            Code::KvUnavailable | Code::SessionStoreUnavailable | Code::StoreIo
        );
    let retry_after = e
        .retry_after_secs()
        .or(store_failed.then_some(STORE_RETRY_AFTER_SECS));
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if let Some(p) = e.pending() {
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/approvals/{}", p.approval_id)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        if let Some(n) = p.waited_secs {
            if let Ok(v) = HeaderValue::from_str(&format!("wait={n}")) {
                r.headers_mut().insert("preference-applied", v);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    /// Backends answer some errors without `App::handle` (a body too large or too slow, a worker
    /// that cannot open its store): those replies carry the same security headers.
    #[test]
    fn error_replies_built_outside_handle_carry_the_security_headers() {
        let r = error_response(&Error::too_large("request body is too large"));
        let h = r.headers();
        assert_eq!(h["content-security-policy"], crate::ui::API_CSP);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    }

    /// What `security_headers` did before it started from a prebuilt map: seven inserts into
    /// the reply's own map (the oracle of the property test below).
    fn security_headers_by_inserts(h: &mut http::HeaderMap) {
        for (name, value) in &SECURITY_HEADERS {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
        if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(crate::ui::API_CSP),
            );
        }
    }

    proptest::proptest! {
        /// For any reply headers (the seven names, others and arbitrary `x-` names, several
        /// values each, any order, some marked sensitive), every name ends with the same values
        /// in the same order as seven inserts into the reply's own map give (sensitivity kept),
        /// and no other header; the seven come first; applying it again changes nothing.
        #[test]
        fn security_headers_equal_seven_inserts(
            entries in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::sample::select(vec![
                            "x-content-type-options", "cache-control", "referrer-policy",
                            "x-frame-options", "cross-origin-opener-policy",
                            "cross-origin-resource-policy", "content-security-policy",
                            "content-type", "set-cookie", "location",
                        ]).prop_map(str::to_string),
                        "x-[a-z]{1,8}",
                    ],
                    "[a-z0-9 ;'=-]{0,12}",
                    proptest::bool::ANY,
                ),
                0..40,
            ),
        ) {
            use proptest::prelude::*;
            let mut h = http::HeaderMap::new();
            for (name, value, sensitive) in &entries {
                let mut value = HeaderValue::from_str(value)
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                value.set_sensitive(*sensitive);
                let name = header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                h.append(name, value);
            }
            let mut expected = h.clone();
            security_headers_by_inserts(&mut expected);
            security_headers(&mut h);
            prop_assert_eq!(h.len(), expected.len());
            prop_assert_eq!(h.keys_len(), expected.keys_len());
            for name in expected.keys() {
                let ours: Vec<_> = h.get_all(name).iter().map(|v| (v, v.is_sensitive())).collect();
                let theirs: Vec<_> =
                    expected.get_all(name).iter().map(|v| (v, v.is_sensitive())).collect();
                prop_assert_eq!(ours, theirs, "{}", name);
            }
            let first: Vec<&str> = h.keys().take(7).map(|k| k.as_str()).collect();
            prop_assert_eq!(
                first,
                [
                    "x-content-type-options", "cache-control", "referrer-policy",
                    "x-frame-options", "cross-origin-opener-policy",
                    "cross-origin-resource-policy", "content-security-policy",
                ]
            );
            let mut again = h.clone();
            security_headers(&mut again);
            prop_assert_eq!(again, h);
        }
    }

    /// Each security header is there once, with Vultrino's value, whatever the reply carried
    /// before; a Content-Security-Policy of the reply's own (the admin page's) is kept.
    #[test]
    fn security_headers_replace_earlier_values_and_keep_a_reply_csp() {
        let names = [
            "x-content-type-options",
            "cache-control",
            "referrer-policy",
            "x-frame-options",
            "cross-origin-opener-policy",
            "cross-origin-resource-policy",
        ];
        let mut h = http::HeaderMap::new();
        for n in names {
            h.append(n, HeaderValue::from_static("upstream-value"));
            h.append(n, HeaderValue::from_static("another"));
        }
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        security_headers(&mut h);
        for n in names {
            assert_eq!(h.get_all(n).iter().count(), 1, "{n}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h.len(), 7);

        let mut bare = http::HeaderMap::new();
        security_headers(&mut bare);
        assert_eq!(bare["content-security-policy"], crate::ui::API_CSP);
        assert_eq!(bare.len(), 7);
    }
}
