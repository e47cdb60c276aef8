//! The `#[event(fetch)]` entry point, the per-isolate [`App`] cache and the request/response
//! conversions (decision 0080):
//!
//! - the request's body goes to [`App::serve`] as the runtime's stream ([`Incoming`]), never read
//!   whole here; what the core leaves unread is drained before answering, so the client's
//!   connection stays usable; on `/proxy/` it has the idle and total deadlines of the local
//!   server's ([`BodyDeadline`]: 408 `body_timeout`);
//! - `ctx.waitUntil` is the core's [`Background`] ([`WaitUntil`]);
//! - a request cancelled before the reply (its client went away, as Cloudflare's edge reports it)
//!   drops the core's future, whose audit guard then writes the event `cancelled`: a `waitUntil`
//!   held from the request's start keeps the context alive for that ([`ClientGone`], decision
//!   0065);
//! - a streamed reply goes out as a JS stream the client's reading paces ([`ToClient`]), dropped
//!   the moment the client goes away.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use futures::StreamExt;
use vultrino_core::api::error_response;
use vultrino_core::app::{App, Ports};
use vultrino_core::auth::ClientIp;
use vultrino_core::body::{Body, BodyStream};
use vultrino_core::error::{Code, Error, Result};
use vultrino_core::ports::{Background, BackgroundTask};
use worker::js_sys::Uint8Array;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::future_to_promise;
use worker::web_sys::{self, AbortSignal};
use worker::{event, Context, Env};

use crate::audit_store::DoAuditStore;
use crate::clock::WorkersClock;
use crate::fetch::WorkersFetcher;
use crate::headers;
use crate::kv::WorkersKv;
use crate::sessions::DoSessions;
use crate::settings::{self, CLIENT_IP_HEADER};
use crate::streams::{from_js, to_js, JsBytes, Timer};

type Opening = Shared<LocalBoxFuture<'static, Result<Rc<App>>>>;

thread_local! {
    /// The isolate's App, or the one opening now (single flight: concurrent first requests wait
    /// for the same opening). A failed opening is forgotten, so a fixed secret is picked up.
    static APP: RefCell<Option<Opening>> = const { RefCell::new(None) };
}

fn read(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
}

/// The core's ports over this worker's bindings.
// An isolate is one thread: the audit store's counters (and the test build's) are `Cell`s.
#[allow(clippy::arc_with_non_send_sync)]
pub(crate) fn ports(env: &Env) -> Result<Ports> {
    let kv = env.kv("CREDENTIALS").map_err(|_| {
        Error::unavailable("the worker is not configured: KV binding CREDENTIALS is missing")
            .with_code(Code::MissingSetting)
    })?;
    let ns = env.durable_object("SESSIONS").map_err(|_| {
        Error::unavailable(
            "the worker is not configured: Durable Object binding SESSIONS is missing",
        )
        .with_code(Code::MissingSetting)
    })?;
    let audit = env.durable_object("AUDIT").map_err(|_| {
        Error::unavailable("the worker is not configured: Durable Object binding AUDIT is missing")
            .with_code(Code::MissingSetting)
    })?;
    let kv: Arc<dyn vultrino_core::ports::KvStore> = Arc::new(WorkersKv::new(kv));
    let fetcher: Arc<dyn vultrino_core::ports::Fetcher> = Arc::new(WorkersFetcher);
    // The test worker counts every operation (`counting`; never in the deployable build).
    #[cfg(feature = "testkit")]
    let (kv, fetcher): (
        Arc<dyn vultrino_core::ports::KvStore>,
        Arc<dyn vultrino_core::ports::Fetcher>,
    ) = (
        Arc::new(crate::counting::CountingKv(kv)),
        Arc::new(crate::counting::CountingFetcher(fetcher)),
    );
    Ok(Ports {
        kv,
        sessions: Arc::new(DoSessions::new(ns)),
        fetcher,
        clock: Arc::new(WorkersClock::default()),
        audit_sink: Some(Arc::new(crate::audit_sink::WorkerAuditSink::new(env))),
        audit: Some(Arc::new(DoAuditStore::new(audit))),
    })
}

