//! Properties of the secret scrubber: a secret never survives in any supported encoding.
//!
//! The encoders here are written independently of `scrub.rs` (or come from base64, url and
//! serde_json), so the tests check the scrubber against the encodings real software produces.
//!
//! "The output does not contain X" is checked on the *segments between markers*: a one-byte secret
//! `R` trivially "appears" in the marker `[REDACTED]` itself, which is not a leak.

use std::borrow::Cow;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use vultrino_core::scrub::{Scrubber, REDACTED};

fn segments(out: &[u8]) -> Vec<&[u8]> {
    let marker = REDACTED.as_bytes();
    let mut segs = Vec::new();
    let mut start = 0;
    let mut i = 0;
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
    segs
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn leaks(out: &[u8], needle: &[u8]) -> bool {
    segments(out).iter().any(|s| contains(s, needle))
}

fn scrub_with(s: &Scrubber, input: &[u8]) -> Vec<u8> {
    s.scrub(input).into_owned()
}

fn wrap(prefix: &str, middle: &[u8], suffix: &str) -> Vec<u8> {
    [prefix.as_bytes(), middle, suffix.as_bytes()].concat()
}

// ----- independent encoders and lenient decoders ---------------------------------------------

/// Percent-encode every byte outside `keep` (letters and digits are kept unless `keep` is None).
fn percent(secret: &[u8], keep: Option<&[u8]>, upper: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in secret {
        if keep.is_some_and(|k| b.is_ascii_alphanumeric() || k.contains(&b)) {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

fn percent_decode(s: &[u8], plus_space: bool) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match (
            s[i],
            s.get(i + 1).and_then(|&c| hex(c)),
            s.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) if plus_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// JSON string body with every non-ASCII char as `\uXXXX` (lower-case hex), like Python's json.
fn json_ascii_only(serde_out: &str) -> String {
    let mut out = String::new();
    for c in serde_out.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Lenient JSON string unescape: unknown or broken escapes are kept as they are.
fn json_unescape(s: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(s);
    let chars: Vec<char> = text.chars().collect();
    let mut units: Vec<u16> = Vec::new();
    let mut out = String::new();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|r| r.unwrap_or('\u{fffd}')));
    };
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            let simple = match chars[i + 1] {
                '"' => Some('"'),
                '\\' => Some('\\'),
                '/' => Some('/'),
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                'b' => Some('\u{8}'),
                'f' => Some('\u{c}'),
                _ => None,
            };
            if let Some(c) = simple {
                flush(&mut units, &mut out);
                out.push(c);
                i += 2;
                continue;
            }
            if chars[i + 1] == 'u' && i + 6 <= chars.len() {
                let hex: String = chars[i + 2..i + 6].iter().collect();
                if let Ok(u) = u16::from_str_radix(&hex, 16) {
                    units.push(u);
                    i += 6;
                    continue;
                }
            }
        }
        flush(&mut units, &mut out);
        out.push(chars[i]);
        i += 1;
    }
    flush(&mut units, &mut out);
    out.into_bytes()
}

/// Lenient base64 decode: characters outside the alphabet are skipped, trailing bits dropped.
fn b64_lenient(s: &[u8]) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for v in s.iter().filter_map(|&c| val(c)) {
        acc = (acc << 6 | v) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Each maximal run of base64-alphabet characters, decoded leniently.
fn b64_runs(s: &[u8]) -> Vec<Vec<u8>> {
    s.split(|c| !(c.is_ascii_alphanumeric() || b"+/-_".contains(c)))
        .map(b64_lenient)
        .collect()
}

// ----- strategies -----------------------------------------------------------------------------

/// Surrounding text: no `%`, `+` or `\`, so it cannot itself decode into a secret by chance.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.:{}\"=&_-]{0,24}"
}

fn any_secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..64)
}

fn printable_secret() -> impl Strategy<Value = Vec<u8>> {
    "[ -~]{1,64}".prop_map(String::into_bytes)
}

fn secret() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![any_secret(), printable_secret()]
}

