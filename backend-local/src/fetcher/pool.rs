//! The fetcher's connections: kept per thread, per fetcher, per mode (strict or
//! loopback-allowed) and per origin (scheme and authority), on hyper's own connection types —
//! HTTP/1.1, or HTTP/2 where TLS's ALPN agrees — with no pooling layer in between
//! (docs/decisions/0134-the-fetchers-own-connection-pool.md).
//!
//! - **Checkout**: the first connection of this thread for the same fetcher, mode and origin
//!   that is ready for a request (an HTTP/1.1 connection is ready once the previous exchange on
//!   it has ended, its body read to the end; an HTTP/2 one while it is open) and not being
//!   closed for idleness. None: a new connection through the fetcher's connector (the checked
//!   resolver, TLS), whose driver runs as a task of the calling runtime.
//! - **Lease**: each exchange holds a [`Lease`] of its connection until its response body has
//!   been read or dropped; a connection with no lease for [`IDLE`] is closed by its own driver
//!   task (one timer per connection, not per request).
//! - **Retry**: a request that a reused connection gave back unsent (the upstream closed the
//!   connection as the request was handed to it) is sent once more on a new connection; a
//!   request that may have been sent is never sent twice.
//! - **Bounded**: at most [`MAX_KEPT`] connections are kept per thread; past that, the one idle
//!   longest is closed to make room, and when every kept one is in use a new connection serves
//!   its one exchange and is closed.
//! - The request leaves in the form its version wants: origin-form (`/path?query`) with a
//!   `Host` header (the port only when it is not the scheme's default) on HTTP/1.1, the absolute
//!   URI on HTTP/2.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;
use vultrino_core::{Error, ErrorKind, Result};

use super::{connect_error, core_error_in, Connector, RequestBody};

/// A connection with no exchange for this long is closed.
pub(super) const IDLE: Duration = Duration::from_secs(90);

/// Most connections kept per thread (all fetchers, modes and origins together); past it, the
/// one idle longest is closed to make room, and only when none is idle is a new connection
/// used for its one exchange and closed.
pub(super) const MAX_KEPT: usize = if cfg!(test) { 8 } else { 256 };

/// The lease count of a connection being closed: no checkout takes it any more.
const CLOSED: u32 = u32::MAX;

/// Where a connection may be reused: the fetcher that made it (its clones included), the mode
/// and the origin.
struct Key {
    owner: Weak<()>,
    loopback: bool,
    https: bool,
    authority: Authority,
}

impl Key {
    fn is(&self, owner: &Arc<()>, loopback: bool, https: bool, authority: &Authority) -> bool {
        std::ptr::eq(self.owner.as_ptr(), Arc::as_ptr(owner))
            && self.loopback == loopback
            && self.https == https
            && self.authority == *authority
    }
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

impl Sender {
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    fn multiplexed(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

/// Milliseconds since the first connection of the process (for idle times only).
fn now_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let anchor = ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection's leases and its idle watch share.
struct State {
    /// Exchanges holding the connection, or [`CLOSED`] (which stays: a lease ending later
    /// leaves it as it is).
    leases: AtomicU32,
    /// When the last lease ended, in [`now_ms`].
    released_ms: AtomicU64,
}

impl State {
    fn new() -> Arc<State> {
        Arc::new(State {
            leases: AtomicU32::new(0),
            released_ms: AtomicU64::new(now_ms()),
        })
    }

    fn close(&self) {
        self.leases.store(CLOSED, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.leases.load(Ordering::Acquire) == CLOSED
    }

    /// Take a lease: refused once closing, and on HTTP/1.1 while another exchange holds it.
    fn acquire(self: &Arc<State>, exclusive: bool) -> Option<Lease> {
        let mut n = self.leases.load(Ordering::Acquire);
        loop {
            if n == CLOSED || (exclusive && n != 0) || n == CLOSED - 1 {
                return None;
            }
            match self
                .leases
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Lease(Some(self.clone()))),
                Err(now) => n = now,
            }
        }
    }

    /// Close the connection if it has had no lease for `idle`: true when it is now closing.
    /// Otherwise, how long to wait before looking again.
    fn close_if_idle(&self, idle: Duration) -> std::result::Result<(), Duration> {
        if self.leases.load(Ordering::Acquire) != 0 {
            return Err(idle);
        }
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let since = now_ms().saturating_sub(self.released_ms.load(Ordering::Acquire));
        if since < idle_ms {
            return Err(Duration::from_millis(idle_ms - since));
        }
        match self
            .leases
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            // Taken meanwhile: a whole idle period from now.
            Err(_) => Err(idle),
        }
    }
}

/// An exchange's hold on its connection, released when dropped (the response body read to its
/// end or given up).
pub(super) struct Lease(Option<Arc<State>>);

impl Lease {
    fn is_of(&self, state: &Arc<State>) -> bool {
        self.0.as_ref().is_some_and(|s| Arc::ptr_eq(s, state))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.released_ms.store(now_ms(), Ordering::Release);
            // A connection closed meanwhile stays closed.
            let _ = state
                .leases
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n != CLOSED && n > 0).then(|| n - 1)
                });
        }
    }
}

