//! Issue 17 (the 30-minute soak's RSS growth): every in-memory structure that lives as long as
//! the server stays bounded under churn and traffic — by count, by TTL with a sweep that runs,
//! or by the set of live records — over the memory store and the file store, driven through
//! `App::handle` as a client would (docs/decisions/0119-memory-bounded-under-churn.md).
//!
//! The one structure that grows with churn by design is the revocation markers: one per
//! revoked API key, kept ten years (a replayed record of a revoked key must stay refused); the
//! key-churn test pins that to exactly one marker per revocation, nothing more.

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::Arc;

use bytes::Bytes;
use memory_app::{operator, CountingFetch};
use serde_json::{json, Value};
use vultrino_core::app::{App, Config};
use vultrino_core::auth::NewKey;
use vultrino_core::crypto;
use vultrino_core::ports::{KvStore, ManualClock};
use vultrino_local::file_kv::FileKv;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;
use vultrino_local::setup::{FILE_AUDIT_CAP, MEMORY_AUDIT_CAP};

const NOW: u64 = 1_800_000_000_000;
/// Distinct keys, credentials, logins and client addresses each test churns through.
const CHURN: usize = 5_000;

/// One app over one store, as `vultrino serve` assembles it (audit history capped).
struct Env {
    app: App,
    sessions: Arc<MemorySessions>,
    clock: Arc<ManualClock>,
    file: Option<Arc<FileKv>>,
    _dir: Option<tempfile::TempDir>,
    admin: String,
}

#[derive(Clone, Copy, Debug)]
enum Store {
    Memory,
    File,
}

async fn env(store: Store, config: Config) -> Env {
    let clock = Arc::new(ManualClock::new(NOW));
    let (kv, file, dir): (Arc<dyn KvStore>, _, _) = match store {
        Store::Memory => (
            Arc::new(MemoryKv::new(clock.clone()).with_prefix_cap("audit:", MEMORY_AUDIT_CAP)),
            None,
            None,
        ),
        Store::File => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let file = Arc::new(
                FileKv::open_with_prefix_cap(dir.path(), clock.clone(), "audit:", FILE_AUDIT_CAP)
                    .expect("the file store opens"),
            );
            (file.clone(), Some(file), Some(dir))
        }
    };
    let sessions = Arc::new(MemorySessions::new());
    let ports = memory_app::ports(
        kv,
        sessions.clone(),
        Arc::new(CountingFetch::default()),
        clock.clone(),
    );
    let app = memory_app::open(config, ports).await;
    let admin = app
        .api_keys()
        .create(
            &operator(),
            NewKey {
                name: "operator".into(),
                role: "admin".into(),
                expires_in_days: None,
            },
        )
        .await
        .expect("an admin key")
        .key;
    Env {
        app,
        sessions,
        clock,
        file,
        _dir: dir,
        admin,
    }
}

impl Env {
    async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        memory_app::call(&self.app, method, path, bearer, body).await
    }

    async fn create_credential(&self, alias: &str) {
        let (st, v) = self
            .call(
                "POST",
                "/v1/credentials",
                &self.admin,
                Some(json!({"alias": alias, "type": "api_key",
                    "data": {"key": format!("secret-of-{alias}-0123456789")},
                    "base_url": "https://api.example.com",
                    "policy": {"allowed_hosts": ["api.example.com"]}})),
            )
            .await;
        assert_eq!(st, 201, "credential create: {v}");
    }

    async fn execute(&self, bearer: &str, alias: &str) {
        let (st, v) = self
            .call(
                "POST",
                "/v1/execute",
                bearer,
                Some(json!({"credential": alias, "method": "GET",
                    "url": "https://api.example.com/user"})),
            )
            .await;
        assert_eq!(st, 200, "execute: {v}");
    }
}

const STORES: [Store; 2] = [Store::Memory, Store::File];

/// 5 000 keys created, each used once, then all revoked: the verified-key cache never holds
/// more than its 4 096, and forgets each revoked key; the revocation leaves exactly one
/// marker per key (the by-design growth, decision 0119) and no clean-up markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_churn_keeps_the_verified_key_cache_bounded() {
    for store in STORES {
        let e = env(store, Config::default()).await;
        e.create_credential("svc").await;
        let mut ids = Vec::with_capacity(CHURN);
        let mut most = 0;
        for i in 0..CHURN {
            let (st, v) = e
                .call(
                    "POST",
                    "/v1/keys",
                    &e.admin,
                    Some(json!({"name": format!("agent-{i}"), "role": "executor"})),
                )
                .await;
            assert_eq!(st, 201, "{store:?}: key create: {v}");
            let key = v["key"].as_str().expect("the new key").to_owned();
            e.execute(&key, "svc").await;
            most = most.max(e.app.cache_sizes().verified_keys);
            ids.push(v["id"].as_str().expect("its id").to_owned());
        }
        assert!(
            most <= 4096,
            "{store:?}: the verified-key cache held {most} keys"
        );
        let markers_before = e.sessions.sizes().markers;
        for id in &ids {
            let (st, v) = e
                .call("DELETE", &format!("/v1/keys/{id}"), &e.admin, None)
                .await;
            assert_eq!(st, 204, "{store:?}: revoke: {v}");
        }
        let sizes = e.app.cache_sizes();
        assert!(
            sizes.verified_keys <= 1,
            "{store:?}: revoked keys stay verified in memory: {sizes:?}"
        );
        assert_eq!(sizes.opened_credentials, 1, "{store:?}: {sizes:?}");
        let held = e.sessions.sizes();
        assert_eq!(
            held.markers - markers_before,
            CHURN,
            "{store:?}: one revocation marker per revoked key, nothing else: {held:?}"
        );
        assert_eq!(held.sessions, 0, "{store:?}: {held:?}");
    }
}

