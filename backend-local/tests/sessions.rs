//! Admin sessions at the edges the HTTP suite cannot reach: records stored before twin sessions,
//! a logout whose twin is gone already, a cookie planted by another port, and a login whose
//! second session cannot be stored. The core runs in-process over the memory stores; its fetcher
//! refuses everything (nothing here makes an outbound request).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

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

/// `MemorySessions` that can refuse to store cookie sessions, and counts live sessions.
struct Sessions {
    inner: MemorySessions,
    refuse_cookie_sessions: bool,
    live: Mutex<Vec<String>>,
}

#[async_trait]
impl SessionStore for Sessions {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        if self.refuse_cookie_sessions && record.via_cookie {
            return Err(Error::unavailable("session store unavailable"));
        }
        self.live.lock().unwrap().push(id.to_string());
        self.inner.create_session(id, record).await
    }
    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        self.inner.touch_session(id, now_ms).await
    }
    async fn revoke_session(&self, id: &str) -> Result<()> {
        self.live.lock().unwrap().retain(|l| l != id);
        self.inner.revoke_session(id).await
    }
    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        self.inner.hit(key, window_ms, limit, now_ms).await
    }
    async fn reset_counter(&self, key: &str) -> Result<()> {
        self.inner.reset_counter(key).await
    }
    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        self.inner.mark(key, ttl_ms, now_ms).await
    }
    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        self.inner.is_marked(key, now_ms).await
    }
}

const NOW: u64 = 1_800_000_000_000;

async fn app(refuse_cookie_sessions: bool) -> (App, Arc<Sessions>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let sessions = Arc::new(Sessions {
        inner: MemorySessions::new(),
        refuse_cookie_sessions,
        live: Mutex::new(Vec::new()),
    });
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: sessions.clone(),
        fetcher: Arc::new(NoFetch),
        clock,
        audit_sink: None,
        audit: None,
    };
    let config = Config {
        admin_password_hash: Some(crypto::hash_password("pw", 1000).unwrap()),
        allow_weak_password_hash_for_tests: true,
        ..Config::default()
    };
    let (master, _) = MasterSecret::generate_raw();
    (App::open(config, ports, &master).await.unwrap(), sessions)
}

struct Login {
    bearer: String,
    cookie: String,
    csrf: String,
}

fn login_request() -> http::Request<Bytes> {
    http::Request::post("/login")
        .header("content-type", "application/json")
        .body(Bytes::from(r#"{"username":"admin","password":"pw"}"#))
        .unwrap()
}

async fn login(app: &App) -> Login {
    let r = app.handle(login_request()).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    Login {
        bearer: v["token"].as_str().unwrap().to_string(),
        cookie: cookie.split(';').next().unwrap().to_string(),
        csrf: v["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn send(app: &App, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    app.handle(b.body(Bytes::new()).unwrap())
        .await
        .status()
        .as_u16()
}

/// The status of `GET /v1/credentials` with `Authorization: <bearer>`.
async fn list_with_bearer(app: &App, bearer: &str) -> u16 {
    send(app, "GET", "/v1/credentials", &[("authorization", bearer)]).await
}

#[tokio::test]
async fn a_session_stored_before_twin_sessions_is_refused() {
    let (app, sessions) = app(false).await;
    // What a login stored before twins: one token, used as bearer AND as the cookie.
    let token = "vs_from-an-older-version-0123456789abcdef";
    let old = SessionRecord {
        subject: "admin".into(),
        csrf_hash: crypto::sha256_hex(b"csrf"),
        created_at_ms: NOW,
        last_seen_ms: NOW,
        idle_timeout_ms: 1_800_000,
        expires_at_ms: NOW + 3_600_000,
        via_cookie: false,
        twin: None,
    };
    let id = crypto::sha256_hex(token.as_bytes());
    sessions.create_session(&id, old).await.unwrap();
    let bearer = format!("Bearer {token}");
    assert_eq!(list_with_bearer(&app, &bearer).await, 401);
    // The same record read back from JSON without the new fields is refused the same way.
    let legacy: SessionRecord = serde_json::from_str(
        r#"{"subject":"admin","csrf_hash":"00","created_at_ms":1,"last_seen_ms":1,"idle_timeout_ms":1,"expires_at_ms":2}"#,
    )
    .unwrap();
    assert_eq!((legacy.via_cookie, legacy.twin), (false, None));
}

#[tokio::test]
async fn logout_succeeds_when_the_twin_is_gone_already_and_ends_the_session() {
    let (app, sessions) = app(false).await;
    let l = login(&app).await;
    assert_eq!(
        sessions.live.lock().unwrap().len(),
        2,
        "a bearer and a cookie session"
    );
    // Its cookie twin ended on its own (expired, or revoked by an earlier half-done logout).
    let cookie_id = crypto::sha256_hex(l.cookie.trim_start_matches("vultrino_session=").as_bytes());
    sessions.revoke_session(&cookie_id).await.unwrap();
    let bearer = format!("Bearer {}", l.bearer);
    assert_eq!(
        send(&app, "POST", "/logout", &[("authorization", &bearer)]).await,
        204
    );
    assert_eq!(list_with_bearer(&app, &bearer).await, 401);
    assert!(sessions.live.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_cookie_planted_beside_the_real_one_does_not_lock_the_admin_out() {
    let (app, _) = app(false).await;
    let l = login(&app).await;
    // Another port of this host set `vultrino_session` with a narrower path: the browser sends it
    // first.
    let both = format!("vultrino_session=vc_planted-by-another-port; {}", l.cookie);
    let headers = [("cookie", both.as_str()), ("x-csrf-token", l.csrf.as_str())];
    assert_eq!(send(&app, "GET", "/v1/credentials", &headers).await, 200);
    // Alone, the planted one opens nothing.
    let planted = [
        ("cookie", "vultrino_session=vc_planted-by-another-port"),
        ("x-csrf-token", l.csrf.as_str()),
    ];
    assert_eq!(send(&app, "GET", "/v1/credentials", &planted).await, 401);
}

#[tokio::test]
async fn a_login_whose_cookie_session_cannot_be_stored_leaves_no_session() {
    let (app, sessions) = app(true).await;
    let r = app.handle(login_request()).await;
    assert_eq!(r.status(), 503, "{:?}", r.body());
    let body = String::from_utf8_lossy(r.body());
    assert!(!body.contains("vs_") && !body.contains("vc_"), "{body}");
    assert!(
        sessions.live.lock().unwrap().is_empty(),
        "the bearer twin stored first is removed again"
    );
}
