//! [`MemoryKv`]: the in-memory [`KvStore`], and the index [`FileKv`](crate::file_kv::FileKv)
//! persists through.
//!
//! # Decisions
//! - `BTreeMap<String, Entry>` (two: see below) behind a `std::sync::RwLock`: `String` orders
//!   by bytes, which is exactly the KV list order, and a range scan from the prefix (or the
//!   cursor) makes `list` O(log n + page). Gets are the hot path: they take the read lock for
//!   one lookup and clone a [`Bytes`] (a reference-count bump), so reads never wait for each
//!   other. The lock is never held across an `.await`.
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
//! - An optional bound on one prefix ([`MemoryKv::with_prefix_cap`], the audit history) counts
//!   keys AND bytes, in two classes that never evict each other (docs/decisions/0043 and 0045).
//! - The keys under that prefix live in a map of their own ([`Maps`]): the oldest events are
//!   then its last keys, evicted by `pop_last` without a search each, and the other keys (key
//!   records, credentials, read on every request) are looked up in a map without the ten
//!   thousand events (docs/decisions/0113). A listing merges the two in key order.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound as RangeBound;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
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
    /// The value; empty when it is not held in memory (`resident == false`).
    pub(crate) value: Bytes,
    /// The value's length, also when it is not held in memory.
    pub(crate) value_len: usize,
    /// `false`: the value lives on disk only ([`FileKv`](crate::file_kv::FileKv) keeps the
    /// values of its bounded prefix there), and only [`FileKv`](crate::file_kv::FileKv) reads it.
    pub(crate) resident: bool,
    /// Where a non-resident value lives when it is in one of the file store's journal segments
    /// rather than in a file of its own (`None`: its own file).
    pub(crate) segment: Option<SegmentLoc>,
    pub(crate) metadata: Option<serde_json::Value>,
    /// Milliseconds since the epoch; the entry is dead from this instant on.
    pub(crate) expires_at_ms: Option<u64>,
}

impl Entry {
    pub(crate) fn new(
        value: Bytes,
        metadata: Option<serde_json::Value>,
        expires_at_ms: Option<u64>,
    ) -> Self {
        Entry {
            value_len: value.len(),
            value,
            resident: true,
            segment: None,
            metadata,
            expires_at_ms,
        }
    }

    /// The same entry, its value dropped from memory (it lives on disk).
    pub(crate) fn on_disk(mut self) -> Self {
        self.value = Bytes::new();
        self.resident = false;
        self
    }

    /// The same entry, its value dropped from memory: it lives in a journal segment at `loc`.
    pub(crate) fn in_segment(mut self, loc: SegmentLoc) -> Self {
        self = self.on_disk();
        self.segment = Some(loc);
        self
    }

    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// What the entry counts for under a byte bound: key, value and metadata (as JSON).
    fn bytes(&self, key: &str) -> usize {
        let metadata = self.metadata.as_ref().map_or(0, |m| m.to_string().len());
        key.len() + self.value_len + metadata
    }
}

