//! `serve --metrics-listen ADDR`: a listener of its own answering `GET /metrics` (the
//! Prometheus text format of [`vultrino_core::metrics`]) and nothing else, without
//! authentication, as Prometheus scrapes; off unless asked for, and loopback by default
//! (docs/decisions/0105-audit-view-and-metrics.md). The API listener never serves it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use vultrino_core::api::{error_response, security_headers};
use vultrino_core::app::App;
use vultrino_core::error::Code;
use vultrino_core::{Error, ErrorKind};

/// The content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once, at most: scrapers are few; past it a connection waits to be
/// accepted, so nobody who can reach the port can hold the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 64;

/// Answer scrapes on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = &mut shutdown => return,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let reply = answer(&app, req.method(), req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(reply) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => return,
        }
    }
}

/// The reply to one request: the exposition for `GET`/`HEAD /metrics`, 405 for another method
/// there, 404 JSON anywhere else.
fn answer(app: &App, method: &Method, path: &str) -> http::Response<Full<Bytes>> {
    let mut resp = match (path, method) {
        ("/metrics", &Method::GET | &Method::HEAD) => {
            let text = app.metrics_text().unwrap_or_default();
            let mut r = http::Response::new(Bytes::from(text));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        ("/metrics", _) => {
            let mut r = error_response(&Error::new(
                ErrorKind::MethodNotAllowed,
                "method not allowed on this route",
            ));
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => error_response(
            &Error::not_found("this listener serves /metrics only").with_code(Code::NotFound),
        ),
    };
    security_headers(resp.headers_mut());
    if method == Method::HEAD {
        *resp.body_mut() = Bytes::new();
    }
    resp.map(Full::new)
}
