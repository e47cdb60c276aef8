//! The Workers runtime's `ReadableStream`s as Rust byte streams and back, and a timer.
//!
//! - [`from_js`]: a JS `ReadableStream` (an incoming request body, an upstream response body) as
//!   a `Stream` of [`Bytes`], one chunk at a time. Dropping it before its end cancels the JS
//!   stream (for a `fetch` response: the runtime stops reading from the upstream).
//! - [`to_js`]: a `Stream` of [`Bytes`] as a JS `ReadableStream` that pulls one chunk only when
//!   its reader asks for one (high-water mark 0): the runtime's consumer (the client's socket, the
//!   upstream's) sets the pace, and nothing queues in between. When the JS side cancels the
//!   stream (the client went away), the Rust stream is dropped.
//! - [`Timer`]: a `setTimeout` future that wakes whichever task polled it last. (worker's
//!   `Delay` keeps the waker of its first poll, so a timer created in one task and polled in
//!   another — a deadline set before the response headers and enforced while the body streams —
//!   would never wake the second.)
//!
//! No chunk is ever copied into a growing buffer here: memory stays at a few chunks whatever
//! the size of a body (`backend-local/tests/worker_stream.rs` measures it in workerd).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wasm_streams::readable::IntoStream;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::web_sys::{self, ReadableStream};

/// A JS `ReadableStream` of byte chunks as a `Stream` of [`Bytes`]. An error of the JS stream
/// (the peer reset the connection, the fetch was aborted) is an `Err` item — never taken for the
/// end of the body.
pub(crate) struct JsBytes {
    inner: IntoStream<'static>,
}

pub(crate) fn from_js(stream: ReadableStream) -> JsBytes {
    JsBytes {
        // `into_stream` cancels the JS stream when dropped before its end.
        inner: wasm_streams::ReadableStream::from_raw(stream).into_stream(),
    }
}

impl Stream for JsBytes {
    type Item = Result<Bytes, JsValue>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match futures::ready!(self.inner.poll_next_unpin(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                Some(Ok(chunk)) => {
                    let bytes = match chunk.dyn_into::<Uint8Array>() {
                        Ok(array) => array,
                        // An ArrayBuffer, or a view of another kind: its bytes.
                        Err(other) if other.is_instance_of::<js_sys::ArrayBuffer>() => {
                            Uint8Array::new(&other)
                        }
                        Err(_) => {
                            return Poll::Ready(Some(Err(JsValue::from_str(
                                "a body chunk is not bytes",
                            ))))
                        }
                    };
                    if bytes.length() == 0 {
                        continue;
                    }
                    Poll::Ready(Some(Ok(Bytes::from(bytes.to_vec()))))
                }
            };
        }
    }
}

/// `stream` as a JS `ReadableStream` pulled one chunk at a time (see the module doc). Empty
/// chunks are skipped; an `Err` item errors the JS stream (a response body then ends abruptly,
/// an upload makes its `fetch` fail).
pub(crate) fn to_js<S>(stream: S) -> ReadableStream
where
    S: Stream<Item = Result<Bytes, JsValue>> + 'static,
{
    let chunks = stream.filter_map(|item| async move {
        match item {
            Ok(b) if b.is_empty() => None,
            Ok(b) => Some(Ok(JsValue::from(Uint8Array::from(b.as_ref())))),
            Err(e) => Some(Err(e)),
        }
    });
    wasm_streams::ReadableStream::from_stream(chunks).into_raw()
}

fn global() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

struct TimerState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Resolves `ms` milliseconds after it is made (not after its first poll), waking the task
/// that polled it last. Dropping it clears the JS timeout.
pub(crate) struct Timer {
    state: Rc<TimerState>,
    handle: Option<i32>,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    pub(crate) fn after_ms(ms: u64) -> Timer {
        Timer::new(ms, None)
    }

    /// A timer that also aborts `ctl` when it fires, whether or not anything polls it then (a
    /// deadline that must hold while nobody reads: a client that stopped reading a reply).
    pub(crate) fn aborting(ms: u64, ctl: web_sys::AbortController) -> Timer {
        Timer::new(ms, Some(ctl))
    }

    /// Whether the timer has fired.
    pub(crate) fn fired(&self) -> bool {
        self.state.fired.get()
    }

    fn new(ms: u64, abort: Option<web_sys::AbortController>) -> Timer {
        let state = Rc::new(TimerState {
            fired: Cell::new(false),
            waker: RefCell::new(None),
        });
        let shared = state.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            shared.fired.set(true);
            if let Some(ctl) = &abort {
                ctl.abort();
            }
            // Taken before waking: no borrow is held while the waker runs.
            let waker = shared.waker.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        });
        // setTimeout takes an i32: longer than ~24 days is "never" for a request.
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let handle = global()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok();
        if handle.is_none() {
            // The runtime refused the timer: fire at once rather than never.
            state.fired.set(true);
        }
        Timer {
            state,
            handle,
            _callback: callback,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.fired.get() {
            return Poll::Ready(());
        }
        let mut slot = self.state.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            global().clear_timeout_with_handle(h);
        }
    }
}
