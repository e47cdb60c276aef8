//! A key-holding caller's refusals are counted, not written one by one
//! ([`AuditLog::record_refusal`], docs/decisions/0068-proxy-concurrency-caps-and-refusal-audit.md):
//! a flood of identical refusals is one event with a count, and a flood of distinct ones (an
//! alias made up for each) costs at most the caller's write budget per window plus one counted
//! `audit.suppressed` event; another caller keeps its own budget.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vultrino_core::audit::{AuditEvent, AuditLog, AUDIT_PREFIX, REFUSAL_WRITE_BUDGET};
use vultrino_core::ports::{Clock, KvStore, ListOptions, ManualClock, Ports};
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

fn ports(clock: Arc<ManualClock>) -> Ports {
    Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock,
        audit_sink: None,
        audit: None,
    }
}

async fn events(kv: &dyn KvStore) -> Vec<AuditEvent> {
    let page = kv
        .list(ListOptions {
            prefix: Some(AUDIT_PREFIX.into()),
            cursor: None,
            limit: Some(1000),
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in page.keys {
        let v = kv.get(&k.name).await.unwrap().unwrap();
        out.push(serde_json::from_slice(&v).unwrap());
    }
    out
}

fn refusal(ts: u64, actor: &str, alias: &str) -> AuditEvent {
    let mut e = AuditEvent::new(ts, actor, "proxy", "denied");
    e.credential = Some(alias.into());
    e.code = Some("credential_not_found".into());
    e
}

#[tokio::test]
async fn refusals_are_counted_per_series_and_bounded_per_caller() {
    // Mid-window, so that the test never crosses a window's end.
    let clock = Arc::new(ManualClock::new(1_800_000_300_000));
    let ports = ports(clock.clone());
    let log = AuditLog::new(&ports, 3600);

    // 100 identical refusals: one event, dated at the first, its count at the last power of 2.
    let first = clock.now_ms();
    for _ in 0..100 {
        log.record_refusal(
            "key:a",
            "proxy\nsame\ncode",
            refusal(clock.now_ms(), "key:a", "same"),
        )
        .await;
        clock.advance(1);
    }
    let all = events(&*ports.kv).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0].count, all[0].ts), (Some(64), first));
    assert!(
        !all[0].id.ends_with("-u"),
        "an authenticated caller's event"
    );

    // 1000 refusals, each of a made-up alias: at most the budget (of which 7 went to the first
    // series) plus one `audit.suppressed` event counting the writes withheld.
    for i in 0..1000 {
        let alias = format!("made-up-{i}");
        log.record_refusal(
            "key:a",
            &format!("proxy\n{alias}\ncode"),
            refusal(clock.now_ms(), "key:a", &alias),
        )
        .await;
    }
    let all = events(&*ports.kv).await;
    let suppressed: Vec<_> = all
        .iter()
        .filter(|e| e.action == "audit.suppressed")
        .collect();
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    assert_eq!(suppressed[0].actor, "key:a");
    // 1000 - (64 - 7) writes withheld; the event shows the last power of 2 reached.
    assert_eq!(suppressed[0].count, Some(512), "{suppressed:?}");
    assert_eq!(
        all.len(),
        REFUSAL_WRITE_BUDGET as usize - 7 + 1 + 1,
        "{}",
        all.len()
    );

    // Another caller has its own budget.
    log.record_refusal(
        "key:b",
        "proxy\nx\ncode",
        refusal(clock.now_ms(), "key:b", "x"),
    )
    .await;
    let all_b: Vec<_> = events(&*ports.kv)
        .await
        .into_iter()
        .filter(|e| e.actor == "key:b")
        .collect();
    assert_eq!(all_b.len(), 1, "{all_b:?}");
}
