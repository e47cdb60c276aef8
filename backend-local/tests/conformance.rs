//! The core's conformance suites run against the local stores, plus FileKv's own durability and
//! privacy properties and a multi-threaded race on MemorySessions.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure with its message

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::audit::KvAuditStore;
use vultrino_core::error::Code;
use vultrino_core::ports::{Clock, KvStore, ListOptions, ManualClock, PutOptions, SessionStore};
use vultrino_core::testkit;
use vultrino_core::ErrorKind;
use vultrino_local::file_kv::FileKv;
use vultrino_local::memory_kv::{Bound, MemoryKv, PrefixBound};
use vultrino_local::memory_sessions::MemorySessions;

const T0: u64 = 1_700_000_000_000;

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

#[tokio::test]
async fn memory_kv_passes_the_kv_suite() {
    let clock = manual_clock();
    let store = MemoryKv::new(clock.clone());
    let advance = |ms| clock.advance(ms);
    testkit::kv_suite(&store, Some(&advance)).await.unwrap();
}

#[tokio::test]
async fn file_kv_passes_the_kv_suite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let store = FileKv::open(&dir.path().join("data"), clock.clone()).unwrap();
    let advance = |ms| clock.advance(ms);
    testkit::kv_suite(&store, Some(&advance)).await.unwrap();
}

/// The audit store of the local backends: events as `audit:` keys of the KV store, in the
/// format they always had (docs/decisions/0100).
#[tokio::test]
async fn memory_kv_audit_store_passes_the_audit_suite() {
    let store = KvAuditStore::new(Arc::new(MemoryKv::new(manual_clock())));
    testkit::audit_suite(&store).await.unwrap();
}

#[tokio::test]
async fn file_kv_audit_store_passes_the_audit_suite() {
    let dir = tempfile::tempdir().unwrap();
    let kv = FileKv::open(&dir.path().join("data"), manual_clock()).unwrap();
    testkit::audit_suite(&KvAuditStore::new(Arc::new(kv)))
        .await
        .unwrap();
}

#[tokio::test]
async fn file_kv_passes_the_kv_suite_after_reopen() {
    // The suite's reads must hold for entries loaded from disk, not only for the write path:
    // write through one FileKv, read through a fresh one on the same directory.
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let path = dir.path().join("data");
    let first = FileKv::open(&path, clock.clone()).unwrap();
    let meta = serde_json::json!({"m": 1});
    let opts = PutOptions {
        expiration_ttl: Some(120),
        metadata: Some(meta.clone()),
    };
    first
        .put("k", Bytes::from_static(b"v"), opts)
        .await
        .unwrap();
    drop(first);
    let second = FileKv::open(&path, clock.clone()).unwrap();
    let entry = second.get_with_metadata("k").await.unwrap().unwrap();
    assert_eq!(
        (entry.value.as_ref(), entry.metadata),
        (&b"v"[..], Some(meta))
    );
    let listed = second.list(ListOptions::default()).await.unwrap();
    assert_eq!(listed.keys[0].expiration, Some((T0 + 120_000) / 1000));
    let advance = |ms| clock.advance(ms);
    testkit::kv_suite(&second, Some(&advance)).await.unwrap();
}

/// Under its bounded prefix the file store keeps values on disk only and reads them from there:
/// the whole KV suite (whose keys all start with `testkit/`) must hold for such values, before
/// and after a reopen.
#[tokio::test]
async fn file_kv_passes_the_kv_suite_with_values_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let path = dir.path().join("data");
    let bound = PrefixBound::single(Bound {
        keys: 1_000_000,
        bytes: usize::MAX,
    });
    let store = FileKv::open_with_prefix_cap(&path, clock.clone(), "testkit/", bound).unwrap();
    let advance = |ms| clock.advance(ms);
    testkit::kv_suite(&store, Some(&advance)).await.unwrap();
    let meta = serde_json::json!({"m": 1});
    let opts = PutOptions {
        expiration_ttl: Some(120),
        metadata: Some(meta.clone()),
    };
    store
        .put("testkit/kept", Bytes::from_static(b"v"), opts)
        .await
        .unwrap();
    drop(store);
    let store = FileKv::open_with_prefix_cap(&path, clock.clone(), "testkit/", bound).unwrap();
    let entry = store
        .get_with_metadata("testkit/kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.value.as_ref(), entry.metadata),
        (&b"v"[..], Some(meta))
    );
    testkit::kv_suite(&store, Some(&advance)).await.unwrap();
    clock.advance(120_000);
    assert_eq!(store.get("testkit/kept").await.unwrap(), None, "expired");
}

