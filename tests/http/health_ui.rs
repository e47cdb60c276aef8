//! Health, unknown routes and methods, and the admin UI as served to browsers and to API clients.

use serde_json::json;

use crate::env;
use crate::support::{expect, expect_for, Reply};

#[tokio::test]
async fn health_and_unknown_routes_answer_json() {
    let e = env().await;
    let r = e.c.send("GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = e.c.send("GET", "/nope", None, None).await;
    expect(&r, 404, None);
    assert!(r.body["error"]["code"].is_string(), "{}", r.text);
    // Metrics are never on the API listener, even for an admin (the local server serves them
    // on `--metrics-listen` only; the worker not at all: decision 0105).
    let r = e.c.send("GET", "/metrics", Some(&e.admin), None).await;
    expect(&r, 404, "not_found");
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

/// Every 405 says what the route takes, in `Allow` (RFC 9110), for every route of the API.
#[tokio::test]
async fn every_405_names_the_allowed_methods() {
    let e = env().await;
    for (path, allow) in [
        ("/", "GET"),
        ("/healthz", "GET"),
        ("/openapi.json", "GET"),
        ("/ui", "GET"),
        ("/ui/app.js", "GET"),
        ("/login", "POST"),
        ("/logout", "POST"),
        ("/mcp", "POST"),
        ("/v1/execute", "POST"),
        ("/api/v1/execute", "POST"),
        ("/v1/credentials", "GET, POST"),
        ("/v1/credentials/some-alias", "GET, PUT, DELETE"),
        ("/v1/keys", "GET, POST"),
        ("/v1/keys/some-id", "DELETE"),
        ("/v1/tokens", "GET, POST"),
        ("/v1/tokens/some-id", "DELETE"),
        ("/v1/roles", "GET, POST"),
        ("/v1/roles/some-role", "DELETE"),
        ("/v1/audit", "GET"),
        ("/v1/audit/sinks", "GET"),
        ("/v1/admin/migrate-records", "POST"),
        ("/v1/sync/export", "GET"),
        ("/v1/approvals", "GET"),
        ("/v1/approvals/some-id", "GET"),
        ("/v1/approvals/some-id/approve", "POST"),
        ("/v1/approvals/some-id/deny", "POST"),
    ] {
        let allowed: Vec<&str> = allow.split(", ").collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.contains(&method) {
                continue;
            }
            let r = e.c.send(method, path, Some(&e.admin), None).await;
            let what = format!("{method} {path}");
            expect_for(&what, &r, 405, None);
            assert_eq!(
                r.headers.get("allow").and_then(|v| v.to_str().ok()),
                Some(allow),
                "{what}: {:?}",
                r.headers
            );
        }
    }
}

/// Valid JSON that does not fit the route is a schema error, not a JSON syntax error.
#[tokio::test]
async fn json_of_the_wrong_shape_is_a_schema_mismatch() {
    let e = env().await;
    for (path, body) in [
        ("/v1/credentials", json!({"alias": 7})),
        ("/v1/credentials", json!(["a list"])),
        (
            "/v1/keys",
            json!({"name": "k", "role": "executor", "colour": "red"}),
        ),
        ("/v1/roles", json!({})),
    ] {
        let r = e.c.send("POST", path, Some(&e.admin), Some(&body)).await;
        expect_for(&format!("POST {path} {body}"), &r, 400, "schema_mismatch");
    }
    let r =
        e.c.send_raw(
            e.c.http
                .post(format!("{}/v1/credentials", e.c.target.base))
                .bearer_auth(&e.admin)
                .header("content-type", "application/json")
                .body("{\"alias\": "),
        )
        .await;
    expect_for("a body that is not JSON", &r, 400, "invalid_json");
}
