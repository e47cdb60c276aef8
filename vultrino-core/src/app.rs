//! The application: configuration, ports, the keys derived at start-up, and the caches that
//! outlive a request — the composition root every transport and embedder starts from.
//!
//! [`App::open`] runs once per process (or Workers isolate): it loads or creates the keyring
//! and derives the keys (the slow KDF happens here and never on a request). After that,
//! [`App::handle`](crate::api) serves HTTP requests, and each concern is reached through its
//! own type: [`App::credentials`], [`App::api_keys`], [`App::roles`], [`App::audit`],
//! [`App::execute`], [`App::export`]. Each of those types owns its records in the store; `App`
//! only hands them the ports and settings they need.

use std::sync::Arc;

use crate::approval_webhook::NotifySetting;
use crate::audit::AuditLog;
use crate::auth::access::{AccessConfig, AccessKeys, AccessSetting};
use crate::auth::client_ip::ClientIpRule;
use crate::auth::keys::VerifiedKeys;
use crate::auth::session::SessionKeys;
use crate::auth::{
    AdminSessions, ApiKeys, Authenticator, Migration, Principal, Roles, SessionSettings,
};
use crate::change::Changes;
use crate::credential::{CredentialStore, Credentials, OpenedCache};
use crate::crypto::{self, Keys, MasterSecret};
use crate::error::{Code, Error, Result};
use crate::execute::{ExecuteRequest, ExecuteResponse, Pipeline};
use crate::keyring;
use crate::oauth::OAuthTokens;
pub use crate::ports::Ports;
use crate::ports::{FetchOptions, Rs256Verifier, StreamOptions};
use crate::scrub::ScrubberCache;
use crate::sync::live::LiveSync;
use crate::sync::{self, Export};

