//! The outbound HTTP client of the local backend: [`HttpFetcher`], a [`Fetcher`] on hyper's
//! connections, kept per thread by its own [`pool`], with rustls (ring, webpki roots; HTTP/1.1
//! and HTTP/2 by ALPN).
//!
//! What it guarantees (the [`Fetcher`] contract, plus SSRF defence in depth):
//!
//! - **Connect only to checked addresses.** The connector is given a resolver that resolves each
//!   name once, checks *every* resolved address with [`ssrf::check_ip`] (one bad address refuses
//!   the whole name — a name that resolves to both a public and an internal address is hostile),
//!   and hands back exactly the addresses it checked. The connection therefore goes to an address
//!   that was checked, with no second lookup in between (no DNS-rebinding window).
//! - **IP literals** never reach a resolver (the connector dials them directly), so
//!   [`HttpFetcher::fetch`] runs [`ssrf::check_uri`] on the request URI itself before anything is
//!   sent: IP literals by [`ssrf::check_ip`], names by [`ssrf::check_name`], https unless the
//!   loopback opt-in applies.
//! - **The loopback opt-in is per request** ([`FetchOptions::allow_loopback`]), so there are two
//!   connectors, a strict one and a loopback-allowed one, each with a resolver that has its flag
//!   baked in, and the mode is part of a kept connection's key. A request without the opt-in can
//!   never reuse a resolver decision or a connection made with it.
//! - **No redirects**: the client never follows one; a 3xx is returned as is (following it would
//!   bypass the core's policy and SSRF checks for the new location).
//! - **No proxy from the environment**: nothing reads `HTTPS_PROXY` and the like, which would
//!   route requests (and their secrets) elsewhere and defeat the address check.
//! - **Connections kept per thread** and reused across requests (idle ones closed after 90 s);
//!   see [`HttpFetcher`] for why per thread, and [`pool`] for how.
//! - **Whole-exchange deadline** (`timeout_ms` over connect + send + full body) and a streamed
//!   **size cap** (`Content-Length` checked first, then the body is counted as it arrives and the
//!   connection dropped once over the cap).
//! - **Errors never carry the request**: client errors are never formatted (their chain could
//!   name the URI, and so a query that holds a secret); errors are built from the kind only and
//!   logs carry the host and the kind.
//!
//! Why not reqwest (which wraps this same stack, and which the cold paths — the stdio MCP bridge
//! and edge sync — still use): its per-request redirect/retry layers and URL re-parsing cost a
//! large share of the execute path's throughput; see
//! docs/decisions/0027-hyper-util-outbound-client.md (the figures are in benches/README.md).
//! Why not hyper-util's pooled client either (used until decision 0134): its pool's checkout,
//! return and hashing cost about 10 k instructions per request, an eighth of a `/proxy/`
//! request's.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http_body_util::{BodyExt, Either, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use vultrino_core::body::{Body, BodyStream};
use vultrino_core::error::Code;
use vultrino_core::ports::{FetchOptions, Fetcher, StreamOptions};
use vultrino_core::{ssrf, Error, ErrorKind, Result};

mod pool;

type Connector = HttpsConnector<HttpConnector<CheckedResolver>>;
/// A request body: whole ([`Fetcher::fetch`]), or streamed ([`Fetcher::fetch_stream`]).
type RequestBody = Either<Full<Bytes>, Upload>;

/// The local [`Fetcher`]. Cheap to clone and share.
///
/// It holds the two connectors (strict and loopback-allowed: each a resolver that checks what it
/// resolves, and TLS); the connections made with them are kept **per thread** ([`pool`]):
/// `vultrino serve` runs one single-threaded runtime per core
/// ([`crate::server::serve_per_core`]), and a connection is driven by a task of the runtime that
/// opened it, so connections shared across threads would turn every request into cross-thread
/// wake-ups. Clones of one fetcher share its connections; another fetcher never does.
#[derive(Clone)]
pub struct HttpFetcher {
    strict: Connector,
    loopback: Connector,
    /// Identity of this fetcher (and its clones) in the per-thread connection lists.
    token: Arc<()>,
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
    /// A fetcher on the system's resolver.
    ///
    /// Fails (`Internal`) only if the TLS stack cannot be initialised.
    pub fn new() -> Result<HttpFetcher> {
        Ok(HttpFetcher {
            strict: build_connector(CheckedResolver::system(false))?,
            loopback: build_connector(CheckedResolver::system(true))?,
            token: Arc::new(()),
        })
    }

