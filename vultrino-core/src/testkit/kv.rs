//! The [`KvStore`] conformance suite: one check per `# Behavior` sentence.

use bytes::Bytes;
use futures::future::join_all;
use serde_json::json;

use super::{ensure, ok, refused, short, show, unique_prefix};
use crate::error::ErrorKind;
use crate::ports::{kv_limits, KvStore, ListKey, ListOptions, PutOptions};

/// Run every [`KvStore`] check against `store`; `Err` names the first property that failed.
///
/// `advance_ms` moves the store's clock forward by that many milliseconds (for the local stores:
/// `&|ms| clock.advance(ms)` on the [`ManualClock`](crate::ports::ManualClock) the store was built
/// with). Pass `None` for a backend whose time cannot be controlled (Workers KV in workerd): then
/// ONLY the TTL-expiry part of [`kv_ttl_expires_from_get_and_list`] is skipped — TTL validation,
/// the `expiration` shown by `list` and everything else are still checked.
///
/// The suite writes one 25 MiB value (and deletes it) and about 1 000 small keys.
pub async fn kv_suite(store: &dyn KvStore, advance_ms: Option<&dyn Fn(u64)>) -> Result<(), String> {
    kv_get_missing_is_none(store).await?;
    kv_get_returns_exact_bytes_last_written(store).await?;
    kv_invalid_keys_are_refused(store).await?;
    kv_metadata_round_trips_and_is_replaced(store).await?;
    kv_refuses_oversized_value_without_change(store).await?;
    kv_refuses_oversized_metadata_without_change(store).await?;
    kv_refuses_short_ttl_without_change(store).await?;
    kv_ttl_expires_from_get_and_list(store, advance_ms).await?;
    kv_delete_missing_succeeds(store).await?;
    kv_delete_removes_from_get_and_list(store).await?;
    kv_list_is_lexicographic_and_paginates(store).await?;
    kv_list_filters_by_prefix_and_carries_metadata(store).await?;
    kv_list_default_limit_is_1000(store).await?;
    kv_list_refuses_invalid_limit(store).await?;
    kv_list_refuses_malformed_cursor(store).await?;
    kv_concurrent_puts_leave_one_whole_write(store).await?;
    Ok(())
}

/// Every key under `prefix`, following cursors, with at most `limit` keys per page.
/// Fails if a page is larger than `limit` or the cursors do not end.
async fn list_all(
    check: &str,
    store: &dyn KvStore,
    prefix: &str,
    limit: Option<usize>,
) -> Result<Vec<ListKey>, String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    let max_page = limit.unwrap_or(kv_limits::MAX_LIST_LIMIT);
    for _ in 0..10_000 {
        let opts = ListOptions {
            prefix: Some(prefix.to_string()),
            cursor: cursor.take(),
            limit,
        };
        let page = ok(check, "list", store.list(opts).await)?;
        ensure(check, page.keys.len() <= max_page, || {
            format!(
                "a list page holds {} keys, more than the limit {max_page}",
                page.keys.len()
            )
        })?;
        keys.extend(page.keys);
        match page.cursor {
            None => return Ok(keys),
            Some(c) => cursor = Some(c),
        }
    }
    Err(format!(
        "{check}: following list cursors never reached a page without a cursor"
    ))
}

fn names(keys: &[ListKey]) -> Vec<&str> {
    keys.iter().map(|k| k.name.as_str()).collect()
}

/// Best-effort removal of what a check wrote (only after it passed).
async fn cleanup(store: &dyn KvStore, keys: &[String]) {
    for k in keys {
        let _ = store.delete(k).await;
    }
}

/// A key that was never written reads as `None` from `get` and `get_with_metadata`.
pub async fn kv_get_missing_is_none(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_get_missing_is_none";
    let key = format!("{}never-written", unique_prefix(c)?);
    let got = ok(c, "get", store.get(&key).await)?;
    ensure(c, got.is_none(), || {
        format!(
            "get of a never-written key returned {}",
            show(got.as_deref())
        )
    })?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    ensure(c, got.is_none(), || {
        "get_with_metadata of a never-written key returned Some".into()
    })
}

