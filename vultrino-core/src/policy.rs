//! The per-credential policy (which hosts, methods and paths a credential may be sent to, and how
//! often) and the `*` glob used for aliases and role scopes.
//!
//! `allowed_hosts` is required: a credential bound to no host could be sent by an agent to a server
//! it controls, which would hand it the secret. The other fields narrow the credential further.
//!
//! [`Policy::widening`] says whether a new policy lets through anything the old one refused
//! (changing a policy that way needs `admin`, docs/decisions/0050-policy-widening-needs-admin.md).

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::public_suffix::suffix_len;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// What one credential may be used for. Construct from client input only through
/// [`Policy::validate`]; [`Policy::check`] assumes a validated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Pass the upstream's `Set-Cookie` and `Set-Cookie2` reply headers to the agent (scrubbed
    /// like every header). Off by default: a session cookie the upstream sets after an
    /// authenticated request is a credential of its own, usable without Vultrino
    /// (docs/decisions/0052-upstream-cookies-dropped-by-default.md). Not written when off, so a
    /// record without it reads as off, and records that never turned it on stay readable by
    /// earlier versions.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pass_cookies: bool,
    /// A person approves a request before it runs: `always` (every method) or `writes` (every
    /// method but GET, HEAD, OPTIONS); `None`, never (docs/decisions/0090-approvals.md). Not
    /// written when unset, so earlier records read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<RequireApproval>,
}

/// [`Policy::require_approval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequireApproval {
    /// Every request.
    Always,
    /// Every request whose method is not GET, HEAD or OPTIONS.
    Writes,
}

