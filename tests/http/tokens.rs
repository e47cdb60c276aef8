//! Agent tokens (`vt_…`, `POST/GET /v1/tokens`, `DELETE /v1/tokens/{id}`): a short-lived subset
//! of one API key. Minted by the key or by an admin for a named key; never wider than the parent
//! in any dimension; usable wherever a key is (execute, every `/proxy/` key slot, MCP over
//! HTTP); dead when it expires, when it is revoked and when its parent key is revoked; its uses
//! counted exactly and spent before the upstream call, even under concurrency
//! (docs/decisions/0083-agent-tokens.md, 0084-agent-token-uses.md).

use serde_json::{json, Value};

use crate::support::{expect_for, Reply};
use crate::{env, Env};

impl Env {
    /// `POST /v1/tokens` as `who` with `body`.
    async fn mint(&self, who: &str, body: Value) -> Reply {
        self.c
            .send("POST", "/v1/tokens", Some(who), Some(&body))
            .await
    }

    /// A token minted by `who` (201 expected); returns the whole reply body.
    async fn token(&self, who: &str, body: Value) -> Value {
        let r = self.mint(who, body).await;
        expect_for("mint a token", &r, 201, None);
        r.body
    }

    /// `method url` through `alias` with `/v1/execute`, as the holder of `token`.
    async fn execute_as(&self, token: &str, alias: &str, method: &str, url: &str) -> Reply {
        self.c
            .send(
                "POST",
                "/v1/execute",
                Some(token),
                Some(&json!({"credential": alias, "method": method, "url": url})),
            )
            .await
    }

    /// `GET` the upstream's `/echo` through `alias` with `/v1/execute`, as the holder of `token`.
    async fn echo_as(&self, token: &str, alias: &str) -> Reply {
        self.execute_as(token, alias, "GET", &self.up.url("/echo"))
            .await
    }

    /// `DELETE /v1/tokens/{id}` as `who`.
    async fn revoke_token(&self, who: &str, id: &str) -> Reply {
        self.c
            .send("DELETE", &format!("/v1/tokens/{id}"), Some(who), None)
            .await
    }

    /// An admin's `DELETE /v1/keys/{id}` of `key`.
    async fn revoke_key(&self, key: &str) -> Reply {
        let path = format!("/v1/keys/{}", Self::key_id(key));
        self.c.send("DELETE", &path, Some(&self.admin), None).await
    }

