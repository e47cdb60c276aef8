//! Headers across the JS↔wasm boundary in one crossing each way, not one per header (decision
//! 0120).
//!
//! workers-rs's `Headers::entries` costs five crossings per header (the iterator's `next`, its
//! `done` and `value`, then the name and the value, each a property read and a string copied
//! into the wasm) and `Headers::append` one per header: on a warm `POST /v1/execute` about a
//! hundred crossings for the request's, the upstream reply's and the answer's headers. Here a
//! header list goes as one JSON text: `JSON.stringify(Array.from(headers))` read as one string,
//! and `new Headers(JSON.parse(text))` made from one. Headers hold the same names and values
//! as before (JSON is exact for any string, and the Fetch standard keeps header values free of
//! the characters that could break a list: names are tokens, values have no NUL, CR or LF).

use worker::js_sys::{Array, JSON};
use worker::wasm_bindgen::JsValue;
use worker::web_sys;

/// A header list as the runtime iterates it: names lowercased, in sorted order, repeated names
/// combined with ", " (except `Set-Cookie`, one entry per value), as `Headers::entries` gives
/// them.
pub(crate) fn pairs(headers: &web_sys::Headers) -> Vec<(String, String)> {
    let text = JSON::stringify(&Array::from(headers))
        .ok()
        .and_then(|s| s.as_string());
    if let Some(list) = text.and_then(|t| serde_json::from_str(&t).ok()) {
        return list;
    }
    // Not expected (the runtime's header list is always an array of string pairs): the
    // crossing-per-header way, which cannot fail.
    worker::Headers(headers.clone()).entries().collect()
}

/// The value of `name` (lowercase) in a list from [`pairs`].
pub(crate) fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A JS `Headers` holding `list` in order (appended, so repeated names stay repeated), made in
/// one call. Fails as `Headers.append` would: a name or value the runtime refuses.
pub(crate) fn to_js<'a>(
    list: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<web_sys::Headers, JsValue> {
    let list: Vec<(&str, &str)> = list.into_iter().collect();
    if list.is_empty() {
        return web_sys::Headers::new();
    }
    let text = serde_json::to_string(&list).map_err(|_| JsValue::from_str("header list"))?;
    web_sys::Headers::new_with_str_sequence_sequence(&JSON::parse(&text)?)
}
