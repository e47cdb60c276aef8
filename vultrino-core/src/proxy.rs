//! The pass-through proxy: `ANY /proxy/{alias}/{path…}?{query}`, so that an unmodified SDK
//! (OpenAI, Anthropic, Google, Octokit, curl) uses a credential by pointing its base URL at
//! Vultrino and giving it a Vultrino API key instead of the real one.
//!
//! It runs the steps of [`crate::execute`] — the same functions, not copies — in the same order:
//!
//! 1. **authenticate** the agent's key from whichever slot its SDK uses ([`slots`]);
//! 2. **authorize** (`execute` permission, a scope reaching the alias);
//! 3. **load and open** the credential; its `base_url` (or its one exact allowed host) and the
//!    request's path and query make the upstream URL ([`target`]);
//! 4. **policy** (host, method, path prefixes on the upstream path, rate limit) and the **SSRF**
//!    check of that URL;
//! 5. **clean** the request: every key slot, every client credential header, hop-by-hop headers
//!    (those `Connection` names too) are dropped; **inject** the real secret the credential's
//!    way, ask for `identity` encoding; then a **last gate**: a request that still carries a
//!    `vk_` key anywhere in its path, query or headers, in any percent-encoding, is not sent;
//!    the body goes through a [`KeyGuard`](crate::scrub::KeyGuard): the agent's key in any
//!    encoding, or any `vk_<16 hex>_`, refuses a whole body before anything is sent and cuts a
//!    streamed upload before those bytes (400 `agent_key_in_request`);
//! 6. **fetch** with the body streamed both ways ([`Fetcher::fetch_stream`]); no redirect is
//!    followed;
//! 7. **scrub**: the reply's headers before they are sent (a `Location` inside the base URL is
//!    rewritten to the proxy's own path), its body chunk by chunk ([`reply`]);
//! 8. **audit**: one event per request sent upstream, written when the reply's stream ends or
//!    its client goes away; a refusal (nothing sent) is counted in one event per key, alias,
//!    code, method, host, path and window ([`AuditLog::record_refusal`]).
//!
//! First of all, a browser loading a page, frame, script or worker from the route (its
//! `Sec-Fetch-Dest`, `Sec-Fetch-Mode` or `Service-Worker` header says so) is refused, 403
//! `browser_context`, before the key is looked at ([`browser`]).
//!
//! Before step 2, the exchange takes a slot of the concurrency caps ([`caps`]): past the key's
//! or the process's cap, 429 `proxy_busy` and nothing is sent; the slot is held until the
//! reply's stream ends or is dropped.
//!
//! Vultrino's own errors on this route carry `X-Vultrino-Error: <code>` beside the JSON body, so
//! a client can tell them from the upstream's. Decisions:
//! docs/decisions/0063-pass-through-proxy.md.
//!
//! [`Fetcher::fetch_stream`]: crate::ports::Fetcher::fetch_stream

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response};

use crate::api::reply::error_response;
use crate::app::App;
use crate::audit::{AuditEvent, AuditLog, FinalWrite};
use crate::auth::Principal;
use crate::body::Body;
use crate::error::{Code, Error, ErrorKind, Result};
use crate::execute::{
    authorize, check_all_method_overrides, failed, has_method_list, parse_method, Overrides,
    Pipeline,
};
use crate::ports::Background;
use crate::upstream::{self, Outbound};

mod browser;
mod reply;
pub mod route;
mod slots;
mod target;

use crate::agent_key::audit_path;
pub use crate::agent_key::carries_agent_key;
pub use crate::proxy_caps::BUSY_RETRY_AFTER_SECS;
pub use route::{is_proxy_path, PREFIX};
pub use slots::KEY_SLOTS;

/// The header naming the code of an error Vultrino itself produced on this route.
pub const ERROR_HEADER: &str = "x-vultrino-error";

/// A reply for an error of Vultrino's own on this route: the JSON error, with
/// [`ERROR_HEADER`].
pub fn refusal(e: &Error) -> Response<Body> {
    let mut r = error_response(e);
    r.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(e.code().as_str()));
    harden(r.headers_mut());
    r.map(Body::full)
}

/// The Content-Security-Policy of every reply on this route: whatever the upstream sends is
/// served on the admin UI's origin, so a document the browser opens from it is sandboxed (an
/// opaque origin: no cookies, no storage, no service worker), loads nothing and is never framed.
pub const PROXY_CSP: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// `Cross-Origin-Resource-Policy` (no constant in `http`).
const CORP: header::HeaderName = header::HeaderName::from_static("cross-origin-resource-policy");

