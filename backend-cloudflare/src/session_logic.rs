//! What one `SessionDO` instance does with one operation — pure, so it is unit-tested natively.
//!
//! Each Durable Object holds ONE item: a session (named `session:<token hash>`), a counter
//! (`counter:<key>`) or a marker (`marker:<key>`). Sharding by name means no object is global and
//! each object's single-threaded execution makes its own read-modify-write exact.
//!
//! The worker sends an [`Op`] as JSON; the object applies it to its [`Item`] with [`apply`], stores
//! the new item (or deletes it) and replies with the [`Reply`].

use serde::{Deserialize, Serialize};
use vultrino_core::ports::{Hit, SessionRecord};

/// One operation sent to a `SessionDO` (the body of the internal request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    CreateSession {
        record: SessionRecord,
    },
    GetSession {
        now_ms: u64,
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

/// What one object stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Item {
    Session(SessionRecord),
    Counter { count: u32, window_end_ms: u64 },
    Marker { expires_at_ms: u64 },
}

impl Item {
    /// When the item is useless and may be deleted (the object sets an alarm for it).
    pub fn dead_after_ms(&self) -> u64 {
        match self {
            Item::Session(r) => r
                .expires_at_ms
                .min(r.last_seen_ms.saturating_add(r.idle_timeout_ms)),
            Item::Counter { window_end_ms, .. } => *window_end_ms,
            Item::Marker { expires_at_ms } => *expires_at_ms,
        }
    }
}

/// The reply to an [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Session { record: Option<SessionRecord> },
    Hit { hit: Hit },
    Marked { value: bool },
}

/// How the stored item changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Keep,
    Put(Item),
    Delete,
}

/// Apply `op` to the object's current item. A malformed pairing (a counter op sent to an object
/// holding a session) cannot happen with the worker's naming, and is treated as "no item".
pub fn apply(current: Option<&Item>, op: Op) -> (Change, Reply) {
    match op {
        Op::CreateSession { record } => (Change::Put(Item::Session(record)), Reply::Done),
        Op::GetSession { now_ms } => match current {
            Some(Item::Session(r)) if r.is_alive(now_ms) => (
                Change::Keep,
                Reply::Session {
                    record: Some(r.clone()),
                },
            ),
            Some(_) => (Change::Delete, Reply::Session { record: None }),
            None => (Change::Keep, Reply::Session { record: None }),
        },
        Op::TouchSession { now_ms } => match current {
            Some(Item::Session(r)) if r.is_alive(now_ms) => {
                let mut r = r.clone();
                r.last_seen_ms = now_ms.max(r.last_seen_ms);
                (
                    Change::Put(Item::Session(r.clone())),
                    Reply::Session { record: Some(r) },
                )
            }
            Some(_) => (Change::Delete, Reply::Session { record: None }),
            None => (Change::Keep, Reply::Session { record: None }),
        },
        Op::RevokeSession | Op::ResetCounter => (Change::Delete, Reply::Done),
        Op::Hit {
            window_ms,
            limit,
            now_ms,
        } => {
            let (count, window_end_ms) = match current {
                Some(Item::Counter {
                    count,
                    window_end_ms,
                }) if now_ms < *window_end_ms => (*count, *window_end_ms),
                _ => (0, now_ms.saturating_add(window_ms)),
            };
            let allowed = count < limit;
            let count = if allowed { count + 1 } else { count };
            let hit = Hit {
                allowed,
                count,
                reset_at_ms: window_end_ms,
            };
            (
                Change::Put(Item::Counter {
                    count,
                    window_end_ms,
                }),
                Reply::Hit { hit },
            )
        }
        Op::Mark { ttl_ms, now_ms } => match current {
            Some(Item::Marker { expires_at_ms }) if now_ms < *expires_at_ms => {
                (Change::Keep, Reply::Marked { value: false })
            }
            _ => (
                Change::Put(Item::Marker {
                    expires_at_ms: now_ms.saturating_add(ttl_ms),
                }),
                Reply::Marked { value: true },
            ),
        },
        Op::IsMarked { now_ms } => {
            let value =
                matches!(current, Some(Item::Marker { expires_at_ms }) if now_ms < *expires_at_ms);
            (Change::Keep, Reply::Marked { value })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cur: &mut Option<Item>, limit: u32, now: u64) -> Hit {
        let (change, reply) = apply(
            cur.as_ref(),
            Op::Hit {
                window_ms: 1000,
                limit,
                now_ms: now,
            },
        );
        if let Change::Put(i) = change {
            *cur = Some(i);
        }
        match reply {
            Reply::Hit { hit } => hit,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[test]
    fn counter_allows_exactly_limit_hits_per_window_then_starts_fresh() {
        let mut cur = None;
        let hits: Vec<bool> = (0..5).map(|_| hit(&mut cur, 3, 10).allowed).collect();
        assert_eq!(hits, [true, true, true, false, false]);
        assert_eq!(hit(&mut cur, 3, 10).count, 3);
        let fresh = hit(&mut cur, 3, 1010);
        assert!(fresh.allowed);
        assert_eq!((fresh.count, fresh.reset_at_ms), (1, 2010));
    }

    #[test]
    fn marker_is_set_once_until_it_expires() {
        let (c, r) = apply(
            None,
            Op::Mark {
                ttl_ms: 100,
                now_ms: 0,
            },
        );
        assert_eq!(r, Reply::Marked { value: true });
        let Change::Put(item) = c else {
            panic!("not stored")
        };
        let (_, r) = apply(
            Some(&item),
            Op::Mark {
                ttl_ms: 100,
                now_ms: 99,
            },
        );
        assert_eq!(r, Reply::Marked { value: false });
        let (_, r) = apply(
            Some(&item),
            Op::Mark {
                ttl_ms: 100,
                now_ms: 100,
            },
        );
        assert_eq!(r, Reply::Marked { value: true });
    }

    #[test]
    fn ops_round_trip_as_json() {
        let op = Op::Hit {
            window_ms: 1,
            limit: 2,
            now_ms: 3,
        };
        let text = serde_json::to_string(&op).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Op>(&text).ok(), Some(op));
    }
}
