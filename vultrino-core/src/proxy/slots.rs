//! Where an agent's SDK puts its API key, and which one Vultrino takes.
//!
//! Slots, in the order they are read: `X-Vultrino-Key` (it wins: for an SDK that needs
//! `Authorization` for something else), then `Authorization: Bearer`, `x-api-key` (Anthropic),
//! `x-goog-api-key` and `?key=` (Google), `api-key` (Azure). Only values that are Vultrino keys
//! (`vk_…`) or agent tokens (`vt_…`) count outside `X-Vultrino-Key`; two different keys in two slots are refused (401
//! `ambiguous_key`) rather than guessed between. Every slot's header is dropped from the
//! upstream request whatever it held ([`crate::upstream`]'s dropped headers), and `?key=`
//! values that hold a `vk_` key are taken out of the query ([`super::target`]).

use http::{HeaderMap, HeaderName};

use crate::auth::token::{bearer, is_agent_credential, Bearer};
use crate::error::{Code, Error, Result};

/// The header slots, in the order they are read (`?key=` is read after them).
pub const KEY_SLOTS: [&str; 5] = [
    "x-vultrino-key",
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
];

/// [`KEY_SLOTS`] as header names (a look-up by text parses the name each time).
const SLOT_NAMES: [HeaderName; 5] = [
    HeaderName::from_static(KEY_SLOTS[0]),
    HeaderName::from_static(KEY_SLOTS[1]),
    HeaderName::from_static(KEY_SLOTS[2]),
    HeaderName::from_static(KEY_SLOTS[3]),
    HeaderName::from_static(KEY_SLOTS[4]),
];

/// The query parameter slot (Google's `?key=`).
pub(super) const KEY_PARAM: &str = "key";

fn unauthenticated() -> Error {
    Error::unauthorized(
        "authentication required: your Vultrino API key (vk_…) or agent token (vt_…) in \
         X-Vultrino-Key, \
         Authorization: Bearer, x-api-key, x-goog-api-key, api-key or ?key=",
    )
    .with_code(Code::Unauthenticated)
}

fn ambiguous() -> Error {
    Error::unauthorized(
        "two different Vultrino keys in one request: send one (X-Vultrino-Key wins over the \
         other slots)",
    )
    .with_code(Code::AmbiguousKey)
}

/// The agent's key, as text (checked by the caller). `X-Vultrino-Key` wins when present, and
/// must then be the one key it holds; otherwise every slot holding a `vk_` value must hold the
/// same one.
pub(super) fn agent_key(headers: &HeaderMap, query: Option<&str>) -> Result<String> {
    let mut explicit = headers.get_all(&SLOT_NAMES[0]).iter();
    if let Some(first) = explicit.next() {
        let key = first.to_str().map_err(|_| unauthenticated())?.trim();
        if explicit.any(|other| other.as_bytes().trim_ascii() != key.as_bytes()) {
            return Err(ambiguous());
        }
        return Ok(key.to_string());
    }
    let mut found: Option<String> = None;
    let mut take = |candidate: &str| -> Result<()> {
        let candidate = candidate.trim();
        if !is_agent_credential(candidate) {
            return Ok(());
        }
        match &found {
            Some(k) if k != candidate => Err(ambiguous()),
            Some(_) => Ok(()),
            None => {
                found = Some(candidate.to_string());
                Ok(())
            }
        }
    };
    match bearer(headers) {
        Bearer::Token(token) => take(token)?,
        Bearer::Absent | Bearer::Malformed => {}
    }
    for slot in &SLOT_NAMES[2..] {
        for value in headers.get_all(slot) {
            if let Ok(v) = value.to_str() {
                take(v)?;
            }
        }
    }
    if let Some(q) = query {
        for (name, value) in url::form_urlencoded::parse(q.as_bytes()) {
            if name == KEY_PARAM {
                take(&value)?;
            }
        }
    }
    found.ok_or_else(unauthenticated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const K1: &str = "vk_0123456789abcdef_one";
    const K2: &str = "vk_0123456789abcdef_two";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_key_is_read_from_every_slot() {
        let bearer = format!("Bearer {K1}");
        for h in [
            headers(&[("authorization", &bearer)]),
            headers(&[("x-api-key", K1)]),
            headers(&[("x-goog-api-key", K1)]),
            headers(&[("api-key", K1)]),
            headers(&[("x-vultrino-key", K1)]),
        ] {
            assert_eq!(agent_key(&h, None).unwrap(), K1, "{h:?}");
        }
        let q = format!("alt=sse&key={K1}");
        assert_eq!(agent_key(&HeaderMap::new(), Some(&q)).unwrap(), K1);
    }

    #[test]
    fn x_vultrino_key_wins_and_other_slots_may_hold_anything() {
        let bearer = format!("Bearer {K2}");
        let h = headers(&[("authorization", &bearer), ("x-vultrino-key", K1)]);
        assert_eq!(agent_key(&h, None).unwrap(), K1);
        // An SDK's own non-Vultrino credential next to the key is not a conflict.
        let h = headers(&[("authorization", "Bearer sk-upstream"), ("x-api-key", K1)]);
        assert_eq!(agent_key(&h, None).unwrap(), K1);
    }

    #[test]
    fn two_different_keys_are_refused_and_no_key_is_unauthenticated() {
        let bearer = format!("Bearer {K1}");
        let h = headers(&[("authorization", &bearer), ("x-api-key", K2)]);
        assert_eq!(agent_key(&h, None).unwrap_err().code(), Code::AmbiguousKey);
        let h = headers(&[("x-vultrino-key", K1), ("x-vultrino-key", K2)]);
        assert_eq!(agent_key(&h, None).unwrap_err().code(), Code::AmbiguousKey);
        let q = format!("key={K2}");
        let h = headers(&[("x-api-key", K1)]);
        assert_eq!(
            agent_key(&h, Some(&q)).unwrap_err().code(),
            Code::AmbiguousKey
        );
        // The same key in two slots is one key.
        let h = headers(&[("authorization", &bearer), ("x-api-key", K1)]);
        assert_eq!(agent_key(&h, None).unwrap(), K1);
        let e = agent_key(&headers(&[("authorization", "Bearer sk-live")]), None).unwrap_err();
        assert_eq!(
            (e.code(), e.status().as_u16()),
            (Code::Unauthenticated, 401)
        );
        assert!(!e.message().contains("sk-live"));
    }
}
