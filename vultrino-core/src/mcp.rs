//! The MCP server: a transport-agnostic JSON-RPC 2.0 dispatcher shared by every transport
//! (stdio in the local binary, Streamable HTTP at `POST /mcp` on both backends, see
//! [`http`]). It holds no session state: everything a reply depends on is in the message, the
//! transport headers given in [`Context`], or (stdio only) the version the process negotiated.
//!
//! # Protocol versions, as read from each revision
//!
//! - **2025-03-26** — `initialize` / `notifications/initialized` handshake; Streamable HTTP is
//!   introduced; JSON-RPC *batches* MUST be accepted (an `initialize` MUST NOT be inside one);
//!   tool results have `content` and `isError`; tool `annotations` exist.
//! - **2025-06-18** — batching is removed; `structuredContent` and `outputSchema` appear (a tool
//!   that returns structured content SHOULD also return it as serialized JSON text); tools get a
//!   `title`; over HTTP the client MUST send `MCP-Protocol-Version` on every request after
//!   `initialize`, an invalid or unsupported value is 400, and an absent one means 2025-03-26.
//! - **2025-11-25** — same wire shape for what we serve; input-validation failures of a tool call
//!   SHOULD be tool results with `isError: true` (so the model can correct itself), not protocol
//!   errors — we do that for every version. Origin MUST be validated (403 when invalid).
//! - **2026-07-28** (stateless) — no `initialize`, no `ping`, no sessions (`Mcp-Session-Id` is
//!   gone): every request carries `params._meta["io.modelcontextprotocol/protocolVersion"]` and
//!   `["io.modelcontextprotocol/clientCapabilities"]`; `server/discover` returns
//!   `supportedVersions`, capabilities and identity; every result has `resultType: "complete"`,
//!   list/discover results carry cache hints (`ttlMs`, `cacheScope`); over HTTP the
//!   `MCP-Protocol-Version`, `Mcp-Method` and (for `tools/call`) `Mcp-Name` headers must equal the
//!   body (else `-32020` HeaderMismatch, 400); an unknown version is `-32022` with
//!   `data: {supported, requested}` (400); method-not-found is 404.
//!
//! A request is served in the 2026-07-28 way when it carries the `_meta` protocol version (or,
//! over HTTP, `MCP-Protocol-Version: 2026-07-28`); otherwise in the handshake way. `initialize`
//! never negotiates 2026-07-28 (it does not exist there): asked for it, or for any version we do
//! not speak, we answer with 2025-11-25 and the client decides.
//!
//! Tool failures (denied, upstream unreachable, bad arguments) are tool results with
//! `isError: true`; protocol errors are reserved for malformed JSON-RPC, unknown methods or
//! tools, and missing required parameters. No result ever carries a secret: tools return only
//! metadata and the already-scrubbed execute reply.

use serde_json::{json, Map, Value};

use crate::ports::{MaybeSend, MaybeSync};

pub mod elicit;
pub mod http;
mod methods;
pub mod tools;

pub use methods::shape_result;
use methods::{handshake, stateless};

#[cfg(test)]
mod tests;

/// Versions reachable through the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision (per-request `_meta`, `server/discover`).
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Every version we speak, oldest first (the `supportedVersions` of `server/discover`).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];
/// What `initialize` answers when the client asks for a version we do not speak.
pub const LATEST_HANDSHAKE_VERSION: &str = "2025-11-25";
/// The version an HTTP request without `MCP-Protocol-Version` is taken to speak (2025-06-18 §HTTP).
pub const HTTP_DEFAULT_VERSION: &str = "2025-03-26";

/// JSON-RPC 2.0 and MCP error codes.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// 2026-07-28: an HTTP routing header disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request's protocol version is not served here.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// Ours (server-defined range): the API key is missing, invalid, expired or revoked.
    pub const UNAUTHENTICATED: i64 = -32031;
}

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// How long a client may cache `tools/list` and `server/discover` (2026-07-28 `ttlMs`): the tool
/// set changes only with the server's version.
const LIST_TTL_MS: u64 = 5 * 60 * 1000;

/// The result of one tool call, before it is shaped for a protocol version.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The structured result (success) or `{"error": {...}}` (failure).
    pub value: Value,
    pub is_error: bool,
}

/// What runs the tools. The dispatcher knows the protocol; the host knows the tools and who is
/// calling. [`tools::AppTools`] is the real one.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait ToolHost: MaybeSend + MaybeSync {
    /// Run tool `name` with `arguments`.
    ///
    /// # Behavior
    /// - An unknown tool name returns `None` (the dispatcher answers `-32602`).
    /// - Every failure of a known tool, including invalid arguments, is `Some` outcome with
    ///   `is_error: true`; the outcome never contains secret material.
    async fn call_tool(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome>;
}

/// HTTP routing headers of the request, as sent (absent → `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpHeaders<'a> {
    pub protocol_version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// What the dispatcher knows about the transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// stdio: the version the process negotiated with `initialize` (`None` before it).
    pub negotiated: Option<&'a str>,
    /// HTTP: the routing headers (`None` on stdio).
    pub http: Option<HttpHeaders<'a>>,
}

