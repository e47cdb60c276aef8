//! Audit events: who did what, to which credential and host, with what outcome.
//!
//! Every execute (allowed or denied), every login attempt and every change to credentials, keys and
//! roles writes one event at `audit:<id>` with a retention TTL. Events never hold secrets, bodies,
//! headers or query strings: the path is stored without its query.
//!
//! Ids sort newest first: the first 13 digits are `9999999999999 - ts_ms`, so a KV `list("audit:")`
//! (lexicographic) pages from the newest event backwards without any index.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::{Permission, Principal};
use crate::crypto;
use crate::error::Result;
use crate::ports::{ListOptions, Ports, PutOptions};

/// KV key prefix of audit events.
pub const AUDIT_PREFIX: &str = "audit:";

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Milliseconds since the epoch.
    pub ts: u64,
    /// `admin:<user>`, `key:<id>`, `anonymous` or `client:<ip>` for failed logins.
    pub actor: String,
    /// `execute`, `login`, `logout`, `credential.create`, `credential.update`, `credential.delete`,
    /// `key.create`, `key.revoke`, `role.create`, `role.delete`, `records.migrate`, `record.refused`
    /// (a stored record that failed its integrity check), `sync.import`.
    pub action: String,
    #[serde(default)]
    pub credential: Option<String>,
    /// The KV key of the stored record an integrity event is about (`key:<id>`, `role:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Path without query string.
    #[serde(default)]
    pub path: Option<String>,
    /// Upstream status for executes; the reply status otherwise.
    #[serde(default)]
    pub status: Option<u16>,
    /// `allowed`, `denied`, `error` (execute); `success`, `failure` (other actions).
    pub outcome: String,
    /// Error code when denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub duration_ms: u64,
}

impl AuditEvent {
    /// A new event at `ts` with a fresh sortable id.
    pub fn new(ts: u64, actor: impl Into<String>, action: &str, outcome: &str) -> Self {
        AuditEvent {
            id: new_id(ts),
            ts,
            actor: actor.into(),
            action: action.to_string(),
            credential: None,
            record: None,
            method: None,
            host: None,
            path: None,
            status: None,
            outcome: outcome.to_string(),
            code: None,
            duration_ms: 0,
        }
    }

    pub fn kv_key(&self) -> String {
        format!("{AUDIT_PREFIX}{}", self.id)
    }
}

/// The audit log of one deployment: the only code that writes or reads `audit:` records.
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

    /// Write an event. A failure to write never turns a completed action into an error (the
    /// action already happened), so it is not reported.
    pub async fn record(&self, event: AuditEvent) {
        let options = PutOptions {
            expiration_ttl: Some(self.retention_secs.max(60)),
            metadata: None,
        };
        if let Ok(bytes) = serde_json::to_vec(&event) {
            let _ = self
                .ports
                .kv
                .put(&event.kv_key(), Bytes::from(bytes), options)
                .await;
        }
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
        who.require(Permission::Admin)?;
        let limit = Some(limit.unwrap_or(100).clamp(1, 1000));
        let page = self
            .ports
            .kv
            .list(ListOptions {
                prefix: Some(AUDIT_PREFIX.into()),
                cursor,
                limit,
            })
            .await?;
        let mut out = Vec::with_capacity(page.keys.len());
        for k in page.keys {
            if let Some(b) = self.ports.kv.get(&k.name).await? {
                if let Ok(e) = serde_json::from_slice::<AuditEvent>(&b) {
                    out.push(e);
                }
            }
        }
        Ok((out, page.cursor))
    }
}

/// A time-sortable id, newest first, unique thanks to 48 random bits.
pub fn new_id(ts: u64) -> String {
    let inverted = 9_999_999_999_999u64.saturating_sub(ts);
    let r = id_random();
    format!("{inverted:013}-{}", crypto::hex(&r))
}

/// 48 random bits for an id, from a pool refilled from the OS generator 85 ids at a time:
/// every execute writes an event, and a system call per event showed in the load profile.
/// The bits are as random as before (they are not secret, only unique). See
/// docs/decisions/0028-audit-id-random-pool.md.
fn id_random() -> [u8; 6] {
    struct Pool {
        bytes: [u8; 510],
        used: usize,
    }
    static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool {
        bytes: [0; 510],
        used: 510,
    });
    let mut pool = POOL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if pool.used + 6 > pool.bytes.len() {
        pool.bytes = crypto::random_bytes();
        pool.used = 0;
    }
    let mut out = [0u8; 6];
    let at = pool.used;
    out.copy_from_slice(&pool.bytes[at..at + 6]);
    // Each byte is handed out once.
    pool.bytes[at..at + 6].fill(0);
    pool.used += 6;
    out
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

    #[test]
    fn query_strings_never_reach_the_audit_path() {
        assert_eq!(path_without_query("/a/b?token=s3cret#x"), "/a/b");
        assert_eq!(path_without_query("/a"), "/a");
    }
}
