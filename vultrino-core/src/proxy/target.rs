//! Where a proxied request goes, what its body may be, and the last gate before it is sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use super::slots::KEY_PARAM;
use crate::agent_key::carries_agent_key;
use crate::body::{Body, BodyStream};
use crate::credential::{validate_name, CredentialRecord, OpenedCredential};
use crate::error::{Code, Error, Result};
use crate::scrub::{KeyFound, KeyGuard, Scrubber};
use crate::ssrf;

/// `/proxy/<alias>/<rest>` → `(alias, rest)`, `rest` raw (percent-encoding kept) and starting
/// with `/` unless empty. `None` when there is no valid alias.
pub(super) fn split(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix(super::PREFIX)?;
    let (alias, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    validate_name("alias", alias).ok()?;
    Some((alias, rest))
}

/// [`base_url`] of an opened credential, checked as a URL to fetch ([`ssrf::check_url`]):
/// parsed and checked once per stored version (and `allow_loopback` setting).
pub(super) fn checked_base(
    opened: &OpenedCredential,
    allow_loopback: bool,
) -> Result<ssrf::Target> {
    if let Some((loopback, target)) = opened.base_url.get() {
        if *loopback == allow_loopback {
            return Ok(target.clone());
        }
    }
    let url = base_url(&opened.record)?;
    let target = ssrf::check_url(url.as_str(), allow_loopback)?;
    let _ = opened.base_url.set((allow_loopback, target.clone()));
    Ok(target)
}

/// The credential's base URL: its `base_url`, or `https://<host>` when its policy allows one
/// exact host (no wildcard); otherwise 400 `no_base_url`.
pub(super) fn base_url(record: &CredentialRecord) -> Result<url::Url> {
    let raw = match (&record.base_url, record.policy.allowed_hosts.as_slice()) {
        (Some(b), _) => b.clone(),
        (None, [host]) if !host.contains('*') => format!("https://{host}"),
        (None, _) => {
            return Err(Error::bad_request(format!(
                "credential '{}' has no base_url and its allowed_hosts are not one exact host: \
                 set base_url (https://host[/path]) to use it through /proxy/",
                record.alias
            ))
            .with_code(Code::NoBaseUrl))
        }
    };
    // The whole upstream URL is then checked like any other (SSRF: 403 `ssrf_blocked`; policy:
    // 403 `host_not_allowed`), under this deployment's settings of now.
    url::Url::parse(&raw)
        .map_err(|_| Error::bad_request("base_url is not a URL").with_code(Code::InvalidBaseUrl))
}

/// The upstream URL: the base URL's path joined with `rest`, and the request's query without
/// the `?key=` values that hold an agent key. A path with dot segments or encoded dots (which
/// could climb out of the base path) is refused (400 `invalid_url`).
pub(super) fn upstream_url(base: &url::Url, rest: &str, query: Option<&str>) -> Result<url::Url> {
    if crate::policy::is_ambiguous_path(rest) || rest.contains('\\') {
        return Err(Error::bad_request(
            "the path has dot segments, encoded dots or backslashes: send it resolved",
        )
        .with_code(Code::InvalidUrl));
    }
    let mut url = base.clone();
    let base_path = base.path().trim_end_matches('/');
    let path = match (base_path, rest) {
        ("", "") => "/".to_string(),
        (b, r) => [b, r].concat(),
    };
    url.set_path(&path);
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let mut parsed = url::form_urlencoded::parse(pair.as_bytes());
            !matches!(parsed.next(), Some((k, v)) if k == KEY_PARAM && carries_agent_key(v.as_bytes()))
        })
        .collect();
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    Ok(url)
}

/// The last gate: the request about to be sent carries no agent key in its path, query or any
/// header value (400 `agent_key_in_request`; nothing is sent). The slots were emptied before;
/// this catches a key anywhere else (a custom header, a path segment, another parameter).
pub(super) fn refuse_agent_keys(request: &http::Request<Body>) -> Result<()> {
    crate::agent_key::refuse_in(request.uri(), request.headers())
}

/// The request body behind a [`KeyGuard`] for the agent's key (its `needles`, asked for only
/// when there is a body): a whole body that carries a key is refused here
/// (nothing is sent); a streamed one is released as the guard decides, and on a key the stream
/// ends with [`key_in_body`](crate::execute::key_in_body) (the fetcher aborts the upload, so the upstream gets a cut body
/// without the key) and `refused` is set for the audit event.
pub(super) fn guarded(
    body: Body,
    needles: impl FnOnce() -> Arc<Scrubber>,
    refused: Arc<AtomicBool>,
) -> Result<Body> {
    if body.len_hint() == Some(0) {
        return Ok(Body::empty());
    }
    let guard = KeyGuard::with_needles(needles());
    if let Some(bytes) = body.as_full() {
        if guard.contains(bytes) {
            refused.store(true, Ordering::Relaxed);
            return Err(crate::agent_key::in_body());
        }
        return Ok(body);
    }
    let len = body.len_hint();
    let stream = Guarded {
        inner: Some(body.into_stream()),
        guard,
        refused,
    };
    Ok(match len {
        Some(n) => Body::from_stream_with_len(stream, n),
        None => Body::from_stream(stream),
    })
}

