//! TEST-ONLY route (feature `testkit`, never in the deployable build): runs the core's
//! conformance suites against [`WorkersKv`], [`DoSessions`] and [`WorkersFetcher`] inside workerd.
//!
//! - `POST /__testkit/kv`, `POST /__testkit/sessions` and `POST /__testkit/audit` (the
//!   [`AuditStore`](vultrino_core::ports::AuditStore) suite against [`DoAuditStore`]) answer `{"ok": true}` or
//!   `{"ok": false, "error": "<check>: <property>"}`.
//! - `GET /__testkit/fetch-suite` answers `{"checks": [<name>, …]}`, the Fetcher suite's checks.
//! - `POST /__testkit/fetch-suite` with `{"base_url", "refused_url", "check"?}` runs that one
//!   check (or, without `check`, the whole suite) against [`WorkersFetcher`], with
//!   [`WorkersClock`] timing the refusals, and answers like the store suites.
//! - `POST /__testkit/rs256` runs the [`Rs256Verifier`](vultrino_core::ports::Rs256Verifier)
//!   suite against [`WebCryptoVerifier`] (WebCrypto in workerd), answering like the store suites.
//! - `GET`/`POST /__testkit/fetch-stream-suite`: the same for the `fetch_stream` checks
//!   (`vultrino_core::testkit::STREAM_CHECKS`, the streaming-only ones included). `base_url` is an
//!   upstream implementing the route table of `vultrino_core::testkit::fetcher`; `refused_url` a
//!   closed port. The suite asks for `allow_loopback` itself (the upstream is on 127.0.0.1).
//!
//! - `POST /__testkit/faults` with `{"seed": "<u64>", "steps": n, "upstream"?: url,
//!   "key_record_reuse_secs"?: s}`: one case
//!   of the fault property (`vultrino_core::testkit::fault_property`, decisions 0107 and 0116)
//!   over [`WorkersKv`] and [`DoSessions`] wrapped in the core's fault wrappers, with the
//!   property's virtual clock and recording upstream — which, given `upstream` (a loopback
//!   server answering 200 `{"ok":true}`), forwards through [`WorkersFetcher`]. Each case starts from empty stores: the KV namespace
//!   is emptied first, and the case's Durable Objects are named under a scope of its own.
//!   Answers `{"ok": true, "steps": n, "ms": t}` or `{"ok": false, "error": "<property>\n steps: …"}`.
//!   Driven by `test/faults.test.mjs`.
//! - `POST /__testkit/audit-checks`: the audit store's own checks (decision 0121) in fresh
//!   objects — shards in the format before 0121 paged with new events, their old table pruned
//!   and dropped once empty (also under live new events), an expired new version hiding the
//!   old one, a failed prune not failing its append, the prune's cadence — answering like the
//!   store suites.
//! - `GET /__testkit/counts`: the operations the worker's ports made since the last reset
//!   (`counting`: KV reads, writes, deletes, lists, Durable Object requests per namespace,
//!   upstream subrequests); `POST /__testkit/counts` answers the same and zeroes them.
//! - `POST /__testkit/audit-down` with `{"down": bool}`: every audit-store request fails (an
//!   outage, an exhausted quota) until switched back.
//!
//! Driven by `test/conformance.test.mjs` and `backend-local/tests/worker_costs.rs`.

use std::sync::Arc;

use vultrino_core::audit::{AuditEvent, AuditFilter};
use vultrino_core::ports::{AuditStore, KvStore, ListOptions, ManualClock, SessionStore};
use vultrino_core::testkit::{self, fault_property, FetchUpstream};
use worker::{Env, Method, Request, Response};

use crate::audit_shards::{shard_of, SHARDS};
use crate::audit_store::{DoAuditStore, TestPut, PRUNE_EVERY};
use crate::clock::WorkersClock;
use crate::fetch::WorkersFetcher;
use crate::kv::WorkersKv;
use crate::rs256::WebCryptoVerifier;
use crate::sessions::DoSessions;

#[derive(serde::Deserialize)]
struct FetchSuiteRun {
    base_url: String,
    refused_url: String,
    #[serde(default)]
    check: Option<String>,
}

