//! The upstream misbehaviour matrix (issue 17; docs/decisions/0112-upstream-misbehaviour-matrix.md),
//! on the local server: a loopback upstream written on a raw `TcpListener` (so it can break the
//! protocol in ways no HTTP library would) misbehaves one way per row, and every row goes through
//! both `/v1/execute` (the buffered path) and `/proxy/` (the streamed path). For each, the test
//! checks
//!
//! - **a defined reply**: the status (and `X-Vultrino-Error` code) of the matrix, a JSON error body
//!   when it is an error; on `/proxy/` when the head was already sent, a body that ends as
//!   *failed* (never like a whole one) or, where the row says so, whole;
//! - **bounded time**: the server's own short deadlines (set by the serve flags below) end every
//!   stall; the only wall-clock bound is a generous 15 s ceiling per request;
//! - **an audit event** of the exchange with its outcome (and code);
//! - **nothing left behind**: the server process's open file descriptors (`/proc/PID/fd`) come
//!   back to their count before the row once the upstream has closed its side.
//!
//! One test walks the matrix (one server: starting one per row would cost more than the rows),
//! and a failure names its row and path.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{expect_for, Client, Server, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const SECRET: &str = "sk-live-Faults17Zq";
/// `VULTRINO_MAX_RESPONSE_BYTES`: the cap on a buffered (execute) reply.
const CAP: usize = 64 * 1024;
/// A generous ceiling on any one request (the deadlines below are all under 4 s).
const CEILING: Duration = Duration::from_secs(15);

/// Read the request head (the requests here have no body).
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).to_string())
}