async fn open(env: Env) -> Result<Rc<App>> {
    let s = settings::from_lookup(|name| read(&env, name))?;
    if s.config.allow_loopback_upstreams {
        worker::console_warn!(
            "ALLOW_LOOPBACK_UPSTREAMS is on: http:// and loopback upstreams are allowed. TESTS ONLY."
        );
    }
    if s.config.allow_weak_password_hash_for_tests {
        worker::console_warn!(
            "ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS is on: an admin password hash below the iteration \
             floor is accepted. TESTS ONLY."
        );
    }
    let app = App::open(s.config, ports(&env)?, &s.master)
        .await?
        .with_rs256_verifier(Arc::new(crate::rs256::WebCryptoVerifier))
        // Each re-read of a held request's approval is a Durable Object call: once a second.
        .with_sleeper(Arc::new(crate::clock::DelaySleeper), 1000);
    Ok(Rc::new(app))
}

async fn app(env: &Env) -> Result<Rc<App>> {
    let opening = APP.with(|slot| {
        slot.borrow_mut()
            .get_or_insert_with(|| open(env.clone()).boxed_local().shared())
            .clone()
    });
    let result = opening.await;
    if result.is_err() {
        APP.with(|slot| *slot.borrow_mut() = None);
    }
    result
}

/// The request's body, shared by the core (which reads it) and the entry (which reads what the
/// core left: see [`Incoming::drain`]).
#[derive(Default)]
struct Incoming {
    /// The runtime's stream until it ends or fails.
    stream: RefCell<Option<JsBytes>>,
    /// The core has dropped its end.
    dropped: Cell<bool>,
    /// `/proxy/` only: how long the client may take to send its body ([`BodyDeadline`]).
    deadline: Option<BodyDeadline>,
}

/// The idle and total deadlines of a `/proxy/` request body, as the local server has them
/// (`stream_idle_timeout_ms` between two chunks, `stream_total_timeout_ms` from the request's
/// arrival): past either, the body yields 408 `body_timeout` and its stream is cancelled. The
/// core reads the body whole, before anything is sent, when the credential has a method list;
/// without these a client trickling its body would hold the request (and up to the body cap of
/// memory in the isolate) for as long as the runtime lets it (review 2026-12-05, finding 5;
/// decision 0087). Idle time counts only while the core waits for a chunk, as on the local
/// server; one JS timer per wait, not per chunk.
struct BodyDeadline {
    idle_ms: u64,
    ends_at_ms: f64,
    timer: RefCell<Option<Timer>>,
}

impl BodyDeadline {
    fn new(idle_ms: u64, total_ms: u64) -> BodyDeadline {
        BodyDeadline {
            idle_ms,
            ends_at_ms: worker::js_sys::Date::now() + total_ms as f64,
            timer: RefCell::new(None),
        }
    }

    /// Whether the wait for the next chunk has lasted too long (arming its timer, with `cx`'s
    /// waker, on the first call of a wait).
    fn passed(&self, cx: &mut TaskContext<'_>) -> bool {
        let left = self.ends_at_ms - worker::js_sys::Date::now();
        if left <= 0.0 {
            return true;
        }
        let mut timer = self.timer.borrow_mut();
        let timer =
            timer.get_or_insert_with(|| Timer::after_ms(self.idle_ms.min(left.ceil() as u64)));
        Pin::new(timer).poll(cx).is_ready()
    }

    /// A chunk came: the next wait starts its own idle time.
    fn moved(&self) {
        self.timer.borrow_mut().take();
    }
}

/// 408 `body_timeout`: the client did not send its request body in time.
fn body_timeout() -> Error {
    Error::new(
        vultrino_core::error::ErrorKind::RequestTimeout,
        "request body not received in time",
    )
    .with_code(Code::BodyTimeout)
}

/// How much of a body the core left unread is still read, and for how long: enough for the
/// small bodies of requests refused before their body mattered (a policy denial on `/proxy/`).
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_MS: u64 = 2_000;

