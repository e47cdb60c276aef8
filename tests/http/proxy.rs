//! The pass-through proxy, `ANY /proxy/{alias}/{path…}`, as an SDK uses it: the agent's key in
//! whichever slot its SDK puts it, the real secret injected, never a `vk_` key upstream,
//! hop-by-hop headers stripped both ways, the reply scrubbed (body, headers, `Location`),
//! redirects returned unfollowed, Vultrino's own errors marked with `X-Vultrino-Error`, one
//! audit event per request sent (refusals counted per key, alias and code), the body cap, the
//! concurrency cap per key, and `base_url` through the API.
//! (Streaming at scale, client disconnects and timeouts: backend-local/tests/proxy_streaming.rs.)

use serde_json::{json, Value};

use crate::support::upstream::Upstream;
use crate::support::ServerOptions;
use crate::support::{expect_for, require_loopback_only_network, Reply};
use crate::{assert_scrubbed, env, env_cancellable, env_with, Env, API_SECRET};

/// A key that has the form of one but was never issued.
const WRONG_KEY: &str = "vk_0123456789abcdef_not-a-real-secret";

impl Env {
    /// An `api_key` credential holding [`API_SECRET`] whose base_url is the upstream.
    async fn proxy_cred(&self, alias: &str, policy: Value) {
        let mut policy = policy;
        policy["allowed_hosts"] = json!(["127.0.0.1"]);
        let r = self
            .create(json!({
                "alias": alias, "type": "api_key", "data": {"key": API_SECRET},
                "policy": policy, "base_url": self.up.url(""),
            }))
            .await;
        expect_for("create a proxy credential", &r, 201, None);
    }

    /// `method /proxy/<path>` with `headers`, and no other authentication.
    async fn proxy(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut rb = self.c.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/proxy/{path}", self.c.target.base),
        );
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        self.c.send_raw(rb).await
    }
    /// The audit's `proxy` events, newest first (waiting up to 5 s for `count` of them).
    async fn proxy_events(&self, count: usize) -> Vec<Value> {
        self.audit_events("proxy", count).await
    }
}

/// One key slot: its name, the headers and the query suffix that carry a key in it.
type Slot = (&'static str, Vec<(&'static str, String)>, String);

/// Every slot an SDK may use, as the headers (and query suffix) carrying `key`.
fn slots(key: &str) -> Vec<Slot> {
    vec![
        (
            "Authorization: Bearer",
            vec![("authorization", format!("Bearer {key}"))],
            String::new(),
        ),
        (
            "x-api-key",
            vec![("x-api-key", key.to_string())],
            String::new(),
        ),
        (
            "x-goog-api-key",
            vec![("x-goog-api-key", key.to_string())],
            String::new(),
        ),
        ("api-key", vec![("api-key", key.to_string())], String::new()),
        ("?key=", vec![], format!("&key={key}")),
        (
            "X-Vultrino-Key (with an SDK's own Authorization)",
            vec![
                ("x-vultrino-key", key.to_string()),
                ("authorization", "Bearer sk-sdk-own".into()),
            ],
            String::new(),
        ),
    ]
}

fn pairs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Nothing the upstream ever received carries a Vultrino key, in any slot or encoding.
fn assert_no_agent_key_upstream(up: &Upstream) {
    for seen in up.seen() {
        let mut all = vec![seen.path.clone(), seen.query.clone()];
        all.extend(seen.headers.values().cloned());
        for v in all {
            assert!(
                !vultrino_core::proxy::carries_agent_key(v.as_bytes()),
                "a vk_ key reached the upstream: {v:?} in {seen:?}"
            );
        }
    }
}

/// The reply is Vultrino's own error: the status, the code in the JSON body and in
/// `X-Vultrino-Error`.
fn expect_refusal(context: &str, r: &Reply, status: u16, code: &str) {
    expect_for(context, r, status, code);
    assert_eq!(
        r.headers
            .get("x-vultrino-error")
            .and_then(|v| v.to_str().ok()),
        Some(code),
        "{context}: X-Vultrino-Error"
    );
}

#[tokio::test]
async fn the_key_in_every_slot_reaches_the_upstream_as_the_real_secret_only() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    for (slot, headers, query) in slots(&agent) {
        let r = e
            .proxy("GET", &format!("p/echo?x=1{query}"), &pairs(&headers), None)
            .await;
        expect_for(slot, &r, 200, None);
        assert!(r.headers.get("x-vultrino-error").is_none(), "{slot}");
        let seen = e.up.seen().pop().unwrap();
        assert_eq!(seen.path, "/echo", "{slot}");
        assert_eq!(
            seen.query, "x=1",
            "{slot}: the key parameter is taken out, the rest kept"
        );
        assert_eq!(
            seen.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {API_SECRET}").as_str()),
            "{slot}: the real secret, injected the credential's way"
        );
        for gone in ["x-api-key", "x-goog-api-key", "api-key", "x-vultrino-key"] {
            assert!(
                !seen.headers.contains_key(gone),
                "{slot}: {gone} was forwarded"
            );
        }
        // The upstream echoed the secret in every encoding: none reaches the agent.
        assert_scrubbed(&r.text, API_SECRET);
    }
    assert_eq!(e.up.hits("/echo"), 6);
    assert_no_agent_key_upstream(&e.up);
}

