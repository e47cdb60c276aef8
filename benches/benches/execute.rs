//! The whole execute pipeline in-process (auth → policy → decrypt → inject → stub fetch → scrub
//! → audit → JSON reply) over the memory stores, and decrypt + inject alone.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use vultrino_benches::{pipeline_app, request, EXECUTE_BODY};
use vultrino_core::credential::{CredentialData, CredentialRecord};
use vultrino_core::crypto::{Keys, MasterSecret};

fn bench_execute(c: &mut Criterion) {
    let (app, vk) = pipeline_app();
    let run = |r| futures::executor::block_on(app.handle(r));
    c.bench_function("execute/pipeline_in_process", |b| {
        b.iter(|| run(request("/v1/execute", &vk, EXECUTE_BODY)))
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
