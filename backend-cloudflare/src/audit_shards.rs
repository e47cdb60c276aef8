//! The plain-Rust half of the worker's audit store (`audit_store`'s Durable Objects,
//! docs/decisions/0100): which shard an event goes to, what a cursor may be, the messages the
//! shards exchange and how their pages merge — natively testable.

use vultrino_core::audit::{AuditEvent, AuditFilter};
use vultrino_core::ports::AuditPage;

/// Objects the events are spread over. Never lowered: a query reads shards `0..SHARDS`.
pub const SHARDS: u32 = 8;
/// The longest id a cursor may be (an id is 13 digits, `-`, 12 hex digits, maybe `-u`).
const MAX_CURSOR_BYTES: usize = 64;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Append {
    pub events: Vec<AuditEvent>,
    pub retention_secs: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Query {
    pub filter: AuditFilter,
    /// Only ids after this one (older events).
    pub after: Option<String>,
    pub limit: usize,
}

/// One shard's answer to a [`Query`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// The last id looked at when the shard may hold more after it; `None`: looked at all.
    pub more_after: Option<String>,
}

/// The shard of the event `id` (FNV-1a: stable across isolates and releases).
pub fn shard_of(id: &str) -> u32 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    u32::try_from(hash % u64::from(SHARDS)).unwrap_or(0)
}

/// Whether `cursor` can be an id this store returned (digits, hex and `-`).
pub fn valid_cursor(cursor: &str) -> bool {
    !cursor.is_empty()
        && cursor.len() <= MAX_CURSOR_BYTES
        && cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The shards' pages as one, newest first: only events up to the newest point some shard
/// has not looked past (events after it may be missing from that shard's page), at most
/// `limit`; the cursor resumes after the last event returned or, when fewer, after that point.
pub fn merge(pages: Vec<Page>, limit: usize) -> AuditPage {
    let horizon = pages.iter().filter_map(|p| p.more_after.clone()).min();
    let mut events: Vec<AuditEvent> = pages
        .into_iter()
        .flat_map(|p| p.events)
        .filter(|e| horizon.as_ref().is_none_or(|h| e.id <= *h))
        .collect();
    events.sort_by(|a, b| a.id.cmp(&b.id));
    if events.len() >= limit {
        events.truncate(limit);
        let cursor = events.last().map(|e| e.id.clone());
        return AuditPage { events, cursor };
    }
    AuditPage {
        events,
        cursor: horizon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[&str], more_after: Option<&str>) -> Page {
        Page {
            events: ids
                .iter()
                .map(|id| {
                    let mut e = AuditEvent::new(1, "a", "execute", "allowed");
                    e.id = (*id).to_string();
                    e
                })
                .collect(),
            more_after: more_after.map(str::to_string),
        }
    }

    fn ids(p: &AuditPage) -> Vec<&str> {
        p.events.iter().map(|e| e.id.as_str()).collect()
    }

    /// A shard that stopped early (its scan budget spent) bounds what the others may return:
    /// an event of another shard past that point would skip that shard's unseen events.
    #[test]
    fn merged_pages_never_pass_a_shard_that_stopped_early() {
        let merged = merge(
            vec![page(&["b"], Some("c")), page(&["a", "d", "e"], None)],
            10,
        );
        assert_eq!(ids(&merged), ["a", "b"]);
        assert_eq!(merged.cursor.as_deref(), Some("c"));
    }

    #[test]
    fn merged_pages_are_newest_first_up_to_the_limit() {
        let merged = merge(vec![page(&["b", "d"], None), page(&["a", "c"], None)], 3);
        assert_eq!(ids(&merged), ["a", "b", "c"]);
        assert_eq!(merged.cursor.as_deref(), Some("c"));
        let all = merge(vec![page(&["b"], None), page(&["a"], None)], 3);
        assert_eq!(ids(&all), ["a", "b"]);
        assert_eq!(all.cursor, None);
    }

    #[test]
    fn ids_spread_over_every_shard_and_cursors_are_checked() {
        let shards: std::collections::HashSet<u32> = (0..200)
            .map(|i| shard_of(&vultrino_core::audit::new_id(1_700_000_000_000 + i)))
            .collect();
        assert_eq!(shards.len(), SHARDS as usize);
        assert!(valid_cursor(&vultrino_core::audit::new_id(1)));
        assert!(valid_cursor("8299999999999-0123456789ab-u"));
        assert!(!valid_cursor("") && !valid_cursor("a b") && !valid_cursor(&"9".repeat(65)));
    }
}
