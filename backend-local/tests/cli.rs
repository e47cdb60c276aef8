//! The `vultrino` command line as a user meets it: zero-config first run, managing credentials
//! with secrets from stdin, requests, password hashing, master-key rotation, wrong keys, and a
//! graceful stop on SIGTERM.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::vultrino_cmd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Run a management command with `stdin` fed in; returns (success, stdout, stderr).
async fn run(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that refuses its arguments exits without reading stdin: its closed pipe is not a
    // failure of the test (what it printed and its exit status are what the test checks).
    match input.write_all(stdin.as_bytes()).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Start `serve` with no configuration at all; returns the child, base URL and printed stdout.
async fn serve_zero_config(dir: &std::path::Path) -> (tokio::process::Child, String, String) {
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.strip_prefix("Vultrino listening on ") {
                return rest.to_string();
            }
        }
        panic!("serve exited: {printed}");
    })
    .await
    .unwrap();
    (child, base, printed)
}

#[tokio::test]
async fn zero_config_first_run_creates_private_files_and_prints_the_password_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut child, base, printed) = serve_zero_config(&dir).await;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert_eq!(mode(&dir.join("admin.hash")), 0o600);
    let password = printed
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains(' ') && !l.ends_with(':'))
        .expect("the password is printed on its own line")
        .to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("{base}/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().await.unwrap();

    // Second run: same key and password, nothing printed about a password.
    let (mut child, base, printed) = serve_zero_config(&dir).await;
    assert!(
        !printed.contains(&password),
        "the password is shown only once"
    );
    let r = http
        .post(format!("{base}/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn credentials_are_managed_with_secrets_from_stdin_and_used_by_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = Upstream::start().await;
    let (ok, out, err) = run(
        dir,
        &[
            "credential",
            "add",
            "local",
            "--type",
            "api_key",
            "--host",
            "127.0.0.1",
            "--description",
            "test",
        ],
        "cli-secret-7781\n",
    )
    .await;
    assert!(ok, "{err}");
    assert!(!out.contains("cli-secret-7781"));
    let (ok, out, _) = run(dir, &["credential", "list"], "").await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credentials"][0]["alias"], "local");
    // Refused without the opt-in; allowed (and scrubbed) with it.
    let url = up.url("/echo");
    let (ok, _, err) = run(dir, &["request", "local", "GET", &url], "").await;
    assert!(!ok);
    assert!(err.contains("blocked") || err.contains("ssrf"), "{err}");
    let (ok, out, err) = run(
        dir,
        &[
            "request",
            "local",
            "GET",
            &url,
            "--allow-loopback-upstreams",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200);
    assert!(!out.contains("cli-secret-7781"), "{out}");
    assert_eq!(
        up.seen().pop().unwrap().headers["authorization"],
        "Bearer cli-secret-7781"
    );
    // Keys and roles.
    let (ok, out, _) = run(
        dir,
        &[
            "role",
            "create",
            "gh",
            "--permission",
            "read",
            "--scope",
            "github-*",
        ],
        "",
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out, _) = run(dir, &["key", "create", "bot", "--role", "gh"], "").await;
    assert!(ok);
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, _) = run(dir, &["key", "revoke", &id], "").await;
    assert!(ok);
    let (ok, _, _) = run(dir, &["role", "rm", "gh"], "").await;
    assert!(ok);
    // Rotating the secret keeps the rest of the credential (here: its custom header).
    let (ok, _, err) = run(
        dir,
        &[
            "credential",
            "add",
            "hdr",
            "--host",
            "127.0.0.1",
            "--header",
            "X-Api-Key",
        ],
        "old-hdr-secret\n",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(dir, &["credential", "rotate", "hdr"], "new-hdr-secret\n").await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        dir,
        &["request", "hdr", "GET", &url, "--allow-loopback-upstreams"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        up.seen().pop().unwrap().headers["x-api-key"],
        "new-hdr-secret"
    );
    let (ok, _, _) = run(dir, &["credential", "rm", "local"], "").await;
    assert!(ok);
    let (ok, _, err) = run(dir, &["credential", "show", "local"], "").await;
    assert!(!ok && err.contains("no credential"), "{err}");
}

#[tokio::test]
async fn hash_password_reads_stdin_and_prints_a_verifiable_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(
        tmp.path(),
        &[
            "hash-password",
            "--iterations",
            "1000",
            "--allow-weak-password-hash-for-tests",
        ],
        "s3cret pass phrase\n",
    )
    .await;
    assert!(ok, "{err}");
    let hash = out.trim();
    assert!(hash.starts_with("$pbkdf2-sha256$"), "{hash}");
    assert!(vultrino_core::crypto::verify_password(
        "s3cret pass phrase",
        hash
    ));
    assert!(!out.contains("s3cret pass"));
}

/// `hash-password` refuses what a server would refuse or what is too easy to guess: fewer
/// iterations than the floor (unless the test-only flag says so) and a password shorter than
/// 15 characters; the default makes a hash at the floor.
#[tokio::test]
async fn hash_password_refuses_short_passwords_and_too_few_iterations() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "a long enough passphrase\n";
    let (ok, out, err) = run(
        tmp.path(),
        &["hash-password", "--iterations", "10000"],
        long,
    )
    .await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("at least 100000"), "{err}");
    let (ok, out, err) = run(tmp.path(), &["hash-password"], "fourteen-chars\n").await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("at least 15 characters"), "{err}");
    assert!(
        !err.contains("fourteen-chars"),
        "the password is never repeated: {err}"
    );
    let (ok, out, err) = run(tmp.path(), &["hash-password"], long).await;
    assert!(ok, "{err}");
    assert_eq!(
        vultrino_core::crypto::password_hash_iterations(out.trim()),
        Some(vultrino_core::crypto::MIN_PASSWORD_ITERATIONS)
    );
}

