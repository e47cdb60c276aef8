//! Test support shared by the integration tests: a loopback upstream, a harness that runs the
//! real `vultrino` binary on 127.0.0.1:0, and a small JSON client.
//!
//! The HTTP suite (`tests/http/`, test target `every_backend`) is written against [`Target`] (a
//! base URL plus admin credentials), so the same cases can be pointed at another backend. With
//! `VULTRINO_TEST_BACKEND=workerd`, [`Server::start`] runs the built worker in workerd instead
//! (`backend-cloudflare/test/harness.mjs`, Miniflare on 127.0.0.1:0): same cases, same assertions.

#![allow(dead_code, clippy::unwrap_used)]

pub mod openapi;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// How to start a server under test.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub allow_loopback: bool,
    pub login_max_attempts: u32,
    /// Local: `None` is a memory store, `Some(dir)` a file store in `dir`. Workerd: `Some(dir)`
    /// is where Miniflare keeps KV and the Durable Objects, so that a server started again on
    /// the same `dir` finds them (as a deployment does after its settings change).
    pub data_dir: Option<PathBuf>,
    /// The admin password; the server is given a low-cost hash of it (with the test-only switch
    /// that accepts one).
    pub admin_password: String,
    pub extra_env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allow_loopback: true,
            login_max_attempts: 5,
            data_dir: None,
            admin_password: ADMIN_PASSWORD.into(),
            extra_env: vec![],
        }
    }
}

/// A running `vultrino serve` (or the worker in workerd).
pub struct Server {
    pub base: String,
    pub child: Child,
    /// The harness's process group (workerd mode): node and its workerd children die together.
    group: Option<u32>,
    /// Workerd mode with `HARNESS_KV_CONTROL=1` in `extra_env`: the base URL of the harness's raw
    /// access to the worker's KV namespace (see `backend-cloudflare/test/harness.mjs`).
    pub kv_control: Option<String>,
    /// Workerd mode with `HARNESS_CANCEL_CONTROL=1` in `extra_env`: the base URL of the
    /// harness's canceller, which calls the worker and cancels the call after a delay.
    pub cancel_control: Option<String>,
    /// Every line the server printed on stdout after its "listening" line (the local server's
    /// `--audit-log -`, the worker's console log in workerd mode).
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The local server's `--metrics-listen` scrape URL (`http://ADDR/metrics`), when it has one.
    pub metrics: Option<String>,
    admin_password: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pgid) = self.group {
            // SIGTERM first: the harness then disposes of Miniflare, which removes its temporary
            // directory (/tmp/miniflare-*); a SIGKILL alone leaves one behind per server.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pgid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Whatever is left of the group (node, workerd) dies now.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
    }
}

/// A fixed raw master key (hex) for servers whose key a test must know (workerd, sync).
pub const TEST_MASTER_KEY: &str =
    "5d1f0c0a8e6b4f2a9c3e7d1b0a2f4e6c8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";

/// Whether [`Server::start`] runs the worker in workerd (`VULTRINO_TEST_BACKEND=workerd`).
pub fn workerd_backend() -> bool {
    std::env::var("VULTRINO_TEST_BACKEND").is_ok_and(|v| v == "workerd")
}

/// The Cloudflare worker crate's folder.
pub fn cloudflare_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend-cloudflare")
}

/// A low-cost PHC hash of [`ADMIN_PASSWORD`] (few iterations: tests, not production).
pub fn admin_hash() -> String {
    hash_of(ADMIN_PASSWORD)
}

/// A low-cost PHC hash of `password` (1 000 iterations, below the production floor: servers take
/// it only with the test-only switch `allow_weak_password_hash_for_tests`).
pub fn hash_of(password: &str) -> String {
    vultrino_core::crypto::hash_password(password, 1_000).unwrap()
}

pub fn vultrino_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vultrino")
}

