//! The management CLI while `vultrino serve` runs (issue 16 "CLI", issue 18 "High"): every
//! management command goes through the server's HTTP API, authenticated by `vultrino login`'s
//! session or `VULTRINO_API_KEY`, and never opens the store; with no server (or only the file a
//! killed server left behind) it opens the store as before. Talks only to 127.0.0.1; run in the
//! loopback-only namespace (scripts/test.sh). The CLI managing either backend with `--server`
//! (the worker in workerd included) is in tests/http/cli.rs.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect, vultrino_cmd, Client, Server, ServerOptions, ADMIN_PASSWORD};
use tokio::io::AsyncWriteExt;

/// A data directory and a config home of the CLI's user, removed on drop.
struct Home {
    tmp: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    fn config(&self) -> PathBuf {
        self.tmp.path().join("config")
    }
    /// The CLI's session files.
    fn sessions(&self) -> PathBuf {
        self.config().join("vultrino/sessions")
    }
    fn session_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.sessions()) {
            Ok(d) => d.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }
}

/// What a CLI run gave.
#[derive(Debug)]
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Run `vultrino --data-dir <data> args…` as the CLI's user (config home `home.config()`), with
/// `stdin` fed in and `env` added.
async fn cli(home: &Home, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Out {
    let mut cmd = vultrino_cmd(Some(&home.data()));
    cmd.args(args)
        .env("XDG_CONFIG_HOME", home.config())
        .env("HOME", home.tmp.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `vultrino serve` on the file store in `home.data()`.
async fn serve(home: &Home) -> Server {
    Server::start_local(ServerOptions {
        data_dir: Some(home.data()),
        ..ServerOptions::default()
    })
    .await
}

/// The server's state, read over HTTP as the admin.
async fn state(c: &Client, admin: &str, path: &str) -> Value {
    let r = c.send("GET", path, Some(admin), None).await;
    expect(&r, 200, None);
    r.body
}

fn aliases(v: &Value) -> Vec<String> {
    v["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["alias"].as_str().unwrap().to_string())
        .collect()
}

fn names(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The store was not opened by the CLI: nothing about a locked store.
#[track_caller]
fn never_opened_the_store(out: &Out) {
    for part in ["store_locked", "in use by another", "lock"] {
        assert!(!out.stderr.contains(part), "{part:?} in: {out:?}");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn login(home: &Home) -> Out {
    cli(home, &["login"], &format!("{ADMIN_PASSWORD}\n"), &[]).await
}

#[tokio::test]
async fn while_serve_runs_every_management_command_goes_through_it_after_login() {
    let home = Home::new();
    let server = serve(&home).await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let up = Upstream::start().await;
    let roles_before = state(&c, &admin, "/v1/roles").await;

    // Before login: every command fails with the "log in" message, and changes nothing.
    for (args, stdin) in [
        (
            vec!["credential", "add", "gh", "--host", "127.0.0.1"],
            "cli-secret-4411\n",
        ),
        (vec!["credential", "list"], ""),
        (vec!["key", "create", "mine", "--role", "admin"], ""),
        (vec!["key", "list"], ""),
        (
            vec![
                "role",
                "create",
                "r",
                "--permission",
                "admin",
                "--scope",
                "*",
            ],
            "",
        ),
        (vec!["credential", "rm", "gh"], ""),
    ] {
        let out = cli(&home, &args, stdin, &[]).await;
        assert!(!out.ok, "{args:?} succeeded without login: {out:?}");
        assert!(out.stderr.contains("vultrino login"), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        never_opened_the_store(&out);
    }
    assert!(aliases(&state(&c, &admin, "/v1/credentials").await).is_empty());
    assert!(names(&state(&c, &admin, "/v1/keys").await, "keys").is_empty());
    assert_eq!(state(&c, &admin, "/v1/roles").await, roles_before);

    let out = login(&home).await;
    assert!(out.ok, "{out:?}");
    assert!(!out.stdout.contains("vs_") && !out.stderr.contains("vs_"));

    // Credentials: add (the secret from stdin, never echoed), list, show, rotate, request, rm.
    let out = cli(
        &home,
        &[
            "credential",
            "add",
            "gh",
            "--host",
            "127.0.0.1",
            "--header",
            "X-Api-Key",
            "--description",
            "through the server",
        ],
        "cli-secret-4411\n",
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    never_opened_the_store(&out);
    assert!(!format!("{out:?}").contains("cli-secret-4411"), "{out:?}");
    assert_eq!(out.json()["alias"], "gh");
    assert_eq!(aliases(&state(&c, &admin, "/v1/credentials").await), ["gh"]);
    let detail = state(&c, &admin, "/v1/credentials/gh").await;
    assert_eq!(detail["description"], "through the server");

    let out = cli(&home, &["credential", "list"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(aliases(&out.json()), ["gh"]);
    let out = cli(&home, &["credential", "show", "gh"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.json()["policy"]["allowed_hosts"], json!(["127.0.0.1"]));

    let out = cli(
        &home,
        &["credential", "rotate", "gh"],
        "cli-secret-5522\n",
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert!(!format!("{out:?}").contains("cli-secret-5522"), "{out:?}");
    // The server's credential now sends the new secret, in the header it was added with.
    let out = cli(&home, &["request", "gh", "GET", &up.url("/echo")], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.json()["status"], 200);
    assert_eq!(
        up.seen().pop().unwrap().headers["x-api-key"],
        "cli-secret-5522"
    );

    // Keys and roles.
    let out = cli(
        &home,
        &[
            "role",
            "create",
            "gh-reader",
            "--permission",
            "read",
            "--scope",
            "gh*",
        ],
        "",
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert!(names(&state(&c, &admin, "/v1/roles").await, "roles").contains(&"gh-reader".into()));
    let out = cli(
        &home,
        &["key", "create", "bot", "--role", "gh-reader"],
        "",
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    let created = out.json();
    assert!(created["key"].as_str().unwrap().starts_with("vk_"));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(names(&state(&c, &admin, "/v1/keys").await, "keys"), ["bot"]);
    let out = cli(&home, &["key", "list"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(names(&out.json(), "keys"), ["bot"]);
    let out = cli(&home, &["role", "list"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert!(names(&out.json(), "roles").contains(&"gh-reader".into()));
    let out = cli(&home, &["key", "revoke", &id], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert!(names(&state(&c, &admin, "/v1/keys").await, "keys").is_empty());
    let out = cli(&home, &["role", "rm", "gh-reader"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert!(!names(&state(&c, &admin, "/v1/roles").await, "roles").contains(&"gh-reader".into()));

    let out = cli(&home, &["credential", "rm", "gh"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    never_opened_the_store(&out);
    expect(
        &c.send("GET", "/v1/credentials/gh", Some(&admin), None)
            .await,
        404,
        None,
    );
    // A refusal of the server reaches the user as its code and message.
    let out = cli(&home, &["credential", "show", "gh"], "", &[]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("not_found"), "{out:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_session_file_is_private_holds_no_password_and_logout_ends_the_session() {
    let home = Home::new();
    let server = serve(&home).await;
    let c = Client::new(server.target());
    // The config home exists already (with the usual 0755): our directories are private anyway.
    std::fs::create_dir_all(home.config()).unwrap();
    std::fs::set_permissions(home.config(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = login(&home).await;
    assert!(out.ok, "{out:?}");
    let files = home.session_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(mode(file), 0o600);
    assert_eq!(mode(&home.sessions()), 0o700);
    assert_eq!(mode(&home.config().join("vultrino")), 0o700);
    let text = std::fs::read_to_string(file).unwrap();
    assert!(!text.contains(ADMIN_PASSWORD), "the password is not kept");
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored["server"], server.base.as_str());
    let token = stored["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("vs_"));
    // The token is never shown: not by login, not by a command, not in an error.
    assert!(!format!("{out:?}").contains(&token));
    let out = cli(&home, &["key", "list"], "", &[]).await;
    assert!(out.ok && !format!("{out:?}").contains(&token), "{out:?}");
    expect(
        &c.send("GET", "/v1/keys", Some(&token), None).await,
        200,
        None,
    );

    let out = cli(&home, &["logout"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert!(home.session_files().is_empty(), "the file is deleted");
    // Ended on the server: the token is useless now.
    expect(
        &c.send("GET", "/v1/keys", Some(&token), None).await,
        401,
        None,
    );
    let out = cli(&home, &["key", "list"], "", &[]).await;
    assert!(!out.ok && out.stderr.contains("vultrino login"), "{out:?}");

    // A session the server ended (here: by signing out everywhere) says to log in again.
    assert!(login(&home).await.ok);
    let admin = c.login().await;
    expect(
        &c.send("POST", "/logout?everywhere=true", Some(&admin), None)
            .await,
        204,
        None,
    );
    let out = cli(&home, &["credential", "list"], "", &[]).await;
    assert!(!out.ok, "{out:?}");
    assert!(out.stderr.contains("log in again"), "{out:?}");
    never_opened_the_store(&out);

    // A wrong password keeps no session.
    let _ = cli(&home, &["logout"], "", &[]).await;
    let out = cli(&home, &["login"], "not the password at all\n", &[]).await;
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains("wrong user name or password"),
        "{out:?}"
    );
    assert!(home.session_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn two_servers_keep_two_sessions() {
    let home = Home::new();
    let other = Home::new();
    let a = serve(&home).await;
    let b = serve(&other).await;
    assert!(login(&home).await.ok);
    // The same user, logged in to a only: b still wants a login.
    let out = cli(&home, &["key", "list", "--server", &b.base], "", &[]).await;
    assert!(!out.ok && out.stderr.contains("vultrino login"), "{out:?}");
    let out = cli(
        &home,
        &["login", "--server", &b.base],
        &format!("{ADMIN_PASSWORD}\n"),
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(home.session_files().len(), 2);
    // Logging out of b leaves a's session alone.
    assert!(
        cli(&home, &["logout", "--server", &b.base], "", &[])
            .await
            .ok
    );
    assert!(cli(&home, &["key", "list"], "", &[]).await.ok);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_api_key_from_the_environment_does_what_its_role_allows_and_no_more() {
    let home = Home::new();
    let server = serve(&home).await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(
                &json!({"alias": "gh", "type": "api_key", "data": {"key": "s-1"},
                         "policy": {"allowed_hosts": ["api.github.com"]}}),
            ),
        )
        .await;
    expect(&r, 201, None);
    let r = c
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "reader", "role": "read-only"})),
        )
        .await;
    expect(&r, 201, None);
    let key = r.body["key"].as_str().unwrap().to_string();
    let env = [("VULTRINO_API_KEY", key.as_str())];

    let out = cli(&home, &["credential", "list"], "", &env).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(aliases(&out.json()), ["gh"]);
    let out = cli(&home, &["credential", "show", "gh"], "", &env).await;
    assert!(out.ok, "{out:?}");
    // What the role does not allow: a clear 403, nothing changed.
    for args in [
        vec!["key", "create", "mine", "--role", "admin"],
        vec!["key", "list"],
        vec!["credential", "rm", "gh"],
    ] {
        let out = cli(&home, &args, "", &env).await;
        assert!(!out.ok, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("403") && out.stderr.contains("VULTRINO_API_KEY"),
            "{args:?}: {out:?}"
        );
        assert!(!out.stderr.contains(&key), "{out:?}");
        never_opened_the_store(&out);
    }
    assert_eq!(
        names(&state(&c, &admin, "/v1/keys").await, "keys"),
        ["reader"]
    );
    assert_eq!(aliases(&state(&c, &admin, "/v1/credentials").await), ["gh"]);
    assert!(home.session_files().is_empty(), "a key needs no session");
    // A key the server does not know is refused as such.
    let out = cli(
        &home,
        &["credential", "list"],
        "",
        &[("VULTRINO_API_KEY", "vk_0000000000000000_nope")],
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("refused VULTRINO_API_KEY"),
        "{out:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_url_that_is_neither_https_nor_loopback_is_refused_before_any_connection() {
    support::require_loopback_only_network();
    let home = Home::new();
    for (args, env) in [
        (
            vec!["key", "list", "--server", "http://10.0.0.1:7879"],
            vec![],
        ),
        (
            vec!["credential", "list"],
            vec![("VULTRINO_SERVER", "http://10.0.0.1:7879")],
        ),
        (vec!["login", "--server", "http://10.0.0.1:7879"], vec![]),
        (
            vec!["key", "create", "k", "--server", "http://192.168.1.20:7879"],
            vec![],
        ),
        (
            vec![
                "role",
                "list",
                "--server",
                "https://user:pw@vultrino.example",
            ],
            vec![],
        ),
    ] {
        let out = cli(&home, &args, "some password\n", &env).await;
        assert!(!out.ok, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("https://") || out.stderr.contains("base URL"),
            "{args:?}: {out:?}"
        );
        assert!(!out.stderr.contains("cannot reach"), "{args:?}: {out:?}");
    }
    assert!(!home.data().exists(), "no store was opened or created");
    assert!(home.session_files().is_empty());
}

#[tokio::test]
async fn a_stopped_or_killed_server_leaves_the_direct_path_working() {
    let home = Home::new();
    // A graceful stop removes the server's file.
    let mut server = serve(&home).await;
    assert!(home.data().join("server.json").exists());
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    server.child.wait().await.unwrap();
    assert!(!home.data().join("server.json").exists());

    // kill -9 leaves it behind; the CLI sees the store is free and opens it as before.
    let mut server = serve(&home).await;
    assert!(login(&home).await.ok);
    server.kill9().await;
    assert!(home.data().join("server.json").exists(), "a stale file");
    let out = cli(
        &home,
        &["credential", "add", "gh", "--host", "api.github.com"],
        "s-1\n",
        &[],
    )
    .await;
    assert!(out.ok, "{out:?}");
    let out = cli(&home, &["credential", "list"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(aliases(&out.json()), ["gh"]);
    // With no server, there is nothing to log in to.
    let out = login(&home).await;
    assert!(
        !out.ok && out.stderr.contains("no Vultrino server runs"),
        "{out:?}"
    );

    // A server started again replaces the file, and the CLI follows it.
    let server = serve(&home).await;
    let out = cli(&home, &["credential", "list"], "", &[]).await;
    assert!(!out.ok && out.stderr.contains("vultrino login"), "{out:?}");
    assert!(login(&home).await.ok);
    let out = cli(&home, &["credential", "list"], "", &[]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(aliases(&out.json()), ["gh"]);
    server.stop().await;
}

/// Commands that work on the files (no HTTP route) refuse to start while the server runs,
/// naming the fix, instead of failing on the store's lock.
#[tokio::test]
async fn file_commands_say_to_stop_the_server_first() {
    let home = Home::new();
    let server = serve(&home).await;
    let out = cli(&home, &["rotate-master-key"], "", &[]).await;
    assert!(!out.ok, "{out:?}");
    assert!(out.stderr.contains("stop it first"), "{out:?}");
    server.stop().await;
}

/// The file a killed server left behind names a port anyone on this machine may take next. While
/// another process (not a server: `vultrino mcp --direct`, a direct command) holds the store, the
/// CLI must not take that file for a running server: it would send the session token (or
/// `VULTRINO_API_KEY`, or the password typed at `vultrino login`) to whatever listens there now.
/// (Review of the CLI, issue 18.)
#[tokio::test]
async fn a_stale_server_file_is_not_trusted_while_another_process_holds_the_store() {
    let home = Home::new();
    let mut server = serve(&home).await;
    assert!(login(&home).await.ok);
    server.kill9().await;
    let stale: Value =
        serde_json::from_slice(&std::fs::read(home.data().join("server.json")).unwrap()).unwrap();
    let addr = stale["url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://")
        .unwrap()
        .to_string();

    // Another process holds the store's lock, as `vultrino mcp --direct` does.
    let lock = std::fs::File::open(home.data().join("store/LOCK")).unwrap();
    lock.try_lock().unwrap();
    // Another local user takes the freed port and records whatever arrives.
    let squatter = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (mut s, _) = squatter.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                // Keep what arrives within a moment, then hang up (the CLI would wait for a
                // reply for minutes).
                let mut buf = [0u8; 4096];
                let wait = std::time::Duration::from_millis(500);
                while let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });

    let list = cli(&home, &["credential", "list"], "", &[]).await;
    let key = cli(
        &home,
        &["key", "list"],
        "",
        &[("VULTRINO_API_KEY", "vk_agent_secret-key-value")],
    )
    .await;
    let relogin = login(&home).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    accept.abort();
    let got = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(
        got.is_empty(),
        "the stale port received: {got:?}\n{list:?}\n{key:?}\n{relogin:?}"
    );
    // The CLI found the store busy instead, and said so.
    assert!(
        !list.ok && list.stderr.contains("in use by another"),
        "{list:?}"
    );
    drop(lock);
}

/// A hostile (or compromised) server on 127.0.0.1: answers every request with `head` followed by
/// `body_len` bytes of `fill`, written as fast as the CLI reads them. Returns its base URL.
async fn hostile_server(
    head: String,
    body_len: usize,
    fill: u8,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let head = head.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![fill; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    (base, task)
}

/// What a server the CLI is pointed at says in an error reaches the user's terminal: control
/// characters in it (escape sequences that retitle the window, clear the screen, rewrite what
/// was printed before, or on some terminals answer back) must not reach it raw. (Review of the
/// CLI, issue 18.)
#[tokio::test]
async fn a_servers_error_cannot_send_escape_sequences_to_the_terminal() {
    let home = Home::new();
    let body = json!({"error": {
        "code": "forbidden\u{1b}[2J",
        "message": "\u{1b}]0;owned\u{7}\u{1b}[31mred\u{1b}[0m\r\u{9b}31m"
    }})
    .to_string();
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (base, task) = hostile_server(head, 0, b' ').await;
    let out = cli(
        &home,
        &["key", "list", "--server", &base],
        "",
        &[("VULTRINO_API_KEY", "vk_agent_secret-key-value")],
    )
    .await;
    task.abort();
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains("owned"),
        "the message is shown: {out:?}"
    );
    assert!(
        !out.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reach the terminal: {out:?}"
    );
}

/// A server's reply is read up to a bound: a hostile server cannot make the CLI hold gigabytes
/// in memory. (Review of the CLI, issue 18.)
#[tokio::test]
async fn a_huge_reply_is_refused_not_held_in_memory() {
    let home = Home::new();
    let len: usize = 256 * 1024 * 1024;
    // A declared length, and a body that just goes on until the server hangs up.
    for declared in [format!("content-length: {len}\r\n"), String::new()] {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{declared}connection: close\r\n\r\n"
        );
        let (base, task) = hostile_server(head, len, b' ').await;
        let out = cli(
            &home,
            &["key", "list", "--server", &base],
            "",
            &[("VULTRINO_API_KEY", "vk_agent_secret-key-value")],
        )
        .await;
        task.abort();
        assert!(!out.ok, "{declared:?}: {out:?}");
        assert!(out.stderr.contains("too large"), "{declared:?}: {out:?}");
    }
}

/// `serve` only ever advertises `http://<loopback or listen IP>:<port>`. A `server.json` naming
/// anything else (an https URL of someone else's host) was planted: the CLI must not send the
/// password typed at `vultrino login`, or a key, there. (Review of the CLI, issue 18.)
#[tokio::test]
async fn a_planted_server_file_naming_another_host_is_refused() {
    support::require_loopback_only_network();
    let home = Home::new();
    let mut server = serve(&home).await;
    server.kill9().await;
    // Someone holds the store, and a planted file that they keep locked as a server would.
    let lock = std::fs::File::open(home.data().join("store/LOCK")).unwrap();
    lock.try_lock().unwrap();
    let planted = home.data().join("server.json");
    std::fs::write(
        &planted,
        json!({"url": "https://vultrino.attacker.example", "pid": 1}).to_string(),
    )
    .unwrap();
    let held = std::fs::File::open(&planted).unwrap();
    held.try_lock().unwrap();
    for (args, env) in [
        (vec!["login"], vec![]),
        (
            vec!["key", "list"],
            vec![("VULTRINO_API_KEY", "vk_agent_secret-key-value")],
        ),
    ] {
        let out = cli(&home, &args, &format!("{ADMIN_PASSWORD}\n"), &env).await;
        assert!(!out.ok, "{args:?}: {out:?}");
        assert!(
            !out.stderr.contains("cannot reach"),
            "the CLI tried to connect: {args:?}: {out:?}"
        );
        assert!(out.stderr.contains("server.json"), "{args:?}: {out:?}");
    }
    drop((held, lock));
}

/// A server's redirect is not followed: the token or key it was sent goes to that server only.
#[tokio::test]
async fn a_redirect_is_not_followed_with_the_key() {
    let home = Home::new();
    // The second listener would see a connection if the redirect were followed.
    let watch = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let watch_base = format!("http://{}", watch.local_addr().unwrap());
    let seen = tokio::spawn(async move {
        tokio::time::timeout(std::time::Duration::from_secs(3), watch.accept())
            .await
            .is_ok()
    });
    let head = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {watch_base}/v1/keys\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (base, task) = hostile_server(head, 0, b' ').await;
    let out = cli(
        &home,
        &["key", "list", "--server", &base],
        "",
        &[("VULTRINO_API_KEY", "vk_agent_secret-key-value")],
    )
    .await;
    task.abort();
    assert!(!out.ok, "{out:?}");
    assert!(!seen.await.unwrap(), "the redirect was followed: {out:?}");
}
