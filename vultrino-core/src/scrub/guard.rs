//! [`KeyGuard`]: the request-body side of "no `vk_` key ever goes upstream".
//!
//! The scrubber removes a credential's secrets from what comes *back*; the guard stops the
//! agent's own key from going *out* in a request body (an SDK that puts its API key in the JSON
//! or form body, a prompt that quotes the agent's environment). It does not redact: a body that
//! carries a key is refused whole, because a body with a hole in it is not the request the agent
//! meant either.
//!
//! # What is matched
//!
//! - **The authenticated key** in every encoding the [`Scrubber`] knows (raw, base64 at any
//!   offset, percent-encoded, JSON-escaped): its needles, built from the key.
//! - **Any key-shaped text**, the key of another agent included: `vk` (or `vt`, an agent
//!   token) then a separator, 16
//!   lowercase hex digits (the key id, [`crate::auth::token::is_key_id`]), a separator, where a
//!   separator is `_`, `%5F` or `%5f` (form encoders that encode `_`). Only this shape, not
//!   `vk_` followed by anything: the body of a request is free text far more often than a
//!   header is, and `vk_` on its own is a common enough substring (`bulk_…`, `walk_…`). The
//!   price is a documented false positive: a body that legitimately holds text like
//!   `vk_0123456789abcdef_` is refused too (docs/proxy.md). A key of another agent in base64 is
//!   not found (it has no fixed text to look for).
//!
//! # Streaming
//!
//! Like [`StreamScrubber`](super::StreamScrubber), the guard holds back only the tail of what it
//! has seen that could still become a match (at most the longest needle, or the longest key
//! shape, minus one byte) and releases the rest at once, so a clean body passes through byte for
//! byte whatever its chunking, with no copy for a chunk when nothing was held before it. Once a
//! match is seen, [`KeyGuard::push`] returns [`KeyFound`] and releases nothing more: the bytes of
//! the match (and everything after) are never released. A match is found whatever chunk
//! boundaries split it (property-tested in `vultrino-core/tests/key_guard_props.rs`).
//!
//! Cost on a clean body: one pass of the key's Aho-Corasick automaton and one `memchr` for `v`
//! with a check of a few bytes at each hit (`scrub_stream/key_guard_*` benchmarks).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::stream::Tail;
use super::Scrubber;

/// The longest key shape: `vk` `%5F` 16 hex `%5F`.
const SHAPE_MAX: usize = 2 + 3 + 16 + 3;

/// The guard saw the agent's key, or a key-shaped string, in the body. Carries nothing of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFound;

/// Finds the agent's key (each encoding) and any `vk_<16 hex>_` in a body, whole
/// ([`KeyGuard::contains`]) or as it streams ([`KeyGuard::push`], [`KeyGuard::finish`]).
/// `Debug` shows no bytes.
pub struct KeyGuard {
    key: Arc<Scrubber>,
    tail: Tail,
    held: BytesMut,
    found: bool,
}

impl std::fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard")
            .field("held_bytes", &self.held.len())
            .field("found", &self.found)
            .finish_non_exhaustive()
    }
}

impl KeyGuard {
    /// A guard for the authenticated `key` (its needles) and every key-shaped string. An empty
    /// `key` guards against the key shape only.
    pub fn new(key: &[u8]) -> KeyGuard {
        KeyGuard::with_needles(Arc::new(Scrubber::new([key])))
    }

    /// A guard for the needles of `key` (a [`Scrubber`] built from the agent's key alone, as
    /// from a cache: building one costs far more than guarding a small body) and every
    /// key-shaped string.
    pub fn with_needles(key: Arc<Scrubber>) -> KeyGuard {
        KeyGuard {
            tail: Tail::new(&key),
            key,
            held: BytesMut::new(),
            found: false,
        }
    }

    /// A guard for key-shaped strings only (where the caller's own key is not at hand).
    pub fn shape_only() -> KeyGuard {
        KeyGuard::new(b"")
    }

    /// Whether `bytes` hold the key (in any encoding) or a key-shaped string.
    pub fn contains(&self, bytes: &[u8]) -> bool {
        has_key_shape(bytes) || self.key.matches(bytes)
    }

    /// Take the next chunk; returns the bytes now known to start no match (possibly empty), or
    /// [`KeyFound`] (then, and on every later call, nothing more is released).
    pub fn push(&mut self, chunk: Bytes) -> Result<Bytes, KeyFound> {
        if self.found {
            return Err(KeyFound);
        }
        if self.held.is_empty() {
            if self.contains(&chunk) {
                return self.trip();
            }
            let cut = self.first_undecided(&chunk);
            self.held.extend_from_slice(&chunk[cut..]);
            return Ok(chunk.slice(..cut));
        }
        self.held.extend_from_slice(&chunk);
        if self.contains(&self.held) {
            return self.trip();
        }
        let cut = self.first_undecided(&self.held);
        Ok(self.held.split_to(cut).freeze())
    }

    /// End of the body: the held tail (it can no longer become a match: every match was looked
    /// for when its bytes came).
    pub fn finish(&mut self) -> Result<Bytes, KeyFound> {
        if self.found {
            return Err(KeyFound);
        }
        Ok(std::mem::take(&mut self.held).freeze())
    }

