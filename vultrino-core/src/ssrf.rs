//! SSRF guard: decides, without any I/O, whether an outbound URL or address may be contacted.
//!
//! Vultrino sends requests *with secrets attached* on behalf of agents, so an agent that can make
//! it call an internal address can read cloud metadata (instance credentials), internal admin
//! APIs, or anything else behind the firewall. This module is the single place where that is
//! decided; every [`crate::ports::Fetcher`] implementation also calls [`check_ip`] on each
//! address it actually connects to (resolve once, check every address, connect to a checked one).
//!
//! Three layers, each refusing on its own:
//!
//! 1. [`check_url`] — syntax: absolute `http(s)` only, no userinfo, https unless the loopback
//!    opt-in applies, and no odd numeric host spellings (`2130706433`, `0x7f000001`,
//!    `0177.0.0.1`, `127.1`, `0x7f.1`): the `url` crate silently turns those into dotted quads,
//!    which hides intent and has a long history of filter bypasses, so they are refused whatever
//!    they decode to.
//! 2. Host names that are internal by construction are refused without DNS (see
//!    [`classify_name`] for the list).
//! 3. [`classify_ip`] / [`check_ip`] — every address, literal or resolved. Only
//!    [`AddrClass::Public`] passes (plus [`AddrClass::Loopback`] with the test-only opt-in).
//!    IPv6 forms that carry an IPv4 address (mapped, compatible, translated, NAT64, 6to4) are
//!    classified by the IPv4 they carry, so `::ffff:10.0.0.1` is as private as `10.0.0.1`.
//!
//! Error messages name the class of the destination, never the URL (its query may hold secrets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Code, Error, Result};

/// What kind of destination an address is. Only `Public` may be contacted in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, `::1`, and the `localhost` names.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), IPv6 unique-local fc00::/7, site-local fec0::/10.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared space 100.64/10.
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// Cloud instance-metadata endpoints (AWS, GCP, Azure, ECS, EKS, Alibaba, Oracle).
    Metadata,
    /// 0.0.0.0/8 and `::` — "this host", which many stacks route to loopback.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// Everything else that is not global unicast: 240/4, benchmarking 198.18/15, IETF protocol
    /// assignments 192.0.0/24, 2001::/23 (Teredo included), discard 100::/64, unallocated IPv6.
    Reserved,
}

impl AddrClass {
    /// Short human description used in refusal messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::SharedCgnat => "shared address space (CGNAT)",
            AddrClass::Multicast => "multicast",
            AddrClass::Metadata => "link-local/metadata",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "reserved for documentation",
            AddrClass::Reserved => "reserved",
        }
    }

    /// Whether an address of this class may be contacted.
    pub fn is_allowed(self, allow_loopback: bool) -> bool {
        match self {
            AddrClass::Public => true,
            AddrClass::Loopback => allow_loopback,
            _ => false,
        }
    }
}

/// Well-known cloud metadata addresses (IPv4). They sit inside link-local or CGNAT space and would
/// be refused anyway; naming them gives a clearer message and survives future range edits.
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task credentials
    Ipv4Addr::new(169, 254, 170, 23),  // AWS EKS Pod Identity agent
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud
];

/// AWS IMDS over IPv6 (`fd00:ec2::254`) and the EKS Pod Identity agent (`fd00:ec2::23`).
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

/// Classify an address. Pure and total.
pub fn classify_ip(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    use AddrClass::*;
    if METADATA_V4.contains(&ip) {
        return Metadata;
    }
    match ip.octets() {
        [0, ..] => Unspecified,
        [10, ..] => Private,
        [100, b, ..] if b & 0xc0 == 64 => SharedCgnat,
        [127, ..] => Loopback,
        [169, 254, ..] => LinkLocal,
        [172, b, ..] if b & 0xf0 == 16 => Private,
        [192, 0, 0, _] | [192, 88, 99, _] => Reserved,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Documentation,
        [192, 168, ..] => Private,
        [198, b, ..] if b & 0xfe == 18 => Reserved,
        [255, 255, 255, 255] => Broadcast,
        [a, ..] if a >= 240 => Reserved,
        [a, ..] if a >= 224 => Multicast,
        _ => Public,
    }
}

