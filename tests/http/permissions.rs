//! Who may do what: each permission gates its routes, scopes hide credentials (from executes,
//! listings and listing cursors), and only admins may point a secret at other hosts.

use serde_json::json;

use crate::env;
use crate::support::{expect, expect_for};

#[tokio::test]
async fn every_permission_gates_its_routes() {
    let e = env().await;
    e.api_key_cred("github").await;
    let exec = e.key("executor").await;
    let ro = e.key("read-only").await;
    // read-only: read yes, execute no, write no, admin no.
    let r = e.c.send("GET", "/v1/credentials", Some(&ro), None).await;
    expect_for("read-only reads", &r, 200, None);
    let r = e.execute(&ro, "github", &e.up.url("/echo")).await;
    expect_for("read-only executes", &r, 403, None);
    let w = json!({"alias": "n", "type": "api_key", "data": {"key": "k"}, "policy": {"allowed_hosts": ["a.example"]}});
    let r =
        e.c.send("POST", "/v1/credentials", Some(&ro), Some(&w))
            .await;
    expect_for("read-only writes", &r, 403, None);
    let r = e.c.send("GET", "/v1/keys", Some(&ro), None).await;
    expect_for("read-only administers", &r, 403, None);
    // executor: execute yes, write no, admin no.
    let r = e.execute(&exec, "github", &e.up.url("/echo")).await;
    expect_for("executor executes", &r, 200, None);
    let r =
        e.c.send("POST", "/v1/credentials", Some(&exec), Some(&w))
            .await;
    expect_for("executor writes", &r, 403, None);
    let r =
        e.c.send("DELETE", "/v1/credentials/github", Some(&exec), None)
            .await;
    expect_for("executor deletes", &r, 403, None);
    let r = e.c.send("GET", "/v1/audit", Some(&exec), None).await;
    expect_for("executor administers", &r, 403, None);
    let r = e.c.send("GET", "/v1/sync/export", Some(&exec), None).await;
    expect_for("executor administers", &r, 403, None);
    // A custom role with write but not execute.
    e.role(&json!({"name": "writer", "permissions": ["read", "write"], "scopes": ["*"]}))
        .await;
    let writer = e.key("writer").await;
    let r =
        e.c.send("POST", "/v1/credentials", Some(&writer), Some(&w))
            .await;
    expect_for("writer writes", &r, 201, None);
    let r = e.execute(&writer, "github", &e.up.url("/echo")).await;
    expect_for("writer executes", &r, 403, None);
}

#[tokio::test]
async fn scopes_and_allowed_hosts_deny_before_any_request() {
    let e = env().await;
    e.api_key_cred("stripe").await;
    let role = json!({"name": "gh", "permissions": ["read", "execute"], "scopes": ["github-*"]});
    e.role(&role).await;
    let gh = e.key("gh").await;
    let r = e.execute(&gh, "stripe", &e.up.url("/echo")).await;
    expect(&r, 403, "scope_denied");
    let list = e.c.send("GET", "/v1/credentials", Some(&gh), None).await;
    assert_eq!(
        list.body["credentials"],
        json!([]),
        "out-of-scope credentials are not listed"
    );
    // localhost is the same machine but not an allowed host of this credential.
    let url = format!("http://localhost:{}/echo", e.up.addr.port());
    let r = e.execute(&e.admin, "stripe", &url).await;
    expect(&r, 403, "host_not_allowed");
    assert_eq!(e.up.seen().len(), 0, "no request may reach the upstream");
}

