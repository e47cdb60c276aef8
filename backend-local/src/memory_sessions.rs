//! [`MemorySessions`]: the in-memory [`SessionStore`] of the local backend.
//!
//! The rules (windows, markers, touch and expiry) are not here: every method runs the function
//! of the same name in [`session_rules`], shared with the Durable Object. This file is storage.
//!
//! # Decisions
//! - Three `std::sync::Mutex<HashMap>`s (sessions, counters, markers), so a burst of hits never
//!   waits for a session lookup. Every operation is one rule applied entirely under one lock and
//!   never across an `.await`, which is what makes `hit` and `mark` exact under any concurrency
//!   (the conformance suite checks it; the local tests also hammer it from many threads).
//! - An existing key is changed in place: a `hit` on a known counter allocates nothing; only a
//!   new key allocates (its `String`).
//! - Dead entries (expired sessions, ended windows, expired markers) are invisible at once,
//!   removed when a touch finds them dead, and swept when a map has doubled since the last
//!   sweep, so memory stays proportional to live state (an attacker rotating client addresses
//!   cannot grow the counter map without bound) at amortized O(1) cost.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vultrino_core::ports::approval_rules::{self, Book};
use vultrino_core::ports::session_rules::{self, Change, Item};
use vultrino_core::ports::{Hit, SessionRecord, SessionStore};
use vultrino_core::Result;

/// Sweep a map once it holds this many entries (and then at twice the live size).
const FIRST_SWEEP_AT: usize = 1024;

/// One kind of item by key, whose dead entries are swept when it grows. A value is `None` only
/// while a rule runs on a new key.
struct Swept {
    map: HashMap<String, Option<Item>>,
    sweep_at: usize,
}

impl Swept {
    fn new() -> Self {
        Swept {
            map: HashMap::new(),
            sweep_at: FIRST_SWEEP_AT,
        }
    }

    /// Run `rule` on the item under `key` and keep the map as the rule's [`Change`] says; `now_ms`
    /// decides what a sweep may drop.
    fn apply<T>(
        &mut self,
        key: &str,
        now_ms: u64,
        rule: impl FnOnce(&mut Option<Item>) -> (Change, T),
    ) -> T {
        if let Some(slot) = self.map.get_mut(key) {
            let (change, out) = rule(slot);
            if change == Change::Delete {
                self.map.remove(key);
            }
            return out;
        }
        let mut slot = None;
        let (change, out) = rule(&mut slot);
        if change == Change::Put {
            self.maybe_sweep(now_ms);
            self.map.insert(key.to_owned(), slot);
        }
        out
    }

    /// Before inserting a new key: drop dead entries when the map has grown enough.
    fn maybe_sweep(&mut self, now_ms: u64) {
        if self.map.len() >= self.sweep_at {
            self.map
                .retain(|_, item| item.as_ref().is_some_and(|i| i.is_alive(now_ms)));
            self.sweep_at = (self.map.len() * 2).max(FIRST_SWEEP_AT);
        }
    }

    /// The item under `key`, for rules that only read.
    fn get(&self, key: &str) -> Option<&Item> {
        self.map.get(key).and_then(Option::as_ref)
    }
}

/// An in-memory, strongly consistent [`SessionStore`].
pub struct MemorySessions {
    sessions: Mutex<Swept>,
    counters: Mutex<Swept>,
    markers: Mutex<Swept>,
    /// Every approval: one book, each operation applied whole under its lock. In memory only:
    /// a restart forgets them (docs/decisions/0090-approvals.md).
    approvals: Mutex<Book>,
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
            .field("approvals", &lock(&self.approvals).len())
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
            approvals: Mutex::new(Book::default()),
        }
    }
}

/// Entries held by each map of a [`MemorySessions`], dead ones not yet swept included
/// ([`MemorySessions::sizes`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionSizes {
    pub sessions: usize,
    pub counters: usize,
    pub markers: usize,
    pub approvals: usize,
}

impl MemorySessions {
    /// How many entries each map holds now, for the tests that check they stay bounded under
    /// churn (docs/decisions/0119). Sizes only: ids and records name nobody here.
    #[doc(hidden)]
    pub fn sizes(&self) -> SessionSizes {
        SessionSizes {
            sessions: lock(&self.sessions).map.len(),
            counters: lock(&self.counters).map.len(),
            markers: lock(&self.markers).map.len(),
            approvals: lock(&self.approvals).len(),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        let now = record.last_seen_ms;
        lock(&self.sessions).apply(id, now, |slot| {
            (session_rules::create_session(slot, record), ())
        });
        Ok(())
    }

    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        Ok(lock(&self.sessions).apply(id, now_ms, |slot| {
            session_rules::touch_session(slot, now_ms)
        }))
    }

    async fn revoke_session(&self, id: &str) -> Result<()> {
        lock(&self.sessions).apply(id, 0, |slot| (session_rules::remove(slot), ()));
        Ok(())
    }

    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        Ok(lock(&self.counters).apply(key, now_ms, |slot| {
            session_rules::hit(slot, window_ms, limit, now_ms)
        }))
    }

    async fn reset_counter(&self, key: &str) -> Result<()> {
        lock(&self.counters).apply(key, 0, |slot| (session_rules::remove(slot), ()));
        Ok(())
    }

    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        Ok(lock(&self.markers).apply(key, now_ms, |slot| {
            session_rules::mark(slot, ttl_ms, now_ms)
        }))
    }

    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        Ok(session_rules::is_marked(
            lock(&self.markers).get(key),
            now_ms,
        ))
    }

    async fn approval(&self, op: approval_rules::Op) -> Result<approval_rules::Reply> {
        // Nothing to persist: the book is the storage.
        let (_writes, reply) = lock(&self.approvals).apply(op);
        Ok(reply)
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

    #[tokio::test]
    async fn a_session_found_dead_is_removed_at_once() {
        let s = MemorySessions::new();
        let record = SessionRecord {
            subject: "admin".into(),
            csrf_hash: "ab".repeat(32),
            created_at_ms: 0,
            last_seen_ms: 0,
            idle_timeout_ms: 1_000,
            expires_at_ms: 10_000,
            via_cookie: false,
            twin: None,
        };
        s.create_session("id", record).await.ok();
        assert_eq!(s.touch_session("id", 1_000).await.ok(), Some(None));
        assert_eq!(lock(&s.sessions).map.len(), 0);
    }

    #[tokio::test]
    async fn reads_of_unknown_keys_store_nothing() {
        let s = MemorySessions::new();
        assert_eq!(s.touch_session("id", 0).await.ok(), Some(None));
        s.revoke_session("id").await.ok();
        s.reset_counter("ip").await.ok();
        assert_eq!(s.is_marked("m", 0).await.ok(), Some(false));
        let get = approval_rules::Op::Get {
            id: "ap_0".into(),
            now_ms: 0,
        };
        assert!(s.approval(get).await.is_ok());
        assert_eq!(
            format!("{s:?}"),
            "MemorySessions { sessions: 0, counters: 0, markers: 0, approvals: 0 }"
        );
    }
}
