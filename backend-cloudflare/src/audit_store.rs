//! Audit events in SQLite-backed Durable Objects: the [`AuditDO`] class (binding `AUDIT`) and
//! [`DoAuditStore`], the core's [`AuditStore`] over it (docs/decisions/0100, 0121). KV takes no
//! write for an audit event: an execute, a proxy call or a login writes nothing to KV.
//!
//! - **Sharded**: [`SHARDS`] objects `audit:0` … `audit:7`; an event goes to the shard of its
//!   id's hash, so a rewrite of an id (a refusal series whose count grew) replaces it in place,
//!   and no single object takes every write. The events of one append that fall in one shard
//!   are one request to it.
//! - **Stored** as ONE SQLite row per event (what Cloudflare bills as rows written): table
//!   `audit_events`, `WITHOUT ROWID`, keyed by the event id, no other index (decision 0121).
//!   Ids sort newest first, so `ORDER BY id` is newest first, on the key.
//! - **Retention**: each event expires `retention_secs` after it was written (its
//!   `expires_at`, a plain column); reads skip expired rows. Every [`PRUNE_EVERY`]-th append
//!   of an object (its first after it starts included) deletes expired events from the oldest
//!   end, at most [`PRUNE_BATCH`], stopping at the first one not expired — no expiry index
//!   needed (see [`AuditDO::prune`] for the bound).
//! - **Old shards** (written before decision 0121) hold their events in table `events` (3 rows
//!   each: the row, its key index, its expiry index). They are not copied: new events go to
//!   `audit_events`, reads merge both tables (the newer table's version of an id wins, even
//!   expired), the prune deletes the old table's expired rows as before and drops the table
//!   once empty — at the first prune (an append) after its last event expired. No request
//!   does more than a bounded batch.
//! - **No cursor left open**: every SQL read is read to its end before the next statement
//!   (workerd ends a statement only when it is stepped to its end, and SQLite refuses a
//!   `DROP TABLE` while any other statement of the connection is reading).
//! - **Queries** fan out to every shard (one request each, concurrently); each shard looks at
//!   most [`MAX_SCANNED_PER_CALL`] rows after the cursor and applies the core's
//!   [`AuditFilter::matches`] (the one filter; the filter travels as JSON). The shards' pages
//!   are merged newest first up to the newest point every shard has looked past, so no event is
//!   skipped; the cursor is the last id returned or looked at.

use std::cell::Cell;

use futures::future::join_all;
use vultrino_core::audit::{AuditEvent, AuditFilter, MAX_SCANNED_PER_CALL};
use vultrino_core::error::{Code, Error, Result};
use vultrino_core::ports::{AuditPage, AuditStore, SinkStatus};

use crate::audit_shards::{merge, shard_of, valid_cursor, Append, Page, Query, SHARDS};
use crate::objects;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::JsValue;
use worker::{js_sys, web_sys, Env, ObjectNamespace, SqlStorage, SqlStorageValue, State};

/// Expired rows one prune deletes, at most (per table).
pub const PRUNE_BATCH: i64 = 500;
/// An object prunes on its first append after it starts, then once every this many appends.
/// [`PRUNE_BATCH`] / `PRUNE_EVERY` ≈ 7.8 events deleted per append at most: more than the one
/// event an append carries (the core appends one at a time), so pruning keeps up.
pub const PRUNE_EVERY: u32 = 64;

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    ts: i64,
    expires_at: i64,
    json: String,
}

#[derive(serde::Deserialize)]
struct IdExpiry {
    id: String,
    expires_at: i64,
}

/// The Durable Object class behind [`DoAuditStore`]: one shard of the audit log. Its JS-facing
/// methods are exported here, not by workers-rs's `#[durable_object]` macro ([`crate::objects`],
/// decision 0128).
#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
pub struct AuditDO {
    sql: SqlStorage,
    /// Whether table `events` (the format before decision 0121) still exists here; `None`
    /// while unknown (the check at start failed: checked again at the next use).
    legacy: Cell<Option<bool>>,
    /// Appends since this object started (wrapping), for [`PRUNE_EVERY`].
    appends: Cell<u32>,
    /// Prunes that failed since this object started (logged; the append stands).
    prune_failures: Cell<u64>,
    /// TEST-ONLY: every prune fails (`/testkit/prune-fails`).
    #[cfg(feature = "testkit")]
    fail_prune: Cell<bool>,
}