    /// The ids of the tokens `who` lists.
    async fn token_ids(&self, who: &str) -> Vec<String> {
        let r = self.c.send("GET", "/v1/tokens", Some(who), None).await;
        expect_for("list tokens", &r, 200, None);
        r.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// An API key id from its text (`vk_<id>_<secret>`).
    fn key_id(key: &str) -> String {
        key.split('_').nth(1).unwrap().to_string()
    }
}

/// A `/proxy/` key slot: its name, the headers and the query that carry the token in it.
type Slot<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// Nothing the upstream received carries a `vk_` key or a `vt_` token.
fn assert_no_agent_credential_upstream(e: &Env) {
    for seen in e.up.seen() {
        let mut all = vec![
            seen.path.clone(),
            seen.query.clone(),
            String::from_utf8_lossy(&seen.received).into_owned(),
        ];
        all.extend(seen.headers.values().cloned());
        for v in all {
            assert!(
                !vultrino_core::proxy::carries_agent_key(v.as_bytes()),
                "an agent credential reached the upstream: {v:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_key_mints_a_token_that_is_the_subset_it_asked_for() {
    let e = env().await;
    e.api_key_cred("github").await;
    e.api_key_cred("stripe").await;
    let key = e.key("executor").await;
    let minted = e
        .token(
            &key,
            json!({"name": "task 1", "credentials": ["github"], "methods": ["get"],
                "path_prefixes": ["/echo"], "uses": 10, "expires_in": 600}),
        )
        .await;
    let token = minted["token"].as_str().unwrap();
    assert!(token.starts_with("vt_"), "{minted}");
    assert_eq!(minted["parent_key"], Env::key_id(&key), "{minted}");
    assert_eq!(minted["methods"], json!(["GET"]), "{minted}");
    assert_eq!(minted["uses"], 10, "{minted}");
    let id = minted["id"].as_str().unwrap();

    let r = e.echo_as(token, "github").await;
    expect_for("inside every limit", &r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    let r = e
        .execute_as(token, "github", "POST", &e.up.url("/echo"))
        .await;
    expect_for("a method the token lacks", &r, 403, "token_method_denied");
    for path in ["/other", "/echox", "/echo/../other", "/echo/%2e%2e/other"] {
        let r = e.execute_as(token, "github", "GET", &e.up.url(path)).await;
        expect_for(path, &r, 403, "token_path_denied");
    }
    let r = e.echo_as(token, "stripe").await;
    expect_for("a credential the token lacks", &r, 403, "scope_denied");
    assert_eq!(e.up.hits("/echo"), 1, "only the allowed request was sent");

    // The key lists it with its uses left (refusals spend none), without the secret.
    let r = e.c.send("GET", "/v1/tokens", Some(&key), None).await;
    expect_for("list", &r, 200, None);
    let listed = &r.body["tokens"][0];
    assert_eq!(listed["id"], id, "{}", r.text);
    assert_eq!(listed["uses_left"], 9, "{}", r.text);
    // The whole secret (it may itself hold `_`: a fragment of it could match by chance).
    let secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(secret.len() >= 20, "{token}");
    assert!(!r.text.contains(secret), "{}", r.text);
    assert!(listed.get("mac").is_none(), "{}", r.text);

    // Audited as the parent key and the token, never the token's text.
    let events = e.audit_events("execute", 1).await;
    let actor = format!("key:{} token:{id}", Env::key_id(&key));
    assert!(events.iter().any(|ev| ev["actor"] == actor), "{events:?}");
    let audit =
        e.c.send("GET", "/v1/audit?limit=100", Some(&e.admin), None)
            .await;
    assert!(!audit.text.contains(token), "the token is in the audit");
    assert_no_agent_credential_upstream(&e);
}

#[tokio::test]
async fn a_token_never_widens_its_parent() {
    let e = env().await;
    e.api_key_cred("github-work").await;
    e.role(&json!({"name": "gh", "permissions": ["read", "execute"], "scopes": ["github-*"]}))
        .await;
    let key = e.key("gh").await;
    for (what, body, status, code) in [
        (
            "every credential",
            json!({"credentials": ["*"]}),
            403,
            "token_widens_parent",
        ),
        (
            "a wider glob",
            json!({"credentials": ["git*"]}),
            403,
            "token_widens_parent",
        ),
        (
            "an alias outside the scopes",
            json!({"credentials": ["stripe"]}),
            403,
            "token_widens_parent",
        ),
        (
            "no credentials",
            json!({"credentials": []}),
            400,
            "invalid_credentials",
        ),
        (
            "zero uses",
            json!({"credentials": ["github-work"], "uses": 0}),
            400,
            "invalid_uses",
        ),
        (
            "a zero lifetime",
            json!({"credentials": ["github-work"], "expires_in": 0}),
            400,
            "invalid_expiry",
        ),
        (
            "an empty method list",
            json!({"credentials": ["github-work"], "methods": []}),
            400,
            "invalid_method",
        ),
        (
            "a dot-segment prefix",
            json!({"credentials": ["github-work"], "path_prefixes": ["/a/../b"]}),
            400,
            "invalid_path_prefix",
        ),
        (
            "another key as parent",
            json!({"credentials": ["github-work"], "parent_key": "0123456789abcdef"}),
            403,
            "permission_denied",
        ),
        // `require_approval` is a boolean (tests/http/approvals.rs uses it).
        (
            "require_approval that is not a boolean",
            json!({"credentials": ["github-work"], "require_approval": "yes"}),
            400,
            "schema_mismatch",
        ),
    ] {
        let r = e.mint(&key, body).await;
        expect_for(what, &r, status, code);
    }
    e.token(&key, json!({"credentials": ["github-*"]})).await;
    e.token(&key, json!({"credentials": ["github-w*"]})).await;

    // Never past the parent's expiry: asked for, refused; by default, cut to it.
    let r =
        e.c.send(
            "POST",
            "/v1/keys",
            Some(&e.admin),
            Some(&json!({"name": "short", "role": "executor", "expires_in_days": 1})),
        )
        .await;
    expect_for("a key of one day", &r, 201, None);
    let short = r.body["key"].as_str().unwrap().to_string();
    let key_expiry = r.body["expires_at"].as_u64().unwrap();
    let r = e
        .mint(
            &short,
            json!({"credentials": ["*"], "expires_in": 2 * 86_400}),
        )
        .await;
    expect_for("past the parent's expiry", &r, 400, "invalid_expiry");
    let t = e.token(&short, json!({"credentials": ["*"]})).await;
    assert!(t["expires_at"].as_u64().unwrap() <= key_expiry, "{t}");

    // Permissions: a token of an admin key has read and execute only, and mints nothing.
    let admin_key = e.key("admin").await;
    let t = e.token(&admin_key, json!({"credentials": ["*"]})).await;
    let token = t["token"].as_str().unwrap();
    for (method, path, body) in [
        ("GET", "/v1/keys", None),
        ("GET", "/v1/audit", None),
        (
            "POST",
            "/v1/keys",
            Some(json!({"name": "x", "role": "admin"})),
        ),
        ("POST", "/v1/tokens", Some(json!({"credentials": ["*"]}))),
        ("GET", "/v1/tokens", None),
    ] {
        let r = e.c.send(method, path, Some(token), body.as_ref()).await;
        expect_for(
            &format!("{method} {path} with a token"),
            &r,
            403,
            "permission_denied",
        );
    }
    // A read-only key has nothing to hand a token.
    let reader = e.key("read-only").await;
    let r = e.mint(&reader, json!({"credentials": ["*"]})).await;
    expect_for("a read-only parent", &r, 403, "permission_denied");
    // An admin names the parent, which must be a live key.
    let r = e.mint(&e.admin, json!({"credentials": ["*"]})).await;
    expect_for("admin without parent_key", &r, 400, "invalid_parent_key");
    let r = e
        .mint(
            &e.admin,
            json!({"credentials": ["*"], "parent_key": "0123456789abcdef"}),
        )
        .await;
    expect_for("admin with an unknown parent", &r, 404, "key_not_found");
    let r = e
        .mint(
            &e.admin,
            json!({"credentials": ["*"], "parent_key": Env::key_id(&key)}),
        )
        .await;
    expect_for(
        "admin: still within the parent's scopes",
        &r,
        403,
        "token_widens_parent",
    );
    let t = e
        .token(
            &e.admin,
            json!({"credentials": ["github-*"], "parent_key": Env::key_id(&key)}),
        )
        .await;
    assert_eq!(t["parent_key"], Env::key_id(&key), "{t}");
}

#[tokio::test]
async fn a_token_dies_at_its_expiry() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let t = e
        .token(&key, json!({"credentials": ["github"], "expires_in": 2}))
        .await;
    let token = t["token"].as_str().unwrap();
    // Two seconds of life: the use before the expiry has 2 s, not 1, to land on a loaded machine.
    let r = e.echo_as(token, "github").await;
    expect_for("before its expiry", &r, 200, None);
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let r = e.echo_as(token, "github").await;
    expect_for("after its expiry", &r, 401, "token_expired");
    assert!(
        e.token_ids(&key).await.is_empty(),
        "an expired token is not listed"
    );
}

#[tokio::test]
async fn revoking_the_parent_key_or_the_token_kills_it_at_once() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let other = e.key("executor").await;
    let a = e.token(&key, json!({"credentials": ["github"]})).await;
    let b = e.token(&key, json!({"credentials": ["github"]})).await;
    let o = e.token(&other, json!({"credentials": ["github"]})).await;
    let (a_id, b_id, o_id) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        o["id"].as_str().unwrap(),
    );
    // A key sees and revokes its own tokens only; an admin sees all.
    let mut own = e.token_ids(&key).await;
    own.sort();
    let mut want = vec![a_id.to_string(), b_id.to_string()];
    want.sort();
    assert_eq!(own, want);
    let all = e.token_ids(&e.admin).await;
    assert!(all.contains(&o_id.to_string()) && all.len() == 3, "{all:?}");
    let r = e.revoke_token(&key, o_id).await;
    expect_for("another key's token", &r, 404, "token_not_found");

    let r = e.revoke_token(&key, a_id).await;
    expect_for("revoke own token", &r, 204, None);
    let r = e.echo_as(a["token"].as_str().unwrap(), "github").await;
    expect_for("a revoked token", &r, 401, "invalid_api_key");
    let r = e.echo_as(b["token"].as_str().unwrap(), "github").await;
    expect_for("its sibling still works", &r, 200, None);

    let r = e.revoke_key(&key).await;
    expect_for("revoke the parent key", &r, 204, None);
    let r = e.echo_as(b["token"].as_str().unwrap(), "github").await;
    expect_for("a token of a revoked key", &r, 401, "invalid_api_key");
    let r = e.echo_as(o["token"].as_str().unwrap(), "github").await;
    expect_for("another key's token lives on", &r, 200, None);
    let r = e.revoke_token(&e.admin, o_id).await;
    expect_for("an admin revokes any token", &r, 204, None);
    let r = e.echo_as(o["token"].as_str().unwrap(), "github").await;
    expect_for("revoked by the admin", &r, 401, "invalid_api_key");
    assert_eq!(e.up.hits("/echo"), 2);
}

/// 20 concurrent requests with a token of 5 uses: exactly 5 reach the upstream.
#[tokio::test]
async fn uses_are_spent_exactly_under_concurrency() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let t = e
        .token(&key, json!({"credentials": ["github"], "uses": 5}))
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let url = e.up.url("/uses/echo");
    let replies = futures_util::future::join_all((0..20).map(|_| {
        let (c, token, url) = (e.c.clone(), token.clone(), url.clone());
        async move {
            c.send(
                "POST",
                "/v1/execute",
                Some(&token),
                Some(&json!({"credential": "github", "method": "GET", "url": url})),
            )
            .await
        }
    }))
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let spent = replies
        .iter()
        .filter(|r| r.status == 403 && r.body["error"]["code"] == "token_exhausted")
        .count();
    assert_eq!((ok, spent), (5, 15), "{replies:?}");
    assert_eq!(
        e.up.hits("/uses/echo"),
        5,
        "exactly the uses reached the upstream"
    );
    let r = e.c.send("GET", "/v1/tokens", Some(&key), None).await;
    assert_eq!(r.body["tokens"][0]["uses_left"], 0, "{}", r.text);
}

/// The pass-through proxy takes a token in every key slot, checks its path prefixes on the
/// upstream path, and never forwards it.
#[tokio::test]
async fn a_token_works_in_every_proxy_key_slot() {
    let e = env().await;
    let r = e
        .create(json!({
            "alias": "llm", "type": "api_key", "data": {"key": crate::API_SECRET},
            "policy": {"allowed_hosts": ["127.0.0.1"]}, "base_url": e.up.url(""),
        }))
        .await;
    expect_for("a proxy credential", &r, 201, None);
    let key = e.key("executor").await;
    let t = e
        .token(
            &key,
            json!({"credentials": ["llm"], "path_prefixes": ["/v1/echo"]}),
        )
        .await;
    let token = t["token"].as_str().unwrap();
    let bearer = format!("Bearer {token}");
    let slots: Vec<Slot> = vec![
        (
            "X-Vultrino-Key",
            vec![("x-vultrino-key", token)],
            String::new(),
        ),
        (
            "Authorization",
            vec![("authorization", &bearer)],
            String::new(),
        ),
        ("x-api-key", vec![("x-api-key", token)], String::new()),
        (
            "x-goog-api-key",
            vec![("x-goog-api-key", token)],
            String::new(),
        ),
        ("api-key", vec![("api-key", token)], String::new()),
        ("?key=", vec![], format!("?key={token}")),
    ];
    for (slot, headers, query) in &slots {
        let mut rb = e.c.http.request(
            reqwest::Method::POST,
            format!("{}/proxy/llm/v1/echo{query}", e.c.target.base),
        );
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = e.c.send_raw(rb.body("{}")).await;
        expect_for(slot, &r, 200, None);
    }
    assert_eq!(e.up.hits("/v1/echo"), slots.len());
    let r =
        e.c.send_raw(
            e.c.http
                .get(format!("{}/proxy/llm/v1/other", e.c.target.base))
                .header("x-vultrino-key", token),
        )
        .await;
    expect_for(
        "outside the token's path prefixes",
        &r,
        403,
        "token_path_denied",
    );
    assert_eq!(
        r.headers
            .get("x-vultrino-error")
            .and_then(|v| v.to_str().ok()),
        Some("token_path_denied")
    );
    // A token in the body is never sent either.
    let r =
        e.c.send_raw(
            e.c.http
                .post(format!("{}/proxy/llm/v1/echo", e.c.target.base))
                .header("x-vultrino-key", token)
                .body(format!("{{\"leak\": \"{token}\"}}")),
        )
        .await;
    expect_for("a token in the body", &r, 400, "agent_key_in_request");
    assert_no_agent_credential_upstream(&e);
}

/// MCP over HTTP takes a token as its bearer, and the token's limits hold there too.
#[tokio::test]
async fn a_token_works_over_mcp_http() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let t = e
        .token(
            &key,
            json!({"credentials": ["github"], "methods": ["GET"], "uses": 1}),
        )
        .await;
    let token = t["token"].as_str().unwrap();
    let call = |method: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "http_request",
            "arguments": {"credential": "github", "method": method, "url": e.up.url("/mcp/echo")}}})
    };
    let mcp = |body: Value| {
        e.c.send_raw(
            e.c.http
                .post(format!("{}/mcp", e.c.target.base))
                .bearer_auth(token)
                .header("accept", "application/json")
                .header("mcp-protocol-version", "2025-11-25")
                .json(&body),
        )
    };
    let r = mcp(call("POST")).await;
    expect_for("a method the token lacks", &r, 200, None);
    assert_eq!(r.body["result"]["isError"], true, "{}", r.text);
    assert!(r.text.contains("token_method_denied"), "{}", r.text);
    let r = mcp(call("GET")).await;
    expect_for("inside the limits", &r, 200, None);
    assert_ne!(r.body["result"]["isError"], true, "{}", r.text);
    let r = mcp(call("GET")).await;
    assert!(r.text.contains("token_exhausted"), "{}", r.text);
    assert_eq!(e.up.hits("/mcp/echo"), 1);
    assert_no_agent_credential_upstream(&e);
}

