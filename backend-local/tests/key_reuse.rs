//! An API key verified before is reused from memory without reading its record again
//! (`Config::key_record_reuse_secs`: the worker's 60 s; docs/decisions/0117) — one KV read
//! saved per request on Workers — and nothing a user relies on goes stale:
//!
//! - a key revoked anywhere is refused at once by every isolate that reuses it: its revocation
//!   marker (the strongly consistent SessionStore, a Durable Object on Workers) is read on every
//!   request;
//! - its expiry is looked at on every request, a wrong secret is refused, and a deleted custom
//!   role is seen at once (the role record is still read and compared);
//! - the record is read again once the reuse time has passed, and `last_used_at` is still
//!   written once per interval, not on every request — from a fresh read, never from the
//!   reused copy, so a record deleted in the store outside the API stays deleted.
//!
//! Each "isolate" is an `App` over the same stores (as every isolate of a deployment shares KV
//! and the Durable Objects); the KV port counts its reads and writes.

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memory_app::operator as admin;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::{NewKey, NewRole, Permission, Principal};
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::{Code, Result};
use vultrino_core::ports::{KvEntry, KvStore, ListOptions, ListPage, ManualClock, PutOptions};
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

const REUSE_SECS: u64 = 60;

/// The KV port, counting reads and writes.
struct Counted {
    inner: MemoryKv,
    reads: AtomicU64,
    writes: AtomicU64,
}

#[async_trait::async_trait]
impl KvStore for Counted {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.list(options).await
    }
}

struct Isolates {
    x: App,
    y: App,
    kv: Arc<Counted>,
    clock: Arc<ManualClock>,
}

impl Isolates {
    fn reads(&self) -> u64 {
        self.kv.reads.swap(0, Ordering::SeqCst)
    }
    fn writes(&self) -> u64 {
        self.kv.writes.swap(0, Ordering::SeqCst)
    }
    async fn key(&self, role: &str, expires_in_days: Option<u32>) -> String {
        let input = NewKey {
            name: "agent".into(),
            role: role.into(),
            expires_in_days,
        };
        self.x.api_keys().create(&admin(), input).await.unwrap().key
    }
}

async fn isolates(reuse_secs: u64) -> Isolates {
    isolates_with(reuse_secs, 3600).await
}

