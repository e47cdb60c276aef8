//! Custom roles: the only code that touches `role:` records. Built-in roles live in code
//! ([`builtin_role`]) and cannot be created, replaced or deleted.
//!
//! A record is signed ([`Keys::seal_record`]) and checked on every read
//! (docs/decisions/0046-signed-key-and-role-records.md), and carries a random id, new on every
//! create, which keys bind to (docs/decisions/0048-keys-bind-to-a-role-id.md).

use bytes::Bytes;
use serde::Deserialize;

use super::integrity::{Integrity, Listing};
use super::principal::{builtin_role, Permission, Principal, Role, BUILTIN_ROLES};
use crate::audit::AuditLog;
use crate::change::{Changes, Record};
use crate::credential::{validate_description, validate_name};
use crate::crypto::{self, Keys, RecordCheck};
use crate::error::{Code, Error, Result};
use crate::kv::list_all;
use crate::ports::{KvStore, Ports, PutOptions};

/// KV key prefix of custom roles.
pub const ROLE_PREFIX: &str = "role:";

/// Input of [`Roles::create`] (the body of `POST /v1/roles`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

pub(crate) fn role_key(name: &str) -> String {
    format!("{ROLE_PREFIX}{name}")
}

/// The stored custom role `name`, checked: `None` when there is none (or `name` is not a
/// name a role can have). Built-in roles are not stored: see [`builtin_role`].
pub(crate) async fn read(
    kv: &dyn KvStore,
    keys: &Keys,
    name: &str,
) -> Result<Option<RecordCheck<Role>>> {
    Ok(open(keys, name, read_bytes(kv, name).await?.as_ref()))
}

/// The stored bytes of the custom role `name` (`None`: no such record, or not a role name).
pub(crate) async fn read_bytes(kv: &dyn KvStore, name: &str) -> Result<Option<Bytes>> {
    if validate_name("role", name).is_err() {
        return Ok(None);
    }
    kv.get(&role_key(name)).await
}

/// Open the custom role `name` from `bytes` as [`read_bytes`] returned them: a caller that keeps
/// the bytes (the verified-key cache) checks exactly the bytes it keeps.
pub(crate) fn open(keys: &Keys, name: &str, bytes: Option<&Bytes>) -> Option<RecordCheck<Role>> {
    let key = role_key(name);
    bytes.map(|b| match keys.open_record::<Role>(&key, b) {
        // What the code reads of a signed record must be what it was signed as.
        RecordCheck::Signed(r) if r.name != name || r.builtin || r.id.is_none() => {
            RecordCheck::Tampered
        }
        check => check,
    })
}

/// Write `role` signed at its KV key.
pub(crate) async fn store(kv: &dyn KvStore, keys: &Keys, role: &Role) -> Result<()> {
    let key = role_key(&role.name);
    let bytes = keys.seal_record(&key, role)?;
    kv.put(&key, Bytes::from(bytes), PutOptions::default())
        .await
}

/// A new random role id (8 bytes, hex).
pub(crate) fn new_role_id() -> String {
    crypto::hex(&crypto::random_bytes::<8>())
}

/// The roles of one deployment ([`crate::app::App::roles`]).
#[derive(Clone, Copy)]
pub struct Roles<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    changes: Changes<'a>,
    audit: AuditLog<'a>,
}

impl<'a> Roles<'a> {
    pub(crate) fn new(
        ports: &'a Ports,
        keys: &'a Keys,
        changes: Changes<'a>,
        audit: AuditLog<'a>,
    ) -> Self {
        Roles {
            ports,
            keys,
            changes,
            audit,
        }
    }

    fn integrity(&self) -> Integrity<'a> {
        Integrity::new(self.ports, self.keys, self.audit)
    }

    /// Resolve a role by name: built-in or stored; `None` when there is no such role. A stored
    /// record that fails its integrity check is an error (503 `record_unsigned` or
    /// `record_tampered`), audited.
    pub async fn resolve(&self, who: &Principal, name: &str) -> Result<Option<Role>> {
        if let Some(r) = builtin_role(name) {
            return Ok(Some(r));
        }
        match read(&*self.ports.kv, self.keys, name).await? {
            None => Ok(None),
            Some(RecordCheck::Signed(r)) => Ok(Some(r)),
            Some(check) => Err(self
                .integrity()
                .refuse(&who.actor(), &role_key(name), &check)
                .await),
        }
    }

    /// Create a custom role. 409 for a built-in or taken name.
    pub async fn create(&self, who: &Principal, input: NewRole) -> Result<Role> {
        who.require(Permission::Admin)?;
        validate_name("role name", &input.name)?;
        if builtin_role(&input.name).is_some() {
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
        validate_description(&description)?;
        let key = role_key(&input.name);
        let name = input.name.clone();
        self.changes
            .exclusive(Record::Role, &name, async move {
                if self.ports.kv.get(&key).await?.is_some() {
                    return Err(
                        Error::conflict(format!("role '{}' already exists", input.name))
                            .with_code(Code::RoleExists),
                    );
                }
                self.changes
                    .claim_version(Record::Role, &input.name, None)
                    .await?;
                let mut permissions = input.permissions;
                permissions.sort();
                permissions.dedup();
                let role = Role {
                    id: Some(new_role_id()),
                    name: input.name,
                    permissions,
                    scopes: input.scopes,
                    description,
                    builtin: false,
                };
                store(&*self.ports.kv, self.keys, &role).await?;
                self.audit.change(who, "role.create", None, 201).await;
                Ok(role)
            })
            .await
    }

    /// The built-in roles, then every custom role whose record checks out; the records that do
    /// not are listed apart in `refused`, and audited.
    pub async fn list(&self, who: &Principal) -> Result<Listing<Role>> {
        who.require(Permission::Admin)?;
        let mut out = Listing {
            items: BUILTIN_ROLES
                .iter()
                .filter_map(|n| builtin_role(n))
                .collect(),
            refused: Vec::new(),
        };
        for k in list_all(&*self.ports.kv, ROLE_PREFIX).await? {
            let name = &k.name[ROLE_PREFIX.len()..];
            match read(&*self.ports.kv, self.keys, name).await? {
                None => {} // deleted meanwhile, or a key no role can have
                Some(RecordCheck::Signed(r)) => out.items.push(r),
                Some(check) => out.refused.push(
                    self.integrity()
                        .refused(&who.actor(), &k.name, &check)
                        .await,
                ),
            }
        }
        Ok(out)
    }

    /// Delete a custom role. Built-in roles: 409. Keys holding the role stop working (403).
    pub async fn delete(&self, who: &Principal, name: &str) -> Result<()> {
        who.require(Permission::Admin)?;
        if builtin_role(name).is_some() {
            return Err(Error::conflict(format!(
                "'{name}' is a built-in role and cannot be deleted"
            ))
            .with_code(Code::BuiltinRole));
        }
        let key = role_key(name);
        let missing =
            || Error::not_found(format!("no role '{name}'")).with_code(Code::RoleNotFound);
        validate_name("role", name).map_err(|_| missing())?;
        self.changes
            .exclusive(Record::Role, name, async {
                let Some(stored) = self.ports.kv.get(&key).await? else {
                    return Err(missing());
                };
                self.changes
                    .claim_version(Record::Role, name, Some(&stored))
                    .await?;
                self.ports.kv.delete(&key).await?;
                self.audit.change(who, "role.delete", None, 204).await;
                Ok(())
            })
            .await
    }
}
