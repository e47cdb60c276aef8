//! Cloudflare Access as an extra authentication layer (decision 0081), on both backends: a
//! loopback key set server (the team's `/cdn-cgi/access/certs`, reached through the test-only
//! certs URL setting) and tokens minted here with the test RSA keys in `fixtures/` — valid,
//! expired, not yet valid, wrong `aud`, wrong `iss`, `alg: none`, HS256 signed with the public
//! key, another key, unknown `kid` (refetch, then refuse), a rotated key, the key set down with
//! and without a cached key, the routes of `admin` and `all` mode, and the Access identity in
//! the audit's actor.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use crate::support::upstream::Upstream;
use crate::support::{self, expect, expect_for, Client, Reply, Server, ServerOptions};

const TEAM: &str = "vultrino-test.cloudflareaccess.com";
const AUD: &str = "8a1b0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
const ALICE: &str = "alice@example.com";
const SERVICE: &str = "a1b2c3d4.access";
const HEADER: &str = "cf-access-jwt-assertion";

/// A test RSA key: TEST ONLY, never used anywhere else.
struct Key {
    kid: &'static str,
    private: rsa::RsaPrivateKey,
}

impl Key {
    fn a() -> Key {
        Key::load("key-a", include_str!("fixtures/access-test-key-a.pem"))
    }
    fn b() -> Key {
        Key::load("key-b", include_str!("fixtures/access-test-key-b.pem"))
    }
    fn load(kid: &'static str, pem: &str) -> Key {
        Key {
            kid,
            private: rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap(),
        }
    }
    /// This key as a JWK of the key set, under `kid`.
    fn jwk_as(&self, kid: &str) -> Value {
        let public = self.private.to_public_key();
        json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
            "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
    }
    fn jwk(&self) -> Value {
        self.jwk_as(self.kid)
    }
    /// An RS256 token of `claims`, with header `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "RS256", "kid": kid, "typ": "JWT"})
                .to_string()
                .as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.private.clone());
        let sig = signer.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", b64(&sig))
    }
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a user's token, valid for 10 minutes.
fn user_claims() -> Value {
    let now = now_s();
    json!({"iss": format!("https://{TEAM}"), "aud": [AUD], "sub": "7335d417-61da-459d-899c-0a01c76a2f94",
        "email": ALICE, "type": "app", "iat": now - 5, "nbf": now - 5, "exp": now + 600,
        "identity_nonce": "6ei69kawdKzMIAPF", "country": "US"})
}

/// The claims of a service token's token (`common_name`, no email).
fn service_claims() -> Value {
    let now = now_s();
    json!({"iss": format!("https://{TEAM}"), "aud": [AUD], "sub": "", "common_name": SERVICE,
        "type": "app", "iat": now - 5, "nbf": now - 5, "exp": now + 600})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// HMAC-SHA256 (RFC 2104), for the HS256 forgery.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut k = if key.len() > 64 {
        sha2::Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    sha2::Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The team's key set on 127.0.0.1: serves `keys` at `/certs`, counts fetches, can be down (503).
#[derive(Clone)]
struct KeySet {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl KeySet {
    async fn start(keys: Vec<Value>) -> KeySet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let set = KeySet {
            addr: listener.local_addr().unwrap(),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::default(),
            down: Arc::default(),
        };
        let served = set.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let set = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let set = set.clone();
                        async move {
                            let reply = if req.uri().path() != "/certs" {
                                hyper::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()))
                            } else {
                                set.fetches.fetch_add(1, Ordering::SeqCst);
                                if set.down.load(Ordering::SeqCst) {
                                    hyper::Response::builder()
                                        .status(503)
                                        .body(Full::new(Bytes::from_static(b"down")))
                                } else {
                                    let keys = set.keys.lock().unwrap().clone();
                                    let body = json!({"keys": keys, "public_cert": {"kid": "x", "cert": "-"}});
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(body.to_string())))
                                }
                            };
                            Ok::<_, Infallible>(reply.unwrap())
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        set
    }

    fn url(&self) -> String {
        format!("http://{}/certs", self.addr)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The Access settings, named the way the backend under test takes them.
fn access_env(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(name, value)| {
            let name = if support::workerd_backend() {
                name.to_string()
            } else {
                format!("VULTRINO_{name}")
            };
            (name, value.to_string())
        })
        .collect()
}

