//! The local server's audit sinks (`vultrino serve --audit-log`, `--audit-webhook`): every audit
//! event, as it is stored, also goes to a JSON-lines file (or stdout) and/or is posted to an
//! HTTP collector. The store stays the source of `GET /v1/audit`; the sinks are copies for
//! whoever collects logs (docs/decisions/0085-audit-sinks.md).
//!
//! Neither sink ever makes a request wait or fail: [`AuditSink::emit`] serializes the event and
//! `try_send`s it into a bounded queue; a full queue drops the event, counts it, and says so in
//! the log at most once per [`LOG_EVERY`]. A thread (file) or a task (webhook) drains the queue.
//! `GET /v1/audit/sinks` shows each sink's counts ([`SinkStatus`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vultrino_core::audit::AuditEvent;
use vultrino_core::ports::{AuditSink, SinkStatus};

/// Default bound of each sink's queue, in events.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Events per POST to the collector, at most.
pub const WEBHOOK_BATCH: usize = 100;
/// First pause after a failed POST; it doubles after each failure, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A POST that takes longer than this has failed.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Drops and failures are logged at most once per this interval (with the running totals).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The counts of one sink.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
}

impl Counters {
    fn status(&self, name: &str) -> SinkStatus {
        SinkStatus {
            name: name.into(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

/// Lets a message through at most once per [`LOG_EVERY`].
#[derive(Default)]
struct LogGate(Mutex<Option<Instant>>);

impl LogGate {
    fn open(&self) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// File (`--audit-log PATH|-`)
// ---------------------------------------------------------------------------------------------

/// Where the file sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output (`--audit-log -`).
    Stdout,
    /// A file, appended to, created 0600; reopened by [`FileSink::reopen`] (SIGHUP).
    Path(PathBuf),
}

impl LogTarget {
    pub fn parse(s: &str) -> LogTarget {
        if s == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::Path(PathBuf::from(s))
        }
    }
}

/// The log file, opened for appending (created 0600). A symbolic link at `path` is not
/// followed (`O_NOFOLLOW`), a FIFO does not block the writer (`O_NONBLOCK`) and anything but a
/// regular file is refused: whoever can write in the log's directory cannot redirect the
/// events into another file by putting something where the log was before a reopen.
fn open_log(path: &PathBuf) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(
                    "it is a symbolic link, which is not followed: give the log file's own path",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    check_log_owner_and_mode(&meta)?;
    Ok(file)
}

/// An existing log file is kept with the mode it has (e.g. logrotate's `create 0640`), but one
/// that others may write to, or that belongs to another user, is refused: whoever can write it
/// can forge or erase audit lines (review 2026-12-06, finding 4). The owner is compared with
/// the owner of `/proc/self` (this process's user) where that exists (Linux).
fn check_log_owner_and_mode(meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "it is writable by its group or by others (mode {:o}): `chmod go-w` it",
            meta.mode() & 0o777
        )));
    }
    if let Ok(me) = std::fs::metadata("/proc/self") {
        if me.uid() != meta.uid() {
            return Err(std::io::Error::other(format!(
                "it belongs to another user (uid {}, this process runs as uid {})",
                meta.uid(),
                me.uid()
            )));
        }
    }
    Ok(())
}

/// `--audit-log`: one JSON line per event, appended by a thread of its own.
pub struct FileSink {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    counters: Arc<Counters>,
    reopen: Arc<AtomicBool>,
    gate: LogGate,
}

impl FileSink {
    /// Open (create) the file now, so that a path that cannot be written fails `serve` at
    /// start, and start the writer thread.
    pub fn start(target: LogTarget, queue: usize) -> anyhow::Result<Arc<FileSink>> {
        let mut out: Box<dyn Write + Send> = match &target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Path(p) => Box::new(open_log(p).map_err(|e| {
                anyhow::anyhow!(
                    "--audit-log: cannot open {} for appending: {e}",
                    p.display()
                )
            })?),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(queue.max(1));
        let counters = Arc::new(Counters::default());
        let reopen = Arc::new(AtomicBool::new(false));
        let (c, r) = (counters.clone(), reopen.clone());
        std::thread::Builder::new()
            .name("vultrino-audit-log".into())
            .spawn(move || {
                let gate = LogGate::default();
                loop {
                    let line = match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(line) => Some(line),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if r.swap(false, Ordering::SeqCst) {
                        if let LogTarget::Path(p) = &target {
                            match open_log(p) {
                                Ok(f) => {
                                    out = Box::new(f);
                                    tracing::info!(path = %p.display(), "audit log reopened");
                                }
                                Err(e) => tracing::error!(
                                    path = %p.display(), error = %e,
                                    "cannot reopen the audit log; still writing to the old file"
                                ),
                            }
                        }
                    }
                    let Some(mut line) = line else { continue };
                    line.push(b'\n');
                    let written = out.write_all(&line).and_then(|()| out.flush());
                    c.queued.fetch_sub(1, Ordering::Relaxed);
                    match written {
                        Ok(()) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let failed = c.failed.fetch_add(1, Ordering::Relaxed) + 1;
                            if gate.open() {
                                tracing::error!(error = %e, failed, "cannot write to the audit log");
                            }
                        }
                    }
                }
            })?;
        Ok(Arc::new(FileSink {
            tx,
            counters,
            reopen,
            gate: LogGate::default(),
        }))
    }

    /// Reopen the file before the next write (after `logrotate` renamed it): SIGHUP.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
    }

    /// Wait until the queue is empty, at most `bound`.
    pub async fn flush(&self, bound: Duration) {
        wait_empty(&self.counters, bound).await;
    }
}

