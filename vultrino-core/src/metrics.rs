//! Operational counters in the Prometheus text format (`GET /metrics` on the local server's
//! metrics listener; docs/decisions/0105-audit-view-and-metrics.md).
//!
//! One [`Metrics`] per process, given to the App with [`App::with_metrics`](crate::app::App):
//! it then counts
//! - every reply of [`App::serve`](crate::app::App) and [`App::handle`](crate::app::App), by
//!   route class ([`route_class`]) and status class;
//! - every upstream exchange's latency to its response head, through [`MeteredFetcher`], a
//!   wrapper over the deployment's fetcher;
//! - executes and proxied calls by outcome, and the replies a secret was scrubbed from, from
//!   the audit events themselves ([`Metrics`] is an [`AuditSink`] that only counts), so the
//!   figures agree with the audit log by construction.
//!
//! An App without one counts nothing (the worker: a Workers isolate is short-lived and
//! per-location, so its counters would mean nothing to a scraper). Labels are fixed words —
//! never an alias, an actor, a host or a path — so the series are few whatever agents send,
//! and no label can carry a secret.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::audit::event::AuditEvent;
use crate::body::Body;
use crate::error::Result;
use crate::ports::{AuditSink, Clock, FetchOptions, Fetcher, SinkStatus, StreamOptions};

/// The route classes of `vultrino_http_requests_total`, in exposition order.
pub const ROUTE_CLASSES: [&str; 9] = [
    "ui", "health", "session", "mcp", "proxy", "execute", "audit", "api", "other",
];

/// The class of a request path: a fixed word, whatever the path holds.
pub fn route_class(path: &str) -> &'static str {
    let mut segs = path.trim_start_matches('/').split('/');
    match (segs.next().unwrap_or(""), segs.next()) {
        ("" | "ui", _) => "ui",
        ("healthz", None) => "health",
        ("login" | "logout", None) => "session",
        ("mcp", None) => "mcp",
        ("proxy", Some(_)) => "proxy",
        ("v1", Some("execute")) => "execute",
        ("v1", Some("audit")) => "audit",
        ("v1", Some(_)) => "api",
        _ => "other",
    }
}

/// Upper bounds of the upstream latency buckets, in milliseconds (`+Inf` follows).
const LATENCY_BUCKETS_MS: [u64; 13] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// The actions and outcomes of `vultrino_credential_requests_total`.
const ACTIONS: [&str; 2] = ["execute", "proxy"];
const OUTCOMES: [&str; 4] = ["allowed", "denied", "error", "cancelled"];

/// Refusal series remembered at once (see [`Metrics::emit`]); past it the memory starts again.
const MAX_SERIES: usize = 4096;

