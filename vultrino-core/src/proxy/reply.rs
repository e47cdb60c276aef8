//! The proxied reply: its headers scrubbed before they are sent (a `Location` inside the base
//! URL rewritten to the proxy's own path), its body scrubbed chunk by chunk, and the request's
//! audit event written when the body ends or is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::{header, HeaderMap, HeaderValue, Response};

use super::Forwarded;
use crate::audit::{AuditEvent, AuditLog};
use crate::body::{Body, BodyStream};
use crate::error::{Code, Error};
use crate::ports::{Background, BackgroundTask, Ports};
use crate::scrub::{Scrubber, SseScrubber, StreamScrubber};
use crate::upstream;

/// What writing the audit event needs once the reply is handed over.
pub(super) struct Finish {
    pub event: AuditEvent,
    pub ports: Ports,
    pub retention_secs: u64,
    pub bytes_in: Arc<AtomicU64>,
    /// Set when the request body was cut because it carried an agent key (the upstream may
    /// have answered before the cut): the event then says so.
    pub key_in_body: Arc<AtomicBool>,
    pub background: Option<Arc<dyn Background>>,
    /// The exchange's slot of the concurrency caps: released when this is dropped or its
    /// event handed to be written (the reply's stream ended, failed or was dropped).
    pub slot: Option<crate::proxy_caps::Slot>,
}

impl Finish {
    /// The task that writes the event, completed with what the stream saw.
    fn task(
        mut self,
        status: u16,
        bytes_out: u64,
        scrubbed: bool,
        outcome: Outcome<'_>,
    ) -> (BackgroundTask, Option<Arc<dyn Background>>) {
        let event = &mut self.event;
        event.status = Some(status);
        event.bytes_in = Some(self.bytes_in.load(Ordering::Relaxed));
        event.bytes_out = Some(bytes_out);
        event.scrubbed = Some(scrubbed);
        let outcome = match outcome {
            // The cut upload may also fail the reply's body: the refusal is what happened.
            Outcome::Ended | Outcome::Failed(_) if self.key_in_body.load(Ordering::Relaxed) => {
                Outcome::Refused(Code::AgentKeyInRequest)
            }
            other => other,
        };
        match outcome {
            Outcome::Ended => {}
            Outcome::Refused(code) => {
                event.outcome = "error".into();
                event.code = Some(code.as_str().into());
            }
            Outcome::Failed(e) => {
                event.outcome = "error".into();
                event.code = Some(e.code().as_str().into());
            }
            Outcome::Cancelled => event.outcome = "cancelled".into(),
        }
        event.duration_ms = self.ports.now_ms().saturating_sub(event.ts);
        let Finish {
            event,
            ports,
            retention_secs,
            background,
            ..
        } = self;
        let task: BackgroundTask = Box::pin(async move {
            AuditLog::new(&ports, retention_secs).record(event).await;
        });
        (task, background)
    }
}

enum Outcome<'e> {
    Ended,
    /// Ended, but Vultrino refused the request's body meanwhile.
    Refused(Code),
    Failed(&'e Error),
    Cancelled,
}

/// The reply to send: the upstream's status, its headers cleaned and scrubbed, its body
/// scrubbed as it streams.
pub(super) fn render(f: Forwarded, alias: &str, finish: Finish) -> Response<Body> {
    let (parts, body) = f.response.into_parts();
    let location = |value: &str| rewrite_location(value, &f.sent_to, &f.base, alias);
    let (headers, headers_scrubbed) =
        clean_headers(&parts.headers, &f.scrubber, f.pass_cookies, location);
    let status = parts.status;
    let scrub = BodyScrub::for_reply(&parts.headers, f.scrubber);
    let whole_len = body.len_hint();
    let mut stream = Scrubbed {
        whole_len,
        inner: Some(body.into_stream()),
        scrub,
        status: status.as_u16(),
        headers_scrubbed,
        bytes_out: 0,
        finish: Some(finish),
        tail: None,
        error: None,
        inline: None,
    };
    // A reply that has no body (HEAD, 1xx, 204, 304) is whole once its head is sent: the HTTP
    // server never polls its body (whatever the upstream sent after a 204 is not a body), so
    // the event is written now, as ended, instead of as `cancelled` when the unpolled stream
    // is dropped (issue 17's matrix, decision 0112).
    let head = stream
        .finish
        .as_ref()
        .is_some_and(|f| f.event.method.as_deref() == Some("HEAD"));
    if head
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        // The stream is kept (empty now) so that the framing headers stay what they were; with
        // no background the event is written when it is polled, as for any other reply.
        stream.inner = None;
        stream.close(Outcome::Ended);
    }
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    super::harden(out.headers_mut());
    out
}