#[tokio::test]
async fn a_wrong_or_revoked_key_in_any_slot_is_401_and_nothing_is_sent() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let created =
        e.c.send(
            "POST",
            "/v1/keys",
            Some(&e.admin),
            Some(&json!({"name": "gone", "role": "executor"})),
        )
        .await;
    expect_for("create a key", &created, 201, None);
    let revoked = created.body["key"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap();
    let r =
        e.c.send("DELETE", &format!("/v1/keys/{id}"), Some(&e.admin), None)
            .await;
    expect_for("revoke it", &r, 204, None);
    for key in [WRONG_KEY, revoked.as_str()] {
        for (slot, headers, query) in slots(key) {
            let r = e
                .proxy("GET", &format!("p/echo?x=1{query}"), &pairs(&headers), None)
                .await;
            assert_eq!(r.status, 401, "{slot}: {}", r.text);
            assert!(r.headers.get("x-vultrino-error").is_some(), "{slot}");
        }
    }
    let r = e
        .proxy(
            "GET",
            "p/echo",
            &[("authorization", "Bearer sk-not-vultrino")],
            None,
        )
        .await;
    expect_refusal("no Vultrino key at all", &r, 401, "unauthenticated");
    let agent = e.key("executor").await;
    let r = e
        .proxy(
            "GET",
            "p/echo",
            &[("x-api-key", &agent), ("api-key", WRONG_KEY)],
            None,
        )
        .await;
    expect_refusal("two different keys", &r, 401, "ambiguous_key");
    // An admin session is not an agent key: the route takes API keys only.
    let r = e
        .proxy(
            "GET",
            "p/echo",
            &[("authorization", &format!("Bearer {}", e.admin))],
            None,
        )
        .await;
    expect_refusal("an admin session", &r, 401, "unauthenticated");
    assert_eq!(e.up.seen().len(), 0, "nothing was sent upstream");
}

#[tokio::test]
async fn unknown_alias_policy_and_agent_key_refusals_send_nothing() {
    let e = env().await;
    e.proxy_cred("p", json!({"methods": ["GET"], "path_prefixes": ["/echo"]}))
        .await;
    let agent = e.key("executor").await;
    let auth = [("x-api-key", agent.as_str())];
    let r = e.proxy("GET", "nope/echo", &auth, None).await;
    expect_refusal("an unknown alias", &r, 403, "credential_not_found");
    let r = e.proxy("GET", "p/other", &auth, None).await;
    expect_refusal("a path outside the policy", &r, 403, "path_not_allowed");
    let r = e.proxy("POST", "p/echo", &auth, Some(b"{}".to_vec())).await;
    expect_refusal(
        "a method outside the policy",
        &r,
        403,
        "method_not_allowed_by_policy",
    );
    let r = e.proxy("GET", "p/echo?_method=DELETE", &auth, None).await;
    expect_refusal("a method override", &r, 403, "method_not_allowed_by_policy");
    // A key anywhere but its slot is never sent: a custom header, the path, another parameter,
    // percent-encoded.
    for (what, path, headers) in [
        (
            "a custom header",
            "p/echo".to_string(),
            vec![("x-custom", agent.clone())],
        ),
        ("the path", format!("p/echo/{agent}"), vec![]),
        ("another parameter", format!("p/echo?token={agent}"), vec![]),
        (
            "percent-encoded",
            format!("p/echo?token={}", agent.replace('_', "%5F")),
            vec![],
        ),
    ] {
        let mut h = pairs(&headers);
        h.push(("x-vultrino-key", &agent));
        let r = e.proxy("GET", &path, &h, None).await;
        assert!(
            matches!(r.status, 400 | 403),
            "{what}: {} {}",
            r.status,
            r.text
        );
        assert!(r.headers.get("x-vultrino-error").is_some(), "{what}");
    }
    // A role without `execute`, and one whose scope does not reach the alias.
    let reader = e.key("read-only").await;
    let r = e
        .proxy("GET", "p/echo", &[("x-api-key", &reader)], None)
        .await;
    expect_refusal("no execute permission", &r, 403, "permission_denied");
    e.role(&json!({"name": "other", "permissions": ["execute"], "scopes": ["other-*"]}))
        .await;
    let scoped = e.key("other").await;
    let r = e
        .proxy("GET", "p/echo", &[("x-api-key", &scoped)], None)
        .await;
    expect_refusal("out of scope", &r, 403, "scope_denied");
    assert_eq!(
        e.up.seen().len(),
        0,
        "nothing was sent upstream: {:?}",
        e.up.seen()
    );
}

#[tokio::test]
#[ignore = "aims at non-loopback addresses: run by scripts/test.sh inside `unshare -n`"]
async fn an_ssrf_denial_is_403_and_nothing_is_sent() {
    require_loopback_only_network();
    let e = env().await;
    let agent = e.key("executor").await;
    // One exact host and no base_url: https://<host>, refused by the SSRF guard.
    for (alias, host) in [
        ("meta", "169.254.169.254"),
        ("internal", "metadata.google.internal"),
    ] {
        let r = e
            .create(
                json!({"alias": alias, "type": "api_key", "data": {"key": API_SECRET},
                           "policy": {"allowed_hosts": [host]}}),
            )
            .await;
        expect_for("create", &r, 201, None);
        let r = e
            .proxy(
                "GET",
                &format!("{alias}/latest/meta-data"),
                &[("x-api-key", &agent)],
                None,
            )
            .await;
        expect_refusal(host, &r, 403, "ssrf_blocked");
    }
    assert_eq!(e.up.seen().len(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways_and_the_rest_forwarded() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy(
            "POST",
            "p/echo",
            &[
                ("authorization", &format!("Bearer {agent}")),
                ("connection", "x-custom-hop"),
                ("x-custom-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic eDp5"),
                ("accept-encoding", "gzip, br"),
                ("anthropic-version", "2023-06-01"),
                ("openai-beta", "assistants=v2"),
                ("idempotency-key", "idem-1"),
                ("content-type", "application/json"),
            ],
            Some(br#"{"model":"m"}"#.to_vec()),
        )
        .await;
    expect_for("a POST with hop-by-hop headers", &r, 200, None);
    let seen = e.up.seen().pop().unwrap();
    for gone in ["x-custom-hop", "keep-alive", "proxy-authorization"] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} was forwarded: {seen:?}"
        );
    }
    for (kept, value) in [
        ("anthropic-version", "2023-06-01"),
        ("openai-beta", "assistants=v2"),
        ("idempotency-key", "idem-1"),
        ("content-type", "application/json"),
        ("accept-encoding", "identity"),
        ("host", e.up.addr.to_string().as_str()),
    ] {
        assert_eq!(
            seen.headers.get(kept).map(String::as_str),
            Some(value),
            "{kept}: {seen:?}"
        );
    }
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, br#"{"model":"m"}"#);
    let r = e
        .proxy("GET", "p/hop", &[("x-api-key", &agent)], None)
        .await;
    expect_for("a reply with hop-by-hop headers", &r, 200, None);
    assert_eq!(r.text, "hop");
    assert!(r.headers.get("x-resp-hop").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.headers.get("x-end-to-end").unwrap(), "kept");
    assert_no_agent_key_upstream(&e.up);
}

