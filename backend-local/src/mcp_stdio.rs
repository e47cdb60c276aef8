//! `vultrino mcp`: the MCP stdio transport for an agent host (Claude Desktop, Claude Code, …).
//!
//! # Contract
//! - The agent's API key comes from `VULTRINO_API_KEY` only — never from arguments or tool
//!   arguments (argv is visible to every user; tool arguments are written by the model).
//! - stdin carries newline-delimited JSON-RPC; stdout carries ONLY protocol messages, one per
//!   line; every log line goes to stderr. Notifications and client responses get no output.
//!   Messages are served concurrently (a slow upstream does not hold up `ping`); replies are
//!   written whole, one per line, in completion order (JSON-RPC matches them by id).
//! - A message longer than [`MAX_LINE_BYTES`] is discarded and answered with a parse error.
//!
//! # Reaching the store
//! A running `vultrino serve` holds the file store's exclusive lock, so there are two modes:
//! - **direct** (default): open the data directory's file store in this process. The key is
//!   checked once at start (a bad key exits non-zero with a message on stderr, before any
//!   output) and again on every tool call, so a key revoked or expired mid-session stops
//!   working at once.
//! - **forward** (`--server URL` / `VULTRINO_SERVER`): POST each message to `URL/mcp` with
//!   `Authorization: Bearer <key>` and copy the reply to stdout. The server authenticates every
//!   request; a 401 becomes a JSON-RPC error for that request.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use vultrino_core::app::App;
use vultrino_core::auth::Principal;
use vultrino_core::mcp::{self, code, Context, ToolHost, ToolOutcome, HANDSHAKE_VERSIONS};
use zeroize::Zeroizing;

/// Largest message accepted on stdin (the HTTP API's default body limit).
pub const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// The API key from `VULTRINO_API_KEY`, or a message saying how to set it.
pub fn api_key_from_env() -> anyhow::Result<Zeroizing<String>> {
    let key = std::env::var("VULTRINO_API_KEY")
        .ok()
        .map(|k| Zeroizing::new(k.trim().to_string()))
        .filter(|k| !k.is_empty());
    match key {
        Some(k) if k.starts_with("vk_") => Ok(k),
        Some(_) => anyhow::bail!(
            "VULTRINO_API_KEY is not a Vultrino API key (they start with vk_; create one with `vultrino key create`)"
        ),
        None => anyhow::bail!(
            "VULTRINO_API_KEY is not set: give the agent's API key (vk_…) in the environment of `vultrino mcp`"
        ),
    }
}

/// The version negotiated by `initialize`, shared by the concurrent handlers.
type Negotiated = Arc<Mutex<Option<&'static str>>>;

fn negotiated(state: &Negotiated) -> Option<&'static str> {
    state.lock().map(|g| *g).unwrap_or(None)
}

fn remember(state: &Negotiated, version: Option<&'static str>) {
    if let (Some(v), Ok(mut g)) = (version, state.lock()) {
        *g = Some(v);
    }
}

/// Serve stdio against the store opened in this process.
pub async fn direct(app: Arc<App>, key: Zeroizing<String>) -> anyhow::Result<()> {
    app.api_keys()
        .authenticate(&key)
        .await
        .map_err(|e| anyhow::anyhow!("VULTRINO_API_KEY was refused: {e}"))?;
    tracing::info!("MCP over stdio, store opened directly");
    let key = Arc::new(key);
    let state = Negotiated::default();
    serve_lines(move |line| {
        let (app, key, state) = (app.clone(), key.clone(), state.clone());
        async move {
            let host = KeyTools {
                app: &app,
                key: &key,
            };
            let ctx = Context {
                negotiated: negotiated(&state),
                http: None,
            };
            let reply = mcp::dispatch(&host, &line, &ctx).await;
            remember(&state, reply.negotiated);
            reply.body
        }
    })
    .await
}

/// The tools of the key, authenticated again on each call.
struct KeyTools<'a> {
    app: &'a App,
    key: &'a str,
}

#[async_trait::async_trait]
impl ToolHost for KeyTools<'_> {
    async fn call_tool(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome> {
        let who: Principal = match self.app.api_keys().authenticate(self.key).await {
            Ok(p) => p,
            Err(e) => return Some(mcp::tools::failure(&e)),
        };
        mcp::tools::AppTools {
            app: self.app,
            who: &who,
        }
        .call_tool(name, arguments)
        .await
    }
}

