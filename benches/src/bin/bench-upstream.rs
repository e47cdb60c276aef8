//! A fast loopback upstream for the load benchmark: answers every request with a small fixed
//! JSON body and fixed headers (its `Date` too), HTTP/1.1 keep-alive. `bench-upstream 127.0.0.1:0` prints `listening on ADDR`.
//!
//! `GET /stream` answers a chunked `text/event-stream` instead, for time to first byte: one event
//! sent with the head, the second and last one 20 ms later, so a proxy that buffered the reply
//! would deliver its first byte 20 ms late.

use std::convert::Infallible;

use bytes::Bytes;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &[u8] =
    br#"{"login":"octocat","id":1,"plan":{"name":"free"},"note":"a small upstream reply"}"#;
const EVENT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n";
const LAST: &[u8] = b"data: [DONE]\n\n";

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn streamed() -> hyper::Response<Body> {
    let frames = futures::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok(Frame::data(Bytes::from_static(EVENT))), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok(Frame::data(Bytes::from_static(LAST))), 2))
            }
            _ => None,
        }
    });
    let mut r = hyper::Response::new(UnsyncBoxBody::new(StreamBody::new(frames)));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let threads: usize = std::env::var("UPSTREAM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/stream" {
                        return Ok::<_, Infallible>(streamed());
                    }
                    let mut r: hyper::Response<Body> =
                        hyper::Response::new(Full::new(Bytes::from_static(BODY)).boxed_unsync());
                    r.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    // A fixed `Date` (hyper adds the current one otherwise): a proxy scrubs every
                    // reply header, and the scrubber's prefilter does more or less work as the
                    // clock's digits change, which moved callgrind's exact per-request counts by
                    // up to ~3 k instructions from one second to the next (benches/README.md).
                    r.headers_mut().insert(
                        "date",
                        hyper::header::HeaderValue::from_static("Mon, 07 Dec 2026 12:00:00 GMT"),
                    );
                    Ok(r)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
