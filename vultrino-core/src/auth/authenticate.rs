//! One request in, one [`Principal`] out: `Authorization: Bearer` with an API key (`vk_`) or an
//! agent token (`vt_`), or a
//! bearer session (`vs_`), or the session cookie (`vc_`, with the CSRF rule).

use bytes::Bytes;
use http::Request;

use super::csrf;
use super::keys::ApiKeys;
use super::principal::{Authed, Principal};
use super::session::AdminSessions;
use super::token::{
    bearer, cookie_tokens, is_agent_credential, Bearer, BEARER_SESSION_PREFIX,
    COOKIE_SESSION_PREFIX,
};
use crate::error::{Code, Error, Result};

/// Authenticates requests for one deployment.
#[derive(Clone, Copy)]
pub struct Authenticator<'a> {
    keys: ApiKeys<'a>,
    sessions: AdminSessions<'a>,
    cors_origins: &'a [String],
}

fn unauthenticated() -> Error {
    Error::unauthorized("authentication required: a Bearer API key or an admin session")
        .with_code(Code::Unauthenticated)
}

impl<'a> Authenticator<'a> {
    #[inline]
    pub(crate) fn new(
        keys: ApiKeys<'a>,
        sessions: AdminSessions<'a>,
        cors_origins: &'a [String],
    ) -> Self {
        Authenticator {
            keys,
            sessions,
            cors_origins,
        }
    }

    /// The caller of `req`, however it authenticated; cookie sessions (every request, reads
    /// included) must also pass the CSRF rule ([`csrf::check`]).
    pub async fn principal(&self, req: &Request<Bytes>) -> Result<Principal> {
        Ok(self.authenticate(req).await?.principal)
    }

    /// [`Self::principal`], keeping the session record.
    /// The request's Cloudflare Access identity (if any) is recorded in the principal.
    pub async fn authenticate(&self, req: &Request<Bytes>) -> Result<Authed> {
        let mut authed = self.any(req).await?;
        authed.principal = authed
            .principal
            .with_access(req.extensions().get::<super::AccessIdentity>());
        if let (
            Principal::Admin {
                via_cookie: true, ..
            },
            Some(session),
        ) = (&authed.principal, &authed.session)
        {
            // Reads too: the cookie reaches every port of this host, the token only this page.
            csrf::check(req.headers(), session, self.cors_origins)?;
        }
        Ok(authed)
    }

    async fn any(&self, req: &Request<Bytes>) -> Result<Authed> {
        match bearer(req.headers()) {
            Bearer::Token(token) if is_agent_credential(token) => {
                let principal = self.keys.authenticate(token).await?;
                return Ok(Authed {
                    principal,
                    session: None,
                });
            }
            Bearer::Token(token) if token.starts_with(BEARER_SESSION_PREFIX) => {
                return self.sessions.session(token, false).await;
            }
            Bearer::Token(_) | Bearer::Malformed => return Err(unauthenticated()),
            Bearer::Absent => {}
        }
        // Every `vultrino_session` cookie is tried (a few at most): a page on another port of
        // this host can plant one with a narrower path, which browsers then send first.
        let mut refused = None;
        if let Some(header) = req
            .headers()
            .get(http::header::COOKIE)
            .and_then(|v| v.to_str().ok())
        {
            for token in cookie_tokens(header)
                .filter(|t| t.starts_with(COOKIE_SESSION_PREFIX))
                .take(4)
            {
                match self.sessions.session(token, true).await {
                    Ok(authed) => return Ok(authed),
                    Err(e) => refused = Some(e),
                }
            }
        }
        Err(refused.unwrap_or_else(unauthenticated))
    }

    /// An agent: `Authorization: Bearer vk_…` and nothing else (no session, no cookie). For
    /// `/mcp`, where a cookie would make the endpoint a CSRF target.
    pub async fn agent(&self, headers: &http::HeaderMap) -> Result<Principal> {
        match bearer(headers) {
            Bearer::Token(token) if is_agent_credential(token) => {
                self.keys.authenticate(token).await
            }
            _ => Err(Error::unauthorized(
                "authentication required: Authorization: Bearer vk_… (an API key) or vt_… (an \
                 agent token)",
            )
            .with_code(Code::Unauthenticated)),
        }
    }
}
