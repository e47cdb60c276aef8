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
//! Two modes ([decision 0059](../../docs/decisions/0059-mcp-forwards-by-default.md)):
//! - **forward** (the default): POST each message to `URL/mcp`, where URL is `--server` /
//!   `VULTRINO_SERVER`, else [`DEFAULT_SERVER`] (`vultrino serve`'s default address), with
//!   `Authorization: Bearer <key>`, and copy the reply to stdout. This process holds no master
//!   key and opens no store: the server (ideally running as another OS user, see
//!   docs/security.md) authenticates every request; a 401 becomes a JSON-RPC error for that
//!   request. The URL must be https, or http to a loopback address, like `vultrino sync --from`
//!   ([`crate::edge_sync::token_may_travel_to`]): the key travels with every message. At start,
//!   a server that does not answer at all stops the command with a message naming both fixes
//!   (start the server or point at it; or `--direct`).
//! - **direct** (`--direct`, an explicit opt-in): open the data directory's file store in this
//!   process. Weaker: the master key is loaded into the process the agent host starts, and the
//!   data directory must be readable by the agent's OS user. The key is checked once at start (a
//!   bad key exits non-zero with a message on stderr, before any output) and again on every tool
//!   call, so a key revoked or expired mid-session stops working at once.
//!
//! # Approval by elicitation (`--direct --approve-by-elicitation`)
//! [Decision 0102](../../docs/decisions/0102-approval-by-mcp-elicitation.md): when the operator
//! gave the flag and the client declared form-mode `elicitation` at `initialize`, an
//! `http_request` that makes an approval (handshake-era calls, no `approval_id` argument) asks
//! the client's user with `elicitation/create` ([`vultrino_core::mcp::elicit`]) and waits for
//! the answer, at most until the approval expires, while the loop keeps reading (replies to
//! this process's requests are routed to the waiting call by [`Peer`]). Yes → the approval is
//! approved as `mcp-client:<name> key:<id>` and the request sent again with its id, so it runs
//! once through the gate like any re-send; no → denied; dismissed → left pending; no answer
//! before the expiry → denied. Without the flag or the capability, the pending result of
//! decision 0094, unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use vultrino_core::app::App;
use vultrino_core::auth::Principal;
use vultrino_core::mcp::elicit::{self, Answer};
use vultrino_core::mcp::{self, code, Context, ToolHost, ToolOutcome, HANDSHAKE_VERSIONS};
use zeroize::Zeroizing;

/// Largest message accepted on stdin (the HTTP API's default body limit).
pub const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// The server `vultrino mcp` forwards to when neither `--server` nor `VULTRINO_SERVER` is given:
/// the address `vultrino serve` listens on by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7879";

