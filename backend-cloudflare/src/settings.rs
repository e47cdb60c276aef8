//! Worker settings: secrets and vars → [`Config`] and [`MasterSecret`].
//!
//! Pure (no JS), so it is unit-tested natively. The worker passes a lookup over its `Env`.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `VULTRINO_MASTER_KEY` (or `ENCRYPTION_KEY`) | secret, required | master key: 32 bytes base64/hex, or a passphrase |
//! | `ADMIN_PASSWORD_HASH` | secret, required | PHC hash from `vultrino hash-password` |
//! | `ADMIN_USER` | var | admin user name (default `admin`) |
//! | `CORS_ORIGINS` | var | comma-separated allowed origins (default: CORS off) |
//! | `LOGIN_MAX_ATTEMPTS` | var | failed logins per client per 15 min before 429 (default 5) |
//! | `LOGIN_MAX_ATTEMPTS_PER_USER` | var | logins for the admin user per 15 min, all clients together, before 429 (default 50) |
//! | `PROXY_MAX_CONCURRENT` | var | `/proxy/` requests in flight at once **per isolate**, all keys together (default 1024; 429 `proxy_busy` past it) |
//! | `PROXY_MAX_CONCURRENT_PER_KEY` | var | `/proxy/` requests in flight at once for one API key **per isolate** (default 64) |
//! | `APPROVAL_TTL_SECS` | var | how long a pending approval waits for a decision, and an approved one for its re-send (default 600; 1–86400) |
//! | `STREAM_HEADERS_TIMEOUT_MS` | var | `/proxy/`: the upstream's reply head within this long of the request's last byte (default 300000) |
//! | `STREAM_IDLE_TIMEOUT_MS` | var | `/proxy/`: longest pause between two chunks of either body, the client's upload included (408 `body_timeout`; default 300000) |
//! | `STREAM_TOTAL_TIMEOUT_MS` | var | `/proxy/`: the whole exchange, the client's upload included (default 3600000) |
//! | `FETCH_TIMEOUT_MS` | var | `/v1/execute` and MCP calls: the whole upstream exchange, head and body (504 `upstream_timeout`; default 30000) |
//! | `MAX_RESPONSE_BYTES` | var | `/v1/execute` and MCP calls: the largest upstream body read (502 `upstream_too_large`; default 10485760) |
//! | `KV_SETTLE_SECONDS` | var | how long a KV write may take to reach every location (default 90; 0–3600) |
//! | `ACCESS_TEAM_DOMAIN` | var | Cloudflare Access team domain (`<team>.cloudflareaccess.com`); with `ACCESS_AUD`, Access tokens are required |
//! | `ACCESS_AUD` | var | the Access application's AUD tag |
//! | `ACCESS_MODE` | var | `admin` (default: login, admin API, UI) or `all` (agents too; every route but `/healthz`) |
//! | `ACCESS_CERTS_URL` | var, TESTS / ADVANCED ONLY | fetch the Access key set here instead of `https://<team>/cdn-cgi/access/certs` |
//! | `APPROVAL_WEBHOOK` | var (or secret: a Slack webhook URL is one) | POST a notification here when a request waits for approval (https; never printed) |
//! | `APPROVAL_WEBHOOK_FORMAT` | var | `json` (default: `{event, approval_id, …, link}`) or `slack` (`{text, blocks}`) |
//! | `PUBLIC_URL` | var | the admin UI's base URL as people reach it; the notification links to `<PUBLIC_URL>/ui/#/approvals/<id>` (no link without it) |
//! | `KEY_RECORD_REUSE_SECONDS` | var | an API key verified in an isolate is reused without reading its KV record for this long (default 0: read every request; 0–300). Revocation stays immediate (its marker is read every request); a key record edited in KV is noticed this much later. docs/decisions/0117 |
//! | `AUDIT_REQUIRED` | var | `true`: an execute, an MCP tool call or a `/proxy/` request stores its audit event before the credential is used, and is refused with 503 `audit_unavailable` when the audit store cannot take it; `false` (default): served anyway, the loss counted in `GET /v1/audit/sinks` (row `audit_store`). docs/decisions/0109 |
//! | `ALLOW_LOOPBACK_UPSTREAMS` | var, TESTS ONLY | `true` allows http:// and loopback upstreams |
//! | `ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS` | var, TESTS ONLY | `true` accepts an `ADMIN_PASSWORD_HASH` below the iteration floor |
//!
//! A missing or malformed setting is an `Unavailable` error (503) whose message names the
//! setting, never a panic: a half-configured deployment answers every request with that message.

