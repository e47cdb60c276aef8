//! The HTTP suite that runs against every backend: black-box cases over the wire (a loopback
//! upstream, a JSON client, what a user of the API sees), one file per concern.
//! Local server:      `cargo test -p vultrino-local --test every_backend`
//! Worker in workerd: `VULTRINO_TEST_BACKEND=workerd cargo test -p vultrino-local --test every_backend`
//! (build the worker first with `scripts/setup-workers.sh`; rebuild it after core changes).
//!
//! Cases whose requests would leave the machine if the SSRF guard were broken are `#[ignore]`d
//! for plain `cargo test` and run by `scripts/test.sh`, which runs the suite on both backends
//! inside a loopback-only network namespace (`unshare -n`) with `--include-ignored`; they also
//! refuse to run outside such a namespace.
//!
//! This folder sits next to the other suites that run against every backend (`tests/mcp`,
//! `tests/ui`; see `tests/README.md`), but it is a test target of the `vultrino-local` package
//! (`backend-local/Cargo.toml`), so that Cargo builds the `vultrino` binary for it.
//!
//! Where a concern lives: `access` (Cloudflare Access in front of both backends: tokens, key
//! set caching and rotation, routes per mode, the identity in the audit), `health_ui` (health, unknown routes, the admin UI's headers),
//! `login_sessions` (login, lockout, cookie and bearer sessions, CSRF), `admin_sessions` (how
//! sessions end: password change, sign out everywhere; the per-user login throttle; over-size
//! bodies refused before they are read), `credentials` (CRUD,
//! validation, rotation), `permissions` (permissions, scopes, who may re-point a secret),
//! `keys_roles` (API keys and roles), `records` (integrity of stored key and role records, and
//! the migration of a store written before they were signed), `execute` (injection, scrubbing,
//! OAuth2, reply shapes), `policy` (what a policy lets through as the upstream reads it; who may
//! widen it), `proxy` (the pass-through proxy: key slots, what reaches the upstream, scrubbed
//! replies, redirects, audit, body cap, base_url), `ssrf` (refused methods and destinations), `audit`,
//! `audit_sinks` (the audit's filters, the sinks' status, every event in the backend's log and,
//! on the worker, as an Analytics Engine data point), `changes` (concurrent writes,
//! consistency
//! after a change), `sync` (export, and `vultrino sync --from` the backend under test), `cli` (the
//! management CLI with `--server` the backend under test, after `vultrino login`),
//! `approval_surfaces` (approvals through the CLI; the approval webhook, JSON and Slack, whose
//! link only shows), `openapi` (the OpenAPI document and the checker every reply of the suite
//! passes through).

#![allow(clippy::unwrap_used)]

// The harness (a server of either backend, the loopback upstream, the JSON client and `expect`)
// is shared with the local-only integration tests in backend-local/tests, so it stays there; a
// test target outside that folder reaches it by path.
#[path = "../../backend-local/tests/support/mod.rs"]
mod support;

mod access;
mod admin_sessions;
mod approval_surfaces;
mod approvals;
mod audit;
mod audit_sinks;
mod changes;
mod cli;
mod credentials;
mod execute;
mod health_ui;
mod keys_roles;
mod login_sessions;
mod openapi;
mod permissions;
mod policy;
mod proxy;
mod records;
mod ssrf;
mod sync;
mod tokens;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect, Client, Reply, Server, ServerOptions};

/// The secret of the credentials [`Env::api_key_cred`] creates.
const API_SECRET: &str = "sk-live-Vx93hQ2mZ7";

/// One backend under test, a loopback upstream and an admin session.
struct Env {
    _server: Server,
    up: Upstream,
    c: Client,
    admin: String,
}

async fn env_with(opts: ServerOptions) -> Env {
    let up = Upstream::start().await;
    let server = Server::start(opts).await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    Env {
        _server: server,
        up,
        c,
        admin,
    }
}

async fn env() -> Env {
    env_with(ServerOptions::default()).await
}

/// [`env`], and on the worker with the harness's canceller (see
/// [`Env::leave_once_upstream_has`]).
async fn env_cancellable() -> Env {
    let mut opts = ServerOptions::default();
    if support::workerd_backend() {
        opts.extra_env
            .push(("HARNESS_CANCEL_CONTROL".into(), "1".into()));
    }
    env_with(opts).await
}

impl Env {
    async fn create(&self, body: Value) -> Reply {
        self.c
            .send("POST", "/v1/credentials", Some(&self.admin), Some(&body))
            .await
    }