/// The audit bound's two classes in the file store: a flood of unauthenticated events (ids
/// ending in `-u`) is trimmed within its own bound, on disk too, and never deletes the rest of
/// the history — while serving and at the next open.
#[tokio::test]
async fn file_kv_unauthenticated_events_never_evict_the_rest_of_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let bound = PrefixBound {
        main: Bound {
            keys: 100,
            bytes: 1 << 20,
        },
        side: Bound {
            keys: 10,
            bytes: 1 << 20,
        },
        in_side: vultrino_core::audit::is_unauthenticated_key,
    };
    let store = FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", bound).unwrap();
    // Keys sort newest first: a smaller number is a newer event.
    let history: Vec<String> = (0..20).map(|i| format!("audit:{:04}", 9000 - i)).collect();
    for k in &history {
        store
            .put(k, Bytes::from_static(b"e"), PutOptions::default())
            .await
            .unwrap();
    }
    for i in 0..200 {
        let k = format!("audit:{:04}-u", 8000 - i);
        store
            .put(&k, Bytes::from_static(b"u"), PutOptions::default())
            .await
            .unwrap();
    }
    let check = |keys: Vec<String>| {
        for k in &history {
            assert!(keys.contains(k), "{k} was evicted");
        }
        let side = keys.iter().filter(|k| k.ends_with("-u")).count();
        assert!(
            (1..=10).contains(&side),
            "{side} unauthenticated events kept"
        );
        assert!(
            keys.contains(&"audit:7801-u".to_string()),
            "the newest is kept"
        );
    };
    check(audit_keys(&store).await);
    // The bounded prefix lives in the journal, not in files of its own.
    assert_eq!(entry_files(&path).len(), 0);
    drop(store);
    let store = FileKv::open_with_prefix_cap(&path, clock, "audit:", bound).unwrap();
    check(audit_keys(&store).await);
    for k in &history {
        assert_eq!(store.get(k).await.unwrap().as_deref(), Some(&b"e"[..]));
    }
}

#[tokio::test]
async fn memory_sessions_pass_the_session_suite() {
    testkit::session_suite(&MemorySessions::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_sessions_hit_and_mark_are_exact_across_threads() {
    let store = Arc::new(MemorySessions::new());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let s = store.clone();
        tasks.spawn(async move {
            let hit = s.hit("ip", 60_000, 37, T0).await.unwrap();
            let marked = s.mark("nonce", 60_000, T0).await.unwrap();
            (hit.allowed, marked)
        });
    }
    let (mut allowed, mut marked) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (a, m) = r.unwrap();
        allowed += usize::from(a);
        marked += usize::from(m);
    }
    assert_eq!((allowed, marked), (37, 1));
}

#[tokio::test]
async fn file_kv_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = FileKv::open(&path, clock.clone()).unwrap();
    store
        .put("cred:a", Bytes::from_static(b"one"), PutOptions::default())
        .await
        .unwrap();
    store
        .put("cred:b", Bytes::from_static(b"two"), PutOptions::default())
        .await
        .unwrap();
    store
        .put(
            "cred:b",
            Bytes::from_static(b"three"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    store
        .put("gone", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    store.delete("gone").await.unwrap();
    drop(store);

    let store = FileKv::open(&path, clock).unwrap();
    assert_eq!(
        store.get("cred:a").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        store.get("cred:b").await.unwrap().as_deref(),
        Some(&b"three"[..])
    );
    assert_eq!(store.get("gone").await.unwrap(), None);
    let names: Vec<_> = store
        .list(ListOptions::default())
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["cred:a", "cred:b"]);
}

#[tokio::test]
async fn expired_entries_are_deleted_from_disk_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = FileKv::open(&path, clock.clone()).unwrap();
    let ttl = PutOptions {
        expiration_ttl: Some(60),
        ..Default::default()
    };
    store
        .put("short", Bytes::from_static(b"x"), ttl)
        .await
        .unwrap();
    store
        .put("long", Bytes::from_static(b"y"), PutOptions::default())
        .await
        .unwrap();
    drop(store);
    assert_eq!(entry_files(&path).len(), 2);
    clock.advance(60_000);
    let store = FileKv::open(&path, clock).unwrap();
    assert_eq!(store.get("short").await.unwrap(), None);
    assert_eq!(entry_files(&path).len(), 1);
}

