//! The execute pipeline: one request an agent asks Vultrino to make, with a named credential.
//!
//! [`Pipeline::execute`] reads top to bottom in this order:
//!
//! 1. **authorize** — the caller (already authenticated) has `execute` and reaches the
//!    credential's alias;
//! 2. **the request** — a valid, forwardable method; the URL's SSRF verdict (checked once, before
//!    the permission checks, but acted on only after them, so a caller without permission learns
//!    nothing about the URL);
//! 3. **load and open** the credential (`CredentialStore::load`, which reuses an unchanged one);
//! 4. **policy** — the credential's allowed hosts, methods and path prefixes, then its rate limit;
//!    an agent token's own methods and path prefixes (its use is spent right before the fetch);
//! 5. **clean** the agent's request: headers an agent may never set are dropped
//!    ([`Outbound::new`]);
//! 6. **inject** the credential ([`CredentialData::inject`](crate::credential::CredentialData::inject)),
//!    fetching an OAuth2 token first when the credential needs one (after checking that the
//!    caller could send the request; on an approval's re-send, before the approval is consumed);
//! 7. **fetch** (no redirects followed, timeout, size cap), refusing encoded replies;
//! 8. **scrub** every secret form from the reply's headers and body, after dropping the
//!    cookies the upstream set unless the policy passes them;
//! 9. **audit** — one event per execute, allowed or denied, written whatever the outcome.
//!
//! The reply is `{status, headers, body, body_encoding}` (200; the upstream status is inside).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::approvals::{Ask, Bound};
use crate::audit::{AuditEvent, AuditLog, FinalWrite};
use crate::auth::{Permission, Principal};
use crate::credential::{
    CredentialData, CredentialRecord, CredentialStore, OpenedCache, OpenedCredential,
};
use crate::crypto::Keys;
use crate::error::{retry_after_secs, Code, Error, ErrorKind, Result};
use crate::oauth::{OAuthToken, OAuthTokens};
use crate::ports::{Background, FetchOptions, Ports};
use crate::scrub::{Scrubber, ScrubberCache};
use crate::secret::Secret;
use crate::ssrf;
use crate::upstream::{self, forwardable_method, Outbound};

mod request;

pub use request::ExecuteRequest;

/// The reply of an execute: the upstream's answer, scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// `utf8` or `base64`.
    pub body_encoding: String,
    /// Whether a secret was scrubbed from the headers or the body (for the audit event; not
    /// part of the reply).
    #[serde(skip)]
    pub scrubbed: bool,
}

/// Everything an execute reaches, for one deployment: the ports (credentials in KV, rate-limit
/// counters in the session store, the fetcher), the keys, the two caches, the limits of every
/// upstream exchange and the audit retention.
#[derive(Clone, Copy)]
pub struct Pipeline<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    opened: &'a OpenedCache,
    scrubbers: &'a ScrubberCache,
    fetch: FetchOptions,
    audit_retention_secs: u64,
    /// [`Config::audit_required`](crate::app::Config::audit_required).
    audit_required: bool,
    approvals: crate::approvals::settings::Settings<'a>,
}

impl<'a> Pipeline<'a> {
    pub(crate) fn new(
        ports: &'a Ports,
        keys: &'a Keys,
        opened: &'a OpenedCache,
        scrubbers: &'a ScrubberCache,
        fetch: FetchOptions,
        audit_retention_secs: u64,
    ) -> Self {
        Pipeline {
            ports,
            keys,
            opened,
            scrubbers,
            fetch,
            audit_retention_secs,
            audit_required: false,
            approvals: crate::approvals::settings::Settings::default(),
        }
    }

    /// The pipeline that stores each request's audit event before using its credential
    /// ([`Config::audit_required`](crate::app::Config::audit_required)).
    pub(crate) fn with_audit_required(mut self, required: bool) -> Self {
        self.audit_required = required;
        self
    }

