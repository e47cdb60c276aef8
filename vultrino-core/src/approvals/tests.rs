//! The binding: what changes it and what does not.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn base_headers() -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-idempotency".into(), "1".into()),
        ("x-tag".into(), "a".into()),
        ("x-tag".into(), "b".into()),
    ]
}

fn bound<'r>(url: &'r str, body: &'r [u8], headers: Vec<(String, String)>) -> Bound<'r> {
    Bound {
        credential: "github",
        method: "POST",
        url,
        headers,
        body,
    }
}

const URL: &str = "https://api.example.com/v1/charges?amount=10";

#[test]
fn the_same_request_has_the_same_binding() {
    let a = binding(&bound(URL, b"{}", base_headers()));
    let b = binding(&bound(URL, b"{}", base_headers()));
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
}

#[test]
fn volatile_headers_do_not_change_the_binding() {
    let want = binding(&bound(URL, b"{}", base_headers()));
    for (name, value) in [
        ("user-agent", "sdk/2"),
        ("User-Agent", "sdk/3"),
        ("x-stainless-retry-count", "2"),
        ("traceparent", "00-abc-def-01"),
        ("tracestate", "x=y"),
        ("date", "Sun, 06 Dec 2026 05:00:00 GMT"),
        ("accept-encoding", "gzip"),
        ("content-length", "2"),
        ("prefer", "wait=10"),
        ("x-vultrino-approval", "ap_00"),
        ("x-vultrino-reason", "because"),
    ] {
        let mut headers = base_headers();
        headers.insert(1, (name.into(), value.into()));
        assert_eq!(binding(&bound(URL, b"{}", headers)), want, "{name}");
    }
}

#[test]
fn header_order_across_names_does_not_matter_but_order_within_a_name_does() {
    let want = binding(&bound(URL, b"{}", base_headers()));
    let mut shuffled = base_headers();
    shuffled.reverse();
    // Reversed: the two x-tag values swap, which is another request.
    assert_ne!(binding(&bound(URL, b"{}", shuffled.clone())), want);
    let i = shuffled.iter().position(|(_, v)| v == "b").unwrap();
    let j = shuffled.iter().position(|(_, v)| v == "a").unwrap();
    shuffled.swap(i, j);
    assert_eq!(binding(&bound(URL, b"{}", shuffled)), want);
}

#[test]
fn fields_are_length_prefixed_so_they_cannot_slide_into_each_other() {
    let a = Bound {
        credential: "ab",
        method: "POST",
        url: "c",
        headers: vec![],
        body: b"",
    };
    let b = Bound {
        credential: "a",
        method: "POST",
        url: "bc",
        headers: vec![],
        body: b"",
    };
    assert_ne!(binding(&a), binding(&b));
    let h1 = bound(URL, b"", vec![("x-a".into(), "bc".into())]);
    let h2 = bound(URL, b"", vec![("x-ab".into(), "c".into())]);
    assert_ne!(binding(&h1), binding(&h2));
}

#[test]
fn ids_are_128_random_bits_and_checked_by_shape() {
    let a = new_id();
    let b = new_id();
    assert_ne!(a, b);
    assert!(is_id(&a) && is_id(&b), "{a}");
    for bad in [
        "",
        "ap_",
        "ap_xyz",
        "ap_00",
        &format!("{a}0"),
        &a.to_uppercase(),
        "vk_0123456789abcdef0123456789abcdef",
    ] {
        assert!(!is_id(bad), "{bad}");
    }
}

#[test]
fn prefer_wait_is_clamped_and_invalid_values_are_ignored() {
    let wait = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("prefer", http::HeaderValue::from_str(v).unwrap());
        prefer_wait(&h)
    };
    assert_eq!(wait("wait=5"), Some(5));
    assert_eq!(wait("respond-async, wait=10"), Some(10));
    assert_eq!(wait("wait=600"), Some(MAX_WAIT_SECS));
    assert_eq!(wait("wait=-1"), None);
    assert_eq!(wait("wait=soon"), None);
    assert_eq!(wait("return=minimal"), None);
    assert_eq!(prefer_wait(&http::HeaderMap::new()), None);
}

#[test]
fn a_preview_is_cut_at_2048_bytes_and_says_so() {
    assert_eq!(preview(b"abc"), ("abc".to_string(), false));
    let big = vec![b'x'; BODY_PREVIEW_BYTES + 1];
    let (shown, cut) = preview(&big);
    assert_eq!((shown.len(), cut), (BODY_PREVIEW_BYTES, true));
}

fn header() -> impl Strategy<Value = (String, String)> {
    ("x-[a-c]{1,3}", "[ -~]{0,8}")
}

proptest! {
    /// Any change of method, URL, a bound header or the body changes the binding.
    #[test]
    fn any_change_of_a_bound_part_changes_the_binding(
        method in "(GET|POST|PUT|DELETE)",
        url in "https://h\\.example/[a-z]{0,6}(\\?q=[a-z]{0,4})?",
        headers in proptest::collection::vec(header(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        which in 0..5u8,
        extra in "[a-z]{1,4}",
        flip in any::<proptest::sample::Index>(),
    ) {
        let original = Bound { credential: "c", method: &method, url: &url, headers: headers.clone(), body: &body };
        let want = binding(&original);
        let other_method = if method == "PATCH" { "POST".to_string() } else { "PATCH".to_string() };
        let other_url = format!("{url}{extra}");
        let mut other_body = body.clone();
        if other_body.is_empty() { other_body.push(0) } else { let i = flip.index(other_body.len()); other_body[i] ^= 1; }
        let mut other_headers = headers.clone();
        match which {
            0 => {
                let changed = Bound { method: &other_method, ..original.clone() };
                prop_assert_ne!(binding(&changed), want.clone());
            }
            1 => {
                let changed = Bound { url: &other_url, ..original.clone() };
                prop_assert_ne!(binding(&changed), want.clone());
            }
            2 => {
                other_headers.push(("x-added".into(), extra.clone()));
                let changed = Bound { headers: other_headers, ..original.clone() };
                prop_assert_ne!(binding(&changed), want.clone());
            }
            3 if !headers.is_empty() => {
                let i = flip.index(headers.len());
                other_headers[i].1.push_str(&extra);
                let changed = Bound { headers: other_headers, ..original.clone() };
                prop_assert_ne!(binding(&changed), want.clone());
            }
            _ => {
                let changed = Bound { body: &other_body, ..original.clone() };
                prop_assert_ne!(binding(&changed), want.clone());
            }
        }
        // Volatile headers never change it.
        let mut noisy = headers.clone();
        noisy.push(("user-agent".into(), extra.clone()));
        noisy.push(("x-stainless-os".into(), extra));
        prop_assert_eq!(binding(&Bound { headers: noisy, ..original.clone() }), want);
    }
}
