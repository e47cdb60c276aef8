//! Audit events: who did what, to which credential and host, with what outcome.
//!
//! Every execute (allowed or denied), every login attempt and every change to credentials, keys and
//! roles writes one event at `audit:<id>` with a retention TTL. Events never hold secrets, bodies,
//! headers or query strings: the path is stored without its query.
//!
//! Ids sort newest first: the first 13 digits are `9999999999999 - ts_ms`, so a KV `list("audit:")`
//! (lexicographic) pages from the newest event backwards without any index.
//!
//! Bounds (docs/decisions/0043-audit-events-are-bounded.md,
//! 0045-unauthenticated-audit-events.md):
//! - every string an event carries is capped ([`AuditEvent::capped`], applied by every writer
//!   here, so no caller can forget it): an event is at most [`MAX_EVENT_JSON_BYTES`];
//! - events no authenticated caller is behind (failed logins, lockouts) go through one door,
//!   [`AuditLog::record_unauthenticated`]: a global budget per window, then one `audit.suppressed`
//!   event per window; their ids end in [`UNAUTHENTICATED_ID_SUFFIX`], so the local stores bound
//!   them apart from the rest of the history ([`is_unauthenticated_key`]);
//! - a refusal that repeats (a locked-out client's attempts) is one event per client and window,
//!   with a count ([`AuditLog::record_repeated`]);
//! - an authenticated caller's refusals that write nothing else (`/proxy/` requests refused
//!   before anything was sent) are one event per caller, series (alias and code) and window, with
//!   a count, and at most [`REFUSAL_WRITE_BUDGET`] writes per caller and window
//!   ([`AuditLog::record_refusal`]).

use bytes::Bytes;

use crate::auth::{Permission, Principal};
use crate::crypto;
use crate::error::{Code, Error, Result};
use std::sync::Arc;

use crate::ports::{AuditPage, AuditStore, KvStore, ListOptions, Ports, PutOptions};

pub mod event;
pub mod filter;
pub use event::{new_id, AuditEvent, AUDIT_PREFIX, CUT_MARKER, EVENT_JSON_CAPACITY};
pub use filter::{AuditFilter, MAX_SCANNED_PER_CALL};

/// How long an audit event is kept when the configuration does not say (90 days): the default
/// of `Config::audit_retention_secs`, and the retention of the events a sync import writes.
pub const DEFAULT_AUDIT_RETENTION_SECS: u64 = 90 * 24 * 3600;

/// Ends the id (and so the key) of every event written by
/// [`AuditLog::record_unauthenticated`].
pub const UNAUTHENTICATED_ID_SUFFIX: &str = "-u";

/// The largest JSON an event can serialize to once capped, whatever its strings hold (JSON
/// escapes a control character as six bytes).
pub const MAX_EVENT_JSON_BYTES: usize = 10 * 1024;

/// Events [`AuditLog::record_unauthenticated`] writes per window, deployment-wide.
pub const UNAUTHENTICATED_BUDGET: u32 = 50;
/// The window of [`UNAUTHENTICATED_BUDGET`].
pub const UNAUTHENTICATED_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Session-store counter of the budget.
const BUDGET_COUNTER: &str = "audit-budget:unauthenticated";

/// The window of [`AuditLog::record_refusal`]: refusals of one series are counted in one event
/// per window (aligned on multiples of it since the epoch).
pub const REFUSAL_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Writes of refusal events one actor may cause per [`REFUSAL_WINDOW_MS`] window, all its
/// series together; past it, one `audit.suppressed` event per actor and window counts the
/// writes withheld.
pub const REFUSAL_WRITE_BUDGET: u32 = 64;

/// Whether the KV key `key` holds an event of [`AuditLog::record_unauthenticated`]: the local
/// stores bound those apart, so they never push the rest of the history out.
pub fn is_unauthenticated_key(key: &str) -> bool {
    key.starts_with(AUDIT_PREFIX) && key.ends_with(UNAUTHENTICATED_ID_SUFFIX)
}

