//! Credentials: the secret-bearing records Vultrino injects into outgoing requests.
//!
//! A credential is stored at KV key `cred:<alias>` as an envelope (see [`crate::crypto`]) of its
//! [`CredentialRecord`] JSON; the cleartext KV metadata ([`CredentialMeta`]) carries only what a
//! listing needs (id, type, description, allowed hosts, timestamps), so listing decrypts nothing.
//!
//! Every secret value lives in a [`Secret`]: zeroized on drop, `[redacted]` in `Debug`, and read
//! only through the greppable [`Secret::expose`].
//!
//! - this file: the record types, their validation and the secrets they hold;
//! - `credential/inject.rs`: how each type's secret enters an outgoing request;
//! - `credential/store.rs`: reading, opening, sealing and writing `cred:` records (the only code
//!   that does), and the cache of opened credentials;
//! - `credential/manage.rs`: create, read, update, rotate, delete and list, as the API and CLI
//!   call them ([`Credentials`]).

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Code, Error, Result};
use crate::input::field_error;
use crate::policy::Policy;
use crate::secret::Secret;

mod inject;
mod manage;
mod store;

pub use manage::{CredentialDetail, CredentialUpdate, Credentials, NewCredential, SentAs};
pub(crate) use store::{CredentialStore, OpenedCache, OpenedCredential};

/// KV key prefix of credentials.
pub const CRED_PREFIX: &str = "cred:";
/// KV key prefix of cached OAuth2 access tokens (envelopes, AD bound to the key).
pub const OAUTH_PREFIX: &str = "oauth:";
/// Longest description accepted (it is stored in cleartext metadata, capped at 1024 bytes).
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// The credential types, as their snake_case tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    ApiKey,
    BasicAuth,
    QueryParam,
    Oauth2,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::BasicAuth => "basic_auth",
            CredentialType::QueryParam => "query_param",
            CredentialType::Oauth2 => "oauth2",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "api_key" => Ok(CredentialType::ApiKey),
            "basic_auth" => Ok(CredentialType::BasicAuth),
            "query_param" => Ok(CredentialType::QueryParam),
            "oauth2" => Ok(CredentialType::Oauth2),
            _ => Err(Error::bad_request(
                "type must be one of api_key, basic_auth, query_param, oauth2",
            )
            .with_code(Code::InvalidType)),
        }
    }
}

/// `api_key`: a header carrying `prefix + key`; by default `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyData {
    pub key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl ApiKeyData {
    pub fn header_name(&self) -> &str {
        self.header.as_deref().unwrap_or("Authorization")
    }
    /// The prefix; `Bearer ` by default only when the header is `Authorization`.
    pub fn prefix(&self) -> &str {
        match (&self.prefix, &self.header) {
            (Some(p), _) => p,
            (None, None) => "Bearer ",
            (None, Some(h)) if h.eq_ignore_ascii_case("authorization") => "Bearer ",
            (None, Some(_)) => "",
        }
    }
}

/// `basic_auth`: HTTP Basic with a user name and password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthData {
    pub username: String,
    pub password: Secret,
}

/// `query_param`: a query parameter `name=value` added to the URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParamData {
    pub name: String,
    pub value: Secret,
}

/// How the OAuth2 client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret (RFC 6749 §2.3.1, which servers must support).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// `oauth2`: client-credentials grant, or refresh-token grant when `refresh_token` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Data {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// The type-specific fields of a credential, secrets included.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum CredentialData {
    ApiKey(ApiKeyData),
    BasicAuth(BasicAuthData),
    QueryParam(QueryParamData),
    Oauth2(OAuth2Data),
}

/// A JSON value that may hold secrets (the `data` of a create or an update): every string in it
/// is zeroized when it is dropped, whatever path the request took (refused, failed or done).
pub(crate) struct SecretJson(pub(crate) serde_json::Value);

impl Drop for SecretJson {
    fn drop(&mut self) {
        zeroize_json(&mut self.0);
    }
}

/// Zeroize every string of a JSON value in place (object keys are field names, not secrets).
fn zeroize_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(zeroize_json),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

impl CredentialData {
    /// Parse the `data` object of an API request for `kind`; unknown fields are refused. The
    /// strings of `data` are zeroized once parsed (the secret then lives in a [`Secret`] only).
    pub fn parse(kind: CredentialType, data: serde_json::Value) -> Result<Self> {
        Self::parse_json(kind, &SecretJson(data))
    }