/// Headers Vultrino sets on every reply of this route, upstream's and its own refusals alike,
/// replacing any the upstream sent (docs/decisions/0063-pass-through-proxy.md, 0038).
pub(crate) fn harden(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PROXY_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(CORP, HeaderValue::from_static("same-origin"));
}

/// Upstream reply headers never passed on by this route: those that would act on the admin UI's
/// origin (widen a service worker's scope, clear its site data, reload or redirect a page, a
/// policy of the upstream's in place of Vultrino's) and `x-vultrino-*`, which only Vultrino sets
/// (an upstream's `X-Vultrino-Error` would pass its own error off as a refusal of Vultrino's).
pub(crate) fn dropped_from_reply(name: &str) -> bool {
    const DROPPED: [&str; 5] = [
        "service-worker-allowed",
        "clear-site-data",
        "refresh",
        "content-security-policy",
        "content-security-policy-report-only",
    ];
    DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d))
        || name
            .get(..11)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-vultrino-"))
}

/// What the upstream answered, before its reply is scrubbed.
struct Forwarded {
    response: Response<Body>,
    scrubber: Arc<crate::scrub::Scrubber>,
    pass_cookies: bool,
    /// The URL the request went to, and the credential's base URL (for `Location`).
    sent_to: url::Url,
    base: url::Url,
}

impl App {
    /// Serve one request of the pass-through proxy (see the [module doc](self)).
    pub(crate) async fn proxy(
        &self,
        req: Request<Body>,
        background: Option<Arc<dyn Background>>,
    ) -> Response<Body> {
        // The approval webhook goes out through the request's background, after the 202.
        let held = background.clone();
        let pipeline = self.pipeline().with_background(held.as_deref());
        let ports = pipeline.ports();
        let started = ports.now_ms();
        let (parts, body) = req.into_parts();
        // A browser loading a page, frame, script or worker from here: refused before the key
        // is even looked at (not audited, as no actor is known yet; decision 0082).
        if let Err(e) = browser::refuse_browser_context(&parts.headers) {
            return refusal(&e);
        }
        let Some((alias, rest)) = target::split(parts.uri.path()) else {
            return refusal(
                &Error::not_found("use /proxy/<credential alias>/<path>").with_code(Code::NotFound),
            );
        };
        let (alias, rest) = (alias.to_string(), rest.to_string());
        let (who, key) = match self.proxy_caller(&parts).await {
            Ok(found) => found,
            Err(e) => return refusal(&e),
        };
        let mut event = AuditEvent::new(started, who.actor(), "proxy", "allowed");
        event.credential = Some(alias.clone());
        event.method = Some(parts.method.as_str().to_string());
        let config = self.config();
        // Per key: the tokens of a key share its cap (an agent cannot widen it by minting).
        let cap_key = match &who {
            Principal::ApiKey { id, .. } => ["key:", id].concat(),
            Principal::Admin { .. } => event.actor.clone(),
        };
        let slot = match self.proxy_caps().take(
            &cap_key,
            config.proxy_max_concurrent,
            config.proxy_max_concurrent_per_key,
        ) {
            Ok(slot) => slot,
            Err(e) => {
                failed(&mut event, &e);
                refused(pipeline.audit(), event).await;
                return refusal(&e);
            }
        };
        let bytes_in = Arc::new(AtomicU64::new(0));
        let key_in_body = Arc::new(AtomicBool::new(false));
        // Armed until the reply is rendered or the refusal audited: if this future is dropped
        // first (the client went away before the head, while the upstream may already hold
        // the request), the event is still written, `cancelled`.
        let sent = Arc::new(AtomicBool::new(false));
        let mut pending = Pending(
            Some(reply::Finish {
                event,
                ports: ports.clone(),
                retention_secs: pipeline.audit_retention_secs(),
                bytes_in: bytes_in.clone(),
                key_in_body: key_in_body.clone(),
                background,
                slot: Some(slot),
            }),
            sent.clone(),
        );
        let forwarded = match pending.0.as_mut() {
            Some(finish) => {
                self.forward(
                    &pipeline,
                    &who,
                    &key,
                    &alias,
                    &rest,
                    parts,
                    body,
                    &mut finish.event,
                    &bytes_in,
                    &key_in_body,
                    &sent,
                )
                .await
            }
            None => return refusal(&Error::internal()),
        };
        let Some(mut finish) = pending.0.take() else {
            return refusal(&Error::internal());
        };
        match forwarded {
            Ok(f) => reply::render(f, &alias, finish),
            Err(e) => {
                // A body cut for carrying a key may reach here as whatever the fetch made of
                // the aborted upload: the refusal is what happened.
                let e = if key_in_body.load(Ordering::Relaxed) {
                    crate::agent_key::in_body()
                } else {
                    e
                };
                // The slot is released before the event is written.
                drop(finish.slot.take());
                let mut event = finish.event;
                failed(&mut event, &e);
                event.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
                event.duration_ms = ports.now_ms().saturating_sub(started);
                if sent.load(Ordering::Relaxed) {
                    // Dropped during this write, the same event is written again (`FinalWrite`).
                    let retention = pipeline.audit_retention_secs();
                    FinalWrite::write(ports, retention, finish.background, event).await;
                } else {
                    refused(pipeline.audit(), event).await;
                }
                refusal(&e)
            }
        }
    }

