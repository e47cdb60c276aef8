//! Properties of the request-body [`KeyGuard`]: however a body is cut into chunks, a body without
//! a key passes byte for byte, and a body holding the agent's key (in any encoding the scrubber
//! knows) or any `vk_<16 hex>_` is refused, with nothing of the key released first.
//!
//! The key forms are made here independently of scrub.rs (base64, url and serde_json), as in
//! scrub_stream_props.rs.

#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use proptest::prelude::*;
use vultrino_core::scrub::{KeyFound, KeyGuard};

/// The longest a guard may hold: the longest needle of a key of at most 60 bytes (its
/// fully percent-encoded form, `%XX` per byte) minus one.
const HOLD_BOUND: usize = 3 * 60;

/// A key of the issued form: `vk_` 16 hex `_` 43 base64url characters.
fn key() -> impl Strategy<Value = String> {
    ("[0-9a-f]{16}", "[A-Za-z0-9_-]{43}").prop_map(|(id, secret)| format!("vk_{id}_{secret}"))
}

/// Encodings an SDK or a prompt may put the key in a body.
fn forms(key: &str) -> Vec<Vec<u8>> {
    let quoted = serde_json::to_string(key).unwrap();
    let pct: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let form: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    vec![
        key.as_bytes().to_vec(),
        quoted.into_bytes(),
        form.into_bytes(),
        pct.into_bytes(),
        STANDARD.encode(key).into_bytes(),
        URL_SAFE_NO_PAD.encode(key).into_bytes(),
        STANDARD.encode(format!("user:{key}")).into_bytes(),
        URL_SAFE
            .encode(format!("{{\"api_key\":\"{key}\"}}"))
            .into_bytes(),
    ]
}

/// Key-shaped text that is not this key (another agent's key, a log line quoting one).
fn other_shape() -> impl Strategy<Value = Vec<u8>> {
    (
        "[0-9a-f]{16}",
        prop_oneof![Just("_"), Just("%5F"), Just("%5f")],
        "[a-z]{0,6}",
    )
        .prop_map(|(id, sep, rest)| format!("vk{sep}{id}{sep}{rest}").into_bytes())
}

/// Text without any key: random bytes and the beginnings of keys and key shapes (so that the
/// guard has to hold them back at a chunk's end and then let them go).
fn clean_piece(key: String) -> impl Strategy<Value = Vec<u8>> {
    let starts: Vec<Vec<u8>> = forms(&key)
        .into_iter()
        .map(|f| f[..f.len() / 3].to_vec())
        .collect();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[a-z0-9 {}\":,=&_%]{0,30}".prop_map(String::into_bytes),
        Just(b"v".to_vec()),
        Just(b"vk".to_vec()),
        Just(b"vk%5".to_vec()),
        Just(b"vk0123456789abcdef_".to_vec()),
        "[0-9a-f]{1,20}".prop_map(|h| format!("vk_{h}").into_bytes()),
        proptest::sample::select(starts),
    ]
}

fn clean_body(key: String) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(clean_piece(key), 0..12).prop_map(|pieces| pieces.concat())
}

/// Chunk sizes, cycled (0: an empty chunk).
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..70, 1..8)
}

