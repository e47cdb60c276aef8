//! `HttpFetcher` against real HTTP/1.1 servers on 127.0.0.1 — the only address these tests ever
//! contact. Refusals of private, metadata and public targets are specified in the pure
//! `vultrino_core::ssrf` tests and in the resolver unit tests of `fetcher.rs`.
#![allow(clippy::unwrap_used)] // test setup: a failed bind or parse is a broken test machine

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vultrino_core::error::Code;
use vultrino_core::ports::{FetchOptions, Fetcher};
use vultrino_core::ErrorKind;
use vultrino_local::fetcher::HttpFetcher;

/// What the test server does for one request.
#[derive(Clone, Default)]
struct Reply {
    /// Raw bytes written back (status line, headers, body).
    bytes: Vec<u8>,
    /// Wait this long before writing.
    delay: Duration,
    /// After writing, keep the connection open without finishing (a body that never ends).
    hang: bool,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        ..Reply::default()
    }
}

fn ok(body: &str) -> Reply {
    reply(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

type Handler = Arc<dyn Fn(&str, u16) -> Reply + Send + Sync>;

/// A keep-alive HTTP/1.1 server that counts accepted connections and hits per path.
struct TestServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl TestServer {
    async fn start(handler: impl Fn(&str, u16) -> Reply + Send + Sync + 'static) -> TestServer {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let (c, h) = (connections.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(sock, handler.clone(), h.clone(), port));
            }
        });
        TestServer {
            port,
            connections,
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn serve_connection(
    mut sock: TcpStream,
    handler: Handler,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    port: u16,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let body_len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buf.drain(..head_end + body_len);
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;

        let r = handler(&path, port);
        tokio::time::sleep(r.delay).await;
        if sock.write_all(&r.bytes).await.is_err() {
            return;
        }
        if r.hang {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
    }
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

#[tokio::test]
async fn redirect_is_returned_not_followed() {
    let server = TestServer::start(|path, port| match path {
        "/start" => reply(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/target\r\nContent-Length: 0\r\n\r\n"
        )),
        _ => ok("target reached"),
    })
    .await;
    let fetcher = HttpFetcher::new().unwrap();
    let response = fetcher
        .fetch(get(&server.url("/start")), opts(true))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::FOUND);
    let location = format!("http://127.0.0.1:{}/target", server.port);
    assert_eq!(
        response.headers().get(http::header::LOCATION).unwrap(),
        location.as_str()
    );
    settle().await;
    assert_eq!(server.hits("/start"), 1);
    assert_eq!(server.hits("/target"), 0);
}

#[tokio::test]
async fn slow_upstream_times_out() {
    let server = TestServer::start(|_, _| Reply {
        delay: Duration::from_secs(30),
        ..ok("late")
    })
    .await;
    let fetcher = HttpFetcher::new().unwrap();
    let started = Instant::now();
    let options = FetchOptions {
        timeout_ms: 300,
        ..opts(true)
    };
    let err = fetcher
        .fetch(get(&server.url("/slow")), options)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::UpstreamTimeout, Code::UpstreamTimeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_body_counts_against_the_deadline() {
    // Headers arrive at once, the body never finishes: the deadline covers the body too.
    let server = TestServer::start(|_, _| Reply {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec(),
        hang: true,
        ..Reply::default()
    })
    .await;
    let fetcher = HttpFetcher::new().unwrap();
    let options = FetchOptions {
        timeout_ms: 300,
        ..opts(true)
    };
    let err = fetcher
        .fetch(get(&server.url("/")), options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::UpstreamTimeout);
}

#[tokio::test]
async fn oversized_response_is_refused() {
    // Declared too large: refused from Content-Length alone, without waiting for a body that
    // never comes (otherwise this would end in a timeout instead).
    let declared = TestServer::start(|_, _| Reply {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nabc".to_vec(),
        hang: true,
        ..Reply::default()
    })
    .await;
    // No Content-Length (chunked), and the body never ends: refused as soon as the cap is
    // passed, while streaming.
    let streamed = TestServer::start(|_, _| {
        let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..40 {
            bytes.extend_from_slice(b"400\r\n");
            bytes.extend_from_slice(&[b'x'; 1024]);
            bytes.extend_from_slice(b"\r\n");
        }
        Reply {
            bytes,
            hang: true,
            ..Reply::default()
        }
    })
    .await;
    let fetcher = HttpFetcher::new().unwrap();
    let options = FetchOptions {
        max_response_bytes: 16 * 1024,
        ..opts(true)
    };
    for server in [&declared, &streamed] {
        let started = Instant::now();
        let err = fetcher
            .fetch(get(&server.url("/big")), options)
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (ErrorKind::UpstreamFailed, Code::UpstreamTooLarge)
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_accepted() {
    let server = TestServer::start(|_, _| ok(&"y".repeat(1000))).await;
    let fetcher = HttpFetcher::new().unwrap();
    let options = FetchOptions {
        max_response_bytes: 1000,
        ..opts(true)
    };
    let response = fetcher.fetch(get(&server.url("/")), options).await.unwrap();
    assert_eq!(response.body().len(), 1000);
}

#[tokio::test]
async fn bodiless_replies_are_not_measured_by_their_content_length() {
    // HEAD and 304 carry the length of a body that is not sent: the cap applies to bodies only.
    let server = TestServer::start(|_, _| {
        reply("HTTP/1.1 304 Not Modified\r\nContent-Length: 10000000\r\nETag: \"v1\"\r\n\r\n")
    })
    .await;
    let head =
        TestServer::start(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"))
            .await;
    let fetcher = HttpFetcher::new().unwrap();
    let options = FetchOptions {
        max_response_bytes: 1024,
        ..opts(true)
    };
    let r = fetcher.fetch(get(&server.url("/")), options).await.unwrap();
    assert_eq!(r.status(), 304);
    let request = http::Request::head(head.url("/"))
        .body(Bytes::new())
        .unwrap();
    let r = fetcher.fetch(request, options).await.unwrap();
    assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
    assert_eq!(r.headers()["content-length"], "10000000");
}

#[tokio::test]
async fn loopback_refused_without_opt_in() {
    let server = TestServer::start(|_, _| ok("should not be reached")).await;
    let fetcher = HttpFetcher::new().unwrap();
    for url in [
        server.url("/?token=s3cret"),
        format!("https://127.0.0.1:{}/", server.port),
        format!("http://[::ffff:127.0.0.1]:{}/", server.port),
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

#[tokio::test]
async fn connections_are_reused() {
    let server = TestServer::start(|_, _| ok("pong")).await;
    let fetcher = HttpFetcher::new().unwrap();
    for i in 0..20 {
        let response = fetcher
            .fetch(get(&server.url(&format!("/n{i}"))), opts(true))
            .await
            .unwrap();
        assert_eq!(response.body().as_ref(), b"pong");
    }
    // Reused: 20 requests over one connection — two at most, as the pool takes a finished
    // connection back in a task of its own, which may not have run before the next request.
    assert!(server.connections() <= 2, "{}", server.connections());
}

#[tokio::test]
async fn multi_valued_headers_preserved() {
    let server = TestServer::start(|_, _| {
        reply(
            "HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nX-Multi: one\r\nSet-Cookie: b=2\r\n\
             X-Multi: two\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let fetcher = HttpFetcher::new().unwrap();
    let response = fetcher
        .fetch(get(&server.url("/")), opts(true))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::CREATED);
    let values = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(values("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(values("x-multi"), ["one", "two"]);
    assert_eq!(response.body().as_ref(), b"ok");
}

#[tokio::test]
async fn request_method_headers_and_body_are_sent() {
    let seen = Arc::new(Mutex::new(String::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let record = seen.clone();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut len = 0;
        while !String::from_utf8_lossy(&buf[..len]).ends_with("hello") {
            match sock.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
        *record.lock().unwrap() = String::from_utf8_lossy(&buf[..len]).to_string();
        let _ = sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    });
    let request = http::Request::post(format!("http://127.0.0.1:{port}/in"))
        .header("x-api-key", "k1")
        .header(http::header::HOST, "other.example")
        .body(Bytes::from_static(b"hello"))
        .unwrap();
    let fetcher = HttpFetcher::new().unwrap();
    let response = fetcher.fetch(request, opts(true)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
    let seen = seen.lock().unwrap().to_ascii_lowercase();
    assert!(seen.starts_with("post /in http/1.1\r\n"), "{seen}");
    assert!(seen.contains("x-api-key: k1\r\n"), "{seen}");
    assert!(
        seen.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{seen}"
    );
    assert!(!seen.contains("other.example"), "{seen}");
}

#[tokio::test]
async fn localhost_name_resolves_and_is_checked() {
    let server = TestServer::start(|_, _| ok("via name")).await;
    let fetcher = HttpFetcher::new().unwrap();
    let url = format!("http://localhost:{}/", server.port);

    let err = fetcher.fetch(get(&url), opts(false)).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Forbidden, Code::SsrfBlocked)
    );
    settle().await;
    assert_eq!(server.connections(), 0);

    let response = fetcher.fetch(get(&url), opts(true)).await.unwrap();
    assert_eq!(response.body().as_ref(), b"via name");
    assert_eq!(server.hits("/"), 1);
}

#[tokio::test]
async fn refused_connection_is_upstream_connect() {
    // Bind then drop a listener to get a loopback port with nobody behind it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let fetcher = HttpFetcher::new().unwrap();
    let url = format!("http://127.0.0.1:{port}/?key=s3cret");
    let err = fetcher.fetch(get(&url), opts(true)).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::UpstreamFailed, Code::UpstreamConnect)
    );
    assert!(!err.to_string().contains("s3cret"));
}
