//! How an audit event becomes a Workers Analytics Engine data point (binding `AUDIT_ANALYTICS`,
//! docs/deploy-cloudflare.md "Audit to Workers Logs and Analytics Engine"). Plain Rust, so the
//! mapping is tested natively; the worker writes it with `writeDataPoint`.
//!
//! | field     | from the event                                                              |
//! |-----------|-----------------------------------------------------------------------------|
//! | `index1`  | `credential` ("" when none), cut to 96 bytes (Analytics Engine's limit)      |
//! | `blob1`…`blob10` | `action`, `outcome`, `actor`, `credential`, `method`, `host`, `path`, `code`, `id`, `record` ("" when none) |
//! | `double1`…`double7` | `status`, `duration_ms`, `count` (1 when the event has none), `bytes_in`, `bytes_out`, `scrubbed` (1/0), `ts` (ms) |
//!
//! Absent numbers are 0. Every string is the event's own, already capped
//! ([`AuditEvent::capped`](vultrino_core::audit::AuditEvent::capped)): the blobs together stay
//! far below the 16 KiB a data point may carry, and hold no secret, body or query value.

use vultrino_core::audit::AuditEvent;

/// Analytics Engine's limit on an index, in bytes.
pub const MAX_INDEX_BYTES: usize = 96;

/// One data point: its index, blobs and doubles, in the order of the table above.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    pub index: String,
    pub blobs: [String; 10],
    pub doubles: [f64; 7],
}

/// The names of the blobs, in order (for docs and tests).
pub const BLOBS: [&str; 10] = [
    "action",
    "outcome",
    "actor",
    "credential",
    "method",
    "host",
    "path",
    "code",
    "id",
    "record",
];
/// The names of the doubles, in order.
pub const DOUBLES: [&str; 7] = [
    "status",
    "duration_ms",
    "count",
    "bytes_in",
    "bytes_out",
    "scrubbed",
    "ts",
];

/// The data point of `e`.
pub fn data_point(e: &AuditEvent) -> DataPoint {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut index = s(&e.credential);
    if index.len() > MAX_INDEX_BYTES {
        let mut end = MAX_INDEX_BYTES;
        while !index.is_char_boundary(end) {
            end -= 1;
        }
        index.truncate(end);
    }
    #[allow(clippy::cast_precision_loss)]
    let n = |v: u64| v as f64;
    DataPoint {
        index,
        blobs: [
            e.action.clone(),
            e.outcome.clone(),
            e.actor.clone(),
            s(&e.credential),
            s(&e.method),
            s(&e.host),
            s(&e.path),
            s(&e.code),
            e.id.clone(),
            s(&e.record),
        ],
        doubles: [
            f64::from(e.status.unwrap_or(0)),
            n(e.duration_ms),
            n(e.count.unwrap_or(1)),
            n(e.bytes_in.unwrap_or(0)),
            n(e.bytes_out.unwrap_or(0)),
            if e.scrubbed == Some(true) { 1.0 } else { 0.0 },
            n(e.ts),
        ],
    }
}

/// The one line the worker logs for `e`: `{"vultrino_audit": <event>}`.
pub fn log_line(e: &AuditEvent) -> String {
    // The event's stored JSON inside the wrapper, written once (no `serde_json::Value` tree of
    // the event built and walked per request: decision 0130). Valid JSON, hence valid UTF-8.
    const PREFIX: &[u8] = b"{\"vultrino_audit\":";
    let mut out = Vec::with_capacity(PREFIX.len() + vultrino_core::audit::EVENT_JSON_CAPACITY + 1);
    out.extend_from_slice(PREFIX);
    e.write_json(&mut out);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_its_place() {
        let mut e = AuditEvent::new(1_700_000_000_000, "key:k1", "proxy", "allowed");
        e.credential = Some("github".into());
        e.method = Some("GET".into());
        e.host = Some("api.github.com".into());
        e.path = Some("/user".into());
        e.status = Some(200);
        e.duration_ms = 12;
        e.bytes_in = Some(3);
        e.bytes_out = Some(40);
        e.scrubbed = Some(true);
        let p = data_point(&e);
        assert_eq!(p.index, "github");
        assert_eq!(
            p.blobs,
            [
                "proxy",
                "allowed",
                "key:k1",
                "github",
                "GET",
                "api.github.com",
                "/user",
                "",
                e.id.as_str(),
                ""
            ]
            .map(String::from)
        );
        assert_eq!(p.doubles, [200.0, 12.0, 1.0, 3.0, 40.0, 1.0, 1.7e12]);
        let line: serde_json::Value = serde_json::from_str(&log_line(&e)).unwrap_or_default();
        assert_eq!(line["vultrino_audit"]["id"], e.id.as_str());
        // The line holds the event as stored, every field.
        let logged = serde_json::from_value::<AuditEvent>(line["vultrino_audit"].clone());
        assert_eq!(logged.ok(), Some(e.clone()));
        assert_eq!(
            line,
            serde_json::json!({ "vultrino_audit": e }),
            "the same JSON as before"
        );
    }

    #[test]
    fn the_index_fits_analytics_engine() {
        let mut e = AuditEvent::new(1, "admin:root", "credential.create", "success");
        e.credential = Some("é".repeat(100));
        let p = data_point(&e);
        assert!(p.index.len() <= MAX_INDEX_BYTES && p.index.starts_with('é'));
        assert_eq!(p.doubles[2], 1.0, "an event without a count stands for one");
        assert_eq!(p.doubles[0], 0.0);
    }
}
