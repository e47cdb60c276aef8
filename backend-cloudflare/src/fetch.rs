//! [`WorkersFetcher`]: the core's [`Fetcher`] over the Workers `fetch` API.
//!
//! - `redirect: "manual"`: a 3xx comes back as it is, `Location` included.
//! - [`Fetcher::fetch_stream`] streams both ways, nothing held whole: `fetch/stream.rs`. What
//!   follows is [`Fetcher::fetch`], the whole-body exchange of `/v1/execute`.
//! - The whole exchange (headers and body) races a timer; past `timeout_ms` the request is aborted
//!   through an `AbortController` → `upstream_timeout`.
//! - The body is streamed and counted; past `max_response_bytes` reading stops →
//!   `upstream_too_large` (a `Content-Length` over the cap fails before reading; one within it
//!   is read in a single `arrayBuffer()` call, its framing bounding it). Replies without
//!   a body (HEAD, 204, 304) are not measured by their `Content-Length`.
//! - Encoded bodies are never handed on unlabelled: the runtime decodes `gzip` and `br` bodies
//!   itself, and only then are `Content-Encoding` and the encoded `Content-Length` dropped; any
//!   other coding comes back with its header and its bytes (see `DECODED_BY_RUNTIME`).
//! - Name resolution happens inside the platform, so the core's SSRF guard checks the URL's host
//!   and the platform refuses the rest: production Workers cannot reach private addresses, and
//!   the `global_fetch_strictly_public` flag (wrangler.toml) keeps even this zone's own origin
//!   out. The platform's refusal is not distinguishable from a connection failure, so it surfaces
//!   as `upstream_connect`.

mod stream;

use bytes::Bytes;
use futures::future::{select, Either};
use futures::StreamExt;
use vultrino_core::body::Body;
use vultrino_core::error::{Code, Error, ErrorKind, Result};
use vultrino_core::ports::{FetchOptions, Fetcher, StreamOptions};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{js_sys, web_sys, Delay};

use crate::headers;

/// Outbound HTTP through the Workers runtime.
#[derive(Default)]
pub struct WorkersFetcher;

/// Headers the runtime sets itself (or refuses); the core never needs to set them.
const SKIPPED: [&str; 5] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
];

/// The `Content-Encoding` values whose bodies the runtime decodes in `fetch` by itself: workerd
/// decodes exactly `gzip` and `br` (`br` under the `brotli_content_encoding` compatibility flag,
/// on by default since 2024-04-29) and passes any other value (`deflate`, `GZIP`, `x-gzip`,
/// `gzip, br`, unknown codings) through with its bytes untouched. The Fetcher suite's
/// `fetcher_never_hides_an_encoding` checks this in workerd. If the runtime decoded a coding not
/// listed here, the core would see a label on plain bytes and refuse them: safe, and the check
/// fails; listing one it does not decode would hand the core unlabelled encoded bytes.
const DECODED_BY_RUNTIME: [&str; 2] = ["gzip", "br"];

/// The methods [`Fetcher::fetch`] sends (those workers-rs's `Method` named, which it was
/// built on).
fn method(m: &http::Method) -> Result<&'static str> {
    Ok(match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => {
            return Err(Error::bad_request(format!(
                "method {m} is not supported on Cloudflare Workers"
            ))
            .with_code(Code::InvalidMethod))
        }
    })
}

fn connect_error() -> Error {
    Error::new(ErrorKind::UpstreamFailed, "could not reach the upstream")
        .with_code(Code::UpstreamConnect)
}

/// The reply's body failed after its head (reset, bad framing): 502 `upstream_error`.
fn body_broke_off() -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        "the upstream response body could not be read",
    )
    .with_code(Code::UpstreamError)
}

fn too_large(cap: usize) -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        format!("the upstream response is larger than {cap} bytes"),
    )
    .with_code(Code::UpstreamTooLarge)
}

/// The request's headers as the runtime sends them (see [`SKIPPED`]), made in one crossing
/// ([`headers::to_js`]); if the runtime refuses the list, header by header to name the one it
/// refuses.
fn outbound_headers(headers: &http::HeaderMap) -> Result<web_sys::Headers> {
    let mut list = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if SKIPPED.contains(&name.as_str()) {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            Error::bad_request("header values must be visible ASCII").with_code(Code::InvalidHeader)
        })?;
        list.push((name.as_str(), value));
    }
    if let Ok(out) = headers::to_js(list.iter().copied()) {
        return Ok(out);
    }
    let refused = || Error::bad_request("header list").with_code(Code::InvalidHeader);
    let out = web_sys::Headers::new().map_err(|_| refused())?;
    for (name, value) in list {
        out.append(name, value).map_err(|_| {
            Error::bad_request(format!("header '{name}' cannot be sent from Workers"))
                .with_code(Code::InvalidHeader)
        })?;
    }
    Ok(out)
}