/// Serve stdio by forwarding every message to `server`'s `/mcp`.
pub async fn forward(server: &str, key: Zeroizing<String>) -> anyhow::Result<()> {
    let base = url::Url::parse(server.trim_end_matches('/'))
        .map_err(|e| anyhow::anyhow!("--server {server}: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") {
        anyhow::bail!("--server must be an http:// or https:// URL");
    }
    let loopback = matches!(
        base.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(base.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || base.host_str() == Some("localhost");
    if base.scheme() == "http" && !loopback {
        tracing::warn!("--server uses plain http to a non-loopback host: the API key crosses the network unencrypted");
    }
    let endpoint = format!("{}/mcp", base.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    tracing::info!(%endpoint, "MCP over stdio, forwarding to a running server");
    let key = Arc::new(key);
    let state = Negotiated::default();
    serve_lines(move |line| {
        let (client, endpoint, key, state) =
            (client.clone(), endpoint.clone(), key.clone(), state.clone());
        async move { forward_one(&client, &endpoint, &key, &state, &line).await }
    })
    .await
}

async fn forward_one(
    client: &reqwest::Client,
    endpoint: &str,
    key: &str,
    state: &Negotiated,
    line: &[u8],
) -> Option<Value> {
    let parsed: Option<Value> = serde_json::from_slice(line).ok();
    let single = parsed.as_ref().filter(|v| v.is_object());
    let id = single.and_then(|v| v.get("id")).cloned();
    let method = single.and_then(|v| v.get("method")).and_then(Value::as_str);
    let params = single.and_then(|v| v.get("params"));
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    let mut rb = client
        .post(endpoint)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(line.to_vec());
    // The routing headers a 2026-07-28 server compares with the body; for the handshake era, the
    // negotiated version (none on initialize itself).
    if let (Some(v), Some(m)) = (meta_version, method) {
        rb = rb.header("mcp-protocol-version", v).header("mcp-method", m);
        if let Some(n) = params.and_then(|p| p.get("name")).and_then(Value::as_str) {
            if m == "tools/call" && n.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                rb = rb.header("mcp-name", n);
            }
        }
    } else if method != Some("initialize") {
        if let Some(v) = negotiated(state) {
            rb = rb.header("mcp-protocol-version", v);
        }
    }
    let request_error = |code: i64, message: String, data: Option<Value>| {
        id.clone()
            .filter(|_| method.is_some())
            .map(|id| mcp::error_response(id, code, &message, data))
    };
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the Vultrino server");
            return request_error(
                code::INTERNAL_ERROR,
                format!("cannot reach the Vultrino server at {endpoint}"),
                None,
            );
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::ACCEPTED {
        return None;
    }
    let body = resp.bytes().await.unwrap_or_default();
    let mut reply: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return request_error(
                code::INTERNAL_ERROR,
                format!("the Vultrino server answered HTTP {status} without JSON"),
                None,
            )
        }
    };
    if reply.get("jsonrpc").is_none() && !reply.is_array() {
        // A plain API error (e.g. 413 `{"error": {code, message}}`), not a JSON-RPC one.
        let msg = reply["error"]["message"]
            .as_str()
            .unwrap_or("request refused")
            .to_string();
        return request_error(code::INTERNAL_ERROR, format!("HTTP {status}: {msg}"), None);
    }
    // Errors raised before the server read the id (401, 403, 400 on headers) carry id null.
    if reply.get("id") == Some(&Value::Null) && reply.get("error").is_some() {
        if let Some(id) = id.clone().filter(|_| method.is_some()) {
            reply["id"] = id;
        }
    }
    if method == Some("initialize") {
        let v = reply["result"]["protocolVersion"].as_str();
        remember(
            state,
            HANDSHAKE_VERSIONS.iter().copied().find(|h| Some(*h) == v),
        );
    }
    Some(reply)
}

/// Read newline-delimited messages from stdin, run `handle` on each concurrently, and write each
/// reply as one line on stdout. Returns at end of input once every reply is written.
async fn serve_lines<F, Fut>(handle: F) -> anyhow::Result<()>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Option<Value>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some(v) = rx.recv().await {
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(tokio::io::stdin());
    let mut tasks = JoinSet::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            break;
        }
        if buf.len() as u64 > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            skip_rest_of_line(&mut reader).await?;
            let e = mcp::error_response(
                Value::Null,
                code::PARSE_ERROR,
                "parse error: message larger than 1 MiB",
                None,
            );
            let _ = tx.send(e).await;
            continue;
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let fut = handle(line.to_vec());
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Some(reply) = fut.await {
                let _ = tx.send(reply).await;
            }
        });
        // Reap finished handlers so the set stays small on long sessions.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
    Ok(())
}

async fn skip_rest_of_line(reader: &mut BufReader<tokio::io::Stdin>) -> anyhow::Result<()> {
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        let n = (&mut *reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut chunk)
            .await?;
        if n == 0 || chunk.last() == Some(&b'\n') {
            return Ok(());
        }
    }
}
