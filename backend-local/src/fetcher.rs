//! The outbound HTTP client of the local backend: [`HttpFetcher`], a [`Fetcher`] on reqwest.
//!
//! What it guarantees (the [`Fetcher`] contract, plus SSRF defence in depth):
//!
//! - **Connect only to checked addresses.** reqwest is given a custom resolver that resolves each
//!   name once, checks *every* resolved address with [`ssrf::check_ip`] (one bad address refuses
//!   the whole name — a name that resolves to both a public and an internal address is hostile),
//!   and hands back exactly the addresses it checked. The connection therefore goes to an address
//!   that was checked, with no second lookup in between (no DNS-rebinding window).
//! - **IP literals** never reach a resolver (hyper connects to them directly), so [`HttpFetcher::fetch`]
//!   runs [`ssrf::check_url`] on the request URI itself before anything is sent.
//! - **The loopback opt-in is per request** ([`FetchOptions::allow_loopback`]) but the resolver is
//!   shared by a client's connection pool, so two clients are built at construction: a strict one
//!   and a loopback-allowed one, each with a resolver that has its flag baked in. A request without
//!   the opt-in can never reuse a resolver decision or a pooled connection made with it.
//! - **No redirects** (`Policy::none()`): a 3xx is returned as is; following it would bypass the
//!   core's policy and SSRF checks for the new location.
//! - **No proxy from the environment** (`no_proxy()`): `HTTPS_PROXY` would otherwise route requests
//!   (and their secrets) through whatever the environment says, and the proxy would do the
//!   resolving, defeating the address check.
//! - **One client per mode, built once**: connections are pooled and reused across requests.
//! - **Whole-exchange deadline** (`timeout_ms` over connect + send + full body) and a streamed
//!   **size cap** (`Content-Length` checked first, then the body is counted as it arrives and the
//!   connection dropped once over the cap).
//! - **Errors never carry the request**: reqwest's error `Display` includes the URL (and so the
//!   query, which may hold a secret), so it is never used; errors are built from the kind only and
//!   logs carry the host and the kind.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use vultrino_core::ports::{FetchOptions, Fetcher};
use vultrino_core::{ssrf, Error, ErrorKind, Result};

/// The local [`Fetcher`]. Cheap to share behind an `Arc`; holds two pooled clients.
#[derive(Clone)]
pub struct HttpFetcher {
    strict: reqwest::Client,
    loopback: reqwest::Client,
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("redirects", &"none")
            .field("proxy", &"none")
            .field("resolver", &"checked")
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    /// Build the strict and the loopback-allowed clients.
    ///
    /// Fails (`Internal`) only if the TLS stack cannot be initialised.
    pub fn new() -> Result<HttpFetcher> {
        Ok(HttpFetcher {
            strict: build_client(CheckedResolver::system(false))?,
            loopback: build_client(CheckedResolver::system(true))?,
        })
    }

    fn client(&self, allow_loopback: bool) -> &reqwest::Client {
        if allow_loopback {
            &self.loopback
        } else {
            &self.strict
        }
    }
}

fn build_client(resolver: CheckedResolver) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .no_proxy()
        .dns_resolver(Arc::new(resolver))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|_| {
            tracing::error!("could not build the outbound HTTP client (TLS initialisation)");
            Error::internal()
        })
}

/// Check a name's resolved addresses: all of them must pass [`ssrf::check_ip`], or the name is
/// refused as a whole (`Forbidden`, `ssrf_blocked`). No address at all is `UpstreamFailed`
/// (`upstream_connect`). Returns exactly the addresses that were checked, in order.
pub fn check_resolved(addrs: Vec<SocketAddr>, allow_loopback: bool) -> Result<Vec<SocketAddr>> {
    if addrs.is_empty() {
        return Err(connect_error("upstream host name did not resolve"));
    }
    for addr in &addrs {
        ssrf::check_ip(addr.ip(), allow_loopback)?;
    }
    Ok(addrs)
}

fn connect_error(message: &'static str) -> Error {
    Error::new(ErrorKind::UpstreamFailed, message).with_code("upstream_connect")
}

/// Where the resolver gets addresses from. Tests substitute a fixed list so that the checking
/// path through reqwest can be exercised without DNS and without any non-loopback connection.
#[derive(Debug, Clone)]
enum Lookup {
    System,
    #[cfg(test)]
    Fixed(Vec<SocketAddr>),
}

