//! Scrubbing a clean 64 KiB body (the common case: nothing to redact) with the needles of two
//! secrets. Target: well under 100 µs.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vultrino_core::scrub::Scrubber;

fn bench_scrub(c: &mut Criterion) {
    let json_like: Vec<u8> = (0..65536u32)
        .map(|i| b"abcdefghij klmnop{}\":,0123456789"[(i % 32) as usize])
        .collect();
    // Pseudo-random base64 text: the worst realistic case for the literal prefilter.
    let mut x = 0x2545_f491u32;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let base64_like: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            alphabet[(x % 64) as usize]
        })
        .collect();
    let s = Scrubber::new([
        b"ghp_16C7e42F292c6912E7710c838347Ae178B4a".as_slice(),
        b"user:pa55w0rd!".as_slice(),
    ]);
    let mut g = c.benchmark_group("scrub");
    g.throughput(Throughput::Bytes(65536));
    for (name, body) in [
        ("clean_64k_json_like", &json_like),
        ("clean_64k_base64_like", &base64_like),
    ] {
        assert!(matches!(s.scrub(body), std::borrow::Cow::Borrowed(_)));
        g.bench_function(name, |b| {
            b.iter(|| s.scrub(std::hint::black_box(body)).len())
        });
    }
    g.finish();
    c.bench_function("scrub/build_scrubber_two_secrets", |b| {
        b.iter(|| {
            Scrubber::new([
                b"ghp_16C7e42F292c6912E7710c838347Ae178B4a".as_slice(),
                b"user:pa55w0rd!".as_slice(),
            ])
        })
    });
}

criterion_group!(benches, bench_scrub);
criterion_main!(benches);
