//! Cloudflare Access as an extra authentication layer: a deployment behind Access (the worker,
//! or the local server behind a Cloudflare Tunnel) requires a valid Access token on top of its
//! own authentication (docs/decisions/0081-cloudflare-access-layer.md).
//!
//! The token comes from the `Cf-Access-Jwt-Assertion` header (the `CF_Authorization` cookie as
//! a fallback, for the admin UI in a browser). It is checked in this order, each failure a 403
//! `access_denied`:
//!
//! 1. size limits (the token, its header segment, its signature) and shape (three base64url
//!    segments);
//! 2. the header's `alg` is `RS256` — `none`, `HS*` and every other algorithm are refused before
//!    any key is looked up — and it names a `kid`;
//! 3. the claims: `iss` is `https://<team domain>`, `aud` contains the application's AUD tag,
//!    `exp` and `nbf` hold with [`LEEWAY_MS`] of leeway (time from the [`Clock`](crate::ports::Clock)
//!    port), and an identity (`email`, or `common_name` for a service token) is named;
//! 4. the key `kid` is in the team's key set (`https://<team>/cdn-cgi/access/certs`, fetched
//!    through the [`Fetcher`](crate::ports::Fetcher) port and cached; see [`AccessKeys`]);
//! 5. the signature, through the [`Rs256Verifier`] port.
//!
//! The key set unreachable with no usable cached key is a 503 `access_unavailable`: the request
//! never goes through. Which routes need a token is [`AccessMode`]'s; a CORS preflight
//! (`OPTIONS`) and `GET /healthz` never do.

use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;

use crate::error::{Code, Error, Result};
use crate::ports::{Clock, FetchOptions, Fetcher, Rs256Verifier};

/// The request header Cloudflare Access sets to the token.
pub const TOKEN_HEADER: &str = "cf-access-jwt-assertion";
/// The cookie Cloudflare Access sets in a browser (the fallback when the header is absent).
pub const TOKEN_COOKIE: &str = "CF_Authorization";
/// Leeway on `exp` and `nbf`, for clocks a little apart.
pub const LEEWAY_MS: u64 = 60_000;
/// Largest token accepted, in bytes (Access tokens are 1–2 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest header segment accepted (base64url characters).
pub const MAX_HEADER_SEGMENT: usize = 1024;
/// Largest signature accepted, in bytes (a 4096-bit key's).
pub const MAX_SIGNATURE_BYTES: usize = 512;
/// Largest key set (JWKS) body accepted.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys kept from one key set.
pub const MAX_JWKS_KEYS: usize = 32;
/// Deadline of one key set fetch.
pub const JWKS_TIMEOUT_MS: u64 = 10_000;
/// An unknown `kid` refetches the key set at most this often (and so does a stale key set).
pub const REFETCH_INTERVAL_MS: u64 = 60_000;
/// A key set older than this is refetched when next used (its keys are kept if that fails).
pub const JWKS_MAX_AGE_MS: u64 = 60 * 60 * 1000;
/// After a failed fetch with nothing cached, the next fetch waits this long (503 meanwhile).
pub const RETRY_AFTER_FAILURE_MS: u64 = 5_000;
/// Smallest and largest RSA modulus accepted from the key set, in bytes (2048–4096 bits).
const MIN_MODULUS_BYTES: usize = 256;
const MAX_MODULUS_BYTES: usize = 512;
/// Longest identity (`email` or `common_name`) accepted.
const MAX_IDENTITY_CHARS: usize = 256;

/// Which routes need an Access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// The admin surface: login, logout, the admin API and the UI — every route but
    /// `GET /healthz` and the agents' routes (`/v1/execute`, `/api/v1/execute`, `/mcp`,
    /// `/proxy/…`). The default.
    #[default]
    Admin,
    /// Every route but `GET /healthz`: agents too (with Access service tokens).
    All,
}

impl AccessMode {
    /// `admin` or `all` (case-insensitive); anything else is `None`.
    pub fn parse(s: &str) -> Option<AccessMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Some(AccessMode::Admin),
            "all" => Some(AccessMode::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Admin => "admin",
            AccessMode::All => "all",
        }
    }
}

/// The Access settings of a deployment ([`Config::access`](crate::app::Config)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// The team domain, a bare host: `<team>.cloudflareaccess.com` (see [`team_domain`]).
    pub team_domain: String,
    /// The Access application's AUD tag.
    pub aud: String,
    pub mode: AccessMode,
    /// TESTS AND ADVANCED USE ONLY: where the key set is fetched instead of
    /// `https://<team domain>/cdn-cgi/access/certs` (a loopback server in the tests). The
    /// tokens' `iss` must still be the team URL.
    pub certs_url: Option<String>,
}

impl AccessConfig {
    /// The `iss` every token must carry: `https://<team domain>`.
    pub fn issuer(&self) -> String {
        format!("https://{}", self.team_domain)
    }

    /// Where the key set is fetched.
    pub fn certs_url(&self) -> String {
        match &self.certs_url {
            Some(url) => url.clone(),
            None => format!("https://{}/cdn-cgi/access/certs", self.team_domain),
        }
    }

