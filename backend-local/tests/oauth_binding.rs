//! A cached OAuth2 token belongs to one version of one credential. A refresh still in flight when
//! its credential is deleted, re-created or rotated may store its token afterwards; that token
//! must never be sent on behalf of the new credential.
//!
//! The fetcher here records requests and answers them itself: nothing leaves the process.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::Principal;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Result;
use vultrino_core::execute::ExecuteRequest;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{FetchOptions, Fetcher, KvStore, ManualClock, PutOptions};
use vultrino_core::secret::Secret;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

const TOKEN_URL: &str = "https://auth.example.com/token";

/// Issues `token-1`, `token-2`, … from the token endpoint (no expiry) and records the
/// `Authorization` header of every API call.
#[derive(Default)]
struct FakeProvider {
    issued: Mutex<u32>,
    api_auth: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Fetcher for FakeProvider {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        if request.uri() == TOKEN_URL {
            let mut n = self.issued.lock().unwrap();
            *n += 1;
            let body = format!(r#"{{"access_token":"token-{n}","token_type":"bearer"}}"#);
            return Ok(http::Response::new(Bytes::from(body)));
        }
        let auth = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        self.api_auth.lock().unwrap().push(auth);
        Ok(http::Response::new(Bytes::from_static(b"ok")))
    }
}

struct Env {
    app: App,
    kv: Arc<MemoryKv>,
    provider: Arc<FakeProvider>,
}

async fn env() -> Env {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let provider = Arc::new(FakeProvider::default());
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: provider.clone(),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports, &master).await.unwrap();
    Env { app, kv, provider }
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "t".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

fn oauth_credential(client_secret: &str) -> NewCredential {
    NewCredential {
        base_url: None,
        alias: "crm".into(),
        kind: "oauth2".into(),
        description: None,
        data: serde_json::json!({
            "token_url": TOKEN_URL,
            "client_id": "vultrino",
            "client_secret": client_secret,
        }),
        policy: Policy {
            allowed_hosts: vec!["api.example.com".into()],
            methods: None,
            path_prefixes: None,
            rate_limit: None,
            pass_cookies: false,
            require_approval: None,
        },
    }
}

impl Env {
    /// Call the API through `crm`; the `Authorization` header the API received.
    async fn call(&self) -> String {
        let r = self
            .app
            .execute(
                &admin(),
                ExecuteRequest {
                    credential: "crm".into(),
                    method: "GET".into(),
                    url: "https://api.example.com/contacts".into(),
                    headers: Default::default(),
                    query: Vec::new(),
                    body: None,
                    json_body: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        self.provider
            .api_auth
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    }

    async fn cached_token(&self) -> Bytes {
        self.kv.get("oauth:crm").await.unwrap().unwrap()
    }

    /// Store `token` the way a refresh that finished late would.
    async fn late_write(&self, token: Bytes) {
        self.kv
            .put("oauth:crm", token, PutOptions::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_late_token_of_a_deleted_credential_is_not_used_by_its_successor() {
    let e = env().await;
    e.app
        .credentials()
        .create(&admin(), oauth_credential("first secret"))
        .await
        .unwrap();
    assert_eq!(e.call().await, "Bearer token-1");
    assert_eq!(e.call().await, "Bearer token-1", "the token is reused");
    let late = e.cached_token().await;

    e.app.credentials().delete(&admin(), "crm").await.unwrap();
    e.app
        .credentials()
        .create(&admin(), oauth_credential("second secret"))
        .await
        .unwrap();
    e.late_write(late).await;

    assert_eq!(e.call().await, "Bearer token-2");
    assert_eq!(*e.provider.issued.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_late_token_of_the_old_client_secret_is_not_used_after_a_rotation() {
    let e = env().await;
    e.app
        .credentials()
        .create(&admin(), oauth_credential("first secret"))
        .await
        .unwrap();
    assert_eq!(e.call().await, "Bearer token-1");
    let late = e.cached_token().await;

    e.app
        .credentials()
        .rotate_secret(&admin(), "crm", Secret::new("second secret"))
        .await
        .unwrap();
    e.late_write(late).await;

    assert_eq!(e.call().await, "Bearer token-2");
    // The new token is cached and reused like the first one was.
    assert_eq!(e.call().await, "Bearer token-2");
    assert_eq!(*e.provider.issued.lock().unwrap(), 2);
}
