//! The tokens callers present, as text: their prefixes, the `Authorization: Bearer` parser, the
//! API key format, the session token format and the session cookie.

/// Prefix of agent API keys (`vk_<id>_<secret>`).
pub const API_KEY_PREFIX: &str = "vk_";
/// Prefix of agent tokens (`vt_<id>_<secret>`): short-lived subsets of an API key, accepted
/// wherever an API key is (`auth::tokens`).
pub const AGENT_TOKEN_PREFIX: &str = "vt_";
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
                let prefix = [
                    API_KEY_PREFIX,
                    AGENT_TOKEN_PREFIX,
                    BEARER_SESSION_PREFIX,
                    COOKIE_SESSION_PREFIX,
                ]
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

/// Whether `token` is an agent's credential: an API key (`vk_…`) or an agent token (`vt_…`).
pub fn is_agent_credential(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX) || token.starts_with(AGENT_TOKEN_PREFIX)
}

/// Split `vt_<id>_<secret>` into id and secret (the id has the form of a key id,
/// [`is_key_id`]).
pub fn parse_agent_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(AGENT_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if !is_key_id(id) || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((id, secret))
}

/// Length of the random part of a session token, in bytes.
pub const SESSION_RANDOM_LEN: usize = 32;
/// Length of a session token's tag, in bytes (a full HMAC-SHA256).
pub const SESSION_TAG_LEN: usize = 32;
/// base64url (no padding) length of 32 bytes.
const B64_32_LEN: usize = 43;

/// A session token taken apart: `vs_<random>.<generation>.<tag>` (or `vc_…`), where `random` is
/// 32 random bytes and `tag` a 32-byte MAC, both base64url without padding, and `generation` the
/// sign-out generation the token was issued under, in decimal. Checking the tag is the session
/// module's job; this is only the text format. `Debug` prints the generation only.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub random: [u8; SESSION_RANDOM_LEN],
    pub generation: u32,
    pub tag: [u8; SESSION_TAG_LEN],
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SessionToken {
    /// The token as text, with `prefix` ([`BEARER_SESSION_PREFIX`] or [`COOKIE_SESSION_PREFIX`]).
    pub fn format(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}.{}.{}",
            crate::crypto::b64url(&self.random),
            self.generation,
            crate::crypto::b64url(&self.tag)
        )
    }

    /// Parse a token written by [`SessionToken::format`] with `prefix`. Only that exact form is
    /// accepted (canonical base64url of the right lengths, a decimal generation without leading
    /// zeros), so one token has one spelling; anything else — tokens of versions before tagged
    /// tokens included — is `None`.
    pub fn parse(token: &str, prefix: &str) -> Option<SessionToken> {
        let mut parts = token.strip_prefix(prefix)?.split('.');
        let (random, generation, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let canonical_number = !generation.is_empty()
            && generation.len() <= 10
            && generation.bytes().all(|b| b.is_ascii_digit())
            && (generation == "0" || !generation.starts_with('0'));
        if !canonical_number {
            return None;
        }
        Some(SessionToken {
            random: decode_32(random)?,
            generation: generation.parse().ok()?,
            tag: decode_32(tag)?,
        })
    }
}

/// Canonical unpadded base64url of exactly 32 bytes.
fn decode_32(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    if text.len() != B64_32_LEN {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?
        .try_into()
        .ok()
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
    fn agent_tokens_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_agent_token("vt_0123456789abcdef_secretpart"),
            Some(("0123456789abcdef", "secretpart"))
        );
        for bad in [
            "vt_0123456789abcdef_",
            "vt_0123456789ABCDEF_x",
            "vk_0123456789abcdef_x",
            "vt_short_x",
        ] {
            assert_eq!(parse_agent_token(bad), None, "{bad}");
        }
        assert!(is_agent_credential("vt_x") && is_agent_credential("vk_x"));
        assert!(!is_agent_credential("vs_x"));
        let shown = format!("{:?}", Bearer::Token("vt_0123456789abcdef_secretpart"));
        assert!(!shown.contains("secretpart"), "{shown}");
    }

    #[test]
    fn session_tokens_parse_only_in_their_exact_form() {
        let t = SessionToken {
            random: [7; 32],
            generation: 42,
            tag: [9; 32],
        };
        let text = t.format(BEARER_SESSION_PREFIX);
        assert_eq!(
            SessionToken::parse(&text, BEARER_SESSION_PREFIX),
            Some(t.clone())
        );
        assert_eq!(
            SessionToken::parse(&text, COOKIE_SESSION_PREFIX),
            None,
            "the prefix is part of the format"
        );
        let (random, tag) = (
            crate::crypto::b64url(&[7; 32]),
            crate::crypto::b64url(&[9; 32]),
        );
        for bad in [
            // A token of the versions before tagged tokens.
            format!("vs_{random}"),
            format!("vs_{random}.42"),
            format!("vs_{random}.042.{tag}"),
            format!("vs_{random}.+42.{tag}"),
            format!("vs_{random}.4294967296.{tag}"),
            format!("vs_{random}..{tag}"),
            format!("vs_{random}.42.{tag}."),
            format!("vs_{random}.42.{tag}="),
            format!("vs_{random}.42.{}", &tag[1..]),
            // Non-canonical trailing bits ('B' sets a bit past the 32nd byte).
            format!("vs_{random}.42.{}B", &tag[..42]),
            // Not the base64url alphabet.
            format!("vs_{}/.42.{tag}", &random[..42]),
            format!("vs_ {random}.42.{tag}"),
        ] {
            assert_eq!(
                SessionToken::parse(&bad, BEARER_SESSION_PREFIX),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            SessionToken::parse(
                &format!("vs_{random}.4294967295.{tag}"),
                BEARER_SESSION_PREFIX
            )
            .map(|t| t.generation),
            Some(u32::MAX)
        );
        let debug = format!("{t:?}");
        assert!(
            !debug.contains(&random) && !debug.contains(&tag) && !debug.contains("7, 7"),
            "{debug}"
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