    /// With [`Pipeline::with_audit_required`], the event `event` stored (as `started`) before
    /// the credential is used: an error (503 `audit_unavailable`) when it could not be.
    /// `Ok(true)` when it was stored (its final write must then replace it, under its id),
    /// `Ok(false)` when audit is not strict.
    pub(crate) async fn audit_first(&self, event: &AuditEvent) -> Result<bool> {
        if !self.audit_required {
            return Ok(false);
        }
        self.audit().require(event).await.map(|()| true)
    }

    /// The pipeline with the deployment's approval settings (TTL, the timer of `Prefer: wait`).
    pub(crate) fn with_approvals(
        mut self,
        settings: crate::approvals::settings::Settings<'a>,
    ) -> Self {
        self.approvals = settings;
        self
    }

    /// The pipeline whose approval webhook goes out through `background` (after the 202),
    /// for one request.
    pub(crate) fn with_background<'b>(self, background: Option<&'b dyn Background>) -> Pipeline<'b>
    where
        'a: 'b,
    {
        let mut pipeline: Pipeline<'b> = self;
        pipeline.approvals.background = background;
        pipeline
    }

    /// The approval settings, for the gate.
    pub(crate) fn approval_settings(&self) -> crate::approvals::settings::Settings<'a> {
        self.approvals
    }

    #[inline]
    fn store(&self) -> CredentialStore<'a> {
        CredentialStore::new(self.ports, self.keys, self.opened)
    }

    #[inline]
    pub(crate) fn audit(&self) -> AuditLog<'a> {
        AuditLog::new(self.ports, self.audit_retention_secs)
    }

    /// Run one execute and write its audit event, whatever the outcome.
    pub async fn execute(self, who: &Principal, req: ExecuteRequest) -> Result<ExecuteResponse> {
        self.execute_in(who, req, &Ask::default(), None).await
    }

    /// [`Pipeline::execute`], for a caller that may go away before the reply: if this future
    /// is dropped before the event is written (the client left while the upstream may already
    /// hold the request), the event is still written, `cancelled`, through `background`
    /// (docs/decisions/0065-an-abandoned-request-is-still-audited.md). Without a background
    /// nothing can run after the drop, and the event is lost.
    pub(crate) async fn execute_in(
        self,
        who: &Principal,
        req: ExecuteRequest,
        ask: &Ask,
        background: Option<Arc<dyn Background>>,
    ) -> Result<ExecuteResponse> {
        let started = self.ports.now_ms();
        // Recorded before the permission check, from whatever the caller sent: every string is
        // capped when the event is written (`AuditEvent::capped`), so an event stays small
        // whatever its credential, method, host or path
        // (docs/decisions/0043-audit-events-are-bounded.md).
        let mut event = AuditEvent::new(started, who.actor(), "execute", "allowed");
        event.credential = Some(req.credential.clone());
        event.method = Some(req.method.to_ascii_uppercase());
        let target = ssrf::check_url_cached(&req.url, self.fetch.allow_loopback, &event.actor);
        match &target {
            Ok(t) => {
                event.host = t.url.host_str().map(str::to_string);
                event.path = Some(crate::agent_key::audit_path(t.url.path()));
            }
            // Refused URLs are audited with their host too, when they parse at all.
            Err(_) => {
                if let Ok(u) = url::Url::parse(&req.url) {
                    event.host = u.host_str().map(str::to_string);
                    event.path = Some(crate::agent_key::audit_path(u.path()));
                }
            }
        }
        let mut unfinished = Unfinished {
            event: Some(event),
            pipeline: self,
            background,
        };
        let mut approved = None;
        // The approval webhook goes out through the request's background, after the 202.
        let held = unfinished.background.clone();
        let first = match unfinished.event.as_ref() {
            Some(event) => self.audit_first(event).await.map(|_| ()),
            None => Err(Error::internal()),
        };
        let result = match first {
            Ok(()) => {
                self.with_background(held.as_deref())
                    .run(who, req, target, ask, &mut approved)
                    .await
            }
            Err(e) => Err(e),
        };
        let Some(mut event) = unfinished.event.take() else {
            return Err(Error::internal());
        };
        event.approval_id = approved;
        match &result {
            Ok(r) => {
                event.status = Some(r.status);
                event.scrubbed = Some(r.scrubbed);
            }
            Err(e) => failed(&mut event, e),
        }
        event.duration_ms = self.ports.now_ms().saturating_sub(started);
        // Dropped during this write, the same event is written again (`FinalWrite`).
        let background = unfinished.background.take();
        FinalWrite::write(self.ports, self.audit_retention_secs, background, event).await;
        result
    }

    async fn run(
        &self,
        who: &Principal,
        req: ExecuteRequest,
        target: Result<ssrf::Target>,
        ask: &Ask,
        approved: &mut Option<String>,
    ) -> Result<ExecuteResponse> {
        authorize(who, &req.credential)?;
        let method = parse_method(&req.method)?;
        let target = target?;
        let opened = self.open(&req.credential).await?;
        let record = &*opened.record;
        self.check_policy(who, record, &method, &target).await?;
        if has_method_list(record, who) {
            let content_type = req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_str());
            let sent = Overrides {
                url: &target.url,
                query: &req.query,
                content_type,
                body: req.body.as_deref(),
                json_body: req.json_body,
            };
            check_all_method_overrides(record, who, &sent)?;
        }
        // No agent key goes upstream in a body (the proxy's rule, docs/decisions/0064): the
        // body is sent as it is, so a `vk_<16 hex>_` in it (`_` as is or as `%5F`) refuses it
        // before anything is fetched (an OAuth token included).
        if req.body.as_deref().is_some_and(crate::scrub::has_key_shape) {
            return Err(crate::agent_key::in_body());
        }
        let mut out = Outbound::new(method, target.url, &req.headers, req.query)?;
        // A person's approval, bound to the request as it will go upstream (before the
        // credential is in it).
        let url = out.full_url();
        // No agent key in the URL or a header (checked again on the built request): refused
        // before an approval could store it.
        crate::agent_key::refuse_in_url(&url, &out.headers)?;
        let bound = Bound {
            credential: &record.alias,
            method: out.method.as_str(),
            url: url.as_str(),
            // Read only when an approval is needed: they must then be visible ASCII, which
            // other requests need not be (decision 0106).
            headers: if crate::approvals::required(who, record.policy.require_approval, &out.method)
            {
                out.bound_headers(req.json_body)?
            } else {
                Vec::new()
            },
            body: req.body.as_deref().unwrap_or_default(),
        };
        // Whether the request may wait between its authentication and its call (a person's
        // approval, an OAuth2 token endpoint): then its key's revocation is read again before
        // the call (`consume_use`). The body was read whole before the authentication.
        let waited = crate::approvals::required(who, record.policy.require_approval, &out.method)
            || matches!(record.data, CredentialData::Oauth2(_));
        let early = self.early_token(who, &opened, ask).await?;
        *approved = self.approval_gate(who, record, &bound, ask).await?;
        let scrubber = self.inject(who, &opened, &mut out, early).await?;
        let request = out.build(req.body.unwrap_or_default(), req.json_body)?;
        // The proxy's last gate: no agent key in the URL or a header value either.
        crate::agent_key::refuse_in(request.uri(), request.headers())?;
        // An agent token's use is spent last, right before the call (decision 0084).
        crate::auth::tokens::consume_use(self.ports, who, waited).await?;
        let response = self.ports.fetcher.fetch(request, self.fetch).await?;
        upstream::refuse_encoded(response.headers())?;
        Ok(render(response, &scrubber, record.policy.pass_cookies))
    }

    /// The ports of this deployment.
    pub(crate) fn ports(&self) -> &'a Ports {
        self.ports
    }

    /// The audit retention, for events written after the pipeline is gone (a stream's end).
    pub(crate) fn audit_retention_secs(&self) -> u64 {
        self.audit_retention_secs
    }

    /// Load and open the credential `alias` (an unchanged one is reused).
    pub(crate) async fn open(&self, alias: &str) -> Result<OpenedCredential> {
        self.store().load(alias).await
    }

    /// Put the credential into `out` and return the scrubber of every secret form that went
    /// in. An OAuth2 credential's access token is `early`'s when it was fetched already
    /// ([`Pipeline::early_token`]), fetched now otherwise.
    pub(crate) async fn inject(
        &self,
        who: &Principal,
        opened: &OpenedCredential,
        out: &mut Outbound,
        early: Option<Option<OAuthToken>>,
    ) -> Result<Arc<Scrubber>> {
        let token = match early {
            Some(token) => token,
            None => self.oauth_token(who, opened).await?,
        };
        let derived = opened.record.data.inject(out, token.as_ref())?;
        Ok(self.scrubber(opened, &derived))
    }

    /// On a re-send with an approval id, the OAuth2 access token is fetched before the approval
    /// is consumed, so that a failing token endpoint keeps the approval (decision 0101); `None`
    /// (fetched at injection) otherwise: a request not yet approved never uses the credential.
    pub(crate) async fn early_token(
        &self,
        who: &Principal,
        opened: &OpenedCredential,
        ask: &Ask,
    ) -> Result<Option<Option<OAuthToken>>> {
        match ask.approval_id {
            Some(_) => Ok(Some(self.oauth_token(who, opened).await?)),
            None => Ok(None),
        }
    }

    /// The credential's policy: host, method and path; then, for an agent token, the token's own
    /// methods and path prefixes; then the credential's rate limit (429 with `Retry-After` when
    /// reached), so a request the token refuses spends no rate-limit slot.
    pub(crate) async fn check_policy(
        &self,
        who: &Principal,
        record: &CredentialRecord,
        method: &http::Method,
        target: &ssrf::Target,
    ) -> Result<()> {
        // Policies store IPv6 hosts bracketed, as URLs write them.
        let policy_host = match target.ip {
            Some(std::net::IpAddr::V6(_)) => format!("[{}]", target.host),
            _ => target.host.clone(),
        };
        record
            .policy
            .check(method.as_str(), &policy_host, target.url.path())?;
        if let Some(grant) = who.token() {
            grant.check(method.as_str(), target.url.path())?;
        }
        if let Some(rl) = &record.policy.rate_limit {
            let now = self.ports.now_ms();
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
        Ok(())
    }

    /// The access token of an OAuth2 credential (`None` for every other type). Before a new
    /// token is fetched, a caller that could not send the request anyway (a revoked key or
    /// token, a token without uses left) is refused: it never makes Vultrino fetch a token
    /// (review of 2026-12-06 of tokens, finding 9). A cached token costs no such check: the
    /// exact one ([`consume_use`](crate::auth::tokens::consume_use)) runs before the call.
    async fn oauth_token(
        &self,
        who: &Principal,
        opened: &OpenedCredential,
    ) -> Result<Option<OAuthToken>> {
        let CredentialData::Oauth2(d) = &opened.record.data else {
            return Ok(None);
        };
        let binding = opened
            .oauth_binding
            .as_deref()
            .ok_or_else(Error::internal)?;
        let oauth = OAuthTokens::new(self.ports, self.keys, self.fetch);
        let ready = crate::auth::tokens::ready(self.ports, who);
        Ok(Some(oauth.token(&opened.record, d, binding, ready).await?))
    }

    /// The scrubber of every secret form that went into the request: the record's own values
    /// and the derived forms `inject` returned.
    #[inline]
    /// The needles of an agent's own key, for the request body's guard
    /// ([`KeyGuard`](crate::scrub::KeyGuard)): from the same cache, so a key's automaton is
    /// built once, not per request.
    pub(crate) fn key_needles(&self, key: &[u8]) -> Arc<Scrubber> {
        self.scrubbers.get(self.keys, &[key])
    }

    fn scrubber(&self, opened: &OpenedCredential, derived: &[Secret]) -> Arc<Scrubber> {
        let record = &opened.record;
        let mut all: Vec<&[u8]> = record.data.secrets();
        all.extend(derived.iter().map(|s| s.expose().as_bytes()));
        if matches!(record.data, CredentialData::Oauth2(_)) {
            // Tokens change independently of the record: looked up by content each time.
            self.scrubbers.get(self.keys, &all)
        } else {
            // Every secret form injected derives from the record alone.
            opened
                .scrubber
                .get_or_init(|| self.scrubbers.get(self.keys, &all))
                .clone()
        }
    }
}