/// The reply's headers as the client gets them: hop-by-hop ones (and those `Connection`
/// names), the body's length (scrubbing may change it) and, unless the policy passes them,
/// cookies are dropped, and so are the headers [`super::dropped_from_reply`] names; every value is
/// scrubbed; a `Location` goes through `location` and is dropped when it gives `None`. Returns
/// whether anything was scrubbed.
fn clean_headers(
    upstream_headers: &HeaderMap,
    scrubber: &Scrubber,
    pass_cookies: bool,
    location: impl Fn(&str) -> Option<String>,
) -> (HeaderMap, bool) {
    let named = upstream::connection_named(
        upstream_headers
            .get_all(header::CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    // Room for `harden`'s three as well: no regrowth (a rehash) when they are added. Bounded:
    // `len()` counts values, and a capacity past the map's maximum panics (review of perf13,
    // item 4); a reply with more headers than that regrows as any map does.
    let mut out = HeaderMap::with_capacity(upstream_headers.len().min(64) + 3);
    let mut scrubbed = false;
    for (name, value) in upstream_headers {
        if upstream::dropped_response_header(name.as_str(), &named, pass_cookies)
            || super::dropped_from_reply(name.as_str())
        {
            continue;
        }
        let clean = scrubber.scrub(value.as_bytes());
        let is_clean = matches!(clean, std::borrow::Cow::Borrowed(_));
        scrubbed |= !is_clean;
        if is_clean && name != header::LOCATION {
            // Nothing to change: the value itself (a reference to the bytes hyper read, not a
            // copy), with no second validation.
            out.append(name.clone(), value.clone());
            continue;
        }
        let mut clean = clean.into_owned();
        if name == header::LOCATION {
            // Only a `Location` inside the base URL is passed on (rewritten to the proxy's
            // path); any other would send the client, with its key in whichever header its SDK
            // keeps on a redirect, to another host or to another route of Vultrino's own.
            match std::str::from_utf8(&clean).ok().and_then(&location) {
                Some(rewritten) => clean = rewritten.into_bytes(),
                None => continue,
            }
        }
        // A value that is no longer a valid header once scrubbed is left out.
        if let Ok(v) = HeaderValue::from_bytes(&clean) {
            out.append(name.clone(), v);
        }
    }
    (out, scrubbed)
}

/// How a reply body is scrubbed: byte by byte across chunks, or, for an event stream, also
/// event by event as the client joins them (docs/decisions/0069-sse-event-level-scrubbing.md).
///
/// An event stream is recognised by its `Content-Type: text/event-stream`, and also by its first
/// bytes when the reply has no type or one that event streams are mistakenly sent under
/// (`text/plain`, `application/json`, `application/octet-stream`): the OpenAI and Anthropic SDKs
/// parse a `stream=True` body as events whatever its type (review #7). Such a body is taken for
/// an event stream when its first line that is not blank (after an optional BOM) is a field
/// line: a name, then `:` — `data:`, `event:`, a `:` comment, but also an unknown `x:`, which
/// the SDKs skip as the spec says (review L3). A name with a `"` is not taken: the first `:` of
/// a JSON body always follows a `"`, so no JSON body is framed as events. (A text body that
/// starts like `Note: …` is then bounded as an event stream is: 2 MiB without a blank line ends
/// it.) See [`sniff_sse`] for the bounds of the sniffing.
enum BodyScrub {
    Plain(Box<StreamScrubber>),
    Sse(Box<SseScrubber>),
    /// Not decided yet: the first bytes, at most [`SNIFF_LEN`].
    Sniff {
        scrubber: Arc<Scrubber>,
        head: Vec<u8>,
    },
    /// The whole body came in its first chunk and was scrubbed at once
    /// ([`BodyScrub::push_whole`]); whether anything was removed.
    Whole {
        scrubbed: bool,
    },
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Most bytes held while sniffing: a first line without `:` in them is not taken for a field
/// line.
const SNIFF_LEN: usize = 256;

/// Whether a body starting with `head` is an event stream; `None` while more bytes could tell.
/// Leading CR/LF (blank lines, which a client skips) are skipped; a head of nothing else is
/// taken for an event stream once it fills the window (the framing then bounds what follows).
/// The first other line is a field line when a `:` comes before its end and before any `"`.
/// Not recognised (documented residual): a first line without `:` (a field with an empty
/// value to the spec, skipped by the SDKs) or whose name is longer than the window or holds a
/// `"`.
fn sniff_sse(head: &[u8]) -> Option<bool> {
    if head.len() < BOM.len() && BOM.starts_with(head) {
        return None;
    }
    let body = head.strip_prefix(BOM).unwrap_or(head);
    let Some(start) = body.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return (head.len() >= SNIFF_LEN).then_some(true);
    };
    for &b in body.get(start..).unwrap_or_default() {
        match b {
            b':' => return Some(true),
            b'\r' | b'\n' | b'"' => return Some(false),
            _ => {}
        }
    }
    None
}

impl BodyScrub {
    fn for_reply(headers: &HeaderMap, scrubber: Arc<Scrubber>) -> BodyScrub {
        let ty = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"))
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        match ty.as_deref() {
            Some("text/event-stream") => BodyScrub::Sse(Box::new(SseScrubber::new(scrubber))),
            None | Some("" | "text/plain" | "application/json" | "application/octet-stream") => {
                BodyScrub::Sniff {
                    scrubber,
                    head: Vec::new(),
                }
            }
            Some(_) => BodyScrub::Plain(Box::new(StreamScrubber::new(scrubber))),
        }
    }

    /// Decide an undecided body from its first bytes (all of them at the end); returns the
    /// bytes held while sniffing, to be scrubbed now.
    fn decide(&mut self, at_end: bool) -> Option<Vec<u8>> {
        let BodyScrub::Sniff { scrubber, head } = self else {
            return None;
        };
        let sse = match sniff_sse(head) {
            None if !at_end && head.len() < SNIFF_LEN => return None,
            verdict => verdict.unwrap_or(false),
        };
        let head = std::mem::take(head);
        let scrubber = scrubber.clone();
        *self = if sse {
            BodyScrub::Sse(Box::new(SseScrubber::new(scrubber)))
        } else {
            BodyScrub::Plain(Box::new(StreamScrubber::new(scrubber)))
        };
        Some(head)
    }

    /// The scrubbed body when `chunk` is the whole of it (the first chunk, of the body's
    /// declared length): what `push` then `finish` would give, in one pass. A body that is not
    /// an event stream goes through the whole-body [`Scrubber`] (the stream scrubber's output
    /// equals it byte for byte, decision 0070) and, when nothing matches, is sent as it came, without
    /// the stream scrubber's scan for a tail to hold back; an event stream takes the usual path.
    fn push_whole(&mut self, chunk: Bytes) -> crate::Result<Bytes> {
        // The verdict `finish` would give a sniffed body that ends with this chunk.
        let scrubber = match self {
            BodyScrub::Plain(s) => Some(s.scrubber().clone()),
            BodyScrub::Sniff { scrubber, head }
                if head.is_empty() && sniff_sse(&chunk) != Some(true) =>
            {
                Some(scrubber.clone())
            }
            _ => None,
        };
        let Some(scrubber) = scrubber else {
            let first = self.push(chunk)?;
            let last = self.finish()?;
            *self = BodyScrub::Whole {
                scrubbed: self.scrubbed(),
            };
            return Ok(join(first, last));
        };
        let (out, scrubbed) = match scrubber.scrub(&chunk) {
            std::borrow::Cow::Borrowed(_) => (chunk, false),
            std::borrow::Cow::Owned(clean) => (Bytes::from(clean), true),
        };
        *self = BodyScrub::Whole { scrubbed };
        Ok(out)
    }

    /// The bytes now safe to send; `Err` ends the body (an event stream holding back more than
    /// its bound, or with an event it cannot read: fail closed).
    fn push(&mut self, chunk: Bytes) -> crate::Result<Bytes> {
        let chunk = match self {
            BodyScrub::Sniff { head, .. } => {
                head.extend_from_slice(&chunk);
                match self.decide(false) {
                    Some(head) => Bytes::from(head),
                    None => return Ok(Bytes::new()),
                }
            }
            _ => chunk,
        };
        match self {
            BodyScrub::Plain(s) => Ok(s.push_bytes(chunk)),
            BodyScrub::Sse(s) => s.push(&chunk),
            BodyScrub::Sniff { .. } => Ok(Bytes::new()),
            // The fetchers end a body at its declared length; a body that breaks that promise
            // (`Body::from_stream_with_len` does not check it) is not scrubbed as a new stream
            // from here, where a secret split at the boundary would pass: it fails (review of
            // perf13b, L1).
            BodyScrub::Whole { .. } if chunk.is_empty() => Ok(Bytes::new()),
            BodyScrub::Whole { .. } => Err(Error::new(
                crate::error::ErrorKind::UpstreamFailed,
                "the upstream's reply body went past its declared length",
            )
            .with_code(Code::UpstreamInvalid)),
        }
    }

    fn finish(&mut self) -> crate::Result<Bytes> {
        let head = self.decide(true).unwrap_or_default();
        let (first, last) = match self {
            BodyScrub::Plain(s) => (s.push(&head), s.finish()),
            BodyScrub::Sse(s) => (s.push(&head)?, s.finish()?),
            BodyScrub::Sniff { .. } | BodyScrub::Whole { .. } => (Bytes::new(), Bytes::new()),
        };
        Ok(join(first, last))
    }

    fn scrubbed(&self) -> bool {
        match self {
            BodyScrub::Plain(s) => s.scrubbed(),
            BodyScrub::Sse(s) => s.scrubbed(),
            BodyScrub::Sniff { .. } => false,
            BodyScrub::Whole { scrubbed } => *scrubbed,
        }
    }
}

/// `first` then `last`, copied only when both hold bytes.
fn join(first: Bytes, last: Bytes) -> Bytes {
    if first.is_empty() {
        return last;
    }
    if last.is_empty() {
        return first;
    }
    let mut out = Vec::with_capacity(first.len() + last.len());
    out.extend_from_slice(&first);
    out.extend_from_slice(&last);
    Bytes::from(out)
}

/// A `Location` that points inside the credential's base URL, as the proxy's own path
/// (`/proxy/<alias>/<rest>`): the client follows it through Vultrino, with its key, and the
/// real host stays out of its view. A relative one is resolved against the URL the request went
/// to first. Anything else gives `None` (the header is dropped).
fn rewrite_location(
    value: &str,
    sent_to: &url::Url,
    base: &url::Url,
    alias: &str,
) -> Option<String> {
    let target = sent_to.join(value).ok()?;
    if target.origin() != base.origin() {
        return None;
    }
    let base_path = base.path().trim_end_matches('/');
    let rest = target.path().strip_prefix(base_path)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut out = format!("{}{alias}{rest}", super::PREFIX);
    if let Some(q) = target.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = target.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// The scrubbed reply body. The audit event is written when the upstream's body ends (after
/// the held-back tail is sent), when it fails, or when this stream is dropped first (the
/// client went away): by the [`Background`] when there is one, otherwise inline before the end
/// is reported (a dropped stream's event is then lost).
struct Scrubbed {
    /// The body's declared length while no byte of it has come: a first chunk of that length
    /// is the whole body, scrubbed in one pass ([`BodyScrub::push_whole`]).
    whole_len: Option<u64>,
    inner: Option<BodyStream>,
    scrub: BodyScrub,
    status: u16,
    headers_scrubbed: bool,
    bytes_out: u64,
    finish: Option<Finish>,
    /// The held-back tail, to send before the end.
    tail: Option<Bytes>,
    /// The upstream's failure, to pass on once the event is written.
    error: Option<Error>,
    /// The event being written inline (no background).
    inline: Option<BackgroundTask>,
}

impl Scrubbed {
    fn close(&mut self, outcome: Outcome<'_>) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let scrubbed = self.headers_scrubbed || self.scrub.scrubbed();
        let (task, background) = finish.task(self.status, self.bytes_out, scrubbed, outcome);
        match background {
            Some(bg) => bg.spawn(task),
            None => self.inline = Some(task),
        }
    }
}

impl Scrubbed {
    /// The next chunk through the scrubber: in one pass when it is the whole body.
    fn scrub_chunk(&mut self, chunk: Bytes) -> crate::Result<Bytes> {
        match self.whole_len.take() {
            Some(n) if n == chunk.len() as u64 => self.scrub.push_whole(chunk),
            _ => self.scrub.push(chunk),
        }
    }

    /// End the body with `e` once the event is written; the upstream's body is dropped.
    fn fail(&mut self, e: Error) {
        self.inner = None;
        self.close(Outcome::Failed(&e));
        self.error = Some(e);
    }
}

impl Stream for Scrubbed {
    type Item = crate::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(tail) = this.tail.take() {
                return Poll::Ready(Some(Ok(tail)));
            }
            if let Some(task) = this.inline.as_mut() {
                if task.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.inline = None;
            }
            if let Some(e) = this.error.take() {
                return Poll::Ready(Some(Err(e)));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => match this.scrub_chunk(chunk) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => {
                        this.bytes_out += out.len() as u64;
                        return Poll::Ready(Some(Ok(out)));
                    }
                    // Fail closed: the upstream is dropped (cancelled), the client sees a
                    // failed body.
                    Err(e) => this.fail(e),
                },
                // A cut body: the held-back tail is not sent (the client sees a failure).
                Poll::Ready(Some(Err(e))) => this.fail(e),
                Poll::Ready(None) => {
                    this.inner = None;
                    match this.scrub.finish() {
                        Ok(tail) => {
                            this.bytes_out += tail.len() as u64;
                            if !tail.is_empty() {
                                this.tail = Some(tail);
                            }
                            this.close(Outcome::Ended);
                        }
                        Err(e) => this.fail(e),
                    }
                }
            }
        }
    }
}