    /// [`CredentialData::parse`] of a value the caller zeroizes: the secret is copied out of it
    /// into a [`Secret`], never moved (a move out of a `serde_json::Value` would leave the
    /// value's other strings, on a refusal, to be dropped without zeroizing).
    pub(crate) fn parse_json(kind: CredentialType, data: &SecretJson) -> Result<Self> {
        fn de<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T> {
            // serde's messages name fields and expected types, never the values given.
            T::deserialize(v).map_err(|e| {
                Error::bad_request(format!("invalid credential data: {}", field_error(&e)))
                    .with_code(Code::InvalidData)
            })
        }
        let data = &data.0;
        let parsed = match kind {
            CredentialType::ApiKey => CredentialData::ApiKey(de(data)?),
            CredentialType::BasicAuth => CredentialData::BasicAuth(de(data)?),
            CredentialType::QueryParam => CredentialData::QueryParam(de(data)?),
            CredentialType::Oauth2 => CredentialData::Oauth2(de(data)?),
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// The same data with the type's one secret (api_key `key`, basic_auth `password`,
    /// query_param `value`, oauth2 `client_secret`) replaced and every other field kept, checked
    /// like new data (an api_key secret must be printable header text …). Refuses an empty secret.
    pub fn with_secret(&self, secret: Secret) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::bad_request("the new secret is empty").with_code(Code::InvalidData));
        }
        let mut next = self.clone();
        match &mut next {
            CredentialData::ApiKey(d) => d.key = secret,
            CredentialData::BasicAuth(d) => d.password = secret,
            CredentialData::QueryParam(d) => d.value = secret,
            CredentialData::Oauth2(d) => d.client_secret = secret,
        }
        next.validate()?;
        Ok(next)
    }

    pub fn kind(&self) -> CredentialType {
        match self {
            CredentialData::ApiKey(_) => CredentialType::ApiKey,
            CredentialData::BasicAuth(_) => CredentialType::BasicAuth,
            CredentialData::QueryParam(_) => CredentialType::QueryParam,
            CredentialData::Oauth2(_) => CredentialType::Oauth2,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &'static str| Err(Error::bad_request(m).with_code(Code::InvalidData));
        match self {
            CredentialData::ApiKey(d) => {
                if d.key.is_empty() {
                    return bad("api_key.key must not be empty");
                }
                if let Some(h) = &d.header {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return bad("api_key.header is not a valid header name");
                    }
                }
                let value = Zeroizing::new(format!("{}{}", d.prefix(), d.key.expose()));
                if http::HeaderValue::from_str(&value).is_err() {
                    return bad("api_key.prefix and key must be printable header text");
                }
            }
            CredentialData::BasicAuth(d) => {
                if d.username.contains(':') {
                    return bad("basic_auth.username must not contain ':'");
                }
                if d.password.is_empty() && d.username.is_empty() {
                    return bad("basic_auth needs a username or a password");
                }
            }
            CredentialData::QueryParam(d) => {
                if d.name.is_empty() || d.value.is_empty() {
                    return bad("query_param.name and value must not be empty");
                }
            }
            CredentialData::Oauth2(d) => {
                if d.client_id.is_empty() || d.client_secret.is_empty() {
                    return bad("oauth2.client_id and client_secret must not be empty");
                }
                if url::Url::parse(&d.token_url).is_err() {
                    return bad("oauth2.token_url must be an absolute URL");
                }
            }
        }
        Ok(())
    }

    /// Every secret value of this credential (for the scrubber). OAuth tokens are added by the
    /// execute pipeline when it has them.
    pub fn secrets(&self) -> Vec<&[u8]> {
        match self {
            CredentialData::ApiKey(d) => vec![d.key.expose().as_bytes()],
            CredentialData::BasicAuth(d) => vec![d.password.expose().as_bytes()],
            CredentialData::QueryParam(d) => vec![d.value.expose().as_bytes()],
            CredentialData::Oauth2(d) => {
                let mut v = vec![d.client_secret.expose().as_bytes()];
                if let Some(r) = &d.refresh_token {
                    v.push(r.expose().as_bytes());
                }
                v
            }
        }
    }
}

/// The full record sealed at `cred:<alias>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: String,
    pub alias: String,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub data: CredentialData,
    pub policy: Policy,
    /// Where the pass-through proxy sends `/proxy/<alias>/<path>`: `https://host[:port][/path]`,
    /// its host inside `policy.allowed_hosts` ([`validate_base_url`]). Optional: without it, a
    /// policy of one exact host means `https://<host>`. Records written before it existed have
    /// none (and so open unchanged); sealed in the envelope with the rest of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Longest `base_url` accepted (it is also stored in the cleartext metadata, capped at 1024
/// bytes).
pub const MAX_BASE_URL_CHARS: usize = 256;

