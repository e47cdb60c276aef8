//! The reference point of the load benchmark: a bare HTTP/1.1 pass-through proxy with no logic at
//! all (no auth, policy, crypto, scrubbing or audit). Every request it receives becomes one
//! `GET $UPSTREAM/user` on a pooled keep-alive connection, and the upstream's body comes back.
//! It measures what two HTTP exchanges per request cost on this machine, so that Vultrino's
//! figures can be read against the floor any proxy on the same stack pays.
//!
//! - `PROXY_CLIENT=hyper|reqwest`: the outbound client (hyper-util's pooled client by default).
//! - `PROXY_RUNTIME=multi|per-core`: one multi-threaded tokio runtime (default, as `vultrino`
//!   runs), or one single-threaded runtime per core, each with its own `SO_REUSEPORT` listener
//!   and its own client pool.
//! - `PROXY_BUSY_POLL_US` (per-core only, default as `vultrino serve`): busy-poll window after
//!   request activity, the same mechanism as Vultrino's (`vultrino_local::busy_poll`); 0 is off.
//!
//! `GET /stream` (hyper client only) instead forwards to `$UPSTREAM/stream` and passes the reply's
//! body on as it arrives, chunk by chunk: the reference for time to first byte of a streamed reply.
//!
//! `UPSTREAM=http://127.0.0.1:PORT bench-proxy 127.0.0.1:0` prints `listening on ADDR`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket};

#[allow(clippy::large_enum_variant)] // built once per runtime
enum Outbound {
    Hyper(Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>),
    Reqwest(reqwest::Client),
}

impl Outbound {
    fn new() -> std::io::Result<Outbound> {
        Ok(match std::env::var("PROXY_CLIENT").as_deref() {
            Ok("reqwest") => Outbound::Reqwest(
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(std::io::Error::other)?,
            ),
            _ => Outbound::Hyper(Client::builder(TokioExecutor::new()).build_http()),
        })
    }

    async fn get(&self, uri: &str) -> Option<Bytes> {
        match self {
            Outbound::Hyper(c) => {
                let resp = c.get(uri.parse().ok()?).await.ok()?;
                Some(resp.into_body().collect().await.ok()?.to_bytes())
            }
            Outbound::Reqwest(c) => c.get(uri).send().await.ok()?.bytes().await.ok(),
        }
    }

    /// The upstream's reply body as it arrives (hyper client only).
    async fn stream(&self, uri: &str) -> Option<Body> {
        match self {
            Outbound::Hyper(c) => Some(
                c.get(uri.parse().ok()?)
                    .await
                    .ok()?
                    .into_body()
                    .boxed_unsync(),
            ),
            Outbound::Reqwest(_) => None,
        }
    }
}

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Accept and proxy forever on `listener`.
async fn serve(listener: TcpListener, uri: Arc<str>) -> std::io::Result<()> {
    let stream_uri: Arc<str> = uri.replace("/user", "/stream").into();
    let outbound = Arc::new(Outbound::new()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let outbound = outbound.clone();
        let uri = uri.clone();
        let stream_uri = stream_uri.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let outbound = outbound.clone();
                let uri = uri.clone();
                let stream_uri = stream_uri.clone();
                async move {
                    let _busy = vultrino_local::busy_poll::request();
                    let streamed = req.uri().path() == "/stream";
                    let _ = req.into_body().collect().await;
                    if streamed {
                        if let Some(body) = outbound.stream(&stream_uri).await {
                            return Ok::<_, Infallible>(hyper::Response::new(body));
                        }
                    }
                    let body = outbound.get(&uri).await.unwrap_or_default();
                    let body = Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    Ok(hyper::Response::new(body))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseport(true)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A `SO_REUSEPORT` listener made outside any runtime, for a runtime to adopt later.
fn reuseport_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    reuseport_listener(addr)?.into_std()
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:80".into());
    let uri: Arc<str> = format!("{upstream}/user").into();
    if std::env::var("PROXY_RUNTIME").as_deref() == Ok("per-core") {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let busy_poll = std::time::Duration::from_micros(
            std::env::var("PROXY_BUSY_POLL_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(vultrino_local::busy_poll::DEFAULT_WINDOW_US),
        );
        // The first listener fixes the port; the others join it.
        let first = reuseport_std(addr)?;
        let bound = first.local_addr()?;
        println!("listening on {bound}");
        let mut threads = Vec::new();
        let mut listeners = vec![first];
        for _ in 1..cores {
            listeners.push(reuseport_std(bound)?);
        }
        for std_listener in listeners {
            let uri = uri.clone();
            threads.push(std::thread::spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    vultrino_local::busy_poll::start(busy_poll);
                    serve(TcpListener::from_std(std_listener)?, uri).await
                })
            }));
        }
        for t in threads {
            let _ = t.join();
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        serve(listener, uri).await
    })
}
