//! The HTTP API: routing, authentication of each request, JSON in and out, error mapping,
//! security headers and CORS. [`App::handle`] is the single entry point every backend calls.

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::{App, CredentialUpdate, NewCredential, NewKey, NewRole};
use crate::audit::AuditEvent;
use crate::auth::{self, Principal};
use crate::crypto;
use crate::error::{Code, Error, ErrorKind, Result};
use crate::execute::ExecuteRequest;
use crate::ports::SessionRecord;

/// The client's address, put into request extensions by the backend (the peer address locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    json_body(status, value)
}

/// A JSON response of any serializable value, written straight to bytes.
pub fn json_body<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Bytes> {
    let Ok(body) = serde_json::to_vec(value) else {
        // Only a value that cannot be JSON gets here; the error's own body always can be.
        return error_response(&Error::internal());
    };
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The headers every response carries, the page's included: no sniffing, no caching, no
/// referrer, no framing, no cross-origin embedding or window handles, and a Content-Security-
/// Policy that lets nothing load or run (kept when the response brings its own, as the admin
/// page does).
pub fn security_headers(h: &mut http::HeaderMap) {
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::ui::API_CSP),
        );
    }
}

/// The response for an error: `{"error": {"code", "message"}}`, with `Retry-After` when the error
/// says when to retry (429 rate limits and lockouts, 409 `change_in_progress` and
/// `change_not_propagated`), and with [`security_headers`]: backends answer some errors
/// themselves, outside [`App::handle`] (a body too slow or too large, a worker that cannot open
/// its store).
pub fn error_response(e: &Error) -> Response<Bytes> {
    let mut r = json_response(e.status(), &e.to_json());
    security_headers(r.headers_mut());
    if let Some(secs) = e.retry_after_secs() {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    if body.is_empty() {
        return Err(Error::bad_request("a JSON body is required").with_code(Code::InvalidJson));
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::bad_request(format!(
            "invalid JSON body: {}",
            crate::credential::field_error(&e)
        ))
        .with_code(Code::InvalidJson)
    })
}

