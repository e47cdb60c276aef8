//! A revoked key whose record could not be deleted (the marker landed, the KV delete failed) is
//! cleaned up by its next use (decision 0107) — but a revoked agent that keeps sending requests
//! costs at most one KV delete a minute, not one per request (review of 2026-12-06, L2: on
//! Workers a delete is a KV write, the dearest operation; the free plan allows 1 000 a day).

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use memory_app::{operator, CountingFetch};
use serde_json::json;
use vultrino_core::app::Config;
use vultrino_core::ports::{KvEntry, KvStore, ListOptions, ListPage, ManualClock, PutOptions};
use vultrino_core::{Error, Result};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// A memory store whose deletes of `key:` records always fail, counted.
struct NoKeyDeletes {
    inner: MemoryKv,
    deletes: AtomicUsize,
}

#[async_trait]
impl KvStore for NoKeyDeletes {
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        if key.starts_with("key:") {
            self.deletes.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable("KV did not answer"));
        }
        self.inner.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.list(options).await
    }
}

#[tokio::test]
async fn a_revoked_key_costs_at_most_one_kv_delete_a_minute() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(NoKeyDeletes {
        inner: MemoryKv::new(clock.clone()),
        deletes: AtomicUsize::new(0),
    });
    let fetcher = Arc::new(CountingFetch::default());
    let ports = memory_app::ports(
        kv.clone(),
        Arc::new(MemorySessions::default()),
        fetcher.clone(),
        clock.clone(),
    );
    let app = memory_app::open(Config::default(), ports).await;
    let operator = operator();
    let created = app
        .api_keys()
        .create(
            &operator,
            serde_json::from_value(json!({"name": "agent", "role": "executor"})).unwrap(),
        )
        .await
        .unwrap();
    let revoke = app.api_keys().revoke(&operator, &created.id).await;
    assert!(
        revoke.is_err(),
        "the record delete failed: the revocation answered an error"
    );
    let before = kv.deletes.load(Ordering::SeqCst);
    let call = || async {
        let r = app
            .handle(
                http::Request::builder()
                    .method("GET")
                    .uri("/v1/credentials")
                    .header("authorization", format!("Bearer {}", created.key))
                    .body(Bytes::new())
                    .unwrap(),
            )
            .await;
        r.status().as_u16()
    };
    for _ in 0..100 {
        assert_eq!(call().await, 401, "the marker refuses the key at once");
    }
    assert_eq!(
        kv.deletes.load(Ordering::SeqCst) - before,
        1,
        "one clean-up try"
    );
    clock.advance(61_000);
    for _ in 0..100 {
        assert_eq!(call().await, 401);
    }
    assert_eq!(
        kv.deletes.load(Ordering::SeqCst) - before,
        2,
        "one more a minute later"
    );
    assert_eq!(fetcher.sent(), 0, "a revoked key reaches no upstream");
}