/// `get` returns exactly the bytes last written (binary, empty, overwritten), right after `put`.
pub async fn kv_get_returns_exact_bytes_last_written(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_get_returns_exact_bytes_last_written";
    let p = unique_prefix(c)?;
    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, 0x00]).collect();
    let cases: [(&str, Bytes); 3] = [
        ("binary", Bytes::from(binary)),
        ("empty", Bytes::new()),
        ("text", Bytes::from_static("hé\n\0\"'{}".as_bytes())),
    ];
    let mut written = Vec::new();
    for (name, value) in cases {
        let key = format!("{p}{name}");
        ok(
            c,
            "put",
            store.put(&key, value.clone(), PutOptions::default()).await,
        )?;
        let got = ok(c, "get", store.get(&key).await)?;
        ensure(c, got.as_ref() == Some(&value), || {
            format!(
                "after put of {name} bytes, get returned {}",
                show(got.as_deref())
            )
        })?;
        written.push(key);
    }
    let key = format!("{p}overwritten");
    ok(
        c,
        "put",
        store
            .put(
                &key,
                Bytes::from_static(b"first, longer value"),
                PutOptions::default(),
            )
            .await,
    )?;
    ok(
        c,
        "second put",
        store
            .put(&key, Bytes::from_static(b"second"), PutOptions::default())
            .await,
    )?;
    let got = ok(c, "get", store.get(&key).await)?;
    ensure(c, got.as_deref() == Some(&b"second"[..]), || {
        format!(
            "after overwriting, get returned {} instead of the last write",
            show(got.as_deref())
        )
    })?;
    written.push(key);
    cleanup(store, &written).await;
    Ok(())
}

/// Empty, `.`, `..` and over-512-byte keys are `BadRequest`/`invalid_key` on `get`,
/// `get_with_metadata` and `put`; a 512-byte key is fine and the limit counts bytes, not chars.
pub async fn kv_invalid_keys_are_refused(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_invalid_keys_are_refused";
    let p = unique_prefix(c)?;
    let too_long_ascii = format!("{p}{}", "k".repeat(kv_limits::MAX_KEY_BYTES + 1 - p.len()));
    // 2-byte chars: fewer than 512 chars but more than 512 bytes.
    let too_long_utf8 = format!(
        "{p}{}",
        "é".repeat((kv_limits::MAX_KEY_BYTES - p.len()) / 2 + 1)
    );
    for bad in [
        "",
        ".",
        "..",
        too_long_ascii.as_str(),
        too_long_utf8.as_str(),
    ] {
        let label = format!("key {:?} ({} bytes)", short(bad), bad.len());
        refused(
            c,
            &format!("get of {label}"),
            store.get(bad).await,
            ErrorKind::BadRequest,
            "invalid_key",
        )?;
        refused(
            c,
            &format!("get_with_metadata of {label}"),
            store.get_with_metadata(bad).await,
            ErrorKind::BadRequest,
            "invalid_key",
        )?;
        let put = store
            .put(bad, Bytes::from_static(b"v"), PutOptions::default())
            .await;
        refused(
            c,
            &format!("put of {label}"),
            put,
            ErrorKind::BadRequest,
            "invalid_key",
        )?;
    }
    let max = format!("{p}{}", "m".repeat(kv_limits::MAX_KEY_BYTES - p.len()));
    ok(
        c,
        "put of a 512-byte key",
        store
            .put(&max, Bytes::from_static(b"v"), PutOptions::default())
            .await,
    )?;
    let got = ok(c, "get of a 512-byte key", store.get(&max).await)?;
    ensure(c, got.as_deref() == Some(&b"v"[..]), || {
        "a 512-byte key did not read back".into()
    })?;
    cleanup(store, &[max]).await;
    Ok(())
}

