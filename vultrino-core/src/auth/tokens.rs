//! Agent tokens (`vt_<id>_<secret>`): a short-lived subset of one API key, for one task
//! (docs/decisions/0083-agent-tokens.md, 0084-agent-token-uses.md).
//!
//! - **Minted** ([`AgentTokens::mint`], `POST /v1/tokens`) by an API key (a token of itself) or
//!   an admin (who names the parent key, `parent_key`). A token reaches at most what its parent
//!   does: its credential globs must each be covered by one of the parent role's scopes, it never
//!   has more than `read` and `execute` (and only those its parent has), and it never outlives
//!   the parent. Shown once; the record at `token:<id>` holds HMAC-SHA256 of the secret under a
//!   key of its own ([`MacPurpose::AgentTokenSecret`]), signed like `key:` records.
//! - **Used** wherever an API key is accepted: [`ApiKeys::authenticate`] hands a `vt_` token
//!   here. The parent key is loaded and checked live on every request (a revoked or expired
//!   parent kills its tokens at once), and the caller is the parent key narrowed by the token's
//!   [`TokenGrant`]. The grant's methods and path prefixes are checked where a request is made
//!   ([`TokenGrant::check`]), and one use is consumed right before the upstream call
//!   ([`consume_use`]): an exact SessionStore counter, so N concurrent requests with `uses: k`
//!   make exactly `min(N, k)` upstream calls; a counter that cannot be reached refuses (503).
//! - **Revoked** ([`AgentTokens::revoke`]) at once: a SessionStore marker, then the record is
//!   deleted, as for keys.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use super::grant::TokenGrant;
use super::integrity::Integrity;
use super::keys::ApiKeys;
use super::principal::{Permission, Principal, Role};
use super::token::{is_key_id, parse_agent_token, AGENT_TOKEN_PREFIX};
use crate::audit::AuditEvent;
use crate::crypto::{self, MacPurpose, RecordCheck};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::kv::list_all;
use crate::policy::glob_match;
use crate::ports::{Ports, PutOptions};

/// KV key prefix of agent token records.
pub const TOKEN_PREFIX: &str = "token:";
/// Uses of a token minted without `uses`.
pub const DEFAULT_USES: u32 = 100;
/// Most uses a token may have.
pub const MAX_USES: u32 = 1_000_000;
/// Lifetime of a token minted without `expires_in`, in seconds (clamped to the parent's expiry).
pub const DEFAULT_EXPIRES_IN_SECS: u64 = 3600;
/// Longest lifetime a token may ask for, in seconds (30 days).
pub const MAX_EXPIRES_IN_SECS: u64 = 30 * 86_400;
/// Most credential globs in one token.
pub const MAX_CREDENTIALS: usize = 16;
/// Most live tokens one key may have at once (429 `too_many_tokens` past it): a key holder
/// cannot mint without bound (a KV and an audit write each), nor grow the listing past what one
/// request can read (review of 2026-12-06, finding 3).
pub const MAX_LIVE_TOKENS_PER_KEY: usize = 50;

/// The input of [`AgentTokens::mint`] (the body of `POST /v1/tokens`). Unknown fields are
/// refused (400 `schema_mismatch`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The parent API key's id: required of an admin; a key may only name itself.
    #[serde(default)]
    pub parent_key: Option<String>,
    /// A label for listings (0-100 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Credential aliases or globs (`github-*`), each within the parent's scopes.
    pub credentials: Vec<String>,
    /// The methods allowed (all if absent).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// The upstream path prefixes allowed (all if absent), as in a credential policy.
    #[serde(default)]
    pub path_prefixes: Option<Vec<String>>,
    /// How many requests the token may make (default [`DEFAULT_USES`]).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Lifetime in seconds (default [`DEFAULT_EXPIRES_IN_SECS`]).
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Every request with the token waits for a person's approval (default `false`).
    #[serde(default)]
    pub require_approval: bool,
}

/// A token record at `token:<id>`, stored signed. `mac` is hex HMAC-SHA256 of the secret part
/// ([`MacPurpose::AgentTokenSecret`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub parent_key: String,
    pub mac: String,
    pub credentials: Vec<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub path_prefixes: Option<Vec<String>>,
    pub uses: u32,
    pub created_at: u64,
    pub expires_at: u64,
    /// The actor who minted it (`key:<id>` or `admin:<user>`).
    pub created_by: String,
    /// Not written when off, so records minted before approvals keep their signature.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
}

