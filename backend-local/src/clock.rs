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

    /// The reading for a wall clock at `wall`: the largest value any reading has returned, or
    /// `wall` if it is past it.
    fn observe(&self, wall: u64) -> u64 {
        let seen = self.max_seen_ms.load(Ordering::SeqCst);
        if wall <= seen {
            return seen;
        }
        let previous = self.max_seen_ms.fetch_max(wall, Ordering::SeqCst);
        previous.max(wall)
    }
}

impl Clock for SystemClock {
    /// Read about ten times per request by every core's runtime: the shared maximum is written
    /// only when this reading is past it (once a millisecond at most, not on every call), so
    /// the cores do not pass its cache line back and forth, and the milliseconds are counted in
    /// `u64` (whole seconds times 1000 plus the fraction) rather than through `u128`.
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as 0 (and then stands still at the max seen).
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(millis)
            .unwrap_or(0);
        self.observe(wall)
    }
}

/// `d` in whole milliseconds, as [`std::time::Duration::as_millis`] counts them, saturating at
/// `u64::MAX` (half a billion years).
fn millis(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
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

    /// The milliseconds as `Duration::as_millis` counts them, for any reading (the u64 sum
    /// saturates where `as_millis` would not fit).
    #[test]
    fn milliseconds_are_counted_as_duration_counts_them() {
        use proptest::prelude::*;
        // Today's readings, the edge where seconds × 1000 stops fitting, and anything.
        let edge = u64::MAX / 1000;
        let secs = prop_oneof![0u64..10_000_000_000, (edge - 2)..=(edge + 2), any::<u64>()];
        proptest!(|(secs in secs, nanos in 0u32..1_000_000_000)| {
            let d = std::time::Duration::new(secs, nanos);
            prop_assert_eq!(millis(d), u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        });
    }

    /// Walls that rise while stepping back and forth, from four threads at once (many ties and
    /// backward steps): each thread's readings never decrease and are never below its wall, and
    /// once they are all done a reading is the largest wall any of them saw — no thread's raise
    /// of the maximum was lost to another's (a load-then-store would lose some).
    #[test]
    fn a_wall_that_steps_back_never_takes_a_reading_back_across_threads() {
        let clock = std::sync::Arc::new(SystemClock::new());
        // All four start together, so that their reads and writes of the maximum interleave.
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (clock, start) = (clock.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // A wall that rises one step a turn, give or take up to 99 (a small xorshift
                    // per thread): it steps back often, and the maximum keeps being raised by
                    // all four threads at once.
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                    let (mut last, mut largest_wall) = (0, 0);
                    for i in 0..200_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let wall = i + x % 100;
                        let reading = clock.observe(wall);
                        assert!(
                            reading >= last && reading >= wall,
                            "{reading} < {last} or {wall}"
                        );
                        last = reading;
                        largest_wall = largest_wall.max(wall);
                    }
                    (last, largest_wall)
                })
            })
            .collect();
        let done: Vec<(u64, u64)> = threads
            .into_iter()
            .map(|t| t.join().expect("a reading thread"))
            .collect();
        let largest_wall = done.iter().map(|d| d.1).max().expect("four threads");
        let final_reading = clock.observe(0);
        assert_eq!(final_reading, largest_wall);
        assert!(done.iter().all(|d| d.0 <= final_reading));
    }

    #[test]
    fn system_clock_holds_its_maximum_after_a_backward_step() {
        let clock = SystemClock::new();
        let future = clock.now_ms() + 3_600_000;
        clock.max_seen_ms.store(future, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), future);
    }
}
