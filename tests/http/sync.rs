//! Sync and its export: `GET /v1/sync/export` carries ciphertext only, and one stored format
//! across deployments — a credential created through the backend under test ("the edge": the
//! worker in workerd with `VULTRINO_TEST_BACKEND=workerd`, otherwise a local server) is pulled
//! with `vultrino sync --from <url>` into a local file store with the same master key, and the
//! local server then uses it against the loopback upstream.

use std::process::Stdio;

use serde_json::json;

use crate::support::upstream::Upstream;
use crate::support::{expect, vultrino_cmd, Client, Server, ServerOptions, TEST_MASTER_KEY};
use crate::{assert_scrubbed, env, API_SECRET};

const SECRET: &str = "sk-edge-7Qm2xZ9vL4";

/// `vultrino sync --from <edge>` into `dir` with `master` and `token`; (success, stderr).
async fn sync(dir: &std::path::Path, edge: &str, master: &str, token: &str) -> (bool, String) {
    sync_with(dir, edge, master, token, &[]).await
}

/// [`sync`] with extra arguments.
async fn sync_with(
    dir: &std::path::Path,
    edge: &str,
    master: &str,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.args(["sync", "--from", edge])
        .args(extra)
        .env("VULTRINO_MASTER_KEY", master)
        .env("VULTRINO_SYNC_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_master() -> ServerOptions {
    ServerOptions {
        extra_env: vec![("VULTRINO_MASTER_KEY".into(), TEST_MASTER_KEY.into())],
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn sync_export_carries_ciphertext_only() {
    let e = env().await;
    e.api_key_cred("github").await;
    let r =
        e.c.send("GET", "/v1/sync/export", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    assert!(r.body["keyring"]["key_id"].is_string());
    let recs = r.body["records"].as_array().unwrap();
    assert!(recs.iter().any(|x| x["key"] == "cred:github"));
    assert_scrubbed(&r.text, API_SECRET);
}

#[tokio::test]
async fn a_credential_created_on_the_edge_is_synced_and_used_locally() {
    let up = Upstream::start().await;
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    let r = ec
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(&json!({
                "alias": "github", "type": "api_key", "description": "made on the edge",
                "data": {"key": SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"]}
            })),
        )
        .await;
    expect(&r, 201, None);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, stderr) = sync(&data, &edge.base, TEST_MASTER_KEY, &admin).await;
    assert!(ok, "sync failed: {stderr}");
    assert!(stderr.contains("imported"), "{stderr}");
    assert!(!stderr.contains(SECRET));

    let local = Server::start_local(ServerOptions {
        data_dir: Some(data.clone()),
        ..with_master()
    })
    .await;
    let lc = Client::new(local.target());
    let ladmin = lc.login().await;
    let r = lc
        .send("GET", "/v1/credentials/github", Some(&ladmin), None)
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["description"], "made on the edge");
    let r = lc
        .send(
            "POST",
            "/v1/keys",
            Some(&ladmin),
            Some(&json!({"name": "agent", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    let agent = r.body["key"].as_str().unwrap().to_string();
    let r = lc
        .send(
            "POST",
            "/v1/execute",
            Some(&agent),
            Some(&json!({"credential": "github", "action": "http.request",
                "params": {"method": "GET", "url": up.url("/echo")}})),
        )
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["authorization"], format!("Bearer {SECRET}"));
    assert!(!r.text.contains(SECRET));
}

#[tokio::test]
async fn sync_with_another_master_key_fails_clearly_and_leaves_the_store_usable() {
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let other = "11".repeat(32);
    let (ok, stderr) = sync(&data, &edge.base, &other, &admin).await;
    assert!(!ok);
    assert!(stderr.contains("master key"), "{stderr}");
    // Nothing was written: the right key still syncs into the same directory (a keyring
    // written by the refused run would make it a keyring mismatch).
    let (ok, stderr) = sync(&data, &edge.base, TEST_MASTER_KEY, &admin).await;
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn sync_with_a_wrong_token_is_refused_by_the_edge() {
    let edge = Server::start(with_master()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = sync(dir.path(), &edge.base, TEST_MASTER_KEY, "vs_not-a-session").await;
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
}

#[tokio::test]
async fn sync_adds_by_default_and_prune_mirrors_deletions() {
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    for alias in ["keep", "dropped"] {
        let r = ec
            .send(
                "POST",
                "/v1/credentials",
                Some(&admin),
                Some(
                    &json!({"alias": alias, "type": "api_key", "data": {"key": SECRET},
                    "policy": {"allowed_hosts": ["127.0.0.1"]}}),
                ),
            )
            .await;
        expect(&r, 201, None);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, stderr) = sync(&data, &edge.base, TEST_MASTER_KEY, &admin).await;
    assert!(ok, "{stderr}");
    let r = ec
        .send("DELETE", "/v1/credentials/dropped", Some(&admin), None)
        .await;
    expect(&r, 204, None);

    // Without --prune nothing local is deleted.
    let (ok, stderr) = sync(&data, &edge.base, TEST_MASTER_KEY, &admin).await;
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("removed"), "{stderr}");
    let aliases = |data: std::path::PathBuf| async move {
        let mut local = Server::start_local(ServerOptions {
            data_dir: Some(data),
            ..with_master()
        })
        .await;
        let lc = Client::new(local.target());
        let ladmin = lc.login().await;
        let r = lc.send("GET", "/v1/credentials", Some(&ladmin), None).await;
        expect(&r, 200, None);
        let mut names: Vec<String> = r.body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["alias"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        // Killed and reaped: the store's lock is free for the next sync.
        local.child.kill().await.unwrap();
        names
    };
    assert_eq!(aliases(data.clone()).await, ["dropped", "keep"]);

    // With --prune the local store mirrors the edge: the deleted credential is gone here too.
    let (ok, stderr) = sync_with(&data, &edge.base, TEST_MASTER_KEY, &admin, &["--prune"]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("removed 1 local records"), "{stderr}");
    assert!(stderr.contains("cred:dropped"), "{stderr}");
    assert_eq!(aliases(data).await, ["keep"]);
}