/// The audit event of an execute that has not ended yet. Dropped while it still holds it (the
/// execute's future was dropped: its client went away), it writes it as `cancelled` through the
/// [`Background`], since nothing else will run after the drop.
struct Unfinished<'a> {
    event: Option<AuditEvent>,
    pipeline: Pipeline<'a>,
    background: Option<Arc<dyn Background>>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let (Some(mut event), Some(background)) = (self.event.take(), self.background.take())
        else {
            return;
        };
        let ports = self.pipeline.ports.clone();
        let retention = self.pipeline.audit_retention_secs;
        event.outcome = "cancelled".into();
        event.duration_ms = ports.now_ms().saturating_sub(event.ts);
        background.spawn(Box::pin(async move {
            AuditLog::new(&ports, retention).record(event).await;
        }));
    }
}

/// The name of the parameter with which Laravel, Symfony, Rails and Rack let a POST stand for
/// another method.
const METHOD_OVERRIDE_PARAM: &str = "_method";

/// Where a request may name another method than its own: the URL, extra query parameters, and a
/// body of a given type.
pub(crate) struct Overrides<'r> {
    pub url: &'r url::Url,
    pub query: &'r [(String, String)],
    pub content_type: Option<&'r str>,
    pub body: Option<&'r [u8]>,
    /// The body is JSON whatever its type says (execute's `json_body`).
    pub json_body: bool,
}