struct Guarded {
    /// `None` once the body ended or was refused.
    inner: Option<BodyStream>,
    guard: KeyGuard,
    refused: Arc<AtomicBool>,
}

impl Stream for Guarded {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let released = match inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.guard.push(chunk),
                Poll::Ready(Some(Err(e))) => {
                    // A failed body: what is held is never released.
                    this.inner = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.inner = None;
                    match this.guard.finish() {
                        Ok(tail) if tail.is_empty() => return Poll::Ready(None),
                        Ok(tail) => return Poll::Ready(Some(Ok(tail))),
                        Err(KeyFound) => Err(KeyFound),
                    }
                }
            };
            match released {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Poll::Ready(Some(Ok(out))),
                Err(KeyFound) => {
                    this.inner = None;
                    this.refused.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(crate::agent_key::in_body())));
                }
            }
        }
    }
}

/// The request body, at most `cap` bytes (a declared length was checked before; a stream that
/// passes the cap yields 413 `body_too_large`, which aborts the upload), its bytes counted
/// into `sent` for the audit event.
pub(super) fn capped(body: Body, cap: usize, sent: Arc<AtomicU64>) -> Body {
    match body.len_hint() {
        Some(0) => Body::empty(),
        _ if !body.is_stream() => {
            sent.store(body.len_hint().unwrap_or(0), Ordering::Relaxed);
            body
        }
        len => {
            let stream = Capped {
                inner: body.into_stream(),
                cap: cap as u64,
                sent,
                seen: 0,
            };
            match len {
                Some(n) => Body::from_stream_with_len(stream, n),
                None => Body::from_stream(stream),
            }
        }
    }
}

struct Capped {
    inner: BodyStream,
    cap: u64,
    seen: u64,
    sent: Arc<AtomicU64>,
}

impl Stream for Capped {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.cap {
                    return Poll::Ready(Some(Err(super::too_large())));
                }
                self.sent.store(self.seen, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_path_after_the_alias_is_kept_raw() {
        assert_eq!(
            split("/proxy/openai/v1/chat/completions"),
            Some(("openai", "/v1/chat/completions"))
        );
        assert_eq!(split("/proxy/openai"), Some(("openai", "")));
        assert_eq!(split("/proxy/a/x%2Fy"), Some(("a", "/x%2Fy")));
        assert_eq!(split("/proxy//x"), None);
        assert_eq!(split("/proxy/-bad/x"), None);
    }

    #[test]
    fn the_upstream_url_joins_base_path_rest_and_query() {
        let base = url::Url::parse("https://api.example/v1").unwrap();
        let u = upstream_url(&base, "/chat/completions", Some("a=1&b=%20")).unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.example/v1/chat/completions?a=1&b=%20"
        );
        let root = url::Url::parse("https://api.example").unwrap();
        assert_eq!(
            upstream_url(&root, "", None).unwrap().as_str(),
            "https://api.example/"
        );
        // An agent key in ?key= is taken out; another `key` stays.
        let u = upstream_url(&root, "/m", Some("key=vk_0123456789abcdef_s&alt=sse&key=x")).unwrap();
        assert_eq!(u.as_str(), "https://api.example/m?alt=sse&key=x");
        for bad in [
            "/../admin",
            "/a/%2e%2e/b",
            "/a/..",
            "/a\\..\\b",
            "/%252e%252e/x",
        ] {
            assert_eq!(
                upstream_url(&base, bad, None).unwrap_err().code(),
                Code::InvalidUrl,
                "{bad}"
            );
        }
    }

    #[test]
    fn agent_keys_are_found_in_any_percent_encoding() {
        for carrying in [
            &b"vk_0123"[..],
            b"Bearer VK_abc",
            b"/x/vk%5Fabc",
            b"%76k_a",
            b"%76%6B%5F%61",
            b"vk%255Fa",
            b"vk%25255Fa",
            b"vt_0123",
            b"Bearer VT_abc",
            b"/x/vt%5Fabc",
        ] {
            assert!(
                carries_agent_key(carrying),
                "{:?}",
                String::from_utf8_lossy(carrying)
            );
        }
        for clean in [
            &b"vk_"[..],
            b"vk_ ",
            b"vk",
            b"/v1/chat",
            b"walk_on",
            b"v%6b",
        ] {
            assert!(
                !carries_agent_key(clean),
                "{:?}",
                String::from_utf8_lossy(clean)
            );
        }
    }
}
