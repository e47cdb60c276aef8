//! Admin sessions: login (with the per-client lockout and the per-user throttle), the twin
//! bearer and cookie sessions it makes, their lookup on each request, logout, and signing out
//! everywhere.
//!
//! # Session tokens
//!
//! A token is `vs_<random>.<generation>.<tag>` (`vc_…` for the cookie, see
//! [`SessionToken`]): 32 random bytes, the sign-out generation it was issued under, and an
//! HMAC-SHA256 tag over the prefix, the random bytes and the generation, keyed with a key
//! derived from the keyring's session-token purpose key ([`MacPurpose::SessionToken`]) and bound
//! to the admin user name and password hash ([`SessionKeys`]). So:
//! - a forged or mangled token is refused before any SessionStore call (no Durable Object call
//!   per guess on Workers);
//! - a new admin password hash (or user name) changes every tag: every session issued before
//!   it is refused, on both backends, with no store call
//!   (docs/decisions/0055-sessions-bound-to-the-password.md);
//! - signing out everywhere bumps the user's generation, a counter in the SessionStore read
//!   beside every session lookup: every token of an older generation is refused at once
//!   (docs/decisions/0057-sign-out-everywhere.md).
//!
//! The store keeps the session under the SHA-256 of the whole token, as before. Tokens from
//! before tagged tokens do not parse: their holders sign in again once
//! (docs/decisions/0058-self-authenticating-session-tokens.md).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::principal::{Authed, Permission, Principal};
use super::token::{SessionToken, BEARER_SESSION_PREFIX, COOKIE_SESSION_PREFIX};
use crate::audit::{AuditEvent, AuditLog};
use crate::crypto::{self, Keys, MacPurpose};
use crate::error::{retry_after_secs, Code, Error, ErrorKind, Result};
use crate::input::parse_json;
use crate::ports::{Ports, SessionRecord};
use crate::secret::Secret;

/// The domain label every session-token tag starts with.
const TAG_DOMAIN: &[u8] = b"vultrino/v1/session-token";

/// How long a user's sign-out generation counter lives (its SessionStore window): ten years.
/// When it ends the generation starts again from 0, which signs everyone out once.
const GENERATION_WINDOW_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The session-token MAC of one deployment, derived once when the app opens: keyed with
/// the keyring's [`MacPurpose::SessionToken`] MAC of the domain label, the admin user name and
/// the admin password hash, so a token verifies only under the user name and password hash it
/// was issued under. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct SessionKeys {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys([redacted])")
    }
}

impl SessionKeys {
    /// The session-token MAC for `admin_username` and `password_hash` (surrounding whitespace
    /// ignored, as login ignores it).
    pub fn new(keys: &Keys, admin_username: &str, password_hash: Option<&str>) -> Result<Self> {
        let mut label = Zeroizing::new(TAG_DOMAIN.to_vec());
        // Length-prefixed, so no two (user, hash) pairs give the same bytes.
        for part in [admin_username, password_hash.map_or("", str::trim)] {
            label.extend_from_slice(&(part.len() as u64).to_be_bytes());
            label.extend_from_slice(part.as_bytes());
        }
        let key = Zeroizing::new(keys.mac(MacPurpose::SessionToken, &label));
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).map_err(|_| Error::internal())?;
        Ok(SessionKeys { mac })
    }

    fn with_token(&self, prefix: &str, random: &[u8], generation: u32) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&(prefix.len() as u64).to_be_bytes());
        mac.update(prefix.as_bytes());
        mac.update(random);
        mac.update(&generation.to_be_bytes());
        mac
    }

    /// A new token with `prefix` for `generation`.
    fn issue(&self, prefix: &str, generation: u32) -> String {
        let random = crypto::random_bytes::<32>();
        let tag = self
            .with_token(prefix, &random, generation)
            .finalize()
            .into_bytes()
            .into();
        SessionToken {
            random,
            generation,
            tag,
        }
        .format(prefix)
    }

    /// Whether `token`'s tag is right (compared in constant time).
    fn verify(&self, prefix: &str, token: &SessionToken) -> bool {
        self.with_token(prefix, &token.random, token.generation)
            .verify_slice(&token.tag)
            .is_ok()
    }
}

