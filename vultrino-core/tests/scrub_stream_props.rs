//! Properties of the streaming scrubbers: however a body is cut into chunks, what reaches the
//! client is exactly what the whole-body scrubber (the oracle) makes of the whole body.
//!
//! Inputs are built from a small alphabet and from pieces of the secrets' encodings (whole and cut
//! short) so that partial matches, overlapping needles and matches across chunk boundaries are
//! the common case, not the rare one.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use proptest::prelude::*;
use vultrino_core::scrub::{Scrubber, StreamScrubber, REDACTED};

/// Encodings a secret may be echoed in (independent of scrub.rs: base64, url and serde_json).
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    let json = quoted[1..quoted.len() - 1].to_string();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let pct: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        secret.as_bytes().to_vec(),
        STANDARD.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        STANDARD.encode(format!("u:{secret}")).into_bytes(),
        form.into_bytes(),
        pct.into_bytes(),
        json.clone().into_bytes(),
        json.replace('/', "\\/").into_bytes(),
    ]
}

/// Run `input` through a stream scrubber in chunks of the given sizes (cycled; 0 = empty chunk).
fn stream(s: &Arc<Scrubber>, input: &[u8], sizes: &[usize], owned: bool) -> (Vec<u8>, usize) {
    let mut st = StreamScrubber::new(s.clone());
    let mut out = Vec::new();
    let mut max_held = 0;
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let part = if owned {
            st.push_bytes(Bytes::copy_from_slice(chunk))
        } else {
            st.push(chunk)
        };
        out.extend_from_slice(&part);
        max_held = max_held.max(st.held_len());
        rest = tail;
        i += 1;
        if i > input.len() * 4 + 8 {
            // Only zero-size chunks: feed the rest at once.
            out.extend_from_slice(&st.push(rest));
            break;
        }
    }
    out.extend_from_slice(&st.finish());
    (out, max_held)
}

fn secret() -> impl Strategy<Value = String> {
    // A small alphabet: needles overlap each other and the surrounding text often.
    prop_oneof![
        "[ab/ %+\"]{1,10}",
        "[a-z0-9_-]{6,24}",
        "[ -~]{1,16}",
        prop::collection::vec(any::<char>(), 1..6).prop_map(|v| v.into_iter().collect()),
    ]
}

