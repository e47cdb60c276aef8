//! Removing a credential's secrets from an upstream response before it reaches the agent.
//!
//! An upstream may echo the credential back: an error page quoting the `Authorization` header, a
//! debug endpoint dumping the request, a JSON body with the token in it. The agent must never see
//! the secret, so every response header and the body pass through a [`Scrubber`] built from the
//! secret values of the credential used for that request.
//!
//! # What is matched
//!
//! For each secret the scrubber derives a set of *needles*, so that the secret does not survive in
//! any of these encodings:
//!
//! - **raw bytes**;
//! - **base64**, standard and URL-safe alphabets, padded and unpadded, and *embedded at any offset*
//!   in a larger base64 string (`Basic base64(user:secret)`, a base64-encoded JSON body). For each
//!   of the three byte alignments the needle is the stable middle of the encoding — the characters
//!   whose 6 bits all come from the secret; the one or two characters at each end that also depend
//!   on neighbouring bytes are dropped. A middle shorter than 4 characters is skipped: it would
//!   redact random text while protecting almost nothing. The std-alphabet forms also get a variant
//!   with `\/` for `/`, as some JSON encoders write it;
//! - **URL (percent) encoding**: every byte outside the unreserved set encoded, for the unreserved
//!   sets of RFC 3986, RFC 3986 plus `/` (Python's `quote`), WHATWG form encoding (also Java's `URLEncoder`),
//!   JavaScript's `encodeURIComponent` and letters-and-digits only; with `%20` and with `+` for space; upper- and lower-case hex digits; and
//!   the fully percent-encoded form;
//! - **JSON string escaping** as serde_json writes it (`\"`, `\\`, `\n`…, `\u00XX` for other
//!   control characters), plus the variants `\/` for `/`, `\uXXXX` (lower- and upper-case hex, with
//!   surrogate pairs) for non-ASCII, and Go's HTML-safe `\u003c \u003e \u0026`;
//! - **JSON `\u00XX` escapes of ASCII characters, anywhere**: every needle is also matched
//!   against the *unescaped view* of the input, in which each `\u00XX` below `\u0080` (either
//!   hex case) reads as its character, as a JSON client reads it. `\u0073k-…`, `abc\u002Bdef`
//!   (.NET escapes `+` and `'`) or a secret with every character escaped are the secret to the
//!   client, and a needle per combination of escaped characters would be exponential. A match
//!   there redacts the bytes that spell it, escapes included, so a JSON string stays valid. The
//!   escape is recognised even after a backslash (`\\u0073`, which JSON reads as `\` and
//!   `u0073`): that keeps the view independent of where a stream's chunk starts, and only ever
//!   redacts more (docs/decisions/0066-sse-and-escapes-fail-closed.md).
//!
//! Matching is ASCII-case-sensitive. The only case-insensitive encoding, percent-encoding's hex
//! digits, is handled by generating both cases (a single needle mixing cases is not covered).
//! Not covered either: compositions of encodings (base64 then percent-encoded), line-wrapped base64,
//! hex, or any deliberate transformation by a hostile upstream. Scrubbing protects against
//! *accidental reflection*; the credential's host policy is what stops deliberate exfiltration.
//!
//! # How overlapping matches are resolved
//!
//! Every position where any needle starts is found (left to right, the longest needle starting
//! there), and the **union** of all those matches is redacted: overlapping matches merge into one
//! [`REDACTED`] marker, adjacent ones stay separate. This is stricter than a plain
//! "longest first, non-overlapping" scan, which would leave the tail of a second secret that
//! overlaps the first.
//!
//! # Short secrets
//!
//! A secret shorter than 4 bytes is still scrubbed in its raw and fully-encoded forms even though
//! this redacts every occurrence of, say, `ab` in the body: a user's secret is a secret, and we do
//! not second-guess which values are "too short to matter". The price is that the body can grow (at
//! most `REDACTED.len()` bytes per input byte for a one-byte secret); a sane credential never has
//! such a secret.
//!
//! # Streams
//!
//! [`StreamScrubber`] gives the same result on a body that arrives in chunks, holding back only a
//! tail that may still become a needle; [`SseScrubber`] also follows the text a client joins
//! across the events of a `text/event-stream` (docs/decisions/0069-sse-event-level-scrubbing.md).
//! [`KeyGuard`] uses the same needles the other way round: it finds the agent's own key in a
//! request body before the body goes upstream (docs/decisions/0064-agent-key-in-request-body.md).
//!
//! # Performance and memory hygiene
//!
//! The needles go into one Aho-Corasick automaton (leftmost-longest, with its SIMD literal
//! prefilter on x86_64/aarch64), so a clean body costs a single pass and no allocation (plus a
//! `memchr` for a backslash; the unescaped view is built only when an escape is found); the
//! target is a clean 64 KiB body in well under 100 µs with a typical credential (~10–40
//! needles), measured by the `scrub/clean_64k_*` benchmarks (benches/README.md). Each match
//! costs one extra search from the byte after its start, so a body full of matches is slower,
//! but still linear in practice. The needles
//! themselves are kept in [`Zeroizing`] buffers and every intermediate encoding is built in one;
//! the automaton's internal tables are derived from them and are *not* zeroized on drop — the same
//! is true of the outgoing request's header, which carries the raw secret anyway.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use zeroize::Zeroizing;

