//! Scrubbing a clean streamed reply (the common case: nothing to redact), as the pass-through
//! proxy does: a chunked body through `StreamScrubber` in 16 KiB chunks, and an OpenAI-style
//! `text/event-stream` through `SseScrubber`. Target (issue 13): ≥ 1 GB/s per core for the
//! clean byte stream.

#![allow(clippy::unwrap_used)]

// The allocator the server runs with (decision 0025); the SSE scrubber allocates per event.
#[global_allocator]
static GLOBAL: vultrino_alloc::Mimalloc = vultrino_alloc::Mimalloc;

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vultrino_core::scrub::{KeyGuard, Scrubber, SseScrubber, StreamScrubber};

const CHUNK: usize = 16 * 1024;
const STREAM: usize = 1 << 20;

/// The needles of a realistic credential: an API key and a Basic `user:password`.
fn scrubber() -> Arc<Scrubber> {
    Arc::new(Scrubber::new([
        b"sk-proj-Xq3vT9mB2LkW7nR4yZ8aC1dF6gH0jP5sU2eV9xQ3tY7wN4bM".as_slice(),
        b"user:pa55w0rd!".as_slice(),
    ]))
}

fn bodies() -> [(&'static str, Vec<u8>); 2] {
    let json_like: Vec<u8> = (0..STREAM as u32)
        .map(|i| b"abcdefghij klmnop{}\":,0123456789"[(i % 32) as usize])
        .collect();
    let mut x = 0x2545_f491u32;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let base64_like: Vec<u8> = (0..STREAM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            alphabet[(x % 64) as usize]
        })
        .collect();
    [("json_like", json_like), ("base64_like", base64_like)]
}

/// An OpenAI chat-completions stream of about 1 MiB: one event per token.
fn openai_stream() -> Vec<u8> {
    let words = [
        "The",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " the",
        " lazy",
        " dog",
        ".",
        " Streaming",
        " replies",
        " arrive",
        " one",
        " token",
        " at",
        " a",
        " time",
        ",",
        " each",
        " in",
        " its",
        " own",
        " event",
        "\n",
    ];
    let mut out = String::new();
    let mut i = 0;
    while out.len() < STREAM {
        let v = serde_json::json!({
            "id": "chatcmpl-AbC123xyz", "object": "chat.completion.chunk", "created": 1733390000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_7f6be3efb0",
            "choices": [{"index": 0, "delta": {"content": words[i % words.len()]},
                         "logprobs": null, "finish_reason": null}]
        });
        out.push_str(&format!("data: {v}\n\n"));
        i += 1;
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn bench_stream(c: &mut Criterion) {
    let s = scrubber();
    let mut g = c.benchmark_group("scrub_stream");
    g.throughput(Throughput::Bytes(STREAM as u64));
    for (name, body) in bodies() {
        assert!(!s.matches(&body));
        g.bench_function(format!("clean_1m_16k_chunks_{name}"), |b| {
            b.iter(|| {
                let mut st = StreamScrubber::new(s.clone());
                let mut n = 0;
                for chunk in body.chunks(CHUNK) {
                    n += st.push(std::hint::black_box(chunk)).len();
                }
                n + st.finish().len()
            })
        });
        let chunks: Vec<Bytes> = body.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
        g.bench_function(format!("clean_1m_16k_chunks_{name}_bytes"), |b| {
            b.iter(|| {
                let mut st = StreamScrubber::new(s.clone());
                let mut n = 0;
                for chunk in &chunks {
                    n += st.push_bytes(std::hint::black_box(chunk.clone())).len();
                }
                n + st.finish().len()
            })
        });
    }
    // The request-body side (decision 0064): the agent's key guard over a clean upload, and
    // building the guard (once per proxied request with a body).
    let key = b"vk_0123456789abcdef_Zm9vYmFyLWJhei1xdXV4LWtleS1zZWNyZXQtMDEyMzQ1";
    for (name, body) in bodies() {
        let chunks: Vec<Bytes> = body.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
        assert!(!KeyGuard::new(key).contains(&body));
        g.bench_function(format!("key_guard_clean_1m_16k_chunks_{name}"), |b| {
            b.iter(|| {
                let mut guard = KeyGuard::new(key);
                let mut n = 0;
                for chunk in &chunks {
                    n += guard
                        .push(std::hint::black_box(chunk.clone()))
                        .unwrap()
                        .len();
                }
                n + guard.finish().unwrap().len()
            })
        });
    }
    // Building the key's automaton (done once per key: the proxy takes it from the scrubber
    // cache), and a guard over needles already built (once per request with a body).
    g.throughput(Throughput::Elements(1));
    g.bench_function("key_guard_new", |b| {
        b.iter(|| KeyGuard::new(std::hint::black_box(key)))
    });
    let needles = Arc::new(Scrubber::new([key.as_slice()]));
    g.bench_function("key_guard_with_needles", |b| {
        b.iter(|| KeyGuard::with_needles(std::hint::black_box(needles.clone())))
    });
    let sse = openai_stream();
    g.throughput(Throughput::Bytes(sse.len() as u64));
    g.bench_function("sse_clean_openai_1m_16k_chunks", |b| {
        b.iter(|| {
            let mut st = SseScrubber::new(s.clone());
            let mut n = 0;
            for chunk in sse.chunks(CHUNK) {
                n += st.push(std::hint::black_box(chunk)).unwrap().len();
            }
            n + st.finish().unwrap().len()
        })
    });
    g.finish();
    let mut st = SseScrubber::new(s.clone());
    let mut out = Vec::new();
    for chunk in sse.chunks(CHUNK) {
        out.extend_from_slice(&st.push(chunk).unwrap());
    }
    out.extend_from_slice(&st.finish().unwrap());
    assert_eq!(out, sse, "the clean stream passes unchanged");
    println!(
        "sse_clean_openai: {} bytes, {} events",
        sse.len(),
        sse.windows(2).filter(|w| w == b"\n\n").count()
    );
}

criterion_group!(benches, bench_stream);
criterion_main!(benches);