/// A body: text from the same small alphabet, whole encodings and encodings cut short.
fn body(forms: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = forms.len();
    let piece = prop_oneof![
        "[ab/ %+=\"\\\\A-Za-z0-9]{0,6}".prop_map(String::into_bytes),
        (0..n).prop_map({
            let forms = forms.clone();
            move |i| forms[i].clone()
        }),
        (0..n, 0usize..64).prop_map(move |(i, cut)| {
            let f = &forms[i];
            f[..cut.min(f.len())].to_vec()
        }),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

fn case() -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
    prop::collection::vec(secret(), 1..3).prop_flat_map(|secrets| {
        let all: Vec<Vec<u8>> = secrets.iter().flat_map(|s| forms(s)).collect();
        (Just(secrets), body(all))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The oracle property, for arbitrary chunkings (including empty and one-byte chunks).
    #[test]
    fn any_chunking_gives_the_whole_body_result(
        (secrets, input) in case(),
        sizes in prop::collection::vec(0usize..40, 1..8),
        owned in any::<bool>(),
    ) {
        let s = Arc::new(Scrubber::new(secrets.iter().map(|s| s.as_bytes())));
        let oracle = s.scrub(&input).into_owned();
        let (out, _) = stream(&s, &input, &sizes, owned);
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&oracle));
    }

    /// Every split offset of a body that holds each form of the secret, next to overlapping
    /// copies of itself.
    #[test]
    fn every_two_chunk_split_gives_the_whole_body_result(
        secret in secret(),
        filler in "[ab/ %+=\"A-Za-z0-9]{0,4}",
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let mut input = Vec::new();
        for f in forms(&secret) {
            input.extend_from_slice(filler.as_bytes());
            input.extend_from_slice(&f);
            // The same form again, overlapping the first by all but one byte where possible.
            input.extend_from_slice(&f[f.len().min(1)..]);
            input.extend_from_slice(&f[..f.len() / 2]);
        }
        let oracle = s.scrub(&input).into_owned();
        for at in 0..=input.len() {
            for owned in [false, true] {
                let (out, _) = stream(&s, &input, &[at, input.len()], owned);
                prop_assert_eq!(&out, &oracle, "split at {}", at);
            }
        }
    }

    /// The held-back tail is bounded by the longest encoding of a secret, whatever the input.
    #[test]
    fn memory_held_is_bounded(
        (secrets, input) in case(),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        let s = Arc::new(Scrubber::new(secrets.iter().map(|s| s.as_bytes())));
        let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        // The longest needle is the `\uXXXX` or `%XX` escaping: at most 6 bytes per input byte.
        let (_, held) = stream(&s, &input, &sizes, false);
        prop_assert!(held < 6 * longest + 4, "held {} for a {}-byte secret", held, longest);
    }

    /// A clean body comes out byte-identical, and without a copy when handed over as `Bytes`.
    #[test]
    fn clean_input_passes_through_identical_and_uncopied(
        secret in "[A-Z]{8,40}",
        chunks in prop::collection::vec("[a-z0-9 {}\":,]{0,300}", 1..6),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let mut st = StreamScrubber::new(s.clone());
        let mut out = Vec::new();
        for c in &chunks {
            // No encoding of an upper-case secret contains a space, so a chunk ending in one
            // leaves nothing held back.
            let chunk = Bytes::from(format!("{c} "));
            let part = st.push_bytes(chunk.clone());
            prop_assert_eq!(part.as_ptr(), chunk.as_ptr(), "clean chunk was copied");
            prop_assert_eq!(st.held_len(), 0);
            out.extend_from_slice(&part);
        }
        prop_assert!(st.finish().is_empty());
        prop_assert!(!st.scrubbed());
        let whole: String = chunks.iter().map(|c| format!("{c} ")).collect();
        prop_assert_eq!(out, whole.into_bytes());
    }
}

#[test]
fn a_secret_split_at_every_offset_never_reaches_the_output() {
    let secret = "sk-proj-4f9Qa/zT+Lw==";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    for form in forms(secret) {
        let input = [b"data: {\"x\":\"".as_slice(), &form, b"\"}\n\n"].concat();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (out, _) = stream(&s, &input, &[a, b - a, input.len()], false);
                assert!(!contains(&out, &form), "form survived split {a}/{b}");
                assert!(contains(&out, REDACTED.as_bytes()));
            }
        }
    }
}

#[test]
fn only_a_possible_needle_prefix_is_held() {
    let s = Arc::new(Scrubber::new([b"tok3n-value".as_slice()]));
    let mut st = StreamScrubber::new(s);
    assert_eq!(&st.push(b"hello to")[..], b"hello ");
    assert_eq!(st.held_len(), 2, "`to` may become the secret");
    assert_eq!(&st.push(b"day")[..], b"today");
    assert_eq!(st.held_len(), 0);
    assert_eq!(&st.push(b" tok3n-val")[..], b" ");
    assert_eq!(&st.push(b"ue!")[..], b"[REDACTED]!");
    assert!(st.scrubbed());
    assert_eq!(&st.push(b" tok")[..], b" ");
    assert_eq!(&st.finish()[..], b"tok", "the tail is flushed at the end");
}

#[test]
fn overlapping_occurrences_across_chunks_share_one_marker() {
    let s = Arc::new(Scrubber::new([b"abcdef".as_slice(), b"defghi".as_slice()]));
    let mut st = StreamScrubber::new(s);
    let mut out = st.push(b"<abcdef").to_vec();
    out.extend_from_slice(&st.push(b"ghi>"));
    out.extend_from_slice(&st.finish());
    assert_eq!(out, b"<[REDACTED]>");
}

#[test]
fn no_secrets_means_plain_pass_through() {
    let s = Arc::new(Scrubber::new([b"".as_slice()]));
    let mut st = StreamScrubber::new(s);
    let chunk = Bytes::from_static(b"anything at all");
    assert_eq!(st.push_bytes(chunk.clone()).as_ptr(), chunk.as_ptr());
    assert_eq!(&st.push(b"more")[..], b"more");
    assert!(st.finish().is_empty());
}

#[test]
fn debug_shows_no_bytes() {
    let s = Arc::new(Scrubber::new([b"hunter2-secret".as_slice()]));
    let mut st = StreamScrubber::new(s);
    let _ = st.push(b"x hunter2-sec");
    let dbg = format!("{st:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}
