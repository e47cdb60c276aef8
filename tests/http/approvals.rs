//! Approvals (`require_approval`, `GET /v1/approvals…`, `POST …/approve|deny`): a request that
//! needs a person's yes is answered 202 with an approval id and sends nothing; once a person
//! approves, the agent re-sends the same request with `X-Vultrino-Approval` and it runs exactly
//! once; another request cannot ride the approval; denial, expiry, other keys and
//! `Prefer: wait` (docs/decisions/0090-approvals.md, docs/approvals.md).

use serde_json::{json, Value};

use crate::support::{expect_for, Reply, ServerOptions};
use crate::{env, env_with, Env, API_SECRET};

impl Env {
    /// An `api_key` credential allowed on 127.0.0.1 (with the upstream as its base URL, for the
    /// proxy) whose policy asks for approvals `mode` (`always`, `writes`; `null`: never).
    async fn approval_cred(&self, alias: &str, mode: Value) {
        let r = self
            .create(json!({
                "alias": alias, "type": "api_key", "data": {"key": API_SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"], "require_approval": mode},
                "base_url": self.up.url(""),
            }))
            .await;
        expect_for("create a credential", &r, 201, None);
    }

    /// `POST /v1/execute` as `who` of `method url` with `body`; of `headers`, Vultrino's own
    /// (`x-vultrino-*`, `prefer`) go on the call to Vultrino, the others into the request's
    /// `headers` (forwarded upstream).
    async fn exec(
        &self,
        who: &str,
        alias: &str,
        method: &str,
        url: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let own = |k: &str| k.starts_with("x-vultrino-") || k == "prefer";
        let forwarded: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| !own(k))
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut req = json!({"credential": alias, "method": method, "url": url,
            "headers": forwarded});
        if let Some(b) = body {
            req["body"] = json!(b);
        }
        let mut rb = self
            .c
            .http
            .post(format!("{}/v1/execute", self.c.target.base))
            .bearer_auth(who);
        for (k, v) in headers.iter().filter(|(k, _)| own(k)) {
            rb = rb.header(*k, *v);
        }
        let rb = rb.json(&req);
        self.c.send_raw(rb).await
    }

    /// [`Env::exec`] again with `X-Vultrino-Approval: id`.
    async fn resend(
        &self,
        who: &str,
        alias: &str,
        method: &str,
        url: &str,
        body: Option<&str>,
        id: &str,
    ) -> Reply {
        let approval = [("x-vultrino-approval", id)];
        self.exec(who, alias, method, url, body, &approval).await
    }

    /// `method /proxy/<path>` with the key in `X-Vultrino-Key` and extra `headers`.
    async fn via_proxy(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut rb = self
            .c
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/proxy/{path}", self.c.target.base),
            )
            .header("x-vultrino-key", key)
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.c.send_raw(rb).await
    }

    /// `POST /v1/approvals/{id}/{action}` as `who`.
    async fn decide(&self, who: &str, id: &str, action: &str) -> Reply {
        self.c
            .send(
                "POST",
                &format!("/v1/approvals/{id}/{action}"),
                Some(who),
                Some(&json!({"note": "checked"})),
            )
            .await
    }

    /// An admin approves `id` (200 expected).
    async fn approve(&self, id: &str) {
        let r = self.decide(&self.admin, id, "approve").await;
        expect_for("approve", &r, 200, None);
    }

    async fn approval(&self, who: &str, id: &str) -> Reply {
        self.c
            .send("GET", &format!("/v1/approvals/{id}"), Some(who), None)
            .await
    }
}

/// A server with the credential `pay` asking for approvals `mode` ([`Env::approval_cred`]),
/// an `executor` key, and the upstream's `/echo` URL.
async fn asking_env(mode: &str) -> (Env, String, String) {
    let e = env().await;
    e.approval_cred("pay", json!(mode)).await;
    let key = e.key("executor").await;
    let url = e.up.url("/echo");
    (e, key, url)
}

/// The approval id of a 202, after checking its shape.
fn pending_id(r: &Reply) -> String {
    expect_for("approval needed", r, 202, None);
    assert_eq!(r.body["status"], "pending", "{}", r.text);
    assert!(r.body["expires_at"].as_u64().unwrap() > 0, "{}", r.text);
    let id = r.body["approval_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ap_") && id.len() == 35, "{id}");
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/approvals/{id}").as_str())
    );
    id
}

/// Waits until the clock has moved past the current millisecond. Lists are newest first by
/// `created_at` (milliseconds) and ties go by id, which is random; a test that checks the order
/// of two approvals made back to back waits so that they are not made in the same millisecond
/// (CI once made both in one and saw them in id order).
async fn next_millisecond() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