/// `vultrino token mint|list|revoke --server` after `vultrino login`: the same API, the token
/// printed once, revoked at once.
#[tokio::test]
async fn the_cli_mints_lists_and_revokes_tokens() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let base = e._server.base.clone();
    let (ok, _, err) = crate::cli::cli(
        home,
        &["login", "--server", &base],
        &format!("{}\n", crate::support::ADMIN_PASSWORD),
    )
    .await;
    assert!(ok, "{err}");
    let parent = Env::key_id(&key);
    let (ok, out, err) = crate::cli::cli(
        home,
        &[
            "token",
            "mint",
            "--parent-key",
            &parent,
            "--credential",
            "github",
            "--method",
            "GET",
            "--uses",
            "3",
            "--expires-in",
            "600",
            "--server",
            &base,
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("only this once"), "{err}");
    let minted: Value = serde_json::from_str(&out).unwrap();
    let token = minted["token"].as_str().unwrap();
    let id = minted["id"].as_str().unwrap();
    assert!(token.starts_with("vt_") && minted["uses"] == 3, "{minted}");
    let r = e.echo_as(token, "github").await;
    expect_for("the minted token", &r, 200, None);

    let (ok, out, err) = crate::cli::cli(home, &["token", "list", "--server", &base], "").await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["tokens"][0]["id"], id, "{listed}");
    assert_eq!(listed["tokens"][0]["uses_left"], 2, "{listed}");
    assert!(!out.contains(token), "the list shows no secret");

    let (ok, _, err) = crate::cli::cli(home, &["token", "revoke", id, "--server", &base], "").await;
    assert!(ok, "{err}");
    let r = e.echo_as(token, "github").await;
    expect_for("revoked through the CLI", &r, 401, "invalid_api_key");
    assert!(!home.join("data").exists(), "no local store was opened");
}

