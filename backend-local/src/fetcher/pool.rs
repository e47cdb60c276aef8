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
//! - **Bounded**: at most [`MAX_KEPT`] connections are kept per thread; past that, a new
//!   connection serves its one exchange and is closed.
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

/// Most connections kept per thread (all fetchers, modes and origins together).
pub(super) const MAX_KEPT: usize = 256;

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

/// What a connection's leases and its idle watch share.
struct State {
    /// Exchanges holding the connection, or [`CLOSED`].
    leases: AtomicU32,
    /// When the last lease ended, in ms since [`State::born`].
    released_ms: AtomicU64,
    born: Instant,
}

impl State {
    fn new() -> Arc<State> {
        Arc::new(State {
            leases: AtomicU32::new(0),
            released_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        let since = self
            .now_ms()
            .saturating_sub(self.released_ms.load(Ordering::Acquire));
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

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.released_ms.store(state.now_ms(), Ordering::Release);
            state.leases.fetch_sub(1, Ordering::AcqRel);
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
    mut request: http::Request<RequestBody>,
) -> Result<(http::Response<hyper::body::Incoming>, Lease)> {
    let https = request.uri().scheme() == Some(&Scheme::HTTPS);
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(Error::bad_request("the upstream URL has no host"));
    };
    set_host(&mut request, https)?;
    let mut reused = true;
    let mut taken = checkout(&origin, https, &authority);
    loop {
        let (sender, lease) = match taken.take() {
            Some(found) => found,
            None => {
                reused = false;
                connect(&origin, https, &authority, request.uri()).await?
            }
        };
        let mut e = match send_on(sender, request)?.await {
            Ok(response) => return Ok((response, lease)),
            Err(e) => e,
        };
        match e.take_message() {
            // Given back unsent by a connection that was reused: once more, on a new one.
            Some(back) if reused => request = back,
            _ => return Err(send_error(e.error(), origin.host)),
        }
    }
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

/// Hand the request to its connection. (Its kept entry cannot disappear between checkout and
/// now: one thread, no await in between; `Internal` if it did.)
fn send_on(sender: Taken, request: http::Request<RequestBody>) -> Result<Pending> {
    match sender {
        Taken::Kept(index) => KEPT.with(|cell| {
            let mut kept = cell.borrow_mut();
            match kept.get_mut(index) {
                Some(k) => Ok(dispatch(&mut k.sender, request)),
                None => Err(Error::internal()),
            }
        }),
        Taken::Own(mut sender) => Ok(dispatch(&mut sender, request)),
    }
}

fn dispatch(sender: &mut Sender, mut req: http::Request<RequestBody>) -> Pending {
    match sender {
        Sender::H1(s) => {
            origin_form(req.uri_mut());
            Box::pin(s.try_send_request(req))
        }
        Sender::H2(s) => Box::pin(s.try_send_request(req)),
    }
}

/// A connection to send on: one kept at this index of the thread's list, or one of its own
/// (not kept: past [`MAX_KEPT`]; closed once its exchange ends).
enum Taken {
    Kept(usize),
    Own(Sender),
}

fn checkout(origin: &Origin<'_>, https: bool, authority: &Authority) -> Option<(Taken, Lease)> {
    KEPT.with(|cell| {
        let mut kept = cell.borrow_mut();
        kept.retain(|k| {
            !k.sender.is_closed()
                && k.state.leases.load(Ordering::Acquire) != CLOSED
                && k.key.owner.strong_count() > 0
        });
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
    uri: &http::Uri,
) -> Result<(Taken, Lease)> {
    let mut connector = origin.connector.clone();
    let io = connector.call(uri.clone()).await.map_err(|e| {
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
        if kept.len() >= MAX_KEPT {
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
    state.leases.store(CLOSED, Ordering::Release);
}

/// `Host` from the URI (the client's own, whatever the caller sent; the port only when it is
/// not the scheme's default), as hyper's pooled client sets it.
fn set_host(request: &mut http::Request<RequestBody>, https: bool) -> Result<()> {
    let uri = request.uri();
    let Some(host) = uri.host() else {
        return Err(Error::bad_request("the upstream URL has no host"));
    };
    let value = match uri.port_u16() {
        Some(p) if !((p == 443 && https) || (p == 80 && !https)) => {
            let mut v = String::with_capacity(host.len() + 6);
            v.push_str(host);
            v.push(':');
            v.push_str(itoa::Buffer::new().format(p));
            HeaderValue::from_str(&v)
        }
        _ => HeaderValue::from_str(host),
    }
    .map_err(|_| Error::bad_request("the upstream URL's host is not a valid header value"))?;
    request.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// `/path?query` for HTTP/1.1 (`/` when there is none).
fn origin_form(uri: &mut http::Uri) {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = http::Uri::from(path);
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
    use super::*;

    #[test]
    fn an_http1_connection_carries_one_exchange_at_a_time() {
        let state = State::new();
        let first = state.acquire(true).expect("free");
        assert!(state.acquire(true).is_none(), "taken twice");
        drop(first);
        assert!(state.acquire(true).is_some(), "released");
        // HTTP/2: any number at once.
        let (_a, _b) = (state.acquire(false), state.acquire(false));
        assert!(_a.is_some() && _b.is_some());
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