/// Await two futures at once (two SessionStore calls in flight together).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

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
    /// Login attempts allowed for the admin user per window, from all clients together, before
    /// 429.
    pub max_attempts_per_user: u32,
    /// The lockout window (of both counters).
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
            .field("max_attempts_per_user", &self.max_attempts_per_user)
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
    keys: &'a SessionKeys,
    audit: AuditLog<'a>,
}

fn session_expired() -> Error {
    Error::unauthorized("session expired or logged out").with_code(Code::SessionExpired)
}

/// A token that was never a session of this deployment as it is now: made up, mangled, or
/// issued before the admin password changed (docs/decisions/0096-cli-and-api-habits.md).
fn invalid_session() -> Error {
    Error::unauthorized(
        "not a session token of this deployment (made up, mangled, or issued before the admin \
         password changed): log in again",
    )
    .with_code(Code::InvalidSession)
}

impl<'a> AdminSessions<'a> {
    pub(crate) fn new(
        ports: &'a Ports,
        settings: SessionSettings<'a>,
        keys: &'a SessionKeys,
        audit: AuditLog<'a>,
    ) -> Self {
        AdminSessions {
            ports,
            settings,
            keys,
            audit,
        }
    }

    /// The SessionStore counter holding the admin user's sign-out generation.
    fn generation_key(&self) -> String {
        format!("session-generation:{}", self.settings.admin_username)
    }

    /// The current sign-out generation (0 until the first sign-out everywhere). A hit with limit
    /// 0 is refused and so counts nothing: it reads the counter (and writes only when there is
    /// none yet), by the rules every SessionStore runs (`session_rules::hit`).
    async fn generation(&self, now: u64) -> Result<u32> {
        let key = self.generation_key();
        let hit = self
            .ports
            .sessions
            .hit(&key, GENERATION_WINDOW_MS, 0, now)
            .await?;
        Ok(hit.count)
    }

