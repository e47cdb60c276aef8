//! `vultrino migrate-records`: the local command that signs, once, the API keys and roles a
//! version before signed records wrote into a file store (the HTTP route is tested on both
//! backends in tests/http/records.rs).

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::sync::Arc;

use serde_json::{json, Value};
use support::{expect_for, vultrino_cmd, Client, Server, ServerOptions, TEST_MASTER_KEY};
use vultrino_core::ports::{KvStore, PutOptions};

/// The file store written by the version before records were signed (tests/http/fixtures).
fn fixture() -> Value {
    serde_json::from_str(include_str!(
        "../../tests/http/fixtures/store-before-signed-records.json"
    ))
    .unwrap()
}

async fn write_fixture(data: &std::path::Path, f: &Value) {
    std::fs::create_dir_all(data).unwrap();
    let clock = Arc::new(vultrino_local::clock::SystemClock::new());
    let kv = vultrino_local::file_kv::FileKv::open(&data.join("store"), clock).unwrap();
    let export = &f["export"];
    let keyring = export["keyring"].to_string();
    kv.put(
        "sys:keyring",
        keyring.into_bytes().into(),
        PutOptions::default(),
    )
    .await
    .unwrap();
    for r in export["records"].as_array().unwrap() {
        let options = PutOptions {
            expiration_ttl: None,
            metadata: r.get("metadata").cloned().filter(|m| !m.is_null()),
        };
        let value = r["value"].as_str().unwrap().to_string();
        kv.put(
            r["key"].as_str().unwrap(),
            value.into_bytes().into(),
            options,
        )
        .await
        .unwrap();
    }
}

/// Run `vultrino <args>` on `data` with the fixture's master key: (success, stdout, stderr).
async fn run(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = vultrino_cmd(Some(data))
        .args(args)
        .env("VULTRINO_MASTER_KEY", TEST_MASTER_KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn migrate_records_signs_the_previous_versions_keys_and_roles_once() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_fixture(&data, &f).await;

    // Before: listed apart, with the fix named; nothing dropped.
    let (ok, out, err) = run(&data, &["key", "list"]).await;
    assert!(ok, "{err}");
    let listed = json_of(&out);
    assert_eq!(listed["keys"], json!([]));
    let refused = listed["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 3, "{out}");
    assert!(refused.iter().all(|r| r["code"] == "record_unsigned"
        && r["message"].as_str().unwrap().contains("migrate-records")));

    let (ok, out, err) = run(&data, &["migrate-records", "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("would sign 4 records"), "{err}");
    assert_eq!(json_of(&out)["signed"].as_array().unwrap().len(), 4);
    let (_, out, _) = run(&data, &["key", "list"]).await;
    assert_eq!(
        json_of(&out)["refused"].as_array().unwrap().len(),
        3,
        "a dry run wrote: {out}"
    );

    let (ok, out, err) = run(&data, &["migrate-records"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("signed 4 records"), "{err}");
    let report = json_of(&out);
    let grants: Vec<&str> = report["signed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["grants"].as_str().unwrap())
        .collect();
    assert!(
        grants
            .iter()
            .any(|g| g.contains("gh-reader") && g.contains("github-*")),
        "{grants:?}"
    );
    let (ok, out, err) = run(&data, &["key", "list"]).await;
    assert!(ok, "{err}");
    let listed = json_of(&out);
    let mut roles: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["executor", "gh-reader", "read-only"]);
    assert_eq!(listed["refused"], json!([]));

    let (ok, _, err) = run(&data, &["migrate-records"]).await;
    assert!(!ok, "a second migration ran");
    assert!(err.contains("signed already"), "{err}");

    // A server on the migrated store: the keys work, and it knows the records were signed.
    let server = Server::start_local(ServerOptions {
        data_dir: Some(data.clone()),
        extra_env: vec![("VULTRINO_MASTER_KEY".into(), TEST_MASTER_KEY.into())],
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(server.target());
    let gh = f["keys"]["gh-reader"]["key"].as_str().unwrap();
    let r = c.send("GET", "/v1/credentials", Some(gh), None).await;
    expect_for("the gh-reader key after the migration", &r, 200, None);
    assert_eq!(r.body["credentials"][0]["alias"], "github-legacy");
    let admin = c.login().await;
    let r = c
        .send("POST", "/v1/admin/migrate-records", Some(&admin), None)
        .await;
    expect_for(
        "the route after the command",
        &r,
        409,
        "records_already_signed",
    );
}
