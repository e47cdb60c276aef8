//! Agent API keys: the only code that touches `key:` records. Created (shown once), listed,
//! revoked (at once, everywhere) and authenticated here.
//!
//! A record is signed ([`Keys::seal_record`]) and checked on every read: whoever can write the
//! store but does not hold the master key cannot change a key's role, expiry or name, nor
//! move a record to another id (docs/decisions/0046-signed-key-and-role-records.md). A key is
//! bound to its custom role by the role's id, not its name
//! (docs/decisions/0048-keys-bind-to-a-role-id.md).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::integrity::{Integrity, Listing};
use super::principal::{builtin_role, Permission, Principal, Role};
use super::roles;
use super::token::{is_key_id, parse_api_key, API_KEY_PREFIX};
use crate::audit::AuditLog;
use crate::crypto::{self, Keys, MacPurpose, RecordCheck};
use crate::error::{Code, Error, Result};
use crate::kv::list_all;
use crate::ports::{Ports, PutOptions};

/// KV key prefix of API key records.
pub const KEY_PREFIX: &str = "key:";

/// An API key record at `key:<id>`, stored signed. `mac` is hex HMAC-SHA256 of the secret part
/// ([`MacPurpose::ApiKeySecret`]); `role_id` the id of the custom role the key was created for
/// (`None` for a built-in role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub role_id: Option<String>,
    pub mac: String,
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

/// The listing view of an API key: everything but the MAC and the role id. Also written as the
/// record's cleartext KV metadata, for display by older versions only: this version lists keys
/// from their signed records, never from metadata (which anyone who can write the store can
/// change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

impl ApiKeyRecord {
    pub fn info(&self) -> ApiKeyInfo {
        ApiKeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
        }
    }
}

/// Input of [`ApiKeys::create`] (the body of `POST /v1/keys`).
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

/// The marker that spaces the clean-up deletes of a revoked key's record (one a minute).
const CLEANUP_MARKER_PREFIX: &str = "revoked-key-cleanup:";

/// How long a key's revocation marker lives: ten years, longer than any key lives.
pub const REVOKED_MARKER_TTL_MS: u64 = 10 * 365 * 86_400_000;

/// The marker set in the SessionStore when a key is revoked.
pub fn revoked_marker(id: &str) -> String {
    ["revoked-key:", id].concat()
}

pub(crate) fn key_of(id: &str) -> String {
    [KEY_PREFIX, id].concat()
}

/// Write `record` signed at its KV key, with its listing view as metadata.
pub(crate) async fn store(ports: &Ports, keys: &Keys, record: &ApiKeyRecord) -> Result<()> {
    let key = key_of(&record.id);
    let bytes = keys.seal_record(&key, record)?;
    let meta = serde_json::to_value(record.info()).map_err(|_| Error::internal())?;
    ports
        .kv
        .put(
            &key,
            Bytes::from(bytes),
            PutOptions {
                expiration_ttl: None,
                metadata: Some(meta),
            },
        )
        .await
}

/// Most keys remembered as verified; the cache is simply emptied when full.
const MAX_VERIFIED: usize = 4096;

/// API keys verified before, by id: the stored bytes of the signed record (and of the custom
/// role it binds to) that were checked, and a SHA-256 digest of the secret that matched. A
/// request whose key record and role record are byte for byte the ones checked, and whose
/// secret has the same digest (compared in constant time), is the same key as before: its
/// record's signature, its MAC and its role need not be checked again. Everything that can
/// change while the bytes stay the same is still checked on every request: expiry (the clock)
/// and revocation (the SessionStore marker). Why this is keyed on stored bytes, like the
/// opened-credential cache: docs/decisions/0067-verified-key-cache.md.
#[derive(Default)]
pub(crate) struct VerifiedKeys(Mutex<HashMap<String, Verified>>);