use vultrino_core::app::{Config, Setting};
use vultrino_core::approval_webhook::{ApprovalNotify, WebhookFormat};
use vultrino_core::auth::access::{self, AccessConfig, AccessMode};
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::{Code, Error, Result};

/// The header Cloudflare sets to the connecting client's address.
pub const CLIENT_IP_HEADER: &str = "CF-Connecting-IP";

/// Default [`Config::kv_settle_ms`] on Workers, in seconds: how long Cloudflare documents a KV
/// write may take to reach other locations, plus a margin (the platform figure is in
/// docs/deploy-cloudflare.md). A change that starts from a version replaced less than this long
/// ago is refused with 409 `change_not_propagated` (see
/// [`Changes::claim_version`](vultrino_core::change::Changes::claim_version) and
/// docs/decisions/0033-changes-claim-the-version-they-read.md).
pub const DEFAULT_KV_SETTLE_SECS: u64 = 90;

/// [`Config::key_last_used_interval_secs`] on Workers: an API key's `last_used_at` is
/// rewritten at most once an hour (a KV write: the free plan allows 1 000 a day, Workers Paid
/// bills them at ten times a read), so an execute writes nothing to KV but the first use of a
/// key in each hour (docs/decisions/0109).
pub const KEY_LAST_USED_INTERVAL_SECS: u64 = 3600;

/// Longest `KEY_RECORD_REUSE_SECONDS` ([`Config::key_record_reuse_secs`]): an API key verified
/// in this isolate is reused without a KV read for that long after its record was last read
/// (one KV read saved per request; off by default: docs/decisions/0117).
pub const MAX_KEY_RECORD_REUSE_SECS: u64 = 300;

