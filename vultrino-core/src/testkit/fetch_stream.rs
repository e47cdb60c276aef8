//! The conformance checks of [`Fetcher::fetch_stream`]: one per `# Behavior` sentence that is
//! its own (the sentences it shares with [`Fetcher::fetch`] are checked by
//! [`super::fetcher`]'s suite), against the same upstream and route table
//! ([`super::fetcher`]'s module doc).
//!
//! [`STREAM_CHECKS_BUFFERED`] hold for every implementation, the provided buffering form
//! included; [`STREAM_CHECKS`] add the ones only a streaming implementation passes (a first
//! chunk before the end, idle time between chunks). Run them by name with
//! [`fetch_stream_check`], or all with [`fetch_stream_suite`].

use bytes::Bytes;
use futures_util::StreamExt;

use super::fetcher::FetchUpstream;
use super::{ensure, ok, refused};
use crate::body::Body;
use crate::error::{Code, Error, ErrorKind, Result};
use crate::ports::{Clock, Fetcher, StreamOptions};

/// The checks every `fetch_stream` passes, buffering ones included.
pub const STREAM_CHECKS_BUFFERED: [&str; 5] = [
    "fetch_stream_returns_status_headers_and_body",
    "fetch_stream_returns_redirects_unfollowed",
    "fetch_stream_sends_a_streamed_body_as_given",
    "fetch_stream_aborts_the_upload_on_a_body_error",
    "fetch_stream_times_out_waiting_for_the_head",
];

/// Every check, in the order [`fetch_stream_suite`] runs them: the buffered ones, then those
/// only streaming implementations pass.
pub const STREAM_CHECKS: [&str; 8] = [
    "fetch_stream_returns_status_headers_and_body",
    "fetch_stream_returns_redirects_unfollowed",
    "fetch_stream_sends_a_streamed_body_as_given",
    "fetch_stream_aborts_the_upload_on_a_body_error",
    "fetch_stream_times_out_waiting_for_the_head",
    "fetch_stream_returns_the_first_chunk_before_the_end",
    "fetch_stream_idle_time_ends_the_body_with_an_error",
    "fetch_stream_total_time_ends_the_body_with_an_error",
];

/// Run every check of [`STREAM_CHECKS`]; `Err` names the first property that failed.
pub async fn fetch_stream_suite(
    fetcher: &dyn Fetcher,
    upstream: &FetchUpstream<'_>,
    clock: &dyn Clock,
) -> Result<(), String> {
    for name in STREAM_CHECKS {
        fetch_stream_check(name, fetcher, upstream, clock).await?;
    }
    Ok(())
}

/// Run one check of [`STREAM_CHECKS`] by name.
pub async fn fetch_stream_check(
    name: &str,
    fetcher: &dyn Fetcher,
    upstream: &FetchUpstream<'_>,
    clock: &dyn Clock,
) -> Result<(), String> {
    let base = upstream.base_url;
    match name {
        "fetch_stream_returns_status_headers_and_body" => {
            returns_status_headers_and_body(fetcher, base).await
        }
        "fetch_stream_returns_redirects_unfollowed" => {
            returns_redirects_unfollowed(fetcher, base).await
        }
        "fetch_stream_sends_a_streamed_body_as_given" => {
            sends_a_streamed_body_as_given(fetcher, base).await
        }
        "fetch_stream_aborts_the_upload_on_a_body_error" => {
            aborts_the_upload_on_a_body_error(fetcher, base).await
        }
        "fetch_stream_times_out_waiting_for_the_head" => {
            times_out_waiting_for_the_head(fetcher, base, clock).await
        }
        "fetch_stream_returns_the_first_chunk_before_the_end" => {
            returns_the_first_chunk_before_the_end(fetcher, base, clock).await
        }
        "fetch_stream_idle_time_ends_the_body_with_an_error" => {
            idle_time_ends_the_body(fetcher, base, clock).await
        }
        "fetch_stream_total_time_ends_the_body_with_an_error" => {
            total_time_ends_the_body(fetcher, base, clock).await
        }
        other => Err(format!("fetch_stream_check: no check named {other:?}")),
    }
}

/// Longest a refusal may take, in ms (far below the upstream's delays).
const PROMPT_MS: u64 = 3_000;

/// Generous limits: 5 s for everything, loopback allowed.
fn options() -> StreamOptions {
    StreamOptions {
        headers_timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        total_timeout_ms: 5_000,
        max_buffered_response_bytes: 1 << 20,
        allow_loopback: true,
    }
}

fn request(
    check: &str,
    method: http::Method,
    url: &str,
    body: Body,
) -> Result<http::Request<Body>, String> {
    http::Request::builder()
        .method(method)
        .uri(url)
        .header("x-check", check)
        .body(body)
        .map_err(|e| format!("{check}: could not build a request for {url}: {e}"))
}