/// The audit log of one deployment: the only code that writes or reads `audit:` records.
/// Writes an action's final event so that dropping the writing future part way (a worker
/// request cancelled while its KV put is pending, docs/decisions/0065) does not lose it: while
/// the write is under way the guard holds the event (the write borrows it), and a drop before it
/// completes writes the same event again through the [`Background`](crate::ports::Background) —
/// the same id, so the same KV key: at most one event, never two. Without a background it is a
/// plain write.
pub(crate) struct FinalWrite<'a> {
    event: Option<AuditEvent>,
    ports: &'a Ports,
    retention_secs: u64,
    background: Option<std::sync::Arc<dyn crate::ports::Background>>,
}

impl FinalWrite<'_> {
    pub(crate) async fn write(
        ports: &Ports,
        retention_secs: u64,
        background: Option<std::sync::Arc<dyn crate::ports::Background>>,
        event: AuditEvent,
    ) {
        let log = AuditLog::new(ports, retention_secs);
        if background.is_none() {
            log.record(event).await;
            return;
        }
        // The guard holds the event and the write borrows it: no copy of the event, and the
        // ports are cloned only if the write is dropped part way.
        let mut guard = FinalWrite {
            event: Some(event),
            ports,
            retention_secs,
            background,
        };
        if let Some(event) = guard.event.as_ref() {
            log.write_ref(event).await;
        }
        guard.event = None;
    }
}

impl Drop for FinalWrite<'_> {
    fn drop(&mut self) {
        let (Some(event), Some(background)) = (self.event.take(), self.background.take()) else {
            return;
        };
        let (ports, retention) = (self.ports.clone(), self.retention_secs);
        background.spawn(Box::pin(async move {
            AuditLog::new(&ports, retention).record(event).await;
        }));
    }
}

#[derive(Clone, Copy)]
pub struct AuditLog<'a> {
    ports: &'a Ports,
    retention_secs: u64,
}

impl<'a> AuditLog<'a> {
    /// Events expire `retention_secs` after they are written (at least 60 s, the KV minimum).
    #[inline]
    pub fn new(ports: &'a Ports, retention_secs: u64) -> Self {
        AuditLog {
            ports,
            retention_secs,
        }
    }

    /// Write an event of an authenticated caller, capped (events no authenticated caller is
    /// behind go through [`AuditLog::record_unauthenticated`]). A failure to write never turns
    /// a completed action into an error (the action already happened), so it is not reported.
    pub async fn record(&self, event: AuditEvent) {
        self.write(event).await;
    }

    /// The one door for events no authenticated caller is behind (failed logins, lockouts):
    /// anyone can cause them, so they are bounded. At most [`UNAUTHENTICATED_BUDGET`] are written
    /// per [`UNAUTHENTICATED_WINDOW_MS`] window, deployment-wide (an exact session-store
    /// counter); past it, one `audit.suppressed` event per window counts the others. Their ids
    /// end in [`UNAUTHENTICATED_ID_SUFFIX`], which the local stores bound apart from the rest
    /// of the history. When the session store cannot be reached, nothing is written.
    pub async fn record_unauthenticated(&self, mut event: AuditEvent) {
        let now = self.ports.now_ms();
        let Ok(budget) = self
            .ports
            .sessions
            .hit(
                BUDGET_COUNTER,
                UNAUTHENTICATED_WINDOW_MS,
                UNAUTHENTICATED_BUDGET,
                now,
            )
            .await
        else {
            return;
        };
        if budget.allowed {
            if !event.id.ends_with(UNAUTHENTICATED_ID_SUFFIX) {
                event.id.push_str(UNAUTHENTICATED_ID_SUFFIX);
            }
            self.write(event).await;
            return;
        }
        let series = format!("audit-suppressed:{}", budget.reset_at_ms);
        if let Some((first, count)) = self
            .series_count(&series, UNAUTHENTICATED_WINDOW_MS, now)
            .await
        {
            let mut e = AuditEvent::new(first, "vultrino", "audit.suppressed", "failure");
            e.id = series_id(first, &series, UNAUTHENTICATED_ID_SUFFIX);
            e.count = Some(count);
            self.write(e).await;
        }
    }