/// The IPv4 address an IPv6 address carries, for the forms where its position is fixed:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 well-known `64:ff9b::a.b.c.d`, and 6to4 `2002:aabb:ccdd::/48`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(last32),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(last32),
        // `::` and `::1` are themselves, not IPv4-compatible forms.
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(last32),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last32),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Local-use NAT64 `64:ff9b:1::/48` (RFC 8215): the operator picks the prefix length, so the IPv4
/// may sit at any RFC 6052 position. Every candidate is classified and the first non-public one
/// wins (the /96 position first, the usual one); since the real embedded address is one of the
/// candidates, an internal target cannot pass. The price: an address passes only when every
/// candidate reads as public, so most local-use NAT64 addresses are refused — acceptable for a
/// network-specific prefix that public APIs are never reached through by name.
fn classify_local_nat64(o: [u8; 16]) -> AddrClass {
    let candidates = [
        [o[12], o[13], o[14], o[15]], // /96
        [o[9], o[10], o[11], o[12]],  // /64
        [o[7], o[9], o[10], o[11]],   // /56
        [o[6], o[7], o[9], o[10]],    // /48
    ];
    candidates
        .into_iter()
        .map(|c| classify_v4(Ipv4Addr::from(c)))
        .find(|class| *class != AddrClass::Public)
        .unwrap_or(AddrClass::Public)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    use AddrClass::*;
    if METADATA_V6.contains(&ip) {
        return Metadata;
    }
    if ip.is_unspecified() {
        return Unspecified;
    }
    if ip.is_loopback() {
        return Loopback;
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    match s {
        [0x64, 0xff9b, 1, ..] => classify_local_nat64(ip.octets()),
        // 2001::/23: IETF protocol assignments, including Teredo 2001::/32 (refused: its client
        // address is obfuscated and its relay is whoever answers), benchmarking and ORCHID.
        [0x2001, b, ..] if b < 0x200 => Reserved,
        [0x2001, 0x0db8, ..] => Documentation,
        [a, ..] if a & 0xfff0 == 0x3ff0 => Documentation, // 3fff::/20
        [0x100, 0, 0, 0, ..] => Reserved,                 // discard-only 100::/64
        [a, ..] if a & 0xfe00 == 0xfc00 => Private,       // unique local fc00::/7
        [a, ..] if a & 0xffc0 == 0xfe80 => LinkLocal,     // fe80::/10
        [a, ..] if a & 0xffc0 == 0xfec0 => Private,       // site-local fec0::/10 (deprecated)
        [a, ..] if a & 0xff00 == 0xff00 => Multicast,     // ff00::/8
        [0x5f00, ..] => Reserved,                         // SRv6 SIDs 5f00::/16
        [a, ..] if a & 0xe000 != 0x2000 => Reserved,      // outside global unicast 2000::/3
        _ => Public,
    }
}

fn blocked(class: AddrClass) -> Error {
    Error::forbidden(format!("destination address is {}", class.describe()))
        .with_code(Code::SsrfBlocked)
}

/// Ok if the address may be contacted: [`AddrClass::Public`], or [`AddrClass::Loopback`] when
/// `allow_loopback` is set (tests only). Anything else is `Forbidden` with code `ssrf_blocked`.
pub fn check_ip(ip: IpAddr, allow_loopback: bool) -> Result<()> {
    let class = classify_ip(ip);
    if class.is_allowed(allow_loopback) {
        Ok(())
    } else {
        Err(blocked(class))
    }
}

/// How a host *name* is treated before any DNS lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    /// An ordinary DNS name; its resolved addresses decide.
    Resolvable,
    /// A name that always means this machine (allowed only with the loopback opt-in).
    Loopback,
    /// A name that only has meaning inside a private network; always refused.
    Internal,
}

/// Suffixes of names that are private by definition (RFC 6761, RFC 6762 appendix G, RFC 8375,
/// ICANN name-collision list, cloud-internal zones). Matched as whole trailing labels.
const INTERNAL_SUFFIXES: [&str; 9] = [
    "internal",    // metadata.google.internal, *.ec2.internal, *.compute.internal
    "local",       // mDNS, Kubernetes *.svc.cluster.local
    "localdomain", // distribution default domain
    "arpa",        // home.arpa and reverse-lookup zones
    "lan",
    "intranet",
    "corp",
    "home",
    "private",
];