fn string_secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{1,40}",
        prop::collection::vec(any::<char>(), 1..24).prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn raw_secret_never_survives(secret in any_secret(),
                                 prefix in prop::collection::vec(any::<u8>(), 0..32),
                                 suffix in prop::collection::vec(any::<u8>(), 0..32)) {
        let input = [prefix.as_slice(), &secret, &suffix].concat();
        let out = scrub_with(&Scrubber::new([secret.as_slice()]), &input);
        prop_assert!(!leaks(&out, &secret));
    }

    #[test]
    fn base64_encodings_never_survive(secret in secret(), prefix in text(), suffix in text()) {
        let scrubber = Scrubber::new([secret.as_slice()]);
        for enc in [
            STANDARD.encode(&secret), STANDARD_NO_PAD.encode(&secret),
            URL_SAFE.encode(&secret), URL_SAFE_NO_PAD.encode(&secret),
        ] {
            let out = scrub_with(&scrubber, &wrap(&prefix, enc.as_bytes(), &suffix));
            prop_assert!(!leaks(&out, enc.as_bytes()), "{enc} survived in {:?}",
                String::from_utf8_lossy(&out));
            for seg in segments(&out) {
                for decoded in b64_runs(seg) {
                    prop_assert!(!contains(&decoded, &secret) || secret.len() < 3);
                }
            }
        }
    }

    #[test]
    fn base64_at_any_offset_never_decodes_to_the_secret(
        secret in prop::collection::vec(any::<u8>(), 6..64),
        prefix in prop::collection::vec(any::<u8>(), 0..16),
        suffix in prop::collection::vec(any::<u8>(), 0..16),
        url_safe in any::<bool>(),
    ) {
        let plain = [prefix.as_slice(), &secret, &suffix].concat();
        let encoded = if url_safe { URL_SAFE.encode(&plain) } else { STANDARD.encode(&plain) };
        let header = format!("Authorization: Basic {encoded}\r\n");
        // Sanity: unscrubbed, the secret is recoverable, so the check below can fail.
        prop_assert!(b64_runs(header.as_bytes()).iter().any(|d| contains(d, &secret)));
        let out = scrub_with(&Scrubber::new([secret.as_slice()]), header.as_bytes());
        // Decode every base64 run between markers, and also with the markers cut out (which
        // glues the text on both sides of a marker into one run).
        let joined: Vec<u8> = segments(&out).concat();
        for seg in segments(&out).into_iter().chain([joined.as_slice()]) {
            for decoded in b64_runs(seg) {
                prop_assert!(!contains(&decoded, &secret));
            }
        }
    }

    #[test]
    fn percent_encodings_never_survive(secret in secret(), prefix in text(), suffix in text()) {
        let scrubber = Scrubber::new([secret.as_slice()]);
        let form: String = url::form_urlencoded::byte_serialize(&secret).collect();
        let encodings: Vec<(Vec<u8>, bool)> = vec![
            (percent(&secret, Some(b"-._~"), true), false),
            (percent(&secret, Some(b"-._~"), false), false),
            (percent(&secret, Some(b""), true), false),
            (percent(&secret, None, true), false),
            (percent(&secret, None, false), false),
            (form.into_bytes(), true),
        ];
        for (enc, plus_space) in encodings {
            let out = scrub_with(&scrubber, &wrap(&prefix, &enc, &suffix));
            prop_assert!(!leaks(&out, &enc), "{:?} survived", String::from_utf8_lossy(&enc));
            for seg in segments(&out) {
                prop_assert!(!contains(&percent_decode(seg, plus_space), &secret));
            }
        }
    }

    #[test]
    fn json_escapings_never_survive(secret in string_secret(), prefix in text(), suffix in text()) {
        let scrubber = Scrubber::new([secret.as_bytes()]);
        let quoted = serde_json::to_string(&secret).unwrap_or_default();
        let serde = quoted[1..quoted.len() - 1].to_string();
        for enc in [serde.clone(), serde.replace('/', "\\/"), json_ascii_only(&serde)] {
            let out = scrub_with(&scrubber, &wrap(&prefix, enc.as_bytes(), &suffix));
            prop_assert!(!leaks(&out, enc.as_bytes()), "{enc:?} survived");
            for seg in segments(&out) {
                prop_assert!(!contains(&json_unescape(seg), secret.as_bytes()));
            }
        }
    }

    #[test]
    fn clean_input_is_borrowed_and_identical(secret in "[A-Z]{8,40}", body in "[a-z0-9 {}\":,]{0,2000}") {
        let s = Scrubber::new([secret.as_bytes()]);
        prop_assume!(!s.matches(body.as_bytes()));
        match s.scrub(body.as_bytes()) {
            Cow::Borrowed(out) => prop_assert!(std::ptr::eq(out, body.as_bytes())),
            Cow::Owned(_) => prop_assert!(false, "clean body was copied"),
        }
        prop_assert!(matches!(s.scrub_str(&body), Cow::Borrowed(_)));
    }

    #[test]
    fn scrub_str_matches_byte_scrub_for_text_secrets(secret in string_secret(), input in ".{0,200}") {
        let s = Scrubber::new([secret.as_bytes()]);
        let text = s.scrub_str(&input);
        let bytes = s.scrub(input.as_bytes());
        prop_assert_eq!(text.as_bytes(), &*bytes);
    }

    #[test]
    fn scrub_str_keeps_utf8_and_all_unredacted_text(secret in any_secret(), input in ".{0,200}") {
        let s = Scrubber::new([secret.as_slice()]);
        let out = s.scrub_str(&input);
        // Every piece between markers is a piece of the input, in order, and holds no secret.
        let mut rest = input.as_str();
        for seg in segments(out.as_bytes()) {
            let seg = std::str::from_utf8(seg);
            prop_assert!(seg.is_ok(), "segment is not UTF-8");
            let seg = seg.unwrap_or_default();
            prop_assert!(!contains(seg.as_bytes(), &secret));
            let at = rest.find(seg);
            prop_assert!(at.is_some(), "{seg:?} is not from the input");
            rest = &rest[at.unwrap_or_default() + seg.len()..];
        }
    }

    #[test]
    fn two_overlapping_secrets_are_both_removed(x in "[A-Z]{2,10}", y in "[A-Z]{2,10}",
                                                z in "[A-Z]{2,10}", prefix in "[a-z ]{0,20}",
                                                suffix in "[a-z ]{0,20}") {
        let a = format!("{x}{y}");
        let b = format!("{y}{z}");
        let s = Scrubber::new([a.as_bytes(), b.as_bytes()]);
        let out = s.scrub_str(&format!("{prefix}{x}{y}{z}{suffix}")).into_owned();
        prop_assert_eq!(out, format!("{prefix}{REDACTED}{suffix}"));
    }
}

#[test]
fn overlapping_secrets_in_both_orders_merge_into_one_marker() {
    let s = Scrubber::new([b"abcdef".as_slice(), b"defghi".as_slice()]);
    assert_eq!(s.scrub_str("<abcdefghi>"), "<[REDACTED]>");
    let s = Scrubber::new([b"defghi".as_slice(), b"abcdef".as_slice()]);
    assert_eq!(s.scrub_str("<abcdefghi>"), "<[REDACTED]>");
}

#[test]
fn adjacent_occurrences_keep_separate_markers() {
    let s = Scrubber::new([b"tok3n".as_slice()]);
    assert_eq!(s.scrub_str("tok3ntok3n"), "[REDACTED][REDACTED]");
}

#[test]
fn secret_in_base64_json_body_is_scrubbed() {
    let body = serde_json::json!({"echo": {"authorization": "Bearer ya29.secret-token_X"}});
    let encoded = STANDARD.encode(body.to_string());
    let s = Scrubber::new([b"ya29.secret-token_X".as_slice()]);
    let out = s.scrub_str(&encoded);
    assert!(!contains(
        &b64_lenient(out.as_bytes()),
        b"ya29.secret-token_X"
    ));
}