fn query_param(req: &Request<Bytes>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn limit_param(req: &Request<Bytes>) -> Result<Option<usize>> {
    match query_param(req, "limit") {
        None => Ok(None),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .map(Some)
            .ok_or_else(|| {
                Error::bad_request("limit must be an integer from 1 to 1000")
                    .with_code(Code::InvalidLimit)
            }),
    }
}

fn header_str<'a>(req: &'a Request<Bytes>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// What the authentication step found.
struct Authed {
    principal: Principal,
    session: Option<SessionRecord>,
}

impl App {
    /// Serve one HTTP request. Never panics on input; every failure is a JSON error.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let origin = header_str(&req, "origin").map(str::to_string);
        let mut resp = if req.method() == Method::OPTIONS {
            self.preflight(origin.as_deref())
        } else if req.body().len() > self.config.max_request_bytes {
            error_response(
                &Error::too_large("request body is too large").with_code(Code::BodyTooLarge),
            )
        } else {
            match self.route(req).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        };
        security_headers(resp.headers_mut());
        let h = resp.headers_mut();
        if let Some(o) = origin.as_deref().filter(|o| self.cors_allowed(o)) {
            if let Ok(v) = HeaderValue::from_str(o) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        resp
    }

    fn cors_allowed(&self, origin: &str) -> bool {
        self.config.cors_origins.iter().any(|o| o == origin)
    }

    fn preflight(&self, origin: Option<&str>) -> Response<Bytes> {
        let Some(o) = origin.filter(|o| self.cors_allowed(o)) else {
            return empty(StatusCode::NO_CONTENT);
        };
        let mut r = empty(StatusCode::NO_CONTENT);
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(o) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, content-type, x-csrf-token, mcp-protocol-version, mcp-method, mcp-name",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    }

    async fn route(&self, req: Request<Bytes>) -> Result<Response<Bytes>> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let m = req.method().clone();
        let not_allowed = || {
            Err(Error::new(
                ErrorKind::MethodNotAllowed,
                "method not allowed on this route",
            ))
        };
        match segs.as_slice() {
            [] | [""] => match m {
                Method::GET if crate::ui::wants_html(header_str(&req, "accept")) => {
                    Ok(crate::ui::page())
                }
                Method::GET => Ok(json_response(
                    StatusCode::OK,
                    &json!({"name": "vultrino", "version": env!("CARGO_PKG_VERSION"), "api": "/v1"}),
                )),
                _ => not_allowed(),
            },
            ["ui", name] => match m {
                Method::GET => crate::ui::file(name)
                    .ok_or_else(|| Error::not_found("no such file").with_code(Code::NotFound)),
                _ => not_allowed(),
            },
            ["healthz"] => match m {
                Method::GET => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
                _ => not_allowed(),
            },
            // MCP over Streamable HTTP: its own auth, statuses and JSON-RPC error bodies.
            ["mcp"] => Ok(self.mcp_http(&req).await),
            ["login"] => match m {
                Method::POST => self.login(&req).await,
                _ => not_allowed(),
            },
            ["logout"] => match m {
                Method::POST => self.logout(&req).await,
                _ => not_allowed(),
            },
            ["v1", "execute"] | ["api", "v1", "execute"] => match m {
                Method::POST => {
                    let who = self.authenticate(&req).await?;
                    let parsed = match ExecuteRequest::from_slice(req.body()) {
                        Some(parsed) => parsed?,
                        None => ExecuteRequest::from_json(parse_json(req.body())?)?,
                    };
                    let out = self.execute(&who, parsed).await?;
                    Ok(json_body(StatusCode::OK, &out))
                }
                _ => not_allowed(),
            },
            ["v1", "credentials"] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => {
                        let (items, cursor) = self
                            .list_credentials(&who, query_param(&req, "cursor"), limit_param(&req)?)
                            .await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"credentials": items, "cursor": cursor}),
                        ))
                    }
                    Method::POST => {
                        let input: NewCredential = parse_json(req.body())?;
                        let meta = self.create_credential(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(meta)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "credentials", alias] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => Ok(json_response(
                        StatusCode::OK,
                        &json!(self.credential_detail(&who, alias).await?),
                    )),
                    Method::PUT => {
                        let update: CredentialUpdate = parse_json(req.body())?;
                        let meta = self.update_credential(&who, alias, update).await?;
                        Ok(json_response(StatusCode::OK, &json!(meta)))
                    }
                    Method::DELETE => {
                        self.delete_credential(&who, alias).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "keys"] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => Ok(json_response(
                        StatusCode::OK,
                        &json!({"keys": self.list_keys(&who).await?}),
                    )),
                    Method::POST => {
                        let input: NewKey = parse_json(req.body())?;
                        let created = self.create_key(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(created)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "keys", id] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::DELETE => {
                        self.revoke_key(&who, id).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "roles"] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => Ok(json_response(
                        StatusCode::OK,
                        &json!({"roles": self.list_roles(&who).await?}),
                    )),
                    Method::POST => {
                        let input: NewRole = parse_json(req.body())?;
                        let role = self.create_role(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(role)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "roles", name] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::DELETE => {
                        self.delete_role(&who, name).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "audit"] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => {
                        let (events, cursor) = self
                            .list_audit(&who, query_param(&req, "cursor"), limit_param(&req)?)
                            .await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"events": events, "cursor": cursor}),
                        ))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "sync", "export"] => {
                let who = self.authenticate(&req).await?;
                match m {
                    Method::GET => Ok(json_response(
                        StatusCode::OK,
                        &json!(self.export(&who).await?),
                    )),
                    _ => not_allowed(),
                }
            }
            _ => Err(Error::not_found("no such route")),
        }
    }

    /// Authenticate a request and, for cookie sessions (every request, reads included), enforce
    /// CSRF and same-origin.
    async fn authenticate(&self, req: &Request<Bytes>) -> Result<Principal> {
        Ok(self.authenticate_checked(req).await?.principal)
    }

    /// [`Self::authenticate`], keeping the session record.
    async fn authenticate_checked(&self, req: &Request<Bytes>) -> Result<Authed> {
        let authed = self.authenticate_any(req).await?;
        if let (
            Principal::Admin {
                via_cookie: true, ..
            },
            Some(session),
        ) = (&authed.principal, &authed.session)
        {
            // Reads too: the cookie reaches every port of this host, the token only this page.
            self.check_csrf(req, session)?;
        }
        Ok(authed)
    }

    async fn authenticate_any(&self, req: &Request<Bytes>) -> Result<Authed> {
        let unauthenticated = || {
            Error::unauthorized("authentication required: a Bearer API key or an admin session")
                .with_code(Code::Unauthenticated)
        };
        if let Some(value) = req.headers().get(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| unauthenticated())?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(unauthenticated)?;
            if token.starts_with("vk_") {
                let principal = self.authenticate_key(token).await?;
                return Ok(Authed {
                    principal,
                    session: None,
                });
            }
            if token.starts_with(auth::BEARER_SESSION_PREFIX) {
                return self.session(token, false).await;
            }
            return Err(unauthenticated());
        }
        // Every `vultrino_session` cookie is tried (a few at most): a page on another port of this
        // host can plant one with a narrower path, which browsers then send first.
        let mut refused = None;
        if let Some(header) = header_str(req, "cookie") {
            for token in auth::cookie_tokens(header)
                .filter(|t| t.starts_with(auth::COOKIE_SESSION_PREFIX))
                .take(4)
            {
                match self.session(token, true).await {
                    Ok(authed) => return Ok(authed),
                    Err(e) => refused = Some(e),
                }
            }
        }
        Err(refused.unwrap_or_else(unauthenticated))
    }

    async fn session(&self, token: &str, via_cookie: bool) -> Result<Authed> {
        let id = crypto::sha256_hex(token.as_bytes());
        let record = self
            .ports
            .sessions
            .touch_session(&id, self.now())
            .await?
            // A token works only the way it was issued (cookie or bearer). A record without a
            // twin is from before twin sessions, when the cookie was the bearer token: refused.
            .filter(|r| r.via_cookie == via_cookie && r.twin.is_some())
            .ok_or_else(|| {
                Error::unauthorized("session expired or logged out").with_code(Code::SessionExpired)
            })?;
        Ok(Authed {
            principal: Principal::Admin {
                subject: record.subject.clone(),
                session_id: id,
                via_cookie,
            },
            session: Some(record),
        })
    }

    fn check_csrf(&self, req: &Request<Bytes>, session: &SessionRecord) -> Result<()> {
        let csrf_failed = |m: &'static str| Error::forbidden(m).with_code(Code::CsrfFailed);
        if let Some(origin) = header_str(req, "origin") {
            let host = header_str(req, "host").unwrap_or("");
            let same = origin
                .split_once("://")
                .is_some_and(|(_, rest)| !host.is_empty() && rest == host);
            if !same && !self.cors_allowed(origin) {
                return Err(csrf_failed("cross-origin request refused"));
            }
        } else if header_str(req, "sec-fetch-site").is_some_and(|s| s == "cross-site") {
            return Err(csrf_failed("cross-site request refused"));
        }
        let token = header_str(req, auth::CSRF_HEADER)
            .ok_or_else(|| csrf_failed("missing X-CSRF-Token header"))?;
        let given = crypto::sha256_hex(token.as_bytes());
        if !crypto::ct_eq(given.as_bytes(), session.csrf_hash.as_bytes()) {
            return Err(csrf_failed("invalid X-CSRF-Token"));
        }
        Ok(())
    }

    /// The client address for lockouts: the configured edge header, a trusted
    /// `X-Forwarded-For`, or the peer address. IPv6 clients are bucketed by /64 (one customer's
    /// allocation), or rotating addresses would give unlimited attempts.
    fn client_ip(&self, req: &Request<Bytes>) -> String {
        let from_header = self
            .config
            .client_ip_header
            .as_deref()
            .and_then(|h| header_str(req, h))
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        // Proxies APPEND the address they saw: only the last entry comes from our proxy; the
        // first is whatever the client wrote.
        let forwarded = || {
            header_str(req, "x-forwarded-for")?
                .rsplit(',')
                .next()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
        };
        let ip = from_header
            .or_else(|| self.config.trust_forwarded_for.then(forwarded).flatten())
            .or_else(|| req.extensions().get::<ClientIp>().map(|c| c.0));
        match ip {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_default(),
            Some(ip) => ip.to_string(),
            None => "unknown".into(),
        }
    }

    async fn login(&self, req: &Request<Bytes>) -> Result<Response<Bytes>> {
        #[derive(serde::Deserialize)]
        struct Login {
            username: String,
            password: crate::credential::Secret,
        }
        let ip = self.client_ip(req);
        let now = self.now();
        let counter = format!("login:{ip}");
        let window_ms = self.config.login_window_secs * 1000;
        let hit = self
            .ports
            .sessions
            .hit(&counter, window_ms, self.config.login_max_attempts, now)
            .await?;
        let mut event = AuditEvent::new(now, format!("client:{ip}"), "login", "failure");
        if !hit.allowed {
            event.code = Some("rate_limited".into());
            event.status = Some(429);
            self.audit(event).await;
            let secs = crate::execute::retry_after_secs(hit.reset_at_ms, now);
            return Err(Error::new(
                ErrorKind::RateLimited,
                "too many login attempts; try again later",
            )
            .with_code(Code::LoginLocked)
            .with_retry_after(secs));
        }
        let input: Login = parse_json(req.body())?;
        let Some(hash) = &self.config.admin_password_hash else {
            return Err(Error::unavailable(
                "admin login is not configured (set ADMIN_PASSWORD_HASH)",
            )
            .with_code(Code::LoginNotConfigured));
        };
        // Always verify the password, so a wrong user name costs the same time as a wrong password.
        let pass_ok = crypto::verify_password(input.password.expose(), hash);
        let user_ok = crypto::ct_eq(
            input.username.as_bytes(),
            self.config.admin_username.as_bytes(),
        );
        if !(pass_ok && user_ok) {
            event.code = Some("invalid_login".into());
            event.status = Some(401);
            self.audit(event).await;
            return Err(
                Error::unauthorized("invalid username or password").with_code(Code::InvalidLogin)
            );
        }
        self.ports.sessions.reset_counter(&counter).await?;
        // Twin sessions: the bearer token for API clients, the cookie for browsers (see `auth`).
        let new_token =
            |prefix: &str| format!("{prefix}{}", crypto::b64url(&crypto::random_bytes::<32>()));
        let token = new_token(auth::BEARER_SESSION_PREFIX);
        let cookie = new_token(auth::COOKIE_SESSION_PREFIX);
        let (token_id, cookie_id) = (
            crypto::sha256_hex(token.as_bytes()),
            crypto::sha256_hex(cookie.as_bytes()),
        );
        let csrf = crypto::b64url(&crypto::random_bytes::<32>());
        let expires_at = now + self.config.session_absolute_secs * 1000;
        let record = SessionRecord {
            subject: self.config.admin_username.clone(),
            csrf_hash: crypto::sha256_hex(csrf.as_bytes()),
            created_at_ms: now,
            last_seen_ms: now,
            idle_timeout_ms: self.config.session_idle_secs * 1000,
            expires_at_ms: expires_at,
            via_cookie: false,
            twin: Some(cookie_id.clone()),
        };
        let cookie_record = SessionRecord {
            via_cookie: true,
            twin: Some(token_id.clone()),
            ..record.clone()
        };
        self.ports
            .sessions
            .create_session(&token_id, record)
            .await?;
        if let Err(e) = self
            .ports
            .sessions
            .create_session(&cookie_id, cookie_record)
            .await
        {
            // Never returned, so harmless; removed all the same. The login did not happen.
            let _ = self.ports.sessions.revoke_session(&token_id).await;
            event.code = Some(e.code().to_string());
            event.outcome = "error".into();
            self.audit(event).await;
            return Err(e);
        }
        event.actor = format!("admin:{}", self.config.admin_username);
        event.outcome = "success".into();
        event.status = Some(200);
        self.audit(event).await;
        let mut r = json_response(
            StatusCode::OK,
            &json!({"token": token, "expires_at": expires_at, "csrf_token": csrf}),
        );
        if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(
            &cookie,
            self.config.session_absolute_secs,
        )) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok(r)
    }

    async fn logout(&self, req: &Request<Bytes>) -> Result<Response<Bytes>> {
        let authed = self.authenticate_checked(req).await?;
        let who = authed.principal;
        let Principal::Admin { session_id, .. } = &who else {
            return Err(Error::bad_request(
                "logout ends admin sessions; revoke API keys with DELETE /v1/keys/{id}",
            )
            .with_code(Code::NotASession));
        };
        // The twin first: once the presented session is gone, a retry could not find it.
        if let Some(twin) = authed.session.as_ref().and_then(|s| s.twin.as_deref()) {
            self.ports.sessions.revoke_session(twin).await?;
        }
        self.ports.sessions.revoke_session(session_id).await?;
        let mut event = AuditEvent::new(self.now(), who.actor(), "logout", "success");
        event.status = Some(204);
        self.audit(event).await;
        let mut r = empty(StatusCode::NO_CONTENT);
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&auth::clear_cookie()).map_err(|_| Error::internal())?,
        );
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backends answer some errors without `App::handle` (a body too large or too slow, a worker
    /// that cannot open its store): those replies carry the same security headers.
    #[test]
    fn error_replies_built_outside_handle_carry_the_security_headers() {
        let r = error_response(&Error::too_large("request body is too large"));
        let h = r.headers();
        assert_eq!(h["content-security-policy"], crate::ui::API_CSP);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["cache-control"], "no-store");
    }
}