/// Settings of one deployment. `Default` is the secure default.
#[derive(Clone)]
pub struct Config {
    /// The admin user name (default `admin`).
    pub admin_username: String,
    /// PHC hash of the admin password; `None` disables login (503 with a clear message). A hash
    /// of fewer than [`crypto::MIN_PASSWORD_ITERATIONS`] iterations is refused
    /// ([`Config::validate`]). Sessions are bound to it: a new hash ends every session.
    pub admin_password_hash: Option<String>,
    /// TESTS ONLY: accept an admin password hash of fewer than
    /// [`crypto::MIN_PASSWORD_ITERATIONS`] iterations (test suites hash with 1 000 so that a
    /// login costs milliseconds in debug builds). Backends log it loudly.
    pub allow_weak_password_hash_for_tests: bool,
    /// Sessions die after this long unused (default 30 min).
    pub session_idle_secs: u64,
    /// Sessions die this long after login whatever their use (default 12 h).
    pub session_absolute_secs: u64,
    /// Login attempts allowed per client per window before 429 (default 5).
    pub login_max_attempts: u32,
    /// Login attempts allowed for the admin user per window, all clients together, before 429
    /// (default 50; docs/decisions/0056-password-floors.md).
    pub login_max_attempts_per_user: u32,
    /// The lockout window, of both counters (default 15 min).
    pub login_window_secs: u64,
    /// Header holding the client address, set by a trusted edge (`CF-Connecting-IP` on Workers).
    pub client_ip_header: Option<String>,
    /// Trust the last `X-Forwarded-For` address, the one the proxy appended (only behind a proxy
    /// you control; docs/decisions/0009-login-lockout.md).
    pub trust_forwarded_for: bool,
    /// Allow http:// and loopback upstreams. For tests only; backends log it loudly.
    pub allow_loopback_upstreams: bool,
    /// Whole upstream exchange deadline (default 30 s).
    pub fetch_timeout_ms: u64,
    /// Largest upstream body returned (default 10 MiB).
    pub max_response_bytes: usize,
    /// Largest request body accepted by the API (default 1 MiB). The pass-through proxy has
    /// its own cap, [`Config::proxy_max_request_bytes`].
    pub max_request_bytes: usize,
    /// Largest request body the pass-through proxy (`/proxy/{alias}/…`) streams upstream
    /// (default 32 MiB; 413 `body_too_large` past it).
    pub proxy_max_request_bytes: usize,
    /// Proxied exchanges (`/proxy/…`) in flight at once in this server process — on Workers,
    /// in this isolate — counted until the reply's stream ends or is dropped (default 1024;
    /// 429 `proxy_busy` past it, nothing sent upstream).
    pub proxy_max_concurrent: usize,
    /// Proxied exchanges in flight at once for one API key, in this process or isolate
    /// (default 64; 429 `proxy_busy` past it). See
    /// docs/decisions/0068-proxy-concurrency-caps-and-refusal-audit.md.
    pub proxy_max_concurrent_per_key: usize,
    /// Streamed exchanges (the proxy): how long the upstream's response head may take after the
    /// request was sent (default 300 s: a model may think for minutes before it answers a
    /// non-streamed completion).
    pub stream_headers_timeout_ms: u64,
    /// Streamed exchanges: the longest pause between two chunks of either body (default 300 s).
    pub stream_idle_timeout_ms: u64,
    /// Streamed exchanges: the whole exchange, last byte included (default 1 h).
    pub stream_total_timeout_ms: u64,
    /// Audit events expire after this long (default 90 days).
    pub audit_retention_secs: u64,
    /// Strict audit (worker setting `AUDIT_REQUIRED`, default off; docs/decisions/0109): an
    /// execute, an MCP tool call or a `/proxy/` request stores its audit event (outcome
    /// `started`) BEFORE the credential is used, and is refused with 503 `audit_unavailable`
    /// when that write fails: no credential is used without a stored record. Off, a request is
    /// served whatever the audit store does, and the store counts what it lost
    /// (`GET /v1/audit/sinks`, row `audit_store`).
    pub audit_required: bool,
    /// An API key's `last_used_at` is rewritten (one KV write) on a use at least this long
    /// after the last one written (default 60 s; the worker's 3600 s: docs/decisions/0109).
    pub key_last_used_interval_secs: u64,
    /// An API key verified before is reused from memory, without reading its record from the
    /// store, for this long after the record was last read (0, the default: read on every
    /// request, as the local stores make cheap; the worker's 60 s: a KV read saved per request).
    /// A key record never changes but for its `last_used_at` and its deletion by a revocation,
    /// whose SessionStore marker is still read on every request: revocation stays immediate
    /// (docs/decisions/0117-one-kv-read-per-execute.md).
    pub key_record_reuse_secs: u64,
    /// Origins allowed by CORS (empty: CORS off). Never `*`.
    pub cors_origins: Vec<String>,
    /// Who hears of a new approval: the webhook, its format and the UI's public URL for the
    /// link ([`crate::approval_webhook`]).
    pub approval_notify: crate::approval_webhook::ApprovalNotify,
    /// How long a KV write may take to be seen by every reader (0: reads always see the latest
    /// write, as the local stores do; Workers KV lags across locations, see
    /// docs/deploy-cloudflare.md). When not 0, every change claims, for this long, the version it
    /// read (see [`Changes::claim_version`](crate::change::Changes::claim_version) and
    /// docs/decisions/0033-changes-claim-the-version-they-read.md), so a change acting on a stale
    /// read is refused instead of undoing a newer one.
    pub kv_settle_ms: u64,
    /// Cloudflare Access as an extra authentication layer (`None`: off). See
    /// [`crate::auth::access`] and docs/decisions/0081-cloudflare-access-layer.md. The backend
    /// gives the App an [`Rs256Verifier`] with [`App::with_rs256_verifier`]; without one every
    /// route that needs a token is refused (503 `access_unavailable`).
    pub access: Option<AccessConfig>,
    /// How long a pending approval waits for a decision, and an approved one for its re-send
    /// (default 10 min; [`crate::approvals`]).
    pub approval_ttl_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admin_username: "admin".into(),
            admin_password_hash: None,
            allow_weak_password_hash_for_tests: false,
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            login_max_attempts: 5,
            login_max_attempts_per_user: 50,
            login_window_secs: 15 * 60,
            client_ip_header: None,
            trust_forwarded_for: false,
            allow_loopback_upstreams: false,
            fetch_timeout_ms: 30_000,
            max_response_bytes: 10 * 1024 * 1024,
            max_request_bytes: 1024 * 1024,
            proxy_max_request_bytes: 32 * 1024 * 1024,
            proxy_max_concurrent: 1024,
            proxy_max_concurrent_per_key: 64,
            stream_headers_timeout_ms: 300_000,
            stream_idle_timeout_ms: 300_000,
            stream_total_timeout_ms: 3_600_000,
            audit_retention_secs: crate::audit::DEFAULT_AUDIT_RETENTION_SECS,
            audit_required: false,
            key_last_used_interval_secs: 60,
            key_record_reuse_secs: 0,
            cors_origins: Vec::new(),
            approval_notify: Default::default(),
            kv_settle_ms: 0,
            access: None,
            approval_ttl_secs: crate::approvals::DEFAULT_TTL_SECS,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("admin_username", &self.admin_username)
            .field(
                "admin_login_configured",
                &self.admin_password_hash.is_some(),
            )
            .field(
                "allow_weak_password_hash_for_tests",
                &self.allow_weak_password_hash_for_tests,
            )
            .field("allow_loopback_upstreams", &self.allow_loopback_upstreams)
            .field("cors_origins", &self.cors_origins)
            .field("approval_notify", &self.approval_notify)
            .field("kv_settle_ms", &self.kv_settle_ms)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// A setting [`Config::validate`] can refuse. Each backend names it its own way (a worker var,
/// a `serve` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    CorsOrigins,
    AdminPasswordHash,
    LoginMaxAttempts,
    LoginMaxAttemptsPerUser,
    KvSettle,
    ProxyMaxConcurrent,
    ProxyMaxConcurrentPerKey,
    /// Cloudflare Access: the team domain.
    AccessTeamDomain,
    /// Cloudflare Access: the application's AUD tag.
    AccessAud,
    /// Cloudflare Access: the key set URL override (tests).
    AccessCertsUrl,
    /// The approval notification webhook.
    ApprovalWebhook,
    /// The admin UI's public base URL (links in approval notifications).
    PublicUrl,
}

