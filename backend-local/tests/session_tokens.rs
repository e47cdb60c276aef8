//! Admin session tokens as the core sees them, over the memory stores with a SessionStore that
//! counts its calls: a forged or mangled token is refused before any store call (on Workers each
//! would be a Durable Object call), a new admin password hash ends every session issued under
//! the old one, and signing out everywhere ends every session of the admin at once.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::crypto::{self, MasterSecret};
use vultrino_core::ports::{FetchOptions, Fetcher, Hit, ManualClock, SessionRecord, SessionStore};
use vultrino_core::{Error, Result};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

struct NoFetch;

#[async_trait]
impl Fetcher for NoFetch {
    async fn fetch(
        &self,
        _request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        Err(Error::unavailable("no outbound requests in this test"))
    }
}

/// `MemorySessions` that counts every call made to it.
#[derive(Default)]
struct Counting {
    inner: MemorySessions,
    calls: AtomicUsize,
}

impl Counting {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for Counting {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        self.count();
        self.inner.create_session(id, record).await
    }
    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        self.count();
        self.inner.touch_session(id, now_ms).await
    }
    async fn revoke_session(&self, id: &str) -> Result<()> {
        self.count();
        self.inner.revoke_session(id).await
    }
    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        self.count();
        self.inner.hit(key, window_ms, limit, now_ms).await
    }
    async fn reset_counter(&self, key: &str) -> Result<()> {
        self.count();
        self.inner.reset_counter(key).await
    }
    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        self.count();
        self.inner.mark(key, ttl_ms, now_ms).await
    }
    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        self.count();
        self.inner.is_marked(key, now_ms).await
    }
}

const NOW: u64 = 1_800_000_000_000;
const PASSWORD: &str = "correct horse battery staple";

/// One deployment's stores (they outlive an `App`, as a deployment's do when its settings change).
struct Stores {
    ports: Ports,
    sessions: Arc<Counting>,
    master: String,
}

fn stores() -> Stores {
    let clock = Arc::new(ManualClock::new(NOW));
    let sessions = Arc::new(Counting::default());
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: sessions.clone(),
        fetcher: Arc::new(NoFetch),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (_, master) = MasterSecret::generate_raw();
    Stores {
        ports,
        sessions,
        master,
    }
}

/// The app of `stores` with the admin password hash `hash`.
async fn open(stores: &Stores, hash: String) -> App {
    let config = Config {
        admin_password_hash: Some(hash),
        allow_weak_password_hash_for_tests: true,
        ..Config::default()
    };
    let master = MasterSecret::parse(&stores.master).unwrap();
    App::open(config, stores.ports.clone(), &master)
        .await
        .unwrap()
}

struct Login {
    bearer: String,
    cookie: String,
    csrf: String,
}

