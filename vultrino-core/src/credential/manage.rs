//! Credential management as the HTTP API, the MCP tools and the CLI call it: create, read,
//! update (rotation included), delete and list, each authorized, validated, serialized with the
//! other changes of the same alias, and audited.

use serde::{Deserialize, Serialize};

use super::store::{no_such_alias, CredentialStore};
use super::{
    validate_base_url, validate_description, validate_name, CredentialData, CredentialMeta,
    CredentialRecord, CredentialType, SecretJson,
};
use crate::audit::AuditLog;
use crate::auth::{Permission, Principal};
use crate::change::{Changes, Record};
use crate::crypto;
use crate::error::{Code, Error, Result};
use crate::oauth::OAuthTokens;
use crate::policy::Policy;
use crate::ports::Ports;
use crate::secret::Secret;

/// Input of [`Credentials::create`] (the body of `POST /v1/credentials`).
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
    /// The pass-through proxy's upstream (see [`CredentialRecord::base_url`]).
    #[serde(default)]
    pub base_url: Option<String>,
}

/// Input of [`Credentials::update`] (the body of `PUT /v1/credentials/{alias}`): any of data
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
    pub secret: Option<Secret>,
    /// A new `base_url`; `""` removes it. Absent: kept (and checked again against a new policy).
    #[serde(default)]
    pub base_url: Option<String>,
}

/// One credential as `GET /v1/credentials/{alias}` shows it: its metadata, its whole policy and
/// how the secret is sent (never the secret, nor any other field of its data).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialDetail {
    #[serde(flatten)]
    pub meta: CredentialMeta,
    pub policy: Policy,
    pub sent_as: SentAs,
}

/// Where a credential's secret goes in the request sent upstream: a header with a prefix
/// before the secret (`api_key`; `Authorization: Basic` for `basic_auth`; `Authorization:
/// Bearer` with the fetched token for `oauth2`), or a query parameter (`query_param`). Names
/// only: never the secret, nor the basic-auth user or the OAuth2 client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentAs {
    /// The header name, for a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// What precedes the secret in the header (`Bearer `, `Basic `, or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The query parameter's name, for a query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

impl SentAs {
    pub(crate) fn of(data: &crate::credential::CredentialData) -> SentAs {
        use crate::credential::CredentialData as D;
        let header = |name: &str, prefix: &str| SentAs {
            header: Some(name.to_owned()),
            prefix: Some(prefix.to_owned()),
            query_param: None,
        };
        match data {
            D::ApiKey(d) => header(d.header_name(), d.prefix()),
            D::BasicAuth(_) => header("Authorization", "Basic "),
            D::Oauth2(_) => header("Authorization", "Bearer "),
            D::QueryParam(d) => SentAs {
                header: None,
                prefix: None,
                query_param: Some(d.name.clone()),
            },
        }
    }
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("alias", &self.alias)
            .field("kind", &self.kind)
            .field("policy", &self.policy)
            .field("base_url", &self.base_url)
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
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The credential operations of one deployment ([`crate::app::App::credentials`]).
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    store: CredentialStore<'a>,
    changes: Changes<'a>,
    oauth: OAuthTokens<'a>,
    audit: AuditLog<'a>,
    ports: &'a Ports,
    /// The test-only loopback setting: a `base_url` may then be `http://` to a loopback host.
    allow_loopback: bool,
}

impl<'a> Credentials<'a> {
    pub(crate) fn new(
        store: CredentialStore<'a>,
        changes: Changes<'a>,
        oauth: OAuthTokens<'a>,
        audit: AuditLog<'a>,
        ports: &'a Ports,
        allow_loopback: bool,
    ) -> Self {
        Credentials {
            store,
            changes,
            oauth,
            audit,
            ports,
            allow_loopback,
        }
    }

