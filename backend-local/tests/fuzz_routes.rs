//! Property: random requests to every route — any method, path, headers and body, authenticated
//! or not — never produce a 5xx, never panic, and always answer JSON (or an empty 204).
//!
//! Runs the core in-process over the memory stores with a recording fetcher, so no request can
//! leave the process whatever the input.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::crypto::{self, MasterSecret};
use vultrino_core::ports::{FetchOptions, Fetcher, ManualClock};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// Answers 200 with the request body; records the URIs it was asked for, and every request
/// body byte it was given (also of a streamed body that failed).
#[derive(Default)]
struct RecordingFetcher {
    uris: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl Fetcher for RecordingFetcher {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> vultrino_core::Result<http::Response<Bytes>> {
        let mut seen = self.uris.lock().unwrap();
        seen.push(request.uri().to_string());
        // Header values too: the proxy's property is that none carries an agent key.
        for value in request.headers().values() {
            seen.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        drop(seen);
        self.bodies.lock().unwrap().push(request.body().to_vec());
        Ok(http::Response::new(request.into_body()))
    }

    /// Reads a streamed body chunk by chunk and, when it fails, answers a generic upstream
    /// failure of its own (as a platform might that does not hand the body's error back):
    /// whatever the proxy's reply then is comes from the proxy, not from this error.
    async fn fetch_stream(
        &self,
        request: http::Request<vultrino_core::body::Body>,
        options: vultrino_core::ports::StreamOptions,
    ) -> vultrino_core::Result<http::Response<vultrino_core::body::Body>> {
        use futures_util::StreamExt;
        let (parts, body) = request.into_parts();
        let mut stream = body.into_stream();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => got.extend_from_slice(&c),
                Err(_) => {
                    self.bodies.lock().unwrap().push(got);
                    return Err(vultrino_core::Error::new(
                        vultrino_core::ErrorKind::UpstreamFailed,
                        "the upload failed",
                    ));
                }
            }
        }
        let response = self
            .fetch(
                http::Request::from_parts(parts, Bytes::from(got)),
                FetchOptions {
                    timeout_ms: options.total_timeout_ms,
                    max_response_bytes: options.max_buffered_response_bytes,
                    allow_loopback: options.allow_loopback,
                },
            )
            .await?;
        Ok(response.map(vultrino_core::body::Body::full))
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: App,
    fetcher: Arc<RecordingFetcher>,
    admin: String,
    /// The login's session cookie (`vc_…`) and its CSRF token.
    cookie: String,
    csrf: String,
    agent: String,
}

/// Log in: the bearer token, the `vultrino_session=…` cookie and the CSRF token.
fn login(rt: &tokio::runtime::Runtime, app: &App) -> (String, String, String) {
    let login = rt.block_on(
        app.handle(
            http::Request::post("/login")
                .header("content-type", "application/json")
                .body(Bytes::from(r#"{"username":"admin","password":"pw"}"#))
                .unwrap(),
        ),
    );
    let v: serde_json::Value = serde_json::from_slice(login.body()).unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (
        v["token"].as_str().unwrap().to_string(),
        cookie,
        v["csrf_token"].as_str().unwrap().to_string(),
    )
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let fetcher = Arc::new(RecordingFetcher::default());
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: fetcher.clone(),
        clock,
        audit_sink: None,
        audit: None,
    };
    let config = Config {
        admin_password_hash: Some(crypto::hash_password("pw", 1000).unwrap()),
        allow_weak_password_hash_for_tests: true,
        login_max_attempts: 1_000_000,
        ..Config::default()
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = rt.block_on(App::open(config, ports, &master)).unwrap();
    let (admin, cookie, csrf) = login(&rt, &app);
    let send = |m: &str, p: &str, b: &str| {
        rt.block_on(
            app.handle(
                http::Request::builder()
                    .method(m)
                    .uri(p)
                    .header("authorization", format!("Bearer {admin}"))
                    .body(Bytes::from(b.to_string()))
                    .unwrap(),
            ),
        )
    };
    let r = send(
        "POST",
        "/v1/credentials",
        r#"{"alias":"gh","type":"api_key","data":{"key":"sekret-123"},"policy":{"allowed_hosts":["api.example.com"]}}"#,
    );
    assert_eq!(r.status(), 201);
    let r = send("POST", "/v1/keys", r#"{"name":"a","role":"executor"}"#);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let agent = v["key"].as_str().unwrap().to_string();
    Fixture {
        rt,
        app,
        fetcher,
        admin,
        cookie,
        csrf,
        agent,
    }
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ])
}

fn path() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "/",
        "/healthz",
        "/login",
        "/logout",
        "/v1/credentials",
        "/v1/credentials/gh",
        "/v1/keys",
        "/v1/roles",
        "/v1/roles/executor",
        "/v1/execute",
        "/api/v1/execute",
        "/v1/audit",
        "/v1/audit?limit=0",
        "/v1/audit?limit=abc&cursor=zz",
        "/v1/credentials?cursor=%00",
        "/v1/sync/export",
        "/v1/keys/0123456789abcdef",
    ])
    .prop_map(str::to_string);
    let random = "(/[a-zA-Z0-9%._*~-]{0,12}){1,4}";
    prop_oneof![3 => fixed, 1 => random]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "gh",
            "api_key",
            "http.request",
            "GET",
            "https://api.example.com/x",
            "http://169.254.169.254/",
            "executor",
            "*",
            "read"
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "alias",
            "type",
            "data",
            "policy",
            "allowed_hosts",
            "credential",
            "action",
            "params",
            "method",
            "url",
            "headers",
            "query",
            "body",
            "name",
            "role",
            "permissions",
            "scopes",
            "key",
            "username",
            "password",
            "expires_in_days",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| serde_json::Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_yield_a_5xx(
        m in method(), p in path(), b in body(), who in 0u8..4, csrf in any::<bool>(),
    ) {
        thread_local!(static FIX: Fixture = fixture());
        FIX.with(|f| {
            // A logout ends the shared admin session (both twins) for every later case: it gets a
            // session of its own.
            let own = (p.starts_with("/logout") && (who == 1 || who == 3)).then(|| login(&f.rt, &f.app));
            let (admin, cookie, csrf_token) = match &own {
                Some((a, c, t)) => (a.as_str(), c.as_str(), t.as_str()),
                None => (f.admin.as_str(), f.cookie.as_str(), f.csrf.as_str()),
            };
            let mut req = http::Request::builder().method(m).uri(p.as_str());
            match who {
                0 => {}
                1 => req = req.header("authorization", format!("Bearer {admin}")),
                2 => req = req.header("authorization", format!("Bearer {}", f.agent)),
                _ => req = req.header("cookie", cookie),
            }
            if csrf {
                req = req.header("x-csrf-token", "nope").header("origin", "https://evil.example");
            } else if who == 3 {
                req = req.header("x-csrf-token", csrf_token);
            }
            let Ok(req) = req.body(Bytes::from(b)) else { return Ok(()) };
            let resp = f.rt.block_on(f.app.handle(req));
            prop_assert!(resp.status().as_u16() < 500, "{} {} -> {}", m, p, resp.status());
            if resp.status() != 204 && m != "OPTIONS" {
                let v: Result<serde_json::Value, _> = serde_json::from_slice(resp.body());
                prop_assert!(v.is_ok(), "non-JSON reply for {} {}", m, p);
            }
            Ok(())
        })?;
    }
}