async fn fetch_suite(mut req: Request) -> worker::Result<std::result::Result<(), String>> {
    let run: FetchSuiteRun = req.json().await?;
    let upstream = FetchUpstream {
        base_url: &run.base_url,
        refused_url: &run.refused_url,
    };
    let (fetcher, clock) = (WorkersFetcher, WorkersClock::default());
    Ok(match &run.check {
        Some(name) => testkit::fetcher_check(name, &fetcher, &upstream, &clock).await,
        None => testkit::fetcher_suite(&fetcher, &upstream, &clock).await,
    })
}

async fn fetch_stream_suite(mut req: Request) -> worker::Result<std::result::Result<(), String>> {
    let run: FetchSuiteRun = req.json().await?;
    let upstream = FetchUpstream {
        base_url: &run.base_url,
        refused_url: &run.refused_url,
    };
    let (fetcher, clock) = (WorkersFetcher, WorkersClock::default());
    Ok(match &run.check {
        Some(name) => testkit::fetch_stream_check(name, &fetcher, &upstream, &clock).await,
        None => testkit::fetch_stream_suite(&fetcher, &upstream, &clock).await,
    })
}

#[derive(serde::Deserialize)]
struct FaultCase {
    /// A u64 as text (JSON numbers lose precision past 2^53).
    seed: String,
    steps: usize,
    /// A loopback upstream (`http://127.0.0.1:<port>`) answering 200 `{"ok":true}` to
    /// anything: requests go to it through [`WorkersFetcher`]. Without: the property's
    /// in-process upstream.
    #[serde(default)]
    upstream: Option<String>,
    /// The app's `key_record_reuse_secs` (what `KEY_RECORD_REUSE_SECONDS` sets; default 0:
    /// every key record read).
    #[serde(default)]
    key_record_reuse_secs: u64,
}

/// Delete every key of the namespace (a fault case starts from an empty store).
async fn empty_kv(kv: &WorkersKv) -> std::result::Result<(), String> {
    loop {
        let page = kv
            .list(ListOptions {
                limit: Some(1000),
                ..ListOptions::default()
            })
            .await
            .map_err(|e| format!("emptying KV: {e}"))?;
        if page.keys.is_empty() {
            return Ok(());
        }
        for k in &page.keys {
            kv.delete(&k.name)
                .await
                .map_err(|e| format!("emptying KV: {e}"))?;
        }
    }
}

/// One case of the fault property over the worker's own KV and Durable Object adapters.
// The adapters are not `Send` on wasm32 (one isolate, one thread), yet `Ports` holds `Arc`s.
#[allow(clippy::arc_with_non_send_sync)]
async fn fault_case(mut req: Request, env: &Env) -> worker::Result<Response> {
    let Ok(case) = req.json::<FaultCase>().await else {
        return Response::error("expected {\"seed\": \"<u64>\", \"steps\": n}", 400);
    };
    let Ok(seed) = case.seed.parse::<u64>() else {
        return Response::error("seed: a u64 as text", 400);
    };
    let steps = case.steps.min(500);
    let kv = WorkersKv::new(env.kv("CREDENTIALS")?);
    let started = wall_ms();
    let result = match empty_kv(&kv).await {
        Err(e) => Err(e),
        Ok(()) => {
            let kv: Arc<dyn KvStore> = Arc::new(kv);
            // fresh objects for this case (its own scope of object names)
            let scope = format!("faults/{seed}/{started}/");
            let sessions: Arc<dyn SessionStore> =
                Arc::new(DoSessions::scoped(env.durable_object("SESSIONS")?, scope));
            // Workers KV keeps real time (its TTLs cannot follow the virtual clock).
            let clock = Arc::new(ManualClock::new(fault_property::START_MS));
            let ops = fault_property::ops_from_seed(seed, steps);
            let run = |label| fault_property::Case {
                label,
                seed,
                ops: &ops,
                setup: fault_property::Setup {
                    key_record_reuse_secs: case
                        .key_record_reuse_secs
                        .min(crate::settings::MAX_KEY_RECORD_REUSE_SECS),
                },
            };
            match &case.upstream {
                Some(base_url) => {
                    let upstream = Arc::new(fault_property::Recorder::forwarding(Arc::new(
                        WorkersFetcher,
                    )));
                    fault_property::run_with_upstream(
                        kv,
                        sessions,
                        clock,
                        (upstream, base_url),
                        run("workerd, WorkersFetcher"),
                    )
                    .await
                }
                None => fault_property::run(kv, sessions, clock, run("workerd")).await,
            }
        }
    };
    let ms = wall_ms() - started;
    Response::from_json(&match result {
        Ok(()) => serde_json::json!({"ok": true, "steps": steps, "ms": ms}),
        Err(e) => serde_json::json!({"ok": false, "error": e, "ms": ms}),
    })
}