/// Check a credential's `base_url` against its policy and return it in its stored form (no
/// trailing `/`): an absolute `https` URL (`http` only to a loopback host with the test-only
/// loopback setting, as every upstream URL — [`crate::ssrf::check_url`]), no user name or
/// password, no query or fragment, a host the policy allows. 400 `invalid_base_url` otherwise;
/// the message never repeats the value (it could hold a pasted secret).
pub fn validate_base_url(raw: &str, policy: &Policy, allow_loopback: bool) -> Result<String> {
    let bad = |why: &str| {
        Err(Error::bad_request(format!("base_url {why}")).with_code(Code::InvalidBaseUrl))
    };
    if raw.chars().count() > MAX_BASE_URL_CHARS {
        return bad("is longer than 256 characters");
    }
    let target = match crate::ssrf::check_url(raw, allow_loopback) {
        Ok(t) => t,
        Err(e) => {
            return Err(Error::bad_request(format!(
                "base_url is not an upstream Vultrino may reach: {}",
                e.message()
            ))
            .with_code(Code::InvalidBaseUrl))
        }
    };
    let url = &target.url;
    if url.query().is_some() || url.fragment().is_some() || raw.contains(['?', '#']) {
        return bad("must not have a query or a fragment (give them on each request)");
    }
    let host = url.host_str().unwrap_or_default();
    if !policy.allows_host(host) {
        return bad("names a host that is not in this credential's allowed_hosts");
    }
    // The path as written: the URL parser resolves `..` and `%2e%2e` away.
    let raw_path = raw
        .split_once("://")
        .map_or("", |(_, r)| r.find('/').map_or("", |i| &r[i..]));
    if crate::policy::is_ambiguous_path(raw_path) || raw.contains('\\') {
        return bad("has a path with dot segments or encoded dots");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The cleartext KV metadata of a credential, and the shape of a listing item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialMeta {
    #[serde(default)]
    pub alias: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: CredentialType,
    pub description: String,
    pub allowed_hosts: Vec<String>,
    /// The pass-through proxy's upstream ([`CredentialRecord::base_url`]), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl CredentialRecord {
    pub fn meta(&self) -> CredentialMeta {
        CredentialMeta {
            alias: self.alias.clone(),
            id: self.id.clone(),
            kind: self.data.kind(),
            description: self.description.clone(),
            allowed_hosts: self.policy.allowed_hosts.clone(),
            base_url: self.base_url.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The KV key of a credential.
pub fn cred_key(alias: &str) -> String {
    [CRED_PREFIX, alias].concat()
}

/// The KV key of a credential's cached OAuth2 token.
pub fn oauth_key(alias: &str) -> String {
    format!("{OAUTH_PREFIX}{alias}")
}

/// Validate a credential alias or role name: 1–64 chars of `a-z A-Z 0-9 . _ -`, starting with a
/// letter or digit. Keeps KV keys, URLs and globs unambiguous.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "{what} must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
        .with_code(Code::InvalidName))
    }
}

/// Validate a description.
pub fn validate_description(d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(
            Error::bad_request("description is longer than 200 characters")
                .with_code(Code::InvalidDescription),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let d = CredentialData::parse(
            CredentialType::ApiKey,
            serde_json::json!({"key": "sk-live-123456"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("sk-live-123456"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn type_errors_never_echo_the_value_given() {
        let a = serde_json::from_str::<ApiKeyData>(r#"{"key": 5, "header": 6}"#).err();
        let b = serde_json::from_str::<BasicAuthData>(r#"{"username": "u", "password": 7}"#).err();
        let c = serde_json::from_str::<Vec<u8>>(r#""sk-live-999""#).err();
        let d = serde_json::from_str::<CredentialType>(r#""sk-live-999""#).err();
        for e in [a, b, c, d] {
            let m = field_error(&e.unwrap_or_else(|| panic!("expected an error")));
            assert!(!m.contains("sk-live-999"), "{m}");
            assert!(m.contains("expected"), "{m}");
        }
    }

    #[test]
    fn unknown_data_fields_are_refused() {
        let r = CredentialData::parse(
            CredentialType::ApiKey,
            serde_json::json!({"key": "x", "extra": 1}),
        );
        assert_eq!(r.err().map(|e| e.code()), Some(Code::InvalidData));
    }

    #[test]
    fn api_key_defaults_to_bearer_authorization() {
        let d: ApiKeyData = serde_json::from_value(serde_json::json!({"key": "k"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.header_name(), "Authorization");
        assert_eq!(d.prefix(), "Bearer ");
        let d: ApiKeyData =
            serde_json::from_value(serde_json::json!({"key": "k", "header": "X-Api-Key"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.prefix(), "");
    }

    /// The `data` of a request is zeroized once parsed, and on a refusal too: no string of it
    /// is left behind when the value is dropped.
    #[test]
    fn request_data_is_zeroized_once_parsed_or_refused() {
        let mut v =
            serde_json::json!({"key": "sk-live-1", "extra": ["sk-live-2", {"x": "sk-live-3"}]});
        zeroize_json(&mut v);
        assert_eq!(v, serde_json::json!({"key": "", "extra": ["", {"x": ""}]}));
        // Parsing copies the secret into a `Secret` and leaves the value whole for the caller
        // to zeroize (a move would leave the rest of a refused value unzeroized).
        let data = SecretJson(serde_json::json!({"key": "sk-live-4"}));
        let parsed = CredentialData::parse_json(CredentialType::ApiKey, &data);
        assert!(parsed.is_ok());
        assert_eq!(data.0["key"], "sk-live-4");
        let refused = SecretJson(serde_json::json!({"key": "sk-live-5", "extra": 1}));
        assert!(CredentialData::parse_json(CredentialType::ApiKey, &refused).is_err());
    }

    #[test]
    fn names_are_restricted_to_safe_characters() {
        assert!(validate_name("alias", "github-prod.v2_x").is_ok());
        for bad in ["", "-x", "a/b", "a b", "a*", "é", &"a".repeat(65)] {
            assert!(validate_name("alias", bad).is_err(), "{bad}");
        }
    }
}