impl Drop for Scrubbed {
    fn drop(&mut self) {
        if self.finish.is_some() {
            self.close(Outcome::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A clean header value passes as it came (bytes that are valid but not ASCII included);
    /// a `Location`, clean or not, still goes through the rewrite, which drops it when it
    /// answers `None`; one that echoes the secret (raw or behind a JSON escape) is scrubbed
    /// before the rewrite sees it, and the reply counts as scrubbed.
    #[test]
    fn a_clean_location_still_goes_through_the_rewrite_and_other_clean_values_pass_unchanged() {
        let scrubber = Scrubber::new([&b"sk-live-123456"[..]]);
        let mut h = HeaderMap::new();
        h.insert("location", "https://elsewhere.example/x".parse().unwrap());
        h.insert(
            "x-plain",
            HeaderValue::from_bytes(b"caf\xc3\xa9\tok").unwrap(),
        );
        let (out, scrubbed) = clean_headers(&h, &scrubber, false, |_| None);
        assert!(out.get("location").is_none());
        assert!(!scrubbed);
        assert_eq!(out["x-plain"].as_bytes(), b"caf\xc3\xa9\tok");
        let (out, _) = clean_headers(&h, &scrubber, false, |v| Some(format!("/proxy/ex?{v}")));
        assert_eq!(out["location"], "/proxy/ex?https://elsewhere.example/x");
        for v in ["/v1/x?k=sk-live-123456", "/v1/x?k=\\u0073k-live-123456"] {
            h.insert("location", v.parse().unwrap());
            let (out, scrubbed) = clean_headers(&h, &scrubber, false, |v| {
                assert!(!v.contains("k-live"), "{v}");
                Some(v.to_owned())
            });
            assert!(scrubbed, "{v}");
            assert!(!out["location"].to_str().unwrap().contains("k-live"));
        }
    }

    /// Run a body through the scrubber chosen for a reply of this content type.
    fn scrub_reply(content_type: Option<&str>, body: &[u8], chunk: usize) -> (Vec<u8>, bool) {
        let scrubber = Arc::new(Scrubber::new([&b"sk-live-123456"[..]]));
        let mut h = HeaderMap::new();
        if let Some(t) = content_type {
            h.insert(header::CONTENT_TYPE, t.parse().unwrap());
        }
        let mut scrub = BodyScrub::for_reply(&h, scrubber);
        let mut out = Vec::new();
        for c in body.chunks(chunk) {
            out.extend_from_slice(&scrub.push(Bytes::copy_from_slice(c)).unwrap());
        }
        out.extend_from_slice(&scrub.finish().unwrap());
        (out, matches!(scrub, BodyScrub::Sse(_)))
    }

    proptest::proptest! {
        /// A body that comes whole in its first chunk, scrubbed in one pass, gives what the
        /// streaming path (`push`, then `finish`) gives for it (bytes and whether anything was
        /// removed; that path equals the whole-body scrubber for any chunking, decision 0070), whatever
        /// the reply's type: plain, sniffed (JSON, an event stream under another type, a head
        /// too short to tell) or an event stream.
        #[test]
        fn a_whole_body_scrubbed_at_once_is_scrubbed_as_a_stream(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                &b"sk-live-123456"[..], b"sk-li", b"ve-12", b"3456", b"sk-live-123456 ",
                b"data: ", b"{\"choices\":[{\"delta\":{\"content\":\"", b"\"}}]}", b"\n\n",
                b"\r\n", b":", b"\"", b"\\u0073k-live", b"\xEF\xBB\xBF", b"ok", b"\xff",
            ]), 0..12),
            ty in proptest::sample::select(vec![
                None, Some("application/json"), Some("text/plain"), Some("text/event-stream"),
                Some("text/html"), Some("application/octet-stream"),
            ]),
        ) {
            let body = parts.concat();
            proptest::prop_assume!(!body.is_empty());
            let scrubber = Arc::new(Scrubber::new([&b"sk-live-123456"[..]]));
            let mut h = HeaderMap::new();
            if let Some(t) = ty {
                h.insert(header::CONTENT_TYPE, t.parse().unwrap());
            }
            let mut streamed = BodyScrub::for_reply(&h, scrubber.clone());
            let mut want = streamed.push(Bytes::from(body.clone())).map(|b| b.to_vec());
            if let Ok(w) = want.as_mut() {
                match streamed.finish() {
                    Ok(last) => w.extend_from_slice(&last),
                    Err(e) => want = Err(e),
                }
            }
            let mut whole = BodyScrub::for_reply(&h, scrubber);
            let got = whole.push_whole(Bytes::from(body.clone()))
                .and_then(|first| Ok(join(first, whole.finish()?)));
            match (want, got) {
                (Ok(want), Ok(got)) => {
                    proptest::prop_assert_eq!(&want[..], &got[..]);
                    proptest::prop_assert_eq!(streamed.scrubbed(), whole.scrubbed());
                }
                (Err(_), Err(_)) => {}
                (want, got) => proptest::prop_assert!(false, "{:?} against {:?}", want.is_ok(), got.is_ok()),
            }
        }
    }

