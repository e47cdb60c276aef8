//! The per-credential policy (which hosts, methods and paths a credential may be sent to, and how
//! often) and the `*` glob used for aliases and role scopes.
//!
//! `allowed_hosts` is required: a credential bound to no host could be sent by an agent to a server
//! it controls, which would hand it the secret. The other fields narrow the credential further.

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};

/// `*` matches any run of characters (including none); no other metacharacters; case-sensitive.
///
/// Linear time: the pattern is split on `*`; the first piece must be a prefix of `text`, the last
/// a suffix, and the pieces in between are found greedily left to right (the leftmost occurrence
/// is always the best choice, as it leaves the most text for the rest). Each piece is found with
/// `str::find` (two-way search, linear), so there is no backtracking blow-up on patterns like
/// `*a*a*a*b`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((head, last)) = pattern.rsplit_once('*') else {
        return pattern == text;
    };
    let (first, middle) = head.split_once('*').unwrap_or((head, ""));
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for piece in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// At most `requests` executes per `per_seconds` with one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// What one credential may be used for. Construct from client input only through
/// [`Policy::validate`]; [`Policy::check`] assumes a validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Required, non-empty: `api.github.com`, `*.example.com`.
    pub allowed_hosts: Vec<String>,
    /// e.g. `["GET", "POST"]`; `None` allows every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// e.g. `["/repos/"]`; `None` allows every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Bounds on a policy's size, so a stored credential cannot be made arbitrarily expensive to check.
pub const MAX_HOSTS: usize = 64;
pub const MAX_METHODS: usize = 16;
pub const MAX_PATH_PREFIXES: usize = 64;
pub const MAX_PATH_PREFIX_LEN: usize = 1024;
pub const MAX_RATE_WINDOW_SECS: u32 = 86_400;

/// Suffixes under which anyone can get a host of their own (multi-label public suffixes and
/// shared hosting platforms). `*.<one of these>` would let an agent send the secret to a server it
/// controls, so it is refused like `*.com`. Not exhaustive: the core carries no public suffix list.
const SHARED_SUFFIXES: &[&str] = &[
    // second-level country registries
    "co.uk",
    "org.uk",
    "me.uk",
    "ltd.uk",
    "plc.uk",
    "net.uk",
    "ac.uk",
    "gov.uk",
    "com.au",
    "net.au",
    "org.au",
    "co.nz",
    "net.nz",
    "org.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "com.br",
    "com.cn",
    "com.tw",
    "com.hk",
    "co.in",
    "co.kr",
    "co.za",
    "com.mx",
    "com.ar",
    "com.tr",
    "com.sg",
    // platforms that hand out subdomains
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "vercel.app",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "web.app",
    "firebaseapp.com",
    "appspot.com",
    "azurewebsites.net",
    "cloudfront.net",
    "blogspot.com",
    "s3.amazonaws.com",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "glitch.me",
    "repl.co",
    "fly.dev",
    "onrender.com",
    "trycloudflare.com",
];

impl Policy {
    /// Validate and normalize at credential creation (and replacement).
    ///
    /// - `allowed_hosts` non-empty (code `allowed_hosts_required`), at most [`MAX_HOSTS`]; each
    ///   host is a bare host name or IP literal: no scheme, path, port, userinfo, query,
    ///   percent-escape or whitespace (code `invalid_host`). Hosts are normalized the way the URL
    ///   parser normalizes request hosts (lowercase, IDNA to punycode, IPv4 in dotted decimal,
    ///   IPv6 in brackets), one trailing dot is dropped, and duplicates are removed.
    /// - `*` may appear only as the whole first label (`*.example.com`, matching any subdomain at
    ///   any depth but not `example.com` itself). The rest must be a domain of at least two labels
    ///   that is not a known shared suffix (`SHARED_SUFFIXES`): `*`, `*.*`, `*.com`,
    ///   `*.co.uk`, `*.github.io` are refused, since they would match hosts anyone can own.
    /// - `methods`, when present: non-empty, at most [`MAX_METHODS`], each an HTTP token,
    ///   uppercased (code `invalid_method`).
    /// - `path_prefixes`, when present: non-empty, at most [`MAX_PATH_PREFIXES`], each starting
    ///   with `/`, without query, fragment, whitespace, control characters or dot segments, and
    ///   normalized like a request path (non-ASCII percent-encoded) (code `invalid_path_prefix`).
    /// - `rate_limit`: `requests >= 1`, `per_seconds` in `1..=86400` (code `invalid_rate_limit`).
    pub fn validate(self) -> Result<Policy> {
        if self.allowed_hosts.is_empty() {
            return Err(Error::bad_request(
                "policy.allowed_hosts must list at least one host this credential may be sent to",
            )
            .with_code(Code::AllowedHostsRequired));
        }
        if self.allowed_hosts.len() > MAX_HOSTS {
            return Err(bad_host(format!("at most {MAX_HOSTS} allowed_hosts")));
        }
        let mut hosts: Vec<String> = Vec::with_capacity(self.allowed_hosts.len());
        for raw in &self.allowed_hosts {
            let host = normalize_host_pattern(raw)?;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }

        let methods = match self.methods {
            None => None,
            Some(list) => Some(validate_methods(list)?),
        };
        let path_prefixes = match self.path_prefixes {
            None => None,
            Some(list) => Some(validate_prefixes(list)?),
        };
        if let Some(rl) = &self.rate_limit {
            if rl.requests == 0 || rl.per_seconds == 0 || rl.per_seconds > MAX_RATE_WINDOW_SECS {
                return Err(Error::bad_request(format!(
                    "rate_limit needs requests >= 1 and per_seconds between 1 and {MAX_RATE_WINDOW_SECS}"
                ))
                .with_code(Code::InvalidRateLimit));
            }
        }
        Ok(Policy {
            allowed_hosts: hosts,
            methods,
            path_prefixes,
            rate_limit: self.rate_limit,
        })
    }

