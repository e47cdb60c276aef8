//! Browser contexts are refused on this route before anything else is looked at.
//!
//! Whatever the upstream serves is served on the admin UI's origin. Every reply is sandboxed
//! ([`super::harden`]), but a reply that a browser *loads as a page, a frame, a script or a
//! worker* should never be produced in the first place: an agent could put
//! `/proxy/<alias>/x.html?key=vk_…` in its output for the admin to click, or register
//! `/proxy/<alias>/sw.js` as a service worker from a page of that origin. SDKs, CLIs and
//! scripts send no `Sec-Fetch-*` header; a browser sends them on every request, and a page's
//! own `fetch()` / `XMLHttpRequest` is `Sec-Fetch-Dest: empty` with a mode other than
//! `navigate`. So (decision 0082):
//!
//! - any `Service-Worker` header (a service worker's script being fetched) is refused;
//! - `Sec-Fetch-Mode` other than `cors`, `no-cors` or `same-origin` (`navigate`, the older
//!   `nested-navigate`, `websocket`, anything unreadable) is refused;
//! - `Sec-Fetch-Dest` other than `empty` (`document`, `iframe`, `frame`, `script`, `worker`,
//!   `serviceworker`, `sharedworker`, `style`, `object`, `embed`, `image`, …) is refused;
//!
//! each with 403 `browser_context` and nothing sent upstream. A request without these headers
//! (every SDK) and a page's `fetch()` pass. Browsers too old to send `Sec-Fetch-*` (before
//! 2020–2023 depending on the engine) are not recognised: the sandboxing CSP is the defence
//! that remains for them.

use http::HeaderMap;

use crate::error::{Code, Error, Result};

/// The `Sec-Fetch-Mode` values of a page's own requests (`fetch()`, `XMLHttpRequest`,
/// `sendBeacon`).
const SCRIPTED_MODES: [&str; 3] = ["cors", "no-cors", "same-origin"];

/// 403 `browser_context` when the request comes from a browser loading a document, a frame, a
/// script, a worker or a service worker (see the [module doc](self)); `Ok` for SDKs and a
/// page's `fetch()`.
pub(super) fn refuse_browser_context(headers: &HeaderMap) -> Result<()> {
    // The usual SDK request has none of the three headers: one pass over its few names instead
    // of three look-ups by text (docs/decisions/0113).
    if !headers.keys().any(|n| {
        let n = n.as_str();
        n.starts_with("sec-fetch-") || n == "service-worker"
    }) {
        return Ok(());
    }
    let every = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().map(str::trim).unwrap_or("\u{0}"))
            .collect::<Vec<_>>()
    };
    let worker = headers.contains_key("service-worker");
    let mode = every("sec-fetch-mode")
        .into_iter()
        .any(|m| !SCRIPTED_MODES.iter().any(|s| m.eq_ignore_ascii_case(s)));
    let dest = every("sec-fetch-dest")
        .into_iter()
        .any(|d| !d.eq_ignore_ascii_case("empty"));
    if worker || mode || dest {
        return Err(Error::forbidden(
            "a browser loading a page, frame, script or worker from /proxy/ is refused \
             (Sec-Fetch-Dest, Sec-Fetch-Mode or Service-Worker says so): the route is for SDKs, \
             scripts and a page's fetch(), and nothing was sent upstream",
        )
        .with_code(Code::BrowserContext));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn check(pairs: &[(&'static str, &'static str)]) -> Result<()> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        refuse_browser_context(&h)
    }

    #[test]
    fn sdks_and_a_page_s_fetch_pass() {
        for ok in [
            &[][..],
            &[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")][..],
            &[
                ("sec-fetch-mode", "same-origin"),
                ("sec-fetch-dest", "empty"),
            ][..],
            &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "EMPTY")][..],
            &[("sec-fetch-site", "same-origin")][..],
        ] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn pages_frames_scripts_and_workers_are_refused() {
        for refused in [
            &[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ][..],
            &[("sec-fetch-mode", "navigate")][..],
            &[("sec-fetch-mode", "nested-navigate")][..],
            &[("sec-fetch-mode", "websocket")][..],
            &[("sec-fetch-dest", "iframe")][..],
            &[("sec-fetch-dest", "script"), ("sec-fetch-mode", "no-cors")][..],
            &[
                ("sec-fetch-dest", "serviceworker"),
                ("sec-fetch-mode", "same-origin"),
            ][..],
            &[("sec-fetch-dest", "worker")][..],
            &[("sec-fetch-dest", "sharedworker")][..],
            &[("sec-fetch-dest", "image")][..],
            &[("sec-fetch-dest", "empty"), ("sec-fetch-dest", "document")][..],
            &[("service-worker", "script")][..],
            &[("service-worker", "anything")][..],
        ] {
            let e = check(refused).expect_err(&format!("{refused:?}"));
            assert_eq!(e.code(), Code::BrowserContext);
            assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        }
    }

    #[test]
    fn an_unreadable_value_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-dest", HeaderValue::from_bytes(b"\xff").unwrap());
        assert!(refuse_browser_context(&h).is_err());
    }
}