    /// TEST-ONLY: a fetcher whose names all resolve to `addrs` (both modes; still checked).
    #[cfg(test)]
    fn with_addresses(addrs: Vec<SocketAddr>) -> HttpFetcher {
        let resolver = |allow_loopback| CheckedResolver {
            allow_loopback,
            lookup: Lookup::Fixed(addrs.clone()),
        };
        HttpFetcher {
            strict: build_connector(resolver(false)).expect("TLS"),
            loopback: build_connector(resolver(true)).expect("TLS"),
            token: Arc::new(()),
        }
    }

    /// Send `request` on one of this thread's connections for its mode and origin, or a new
    /// one; the response comes with the lease of its connection, to hold until its body is
    /// read or dropped.
    async fn send(
        &self,
        allow_loopback: bool,
        request: http::Request<RequestBody>,
        host: &str,
    ) -> Result<(http::Response<hyper::body::Incoming>, pool::Lease)> {
        let origin = pool::Origin {
            owner: &self.token,
            connector: if allow_loopback {
                &self.loopback
            } else {
                &self.strict
            },
            loopback: allow_loopback,
            host,
        };
        pool::send(origin, request).await
    }
}

fn build_connector(resolver: CheckedResolver) -> Result<Connector> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    // The TLS wrapper decides the scheme; the inner connector must accept `https` URIs.
    http.enforce_http(false);
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|_| {
            tracing::error!("could not build the outbound HTTP client (TLS initialisation)");
            Error::internal()
        })?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
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
    Error::new(ErrorKind::UpstreamFailed, message).with_code(Code::UpstreamConnect)
}

/// Where the resolver gets addresses from. Tests substitute a fixed list so that the checking
/// path through the client can be exercised without DNS and without any non-loopback connection.
#[derive(Debug, Clone)]
enum Lookup {
    System,
    #[cfg(test)]
    Fixed(Vec<SocketAddr>),
}

/// Connector resolver that checks every address before the connector may dial it.
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
        // Names that are internal by definition are refused before any lookup (the URI check
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
            tracing::warn!(host = %host, code = e.code().as_str(), "upstream name refused by the resolver");
        }
        checked
    }
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    // The core `Error` travels inside the client's error chain and is recovered by
    // `core_error_in`, so the caller sees `ssrf_blocked`, not a generic connect failure.
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move { this.resolve_checked(host).await.map(Vec::into_iter) })
    }
}

/// Find a core [`Error`] in an error chain: raised by our resolver (an SSRF refusal) or by the
/// upload body (a refused or over-long request body).
fn core_error_in(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(core) = err.downcast_ref::<Error>() {
            return Some(core.clone());
        }
        current = err.source();
    }
    None
}

fn body_error(host: &str) -> Error {
    tracing::warn!(host = %host, kind = "body", "upstream fetch failed");
    Error::new(
        ErrorKind::UpstreamFailed,
        "the upstream response body could not be read",
    )
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        "upstream response is larger than allowed",
    )
    .with_code(Code::UpstreamTooLarge)
}

/// Headers that describe one hop, or that a caller could use to talk to another virtual host
/// than the one checked (`Host`), are not forwarded; the client sets the right ones.
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

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn forwardable(headers: &mut HeaderMap) {
    // The common request carries none of them (the core built it): one pass over its few
    // names, compared as known headers, instead of eleven hashed removals per request
    // (docs/decisions/0113). `Connection` is among them, so no hit means none named either.
    if !headers
        .keys()
        .any(|n| NOT_FORWARDED.contains(n) || *n == PROXY_CONNECTION)
    {
        return;
    }
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
    headers.remove(PROXY_CONNECTION);
}

