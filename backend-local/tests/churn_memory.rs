//! What the structures that grow during the soak cost in resident memory (VmRSS of this test
//! process, glibc allocator, debug build): an audit event in the file store's index (bounded
//! at 50 000 + 5 000 events, decision 0043) and a revoked key (its ten-year revocation marker
//! in the session store), each driven through `App::handle` over the file store. The figures
//! explain the 30-minute soak's RSS rise (docs/decisions/0119-memory-bounded-under-churn.md);
//! the assertions bound them, so an entry that starts holding a whole record fails here.

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::Arc;

use memory_app::{call, operator, CountingFetch};
use serde_json::json;
use vultrino_core::app::Config;
use vultrino_core::auth::NewKey;
use vultrino_core::ports::ManualClock;
use vultrino_local::file_kv::FileKv;
use vultrino_local::memory_sessions::MemorySessions;
use vultrino_local::setup::FILE_AUDIT_CAP;

/// The process's resident memory (VmRSS), in bytes: what the soak measures of the server
/// (allocator overhead and fragmentation included).
fn live() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: isize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

const N: isize = 10_000;

#[tokio::test(flavor = "current_thread")]
async fn resident_bytes_per_audit_event_and_per_revoked_key_stay_small() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kv = Arc::new(
        FileKv::open_with_prefix_cap(dir.path(), clock.clone(), "audit:", FILE_AUDIT_CAP)
            .expect("the file store opens"),
    );
    let sessions = Arc::new(MemorySessions::new());
    let ports = memory_app::ports(
        kv.clone(),
        sessions.clone(),
        Arc::new(CountingFetch::default()),
        clock.clone(),
    );
    let app = memory_app::open(Config::default(), ports).await;
    let new_key = |role: &str| NewKey {
        name: "k".into(),
        role: role.into(),
        expires_in_days: None,
    };
    let admin = app
        .api_keys()
        .create(&operator(), new_key("admin"))
        .await
        .expect("an admin key")
        .key;
    let agent = app
        .api_keys()
        .create(&operator(), new_key("executor"))
        .await
        .expect("an agent key")
        .key;
    let (st, v) = call(
        &app,
        "POST",
        "/v1/credentials",
        &admin,
        Some(json!({"alias": "svc", "type": "api_key", "data": {"key": "secret-0123456789"},
            "base_url": "https://api.example.com", "policy": {"allowed_hosts": ["api.example.com"]}})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let execute = || {
        call(
            &app,
            "POST",
            "/v1/execute",
            &agent,
            Some(
                json!({"credential": "svc", "method": "GET", "url": "https://api.example.com/user"}),
            ),
        )
    };
    // Warm every cache (opened credential, scrubber, verified keys, thread buffers).
    for _ in 0..50 {
        assert_eq!(execute().await.0, 200);
    }

    let (index0, heap0) = (kv.index_len(), live());
    for _ in 0..N {
        assert_eq!(execute().await.0, 200);
    }
    let events = kv.index_len() as isize - index0 as isize;
    let per_event = (live() - heap0) / events.max(1);
    assert_eq!(events, N, "one audit event per execute, in the index");

    let (markers0, index1, heap1) = (sessions.sizes().markers, kv.index_len(), live());
    for i in 0..N {
        let (st, v) = call(
            &app,
            "POST",
            "/v1/keys",
            &admin,
            Some(json!({"name": format!("agent-{i}"), "role": "executor"})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_str().expect("its id").to_owned();
        let (st, v) = call(&app, "DELETE", &format!("/v1/keys/{id}"), &admin, None).await;
        assert_eq!(st, 204, "{v}");
    }
    let key_events = kv.index_len() as isize - index1 as isize;
    let markers = (sessions.sizes().markers - markers0) as isize;
    assert_eq!(markers, N, "one marker per revoked key");
    let per_key = (live() - heap1) / N;
    let per_revoked = per_key - (key_events / N) * per_event;
    println!(
        "RSS per audit event in the file index: {per_event} B; per revoked key {per_key} B, \
         {per_revoked} B beyond its {} audit events",
        key_events / N
    );
    // Upper bounds: what a soak's worth of churn may cost (an entry that held a whole record,
    // or a key that left its verified copy behind, would cost several times more).
    assert!(
        (64..2048).contains(&per_event),
        "an audit event costs {per_event} B of index"
    );
    assert!(
        (64..4096).contains(&per_key),
        "a created and revoked key costs {per_key} B"
    );
}
