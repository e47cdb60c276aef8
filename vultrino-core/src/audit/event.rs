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
        // `truncated` names fields, each once, nothing else (a caller's list of a million
        // names would otherwise pass the event's bound: review of 2026-12-07 session 5, L1).
        let mut cut: Vec<String> = Vec::new();
        for f in std::mem::take(&mut self.truncated) {
            if CAPS.iter().any(|(name, _)| *name == f) && !cut.contains(&f) {
                cut.push(f);
            }
        }
        for ((name, max), field) in CAPS.into_iter().zip(self.capped_fields_mut()) {
            if field.is_some_and(|v| cap(v, max)) && !cut.iter().any(|f| f == name) {
                cut.push(name.to_string());
            }
        }
        self.truncated = cut;
        self
    }

    /// Whether [`AuditEvent::capped`] gives this event back unchanged: every capped field
    /// within its cap, and `truncated` naming fields only, each once. Lets a writer that holds
    /// the event by reference store it as it is, without a copy (almost every event).
    pub fn within_caps(&self) -> bool {
        let t = &self.truncated;
        CAPS.into_iter()
            .zip(self.capped_fields())
            .all(|((_, max), field)| field.is_none_or(|v| v.len() <= max))
            // More names than fields has a duplicate or a stranger: no need to look further
            // (and the check below stays within 11 × 11 comparisons).
            && t.len() <= CAPS.len()
            && t.iter().enumerate().all(|(i, f)| {
                CAPS.iter().any(|(name, _)| name == f) && !t[..i].contains(f)
            })
    }

    /// The capped fields, in the order of [`CAPS`].
    fn capped_fields(&self) -> [Option<&String>; 11] {
        [
            Some(&self.id),
            Some(&self.actor),
            Some(&self.action),
            self.credential.as_ref(),
            self.record.as_ref(),
            self.method.as_ref(),
            self.host.as_ref(),
            self.path.as_ref(),
            Some(&self.outcome),
            self.code.as_ref(),
            self.approval_id.as_ref(),
        ]
    }

    /// [`AuditEvent::capped_fields`], to cut.
    fn capped_fields_mut(&mut self) -> [Option<&mut String>; 11] {
        [
            Some(&mut self.id),
            Some(&mut self.actor),
            Some(&mut self.action),
            self.credential.as_mut(),
            self.record.as_mut(),
            self.method.as_mut(),
            self.host.as_mut(),
            self.path.as_mut(),
            Some(&mut self.outcome),
            self.code.as_mut(),
            self.approval_id.as_mut(),
        ]
    }
}

/// Each capped field of an event with its cap in bytes (UTF-8), marker included; the order of
/// [`AuditEvent::capped_fields`].
const CAPS: [(&str, usize); 11] = [
    ("id", 64),
    ("actor", 128),
    ("action", 64),
    ("credential", 128),
    ("record", 256),
    ("method", 32),
    ("host", 256),
    ("path", 512),
    ("outcome", 32),
    ("code", 64),
    ("approval_id", 64),
];

/// The first allocation for an event's JSON: a proxied request's event is ~350 bytes (one
/// allocation instead of a dozen regrowths).
pub const EVENT_JSON_CAPACITY: usize = 512;