/// The listing view of a token: never its secret nor its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub parent_key: String,
    pub credentials: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub path_prefixes: Option<Vec<String>>,
    pub uses: u32,
    pub uses_left: u32,
    pub created_at: u64,
    pub expires_at: u64,
    pub created_by: String,
    pub require_approval: bool,
}

/// A freshly minted token: the only time `token` is ever shown.
#[derive(Serialize)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    pub name: String,
    pub parent_key: String,
    pub credentials: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub path_prefixes: Option<Vec<String>>,
    pub uses: u32,
    pub expires_at: u64,
    pub require_approval: bool,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("parent_key", &self.parent_key)
            .finish_non_exhaustive()
    }
}

/// Whether every alias `requested` matches is matched by `scope` (both `*` globs). Sound, not
/// complete: `scope` must match `requested` read as text, its `*`s as literal characters that
/// only a `*` of `scope` can stand for — then any alias `requested` matches, `scope` matches
/// too. A pair it cannot prove (rare: `a*` within `*a*b*|…` shapes) is refused, never allowed.
pub fn glob_covers(scope: &str, requested: &str) -> bool {
    glob_match(scope, requested)
}

/// The SessionStore marker set when a token is revoked.
fn revoked_marker(id: &str) -> String {
    ["revoked-token:", id].concat()
}

/// The SessionStore counter of a token's uses.
fn uses_counter(id: &str) -> String {
    ["token-uses:", id].concat()
}

fn token_key(id: &str) -> String {
    [TOKEN_PREFIX, id].concat()
}

fn invalid_token() -> Error {
    Error::unauthorized("invalid agent token").with_code(Code::InvalidApiKey)
}

fn not_found(id: &str) -> Error {
    let id: String = id.chars().take(32).collect();
    Error::not_found(format!("no token '{id}'")).with_code(Code::TokenNotFound)
}

/// Consume one use of the caller's token, if it has one, right before the upstream call: an
/// exact counter in the SessionStore (one window that lasts past the token's expiry), so
/// concurrent requests never spend more than `uses`. 403 `token_exhausted` when none is left; a
/// counter that cannot be reached refuses the request (503, nothing is sent).
///
/// The caller is looked at again first ([`still_live`]): a request may wait a long time between
/// its authentication and its call (the proxy reads a body whole under a method list or an
/// approval, up to the stream deadlines), and a revocation is immediate for it too, for a plain
/// key as for a token (401 `invalid_api_key`, no use spent; review of 2026-12-06 of tokens,
/// finding 2; decision 0101).
///
/// `waited` says whether such a wait may have happened: a body read whole after the
/// authentication, an approval, an OAuth2 token endpoint. When none did (`false`), the markers
/// the authentication read moments ago — with only the store's own reads and writes in between
/// — are not read again: a revocation landing in those milliseconds is the same race as one
/// landing between this check and the upstream call, which no check closes. That saves a
/// SessionStore request per call (a Durable Object request on Workers; decision 0117). A
/// token's uses are counted either way, and its expiry is looked at again.
pub(crate) async fn consume_use(ports: &Ports, who: &Principal, waited: bool) -> Result<()> {
    spend(ports, who, true, waited).await
}

/// What [`consume_use`] checks, without spending a use: the caller's key (and token) is not
/// revoked, the token has not expired and has a use left (403 `token_exhausted`). Run before
/// anything that a refused request would waste: an approval's consumption and an OAuth2 token
/// fetch (decision 0101). A use left now may still be spent by a concurrent request before this
/// one's [`consume_use`], which stays the exact check.
pub(crate) async fn ready(ports: &Ports, who: &Principal) -> Result<()> {
    spend(ports, who, false, true).await
}