/// Why [`Config::validate`] refused a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSetting {
    pub setting: Setting,
    /// What is wrong, for the operator (never a value given).
    pub problem: &'static str,
}

impl From<InvalidSetting> for Error {
    fn from(e: InvalidSetting) -> Error {
        Error::unavailable(format!(
            "invalid configuration ({:?}): {}",
            e.setting, e.problem
        ))
        .with_code(Code::InvalidSetting)
    }
}

impl Config {
    /// Refuse settings no deployment should run with. Both backends call this when they read
    /// their settings, and [`App::open`] calls it again, so a setting is judged the same way on
    /// each.
    pub fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        let refuse = |setting, problem| Err(InvalidSetting { setting, problem });
        if self.cors_origins.iter().any(|o| o == "*") {
            return refuse(
                Setting::CorsOrigins,
                "must list origins explicitly ('*' is refused: sessions carry credentials)",
            );
        }
        // Every sandboxed iframe, `data:` URL and local file sends `Origin: null`: allowing it is
        // allowing any page on the web (review of issue 18).
        if self.cors_origins.iter().any(|o| o == "null") {
            return refuse(
                Setting::CorsOrigins,
                "must not list 'null' (the origin of sandboxed and data: pages anywhere)",
            );
        }
        if let Some(hash) = self.admin_password_hash.as_deref() {
            if !hash.trim().starts_with('$') {
                return refuse(
                    Setting::AdminPasswordHash,
                    "is not a PHC hash (it must start with '$'; use `vultrino hash-password`)",
                );
            }
            match crypto::password_hash_iterations(hash) {
                None => {
                    return refuse(
                        Setting::AdminPasswordHash,
                        "is not a PBKDF2 PHC hash this version can check (make one with \
                         `vultrino hash-password`)",
                    )
                }
                Some(n)
                    if n < crypto::MIN_PASSWORD_ITERATIONS
                        && !self.allow_weak_password_hash_for_tests =>
                {
                    return refuse(Setting::AdminPasswordHash, WEAK_PASSWORD_HASH_PROBLEM)
                }
                Some(_) => {}
            }
        }
        if self.login_max_attempts == 0 {
            return refuse(Setting::LoginMaxAttempts, "must be a whole number ≥ 1");
        }
        if self.login_max_attempts_per_user == 0 {
            return refuse(
                Setting::LoginMaxAttemptsPerUser,
                "must be a whole number ≥ 1",
            );
        }
        if self.kv_settle_ms > MAX_KV_SETTLE_MS {
            return refuse(
                Setting::KvSettle,
                "must be a whole number of seconds, 0-3600",
            );
        }
        // 0 would refuse every proxied request: say so at start-up instead.
        if self.proxy_max_concurrent == 0 {
            return refuse(Setting::ProxyMaxConcurrent, "must be at least 1");
        }
        if self.proxy_max_concurrent_per_key == 0 {
            return refuse(Setting::ProxyMaxConcurrentPerKey, "must be at least 1");
        }
        if let Some((setting, problem)) = self.access.as_ref().and_then(AccessConfig::problem) {
            let setting = match setting {
                AccessSetting::TeamDomain => Setting::AccessTeamDomain,
                AccessSetting::Aud => Setting::AccessAud,
                AccessSetting::CertsUrl => Setting::AccessCertsUrl,
            };
            return refuse(setting, problem);
        }
        if let Some((setting, problem)) =
            self.approval_notify.problem(self.allow_loopback_upstreams)
        {
            let setting = match setting {
                NotifySetting::Webhook => Setting::ApprovalWebhook,
                NotifySetting::PublicUrl => Setting::PublicUrl,
            };
            return refuse(setting, problem);
        }
        Ok(())
    }

    fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            timeout_ms: self.fetch_timeout_ms,
            max_response_bytes: self.max_response_bytes,
            allow_loopback: self.allow_loopback_upstreams,
        }
    }

    /// The limits of a streamed exchange (the pass-through proxy).
    pub fn stream_options(&self) -> StreamOptions {
        StreamOptions {
            headers_timeout_ms: self.stream_headers_timeout_ms,
            idle_timeout_ms: self.stream_idle_timeout_ms,
            total_timeout_ms: self.stream_total_timeout_ms,
            max_buffered_response_bytes: self.max_response_bytes,
            allow_loopback: self.allow_loopback_upstreams,
        }
    }
}

