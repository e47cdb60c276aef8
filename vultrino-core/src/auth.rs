//! Authentication and authorization: admin sessions, API keys, roles and permissions.
//!
//! - Admin sessions: a login makes two twin sessions, each a 256-bit random token stored only
//!   as its SHA-256 in the [`SessionStore`](crate::ports::SessionStore) with idle and absolute
//!   expiry: `vs_…`, returned in the reply, for `Authorization: Bearer`, and `vc_…`, set as an
//!   HttpOnly/Secure/SameSite=Strict cookie. Each is accepted only the way it was issued, and
//!   logging out of either ends both. Every cookie-authenticated request, reads included, needs
//!   the login's CSRF token (`X-CSRF-Token`) and a same-origin `Origin` when one is sent: browsers
//!   send a host's cookies to all its ports, so the cookie alone must open nothing.
//! - API keys: `vk_<id>_<secret>`, shown once. The record at `key:<id>` holds
//!   HMAC-SHA256(secret) under the keyring MAC key, compared in constant time. Revocation deletes
//!   the record AND sets a marker in the SessionStore, because KV deletes can take ~60 s to reach
//!   other edge locations while the SessionStore is strongly consistent.
//! - Roles: permissions `read`, `execute`, `write`, `admin`, plus alias globs (`github-*`) that
//!   bound which credentials the role reaches. Built-in roles `admin`, `executor`, `read-only` are
//!   defined in code (not stored) and cannot be deleted or replaced.

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::policy::glob_match;

/// KV key prefix of API key records.
pub const KEY_PREFIX: &str = "key:";
/// KV key prefix of custom roles.
pub const ROLE_PREFIX: &str = "role:";
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vultrino_session";
/// Header carrying the CSRF token for cookie-authenticated state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
        name: name.to_string(),
        permissions: perms,
        scopes: vec!["*".to_string()],
        description: description.to_string(),
        builtin: true,
    })
}

pub const BUILTIN_ROLES: [&str; 3] = ["admin", "executor", "read-only"];

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

/// Whether `id` has the form of an API key id: 16 lowercase hex characters.
pub fn is_key_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Split `vk_<id>_<secret>` into id and secret (see [`is_key_id`]).
pub fn parse_api_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("vk_")?;
    let (id, secret) = rest.split_once('_')?;
    if !is_key_id(id) || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((id, secret))
}

/// The marker set in the SessionStore when a key is revoked.
pub fn revoked_marker(id: &str) -> String {
    format!("revoked-key:{id}")
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
    },
    /// An agent with an API key.
    ApiKey {
        id: String,
        name: String,
        role: Role,
    },
}

impl Principal {
    /// The actor string in audit events.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin { subject, .. } => format!("admin:{subject}"),
            Principal::ApiKey { id, .. } => format!("key:{id}"),
        }
    }

    /// Require a permission.
    pub fn require(&self, p: Permission) -> Result<()> {
        let ok = match self {
            Principal::Admin { .. } => true,
            Principal::ApiKey { role, .. } => role.has(p),
        };
        if ok {
            Ok(())
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
            Principal::ApiKey { role, .. } => role.reaches(alias),
        }
    }
}

/// Build the `Set-Cookie` value for a session token.
pub fn session_cookie(token: &str, max_age_secs: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_secs}"
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Prefix of bearer session tokens (`Authorization: Bearer vs_…`).
pub const BEARER_SESSION_PREFIX: &str = "vs_";
/// Prefix of cookie session tokens (the `vultrino_session` cookie): never accepted as Bearer.
pub const COOKIE_SESSION_PREFIX: &str = "vc_";

/// Every non-empty `vultrino_session` value in a `Cookie` header, in order.
pub fn cookie_tokens(cookie_header: &str) -> impl Iterator<Item = &str> {
    cookie_header.split(';').filter_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_api_key("vk_0123456789abcdef_secretpart"),
            Some(("0123456789abcdef", "secretpart"))
        );
        for bad in [
            "vk_0123456789abcdef_",
            "vk_0123456789ABCDEF_x",
            "vk_short_x",
            "vs_0123456789abcdef_x",
            "0123456789abcdef_x",
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_bound_what_a_key_reaches() {
        let role = Role {
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
        };
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

    #[test]
    fn session_cookie_is_locked_down() {
        let c = session_cookie("vc_abc", 60);
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        let tokens = |h| cookie_tokens(h).collect::<Vec<_>>();
        assert_eq!(tokens("a=b; vultrino_session=vc_abc; c=d"), ["vc_abc"]);
        assert_eq!(
            tokens("vultrino_session=vc_x; vultrino_session=; vultrino_session=vc_y"),
            ["vc_x", "vc_y"],
            "every non-empty one, in order"
        );
        assert!(tokens("vultrino_session=").is_empty());
        assert!(tokens("vultrino_sessionx=vc_a").is_empty());
    }
}
