//! The [`KvStore`] conformance checks about `list` and TTL expiry (the rest is in `kv.rs`).

use bytes::Bytes;
use futures::future::join_all;
use serde_json::json;

use super::{cleanup, ensure, list_all, names, ok, refused, short, unique_prefix};
use crate::error::{Code, ErrorKind};
use crate::ports::{kv_limits, KvStore, ListOptions, PutOptions};

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
            Code::InvalidLimit,
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
            Code::InvalidCursor,
        )?;
    }
    cleanup(store, &[format!("{p}k")]).await;
    Ok(())
}
