//! What a credential's policy lets through, as the upstream will understand the request: paths an
//! upstream framework would resolve outside the allowed prefixes, wildcards over hosts anyone can
//! register, and who may widen a policy (issue 18).

use serde_json::{json, Value};

use crate::env;
use crate::support::{expect, expect_for, require_loopback_only_network};

/// A `write` key may narrow a policy, but any change that would let a request through that was
/// refused before needs `admin` (or all-new data, which is the same as deleting the credential
/// and creating another: docs/decisions/0050-policy-widening-needs-admin.md).
#[tokio::test]
async fn a_write_key_cannot_widen_an_admin_set_policy() {
    let e = env().await;
    let policy = json!({
        "allowed_hosts": ["127.0.0.1", "api.example.com"], "methods": ["GET"], "path_prefixes": ["/echo"],
        "rate_limit": {"requests": 5, "per_seconds": 60}
    });
    let r = e
        .create(
            json!({"alias": "github", "type": "api_key", "data": {"key": "sk-live-Wd93kQ"},
                       "policy": policy}),
        )
        .await;
    expect(&r, 201, None);
    e.role(&json!({"name": "writer", "permissions": ["read", "write"], "scopes": ["*"]}))
        .await;
    let writer = e.key("writer").await;
    let with = |change: Value| {
        let mut p = policy.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        json!({"policy": p})
    };
    let widenings = [
        ("the method list removed", with(json!({"methods": null}))),
        ("a method added", with(json!({"methods": ["GET", "POST"]}))),
        (
            "the path prefixes removed",
            with(json!({"path_prefixes": null})),
        ),
        (
            "a path prefix shortened",
            with(json!({"path_prefixes": ["/"]})),
        ),
        (
            "a path prefix added",
            with(json!({"path_prefixes": ["/echo", "/token"]})),
        ),
        ("the rate limit removed", with(json!({"rate_limit": null}))),
        (
            "the rate limit raised",
            with(json!({"rate_limit": {"requests": 50, "per_seconds": 60}})),
        ),
        (
            "the rate window shortened",
            with(json!({"rate_limit": {"requests": 5, "per_seconds": 1}})),
        ),
        (
            "the rate window lengthened (a burst across two windows)",
            with(json!({"rate_limit": {"requests": 5, "per_seconds": 3600}})),
        ),
        ("cookies passed", with(json!({"pass_cookies": true}))),
    ];
    for (what, body) in &widenings {
        let r =
            e.c.send("PUT", "/v1/credentials/github", Some(&writer), Some(body))
                .await;
        expect_for(what, &r, 403, "permission_denied");
        // A new secret alone does not make it a new credential either.
        let mut with_secret = body.clone();
        with_secret["secret"] = json!("sk-live-other-Yt71");
        let r =
            e.c.send(
                "PUT",
                "/v1/credentials/github",
                Some(&writer),
                Some(&with_secret),
            )
            .await;
        expect_for(what, &r, 403, "permission_denied");
    }
    let stored =
        e.c.send("GET", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect(&stored, 200, None);
    assert_eq!(stored.body["policy"], policy, "no refused change was kept");

    // Narrowing is the writer's to do (each step narrows the one before).
    let mut narrowed = json!({"policy": policy});
    for (what, change) in [
        (
            "a path prefix lengthened",
            json!({"path_prefixes": ["/echo/v2"]}),
        ),
        (
            "the rate limit lowered",
            json!({"rate_limit": {"requests": 2, "per_seconds": 60}}),
        ),
        (
            "a longer rate window with at most half the requests",
            json!({"rate_limit": {"requests": 1, "per_seconds": 120}}),
        ),
        (
            "cookies not passed, said explicitly",
            json!({"pass_cookies": false}),
        ),
        ("the method list kept", json!({"methods": ["get"]})),
        ("a host removed", json!({"allowed_hosts": ["127.0.0.1"]})),
    ] {
        for (k, v) in change.as_object().unwrap() {
            narrowed["policy"][k] = v.clone();
        }
        let r =
            e.c.send(
                "PUT",
                "/v1/credentials/github",
                Some(&writer),
                Some(&narrowed),
            )
            .await;
        expect_for(what, &r, 200, None);
    }
    // An admin may widen; so may a writer that replaces all of the data.
    for (what, body) in &widenings {
        let r =
            e.c.send("PUT", "/v1/credentials/github", Some(&e.admin), Some(body))
                .await;
        expect_for(what, &r, 200, None);
    }
    let mut with_data = widenings[0].1.clone();
    with_data["data"] = json!({"key": "sk-live-fresh-Qp20"});
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&writer),
            Some(&with_data),
        )
        .await;
    expect(&r, 200, None);
}

