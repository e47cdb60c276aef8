//! The management CLI pointed at the backend under test with `--server` (the edge included):
//! `vultrino login`, then commands that go through the HTTP API and never open a local store.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::support::{expect, vultrino_cmd, Client, Server, ServerOptions, ADMIN_PASSWORD};

/// `vultrino --data-dir <home>/data args…` with `<home>/config` as the config home; (success,
/// stdout, stderr).
pub(crate) async fn cli(
    home: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let mut cmd = vultrino_cmd(Some(&home.join("data")));
    cmd.args(args)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_manages_the_backend_through_its_api_after_login() {
    let server = Server::start(ServerOptions::default()).await;
    let c = Client::new(server.target());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let base = server.base.clone();

    // No session yet: refused with the way out, nothing changed.
    let (ok, _, err) = cli(home, &["key", "create", "bot", "--server", &base], "").await;
    assert!(!ok && err.contains("vultrino login"), "{err}");

    let (ok, _, err) = cli(
        home,
        &["login", "--server", &base],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        home,
        &[
            "credential",
            "add",
            "cli-gh",
            "--host",
            "api.github.com",
            "--server",
            &base,
        ],
        "cli-edge-secret-77\n",
    )
    .await;
    assert!(ok, "{err}");
    assert!(!out.contains("cli-edge-secret-77") && !err.contains("cli-edge-secret-77"));
    let (ok, out, err) = cli(home, &["key", "create", "bot", "--server", &base], "").await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("vk_"));

    let admin = c.login().await;
    let r = c
        .send("GET", "/v1/credentials/cli-gh", Some(&admin), None)
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["policy"]["allowed_hosts"][0], "api.github.com");
    let r = c.send("GET", "/v1/keys", Some(&admin), None).await;
    expect(&r, 200, None);
    assert!(r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == created["id"]));
    assert!(!home.join("data").exists(), "no local store was opened");

    // Logging out ends the session on the backend: the next command wants a login again.
    let (ok, _, err) = cli(home, &["logout", "--server", &base], "").await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(home, &["key", "list", "--server", &base], "").await;
    assert!(!ok && err.contains("vultrino login"), "{err}");
}

/// `vultrino audit` through the backend's API: the newest events oldest first, the filters
/// (credential, actor, outcome, since), `--json` lines, and `--follow` printing an event
/// written after it started.
#[tokio::test]
async fn the_cli_lists_filters_and_follows_the_audit_log() {
    let server = Server::start(ServerOptions::default()).await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let base = server.base.clone();
    let create = |alias: &'static str| {
        let c = &c;
        let admin = admin.clone();
        async move {
            let r = c
                .send(
                    "POST",
                    "/v1/credentials",
                    Some(&admin),
                    Some(&serde_json::json!({"alias": alias, "type": "api_key",
                        "data": {"key": "audit-cli-secret-93"},
                        "policy": {"allowed_hosts": ["api.example.com"]}})),
                )
                .await;
            expect(&r, 201, None);
        }
    };
    create("alpha").await;
    // `--since` is inclusive, to the millisecond: beta must come a millisecond after alpha.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    create("beta").await;
    let (ok, _, err) = cli(
        home,
        &["login", "--server", &base],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await;
    assert!(ok, "{err}");

    // --json: one event per line, oldest first; --credential keeps that credential's only.
    let (ok, out, err) = cli(
        home,
        &[
            "audit",
            "--server",
            &base,
            "--json",
            "--credential",
            "alpha",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["action"], "credential.create");
    assert_eq!(events[0]["credential"], "alpha");

    let (ok, out, err) = cli(home, &["audit", "--server", &base, "--json"], "").await;
    assert!(ok, "{err}");
    let all: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ts: Vec<u64> = all.iter().map(|e| e["ts"].as_u64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first: {ts:?}");
    let beta_at = all.iter().find(|e| e["credential"] == "beta").unwrap()["ts"]
        .as_u64()
        .unwrap();
    let (ok, out, err) = cli(
        home,
        &[
            "audit",
            "--server",
            &base,
            "--json",
            "--outcome",
            "success",
            "--actor",
            "admin:*",
            "--since",
            &beta_at.to_string(),
            "--limit",
            "10",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let recent: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !recent.is_empty()
            && recent.iter().all(|e| e["ts"].as_u64().unwrap() >= beta_at
                && e["outcome"] == "success"
                && e["actor"].as_str().unwrap().starts_with("admin:")),
        "{out}"
    );
    assert!(recent.iter().all(|e| e["credential"] != "alpha"), "{out}");

    // Text: one line per event, with its time and what it did.
    let (ok, out, err) = cli(
        home,
        &["audit", "--server", &base, "--credential", "beta"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("credential.create") && out.contains("credential=beta"),
        "{out}"
    );
    assert!(!out.contains("audit-cli-secret-93"));

    let (ok, _, err) = cli(
        home,
        &["audit", "--server", &base, "--since", "yesterday"],
        "",
    )
    .await;
    assert!(!ok && err.contains("--since"), "{err}");

    // --follow: prints what is written after it started.
    let mut cmd = vultrino_cmd(Some(&home.join("data")));
    cmd.args([
        "audit",
        "--server",
        &base,
        "--json",
        "--follow",
        "--interval-secs",
        "1",
        "--credential",
        "gamma",
    ])
    .env("XDG_CONFIG_HOME", home.join("config"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    create("gamma").await;
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("--follow printed the new event")
        .unwrap()
        .unwrap();
    let followed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(followed["credential"], "gamma");
    assert_eq!(followed["action"], "credential.create");
    let _ = child.start_kill();
    let _ = child.wait().await;
}
