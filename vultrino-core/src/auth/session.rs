//! Admin sessions: login (with the per-client lockout), the twin bearer and cookie sessions it
//! makes, their lookup on each request, and logout.

use super::principal::{Authed, Principal};
use super::token::{BEARER_SESSION_PREFIX, COOKIE_SESSION_PREFIX};
use crate::audit::{AuditEvent, AuditLog};
use crate::crypto;
use crate::error::{retry_after_secs, Code, Error, ErrorKind, Result};
use crate::input::parse_json;
use crate::ports::{Ports, SessionRecord};
use crate::secret::Secret;

/// The session and login settings of a deployment (from
/// [`Config`](crate::app::Config)). `Debug` shows whether a password hash is set, not the hash.
#[derive(Clone, Copy)]
pub struct SessionSettings<'a> {
    /// The admin user name.
    pub admin_username: &'a str,
    /// PHC hash of the admin password; `None` disables login (503).
    pub password_hash: Option<&'a str>,
    /// Sessions die after this long unused.
    pub idle_secs: u64,
    /// Sessions die this long after login whatever their use.
    pub absolute_secs: u64,
    /// Login attempts allowed per client per window before 429.
    pub max_attempts: u32,
    /// The lockout window.
    pub window_secs: u64,
}

impl std::fmt::Debug for SessionSettings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("admin_username", &self.admin_username)
            .field("login_configured", &self.password_hash.is_some())
            .field("idle_secs", &self.idle_secs)
            .field("absolute_secs", &self.absolute_secs)
            .field("max_attempts", &self.max_attempts)
            .field("window_secs", &self.window_secs)
            .finish()
    }
}

/// A successful login: the bearer token and CSRF token to return, and the cookie to set. Shown
/// once; `Debug` prints neither token.
pub struct Login {
    /// `vs_…`, for `Authorization: Bearer`.
    pub token: String,
    /// `vc_…`, the twin session for the browser's cookie.
    pub cookie: String,
    /// Sent back by the page with every cookie request.
    pub csrf_token: String,
    /// The absolute expiry of both sessions (ms since the epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The admin sessions of one deployment.
#[derive(Clone, Copy)]
pub struct AdminSessions<'a> {
    ports: &'a Ports,
    settings: SessionSettings<'a>,
    audit: AuditLog<'a>,
}

impl<'a> AdminSessions<'a> {
    pub(crate) fn new(
        ports: &'a Ports,
        settings: SessionSettings<'a>,
        audit: AuditLog<'a>,
    ) -> Self {
        AdminSessions {
            ports,
            settings,
            audit,
        }
    }

    /// Log in `client` (its lockout bucket, see [`super::client_ip`]) with the body of
    /// `POST /login` (`{username, password}`).
    ///
    /// Every attempt counts toward the client's lockout before anything else is looked at
    /// (429 `login_locked` with `Retry-After` once the window's attempts are used up); a
    /// success resets the count. A wrong user name costs the same password verification as a
    /// wrong password. (The route refuses cross-site and non-JSON requests before this is
    /// called, so a web page cannot spend the attempts.) Successes are audited as the admin;
    /// failures are unauthenticated events ([`AuditLog::record_unauthenticated`]), and the
    /// refused attempts of a locked-out client are one event per lockout window, with their
    /// count ([`AuditLog::record_repeated`]).
    pub async fn login(&self, client: &str, body: &[u8]) -> Result<Login> {
        #[derive(serde::Deserialize)]
        struct Input {
            username: String,
            password: Secret,
        }
        let s = &self.settings;
        let now = self.ports.now_ms();
        let counter = format!("login:{client}");
        let hit = self
            .ports
            .sessions
            .hit(&counter, s.window_secs * 1000, s.max_attempts, now)
            .await?;
        let mut event = AuditEvent::new(now, format!("client:{client}"), "login", "failure");
        if !hit.allowed {
            event.code = Some(Code::LoginLocked.as_str().into());
            event.status = Some(429);
            self.audit
                .record_repeated(&counter, hit.reset_at_ms, s.window_secs * 1000, event)
                .await;
            return Err(Error::new(
                ErrorKind::RateLimited,
                "too many login attempts; try again later",
            )
            .with_code(Code::LoginLocked)
            .with_retry_after(retry_after_secs(hit.reset_at_ms, now)));
        }
        let input: Input = parse_json(body)?;
        let Some(hash) = s.password_hash else {
            return Err(Error::unavailable(
                "admin login is not configured (set ADMIN_PASSWORD_HASH)",
            )
            .with_code(Code::LoginNotConfigured));
        };
        // Always verify the password, so a wrong user name costs the same time as a wrong password.
        let pass_ok = crypto::verify_password(input.password.expose(), hash);
        let user_ok = crypto::ct_eq(input.username.as_bytes(), s.admin_username.as_bytes());
        if !(pass_ok && user_ok) {
            event.code = Some(Code::InvalidLogin.as_str().into());
            event.status = Some(401);
            self.audit.record_unauthenticated(event).await;
            return Err(
                Error::unauthorized("invalid username or password").with_code(Code::InvalidLogin)
            );
        }
        self.ports.sessions.reset_counter(&counter).await?;
        // Twin sessions: the bearer token for API clients, the cookie for browsers.
        let new_token =
            |prefix: &str| format!("{prefix}{}", crypto::b64url(&crypto::random_bytes::<32>()));
        let token = new_token(BEARER_SESSION_PREFIX);
        let cookie = new_token(COOKIE_SESSION_PREFIX);
        let (token_id, cookie_id) = (
            crypto::sha256_hex(token.as_bytes()),
            crypto::sha256_hex(cookie.as_bytes()),
        );
        let csrf_token = crypto::b64url(&crypto::random_bytes::<32>());
        let expires_at = now + s.absolute_secs * 1000;
        let record = SessionRecord {
            subject: s.admin_username.to_owned(),
            csrf_hash: crypto::sha256_hex(csrf_token.as_bytes()),
            created_at_ms: now,
            last_seen_ms: now,
            idle_timeout_ms: s.idle_secs * 1000,
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
            event.code = Some(e.code().as_str().to_string());
            event.outcome = "error".into();
            self.audit.record_unauthenticated(event).await;
            return Err(e);
        }
        event.actor = format!("admin:{}", s.admin_username);
        event.outcome = "success".into();
        event.status = Some(200);
        self.audit.record(event).await;
        Ok(Login {
            token,
            cookie,
            csrf_token,
            expires_at,
        })
    }

    /// The live session of `token`, presented the way it was issued (`via_cookie`), marked used.
    /// 401 `session_expired` otherwise. A record without a twin is from before twin sessions,
    /// when the cookie was the bearer token: refused.
    pub async fn session(&self, token: &str, via_cookie: bool) -> Result<Authed> {
        let id = crypto::sha256_hex(token.as_bytes());
        let record = self
            .ports
            .sessions
            .touch_session(&id, self.ports.now_ms())
            .await?
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

    /// End the session `authed` came with, and its twin, at once (400 `not_a_session` for an
    /// API key).
    pub async fn logout(&self, authed: &Authed) -> Result<()> {
        let Principal::Admin { session_id, .. } = &authed.principal else {
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
        let mut event = AuditEvent::new(
            self.ports.now_ms(),
            authed.principal.actor(),
            "logout",
            "success",
        );
        event.status = Some(204);
        self.audit.record(event).await;
        Ok(())
    }

    /// How long the session cookie lives (its `Max-Age`).
    pub fn cookie_max_age_secs(&self) -> u64 {
        self.settings.absolute_secs
    }
}