struct Kept {
    key: Key,
    sender: Sender,
    state: Arc<State>,
}

thread_local! {
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// What a send needs besides the request.
pub(super) struct Origin<'a> {
    pub owner: &'a Arc<()>,
    pub connector: &'a Connector,
    pub loopback: bool,
    /// For logs only.
    pub host: &'a str,
}

/// Send `request` (an absolute `http`/`https` URI, already checked and cleaned by the caller)
/// on a kept connection or a new one; the response comes with the lease of its connection.
pub(super) async fn send(
    origin: Origin<'_>,
    request: http::Request<RequestBody>,
) -> Result<(http::Response<hyper::body::Incoming>, Lease)> {
    let https = request.uri().scheme() == Some(&Scheme::HTTPS);
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(Error::bad_request("the upstream URL has no host"));
    };
    let first = checkout(&origin, https, &authority);
    send_from(origin, request, https, &authority, first).await
}

/// [`send`] from its checkout: on `taken` when there is one (a kept connection), else on a new
/// connection; a request given back unsent by a reused connection goes once more on a new one.
async fn send_from(
    origin: Origin<'_>,
    mut request: http::Request<RequestBody>,
    https: bool,
    authority: &Authority,
    mut taken: Option<(Taken, Lease)>,
) -> Result<(http::Response<hyper::body::Incoming>, Lease)> {
    let host = host_value(request.uri(), https)?;
    let mut reused = taken.is_some();
    loop {
        let (sender, lease) = match taken.take() {
            Some(found) => found,
            None => {
                reused = false;
                // Boxed: connecting (TCP, TLS, the handshakes) is the large, rare part of this
                // future; inline, every request's future would carry its state and be copied
                // whole at each move (~17 KB, benches/README.md).
                Box::pin(connect(&origin, https, authority)).await?
            }
        };
        let mut e = match send_on(sender, &lease, request, &host)?.await {
            Ok(response) => return Ok((response, lease)),
            Err(e) => e,
        };
        match e.take_message() {
            // Given back unsent by a connection that was reused: once more, on a new one.
            Some(back) if reused => request = restored(back, https, authority)?,
            _ => return Err(send_error(e.error(), origin.host)),
        }
    }
}

/// A request given back unsent, with its absolute URI again (HTTP/1.1 had rewritten it to
/// origin form; the next connection may be HTTP/2, which needs the scheme and authority from
/// it): rebuilt from the origin and the path it kept, only on this rare path. Its `Host` is set
/// again, or removed, by [`dispatch`].
fn restored(
    mut back: http::Request<RequestBody>,
    https: bool,
    authority: &Authority,
) -> Result<http::Request<RequestBody>> {
    let path = back
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *back.uri_mut() = absolute(https, authority, path)?;
    Ok(back)
}

