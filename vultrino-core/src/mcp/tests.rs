//! The dispatcher against a fake tool host: protocol behaviour only (the real tools are driven
//! end to end by the SDK tests in tests/mcp).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Map, Value};

use super::*;
use crate::error::Code;

/// `echo` succeeds with its arguments; `fail` fails like a denied request; others are unknown.
struct Fake;

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl ToolHost for Fake {
    async fn call_tool(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome> {
        match name {
            "echo" => Some(ToolOutcome {
                value: Value::Object(arguments),
                is_error: false,
            }),
            "fail" => Some(tools::failure(
                &crate::Error::forbidden("credential 'x' is outside this key's scopes")
                    .with_code(Code::ScopeDenied),
            )),
            _ => None,
        }
    }
}

fn run(body: &str, ctx: &Context<'_>) -> Reply {
    futures::executor::block_on(dispatch(&Fake, body.as_bytes(), ctx))
}

fn stdio(body: &str) -> Reply {
    run(body, &Context::default())
}

fn negotiated(version: &'static str, body: &str) -> Reply {
    run(
        body,
        &Context {
            negotiated: Some(version),
            http: None,
        },
    )
}

fn http(headers: HttpHeaders<'_>, body: &str) -> Reply {
    run(
        body,
        &Context {
            negotiated: None,
            http: Some(headers),
        },
    )
}

fn error_code(r: &Reply) -> i64 {
    r.body.as_ref().unwrap()["error"]["code"].as_i64().unwrap()
}

fn req(id: u32, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

fn stateless_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

#[test]
fn initialize_echoes_each_supported_handshake_version() {
    for v in HANDSHAKE_VERSIONS {
        let r = stdio(&req(
            1,
            "initialize",
            json!({"protocolVersion": v, "capabilities": {}}),
        ));
        let result = &r.body.as_ref().unwrap()["result"];
        assert_eq!(result["protocolVersion"], v);
        assert_eq!(result["serverInfo"]["name"], "vultrino");
        assert!(result["capabilities"]["tools"].is_object());
        assert_eq!(r.negotiated, Some(v));
    }
}

#[test]
fn initialize_offers_the_latest_handshake_version_for_unknown_or_stateless_requests() {
    for asked in ["2024-11-05", "2026-07-28", "1999-01-01"] {
        let r = stdio(&req(1, "initialize", json!({"protocolVersion": asked})));
        assert_eq!(
            r.body.unwrap()["result"]["protocolVersion"],
            LATEST_HANDSHAKE_VERSION
        );
    }
}

#[test]
fn initialize_without_protocol_version_is_invalid_params() {
    let r = stdio(&req(1, "initialize", json!({})));
    assert_eq!(error_code(&r), code::INVALID_PARAMS);
}

#[test]
fn notifications_and_client_responses_get_no_reply() {
    for body in [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","method":"no/such/notification","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}"#,
    ] {
        let r = stdio(body);
        assert_eq!(r.body, None, "{body}");
        assert_eq!(r.status, 202);
    }
}

#[test]
fn malformed_json_is_a_parse_error_with_null_id() {
    for body in ["{", "", "not json", "{\"jsonrpc\":\"2.0\",\"id\":1,"] {
        let r = stdio(body);
        assert_eq!(error_code(&r), code::PARSE_ERROR);
        assert_eq!(r.body.unwrap()["id"], Value::Null);
        assert_eq!(r.status, 400);
    }
}

#[test]
fn structurally_invalid_messages_are_invalid_requests() {
    for body in [
        "42",
        "\"tools/list\"",
        r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
    ] {
        assert_eq!(error_code(&stdio(body)), code::INVALID_REQUEST, "{body}");
    }
}

#[test]
fn invalid_request_keeps_a_valid_id() {
    let r = stdio(r#"{"jsonrpc":"1.0","id":"abc","method":"ping"}"#);
    assert_eq!(r.body.unwrap()["id"], "abc");
}

#[test]
fn non_object_params_are_invalid_params() {
    let r = stdio(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}"#);
    assert_eq!(error_code(&r), code::INVALID_PARAMS);
}

#[test]
fn unknown_method_is_method_not_found() {
    let r = stdio(&req(3, "resources/list", json!({})));
    assert_eq!(error_code(&r), code::METHOD_NOT_FOUND);
    assert_eq!(r.body.unwrap()["id"], 3);
}

#[test]
fn ping_answers_an_empty_result() {
    let r = stdio(&req(1, "ping", json!({})));
    assert_eq!(r.body.unwrap()["result"], json!({}));
}

#[test]
fn tools_list_names_the_tools_with_object_schemas() {
    let r = stdio(&req(1, "tools/list", json!({})));
    let tools = r.body.unwrap()["result"]["tools"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "list_credentials",
            "get_credential_info",
            "http_request",
            "approval_status"
        ]
    );
    for t in &tools {
        assert_eq!(t["inputSchema"]["type"], "object");
        assert!(t["description"].as_str().unwrap().len() > 20);
    }
    let http = &tools[2]["inputSchema"];
    assert_eq!(http["required"], json!(["credential", "url"]));
}

#[test]
fn tools_for_2025_03_26_have_no_title_or_output_schema() {
    let r = negotiated("2025-03-26", &req(1, "tools/list", json!({})));
    for t in r.body.unwrap()["result"]["tools"].as_array().unwrap() {
        assert!(t.get("outputSchema").is_none() && t.get("title").is_none());
    }
}

#[test]
fn a_tool_failure_is_a_result_with_is_error_not_a_protocol_error() {
    let r = stdio(&req(
        1,
        "tools/call",
        json!({"name": "fail", "arguments": {}}),
    ));
    let body = r.body.unwrap();
    assert!(body.get("error").is_none());
    assert_eq!(body["result"]["isError"], true);
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("scope_denied"), "{text}");
}

