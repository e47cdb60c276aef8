//! Executing a request through a credential: each credential type injected (API key, basic auth,
//! query parameter, OAuth2 client credentials and refresh token, the token fetched once), the
//! secret scrubbed from what the agent gets back in every encoding, and the reply's shape
//! (binary bodies, redirects returned, compressed bodies).

use serde_json::json;

use crate::support::upstream::{
    OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REFRESH_TOKEN, SESSION_COOKIE,
};
use crate::support::{expect, workerd_backend};
use crate::{assert_scrubbed, env, env_cancellable, API_SECRET};

#[tokio::test]
async fn api_key_credential_is_injected_and_scrubbed_from_the_echo() {
    let e = env().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    let r =
        e.c.send(
            "POST",
            "/v1/execute",
            Some(&agent),
            Some(
                &json!({"credential": "github", "action": "http.request", "params": {
                    "method": "POST", "url": e.up.url("/echo"),
                    "headers": {"Authorization": "Bearer agent-supplied", "X-Custom": "kept"},
                    "query": {"page": 2},
                    "body": {"hello": "world"}
                }}),
            ),
        )
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200);
    assert_eq!(r.body["body_encoding"], "utf8");
    // The upstream got the real secret, not the agent's header.
    let seen = e.up.seen().pop().unwrap();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {API_SECRET}")
    );
    assert_eq!(seen.headers["x-custom"], "kept");
    // APIs that refuse anonymous clients (GitHub) get a User-Agent.
    assert!(
        seen.headers["user-agent"].starts_with("vultrino-edge/"),
        "{:?}",
        seen.headers.get("user-agent")
    );
    assert_eq!(seen.query, "page=2");
    assert_eq!(seen.headers["content-type"], "application/json");
    // The agent's own User-Agent wins.
    let own =
        e.c.send(
            "POST",
            "/v1/execute",
            Some(&agent),
            Some(
                &json!({"credential": "github", "method": "GET", "url": e.up.url("/echo"),
                "headers": {"User-Agent": "my-agent/1.0"}}),
            ),
        )
        .await;
    expect(&own, 200, None);
    assert_eq!(
        e.up.seen().pop().unwrap().headers["user-agent"],
        "my-agent/1.0"
    );
    // The agent sees it nowhere, in no encoding, headers included.
    assert_scrubbed(&r.text, API_SECRET);
    assert!(r.text.contains("[REDACTED]"));
    assert_eq!(
        r.body["headers"]["x-echo-authorization"],
        "Bearer [REDACTED]"
    );
}

#[tokio::test]
async fn basic_auth_query_param_and_flat_shape_work() {
    let e = env().await;
    let r = e
        .create(json!({"alias": "basic", "type": "basic_auth", "data": {"username": "bob", "password": "pw-Basic-5521"},
            "policy": {"allowed_hosts": ["127.0.0.1"]}}))
        .await;
    expect(&r, 201, None);
    let r = e
        .create(json!({"alias": "qp", "type": "query_param", "data": {"name": "api_key", "value": "qp-Secret-9931"},
            "policy": {"allowed_hosts": ["127.0.0.1"]}}))
        .await;
    expect(&r, 201, None);
    let r = e.execute(&e.admin, "basic", &e.up.url("/echo")).await;
    expect(&r, 200, None);
    let seen = e.up.seen().pop().unwrap();
    assert_eq!(
        seen.headers["authorization"],
        "Basic Ym9iOnB3LUJhc2ljLTU1MjE="
    );
    assert_scrubbed(&r.text, "pw-Basic-5521");
    assert_scrubbed(&r.text, "Ym9iOnB3LUJhc2ljLTU1MjE=");
    // The flat request shape of earlier Vultrino clients, at their path (/api/v1/execute); an
    // agent-supplied api_key is replaced.
    let r = e
        .c
        .send(
            "POST",
            "/api/v1/execute",
            Some(&e.admin),
            Some(&json!({"credential": "qp", "method": "GET", "url": e.up.url("/echo?api_key=agent&x=1")})),
        )
        .await;
    expect(&r, 200, None);
    let seen = e.up.seen().pop().unwrap();
    assert!(
        seen.query.contains("api_key=qp-Secret-9931"),
        "{}",
        seen.query
    );
    assert!(!seen.query.contains("api_key=agent"), "{}", seen.query);
    assert_scrubbed(&r.text, "qp-Secret-9931");
}