/// A token's `methods` holds as the upstream reads the method: a `_method` parameter (query,
/// query parameters, form, multipart or JSON body) naming a method the token lacks is refused,
/// on execute and on the proxy, also when the credential itself has no method list (review of
/// 2026-12-06, finding 1: Laravel, Symfony, Rails and Rack read `POST …?_method=DELETE` as a
/// DELETE).
#[tokio::test]
async fn a_method_override_parameter_cannot_widen_a_tokens_methods() {
    let e = env().await;
    let r = e
        .create(json!({
            "alias": "any-method", "type": "api_key", "data": {"key": crate::API_SECRET},
            "policy": {"allowed_hosts": ["127.0.0.1"]}, "base_url": e.up.url(""),
        }))
        .await;
    expect_for("a credential without a method list", &r, 201, None);
    let key = e.key("executor").await;
    let t = e
        .token(
            &key,
            json!({"credentials": ["any-method"], "methods": ["POST"]}),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let execute = |params: Value| {
        let mut body = json!({"credential": "any-method"});
        body.as_object_mut()
            .unwrap()
            .extend(params.as_object().unwrap().clone());
        let (c, token) = (e.c.clone(), token.clone());
        async move {
            c.send("POST", "/v1/execute", Some(&token), Some(&body))
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
        let r = execute(params.clone()).await;
        expect_for(what, &r, 403, "token_method_denied");
    }
    let proxy = |path: &str, content_type: &str, body: &str| {
        e.c.send_raw(
            e.c.http
                .post(format!("{}/proxy/any-method{path}", e.c.target.base))
                .header("x-vultrino-key", token.as_str())
                .header("content-type", content_type)
                .body(body.to_string()),
        )
    };
    let r = proxy("/items/1?_method=DELETE", "text/plain", "").await;
    expect_for("proxy: in the query", &r, 403, "token_method_denied");
    let r = proxy(
        "/items/1",
        "application/x-www-form-urlencoded",
        "_method=DELETE",
    )
    .await;
    expect_for("proxy: in a form body", &r, 403, "token_method_denied");
    let r = proxy("/items/1", "application/json", r#"{"_method":"DELETE"}"#).await;
    expect_for("proxy: in a JSON body", &r, 403, "token_method_denied");
    assert_eq!(e.up.seen().len(), 0, "no request may reach the upstream");
    // Nothing to bypass: the token's own method named.
    let r = execute(json!({"method": "POST", "url": e.up.url("/echo?_method=POST")})).await;
    expect_for("the token's own method named", &r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    let r = proxy("/echo", "application/json", r#"{"name":"x"}"#).await;
    expect_for("proxy: no override", &r, 200, None);
    assert_eq!(e.up.hits("/echo"), 2);
}

/// `POST /proxy/<path>` over a raw connection with `token` in `x-api-key`: the head and the
/// first half of a 16-byte body, then `between` (while the server waits for the rest), then
/// the second half. Returns the reply's status and `X-Vultrino-Error`.
async fn post_in_two_halves<F: std::future::Future<Output = ()>>(
    e: &Env,
    path: &str,
    token: &str,
    between: F,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = e.c.target.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let head = format!(
        "POST /proxy/{path} HTTP/1.1\r\nhost: {authority}\r\nx-api-key: {token}\r\n\
         content-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"first-ha").await.unwrap();
    stream.flush().await.unwrap();
    // Long enough for the server to authenticate the head and wait for the rest of the body.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    between.await;
    stream.write_all(b"lf-last!").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("a reply within 30 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed without a reply: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let error = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-vultrino-error:")
            .map(|v| v.trim().to_string())
    });
    (status, error)
}

/// A revocation is immediate for requests already under way too: a proxied request whose token
/// was authenticated, but whose body was still arriving (the proxy reads it whole under a method
/// list) when the token or its parent key was revoked, is not sent and spends no use (review of
/// 2026-12-06, finding 2).
#[tokio::test]
async fn a_request_under_way_when_its_token_or_key_is_revoked_is_not_sent() {
    let e = env().await;
    let r = e
        .create(json!({
            "alias": "slow", "type": "api_key", "data": {"key": crate::API_SECRET},
            "policy": {"allowed_hosts": ["127.0.0.1"], "methods": ["POST"]},
            "base_url": e.up.url(""),
        }))
        .await;
    expect_for("a credential with a method list", &r, 201, None);
    let key = e.key("executor").await;

    // Nothing revoked: the request goes through.
    let t = e.token(&key, json!({"credentials": ["slow"]})).await;
    let token = t["token"].as_str().unwrap();
    let (status, code) = post_in_two_halves(&e, "slow/echo", token, async {}).await;
    assert_eq!((status, code), (200, None), "nothing revoked");
    assert_eq!(e.up.hits("/echo"), 1);

    // The token revoked while its request's body arrives.
    let t = e.token(&key, json!({"credentials": ["slow"]})).await;
    let (token, id) = (t["token"].as_str().unwrap(), t["id"].as_str().unwrap());
    let revoke = async {
        let r = e.revoke_token(&key, id).await;
        expect_for("revoke the token", &r, 204, None);
    };
    let (status, code) = post_in_two_halves(&e, "slow/echo", token, revoke).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("invalid_api_key")),
        "the token was revoked before the request was sent"
    );

    // The parent key revoked while its token's request's body arrives.
    let t = e.token(&key, json!({"credentials": ["slow"]})).await;
    let token = t["token"].as_str().unwrap();
    let revoke = async {
        let r = e.revoke_key(&key).await;
        expect_for("revoke the parent key", &r, 204, None);
    };
    let (status, code) = post_in_two_halves(&e, "slow/echo", token, revoke).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("invalid_api_key")),
        "the parent key was revoked before the request was sent"
    );

    // A plain key revoked while its own request's body arrives (decision 0101).
    let plain = e.key("executor").await;
    let revoke = async {
        let r = e.revoke_key(&plain).await;
        expect_for("revoke the key", &r, 204, None);
    };
    let (status, code) = post_in_two_halves(&e, "slow/echo", &plain, revoke).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("invalid_api_key")),
        "the key was revoked before its request was sent"
    );
    assert_eq!(e.up.hits("/echo"), 1, "only the first request was sent");
}