#[tokio::test]
async fn a_write_key_cannot_repoint_a_secret_at_other_hosts() {
    let e = env().await;
    e.api_key_cred("github").await;
    let role = json!({"name": "writer", "permissions": ["read", "write"], "scopes": ["*"]});
    e.role(&role).await;
    let writer = e.key("writer").await;
    let widen = json!({"policy": {"allowed_hosts": ["attacker.example"]}});
    let r =
        e.c.send("PUT", "/v1/credentials/github", Some(&writer), Some(&widen))
            .await;
    expect_for("a writer widens the hosts", &r, 403, "permission_denied");
    // A new secret alone does not do: the rest of the data (an OAuth2 refresh token, a user
    // name) would follow it to the new hosts.
    let with_secret =
        json!({"secret": "fresh-secret-2", "policy": {"allowed_hosts": ["third.example"]}});
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&writer),
            Some(&with_secret),
        )
        .await;
    expect_for(
        "a writer changes the hosts with a new secret alone",
        &r,
        403,
        "permission_denied",
    );
    let kept =
        e.c.send("GET", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    assert_eq!(kept.body["allowed_hosts"], json!(["127.0.0.1"]));
    // With all-new data the old secret is not at risk: allowed.
    let with_data =
        json!({"data": {"key": "fresh-secret"}, "policy": {"allowed_hosts": ["other.example"]}});
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&writer),
            Some(&with_data),
        )
        .await;
    expect_for(
        "a writer changes the hosts with all-new data",
        &r,
        200,
        None,
    );
    // Other policy changes (same hosts) are fine for writers; admins may change hosts.
    let methods = json!({"policy": {"allowed_hosts": ["other.example"], "methods": ["GET"]}});
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&writer),
            Some(&methods),
        )
        .await;
    expect_for("a writer changes the methods", &r, 200, None);
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/github",
            Some(&e.admin),
            Some(&widen),
        )
        .await;
    expect_for("an admin widens the hosts", &r, 200, None);
}

#[tokio::test]
async fn listing_cursors_do_not_reveal_hidden_aliases() {
    use base64::Engine as _;
    let e = env().await;
    for alias in ["github-a", "hidden-zz", "github-b"] {
        e.api_key_cred(alias).await;
    }
    let role = json!({"name": "gh", "permissions": ["read"], "scopes": ["github-*"]});
    e.role(&role).await;
    let gh = e.key("gh").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/credentials?limit=1&cursor={c}"),
            None => "/v1/credentials?limit=1".into(),
        };
        let r = e.c.send("GET", &path, Some(&gh), None).await;
        expect(&r, 200, None);
        for c in r.body["credentials"].as_array().unwrap() {
            seen.push(c["alias"].as_str().unwrap().to_string());
        }
        match r.body["cursor"].as_str() {
            Some(c) => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&decoded).contains("hidden"),
                    "cursor reveals an alias"
                );
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(seen, ["github-a", "github-b"]);
    let r =
        e.c.send(
            "GET",
            "/v1/credentials?cursor=Y3JlZDpoaWRkZW4",
            Some(&gh),
            None,
        )
        .await;
    expect(&r, 400, "invalid_cursor");
}

/// The aliases of a listing page, and its cursor.
async fn list_page(
    e: &crate::Env,
    token: &str,
    cursor: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let path = match cursor {
        Some(c) => format!("/v1/credentials?limit=1&cursor={c}"),
        None => "/v1/credentials?limit=1".to_string(),
    };
    let r = e.c.send("GET", &path, Some(token), None).await;
    expect(&r, 200, None);
    let aliases = r.body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["alias"].as_str().unwrap().to_string())
        .collect();
    (aliases, r.body["cursor"].as_str().map(str::to_string))
}

/// Paging with `limit=1` shows a scoped key one credential per page, and no empty page: how
/// many credentials outside its scopes exist, and where they sit between its own, is not told
/// by the shape of its pages.
#[tokio::test]
async fn paging_reveals_nothing_about_credentials_out_of_scope() {
    let e = env().await;
    for alias in [
        "aws",
        "github",
        "github-a",
        "github-a0",
        "github-b",
        "stripe-live",
        "zendesk",
    ] {
        e.api_key_cred(alias).await;
    }
    let role = json!({"name": "gh", "permissions": ["read"], "scopes": ["github-a", "github-b"]});
    e.role(&role).await;
    let gh = e.key("gh").await;
    for (token, expected) in [
        (gh.as_str(), &["github-a", "github-b"][..]),
        (
            e.admin.as_str(),
            &[
                "aws",
                "github",
                "github-a",
                "github-a0",
                "github-b",
                "stripe-live",
                "zendesk",
            ][..],
        ),
    ] {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let (aliases, next) = list_page(&e, token, cursor.as_deref()).await;
            pages.push(aliases);
            match next {
                Some(c) => {
                    cursor =
                        Some(url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())
                }
                None => break,
            }
            assert!(pages.len() <= 10, "paging does not end: {pages:?}");
        }
        let expected: Vec<Vec<String>> = expected.iter().map(|a| vec![a.to_string()]).collect();
        assert_eq!(pages, expected);
    }
}