    /// The agent, and its API key (for the body's [guard](crate::scrub::KeyGuard)), from the
    /// first slot that carries one (`X-Vultrino-Key` first). Only API keys: no session, no
    /// cookie (a cookie would make the route a CSRF target).
    async fn proxy_caller(
        &self,
        parts: &http::request::Parts,
    ) -> Result<(Principal, zeroize::Zeroizing<String>)> {
        let key = zeroize::Zeroizing::new(slots::agent_key(&parts.headers, parts.uri.query())?);
        let who = self
            .api_keys()
            .authenticate(&key)
            .await?
            .with_access(parts.extensions.get::<crate::auth::AccessIdentity>());
        Ok((who, key))
    }

    /// Steps 2–6 of the [module doc](self); the event gets the host and path once known.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        pipeline: &Pipeline<'_>,
        who: &Principal,
        key: &str,
        alias: &str,
        rest: &str,
        parts: http::request::Parts,
        body: Body,
        event: &mut AuditEvent,
        bytes_in: &Arc<AtomicU64>,
        key_in_body: &Arc<AtomicBool>,
        sent: &AtomicBool,
    ) -> Result<Forwarded> {
        let config = self.config();
        authorize(who, alias)?;
        let method = parse_method(parts.method.as_str())?;
        upstream::refuse_encoded_request(&parts.headers)?;
        let opened = pipeline.open(alias).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::forbidden(format!("no credential '{alias}' for this key"))
                    .with_code(Code::CredentialNotFound)
            } else {
                e
            }
        })?;
        let record = &*opened.record;
        let base = target::checked_base(&opened, config.allow_loopback_upstreams)?;
        let url = target::upstream_url(&base.url, rest, parts.uri.query())?;
        let checked = base.same_origin(url, config.allow_loopback_upstreams)?;
        event.host = checked.url.host_str().map(str::to_string);
        event.path = Some(audit_path(checked.url.path()));
        pipeline
            .check_policy(who, record, &method, &checked)
            .await?;

        let cap = config.proxy_max_request_bytes;
        if body.len_hint().is_some_and(|n| n > cap as u64) {
            return Err(too_large());
        }
        let mut body = body;
        // A request that needs a person's approval is bound to its body's hash: the body is
        // read whole first (capped), as for a method list below.
        let needs_approval =
            crate::approvals::required(who, record.policy.require_approval, &method);
        let mut whole: Option<bytes::Bytes> = None;
        if needs_approval {
            let bytes = body.collect_capped(cap).await?;
            whole = Some(bytes.clone());
            body = Body::full(bytes);
        }
        if has_method_list(record, who) {
            // A method list (the credential's or the token's) is only as good as the upstream's
            // reading of the method: a `_method` override in the body is looked for as execute
            // does, so the body is read first (it is capped; this is the one case where the
            // proxy holds a body whole).
            let bytes = body.collect_capped(cap).await?;
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let sent = Overrides {
                url: &checked.url,
                query: &[],
                content_type,
                body: (!bytes.is_empty()).then_some(&bytes[..]),
                json_body: false,
            };
            check_all_method_overrides(record, who, &sent)?;
            body = Body::full(bytes);
        }
        let body = target::capped(body, cap, bytes_in.clone());
        // The agent's key never goes upstream in the body either: a whole body is checked
        // here, a streamed one as it goes (the upload is cut before the key).
        let needles = || pipeline.key_needles(key.as_bytes());
        let body = target::guarded(body, needles, key_in_body.clone())?;
        let sent_to = checked.url.clone();
        let mut out = Outbound::from_headers(method, checked.url, &parts.headers, Vec::new());
        let mut early = None;
        if let Some(bytes) = &whole {
            let ask =
                crate::approvals::Ask::from_headers(&parts.headers, crate::approvals::Via::Proxy)?;
            let url = out.full_url();
            // No agent key in the URL or a header (checked again on the built request):
            // refused before an approval could store it.
            crate::agent_key::refuse_in_url(&url, &out.headers)?;
            let bound = crate::approvals::Bound {
                credential: &record.alias,
                method: out.method.as_str(),
                url: url.as_str(),
                headers: out.bound_headers(false)?,
                body: bytes,
            };
            early = pipeline.early_token(who, &opened, &ask).await?;
            event.approval_id = pipeline.approval_gate(who, record, &bound, &ask).await?;
        }
        // Strict audit: the event is stored (`started`) before the credential is used, or
        // nothing goes upstream — and only now, after every check that refuses for free, so a
        // refusal writes only its budgeted series event and no `started` row is left behind
        // (review of 2026-12-06, audit M1). From here on the event's final write replaces that
        // row under its id, whatever happens (as for a request the upstream may have seen).
        if pipeline.audit_first(event).await? {
            sent.store(true, Ordering::Relaxed);
        }
        let scrubber = pipeline.inject(who, &opened, &mut out, early).await?;
        let request = out.build(body, false)?;
        target::refuse_agent_keys(&request)?;
        // An agent token's use is spent last, right before the call (decision 0084).
        // A body read whole (an approval, a method list) or an OAuth2 token endpoint may have
        // made the request wait since its authentication: its revocation is read again then.
        let waited = whole.is_some()
            || has_method_list(record, who)
            || matches!(record.data, crate::credential::CredentialData::Oauth2(_));
        crate::auth::tokens::consume_use(pipeline.ports(), who, waited).await?;
        // From here on the upstream may see the request: its event is written one by one,
        // whatever happens.
        sent.store(true, Ordering::Relaxed);
        let response = pipeline
            .ports()
            .fetcher
            .fetch_stream(request, config.stream_options())
            .await?;
        upstream::refuse_encoded(response.headers())?;
        Ok(Forwarded {
            response,
            scrubber,
            pass_cookies: record.policy.pass_cookies,
            sent_to,
            base: base.url,
        })
    }
}