/// A `vultrino` command with a clean environment (no inherited VULTRINO_* settings).
pub fn vultrino_cmd(data_dir: Option<&Path>) -> Command {
    let mut cmd = Command::new(vultrino_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("VULTRINO_") || k == "ENCRYPTION_KEY" || k == "ADMIN_PASSWORD_HASH" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    match data_dir {
        Some(d) => {
            cmd.arg("--data-dir").arg(d).arg("--store").arg("file");
        }
        None => {
            cmd.arg("--store").arg("memory");
        }
    }
    cmd.kill_on_drop(true);
    cmd
}

impl Server {
    /// Start the backend under test: the local binary, or the worker in workerd when
    /// `VULTRINO_TEST_BACKEND=workerd`.
    pub async fn start(opts: ServerOptions) -> Server {
        if workerd_backend() {
            Self::start_workerd(opts).await
        } else {
            Self::start_local(opts).await
        }
    }

    /// The worker (`backend-cloudflare/build`, built by scripts/setup-workers.sh) in workerd.
    /// `ServerOptions` map to the worker's bindings; `data_dir` has no meaning on the edge.
    pub async fn start_workerd(opts: ServerOptions) -> Server {
        let dir = cloudflare_dir();
        assert!(
            dir.join("build/index.js").exists(),
            "build the worker first: scripts/setup-workers.sh"
        );
        let mut cmd = Command::new("node");
        cmd.arg("test/harness.mjs").current_dir(&dir);
        for (k, _) in std::env::vars() {
            if harness_setting(&k) {
                cmd.env_remove(k);
            }
        }
        if let Some(state) = &opts.data_dir {
            cmd.env("HARNESS_PERSIST_DIR", state);
        }
        cmd.env("VULTRINO_MASTER_KEY", TEST_MASTER_KEY)
            .env("ADMIN_PASSWORD_HASH", hash_of(&opts.admin_password))
            .env("ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
            .env("LOGIN_MAX_ATTEMPTS", opts.login_max_attempts.to_string())
            .env(
                "ALLOW_LOOPBACK_UPSTREAMS",
                if opts.allow_loopback { "true" } else { "false" },
            )
            .env("WORKER_BUILD", "build")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn node test/harness.mjs");
        let group = child.id();
        Self::await_listening(child, group, opts.admin_password).await
    }

    /// The local `vultrino serve` binary (memory or file store).
    pub async fn start_local(opts: ServerOptions) -> Server {
        let mut cmd = vultrino_cmd(opts.data_dir.as_deref());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--login-max-attempts")
            .arg(opts.login_max_attempts.to_string())
            .env("VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
            .env(
                "VULTRINO_ADMIN_PASSWORD_HASH",
                hash_of(&opts.admin_password),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if opts.allow_loopback {
            cmd.arg("--allow-loopback-upstreams");
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vultrino");
        Self::await_listening(child, None, opts.admin_password).await
    }

    async fn await_listening(
        mut child: Child,
        group: Option<u32>,
        admin_password: String,
    ) -> Server {
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut kv_control = None;
        let mut cancel_control = None;
        let mut metrics = None;
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.strip_prefix("KV control on ") {
                    kv_control = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("Cancel control on ") {
                    cancel_control = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("Metrics listening on ") {
                    metrics = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("Vultrino listening on ") {
                    return rest.trim().to_string();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("server did not start within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line);
                }
            }
        });
        Server {
            base,
            child,
            group,
            kv_control,
            cancel_control,
            output,
            metrics,
            admin_password,
        }
    }

    /// The ids of the server's processes: the local server's, or (workerd mode) every process
    /// of the harness's group (node, workerd). Read from `/proc`.
    pub fn pids(&self) -> Vec<u32> {
        let Some(group) = self.group else {
            return self.child.id().into_iter().collect();
        };
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let pgrp = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<u32>().ok());
            if pgrp == Some(group) {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn target(&self) -> Target {
        Target {
            base: self.base.clone(),
            admin_user: ADMIN_USER.into(),
            admin_password: self.admin_password.clone(),
        }
    }

    /// Stop the server and wait until it is gone (its store files unlocked, Miniflare's state
    /// written), so that another can start on the same `data_dir`.
    pub async fn stop(mut self) {
        if self.group.is_some() {
            // Drop sends SIGTERM to the group and waits for it (Miniflare disposes cleanly).
            tokio::task::spawn_blocking(move || drop(self))
                .await
                .unwrap();
        } else {
            self.kill9().await;
        }
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Settings the harness passes to the worker: never inherited from the test's environment.
fn harness_setting(name: &str) -> bool {
    matches!(
        name,
        "VULTRINO_MASTER_KEY"
            | "ENCRYPTION_KEY"
            | "ADMIN_PASSWORD_HASH"
            | "ADMIN_USER"
            | "CORS_ORIGINS"
            | "LOGIN_MAX_ATTEMPTS"
            | "LOGIN_MAX_ATTEMPTS_PER_USER"
            | "KV_SETTLE_SECONDS"
            | "KEY_RECORD_REUSE_SECONDS"
            | "PROXY_MAX_CONCURRENT"
            | "PROXY_MAX_CONCURRENT_PER_KEY"
            | "APPROVAL_TTL_SECS"
            | "STREAM_HEADERS_TIMEOUT_MS"
            | "STREAM_IDLE_TIMEOUT_MS"
            | "STREAM_TOTAL_TIMEOUT_MS"
            | "FETCH_TIMEOUT_MS"
            | "MAX_RESPONSE_BYTES"
            | "ALLOW_LOOPBACK_UPSTREAMS"
            | "ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS"
            | "ACCESS_TEAM_DOMAIN"
            | "ACCESS_AUD"
            | "ACCESS_MODE"
            | "ACCESS_CERTS_URL"
            | "APPROVAL_WEBHOOK"
            | "APPROVAL_WEBHOOK_FORMAT"
            | "PUBLIC_URL"
            | "AUDIT_REQUIRED"
            | "HARNESS_PERSIST_DIR"
            | "WORKER_BUILD"
            | "HARNESS_KV_CONTROL"
            | "HARNESS_CANCEL_CONTROL"
            | "HARNESS_AUDIT_RECORDER"
    )
}

/// Where the suite sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub admin_user: String,
    pub admin_password: String,
}

/// A JSON reply, with the request it answers (for failure messages).
#[derive(Debug)]
pub struct Reply {
    /// The request's method and path (with its query), e.g. `GET /v1/audit?limit=50`.
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// A small client for the suite.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub target: Target,
}

impl Client {
    pub fn new(target: Target) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Client { http, target }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut rb = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{}", self.target.base, path),
        );
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send_raw(rb).await
    }

    /// `method path` as the admin page sends it: with the session `cookie` (`name=value`) and,
    /// when given, the CSRF token.
    pub async fn send_cookie(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut rb = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{}", self.target.base, path),
            )
            .header("cookie", cookie);
        if let Some(t) = csrf {
            rb = rb.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send_raw(rb).await
    }

    pub async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Reply {
        let (http, request) = rb.build_split();
        let request = request.expect("build the request");
        let method = request.method().to_string();
        let url = request.url();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let r = http.execute(request).await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Reply {
            method,
            path,
            status,
            headers,
            body,
            text,
        };
        // Every reply is also a case of the API's contract (GET /openapi.json).
        if let Err(why) = openapi::check(&reply) {
            panic!(
                "{} {}: the reply breaks the OpenAPI document (vultrino-core/src/api/openapi.json): \
                 {why}\nstatus {}, body: {}",
                reply.method, reply.path, reply.status, reply.text
            );
        }
        reply
    }

    /// Log in as admin; returns the session token.
    pub async fn login(&self) -> String {
        let r = self
            .send(
                "POST",
                "/login",
                None,
                Some(&serde_json::json!({"username": self.target.admin_user, "password": self.target.admin_password})),
            )
            .await;
        expect_for("admin login", &r, 200, None);
        r.body["token"].as_str().unwrap().to_string()
    }
}

/// Assert that `reply` has `status` and, when `code` is given, that `error.code`:
/// `expect(&r, 403, "scope_denied")`, `expect(&r, 201, None)`. On failure the panic names the
/// request (method and path), the status and error code received, and the whole reply body.
#[track_caller]
pub fn expect<'a>(reply: &Reply, status: u16, code: impl Into<Option<&'a str>>) {
    check(None, reply, status, code.into());
}

/// [`expect`], with `context` (the case of a loop, or why the status matters) first in the
/// failure message.
#[track_caller]
pub fn expect_for<'a>(context: &str, reply: &Reply, status: u16, code: impl Into<Option<&'a str>>) {
    check(Some(context), reply, status, code.into());
}

#[track_caller]
fn check(context: Option<&str>, reply: &Reply, status: u16, code: Option<&str>) {
    let got_code = reply.body["error"]["code"].as_str();
    if reply.status == status && code.is_none_or(|c| got_code == Some(c)) {
        return;
    }
    let context = context.map(|c| format!("{c}: ")).unwrap_or_default();
    let wanted = match code {
        Some(c) => format!("{status} {c}"),
        None => status.to_string(),
    };
    panic!(
        "{context}{} {}: expected {wanted}, got {} {}\nbody: {}",
        reply.method,
        reply.path,
        reply.status,
        got_code.unwrap_or("(no error code)"),
        reply.text
    );
}

/// The `vultrino_session=…` pair a login reply sets.
pub fn session_cookie(login: &Reply) -> String {
    let set = login.headers["set-cookie"].to_str().unwrap();
    let pair = set.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("vultrino_session="), "{set}");
    pair
}

/// Whether this process can reach only loopback (a `unshare -n` namespace): the guard for tests
/// whose targets would leave the machine if the code under test were wrong.
pub fn only_loopback_network() -> bool {
    // /proc/self/net/dev lists the interfaces of this process's namespace (/sys/class/net would
    // show the namespace that mounted sysfs).
    match std::fs::read_to_string("/proc/self/net/dev") {
        Ok(text) => text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo"),
        Err(_) => false,
    }
}

/// Panic unless in a loopback-only namespace (see `scripts/test.sh`).
pub fn require_loopback_only_network() {
    assert!(
        only_loopback_network(),
        "this test aims requests at non-loopback addresses that must be refused; it runs only inside \
         a loopback-only network namespace (scripts/test.sh runs the suite under `unshare -n`)"
    );
}

/// The audit window of `window_ms` (aligned on the clock: [`vultrino_core::audit::REFUSAL_WINDOW_MS`]
/// for refusals, [`vultrino_core::audit::UNAUTHENTICATED_WINDOW_MS`] for the unauthenticated
/// series of a refused record) that now falls in. A test that counts refusals into one event
/// takes it before and after its requests: when the two differ, the requests straddled a
/// window's end and are two series on a correct server, so the count is not checked (about
/// once in 10⁴ runs).
pub fn audit_window_now(window_ms: u64) -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        / u128::from(window_ms)
}