/// Where a proxied request may carry the agent's key, or another key-like string.
fn key_slot() -> impl Strategy<Value = (&'static str, bool)> {
    (
        prop::sample::select(vec![
            "authorization",
            "x-api-key",
            "x-goog-api-key",
            "api-key",
            "x-vultrino-key",
            "?key",
            "x-custom",
            "none",
        ]),
        any::<bool>(),
    )
}

fn proxy_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/proxy/gh/v1/x".to_string()),
        Just("/proxy/gh".to_string()),
        Just("/proxy/".to_string()),
        Just("/proxy/nope/a".to_string()),
        "/proxy/gh(/[a-zA-Z0-9%._~;-]{0,10}){0,4}(\\?[a-z=&%0-9_]{0,16})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random requests to the pass-through proxy, the agent's key in any slot (or a wrong one,
    /// or none): never a 5xx of Vultrino's own, every refusal marked `X-Vultrino-Error`, and
    /// nothing that reaches the (recording) upstream carries a `vk_` key.
    #[test]
    fn random_proxy_requests_never_send_an_agent_key_upstream(
        m in method(), p in proxy_path(), (slot, wrong) in key_slot(), b in body(),
        extra in "[a-zA-Z0-9_%-]{0,12}",
    ) {
        thread_local!(static FIX: Fixture = fixture());
        FIX.with(|f| {
            let key = if wrong { "vk_0123456789abcdef_wrong".to_string() } else { f.agent.clone() };
            let mut uri = p.clone();
            let mut req = http::Request::builder().method(m);
            match slot {
                "authorization" => req = req.header("authorization", format!("Bearer {key}")),
                "?key" => {
                    uri.push(if uri.contains('?') { '&' } else { '?' });
                    uri.push_str(&format!("key={key}"));
                }
                "x-custom" => {
                    req = req.header("x-vultrino-key", f.agent.as_str()).header("x-custom", format!("{extra}{key}"))
                }
                "none" => {}
                h => req = req.header(h, key.as_str()),
            }
            let Ok(req) = req.uri(uri.as_str()).body(vultrino_core::body::Body::full(b)) else { return Ok(()) };
            let resp = f.rt.block_on(async {
                let resp = f.app.serve(req, None).await;
                let (parts, body) = resp.into_parts();
                (parts, body.collect_capped(usize::MAX).await)
            });
            let (parts, body) = resp;
            let ours = parts.headers.contains_key("x-vultrino-error");
            prop_assert!(parts.status.as_u16() < 500 || !ours, "{} {} -> {}", m, uri, parts.status);
            prop_assert!(ours || parts.status == 200, "{} {} -> {} without X-Vultrino-Error", m, uri, parts.status);
            prop_assert!(body.is_ok());
            let seen = std::mem::take(&mut *f.fetcher.uris.lock().unwrap());
            for s in &seen {
                prop_assert!(!vultrino_core::proxy::carries_agent_key(s.as_bytes()), "sent upstream: {}", s);
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The agent's key in a streamed proxied body (raw, `_` percent-encoded, or base64), cut
    /// anywhere into two chunks: the reply is the proxy's 400 `agent_key_in_request` even when
    /// the fetcher loses the upload's error, and no byte sequence of the key shape was given to
    /// the fetcher.
    #[test]
    fn a_key_in_a_streamed_proxy_body_is_refused_and_never_sent(
        before in "[a-z {}\":,=&]{0,40}", after in "[a-z {}\":,=&]{0,40}",
        cut in 0usize..200, form in 0usize..3,
    ) {
        thread_local!(static FIX: Fixture = fixture());
        FIX.with(|f| {
            use base64::Engine as _;
            let planted = match form {
                0 => f.agent.clone(),
                1 => f.agent.replace('_', "%5F"),
                _ => base64::engine::general_purpose::STANDARD.encode(&f.agent),
            };
            let body = format!("{before}{planted}{after}").into_bytes();
            let cut = cut % (body.len() + 1);
            let chunks: Vec<vultrino_core::Result<Bytes>> = vec![
                Ok(Bytes::copy_from_slice(&body[..cut])),
                Ok(Bytes::copy_from_slice(&body[cut..])),
            ];
            let stream = futures_util::stream::iter(chunks);
            let req = http::Request::builder()
                .method("POST")
                .uri("/proxy/gh/v1/x")
                .header("x-api-key", f.agent.as_str())
                .body(vultrino_core::body::Body::from_stream(stream))
                .unwrap();
            let resp = f.rt.block_on(f.app.serve(req, None));
            prop_assert_eq!(resp.status().as_u16(), 400);
            prop_assert_eq!(
                resp.headers().get("x-vultrino-error").and_then(|v| v.to_str().ok()),
                Some("agent_key_in_request")
            );
            let sent = std::mem::take(&mut *f.fetcher.bodies.lock().unwrap());
            for b in &sent {
                prop_assert!(!vultrino_core::scrub::has_key_shape(b), "sent: {:?}", String::from_utf8_lossy(b));
                prop_assert!(!b.windows(3).any(|w| w == b"vk_"), "sent: {:?}", String::from_utf8_lossy(b));
            }
            Ok(())
        })?;
    }
}
