//! The body of a request or a response as the core sees it: whole [`Bytes`], or a stream of
//! chunks that arrive (or leave) one by one.
//!
//! Every route but the pass-through proxy works on whole bodies ([`App::handle`]); the proxy
//! (`/proxy/{alias}/…`) streams both ways, so that a 1 GiB download or a server-sent-event reply
//! passes through without being held whole. [`App::serve`] is the entry point that takes and
//! returns this type.
//!
//! Wasm-clean: a stream is a boxed [`futures_core::Stream`], `Send` on native targets and not on
//! wasm32 (the Workers runtime's streams are `!Send`), as the ports do with
//! [`MaybeSend`](crate::maybe_send::MaybeSend). No executor, no tokio.
//!
//! [`App::handle`]: crate::app::App::handle
//! [`App::serve`]: crate::app::App::serve

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;

use crate::error::{Code, Error, Result};
use crate::maybe_send::MaybeSend;

/// A boxed stream of body chunks. An `Err` item ends the body: what came before it is not a
/// whole body, and a consumer must not present it as one (a server aborts the connection, a
/// client reports the failure).
#[cfg(not(target_arch = "wasm32"))]
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;
/// A boxed stream of body chunks (not `Send` on wasm32).
#[cfg(target_arch = "wasm32")]
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + 'static>>;

/// A request or response body: whole bytes, or a stream.
///
/// `Debug` shows the form and the length, never the bytes (a body may carry a secret).
pub struct Body {
    kind: Kind,
}

enum Kind {
    Full(Bytes),
    Stream {
        stream: BodyStream,
        /// The length the stream will have, when known (a `Content-Length`).
        len: Option<u64>,
    },
}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body {
            kind: Kind::Full(bytes.into()),
        }
    }

    /// A streamed body of unknown length.
    pub fn from_stream<S>(stream: S) -> Body
    where
        S: Stream<Item = Result<Bytes>> + MaybeSend + 'static,
    {
        Body {
            kind: Kind::Stream {
                stream: Box::pin(stream),
                len: None,
            },
        }
    }

    /// A streamed body that declares its length (`len` bytes, as a `Content-Length` said).
    /// The declaration is a promise the producer made, not a check: a consumer that relies on
    /// it still counts what arrives.
    pub fn from_stream_with_len<S>(stream: S, len: u64) -> Body
    where
        S: Stream<Item = Result<Bytes>> + MaybeSend + 'static,
    {
        Body {
            kind: Kind::Stream {
                stream: Box::pin(stream),
                len: Some(len),
            },
        }
    }

    /// Whether the body is a stream (not whole bytes).
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream { .. })
    }

    /// The bytes of a whole body (`None` for a stream).
    pub fn as_full(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full(b) => Some(b),
            Kind::Stream { .. } => None,
        }
    }

    /// The body's length when it is known before reading: a whole body's, or a stream's
    /// declared one.
    pub fn len_hint(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full(b) => Some(b.len() as u64),
            Kind::Stream { len, .. } => *len,
        }
    }

    /// The body as a stream (a whole body becomes one chunk; an empty one, no chunk).
    pub fn into_stream(self) -> BodyStream {
        match self.kind {
            Kind::Stream { stream, .. } => stream,
            Kind::Full(bytes) => Box::pin(Once(Some(bytes))),
        }
    }

    /// Read the whole body, at most `limit` bytes: a declared length over `limit` is refused
    /// before anything is read, and a stream is read only until it passes `limit` (never more
    /// than one chunk past it). Past the limit: `PayloadTooLarge` (code `body_too_large`). An
    /// error of the stream is returned as it is.
    pub async fn collect_capped(self, limit: usize) -> Result<Bytes> {
        let too_large =
            || Error::too_large("request body is too large").with_code(Code::BodyTooLarge);
        match self.kind {
            Kind::Full(bytes) if bytes.len() > limit => Err(too_large()),
            Kind::Full(bytes) => Ok(bytes),
            Kind::Stream { len: Some(n), .. } if n > limit as u64 => Err(too_large()),
            Kind::Stream { mut stream, len } => {
                let mut first: Option<Bytes> = None;
                let mut rest: Option<BytesMut> = None;
                let mut received = 0usize;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if chunk.len() > limit - received {
                        return Err(too_large());
                    }
                    received += chunk.len();
                    match (&mut first, &mut rest) {
                        (None, _) => first = Some(chunk),
                        (Some(head), None) => {
                            let capacity = len.map_or(0, |n| n as usize).max(received);
                            let mut buf = BytesMut::with_capacity(capacity);
                            buf.extend_from_slice(head);
                            buf.extend_from_slice(&chunk);
                            rest = Some(buf);
                        }
                        (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
                    }
                }
                Ok(match (first, rest) {
                    (_, Some(buf)) => buf.freeze(),
                    (Some(one), None) => one,
                    (None, None) => Bytes::new(),
                })
            }
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::full(bytes)
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::full(bytes)
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::full(Bytes::from_static(text.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::full(text)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Kind::Stream { len: Some(n), .. } => write!(f, "Body::Stream({n} bytes declared)"),
            Kind::Stream { len: None, .. } => f.write_str("Body::Stream"),
        }
    }
}

/// A body is a stream of its chunks: a whole body yields itself once (nothing if empty).
impl Stream for Body {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) if bytes.is_empty() => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(Some(Ok(std::mem::take(bytes)))),
            Kind::Stream { stream, .. } => stream.as_mut().poll_next(cx),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.kind {
            Kind::Full(b) if b.is_empty() => (0, Some(0)),
            Kind::Full(_) => (1, Some(1)),
            Kind::Stream { stream, .. } => stream.size_hint(),
        }
    }
}

