//! Strict audit (`Config::audit_required`, the worker's `AUDIT_REQUIRED`; decision 0109) and
//! refusals of the pass-through proxy (review of 2026-12-06, audit M1): a proxy request refused
//! before its credential is used leaves no `started` row behind — such a row means "the final
//! write was lost after the credential was used" — and a flood of refusals stays within the
//! refusal write budget, as without strict audit. Over the memory stores.

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::Arc;

use bytes::Bytes;
use memory_app::{operator, CountingFetch};
use serde_json::json;
use vultrino_core::app::Config;
use vultrino_core::body::Body;
use vultrino_core::ports::{KvStore, ListOptions, ManualClock};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

async fn audit_rows(kv: &MemoryKv) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv
            .list(ListOptions {
                prefix: Some("audit:".into()),
                cursor: cursor.take(),
                limit: Some(1000),
            })
            .await
            .unwrap();
        for k in &page.keys {
            if let Some(v) = kv.get(&k.name).await.unwrap() {
                out.push(serde_json::from_slice(&v).unwrap());
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn refused_proxy_requests_leave_no_started_event_and_stay_within_the_budget() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let fetcher = Arc::new(CountingFetch::default());
    let ports = memory_app::ports(
        kv.clone(),
        Arc::new(MemorySessions::default()),
        fetcher.clone(),
        clock,
    );
    let config = Config {
        audit_required: true,
        ..Config::default()
    };
    let app = memory_app::open(config, ports).await;
    let operator = operator();
    app.roles()
        .create(
            &operator,
            serde_json::from_value(
                json!({"name": "gh-only", "permissions": ["read", "execute"],
                "scopes": ["gh"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    for alias in ["gh", "other"] {
        app.credentials()
            .create(
                &operator,
                serde_json::from_value(json!({
                    "alias": alias, "type": "api_key", "data": {"key": format!("sk-{alias}-secret-123456")},
                    "base_url": "https://api.example.com",
                    "policy": {"allowed_hosts": ["api.example.com"]}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let key = app
        .api_keys()
        .create(
            &operator,
            serde_json::from_value(json!({"name": "agent", "role": "gh-only"})).unwrap(),
        )
        .await
        .unwrap()
        .key;
    let before = audit_rows(&kv).await.len();
    const FLOOD: usize = 200;
    for _ in 0..FLOOD {
        let request = http::Request::builder()
            .method("GET")
            .uri("/proxy/other/v1/x")
            .header("x-vultrino-key", &key)
            .body(Body::full(Bytes::new()))
            .unwrap();
        let reply = app.serve(request, None).await;
        assert_eq!(reply.status(), 403);
    }
    assert_eq!(fetcher.sent(), 0, "nothing was sent");
    let rows = audit_rows(&kv).await;
    assert!(
        rows.iter().all(|e| e["outcome"] != "started"),
        "a refused request left a `started` event"
    );
    let written = rows.len() - before;
    assert!(
        written <= 64 + 8,
        "{written} audit writes for {FLOOD} identical refusals: the refusal budget holds in strict mode"
    );
    assert!(written >= 1, "the refusals are audited");

    // The credential the key may use: one `allowed` event, its `started` row replaced.
    let request = http::Request::builder()
        .method("GET")
        .uri("/proxy/gh/v1/x")
        .header("x-vultrino-key", &key)
        .body(Body::full(Bytes::new()))
        .unwrap();
    let reply = app.serve(request, None).await;
    assert_eq!(reply.status(), 200);
    let _ = reply.into_body().collect_capped(usize::MAX).await.unwrap();
    assert_eq!(fetcher.sent(), 1);
    let rows = audit_rows(&kv).await;
    assert!(rows.iter().all(|e| e["outcome"] != "started"), "{rows:?}");
    assert!(rows
        .iter()
        .any(|e| e["credential"] == "gh" && e["outcome"] == "allowed"));
}