    /// What is wrong with these settings, if anything ([`Config::validate`](crate::app::Config)).
    pub(crate) fn problem(&self) -> Option<(AccessSetting, &'static str)> {
        if !is_host(&self.team_domain) {
            return Some((
                AccessSetting::TeamDomain,
                "must be the team domain, e.g. myteam.cloudflareaccess.com",
            ));
        }
        let aud = self.aud.as_str();
        if aud.is_empty() || aud.len() > 256 || !aud.bytes().all(|b| b.is_ascii_graphic()) {
            return Some((
                AccessSetting::Aud,
                "must be the Access application's AUD tag (printable, no spaces)",
            ));
        }
        if let Some(url) = &self.certs_url {
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                return Some((AccessSetting::CertsUrl, "must be an http(s) URL"));
            }
        }
        None
    }
}

/// Which Access setting [`AccessConfig::problem`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessSetting {
    TeamDomain,
    Aud,
    CertsUrl,
}

/// The team domain as a bare host: `https://`, a trailing `/` and case are dropped, so
/// `https://MyTeam.cloudflareaccess.com/` is `myteam.cloudflareaccess.com`.
pub fn team_domain(input: &str) -> String {
    let s = input.trim();
    let s = s.strip_prefix("https://").unwrap_or(s);
    s.trim_end_matches('/').to_ascii_lowercase()
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The Access identity of a request that passed the check: its `email`, or `common_name` for
/// a service token. Put in the request's extensions, it becomes part of the actor in audit
/// events (`admin:admin access:alice@example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessIdentity(pub String);

/// Whether `method path` needs an Access token in `mode`. Anything that is not exactly an
/// exempt route needs one (an unknown path too: fail closed).
pub fn requires_token(mode: AccessMode, method: &http::Method, path: &str) -> bool {
    // A CORS preflight is answered by the App itself, never routed; but an `OPTIONS` on the
    // proxy is forwarded to the upstream with the credential, so it is checked like any method.
    if method == http::Method::OPTIONS && !crate::proxy::route::is_proxy_path(path) {
        return false;
    }
    // The router's view of the path (it ignores a trailing `/`).
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if segs.as_slice() == ["healthz"] {
        return false;
    }
    match mode {
        AccessMode::All => true,
        AccessMode::Admin => {
            let agent_route = matches!(
                segs.as_slice(),
                ["v1", "execute"] | ["api", "v1", "execute"] | ["mcp"]
            ) || crate::proxy::route::is_proxy_path(path);
            !agent_route
        }
    }
}

fn denied(why: &'static str) -> Error {
    Error::forbidden(format!("Cloudflare Access: {why}")).with_code(Code::AccessDenied)
}

fn unavailable(why: &'static str) -> Error {
    Error::unavailable(format!("Cloudflare Access: {why}")).with_code(Code::AccessUnavailable)
}

/// The token of a request: the header, else the cookie. `None` when neither is there.
pub fn token(headers: &http::HeaderMap) -> Option<Result<&str>> {
    if let Some(v) = headers.get(TOKEN_HEADER) {
        return Some(
            v.to_str()
                .map(str::trim)
                .map_err(|_| denied("the token is not a JWT")),
        );
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == TOKEN_COOKIE).then(|| Ok(value.trim()))
        })
}

/// The JSON object of a token segment (its header or its claims); anything else is no JWT.
fn object(segment: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(&b64(segment)?) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(denied("the token is not a JWT")),
    }
}

fn string<'m>(map: &'m serde_json::Map<String, serde_json::Value>, key: &str) -> Option<&'m str> {
    map.get(key).and_then(serde_json::Value::as_str)
}

/// A JWT's time claim in milliseconds (seconds since the epoch, whole or not).
fn time_ms(n: &serde_json::Value) -> Option<u64> {
    let secs = n.as_f64()?;
    (secs.is_finite() && (0.0..1e13).contains(&secs)).then_some((secs * 1000.0) as u64)
}

fn b64(segment: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| denied("the token is not a JWT"))
}

/// A token taken apart and checked up to (not including) its signature.
struct Parsed<'t> {
    kid: String,
    signing_input: &'t str,
    signature: Vec<u8>,
    identity: String,
}

