//! Custom roles: the only code that touches `role:` records. Built-in roles live in code
//! ([`builtin_role`]) and cannot be created, replaced or deleted.

use serde::Deserialize;

use super::principal::{builtin_role, Permission, Principal, Role, BUILTIN_ROLES};
use crate::audit::AuditLog;
use crate::change::{Changes, Record};
use crate::credential::{validate_description, validate_name};
use crate::error::{Code, Error, Result};
use crate::kv::{list_all, put_json};
use crate::ports::{KvStore, Ports};

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

fn role_key(name: &str) -> String {
    format!("{ROLE_PREFIX}{name}")
}

/// Resolve a role by name: built-in or stored. `None` when there is no such role (or a stored
/// one is unreadable).
pub(crate) async fn resolve(kv: &dyn KvStore, name: &str) -> Result<Option<Role>> {
    if let Some(r) = builtin_role(name) {
        return Ok(Some(r));
    }
    if validate_name("role", name).is_err() {
        return Ok(None);
    }
    match kv.get(&role_key(name)).await? {
        Some(b) => Ok(serde_json::from_slice(&b).ok()),
        None => Ok(None),
    }
}

/// The roles of one deployment ([`crate::app::App::roles`]).
#[derive(Clone, Copy)]
pub struct Roles<'a> {
    ports: &'a Ports,
    changes: Changes<'a>,
    audit: AuditLog<'a>,
}

impl<'a> Roles<'a> {
    pub(crate) fn new(ports: &'a Ports, changes: Changes<'a>, audit: AuditLog<'a>) -> Self {
        Roles {
            ports,
            changes,
            audit,
        }
    }

    /// Resolve a role by name: built-in or stored; `None` when there is no such role (or a
    /// stored one is unreadable).
    pub async fn resolve(&self, name: &str) -> Result<Option<Role>> {
        resolve(&*self.ports.kv, name).await
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
                    name: input.name,
                    permissions,
                    scopes: input.scopes,
                    description,
                    builtin: false,
                };
                put_json(&*self.ports.kv, &key, &role, None).await?;
                self.audit.change(who, "role.create", None, 201).await;
                Ok(role)
            })
            .await
    }

    /// The built-in roles, then every custom role.
    pub async fn list(&self, who: &Principal) -> Result<Vec<Role>> {
        who.require(Permission::Admin)?;
        let mut out: Vec<Role> = BUILTIN_ROLES
            .iter()
            .filter_map(|n| builtin_role(n))
            .collect();
        for k in list_all(&*self.ports.kv, ROLE_PREFIX).await? {
            if let Some(b) = self.ports.kv.get(&k.name).await? {
                if let Ok(r) = serde_json::from_slice::<Role>(&b) {
                    out.push(r);
                }
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
