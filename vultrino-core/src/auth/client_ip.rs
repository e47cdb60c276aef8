//! Which client a request comes from, for login lockouts (where the address comes from, and why
//! the last `X-Forwarded-For` entry: docs/decisions/0009-login-lockout.md).

use std::net::IpAddr;

use bytes::Bytes;
use http::Request;

/// The client's address, put into request extensions by the backend (the peer address locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Where the client address comes from: the configured edge header (`CF-Connecting-IP` on
/// Workers), a trusted `X-Forwarded-For`, or the peer address ([`ClientIp`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientIpRule<'a> {
    /// Header holding the client address, set by a trusted edge.
    pub header: Option<&'a str>,
    /// Trust the last `X-Forwarded-For` entry (only behind a proxy you control).
    pub trust_forwarded_for: bool,
}

impl ClientIpRule<'_> {
    /// The lockout bucket of `req`'s client. IPv6 clients are bucketed by /64 (one customer's
    /// allocation), or rotating addresses would give unlimited attempts; IPv4-mapped addresses
    /// count as their IPv4 address. `unknown` when no address is known.
    pub fn client(&self, req: &Request<Bytes>) -> String {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let from_header = self
            .header
            .and_then(header)
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        // Proxies APPEND the address they saw: only the last entry comes from our proxy; the
        // first is whatever the client wrote.
        let forwarded = || {
            header("x-forwarded-for")?
                .rsplit(',')
                .next()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
        };
        let ip = from_header
            .or_else(|| self.trust_forwarded_for.then(forwarded).flatten())
            .or_else(|| req.extensions().get::<ClientIp>().map(|c| c.0));
        match ip {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_default(),
            Some(ip) => ip.to_string(),
            None => "unknown".into(),
        }
    }
}
