//! How Vultrino talks to an upstream: which request headers an agent may never set, how the
//! outgoing request is built around what the agent asked for, and what is refused in a reply.
//! Used by every path that sends a request for an agent (execute today) and by the OAuth2
//! token fetch.

use std::collections::BTreeMap;

use http::{header, HeaderMap, HeaderValue};

use crate::error::{Code, Error, ErrorKind, Result};

/// The `User-Agent` sent upstream when the agent gives none.
pub const USER_AGENT: &str = concat!("vultrino-edge/", env!("CARGO_PKG_VERSION"));

/// Request headers a client may never set: authentication (Vultrino injects it) and hop-by-hop.
///
/// `accept-encoding`, `range` and `if-range` are dropped too: a compressed or partial reply could
/// carry the secret in a form the scrubber cannot see (Vultrino asks for `identity` itself).
///
/// So are the headers with which frameworks and gateways let a request stand for another method
/// or path (Spring's `HiddenHttpMethodFilter` and Rails/Symfony/Laravel for the method, IIS
/// URL Rewrite and Symfony for the URL): the policy checked the method and path given, and the
/// upstream must act on those (docs/decisions/0051-the-upstream-acts-on-what-the-policy-checked.md).
///
/// The headers in which SDKs carry an API key (`x-goog-api-key`, Azure's `api-key`, and
/// Vultrino's own `x-vultrino-key`) are client credentials too: the pass-through proxy reads
/// the agent's key from them, and nothing in them may reach an upstream.
///
/// So are Cloudflare Access's: the token (`cf-access-jwt-assertion`, `cf-access-token`) and a
/// service token's id and secret open this deployment, not the upstream
/// (docs/decisions/0081-cloudflare-access-layer.md).
const DROPPED_REQUEST_HEADERS: [&str; 30] = [
    "accept-encoding",
    "range",
    "if-range",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "x-goog-api-key",
    "api-key",
    "x-vultrino-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "cf-access-jwt-assertion",
    "cf-access-token",
    "cf-access-client-id",
    "cf-access-client-secret",
];

/// Whether a request header is Vultrino's own (`x-vultrino-*`: the key slot, an approval id, an
/// agent's reason): addressed to Vultrino, never forwarded.
fn is_vultrino_header(lower: &str) -> bool {
    lower.starts_with("x-vultrino-")
}

/// Response headers never passed back to the agent (hop-by-hop, and the length of a body that is
/// re-framed). [`COOKIE_RESPONSE_HEADERS`] are dropped too unless the credential's policy passes
/// them.
pub(crate) const DROPPED_RESPONSE_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
];

/// Reply headers that set cookies: a session the upstream opens after an authenticated request
/// is a credential of its own, usable without Vultrino, so they reach the agent only when the
/// credential's policy says `pass_cookies` (docs/decisions/0052-upstream-cookies-dropped-by-default.md).
pub(crate) const COOKIE_RESPONSE_HEADERS: [&str; 2] = ["set-cookie", "set-cookie2"];

/// Whether a request with this method may be sent upstream. CONNECT asks for a tunnel (and HTTP
/// clients rewrite and log its target, query included); TRACE asks the upstream to echo the
/// request back, injected credential included. Neither has a use through a credential proxy.
pub fn forwardable_method(method: &http::Method) -> bool {
    method != http::Method::CONNECT && method != http::Method::TRACE
}

/// An upstream request being prepared: the agent's request with the headers it may not set
/// removed, into which a credential is then injected
/// ([`CredentialData::inject`](crate::credential::CredentialData::inject)). `Debug` shows the
/// method, the URL without its query, and header and query parameter names only: an injected
/// secret is in a value.
pub struct Outbound {
    pub method: http::Method,
    /// The checked URL ([`crate::ssrf::check_url`]).
    pub url: url::Url,
    pub headers: HeaderMap,
    /// Query pairs appended to `url` when the request is built.
    pub query: Vec<(String, String)>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = self.url.clone();
        url.set_query(None);
        f.debug_struct("Outbound")
            .field("method", &self.method)
            .field("url", &url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "query",
                &self
                    .query
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Outbound {
    /// The agent's request, cleaned: every header in the dropped list is left out; the rest must
    /// be valid HTTP (400 `invalid_header`).
    #[inline]
    pub fn new(
        method: http::Method,
        url: url::Url,
        agent_headers: &BTreeMap<String, String>,
        query: Vec<(String, String)>,
    ) -> Result<Outbound> {
        let named = connection_named(agent_headers.iter().filter_map(|(name, value)| {
            name.eq_ignore_ascii_case("connection")
                .then_some(value.as_bytes())
        }));
        let mut headers = HeaderMap::new();
        for (name, value) in agent_headers {
            let lower = name.to_ascii_lowercase();
            if DROPPED_REQUEST_HEADERS.contains(&lower.as_str())
                || named.contains(&lower)
                || is_vultrino_header(&lower)
            {
                continue;
            }
            let name = http::HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                Error::bad_request("invalid header name").with_code(Code::InvalidHeader)
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::bad_request("invalid header value").with_code(Code::InvalidHeader)
            })?;
            headers.append(name, value);
        }
        Ok(Outbound {
            method,
            url,
            headers,
            query,
        })
    }