fn parse<'t>(config: &AccessConfig, token: &'t str, now_ms: u64) -> Result<Parsed<'t>> {
    if token.is_empty() {
        return Err(denied("no token (Cf-Access-Jwt-Assertion)"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(denied("the token is too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(denied("the token is not a JWT"));
    };
    if h.len() > MAX_HEADER_SEGMENT || s.len() > MAX_SIGNATURE_BYTES.div_ceil(3) * 4 {
        return Err(denied("the token is too large"));
    }
    let header = object(h)?;
    // Before anything else is looked at: only RS256 (no `none`, no HMAC with a public key).
    if string(&header, "alg") != Some("RS256") {
        return Err(denied("only RS256 tokens are accepted"));
    }
    if header.contains_key("crit") {
        return Err(denied(
            "the token has critical extensions this server does not know",
        ));
    }
    let kid = string(&header, "kid")
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| denied("the token names no key (kid)"))?
        .to_string();
    let claims = object(p)?;
    if string(&claims, "iss") != Some(config.issuer().as_str()) {
        return Err(denied("the token is from another team (iss)"));
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == &config.aud,
        Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(&config.aud)),
        _ => false,
    };
    if !aud_ok {
        return Err(denied("the token is for another application (aud)"));
    }
    let exp = claims
        .get("exp")
        .and_then(time_ms)
        .ok_or_else(|| denied("the token has no valid expiry (exp)"))?;
    if now_ms >= exp.saturating_add(LEEWAY_MS) {
        return Err(denied("the token has expired"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = time_ms(nbf).ok_or_else(|| denied("the token's nbf is not a time"))?;
        if now_ms.saturating_add(LEEWAY_MS) < nbf {
            return Err(denied("the token is not valid yet (nbf)"));
        }
    }
    let identity = [string(&claims, "email"), string(&claims, "common_name")]
        .into_iter()
        .flatten()
        .find(|i| !i.is_empty())
        .map(str::to_string)
        .filter(|i| {
            i.chars().count() <= MAX_IDENTITY_CHARS
                && !i
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || crate::input::is_format(c))
        })
        .ok_or_else(|| denied("the token names no identity (email or common_name)"))?;
    let signature = b64(s)?;
    Ok(Parsed {
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
        identity,
    })
}

/// One RSA key of the team's key set.
#[derive(Clone, PartialEq, Eq)]
struct Jwk {
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// The RSA signing keys of a key set body; keys that are not RS256 signing keys are skipped.
fn parse_jwks(body: &[u8]) -> Option<Vec<Jwk>> {
    let set: serde_json::Value = serde_json::from_slice(body).ok()?;
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    };
    let keys = set
        .get("keys")?
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_object)
        .filter(|k| {
            // `alg` and `use` may be absent; when given they must say RS256 signing.
            let absent_or =
                |key: &str, want: &str| k.get(key).is_none_or(|v| v.as_str() == Some(want));
            string(k, "kty") == Some("RSA")
                && absent_or("alg", "RS256")
                && absent_or("use", "sig")
                && string(k, "kid").is_some_and(|kid| !kid.is_empty() && kid.len() <= 256)
        })
        .filter_map(|k| {
            let n = strip_zeros(decode(string(k, "n")?)?);
            let e = strip_zeros(decode(string(k, "e")?)?);
            ((MIN_MODULUS_BYTES..=MAX_MODULUS_BYTES).contains(&n.len())
                && (1..=8).contains(&e.len()))
            .then(|| Jwk {
                kid: string(k, "kid").unwrap_or_default().to_string(),
                n,
                e,
            })
        })
        .take(MAX_JWKS_KEYS)
        .collect();
    Some(keys)
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|b| **b == 0).count();
    v.drain(..lead);
    v
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Jwk>,
    /// When `keys` was fetched (`None`: never).
    fetched_at_ms: Option<u64>,
    /// The last refetch of a key set already held (unknown `kid`, or stale).
    last_refetch_ms: Option<u64>,
    /// The last failed fetch while nothing was held.
    last_failure_ms: Option<u64>,
    /// A first fetch (nothing held yet) is in flight: other requests wait for it.
    first_fetch_in_flight: bool,
    /// The requests waiting for that fetch.
    waiters: Vec<std::task::Waker>,
}

impl KeySet {
    fn find(&self, kid: &str) -> Option<Jwk> {
        self.keys.iter().find(|k| k.kid == kid).cloned()
    }
}

/// The team's key set, cached for this process (isolate on Workers).
///
/// - Nothing held: fetched on first use; a failure is a 503 and the next attempt waits
///   [`RETRY_AFTER_FAILURE_MS`].
/// - An unknown `kid`: the key set is fetched again, at most once per [`REFETCH_INTERVAL_MS`]
///   (a rotated key is picked up by it); still unknown → 403.
/// - A key set older than [`JWKS_MAX_AGE_MS`] is fetched again on use (same pace); if that
///   fails its keys stay in use (stale beats locked out), if it succeeds a key no longer listed
///   is refused.
#[derive(Default)]
pub(crate) struct AccessKeys {
    state: Mutex<KeySet>,
}

enum Plan {
    Use(Jwk),
    Refuse(Error),
    /// The first fetch is another request's, in flight: wait for it, then plan again.
    Wait,
    /// `first`: nothing is held yet (this request's fetch is the one others wait for).
    Fetch {
        fallback: Option<Jwk>,
        first: bool,
    },
}

/// Whether requests wait for a first fetch in flight instead of fetching too. Not on Workers:
/// there the waiting request would be woken, and go on with its I/O, from the fetching
/// request's context, which workerd ties that I/O to (an isolate's cold start is one burst
/// of fetches at most, as before).
const WAIT_FOR_FIRST_FETCH: bool = !cfg!(target_arch = "wasm32");

/// Waits until the first fetch of the key set in flight is over (or abandoned).
struct FirstFetch<'k>(&'k AccessKeys);

impl std::future::Future for FirstFetch<'_> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !s.first_fetch_in_flight {
            return std::task::Poll::Ready(());
        }
        if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            s.waiters.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}

/// Ends the first fetch when dropped (done, failed, or its request gone): the waiters plan
/// again.
struct FirstFetchDone<'k>(&'k AccessKeys);

impl Drop for FirstFetchDone<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.first_fetch_in_flight = false;
            std::mem::take(&mut s.waiters)
        };
        waiters.into_iter().for_each(std::task::Waker::wake);
    }
}