fn ids(r: &Reply) -> Vec<String> {
    r.body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// The whole flow over execute: a write waits (nothing sent, a read passes under `writes`),
/// the key reads its approval, cannot approve it, an admin approves, the re-send runs once and
/// a second re-send is 409 `approval_used`. Every step is audited.
#[tokio::test]
async fn a_write_waits_for_a_person_and_runs_once_after_approval() {
    let (e, key, url) = asking_env("writes").await;
    let url = format!("{url}?amount=10");

    let r = e
        .exec(
            &key,
            "pay",
            "POST",
            &url,
            Some("{\"to\":\"bob\"}"),
            &[("x-vultrino-reason", "pay bob")],
        )
        .await;
    let id = pending_id(&r);
    assert_eq!(e.up.hits("/echo"), 0, "nothing is sent before approval");

    let r = e.exec(&key, "pay", "GET", &url, None, &[]).await;
    expect_for("a read under writes", &r, 200, None);
    assert_eq!(e.up.hits("/echo"), 1);

    let r = e.approval(&key, &id).await;
    expect_for("the key reads its approval", &r, 200, None);
    let a = &r.body;
    assert_eq!(a["status"], "pending", "{a}");
    assert_eq!(a["credential"], "pay");
    assert_eq!(a["method"], "POST");
    assert_eq!(a["url"], url.as_str());
    assert_eq!(a["body_preview"], "{\"to\":\"bob\"}");
    assert_eq!(a["body_size"], 12);
    assert_eq!(a["reason"], "pay bob");
    assert_eq!(a["via"], "execute");
    assert_eq!(
        a["requested_by"],
        format!("key:{}", key.split('_').nth(1).unwrap())
    );
    assert!(!r.text.contains(API_SECRET), "{}", r.text);

    let r = e.decide(&key, &id, "approve").await;
    expect_for("the requesting key cannot approve", &r, 403, None);
    let r = e.decide(&e.admin, &id, "approve").await;
    expect_for("an admin approves", &r, 200, None);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["decided_by"], "admin:admin");

    let again = [("x-vultrino-approval", id.as_str())];
    let r = e
        .exec(&key, "pay", "POST", &url, Some("{\"to\":\"bob\"}"), &again)
        .await;
    expect_for("the approved request runs", &r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    assert_eq!(e.up.hits("/echo"), 2);
    let r = e
        .exec(&key, "pay", "POST", &url, Some("{\"to\":\"bob\"}"), &again)
        .await;
    expect_for("a second run", &r, 409, "approval_used");
    assert_eq!(e.up.hits("/echo"), 2, "it ran once");
    assert_eq!(e.approval(&key, &id).await.body["status"], "executed");

    for action in ["approval_requested", "approval_approved"] {
        let events = e.audit_events(action, 1).await;
        assert_eq!(events.len(), 1, "{action}");
        assert_eq!(events[0]["approval_id"], id.as_str(), "{action}");
    }
    let executed = e.audit_events("execute", 3).await;
    assert!(
        executed
            .iter()
            .any(|ev| ev["approval_id"] == id.as_str() && ev["status"] == 200),
        "{executed:?}"
    );
}

/// Only the request that was approved runs on it: another body, method, URL or bound header
/// is 409 `approval_mismatch`, the upstream receives nothing, and the approval still works for
/// the right request. Volatile headers (a new User-Agent) do not matter.
#[tokio::test]
async fn another_request_cannot_ride_an_approval() {
    let (e, key, url) = asking_env("always").await;
    let id = pending_id(
        &e.exec(
            &key,
            "pay",
            "POST",
            &url,
            Some("amount=10"),
            &[("x-tag", "a")],
        )
        .await,
    );
    e.approve(&id).await;
    let with = |tag: &'static str| {
        vec![
            ("x-vultrino-approval", id.clone()),
            ("x-tag", tag.to_string()),
        ]
    };
    let other_url = e.up.url("/echo?x=1");
    for (what, method, url, body, tag) in [
        ("another body", "POST", url.as_str(), "amount=99999", "a"),
        ("another method", "PUT", url.as_str(), "amount=10", "a"),
        ("another url", "POST", other_url.as_str(), "amount=10", "a"),
        ("another header", "POST", url.as_str(), "amount=10", "b"),
    ] {
        let h = with(tag);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = e.exec(&key, "pay", method, url, Some(body), &h).await;
        expect_for(what, &r, 409, "approval_mismatch");
    }
    assert!(e.up.seen().is_empty(), "the upstream received nothing");
    assert_eq!(e.audit_events("approval_mismatch", 4).await.len(), 4);
    let h = with("a");
    let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("user-agent", "another-sdk/9"));
    let r = e
        .exec(&key, "pay", "POST", &url, Some("amount=10"), &h)
        .await;
    expect_for("the approved request", &r, 200, None);
    assert_eq!(e.up.hits("/echo"), 1);
}