/// `serve` with an admin password hash below the iteration floor stops before it listens, naming
/// where the hash came from and the fix; the test-only flag lets it through.
#[tokio::test]
async fn serve_refuses_a_weak_admin_hash_naming_its_source_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let weak = vultrino_core::crypto::hash_password("a long enough passphrase", 10_000).unwrap();
    let serve = |dir: std::path::PathBuf, extra: &'static [&'static str]| {
        let weak = weak.clone();
        async move {
            let mut cmd = vultrino_cmd(Some(&dir));
            cmd.args(["serve", "--listen", "127.0.0.1:0"])
                .args(extra)
                .env("VULTRINO_ADMIN_PASSWORD_HASH", &weak)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let listening = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(line) = lines.next_line().await.unwrap() {
                    if line.starts_with("Vultrino listening on ") {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap();
            let _ = child.kill().await;
            let out = child.wait_with_output().await.unwrap();
            (listening, String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (listening, err) = serve(tmp.path().join("a"), &[]).await;
    assert!(!listening, "a weak hash must stop the server: {err}");
    assert!(err.contains("VULTRINO_ADMIN_PASSWORD_HASH"), "{err}");
    assert!(err.contains("vultrino hash-password"), "{err}");
    assert!(!err.contains(&weak), "the hash is never repeated: {err}");
    let (listening, err) = serve(
        tmp.path().join("b"),
        &["--allow-weak-password-hash-for-tests"],
    )
    .await;
    assert!(listening, "{err}");
    assert!(
        err.contains("INSECURE"),
        "the switch is logged loudly: {err}"
    );

    // A weak admin.hash file (left by an older first run, or written by hand) names the file.
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.hash"), format!("{weak}\n")).unwrap();
    let (ok, out, err) = run(&dir, &["serve", "--listen", "127.0.0.1:0"], "").await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("admin.hash") && err.contains("vultrino hash-password"),
        "{err}"
    );
}

#[tokio::test]
async fn rotating_the_master_key_keeps_credentials_and_retires_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ok, _, err) = run(
        dir,
        &["credential", "add", "c1", "--host", "api.example.com"],
        "value-1\n",
    )
    .await;
    assert!(ok, "{err}");
    let old_key = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let (ok, _, err) = run(dir, &["rotate-master-key"], "").await;
    assert!(ok, "{err}");
    assert!(err.contains("re-encrypted 1 records"), "{err}");
    let new_key = std::fs::read_to_string(dir.join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    let (ok, out, err) = run(dir, &["credential", "show", "c1"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("api.example.com"));
    // The old key no longer opens the store, with a clear message.
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.env("VULTRINO_MASTER_KEY", old_key.trim())
        .args(["credential", "list"]);
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");
}

/// A second process that opens the store while `serve` holds it gets a clear error. (Management
/// commands no longer open it while a server runs: they go through the server, see
/// tests/cli_server.rs; a second `serve` still opens the store.) The failed second server leaves
/// the first one's address file alone.
#[tokio::test]
async fn a_second_process_on_the_same_store_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (mut child, base, _) = serve_zero_config(&dir).await;
    let advertised = std::fs::read_to_string(dir.join("server.json")).unwrap();
    let (ok, _, err) = run(&dir, &["serve", "--listen", "127.0.0.1:0"], "").await;
    assert!(!ok);
    assert!(err.contains("lock") || err.contains("in use"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("server.json")).unwrap(),
        advertised
    );
    assert!(advertised.contains(&base), "{advertised}");
    child.kill().await.unwrap();
}

/// `serve` refuses a configuration the core's rules refuse, naming the flag, before it listens.
#[tokio::test]
async fn serve_refuses_a_wildcard_cors_origin_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (ok, out, err) = run(
        &dir,
        &["serve", "--listen", "127.0.0.1:0", "--cors-origin", "*"],
        "",
    )
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("--cors-origin"), "{err}");
    assert!(!out.contains("listening on"), "{out}");
}