/// Rows a query reads from each table per statement, at least (read whole; a page reads at
/// most `MAX_SCANNED_PER_CALL` in all).
const QUERY_CHUNK: usize = 100;

/// The largest integer JavaScript (and so a bound SQL parameter) holds exactly.
const MAX_SAFE: i64 = (1 << 53) - 1;

/// `v` as an exact SQL integer.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(MAX_SAFE).min(MAX_SAFE)
}

fn now_ms() -> i64 {
    int(objects::now_ms())
}

/// The table of every event written since decision 0121: one row per event.
const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS audit_events (id TEXT NOT NULL PRIMARY KEY, \
     ts INTEGER NOT NULL, expires_at INTEGER NOT NULL, json TEXT NOT NULL) WITHOUT ROWID";

/// Up to `scan` rows of the new table after `after`, in id order, expired ones included (the
/// caller skips them, counting them as looked at): while the old table exists, so that an
/// expired new version of an id still hides the old table's.
const SELECT_NEW_ALL: &str =
    "SELECT id, ts, expires_at, json FROM audit_events WHERE id > ? ORDER BY id LIMIT ?";
/// Up to `scan` rows of the new table after `after`, not expired at `now`, in id order (SQLite
/// steps over the expired ones: a page is never short for them).
const SELECT_NEW: &str = "SELECT id, ts, expires_at, json FROM audit_events \
     WHERE id > ? AND expires_at > ? ORDER BY id LIMIT ?";
/// Up to `scan` rows of the old table after `after`, not expired at `now`, in id order.
const SELECT_OLD: &str = "SELECT id, ts, expires_at, json FROM events \
     WHERE id > ? AND expires_at > ? ORDER BY id LIMIT ?";

/// Every row of `query`, read whole (no cursor left open), each as `T`; every error of every
/// step comes back as an `Err`. workers-rs binds the cursor's `toArray` and `one` without
/// `catch`, and the runtime steps only the first row in `exec`: an SQLite error on a later row
/// would be thrown through the wasm, failing the object's whole request (a stored append
/// answered as failed) instead of reaching the caller's error handling (review 2026-12-07 of
/// the fixes, A2). So `exec` and `toArray` are called here as JS functions, whose throws are
/// caught, and the rows cross once, as JSON.
fn read_all<T: serde::de::DeserializeOwned>(
    sql: &SqlStorage,
    query: &str,
    bindings: Vec<SqlStorageValue>,
) -> worker::Result<Vec<T>> {
    use worker::wasm_bindgen::JsCast as _;
    let storage: &JsValue = sql.as_ref();
    let args = js_sys::Array::new();
    args.push(&JsValue::from_str(query));
    for b in bindings {
        args.push(&b.into());
    }
    let function = |on: &JsValue, name: &str| -> worker::Result<js_sys::Function> {
        js_sys::Reflect::get(on, &JsValue::from_str(name))?
            .dyn_into::<js_sys::Function>()
            .map_err(worker::Error::from)
    };
    let cursor = function(storage, "exec")?.apply(storage, &args)?;
    let rows = function(&cursor, "toArray")?.call0(&cursor)?;
    let json = js_sys::JSON::stringify(&rows)?
        .as_string()
        .ok_or_else(|| worker::Error::RustError("SQL rows not serialisable".into()))?;
    Ok(serde_json::from_str(&json)?)
}

/// The one row of `query` (an aggregate), read as [`read_all`] reads.
fn read_one(sql: &SqlStorage, query: &str) -> worker::Result<serde_json::Value> {
    read_all::<serde_json::Value>(sql, query, Vec::new())?
        .into_iter()
        .next()
        .ok_or_else(|| worker::Error::RustError("an aggregate returned no row".into()))
}

/// Whether table `events` (the format before decision 0121) exists.
fn has_old_table(sql: &SqlStorage) -> worker::Result<bool> {
    let v = read_one(
        sql,
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'events'",
    )?;
    Ok(v["n"].as_i64().unwrap_or(0) > 0)
}