impl AccessKeys {
    fn plan(&self, kid: &str, now: u64) -> Plan {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(fetched_at) = s.fetched_at_ms else {
            if s.last_failure_ms
                .is_some_and(|t| now.saturating_sub(t) < RETRY_AFTER_FAILURE_MS)
            {
                return Plan::Refuse(unavailable("the team's keys could not be fetched"));
            }
            if s.first_fetch_in_flight && WAIT_FOR_FIRST_FETCH {
                return Plan::Wait;
            }
            s.first_fetch_in_flight = true;
            return Plan::Fetch {
                fallback: None,
                first: true,
            };
        };
        let found = s.find(kid);
        let stale = now.saturating_sub(fetched_at) >= JWKS_MAX_AGE_MS;
        if let (Some(key), false) = (&found, stale) {
            return Plan::Use(key.clone());
        }
        let may_refetch = s
            .last_refetch_ms
            .is_none_or(|t| now.saturating_sub(t) >= REFETCH_INTERVAL_MS);
        match (found, may_refetch) {
            (Some(key), false) => Plan::Use(key),
            (None, false) => Plan::Refuse(denied("the token's key is not one of the team's")),
            (fallback, true) => {
                // Claimed now, so concurrent requests do not fetch too.
                s.last_refetch_ms = Some(now);
                Plan::Fetch {
                    fallback,
                    first: false,
                }
            }
        }
    }

    fn store(&self, fetched: Option<Vec<Jwk>>, now: u64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Some(keys) => {
                s.keys = keys;
                s.fetched_at_ms = Some(now);
                s.last_failure_ms = None;
            }
            None if s.fetched_at_ms.is_none() => s.last_failure_ms = Some(now),
            None => {}
        }
    }

    async fn key(
        &self,
        config: &AccessConfig,
        fetcher: &dyn Fetcher,
        now: u64,
        allow_loopback: bool,
        kid: &str,
    ) -> Result<Jwk> {
        let (fallback, first) = loop {
            match self.plan(kid, now) {
                Plan::Use(key) => return Ok(key),
                Plan::Refuse(e) => return Err(e),
                Plan::Wait => FirstFetch(self).await,
                Plan::Fetch { fallback, first } => break (fallback, first),
            }
        };
        // Dropped after `store` below, or when this request is dropped mid-fetch.
        let _done = first.then(|| FirstFetchDone(self));
        let fetched = fetch_jwks(config, fetcher, allow_loopback).await;
        let had_keys = fallback.is_some() || {
            let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.fetched_at_ms.is_some()
        };
        let got = fetched
            .as_ref()
            .map(|keys| keys.iter().find(|k| k.kid == kid).cloned());
        self.store(fetched, now);
        match got {
            Some(Some(key)) => Ok(key),
            Some(None) => Err(denied("the token's key is not one of the team's")),
            // The fetch failed: a key held before is still good; nothing held is a 503.
            None => match fallback {
                Some(key) => Ok(key),
                None if had_keys => Err(denied("the token's key is not one of the team's")),
                None => Err(unavailable("the team's keys could not be fetched")),
            },
        }
    }
}

/// The key set, or `None` when it cannot be fetched or read (never an error message with the
/// URL in it: the caller says "could not be fetched").
async fn fetch_jwks(
    config: &AccessConfig,
    fetcher: &dyn Fetcher,
    allow_loopback: bool,
) -> Option<Vec<Jwk>> {
    let request = http::Request::get(config.certs_url())
        .header(http::header::ACCEPT, "application/json")
        .body(Bytes::new())
        .ok()?;
    let options = FetchOptions {
        timeout_ms: JWKS_TIMEOUT_MS,
        max_response_bytes: MAX_JWKS_BYTES,
        allow_loopback,
    };
    let response = fetcher.fetch(request, options).await.ok()?;
    if response.status() != http::StatusCode::OK {
        return None;
    }
    parse_jwks(response.body())
}