    /// Check one request against the policy.
    ///
    /// `host` is the request's host as the URL parser gives it (lowercase; a trailing dot is
    /// tolerated and ignored), `method` the request method (compared exactly: `get` is not
    /// `GET`, so callers should uppercase standard methods first), `path` the URL parser's
    /// normalized path without query.
    ///
    /// Path prefix `/repos` matches `/repos` and `/repos/x` but not `/reposX`; a prefix ending in
    /// `/` matches by plain prefix. When prefixes are set, a path with a dot segment hidden from
    /// the URL parser (`%2f..%2f`, `%252e%252e`, backslashes) is refused outright: the upstream
    /// might decode it and walk out of the allowed prefix.
    ///
    /// Refusals are `Forbidden` with codes `host_not_allowed`, `method_not_allowed_by_policy`,
    /// `path_not_allowed`. Messages name the host, method or path (not secret), never a query.
    pub fn check(&self, method: &str, host: &str, path: &str) -> Result<()> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if !self.allowed_hosts.iter().any(|p| host_matches(p, host)) {
            return Err(Error::forbidden(format!(
                "host {} is not allowed for this credential",
                clip(host)
            ))
            .with_code(Code::HostNotAllowed));
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m == method) {
                return Err(Error::forbidden(format!(
                    "method {} is not allowed for this credential",
                    clip(method)
                ))
                .with_code(Code::MethodNotAllowedByPolicy));
            }
        }
        if let Some(prefixes) = &self.path_prefixes {
            let path = path.split(['?', '#']).next().unwrap_or_default();
            let allowed =
                !has_hidden_dot_segment(path) && prefixes.iter().any(|p| path_matches(p, path));
            if !allowed {
                return Err(Error::forbidden(format!(
                    "path {} is not allowed for this credential",
                    clip(path)
                ))
                .with_code(Code::PathNotAllowed));
            }
        }
        Ok(())
    }
}

