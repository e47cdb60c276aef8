//! The memory the local stores spend on the audit history is proportional to its bound, not to
//! what is written: the memory store bounds its audit bytes, and the file store keeps only an
//! index of its events (their values stay on disk). Measured as the process's resident memory
//! before and after writing far more audit bytes than the bounds (freed memory may stay
//! resident, which can only make a store look bigger, never smaller). One test in this binary,
//! so that nothing else allocates meanwhile.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::app::Config;
use vultrino_core::audit::{new_id, AUDIT_PREFIX};
use vultrino_core::ports::{Clock, KvStore, ListOptions, ManualClock, PutOptions};
use vultrino_local::setup::{self, Settings, StoreKind, STORE_DIR};

const MIB: usize = 1 << 20;
/// Audit bytes written to each store: well past both stores' byte bounds.
const EVENTS: u64 = 96;

/// The process's resident memory (VmRSS), in bytes.
fn held() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: isize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Write `EVENTS` audit values of 1 MiB each (a newer one each time, as the log does); the heap
/// memory the process holds on top of what it held before.
async fn heap_held_after_writing(kv: &dyn KvStore, clock: &ManualClock) -> isize {
    let before = held();
    for _ in 0..EVENTS {
        clock.advance(1);
        let key = format!("{AUDIT_PREFIX}{}", new_id(clock.now_ms()));
        let value = Bytes::from(vec![b'x'; MIB]);
        kv.put(&key, value, PutOptions::default()).await.unwrap();
    }
    held() - before
}

fn settings(dir: &std::path::Path, store: StoreKind) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        store,
        master_key_file: None,
        master_key_source: None,
        config: Config::default(),
    }
}

#[tokio::test]
async fn the_audit_history_holds_memory_in_proportion_to_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));

    // Memory store: the bytes it holds stay within its audit byte bound (16 MiB) plus the index.
    let kv = setup::open_kv(&settings(dir.path(), StoreKind::Memory), clock.clone()).unwrap();
    let grown = heap_held_after_writing(&*kv, &clock).await;
    println!(
        "memory store: {EVENTS} MiB of audit values written, {:.1} MiB held",
        grown as f64 / MIB as f64
    );
    assert!(
        grown <= (16 + 2) * MIB as isize,
        "the memory store holds {grown} bytes after {EVENTS} MiB of audit events"
    );
    drop(kv);

    // File store: the index holds keys, not values; the disk holds at most its byte bound
    // (64 MiB) and the journal's slack, and the newest event reads back whole from disk.
    let kv = setup::open_kv(&settings(dir.path(), StoreKind::File), clock.clone()).unwrap();
    let grown = heap_held_after_writing(&*kv, &clock).await;
    println!(
        "file store: {EVENTS} MiB of audit values written, {:.1} MiB held",
        grown as f64 / MIB as f64
    );
    // What remains is the blocking threads' transient write buffers (a value and its encoded
    // file each), a few MiB whatever is written; the old store held every value (96 MiB).
    assert!(
        grown <= 8 * MIB as isize,
        "the file store holds {grown} bytes after {EVENTS} MiB of audit events"
    );
    let on_disk: u64 = std::fs::read_dir(dir.path().join(STORE_DIR))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    // The byte bound, plus the evicted records of journal segments that still hold a kept
    // one: at most two segments of 4 MiB, one of them ending in a 1 MiB record
    // (docs/decisions/0110-audit-group-commit.md).
    assert!(
        on_disk <= (64 + 2 * 4 + 1) * MIB as u64 + 64 * 1024,
        "{on_disk} bytes on disk"
    );
    let page = kv
        .list(ListOptions {
            prefix: Some(AUDIT_PREFIX.into()),
            cursor: None,
            limit: Some(1),
        })
        .await
        .unwrap();
    let newest = kv.get(&page.keys[0].name).await.unwrap().unwrap();
    assert_eq!(newest.len(), MIB);
    assert!(newest.iter().all(|b| *b == b'x'));
}