#[tokio::test]
async fn redirects_come_back_unfollowed_with_location_scrubbed_and_pointing_through_the_proxy() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy("GET", "p/redirect", &[("x-api-key", &agent)], None)
        .await;
    expect_for("a redirect", &r, 302, None);
    assert_eq!(r.headers.get("location").unwrap(), "/proxy/p/landing");
    let r = e
        .proxy("GET", "p/redirect-leak", &[("x-api-key", &agent)], None)
        .await;
    expect_for("a redirect carrying the secret", &r, 302, None);
    let location = r.headers.get("location").unwrap().to_str().unwrap();
    assert!(location.starts_with("/proxy/p/landing?t="), "{location}");
    assert_scrubbed(location, API_SECRET);
    let leak = r.headers.get("x-leak").unwrap().to_str().unwrap();
    assert_scrubbed(leak, API_SECRET);
    for (name, value) in &r.headers {
        assert_scrubbed(value.to_str().unwrap_or(""), API_SECRET);
        assert_ne!(name.as_str(), "set-cookie");
    }
    assert_eq!(e.up.hits("/landing"), 0, "the redirect was not followed");
}

#[tokio::test]
async fn each_proxied_request_is_audited_with_its_sizes_and_whether_it_was_scrubbed() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy(
            "POST",
            "p/echo?q=querysecret",
            &[("x-api-key", &agent)],
            Some(b"hello".to_vec()),
        )
        .await;
    expect_for("a proxied POST", &r, 200, None);
    let r = e
        .proxy("GET", "p/other", &[("x-api-key", &agent)], None)
        .await;
    expect_for("a proxied 404", &r, 404, None);
    let events = e.proxy_events(2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let post = events.iter().find(|ev| ev["method"] == "POST").unwrap();
    assert_eq!(post["credential"], "p");
    assert_eq!(post["host"], "127.0.0.1");
    assert_eq!(post["path"], "/echo", "no query");
    assert_eq!(post["status"], 200);
    assert_eq!(post["outcome"], "allowed");
    assert_eq!(post["bytes_in"], 5);
    assert!(post["bytes_out"].as_u64().unwrap() > 0, "{post}");
    assert_eq!(post["scrubbed"], true, "the echo carried the secret");
    let get = events.iter().find(|ev| ev["method"] == "GET").unwrap();
    assert_eq!(
        (get["status"].clone(), get["scrubbed"].clone()),
        (json!(404), json!(false))
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains("querysecret") && !all.contains(&agent),
        "{all}"
    );
    assert_scrubbed(&all, API_SECRET);
}

/// `POST path` over a raw connection: the head (with `Content-Length: declared`, or chunked
/// when `None`), then `body` bytes written by another task while the reply is read, so that a
/// server that answers before reading the whole body (and closes) is seen as it answered.
/// Returns the status and the `X-Vultrino-Error` value.
async fn raw_post(
    e: &Env,
    path: &str,
    key: &str,
    declared: Option<usize>,
    body: usize,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = e.c.target.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let framing = match declared {
        Some(n) => format!("content-length: {n}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_string(),
    };
    let head = format!(
        "POST /proxy/{path} HTTP/1.1\r\nhost: {authority}\r\nx-api-key: {key}\r\n{framing}\r\n"
    );
    let chunked = declared.is_none();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        let mut left = body;
        while left > 0 {
            let n = left.min(block.len());
            if chunked {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            wr.write_all(&block[..n]).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
            left -= n;
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(wr)
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), rd.read(&mut buf))
            .await
            .expect("a reply within 30 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "the connection closed without a reply: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    writer.abort();
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

#[tokio::test]
async fn a_body_over_the_cap_is_413() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let cap = 32 * 1024 * 1024;
    // A declared length over the cap: refused before any of the body is read, nothing sent.
    let (status, code) = raw_post(&e, "p/echo", &agent, Some(cap + 1), 0).await;
    assert_eq!((status, code.as_deref()), (413, Some("body_too_large")));
    assert_eq!(e.up.seen().len(), 0);
    // A chunked body that passes the cap: cut off there (the upload is aborted, so the
    // upstream never receives a whole request).
    let (status, code) = raw_post(&e, "p/echo", &agent, None, cap + 64 * 1024).await;
    assert_eq!((status, code.as_deref()), (413, Some("body_too_large")));
    assert!(
        e.up.seen().iter().all(|s| s.body.len() < cap),
        "a whole over-cap body reached the upstream"
    );
    let r = e
        .proxy(
            "POST",
            "p/echo",
            &[("x-api-key", &agent)],
            Some(vec![b'y'; 2 * 1024 * 1024]),
        )
        .await;
    expect_for(
        "2 MiB: over the API's own cap, not the proxy's",
        &r,
        200,
        None,
    );
    assert_eq!(e.up.seen().pop().unwrap().body.len(), 2 * 1024 * 1024);
}

#[tokio::test]
async fn base_url_is_set_shown_and_checked_through_the_api() {
    let e = env().await;
    let agent = e.key("executor").await;
    let base = e.up.url("/v1base");
    let create = |alias: &str, hosts: Value, base_url: Value| {
        json!({"alias": alias, "type": "api_key", "data": {"key": API_SECRET},
               "policy": {"allowed_hosts": hosts}, "base_url": base_url})
    };
    let r = e
        .create(create("b", json!(["127.0.0.1"]), json!(base)))
        .await;
    expect_for("create with base_url", &r, 201, None);
    assert_eq!(r.body["base_url"], base.as_str());
    let r =
        e.c.send("GET", "/v1/credentials/b", Some(&e.admin), None)
            .await;
    assert_eq!(r.body["base_url"], base.as_str(), "{}", r.text);
    let r = e
        .proxy("GET", "b/echo", &[("x-api-key", &agent)], None)
        .await;
    expect_for("through the base path", &r, 200, None);
    assert_eq!(e.up.seen().pop().unwrap().path, "/v1base/echo");
    for (what, hosts, bad) in [
        (
            "a host outside allowed_hosts",
            json!(["127.0.0.1"]),
            json!("https://api.example.com"),
        ),
        ("a query", json!(["127.0.0.1"]), json!(e.up.url("/x?key=1"))),
        (
            "not http(s)",
            json!(["127.0.0.1"]),
            json!("ftp://127.0.0.1/x"),
        ),
        ("not a URL", json!(["127.0.0.1"]), json!("127.0.0.1")),
        (
            "a dot segment",
            json!(["127.0.0.1"]),
            json!(e.up.url("/a/%2e%2e/b")),
        ),
    ] {
        let r = e.create(create("bad", hosts, bad)).await;
        expect_for(what, &r, 400, "invalid_base_url");
    }
    // No base_url and not one exact host: a clear 400 on use.
    let r = e
        .create(create(
            "two",
            json!(["127.0.0.1", "localhost"]),
            Value::Null,
        ))
        .await;
    expect_for("create without base_url", &r, 201, None);
    let r = e
        .proxy("GET", "two/echo", &[("x-api-key", &agent)], None)
        .await;
    expect_refusal("no base_url", &r, 400, "no_base_url");
    // A policy that no longer allows the base_url's host is refused; "" removes base_url.
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/b",
            Some(&e.admin),
            Some(&json!({"policy": {"allowed_hosts": ["api.example.com"]}})),
        )
        .await;
    expect_for(
        "narrow the policy under base_url",
        &r,
        400,
        "invalid_base_url",
    );
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/b",
            Some(&e.admin),
            Some(&json!({"base_url": ""})),
        )
        .await;
    expect_for("remove base_url", &r, 200, None);
    assert!(r.body.get("base_url").is_none(), "{}", r.text);
}