impl RequireApproval {
    /// How much it asks for: dropping or lowering it widens the policy.
    fn rank(this: Option<RequireApproval>) -> u8 {
        match this {
            None => 0,
            Some(RequireApproval::Writes) => 1,
            Some(RequireApproval::Always) => 2,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Bounds on a policy's size, so a stored credential cannot be made arbitrarily expensive to check.
pub const MAX_HOSTS: usize = 64;
pub const MAX_METHODS: usize = 16;
pub const MAX_PATH_PREFIXES: usize = 64;
pub const MAX_PATH_PREFIX_LEN: usize = 1024;
pub const MAX_RATE_WINDOW_SECS: u32 = 86_400;

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
    ///   that is not a public suffix of the Public Suffix List, private section included, and
    ///   that has no `*.` rule right under it: `*`, `*.*`, `*.com`, `*.co.uk`, `*.github.io`,
    ///   `*.cloudfunctions.net`, `*.run.app` are refused, since they would match hosts anyone can
    ///   own. A public suffix further down (`s3.amazonaws.com` under `*.amazonaws.com`) is
    ///   handled when matching: see [`Policy::check`].
    /// - `methods`, when present: non-empty, at most [`MAX_METHODS`], each an HTTP token,
    ///   uppercased (code `invalid_method`).
    /// - `path_prefixes`, when present: non-empty, at most [`MAX_PATH_PREFIXES`], each starting
    ///   with `/`, without query, fragment, whitespace, control characters, or anything a request
    ///   path is refused for (dot segments, also hidden by encoding or `;` parameters, and
    ///   encoded dots: see [`Policy::check`]), and normalized like a request path (non-ASCII
    ///   percent-encoded) (code `invalid_path_prefix`).
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
            pass_cookies: self.pass_cookies,
            require_approval: self.require_approval,
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
    /// `/` matches by plain prefix. When prefixes are set, a path an upstream could resolve
    /// differently is refused outright (docs/decisions/0051-the-upstream-acts-on-what-the-policy-checked.md):
    /// a segment that is only dots once its `;` parameters are cut (`..;x`, `.;`, `...`, which
    /// Tomcat, Jetty and Spring read as `..` or `.`), also after up to three rounds of
    /// percent-decoding and with `\` read as `/` (`%2f..%2f`, `%252e%252e`, `..%3b`), also with
    /// what NFKC turns into dots and slashes (`‥`, `..／`), and any percent-encoded dot (`%2e`,
    /// `%2E`, `%252e`, in any segment) or overlong UTF-8 form of an ASCII character (`%c0%ae`):
    /// rather than guess how the upstream decodes, such a path is not sent.
    ///
    /// A wildcard `*.example.com` matches a host below `example.com` only when the host's public
    /// suffix is that of `example.com`: `*.amazonaws.com` does not match
    /// `bucket.s3.amazonaws.com`, whose registrable domain (anyone's) is under the public suffix
    /// `s3.amazonaws.com`.
    ///
    /// Refusals are `Forbidden` with codes `host_not_allowed`, `method_not_allowed_by_policy`,
    /// `path_not_allowed`. Messages name the host, method or path (not secret), never a query.
    /// Whether `host` (as the URL parser gives it) is one of the allowed hosts: the host part of
    /// [`Policy::check`] alone.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.allowed_hosts.iter().any(|p| host_matches(p, host))
    }

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
            if is_ambiguous_path(path) {
                return Err(Error::forbidden(format!(
                    "path {} is not allowed for this credential: it has a dot segment hidden by \
                     encoding or `;` parameters, or an encoded dot, which the upstream may \
                     resolve outside the allowed path prefixes",
                    clip(path)
                ))
                .with_code(Code::PathNotAllowed));
            }
            if !prefixes.iter().any(|p| path_matches(p, path)) {
                return Err(Error::forbidden(format!(
                    "path {} is not allowed for this credential",
                    clip(path)
                ))
                .with_code(Code::PathNotAllowed));
            }
        }
        Ok(())
    }

    /// What `new` lets through that `self` refused, if anything: `None` when `new` is as narrow
    /// as `self` or narrower. Both policies are validated ones. Widening is
    /// (docs/decisions/0050-policy-widening-needs-admin.md):
    ///
    /// - a host pattern that no old pattern covers (a host added, `a.example.com` turned into
    ///   `*.example.com` …);
    /// - the method list removed, or a method added;
    /// - the path prefix list removed, or a prefix that no old prefix covers (added, shortened);
    /// - the rate limit removed, or one that lets more requests through: see
    ///   [`RateLimit::admits_more_than`];
    /// - `pass_cookies` turned on.
    pub fn widening(&self, new: &Policy) -> Option<&'static str> {
        if new
            .allowed_hosts
            .iter()
            .any(|h| !self.allowed_hosts.iter().any(|old| pattern_covers(old, h)))
        {
            return Some("allows another host");
        }
        if let Some(old) = &self.methods {
            match &new.methods {
                None => return Some("allows every method"),
                Some(new) if new.iter().any(|m| !old.contains(m)) => {
                    return Some("allows another method")
                }
                Some(_) => {}
            }
        }
        if let Some(old) = &self.path_prefixes {
            match &new.path_prefixes {
                None => return Some("allows every path"),
                Some(new) if new.iter().any(|p| !old.iter().any(|q| path_matches(q, p))) => {
                    return Some("allows other paths")
                }
                Some(_) => {}
            }
        }
        if let Some(old) = &self.rate_limit {
            match &new.rate_limit {
                None => return Some("removes the rate limit"),
                Some(new) if new.admits_more_than(old) => {
                    return Some("lets more requests through the rate limit")
                }
                Some(_) => {}
            }
        }
        if new.pass_cookies && !self.pass_cookies {
            return Some("passes the upstream's cookies to the agent");
        }
        if RequireApproval::rank(new.require_approval)
            < RequireApproval::rank(self.require_approval)
        {
            return Some("asks a person's approval for fewer requests");
        }
        None
    }

    /// Whether [`Policy::widening`] finds anything.
    pub fn widens(&self, new: &Policy) -> bool {
        self.widening(new).is_some()
    }
}