/// The status and headers of `resp`, and the declared `Content-Length` of its body unless the
/// runtime decoded it (the headers are read once, in one crossing: [`headers::pairs`]).
///
/// A body the runtime decoded is read as plain bytes: its `Content-Encoding` and
/// `Content-Length` describe the encoded bytes and would mislabel them (the core would refuse a
/// body it can scrub), so both are dropped. Any other coding keeps its header and its bytes, so
/// the core sees the encoding and refuses what it cannot scrub.
fn response_head(resp: &web_sys::Response) -> (http::response::Builder, Option<String>) {
    let pairs = headers::pairs(&resp.headers());
    let decoded =
        headers::find(&pairs, "content-encoding").is_some_and(|v| DECODED_BY_RUNTIME.contains(&v));
    // With a `Transfer-Encoding`, the `Content-Length` says nothing about the body (RFC 9112
    // §6.3: the transfer coding overrides it, and workerd reads such a body to its chunked end,
    // not to the declared length): no declared length then, so the body is read chunk by chunk
    // against the cap, never whole in one call (review 2026-12-07, worker glue, F1).
    let framed_by_length = headers::find(&pairs, "transfer-encoding").is_none();
    let declared = if decoded || !framed_by_length {
        None
    } else {
        headers::find(&pairs, "content-length").map(str::to_owned)
    };
    let mut out = http::Response::builder().status(resp.status());
    for (name, value) in pairs {
        if decoded
            && (name.eq_ignore_ascii_case("content-encoding")
                || name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out = out.header(name, value);
    }
    (out, declared)
}

/// workerd's HTTP client does not skip an interim (1xx) response: a `100 Continue` the upstream
/// sends before its reply comes back as if it were the reply, with the final reply read as its
/// body (until the connection closes). Neither can be passed on (a `Response` cannot carry a
/// 1xx status), so it is refused at once: 502 `upstream_invalid` (issue 17's matrix, row
/// `/continue-100`; decision 0112).
fn interim(status: u16) -> Result<()> {
    if status < 200 {
        return Err(Error::new(
            ErrorKind::UpstreamFailed,
            format!("the upstream sent an interim {status} response, which Workers cannot pass on"),
        )
        .with_code(Code::UpstreamInvalid));
    }
    Ok(())
}

/// HEAD, 204 and 304 replies have no body: their `Content-Length` (if any) describes a body that
/// is not sent, so it is neither measured nor read.
fn bodiless(method: &http::Method, status: u16) -> bool {
    method == http::Method::HEAD || matches!(status, 204 | 304)
}

/// The runtime's `Request` (web-sys's, made directly: workers-rs's `Request::new_with_init`
/// reads the made request's `cf`, method, URL and headers back across the boundary).
fn build(
    request: &http::Request<Bytes>,
    signal: &web_sys::AbortSignal,
) -> Result<web_sys::Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method(request.method())?);
    let headers = outbound_headers(request.headers())?;
    init.set_headers(&headers);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(signal));
    if !request.body().is_empty() {
        init.set_body(&js_sys::Uint8Array::from(request.body().as_ref()));
    }
    web_sys::Request::new_with_str_and_init(&request.uri().to_string(), &init)
        .map_err(|_| Error::bad_request("invalid upstream URL").with_code(Code::InvalidUrl))
}

async fn exchange(
    request: &http::Request<Bytes>,
    signal: web_sys::AbortSignal,
    cap: usize,
) -> Result<http::Response<Bytes>> {
    let req = build(request, &signal)?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: web_sys::Response = JsFuture::from(global.fetch_with_request(&req))
        .await
        .ok()
        .and_then(|r| r.dyn_into().ok())
        .ok_or_else(connect_error)?;
    interim(resp.status())?;
    let (out, declared) = response_head(&resp);
    let no_body = bodiless(request.method(), resp.status());
    let mut body = Vec::new();
    if !no_body {
        // A decoded body's declared length is the encoded one: only the bytes read count.
        let declared = declared.and_then(|len| len.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(too_large(cap));
        }
        if declared.is_some() {
            // A declared length within the cap and no transfer coding: HTTP's framing holds
            // the body to it, so it is read in one call (`arrayBuffer()`), not chunk by chunk through a stream reader —
            // a reader, its reads and its release are a dozen JS↔wasm crossings and wake-ups
            // per exchange (decision 0118). Still bounded by the cap; a body that breaks off
            // still fails.
            if resp.body().is_some() {
                let promise = resp.array_buffer().map_err(|_| body_broke_off())?;
                let buffer = JsFuture::from(promise)
                    .await
                    .map_err(|_| body_broke_off())?;
                body = js_sys::Uint8Array::new(&buffer).to_vec();
            }
            if body.len() > cap {
                return Err(too_large(cap));
            }
        } else if let Some(stream) = resp.body() {
            let mut stream = crate::streams::from_js(stream);
            while let Some(chunk) = stream.next().await {
                // The head has come: a body that breaks off is the upstream's failure, not a
                // connection that could not be made (as the local server and `/proxy/` say).
                let chunk = chunk.map_err(|_| body_broke_off())?;
                if body.len() + chunk.len() > cap {
                    return Err(too_large(cap));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    out.body(Bytes::from(body)).map_err(|_| {
        Error::new(
            ErrorKind::UpstreamFailed,
            "the upstream sent an invalid response",
        )
        .with_code(Code::UpstreamInvalid)
    })
}

#[async_trait::async_trait(?Send)]
impl Fetcher for WorkersFetcher {
    /// Streams both ways; see `fetch/stream.rs`.
    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        stream::fetch_stream(request, options).await
    }

    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let ctl = web_sys::AbortController::new().map_err(|_| connect_error())?;
        let timer = Delay::from(std::time::Duration::from_millis(options.timeout_ms));
        let work = exchange(&request, ctl.signal(), options.max_response_bytes);
        futures::pin_mut!(work);
        match select(work, timer).await {
            // An error before the whole body was read (an interim reply, a body over the cap
            // or one that broke off) stops the upstream call too: dropping the response does
            // not abort the fetch, which would keep reading (after a 100 Continue, the final
            // reply as a body) until the upstream closes (review of 2026-12-07, finding 5).
            Either::Left((Err(e), _)) => {
                ctl.abort();
                Err(e)
            }
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => {
                ctl.abort();
                Err(Error::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "the upstream did not answer within {} ms",
                        options.timeout_ms
                    ),
                )
                .with_code(Code::UpstreamTimeout))
            }
        }
    }
}
