//! How each credential type's secret enters an outgoing request — the one place that knows.

use base64::Engine as _;
use http::{header, HeaderValue};

use super::CredentialData;
use crate::error::{Code, Error, ErrorKind, Result};
use crate::oauth::OAuthToken;
use crate::secret::Secret;
use crate::upstream::Outbound;

impl CredentialData {
    /// Put this credential into `out` as its type requires, replacing anything the agent put in
    /// the same place, and return the derived forms of the secret that went into the request
    /// (besides the stored values of [`CredentialData::secrets`]), for the scrubber:
    ///
    /// - `api_key`: header `header` (default `Authorization`) set to `prefix + key`;
    /// - `basic_auth`: `Authorization: Basic base64(user:password)`; the pair and its base64
    ///   are returned, so an upstream that echoes the header (or re-encodes it) is scrubbed;
    /// - `query_param`: the parameter `name=value`, after every `name` the agent gave (in its
    ///   query or in the URL) is removed;
    /// - `oauth2`: `Authorization: Bearer <access token>`, from `oauth` (fetched by the caller,
    ///   see [`crate::oauth::OAuthTokens::token`]); the token's secrets are returned.
    ///
    /// Injected header values are marked sensitive (HTTP/2 never indexes them).
    #[inline]
    pub fn inject(&self, out: &mut Outbound, oauth: Option<&OAuthToken>) -> Result<Vec<Secret>> {
        let mut derived = Vec::new();
        match self {
            CredentialData::ApiKey(d) => {
                let name =
                    http::HeaderName::from_bytes(d.header_name().to_ascii_lowercase().as_bytes())
                        .map_err(|_| {
                        Error::unavailable("stored header name is invalid")
                            .with_code(Code::InvalidRecord)
                    })?;
                let text = zeroize::Zeroizing::new([d.prefix(), d.key.expose()].concat());
                let mut value = HeaderValue::from_str(&text).map_err(|_| {
                    Error::unavailable("stored key is not header text")
                        .with_code(Code::InvalidRecord)
                })?;
                value.set_sensitive(true);
                out.headers.remove(&name);
                out.headers.insert(name, value);
                derived.push(d.key.clone());
            }
            CredentialData::BasicAuth(d) => {
                let pair = Secret::new(format!("{}:{}", d.username, d.password.expose()));
                let encoded =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(pair.expose()));
                let mut value = HeaderValue::from_str(&format!("Basic {}", encoded.expose()))
                    .map_err(|_| Error::internal())?;
                value.set_sensitive(true);
                out.headers.insert(header::AUTHORIZATION, value);
                derived.push(d.password.clone());
                derived.push(pair);
                // The header value itself too: an upstream that re-encodes what it received
                // (base64 of the header) would otherwise hand the pair back one decode away.
                derived.push(encoded);
            }
            CredentialData::QueryParam(d) => {
                // The URL or the query may already carry the parameter (an agent guessing or
                // overriding it): only the injected value may reach the upstream.
                out.remove_url_param(&d.name);
                out.query.retain(|(k, _)| k != &d.name);
                out.query
                    .push((d.name.clone(), d.value.expose().to_string()));
                derived.push(d.value.clone());
            }
            CredentialData::Oauth2(_) => {
                let token = oauth.ok_or_else(Error::internal)?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", token.access_token().expose()))
                        .map_err(|_| {
                            Error::new(
                                ErrorKind::UpstreamFailed,
                                "token endpoint returned an unusable token",
                            )
                            .with_code(Code::OauthTokenFailed)
                        })?;
                value.set_sensitive(true);
                out.headers.insert(header::AUTHORIZATION, value);
                derived.extend(token.secrets().cloned());
            }
        }
        Ok(derived)
    }
}