/// Tomcat, Jetty and Spring read `..;x` (a dot segment with path parameters) as `..`, and some
/// upstreams decode `%2e` or `%252e` once more: such a path is refused when the credential has
/// path prefixes, and nothing reaches the upstream.
#[tokio::test]
async fn paths_an_upstream_would_resolve_outside_the_prefixes_are_refused() {
    let e = env().await;
    let r = e
        .create(
            json!({"alias": "scoped", "type": "api_key", "data": {"key": "sk-live-Pa77nR"},
                       "policy": {"allowed_hosts": ["127.0.0.1"], "path_prefixes": ["/api/"]}}),
        )
        .await;
    expect(&r, 201, None);
    for path in [
        "/api/..;/token",
        "/api/..;jsessionid=1/token",
        "/api/.;/token",
        "/api/x/..;/..;/token",
        "/api/%2e%2e;/token",
        "/api/%2E%2E;x/token",
        "/api/..%3b/token",
        "/api/..%253b/token",
        "/api/%252e%252e/token",
        "/api/%25252e%25252e/token",
        "/api/x/..%5c..%5ctoken",
        "/api/file%2ejson",
        "/api/.../token",
    ] {
        let r = e.execute(&e.admin, "scoped", &e.up.url(path)).await;
        expect_for(path, &r, 403, "path_not_allowed");
    }
    assert_eq!(e.up.seen().len(), 0, "no request may reach the upstream");
    // Paths under the prefix still go through, `;` parameters and encoded slashes included.
    for path in [
        "/api/users",
        "/api/a;v=1/b",
        "/api/group%2Fproject",
        "/api/v1.2/x",
    ] {
        let r = e.execute(&e.admin, "scoped", &e.up.url(path)).await;
        expect_for(path, &r, 200, None);
    }
    assert_eq!(e.up.seen().len(), 4);
}

/// `*.<public suffix>` matches hosts anyone can register, in the private section of the Public
/// Suffix List too (cloud functions, static hosting, tunnels).
#[tokio::test]
async fn wildcards_over_a_public_suffix_are_refused() {
    let e = env().await;
    for (i, host) in [
        "*.run.app",
        "*.cloudfunctions.net",
        "*.s3.amazonaws.com",
        "*.us-east-1.amazonaws.com",
        "*.vercel.app",
        "*.pages.dev",
        "*.co.uk",
        "*.uk",
        "*.blogspot.com",
        "*.herokuapp.com",
    ]
    .iter()
    .enumerate()
    {
        let r = e
            .create(
                json!({"alias": format!("w{i}"), "type": "api_key", "data": {"key": "k"},
                           "policy": {"allowed_hosts": [host]}}),
            )
            .await;
        expect_for(host, &r, 400, "invalid_host");
    }
    for (i, host) in ["*.example.com", "*.api.example.co.uk", "*.amazonaws.com"]
        .iter()
        .enumerate()
    {
        let r = e
            .create(
                json!({"alias": format!("ok{i}"), "type": "api_key", "data": {"key": "k"},
                           "policy": {"allowed_hosts": [host]}}),
            )
            .await;
        expect_for(host, &r, 201, None);
    }
}