    /// Record one refusal of a series that repeats within a window — the attempts of a client
    /// locked out until `window_end_ms` — as ONE unauthenticated event per `series` and window,
    /// dated at its first refusal, whose `count` is the number of refusals so far. The count is
    /// an exact session-store counter (of window `counter_window_ms`, at least as long as the
    /// series' window); the event is written (again, under the same id) only when the count
    /// reaches 1, 2, 4, 8, …, so a flood of N refusals costs at most 1 + log2(N) writes, each
    /// through [`AuditLog::record_unauthenticated`].
    pub async fn record_repeated(
        &self,
        series: &str,
        window_end_ms: u64,
        counter_window_ms: u64,
        mut event: AuditEvent,
    ) {
        let series = format!("audit-series:{series}:{window_end_ms}");
        let now = self.ports.now_ms();
        if let Some((first, count)) = self.series_count(&series, counter_window_ms, now).await {
            event.ts = first;
            event.id = series_id(first, &series, UNAUTHENTICATED_ID_SUFFIX);
            event.count = Some(count);
            self.record_unauthenticated(event).await;
        }
    }

    /// Record one refusal of an authenticated caller (`actor`) of which nothing else is written
    /// — a `/proxy/` request refused before anything was sent upstream — so that a caller
    /// cannot turn a flood of refusals into as many writes (a KV write each on Workers).
    ///
    /// Refusals of one `series` (for the proxy: alias and code) by `actor` within one
    /// [`REFUSAL_WINDOW_MS`] window (aligned) are ONE event, dated at the first, whose `count`
    /// is the number of refusals so far; it is (re)written under the same id when the count
    /// reaches 1, 2, 4, 8, … (so it may lag behind the true count by less than half). Every such
    /// write takes one unit of the actor's [`REFUSAL_WRITE_BUDGET`] per window; a write past
    /// the budget is withheld and counted in one `audit.suppressed` event of the actor per
    /// window (itself rewritten at powers of two). So one actor causes at most
    /// `REFUSAL_WRITE_BUDGET + 1 + log2(withheld)` writes per window, however many refusals,
    /// series or aliases. When the session store cannot be reached, nothing is written.
    pub async fn record_refusal(&self, actor: &str, series: &str, mut event: AuditEvent) {
        let now = self.ports.now_ms();
        let window_end = (now / REFUSAL_WINDOW_MS + 1) * REFUSAL_WINDOW_MS;
        // Hashed: the series holds caller-chosen text (an alias).
        let digest = crypto::sha256_hex(format!("{actor}\n{series}").as_bytes());
        let series = format!("audit-refusal:{}:{window_end}", &digest[..32]);
        let Some((first, count)) = self.series_count(&series, REFUSAL_WINDOW_MS, now).await else {
            return;
        };
        let actor_digest = crypto::sha256_hex(actor.as_bytes());
        let budget = format!("audit-refusal-budget:{}:{window_end}", &actor_digest[..32]);
        let Ok(hit) = self
            .ports
            .sessions
            .hit(&budget, REFUSAL_WINDOW_MS, REFUSAL_WRITE_BUDGET, now)
            .await
        else {
            return;
        };
        if hit.allowed {
            event.ts = first;
            event.id = series_id(first, &series, "");
            event.count = Some(count);
            self.write(event).await;
            return;
        }
        let withheld = format!(
            "audit-refusal-withheld:{}:{window_end}",
            &actor_digest[..32]
        );
        if let Some((first, count)) = self.series_count(&withheld, REFUSAL_WINDOW_MS, now).await {
            let mut e = AuditEvent::new(first, actor, "audit.suppressed", "denied");
            e.id = series_id(first, &withheld, "");
            e.count = Some(count);
            self.write(e).await;
        }
    }