fn chunks(
    parts: Vec<Result<Bytes>>,
) -> futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes>>> {
    futures_util::stream::iter(parts)
}

async fn read_all(check: &str, body: Body) -> Result<Vec<u8>, String> {
    body.collect_capped(1 << 20)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("{check}: reading the body failed with {e}"))
}

/// `GET /ok`: the head, then the whole body from the stream.
async fn returns_status_headers_and_body(fetcher: &dyn Fetcher, base: &str) -> Result<(), String> {
    let c = "fetch_stream_returns_status_headers_and_body";
    let r = ok(
        c,
        "GET /ok",
        fetcher
            .fetch_stream(
                request(c, http::Method::GET, &format!("{base}/ok"), Body::empty())?,
                options(),
            )
            .await,
    )?;
    ensure(c, r.status() == 200, || {
        format!("GET /ok answered {}", r.status())
    })?;
    let body = read_all(c, r.into_body()).await?;
    ensure(c, body == b"hello", || {
        format!("GET /ok gave the body {:?}", String::from_utf8_lossy(&body))
    })
}

/// A 3xx comes back as it is and its target gets no request.
async fn returns_redirects_unfollowed(fetcher: &dyn Fetcher, base: &str) -> Result<(), String> {
    let c = "fetch_stream_returns_redirects_unfollowed";
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| format!("{c}: no randomness: {e}"))?;
    let id: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let url = format!("{base}/redirect/{id}?status=302");
    let r = ok(
        c,
        "GET /redirect",
        fetcher
            .fetch_stream(
                request(c, http::Method::GET, &url, Body::empty())?,
                options(),
            )
            .await,
    )?;
    let location = r
        .headers()
        .get(http::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    ensure(
        c,
        r.status() == 302 && location.as_deref() == Some(&format!("/landing/{id}")),
        || {
            format!(
                "GET /redirect answered {} with Location {location:?}",
                r.status()
            )
        },
    )?;
    drop(r);
    let hits = ok(
        c,
        "GET /hits",
        fetcher
            .fetch_stream(
                request(
                    c,
                    http::Method::GET,
                    &format!("{base}/hits/{id}"),
                    Body::empty(),
                )?,
                options(),
            )
            .await,
    )?;
    let body = read_all(c, hits.into_body()).await?;
    ensure(c, body == b"0", || {
        "the redirect's target was requested".into()
    })
}

/// A streamed body (several chunks, no length) arrives whole, chunked; a declared length is
/// sent as `Content-Length`.
async fn sends_a_streamed_body_as_given(fetcher: &dyn Fetcher, base: &str) -> Result<(), String> {
    let c = "fetch_stream_sends_a_streamed_body_as_given";
    let parts = || {
        vec![
            Ok(Bytes::from_static(b"first,")),
            Ok(Bytes::from_static(b"")),
            Ok(Bytes::from_static(b"second,")),
            Ok(Bytes::from_static(b"third")),
        ]
    };
    for declared in [None, Some(18u64)] {
        let body = match declared {
            None => Body::from_stream(chunks(parts())),
            Some(n) => Body::from_stream_with_len(chunks(parts()), n),
        };
        let step = format!("POST /echo with a streamed body (declared length {declared:?})");
        let r = ok(
            c,
            &step,
            fetcher
                .fetch_stream(
                    request(c, http::Method::POST, &format!("{base}/echo"), body)?,
                    options(),
                )
                .await,
        )?;
        let text = read_all(c, r.into_body()).await?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|_| format!("{c}: {step}: /echo answered something that is not JSON"))?;
        use base64::Engine as _;
        let got = v["body_base64"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        ensure(
            c,
            got.as_deref() == Some(&b"first,second,third"[..]),
            || format!("{step}: the upstream received {got:?}"),
        )?;
        let header = |name: &str| {
            v["headers"].as_array().and_then(|hs| {
                hs.iter().find_map(|p| {
                    (p[0].as_str() == Some(name)).then(|| p[1].as_str().unwrap_or("").to_string())
                })
            })
        };
        ensure(c, header("x-check").as_deref() == Some(c), || {
            format!("{step}: x-check not sent")
        })?;
        if let Some(n) = declared {
            ensure(c, header("content-length") == Some(n.to_string()), || {
                format!(
                    "{step}: Content-Length {:?}, expected {n}",
                    header("content-length")
                )
            })?;
        }
    }
    Ok(())
}