mod guard;
mod sse;
mod stream;
pub use guard::{has_key_shape, KeyFound, KeyGuard};
pub use sse::{SseScrubber, SSE_HOLD_LIMIT};
pub use stream::StreamScrubber;

/// The marker that replaces every redacted run.
pub const REDACTED: &str = "[REDACTED]";

/// Base64 needles (alignment middles) shorter than this are skipped.
const MIN_B64_MIDDLE: usize = 4;

/// Built once per execute from the secret values of one credential (API key, password,
/// `user:pass`, OAuth access token, client secret…). Holds the needles in [`Zeroizing`] buffers;
/// `Debug` prints only the needle count.
pub struct Scrubber {
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// `None` when there are no needles, or (never expected with realistic secrets) when the
    /// automaton could not be built; [`Scrubber::naive_find`] then takes over.
    matcher: Option<AhoCorasick>,
    /// The length of the shortest needle: fewer bytes than this hold no match (nor does their
    /// unescaped view, which is never longer), so they are not searched.
    shortest: usize,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles.len())
            .finish_non_exhaustive()
    }
}

impl Scrubber {
    /// Derive the needles of every secret (empty secrets are ignored) and build the matcher.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Scrubber {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for secret in secrets {
            if !secret.is_empty() {
                derive_needles(secret, &mut needles);
            }
        }
        let matcher = if needles.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                // A contiguous NFA builds far faster than the DFA the builder would pick for a
                // few dozen needles, and a scrubber is built for each new set of secrets
                // (benches/README.md, "Local: figures behind single lines of code").
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(needles.iter().map(|n| n.as_slice()))
                .ok()
        };
        let shortest = needles.iter().map(|n| n.len()).min().unwrap_or(0);
        Scrubber {
            needles,
            matcher,
            shortest,
        }
    }

    /// True when there is nothing to scrub (no non-empty secret was given).
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// How many distinct needles were derived (for diagnostics and tests; never the needles).
    pub fn needle_count(&self) -> usize {
        self.needles.len()
    }

    /// True when `input` contains any encoding of any secret (also behind JSON `\u00XX`
    /// escapes of ASCII characters). Allocation-free when `input` has no such escape.
    pub fn matches(&self, input: &[u8]) -> bool {
        self.next_match(input, 0).is_some() || !self.escaped_matches(input, usize::MAX).is_empty()
    }

    /// Replace every occurrence of every needle with [`REDACTED`]. Returns `Cow::Borrowed` when
    /// nothing matched (hot path: no allocation when the body is clean).
    pub fn scrub<'b>(&self, input: &'b [u8]) -> Cow<'b, [u8]> {
        let ranges = self.ranges(input);
        if ranges.is_empty() {
            return Cow::Borrowed(input);
        }
        Cow::Owned(splice(input, &ranges))
    }

    /// Like [`Scrubber::scrub`] for text. The output stays valid UTF-8: a match that starts or ends
    /// inside a multi-byte character (possible only for secrets that are not themselves UTF-8)
    /// is widened to redact the whole character.
    pub fn scrub_str<'b>(&self, input: &'b str) -> Cow<'b, str> {
        let mut ranges = self.ranges(input.as_bytes());
        if ranges.is_empty() {
            return Cow::Borrowed(input);
        }
        for r in &mut ranges {
            while !input.is_char_boundary(r.start) {
                r.start -= 1;
            }
            while !input.is_char_boundary(r.end) {
                r.end += 1;
            }
        }
        let ranges = merge(ranges);
        let mut out = String::with_capacity(input.len() + ranges.len() * REDACTED.len());
        let mut pos = 0;
        for r in ranges {
            // Both ends are char boundaries (widened above), so slicing cannot panic.
            out.push_str(input.get(pos..r.start).unwrap_or_default());
            out.push_str(REDACTED);
            pos = r.end;
        }
        out.push_str(input.get(pos..).unwrap_or_default());
        Cow::Owned(out)
    }

    /// The merged (sorted, non-overlapping) byte ranges to redact.
    fn ranges(&self, input: &[u8]) -> Vec<Range<usize>> {
        merge(self.occurrences(input, usize::MAX))
    }

    /// Every occurrence starting before `upto`, sorted by start (not merged): in the bytes as
    /// they are, each start position with its longest needle; and in the *unescaped view* (see
    /// [`unescape_ascii`]), each start with its longest needle, mapped back to the bytes that
    /// spell it.
    pub(crate) fn occurrences(&self, input: &[u8], upto: usize) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut from = 0;
        // Restarting one byte after each match start (not at its end) finds the matches that
        // overlap it; for each start position we get the longest needle starting there, whose
        // union with the others covers every needle occurrence.
        while let Some(m) = self.next_match(input, from) {
            if m.start >= upto {
                break;
            }
            from = m.start + 1;
            ranges.push(m);
        }
        let escaped = self.escaped_matches(input, upto);
        if !escaped.is_empty() {
            ranges.extend(escaped);
            ranges.sort_unstable_by_key(|r| (r.start, r.end));
        }
        ranges
    }

    /// The occurrences that only the unescaped view shows (raw ranges, starting before `upto`).
    /// Empty, without allocating, when `input` holds no `\u00XX` escape of an ASCII character.
    fn escaped_matches(&self, input: &[u8], upto: usize) -> Vec<Range<usize>> {
        let Some(view) = unescape_ascii(input) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(m) = self.next_match(&view.text, from) {
            from = m.start + 1;
            let (Some(&start), Some(&end)) = (view.map.get(m.start), view.map.get(m.end)) else {
                break;
            };
            if start >= upto {
                break;
            }
            // A match that spans no escape is also one of the bytes as they are.
            if end - start != m.end - m.start {
                out.push(start..end);
            }
        }
        out
    }

    /// The leftmost match starting at or after `from`, the longest one at that position.
    fn next_match(&self, input: &[u8], from: usize) -> Option<Range<usize>> {
        if from >= input.len() || self.needles.is_empty() || input.len() - from < self.shortest {
            return None;
        }
        match &self.matcher {
            Some(ac) => match ac.try_find(Input::new(input).range(from..)) {
                Ok(m) => m.map(|m| m.range()),
                Err(_) => self.naive_find(input, from),
            },
            None => self.naive_find(input, from),
        }
    }

    /// Quadratic fallback with the same semantics as the automaton; never used in practice.
    fn naive_find(&self, input: &[u8], from: usize) -> Option<Range<usize>> {
        (from..input.len()).find_map(|start| {
            let rest = input.get(start..)?;
            let len = self
                .needles
                .iter()
                .filter(|n| rest.starts_with(n))
                .map(|n| n.len())
                .max()?;
            Some(start..start + len)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The unescaped view: JSON `\u00XX` escapes of ASCII characters read as the character

/// Bytes of a JSON escape of one ASCII character: `\u00` and two hex digits below `80`.
pub(crate) const ESCAPE_LEN: usize = 6;

/// The ASCII character that `s` starts with the JSON escape of, if it does.
///
/// The escape is recognised wherever it appears, even after another backslash (`\\u0073` is,
/// to JSON, a backslash and the text `u0073`): recognising it depends only on the six bytes, so
/// the view is the same whichever byte a stream's held part starts at, and reading too many
/// escapes can only redact more.
pub(crate) fn ascii_escape(s: &[u8]) -> Option<u8> {
    match s {
        [b'\\', b'u', b'0', b'0', hi @ b'0'..=b'7', lo, ..] => {
            let lo = char::from(*lo).to_digit(16)?;
            Some(((hi - b'0') << 4) | lo as u8)
        }
        _ => None,
    }
}

/// Where `s` ends with the beginning of an ASCII escape that later bytes may complete (`\`,
/// `\u`, `\u0`, `\u00`, `\u00` and a digit below 8), if it does.
pub(crate) fn partial_escape_start(s: &[u8]) -> Option<usize> {
    let lo = s.len().saturating_sub(ESCAPE_LEN - 1);
    (lo..s.len()).find(|&p| {
        let tail = s.get(p..).unwrap_or_default();
        tail.iter().zip(b"\\u00").all(|(a, b)| a == b)
            && tail.get(4).is_none_or(|d| (b'0'..=b'7').contains(d))
    })
}

/// `text` with its ASCII escapes decoded, and where each of its bytes starts in the input.
pub(crate) struct Unescaped {
    pub(crate) text: Vec<u8>,
    /// `map[i]`: the input offset of `text[i]`; one more entry, the input's length.
    pub(crate) map: Vec<usize>,
}

/// The *unescaped view* of `input`: every JSON `\u00XX` escape of an ASCII character replaced
/// by the character, as a JSON client reads it. `\u0073k-…` is `sk-…` to a client although no
/// needle spells it so, and a secret may have any of its characters escaped (.NET escapes `+`
/// and `'`; an upstream may escape anything), so needles are also matched against this view —
/// one more pass instead of a needle per combination of escaped characters. `None` (no
/// allocation) when `input` has no such escape: the view is then `input` itself.
pub(crate) fn unescape_ascii(input: &[u8]) -> Option<Unescaped> {
    let mut first = None;
    let mut at = 0;
    while let Some(i) = input.get(at..).and_then(|r| memchr::memchr(b'\\', r)) {
        let p = at + i;
        if ascii_escape(input.get(p..).unwrap_or_default()).is_some() {
            first = Some(p);
            break;
        }
        at = p + 1;
    }
    let first = first?;
    let mut text = Vec::with_capacity(input.len());
    let mut map = Vec::with_capacity(input.len() + 1);
    text.extend_from_slice(input.get(..first).unwrap_or_default());
    map.extend(0..first);
    let mut p = first;
    while p < input.len() {
        let rest = input.get(p..).unwrap_or_default();
        if let Some(c) = ascii_escape(rest) {
            text.push(c);
            map.push(p);
            p += ESCAPE_LEN;
            continue;
        }
        // Copy up to the next backslash in one go.
        let n =
            memchr::memchr(b'\\', rest.get(1..).unwrap_or_default()).map_or(rest.len(), |i| i + 1);
        text.extend_from_slice(rest.get(..n).unwrap_or_default());
        map.extend(p..p + n);
        p += n;
    }
    map.push(input.len());
    Some(Unescaped { text, map })
}

/// Sort by start and merge overlapping ranges; adjacent ranges stay separate.
fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start < last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Copy `input` with each (sorted, disjoint, in-bounds) range replaced by the marker.
fn splice(input: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + ranges.len() * REDACTED.len());
    let mut pos = 0;
    for r in ranges {
        out.extend_from_slice(input.get(pos..r.start).unwrap_or_default());
        out.extend_from_slice(REDACTED.as_bytes());
        pos = r.end;
    }
    out.extend_from_slice(input.get(pos..).unwrap_or_default());
    out
}

/// Add `needle` unless it is empty or already present.
fn push_needle(out: &mut Vec<Zeroizing<Vec<u8>>>, needle: Zeroizing<Vec<u8>>) {
    if !needle.is_empty() && !out.iter().any(|n| n.as_slice() == needle.as_slice()) {
        out.push(needle);
    }
}

fn derive_needles(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    push_needle(out, Zeroizing::new(secret.to_vec()));
    base64_needles(secret, out);
    percent_needles(secret, out);
    json_needles(secret, out);
}

// ---------------------------------------------------------------------------------------------
// base64

fn b64_encode(engine: &impl Engine, input: &[u8]) -> Zeroizing<Vec<u8>> {
    // Exact-size buffer, so no reallocation leaves a copy of the encoding behind.
    let len = base64::encoded_len(input.len(), true).unwrap_or(0);
    let mut buf = Zeroizing::new(vec![0u8; len]);
    match engine.encode_slice(input, buf.as_mut_slice()) {
        Ok(n) => buf.truncate(n),
        Err(_) => buf.clear(),
    }
    buf
}

fn base64_needles(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let mut found: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut shifted = Zeroizing::new(Vec::with_capacity(secret.len() + 2));
    for std_alphabet in [true, false] {
        let encode = |bytes: &[u8]| {
            if std_alphabet {
                b64_encode(&STANDARD, bytes)
            } else {
                b64_encode(&URL_SAFE, bytes)
            }
        };
        // The whole secret encoded on its own, padded and unpadded.
        let padded = encode(secret);
        let unpadded_len = padded.iter().take_while(|&&c| c != b'=').count();
        found.push(Zeroizing::new(padded[..unpadded_len].to_vec()));
        found.push(padded);
        // The secret at byte offset `o` of a 3-byte group inside a larger encoding: characters
        // [ceil(8o/6), floor(8(o+n)/6)) carry only the secret's bits.
        for o in 0..3usize {
            shifted.clear();
            shifted.extend(std::iter::repeat_n(0u8, o));
            shifted.extend_from_slice(secret);
            let enc = encode(&shifted);
            let start = (8 * o).div_ceil(6);
            let end = (8 * (o + secret.len())) / 6;
            if end >= start + MIN_B64_MIDDLE {
                if let Some(mid) = enc.get(start..end) {
                    found.push(Zeroizing::new(mid.to_vec()));
                }
            }
        }
    }
    for needle in found {
        if needle.contains(&b'/') {
            let mut escaped = Zeroizing::new(Vec::with_capacity(needle.len() * 2));
            for &c in needle.iter() {
                if c == b'/' {
                    escaped.push(b'\\');
                }
                escaped.push(c);
            }
            push_needle(out, escaped);
        }
        push_needle(out, needle);
    }
}

// ---------------------------------------------------------------------------------------------
// percent-encoding

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Bytes an encoder leaves as they are (besides ASCII letters and digits).
const KEEP_RFC3986: &[u8] = b"-._~";
const KEEP_PYTHON_QUOTE: &[u8] = b"-._~/";
const KEEP_FORM: &[u8] = b"*-._";
const KEEP_JS_COMPONENT: &[u8] = b"-_.!~*'()";
/// Encoders that keep only letters and digits.
const KEEP_ALNUM: &[u8] = b"";

fn percent_encode(
    secret: &[u8],
    keep: Option<&[u8]>,
    plus_space: bool,
    hex: &[u8; 16],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for &b in secret {
        let kept = keep.is_some_and(|k| b.is_ascii_alphanumeric() || k.contains(&b));
        if kept {
            out.push(b);
        } else if plus_space && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
    }
    out
}

fn percent_needles(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    for hex in [HEX_UPPER, HEX_LOWER] {
        for keep in [
            KEEP_RFC3986,
            KEEP_PYTHON_QUOTE,
            KEEP_FORM,
            KEEP_JS_COMPONENT,
            KEEP_ALNUM,
        ] {
            for plus_space in [false, true] {
                push_needle(out, percent_encode(secret, Some(keep), plus_space, hex));
            }
        }
        push_needle(out, percent_encode(secret, None, false, hex));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON string escaping

#[derive(Clone, Copy)]
struct JsonStyle {
    /// `/` written as `\/` (PHP, some Java encoders).
    slash: bool,
    /// Non-ASCII written as `\uXXXX` with this hex alphabet; `None` keeps it as UTF-8.
    unicode: Option<&'static [u8; 16]>,
    /// Go's HTML-safe escaping of `<`, `>`, `&`.
    html: bool,
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16, hex: &[u8; 16]) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(hex[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Escape one ASCII byte (or pass a non-ASCII byte through) the way serde_json does, adjusted
/// by `style`.
fn json_escape_byte(out: &mut Vec<u8>, b: u8, style: JsonStyle, hex: &[u8; 16]) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'/' if style.slash => out.extend_from_slice(b"\\/"),
        b'<' | b'>' | b'&' if style.html => push_u_escape(out, u16::from(b), hex),
        0x00..=0x1f => push_u_escape(out, u16::from(b), hex),
        _ => out.push(b),
    }
}

fn json_escape(secret: &[u8], style: JsonStyle) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 6));
    let control_hex = style.unicode.unwrap_or(HEX_LOWER);
    match style.unicode {
        None => {
            for &b in secret {
                json_escape_byte(&mut out, b, style, control_hex);
            }
        }
        Some(hex) => {
            // `\uXXXX` escapes name code points, so this variant exists only for UTF-8 secrets.
            let text = std::str::from_utf8(secret).ok()?;
            for c in text.chars() {
                if c.is_ascii() {
                    json_escape_byte(&mut out, c as u8, style, hex);
                } else {
                    let mut units = [0u16; 2];
                    for &unit in c.encode_utf16(&mut units).iter() {
                        push_u_escape(&mut out, unit, hex);
                    }
                }
            }
        }
    }
    Some(out)
}

fn json_needles(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    for slash in [false, true] {
        for html in [false, true] {
            for unicode in [None, Some(HEX_LOWER), Some(HEX_UPPER)] {
                if let Some(needle) = json_escape(
                    secret,
                    JsonStyle {
                        slash,
                        unicode,
                        html,
                    },
                ) {
                    push_needle(out, needle);
                }
            }
        }
    }
}

/// Scrubbers by keyed hash of the secrets they remove: building one costs more than the rest of
/// an execute. Keyed by content, so a rotated secret never meets a stale scrubber; bounded
/// (emptied when full), so memory stays flat. See docs/decisions/0020-scrubber-cache.md.
#[derive(Default)]
pub struct ScrubberCache(
    std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<Scrubber>>>,
);

impl ScrubberCache {
    /// Most distinct secret sets kept.
    const MAX_CACHED: usize = 1024;

    /// Scrubbers held.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |c| c.len())
    }

    /// Whether no scrubber is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scrubber for these secrets, from the cache when the same secrets were seen before.
    /// `keys` gives the MAC that names a set of secrets without keeping them.
    pub fn get(&self, keys: &crate::crypto::Keys, secrets: &[&[u8]]) -> std::sync::Arc<Scrubber> {
        let mut material = Zeroizing::new(Vec::new());
        for s in secrets {
            material.extend_from_slice(&(s.len() as u64).to_le_bytes());
            material.extend_from_slice(s);
        }
        let id = keys.mac(crate::crypto::MacPurpose::ScrubberCache, &material);
        if let Ok(cache) = self.0.lock() {
            if let Some(s) = cache.get(&id) {
                return s.clone();
            }
        }
        let built = std::sync::Arc::new(Scrubber::new(secrets.iter().copied()));
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= Self::MAX_CACHED {
                cache.clear();
            }
            cache.insert(id, built.clone());
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(secrets: &[&str], input: &str) -> String {
        let s = Scrubber::new(secrets.iter().map(|s| s.as_bytes()));
        s.scrub_str(input).into_owned()
    }

    #[test]
    fn raw_secret_is_replaced_everywhere() {
        assert_eq!(
            scrub(&["ghp_abc123"], "a ghp_abc123 b ghp_abc123"),
            "a [REDACTED] b [REDACTED]"
        );
    }

    #[test]
    fn basic_auth_header_loses_the_password() {
        let header = format!("Basic {}", STANDARD.encode("alice:s3cr3t-pw"));
        let out = scrub(&["s3cr3t-pw"], &header);
        assert!(out.contains(REDACTED), "{out}");
        let out = scrub(&["alice:s3cr3t-pw"], &header);
        assert_eq!(out, "Basic [REDACTED]");
    }

    #[test]
    fn percent_and_form_encodings_are_scrubbed() {
        let out = scrub(
            &["p@ss w/rd"],
            "a=p%40ss%20w%2Frd&b=p%40ss+w%2frd&c=p%40ss%20w/rd",
        );
        assert_eq!(out, "a=[REDACTED]&b=[REDACTED]&c=[REDACTED]");
    }

    #[test]
    fn json_escaped_secret_is_scrubbed() {
        let secret = "tok\"en\\/é\n";
        let body = serde_json::to_string(&serde_json::json!({ "t": secret })).unwrap_or_default();
        assert_eq!(scrub(&[secret], &body), r#"{"t":"[REDACTED]"}"#);
        assert_eq!(
            scrub(&[secret], r#""tok\"en\\\/\u00e9\n""#),
            r#""[REDACTED]""#
        );
        assert_eq!(
            scrub(&[secret], r#""tok\"en\\\/\u00E9\n""#),
            r#""[REDACTED]""#
        );
    }

    #[test]
    fn json_escapes_of_ascii_characters_are_read_as_the_characters() {
        // .NET escapes `+` by default; a JSON client reads `\u0073` as `s`.
        assert_eq!(
            scrub(&["abc+def"], r#"{"k":"abc\u002Bdef","l":"abc\u002bdef"}"#),
            r#"{"k":"[REDACTED]","l":"[REDACTED]"}"#
        );
        assert_eq!(
            scrub(
                &["secret-tok"],
                r#"a \u0073ecret-tok b \u0073\u0065cret\u002dtok"#
            ),
            "a [REDACTED] b [REDACTED]"
        );
        // Every character escaped (upper-case hex), inside other text.
        let all: String = "secret-tok"
            .bytes()
            .map(|b| format!("\\u{b:04X}"))
            .collect();
        assert_eq!(scrub(&["secret-tok"], &format!("x{all}y")), "x[REDACTED]y");
        // An escape of a non-ASCII character or of nothing is left alone.
        assert_eq!(
            scrub(&["secret-tok"], r#"\u00e9\u00zz\u0073ecret"#),
            r#"\u00e9\u00zz\u0073ecret"#
        );
        let s = Scrubber::new([b"secret-tok".as_slice()]);
        assert!(s.matches(br#"\u0073ecret-tok"#));
    }

    #[test]
    fn empty_secrets_are_ignored() {
        let s = Scrubber::new([b"".as_slice()]);
        assert!(s.is_empty());
        assert!(matches!(s.scrub(b"anything"), Cow::Borrowed(_)));
    }

    #[test]
    fn debug_shows_only_the_needle_count() {
        let s = Scrubber::new([b"hunter2-secret".as_slice()]);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains(&s.needle_count().to_string()), "{dbg}");
    }

    #[test]
    fn short_base64_middles_are_skipped() {
        // A 2-byte secret has no alignment middle of 4+ chars: only its full encodings are needles.
        let s = Scrubber::new([b"\xff\xfe".as_slice()]);
        assert!(
            !s.matches(b"//79"),
            "middle of the offset-1 encoding must not be a needle"
        );
        assert!(s.matches(b"//4="));
    }

    #[test]
    fn non_utf8_secret_inside_a_char_redacts_the_whole_char() {
        // "é" is C3 A9; a secret of the single byte A9 matches inside it.
        let s = Scrubber::new([b"\xa9".as_slice()]);
        assert_eq!(s.scrub_str("café!"), "caf[REDACTED]!");
    }

    /// Inputs are not searched when shorter than the shortest needle: every needle is still
    /// found when it is the whole input or its last bytes (exactly as long as what is left),
    /// raw and `\u00XX`-escaped, and the shortest needle cut by one byte is not redacted.
    #[test]
    fn a_needle_filling_the_input_or_its_tail_is_found() {
        let s = Scrubber::new([b"sk-live-0123456789".as_slice(), b"u:p w".as_slice()]);
        assert!(s.shortest > 0);
        for n in &s.needles {
            for prefix in [&b""[..], b"x", b"{\"k\":\""] {
                let input = [prefix, n.as_slice()].concat();
                let out = s.scrub(&input);
                assert!(
                    out.ends_with(REDACTED.as_bytes()),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
                assert!(!out.windows(n.len()).any(|w| w == n.as_slice()));
            }
        }
        assert_eq!(s.scrub(br"u:p\u0020w"), REDACTED.as_bytes());
        let shortest = s
            .needles
            .iter()
            .map(|n| n.as_slice())
            .min_by_key(|n| n.len());
        let cut = shortest.map(|n| &n[..n.len() - 1]).unwrap_or_default();
        assert_eq!(s.scrub(cut), cut);
    }
}
