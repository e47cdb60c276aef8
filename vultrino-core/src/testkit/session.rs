//! The [`SessionStore`] conformance suite: one check per `# Behavior` sentence.
//!
//! Time is an argument of every `SessionStore` method, so these checks need no clock control and
//! run unchanged against any implementation.

use futures::future::join_all;

use super::{ensure, ok, short, unique_prefix};
use crate::ports::{Hit, SessionRecord, SessionStore};

/// An arbitrary "now" (2023-11-14), far from 0 so that `now - x` arithmetic bugs show.
const T0: u64 = 1_700_000_000_000;
const IDLE: u64 = 30 * 60 * 1000;
const ABSOLUTE: u64 = 12 * 60 * 60 * 1000;

fn record(subject: &str, now: u64) -> SessionRecord {
    SessionRecord {
        subject: subject.to_string(),
        csrf_hash: "ab".repeat(32),
        created_at_ms: now,
        last_seen_ms: now,
        idle_timeout_ms: IDLE,
        expires_at_ms: now + ABSOLUTE,
        // Set, so the round trips below check that a store keeps every field.
        via_cookie: true,
        twin: Some("cd".repeat(32)),
    }
}

fn show(r: &Option<SessionRecord>) -> String {
    short(format!("{r:?}"))
}

/// Run every [`SessionStore`] check against `store`; `Err` names the first property that failed.
pub async fn session_suite(store: &dyn SessionStore) -> Result<(), String> {
    session_create_then_touch_returns_record(store).await?;
    session_create_replaces_existing(store).await?;
    session_unknown_is_none(store).await?;
    session_idle_expiry_is_exact(store).await?;
    session_absolute_expiry_is_exact_and_touch_never_moves_it(store).await?;
    session_touch_marks_used_and_returns_updated_record(store).await?;
    session_touch_never_moves_last_seen_back(store).await?;
    session_dead_session_is_not_revived(store).await?;
    session_revoke_is_immediate(store).await?;
    session_hit_counts_within_fixed_window(store).await?;
    session_hit_window_starts_at_first_hit_after_end(store).await?;
    session_hit_is_exact_under_concurrency(store).await?;
    session_counters_are_independent(store).await?;
    session_reset_counter_starts_fresh_window(store).await?;
    session_mark_is_single_use(store).await?;
    session_mark_is_single_use_under_concurrency(store).await?;
    session_marker_expires_after_ttl(store).await?;
    approval_round_trip_and_listing(store).await?;
    approval_consume_is_exact_under_concurrency(store).await?;
    approval_consume_checks_key_binding_and_status(store).await?;
    approval_expiry_is_reported_once(store).await?;
    Ok(())
}

// ----- approvals (SessionStore::approval) ----------------------------------------------------

fn approval(key: &str, created_at: u64) -> crate::approvals::Approval {
    crate::approvals::Approval {
        id: crate::approvals::new_id(),
        status: crate::approvals::Status::Pending,
        credential: "c".into(),
        method: "POST".into(),
        url: "https://api.example.com/x?y=1".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body_sha256: "00".repeat(32),
        body_size: 3,
        body_preview: "abc".into(),
        body_truncated: false,
        reason: Some("why".into()),
        via: crate::approvals::Via::Proxy,
        requested_by: format!("key:{key}"),
        requested_by_key: key.into(),
        requested_by_token: None,
        binding: "ab".repeat(32),
        created_at,
        expires_at: created_at + 600_000,
        decided_at: None,
        decided_by: None,
        note: None,
        executed_at: None,
    }
}

use crate::ports::approval_rules::{Consumed, Decided, Op, Reply};

async fn create(
    store: &dyn SessionStore,
    c: &str,
    a: &crate::approvals::Approval,
) -> Result<(), String> {
    let op = Op::Create {
        approval: Box::new(a.clone()),
        now_ms: a.created_at,
    };
    ok(c, "create", store.approval(op).await).map(|_| ())
}

