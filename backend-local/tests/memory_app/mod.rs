//! The [`App`] over ports a test chooses, driven directly (no server): what the tests that
//! call `App::handle`/`App::serve` or the services share — an admin principal, a fetcher that
//! counts what it is asked to send and answers 200 `ok`, and `open` with a fresh master key.
//! A test file uses it with `mod memory_app;`.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::Principal;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::ports::{Clock, FetchOptions, Fetcher, KvStore, SessionStore};
use vultrino_core::Result;

/// The operator of the tests: an admin, as a signed-in person would be.
pub fn operator() -> Principal {
    Principal::Admin {
        subject: "test".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

/// Answers 200 `ok` to everything, counting the requests it was asked to send.
#[derive(Default)]
pub struct CountingFetch(AtomicUsize);

impl CountingFetch {
    /// How many requests reached this fetcher.
    pub fn sent(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Fetcher for CountingFetch {
    async fn fetch(
        &self,
        _request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(http::Response::new(Bytes::from_static(b"ok")))
    }
}

/// The ports a test assembles: no audit sink, audit events in `kv` (as the local backend).
pub fn ports(
    kv: Arc<dyn KvStore>,
    sessions: Arc<dyn SessionStore>,
    fetcher: Arc<dyn Fetcher>,
    clock: Arc<dyn Clock>,
) -> Ports {
    Ports {
        kv,
        sessions,
        fetcher,
        clock,
        audit_sink: None,
        audit: None,
    }
}

/// `App::open` with a freshly generated master key.
pub async fn open(config: Config, ports: Ports) -> App {
    let (_, master) = MasterSecret::generate_raw();
    let master = MasterSecret::parse(&master).expect("a generated master key parses");
    App::open(config, ports, &master)
        .await
        .expect("the app opens over fresh stores")
}

/// One request through `App::handle` with a bearer token and an optional JSON body: the status
/// and the JSON reply (`null` when the reply is not JSON).
pub async fn call(
    app: &App,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {bearer}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    let r = app.handle(b.body(body).expect("a request")).await;
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(r.body()).unwrap_or(Value::Null),
    )
}