    /// Create a credential. 409 `credential_exists` if the alias is taken.
    pub async fn create(&self, who: &Principal, input: NewCredential) -> Result<CredentialMeta> {
        let NewCredential {
            alias,
            kind,
            description,
            data,
            policy,
            base_url,
        } = input;
        // Zeroized on every way out of here, refusals included.
        let data = SecretJson(data);
        who.require(Permission::Write)?;
        validate_name("alias", &alias)?;
        who.require_scope(&alias)?;
        let description = description.unwrap_or_default();
        validate_description(&description)?;
        let kind = CredentialType::parse(&kind)?;
        let data = CredentialData::parse_json(kind, &data)?;
        let policy = policy.validate()?;
        let base_url = base_url
            .filter(|b| !b.is_empty())
            .map(|b| validate_base_url(&b, &policy, self.allow_loopback))
            .transpose()?;
        self.changes
            .exclusive(Record::Credential, &alias, async {
                if self.store.exists(&alias).await? {
                    return Err(
                        Error::conflict(format!("credential '{alias}' already exists"))
                            .with_code(Code::CredentialExists),
                    );
                }
                let now = self.ports.now_ms();
                let id: [u8; 8] = crypto::random_bytes();
                let record = CredentialRecord {
                    id: crypto::hex(&id),
                    alias: alias.clone(),
                    description,
                    data,
                    policy,
                    base_url,
                    created_at: now,
                    updated_at: now,
                };
                let sealed = self.store.seal(&record)?;
                self.changes
                    .claim_version(Record::Credential, &alias, None)
                    .await?;
                self.store.put(sealed).await?;
                // A token left by an earlier credential of this alias (a refresh that finished
                // after its delete) is useless to this one (see `oauth::OAuthToken`): drop it.
                // Best effort: the credential is stored, and the token could not be used anyway.
                let _ = self.oauth.forget(&alias).await;
                self.audit
                    .change(who, "credential.create", Some(&alias), 201)
                    .await;
                Ok(record.meta())
            })
            .await
    }

    /// Replace a credential's data (rotation), policy and/or description.
    pub async fn update(
        &self,
        who: &Principal,
        alias: &str,
        update: CredentialUpdate,
    ) -> Result<CredentialMeta> {
        self.change(who, alias, update, "credential.update").await
    }