async fn login(app: &App, password: &str) -> Login {
    let body = serde_json::json!({"username": "admin", "password": password}).to_string();
    let r = app
        .handle(
            http::Request::post("/login")
                .header("content-type", "application/json")
                .body(Bytes::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    Login {
        bearer: v["token"].as_str().unwrap().to_string(),
        cookie: cookie.split(';').next().unwrap().to_string(),
        csrf: v["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn send(app: &App, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = app.handle(b.body(Bytes::new()).unwrap()).await;
    (
        r.status().as_u16(),
        String::from_utf8_lossy(r.body()).into_owned(),
    )
}

/// `GET /v1/credentials` with the bearer `token`.
async fn with_bearer(app: &App, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    send(app, "GET", "/v1/credentials", &[("authorization", &auth)])
        .await
        .0
}

/// `GET /v1/credentials` with the session cookie `cookie` (`name=value`) and its CSRF token.
async fn with_cookie(app: &App, cookie: &str, csrf: &str) -> u16 {
    let headers = [("cookie", cookie), ("x-csrf-token", csrf)];
    send(app, "GET", "/v1/credentials", &headers).await.0
}

/// A token this deployment did not issue costs no SessionStore call: forged, mangled (tag,
/// random part or generation changed), in the format of the versions before tagged tokens, or
/// presented the other way (a bearer token as the cookie).
#[tokio::test]
async fn a_forged_or_mangled_session_token_is_refused_without_a_store_call() {
    let s = stores();
    let app = open(&s, crypto::hash_password(PASSWORD, 1000).unwrap()).await;
    let l = login(&app, PASSWORD).await;
    assert_eq!(with_bearer(&app, &l.bearer).await, 200);
    let random = || crypto::b64url(&crypto::random_bytes::<32>());

    // Made up: in today's format with a guessed tag, and in the format of earlier versions.
    let before = s.sessions.calls();
    for token in [
        format!("vs_{}.0.{}", random(), random()),
        format!("vs_{}", random()),
        "vs_".to_string(),
        "vs_not-a-token".to_string(),
    ] {
        assert_eq!(with_bearer(&app, &token).await, 401, "{token}");
    }
    for cookie_value in [
        format!("vc_{}.0.{}", random(), random()),
        format!("vc_{}", random()),
    ] {
        let cookie = format!("vultrino_session={cookie_value}");
        assert_eq!(with_cookie(&app, &cookie, &l.csrf).await, 401, "{cookie}");
    }
    assert_eq!(
        s.sessions.calls(),
        before,
        "a made-up token must be refused before any SessionStore call"
    );

    // Mangled: the real token with one part changed, or presented the other way.
    let (body, tag) = l.bearer.rsplit_once('.').unwrap();
    let flip = |text: &str, at: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let (random_part, generation) = body.rsplit_once('.').unwrap();
    let mangled = [
        format!("{body}.{}", random()),
        format!("{body}.{}", flip(tag, 0)),
        format!("{}.{generation}.{tag}", flip(random_part, 5)),
        format!(
            "{random_part}.{}.{tag}",
            generation.parse::<u32>().unwrap() + 1
        ),
        format!("{}.{tag}", l.bearer),
    ];
    for token in &mangled {
        assert_eq!(with_bearer(&app, token).await, 401, "{token}");
    }
    let as_cookie = format!("vultrino_session={}", l.bearer.replacen("vs_", "vc_", 1));
    assert_eq!(with_cookie(&app, &as_cookie, &l.csrf).await, 401);
    assert_eq!(
        s.sessions.calls(),
        before,
        "a token that does not verify must be refused before any SessionStore call"
    );
    // The real ones still work, each with its store calls.
    assert_eq!(with_bearer(&app, &l.bearer).await, 200);
    assert_eq!(with_cookie(&app, &l.cookie, &l.csrf).await, 200);
    assert!(s.sessions.calls() > before);
}

/// Changing the admin password hash ends every session issued under the old one — bearer and
/// cookie — although the SessionStore still holds them; sessions made after the change work.
#[tokio::test]
async fn a_new_admin_password_hash_ends_every_session_made_before_it() {
    let s = stores();
    let old = open(&s, crypto::hash_password(PASSWORD, 1000).unwrap()).await;
    let first = login(&old, PASSWORD).await;
    let second = login(&old, PASSWORD).await;
    drop(old);

    let new_password = "a brand new admin passphrase";
    let new = open(&s, crypto::hash_password(new_password, 1000).unwrap()).await;
    for l in [&first, &second] {
        assert_eq!(
            with_bearer(&new, &l.bearer).await,
            401,
            "bearer of the old hash"
        );
        assert_eq!(
            with_cookie(&new, &l.cookie, &l.csrf).await,
            401,
            "cookie of the old hash"
        );
    }
    let body = serde_json::json!({"username": "admin", "password": PASSWORD}).to_string();
    let r = new
        .handle(
            http::Request::post("/login")
                .header("content-type", "application/json")
                .body(Bytes::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 401, "the old password is refused");
    let fresh = login(&new, new_password).await;
    assert_eq!(with_bearer(&new, &fresh.bearer).await, 200);

    // The same password hashed again (a new salt) is a new hash too.
    let rehashed = open(&s, crypto::hash_password(new_password, 1000).unwrap()).await;
    assert_eq!(with_bearer(&rehashed, &fresh.bearer).await, 401);
}

/// `POST /logout?everywhere=true` ends every session of the admin at once — other logins'
/// bearer tokens and cookies included — and later logins work; plain `/logout` ends one login.
#[tokio::test]
async fn signing_out_everywhere_ends_every_session_at_once() {
    let s = stores();
    let app = open(&s, crypto::hash_password(PASSWORD, 1000).unwrap()).await;
    let (a, b, c) = (
        login(&app, PASSWORD).await,
        login(&app, PASSWORD).await,
        login(&app, PASSWORD).await,
    );
    let auth = format!("Bearer {}", c.bearer);
    assert_eq!(
        send(&app, "POST", "/logout", &[("authorization", &auth)])
            .await
            .0,
        204
    );
    assert_eq!(with_bearer(&app, &c.bearer).await, 401);
    assert_eq!(
        with_bearer(&app, &b.bearer).await,
        200,
        "plain logout ends one login"
    );

    let (status, body) = send(
        &app,
        "POST",
        "/logout?everywhere=maybe",
        &[("authorization", &format!("Bearer {}", a.bearer))],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        with_bearer(&app, &b.bearer).await,
        200,
        "a refused request ends nothing"
    );

    let cookie_headers = [
        ("cookie", a.cookie.as_str()),
        ("x-csrf-token", a.csrf.as_str()),
    ];
    let (status, _) = send(&app, "POST", "/logout?everywhere=true", &cookie_headers).await;
    assert_eq!(status, 204);
    for l in [&a, &b] {
        assert_eq!(with_bearer(&app, &l.bearer).await, 401);
        assert_eq!(with_cookie(&app, &l.cookie, &l.csrf).await, 401);
    }
    let d = login(&app, PASSWORD).await;
    assert_eq!(with_bearer(&app, &d.bearer).await, 200);
    assert_eq!(with_cookie(&app, &d.cookie, &d.csrf).await, 200);
}
