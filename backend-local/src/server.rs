//! The local HTTP server: hyper HTTP/1.1 on a `TcpListener`, every request handed to
//! [`App::handle`]. The server only converts types, caps body size, and attaches the peer address;
//! all logic lives in the core.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use vultrino_core::api::{error_response, ClientIp};
use vultrino_core::app::App;
use vultrino_core::{Error, ErrorKind};

/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);
/// How long a client gets to send its whole request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` until `shutdown` completes, then drain connections gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
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
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let limit = app.config().max_request_bytes;
    let (mut parts, body) = req.into_parts();
    // A deadline on the body too: a client trickling bytes must not hold a connection forever.
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    let bytes = match collected {
        Err(_) => {
            let err = Error::new(ErrorKind::BadRequest, "request body not received in time")
                .with_code("body_timeout");
            return Ok(error_response(&err).map(Full::new));
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::too_large("request body is too large").with_code("body_too_large")
            } else {
                Error::bad_request("could not read the request body").with_code("invalid_body")
            };
            return Ok(error_response(&err).map(Full::new));
        }
    };
    parts.extensions.insert(ClientIp(peer.ip()));
    // Request logging costs allocations on the hot path: only when DEBUG is on.
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return Ok(app
            .handle(http::Request::from_parts(parts, bytes))
            .await
            .map(Full::new));
    }
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let resp = app.handle(http::Request::from_parts(parts, bytes)).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(resp.map(Full::new))
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining connections");
}