/// Under a method list, a `_method` parameter (any case) that names a method the list does not
/// allow is refused (403 `method_not_allowed_by_policy`), wherever an upstream framework may read
/// it: the URL's query, the `query` parameters, a form body (urlencoded, or multipart, whose
/// field is refused whatever its value) or a JSON object body. The override headers are dropped
/// ([`crate::upstream`]); this is the same override as a parameter (review of issue 18).
pub(crate) fn check_method_overrides(allowed: &[String], sent: &Overrides<'_>) -> Result<()> {
    let is_override = |name: &str| name.eq_ignore_ascii_case(METHOD_OVERRIDE_PARAM);
    let mut named: Vec<String> = sent
        .url
        .query_pairs()
        .filter(|(k, _)| is_override(k))
        .map(|(_, v)| v.into_owned())
        .collect();
    named.extend(
        sent.query
            .iter()
            .filter(|(k, _)| is_override(k))
            .map(|(_, v)| v.clone()),
    );
    if let Some(body) = sent.body {
        let content_type = sent.content_type.map(|v| v.trim().to_ascii_lowercase());
        let content_type = content_type.as_deref().unwrap_or("");
        if content_type.starts_with("application/x-www-form-urlencoded") {
            named.extend(
                url::form_urlencoded::parse(body)
                    .filter(|(k, _)| is_override(k))
                    .map(|(_, v)| v.into_owned()),
            );
        } else if content_type.starts_with("multipart/") {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            if text.contains("name=\"_method\"") || text.contains("name=_method") {
                // The field's value is not read: refused whatever it is.
                named.push(String::new());
            }
        } else if sent.json_body || content_type.contains("json") {
            if let Ok(serde_json::Value::Object(fields)) =
                serde_json::from_slice::<serde_json::Value>(body)
            {
                named.extend(
                    fields
                        .iter()
                        .filter(|(k, _)| is_override(k))
                        .map(|(_, v)| v.as_str().map_or_else(String::new, str::to_owned)),
                );
            }
        }
    }
    if named
        .iter()
        .all(|m| allowed.contains(&m.trim().to_ascii_uppercase()))
    {
        return Ok(());
    }
    // The value is not echoed: it comes from the query or the body, which are never repeated.
    Err(Error::forbidden(format!(
        "a {METHOD_OVERRIDE_PARAM} parameter names a method that is not allowed for this \
         credential: the upstream may act on it instead of the request's method"
    ))
    .with_code(Code::MethodNotAllowedByPolicy))
}