impl AuditDO {
    /// Store `run`; the SQLite rows it wrote (what Cloudflare bills: a row and each index
    /// entry), as SQLite counts them, and whether its prune (when due) failed.
    fn append(&self, run: Append) -> worker::Result<(usize, bool)> {
        let mut rows = 0;
        let now = now_ms();
        let keep_ms = int(run.retention_secs.max(60).saturating_mul(1000));
        let expires = now.saturating_add(keep_ms).min(MAX_SAFE);
        for e in &run.events {
            rows += self.put("audit_events", e, expires)?;
        }
        let n = self.appends.get();
        self.appends.set(n.wrapping_add(1));
        let mut prune_failed = false;
        if n.is_multiple_of(PRUNE_EVERY) {
            // The events are stored: a failed prune must not fail their append (it is
            // retried at the next due append; what it left is consistent and never listed).
            match self.prune(now) {
                Ok(n) => rows += n,
                Err(e) => {
                    prune_failed = true;
                    self.prune_failures
                        .set(self.prune_failures.get().saturating_add(1));
                    // SQLite's message and a count: no event content.
                    worker::console_error!(
                        "audit object: prune failed ({} since start), retried later: {e}",
                        self.prune_failures.get()
                    );
                }
            }
        }
        Ok((rows, prune_failed))
    }

    /// Whether the old table exists (checked at start; again at each use while unknown).
    fn legacy(&self) -> bool {
        if let Some(legacy) = self.legacy.get() {
            return legacy;
        }
        match has_old_table(&self.sql) {
            Ok(legacy) => {
                self.legacy.set(Some(legacy));
                legacy
            }
            Err(e) => {
                worker::console_error!(
                    "audit object: could not tell whether the old table exists (read as \
                     absent, checked again at the next use): {e}"
                );
                false
            }
        }
    }

    /// Write `e` into `table`, replacing the same id; the rows written.
    fn put(&self, table: &str, e: &AuditEvent, expires: i64) -> worker::Result<usize> {
        Ok(self
            .sql
            .exec(
                &format!(
                    "INSERT OR REPLACE INTO {table} (id, ts, expires_at, json) VALUES (?, ?, ?, ?)"
                ),
                vec![
                    e.id.as_str().into(),
                    int(e.ts).into(),
                    expires.into(),
                    serde_json::to_string(e)?.into(),
                ],
            )?
            .rows_written())
    }

    /// Delete expired events; the rows written as SQLite counts them (1 per deleted row, in
    /// either table: measured in workerd, decision 0121).
    ///
    /// `audit_events` is walked from its oldest id, deleting up to [`PRUNE_BATCH`] expired
    /// events and stopping at the first one not expired (no expiry index: one row read when
    /// the oldest is not due; else the [`PRUNE_BATCH`] oldest are read). Ids sort by the time
    /// the event started and expiry by the time it was
    /// written, so an event written long after it started (the end of a long stream) holds
    /// back the expired events newer than it until it expires itself: what is stored is at
    /// most the events of the retention, plus those written over the next [`PRUNE_EVERY`]
    /// appends, plus those held back that way (reads never show an expired event). A retention
    /// shortened holds back the same way: events keep the retention they were written with.
    ///
    /// The old table (`events`, before decision 0121) is pruned first, as it always was
    /// (through its expiry index), and dropped once empty. An error is the caller's to log:
    /// what a failed prune left is consistent, and the next one takes it up.
    ///
    /// No statement here (nor anywhere in this object) leaves a cursor open: every read is
    /// read to its end (`to_array`, `one`) before the next statement. workerd ends a
    /// statement only once it is stepped to its end, and SQLite refuses `DROP TABLE`
    /// (SQLITE_LOCKED) while another statement of the connection is reading.
    fn prune(&self, now: i64) -> worker::Result<usize> {
        #[cfg(feature = "testkit")]
        if self.fail_prune.get() {
            // An SQLite error on a read's second row (integer overflow in `abs`), which the
            // runtime throws from `toArray`, not from `exec`: it must come back as an error.
            read_all::<serde_json::Value>(
                &self.sql,
                "SELECT abs(x) AS n FROM (SELECT 1 AS x UNION ALL SELECT -9223372036854775807 - 1)",
                Vec::new(),
            )?;
            return Ok(0);
        }
        let mut rows = 0;
        if self.legacy() {
            rows += self
                .sql
                .exec(
                    "DELETE FROM events WHERE id IN \
                     (SELECT id FROM events WHERE expires_at <= ? LIMIT ?)",
                    vec![now.into(), PRUNE_BATCH.into()],
                )?
                .rows_written();
            let left = read_one(&self.sql, "SELECT EXISTS (SELECT 1 FROM events) AS n")?;
            if left["n"].as_i64() == Some(0) {
                // Its index goes with it.
                self.sql.exec("DROP TABLE events", None)?;
                self.legacy.set(Some(false));
            }
        }
        // The oldest event first (one row read): most prunes stop there.
        let oldest: Vec<IdExpiry> = read_all(
            &self.sql,
            "SELECT id, expires_at FROM audit_events ORDER BY id DESC LIMIT 1",
            Vec::new(),
        )?;
        if oldest.first().is_some_and(|row| row.expires_at <= now) {
            let walk: Vec<IdExpiry> = read_all(
                &self.sql,
                "SELECT id, expires_at FROM audit_events ORDER BY id DESC LIMIT ?",
                vec![PRUNE_BATCH.into()],
            )?;
            let due = walk
                .into_iter()
                .take_while(|row| row.expires_at <= now)
                .last()
                .map(|row| row.id);
            // Every id from `due` up was just read, and expired (nothing runs in between).
            if let Some(due) = due {
                // An id rewritten since the upgrade may still have its old version in the old
                // table, which the new one hides only while it exists: both go together, or the
                // stale version would be listed again (review 2026-12-07 of the fixes, A1).
                if self.legacy() {
                    rows += self
                        .sql
                        .exec(
                            "DELETE FROM events WHERE id >= ? AND id IN \
                             (SELECT id FROM audit_events WHERE id >= ?)",
                            vec![due.as_str().into(), due.as_str().into()],
                        )?
                        .rows_written();
                }
                rows += self
                    .sql
                    .exec("DELETE FROM audit_events WHERE id >= ?", vec![due.into()])?
                    .rows_written();
            }
        }
        Ok(rows)
    }