/// reqwest resolver that checks every address before reqwest may connect to it.
#[derive(Debug, Clone)]
struct CheckedResolver {
    allow_loopback: bool,
    lookup: Lookup,
}

impl CheckedResolver {
    fn system(allow_loopback: bool) -> Self {
        CheckedResolver {
            allow_loopback,
            lookup: Lookup::System,
        }
    }

    async fn resolve_checked(self, host: String) -> Result<Vec<SocketAddr>> {
        // Names that are internal by definition are refused before any lookup (the URL check
        // already did this; repeated here so the resolver is safe on its own).
        ssrf::check_name(&host, self.allow_loopback)?;
        let addrs = match self.lookup {
            Lookup::System => tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| connect_error("upstream host name did not resolve"))?
                .collect(),
            #[cfg(test)]
            Lookup::Fixed(addrs) => addrs,
        };
        let checked = check_resolved(addrs, self.allow_loopback);
        if let Err(e) = &checked {
            tracing::warn!(host = %host, code = e.code(), "upstream name refused by the resolver");
        }
        checked
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.resolve_checked(host).await?;
            // The core `Error` travels inside reqwest's error chain and is recovered by
            // `core_error_in` so the caller sees `ssrf_blocked`, not a generic connect failure.
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Find a core [`Error`] raised by our resolver in reqwest's error chain.
fn core_error_in(e: &reqwest::Error) -> Option<Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(core) = err.downcast_ref::<Error>() {
            return Some(core.clone());
        }
        current = err.source();
    }
    None
}

/// Turn a reqwest error into a core error without ever formatting the reqwest error (its
/// `Display` includes the URL with its query).
fn map_reqwest_error(e: &reqwest::Error, host: &str) -> Error {
    let (kind, error) = if let Some(core) = core_error_in(e) {
        ("resolver", core)
    } else if e.is_timeout() {
        (
            "timeout",
            Error::new(
                ErrorKind::UpstreamTimeout,
                "upstream did not answer in time",
            )
            .with_code("upstream_timeout"),
        )
    } else if e.is_connect() {
        (
            "connect",
            connect_error("could not connect to the upstream"),
        )
    } else if e.is_builder() {
        (
            "builder",
            Error::bad_request("the upstream request is invalid").with_code("invalid_request"),
        )
    } else if e.is_body() || e.is_decode() {
        (
            "body",
            Error::new(
                ErrorKind::UpstreamFailed,
                "the upstream response body could not be read",
            ),
        )
    } else {
        (
            "request",
            Error::new(ErrorKind::UpstreamFailed, "the upstream request failed"),
        )
    };
    tracing::warn!(host = %host, kind, code = error.code(), "upstream fetch failed");
    error
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        "upstream response is larger than allowed",
    )
    .with_code("upstream_too_large")
}

/// Headers that describe one hop, or that a caller could use to talk to another virtual host
/// than the one checked (`Host`), are not forwarded; reqwest/hyper set the right ones.
const NOT_FORWARDED: [HeaderName; 10] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in NOT_FORWARDED.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers
}

