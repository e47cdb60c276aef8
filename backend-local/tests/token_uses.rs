//! An agent token's use is spent before the upstream call and fails closed: when the
//! SessionStore cannot count it, the request is refused (503 `session_store_unavailable`) and
//! nothing is sent (docs/decisions/0084-agent-token-uses.md). Over the memory stores, with a
//! SessionStore whose counters can be made to fail and a Fetcher that counts what it is asked
//! to send.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod memory_app;

use async_trait::async_trait;
use memory_app::{call, operator, CountingFetch};
use serde_json::json;
use vultrino_core::app::Config;
use vultrino_core::ports::{Hit, ManualClock, SessionRecord, SessionStore};
use vultrino_core::{Error, Result};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// `MemorySessions` whose token-use counters fail while `broken` is set.
#[derive(Default)]
struct Flaky {
    inner: MemorySessions,
    broken: AtomicBool,
}

#[async_trait]
impl SessionStore for Flaky {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        self.inner.create_session(id, record).await
    }
    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        self.inner.touch_session(id, now_ms).await
    }
    async fn revoke_session(&self, id: &str) -> Result<()> {
        self.inner.revoke_session(id).await
    }
    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        if key.starts_with("token-uses:") && self.broken.load(Ordering::SeqCst) {
            return Err(Error::unavailable("the Durable Object did not answer"));
        }
        self.inner.hit(key, window_ms, limit, now_ms).await
    }
    async fn reset_counter(&self, key: &str) -> Result<()> {
        self.inner.reset_counter(key).await
    }
    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        self.inner.mark(key, ttl_ms, now_ms).await
    }
    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        self.inner.is_marked(key, now_ms).await
    }
}

#[tokio::test]
async fn a_use_that_cannot_be_counted_refuses_the_request_and_sends_nothing() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let sessions = Arc::new(Flaky::default());
    let fetcher = Arc::new(CountingFetch::default());
    let ports = memory_app::ports(
        Arc::new(MemoryKv::new(clock.clone())),
        sessions.clone(),
        fetcher.clone(),
        clock,
    );
    let app = memory_app::open(Config::default(), ports).await;
    let operator = operator();
    app.credentials()
        .create(
            &operator,
            serde_json::from_value(json!({
                "alias": "gh", "type": "api_key", "data": {"key": "sk-secret-123456"},
                "policy": {"allowed_hosts": ["api.example.com"]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let key = app
        .api_keys()
        .create(
            &operator,
            serde_json::from_value(json!({"name": "agent", "role": "executor"})).unwrap(),
        )
        .await
        .unwrap()
        .key;
    let (status, minted) = call(
        &app,
        "POST",
        "/v1/tokens",
        &key,
        Some(json!({"credentials": ["gh"], "uses": 2})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap();
    let execute = json!({"credential": "gh", "method": "GET", "url": "https://api.example.com/x"});

    sessions.broken.store(true, Ordering::SeqCst);
    let (status, body) = call(&app, "POST", "/v1/execute", token, Some(execute.clone())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "session_store_unavailable", "{body}");
    assert_eq!(fetcher.sent(), 0, "nothing was sent");
    // The key itself has no uses to count: unaffected.
    let (status, body) = call(&app, "POST", "/v1/execute", &key, Some(execute.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetcher.sent(), 1);

    sessions.broken.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let (status, body) = call(&app, "POST", "/v1/execute", token, Some(execute.clone())).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(&app, "POST", "/v1/execute", token, Some(execute)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "token_exhausted", "{body}");
    assert_eq!(fetcher.sent(), 3, "the failed count spent no use");
}

/// A clock that moves `step` ms forward on every read (once armed): two reads of one operation
/// then straddle an instant.
struct SteppingClock {
    now: std::sync::atomic::AtomicU64,
    step: std::sync::atomic::AtomicU64,
}

impl vultrino_core::ports::Clock for SteppingClock {
    fn now_ms(&self) -> u64 {
        let step = self.step.load(Ordering::SeqCst);
        self.now.fetch_add(step, Ordering::SeqCst)
    }
}

/// A mint while the parent key expires (its expiry falls between two reads of the clock inside
/// the mint) is refused or makes a token that ends by the key's expiry; it never computes a
/// negative lifetime (review of 2026-12-06, finding 5: a panic in debug builds, a wrapped KV
/// TTL in release ones).
#[tokio::test]
async fn a_mint_racing_its_parents_expiry_never_underflows() {
    use std::sync::atomic::AtomicU64;
    const T0: u64 = 1_800_000_000_000;
    const DAY: u64 = 86_400_000;
    for back in 0..24 {
        let clock = Arc::new(SteppingClock {
            now: AtomicU64::new(T0),
            step: AtomicU64::new(0),
        });
        let ports = memory_app::ports(
            Arc::new(MemoryKv::new(clock.clone())),
            Arc::new(MemorySessions::new()),
            Arc::new(CountingFetch::default()),
            clock.clone(),
        );
        let app = memory_app::open(Config::default(), ports).await;
        let operator = operator();
        let key = app
            .api_keys()
            .create(
                &operator,
                serde_json::from_value(
                    json!({"name": "agent", "role": "executor", "expires_in_days": 1}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let expires = key.expires_at.unwrap();
        assert_eq!(expires, T0 + DAY);
        // Reads from `back` ms before the key's expiry on, 2 ms apart.
        clock.now.store(expires - back, Ordering::SeqCst);
        clock.step.store(2, Ordering::SeqCst);
        let input =
            serde_json::from_value(json!({"parent_key": key.id, "credentials": ["*"]})).unwrap();
        match app.api_keys().tokens().mint(&operator, input).await {
            Ok(t) => assert!(t.expires_at <= expires, "{back}: past the key's expiry"),
            Err(e) => assert_eq!(e.code().as_str(), "key_not_found", "{back}: {e}"),
        }
    }
}
