//! The [`KvStore`] conformance suite: one check per `# Behavior` sentence (list and TTL checks
//! are in `kv_list.rs`).

use bytes::Bytes;
use futures::future::join_all;
use serde_json::json;

use super::kv_list::*;
use super::{cleanup, ensure, list_all, names, ok, refused, short, show, unique_prefix};
use crate::error::{Code, ErrorKind};
use crate::ports::{kv_limits, KvStore, PutOptions};

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
    kv_get_is_get_with_metadata_without_metadata(store).await?;
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
            Code::InvalidKey,
        )?;
        refused(
            c,
            &format!("get_with_metadata of {label}"),
            store.get_with_metadata(bad).await,
            ErrorKind::BadRequest,
            Code::InvalidKey,
        )?;
        let put = store
            .put(bad, Bytes::from_static(b"v"), PutOptions::default())
            .await;
        refused(
            c,
            &format!("put of {label}"),
            put,
            ErrorKind::BadRequest,
            Code::InvalidKey,
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

/// `get` returns what `get_with_metadata` returns, without the metadata, for a key written with
/// metadata, one rewritten without, and a deleted one (the provided `get` does so by
/// construction; this holds every override to it).
pub async fn kv_get_is_get_with_metadata_without_metadata(
    store: &dyn KvStore,
) -> Result<(), String> {
    let c = "kv_get_is_get_with_metadata_without_metadata";
    let key = format!("{}k", unique_prefix(c)?);
    let with_meta = PutOptions {
        metadata: Some(json!({"alias": "github", "allowed_hosts": ["api.github.com"]})),
        ..Default::default()
    };
    let put = store
        .put(&key, Bytes::from_static(b"with"), with_meta)
        .await;
    ok(c, "put with metadata", put)?;
    get_agrees(c, store, &key, "written with metadata", Some(b"with")).await?;
    let put = store
        .put(&key, Bytes::from_static(b"without"), PutOptions::default())
        .await;
    ok(c, "put without metadata", put)?;
    get_agrees(
        c,
        store,
        &key,
        "rewritten without metadata",
        Some(b"without"),
    )
    .await?;
    ok(c, "delete", store.delete(&key).await)?;
    get_agrees(c, store, &key, "deleted", None).await
}

/// `get` and `get_with_metadata`'s value both read `want` under `key`.
async fn get_agrees(
    c: &str,
    store: &dyn KvStore,
    key: &str,
    step: &str,
    want: Option<&[u8]>,
) -> Result<(), String> {
    let full = ok(c, "get_with_metadata", store.get_with_metadata(key).await)?;
    let plain = ok(c, "get", store.get(key).await)?;
    let full_value = full.as_ref().map(|e| e.value.as_ref());
    ensure(
        c,
        plain.as_deref() == full_value && full_value == want,
        || {
            format!(
                "key {step}: get returned {}, get_with_metadata's value {}, expected {}",
                show(plain.as_deref()),
                show(full_value),
                show(want)
            )
        },
    )
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
        Code::ValueTooLarge,
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
        Code::ValueTooLarge,
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
        Code::MetadataTooLarge,
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
            Code::InvalidTtl,
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
        Code::InvalidTtl,
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