/// Send and read the full body under the size cap. The caller wraps this in the deadline.
async fn exchange(
    request: reqwest::RequestBuilder,
    max_response_bytes: usize,
    host: &str,
) -> Result<http::Response<Bytes>> {
    let mut response = request
        .send()
        .await
        .map_err(|e| map_reqwest_error(&e, host))?;
    let declared = response.content_length();
    if declared.is_some_and(|len| len > max_response_bytes as u64) {
        tracing::warn!(host = %host, kind = "too_large", "upstream response refused (Content-Length)");
        return Err(too_large());
    }
    // Preallocate from the declared length, but never trust it for more than the cap allows.
    let capacity = declared
        .map_or(0, |len| len as usize)
        .min(max_response_bytes)
        .min(1 << 20);
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| map_reqwest_error(&e, host))?
    {
        if chunk.len() > max_response_bytes - body.len() {
            // Dropping `response` here closes the connection; the rest is never read.
            tracing::warn!(host = %host, kind = "too_large", "upstream response refused (body)");
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = http::Response::new(body.freeze());
    *out.status_mut() = response.status();
    *out.version_mut() = response.version();
    *out.headers_mut() = response.headers().clone();
    Ok(out)
}

#[async_trait::async_trait]
impl Fetcher for HttpFetcher {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let (parts, body) = request.into_parts();
        // Defence in depth: the core checks too, but IP literals bypass our resolver, so this
        // is the check that stands between an IP-literal URI and a connection.
        let target = ssrf::check_url(&parts.uri.to_string(), options.allow_loopback)?;
        if let Some(ip) = target.ip {
            ssrf::check_ip(ip, options.allow_loopback)?;
        }

        let mut builder = self
            .client(options.allow_loopback)
            .request(parts.method, target.url.clone())
            .headers(forwardable(parts.headers));
        if !body.is_empty() {
            builder = builder.body(body);
        }

        let deadline = Duration::from_millis(options.timeout_ms);
        match tokio::time::timeout(
            deadline,
            exchange(builder, options.max_response_bytes, &target.host),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(host = %target.host, kind = "timeout", "upstream fetch timed out");
                Err(Error::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream did not answer in time",
                )
                .with_code("upstream_timeout"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The resolver path through reqwest, with fixed address lists instead of DNS. Every
    //! connection these tests could make goes to 127.0.0.1.
    #![allow(clippy::unwrap_used)] // test setup

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_forbidden_address_refuses_the_whole_name() {
        for addrs in [
            vec![sa("93.184.216.34:443"), sa("10.0.0.1:443")],
            vec![sa("169.254.169.254:80")],
            vec![sa("[2606:4700::1]:443"), sa("[fd00:ec2::254]:443")],
            vec![sa("[::ffff:192.168.0.1]:443")],
            vec![sa("127.0.0.1:443")],
        ] {
            let e = check_resolved(addrs.clone(), false).err();
            assert_eq!(
                e.as_ref().map(|e| (e.kind(), e.code())),
                Some((ErrorKind::Forbidden, "ssrf_blocked")),
                "{addrs:?}"
            );
        }
        // The loopback opt-in opens loopback only.
        let e = check_resolved(vec![sa("127.0.0.1:1"), sa("10.1.2.3:1")], true).err();
        assert_eq!(e.map(|e| e.code()), Some("ssrf_blocked"));
    }

    #[test]
    fn checked_addresses_are_returned_unchanged() {
        let addrs = vec![sa("93.184.216.34:443"), sa("[2606:4700::1]:443")];
        assert_eq!(check_resolved(addrs.clone(), false).ok(), Some(addrs));
        let loopback = vec![sa("127.0.0.1:8080"), sa("[::1]:8080")];
        assert_eq!(check_resolved(loopback.clone(), true).ok(), Some(loopback));
    }

    #[test]
    fn a_name_without_addresses_is_a_connect_failure() {
        let e = check_resolved(Vec::new(), false).err();
        assert_eq!(
            e.map(|e| (e.kind(), e.code())),
            Some((ErrorKind::UpstreamFailed, "upstream_connect"))
        );
    }

    /// A listener on 127.0.0.1 that counts accepted connections and answers 204.
    async fn counting_server() -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        (port, accepted)
    }

    fn client_with(addrs: Vec<SocketAddr>, allow_loopback: bool) -> reqwest::Client {
        build_client(CheckedResolver {
            allow_loopback,
            lookup: Lookup::Fixed(addrs),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn resolver_refusal_surfaces_as_ssrf_blocked_and_sends_nothing() {
        let (port, accepted) = counting_server().await;
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        // A public-looking name whose lookup yields loopback (strict mode), or yields loopback
        // next to an address the guard refuses (opt-in mode): both refused before any connect.
        for (addrs, allow) in [
            (vec![loopback], false),
            (vec![loopback, sa("10.0.0.1:1")], true),
        ] {
            let client = client_with(addrs, allow);
            let err = client
                .get(format!("http://upstream.example:{port}/?token=s3cret"))
                .send()
                .await
                .err()
                .unwrap();
            let mapped = map_reqwest_error(&err, "upstream.example");
            assert_eq!(
                (mapped.kind(), mapped.code()),
                (ErrorKind::Forbidden, "ssrf_blocked")
            );
            assert!(!mapped.message().contains("s3cret"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn connection_goes_to_the_checked_address() {
        let (port, accepted) = counting_server().await;
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let client = client_with(vec![loopback], true);
        let response = client
            .get(format!("http://upstream.example:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn hop_by_hop_and_host_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "evil.example".parse().unwrap());
        h.insert(header::CONNECTION, "close, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        let out = forwardable(h);
        assert!(out.get(header::HOST).is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("x-hop").is_none());
        assert!(out.get(header::AUTHORIZATION).is_some());
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }
}
