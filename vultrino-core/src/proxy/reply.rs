//! The proxied reply: its headers scrubbed before they are sent (a `Location` inside the base
//! URL rewritten to the proxy's own path), its body scrubbed chunk by chunk, and the request's
//! audit event written when the body ends or is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::{header, HeaderMap, HeaderValue, Response};

use super::Forwarded;
use crate::audit::{AuditEvent, AuditLog};
use crate::body::{Body, BodyStream};
use crate::error::Error;
use crate::ports::{Background, BackgroundTask, Ports};
use crate::scrub::{Scrubber, SseScrubber, StreamScrubber};
use crate::upstream;

/// What writing the audit event needs once the reply is handed over.
pub(super) struct Finish {
    pub event: AuditEvent,
    pub ports: Ports,
    pub retention_secs: u64,
    pub bytes_in: Arc<AtomicU64>,
    pub background: Option<Arc<dyn Background>>,
    /// The exchange's slot of the concurrency caps: released when this is dropped or its
    /// event handed to be written (the reply's stream ended, failed or was dropped).
    pub slot: Option<super::caps::Slot>,
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
        match outcome {
            Outcome::Ended => {}
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
    let stream = Scrubbed {
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
    let mut out = HeaderMap::with_capacity(upstream_headers.len());
    let mut scrubbed = false;
    for (name, value) in upstream_headers {
        if upstream::dropped_response_header(name.as_str(), &named, pass_cookies)
            || super::dropped_from_reply(name.as_str())
        {
            continue;
        }
        let clean = scrubber.scrub(value.as_bytes());
        scrubbed |= matches!(clean, std::borrow::Cow::Owned(_));
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

/// How a reply body is scrubbed: byte by byte across chunks, or, for `text/event-stream`, also
/// event by event as the client joins them (docs/decisions/0069-sse-event-level-scrubbing.md).
enum BodyScrub {
    Plain(Box<StreamScrubber>),
    Sse(Box<SseScrubber>),
}

impl BodyScrub {
    fn for_reply(headers: &HeaderMap, scrubber: Arc<Scrubber>) -> BodyScrub {
        let sse = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
        if sse {
            BodyScrub::Sse(Box::new(SseScrubber::new(scrubber)))
        } else {
            BodyScrub::Plain(Box::new(StreamScrubber::new(scrubber)))
        }
    }

    /// The bytes now safe to send; `Err` ends the body (an event stream holding back more than
    /// its bound: fail closed).
    fn push(&mut self, chunk: Bytes) -> crate::Result<Bytes> {
        match self {
            BodyScrub::Plain(s) => Ok(s.push_bytes(chunk)),
            BodyScrub::Sse(s) => s.push(&chunk),
        }
    }

    fn finish(&mut self) -> crate::Result<Bytes> {
        match self {
            BodyScrub::Plain(s) => Ok(s.finish()),
            BodyScrub::Sse(s) => s.finish(),
        }
    }

    fn scrubbed(&self) -> bool {
        match self {
            BodyScrub::Plain(s) => s.scrubbed(),
            BodyScrub::Sse(s) => s.scrubbed(),
        }
    }
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
                Poll::Ready(Some(Ok(chunk))) => match this.scrub.push(chunk) {
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