#[tokio::test]
async fn second_open_of_same_dir_is_refused_with_store_locked() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = manual_clock();
    let first = FileKv::open(dir.path(), clock.clone()).unwrap();
    let err = FileKv::open(dir.path(), clock.clone()).unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Unavailable, Code::StoreLocked)
    );
    assert!(
        err.message().contains(&dir.path().display().to_string()),
        "{err}"
    );
    drop(first);
    // The lock goes with the store.
    FileKv::open(dir.path(), clock).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn file_kv_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("data");
    let store = FileKv::open(&path, manual_clock()).unwrap();
    let opts = PutOptions {
        metadata: Some(serde_json::json!({"m": 1})),
        ..Default::default()
    };
    store
        .put("cred:a", Bytes::from_static(b"secret-ish"), opts)
        .await
        .unwrap();
    store
        .put("cred:b", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(mode(&path), 0o700);
    let files: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3, "LOCK and two entries: {files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    drop(store);

    // An existing directory open to others is tightened.
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _store = FileKv::open(&loose, manual_clock()).unwrap();
    assert_eq!(mode(&loose), 0o700);
}

fn entry_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kv"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn corrupt_file_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = FileKv::open(&path, clock.clone()).unwrap();
    for key in ["torn", "flipped", "moved", "good"] {
        store
            .put(
                key,
                Bytes::from(format!("value of {key}")),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let file_of = |key: &str| {
        let files = entry_files(&path);
        files
            .into_iter()
            .find(|f| {
                std::fs::read(f)
                    .unwrap()
                    .windows(key.len())
                    .any(|w| w == key.as_bytes())
            })
            .unwrap()
    };
    let (torn, flipped, moved, good) = (
        file_of("torn"),
        file_of("flipped"),
        file_of("moved"),
        file_of("good"),
    );
    drop(store);

    // A torn write: the file cut short.
    let bytes = std::fs::read(&torn).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
    // One flipped bit in the value.
    let mut bytes = std::fs::read(&flipped).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x04;
    std::fs::write(&flipped, bytes).unwrap();
    // A valid file under another key's name.
    std::fs::copy(&good, &moved).unwrap();
    // Garbage with an entry-like name.
    std::fs::write(
        path.join(format!("{}.kv", "0".repeat(64))),
        b"not an entry at all",
    )
    .unwrap();

    let store = FileKv::open(&path, clock).unwrap();
    for key in ["torn", "flipped", "moved"] {
        assert_eq!(store.get(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(
        store.get("good").await.unwrap().as_deref(),
        Some(&b"value of good"[..])
    );
    let names: Vec<_> = store
        .list(ListOptions::default())
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["good"]);
    // A corrupt key can be written again.
    store
        .put("torn", Bytes::from_static(b"fresh"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get("torn").await.unwrap().as_deref(),
        Some(&b"fresh"[..])
    );
}

#[tokio::test]
async fn leftover_temp_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = FileKv::open(&path, clock.clone()).unwrap();
    store
        .put(
            "k",
            Bytes::from_static(b"acknowledged"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    drop(store);
    // What a crash between temp write and rename leaves behind: a complete or partial temp file.
    let target = entry_files(&path).remove(0);
    let stem = target.file_stem().unwrap().to_str().unwrap().to_string();
    std::fs::write(path.join(format!("tmp-{stem}-7")), b"half a new val").unwrap();
    std::fs::copy(&target, path.join(format!("tmp-{stem}-8"))).unwrap();

    let store = FileKv::open(&path, clock).unwrap();
    assert_eq!(
        store.get("k").await.unwrap().as_deref(),
        Some(&b"acknowledged"[..])
    );
    let names: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "only LOCK and the entry remain: {names:?}");
    assert!(names
        .iter()
        .all(|n| !n.to_string_lossy().starts_with("tmp-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_kv_last_acknowledged_write_wins_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = Arc::new(FileKv::open(&path, clock.clone()).unwrap());
    for round in 0..20u32 {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..4u32 {
            let s = store.clone();
            tasks.spawn(async move {
                s.put(
                    "k",
                    Bytes::from(format!("{round}-{w}")),
                    PutOptions::default(),
                )
                .await
                .unwrap();
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let in_memory = store.get("k").await.unwrap();
    drop(store);
    let reopened = FileKv::open(&path, clock).unwrap();
    assert_eq!(reopened.get("k").await.unwrap(), in_memory);
}

#[tokio::test]
async fn refused_put_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let store = FileKv::open(&path, manual_clock()).unwrap();
    let opts = PutOptions {
        expiration_ttl: Some(1),
        ..Default::default()
    };
    let r = store.put("k", Bytes::from_static(b"v"), opts).await;
    assert_eq!(r.unwrap_err().code(), Code::InvalidTtl);
    assert!(entry_files(&path).is_empty());
}

async fn audit_keys(store: &FileKv) -> Vec<String> {
    store
        .list(ListOptions {
            prefix: Some("audit:".into()),
            ..ListOptions::default()
        })
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.name)
        .collect()
}

#[tokio::test]
async fn file_kv_prefix_bound_deletes_the_greatest_keys_from_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    // Unbounded first: 30 events (keys sort newest first, so audit:00 is the newest) and a
    // credential, all durable.
    let store = FileKv::open(&path, clock.clone()).unwrap();
    for i in 0..30u32 {
        store
            .put(
                &format!("audit:{i:02}"),
                Bytes::from_static(b"e"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    store
        .put("cred:a", Bytes::from_static(b"keep"), PutOptions::default())
        .await
        .unwrap();
    drop(store);
    assert_eq!(entry_files(&path).len(), 31);

    // Reopened with a bound of 10: the 20 greatest (oldest) go, from the index and the disk.
    let bound = PrefixBound::single(Bound {
        keys: 10,
        bytes: usize::MAX,
    });
    let store = FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", bound).unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("audit:{i:02}")).collect();
    assert_eq!(audit_keys(&store).await, expected);
    assert_eq!(entry_files(&path).len(), 11);
    assert_eq!(
        store.get("cred:a").await.unwrap().as_deref(),
        Some(&b"keep"[..]),
        "other prefixes are never evicted"
    );

    // Over the bound while serving: trimmed to 90 % of it, files included.
    store
        .put(
            "audit:005",
            Bytes::from_static(b"new"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let kept = audit_keys(&store).await;
    assert_eq!(kept.len(), 9, "{kept:?}");
    assert!(kept.contains(&"audit:005".to_string()));
    assert!(!kept.contains(&"audit:09".to_string()));
    // 8 older events and `cred:a` in files of their own; the new one is in the journal.
    assert_eq!(entry_files(&path).len(), 9);
    drop(store);

    // What the index says is what the disk holds.
    let store = FileKv::open(&path, clock).unwrap();
    assert_eq!(audit_keys(&store).await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_kv_concurrent_puts_are_all_acknowledged_and_durable() {
    // Writers share directory fsyncs (group commit): none may be lost, stall or fail.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = Arc::new(FileKv::open(&path, clock.clone()).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .put(
                            &format!("k:{w}:{i:02}"),
                            Bytes::from(format!("{w}-{i}")),
                            PutOptions::default(),
                        )
                        .await
                        .unwrap();
                }
                // And a delete of one of its own keys.
                store.delete(&format!("k:{w}:00")).await.unwrap();
            })
        })
        .collect();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        for w in writers {
            w.await.unwrap();
        }
    })
    .await
    .expect("concurrent writers finished");
    drop(store);
    let store = FileKv::open(&path, clock).unwrap();
    for w in 0..8 {
        assert_eq!(store.get(&format!("k:{w}:00")).await.unwrap(), None);
        for i in 1..25 {
            let v = store.get(&format!("k:{w}:{i:02}")).await.unwrap();
            assert_eq!(v.as_deref(), Some(format!("{w}-{i}").as_bytes()));
        }
    }
    assert_eq!(entry_files(&path).len(), 8 * 24);
}

/// The `rsa`-crate verifier keeps every sentence of the `Rs256Verifier` port (the worker's
/// WebCrypto one is run inside workerd by backend-cloudflare/test/conformance.test.mjs).
#[tokio::test]
async fn rsa_verifier_passes_the_rs256_suite() {
    testkit::rs256_suite(&vultrino_local::rs256::RsaVerifier)
        .await
        .unwrap();
}

/// The suite can fail: a verifier that accepts everything, and one that accepts nothing, are
/// both caught.
#[tokio::test]
async fn the_rs256_suite_catches_verifiers_that_always_say_yes_or_no() {
    struct Always(bool);
    #[async_trait::async_trait]
    impl vultrino_core::ports::Rs256Verifier for Always {
        async fn verify(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> bool {
            self.0
        }
    }
    assert!(testkit::rs256_suite(&Always(true)).await.is_err());
    assert!(testkit::rs256_suite(&Always(false)).await.is_err());
}

fn journal_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    files
}

fn audit_bound(keys: usize) -> PrefixBound {
    PrefixBound::single(Bound {
        keys,
        bytes: usize::MAX,
    })
}

/// The journal of the bounded prefix: puts, rewrites and deletes read back after a reopen, and
/// a record torn by a crash mid-append (garbage at the end of the last segment) loses nothing
/// written before it and stops nothing written after the reopen.
#[tokio::test]
async fn file_kv_journal_replays_in_order_and_ignores_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store =
        FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", audit_bound(1000)).unwrap();
    for i in 0..5 {
        store
            .put(
                &format!("audit:{i}"),
                Bytes::from(format!("v{i}")),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    store
        .put(
            "audit:1",
            Bytes::from_static(b"rewritten"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    store.delete("audit:3").await.unwrap();
    store
        .put(
            "audit:short",
            Bytes::from_static(b"gone soon"),
            PutOptions {
                expiration_ttl: Some(60),
                metadata: None,
            },
        )
        .await
        .unwrap();
    drop(store);
    // A crash mid-append: a length promising more than follows.
    let last = journal_segments(&path).pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, b'V', b'K', b'V']).unwrap();
    drop(f);
    clock.advance(61_000);

    let expect = |store: FileKv, keys: &'static [&'static str]| async move {
        assert_eq!(audit_keys(&store).await, keys);
        assert_eq!(
            store.get("audit:1").await.unwrap().as_deref(),
            Some(&b"rewritten"[..])
        );
        assert_eq!(
            store.get("audit:4").await.unwrap().as_deref(),
            Some(&b"v4"[..])
        );
        assert_eq!(store.get("audit:3").await.unwrap(), None);
        assert_eq!(store.get("audit:short").await.unwrap(), None, "expired");
        store
    };
    let store =
        FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", audit_bound(1000)).unwrap();
    let store = expect(store, &["audit:0", "audit:1", "audit:2", "audit:4"]).await;
    store
        .put("audit:5", Bytes::from_static(b"v5"), PutOptions::default())
        .await
        .unwrap();
    drop(store);
    let store = FileKv::open_with_prefix_cap(&path, clock, "audit:", audit_bound(1000)).unwrap();
    let store = expect(
        store,
        &["audit:0", "audit:1", "audit:2", "audit:4", "audit:5"],
    )
    .await;
    assert_eq!(
        store.get("audit:5").await.unwrap().as_deref(),
        Some(&b"v5"[..])
    );
}

/// A long-running history stays bounded on disk: journal segments whose records were all
/// evicted are deleted (while serving and at open), and the kept events still read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_kv_journal_segments_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = manual_clock();
    let store = Arc::new(
        FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", audit_bound(100)).unwrap(),
    );
    // 16 MiB of 8 KiB events, newest first (smaller numbers are newer), from 4 writers.
    let value = Bytes::from(vec![b'e'; 8 << 10]);
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0..512u32 {
                    let n = 9_999_999 - (i * 4 + w);
                    store
                        .put(&format!("audit:{n}"), value.clone(), PutOptions::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let kept = audit_keys(&store).await;
    assert!((90..=100).contains(&kept.len()), "{} kept", kept.len());
    let on_disk: u64 = journal_segments(&path)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk <= 12 << 20,
        "{on_disk} bytes of journal for {} kept events of 8 KiB",
        kept.len()
    );
    drop(store);
    // Evicted events stay evicted after a reopen (their deletion is journaled too).
    let store = FileKv::open_with_prefix_cap(&path, clock, "audit:", audit_bound(100)).unwrap();
    assert_eq!(audit_keys(&store).await, kept);
    for k in &kept {
        assert_eq!(store.get(k).await.unwrap(), Some(value.clone()), "{k}");
    }
    assert!(journal_segments(&path).len() <= 3);
}