#[tokio::test]
async fn oauth2_token_is_fetched_once_and_reused() {
    let e = env().await;
    e.oauth2_cred(
        "oa",
        OAUTH_CLIENT_SECRET,
        json!({"allowed_hosts": ["127.0.0.1"]}),
    )
    .await;
    for _ in 0..2 {
        let r = e.execute(&e.admin, "oa", &e.up.url("/echo")).await;
        expect(&r, 200, None);
        assert_eq!(r.body["status"], 200, "{}", r.text);
        assert_scrubbed(&r.text, "access-token-1-Kx92");
        assert_scrubbed(&r.text, OAUTH_CLIENT_SECRET);
    }
    assert_eq!(
        e.up.tokens_issued(),
        1,
        "the token must be cached between requests"
    );
    let seen = e.up.seen().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer access-token-1-Kx92");
}

#[tokio::test]
async fn oauth2_refresh_token_grant_is_used_when_configured() {
    let e = env().await;
    let r = e
        .create(json!({"alias": "oar", "type": "oauth2", "data": {
                "token_url": e.up.url("/token"), "client_id": OAUTH_CLIENT_ID, "client_secret": OAUTH_CLIENT_SECRET,
                "refresh_token": OAUTH_REFRESH_TOKEN},
            "policy": {"allowed_hosts": ["127.0.0.1"]}}))
        .await;
    expect(&r, 201, None);
    let r = e.execute(&e.admin, "oar", &e.up.url("/echo")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    let token_call =
        e.up.seen()
            .into_iter()
            .find(|s| s.path == "/token")
            .unwrap();
    let body = String::from_utf8_lossy(&token_call.body).into_owned();
    assert!(body.contains("grant_type=refresh_token"), "{body}");
    assert_scrubbed(&r.text, OAUTH_REFRESH_TOKEN);
    assert_scrubbed(&r.text, "access-token-1-Kx92");
}

#[tokio::test]
async fn binary_bodies_come_back_base64() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r = e.execute(&e.admin, "github", &e.up.url("/binary")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["body_encoding"], "base64");
    assert_eq!(r.body["body"], "AJ+Slv8=");
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r = e.execute(&e.admin, "github", &e.up.url("/redirect")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 302, "{}", r.text);
    assert!(r.body["headers"]["location"]
        .as_str()
        .unwrap()
        .ends_with("/landing"));
    assert_eq!(e.up.hits("/landing"), 0);
}

#[tokio::test]
async fn compressed_upstream_replies_are_refused_and_identity_is_asked_for() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r =
        e.c.send(
            "POST",
            "/v1/execute",
            Some(&e.admin),
            Some(
                &json!({"credential": "github", "method": "GET", "url": e.up.url("/gzip"),
                "headers": {"Accept-Encoding": "gzip, br", "Range": "bytes=0-3"}}),
            ),
        )
        .await;
    if workerd_backend() {
        // On the edge the runtime itself decodes compressed bodies before Vultrino reads them,
        // so the reply is decoded text — and scrubbed like any other.
        expect(&r, 200, None);
        assert!(
            r.body["body"].as_str().unwrap().contains("[REDACTED]"),
            "{}",
            r.text
        );
        assert_scrubbed(&r.text, API_SECRET);
    } else {
        // Locally nothing decodes it: a body the scrubber cannot read is refused.
        expect(&r, 502, "upstream_encoded");
    }
    let seen = e.up.seen().pop().unwrap();
    assert_eq!(seen.headers["accept-encoding"], "identity");
    assert!(!seen.headers.contains_key("range"));
}