    /// Log in `client` (its lockout bucket, see [`super::client_ip`]) with the body of
    /// `POST /login` (`{username, password}`).
    ///
    /// Every attempt counts toward the client's lockout before anything else is looked at
    /// (429 `login_locked` with `Retry-After` once the window's attempts are used up); a
    /// success resets the count. Every attempt that reaches the password verification also
    /// counts toward the admin user's throttle, shared by all clients (the same 429 once
    /// `max_attempts_per_user` are used up in the window; a success resets it too). A wrong user
    /// name costs the same password verification as a wrong password. (The route refuses
    /// cross-site and non-JSON requests before this is called, so a web page cannot spend the
    /// attempts.) Successes are audited as the admin; failures are unauthenticated events
    /// ([`AuditLog::record_unauthenticated`]), and the refused attempts past either throttle are
    /// one event per throttle window, with their count ([`AuditLog::record_repeated`]).
    ///
    /// `access` is the request's Cloudflare Access identity, recorded in the actor of every
    /// event of the attempt (`client:… access:alice@example.com`, `admin:admin access:…`).
    pub async fn login(&self, client: &str, access: Option<&str>, body: &[u8]) -> Result<Login> {
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
        let with_access = |actor: String| match access {
            Some(identity) => format!("{actor} access:{identity}"),
            None => actor,
        };
        let mut event = AuditEvent::new(
            now,
            with_access(format!("client:{client}")),
            "login",
            "failure",
        );
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
        // A body that is not `{username, password}` was counted above like any attempt, and is
        // audited like a failed login (with its own code); it never reaches the per-user
        // throttle, as it names no user to guess for.
        let input: Input = match parse_json(body) {
            Ok(input) => input,
            Err(e) => {
                event.code = Some(e.code().as_str().into());
                event.status = Some(e.status().as_u16());
                self.audit.record_unauthenticated(event).await;
                return Err(e);
            }
        };
        let Some(hash) = s.password_hash else {
            return Err(Error::unavailable(
                "admin login is not configured (set ADMIN_PASSWORD_HASH)",
            )
            .with_code(Code::LoginNotConfigured));
        };
        // The per-user throttle: whatever user name was given, every verification counts against
        // the one admin user, from every client together (docs/decisions/0056-password-floors.md).
        let user_counter = format!("login-user:{}", s.admin_username);
        let user_hit = self
            .ports
            .sessions
            .hit(
                &user_counter,
                s.window_secs * 1000,
                s.max_attempts_per_user,
                now,
            )
            .await?;
        if !user_hit.allowed {
            event.code = Some(Code::LoginLocked.as_str().into());
            event.status = Some(429);
            self.audit
                .record_repeated(
                    &user_counter,
                    user_hit.reset_at_ms,
                    s.window_secs * 1000,
                    event,
                )
                .await;
            return Err(Error::new(
                ErrorKind::RateLimited,
                "too many login attempts for this user; try again later",
            )
            .with_code(Code::LoginLocked)
            .with_retry_after(retry_after_secs(user_hit.reset_at_ms, now)));
        }
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
        self.ports.sessions.reset_counter(&user_counter).await?;
        // Twin sessions: the bearer token for API clients, the cookie for browsers, both of the
        // current sign-out generation.
        let generation = self.generation(now).await?;
        let token = self.keys.issue(BEARER_SESSION_PREFIX, generation);
        let cookie = self.keys.issue(COOKIE_SESSION_PREFIX, generation);
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
        event.actor = with_access(format!("admin:{}", s.admin_username));
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
    /// 401 `session_expired` for a session that ended (expired, logged out, signed out
    /// everywhere); 401 `invalid_session` for a token that never was one.
    ///
    /// The token's tag is checked first, in constant time: a token that is not one this
    /// deployment issued under its current admin user name and password hash (forged, mangled,
    /// from before tagged tokens, or from before a password change) is refused
    /// (`invalid_session`) with no SessionStore call. Then the session and the user's sign-out generation are read together:
    /// a token of an older generation is refused. A record without a twin is from before twin
    /// sessions, when the cookie was the bearer token: refused.
    pub async fn session(&self, token: &str, via_cookie: bool) -> Result<Authed> {
        let prefix = if via_cookie {
            COOKIE_SESSION_PREFIX
        } else {
            BEARER_SESSION_PREFIX
        };
        let parsed = SessionToken::parse(token, prefix).ok_or_else(invalid_session)?;
        if !self.keys.verify(prefix, &parsed) {
            return Err(invalid_session());
        }
        let id = crypto::sha256_hex(token.as_bytes());
        let now = self.ports.now_ms();
        let (record, generation) = both(
            self.ports.sessions.touch_session(&id, now),
            self.generation(now),
        )
        .await;
        let (record, generation) = (record?, generation?);
        if generation != parsed.generation {
            return Err(session_expired());
        }
        let record = record
            .filter(|r| r.via_cookie == via_cookie && r.twin.is_some())
            .ok_or_else(session_expired)?;
        Ok(Authed {
            principal: Principal::Admin {
                subject: record.subject.clone(),
                session_id: id,
                via_cookie,
                access: None,
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

    /// Sign out everywhere: end every session of the admin user at once, on every instance, by
    /// moving the user to a new sign-out generation (sessions of older generations are refused
    /// from the next request on), and remove the caller's own session and its twin. Needs the
    /// `admin` permission: an admin session, or an API key with the `admin` role (for scripts
    /// that react to a leaked session).
    pub async fn sign_out_everywhere(&self, authed: &Authed) -> Result<()> {
        authed.principal.require(Permission::Admin)?;
        let now = self.ports.now_ms();
        let key = self.generation_key();
        let hit = self
            .ports
            .sessions
            .hit(&key, GENERATION_WINDOW_MS, u32::MAX, now)
            .await?;
        if !hit.allowed {
            // 2^32 sign-outs in one generation window: not reachable in practice.
            return Err(Error::unavailable(
                "the sign-out generation counter is full",
            ));
        }
        if let Principal::Admin { session_id, .. } = &authed.principal {
            // Dead already by their generation; removed so nothing of them is left.
            if let Some(twin) = authed.session.as_ref().and_then(|s| s.twin.as_deref()) {
                self.ports.sessions.revoke_session(twin).await?;
            }
            self.ports.sessions.revoke_session(session_id).await?;
        }
        let mut event = AuditEvent::new(
            now,
            authed.principal.actor(),
            "logout.everywhere",
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crypto::MasterSecret;
    use crate::ports::session_rules;

    fn keys() -> Keys {
        let (master, _) = MasterSecret::generate_raw();
        Keys::create(&master, 1, 0).unwrap().0
    }

    const HASH: &str = "$pbkdf2-sha256$i=100000,l=32$c2FsdA$aGFzaA";

    /// A token verifies only under the deployment's keys, the user name and password hash it was
    /// issued under, its own prefix, and with every byte as issued.
    #[test]
    fn a_session_token_verifies_only_as_it_was_issued() {
        let keys = keys();
        let sk = SessionKeys::new(&keys, "admin", Some(HASH)).unwrap();
        let token = sk.issue(BEARER_SESSION_PREFIX, 3);
        let parsed = SessionToken::parse(&token, BEARER_SESSION_PREFIX).unwrap();
        assert_eq!(parsed.generation, 3);
        assert!(sk.verify(BEARER_SESSION_PREFIX, &parsed));
        // Whitespace around the stored hash is no other hash (login ignores it too).
        let spaced = SessionKeys::new(&keys, "admin", Some(&format!(" {HASH}\n"))).unwrap();
        assert!(spaced.verify(BEARER_SESSION_PREFIX, &parsed));

        let new_hash = HASH.replace("aGFzaA", "aGFzaB");
        for (what, other) in [
            (
                "another password hash",
                SessionKeys::new(&keys, "admin", Some(&new_hash)),
            ),
            ("no password hash", SessionKeys::new(&keys, "admin", None)),
            (
                "another user name",
                SessionKeys::new(&keys, "ops", Some(HASH)),
            ),
            (
                "another deployment",
                SessionKeys::new(&self::keys(), "admin", Some(HASH)),
            ),
        ] {
            assert!(
                !other.unwrap().verify(BEARER_SESSION_PREFIX, &parsed),
                "{what}"
            );
        }
        assert!(!sk.verify(COOKIE_SESSION_PREFIX, &parsed), "another prefix");
        let mut other_generation = parsed.clone();
        other_generation.generation = 4;
        assert!(!sk.verify(BEARER_SESSION_PREFIX, &other_generation));
        for i in 0..32 {
            let mut flipped = parsed.clone();
            flipped.random[i] ^= 1;
            assert!(
                !sk.verify(BEARER_SESSION_PREFIX, &flipped),
                "random byte {i}"
            );
            let mut flipped = parsed.clone();
            flipped.tag[i] ^= 0x80;
            assert!(!sk.verify(BEARER_SESSION_PREFIX, &flipped), "tag byte {i}");
        }
        assert_ne!(
            sk.issue(BEARER_SESSION_PREFIX, 3),
            token,
            "random each time"
        );
        assert_eq!(format!("{sk:?}"), "SessionKeys([redacted])");
    }

    /// The sign-out generation is read with a hit of limit 0: by the rules both stores run, such
    /// a hit counts nothing and reports the count as it is.
    #[test]
    fn a_hit_with_limit_zero_reads_the_generation_without_changing_it() {
        let w = GENERATION_WINDOW_MS;
        let mut slot = None;
        let (_, read) = session_rules::hit(&mut slot, w, 0, 10);
        assert_eq!(
            (read.allowed, read.count),
            (false, 0),
            "no counter yet: generation 0"
        );
        for expected in 1..=3 {
            let (_, bump) = session_rules::hit(&mut slot, w, u32::MAX, 20);
            assert_eq!((bump.allowed, bump.count), (true, expected));
            for now in [20, 30, w] {
                let (change, read) = session_rules::hit(&mut slot, w, 0, now);
                assert_eq!(read.count, expected);
                assert_eq!(change, session_rules::Change::Keep, "a read writes nothing");
            }
        }
    }
}
