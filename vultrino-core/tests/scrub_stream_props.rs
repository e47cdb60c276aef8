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

// ----- SseScrubber ------------------------------------------------------------------------------

use vultrino_core::scrub::SseScrubber;

/// A client's event-stream parser, written from the WHATWG spec (independent of the scrubber):
/// returns each dispatched event's `event` name and data.
fn client_events(stream: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let (mut name, mut data, mut has_data) = (String::new(), String::new(), false);
    let mut rest = text;
    // Only complete lines count; an unterminated last line is discarded, like a client does.
    while let Some(i) = rest.find(['\r', '\n']) {
        let line = &rest[..i];
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
        if line.is_empty() {
            if has_data {
                events.push((std::mem::take(&mut name), std::mem::take(&mut data)));
            }
            name.clear();
            data.clear();
            has_data = false;
        } else if line.starts_with(':') {
        } else {
            let (field, value) = match line.find(':') {
                Some(c) => (
                    &line[..c],
                    line[c + 1..].strip_prefix(' ').unwrap_or(&line[c + 1..]),
                ),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "event" => name = value.to_string(),
                _ => {}
            }
        }
    }
    events
}

/// What an OpenAI SDK shows: the `delta.content` strings joined, per choice index.
fn openai_joined(stream: &[u8], choice: u64) -> String {
    client_events(stream)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .flat_map(|v| {
            v["choices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["index"].as_u64() == Some(choice))
                .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What the Anthropic SDK shows: `content_block_delta` `delta.text` joined, for one block.
fn anthropic_joined(stream: &[u8], block: u64) -> String {
    client_events(stream)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta" && v["index"].as_u64() == Some(block))
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

/// Cut `text` into tokens of the given lengths (cycled, at least 1 char).
fn tokens(text: &str, lens: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < chars.len() {
        let n = lens.get(k % lens.len().max(1)).copied().unwrap_or(1).max(1);
        out.push(chars[i..(i + n).min(chars.len())].iter().collect());
        i += n;
        k += 1;
    }
    out
}

fn openai_event(choice: u64, content: &str) -> String {
    let v = serde_json::json!({"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1,
        "model":"gpt-4o","choices":[{"index":choice,"delta":{"content":content},"finish_reason":null}]});
    format!("data: {v}\n\n")
}

/// An OpenAI stream: choice 0 says `toks`, choice 1 interleaves `other` (when given).
fn openai_stream(toks: &[String], other: &[String]) -> Vec<u8> {
    let mut s = String::new();
    let first = serde_json::json!({"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1,
        "model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]});
    s.push_str(&format!("data: {first}\n\n"));
    for (i, t) in toks.iter().enumerate() {
        s.push_str(&openai_event(0, t));
        if let Some(o) = other.get(i) {
            s.push_str(&openai_event(1, o));
        }
    }
    for c in [0, 1] {
        let end = serde_json::json!({"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1,
            "model":"gpt-4o","choices":[{"index":c,"delta":{},"finish_reason":"stop"}]});
        s.push_str(&format!("data: {end}\n\n"));
    }
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_stream(toks: &[String], eol: &str) -> Vec<u8> {
    let mut events = vec![
        (
            "message_start",
            serde_json::json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[]}}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ("ping", serde_json::json!({"type":"ping"})),
    ];
    for (i, t) in toks.iter().enumerate() {
        events.push(("content_block_delta", serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}})));
        if i % 3 == 1 {
            events.push(("ping", serde_json::json!({"type":"ping"})));
        }
    }
    events.push((
        "content_block_stop",
        serde_json::json!({"type":"content_block_stop","index":0}),
    ));
    events.push(("message_stop", serde_json::json!({"type":"message_stop"})));
    events
        .into_iter()
        .map(|(name, v)| format!("event: {name}{eol}data: {v}{eol}{eol}"))
        .collect::<String>()
        .into_bytes()
}

/// Run a stream through an SseScrubber in chunks of the given sizes (cycled).
fn sse(s: &Arc<Scrubber>, input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut st = SseScrubber::new(s.clone());
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(&st.push(chunk).expect("within the hold limit"));
        rest = tail;
        i += 1;
    }
    out.extend_from_slice(&st.finish().expect("within the hold limit"));
    out
}

/// `out` holds no copy of `needle` outside the markers.
fn leaks(out: &[u8], needle: &[u8]) -> bool {
    let marker = REDACTED.as_bytes();
    let mut segs: Vec<&[u8]> = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i + marker.len() <= out.len() {
        if &out[i..i + marker.len()] == marker {
            segs.push(&out[start..i]);
            i += marker.len();
            start = i;
        } else {
            i += 1;
        }
    }
    segs.push(&out[start..]);
    segs.iter().any(|s| contains(s, needle))
}

/// A JSON-escaped copy (how a form appears in the raw bytes of a JSON event).
fn json_text(s: &[u8]) -> Vec<u8> {
    let q = serde_json::to_string(&String::from_utf8_lossy(s)).unwrap_or_default();
    q.as_bytes()[1..q.len() - 1].to_vec()
}

fn api_key() -> impl Strategy<Value = String> {
    "sk-[a-zA-Z0-9_-]{8,32}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A secret (in any form that JSON text can carry) streamed token by token over OpenAI
    /// chunks, with another choice interleaved, never reassembles in what the SDK shows nor
    /// appears in the raw bytes.
    #[test]
    fn openai_deltas_never_reassemble_a_secret(
        secret in api_key(),
        form in 0usize..8,
        prefix in "[a-z .,]{0,12}",
        suffix in "[a-z .,]{0,12}",
        lens in prop::collection::vec(1usize..6, 1..6),
        sizes in prop::collection::vec(1usize..300, 1..5),
        interleave in any::<bool>(),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let form = String::from_utf8_lossy(&forms(&secret)[form]).into_owned();
        let text = format!("{prefix}{form}{suffix}");
        let toks = tokens(&text, &lens);
        let other: Vec<String> = if interleave {
            toks.iter().map(|_| "x ".to_string()).collect()
        } else {
            Vec::new()
        };
        let input = openai_stream(&toks, &other);
        // Sanity: unscrubbed, the client would show the form (so the checks below can fail).
        prop_assert!(openai_joined(&input, 0).contains(&form));
        let out = sse(&s, &input, &sizes);
        let joined = openai_joined(&out, 0);
        prop_assert!(!leaks(joined.as_bytes(), form.as_bytes()), "{joined:?}");
        prop_assert!(!leaks(joined.as_bytes(), secret.as_bytes()), "{joined:?}");
        prop_assert!(joined.contains(REDACTED));
        prop_assert!(!leaks(&out, form.as_bytes()));
        prop_assert!(!leaks(&out, &json_text(form.as_bytes())));
        prop_assert_eq!(openai_joined(&out, 1), other.concat(), "the other choice is untouched");
        prop_assert_eq!(joined, s.scrub_str(&text).into_owned());
    }

    /// The same over Anthropic `content_block_delta` events with pings between them, with LF
    /// or CRLF line ends.
    #[test]
    fn anthropic_deltas_never_reassemble_a_secret(
        secret in api_key(),
        form in 0usize..8,
        prefix in "[a-z .,]{0,12}",
        suffix in "[a-z .,]{0,12}",
        lens in prop::collection::vec(1usize..6, 1..6),
        sizes in prop::collection::vec(1usize..300, 1..5),
        crlf in any::<bool>(),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let form = String::from_utf8_lossy(&forms(&secret)[form]).into_owned();
        let text = format!("{prefix}{form}{suffix}");
        let input = anthropic_stream(&tokens(&text, &lens), if crlf { "\r\n" } else { "\n" });
        prop_assert!(anthropic_joined(&input, 0).contains(&form));
        let out = sse(&s, &input, &sizes);
        let joined = anthropic_joined(&out, 0);
        prop_assert!(!leaks(joined.as_bytes(), form.as_bytes()), "{joined:?}");
        prop_assert!(!leaks(joined.as_bytes(), secret.as_bytes()), "{joined:?}");
        prop_assert!(joined.contains(REDACTED));
        prop_assert!(!leaks(&out, &json_text(form.as_bytes())));
        // Exactly what the whole-body scrubber makes of the joined text.
        prop_assert_eq!(joined, s.scrub_str(&text).into_owned());
    }

    /// A clean stream leaves byte for byte as it came, however it is chunked.
    #[test]
    fn clean_streams_pass_byte_identical(
        secret in api_key(),
        words in prop::collection::vec("[a-zA-Z0-9 .,!?-]{1,8}", 0..30),
        sizes in prop::collection::vec(1usize..200, 1..5),
        anthropic in any::<bool>(),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let input = if anthropic { anthropic_stream(&words, "\n") } else { openai_stream(&words, &[]) };
        prop_assume!(!s.matches(&input) && !s.matches(words.concat().as_bytes()));
        let out = sse(&s, &input, &sizes);
        prop_assert_eq!(out, input);
    }

    /// Event for event: when no delta ends with something a secret could start with, every
    /// event leaves in the same `push` that completes it, unchanged.
    #[test]
    fn clean_events_are_not_held(
        secret in "sk-[A-Z0-9]{8,32}",
        words in prop::collection::vec("[a-z .,!?]{0,7}[.,!? ]", 0..20),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let input = openai_stream(&words, &[]);
        let text = String::from_utf8_lossy(&input).into_owned();
        let mut st = SseScrubber::new(s);
        for event in text.split_inclusive("\n\n") {
            let out = st.push(event.as_bytes());
            prop_assert!(out.is_ok());
            let out = out.unwrap_or_default();
            prop_assert_eq!(String::from_utf8_lossy(&out), event);
        }
        prop_assert!(st.finish().is_ok_and(|b| b.is_empty()));
        prop_assert!(!st.scrubbed());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// OpenAI's random `obfuscation` padding changes in every event but is never joined by a
    /// client, nor are ids and `service_tier`: none of them may make an event wait, not even the
    /// first one.
    #[test]
    fn ids_and_obfuscation_padding_hold_nothing(
        secret in "sk-[a-z0-9]{8,32}",
        pads in prop::collection::vec("[A-Za-z0-9]{1,15}", 1..20),
    ) {
        let s = Arc::new(Scrubber::new([secret.as_bytes()]));
        let mut st = SseScrubber::new(s);
        for pad in pads {
            let v = serde_json::json!({"id":"chatcmpl-9x","object":"chat.completion.chunk",
                "service_tier":pad, "item_id":pad, "responseId":pad,
                "choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}],
                "obfuscation":pad});
            let event = format!("data: {v}\n\n");
            let out = st.push(event.as_bytes());
            prop_assert!(out.is_ok());
            let out = out.unwrap_or_default();
            prop_assert_eq!(String::from_utf8_lossy(&out), event);
        }
    }
}

/// Pieces of event streams, well-formed or not. The secret is `~~~~~~~~~~~~`: no piece has a
/// `~`, `5` or `+`/`-` after `fn`, so no encoding of it (`~~…`, `fn5+…`, `fn5-…`, `%7E%7E…`)
/// can form, while `fn` and `%7` (prefixes of needles) make the scrubbers hold tails back.
const PIECES: &[&str] = &[
    "data:",
    "data: ",
    "data",
    "event: delta",
    ": comment",
    "id: 1",
    "retry: 10",
    "\r",
    "\n",
    "\r\n",
    "\u{feff}",
    "{\"a\":\"",
    "\"}",
    "\"",
    "[DONE]",
    "xyz ",
    "{}",
    "[",
    "]",
    ",",
    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"",
    "\"}}]}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"text\":\"",
    "{\"type\":\"content_block_stop\",\"index\":0}",
    "\\u00",
    "\\",
    "\u{e9}",
    "fn",
    "%7",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the framing (broken JSON, stray CRs, BOMs, unterminated events), a stream with
    /// nothing to redact comes out byte for byte, in any chunking, without an error.
    #[test]
    fn any_clean_byte_stream_passes_unchanged(
        picks in prop::collection::vec(0..PIECES.len(), 0..60),
        sizes in prop::collection::vec(1usize..50, 1..6),
    ) {
        let s = Arc::new(Scrubber::new([b"~~~~~~~~~~~~".as_slice()]));
        let input: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].bytes()).collect();
        prop_assert_eq!(sse(&s, &input, &sizes), input);
    }
}

#[test]
fn a_secret_split_at_every_pair_of_offsets_never_reassembles() {
    let secret = "sk-ant-api03-Zq9/x+Y";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    let n = secret.len();
    for a in 1..n {
        for b in a..n {
            let toks: Vec<String> = if a == b {
                vec![
                    "key=".into(),
                    secret[..a].into(),
                    secret[a..].into(),
                    ".".into(),
                ]
            } else {
                vec![
                    "key=".into(),
                    secret[..a].into(),
                    secret[a..b].into(),
                    secret[b..].into(),
                    ".".into(),
                ]
            };
            for input in [openai_stream(&toks, &[]), anthropic_stream(&toks, "\r\n")] {
                let out = sse(&s, &input, &[7]);
                let joined = if input.starts_with(b"data") {
                    openai_joined(&out, 0)
                } else {
                    anthropic_joined(&out, 0)
                };
                assert_eq!(joined, format!("key={REDACTED}."), "split {a}/{b}");
                assert!(!leaks(&out, secret.as_bytes()));
            }
        }
    }
}

#[test]
fn the_first_fragment_carries_the_marker_and_the_rest_become_empty() {
    let s = Arc::new(Scrubber::new([b"sk-abcd-efgh".as_slice()]));
    let toks: Vec<String> = ["Key: ", "sk-ab", "cd-ef", "gh", " ok"]
        .map(String::from)
        .to_vec();
    let out = sse(&s, &openai_stream(&toks, &[]), &[7]);
    let deltas: Vec<String> = client_events(&out)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(deltas, ["", "Key: ", REDACTED, "", "", " ok"]);
}

#[test]
fn framing_edge_cases_are_read_as_a_client_reads_them() {
    let secret = "tok_live_51HqLyjWDarjtT1zdp7dc";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    // BOM, comments, `id`/`event`/`retry` fields, a JSON event over two data lines, lone CR,
    // CRLF and LF line ends, and the secret spread over three events.
    let stream = |a: &str, b: &str, c: &str| -> Vec<u8> {
        format!(
            "\u{feff}: keep-alive\r\nretry: 3000\r\n\r\n\
             id: 1\revent: delta\rdata: {{\"delta\":\r\ndata: \"{a}\"}}\r\r\
             : comment\ndata:{{\"delta\":\"{b}\"}}\n\n\
             data: {{\"delta\":\"{c}\"}}\r\n\r\n\
             data: {{\"done\":true}}\n\n"
        )
        .into_bytes()
    };
    let joined = |out: &[u8]| -> String {
        client_events(out)
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| v["delta"].as_str().map(String::from))
            .collect()
    };
    let leaky = stream("see tok_live_51", "HqLyjWDar", "jtT1zdp7dc!");
    assert!(
        joined(&leaky).contains(secret),
        "sanity: the client joins the secret"
    );
    let clean = stream("see tok_", "nothing", "here!");
    for size in 1..=leaky.len() {
        let out = sse(&s, &leaky, &[size]);
        assert_eq!(joined(&out), format!("see {REDACTED}!"), "chunks of {size}");
        assert_eq!(client_events(&out).len(), 3 + 1);
        let out = sse(&s, &clean, &[size]);
        assert_eq!(out, clean, "chunks of {size}");
    }
}

#[test]
fn a_cr_at_a_chunk_end_and_its_lf_in_the_next_are_one_line_end() {
    let s = Arc::new(Scrubber::new([b"sk-abcdefgh".as_slice()]));
    let mut st = SseScrubber::new(s);
    // The CR ends the event; the LF that completes the CRLF arrives later and must not be taken
    // for an empty line of its own (nor lost).
    let a = st
        .push(b"data: {\"delta\":\"x.\"}\r\n\r")
        .unwrap_or_default();
    assert_eq!(&a[..], b"data: {\"delta\":\"x.\"}\r\n\r");
    let b = st
        .push(b"\ndata: {\"delta\":\"y.\"}\r\n\r\n")
        .unwrap_or_default();
    assert_eq!(&b[..], b"\ndata: {\"delta\":\"y.\"}\r\n\r\n");
    assert_eq!(client_events(&[a, b].concat()).len(), 2);
}

#[test]
fn the_generic_rule_joins_a_string_field_continued_over_events() {
    // OpenAI Responses-style events: neither of the named rules applies.
    let secret = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    let mut input = String::new();
    for t in [
        "token: ",
        &secret[..7],
        &secret[7..20],
        &secret[20..],
        " (done)",
    ] {
        let v = serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"delta":t});
        input.push_str(&format!("event: response.output_text.delta\ndata: {v}\n\n"));
    }
    let out = sse(&s, input.as_bytes(), &[50]);
    let joined: String = client_events(&out)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["delta"].as_str().map(String::from))
        .collect();
    assert_eq!(joined, format!("token: {REDACTED} (done)"));
}

