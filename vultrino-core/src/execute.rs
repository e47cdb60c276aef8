//! The execute pipeline: authenticate → authorize → load and decrypt → policy → SSRF check →
//! drop client auth headers → inject → fetch → scrub → audit → reply.
//!
//! Both request shapes are accepted: the seed's `{credential, action: "http.request", params:
//! {method, url, headers, query, body}}` and the original Vultrino's flat `{credential, method,
//! url, headers, query?, body}`.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::audit::{self, AuditEvent};
use crate::auth::{Permission, Principal};
use crate::credential::{self, ClientAuth, CredentialData, CredentialRecord, OAuth2Data, Secret};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::ports::{FetchOptions, PutOptions};
use crate::scrub::Scrubber;
use crate::ssrf;

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

/// The reply of an execute: the upstream's answer, scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// `utf8` or `base64`.
    pub body_encoding: String,
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
            invalid_request(format!(
                "invalid execute request: {}",
                credential::field_error(&e)
            ))
        })?;
        Self::from_wire(wire, |p| {
            serde_json::from_value::<Params>(p).map_err(|e| {
                invalid_request(format!("invalid params: {}", credential::field_error(&e)))
            })
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

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Request headers a client may never set: authentication (Vultrino injects it) and hop-by-hop.
///
/// `accept-encoding`, `range` and `if-range` are dropped too: a compressed or partial reply could
/// carry the secret in a form the scrubber cannot see (Vultrino asks for `identity` itself).
const DROPPED_REQUEST_HEADERS: [&str; 18] = [
    "accept-encoding",
    "range",
    "if-range",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
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
];

/// Response headers never passed back (hop-by-hop; the reply is re-framed as JSON).
const DROPPED_RESPONSE_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
];

/// A cached OAuth2 access token, sealed at `oauth:<alias>`.
#[derive(Serialize, Deserialize)]
struct OAuthToken {
    access_token: Secret,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    /// [`oauth_binding`] of the credential version the token was fetched for. A token whose
    /// binding differs is ignored: a refresh still in flight when its credential was deleted,
    /// rotated or re-created may write its token afterwards, and that token must not be used
    /// under the new credential.
    #[serde(default)]
    issued_for: String,
}

/// Keyed hash of everything an OAuth2 token is issued for: the credential's id (new on every
/// create) and its OAuth2 settings, secrets included (so a rotation changes it).
pub(crate) fn oauth_binding(
    keys: &crate::crypto::Keys,
    record: &CredentialRecord,
    d: &OAuth2Data,
) -> Result<String> {
    let what = zeroize::Zeroizing::new(
        serde_json::to_vec(&("oauth-token-binding", &record.id, d))
            .map_err(|_| Error::internal())?,
    );
    Ok(crate::crypto::hex(&keys.mac(&what)))
}

/// Whether a request with this method may be sent upstream. CONNECT asks for a tunnel (and HTTP
/// clients rewrite and log its target, query included); TRACE asks the upstream to echo the
/// request back, injected credential included. Neither has a use through a credential proxy.
pub fn forwardable_method(method: &http::Method) -> bool {
    method != http::Method::CONNECT && method != http::Method::TRACE
}

/// The `User-Agent` sent upstream when the agent gives none.
pub const USER_AGENT: &str = concat!("vultrino-edge/", env!("CARGO_PKG_VERSION"));

/// Refresh tokens this long before they expire.
const OAUTH_REFRESH_MARGIN_MS: u64 = 60_000;

impl App {
    fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            timeout_ms: self.config.fetch_timeout_ms,
            max_response_bytes: self.config.max_response_bytes,
            allow_loopback: self.config.allow_loopback_upstreams,
        }
    }

    /// Run one execute and write its audit event, whatever the outcome.
    pub async fn execute(&self, who: &Principal, req: ExecuteRequest) -> Result<ExecuteResponse> {
        let started = self.now();
        let mut event = AuditEvent::new(started, who.actor(), "execute", "allowed");
        event.credential = Some(truncate(&req.credential));
        event.method = Some(truncate(&req.method.to_ascii_uppercase()));
        // The URL is parsed and checked once; its verdict is acted on in `execute_inner`, after
        // the permission checks, so a caller without permission learns nothing about the URL.
        let target = ssrf::check_url(&req.url, self.config.allow_loopback_upstreams);
        match &target {
            Ok(t) => {
                event.host = t.url.host_str().map(str::to_string);
                event.path = Some(audit::path_without_query(t.url.path()));
            }
            // Refused URLs are audited with their host too, when they parse at all.
            Err(_) => {
                if let Ok(u) = url::Url::parse(&req.url) {
                    event.host = u.host_str().map(str::to_string);
                    event.path = Some(audit::path_without_query(u.path()));
                }
            }
        }
        let result = self.execute_inner(who, req, target).await;
        match &result {
            Ok(r) => event.status = Some(r.status),
            Err(e) => {
                event.outcome = match e.kind() {
                    ErrorKind::Unauthorized
                    | ErrorKind::Forbidden
                    | ErrorKind::RateLimited
                    | ErrorKind::NotFound => "denied",
                    _ => "error",
                }
                .into();
                event.code = Some(e.code().as_str().into());
                event.status = Some(e.status().as_u16());
            }
        }
        event.duration_ms = self.now().saturating_sub(started);
        self.audit(event).await;
        result
    }

    async fn execute_inner(
        &self,
        who: &Principal,
        req: ExecuteRequest,
        target: Result<ssrf::Target>,
    ) -> Result<ExecuteResponse> {
        who.require(Permission::Execute)?;
        who.require_scope(&req.credential)?;
        let method =
            http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                Error::bad_request("method is not a valid HTTP method")
                    .with_code(Code::InvalidRequest)
            })?;
        if !forwardable_method(&method) {
            return Err(
                Error::bad_request("CONNECT and TRACE requests are not forwarded")
                    .with_code(Code::InvalidRequest),
            );
        }
        let target = target?;
        let opened = self.load_credential_shared(&req.credential).await?;
        let record = &*opened.record;
        // Policies store IPv6 hosts bracketed, as URLs write them.
        let policy_host = match target.ip {
            Some(std::net::IpAddr::V6(_)) => format!("[{}]", target.host),
            _ => target.host.clone(),
        };
        record
            .policy
            .check(method.as_str(), &policy_host, target.url.path())?;
        if let Some(rl) = &record.policy.rate_limit {
            let now = self.now();
            let hit = self
                .ports
                .sessions
                .hit(
                    &format!("rate:{}", record.alias),
                    u64::from(rl.per_seconds) * 1000,
                    rl.requests,
                    now,
                )
                .await?;
            if !hit.allowed {
                return Err(Error::new(
                    ErrorKind::RateLimited,
                    "this credential's rate limit is reached",
                )
                .with_code(Code::RateLimited)
                .with_retry_after(retry_after_secs(hit.reset_at_ms, now)));
            }
        }

        let mut url = target.url;
        let mut headers = http::HeaderMap::new();
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if DROPPED_REQUEST_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            let name = http::HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                Error::bad_request("invalid header name").with_code(Code::InvalidHeader)
            })?;
            let value = http::HeaderValue::from_str(value).map_err(|_| {
                Error::bad_request("invalid header value").with_code(Code::InvalidHeader)
            })?;
            headers.append(name, value);
        }

        // Inject; collect every secret form for the scrubber.
        let mut secrets: Vec<Secret> = Vec::new();
        let mut query = req.query;
        match &record.data {
            CredentialData::ApiKey(d) => {
                let name =
                    http::HeaderName::from_bytes(d.header_name().to_ascii_lowercase().as_bytes())
                        .map_err(|_| {
                        Error::unavailable("stored header name is invalid")
                            .with_code(Code::InvalidRecord)
                    })?;
                let mut value =
                    http::HeaderValue::from_str(&format!("{}{}", d.prefix(), d.key.expose()))
                        .map_err(|_| {
                            Error::unavailable("stored key is not header text")
                                .with_code(Code::InvalidRecord)
                        })?;
                value.set_sensitive(true);
                headers.remove(&name);
                headers.insert(name, value);
                secrets.push(d.key.clone());
            }
            CredentialData::BasicAuth(d) => {
                let pair = Secret::new(format!("{}:{}", d.username, d.password.expose()));
                let encoded =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(pair.expose()));
                let mut value = http::HeaderValue::from_str(&format!("Basic {}", encoded.expose()))
                    .map_err(|_| Error::internal())?;
                value.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, value);
                secrets.push(d.password.clone());
                secrets.push(pair);
                // The header value itself too: an upstream that re-encodes what it received
                // (base64 of the header) would otherwise hand the pair back one decode away.
                secrets.push(encoded);
            }
            CredentialData::QueryParam(d) => {
                query.retain(|(k, _)| k != &d.name);
                query.push((d.name.clone(), d.value.expose().to_string()));
                secrets.push(d.value.clone());
            }
            CredentialData::Oauth2(d) => {
                let binding = opened
                    .oauth_binding
                    .as_deref()
                    .ok_or_else(Error::internal)?;
                let token = self.oauth_token(record, d, binding).await?;
                let mut value =
                    http::HeaderValue::from_str(&format!("Bearer {}", token.access_token.expose()))
                        .map_err(|_| {
                            Error::new(
                                ErrorKind::UpstreamFailed,
                                "token endpoint returned an unusable token",
                            )
                            .with_code(Code::OauthTokenFailed)
                        })?;
                value.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, value);
                secrets.push(token.access_token.clone());
                if let Some(r) = &token.refresh_token {
                    secrets.push(r.clone());
                }
            }
        }
        if let CredentialData::QueryParam(d) = &record.data {
            // The URL may already carry the parameter (an agent guessing or overriding it):
            // only the injected value may reach the upstream.
            if url.query_pairs().any(|(k, _)| k == d.name.as_str()) {
                let kept: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != d.name.as_str())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.set_query(None);
                query.splice(0..0, kept);
            }
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &query {
                pairs.append_pair(k, v);
            }
        }
        if req.json_body && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        // Many APIs refuse requests without a User-Agent (GitHub answers 403); neither backend's
        // client sends one by itself. The agent's own wins.
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
        }
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let request = builder.body(req.body.unwrap_or_default()).map_err(|_| {
            Error::bad_request("the request could not be built from this URL")
                .with_code(Code::InvalidUrl)
        })?;
        let response = self
            .ports
            .fetcher
            .fetch(request, self.fetch_options())
            .await?;
        // A compressed body would hide the secret from the scrubber: refuse rather than pass it.
        if let Some(enc) = response.headers().get(http::header::CONTENT_ENCODING) {
            if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(Error::new(
                    ErrorKind::UpstreamFailed,
                    "the upstream sent an encoded (compressed) body, which cannot be scrubbed",
                )
                .with_code(Code::UpstreamEncoded));
            }
        }

        let mut all: Vec<&[u8]> = record.data.secrets();
        all.extend(secrets.iter().map(|s| s.expose().as_bytes()));
        let scrubber = if matches!(record.data, CredentialData::Oauth2(_)) {
            self.scrubber_for(&all)
        } else {
            // Every secret form injected above derives from the record alone.
            opened
                .scrubber
                .get_or_init(|| self.scrubber_for(&all))
                .clone()
        };
        Ok(render(response, &scrubber))
    }

    /// The scrubber for these secrets, from the cache when the same secrets were seen before.
    fn scrubber_for(&self, secrets: &[&[u8]]) -> std::sync::Arc<Scrubber> {
        /// Most distinct secret sets kept; the cache is simply emptied when full.
        const MAX_CACHED: usize = 1024;
        let mut material = zeroize::Zeroizing::new(Vec::new());
        for s in secrets {
            material.extend_from_slice(&(s.len() as u64).to_le_bytes());
            material.extend_from_slice(s);
        }
        let id = self.keys.mac(&material);
        if let Ok(cache) = self.scrubbers.lock() {
            if let Some(s) = cache.get(&id) {
                return s.clone();
            }
        }
        let built = std::sync::Arc::new(Scrubber::new(secrets.iter().copied()));
        if let Ok(mut cache) = self.scrubbers.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id, built.clone());
        }
        built
    }

    /// A valid OAuth2 access token for `record`: the cached one, or a new one from the token
    /// endpoint (refresh-token grant when a refresh token is known, client credentials otherwise).
    /// `binding` is the credential version's [`oauth_binding`]: a cached token issued for
    /// another version is not used.
    async fn oauth_token(
        &self,
        record: &CredentialRecord,
        d: &OAuth2Data,
        binding: &str,
    ) -> Result<OAuthToken> {
        let key = credential::oauth_key(&record.alias);
        let now = self.now();
        let mut refresh = d.refresh_token.clone();
        if let Some(text) = self.ports.kv.get(&key).await? {
            let cached = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| self.keys.open_envelope(&key, t).ok())
                .and_then(|p| serde_json::from_slice::<OAuthToken>(&p).ok())
                .filter(|tok| crate::crypto::ct_eq(tok.issued_for.as_bytes(), binding.as_bytes()));
            if let Some(tok) = cached {
                if tok
                    .expires_at
                    .is_none_or(|e| now + OAUTH_REFRESH_MARGIN_MS < e)
                {
                    return Ok(tok);
                }
                if tok.refresh_token.is_some() {
                    refresh = tok.refresh_token;
                }
            }
        }
        let failed =
            |m: String| Error::new(ErrorKind::UpstreamFailed, m).with_code(Code::OauthTokenFailed);
        let target = ssrf::check_url(&d.token_url, self.config.allow_loopback_upstreams)?;
        let request = token_request(d, refresh.as_ref(), target.url.as_str())?;
        let response = self
            .ports
            .fetcher
            .fetch(request, self.fetch_options())
            .await?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "token endpoint answered HTTP {}",
                response.status().as_u16()
            )));
        }
        #[derive(Deserialize)]
        struct TokenReply {
            access_token: Secret,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            refresh_token: Option<Secret>,
        }
        let reply: TokenReply = serde_json::from_slice(response.body())
            .map_err(|_| failed("token endpoint reply has no access_token".into()))?;
        if reply.access_token.is_empty() {
            return Err(failed(
                "token endpoint returned an empty access_token".into(),
            ));
        }
        let token = OAuthToken {
            access_token: reply.access_token,
            expires_at: reply
                .expires_in
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            refresh_token: reply.refresh_token.or(refresh),
            issued_for: binding.to_owned(),
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&token).map_err(|_| Error::internal())?);
        let sealed = self.keys.seal(&key, &plain);
        // Keep the cache no longer than the token lives (KV TTLs are at least 60 s) — unless it
        // holds a refresh token, which outlives the access token and may be the only valid one
        // left after the provider rotated it.
        let ttl = if token.refresh_token.is_some() {
            None
        } else {
            reply.expires_in.filter(|s| *s >= 60)
        };
        self.ports
            .kv
            .put(
                &key,
                Bytes::from(sealed),
                PutOptions {
                    expiration_ttl: ttl,
                    metadata: None,
                },
            )
            .await?;
        Ok(token)
    }
}

