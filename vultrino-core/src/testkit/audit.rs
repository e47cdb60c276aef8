//! The [`AuditStore`] conformance suite: one check per `# Behavior` sentence.
//!
//! Checks share the store: each writes events of its own actor (`testkit:<check>:<run id>`)
//! and queries with that actor as filter, so it sees only its own events whatever else the
//! store holds. Events are dated in the future (so a store with history still lists them
//! first) and kept the shortest retention (60 s): an audit store has no delete.

use super::{ensure, ok, refused, short, unique_prefix};
use crate::audit::{new_id, AuditEvent, AuditFilter};
use crate::error::{Code, ErrorKind};
use crate::ports::AuditStore;

/// 2096-10-02: later than any real event, so these sort first.
const T0: u64 = 4_000_000_000_000;
const RETENTION: u64 = 60;

/// The actor of one run of one check.
fn actor(check: &str) -> Result<String, String> {
    Ok(format!(
        "testkit:{}",
        unique_prefix(check)?.trim_end_matches('/')
    ))
}

fn event(actor: &str, ts: u64, outcome: &str) -> AuditEvent {
    let mut e = AuditEvent::new(ts, actor, "execute", outcome);
    e.id = new_id(ts);
    e
}

fn only(actor: &str) -> AuditFilter {
    AuditFilter {
        actor: Some(actor.to_string()),
        ..AuditFilter::default()
    }
}

fn ids(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// Every matching event, following cursors with pages of `limit`.
async fn query_all(
    check: &str,
    store: &dyn AuditStore,
    filter: &AuditFilter,
    limit: usize,
) -> Result<Vec<AuditEvent>, String> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = ok(
            check,
            "query",
            store.query(filter, cursor.take(), limit).await,
        )?;
        ensure(check, page.events.len() <= limit, || {
            format!(
                "a page holds {} events, more than the limit {limit}",
                page.events.len()
            )
        })?;
        out.extend(page.events);
        match page.cursor {
            None => return Ok(out),
            Some(c) => cursor = Some(c),
        }
    }
    Err(format!(
        "{check}: following query cursors never reached a page without a cursor"
    ))
}

/// Run every [`AuditStore`] check against `store`; `Err` names the first property that failed.
pub async fn audit_suite(store: &dyn AuditStore) -> Result<(), String> {
    audit_append_then_query_returns_every_field(store).await?;
    audit_same_id_replaces(store).await?;
    audit_empty_batch_succeeds(store).await?;
    audit_query_is_newest_first_and_filtered(store).await?;
    audit_cursors_visit_every_event_once(store).await?;
    audit_unknown_cursor_is_refused(store).await?;
    Ok(())
}

/// After `append`, `query` finds every event of the batch, every field as written.
pub async fn audit_append_then_query_returns_every_field(
    store: &dyn AuditStore,
) -> Result<(), String> {
    let check = "audit_append_then_query_returns_every_field";
    let who = actor(check)?;
    let mut full = event(&who, T0 + 5, "denied");
    full.credential = Some("github".into());
    full.method = Some("POST".into());
    full.host = Some("api.github.com".into());
    full.path = Some("/repos/x/issues".into());
    full.status = Some(403);
    full.code = Some("policy_denied".into());
    full.duration_ms = 12;
    full.count = Some(3);
    full.record = Some("key:k1".into());
    full.truncated = vec!["path".into()];
    let plain = event(&who, T0 + 4, "allowed");
    let batch = [full.clone(), plain.clone()];
    ok(check, "append", store.append(&batch, RETENTION).await)?;
    let got = query_all(check, store, &only(&who), 1000).await?;
    ensure(check, got == batch, || {
        format!(
            "query returned {} instead of the batch as written",
            short(format!("{got:?}"))
        )
    })
}

/// An event whose id is stored replaces it: one event per id, the last written.
pub async fn audit_same_id_replaces(store: &dyn AuditStore) -> Result<(), String> {
    let check = "audit_same_id_replaces";
    let who = actor(check)?;
    let mut e = event(&who, T0 + 3, "denied");
    e.count = Some(1);
    ok(
        check,
        "first append",
        store.append(&[e.clone()], RETENTION).await,
    )?;
    e.count = Some(2);
    ok(
        check,
        "second append",
        store.append(&[e.clone()], RETENTION).await,
    )?;
    let got = query_all(check, store, &only(&who), 1000).await?;
    ensure(check, got == [e.clone()], || {
        format!(
            "after rewriting one id, query returned {}",
            short(format!("{got:?}"))
        )
    })
}