impl Incoming {
    /// Read to its end (at most [`DRAIN_BYTES`], for at most [`DRAIN_MS`]) a body the core
    /// dropped unread, before answering. workerd closes a connection whose request body was not
    /// read to its end, without saying so (no `Connection: close`), and the client's next
    /// request on it is reset. A larger or slower body is cancelled: the connection closes,
    /// as it may after a refusal.
    async fn drain(&self) {
        if !self.dropped.get() {
            return;
        }
        let Some(mut stream) = self.stream.borrow_mut().take() else {
            return;
        };
        let mut left = DRAIN_BYTES;
        let mut deadline = Timer::after_ms(DRAIN_MS);
        loop {
            match futures::future::select(stream.next(), &mut deadline).await {
                futures::future::Either::Left((Some(Ok(chunk)), _)) if chunk.len() <= left => {
                    left -= chunk.len();
                }
                futures::future::Either::Left((None, _)) => return,
                _ => return, // too much, failed or too slow: dropping `stream` cancels it
            }
        }
    }
}

/// The core's end of an [`Incoming`] body.
struct IncomingBody(Rc<Incoming>);

impl futures::Stream for IncomingBody {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = self.0.stream.borrow_mut();
        let Some(stream) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        let item = match stream.poll_next_unpin(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => {
                if self.0.deadline.as_ref().is_some_and(|d| d.passed(cx)) {
                    // Dropping the stream cancels it: nothing more is read from the client.
                    *slot = None;
                    return Poll::Ready(Some(Err(body_timeout())));
                }
                return Poll::Pending;
            }
        };
        if let Some(d) = &self.0.deadline {
            d.moved();
        }
        if !matches!(item, Some(Ok(_))) {
            *slot = None;
        }
        // A client that goes away mid-upload errors the stream.
        Poll::Ready(item.map(|chunk| {
            chunk.map_err(|_| {
                Error::bad_request("the request body could not be read")
                    .with_code(Code::InvalidBody)
            })
        }))
    }
}

impl Drop for IncomingBody {
    fn drop(&mut self) {
        self.0.dropped.set(true);
    }
}

/// The request's body as the core's [`Body`]: the runtime's stream, chunk by chunk, never read
/// whole here. The core caps it (the API's cap, or the proxy's for `/proxy/`): a declared
/// `Content-Length` over the cap is refused before anything is read, and a stream is read only
/// until it passes the cap.
///
/// Except (`whole_if_small`: the API's routes, not `/proxy/`, whose bodies have deadlines and
/// may stream upstream) a body that declares at most [`DRAIN_BYTES`]: read in one call
/// (`arrayBuffer()`, HTTP's framing holding it to its declared length) and handed over whole.
/// The entry would read that much anyway, whether the core reads it or not ([`Incoming::drain`]);
/// a stream reader, its reads and its release cost a dozen JS↔wasm crossings and wake-ups per
/// request (decision 0118). A body that breaks off is the same 400 `invalid_body`.
async fn request_body(
    req: &web_sys::Request,
    content_length: Option<&str>,
    incoming: &Rc<Incoming>,
    whole_if_small: bool,
) -> Result<Body> {
    let bad = || Error::bad_request("malformed request body").with_code(Code::InvalidBody);
    let declared = content_length
        .map(|v| v.trim().parse::<u64>().map_err(|_| bad()))
        .transpose()?;
    let Some(stream) = req.body() else {
        return Ok(Body::empty());
    };
    if whole_if_small && declared.is_some_and(|n| n <= DRAIN_BYTES as u64) {
        drop(stream);
        let unreadable = || {
            Error::bad_request("the request body could not be read").with_code(Code::InvalidBody)
        };
        let promise = req.array_buffer().map_err(|_| unreadable())?;
        let buffer = worker::wasm_bindgen_futures::JsFuture::from(promise)
            .await
            .map_err(|_| unreadable())?;
        return Ok(Body::full(Uint8Array::new(&buffer).to_vec()));
    }
    *incoming.stream.borrow_mut() = Some(from_js(stream));
    let chunks = IncomingBody(incoming.clone());
    Ok(match declared {
        Some(n) => Body::from_stream_with_len(chunks, n),
        None => Body::from_stream(chunks),
    })
}