/// The Access check of one request (see the [module doc](self)): `Ok(None)` when the route
/// needs no token (or Access is off), `Ok(Some(identity))` when the token is good.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn check(
    config: Option<&AccessConfig>,
    keys: &AccessKeys,
    verifier: Option<&dyn Rs256Verifier>,
    fetcher: &dyn Fetcher,
    clock: &dyn Clock,
    allow_loopback: bool,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Option<AccessIdentity>> {
    let Some(config) = config else {
        return Ok(None);
    };
    if !requires_token(config.mode, method, path) {
        return Ok(None);
    }
    let token = token(headers).ok_or_else(|| denied("no token (Cf-Access-Jwt-Assertion)"))??;
    let now = clock.now_ms();
    let parsed = parse(config, token, now)?;
    let Some(verifier) = verifier else {
        return Err(unavailable("this server has no RS256 verifier"));
    };
    let key = keys
        .key(config, fetcher, now, allow_loopback, &parsed.kid)
        .await?;
    if parsed.signature.len() != key.n.len() {
        return Err(denied("the token's signature is not valid"));
    }
    if !verifier
        .verify(
            &key.n,
            &key.e,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        )
        .await
    {
        return Err(denied("the token's signature is not valid"));
    }
    Ok(Some(AccessIdentity(parsed.identity)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ports::ManualClock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const TEAM: &str = "team.cloudflareaccess.com";
    const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
    const NOW_S: u64 = 1_800_000_000;

    fn config(mode: AccessMode) -> AccessConfig {
        AccessConfig {
            team_domain: TEAM.into(),
            aud: AUD.into(),
            mode,
            certs_url: None,
        }
    }

    /// A fake RS256: the "signature" is the first `n.len()` bytes of repeated
    /// SHA-256(n ‖ input), so only the holder of the fake key set can make one. (The real
    /// verifiers are checked by the conformance suite, `testkit::rs256_suite`.)
    struct FakeVerifier;
    fn fake_sign(n: &[u8], input: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(n);
        h.update(input);
        let d = h.finalize();
        d.iter().cycle().take(n.len()).copied().collect()
    }
    #[async_trait::async_trait]
    impl Rs256Verifier for FakeVerifier {
        async fn verify(&self, n: &[u8], _e: &[u8], input: &[u8], sig: &[u8]) -> bool {
            fake_sign(n, input) == sig
        }
    }

    fn modulus(seed: u8) -> Vec<u8> {
        let mut n = vec![seed | 0x80; 256];
        n[255] |= 1;
        n
    }

    /// A key set server: serves `keys` (kid, modulus seed), counts fetches, can be down.
    #[derive(Default)]
    struct Jwks {
        keys: Mutex<Vec<(String, u8)>>,
        fetches: AtomicUsize,
        down: AtomicBool,
        /// Answers only after yielding a few times (a fetch still in flight while other
        /// requests come in).
        slow: AtomicBool,
    }
    /// Pending once (waking itself at once), then ready.
    struct YieldOnce(bool);
    impl std::future::Future for YieldOnce {
        type Output = ();
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    #[async_trait::async_trait]
    impl Fetcher for Jwks {
        async fn fetch(
            &self,
            request: http::Request<Bytes>,
            _: FetchOptions,
        ) -> Result<http::Response<Bytes>> {
            assert_eq!(
                request.uri().to_string(),
                format!("https://{TEAM}/cdn-cgi/access/certs")
            );
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.slow.load(Ordering::SeqCst) {
                for _ in 0..3 {
                    YieldOnce(false).await;
                }
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::new(crate::ErrorKind::UpstreamFailed, "down"));
            }
            let keys: Vec<serde_json::Value> = self
                .keys
                .lock()
                .unwrap()
                .iter()
                .map(|(kid, seed)| {
                    serde_json::json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                        "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(modulus(*seed)),
                        "e": "AQAB"})
                })
                .collect();
            Ok(http::Response::new(Bytes::from(
                serde_json::to_vec(&serde_json::json!({"keys": keys})).unwrap(),
            )))
        }
    }

    struct Fixture {
        jwks: Arc<Jwks>,
        clock: Arc<ManualClock>,
        keys: AccessKeys,
    }

    fn fixture(keys: &[(&str, u8)]) -> Fixture {
        let jwks = Arc::new(Jwks::default());
        *jwks.keys.lock().unwrap() = keys.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        let clock = Arc::new(ManualClock::new(NOW_S * 1000));
        Fixture {
            jwks,
            clock,
            keys: AccessKeys::default(),
        }
    }

    fn b64e(v: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({"iss": format!("https://{TEAM}"), "aud": [AUD], "exp": NOW_S + 600,
            "nbf": NOW_S - 10, "iat": NOW_S - 10, "email": "alice@example.com", "type": "app"})
    }

    fn mint(header: serde_json::Value, claims: serde_json::Value, seed: u8) -> String {
        let input = format!(
            "{}.{}",
            b64e(&serde_json::to_vec(&header).unwrap()),
            b64e(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = fake_sign(&modulus(seed), input.as_bytes());
        format!("{input}.{}", b64e(&sig))
    }

    fn token_with(claims: serde_json::Value) -> String {
        mint(serde_json::json!({"alg": "RS256", "kid": "k1"}), claims, 1)
    }

    fn headers(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(TOKEN_HEADER, token.parse().unwrap());
        h
    }

    fn run(
        f: &Fixture,
        mode: AccessMode,
        method: &str,
        path: &str,
        h: &http::HeaderMap,
    ) -> Result<Option<AccessIdentity>> {
        let c = config(mode);
        futures::executor::block_on(check(
            Some(&c),
            &f.keys,
            Some(&FakeVerifier),
            &*f.jwks,
            &*f.clock,
            false,
            &http::Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            h,
        ))
    }

    fn code(r: &Result<Option<AccessIdentity>>) -> &'static str {
        match r {
            Ok(Some(_)) => "ok",
            Ok(None) => "not-checked",
            Err(e) => e.code().as_str(),
        }
    }

    #[test]
    fn a_good_token_passes_with_its_identity_and_every_bad_one_is_403() {
        let f = fixture(&[("k1", 1)]);
        let ok = run(
            &f,
            AccessMode::Admin,
            "GET",
            "/v1/credentials",
            &headers(&token_with(claims())),
        );
        assert_eq!(
            ok.unwrap(),
            Some(AccessIdentity("alice@example.com".into()))
        );
        let mut service = claims();
        service.as_object_mut().unwrap().remove("email");
        service["common_name"] = "abc123.access".into();
        let ok = run(
            &f,
            AccessMode::Admin,
            "GET",
            "/",
            &headers(&token_with(service)),
        );
        assert_eq!(ok.unwrap(), Some(AccessIdentity("abc123.access".into())));

        let with = |k: &str, v: serde_json::Value| {
            let mut c = claims();
            c[k] = v;
            token_with(c)
        };
        let hs = {
            // HS256 "signed" with the public key bytes: refused on its alg alone.
            let h = serde_json::json!({"alg": "HS256", "kid": "k1"});
            mint(h, claims(), 1)
        };
        let none = format!(
            "{}.{}.",
            b64e(br#"{"alg":"none","kid":"k1"}"#),
            b64e(&serde_json::to_vec(&claims()).unwrap())
        );
        let good = token_with(claims());
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let cases: Vec<(&str, String)> = vec![
            ("expired", with("exp", (NOW_S - 61).into())),
            ("not yet valid", with("nbf", (NOW_S + 61).into())),
            ("wrong aud", with("aud", "other".into())),
            ("wrong aud list", with("aud", serde_json::json!(["a", "b"]))),
            (
                "wrong iss",
                with("iss", "https://evil.cloudflareaccess.com".into()),
            ),
            ("no identity", with("email", "".into())),
            ("identity with a newline", with("email", "a\nb".into())),
            ("alg none", none),
            ("HS256", hs),
            (
                "wrong key",
                mint(
                    serde_json::json!({"alg": "RS256", "kid": "k1"}),
                    claims(),
                    2,
                ),
            ),
            ("flipped signature", String::from_utf8(flipped).unwrap()),
            (
                "no kid",
                mint(serde_json::json!({"alg": "RS256"}), claims(), 1),
            ),
            ("two segments", "a.b".into()),
            ("garbage", "not a token".into()),
            ("too large", "a".repeat(MAX_TOKEN_BYTES + 1)),
        ];
        for (name, token) in cases {
            let r = run(
                &f,
                AccessMode::Admin,
                "GET",
                "/v1/credentials",
                &headers(&token),
            );
            assert_eq!(code(&r), "access_denied", "{name}");
            assert_eq!(r.unwrap_err().status().as_u16(), 403, "{name}");
        }
        // Within the leeway: still good.
        let r = run(
            &f,
            AccessMode::Admin,
            "GET",
            "/v1/keys",
            &headers(&with("exp", (NOW_S - 30).into())),
        );
        assert_eq!(code(&r), "ok");
        // No token at all.
        let r = run(
            &f,
            AccessMode::Admin,
            "GET",
            "/v1/keys",
            &http::HeaderMap::new(),
        );
        assert_eq!(code(&r), "access_denied");
        // The key set was fetched once for all of that.
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 1);
    }

    /// What the review of issue 14 tried against the claims and header (each refused): alg
    /// spellings and other RSA algorithms, a duplicate `alg` whose last value is `none`, a
    /// non-string `kid`, `iss` with a trailing slash, times as strings, floats out of range or
    /// negative, identities that would read as another actor; a bad header is not rescued by a
    /// good cookie.
    #[test]
    fn confusing_tokens_are_refused() {
        let f = fixture(&[("k1", 1)]);
        let with = |k: &str, v: serde_json::Value| {
            let mut c = claims();
            c[k] = v;
            token_with(c)
        };
        let header = |h: serde_json::Value| mint(h, claims(), 1);
        let dup_alg = {
            let input = format!(
                "{}.{}",
                b64e(br#"{"alg":"RS256","kid":"k1","alg":"none"}"#),
                b64e(&serde_json::to_vec(&claims()).unwrap())
            );
            let sig = fake_sign(&modulus(1), input.as_bytes());
            format!("{input}.{}", b64e(&sig))
        };
        let cases: Vec<(&str, String)> = vec![
            (
                "alg rs256",
                header(serde_json::json!({"alg": "rs256", "kid": "k1"})),
            ),
            (
                "alg RS384",
                header(serde_json::json!({"alg": "RS384", "kid": "k1"})),
            ),
            (
                "alg PS256",
                header(serde_json::json!({"alg": "PS256", "kid": "k1"})),
            ),
            (
                "alg list",
                header(serde_json::json!({"alg": ["RS256"], "kid": "k1"})),
            ),
            ("duplicate alg, none last", dup_alg),
            (
                "kid a number",
                header(serde_json::json!({"alg": "RS256", "kid": 1})),
            ),
            (
                "crit",
                header(serde_json::json!({"alg": "RS256", "kid": "k1", "crit": ["b64"]})),
            ),
            (
                "iss with a slash",
                with("iss", format!("https://{TEAM}/").into()),
            ),
            ("iss http", with("iss", format!("http://{TEAM}").into())),
            ("aud a number", with("aud", 1.into())),
            (
                "exp a string",
                with("exp", (NOW_S + 600).to_string().into()),
            ),
            ("exp huge", with("exp", 1e300.into())),
            ("exp negative", with("exp", (-1).into())),
            ("nbf a string", with("nbf", "0".into())),
            ("nbf null", with("nbf", serde_json::Value::Null)),
            (
                "identity with a space",
                with("email", "a@b.c admin:admin".into()),
            ),
            (
                "identity with U+2028",
                with("email", "a@b.c\u{2028}x".into()),
            ),
            (
                "identity with U+202E (right-to-left override)",
                with("email", "moc.elpmaxe@\u{202E}alice".into()),
            ),
            (
                "identity with U+200B (zero width space)",
                with("email", "ali\u{200B}ce@example.com".into()),
            ),
            (
                "identity with U+FEFF",
                with("email", "\u{FEFF}alice@example.com".into()),
            ),
        ];
        for (name, token) in cases {
            let r = run(&f, AccessMode::Admin, "GET", "/", &headers(&token));
            assert_eq!(code(&r), "access_denied", "{name}");
        }
        let mut h = headers("not-a-token");
        h.insert(
            http::header::COOKIE,
            format!("CF_Authorization={}", token_with(claims()))
                .parse()
                .unwrap(),
        );
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &h)),
            "access_denied"
        );
    }

    #[test]
    fn the_cookie_is_the_fallback() {
        let f = fixture(&[("k1", 1)]);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=b; CF_Authorization={}", token_with(claims()))
                .parse()
                .unwrap(),
        );
        assert_eq!(code(&run(&f, AccessMode::Admin, "GET", "/", &h)), "ok");
    }

    #[test]
    fn routes_by_mode() {
        let f = fixture(&[("k1", 1)]);
        let none = http::HeaderMap::new();
        for (mode, method, path, want) in [
            (AccessMode::Admin, "GET", "/healthz", "not-checked"),
            (AccessMode::Admin, "GET", "/healthz/", "not-checked"),
            (AccessMode::Admin, "POST", "/v1/execute", "not-checked"),
            (AccessMode::Admin, "POST", "/api/v1/execute", "not-checked"),
            (AccessMode::Admin, "POST", "/mcp", "not-checked"),
            (AccessMode::Admin, "GET", "/proxy/gh/user", "not-checked"),
            (
                AccessMode::Admin,
                "OPTIONS",
                "/v1/credentials",
                "not-checked",
            ),
            (AccessMode::Admin, "GET", "/", "access_denied"),
            (AccessMode::Admin, "GET", "/ui/app.js", "access_denied"),
            (AccessMode::Admin, "POST", "/login", "access_denied"),
            (AccessMode::Admin, "GET", "/v1/audit", "access_denied"),
            (AccessMode::Admin, "GET", "/v1/execute/x", "access_denied"),
            (AccessMode::Admin, "GET", "/nowhere", "access_denied"),
            // Spellings of the agents' routes the router does not take as them: checked.
            (AccessMode::Admin, "POST", "//v1/execute", "access_denied"),
            (
                AccessMode::Admin,
                "POST",
                "/v1/../v1/execute",
                "access_denied",
            ),
            (AccessMode::Admin, "POST", "/v1/%65xecute", "access_denied"),
            (AccessMode::Admin, "POST", "/V1/execute", "access_denied"),
            (AccessMode::Admin, "GET", "/proxy", "access_denied"),
            (
                AccessMode::Admin,
                "HEAD",
                "/v1/credentials",
                "access_denied",
            ),
            (AccessMode::All, "GET", "/healthz", "not-checked"),
            (AccessMode::All, "OPTIONS", "/mcp", "not-checked"),
            (AccessMode::All, "POST", "/v1/execute", "access_denied"),
            (AccessMode::All, "POST", "/mcp", "access_denied"),
            (AccessMode::All, "GET", "/proxy/gh/user", "access_denied"),
            // Forwarded upstream, not a preflight (review of issue 14).
            (
                AccessMode::All,
                "OPTIONS",
                "/proxy/gh/user",
                "access_denied",
            ),
            (AccessMode::All, "POST", "/login", "access_denied"),
        ] {
            assert_eq!(
                code(&run(&f, mode, method, path, &none)),
                want,
                "{mode:?} {method} {path}"
            );
        }
    }

    #[test]
    fn unknown_kid_refetches_once_a_minute_and_rotated_keys_are_picked_up() {
        let f = fixture(&[("k1", 1)]);
        let t1 = token_with(claims());
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "ok"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 1);
        // The team rotates: k2 appears. The first k2 token refetches and passes.
        f.jwks.keys.lock().unwrap().push(("k2".into(), 2));
        let t2 = mint(
            serde_json::json!({"alg": "RS256", "kid": "k2"}),
            claims(),
            2,
        );
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t2))),
            "ok"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 2);
        // An unknown kid within the minute: refused without a fetch.
        let tx = mint(
            serde_json::json!({"alg": "RS256", "kid": "kx"}),
            claims(),
            3,
        );
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&tx))),
            "access_denied"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 2);
        // A minute later: one refetch, still unknown, refused; then none again.
        f.clock.advance(REFETCH_INTERVAL_MS);
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&tx))),
            "access_denied"
        );
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&tx))),
            "access_denied"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 3);
        // Known keys never fetch.
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "ok"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 3);
    }

    /// Requests that come in while the first fetch of the key set is in flight wait for it
    /// instead of each fetching too (review of issue 14: a burst of tokens with a made-up
    /// signature at a new process or isolate was one fetch each); when it fails, they share
    /// its 503.
    #[test]
    fn requests_during_the_first_fetch_wait_for_it() {
        for down in [false, true] {
            let f = fixture(&[("k1", 1)]);
            f.jwks.slow.store(true, Ordering::SeqCst);
            f.jwks.down.store(down, Ordering::SeqCst);
            let c = config(AccessMode::Admin);
            let h = headers(&token_with(claims()));
            let checks = (0..8).map(|_| {
                check(
                    Some(&c),
                    &f.keys,
                    Some(&FakeVerifier),
                    &*f.jwks,
                    &*f.clock,
                    false,
                    &http::Method::GET,
                    "/",
                    &h,
                )
            });
            let results = futures::executor::block_on(futures::future::join_all(checks));
            let want = if down { "access_unavailable" } else { "ok" };
            assert!(
                results.iter().all(|r| code(r) == want),
                "down: {down}: {:?}",
                results.iter().map(code).collect::<Vec<_>>()
            );
            assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 1, "down: {down}");
        }
    }

    #[test]
    fn key_set_down_is_503_without_a_cached_key_and_the_cache_serves_with_one() {
        let f = fixture(&[("k1", 1)]);
        f.jwks.down.store(true, Ordering::SeqCst);
        let t1 = token_with(claims());
        let r = run(&f, AccessMode::Admin, "GET", "/", &headers(&t1));
        assert_eq!(code(&r), "access_unavailable");
        assert_eq!(r.unwrap_err().status().as_u16(), 503);
        // Within the retry pause: 503 without hammering the key set.
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "access_unavailable"
        );
        assert_eq!(f.jwks.fetches.load(Ordering::SeqCst), 1);
        // Back up: fetched, cached; down again: the cached key still serves, even when stale.
        f.clock.advance(RETRY_AFTER_FAILURE_MS);
        f.jwks.down.store(false, Ordering::SeqCst);
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "ok"
        );
        f.jwks.down.store(true, Ordering::SeqCst);
        f.clock.advance(JWKS_MAX_AGE_MS);
        let fresh = {
            let mut c = claims();
            c["exp"] = (f.clock.now_ms() / 1000 + 600).into();
            token_with(c)
        };
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&fresh))),
            "ok"
        );
        // An unknown kid with the key set down: refused (403), not a 503 — the keys are known.
        let mut c = claims();
        c["exp"] = (f.clock.now_ms() / 1000 + 600).into();
        let tx = mint(serde_json::json!({"alg": "RS256", "kid": "kx"}), c, 3);
        f.clock.advance(REFETCH_INTERVAL_MS);
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&tx))),
            "access_denied"
        );
    }

    #[test]
    fn a_key_dropped_from_the_key_set_is_refused_after_the_refresh() {
        let f = fixture(&[("k1", 1)]);
        let t1 = token_with(claims());
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "ok"
        );
        *f.jwks.keys.lock().unwrap() = vec![("k2".into(), 2)];
        f.clock.advance(JWKS_MAX_AGE_MS);
        let mut c = claims();
        c["exp"] = (f.clock.now_ms() / 1000 + 600).into();
        c["nbf"] = (f.clock.now_ms() / 1000).into();
        let t1 = token_with(c);
        assert_eq!(
            code(&run(&f, AccessMode::Admin, "GET", "/", &headers(&t1))),
            "access_denied"
        );
    }

    #[test]
    fn settings_are_checked_and_the_team_domain_normalised() {
        assert_eq!(
            team_domain(" https://MyTeam.cloudflareaccess.com/ "),
            "myteam.cloudflareaccess.com"
        );
        assert_eq!(config(AccessMode::Admin).problem(), None);
        for (c, want) in [
            (
                AccessConfig {
                    team_domain: "https://x.example/p".into(),
                    ..config(AccessMode::Admin)
                },
                AccessSetting::TeamDomain,
            ),
            (
                AccessConfig {
                    team_domain: "localhost".into(),
                    ..config(AccessMode::Admin)
                },
                AccessSetting::TeamDomain,
            ),
            (
                AccessConfig {
                    aud: "".into(),
                    ..config(AccessMode::Admin)
                },
                AccessSetting::Aud,
            ),
            (
                AccessConfig {
                    aud: "a b".into(),
                    ..config(AccessMode::Admin)
                },
                AccessSetting::Aud,
            ),
            (
                AccessConfig {
                    certs_url: Some("ftp://x".into()),
                    ..config(AccessMode::Admin)
                },
                AccessSetting::CertsUrl,
            ),
        ] {
            assert_eq!(c.problem().map(|p| p.0), Some(want));
        }
        assert_eq!(AccessMode::parse("ALL"), Some(AccessMode::All));
        assert_eq!(AccessMode::parse("everything"), None);
    }

    #[test]
    fn key_sets_keep_only_rs256_signing_keys_of_a_sane_size() {
        let n = b64e(&modulus(1));
        let small = b64e(&[0xffu8; 128]);
        let body = serde_json::json!({"keys": [
            {"kid": "ok", "kty": "RSA", "n": n, "e": "AQAB"},
            {"kid": "ec", "kty": "EC", "crv": "P-256", "x": "", "y": ""},
            {"kid": "enc", "kty": "RSA", "use": "enc", "n": n, "e": "AQAB"},
            {"kid": "ps", "kty": "RSA", "alg": "PS256", "n": n, "e": "AQAB"},
            {"kid": "small", "kty": "RSA", "n": small, "e": "AQAB"},
            {"kid": "bad", "kty": "RSA", "n": "!!", "e": "AQAB"}
        ], "public_cert": {"kid": "x", "cert": "..."}});
        let keys = parse_jwks(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["ok"]
        );
        assert!(parse_jwks(b"not json").is_none());
    }
}