    /// Up to `scan` rows after `after` of each table, in id order, read whole (no cursor left
    /// open, see [`AuditDO::prune`]): `audit_events` (while the old table exists, expired rows
    /// included, for the caller to skip) and the old table's unexpired rows, merged (one row
    /// per id, the newer table's version, expired or not: an expired new version never lets an
    /// older one resurface).
    ///
    /// Why the merge needs no stop short of the end: a caller looks at `scan` merged rows at
    /// most, and a table read `scan` rows places each of them before its first unread row, so
    /// every row looked at precedes what either table left unread.
    fn rows(&self, after: &str, now: i64, scan: i64) -> worker::Result<Vec<Row>> {
        if !self.legacy() {
            return read_all(
                &self.sql,
                SELECT_NEW,
                vec![after.into(), now.into(), scan.into()],
            );
        }
        let new: Vec<Row> = read_all(&self.sql, SELECT_NEW_ALL, vec![after.into(), scan.into()])?;
        let old: Vec<Row> = read_all(
            &self.sql,
            SELECT_OLD,
            vec![after.into(), now.into(), scan.into()],
        )?;
        let mut merged = Vec::with_capacity(new.len() + old.len());
        let (mut new, mut old) = (new.into_iter().peekable(), old.into_iter().peekable());
        loop {
            let order = match (new.peek(), old.peek()) {
                (Some(x), Some(y)) => x.id.cmp(&y.id),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => return Ok(merged),
            };
            let row = match order {
                std::cmp::Ordering::Less => new.next(),
                std::cmp::Ordering::Greater => old.next(),
                std::cmp::Ordering::Equal => {
                    old.next();
                    new.next()
                }
            };
            merged.extend(row);
        }
    }