/// What [`Config::validate`] says of a hash below [`crypto::MIN_PASSWORD_ITERATIONS`] (the
/// number is written out: the problem is a `&'static str`; a test pins it to the constant).
const WEAK_PASSWORD_HASH_PROBLEM: &str =
    "has fewer than 100000 PBKDF2 iterations, the fewest this version accepts: make a new hash \
     with `vultrino hash-password` (100000 iterations by default) and set it in place of this \
     one (the password may stay the same; every admin session ends when the hash changes)";

/// Longest KV settle time accepted ([`Config::kv_settle_ms`]).
pub const MAX_KV_SETTLE_MS: u64 = 3_600_000;

/// Entries held by each in-memory cache and counter map of an [`App`] ([`App::cache_sizes`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSizes {
    /// Decrypted credentials (at most 1024, idle ones dropped after 5 minutes).
    pub opened_credentials: usize,
    /// API keys verified before (at most 4096).
    pub verified_keys: usize,
    /// Scrubbers by secret set (at most 1024).
    pub scrubbers: usize,
    /// Keys with `/proxy/` exchanges in flight.
    pub proxy_keys: usize,
    /// Keys with requests held by `Prefer: wait=N`.
    pub approval_waiter_keys: usize,
    /// Refusal series the metrics remember (at most 4096).
    pub metric_series: usize,
}

