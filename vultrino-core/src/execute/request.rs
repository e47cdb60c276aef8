//! The body of `POST /v1/execute` (and the MCP `http_request` arguments), parsed into an
//! [`ExecuteRequest`].
//!
//! Both request shapes are accepted: the nested `{credential, action: "http.request", params:
//! {method, url, headers, query, body}}` and the flat `{credential, method, url, headers,
//! query?, body}` of earlier Vultrino clients (also served at `POST /api/v1/execute`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::{Code, Error, Result};
use crate::input::field_error;

/// One request an agent asks Vultrino to make.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    pub credential: String,
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Whether `body` came from a JSON object/array (sets `Content-Type: application/json`).
    pub json_body: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    query: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

/// The wire form of both shapes. `P` is how `params` is read: straight into [`Params`] on the
/// fast path ([`ExecuteRequest::from_slice`]), or as a JSON value first ([`ExecuteRequest::from_json`],
/// which words its errors per part).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "P: Deserialize<'de>"))]
struct Wire<P> {
    credential: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    params: Option<P>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    query: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

fn invalid_request(m: String) -> Error {
    Error::bad_request(m).with_code(Code::InvalidRequest)
}

impl ExecuteRequest {
    /// Parse either body shape from a JSON value.
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        let wire: Wire<serde_json::Value> = serde_json::from_value(value).map_err(|e| {
            invalid_request(format!("invalid execute request: {}", field_error(&e)))
        })?;
        Self::from_wire(wire, |p| {
            serde_json::from_value::<Params>(p)
                .map_err(|e| invalid_request(format!("invalid params: {}", field_error(&e))))
        })
    }

    /// The fast path of the HTTP route: parse either shape straight from the body, with no
    /// intermediate JSON value. `None` when the body does not parse this way; the caller then
    /// goes through [`ExecuteRequest::from_json`], which explains what is wrong.
    pub fn from_slice(body: &[u8]) -> Option<Result<Self>> {
        let wire: Wire<Params> = serde_json::from_slice(body).ok()?;
        Some(Self::from_wire(wire, Ok))
    }

    fn from_wire<P>(wire: Wire<P>, to_params: impl FnOnce(P) -> Result<Params>) -> Result<Self> {
        let bad = |m: &str| invalid_request(m.to_string());
        let params = match (wire.action.as_deref(), wire.params) {
            (Some("http.request") | None, Some(p)) => {
                if wire.url.is_some() || wire.method.is_some() {
                    return Err(bad("give either params or flat method/url, not both"));
                }
                to_params(p)?
            }
            (Some(other), _) if other != "http.request" => {
                return Err(invalid_request(format!(
                    "unknown action '{}'; only http.request is supported",
                    truncate(other)
                )))
            }
            (_, None) => Params {
                method: wire.method,
                url: wire.url.ok_or_else(|| bad("missing url"))?,
                headers: wire.headers,
                query: wire.query,
                body: wire.body,
            },
            _ => return Err(bad("invalid execute request")),
        };
        Self::from_params(wire.credential, params)
    }

    fn from_params(credential: String, p: Params) -> Result<Self> {
        let mut query = Vec::new();
        for (k, v) in p.query.unwrap_or_default() {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(Error::bad_request(
                        "query values must be strings, numbers or booleans",
                    )
                    .with_code(Code::InvalidRequest))
                }
            };
            query.push((k, v));
        }
        let (body, json_body) = match p.body {
            None | Some(serde_json::Value::Null) => (None, false),
            Some(serde_json::Value::String(s)) => (Some(Bytes::from(s)), false),
            Some(v) => (
                Some(Bytes::from(
                    serde_json::to_vec(&v).map_err(|_| Error::internal())?,
                )),
                true,
            ),
        };
        Ok(ExecuteRequest {
            credential,
            method: p.method.unwrap_or_else(|| "GET".into()),
            url: p.url,
            headers: p.headers.unwrap_or_default(),
            query,
            body,
            json_body,
        })
    }
}

/// At most 64 characters of `s` (for messages and audit fields that echo client input).
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What both parsers must agree on: the parsed request, or the error code.
    fn outcome(r: Result<ExecuteRequest>) -> std::result::Result<String, &'static str> {
        r.map(|r| format!("{r:?}")).map_err(|e| e.code().as_str())
    }

    fn slow(body: &[u8]) -> std::result::Result<String, &'static str> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => outcome(ExecuteRequest::from_json(v)),
            Err(_) => Err("invalid_json"),
        }
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""credential":"github""#.to_string()),
            Just(r#""credential":7"#.to_string()),
            Just(r#""action":"http.request""#.to_string()),
            Just(r#""action":"shell.exec""#.to_string()),
            Just(r#""params":{"url":"https://api.example.com/x","method":"POST","headers":{"a":"b"},"query":{"q":1,"r":true},"body":{"k":[1,2]}}"#.to_string()),
            Just(r#""params":{"url":"https://api.example.com/x","extra":1}"#.to_string()),
            Just(r#""params":{"method":"GET"}"#.to_string()),
            Just(r#""params":{"url":"https://a.example.com/","query":{"q":[1]}}"#.to_string()),
            Just(r#""params":null"#.to_string()),
            Just(r#""method":"get""#.to_string()),
            Just(r#""url":"https://api.example.com/flat?x=1""#.to_string()),
            Just(r#""body":"raw text""#.to_string()),
            Just(r#""headers":{"x-a":"1"}"#.to_string()),
            Just(r#""query":{"page":2}"#.to_string()),
            Just(r#""unknown":1"#.to_string()),
        ]
    }

    proptest! {
        /// The fast path never accepts anything the value path would not, and when it answers,
        /// it answers exactly as the value path does (same request, or same error code).
        #[test]
        fn fast_and_value_parsers_agree(fields in proptest::collection::vec(field(), 0..6)) {
            let body = format!("{{{}}}", fields.join(","));
            if let Some(fast) = ExecuteRequest::from_slice(body.as_bytes()) {
                prop_assert_eq!(outcome(fast), slow(body.as_bytes()), "{}", body);
            }
        }
    }

    #[test]
    fn fast_path_parses_both_shapes() {
        for body in [
            r#"{"credential":"gh","action":"http.request","params":{"method":"GET","url":"https://api.example.com/u"}}"#,
            r#"{"credential":"gh","method":"GET","url":"https://api.example.com/u"}"#,
        ] {
            let r = ExecuteRequest::from_slice(body.as_bytes());
            let r = r
                .and_then(|r| r.ok())
                .map(|r| (r.credential, r.method, r.url));
            assert_eq!(
                r,
                Some((
                    "gh".into(),
                    "GET".into(),
                    "https://api.example.com/u".into()
                ))
            );
        }
        // Unknown fields are left to the value path, which names the problem.
        assert!(ExecuteRequest::from_slice(
            br#"{"credential":"gh","url":"https://a.example.com/","x":1}"#
        )
        .is_none());
    }
}
