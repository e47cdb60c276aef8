//! Agent API keys: the only code that touches `key:` records. Created (shown once), listed,
//! revoked (at once, everywhere) and authenticated here.

use serde::{Deserialize, Serialize};

use super::principal::{Permission, Principal};
use super::roles;
use super::token::{is_key_id, parse_api_key, API_KEY_PREFIX};
use crate::audit::AuditLog;
use crate::crypto::{self, Keys};
use crate::error::{Code, Error, Result};
use crate::kv::{list_all, put_json};
use crate::ports::Ports;

/// KV key prefix of API key records.
pub const KEY_PREFIX: &str = "key:";

/// An API key record at `key:<id>`. `mac` is hex HMAC-SHA256 of the secret part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub mac: String,
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

/// The listing view of an API key (also its cleartext KV metadata): everything but the MAC.
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

/// The marker set in the SessionStore when a key is revoked.
pub fn revoked_marker(id: &str) -> String {
    format!("revoked-key:{id}")
}

fn key_of(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// The API keys of one deployment ([`crate::app::App::api_keys`]).
#[derive(Clone, Copy)]
pub struct ApiKeys<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    audit: AuditLog<'a>,
}

impl<'a> ApiKeys<'a> {
    #[inline]
    pub(crate) fn new(ports: &'a Ports, keys: &'a Keys, audit: AuditLog<'a>) -> Self {
        ApiKeys { ports, keys, audit }
    }

    /// Create an API key; the returned `key` is shown once and never stored.
    pub async fn create(&self, who: &Principal, input: NewKey) -> Result<CreatedKey> {
        who.require(Permission::Admin)?;
        if input.name.trim().is_empty() || input.name.chars().count() > 100 {
            return Err(
                Error::bad_request("name must be 1-100 characters").with_code(Code::InvalidName)
            );
        }
        if roles::resolve(&*self.ports.kv, &input.role)
            .await?
            .is_none()
        {
            return Err(Error::bad_request(format!("no role '{}'", input.role))
                .with_code(Code::UnknownRole));
        }
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
            mac: crypto::hex(&self.keys.mac(secret.as_bytes())),
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

    async fn store(&self, record: &ApiKeyRecord) -> Result<()> {
        let meta = serde_json::to_value(record.info()).map_err(|_| Error::internal())?;
        put_json(&*self.ports.kv, &key_of(&record.id), record, Some(meta)).await
    }

    /// Every key, from KV metadata (no secret or MAC is read).
    pub async fn list(&self, who: &Principal) -> Result<Vec<ApiKeyInfo>> {
        who.require(Permission::Admin)?;
        let mut out = Vec::new();
        for k in list_all(&*self.ports.kv, KEY_PREFIX).await? {
            let id = k.name[KEY_PREFIX.len()..].to_string();
            if let Some(mut info) = k
                .metadata
                .and_then(|m| serde_json::from_value::<ApiKeyInfo>(m).ok())
            {
                info.id = id;
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Revoke a key: effective at once (SessionStore marker), then the record is deleted.
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<()> {
        who.require(Permission::Admin)?;
        let key = key_of(id);
        if !is_key_id(id) || self.ports.kv.get(&key).await?.is_none() {
            return Err(Error::not_found(format!("no key '{id}'")).with_code(Code::KeyNotFound));
        }
        // Ten years: longer than any key lives.
        self.ports
            .sessions
            .mark(
                &revoked_marker(id),
                10 * 365 * 86_400_000,
                self.ports.now_ms(),
            )
            .await?;
        self.ports.kv.delete(&key).await?;
        self.audit.change(who, "key.revoke", None, 204).await;
        Ok(())
    }

    /// Authenticate an API key token (`vk_<id>_<secret>`).
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let unauthorized = || Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey);
        let (id, secret) = parse_api_key(token).ok_or_else(unauthorized)?;
        let bytes = self
            .ports
            .kv
            .get(&key_of(id))
            .await?
            .ok_or_else(unauthorized)?;
        let mut record: ApiKeyRecord =
            serde_json::from_slice(&bytes).map_err(|_| unauthorized())?;
        let tag = crypto::hex_decode(&record.mac).ok_or_else(unauthorized)?;
        if !self.keys.verify_mac(secret.as_bytes(), &tag) {
            return Err(unauthorized());
        }
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
        let role = roles::resolve(&*self.ports.kv, &record.role)
            .await?
            .ok_or_else(|| {
                Error::forbidden("this key's role no longer exists").with_code(Code::UnknownRole)
            })?;
        // Record use at most once a minute: a KV write per request would be wasteful
        // (docs/decisions/0006-kv-record-layout.md).
        if record
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) > 60_000)
        {
            record.last_used_at = Some(now);
            let _ = self.store(&record).await;
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
        })
    }
}