    /// Count one occurrence of `series` (an exact counter whose window of `window_ms` starts at
    /// the first occurrence): `(first occurrence, count)` when the count is a power of two,
    /// i.e. when its event is due to be (re)written.
    async fn series_count(&self, series: &str, window_ms: u64, now: u64) -> Option<(u64, u64)> {
        let hit = self
            .ports
            .sessions
            .hit(series, window_ms, u32::MAX, now)
            .await
            .ok()?;
        hit.count.is_power_of_two().then(|| {
            (
                hit.reset_at_ms.saturating_sub(window_ms),
                u64::from(hit.count),
            )
        })
    }

    /// Store the capped event ([`Ports::audit_store`]), then hand the same event to the
    /// deployment's audit sink, if it
    /// has one ([`AuditSink`](crate::ports::AuditSink): a log file, a collector, the Workers
    /// log). The one place events are written, so every event reaches the sink once per write.
    /// The sink gets it even when the put failed: it is then the event's only record.
    async fn write(&self, event: AuditEvent) {
        self.store(&event.capped()).await;
    }

    /// [`AuditLog::write`] of an event the caller keeps: stored as it is when it is within its
    /// caps (no copy), else a capped copy.
    async fn write_ref(&self, event: &AuditEvent) {
        if event.within_caps() {
            self.store(event).await;
        } else {
            self.store(&event.clone().capped()).await;
        }
    }

    /// Append a capped event to the store and hand it to the sink.
    async fn store(&self, event: &AuditEvent) {
        let _ = self
            .ports
            .audit_store()
            .append(std::slice::from_ref(event), self.retention_secs)
            .await;
        if let Some(sink) = &self.ports.audit_sink {
            sink.emit(event);
        }
    }

    /// Strict audit ([`Config::audit_required`](crate::app::Config::audit_required)): store
    /// `event` with outcome `started`, under its own id, before the action it records; the
    /// action's final event replaces it (same id: one event per id in every store). When it
    /// cannot be stored, the action must not happen: 503 `audit_unavailable`. Not handed to the
    /// sinks (the final event is).
    pub async fn require(&self, event: &AuditEvent) -> Result<()> {
        let mut started = event.clone().capped();
        started.outcome = "started".into();
        self.ports
            .audit_store()
            .append(std::slice::from_ref(&started), self.retention_secs)
            .await
            .map_err(|_| {
                Error::unavailable(
                    "the audit store is unavailable and audit is required: the request was not \
                     sent (AUDIT_REQUIRED)",
                )
                .with_code(Code::AuditUnavailable)
            })
    }

    /// Record a successful change (`credential.create`, `key.revoke`, …) by `who`.
    pub async fn change(
        &self,
        who: &Principal,
        action: &str,
        credential: Option<&str>,
        status: u16,
    ) {
        let mut e = AuditEvent::new(self.ports.now_ms(), who.actor(), action, "success");
        e.credential = credential.map(str::to_string);
        e.status = Some(status);
        self.record(e).await;
    }

    /// Events, newest first (admin only). `limit` defaults to 100, at most 1000.
    pub async fn list(
        &self,
        who: &Principal,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        self.list_filtered(who, &AuditFilter::default(), cursor, limit)
            .await
    }

    /// Events that match `filter`, newest first (admin only): at most `limit` (default 100, at
    /// most 1000) of them, found among at most [`MAX_SCANNED_PER_CALL`] stored events (per
    /// shard of a sharded store). The cursor continues after the last event looked at, so a
    /// page may hold fewer than `limit` events (none, even) and still have a cursor: follow it
    /// until it is `None`. See [`AuditStore::query`].
    pub async fn list_filtered(
        &self,
        who: &Principal,
        filter: &AuditFilter,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        who.require(Permission::Admin)?;
        let limit = limit.unwrap_or(100).clamp(1, 1000);
        let page = self
            .ports
            .audit_store()
            .query(filter, cursor, limit)
            .await?;
        Ok((page.events, page.cursor))
    }
}

impl Ports {
    /// The deployment's audit store: [`Ports::audit`], or the KV store's `audit:` keys
    /// ([`KvAuditStore`]).
    // On wasm32 no port is `Send` (JS values are not); natively the KV store is.
    #[allow(clippy::arc_with_non_send_sync)]
    pub fn audit_store(&self) -> Arc<dyn AuditStore> {
        match &self.audit {
            Some(store) => store.clone(),
            None => Arc::new(KvAuditStore::new(self.kv.clone())),
        }
    }
}