#[tokio::test]
async fn a_secret_spelled_out_over_sse_events_never_reassembles_at_the_client() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy("GET", "p/sse-leak", &[("x-api-key", &agent)], None)
        .await;
    expect_for("an event stream", &r, 200, None);
    assert!(r.text.ends_with("data: [DONE]\n\n"), "{}", r.text);
    // Join the deltas as an SDK does.
    let joined: String = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(!joined.is_empty(), "{}", r.text);
    assert_scrubbed(&joined, API_SECRET);
    assert_scrubbed(&r.text, API_SECRET);
}

/// Whatever the upstream serves is served on the admin UI's origin: every reply of the route,
/// the upstream's and Vultrino's refusals alike, is a sandboxed document that loads nothing, is
/// never sniffed, and cannot widen a service worker's scope or replace Vultrino's policy.
#[tokio::test]
async fn proxied_replies_are_sandboxed_and_cannot_take_over_the_origin() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy("GET", "p/hostile", &[("x-api-key", &agent)], None)
        .await;
    expect_for("an upstream HTML page", &r, 200, None);
    let refused = e
        .proxy("GET", "nope/x", &[("x-api-key", &agent)], None)
        .await;
    expect_refusal("an unknown alias", &refused, 403, "credential_not_found");
    for (what, r) in [("upstream reply", &r), ("refusal", &refused)] {
        let csp: Vec<_> = r
            .headers
            .get_all("content-security-policy")
            .iter()
            .collect();
        assert_eq!(
            csp,
            ["sandbox; default-src 'none'; frame-ancestors 'none'"],
            "{what}: the upstream's CSP replaced, not merged"
        );
        assert_eq!(
            r.headers.get("x-content-type-options").unwrap(),
            "nosniff",
            "{what}"
        );
        for gone in ["service-worker-allowed", "clear-site-data"] {
            assert!(
                r.headers.get(gone).is_none(),
                "{what}: {gone}: {:?}",
                r.headers
            );
        }
    }
}

/// A browser loading a page, a frame, a script or a (service) worker from `/proxy/` — the link
/// an agent could hand the admin, `?key=` and all — is refused with 403 `browser_context`
/// before anything is sent upstream; an SDK's request (no `Sec-Fetch-*`) and a page's own
/// `fetch()` go through (decision 0082).
#[tokio::test]
async fn browser_pages_frames_and_workers_are_refused_before_anything_is_sent() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let link = format!("p/hostile?key={agent}");
    for (what, headers) in [
        (
            "a click on a link",
            &[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
                ("sec-fetch-site", "none"),
                ("sec-fetch-user", "?1"),
            ][..],
        ),
        (
            "an iframe",
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")][..],
        ),
        (
            "a script tag",
            &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "script")][..],
        ),
        (
            "a worker",
            &[
                ("sec-fetch-mode", "same-origin"),
                ("sec-fetch-dest", "worker"),
            ][..],
        ),
        (
            "a service worker's registration",
            &[
                ("sec-fetch-mode", "same-origin"),
                ("sec-fetch-dest", "serviceworker"),
                ("service-worker", "script"),
            ][..],
        ),
        (
            "a Service-Worker header alone",
            &[("service-worker", "script")][..],
        ),
    ] {
        let r = e.proxy("GET", &link, headers, None).await;
        expect_refusal(what, &r, 403, "browser_context");
        assert_eq!(
            r.headers
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok()),
            Some("sandbox; default-src 'none'; frame-ancestors 'none'"),
            "{what}"
        );
        assert!(!r.text.contains(&agent), "{what}: {}", r.text);
    }
    assert!(
        e.up.seen().is_empty(),
        "a refused browser request reached the upstream: {:?}",
        e.up.seen()
    );
    let sdk = e
        .proxy("GET", "p/echo", &[("x-api-key", &agent)], None)
        .await;
    expect_for("an SDK's request", &sdk, 200, None);
    let page_fetch = e
        .proxy(
            "GET",
            &format!("p/echo?key={agent}"),
            &[
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-dest", "empty"),
                ("sec-fetch-site", "same-origin"),
            ],
            None,
        )
        .await;
    expect_for("a page's fetch()", &page_fetch, 200, None);
    assert_eq!(e.up.seen().len(), 2, "{:?}", e.up.seen());
}

