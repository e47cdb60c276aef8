//! The [`Fetcher`] conformance suite: one check per `# Behavior` sentence of [`Fetcher::fetch`]
//! that every implementation keeps, against an upstream the caller runs.
//!
//! The core does no I/O, so each backend's test starts a loopback HTTP/1.1 upstream implementing
//! the route table below (exactly it: the checks rely on every detail), finds a port nobody
//! listens on, and calls [`fetcher_suite`] or single checks by name ([`fetcher_check`],
//! [`FETCHER_CHECKS`]). Every request is made with `allow_loopback: true`. The SSRF sentence
//! (refused destinations) is not checked here: where names are resolved differs per platform, so
//! each backend tests its own refusals.
//!
//! # The upstream's route table
//!
//! Paths match exactly; query parameters not listed are ignored (the suite appends
//! `key=fetcher-suite-marker` to requests that must fail, to see that errors do not repeat the
//! URI). Response header names may be sent in any case; no route sends `Content-Encoding` unless
//! listed.
//!
//! | Request | Response |
//! |---|---|
//! | `GET /ok` | `200`, `Content-Length: 5`, body `hello` |
//! | `GET /redirect/<id>?status=S` | status `S` (a 3xx), `Location: /landing/<id>`, `Content-Length: 0` |
//! | `GET /landing/<id>` | `200`, body `landed`; the upstream counts these requests per `<id>` |
//! | `GET /hits/<id>` | `200`, body: the decimal number of `/landing/<id>` requests received so far |
//! | `GET /slow?ms=N` | nothing for `N` ms, then `200`, `Content-Length: 4`, body `late` |
//! | `GET /big?n=N` | `200`, `Content-Length: N`, body `N` bytes `x` |
//! | `HEAD /big?n=N` | `200`, `Content-Length: N`, no body |
//! | `GET /big?n=N&hang=1` | `200`, `Content-Length: N`, the first `min(N, 3)` bytes `x`, then nothing more: the connection stays open (at least 30 s or until the upstream stops) |
//! | `GET /big-chunked?n=N` | `200`, no `Content-Length` (`Transfer-Encoding: chunked`), `N` bytes `x` in chunks of at most 1024 |
//! | `GET /big-chunked?n=N&hang=1` | as above, but the last chunk never comes: the connection stays open |
//! | `POST /encoded?ce=C` | `200`, `Content-Encoding: C`, `Content-Length`, body: the request body byte for byte |
//! | `POST /encoded?ce=C&chunked=1` | as above, without `Content-Length` (chunked) |
//! | `<any method> /echo<?query>` | `200`, `Content-Type: application/json`, `{"method": "<method>", "target": "<path?query as received>", "headers": [["<lowercase name>", "<value>"], …], "body_base64": "<standard base64 of the request body>"}` with one pair per header line received, in order |
//! | `GET /multi-header` | `201`, header lines in this order: `Set-Cookie: a=1`, `X-Multi: one`, `Set-Cookie: b=2`, `X-Multi: two`, then `Content-Length: 2`, body `ok` |
//! | `GET /empty-204` | `204`, no body |
//! | `GET /not-modified` | `304`, `Content-Length: 10000000`, `ETag: "v1"`, no body |
//!
//! The refused URL is `http://127.0.0.1:<port>` with nothing listening on `<port>` (bind a
//! listener, note its port, close it).
//!
//! # Encoded bodies
//!
//! The core refuses a reply whose `Content-Encoding` is not `identity` (`upstream_encoded`): it
//! cannot scrub a secret out of compressed bytes. So a fetcher must never hand the core encoded
//! bytes without their `Content-Encoding`. A platform may decode bodies itself (workerd decodes
//! `gzip` and `br` in `fetch`); then the body it returns is the decoded one, and it must drop
//! `Content-Encoding` and the encoded `Content-Length`. [`fetcher_never_hides_an_encoding`]
//! accepts exactly those two outcomes per coding: untouched (header and bytes as sent) or decoded
//! (no header, the plain bytes, no stale length).