/// An approval webhook `serve` may not send to (plain http to a public host, a private address)
/// stops it before it listens, naming the flag and never repeating the URL (it may hold a secret).
#[tokio::test]
async fn serve_refuses_an_approval_webhook_it_may_not_send_to() {
    for (flag, value) in [
        (
            "--approval-webhook",
            "http://hooks.example.com/T/B/secret-part",
        ),
        ("--approval-webhook", "https://10.0.0.7/secret-part"),
        ("--public-url", "vultrino.example.com/secret-part"),
        ("--approval-webhook-format", "xml"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let (ok, out, err) =
            run(&dir, &["serve", "--listen", "127.0.0.1:0", flag, value], "").await;
        assert!(!ok, "{flag} {value}: {out}");
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(
            !err.contains("secret-part"),
            "{flag}: the value is repeated: {err}"
        );
        assert!(!out.contains("listening on"), "{out}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, base, _) = serve_zero_config(&tmp.path().join("d")).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// `vultrino status [--json]` as JSON, with the config dir (sessions) under `home`.
async fn status_json(dir: &std::path::Path, home: &std::path::Path, json: bool) -> Value {
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.arg("status")
        .env("XDG_CONFIG_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `vultrino status` says what the CLI works with — version, server, store, key source, sync —
/// before and while a server runs, opening nothing and printing no secret; piped, it is JSON
/// even without `--json`.
#[tokio::test]
async fn status_says_server_store_key_source_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, home) = (tmp.path().join("data"), tmp.path().join("home"));
    let before = status_json(&dir, &home, true).await;
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"), "{before}");
    assert_eq!(before["server"]["running"], false, "{before}");
    assert_eq!(before["store"]["kind"], "file", "{before}");
    assert_eq!(before["store"]["exists"], false, "{before}");
    assert_eq!(before["master_key"]["source"], "file", "{before}");
    assert_eq!(before["master_key"]["exists"], false, "{before}");
    assert_eq!(before["sync"]["live"], false, "{before}");
    assert!(!dir.exists(), "status creates nothing");

    let (mut child, base, _) = serve_zero_config(&dir).await;
    let during = status_json(&dir, &home, false).await;
    assert_eq!(during["server"]["url"], base.as_str(), "{during}");
    assert_eq!(during["server"]["running"], true, "{during}");
    assert_eq!(
        during["server"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{during}"
    );
    assert!(
        during["server"]["auth"]
            .as_str()
            .unwrap()
            .contains("vultrino login"),
        "{during}"
    );
    assert_eq!(during["store"]["held_by_a_server"], true, "{during}");
    assert_eq!(during["master_key"]["exists"], true, "{during}");
    let key = std::fs::read_to_string(dir.join("master.key")).unwrap();
    assert!(!during.to_string().contains(key.trim()), "{during}");
    let _ = child.kill().await;
}

/// The server's log, read from a pipe (not a terminal): plain text with no colour codes, and
/// the end of the drain said once, however many worker threads drained.
#[tokio::test]
async fn the_log_on_a_pipe_is_plain_text_and_says_the_drain_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = vultrino_cmd(Some(&tmp.path().join("d")));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--threads", "2"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Vultrino listening on ") {
                return;
            }
        }
        panic!("the server never listened");
    })
    .await
    .unwrap();
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("serving"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
    assert_eq!(log.matches("all connections closed").count(), 1, "{log}");
}

/// An upstream on 127.0.0.1 that answers every request after `delay`; the counter says how
/// many requests it has received.
async fn slow_upstream(
    delay: Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                    )
                    .await;
            });
        }
    });
    (format!("http://{addr}"), received)
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let (upstream, received) = slow_upstream(Duration::from_millis(800)).await;
    let mut server = support::Server::start_local(support::ServerOptions::default()).await;
    let c = support::Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(
                &json!({"alias": "slow", "type": "api_key", "data": {"key": "k-0123456789"},
                "policy": {"allowed_hosts": ["127.0.0.1"]}}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Several executes in flight on several connections (so on both worker threads).
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = support::Client::new(server.target());
            let admin = admin.clone();
            let url = format!("{upstream}/x");
            tokio::spawn(async move {
                c.send(
                    "POST",
                    "/v1/execute",
                    Some(&admin),
                    Some(&json!({"credential": "slow", "method": "GET", "url": url})),
                )
                .await
            })
        })
        .collect();
    // SIGTERM once all four are in flight (the upstream holds each for 800 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the executes never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = server.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["body"], "slow");
    }
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// `credential add --base-url` sets the pass-through proxy's upstream, `show` and `list` show
/// it, and one outside the credential's hosts is refused naming the field.
#[tokio::test]
async fn credential_add_takes_and_shows_a_base_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let add = |alias: &'static str, base: &'static str| {
        [
            "credential",
            "add",
            alias,
            "--host",
            "api.example.com",
            "--base-url",
            base,
        ]
    };
    let (ok, out, err) = run(dir, &add("ex", "https://api.example.com/v1/"), "k-1\n").await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["base_url"],
        "https://api.example.com/v1"
    );
    let (ok, out, _) = run(dir, &["credential", "show", "ex"], "").await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["base_url"],
        "https://api.example.com/v1"
    );
    let (ok, out, _) = run(dir, &["credential", "list"], "").await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["credentials"][0]["base_url"],
        "https://api.example.com/v1"
    );
    let (ok, _, err) = run(dir, &add("bad", "https://other.example.com"), "k-2\n").await;
    assert!(!ok);
    assert!(err.contains("base_url"), "{err}");
}

