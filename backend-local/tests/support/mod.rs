//! Test support shared by the integration tests: a loopback upstream, a harness that runs the
//! real `vultrino` binary on 127.0.0.1:0, and a small JSON client.
//!
//! The HTTP suite is written against [`Target`] (a base URL plus admin credentials), so the same
//! cases can be pointed at another backend (the worker in workerd) by giving another base URL.

#![allow(dead_code, clippy::unwrap_used)]

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
    /// `None`: memory store. `Some(dir)`: file store in `dir`.
    pub data_dir: Option<PathBuf>,
    pub extra_env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allow_loopback: true,
            login_max_attempts: 5,
            data_dir: None,
            extra_env: vec![],
        }
    }
}

/// A running `vultrino serve`.
pub struct Server {
    pub base: String,
    pub child: Child,
}

/// A low-cost PHC hash of [`ADMIN_PASSWORD`] (few iterations: tests, not production).
pub fn admin_hash() -> String {
    vultrino_core::crypto::hash_password(ADMIN_PASSWORD, 1_000).unwrap()
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
    pub async fn start(opts: ServerOptions) -> Server {
        let mut cmd = vultrino_cmd(opts.data_dir.as_deref());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--login-max-attempts")
            .arg(opts.login_max_attempts.to_string())
            .env("VULTRINO_ADMIN_PASSWORD_HASH", admin_hash())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if opts.allow_loopback {
            cmd.arg("--allow-loopback-upstreams");
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn vultrino");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.strip_prefix("Vultrino listening on ") {
                    return rest.trim().to_string();
                }
            }
            panic!("vultrino exited before listening");
        })
        .await
        .expect("server did not start within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { base, child }
    }

    pub fn target(&self) -> Target {
        Target {
            base: self.base.clone(),
            admin_user: ADMIN_USER.into(),
            admin_password: ADMIN_PASSWORD.into(),
        }
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Where the suite sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub admin_user: String,
    pub admin_password: String,
}

/// A JSON reply.
#[derive(Debug)]
pub struct Reply {
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
        Self::reply(rb.send().await.expect("request")).await
    }

    pub async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Reply {
        Self::reply(rb.send().await.expect("request")).await
    }

    async fn reply(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
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
        assert_eq!(r.status, 200, "login failed: {}", r.text);
        r.body["token"].as_str().unwrap().to_string()
    }
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