impl AuditEvent {
    /// The event as JSON, its stored form ([`AuditEvent::write_json`]).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(EVENT_JSON_CAPACITY);
        self.write_json(&mut out);
        out
    }

    /// Append the event as JSON to `out`: byte for byte what `serde_json` writes for it (the
    /// stored format; property-tested against `serde_json` as the oracle), without serde's
    /// per-field machinery — every audited request writes one (benches/README.md,
    /// "instructions per request").
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every field by name, no `..`: a field added to the struct fails the build here until
        // it is written too (review of perf13b, I2).
        let AuditEvent {
            id,
            ts,
            actor,
            action,
            credential,
            record,
            method,
            host,
            path,
            status,
            outcome,
            code,
            duration_ms,
            bytes_in,
            bytes_out,
            scrubbed,
            count,
            approval_id,
            truncated,
        } = self;
        out.extend_from_slice(b"{\"id\":");
        json_str(out, id);
        out.extend_from_slice(b",\"ts\":");
        json_u64(out, *ts);
        out.extend_from_slice(b",\"actor\":");
        json_str(out, actor);
        out.extend_from_slice(b",\"action\":");
        json_str(out, action);
        out.extend_from_slice(b",\"credential\":");
        json_opt_str(out, credential.as_deref());
        if let Some(record) = record {
            out.extend_from_slice(b",\"record\":");
            json_str(out, record);
        }
        out.extend_from_slice(b",\"method\":");
        json_opt_str(out, method.as_deref());
        out.extend_from_slice(b",\"host\":");
        json_opt_str(out, host.as_deref());
        out.extend_from_slice(b",\"path\":");
        json_opt_str(out, path.as_deref());
        out.extend_from_slice(b",\"status\":");
        match *status {
            Some(status) => json_u64(out, u64::from(status)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"outcome\":");
        json_str(out, outcome);
        if let Some(code) = code {
            out.extend_from_slice(b",\"code\":");
            json_str(out, code);
        }
        out.extend_from_slice(b",\"duration_ms\":");
        json_u64(out, *duration_ms);
        if let Some(n) = *bytes_in {
            out.extend_from_slice(b",\"bytes_in\":");
            json_u64(out, n);
        }
        if let Some(n) = *bytes_out {
            out.extend_from_slice(b",\"bytes_out\":");
            json_u64(out, n);
        }
        if let Some(scrubbed) = *scrubbed {
            out.extend_from_slice(b",\"scrubbed\":");
            out.extend_from_slice(if scrubbed { b"true" } else { b"false" });
        }
        if let Some(n) = *count {
            out.extend_from_slice(b",\"count\":");
            json_u64(out, n);
        }
        if let Some(id) = approval_id {
            out.extend_from_slice(b",\"approval_id\":");
            json_str(out, id);
        }
        if !truncated.is_empty() {
            out.extend_from_slice(b",\"truncated\":[");
            for (i, name) in truncated.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, name);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

fn json_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as `serde_json` writes it: `"` and `\\` escaped, the control characters as
/// `\b`, `\t`, `\n`, `\f`, `\r` or `\u00xx` (lower-case hex), everything else as it is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most values need no escape: one branch-free pass (the compiler vectorises it) tells.
    let needs_escape = bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
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

    fn opt_str() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        proptest::option::of(any_str())
    }

    /// Any text, weighted towards what needs escaping: quotes, backslashes, every control
    /// character, DEL, non-ASCII (as it is in JSON) and the cut marker.
    fn any_str() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![".*", "[\"\\\\\\x00-\\x1f\\x7f a/é…\u{2028}\u{1F600}]{0,12}",]
    }

    proptest::proptest! {
        /// The stored JSON of an event is what serde_json writes for it, byte for byte, for
        /// any values, present or not (each skipped field skipped alike), and it reads back as
        /// the same event.
        #[test]
        fn an_event_is_written_as_serde_json_writes_it(
            id in any_str(), ts in proptest::num::u64::ANY, actor in any_str(),
            action in any_str(), credential in opt_str(), record in opt_str(),
            method in opt_str(), host in opt_str(), path in opt_str(),
            status in proptest::option::of(proptest::num::u16::ANY), outcome in any_str(),
            code in opt_str(), duration_ms in proptest::num::u64::ANY,
            bytes_in in proptest::option::of(proptest::num::u64::ANY),
            bytes_out in proptest::option::of(proptest::num::u64::ANY),
            scrubbed in proptest::option::of(proptest::bool::ANY),
            count in proptest::option::of(proptest::num::u64::ANY),
            approval_id in opt_str(),
            truncated in proptest::collection::vec(any_str(), 0..3),
        ) {
            let event = AuditEvent {
                id, ts, actor, action, credential, record, method, host, path, status,
                outcome, code, duration_ms, bytes_in, bytes_out, scrubbed, count, approval_id,
                truncated,
            };
            let mut ours = Vec::new();
            event.write_json(&mut ours);
            let theirs = serde_json::to_vec(&event).unwrap_or_default();
            proptest::prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            let back: AuditEvent = serde_json::from_slice(&ours).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(e.to_string())
            })?;
            proptest::prop_assert_eq!(back, event);
        }
    }

    /// A field's text: mostly short, sometimes a few bytes either side of `cap` (in one-byte
    /// characters, or in two-byte ones so that the count is even either way).
    fn near(cap: usize) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            6 => "[a-zé]{0,12}",
            1 => (cap - 3..=cap + 3).prop_map(|n| "a".repeat(n)),
            1 => (cap / 2 - 2..=cap / 2 + 2).prop_map(|n| "é".repeat(n)),
        ]
    }

    proptest::proptest! {
        /// `within_caps` holds exactly when `capped` gives the event back unchanged — what lets
        /// the audit log store an event by reference without capping a copy — for fields on
        /// either side of every cap and `truncated` lists of field names and other text.
        #[test]
        fn within_caps_is_exactly_capped_changing_nothing(
            id in near(64), actor in near(128), action in near(64),
            credential in proptest::option::of(near(128)),
            record in proptest::option::of(near(256)),
            method in proptest::option::of(near(32)),
            host in proptest::option::of(near(256)),
            path in proptest::option::of(near(512)),
            outcome in near(32), code in proptest::option::of(near(64)),
            approval_id in proptest::option::of(near(64)),
            truncated in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(CAPS.map(|(name, _)| name.to_string()).to_vec()),
                    "[a-z_]{1,12}",
                ],
                0..6,
            ),
        ) {
            let mut event = AuditEvent::new(1, "key:1", "execute", "allowed");
            event.id = id;
            event.actor = actor;
            event.action = action;
            event.credential = credential;
            event.record = record;
            event.method = method;
            event.host = host;
            event.path = path;
            event.outcome = outcome;
            event.code = code;
            event.approval_id = approval_id;
            event.truncated = truncated;
            let unchanged = event.clone().capped() == event;
            proptest::prop_assert_eq!(event.within_caps(), unchanged);
        }
    }

    /// Each field is cut to its own cap under its own name, and only it: for every capped
    /// field in turn, an event with just that field one byte over its cap (the others short)
    /// comes back with that field at most its cap long, ending with the marker, named alone in
    /// `truncated`, and every other field as it was. Pins the pairing of names, caps and fields
    /// (a swapped row of the table would cut a field under another's name or cap).
    #[test]
    fn each_field_is_cut_to_its_own_cap_under_its_own_name() {
        // The documented caps written out again, not `CAPS` itself: an oracle apart from the
        // table it checks.
        let caps = [
            ("id", 64),
            ("actor", 128),
            ("action", 64),
            ("credential", 128),
            ("record", 256),
            ("method", 32),
            ("host", 256),
            ("path", 512),
            ("outcome", 32),
            ("code", 64),
            ("approval_id", 64),
        ];
        for (name, cap) in caps {
            let mut e = AuditEvent::new(1, "key:1", "execute", "allowed");
            e.credential = Some("c".into());
            e.record = Some("r".into());
            e.method = Some("GET".into());
            e.host = Some("h".into());
            e.path = Some("/p".into());
            e.code = Some("x".into());
            e.approval_id = Some("a".into());
            let before = e.clone();
            let long = "z".repeat(cap + 1);
            match name {
                "id" => e.id = long,
                "actor" => e.actor = long,
                "action" => e.action = long,
                "credential" => e.credential = Some(long),
                "record" => e.record = Some(long),
                "method" => e.method = Some(long),
                "host" => e.host = Some(long),
                "path" => e.path = Some(long),
                "outcome" => e.outcome = long,
                "code" => e.code = Some(long),
                _ => e.approval_id = Some(long),
            }
            assert!(!e.within_caps(), "{name}");
            let c = e.capped();
            assert_eq!(c.truncated, [name], "{name}");
            let fields = [
                ("id", Some(&c.id), Some(&before.id)),
                ("actor", Some(&c.actor), Some(&before.actor)),
                ("action", Some(&c.action), Some(&before.action)),
                (
                    "credential",
                    c.credential.as_ref(),
                    before.credential.as_ref(),
                ),
                ("record", c.record.as_ref(), before.record.as_ref()),
                ("method", c.method.as_ref(), before.method.as_ref()),
                ("host", c.host.as_ref(), before.host.as_ref()),
                ("path", c.path.as_ref(), before.path.as_ref()),
                ("outcome", Some(&c.outcome), Some(&before.outcome)),
                ("code", c.code.as_ref(), before.code.as_ref()),
                (
                    "approval_id",
                    c.approval_id.as_ref(),
                    before.approval_id.as_ref(),
                ),
            ];
            for (field, after, was) in fields {
                if field == name {
                    let v = after.map(String::as_str).unwrap_or_default();
                    assert!(v.len() <= cap && v.ends_with(CUT_MARKER), "{name}: {v}");
                } else {
                    assert_eq!(after, was, "{name} changed {field}");
                }
            }
        }
    }

    /// A `truncated` list of a million copies of one field's name (or of strangers) is cut to
    /// that name once: the event stays within its bound whatever a caller put there.
    #[test]
    fn a_truncated_list_with_duplicates_is_bounded() {
        let mut e = AuditEvent::new(1, "key:1", "execute", "allowed");
        e.truncated = vec!["path".to_string(); 1_000_000];
        e.truncated.push("stranger".into());
        assert!(!e.within_caps());
        let c = e.capped();
        assert_eq!(c.truncated, ["path"]);
        assert!(c.within_caps());
        let json = serde_json::to_vec(&c).unwrap_or_default();
        assert!(
            json.len() <= crate::audit::MAX_EVENT_JSON_BYTES,
            "{} bytes",
            json.len()
        );
    }

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