/// Wall-clock milliseconds (workerd advances it across I/O only).
fn wall_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// The audit store's own checks (decision 0121), each in fresh objects (a scope of its own):
/// shards holding events in the format before 0121 (table `events`, written here by the
/// objects' `/testkit/put`), paged across both tables; the old table pruned, then dropped once
/// empty; and the prune's cadence.
async fn audit_checks(env: &Env) -> worker::Result<std::result::Result<(), String>> {
    let ns = || env.durable_object("AUDIT");
    let tag = vultrino_core::audit::new_id(wall_ms());
    let store = |n: &str| -> worker::Result<DoAuditStore> {
        Ok(DoAuditStore::scoped(
            ns()?,
            format!("audit-checks/{tag}/{n}/"),
        ))
    };
    let result = async {
        old_and_new_tables_page_as_one(&store("mixed").map_err(|e| e.to_string())?, &tag).await?;
        a_large_old_table_pages_with_new_events(&store("large").map_err(|e| e.to_string())?, &tag)
            .await?;
        a_drained_old_table_is_dropped(&store("drained").map_err(|e| e.to_string())?, &tag).await?;
        an_old_table_drained_under_new_events_is_dropped(
            &store("drop-live").map_err(|e| e.to_string())?,
            &tag,
        )
        .await?;
        a_failed_prune_keeps_the_append(&store("prune-fails").map_err(|e| e.to_string())?, &tag)
            .await?;
        an_expired_new_version_hides_the_old_one(
            &store("expired-new").map_err(|e| e.to_string())?,
            &tag,
        )
        .await?;
        expired_events_are_pruned_every_nth_append(
            &store("cadence").map_err(|e| e.to_string())?,
            &tag,
        )
        .await
    }
    .await;
    Ok(result)
}

