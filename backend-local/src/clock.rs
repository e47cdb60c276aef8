//! The system clock for the local backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use vultrino_core::ports::{Clock, SleepFuture, Sleeper};

/// Wall-clock milliseconds since the Unix epoch that never go backwards.
///
/// The wall clock can jump back (NTP step, manual change). Expiry logic (sessions, TTLs, rate
/// windows) would then briefly revive dead state, so the clock remembers the largest value it has
/// returned and never returns less: after a backward step, time stands still until the wall clock
/// catches up.
#[derive(Debug, Default)]
pub struct SystemClock {
    max_seen_ms: AtomicU64,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock::default()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as 0 (and then stands still at the max seen).
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let previous = self.max_seen_ms.fetch_max(wall, Ordering::SeqCst);
        previous.max(wall)
    }
}

/// The tokio timer, for requests held while their approval is pending (`Prefer: wait=N`).
#[derive(Debug, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, ms: u64) -> SleepFuture {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// How often a held request re-reads its approval locally (a memory lookup).
pub const APPROVAL_POLL_MS: u64 = 250;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_never_decreases_and_is_near_wall_time() {
        let clock = SystemClock::new();
        let mut last = clock.now_ms();
        // 2020-01-01 in ms: catches seconds-vs-milliseconds mistakes.
        assert!(last > 1_577_836_800_000);
        for _ in 0..10_000 {
            let now = clock.now_ms();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn system_clock_holds_its_maximum_after_a_backward_step() {
        let clock = SystemClock::new();
        let future = clock.now_ms() + 3_600_000;
        clock.max_seen_ms.store(future, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), future);
    }
}