use base64::Engine as _;
use bytes::Bytes;

use super::{ensure, ok, refused, show};
use crate::error::{Code, ErrorKind, Result};
use crate::ports::{Clock, FetchOptions, Fetcher};

/// Where the suite's upstream listens.
#[derive(Debug, Clone, Copy)]
pub struct FetchUpstream<'a> {
    /// `http://127.0.0.1:<port>` (no trailing slash) of a server implementing the route table in
    /// the [module doc](self).
    pub base_url: &'a str,
    /// `http://127.0.0.1:<port>` (no trailing slash) with nothing listening on `<port>`.
    pub refused_url: &'a str,
}

/// The suite's checks by name, in the order [`fetcher_suite`] runs them.
pub const FETCHER_CHECKS: [&str; 12] = [
    "fetcher_returns_status_headers_and_body",
    "fetcher_returns_redirects_unfollowed",
    "fetcher_times_out_waiting_for_headers",
    "fetcher_deadline_covers_the_body",
    "fetcher_refuses_bodies_over_the_cap",
    "fetcher_accepts_a_body_exactly_at_the_cap",
    "fetcher_does_not_measure_bodiless_replies",
    "fetcher_connection_refused_is_upstream_connect",
    "fetcher_sends_method_headers_and_body_as_given",
    "fetcher_adds_no_accept_encoding",
    "fetcher_never_hides_an_encoding",
    "fetcher_keeps_multi_valued_response_headers",
];

/// Run every [`Fetcher`] check against `fetcher`; `Err` names the first property that failed.
///
/// `clock` measures how long failures take (a deadline must cut a request short); the suite
/// takes about 2 s, most of it spent waiting for deadlines.
pub async fn fetcher_suite(
    fetcher: &dyn Fetcher,
    upstream: &FetchUpstream<'_>,
    clock: &dyn Clock,
) -> Result<(), String> {
    for name in FETCHER_CHECKS {
        fetcher_check(name, fetcher, upstream, clock).await?;
    }
    Ok(())
}