/// Everything the worker needs to open the [`App`](vultrino_core::app::App).
pub struct Settings {
    pub config: Config,
    pub master: MasterSecret,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn missing(name: &str, how: &str) -> Error {
    Error::unavailable(format!(
        "the worker is not configured: {name} is not set ({how})"
    ))
    .with_code(Code::MissingSetting)
}

fn invalid(name: &str, why: &str) -> Error {
    Error::unavailable(format!("the worker is misconfigured: {name} {why}"))
        .with_code(Code::InvalidSetting)
}

/// Read the settings through `get` (secret or var by name; empty counts as missing).
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let master_text = get("VULTRINO_MASTER_KEY")
        .or_else(|| get("ENCRYPTION_KEY"))
        .ok_or_else(|| {
            missing(
                "VULTRINO_MASTER_KEY",
                "deployed: `wrangler secret put VULTRINO_MASTER_KEY`; under `wrangler dev`: a \
                 VULTRINO_MASTER_KEY= line in backend-cloudflare/.dev.vars; ENCRYPTION_KEY is \
                 accepted too",
            )
        })?;
    let master = MasterSecret::parse(master_text.trim())
        .map_err(|_| invalid("VULTRINO_MASTER_KEY", "is not a usable master key"))?;
    let hash = get("ADMIN_PASSWORD_HASH").ok_or_else(|| {
        missing(
            "ADMIN_PASSWORD_HASH",
            "print one with `vultrino hash-password`, then deployed: `wrangler secret put \
             ADMIN_PASSWORD_HASH`; under `wrangler dev`: an ADMIN_PASSWORD_HASH= line in \
             backend-cloudflare/.dev.vars",
        )
    })?;
    let mut config = Config {
        admin_password_hash: Some(hash.trim().to_string()),
        client_ip_header: Some(CLIENT_IP_HEADER.to_string()),
        kv_settle_ms: DEFAULT_KV_SETTLE_SECS * 1000,
        key_last_used_interval_secs: KEY_LAST_USED_INTERVAL_SECS,
        ..Config::default()
    };
    if let Some(user) = get("ADMIN_USER") {
        config.admin_username = user.trim().to_string();
    }
    if let Some(origins) = get("CORS_ORIGINS") {
        config.cors_origins = origins
            .split(',')
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
    }
    if let Some(n) = get("LOGIN_MAX_ATTEMPTS") {
        config.login_max_attempts = n
            .trim()
            .parse::<u32>()
            .map_err(|_| invalid("LOGIN_MAX_ATTEMPTS", "must be a whole number ≥ 1"))?;
    }
    if let Some(n) = get("LOGIN_MAX_ATTEMPTS_PER_USER") {
        config.login_max_attempts_per_user = n
            .trim()
            .parse::<u32>()
            .map_err(|_| invalid("LOGIN_MAX_ATTEMPTS_PER_USER", "must be a whole number ≥ 1"))?;
    }
    // Per isolate: each isolate counts its own exchanges (a Worker has no process-wide
    // memory), so a key spread over several isolates may hold more in all.
    if let Some(n) = get("PROXY_MAX_CONCURRENT") {
        config.proxy_max_concurrent = n
            .trim()
            .parse::<usize>()
            .map_err(|_| invalid("PROXY_MAX_CONCURRENT", "must be a whole number ≥ 1"))?;
    }
    if let Some(n) = get("PROXY_MAX_CONCURRENT_PER_KEY") {
        config.proxy_max_concurrent_per_key = n
            .trim()
            .parse::<usize>()
            .map_err(|_| invalid("PROXY_MAX_CONCURRENT_PER_KEY", "must be a whole number ≥ 1"))?;
    }
    if let Some(n) = get("APPROVAL_TTL_SECS") {
        config.approval_ttl_secs = n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=86_400).contains(n))
            .ok_or_else(|| invalid("APPROVAL_TTL_SECS", "must be a whole number 1-86400"))?;
    }
    // The pass-through proxy's stream deadlines, as the local server's `--stream-*-timeout-ms`
    // (the request body's idle and total deadlines among them: 408 `body_timeout`).
    for (name, field) in [
        (
            "STREAM_HEADERS_TIMEOUT_MS",
            &mut config.stream_headers_timeout_ms,
        ),
        ("STREAM_IDLE_TIMEOUT_MS", &mut config.stream_idle_timeout_ms),
        (
            "STREAM_TOTAL_TIMEOUT_MS",
            &mut config.stream_total_timeout_ms,
        ),
    ] {
        if let Some(n) = get(name) {
            *field = n
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms >= 1)
                .ok_or_else(|| invalid(name, "must be a whole number of milliseconds ≥ 1"))?;
        }
    }
    // The buffered exchange's limits, as the local server's `--fetch-timeout-ms` and
    // `--max-response-bytes`.
    if let Some(n) = get("FETCH_TIMEOUT_MS") {
        config.fetch_timeout_ms = n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms >= 1)
            .ok_or_else(|| {
                invalid(
                    "FETCH_TIMEOUT_MS",
                    "must be a whole number of milliseconds ≥ 1",
                )
            })?;
    }
    if let Some(n) = get("MAX_RESPONSE_BYTES") {
        config.max_response_bytes = n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| invalid("MAX_RESPONSE_BYTES", "must be a whole number of bytes ≥ 1"))?;
    }
    if let Some(n) = get("KV_SETTLE_SECONDS") {
        config.kv_settle_ms = n
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid("KV_SETTLE_SECONDS", "must be a whole number 0-3600"))?
            .saturating_mul(1000);
    }
    if let Some(n) = get("KEY_RECORD_REUSE_SECONDS") {
        config.key_record_reuse_secs = n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_KEY_RECORD_REUSE_SECS)
            .ok_or_else(|| invalid("KEY_RECORD_REUSE_SECONDS", "must be a whole number 0-300"))?;
    }
    if let Some(v) = get("AUDIT_REQUIRED") {
        config.audit_required = match v.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => return Err(invalid("AUDIT_REQUIRED", "must be true or false")),
        };
    }
    if let Some(v) = get("ALLOW_LOOPBACK_UPSTREAMS") {
        config.allow_loopback_upstreams = match v.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => return Err(invalid("ALLOW_LOOPBACK_UPSTREAMS", "must be true or false")),
        };
    }
    if let Some(v) = get("ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS") {
        config.allow_weak_password_hash_for_tests = match v.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => {
                return Err(invalid(
                    "ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS",
                    "must be true or false",
                ))
            }
        };
    }
    config.access = access_settings(&get)?;
    config.approval_notify = ApprovalNotify {
        webhook: get("APPROVAL_WEBHOOK").map(|w| w.trim().to_string()),
        format: match get("APPROVAL_WEBHOOK_FORMAT") {
            None => WebhookFormat::default(),
            Some(f) => WebhookFormat::parse(&f)
                .ok_or_else(|| invalid("APPROVAL_WEBHOOK_FORMAT", "must be json or slack"))?,
        },
        public_url: get("PUBLIC_URL").map(|u| u.trim().to_string()),
    };
    // The rules every backend applies (the core's), named the worker's way.
    config.validate().map_err(|e| {
        let name = match e.setting {
            Setting::CorsOrigins => "CORS_ORIGINS",
            Setting::AdminPasswordHash => "ADMIN_PASSWORD_HASH",
            Setting::LoginMaxAttempts => "LOGIN_MAX_ATTEMPTS",
            Setting::LoginMaxAttemptsPerUser => "LOGIN_MAX_ATTEMPTS_PER_USER",
            Setting::KvSettle => "KV_SETTLE_SECONDS",
            Setting::ProxyMaxConcurrent => "PROXY_MAX_CONCURRENT",
            Setting::ProxyMaxConcurrentPerKey => "PROXY_MAX_CONCURRENT_PER_KEY",
            Setting::AccessTeamDomain => "ACCESS_TEAM_DOMAIN",
            Setting::AccessAud => "ACCESS_AUD",
            Setting::AccessCertsUrl => "ACCESS_CERTS_URL",
            Setting::ApprovalWebhook => "APPROVAL_WEBHOOK",
            Setting::PublicUrl => "PUBLIC_URL",
        };
        invalid(name, e.problem)
    })?;
    Ok(Settings { config, master })
}

