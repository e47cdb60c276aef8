//! [`WorkersClock`]: the core's [`Clock`] over the JS clock (`Date.now()`); `std::time` panics on
//! wasm32-unknown-unknown.

use std::sync::atomic::{AtomicU64, Ordering};

use vultrino_core::ports::Clock;

/// Milliseconds from `Date.now()`, never decreasing (Workers may freeze or step time).
#[derive(Default)]
pub struct WorkersClock {
    last: AtomicU64,
}

impl Clock for WorkersClock {
    fn now_ms(&self) -> u64 {
        // `Date.now()` in one crossing (workers-rs's `Date::now` makes a `Date` object and reads
        // it: two). A clock before 1970 or past 2^53 ms reads as 0 or saturates: never expected.
        let now = worker::js_sys::Date::now() as u64;
        self.last.fetch_max(now, Ordering::SeqCst).max(now)
    }
}

/// The JS timer (`setTimeout`), for requests held while their approval is pending
/// (`Prefer: wait=N`).
#[derive(Default)]
pub struct DelaySleeper;

impl vultrino_core::ports::Sleeper for DelaySleeper {
    fn sleep(&self, ms: u64) -> vultrino_core::ports::SleepFuture {
        Box::pin(worker::Delay::from(std::time::Duration::from_millis(ms)))
    }
}