async fn get(store: &dyn SessionStore, c: &str, id: &str, now_ms: u64) -> Result<Reply, String> {
    ok(
        c,
        "get",
        store
            .approval(Op::Get {
                id: id.into(),
                now_ms,
            })
            .await,
    )
}

async fn approve(
    store: &dyn SessionStore,
    c: &str,
    id: &str,
    now_ms: u64,
) -> Result<Decided, String> {
    let op = Op::Decide {
        id: id.into(),
        approve: true,
        by: "admin:a".into(),
        note: None,
        ttl_ms: 600_000,
        now_ms,
    };
    match ok(c, "decide", store.approval(op).await)? {
        Reply::Decided { decided, .. } => Ok(decided),
        r => Err(format!("{c}: decide gave {}", short(format!("{r:?}")))),
    }
}

async fn consume(
    store: &dyn SessionStore,
    c: &str,
    id: &str,
    key: &str,
    binding: &str,
    now_ms: u64,
) -> Result<Consumed, String> {
    let op = Op::Consume {
        id: id.into(),
        key: key.into(),
        token: None,
        binding: binding.into(),
        now_ms,
    };
    match ok(c, "consume", store.approval(op).await)? {
        Reply::Consumed { consumed, .. } => Ok(consumed),
        r => Err(format!("{c}: consume gave {}", short(format!("{r:?}")))),
    }
}

/// A created approval reads back with every field as written; a key's listing is its own
/// approvals, newest first.
pub async fn approval_round_trip_and_listing(store: &dyn SessionStore) -> Result<(), String> {
    let c = "approval_round_trip_and_listing";
    let key = unique_prefix(c)?;
    let first = approval(&key, T0);
    let second = approval(&key, T0 + 1);
    create(store, c, &first).await?;
    create(store, c, &second).await?;
    let got = get(store, c, &first.id, T0 + 2).await?;
    ensure(
        c,
        matches!(&got, Reply::Approval { approval: Some(a), .. } if **a == first),
        || {
            format!(
                "get returned {}, not the record written",
                short(format!("{got:?}"))
            )
        },
    )?;
    let op = Op::List {
        key: Some(key.clone()),
        token: None,
        status: None,
        before: None,
        limit: 100,
        now_ms: T0 + 2,
    };
    let listed = ok(c, "list", store.approval(op).await)?;
    let ids: Vec<String> = match &listed {
        Reply::List { approvals, .. } => approvals.iter().map(|a| a.id.clone()).collect(),
        _ => Vec::new(),
    };
    ensure(c, ids == [second.id.clone(), first.id.clone()], || {
        format!("the key's listing is {ids:?}, expected its two approvals newest first")
    })
}

/// Of 20 concurrent consumes of one approved approval, exactly one finds it `Run`.
pub async fn approval_consume_is_exact_under_concurrency(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "approval_consume_is_exact_under_concurrency";
    let key = unique_prefix(c)?;
    let a = approval(&key, T0);
    create(store, c, &a).await?;
    approve(store, c, &a.id, T0 + 1).await?;
    let consumes = (0..20).map(|_| consume(store, c, &a.id, &key, &a.binding, T0 + 2));
    let mut runs = 0;
    for r in join_all(consumes).await {
        if matches!(r?, Consumed::Run { .. }) {
            runs += 1;
        }
    }
    ensure(c, runs == 1, || {
        format!("20 concurrent consumes ran {runs} times, expected once")
    })
}

