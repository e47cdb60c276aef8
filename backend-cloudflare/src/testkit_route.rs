//! TEST-ONLY route (feature `testkit`, never in the deployable build): runs the core's
//! conformance suites against [`WorkersKv`], [`DoSessions`] and [`WorkersFetcher`] inside workerd.
//!
//! - `POST /__testkit/kv`, `POST /__testkit/sessions` and `POST /__testkit/audit` (the
//!   [`AuditStore`](vultrino_core::ports::AuditStore) suite against [`DoAuditStore`]) answer `{"ok": true}` or
//!   `{"ok": false, "error": "<check>: <property>"}`.
//! - `GET /__testkit/fetch-suite` answers `{"checks": [<name>, …]}`, the Fetcher suite's checks.
//! - `POST /__testkit/fetch-suite` with `{"base_url", "refused_url", "check"?}` runs that one
//!   check (or, without `check`, the whole suite) against [`WorkersFetcher`], with
//!   [`WorkersClock`] timing the refusals, and answers like the store suites.
//! - `POST /__testkit/rs256` runs the [`Rs256Verifier`](vultrino_core::ports::Rs256Verifier)
//!   suite against [`WebCryptoVerifier`] (WebCrypto in workerd), answering like the store suites.
//! - `GET`/`POST /__testkit/fetch-stream-suite`: the same for the `fetch_stream` checks
//!   (`vultrino_core::testkit::STREAM_CHECKS`, the streaming-only ones included). `base_url` is an
//!   upstream implementing the route table of `vultrino_core::testkit::fetcher`; `refused_url` a
//!   closed port. The suite asks for `allow_loopback` itself (the upstream is on 127.0.0.1).
//!
//! - `POST /__testkit/faults` with `{"seed": "<u64>", "steps": n, "upstream"?: url,
//!   "key_record_reuse_secs"?: s}`: one case
//!   of the fault property (`vultrino_core::testkit::fault_property`, decisions 0107 and 0116)
//!   over [`WorkersKv`] and [`DoSessions`] wrapped in the core's fault wrappers, with the
//!   property's virtual clock and recording upstream — which, given `upstream` (a loopback
//!   server answering 200 `{"ok":true}`), forwards through [`WorkersFetcher`]. Each case starts from empty stores: the KV namespace
//!   is emptied first, and the case's Durable Objects are named under a scope of its own.
//!   Answers `{"ok": true, "steps": n, "ms": t}` or `{"ok": false, "error": "<property>\n steps: …"}`.
//!   Driven by `test/faults.test.mjs`.
//! - `GET /__testkit/counts`: the operations the worker's ports made since the last reset
//!   (`counting`: KV reads, writes, deletes, lists, Durable Object requests per namespace,
//!   upstream subrequests); `POST /__testkit/counts` answers the same and zeroes them.
//! - `POST /__testkit/audit-down` with `{"down": bool}`: every audit-store request fails (an
//!   outage, an exhausted quota) until switched back.
//!
//! Driven by `test/conformance.test.mjs` and `backend-local/tests/worker_costs.rs`.

use std::sync::Arc;

use vultrino_core::ports::{KvStore, ListOptions, ManualClock, SessionStore};
use vultrino_core::testkit::{self, fault_property, FetchUpstream};
use worker::{Env, Method, Request, Response};

use crate::audit_store::DoAuditStore;
use crate::clock::WorkersClock;
use crate::fetch::WorkersFetcher;
use crate::kv::WorkersKv;
use crate::rs256::WebCryptoVerifier;
use crate::sessions::DoSessions;

#[derive(serde::Deserialize)]
struct FetchSuiteRun {
    base_url: String,
    refused_url: String,
    #[serde(default)]
    check: Option<String>,
}

async fn fetch_suite(mut req: Request) -> worker::Result<std::result::Result<(), String>> {
    let run: FetchSuiteRun = req.json().await?;
    let upstream = FetchUpstream {
        base_url: &run.base_url,
        refused_url: &run.refused_url,
    };
    let (fetcher, clock) = (WorkersFetcher, WorkersClock::default());
    Ok(match &run.check {
        Some(name) => testkit::fetcher_check(name, &fetcher, &upstream, &clock).await,
        None => testkit::fetcher_suite(&fetcher, &upstream, &clock).await,
    })
}

async fn fetch_stream_suite(mut req: Request) -> worker::Result<std::result::Result<(), String>> {
    let run: FetchSuiteRun = req.json().await?;
    let upstream = FetchUpstream {
        base_url: &run.base_url,
        refused_url: &run.refused_url,
    };
    let (fetcher, clock) = (WorkersFetcher, WorkersClock::default());
    Ok(match &run.check {
        Some(name) => testkit::fetch_stream_check(name, &fetcher, &upstream, &clock).await,
        None => testkit::fetch_stream_suite(&fetcher, &upstream, &clock).await,
    })
}

#[derive(serde::Deserialize)]
struct FaultCase {
    /// A u64 as text (JSON numbers lose precision past 2^53).
    seed: String,
    steps: usize,
    /// A loopback upstream (`http://127.0.0.1:<port>`) answering 200 `{"ok":true}` to
    /// anything: requests go to it through [`WorkersFetcher`]. Without: the property's
    /// in-process upstream.
    #[serde(default)]
    upstream: Option<String>,
    /// The app's `key_record_reuse_secs` (what `KEY_RECORD_REUSE_SECONDS` sets; default 0:
    /// every key record read).
    #[serde(default)]
    key_record_reuse_secs: u64,
}