/// Only Vultrino sets `X-Vultrino-Error`: an upstream's forged one never reaches the client,
/// so its own errors are never taken for Vultrino's refusals.
#[tokio::test]
async fn an_upstream_cannot_forge_vultrino_s_error_header() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy("GET", "p/hostile", &[("x-api-key", &agent)], None)
        .await;
    expect_for("an upstream reply with X-Vultrino-Error", &r, 200, None);
    assert!(
        r.headers.get("x-vultrino-error").is_none(),
        "{:?}",
        r.headers
    );
}

/// A `Location` is passed on only inside the base URL (rewritten to the proxy's path, a
/// relative one resolved against the upstream URL first); one to another host, or one that
/// would resolve against Vultrino's own origin outside the base, is removed: an SDK following
/// it would carry its key there.
#[tokio::test]
async fn a_location_outside_the_base_url_is_removed() {
    let e = env().await;
    let r = e
        .create(json!({
            "alias": "b", "type": "api_key", "data": {"key": API_SECRET},
            "policy": {"allowed_hosts": ["127.0.0.1"]}, "base_url": e.up.url("/api"),
        }))
        .await;
    expect_for("create a credential with a base path", &r, 201, None);
    let agent = e.key("executor").await;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let inside = e.up.url("/api/landing");
    for (to, expected) in [
        ("https://third.example/x", None),
        ("/proxy/other/x", None),
        ("/v1/keys", None),
        ("../landing", None),
        ("next?page=2", Some("/proxy/b/next?page=2")),
        ("/api/landing", Some("/proxy/b/landing")),
        (inside.as_str(), Some("/proxy/b/landing")),
    ] {
        let r = e
            .proxy(
                "GET",
                &format!("b/redirect-to?to={}", enc(to)),
                &[("x-api-key", &agent)],
                None,
            )
            .await;
        expect_for(to, &r, 307, None);
        assert_eq!(
            r.headers.get("location").and_then(|v| v.to_str().ok()),
            expected,
            "Location: {to}"
        );
    }
}

/// A key put in the path is refused, and the audit event of that refusal never holds it.
#[tokio::test]
async fn the_audit_path_never_holds_an_agent_key() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let r = e
        .proxy(
            "GET",
            &format!("p/v1/{agent}/x"),
            &[("x-vultrino-key", &agent)],
            None,
        )
        .await;
    expect_refusal("a key in the path", &r, 400, "agent_key_in_request");
    let events = e.proxy_events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["path"], "/v1/[REDACTED]", "{events:?}");
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("vk_"), "{all}");
}

/// A client that goes away after sending its request but before the reply's head still leaves
/// exactly one audit event (`cancelled`, with the bytes sent): the upstream already had the
/// request. None more when the upstream answers later. On both backends (decision 0065).
#[tokio::test]
async fn a_client_gone_before_the_head_is_still_audited() {
    let e = env_cancellable().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    e.leave_once_upstream_has(
        "/slow",
        "POST",
        "/proxy/p/slow",
        &[("x-api-key", &agent)],
        "hello",
    )
    .await;
    let events = e.proxy_events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "cancelled", "{events:?}");
    assert_eq!(events[0]["path"], "/slow", "{events:?}");
    assert_eq!(events[0]["bytes_in"], 5, "{events:?}");
    assert!(events[0]["status"].is_null(), "{events:?}");
    // The upstream answers 2 s after it read the request: no second event for it (this waits
    // 5 s for one).
    let events = e.proxy_events(2).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

