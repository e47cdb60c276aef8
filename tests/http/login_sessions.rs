//! Logging in and out: the session cookie's attributes, lockout after wrong passwords (exact
//! under concurrency), cookie sessions that need the CSRF token, and bearer tokens.

use serde_json::json;

use crate::support::{expect, expect_for, session_cookie, ServerOptions, ADMIN_PASSWORD};
use crate::{env, env_with};

#[tokio::test]
async fn login_sets_a_locked_down_cookie_and_logout_kills_the_session_at_once() {
    let e = env().await;
    let r =
        e.c.send(
            "POST",
            "/login",
            None,
            Some(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    expect(&r, 200, None);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(r.body["csrf_token"].is_string() && r.body["expires_at"].is_u64());
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    let session = session_cookie(&r);
    let token = r.body["token"].as_str().unwrap().to_string();
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect(&r, 200, None);
    let r = e.c.send("POST", "/logout", Some(&token), None).await;
    expect(&r, 204, None);
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect_for("a logged-out session must be dead at once", &r, 401, None);
    // …and so is its cookie twin.
    let r =
        e.c.send_cookie("GET", "/v1/credentials", &session, Some(&csrf), None)
            .await;
    expect_for(
        "the cookie of a logged-out login is dead too",
        &r,
        401,
        None,
    );
}

#[tokio::test]
async fn wrong_passwords_lock_the_client_out_with_retry_after() {
    let e = env_with(ServerOptions {
        login_max_attempts: 3,
        ..ServerOptions::default()
    })
    .await;
    // The harness's own login succeeded and reset the counter: exactly 3 attempts remain.
    let bad = json!({"username": "admin", "password": "wrong"});
    for _ in 0..3 {
        let r = e.c.send("POST", "/login", None, Some(&bad)).await;
        expect(&r, 401, "invalid_login");
    }
    let r = e.c.send("POST", "/login", None, Some(&bad)).await;
    expect(&r, 429, None);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);
    // Even the right password is refused while locked out.
    let good = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let r = e.c.send("POST", "/login", None, Some(&good)).await;
    expect(&r, 429, None);
}

/// The lockout counter is exact under concurrency (a Durable Object on the edge, a lock-free
/// counter locally): of 20 simultaneous wrong passwords exactly the configured number get 401.
#[tokio::test]
async fn concurrent_wrong_passwords_get_exactly_the_configured_number_of_401s() {
    let e = env_with(ServerOptions {
        login_max_attempts: 4,
        ..ServerOptions::default()
    })
    .await;
    let bad = json!({"username": "admin", "password": "wrong"});
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (c, bad) = (e.c.clone(), bad.clone());
        set.spawn(async move { c.send("POST", "/login", None, Some(&bad)).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(s) = set.join_next().await {
        statuses.push(s.unwrap());
    }
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    assert_eq!((count(401), count(429)), (4, 16), "{statuses:?}");
}

/// A login makes a cookie for browsers and a bearer token for API clients; each works only its
/// own way, and every cookie request — reads too — needs the CSRF token: browsers send a host's
/// cookies to all its ports, so a page on another local port must get nothing from the cookie.
#[tokio::test]
async fn cookie_sessions_need_csrf_for_every_request_and_are_no_bearer_tokens() {
    let e = env().await;
    let r =
        e.c.send(
            "POST",
            "/login",
            None,
            Some(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    expect(&r, 200, None);
    let token = r.body["token"].as_str().unwrap().to_string();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    let cookie = session_cookie(&r);
    let cookie_value = cookie.trim_start_matches("vultrino_session=").to_string();
    assert!(token.starts_with("vs_") && cookie_value.starts_with("vc_"));
    assert_ne!(cookie_value[3..], token[3..], "two tokens, not one");
    assert!(
        !r.text.contains(&cookie_value),
        "the cookie is never in the body"
    );
    let body = json!({"alias": "c1", "type": "api_key", "data": {"key": "k"}, "policy": {"allowed_hosts": ["127.0.0.1"]}});
    let r =
        e.c.send_cookie("POST", "/v1/credentials", &cookie, None, Some(&body))
            .await;
    expect(&r, 403, "csrf_failed");
    let url = format!("{}/v1/credentials", e.c.target.base);
    let r =
        e.c.send_raw(
            e.c.http
                .post(&url)
                .header("cookie", &cookie)
                .header("x-csrf-token", &csrf)
                .header("origin", "https://evil.example")
                .json(&body),
        )
        .await;
    expect_for("cross-origin change must be refused", &r, 403, None);
    let r =
        e.c.send_cookie("POST", "/v1/credentials", &cookie, Some(&csrf), Some(&body))
            .await;
    expect(&r, 201, None);
    // Reads need the token too: the cookie alone opens nothing.
    for path in ["/v1/credentials", "/v1/audit", "/v1/sync/export"] {
        let r = e.c.send_cookie("GET", path, &cookie, None, None).await;
        expect(&r, 403, "csrf_failed");
        let r =
            e.c.send_cookie("GET", path, &cookie, Some("not-the-token"), None)
                .await;
        expect_for("a wrong CSRF token", &r, 403, "csrf_failed");
    }
    let r =
        e.c.send_cookie("GET", "/v1/credentials", &cookie, Some(&csrf), None)
            .await;
    expect(&r, 200, None);
    // Each token only its own way.
    let r =
        e.c.send("GET", "/v1/credentials", Some(&cookie_value), None)
            .await;
    expect_for("the cookie is no bearer token", &r, 401, None);
    let bearer_as_cookie = format!("vultrino_session={token}");
    let r =
        e.c.send_cookie(
            "GET",
            "/v1/credentials",
            &bearer_as_cookie,
            Some(&csrf),
            None,
        )
        .await;
    expect_for("the bearer token is no cookie", &r, 401, None);
    // Logging out through the cookie ends the bearer twin as well.
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect(&r, 200, None);
    let r =
        e.c.send_cookie("POST", "/logout", &cookie, Some(&csrf), None)
            .await;
    expect(&r, 204, None);
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect_for("the twin died with it", &r, 401, None);
    let r =
        e.c.send_cookie("GET", "/v1/credentials", &cookie, Some(&csrf), None)
            .await;
    expect_for("the cookie died with its own logout", &r, 401, None);
}

/// Any web page the admin visits can POST to `/login` (a `no-cors` fetch or a form needs no
/// preflight). Such requests are refused before the lockout counts them, so a page cannot lock
/// the admin out — nor write audit events: a browser marks them cross-site (`Origin`,
/// `Sec-Fetch-Site`: 403) or they are not JSON (a cross-origin JSON request needs a preflight,
/// which is not granted: 415).
#[tokio::test]
async fn a_cross_site_page_cannot_lock_the_admin_out() {
    let e = env_with(ServerOptions {
        login_max_attempts: 3,
        ..ServerOptions::default()
    })
    .await;
    let url = format!("{}/login", e.c.target.base);
    let bad = json!({"username": "admin", "password": "wrong"}).to_string();
    for _ in 0..5 {
        // What `fetch(url, {method: "POST", mode: "no-cors", body})` from another site sends.
        let r =
            e.c.send_raw(
                e.c.http
                    .post(&url)
                    .header("content-type", "text/plain;charset=UTF-8")
                    .header("origin", "https://evil.example")
                    .header("sec-fetch-site", "cross-site")
                    .header("sec-fetch-mode", "no-cors")
                    .body(bad.clone()),
            )
            .await;
        expect_for("a no-cors POST from another site", &r, 403, "csrf_failed");
        // A JSON body marked cross-site, by `Origin` or by `Sec-Fetch-Site` alone.
        let r =
            e.c.send_raw(
                e.c.http
                    .post(&url)
                    .header("origin", "https://evil.example")
                    .header("content-type", "application/json")
                    .body(bad.clone()),
            )
            .await;
        expect_for("a JSON login from another origin", &r, 403, "csrf_failed");
        let r =
            e.c.send_raw(
                e.c.http
                    .post(&url)
                    .header("sec-fetch-site", "cross-site")
                    .header("content-type", "application/json")
                    .body(bad.clone()),
            )
            .await;
        expect_for("a login marked cross-site", &r, 403, "csrf_failed");
        // Not JSON (an old browser's form post sends no Origin).
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut rb = e.c.http.post(&url).body(bad.clone());
            if let Some(t) = content_type {
                rb = rb.header("content-type", t);
            }
            let r = e.c.send_raw(rb).await;
            expect_for(
                &format!("a {content_type:?} body"),
                &r,
                415,
                "unsupported_media_type",
            );
        }
    }
    // None of that counted: the admin logs in, from a page of this origin too.
    let own_origin = e.c.target.base.clone();
    let good = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let r =
        e.c.send_raw(
            e.c.http
                .post(&url)
                .header("origin", &own_origin)
                .header("sec-fetch-site", "same-origin")
                .header("content-type", "application/json; charset=utf-8")
                .body(good.to_string()),
        )
        .await;
    expect_for("the admin is not locked out", &r, 200, None);
    // …and nothing was audited for the refused requests.
    let r =
        e.c.send("GET", "/v1/audit?limit=100", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    let failures = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["action"] == "login" && ev["outcome"] != "success")
        .count();
    assert_eq!(failures, 0, "{}", r.text);
}

/// A malformed login body (not JSON, or JSON without `username`/`password`) is an attempt like a
/// wrong password: it counts toward the client's lockout and is audited as a failed login, with
/// the body's error code (docs/decisions/0096-cli-and-api-habits.md).
#[tokio::test]
async fn malformed_login_bodies_count_toward_the_lockout_and_are_audited() {
    let e = env_with(ServerOptions {
        login_max_attempts: 3,
        ..ServerOptions::default()
    })
    .await;
    let url = format!("{}/login", e.c.target.base);
    let r =
        e.c.send_raw(
            e.c.http
                .post(&url)
                .header("content-type", "application/json")
                .body("username=admin&password=guess"),
        )
        .await;
    expect_for("a login body that is not JSON", &r, 400, "invalid_json");
    let r =
        e.c.send("POST", "/login", None, Some(&json!({"user": "admin"})))
            .await;
    expect_for(
        "a login body without the fields",
        &r,
        400,
        "schema_mismatch",
    );
    let r =
        e.c.send("POST", "/login", None, Some(&json!({"password": 7})))
            .await;
    expect_for(
        "a login body of the wrong types",
        &r,
        400,
        "schema_mismatch",
    );
    // Three attempts spent: the right password is now refused.
    let good = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let r = e.c.send("POST", "/login", None, Some(&good)).await;
    expect_for(
        "a login after three malformed bodies",
        &r,
        429,
        "login_locked",
    );

    let failures: Vec<_> = e
        .audit_events("login", 5)
        .await
        .into_iter()
        .filter(|ev| ev["outcome"] == "failure")
        .collect();
    let codes: Vec<_> = failures
        .iter()
        .filter_map(|ev| ev["code"].as_str())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == "invalid_json").count(),
        1,
        "{failures:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == "schema_mismatch").count(),
        2,
        "{failures:?}"
    );
    for ev in &failures {
        assert!(ev["actor"].as_str().unwrap().starts_with("client:"), "{ev}");
        assert!(!ev.to_string().contains("guess"), "{ev}");
    }
}

/// A `vs_` token this deployment never issued is `invalid_session`; a real session that ended is
/// `session_expired`.
#[tokio::test]
async fn made_up_session_tokens_are_invalid_not_expired() {
    let e = env().await;
    for made_up in [
        "vs_abc",
        "vs_AAAAAAAAAAAAAAAAAAAAAA.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r =
            e.c.send("GET", "/v1/credentials", Some(made_up), None)
                .await;
        expect_for(made_up, &r, 401, "invalid_session");
    }
    // The admin's own token, mangled in its last character.
    let mut mangled = e.admin.clone();
    let last = mangled.pop().unwrap();
    mangled.push(if last == 'A' { 'B' } else { 'A' });
    let r =
        e.c.send("GET", "/v1/credentials", Some(&mangled), None)
            .await;
    expect_for("a mangled session token", &r, 401, "invalid_session");
    let r = e.c.send("POST", "/logout", Some(&e.admin), None).await;
    expect(&r, 204, None);
    let r =
        e.c.send("GET", "/v1/credentials", Some(&e.admin), None)
            .await;
    expect_for("a logged-out session", &r, 401, "session_expired");
}
