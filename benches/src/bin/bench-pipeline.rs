//! The execute pipeline in-process, one request at a time: N executes (default 1000) through
//! [`vultrino_benches::pipeline_app`] (memory stores, stub fetcher), after one warm-up; prints
//! the mean and median time of `App::handle`.
//!
//! `bench-pipeline N IDLE_US` sleeps IDLE_US microseconds before each execute, as a server at
//! one connection idles between requests: it shows what the same work costs on a CPU that has
//! just woken up (benches/README.md).
//!
//! Under `valgrind --tool=callgrind` the instruction count per execute is exact and repeatable,
//! whatever else the machine is doing: `valgrind --tool=callgrind target/release/bench-pipeline 1000`
//! (subtract a run with N = 0 for the set-up).

use std::time::{Duration, Instant};

use vultrino_benches::{pipeline_app, request, EXECUTE_BODY};

/// The allocator of the `vultrino` binary, so that figures match what the server runs.
#[global_allocator]
static GLOBAL: vultrino_alloc::Mimalloc = vultrino_alloc::Mimalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let idle = args
        .next()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros);
    let (app, vk) = pipeline_app();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(idle) = idle {
            std::thread::sleep(idle);
        }
        let req = request("/v1/execute", &vk, EXECUTE_BODY);
        let started = Instant::now();
        let r = futures::executor::block_on(app.handle(req));
        times.push(started.elapsed());
        assert_eq!(r.status(), 200);
    }
    if n == 0 {
        return;
    }
    let mean = times.iter().sum::<Duration>() / n as u32;
    times.sort();
    let idle = idle.map_or("none".to_string(), |d| format!("{d:?}"));
    println!(
        "{n} executes, idle before each: {idle}; mean {mean:?}, median {:?}",
        times[n / 2]
    );
}
