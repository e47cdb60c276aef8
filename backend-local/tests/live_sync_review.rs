//! The live sync after the attacker's review of 2026-12-06 (docs/reviews/2026-12-06-live-sync.md):
//! a key the edge deleted stays dead here even when a racing write puts its record back; a key
//! copied by a one-shot `vultrino sync` is the edge's too, so the live sync revokes it when the
//! edge does; a write to a synced record by a caller without the permission is refused for the
//! permission (403), not told that the record is synced (409). Over the memory stores, with the
//! App's own pull entry point (`App::apply_sync_pull`) and exports made by `sync::export`.

#![allow(clippy::unwrap_used)]

mod memory_app;

use std::sync::Arc;

use memory_app::{call, operator, CountingFetch};
use serde_json::json;
use vultrino_core::app::{App, Config};
use vultrino_core::ports::{KvStore, ManualClock, PutOptions};
use vultrino_core::sync::live::{remember_import, LiveSync};
use vultrino_core::sync::Export;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

const EDGE: &str = "https://edge.example";

struct Fixture {
    app: App,
    kv: Arc<MemoryKv>,
    live: Arc<LiveSync>,
    key: String,
    key_record: String,
}

/// An instance that syncs from [`EDGE`], holding a credential `gh` and an executor key; the
/// store itself plays the edge's store (the records are the edge's bytes).
async fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let ports = memory_app::ports(
        kv.clone(),
        Arc::new(MemorySessions::default()),
        Arc::new(CountingFetch::default()),
        clock,
    );
    let live = Arc::new(LiveSync::new(EDGE, 60_000));
    let app = memory_app::open(Config::default(), ports)
        .await
        .with_live_sync(live.clone());
    app.credentials()
        .create(
            &operator(),
            serde_json::from_value(json!({
                "alias": "gh", "type": "api_key", "data": {"key": "sk-secret-123456"},
                "policy": {"allowed_hosts": ["api.example.com"]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let created = app
        .api_keys()
        .create(
            &operator(),
            serde_json::from_value(json!({"name": "agent", "role": "executor"})).unwrap(),
        )
        .await
        .unwrap();
    Fixture {
        app,
        kv,
        live,
        key: created.key,
        key_record: format!("key:{}", created.id),
    }
}

async fn export(f: &Fixture) -> Export {
    vultrino_core::sync::export(&*f.kv, &operator())
        .await
        .unwrap()
}

async fn works(f: &Fixture) -> u16 {
    call(&f.app, "GET", "/v1/credentials", &f.key, None).await.0
}

/// Finding H1: the pull that deletes a key (revoked on the edge) marks it revoked first, so the
/// record written back by a request that read it before the deletion (its once-a-minute
/// `last_used_at` write) does not bring the key back.
#[tokio::test]
async fn a_key_deleted_by_a_pull_stays_revoked_when_a_racing_write_restores_its_record() {
    let f = fixture().await;
    let first = export(&f).await;
    f.app.apply_sync_pull(&first, None, 0).await.unwrap();
    assert!(f.live.is_synced(&f.key_record));
    assert_eq!(works(&f).await, 200);
    let stale = f.kv.get(&f.key_record).await.unwrap().unwrap();

    let mut revoked = export(&f).await;
    revoked.records.retain(|r| r.key != f.key_record);
    let change = f.app.apply_sync_pull(&revoked, None, 0).await.unwrap();
    assert_eq!(change.deleted, vec![f.key_record.clone()]);
    assert_eq!(works(&f).await, 401, "the revoked key is refused");

    // The racing request's write lands after the deletion.
    f.kv.put(&f.key_record, stale, PutOptions::default())
        .await
        .unwrap();
    let (status, body) = call(&f.app, "GET", "/v1/credentials", &f.key, None).await;
    assert_eq!(
        status, 401,
        "a restored record does not revive the key: {body}"
    );
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
}

/// Finding M1: records a one-shot `vultrino sync` copied are remembered as the edge's, so a live
/// sync started later deletes (and for a key, revokes) what the edge deleted since.
#[tokio::test]
async fn a_key_copied_by_a_one_shot_sync_is_revoked_by_a_later_live_sync() {
    let f = fixture().await;
    let copied = export(&f).await;
    remember_import(&*f.kv, EDGE, &copied).await.unwrap();
    let restarted = LiveSync::new(EDGE, 60_000);
    restarted.load(&*f.kv).await.unwrap();
    assert!(restarted.is_synced(&f.key_record), "the copy is the edge's");
    assert!(restarted.is_synced("cred:gh"));
    // The App of this test loaded its state before the copy: load it as a restart would.
    f.live.load(&*f.kv).await.unwrap();

    let mut revoked = export(&f).await;
    revoked.records.retain(|r| r.key != f.key_record);
    let change = f.app.apply_sync_pull(&revoked, None, 0).await.unwrap();
    assert_eq!(change.deleted, vec![f.key_record.clone()]);
    assert!(f.kv.get(&f.key_record).await.unwrap().is_none());
    assert_eq!(works(&f).await, 401);
}

/// Finding L2: the read-only rule of synced records answers only callers that could have
/// written: an executor's write is refused for its permission, as on a local record, and
/// learns nothing about which records are synced or from where.
#[tokio::test]
async fn a_write_to_a_synced_record_without_the_permission_is_refused_for_the_permission() {
    let f = fixture().await;
    let first = export(&f).await;
    f.app.apply_sync_pull(&first, None, 0).await.unwrap();
    assert!(f.live.is_synced("cred:gh"));
    let update = json!({"description": "mine now"});
    let (status, body) = call(&f.app, "PUT", "/v1/credentials/gh", &f.key, Some(update)).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("edge.example"), "{body}");
    let (status, body) = call(&f.app, "DELETE", "/v1/credentials/gh", &f.key, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &f.app,
        "DELETE",
        &format!("/v1/keys/{}", &f.key_record[4..]),
        &f.key,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}