/// `POST /proxy/<path>` over a raw connection with a chunked body sent as `chunks`, each its
/// own HTTP chunk, `pause` apart (so the server reads them as separate frames). Returns the
/// status (0: the connection closed without a reply, i.e. the request was cut) and the
/// `X-Vultrino-Error` value.
async fn chunked_post(
    e: &Env,
    path: &str,
    headers: &[(&str, &str)],
    chunks: Vec<Vec<u8>>,
    pause: std::time::Duration,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = e.c.target.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "POST /proxy/{path} HTTP/1.1\r\nhost: {authority}\r\ntransfer-encoding: chunked\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
            wr.flush().await?;
            tokio::time::sleep(pause).await;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        std::io::Result::Ok(wr)
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), rd.read(&mut buf))
            .await
            .expect("a reply within 30 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    writer.abort();
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

/// Nothing the upstream received — whole bodies and cut ones — holds `vk_`: waits a moment for
/// cut requests to be recorded first.
async fn assert_no_vk_in_bodies(up: &Upstream, context: &str) {
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    for seen in up.seen() {
        assert!(
            !seen.received.windows(3).any(|w| w == b"vk_")
                && !vultrino_core::scrub::has_key_shape(&seen.received),
            "{context}: vk_ reached the upstream in a body: {:?}",
            String::from_utf8_lossy(&seen.received)
        );
    }
}

/// Review finding 3: the agent's key in a JSON, form or multipart body, cut anywhere by a
/// chunked upload, never reaches the upstream. Both backends answer 400
/// `agent_key_in_request` before the head (the echo upstream reads the whole body before it
/// answers, so the cut upload fails the exchange first), and the audit event carries the code.
#[tokio::test]
async fn the_agent_key_in_a_request_body_never_reaches_the_upstream() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let auth = [("x-api-key", agent.as_str())];
    let other = "vk_0123456789abcdef_another-agents-key";
    let bodies: Vec<(&str, &str, String)> = vec![
        (
            "json",
            "application/json",
            format!("{{\"api_key\":\"{agent}\",\"query\":\"weather\"}}"),
        ),
        (
            "form",
            "application/x-www-form-urlencoded",
            format!("q=weather&key={}&n=1", agent.replace('_', "%5F")),
        ),
        (
            "multipart",
            "multipart/form-data; boundary=XyZ",
            format!(
                "--XyZ\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\n{other}\r\n--XyZ--\r\n"
            ),
        ),
    ];
    let mut refused = 0;
    for (what, content_type, body) in &bodies {
        let at = body.find("vk").unwrap();
        let bytes = body.as_bytes().to_vec();
        // Every cut inside the key (and around it) for JSON; a few for the others.
        let cuts: Vec<usize> = if *what == "json" {
            (at..=at + agent.len()).collect()
        } else {
            vec![0, at, at + 1, at + 3, at + 10, at + 20, bytes.len()]
        };
        for cut in cuts {
            let (head, tail) = bytes.split_at(cut.min(bytes.len()));
            let mut h = auth.to_vec();
            h.push(("content-type", content_type));
            let (status, code) = chunked_post(
                &e,
                "p/echo",
                &h,
                vec![head.to_vec(), tail.to_vec()],
                std::time::Duration::from_millis(20),
            )
            .await;
            assert_eq!(
                (status, code.as_deref()),
                (400, Some("agent_key_in_request")),
                "{what} cut at {cut}"
            );
            refused += 1;
        }
        // The same body whole (one chunk, Content-Length) through reqwest: refused too.
        let r = e
            .proxy(
                "POST",
                "p/echo",
                &[("x-api-key", &agent), ("content-type", content_type)],
                Some(bytes.clone()),
            )
            .await;
        expect_refusal(what, &r, 400, "agent_key_in_request");
        refused += 1;
    }
    assert_no_vk_in_bodies(&e.up, "a key in the body").await;
    assert!(
        e.up.seen().iter().all(|s| s.body.is_empty()),
        "no refused request reached the upstream whole"
    );
    // The audit lists 50 at most: the newest, each a refusal.
    let want = refused.min(50);
    let events = e.proxy_events(want).await;
    assert!(events.len() >= want, "{} of {want}", events.len());
    for ev in &events {
        assert_eq!(
            (ev["outcome"].as_str(), ev["code"].as_str()),
            (Some("error"), Some("agent_key_in_request")),
            "{ev}"
        );
    }
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&agent), "{all}");
    // A body with `vk_` but no key passes whole, whatever its cuts.
    let clean = b"{\"text\":\"bulk_vk_insert vk_ vk_0123 v\"}".to_vec();
    for cut in [0, 9, 17, 20, 27, clean.len()] {
        let (head, tail) = clean.split_at(cut);
        let (status, code) = chunked_post(
            &e,
            "p/echo",
            &auth,
            vec![head.to_vec(), tail.to_vec()],
            std::time::Duration::from_millis(10),
        )
        .await;
        assert_eq!((status, code), (200, None), "clean body cut at {cut}");
        assert_eq!(e.up.seen().pop().unwrap().body, clean);
    }
}

/// With a method-list policy the body is read whole before anything is sent: a key in it is
/// refused then, and the upstream sees no request at all.
#[tokio::test]
async fn a_key_in_a_body_read_whole_for_a_method_list_is_refused_before_sending() {
    let e = env().await;
    e.proxy_cred("m", json!({"methods": ["GET", "POST"]})).await;
    let agent = e.key("executor").await;
    let body = format!("{{\"messages\":[{{\"content\":\"my key is {agent}\"}}]}}");
    let bytes = body.as_bytes().to_vec();
    let at = body.find("vk_").unwrap();
    let (status, code) = chunked_post(
        &e,
        "m/echo",
        &[("x-api-key", &agent)],
        vec![bytes[..at + 2].to_vec(), bytes[at + 2..].to_vec()],
        std::time::Duration::from_millis(20),
    )
    .await;
    assert_eq!(
        (status, code.as_deref()),
        (400, Some("agent_key_in_request"))
    );
    let r = e
        .proxy("POST", "m/echo", &[("x-api-key", &agent)], Some(bytes))
        .await;
    expect_refusal("whole", &r, 400, "agent_key_in_request");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(e.up.seen().len(), 0, "nothing was sent: {:?}", e.up.seen());
}

