//! The one definition of the audit filters (`GET /v1/audit`'s `credential`, `actor`,
//! `outcome`, `since`, `until`): every audit store keeps what [`AuditFilter::matches`] keeps.

use crate::error::{Code, Error, Result};

use super::event::AuditEvent;

/// Stored events one `AuditStore::query` call looks at, at most, per shard (in the KV store
/// each is one KV read: a Workers request may make 1000 subrequests).
pub const MAX_SCANNED_PER_CALL: usize = 1000;

/// What `AuditLog::list_filtered` keeps; every field set must match (`GET /v1/audit`'s
/// `credential`, `actor`, `outcome`, `since` and `until`; [`AuditFilter::from_query`]). The one
/// definition of the filters: every audit storage keeps what [`AuditFilter::matches`] keeps.
/// Serializable: a store that runs elsewhere (the worker's Durable Objects) is sent it and
/// applies this same [`AuditFilter::matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AuditFilter {
    /// The credential's alias, exactly.
    pub credential: Option<String>,
    /// The actor exactly (`key:<id>`, `admin:<user>`), or every actor starting with it when it
    /// ends with `*` (`key:*`: every API key).
    pub actor: Option<String>,
    /// `allowed`, `denied`, `error`, `cancelled`, `success`, `failure`.
    pub outcome: Option<String>,
    /// Only events at or after this instant (ms since the epoch; inclusive).
    pub since_ms: Option<u64>,
    /// Only events before this instant (ms since the epoch; exclusive), so that consecutive
    /// ranges `[a, b)`, `[b, c)` count every event once (docs/decisions/0105-audit-view-and-metrics.md).
    pub until_ms: Option<u64>,
}

impl AuditFilter {
    /// Whether `e` passes every condition set.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let actor_ok = match self.actor.as_deref() {
            None => true,
            Some(a) => match a.strip_suffix('*') {
                Some(prefix) => e.actor.starts_with(prefix),
                None => e.actor == a,
            },
        };
        actor_ok
            && self
                .credential
                .as_deref()
                .is_none_or(|c| e.credential.as_deref() == Some(c))
            && self.outcome.as_deref().is_none_or(|o| e.outcome == o)
            && self.since_ms.is_none_or(|s| e.ts >= s)
            && self.until_ms.is_none_or(|u| e.ts < u)
    }

    /// The filters of a `GET /v1/audit` query string: `credential`, `actor` (exact, or a
    /// prefix ending in `*`), `outcome` (each 1 to 256 bytes), `since` (inclusive) and `until`
    /// (exclusive), instants in ms since the epoch, `since` before `until`. Other parameters
    /// (`limit`, `cursor`) are not its business. Any bad value is a 400 `bad_request` naming it.
    pub fn from_query(query: Option<&str>) -> Result<AuditFilter> {
        let pairs: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let param = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let text = |name: &str| -> Result<Option<String>> {
            match param(name) {
                Some(v) if v.is_empty() || v.len() > 256 => Err(Error::bad_request(format!(
                    "{name} must be 1 to 256 bytes long"
                ))
                .with_code(Code::BadRequest)),
                v => Ok(v.map(str::to_string)),
            }
        };
        let instant = |name: &str| -> Result<Option<u64>> {
            param(name)
                .map(|v| {
                    // Digits only: `parse` would take a leading `+`.
                    v.bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| v.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| {
                            Error::bad_request(format!(
                                "{name} must be an instant in milliseconds since the epoch"
                            ))
                            .with_code(Code::BadRequest)
                        })
                })
                .transpose()
        };
        let filter = AuditFilter {
            credential: text("credential")?,
            actor: text("actor")?,
            outcome: text("outcome")?,
            since_ms: instant("since")?,
            until_ms: instant("until")?,
        };
        if let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms) {
            if since >= until {
                return Err(Error::bad_request(
                    "since must be before until (the range is [since, until))",
                )
                .with_code(Code::BadRequest));
            }
        }
        Ok(filter)
    }

    /// Whether an event of instant `ts` is older than `since`: in a listing newest first, the
    /// first such event ends it (every later one is older still). Both stores stop there.
    pub fn ends_listing_at(&self, ts: u64) -> bool {
        self.since_ms.is_some_and(|since| ts < since)
    }

    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        *self == AuditFilter::default()
    }
}