fn ids(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// Every event of `who`, listed in pages of `limit`, is exactly `want` (taken in id order, the
/// listing's order); otherwise an error starting with `what`.
async fn expect_listed(
    store: &DoAuditStore,
    who: &str,
    limit: usize,
    mut want: Vec<AuditEvent>,
    what: &str,
) -> std::result::Result<(), String> {
    want.sort_by(|a, b| a.id.cmp(&b.id));
    let got = audit_all(store, who, limit).await?;
    if got != want {
        return Err(format!(
            "{what}: pages of {limit} list {:?}, expected {:?}",
            ids(&got),
            ids(&want)
        ));
    }
    Ok(())
}

/// Every event `actor` has, following cursors with pages of `limit`.
async fn audit_all(
    store: &DoAuditStore,
    actor: &str,
    limit: usize,
) -> std::result::Result<Vec<AuditEvent>, String> {
    let filter = AuditFilter {
        actor: Some(actor.to_string()),
        ..AuditFilter::default()
    };
    let (mut out, mut cursor) = (Vec::new(), None);
    for _ in 0..10_000 {
        let page = store
            .query(&filter, cursor.take(), limit)
            .await
            .map_err(|e| format!("query: {e}"))?;
        out.extend(page.events);
        match page.cursor {
            None => return Ok(out),
            Some(c) => cursor = Some(c),
        }
    }
    Err("query cursors never ended".into())
}

/// Put `events` straight into their shards' tables (`legacy`: the format before 0121).
async fn put_rows(
    store: &DoAuditStore,
    events: &[AuditEvent],
    expires_at: u64,
    legacy: bool,
) -> std::result::Result<(), String> {
    for shard in 0..SHARDS {
        let events: Vec<AuditEvent> = events
            .iter()
            .filter(|e| shard_of(&e.id) == shard)
            .cloned()
            .collect();
        if events.is_empty() {
            continue;
        }
        let put = TestPut {
            events,
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
            legacy,
        };
        store
            .post::<_, serde_json::Value>(shard, "/testkit/put", &put)
            .await
            .map_err(|e| format!("put rows: {e}"))?;
    }
    Ok(())
}

/// `(legacy table present, rows in the new table, rows in the old one)` of `shard`.
async fn shard_state(
    store: &DoAuditStore,
    shard: u32,
) -> std::result::Result<(bool, i64, i64), String> {
    let s: serde_json::Value = store
        .post(shard, "/testkit/state", &serde_json::json!({}))
        .await
        .map_err(|e| format!("state: {e}"))?;
    Ok((
        s["legacy"].as_bool().unwrap_or(false),
        s["rows"].as_i64().unwrap_or(-1),
        s["legacy_rows"].as_i64().unwrap_or(-1),
    ))
}

async fn prune_all(store: &DoAuditStore) -> std::result::Result<(), String> {
    for shard in 0..SHARDS {
        store
            .post::<_, serde_json::Value>(shard, "/testkit/prune", &serde_json::json!({}))
            .await
            .map_err(|e| format!("prune: {e}"))?;
    }
    Ok(())
}

/// Events of `actor` a second apart, ending a minute ago.
fn timeline(actor: &str, n: u64) -> Vec<AuditEvent> {
    let start = wall_ms() - 60_000 - n * 1000;
    (0..n)
        .map(|i| AuditEvent::new(start + i * 1000, actor, "execute", "allowed"))
        .collect()
}

/// Shards written before 0121 keep their events readable: the old table's and the new
/// table's events page as one list (newest first, each once, a rewritten id in its new
/// version only, expired ones never), before and after the old table's expired rows go.
async fn old_and_new_tables_page_as_one(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:mixed:{tag}");
    let all = timeline(&who, 60);
    let (mut old, mut expired, mut new) = (Vec::new(), Vec::new(), Vec::new());
    for (i, e) in all.into_iter().enumerate() {
        match i % 5 {
            0 | 2 => old.push(e),
            4 => expired.push(e),
            _ => new.push(e),
        }
    }
    put_rows(store, &old, wall_ms() + 3_600_000, true).await?;
    put_rows(store, &expired, wall_ms() - 1000, true).await?;
    // A refusal series rewritten after the upgrade: its id lives in the old table.
    let mut rewritten = old[3].clone();
    rewritten.count = Some(7);
    for e in new.iter().chain(std::iter::once(&rewritten)) {
        store
            .append(std::slice::from_ref(e), 60)
            .await
            .map_err(|e| format!("append: {e}"))?;
    }
    let mut want: Vec<AuditEvent> = old
        .iter()
        .filter(|e| e.id != rewritten.id)
        .chain(new.iter())
        .chain(std::iter::once(&rewritten))
        .cloned()
        .collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    let mut legacy_shards = 0;
    for shard in 0..SHARDS {
        legacy_shards += u32::from(shard_state(store, shard).await?.0);
    }
    if legacy_shards == 0 {
        return Err("mixed: no shard holds the old table after rows were put into it".into());
    }
    for round in ["before the prune", "after the prune"] {
        for limit in [1, 3, 7, 1000] {
            expect_listed(
                store,
                &who,
                limit,
                want.clone(),
                &format!("mixed ({round})"),
            )
            .await?;
        }
        prune_all(store).await?;
    }
    let mut left = 0;
    for shard in 0..SHARDS {
        left += shard_state(store, shard).await?.2;
    }
    let live = i64::try_from(old.len()).unwrap_or(-1);
    if left != live {
        return Err(format!(
            "mixed: after pruning, the old tables hold {left} rows, expected the {live} not expired"
        ));
    }
    Ok(())
}

/// A shard whose old table holds more than one query looks at (`MAX_SCANNED_PER_CALL`), with
/// new events between its old ones: pages of any size list every event once, in order — the
/// merge of the two tables stops where the fuller one stopped reading.
async fn a_large_old_table_pages_with_new_events(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:large:{tag}");
    let shard0: Vec<AuditEvent> = timeline(&who, 8 * 1700)
        .into_iter()
        .filter(|e| shard_of(&e.id) == 0)
        .collect();
    if shard0.len() < 1400 {
        return Err(format!("large: only {} events of shard 0", shard0.len()));
    }
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for (i, mut e) in shard0.into_iter().enumerate() {
        // Every 7th denied: a filter that matches few, so a page reads several chunks.
        if i % 7 == 3 {
            e.outcome = "denied".into();
        }
        if i % 5 == 2 {
            new.push(e);
        } else {
            old.push(e);
        }
    }
    put_rows(store, &old, wall_ms() + 3_600_000, true).await?;
    put_rows(store, &new, wall_ms() + 3_600_000, false).await?;
    let mut want: Vec<AuditEvent> = old.into_iter().chain(new).collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    let denied: Vec<&str> = want
        .iter()
        .filter(|e| e.outcome == "denied")
        .map(|e| e.id.as_str())
        .collect();
    let filter = AuditFilter {
        actor: Some(who.clone()),
        outcome: Some("denied".into()),
        ..AuditFilter::default()
    };
    let (mut got, mut cursor) = (Vec::new(), None);
    for _ in 0..1000 {
        let page = store
            .query(&filter, cursor.take(), 50)
            .await
            .map_err(|e| format!("large: query: {e}"))?;
        got.extend(page.events);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    if ids(&got) != denied {
        return Err(format!(
            "large: the denied ones in pages of 50 gave {} events, expected {}",
            got.len(),
            denied.len()
        ));
    }
    for limit in [1000, 333] {
        let got = audit_all(store, &who, limit).await?;
        if got != want {
            let (g, w) = (ids(&got), ids(&want));
            let at = g.iter().zip(&w).position(|(a, b)| a != b);
            return Err(format!(
                "large: pages of {limit} gave {} events, expected {}; first difference at {at:?}",
                g.len(),
                w.len()
            ));
        }
    }
    Ok(())
}

/// Once its old table holds nothing unexpired, a prune empties it and drops it; the shard
/// then serves from its new table alone, and takes new events.
async fn a_drained_old_table_is_dropped(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:drained:{tag}");
    let all = timeline(&who, 40);
    let (expired, new) = all.split_at(24);
    put_rows(store, expired, wall_ms() - 1000, true).await?;
    for e in new {
        store
            .append(std::slice::from_ref(e), 60)
            .await
            .map_err(|e| format!("append: {e}"))?;
    }
    prune_all(store).await?;
    for shard in 0..SHARDS {
        let (legacy, _, rows) = shard_state(store, shard).await?;
        if legacy || rows != 0 {
            return Err(format!(
                "drained: shard {shard} still has its old table ({rows} rows) after a prune \
                 found it all expired"
            ));
        }
    }
    let mut want = new.to_vec();
    let late = AuditEvent::new(wall_ms(), &who, "execute", "denied");
    store
        .append(std::slice::from_ref(&late), 60)
        .await
        .map_err(|e| format!("append: {e}"))?;
    want.push(late);
    expect_listed(store, &who, 4, want, "drained").await
}

/// The old table's last event expires while the new table holds live events (every shard,
/// about one retention after the upgrade): a prune (after a query that stopped short of the
/// new table's end) empties the old table and drops it. With a read left open mid-way, SQLite
/// refuses the `DROP TABLE` ("database table is locked"), the old table stays, and every
/// pruning append fails.
async fn an_old_table_drained_under_new_events_is_dropped(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:drop-live:{tag}");
    let mut shard0 = timeline(&who, 80)
        .into_iter()
        .filter(|e| shard_of(&e.id) == 0);
    let mut next = || shard0.next().ok_or("drop-live: too few events of shard 0");
    let (expired, live) = (next()?, vec![next()?, next()?, next()?]);
    put_rows(
        store,
        std::slice::from_ref(&expired),
        wall_ms() - 1000,
        true,
    )
    .await?;
    put_rows(store, &live, wall_ms() + 3_600_000, false).await?;
    let filter = AuditFilter {
        actor: Some(who.clone()),
        ..AuditFilter::default()
    };
    let page = store
        .query(&filter, None, 1)
        .await
        .map_err(|e| format!("drop-live: query: {e}"))?;
    if page.events.len() != 1 {
        return Err(format!("drop-live: a page of 1 gave {}", page.events.len()));
    }
    let reply: serde_json::Value = store
        .post(0, "/testkit/prune", &serde_json::json!({}))
        .await
        .map_err(|e| format!("drop-live: the prune failed: {e}"))?;
    let (legacy, rows, _) = shard_state(store, 0).await?;
    if legacy || rows != 3 {
        return Err(format!(
            "drop-live: after the prune ({reply}) the old table is there: {legacy}, the new \
             one holds {rows} rows (expected gone, 3)"
        ));
    }
    expect_listed(store, &who, 2, live, "drop-live").await
}

/// A prune that fails (a SQL error) does not fail the append whose events it follows: they
/// are stored, so the append succeeds (not counted lost, no 503 under `AUDIT_REQUIRED`); the
/// failure is counted (`audit_prune_failures`) and logged.
async fn a_failed_prune_keeps_the_append(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:prune-fails:{tag}");
    let e = timeline(&who, 1).remove(0);
    let shard = shard_of(&e.id);
    store
        .post::<_, serde_json::Value>(
            shard,
            "/testkit/prune-fails",
            &serde_json::json!({"fail": true}),
        )
        .await
        .map_err(|e| format!("prune-fails: switch: {e}"))?;
    let before = crate::counting::counts(false).audit_prune_failures;
    // The object's first append: its prune is due.
    let stored = store.append(std::slice::from_ref(&e), 60).await;
    let after = crate::counting::counts(false).audit_prune_failures;
    store
        .post::<_, serde_json::Value>(
            shard,
            "/testkit/prune-fails",
            &serde_json::json!({"fail": false}),
        )
        .await
        .map_err(|e| format!("prune-fails: switch back: {e}"))?;
    stored.map_err(|e| format!("prune-fails: the append failed with its prune: {e}"))?;
    let status = store.status().ok_or("prune-fails: no status")?;
    if status.dropped != 0 || status.failed != 0 || status.sent != 1 {
        return Err(format!(
            "prune-fails: the sinks row counts {} stored, {} lost, {} failed (expected 1, 0, 0)",
            status.sent, status.dropped, status.failed
        ));
    }
    if after != before + 1 {
        return Err(format!(
            "prune-fails: {} prune failures counted, expected 1",
            after - before
        ));
    }
    expect_listed(store, &who, 10, vec![e], "prune-fails").await
}

/// An id whose new version (in `audit_events`) has expired is not listed, even while its old
/// version (in the old table) has not: the newer version wins, expired or not, so a stale
/// version (a `started` event, an older count) never resurfaces.
async fn an_expired_new_version_hides_the_old_one(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:expired-new:{tag}");
    let events = timeline(&who, 2);
    let (x, y) = (&events[0], &events[1]);
    put_rows(store, &events, wall_ms() + 3_600_000, true).await?;
    put_rows(store, std::slice::from_ref(x), wall_ms() - 1000, false).await?;
    // Before and after the prune deletes the expired new version: the old one stays hidden.
    for pruned in [false, true] {
        if pruned {
            prune_all(store).await?;
        }
        for limit in [1, 10] {
            let what = format!(
                "expired-new (pruned: {pruned}; {} expired in the new table)",
                x.id
            );
            expect_listed(store, &who, limit, vec![y.clone()], &what).await?;
        }
    }
    Ok(())
}

/// An object prunes on its first append and then once every `PRUNE_EVERY` appends, not on
/// each: expired events stay stored (never listed) until that append, and are gone after it.
async fn expired_events_are_pruned_every_nth_append(
    store: &DoAuditStore,
    tag: &str,
) -> std::result::Result<(), String> {
    let who = format!("testkit:cadence:{tag}");
    let every = usize::try_from(PRUNE_EVERY).unwrap_or(64);
    // Events of shard 0 only: enough for the appends and the expired ones.
    let mut events = timeline(&who, 40 * (every as u64 + 8))
        .into_iter()
        .filter(|e| shard_of(&e.id) == 0);
    let mut next = || events.next().ok_or("cadence: too few events of shard 0");
    // The oldest events are the ones that expire (the prune walks from the oldest).
    let expired = vec![next()?, next()?, next()?];
    let first = next()?;
    store
        .append(std::slice::from_ref(&first), 60)
        .await
        .map_err(|e| format!("append: {e}"))?;
    put_rows(store, &expired, wall_ms() - 1000, false).await?;
    let mut stored = vec![first];
    for _ in 1..every {
        let e = next()?;
        store
            .append(std::slice::from_ref(&e), 60)
            .await
            .map_err(|e| format!("append: {e}"))?;
        stored.push(e);
    }
    let (_, rows, _) = shard_state(store, 0).await?;
    if rows != i64::try_from(stored.len() + expired.len()).unwrap_or(-1) {
        return Err(format!(
            "cadence: after {every} appends {rows} rows are stored, expected {} (the {} \
             expired not yet pruned: one prune every {every} appends)",
            stored.len() + expired.len(),
            expired.len()
        ));
    }
    expect_listed(
        store,
        &who,
        1000,
        stored.clone(),
        "cadence: expired events are listed",
    )
    .await?;
    let e = next()?;
    store
        .append(std::slice::from_ref(&e), 60)
        .await
        .map_err(|e| format!("append: {e}"))?;
    stored.push(e);
    let (_, rows, _) = shard_state(store, 0).await?;
    if rows != i64::try_from(stored.len()).unwrap_or(-1) {
        return Err(format!(
            "cadence: after append {} {rows} rows are stored, expected {} (the expired ones pruned)",
            every + 1,
            stored.len()
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct AuditDown {
    down: bool,
}

pub(crate) async fn handle(mut req: Request, env: &Env) -> worker::Result<Response> {
    let result = match (req.method(), req.path().as_str()) {
        (Method::Get, "/__testkit/counts") => {
            return Response::from_json(&crate::counting::counts(false));
        }
        (Method::Post, "/__testkit/counts") => {
            return Response::from_json(&crate::counting::counts(true));
        }
        (Method::Post, "/__testkit/audit-down") => {
            let Ok(AuditDown { down }) = req.json::<AuditDown>().await else {
                return Response::error("expected {\"down\": true|false}", 400);
            };
            crate::counting::set_audit_down(down);
            return Response::from_json(&serde_json::json!({"down": down}));
        }
        (Method::Post, "/__testkit/faults") => return fault_case(req, env).await,
        (Method::Get, "/__testkit/fetch-suite") => {
            return Response::from_json(&serde_json::json!({"checks": testkit::FETCHER_CHECKS}));
        }
        (Method::Post, "/__testkit/fetch-suite") => fetch_suite(req).await?,
        (Method::Get, "/__testkit/fetch-stream-suite") => {
            return Response::from_json(&serde_json::json!({"checks": testkit::STREAM_CHECKS}));
        }
        (Method::Post, "/__testkit/fetch-stream-suite") => fetch_stream_suite(req).await?,
        (_, "/__testkit/rs256") => testkit::rs256_suite(&WebCryptoVerifier).await,
        // Workers KV time cannot be moved: only the TTL-expiry step is skipped (see kv_suite).
        (_, "/__testkit/kv") => {
            let store = WorkersKv::new(env.kv("CREDENTIALS")?);
            testkit::kv_suite(&store, None).await
        }
        (_, "/__testkit/audit") => {
            let store = DoAuditStore::new(env.durable_object("AUDIT")?);
            testkit::audit_suite(&store).await
        }
        (_, "/__testkit/audit-checks") => audit_checks(env).await?,
        (_, "/__testkit/sessions") => {
            let store = DoSessions::new(env.durable_object("SESSIONS")?);
            testkit::session_suite(&store).await
        }
        _ => return Response::error("unknown testkit route", 404),
    };
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    Response::from_json(&body)
}