#[test]
fn structured_content_is_given_from_2025_06_18_on() {
    let call = req(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"a": 1}}),
    );
    let old = negotiated("2025-03-26", &call).body.unwrap();
    assert!(old["result"].get("structuredContent").is_none());
    let text = old["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"a": 1})
    );
    let new = negotiated("2025-06-18", &call).body.unwrap();
    assert_eq!(new["result"]["structuredContent"], json!({"a": 1}));
    assert_eq!(new["result"]["isError"], false);
}

#[test]
fn unknown_tool_and_missing_name_are_invalid_params() {
    for params in [
        json!({"name": "nope"}),
        json!({"arguments": {}}),
        json!({"name": "echo", "arguments": [1]}),
    ] {
        let r = stdio(&req(1, "tools/call", params.clone()));
        assert_eq!(error_code(&r), code::INVALID_PARAMS, "{params}");
    }
}

#[test]
fn batches_are_served_only_under_2025_03_26() {
    let batch = format!(
        "[{},{},{}]",
        req(1, "ping", json!({})),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        req(2, "tools/list", json!({}))
    );
    let r = negotiated("2025-03-26", &batch);
    let replies = r.body.unwrap();
    assert_eq!(replies.as_array().unwrap().len(), 2);
    // HTTP without MCP-Protocol-Version means 2025-03-26.
    let r = http(HttpHeaders::default(), &batch);
    assert_eq!(r.body.unwrap().as_array().unwrap().len(), 2);
    for v in ["2025-06-18", "2025-11-25"] {
        let r = negotiated(v, &batch);
        assert_eq!(error_code(&r), code::INVALID_REQUEST);
        assert_eq!(r.status, 400);
    }
}

#[test]
fn batch_edge_cases() {
    assert_eq!(
        error_code(&negotiated("2025-03-26", "[]")),
        code::INVALID_REQUEST
    );
    let only_notes = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    assert_eq!(negotiated("2025-03-26", only_notes).status, 202);
    let with_init = format!(
        "[{}]",
        req(1, "initialize", json!({"protocolVersion": "2025-03-26"}))
    );
    let r = negotiated("2025-03-26", &with_init).body.unwrap();
    assert_eq!(r[0]["error"]["code"], code::INVALID_REQUEST);
}

#[test]
fn discover_lists_every_supported_version_with_result_type() {
    let r = stdio(&req(
        1,
        "server/discover",
        json!({"_meta": stateless_meta()}),
    ));
    let result = r.body.unwrap()["result"].clone();
    assert_eq!(result["supportedVersions"], json!(SUPPORTED_VERSIONS));
    assert_eq!(result["resultType"], "complete");
    assert!(result["ttlMs"].as_u64().is_some());
    assert_eq!(result["_meta"][META_SERVER_INFO]["name"], "vultrino");
}

#[test]
fn stateless_tools_call_carries_result_type_and_structured_content() {
    let params = json!({"name": "echo", "arguments": {"x": "y"}, "_meta": stateless_meta()});
    let result = stdio(&req(1, "tools/call", params)).body.unwrap()["result"].clone();
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["structuredContent"], json!({"x": "y"}));
}

#[test]
fn stateless_request_without_capabilities_is_invalid_params_400() {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    let r = stdio(&req(1, "tools/list", json!({"_meta": meta})));
    assert_eq!(error_code(&r), code::INVALID_PARAMS);
    assert_eq!(r.status, 400);
}

#[test]
fn stateless_request_for_an_unknown_version_names_the_supported_one() {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let r = stdio(&req(1, "tools/list", json!({"_meta": meta})));
    assert_eq!(error_code(&r), code::UNSUPPORTED_PROTOCOL_VERSION);
    let data = r.body.unwrap()["error"]["data"].clone();
    assert_eq!(
        data,
        json!({"supported": ["2026-07-28"], "requested": "2099-01-01"})
    );
}

#[test]
fn stateless_ping_and_initialize_like_methods_are_not_found_404() {
    let r = stdio(&req(1, "ping", json!({"_meta": stateless_meta()})));
    assert_eq!(error_code(&r), code::METHOD_NOT_FOUND);
    assert_eq!(r.status, 404);
}

#[test]
fn stateless_http_headers_must_match_the_body() {
    let call = req(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {}, "_meta": stateless_meta()}),
    );
    let good = HttpHeaders {
        protocol_version: Some("2026-07-28"),
        method: Some("tools/call"),
        name: Some("echo"),
    };
    assert_eq!(http(good, &call).status, 200);
    for bad in [
        HttpHeaders {
            protocol_version: None,
            ..good
        },
        HttpHeaders {
            method: Some("tools/list"),
            ..good
        },
        HttpHeaders {
            name: Some("other"),
            ..good
        },
    ] {
        let r = http(bad, &call);
        assert_eq!(error_code(&r), code::HEADER_MISMATCH);
        assert_eq!(r.status, 400);
    }
}

#[test]
fn stateless_header_without_meta_is_invalid_params() {
    let h = HttpHeaders {
        protocol_version: Some("2026-07-28"),
        method: Some("tools/list"),
        name: None,
    };
    let r = http(h, &req(1, "tools/list", json!({})));
    assert_eq!(error_code(&r), code::INVALID_PARAMS);
}

#[test]
fn discover_without_meta_is_invalid_params() {
    let r = stdio(&req(1, "server/discover", json!({})));
    assert_eq!(error_code(&r), code::INVALID_PARAMS);
}
