//! [`MemoryKv`]: the in-memory [`KvStore`], and the index [`FileKv`](crate::file_kv::FileKv)
//! persists through.
//!
//! # Decisions
//! - One `BTreeMap<String, Entry>` behind a `std::sync::RwLock`: `String` orders by bytes, which is
//!   exactly the KV list order, and a range scan from the prefix (or the cursor) makes `list`
//!   O(log n + page). Gets are the hot path: they take the read lock for one lookup and clone a
//!   [`Bytes`] (a reference-count bump), so reads never wait for each other. The lock is never
//!   held across an `.await`.
//! - `get` overrides the trait's provided one (`get_with_metadata` without the metadata) because
//!   it is meaningfully cheaper: `execute` reads its credential with `get` on every call, and
//!   copying a credential's metadata costs far more than the value's reference-count bump
//!   (measured in benches/README.md, "Local: figures behind single lines of code").
//!   [`FileKv`](crate::file_kv::FileKv) serves reads from this index and forwards `get` for the
//!   same reason.
//! - Limits come from [`kv_validate`], shared with every other implementation.
//! - The list cursor is the base64url (no padding) of the last key returned; the next page starts
//!   strictly after it. It is opaque to callers; one that does not decode to a valid key under the
//!   requested prefix is `BadRequest`/`invalid_cursor`.
//! - Expiry is computed from the injected [`Clock`] at put time; expired entries are invisible at
//!   once and removed lazily when a read finds them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use vultrino_core::error::Code;
use vultrino_core::ports::{
    kv_validate, Clock, KvEntry, KvStore, ListKey, ListOptions, ListPage, PutOptions,
};
use vultrino_core::{Error, Result};

/// One stored value with its metadata and absolute expiry.
#[derive(Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) metadata: Option<serde_json::Value>,
    /// Milliseconds since the epoch; the entry is dead from this instant on.
    pub(crate) expires_at_ms: Option<u64>,
}

impl Entry {
    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

// Values are ciphertexts or other stored state: never printed, only their size.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("value_len", &self.value.len())
            .field("has_metadata", &self.metadata.is_some())
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// An in-memory [`KvStore`] with Workers KV semantics and limits.
pub struct MemoryKv {
    clock: Arc<dyn Clock>,
    map: RwLock<BTreeMap<String, Entry>>,
    /// Optional bound on the keys under one prefix (see [`MemoryKv::with_prefix_cap`]).
    cap: Option<PrefixCap>,
}

/// Keep at most `max` keys under `prefix`, evicting the greatest key first.
#[derive(Debug)]
struct PrefixCap {
    /// Keys added under the prefix since the last exact count (an upper bound of the count:
    /// deletions elsewhere only make it overestimate), so counting happens once per eviction.
    added: std::sync::atomic::AtomicUsize,
    prefix: String,
    /// The smallest string greater than every key with `prefix`.
    upper: String,
    max: usize,
}

impl fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKv")
            .field("keys", &self.read().len())
            .finish_non_exhaustive()
    }
}

impl MemoryKv {
    /// An empty store reading time (for TTLs) from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryKv {
            clock,
            map: RwLock::new(BTreeMap::new()),
            cap: None,
        }
    }

    /// Bound the number of keys under an ASCII `prefix` to `max`, evicting the lexicographically
    /// greatest first. A memory store is for tests, benchmarks and trying things out; without a
    /// bound, audit events (`audit:` keys sort newest first, so the greatest is the oldest) would
    /// grow its memory without limit under sustained traffic
    /// (docs/decisions/0024-bounded-audit-history.md).
    pub fn with_prefix_cap(mut self, prefix: &str, max: usize) -> Self {
        self.set_prefix_cap(prefix, max);
        self
    }

    /// [`MemoryKv::with_prefix_cap`] on a store being set up (the file store sets it after
    /// loading, then calls [`MemoryKv::trim_to_cap`]).
    pub(crate) fn set_prefix_cap(&mut self, prefix: &str, max: usize) {
        let mut upper = prefix.to_string();
        if let Some(last) = upper.pop() {
            if last.is_ascii() && last != '\x7f' {
                upper.push((last as u8 + 1) as char);
                self.cap = Some(PrefixCap {
                    added: std::sync::atomic::AtomicUsize::new(0),
                    prefix: prefix.to_string(),
                    upper,
                    max: max.max(1),
                });
            }
        }
    }

    /// Evict the greatest keys under the capped prefix until at most `max` remain; returns the
    /// evicted keys (none without a cap).
    pub(crate) fn trim_to_cap(&self) -> Vec<String> {
        let Some(cap) = &self.cap else {
            return Vec::new();
        };
        let mut map = self.write();
        Self::evict(&mut map, cap, cap.max)
    }

    fn evict(map: &mut BTreeMap<String, Entry>, cap: &PrefixCap, keep: usize) -> Vec<String> {
        let count = map.range(cap.prefix.clone()..cap.upper.clone()).count();
        let victims: Vec<String> = map
            .range(cap.prefix.clone()..cap.upper.clone())
            .rev()
            .take(count.saturating_sub(keep))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &victims {
            map.remove(k);
        }
        cap.added
            .store(count.min(keep), std::sync::atomic::Ordering::Relaxed);
        victims
    }

    // A panic while holding the lock cannot leave the map half-updated (every critical section is
    // one BTreeMap call), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Validate a put and build the entry it would store (expiry from the clock, now).
    pub(crate) fn prepare_put(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Entry> {
        kv_validate::put(key, &value, &options)?;
        let expires_at_ms = options
            .expiration_ttl
            .map(|secs| self.now_ms().saturating_add(secs.saturating_mul(1000)));
        Ok(Entry {
            value,
            metadata: options.metadata,
            expires_at_ms,
        })
    }

    /// Store an already validated entry, replacing any earlier one. Returns the keys evicted to
    /// keep the prefix cap (usually none).
    pub(crate) fn insert(&self, key: String, entry: Entry) -> Vec<String> {
        let mut map = self.write();
        let capped = self.cap.as_ref().filter(|c| key.starts_with(&c.prefix));
        let is_new = map.insert(key, entry).is_none();
        if let (Some(cap), true) = (capped, is_new) {
            use std::sync::atomic::Ordering::Relaxed;
            if cap.added.fetch_add(1, Relaxed) + 1 > cap.max {
                // Evict down to 90 % so the exact count runs once per max/10 inserts.
                return Self::evict(&mut map, cap, cap.max * 9 / 10);
            }
        }
        Vec::new()
    }

    /// Whether `key` is in the index (live or not yet swept).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.read().contains_key(key)
    }

    /// Remove a key (no validation; missing keys are fine).
    pub(crate) fn remove(&self, key: &str) {
        self.write().remove(key);
    }

    /// Apply `f` to the live entry under `key`, dropping the entry if it has expired.
    fn read_live<T>(&self, key: &str, f: impl FnOnce(&Entry) -> T) -> Result<Option<T>> {
        kv_validate::key(key)?;
        let now = self.now_ms();
        match self.read().get(key) {
            None => return Ok(None),
            Some(e) if e.is_live(now) => return Ok(Some(f(e))),
            Some(_) => {}
        }
        // Expired: remove it, unless a put replaced it since we looked.
        let mut map = self.write();
        if map.get(key).is_some_and(|e| !e.is_live(now)) {
            map.remove(key);
        }
        Ok(None)
    }
}

