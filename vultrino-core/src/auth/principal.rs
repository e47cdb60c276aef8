//! Who is calling and what they may do: [`Permission`]s, [`Role`]s (built-in and custom) and
//! the [`Principal`] every operation checks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::grant::TokenGrant;

use crate::error::{Code, Error, Result};
use crate::policy::glob_match;
use crate::ports::SessionRecord;

/// A permission a role can grant. Each one gates real routes:
/// `read` → GET credentials; `execute` → execute and MCP `http_request`; `write` → create,
/// update and delete credentials; `admin` → keys, roles, audit and sync export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Execute,
    Write,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Execute => "execute",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// A role: permissions plus the alias globs it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// A custom role's id: random, new on every create, so a role deleted and created again
    /// under its name is another role. Keys bind to it ([`keys`](super::keys)). Built-in roles
    /// have none (they are defined in code and never change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub builtin: bool,
}

impl Role {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Whether the role's scopes reach credential `alias`.
    pub fn reaches(&self, alias: &str) -> bool {
        self.scopes.iter().any(|s| glob_match(s, alias))
    }
}

/// The built-in roles.
pub fn builtin_role(name: &str) -> Option<Role> {
    let (perms, description) = match name {
        "admin" => (
            vec![
                Permission::Read,
                Permission::Execute,
                Permission::Write,
                Permission::Admin,
            ],
            "Everything, including keys, roles, audit and sync export",
        ),
        "executor" => (
            vec![Permission::Read, Permission::Execute],
            "List credentials and make requests with them",
        ),
        "read-only" => (vec![Permission::Read], "List and view credential metadata"),
        _ => return None,
    };
    Some(Role {
        id: None,
        name: name.to_string(),
        permissions: perms,
        scopes: vec!["*".to_string()],
        description: description.to_string(),
        builtin: true,
    })
}

pub const BUILTIN_ROLES: [&str; 3] = ["admin", "executor", "read-only"];

/// What the authentication of a request found.
#[derive(Debug)]
pub struct Authed {
    pub principal: Principal,
    /// The admin session, when the caller is one.
    pub session: Option<SessionRecord>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A logged-in admin.
    Admin {
        subject: String,
        /// SessionStore id (hash of the token).
        session_id: String,
        /// Authenticated by cookie (so state changes need CSRF + same-origin).
        via_cookie: bool,
        /// The Cloudflare Access identity the request carried, when Access is on for its route.
        access: Option<String>,
    },
    /// An agent with an API key, or with an agent token of that key (`token`): then the key's
    /// role is narrowed by the token's grant (only `read` and `execute`, only the token's
    /// credentials; its methods, path prefixes and uses are checked where a request is made).
    ApiKey {
        id: String,
        name: String,
        role: Role,
        token: Option<Arc<TokenGrant>>,
        /// The Cloudflare Access identity the request carried, when Access is on for its route.
        access: Option<String>,
    },
}

impl Principal {
    /// The actor string in audit events.
    /// With a Cloudflare Access identity: `admin:admin access:alice@example.com`.
    pub fn actor(&self) -> String {
        let (base, access) = match self {
            Principal::Admin {
                subject, access, ..
            } => (format!("admin:{subject}"), access),
            Principal::ApiKey {
                id,
                token: Some(t),
                access,
                ..
            } => (format!("key:{id} token:{}", t.id), access),
            Principal::ApiKey { id, access, .. } => (["key:", id].concat(), access),
        };
        match access {
            Some(identity) => format!("{base} access:{identity}"),
            None => base,
        }
    }

    /// The principal, with the Access identity of its request (if any) recorded.
    pub fn with_access(mut self, identity: Option<&super::AccessIdentity>) -> Self {
        if let Some(identity) = identity {
            match &mut self {
                Principal::Admin { access, .. } | Principal::ApiKey { access, .. } => {
                    *access = Some(identity.0.clone())
                }
            }
        }
        self
    }

    /// Require a permission.
    pub fn require(&self, p: Permission) -> Result<()> {
        let ok = match self {
            Principal::Admin { .. } => true,
            Principal::ApiKey { role, token, .. } => {
                role.has(p)
                    && (token.is_none() || matches!(p, Permission::Read | Permission::Execute))
            }
        };
        if ok {
            Ok(())
        } else if self.token().is_some() && !matches!(p, Permission::Read | Permission::Execute) {
            Err(Error::forbidden(format!(
                "an agent token never has the '{}' permission (only read and execute, as far \
                 as its API key has them)",
                p.as_str()
            ))
            .with_code(Code::PermissionDenied))
        } else {
            Err(Error::forbidden(format!(
                "this key's role lacks the '{}' permission",
                p.as_str()
            ))
            .with_code(Code::PermissionDenied))
        }
    }

    /// Require that the principal's scopes reach credential `alias`.
    pub fn require_scope(&self, alias: &str) -> Result<()> {
        if self.reaches(alias) {
            Ok(())
        } else if self.token().is_some() {
            Err(Error::forbidden(format!(
                "credential '{alias}' is outside this token's credentials or its key's scopes"
            ))
            .with_code(Code::ScopeDenied))
        } else {
            Err(
                Error::forbidden(format!("credential '{alias}' is outside this key's scopes"))
                    .with_code(Code::ScopeDenied),
            )
        }
    }

    pub fn reaches(&self, alias: &str) -> bool {
        match self {
            Principal::Admin { .. } => true,
            Principal::ApiKey { role, token, .. } => {
                role.reaches(alias) && token.as_ref().is_none_or(|t| t.reaches(alias))
            }
        }
    }

    /// The agent token the caller authenticated with, if any.
    pub fn token(&self) -> Option<&TokenGrant> {
        match self {
            Principal::ApiKey { token, .. } => token.as_deref(),
            Principal::Admin { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_bound_what_a_key_reaches() {
        let role = Role {
            id: Some("0123456789abcdef".into()),
            name: "gh".into(),
            permissions: vec![Permission::Execute],
            scopes: vec!["github-*".into()],
            description: String::new(),
            builtin: false,
        };
        let p = Principal::ApiKey {
            id: "x".into(),
            name: "n".into(),
            role,
            token: None,
            access: None,
        };
        assert_eq!(p.actor(), "key:x");
        let p = p.with_access(Some(&crate::auth::AccessIdentity("svc.access".into())));
        assert_eq!(p.actor(), "key:x access:svc.access");
        assert!(p.require_scope("github-prod").is_ok());
        assert_eq!(
            p.require_scope("stripe").err().map(|e| e.code()),
            Some(Code::ScopeDenied)
        );
        assert!(p.require(Permission::Execute).is_ok());
        assert_eq!(
            p.require(Permission::Write).err().map(|e| e.code()),
            Some(Code::PermissionDenied)
        );
    }
}