/// Consume refuses another key (not found), another binding (mismatch, approval unchanged) and
/// a pending approval; only a pending approval is decided.
pub async fn approval_consume_checks_key_binding_and_status(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "approval_consume_checks_key_binding_and_status";
    let key = unique_prefix(c)?;
    let a = approval(&key, T0);
    create(store, c, &a).await?;
    let pending = consume(store, c, &a.id, &key, &a.binding, T0 + 1).await?;
    ensure(c, matches!(pending, Consumed::NotApproved { .. }), || {
        "a pending approval was consumed".into()
    })?;
    approve(store, c, &a.id, T0 + 2).await?;
    let again = approve(store, c, &a.id, T0 + 3).await?;
    ensure(c, matches!(again, Decided::NotPending { .. }), || {
        "an approved approval was decided again".into()
    })?;
    let other = consume(store, c, &a.id, "another-key", &a.binding, T0 + 4).await?;
    ensure(c, other == Consumed::NotFound, || {
        "another key consumed it".into()
    })?;
    let mismatch = consume(store, c, &a.id, &key, &"cd".repeat(32), T0 + 4).await?;
    ensure(c, matches!(mismatch, Consumed::Mismatch { .. }), || {
        "another binding was not a mismatch".into()
    })?;
    let run = consume(store, c, &a.id, &key, &a.binding, T0 + 5).await?;
    ensure(c, matches!(run, Consumed::Run { .. }), || {
        "the approved request did not run after a mismatch".into()
    })
}

/// A pending approval past `expires_at` reads `expired`, reported by exactly one reply.
pub async fn approval_expiry_is_reported_once(store: &dyn SessionStore) -> Result<(), String> {
    let c = "approval_expiry_is_reported_once";
    let key = unique_prefix(c)?;
    let a = approval(&key, T0);
    create(store, c, &a).await?;
    let before = get(store, c, &a.id, a.expires_at - 1).await?;
    ensure(c, before.expired().is_empty(), || {
        "expired before expires_at".into()
    })?;
    let at = get(store, c, &a.id, a.expires_at).await?;
    let status = match &at {
        Reply::Approval {
            approval: Some(x), ..
        } => Some(x.status),
        _ => None,
    };
    ensure(
        c,
        status == Some(crate::approvals::Status::Expired) && at.expired().len() == 1,
        || {
            format!(
                "at expires_at: status {status:?}, reported {}",
                at.expired().len()
            )
        },
    )?;
    let later = get(store, c, &a.id, a.expires_at + 1).await?;
    ensure(c, later.expired().is_empty(), || {
        "the expiry was reported twice".into()
    })
}

/// `rec` as a touch at `now` returns it: every field as written, `last_seen_ms = now`.
fn touched(rec: &SessionRecord, now: u64) -> SessionRecord {
    SessionRecord {
        last_seen_ms: now,
        ..rec.clone()
    }
}

/// Create sessions `<prefix>0`, `<prefix>1`, … from `record("admin", T0)`; returns their ids.
async fn create_n(
    c: &str,
    store: &dyn SessionStore,
    prefix: &str,
    n: usize,
) -> Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{prefix}{i}");
        ok(
            c,
            "create_session",
            store.create_session(&id, record("admin", T0)).await,
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// After `create_session`, `touch_session` returns the record as written (but `last_seen_ms`).
pub async fn session_create_then_touch_returns_record(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_create_then_touch_returns_record";
    let id = format!("{}id", unique_prefix(c)?);
    let rec = record("admin", T0);
    ok(
        c,
        "create_session",
        store.create_session(&id, rec.clone()).await,
    )?;
    let got = ok(c, "touch_session", store.touch_session(&id, T0 + 1).await)?;
    let want = touched(&rec, T0 + 1);
    ensure(c, got.as_ref() == Some(&want), || {
        format!("touch_session returned {}, expected {want:?}", show(&got))
    })
}

/// Creating an `id` that exists replaces the record.
pub async fn session_create_replaces_existing(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_create_replaces_existing";
    let id = format!("{}id", unique_prefix(c)?);
    ok(
        c,
        "create_session",
        store.create_session(&id, record("first", T0)).await,
    )?;
    let mut second = record("second", T0 + 5);
    second.via_cookie = false;
    second.twin = None;
    ok(
        c,
        "second create_session",
        store.create_session(&id, second.clone()).await,
    )?;
    let got = ok(c, "touch_session", store.touch_session(&id, T0 + 6).await)?;
    let want = touched(&second, T0 + 6);
    ensure(c, got.as_ref() == Some(&want), || {
        format!("after re-create, touch_session returned {}", show(&got))
    })
}

/// Unknown sessions read as `None` from `touch_session`, and touching one does not create it.
pub async fn session_unknown_is_none(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_unknown_is_none";
    let id = format!("{}never-created", unique_prefix(c)?);
    for now in [T0, T0 + 1] {
        let got = ok(c, "touch_session", store.touch_session(&id, now).await)?;
        ensure(c, got.is_none(), || {
            format!("touch_session of an unknown id returned {}", show(&got))
        })?;
    }
    Ok(())
}

/// A session is alive until `last_seen_ms + idle_timeout_ms` and dead from that instant on.
pub async fn session_idle_expiry_is_exact(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_idle_expiry_is_exact";
    // Two twins: a touch extends the session it finds alive, so each instant needs its own.
    let ids = create_n(c, store, &unique_prefix(c)?, 2).await?;
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[0], T0 + IDLE - 1).await,
    )?;
    ensure(c, got.is_some(), || {
        "session dead 1 ms before its idle timeout".into()
    })?;
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[1], T0 + IDLE).await,
    )?;
    ensure(c, got.is_none(), || {
        "touch_session returns a session at now == last_seen + idle_timeout".into()
    })
}