/// The audit store of the local backends (and of any deployment whose [`Ports::audit`] is
/// `None`): one KV entry per event at `audit:<id>`, expiring by TTL. Ids sort newest first, so
/// a KV `list("audit:")` pages from the newest event backwards without any index; the cursor
/// is the KV store's.
pub struct KvAuditStore {
    kv: Arc<dyn KvStore>,
}

impl KvAuditStore {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        KvAuditStore { kv }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl AuditStore for KvAuditStore {
    async fn append(&self, events: &[AuditEvent], retention_secs: u64) -> Result<()> {
        for event in events {
            let options = PutOptions {
                expiration_ttl: Some(retention_secs.max(60)),
                metadata: None,
            };
            let bytes = event.to_json();
            self.kv
                .put(&event.kv_key(), Bytes::from(bytes), options)
                .await?;
        }
        Ok(())
    }

    async fn query(
        &self,
        filter: &AuditFilter,
        mut cursor: Option<String>,
        limit: usize,
    ) -> Result<AuditPage> {
        let mut out = Vec::new();
        let mut scanned = 0usize;
        loop {
            // Pages sized so that every key of a page is looked at: the cursor then resumes
            // exactly after the last one.
            let size = (limit - out.len()).min(MAX_SCANNED_PER_CALL - scanned);
            let page = self
                .kv
                .list(ListOptions {
                    prefix: Some(AUDIT_PREFIX.into()),
                    cursor: cursor.take(),
                    limit: Some(size),
                })
                .await?;
            scanned += page.keys.len();
            for k in page.keys {
                // With `since`, the listing ends at the first event older than it (the keys
                // sort by time, so older ones are not read).
                if key_ts(&k.name).is_some_and(|ts| filter.ends_listing_at(ts)) {
                    return Ok(AuditPage {
                        events: out,
                        cursor: None,
                    });
                }
                if let Some(b) = self.kv.get(&k.name).await? {
                    if let Ok(e) = serde_json::from_slice::<AuditEvent>(&b) {
                        if filter.matches(&e) {
                            out.push(e);
                        }
                    }
                }
            }
            cursor = page.cursor;
            if cursor.is_none() || out.len() >= limit || scanned >= MAX_SCANNED_PER_CALL {
                return Ok(AuditPage {
                    events: out,
                    cursor,
                });
            }
        }
    }
}

/// The instant of the event stored at `key`, read from its id (see [`new_id`]), without
/// reading the event.
fn key_ts(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(AUDIT_PREFIX)?.get(..13)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let inverted: u64 = digits.parse().ok()?;
    Some(9_999_999_999_999u64.saturating_sub(inverted))
}

/// The id of the one event of `series` first seen at `first`: sortable like [`new_id`], its
/// random part derived from the series, so that rewriting the event replaces it; ending in
/// `suffix` ([`UNAUTHENTICATED_ID_SUFFIX`] for an unauthenticated event, `""` otherwise).
fn series_id(first: u64, series: &str, suffix: &str) -> String {
    let inverted = 9_999_999_999_999u64.saturating_sub(first);
    let digest = crypto::sha256_hex(series.as_bytes());
    format!("{inverted:013}-{}{suffix}", &digest[..12])
}

/// Strip the query and fragment from a path for the audit log.
pub fn path_without_query(path: &str) -> String {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_events_sort_first() {
        let old = new_id(1_700_000_000_000);
        let new = new_id(1_700_000_000_001);
        assert!(new < old);
    }

    #[test]
    fn ids_of_one_millisecond_are_unique_across_pool_refills() {
        let ids: std::collections::HashSet<String> =
            (0..2000).map(|_| new_id(1_700_000_000_000)).collect();
        assert_eq!(ids.len(), 2000);
    }

    /// Whatever a caller puts in an event, what is written is small: every string is cut to
    /// its cap, marked, and named in `truncated`.
    #[test]
    fn capped_events_are_bounded_whatever_their_strings() {
        // A control character is one byte that JSON writes as six: the worst case.
        let huge = "\u{1}".repeat(900_000);
        let mut e = AuditEvent::new(1_700_000_000_000, huge.clone(), &huge, &huge);
        e.id = huge.clone();
        e.credential = Some(huge.clone());
        e.method = Some(huge.clone());
        e.host = Some(huge.clone());
        e.path = Some(huge.clone());
        e.code = Some(huge.clone());
        // Review of issue 18: the integrity events' field too (a listing names every `key:`
        // entry of the store, whatever its length).
        e.record = Some(huge.clone());
        e.count = Some(u64::MAX);
        e.truncated = vec![huge.clone(), "path".into()];
        let e = e.capped();
        let json = serde_json::to_vec(&e).unwrap_or_default();
        assert!(
            !json.is_empty() && json.len() <= MAX_EVENT_JSON_BYTES,
            "{} bytes",
            json.len()
        );
        let mut cut = e.truncated.clone();
        cut.sort();
        assert_eq!(
            cut,
            [
                "action",
                "actor",
                "code",
                "credential",
                "host",
                "id",
                "method",
                "outcome",
                "path",
                "record"
            ]
        );
        assert!(e.path.as_deref().is_some_and(|p| p.ends_with(CUT_MARKER)));
    }

    #[test]
    fn a_cut_respects_characters_and_short_strings_are_untouched() {
        let mut e = AuditEvent::new(1, "admin:root", "execute", "allowed");
        e.path = Some(format!("/{}", "é".repeat(400)));
        e.host = Some("api.github.com".into());
        let e = e.capped();
        let path = e.path.unwrap_or_default();
        assert!(path.len() <= 512 && path.ends_with(CUT_MARKER), "{path}");
        assert_eq!(e.host.as_deref(), Some("api.github.com"));
        assert_eq!(e.actor, "admin:root");
        assert_eq!(e.truncated, ["path"]);
    }

    #[test]
    fn an_event_that_needs_no_cut_serializes_as_before() {
        let e = AuditEvent::new(1, "key:k1", "execute", "allowed").capped();
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert!(
            v.get("truncated").is_none() && v.get("count").is_none(),
            "{v}"
        );
        // Events written before these fields existed still read.
        let old = r#"{"id":"9998299999999-000000000000","ts":1700000000000,"actor":"a","action":"login","credential":null,"method":null,"host":null,"path":null,"status":401,"outcome":"failure","code":"invalid_login","duration_ms":0}"#;
        let read: Option<AuditEvent> = serde_json::from_str(old).ok();
        assert_eq!(read.map(|e| (e.count, e.truncated.len())), Some((None, 0)));
    }

    #[test]
    fn series_ids_are_stable_sortable_and_unauthenticated() {
        let a = series_id(
            1_700_000_000_000,
            "audit-series:login:1.2.3.4:1700000900000",
            UNAUTHENTICATED_ID_SUFFIX,
        );
        assert_eq!(
            a,
            series_id(
                1_700_000_000_000,
                "audit-series:login:1.2.3.4:1700000900000",
                UNAUTHENTICATED_ID_SUFFIX,
            )
        );
        assert_ne!(
            a,
            series_id(
                1_700_000_000_000,
                "audit-series:login:1.2.3.5:1700000900000",
                UNAUTHENTICATED_ID_SUFFIX,
            )
        );
        assert!(a < new_id(1_699_999_999_999), "sorts by time like new_id");
        assert!(is_unauthenticated_key(&format!("{AUDIT_PREFIX}{a}")));
        assert!(!is_unauthenticated_key(&format!(
            "{AUDIT_PREFIX}{}",
            new_id(1_700_000_000_000)
        )));
    }

    #[test]
    fn filters_keep_what_every_condition_set_matches() {
        let mut e = AuditEvent::new(1_700_000_000_000, "key:k1", "execute", "denied");
        e.credential = Some("github".into());
        let f = |credential: Option<&str>, actor: Option<&str>, outcome: Option<&str>, since| {
            AuditFilter {
                credential: credential.map(str::to_string),
                actor: actor.map(str::to_string),
                outcome: outcome.map(str::to_string),
                since_ms: since,
                until_ms: None,
            }
            .matches(&e)
        };
        assert!(f(None, None, None, None));
        assert!(f(
            Some("github"),
            Some("key:k1"),
            Some("denied"),
            Some(1_700_000_000_000)
        ));
        assert!(
            f(None, Some("key:*"), None, None),
            "a trailing * is a prefix"
        );
        assert!(f(None, Some("*"), None, None));
        assert!(
            !f(None, Some("key:"), None, None),
            "without * the actor is exact"
        );
        assert!(!f(None, Some("admin:*"), None, None));
        assert!(!f(Some("git"), None, None, None), "the credential is exact");
        assert!(!f(None, None, Some("allowed"), None));
        assert!(!f(None, None, None, Some(1_700_000_000_001)));
        let none = AuditEvent::new(1, "admin:root", "login", "success");
        assert!(!AuditFilter {
            credential: Some("github".into()),
            ..AuditFilter::default()
        }
        .matches(&none));
        assert!(AuditFilter::default().is_empty());
    }

    /// `[since, until)`: consecutive ranges count every event once.
    #[test]
    fn the_time_range_is_half_open() {
        let e = AuditEvent::new(1_000, "key:k1", "execute", "allowed");
        let range = |since, until| {
            AuditFilter {
                since_ms: since,
                until_ms: until,
                ..AuditFilter::default()
            }
            .matches(&e)
        };
        assert!(range(Some(1_000), Some(1_001)));
        assert!(!range(Some(999), Some(1_000)), "until is exclusive");
        assert!(range(None, Some(1_001)));
        assert!(!range(None, Some(1_000)));
        assert!(range(Some(1_000), None), "since is inclusive");
    }

    #[test]
    fn a_query_parses_into_the_filter_and_bad_values_are_named() {
        let ok = AuditFilter::from_query(Some(
            "credential=github&actor=key%3A*&outcome=denied&since=5&until=9&limit=3&cursor=x",
        ));
        assert_eq!(
            ok.ok(),
            Some(AuditFilter {
                credential: Some("github".into()),
                actor: Some("key:*".into()),
                outcome: Some("denied".into()),
                since_ms: Some(5),
                until_ms: Some(9),
            })
        );
        assert_eq!(
            AuditFilter::from_query(None).ok(),
            Some(AuditFilter::default())
        );
        for (query, named) in [
            ("until=soon", "until"),
            ("until=", "until"),
            ("until=%2B5", "until"),
            ("until=-1", "until"),
            ("until=99999999999999999999999", "until"),
            ("since=1.5", "since"),
            ("since=9&until=9", "before until"),
            ("since=10&until=9", "before until"),
            ("outcome=", "outcome"),
        ] {
            match AuditFilter::from_query(Some(query)) {
                Ok(f) => panic!("{query} accepted as {f:?}"),
                Err(e) => {
                    assert_eq!(e.code(), Code::BadRequest, "{query}");
                    assert!(e.message().contains(named), "{query}: {}", e.message());
                }
            }
        }
    }

    #[test]
    fn an_events_instant_is_read_from_its_key() {
        let e = AuditEvent::new(1_700_000_000_123, "a", "login", "success");
        assert_eq!(key_ts(&e.kv_key()), Some(1_700_000_000_123));
        let s = series_id(42, "s", UNAUTHENTICATED_ID_SUFFIX);
        assert_eq!(key_ts(&format!("{AUDIT_PREFIX}{s}")), Some(42));
        assert_eq!(key_ts("audit:abc"), None);
        assert_eq!(key_ts("cred:0000000000000-x"), None);
    }

    #[test]
    fn query_strings_never_reach_the_audit_path() {
        assert_eq!(path_without_query("/a/b?token=s3cret#x"), "/a/b");
        assert_eq!(path_without_query("/a"), "/a");
    }
}