/// An empty batch succeeds and stores nothing.
pub async fn audit_empty_batch_succeeds(store: &dyn AuditStore) -> Result<(), String> {
    let check = "audit_empty_batch_succeeds";
    ok(check, "empty append", store.append(&[], RETENTION).await)
}

/// At most `limit` events, newest first, each matching the filter (the core's one filter).
pub async fn audit_query_is_newest_first_and_filtered(
    store: &dyn AuditStore,
) -> Result<(), String> {
    let check = "audit_query_is_newest_first_and_filtered";
    let who = actor(check)?;
    // Written oldest first, one per batch (so a sharded store spreads them).
    let outcomes = ["allowed", "denied", "allowed", "error", "allowed", "denied"];
    let mut written = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        let mut e = event(&who, T0 - 100 + i as u64 * 10, outcome);
        e.credential = Some(if i % 2 == 0 { "github" } else { "stripe" }.into());
        ok(check, "append", store.append(&[e.clone()], RETENTION).await)?;
        written.push(e);
    }
    let newest_first: Vec<AuditEvent> = written.iter().rev().cloned().collect();
    let got = query_all(check, store, &only(&who), 1000).await?;
    ensure(check, ids(&got) == ids(&newest_first), || {
        format!("events came as {:?}, not newest first", ids(&got))
    })?;
    for filter in [
        AuditFilter {
            outcome: Some("allowed".into()),
            ..only(&who)
        },
        AuditFilter {
            credential: Some("stripe".into()),
            ..only(&who)
        },
        AuditFilter {
            since_ms: Some(T0 - 100 + 25),
            ..only(&who)
        },
        AuditFilter {
            actor: Some(format!("{who}*")),
            outcome: Some("denied".into()),
            ..AuditFilter::default()
        },
    ] {
        let expected: Vec<&AuditEvent> =
            newest_first.iter().filter(|e| filter.matches(e)).collect();
        let got = query_all(check, store, &filter, 1000).await?;
        let want: Vec<&str> = expected.iter().map(|e| e.id.as_str()).collect();
        ensure(check, ids(&got) == want, || {
            format!(
                "with {filter:?} query returned {:?}, expected {want:?}",
                ids(&got)
            )
        })?;
    }
    // A limit smaller than the matches: the newest ones, and a cursor.
    let page = ok(
        check,
        "query limit 2",
        store.query(&only(&who), None, 2).await,
    )?;
    ensure(
        check,
        ids(&page.events) == ids(&newest_first[..2]) && page.cursor.is_some(),
        || {
            format!(
                "limit 2 returned {:?} (cursor {:?}), expected the 2 newest and a cursor",
                ids(&page.events),
                page.cursor.is_some()
            )
        },
    )
}

/// Following cursors visits every matching event exactly once, in order.
pub async fn audit_cursors_visit_every_event_once(store: &dyn AuditStore) -> Result<(), String> {
    let check = "audit_cursors_visit_every_event_once";
    let who = actor(check)?;
    let mut written = Vec::new();
    // Batches of 1, 2, … 6 events: 21 events, some sharing a millisecond.
    let mut ts = T0 - 1000;
    for size in 1..=6u64 {
        let batch: Vec<AuditEvent> = (0..size)
            .map(|i| event(&who, ts + i / 2, "allowed"))
            .collect();
        ts += 10;
        ok(check, "append", store.append(&batch, RETENTION).await)?;
        written.extend(batch);
    }
    written.sort_by(|a, b| a.id.cmp(&b.id));
    for limit in [1, 4, 7, 1000] {
        let got = query_all(check, store, &only(&who), limit).await?;
        ensure(check, ids(&got) == ids(&written), || {
            format!(
                "pages of {limit} gave {} events {:?}, expected {} in id order",
                got.len(),
                ids(&got),
                written.len()
            )
        })?;
    }
    Ok(())
}

/// A cursor no call returned is a `BadRequest` (code `invalid_cursor`).
pub async fn audit_unknown_cursor_is_refused(store: &dyn AuditStore) -> Result<(), String> {
    let check = "audit_unknown_cursor_is_refused";
    let who = actor(check)?;
    refused(
        check,
        "query with a made-up cursor",
        store
            .query(&only(&who), Some("not a cursor \u{0}!".into()), 10)
            .await,
        ErrorKind::BadRequest,
        Code::InvalidCursor,
    )
}