/// Audit a refusal, nothing sent upstream: counted per key, alias, code, method, host and path
/// ([`AuditLog::record_refusal`]), so that a key-holding agent cannot turn a flood of refusals
/// into as many audit writes (a KV write each on Workers). The method, host and path are part
/// of the series, not only of the event that happens to be written at a power of two: each
/// distinct refused request is written at least once (within the key's write budget), so an
/// agent cannot hide a probe among identical innocuous refusals of the same code (security
/// review of 2026-12-05 afternoon, L5; decision 0087).
async fn refused(log: AuditLog<'_>, event: AuditEvent) {
    let series = format!(
        "proxy\n{}\n{}\n{}\n{}\n{}",
        event.credential.as_deref().unwrap_or_default(),
        event.code.as_deref().unwrap_or_default(),
        event.method.as_deref().unwrap_or_default(),
        event.host.as_deref().unwrap_or_default(),
        event.path.as_deref().unwrap_or_default(),
    );
    let actor = event.actor.clone();
    log.record_refusal(&actor, &series, event).await;
}

/// The audit event of a request whose reply is not yet rendered; dropped while still holding
/// it, it writes it as `cancelled` through the [`Background`] (without one, nothing can run
/// after the drop: the event is lost, as the module doc of [`reply`] says).
/// The second field says whether the request may have reached the upstream: a request dropped
/// before that is a refusal like the others, counted per key and alias ([`refused`]), so that
/// an agent that leaves before sending anything cannot cost one audit write per request
/// (security review of 2026-12-05, L4).
struct Pending(Option<reply::Finish>, Arc<AtomicBool>);

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(finish) = self.0.take() else {
            return;
        };
        let Some(background) = finish.background.clone() else {
            return;
        };
        let sent = self.1.load(Ordering::Relaxed);
        let mut event = finish.event;
        event.outcome = "cancelled".into();
        event.bytes_in = Some(finish.bytes_in.load(Ordering::Relaxed));
        event.duration_ms = finish.ports.now_ms().saturating_sub(event.ts);
        let (ports, retention) = (finish.ports, finish.retention_secs);
        background.spawn(Box::pin(async move {
            let log = AuditLog::new(&ports, retention);
            if sent {
                log.record(event).await;
            } else {
                refused(log, event).await;
            }
        }));
    }
}

fn too_large() -> Error {
    Error::too_large("request body is too large for the proxy").with_code(Code::BodyTooLarge)
}