async fn spend(ports: &Ports, who: &Principal, consume: bool, recheck: bool) -> Result<()> {
    let Principal::ApiKey { id: key, .. } = who else {
        return Ok(());
    };
    let now = ports.now_ms();
    if recheck {
        still_live(ports, key, who.token(), now).await?;
    }
    let Some(grant) = who.token() else {
        return Ok(());
    };
    if now >= grant.expires_at {
        return Err(Error::unauthorized("agent token has expired").with_code(Code::TokenExpired));
    }
    let window = grant.expires_at - now + 1;
    // A limit of 0 reads the counter: never allowed, `count` is the uses spent so far.
    let limit = if consume { grant.uses } else { 0 };
    let hit = ports
        .sessions
        .hit(&uses_counter(&grant.id), window, limit, now)
        .await
        .map_err(unreachable)?;
    let left = if consume {
        hit.allowed
    } else {
        hit.count < grant.uses
    };
    if !left {
        return Err(
            Error::forbidden(format!("this token's {} uses are spent", grant.uses))
                .with_code(Code::TokenExhausted),
        );
    }
    Ok(())
}

/// The key `key` is not revoked; with a token, the token has not expired and is not revoked
/// either (its parent's and its own marker, read concurrently).
async fn still_live(ports: &Ports, key: &str, token: Option<&TokenGrant>, now: u64) -> Result<()> {
    let key_marker = super::keys::revoked_marker(key);
    let revoked = match token {
        None => ports
            .sessions
            .is_marked(&key_marker, now)
            .await
            .map_err(unreachable)?,
        Some(grant) => {
            if now >= grant.expires_at {
                return Err(
                    Error::unauthorized("agent token has expired").with_code(Code::TokenExpired)
                );
            }
            let (token_revoked, key_revoked) = futures_util::future::try_join(
                ports.sessions.is_marked(&revoked_marker(&grant.id), now),
                ports.sessions.is_marked(&key_marker, now),
            )
            .await
            .map_err(unreachable)?;
            token_revoked || key_revoked
        }
    };
    if revoked {
        return Err(match token {
            Some(_) => invalid_token(),
            None => Error::unauthorized("invalid API key").with_code(Code::InvalidApiKey),
        });
    }
    Ok(())
}

fn unreachable(_: Error) -> Error {
    Error::unavailable(
        "the key's revocation or the token's use counter cannot be read; nothing was sent",
    )
    .with_code(Code::SessionStoreUnavailable)
}

impl<'a> ApiKeys<'a> {
    /// The agent tokens of this deployment's keys.
    pub fn tokens(&self) -> AgentTokens<'a> {
        AgentTokens::new(*self)
    }

    /// Authenticate an API key (`vk_<id>_<secret>`, [`ApiKeys::authenticate_key`]) or an agent
    /// token (`vt_…`), wherever a key is accepted: a token authenticates as its parent key
    /// narrowed by the token ([`AgentTokens::authenticate`]). Here rather than in `keys.rs`, so
    /// that keys do not depend on tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        if token.starts_with(AGENT_TOKEN_PREFIX) {
            return self.tokens().authenticate(token).await;
        }
        self.authenticate_key(token).await
    }
}

/// The agent tokens of one deployment ([`ApiKeys::tokens`]).
/// It reaches the store, the record keys and the audit through the keys it narrows.
#[derive(Clone, Copy)]
pub struct AgentTokens<'a> {
    api_keys: ApiKeys<'a>,
}

impl<'a> AgentTokens<'a> {
    pub(crate) fn new(api_keys: ApiKeys<'a>) -> Self {
        AgentTokens { api_keys }
    }