/// Run `input` through a guard in chunks of `sizes` (cycled): what it released, and whether it
/// refused; also checks the bound on what is held.
fn stream(guard: &mut KeyGuard, input: &[u8], sizes: &[usize]) -> (Vec<u8>, Result<(), KeyFound>) {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let n = if i > input.len() * 4 + 8 {
            rest.len()
        } else {
            n
        };
        let (chunk, tail) = rest.split_at(n);
        match guard.push(Bytes::copy_from_slice(chunk)) {
            Ok(part) => out.extend_from_slice(&part),
            Err(found) => return (out, Err(found)),
        }
        assert!(guard.held_len() <= HOLD_BOUND, "held {}", guard.held_len());
        rest = tail;
        i += 1;
    }
    match guard.finish() {
        Ok(tail) => {
            out.extend_from_slice(&tail);
            (out, Ok(()))
        }
        Err(found) => (out, Err(found)),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `body` holds a key shape: `vk`, separator, 16 lowercase hex, separator (a naive
/// reading of the rule, independent of the guard's).
fn naive_shape(body: &[u8]) -> bool {
    let sep = |s: &[u8]| -> Option<usize> {
        if s.first() == Some(&b'_') {
            Some(1)
        } else if s.len() >= 3 && s[0] == b'%' && s[1] == b'5' && (s[2] == b'f' || s[2] == b'F') {
            Some(3)
        } else {
            None
        }
    };
    (0..body.len()).any(|p| {
        let s = &body[p..];
        if !s.starts_with(b"vk") {
            return false;
        }
        let Some(a) = sep(&s[2..]) else { return false };
        let hex = &s[2 + a..];
        hex.len() >= 16
            && hex[..16]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && sep(&hex[16..]).is_some()
    })
}

/// A body with no `vk_` in it (nor the `%5F` spelling).
fn has_no_vk(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    !contains(&lower, b"vk_") && !contains(&lower, b"vk%5f")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A body without the key and without a key shape passes byte for byte, whatever its
    /// chunking: one without `vk_` at all, and one with `vk_` but not the whole shape.
    #[test]
    fn a_body_without_a_key_passes_byte_for_byte(
        (key, body) in key().prop_flat_map(|k| (Just(k.clone()), clean_body(k))),
        sizes in sizes(),
    ) {
        prop_assume!(!naive_shape(&body));
        let mut guard = KeyGuard::new(key.as_bytes());
        prop_assert!(!guard.contains(&body));
        let (out, result) = stream(&mut guard, &body, &sizes);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(out, body);
    }

    /// A body holding the key (each form) or another key's shape, anywhere, is refused whatever
    /// the chunking, and what was released before holds no `vk_` and no whole form.
    #[test]
    fn a_body_holding_a_key_is_refused_and_nothing_of_it_is_released(
        (key, before, after, which) in key().prop_flat_map(|k| {
            (Just(k.clone()), clean_body(k.clone()), clean_body(k), 0usize..12)
        }),
        other in other_shape(),
        sizes in sizes(),
    ) {
        prop_assume!(!naive_shape(&before));
        let forms = forms(&key);
        let planted = forms.get(which).cloned().unwrap_or(other);
        let body = [before.clone(), planted.clone(), after].concat();
        let mut guard = KeyGuard::new(key.as_bytes());
        prop_assert!(guard.contains(&body));
        let (out, result) = stream(&mut guard, &body, &sizes);
        prop_assert_eq!(result, Err(KeyFound));
        prop_assert!(body.starts_with(&out));
        prop_assert!(out.len() < before.len() + planted.len());
        prop_assert!(!naive_shape(&out), "released {:?}", String::from_utf8_lossy(&out));
        prop_assert!(!contains(&out, &planted));
        if has_no_vk(&before) {
            prop_assert!(has_no_vk(&out), "released {:?}", String::from_utf8_lossy(&out));
        }
    }
}

/// Every split point of a two-chunk upload, and a byte-at-a-time one, for each form of the key
/// in a JSON, a form and a multipart body.
#[test]
fn a_key_split_at_every_offset_is_refused() {
    let key = "vk_0123456789abcdef_Zm9vYmFyLWJhei1xdXV4LWtleS1zZWNyZXQtMDEyMzQ1";
    let mut planted = forms(key);
    planted.push(b"vk_fedcba9876543210_someone-else".to_vec());
    for form in planted {
        let form = String::from_utf8(form).unwrap();
        for body in [
            format!("{{\"api_key\":\"{form}\",\"query\":\"x\"}}"),
            format!("q=x&key={form}&v=vk"),
            format!(
                "--b\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\n{form}\r\n--b--\r\n"
            ),
        ] {
            let body = body.as_bytes();
            for at in 0..=body.len() {
                let mut guard = KeyGuard::new(key.as_bytes());
                let (out, result) = stream(&mut guard, body, &[at, body.len()]);
                assert_eq!(result, Err(KeyFound), "split at {at}: {form}");
                assert!(has_no_vk(&out), "split at {at}: released {out:?}");
            }
            let mut guard = KeyGuard::new(key.as_bytes());
            let (out, result) = stream(&mut guard, body, &[1]);
            assert_eq!(result, Err(KeyFound), "byte by byte: {form}");
            assert!(has_no_vk(&out));
        }
    }
}