/// A token whose uses are spent never makes Vultrino fetch an OAuth2 access token: its request
/// is refused (403 `token_exhausted`) before the token endpoint is called (review of
/// 2026-12-06, finding 9; decision 0101).
#[tokio::test]
async fn a_spent_token_fetches_no_oauth_token() {
    let e = env().await;
    e.api_key_cred("plain").await;
    let secret = crate::support::upstream::OAUTH_CLIENT_SECRET;
    e.oauth2_cred("oa", secret, json!({"allowed_hosts": ["127.0.0.1"]}))
        .await;
    let key = e.key("executor").await;
    let t = e
        .token(&key, json!({"credentials": ["plain", "oa"], "uses": 1}))
        .await;
    let token = t["token"].as_str().unwrap();
    let url = e.up.url("/echo");
    let r = e.execute_as(token, "plain", "GET", &url).await;
    expect_for("the one use", &r, 200, None);
    let r = e.execute_as(token, "oa", "GET", &url).await;
    expect_for("the spent token", &r, 403, "token_exhausted");
    assert_eq!(e.up.tokens_issued(), 0, "no OAuth2 token was fetched");
    assert_eq!(e.up.hits("/token"), 0);
    let r = e.execute_as(&key, "oa", "GET", &url).await;
    expect_for("the key itself", &r, 200, None);
    assert_eq!(e.up.tokens_issued(), 1);
}