/// A server with Access on in `mode`, its key set at `certs_url`.
async fn server(mode: &str, certs_url: &str) -> (Server, Client) {
    let opts = ServerOptions {
        extra_env: access_env(&[
            ("ACCESS_TEAM_DOMAIN", TEAM),
            ("ACCESS_AUD", AUD),
            ("ACCESS_MODE", mode),
            ("ACCESS_CERTS_URL", certs_url),
        ]),
        ..ServerOptions::default()
    };
    let server = Server::start(opts).await;
    let c = Client::new(server.target());
    (server, c)
}

/// `method path` with the Access token `token` (header), the `bearer` token and a JSON `body`.
async fn send(
    c: &Client,
    method: &str,
    path: &str,
    token: Option<&str>,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut rb = c.http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", c.target.base),
    );
    if let Some(t) = token {
        rb = rb.header(HEADER, t);
    }
    if let Some(b) = bearer {
        rb = rb.bearer_auth(b);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    c.send_raw(rb).await
}

/// Log in as the admin, behind Access with `token`; returns the session token.
async fn login(c: &Client, token: &str) -> String {
    let body = json!({"username": c.target.admin_user, "password": c.target.admin_password});
    let r = send(c, "POST", "/login", Some(token), None, Some(&body)).await;
    expect_for("login behind Access", &r, 200, None);
    r.body["token"].as_str().unwrap().to_string()
}

/// The audit's events, newest first (as the admin, behind Access with `token`).
async fn audit(c: &Client, token: &str, admin: &str) -> Vec<Value> {
    let r = send(
        c,
        "GET",
        "/v1/audit?limit=100",
        Some(token),
        Some(admin),
        None,
    )
    .await;
    expect(&r, 200, None);
    r.body["events"].as_array().unwrap().clone()
}

/// As the admin (through Access with `token`): the credential `svc` (secret `secret`, base URL
/// the upstream `up`) and an executor key for the agents' routes; the key.
async fn svc_and_agent_key(
    c: &Client,
    token: &str,
    admin: &str,
    secret: &str,
    up: &Upstream,
) -> String {
    let r = send(
        c,
        "POST",
        "/v1/credentials",
        Some(token),
        Some(admin),
        Some(&json!({
            "alias": "svc", "type": "api_key", "data": {"key": secret},
            "policy": {"allowed_hosts": ["127.0.0.1"]}, "base_url": up.url("")
        })),
    )
    .await;
    expect(&r, 201, None);
    let r = send(
        c,
        "POST",
        "/v1/keys",
        Some(token),
        Some(admin),
        Some(&json!({"name": "agent", "role": "executor"})),
    )
    .await;
    expect(&r, 201, None);
    r.body["key"].as_str().unwrap().to_string()
}