    /// An `api_key` credential holding [`API_SECRET`], allowed on 127.0.0.1.
    async fn api_key_cred(&self, alias: &str) {
        let r = self
            .create(json!({
                "alias": alias, "type": "api_key", "description": "test key",
                "data": {"key": API_SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"]}
            }))
            .await;
        expect(&r, 201, None);
    }

    /// An `oauth2` credential whose token endpoint is the upstream's `/token`, with the client
    /// id it knows and `client_secret` (the one it knows is [`OAUTH_CLIENT_SECRET`]), scope
    /// `read`, under `policy`.
    ///
    /// [`OAUTH_CLIENT_SECRET`]: support::upstream::OAUTH_CLIENT_SECRET
    async fn oauth2_cred(&self, alias: &str, client_secret: &str, policy: Value) {
        let r = self
            .create(json!({"alias": alias, "type": "oauth2", "data": {
                    "token_url": self.up.url("/token"),
                    "client_id": support::upstream::OAUTH_CLIENT_ID,
                    "client_secret": client_secret, "scopes": ["read"]},
                "policy": policy}))
            .await;
        support::expect_for("an oauth2 credential", &r, 201, None);
    }

    /// Create the custom `role` (name, permissions, scopes).
    async fn role(&self, role: &Value) {
        let r = self
            .c
            .send("POST", "/v1/roles", Some(&self.admin), Some(role))
            .await;
        expect(&r, 201, None);
    }

    /// A new API key with `role`; returns the key.
    async fn key(&self, role: &str) -> String {
        let r = self
            .c
            .send(
                "POST",
                "/v1/keys",
                Some(&self.admin),
                Some(&json!({"name": "agent", "role": role})),
            )
            .await;
        expect(&r, 201, None);
        r.body["key"].as_str().unwrap().to_string()
    }

    /// The audit's events of `action`, newest first. Events may be written after the reply (a
    /// stream's end, a client gone), so this waits up to 5 s for `count` of them to appear.
    async fn audit_events(&self, action: &str, count: usize) -> Vec<Value> {
        self.audit_events_until(action, |events| events.len() >= count)
            .await
    }

    /// The audit's events of `action`, newest first, once `done` holds for them (waiting up to
    /// 5 s): for an event written after its reply among events of the same action that are
    /// already there, which a count cannot wait for.
    async fn audit_events_until(
        &self,
        action: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        for _ in 0..50 {
            let r = self
                .c
                .send("GET", "/v1/audit?limit=50", Some(&self.admin), None)
                .await;
            support::expect_for("audit", &r, 200, None);
            events = r.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|ev| ev["action"] == action)
                .cloned()
                .collect();
            if done(&events) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        events
    }

    /// Send `method path` (with `headers` and `body`) and go away as soon as the upstream has
    /// received it at `upstream_path`, before the reply's head: a client that gave up while the
    /// upstream acts. On the local server the client drops its connection. On the worker the
    /// harness's canceller (an [`env_cancellable`] env) cancels its call to the worker after 1 s
    /// (the upstream holds its reply 2 s), as Cloudflare's edge cancels the request of a client
    /// that disconnected: workerd's own HTTP server does not notice a client that leaves before
    /// the reply's head (decision 0065).
    async fn leave_once_upstream_has(
        &self,
        upstream_path: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) {
        let before = self.up.hits(upstream_path);
        if let Some(control) = &self._server.cancel_control {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let r: Value = self
                .c
                .http
                .post(format!("{control}/cancel"))
                .json(&json!({"method": method, "path": path, "headers": headers,
                    "body": body, "after_ms": 1000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                r["cancelled"], true,
                "the call ended before it was cancelled: {r}"
            );
        } else {
            assert!(
                !support::workerd_backend(),
                "use env_cancellable() on the worker"
            );
            let mut request = self.c.http.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.c.target.base),
            );
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let sending = tokio::spawn(request.body(body.to_string()).send());
            for _ in 0..100 {
                if self.up.hits(upstream_path) > before {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(
                !sending.is_finished(),
                "the reply came before the client left"
            );
            sending.abort();
            assert!(
                sending.await.is_err_and(|e| e.is_cancelled()),
                "the client left before the reply"
            );
        }
        assert_eq!(
            self.up.hits(upstream_path),
            before + 1,
            "the upstream received the request at {upstream_path}"
        );
    }

    /// Send `POST path` (with `headers`) declaring a longer body than `body`, send `body`, then
    /// go away before the rest — before anything could be sent upstream. On the local server
    /// the client closes its connection after 300 ms (the server sees the body fail); on the
    /// worker the harness's canceller (an [`env_cancellable`] env) sends `body` on a stream it
    /// never ends and cancels its call after 1 s, so the core's future is dropped while it waits
    /// for the body (decision 0065).
    async fn leave_before_the_body_ends(&self, path: &str, headers: &[(&str, &str)], body: &str) {
        if let Some(control) = &self._server.cancel_control {
            let mut map: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            map.insert("content-type".into(), json!("application/json"));
            let r: Value = self
                .c
                .http
                .post(format!("{control}/cancel"))
                .json(&json!({"method": "POST", "path": path, "headers": map,
                    "body": body, "after_ms": 1000, "stall": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                r["cancelled"], true,
                "the call ended before it was cancelled: {r}"
            );
            return;
        }
        assert!(
            !support::workerd_backend(),
            "use env_cancellable() on the worker"
        );
        use tokio::io::AsyncWriteExt;
        let authority = self.c.target.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len() + 1000
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(stream);
    }

    /// `GET url` through `alias`, as the holder of `token`.
    async fn execute(&self, token: &str, alias: &str, url: &str) -> Reply {
        self.c
            .send(
                "POST",
                "/v1/execute",
                Some(token),
                Some(&json!({"credential": alias, "action": "http.request", "params": {"method": "GET", "url": url}})),
            )
            .await
    }
}

/// The secret must not appear in any encoding in `text`.
fn assert_scrubbed(text: &str, secret: &str) {
    use base64::Engine as _;
    let forms = [
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
    ];
    for f in forms {
        assert!(!text.contains(&f), "secret form {f:?} leaked in: {text}");
    }
}
