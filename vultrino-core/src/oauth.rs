//! OAuth2 access tokens for `oauth2` credentials: fetched from the token endpoint on first use
//! (client-credentials grant, or refresh-token grant when a refresh token is known), cached
//! sealed at `oauth:<alias>` (the only code that touches those records), refreshed
//! [`REFRESH_MARGIN_MS`] before they expire, and bound to the credential version they were
//! fetched for.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::credential::{oauth_key, ClientAuth, CredentialRecord, OAuth2Data};
use crate::crypto::{self, Keys, MacPurpose};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::ports::{FetchOptions, Ports, PutOptions};
use crate::secret::Secret;
use crate::ssrf;
use crate::upstream::USER_AGENT;

/// Refresh tokens this long before they expire.
pub const REFRESH_MARGIN_MS: u64 = 60_000;

/// A cached OAuth2 access token, sealed at `oauth:<alias>`.
#[derive(Serialize, Deserialize)]
pub struct OAuthToken {
    access_token: Secret,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    /// [`binding`] of the credential version the token was fetched for. A token whose binding
    /// differs is ignored: a refresh still in flight when its credential was deleted, rotated
    /// or re-created may write its token afterwards, and that token must not be used under the
    /// new credential.
    #[serde(default)]
    issued_for: String,
}

impl OAuthToken {
    /// The access token sent upstream.
    pub fn access_token(&self) -> &Secret {
        &self.access_token
    }

    /// Every secret the token holds (for the scrubber).
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.access_token).chain(self.refresh_token.as_ref())
    }
}

/// Keyed hash of everything an OAuth2 token is issued for: the credential's id (new on every
/// create) and its OAuth2 settings, secrets included (so a rotation changes it).
pub fn binding(keys: &Keys, record: &CredentialRecord, d: &OAuth2Data) -> Result<String> {
    let what = zeroize::Zeroizing::new(
        serde_json::to_vec(&("oauth-token-binding", &record.id, d))
            .map_err(|_| Error::internal())?,
    );
    Ok(crypto::hex(&keys.mac(MacPurpose::OAuthBinding, &what)))
}

/// The token cache and the token endpoint, as one deployment reaches them.
#[derive(Clone, Copy)]
pub struct OAuthTokens<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    fetch: FetchOptions,
}

impl<'a> OAuthTokens<'a> {
    /// `fetch`: the limits of the token request.
    pub fn new(ports: &'a Ports, keys: &'a Keys, fetch: FetchOptions) -> Self {
        OAuthTokens { ports, keys, fetch }
    }

    /// A valid access token for `record`: the cached one, or a new one from the token endpoint
    /// (refresh-token grant when a refresh token is known, client credentials otherwise).
    /// `binding` is the credential version's [`binding`]: a cached token issued for another
    /// version is not used. `before_fetch` runs only when the token endpoint is about to be
    /// asked (a refusal there means no fetch): a cache hit costs nothing more.
    pub async fn token(
        &self,
        record: &CredentialRecord,
        d: &OAuth2Data,
        binding: &str,
        before_fetch: impl std::future::Future<Output = Result<()>>,
    ) -> Result<OAuthToken> {
        let key = oauth_key(&record.alias);
        let now = self.ports.now_ms();
        let mut refresh = d.refresh_token.clone();
        if let Some(text) = self.ports.kv.get(&key).await? {
            let cached = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| self.keys.open_envelope(&key, t).ok())
                .and_then(|p| serde_json::from_slice::<OAuthToken>(&p).ok())
                .filter(|tok| crypto::ct_eq(tok.issued_for.as_bytes(), binding.as_bytes()));
            if let Some(tok) = cached {
                if tok.expires_at.is_none_or(|e| now + REFRESH_MARGIN_MS < e) {
                    return Ok(tok);
                }
                if tok.refresh_token.is_some() {
                    refresh = tok.refresh_token;
                }
            }
        }
        before_fetch.await?;
        let target = ssrf::check_url(&d.token_url, self.fetch.allow_loopback)?;
        let request = token_request(d, refresh.as_ref(), target.url.as_str())?;
        let response = self.ports.fetcher.fetch(request, self.fetch).await?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "token endpoint answered HTTP {}",
                response.status().as_u16()
            )));
        }
        #[derive(Deserialize)]
        struct TokenReply {
            access_token: Secret,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            refresh_token: Option<Secret>,
        }
        let reply: TokenReply = serde_json::from_slice(response.body())
            .map_err(|_| failed("token endpoint reply has no access_token".into()))?;
        if reply.access_token.is_empty() {
            return Err(failed(
                "token endpoint returned an empty access_token".into(),
            ));
        }
        let token = OAuthToken {
            access_token: reply.access_token,
            expires_at: reply
                .expires_in
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            refresh_token: reply.refresh_token.or(refresh),
            issued_for: binding.to_owned(),
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&token).map_err(|_| Error::internal())?);
        let sealed = self.keys.seal(&key, &plain);
        // Keep the cache no longer than the token lives (KV TTLs are at least 60 s) — unless it
        // holds a refresh token, which outlives the access token and may be the only valid one
        // left after the provider rotated it.
        let ttl = if token.refresh_token.is_some() {
            None
        } else {
            reply.expires_in.filter(|s| *s >= 60)
        };
        self.ports
            .kv
            .put(
                &key,
                Bytes::from(sealed),
                PutOptions {
                    expiration_ttl: ttl,
                    metadata: None,
                },
            )
            .await?;
        Ok(token)
    }

    /// Drop the cached token of credential `alias` (it belonged to a secret that changed, or to
    /// a credential that is gone).
    pub async fn forget(&self, alias: &str) -> Result<()> {
        self.ports.kv.delete(&oauth_key(alias)).await
    }
}

fn failed(m: String) -> Error {
    Error::new(ErrorKind::UpstreamFailed, m).with_code(Code::OauthTokenFailed)
}

/// The token request (built synchronously: the form serializer is not `Send`).
fn token_request(
    d: &OAuth2Data,
    refresh: Option<&Secret>,
    url: &str,
) -> Result<http::Request<Bytes>> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match refresh {
        Some(r) => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", r.expose());
        }
        None => {
            form.append_pair("grant_type", "client_credentials");
        }
    }
    if let Some(scopes) = &d.scopes {
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
    }
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT);
    match d.client_auth {
        ClientAuth::Basic => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = zeroize::Zeroizing::new(format!(
                "{}:{}",
                enc(&d.client_id),
                enc(d.client_secret.expose())
            ));
            let b64 = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
            );
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Basic {}", b64.as_str()),
            );
        }
        ClientAuth::Post => {
            form.append_pair("client_id", &d.client_id);
            form.append_pair("client_secret", d.client_secret.expose());
        }
    }
    let body = zeroize::Zeroizing::new(form.finish());
    builder
        .body(Bytes::from(body.as_bytes().to_vec()))
        .map_err(|_| failed("token request could not be built".into()))
}