/// A session is dead from `expires_at_ms` on however recently it was touched.
pub async fn session_absolute_expiry_is_exact_and_touch_never_moves_it(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_absolute_expiry_is_exact_and_touch_never_moves_it";
    let id = format!("{}id", unique_prefix(c)?);
    let rec = record("admin", T0);
    ok(
        c,
        "create_session",
        store.create_session(&id, rec.clone()).await,
    )?;
    // Keep it busy (touch every 20 min, within the 30 min idle timeout) until absolute expiry.
    let mut now = T0;
    while now + 20 * 60 * 1000 < rec.expires_at_ms {
        now += 20 * 60 * 1000;
        let got = ok(c, "touch_session", store.touch_session(&id, now).await)?;
        ensure(
            c,
            got.as_ref()
                .is_some_and(|r| r.expires_at_ms == rec.expires_at_ms),
            || format!("touch at +{} ms returned {}", now - T0, show(&got)),
        )?;
    }
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&id, rec.expires_at_ms - 1).await,
    )?;
    ensure(c, got.is_some(), || {
        "a busy session died before its absolute expiry".into()
    })?;
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&id, rec.expires_at_ms).await,
    )?;
    ensure(c, got.is_none(), || {
        "touch_session returns a session at now == expires_at_ms".into()
    })
}

/// `touch_session` returns the record with `last_seen_ms = now` (all else unchanged), and idle
/// expiry then counts from that instant.
pub async fn session_touch_marks_used_and_returns_updated_record(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_touch_marks_used_and_returns_updated_record";
    let ids = create_n(c, store, &unique_prefix(c)?, 2).await?;
    let t1 = T0 + IDLE - 10;
    let want = touched(&record("admin", T0), t1);
    for id in &ids {
        let got = ok(c, "touch_session", store.touch_session(id, t1).await)?;
        ensure(c, got.as_ref() == Some(&want), || {
            format!("touch_session returned {}, expected {want:?}", show(&got))
        })?;
    }
    // Without the touch both would be dead by now (T0 + IDLE has passed).
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[0], t1 + IDLE - 1).await,
    )?;
    ensure(c, got.is_some(), || {
        "idle expiry did not restart from the touch".into()
    })?;
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[1], t1 + IDLE).await,
    )?;
    ensure(c, got.is_none(), || {
        "session alive past idle timeout counted from the touch".into()
    })
}

