//! The whole execute pipeline in-process (auth → policy → decrypt → inject → stub fetch → scrub
//! → audit → JSON reply) over the memory stores, and decrypt + inject alone.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::credential::{CredentialData, CredentialRecord};
use vultrino_core::crypto::{self, Keys, MasterSecret};
use vultrino_core::ports::{FetchOptions, Fetcher, ManualClock};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

struct StubFetcher;

const REPLY: &[u8] =
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

fn request(path: &str, token: &str, body: &str) -> http::Request<Bytes> {
    http::Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

fn bench_execute(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(StubFetcher),
        clock,
    };
    let config = Config {
        admin_password_hash: Some(crypto::hash_password("pw", 1000).unwrap()),
        ..Config::default()
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = futures::executor::block_on(App::open(config, ports, &master)).unwrap();
    let run = |r| futures::executor::block_on(app.handle(r));
    let login = run(http::Request::post("/login")
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
    let body = r#"{"credential":"github","action":"http.request","params":{"method":"GET","url":"https://api.github.com/user"}}"#;
    let sanity = run(request("/v1/execute", &vk, body));
    assert_eq!(sanity.status(), 200, "{:?}", sanity.body());

    c.bench_function("execute/pipeline_in_process", |b| {
        b.iter(|| run(request("/v1/execute", &vk, body)))
    });
}

fn bench_decrypt_inject(c: &mut Criterion) {
    let (master, _) = MasterSecret::generate_raw();
    let (keys, _) = Keys::create(&master, 1, 0).unwrap();
    let record: CredentialRecord = serde_json::from_value(serde_json::json!({
        "id": "0123456789abcdef", "alias": "github", "description": "GitHub token",
        "type": "api_key", "data": {"key": "ghp_0123456789abcdefABCDEF"},
        "policy": {"allowed_hosts": ["api.github.com"]}, "created_at": 1, "updated_at": 1
    }))
    .unwrap();
    let sealed = keys.seal("cred:github", &serde_json::to_vec(&record).unwrap());
    c.bench_function("execute/decrypt_and_inject", |b| {
        b.iter(|| {
            let plain = keys.open_envelope("cred:github", &sealed).unwrap();
            let rec: CredentialRecord = serde_json::from_slice(&plain).unwrap();
            let CredentialData::ApiKey(d) = &rec.data else {
                unreachable!()
            };
            let mut headers = http::HeaderMap::new();
            let name =
                http::HeaderName::from_bytes(d.header_name().to_ascii_lowercase().as_bytes())
                    .unwrap();
            let value =
                http::HeaderValue::from_str(&format!("{}{}", d.prefix(), d.key.expose())).unwrap();
            headers.insert(name, value);
            headers
        })
    });
}

criterion_group!(benches, bench_execute, bench_decrypt_inject);
criterion_main!(benches);
