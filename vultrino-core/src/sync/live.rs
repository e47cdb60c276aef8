//! Live hybrid sync (docs/decisions/0104-live-hybrid-sync.md): a local instance keeps pulling
//! the edge's export on an interval and applies what changed — adds, updates, deletions — to
//! its store, while it serves. This module holds what the pull loop (the backend's: it owns the
//! HTTP client and the timer) and the API share:
//!
//! - [`LiveSync`]: the state of the sync (edge, last success, errors, which records came from
//!   the edge), one per process in an `Arc`. The API reads it for `/healthz` and the 409
//!   `synced_record` of a write to a synced record; a metrics exporter can read
//!   [`LiveSync::status`] too.
//! - [`apply`]: one pulled export, verified whole (keyring, envelopes, signatures: the checks of
//!   [`super::import`]) before any record is written; only the records whose edge bytes changed
//!   since the last applied pull are written, and only records that came from the edge are ever
//!   deleted.
//!
//! What was applied is remembered in the store itself ([`STATE_KEY`]), so a restart knows which
//! records are the edge's and which are local.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{check_keyring, put_record, verify, Export, ExportRecord};
use crate::crypto::Keys;
use crate::error::{Code, Error, Result};
use crate::kv::put_json;
use crate::ports::{KvStore, SessionStore};

/// The store record that remembers the last applied pull (not a synced prefix: never exported).
pub const STATE_KEY: &str = "sync:state";

/// The digest of bytes, as an `ETag` value and in [`Applied::digests`]: base64url SHA-256.
pub fn digest(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The digest of one exported record: its value and its metadata.
fn record_digest(r: &ExportRecord) -> String {
    let meta = r
        .metadata
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update((r.value.len() as u64).to_be_bytes());
    h.update(r.value.as_bytes());
    h.update(meta.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// What the last applied pull left in the store ([`STATE_KEY`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The edge's origin the records came from.
    pub edge: String,
    /// The export's `ETag`: sent back as `If-None-Match`, so an unchanged edge answers 304.
    pub etag: Option<String>,
    /// Every record that came from the edge, with the digest of the bytes the edge sent.
    pub digests: BTreeMap<String, String>,
}

/// One failure of a pull, as `/healthz` shows it (never a secret: the messages are the sync's
/// own, the edge's error code and message, or a transport error without the token).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyncError {
    pub code: String,
    pub message: String,
}

/// The sync's state at one instant (`/healthz` → `sync`; [`LiveSync::status`]).
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    /// The edge's origin (`https://host[:port]`).
    pub edge: String,
    /// `starting` (no pull finished yet), `ok` (the last pull succeeded) or `failing`.
    pub state: &'static str,
    pub interval_ms: u64,
    pub last_attempt_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// Time since the last success (`None` before the first): how old the local copy may be.
    pub lag_ms: Option<u64>,
    /// When a pull last changed something here.
    pub last_change_ms: Option<u64>,
    pub next_attempt_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<SyncError>,
    /// Pulls finished since start: all, the unchanged ones (a 304), the failed ones.
    pub pulls: u64,
    pub unchanged_pulls: u64,
    pub failed_pulls: u64,
    /// Size of the last reply's body (0 for a 304).
    pub last_reply_bytes: u64,
    /// Records here that came from the edge (read-only here).
    pub records: usize,
}

#[derive(Debug)]
struct Inner {
    applied: Applied,
    synced: HashSet<String>,
    last_attempt_ms: Option<u64>,
    last_success_ms: Option<u64>,
    last_change_ms: Option<u64>,
    next_attempt_ms: Option<u64>,
    consecutive_failures: u32,
    last_error: Option<SyncError>,
    pulls: u64,
    unchanged_pulls: u64,
    failed_pulls: u64,
    last_reply_bytes: u64,
}

/// The live sync of one process: shared by the pull loop (writer), the API (`/healthz`, the 409
/// of a write to a synced record) and whatever else reports it (metrics).
#[derive(Debug)]
pub struct LiveSync {
    edge: String,
    interval_ms: u64,
    inner: Mutex<Inner>,
}

/// What one applied pull changed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Records written (new on the edge, or changed there), sorted.
    pub written: Vec<String>,
    /// Records deleted (gone from the edge), sorted.
    pub deleted: Vec<String>,
}

impl LiveSync {
    /// The sync from `edge` (its origin, as shown and named in errors) every `interval_ms`.
    pub fn new(edge: impl Into<String>, interval_ms: u64) -> LiveSync {
        LiveSync {
            edge: edge.into(),
            interval_ms,
            inner: Mutex::new(Inner {
                applied: Applied::default(),
                synced: HashSet::new(),
                last_attempt_ms: None,
                last_success_ms: None,
                last_change_ms: None,
                next_attempt_ms: None,
                consecutive_failures: 0,
                last_error: None,
                pulls: 0,
                unchanged_pulls: 0,
                failed_pulls: 0,
                last_reply_bytes: 0,
            }),
        }
    }