    /// Mint a token; the returned `token` is shown once and never stored.
    pub async fn mint(&self, who: &Principal, input: NewToken) -> Result<CreatedToken> {
        let parent_id =
            match who {
                Principal::ApiKey { token: Some(_), .. } => {
                    return Err(Error::forbidden(
                        "an agent token cannot mint tokens: mint them with its API key",
                    )
                    .with_code(Code::PermissionDenied))
                }
                Principal::ApiKey { id, .. } => match input.parent_key.as_deref() {
                    None => id.clone(),
                    Some(p) if p == id => id.clone(),
                    Some(_) => {
                        return Err(Error::forbidden(
                            "an API key mints tokens of itself only (omit parent_key)",
                        )
                        .with_code(Code::PermissionDenied))
                    }
                },
                Principal::Admin { .. } => match input.parent_key.as_deref() {
                    Some(p) if is_key_id(p) => p.to_string(),
                    _ => return Err(Error::bad_request(
                        "parent_key is required: the id of the API key the token is a subset of",
                    )
                    .with_code(Code::InvalidParentKey)),
                },
            };
        // Read before the parent is checked (which reads the clock again, later): a parent
        // live then is live now, so the token's lifetime, cut to the parent's expiry, is never
        // negative (review of 2026-12-06, finding 5).
        let now = self.api_keys.ports.now_ms();
        let (parent, role) = self.api_keys.live(&parent_id).await.map_err(|e| {
            if matches!(who, Principal::Admin { .. }) && e.status().as_u16() == 401 {
                Error::not_found(format!("no live API key '{parent_id}'"))
                    .with_code(Code::KeyNotFound)
            } else {
                e
            }
        })?;
        if !role.has(Permission::Execute) {
            return Err(Error::forbidden(
                "the parent key's role lacks the 'execute' permission, which is all a token is for",
            )
            .with_code(Code::PermissionDenied));
        }
        let name = input.name.unwrap_or_default();
        // Shown in listings: nothing that changes how the text around it reads.
        let hidden = |c: char| c.is_control() || crate::input::is_format(c);
        if name.chars().count() > 100 || name.chars().any(hidden) {
            return Err(Error::bad_request(
                "name must be at most 100 characters, without control or format characters \
                 (bidirectional overrides, zero-width characters)",
            )
            .with_code(Code::InvalidName));
        }
        let credentials = checked_credentials(input.credentials, &role)?;
        let methods = match input.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(Error::bad_request(
                    "methods must not be empty (omit it to allow every method)",
                )
                .with_code(Code::InvalidMethod))
            }
            Some(list) => Some(crate::policy::validate_methods(list)?),
        };
        let path_prefixes = match input.path_prefixes {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(Error::bad_request(
                    "path_prefixes must not be empty (omit it to allow every path)",
                )
                .with_code(Code::InvalidPathPrefix))
            }
            Some(list) => Some(crate::policy::validate_prefixes(list)?),
        };
        let uses = input.uses.unwrap_or(DEFAULT_USES);
        if uses == 0 || uses > MAX_USES {
            return Err(
                Error::bad_request(format!("uses must be from 1 to {MAX_USES}"))
                    .with_code(Code::InvalidUses),
            );
        }
        let expires_at = expiry(now, input.expires_in, parent.expires_at)?;
        if self.live_count(&parent.id, now).await? >= MAX_LIVE_TOKENS_PER_KEY {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!(
                    "key '{}' has {MAX_LIVE_TOKENS_PER_KEY} live tokens, the most it may have: \
                     revoke finished ones (DELETE /v1/tokens/{{id}}) or wait for them to expire",
                    parent.id
                ),
            )
            .with_code(Code::TooManyTokens));
        }
        let id = crypto::hex(&crypto::random_bytes::<8>());
        let secret = zeroize::Zeroizing::new(crypto::b64url(&crypto::random_bytes::<32>()));
        let record = TokenRecord {
            id: id.clone(),
            name,
            parent_key: parent.id.clone(),
            mac: crypto::hex(
                &self
                    .api_keys
                    .keys
                    .mac(MacPurpose::AgentTokenSecret, secret.as_bytes()),
            ),
            credentials,
            methods,
            path_prefixes,
            uses,
            created_at: now,
            expires_at,
            created_by: who.actor(),
            require_approval: input.require_approval,
        };
        let key = token_key(&id);
        let bytes = self.api_keys.keys.seal_record(&key, &record)?;
        // Kept a minute past its expiry (the KV minimum TTL is 60 s); dead from its expiry on.
        let ttl = (expires_at - now).div_ceil(1000) + 60;
        self.api_keys
            .ports
            .kv
            .put(
                &key,
                Bytes::from(bytes),
                PutOptions {
                    expiration_ttl: Some(ttl),
                    // Cleartext, for counting and skipping only ([`Self::live_count`],
                    // [`Self::list`]): what a token allows is read from the signed record.
                    metadata: Some(serde_json::json!({ "parent_key": parent.id })),
                },
            )
            .await?;
        self.audit_change(who, "token.create", &id, 201).await;
        Ok(CreatedToken {
            token: format!("{AGENT_TOKEN_PREFIX}{id}_{}", secret.as_str()),
            id,
            name: record.name,
            parent_key: record.parent_key,
            credentials: record.credentials,
            methods: record.methods,
            path_prefixes: record.path_prefixes,
            uses,
            expires_at,
            require_approval: record.require_approval,
        })
    }

    /// The live tokens the caller may see: every one for an admin, its own for an API key
    /// (a token sees none: 403). Expired and revoked tokens are left out.
    pub async fn list(&self, who: &Principal) -> Result<Vec<TokenInfo>> {
        let own = self.owner_filter(who)?;
        let now = self.api_keys.ports.now_ms();
        let mut out = Vec::new();
        // Whether each parent key met is live (checked once per listing).
        let mut parents: std::collections::HashMap<String, bool> = Default::default();
        for k in list_all(&*self.api_keys.ports.kv, TOKEN_PREFIX).await? {
            // Another key's token, by the listing's metadata: not read at all (a key's listing
            // costs reads of its own tokens only). Metadata is only trusted to skip.
            if own.is_some_and(|p| parent_in(&k).is_some_and(|q| q != p)) {
                continue;
            }
            let Some(record) = self.read(&k.name, who).await? else {
                continue;
            };
            if own.is_some_and(|p| p != record.parent_key) || now >= record.expires_at {
                continue;
            }
            // A token of a revoked or expired key (or one whose role is gone) is refused: not
            // listed as live (review of 2026-12-06, finding 7).
            let parent_live = match parents.get(&record.parent_key) {
                Some(live) => *live,
                None => {
                    let live = match self.api_keys.live(&record.parent_key).await {
                        Ok(_) => true,
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::Unauthorized | ErrorKind::Forbidden
                            ) =>
                        {
                            false
                        }
                        Err(e) => return Err(e),
                    };
                    parents.insert(record.parent_key.clone(), live);
                    live
                }
            };
            if !parent_live {
                continue;
            }
            if self
                .api_keys
                .ports
                .sessions
                .is_marked(&revoked_marker(&record.id), now)
                .await?
            {
                continue;
            }
            // A hit with limit 0 counts nothing: it reads the counter.
            let window = record.expires_at - now + 1;
            let spent = self
                .api_keys
                .ports
                .sessions
                .hit(&uses_counter(&record.id), window, 0, now)
                .await?
                .count;
            out.push(TokenInfo {
                uses_left: record.uses.saturating_sub(spent),
                id: record.id,
                name: record.name,
                parent_key: record.parent_key,
                credentials: record.credentials,
                methods: record.methods,
                path_prefixes: record.path_prefixes,
                uses: record.uses,
                created_at: record.created_at,
                expires_at: record.expires_at,
                created_by: record.created_by,
                require_approval: record.require_approval,
            });
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Revoke a token at once, everywhere (SessionStore marker), then delete its record. An
    /// admin may revoke any token, a key its own (another key's is 404, as if it did not exist).
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<()> {
        let own = self.owner_filter(who)?;
        if !is_key_id(id) {
            return Err(not_found(id));
        }
        let key = token_key(id);
        let record = self.read(&key, who).await?.ok_or_else(|| not_found(id))?;
        if own.is_some_and(|p| p != record.parent_key) {
            return Err(not_found(id));
        }
        let now = self.api_keys.ports.now_ms();
        let ttl = record.expires_at.saturating_sub(now).max(60_000) + 60_000;
        self.api_keys
            .ports
            .sessions
            .mark(&revoked_marker(id), ttl, now)
            .await?;
        self.api_keys.ports.kv.delete(&key).await?;
        self.audit_change(who, "token.revoke", id, 204).await;
        Ok(())
    }

    /// Authenticate an agent token (`vt_<id>_<secret>`): its record (signed, of this id), its
    /// secret against the MAC (constant time), its expiry and revocation, then its parent key,
    /// live. The caller is the parent key narrowed by the token.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let (id, secret) = parse_agent_token(token).ok_or_else(invalid_token)?;
        let key = token_key(id);
        let bytes = self
            .api_keys
            .ports
            .kv
            .get(&key)
            .await?
            .ok_or_else(invalid_token)?;
        let record = match self.api_keys.keys.open_record::<TokenRecord>(&key, &bytes) {
            RecordCheck::Signed(r) if r.id == id => r,
            RecordCheck::Unsigned(_) => return Err(invalid_token()),
            _ => {
                self.integrity()
                    .refused_unauthenticated(&format!("token:{id}"), &key)
                    .await;
                return Err(invalid_token());
            }
        };
        let matches = crypto::hex_decode(&record.mac).is_some_and(|tag| {
            self.api_keys
                .keys
                .verify_mac(MacPurpose::AgentTokenSecret, secret.as_bytes(), &tag)
        });
        if !matches {
            return Err(invalid_token());
        }
        let now = self.api_keys.ports.now_ms();
        if now >= record.expires_at {
            return Err(
                Error::unauthorized("agent token has expired").with_code(Code::TokenExpired)
            );
        }
        if self
            .api_keys
            .ports
            .sessions
            .is_marked(&revoked_marker(id), now)
            .await?
        {
            return Err(invalid_token());
        }
        let (parent, role) = self.api_keys.live(&record.parent_key).await?;
        Ok(Principal::ApiKey {
            id: parent.id,
            name: parent.name,
            role,
            token: Some(Arc::new(TokenGrant {
                id: record.id,
                credentials: record.credentials,
                methods: record.methods,
                path_prefixes: record.path_prefixes,
                uses: record.uses,
                expires_at: record.expires_at,
                require_approval: record.require_approval,
            })),
            access: None,
        })
    }

    /// How many tokens of key `parent` are live at `now`, from the KV listing alone (the parent
    /// in each record's metadata, its expiry): one list operation per thousand tokens, no read.
    /// Approximate where the listing lags (Workers KV): it bounds resources, it grants nothing.
    async fn live_count(&self, parent: &str, now: u64) -> Result<usize> {
        let listed = list_all(&*self.api_keys.ports.kv, TOKEN_PREFIX).await?;
        Ok(listed
            .iter()
            .filter(|k| parent_in(k) == Some(parent))
            .filter(|k| k.expiration.is_none_or(|s| s.saturating_mul(1000) > now))
            .count())
    }

    /// `None` for an admin (every token), `Some(key id)` for an API key (its own); a token: 403.
    fn owner_filter<'w>(&self, who: &'w Principal) -> Result<Option<&'w str>> {
        match who {
            Principal::Admin { .. } => Ok(None),
            Principal::ApiKey { token: Some(_), .. } => Err(Error::forbidden(
                "an agent token cannot list or revoke tokens: use its API key",
            )
            .with_code(Code::PermissionDenied)),
            Principal::ApiKey { id, .. } => Ok(Some(id)),
        }
    }

    /// The signed record at `key`; one that fails its check is audited and left out.
    async fn read(&self, key: &str, who: &Principal) -> Result<Option<TokenRecord>> {
        let Some(bytes) = self.api_keys.ports.kv.get(key).await? else {
            return Ok(None);
        };
        match self.api_keys.keys.open_record::<TokenRecord>(key, &bytes) {
            RecordCheck::Signed(r) if token_key(&r.id) == key => Ok(Some(r)),
            check => {
                let check = match check {
                    RecordCheck::Unsigned(_) => RecordCheck::Unsigned(()),
                    _ => RecordCheck::Tampered,
                };
                self.integrity().refused(&who.actor(), key, &check).await;
                Ok(None)
            }
        }
    }

    fn integrity(&self) -> Integrity<'a> {
        Integrity::new(self.api_keys.ports, self.api_keys.keys, self.api_keys.audit)
    }

    async fn audit_change(&self, who: &Principal, action: &str, id: &str, status: u16) {
        let mut e = AuditEvent::new(self.api_keys.ports.now_ms(), who.actor(), action, "success");
        e.record = Some(token_key(id));
        e.status = Some(status);
        self.api_keys.audit.record(e).await;
    }
}