/// Close with a TCP reset (SO_LINGER 0), not a FIN. (`set_linger` is deprecated because a
/// non-zero linger blocks the thread on drop; a zero one does not.)
#[allow(deprecated)]
fn reset(s: TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn write(s: &mut TcpStream, b: &[u8]) -> bool {
    s.write_all(b).await.is_ok() && s.flush().await.is_ok()
}

/// Misbehave as the request path says.
async fn misbehave(mut s: TcpStream) {
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let path = head
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    match path.as_str() {
        "/reset-mid-headers" => {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Type: text/pl").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(s);
        }
        "/reset-mid-body" => {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n").await;
            write(&mut s, &[b'a'; 100]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(s);
        }
        "/stall-after-headers" => {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        "/trickle" => {
            // One byte a second: never idle long enough for the idle deadline.
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
            for _ in 0..100 {
                if !write(&mut s, b"x").await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        "/over-cap-length" => {
            let n = CAP + 1;
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            write(&mut s, h.as_bytes()).await;
            write(&mut s, &vec![b'b'; n]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/over-cap-chunked" => {
            write(
                &mut s,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await;
            let chunk = format!("{:x}\r\n{}\r\n", 4096, "c".repeat(4096));
            for _ in 0..=(CAP / 4096) {
                if !write(&mut s, chunk.as_bytes()).await {
                    return;
                }
            }
            write(&mut s, b"0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/malformed-headers" => {
            write(
                &mut s,
                b"HTTP/1.1 200 OK\r\nNo colon in this line\r\n\x01bad: \x7f\r\n\r\nok",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/header-flood" => {
            let mut h = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..5000 {
                h.push_str(&format!("X-Flood-{i}: {}\r\n", "f".repeat(20)));
            }
            h.push_str("Content-Length: 2\r\n\r\nok");
            write(&mut s, h.as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/http10-close-delimited" => {
            write(
                &mut s,
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            )
            .await;
            write(&mut s, b"all of it, ended by the close").await;
            // Dropped: the close ends the body.
        }
        "/continue-100" => {
            write(
                &mut s,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/no-content-with-body" => {
            write(
                &mut s,
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nextra",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/invalid-chunked" => {
            write(
                &mut s,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\nxx\r\n",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/never-ends" => {
            write(
                &mut s,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await;
            loop {
                if !write(&mut s, b"4\r\ntick\r\n").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        "/no-content" => {
            write(&mut s, b"HTTP/1.1 204 No Content\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        _ if head.starts_with("HEAD ") => {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n").await;
        }
        _ => {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
    }
}

/// The raw upstream: every connection is one task, kept so that [`Upstream::close_all`] can end
/// them (and so close the upstream's side of every connection) after each row.
struct Upstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let kept = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let task = tokio::spawn(misbehave(s));
                kept.lock().unwrap().push(task);
            }
        });
        Upstream { addr, conns }
    }

    fn close_all(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// What a request through one path must end with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    /// An error reply before any body: this status and `X-Vultrino-Error` code, a JSON body.
    Error(u16, &'static str),
    /// The head (this status) was sent, then the body ends as failed.
    Cut(u16),
    /// A whole reply with this status and exactly these many body bytes.
    Whole(u16, usize),
}

/// One row: the upstream's misbehaviour (its path), the reply and audit outcome/code through
/// `/v1/execute` and through `/proxy/`.
struct Row {
    path: &'static str,
    execute: Reply,
    execute_audit: (&'static str, Option<&'static str>),
    proxy: Reply,
    proxy_audit: (&'static str, Option<&'static str>),
}

const ERR: &str = "error";
const OK: &str = "allowed";

fn matrix() -> Vec<Row> {
    let bad = Some("upstream_error");
    let slow = Some("upstream_timeout");
    let big = Some("upstream_too_large");
    vec![
        Row {
            path: "/reset-mid-headers",
            execute: Reply::Error(502, "upstream_error"),
            execute_audit: (ERR, bad),
            proxy: Reply::Error(502, "upstream_error"),
            proxy_audit: (ERR, bad),
        },
        Row {
            path: "/reset-mid-body",
            execute: Reply::Error(502, "upstream_error"),
            execute_audit: (ERR, bad),
            proxy: Reply::Cut(200),
            proxy_audit: (ERR, bad),
        },
        Row {
            path: "/stall-after-headers",
            execute: Reply::Error(504, "upstream_timeout"),
            execute_audit: (ERR, slow),
            proxy: Reply::Cut(200),
            proxy_audit: (ERR, slow),
        },
        Row {
            path: "/trickle",
            execute: Reply::Error(504, "upstream_timeout"),
            execute_audit: (ERR, slow),
            proxy: Reply::Cut(200),
            proxy_audit: (ERR, slow),
        },
        Row {
            path: "/over-cap-length",
            execute: Reply::Error(502, "upstream_too_large"),
            execute_audit: (ERR, big),
            proxy: Reply::Whole(200, CAP + 1),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/over-cap-chunked",
            execute: Reply::Error(502, "upstream_too_large"),
            execute_audit: (ERR, big),
            proxy: Reply::Whole(200, (CAP / 4096 + 1) * 4096),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/malformed-headers",
            execute: Reply::Error(502, "upstream_error"),
            execute_audit: (ERR, bad),
            proxy: Reply::Error(502, "upstream_error"),
            proxy_audit: (ERR, bad),
        },
        Row {
            path: "/header-flood",
            execute: Reply::Error(502, "upstream_error"),
            execute_audit: (ERR, bad),
            proxy: Reply::Error(502, "upstream_error"),
            proxy_audit: (ERR, bad),
        },
        Row {
            path: "/http10-close-delimited",
            execute: Reply::Whole(200, 0),
            execute_audit: (OK, None),
            proxy: Reply::Whole(200, "all of it, ended by the close".len()),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/continue-100",
            execute: Reply::Whole(200, 0),
            execute_audit: (OK, None),
            proxy: Reply::Whole(200, 5),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/no-content-with-body",
            execute: Reply::Whole(200, 0),
            execute_audit: (OK, None),
            proxy: Reply::Whole(204, 0),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/no-content",
            execute: Reply::Whole(200, 0),
            execute_audit: (OK, None),
            proxy: Reply::Whole(204, 0),
            proxy_audit: (OK, None),
        },
        Row {
            path: "/invalid-chunked",
            execute: Reply::Error(502, "upstream_error"),
            execute_audit: (ERR, bad),
            proxy: Reply::Cut(200),
            proxy_audit: (ERR, bad),
        },
        Row {
            path: "/never-ends",
            execute: Reply::Error(504, "upstream_timeout"),
            execute_audit: (ERR, slow),
            proxy: Reply::Cut(200),
            proxy_audit: (ERR, slow),
        },
    ]
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

struct Setup {
    server: Server,
    c: Client,
    admin: String,
    key: String,
    up: Upstream,
}

async fn setup() -> Setup {
    let up = Upstream::start().await;
    let env = [
        ("VULTRINO_FETCH_TIMEOUT_MS", "1500"),
        ("VULTRINO_MAX_RESPONSE_BYTES", &CAP.to_string()),
        ("VULTRINO_STREAM_HEADERS_TIMEOUT_MS", "1500"),
        ("VULTRINO_STREAM_IDLE_TIMEOUT_MS", "1500"),
        ("VULTRINO_STREAM_TOTAL_TIMEOUT_MS", "3000"),
    ];
    let server = Server::start_local(ServerOptions {
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(
                &json!({"alias": "up", "type": "api_key", "data": {"key": SECRET},
                         "policy": {"allowed_hosts": ["127.0.0.1"]},
                         "base_url": format!("http://{}", up.addr)}),
            ),
        )
        .await;
    expect_for("create the credential", &r, 201, None);
    let r = c
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "agent", "role": "executor"})),
        )
        .await;
    expect_for("create a key", &r, 201, None);
    let key = r.body["key"].as_str().unwrap().to_string();
    Setup {
        server,
        c,
        admin,
        key,
        up,
    }
}

/// What a request ended with: status, `X-Vultrino-Error`, the body (or `Err` when it failed).
struct Got {
    status: u16,
    code: Option<String>,
    body: Result<Vec<u8>, ()>,
}

async fn finish(r: reqwest::Response) -> Got {
    let status = r.status().as_u16();
    let code = r
        .headers()
        .get("x-vultrino-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut r = r;
    let mut body = Vec::new();
    let body = loop {
        match r.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break Ok(body),
            Err(_) => break Err(()),
        }
    };
    Got { status, code, body }
}

impl Setup {
    /// A client of its own per request, keeping no connection (so the fd count can settle).
    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    async fn execute(&self, path: &str) -> Got {
        let r = Self::http()
            .post(format!("{}/v1/execute", self.server.base))
            .header("authorization", format!("Bearer {}", self.key))
            .json(&json!({"credential": "up", "method": "GET",
                          "url": format!("http://{}{path}", self.up.addr)}))
            .send()
            .await
            .unwrap();
        finish(r).await
    }

    async fn proxy(&self, path: &str) -> Got {
        let r = Self::http()
            .get(format!("{}/proxy/up{path}", self.server.base))
            .header("x-api-key", &self.key)
            .send()
            .await
            .unwrap();
        finish(r).await
    }

    /// The newest audit event of `action` on `path`, once it is there.
    async fn event(&self, action: &str, path: &str) -> Option<Value> {
        for _ in 0..100 {
            let r = self
                .c
                .send("GET", "/v1/audit?limit=20", Some(&self.admin), None)
                .await;
            let found = r.body["events"].as_array().and_then(|evs| {
                evs.iter()
                    .find(|e| e["action"] == action && e["path"] == path)
                    .cloned()
            });
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Wait (up to 5 s) for the server's open fds to come back to `before`; the count at the end.
    async fn settled_fds(&self, before: usize) -> usize {
        let pid = self.server.child.id().unwrap();
        let mut now = open_fds(pid);
        for _ in 0..100 {
            if now <= before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            now = open_fds(pid);
        }
        now
    }
}

/// Check one reply against the matrix; the failures found (empty when it matches).
fn check_reply(row: &str, via: &str, want: Reply, got: &Got, took: Duration) -> Vec<String> {
    let mut f = Vec::new();
    let at = format!("{row} via {via}");
    if took > CEILING {
        f.push(format!("{at}: took {took:?}"));
    }
    let body_text = got
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .unwrap_or_default();
    if body_text.contains(SECRET) {
        f.push(format!("{at}: the reply carries the secret"));
    }
    match want {
        Reply::Error(status, code) => {
            // The JSON error body carries the code; `/proxy/` also names it in
            // `X-Vultrino-Error` (its replies are the upstream's, so the header tells them apart).
            let json: Option<Value> = serde_json::from_str(&body_text).ok();
            let json_code = json
                .as_ref()
                .and_then(|v| v["error"]["code"].as_str())
                .map(str::to_string);
            let header_ok = via != "proxy" || got.code.as_deref() == Some(code);
            if got.status != status || json_code.as_deref() != Some(code) || !header_ok {
                f.push(format!(
                    "{at}: want {status} {code} (JSON), got {} {:?} body {body_text:?}",
                    got.status, got.code
                ));
            }
        }
        Reply::Cut(status) => {
            if got.status != status || got.body.is_ok() {
                f.push(format!(
                    "{at}: want {status} then a failed body, got {} (body ended {})",
                    got.status,
                    if got.body.is_ok() { "whole" } else { "failed" }
                ));
            }
        }
        Reply::Whole(status, len) => {
            // Execute wraps the upstream's reply in its JSON envelope: only its status is
            // compared (len 0), the proxy's body byte for byte.
            let ok = got.status == status
                && match &got.body {
                    Ok(b) => len == 0 || b.len() == len,
                    Err(()) => false,
                };
            if !ok {
                f.push(format!(
                    "{at}: want {status} whole ({len} bytes), got {} {:?} ({:?} bytes)",
                    got.status,
                    got.code,
                    got.body.as_ref().map(Vec::len)
                ));
            }
        }
    }
    f
}

fn check_event(
    at: &str,
    ev: Option<Value>,
    want: (&str, Option<&str>),
    failures: &mut Vec<String>,
) {
    let Some(ev) = ev else {
        failures.push(format!("{at}: no audit event"));
        return;
    };
    let got = (ev["outcome"].as_str(), ev["code"].as_str());
    if got != (Some(want.0), want.1) {
        failures.push(format!("{at}: audit {got:?}, want {want:?}: {ev}"));
    }
    if ev.to_string().contains(SECRET) {
        failures.push(format!("{at}: the audit event carries the secret"));
    }
}

#[tokio::test]
async fn every_upstream_misbehaviour_gets_a_defined_reply_an_audit_event_and_leaves_nothing() {
    let s = setup().await;
    // Warm up both paths (first-use allocations, the per-thread clients) before counting fds.
    let _ = s.execute("/fine").await;
    let _ = s.proxy("/fine").await;
    s.up.close_all();
    let _ = s.settled_fds(0).await;
    let mut failures = Vec::new();
    for row in matrix() {
        let before = open_fds(s.server.child.id().unwrap());
        let started = Instant::now();
        let got = s.execute(row.path).await;
        let took = started.elapsed();
        eprintln!(
            "{} via execute: {} {:?} in {took:?}",
            row.path, got.status, got.code
        );
        failures.extend(check_reply(row.path, "execute", row.execute, &got, took));
        let ev = s.event("execute", row.path).await;
        check_event(
            &format!("{} via execute", row.path),
            ev,
            row.execute_audit,
            &mut failures,
        );

        let started = Instant::now();
        let got = s.proxy(row.path).await;
        let took = started.elapsed();
        eprintln!(
            "{} via proxy: {} {:?} in {took:?}",
            row.path, got.status, got.code
        );
        failures.extend(check_reply(row.path, "proxy", row.proxy, &got, took));
        let ev = s.event("proxy", row.path).await;
        check_event(
            &format!("{} via proxy", row.path),
            ev,
            row.proxy_audit,
            &mut failures,
        );

        s.up.close_all();
        let after = s.settled_fds(before).await;
        if after > before {
            failures.push(format!(
                "{}: the server holds {after} fds, {before} before the row",
                row.path
            ));
        }
    }
    // HEAD: a reply without a body, like a 204's, is audited as ended, not as cancelled.
    let r = Setup::http()
        .head(format!("{}/proxy/up/head-request", s.server.base))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        failures.push(format!("HEAD via proxy: {}", r.status()));
    }
    drop(r);
    let ev = s.event("proxy", "/head-request").await;
    check_event("HEAD via proxy", ev, (OK, None), &mut failures);
    s.up.close_all();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