/// One verified key: what was checked, and what it gave.
struct Verified {
    stored: Bytes,
    /// The custom role's record bytes (`None` for a built-in role).
    role_stored: Option<Bytes>,
    secret_digest: [u8; 32],
    record: ApiKeyRecord,
    role: Role,
    /// When the key record was last read from the store with these bytes (ms): what
    /// [`ApiKeys::with_key_record_reuse_secs`] measures the reuse against.
    read_at_ms: u64,
}

impl VerifiedKeys {
    /// Keys remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every critical section is one map call, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Verified>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The API keys of one deployment ([`crate::app::App::api_keys`]).
#[derive(Clone, Copy)]
pub struct ApiKeys<'a> {
    pub(super) ports: &'a Ports,
    pub(super) keys: &'a Keys,
    pub(super) audit: AuditLog<'a>,
    verified: &'a VerifiedKeys,
    /// A key's `last_used_at` is rewritten (one KV write) when older than this
    /// ([`Config::key_last_used_interval_secs`](crate::app::Config::key_last_used_interval_secs)).
    last_used_interval_ms: u64,
    /// A key verified before is taken from the isolate's cache without reading its record
    /// again for this long after the record was last read (0: read on every request)
    /// ([`Config::key_record_reuse_secs`](crate::app::Config::key_record_reuse_secs)).
    reuse_ms: u64,
}

impl<'a> ApiKeys<'a> {
    #[inline]
    pub(crate) fn new(
        ports: &'a Ports,
        keys: &'a Keys,
        audit: AuditLog<'a>,
        verified: &'a VerifiedKeys,
    ) -> Self {
        ApiKeys {
            ports,
            keys,
            audit,
            verified,
            last_used_interval_ms: 60_000,
            reuse_ms: 0,
        }
    }

    /// Keys verified before whose record is reused, without reading it from the store, for
    /// `secs` after it was last read (0: never; docs/decisions/0117).
    pub(crate) fn with_key_record_reuse_secs(mut self, secs: u64) -> Self {
        self.reuse_ms = secs.saturating_mul(1000);
        self
    }

    /// Keys whose `last_used_at` is rewritten only when older than `secs` (at least 60).
    pub(crate) fn with_last_used_interval_secs(mut self, secs: u64) -> Self {
        self.last_used_interval_ms = secs.max(60).saturating_mul(1000);
        self
    }