/// A touch with an earlier `now_ms` than the last touch leaves `last_seen_ms`, and so the idle
/// expiry, where the later touch put it.
pub async fn session_touch_never_moves_last_seen_back(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_touch_never_moves_last_seen_back";
    let ids = create_n(c, store, &unique_prefix(c)?, 2).await?;
    let later = T0 + IDLE / 2;
    for id in &ids {
        ok(c, "touch_session", store.touch_session(id, later).await)?;
        let got = ok(
            c,
            "late touch_session",
            store.touch_session(id, T0 + 1).await,
        )?;
        ensure(
            c,
            got.as_ref().is_some_and(|r| r.last_seen_ms == later),
            || {
                format!(
                    "a touch at an earlier instant than the last returned {}",
                    show(&got)
                )
            },
        )?;
    }
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[0], later + IDLE - 1).await,
    )?;
    ensure(c, got.is_some(), || {
        "a late touch with an earlier now_ms shortened the session".into()
    })?;
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&ids[1], later + IDLE).await,
    )?;
    ensure(c, got.is_none(), || {
        "session alive past idle timeout counted from the last touch".into()
    })
}

/// A dead session is not revived: not by touching it again, not by a later call carrying an
/// earlier `now_ms` (idle and absolute expiry alike).
pub async fn session_dead_session_is_not_revived(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_dead_session_is_not_revived";
    let p = unique_prefix(c)?;
    for (kind, dead_at) in [("idle", T0 + IDLE + 5), ("absolute", T0 + ABSOLUTE)] {
        let id = format!("{p}{kind}");
        ok(
            c,
            "create_session",
            store.create_session(&id, record("admin", T0)).await,
        )?;
        if kind == "absolute" {
            // Busy until the end, so that only the absolute expiry kills it.
            let mut now = T0;
            while now + 20 * 60 * 1000 < dead_at {
                now += 20 * 60 * 1000;
                let got = ok(c, "touch_session", store.touch_session(&id, now).await)?;
                ensure(c, got.is_some(), || {
                    format!("a busy session died at +{} ms", now - T0)
                })?;
            }
        }
        for (step, now) in [
            ("touch at death", dead_at),
            ("second touch", dead_at),
            ("touch after death", dead_at + 1),
            ("touch with an earlier now_ms", dead_at - 10),
            ("touch with the creation time", T0 + 1),
        ] {
            let got = ok(c, step, store.touch_session(&id, now).await)?;
            ensure(c, got.is_none(), || {
                format!(
                    "{step} of an {kind}-expired session returned {}",
                    show(&got)
                )
            })?;
        }
    }
    Ok(())
}

/// After `revoke_session`, `touch_session` returns `None` at once; other sessions live on;
/// revoking an unknown session succeeds.
pub async fn session_revoke_is_immediate(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_revoke_is_immediate";
    let p = unique_prefix(c)?;
    let (id, other) = (format!("{p}id"), format!("{p}other"));
    ok(
        c,
        "create_session",
        store.create_session(&id, record("admin", T0)).await,
    )?;
    ok(
        c,
        "create_session",
        store.create_session(&other, record("admin", T0)).await,
    )?;
    ok(c, "revoke_session", store.revoke_session(&id).await)?;
    for now in [T0 + 1, T0] {
        let got = ok(c, "touch_session", store.touch_session(&id, now).await)?;
        ensure(c, got.is_none(), || {
            format!("touch_session right after revoke returned {}", show(&got))
        })?;
    }
    let got = ok(
        c,
        "touch_session",
        store.touch_session(&other, T0 + 1).await,
    )?;
    ensure(c, got.is_some(), || {
        "revoking one session removed another".into()
    })?;
    ok(
        c,
        "revoke of an unknown session",
        store.revoke_session(&format!("{p}unknown")).await,
    )?;
    ok(c, "second revoke", store.revoke_session(&id).await)
}

fn expect_hit(c: &str, at: &str, got: Hit, want: Hit) -> Result<(), String> {
    ensure(c, got == want, || {
        format!("{at}: hit returned {got:?}, expected {want:?}")
    })
}

