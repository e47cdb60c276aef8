//! TEST-ONLY route (feature `testkit`, never in the deployable build): runs the core's
//! conformance suites against [`WorkersKv`] and [`DoSessions`] inside workerd.
//!
//! `POST /__testkit/kv` and `POST /__testkit/sessions` answer `{"ok": true}` or
//! `{"ok": false, "error": "<check>: <property>"}`. `POST /__testkit/fetch` with
//! `{url, timeout_ms, max_response_bytes}` sends one GET through [`WorkersFetcher`] and answers
//! `{status, location, body_len}` or `{error: {kind, code}}`, so the Fetcher contract (manual
//! redirects, timeout, size cap, typed errors) is checked in workerd. Driven by
//! `test/conformance.test.mjs`.

use bytes::Bytes;
use vultrino_core::ports::{FetchOptions, Fetcher};
use worker::{Env, Request, Response};

use crate::fetch::WorkersFetcher;
use crate::kv::WorkersKv;
use crate::sessions::DoSessions;

#[derive(serde::Deserialize)]
struct FetchCase {
    url: String,
    timeout_ms: u64,
    max_response_bytes: usize,
}

async fn fetch_case(mut req: Request) -> worker::Result<Response> {
    let case: FetchCase = req.json().await?;
    let request = http::Request::get(case.url.as_str())
        .body(Bytes::new())
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let options = FetchOptions {
        timeout_ms: case.timeout_ms,
        max_response_bytes: case.max_response_bytes,
        allow_loopback: true,
    };
    let body = match WorkersFetcher.fetch(request, options).await {
        Ok(r) => serde_json::json!({
            "status": r.status().as_u16(),
            "location": r.headers().get("location").and_then(|v| v.to_str().ok()),
            "body_len": r.body().len(),
        }),
        Err(e) => {
            serde_json::json!({"error": {"kind": format!("{:?}", e.kind()), "code": e.code()}})
        }
    };
    Response::from_json(&body)
}

pub(crate) async fn handle(req: Request, env: &Env) -> worker::Result<Response> {
    if req.path() == "/__testkit/fetch" {
        return fetch_case(req).await;
    }
    let result = match req.path().as_str() {
        // Workers KV time cannot be moved: only the TTL-expiry step is skipped (see kv_suite).
        "/__testkit/kv" => {
            let store = WorkersKv::new(env.kv("CREDENTIALS")?);
            vultrino_core::testkit::kv_suite(&store, None).await
        }
        "/__testkit/sessions" => {
            let store = DoSessions::new(env.durable_object("SESSIONS")?);
            vultrino_core::testkit::session_suite(&store).await
        }
        _ => return Response::error("unknown testkit route", 404),
    };
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    Response::from_json(&body)
}