/// `scheme://authority` + `path`.
fn absolute(https: bool, authority: &Authority, path: PathAndQuery) -> Result<http::Uri> {
    http::Uri::builder()
        .scheme(if https { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| Error::bad_request("the upstream URL has no valid host"))
}

type Pending = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    http::Response<hyper::body::Incoming>,
                    hyper::client::conn::TrySendError<http::Request<RequestBody>>,
                >,
            > + Send,
    >,
>;

/// Hand the request to its connection: the kept entry at the index checkout or connect gave,
/// which must still be the one `lease` holds (one thread and no await in between make it so;
/// were that ever broken, the request is refused, `Internal`, rather than sent on whatever
/// connection the index names now).
fn send_on(
    sender: Taken,
    lease: &Lease,
    request: http::Request<RequestBody>,
    host: &HeaderValue,
) -> Result<Pending> {
    match sender {
        Taken::Kept(index) => KEPT.with(|cell| {
            let mut kept = cell.borrow_mut();
            match kept.get_mut(index) {
                Some(k) if lease.is_of(&k.state) => Ok(dispatch(&mut k.sender, request, host)),
                _ => Err(Error::internal()),
            }
        }),
        Taken::Own(mut sender) => Ok(dispatch(&mut sender, request, host)),
    }
}

/// The request in its version's form: on HTTP/1.1 in origin form with `Host`; on HTTP/2 with
/// its absolute URI, from which hyper writes `:scheme` and `:authority` (and no `Host`, which
/// could differ from `:authority`: RFC 9113 §8.3.1).
fn dispatch(
    sender: &mut Sender,
    mut req: http::Request<RequestBody>,
    host: &HeaderValue,
) -> Pending {
    match sender {
        Sender::H1(s) => {
            req.headers_mut().insert(header::HOST, host.clone());
            origin_form(req.uri_mut());
            Box::pin(s.try_send_request(req))
        }
        Sender::H2(s) => {
            req.headers_mut().remove(header::HOST);
            Box::pin(s.try_send_request(req))
        }
    }
}

/// A connection to send on: one kept at this index of the thread's list, or one of its own
/// (not kept: [`MAX_KEPT`] reached with every kept one in use; closed once its exchange ends).
enum Taken {
    Kept(usize),
    Own(Sender),
}

/// Drop the entries no one can take any more: closed connections, and those of a fetcher
/// that is gone.
fn prune(kept: &mut Vec<Kept>) {
    kept.retain(|k| {
        !k.sender.is_closed() && !k.state.is_closed() && k.key.owner.strong_count() > 0
    });
}

fn checkout(origin: &Origin<'_>, https: bool, authority: &Authority) -> Option<(Taken, Lease)> {
    KEPT.with(|cell| {
        let mut kept = cell.borrow_mut();
        prune(&mut kept);
        kept.iter().enumerate().find_map(|(i, k)| {
            if !k.key.is(origin.owner, origin.loopback, https, authority) || !k.sender.is_ready() {
                return None;
            }
            let lease = k.state.acquire(!k.sender.multiplexed())?;
            Some((Taken::Kept(i), lease))
        })
    })
}

/// A new connection through the fetcher's connector; kept for later exchanges unless the
/// thread keeps [`MAX_KEPT`] already.
async fn connect(
    origin: &Origin<'_>,
    https: bool,
    authority: &Authority,
) -> Result<(Taken, Lease)> {
    let mut connector = origin.connector.clone();
    let io = connector.call(connect_target(https, authority)?).await.map_err(|e| {
        let error = core_error_in(&*e)
            .unwrap_or_else(|| connect_error("could not connect to the upstream"));
        tracing::warn!(host = %origin.host, kind = "connect", code = error.code().as_str(), "upstream fetch failed");
        error
    })?;
    let h2 = io.connected().is_negotiated_h2();
    let state = State::new();
    let handshake_failed = |_| {
        tracing::warn!(host = %origin.host, kind = "connect", "upstream handshake failed");
        connect_error("could not connect to the upstream")
    };
    let sender = if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        tokio::spawn(drive(conn, state.clone(), IDLE));
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(handshake_failed)?;
        tokio::spawn(drive(conn, state.clone(), IDLE));
        Sender::H1(sender)
    };
    let lease = state
        .acquire(!sender.multiplexed())
        .ok_or_else(|| connect_error("could not connect to the upstream"))?;
    let taken = KEPT.with(|cell| {
        let mut kept = cell.borrow_mut();
        // Entries that died while this connected do not hold a place.
        prune(&mut kept);
        if kept.len() >= MAX_KEPT && !make_room(&mut kept) {
            return Taken::Own(sender);
        }
        kept.push(Kept {
            key: Key {
                owner: Arc::downgrade(origin.owner),
                loopback: origin.loopback,
                https,
                authority: authority.clone(),
            },
            sender,
            state,
        });
        Taken::Kept(kept.len() - 1)
    });
    Ok((taken, lease))
}

