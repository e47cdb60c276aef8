//! The local HTTP server: hyper HTTP/1.1 on a `TcpListener`, every request handed to
//! [`App::handle`]. The server only converts types, caps body size, and attaches the peer address;
//! all logic lives in the core.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use vultrino_core::api::error_response;
use vultrino_core::app::App;
use vultrino_core::auth::ClientIp;
use vultrino_core::body::{Body as CoreBody, BodyStream};
use vultrino_core::error::Code;
use vultrino_core::ports::{Background, BackgroundTask};
use vultrino_core::{Error, ErrorKind};

/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);
/// How long a client gets to send its whole request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A client whose declared body is a little over the cap is usually still writing it when the
/// 413 is sent. Closing at once would reset its upload, and many clients then report the reset
/// instead of the 413; so a body at most this much over the cap is read and dropped (for at
/// most [`DRAIN_TIME`]) while the 413 goes out, and the connection stays usable. A body
/// declared larger than that is not read: the connection is closed after the 413.
const DRAIN_MAX_BYTES: u64 = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Read and drop `body`, at most [`DRAIN_TIME`] (see [`DRAIN_MAX_BYTES`]): its declared length
/// bounds the bytes read.
async fn drain_body(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Serve `app` on `listener` until `shutdown` completes, then drain connections gracefully.
///
/// Everything runs on the caller's runtime. `vultrino serve` uses [`serve_per_core`] instead;
/// this is the simple form for embedding (examples/local_server.rs).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Some((stream, peer)) = accepted_or_back_off(accepted).await {
                    spawn_connection(&graceful, stream, peer, app.clone());
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    log_drained(drain(graceful).await);
    Ok(())
}

