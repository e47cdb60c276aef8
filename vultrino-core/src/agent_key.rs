//! The agent's own key (`vk_…`) or agent token (`vt_…`) must never leave Vultrino: the checks that the proxy and
//! `/v1/execute` share — recognising a key in text, the last gate on the outgoing URL and
//! headers, the refusal of a body that carries one, and the audit path redacted from a key on
//! (docs/decisions/0063-pass-through-proxy.md, 0064).

use crate::audit;
use crate::error::{Code, Error, Result};

/// Whether `bytes` hold a Vultrino key or agent token: `vk_` or `vt_` (any case) followed by a
/// key character, as they are or after up to three rounds of percent-decoding (`vk%5F…`,
/// `%76k_…`, `vk%255F…`, `vt%5F…`).
pub fn carries_agent_key(bytes: &[u8]) -> bool {
    let mut current = std::borrow::Cow::Borrowed(bytes);
    for _ in 0..4 {
        if has_key_prefix(&current) {
            return true;
        }
        // Nothing to decode: the decoded bytes would be the same (no copy for the usual value).
        if memchr::memchr(b'%', &current).is_none() {
            return false;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode(&current).collect();
        if decoded[..] == current[..] {
            return false;
        }
        current = std::borrow::Cow::Owned(decoded);
    }
    has_key_prefix(&current)
}

fn has_key_prefix(bytes: &[u8]) -> bool {
    // Only where a `v` or `V` is (memchr's search, not a test of every 4-byte window: this runs
    // over every header value of every request; docs/decisions/0113).
    memchr::memchr2_iter(b'v', b'V', bytes).any(|i| {
        bytes.get(i + 1..i + 4).is_some_and(|w| {
            (w[0].eq_ignore_ascii_case(&b'k') || w[0].eq_ignore_ascii_case(&b't'))
                && w[1] == b'_'
                && (w[2].is_ascii_alphanumeric() || w[2] == b'_' || w[2] == b'-')
        })
    })
}

/// The last gate of both routes that send a request upstream (the proxy and `/v1/execute`):
/// the request carries no agent key in its path, query or any header value (400
/// `agent_key_in_request`; nothing is sent).
pub(crate) fn refuse_in(uri: &http::Uri, headers: &http::HeaderMap) -> Result<()> {
    refuse_in_parts(uri.path(), uri.query(), headers)
}

/// [`refuse_in`] for a request not yet built: its URL (before the query Vultrino appends) and
/// headers. Run before an approval is made, so that an agent key never lands in an approval
/// record (review of approvals, 2026-12-06, finding 2).
pub(crate) fn refuse_in_url(url: &url::Url, headers: &http::HeaderMap) -> Result<()> {
    refuse_in_parts(url.path(), url.query(), headers)
}

fn refuse_in_parts(path: &str, query: Option<&str>, headers: &http::HeaderMap) -> Result<()> {
    let in_uri = carries_agent_key(path.as_bytes())
        || query.is_some_and(|q| carries_agent_key(q.as_bytes()));
    let in_headers = headers.values().any(|v| carries_agent_key(v.as_bytes()));
    if in_uri || in_headers {
        return Err(Error::bad_request(
            "the request carries a Vultrino API key (vk_…) or agent token (vt_…) outside its key \
             slot: it is never sent upstream; remove it from the path, the query and other \
             headers",
        )
        .with_code(Code::AgentKeyInRequest));
    }
    Ok(())
}

/// The refusal of a request whose body carries a Vultrino API key (400
/// `agent_key_in_request`; nothing is sent): execute's `body`, or a proxied request's body.
pub(crate) fn in_body() -> Error {
    Error::bad_request(
        "the request body carries a Vultrino API key (vk_<id>_…) or agent token (vt_<id>_…): \
         it is never sent upstream; take it out of the body (a body that only looks like one, \
         vk_ or vt_ then 16 hex digits then _, is refused too)",
    )
    .with_code(Code::AgentKeyInRequest)
}

/// The upstream path as the audit event holds it: no query, and from the first segment that
/// carries an agent key on (refused by the last gate, but audited) `[REDACTED]`, so the log never
/// holds a key, even one whose secret part holds a `/`.
pub(crate) fn audit_path(path: &str) -> String {
    let path = audit::path_without_query(path);
    if !carries_agent_key(path.as_bytes()) {
        return path;
    }
    let mut kept = Vec::new();
    for seg in path.split('/') {
        if carries_agent_key(seg.as_bytes()) {
            break;
        }
        kept.push(seg);
    }
    kept.push("[REDACTED]");
    kept.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reading of "holds a key prefix": a test of every 4-byte window.
    fn by_windows(bytes: &[u8]) -> bool {
        bytes.windows(4).any(|w| {
            w[0].eq_ignore_ascii_case(&b'v')
                && (w[1].eq_ignore_ascii_case(&b'k') || w[1].eq_ignore_ascii_case(&b't'))
                && w[2] == b'_'
                && (w[3].is_ascii_alphanumeric() || w[3] == b'_' || w[3] == b'-')
        })
    }

    proptest::proptest! {
        /// The memchr search finds a key prefix exactly where the window test does, at the
        /// ends of the value too.
        #[test]
        fn the_prefix_search_agrees_with_every_window(
            value in proptest::collection::vec(proptest::sample::select(
                b"vVkKtT_-a%2 ".to_vec()), 0..24)
        ) {
            proptest::prop_assert_eq!(has_key_prefix(&value), by_windows(&value));
        }
    }

    #[test]
    fn a_key_prefix_is_found_at_either_end_and_not_cut_short() {
        assert!(has_key_prefix(b"vk_a"));
        assert!(has_key_prefix(b"Bearer VT_-"));
        assert!(!has_key_prefix(b"xx vk_"));
        assert!(!has_key_prefix(b"v"));
    }
}
