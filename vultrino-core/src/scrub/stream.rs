//! [`StreamScrubber`]: the whole-body [`Scrubber`] applied to a body that arrives in chunks.
//!
//! # Equivalence with the whole-body scrubber
//!
//! The output of a stream, all `push` results followed by `finish`, is byte for byte what
//! [`Scrubber::scrub`] returns for the concatenated input, however the input is chunked
//! (property-tested in `vultrino-core/tests/scrub_stream_props.rs` against `scrub` as the oracle).
//! That holds because the whole-body result depends only on the set of needle occurrences: the
//! union of `[start, start + len)` over every occurrence of every needle, overlapping ones merged
//! into one marker, adjacent ones kept apart. Whether a byte belongs to that set is known as soon
//! as every occurrence that could cover it is known.
//!
//! # What is held back
//!
//! A position `p` of the input seen so far (length `L`) is *undecided* when `input[p..L]` is a
//! proper prefix of some needle: later bytes may still make a needle start there, or a longer one
//! than what already matches. Everything before the first undecided position is final and is
//! emitted; the rest (at most the longest needle minus one byte) is held. A redaction whose end
//! reaches into the held bytes has its marker emitted at once; the scrubber remembers where the
//! redaction ends so that an occurrence found later that starts before that end joins it (no second
//! marker), exactly as the whole-body merge would.
//!
//! The same holds for the occurrences of the *unescaped view* (JSON `\u00XX` escapes of ASCII
//! read as the character; see the module doc of `scrub`): a position is also undecided when the
//! view from it is a proper prefix of a needle, or reaches an escape that later bytes may still
//! complete; and the held bytes never start inside an escape, so the view of the held bytes is
//! the tail of the view of the whole body.
//!
//! Memory held: at most the longest needle minus one byte when the tail holds no backslash; with
//! escapes, at most 6 bytes (an escape) per character of the longest needle. Plus the output of
//! the current call.
//! Why this design: docs/decisions/0070-stream-scrubbing-equals-whole-body.md.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{ascii_escape, partial_escape_start, unescape_ascii, Scrubber, ESCAPE_LEN, REDACTED};

/// Streaming form of [`Scrubber`]: feed chunks with [`push`](StreamScrubber::push), emit what it
/// returns, and end with [`finish`](StreamScrubber::finish). `Debug` shows no bytes.
pub struct StreamScrubber {
    scrubber: Arc<Scrubber>,
    tail: Tail,
    /// Bytes received but not yet emitted: every undecided position is in here.
    held: BytesMut,
    /// Absolute stream offset of `held[0]`.
    held_at: u64,
    /// Absolute end of the last redaction whose marker was already emitted. Bytes before it are
    /// never emitted; an occurrence starting before it extends it without a new marker.
    redacted_to: u64,
    scrubbed: bool,
}

impl std::fmt::Debug for StreamScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamScrubber")
            .field("held_bytes", &self.held.len())
            .field("scrubbed", &self.scrubbed)
            .finish_non_exhaustive()
    }
}

/// What one scan of the pending bytes decided (offsets relative to the scanned slice).
struct Plan {
    /// Merged ranges to replace by a marker, each starting at or after `emit_from` and before
    /// `cut`; the first may start before `emit_from` only when it continues an emitted marker
    /// (then `continues` is true and it produces no marker).
    ranges: Vec<std::ops::Range<usize>>,
    /// Where emission of plain bytes starts (after a redaction already emitted).
    emit_from: usize,
    /// The first undecided position: bytes from here on are held.
    cut: usize,
    /// The first range continues the redaction already emitted.
    continues: bool,
}

impl StreamScrubber {
    /// A stream scrubber removing what `scrubber` removes.
    pub fn new(scrubber: Arc<Scrubber>) -> Self {
        StreamScrubber {
            tail: Tail::new(&scrubber),
            scrubber,
            held: BytesMut::new(),
            held_at: 0,
            redacted_to: 0,
            scrubbed: false,
        }
    }