/// Classify a host name (lowercase, no trailing dot, not an IP literal) without DNS:
///
/// - **Loopback**: `localhost`, `*.localhost` (RFC 6761), `localhost.localdomain`,
///   `ip6-localhost`, `ip6-loopback`.
/// - **Internal**: every single-label name (`metadata`, `instance-data`, `kubernetes`, … — they
///   resolve through local search domains, never to a public API), and any name under `.internal`
///   (`metadata.google.internal`, `instance-data.ec2.internal`), `.local`, `.localdomain`,
///   `.arpa` (incl. `home.arpa`), `.lan`, `.intranet`, `.corp`, `.home`, `.private`.
/// - **Resolvable**: everything else.
pub fn classify_name(host: &str) -> NameClass {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let last = host.rsplit('.').next().unwrap_or("");
    if host == "localhost"
        || last == "localhost"
        || host == "localhost.localdomain"
        || host == "ip6-localhost"
        || host == "ip6-loopback"
    {
        return NameClass::Loopback;
    }
    if !host.contains('.') || INTERNAL_SUFFIXES.contains(&last) {
        return NameClass::Internal;
    }
    NameClass::Resolvable
}

/// Refuse a host name by [`classify_name`] alone (used again by resolvers, as defence in depth).
pub fn check_name(host: &str, allow_loopback: bool) -> Result<()> {
    match classify_name(host) {
        NameClass::Resolvable => Ok(()),
        NameClass::Loopback if allow_loopback => Ok(()),
        NameClass::Loopback => Err(blocked(AddrClass::Loopback)),
        NameClass::Internal => {
            Err(Error::forbidden("destination host name is internal-only")
                .with_code(Code::SsrfBlocked))
        }
    }
}

/// A checked outbound target, produced only by [`check_url`].
#[derive(Debug, Clone)]
pub struct Target {
    /// The parsed, normalized URL; fetch exactly this.
    pub url: url::Url,
    /// Lowercase, no trailing dot, IPv6 without brackets.
    pub host: String,
    /// Set when the host is an IP literal.
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub https: bool,
}

impl Target {
    /// This target with `url` in its place, when `url` has the same scheme, host and port and
    /// no user credentials — only its path, query or fragment differ, so what [`check_url`]
    /// found of this target holds for it (the pass-through proxy checks a credential's base URL
    /// once and joins each request's path to it). Any other URL gets the full [`check_url`].
    pub fn same_origin(&self, url: url::Url, allow_loopback: bool) -> Result<Target> {
        let same = url.scheme() == self.url.scheme()
            && url.host() == self.url.host()
            && url.port_or_known_default() == Some(self.port)
            && url.username().is_empty()
            && url.password().is_none();
        if !same {
            return check_url(url.as_str(), allow_loopback);
        }
        Ok(Target {
            url,
            host: self.host.clone(),
            ip: self.ip,
            port: self.port,
            https: self.https,
        })
    }
}

fn invalid(message: &'static str) -> Error {
    Error::bad_request(message).with_code(Code::InvalidUrl)
}

fn non_canonical() -> Error {
    Error::forbidden("non-canonical numeric host").with_code(Code::SsrfBlocked)
}

/// A label the WHATWG IPv4 parser would read as a number: decimal, `0x` hex, or octal.
fn is_numeric_label(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The host exactly as written in `rest` (the text after `scheme://`), port and brackets kept.
fn raw_host(rest: &str) -> Result<&str> {
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(invalid("URL must not contain user credentials"));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "URL host contains whitespace or control characters",
        ));
    }
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => &authority[..=i],
            None => return Err(invalid("URL has an unterminated IPv6 host")),
        }
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(invalid("URL has no host"));
    }
    Ok(host)
}