/// Headers that make Spring, Rails, Symfony, IIS and many gateways treat a request as another
/// method or another path: the policy checked the method and path given, so the upstream must
/// act on those.
#[tokio::test]
async fn method_and_url_override_headers_never_reach_the_upstream() {
    let e = env().await;
    let r = e
        .create(json!({"alias": "ro", "type": "api_key", "data": {"key": API_SECRET},
            "policy": {"allowed_hosts": ["127.0.0.1"], "methods": ["GET"], "path_prefixes": ["/echo"]}}))
        .await;
    expect(&r, 201, None);
    let overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("x-original-url", "/admin/delete-everything"),
        ("X-Rewrite-URL", "/admin/delete-everything"),
    ];
    let mut headers = serde_json::Map::new();
    for (name, value) in overrides {
        headers.insert(name.into(), json!(value));
    }
    headers.insert("X-Custom".into(), json!("kept"));
    let r =
        e.c.send(
            "POST",
            "/v1/execute",
            Some(&e.admin),
            Some(
                &json!({"credential": "ro", "method": "GET", "url": e.up.url("/echo"),
                "headers": headers}),
            ),
        )
        .await;
    expect(&r, 200, None);
    let seen = e.up.seen().pop().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.headers["x-custom"], "kept");
    for (name, _) in overrides {
        assert!(
            !seen.headers.contains_key(&name.to_ascii_lowercase()),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
}

/// A session cookie the upstream hands out after an authenticated request is a credential of
/// its own, usable without Vultrino: it reaches the agent only when an admin turned on the
/// credential's `pass_cookies`, and the secret is scrubbed from it even then.
#[tokio::test]
async fn upstream_cookies_reach_the_agent_only_when_the_policy_passes_them() {
    let e = env().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    let r = e.execute(&agent, "github", &e.up.url("/set-cookie")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200);
    let headers = r.body["headers"].as_object().unwrap();
    assert!(
        !headers.contains_key("set-cookie") && !headers.contains_key("set-cookie2"),
        "{headers:?}"
    );
    assert!(!r.text.contains("upstream-session-Qw12"), "{}", r.text);

    let on = json!({"policy": {"allowed_hosts": ["127.0.0.1"], "pass_cookies": true}});
    let r =
        e.c.send("PUT", "/v1/credentials/github", Some(&e.admin), Some(&on))
            .await;
    expect(&r, 200, None);
    let detail =
        e.c.send("GET", "/v1/credentials/github", Some(&agent), None)
            .await;
    assert_eq!(detail.body["policy"]["pass_cookies"], true);
    let r = e.execute(&agent, "github", &e.up.url("/set-cookie")).await;
    expect(&r, 200, None);
    let cookies = r.body["headers"]["set-cookie"].as_str().unwrap_or_default();
    assert!(cookies.contains(SESSION_COOKIE), "{cookies}");
    assert!(cookies.contains("echo=Bearer_[REDACTED]"), "{cookies}");
    assert!(
        r.body["headers"]["set-cookie2"]
            .as_str()
            .is_some_and(|c| c.contains(SESSION_COOKIE)),
        "{}",
        r.text
    );
    assert_scrubbed(&r.text, API_SECRET);
}

/// A client that goes away after its execute reached the upstream but before the reply still
/// leaves exactly one audit event, `cancelled`: the upstream already acted with the secret. None
/// more when the upstream answers later. On both backends (decision 0065).
#[tokio::test]
async fn a_client_gone_before_the_reply_is_still_audited() {
    let e = env_cancellable().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    let auth = format!("Bearer {agent}");
    let body = json!({"credential": "github", "method": "POST",
        "url": e.up.url("/slow"), "body": "hello"});
    e.leave_once_upstream_has(
        "/slow",
        "POST",
        "/v1/execute",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await;
    let events = e.audit_events("execute", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "cancelled", "{events:?}");
    assert_eq!(events[0]["credential"], "github", "{events:?}");
    assert_eq!(events[0]["method"], "POST", "{events:?}");
    assert_eq!(events[0]["path"], "/slow", "{events:?}");
    assert!(events[0]["status"].is_null(), "{events:?}");
    // The upstream answers 2 s after it read the request: no second event for it (this waits
    // 5 s for one).
    let events = e.audit_events("execute", 2).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

/// Execute's `body` is sent as it is: a Vultrino key in it (the caller's, or anything shaped
/// like one) is refused with the proxy's code, and nothing is sent (review finding 3).
#[tokio::test]
async fn a_vultrino_key_in_the_execute_body_is_refused_and_nothing_is_sent() {
    let e = env().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    for body in [
        json!({"api_key": agent}),
        json!(format!("key={}", agent.replace('_', "%5F"))),
        json!({"note": "vk_0123456789abcdef_someone-else"}),
    ] {
        let r =
            e.c.send(
                "POST",
                "/v1/execute",
                Some(&agent),
                Some(&json!({"credential": "github", "method": "POST",
                             "url": e.up.url("/echo"), "body": body})),
            )
            .await;
        expect(&r, 400, Some("agent_key_in_request"));
        assert!(!r.text.contains(&agent), "{}", r.text);
    }
    assert_eq!(e.up.seen().len(), 0, "{:?}", e.up.seen());
    // `vk_` that is not a key is sent.
    let r =
        e.c.send(
            "POST",
            "/v1/execute",
            Some(&agent),
            Some(&json!({"credential": "github", "method": "POST",
                         "url": e.up.url("/echo"), "body": {"table": "bulk_vk_rows"}})),
        )
        .await;
    expect(&r, 200, None);
    assert_eq!(e.up.seen().len(), 1);
}

/// The proxy's last gate holds for execute too: an agent key in the URL (path or query, as is
/// or percent-encoded) or in a header value is refused and nothing is sent (security review of
/// 2026-12-05, L6).
#[tokio::test]
async fn a_vultrino_key_in_the_execute_url_or_headers_is_refused_and_nothing_is_sent() {
    let e = env().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    for (what, url, headers) in [
        ("the path", e.up.url(&format!("/echo/{agent}")), json!({})),
        (
            "the query",
            e.up.url(&format!("/echo?token={agent}")),
            json!({}),
        ),
        (
            "the query, percent-encoded",
            e.up.url(&format!("/echo?token={}", agent.replace('_', "%5F"))),
            json!({}),
        ),
        ("a header", e.up.url("/echo"), json!({"x-custom": agent})),
    ] {
        let r =
            e.c.send(
                "POST",
                "/v1/execute",
                Some(&agent),
                Some(&json!({"credential": "github", "method": "GET", "url": url,
                             "headers": headers})),
            )
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert!(
            r.text.contains("agent_key_in_request"),
            "{what}: {}",
            r.text
        );
        assert!(!r.text.contains(&agent), "{what}: {}", r.text);
    }
    assert_eq!(e.up.seen().len(), 0, "{:?}", e.up.seen());
    // Audited, and the audit path never holds the key.
    let events = e.audit_events("execute", 4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let secret = &agent[20..]; // after `vk_`, the 16-hex id and `_`
    for ev in &events {
        assert_eq!(ev["code"], "agent_key_in_request", "{ev}");
        assert!(!ev.to_string().contains(secret), "{ev}");
    }
}

/// The same through MCP: an `http_request` tool call over `/mcp` whose client goes away after
/// the upstream received it still leaves one `execute` event, `cancelled` (the MCP route runs
/// execute with the server's background, as `/v1/execute` does; decision 0065).
#[tokio::test]
async fn an_mcp_http_request_whose_client_left_is_still_audited() {
    let e = env_cancellable().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    let auth = format!("Bearer {agent}");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "http_request",
        "arguments": {"credential": "github", "method": "POST",
            "url": e.up.url("/slow"), "body": "hello"}}});
    e.leave_once_upstream_has(
        "/slow",
        "POST",
        "/mcp",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call.to_string(),
    )
    .await;
    let events = e.audit_events("execute", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "cancelled", "{events:?}");
    assert_eq!(events[0]["credential"], "github", "{events:?}");
    assert_eq!(events[0]["path"], "/slow", "{events:?}");
    let events = e.audit_events("execute", 2).await;
    assert_eq!(events.len(), 1, "{events:?}");
}