/// Send and read the full body under the size cap. The caller wraps this in the deadline.
async fn exchange(
    pending: impl Future<Output = Result<(http::Response<hyper::body::Incoming>, pool::Lease)>>,
    max_response_bytes: usize,
    host: &str,
) -> Result<http::Response<Bytes>> {
    // The lease is held until the body is read (or this is dropped part way).
    let (response, _lease) = pending.await?;
    // The body's declared length as the client framed it: none for HEAD, 204 and 304, whose
    // `Content-Length` (if any) describes a body that is not sent.
    let declared = hyper::body::Body::size_hint(response.body()).exact();
    if declared.is_some_and(|len| len > max_response_bytes as u64) {
        tracing::warn!(host = %host, kind = "too_large", "upstream response refused (Content-Length)");
        return Err(too_large());
    }
    let (parts, mut incoming) = response.into_parts();
    // A body that arrives in one chunk (the common case) is passed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut received = 0usize;
    while let Some(frame) = incoming.frame().await {
        let Ok(chunk) = frame.map_err(|_| body_error(host))?.into_data() else {
            continue; // trailers
        };
        if chunk.len() > max_response_bytes - received {
            // Dropping `incoming` here ends the exchange: the rest is never read (the connection
            // is kept only if hyper had already read all of it).
            tracing::warn!(host = %host, kind = "too_large", "upstream response refused (body)");
            return Err(too_large());
        }
        received += chunk.len();
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(head), None) => {
                // Preallocate from the declared length, never more than the cap allows.
                let capacity = declared
                    .map_or(0, |len| len as usize)
                    .min(max_response_bytes)
                    .min(1 << 20)
                    .max(received);
                let mut buf = BytesMut::with_capacity(capacity);
                buf.extend_from_slice(head);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    let body = match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    };
    Ok(http::Response::from_parts(parts, body))
}

/// Check and clean a request head before anything is sent; returns the host (for logs).
fn prepare(parts: &mut http::request::Parts, allow_loopback: bool) -> Result<String> {
    // Defence in depth: the core checks too, but IP literals bypass our resolver, so this
    // is the check that stands between an IP-literal URI and a connection.
    ssrf::check_uri(&parts.uri, allow_loopback)?;
    if !vultrino_core::upstream::forwardable_method(&parts.method) {
        return Err(
            Error::bad_request("CONNECT and TRACE requests are not forwarded")
                .with_code(Code::InvalidRequest),
        );
    }
    let host = parts.uri.host().unwrap_or_default().to_owned();
    forwardable(&mut parts.headers);
    // The client speaks HTTP/1.1 or, where ALPN agrees, HTTP/2; never what the caller says.
    parts.version = http::Version::HTTP_11;
    Ok(host)
}

fn timeout_error(host: &str, what: &'static str) -> Error {
    tracing::warn!(host = %host, kind = "timeout", what, "upstream exchange timed out");
    Error::new(ErrorKind::UpstreamTimeout, what).with_code(Code::UpstreamTimeout)
}

/// How far the upload of a streamed request body has come: when it last moved, and whether
/// (and when) it ended. Shared by [`Upload`] (which moves it) and the wait for the response head
/// (which derives its deadline from it).
#[derive(Debug)]
struct Progress(std::sync::Mutex<(tokio::time::Instant, bool)>);

impl Progress {
    fn new(done: bool) -> Arc<Progress> {
        Arc::new(Progress(std::sync::Mutex::new((
            tokio::time::Instant::now(),
            done,
        ))))
    }

    fn moved(&self, done: bool) {
        if let Ok(mut p) = self.0.lock() {
            *p = (tokio::time::Instant::now(), p.1 || done);
        }
    }