/// What `v4.to_string()` gives (`127.0.0.1`), without the formatting machinery (~1.3 k
/// instructions a call, on every execute to an IP literal; docs/decisions/0113).
fn dotted_quad(v4: Ipv4Addr) -> String {
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

/// Parse and check an outbound URL before any fetch. A pure function of its two arguments,
/// which [`check_url_cached`] relies on: a new input (a setting, a list, the clock) must join
/// that function's key.
///
/// - Absolute `http`/`https` only; anything else → `BadRequest` (`invalid_url`), as are user
///   credentials in the URL, a missing host, and tab/CR/LF anywhere.
/// - Odd numeric hosts (decimal, hex, octal, short or mixed IPv4 forms) → `Forbidden`
///   (`ssrf_blocked`, "non-canonical numeric host"), whatever they decode to.
/// - IP literals → [`check_ip`]; names → [`check_name`] (resolved addresses are the fetcher's job).
/// - `http` only with `allow_loopback` and a loopback host; otherwise `Forbidden`
///   (`https_required`). The address check runs first, so a loopback target without the opt-in
///   reports `ssrf_blocked`.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<Target> {
    let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
    if raw.contains(['\t', '\r', '\n']) {
        return Err(invalid("URL contains tab or newline characters"));
    }
    // Require the literal `scheme://` prefix: the url crate also accepts `http:host` and
    // `http:\\host`, and we must know exactly where the raw host text is.
    let lower_prefix = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    let rest = if lower_prefix.starts_with("https://") {
        &raw[8..]
    } else if lower_prefix.starts_with("http://") {
        &raw[7..]
    } else {
        return Err(invalid("URL must be absolute and use http or https"));
    };
    let written_host = raw_host(rest)?;

    let url = url::Url::parse(raw).map_err(|_| invalid("URL is malformed"))?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(invalid("URL must be absolute and use http or https")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("URL must not contain user credentials"));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("URL has no port"))?;

    let (host, ip, loopback) = match url.host() {
        None => return Err(invalid("URL has no host")),
        Some(url::Host::Ipv4(v4)) => {
            // Only the plain dotted quad is accepted; `url` would have decoded any other form.
            let dotted = dotted_quad(v4);
            if !written_host.eq_ignore_ascii_case(&dotted) {
                return Err(non_canonical());
            }
            let ip = IpAddr::V4(v4);
            check_ip(ip, allow_loopback)?;
            (dotted, Some(ip), classify_ip(ip) == AddrClass::Loopback)
        }
        Some(url::Host::Ipv6(v6)) => {
            if !written_host.starts_with('[') {
                return Err(non_canonical());
            }
            let ip = IpAddr::V6(v6);
            check_ip(ip, allow_loopback)?;
            (
                v6.to_string(),
                Some(ip),
                classify_ip(ip) == AddrClass::Loopback,
            )
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                return Err(invalid("URL has no host"));
            }
            // The url crate turns numeric-looking names into IPv4 or rejects them; if one ever
            // got through as a name, the OS resolver might still read it as a number.
            if name.rsplit('.').next().is_some_and(is_numeric_label) {
                return Err(non_canonical());
            }
            check_name(&name, allow_loopback)?;
            let loopback = classify_name(&name) == NameClass::Loopback;
            (name, None, loopback)
        }
    };

    let plain_http_allowed = allow_loopback && loopback;
    if !https && !plain_http_allowed {
        return Err(Error::forbidden("upstream URL must use https").with_code(Code::HttpsRequired));
    }
    Ok(Target {
        url,
        host,
        ip,
        port,
        https,
    })
}

/// Longest URL whose check [`check_url_cached`] remembers (longer ones are checked each time).
const CACHED_URL_MAX: usize = 2048;
/// Most checks remembered for each value of `allow_loopback`; when full, the memory is emptied
/// and fills again (bounded, whatever URLs callers send: a few MiB at most).
const CACHED_URLS_MAX: usize = 256;

/// Remembered checks by `allow_loopback` (index 1 when allowed), keyed by the caller's scope, a
/// newline, then the URL's text. Ordered maps, not hashed: no key, however chosen, makes a
/// look-up slower than the ~8 comparisons of a 256-entry tree (std's hasher is not keyed from a
/// random source on wasm32, where the worker runs; review of 0129's URL check, L2).
type CheckedUrls = [std::collections::BTreeMap<Box<str>, Target>; 2];

