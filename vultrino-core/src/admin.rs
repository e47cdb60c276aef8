//! Administration of API keys, roles and the audit log, on [`App`].

use crate::app::{list_all, put_json, App, CreatedKey, NewKey, NewRole};
use crate::audit::{AuditEvent, AUDIT_PREFIX};
use crate::auth::{self, ApiKeyInfo, ApiKeyRecord, Permission, Principal, Role};
use crate::credential;
use crate::crypto;
use crate::error::{Code, Error, Result};
use crate::ports::ListOptions;

impl App {
    // ----- API keys ----------------------------------------------------------------------

    /// Resolve a role by name: built-in or stored.
    pub(crate) async fn role(&self, name: &str) -> Result<Option<Role>> {
        if let Some(r) = auth::builtin_role(name) {
            return Ok(Some(r));
        }
        if credential::validate_name("role", name).is_err() {
            return Ok(None);
        }
        match self
            .ports
            .kv
            .get(&format!("{}{name}", auth::ROLE_PREFIX))
            .await?
        {
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    /// Create an API key; the returned `key` is shown once and never stored.
    pub async fn create_key(&self, who: &Principal, input: NewKey) -> Result<CreatedKey> {
        who.require(Permission::Admin)?;
        if input.name.trim().is_empty() || input.name.chars().count() > 100 {
            return Err(
                Error::bad_request("name must be 1-100 characters").with_code(Code::InvalidName)
            );
        }
        if self.role(&input.role).await?.is_none() {
            return Err(Error::bad_request(format!("no role '{}'", input.role))
                .with_code(Code::UnknownRole));
        }
        let now = self.now();
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
        self.store_key(&record).await?;
        self.audit_change(who, "key.create", None, 201).await;
        Ok(CreatedKey {
            key: format!("vk_{id}_{}", secret.as_str()),
            id,
            name: record.name,
            role: record.role,
            expires_at,
        })
    }

    async fn store_key(&self, record: &ApiKeyRecord) -> Result<()> {
        let meta = serde_json::to_value(record.info()).map_err(|_| Error::internal())?;
        put_json(
            &*self.ports.kv,
            &format!("{}{}", auth::KEY_PREFIX, record.id),
            record,
            Some(meta),
        )
        .await
    }

    pub async fn list_keys(&self, who: &Principal) -> Result<Vec<ApiKeyInfo>> {
        who.require(Permission::Admin)?;
        let mut out = Vec::new();
        for k in list_all(&*self.ports.kv, auth::KEY_PREFIX).await? {
            let id = k.name[auth::KEY_PREFIX.len()..].to_string();
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
    pub async fn revoke_key(&self, who: &Principal, id: &str) -> Result<()> {
        who.require(Permission::Admin)?;
        let key = format!("{}{id}", auth::KEY_PREFIX);
        if !auth::is_key_id(id) || self.ports.kv.get(&key).await?.is_none() {
            return Err(Error::not_found(format!("no key '{id}'")).with_code(Code::KeyNotFound));
        }
        // Ten years: longer than any key lives.
        self.ports
            .sessions
            .mark(&auth::revoked_marker(id), 10 * 365 * 86_400_000, self.now())
            .await?;
        self.ports.kv.delete(&key).await?;
        self.audit_change(who, "key.revoke", None, 204).await;
        Ok(())
    }

    /// Authenticate an API key token (`vk_<id>_<secret>`).
    pub async fn authenticate_key(&self, token: &str) -> Result<Principal> {
        let unauthorized = || Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey);
        let (id, secret) = auth::parse_api_key(token).ok_or_else(unauthorized)?;
        let key = format!("{}{id}", auth::KEY_PREFIX);
        let bytes = self.ports.kv.get(&key).await?.ok_or_else(unauthorized)?;
        let mut record: ApiKeyRecord =
            serde_json::from_slice(&bytes).map_err(|_| unauthorized())?;
        let tag = crypto::hex_decode(&record.mac).ok_or_else(unauthorized)?;
        if !self.keys.verify_mac(secret.as_bytes(), &tag) {
            return Err(unauthorized());
        }
        let now = self.now();
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(Error::unauthorized("API key has expired").with_code(Code::ApiKeyExpired));
        }
        if self
            .ports
            .sessions
            .is_marked(&auth::revoked_marker(id), now)
            .await?
        {
            return Err(unauthorized());
        }
        let role = self.role(&record.role).await?.ok_or_else(|| {
            Error::forbidden("this key's role no longer exists").with_code(Code::UnknownRole)
        })?;
        // Record use at most once a minute: a KV write per request would be wasteful.
        if record
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) > 60_000)
        {
            record.last_used_at = Some(now);
            let _ = self.store_key(&record).await;
            // A revocation between our read and this write would be undone by the write:
            // look again, and finish the revocation if it happened.
            let marker = auth::revoked_marker(&record.id);
            if self.ports.sessions.is_marked(&marker, now).await? {
                self.ports
                    .kv
                    .delete(&format!("{}{}", auth::KEY_PREFIX, record.id))
                    .await?;
                return Err(unauthorized());
            }
        }
        Ok(Principal::ApiKey {
            id: record.id,
            name: record.name,
            role,
        })
    }