    /// Every critical section is a few field updates, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The edge's origin.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Read what the last applied pull left in `kv` (at start, before the first pull): which
    /// records are the edge's. A state of another edge keeps its records (they stay read-only
    /// and are deleted when this edge does not have them) but not its `ETag`.
    pub async fn load(&self, kv: &dyn KvStore) -> Result<()> {
        let Some(bytes) = kv.get(STATE_KEY).await? else {
            return Ok(());
        };
        let mut applied: Applied = serde_json::from_slice(&bytes).map_err(|_| {
            Error::unavailable(format!("the store's {STATE_KEY} record is not valid"))
                .with_code(Code::InvalidRecord)
        })?;
        if applied.edge != self.edge {
            applied.etag = None;
        }
        let mut g = self.lock();
        g.synced = applied.digests.keys().cloned().collect();
        g.applied = applied;
        Ok(())
    }

    /// The `ETag` of the last applied export, for `If-None-Match`.
    pub fn etag(&self) -> Option<String> {
        self.lock().applied.etag.clone()
    }

    /// Whether the record `key` came from the edge (and so is read-only here).
    pub fn is_synced(&self, key: &str) -> bool {
        self.lock().synced.contains(key)
    }

    /// The state at `now_ms`.
    pub fn status(&self, now_ms: u64) -> SyncStatus {
        let g = self.lock();
        let state = if g.consecutive_failures > 0 {
            "failing"
        } else if g.last_success_ms.is_some() {
            "ok"
        } else {
            "starting"
        };
        SyncStatus {
            edge: self.edge.clone(),
            state,
            interval_ms: self.interval_ms,
            last_attempt_ms: g.last_attempt_ms,
            last_success_ms: g.last_success_ms,
            lag_ms: g.last_success_ms.map(|t| now_ms.saturating_sub(t)),
            last_change_ms: g.last_change_ms,
            next_attempt_ms: g.next_attempt_ms,
            consecutive_failures: g.consecutive_failures,
            last_error: g.last_error.clone(),
            pulls: g.pulls,
            unchanged_pulls: g.unchanged_pulls,
            failed_pulls: g.failed_pulls,
            last_reply_bytes: g.last_reply_bytes,
            records: g.synced.len(),
        }
    }

    /// How long to wait before the next pull after `failures` failures in a row: the interval,
    /// doubled per failure, at most 10 minutes (or the interval, when that is longer).
    pub fn next_wait_ms(&self, failures: u32) -> u64 {
        let cap = self.interval_ms.max(MAX_BACKOFF_MS);
        let factor = 1u64 << failures.min(20);
        self.interval_ms.saturating_mul(factor).min(cap)
    }

    /// The edge answered 304: nothing changed since the last applied pull.
    pub fn unchanged(&self, now_ms: u64) {
        let mut g = self.lock();
        g.pulls += 1;
        g.unchanged_pulls += 1;
        g.last_reply_bytes = 0;
        g.succeeded(now_ms, self.interval_ms);
    }

    /// A pull failed: nothing was applied; the next one waits longer. Returns the wait.
    pub fn failed(&self, now_ms: u64, error: SyncError) -> u64 {
        let mut g = self.lock();
        g.pulls += 1;
        g.failed_pulls += 1;
        g.last_attempt_ms = Some(now_ms);
        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
        g.last_error = Some(error);
        let wait = self.next_wait_ms(g.consecutive_failures);
        g.next_attempt_ms = Some(now_ms.saturating_add(wait));
        wait
    }

    /// Apply one pulled export (its `ETag`, and the size of the reply's body) to `kv`, whose
    /// records are sealed under `keys`: see [`apply`]. Pulls are applied one at a time (the
    /// caller's loop is the only writer).
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        kv: &dyn KvStore,
        sessions: &dyn SessionStore,
        keys: &Keys,
        export: &Export,
        etag: Option<String>,
        reply_bytes: u64,
        now_ms: u64,
    ) -> Result<Change> {
        let previous = self.lock().applied.clone();
        let (applied, change) = apply(
            kv, sessions, keys, export, &self.edge, etag, &previous, now_ms,
        )
        .await?;
        let mut g = self.lock();
        g.synced = applied.digests.keys().cloned().collect();
        g.applied = applied;
        g.pulls += 1;
        g.last_reply_bytes = reply_bytes;
        if !change.written.is_empty() || !change.deleted.is_empty() {
            g.last_change_ms = Some(now_ms);
        }
        g.succeeded(now_ms, self.interval_ms);
        Ok(change)
    }
}

impl Inner {
    fn succeeded(&mut self, now_ms: u64, interval_ms: u64) {
        self.last_attempt_ms = Some(now_ms);
        self.last_success_ms = Some(now_ms);
        self.consecutive_failures = 0;
        self.last_error = None;
        self.next_attempt_ms = Some(now_ms.saturating_add(interval_ms));
    }
}

/// The longest wait between two pulls after failures (unless the interval is longer).
pub const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;

