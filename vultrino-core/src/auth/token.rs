//! The tokens callers present, as text: their prefixes, the `Authorization: Bearer` parser, the
//! API key format and the session cookie.

/// Prefix of agent API keys (`vk_<id>_<secret>`).
pub const API_KEY_PREFIX: &str = "vk_";
/// Prefix of bearer session tokens (`Authorization: Bearer vs_…`).
pub const BEARER_SESSION_PREFIX: &str = "vs_";
/// Prefix of cookie session tokens (the `vultrino_session` cookie): never accepted as Bearer.
pub const COOKIE_SESSION_PREFIX: &str = "vc_";
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vultrino_session";
/// Header carrying the CSRF token of cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What an `Authorization` header holds. `Debug` never prints the token (it is a live
/// credential of its holder), only its prefix.
#[derive(PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Absent,
    /// `Bearer <token>` (scheme case-sensitive as `Bearer` or `bearer`), the token trimmed.
    Token(&'a str),
    /// Anything else: another scheme, or a value that is not text.
    Malformed,
}

impl std::fmt::Debug for Bearer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bearer::Absent => f.write_str("Absent"),
            Bearer::Malformed => f.write_str("Malformed"),
            Bearer::Token(t) => {
                let prefix = [API_KEY_PREFIX, BEARER_SESSION_PREFIX, COOKIE_SESSION_PREFIX]
                    .into_iter()
                    .find(|p| t.starts_with(p))
                    .unwrap_or("");
                write!(f, "Token({prefix}[redacted])")
            }
        }
    }
}

/// Read the `Authorization` header of a request.
#[inline]
pub fn bearer(headers: &http::HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Ok(value) = value.to_str() else {
        return Bearer::Malformed;
    };
    match value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        Some(token) => Bearer::Token(token.trim()),
        None => Bearer::Malformed,
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
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if !is_key_id(id) || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((id, secret))
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

    #[test]
    fn bearer_tokens_are_read_only_from_the_bearer_scheme() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), Bearer::Absent);
        for (value, want) in [
            ("Bearer vk_x", Bearer::Token("vk_x")),
            ("bearer  vs_y ", Bearer::Token("vs_y")),
            ("Basic dXNlcjpwYXNz", Bearer::Malformed),
            ("vk_x", Bearer::Malformed),
        ] {
            h.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static(value),
            );
            assert_eq!(bearer(&h), want, "{value}");
        }
    }
}