impl RateLimit {
    /// Whether this limit lets through some stream of requests that `old` would refuse: whether
    /// the requests it lets through, sent alone, could ever be refused by `old`.
    ///
    /// The limiter (`ports::session_rules::hit`) opens a window of `per_seconds` at the first
    /// request after the previous window ended, and lets `requests` through in each. With the
    /// same window, a window opens at the same requests under both limits, so only `requests`
    /// counts. With another window, one old window (a span of `old.per_seconds`) can meet up to
    /// `k = ceil((old window - 1 ms) / new window) + 1` new windows, each letting `requests`
    /// through; the new limit is no wider only when `k × requests <= old.requests`. So a longer
    /// window with the same count widens (two bursts, one either side of a window's end, fit in
    /// one old window), and a longer window narrows only with at most half the requests.
    pub fn admits_more_than(&self, old: &RateLimit) -> bool {
        if self.per_seconds == old.per_seconds {
            return self.requests > old.requests;
        }
        let old_ms = u64::from(old.per_seconds) * 1000;
        let new_ms = u64::from(self.per_seconds).max(1) * 1000;
        let windows = (old_ms.saturating_sub(1)).div_ceil(new_ms) + 1;
        u64::from(self.requests).saturating_mul(windows) > u64::from(old.requests)
    }
}

/// Does a validated host pattern match a request host?
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => wildcard_matches(domain, host),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Does `*.domain` match `host`? `sub.` + `domain` with a non-empty `sub`: any depth of
/// subdomain, never the bare domain and never `evil-domain`; and `host` must have the public
/// suffix of `domain` (the same registrable domain), so that no public suffix under `domain`
/// (`s3.amazonaws.com` under `amazonaws.com`) hands the match to whoever registers below it.
/// A `domain` that is itself a public suffix matches nothing: validation refuses such a
/// pattern, and one stored before (or before the list named that suffix) fails closed.
fn wildcard_matches(domain: &str, host: &str) -> bool {
    let Some(split) = host.len().checked_sub(domain.len() + 1) else {
        return false;
    };
    if !(split > 0
        && host.as_bytes().get(split) == Some(&b'.')
        && host
            .get(split + 1..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(domain)))
    {
        return false;
    }
    let domain_suffix = suffix_len(domain);
    domain_suffix < domain.len() && suffix_len(&host.to_ascii_lowercase()) == domain_suffix
}

/// Does old host pattern `old` allow every host that `new` allows?
fn pattern_covers(old: &str, new: &str) -> bool {
    match (old.strip_prefix("*."), new.strip_prefix("*.")) {
        (None, _) => old == new,
        (Some(d), None) => wildcard_matches(d, new),
        // `*.e` allows hosts under `e` with `e`'s public suffix; `*.d` allows them when `e` is
        // `d`, or under it with the same public suffix and `d` not a public suffix itself (a
        // `*.d` stored before validation refused it matches nothing, see `wildcard_matches`).
        (Some(d), Some(e)) => {
            e == d
                || (e.len() > d.len() + 1
                    && e.ends_with(d)
                    && e.as_bytes().get(e.len() - d.len() - 1) == Some(&b'.')
                    && suffix_len(d) < d.len()
                    && suffix_len(e) == suffix_len(d))
        }
    }
}

/// Is `*.domain` a pattern over hosts anyone can register? When `domain` is itself a public
/// suffix (`co.uk`, `github.io`, `cloudfunctions.net`), or a `*.` rule of the list sits right
/// under it (`*.run.app`: every `x.run.app` is a public suffix).
fn is_open_to_anyone(domain: &str) -> bool {
    if suffix_len(domain) >= domain.len() {
        return true;
    }
    let probe = format!("vultrino-probe.{domain}");
    suffix_len(&probe) >= probe.len()
}

