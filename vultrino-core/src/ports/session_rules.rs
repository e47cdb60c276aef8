//! The [`SessionStore`](super::SessionStore) rules, written once: what a session, a fixed-window
//! counter and a single-use marker do on each operation.
//!
//! Pure: no I/O and no clock (time comes in with each call), so every rule is unit-tested here
//! and both stores run exactly this code:
//! - the memory store (`backend-local`, `memory_sessions.rs`) keeps one map per kind, each behind
//!   a lock, and calls the function of the method on the map's entry while holding the lock;
//! - the Durable Object (`backend-cloudflare`, `sessions.rs`) holds ONE item per object, receives
//!   an [`Op`] as JSON from the worker and runs [`apply`] on its item.
//!
//! Each function changes the item in its slot (`&mut Option<Item>`, `None` when there is none)
//! and says with a [`Change`] what the store must do to persist it. Storage concerns (locking,
//! sweeping dead entries, alarms) stay in the stores.
//!
//! # Wire format
//! [`Op`] and [`Reply`] travel as JSON between the worker and its Durable Objects, which also
//! store their [`Item`]. The JSON of every variant is pinned by a test here, so a deployed object
//! and a newer worker (or the reverse, during a rollout) keep understanding each other. Rename or
//! reshape nothing without a migration.

use serde::{Deserialize, Serialize};

use super::{Hit, SessionRecord};

/// What one key holds: a session (under the hash of its token), a counter or a marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Item {
    /// Boxed so that counters and markers, the many small items, stay small in memory.
    Session(Box<SessionRecord>),
    Counter {
        /// Hits counted in the current window (allowed ones only, so never above the limit).
        count: u32,
        /// When the current window ends (ms since the epoch).
        window_end_ms: u64,
    },
    Marker {
        /// The marker is unset from this instant on (ms since the epoch).
        expires_at_ms: u64,
    },
}

impl Item {
    /// The instant from which the item has no effect any more: a store may then drop it (the
    /// memory store sweeps it, the Durable Object's alarm deletes it).
    pub fn dead_after_ms(&self) -> u64 {
        match self {
            Item::Session(r) => r
                .expires_at_ms
                .min(r.last_seen_ms.saturating_add(r.idle_timeout_ms)),
            Item::Counter { window_end_ms, .. } => *window_end_ms,
            Item::Marker { expires_at_ms } => *expires_at_ms,
        }
    }

    /// Whether the item still has an effect at `now_ms` (a live session, a counter whose window
    /// has not ended, a set marker).
    pub fn is_alive(&self, now_ms: u64) -> bool {
        now_ms < self.dead_after_ms()
    }
}

/// What the store must do after a rule ran; the slot already holds the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a changed item must be persisted"]
pub enum Change {
    /// The item did not change: nothing to write.
    Keep,
    /// The slot holds a new or changed item: write it.
    Put,
    /// The slot is empty now: delete the stored item (there may have been none).
    Delete,
}

/// [`SessionStore::create_session`](super::SessionStore::create_session): store `record`,
/// replacing whatever the key held.
pub fn create_session(slot: &mut Option<Item>, record: SessionRecord) -> Change {
    *slot = Some(Item::Session(Box::new(record)));
    Change::Put
}

/// [`SessionStore::touch_session`](super::SessionStore::touch_session): the live session as
/// updated, or `None`.
///
/// `last_seen_ms` becomes `max(last_seen_ms, now_ms)`: `now_ms` with a monotonic clock, and a
/// late caller with an older `now_ms` never shortens the session. The absolute expiry never
/// moves. A dead session is deleted, so that it stays dead even for a later call carrying an
/// earlier `now_ms`.
pub fn touch_session(slot: &mut Option<Item>, now_ms: u64) -> (Change, Option<SessionRecord>) {
    match slot {
        Some(Item::Session(r)) if r.is_alive(now_ms) => {
            let change = if now_ms > r.last_seen_ms {
                r.last_seen_ms = now_ms;
                Change::Put
            } else {
                Change::Keep
            };
            (change, Some((**r).clone()))
        }
        None => (Change::Keep, None),
        Some(_) => {
            *slot = None;
            (Change::Delete, None)
        }
    }
}