async fn isolates_with(reuse_secs: u64, last_used_interval_secs: u64) -> Isolates {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(Counted {
        inner: MemoryKv::new(clock.clone()),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
    });
    let sessions = Arc::new(MemorySessions::new());
    let (master, _) = MasterSecret::generate_raw();
    let ports = || Ports {
        kv: kv.clone(),
        sessions: sessions.clone(),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let config = || Config {
        key_record_reuse_secs: reuse_secs,
        key_last_used_interval_secs: last_used_interval_secs,
        ..Config::default()
    };
    let x = App::open(config(), ports(), &master).await.unwrap();
    let y = App::open(config(), ports(), &master).await.unwrap();
    Isolates { x, y, kv, clock }
}

fn refused(r: Result<Principal>, code: Code) {
    let e = r.expect_err("the key must be refused");
    assert_eq!((e.status().as_u16(), e.code()), (401, code), "{e}");
}

fn key_id(key: &str) -> &str {
    key.trim_start_matches("vk_").split('_').next().unwrap()
}

#[tokio::test]
async fn a_reused_key_reads_no_record_until_the_reuse_time_has_passed() {
    let e = isolates(REUSE_SECS).await;
    let key = e.key("executor", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.reads();
    e.writes();
    for _ in 0..3 {
        e.y.api_keys().authenticate(&key).await.unwrap();
    }
    assert_eq!(e.reads(), 0, "a reused key reads no KV record");
    assert_eq!(e.writes(), 0, "last_used_at is written once per interval");
    e.clock.advance(REUSE_SECS * 1000);
    e.y.api_keys().authenticate(&key).await.unwrap();
    assert_eq!(
        e.reads(),
        1,
        "past the reuse time, the record is read again"
    );

    // Without reuse (the local default), every request reads the record, as before.
    let e = isolates(0).await;
    let key = e.key("executor", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.reads();
    e.y.api_keys().authenticate(&key).await.unwrap();
    assert_eq!(e.reads(), 1);
}

#[tokio::test]
async fn a_key_revoked_at_one_isolate_is_refused_at_once_by_another_that_reuses_it() {
    let e = isolates(REUSE_SECS).await;
    let key = e.key("executor", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.x.api_keys().revoke(&admin(), key_id(&key)).await.unwrap();
    // Y still holds the verified record, and its KV copy may lag: the marker refuses it.
    refused(e.y.api_keys().authenticate(&key).await, Code::InvalidApiKey);
    refused(e.x.api_keys().authenticate(&key).await, Code::InvalidApiKey);
}

#[tokio::test]
async fn a_reused_key_with_a_wrong_secret_is_refused() {
    let e = isolates(REUSE_SECS).await;
    let key = e.key("executor", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    let wrong = format!("vk_{}_{}", key_id(&key), "A".repeat(43));
    refused(
        e.y.api_keys().authenticate(&wrong).await,
        Code::InvalidApiKey,
    );
    // The right secret still works after the wrong one.
    e.y.api_keys().authenticate(&key).await.unwrap();
}

#[tokio::test]
async fn a_reused_key_is_refused_the_moment_it_expires() {
    let e = isolates(REUSE_SECS).await;
    let key = e.key("executor", Some(1)).await;
    // A second before its expiry, verified (and kept for reuse)…
    e.clock.advance(86_400_000 - 1000);
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.y.api_keys().authenticate(&key).await.unwrap();
    // …and refused at its expiry, inside the reuse time.
    e.clock.advance(1000);
    refused(e.y.api_keys().authenticate(&key).await, Code::ApiKeyExpired);
}

#[tokio::test]
async fn a_reused_key_of_a_deleted_custom_role_is_refused_at_once() {
    let e = isolates(REUSE_SECS).await;
    let role = NewRole {
        name: "callers".into(),
        permissions: vec![Permission::Execute],
        scopes: vec!["*".into()],
        description: None,
    };
    e.x.roles().create(&admin(), role).await.unwrap();
    let key = e.key("callers", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.x.roles().delete(&admin(), "callers").await.unwrap();
    let r = e.y.api_keys().authenticate(&key).await;
    assert!(r.is_err(), "a key of a deleted role still authenticated");
}

#[tokio::test]
async fn a_token_whose_reused_parent_key_is_revoked_is_refused_at_once() {
    let e = isolates(REUSE_SECS).await;
    let key = e.key("executor", None).await;
    let who = e.y.api_keys().authenticate(&key).await.unwrap();
    let input: vultrino_core::auth::NewToken =
        serde_json::from_value(serde_json::json!({"credentials": ["*"]})).unwrap();
    let token =
        e.y.api_keys()
            .tokens()
            .mint(&who, input)
            .await
            .unwrap()
            .token;
    e.y.api_keys().authenticate(&token).await.unwrap();
    e.reads();
    e.y.api_keys().authenticate(&token).await.unwrap();
    assert_eq!(
        e.reads(),
        1,
        "the token's record only: its parent key is reused"
    );
    e.x.api_keys().revoke(&admin(), key_id(&key)).await.unwrap();
    refused(
        e.y.api_keys().authenticate(&token).await,
        Code::InvalidApiKey,
    );
}

/// The `last_used_at` write falls due while the record is still reused: it is made from a fresh
/// read, so a record deleted in KV outside the API (`wrangler kv key delete`, an emergency
/// kill) is not written back from memory, and the key is refused (review of 2026-12-07,
/// finding 2: the reused copy used to be put back).
#[tokio::test]
async fn a_key_record_deleted_outside_the_api_is_not_written_back_by_its_last_use() {
    // (The last-use interval is at least 60 s.)
    let e = isolates_with(120, 60).await;
    let key = e.key("executor", None).await;
    e.y.api_keys().authenticate(&key).await.unwrap();
    e.y.api_keys().authenticate(&key).await.unwrap();
    let record = format!("key:{}", key_id(&key));
    e.kv.inner.delete(&record).await.unwrap();
    // Inside the reuse time (61 s < 120 s), past the last-use interval (61 s > 60 s).
    e.clock.advance(61_000);
    e.writes();
    refused(e.y.api_keys().authenticate(&key).await, Code::InvalidApiKey);
    assert_eq!(e.writes(), 0, "nothing was written back");
    assert!(e.kv.inner.get(&record).await.unwrap().is_none());
}