pub(crate) fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// True when an upstream could read `path` otherwise than the policy does: some segment is only
/// dots once cut at its first `;` (path parameters) or NUL and stripped of trailing blanks
/// (`.`, `..`, `...`, `..;x`, `.;`), or the path holds a percent-encoded dot or an overlong UTF-8
/// form of an ASCII character (`%c0%ae`: `.` to old IIS and Tomcat) — checked on the path as
/// given and after each of up to three rounds of percent-decoding, with `\` read as `/`. What
/// Unicode normalization (NFKC) turns into dots or slashes counts as such: the dot look-alikes
/// (U+FF0E, U+FE52, U+2024), the dot leaders (U+2025 `..`, U+2026 `...`) and the full-width and
/// small solidi (U+FF0F `/`, U+FF3C and U+FE68 `\`).
pub(crate) fn is_ambiguous_path(path: &str) -> bool {
    // Without `%`, `.` or a non-ASCII byte none of the checks below can hit and decoding
    // changes nothing: the usual API path is answered without a copy (docs/decisions/0113).
    if !path
        .bytes()
        .any(|b| b == b'%' || b == b'.' || !b.is_ascii())
    {
        return false;
    }
    ambiguous_in_rounds(path)
}

/// [`is_ambiguous_path`] without its shortcut: the checks on the path as given and after each
/// round of percent-decoding.
fn ambiguous_in_rounds(path: &str) -> bool {
    let mut current = path.as_bytes().to_vec();
    for _ in 0..4 {
        if has_encoded_dot(&current) || has_overlong_ascii(&current) || has_dot_segment(&current) {
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

/// `%2e` or `%2E`.
fn has_encoded_dot(path: &[u8]) -> bool {
    path.windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'))
}

/// An overlong UTF-8 sequence (never valid UTF-8) that decodes to an ASCII character: 2 bytes
/// `C0`/`C1`, 3 bytes `E0 80`/`E0 81`, 4 bytes `F0 80 80`/`F0 80 81`, each with its continuation.
fn has_overlong_ascii(path: &[u8]) -> bool {
    let cont = |i: usize| path.get(i).is_some_and(|&b| b & 0xC0 == 0x80);
    let at = |i: usize| path.get(i).copied().unwrap_or(0);
    (0..path.len()).any(|i| match path[i] {
        0xC0 | 0xC1 => cont(i + 1),
        0xE0 => matches!(at(i + 1), 0x80 | 0x81) && cont(i + 2),
        0xF0 => at(i + 1) == 0x80 && matches!(at(i + 2), 0x80 | 0x81) && cont(i + 3),
        _ => false,
    })
}

/// Some segment is a dot segment ([`is_dot_segment`]), with `/`, `\` and the solidi NFKC turns
/// into them as separators.
fn has_dot_segment(path: &[u8]) -> bool {
    String::from_utf8_lossy(path)
        .split(['/', '\\', '\u{FF0F}', '\u{FF3C}', '\u{FE68}'])
        .any(is_dot_segment)
}

/// A segment that is only dots (or what NFKC turns into dots) before its first `;` or NUL,
/// trailing blanks aside.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split([';', '\0']).next().unwrap_or_default();
    let text = name.trim_end_matches([' ', '\t']);
    !text.is_empty()
        && text.chars().all(|c| {
            matches!(
                c,
                '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' | '\u{2025}' | '\u{2026}'
            )
        })
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
                if labels < 2 || is_open_to_anyone(&domain) {
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

pub(crate) fn validate_methods(list: Vec<String>) -> Result<Vec<String>> {
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

pub(crate) fn validate_prefixes(list: Vec<String>) -> Result<Vec<String>> {
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
        if is_ambiguous_path(&p) {
            return Err(bad_prefix(format!(
                "path prefix {shown:?} must not contain dot segments (also encoded or with ; \
                 parameters) or encoded dots"
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

    proptest::proptest! {
        /// The shortcut of `is_ambiguous_path` (no `%`, `.` or non-ASCII byte: not ambiguous)
        /// answers as the full checks do, on paths made of the characters they look at.
        #[test]
        fn the_shortcut_answers_as_the_full_checks(
            path in r"[a-z/%.2eEcC0;\\‥． ]{0,16}"
        ) {
            proptest::prop_assert_eq!(is_ambiguous_path(&path), ambiguous_in_rounds(&path));
        }
    }

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
            pass_cookies: false,
            require_approval: None,
        };
        let err = p
            .check("GET", "api.example.com", "/admin?token=s3cret")
            .err();
        let err = err.map(|e| e.message().to_string()).unwrap_or_default();
        assert!(err.contains("/admin"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