/// A key has at most 50 live tokens at once, whoever mints them (429 `too_many_tokens`): a key
/// holder cannot mint without bound, each mint a store and an audit write, nor grow the token
/// listing past what one request can read. A revoked token frees its place; another key's
/// tokens do not count (review of 2026-12-06, finding 3).
#[tokio::test]
async fn a_key_has_at_most_fifty_live_tokens() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let other = e.key("executor").await;
    let body = json!({"credentials": ["github"]});
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(e.token(&key, body.clone()).await["id"].clone());
    }
    let r = e.mint(&key, body.clone()).await;
    expect_for("a 51st live token", &r, 429, "too_many_tokens");
    let mut as_admin = body.clone();
    as_admin["parent_key"] = json!(Env::key_id(&key));
    let r = e.mint(&e.admin, as_admin).await;
    expect_for("a 51st, minted by an admin", &r, 429, "too_many_tokens");
    e.token(&other, body.clone()).await;
    assert_eq!(e.token_ids(&key).await.len(), 50);
    assert_eq!(
        e.token_ids(&e.admin).await.len(),
        51,
        "the other key's counts apart"
    );

    let first = ids[0].as_str().unwrap();
    let r = e.revoke_token(&key, first).await;
    expect_for("revoke one", &r, 204, None);
    e.token(&key, body.clone()).await;
    let r = e.mint(&key, body).await;
    expect_for("full again", &r, 429, "too_many_tokens");
}