    /// [`Outbound::new`] for a request whose headers came over HTTP as they are (the
    /// pass-through proxy): the same headers are left out, and so are those the request's
    /// `Connection` names (hop-by-hop, RFC 9110 §7.6.1).
    pub fn from_headers(
        method: http::Method,
        url: url::Url,
        agent_headers: &HeaderMap,
        query: Vec<(String, String)>,
    ) -> Outbound {
        let named = connection_named(
            agent_headers
                .get_all(header::CONNECTION)
                .iter()
                .map(HeaderValue::as_bytes),
        );
        let mut headers = HeaderMap::with_capacity(agent_headers.len());
        for (name, value) in agent_headers {
            let name_str = name.as_str();
            if DROPPED_REQUEST_HEADERS.contains(&name_str)
                || named.iter().any(|n| n == name_str)
                || is_vultrino_header(name_str)
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        Outbound {
            method,
            url,
            headers,
            query,
        }
    }

    /// Take every `name` parameter out of the URL's own query (the others keep their order and
    /// go before [`Outbound::query`]), so that only a value Vultrino adds reaches the upstream.
    pub fn remove_url_param(&mut self, name: &str) {
        if !self.url.query_pairs().any(|(k, _)| k == name) {
            return;
        }
        let kept: Vec<(String, String)> = self
            .url
            .query_pairs()
            .filter(|(k, _)| k != name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        self.url.set_query(None);
        self.query.splice(0..0, kept);
    }

    /// The URL the request goes to: [`Outbound::url`] with [`Outbound::query`] appended, as
    /// [`Outbound::build`] makes it (before a credential is injected).
    pub fn full_url(&self) -> url::Url {
        let mut url = self.url.clone();
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// The headers as they go upstream, before a credential is injected: what an approval
    /// binds ([`crate::approvals::binding`]). `json_body` adds the `Content-Type` that
    /// [`Outbound::build`] adds.
    ///
    /// A value that is not visible ASCII is refused, 400 `invalid_header` (only a request that
    /// needs approval is bound: execute and the proxy call this only for those). Read lossily, obs-text bytes `\xff` and `\xfe` both bound
    /// as U+FFFD, so a request approved with one byte could be re-sent with another; workerd
    /// itself decodes them so before Vultrino sees them, and the worker sends only visible
    /// ASCII values anyway (review of 2026-12-06, approvals and tokens, finding 2).
    pub fn bound_headers(&self, json_body: bool) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(self.headers.len() + 1);
        for (n, v) in &self.headers {
            let value = v.to_str().map_err(|_| {
                Error::bad_request(format!(
                    "header {} is not visible ASCII: a request that needs approval must show \
                     exactly what it sends",
                    n.as_str()
                ))
                .with_code(Code::InvalidHeader)
            })?;
            out.push((n.as_str().to_string(), value.to_string()));
        }
        if json_body && !self.headers.contains_key(header::CONTENT_TYPE) {
            out.push(("content-type".into(), "application/json".into()));
        }
        Ok(out)
    }

    /// The request to send: the query appended, `Content-Type: application/json` for a JSON
    /// body the agent gave no type for, `Accept-Encoding: identity` (a compressed reply could not
    /// be scrubbed), and a `User-Agent` when the agent sent none — many APIs refuse requests
    /// without one (GitHub answers 403), and neither backend's client adds one.
    #[inline]
    pub fn build<B>(mut self, body: B, json_body: bool) -> Result<http::Request<B>> {
        if !self.query.is_empty() {
            let mut pairs = self.url.query_pairs_mut();
            for (k, v) in &self.query {
                pairs.append_pair(k, v);
            }
        }
        let headers = &mut self.headers;
        if json_body && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        }
        let mut builder = http::Request::builder()
            .method(self.method)
            .uri(self.url.as_str());
        if let Some(h) = builder.headers_mut() {
            *h = self.headers;
        }
        builder.body(body).map_err(|_| {
            Error::bad_request("the request could not be built from this URL")
                .with_code(Code::InvalidUrl)
        })
    }
}

/// The header names listed in `Connection` values (lowercase): hop-by-hop for this one
/// connection, never forwarded (RFC 9110 §7.6.1).
pub fn connection_named<'v>(values: impl Iterator<Item = &'v [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether a response header is never passed back to the agent: hop-by-hop (the fixed list and
/// those the reply's `Connection` names), the re-framed body's length, and cookies unless the
/// policy passes them.
pub(crate) fn dropped_response_header(name: &str, named: &[String], pass_cookies: bool) -> bool {
    DROPPED_RESPONSE_HEADERS.contains(&name)
        || (!pass_cookies && COOKIE_RESPONSE_HEADERS.contains(&name))
        || named.iter().any(|n| n == name)
}

/// Refuse a reply whose body is encoded (compressed): the scrubber could not see a secret in it,
/// so it is never passed on. Every `Content-Encoding` header counts (a first `identity` does not
/// hide a later `gzip`), and so does `Transfer-Encoding`: clients undo `chunked` only, so any
/// other transfer coding (`gzip, chunked`) leaves compressed bytes in the body.
pub fn refuse_encoded(headers: &HeaderMap) -> Result<()> {
    if is_plain(headers) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::UpstreamFailed,
        "the upstream sent an encoded (compressed) body, which cannot be scrubbed",
    )
    .with_code(Code::UpstreamEncoded))
}

/// A request body the pass-through proxy would send encoded (gzip, br, deflate, …) is refused
/// (400 `request_encoded`) before anything is sent: the check that no agent key leaves in a
/// body reads the bytes as they are, and an upstream would inflate a key hidden in compressed
/// bytes (docs/decisions/0064-agent-key-in-request-body.md). Same rule as [`refuse_encoded`].
pub fn refuse_encoded_request(headers: &HeaderMap) -> Result<()> {
    if is_plain(headers) {
        return Ok(());
    }
    Err(Error::bad_request(
        "the request body is encoded (Content-Encoding other than identity): Vultrino must read          a body to keep agent keys out of it; send it uncompressed",
    )
    .with_code(Code::RequestEncoded))
}

/// Whether every `Content-Encoding` is `identity` and every `Transfer-Encoding` `identity` or
/// `chunked` (or there are none).
fn is_plain(headers: &HeaderMap) -> bool {
    let content = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| (v, false));
    let transfer = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| (v, true));
    for (value, is_transfer) in content.chain(transfer) {
        let plain = value.to_str().is_ok_and(|v| {
            v.split(',').all(|coding| {
                let coding = coding.trim();
                coding.eq_ignore_ascii_case("identity")
                    || (is_transfer && coding.eq_ignore_ascii_case("chunked"))
            })
        });
        if !plain {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(headers: &[(&str, &str)]) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::new());
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::WARNING),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        r
    }

    /// A body is passed on only when no header says it is encoded: plain, `identity`, and the
    /// `chunked` transfer coding clients undo.
    #[test]
    fn only_unencoded_bodies_pass() {
        for ok in [
            &[][..],
            &[("content-encoding", "identity")],
            &[("content-encoding", "IDENTITY")],
            &[("transfer-encoding", "chunked")],
            &[("transfer-encoding", "identity, Chunked")],
        ] {
            assert_eq!(refuse_encoded(reply(ok).headers()), Ok(()), "{ok:?}");
        }
        for refused in [
            &[("content-encoding", "gzip")][..],
            &[("content-encoding", "identity"), ("content-encoding", "br")],
            &[("content-encoding", "identity, gzip")],
            &[("content-encoding", "")],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "deflate"),
            ],
            &[("content-encoding", "chunked")],
        ] {
            assert_eq!(
                refuse_encoded(reply(refused).headers()).map_err(|e| e.code()),
                Err(Code::UpstreamEncoded),
                "{refused:?}"
            );
        }
    }
}