    fn query(&self, q: Query) -> worker::Result<Page> {
        let limit = q.limit.clamp(1, 1000);
        // Rows looked at, at most: `limit` when every event but the too old matches (no more
        // can be listed), else MAX_SCANNED_PER_CALL. Each table reads that many.
        let matches_all = AuditFilter {
            since_ms: None,
            ..q.filter.clone()
        }
        .is_empty();
        let max_scan = if matches_all {
            limit.min(MAX_SCANNED_PER_CALL)
        } else {
            MAX_SCANNED_PER_CALL
        };
        let now = now_ms();
        // Read in chunks, each read whole (no cursor left open), so that a filtered page that
        // fills early does not read all MAX_SCANNED_PER_CALL rows of each table.
        let chunk = limit.max(QUERY_CHUNK).min(max_scan);
        let mut after = q.after.unwrap_or_default();
        let mut events = Vec::new();
        let (mut scanned, mut last) = (0usize, None);
        'chunks: while events.len() < limit && scanned < max_scan {
            let want = chunk.min(max_scan - scanned);
            let rows = self.rows(&after, now, i64::try_from(want).unwrap_or(1000))?;
            // Fewer merged rows than asked: neither table filled its LIMIT, both are read to
            // their end. Only the first `want` merged rows are sure to precede what a table
            // left unread (see `rows`); the next chunk starts after the last one looked at.
            let ended = rows.len() < want;
            for row in rows.into_iter().take(want) {
                // Ids sort by time: past the first event older than `since`, all are older.
                if u64::try_from(row.ts).is_ok_and(|ts| q.filter.ends_listing_at(ts)) {
                    return Ok(Page {
                        events,
                        more_after: None,
                    });
                }
                scanned += 1;
                if row.expires_at > now {
                    if let Ok(e) = serde_json::from_str::<AuditEvent>(&row.json) {
                        if q.filter.matches(&e) {
                            events.push(e);
                        }
                    }
                }
                after.clone_from(&row.id);
                last = Some(row.id);
                if events.len() >= limit || scanned >= max_scan {
                    break 'chunks;
                }
            }
            if ended {
                break;
            }
        }
        let more = events.len() >= limit || scanned >= max_scan;
        Ok(Page {
            events,
            more_after: if more { last } else { None },
        })
    }
}
#[wasm_bindgen(
    wasm_bindgen = ::worker::wasm_bindgen,
    wasm_bindgen_futures = ::worker::wasm_bindgen_futures,
    js_sys = ::worker::js_sys
)]
impl AuditDO {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker::worker_sys::DurableObjectState, _env: Env) -> AuditDO {
        let sql = State::from(state).storage().sql();
        // Idempotent; a failure shows on the first statement that needs the table.
        let _ = sql.exec(CREATE_TABLE, None);
        // Written before decision 0121: read and pruned until empty, then dropped.
        let legacy = match has_old_table(&sql) {
            Ok(legacy) => Some(legacy),
            Err(e) => {
                worker::console_error!(
                    "audit object: could not tell whether the old table exists (checked again \
                     at the next use): {e}"
                );
                None
            }
        };
        AuditDO {
            sql,
            legacy: Cell::new(legacy),
            appends: Cell::new(0),
            prune_failures: Cell::new(0),
            #[cfg(feature = "testkit")]
            fail_prune: Cell::new(false),
        }
    }

    /// `/append` ([`Append`]) or `/query` ([`Query`]); in the test worker, `/testkit/…`.
    #[wasm_bindgen(js_name = fetch)]
    pub async fn fetch(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
        objects::to_js(self.serve(req).await)
    }
}

impl AuditDO {
    async fn serve(&self, req: web_sys::Request) -> worker::Result<JsValue> {
        match objects::path(&req).as_str() {
            "/append" => {
                let Some(run) = objects::read_op::<Append>(&req).await else {
                    return objects::error("malformed audit append", 400);
                };
                let (rows, prune_failed) = self.append(run)?;
                appended(rows, prune_failed)
            }
            "/query" => {
                let Some(q) = objects::read_op::<Query>(&req).await else {
                    return objects::error("malformed audit query", 400);
                };
                objects::json(&self.query(q)?, 0)
            }
            #[cfg(feature = "testkit")]
            path if path.starts_with("/testkit/") => self.testkit(path, req).await,
            _ => objects::error("unknown audit operation", 404),
        }
    }
}

/// The answer to a stored append: a 200 with the constant body `{}` in the deployable worker,
/// whose caller reads no body (decision 0128; the body is there for a caller of an earlier
/// build during a rollout); in the test worker, the rows written and whether the prune failed,
/// for its counters (decision 0117).
#[cfg(not(feature = "testkit"))]
fn appended(_rows: usize, _prune_failed: bool) -> worker::Result<JsValue> {
    objects::ok_object()
}

#[cfg(feature = "testkit")]
fn appended(rows: usize, prune_failed: bool) -> worker::Result<JsValue> {
    objects::json(
        &serde_json::json!({"ok": true, "rows_written": rows, "prune_failed": prune_failed}),
        0,
    )
}