/// Within a window the first `limit` hits are allowed with counts 1..=limit, later ones refused
/// without counting past `limit`; `reset_at_ms` is the window's end; the window's end starts a
/// new one.
pub async fn session_hit_counts_within_fixed_window(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_hit_counts_within_fixed_window";
    let key = format!("{}ip", unique_prefix(c)?);
    let (window, limit) = (60_000, 3);
    let end = T0 + window;
    for i in 1..=limit {
        let got = ok(
            c,
            "hit",
            store.hit(&key, window, limit, T0 + u64::from(i - 1)).await,
        )?;
        expect_hit(
            c,
            &format!("hit {i}"),
            got,
            Hit {
                allowed: true,
                count: i,
                reset_at_ms: end,
            },
        )?;
    }
    for (i, now) in [(4, T0 + 10), (5, T0 + 30_000), (6, end - 1)] {
        let got = ok(c, "hit", store.hit(&key, window, limit, now).await)?;
        expect_hit(
            c,
            &format!("hit {i} over the limit"),
            got,
            Hit {
                allowed: false,
                count: limit,
                reset_at_ms: end,
            },
        )?;
    }
    let got = ok(c, "hit", store.hit(&key, window, limit, end).await)?;
    expect_hit(
        c,
        "first hit at the window's end",
        got,
        Hit {
            allowed: true,
            count: 1,
            reset_at_ms: end + window,
        },
    )
}

/// A new window starts at the first hit after the previous one ended (not on a fixed grid).
pub async fn session_hit_window_starts_at_first_hit_after_end(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_hit_window_starts_at_first_hit_after_end";
    let key = format!("{}ip", unique_prefix(c)?);
    let (window, limit) = (1_000, 2);
    let got = ok(c, "hit", store.hit(&key, window, limit, T0).await)?;
    expect_hit(
        c,
        "first hit",
        got,
        Hit {
            allowed: true,
            count: 1,
            reset_at_ms: T0 + window,
        },
    )?;
    let later = T0 + 5 * window + 123;
    let got = ok(c, "hit", store.hit(&key, window, limit, later).await)?;
    expect_hit(
        c,
        "hit long after the window",
        got,
        Hit {
            allowed: true,
            count: 1,
            reset_at_ms: later + window,
        },
    )?;
    let got = ok(
        c,
        "hit",
        store.hit(&key, window, limit, later + window - 1).await,
    )?;
    expect_hit(
        c,
        "second hit in the new window",
        got,
        Hit {
            allowed: true,
            count: 2,
            reset_at_ms: later + window,
        },
    )
}

/// N concurrent hits with limit L allow exactly min(N, L), with counts 1..=L each once.
pub async fn session_hit_is_exact_under_concurrency(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_hit_is_exact_under_concurrency";
    let p = unique_prefix(c)?;
    for (n, limit) in [(64u32, 7u32), (5, 10)] {
        let key = format!("{p}n{n}-l{limit}");
        let hits = (0..n).map(|_| store.hit(&key, 60_000, limit, T0));
        let mut allowed_counts = Vec::new();
        for r in join_all(hits).await {
            let hit = ok(c, "concurrent hit", r)?;
            if hit.allowed {
                allowed_counts.push(hit.count);
            } else {
                ensure(c, hit.count == limit, || {
                    format!(
                        "a refused hit reported count {} with limit {limit}",
                        hit.count
                    )
                })?;
            }
        }
        allowed_counts.sort_unstable();
        let want: Vec<u32> = (1..=n.min(limit)).collect();
        ensure(c, allowed_counts == want, || {
            format!("{n} concurrent hits with limit {limit} allowed counts {allowed_counts:?}, expected {want:?}")
        })?;
    }
    Ok(())
}

/// Counters with different keys do not share hits.
pub async fn session_counters_are_independent(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_counters_are_independent";
    let p = unique_prefix(c)?;
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    for _ in 0..3 {
        ok(c, "hit", store.hit(&a, 60_000, 2, T0).await)?;
    }
    let got = ok(c, "hit", store.hit(&b, 60_000, 2, T0).await)?;
    expect_hit(
        c,
        "first hit on another key",
        got,
        Hit {
            allowed: true,
            count: 1,
            reset_at_ms: T0 + 60_000,
        },
    )
}