/// In `admin` mode, every admin route needs a good token; every bad one is 403 `access_denied`
/// whatever else the request carries; the agents' routes and `/healthz` do not need one; the
/// identity is in the audit's actor (login included).
#[tokio::test]
async fn admin_mode_requires_a_valid_token_on_the_admin_surface_only() {
    let (a, b) = (Key::a(), Key::b());
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("admin", &keys.url()).await;
    let up = Upstream::start().await;
    let good = a.sign(&user_claims());

    // Health needs nothing; the admin surface needs a token before anything else.
    expect(
        &send(&c, "GET", "/healthz", None, None, None).await,
        200,
        None,
    );
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1/credentials"),
        ("GET", "/v1/audit"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/nowhere"),
    ] {
        let r = send(&c, method, path, None, None, None).await;
        expect_for("no Access token", &r, 403, "access_denied");
    }
    // The page behind Access in a browser: the CF_Authorization cookie.
    let r = c
        .send_raw(
            c.http
                .get(format!("{}/", c.target.base))
                .header("cookie", format!("CF_Authorization={good}")),
        )
        .await;
    expect_for("the cookie is the fallback", &r, 200, None);

    let admin = login(&c, &good).await;
    // The admin's own session is not enough without Access.
    let r = send(&c, "GET", "/v1/credentials", None, Some(&admin), None).await;
    expect_for("a session without Access", &r, 403, "access_denied");
    expect(
        &send(
            &c,
            "GET",
            "/v1/credentials",
            Some(&good),
            Some(&admin),
            None,
        )
        .await,
        200,
        None,
    );

    // Every bad token: 403 access_denied, with a valid admin session beside it.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(user_claims().to_string().as_bytes())
    );
    let hs256 = {
        // HS256 "signed" with the public key as the HMAC secret (the classic confusion).
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "kid": a.kid}).to_string().as_bytes()),
            b64(user_claims().to_string().as_bytes())
        );
        let n = a.private.to_public_key().n().to_bytes_be();
        let mut tokens = vec![];
        for secret in [n.clone(), a.jwk().to_string().into_bytes()] {
            tokens.push(format!(
                "{input}.{}",
                b64(&hmac_sha256(&secret, input.as_bytes()))
            ));
        }
        tokens
    };
    let now = now_s();
    let mut bad: Vec<(&str, String)> = vec![
        (
            "expired",
            a.sign(&with(user_claims(), "exp", json!(now - 120))),
        ),
        (
            "not yet valid",
            a.sign(&with(user_claims(), "nbf", json!(now + 120))),
        ),
        (
            "wrong aud",
            a.sign(&with(user_claims(), "aud", json!(["another-app"]))),
        ),
        (
            "wrong iss",
            a.sign(&with(
                user_claims(),
                "iss",
                json!("https://evil.cloudflareaccess.com"),
            )),
        ),
        ("alg none", none),
        (
            "another key under this kid",
            b.sign_as(a.kid, &user_claims()),
        ),
        ("malformed", "not.a.token".into()),
    ];
    for t in hs256 {
        bad.push(("HS256 with the public key", t));
    }
    for (case, token) in &bad {
        let r = send(
            &c,
            "GET",
            "/v1/credentials",
            Some(token),
            Some(&admin),
            None,
        )
        .await;
        expect_for(case, &r, 403, "access_denied");
        assert!(
            !r.text.contains(token.as_str()),
            "{case}: the token is never repeated"
        );
    }
    // A token within the 60 s leeway still passes.
    let lenient = a.sign(&with(user_claims(), "exp", json!(now - 20)));
    expect(
        &send(
            &c,
            "GET",
            "/v1/credentials",
            Some(&lenient),
            Some(&admin),
            None,
        )
        .await,
        200,
        None,
    );

    // Agents' routes are not behind Access in admin mode.
    let key = svc_and_agent_key(&c, &good, &admin, "sk-live-access-1", &up).await;
    let exec = json!({"credential": "svc", "action": "http.request", "params": {"method": "GET", "url": up.url("/echo")}});
    expect_for(
        "execute is an agent route",
        &send(&c, "POST", "/v1/execute", None, Some(&key), Some(&exec)).await,
        200,
        None,
    );
    let r = send(&c, "GET", "/proxy/svc/echo", None, Some(&key), None).await;
    expect_for("the proxy is an agent route", &r, 200, None);
    let r = send(
        &c,
        "POST",
        "/mcp",
        None,
        None,
        Some(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
    )
    .await;
    assert_ne!(r.status, 403, "/mcp is an agent route: {}", r.text);
    // A CORS preflight is never checked.
    let r = send(&c, "OPTIONS", "/v1/credentials", None, None, None).await;
    expect_for("a preflight is never checked", &r, 204, None);

    // The Access identity is part of the actor: the login, and what the admin did.
    let events = audit(&c, &good, &admin).await;
    let actor_of = |action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["outcome"] == "success")
            .map(|e| e["actor"].as_str().unwrap_or_default().to_string())
    };
    let want = format!("admin:admin access:{ALICE}");
    assert_eq!(
        actor_of("login").as_deref(),
        Some(want.as_str()),
        "{events:?}"
    );
    assert_eq!(
        actor_of("credential.create").as_deref(),
        Some(want.as_str()),
        "{events:?}"
    );
    // The key set was fetched once for all of it.
    assert_eq!(keys.fetches(), 1);
}