/// TEST-ONLY (feature `testkit`): rows put straight into one shard by `testkit_route`'s checks.
#[cfg(feature = "testkit")]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TestPut {
    pub events: Vec<AuditEvent>,
    /// Epoch ms (in the past: already expired).
    pub expires_at: i64,
    /// Into the table of the format before decision 0121 (created as that version did).
    pub legacy: bool,
}

#[cfg(feature = "testkit")]
impl AuditDO {
    /// - `/testkit/put` ([`TestPut`]): rows written as given, answers `{"rows_written"}`;
    /// - `/testkit/prune`: prune now, answers `{"rows_written"}`;
    /// - `/testkit/state`: `{"legacy": bool, "rows": n, "legacy_rows": n}`;
    /// - `/testkit/prune-fails` with `{"fail": bool}`: every prune of this object fails (as a
    ///   SQL error would) until switched back.
    async fn testkit(&self, path: &str, req: web_sys::Request) -> worker::Result<JsValue> {
        let count = |table: &str| -> worker::Result<i64> {
            let c = self
                .sql
                .exec(&format!("SELECT count(*) AS n FROM {table}"), None)?;
            let v: serde_json::Value = c.one()?;
            Ok(v["n"].as_i64().unwrap_or(-1))
        };
        match path {
            "/testkit/put" => {
                let Some(put) = objects::read_op::<TestPut>(&req).await else {
                    return objects::error("malformed testkit put", 400);
                };
                if put.legacy {
                    // The DDL of the version before decision 0121.
                    self.sql.exec(
                        "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, \
                         ts INTEGER NOT NULL, expires_at INTEGER NOT NULL, json TEXT NOT NULL)",
                        None,
                    )?;
                    self.sql.exec(
                        "CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at)",
                        None,
                    )?;
                    self.legacy.set(Some(true));
                }
                let table = if put.legacy { "events" } else { "audit_events" };
                let mut rows = 0;
                for e in &put.events {
                    rows += self.put(table, e, put.expires_at)?;
                }
                objects::json(&serde_json::json!({"rows_written": rows}), 0)
            }
            "/testkit/prune" => {
                let rows = self.prune(now_ms())?;
                objects::json(&serde_json::json!({"rows_written": rows}), 0)
            }
            "/testkit/prune-fails" => {
                let Some(v) = objects::read_op::<serde_json::Value>(&req).await else {
                    return objects::error("malformed testkit switch", 400);
                };
                let fail = v["fail"].as_bool().unwrap_or(false);
                self.fail_prune.set(fail);
                objects::json(&serde_json::json!({"fail": fail}), 0)
            }
            "/testkit/state" => {
                // The table itself, not the flag.
                let legacy = has_old_table(&self.sql)?;
                objects::json(
                    &serde_json::json!({
                        "legacy": legacy,
                        "rows": count("audit_events")?,
                        "legacy_rows": if legacy { count("events")? } else { 0 },
                    }),
                    0,
                )
            }
            _ => objects::error("unknown audit testkit operation", 404),
        }
    }
}

/// The core's [`AuditStore`] over the `AUDIT` Durable Object namespace. Counts, per isolate,
/// what it stored and what it lost (`GET /v1/audit/sinks`, row `audit_store`): a failed append
/// is never silent, whether the request was then served (`AUDIT_REQUIRED` off) or refused.
pub struct DoAuditStore {
    ns: ObjectNamespace,
    /// Prefix of the objects' names (empty but in the test worker's own checks).
    scope: String,
    /// Events stored.
    stored: Cell<u64>,
    /// Events not stored (their append failed).
    lost: Cell<u64>,
    /// Requests to a shard that failed.
    failed: Cell<u64>,
}

fn unavailable() -> Error {
    Error::unavailable("audit store (Durable Object) unavailable").with_code(Code::AuditUnavailable)
}

impl DoAuditStore {
    pub fn new(ns: ObjectNamespace) -> Self {
        DoAuditStore {
            ns,
            scope: String::new(),
            stored: Cell::new(0),
            lost: Cell::new(0),
            failed: Cell::new(0),
        }
    }

    /// Test worker only: a store whose shards are named `<scope>audit:<n>` (fresh, empty
    /// objects for a fresh scope).
    #[cfg(feature = "testkit")]
    pub fn scoped(ns: ObjectNamespace, scope: String) -> Self {
        DoAuditStore {
            scope,
            ..DoAuditStore::new(ns)
        }
    }

