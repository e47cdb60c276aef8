//! `HttpFetcher` against real HTTP/1.1 servers on 127.0.0.1 — the only address these tests ever
//! contact.
//!
//! The port contract is the core's Fetcher conformance suite (`vultrino_core::testkit::fetcher`,
//! also run against the Workers fetcher in workerd), one test per check, against
//! `support/fetch_upstream.rs` (the suite's route table). The local-only tests below it cover
//! what the contract leaves to each platform: the SSRF refusal of loopback without the opt-in (by
//! address and by resolved name) and connection reuse. Refusals of private, metadata and public
//! targets are specified in the pure `vultrino_core::ssrf` tests and in the resolver unit tests of
//! `fetcher.rs`.
#![allow(clippy::unwrap_used)] // test setup: a failed bind or parse is a broken test machine

#[path = "support/fetch_upstream.rs"]
mod fetch_upstream;

use std::time::Duration;

use bytes::Bytes;
use fetch_upstream::{refused_url, SuiteUpstream};
use vultrino_core::error::Code;
use vultrino_core::ports::{FetchOptions, Fetcher};
use vultrino_core::testkit::{self, FetchUpstream};
use vultrino_core::ErrorKind;
use vultrino_local::clock::SystemClock;
use vultrino_local::fetcher::HttpFetcher;

/// Run one suite check against a fresh `HttpFetcher` and a fresh upstream; returns the upstream
/// for the local assertions some tests add.
async fn suite_check(name: &str) -> SuiteUpstream {
    let upstream = SuiteUpstream::start().await;
    let refused = refused_url().await;
    let fetcher = HttpFetcher::new().unwrap();
    let target = FetchUpstream {
        base_url: &upstream.base_url(),
        refused_url: &refused,
    };
    if let Err(e) = testkit::fetcher_check(name, &fetcher, &target, &SystemClock::new()).await {
        panic!("{e}");
    }
    upstream
}

fn get(url: &str) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

fn opts(allow_loopback: bool) -> FetchOptions {
    FetchOptions {
        timeout_ms: 5_000,
        max_response_bytes: 64 * 1024,
        allow_loopback,
    }
}

/// Give the server's accept loop a moment, so "zero connections" is not a race we win by luck.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

// ---------------------------------------------------------------------------------------------
// The port contract: the core's Fetcher suite, one test per check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn local_client_passes_the_whole_fetcher_suite() {
    let upstream = SuiteUpstream::start().await;
    let refused = refused_url().await;
    let target = FetchUpstream {
        base_url: &upstream.base_url(),
        refused_url: &refused,
    };
    let fetcher = HttpFetcher::new().unwrap();
    let result = testkit::fetcher_suite(&fetcher, &target, &SystemClock::new()).await;
    assert_eq!(result, Ok(()));
}

