//! [`Fetcher::fetch_stream`](vultrino_core::ports::Fetcher::fetch_stream) over the Workers
//! `fetch` API: both bodies stream, nothing is held whole.
//!
//! - The request body is a JS `ReadableStream` pulled by the runtime as the upstream takes it
//!   ([`Upload`]); with a known length it goes through a `FixedLengthStream`, so the upstream
//!   gets a `Content-Length` instead of a chunked body. A body stream that fails (the client
//!   went away, the core's cap was passed) aborts the fetch, and that error is the one returned
//!   (or, once the head has come, the one the response body ends with).
//! - The response body is the runtime's `ReadableStream`, read one chunk at a time as the core
//!   asks for one ([`Download`]). Dropping it before its end cancels the read and aborts the
//!   fetch: the runtime closes the connection to the upstream.
//! - `redirect: "manual"`; headers and encodings as [`Fetcher::fetch`] (see `super`).
//! - Timeouts as the contract says, as far as the platform lets us measure them (decision
//!   0079): the response head within `headers_timeout_ms` of the upload's end (connecting
//!   included: the runtime does not tell connecting from waiting), at most `idle_timeout_ms`
//!   spent waiting for a chunk of either body, and the whole exchange within
//!   `total_timeout_ms` — that one aborts the fetch when it passes even if nobody is reading.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use vultrino_core::body::{Body, BodyStream};
use vultrino_core::error::{Code, Error, ErrorKind, Result};
use vultrino_core::ports::StreamOptions;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{self, AbortController, ReadableStream};

use super::{bodiless, connect_error, interim, outbound_headers, response_head};
use crate::streams::{from_js, to_js, JsBytes, Timer};

fn timeout(what: &'static str) -> Error {
    Error::new(ErrorKind::UpstreamTimeout, what).with_code(Code::UpstreamTimeout)
}

fn total_timeout() -> Error {
    timeout("the upstream exchange took longer than allowed")
}

fn body_error() -> Error {
    Error::new(
        ErrorKind::UpstreamFailed,
        "the upstream response body could not be read",
    )
}

/// Waiting that may last at most `ms`: started when a wait begins, forgotten when something
/// arrives. One JS timer per wait at most (not one per chunk): a timer left from an earlier,
/// shorter wait only fires early, and is then re-armed for what remains.
struct Idle {
    ms: u64,
    since: Option<f64>,
    timer: Option<Timer>,
}

impl Idle {
    fn new(ms: u64) -> Idle {
        Idle {
            ms,
            since: None,
            timer: None,
        }
    }

    /// Something arrived: the next wait starts from zero.
    fn restart(&mut self) {
        self.since = None;
    }

    /// Called while waiting: whether the wait has now lasted `ms`. Otherwise the task is
    /// woken when it may have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let now = js_sys::Date::now();
        let since = *self.since.get_or_insert(now);
        let waited = (now - since).max(0.0) as u64;
        if waited >= self.ms {
            return true;
        }
        // No timer, or a fired one (an earlier wait's): one for what remains of this wait.
        if self.timer.as_ref().is_none_or(Timer::fired) {
            self.timer = Some(Timer::after_ms(self.ms - waited));
        }
        // A fresh timer is ready only if the runtime refused to set it: expire rather than hang.
        self.timer
            .as_mut()
            .is_none_or(|t| t.poll_unpin(cx).is_ready())
    }
}

/// How far the upload has come: shared by [`Upload`] (which moves it), the wait for the
/// response head (which takes its deadline from it) and [`Download`] (which ends with the
/// upload's error if the upload failed).
#[derive(Default)]
struct UploadState {
    /// Chunks sent so far, plus one at the end: a change restarts the head's clock.
    moves: Cell<u64>,
    done: Cell<bool>,
    error: RefCell<Option<Error>>,
    waker: RefCell<Option<Waker>>,
}

impl UploadState {
    fn finished() -> Rc<UploadState> {
        let state = UploadState::default();
        state.done.set(true);
        Rc::new(state)
    }

    fn moved(&self, done: bool) {
        self.moves.set(self.moves.get() + 1);
        self.done.set(self.done.get() || done);
        self.wake();
    }

    fn fail(&self, error: Error) {
        *self.error.borrow_mut() = Some(error);
        self.wake();
    }

    fn error(&self) -> Option<Error> {
        self.error.borrow().clone()
    }

