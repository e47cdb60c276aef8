//! The `#[event(fetch)]` entry point, the per-isolate [`App`] cache and the request/response
//! conversions.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use futures::StreamExt;
use vultrino_core::api::error_response;
use vultrino_core::app::{App, Ports};
use vultrino_core::auth::ClientIp;
use vultrino_core::body::Body;
use vultrino_core::error::{Code, Error, Result};
use worker::{event, Context, Env, Headers, Request, Response};

use crate::clock::WorkersClock;
use crate::fetch::WorkersFetcher;
use crate::kv::WorkersKv;
use crate::sessions::DoSessions;
use crate::settings::{self, CLIENT_IP_HEADER};

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
    Ok(Ports {
        kv: Arc::new(WorkersKv::new(kv)),
        sessions: Arc::new(DoSessions::new(ns)),
        fetcher: Arc::new(WorkersFetcher),
        clock: Arc::new(WorkersClock::default()),
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
    let app = App::open(s.config, ports(&env)?, &s.master).await?;
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

fn too_large() -> Error {
    Error::too_large("request body is too large").with_code(Code::BodyTooLarge)
}

/// The body of `req`, at most `max` bytes: a declared `Content-Length` above `max` is refused
/// before any of the body is read, and a body without one (chunked) is read only until it passes
/// `max` (413 `body_too_large` either way), so a client cannot make the worker buffer more than
/// the cap.
async fn read_body(req: &mut Request, max: usize) -> Result<Vec<u8>> {
    let bad = || Error::bad_request("malformed request body").with_code(Code::InvalidBody);
    let declared = req
        .headers()
        .get("content-length")
        .map_err(|_| bad())?
        .map(|v| v.trim().parse::<u64>().map_err(|_| bad()))
        .transpose()?;
    if let Some(len) = declared {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    if req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = req.stream().map_err(|_| bad())?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| bad())?;
        if chunk.len() > max - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The largest body a request to `path` may have: the pass-through proxy has its own cap.
fn body_cap(config: &vultrino_core::app::Config, path: &str) -> usize {
    if path.starts_with("/proxy/") {
        config.proxy_max_request_bytes
    } else {
        config.max_request_bytes
    }
}

async fn to_http(mut req: Request, max_body: usize) -> Result<http::Request<Body>> {
    let bad = || Error::bad_request("malformed request").with_code(Code::BadRequest);
    let url = req.url().map_err(|_| bad())?;
    // The raw method: worker::Method maps unknown methods to GET, which would change meaning.
    let method = http::Method::from_bytes(req.inner().method().as_bytes()).map_err(|_| bad())?;
    let mut builder = http::Request::builder().method(method).uri(url.as_str());
    let mut client_ip = None;
    for (name, value) in req.headers().entries() {
        if name.eq_ignore_ascii_case(CLIENT_IP_HEADER) {
            client_ip = value.trim().parse::<IpAddr>().ok();
        }
        builder = builder.header(name, value);
    }
    let body = read_body(&mut req, max_body).await?;
    let mut out = builder.body(Body::full(body)).map_err(|_| bad())?;
    if let Some(ip) = client_ip {
        out.extensions_mut().insert(ClientIp(ip));
    }
    Ok(out)
}

/// The reply, its body read whole first (this worker does not stream yet: a streamed reply,
/// the proxy's, is held until it ends; its audit event is written as it ends). A stream that
/// fails midway becomes a 502, since nothing of it has been sent.
async fn to_worker_buffered(resp: http::Response<Body>) -> worker::Result<Response> {
    let (parts, body) = resp.into_parts();
    match body.collect_capped(usize::MAX).await {
        Ok(bytes) => to_worker(http::Response::from_parts(parts, bytes)),
        Err(e) => to_worker(error_response(&e)),
    }
}

pub(crate) fn to_worker(resp: http::Response<Bytes>) -> worker::Result<Response> {
    let (parts, body) = resp.into_parts();
    let headers = Headers::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            headers.append(name.as_str(), v)?;
        }
    }
    let status = parts.status.as_u16();
    let resp = if body.is_empty() {
        Response::empty()?
    } else {
        Response::from_bytes(body.to_vec())?
    };
    Ok(resp.with_status(status).with_headers(headers))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    #[cfg(feature = "testkit")]
    if req.path().starts_with("/__testkit/") {
        return crate::testkit_route::handle(req, &env).await;
    }
    // The app first: its configuration caps the body, which is read only then.
    let app = match app(&env).await {
        Ok(app) => app,
        Err(e) => {
            worker::console_error!("cannot open Vultrino: {}", e.message());
            return to_worker(error_response(&e));
        }
    };
    let path = req.path();
    let cap = body_cap(app.config(), &path);
    let request = match to_http(req, cap).await {
        Ok(r) => r,
        // On the proxy's paths, Vultrino's own errors carry X-Vultrino-Error.
        Err(e) if vultrino_core::proxy::is_proxy_path(&path) => {
            return to_worker_buffered(vultrino_core::proxy::refusal(&e)).await
        }
        Err(e) => return to_worker(error_response(&e)),
    };
    to_worker_buffered(app.serve(request, None).await).await
}