/// Apply `export`, pulled from `edge`, to `kv` after the pull `previous` was applied. The whole
/// export is checked first — its keyring is this store's (409 `keyring_mismatch`), every
/// credential envelope opens under `keys`, every key and role record is signed — and nothing is
/// written unless all of it passes. Then each record whose bytes differ from what the edge sent
/// last time (or that is new) is written, one atomic write per record, and each record that came
/// from the edge before and is gone from it now is deleted. A local record the edge never sent
/// is never touched (one of the same name on the edge replaces it, and from then on is the
/// edge's). Finally the new state is stored ([`STATE_KEY`]): a crash before that re-applies the
/// same export, which writes the same bytes.
///
/// An API key the edge no longer has was revoked there: it is marked revoked in `sessions`
/// before its record is deleted, as [`crate::auth::ApiKeys::revoke`] does, so a request that
/// read the record before the deletion and writes it back afterwards (its once-a-minute
/// `last_used_at`) cannot bring the key back, and requests already authenticated with it (held
/// approvals, streams) stop at their next check.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    kv: &dyn KvStore,
    sessions: &dyn SessionStore,
    keys: &Keys,
    export: &Export,
    edge: &str,
    etag: Option<String>,
    previous: &Applied,
    now_ms: u64,
) -> Result<(Applied, Change)> {
    check_keyring(kv, export).await.map_err(|e| {
        if e.code() != Code::KeyringMismatch {
            return e;
        }
        Error::conflict(
            "the edge's keyring is not this store's: this data directory has records of its own \
             sealed under another keyring (a first run here, or another deployment), so the \
             edge's records cannot be kept here; nothing was applied. Sync into a new, empty \
             data directory (its first copy comes from the edge)",
        )
        .with_code(Code::KeyringMismatch)
    })?;
    if keys.key_id_hex() != export.keyring.key_id {
        return Err(Error::conflict(
            "the edge's keyring is not this store's (another master key): nothing was applied",
        )
        .with_code(Code::KeyringMismatch));
    }
    verify(kv, keys, export, now_ms).await?;
    let mut digests = BTreeMap::new();
    let mut change = Change::default();
    for r in &export.records {
        let d = record_digest(r);
        if previous.digests.get(&r.key) != Some(&d) {
            put_record(kv, r).await?;
            change.written.push(r.key.clone());
        }
        digests.insert(r.key.clone(), d);
    }
    for key in previous.digests.keys() {
        if !digests.contains_key(key) {
            if let Some(id) = key.strip_prefix(crate::auth::keys::KEY_PREFIX) {
                sessions
                    .mark(
                        &crate::auth::keys::revoked_marker(id),
                        crate::auth::keys::REVOKED_MARKER_TTL_MS,
                        now_ms,
                    )
                    .await?;
            }
            kv.delete(key).await?;
            change.deleted.push(key.clone());
        }
    }
    change.written.sort();
    let applied = Applied {
        edge: edge.to_string(),
        etag,
        digests,
    };
    put_json(kv, STATE_KEY, &applied, None).await?;
    Ok((applied, change))
}

/// After a one-shot import from `edge` (`vultrino sync`, and the first copy of
/// `serve --sync-from`): remember which records came from the edge, with what the store held of
/// an earlier pull — so a live sync started later treats them as the edge's (read-only here,
/// deleted when the edge deletes them; a key deleted there is revoked here) instead of as local
/// records it must never touch. No `ETag`: the first live pull fetches the whole export.
pub async fn remember_import(kv: &dyn KvStore, edge: &str, export: &Export) -> Result<()> {
    let mut applied: Applied = match kv.get(STATE_KEY).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
            Error::unavailable(format!("the store's {STATE_KEY} record is not valid"))
                .with_code(Code::InvalidRecord)
        })?,
        None => Applied::default(),
    };
    applied.edge = edge.to_string();
    applied.etag = None;
    for r in &export.records {
        applied.digests.insert(r.key.clone(), record_digest(r));
    }
    put_json(kv, STATE_KEY, &applied, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes_or_the_interval() {
        let s = LiveSync::new("https://edge.example", 60_000);
        assert_eq!(s.next_wait_ms(0), 60_000);
        assert_eq!(s.next_wait_ms(1), 120_000);
        assert_eq!(s.next_wait_ms(3), 480_000);
        assert_eq!(s.next_wait_ms(4), MAX_BACKOFF_MS);
        assert_eq!(s.next_wait_ms(u32::MAX), MAX_BACKOFF_MS);
        let slow = LiveSync::new("https://edge.example", 3_600_000);
        assert_eq!(slow.next_wait_ms(5), 3_600_000);
    }

    #[test]
    fn status_reports_failures_until_a_success() {
        let s = LiveSync::new("https://edge.example", 1000);
        assert_eq!(s.status(0).state, "starting");
        let wait = s.failed(
            10,
            SyncError {
                code: "edge_unreachable".into(),
                message: "down".into(),
            },
        );
        assert_eq!(wait, 2000);
        let st = s.status(20);
        assert_eq!((st.state, st.consecutive_failures), ("failing", 1));
        assert_eq!(st.lag_ms, None);
        s.unchanged(30);
        let st = s.status(130);
        assert_eq!((st.state, st.last_error.clone()), ("ok", None));
        assert_eq!((st.last_success_ms, st.lag_ms), (Some(30), Some(100)));
        assert_eq!((st.pulls, st.unchanged_pulls, st.failed_pulls), (2, 1, 1));
    }
}