/// The parent key a token's KV listing entry names in its metadata, if any.
fn parent_in(k: &crate::ports::ListKey) -> Option<&str> {
    k.metadata.as_ref()?.get("parent_key")?.as_str()
}

/// The token's credential globs: 1 to [`MAX_CREDENTIALS`], each an alias glob (letters,
/// digits, `.`, `_`, `-`, `*`; at most 64 bytes) that one of the parent role's scopes covers
/// ([`glob_covers`]; 403 `token_widens_parent` otherwise). Duplicates are dropped.
pub fn checked_credentials(list: Vec<String>, parent: &Role) -> Result<Vec<String>> {
    if list.is_empty() || list.len() > MAX_CREDENTIALS {
        return Err(Error::bad_request(format!(
            "credentials must list 1 to {MAX_CREDENTIALS} credential aliases or globs"
        ))
        .with_code(Code::InvalidCredentials));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for c in list {
        let valid = !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b));
        if !valid {
            return Err(Error::bad_request(
                "credentials must be alias globs (letters, digits, '.', '_', '-', '*'; at most \
                 64 bytes)",
            )
            .with_code(Code::InvalidCredentials));
        }
        if !parent.scopes.iter().any(|s| glob_covers(s, &c)) {
            return Err(Error::forbidden(format!(
                "credentials '{c}' reaches beyond the parent key's scopes: a token is a subset \
                 of its key"
            ))
            .with_code(Code::TokenWidensParent));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// When a token minted at `now` expires: `expires_in` seconds on (default
/// [`DEFAULT_EXPIRES_IN_SECS`], at most [`MAX_EXPIRES_IN_SECS`]), never past the parent's
/// expiry — a default lifetime is cut to it, an asked-for one past it is refused (400
/// `invalid_expiry`).
pub fn expiry(now: u64, expires_in: Option<u64>, parent_expires_at: Option<u64>) -> Result<u64> {
    let secs = expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    if secs == 0 || secs > MAX_EXPIRES_IN_SECS {
        return Err(Error::bad_request(format!(
            "expires_in must be from 1 to {MAX_EXPIRES_IN_SECS} seconds"
        ))
        .with_code(Code::InvalidExpiry));
    }
    let wanted = now + secs * 1000;
    match parent_expires_at {
        Some(p) if wanted > p && expires_in.is_some() => Err(Error::bad_request(
            "expires_in reaches past the parent key's expiry: a token never outlives its key",
        )
        .with_code(Code::InvalidExpiry)),
        Some(p) => Ok(wanted.min(p)),
        None => Ok(wanted),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_cover_only_what_they_match() {
        assert!(glob_covers("*", "github-*"));
        assert!(glob_covers("github-*", "github-prod"));
        assert!(glob_covers("github-*", "github-*"));
        assert!(glob_covers("github-*", "github-p*"));
        assert!(!glob_covers("github-*", "git*"));
        assert!(!glob_covers("github-prod", "github-*"));
        assert!(!glob_covers("github-*", "*"));
        assert!(glob_covers("*-prod", "db-*-prod"));
        assert!(!glob_covers("*-prod", "db-*"));
    }

    #[test]
    fn a_token_never_outlives_its_parent() {
        assert_eq!(expiry(0, None, None).unwrap(), 3_600_000);
        assert_eq!(expiry(0, None, Some(1000)).unwrap(), 1000, "default cut");
        assert_eq!(
            expiry(0, Some(2), Some(1000)).unwrap_err().code(),
            Code::InvalidExpiry
        );
        assert_eq!(expiry(0, Some(1), Some(1000)).unwrap(), 1000);
        for bad in [0, MAX_EXPIRES_IN_SECS + 1] {
            assert_eq!(
                expiry(0, Some(bad), None).unwrap_err().code(),
                Code::InvalidExpiry
            );
        }
    }

    #[test]
    fn methods_and_paths_are_checked_on_the_normalised_path() {
        let g = TokenGrant {
            id: "0123456789abcdef".into(),
            credentials: vec!["gh".into()],
            methods: Some(vec!["GET".into()]),
            path_prefixes: Some(vec!["/repos".into()]),
            uses: 1,
            expires_at: 1,
            require_approval: false,
        };
        assert!(g.check("GET", "/repos/a").is_ok());
        assert!(g.check("GET", "/repos").is_ok());
        assert_eq!(
            g.check("POST", "/repos/a").unwrap_err().code(),
            Code::TokenMethodDenied
        );
        for bad in [
            "/reposx",
            "/admin",
            "/repos/%2e%2e/admin",
            "/repos/..;/admin",
        ] {
            assert_eq!(
                g.check("GET", bad).unwrap_err().code(),
                Code::TokenPathDenied,
                "{bad}"
            );
        }
    }
}
