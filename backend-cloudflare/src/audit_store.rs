//! Audit events in SQLite-backed Durable Objects: the [`AuditDO`] class (binding `AUDIT`) and
//! [`DoAuditStore`], the core's [`AuditStore`] over it (docs/decisions/0100). KV takes no
//! write for an audit event: an execute, a proxy call or a login writes nothing to KV.
//!
//! - **Sharded**: [`SHARDS`] objects `audit:0` … `audit:7`; an event goes to the shard of its
//!   id's hash, so a rewrite of an id (a refusal series whose count grew) replaces it in place,
//!   and no single object takes every write. The events of one append that fall in one shard
//!   are one request to it.
//! - **Stored** as one row per event in table `events` (id primary key, ts, expiry, the event's
//!   JSON); ids sort newest first, so `ORDER BY id` is newest first, on the primary key.
//! - **Retention**: each row expires `retention_secs` after it was written; reads skip expired
//!   rows and every append deletes up to [`PRUNE_BATCH`] expired ones (an index on the
//!   expiry), so storage stays bounded by what the retention keeps.
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
use worker::{
    durable_object, DurableObject, Env, Method, ObjectNamespace, Request, RequestInit, Response,
    SqlStorage, State,
};

/// Expired rows one append deletes, at most.
const PRUNE_BATCH: i64 = 500;
#[derive(serde::Deserialize)]
struct Row {
    id: String,
    ts: i64,
    json: String,
}

/// The Durable Object class behind [`DoAuditStore`]: one shard of the audit log.
#[durable_object]
pub struct AuditDO {
    sql: SqlStorage,
}

/// The largest integer JavaScript (and so a bound SQL parameter) holds exactly.
const MAX_SAFE: i64 = (1 << 53) - 1;

/// `v` as an exact SQL integer.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(MAX_SAFE).min(MAX_SAFE)
}

fn now_ms() -> i64 {
    int(worker::Date::now().as_millis())
}

impl AuditDO {
    /// Store `run`; the SQLite rows it wrote (what Cloudflare bills: a row and each index
    /// entry), as SQLite counts them.
    fn append(&self, run: Append) -> worker::Result<usize> {
        let mut rows = 0;
        let now = now_ms();
        let keep_ms = int(run.retention_secs.max(60).saturating_mul(1000));
        let expires = now.saturating_add(keep_ms).min(MAX_SAFE);
        for e in &run.events {
            let ts = int(e.ts);
            rows += self
                .sql
                .exec(
                    "INSERT OR REPLACE INTO events (id, ts, expires_at, json) VALUES (?, ?, ?, ?)",
                    vec![
                        e.id.as_str().into(),
                        ts.into(),
                        expires.into(),
                        serde_json::to_string(e)?.into(),
                    ],
                )?
                .rows_written();
        }
        rows += self
            .sql
            .exec(
                "DELETE FROM events WHERE id IN \
                 (SELECT id FROM events WHERE expires_at <= ? LIMIT ?)",
                vec![now.into(), PRUNE_BATCH.into()],
            )?
            .rows_written();
        Ok(rows)
    }

    fn query(&self, q: Query) -> worker::Result<Page> {
        let limit = q.limit.clamp(1, 1000);
        let scan = i64::try_from(MAX_SCANNED_PER_CALL).unwrap_or(1000);
        let cursor = self.sql.exec(
            "SELECT id, ts, json FROM events WHERE id > ? AND expires_at > ? \
             ORDER BY id LIMIT ?",
            vec![
                q.after.unwrap_or_default().into(),
                now_ms().into(),
                scan.into(),
            ],
        )?;
        let mut events = Vec::new();
        let (mut scanned, mut last) = (0usize, None);
        for row in cursor.next::<Row>() {
            let row = row?;
            // Ids sort by time: past the first event older than `since`, all are older.
            if u64::try_from(row.ts).is_ok_and(|ts| q.filter.ends_listing_at(ts)) {
                return Ok(Page {
                    events,
                    more_after: None,
                });
            }
            scanned += 1;
            if let Ok(e) = serde_json::from_str::<AuditEvent>(&row.json) {
                if q.filter.matches(&e) {
                    events.push(e);
                }
            }
            last = Some(row.id);
            if events.len() >= limit {
                break;
            }
        }
        let more = events.len() >= limit || scanned >= MAX_SCANNED_PER_CALL;
        Ok(Page {
            events,
            more_after: if more { last } else { None },
        })
    }
}

impl DurableObject for AuditDO {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        // Idempotent; a failure shows on the first statement that needs the table.
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, ts INTEGER NOT NULL, \
             expires_at INTEGER NOT NULL, json TEXT NOT NULL)",
            None,
        );
        let _ = sql.exec(
            "CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at)",
            None,
        );
        AuditDO { sql }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        match req.path().as_str() {
            "/append" => {
                let Some(run) = crate::streams::json_request::<Append>(&mut req).await else {
                    return Response::error("malformed audit append", 400);
                };
                let rows = self.append(run)?;
                Response::from_json(&serde_json::json!({"ok": true, "rows_written": rows}))
            }
            "/query" => {
                let Some(q) = crate::streams::json_request::<Query>(&mut req).await else {
                    return Response::error("malformed audit query", 400);
                };
                Response::from_json(&self.query(q)?)
            }
            _ => Response::error("unknown audit operation", 404),
        }
    }
}

/// The core's [`AuditStore`] over the `AUDIT` Durable Object namespace. Counts, per isolate,
/// what it stored and what it lost (`GET /v1/audit/sinks`, row `audit_store`): a failed append
/// is never silent, whether the request was then served (`AUDIT_REQUIRED` off) or refused.
pub struct DoAuditStore {
    ns: ObjectNamespace,
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
            stored: Cell::new(0),
            lost: Cell::new(0),
            failed: Cell::new(0),
        }
    }

    /// POST `body` as JSON to shard `shard` at `path`; its JSON reply.
    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        shard: u32,
        path: &str,
        body: &B,
    ) -> worker::Result<R> {
        let stub = self.ns.get_by_name(&format!("audit:{shard}"))?;
        #[cfg(feature = "testkit")]
        {
            if crate::counting::audit_down() {
                return Err(worker::Error::RustError(
                    "audit store switched off by the test".into(),
                ));
            }
            crate::counting::do_request(crate::counting::DoKind::Audit);
        }
        let body = serde_json::to_string(body)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("https://audit-do{path}"), &init)?;
        let resp = stub.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "audit object answered {}",
                resp.status_code()
            )));
        }
        crate::streams::json_reply::<R>(&resp).await
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
                let result = self
                    .post::<_, serde_json::Value>(shard, "/append", &run)
                    .await;
                (n, result)
            });
        let mut outcome = Ok(());
        for (n, result) in join_all(calls).await {
            match result {
                Ok(_reply) => {
                    #[cfg(feature = "testkit")]
                    crate::counting::rows_written(
                        crate::counting::DoKind::Audit,
                        _reply["rows_written"].as_u64().unwrap_or(0),
                    );
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