/// How long the start-up check waits for the server to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The API key from `VULTRINO_API_KEY`, or a message saying how to set it.
pub fn api_key_from_env() -> anyhow::Result<Zeroizing<String>> {
    let key = std::env::var("VULTRINO_API_KEY")
        .ok()
        .map(|k| Zeroizing::new(k.trim().to_string()))
        .filter(|k| !k.is_empty());
    match key {
        Some(k) if k.starts_with("vk_") || k.starts_with("vt_") => Ok(k),
        Some(_) => anyhow::bail!(
            "VULTRINO_API_KEY is not a Vultrino API key (they start with vk_; create one with `vultrino key create`) nor an agent token (vt_; `vultrino token mint`)"
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

/// What the client declared at `initialize` (direct mode, with `--approve-by-elicitation`).
#[derive(Debug, Clone, Default)]
struct ClientInfo {
    form_elicitation: bool,
    name: Option<String>,
}

/// The client's declarations, if `msg` is an `initialize` request.
fn initialize_info(msg: &Value) -> Option<ClientInfo> {
    (msg["method"] == "initialize").then(|| ClientInfo {
        form_elicitation: elicit::supports_form(&msg["params"]["capabilities"]),
        name: msg["params"]["clientInfo"]["name"]
            .as_str()
            .map(str::to_string),
    })
}

/// Serve stdio against the store opened in this process (`--direct`). With `elicitation`
/// (`--approve-by-elicitation`), a client that declared form elicitation is asked to approve
/// the requests that need it (see the module doc).
pub async fn direct(
    app: Arc<App>,
    key: Zeroizing<String>,
    elicitation: bool,
) -> anyhow::Result<()> {
    app.api_keys()
        .authenticate(&key)
        .await
        .map_err(|e| anyhow::anyhow!("VULTRINO_API_KEY was refused: {e}"))?;
    tracing::warn!(
        "MCP over stdio with --direct: the master key is loaded into this process (the agent \
         host's); forwarding to a server running as another user keeps it out (docs/security.md)"
    );
    if elicitation {
        tracing::warn!(
            "--approve-by-elicitation: the MCP client's user approves requests in the agent host; \
             an agent host that accepts prompts without a person makes approval meaningless \
             (docs/decisions/0102-approval-by-mcp-elicitation.md)"
        );
    }
    let key = Arc::new(key);
    let state = Negotiated::default();
    let client = Arc::new(Mutex::new(ClientInfo::default()));
    serve_lines(move |line, peer| {
        let (app, key, state, client) = (app.clone(), key.clone(), state.clone(), client.clone());
        async move {
            let msg: Value = serde_json::from_slice(&line).unwrap_or_default();
            if let (true, Some(info), Ok(mut g)) =
                (elicitation, initialize_info(&msg), client.lock())
            {
                *g = info;
            }
            let version = negotiated(&state);
            // A stateless (2026-07-28) request carries its version in `_meta`; elicitation there
            // is another mechanism (input-required results), not built: such calls get 0094's
            // pending result.
            let stateless = msg["params"]["_meta"]
                .get("io.modelcontextprotocol/protocolVersion")
                .is_some();
            let info = client.lock().map(|g| g.clone()).unwrap_or_default();
            let asker = (elicitation && info.form_elicitation && !stateless).then_some(Asker {
                peer: &peer,
                client_name: info.name.as_deref(),
                version,
            });
            let host = KeyTools {
                app: &app,
                key: &key,
                asker,
            };
            let ctx = Context {
                negotiated: version,
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
    /// Set when requests that need an approval are put to the client's user.
    asker: Option<Asker<'a>>,
}

/// How to ask the client's user.
struct Asker<'a> {
    peer: &'a Peer,
    client_name: Option<&'a str>,
    version: Option<&'a str>,
}

impl KeyTools<'_> {
    async fn run(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome> {
        let who: Principal = match self.app.api_keys().authenticate(self.key).await {
            Ok(p) => p,
            Err(e) => return Some(mcp::tools::failure(&e)),
        };
        mcp::tools::AppTools {
            app: self.app,
            who: &who,
            // In-process: the call ends with this process's reply loop; nothing outlives it.
            background: None,
        }
        .call_tool(name, arguments)
        .await
    }

    /// Put the approval `id` that the call `arguments` made to the client's user, decide it by
    /// the answer, and send the call again with the id: approved, it runs (once, through the
    /// gate); denied, the result is the refusal; dismissed, the pending `outcome` is returned.
    async fn confirm(
        &self,
        asker: &Asker<'_>,
        id: &str,
        mut arguments: Map<String, Value>,
        outcome: ToolOutcome,
    ) -> ToolOutcome {
        let who = match self.app.api_keys().authenticate(self.key).await {
            Ok(p) => p,
            Err(e) => return mcp::tools::failure(&e),
        };
        let Ok(approval) = self.app.approval_for(&who, id).await else {
            return outcome;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let wait = Duration::from_millis(approval.expires_at.saturating_sub(now));
        let params = elicit::request_params(&approval, asker.version);
        let actor = elicit::client_actor(asker.client_name, &who.actor());
        let decision = match asker.peer.request(elicit::METHOD, params, wait).await {
            Some(reply) => match elicit::answer(&reply) {
                Answer::Approve => Some((true, actor, None)),
                Answer::Deny => Some((false, actor, Some("declined in the MCP client"))),
                Answer::Dismissed => None,
            },
            None => Some((
                false,
                "vultrino".to_string(),
                Some("no answer in the MCP client before the approval expired"),
            )),
        };
        let Some((approve, by, note)) = decision else {
            return dismissed(outcome);
        };
        if let Err(e) = self
            .app
            .decide_approval_as(id, approve, &by, note.map(str::to_string))
            .await
        {
            // Decided or expired meanwhile: the re-send says where it stands.
            tracing::debug!(error = %e, "the approval was not pending any more");
        }
        arguments.insert("approval_id".into(), Value::String(id.to_string()));
        self.run(mcp::tools::HTTP_REQUEST, arguments)
            .await
            .unwrap_or(outcome)
    }
}

/// The pending result, saying that the prompt was dismissed.
fn dismissed(mut outcome: ToolOutcome) -> ToolOutcome {
    if let Some(next) = outcome.value["approval"]["next"].as_str() {
        outcome.value["approval"]["next"] = Value::String(format!(
            "The person closed the confirmation prompt without deciding. {next}"
        ));
    }
    outcome
}

#[async_trait::async_trait]
impl ToolHost for KeyTools<'_> {
    async fn call_tool(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome> {
        let asker = match &self.asker {
            Some(a)
                if name == mcp::tools::HTTP_REQUEST && !arguments.contains_key("approval_id") =>
            {
                a
            }
            _ => return self.run(name, arguments).await,
        };
        let outcome = self.run(name, arguments.clone()).await?;
        let Some(id) = elicit::pending_approval_id(&outcome).map(str::to_string) else {
            return Some(outcome);
        };
        Some(self.confirm(asker, &id, arguments, outcome).await)
    }
}

/// This process's requests to the client (`elicitation/create`) and the replies they wait for.
/// Replies arrive on stdin among the client's own messages; the read loop hands each to
/// [`Peer::take_reply`] before dispatching anything.
pub struct Peer {
    out: mpsc::Sender<Value>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next: AtomicU64,
}

/// The prefix of the ids of this process's requests.
const REQUEST_ID_PREFIX: &str = "vultrino-";

impl Peer {
    fn new(out: mpsc::Sender<Value>) -> Peer {
        Peer {
            out,
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Send the request `method` and wait up to `timeout` for the client's reply (a `result` or
    /// an `error`). `None` when it does not come in time (then the request is cancelled with
    /// `notifications/cancelled`) or the output is gone.
    async fn request(&self, method: &str, params: Value, timeout: Duration) -> Option<Value> {
        let id = format!(
            "{REQUEST_ID_PREFIX}{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().ok()?.insert(id.clone(), tx);
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if self.out.send(msg).await.is_err() {
            self.forget(&id);
            return None;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Some(reply),
            _ => {
                self.forget(&id);
                let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": id, "reason": "no answer before the approval expired"}});
                let _ = self.out.send(cancel).await;
                None
            }
        }
    }

    /// Drop every waiting request (end of input): their calls stop waiting at once.
    fn close(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.clear();
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(id);
        }
    }

    /// Whether `msg` is the reply to a request of this process; if so it is handed to the call
    /// waiting for it. Replies to unknown ids are dropped (a late reply after a timeout).
    fn take_reply(&self, msg: &Value) -> bool {
        let is_reply = msg.get("method").is_none()
            && (msg.get("result").is_some() || msg.get("error").is_some());
        let Some(id) = msg["id"]
            .as_str()
            .filter(|id| id.starts_with(REQUEST_ID_PREFIX))
        else {
            return false;
        };
        if !is_reply {
            return false;
        }
        let waiter = self.waiting.lock().ok().and_then(|mut w| w.remove(id));
        if let Some(tx) = waiter {
            let _ = tx.send(msg.clone());
        }
        true
    }
}

/// The base URL of the server at `server`, without a trailing slash (`/mcp` and `/healthz` are
/// appended to it). Refuses what is not an http(s) base URL, and plain http to anything but a
/// loopback address: the agent's key (or, for the management CLI, the admin's session token)
/// travels with every message.
pub fn server_base(server: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(server.trim())
        .map_err(|e| anyhow::anyhow!("--server {server}: not a URL ({e})"))?;
    if !crate::edge_sync::token_may_travel_to(&url) {
        anyhow::bail!(
            "--server must be an https:// URL (http:// only for 127.0.0.1/localhost): an API key \
             or session token travels with every request"
        );
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        anyhow::bail!("--server is the server's base URL, e.g. {DEFAULT_SERVER}");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// What to do when no server answers, for the messages of both the start-up check and a
/// request made after the server went away.
fn no_server_hint(base: &str) -> String {
    format!(
        "no Vultrino server answers at {base}. Either start it (`vultrino serve`, or its service) \
         or give its URL with --server / VULTRINO_SERVER; or run `vultrino mcp --direct` to open \
         the data directory's store in this process instead (weaker: the master key is then \
         loaded into the agent host's process)"
    )
}

/// Serve stdio by forwarding every message to `server`'s `/mcp`.
pub async fn forward(server: &str, key: Zeroizing<String>) -> anyhow::Result<()> {
    let base = server_base(server)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // One look before serving: an agent host shows a command that exits with a message; it
    // would only show a silent server whose every tool call fails.
    let probe = client
        .get(format!("{base}/healthz"))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    match probe {
        Err(e) => {
            // The innermost cause ("Connection refused", a timeout) says the most.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            anyhow::bail!("{} ({cause})", no_server_hint(&base));
        }
        Ok(r) if !r.status().is_success() => {
            tracing::warn!(status = %r.status(), "the server at {base} answered its health check with an error");
        }
        Ok(_) => {}
    }
    let endpoint = format!("{base}/mcp");
    tracing::info!(%endpoint, "MCP over stdio, forwarding to a running server");
    let key = Arc::new(key);
    let state = Negotiated::default();
    let base = Arc::new(base);
    serve_lines(move |line, _peer| {
        let (client, endpoint, key, state, base) = (
            client.clone(),
            endpoint.clone(),
            key.clone(),
            state.clone(),
            base.clone(),
        );
        async move { forward_one(&client, &endpoint, &base, &key, &state, &line).await }
    })
    .await
}

async fn forward_one(
    client: &reqwest::Client,
    endpoint: &str,
    base: &str,
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
            return request_error(code::INTERNAL_ERROR, no_server_hint(base), None);
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
/// Each handler gets the [`Peer`], through which it may send requests to the client; replies to
/// them are routed to it, never dispatched.
async fn serve_lines<F, Fut>(handle: F) -> anyhow::Result<()>
where
    F: Fn(Vec<u8>, Arc<Peer>) -> Fut,
    Fut: std::future::Future<Output = Option<Value>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    let peer = Arc::new(Peer::new(tx.clone()));
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
        if line.starts_with(b"{") {
            if let Ok(msg) = serde_json::from_slice::<Value>(line) {
                if peer.take_reply(&msg) {
                    continue;
                }
            }
        }
        let fut = handle(line.to_vec(), peer.clone());
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Some(reply) = fut.await {
                let _ = tx.send(reply).await;
            }
        });
        // Reap finished handlers so the set stays small on long sessions.
        while tasks.try_join_next().is_some() {}
    }
    // The client is gone: no reply will come to a request still waiting.
    peer.close();
    while tasks.join_next().await.is_some() {}
    drop(peer);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_is_https_or_loopback_http() {
        for ok in [
            "http://127.0.0.1:7879",
            "http://127.8.9.10:1/",
            "http://[::1]:7879",
            "http://localhost:7879",
            "https://vultrino.example.com",
            "https://vultrino.example.workers.dev/prefix/",
        ] {
            assert!(server_base(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://vultrino.example.com",
            "http://192.168.1.20:7879",
            "http://10.0.0.1",
            "http://[fe80::1]:7879",
            "ftp://127.0.0.1",
            "127.0.0.1:7879",
            "https://user:pw@vultrino.example.com",
            // Review of issue 18: userinfo of any kind (a password alone too), look-alikes of
            // loopback names, a loopback address as userinfo.
            "https://:pw@vultrino.example.com",
            "http://:pw@127.0.0.1:7879",
            "http://localhost.evil.example:7879",
            "http://127.0.0.1.nip.io:7879",
            "http://127.0.0.1@evil.example:7879",
            "http://localhost@evil.example",
            "http://[::ffff:c0a8:1]:7879",
            "https://vultrino.example.com/?a=b",
            "not a url",
        ] {
            assert!(server_base(refused).is_err(), "{refused}");
        }
    }

    #[tokio::test]
    async fn a_reply_reaches_the_call_waiting_for_it_and_a_client_request_is_never_taken() {
        let (tx, mut rx) = mpsc::channel(8);
        let peer = Arc::new(Peer::new(tx));
        let asking = {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.request("elicitation/create", json!({}), Duration::from_secs(30))
                    .await
            })
        };
        let sent = rx.recv().await.unwrap_or_default();
        let id = sent["id"].as_str().unwrap_or_default().to_string();
        assert!(id.starts_with(REQUEST_ID_PREFIX), "{sent}");
        // A request of the client's own, even with an id like ours, goes to the dispatcher.
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
        assert!(!peer.take_reply(&request));
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "decline"}});
        assert!(peer.take_reply(&reply));
        assert_eq!(asking.await.ok().flatten(), Some(reply.clone()));
        // A late or unknown reply to our id space is dropped, never dispatched.
        assert!(peer.take_reply(&reply));
        assert!(!peer.take_reply(&json!({"jsonrpc": "2.0", "id": 7, "result": {}})));
    }

    #[test]
    fn the_base_has_no_trailing_slash() {
        assert_eq!(
            server_base("https://v.example.com/prefix/").ok().as_deref(),
            Some("https://v.example.com/prefix")
        );
        assert_eq!(
            server_base("http://127.0.0.1:7879/").ok().as_deref(),
            Some("http://127.0.0.1:7879")
        );
    }
}
