//! Credentials: create, read, list, update, delete without the secret ever coming back; a
//! policy shown whole and a secret rotated alone; what a create or update must carry.

use serde_json::{json, Value};

use crate::support::{expect, expect_for};
use crate::{assert_scrubbed, env, API_SECRET};

#[tokio::test]
async fn credential_crud_never_returns_the_secret() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r = e.create(json!({"alias": "github", "type": "api_key", "data": {"key": "x"}, "policy": {"allowed_hosts": ["a.example"]}})).await;
    expect_for("an alias already taken", &r, 409, None);
    let r =
        e.c.send("GET", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    assert_eq!(r.body["type"], "api_key");
    assert_eq!(r.body["allowed_hosts"], json!(["127.0.0.1"]));
    let list =
        e.c.send("GET", "/v1/credentials", Some(&e.admin), None)
            .await;
    assert_eq!(list.body["credentials"].as_array().unwrap().len(), 1);
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&e.admin),
            Some(&json!({"data": {"key": "rotated-secret-77"}})),
        )
        .await;
    expect(&r, 200, None);
    for t in [&list.text, &r.text] {
        assert!(
            !t.contains(API_SECRET) && !t.contains("rotated-secret-77"),
            "{t}"
        );
    }
    let r =
        e.c.send("DELETE", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    let r =
        e.c.send("GET", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect_for("a deleted credential", &r, 404, None);
    let r =
        e.c.send("DELETE", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect_for("deleting it again", &r, 404, None);
}

/// `GET /v1/credentials/{alias}` shows the whole policy (so an editor can keep what it does not
/// change), and `PUT {"secret"}` replaces the secret alone: a custom header and prefix survive.
#[tokio::test]
async fn one_credential_shows_its_policy_and_a_secret_alone_can_be_rotated() {
    let e = env().await;
    let policy = json!({"allowed_hosts": ["127.0.0.1"], "methods": ["GET"],
        "path_prefixes": ["/echo"], "rate_limit": {"requests": 50, "per_seconds": 60}});
    let r = e
        .create(json!({"alias": "svc", "type": "api_key",
            "data": {"key": "first-secret-8812", "header": "X-Api-Key", "prefix": "Token "},
            "policy": policy}))
        .await;
    expect(&r, 201, None);
    let shown =
        e.c.send("GET", "/v1/credentials/svc", Some(&e.admin), None)
            .await;
    expect(&shown, 200, None);
    assert_eq!(shown.body["policy"], policy);
    assert_eq!(shown.body["type"], "api_key");
    assert!(!shown.text.contains("first-secret-8812"), "{}", shown.text);
    assert!(shown.body.get("data").is_none(), "{}", shown.text);

    let put = |body: Value| {
        let c = e.c.clone();
        let admin = e.admin.clone();
        async move {
            c.send("PUT", "/v1/credentials/svc", Some(&admin), Some(&body))
                .await
        }
    };
    let r = put(json!({"secret": "second-secret-4409"})).await;
    expect(&r, 200, None);
    assert!(!r.text.contains("second-secret-4409"));
    let agent = e.key("executor").await;
    // The header the upstream receives through one execute.
    let injected = || async {
        let before = e.up.seen().len();
        let x = e.execute(&agent, "svc", &e.up.url("/echo")).await;
        expect(&x, 200, None);
        let seen = e.up.seen();
        assert_eq!(seen.len(), before + 1, "one request reached the upstream");
        (seen.last().unwrap().clone(), x)
    };
    let (seen, x) = injected().await;
    assert_eq!(seen.headers["x-api-key"], "Token second-secret-4409");
    assert!(!seen.headers.contains_key("authorization"));
    assert_scrubbed(&x.text, "second-secret-4409");
    let after =
        e.c.send("GET", "/v1/credentials/svc", Some(&e.admin), None)
            .await;
    assert_eq!(after.body["policy"], policy, "the policy is untouched");

    for (body, why) in [
        (json!({"secret": ""}), "an empty secret"),
        (
            json!({"secret": "x", "data": {"key": "y"}}),
            "secret and data together",
        ),
        (
            json!({"secret": "x", "type": "basic_auth"}),
            "a type change without data",
        ),
        (
            json!({"secret": 987654321}),
            "a secret that is not a string",
        ),
        (
            json!({"secret": "line\r\nX-Injected: 1"}),
            "a secret that is no header text",
        ),
    ] {
        let r = put(body).await;
        expect_for(why, &r, 400, None);
        assert!(r.body["error"]["code"].is_string(), "{why}: {}", r.text);
        assert!(
            !r.text.contains("987654321") && !r.text.contains("Injected"),
            "{why}: the refusal repeats the secret: {}",
            r.text
        );
    }
    let (seen, _) = injected().await;
    assert_eq!(
        seen.headers["x-api-key"], "Token second-secret-4409",
        "refused updates change nothing"
    );

    // A key whose scopes miss the alias learns nothing, not even whether it exists.
    let role = json!({"name": "other-only", "permissions": ["read"], "scopes": ["other-*"]});
    let r =
        e.c.send("POST", "/v1/roles", Some(&e.admin), Some(&role))
            .await;
    expect(&r, 201, None);
    let outsider = e.key("other-only").await;
    for alias in ["svc", "no-such-alias"] {
        let r =
            e.c.send(
                "GET",
                &format!("/v1/credentials/{alias}"),
                Some(&outsider),
                None,
            )
            .await;
        expect(&r, 403, "scope_denied");
    }
}

#[tokio::test]
async fn credentials_must_name_their_allowed_hosts() {
    let e = env().await;
    for policy in [json!({}), json!({"allowed_hosts": []})] {
        let r = e
            .create(
                json!({"alias": "x", "type": "api_key", "data": {"key": "k"}, "policy": policy}),
            )
            .await;
        expect_for(&format!("policy {policy}"), &r, 400, None);
    }
    let r = e.create(json!({"alias": "x", "type": "nope", "data": {}, "policy": {"allowed_hosts": ["a.example"]}})).await;
    expect_for("an unknown type", &r, 400, None);
}

#[tokio::test]
async fn malformed_bodies_get_400_json() {
    let e = env().await;
    let url = format!("{}/v1/credentials", e.c.target.base);
    for body in ["", "{", "[]", "null", "{\"alias\": 5}"] {
        let r =
            e.c.send_raw(
                e.c.http
                    .post(&url)
                    .bearer_auth(&e.admin)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        expect_for(&format!("body {body:?}"), &r, 400, None);
        assert!(r.body["error"]["message"].is_string());
    }
    // One byte over the 1 MiB limit: the server reads it all, so the 413 is never lost to a
    // connection reset caused by unread request data.
    let big = "x".repeat(1024 * 1024 + 1);
    let r =
        e.c.send_raw(e.c.http.post(&url).bearer_auth(&e.admin).body(big))
            .await;
    expect_for("a body over 1 MiB", &r, 413, None);
}

/// A credential's detail says how its secret is sent upstream (the header and the prefix
/// before the secret, or the query parameter), never the secret nor the basic-auth user.
#[tokio::test]
async fn one_credential_shows_how_its_secret_is_sent() {
    let e = env().await;
    let hosts = json!({"allowed_hosts": ["127.0.0.1"]});
    for (alias, kind, data, sent_as) in [
        (
            "plain",
            "api_key",
            json!({"key": "sk-4471-plain"}),
            json!({"header": "Authorization", "prefix": "Bearer "}),
        ),
        (
            "custom",
            "api_key",
            json!({"key": "sk-4471-custom", "header": "X-Api-Key", "prefix": "Token "}),
            json!({"header": "X-Api-Key", "prefix": "Token "}),
        ),
        (
            "bare",
            "api_key",
            json!({"key": "sk-4471-bare", "header": "X-Api-Key"}),
            json!({"header": "X-Api-Key", "prefix": ""}),
        ),
        (
            "basic",
            "basic_auth",
            json!({"username": "user-4471", "password": "pw-4471-basic"}),
            json!({"header": "Authorization", "prefix": "Basic "}),
        ),
        (
            "query",
            "query_param",
            json!({"name": "api_key", "value": "sk-4471-query"}),
            json!({"query_param": "api_key"}),
        ),
    ] {
        let r = e
            .create(json!({"alias": alias, "type": kind, "data": data, "policy": hosts}))
            .await;
        expect_for(alias, &r, 201, None);
        let shown =
            e.c.send(
                "GET",
                &format!("/v1/credentials/{alias}"),
                Some(&e.admin),
                None,
            )
            .await;
        expect_for(alias, &shown, 200, None);
        assert_eq!(shown.body["sent_as"], sent_as, "{alias}: {}", shown.text);
        assert!(!shown.text.contains("4471"), "{alias}: {}", shown.text);
    }
}