    /// Replace only the secret of a credential (api_key `key`, basic_auth `password`,
    /// query_param `value`, oauth2 `client_secret`), keeping every other field: what `vultrino
    /// credential rotate` does, audited as `credential.rotate` (over HTTP the same is `PUT
    /// {"secret"}`, audited as `credential.update` like every `PUT`).
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        alias: &str,
        secret: Secret,
    ) -> Result<CredentialMeta> {
        let update = CredentialUpdate {
            secret: Some(secret),
            ..CredentialUpdate::default()
        };
        self.change(who, alias, update, "credential.rotate").await
    }

    /// [`Self::update`], audited as `action`.
    async fn change(
        &self,
        who: &Principal,
        alias: &str,
        update: CredentialUpdate,
        action: &'static str,
    ) -> Result<CredentialMeta> {
        let CredentialUpdate {
            kind,
            data,
            policy,
            description,
            secret,
            base_url,
        } = update;
        // Zeroized on every way out of here, refusals included.
        let data = data.map(SecretJson);
        who.require(Permission::Write)?;
        who.require_scope(alias)?;
        validate_name("alias", alias).map_err(|_| no_such_alias(alias))?;
        self.changes
            .exclusive(Record::Credential, alias, async move {
                let stored = self.store.read(alias).await?;
                let mut record = self.store.open(&stored)?;
                if let Some(d) = description {
                    validate_description(&d)?;
                    record.description = d;
                }
                if let Some(p) = policy {
                    let p = p.validate()?;
                    // Widening an existing secret's policy is how a `write` key could misuse it:
                    // re-point it at a host it controls, lift the methods, paths or rate limit an
                    // admin set, or take the upstream's session cookies. Without new data
                    // (all of it), only admins may. A new `secret` alone does not count: the rest
                    // of the data stays (an OAuth2 refresh token, a user name). New data is the
                    // same as a delete and a create, which `write` allows. Narrowing is free.
                    // See docs/decisions/0050-policy-widening-needs-admin.md.
                    if let Some(what) = record.policy.widening(&p) {
                        if data.is_none() {
                            who.require(Permission::Admin).map_err(|_| {
                                Error::forbidden(format!(
                                    "this policy change {what}: widening a policy without new \
                                     data (all of it, not only the secret) needs the admin \
                                     permission"
                                ))
                                .with_code(Code::PermissionDenied)
                            })?;
                        }
                    }
                    record.policy = p;
                }
                match base_url {
                    Some(b) if b.is_empty() => record.base_url = None,
                    Some(b) => record.base_url = Some(b),
                    None => {}
                }
                // A kept base_url is checked again: a narrower policy may no longer allow it.
                if let Some(b) = &record.base_url {
                    record.base_url =
                        Some(validate_base_url(b, &record.policy, self.allow_loopback)?);
                }
                let rotated = match (kind, &data, secret) {
                    (_, Some(_), Some(_)) => {
                        return Err(Error::bad_request(
                            "give either data (all of it) or secret (the secret alone), not both",
                        )
                        .with_code(Code::InvalidData))
                    }
                    (Some(k), Some(d), None) => {
                        record.data = CredentialData::parse_json(CredentialType::parse(&k)?, d)?;
                        true
                    }
                    (None, Some(d), None) => {
                        record.data = CredentialData::parse_json(record.data.kind(), d)?;
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
                record.updated_at = self.ports.now_ms();
                let sealed = self.store.seal(&record)?;
                self.changes
                    .claim_version(Record::Credential, alias, Some(stored.bytes()))
                    .await?;
                self.store.put(sealed).await?;
                if rotated {
                    // A cached OAuth token belongs to the old client secret.
                    self.oauth.forget(alias).await?;
                }
                self.store.forget(alias);
                self.audit.change(who, action, Some(alias), 200).await;
                Ok(record.meta())
            })
            .await
    }

    /// Delete a credential (and its cached OAuth token). 404 if missing.
    pub async fn delete(&self, who: &Principal, alias: &str) -> Result<()> {
        who.require(Permission::Write)?;
        who.require_scope(alias)?;
        validate_name("alias", alias).map_err(|_| no_such_alias(alias))?;
        self.changes
            .exclusive(Record::Credential, alias, async {
                let stored = self.store.read(alias).await?;
                self.changes
                    .claim_version(Record::Credential, alias, Some(stored.bytes()))
                    .await?;
                self.store.delete(alias).await?;
                self.oauth.forget(alias).await?;
                self.audit
                    .change(who, "credential.delete", Some(alias), 204)
                    .await;
                Ok(())
            })
            .await
    }

    /// One credential's metadata (never its secret), from the cleartext KV metadata.
    pub async fn get(&self, who: &Principal, alias: &str) -> Result<CredentialMeta> {
        who.require(Permission::Read)?;
        who.require_scope(alias)?;
        self.store.meta(alias).await
    }

    /// One credential's metadata and policy, from its decrypted record (never its secret).
    pub async fn detail(&self, who: &Principal, alias: &str) -> Result<CredentialDetail> {
        who.require(Permission::Read)?;
        who.require_scope(alias)?;
        let stored = self.store.read(alias).await?;
        let record = self.store.open(&stored)?;
        Ok(CredentialDetail {
            meta: record.meta(),
            sent_as: SentAs::of(&record.data),
            policy: record.policy,
        })
    }

    /// List the credentials the caller's scopes reach, from KV metadata only (no decryption).
    /// The cursor is sealed (see `CredentialStore::list` and
    /// docs/decisions/0022-sealed-listing-cursors.md).
    pub async fn list(
        &self,
        who: &Principal,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<CredentialMeta>, Option<String>)> {
        who.require(Permission::Read)?;
        self.store
            .list(cursor, limit, |alias| who.reaches(alias))
            .await
    }
}
