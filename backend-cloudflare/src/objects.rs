//! The worker ↔ Durable Object transport, both ends, through the runtime's own types
//! (`web_sys::Request`/`Response`): a JSON operation POSTed to an object, a JSON reply back
//! (decisions 0120, 0128).
//!
//! Both classes ([`SessionDO`](crate::sessions::SessionDO), [`AuditDO`](crate::audit_store::AuditDO))
//! export their JS-facing methods themselves with `wasm_bindgen` instead of workers-rs's
//! `#[durable_object]` macro: the macro turns every request an object receives into a
//! `worker::Request` (reading its `cf` — an object the runtime builds afresh on each read — its
//! method, URL and headers) and every reply into a `worker::Response` first; the objects use
//! none of that. workers-rs's `Request::new_with_init` and `Stub::fetch_with_request` do the same
//! on the caller's side for each request the worker makes. Here an operation costs the caller a
//! `getByName`, a `Request`, a `fetch` and one `text()` (none for an audit append, whose 200 is
//! the whole answer); the object a `url`, one `text()` and one `Response`.
//!
//! Errors keep their meaning: an object that cannot parse an operation answers 400; one that
//! fails while applying it throws (the caller's `fetch` rejects); the caller takes anything but a
//! 200 as a failure of the store.

use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, worker_sys, ObjectNamespace};

/// POST `body` (JSON text) to the object `name` of `ns` at `url`; its reply when it is a 200.
/// `what` names the class in an error (never the object's name: it is made of a session's hash
/// or a counter's key).
pub(crate) async fn post(
    ns: &ObjectNamespace,
    name: &str,
    url: &str,
    body: &str,
    what: &str,
) -> worker::Result<web_sys::Response> {
    let stub: worker_sys::DurableObject = ns.get_by_name(name)?.into_rpc();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let req = web_sys::Request::new_with_str_and_init(url, &init)?;
    // A stub's `fetch` resolves to a `Response` or rejects: no `instanceof` check needed.
    let resp: web_sys::Response = JsFuture::from(stub.fetch_with_request(&req)?)
        .await?
        .unchecked_into();
    if resp.status() != 200 {
        return Err(worker::Error::RustError(format!(
            "{what} answered {}",
            resp.status()
        )));
    }
    Ok(resp)
}

/// An object's JSON reply, read in one `text()` call (no stream reader: decision 0118; one string
/// copied in, where `arrayBuffer()` costs a view, its length and a copy) and parsed by serde_json.
pub(crate) async fn reply_json<R: serde::de::DeserializeOwned>(
    resp: &web_sys::Response,
) -> worker::Result<R> {
    let unreadable = || worker::Error::RustError("unreadable object reply".into());
    let text = JsFuture::from(resp.text().map_err(|_| unreadable())?)
        .await
        .map_err(|_| unreadable())?
        .as_string()
        .ok_or_else(unreadable)?;
    serde_json::from_str(&text).map_err(worker::Error::from)
}

/// The path of an operation an object received (`https://<any>/<path>`, as [`post`] sends it).
pub(crate) fn path(req: &web_sys::Request) -> String {
    crate::request_path::path_of(&req.url()).to_owned()
}

/// An operation an object received, read as one string and parsed by serde_json; `None` when it
/// is not one (the object answers 400).
pub(crate) async fn read_op<T: serde::de::DeserializeOwned>(req: &web_sys::Request) -> Option<T> {
    let text = JsFuture::from(req.text().ok()?).await.ok()?.as_string()?;
    serde_json::from_str(&text).ok()
}

/// A 200 reply of `value` as JSON. `_writes`: the storage writes the operation made, sent (in
/// the test worker only) as a header its counters read (docs/decisions/0117).
pub(crate) fn json(value: &impl serde::Serialize, _writes: u32) -> worker::Result<JsValue> {
    let text = serde_json::to_string(value)?;
    let init = web_sys::ResponseInit::new();
    #[cfg(feature = "testkit")]
    {
        let n = _writes.to_string();
        init.set_headers(&crate::headers::to_js([(WRITES_HEADER, n.as_str())])?.into());
    }
    Ok(web_sys::Response::new_with_opt_str_and_init(Some(&text), &init)?.into())
}

/// A 200 whose body is the constant `{}`: the caller of this build reads no body, and a
/// caller of an earlier build — still running beside this one while a deployment or a rollback
/// spreads, object code and worker code apart — parses it as a reply without error (review of
/// decision 0128, F1).
#[cfg(not(feature = "testkit"))]
pub(crate) fn ok_object() -> worker::Result<JsValue> {
    Ok(web_sys::Response::new_with_opt_str(Some("{}"))?.into())
}

/// A refusal (`status`, plain text), as workers-rs's `Response::error` made it.
pub(crate) fn error(message: &str, status: u16) -> worker::Result<JsValue> {
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    Ok(web_sys::Response::new_with_opt_str_and_init(Some(message), &init)?.into())
}

/// The reply header that tells the test worker's counters how many storage writes an operation
/// made (docs/decisions/0117).
#[cfg(feature = "testkit")]
pub(crate) const WRITES_HEADER: &str = "x-storage-writes";

/// What an object's exported method gives the runtime: its reply, or its error thrown.
pub(crate) fn to_js(result: worker::Result<JsValue>) -> Result<JsValue, JsValue> {
    result.map_err(JsValue::from)
}

/// `Date.now()`, in one crossing (workers-rs's `Date::now()` makes a `Date`, then reads it).
pub(crate) fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}