/// A token's name is shown in listings (the UI, `vultrino token list`): a name with a Unicode
/// format character (a bidi override, a zero-width space, …) could read as another, and is
/// refused like a control character (400 `invalid_name`; review of 2026-12-06, finding 6).
#[tokio::test]
async fn a_token_name_with_format_characters_is_refused() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    for name in [
        "deploy\u{202E}txt.exe",
        "ci\u{200B}",
        "\u{2066}x\u{2069}",
        "a\nb",
    ] {
        let r = e
            .mint(&key, json!({"name": name, "credentials": ["github"]}))
            .await;
        expect_for(&format!("{name:?}"), &r, 400, "invalid_name");
    }
    assert!(e.token_ids(&key).await.is_empty());
    e.token(
        &key,
        json!({"name": "déploiement – étape 2", "credentials": ["github"]}),
    )
    .await;
}

/// The listing shows live tokens only: once its parent key is revoked, a token (refused from
/// then on) is left out, so that nobody believes it still has to be revoked (review of
/// 2026-12-06, finding 7).
#[tokio::test]
async fn tokens_of_a_revoked_key_are_not_listed_as_live() {
    let e = env().await;
    e.api_key_cred("github").await;
    let key = e.key("executor").await;
    let other = e.key("executor").await;
    e.token(&key, json!({"credentials": ["github"]})).await;
    let o = e.token(&other, json!({"credentials": ["github"]})).await;
    assert_eq!(e.token_ids(&e.admin).await.len(), 2);
    let r = e.revoke_key(&key).await;
    expect_for("revoke the parent key", &r, 204, None);
    let listed = e.token_ids(&e.admin).await;
    assert_eq!(
        listed,
        [o["id"].as_str().unwrap()],
        "only the live key's token"
    );
}