/// Whether a method list applies to a request with `record` by `who`: the credential's, or the
/// agent token's ([`check_all_method_overrides`] then looks at the request's `_method`s).
pub(crate) fn has_method_list(record: &CredentialRecord, who: &Principal) -> bool {
    record.policy.methods.is_some() || who.token().is_some_and(|g| g.methods.is_some())
}

/// [`check_method_overrides`] under every method list that applies: the credential's (403
/// `method_not_allowed_by_policy`), then the agent token's (403 `token_method_denied`), so that
/// a `_method` parameter cannot take a token past its methods either (review of 2026-12-06,
/// finding 1).
pub(crate) fn check_all_method_overrides(
    record: &CredentialRecord,
    who: &Principal,
    sent: &Overrides<'_>,
) -> Result<()> {
    if let Some(allowed) = &record.policy.methods {
        check_method_overrides(allowed, sent)?;
    }
    if let Some(methods) = who.token().and_then(|g| g.methods.as_deref()) {
        check_method_overrides(methods, sent).map_err(|_| {
            Error::forbidden(format!(
                "a {METHOD_OVERRIDE_PARAM} parameter names a method that is not one of this \
                 token's methods: the upstream may act on it instead of the request's method"
            ))
            .with_code(Code::TokenMethodDenied)
        })?;
    }
    Ok(())
}