/// A request body sent encoded (gzip, br, …) is refused before anything is sent: the check that
/// keeps agent keys out of bodies reads bytes as they are, and the upstream would inflate a key
/// hidden in compressed ones (security review of 2026-12-05, M2; decision 0064). `identity`
/// passes.
#[tokio::test]
async fn an_encoded_request_body_is_refused_and_nothing_is_sent() {
    let e = env().await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    for encoding in ["gzip", "br", "deflate", "identity, gzip", "GZIP"] {
        let r = e
            .proxy(
                "POST",
                "p/echo",
                &[("x-api-key", &agent), ("content-encoding", encoding)],
                Some(vec![0x1f, 0x8b, 0x08, 0x00, 0x00]),
            )
            .await;
        expect_refusal(encoding, &r, 400, "request_encoded");
    }
    assert_eq!(e.up.seen().len(), 0, "{:?}", e.up.seen());
    let r = e
        .proxy(
            "POST",
            "p/echo",
            &[("x-api-key", &agent), ("content-encoding", "identity")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(e.up.seen().len(), 1);
}

/// A key holds at most its cap of exchanges in flight (2 here; default 64), counted until each
/// reply's stream ends: the next is 429 `proxy_busy` with `Retry-After` and is never sent
/// upstream, another key is not affected, and once the streams end the key works again
/// (docs/decisions/0068-proxy-concurrency-caps-and-refusal-audit.md).
#[tokio::test]
async fn a_key_past_its_concurrency_cap_is_429_until_its_streams_end() {
    let cap = 2;
    let e = env_with(ServerOptions {
        extra_env: vec![
            (
                "VULTRINO_PROXY_MAX_CONCURRENT_PER_KEY".into(),
                cap.to_string(),
            ),
            ("PROXY_MAX_CONCURRENT_PER_KEY".into(), cap.to_string()),
        ],
        ..ServerOptions::default()
    })
    .await;
    e.proxy_cred("p", json!({})).await;
    let agent = e.key("executor").await;
    let other = e.key("executor").await;
    let url = |q: &str| format!("{}/proxy/p/hold?n={q}", e.c.target.base);
    // `cap` replies whose heads arrived and whose bodies the upstream holds open.
    let mut held = Vec::new();
    for i in 0..cap {
        let r =
            e.c.http
                .get(url(&i.to_string()))
                .header("x-api-key", &agent)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200, "held stream {i}");
        held.push(r);
    }
    let r = e
        .proxy("GET", "p/hold?n=refused", &[("x-api-key", &agent)], None)
        .await;
    expect_refusal("one past the key's cap", &r, 429, "proxy_busy");
    assert!(r.headers.get("retry-after").is_some(), "{:?}", r.headers);
    assert!(
        !e.up.seen().iter().any(|s| s.query == "n=refused"),
        "the refused request was sent upstream"
    );
    assert_eq!(e.up.hits("/hold"), cap);
    // Another key is not affected.
    let r = e
        .proxy("GET", "p/echo", &[("x-api-key", &other)], None)
        .await;
    expect_for("another key", &r, 200, None);
    // A client that goes away mid-stream frees its slot (local server: hyper drops the reply
    // stream; workerd's own server does not notice a client that leaves, decision 0065).
    if !crate::support::workerd_backend() {
        drop(held.pop());
        let mut freed = false;
        for _ in 0..50 {
            let r = e
                .proxy("GET", "p/echo", &[("x-api-key", &agent)], None)
                .await;
            if r.status == 200 {
                freed = true;
                break;
            }
            expect_refusal("while the slot is still held", &r, 429, "proxy_busy");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(freed, "the dropped stream's slot was never released");
    }
    // The streams end: the key's slots are free again.
    e.up.release_holds();
    for r in held {
        assert_eq!(r.text().await.unwrap(), "start\nend\n");
    }
    let mut ok = 0;
    for _ in 0..cap + 1 {
        let r = e
            .proxy("GET", "p/hold?n=after", &[("x-api-key", &agent)], None)
            .await;
        ok += usize::from(r.status == 200);
    }
    assert_eq!(
        ok,
        cap + 1,
        "one at a time, the key is never refused once its streams ended"
    );
}

/// Refusals of one key that sent nothing upstream are counted, not written one by one: 50
/// identical policy denials leave ONE event (its `count` at the last power of two, 32), another
/// code its own; a request actually sent still gets its own event.
#[tokio::test]
async fn a_flood_of_identical_denials_is_one_counted_audit_event() {
    let e = env().await;
    e.proxy_cred("p", json!({"path_prefixes": ["/echo"]})).await;
    let agent = e.key("executor").await;
    let auth = [("x-api-key", agent.as_str())];
    // Refusals are counted per 10-minute window aligned on the clock: a flood that straddles
    // a window's end is two series (checked below rather than flaking).
    let started = crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS);
    for _ in 0..50 {
        let r = e.proxy("GET", "p/other", &auth, None).await;
        expect_refusal("a path outside the policy", &r, 403, "path_not_allowed");
    }
    let r = e.proxy("GET", "nope/echo", &auth, None).await;
    expect_refusal("an unknown alias", &r, 403, "credential_not_found");
    let r = e.proxy("GET", "p/echo", &auth, None).await;
    expect_for("an allowed request", &r, 200, None);
    if crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS) != started {
        eprintln!("the flood straddled an audit window's end: not checked");
        return;
    }
    let events = e.proxy_events(3).await;
    // Give a wrongly written 4th event time to show up.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let events_again = e.proxy_events(3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events_again.len(), 3, "{events_again:?}");
    let denied: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["code"] == "path_not_allowed")
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    assert_eq!(denied[0]["count"], 32, "{events:?}");
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["credential"], "p");
    let unknown = events
        .iter()
        .find(|ev| ev["code"] == "credential_not_found")
        .unwrap();
    assert_eq!(unknown["count"], 1, "{events:?}");
    let sent = events.iter().find(|ev| ev["outcome"] == "allowed").unwrap();
    assert!(sent["count"].is_null(), "{sent}");
    assert!(
        !e.up.seen().iter().any(|s| s.path == "/other"),
        "nothing refused was sent"
    );
}

/// Refusals are counted per request shape (method, host and path), not only per alias and
/// code: an agent that surrounds a probe with identical innocuous refusals of the same code
/// cannot keep the probe out of the log — it is written, with its path (afternoon review L5,
/// decision 0087).
#[tokio::test]
async fn a_refused_probe_among_innocuous_refusals_is_still_written() {
    let e = env().await;
    e.proxy_cred("p", json!({"path_prefixes": ["/echo"]})).await;
    let agent = e.key("executor").await;
    let auth = [("x-api-key", agent.as_str())];
    let started = crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS);
    for (method, path) in [
        ("GET", "p/a"),
        ("GET", "p/a"),
        ("GET", "p/secret"),
        ("GET", "p/a"),
        ("DELETE", "p/a"),
    ] {
        let r = e.proxy(method, path, &auth, None).await;
        expect_refusal(path, &r, 403, "path_not_allowed");
    }
    if crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS) != started {
        eprintln!("the refusals straddled an audit window's end: not checked");
        return;
    }
    let events = e.proxy_events(3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let find = |method: &str, path: &str| {
        events
            .iter()
            .find(|ev| ev["method"] == method && ev["path"] == path)
            .unwrap_or_else(|| panic!("no event for {method} {path}: {events:?}"))
    };
    assert_eq!(find("GET", "/secret")["count"], 1, "{events:?}");
    assert_eq!(find("DELETE", "/a")["count"], 1, "{events:?}");
    // Three identical refusals: one event, written at 1 and 2.
    assert_eq!(find("GET", "/a")["count"], 2, "{events:?}");
    assert!(e.up.seen().is_empty(), "{:?}", e.up.seen());
}