    /// The whole-body scrubber this one applies.
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    /// Take the next chunk; returns the bytes that are now safe to emit (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.tail.max_needle == 0 {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        self.advance(false)
    }

    /// Like [`push`](StreamScrubber::push) for an owned chunk: when nothing is held from the
    /// previous chunk and nothing in this one is redacted, the result is a slice of `chunk` (no
    /// copy).
    pub fn push_bytes(&mut self, chunk: Bytes) -> Bytes {
        if self.tail.max_needle == 0 {
            return chunk;
        }
        if self.held.is_empty() && self.redacted_to <= self.held_at {
            let plan = self.plan(&chunk, false);
            if plan.ranges.is_empty() {
                self.held.extend_from_slice(&chunk[plan.cut..]);
                self.held_at += plan.cut as u64;
                return chunk.slice(..plan.cut);
            }
        }
        self.push(&chunk)
    }

    /// End of input: the held-back tail, scrubbed. The scrubber is then empty and could take a
    /// new stream.
    pub fn finish(&mut self) -> Bytes {
        if self.tail.max_needle == 0 {
            return Bytes::new();
        }
        let out = self.advance(true);
        self.held = BytesMut::new();
        self.held_at = 0;
        self.redacted_to = 0;
        out
    }

    /// True once anything has been replaced by a marker.
    pub fn scrubbed(&self) -> bool {
        self.scrubbed
    }

    /// How many bytes are held back right now (never more than the longest needle minus one).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Scan `held`, emit what is decided, keep the rest.
    fn advance(&mut self, at_end: bool) -> Bytes {
        let plan = self.plan(&self.held, at_end);
        if plan.ranges.is_empty() && plan.emit_from == 0 {
            // Clean: hand out the decided prefix without copying it.
            let out = self.held.split_to(plan.cut).freeze();
            self.held_at += plan.cut as u64;
            return out;
        }
        let mut out = BytesMut::with_capacity(plan.cut + plan.ranges.len() * REDACTED.len());
        let mut pos = plan.emit_from;
        for (i, r) in plan.ranges.iter().enumerate() {
            if !(i == 0 && plan.continues) {
                out.put_slice(self.held.get(pos..r.start).unwrap_or_default());
                out.put_slice(REDACTED.as_bytes());
                self.scrubbed = true;
            }
            pos = pos.max(r.end);
            self.redacted_to = self.redacted_to.max(self.held_at + r.end as u64);
        }
        if pos < plan.cut {
            out.put_slice(self.held.get(pos..plan.cut).unwrap_or_default());
        }
        let _ = self.held.split_to(plan.cut);
        self.held_at += plan.cut as u64;
        out.freeze()
    }

    /// Decide what of `data` (starting at absolute offset `held_at`) can be emitted.
    fn plan(&self, data: &[u8], at_end: bool) -> Plan {
        let cut = if at_end {
            data.len()
        } else {
            self.tail.first_undecided(&self.scrubber, data)
        };
        // Bytes before `redacted` are covered by a marker already emitted.
        let redacted = usize::try_from(self.redacted_to.saturating_sub(self.held_at))
            .unwrap_or(usize::MAX)
            .min(data.len());
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        let mut continues = false;
        // As in `Scrubber::ranges`: every start position gets its longest needle. Only starts
        // before `cut` are decided; the others are found again on a later call.
        for m in self.scrubber.occurrences(data, cut) {
            match ranges.last_mut() {
                Some(last) if m.start < last.end => last.end = last.end.max(m.end),
                None if m.start < redacted => {
                    continues = true;
                    ranges.push(m.start..m.end.max(redacted));
                }
                _ => ranges.push(m),
            }
        }
        Plan {
            ranges,
            emit_from: redacted.min(cut),
            cut,
            continues,
        }
    }
}

/// What is needed to tell which tail of a text may still become a needle.
pub(super) struct Tail {
    /// Length of the longest needle (0: nothing to scrub).
    pub(super) max_needle: usize,
    /// `starts[b]`: some needle begins with byte `b` (a cheap filter before the prefix test).
    starts: [bool; 256],
}

impl Tail {
    pub(super) fn new(scrubber: &Scrubber) -> Tail {
        let mut starts = [false; 256];
        let mut max_needle = 0;
        for n in &scrubber.needles {
            if let Some(&b) = n.first() {
                starts[usize::from(b)] = true;
            }
            max_needle = max_needle.max(n.len());
        }
        Tail { max_needle, starts }
    }

    /// The first position `p` from which later bytes may still make an occurrence start, or
    /// `data.len()`: where `data[p..]` is a proper prefix of some needle, or its unescaped view
    /// (`\u00XX` escapes of ASCII read as the character, an escape not yet complete at the end
    /// standing for any character) is. Never inside a complete escape, so the bytes held always
    /// start where the unescaped view of the whole text has a character. Only the last
    /// `ESCAPE_LEN × max_needle` positions can be undecided.
    pub(super) fn first_undecided(&self, scrubber: &Scrubber, data: &[u8]) -> usize {
        let mut cut = self.undecided_in(scrubber, data);
        let lo = data
            .len()
            .saturating_sub(ESCAPE_LEN * self.max_needle.saturating_sub(1) + ESCAPE_LEN);
        let window = data.get(lo..).unwrap_or_default();
        if memchr::memchr(b'\\', window).is_some() {
            // An escape still incomplete at the end may become any character: hold from it, and
            // from wherever the text before it, unescaped, is a proper prefix of a needle.
            let end = partial_escape_start(window).unwrap_or(window.len());
            let before = window.get(..end).unwrap_or_default();
            let p = match unescape_ascii(before) {
                Some(view) => {
                    let d = self.undecided_in(scrubber, &view.text);
                    view.map.get(d).copied().unwrap_or(end)
                }
                None => self.undecided_in(scrubber, before),
            };
            cut = cut.min(lo + p);
        }
        // Back to the start of a complete escape that `cut` falls inside.
        for k in 1..ESCAPE_LEN {
            if cut >= k && ascii_escape(data.get(cut - k..).unwrap_or_default()).is_some() {
                return cut - k;
            }
        }
        cut
    }

    /// The first position `p` where `data[p..]` is a proper prefix of some needle, or
    /// `data.len()`. Only the last `max_needle - 1` positions can be.
    fn undecided_in(&self, scrubber: &Scrubber, data: &[u8]) -> usize {
        let lo = data.len().saturating_sub(self.max_needle.saturating_sub(1));
        for p in lo..data.len() {
            let Some(tail) = data.get(p..) else { break };
            if !tail.first().is_some_and(|&b| self.starts[usize::from(b)]) {
                continue;
            }
            if scrubber
                .needles
                .iter()
                .any(|n| n.len() > tail.len() && n.starts_with(tail))
            {
                return p;
            }
        }
        data.len()
    }
}
