//! API keys (shown once, listed without their secret, revoked at once) and roles (custom ones
//! created and deleted, built-in ones protected, admin roles unscoped).

use serde_json::json;

use crate::env;
use crate::support::{expect, expect_for};

#[tokio::test]
async fn keys_are_shown_once_listed_without_secret_and_revoked_at_once() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r =
        e.c.send(
            "POST",
            "/v1/keys",
            Some(&e.admin),
            Some(&json!({"name": "bot", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    let key = r.body["key"].as_str().unwrap().to_string();
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("vk_{id}_")));
    let list = e.c.send("GET", "/v1/keys", Some(&e.admin), None).await;
    assert_eq!(list.body["keys"][0]["id"], id.as_str());
    // The secret is base64url and may itself contain '_': take everything after the id.
    let secret_part = key.strip_prefix(&format!("vk_{id}_")).unwrap();
    assert_eq!(secret_part.len(), 43);
    assert!(!list.text.contains(secret_part));
    let r = e.execute(&key, "github", &e.up.url("/echo")).await;
    expect_for("the new key executes", &r, 200, None);
    // A wrong secret with a valid id is refused.
    let forged = format!("vk_{id}_{}", "A".repeat(43));
    let r = e.execute(&forged, "github", &e.up.url("/echo")).await;
    expect_for("a forged secret with a valid id", &r, 401, None);
    let r =
        e.c.send("DELETE", &format!("/v1/keys/{id}"), Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    let r = e.execute(&key, "github", &e.up.url("/echo")).await;
    expect_for("the revoked key executes", &r, 401, None);
    let r =
        e.c.send(
            "POST",
            "/v1/keys",
            Some(&e.admin),
            Some(&json!({"name": "bot", "role": "ghost"})),
        )
        .await;
    expect_for("a key with an unknown role", &r, 400, None);
}

#[tokio::test]
async fn roles_crud_and_builtins_are_protected() {
    let e = env().await;
    let r = e.c.send("GET", "/v1/roles", Some(&e.admin), None).await;
    expect(&r, 200, None);
    let names: Vec<&str> = r.body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "executor", "read-only"]);
    let role = json!({"name": "gh", "permissions": ["read", "execute"], "scopes": ["github-*"]});
    let r =
        e.c.send("POST", "/v1/roles", Some(&e.admin), Some(&role))
            .await;
    expect(&r, 201, None);
    let r =
        e.c.send("POST", "/v1/roles", Some(&e.admin), Some(&role))
            .await;
    expect_for("the same role again", &r, 409, None);
    let builtin = json!({"name": "admin", "permissions": ["read"], "scopes": ["*"]});
    let r =
        e.c.send("POST", "/v1/roles", Some(&e.admin), Some(&builtin))
            .await;
    expect_for("a role named like a built-in one", &r, 409, None);
    let r =
        e.c.send("DELETE", "/v1/roles/admin", Some(&e.admin), None)
            .await;
    expect_for("deleting a built-in role", &r, 409, None);
    let r =
        e.c.send("DELETE", "/v1/roles/gh", Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    let r =
        e.c.send("DELETE", "/v1/roles/gh", Some(&e.admin), None)
            .await;
    expect_for("deleting it again", &r, 404, None);
}

#[tokio::test]
async fn admin_roles_must_be_unscoped() {
    let e = env().await;
    let role = json!({"name": "scoped-admin", "permissions": ["admin"], "scopes": ["github-*"]});
    let r =
        e.c.send("POST", "/v1/roles", Some(&e.admin), Some(&role))
            .await;
    expect(&r, 400, None);
}

/// `GET /v1/keys` lists keys in the order they were created, oldest first (ids are random, so
/// the store's own order is not it).
#[tokio::test]
async fn keys_are_listed_in_creation_order() {
    let e = env().await;
    let names = [
        "k-first", "k-second", "k-third", "k-fourth", "k-fifth", "k-sixth",
    ];
    for name in names {
        let r =
            e.c.send(
                "POST",
                "/v1/keys",
                Some(&e.admin),
                Some(&json!({"name": name, "role": "executor"})),
            )
            .await;
        expect(&r, 201, None);
        // A new millisecond for the next key's `created_at`.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = e.c.send("GET", "/v1/keys", Some(&e.admin), None).await;
    expect(&r, 200, None);
    let listed: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(listed, names, "{}", r.text);
    let created: Vec<u64> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["created_at"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
}