/// [`SessionStore::revoke_session`](super::SessionStore::revoke_session) and
/// [`SessionStore::reset_counter`](super::SessionStore::reset_counter): forget the item.
pub fn remove(slot: &mut Option<Item>) -> Change {
    *slot = None;
    Change::Delete
}

/// [`SessionStore::hit`](super::SessionStore::hit): count one hit against a fixed window of
/// `window_ms` that starts at the first hit after the previous window ended.
///
/// A refused hit inside a window changes nothing (no write).
pub fn hit(slot: &mut Option<Item>, window_ms: u64, limit: u32, now_ms: u64) -> (Change, Hit) {
    let current = match slot {
        Some(Item::Counter {
            count,
            window_end_ms,
        }) if now_ms < *window_end_ms => Some((*count, *window_end_ms)),
        _ => None,
    };
    let fresh = current.is_none();
    let (count, window_end_ms) = current.unwrap_or((0, now_ms.saturating_add(window_ms)));
    let allowed = count < limit;
    // `count < limit <= u32::MAX`: no overflow.
    let count = if allowed { count + 1 } else { count };
    let hit = Hit {
        allowed,
        count,
        reset_at_ms: window_end_ms,
    };
    if allowed || fresh {
        *slot = Some(Item::Counter {
            count,
            window_end_ms,
        });
        (Change::Put, hit)
    } else {
        (Change::Keep, hit)
    }
}

/// [`SessionStore::mark`](super::SessionStore::mark): `true` if the marker was unset (or
/// expired) and is now set for `ttl_ms`, `false` if it was set.
pub fn mark(slot: &mut Option<Item>, ttl_ms: u64, now_ms: u64) -> (Change, bool) {
    if is_marked(slot.as_ref(), now_ms) {
        return (Change::Keep, false);
    }
    *slot = Some(Item::Marker {
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    });
    (Change::Put, true)
}

/// [`SessionStore::is_marked`](super::SessionStore::is_marked): whether a marker is set at
/// `now_ms` (set until, not including, its expiry).
pub fn is_marked(item: Option<&Item>, now_ms: u64) -> bool {
    matches!(item, Some(Item::Marker { expires_at_ms }) if now_ms < *expires_at_ms)
}

/// One [`SessionStore`](super::SessionStore) call addressed to one item (the body of the
/// worker's request to a Durable Object). See the module doc on its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    CreateSession {
        record: SessionRecord,
    },
    TouchSession {
        now_ms: u64,
    },
    RevokeSession,
    Hit {
        window_ms: u64,
        limit: u32,
        now_ms: u64,
    },
    ResetCounter,
    Mark {
        ttl_ms: u64,
        now_ms: u64,
    },
    IsMarked {
        now_ms: u64,
    },
}

/// The answer to an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Session { record: Option<SessionRecord> },
    Hit { hit: Hit },
    Marked { value: bool },
}