impl Context<'_> {
    /// The handshake-era version in force for a request without `_meta`.
    fn legacy_version(&self) -> &str {
        match &self.http {
            Some(h) => h.protocol_version.unwrap_or(HTTP_DEFAULT_VERSION),
            None => self.negotiated.unwrap_or(LATEST_HANDSHAKE_VERSION),
        }
    }
}

/// The dispatcher's answer to one transport message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The JSON-RPC response (object or batch array); `None` when the message had only
    /// notifications or responses (HTTP answers 202, stdio writes nothing).
    pub body: Option<Value>,
    /// The HTTP status for `body` (200, or 400/404 for rejected messages).
    pub status: u16,
    /// Set when an `initialize` succeeded: the version now in force (stdio keeps it).
    pub negotiated: Option<&'static str>,
}

/// A JSON-RPC error response object.
pub fn error_response(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// One reply inside a message: the response and its HTTP status.
struct Answer {
    response: Value,
    status: u16,
    negotiated: Option<&'static str>,
}

fn reject(id: Value, code: i64, message: &str, data: Option<Value>, status: u16) -> Answer {
    Answer {
        response: error_response(id, code, message, data),
        status,
        negotiated: None,
    }
}

/// Dispatch one transport message (a JSON-RPC object or batch, as raw bytes). Never panics.
pub async fn dispatch(host: &dyn ToolHost, body: &[u8], ctx: &Context<'_>) -> Reply {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Reply {
                body: Some(error_response(
                    Value::Null,
                    code::PARSE_ERROR,
                    "parse error: the message is not valid JSON",
                    None,
                )),
                status: 400,
                negotiated: None,
            }
        }
    };
    match parsed {
        Value::Array(items) => dispatch_batch(host, items, ctx).await,
        single => match dispatch_one(host, single, ctx, false).await {
            None => Reply {
                body: None,
                status: 202,
                negotiated: None,
            },
            Some(a) => Reply {
                body: Some(a.response),
                status: a.status,
                negotiated: a.negotiated,
            },
        },
    }
}

async fn dispatch_batch(host: &dyn ToolHost, items: Vec<Value>, ctx: &Context<'_>) -> Reply {
    let version = ctx.legacy_version();
    let refuse = |message: String| Reply {
        body: Some(error_response(
            Value::Null,
            code::INVALID_REQUEST,
            &message,
            None,
        )),
        status: 400,
        negotiated: None,
    };
    if items.is_empty() {
        return refuse("invalid request: an empty batch".into());
    }
    // Batches exist only in 2025-03-26; 2025-06-18 removed them.
    if version != "2025-03-26" {
        return refuse(format!(
            "invalid request: JSON-RPC batches are not supported in protocol version {}",
            truncate(version)
        ));
    }
    let mut out = Vec::new();
    for item in items {
        if let Some(a) = dispatch_one(host, item, ctx, true).await {
            out.push(a.response);
        }
    }
    Reply {
        status: if out.is_empty() { 202 } else { 200 },
        body: (!out.is_empty()).then_some(Value::Array(out)),
        negotiated: None,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A request id must be a string or an integer (MCP forbids null ids).
fn valid_id(v: &Value) -> bool {
    v.is_string() || v.is_i64() || v.is_u64()
}

async fn dispatch_one(
    host: &dyn ToolHost,
    msg: Value,
    ctx: &Context<'_>,
    in_batch: bool,
) -> Option<Answer> {
    let Value::Object(obj) = msg else {
        return Some(reject(
            Value::Null,
            code::INVALID_REQUEST,
            "invalid request: a JSON-RPC message is an object",
            None,
            400,
        ));
    };
    let id = match obj.get("id") {
        None => None,
        Some(v) if valid_id(v) => Some(v.clone()),
        Some(_) => {
            return Some(reject(
                Value::Null,
                code::INVALID_REQUEST,
                "invalid request: id must be a string or an integer",
                None,
                400,
            ))
        }
    };
    let invalid = |m: &str| {
        Some(reject(
            id.clone().unwrap_or(Value::Null),
            code::INVALID_REQUEST,
            m,
            None,
            400,
        ))
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("invalid request: jsonrpc must be \"2.0\"");
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return invalid("invalid request: method must be a string"),
        // A response to a server request: we send none, so there is nothing to match; ignore.
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            return None
        }
        None => return invalid("invalid request: no method"),
    };
    // Notifications (no id) get no reply, whatever their method.
    let id = id?;
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Some(reject(
                id,
                code::INVALID_PARAMS,
                "invalid params: params must be an object",
                None,
                400,
            ))
        }
    };
    let meta_version = params
        .get("_meta")
        .and_then(Value::as_object)
        .and_then(|m| m.get(META_VERSION));
    let header_stateless = ctx
        .http
        .and_then(|h| h.protocol_version)
        .is_some_and(|v| v == STATELESS_VERSION);
    if method != "initialize" && (meta_version.is_some() || header_stateless) {
        return Some(stateless(host, id, method, &params, ctx).await);
    }
    Some(handshake(host, id, method, &params, ctx, in_batch).await)
}