/// `vultrino audit` with no server running reads the file store directly: the same filters and
/// output as through a server (tests/http/cli.rs), and no secret in what it prints.
#[tokio::test]
async fn audit_lists_the_store_directly_without_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for alias in ["one", "two"] {
        let (ok, _, err) = run(
            dir,
            &["credential", "add", alias, "--host", "api.example.com"],
            "audit-direct-secret-5150\n",
        )
        .await;
        assert!(ok, "{err}");
    }
    let (ok, out, err) = run(dir, &["audit", "--json"], "").await;
    assert!(ok, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(events[0]["credential"], "one", "oldest first");
    assert_eq!(events[1]["credential"], "two");
    assert!(events.iter().all(|e| e["actor"] == "admin:cli"));
    let (ok, out, err) = run(dir, &["audit", "--credential", "two"], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("credential.create") && out.contains("credential=two"),
        "{out}"
    );
    let (ok, out, err) = run(dir, &["audit", "--outcome", "denied"], "").await;
    assert!(ok && out.is_empty(), "{out}{err}");
    assert!(!out.contains("audit-direct-secret-5150"));
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The sync trap (issue 19): a copy made by `vultrino sync` holds records sealed under the edge's
/// key and no key file (the key was given in the environment). Opened without that key, a
/// management command and `serve` both refuse, say what to do, and make nothing there — no new
/// `master.key` that could never open these records, no `admin.hash`; with the key, it opens.
#[tokio::test]
async fn a_synced_copy_without_its_master_key_is_refused_and_gets_no_new_key() {
    use support::{Client, Server, ServerOptions, TEST_MASTER_KEY};
    let edge = Server::start_local(ServerOptions {
        extra_env: vec![("VULTRINO_MASTER_KEY".into(), TEST_MASTER_KEY.into())],
        ..ServerOptions::default()
    })
    .await;
    let client = Client::new(edge.target());
    let admin = client.login().await;
    let r = client
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(
                &json!({"alias": "github", "type": "api_key", "data": {"key": "sk-sync-trap-2468"},
                "policy": {"allowed_hosts": ["api.github.com"]}}),
            ),
        )
        .await;
    support::expect(&r, 201, None);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge-copy");
    let out = vultrino_cmd(Some(&dir))
        .args(["sync", "--from", &edge.base])
        .env("VULTRINO_MASTER_KEY", TEST_MASTER_KEY)
        .env("VULTRINO_SYNC_TOKEN", &admin)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = snapshot(&dir);
    assert!(!dir.join("master.key").exists());

    // A management command without the key.
    let (ok, _, err) = run(&dir, &["credential", "list"], "").await;
    assert!(!ok, "a command without the key must fail");
    assert!(err.contains("no master key for the store"), "{err}");
    assert!(err.contains("no new key was made"), "{err}");
    assert!(err.contains("VULTRINO_MASTER_KEY"), "{err}");
    assert!(err.contains("vultrino sync"), "{err}");
    assert!(!err.contains("wrong_master_key"), "{err}");
    assert!(
        !dir.join("master.key").exists(),
        "a new master key was made"
    );
    assert_eq!(snapshot(&dir), before, "the copy changed");

    // `--master-key-source file` says the same.
    let (ok, _, err) = run(
        &dir,
        &["--master-key-source", "file", "credential", "list"],
        "",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no new key was made"), "{err}");
    assert_eq!(snapshot(&dir), before, "the copy changed");

    // `serve` without the key: refused before it makes a key or a first-run admin password.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        vultrino_cmd(Some(&dir))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("serve without the key must exit, not serve")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no new key was made"), "{err}");
    assert!(!dir.join("admin.hash").exists(), "an admin.hash was made");
    assert_eq!(snapshot(&dir), before, "the copy changed");

    // With the edge's key the copy opens.
    let out = vultrino_cmd(Some(&dir))
        .args(["credential", "list"])
        .env("VULTRINO_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("github"));
    assert!(!dir.join("master.key").exists());
}

/// `THP_enabled` of process `pid` (`/proc/PID/status`; `None` on a kernel without the line).
fn thp_enabled(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()))
}

/// The server runs without transparent huge pages (decision 0122): mimalloc asks for them on its
/// arena, and a 2 MiB page stays resident while any 4 KiB of it is used — in the soak, 20 MiB of
/// an idle server's 46 MiB, and a resident set that rose for 30 minutes. `MIMALLOC_ALLOW_THP=1`
/// (mimalloc's own setting) keeps them.
#[tokio::test]
async fn the_server_runs_without_transparent_huge_pages_unless_mimalloc_allow_thp_is_1() {
    let Some(ours) = thp_enabled("self") else {
        return; // a kernel that does not report it (before 6.x): nothing to check
    };
    for (allow, expected) in [(None, "0"), (Some("0"), "0"), (Some("1"), ours.as_str())] {
        let server = support::Server::start_local(support::ServerOptions {
            extra_env: allow
                .map(|v| vec![("MIMALLOC_ALLOW_THP".to_string(), v.to_string())])
                .unwrap_or_default(),
            ..Default::default()
        })
        .await;
        let pid = server.child.id().unwrap().to_string();
        assert_eq!(
            thp_enabled(&pid).as_deref(),
            Some(expected),
            "MIMALLOC_ALLOW_THP={allow:?}"
        );
    }
}