fn encode_cursor(last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_key.as_bytes())
}

/// The key a cursor resumes after; it must be a valid key under `prefix`.
fn decode_cursor(cursor: &str, prefix: &str) -> Result<String> {
    let invalid = || Error::bad_request("invalid list cursor").with_code(Code::InvalidCursor);
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let key = String::from_utf8(bytes).map_err(|_| invalid())?;
    if kv_validate::key(&key).is_err() || !key.starts_with(prefix) {
        return Err(invalid());
    }
    Ok(key)
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.read_live(key, |e| e.value.clone())
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.read_live(key, |e| KvEntry {
            value: e.value.clone(),
            metadata: e.metadata.clone(),
        })
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        let entry = self.prepare_put(key, value, options)?;
        let _evicted = self.insert(key.to_string(), entry);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        kv_validate::key(key)?;
        self.remove(key);
        Ok(())
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let limit = kv_validate::limit(options.limit)?;
        let prefix = options.prefix.unwrap_or_default();
        let after = options
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, &prefix))
            .transpose()?;
        let now = self.now_ms();
        let start = match &after {
            Some(key) => Bound::Excluded(key.as_str()),
            None => Bound::Included(prefix.as_str()),
        };
        let map = self.read();
        let mut matching = map
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, e)| e.is_live(now));
        let keys: Vec<ListKey> = matching
            .by_ref()
            .take(limit)
            .map(|(k, e)| ListKey {
                name: k.clone(),
                expiration: e.expires_at_ms.map(|ms| ms.div_ceil(1000)),
                metadata: e.metadata.clone(),
            })
            .collect();
        // Look one key ahead so the last page never carries a cursor.
        let cursor = match matching.next() {
            Some(_) => keys.last().map(|k| encode_cursor(&k.name)),
            None => None,
        };
        Ok(ListPage { keys, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_cap_evicts_the_greatest_keys_and_spares_other_prefixes() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv = MemoryKv::new(clock).with_prefix_cap("audit:", 100);
        let entry = |v: &'static [u8]| Entry {
            value: Bytes::from_static(v),
            metadata: None,
            expires_at_ms: None,
        };
        kv.insert("cred:x".into(), entry(b"keep"));
        for i in 0..1000u32 {
            // Audit ids sort newest first: a decreasing number is a newer event.
            kv.insert(format!("audit:{:07}", 9_999_999 - i), entry(b"e"));
        }
        let map = kv.read();
        let audit: Vec<&String> = map.keys().filter(|k| k.starts_with("audit:")).collect();
        assert!(audit.len() <= 100, "{}", audit.len());
        assert_eq!(audit[0], "audit:9999000", "the newest event is kept");
        assert!(map.contains_key("cred:x"));
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_the_prefix() {
        let c = encode_cursor("cred:github/é");
        assert_eq!(
            decode_cursor(&c, "cred:").ok().as_deref(),
            Some("cred:github/é")
        );
        let wrong_prefix = decode_cursor(&c, "key:");
        assert!(matches!(wrong_prefix, Err(e) if e.code() == Code::InvalidCursor));
        let empty_key = decode_cursor("", "");
        assert!(matches!(empty_key, Err(e) if e.code() == Code::InvalidCursor));
    }

    #[test]
    fn entry_debug_never_shows_the_value() {
        let e = Entry {
            value: Bytes::from_static(b"top-secret-ciphertext"),
            metadata: None,
            expires_at_ms: None,
        };
        assert!(!format!("{e:?}").contains("top-secret"));
    }
}