    /// Create an API key; the returned `key` is shown once and never stored.
    pub async fn create(&self, who: &Principal, input: NewKey) -> Result<CreatedKey> {
        who.require(Permission::Admin)?;
        if input.name.trim().is_empty() || input.name.chars().count() > 100 {
            return Err(
                Error::bad_request("name must be 1-100 characters").with_code(Code::InvalidName)
            );
        }
        let unknown =
            || Error::bad_request(format!("no role '{}'", input.role)).with_code(Code::UnknownRole);
        let role_id = if builtin_role(&input.role).is_some() {
            None
        } else {
            let role = match roles::read(&*self.ports.kv, self.keys, &input.role).await? {
                None => return Err(unknown()),
                Some(RecordCheck::Signed(role)) => role,
                Some(check) => {
                    let e = roles::role_key(&input.role);
                    return Err(self.integrity().refuse(&who.actor(), &e, &check).await);
                }
            };
            Some(role.id.ok_or_else(unknown)?)
        };
        let now = self.ports.now_ms();
        let expires_at = match input.expires_in_days {
            Some(0) => {
                return Err(Error::bad_request("expires_in_days must be at least 1")
                    .with_code(Code::InvalidExpiry))
            }
            Some(d) if d > 3650 => {
                return Err(Error::bad_request("expires_in_days must be at most 3650")
                    .with_code(Code::InvalidExpiry))
            }
            Some(d) => Some(now + u64::from(d) * 86_400_000),
            None => None,
        };
        let id = crypto::hex(&crypto::random_bytes::<8>());
        let secret = zeroize::Zeroizing::new(crypto::b64url(&crypto::random_bytes::<32>()));
        let record = ApiKeyRecord {
            id: id.clone(),
            name: input.name,
            role: input.role,
            role_id,
            mac: crypto::hex(&self.keys.mac(MacPurpose::ApiKeySecret, secret.as_bytes())),
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        self.store(&record).await?;
        self.audit.change(who, "key.create", None, 201).await;
        Ok(CreatedKey {
            key: format!("{API_KEY_PREFIX}{id}_{}", secret.as_str()),
            id,
            name: record.name,
            role: record.role,
            expires_at,
        })
    }

    /// Key `id` as it stands now, without its secret (for the parent of an agent token): a
    /// signed record of `id`, its role, not expired and not revoked. A dead key is 401
    /// `invalid_api_key` (`api_key_expired` past its expiry), like the key itself would get.
    pub(crate) async fn live(&self, id: &str) -> Result<(ApiKeyRecord, Role)> {
        let unauthorized = || Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey);
        if !is_key_id(id) {
            return Err(unauthorized());
        }
        let key = key_of(id);
        let actor = format!("key:{id}");
        // The parent of a token: a key this isolate verified lately is reused as
        // `authenticate_key` does (no secret to compare: the token's own MAC was checked).
        let (record, reused_role) = match self.reused(id, None).await? {
            Some((record, role)) => (record, Some(role)),
            None => {
                let bytes = self.ports.kv.get(&key).await?.ok_or_else(unauthorized)?;
                match self.keys.open_record::<ApiKeyRecord>(&key, &bytes) {
                    RecordCheck::Signed(record) if record.id == id => (record, None),
                    RecordCheck::Unsigned(_) => return Err(unauthorized()),
                    _ => {
                        self.integrity().refused_unauthenticated(&actor, &key).await;
                        return Err(unauthorized());
                    }
                }
            }
        };
        let now = self.ports.now_ms();
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(Error::unauthorized("API key has expired").with_code(Code::ApiKeyExpired));
        }
        if self
            .ports
            .sessions
            .is_marked(&revoked_marker(id), now)
            .await?
        {
            return Err(unauthorized());
        }
        let role = match reused_role {
            Some(role) => role,
            None => self.role_of(&record, &actor).await?,
        };
        Ok((record, role))
    }

    fn integrity(&self) -> Integrity<'a> {
        Integrity::new(self.ports, self.keys, self.audit)
    }

    async fn store(&self, record: &ApiKeyRecord) -> Result<()> {
        store(self.ports, self.keys, record).await
    }

    /// Every key whose record checks out, from the signed records (never from the cleartext
    /// metadata), oldest first; the records that do not are listed apart in `refused`, and
    /// audited.
    pub async fn list(&self, who: &Principal) -> Result<Listing<ApiKeyInfo>> {
        who.require(Permission::Admin)?;
        let mut out = Listing::default();
        for k in list_all(&*self.ports.kv, KEY_PREFIX).await? {
            let Some(bytes) = self.ports.kv.get(&k.name).await? else {
                continue; // revoked meanwhile
            };
            match self.keys.open_record::<ApiKeyRecord>(&k.name, &bytes) {
                RecordCheck::Signed(r) if key_of(&r.id) == k.name => out.items.push(r.info()),
                RecordCheck::Signed(_) => out.refused.push(
                    self.integrity()
                        .refused(&who.actor(), &k.name, &RecordCheck::<()>::Tampered)
                        .await,
                ),
                check => out.refused.push(
                    self.integrity()
                        .refused(&who.actor(), &k.name, &check)
                        .await,
                ),
            }
        }
        // Creation order, oldest first (the store lists by id, which is random); the id breaks
        // ties of one millisecond.
        out.items
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Revoke a key: effective at once (SessionStore marker), then the record is deleted.
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<()> {
        who.require(Permission::Admin)?;
        let key = key_of(id);
        if !is_key_id(id) || self.ports.kv.get(&key).await?.is_none() {
            return Err(Error::not_found(format!("no key '{id}'")).with_code(Code::KeyNotFound));
        }
        self.ports
            .sessions
            .mark(
                &revoked_marker(id),
                REVOKED_MARKER_TTL_MS,
                self.ports.now_ms(),
            )
            .await?;
        self.ports.kv.delete(&key).await?;
        self.verified.lock().remove(id);
        self.audit.change(who, "key.revoke", None, 204).await;
        Ok(())
    }

    /// Authenticate an API key token (`vk_<id>_<secret>`).
    ///
    /// A record that fails its integrity check is refused as an invalid key (401
    /// `invalid_api_key`: the caller learns nothing about the store) and audited. The holder of
    /// a key issued before records were signed (the right secret, an unsigned record) gets 503
    /// `record_unsigned`, which names the migration that fixes it.
    ///
    /// Keys only: [`ApiKeys::authenticate`] (in `tokens.rs`) takes agent tokens as well.
    pub(super) async fn authenticate_key(&self, token: &str) -> Result<Principal> {
        let unauthorized = || Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey);
        let (id, secret) = parse_api_key(token).ok_or_else(unauthorized)?;
        let key = key_of(id);
        let digest = secret_digest(secret);
        // The hourly `last_used_at` write puts the record back in the store: it is made from a
        // fresh read, never from a reused copy, so a record deleted or edited in the store
        // outside the API is neither brought back nor overwritten before its check audits it
        // (review of 2026-12-07, finding 2).
        let reused = match self.reused(id, Some(&digest)).await? {
            Some((record, _)) if self.last_use_due(&record, self.ports.now_ms()) => None,
            other => other,
        };
        let (mut record, role) = match reused {
            Some(known) => known,
            None => {
                let bytes = self.ports.kv.get(&key).await?.ok_or_else(unauthorized)?;
                match self.verified_before(id, &bytes, &digest).await? {
                    Some(known) => known,
                    None => {
                        let (record, role, role_stored) =
                            self.verify(id, secret, &key, &bytes).await?;
                        self.remember(id, bytes, role_stored, digest, &record, &role);
                        (record, role)
                    }
                }
            }
        };
        let now = self.ports.now_ms();
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(Error::unauthorized("API key has expired").with_code(Code::ApiKeyExpired));
        }
        if self
            .ports
            .sessions
            .is_marked(&revoked_marker(id), now)
            .await?
        {
            // A revocation whose record delete failed (its marker landed, the reply said 503)
            // is finished by the key's next use, so the key leaves the listing (decision 0107)
            // — at most once a minute per key: a revoked agent spraying requests must not spend
            // a KV write (the dearest operation on Workers) on each (review of 2026-12-06, L2).
            let cleanup = [CLEANUP_MARKER_PREFIX, id].concat();
            if self
                .ports
                .sessions
                .mark(&cleanup, 60_000, now)
                .await
                .unwrap_or(false)
            {
                let _ = self.ports.kv.delete(&key).await;
            }
            return Err(unauthorized());
        }
        // Record use at most once a minute (once an hour on the worker, where a KV write is the
        // dearest operation and the free plan allows 1 000 a day: docs/decisions/0109): a KV
        // write per request would be wasteful (docs/decisions/0006-kv-record-layout.md).
        if self.last_use_due(&record, now) {
            record.last_used_at = Some(now);
            if self.store(&record).await.is_ok() {
                // A reused record must not ask for this write again on every request.
                self.used_at(&record.id, now);
            }
            // A revocation between our read and this write would be undone by the write:
            // look again, and finish the revocation if it happened.
            if self
                .ports
                .sessions
                .is_marked(&revoked_marker(&record.id), now)
                .await?
            {
                self.ports.kv.delete(&key_of(&record.id)).await?;
                return Err(unauthorized());
            }
        }
        Ok(Principal::ApiKey {
            id: record.id,
            name: record.name,
            role,
            token: None,
            access: None,
        })
    }

    /// The record and role of key `id` if it was verified, with a secret of the same digest,
    /// from a record read less than [`ApiKeys::reuse_ms`] ago: no store read for the key
    /// record. A key record never changes but for its `last_used_at` (kept here as written) and
    /// its deletion, which a revocation does after setting the marker every request reads; so
    /// nothing a user sees is stale. A custom role's record is still read and compared, as
    /// [`ApiKeys::verified_before`] does: a role deleted is seen at once, as before.
    ///
    /// `digest`: the secret's, compared in constant time; `None` for the parent key of an
    /// agent token, whose own secret was checked instead.
    /// Whether the key's `last_used_at` is due to be written at `now` (see `authenticate_key`).
    fn last_use_due(&self, record: &ApiKeyRecord, now: u64) -> bool {
        record
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) > self.last_used_interval_ms)
    }

    async fn reused(
        &self,
        id: &str,
        digest: Option<&[u8; 32]>,
    ) -> Result<Option<(ApiKeyRecord, Role)>> {
        if self.reuse_ms == 0 {
            return Ok(None);
        }
        let now = self.ports.now_ms();
        let (record, role, role_stored) = {
            let map = self.verified.lock();
            let Some(v) = map.get(id) else {
                return Ok(None);
            };
            // A clock that went back is not a reason to reuse.
            if now < v.read_at_ms || now - v.read_at_ms >= self.reuse_ms {
                return Ok(None);
            }
            if digest.is_some_and(|d| !crypto::ct_eq(&v.secret_digest, d)) {
                // Not this key's secret: the full check (a store read) decides, as before.
                return Ok(None);
            }
            (v.record.clone(), v.role.clone(), v.role_stored.clone())
        };
        Ok(self
            .role_unchanged(&record.role, role_stored)
            .await?
            .then_some((record, role)))
    }

    /// Whether a remembered key's custom role record (`role_stored`; `None` for a built-in
    /// role) is still the one in the store: an edited or deleted role is seen at once.
    async fn role_unchanged(&self, role: &str, role_stored: Option<Bytes>) -> Result<bool> {
        let Some(role_stored) = role_stored else {
            return Ok(true);
        };
        let current = self.ports.kv.get(&roles::role_key(role)).await?;
        Ok(current.as_ref() == Some(&role_stored))
    }

    /// Key `id`'s `last_used_at` was written as `at`: the cached record says so too.
    fn used_at(&self, id: &str, at: u64) {
        if let Some(v) = self.verified.lock().get_mut(id) {
            v.record.last_used_at = Some(at);
        }
    }

    /// The record and role of key `id` if it was verified before with the same stored bytes
    /// (key record and custom role record) and a secret of the same digest ([`VerifiedKeys`]).
    /// A different secret for unchanged bytes is refused at once: the record's MAC matched
    /// another secret.
    async fn verified_before(
        &self,
        id: &str,
        stored: &Bytes,
        digest: &[u8; 32],
    ) -> Result<Option<(ApiKeyRecord, Role)>> {
        let now = self.ports.now_ms();
        let (record, role, role_stored) = {
            let mut map = self.verified.lock();
            let Some(v) = map.get_mut(id) else {
                return Ok(None);
            };
            if v.stored != *stored {
                return Ok(None);
            }
            if !crypto::ct_eq(&v.secret_digest, digest) {
                return Err(Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey));
            }
            // The record was read again just now, unchanged.
            v.read_at_ms = now;
            (v.record.clone(), v.role.clone(), v.role_stored.clone())
        };
        Ok(self
            .role_unchanged(&record.role, role_stored)
            .await?
            .then_some((record, role)))
    }

    fn remember(
        &self,
        id: &str,
        stored: Bytes,
        role_stored: Option<Bytes>,
        secret_digest: [u8; 32],
        record: &ApiKeyRecord,
        role: &Role,
    ) {
        let mut map = self.verified.lock();
        if map.len() >= MAX_VERIFIED && !map.contains_key(id) {
            map.clear();
        }
        map.insert(
            id.to_string(),
            Verified {
                stored,
                role_stored,
                secret_digest,
                record: record.clone(),
                role: role.clone(),
                read_at_ms: self.ports.now_ms(),
            },
        );
    }

    /// Check key `id`'s stored record `bytes` in full: its signature, that it is the record of
    /// `id`, the secret against its MAC, and its role. Returns the record, its role and the
    /// custom role's record bytes as read.
    async fn verify(
        &self,
        id: &str,
        secret: &str,
        key: &str,
        bytes: &Bytes,
    ) -> Result<(ApiKeyRecord, Role, Option<Bytes>)> {
        let unauthorized = || Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey);
        let secret_matches = |record: &ApiKeyRecord| {
            crypto::hex_decode(&record.mac).is_some_and(|tag| {
                self.keys
                    .verify_mac(MacPurpose::ApiKeySecret, secret.as_bytes(), &tag)
            })
        };
        let actor = format!("key:{id}");
        let record = match self.keys.open_record::<ApiKeyRecord>(key, bytes) {
            RecordCheck::Signed(record) if record.id == id => record,
            RecordCheck::Unsigned(record) if secret_matches(&record) => {
                let check = RecordCheck::Unsigned(());
                let e = self.integrity().refuse(&actor, key, &check).await;
                return Err(if e.code() == Code::RecordUnsigned {
                    e
                } else {
                    unauthorized()
                });
            }
            RecordCheck::Unsigned(_) => return Err(unauthorized()),
            // The secret was not checked: the caller may be anyone who knows the id.
            _ => {
                self.integrity().refused_unauthenticated(&actor, key).await;
                return Err(unauthorized());
            }
        };
        if !secret_matches(&record) {
            return Err(unauthorized());
        }
        // The role record is read once, and the bytes checked are the bytes the cache keeps.
        // (Read twice, a stale KV copy could pass the check while the cache kept "no role
        // record", which it never re-checks: a key of a deleted role then worked for good —
        // found by the faults property, decision 0107.)
        let role_stored = if builtin_role(&record.role).is_none() {
            roles::read_bytes(&*self.ports.kv, &record.role).await?
        } else {
            None
        };
        let role = self
            .role_from(&record, &actor, role_stored.as_ref())
            .await?;
        Ok((record, role, role_stored))
    }

    /// The role `record` is bound to: a built-in role by name, a custom role by name AND id (a
    /// role deleted and created again under its name is another role, which the key never had).
    async fn role_of(&self, record: &ApiKeyRecord, actor: &str) -> Result<Role> {
        let stored = if builtin_role(&record.role).is_none() {
            roles::read_bytes(&*self.ports.kv, &record.role).await?
        } else {
            None
        };
        self.role_from(record, actor, stored.as_ref()).await
    }

    /// [`Self::role_of`] with the custom role's record as read (`stored`).
    async fn role_from(
        &self,
        record: &ApiKeyRecord,
        actor: &str,
        stored: Option<&Bytes>,
    ) -> Result<Role> {
        let gone =
            || Error::forbidden("this key's role no longer exists").with_code(Code::UnknownRole);
        if let Some(role) = builtin_role(&record.role) {
            return if record.role_id.is_none() {
                Ok(role)
            } else {
                Err(gone())
            };
        }
        let Some(bound) = record.role_id.as_deref() else {
            return Err(gone());
        };
        match roles::open(self.keys, &record.role, stored) {
            None => Err(gone()),
            Some(RecordCheck::Signed(role)) if role.id.as_deref() == Some(bound) => Ok(role),
            Some(RecordCheck::Signed(_)) => Err(Error::forbidden(
                "this key's role was deleted; a role created since under the same name is \
                 another role, which this key was not given",
            )
            .with_code(Code::UnknownRole)),
            Some(check) => Err(self
                .integrity()
                .refuse(actor, &roles::role_key(&record.role), &check)
                .await),
        }
    }
}