/// The counters of one process. See the module documentation.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[route class][status class 1xx..5xx]`.
    requests: [[AtomicU64; 5]; ROUTE_CLASSES.len()],
    /// `[action][outcome]`.
    calls: [[AtomicU64; OUTCOMES.len()]; ACTIONS.len()],
    /// `[action]`: replies a secret was scrubbed from.
    scrubbed: [AtomicU64; ACTIONS.len()],
    /// Cumulative only at render; here one count per bucket, the last one `+Inf`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
    upstream_errors: AtomicU64,
    /// The last `count` seen of each refusal series (events rewritten under one id).
    series: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Refusal series remembered.
    pub fn series_len(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Count one reply to a request for `path`.
    pub fn observe_request(&self, path: &str, status: u16) {
        self.observe_class(route_class(path), status);
    }

    /// Count one reply to a request of route class `class` ([`route_class`]).
    pub fn observe_class(&self, class: &str, status: u16) {
        let route = ROUTE_CLASSES
            .iter()
            .position(|c| *c == class)
            .unwrap_or(ROUTE_CLASSES.len() - 1);
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[route][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one upstream exchange that took `ms` to its response head (or its error).
    pub fn observe_upstream(&self, ms: u64, failed: bool) {
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        if failed {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition: every series, `HELP` and `TYPE` first, then the audit sinks' counts
    /// (`sinks`, from [`AuditSink::status`]) and, when this instance runs a live sync from an
    /// edge, its state (`sync`, from [`crate::sync::live::LiveSync::status`]).
    pub fn render(
        &self,
        sinks: &[SinkStatus],
        sync: Option<&crate::sync::live::SyncStatus>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            &mut out,
            "vultrino_build_info",
            "gauge",
            "The running version (always 1).",
        );
        series(
            &mut out,
            "vultrino_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        header(
            &mut out,
            "vultrino_http_requests_total",
            "counter",
            "Replies to HTTP requests, by route class and status class.",
        );
        for (route, counts) in ROUTE_CLASSES.iter().zip(&self.requests) {
            for (i, count) in counts.iter().enumerate() {
                let class = format!("{}xx", i + 1);
                series(
                    &mut out,
                    "vultrino_http_requests_total",
                    &[("route", route), ("status", &class)],
                    load(count),
                );
            }
        }
        header(
            &mut out,
            "vultrino_credential_requests_total",
            "counter",
            "Executes and proxied calls, by outcome, as the audit log records them.",
        );
        for (action, counts) in ACTIONS.iter().zip(&self.calls) {
            for (outcome, count) in OUTCOMES.iter().zip(counts) {
                series(
                    &mut out,
                    "vultrino_credential_requests_total",
                    &[("action", action), ("outcome", outcome)],
                    load(count),
                );
            }
        }
        header(
            &mut out,
            "vultrino_scrubbed_replies_total",
            "counter",
            "Upstream replies a credential's secret was scrubbed from before an agent saw them.",
        );
        for (action, count) in ACTIONS.iter().zip(&self.scrubbed) {
            series(
                &mut out,
                "vultrino_scrubbed_replies_total",
                &[("action", action)],
                load(count),
            );
        }
        header(
            &mut out,
            "vultrino_upstream_latency_seconds",
            "histogram",
            "Time from sending a request upstream to its response head (or its failure).",
        );
        let mut cumulative = 0;
        for (i, count) in self.latency_buckets.iter().enumerate() {
            cumulative += load(count);
            let le = LATENCY_BUCKETS_MS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |ms| seconds(*ms));
            series(
                &mut out,
                "vultrino_upstream_latency_seconds_bucket",
                &[("le", &le)],
                cumulative,
            );
        }
        let _ = writeln!(
            out,
            "vultrino_upstream_latency_seconds_sum {}",
            seconds(load(&self.latency_sum_ms))
        );
        let _ = writeln!(out, "vultrino_upstream_latency_seconds_count {cumulative}");
        header(
            &mut out,
            "vultrino_upstream_errors_total",
            "counter",
            "Upstream exchanges that failed before a response head (refused, timed out, unreachable).",
        );
        series(
            &mut out,
            "vultrino_upstream_errors_total",
            &[],
            load(&self.upstream_errors),
        );
        for (name, kind, help, value) in [
            (
                "vultrino_audit_sink_sent_total",
                "counter",
                "Audit events an audit sink handed over.",
                (|s: &SinkStatus| s.sent) as fn(&SinkStatus) -> u64,
            ),
            (
                "vultrino_audit_sink_dropped_total",
                "counter",
                "Audit events an audit sink gave up on (queue full, refused for good).",
                |s| s.dropped,
            ),
            (
                "vultrino_audit_sink_failed_total",
                "counter",
                "Failed attempts of an audit sink (a write, a POST).",
                |s| s.failed,
            ),
            (
                "vultrino_audit_sink_queued",
                "gauge",
                "Audit events waiting in an audit sink's queue.",
                |s| s.queued,
            ),
        ] {
            header(&mut out, name, kind, help);
            for s in sinks {
                series(&mut out, name, &[("sink", &s.name)], value(s));
            }
        }
        if let Some(sync) = sync {
            render_sync(&mut out, sync);
        }
        out
    }
}

/// `ms` as seconds, exactly (`1500` → `1.5`).
fn seconds(ms: u64) -> String {
    match ms % 1000 {
        0 => format!("{}", ms / 1000),
        frac => format!(
            "{}.{}",
            ms / 1000,
            format!("{frac:03}").trim_end_matches('0')
        ),
    }
}

/// The live sync's series: only on an instance that runs one (`serve --sync-from`).
fn render_sync(out: &mut String, sync: &crate::sync::live::SyncStatus) {
    header(
        out,
        "vultrino_sync_up",
        "gauge",
        "1 when the last pull from the edge succeeded, 0 while failing or before the first pull.",
    );
    series(out, "vultrino_sync_up", &[], u64::from(sync.state == "ok"));
    header(
        out,
        "vultrino_sync_pulls_total",
        "counter",
        "Finished pulls from the edge, by result (changed: applied a change or the first copy; unchanged: 304; failed).",
    );
    let changed = sync
        .pulls
        .saturating_sub(sync.unchanged_pulls)
        .saturating_sub(sync.failed_pulls);
    for (result, n) in [
        ("changed", changed),
        ("unchanged", sync.unchanged_pulls),
        ("failed", sync.failed_pulls),
    ] {
        series(out, "vultrino_sync_pulls_total", &[("result", result)], n);
    }
    header(
        out,
        "vultrino_sync_consecutive_failures",
        "gauge",
        "Failed pulls in a row (0 after a success).",
    );
    series(
        out,
        "vultrino_sync_consecutive_failures",
        &[],
        u64::from(sync.consecutive_failures),
    );
    header(
        out,
        "vultrino_sync_records",
        "gauge",
        "Records here that came from the edge (read-only here).",
    );
    series(out, "vultrino_sync_records", &[], sync.records as u64);
    if let Some(ms) = sync.last_success_ms {
        header(
            out,
            "vultrino_sync_last_success_timestamp_seconds",
            "gauge",
            "When the last pull from the edge succeeded (Unix time).",
        );
        let _ = writeln!(
            out,
            "vultrino_sync_last_success_timestamp_seconds {}",
            seconds(ms)
        );
    }
    if let Some(ms) = sync.lag_ms {
        header(
            out,
            "vultrino_sync_lag_seconds",
            "gauge",
            "Time since the last successful pull: how old the local copy of the edge's records may be.",
        );
        let _ = writeln!(out, "vultrino_sync_lag_seconds {}", seconds(ms));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A `HELP` text: `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

impl AuditSink for Metrics {
    /// Counts executes and proxied calls by outcome, and scrubbed replies. A refusal series
    /// (refused `/proxy/` requests of one caller and window, rewritten under one id as its
    /// `count` grows, docs/decisions/0068) adds only what its count grew by.
    fn emit(&self, event: &AuditEvent) {
        let Some(action) = ACTIONS.iter().position(|a| *a == event.action) else {
            return;
        };
        let Some(outcome) = OUTCOMES.iter().position(|o| *o == event.outcome) else {
            return;
        };
        let added = match event.count {
            None => 1,
            Some(count) => {
                let mut seen = self
                    .series
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if seen.len() >= MAX_SERIES && !seen.contains_key(&event.id) {
                    seen.clear();
                }
                let before = seen.insert(event.id.clone(), count).unwrap_or(0);
                count.saturating_sub(before)
            }
        };
        self.calls[action][outcome].fetch_add(added, Ordering::Relaxed);
        if event.scrubbed == Some(true) {
            self.scrubbed[action].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Not a sink that sends anything: nothing to report in `GET /v1/audit/sinks`.
    fn status(&self) -> Vec<SinkStatus> {
        Vec::new()
    }
}

/// A fetcher that times every exchange of the one it wraps into [`Metrics`] (to the response
/// head: a streamed body's length is the upstream's and the client's business).
pub struct MeteredFetcher {
    pub inner: Arc<dyn Fetcher>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeteredFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredFetcher").finish_non_exhaustive()
    }
}

impl MeteredFetcher {
    fn observe<T>(&self, started: u64, result: &Result<T>) {
        let ms = self.clock.now_ms().saturating_sub(started);
        self.metrics.observe_upstream(ms, result.is_err());
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Fetcher for MeteredFetcher {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let started = self.clock.now_ms();
        let result = self.inner.fetch(request, options).await;
        self.observe(started, &result);
        result
    }

    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        let started = self.clock.now_ms();
        let result = self.inner.fetch_stream(request, options).await;
        self.observe(started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_a_few_fixed_classes_whatever_the_path() {
        for (path, class) in [
            ("/", "ui"),
            ("/ui/app.js", "ui"),
            ("/healthz", "health"),
            ("/login", "session"),
            ("/logout", "session"),
            ("/mcp", "mcp"),
            ("/proxy/github/repos/x", "proxy"),
            ("/v1/execute", "execute"),
            ("/v1/audit", "audit"),
            ("/v1/audit/sinks", "audit"),
            ("/v1/credentials/sk-live-secret", "api"),
            ("/metrics", "other"),
            ("/healthz/x", "other"),
            ("/sk-live-secret\"}\n", "other"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(5), "0.005");
        assert_eq!(seconds(1500), "1.5");
        assert_eq!(seconds(60_000), "60");
    }

    /// Every line is a comment of the two kinds or `name{labels} value`; each family is
    /// announced once, before its samples; histogram buckets are cumulative and end with
    /// `+Inf` = `_count`.
    #[test]
    fn the_exposition_is_well_formed() {
        let m = Metrics::default();
        m.observe_request("/v1/execute", 200);
        m.observe_request("/proxy/a/b", 403);
        m.observe_upstream(3, false);
        m.observe_upstream(700, false);
        m.observe_upstream(90_000, true);
        let text = m.render(
            &[SinkStatus {
                name: "fi\"le".into(),
                sent: 4,
                dropped: 1,
                failed: 0,
                queued: 2,
            }],
            Some(&sync_status()),
        );
        let mut announced: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(!announced.contains(&name), "{name} announced twice");
                announced.push(name);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                assert_eq!(parts.next(), announced.last().map(String::as_str), "{line}");
                assert!(matches!(
                    parts.next(),
                    Some("counter" | "gauge" | "histogram")
                ));
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{line}"
            );
            let family = announced.last().cloned().unwrap_or_default();
            assert!(name.starts_with(&family), "{name} outside {family}");
        }
        assert!(text.contains("vultrino_http_requests_total{route=\"execute\",status=\"2xx\"} 1\n"));
        assert!(text.contains("vultrino_http_requests_total{route=\"proxy\",status=\"4xx\"} 1\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_bucket{le=\"60\"} 2\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_count 3\n"));
        assert!(text.contains("vultrino_upstream_latency_seconds_sum 90.703\n"));
        assert!(text.contains("vultrino_upstream_errors_total 1\n"));
        assert!(text.contains("vultrino_audit_sink_dropped_total{sink=\"fi\\\"le\"} 1\n"));
        assert!(text.contains("vultrino_audit_sink_queued{sink=\"fi\\\"le\"} 2\n"));
    }

    #[test]
    fn audit_events_count_by_outcome_and_a_refusal_series_by_its_growth() {
        let m = Metrics::default();
        let mut ok = AuditEvent::new(1, "key:k1", "proxy", "allowed");
        ok.scrubbed = Some(true);
        m.emit(&ok);
        m.emit(&AuditEvent::new(1, "key:k1", "execute", "denied"));
        m.emit(&AuditEvent::new(1, "admin:root", "login", "success"));
        let mut refused = AuditEvent::new(1, "key:k1", "proxy", "denied");
        for count in [1, 2, 4, 8] {
            refused.count = Some(count);
            m.emit(&refused);
        }
        let text = m.render(&[], None);
        for line in [
            "vultrino_credential_requests_total{action=\"proxy\",outcome=\"allowed\"} 1\n",
            "vultrino_credential_requests_total{action=\"proxy\",outcome=\"denied\"} 8\n",
            "vultrino_credential_requests_total{action=\"execute\",outcome=\"denied\"} 1\n",
            "vultrino_credential_requests_total{action=\"execute\",outcome=\"allowed\"} 0\n",
            "vultrino_scrubbed_replies_total{action=\"proxy\"} 1\n",
            "vultrino_scrubbed_replies_total{action=\"execute\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(!text.contains("login"));
    }

    fn sync_status() -> crate::sync::live::SyncStatus {
        crate::sync::live::SyncStatus {
            edge: "https://edge.example".into(),
            state: "ok",
            interval_ms: 60_000,
            last_attempt_ms: Some(1_700_000_061_000),
            last_success_ms: Some(1_700_000_061_000),
            lag_ms: Some(1_500),
            last_change_ms: Some(1_700_000_001_000),
            next_attempt_ms: Some(1_700_000_121_000),
            consecutive_failures: 0,
            last_error: None,
            pulls: 7,
            unchanged_pulls: 5,
            failed_pulls: 1,
            last_reply_bytes: 0,
            records: 3,
        }
    }

    /// An instance that syncs from an edge shows the sync's health to a scraper: up, pulls by
    /// result, how stale the local copy may be; one that does not sync shows no sync series.
    #[test]
    fn the_live_sync_state_is_exposed_only_when_syncing() {
        let m = Metrics::default();
        let text = m.render(&[], Some(&sync_status()));
        for line in [
            "vultrino_sync_up 1\n",
            "vultrino_sync_pulls_total{result=\"changed\"} 1\n",
            "vultrino_sync_pulls_total{result=\"unchanged\"} 5\n",
            "vultrino_sync_pulls_total{result=\"failed\"} 1\n",
            "vultrino_sync_consecutive_failures 0\n",
            "vultrino_sync_records 3\n",
            "vultrino_sync_last_success_timestamp_seconds 1700000061\n",
            "vultrino_sync_lag_seconds 1.5\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(
            !text.contains("edge.example"),
            "no label carries the edge's address"
        );
        let mut failing = sync_status();
        failing.state = "failing";
        failing.consecutive_failures = 2;
        let text = m.render(&[], Some(&failing));
        assert!(text.contains("vultrino_sync_up 0\n"));
        assert!(text.contains("vultrino_sync_consecutive_failures 2\n"));
        assert!(!m.render(&[], None).contains("vultrino_sync"));
    }
}
