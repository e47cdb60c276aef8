//! The management CLI pointed at the backend under test with `--server` (the edge included):
//! `vultrino login`, then commands that go through the HTTP API and never open a local store.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

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
