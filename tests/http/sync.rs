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

// ---- live sync: `vultrino serve --sync-from <edge>` (docs/decisions/0104-live-hybrid-sync.md)

const ROTATED: &str = "sk-edge-rotated-Wq81Lp";

/// A local `vultrino serve` on `data` that keeps pulling from `edge` every second with `token`.
async fn live_local(data: &std::path::Path, edge: &str, token: &str) -> Server {
    Server::start_local(ServerOptions {
        data_dir: Some(data.to_path_buf()),
        extra_env: vec![
            ("VULTRINO_MASTER_KEY".into(), TEST_MASTER_KEY.into()),
            ("VULTRINO_SYNC_FROM".into(), edge.into()),
            ("VULTRINO_SYNC_INTERVAL".into(), "1s".into()),
            ("VULTRINO_SYNC_TOKEN".into(), token.into()),
        ],
        ..ServerOptions::default()
    })
    .await
}

/// The `sync` object of the local server's `/healthz`.
async fn sync_state(c: &Client) -> serde_json::Value {
    let r = c.send("GET", "/healthz", None, None).await;
    expect(&r, 200, None);
    assert_eq!(
        r.body["status"], "ok",
        "a failing sync leaves the server healthy"
    );
    r.body["sync"].clone()
}

/// Poll `/healthz` until its `sync` object satisfies `done` (at most 60 s); returns it.
async fn wait_for_sync(
    c: &Client,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = sync_state(c).await;
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Wait until a pull that started after this call has finished (two more finished pulls: the
/// one under way may have started before), so every change made before it is applied.
async fn wait_for_a_fresh_pull(c: &Client) -> serde_json::Value {
    let before = sync_state(c).await["pulls"].as_u64().unwrap();
    wait_for_sync(c, "a fresh pull", |s| {
        s["pulls"].as_u64().unwrap() >= before + 2
    })
    .await
}

async fn create_on(c: &Client, admin: &str, alias: &str, secret: &str) {
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(admin),
            Some(
                &json!({"alias": alias, "type": "api_key", "data": {"key": secret},
                "policy": {"allowed_hosts": ["127.0.0.1"]}}),
            ),
        )
        .await;
    expect(&r, 201, None);
}

async fn aliases_of(c: &Client, admin: &str) -> Vec<String> {
    let r = c.send("GET", "/v1/credentials", Some(admin), None).await;
    expect(&r, 200, None);
    let mut names: Vec<String> = r.body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["alias"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The secret `alias` sends upstream, through an execute with `agent` on the local server.
async fn secret_sent(c: &Client, agent: &str, up: &Upstream, alias: &str) -> String {
    let r = c
        .send(
            "POST",
            "/v1/execute",
            Some(agent),
            Some(&json!({"credential": alias, "action": "http.request",
                "params": {"method": "GET", "url": up.url("/echo")}})),
        )
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["status"], 200);
    let seen = up.seen().pop().unwrap();
    seen.headers["authorization"]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string()
}

/// Create, rotate and delete on the edge are seen by the local server within a pull, without a
/// restart; synced records are read-only locally (409 naming the edge), local ones stay
/// writable and are never deleted by a pull; an unchanged edge costs one request with an empty
/// reply (304 to the export's ETag).
#[tokio::test]
async fn live_sync_applies_creates_rotations_and_deletions_from_the_edge() {
    let up = Upstream::start().await;
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    create_on(&ec, &admin, "github", SECRET).await;
    let r = ec
        .send(
            "POST",
            "/v1/roles",
            Some(&admin),
            Some(&json!({"name": "edge-role", "permissions": ["read"], "scopes": ["*"]})),
        )
        .await;
    expect(&r, 201, None);
    let r = ec
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "agent", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    // The edge's key works here too: keys are synced like credentials.
    let agent = r.body["key"].as_str().unwrap().to_string();
    let agent_id = r.body["id"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An empty data directory gets its first copy before the server listens.
    let local = live_local(&data, &edge.base, &admin).await;
    let lc = Client::new(local.target());
    let ladmin = lc.login().await;
    assert_eq!(aliases_of(&lc, &ladmin).await, ["github"]);
    assert_eq!(secret_sent(&lc, &agent, &up, "github").await, SECRET);
    create_on(&lc, &ladmin, "mine", SECRET).await;

    // Rotate on the edge: the next pull brings the new secret.
    let r = ec
        .send(
            "PUT",
            "/v1/credentials/github",
            Some(&admin),
            Some(&json!({"secret": ROTATED})),
        )
        .await;
    expect(&r, 200, None);
    wait_for_a_fresh_pull(&lc).await;
    assert_eq!(secret_sent(&lc, &agent, &up, "github").await, ROTATED);

    // Create one and delete another on the edge.
    create_on(&ec, &admin, "second", SECRET).await;
    let r = ec
        .send("DELETE", "/v1/credentials/github", Some(&admin), None)
        .await;
    expect(&r, 204, None);
    let s = wait_for_a_fresh_pull(&lc).await;
    assert_eq!(aliases_of(&lc, &ladmin).await, ["mine", "second"], "{s}");
    let r = lc
        .send(
            "POST",
            "/v1/execute",
            Some(&agent),
            Some(&json!({"credential": "github",
            "action": "http.request", "params": {"method": "GET", "url": up.url("/echo")}})),
        )
        .await;
    assert_eq!(
        r.status, 404,
        "a credential deleted on the edge is gone here: {}",
        r.text
    );

    // Synced records are read-only here; local ones are not.
    for (method, body) in [
        ("PUT", Some(json!({"description": "changed here"}))),
        ("DELETE", None),
    ] {
        let r = lc
            .send(
                method,
                "/v1/credentials/second",
                Some(&ladmin),
                body.as_ref(),
            )
            .await;
        expect(&r, 409, "synced_record");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(edge.base.trim_end_matches('/')),
            "{message}"
        );
    }
    for path in [
        format!("/v1/keys/{agent_id}"),
        "/v1/roles/edge-role".to_string(),
    ] {
        let r = lc.send("DELETE", &path, Some(&ladmin), None).await;
        expect(&r, 409, "synced_record");
    }
    let r = lc
        .send(
            "PUT",
            "/v1/credentials/mine",
            Some(&ladmin),
            Some(&json!({"description": "mine"})),
        )
        .await;
    expect(&r, 200, None);

    // Nothing changes on the edge: a pull is one request answered 304, with no body.
    let s = wait_for_a_fresh_pull(&lc).await;
    assert_eq!(s["state"], "ok", "{s}");
    assert_eq!(s["last_reply_bytes"], 0, "{s}");
    assert!(s["unchanged_pulls"].as_u64().unwrap() >= 1, "{s}");
    // The credential, the key and the role of the edge.
    assert_eq!(s["records"], 3, "{s}");
    let r = ec.send("GET", "/v1/sync/export", Some(&admin), None).await;
    expect(&r, 200, None);
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let r = ec
        .send_raw(
            ec.http
                .get(format!("{}/v1/sync/export", ec.target.base))
                .bearer_auth(&admin)
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (304, ""));
    assert!(!local
        .output
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(SECRET) || l.contains(ROTATED)));
}

/// With the edge gone, the local server keeps serving its last good copy and says so in
/// `/healthz` (the error, the last success) and `vultrino status`.
#[tokio::test]
async fn live_sync_keeps_serving_while_the_edge_is_down() {
    let up = Upstream::start().await;
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    create_on(&ec, &admin, "github", SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let local = live_local(&data, &edge.base, &admin).await;
    let lc = Client::new(local.target());
    let ok = wait_for_sync(&lc, "a first pull", |s| s["state"] == "ok").await;
    assert_eq!(ok["edge"], edge.base.trim_end_matches('/'), "{ok}");
    let last_success = ok["last_success_ms"].as_u64().unwrap();

    drop(edge);
    let s = wait_for_sync(&lc, "a failed pull", |s| s["state"] == "failing").await;
    assert_eq!(s["last_error"]["code"], "edge_unreachable", "{s}");
    assert!(
        s["last_success_ms"].as_u64().unwrap() >= last_success,
        "{s}"
    );
    assert!(s["lag_ms"].is_u64(), "{s}");
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        !s.to_string().contains(&admin),
        "the token is never shown: {s}"
    );

    let ladmin = lc.login().await;
    assert_eq!(aliases_of(&lc, &ladmin).await, ["github"]);
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
    assert_eq!(secret_sent(&lc, &agent, &up, "github").await, SECRET);

    let mut cmd = vultrino_cmd(Some(&data));
    cmd.args(["status", "--json"])
        .env("XDG_CONFIG_HOME", dir.path().join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["sync"]["live"], true, "{status}");
    assert_eq!(status["sync"]["state"]["state"], "failing", "{status}");
    let detail = status["sync"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("edge_unreachable") && detail.contains("last success"),
        "{detail}"
    );
}

/// A local store with a keyring of its own (same master key, made by a local first run) is not
/// the edge's: every pull fails `keyring_mismatch`, and nothing of the edge is applied.
#[tokio::test]
async fn live_sync_into_another_keyring_fails_clearly_and_applies_nothing() {
    let edge = Server::start(with_master()).await;
    let ec = Client::new(edge.target());
    let admin = ec.login().await;
    create_on(&ec, &admin, "from-edge", SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut own = Server::start_local(ServerOptions {
            data_dir: Some(data.clone()),
            ..with_master()
        })
        .await;
        let oc = Client::new(own.target());
        let oadmin = oc.login().await;
        create_on(&oc, &oadmin, "mine", SECRET).await;
        own.child.kill().await.unwrap();
    }
    let local = live_local(&data, &edge.base, &admin).await;
    let lc = Client::new(local.target());
    let s = wait_for_sync(&lc, "a refused pull", |s| s["state"] == "failing").await;
    assert_eq!(s["last_error"]["code"], "keyring_mismatch", "{s}");
    assert!(
        s["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("keyring"),
        "{s}"
    );
    assert_eq!(s["records"], 0, "{s}");
    let ladmin = lc.login().await;
    assert_eq!(aliases_of(&lc, &ladmin).await, ["mine"]);
}
