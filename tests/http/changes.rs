//! Changes under concurrency and right after one another: simultaneous creates of one alias,
//! the execute right after a rotation, re-creating a just-deleted alias (each backend's
//! consistency).

use serde_json::json;

use crate::support::{expect, workerd_backend};
use crate::{assert_scrubbed, env, API_SECRET};

/// Simultaneous creates of one alias: exactly one is acknowledged (201), every other one gets a
/// 409, and the credential stored is the acknowledged one — no acknowledged write is lost to a
/// later one that also thought the alias was free.
#[tokio::test]
async fn concurrent_creates_of_one_alias_acknowledge_exactly_one_and_keep_it() {
    let e = env().await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (c, admin) = (e.c.clone(), e.admin.clone());
        set.spawn(async move {
            let body = json!({
                "alias": "raced", "type": "api_key", "description": format!("writer {i}"),
                "data": {"key": format!("secret-{i}")},
                "policy": {"allowed_hosts": ["127.0.0.1"]}
            });
            let r = c
                .send("POST", "/v1/credentials", Some(&admin), Some(&body))
                .await;
            (
                i,
                r.status,
                r.body["error"]["code"].as_str().map(str::to_owned),
            )
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r.unwrap());
    }
    let winners: Vec<_> = results.iter().filter(|r| r.1 == 201).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, status, code) in &results {
        assert!(
            *status == 201 || (*status == 409 && code.is_some()),
            "{results:?}"
        );
    }
    let r =
        e.c.send("GET", "/v1/credentials/raced", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    assert_eq!(
        r.body["description"].as_str(),
        Some(format!("writer {}", winners[0].0).as_str()),
        "the stored credential is not the acknowledged one"
    );
}

/// After a rotation the very next execute injects the new secret and scrubs it — nothing of the
/// old record is reused (the server keeps opened credentials only while the stored bytes are
/// unchanged).
#[tokio::test]
async fn the_execute_after_a_rotation_injects_and_scrubs_the_new_secret() {
    let e = env().await;
    e.api_key_cred("rot").await;
    let r = e.execute(&e.admin, "rot", &e.up.url("/echo")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    assert_scrubbed(&r.text, API_SECRET);
    let r =
        e.c.send(
            "PUT",
            "/v1/credentials/rot",
            Some(&e.admin),
            Some(&json!({"data": {"key": "rotated-secret-88"}})),
        )
        .await;
    expect(&r, 200, None);
    let r = e.execute(&e.admin, "rot", &e.up.url("/echo")).await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200, "{}", r.text);
    assert_scrubbed(&r.text, "rotated-secret-88");
    let injected: Vec<String> =
        e.up.seen()
            .into_iter()
            .filter(|s| s.path == "/echo")
            .filter_map(|s| s.headers.get("authorization").cloned())
            .collect();
    assert_eq!(
        injected,
        [
            format!("Bearer {API_SECRET}"),
            "Bearer rotated-secret-88".to_string()
        ]
    );
}

/// Re-creating an alias right after deleting it: the local stores are read-your-writes, so it
/// works at once; on Workers, KV can lag between locations (docs/deploy-cloudflare.md), so the
/// worker refuses it (the "absent" version was claimed by the first create) for
/// `KV_SETTLE_SECONDS` with a clear 409 and `Retry-After` — a refusal, never a lost or revived
/// credential.
#[tokio::test]
async fn recreating_a_just_deleted_alias_follows_the_store_consistency() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r =
        e.c.send("DELETE", "/v1/credentials/github", Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    let r = e
        .create(json!({
            "alias": "github", "type": "api_key",
            "data": {"key": "second key"},
            "policy": {"allowed_hosts": ["127.0.0.1"]}
        }))
        .await;
    if workerd_backend() {
        expect(&r, 409, "change_not_propagated");
        assert_eq!(r.headers["retry-after"], "90");
    } else {
        expect(&r, 201, None);
    }
}