/// The request as the core's. Its URL is the runtime's serialisation (WHATWG), taken as it is.
/// The headers are read in one crossing ([`headers::pairs`]).
async fn to_http(
    req: web_sys::Request,
    url: &str,
    incoming: &Rc<Incoming>,
    whole_if_small: bool,
) -> Result<http::Request<Body>> {
    let bad = || Error::bad_request("malformed request").with_code(Code::BadRequest);
    // The raw method: worker::Method maps unknown methods to GET, which would change meaning.
    let method = http::Method::from_bytes(req.method().as_bytes()).map_err(|_| bad())?;
    let mut builder = http::Request::builder().method(method).uri(url);
    let mut client_ip = None;
    let pairs = headers::pairs(&req.headers());
    for (name, value) in &pairs {
        if name.eq_ignore_ascii_case(CLIENT_IP_HEADER) {
            client_ip = value.trim().parse::<IpAddr>().ok();
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    // A `Transfer-Encoding` overrides a `Content-Length` (RFC 9112 §6.3), and workerd reads
    // such a body to its chunked end: the declared length is then ignored, so the body is never
    // read whole on its word (review 2026-12-07, worker glue, F1) and is capped as it streams.
    let content_length = headers::find(&pairs, "content-length")
        .filter(|_| headers::find(&pairs, "transfer-encoding").is_none());
    let body = request_body(&req, content_length, incoming, whole_if_small).await?;
    let mut out = builder.body(body).map_err(|_| bad())?;
    if let Some(ip) = client_ip {
        out.extensions_mut().insert(ClientIp(ip));
    }
    Ok(out)
}

/// The core's [`Background`] on Workers: `ctx.waitUntil`, which keeps the request's context
/// alive until the task ends, even after the response has gone (or the client has).
struct WaitUntil(Context);

impl WaitUntil {
    fn run(&self, task: impl Future<Output = ()> + 'static) {
        let promise = future_to_promise(async move {
            task.await;
            Ok(JsValue::UNDEFINED)
        });
        // The task runs either way; waitUntil fails only once the request's context has ended,
        // and then the task runs on for as long as the isolate does.
        let _ = self.0.as_ref().wait_until(&promise);
    }
}

impl Background for WaitUntil {
    fn spawn(&self, task: BackgroundTask) {
        self.run(task);
    }
}

/// A streamed reply's body on its way to the client. When the client goes away — the runtime
/// cancels the stream, or aborts the request's signal (flag `enable_request_signal`, set in
/// wrangler.toml: some workerd releases no longer cancel the stream, workerd issue 6832) — the
/// core's body is dropped at once: that cancels the upstream fetch and lets the core write the
/// exchange's audit event. Dropping this also drops `_done`, which ends the `waitUntil` that
/// kept the request alive until that moment (decision 0080).
struct ToClient {
    body: Rc<RefCell<Option<BodyStream>>>,
    waker: Rc<RefCell<Option<Waker>>>,
    signal: AbortSignal,
    _on_abort: Closure<dyn FnMut()>,
    _done: oneshot::Sender<()>,
}

impl ToClient {
    fn new(body: BodyStream, signal: AbortSignal, done: oneshot::Sender<()>) -> ToClient {
        let body = Rc::new(RefCell::new(Some(body)));
        let waker: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
        let (gone, wake) = (body.clone(), waker.clone());
        let on_abort = Closure::<dyn FnMut()>::new(move || {
            // Taken out first, dropped after the borrow ends (its Drop runs core code).
            let dropped = gone.try_borrow_mut().ok().and_then(|mut b| b.take());
            drop(dropped);
            // Taken before waking: no borrow is held while the waker runs.
            let waker = wake.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        });
        signal.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
        if signal.aborted() {
            // Gone before the reply was ready: no abort event will come.
            let dropped = body.borrow_mut().take();
            drop(dropped);
        }
        ToClient {
            body,
            waker,
            signal,
            _on_abort: on_abort,
            _done: done,
        }
    }
}

impl futures::Stream for ToClient {
    type Item = std::result::Result<Bytes, JsValue>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = self.body.borrow_mut();
        let Some(body) = slot.as_mut() else {
            // The client went away.
            return Poll::Ready(None);
        };
        let item = match body.as_mut().poll_next(cx) {
            Poll::Pending => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(item) => item,
        };
        if let Some(Ok(chunk)) = item {
            return Poll::Ready(Some(Ok(chunk)));
        }
        // Ended or failed: the core's body goes now (its audit event with it).
        let dropped = slot.take();
        drop(slot);
        drop(dropped);
        // A failed body errors the JS stream: the client sees a cut reply, never a whole one.
        // The reason stays here (it is the core's, and may name a host).
        Poll::Ready(item.map(|_| Err(JsValue::from_str("the reply was cut short"))))
    }
}

impl Drop for ToClient {
    fn drop(&mut self) {
        self.signal.set_onabort(None);
        let dropped = self.body.borrow_mut().take();
        drop(dropped);
    }
}

/// Resolves when the request's signal aborts: the client went away before the reply was
/// handed over (workerd aborts it only then, and only while the request's context is alive:
/// flag `enable_request_signal`). Dropping it removes its handler, so [`ToClient`] can set its
/// own.
struct ClientGone {
    state: Rc<GoneState>,
    signal: AbortSignal,
    _on_abort: Closure<dyn FnMut()>,
}

#[derive(Default)]
struct GoneState {
    gone: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl ClientGone {
    fn new(signal: &AbortSignal) -> ClientGone {
        let state = Rc::new(GoneState::default());
        let shared = state.clone();
        let on_abort = Closure::<dyn FnMut()>::new(move || {
            shared.gone.set(true);
            // Taken before waking: no borrow is held while the waker runs.
            let waker = shared.waker.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        });
        signal.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
        state.gone.set(signal.aborted());
        ClientGone {
            state,
            signal: signal.clone(),
            _on_abort: on_abort,
        }
    }
}

impl Future for ClientGone {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state.gone.get() {
            return Poll::Ready(());
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        self.signal.set_onabort(None);
    }
}

/// The reply's headers as the runtime's, in one crossing ([`headers::to_js`]); a value that is
/// not visible ASCII is left out, as before.
fn response_init(parts: &http::response::Parts) -> worker::Result<web_sys::ResponseInit> {
    let list = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    let headers = headers::to_js(list)?;
    init.set_headers(&headers);
    Ok(init)
}

/// The core's reply as the runtime's: a whole body as bytes; a stream as a JS stream that the
/// runtime pulls as the client reads (nothing is held whole), the request kept alive through
/// `background` until the stream has ended or been dropped.
fn to_worker_streaming(
    resp: http::Response<Body>,
    background: &WaitUntil,
    signal: AbortSignal,
) -> worker::Result<web_sys::Response> {
    let (parts, body) = resp.into_parts();
    if let Some(bytes) = body.as_full() {
        return to_worker(http::Response::from_parts(parts, bytes.clone()));
    }
    if null_body_status(parts.status) {
        // A `Response` with one of these statuses cannot have a body, not even an empty stream
        // (the runtime throws, and the client got a 500 with no audit event: issue 17's
        // matrix, row `/no-content`). The core's stream for it holds nothing; it is read to its
        // end beside the reply so that whatever it still does (its audit event) runs.
        let mut stream = body.into_stream();
        background.run(async move { while stream.next().await.is_some() {} });
        return Ok(web_sys::Response::new_with_opt_str_and_init(
            None,
            &response_init(&parts)?,
        )?);
    }
    let (done, finished) = oneshot::channel::<()>();
    background.run(async move {
        let _ = finished.await;
    });
    let stream = to_js(ToClient::new(body.into_stream(), signal, done));
    Ok(web_sys::Response::new_with_opt_readable_stream_and_init(
        Some(&stream),
        &response_init(&parts)?,
    )?)
}

/// The statuses whose `Response` cannot have a body (the Fetch standard's "null body status").
fn null_body_status(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 101 | 103 | 204 | 205 | 304)
}

/// A whole reply as the runtime's `Response`. The body is first copied out of the wasm's
/// memory into a JS-owned `Uint8Array` (one crossing), never handed over as a view of that
/// memory: the memory is reused as soon as this returns, and whether the constructor copies a
/// view is the runtime's choice (workerd's source has kept such buffers without a copy) — a
/// runtime that kept the view would send other requests' bytes (review 2026-12-07 of the worker
/// glue, F2).
pub(crate) fn to_worker(resp: http::Response<Bytes>) -> worker::Result<web_sys::Response> {
    let (parts, body) = resp.into_parts();
    let init = response_init(&parts)?;
    Ok(if body.is_empty() {
        web_sys::Response::new_with_opt_str_and_init(None, &init)?
    } else {
        let owned = Uint8Array::from(&body[..]);
        web_sys::Response::new_with_opt_buffer_source_and_init(Some(&owned), &init)?
    })
}

#[event(fetch)]
/// The runtime's request as it comes (`web_sys::Request`, not workers-rs's `Request`, whose
/// conversion reads `request.cf` — an object the runtime builds on each read, never used here —
/// and the method, URL and headers once more), and the runtime's `Response` back (decision 0120).
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let url = req.url();
    let path = crate::request_path::path_of(&url);
    #[cfg(feature = "testkit")]
    if path.starts_with("/__testkit/") {
        return crate::testkit_route::handle(req.into(), &env)
            .await
            .map(web_sys::Response::from);
    }
    let app = match app(&env).await {
        Ok(app) => app,
        Err(e) => {
            worker::console_error!("cannot open Vultrino: {}", e.message());
            return to_worker(error_response(&e));
        }
    };
    let signal = req.signal();
    let incoming = Rc::new(Incoming {
        deadline: vultrino_core::proxy::is_proxy_path(path).then(|| {
            let config = app.config();
            BodyDeadline::new(
                config.stream_idle_timeout_ms,
                config.stream_total_timeout_ms,
            )
        }),
        ..Incoming::default()
    });
    let request = match to_http(
        req,
        &url,
        &incoming,
        !vultrino_core::proxy::is_proxy_path(path),
    )
    .await
    {
        Ok(r) => r,
        // On the proxy's paths, Vultrino's own errors carry X-Vultrino-Error.
        Err(e) if vultrino_core::proxy::is_proxy_path(path) => {
            let (parts, body) = vultrino_core::proxy::refusal(&e).into_parts();
            let body = body.as_full().cloned().unwrap_or_default();
            return to_worker(http::Response::from_parts(parts, body));
        }
        Err(e) => return to_worker(error_response(&e)),
    };
    let background = Arc::new(WaitUntil(ctx));
    // Keeps the request's context alive until the core has answered or been dropped. Without a
    // pending `waitUntil`, workerd tears the context down the moment the client disconnects: no
    // abort event, no drop, no audit write (decision 0065).
    let (answered, answering) = oneshot::channel::<()>();
    background.run(async move {
        let _ = answering.await;
    });
    // Owned (boxed), so that it can be dropped, not only forgotten.
    let serving = app.serve(request, Some(background.clone())).boxed_local();
    let resp = match futures::future::select(serving, ClientGone::new(&signal)).await {
        futures::future::Either::Left((resp, _)) => resp,
        futures::future::Either::Right(((), serving)) => {
            // Gone before the reply's head: dropping the core's future writes its audit event
            // (`cancelled`, through `waitUntil`, registered while `answering` still holds the
            // context) and cancels the upstream fetch. Nobody reads what is returned.
            drop(serving);
            drop(answered);
            return worker::Response::error("the client went away", 400)
                .map(web_sys::Response::from);
        }
    };
    drop(answered);
    // What the core left of the request body: read before a whole reply, beside a streamed one.
    if resp.body().is_stream() {
        background.run(async move { incoming.drain().await });
    } else {
        incoming.drain().await;
    }
    to_worker_streaming(resp, &background, signal)
}