/// Run `op` on the item in `slot` with the rule of its method.
///
/// The key's name tells which kind of item it holds, so an op never meets an item of another
/// kind; if it did, the item would count as absent (and be replaced or deleted).
pub fn apply(slot: &mut Option<Item>, op: Op) -> (Change, Reply) {
    match op {
        Op::CreateSession { record } => (create_session(slot, record), Reply::Done),
        Op::TouchSession { now_ms } => {
            let (change, record) = touch_session(slot, now_ms);
            (change, Reply::Session { record })
        }
        Op::RevokeSession | Op::ResetCounter => (remove(slot), Reply::Done),
        Op::Hit {
            window_ms,
            limit,
            now_ms,
        } => {
            let (change, hit) = hit(slot, window_ms, limit, now_ms);
            (change, Reply::Hit { hit })
        }
        Op::Mark { ttl_ms, now_ms } => {
            let (change, value) = mark(slot, ttl_ms, now_ms);
            (change, Reply::Marked { value })
        }
        Op::IsMarked { now_ms } => (
            Change::Keep,
            Reply::Marked {
                value: is_marked(slot.as_ref(), now_ms),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const IDLE: u64 = 30 * 60 * 1000;
    const ABSOLUTE: u64 = 12 * 60 * 60 * 1000;

    fn record(now: u64) -> SessionRecord {
        SessionRecord {
            subject: "admin".into(),
            csrf_hash: "ab".repeat(32),
            created_at_ms: now,
            last_seen_ms: now,
            idle_timeout_ms: IDLE,
            expires_at_ms: now + ABSOLUTE,
            via_cookie: true,
            twin: Some("cd".repeat(32)),
        }
    }

    fn session_slot(now: u64) -> Option<Item> {
        let mut slot = None;
        assert_eq!(create_session(&mut slot, record(now)), Change::Put);
        slot
    }

    fn count(slot: &mut Option<Item>, limit: u32, now: u64) -> Hit {
        hit(slot, 1000, limit, now).1
    }

    // ----- sessions ----------------------------------------------------------------------

    #[test]
    fn create_replaces_whatever_the_key_held() {
        let mut slot = Some(Item::Marker { expires_at_ms: 5 });
        assert_eq!(create_session(&mut slot, record(T0)), Change::Put);
        assert_eq!(slot, Some(Item::Session(Box::new(record(T0)))));
        let mut second = record(T0 + 5);
        second.subject = "second".into();
        assert_eq!(create_session(&mut slot, second.clone()), Change::Put);
        assert_eq!(touch_session(&mut slot, T0 + 5).1, Some(second));
    }

    #[test]
    fn touch_sets_last_seen_and_idle_expiry_counts_from_it() {
        let mut slot = session_slot(T0);
        let t1 = T0 + IDLE - 10;
        let (change, got) = touch_session(&mut slot, t1);
        let want = SessionRecord {
            last_seen_ms: t1,
            ..record(T0)
        };
        assert_eq!((change, got.as_ref()), (Change::Put, Some(&want)));
        assert_eq!(
            slot,
            Some(Item::Session(Box::new(want))),
            "stored as returned"
        );
        assert!(touch_session(&mut slot.clone(), t1 + IDLE - 1).1.is_some());
        assert_eq!(touch_session(&mut slot, t1 + IDLE), (Change::Delete, None));
    }

    #[test]
    fn touch_never_moves_last_seen_backwards() {
        let mut slot = session_slot(T0);
        let _ = touch_session(&mut slot, T0 + 1_000);
        let (change, got) = touch_session(&mut slot, T0 + 10);
        assert_eq!(change, Change::Keep, "a late touch writes nothing");
        assert_eq!(got.map(|r| r.last_seen_ms), Some(T0 + 1_000));
        // Idle expiry still counts from the later touch.
        assert!(touch_session(&mut slot.clone(), T0 + 1_000 + IDLE - 1)
            .1
            .is_some());
        assert!(touch_session(&mut slot, T0 + 1_000 + IDLE).1.is_none());
    }

    #[test]
    fn touch_never_moves_the_absolute_expiry() {
        let mut slot = session_slot(T0);
        let expires = T0 + ABSOLUTE;
        let mut now = T0;
        while now + IDLE / 2 < expires {
            now += IDLE / 2;
            let got = touch_session(&mut slot, now).1;
            assert_eq!(got.map(|r| r.expires_at_ms), Some(expires), "at {now}");
        }
        assert!(touch_session(&mut slot, expires - 1).1.is_some());
        assert_eq!(touch_session(&mut slot, expires), (Change::Delete, None));
    }

    #[test]
    fn a_dead_session_is_deleted_and_not_revived() {
        for dead_at in [T0 + IDLE, T0 + IDLE + 5, T0 + ABSOLUTE] {
            let mut slot = session_slot(T0);
            assert_eq!(touch_session(&mut slot, dead_at), (Change::Delete, None));
            assert_eq!(slot, None);
            // Not even by a late caller whose clock says the session was alive.
            assert_eq!(touch_session(&mut slot, T0 + 1), (Change::Keep, None));
            assert_eq!(touch_session(&mut slot, dead_at), (Change::Keep, None));
        }
    }

    #[test]
    fn touch_of_a_key_holding_no_session_is_none() {
        assert_eq!(touch_session(&mut None, T0), (Change::Keep, None));
        let mut counter = Some(Item::Counter {
            count: 1,
            window_end_ms: T0 + 1,
        });
        assert_eq!(touch_session(&mut counter, T0).1, None);
    }

    #[test]
    fn revoke_and_reset_delete_the_item_even_when_there_is_none() {
        let mut slot = session_slot(T0);
        assert_eq!(
            apply(&mut slot, Op::RevokeSession),
            (Change::Delete, Reply::Done)
        );
        assert_eq!(touch_session(&mut slot, T0 + 1).1, None);
        let mut slot = None;
        let _ = count(&mut slot, 1, T0);
        assert_eq!(
            apply(&mut slot, Op::ResetCounter),
            (Change::Delete, Reply::Done)
        );
        assert_eq!(count(&mut slot, 1, T0).count, 1, "a fresh window");
        assert_eq!(apply(&mut None, Op::RevokeSession).0, Change::Delete);
    }

    // ----- counters ----------------------------------------------------------------------

    #[test]
    fn counter_allows_exactly_limit_hits_per_window_then_starts_fresh() {
        let mut cur = None;
        let hits: Vec<bool> = (0..5).map(|_| count(&mut cur, 3, 10).allowed).collect();
        assert_eq!(hits, [true, true, true, false, false]);
        assert_eq!(count(&mut cur, 3, 10).count, 3);
        let fresh = count(&mut cur, 3, 1010);
        assert!(fresh.allowed);
        assert_eq!((fresh.count, fresh.reset_at_ms), (1, 2010));
    }

    #[test]
    fn a_limit_of_zero_reads_the_counter_without_counting() {
        let mut cur = None;
        let read = count(&mut cur, 0, 10);
        assert_eq!(
            (read.allowed, read.count),
            (false, 0),
            "a fresh counter reads 0"
        );
        assert!(count(&mut cur, 3, 11).allowed);
        assert!(count(&mut cur, 3, 12).allowed);
        for now in [13, 14] {
            let read = count(&mut cur, 0, now);
            assert_eq!(
                (read.allowed, read.count),
                (false, 2),
                "two counted, none added"
            );
        }
        assert_eq!(count(&mut cur, 3, 15).count, 3);
    }

    #[test]
    fn counter_is_exact_at_the_limit() {
        for limit in [1u32, 2, 7] {
            let mut slot = None;
            for i in 1..=limit {
                let got = hit(&mut slot, 1000, limit, T0 + u64::from(i));
                let want = Hit {
                    allowed: true,
                    count: i,
                    reset_at_ms: T0 + 1 + 1000,
                };
                assert_eq!(got, (Change::Put, want), "hit {i} of {limit}");
            }
            // The next hit, and every one until the window ends, is refused without counting
            // and without a write.
            for now in [T0 + 1 + u64::from(limit), T0 + 1 + 999] {
                let got = hit(&mut slot, 1000, limit, now);
                let want = Hit {
                    allowed: false,
                    count: limit,
                    reset_at_ms: T0 + 1 + 1000,
                };
                assert_eq!(got, (Change::Keep, want), "limit {limit} at {now}");
            }
            // The window's end is the first instant of the next window.
            let got = count(&mut slot, limit, T0 + 1 + 1000);
            assert_eq!((got.allowed, got.count), (true, 1));
        }
    }

    #[test]
    fn a_limit_of_zero_refuses_every_hit() {
        let mut slot = None;
        let first = hit(&mut slot, 1000, 0, T0);
        assert_eq!(
            first,
            (
                Change::Put,
                Hit {
                    allowed: false,
                    count: 0,
                    reset_at_ms: T0 + 1000,
                }
            )
        );
        assert_eq!(hit(&mut slot, 1000, 0, T0 + 1).0, Change::Keep);
    }

    #[test]
    fn a_window_starts_at_the_first_hit_after_the_previous_ended() {
        let mut slot = None;
        let _ = count(&mut slot, 2, T0);
        let later = T0 + 5_123;
        let got = count(&mut slot, 2, later);
        assert_eq!((got.count, got.reset_at_ms), (1, later + 1000));
    }

    #[test]
    fn times_near_the_end_of_u64_saturate_instead_of_wrapping() {
        let mut slot = None;
        let got = hit(&mut slot, u64::MAX, 1, u64::MAX - 1).1;
        assert_eq!(got.reset_at_ms, u64::MAX);
        assert!(!count(&mut slot, 1, u64::MAX - 1).allowed);
        let mut marker = None;
        assert!(mark(&mut marker, u64::MAX, 5).1);
        assert!(is_marked(marker.as_ref(), u64::MAX - 1));
    }

    // ----- markers -----------------------------------------------------------------------

    #[test]
    fn marker_is_set_once_until_it_expires() {
        let mut slot = None;
        assert_eq!(mark(&mut slot, 100, 0), (Change::Put, true));
        assert_eq!(mark(&mut slot, 100, 99), (Change::Keep, false));
        assert_eq!(mark(&mut slot, 100, 100), (Change::Put, true));
        assert_eq!(slot, Some(Item::Marker { expires_at_ms: 200 }));
    }

    #[test]
    fn a_marker_is_set_until_but_not_at_its_expiry() {
        let mut slot = None;
        assert!(!is_marked(slot.as_ref(), T0), "unset before any mark");
        let _ = mark(&mut slot, 5_000, T0);
        assert!(is_marked(slot.as_ref(), T0));
        assert!(is_marked(slot.as_ref(), T0 + 4_999));
        assert!(!is_marked(slot.as_ref(), T0 + 5_000));
        assert_eq!(
            apply(&mut slot, Op::IsMarked { now_ms: T0 + 5_000 }),
            (Change::Keep, Reply::Marked { value: false })
        );
    }

    // ----- items -------------------------------------------------------------------------

    #[test]
    fn items_die_when_they_stop_having_an_effect() {
        let session = Item::Session(Box::new(record(T0)));
        assert_eq!(session.dead_after_ms(), T0 + IDLE);
        let mut near_end = record(T0);
        near_end.expires_at_ms = T0 + 10;
        assert_eq!(Item::Session(Box::new(near_end)).dead_after_ms(), T0 + 10);
        let counter = Item::Counter {
            count: 3,
            window_end_ms: T0,
        };
        let marker = Item::Marker { expires_at_ms: T0 };
        for item in [&counter, &marker] {
            assert!(item.is_alive(T0 - 1) && !item.is_alive(T0));
        }
        assert!(session.is_alive(T0 + IDLE - 1) && !session.is_alive(T0 + IDLE));
    }

    // ----- wire format -------------------------------------------------------------------

    fn wire_record() -> SessionRecord {
        SessionRecord {
            subject: "a".into(),
            csrf_hash: "h".into(),
            created_at_ms: 1,
            last_seen_ms: 2,
            idle_timeout_ms: 3,
            expires_at_ms: 4,
            via_cookie: true,
            twin: Some("t".into()),
        }
    }

    const WIRE_RECORD: &str = r#""subject":"a","csrf_hash":"h","created_at_ms":1,"last_seen_ms":2,"idle_timeout_ms":3,"expires_at_ms":4,"via_cookie":true,"twin":"t""#;

    /// `value` serializes to exactly `json`, and `json` reads back as `value`.
    fn pinned<T>(value: T, json: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(&value).ok().as_deref(), Some(json));
        assert_eq!(serde_json::from_str::<T>(json).ok(), Some(value), "{json}");
    }

    #[test]
    fn ops_keep_their_json() {
        pinned(
            Op::CreateSession {
                record: wire_record(),
            },
            &format!(r#"{{"op":"create_session","record":{{{WIRE_RECORD}}}}}"#),
        );
        pinned(
            Op::TouchSession { now_ms: 1 },
            r#"{"op":"touch_session","now_ms":1}"#,
        );
        pinned(Op::RevokeSession, r#"{"op":"revoke_session"}"#);
        pinned(
            Op::Hit {
                window_ms: 1,
                limit: 2,
                now_ms: 3,
            },
            r#"{"op":"hit","window_ms":1,"limit":2,"now_ms":3}"#,
        );
        pinned(Op::ResetCounter, r#"{"op":"reset_counter"}"#);
        pinned(
            Op::Mark {
                ttl_ms: 1,
                now_ms: 2,
            },
            r#"{"op":"mark","ttl_ms":1,"now_ms":2}"#,
        );
        pinned(
            Op::IsMarked { now_ms: 1 },
            r#"{"op":"is_marked","now_ms":1}"#,
        );
    }

    #[test]
    fn replies_keep_their_json() {
        pinned(Reply::Done, r#"{"reply":"done"}"#);
        pinned(
            Reply::Session {
                record: Some(wire_record()),
            },
            &format!(r#"{{"reply":"session","record":{{{WIRE_RECORD}}}}}"#),
        );
        pinned(
            Reply::Session { record: None },
            r#"{"reply":"session","record":null}"#,
        );
        pinned(
            Reply::Hit {
                hit: Hit {
                    allowed: true,
                    count: 1,
                    reset_at_ms: 2,
                },
            },
            r#"{"reply":"hit","hit":{"allowed":true,"count":1,"reset_at_ms":2}}"#,
        );
        pinned(
            Reply::Marked { value: true },
            r#"{"reply":"marked","value":true}"#,
        );
    }

    #[test]
    fn stored_items_keep_their_json() {
        pinned(
            Item::Session(Box::new(wire_record())),
            &format!(r#"{{"item":"session",{WIRE_RECORD}}}"#),
        );
        pinned(
            Item::Counter {
                count: 1,
                window_end_ms: 2,
            },
            r#"{"item":"counter","count":1,"window_end_ms":2}"#,
        );
        pinned(
            Item::Marker { expires_at_ms: 3 },
            r#"{"item":"marker","expires_at_ms":3}"#,
        );
    }

    #[test]
    fn apply_runs_the_rule_of_each_op() {
        let mut slot = None;
        let create = Op::CreateSession { record: record(T0) };
        assert_eq!(apply(&mut slot, create), (Change::Put, Reply::Done));
        let touched = apply(&mut slot, Op::TouchSession { now_ms: T0 + 1 });
        let want = SessionRecord {
            last_seen_ms: T0 + 1,
            ..record(T0)
        };
        assert_eq!(
            touched,
            (Change::Put, Reply::Session { record: Some(want) })
        );
        let mut counter = None;
        let op = Op::Hit {
            window_ms: 10,
            limit: 1,
            now_ms: T0,
        };
        let (_, first) = apply(&mut counter, op.clone());
        let (_, second) = apply(&mut counter, op);
        assert_eq!(
            (first, second),
            (
                Reply::Hit {
                    hit: Hit {
                        allowed: true,
                        count: 1,
                        reset_at_ms: T0 + 10
                    }
                },
                Reply::Hit {
                    hit: Hit {
                        allowed: false,
                        count: 1,
                        reset_at_ms: T0 + 10
                    }
                }
            )
        );
        let mut marker = None;
        let op = Op::Mark {
            ttl_ms: 10,
            now_ms: T0,
        };
        let (_, first) = apply(&mut marker, op.clone());
        let (_, second) = apply(&mut marker, op);
        let (_, set) = apply(&mut marker, Op::IsMarked { now_ms: T0 + 9 });
        assert_eq!(
            (first, second, set),
            (
                Reply::Marked { value: true },
                Reply::Marked { value: false },
                Reply::Marked { value: true }
            )
        );
    }
}
