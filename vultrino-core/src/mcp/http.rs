//! The Streamable HTTP transport at `POST /mcp`, served by the core router so the local server
//! and the worker get the same endpoint.
//!
//! # Decisions
//! - **JSON only, no SSE.** Every request is answered with one `application/json` body (the
//!   spec lets the server choose); nothing is ever pushed, so `GET` (the optional server→client
//!   stream, removed in 2026-07-28) and `DELETE` (session end) are 405 with `Allow: POST`.
//! - **No sessions.** No `Mcp-Session-Id` is issued (issuing one is optional before 2026-07-28,
//!   and the header is gone after it); one sent by a client is ignored. Nothing is kept between
//!   requests, so any instance (any Workers isolate) can answer any request. A handshake-era
//!   client learns its negotiated version from `initialize` and repeats it in
//!   `MCP-Protocol-Version`, which is all the state the protocol needs.
//! - **Authentication** is per request: `Authorization: Bearer vk_…` (an agent API key; admin
//!   sessions and cookies are refused here: a cookie would make `/mcp` a CSRF target). Missing or
//!   invalid → 401 with `WWW-Authenticate: Bearer` and a JSON-RPC error body.
//! - **Origin**: absent is allowed (agents are not browsers); present, it must be one of the
//!   configured CORS origins, else 403 — same-origin is deliberately *not* enough, because a
//!   DNS-rebinding page is same-origin with a server on 127.0.0.1.
//! - **`MCP-Protocol-Version`**: absent means 2025-03-26; a value we do not speak is 400 with
//!   `-32022` and the supported list; for 2026-07-28 requests it (and `Mcp-Method`, `Mcp-Name`)
//!   must equal the body. A routing header given twice is 400.
//! - Statuses: 202 (only notifications/responses), 200, 400 (malformed, unsupported version,
//!   header mismatch, and every 2026-07-28 invalid-params), 404 (2026-07-28 unknown method),
//!   401/403/405/406/413/415.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{code, dispatch, error_response, Context, HttpHeaders, SUPPORTED_VERSIONS};
use crate::app::App;
use crate::cors;
use crate::error::{Error, ErrorKind};
use crate::ports::Background;

/// A JSON-RPC error outside any request (`id: null`) with an HTTP status.
fn rpc_error(status: StatusCode, code: i64, message: &str, data: Option<Value>) -> Response<Bytes> {
    json_reply(status, &error_response(Value::Null, code, message, data))
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Bytes::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A header that must appear at most once, as text: `Err` when repeated or not visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> std::result::Result<Option<&'a str>, ()> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(());
    }
    first.map(|v| v.to_str().map_err(|_| ())).transpose()
}

fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Serve `/mcp`. Never panics; every refusal is a JSON-RPC error body.
pub(crate) async fn serve(
    app: &App,
    req: &Request<Bytes>,
    background: Option<Arc<dyn Background>>,
) -> Response<Bytes> {
    if req.method() != Method::POST {
        let mut r = rpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "method not allowed: this MCP endpoint takes POST only (no SSE stream, no sessions)",
            None,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| cors::allows(&app.config().cors_origins, o));
        if !allowed {
            return rpc_error(
                StatusCode::FORBIDDEN,
                code::INVALID_REQUEST,
                "forbidden: this Origin is not allowed (configure it as a CORS origin)",
                None,
            );
        }
    }
    let who = match app.authenticator().agent(h).await {
        Ok(p) => p.with_access(req.extensions().get::<crate::auth::AccessIdentity>()),
        Err(e) => return auth_failure(&e),
    };
    if let Some(ct) = h.get(header::CONTENT_TYPE) {
        if ct.to_str().map(media_type).ok().as_deref() != Some("application/json") {
            return rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::INVALID_REQUEST,
                "unsupported media type: send Content-Type: application/json",
                None,
            );
        }
    }
    if let Some(accept) = h.get(header::ACCEPT) {
        let ok = accept.to_str().is_ok_and(|a| {
            a.split(',')
                .map(media_type)
                .any(|m| m == "application/json" || m == "application/*" || m == "*/*")
        });
        if !ok {
            return rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                code::INVALID_REQUEST,
                "not acceptable: replies are application/json",
                None,
            );
        }
    }
    let (Ok(version), Ok(method), Ok(name)) = (
        single(h, "mcp-protocol-version"),
        single(h, "mcp-method"),
        single(h, "mcp-name"),
    ) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "bad request: MCP-Protocol-Version, Mcp-Method and Mcp-Name may each appear once",
            None,
        );
    };
    if let Some(v) = version.filter(|v| !SUPPORTED_VERSIONS.contains(v)) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            code::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol version (MCP-Protocol-Version)",
            Some(
                json!({"supported": SUPPORTED_VERSIONS, "requested": v.chars().take(64).collect::<String>()}),
            ),
        );
    }
    let ctx = Context {
        negotiated: None,
        http: Some(HttpHeaders {
            protocol_version: version,
            method,
            name,
        }),
    };
    let host = super::tools::AppTools {
        app,
        who: &who,
        background,
    };
    let reply = dispatch(&host, req.body(), &ctx).await;
    match reply.body {
        None => {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
        Some(body) => json_reply(
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
            &body,
        ),
    }
}

/// 401 (with `WWW-Authenticate`) or the error's own status, as a JSON-RPC error.
fn auth_failure(e: &Error) -> Response<Bytes> {
    let message = if e.kind() == ErrorKind::Internal {
        "internal error"
    } else {
        e.message()
    };
    let rpc_code = if e.kind() == ErrorKind::Unauthorized {
        code::UNAUTHENTICATED
    } else {
        code::INTERNAL_ERROR
    };
    let mut r = rpc_error(
        e.status(),
        rpc_code,
        message,
        Some(json!({"code": e.code()})),
    );
    if e.kind() == ErrorKind::Unauthorized {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"vultrino\""),
        );
    }
    r
}