    /// How many bytes are held back right now.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn trip(&mut self) -> Result<Bytes, KeyFound> {
        self.found = true;
        self.held = BytesMut::new();
        Err(KeyFound)
    }

    /// The first position from which `data` is a proper prefix of a needle or of the key
    /// shape, or `data.len()`.
    fn first_undecided(&self, data: &[u8]) -> usize {
        let shape = shape_undecided(data);
        if self.key.is_empty() {
            return shape;
        }
        shape.min(self.tail.first_undecided(&self.key, data))
    }
}

/// How `s` starts against the key shape.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// A whole key shape starts `s`.
    Whole,
    /// `s` is a proper prefix of a key shape.
    Prefix,
    /// No key shape starts here.
    No,
}

/// A separator at `s[i..]`: `_`, `%5F` or `%5f`; `Ok` with the index after it.
fn separator(s: &[u8], i: usize) -> Result<usize, Shape> {
    match s.get(i) {
        None => Err(Shape::Prefix),
        Some(b'_') => Ok(i + 1),
        Some(b'%') => {
            match s.get(i + 1) {
                None => return Err(Shape::Prefix),
                Some(b'5') => {}
                Some(_) => return Err(Shape::No),
            }
            match s.get(i + 2) {
                None => Err(Shape::Prefix),
                Some(b'f' | b'F') => Ok(i + 3),
                Some(_) => Err(Shape::No),
            }
        }
        Some(_) => Err(Shape::No),
    }
}

fn shape_at(s: &[u8]) -> Shape {
    let run = || -> Result<(), Shape> {
        let mut i = 0;
        // `vk` (an API key) or `vt` (an agent token).
        for want in [&b"v"[..], b"kt"] {
            match s.get(i) {
                None => return Err(Shape::Prefix),
                Some(b) if want.contains(b) => i += 1,
                Some(_) => return Err(Shape::No),
            }
        }
        i = separator(s, i)?;
        for _ in 0..16 {
            match s.get(i) {
                None => return Err(Shape::Prefix),
                Some(b'0'..=b'9' | b'a'..=b'f') => i += 1,
                Some(_) => return Err(Shape::No),
            }
        }
        separator(s, i)?;
        Ok(())
    };
    match run() {
        Ok(()) => Shape::Whole,
        Err(shape) => shape,
    }
}

/// Whether `bytes` hold a key-shaped string (`vk` or `vt`, separator, 16 lowercase hex,
/// separator).
pub fn has_key_shape(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'v', bytes).any(|p| shape_at(&bytes[p..]) == Shape::Whole)
}

/// The first position of `data`'s last `SHAPE_MAX - 1` bytes from which it is a proper prefix
/// of the key shape, or `data.len()`.
fn shape_undecided(data: &[u8]) -> usize {
    let lo = data.len().saturating_sub(SHAPE_MAX - 1);
    memchr::memchr_iter(b'v', &data[lo..])
        .map(|p| lo + p)
        .find(|&p| shape_at(&data[p..]) == Shape::Prefix)
        .unwrap_or(data.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_key_shape_and_its_prefixes() {
        for whole in [
            &b"vk_0123456789abcdef_"[..],
            b"vk%5F0123456789abcdef%5Fs",
            b"vk%5f0123456789abcdef_",
            b"x=vk_0123456789abcdef_secret",
            b"vt_0123456789abcdef_",
            b"x=vt%5F0123456789abcdef%5Fsecret",
        ] {
            assert!(has_key_shape(whole), "{:?}", String::from_utf8_lossy(whole));
        }
        for clean in [
            &b"vk_"[..],
            b"vk_0123456789abcdef",
            b"vk_0123456789ABCDEF_",
            b"vk_0123456789abcde_",
            b"VK_0123456789abcdef_",
            b"vk-0123456789abcdef_",
            b"vk%5G0123456789abcdef_",
            b"bulk_insert walk_on",
            b"vt_0123456789abcdef",
            b"vx_0123456789abcdef_",
        ] {
            assert!(
                !has_key_shape(clean),
                "{:?}",
                String::from_utf8_lossy(clean)
            );
        }
        assert_eq!(shape_at(b"v"), Shape::Prefix);
        assert_eq!(shape_at(b"vk%5"), Shape::Prefix);
        assert_eq!(shape_at(b"vk_0123456789abcdef%"), Shape::Prefix);
        assert_eq!(shape_at(b"vx"), Shape::No);
        assert_eq!(shape_undecided(b"abc vk_01"), 4);
        assert_eq!(shape_undecided(b"abc vk_0x"), 9);
    }

    #[test]
    fn a_guard_without_a_key_holds_only_key_shape_prefixes() {
        let mut g = KeyGuard::shape_only();
        assert_eq!(
            &g.push(Bytes::from_static(b"hello v")).unwrap()[..],
            b"hello "
        );
        assert_eq!(g.held_len(), 1);
        assert_eq!(&g.push(Bytes::from_static(b"ery")).unwrap()[..], b"very");
        assert_eq!(&g.push(Bytes::from_static(b" vk_0123")).unwrap()[..], b" ");
        assert_eq!(g.push(Bytes::from_static(b"456789abcdef_x")), Err(KeyFound));
        assert_eq!(g.push(Bytes::from_static(b"more")), Err(KeyFound));
        assert_eq!(g.finish(), Err(KeyFound));
    }

    #[test]
    fn debug_shows_no_bytes() {
        let g = KeyGuard::new(b"vk_0123456789abcdef_topsecret");
        let shown = format!("{g:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("vk_"),
            "{shown}"
        );
    }
}