/// `*.amazonaws.com` is a domain of its own, but public suffixes sit under it
/// (`s3.amazonaws.com`, `us-east-1.amazonaws.com`, `*.compute.amazonaws.com`): the wildcard never
/// matches a host under one of them, whose owner is anyone.
#[tokio::test]
#[ignore = "aims at public host names: run by scripts/test.sh inside `unshare -n`"]
async fn a_wildcard_never_matches_a_host_under_a_public_suffix_below_it() {
    require_loopback_only_network();
    let e = env().await;
    let r = e
        .create(
            json!({"alias": "aws", "type": "api_key", "data": {"key": "k"},
                       "policy": {"allowed_hosts": ["*.amazonaws.com"]}}),
        )
        .await;
    expect(&r, 201, None);
    for url in [
        "https://attacker-bucket.s3.amazonaws.com/",
        "https://x.us-east-1.amazonaws.com/",
        "https://a.b.compute.amazonaws.com/",
    ] {
        let r = e.execute(&e.admin, "aws", url).await;
        expect_for(url, &r, 403, "host_not_allowed");
    }
}

/// Laravel and Symfony (with method override on) take the method of a POST from a `_method`
/// parameter — in the query string, a form body (urlencoded or multipart) or, on Laravel, a JSON
/// body — as Rails and Rack do from a form body: `POST …?_method=DELETE` is a DELETE to them. A
/// credential whose policy allows only some methods must not let a request through that the
/// upstream may read as another method; the issue dropped the override headers, and the
/// parameter is the same override (review of issue 18). A `_method` naming an allowed method, or
/// a credential without a method list, has nothing to bypass.
#[tokio::test]
async fn a_method_override_parameter_cannot_turn_an_allowed_method_into_another() {
    let e = env().await;
    let r = e
        .create(
            json!({"alias": "no-delete", "type": "api_key", "data": {"key": "sk-live-Md41uV"},
                       "policy": {"allowed_hosts": ["127.0.0.1"], "methods": ["GET", "POST"]}}),
        )
        .await;
    expect(&r, 201, None);
    let r = e
        .create(
            json!({"alias": "any-method", "type": "api_key", "data": {"key": "sk-live-Am52wX"},
                       "policy": {"allowed_hosts": ["127.0.0.1"]}}),
        )
        .await;
    expect(&r, 201, None);
    let send = |alias: &str, params: Value| {
        let body = json!({"credential": alias, "action": "http.request", "params": params});
        let c = e.c.clone();
        let admin = e.admin.clone();
        async move {
            c.send("POST", "/v1/execute", Some(&admin), Some(&body))
                .await
        }
    };
    let form = |body: &str, content_type: &str| {
        json!({"method": "POST", "url": e.up.url("/items/1"),
               "headers": {"Content-Type": content_type}, "body": body})
    };
    let overrides = [
        (
            "in the URL's query",
            json!({"method": "POST", "url": e.up.url("/items/1?_method=DELETE")}),
        ),
        (
            "in the URL's query, encoded and lowercase",
            json!({"method": "POST", "url": e.up.url("/items/1?%5Fmethod=delete")}),
        ),
        (
            "in the query parameters",
            json!({"method": "POST", "url": e.up.url("/items/1"), "query": {"_method": "PUT"}}),
        ),
        (
            "in a form body",
            form("name=x&_method=DELETE", "application/x-www-form-urlencoded"),
        ),
        (
            "in a multipart body",
            form(
                "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
                "multipart/form-data; boundary=b",
            ),
        ),
        (
            "in a JSON body",
            json!({"method": "POST", "url": e.up.url("/items/1"), "body": {"_method": "PATCH"}}),
        ),
    ];
    for (what, params) in &overrides {
        let r = send("no-delete", params.clone()).await;
        expect_for(what, &r, 403, "method_not_allowed_by_policy");
    }
    assert_eq!(e.up.seen().len(), 0, "no request may reach the upstream");
    // Nothing to bypass: an allowed method named, or no method list.
    let r = send(
        "no-delete",
        json!({"method": "POST", "url": e.up.url("/items/1?_method=GET")}),
    )
    .await;
    expect_for("an allowed method named", &r, 200, None);
    for (what, params) in &overrides {
        let r = send("any-method", params.clone()).await;
        expect_for(what, &r, 200, None);
    }
}