/// The application. Cheap to share (`Arc<App>`).
pub struct App {
    config: Config,
    ports: Ports,
    keys: Arc<Keys>,
    /// The session-token MAC, bound to the admin user name and password hash.
    session_keys: SessionKeys,
    opened: OpenedCache,
    scrubbers: ScrubberCache,
    verified_keys: VerifiedKeys,
    /// The `/proxy/` exchanges in flight in this process (isolate).
    proxy_caps: Arc<crate::proxy_caps::ProxyCaps>,
    /// The requests held by `Prefer: wait=N` in this process (isolate), per key.
    approval_waiters: Arc<crate::proxy_caps::ProxyCaps>,
    /// The Cloudflare Access team's key set, cached.
    access_keys: AccessKeys,
    /// Checks Access tokens' signatures ([`App::with_rs256_verifier`]).
    rs256: Option<Arc<dyn Rs256Verifier>>,
    /// The timer of `Prefer: wait=N` on approvals ([`App::with_sleeper`]).
    sleeper: Option<Arc<dyn crate::ports::Sleeper>>,
    /// How often a held request re-reads its approval ([`App::with_sleeper`]).
    approval_poll_ms: u64,
    /// The process's counters ([`App::with_metrics`]); `None`: nothing is counted.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The live sync from an edge, when this instance runs one ([`App::with_live_sync`]).
    live_sync: Option<Arc<LiveSync>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Open a deployment: check the configuration, load the keyring (or create it on first
    /// run) and derive the keys once.
    ///
    /// A master key that does not match the stored keyring fails here with `Unavailable`
    /// (code `wrong_master_key`) — before any request is served.
    pub async fn open(config: Config, ports: Ports, master: &MasterSecret) -> Result<App> {
        config.validate()?;
        let keys = keyring::open_or_create(&ports, master, config.kv_settle_ms).await?;
        let session_keys = SessionKeys::new(
            &keys,
            &config.admin_username,
            config.admin_password_hash.as_deref(),
        )?;
        Ok(App {
            config,
            ports,
            keys: Arc::new(keys),
            session_keys,
            opened: OpenedCache::default(),
            scrubbers: ScrubberCache::default(),
            verified_keys: VerifiedKeys::default(),
            proxy_caps: Arc::default(),
            approval_waiters: Arc::default(),
            access_keys: AccessKeys::default(),
            rs256: None,
            sleeper: None,
            approval_poll_ms: 1000,
            metrics: None,
            live_sync: None,
        })
    }

    /// Give the App the RS256 signature check Cloudflare Access tokens need (the backend's:
    /// the `rsa` crate locally, WebCrypto on Workers).
    pub fn with_rs256_verifier(mut self, verifier: Arc<dyn Rs256Verifier>) -> Self {
        self.rs256 = Some(verifier);
        self
    }

    /// Count what this App serves into `metrics` ([`crate::metrics`]): its replies, its
    /// upstream exchanges (the fetcher is wrapped in a
    /// [`MeteredFetcher`](crate::metrics::MeteredFetcher)) and its executes and proxied calls
    /// (`metrics` joins the audit sinks, as one that only counts). Native only: the worker
    /// counts nothing (docs/decisions/0105-audit-view-and-metrics.md).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.ports.fetcher = Arc::new(crate::metrics::MeteredFetcher {
            inner: self.ports.fetcher.clone(),
            clock: self.ports.clock.clone(),
            metrics: metrics.clone(),
        });
        let counting: Arc<dyn crate::ports::AuditSink> = metrics.clone();
        self.ports.audit_sink = Some(match self.ports.audit_sink.take() {
            None => counting,
            Some(sink) => Arc::new(crate::ports::SinkSet(vec![sink, counting])),
        });
        self.metrics = Some(metrics);
        self
    }

    /// The Prometheus exposition of this App's counters, with its audit sinks' counts; `None`
    /// when it counts nothing ([`App::with_metrics`]).
    pub fn metrics_text(&self) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let sync = self.live_sync.as_ref().map(|l| l.status(self.now_ms()));
        Some(metrics.render(&self.audit_sink_status(), sync.as_ref()))
    }

    /// The route class of `path` when this App counts ([`App::with_metrics`]).
    pub(crate) fn route_class(&self, path: &str) -> Option<&'static str> {
        self.metrics
            .as_ref()
            .map(|_| crate::metrics::route_class(path))
    }

    /// Count one reply of route class `class` ([`App::route_class`]).
    pub(crate) fn observe_reply(&self, class: Option<&'static str>, status: http::StatusCode) {
        if let (Some(m), Some(class)) = (&self.metrics, class) {
            m.observe_class(class, status.as_u16());
        }
    }

    /// Give the App a timer, so that a request needing an approval can be held (`Prefer:
    /// wait=N`), re-reading its approval every `poll_ms` (250 ms locally, 1 s on Workers, where
    /// each read is a Durable Object call). Without one, such requests are answered at once.
    pub fn with_sleeper(mut self, sleeper: Arc<dyn crate::ports::Sleeper>, poll_ms: u64) -> Self {
        self.sleeper = Some(sleeper);
        self.approval_poll_ms = poll_ms.max(10);
        self
    }

    /// Run a live sync from an edge (docs/decisions/0104-live-hybrid-sync.md): its state shows in
    /// `/healthz`, and the records it brought are read-only here (409 `synced_record`). The
    /// backend runs the pull loop and hands each pull to [`App::apply_sync_pull`].
    pub fn with_live_sync(mut self, live: Arc<LiveSync>) -> Self {
        self.live_sync = Some(live);
        self
    }

    /// The live sync's state, when this instance runs one (for `/healthz`, `vultrino status`
    /// and metrics: [`LiveSync::status`]).
    pub fn live_sync(&self) -> Option<&Arc<LiveSync>> {
        self.live_sync.as_ref()
    }

    /// Apply one export pulled by the live sync (verified whole first; see
    /// [`crate::sync::live::apply`]). 503 `missing_setting` when this instance runs no live sync.
    pub async fn apply_sync_pull(
        &self,
        export: &Export,
        etag: Option<String>,
        reply_bytes: u64,
    ) -> Result<crate::sync::live::Change> {
        let Some(live) = &self.live_sync else {
            return Err(Error::unavailable("this instance runs no live sync")
                .with_code(Code::MissingSetting));
        };
        let now = self.ports.clock.now_ms();
        live.apply(
            &*self.ports.kv,
            &*self.ports.sessions,
            &self.keys,
            export,
            etag,
            reply_bytes,
            now,
        )
        .await
    }

    /// Now, by this deployment's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.ports.clock.now_ms()
    }

    /// 409 `synced_record` when the record `key` came from the edge of the live sync: it is
    /// changed there, and the next pull brings the change here.
    pub(crate) fn refuse_synced(&self, key: &str) -> Result<()> {
        match &self.live_sync {
            Some(live) if live.is_synced(key) => Err(Error::conflict(format!(
                "{key} is synced from the edge {}: it is read-only here; change it on the edge \
                 (the next pull brings the change here)",
                live.edge()
            ))
            .with_code(Code::SyncedRecord)),
            _ => Ok(()),
        }
    }

    /// The Cloudflare Access check of one request ([`crate::auth::access`]): `Ok(None)` when its
    /// route needs no token or Access is off, the identity when the token is good, 403
    /// `access_denied` or 503 `access_unavailable` otherwise.
    pub(crate) async fn access_check(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<crate::auth::AccessIdentity>> {
        crate::auth::access::check(
            self.config.access.as_ref(),
            &self.access_keys,
            self.rs256.as_deref(),
            &*self.ports.fetcher,
            &*self.ports.clock,
            self.config.allow_loopback_upstreams,
            method,
            path,
            headers,
        )
        .await
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counts of the deployment's audit sinks (`GET /v1/audit/sinks`); empty without one.
    /// The audit store's own row (`audit_store`: events stored, lost, failed writes) comes
    /// last when the store counts them (the worker's Durable Object store does).
    pub fn audit_sink_status(&self) -> Vec<crate::ports::SinkStatus> {
        let mut out = self
            .ports
            .audit_sink
            .as_ref()
            .map(|s| s.status())
            .unwrap_or_default();
        out.extend(self.ports.audit.as_ref().and_then(|s| s.status()));
        out
    }

    /// The `/proxy/` exchanges in flight in this process (isolate).
    pub(crate) fn proxy_caps(&self) -> &Arc<crate::proxy_caps::ProxyCaps> {
        &self.proxy_caps
    }

    /// Credential management (create, read, update, rotate, delete, list).
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials::new(
            self.store(),
            self.changes(),
            self.oauth(),
            self.audit(),
            &self.ports,
            self.config.allow_loopback_upstreams,
        )
    }

    /// Agent API keys (create, list, revoke, authenticate).
    #[inline]
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(&self.ports, &self.keys, self.audit(), &self.verified_keys)
            .with_last_used_interval_secs(self.config.key_last_used_interval_secs)
            .with_key_record_reuse_secs(self.config.key_record_reuse_secs)
    }

    /// Roles (resolve, create, list, delete).
    pub fn roles(&self) -> Roles<'_> {
        Roles::new(&self.ports, &self.keys, self.changes(), self.audit())
    }

    /// Sign the `key:` and `role:` records an older version wrote, once (see
    /// [`crate::auth::migrate::migrate`]); admin session or local operator only.
    pub async fn migrate_records(&self, who: &Principal, dry_run: bool) -> Result<Migration> {
        crate::auth::migrate::migrate(
            &self.ports,
            &self.keys,
            self.changes(),
            self.audit(),
            who,
            dry_run,
        )
        .await
    }

    /// The audit log (record, list).
    #[inline]
    pub fn audit(&self) -> AuditLog<'_> {
        AuditLog::new(&self.ports, self.config.audit_retention_secs)
    }

    /// Admin sessions (login, lookup, logout).
    #[inline]
    pub fn admin_sessions(&self) -> AdminSessions<'_> {
        let c = &self.config;
        let settings = SessionSettings {
            admin_username: &c.admin_username,
            password_hash: c.admin_password_hash.as_deref(),
            idle_secs: c.session_idle_secs,
            absolute_secs: c.session_absolute_secs,
            max_attempts: c.login_max_attempts,
            max_attempts_per_user: c.login_max_attempts_per_user,
            window_secs: c.login_window_secs,
        };
        AdminSessions::new(&self.ports, settings, &self.session_keys, self.audit())
    }

    /// Who a request comes from (API keys, bearer sessions, session cookies with CSRF).
    #[inline]
    pub fn authenticator(&self) -> Authenticator<'_> {
        Authenticator::new(
            self.api_keys(),
            self.admin_sessions(),
            &self.config.cors_origins,
        )
    }

    /// Which address a request's client has, for login lockouts.
    pub fn client_ip_rule(&self) -> ClientIpRule<'_> {
        ClientIpRule {
            header: self.config.client_ip_header.as_deref(),
            trust_forwarded_for: self.config.trust_forwarded_for,
        }
    }

    /// Run one execute (see [`crate::execute`]) and audit it. (The pipeline's own future is
    /// returned as it is: one state machine less on the hot path.)
    #[inline]
    pub fn execute<'a>(
        &'a self,
        who: &'a Principal,
        req: ExecuteRequest,
    ) -> impl std::future::Future<Output = Result<ExecuteResponse>> + 'a {
        self.pipeline().execute(who, req)
    }

    /// The steps every agent request goes through (execute and the pass-through proxy).
    #[inline]
    pub(crate) fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(
            &self.ports,
            &self.keys,
            &self.opened,
            &self.scrubbers,
            self.config.fetch_options(),
            self.config.audit_retention_secs,
        )
        .with_audit_required(self.config.audit_required)
        .with_approvals(crate::approvals::settings::Settings {
            ttl_ms: self.config.approval_ttl_secs.saturating_mul(1000),
            sleeper: self.sleeper.as_deref(),
            poll_ms: self.approval_poll_ms,
            waiters: Some(&self.approval_waiters),
            notify: Some(&self.config.approval_notify),
            allow_loopback: self.config.allow_loopback_upstreams,
            background: None,
        })
    }

    /// The sync export: keyring parameters and ciphertext records (admin only).
    pub async fn export(&self, who: &Principal) -> Result<Export> {
        sync::export(&*self.ports.kv, who).await
    }

    /// How many entries each of this instance's in-memory caches and counter maps holds now,
    /// for the tests that check they stay bounded under churn (docs/decisions/0119). Sizes
    /// only: nothing secret.
    #[doc(hidden)]
    pub fn cache_sizes(&self) -> CacheSizes {
        CacheSizes {
            opened_credentials: self.opened.len(),
            verified_keys: self.verified_keys.len(),
            scrubbers: self.scrubbers.len(),
            proxy_keys: self.proxy_caps.keys_len(),
            approval_waiter_keys: self.approval_waiters.keys_len(),
            metric_series: self.metrics.as_ref().map_or(0, |m| m.series_len()),
        }
    }

    /// Aliases whose decrypted credentials this instance keeps in memory, sorted. For tests that
    /// check decrypted secrets do not outlive their credential; aliases are not secret.
    #[doc(hidden)]
    pub fn opened_aliases(&self) -> Vec<String> {
        self.store().opened_aliases()
    }

    fn store(&self) -> CredentialStore<'_> {
        CredentialStore::new(&self.ports, &self.keys, &self.opened)
    }

    fn oauth(&self) -> OAuthTokens<'_> {
        OAuthTokens::new(&self.ports, &self.keys, self.config.fetch_options())
    }

    fn changes(&self) -> Changes<'_> {
        Changes::new(&self.ports, &self.keys, self.config.kv_settle_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The defaults are a valid configuration, and each rule refuses exactly its setting.
    #[test]
    fn config_validation_names_the_refused_setting() {
        assert_eq!(Config::default().validate(), Ok(()));
        type Breaks = fn(&mut Config);
        let cases: [(Setting, Breaks); 12] = [
            (Setting::CorsOrigins, |c| {
                c.cors_origins = vec!["https://a.example".into(), "*".into()]
            }),
            (Setting::AdminPasswordHash, |c| {
                c.admin_password_hash = Some("plain-text".into())
            }),
            (Setting::AdminPasswordHash, |c| {
                c.admin_password_hash = Some("$x".into())
            }),
            (Setting::AdminPasswordHash, |c| {
                c.admin_password_hash = Some(weak_hash())
            }),
            (Setting::AdminPasswordHash, |c| {
                // A deployment that followed the old free-plan advice.
                c.admin_password_hash = Some(crypto::hash_password("pw", 10_000).unwrap())
            }),
            (Setting::LoginMaxAttempts, |c| c.login_max_attempts = 0),
            (Setting::LoginMaxAttemptsPerUser, |c| {
                c.login_max_attempts_per_user = 0
            }),
            (Setting::KvSettle, |c| c.kv_settle_ms = MAX_KV_SETTLE_MS + 1),
            (Setting::ProxyMaxConcurrent, |c| c.proxy_max_concurrent = 0),
            (Setting::ProxyMaxConcurrentPerKey, |c| {
                c.proxy_max_concurrent_per_key = 0
            }),
            (Setting::AccessTeamDomain, |c| {
                c.access = Some(AccessConfig {
                    team_domain: "https://t.cloudflareaccess.com/x".into(),
                    aud: "aud".into(),
                    mode: Default::default(),
                    certs_url: None,
                })
            }),
            (Setting::AccessAud, |c| {
                c.access = Some(AccessConfig {
                    team_domain: "t.cloudflareaccess.com".into(),
                    aud: String::new(),
                    mode: Default::default(),
                    certs_url: None,
                })
            }),
        ];
        for (setting, break_it) in cases {
            let mut c = Config::default();
            break_it(&mut c);
            let refused = c.validate();
            assert_eq!(refused.map_err(|e| e.setting), Err(setting));
            if let Err(e) = refused {
                let e = Error::from(e);
                assert_eq!((e.code(), e.status().as_u16()), (Code::InvalidSetting, 503));
            }
        }
        let ok = Config {
            admin_password_hash: Some(format!(" {}\n", floor_hash())),
            kv_settle_ms: MAX_KV_SETTLE_MS,
            login_max_attempts: 1,
            login_max_attempts_per_user: 1,
            ..Config::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    /// A well-formed hash with fewer iterations than the floor (its digest is not checked here).
    /// `Origin: null` is what every sandboxed iframe, `data:` page and file on any site sends: as
    /// a CORS origin it would hand the login (past the same-origin rule and its preflight),
    /// `/mcp` and cookie requests to any page on the web, as `*` would. Refused like `*`
    /// (review of issue 18).
    #[test]
    fn the_opaque_origin_null_is_refused_as_a_cors_origin() {
        let c = Config {
            cors_origins: vec!["https://a.example".into(), "null".into()],
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.setting),
            Err(Setting::CorsOrigins)
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", http::HeaderValue::from_static("null"));
        headers.insert("host", http::HeaderValue::from_static("vault.example"));
        assert!(
            crate::auth::csrf::same_origin(&headers, &[]).is_err(),
            "Origin: null is never this host"
        );
    }

    fn weak_hash() -> String {
        format!(
            "$pbkdf2-sha256$i={},l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            crypto::MIN_PASSWORD_ITERATIONS - 1
        )
    }

    /// A well-formed hash with exactly the floor's iterations.
    fn floor_hash() -> String {
        weak_hash().replace(
            &format!("i={}", crypto::MIN_PASSWORD_ITERATIONS - 1),
            &format!("i={}", crypto::MIN_PASSWORD_ITERATIONS),
        )
    }

    /// A hash below the floor is refused at start-up with the fix named, unless the test-only
    /// switch is on; the floor itself is accepted.
    #[test]
    fn a_weak_password_hash_is_refused_naming_the_fix() {
        let weak = Config {
            admin_password_hash: Some(weak_hash()),
            ..Config::default()
        };
        let e = weak.validate().unwrap_err();
        assert_eq!(e.setting, Setting::AdminPasswordHash);
        assert!(
            e.problem.contains("vultrino hash-password"),
            "{}",
            e.problem
        );
        let floor = crypto::MIN_PASSWORD_ITERATIONS.to_string();
        assert_eq!(
            e.problem.matches(floor.as_str()).count(),
            2,
            "the message names the floor: {}",
            e.problem
        );
        let for_tests = Config {
            allow_weak_password_hash_for_tests: true,
            ..weak.clone()
        };
        assert_eq!(for_tests.validate(), Ok(()));
        let at_floor = Config {
            admin_password_hash: Some(floor_hash()),
            ..Config::default()
        };
        assert_eq!(at_floor.validate(), Ok(()));
        // The switch lowers the floor only: a hash that cannot be checked is still refused.
        let malformed = Config {
            admin_password_hash: Some("$x".into()),
            ..for_tests
        };
        assert_eq!(
            malformed.validate().map_err(|e| e.setting),
            Err(Setting::AdminPasswordHash)
        );
    }
}