// Values are ciphertexts or other stored state: never printed, only their size.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("value_len", &self.value_len)
            .field("resident", &self.resident)
            .field("has_metadata", &self.metadata.is_some())
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Where a record lives in a journal segment of [`FileKv`](crate::file_kv::FileKv).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SegmentLoc {
    pub(crate) generation: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// What a read found under a key.
pub(crate) enum Found {
    /// The value (and metadata), from memory.
    Resident(KvEntry),
    /// A live entry whose value is on disk only: in its own file (`None`) or in a journal
    /// segment.
    OnDisk(Option<SegmentLoc>),
}

/// The entries, in two maps: those under the bounded prefix (if any) and the others. Every key
/// is in one of them only; [`Maps::range_from`] walks both in key order.
#[derive(Default)]
pub(crate) struct Maps {
    /// The bounded prefix (`None`: no bound, every key in `main`).
    prefix: Option<String>,
    main: BTreeMap<String, Entry>,
    capped: BTreeMap<String, Entry>,
}

impl Maps {
    fn is_capped(&self, key: &str) -> bool {
        self.prefix.as_deref().is_some_and(|p| key.starts_with(p))
    }

    fn of(&self, key: &str) -> &BTreeMap<String, Entry> {
        if self.is_capped(key) {
            &self.capped
        } else {
            &self.main
        }
    }

    fn of_mut(&mut self, key: &str) -> &mut BTreeMap<String, Entry> {
        if self.is_capped(key) {
            &mut self.capped
        } else {
            &mut self.main
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.of(key).get(key)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.of(key).contains_key(key)
    }

    fn insert(&mut self, key: String, entry: Entry) -> Option<Entry> {
        self.of_mut(&key).insert(key, entry)
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        self.of_mut(key).remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.capped.len()
    }

    /// Every entry (each map in key order, not the two merged).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.main.iter().chain(self.capped.iter())
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.iter().map(|(_, e)| e)
    }

    /// The entries from `start` on, in key order across both maps.
    fn range_from<'a>(
        &'a self,
        start: RangeBound<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let mut a = self
            .main
            .range::<str, _>((start, RangeBound::Unbounded))
            .peekable();
        let mut b = self
            .capped
            .range::<str, _>((start, RangeBound::Unbounded))
            .peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some((ka, _)), Some((kb, _))) if kb < ka => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    /// Bound `prefix`: its keys move to a map of their own (back first from an earlier one).
    fn set_prefix(&mut self, prefix: &str, upper: &str) {
        let mut old = std::mem::take(&mut self.capped);
        self.main.append(&mut old);
        let mut moved = self.main.split_off(prefix);
        let mut above = moved.split_off(upper);
        self.main.append(&mut above);
        self.capped = moved;
        self.prefix = Some(prefix.to_string());
    }
}

/// An in-memory [`KvStore`] with Workers KV semantics and limits.
pub struct MemoryKv {
    clock: Arc<dyn Clock>,
    map: RwLock<Maps>,
    /// Optional bound on the keys under one prefix (see [`MemoryKv::with_prefix_cap`]).
    cap: Option<PrefixCap>,
}

/// At most `keys` keys and `bytes` bytes (keys, values and metadata together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub keys: usize,
    pub bytes: usize,
}

/// The bound of one prefix, in two classes: the keys `in_side` picks (audit events of
/// unauthenticated requests) and the others (the rest of the history). Each class is bounded on
/// its own and evicts only its own keys, so filling one never pushes the other out.
#[derive(Debug, Clone, Copy)]
pub struct PrefixBound {
    /// The keys `in_side` does not pick.
    pub main: Bound,
    /// The keys `in_side` picks.
    pub side: Bound,
    pub in_side: fn(&str) -> bool,
}

impl PrefixBound {
    /// One class only: every key under the prefix shares `bound`.
    pub fn single(bound: Bound) -> Self {
        PrefixBound {
            main: bound,
            side: bound,
            in_side: |_| false,
        }
    }
}

/// Keys and bytes held by one class. Changed only under the map's write lock (the atomics only
/// let the cap live outside it).
#[derive(Debug, Default)]
struct Usage {
    keys: AtomicUsize,
    bytes: AtomicUsize,
}

/// The bound of one prefix and what each class holds now (exactly).
#[derive(Debug)]
struct PrefixCap {
    prefix: String,
    /// The smallest string greater than every key with `prefix`.
    upper: String,
    bound: PrefixBound,
    /// `[main, side]`.
    used: [Usage; 2],
}

impl PrefixCap {
    /// The class of `key` (0 main, 1 side), `None` outside the prefix.
    fn class(&self, key: &str) -> Option<usize> {
        key.starts_with(&self.prefix)
            .then(|| usize::from((self.bound.in_side)(key)))
    }