impl AuditSink for FileSink {
    fn emit(&self, event: &AuditEvent) {
        let line = event.to_json();
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(line).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.gate.open() {
                tracing::warn!(
                    dropped,
                    "audit log queue full: events dropped (the store still holds them)"
                );
            }
        }
    }

    fn status(&self) -> Vec<SinkStatus> {
        vec![self.counters.status("file")]
    }
}

async fn wait_empty(counters: &Counters, bound: Duration) {
    let deadline = Instant::now() + bound;
    while counters.queued.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook (`--audit-webhook URL`)
// ---------------------------------------------------------------------------------------------

/// Check a collector URL: https, or http to a loopback address (the rule of every URL this
/// server sends something to, decision 0062); no user name or password in it.
pub fn webhook_url(s: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(s.trim())
        .map_err(|e| anyhow::anyhow!("--audit-webhook must be a URL ({e})"))?;
    if !crate::edge_sync::token_may_travel_to(&url) {
        anyhow::bail!(
            "--audit-webhook must be an https:// URL (http:// only for 127.0.0.1/localhost): \
             audit events travel with the request"
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        anyhow::bail!(
            "--audit-webhook must not hold a user name or password: give the collector's \
             Authorization header in VULTRINO_AUDIT_WEBHOOK_AUTHORIZATION"
        );
    }
    Ok(url)
}

/// `--audit-webhook`: events posted in batches (a JSON array of at most [`WEBHOOK_BATCH`]
/// events) by a task of its own; a failed POST is retried, the same batch, after a pause that
/// doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]. A 4xx reply other than 408 and 429 is a
/// refusal for good: that batch is dropped (and counted).
pub struct WebhookSink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    counters: Arc<Counters>,
    gate: LogGate,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSink")
    }
}

impl WebhookSink {
    /// Start the delivery task on the current runtime. `authorization` is the value of the
    /// `Authorization` header sent to the collector (never logged).
    pub fn start(
        url: url::Url,
        authorization: Option<zeroize::Zeroizing<String>>,
        queue: usize,
    ) -> anyhow::Result<Arc<WebhookSink>> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WEBHOOK_TIMEOUT)
            .build()?;
        let auth = match authorization {
            Some(a) => {
                let mut v = reqwest::header::HeaderValue::from_str(a.trim()).map_err(|_| {
                    anyhow::anyhow!(
                        "VULTRINO_AUDIT_WEBHOOK_AUTHORIZATION is not a valid header value"
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(queue.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(deliver(client, url, auth, rx, counters.clone()));
        Ok(Arc::new(WebhookSink {
            tx,
            counters,
            gate: LogGate::default(),
        }))
    }

    /// Wait until every queued event is delivered (or dropped), at most `bound`.
    pub async fn flush(&self, bound: Duration) {
        wait_empty(&self.counters, bound).await;
    }
}

async fn deliver(
    client: reqwest::Client,
    url: url::Url,
    auth: Option<reqwest::header::HeaderValue>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    counters: Arc<Counters>,
) {
    let gate = LogGate::default();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(WEBHOOK_BATCH);
    let mut backoff = BACKOFF_MIN;
    loop {
        if batch.is_empty() && rx.recv_many(&mut batch, WEBHOOK_BATCH).await == 0 {
            return;
        }
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.push(b']');
        let mut req = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = &auth {
            req = req.header("authorization", a.clone());
        }
        let n = batch.len() as u64;
        // The URL is never logged (it may hold a token in its path).
        let problem = match req.send().await {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => {
                let s = resp.status().as_u16();
                if (400..500).contains(&s) && s != 408 && s != 429 {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    counters.dropped.fetch_add(n, Ordering::Relaxed);
                    counters.queued.fetch_sub(n, Ordering::Relaxed);
                    batch.clear();
                    tracing::error!(
                        status = s,
                        events = n,
                        "the audit collector refused a batch; it is dropped"
                    );
                    continue;
                }
                Some(format!("HTTP {s}"))
            }
            Err(e) => Some(if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            }),
        };
        match problem {
            None => {
                counters.sent.fetch_add(n, Ordering::Relaxed);
                counters.queued.fetch_sub(n, Ordering::Relaxed);
                batch.clear();
                backoff = BACKOFF_MIN;
            }
            Some(why) => {
                let failed = counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if gate.open() {
                    tracing::warn!(
                        problem = %why,
                        failed,
                        queued = counters.queued.load(Ordering::Relaxed),
                        retry_in_ms = backoff.as_millis() as u64,
                        "the audit collector did not take a batch; retrying"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

impl AuditSink for WebhookSink {
    fn emit(&self, event: &AuditEvent) {
        let json = event.to_json();
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(json).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.gate.open() {
                tracing::warn!(
                    dropped,
                    "audit webhook queue full: events dropped (the store still holds them)"
                );
            }
        }
    }

    fn status(&self) -> Vec<SinkStatus> {
        vec![self.counters.status("webhook")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls_are_https_or_loopback_http_without_credentials() {
        assert!(webhook_url("https://logs.example.com/ingest").is_ok());
        assert!(webhook_url("http://127.0.0.1:9000/x").is_ok());
        assert!(webhook_url("http://localhost:9000/x").is_ok());
        assert!(webhook_url("http://logs.example.com/ingest").is_err());
        assert!(webhook_url("ftp://127.0.0.1/x").is_err());
        assert!(webhook_url("https://user:pw@logs.example.com/").is_err());
        assert!(webhook_url("not a url").is_err());
    }

    #[test]
    fn the_log_gate_opens_once_per_interval() {
        let g = LogGate::default();
        assert!(g.open());
        assert!(!g.open());
    }
}
