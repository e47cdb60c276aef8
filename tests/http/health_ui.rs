//! Health, unknown routes and methods, and the admin UI as served to browsers and to API clients.

use crate::env;
use crate::support::{expect, Reply};

#[tokio::test]
async fn health_and_unknown_routes_answer_json() {
    let e = env().await;
    let r = e.c.send("GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = e.c.send("GET", "/nope", None, None).await;
    expect(&r, 404, None);
    assert!(r.body["error"]["code"].is_string(), "{}", r.text);
    let r =
        e.c.send("PATCH", "/v1/credentials", Some(&e.admin), None)
            .await;
    expect(&r, 405, None);
    let r = e.c.send("GET", "/v1/credentials", None, None).await;
    expect(&r, 401, "unauthenticated");
}

/// The admin UI is served by the core itself (both backends), to browsers only, under a strict
/// Content-Security-Policy; API clients probing `/` still get JSON. (What the page does is
/// tested in a real browser: tests/ui.)
#[tokio::test]
async fn browsers_get_the_admin_ui_under_a_strict_policy_and_api_clients_get_json() {
    let e = env().await;
    let page =
        e.c.send_raw(
            e.c.http
                .get(format!("{}/", e.c.target.base))
                .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        )
        .await;
    expect(&page, 200, None);
    let header = |r: &Reply, name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert!(page.text.contains("<script src=\"/ui/app.js\""));

    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = e.c.send("GET", path, None, None).await;
        expect(&r, 200, None);
        assert!(header(&r, "content-type").starts_with(kind), "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    }
    let r = e.c.send("GET", "/ui/secrets.json", None, None).await;
    expect(&r, 404, "not_found");

    // No Accept (curl, SDKs): the JSON description, which nothing may render as a page either.
    let r = e.c.send("GET", "/", None, None).await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("vultrino")));
    assert!(header(&r, "content-security-policy").contains("default-src 'none'"));
}