/// Run one check of [`FETCHER_CHECKS`] by name (a backend's test can then report each check on
/// its own).
pub async fn fetcher_check(
    name: &str,
    fetcher: &dyn Fetcher,
    upstream: &FetchUpstream<'_>,
    clock: &dyn Clock,
) -> Result<(), String> {
    let base = upstream.base_url;
    match name {
        "fetcher_returns_status_headers_and_body" => {
            fetcher_returns_status_headers_and_body(fetcher, base).await
        }
        "fetcher_returns_redirects_unfollowed" => {
            fetcher_returns_redirects_unfollowed(fetcher, base).await
        }
        "fetcher_times_out_waiting_for_headers" => {
            fetcher_times_out_waiting_for_headers(fetcher, base, clock).await
        }
        "fetcher_deadline_covers_the_body" => {
            fetcher_deadline_covers_the_body(fetcher, base, clock).await
        }
        "fetcher_refuses_bodies_over_the_cap" => {
            fetcher_refuses_bodies_over_the_cap(fetcher, base, clock).await
        }
        "fetcher_accepts_a_body_exactly_at_the_cap" => {
            fetcher_accepts_a_body_exactly_at_the_cap(fetcher, base).await
        }
        "fetcher_does_not_measure_bodiless_replies" => {
            fetcher_does_not_measure_bodiless_replies(fetcher, base).await
        }
        "fetcher_connection_refused_is_upstream_connect" => {
            fetcher_connection_refused_is_upstream_connect(fetcher, upstream.refused_url, clock)
                .await
        }
        "fetcher_sends_method_headers_and_body_as_given" => {
            fetcher_sends_method_headers_and_body_as_given(fetcher, base).await
        }
        "fetcher_adds_no_accept_encoding" => fetcher_adds_no_accept_encoding(fetcher, base).await,
        "fetcher_never_hides_an_encoding" => fetcher_never_hides_an_encoding(fetcher, base).await,
        "fetcher_keeps_multi_valued_response_headers" => {
            fetcher_keeps_multi_valued_response_headers(fetcher, base).await
        }
        other => Err(format!("fetcher_check: no check named {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Put in the query of requests that must fail: no error may repeat it.
const MARKER: &str = "fetcher-suite-marker";

/// The cap of the size checks.
const CAP: usize = 16 * 1024;

/// Generous limits: 5 s, 1 MiB, loopback allowed.
fn options() -> FetchOptions {
    FetchOptions {
        timeout_ms: 5_000,
        max_response_bytes: 1 << 20,
        allow_loopback: true,
    }
}

/// Longest a refusal (deadline, size cap) may take, in ms: far below the 5 s deadline of
/// [`options`] and the upstream's delays, so a fetcher that waits them out fails.
const PROMPT_MS: u64 = 3_000;

fn request(
    check: &str,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<http::Request<Bytes>, String> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Bytes::copy_from_slice(body))
        .map_err(|e| format!("{check}: could not build a request for {url}: {e}"))
}

fn get(check: &str, url: &str) -> Result<http::Request<Bytes>, String> {
    request(check, http::Method::GET, url, &[], b"")
}

/// A random hex id, so that repeated or parallel runs against one upstream do not share counters.
fn run_id(check: &str) -> Result<String, String> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| format!("{check}: no randomness for a run id: {e}"))?;
    Ok(nonce.iter().map(|b| format!("{b:02x}")).collect())
}

/// Every value of header `name`, in order (non-UTF-8 values lossily).
fn values(response: &http::Response<Bytes>, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A response's status, headers and body, shortened, for failure messages.
fn describe(response: &http::Response<Bytes>) -> String {
    let headers: Vec<String> = response
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    super::short(format!(
        "{} [{}] body {}",
        response.status().as_u16(),
        headers.join("; "),
        show(Some(response.body()))
    ))
}

/// Require `r` to fail with `kind`/`code` within [`PROMPT_MS`], its message and `Display`
/// free of the URI's [`MARKER`].
fn refused_promptly(
    check: &str,
    step: &str,
    r: Result<http::Response<Bytes>>,
    (kind, code): (ErrorKind, Code),
    elapsed_ms: u64,
) -> Result<(), String> {
    if let Ok(response) = &r {
        return Err(format!(
            "{check}: {step} returned {}, expected {kind:?} with code {code}",
            describe(response)
        ));
    }
    if let Err(e) = &r {
        ensure(
            check,
            !e.message().contains(MARKER) && !e.to_string().contains(MARKER),
            || format!("{step}: the error repeats the request URI: {e}"),
        )?;
    }
    refused(check, step, r, kind, code)?;
    ensure(check, elapsed_ms < PROMPT_MS, || {
        format!("{step}: the refusal took {elapsed_ms} ms, more than {PROMPT_MS} ms")
    })
}

/// The echo route's view of one request.
struct Echo {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Echo {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Send `request` to `/echo` and read what the upstream received.
async fn echo(
    check: &str,
    step: &str,
    fetcher: &dyn Fetcher,
    request: http::Request<Bytes>,
) -> Result<Echo, String> {
    let response = ok(check, step, fetcher.fetch(request, options()).await)?;
    ensure(check, response.status() == 200, || {
        format!("{step}: /echo answered {}", describe(&response))
    })?;
    let bad =
        |what: &str| format!("{check}: {step}: /echo answered {what}, not the route table's JSON");
    let v: serde_json::Value =
        serde_json::from_slice(response.body()).map_err(|_| bad("a body that is not JSON"))?;
    let text = |field: &str| {
        v.get(field)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("no string field {field:?}")))
    };
    let mut headers = Vec::new();
    for pair in v
        .get("headers")
        .and_then(|h| h.as_array())
        .ok_or_else(|| bad("no headers array"))?
    {
        match pair.as_array().map(Vec::as_slice) {
            Some([n, v]) => match (n.as_str(), v.as_str()) {
                (Some(n), Some(v)) => headers.push((n.to_ascii_lowercase(), v.to_string())),
                _ => return Err(bad("a header pair that is not two strings")),
            },
            _ => return Err(bad("a header entry that is not a pair")),
        }
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(text("body_base64")?)
        .map_err(|_| bad("a body_base64 that is not base64"))?;
    Ok(Echo {
        method: text("method")?,
        target: text("target")?,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// A plain `200` comes back with its status, headers and whole body.
pub async fn fetcher_returns_status_headers_and_body(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_returns_status_headers_and_body";
    let r = ok(
        c,
        "GET /ok",
        fetcher
            .fetch(get(c, &format!("{base}/ok"))?, options())
            .await,
    )?;
    ensure(
        c,
        r.status() == 200 && r.body().as_ref() == b"hello" && values(&r, "content-length") == ["5"],
        || {
            format!(
                "GET /ok returned {}, expected 200 with Content-Length 5 and body \"hello\"",
                describe(&r)
            )
        },
    )
}

/// Redirects are not followed: every 3xx (301, 302, 303, 307, 308) comes back as it is, its
/// `Location` included, and its target never receives a request.
pub async fn fetcher_returns_redirects_unfollowed(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_returns_redirects_unfollowed";
    let run = run_id(c)?;
    for status in [301u16, 302, 303, 307, 308] {
        let id = format!("{run}-{status}");
        let step = format!("GET /redirect/{id}?status={status}");
        let r = ok(
            c,
            &step,
            fetcher
                .fetch(
                    get(c, &format!("{base}/redirect/{id}?status={status}"))?,
                    options(),
                )
                .await,
        )?;
        let location = format!("/landing/{id}");
        ensure(
            c,
            r.status().as_u16() == status && values(&r, "location") == [location.as_str()],
            || {
                format!(
                    "{step} returned {}, expected {status} with Location {location}",
                    describe(&r)
                )
            },
        )?;
        let hits = ok(
            c,
            "GET /hits",
            fetcher
                .fetch(get(c, &format!("{base}/hits/{id}"))?, options())
                .await,
        )?;
        ensure(c, hits.body().as_ref() == b"0", || {
            format!(
                "after {step}, the redirect target was requested: /hits/{id} answered {}",
                describe(&hits)
            )
        })?;
    }
    Ok(())
}

/// An upstream that sends nothing within `timeout_ms` fails with `UpstreamTimeout`
/// (`upstream_timeout`) as soon as the deadline passes, not when the upstream finally answers.
pub async fn fetcher_times_out_waiting_for_headers(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetcher_times_out_waiting_for_headers";
    let opts = FetchOptions {
        timeout_ms: 300,
        ..options()
    };
    let started = clock.now_ms();
    let r = fetcher
        .fetch(get(c, &format!("{base}/slow?ms=10000&key={MARKER}"))?, opts)
        .await;
    refused_promptly(
        c,
        "GET /slow?ms=10000 with a 300 ms deadline",
        r,
        (ErrorKind::UpstreamTimeout, Code::UpstreamTimeout),
        clock.now_ms().saturating_sub(started),
    )
}

/// The deadline covers the whole exchange: headers that arrive at once do not save a body that
/// never finishes (`upstream_timeout`).
pub async fn fetcher_deadline_covers_the_body(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetcher_deadline_covers_the_body";
    let opts = FetchOptions {
        timeout_ms: 300,
        ..options()
    };
    for path in ["/big?n=100&hang=1", "/big-chunked?n=100&hang=1"] {
        let started = clock.now_ms();
        let r = fetcher
            .fetch(get(c, &format!("{base}{path}&key={MARKER}"))?, opts)
            .await;
        refused_promptly(
            c,
            &format!("GET {path} (the body never finishes) with a 300 ms deadline"),
            r,
            (ErrorKind::UpstreamTimeout, Code::UpstreamTimeout),
            clock.now_ms().saturating_sub(started),
        )?;
    }
    Ok(())
}

/// A body larger than `max_response_bytes` fails with `UpstreamFailed` (`upstream_too_large`),
/// with and without `Content-Length`, one byte over is enough, and the refusal comes without
/// waiting for the rest: a declared length over the cap is refused before the body is read, and
/// a streamed body as soon as the cap is passed (both upstreams here never finish).
pub async fn fetcher_refuses_bodies_over_the_cap(
    fetcher: &dyn Fetcher,
    base: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetcher_refuses_bodies_over_the_cap";
    let opts = FetchOptions {
        max_response_bytes: CAP,
        ..options()
    };
    let over = CAP + 1;
    for path in [
        format!("/big?n={over}"),
        format!("/big-chunked?n={over}"),
        "/big?n=10000000&hang=1".to_string(),
        format!("/big-chunked?n={}&hang=1", 4 * CAP),
    ] {
        let started = clock.now_ms();
        let r = fetcher
            .fetch(get(c, &format!("{base}{path}&key={MARKER}"))?, opts)
            .await;
        refused_promptly(
            c,
            &format!("GET {path} with a {CAP}-byte cap"),
            r,
            (ErrorKind::UpstreamFailed, Code::UpstreamTooLarge),
            clock.now_ms().saturating_sub(started),
        )?;
    }
    Ok(())
}

/// A body of exactly `max_response_bytes` is returned whole, with and without `Content-Length`.
pub async fn fetcher_accepts_a_body_exactly_at_the_cap(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_accepts_a_body_exactly_at_the_cap";
    let opts = FetchOptions {
        max_response_bytes: CAP,
        ..options()
    };
    for path in [format!("/big?n={CAP}"), format!("/big-chunked?n={CAP}")] {
        let step = format!("GET {path} with a {CAP}-byte cap");
        let r = ok(
            c,
            &step,
            fetcher.fetch(get(c, &format!("{base}{path}"))?, opts).await,
        )?;
        ensure(
            c,
            r.status() == 200 && r.body().len() == CAP && r.body().iter().all(|b| *b == b'x'),
            || format!("{step} returned {}, expected {CAP} bytes 'x'", describe(&r)),
        )?;
    }
    Ok(())
}

/// Replies without a body (`HEAD`, `204`, `304`) are not measured by a `Content-Length` that
/// describes a body not sent: they come back with an empty body and their headers, whatever the
/// cap.
pub async fn fetcher_does_not_measure_bodiless_replies(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_does_not_measure_bodiless_replies";
    let opts = FetchOptions {
        max_response_bytes: 1024,
        ..options()
    };
    let head = request(
        c,
        http::Method::HEAD,
        &format!("{base}/big?n=10000000"),
        &[],
        b"",
    )?;
    let r = ok(
        c,
        "HEAD /big?n=10000000 with a 1024-byte cap",
        fetcher.fetch(head, opts).await,
    )?;
    ensure(
        c,
        r.status() == 200 && r.body().is_empty() && values(&r, "content-length") == ["10000000"],
        || {
            format!(
                "HEAD /big?n=10000000 returned {}, expected 200, no body, Content-Length 10000000",
                describe(&r)
            )
        },
    )?;
    let r = ok(
        c,
        "GET /not-modified with a 1024-byte cap",
        fetcher
            .fetch(get(c, &format!("{base}/not-modified"))?, opts)
            .await,
    )?;
    ensure(
        c,
        r.status() == 304 && r.body().is_empty() && values(&r, "etag") == ["\"v1\""],
        || {
            format!(
                "GET /not-modified returned {}, expected 304, no body, ETag \"v1\"",
                describe(&r)
            )
        },
    )?;
    let r = ok(
        c,
        "GET /empty-204",
        fetcher
            .fetch(get(c, &format!("{base}/empty-204"))?, opts)
            .await,
    )?;
    ensure(c, r.status() == 204 && r.body().is_empty(), || {
        format!(
            "GET /empty-204 returned {}, expected 204 without a body",
            describe(&r)
        )
    })
}

/// A port nobody listens on fails with `UpstreamFailed` (`upstream_connect`) at once (not at the
/// deadline), and the error does not repeat the URI (whose query may hold a secret).
pub async fn fetcher_connection_refused_is_upstream_connect(
    fetcher: &dyn Fetcher,
    refused_url: &str,
    clock: &dyn Clock,
) -> Result<(), String> {
    let c = "fetcher_connection_refused_is_upstream_connect";
    let started = clock.now_ms();
    let r = fetcher
        .fetch(get(c, &format!("{refused_url}/?key={MARKER}"))?, options())
        .await;
    refused_promptly(
        c,
        "GET on a closed port",
        r,
        (ErrorKind::UpstreamFailed, Code::UpstreamConnect),
        clock.now_ms().saturating_sub(started),
    )
}

/// Method, path and query, headers (repeated ones in order) and body reach the upstream as given;
/// `Host` is the URI's authority, whatever `Host` header the request carries.
pub async fn fetcher_sends_method_headers_and_body_as_given(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_sends_method_headers_and_body_as_given";
    let authority = base
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .ok_or_else(|| format!("{c}: the upstream base URL {base:?} has no authority"))?;
    // Every byte value, so that no text decoding or re-encoding of the body can pass.
    let binary: Vec<u8> = (0..=255u8).chain([0, 13, 10, 0xff]).collect();
    let target = "/echo?q=1&name=a%20b&e=%C3%A9";
    let cases: [(http::Method, &[u8]); 6] = [
        (http::Method::GET, b""),
        (http::Method::POST, &binary),
        (http::Method::PUT, b"{\"put\":true}"),
        (http::Method::PATCH, b"patch body"),
        (http::Method::DELETE, b"delete body"),
        (http::Method::OPTIONS, b""),
    ];
    for (method, body) in cases {
        let step = format!("{method} {target}");
        let req = request(
            c,
            method.clone(),
            &format!("{base}{target}"),
            &[
                ("x-api-key", "k1"),
                ("authorization", "Bearer t0k3n"),
                ("content-type", "application/octet-stream"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("host", "other.example"),
            ],
            body,
        )?;
        let seen = echo(c, &step, fetcher, req).await?;
        ensure(
            c,
            seen.method == method.as_str() && seen.target == target,
            || {
                format!(
                    "{step} reached the upstream as {} {}",
                    seen.method, seen.target
                )
            },
        )?;
        ensure(c, seen.body == body, || {
            format!(
                "{step}: the upstream received body {}, expected {}",
                show(Some(&seen.body)),
                show(Some(body))
            )
        })?;
        for (name, want) in [
            ("x-api-key", "k1"),
            ("authorization", "Bearer t0k3n"),
            ("content-type", "application/octet-stream"),
            // Repeated lines, or one line joined by ", " (equivalent in HTTP): in order either way.
            ("x-multi", "a, b"),
            ("host", authority.as_str()),
        ] {
            let got = seen.values(name).join(", ");
            ensure(c, got == want, || {
                format!("{step}: the upstream received {name}: {got:?}, expected {want:?}")
            })?;
        }
    }
    Ok(())
}

/// The fetcher adds no `Accept-Encoding` of its own (so no compressed reply is invited behind
/// the core's back), and sends the one it is given (the core sends `identity`) unchanged.
pub async fn fetcher_adds_no_accept_encoding(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_adds_no_accept_encoding";
    let url = format!("{base}/echo");
    let seen = echo(c, "GET /echo", fetcher, get(c, &url)?).await?;
    let got = seen.values("accept-encoding");
    ensure(c, got.is_empty(), || {
        format!(
            "a request without Accept-Encoding reached the upstream with Accept-Encoding {got:?}"
        )
    })?;
    let req = request(
        c,
        http::Method::GET,
        &url,
        &[("accept-encoding", "identity")],
        b"",
    )?;
    let seen = echo(c, "GET /echo with Accept-Encoding: identity", fetcher, req).await?;
    let got = seen.values("accept-encoding");
    ensure(c, got == ["identity"], || {
        format!("Accept-Encoding: identity reached the upstream as {got:?}")
    })
}

/// The plain text of the encoded bodies below.
const PLAIN: &[u8] =
    b"vultrino fetcher suite: a compressed body must never reach the core unlabelled\n";

/// [`PLAIN`] gzip-compressed (level 9, no name, mtime 0).
const GZIP: [u8; 85] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x05, 0xc1, 0xdb, 0x09, 0xc0, 0x20,
    0x10, 0x04, 0xc0, 0xff, 0x54, 0xb1, 0x75, 0xa4, 0x1b, 0x3d, 0x37, 0x28, 0x9c, 0x1a, 0xee, 0x21,
    0xa4, 0xfb, 0xcc, 0x9c, 0xd4, 0xb0, 0xb1, 0x36, 0x1e, 0x86, 0x74, 0x1a, 0x3c, 0x47, 0xf0, 0x46,
    0x81, 0xec, 0xf9, 0x1a, 0xdd, 0xd9, 0x50, 0x77, 0xfb, 0x30, 0xd3, 0x03, 0x8b, 0x87, 0x06, 0x63,
    0x91, 0x8e, 0xe8, 0x84, 0x6c, 0x23, 0x72, 0x69, 0xa9, 0x54, 0x65, 0xbb, 0x7e, 0x82, 0x01, 0x61,
    0x8c, 0x4f, 0x00, 0x00, 0x00,
];

/// [`PLAIN`] brotli-compressed.
const BROTLI: [u8; 65] = [
    0x1b, 0x4e, 0x00, 0xe0, 0x45, 0xe7, 0xd6, 0x2d, 0xe9, 0x25, 0xdb, 0x1a, 0xc3, 0x3b, 0xd9, 0x54,
    0x36, 0x04, 0x61, 0x03, 0x0e, 0xd8, 0x4b, 0x2c, 0xc2, 0x81, 0x7c, 0xd8, 0x18, 0x7b, 0xcb, 0x29,
    0x51, 0x7d, 0xbf, 0x76, 0x86, 0x5d, 0xc7, 0x64, 0xea, 0x62, 0xe0, 0x95, 0x25, 0x3b, 0x04, 0xea,
    0x67, 0x50, 0x41, 0x53, 0x8b, 0x4c, 0x39, 0x7f, 0xd3, 0x55, 0x0f, 0xa2, 0xee, 0x16, 0x2b, 0xe2,
    0x68,
];

/// [`PLAIN`] in the zlib format of `Content-Encoding: deflate` (level 9).
const DEFLATE: [u8; 73] = [
    0x78, 0xda, 0x05, 0xc1, 0xdb, 0x09, 0xc0, 0x20, 0x10, 0x04, 0xc0, 0xff, 0x54, 0xb1, 0x75, 0xa4,
    0x1b, 0x3d, 0x37, 0x28, 0x9c, 0x1a, 0xee, 0x21, 0xa4, 0xfb, 0xcc, 0x9c, 0xd4, 0xb0, 0xb1, 0x36,
    0x1e, 0x86, 0x74, 0x1a, 0x3c, 0x47, 0xf0, 0x46, 0x81, 0xec, 0xf9, 0x1a, 0xdd, 0xd9, 0x50, 0x77,
    0xfb, 0x30, 0xd3, 0x03, 0x8b, 0x87, 0x06, 0x63, 0x91, 0x8e, 0xe8, 0x84, 0x6c, 0x23, 0x72, 0x69,
    0xa9, 0x54, 0x65, 0xbb, 0x7e, 0xaf, 0x20, 0x1d, 0x65,
];

/// No compression surprises: an encoded reply comes back either untouched (its
/// `Content-Encoding` and its encoded bytes, as sent) or decoded by the platform (the plain
/// bytes, no `Content-Encoding`, no `Content-Length` but the plain length). Never encoded bytes
/// without their `Content-Encoding` (the core would scrub, and pass on, bytes it cannot read),
/// never plain bytes still labelled encoded. Checked for `gzip` (with and without
/// `Content-Length`), `br`, `deflate`, `GZIP` (codings are case-insensitive) and a coding no one
/// knows, which can only come back untouched.
pub async fn fetcher_never_hides_an_encoding(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_never_hides_an_encoding";
    let unknown: &[u8] = b"\x00\x01 not really encoded \xfe\xff";
    // (query of /encoded, the encoded bytes sent, their plain text when they can be decoded)
    type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);
    let cases: [Case; 6] = [
        ("ce=gzip", &GZIP, Some(PLAIN)),
        ("ce=gzip&chunked=1", &GZIP, Some(PLAIN)),
        ("ce=br", &BROTLI, Some(PLAIN)),
        ("ce=deflate", &DEFLATE, Some(PLAIN)),
        ("ce=GZIP", &GZIP, Some(PLAIN)),
        ("ce=x-vultrino-unknown", unknown, None),
    ];
    for (query, encoded, plain) in cases {
        let coding = query
            .trim_start_matches("ce=")
            .split('&')
            .next()
            .unwrap_or_default();
        let step = format!("POST /encoded?{query}");
        let req = request(
            c,
            http::Method::POST,
            &format!("{base}/encoded?{query}"),
            &[("accept-encoding", "identity")],
            encoded,
        )?;
        let r = ok(c, &step, fetcher.fetch(req, options()).await)?;
        let labels = values(&r, "content-encoding");
        let lengths = values(&r, "content-length");
        let untouched = labels == [coding] && r.body().as_ref() == encoded;
        let decoded = plain.is_some_and(|p| r.body().as_ref() == p)
            && labels.is_empty()
            && lengths.iter().all(|l| *l == r.body().len().to_string());
        ensure(c, r.status() == 200 && (untouched || decoded), || {
            let expected = if plain.is_some() {
                format!(
                    "either Content-Encoding {coding} with the {} bytes sent, or the {} plain \
                     bytes without Content-Encoding",
                    encoded.len(),
                    PLAIN.len()
                )
            } else {
                format!(
                    "Content-Encoding {coding} with the {} bytes sent",
                    encoded.len()
                )
            };
            format!("{step} returned {}, expected {expected}", describe(&r))
        })?;
    }
    Ok(())
}

/// Repeated response headers all come back, in order: each `Set-Cookie` on its own (joining
/// cookies is not equivalent), other repeated headers as separate values or joined by ", ".
pub async fn fetcher_keeps_multi_valued_response_headers(
    fetcher: &dyn Fetcher,
    base: &str,
) -> Result<(), String> {
    let c = "fetcher_keeps_multi_valued_response_headers";
    let r = ok(
        c,
        "GET /multi-header",
        fetcher
            .fetch(get(c, &format!("{base}/multi-header"))?, options())
            .await,
    )?;
    ensure(
        c,
        r.status() == 201
            && values(&r, "set-cookie") == ["a=1", "b=2"]
            && values(&r, "x-multi").join(", ") == "one, two"
            && r.body().as_ref() == b"ok",
        || {
            format!(
                "GET /multi-header returned {}, expected 201, Set-Cookie a=1 then b=2, \
                 X-Multi one then two, body \"ok\"",
                describe(&r)
            )
        },
    )
}
