//! [`MemorySessions`]: the in-memory [`SessionStore`] of the local backend.
//!
//! # Decisions
//! - Three `std::sync::Mutex<HashMap>`s (sessions, counters, markers). Every operation is one
//!   read-modify-write done entirely under one lock and never across an `.await`, which is what
//!   makes `hit` and `mark` exact under any concurrency (the conformance suite checks it; the
//!   local tests also hammer it from many threads).
//! - Dead entries (expired sessions, ended windows, expired markers) are invisible at once and
//!   swept when a map has doubled since the last sweep, so memory stays proportional to live
//!   state (an attacker rotating client addresses cannot grow the counter map without bound)
//!   at amortized O(1) cost.
//! - `touch_session` sets `last_seen_ms` to `max(last_seen_ms, now_ms)`: equal to `now_ms` with a
//!   monotonic clock, and a late caller with an older `now_ms` can never shorten a session.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vultrino_core::ports::{Hit, SessionRecord, SessionStore};
use vultrino_core::Result;

/// Sweep a map once it holds this many entries (and then at twice the live size).
const FIRST_SWEEP_AT: usize = 1024;

/// A map whose dead entries are swept when it grows.
struct Swept<V> {
    map: HashMap<String, V>,
    sweep_at: usize,
}

impl<V> Swept<V> {
    fn new() -> Self {
        Swept {
            map: HashMap::new(),
            sweep_at: FIRST_SWEEP_AT,
        }
    }

    /// Call before inserting a new key: drops dead entries when the map has grown enough.
    fn maybe_sweep(&mut self, is_alive: impl Fn(&V) -> bool) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, v| is_alive(v));
            self.sweep_at = (self.map.len() * 2).max(FIRST_SWEEP_AT);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    count: u32,
    reset_at_ms: u64,
}

/// An in-memory, strongly consistent [`SessionStore`].
pub struct MemorySessions {
    sessions: Mutex<Swept<SessionRecord>>,
    counters: Mutex<Swept<Counter>>,
    /// Marker key → expiry (ms since the epoch).
    markers: Mutex<Swept<u64>>,
}

impl Default for MemorySessions {
    fn default() -> Self {
        Self::new()
    }
}

// Session ids are token hashes and records name users: print sizes only.
impl fmt::Debug for MemorySessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySessions")
            .field("sessions", &lock(&self.sessions).map.len())
            .field("counters", &lock(&self.counters).map.len())
            .field("markers", &lock(&self.markers).map.len())
            .finish()
    }
}

// Every critical section leaves its map consistent before anything that could panic, so a
// poisoned lock is safe to keep using.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemorySessions {
    pub fn new() -> Self {
        MemorySessions {
            sessions: Mutex::new(Swept::new()),
            counters: Mutex::new(Swept::new()),
            markers: Mutex::new(Swept::new()),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        let mut s = lock(&self.sessions);
        let now = record.last_seen_ms;
        s.maybe_sweep(|r| r.is_alive(now));
        s.map.insert(id.to_string(), record);
        Ok(())
    }

    async fn get_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        let s = lock(&self.sessions);
        Ok(s.map.get(id).filter(|r| r.is_alive(now_ms)).cloned())
    }

    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        let mut s = lock(&self.sessions);
        match s.map.get_mut(id) {
            Some(r) if r.is_alive(now_ms) => {
                r.last_seen_ms = r.last_seen_ms.max(now_ms);
                Ok(Some(r.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn revoke_session(&self, id: &str) -> Result<()> {
        lock(&self.sessions).map.remove(id);
        Ok(())
    }

    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        let mut c = lock(&self.counters);
        if !c.map.contains_key(key) {
            c.maybe_sweep(|ctr| now_ms < ctr.reset_at_ms);
        }
        let fresh = Counter {
            count: 0,
            reset_at_ms: now_ms.saturating_add(window_ms),
        };
        let ctr = c.map.entry(key.to_string()).or_insert(fresh);
        if now_ms >= ctr.reset_at_ms {
            *ctr = fresh;
        }
        let allowed = ctr.count < limit;
        if allowed {
            ctr.count += 1;
        }
        Ok(Hit {
            allowed,
            count: ctr.count,
            reset_at_ms: ctr.reset_at_ms,
        })
    }

    async fn reset_counter(&self, key: &str) -> Result<()> {
        lock(&self.counters).map.remove(key);
        Ok(())
    }

    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        let mut m = lock(&self.markers);
        if m.map.get(key).is_some_and(|&until| now_ms < until) {
            return Ok(false);
        }
        m.maybe_sweep(|&until| now_ms < until);
        m.map.insert(key.to_string(), now_ms.saturating_add(ttl_ms));
        Ok(true)
    }

    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        Ok(lock(&self.markers)
            .map
            .get(key)
            .is_some_and(|&until| now_ms < until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dead_counters_are_swept_when_the_map_grows() {
        let s = MemorySessions::new();
        for i in 0..FIRST_SWEEP_AT {
            s.hit(&format!("ip{i}"), 1_000, 5, 0).await.ok();
        }
        // All windows above ended at 1_000; the next new key triggers a sweep.
        s.hit("late", 1_000, 5, 5_000).await.ok();
        assert_eq!(lock(&s.counters).map.len(), 1);
    }

    #[tokio::test]
    async fn live_markers_survive_a_sweep() {
        let s = MemorySessions::new();
        for i in 0..FIRST_SWEEP_AT {
            s.mark(&format!("m{i}"), 1_000_000, 0).await.ok();
        }
        assert_eq!(s.mark("new", 1_000, 10).await.ok(), Some(true));
        assert_eq!(lock(&s.markers).map.len(), FIRST_SWEEP_AT + 1);
        assert_eq!(s.is_marked("m0", 10).await.ok(), Some(true));
    }
}