#[test]
fn non_json_events_are_byte_scrubbed() {
    let s = Arc::new(Scrubber::new([b"sk-abcdefgh12".as_slice()]));
    let input = b"data: the key is sk-abcdefgh12 ok\n\ndata: plain\n\n";
    let out = sse(&s, input, &[5]);
    assert_eq!(
        out,
        format!("data: the key is {REDACTED} ok\n\ndata: plain\n\n").into_bytes()
    );
}

#[test]
fn holding_back_is_bounded_and_fails_closed() {
    let s = Arc::new(Scrubber::new([b"sk-abcdefgh12".as_slice()]));
    // Choice 0 ends with a prefix of the secret and never continues; choice 1 goes on.
    let mut st = SseScrubber::with_limit(s.clone(), 4096);
    assert!(st
        .push(openai_event(0, "look: sk-abc").as_bytes())
        .is_ok_and(|b| b.is_empty()));
    let mut failed = false;
    for _ in 0..100 {
        match st.push(openai_event(1, "more text ").as_bytes()) {
            Ok(out) => assert!(out.is_empty(), "events behind a held one wait"),
            Err(e) => {
                assert_eq!(e.code().as_str(), "upstream_too_large");
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the hold-back must be bounded");
    assert!(st.push(b"data: {}\n\n").is_err(), "and stays failed");
    assert!(st.finish().is_err());
    // One event larger than the limit fails too (it cannot be parsed before it is complete).
    let mut st = SseScrubber::with_limit(s, 4096);
    assert!(st.push(&[b'a'; 3000]).is_ok());
    assert!(st.push(&[b'a'; 3000]).is_err());
}

#[test]
fn the_default_limit_is_two_mib() {
    assert_eq!(vultrino_core::scrub::SSE_HOLD_LIMIT, 2 << 20);
}

#[test]
fn sse_debug_shows_no_bytes() {
    let s = Arc::new(Scrubber::new([b"hunter2-secret".as_slice()]));
    let mut st = SseScrubber::new(s);
    let _ = st.push(b"data: {\"delta\":\"x hunter2-sec");
    let dbg = format!("{st:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn tool_call_arguments_and_partial_json_are_joined_too() {
    let secret = "sk-live-0123456789abcdef";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    let args = format!("{{\"key\": \"{secret}\"}}");
    let parts = [&args[..5], &args[5..14], &args[14..22], &args[22..]];
    // OpenAI: tool-call arguments, per call index.
    let mut openai = String::new();
    for p in parts {
        let v = serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"function":{"arguments":p}}]},"finish_reason":null}]});
        openai.push_str(&format!("data: {v}\n\n"));
    }
    // Anthropic: input_json_delta, per content block.
    let mut anthropic = String::new();
    for p in parts {
        let v = serde_json::json!({"type":"content_block_delta","index":1,
            "delta":{"type":"input_json_delta","partial_json":p}});
        anthropic.push_str(&format!("event: content_block_delta\ndata: {v}\n\n"));
    }
    let expected = s.scrub_str(&args).into_owned();
    assert!(expected.contains(REDACTED));
    for (input, pointer) in [
        (openai, "/choices/0/delta/tool_calls/0/function/arguments"),
        (anthropic, "/delta/partial_json"),
    ] {
        let out = sse(&s, input.as_bytes(), &[1]);
        let joined: String = client_events(&out)
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| {
                v.pointer(pointer)
                    .and_then(|p| p.as_str())
                    .map(String::from)
            })
            .collect();
        assert_eq!(joined, expected);
    }
}

#[test]
fn gemini_style_text_parts_are_joined_by_the_generic_rule() {
    let secret = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
    let s = Arc::new(Scrubber::new([secret.as_bytes()]));
    let mut input = String::new();
    for t in [
        "Your key is ",
        &secret[..9],
        &secret[9..25],
        &secret[25..],
        ", keep it safe.",
    ] {
        let v = serde_json::json!({"candidates":[{"content":{"parts":[{"text":t}],"role":"model"},
            "index":0}],"modelVersion":"gemini-2.0-flash","responseId":"abc123"});
        input.push_str(&format!("data: {v}\r\n\r\n"));
    }
    let out = sse(&s, input.as_bytes(), &[1]);
    let joined: String = client_events(&out)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(joined, format!("Your key is {REDACTED}, keep it safe."));
}