    fn wake(&self) {
        // Taken before waking: no borrow is held while the waker runs.
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

/// The core's request body as the runtime pulls it for the upstream.
struct Upload {
    body: Option<BodyStream>,
    state: Rc<UploadState>,
    ctl: AbortController,
    idle: Idle,
}

impl Upload {
    fn fail(&mut self, error: Error) -> Poll<Option<std::result::Result<Bytes, JsValue>>> {
        self.body = None;
        self.state.fail(error);
        self.ctl.abort();
        Poll::Ready(Some(Err(JsValue::from_str("the request body failed"))))
    }
}

impl Stream for Upload {
    type Item = std::result::Result<Bytes, JsValue>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.idle.restart();
                self.state.moved(false);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(e),
            Poll::Ready(None) => {
                self.body = None;
                self.state.moved(true);
                Poll::Ready(None)
            }
            Poll::Pending if self.idle.expired(cx) => {
                self.fail(timeout("the request body stalled for too long"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The upstream's response body as the core reads it.
struct Download {
    body: Option<JsBytes>,
    ctl: AbortController,
    total: Timer,
    idle: Idle,
    upload: Rc<UploadState>,
}

impl Download {
    fn end(&mut self, error: Error) -> Poll<Option<Result<Bytes>>> {
        self.body = None;
        self.ctl.abort();
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Download {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let next = body.poll_next_unpin(cx);
        if self.total.poll_unpin(cx).is_ready() {
            return self.end(total_timeout());
        }
        match next {
            Poll::Ready(Some(Ok(chunk))) => {
                self.idle.restart();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => {
                let e = self.upload.error().unwrap_or_else(body_error);
                self.end(e)
            }
            Poll::Ready(None) => {
                self.body = None;
                Poll::Ready(None)
            }
            Poll::Pending if self.idle.expired(cx) => {
                self.end(timeout("the upstream sent nothing for too long"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Dropped before its end: the client went away. Cancelling the read (JsBytes) tells
        // the runtime we are done; aborting closes the connection to the upstream at once.
        if self.body.is_some() {
            self.ctl.abort();
        }
    }
}

thread_local! {
    /// A rejection handler that does nothing, made once per isolate (not once per request).
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

/// `stream` behind a `FixedLengthStream` of `len` bytes: the runtime sends it with that
/// `Content-Length` (and fails the request if the stream's length differs).
fn fixed_length(stream: ReadableStream, len: u64) -> Result<ReadableStream> {
    use worker::worker_sys::FixedLengthStream;
    let fixed = match u32::try_from(len) {
        Ok(n) => FixedLengthStream::new(n),
        Err(_) => FixedLengthStream::new_big_int(js_sys::BigInt::from(len)),
    }
    .map_err(|_| connect_error())?;
    let transform: &web_sys::TransformStream = fixed.as_ref();
    let piped = stream.pipe_to(&transform.writable());
    // A failed upload rejects the pipe; the fetch fails with it. Nothing else to do with it.
    IGNORE.with(|ignore| {
        let _ = piped.catch(ignore);
    });
    Ok(transform.readable())
}

/// The HTTP methods the runtime's `fetch` sends (any other is refused by the runtime).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "REPORT",
];

fn build(
    parts: &http::request::Parts,
    body: Body,
    ctl: &AbortController,
    idle_ms: u64,
) -> Result<(web_sys::Request, Rc<UploadState>)> {
    let init = web_sys::RequestInit::new();
    init.set_method(parts.method.as_str());
    let headers = outbound_headers(&parts.headers)?;
    init.set_headers(&headers);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(&ctl.signal()));
    let state = match body.as_full() {
        Some(bytes) => {
            if !bytes.is_empty() {
                init.set_body(&Uint8Array::from(bytes.as_ref()));
            }
            UploadState::finished()
        }
        None if body.len_hint() == Some(0) => UploadState::finished(),
        None => {
            let state = Rc::new(UploadState::default());
            let len = body.len_hint();
            let upload = Upload {
                body: Some(body.into_stream()),
                state: state.clone(),
                ctl: ctl.clone(),
                idle: Idle::new(idle_ms),
            };
            let stream = to_js(upload);
            let stream = match len {
                Some(n) => fixed_length(stream, n)?,
                None => stream,
            };
            init.set_body(&stream);
            state
        }
    };
    let request =
        web_sys::Request::new_with_str_and_init(&parts.uri.to_string(), &init).map_err(|_| {
            if METHODS.contains(&parts.method.as_str()) {
                Error::bad_request("invalid upstream URL").with_code(Code::InvalidUrl)
            } else {
                Error::bad_request(format!(
                    "method {} is not supported on Cloudflare Workers",
                    parts.method
                ))
                .with_code(Code::InvalidMethod)
            }
        })?;
    Ok((request, state))
}

/// Wait for the response head: until `headers_timeout_ms` after the upload's end, at most
/// `idle_timeout_ms` after its last movement while it lasts, and within the total deadline.
async fn head(
    request: &web_sys::Request,
    ctl: &AbortController,
    total: &mut Timer,
    upload: &UploadState,
    options: &StreamOptions,
) -> Result<web_sys::Response> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let mut fetch = JsFuture::from(global.fetch_with_request(request));
    let mut seen = u64::MAX;
    let mut wait = Idle::new(options.idle_timeout_ms);
    futures::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fetch.poll_unpin(cx) {
            return Poll::Ready(match r {
                Ok(v) => v
                    .dyn_into::<web_sys::Response>()
                    .map_err(|_| connect_error()),
                Err(_) => Err(upload.error().unwrap_or_else(|| {
                    if total.fired() {
                        total_timeout()
                    } else {
                        connect_error()
                    }
                })),
            });
        }
        if total.poll_unpin(cx).is_ready() {
            return Poll::Ready(Err(total_timeout()));
        }
        if let Some(e) = upload.error() {
            return Poll::Ready(Err(e));
        }
        upload.register(cx.waker());
        if upload.moves.get() != seen {
            seen = upload.moves.get();
            wait.ms = if upload.done.get() {
                options.headers_timeout_ms
            } else {
                options.idle_timeout_ms
            };
            wait.restart();
        }
        if wait.expired(cx) {
            ctl.abort();
            return Poll::Ready(Err(timeout("the upstream did not answer in time")));
        }
        Poll::Pending
    })
    .await
}

/// The Workers `fetch` cannot send a GET or HEAD with a body: an empty one (a stream that turns
/// out empty, as some clients frame even a GET) is dropped, any other refused (400).
async fn bodiless_request(method: &http::Method, body: Body) -> Result<Body> {
    if *method != http::Method::GET && *method != http::Method::HEAD {
        return Ok(body);
    }
    match body.collect_capped(0).await {
        Ok(_) => Ok(Body::empty()),
        Err(e) if e.code() == Code::BodyTooLarge => Err(Error::bad_request(
            "a GET or HEAD request with a body cannot be sent from Cloudflare Workers",
        )
        .with_code(Code::InvalidBody)),
        Err(e) => Err(e),
    }
}

pub(super) async fn fetch_stream(
    request: http::Request<Body>,
    options: StreamOptions,
) -> Result<http::Response<Body>> {
    let (parts, body) = request.into_parts();
    if !vultrino_core::upstream::forwardable_method(&parts.method) {
        return Err(
            Error::bad_request("CONNECT and TRACE requests are not forwarded")
                .with_code(Code::InvalidRequest),
        );
    }
    let body = bodiless_request(&parts.method, body).await?;
    let ctl = AbortController::new().map_err(|_| connect_error())?;
    // The whole exchange's deadline aborts the fetch when it passes, read or not.
    let mut total = Timer::aborting(options.total_timeout_ms, ctl.clone());
    let (request, upload) = build(&parts, body, &ctl, options.idle_timeout_ms)?;
    let raw = head(&request, &ctl, &mut total, &upload, &options).await?;
    let status = raw.status();
    if let Err(e) = interim(status) {
        // Dropping `ctl` does not abort: the connection is the runtime's to close.
        ctl.abort();
        return Err(e);
    }
    let (head, declared) = response_head(&raw);
    let declared = declared.and_then(|v| v.trim().parse::<u64>().ok());
    let body = match raw.body() {
        Some(stream) if !bodiless(&parts.method, status) => {
            let download = Download {
                body: Some(from_js(stream)),
                ctl,
                total,
                idle: Idle::new(options.idle_timeout_ms),
                upload,
            };
            match declared {
                Some(0) => Body::empty(),
                Some(n) => Body::from_stream_with_len(download, n),
                None => Body::from_stream(download),
            }
        }
        Some(stream) => {
            // Nothing to read (HEAD, 204, 304): release the connection.
            let _ = stream.cancel();
            Body::empty()
        }
        None => Body::empty(),
    };
    head.body(body).map_err(|_| {
        Error::new(
            ErrorKind::UpstreamFailed,
            "the upstream sent an invalid response",
        )
        .with_code(Code::UpstreamInvalid)
    })
}