    fn bound_of(&self, class: usize) -> Bound {
        if class == 0 {
            self.bound.main
        } else {
            self.bound.side
        }
    }

    fn add(&self, key: &str, entry: &Entry) {
        if let Some(c) = self.class(key) {
            self.used[c].keys.fetch_add(1, Relaxed);
            self.used[c].bytes.fetch_add(entry.bytes(key), Relaxed);
        }
    }

    fn sub(&self, key: &str, entry: &Entry) {
        if let Some(c) = self.class(key) {
            // Never below zero, even if a size were computed differently (it is not).
            let _ = self.used[c]
                .keys
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
            let bytes = entry.bytes(key);
            let _ = self.used[c]
                .bytes
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(bytes)));
        }
    }

    fn over(&self, class: usize, limit: Bound) -> bool {
        self.used[class].keys.load(Relaxed) > limit.keys
            || self.used[class].bytes.load(Relaxed) > limit.bytes
    }
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
            map: RwLock::new(Maps::default()),
            cap: None,
        }
    }

    /// Bound the keys under an ASCII `prefix` by count and bytes, in two classes (see
    /// [`PrefixBound`]), evicting the lexicographically greatest keys of a class first. A memory
    /// store is for tests, benchmarks and trying things out; without a bound, audit events
    /// (`audit:` keys sort newest first, so the greatest is the oldest) would grow its memory
    /// without limit under sustained traffic (docs/decisions/0024-bounded-audit-history.md,
    /// 0043-audit-events-are-bounded.md).
    pub fn with_prefix_cap(mut self, prefix: &str, bound: PrefixBound) -> Self {
        self.set_prefix_cap(prefix, bound);
        self
    }

    /// [`MemoryKv::with_prefix_cap`] on a store being set up (the file store sets it after
    /// loading, then calls [`MemoryKv::trim_to_cap`]). What the store holds already is counted.
    pub(crate) fn set_prefix_cap(&mut self, prefix: &str, bound: PrefixBound) {
        let mut upper = prefix.to_string();
        let Some(last) = upper.pop() else { return };
        if !last.is_ascii() || last == '\x7f' {
            return;
        }
        upper.push((last as u8 + 1) as char);
        let floor = |b: Bound| Bound {
            keys: b.keys.max(1),
            bytes: b.bytes.max(1),
        };
        let cap = PrefixCap {
            prefix: prefix.to_string(),
            upper,
            bound: PrefixBound {
                main: floor(bound.main),
                side: floor(bound.side),
                in_side: bound.in_side,
            },
            used: Default::default(),
        };
        let maps = self.map.get_mut().unwrap_or_else(PoisonError::into_inner);
        maps.set_prefix(&cap.prefix, &cap.upper);
        for (k, e) in &maps.capped {
            cap.add(k, e);
        }
        self.cap = Some(cap);
    }

    /// Evict the greatest keys of each class over its bound until it is within it; returns the
    /// evicted keys (none without a cap).
    pub(crate) fn trim_to_cap(&self) -> Vec<String> {
        let Some(cap) = &self.cap else {
            return Vec::new();
        };
        let mut map = self.write();
        let mut victims = Self::evict(&mut map, cap, 0, cap.bound.main);
        victims.extend(Self::evict(&mut map, cap, 1, cap.bound.side));
        victims
    }

    /// Evict the greatest keys of `class` until it holds at most `keep`.
    fn evict(map: &mut Maps, cap: &PrefixCap, class: usize, keep: Bound) -> Vec<String> {
        let (mut keys, mut bytes) = (
            cap.used[class].keys.load(Relaxed),
            cap.used[class].bytes.load(Relaxed),
        );
        // How many of the greatest keys go, and whether a key of the other class is among
        // them (then each victim is removed by name; otherwise they are the map's last keys).
        let (mut count, mut mixed) = (0usize, false);
        for (k, e) in map.capped.iter().rev() {
            if keys <= keep.keys && bytes <= keep.bytes {
                break;
            }
            if cap.class(k) == Some(class) {
                count += 1;
                keys = keys.saturating_sub(1);
                bytes = bytes.saturating_sub(e.bytes(k));
            } else {
                mixed = true;
            }
        }
        if !mixed {
            let mut victims = Vec::with_capacity(count);
            for _ in 0..count {
                if let Some((k, e)) = map.capped.pop_last() {
                    cap.sub(&k, &e);
                    victims.push(k);
                }
            }
            return victims;
        }
        let victims: Vec<String> = map
            .capped
            .iter()
            .rev()
            .filter(|(k, _)| cap.class(k) == Some(class))
            .take(count)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &victims {
            if let Some(e) = map.capped.remove(k) {
                cap.sub(k, &e);
            }
        }
        victims
    }

    // A panic while holding the lock cannot leave the map half-updated (every critical section is
    // one BTreeMap call), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
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
        Ok(Entry::new(value, options.metadata, expires_at_ms))
    }

    /// Store an already validated entry, replacing any earlier one. Returns the keys evicted to
    /// keep the prefix bound (usually none).
    pub(crate) fn insert(&self, key: String, entry: Entry) -> Vec<String> {
        let mut map = self.write();
        let Some(cap) = &self.cap else {
            map.insert(key, entry);
            return Vec::new();
        };
        let Some(class) = cap.class(&key) else {
            map.insert(key, entry);
            return Vec::new();
        };
        cap.add(&key, &entry);
        if let Some(old) = map.insert(key.clone(), entry) {
            cap.sub(&key, &old);
        }
        let bound = cap.bound_of(class);
        if cap.over(class, bound) {
            // Evict down to 90 % so that the scan runs once per tenth of the bound.
            let keep = Bound {
                keys: bound.keys * 9 / 10,
                bytes: bound.bytes / 10 * 9,
            };
            return Self::evict(&mut map, cap, class, keep);
        }
        Vec::new()
    }

    /// Entries held (expired ones not yet read included).
    #[doc(hidden)]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is held.
    #[doc(hidden)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is in the index (live or not yet swept).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.read().contains_key(key)
    }

    /// Remove a key (no validation; missing keys are fine).
    pub(crate) fn remove(&self, key: &str) {
        let mut map = self.write();
        Self::take(&mut map, self.cap.as_ref(), key);
    }

    /// Remove `key` from `map`, keeping the prefix bound's count.
    fn take(map: &mut Maps, cap: Option<&PrefixCap>, key: &str) {
        if let (Some(old), Some(cap)) = (map.remove(key), cap) {
            cap.sub(key, &old);
        }
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
            Self::take(&mut map, self.cap.as_ref(), key);
        }
        Ok(None)
    }

    /// The live entry under `key`: its value and metadata when held in memory, or whether it
    /// is on disk only ([`FileKv`](crate::file_kv::FileKv) then reads it).
    pub(crate) fn find(&self, key: &str, with_metadata: bool) -> Result<Option<Found>> {
        self.read_live(key, |e| {
            if e.resident {
                Found::Resident(KvEntry {
                    value: e.value.clone(),
                    metadata: if with_metadata {
                        e.metadata.clone()
                    } else {
                        None
                    },
                })
            } else {
                Found::OnDisk(e.segment)
            }
        })
    }

    /// Whether `key`'s entry (live or not) has a value in a file of its own on disk: not
    /// resident and not in a journal segment.
    pub(crate) fn in_own_file(&self, key: &str) -> bool {
        self.read()
            .get(key)
            .is_some_and(|e| !e.resident && e.segment.is_none())
    }

    /// The journal segments that hold the value of some entry of the index.
    pub(crate) fn segments_in_use(&self) -> std::collections::BTreeSet<u64> {
        self.read()
            .values()
            .filter_map(|e| e.segment.map(|s| s.generation))
            .collect()
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
            Some(key) => RangeBound::Excluded(key.as_str()),
            None => RangeBound::Included(prefix.as_str()),
        };
        let map = self.read();
        let mut matching = map
            .range_from(start)
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

    fn entry(v: &'static [u8]) -> Entry {
        Entry::new(Bytes::from_static(v), None, None)
    }

    /// Keys and bytes a class holds, as the store counts them.
    fn used(kv: &MemoryKv, class: usize) -> (usize, usize) {
        kv.cap.as_ref().map_or((usize::MAX, usize::MAX), |c| {
            (
                c.used[class].keys.load(Relaxed),
                c.used[class].bytes.load(Relaxed),
            )
        })
    }

    fn bound(keys: usize, bytes: usize) -> Bound {
        Bound { keys, bytes }
    }

    #[test]
    fn a_prefix_cap_evicts_the_greatest_keys_and_spares_other_prefixes() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv = MemoryKv::new(clock)
            .with_prefix_cap("audit:", PrefixBound::single(bound(100, usize::MAX)));
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

    /// The bound counts bytes too: a few large values cannot hold more than the byte bound,
    /// however few keys they are.
    #[test]
    fn a_prefix_cap_bounds_the_bytes_held() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv =
            MemoryKv::new(clock).with_prefix_cap("audit:", PrefixBound::single(bound(100, 10_000)));
        static BIG: [u8; 1000] = [b'x'; 1000];
        for i in 0..50u32 {
            kv.insert(format!("audit:{:07}", 9_999_999 - i), entry(&BIG));
        }
        let map = kv.read();
        let held: usize = map
            .iter()
            .filter(|(k, _)| k.starts_with("audit:"))
            .map(|(k, e)| k.len() + e.value.len())
            .sum();
        assert!(held <= 10_000, "{held} bytes held");
        assert!(
            map.contains_key("audit:9999950"),
            "the newest event is kept"
        );
        assert_eq!(used(&kv, 0).1, held, "the count is exact");
    }

    /// Two classes under one prefix: a flood of one never evicts the other, and each stays
    /// within its own bound — over time, not just for one burst.
    #[test]
    fn a_flood_of_side_keys_never_evicts_main_keys() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv = MemoryKv::new(clock).with_prefix_cap(
            "audit:",
            PrefixBound {
                main: bound(100, 100_000),
                side: bound(10, 100_000),
                in_side: |k| k.ends_with("-u"),
            },
        );
        let mut n = 9_999_999u32;
        let mut key = |suffix: &str| {
            n -= 1;
            format!("audit:{n:07}{suffix}")
        };
        let main: Vec<String> = (0..50).map(|_| key("")).collect();
        for k in &main {
            kv.insert(k.clone(), entry(b"e"));
        }
        for round in 0..20 {
            for _ in 0..1000 {
                kv.insert(key("-u"), entry(b"e"));
            }
            let map = kv.read();
            for k in &main {
                assert!(map.contains_key(k), "round {round}: {k} was evicted");
            }
            let side = map.keys().filter(|k| k.ends_with("-u")).count();
            assert!(side <= 10, "round {round}: {side} side keys");
        }
        // And the main class still evicts its own oldest when it overflows.
        let newer: Vec<String> = (0..100).map(|_| key("")).collect();
        for k in &newer {
            kv.insert(k.clone(), entry(b"e"));
        }
        let map = kv.read();
        assert!(newer.iter().rev().take(90).all(|k| map.contains_key(k)));
        assert!(!map.contains_key(&main[0]), "the oldest main key went");
        assert!(map.keys().filter(|k| k.ends_with("-u")).count() > 0);
    }

    /// The bounded prefix lives in a map of its own: a listing still walks every key in key
    /// order across both, page by page, whatever the prefix asked for, and gets, replaces and
    /// deletes find keys on either side.
    #[tokio::test]
    async fn listings_merge_the_bounded_prefix_and_the_rest_in_key_order() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv = MemoryKv::new(clock)
            .with_prefix_cap("audit:", PrefixBound::single(bound(1000, usize::MAX)));
        let names = [
            "a",
            "audit",
            "audit9",
            "audit:",
            "audit:1",
            "audit:2-u",
            "audit:9",
            "audit;",
            "audits",
            "b",
            "cred:x",
            "key:1",
        ];
        // Inserted out of order, some before the bound is set would be too (see set_prefix).
        for n in names.iter().rev() {
            kv.put(n, Bytes::from_static(b"v"), PutOptions::default())
                .await
                .expect("put");
        }
        for prefix in ["", "a", "aud", "audit", "audit:", "audit:2", "b"] {
            for limit in [1, 2, 5, 1000] {
                let mut seen = Vec::new();
                let mut cursor = None;
                loop {
                    let page = kv
                        .list(ListOptions {
                            prefix: Some(prefix.to_string()),
                            cursor: cursor.take(),
                            limit: Some(limit),
                        })
                        .await
                        .expect("list");
                    seen.extend(page.keys.into_iter().map(|k| k.name));
                    match page.cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                let expected: Vec<String> = names
                    .iter()
                    .filter(|n| n.starts_with(prefix))
                    .map(|n| n.to_string())
                    .collect();
                assert_eq!(seen, expected, "prefix {prefix:?}, limit {limit}");
            }
        }
        kv.put("audit:1", Bytes::from_static(b"w"), PutOptions::default())
            .await
            .expect("replace");
        assert_eq!(
            kv.get("audit:1").await.expect("get").as_deref(),
            Some(&b"w"[..])
        );
        kv.delete("audit:1").await.expect("delete");
        kv.delete("cred:x").await.expect("delete");
        assert!(kv.get("audit:1").await.expect("get").is_none());
        assert!(kv.get("cred:x").await.expect("get").is_none());
        assert_eq!(used(&kv, 0).0, 3, "audit:, audit:2-u, audit:9");
        assert_eq!(kv.len(), names.len() - 2);
    }

    /// A bound set on a store that already holds keys (the file store sets it after loading)
    /// moves them under it: they are counted, listed and evicted as if put after.
    #[test]
    fn a_bound_set_after_loading_takes_the_keys_already_held() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let mut kv = MemoryKv::new(clock);
        kv.insert("cred:x".into(), entry(b"keep"));
        for i in 0..20u32 {
            kv.insert(format!("audit:{:07}", 9_999_999 - i), entry(b"e"));
        }
        kv.set_prefix_cap("audit:", PrefixBound::single(bound(10, usize::MAX)));
        assert_eq!(used(&kv, 0).0, 20);
        let evicted = kv.trim_to_cap();
        assert_eq!(evicted.len(), 10);
        assert_eq!(evicted[0], "audit:9999999", "the oldest first");
        assert!(kv.contains("audit:9999980"), "the newest is kept");
        assert!(kv.contains("cred:x"));
        assert_eq!(used(&kv, 0).0, 10);
    }

    #[test]
    fn replacing_and_removing_keep_the_count_exact() {
        let clock: Arc<dyn Clock> = Arc::new(vultrino_core::ports::ManualClock::new(0));
        let kv = MemoryKv::new(clock)
            .with_prefix_cap("audit:", PrefixBound::single(bound(100, usize::MAX)));
        kv.insert("audit:1".into(), entry(b"abc"));
        kv.insert("audit:1".into(), entry(b"abcdef"));
        kv.insert("audit:2".into(), entry(b"x"));
        kv.insert("other".into(), entry(b"not counted"));
        assert_eq!(used(&kv, 0), (2, 7 + 6 + 7 + 1));
        kv.remove("audit:1");
        assert_eq!(used(&kv, 0), (1, 8));
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
        let e = entry(b"top-secret-ciphertext");
        assert!(!format!("{e:?}").contains("top-secret"));
    }
}