/// Delete every key of the namespace (a fault case starts from an empty store).
async fn empty_kv(kv: &WorkersKv) -> std::result::Result<(), String> {
    loop {
        let page = kv
            .list(ListOptions {
                limit: Some(1000),
                ..ListOptions::default()
            })
            .await
            .map_err(|e| format!("emptying KV: {e}"))?;
        if page.keys.is_empty() {
            return Ok(());
        }
        for k in &page.keys {
            kv.delete(&k.name)
                .await
                .map_err(|e| format!("emptying KV: {e}"))?;
        }
    }
}

/// One case of the fault property over the worker's own KV and Durable Object adapters.
// The adapters are not `Send` on wasm32 (one isolate, one thread), yet `Ports` holds `Arc`s.
#[allow(clippy::arc_with_non_send_sync)]
async fn fault_case(mut req: Request, env: &Env) -> worker::Result<Response> {
    let Ok(case) = req.json::<FaultCase>().await else {
        return Response::error("expected {\"seed\": \"<u64>\", \"steps\": n}", 400);
    };
    let Ok(seed) = case.seed.parse::<u64>() else {
        return Response::error("seed: a u64 as text", 400);
    };
    let steps = case.steps.min(500);
    let kv = WorkersKv::new(env.kv("CREDENTIALS")?);
    let started = wall_ms();
    let result = match empty_kv(&kv).await {
        Err(e) => Err(e),
        Ok(()) => {
            let kv: Arc<dyn KvStore> = Arc::new(kv);
            // fresh objects for this case (its own scope of object names)
            let scope = format!("faults/{seed}/{started}/");
            let sessions: Arc<dyn SessionStore> =
                Arc::new(DoSessions::scoped(env.durable_object("SESSIONS")?, scope));
            // Workers KV keeps real time (its TTLs cannot follow the virtual clock).
            let clock = Arc::new(ManualClock::new(fault_property::START_MS));
            let ops = fault_property::ops_from_seed(seed, steps);
            let run = |label| fault_property::Case {
                label,
                seed,
                ops: &ops,
                setup: fault_property::Setup {
                    key_record_reuse_secs: case
                        .key_record_reuse_secs
                        .min(crate::settings::MAX_KEY_RECORD_REUSE_SECS),
                },
            };
            match &case.upstream {
                Some(base_url) => {
                    let upstream = Arc::new(fault_property::Recorder::forwarding(Arc::new(
                        WorkersFetcher,
                    )));
                    fault_property::run_with_upstream(
                        kv,
                        sessions,
                        clock,
                        (upstream, base_url),
                        run("workerd, WorkersFetcher"),
                    )
                    .await
                }
                None => fault_property::run(kv, sessions, clock, run("workerd")).await,
            }
        }
    };
    let ms = wall_ms() - started;
    Response::from_json(&match result {
        Ok(()) => serde_json::json!({"ok": true, "steps": steps, "ms": ms}),
        Err(e) => serde_json::json!({"ok": false, "error": e, "ms": ms}),
    })
}

/// Wall-clock milliseconds (workerd advances it across I/O only).
fn wall_ms() -> u64 {
    worker::Date::now().as_millis()
}

#[derive(serde::Deserialize)]
struct AuditDown {
    down: bool,
}

pub(crate) async fn handle(mut req: Request, env: &Env) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/__testkit/counts") => {
            return Response::from_json(&crate::counting::counts(false));
        }
        (Method::Post, "/__testkit/counts") => {
            return Response::from_json(&crate::counting::counts(true));
        }
        (Method::Post, "/__testkit/audit-down") => {
            let Ok(AuditDown { down }) = req.json::<AuditDown>().await else {
                return Response::error("expected {\"down\": true|false}", 400);
            };
            crate::counting::set_audit_down(down);
            return Response::from_json(&serde_json::json!({"down": down}));
        }
        (Method::Post, "/__testkit/faults") => return fault_case(req, env).await,
        (Method::Get, "/__testkit/fetch-suite") => {
            return Response::from_json(&serde_json::json!({"checks": testkit::FETCHER_CHECKS}));
        }
        (Method::Post, "/__testkit/fetch-suite") => fetch_suite(req).await?,
        (Method::Get, "/__testkit/fetch-stream-suite") => {
            return Response::from_json(&serde_json::json!({"checks": testkit::STREAM_CHECKS}));
        }
        (Method::Post, "/__testkit/fetch-stream-suite") => fetch_stream_suite(req).await?,
        (_, "/__testkit/rs256") => testkit::rs256_suite(&WebCryptoVerifier).await,
        // Workers KV time cannot be moved: only the TTL-expiry step is skipped (see kv_suite).
        (_, "/__testkit/kv") => {
            let store = WorkersKv::new(env.kv("CREDENTIALS")?);
            testkit::kv_suite(&store, None).await
        }
        (_, "/__testkit/audit") => {
            let store = DoAuditStore::new(env.durable_object("AUDIT")?);
            testkit::audit_suite(&store).await
        }
        (_, "/__testkit/sessions") => {
            let store = DoSessions::new(env.durable_object("SESSIONS")?);
            testkit::session_suite(&store).await
        }
        _ => return Response::error("unknown testkit route", 404),
    };
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    Response::from_json(&body)
}
