//! Shared helpers of the benchmarks: an in-process [`App`] over the memory stores with a stub
//! fetcher, set up with one `api_key` credential and an executor key, as the criterion bench
//! `execute/pipeline_in_process` and the instruction-count driver `bench-pipeline` use it.

#![allow(clippy::unwrap_used)] // benchmark setup: a failure here is a broken benchmark

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::audit::AUDIT_PREFIX;
use vultrino_core::crypto::{self, MasterSecret};
use vultrino_core::ports::{FetchOptions, Fetcher, ManualClock};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;
use vultrino_local::setup::MEMORY_AUDIT_CAP;

/// Answers every request with [`REPLY`], as the load benchmark's upstream does.
pub struct StubFetcher;

/// The upstream reply of the benchmarks (the same as `bench-upstream`'s).
pub const REPLY: &[u8] =
    br#"{"login":"octocat","id":1,"plan":{"name":"free"},"note":"a small upstream reply"}"#;

#[async_trait]
impl Fetcher for StubFetcher {
    async fn fetch(
        &self,
        _r: http::Request<Bytes>,
        _o: FetchOptions,
    ) -> vultrino_core::Result<http::Response<Bytes>> {
        let mut resp = http::Response::new(Bytes::from_static(REPLY));
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

/// A POST with a bearer token and a JSON body.
pub fn request(path: &str, token: &str, body: &str) -> http::Request<Bytes> {
    http::Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

/// The execute body the benchmarks send (the load benchmark's shape).
pub const EXECUTE_BODY: &str = r#"{"credential":"github","action":"http.request","params":{"method":"GET","url":"https://api.github.com/user"}}"#;

/// An app with credential `github` (api_key, allowed host api.github.com) and an executor key;
/// returns the app and the key. Checks that one execute answers 200.
pub fn pipeline_app() -> (App, String) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ports = Ports {
        // Bounded audit, as `vultrino serve --store memory` runs it.
        kv: Arc::new(MemoryKv::new(clock.clone()).with_prefix_cap(AUDIT_PREFIX, MEMORY_AUDIT_CAP)),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(StubFetcher),
        clock,
        audit_sink: None,
        audit: None,
    };
    let config = Config {
        admin_password_hash: Some(crypto::hash_password("pw", 1000).unwrap()),
        allow_weak_password_hash_for_tests: true,
        ..Config::default()
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = futures::executor::block_on(App::open(config, ports, &master)).unwrap();
    let run = |r| futures::executor::block_on(app.handle(r));
    let login = run(http::Request::post("/login")
        .header("content-type", "application/json")
        .body(Bytes::from(r#"{"username":"admin","password":"pw"}"#))
        .unwrap());
    let admin = serde_json::from_slice::<serde_json::Value>(login.body()).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run(request(
        "/v1/credentials",
        &admin,
        r#"{"alias":"github","type":"api_key","data":{"key":"ghp_0123456789abcdefABCDEF"},"policy":{"allowed_hosts":["api.github.com"]}}"#,
    ));
    assert_eq!(r.status(), 201);
    let key = run(request(
        "/v1/keys",
        &admin,
        r#"{"name":"bench","role":"executor"}"#,
    ));
    let vk = serde_json::from_slice::<serde_json::Value>(key.body()).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let sanity = run(request("/v1/execute", &vk, EXECUTE_BODY));
    assert_eq!(sanity.status(), 200, "{:?}", sanity.body());
    (app, vk)
}
