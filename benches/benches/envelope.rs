//! Envelope cost per request: `Keys::open_envelope` of a ~200-byte credential record (what every
//! execute call pays) and `Keys::seal` of the same record (what every credential write pays).
//! Key derivation is deliberately outside the measured loop: it runs once per process / isolate.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use vultrino_core::crypto::{Keys, MasterSecret};

const KV_KEY: &str = "cred:github";

/// A credential record of realistic size (~200 bytes of JSON).
fn credential_record() -> Vec<u8> {
    let record = serde_json::json!({
        "id": "0190f3a2-7c1e-7b44-9a61-5d2e8f0c1b37",
        "type": "api_key",
        "secret": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
        "header": "Authorization",
        "prefix": "Bearer ",
        "allowed_hosts": ["api.github.com"],
        "created_at_ms": 1_720_000_000_000u64
    });
    serde_json::to_vec(&record).expect("static JSON serializes")
}

fn envelope(c: &mut Criterion) {
    let (master, _) = MasterSecret::generate_raw();
    let (keys, _) = Keys::create(&master, 0, 0).expect("raw keyring");
    let record = credential_record();
    let sealed = keys.seal(KV_KEY, &record);

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(record.len() as u64));
    group.bench_function(format!("open_{}B", record.len()), |b| {
        b.iter(|| {
            keys.open_envelope(black_box(KV_KEY), black_box(&sealed))
                .expect("opens")
        })
    });
    group.bench_function(format!("seal_{}B", record.len()), |b| {
        b.iter(|| keys.seal(black_box(KV_KEY), black_box(&record)))
    });
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
