//! Authentication and authorization: who is calling ([`Principal`]), how they prove it, and what
//! they may do.
//!
//! - **Tokens** ([`token`]): every credential a caller presents starts with a prefix that says
//!   what it is — [`API_KEY_PREFIX`] `vk_` (an agent's API key), [`BEARER_SESSION_PREFIX`] `vs_`
//!   (an admin session for `Authorization: Bearer`) and [`COOKIE_SESSION_PREFIX`] `vc_` (the same
//!   login's session cookie).
//! - **Admin sessions** ([`session`]): a login makes two twin sessions, each a 256-bit random
//!   token with a MAC tag (checked before any store call), stored only as its SHA-256 in the
//!   [`SessionStore`](crate::ports::SessionStore) with idle and absolute expiry: `vs_…`, returned in the reply, and `vc_…`, set as an
//!   HttpOnly/Secure/SameSite=Strict cookie. Each is accepted only the way it was issued, and
//!   logging out of either ends both (docs/decisions/0042-twin-admin-sessions.md). Every
//!   cookie-authenticated request, reads included, needs the login's CSRF token ([`csrf`]):
//!   browsers send a host's cookies to all its ports, so the cookie alone must open nothing
//!   (docs/decisions/0010-csrf-on-cookie-requests.md). Failed logins are counted per client
//!   ([`client_ip`]).
//! - **API keys** ([`keys`]): `vk_<id>_<secret>`, shown once. The record at `key:<id>` holds
//!   HMAC-SHA256(secret) under the keyring MAC key, compared in constant time.
//!   Every `key:` and `role:` record is signed and checked on every read, and keys bind to
//!   their custom role by its id ([`integrity`]; docs/decisions/0046-signed-key-and-role-records.md,
//!   0048-keys-bind-to-a-role-id.md). Revocation deletes
//!   the record AND sets a marker in the SessionStore, because a KV delete can take a while to
//!   reach other edge locations while the SessionStore is strongly consistent
//!   (docs/decisions/0011-api-keys.md; the platform's figure: docs/deploy-cloudflare.md).
//! - **Agent tokens** ([`tokens`]): `vt_<id>_<secret>`, shown once, a short-lived subset of one
//!   API key (credential globs, methods, path prefixes, a number of uses, an expiry), checked
//!   with its parent key live on every use (docs/decisions/0083-agent-tokens.md).
//! - **Roles** ([`principal`], [`roles`]): permissions `read`, `execute`, `write`, `admin`, plus
//!   alias globs (`github-*`) that bound which credentials the role reaches. Built-in roles
//!   `admin`, `executor`, `read-only` are defined in code (not stored) and cannot be deleted or
//!   replaced.
//! - **Cloudflare Access** ([`access`]): when configured, a valid Access token is required on
//!   top of all this, before it (docs/decisions/0081-cloudflare-access-layer.md).
//! - [`authenticate`]: one request in, one [`Principal`] out, whichever way it authenticated.

pub mod access;
pub mod authenticate;
pub mod client_ip;
pub mod csrf;
pub mod grant;
pub mod integrity;
pub mod keys;
pub mod migrate;
pub mod principal;
pub mod roles;
pub mod session;
pub mod token;
pub mod tokens;

pub use access::{AccessConfig, AccessIdentity, AccessMode};
pub use authenticate::Authenticator;
pub use client_ip::ClientIp;
pub use integrity::{Listing, RefusedRecord};
pub use keys::{ApiKeyInfo, ApiKeyRecord, ApiKeys, CreatedKey, NewKey};
pub use migrate::{MigratedRecord, Migration};
pub use principal::{builtin_role, Authed, Permission, Principal, Role, BUILTIN_ROLES};
pub use roles::{NewRole, Roles};
pub use session::{AdminSessions, Login, SessionSettings};
pub use token::{AGENT_TOKEN_PREFIX, API_KEY_PREFIX, BEARER_SESSION_PREFIX, COOKIE_SESSION_PREFIX};
pub use tokens::{AgentTokens, CreatedToken, NewToken, TokenGrant, TokenInfo};