static CHECKED_URLS: std::sync::Mutex<CheckedUrls> = std::sync::Mutex::new([
    std::collections::BTreeMap::new(),
    std::collections::BTreeMap::new(),
]);

fn checked_urls() -> std::sync::MutexGuard<'static, CheckedUrls> {
    CHECKED_URLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`check_url`], with its successful results remembered for the caller `scope` (an execute
/// passes its principal's actor, `key:<id>`): `check_url` is a pure function of the URL's text
/// and `allow_loopback` (no lookup: names are resolved by the fetcher, which checks the
/// addresses), so a URL the same caller had checked before gets the same [`Target`] without
/// being parsed again. An execute checks the URL of every request, and a caller sends the same
/// URLs again and again: the parse was ~7 % of an execute's instructions (decision 0129).
///
/// - Per caller: whether a look-up hit tells only what the same caller sent before, never what
///   another principal fetched (a timing probe; review of 0129's URL check, L1).
/// - Not remembered: refusals (checked again each time), URLs longer than [`CACHED_URL_MAX`],
///   and URLs that carry an agent key (`vk_…`/`vt_…`, refused later anyway: their text is not
///   kept past the request; review, I1).
/// - The memory is the process's, shared by every `App` in it: the answer depends on nothing an
///   `App` holds. A new input to [`check_url`] must join this function's key (review, I2).
pub fn check_url_cached(raw: &str, allow_loopback: bool, scope: &str) -> Result<Target> {
    if raw.len() > CACHED_URL_MAX || crate::agent_key::carries_agent_key(raw.as_bytes()) {
        return check_url(raw, allow_loopback);
    }
    let slot = usize::from(allow_loopback);
    let key = [scope, "\n", raw].concat();
    if let Some(target) = checked_urls()[slot].get(key.as_str()) {
        return Ok(target.clone());
    }
    let target = check_url(raw, allow_loopback)?;
    let mut checked = checked_urls();
    let map = &mut checked[slot];
    if map.len() >= CACHED_URLS_MAX {
        map.clear();
    }
    map.insert(key.into(), target.clone());
    Ok(target)
}

/// Whether [`check_url_cached`] holds `raw` for `scope` (tests).
#[cfg(test)]
pub(crate) fn url_check_held(raw: &str, allow_loopback: bool, scope: &str) -> bool {
    checked_urls()[usize::from(allow_loopback)].contains_key([scope, "\n", raw].concat().as_str())
}

/// How many checks [`check_url_cached`] holds for `allow_loopback` (tests: the bound).
#[cfg(test)]
pub(crate) fn cached_urls(allow_loopback: bool) -> usize {
    checked_urls()[usize::from(allow_loopback)].len()
}

/// Check an already-built request URI without re-parsing it as a URL: the fetcher's cheap,
/// defence-in-depth re-check of what the core hands it (the core ran [`check_url`] first).
///
/// - `http`/`https` with a host, no user credentials; otherwise `BadRequest` (`invalid_url`).
/// - An IP-literal host (what a connector dials without any lookup) → [`check_ip`].
/// - A name → refused if its last label is numeric (an OS resolver may read it as a number),
///   then [`check_name`]; the addresses it resolves to are the resolver's to check.
/// - `http` only with `allow_loopback` and a loopback host (`https_required` otherwise).
pub fn check_uri(uri: &http::Uri, allow_loopback: bool) -> Result<()> {
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(invalid("URL must be absolute and use http or https")),
    };
    let authority = uri.authority().ok_or_else(|| invalid("URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("URL must not contain user credentials"));
    }
    let host = authority.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = if let Ok(ip) = bare.parse::<IpAddr>() {
        check_ip(ip, allow_loopback)?;
        classify_ip(ip) == AddrClass::Loopback
    } else {
        let name = bare.trim_end_matches('.');
        if name.is_empty() {
            return Err(invalid("URL has no host"));
        }
        if name.rsplit('.').next().is_some_and(is_numeric_label) {
            return Err(non_canonical());
        }
        check_name(name, allow_loopback)?;
        classify_name(name) == NameClass::Loopback
    };
    let plain_http_allowed = allow_loopback && loopback;
    if !https && !plain_http_allowed {
        return Err(Error::forbidden("upstream URL must use https").with_code(Code::HttpsRequired));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
