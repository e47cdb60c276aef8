//! The local server's audit sinks (issue 14 part 2, decision 0085): `--audit-log` appends every
//! event as stored, one JSON line each, to a 0600 file reopened on SIGHUP; `--audit-webhook`
//! posts them in batches to a collector that may be down, slow or back, without ever making a
//! request wait; drops past the bounded queue are counted in `GET /v1/audit/sinks`. No sink
//! carries a secret, body or query value. Talks only to 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect, expect_for, Client, Server, ServerOptions, ADMIN_PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "sk-sink-secret-Hd82kq";
const QUERY_SECRET: &str = "querysecret-Zp31";
const COLLECTOR_TOKEN: &str = "Bearer collector-token-Lm55";

struct Env {
    server: Server,
    up: Upstream,
    c: Client,
    admin: String,
    agent: String,
}

/// A local server with `env` added, a credential `github` holding [`SECRET`], an executor key.
async fn start(env: Vec<(String, String)>) -> Env {
    let up = Upstream::start().await;
    let server = Server::start_local(ServerOptions {
        extra_env: env,
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(
                &json!({"alias": "github", "type": "api_key", "data": {"key": SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"]}}),
            ),
        )
        .await;
    expect(&r, 201, None);
    let r = c
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "agent", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    let agent = r.body["key"].as_str().unwrap().to_string();
    Env {
        server,
        up,
        c,
        admin,
        agent,
    }
}

impl Env {
    /// An allowed execute (with a secret in its query) and a denied one; each must answer
    /// within `bound`, whatever the sinks are doing.
    async fn executes(&self, bound: Duration) {
        let started = Instant::now();
        let r = self
            .c
            .send(
                "POST",
                "/v1/execute",
                Some(&self.agent),
                Some(&json!({"credential": "github", "action": "http.request", "params":
                    {"method": "GET", "url": format!("{}?token={QUERY_SECRET}", self.up.url("/echo"))}})),
            )
            .await;
        expect_for("an allowed execute", &r, 200, None);
        let r = self
            .c
            .send(
                "POST",
                "/v1/execute",
                Some(&self.agent),
                Some(
                    &json!({"credential": "github", "action": "http.request", "params":
                    {"method": "GET", "url": "https://not-allowed.example/x"}}),
                ),
            )
            .await;
        expect_for("a denied execute", &r, 403, None);
        assert!(
            started.elapsed() < bound,
            "two executes took {:?} (bound {bound:?})",
            started.elapsed()
        );
    }

    /// Every stored event, newest first.
    async fn stored(&self) -> Vec<Value> {
        let r = self
            .c
            .send("GET", "/v1/audit?limit=1000", Some(&self.admin), None)
            .await;
        expect(&r, 200, None);
        r.body["events"].as_array().unwrap().clone()
    }

    /// The counts of the sink `name`.
    async fn sink(&self, name: &str) -> Value {
        let r = self
            .c
            .send("GET", "/v1/audit/sinks", Some(&self.admin), None)
            .await;
        expect(&r, 200, None);
        r.body["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} sink: {}", r.text))
    }
}

/// No secret of the test in `text`: the credential's, the query's, the admin password, the
/// agent's key, the collector's token.
#[track_caller]
fn no_secrets(text: &str, agent: &str) {
    for s in [
        SECRET,
        QUERY_SECRET,
        ADMIN_PASSWORD,
        agent,
        "collector-token-Lm55",
    ] {
        assert!(!text.contains(s), "{s:?} in a sink's output: {text}");
    }
}

/// Wait (up to `secs`) until `cond` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

fn lines_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn the_audit_log_file_holds_every_event_as_stored_and_is_reopened_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("audit.log");
    let e = start(vec![(
        "VULTRINO_AUDIT_LOG".into(),
        log.display().to_string(),
    )])
    .await;
    e.executes(Duration::from_secs(30)).await;
    let stored = e.stored().await;
    assert!(stored.len() >= 5, "{stored:?}");
    eventually("every stored event is in the file", 10, || {
        let lines = lines_of(&log);
        let done = stored.iter().all(|s| lines.contains(s));
        async move { done }
    })
    .await;
    // Field by field: the line IS the stored event (same JSON value).
    let lines = lines_of(&log);
    let allowed = stored
        .iter()
        .find(|s| s["action"] == "execute" && s["outcome"] == "allowed")
        .unwrap();
    let line = lines.iter().find(|l| l["id"] == allowed["id"]).unwrap();
    assert_eq!(line, allowed);
    assert_eq!(line["credential"], "github");
    assert_eq!(line["path"], "/echo", "no query in the path");
    assert_eq!(line["status"], 200);
    assert!(line["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(
        lines.len(),
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        "each event once"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    no_secrets(&std::fs::read_to_string(&log).unwrap(), &e.agent);
    let file = e.sink("file").await;
    assert!(
        file["sent"].as_u64().unwrap() >= stored.len() as u64,
        "{file}"
    );
    assert_eq!(
        (file["dropped"].as_u64(), file["failed"].as_u64()),
        (Some(0), Some(0))
    );

    // Rotation: rename, SIGHUP, and the next events go to a new file at the old path.
    let rotated = tmp.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = e.server.child.id().unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The writer reopens (creating the file at the old path) within 200 ms of the signal's
    // handling, a write or not: wait for that, not for a fixed time.
    eventually("the log is reopened at its path", 10, || {
        let reopened = log.exists();
        async move { reopened }
    })
    .await;
    e.executes(Duration::from_secs(30)).await;
    let newest = e.stored().await[0].clone();
    eventually("the new file holds the newest event", 10, || {
        let found = lines_of(&log).contains(&newest);
        async move { found }
    })
    .await;
    assert!(
        !lines_of(&rotated).contains(&newest),
        "the rotated file is left alone"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        e.server.child.id().is_some(),
        "SIGHUP does not stop the server"
    );
}

/// An existing log file that others may write to is refused at start: whoever can write it can
/// forge or erase audit lines (review 2026-12-06, finding 4). Its mode is otherwise kept.
#[tokio::test]
async fn an_audit_log_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("audit.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        support::vultrino_cmd(None)
            .args(["serve", "--listen", "127.0.0.1:0", "--audit-log"])
            .arg(&log)
            .env("VULTRINO_ADMIN_PASSWORD_HASH", support::admin_hash())
            .env("VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("serve refuses a world-writable --audit-log at start instead of serving")
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--audit-log") && err.contains("go-w"), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");

    // A mode the operator chose that others cannot write (logrotate's 0640) is kept and used.
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = start(vec![(
        "VULTRINO_AUDIT_LOG".into(),
        log.display().to_string(),
    )])
    .await;
    e.executes(Duration::from_secs(30)).await;
    let newest = e.stored().await[0].clone();
    eventually("the event is written to the 0640 file", 10, || {
        let found = lines_of(&log).contains(&newest);
        async move { found }
    })
    .await;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

/// The audit log is never written through a symbolic link, at start or on a SIGHUP reopen:
/// whoever can write in the log's directory cannot make the server append to another file
/// (its store, a shell profile) by putting a link where the log was (review of issue 14).
#[tokio::test]
async fn the_audit_log_never_follows_a_symbolic_link() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let log = tmp.path().join("audit.log");
    std::os::unix::fs::symlink(&victim, &log).unwrap();

    // At start: refused, with the setting named (a server that starts is killed after 10 s).
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        support::vultrino_cmd(None)
            .args(["serve", "--listen", "127.0.0.1:0", "--audit-log"])
            .arg(&log)
            .env("VULTRINO_ADMIN_PASSWORD_HASH", support::admin_hash())
            .env("VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("serve refuses a linked --audit-log at start instead of serving")
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--audit-log"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");

    // On reopen: a link put where the rotated log was is not followed; the writer keeps the
    // file it has.
    std::fs::remove_file(&log).unwrap();
    let e = start(vec![(
        "VULTRINO_AUDIT_LOG".into(),
        log.display().to_string(),
    )])
    .await;
    e.executes(Duration::from_secs(30)).await;
    let rotated = tmp.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let pid = e.server.child.id().unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.executes(Duration::from_secs(30)).await;
    let newest = e.stored().await[0].clone();
    eventually(
        "the newest event is written (to the file the writer has)",
        10,
        || {
            let found = lines_of(&rotated).contains(&newest);
            async move { found }
        },
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "untouched\n",
        "nothing written through the link"
    );
}

/// How the loopback collector answers.
const HANG: u8 = 1;
const UP: u8 = 2;

/// A loopback HTTP collector: hangs each request (reading it, answering nothing) while in
/// [`HANG`], then records it and answers 204; records and answers at once in [`UP`].
struct Collector {
    mode: Arc<AtomicU8>,
    hung: Arc<AtomicUsize>,
    /// (Authorization header, body) of each request answered.
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collector {
    async fn start(port: u16, mode: u8) -> Collector {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let c = Collector {
            mode: Arc::new(AtomicU8::new(mode)),
            hung: Arc::default(),
            got: Arc::default(),
        };
        let (mode, hung, got) = (c.mode.clone(), c.hung.clone(), c.got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (mode, hung, got) = (mode.clone(), hung.clone(), got.clone());
                tokio::spawn(async move {
                    let (head, body) = read_request(&mut s).await;
                    if mode.load(Ordering::SeqCst) == HANG {
                        hung.fetch_add(1, Ordering::SeqCst);
                        while mode.load(Ordering::SeqCst) == HANG {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    got.lock().unwrap().push((auth, body));
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        c
    }

    fn events(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| {
                let batch: Value = serde_json::from_str(b).unwrap();
                batch.as_array().unwrap().clone()
            })
            .collect()
    }
}

/// One HTTP/1.1 request: its head and its body (by Content-Length).
async fn read_request(s: &mut tokio::net::TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return (String::new(), String::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    (head, body)
}

/// A loopback port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_collector_down_then_slow_then_up_never_delays_requests_and_gets_every_event() {
    let port = free_port();
    let e = start(vec![
        (
            "VULTRINO_AUDIT_WEBHOOK".into(),
            format!("http://127.0.0.1:{port}/ingest"),
        ),
        (
            "VULTRINO_AUDIT_WEBHOOK_AUTHORIZATION".into(),
            COLLECTOR_TOKEN.into(),
        ),
    ])
    .await;

    // Down: requests answer as usual; the sink counts its failed attempts and keeps the events.
    e.executes(Duration::from_secs(10)).await;
    eventually("failed attempts are counted", 20, || async {
        e.sink("webhook").await["failed"].as_u64().unwrap() >= 2
    })
    .await;
    let w = e.sink("webhook").await;
    assert!(w["queued"].as_u64().unwrap() >= 1, "{w}");
    assert_eq!(
        (w["sent"].as_u64(), w["dropped"].as_u64()),
        (Some(0), Some(0)),
        "{w}"
    );

    // Slow: the collector takes the next POST and answers nothing; requests still answer at
    // once (the bound is generous: what matters is that it is not the collector's time).
    let collector = Collector::start(port, HANG).await;
    eventually("the sink retries into the slow collector", 60, || {
        let hung = collector.hung.load(Ordering::SeqCst);
        async move { hung >= 1 }
    })
    .await;
    e.executes(Duration::from_secs(5)).await;
    assert!(collector.got.lock().unwrap().is_empty());

    // Up: every stored event arrives, as stored, with the collector's Authorization.
    collector.mode.store(UP, Ordering::SeqCst);
    let stored = e.stored().await;
    eventually("every stored event reaches the collector", 60, || {
        let got = collector.events();
        let done = stored.iter().all(|s| got.contains(s));
        async move { done }
    })
    .await;
    let requests = collector.got.lock().unwrap().clone();
    for (auth, body) in &requests {
        assert_eq!(auth, COLLECTOR_TOKEN);
        let batch: Value = serde_json::from_str(body).unwrap();
        let n = batch.as_array().unwrap().len();
        assert!((1..=100).contains(&n), "a batch of {n}");
        no_secrets(body, &e.agent);
    }
    eventually("the sink's queue empties", 20, || async {
        let w = e.sink("webhook").await;
        w["queued"] == 0 && w["sent"].as_u64().unwrap() >= stored.len() as u64
    })
    .await;
    assert_eq!(e.sink("webhook").await["dropped"], 0);
}

#[tokio::test]
async fn past_its_queue_the_webhook_drops_and_counts_while_requests_go_on() {
    let e = start(vec![
        (
            "VULTRINO_AUDIT_WEBHOOK".into(),
            format!("http://127.0.0.1:{}/ingest", free_port()),
        ),
        ("VULTRINO_AUDIT_WEBHOOK_QUEUE".into(), "2".into()),
    ])
    .await;
    for _ in 0..5 {
        e.executes(Duration::from_secs(10)).await;
    }
    let stored = e.stored().await.len() as u64;
    let w = e.sink("webhook").await;
    let (dropped, queued) = (
        w["dropped"].as_u64().unwrap(),
        w["queued"].as_u64().unwrap(),
    );
    // At most the queue (2) and the batch being retried (1 to 100) are held; the rest dropped.
    assert!(queued <= 2 + 100 && dropped >= 1, "{w}");
    assert_eq!(
        dropped + queued,
        stored,
        "every event is queued or dropped: {w}"
    );
    assert_eq!(w["sent"], 0);
    // The store keeps them all: the sinks are copies.
    assert!(stored >= 13, "{stored}");
}

#[tokio::test]
async fn serve_refuses_a_collector_url_that_would_send_events_in_clear() {
    for url in [
        "http://logs.example.com/ingest",
        "ftp://127.0.0.1/x",
        "https://u:p@logs.example.com/",
    ] {
        let out = support::vultrino_cmd(None)
            .args(["serve", "--listen", "127.0.0.1:0", "--audit-webhook", url])
            .env("VULTRINO_ADMIN_PASSWORD_HASH", support::admin_hash())
            .env("VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(err.contains("--audit-webhook"), "{url}: {err}");
        assert!(!err.contains("u:p"), "{url}: {err}");
    }
}

/// A sink that records each event with whether the store already held it, as stored, when the
/// sink got it.
struct Recording {
    kv: Arc<vultrino_local::memory_kv::MemoryKv>,
    got: Mutex<Vec<(vultrino_core::audit::AuditEvent, bool)>>,
}

impl vultrino_core::ports::AuditSink for Recording {
    fn emit(&self, event: &vultrino_core::audit::AuditEvent) {
        use futures_util::FutureExt as _;
        use vultrino_core::ports::KvStore as _;
        // The memory store answers at once: no await needed to look.
        let stored = self
            .kv
            .get(&event.kv_key())
            .now_or_never()
            .and_then(Result::ok)
            .flatten()
            .and_then(|b| serde_json::from_slice::<vultrino_core::audit::AuditEvent>(&b).ok());
        self.got
            .lock()
            .unwrap()
            .push((event.clone(), stored.as_ref() == Some(event)));
    }

    fn status(&self) -> Vec<vultrino_core::ports::SinkStatus> {
        vec![]
    }
}

/// The hook sits in the one place events are written, after the put: every writer's event
/// reaches the sink once, capped, exactly as the store holds it.
#[tokio::test]
async fn the_sink_gets_each_event_once_after_it_is_stored_and_as_stored() {
    use vultrino_core::audit::{AuditEvent, AuditLog};
    use vultrino_core::ports::{Clock, ManualClock, Ports};
    let clock = Arc::new(ManualClock::new(1_800_000_300_000));
    let kv = Arc::new(vultrino_local::memory_kv::MemoryKv::new(clock.clone()));
    let sink = Arc::new(Recording {
        kv: kv.clone(),
        got: Mutex::default(),
    });
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(vultrino_local::memory_sessions::MemorySessions::new()),
        fetcher: Arc::new(vultrino_local::fetcher::HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: Some(sink.clone()),
        audit: None,
    };
    let log = AuditLog::new(&ports, 3600);
    let mut plain = AuditEvent::new(clock.now_ms(), "key:k1", "execute", "allowed");
    plain.path = Some(format!("/{}", "a".repeat(5000)));
    log.record(plain.clone()).await;
    log.record_unauthenticated(AuditEvent::new(
        clock.now_ms(),
        "client:1.2.3.4",
        "login",
        "failure",
    ))
    .await;
    for _ in 0..3 {
        log.record_refusal(
            "key:k1",
            "github:not_found",
            AuditEvent::new(clock.now_ms(), "key:k1", "proxy", "denied"),
        )
        .await;
    }
    let got = sink.got.lock().unwrap().clone();
    // One each for the plain and the unauthenticated event; the refusal series at counts 1 and 2.
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.iter().all(|(_, stored)| *stored),
        "each emitted after its put, as stored: {got:?}"
    );
    assert_eq!(got[0].0.id, plain.id);
    assert!(
        got[0].0.path.as_ref().unwrap().len() <= 512,
        "capped like the stored event"
    );
    assert!(got[1].0.id.ends_with("-u"));
    assert_eq!((got[2].0.count, got[3].0.count), (Some(1), Some(2)));
    assert_eq!(got[2].0.id, got[3].0.id, "a rewrite keeps its id");
}

/// On SIGTERM, `serve` gives what its sinks still hold a short while (2 s) to go out: a batch
/// the collector is still taking is delivered, and the server then stops.
#[tokio::test]
async fn a_graceful_stop_waits_briefly_for_the_collector() {
    let port = free_port();
    let collector = Collector::start(port, HANG).await;
    let mut e = start(vec![(
        "VULTRINO_AUDIT_WEBHOOK".into(),
        format!("http://127.0.0.1:{port}/ingest"),
    )])
    .await;
    eventually("the first batch reaches the collector", 20, || {
        let hung = collector.hung.load(Ordering::SeqCst);
        async move { hung >= 1 }
    })
    .await;
    let stored = e.stored().await;
    let pid = e.server.child.id().unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let termed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = e.server.child.try_wait().unwrap().is_none();
    collector.mode.store(UP, Ordering::SeqCst);
    if termed.elapsed() > Duration::from_millis(1500) {
        // This test was held up long enough for the server's 2 s to run out: a correct server
        // may have stopped, its batch undelivered. Nothing to check.
        eprintln!("the test stalled past the server's flush bound: not checked");
        return;
    }
    assert!(running, "the server waits for its sinks before it exits");
    let status = tokio::time::timeout(Duration::from_secs(10), e.server.child.wait())
        .await
        .expect("the server stops once its sinks are empty (or after 2 s)")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let got = collector.events();
    assert!(
        stored.iter().all(|s| got.contains(s)),
        "every event went out before the stop: {got:?}"
    );
}