    /// While the body is being sent, the idle limit runs from its last chunk; once sent, the
    /// head's limit runs from its end.
    fn deadline(&self, options: &StreamOptions) -> tokio::time::Instant {
        let (at, done) = self
            .0
            .lock()
            .map(|p| *p)
            .unwrap_or((tokio::time::Instant::now(), true));
        let ms = if done {
            options.headers_timeout_ms
        } else {
            options.idle_timeout_ms
        };
        at + Duration::from_millis(ms)
    }
}

/// A streamed request body as hyper sends it: the core's stream, with its declared length (sent
/// as `Content-Length`) and its progress recorded. An `Err` from the stream aborts the upload
/// (hyper closes the connection before the body ends) and travels back in the client's error,
/// where [`core_error_in`] finds it.
struct Upload {
    stream: BodyStream,
    len: Option<u64>,
    progress: Arc<Progress>,
}

impl hyper::body::Body for Upload {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, Error>>> {
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.progress.moved(false);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.progress.moved(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.len {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

/// A streamed response body: the upstream's chunks as they arrive, under the idle and total
/// deadlines. Dropping it drops the connection (hyper never pools a connection whose body was
/// not read to its end), which is how a client that goes away cancels the upstream request.
struct Download {
    /// The body and its connection's lease, given up together when the body has ended or
    /// failed, or this is dropped.
    incoming: Option<(hyper::body::Incoming, pool::Lease)>,
    idle: Duration,
    /// When the last chunk came (or the head, at first): the idle deadline runs from it.
    last_progress: tokio::time::Instant,
    total_deadline: tokio::time::Instant,
    /// One timer for both deadlines, armed only when the body has to be waited for: a reply
    /// that is already whole when its head arrives (most small ones) costs no timer at all.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    host: String,
}

impl Download {
    fn new(
        incoming: hyper::body::Incoming,
        idle: Duration,
        total_deadline: tokio::time::Instant,
        host: String,
        lease: pool::Lease,
    ) -> Download {
        Download {
            incoming: Some((incoming, lease)),
            idle,
            last_progress: tokio::time::Instant::now(),
            total_deadline,
            timer: None,
            host,
        }
    }

    fn end(&mut self, error: Error) -> Poll<Option<Result<Bytes>>> {
        self.incoming = None;
        self.timer = None;
        Poll::Ready(Some(Err(error)))
    }

    fn total_passed(&mut self) -> Poll<Option<Result<Bytes>>> {
        let e = timeout_error(&self.host, "the upstream exchange took longer than allowed");
        self.end(e)
    }
}

impl futures_core::Stream for Download {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let this = self.get_mut();
        loop {
            let Some((incoming, _)) = this.incoming.as_mut() else {
                return Poll::Ready(None);
            };
            let now = tokio::time::Instant::now();
            if now >= this.total_deadline {
                return this.total_passed();
            }
            match hyper::body::Body::poll_frame(Pin::new(incoming), cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers
                    };
                    this.last_progress = now;
                    if chunk.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(_))) => {
                    let e = body_error(&this.host);
                    return this.end(e);
                }
                Poll::Ready(None) => {
                    this.incoming = None;
                    this.timer = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    let idle_deadline = this.last_progress + this.idle;
                    let deadline = idle_deadline.min(this.total_deadline);
                    let timer = match this.timer.as_mut() {
                        Some(t) => {
                            if t.deadline() != deadline {
                                t.as_mut().reset(deadline);
                            }
                            t
                        }
                        None => this
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    if timer.as_mut().poll(cx).is_ready() {
                        if deadline == this.total_deadline {
                            return this.total_passed();
                        }
                        let e = timeout_error(&this.host, "the upstream sent nothing for too long");
                        return this.end(e);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Fetcher for HttpFetcher {
    /// Streams both ways on the same kept connections as [`Fetcher::fetch`]; see the trait's
    /// contract. The wait for the response head is re-armed whenever the upload moves, so a
    /// slow but moving upload is not cut by the head's deadline.
    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        let (mut parts, body) = request.into_parts();
        let host = prepare(&mut parts, options.allow_loopback)?;
        let started = tokio::time::Instant::now();
        let total_deadline = started + Duration::from_millis(options.total_timeout_ms);
        let (body, progress) = match body.as_full() {
            Some(bytes) => (Either::Left(Full::new(bytes.clone())), Progress::new(true)),
            None => {
                let progress = Progress::new(false);
                let len = body.len_hint();
                let upload = Upload {
                    stream: body.into_stream(),
                    len,
                    progress: progress.clone(),
                };
                (Either::Right(upload), progress)
            }
        };
        let (response, lease) = {
            let pending = self.send(
                options.allow_loopback,
                http::Request::from_parts(parts, body),
                &host,
            );
            tokio::pin!(pending);
            loop {
                let deadline = progress.deadline(&options).min(total_deadline);
                tokio::select! {
                    r = &mut pending => break r?,
                    () = tokio::time::sleep_until(deadline) => {
                        // The upload may have moved meanwhile: only a deadline still passed
                        // counts.
                        if tokio::time::Instant::now() >= progress.deadline(&options).min(total_deadline) {
                            return Err(timeout_error(&host, "the upstream did not answer in time"));
                        }
                    }
                }
            }
        };
        let (parts, incoming) = response.into_parts();
        let len = hyper::body::Body::size_hint(&incoming).exact();
        let idle = Duration::from_millis(options.idle_timeout_ms);
        let download = Download::new(incoming, idle, total_deadline, host, lease);
        let body = match len {
            Some(0) => Body::empty(),
            Some(n) => Body::from_stream_with_len(download, n),
            None => Body::from_stream(download),
        };
        Ok(http::Response::from_parts(parts, body))
    }

    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let (mut parts, body) = request.into_parts();
        let host = prepare(&mut parts, options.allow_loopback)?;
        let request = http::Request::from_parts(parts, Either::Left(Full::new(body)));

        let deadline = Duration::from_millis(options.timeout_ms);
        let pending = self.send(options.allow_loopback, request, &host);
        match tokio::time::timeout(
            deadline,
            exchange(pending, options.max_response_bytes, &host),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(host = %host, kind = "timeout", "upstream fetch timed out");
                Err(Error::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream did not answer in time",
                )
                .with_code(Code::UpstreamTimeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The resolver path through the client, with fixed address lists instead of DNS. Every
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
                Some((ErrorKind::Forbidden, Code::SsrfBlocked)),
                "{addrs:?}"
            );
        }
        // The loopback opt-in opens loopback only.
        let e = check_resolved(vec![sa("127.0.0.1:1"), sa("10.1.2.3:1")], true).err();
        assert_eq!(e.map(|e| e.code()), Some(Code::SsrfBlocked));
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
            Some((ErrorKind::UpstreamFailed, Code::UpstreamConnect))
        );
    }

    /// A listener on 127.0.0.1 that counts accepted connections and answers 204.
    async fn counting_server() -> (u16, Arc<AtomicUsize>) {
        counting_server_with(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await
    }

    /// A listener on 127.0.0.1 that counts accepted connections, answers one request on each
    /// with `reply`, then closes it (whatever `reply` says about keep-alive).
    async fn counting_server_with(reply: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
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
                    let _ = sock.write_all(reply).await;
                });
            }
        });
        (port, accepted)
    }

