//! The application: configuration, ports, cached keys, and the operations every transport calls.
//!
//! [`App::open`] runs once per process (or Workers isolate): it loads or creates the keyring,
//! derives the keys (the slow KDF happens here and never on a request) and keeps them. After that,
//! [`App::handle`] serves HTTP requests (see [`crate::api`]) and the `*_credential`, `*_key`,
//! `*_role`, [`App::execute`] methods serve embedders and the CLI directly.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::auth::{self, Permission, Principal};
use crate::credential::{self, CredentialData, CredentialMeta, CredentialRecord, CredentialType};
use crate::crypto::{self, KeyringRecord, Keys, MasterSecret};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::policy::Policy;
use crate::ports::{Clock, Fetcher, KvStore, ListOptions, PutOptions, SessionStore};

/// KV key of the keyring.
pub const KEYRING_KEY: &str = crypto::KEYRING_KV_KEY;
/// Associated data of sealed listing cursors (not a KV key; never stored).
const CURSOR_AD: &str = "sys:cursor#credentials";
/// Longest a change lock ([`App::exclusive`]) is held by a holder that never released it.
pub const CHANGE_LOCK_MS: u64 = 30_000;
/// A change lock is released only if at least this long is left of its window: after that it may
/// have lapsed (clocks of edge isolates differ a little) and another change may hold it.
const CHANGE_LOCK_RELEASE_MARGIN_MS: u64 = 5_000;
/// KV key of the keyring being rotated to (present only while a rotation is unfinished).
pub const KEYRING_NEXT_KEY: &str = "sys:keyring-next";

/// Settings of one deployment. `Default` is the secure default.
#[derive(Clone)]
pub struct Config {
    /// The admin user name (default `admin`).
    pub admin_username: String,
    /// PHC hash of the admin password; `None` disables login (503 with a clear message).
    pub admin_password_hash: Option<String>,
    /// Sessions die after this long unused (default 30 min).
    pub session_idle_secs: u64,
    /// Sessions die this long after login whatever their use (default 12 h).
    pub session_absolute_secs: u64,
    /// Login attempts allowed per client per window before 429 (default 5).
    pub login_max_attempts: u32,
    /// The lockout window (default 15 min).
    pub login_window_secs: u64,
    /// Header holding the client address, set by a trusted edge (`CF-Connecting-IP` on Workers).
    pub client_ip_header: Option<String>,
    /// Trust the first `X-Forwarded-For` address (only behind a proxy you control).
    pub trust_forwarded_for: bool,
    /// Allow http:// and loopback upstreams. For tests only; backends log it loudly.
    pub allow_loopback_upstreams: bool,
    /// Whole upstream exchange deadline (default 30 s).
    pub fetch_timeout_ms: u64,
    /// Largest upstream body returned (default 10 MiB).
    pub max_response_bytes: usize,
    /// Largest request body accepted by the API (default 1 MiB).
    pub max_request_bytes: usize,
    /// Audit events expire after this long (default 90 days).
    pub audit_retention_secs: u64,
    /// Origins allowed by CORS (empty: CORS off). Never `*`.
    pub cors_origins: Vec<String>,
    /// How long a KV write may take to be seen by every reader (0: reads always see the latest
    /// write, as the local stores do; Workers KV: up to a minute across locations). When not 0,
    /// every change claims, for this long, the version it read (see [`App::claim_version`]), so
    /// a change acting on a stale read is refused instead of undoing a newer one.
    pub kv_settle_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admin_username: "admin".into(),
            admin_password_hash: None,
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            login_max_attempts: 5,
            login_window_secs: 15 * 60,
            client_ip_header: None,
            trust_forwarded_for: false,
            allow_loopback_upstreams: false,
            fetch_timeout_ms: 30_000,
            max_response_bytes: 10 * 1024 * 1024,
            max_request_bytes: 1024 * 1024,
            audit_retention_secs: 90 * 24 * 3600,
            cors_origins: Vec::new(),
            kv_settle_ms: 0,
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
            .field("allow_loopback_upstreams", &self.allow_loopback_upstreams)
            .field("cors_origins", &self.cors_origins)
            .field("kv_settle_ms", &self.kv_settle_ms)
            .finish_non_exhaustive()
    }
}