    // ----- roles -------------------------------------------------------------------------

    pub async fn create_role(&self, who: &Principal, input: NewRole) -> Result<Role> {
        who.require(Permission::Admin)?;
        credential::validate_name("role name", &input.name)?;
        if auth::builtin_role(&input.name).is_some() {
            return Err(
                Error::conflict(format!("'{}' is a built-in role", input.name))
                    .with_code(Code::BuiltinRole),
            );
        }
        // `admin` reaches keys, roles, audit and export, which no alias glob bounds: a role with
        // it must be unscoped, or a "scoped admin" could mint itself an unscoped admin key.
        if input.permissions.contains(&Permission::Admin) && input.scopes != ["*"] {
            return Err(Error::bad_request(
                "a role with the admin permission must have scopes [\"*\"]",
            )
            .with_code(Code::InvalidRole));
        }
        if input.permissions.is_empty() {
            return Err(
                Error::bad_request("permissions must not be empty").with_code(Code::InvalidRole)
            );
        }
        if input.scopes.is_empty()
            || input.scopes.iter().any(|s| {
                s.is_empty()
                    || s.len() > 64
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
            })
        {
            return Err(Error::bad_request(
                "scopes must be a non-empty list of alias globs (letters, digits, '.', '_', '-', '*')",
            )
            .with_code(Code::InvalidRole));
        }
        let description = input.description.unwrap_or_default();
        credential::validate_description(&description)?;
        let key = format!("{}{}", auth::ROLE_PREFIX, input.name);
        let name = input.name.clone();
        self.exclusive("role", &name, async move {
            if self.ports.kv.get(&key).await?.is_some() {
                return Err(
                    Error::conflict(format!("role '{}' already exists", input.name))
                        .with_code(Code::RoleExists),
                );
            }
            self.claim_version("role", &input.name, None).await?;
            let mut permissions = input.permissions;
            permissions.sort();
            permissions.dedup();
            let role = Role {
                name: input.name,
                permissions,
                scopes: input.scopes,
                description,
                builtin: false,
            };
            put_json(&*self.ports.kv, &key, &role, None).await?;
            self.audit_change(who, "role.create", None, 201).await;
            Ok(role)
        })
        .await
    }

    pub async fn list_roles(&self, who: &Principal) -> Result<Vec<Role>> {
        who.require(Permission::Admin)?;
        let mut out: Vec<Role> = auth::BUILTIN_ROLES
            .iter()
            .filter_map(|n| auth::builtin_role(n))
            .collect();
        for k in list_all(&*self.ports.kv, auth::ROLE_PREFIX).await? {
            if let Some(b) = self.ports.kv.get(&k.name).await? {
                if let Ok(r) = serde_json::from_slice::<Role>(&b) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Delete a custom role. Built-in roles: 409. Keys holding the role stop working (403).
    pub async fn delete_role(&self, who: &Principal, name: &str) -> Result<()> {
        who.require(Permission::Admin)?;
        if auth::builtin_role(name).is_some() {
            return Err(Error::conflict(format!(
                "'{name}' is a built-in role and cannot be deleted"
            ))
            .with_code(Code::BuiltinRole));
        }
        let key = format!("{}{name}", auth::ROLE_PREFIX);
        let missing =
            || Error::not_found(format!("no role '{name}'")).with_code(Code::RoleNotFound);
        credential::validate_name("role", name).map_err(|_| missing())?;
        self.exclusive("role", name, async {
            let Some(stored) = self.ports.kv.get(&key).await? else {
                return Err(missing());
            };
            self.claim_version("role", name, Some(&stored)).await?;
            self.ports.kv.delete(&key).await?;
            self.audit_change(who, "role.delete", None, 204).await;
            Ok(())
        })
        .await
    }

    // ----- audit and sync ----------------------------------------------------------------

    /// Audit events, newest first.
    pub async fn list_audit(
        &self,
        who: &Principal,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        who.require(Permission::Admin)?;
        let limit = Some(limit.unwrap_or(100).clamp(1, 1000));
        let page = self
            .ports
            .kv
            .list(ListOptions {
                prefix: Some(AUDIT_PREFIX.into()),
                cursor,
                limit,
            })
            .await?;
        let mut out = Vec::with_capacity(page.keys.len());
        for k in page.keys {
            if let Some(b) = self.ports.kv.get(&k.name).await? {
                if let Ok(e) = serde_json::from_slice::<AuditEvent>(&b) {
                    out.push(e);
                }
            }
        }
        Ok((out, page.cursor))
    }
}
