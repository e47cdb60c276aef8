//! One audit event ([`AuditEvent`]): its fields, their caps and its sortable id. A leaf of the
//! audit module, so that the ports (the audit sink) can name an event without depending on the
//! audit log, which depends on the ports.

use serde::{Deserialize, Serialize};

use crate::crypto;

/// KV key prefix of audit events.
pub const AUDIT_PREFIX: &str = "audit:";

/// Ends a string cut to its field's cap (the cap includes it).
pub const CUT_MARKER: &str = "…";

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Milliseconds since the epoch.
    pub ts: u64,
    /// `admin:<user>`, `key:<id>`, `client:<ip>` for failed logins, `vultrino` for
    /// `audit.suppressed` of unauthenticated events (`key:<id>` for a key's withheld refusals,
    /// [`AuditLog::record_refusal`]).
    pub actor: String,
    /// `execute`, `proxy`, `login`, `logout`, `credential.create`, `credential.update`, `credential.delete`,
    /// `key.create`, `key.revoke`, `role.create`, `role.delete`, `audit.suppressed`,
    /// `records.migrate`, `record.refused` (a stored record that failed its integrity check),
    /// `sync.import`.
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
    /// `allowed`, `denied`, `error` (execute, proxy), `cancelled` (a proxied reply whose client
    /// went away before its end); `success`, `failure` (other actions).
    pub outcome: String,
    /// Error code when denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub duration_ms: u64,
    /// Pass-through proxy: request body bytes sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Pass-through proxy: response body bytes sent to the client (after scrubbing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Executes and proxied requests: whether a secret was scrubbed from the upstream's reply
    /// (headers or body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrubbed: Option<bool>,
    /// How many occurrences this one event stands for, when more than one can: the refused
    /// attempts of a locked-out client in one lockout window, the unauthenticated events
    /// `audit.suppressed` stands for. Rewritten when it reaches 2, 4, 8, …: the true number is
    /// at least `count` and less than twice it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The approval an event is about (`approval_*` events), or that let an executed request
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The fields that were cut to their cap (each then ends with [`CUT_MARKER`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
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
            bytes_in: None,
            bytes_out: None,
            scrubbed: None,
            count: None,
            approval_id: None,
            truncated: Vec::new(),
        }
    }

    pub fn kv_key(&self) -> String {
        [AUDIT_PREFIX, &self.id].concat()
    }

    /// The event with every string cut to its field's cap, ending with [`CUT_MARKER`] and
    /// named in `truncated` when cut. Every writer of [`AuditLog`] applies it, so that an event
    /// is at most [`MAX_EVENT_JSON_BYTES`] whatever a caller put in it.
    pub fn capped(mut self) -> Self {
        let mut cut = std::mem::take(&mut self.truncated);
        // Each field with its cap in bytes (UTF-8), marker included.
        let fields: [(&str, usize, Option<&mut String>); 11] = [
            ("id", 64, Some(&mut self.id)),
            ("actor", 128, Some(&mut self.actor)),
            ("action", 64, Some(&mut self.action)),
            ("credential", 128, self.credential.as_mut()),
            ("record", 256, self.record.as_mut()),
            ("method", 32, self.method.as_mut()),
            ("host", 256, self.host.as_mut()),
            ("path", 512, self.path.as_mut()),
            ("outcome", 32, Some(&mut self.outcome)),
            ("code", 64, self.code.as_mut()),
            ("approval_id", 64, self.approval_id.as_mut()),
        ];
        // `truncated` names fields, nothing else.
        cut.retain(|f| fields.iter().any(|(name, _, _)| name == f));
        for (name, max, field) in fields {
            if field.is_some_and(|v| cap(v, max)) && !cut.iter().any(|f| f == name) {
                cut.push(name.to_string());
            }
        }
        self.truncated = cut;
        self
    }
}

/// Cut `s` to at most `max` bytes, at a character boundary, ending with [`CUT_MARKER`]; whether
/// it was cut.
fn cap(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max.saturating_sub(CUT_MARKER.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT_MARKER);
    true
}

/// A time-sortable id, newest first, unique thanks to 48 random bits.
pub fn new_id(ts: u64) -> String {
    let inverted = 9_999_999_999_999u64.saturating_sub(ts);
    let r = id_random();
    // What `format!("{inverted:013}-{}", crypto::hex(&r))` gives, without the formatting
    // machinery (one of the per-request costs of benches/README.md, "instructions per request").
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [b'0'; 13];
    let mut n = inverted;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut id = String::with_capacity(digits.len() + 1 + 2 * r.len());
    id.extend(digits.iter().map(|&d| char::from(d)));
    id.push('-');
    for b in r {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 15)]));
    }
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids keep their format (13 digits of the inverted time, a dash, 12 hex digits), so they
    /// sort newest first whatever the time, its extremes included.
    #[test]
    fn ids_are_inverted_time_then_random_hex_and_sort_newest_first() {
        let times = [0, 1, 9, 42, 1_765_000_000_000, 9_999_999_999_998, u64::MAX];
        for ts in times {
            let id = new_id(ts);
            let (digits, random) = id.split_once('-').expect("a dash");
            let inverted = 9_999_999_999_999u64.saturating_sub(ts);
            assert_eq!(digits, format!("{inverted:013}"), "{id}");
            assert_eq!(random.len(), 12, "{id}");
            assert!(random
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        let ids: Vec<String> = times.iter().map(|&t| new_id(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let mut newest_first = ids;
        newest_first.reverse();
        assert_eq!(sorted, newest_first);
    }
}