/// The outside world, as ports.
#[derive(Clone)]
pub struct Ports {
    pub kv: Arc<dyn KvStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub fetcher: Arc<dyn Fetcher>,
    pub clock: Arc<dyn Clock>,
}

/// The application. Cheap to share (`Arc<App>`).
pub struct App {
    pub(crate) config: Config,
    pub(crate) ports: Ports,
    pub(crate) keys: Arc<Keys>,
    /// Scrubbers by keyed hash of the secrets they remove: building one costs tens of µs, more
    /// than the rest of an execute. Keyed by content, so a rotated secret never meets a stale
    /// scrubber; bounded, so memory stays flat.
    pub(crate) scrubbers:
        std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<crate::scrub::Scrubber>>>,
    /// Decrypted credentials by alias, each with the stored bytes it was opened from. Execute
    /// still reads the store every time and uses an entry only while the stored bytes are
    /// identical, so a change by any writer (another process, an edge sync) is seen at once;
    /// what it saves is the decryption, the parse and the scrubber construction.
    pub(crate) opened: std::sync::Mutex<std::collections::HashMap<String, OpenedCredential>>,
}

/// A decrypted credential and the stored envelope it came from (see [`App::opened`]).
#[derive(Clone)]
pub(crate) struct OpenedCredential {
    stored: Bytes,
    pub(crate) record: Arc<CredentialRecord>,
    /// The scrubber of the record's own secrets, built on first use (not for OAuth2 records,
    /// whose tokens change independently of the record).
    pub(crate) scrubber: Arc<std::sync::OnceLock<Arc<crate::scrub::Scrubber>>>,
    /// For an OAuth2 record, the binding its cached tokens must carry
    /// ([`crate::execute::oauth_binding`]), computed once per version.
    pub(crate) oauth_binding: Option<String>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Input of [`App::create_credential`] (the body of `POST /v1/credentials`).
/// `Debug` omits `data`, which holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub alias: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    pub data: serde_json::Value,
    pub policy: Policy,
}

/// Input of [`App::update_credential`] (the body of `PUT /v1/credentials/{alias}`): any of data
/// (rotation; `type` may change with it) or `secret` (the type's one secret alone, every other
/// data field kept), policy, description. `Debug` omits `data` and `secret`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialUpdate {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub policy: Option<Policy>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub secret: Option<credential::Secret>,
}