/// In `all` mode the agents' routes need a token too (a service token's, with `common_name`),
/// which then names the agent's actor beside its key; `/healthz` still needs none.
#[tokio::test]
async fn all_mode_puts_agents_behind_access_too() {
    let a = Key::a();
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("all", &keys.url()).await;
    let up = Upstream::start().await;
    let user = a.sign(&user_claims());
    let service = a.sign(&service_claims());
    expect(
        &send(&c, "GET", "/healthz", None, None, None).await,
        200,
        None,
    );
    let admin = login(&c, &user).await;
    let key = svc_and_agent_key(&c, &user, &admin, "sk-live-access-2", &up).await;
    let exec = json!({"credential": "svc", "action": "http.request", "params": {"method": "GET", "url": up.url("/echo")}});

    for (method, path, body) in [
        ("POST", "/v1/execute", Some(&exec)),
        ("POST", "/api/v1/execute", Some(&exec)),
        ("GET", "/proxy/svc/echo", None),
        ("POST", "/mcp", None),
    ] {
        let r = send(&c, method, path, None, Some(&key), body).await;
        expect_for(
            "an agent without a token in all mode",
            &r,
            403,
            "access_denied",
        );
    }
    assert_eq!(up.hits("/echo"), 0, "nothing reached the upstream");
    let r = send(
        &c,
        "POST",
        "/v1/execute",
        Some(&service),
        Some(&key),
        Some(&exec),
    )
    .await;
    expect(&r, 200, None);
    let r = send(
        &c,
        "GET",
        "/proxy/svc/echo",
        Some(&service),
        Some(&key),
        None,
    )
    .await;
    expect(&r, 200, None);

    // The Access token opens this deployment, not the upstream: never forwarded.
    let proxied = up.seen();
    let proxied = proxied.last().expect("the proxied request");
    assert!(
        !proxied.headers.contains_key("cf-access-jwt-assertion")
            && !proxied
                .headers
                .values()
                .any(|v| v.contains(service.as_str())),
        "{:?}",
        proxied.headers
    );

    let events = audit(&c, &user, &admin).await;
    let execute = events
        .iter()
        .find(|e| e["action"] == "execute")
        .expect("an execute event");
    let actor = execute["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("key:") && actor.ends_with(&format!(" access:{SERVICE}")),
        "{actor}"
    );
}

/// In `all` mode an `OPTIONS` on the proxy is no CORS preflight: the proxy forwards it to the
/// upstream with the credential, so it needs a token like every other method there (review of
/// issue 14). A preflight on any other route still needs none.
#[tokio::test]
async fn all_mode_an_options_request_on_the_proxy_needs_a_token_too() {
    let a = Key::a();
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("all", &keys.url()).await;
    let up = Upstream::start().await;
    let user = a.sign(&user_claims());
    let admin = login(&c, &user).await;
    let key = svc_and_agent_key(&c, &user, &admin, "sk-live-access-3", &up).await;

    let r = send(&c, "OPTIONS", "/proxy/svc/echo", None, Some(&key), None).await;
    expect_for(
        "an OPTIONS on the proxy without a token in all mode",
        &r,
        403,
        "access_denied",
    );
    assert_eq!(up.hits("/echo"), 0, "nothing reached the upstream");
    let r = send(&c, "OPTIONS", "/v1/execute", None, None, None).await;
    expect_for("a preflight elsewhere is never checked", &r, 204, None);
}

/// An unknown `kid` refetches the key set once, then is refused; within the minute another
/// unknown `kid` is refused without a fetch.
#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_once_then_is_refused() {
    let a = Key::a();
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("admin", &keys.url()).await;
    expect(
        &send(&c, "GET", "/", Some(&a.sign(&user_claims())), None, None).await,
        200,
        None,
    );
    assert_eq!(keys.fetches(), 1);
    let unknown = a.sign_as("key-unknown", &user_claims());
    let r = send(&c, "GET", "/", Some(&unknown), None, None).await;
    expect_for("unknown kid", &r, 403, "access_denied");
    assert_eq!(keys.fetches(), 2, "the unknown kid refetched the key set");
    let r = send(&c, "GET", "/", Some(&unknown), None, None).await;
    expect_for("unknown kid again", &r, 403, "access_denied");
    let other = a.sign_as("key-other", &user_claims());
    expect_for(
        "another unknown kid",
        &send(&c, "GET", "/", Some(&other), None, None).await,
        403,
        "access_denied",
    );
    assert_eq!(keys.fetches(), 2, "at most one refetch a minute");
    // Known keys never fetch.
    expect(
        &send(&c, "GET", "/", Some(&a.sign(&user_claims())), None, None).await,
        200,
        None,
    );
    assert_eq!(keys.fetches(), 2);
}