/// `get_with_metadata` returns the value with the metadata last written; a put without metadata
/// removes earlier metadata.
pub async fn kv_metadata_round_trips_and_is_replaced(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_metadata_round_trips_and_is_replaced";
    let key = format!("{}k", unique_prefix(c)?);
    let meta = json!({"kind": "credential", "n": 3, "tags": ["a", "é"], "nested": {"ok": true}});
    let opts = PutOptions {
        metadata: Some(meta.clone()),
        ..Default::default()
    };
    ok(
        c,
        "put with metadata",
        store.put(&key, Bytes::from_static(b"v1"), opts).await,
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    match &got {
        Some(e) if e.value.as_ref() == b"v1" && e.metadata.as_ref() == Some(&meta) => {}
        Some(e) => {
            return Err(format!(
                "{c}: get_with_metadata returned value {} metadata {}, expected \"v1\" and {meta}",
                show(Some(&e.value)),
                short(format!("{:?}", e.metadata))
            ))
        }
        None => {
            return Err(format!(
                "{c}: get_with_metadata returned None right after put"
            ))
        }
    }
    let meta2 = json!("a string is metadata too");
    let opts = PutOptions {
        metadata: Some(meta2.clone()),
        ..Default::default()
    };
    ok(
        c,
        "put with new metadata",
        store.put(&key, Bytes::from_static(b"v2"), opts).await,
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    ensure(
        c,
        got.as_ref().and_then(|e| e.metadata.as_ref()) == Some(&meta2),
        || "metadata was not replaced by the last put".into(),
    )?;
    ok(
        c,
        "put without metadata",
        store
            .put(&key, Bytes::from_static(b"v3"), PutOptions::default())
            .await,
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    match got {
        Some(e) if e.value.as_ref() == b"v3" && e.metadata.is_none() => {}
        Some(e) => {
            return Err(format!(
            "{c}: a put without metadata must remove earlier metadata; got value {} metadata {}",
            show(Some(&e.value)),
            short(format!("{:?}", e.metadata))
        ))
        }
        None => return Err(format!("{c}: get_with_metadata returned None after a put")),
    }
    cleanup(store, &[key]).await;
    Ok(())
}

/// A value over 25 MiB is `PayloadTooLarge`/`value_too_large` and changes nothing; exactly
/// 25 MiB is accepted.
pub async fn kv_refuses_oversized_value_without_change(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_refuses_oversized_value_without_change";
    let p = unique_prefix(c)?;
    let key = format!("{p}k");
    let meta = json!({"v": 1});
    let opts = PutOptions {
        metadata: Some(meta.clone()),
        ..Default::default()
    };
    ok(
        c,
        "put",
        store.put(&key, Bytes::from_static(b"before"), opts).await,
    )?;
    let big = Bytes::from(vec![0x5a; kv_limits::MAX_VALUE_BYTES + 1]);
    let r = store.put(&key, big.clone(), PutOptions::default()).await;
    refused(
        c,
        "put of 25 MiB + 1 byte",
        r,
        ErrorKind::PayloadTooLarge,
        "value_too_large",
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    ensure(
        c,
        got.as_ref()
            .is_some_and(|e| e.value.as_ref() == b"before" && e.metadata.as_ref() == Some(&meta)),
        || "a refused oversized put changed the stored value or metadata".into(),
    )?;
    let fresh = format!("{p}fresh");
    let r = store.put(&fresh, big, PutOptions::default()).await;
    refused(
        c,
        "put of 25 MiB + 1 byte to a new key",
        r,
        ErrorKind::PayloadTooLarge,
        "value_too_large",
    )?;
    let got = ok(c, "get", store.get(&fresh).await)?;
    ensure(c, got.is_none(), || {
        "a refused oversized put created the key".into()
    })?;

    let max = Bytes::from(vec![0xa5; kv_limits::MAX_VALUE_BYTES]);
    ok(
        c,
        "put of exactly 25 MiB",
        store.put(&key, max.clone(), PutOptions::default()).await,
    )?;
    let got = ok(c, "get", store.get(&key).await)?;
    ensure(c, got.as_ref() == Some(&max), || {
        format!(
            "a 25 MiB value did not read back exactly (got {})",
            show(got.as_deref())
        )
    })?;
    cleanup(store, &[key]).await;
    Ok(())
}

/// Metadata over 1024 bytes serialized is `PayloadTooLarge`/`metadata_too_large` and changes
/// nothing; exactly 1024 bytes is accepted.
pub async fn kv_refuses_oversized_metadata_without_change(
    store: &dyn KvStore,
) -> Result<(), String> {
    let c = "kv_refuses_oversized_metadata_without_change";
    let key = format!("{}k", unique_prefix(c)?);
    let meta = json!({"v": 1});
    let opts = PutOptions {
        metadata: Some(meta.clone()),
        ..Default::default()
    };
    ok(
        c,
        "put",
        store.put(&key, Bytes::from_static(b"before"), opts).await,
    )?;
    // `"` + n chars + `"` serializes to n + 2 bytes.
    let big = json!("x".repeat(kv_limits::MAX_METADATA_BYTES - 1));
    let opts = PutOptions {
        metadata: Some(big),
        ..Default::default()
    };
    let r = store.put(&key, Bytes::from_static(b"after"), opts).await;
    refused(
        c,
        "put with 1025-byte metadata",
        r,
        ErrorKind::PayloadTooLarge,
        "metadata_too_large",
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    ensure(
        c,
        got.as_ref()
            .is_some_and(|e| e.value.as_ref() == b"before" && e.metadata.as_ref() == Some(&meta)),
        || "a refused put with oversized metadata changed the stored entry".into(),
    )?;
    let max = json!("x".repeat(kv_limits::MAX_METADATA_BYTES - 2));
    let opts = PutOptions {
        metadata: Some(max.clone()),
        ..Default::default()
    };
    ok(
        c,
        "put with exactly 1024-byte metadata",
        store.put(&key, Bytes::from_static(b"after"), opts).await,
    )?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    ensure(
        c,
        got.as_ref().and_then(|e| e.metadata.as_ref()) == Some(&max),
        || "1024-byte metadata did not read back".into(),
    )?;
    cleanup(store, &[key]).await;
    Ok(())
}

/// `expiration_ttl` below 60 is `BadRequest`/`invalid_ttl` and changes nothing; 60 is accepted.
pub async fn kv_refuses_short_ttl_without_change(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_refuses_short_ttl_without_change";
    let p = unique_prefix(c)?;
    let key = format!("{p}k");
    ok(
        c,
        "put",
        store
            .put(&key, Bytes::from_static(b"before"), PutOptions::default())
            .await,
    )?;
    for ttl in [0, 1, kv_limits::MIN_TTL_SECS - 1] {
        let opts = PutOptions {
            expiration_ttl: Some(ttl),
            ..Default::default()
        };
        let r = store.put(&key, Bytes::from_static(b"after"), opts).await;
        refused(
            c,
            &format!("put with expiration_ttl {ttl}"),
            r,
            ErrorKind::BadRequest,
            "invalid_ttl",
        )?;
    }
    let got = ok(c, "get", store.get(&key).await)?;
    ensure(c, got.as_deref() == Some(&b"before"[..]), || {
        format!(
            "a put refused for its TTL changed the value to {}",
            show(got.as_deref())
        )
    })?;
    let fresh = format!("{p}fresh");
    let opts = PutOptions {
        expiration_ttl: Some(59),
        ..Default::default()
    };
    let r = store.put(&fresh, Bytes::from_static(b"x"), opts).await;
    refused(
        c,
        "put with expiration_ttl 59 to a new key",
        r,
        ErrorKind::BadRequest,
        "invalid_ttl",
    )?;
    let got = ok(c, "get", store.get(&fresh).await)?;
    ensure(c, got.is_none(), || {
        "a put refused for its TTL created the key".into()
    })?;
    let opts = PutOptions {
        expiration_ttl: Some(kv_limits::MIN_TTL_SECS),
        ..Default::default()
    };
    ok(
        c,
        "put with expiration_ttl 60",
        store.put(&fresh, Bytes::from_static(b"x"), opts).await,
    )?;
    cleanup(store, &[key, fresh]).await;
    Ok(())
}

/// A key with `expiration_ttl` is readable and listed (with an `expiration` in seconds) until the
/// TTL has passed, then gone from `get`, `get_with_metadata` and `list`; a later put without TTL
/// makes a key permanent again.
///
/// With `advance_ms == None` only the part before expiry is checked (the store's time cannot be
/// moved); the `expiration` seconds are checked relative to each other, so no clock is needed.
pub async fn kv_ttl_expires_from_get_and_list(
    store: &dyn KvStore,
    advance_ms: Option<&dyn Fn(u64)>,
) -> Result<(), String> {
    let c = "kv_ttl_expires_from_get_and_list";
    let p = unique_prefix(c)?;
    let (short_key, long_key, plain, made_permanent) = (
        format!("{p}a-60s"),
        format!("{p}b-3600s"),
        format!("{p}c-plain"),
        format!("{p}d-permanent"),
    );
    let ttl = |secs| PutOptions {
        expiration_ttl: Some(secs),
        ..Default::default()
    };
    ok(
        c,
        "put ttl 60",
        store
            .put(&short_key, Bytes::from_static(b"s"), ttl(60))
            .await,
    )?;
    ok(
        c,
        "put ttl 3600",
        store
            .put(&long_key, Bytes::from_static(b"l"), ttl(3600))
            .await,
    )?;
    ok(
        c,
        "put",
        store
            .put(&plain, Bytes::from_static(b"p"), PutOptions::default())
            .await,
    )?;
    ok(
        c,
        "put ttl 60",
        store
            .put(&made_permanent, Bytes::from_static(b"t"), ttl(60))
            .await,
    )?;
    ok(
        c,
        "put without ttl",
        store
            .put(
                &made_permanent,
                Bytes::from_static(b"t"),
                PutOptions::default(),
            )
            .await,
    )?;

    let got = ok(c, "get", store.get(&short_key).await)?;
    ensure(c, got.is_some(), || {
        "a key with a 60 s TTL is missing right after put".into()
    })?;
    let listed = list_all(c, store, &p, None).await?;
    ensure(
        c,
        names(&listed) == [&short_key, &long_key, &plain, &made_permanent],
        || format!("list before expiry showed {:?}", names(&listed)),
    )?;
    let exp = |i: usize| listed[i].expiration;
    let (Some(e60), Some(e3600)) = (exp(0), exp(1)) else {
        return Err(format!("{c}: list shows no expiration for keys with a TTL"));
    };
    ensure(
        c,
        (3538..=3542).contains(&e3600.saturating_sub(e60)),
        || format!("expirations {e60} and {e3600} for TTLs 60 s and 3600 s are not in seconds"),
    )?;
    ensure(c, exp(2).is_none() && exp(3).is_none(), || {
        "list shows an expiration for a key without TTL (or one overwritten without TTL)".into()
    })?;

    let Some(advance) = advance_ms else {
        cleanup(store, &[short_key, long_key, plain, made_permanent]).await;
        return Ok(());
    };
    advance(59_000);
    let got = ok(c, "get", store.get(&short_key).await)?;
    ensure(c, got.is_some(), || {
        "a key with a 60 s TTL vanished after 59 s".into()
    })?;
    advance(2_000);
    let got = ok(c, "get", store.get(&short_key).await)?;
    ensure(c, got.is_none(), || {
        "a key with a 60 s TTL is still readable after 61 s".into()
    })?;
    let got = ok(
        c,
        "get_with_metadata",
        store.get_with_metadata(&short_key).await,
    )?;
    ensure(c, got.is_none(), || {
        "get_with_metadata still returns a key 61 s into a 60 s TTL".into()
    })?;
    let listed = list_all(c, store, &p, None).await?;
    ensure(
        c,
        names(&listed) == [&long_key, &plain, &made_permanent],
        || {
            format!(
                "after the 60 s TTL passed, list showed {:?}",
                names(&listed)
            )
        },
    )?;
    let got = ok(c, "get", store.get(&made_permanent).await)?;
    ensure(c, got.is_some(), || {
        "a put without TTL did not remove the earlier TTL".into()
    })?;
    cleanup(store, &[short_key, long_key, plain, made_permanent]).await;
    Ok(())
}

/// Deleting a key that does not exist succeeds.
pub async fn kv_delete_missing_succeeds(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_delete_missing_succeeds";
    let key = format!("{}never-written", unique_prefix(c)?);
    ok(c, "delete of a missing key", store.delete(&key).await)?;
    ok(
        c,
        "second delete of a missing key",
        store.delete(&key).await,
    )
}

/// After `delete`, `get` and `get_with_metadata` return `None` and `list` does not show the key.
pub async fn kv_delete_removes_from_get_and_list(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_delete_removes_from_get_and_list";
    let p = unique_prefix(c)?;
    let (gone, kept) = (format!("{p}gone"), format!("{p}kept"));
    let opts = PutOptions {
        metadata: Some(json!({"m": 1})),
        ..Default::default()
    };
    ok(
        c,
        "put",
        store.put(&gone, Bytes::from_static(b"x"), opts).await,
    )?;
    ok(
        c,
        "put",
        store
            .put(&kept, Bytes::from_static(b"y"), PutOptions::default())
            .await,
    )?;
    ok(c, "delete", store.delete(&gone).await)?;
    let got = ok(c, "get", store.get(&gone).await)?;
    ensure(c, got.is_none(), || {
        format!("get after delete returned {}", show(got.as_deref()))
    })?;
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&gone).await)?;
    ensure(c, got.is_none(), || {
        "get_with_metadata after delete returned Some".into()
    })?;
    let listed = list_all(c, store, &p, None).await?;
    ensure(c, names(&listed) == [&kept], || {
        format!("list after delete showed {:?}", names(&listed))
    })?;
    let got = ok(c, "get", store.get(&kept).await)?;
    ensure(c, got.as_deref() == Some(&b"y"[..]), || {
        "delete removed another key".into()
    })?;
    cleanup(store, &[kept]).await;
    Ok(())
}

/// Keys are listed in byte order; following cursors with a small `limit` visits every key exactly
/// once, in order, never more than `limit` per page, ending with no cursor.
pub async fn kv_list_is_lexicographic_and_paginates(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_list_is_lexicographic_and_paginates";
    let p = unique_prefix(c)?;
    // Written out of order; byte order differs from case-insensitive and char-class orders.
    let suffixes = ["z", "a0", "é", "B", "a/b", "~", "a", "A", "0", "a-", "ab"];
    let mut keys: Vec<String> = suffixes.iter().map(|s| format!("{p}{s}")).collect();
    for k in &keys {
        ok(
            c,
            "put",
            store
                .put(k, Bytes::from(k.clone()), PutOptions::default())
                .await,
        )?;
    }
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for limit in [
        None,
        Some(1),
        Some(2),
        Some(3),
        Some(keys.len()),
        Some(kv_limits::MAX_LIST_LIMIT),
    ] {
        let listed = list_all(c, store, &p, limit).await?;
        ensure(c, names(&listed) == keys, || {
            format!(
                "with limit {limit:?}, pages visited {:?}, expected {keys:?}",
                names(&listed)
            )
        })?;
    }
    let first = ok(
        c,
        "list",
        store
            .list(ListOptions {
                prefix: Some(p.clone()),
                cursor: None,
                limit: Some(2),
            })
            .await,
    )?;
    ensure(c, first.keys.len() == 2 && first.cursor.is_some(), || {
        format!(
            "a first page of limit 2 out of {} keys had {} keys and cursor {:?}",
            keys.len(),
            first.keys.len(),
            first.cursor
        )
    })?;
    let all = ok(
        c,
        "list",
        store
            .list(ListOptions {
                prefix: Some(p.clone()),
                cursor: None,
                limit: None,
            })
            .await,
    )?;
    ensure(c, all.cursor.is_none(), || {
        "a page holding every key still returned a cursor".into()
    })?;
    cleanup(store, &keys).await;
    Ok(())
}

/// `prefix` keeps exactly the keys starting with it (no neighbours, no shorter keys), and each
/// listed key carries its metadata.
pub async fn kv_list_filters_by_prefix_and_carries_metadata(
    store: &dyn KvStore,
) -> Result<(), String> {
    let c = "kv_list_filters_by_prefix_and_carries_metadata";
    let p = unique_prefix(c)?;
    let inside = [
        format!("{p}cred/a"),
        format!("{p}cred/b"),
        format!("{p}cred/"),
    ];
    let outside = [
        format!("{p}cred"),
        format!("{p}cre"),
        format!("{p}creds/a"),
        format!("{p}cred0"),
    ];
    for (i, k) in inside.iter().chain(&outside).enumerate() {
        let opts = PutOptions {
            metadata: Some(json!({ "i": i })),
            ..Default::default()
        };
        ok(c, "put", store.put(k, Bytes::from_static(b"v"), opts).await)?;
    }
    let listed = list_all(c, store, &format!("{p}cred/"), None).await?;
    let expected = [&inside[2], &inside[0], &inside[1]];
    ensure(c, names(&listed) == expected, || {
        format!(
            "list with prefix {p}cred/ showed {:?}, expected {expected:?}",
            names(&listed)
        )
    })?;
    let metas: Vec<_> = listed.iter().map(|k| k.metadata.clone()).collect();
    let want = [
        Some(json!({"i": 2})),
        Some(json!({"i": 0})),
        Some(json!({"i": 1})),
    ];
    ensure(c, metas == want, || {
        format!(
            "listed metadata {} expected {want:?}",
            short(format!("{metas:?}"))
        )
    })?;
    let all = list_all(c, store, &p, None).await?;
    ensure(c, all.len() == inside.len() + outside.len(), || {
        format!(
            "list with the check's own prefix showed {} keys, expected 7",
            all.len()
        )
    })?;
    let everything: Vec<String> = inside.into_iter().chain(outside).collect();
    cleanup(store, &everything).await;
    Ok(())
}

/// Without `limit` a page holds at most 1000 keys: 1001 keys take two pages (1000 + 1).
pub async fn kv_list_default_limit_is_1000(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_list_default_limit_is_1000";
    let p = unique_prefix(c)?;
    let keys: Vec<String> = (0..=kv_limits::MAX_LIST_LIMIT)
        .map(|i| format!("{p}{i:05}"))
        .collect();
    for chunk in keys.chunks(50) {
        let puts = chunk
            .iter()
            .map(|k| store.put(k, Bytes::from_static(b"v"), PutOptions::default()));
        for r in join_all(puts).await {
            ok(c, "put", r)?;
        }
    }
    let opts = ListOptions {
        prefix: Some(p.clone()),
        cursor: None,
        limit: None,
    };
    let first = ok(c, "list", store.list(opts).await)?;
    ensure(
        c,
        first.keys.len() == kv_limits::MAX_LIST_LIMIT && first.cursor.is_some(),
        || {
            format!(
                "first default page of 1001 keys had {} keys, cursor {:?}",
                first.keys.len(),
                first.cursor.is_some()
            )
        },
    )?;
    let opts = ListOptions {
        prefix: Some(p.clone()),
        cursor: first.cursor,
        limit: None,
    };
    let second = ok(c, "list with cursor", store.list(opts).await)?;
    ensure(
        c,
        names(&second.keys) == [&keys[kv_limits::MAX_LIST_LIMIT]] && second.cursor.is_none(),
        || {
            format!(
                "second default page was {:?} with cursor {:?}",
                names(&second.keys),
                second.cursor.is_some()
            )
        },
    )?;
    cleanup(store, &keys).await;
    Ok(())
}

/// `limit` 0 or above 1000 is `BadRequest`/`invalid_limit`.
pub async fn kv_list_refuses_invalid_limit(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_list_refuses_invalid_limit";
    let p = unique_prefix(c)?;
    for limit in [0, kv_limits::MAX_LIST_LIMIT + 1, usize::MAX] {
        let r = store
            .list(ListOptions {
                prefix: Some(p.clone()),
                cursor: None,
                limit: Some(limit),
            })
            .await;
        refused(
            c,
            &format!("list with limit {limit}"),
            r,
            ErrorKind::BadRequest,
            "invalid_limit",
        )?;
    }
    Ok(())
}

/// A malformed cursor is `BadRequest`/`invalid_cursor`.
pub async fn kv_list_refuses_malformed_cursor(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_list_refuses_malformed_cursor";
    let p = unique_prefix(c)?;
    ok(
        c,
        "put",
        store
            .put(
                &format!("{p}k"),
                Bytes::from_static(b"v"),
                PutOptions::default(),
            )
            .await,
    )?;
    for cursor in ["%%% not a cursor %%%", "\u{0}\u{1}", "*"] {
        let opts = ListOptions {
            prefix: Some(p.clone()),
            cursor: Some(cursor.to_string()),
            limit: None,
        };
        let r = store.list(opts).await;
        refused(
            c,
            &format!("list with cursor {cursor:?}"),
            r,
            ErrorKind::BadRequest,
            "invalid_cursor",
        )?;
    }
    cleanup(store, &[format!("{p}k")]).await;
    Ok(())
}

/// Concurrent puts of different values (each with matching metadata) to one key leave exactly one
/// of the written values, with its own metadata: no torn or mixed write.
pub async fn kv_concurrent_puts_leave_one_whole_write(store: &dyn KvStore) -> Result<(), String> {
    let c = "kv_concurrent_puts_leave_one_whole_write";
    let key = format!("{}k", unique_prefix(c)?);
    let n = 16;
    let values: Vec<Bytes> = (0..n)
        .map(|i| Bytes::from(format!("value-{i}-{}", "x".repeat(i * 97))))
        .collect();
    let puts = values.iter().enumerate().map(|(i, v)| {
        let opts = PutOptions {
            metadata: Some(json!({ "writer": i })),
            ..Default::default()
        };
        store.put(&key, v.clone(), opts)
    });
    for r in join_all(puts).await {
        ok(c, "concurrent put", r)?;
    }
    let got = ok(c, "get_with_metadata", store.get_with_metadata(&key).await)?;
    let Some(entry) = got else {
        return Err(format!(
            "{c}: the key is missing after {n} acknowledged puts"
        ));
    };
    let writer = values.iter().position(|v| *v == entry.value);
    ensure(c, writer.is_some(), || {
        format!(
            "the value read, {}, is none of the values written",
            show(Some(&entry.value))
        )
    })?;
    ensure(
        c,
        entry.metadata == Some(json!({ "writer": writer })),
        || {
            format!(
                "value of writer {writer:?} came with metadata {}",
                short(format!("{:?}", entry.metadata))
            )
        },
    )?;
    cleanup(store, &[key]).await;
    Ok(())
}