/// The caller may use the credential `alias`: the `execute` permission and a scope reaching it.
pub(crate) fn authorize(who: &Principal, alias: &str) -> Result<()> {
    who.require(Permission::Execute)?;
    who.require_scope(alias)
}

/// Record a failure in an agent request's audit event: `denied` for refusals (authentication,
/// permission, policy, rate limit, unknown credential), `error` for the rest, with its code and
/// status.
pub(crate) fn failed(event: &mut AuditEvent, e: &Error) {
    event.outcome = match e.kind() {
        ErrorKind::ApprovalPending => "pending",
        ErrorKind::Gone
        | ErrorKind::Unauthorized
        | ErrorKind::Forbidden
        | ErrorKind::RateLimited
        | ErrorKind::NotFound => "denied",
        _ => "error",
    }
    .into();
    event.code = Some(e.code().as_str().into());
    event.status = Some(e.status().as_u16());
}

/// The request's method: valid HTTP (400 `invalid_request`), and never CONNECT or TRACE.
#[inline]
pub(crate) fn parse_method(method: &str) -> Result<http::Method> {
    let method =
        http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            Error::bad_request("method is not a valid HTTP method").with_code(Code::InvalidRequest)
        })?;
    if !forwardable_method(&method) {
        return Err(
            Error::bad_request("CONNECT and TRACE requests are not forwarded")
                .with_code(Code::InvalidRequest),
        );
    }
    Ok(method)
}

/// Turn the upstream response into the execute reply, scrubbing headers and body; the cookies
/// the upstream set are left out unless `pass_cookies`.
fn render(
    response: http::Response<Bytes>,
    scrubber: &Scrubber,
    pass_cookies: bool,
) -> ExecuteResponse {
    let (parts, body) = response.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut scrubbed = false;
    let named = upstream::connection_named(
        parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(http::HeaderValue::as_bytes),
    );
    for (name, value) in &parts.headers {
        if upstream::dropped_response_header(name.as_str(), &named, pass_cookies) {
            continue;
        }
        let clean = scrubber.scrub(value.as_bytes());
        scrubbed |= matches!(clean, std::borrow::Cow::Owned(_));
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
    scrubbed |= matches!(clean, std::borrow::Cow::Owned(_));
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
        scrubbed,
    }
}