/// `POST /proxy/<path>` over a raw connection declaring `declared` body bytes, then `parts`
/// written `pause` apart, then nothing (the connection kept open): the status and
/// `X-Vultrino-Error` of the reply, and how long it took to come.
async fn stalled_post(
    e: &Env,
    path: &str,
    headers: &[(&str, &str)],
    declared: usize,
    parts: Vec<Vec<u8>>,
    pause: std::time::Duration,
) -> (u16, Option<String>, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = e.c.target.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "POST /proxy/{path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {declared}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for p in parts {
            wr.write_all(&p).await?;
            wr.flush().await?;
            tokio::time::sleep(pause).await;
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        std::io::Result::Ok(wr)
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), rd.read(&mut buf))
            .await
            .expect("a reply within 20 s")
            .unwrap_or(0);
        assert!(n > 0, "closed without a reply");
        got.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    writer.abort();
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
    (status, error, took)
}

/// A credential with a method list has its request body read whole before anything is sent
/// (to look for a `_method` override): a client that stalls (the idle deadline) or trickles
/// (the total deadline) gets 408 `body_timeout` within the stream deadlines and nothing is
/// sent — on the worker too, which enforces them itself rather than leaving the request to the
/// runtime (review 2026-12-05, finding 5; decision 0087).
#[tokio::test]
async fn a_body_that_stalls_or_trickles_is_408_on_every_backend_and_nothing_is_sent() {
    let mut extra_env = Vec::new();
    for (name, ms) in [
        ("STREAM_IDLE_TIMEOUT_MS", "500"),
        ("STREAM_TOTAL_TIMEOUT_MS", "2000"),
    ] {
        extra_env.push((format!("VULTRINO_{name}"), ms.to_string()));
        extra_env.push((name.to_string(), ms.to_string()));
    }
    let e = env_with(ServerOptions {
        extra_env,
        ..ServerOptions::default()
    })
    .await;
    e.proxy_cred("m", json!({"methods": ["GET", "POST"]})).await;
    let agent = e.key("executor").await;
    let auth = [("x-api-key", agent.as_str())];
    // Half the body, then nothing: the idle deadline.
    let (status, code, took) = stalled_post(
        &e,
        "m/echo",
        &auth,
        1000,
        vec![vec![b'a'; 500]],
        std::time::Duration::from_millis(1),
    )
    .await;
    assert_eq!((status, code.as_deref()), (408, Some("body_timeout")));
    assert!(
        took < std::time::Duration::from_millis(1900),
        "idle, not total: {took:?}"
    );
    // A byte every 300 ms (never idle for 500 ms): the total deadline.
    let (status, code, took) = stalled_post(
        &e,
        "m/echo",
        &auth,
        1000,
        vec![b"x".to_vec(); 20],
        std::time::Duration::from_millis(300),
    )
    .await;
    assert_eq!((status, code.as_deref()), (408, Some("body_timeout")));
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(
        e.up.seen().is_empty(),
        "nothing was sent: {:?}",
        e.up.seen()
    );
    // A body that comes in time still goes through.
    let r = e
        .proxy("POST", "m/echo", &auth, Some(b"{\"ok\":1}".to_vec()))
        .await;
    expect_for("a body sent at once", &r, 200, None);
}

/// Clients that leave before anything was sent upstream (here: while a method-list credential
/// waits for the rest of the body) are refusals like the others: counted in one event per key,
/// alias, code and request, not written one by one, and nothing reaches the upstream (security
/// review of 2026-12-05 afternoon, L4; decision 0068). On the worker the request is cancelled
/// as Cloudflare's edge cancels it, which drops the core's future before the send: that drop is
/// what is counted (`cancelled`). The local server sees the body fail first (`invalid_body`).
#[tokio::test]
async fn clients_that_leave_before_sending_are_one_counted_event() {
    let e = env_cancellable().await;
    e.proxy_cred("m", json!({"methods": ["GET", "POST"]})).await;
    let agent = e.key("executor").await;
    let started = crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS);
    for _ in 0..3 {
        e.leave_before_the_body_ends("/proxy/m/echo", &[("x-api-key", &agent)], "{\"a\":")
            .await;
    }
    // The counted writes happen after the client left: wait for the third one to land.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    if crate::support::audit_window_now(vultrino_core::audit::REFUSAL_WINDOW_MS) != started {
        eprintln!("the requests straddled an audit window's end: not checked");
        return;
    }
    let events = e.proxy_events(1).await;
    assert_eq!(
        events.len(),
        1,
        "one counted event, not one each: {events:?}"
    );
    let ev = &events[0];
    // Written at the 1st and 2nd; the 3rd is counted, not written.
    assert_eq!(ev["count"], 2, "{ev}");
    let expected = if crate::support::workerd_backend() {
        ("cancelled", serde_json::Value::Null)
    } else {
        ("error", json!("invalid_body"))
    };
    assert_eq!(
        (ev["outcome"].as_str().unwrap(), ev["code"].clone()),
        expected,
        "{ev}"
    );
    assert_eq!(ev["path"], "/echo", "{ev}");
    assert!(
        e.up.seen().is_empty(),
        "nothing was sent: {:?}",
        e.up.seen()
    );
}