/// `fetch_stream`'s own sentences (streaming, upload abort, head/idle/total deadlines), each
/// check on its own so a failure names it.
#[tokio::test]
async fn local_client_passes_every_fetch_stream_check() {
    let upstream = SuiteUpstream::start().await;
    let refused = refused_url().await;
    let target = FetchUpstream {
        base_url: &upstream.base_url(),
        refused_url: &refused,
    };
    let fetcher = HttpFetcher::new().unwrap();
    let clock = SystemClock::new();
    let mut failed = Vec::new();
    for name in testkit::STREAM_CHECKS {
        if let Err(e) = testkit::fetch_stream_check(name, &fetcher, &target, &clock).await {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The provided (buffering) `fetch_stream` of a fetcher that only implements `fetch` keeps the
/// sentences that do not need streaming.
#[tokio::test]
async fn the_provided_buffering_fetch_stream_passes_the_buffered_checks() {
    struct OnlyFetch(HttpFetcher);
    #[async_trait::async_trait]
    impl Fetcher for OnlyFetch {
        async fn fetch(
            &self,
            request: http::Request<Bytes>,
            options: FetchOptions,
        ) -> vultrino_core::Result<http::Response<Bytes>> {
            self.0.fetch(request, options).await
        }
    }
    let upstream = SuiteUpstream::start().await;
    let refused = refused_url().await;
    let target = FetchUpstream {
        base_url: &upstream.base_url(),
        refused_url: &refused,
    };
    let fetcher = OnlyFetch(HttpFetcher::new().unwrap());
    let clock = SystemClock::new();
    for name in testkit::STREAM_CHECKS_BUFFERED {
        if let Err(e) = testkit::fetch_stream_check(name, &fetcher, &target, &clock).await {
            panic!("{e}");
        }
    }
}

#[tokio::test]
async fn status_headers_and_body_are_returned() {
    suite_check("fetcher_returns_status_headers_and_body").await;
}

#[tokio::test]
async fn redirect_is_returned_not_followed() {
    suite_check("fetcher_returns_redirects_unfollowed").await;
}

#[tokio::test]
async fn slow_upstream_times_out() {
    suite_check("fetcher_times_out_waiting_for_headers").await;
}

#[tokio::test]
async fn slow_body_counts_against_the_deadline() {
    suite_check("fetcher_deadline_covers_the_body").await;
}

#[tokio::test]
async fn oversized_response_is_refused() {
    suite_check("fetcher_refuses_bodies_over_the_cap").await;
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_accepted() {
    suite_check("fetcher_accepts_a_body_exactly_at_the_cap").await;
}

#[tokio::test]
async fn bodiless_replies_are_not_measured_by_their_content_length() {
    suite_check("fetcher_does_not_measure_bodiless_replies").await;
}

#[tokio::test]
async fn refused_connection_is_upstream_connect() {
    suite_check("fetcher_connection_refused_is_upstream_connect").await;
}

#[tokio::test]
async fn request_method_headers_and_body_are_sent() {
    let upstream = suite_check("fetcher_sends_method_headers_and_body_as_given").await;
    // Locally the client always speaks HTTP/1.1 to a plain-http upstream, whatever the request
    // says.
    let lines = upstream.request_lines();
    assert!(
        lines.iter().any(|l| l.starts_with("POST /echo?")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.ends_with(" HTTP/1.1")), "{lines:?}");
}

#[tokio::test]
async fn no_accept_encoding_is_added() {
    suite_check("fetcher_adds_no_accept_encoding").await;
}

#[tokio::test]
async fn encoded_bodies_are_never_hidden() {
    let upstream = suite_check("fetcher_never_hides_an_encoding").await;
    // Locally nothing is ever decoded: the label and the bytes come back as sent, so the core
    // refuses the reply (`upstream_encoded`) rather than scrub bytes it cannot read.
    let sent: &[u8] = b"\x1f\x8b pretend gzip";
    let request = http::Request::post(upstream.url("/encoded?ce=gzip"))
        .body(Bytes::from_static(sent))
        .unwrap();
    let fetcher = HttpFetcher::new().unwrap();
    let r = fetcher.fetch(request, opts(true)).await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.body().as_ref(), sent);
}

#[tokio::test]
async fn multi_valued_headers_preserved() {
    let upstream = suite_check("fetcher_keeps_multi_valued_response_headers").await;
    // The suite allows repeated headers to come back joined by ", "; locally each line stays a
    // value of its own.
    let fetcher = HttpFetcher::new().unwrap();
    let r = fetcher
        .fetch(get(&upstream.url("/multi-header")), opts(true))
        .await
        .unwrap();
    let values: Vec<_> = r.headers().get_all("x-multi").iter().collect();
    assert_eq!(values, ["one", "two"]);
}

// ---------------------------------------------------------------------------------------------
// Local only: SSRF refusal of loopback, name resolution, connection reuse
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn loopback_refused_without_opt_in() {
    let server = SuiteUpstream::start().await;
    let fetcher = HttpFetcher::new().unwrap();
    for url in [
        server.url("/ok?token=s3cret"),
        format!("https://127.0.0.1:{}/ok", server.port),
        format!("http://[::ffff:127.0.0.1]:{}/ok", server.port),
    ] {
        let err = fetcher.fetch(get(&url), opts(false)).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (ErrorKind::Forbidden, Code::SsrfBlocked),
            "{url}"
        );
        assert!(!err.message().contains("s3cret"));
    }
    settle().await;
    assert_eq!(server.connections(), 0);
}

/// `fetch_stream` keeps the same guard: loopback (by address or by name) without the opt-in is
/// refused before any connection, and the error does not repeat the URI.
#[tokio::test]
async fn streamed_requests_to_loopback_are_refused_without_opt_in() {
    let server = SuiteUpstream::start().await;
    let fetcher = HttpFetcher::new().unwrap();
    let options = vultrino_core::ports::StreamOptions {
        headers_timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        total_timeout_ms: 5_000,
        max_buffered_response_bytes: 1 << 20,
        allow_loopback: false,
    };
    for url in [
        server.url("/ok?token=s3cret"),
        format!("http://localhost:{}/ok?token=s3cret", server.port),
    ] {
        let request = http::Request::get(&url)
            .body(vultrino_core::body::Body::empty())
            .unwrap();
        let err = fetcher.fetch_stream(request, options).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (ErrorKind::Forbidden, Code::SsrfBlocked),
            "{url}"
        );
        assert!(!err.message().contains("s3cret"));
    }
    settle().await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn connections_are_reused() {
    let server = SuiteUpstream::start().await;
    let fetcher = HttpFetcher::new().unwrap();
    for i in 0..20 {
        let response = fetcher
            .fetch(get(&server.url(&format!("/ok?n={i}"))), opts(true))
            .await
            .unwrap();
        assert_eq!(response.body().as_ref(), b"hello");
    }
    // Reused: 20 requests over one connection — two at most, as the pool takes a finished
    // connection back in a task of its own, which may not have run before the next request.
    assert!(server.connections() <= 2, "{}", server.connections());
}

#[tokio::test]
async fn localhost_name_resolves_and_is_checked() {
    let server = SuiteUpstream::start().await;
    let fetcher = HttpFetcher::new().unwrap();
    let url = format!("http://localhost:{}/landing/by-name", server.port);

    let err = fetcher.fetch(get(&url), opts(false)).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Forbidden, Code::SsrfBlocked)
    );
    settle().await;
    assert_eq!(server.connections(), 0);

    let response = fetcher.fetch(get(&url), opts(true)).await.unwrap();
    assert_eq!(response.body().as_ref(), b"landed");
    assert_eq!(server.landings("by-name"), 1);
}