    /// POST `body` as JSON to shard `shard` at `path`; its JSON reply ([`objects::post`]).
    pub(crate) async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        shard: u32,
        path: &str,
        body: &B,
    ) -> worker::Result<R> {
        #[cfg(feature = "testkit")]
        {
            if crate::counting::audit_down() {
                return Err(worker::Error::RustError(
                    "audit store switched off by the test".into(),
                ));
            }
            crate::counting::do_request(crate::counting::DoKind::Audit);
        }
        let name = format!("{}audit:{shard}", self.scope);
        let body = serde_json::to_string(body)?;
        let url = format!("https://audit-do{path}");
        let resp = objects::post(&self.ns, &name, &url, &body, "audit object").await?;
        objects::reply_json::<R>(&resp).await
    }

    /// Append `run` to shard `shard`: stored once the shard answers 200, whose body the
    /// deployable worker does not read (it has none: decision 0128). The test worker reads the
    /// rows written and whether the prune failed from it, for its counters.
    async fn append_to(&self, shard: u32, run: &Append) -> worker::Result<()> {
        #[cfg(feature = "testkit")]
        {
            let reply: serde_json::Value = self.post(shard, "/append", run).await?;
            crate::counting::rows_written(
                crate::counting::DoKind::Audit,
                reply["rows_written"].as_u64().unwrap_or(0),
            );
            if reply["prune_failed"] == true {
                crate::counting::audit_prune_failed();
            }
            Ok(())
        }
        #[cfg(not(feature = "testkit"))]
        {
            let name = format!("{}audit:{shard}", self.scope);
            let body = serde_json::to_string(run)?;
            objects::post(
                &self.ns,
                &name,
                "https://audit-do/append",
                &body,
                "audit object",
            )
            .await
            .map(drop)
        }
    }
}

#[async_trait::async_trait(?Send)]
impl AuditStore for DoAuditStore {
    async fn append(&self, events: &[AuditEvent], retention_secs: u64) -> Result<()> {
        let mut by_shard: Vec<Vec<AuditEvent>> = vec![Vec::new(); SHARDS as usize];
        for e in events {
            if let Some(group) = by_shard.get_mut(shard_of(&e.id) as usize) {
                group.push(e.clone());
            }
        }
        let calls = by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(shard, events)| async move {
                let run = Append {
                    events,
                    retention_secs,
                };
                let shard = u32::try_from(shard).unwrap_or(0);
                let n = run.events.len() as u64;
                (n, self.append_to(shard, &run).await)
            });
        let mut outcome = Ok(());
        for (n, result) in join_all(calls).await {
            match result {
                Ok(()) => {
                    self.stored.set(self.stored.get().saturating_add(n));
                }
                Err(e) => {
                    // Counted and logged (the event itself still reaches the sinks: Workers
                    // Logs, Analytics Engine); never silent.
                    worker::console_error!("audit store append failed: {e}");
                    self.lost.set(self.lost.get().saturating_add(n));
                    self.failed.set(self.failed.get().saturating_add(1));
                    outcome = Err(unavailable());
                }
            }
        }
        outcome
    }

    async fn query(
        &self,
        filter: &AuditFilter,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<AuditPage> {
        if cursor.as_deref().is_some_and(|c| !valid_cursor(c)) {
            return Err(
                Error::bad_request("the audit cursor is not one this server returned")
                    .with_code(Code::InvalidCursor),
            );
        }
        let limit = limit.clamp(1, 1000);
        let q = Query {
            filter: filter.clone(),
            after: cursor,
            limit,
        };
        let pages = join_all((0..SHARDS).map(|shard| self.post::<_, Page>(shard, "/query", &q)))
            .await
            .into_iter()
            .collect::<worker::Result<Vec<Page>>>()
            .map_err(|e| {
                worker::console_error!("audit store query failed: {e}");
                unavailable()
            })?;
        Ok(merge(pages, limit))
    }

    fn status(&self) -> Option<SinkStatus> {
        Some(SinkStatus {
            name: "audit_store".into(),
            sent: self.stored.get(),
            dropped: self.lost.get(),
            failed: self.failed.get(),
            queued: 0,
        })
    }
}