/// One credential as `GET /v1/credentials/{alias}` shows it: its metadata and its whole policy
/// (never the secret, nor any other field of its data).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialDetail {
    #[serde(flatten)]
    pub meta: CredentialMeta,
    pub policy: Policy,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("alias", &self.alias)
            .field("kind", &self.kind)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CredentialUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialUpdate")
            .field("kind", &self.kind)
            .field("data", &self.data.as_ref().map(|_| "[redacted]"))
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Input of [`App::create_key`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A freshly created API key: the only time `key` is ever shown.
#[derive(Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub key: String,
    pub name: String,
    pub role: String,
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Input of [`App::create_role`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `GET /v1/sync/export`: ciphertext and keyring parameters only.
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub keyring: KeyringRecord,
    pub records: Vec<ExportRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExportRecord {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Prefixes of the records a sync carries (not audit, not the keyring itself).
pub const SYNC_PREFIXES: [&str; 4] = [
    credential::CRED_PREFIX,
    credential::OAUTH_PREFIX,
    auth::KEY_PREFIX,
    auth::ROLE_PREFIX,
];

impl App {
    /// Open a deployment: load the keyring (or create it on first run) and derive the keys once.
    ///
    /// A master key that does not match the stored keyring fails here with `Unavailable`
    /// (code `wrong_master_key`) — before any request is served.
    pub async fn open(config: Config, ports: Ports, master: &MasterSecret) -> Result<App> {
        let keys = match ports.kv.get(KEYRING_KEY).await? {
            Some(bytes) => {
                let record: KeyringRecord = serde_json::from_slice(&bytes).map_err(|_| {
                    Error::unavailable("the stored keyring (sys:keyring) is not valid JSON")
                        .with_code(Code::InvalidKeyring)
                })?;
                Keys::open(master, &record)?
            }
            None => {
                // A store with records but no keyring lost its keyring (deleted, or a corrupt
                // file skipped at load). A new keyring would have a new salt and MAC key and make
                // every record unreadable for good: refuse instead.
                for prefix in [credential::CRED_PREFIX, auth::KEY_PREFIX] {
                    let page = ports
                        .kv
                        .list(ListOptions {
                            prefix: Some(prefix.into()),
                            cursor: None,
                            limit: Some(1),
                        })
                        .await?;
                    if !page.keys.is_empty() {
                        return Err(Error::unavailable(
                            "the store holds records but no keyring (sys:keyring is missing or unreadable); \
                             restore it from a backup: a new keyring would make every record unreadable",
                        )
                        .with_code(Code::KeyringMissing));
                    }
                }
                let (keys, record) = Keys::create(
                    master,
                    crypto::DEFAULT_PBKDF2_ITERATIONS,
                    ports.clock.now_ms(),
                )?;
                put_json(&*ports.kv, KEYRING_KEY, &record, None).await?;
                keys
            }
        };
        Ok(App {
            config,
            ports,
            keys: Arc::new(keys),
            scrubbers: std::sync::Mutex::new(std::collections::HashMap::new()),
            opened: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn now(&self) -> u64 {
        self.ports.clock.now_ms()
    }

    /// Write an audit event; a failure to write is logged by the caller's backend but never
    /// turns a completed action into an error (the action already happened).
    pub(crate) async fn audit(&self, event: AuditEvent) {
        let options = PutOptions {
            expiration_ttl: Some(self.config.audit_retention_secs.max(60)),
            metadata: None,
        };
        if let Ok(bytes) = serde_json::to_vec(&event) {
            let _ = self
                .ports
                .kv
                .put(&event.kv_key(), Bytes::from(bytes), options)
                .await;
        }
    }

    /// Run `change` holding the change lock of one named record (`kind` `name`, e.g. credential
    /// `github`), so two changes of one record never interleave: of two simultaneous creates of
    /// one alias exactly one is acknowledged and the other gets 409 — without the lock both could
    /// see the alias free and the later write would silently replace an acknowledged one. A
    /// change that finds the lock held fails at once with 409 `change_in_progress` (the holder
    /// takes milliseconds; retrying is safe).
    ///
    /// The lock is an exact [`SessionStore::hit`] counter with limit 1 (a Durable Object on the
    /// edge, so it holds across isolates and locations), released with
    /// [`SessionStore::reset_counter`] whatever the outcome. A holder that never releases it (a
    /// crashed process, a request dropped mid-change) blocks changes of that one record for at
    /// most [`CHANGE_LOCK_MS`]. A change that outlives the lock (slower than [`CHANGE_LOCK_MS`]
    /// minus a margin for clock differences) does not release it: by then another change may
    /// hold it, and releasing would let a third one run beside that one.
    ///
    /// It separates overlapping changes only. Where KV reads can lag writes made elsewhere, a
    /// later change can still read a replaced version: [`App::claim_version`] covers that.
    pub(crate) async fn exclusive<T>(
        &self,
        kind: &str,
        name: &str,
        change: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let key = format!("change:{kind}:{name}");
        let hit = self
            .ports
            .sessions
            .hit(&key, CHANGE_LOCK_MS, 1, self.now())
            .await?;
        if !hit.allowed {
            return Err(Error::conflict(format!(
                "another change to {kind} '{name}' is in progress; retry"
            ))
            .with_code(Code::ChangeInProgress)
            .with_retry_after(1));
        }
        let result = change.await;
        // Release only a lock that is still ours (see above); a lapsed one is left alone.
        if self.now().saturating_add(CHANGE_LOCK_RELEASE_MARGIN_MS) < hit.reset_at_ms {
            // Best effort: if the release fails, the lock lapses after CHANGE_LOCK_MS.
            let _ = self.ports.sessions.reset_counter(&key).await;
        }
        result
    }

    /// Claim the change of record `kind` `name` away from the version this change read from
    /// the store (`read`: its stored bytes, `None` if it was absent). Call it inside
    /// [`App::exclusive`], after every check, right before writing: a claimed change that then
    /// fails leaves the record unchangeable for `kv_settle_ms`.
    ///
    /// The change lock keeps overlapping changes apart, but on a store whose reads may lag
    /// writes made elsewhere ([`Config::kv_settle_ms`] > 0: Workers KV, up to a minute between
    /// locations) a change can start after another has finished and still read the version
    /// that one replaced. Acting on it would undo the newer change: bring back a deleted
    /// credential or an old secret, or replace a credential created elsewhere. So each change
    /// claims its starting version with a single-use [`SessionStore::mark`] (strongly
    /// consistent) that lives `kv_settle_ms`: a second change from the same version within
    /// that time is a change from a stale read and gets 409 `change_not_propagated`, with
    /// `Retry-After`; once the newer version has reached every reader, the retry works. Every
    /// stored envelope has a fresh nonce, so its bytes name one version. Absence is one
    /// version per record: on such a store, a record created (or re-created) less than
    /// `kv_settle_ms` ago cannot be created again before that time even if it was deleted in
    /// between — refused, never lost. With `kv_settle_ms` 0 nothing is claimed.
    pub(crate) async fn claim_version(
        &self,
        kind: &str,
        name: &str,
        read: Option<&[u8]>,
    ) -> Result<()> {
        let settle = self.config.kv_settle_ms;
        if settle == 0 {
            return Ok(());
        }
        let from = match read {
            Some(bytes) => crypto::hex(&self.keys.mac(bytes)[..16]),
            None => "absent".to_owned(),
        };
        let key = format!("claim:{kind}:{name}:{from}");
        if self.ports.sessions.mark(&key, settle, self.now()).await? {
            return Ok(());
        }
        let secs = settle.div_ceil(1000);
        Err(Error::conflict(format!(
            "{kind} '{name}' was changed moments ago and this location may not see that change \
             yet; retry in {secs} s"
        ))
        .with_code(Code::ChangeNotPropagated)
        .with_retry_after(secs))
    }

    pub(crate) async fn audit_change(
        &self,
        who: &Principal,
        action: &str,
        credential: Option<&str>,
        status: u16,
    ) {
        let mut e = AuditEvent::new(self.now(), who.actor(), action, "success");
        e.credential = credential.map(str::to_string);
        e.status = Some(status);
        self.audit(e).await;
    }

    // ----- credentials -------------------------------------------------------------------

    /// Load a credential for use (execute): the store is read every time, but an unchanged
    /// record is not decrypted and parsed again (see [`App::opened`]).
    pub(crate) async fn load_credential_shared(&self, alias: &str) -> Result<OpenedCredential> {
        /// Most credentials kept open; the cache is simply emptied when full.
        const MAX_OPEN: usize = 1024;
        let (key, stored) = match self.read_credential(alias).await {
            Ok(found) => found,
            Err(e) => {
                if e.code() == Code::CredentialNotFound {
                    // Deleted by another writer: drop its decrypted secrets too.
                    self.forget_opened(alias);
                }
                return Err(e);
            }
        };
        if let Some(entry) = self
            .opened_cache()
            .get(alias)
            .filter(|e| e.stored == stored)
        {
            return Ok(entry.clone());
        }
        let record = self.open_credential(&key, &stored)?;
        let oauth_binding = match &record.data {
            CredentialData::Oauth2(d) => {
                Some(crate::execute::oauth_binding(&self.keys, &record, d)?)
            }
            _ => None,
        };
        let entry = OpenedCredential {
            record: Arc::new(record),
            stored,
            scrubber: Arc::default(),
            oauth_binding,
        };
        {
            let mut cache = self.opened_cache();
            if cache.len() >= MAX_OPEN && !cache.contains_key(alias) {
                cache.clear();
            }
            cache.insert(alias.to_owned(), entry.clone());
        }
        Ok(entry)
    }

    /// Aliases whose decrypted credentials this instance keeps in memory, sorted. For tests that
    /// check decrypted secrets do not outlive their credential; aliases are not secret.
    #[doc(hidden)]
    pub fn opened_aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = self.opened_cache().keys().cloned().collect();
        aliases.sort();
        aliases
    }

    /// The opened-credential cache. A panic while it was locked cannot leave it half-updated
    /// (every critical section is one map call), so a poisoned lock is used as is: above all,
    /// removals must still happen.
    fn opened_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, OpenedCredential>> {
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drop the decrypted copy of a credential (after it changed or was deleted here), so its
    /// secrets do not outlive it in memory.
    fn forget_opened(&self, alias: &str) {
        self.opened_cache().remove(alias);
    }

    /// The stored envelope of a credential and its KV key; 404 if there is none.
    async fn read_credential(&self, alias: &str) -> Result<(String, Bytes)> {
        credential::validate_name("alias", alias)
            .map_err(|_| Error::not_found(format!("no credential '{alias}'")))?;
        let key = credential::cred_key(alias);
        let stored = self.ports.kv.get(&key).await?.ok_or_else(|| {
            Error::not_found(format!("no credential '{alias}'")).with_code(Code::CredentialNotFound)
        })?;
        Ok((key, stored))
    }

    fn open_credential(&self, key: &str, stored: &[u8]) -> Result<CredentialRecord> {
        let text = std::str::from_utf8(stored).map_err(|_| {
            Error::unavailable("stored credential is not an envelope")
                .with_code(Code::DecryptFailed)
        })?;
        let plain = self.keys.open_envelope(key, text)?;
        serde_json::from_slice(&plain).map_err(|_| {
            Error::unavailable("stored credential is unreadable").with_code(Code::DecryptFailed)
        })
    }

    /// Seal and store `record`, replacing `read` (the stored bytes the change started from;
    /// `None` for a create), which is claimed first (see [`App::claim_version`]) once the write
    /// is known to be acceptable to the store, so a refused write claims nothing.
    async fn store_credential(&self, record: &CredentialRecord, read: Option<&[u8]>) -> Result<()> {
        let key = credential::cred_key(&record.alias);
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(record).map_err(|_| Error::internal())?);
        let envelope = Bytes::from(self.keys.seal(&key, &plain));
        let meta = serde_json::to_value(record.meta()).map_err(|_| Error::internal())?;
        let options = PutOptions {
            expiration_ttl: None,
            metadata: Some(meta),
        };
        crate::ports::kv_validate::put(&key, &envelope, &options).map_err(|e| {
            if e.code() == Code::MetadataTooLarge {
                Error::bad_request(
                    "too many or too long allowed_hosts/description (metadata over 1024 bytes)",
                )
                .with_code(Code::PolicyTooLarge)
            } else {
                e
            }
        })?;
        self.claim_version("credential", &record.alias, read)
            .await?;
        self.ports.kv.put(&key, envelope, options).await
    }

    /// Create a credential. 409 if the alias exists.
    pub async fn create_credential(
        &self,
        who: &Principal,
        input: NewCredential,
    ) -> Result<CredentialMeta> {
        who.require(Permission::Write)?;
        credential::validate_name("alias", &input.alias)?;
        who.require_scope(&input.alias)?;
        let description = input.description.unwrap_or_default();
        credential::validate_description(&description)?;
        let kind = CredentialType::parse(&input.kind)?;
        let data = CredentialData::parse(kind, input.data)?;
        let policy = input.policy.validate()?;
        let alias = input.alias.clone();
        self.exclusive("credential", &alias, async move {
            if self
                .ports
                .kv
                .get(&credential::cred_key(&input.alias))
                .await?
                .is_some()
            {
                return Err(Error::conflict(format!(
                    "credential '{}' already exists",
                    input.alias
                ))
                .with_code(Code::CredentialExists));
            }
            let now = self.now();
            let id: [u8; 8] = crypto::random_bytes();
            let record = CredentialRecord {
                id: crypto::hex(&id),
                alias: input.alias,
                description,
                data,
                policy,
                created_at: now,
                updated_at: now,
            };
            self.store_credential(&record, None).await?;
            // A token left by an earlier credential of this alias (a refresh that finished after
            // its delete) is useless to this one (see `OAuthToken::issued_for`): drop it. Best
            // effort: the credential is stored, and the token could not be used anyway.
            let _ = self
                .ports
                .kv
                .delete(&credential::oauth_key(&record.alias))
                .await;
            self.audit_change(who, "credential.create", Some(&record.alias), 201)
                .await;
            Ok(record.meta())
        })
        .await
    }

    /// Replace a credential's data (rotation), policy and/or description.
    pub async fn update_credential(
        &self,
        who: &Principal,
        alias: &str,
        update: CredentialUpdate,
    ) -> Result<CredentialMeta> {
        self.change_credential(who, alias, update, "credential.update")
            .await
    }

    /// [`Self::update_credential`], audited as `action`.
    async fn change_credential(
        &self,
        who: &Principal,
        alias: &str,
        update: CredentialUpdate,
        action: &'static str,
    ) -> Result<CredentialMeta> {
        who.require(Permission::Write)?;
        who.require_scope(alias)?;
        credential::validate_name("alias", alias)
            .map_err(|_| Error::not_found(format!("no credential '{alias}'")))?;
        self.exclusive("credential", alias, async move {
            let (key, stored) = self.read_credential(alias).await?;
            let mut record = self.open_credential(&key, &stored)?;
            if let Some(d) = update.description {
                credential::validate_description(&d)?;
                record.description = d;
            }
            if let Some(p) = update.policy {
                let p = p.validate()?;
                // Re-pointing an existing secret at other hosts is how a `write` key could exfiltrate
                // it (widen allowed_hosts, then execute). Without new data, only admins may do that.
                let mut old_hosts = record.policy.allowed_hosts.clone();
                let mut new_hosts = p.allowed_hosts.clone();
                old_hosts.sort();
                new_hosts.sort();
                // A new `secret` alone does not count: the rest of the data stays (an OAuth2
                // refresh token, a user name) and would go to the new hosts with it.
                if new_hosts != old_hosts && update.data.is_none() {
                    const NEEDS_ADMIN: &str = "changing allowed_hosts without new data (all \
                        of it, not only the secret) needs the admin permission";
                    who.require(Permission::Admin).map_err(|_| {
                        Error::forbidden(NEEDS_ADMIN).with_code(Code::PermissionDenied)
                    })?;
                }
                record.policy = p;
            }
            let rotated = match (update.kind, update.data, update.secret) {
                (_, Some(_), Some(_)) => {
                    return Err(Error::bad_request(
                        "give either data (all of it) or secret (the secret alone), not both",
                    )
                    .with_code(Code::InvalidData))
                }
                (Some(k), Some(d), None) => {
                    record.data = CredentialData::parse(CredentialType::parse(&k)?, d)?;
                    true
                }
                (None, Some(d), None) => {
                    record.data = CredentialData::parse(record.data.kind(), d)?;
                    true
                }
                (None, None, Some(secret)) => {
                    record.data = record.data.with_secret(secret)?;
                    true
                }
                (Some(_), None, _) => {
                    return Err(Error::bad_request("changing type needs new data")
                        .with_code(Code::InvalidData))
                }
                (None, None, None) => false,
            };
            record.updated_at = self.now();
            self.store_credential(&record, Some(&stored)).await?;
            if rotated {
                // A cached OAuth token belongs to the old client secret.
                self.ports.kv.delete(&credential::oauth_key(alias)).await?;
            }
            self.forget_opened(alias);
            self.audit_change(who, action, Some(alias), 200).await;
            Ok(record.meta())
        })
        .await
    }

    /// Replace only the secret of a credential (api_key key, basic_auth password, query_param
    /// value, oauth2 client secret), keeping every other field: what `vultrino credential rotate`
    /// does, audited as `credential.rotate` (over HTTP the same is `PUT {"secret"}`, audited as
    /// `credential.update` like every `PUT`).
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        alias: &str,
        secret: credential::Secret,
    ) -> Result<CredentialMeta> {
        let update = CredentialUpdate {
            secret: Some(secret),
            ..CredentialUpdate::default()
        };
        self.change_credential(who, alias, update, "credential.rotate")
            .await
    }

    /// Delete a credential (and its cached OAuth token). 404 if missing.
    pub async fn delete_credential(&self, who: &Principal, alias: &str) -> Result<()> {
        who.require(Permission::Write)?;
        who.require_scope(alias)?;
        credential::validate_name("alias", alias)
            .map_err(|_| Error::not_found(format!("no credential '{alias}'")))?;
        self.exclusive("credential", alias, async {
            let (key, stored) = self.read_credential(alias).await?;
            self.claim_version("credential", alias, Some(&stored))
                .await?;
            self.ports.kv.delete(&key).await?;
            self.ports.kv.delete(&credential::oauth_key(alias)).await?;
            self.forget_opened(alias);
            self.audit_change(who, "credential.delete", Some(alias), 204)
                .await;
            Ok(())
        })
        .await
    }

    /// One credential's metadata (never its secret).
    pub async fn get_credential(&self, who: &Principal, alias: &str) -> Result<CredentialMeta> {
        who.require(Permission::Read)?;
        who.require_scope(alias)?;
        credential::validate_name("alias", alias)
            .map_err(|_| Error::not_found(format!("no credential '{alias}'")))?;
        let entry = self
            .ports
            .kv
            .get_with_metadata(&credential::cred_key(alias))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("no credential '{alias}'"))
                    .with_code(Code::CredentialNotFound)
            })?;
        meta_from(alias, entry.metadata)
    }

    /// One credential's metadata and policy, from its decrypted record (never its secret).
    pub async fn credential_detail(
        &self,
        who: &Principal,
        alias: &str,
    ) -> Result<CredentialDetail> {
        who.require(Permission::Read)?;
        who.require_scope(alias)?;
        let (key, stored) = self.read_credential(alias).await?;
        let record = self.open_credential(&key, &stored)?;
        Ok(CredentialDetail {
            meta: record.meta(),
            policy: record.policy,
        })
    }

    /// List the credentials the caller's scopes reach, from KV metadata only (no decryption).
    pub async fn list_credentials(
        &self,
        who: &Principal,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<CredentialMeta>, Option<String>)> {
        who.require(Permission::Read)?;
        // The store's cursor names the last key listed, which may be outside the caller's
        // scopes: hand it out sealed, so paging cannot enumerate hidden aliases.
        let cursor = match cursor {
            Some(c) => {
                let raw = self.keys.open_envelope(CURSOR_AD, &c).map_err(|_| {
                    Error::bad_request("invalid cursor").with_code(Code::InvalidCursor)
                })?;
                Some(String::from_utf8(raw.to_vec()).map_err(|_| {
                    Error::bad_request("invalid cursor").with_code(Code::InvalidCursor)
                })?)
            }
            None => None,
        };
        let page = self
            .ports
            .kv
            .list(ListOptions {
                prefix: Some(credential::CRED_PREFIX.into()),
                cursor,
                limit,
            })
            .await?;
        let mut out = Vec::with_capacity(page.keys.len());
        for k in page.keys {
            let alias = &k.name[credential::CRED_PREFIX.len()..];
            if who.reaches(alias) {
                out.push(meta_from(alias, k.metadata)?);
            }
        }
        let cursor = page.cursor.map(|c| self.keys.seal(CURSOR_AD, c.as_bytes()));
        Ok((out, cursor))
    }
}

fn meta_from(alias: &str, metadata: Option<serde_json::Value>) -> Result<CredentialMeta> {
    let mut meta: CredentialMeta = metadata
        .and_then(|m| serde_json::from_value(m).ok())
        .ok_or_else(|| {
            Error::new(ErrorKind::Unavailable, "credential metadata is missing")
                .with_code(Code::InvalidRecord)
        })?;
    meta.alias = alias.to_string();
    Ok(meta)
}

pub(crate) async fn put_json<T: Serialize>(
    kv: &dyn KvStore,
    key: &str,
    value: &T,
    metadata: Option<serde_json::Value>,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|_| Error::internal())?;
    kv.put(
        key,
        Bytes::from(bytes),
        PutOptions {
            expiration_ttl: None,
            metadata,
        },
    )
    .await
}

/// Every key under `prefix` (following cursors to the end), with metadata. For admin and sync
/// operations, whose record counts are small (keys, roles, credentials), never for audit.
pub(crate) async fn list_all(kv: &dyn KvStore, prefix: &str) -> Result<Vec<crate::ports::ListKey>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv
            .list(ListOptions {
                prefix: Some(prefix.into()),
                cursor,
                limit: None,
            })
            .await?;
        out.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}