/// Of 20 concurrent re-sends of an approved request, exactly one reaches the upstream; the
/// others are 409 `approval_used`.
#[tokio::test]
async fn twenty_concurrent_resends_run_the_request_exactly_once() {
    let (e, key, url) = asking_env("writes").await;
    let id = pending_id(&e.exec(&key, "pay", "DELETE", &url, None, &[]).await);
    e.approve(&id).await;
    let again = [("x-vultrino-approval", id.as_str())];
    let sends = (0..20).map(|_| e.exec(&key, "pay", "DELETE", &url, None, &again));
    let replies = futures_util::future::join_all(sends).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let used = replies
        .iter()
        .filter(|r| r.status == 409 && r.body["error"]["code"] == "approval_used")
        .count();
    assert_eq!(
        (ok, used),
        (1, 19),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(e.up.hits("/echo"), 1, "exactly one upstream call");
}

/// `always` asks for reads too; `writes` never for GET; a token minted with
/// `require_approval: true` asks on a credential that does not, and spends no use until the
/// approved request runs.
#[tokio::test]
async fn always_writes_and_the_token_flag_decide_what_needs_approval() {
    let e = env().await;
    e.approval_cred("always", json!("always")).await;
    e.approval_cred("free", Value::Null).await;
    let key = e.key("executor").await;
    let url = e.up.url("/echo");
    pending_id(&e.exec(&key, "always", "GET", &url, None, &[]).await);
    let r = e.exec(&key, "free", "POST", &url, Some("x"), &[]).await;
    expect_for("no approval asked", &r, 200, None);

    let minted =
        e.c.send(
            "POST",
            "/v1/tokens",
            Some(&key),
            Some(&json!({"credentials": ["free"], "uses": 1, "require_approval": true})),
        )
        .await;
    expect_for("mint a token that asks", &minted, 201, None);
    assert_eq!(minted.body["require_approval"], true);
    let token = minted.body["token"].as_str().unwrap();
    let id = pending_id(&e.exec(token, "free", "GET", &url, None, &[]).await);
    // A refused or pending request spends no use: the one use is left for the approved run.
    pending_id(&e.exec(token, "free", "GET", &url, None, &[]).await);
    e.approve(&id).await;
    let r = e.resend(token, "free", "GET", &url, None, &id).await;
    expect_for("the token's approved request", &r, 200, None);
    assert_eq!(e.up.hits("/echo"), 2);
    // The key's own requests need nothing.
    expect_for(
        "the key",
        &e.exec(&key, "free", "GET", &url, None, &[]).await,
        200,
        None,
    );
}

/// A denied approval refuses its request (403 `approval_denied`) and cannot be approved later
/// (409 `approval_not_pending`).
#[tokio::test]
async fn a_denied_approval_refuses_its_request() {
    let (e, key, url) = asking_env("writes").await;
    let id = pending_id(&e.exec(&key, "pay", "POST", &url, Some("x"), &[]).await);
    let r = e.decide(&e.admin, &id, "deny").await;
    expect_for("deny", &r, 200, None);
    assert_eq!(r.body["status"], "denied");
    // Execute also takes the id (and a reason) as JSON fields.
    let body = json!({"credential": "pay", "method": "POST", "url": url, "body": "x",
        "approval_id": id, "reason": "again"});
    let r =
        e.c.send("POST", "/v1/execute", Some(&key), Some(&body))
            .await;
    expect_for("re-send", &r, 403, "approval_denied");
    let r = e.decide(&e.admin, &id, "approve").await;
    expect_for("approve after deny", &r, 409, "approval_not_pending");
    assert!(e.up.seen().is_empty());
    assert_eq!(e.audit_events("approval_denied", 1).await.len(), 1);
}

/// A pending approval expires after the TTL (1 s here): it reads `expired`, its re-send is 410
/// `approval_expired`, it can no longer be approved, and the expiry is audited once.
#[tokio::test]
async fn a_pending_approval_expires() {
    let e = env_with(ServerOptions {
        extra_env: vec![
            ("VULTRINO_APPROVAL_TTL".into(), "1".into()),
            ("APPROVAL_TTL_SECS".into(), "1".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    e.approval_cred("pay", json!("writes")).await;
    let key = e.key("executor").await;
    let url = e.up.url("/echo");
    let id = pending_id(&e.exec(&key, "pay", "POST", &url, Some("x"), &[]).await);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(e.approval(&key, &id).await.body["status"], "expired");
    let r = e.resend(&key, "pay", "POST", &url, Some("x"), &id).await;
    expect_for("re-send", &r, 410, "approval_expired");
    let r = e.decide(&e.admin, &id, "approve").await;
    expect_for("approve too late", &r, 409, "approval_not_pending");
    assert!(e.up.seen().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        e.audit_events("approval_expired", 1).await.len(),
        1,
        "audited once"
    );
}

/// Another key cannot read, list or use an approval (404 `approval_not_found`, as an unknown
/// id); an admin lists every one, filtered by status.
#[tokio::test]
async fn another_key_cannot_see_or_use_an_approval() {
    let (e, key, url) = asking_env("writes").await;
    let other = e.key("executor").await;
    let id = pending_id(&e.exec(&key, "pay", "POST", &url, Some("x"), &[]).await);
    next_millisecond().await;
    let second = pending_id(&e.exec(&other, "pay", "POST", &url, Some("y"), &[]).await);
    expect_for(
        "another key reads",
        &e.approval(&other, &id).await,
        404,
        "approval_not_found",
    );
    expect_for(
        "unknown id",
        &e.approval(&key, "ap_00000000000000000000000000000000")
            .await,
        404,
        "approval_not_found",
    );
    expect_for(
        "approve as a non-admin key",
        &e.decide(&other, &id, "approve").await,
        404,
        "approval_not_found",
    );
    e.approve(&id).await;
    let r = e.resend(&other, "pay", "POST", &url, Some("x"), &id).await;
    expect_for("another key uses it", &r, 404, "approval_not_found");
    assert!(e.up.seen().is_empty());

    let r = e.c.send("GET", "/v1/approvals", Some(&key), None).await;
    expect_for("the key's list", &r, 200, None);
    assert_eq!(ids(&r), std::slice::from_ref(&id));
    let r = e.c.send("GET", "/v1/approvals", Some(&e.admin), None).await;
    assert_eq!(ids(&r), [second.clone(), id.clone()], "newest first");
    let r =
        e.c.send("GET", "/v1/approvals?status=pending", Some(&e.admin), None)
            .await;
    assert_eq!(ids(&r), [second]);
    let r =
        e.c.send("GET", "/v1/approvals?status=maybe", Some(&e.admin), None)
            .await;
    expect_for("a bad status", &r, 400, None);
    let r =
        e.c.send(
            "DELETE",
            &format!("/v1/approvals/{id}"),
            Some(&e.admin),
            None,
        )
        .await;
    expect_for("wrong method", &r, 405, None);
}

/// The pass-through proxy asks too: its body is bound (another body is 409 and sends
/// nothing), the approval shows the upstream URL and the agent's `X-Vultrino-Reason`, and the
/// re-sent request reaches the upstream without Vultrino's headers.
#[tokio::test]
async fn the_proxy_waits_for_approval_and_binds_the_body() {
    let (e, key, _) = asking_env("writes").await;
    let r = e
        .via_proxy(
            &key,
            "POST",
            "pay/echo?n=1",
            "{\"amount\":10}",
            &[
                ("x-vultrino-reason", "refund"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    let id = pending_id(&r);
    assert_eq!(
        r.headers
            .get("x-vultrino-error")
            .and_then(|v| v.to_str().ok()),
        Some("approval_pending")
    );
    let a = e.approval(&key, &id).await.body;
    assert_eq!(a["via"], "proxy", "{a}");
    assert_eq!(a["reason"], "refund");
    assert_eq!(a["url"], e.up.url("/echo?n=1").as_str());
    assert_eq!(a["body_preview"], "{\"amount\":10}");
    assert!(
        !a.to_string().contains(&key),
        "the key is not in the approval"
    );
    e.approve(&id).await;
    let h = [
        ("x-vultrino-approval", id.as_str()),
        ("content-type", "application/json"),
    ];
    let r = e
        .via_proxy(&key, "POST", "pay/echo?n=1", "{\"amount\":99}", &h)
        .await;
    expect_for("another body", &r, 409, "approval_mismatch");
    assert!(e.up.seen().is_empty());
    let r = e
        .via_proxy(&key, "POST", "pay/echo?n=1", "{\"amount\":10}", &h)
        .await;
    expect_for("the approved request", &r, 200, None);
    let seen = e.up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"{\"amount\":10}");
    assert!(
        seen[0]
            .headers
            .keys()
            .all(|k| !k.starts_with("x-vultrino-")),
        "{:?}",
        seen[0].headers
    );
    let r = e
        .via_proxy(&key, "POST", "pay/echo?n=1", "{\"amount\":10}", &h)
        .await;
    expect_for("twice", &r, 409, "approval_used");
    // The approved run's event is written when its reply ends, after the refusals' events.
    let approved = |ev: &Value| ev["approval_id"] == id.as_str();
    let events = e
        .audit_events_until("proxy", |events| events.iter().any(approved))
        .await;
    assert!(events.iter().any(approved), "{events:?}");
}

/// `Prefer: wait=N` holds the request: approved meanwhile, the agent gets the upstream's reply
/// in the same exchange; with no decision, 202 with `Preference-Applied`.
#[tokio::test]
async fn prefer_wait_holds_the_request_until_a_person_decides() {
    let (e, key, url) = asking_env("writes").await;

    let started = std::time::Instant::now();
    let r = e
        .exec(
            &key,
            "pay",
            "POST",
            &url,
            Some("a"),
            &[("prefer", "wait=1")],
        )
        .await;
    let id = pending_id(&r);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "it waited"
    );
    assert_eq!(
        r.headers
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("wait=1")
    );
    let _ = id;

    let held = e.exec(
        &key,
        "pay",
        "POST",
        &url,
        Some("b"),
        &[("prefer", "wait=20")],
    );
    let approver = async {
        for _ in 0..100 {
            let r =
                e.c.send("GET", "/v1/approvals?status=pending", Some(&e.admin), None)
                    .await;
            let found: Vec<Value> = r.body["approvals"].as_array().cloned().unwrap_or_default();
            if let Some(a) = found.iter().find(|a| a["body_preview"] == "b") {
                let id = a["id"].as_str().unwrap().to_string();
                e.approve(&id).await;
                return id;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no pending approval appeared");
    };
    let (r, id) = futures_util::future::join(held, approver).await;
    expect_for("approved while held", &r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    assert_eq!(e.up.hits("/echo"), 1);
    assert_eq!(e.approval(&key, &id).await.body["status"], "executed");
}

/// MCP `http_request` goes through the same gate: a 202-shaped result (not an error, decision
/// 0094) naming the id and `approval_status` (nothing sent), then, approved, the same call with
/// `approval_id` runs once.
#[tokio::test]
async fn an_mcp_http_request_waits_for_approval_too() {
    let (e, key, _) = asking_env("writes").await;
    let call = |extra: Value| {
        let mut args = json!({"credential": "pay", "method": "POST",
            "url": e.up.url("/echo"), "body": "hello", "reason": "via mcp"});
        if let (Some(a), Some(x)) = (args.as_object_mut(), extra.as_object()) {
            a.extend(x.clone());
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "http_request", "arguments": args}});
        e.c.send_raw(
            e.c.http
                .post(format!("{}/mcp", e.c.target.base))
                .bearer_auth(&key)
                .header("accept", "application/json")
                .header("mcp-protocol-version", "2025-11-25")
                .json(&body),
        )
    };
    let r = call(json!({})).await;
    expect_for("tools/call", &r, 200, None);
    assert_eq!(r.body["result"]["isError"], false, "{}", r.text);
    assert_eq!(
        r.body["result"]["structuredContent"]["status"], 202,
        "{}",
        r.text
    );
    let text = r.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("approval_status"), "{text}");
    let listed = e.c.send("GET", "/v1/approvals", Some(&key), None).await;
    let id = ids(&listed).first().cloned().unwrap();
    assert!(
        text.contains(&id),
        "the tool result names the approval: {text}"
    );
    assert_eq!(e.approval(&key, &id).await.body["via"], "mcp");
    assert!(e.up.seen().is_empty());
    e.approve(&id).await;
    let r = call(json!({"approval_id": id})).await;
    assert_eq!(r.body["result"]["isError"], false, "{}", r.text);
    assert_eq!(e.up.hits("/echo"), 1);
}

/// `Prefer` goes upstream and upstreams act on it (PostgREST `resolution=merge-duplicates` turns
/// an insert into an upsert): a re-send that adds a preference is another request (409
/// `approval_mismatch`, nothing sent); only `wait=N`, Vultrino's own, may come and go. The
/// person sees the preference (review of 2026-12-06, finding 1; decision 0098).
#[tokio::test]
async fn a_preference_cannot_ride_an_approval() {
    let (e, key, _) = asking_env("writes").await;
    let id = pending_id(
        &e.via_proxy(&key, "POST", "pay/echo", "{\"n\":1}", &[])
            .await,
    );
    e.approve(&id).await;
    for prefer in [
        "resolution=merge-duplicates",
        "wait=5, tx=commit",
        "return=representation",
    ] {
        let h = [("x-vultrino-approval", id.as_str()), ("prefer", prefer)];
        let r = e.via_proxy(&key, "POST", "pay/echo", "{\"n\":1}", &h).await;
        expect_for(prefer, &r, 409, "approval_mismatch");
    }
    assert!(e.up.seen().is_empty(), "the upstream received nothing");
    let h = [("x-vultrino-approval", id.as_str()), ("prefer", "wait=5")];
    let r = e.via_proxy(&key, "POST", "pay/echo", "{\"n\":1}", &h).await;
    assert_eq!(
        r.status, 200,
        "only a wait added: the approved request: {}",
        r.text
    );
    assert_eq!(e.up.hits("/echo"), 1);

    // With a preference: bound and shown, without the wait.
    let h = [("prefer", "wait=0, resolution=merge-duplicates")];
    let id = pending_id(&e.via_proxy(&key, "POST", "pay/echo", "{\"n\":2}", &h).await);
    let r = e.approval(&e.admin, &id).await;
    expect_for("read", &r, 200, None);
    assert!(
        r.body["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["prefer", "resolution=merge-duplicates"])),
        "{}",
        r.text
    );
}

/// A request whose URL or a header (other than the key slots) carries the agent's key is
/// refused before an approval is made (400 `agent_key_in_request`): the key never lands in an
/// approval record, which is kept 7 days and shown to every admin (review of 2026-12-06,
/// finding 2).
#[tokio::test]
async fn an_agent_key_never_lands_in_an_approval() {
    let (e, key, url) = asking_env("always").await;
    let in_url = format!("{url}?note={key}");
    let r = e.exec(&key, "pay", "POST", &in_url, None, &[]).await;
    expect_for("key in the execute URL", &r, 400, "agent_key_in_request");
    let r = e
        .exec(
            &key,
            "pay",
            "POST",
            &url,
            None,
            &[("x-debug", key.as_str())],
        )
        .await;
    expect_for("key in an execute header", &r, 400, "agent_key_in_request");
    let r = e
        .via_proxy(&key, "POST", &format!("pay/echo?note={key}"), "", &[])
        .await;
    expect_for("key in the proxy URL", &r, 400, "agent_key_in_request");
    let r = e
        .via_proxy(&key, "POST", "pay/echo", "", &[("x-debug", key.as_str())])
        .await;
    expect_for("key in a proxy header", &r, 400, "agent_key_in_request");
    let r = e.c.send("GET", "/v1/approvals", Some(&e.admin), None).await;
    expect_for("list", &r, 200, None);
    assert!(ids(&r).is_empty(), "no approval was made: {}", r.text);
    assert!(!r.text.contains(&key), "{}", r.text);
    assert!(e.up.seen().is_empty());
}

/// One key cannot flood the approvals (nor the person's list, nor the one object that holds
/// them on Workers): past 100 pending approvals its next request is 429 `rate_limited`,
/// nothing stored or sent, while another key still asks (review of 2026-12-06, finding 3).
#[tokio::test]
async fn a_key_cannot_flood_the_approvals() {
    let (e, key, url) = asking_env("always").await;
    let other = e.key("executor").await;
    for i in 0..100 {
        let body = format!("n={i}");
        pending_id(&e.exec(&key, "pay", "POST", &url, Some(&body), &[]).await);
    }
    let r = e.exec(&key, "pay", "POST", &url, Some("n=100"), &[]).await;
    expect_for("the 101st pending", &r, 429, "rate_limited");
    pending_id(&e.exec(&other, "pay", "POST", &url, Some("n=0"), &[]).await);
    assert!(e.up.seen().is_empty());
}

/// `Prefer: wait` holds at most four requests of one key at once (review of 2026-12-06,
/// finding 4; decision 0101): a fifth is answered at once, 202 without `Preference-Applied`, as
/// without `Prefer`; another key's request is still held; the held ones end with the person's
/// decision.
#[tokio::test]
async fn a_key_has_at_most_four_requests_held_at_once() {
    let (e, key, url) = asking_env("always").await;
    let other = e.key("executor").await;
    let wait = [("prefer", "wait=30")];
    let bodies: Vec<String> = (0..4).map(|i| format!("n={i}")).collect();
    let held = futures_util::future::join_all(
        bodies
            .iter()
            .map(|b| e.exec(&key, "pay", "POST", &url, Some(b), &wait)),
    );
    let meanwhile = async {
        // A held request takes its place before its approval is stored: four listed, four held.
        let mut waiting = Vec::new();
        for _ in 0..100 {
            let r =
                e.c.send("GET", "/v1/approvals?status=pending", Some(&key), None)
                    .await;
            waiting = ids(&r);
            if waiting.len() == 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(waiting.len(), 4, "four held requests asked");
        let r = e.exec(&key, "pay", "POST", &url, Some("n=4"), &wait).await;
        pending_id(&r);
        assert_eq!(
            r.headers.get("preference-applied"),
            None,
            "the fifth is answered at once"
        );
        let r = e
            .exec(
                &other,
                "pay",
                "POST",
                &url,
                Some("n=0"),
                &[("prefer", "wait=1")],
            )
            .await;
        pending_id(&r);
        assert_eq!(
            r.headers
                .get("preference-applied")
                .and_then(|v| v.to_str().ok()),
            Some("wait=1"),
            "another key's request is held"
        );
        for id in &waiting {
            expect_for("deny", &e.decide(&e.admin, id, "deny").await, 200, None);
        }
    };
    let (held, ()) = futures_util::future::join(held, meanwhile).await;
    for r in &held {
        expect_for("held, then denied", r, 403, "approval_denied");
    }
    assert!(e.up.seen().is_empty());
}

/// A re-send refused before anything is sent keeps its approval (review of 2026-12-06,
/// finding 5; decision 0101): an agent token whose uses are spent, or an OAuth2 credential whose
/// token endpoint refuses, is found before the approval is consumed; the approval stays
/// `approved`, and the key runs it afterwards.
#[tokio::test]
async fn a_resend_refused_before_anything_is_sent_keeps_its_approval() {
    let (e, key, url) = asking_env("writes").await;
    let minted =
        e.c.send(
            "POST",
            "/v1/tokens",
            Some(&key),
            Some(&json!({"credentials": ["pay"], "uses": 1})),
        )
        .await;
    expect_for("mint a token of one use", &minted, 201, None);
    let token = minted.body["token"].as_str().unwrap();
    let id = pending_id(&e.exec(token, "pay", "POST", &url, Some("x"), &[]).await);
    e.approve(&id).await;
    let r = e.exec(token, "pay", "GET", &url, None, &[]).await;
    expect_for("the token's one use, on a read", &r, 200, None);
    let again = [("x-vultrino-approval", id.as_str())];
    let r = e.exec(token, "pay", "POST", &url, Some("x"), &again).await;
    expect_for("the spent token's re-send", &r, 403, "token_exhausted");
    assert_eq!(
        e.approval(&key, &id).await.body["status"],
        "approved",
        "the approval is kept"
    );
    let r = e.exec(&key, "pay", "POST", &url, Some("x"), &again).await;
    expect_for("the key runs it", &r, 200, None);
    assert_eq!(e.up.hits("/echo"), 2);

    let policy = json!({"allowed_hosts": ["127.0.0.1"], "require_approval": "always"});
    e.oauth2_cred("oa", "not-the-secret", policy).await;
    let id = pending_id(&e.exec(&key, "oa", "POST", &url, Some("y"), &[]).await);
    e.approve(&id).await;
    let r = e.resend(&key, "oa", "POST", &url, Some("y"), &id).await;
    assert!(r.status >= 400, "the token endpoint refused: {}", r.text);
    assert_eq!(
        e.approval(&key, &id).await.body["status"],
        "approved",
        "the approval is kept"
    );
    assert_eq!(e.up.hits("/echo"), 2, "nothing more was sent");
}

/// An agent token's approvals are its own (review of 2026-12-06, approvals and tokens,
/// finding 1): another token of the same key — minted for another task, maybe another
/// credential — cannot read, list or run it; a token cannot read or run its key's. The key, the
/// tokens' parent, reads its tokens' approvals (and may run them, as decision 0101's test
/// `a_resend_refused_before_anything_is_sent_keeps_its_approval` does). Nothing reaches the
/// upstream but the two approved requests.
#[tokio::test]
async fn a_token_sees_and_runs_only_its_own_approvals() {
    let (e, key, url) = asking_env("writes").await;
    let mint = || {
        let (e, key) = (&e, &key);
        async move {
            let r =
                e.c.send(
                    "POST",
                    "/v1/tokens",
                    Some(key),
                    Some(&json!({"credentials": ["pay"]})),
                )
                .await;
            expect_for("mint a token", &r, 201, None);
            r.body["token"].as_str().unwrap().to_string()
        }
    };
    let task = mint().await;
    let sibling = mint().await;
    let id = pending_id(
        &e.exec(&task, "pay", "POST", &url, Some("refund 10"), &[])
            .await,
    );
    next_millisecond().await;
    let own = pending_id(&e.exec(&key, "pay", "POST", &url, Some("k"), &[]).await);
    expect_for(
        "a sibling token reads it",
        &e.approval(&sibling, &id).await,
        404,
        "approval_not_found",
    );
    expect_for(
        "a token reads its key's",
        &e.approval(&task, &own).await,
        404,
        "approval_not_found",
    );
    let listed = |who: String| {
        let e = &e;
        async move {
            let r = e.c.send("GET", "/v1/approvals", Some(&who), None).await;
            expect_for("list", &r, 200, None);
            ids(&r)
        }
    };
    assert!(listed(sibling.clone()).await.is_empty());
    assert_eq!(listed(task.clone()).await, std::slice::from_ref(&id));
    assert_eq!(listed(key.clone()).await, [own.clone(), id.clone()]);
    expect_for(
        "the key reads its token's",
        &e.approval(&key, &id).await,
        200,
        None,
    );

    e.approve(&id).await;
    e.approve(&own).await;
    for (what, who, body, approval) in [
        ("a sibling token runs it", &sibling, "refund 10", &id),
        ("a token runs its key's", &task, "k", &own),
    ] {
        let r = e
            .resend(who, "pay", "POST", &url, Some(body), approval)
            .await;
        expect_for(what, &r, 404, "approval_not_found");
    }
    assert!(e.up.seen().is_empty());
    let r = e
        .resend(&task, "pay", "POST", &url, Some("refund 10"), &id)
        .await;
    expect_for("the token runs its own", &r, 200, None);
    let r = e.resend(&key, "pay", "POST", &url, Some("k"), &own).await;
    expect_for("the key runs its own", &r, 200, None);
    assert_eq!(e.up.seen().len(), 2);
}

/// Two requests that differ only in a header byte that is not visible ASCII never share an
/// approval (review of 2026-12-06, approvals and tokens, finding 2): such values were bound
/// lossily (`\xff` and `\xfe` both as U+FFFD; workerd decodes them so itself), so a request
/// that needs approval with one is refused before an approval is made, 400 `invalid_header`, on
/// `/proxy/` as on execute; nothing is stored or sent.
#[tokio::test]
async fn a_header_byte_that_is_not_ascii_cannot_ride_an_approval() {
    let (e, key, url) = asking_env("writes").await;
    for byte in [0xff, 0xfe] {
        let rb =
            e.c.http
                .post(format!("{}/proxy/pay/echo", e.c.target.base))
                .header("x-vultrino-key", &key)
                .header(
                    "x-account",
                    reqwest::header::HeaderValue::from_bytes(&[b'a', byte]).unwrap(),
                )
                .body("{\"amount\":10}");
        let r = e.c.send_raw(rb).await;
        expect_for("a value that is not ASCII", &r, 400, "invalid_header");
    }
    let r = e
        .exec(
            &key,
            "pay",
            "POST",
            &url,
            Some("x"),
            &[("x-label", "a\u{2067}b")],
        )
        .await;
    expect_for(
        "execute, a value that is not ASCII",
        &r,
        400,
        "invalid_header",
    );
    let r = e.c.send("GET", "/v1/approvals", Some(&e.admin), None).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    assert!(e.up.seen().is_empty());
}

/// An approval shows everything it binds but the body's tail (review of 2026-12-06, approvals
/// and tokens, finding 3): a request with more bound headers than the page lists, a header
/// value or a URL longer than it shows, is refused before an approval is made (400, nothing
/// stored or sent), so no bound header or query parameter can hide behind padding.
#[tokio::test]
async fn a_request_the_approval_cannot_show_whole_is_refused() {
    let (e, key, url) = asking_env("always").await;
    let names: Vec<String> = (0..64).map(|i| format!("x-pad-{i:02}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    headers.push(("x-role", "admin"));
    let r = e.exec(&key, "pay", "POST", &url, Some("x"), &headers).await;
    expect_for("65 bound headers", &r, 400, "invalid_header");
    let long = "v".repeat(1025);
    let r = e
        .exec(&key, "pay", "POST", &url, Some("x"), &[("x-note", &long)])
        .await;
    expect_for("a 1025-byte value", &r, 400, "invalid_header");
    let long_url = format!("{url}?pad={}&admin=true", "a".repeat(4096));
    let r = e.exec(&key, "pay", "POST", &long_url, Some("x"), &[]).await;
    expect_for("a URL past 4096 bytes", &r, 400, "invalid_url");
    let r = e.c.send("GET", "/v1/approvals", Some(&e.admin), None).await;
    assert!(ids(&r).is_empty(), "{}", r.text);
    // At the bounds, the approval is made and shows every header whole.
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let edge = "v".repeat(1024);
    headers[0].1 = &edge;
    let id = pending_id(&e.exec(&key, "pay", "POST", &url, Some("x"), &headers).await);
    let a = e.approval(&key, &id).await.body;
    assert_eq!(a["headers"].as_array().unwrap().len(), 64, "{a}");
    assert_eq!(a["headers"][0][1], edge.as_str());
    assert!(e.up.seen().is_empty());
}

/// What the agent writes cannot reorder what the person reads (review of 2026-12-06,
/// approvals and tokens, finding 4): a reason with a Unicode format character (a
/// right-to-left override) is refused, 400 `invalid_request`; bidirectional controls in the
/// body are written out (`\u{202e}`) in the approval's preview, while the binding keeps the
/// bytes: the approved request runs with them as sent. (Header values of such a request are
/// visible ASCII: `a_header_byte_that_is_not_ascii_cannot_ride_an_approval`.)
#[tokio::test]
async fn bidi_controls_cannot_disguise_an_approval() {
    let (e, key, url) = asking_env("always").await;
    let mut req = json!({"credential": "pay", "method": "POST", "url": url,
        "body": "{\"amount\":\"\u{202e}01\u{202c}\"}", "reason": "refund \u{202e}01 EUR"});
    let r =
        e.c.send("POST", "/v1/execute", Some(&key), Some(&req))
            .await;
    expect_for("a reason with an override", &r, 400, "invalid_request");
    assert!(!r.text.contains('\u{202e}'), "{}", r.text);
    req["reason"] = json!("refund");
    let r =
        e.c.send("POST", "/v1/execute", Some(&key), Some(&req))
            .await;
    let id = pending_id(&r);
    let a = e.approval(&key, &id).await.body;
    assert_eq!(
        a["body_preview"], "{\"amount\":\"\\u{202e}01\\u{202c}\"}",
        "{a}"
    );
    assert!(!a.to_string().contains(['\u{202e}', '\u{202c}']), "{a}");
    e.approve(&id).await;
    req["approval_id"] = json!(id);
    let r =
        e.c.send("POST", "/v1/execute", Some(&key), Some(&req))
            .await;
    expect_for("the approved request", &r, 200, None);
    assert_eq!(
        e.up.seen()[0].body,
        "{\"amount\":\"\u{202e}01\u{202c}\"}".as_bytes()
    );
}
