//! An action's final audit event survives the request future being dropped while the event is
//! being written (a Workers request cancelled during its KV put: security review of 2026-12-05,
//! M1; docs/decisions/0065). Everything runs in-process on the memory stores with a fetcher that
//! answers without any network; the store's first `audit:` put never completes, as a put cut by
//! the cancellation, and the future is dropped there.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::{NewKey, Principal};
use vultrino_core::body::Body;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Result;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{
    Background, BackgroundTask, FetchOptions, Fetcher, KvEntry, KvStore, ListOptions, ListPage,
    ManualClock, PutOptions,
};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// The memory store, except that the first put of an audit event hangs for good (and counts).
struct HangingFirstAuditPut {
    inner: MemoryKv,
    hung: AtomicBool,
}

#[async_trait::async_trait]
impl KvStore for HangingFirstAuditPut {
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        if key.starts_with("audit:") && !self.hung.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.list(options).await
    }
}

/// Answers every request 200, without a network.
struct Ok200;

#[async_trait::async_trait]
impl Fetcher for Ok200 {
    async fn fetch(
        &self,
        _request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        Ok(http::Response::new(Bytes::from_static(b"{\"ok\":true}")))
    }
}

/// Keeps the tasks it is given, to run them when the test says.
#[derive(Default)]
struct Deferred(Mutex<Vec<BackgroundTask>>);

impl Background for Deferred {
    fn spawn(&self, task: BackgroundTask) {
        self.0.lock().unwrap().push(task);
    }
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "admin".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

#[tokio::test]
async fn an_execute_dropped_while_its_event_is_written_still_leaves_exactly_that_event() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(HangingFirstAuditPut {
        inner: MemoryKv::new(clock.clone()),
        // Disarmed while the credential and the key are created.
        hung: AtomicBool::new(true),
    });
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(Ok200),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports, &master).await.unwrap();
    app.credentials()
        .create(
            &admin(),
            NewCredential {
                base_url: None,
                alias: "github".into(),
                kind: "api_key".into(),
                description: None,
                data: serde_json::json!({"key": "real-secret-0123456789"}),
                policy: Policy {
                    allowed_hosts: vec!["api.example.com".into()],
                    methods: None,
                    path_prefixes: None,
                    rate_limit: None,
                    pass_cookies: false,
                    require_approval: None,
                },
            },
        )
        .await
        .unwrap();
    let key = app
        .api_keys()
        .create(
            &admin(),
            NewKey {
                name: "agent".into(),
                role: "executor".into(),
                expires_in_days: None,
            },
        )
        .await
        .unwrap()
        .key;
    // Armed for the next audit put only: the execute's.
    kv.hung.store(false, Ordering::SeqCst);

    let background = Arc::new(Deferred::default());
    let body = serde_json::json!({"credential": "github", "method": "GET",
        "url": "https://api.example.com/user"});
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/execute")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::full(Bytes::from(body.to_string())))
        .unwrap();
    let served = app.serve(request, Some(background.clone() as Arc<dyn Background>));
    // The execute runs up to its event's put, which hangs: the future is then dropped there, as
    // a cancelled request's would be.
    let outcome = tokio::time::timeout(std::time::Duration::from_millis(300), served).await;
    assert!(
        outcome.is_err(),
        "the execute finished although its audit put hangs"
    );
    assert!(
        kv.hung.load(Ordering::SeqCst),
        "the audit put was never reached"
    );

    let tasks: Vec<BackgroundTask> = std::mem::take(&mut *background.0.lock().unwrap());
    assert_eq!(tasks.len(), 1, "one write is left to the background");
    for task in tasks {
        task.await;
    }
    let events: Vec<serde_json::Value> = {
        let page = kv
            .list(ListOptions {
                prefix: Some("audit:".into()),
                ..ListOptions::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        for k in page.keys {
            let bytes = kv.get(&k.name).await.unwrap().unwrap();
            out.push(serde_json::from_slice(&bytes).unwrap());
        }
        out
    };
    let executes: Vec<_> = events.iter().filter(|e| e["action"] == "execute").collect();
    assert_eq!(executes.len(), 1, "{events:?}");
    assert_eq!(executes[0]["outcome"], "allowed", "{executes:?}");
    assert_eq!(executes[0]["status"], 200, "{executes:?}");
}