/// One chunk, then the end.
struct Once(Option<Bytes>);

impl Stream for Once {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().0.take().filter(|b| !b.is_empty()).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::executor::block_on;

    fn chunks(parts: &[&'static str]) -> Body {
        let items: Vec<Result<Bytes>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(futures_util::stream::iter(items))
    }

    #[test]
    fn a_stream_collects_to_its_chunks_joined() {
        let b = block_on(chunks(&["ab", "", "cd", "e"]).collect_capped(5)).unwrap();
        assert_eq!(&b[..], b"abcde");
        assert_eq!(
            &block_on(Body::from("xyz").collect_capped(3)).unwrap()[..],
            b"xyz"
        );
        assert!(block_on(Body::empty().collect_capped(0))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn collect_refuses_past_the_limit_without_reading_on() {
        // The third chunk is never read: the limit is passed at the second.
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = polled.clone();
        let stream = futures_util::stream::iter(["abc", "def", "ghi"]).map(move |p| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Bytes::from_static(p.as_bytes()))
        });
        let e = block_on(Body::from_stream(stream).collect_capped(4)).unwrap_err();
        assert_eq!((e.code(), e.status().as_u16()), (Code::BodyTooLarge, 413));
        assert_eq!(polled.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A declared length over the limit is refused before any read; whole bodies too.
        let declared = Body::from_stream_with_len(futures_util::stream::pending(), 10);
        assert_eq!(
            block_on(declared.collect_capped(9)).unwrap_err().code(),
            Code::BodyTooLarge
        );
        assert_eq!(
            block_on(Body::from("12345").collect_capped(4))
                .unwrap_err()
                .code(),
            Code::BodyTooLarge
        );
    }

    #[test]
    fn a_stream_error_ends_the_collect_with_that_error() {
        let items: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(Error::bad_request("client went away").with_code(Code::InvalidBody)),
        ];
        let e = block_on(Body::from_stream(futures_util::stream::iter(items)).collect_capped(10));
        assert_eq!(e.unwrap_err().code(), Code::InvalidBody);
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let d = format!("{:?}", Body::from("sk-live-secret"));
        assert!(!d.contains("sk-live"), "{d}");
        assert_eq!(d, "Body::Full(14 bytes)");
    }

    #[test]
    fn a_whole_body_streams_as_one_chunk() {
        let got: Vec<Bytes> = block_on(Body::from("hello").map(|c| c.unwrap()).collect());
        assert_eq!(got, vec![Bytes::from_static(b"hello")]);
        let none: Vec<Result<Bytes>> = block_on(Body::empty().into_stream().collect());
        assert!(none.is_empty());
    }
}