/// After `reset_counter` the next hit starts a fresh window; resetting an unknown counter succeeds.
pub async fn session_reset_counter_starts_fresh_window(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_reset_counter_starts_fresh_window";
    let p = unique_prefix(c)?;
    let key = format!("{p}ip");
    for i in 0..3 {
        ok(c, "hit", store.hit(&key, 60_000, 2, T0 + i).await)?;
    }
    ok(c, "reset_counter", store.reset_counter(&key).await)?;
    let now = T0 + 10;
    let got = ok(c, "hit", store.hit(&key, 60_000, 2, now).await)?;
    expect_hit(
        c,
        "hit after reset",
        got,
        Hit {
            allowed: true,
            count: 1,
            reset_at_ms: now + 60_000,
        },
    )?;
    ok(
        c,
        "reset of an unknown counter",
        store.reset_counter(&format!("{p}unknown")).await,
    )
}

/// `mark` returns `true` once and `false` while the marker is set; `is_marked` is `false` before.
pub async fn session_mark_is_single_use(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_mark_is_single_use";
    let p = unique_prefix(c)?;
    let (key, other) = (format!("{p}nonce"), format!("{p}other"));
    let before = ok(c, "is_marked", store.is_marked(&key, T0).await)?;
    ensure(c, !before, || "is_marked is true before any mark".into())?;
    let first = ok(c, "mark", store.mark(&key, 60_000, T0).await)?;
    ensure(c, first, || "the first mark returned false".into())?;
    let marked = ok(c, "is_marked", store.is_marked(&key, T0 + 1).await)?;
    ensure(c, marked, || "is_marked is false right after mark".into())?;
    let second = ok(c, "mark", store.mark(&key, 60_000, T0 + 2).await)?;
    ensure(c, !second, || {
        "a second mark of a set marker returned true".into()
    })?;
    let other_marked = ok(c, "is_marked", store.is_marked(&other, T0 + 3).await)?;
    ensure(c, !other_marked, || "marking one key set another".into())
}

/// N concurrent `mark` calls on one key return `true` exactly once.
pub async fn session_mark_is_single_use_under_concurrency(
    store: &dyn SessionStore,
) -> Result<(), String> {
    let c = "session_mark_is_single_use_under_concurrency";
    let key = format!("{}nonce", unique_prefix(c)?);
    let marks = (0..64).map(|_| store.mark(&key, 60_000, T0));
    let mut winners = 0;
    for r in join_all(marks).await {
        if ok(c, "concurrent mark", r)? {
            winners += 1;
        }
    }
    ensure(c, winners == 1, || {
        format!("64 concurrent marks returned true {winners} times, expected once")
    })
}

/// A marker is set for exactly `ttl_ms`; once expired, `mark` sets it again (returns `true`).
pub async fn session_marker_expires_after_ttl(store: &dyn SessionStore) -> Result<(), String> {
    let c = "session_marker_expires_after_ttl";
    let key = format!("{}nonce", unique_prefix(c)?);
    let ttl = 5_000;
    ensure(c, ok(c, "mark", store.mark(&key, ttl, T0).await)?, || {
        "the first mark returned false".into()
    })?;
    let at_end = ok(c, "is_marked", store.is_marked(&key, T0 + ttl - 1).await)?;
    ensure(c, at_end, || "marker gone 1 ms before its TTL".into())?;
    let after = ok(c, "is_marked", store.is_marked(&key, T0 + ttl).await)?;
    ensure(c, !after, || {
        "marker still set at now == marked_at + ttl_ms".into()
    })?;
    let again = ok(c, "mark", store.mark(&key, ttl, T0 + ttl).await)?;
    ensure(c, again, || {
        "mark of an expired marker returned false".into()
    })?;
    let set = ok(c, "is_marked", store.is_marked(&key, T0 + ttl + 1).await)?;
    ensure(c, set, || "a re-set marker is not marked".into())
}
