//! What each MCP method answers, in the handshake era (`initialize`, `tools/list`,
//! `tools/call`, `ping`) and the stateless 2026-07-28 way (`server/discover`, per-request
//! `_meta`), and how a tool outcome is shaped for each protocol version.

use super::*;

fn server_info() -> Value {
    json!({"name": "vultrino", "title": "Vultrino credential proxy", "version": env!("CARGO_PKG_VERSION")})
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

const INSTRUCTIONS: &str = "Vultrino makes HTTP requests for you with credentials you never see. \
Call list_credentials to learn which credential aliases you may use and the hosts each may reach, \
then http_request with that alias. Secrets are injected by Vultrino and scrubbed from replies.";

/// A request in the handshake era (2025-03-26 … 2025-11-25).
pub(super) async fn handshake(
    host: &dyn ToolHost,
    id: Value,
    method: &str,
    params: &Map<String, Value>,
    ctx: &Context<'_>,
    in_batch: bool,
) -> Answer {
    let ok = |result: Value| Answer {
        response: json!({"jsonrpc": "2.0", "id": id.clone(), "result": result}),
        status: 200,
        negotiated: None,
    };
    let version = ctx.legacy_version();
    match method {
        "initialize" => {
            if in_batch {
                return reject(
                    id,
                    code::INVALID_REQUEST,
                    "invalid request: initialize must not be part of a batch",
                    None,
                    400,
                );
            }
            let Some(asked) = params.get("protocolVersion").and_then(Value::as_str) else {
                return reject(
                    id,
                    code::INVALID_PARAMS,
                    "invalid params: initialize needs protocolVersion (a string)",
                    None,
                    200,
                );
            };
            let chosen = HANDSHAKE_VERSIONS
                .iter()
                .copied()
                .find(|v| *v == asked)
                .unwrap_or(LATEST_HANDSHAKE_VERSION);
            let mut a = ok(json!({
                "protocolVersion": chosen,
                "capabilities": capabilities(),
                "serverInfo": server_info(),
                "instructions": INSTRUCTIONS,
            }));
            a.negotiated = Some(chosen);
            a
        }
        "ping" => ok(json!({})),
        "tools/list" => ok(json!({"tools": tools::definitions(version)})),
        "tools/call" => match call(host, params, version).await {
            Ok(result) => ok(result),
            Err((code, message)) => reject(id, code, &message, None, 200),
        },
        "server/discover" => reject(
            id,
            code::INVALID_PARAMS,
            "invalid params: server/discover needs params._meta with the protocol version",
            None,
            200,
        ),
        other => reject(
            id,
            code::METHOD_NOT_FOUND,
            &format!("method not found: {}", truncate(other)),
            None,
            200,
        ),
    }
}

/// The 2026-07-28 validation ladder, then the method.
pub(super) async fn stateless(
    host: &dyn ToolHost,
    id: Value,
    method: &str,
    params: &Map<String, Value>,
    ctx: &Context<'_>,
) -> Answer {
    let meta = params.get("_meta").and_then(Value::as_object);
    let Some(meta) =
        meta.filter(|m| m.contains_key(META_VERSION) && m.contains_key(META_CAPABILITIES))
    else {
        return reject(
            id,
            code::INVALID_PARAMS,
            "invalid params: params._meta must carry io.modelcontextprotocol/protocolVersion and \
             io.modelcontextprotocol/clientCapabilities",
            None,
            400,
        );
    };
    let requested = meta.get(META_VERSION).unwrap_or(&Value::Null);
    if let Some(h) = ctx.http {
        let mismatch = |what: &str| {
            reject(
                id.clone(),
                code::HEADER_MISMATCH,
                &format!("header mismatch: {what} does not match the request body"),
                None,
                400,
            )
        };
        if h.protocol_version.map(Value::from).as_ref() != Some(requested) {
            return mismatch("MCP-Protocol-Version");
        }
        if h.method != Some(method) {
            return mismatch("Mcp-Method");
        }
        if method == "tools/call" {
            if let Some(name) = params.get("name") {
                if h.name.map(Value::from).as_ref() != Some(name) {
                    return mismatch("Mcp-Name");
                }
            }
        }
    }
    let Some(requested) = requested.as_str() else {
        return reject(
            id,
            code::INVALID_PARAMS,
            "invalid params: the protocol version must be a string",
            None,
            400,
        );
    };
    if requested != STATELESS_VERSION {
        return reject(
            id,
            code::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol version",
            Some(json!({"supported": [STATELESS_VERSION], "requested": requested})),
            400,
        );
    }
    let ok = |mut result: Value| {
        result["resultType"] = json!("complete");
        let mut meta = Map::new();
        meta.insert(META_SERVER_INFO.into(), server_info());
        result["_meta"] = Value::Object(meta);
        Answer {
            response: json!({"jsonrpc": "2.0", "id": id.clone(), "result": result}),
            status: 200,
            negotiated: None,
        }
    };
    match method {
        "server/discover" => ok(json!({
            "supportedVersions": SUPPORTED_VERSIONS,
            "capabilities": capabilities(),
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
            "ttlMs": LIST_TTL_MS,
            "cacheScope": "private",
        })),
        "tools/list" => ok(json!({
            "tools": tools::definitions(STATELESS_VERSION),
            "ttlMs": LIST_TTL_MS,
            "cacheScope": "private",
        })),
        "tools/call" => match call(host, params, STATELESS_VERSION).await {
            Ok(result) => ok(result),
            Err((code, message)) => reject(id, code, &message, None, 400),
        },
        other => reject(
            id,
            code::METHOD_NOT_FOUND,
            &format!(
                "method not found: {} (not part of protocol version {STATELESS_VERSION})",
                truncate(other)
            ),
            None,
            404,
        ),
    }
}

/// `tools/call`: the result object, or a protocol error (unknown tool, missing name).
async fn call(
    host: &dyn ToolHost,
    params: &Map<String, Value>,
    version: &str,
) -> Result<Value, (i64, String)> {
    let name = params.get("name").and_then(Value::as_str).ok_or((
        code::INVALID_PARAMS,
        "invalid params: tools/call needs name (a string)".to_string(),
    ))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err((
                code::INVALID_PARAMS,
                "invalid params: arguments must be an object".into(),
            ))
        }
    };
    let outcome = host.call_tool(name, arguments).await.ok_or_else(|| {
        (
            code::INVALID_PARAMS,
            format!("unknown tool: {}", truncate(name)),
        )
    })?;
    Ok(shape_result(outcome, version))
}

/// A tool outcome as a `CallToolResult` of `version`: always a JSON text block (every version
/// reads it); `structuredContent` from 2025-06-18 on, for successes (an error result need not
/// match the tool's `outputSchema`).
pub fn shape_result(outcome: ToolOutcome, version: &str) -> Value {
    let text = if outcome.is_error {
        let e = &outcome.value["error"];
        format!(
            "Error ({}): {}",
            e["code"].as_str().unwrap_or("error"),
            e["message"].as_str().unwrap_or("the tool failed")
        )
    } else {
        serde_json::to_string_pretty(&outcome.value).unwrap_or_default()
    };
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": outcome.is_error,
    });
    if version != "2025-03-26" && !outcome.is_error {
        result["structuredContent"] = outcome.value;
    }
    result
}