/// Serve `app` with `threads` worker threads, each running its own single-threaded runtime,
/// until `shutdown` completes; then every worker drains its connections gracefully.
///
/// The caller's task accepts connections and hands them to the workers in turn; a connection
/// then lives on one worker for its whole life, together with the outbound connections its
/// requests use (the fetcher keeps a pool per thread). No request crosses threads, so none pays
/// for cross-thread wake-ups — on the 2-core development machine this cut the server's CPU per
/// request and the added latency against one multi-threaded runtime
/// (docs/decisions/0026-one-runtime-per-core.md). Connections are spread evenly however they
/// arrive, with no `SO_REUSEPORT` (which would let another process of the same user share the
/// port).
///
/// Each worker busy-polls for `busy_poll` after request activity before it sleeps
/// ([`crate::busy_poll`]; zero turns it off).
pub async fn serve_per_core(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    threads: usize,
    busy_poll: Duration,
) -> std::io::Result<()> {
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        // Built here, so that a worker that cannot start fails `serve` at once.
        // Its blocking pool (DNS lookups; the file store has threads of its own, decision
        // 0126) is bounded per worker.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(64)
            .build()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = app.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vultrino-worker-{i}"))
            .spawn(move || runtime.block_on(worker(rx, app, busy_poll)))?;
        workers.push(tx);
        handles.push(handle);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    let mut failed = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((stream, peer)) = accepted_or_back_off(accepted).await else { continue };
                let mut conn = match stream.into_std() {
                    Ok(s) => (s, peer),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not hand over a connection");
                        continue;
                    }
                };
                // Round robin; a worker that has gone away is skipped.
                let mut delivered = false;
                for _ in 0..workers.len() {
                    let tx = &workers[next % workers.len()];
                    next = next.wrapping_add(1);
                    match tx.send(conn) {
                        Ok(()) => {
                            delivered = true;
                            break;
                        }
                        Err(back) => conn = back.0,
                    }
                }
                if !delivered {
                    tracing::error!("every worker thread has stopped; shutting down");
                    failed = true;
                    break;
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // Closing the channels tells every worker to drain and stop.
    drop(workers);
    let joined = tokio::task::spawn_blocking(move || {
        let mut all_closed = true;
        for h in handles {
            match h.join() {
                Ok(closed) => all_closed &= closed,
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
        all_closed
    })
    .await;
    match joined {
        Ok(all_closed) => log_drained(all_closed),
        Err(_) => tracing::error!("could not wait for the worker threads"),
    }
    if failed {
        // Exit non-zero, so that a supervisor restarts the server.
        return Err(std::io::Error::other("every worker thread stopped"));
    }
    Ok(())
}

/// One worker thread: serve every connection handed over until the channel closes, then drain
/// (whether every connection closed in the grace period).
async fn worker(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    app: Arc<App>,
    busy_poll: Duration,
) -> bool {
    crate::busy_poll::start(busy_poll);
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = rx.recv().await {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => spawn_connection(&graceful, stream, peer, app.clone()),
            Err(e) => tracing::warn!(error = %e, "could not take over a connection"),
        }
    }
    drain(graceful).await
}

/// The accepted connection, or `None` after a short pause when accept failed (out of file
/// descriptors and the like: back off instead of spinning).
async fn accepted_or_back_off(
    accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match accepted {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Serve one connection on the current runtime, watched by `graceful`.
fn spawn_connection(
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
) {
    let service = service_fn(move |req| handle(app.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Give open connections [`GRACE`] to finish: whether they all did. The caller logs the
/// outcome, once for the whole server (not once per worker thread).
async fn drain(graceful: GracefulShutdown) -> bool {
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(GRACE) => false,
    }
}

/// Log how the drain of every connection ended, once.
fn log_drained(all_closed: bool) {
    if all_closed {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ServerBody>, std::convert::Infallible> {
    let _busy = crate::busy_poll::request();
    handle_inner(app, peer, req).await
}

/// An error answered before the core sees the request; on the proxy's paths it carries
/// `X-Vultrino-Error` as the core's own refusals there do.
fn refuse(err: &Error, path: &str) -> hyper::Response<ServerBody> {
    if vultrino_core::proxy::is_proxy_path(path) {
        return vultrino_core::proxy::refusal(err).map(ServerBody::new);
    }
    error_response(err).map(ServerBody::full)
}

async fn handle_inner(
    app: Arc<App>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ServerBody>, std::convert::Infallible> {
    let (mut parts, body) = req.into_parts();
    if rebound(&app, peer, &parts.headers) {
        let err = Error::forbidden(
            "this server answers requests over loopback only for localhost and IP addresses: a \
             page under another name that resolves here (DNS rebinding) is refused; behind a \
             reverse proxy, pass --trust-forwarded-for",
        )
        .with_code(Code::CsrfFailed);
        return Ok(refuse(&err, parts.uri.path()));
    }
    // The pass-through proxy streams the body upstream as it arrives (the core caps it; the
    // body's own idle and total deadlines bound a slow client, also while the core holds the
    // body whole for a method-list policy); every other route gets it whole.
    let streamed = vultrino_core::proxy::is_proxy_path(parts.uri.path());
    let limit = if streamed {
        app.config().proxy_max_request_bytes
    } else {
        app.config().max_request_bytes
    };
    // A declared Content-Length over the cap is refused before any of the body is read (a
    // body without one is cut off by `Limited` as soon as it passes the cap).
    let declared = hyper::body::Body::size_hint(&body).lower();
    if declared > limit as u64 {
        let err = Error::too_large("request body is too large").with_code(Code::BodyTooLarge);
        if declared - limit as u64 <= DRAIN_MAX_BYTES {
            tokio::spawn(drain_body(body));
        }
        return Ok(refuse(&err, parts.uri.path()));
    }
    let body = if streamed {
        let config = app.config();
        incoming_body(
            body,
            Duration::from_millis(config.stream_idle_timeout_ms),
            Duration::from_millis(config.stream_total_timeout_ms),
        )
    } else {
        // A deadline on the body too: a client trickling bytes must not hold a connection forever.
        let collected =
            tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
        match collected {
            Err(_) => {
                return Ok(refuse(&body_timeout(), parts.uri.path()));
            }
            Ok(Ok(c)) => CoreBody::full(c.to_bytes()),
            Ok(Err(e)) => {
                let err = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Error::too_large("request body is too large").with_code(Code::BodyTooLarge)
                } else {
                    Error::bad_request("could not read the request body")
                        .with_code(Code::InvalidBody)
                };
                return Ok(refuse(&err, parts.uri.path()));
            }
        }
    };
    parts.extensions.insert(ClientIp(peer.ip()));
    let background = Some(tokio_background());
    // Request logging costs allocations on the hot path: only when DEBUG is on.
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return Ok(app
            .serve(http::Request::from_parts(parts, body), background)
            .await
            .map(ServerBody::new));
    }
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let resp = app
        .serve(http::Request::from_parts(parts, body), background)
        .await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(resp.map(ServerBody::new))
}

/// 408 `body_timeout`: the client did not send its request body in time.
fn body_timeout() -> Error {
    Error::new(
        ErrorKind::RequestTimeout,
        "request body not received in time",
    )
    .with_code(Code::BodyTimeout)
}

/// A client's request body as the core's streamed body, chunk by chunk as it arrives (its
/// declared length kept). A client that breaks off mid-body makes the stream yield an error, so
/// the upload upstream is aborted rather than ended as if whole. A client silent for `idle`
/// between two chunks, or still sending `total` after the request came, makes it yield 408
/// `body_timeout` (a slow-loris upload holds neither a connection nor, when the core reads the
/// body whole for a method-list policy, memory for longer; review finding 5). The stream ends
/// after its first error.
fn incoming_body(body: Incoming, idle: Duration, total: Duration) -> CoreBody {
    let len = hyper::body::Body::size_hint(&body).exact();
    let ends_at = tokio::time::Instant::now() + total;
    let stream = futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            let deadline = ends_at.min(tokio::time::Instant::now() + idle);
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                return Some((Err(body_timeout()), None));
            };
            match frame? {
                Ok(frame) => match frame.into_data() {
                    Ok(chunk) if !chunk.is_empty() => return Some((Ok(chunk), Some(body))),
                    _ => continue, // trailers, empty frames
                },
                Err(_) => {
                    let e = Error::bad_request("could not read the request body")
                        .with_code(Code::InvalidBody);
                    return Some((Err(e), None));
                }
            }
        }
    });
    match len {
        Some(n) => CoreBody::from_stream_with_len(stream, n),
        None => CoreBody::from_stream(stream),
    }
}

/// Runs the core's after-the-reply work (the audit event of a streamed reply) on the current
/// tokio runtime.
struct TokioBackground;

/// The one [`TokioBackground`] every request shares (no allocation per request).
fn tokio_background() -> Arc<dyn Background> {
    static BACKGROUND: std::sync::OnceLock<Arc<dyn Background>> = std::sync::OnceLock::new();
    BACKGROUND.get_or_init(|| Arc::new(TokioBackground)).clone()
}

impl Background for TokioBackground {
    fn spawn(&self, task: BackgroundTask) {
        tokio::spawn(task);
    }
}

/// A reply body as hyper sends it: whole, or the core's stream chunk by chunk. An `Err` from
/// the stream makes hyper abort the connection (a chunked body never gets its last chunk; a
/// declared length is never reached), so a client never takes a cut body for a whole one.
pub struct ServerBody {
    whole: Option<Bytes>,
    stream: Option<(BodyStream, Option<u64>)>,
}

impl ServerBody {
    fn full(bytes: Bytes) -> ServerBody {
        ServerBody {
            whole: Some(bytes),
            stream: None,
        }
    }

    fn new(body: CoreBody) -> ServerBody {
        match body.as_full() {
            Some(bytes) => ServerBody::full(bytes.clone()),
            None => {
                let len = body.len_hint();
                ServerBody {
                    whole: None,
                    stream: Some((body.into_stream(), len)),
                }
            }
        }
    }
}

impl hyper::body::Body for ServerBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Error>>> {
        use std::task::Poll;
        if let Some(bytes) = self.whole.take() {
            return Poll::Ready((!bytes.is_empty()).then(|| Ok(hyper::body::Frame::data(bytes))));
        }
        let Some((stream, _)) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk)))),
            Poll::Ready(Some(Err(e))) => {
                self.stream = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.stream = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.whole, &self.stream) {
            (Some(b), _) => b.is_empty(),
            (None, Some(_)) => false,
            (None, None) => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.whole, &self.stream) {
            (Some(b), _) => hyper::body::SizeHint::with_exact(b.len() as u64),
            (None, Some((_, Some(n)))) => hyper::body::SizeHint::with_exact(*n),
            (None, Some((_, None))) => hyper::body::SizeHint::default(),
            (None, None) => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// Whether a request that came over loopback names this server by a name of someone else's: a
/// `Host` that is a domain other than `localhost` (or a name under it). Browsers put the page's
/// own name there, so a web page whose name an attacker resolved to 127.0.0.1 (DNS rebinding)
/// would otherwise reach the local server as a same-origin caller — past the same-origin rule of
/// `POST /login`, spending the admin's login attempts from the admin's own address. IP
/// addresses and `localhost` are names no web page can have for itself. A server behind a
/// reverse proxy (`--trust-forwarded-for`) receives the proxy's names, which the proxy chose:
/// not checked. (Review of issue 18.)
fn rebound(app: &App, peer: SocketAddr, headers: &http::HeaderMap) -> bool {
    if !peer.ip().is_loopback() || app.config().trust_forwarded_for {
        return false;
    }
    let Some(host) = headers.get(http::header::HOST) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return true;
    };
    !is_loopback_name(host)
}

/// `localhost`, `*.localhost` or an IP literal, with or without a port.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim();
    if let Some(bracketed) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]` or `[::1]:8080`.
        let Some((literal, rest)) = bracketed.split_once(']') else {
            return false;
        };
        return literal.parse::<std::net::Ipv6Addr>().is_ok()
            && (rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port));
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves when SIGINT or SIGTERM arrives. The handlers are installed when this is called, not
/// when the future is first polled: call it before announcing that the server listens, so that a
/// signal sent right after the announcement stops the server gracefully too (and it removes its
/// `server.json`) instead of killing it. Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(term) => {},
                () = recv(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; draining connections");
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn only_localhost_and_ip_literals_are_loopback_names() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LocalHost:80",
            "localhost.:8080",
            "app.localhost:3000",
            "[::1]",
            "[::1]:8080",
            "10.0.0.5:8080",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in [
            "rebind.attacker.example:8080",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "localhost:80:80",
            "localhost:http",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }
}