/// Does a validated host pattern match a request host?
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // `sub.` + suffix with a non-empty `sub`: any depth of subdomain, never the bare suffix
        // and never `evil-suffix`.
        Some(suffix) => {
            let Some(split) = host.len().checked_sub(suffix.len() + 1) else {
                return false;
            };
            split > 0
                && host.as_bytes().get(split) == Some(&b'.')
                && host
                    .get(split + 1..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// True when some segment of `path`, after up to three rounds of percent-decoding and treating
/// `\` as `/`, is `.` or `..`.
fn has_hidden_dot_segment(path: &str) -> bool {
    let mut current = path.as_bytes().to_vec();
    for _ in 0..4 {
        let is_dot = |seg: &[u8]| seg == b"." || seg == b"..";
        if current.split(|&b| b == b'/' || b == b'\\').any(is_dot) {
            return true;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    // Still changing after four rounds: nobody encodes a path like that by accident.
    true
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let pair = (
            input.get(i + 1).copied().and_then(hex),
            input.get(i + 2).copied().and_then(hex),
        );
        match (b, pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push(((h << 4) | l) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Keep refusal messages short (a path can be long).
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn bad_host(message: impl Into<String>) -> Error {
    Error::bad_request(message.into()).with_code(Code::InvalidHost)
}

fn normalize_host_pattern(raw: &str) -> Result<String> {
    let shown = clip(raw);
    if raw.is_empty() || raw.len() > 255 {
        return Err(bad_host(
            "allowed_hosts entries must be 1 to 255 characters",
        ));
    }
    if raw.contains("://") {
        return Err(bad_host(format!(
            "allowed host {shown:?} must not have a scheme"
        )));
    }
    if let Some(c) = raw
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || "/?#@%\\".contains(c))
    {
        return Err(bad_host(format!(
            "allowed host {shown:?} must be a bare host name (found {c:?})"
        )));
    }
    let (wildcard, rest) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.contains('*') {
        return Err(bad_host(format!(
            "allowed host {shown:?}: `*` is only allowed as the whole first label (*.example.com)"
        )));
    }
    // A port shows as a colon outside IPv6 brackets.
    let is_bracketed = rest.starts_with('[') && rest.ends_with(']');
    if !is_bracketed && rest.contains(':') {
        return Err(bad_host(format!(
            "allowed host {shown:?} must not have a port"
        )));
    }
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    let host = url::Host::parse(rest)
        .map_err(|_| bad_host(format!("allowed host {shown:?} is not a valid host name")))?;
    match host {
        url::Host::Domain(domain) => {
            if domain.is_empty() || domain.split('.').any(str::is_empty) {
                return Err(bad_host(format!(
                    "allowed host {shown:?} has an empty label"
                )));
            }
            // The URL standard lets `!`, `$`, `'`, `(`, `+`, `=` … through; no host name has
            // them (IDNs arrive here as `xn--` ASCII), so such an entry is a typo to report.
            if let Some(c) = domain
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(bad_host(format!(
                    "allowed host {shown:?} has {c:?}, which no host name has"
                )));
            }
            if wildcard {
                let labels = domain.split('.').count();
                if labels < 2 || SHARED_SUFFIXES.contains(&domain.as_str()) {
                    return Err(bad_host(format!(
                        "allowed host {shown:?} would match hosts anyone can register; \
                         name the hosts or a domain you control (*.example.com)"
                    )));
                }
                Ok(format!("*.{domain}"))
            } else {
                Ok(domain)
            }
        }
        ip if wildcard => Err(bad_host(format!(
            "allowed host {shown:?}: `*.` needs a domain, not the IP address {ip}"
        ))),
        ip => Ok(ip.to_string()),
    }
}

/// `tchar` from RFC 9110: the characters of an HTTP method token.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn bad_method(message: impl Into<String>) -> Error {
    Error::bad_request(message.into()).with_code(Code::InvalidMethod)
}

fn validate_methods(list: Vec<String>) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(bad_method(
            "policy.methods must not be empty (omit it to allow every method)",
        ));
    }
    if list.len() > MAX_METHODS {
        return Err(bad_method(format!("at most {MAX_METHODS} methods")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for m in list {
        if m.is_empty() || m.len() > 32 || !m.chars().all(is_tchar) {
            return Err(bad_method(format!("{:?} is not an HTTP method", clip(&m))));
        }
        let m = m.to_ascii_uppercase();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

fn bad_prefix(message: impl Into<String>) -> Error {
    Error::bad_request(message.into()).with_code(Code::InvalidPathPrefix)
}

fn validate_prefixes(list: Vec<String>) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(bad_prefix(
            "policy.path_prefixes must not be empty (omit it to allow every path)",
        ));
    }
    if list.len() > MAX_PATH_PREFIXES {
        return Err(bad_prefix(format!(
            "at most {MAX_PATH_PREFIXES} path_prefixes"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let shown = clip(&p);
        if !p.starts_with('/') || p.len() > MAX_PATH_PREFIX_LEN {
            return Err(bad_prefix(format!(
                "path prefix {shown:?} must start with / and be at most {MAX_PATH_PREFIX_LEN} bytes"
            )));
        }
        if p.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(bad_prefix(format!(
                "path prefix {shown:?} must not contain whitespace, control characters, ? or #"
            )));
        }
        if has_hidden_dot_segment(&p) {
            return Err(bad_prefix(format!(
                "path prefix {shown:?} must not contain . or .. segments"
            )));
        }
        // Normalize exactly as request paths are normalized, so e.g. a non-ASCII prefix compares
        // equal to the percent-encoded request path. Dot segments were refused above, so this
        // only changes encoding, never which path is meant.
        let normalized = url::Url::parse(&format!("https://policy.invalid{p}"))
            .map(|u| u.path().to_string())
            .map_err(|_| bad_prefix(format!("path prefix {shown:?} is not a valid URL path")))?;
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_examples() {
        assert!(glob_match("github-*", "github-work"));
        assert!(glob_match("github-*", "github-"));
        assert!(!glob_match("github-*", "gitlab-work"));
        assert!(glob_match("*-prod", "db-prod"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(
            !glob_match("ab*ba", "aba"),
            "prefix and suffix must not overlap"
        );
        assert!(!glob_match("Github", "github"), "case-sensitive");
    }

    #[test]
    fn check_messages_never_carry_a_query() {
        let p = Policy {
            allowed_hosts: vec!["api.example.com".into()],
            methods: None,
            path_prefixes: Some(vec!["/repos/".into()]),
            rate_limit: None,
        };
        let err = p
            .check("GET", "api.example.com", "/admin?token=s3cret")
            .err();
        let err = err.map(|e| e.message().to_string()).unwrap_or_default();
        assert!(err.contains("/admin"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