/// Cloudflare Access: on when `ACCESS_TEAM_DOMAIN` and `ACCESS_AUD` are both set. One without
/// the other is a 503 `missing_setting` on every request (fail closed: a half-configured layer
/// is never silently off), and so are `ACCESS_MODE` or `ACCESS_CERTS_URL` without them.
fn access_settings(get: &impl Fn(&str) -> Option<String>) -> Result<Option<AccessConfig>> {
    let (team, aud) = (get("ACCESS_TEAM_DOMAIN"), get("ACCESS_AUD"));
    let mode = match get("ACCESS_MODE") {
        None => AccessMode::default(),
        Some(m) => {
            AccessMode::parse(&m).ok_or_else(|| invalid("ACCESS_MODE", "must be admin or all"))?
        }
    };
    let certs_url = get("ACCESS_CERTS_URL").map(|u| u.trim().to_string());
    match (team, aud) {
        (None, None) => {
            for name in ["ACCESS_MODE", "ACCESS_CERTS_URL"] {
                if get(name).is_some() {
                    return Err(missing(
                        "ACCESS_TEAM_DOMAIN",
                        &format!("{name} is set: set ACCESS_TEAM_DOMAIN and ACCESS_AUD too, or remove it"),
                    ));
                }
            }
            Ok(None)
        }
        (Some(_), None) => Err(missing(
            "ACCESS_AUD",
            "ACCESS_TEAM_DOMAIN is set: set the Access application's AUD tag too, or neither",
        )),
        (None, Some(_)) => Err(missing(
            "ACCESS_TEAM_DOMAIN",
            "ACCESS_AUD is set: set the team domain (<team>.cloudflareaccess.com) too, or neither",
        )),
        (Some(team), Some(aud)) => Ok(Some(AccessConfig {
            team_domain: access::team_domain(&team),
            aud: aud.trim().to_string(),
            mode,
            certs_url,
        })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    /// A well-formed hash at the iteration floor (its digest is never checked here).
    const HASH: &str = "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    /// The same at 10 000 iterations, the old free-plan advice.
    const WEAK_HASH: &str = "$pbkdf2-sha256$i=10000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn err(pairs: &[(&str, &str)]) -> Error {
        from_lookup(lookup(pairs)).err().unwrap()
    }

    #[test]
    fn missing_master_key_is_503_naming_the_secret() {
        let e = err(&[("ADMIN_PASSWORD_HASH", HASH)]);
        assert_eq!(e.status().as_u16(), 503);
        assert_eq!(e.code(), Code::MissingSetting);
        assert!(e.message().contains("VULTRINO_MASTER_KEY"));
    }

    #[test]
    fn missing_admin_hash_is_503_naming_the_secret() {
        let e = err(&[("VULTRINO_MASTER_KEY", KEY)]);
        assert_eq!(e.status().as_u16(), 503);
        assert!(e.message().contains("ADMIN_PASSWORD_HASH"));
    }

    #[test]
    fn empty_values_count_as_missing() {
        let e = err(&[("VULTRINO_MASTER_KEY", " "), ("ADMIN_PASSWORD_HASH", HASH)]);
        assert!(e.message().contains("VULTRINO_MASTER_KEY"));
    }

    #[test]
    fn encryption_key_is_accepted_as_another_name_of_the_master_key() {
        let s = from_lookup(lookup(&[
            ("ENCRYPTION_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
        ]))
        .unwrap();
        assert!(s.master.is_raw());
    }

    #[test]
    fn stream_deadlines_are_vars_and_zero_or_words_are_refused() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
            ("STREAM_HEADERS_TIMEOUT_MS", "1000"),
            ("STREAM_IDLE_TIMEOUT_MS", " 500 "),
            ("STREAM_TOTAL_TIMEOUT_MS", "2000"),
        ]))
        .unwrap();
        assert_eq!(s.config.stream_headers_timeout_ms, 1000);
        assert_eq!(s.config.stream_idle_timeout_ms, 500);
        assert_eq!(s.config.stream_total_timeout_ms, 2000);
        for bad in ["0", "-1", "soon"] {
            let e = err(&[
                ("VULTRINO_MASTER_KEY", KEY),
                ("ADMIN_PASSWORD_HASH", HASH),
                ("STREAM_IDLE_TIMEOUT_MS", bad),
            ]);
            assert_eq!(e.status().as_u16(), 503, "{bad}");
            assert!(e.message().contains("STREAM_IDLE_TIMEOUT_MS"), "{bad}");
        }
    }

    #[test]
    fn execute_limits_are_vars_and_zero_or_words_are_refused() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
            ("FETCH_TIMEOUT_MS", "1500"),
            ("MAX_RESPONSE_BYTES", " 65536 "),
        ]))
        .unwrap();
        assert_eq!(s.config.fetch_timeout_ms, 1500);
        assert_eq!(s.config.max_response_bytes, 65536);
        let d = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
        ]))
        .unwrap();
        assert_eq!(d.config.fetch_timeout_ms, 30_000);
        assert_eq!(d.config.max_response_bytes, 10 * 1024 * 1024);
        for name in ["FETCH_TIMEOUT_MS", "MAX_RESPONSE_BYTES"] {
            for bad in ["0", "-1", "soon"] {
                let e = err(&[
                    ("VULTRINO_MASTER_KEY", KEY),
                    ("ADMIN_PASSWORD_HASH", HASH),
                    (name, bad),
                ]);
                assert_eq!(e.status().as_u16(), 503, "{name}={bad}");
                assert!(e.message().contains(name), "{name}={bad}");
            }
        }
    }

    #[test]
    fn vars_set_the_config_and_client_ip_comes_from_cloudflare() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
            ("ADMIN_USER", "ops"),
            ("CORS_ORIGINS", "https://a.example, https://b.example"),
            ("LOGIN_MAX_ATTEMPTS", "3"),
            ("LOGIN_MAX_ATTEMPTS_PER_USER", "30"),
            ("KV_SETTLE_SECONDS", "120"),
            ("KEY_RECORD_REUSE_SECONDS", "60"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("PROXY_MAX_CONCURRENT", "100"),
            ("PROXY_MAX_CONCURRENT_PER_KEY", "5"),
            ("AUDIT_REQUIRED", "true"),
        ]))
        .unwrap();
        assert!(s.config.audit_required);
        assert_eq!(s.config.proxy_max_concurrent, 100);
        assert_eq!(s.config.proxy_max_concurrent_per_key, 5);
        assert_eq!(s.config.login_max_attempts_per_user, 30);
        assert_eq!(s.config.kv_settle_ms, 120_000);
        assert_eq!(s.config.key_record_reuse_secs, 60);
        assert_eq!(s.config.admin_username, "ops");
        assert_eq!(s.config.cors_origins.len(), 2);
        assert_eq!(s.config.login_max_attempts, 3);
        assert!(s.config.allow_loopback_upstreams);
        assert_eq!(s.config.client_ip_header.as_deref(), Some(CLIENT_IP_HEADER));
    }

    #[test]
    fn approval_notification_vars_set_the_webhook_and_are_checked() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
            ("APPROVAL_WEBHOOK", "https://hooks.slack.com/services/T/B/X"),
            ("APPROVAL_WEBHOOK_FORMAT", "slack"),
            ("PUBLIC_URL", "https://vultrino.example.com"),
        ]))
        .unwrap();
        let n = &s.config.approval_notify;
        assert_eq!(n.format, WebhookFormat::Slack);
        assert_eq!(
            n.link("ap_1").as_deref(),
            Some("https://vultrino.example.com/ui/#/approvals/ap_1")
        );
        // A Slack webhook URL is a secret: not in Debug.
        assert!(!format!("{s:?}").contains("hooks.slack.com"));
        for (name, value) in [
            ("APPROVAL_WEBHOOK_FORMAT", "xml"),
            ("APPROVAL_WEBHOOK", "http://hooks.example.com/x"),
            ("PUBLIC_URL", "vultrino.example.com"),
        ] {
            let e = err(&[
                ("VULTRINO_MASTER_KEY", KEY),
                ("ADMIN_PASSWORD_HASH", HASH),
                (name, value),
            ]);
            assert_eq!(e.status().as_u16(), 503, "{name}");
            assert!(e.message().contains(name), "{name}: {}", e.message());
            assert!(
                !e.message().contains(value),
                "{name}: the value is not repeated"
            );
        }
    }

    #[test]
    fn loopback_upstreams_are_off_by_default() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
        ]))
        .unwrap();
        assert!(!s.config.allow_loopback_upstreams);
        // Audit storage trouble serves the request and counts the loss unless asked otherwise.
        assert!(!s.config.audit_required);
        // A key's last use costs a KV write at most once an hour.
        assert_eq!(
            s.config.key_last_used_interval_secs,
            KEY_LAST_USED_INTERVAL_SECS
        );
        // A key's record is read on every request unless asked otherwise (decision 0117).
        assert_eq!(s.config.key_record_reuse_secs, 0);
        assert!(s.config.cors_origins.is_empty());
        // KV is eventually consistent across locations: changes claim what they read.
        assert_eq!(s.config.kv_settle_ms, DEFAULT_KV_SETTLE_SECS * 1000);
    }

    #[test]
    fn malformed_vars_are_503_naming_the_var() {
        for (name, value) in [
            ("LOGIN_MAX_ATTEMPTS", "many"),
            ("LOGIN_MAX_ATTEMPTS", "0"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "maybe"),
            ("AUDIT_REQUIRED", "always"),
            ("KV_SETTLE_SECONDS", "-1"),
            ("KV_SETTLE_SECONDS", "3601"),
            ("KEY_RECORD_REUSE_SECONDS", "301"),
            ("KEY_RECORD_REUSE_SECONDS", "a minute"),
            ("CORS_ORIGINS", "*"),
            ("ADMIN_PASSWORD_HASH", "not-a-phc-hash"),
            ("ADMIN_PASSWORD_HASH", "$x"),
            ("ADMIN_PASSWORD_HASH", WEAK_HASH),
            ("LOGIN_MAX_ATTEMPTS_PER_USER", "0"),
            ("LOGIN_MAX_ATTEMPTS_PER_USER", "-5"),
            ("ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "perhaps"),
            ("PROXY_MAX_CONCURRENT", "0"),
            ("PROXY_MAX_CONCURRENT", "lots"),
            ("PROXY_MAX_CONCURRENT_PER_KEY", "0"),
            ("PROXY_MAX_CONCURRENT_PER_KEY", "-1"),
        ] {
            let mut pairs = vec![("VULTRINO_MASTER_KEY", KEY), ("ADMIN_PASSWORD_HASH", HASH)];
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let e = err(&pairs);
            assert_eq!(e.status().as_u16(), 503, "{name}");
            assert!(e.message().contains(name), "{name}: {}", e.message());
        }
    }

    /// A hash weaker than the floor stops the worker with a message naming the secret and the
    /// fix; only the test-only var lets it through, and it is off by default.
    #[test]
    fn a_weak_admin_hash_is_refused_naming_the_fix_unless_tests_allow_it() {
        let e = err(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", WEAK_HASH),
        ]);
        assert_eq!((e.status().as_u16(), e.code()), (503, Code::InvalidSetting));
        assert!(
            e.message().contains("ADMIN_PASSWORD_HASH"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("vultrino hash-password"),
            "{}",
            e.message()
        );
        assert!(
            !e.message().contains(WEAK_HASH),
            "the hash is never repeated"
        );
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", WEAK_HASH),
            ("ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true"),
        ]))
        .unwrap();
        assert!(s.config.allow_weak_password_hash_for_tests);
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
        ]))
        .unwrap();
        assert!(!s.config.allow_weak_password_hash_for_tests);
        assert_eq!(s.config.login_max_attempts_per_user, 50);
    }

    #[test]
    fn access_is_on_with_both_settings_and_half_configured_is_503() {
        let base = [("VULTRINO_MASTER_KEY", KEY), ("ADMIN_PASSWORD_HASH", HASH)];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            from_lookup(lookup(&pairs))
        };
        assert!(with(&[]).unwrap().config.access.is_none());
        let s = with(&[
            ("ACCESS_TEAM_DOMAIN", "https://MyTeam.cloudflareaccess.com/"),
            ("ACCESS_AUD", "abc123"),
        ])
        .unwrap();
        let a = s.config.access.unwrap();
        assert_eq!(a.team_domain, "myteam.cloudflareaccess.com");
        assert_eq!((a.aud.as_str(), a.mode), ("abc123", AccessMode::Admin));
        assert_eq!(a.certs_url, None);
        let a = with(&[
            ("ACCESS_TEAM_DOMAIN", "t.cloudflareaccess.com"),
            ("ACCESS_AUD", "abc123"),
            ("ACCESS_MODE", "all"),
            ("ACCESS_CERTS_URL", "http://127.0.0.1:9/certs"),
        ])
        .unwrap()
        .config
        .access
        .unwrap();
        assert_eq!(a.mode, AccessMode::All);
        assert_eq!(a.certs_url.as_deref(), Some("http://127.0.0.1:9/certs"));
        for (extra, name, code) in [
            (
                &[("ACCESS_TEAM_DOMAIN", "t.cloudflareaccess.com")][..],
                "ACCESS_AUD",
                Code::MissingSetting,
            ),
            (
                &[("ACCESS_AUD", "abc")][..],
                "ACCESS_TEAM_DOMAIN",
                Code::MissingSetting,
            ),
            (
                &[("ACCESS_MODE", "all")][..],
                "ACCESS_TEAM_DOMAIN",
                Code::MissingSetting,
            ),
            (
                &[
                    ("ACCESS_TEAM_DOMAIN", "t.cloudflareaccess.com"),
                    ("ACCESS_AUD", "a"),
                    ("ACCESS_MODE", "some"),
                ][..],
                "ACCESS_MODE",
                Code::InvalidSetting,
            ),
            (
                &[("ACCESS_TEAM_DOMAIN", "not a host"), ("ACCESS_AUD", "a")][..],
                "ACCESS_TEAM_DOMAIN",
                Code::InvalidSetting,
            ),
        ] {
            let e = with(extra).err().unwrap();
            assert_eq!((e.status().as_u16(), e.code()), (503, code), "{extra:?}");
            assert!(e.message().contains(name), "{extra:?}: {}", e.message());
        }
    }

    #[test]
    fn settings_debug_never_shows_the_master_key() {
        let s = from_lookup(lookup(&[
            ("VULTRINO_MASTER_KEY", KEY),
            ("ADMIN_PASSWORD_HASH", HASH),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains(KEY));
    }
}