/// A request body stream that fails aborts the upload, and the failure is returned as it is.
async fn aborts_the_upload_on_a_body_error(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetch_stream_aborts_the_upload_on_a_body_error";
    let body = Body::from_stream(chunks(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(Error::too_large("the client sent too much").with_code(Code::BodyTooLarge)),
    ]));
    let r = fetcher
        .fetch_stream(
            request(c, http::Method::POST, &format!("{base}/echo"), body)?,
            options(),
        )
        .await;
    refused(
        c,
        "POST /echo whose body fails",
        r,
        ErrorKind::PayloadTooLarge,
        Code::BodyTooLarge,
    )
}

/// No response head within `headers_timeout_ms` → `UpstreamTimeout`, promptly.
async fn times_out_waiting_for_the_head(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetch_stream_times_out_waiting_for_the_head";
    let opts = StreamOptions {
        headers_timeout_ms: 300,
        total_timeout_ms: 600,
        ..options()
    };
    let started = clock.now_ms();
    let r = fetcher
        .fetch_stream(
            request(
                c,
                http::Method::GET,
                &format!("{base}/slow?ms=10000"),
                Body::empty(),
            )?,
            opts,
        )
        .await;
    let took = clock.now_ms().saturating_sub(started);
    refused(
        c,
        "GET /slow with a 300 ms head deadline",
        r,
        ErrorKind::UpstreamTimeout,
        Code::UpstreamTimeout,
    )?;
    ensure(c, took < PROMPT_MS, || {
        format!("the refusal took {took} ms")
    })
}

/// The first chunk is there before the upstream has finished (its body never ends here).
async fn returns_the_first_chunk_before_the_end(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetch_stream_returns_the_first_chunk_before_the_end";
    let started = clock.now_ms();
    let r = ok(
        c,
        "GET /big-chunked?hang=1",
        fetcher
            .fetch_stream(
                request(
                    c,
                    http::Method::GET,
                    &format!("{base}/big-chunked?n=3000&hang=1"),
                    Body::empty(),
                )?,
                options(),
            )
            .await,
    )?;
    let mut body = r.into_body();
    let first = body.next().await;
    let took = clock.now_ms().saturating_sub(started);
    ensure(c, matches!(&first, Some(Ok(b)) if !b.is_empty()), || {
        format!(
            "the first chunk did not come: {:?}",
            first.as_ref().map(|r| r.as_ref().map(Bytes::len))
        )
    })?;
    ensure(c, took < PROMPT_MS, || {
        format!("the first chunk took {took} ms: the body was held")
    })
}

/// Read `body` until it fails; the failure must be `UpstreamTimeout` and come promptly.
async fn body_fails_with_timeout(
    c: &str,
    body: Body,
    clock: &dyn Clock,
    started: u64,
) -> Result<(), String> {
    let mut body = body;
    loop {
        match body.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                let took = clock.now_ms().saturating_sub(started);
                ensure(
                    c,
                    e.kind() == ErrorKind::UpstreamTimeout && e.code() == Code::UpstreamTimeout,
                    || {
                        format!(
                            "the body failed with {e} ({:?}), expected upstream_timeout",
                            e.kind()
                        )
                    },
                )?;
                return ensure(c, took < PROMPT_MS, || {
                    format!("the body failed after {took} ms")
                });
            }
            None => return Err(format!("{c}: a stalled body ended like a whole one")),
        }
    }
}

/// More than `idle_timeout_ms` without a chunk ends the body with `UpstreamTimeout`.
async fn idle_time_ends_the_body(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetch_stream_idle_time_ends_the_body_with_an_error";
    let opts = StreamOptions {
        idle_timeout_ms: 300,
        ..options()
    };
    let started = clock.now_ms();
    let r = ok(
        c,
        "GET /big-chunked?hang=1",
        fetcher
            .fetch_stream(
                request(
                    c,
                    http::Method::GET,
                    &format!("{base}/big-chunked?n=10&hang=1"),
                    Body::empty(),
                )?,
                opts,
            )
            .await,
    )?;
    body_fails_with_timeout(c, r.into_body(), clock, started).await
}

/// The whole exchange past `total_timeout_ms` ends the body with `UpstreamTimeout`.
async fn total_time_ends_the_body(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetch_stream_total_time_ends_the_body_with_an_error";
    let opts = StreamOptions {
        total_timeout_ms: 500,
        ..options()
    };
    let started = clock.now_ms();
    let r = ok(
        c,
        "GET /big-chunked?hang=1",
        fetcher
            .fetch_stream(
                request(
                    c,
                    http::Method::GET,
                    &format!("{base}/big-chunked?n=10&hang=1"),
                    Body::empty(),
                )?,
                opts,
            )
            .await,
    )?;
    body_fails_with_timeout(c, r.into_body(), clock, started).await
}