/// The token request (built synchronously: the form serializer is not `Send`).
fn token_request(
    d: &OAuth2Data,
    refresh: Option<&Secret>,
    url: &str,
) -> Result<http::Request<Bytes>> {
    let failed =
        |m: String| Error::new(ErrorKind::UpstreamFailed, m).with_code(Code::OauthTokenFailed);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match refresh {
        Some(r) => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", r.expose());
        }
        None => {
            form.append_pair("grant_type", "client_credentials");
        }
    }
    if let Some(scopes) = &d.scopes {
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
    }
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT);
    match d.client_auth {
        ClientAuth::Basic => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = zeroize::Zeroizing::new(format!(
                "{}:{}",
                enc(&d.client_id),
                enc(d.client_secret.expose())
            ));
            let b64 = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
            );
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Basic {}", b64.as_str()),
            );
        }
        ClientAuth::Post => {
            form.append_pair("client_id", &d.client_id);
            form.append_pair("client_secret", d.client_secret.expose());
        }
    }
    let body = zeroize::Zeroizing::new(form.finish());
    let request = builder
        .body(Bytes::from(body.as_bytes().to_vec()))
        .map_err(|_| failed("token request could not be built".into()))?;
    Ok(request)
}

/// Turn the upstream response into the execute reply, scrubbing headers and body.
fn render(response: http::Response<Bytes>, scrubber: &Scrubber) -> ExecuteResponse {
    let (parts, body) = response.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let clean = scrubber.scrub(value.as_bytes());
        let text = String::from_utf8_lossy(&clean).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    let clean = scrubber.scrub(&body);
    let (body, body_encoding) = match std::str::from_utf8(&clean) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&clean),
            "base64",
        ),
    };
    ExecuteResponse {
        status: parts.status.as_u16(),
        headers,
        body,
        body_encoding: body_encoding.into(),
    }
}

/// Seconds until `reset_at_ms`, at least 1 (a `Retry-After` of 0 invites a busy loop).
pub(crate) fn retry_after_secs(reset_at_ms: u64, now_ms: u64) -> u64 {
    reset_at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
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