    fn fetch_options(allow_loopback: bool) -> FetchOptions {
        FetchOptions {
            timeout_ms: 5_000,
            max_response_bytes: 1024,
            allow_loopback,
        }
    }

    /// A GET through `fetcher` with the loopback opt-in, which must succeed.
    async fn fetch_ok(fetcher: &HttpFetcher, url: &str) -> http::Response<Bytes> {
        fetcher
            .fetch(get_req(url), fetch_options(true))
            .await
            .unwrap()
    }

    fn get_req(uri: &str) -> http::Request<Bytes> {
        http::Request::get(uri).body(Bytes::new()).unwrap()
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
            let fetcher = HttpFetcher::with_addresses(addrs);
            let url = format!("https://upstream.example:{port}/?token=s3cret");
            let mapped = fetcher
                .fetch(get_req(&url), fetch_options(allow))
                .await
                .expect_err("refused");
            assert_eq!(
                (mapped.kind(), mapped.code()),
                (ErrorKind::Forbidden, Code::SsrfBlocked)
            );
            assert!(!mapped.message().contains("s3cret"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    /// Through the fetcher itself (the per-thread clients it builds): a request without the
    /// loopback opt-in is refused by the resolver and connects nowhere, before and after a
    /// request WITH the opt-in has connected to the same name on the same thread — no resolver
    /// decision and no pooled connection crosses from one mode to the other.
    #[tokio::test]
    async fn the_fetchers_two_modes_never_share_a_resolver_or_a_connection() {
        let (port, accepted) = counting_server().await;
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let fetcher = HttpFetcher::with_addresses(vec![loopback]);
        let url = format!("https://upstream.example:{port}/");
        let options = |allow_loopback| FetchOptions {
            timeout_ms: 5_000,
            max_response_bytes: 1024,
            allow_loopback,
        };
        let fetch = |allow_loopback| {
            let request = http::Request::get(url.as_str()).body(Bytes::new()).unwrap();
            fetcher.fetch(request, options(allow_loopback))
        };
        let strict = |r: Result<http::Response<Bytes>>| {
            let e = r.expect_err("refused");
            assert_eq!(
                (e.kind(), e.code()),
                (ErrorKind::Forbidden, Code::SsrfBlocked)
            );
        };
        strict(fetch(false).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "the strict mode connected"
        );
        // Allowed to connect (the TLS handshake then fails against the plain listener).
        assert!(fetch(true).await.is_err());
        for _ in 0..100 {
            if accepted.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the opt-in connected once"
        );
        strict(fetch(false).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the strict mode connected"
        );
    }

    #[tokio::test]
    async fn connection_goes_to_the_checked_address() {
        let (port, accepted) = counting_server().await;
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let fetcher = HttpFetcher::with_addresses(vec![loopback]);
        let url = format!("http://localhost:{port}/");
        let response = fetch_ok(&fetcher, &url).await;
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A keep-alive HTTP/1.1 listener on 127.0.0.1: counts accepted connections, records each
    /// request's head, answers `200 ok` with a length, and closes a connection after
    /// `per_conn` requests on it (`usize::MAX`: never).
    async fn keep_alive_server(
        per_conn: usize,
    ) -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut served = 0;
                    while served < per_conn {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            seen.lock().unwrap().push(head);
                            served += 1;
                            let last = served >= per_conn;
                            let reply: &[u8] = if last {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if sock.write_all(reply).await.is_err() || last {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted, heads)
    }

    /// Sequential requests to one origin share one connection; the request leaves in origin
    /// form with the client's own `Host` (the port, as it is not the default one).
    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (port, accepted, heads) = keep_alive_server(usize::MAX).await;
        let fetcher = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port}"))]);
        for i in 0..5 {
            let url = format!("http://localhost:{port}/items?n={i}");
            let r = fetch_ok(&fetcher, &url).await;
            assert_eq!((r.status().as_u16(), &r.body()[..]), (200, &b"ok"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 5);
        assert!(
            heads[3].starts_with("GET /items?n=3 HTTP/1.1\r\n"),
            "{}",
            heads[3]
        );
        let host = format!("host: localhost:{port}");
        assert!(
            heads[3].to_ascii_lowercase().contains(&host),
            "{}",
            heads[3]
        );
        // Another fetcher (its own resolver) never takes this one's connection.
        let other = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port}"))]);
        let url = format!("http://localhost:{port}/");
        fetch_ok(&other, &url).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A connection the upstream closes after each exchange (`Connection: close`) is not taken
    /// again: every request gets through, on a new connection each.
    #[tokio::test]
    async fn a_closed_connection_is_not_reused() {
        let (port, accepted, _) = keep_alive_server(1).await;
        let fetcher = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port}"))]);
        for _ in 0..3 {
            let url = format!("http://localhost:{port}/");
            let r = fetch_ok(&fetcher, &url).await;
            assert_eq!(r.status().as_u16(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Streamed exchanges at once on one origin each get a connection of their own (an
    /// HTTP/1.1 connection carries one exchange at a time), and are then reused.
    #[tokio::test]
    async fn concurrent_exchanges_take_separate_connections_then_reuse_them() {
        let (port, accepted, _) = keep_alive_server(usize::MAX).await;
        let fetcher = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port}"))]);
        let url = format!("http://localhost:{port}/");
        let options = StreamOptions {
            headers_timeout_ms: 5_000,
            idle_timeout_ms: 5_000,
            total_timeout_ms: 10_000,
            max_buffered_response_bytes: 1024,
            allow_loopback: true,
        };
        let req = || {
            http::Request::get(url.as_str())
                .body(Body::empty())
                .unwrap()
        };
        // Three replies held open (their bodies not read yet): three connections.
        let a = fetcher.fetch_stream(req(), options).await.unwrap();
        let b = fetcher.fetch_stream(req(), options).await.unwrap();
        let c = fetcher.fetch_stream(req(), options).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        for r in [a, b, c] {
            let body = r.into_body().collect_capped(1024).await.unwrap();
            assert_eq!(&body[..], b"ok");
        }
        for _ in 0..6 {
            let r = fetcher.fetch_stream(req(), options).await.unwrap();
            r.into_body().collect_capped(1024).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// The upstream closes a kept keep-alive connection after an exchange (as Node does after
    /// 5 s idle, without `Connection: close`): the next request sees it closed and goes on a new
    /// connection.
    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_taken() {
        // Closed after its reply, keep-alive notwithstanding.
        let (port, accepted) =
            counting_server_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let fetcher = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port}"))]);
        let url = format!("http://localhost:{port}/");
        for _ in 0..3 {
            let r = fetch_ok(&fetcher, &url).await;
            assert_eq!(&r.body()[..], b"ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A thread's kept connections are bounded; when the bound is reached, the one idle
    /// longest is closed to make room, so a busy fetcher fanning out to many origins does not
    /// leave another one without reuse (review of decision 0134, finding 5).
    #[tokio::test]
    async fn a_full_list_makes_room_for_a_new_connection() {
        let (port_x, accepted_x, _) = keep_alive_server(usize::MAX).await;
        let x = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port_x}"))]);
        for i in 0..pool::MAX_KEPT {
            let url = format!("http://h{i}.localhost:{port_x}/");
            fetch_ok(&x, &url).await;
        }
        assert_eq!(accepted_x.load(Ordering::SeqCst), pool::MAX_KEPT);
        let (port_y, accepted_y, _) = keep_alive_server(usize::MAX).await;
        let y = HttpFetcher::with_addresses(vec![sa(&format!("127.0.0.1:{port_y}"))]);
        for _ in 0..3 {
            let url = format!("http://localhost:{port_y}/");
            fetch_ok(&y, &url).await;
        }
        assert_eq!(accepted_y.load(Ordering::SeqCst), 1);
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
        let mut out = h;
        forwardable(&mut out);
        assert!(out.get(header::HOST).is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("x-hop").is_none());
        assert!(out.get(header::AUTHORIZATION).is_some());
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }

    /// Each hop-by-hop header is dropped also when it is the only one the request carries
    /// (the pass over the names that skips the removals must see every one of them).
    #[test]
    fn each_hop_by_hop_header_alone_is_not_forwarded() {
        for name in NOT_FORWARDED.iter().chain([&PROXY_CONNECTION]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), http::HeaderValue::from_static("1"));
            h.insert(header::ACCEPT, http::HeaderValue::from_static("*/*"));
            forwardable(&mut h);
            assert!(h.get(name).is_none(), "{name} was forwarded");
            assert!(h.get(header::ACCEPT).is_some());
        }
        let mut clean = HeaderMap::new();
        clean.insert(header::ACCEPT, http::HeaderValue::from_static("*/*"));
        forwardable(&mut clean);
        assert_eq!(clean.len(), 1);
    }
}