/// 5 000 credentials created and used (all alive at once), then deleted: the decrypted
/// copies never exceed the cache's 1 024, nor the scrubbers theirs, and none outlives its
/// credential; the file store's index is back to what it held before, but the audit events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_churn_leaves_no_decrypted_copy_behind() {
    for store in STORES {
        let e = env(store, Config::default()).await;
        let (st, v) = e
            .call(
                "POST",
                "/v1/keys",
                &e.admin,
                Some(json!({"name": "agent", "role": "executor"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let agent = v["key"].as_str().expect("the new key").to_owned();
        let index_before = e.file.as_ref().map(|f| f.index_len());
        let mut most = (0, 0);
        for i in 0..CHURN {
            let alias = format!("svc-{i}");
            e.create_credential(&alias).await;
            e.execute(&agent, &alias).await;
            let s = e.app.cache_sizes();
            most = (most.0.max(s.opened_credentials), most.1.max(s.scrubbers));
        }
        assert!(
            most.0 <= 1024 && most.1 <= 1024,
            "{store:?}: opened credentials / scrubbers reached {most:?}"
        );
        for i in 0..CHURN {
            let (st, v) = e
                .call(
                    "DELETE",
                    &format!("/v1/credentials/svc-{i}"),
                    &e.admin,
                    None,
                )
                .await;
            assert_eq!(st, 204, "{store:?}: delete: {v}");
        }
        let sizes = e.app.cache_sizes();
        assert_eq!(
            sizes.opened_credentials, 0,
            "{store:?}: decrypted credentials outlive their delete: {sizes:?}"
        );
        if let (Some(file), Some(before)) = (&e.file, index_before) {
            let audit = count_audit(&e).await;
            assert!(
                file.index_len() <= before + audit,
                "{store:?}: the index holds {} entries, {before} before and {audit} audit events",
                file.index_len()
            );
        }
    }
}

/// Audit events listed by the admin, all pages.
async fn count_audit(e: &Env) -> usize {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=1000&cursor={c}"),
            None => "/v1/audit?limit=1000".to_owned(),
        };
        let (st, v) = e.call("GET", &path, &e.admin, None).await;
        assert_eq!(st, 200, "audit list: {v}");
        n += v["events"].as_array().map_or(0, Vec::len);
        match v["cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return n,
        }
    }
}

/// 5 000 logins and logouts (20 s apart, as the soak's), then 5 000 failed logins from as many
/// client addresses (1 s apart, an attacker rotating addresses): no session outlives its
/// logout, and the lockout counters stay within twice those whose window (15 min) is still
/// open, not one per address ever seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_churn_and_rotating_addresses_keep_session_maps_bounded() {
    for store in STORES {
        let config = Config {
            admin_password_hash: Some(crypto::hash_password("pw", 1000).expect("a hash")),
            allow_weak_password_hash_for_tests: true,
            client_ip_header: Some("x-client-ip".into()),
            ..Config::default()
        };
        let e = env(store, config).await;
        let login = |user: &str, password: &str, ip: String| -> http::Request<Bytes> {
            http::Request::post("/login")
                .header("content-type", "application/json")
                .header("x-client-ip", ip)
                .body(Bytes::from(
                    json!({"username": user, "password": password}).to_string(),
                ))
                .expect("a login request")
        };
        for _ in 0..CHURN {
            let r = e.app.handle(login("admin", "pw", "192.0.2.1".into())).await;
            assert_eq!(r.status(), 200, "{store:?}: login");
            let v: Value = serde_json::from_slice(r.body()).expect("a JSON reply");
            let token = v["token"].as_str().expect("a session token").to_owned();
            let (st, _) = e.call("GET", "/v1/credentials", &token, None).await;
            assert_eq!(st, 200, "{store:?}: the session works");
            let (st, _) = e.call("POST", "/logout", &token, None).await;
            assert_eq!(st, 204, "{store:?}: logout");
            e.clock.advance(20_000);
        }
        let held = e.sessions.sizes();
        assert_eq!(
            held.sessions, 0,
            "{store:?}: sessions outlive logout: {held:?}"
        );
        let mut most = 0;
        for i in 0..CHURN {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let r = e.app.handle(login("admin", "wrong", ip)).await;
            // 401, or 429 once the per-user throttle (50 per window) is reached: either way
            // the address's counter was hit first.
            let st = r.status().as_u16();
            assert!(st == 401 || st == 429, "{store:?}: a wrong password: {st}");
            most = most.max(e.sessions.sizes().counters);
            e.clock.advance(1_000);
        }
        // Each attempt opens its address's counter; at most 901 are within their 15-minute
        // window at once (one a second), beside a few of their own (the user's throttle, the
        // audit's refusal series and budget); a sweep runs when the map has doubled since the
        // last: at most about twice the live ones, not one per address ever seen.
        assert!(
            most <= 2 * 1000,
            "{store:?}: {most} lockout counters held for about 901 live ones"
        );
    }
}
