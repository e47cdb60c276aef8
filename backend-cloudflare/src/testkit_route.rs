//! TEST-ONLY route (feature `testkit`, never in the deployable build): runs the core's
//! conformance suites against [`WorkersKv`] and [`DoSessions`] inside workerd.
//!
//! `POST /__testkit/kv` and `POST /__testkit/sessions` answer `{"ok": true}` or
//! `{"ok": false, "error": "<check>: <property>"}`. Driven by `test/conformance.test.mjs`.

use worker::{Env, Request, Response};

use crate::kv::WorkersKv;
use crate::sessions::DoSessions;

pub(crate) async fn handle(req: Request, env: &Env) -> worker::Result<Response> {
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