/// Close the kept connection idle longest (no lease) to make room for a new one: false when
/// every kept connection is in use.
fn make_room(kept: &mut Vec<Kept>) -> bool {
    let oldest = kept
        .iter()
        .enumerate()
        .filter(|(_, k)| k.state.leases.load(Ordering::Acquire) == 0)
        .min_by_key(|(_, k)| k.state.released_ms.load(Ordering::Acquire))
        .map(|(i, _)| i);
    let Some(i) = oldest else {
        return false;
    };
    // Closing for good (no checkout can take it now); dropping its sender ends the connection.
    // If the compare-and-swap lost, it lost to its driver closing it (a lease is taken only
    // here, on this thread): gone either way.
    let _ = kept[i].state.close_if_idle(Duration::ZERO);
    kept.swap_remove(i);
    true
}

/// What the connector is asked to reach: the origin only (`scheme://authority/`), never the
/// request's path or query.
fn connect_target(https: bool, authority: &Authority) -> Result<http::Uri> {
    absolute(https, authority, PathAndQuery::from_static("/"))
}

/// A connection's driver: it runs until the connection ends, or until it has had no lease for
/// `idle` ([`IDLE`]; then it is dropped, which closes the connection).
async fn drive<F: std::future::Future>(conn: F, state: Arc<State>, idle: Duration) {
    let idle = async {
        let mut wait = idle;
        loop {
            tokio::time::sleep(wait).await;
            match state.close_if_idle(idle) {
                Ok(()) => return,
                Err(next) => wait = next,
            }
        }
    };
    tokio::select! {
        _ = conn => {}
        () = idle => {}
    }
    state.close();
}

/// `Host` from the URI (the client's own, whatever the caller sent; the port only when it is
/// not the scheme's default), as hyper-util's pooled client set it.
fn host_value(uri: &http::Uri, https: bool) -> Result<HeaderValue> {
    let Some(host) = uri.host() else {
        return Err(Error::bad_request("the upstream URL has no host"));
    };
    match uri.port_u16() {
        Some(p) if !((p == 443 && https) || (p == 80 && !https)) => {
            let mut v = String::with_capacity(host.len() + 6);
            v.push_str(host);
            v.push(':');
            v.push_str(itoa::Buffer::new().format(p));
            HeaderValue::from_str(&v)
        }
        _ => HeaderValue::from_str(host),
    }
    .map_err(|_| Error::bad_request("the upstream URL's host is not a valid header value"))
}

/// `/path?query` for HTTP/1.1; `/` when there is none or it is empty (an empty one reads as
/// `/` but would be written as nothing).
fn origin_form(uri: &mut http::Uri) {
    *uri = match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => http::Uri::from(p.clone()),
        _ => http::Uri::from(PathAndQuery::from_static("/")),
    };
}

