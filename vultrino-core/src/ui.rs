//! The admin web UI: four static files compiled into the core, so the local binary and the
//! worker serve byte-identical pages with no CDN and no build step
//! (docs/decisions/0036-admin-ui-embedded-in-core.md).
//!
//! - `GET /` answers the page to a browser (an `Accept` header naming `text/html`) and the
//!   service's JSON description to everything else, so API clients that probe `/` are unchanged
//!   (docs/decisions/0037-root-negotiated-on-accept.md).
//! - `GET /ui/app.js`, `GET /ui/app.css`, `GET /ui/icon.svg`: the page's script, style sheet and
//!   icon.
//!
//! The page runs under a strict Content-Security-Policy ([`PAGE_CSP`]): scripts, styles and
//! requests only from this origin, no inline script or style, no framing, no plugins, forms and
//! `<base>` locked (docs/decisions/0038-csp-on-every-response.md). It signs in with `POST
//! /login`, keeps the session in the HttpOnly cookie the login sets, and keeps the login's CSRF
//! token in `sessionStorage` (this tab only) for the `X-CSRF-Token` header every cookie request
//! needs, reads included. It never stores the `vs_` bearer token
//! (docs/decisions/0039-admin-ui-session-handling.md). User data is written into the page as
//! text only (`textContent`), never as markup.

use bytes::Bytes;
use http::{header, HeaderValue, Response};

/// The page's policy. `default-src 'none'` first, then only what the page uses.
/// Trusted Types are required too: the script writes text only, so no DOM sink may take a
/// string.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'; require-trusted-types-for 'script'";

/// The policy on every other response (JSON, scripts, styles): nothing may load from them, and
/// nothing may frame them.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const ICON_SVG: &str = include_str!("ui/icon.svg");

/// Whether a request's `Accept` header asks for a page (as browsers do when navigating).
pub fn wants_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|item| item.split(';').next().unwrap_or("").trim() == "text/html")
    })
}

/// The page itself, with its Content-Security-Policy.
pub fn page() -> Response<Bytes> {
    let mut r = asset(INDEX_HTML, "text/html; charset=utf-8");
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    r
}

/// One of the page's static files under `/ui/`, or `None` for a name that is not one.
pub fn file(name: &str) -> Option<Response<Bytes>> {
    Some(match name {
        "app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => asset(APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => asset(ICON_SVG, "image/svg+xml"),
        _ => return None,
    })
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(body.as_bytes()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_and_api_clients_do_not() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(Some(chrome)));
        assert!(wants_html(Some("text/html")));
        assert!(!wants_html(None));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(Some("application/json")));
        assert!(!wants_html(Some("text/htmlx")));
    }

    #[test]
    fn the_page_policy_allows_nothing_inline_and_no_framing() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(PAGE_CSP.contains(directive), "{directive}");
        }
        assert!(!PAGE_CSP.contains("unsafe"));
        assert!(!PAGE_CSP.contains('*'));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_its_files_from_ui() {
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        let handler = INDEX_HTML.match_indices(" on").any(|(i, _)| {
            let rest = &INDEX_HTML[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        for script in INDEX_HTML
            .match_indices("<script")
            .map(|(i, _)| &INDEX_HTML[i..])
        {
            assert!(
                script.starts_with("<script src=\"/ui/app.js\""),
                "{script:.60}"
            );
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "user data is written as text only"
        );
        assert!(!APP_JS.contains("eval("));
    }
}