    /// A body that sends more than it declared (a broken promise of the fetcher's length) is
    /// not scrubbed as a fresh stream after its whole first chunk: it fails, for an event
    /// stream (where a secret split at the boundary would otherwise pass) and for a plain body
    /// (whose extra bytes would otherwise vanish without a word). Review of perf13b, L1.
    #[test]
    fn bytes_past_a_whole_body_fail_the_reply() {
        let scrubber = Arc::new(Scrubber::new([&b"sk-live-123456"[..]]));
        for ty in ["text/event-stream", "application/json", "text/html"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ty.parse().unwrap());
            let mut scrub = BodyScrub::for_reply(&h, scrubber.clone());
            // Whole: the end of it is final (a prefix of a secret is sent as it is).
            scrub
                .push_whole(Bytes::from_static(b"data: sk-live-1234"))
                .unwrap();
            let e = scrub.push(Bytes::from_static(b"56\n\n")).unwrap_err();
            assert_eq!(e.code(), Code::UpstreamInvalid, "{ty}");
            assert!(scrub.push(Bytes::new()).unwrap().is_empty(), "{ty}");
            assert!(scrub.finish().unwrap().is_empty(), "{ty}");
        }
    }

    #[test]
    fn an_event_stream_under_another_type_is_scrubbed_as_events() {
        let ev = |t: &str| {
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n")
        };
        let body = [ev("key: sk-li"), ev("ve-12"), ev("3456 ok")].concat();
        for ty in [
            None,
            Some("text/plain; charset=utf-8"),
            Some("application/json"),
            Some("text/event-stream"),
        ] {
            for chunk in [1, 4, body.len()] {
                let (out, sse) = scrub_reply(ty, body.as_bytes(), chunk);
                let out = String::from_utf8(out).unwrap();
                assert!(sse, "{ty:?}");
                assert!(!out.contains("ve-12"), "{ty:?}, chunks of {chunk}: {out}");
                assert!(out.contains("[REDACTED]"));
            }
        }
        // With a BOM or a comment first, too; but not under a type that is not text.
        let (_, sse) = scrub_reply(None, format!("\u{feff}: hi\n\n{body}").as_bytes(), 2);
        assert!(sse);
        // After blank lines, or after a field the SDKs do not know (review L3).
        for first in ["\n", "\r\n", "\r\n\n\r", "x: 1\n", "\nretry-after: 2\n\n"] {
            for chunk in [1, 3, 512] {
                let input = format!("{first}{body}");
                let (out, sse) = scrub_reply(Some("text/plain"), input.as_bytes(), chunk);
                let out = String::from_utf8(out).unwrap();
                assert!(sse, "{first:?}");
                assert!(
                    !out.contains("ve-12"),
                    "{first:?}, chunks of {chunk}: {out}"
                );
            }
        }
        // A text body taken for events leaves unchanged when clean.
        let text = b"Note: a\nb\n\nc: d e f";
        for chunk in [1, 5, 64] {
            let (out, sse) = scrub_reply(Some("text/plain"), text, chunk);
            assert!(sse);
            assert_eq!(out, text);
        }
        // Blank lines filling the window, then the stream.
        let input = format!("{}{body}", "\n".repeat(SNIFF_LEN + 5));
        let (out, sse) = scrub_reply(None, input.as_bytes(), 64);
        assert!(sse);
        assert!(!String::from_utf8(out).unwrap().contains("ve-12"));
        let (out, sse) = scrub_reply(Some("image/png"), body.as_bytes(), 7);
        assert!(!sse);
        assert_eq!(out, body.as_bytes());
    }

    #[test]
    fn other_bodies_are_scrubbed_as_bytes_and_pass_unchanged() {
        for body in [
            &b"{\"data\": 1, \"k\": \"sk-live-123456\"}"[..],
            b"dat",
            b"",
            b"\xEF\xBB",
            b"[1,2,3]",
            b"id",
            b"\n  {\"data\": \"x\"}",
            b"\r\n\"data: 1\"",
            b"\n\n",
        ] {
            for chunk in [1, 2, 64] {
                let (out, sse) = scrub_reply(Some("application/json"), body, chunk);
                assert!(!sse);
                let whole = Scrubber::new([&b"sk-live-123456"[..]])
                    .scrub(body)
                    .into_owned();
                assert_eq!(out, whole, "{body:?}, chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_location_inside_the_base_url_becomes_the_proxy_path() {
        let base = url::Url::parse("https://api.example/v1").unwrap();
        let sent = url::Url::parse("https://api.example/v1/files/1").unwrap();
        let r = |v: &str| rewrite_location(v, &sent, &base, "ex");
        assert_eq!(
            r("/v1/files/2?x=1").as_deref(),
            Some("/proxy/ex/files/2?x=1")
        );
        assert_eq!(r("https://api.example/v1").as_deref(), Some("/proxy/ex"));
        assert_eq!(r("3").as_deref(), Some("/proxy/ex/files/3"));
        assert_eq!(r("/v10/x"), None);
        assert_eq!(r("/other"), None);
        assert_eq!(r("https://elsewhere.example/v1/x"), None);
        assert_eq!(r("http://api.example/v1/x"), None);
    }

    #[test]
    fn a_reply_with_tens_of_thousands_of_header_values_is_cleaned_without_a_panic() {
        let scrubber = Scrubber::new([&b"sk-live-123456"[..]]);
        let mut h = HeaderMap::new();
        for i in 0..30_000 {
            h.append("x-many", HeaderValue::from(i));
        }
        let (out, _) = clean_headers(&h, &scrubber, false, |_| None);
        assert_eq!(out.get_all("x-many").iter().count(), 30_000);
    }

    #[test]
    fn reply_headers_are_cleaned_and_scrubbed() {
        let scrubber = Scrubber::new([&b"sk-live-123456"[..]]);
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-length", "10".parse().unwrap());
        h.insert("set-cookie", "s=1".parse().unwrap());
        h.insert("x-echo", "key sk-live-123456".parse().unwrap());
        h.insert("openai-processing-ms", "12".parse().unwrap());
        let (out, scrubbed) = clean_headers(&h, &scrubber, false, |_| None);
        assert!(scrubbed);
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "transfer-encoding",
            "content-length",
            "set-cookie",
        ] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
        assert!(!out["x-echo"].to_str().unwrap().contains("sk-live"));
        assert_eq!(out["openai-processing-ms"], "12");
        let (kept, scrubbed) = clean_headers(&h, &scrubber, true, |_| None);
        assert!(kept.get("set-cookie").is_some());
        assert!(scrubbed);
    }
}