/// A failed send as the core sees it: a refusal raised by the upload body (a key in it, too
/// long) travels inside hyper's error and is returned as it is; anything else is an upstream
/// failure. The error itself is never formatted (its chain could name the URI).
fn send_error(e: &hyper::Error, host: &str) -> Error {
    let (kind, error) = match core_error_in(e) {
        Some(core) => ("refused", core),
        None => (
            "request",
            Error::new(ErrorKind::UpstreamFailed, "the upstream request failed"),
        ),
    };
    tracing::warn!(host = %host, kind, code = error.code().as_str(), "upstream fetch failed");
    error
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test setup

    use super::*;
    use bytes::Bytes;
    use http_body_util::{Either, Full};
    use hyper_util::rt::TokioIo;

    fn empty() -> RequestBody {
        Either::Left(Full::new(Bytes::new()))
    }

    /// An HTTP/1.1 sender on a connection to a 127.0.0.1 listener that accepts and never
    /// answers (enough to be kept and looked up), its driver spawned.
    async fn idle_h1_sender() -> Sender {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = http1::handshake::<_, RequestBody>(io).await.unwrap();
        tokio::spawn(conn);
        Sender::H1(sender)
    }

    /// A sender whose connection's driver was dropped, never run: it gives any request back.
    async fn dead_h1_sender() -> Sender {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let io = TokioIo::new(
            tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap(),
        );
        let (sender, conn) = http1::handshake::<_, RequestBody>(io).await.unwrap();
        drop(conn);
        Sender::H1(sender)
    }

    /// The fetcher's connector, every name resolving to 127.0.0.1:`port`, loopback allowed.
    fn loopback_connector(port: u16) -> Connector {
        super::super::build_connector(super::super::CheckedResolver {
            allow_loopback: true,
            lookup: super::super::Lookup::Fixed(vec![std::net::SocketAddr::from((
                [127, 0, 0, 1],
                port,
            ))]),
        })
        .unwrap()
    }

    fn kept(owner: &Arc<()>, host: &str, sender: Sender) -> Kept {
        Kept {
            key: Key {
                owner: Arc::downgrade(owner),
                loopback: true,
                https: false,
                authority: host.parse().unwrap(),
            },
            sender,
            state: State::new(),
        }
    }

    /// The index a checkout gave no longer names the entry its lease holds (the list changed
    /// in between): the request is refused, never sent on the connection now at that index.
    #[tokio::test]
    async fn a_stale_index_is_refused_not_sent_on_another_connection() {
        let owner = Arc::new(());
        KEPT.with(|c| c.borrow_mut().clear());
        let (a, b, c) = (
            idle_h1_sender().await,
            idle_h1_sender().await,
            idle_h1_sender().await,
        );
        KEPT.with(|cell| {
            let mut list = cell.borrow_mut();
            list.push(kept(&owner, "a.localhost", a));
            list.push(kept(&owner, "b.localhost", b));
        });
        let lease_b = KEPT
            .with(|cell| cell.borrow()[1].state.acquire(true))
            .unwrap();
        KEPT.with(|cell| {
            let mut list = cell.borrow_mut();
            list.swap_remove(0); // b moves to 0
            list.push(kept(&owner, "c.localhost", c)); // c takes index 1
        });
        let host = HeaderValue::from_static("b.localhost");
        let req = http::Request::get("http://b.localhost/")
            .body(empty())
            .unwrap();
        let sent = send_on(Taken::Kept(1), &lease_b, req, &host);
        assert_eq!(sent.err().map(|e| e.kind()), Some(ErrorKind::Internal));
        // The right index is taken.
        let req = http::Request::get("http://b.localhost/")
            .body(empty())
            .unwrap();
        assert!(send_on(Taken::Kept(0), &lease_b, req, &host).is_ok());
        KEPT.with(|c| c.borrow_mut().clear());
    }

    /// HTTP/2: the request goes with its absolute URI (`:scheme`, `:authority`) and no `Host`,
    /// even one with the default port written out (RFC 9113 §8.3.1).
    #[tokio::test]
    async fn http2_requests_carry_no_host_header() {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<(Option<String>, String)>();
        let tx = std::sync::Mutex::new(Some(tx));
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .map(|v| v.to_str().unwrap().to_string());
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send((host, req.uri().to_string()));
                }
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = http2::handshake::<_, _, RequestBody>(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut sender = Sender::H2(sender);
        let uri: http::Uri = "https://api.example:443/v1/items?x=1".parse().unwrap();
        let host = host_value(&uri, true).unwrap();
        assert_eq!(host, "api.example");
        // A `Host` the request still carries (one given back by an HTTP/1.1 connection) goes.
        let req = http::Request::get(uri)
            .header(header::HOST, "evil.example")
            .body(empty())
            .unwrap();
        let Ok(response) = dispatch(&mut sender, req, &host).await else {
            panic!("the HTTP/2 exchange failed");
        };
        assert_eq!(response.status(), http::StatusCode::OK);
        let (seen_host, seen_uri) = rx.await.unwrap();
        assert_eq!(seen_host, None);
        assert_eq!(seen_uri, "https://api.example:443/v1/items?x=1");
    }

    /// A reused connection that gives the request back unsent (here: its driver is gone, as
    /// when the upstream's close lands between checkout and send): the request goes once more,
    /// whole and to the same place, on a new connection through the connector.
    #[tokio::test]
    async fn a_request_given_back_unsent_goes_once_more_on_a_new_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).await.unwrap() == 1 {
                head.push(byte[0]);
            }
            let mut body = [0u8; 4];
            sock.read_exact(&mut body).await.unwrap();
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            (String::from_utf8_lossy(&head).into_owned(), body)
        });
        let dead = dead_h1_sender().await;
        let state = State::new();
        let lease = state.acquire(true).unwrap();
        let owner = Arc::new(());
        let connector = loopback_connector(port);
        let origin = Origin {
            owner: &owner,
            connector: &connector,
            loopback: true,
            host: "localhost",
        };
        let uri: http::Uri = format!("http://localhost:{port}/v1/again?n=1")
            .parse()
            .unwrap();
        let authority = uri.authority().cloned().unwrap();
        let req = http::Request::post(uri)
            .body(Either::Left(Full::new(Bytes::from_static(b"body"))))
            .unwrap();
        let Ok((response, _lease)) = send_from(
            origin,
            req,
            false,
            &authority,
            Some((Taken::Own(dead), lease)),
        )
        .await
        else {
            panic!("the request was not sent again");
        };
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        let (head, body) = server.await.unwrap();
        assert_eq!(&body, b"body", "the body sent again whole");
        assert!(
            head.starts_with("POST /v1/again?n=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: localhost:{port}")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("content-length: 4"),
            "{head}"
        );
        KEPT.with(|c| c.borrow_mut().clear());
    }

    /// A request given back after HTTP/1.1 rewrote it gets its absolute URI again (for an
    /// HTTP/2 connection next, which takes `:scheme` and `:authority` from it).
    #[test]
    fn a_request_given_back_is_restored_to_its_absolute_uri() {
        let uri: http::Uri = "https://api.example/v1/x?q=1".parse().unwrap();
        let mut req = http::Request::post(uri.clone()).body(empty()).unwrap();
        origin_form(req.uri_mut());
        assert_eq!(req.uri().to_string(), "/v1/x?q=1");
        let back = restored(req, true, uri.authority().unwrap()).unwrap();
        assert_eq!(back.uri(), &uri);
        assert_eq!(back.method(), http::Method::POST);
    }

    /// A request goes at most twice: given back (or failed) by the new connection of its
    /// retry, it fails, with no third connection (review of decision 0134, second pass).
    #[tokio::test]
    async fn a_retry_is_made_once_and_never_from_a_new_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            // Each connection is closed as soon as it is accepted.
            while let Ok((sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(sock);
            }
        });
        let owner = Arc::new(());
        let connector = loopback_connector(port);
        let uri: http::Uri = format!("http://localhost:{port}/").parse().unwrap();
        let authority = uri.authority().cloned().unwrap();
        for round in 1..=10 {
            let dead = dead_h1_sender().await;
            let state = State::new();
            let lease = state.acquire(true).unwrap();
            let origin = Origin {
                owner: &owner,
                connector: &connector,
                loopback: true,
                host: "localhost",
            };
            let req = http::Request::get(uri.clone()).body(empty()).unwrap();
            let sent = send_from(
                origin,
                req,
                false,
                &authority,
                Some((Taken::Own(dead), lease)),
            )
            .await;
            assert!(
                sent.is_err(),
                "round {round}: an answer from a closed connection"
            );
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                round,
                "round {round}: connections"
            );
        }
        KEPT.with(|c| c.borrow_mut().clear());
    }

    #[test]
    fn host_and_request_target_as_http1_wants_them() {
        let at = |u: &str, https| host_value(&u.parse().unwrap(), https).unwrap();
        assert_eq!(at("http://a.example/x", false), "a.example");
        assert_eq!(at("http://a.example:80/x", false), "a.example");
        assert_eq!(at("http://a.example:8080/x", false), "a.example:8080");
        assert_eq!(at("https://a.example:443/x", true), "a.example");
        assert_eq!(at("https://a.example:80/x", true), "a.example:80");
        assert_eq!(at("http://[::1]:9/x", false), "[::1]:9");
        let target = |u: http::Uri| {
            let mut u = u;
            origin_form(&mut u);
            u.to_string()
        };
        assert_eq!(target("http://a.example/p?q=1".parse().unwrap()), "/p?q=1");
        assert_eq!(target("http://a.example".parse().unwrap()), "/");
        let bare = http::Uri::builder()
            .scheme("http")
            .authority("a.example")
            .path_and_query("")
            .build()
            .unwrap();
        assert_eq!(target(bare), "/");
    }

    /// The connector is asked for the origin only: no path, no query (which may carry a
    /// secret the credential put there).
    #[test]
    fn the_connector_sees_the_origin_only() {
        let authority = Authority::from_static("api.example:8443");
        let uri = connect_target(true, &authority).unwrap();
        assert_eq!(uri.to_string(), "https://api.example:8443/");
        assert_eq!(
            connect_target(false, &authority).unwrap().scheme_str(),
            Some("http")
        );
    }

    #[test]
    fn a_closed_connection_stays_closed_when_its_leases_end() {
        let state = State::new();
        let (a, b) = (state.acquire(false).unwrap(), state.acquire(false).unwrap());
        state.close();
        drop(a);
        drop(b);
        assert!(state.is_closed());
        assert!(state.acquire(false).is_none());
        assert!(state.acquire(true).is_none());
    }

    #[test]
    fn an_http1_connection_carries_one_exchange_at_a_time() {
        let state = State::new();
        let first = state.acquire(true).expect("free");
        assert!(state.acquire(true).is_none(), "taken twice");
        drop(first);
        assert!(state.acquire(true).is_some(), "released");
        // HTTP/2: any number at once.
        let (a, b) = (state.acquire(false), state.acquire(false));
        assert!(a.is_some() && b.is_some());
    }

    #[test]
    fn a_connection_is_closed_only_after_a_whole_idle_period_without_a_lease() {
        let state = State::new();
        let idle = Duration::from_millis(30);
        let lease = state.acquire(true).expect("free");
        assert!(state.close_if_idle(idle).is_err(), "closed while leased");
        drop(lease);
        assert!(state.close_if_idle(idle).is_err(), "closed at once");
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            state.close_if_idle(idle).is_ok(),
            "kept past its idle period"
        );
        assert!(state.acquire(false).is_none(), "taken while closing");
    }

    /// The driver drops its connection (a future that never ends here) once it has had no
    /// lease for the idle period — and not while a lease is held.
    #[tokio::test]
    async fn the_driver_drops_an_idle_connection_and_keeps_a_leased_one() {
        let state = State::new();
        let lease = state.acquire(true).expect("free");
        let idle = Duration::from_millis(30);
        let driver = tokio::spawn(drive(std::future::pending::<()>(), state.clone(), idle));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!driver.is_finished(), "dropped while leased");
        drop(lease);
        tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the idle connection was kept")
            .expect("driver");
        assert_eq!(state.leases.load(Ordering::Acquire), CLOSED);
    }
}