/// The team rotates its keys: a token signed with the new key is accepted after the refetch
/// its unknown `kid` causes; the old key keeps working while it is listed.
#[tokio::test]
async fn a_rotated_key_is_picked_up_by_the_refetch() {
    let (a, b) = (Key::a(), Key::b());
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("admin", &keys.url()).await;
    expect(
        &send(&c, "GET", "/", Some(&a.sign(&user_claims())), None, None).await,
        200,
        None,
    );
    keys.keys.lock().unwrap().insert(0, b.jwk());
    let r = send(&c, "GET", "/", Some(&b.sign(&user_claims())), None, None).await;
    expect_for("the new key", &r, 200, None);
    assert_eq!(keys.fetches(), 2);
    expect_for(
        "the old key, still listed",
        &send(&c, "GET", "/", Some(&a.sign(&user_claims())), None, None).await,
        200,
        None,
    );
}

/// The key set unreachable: with nothing cached, 503 `access_unavailable` (never let through);
/// with the token's key cached, the request passes.
#[tokio::test]
async fn the_key_set_down_is_503_without_a_cached_key_and_served_from_the_cache_with_one() {
    let a = Key::a();
    let good = a.sign(&user_claims());
    // Nothing cached: a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (server_down, c) = server("admin", &format!("http://{closed}/certs")).await;
    let r = send(&c, "GET", "/v1/credentials", Some(&good), None, None).await;
    expect_for(
        "key set unreachable, nothing cached",
        &r,
        503,
        "access_unavailable",
    );
    expect(
        &send(&c, "GET", "/healthz", None, None, None).await,
        200,
        None,
    );
    server_down.stop().await;

    // Cached: fetched once, then the key set goes down.
    let keys = KeySet::start(vec![a.jwk()]).await;
    let (_server, c) = server("admin", &keys.url()).await;
    expect(
        &send(&c, "GET", "/", Some(&good), None, None).await,
        200,
        None,
    );
    keys.down.store(true, Ordering::SeqCst);
    let r = send(&c, "GET", "/", Some(&a.sign(&user_claims())), None, None).await;
    expect_for("key set down, key cached", &r, 200, None);
    // An unknown kid with the key set down is refused (its key is unknown), not let through.
    let r = send(
        &c,
        "GET",
        "/",
        Some(&a.sign_as("key-new", &user_claims())),
        None,
        None,
    )
    .await;
    expect_for("unknown kid, key set down", &r, 403, "access_denied");
}

/// A half-configured Access layer is never silently off: the local server refuses to start
/// naming the missing flag; the worker answers every request 503 `missing_setting`.
#[tokio::test]
async fn half_configured_access_fails_closed() {
    if support::workerd_backend() {
        let opts = ServerOptions {
            extra_env: access_env(&[("ACCESS_TEAM_DOMAIN", TEAM)]),
            ..ServerOptions::default()
        };
        let server = Server::start(opts).await;
        let c = Client::new(server.target());
        for path in ["/healthz", "/v1/credentials"] {
            let r = send(&c, "GET", path, None, None, None).await;
            expect_for("half configured", &r, 503, "missing_setting");
            assert!(r.text.contains("ACCESS_AUD"), "{}", r.text);
        }
    } else {
        for (set, value, missing) in [
            ("VULTRINO_ACCESS_TEAM_DOMAIN", TEAM, "--access-aud"),
            ("VULTRINO_ACCESS_AUD", AUD, "--access-team-domain"),
            ("VULTRINO_ACCESS_MODE", "all", "--access-team-domain"),
        ] {
            let out = support::vultrino_cmd(None)
                .arg("serve")
                .arg("--listen")
                .arg("127.0.0.1:0")
                .env(set, value)
                .env("VULTRINO_ADMIN_PASSWORD_HASH", support::admin_hash())
                .env("VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS", "true")
                .output()
                .await
                .unwrap();
            assert!(!out.status.success(), "{set} alone must not start a server");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(missing), "{set}: {stderr}");
        }
    }
}
