//! Embed the Vultrino core as a library with the in-memory backends: create a credential, give an
//! agent a key, and execute a request through the credential — all in-process.
//!
//! The outbound `Fetcher` here is a stand-in that answers locally (and echoes the Authorization
//! header it received, like a careless upstream would), so the example needs no network. Swap in
//! `vultrino_local::fetcher::HttpFetcher::new()?` to reach real APIs.
//!
//!     cargo run -p vultrino-local --example embed

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::NewKey;
use vultrino_core::auth::Principal;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::execute::ExecuteRequest;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{FetchOptions, Fetcher};
use vultrino_local::clock::SystemClock;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// An upstream that leaks the credential back in its reply.
struct EchoUpstream;

#[async_trait]
impl Fetcher for EchoUpstream {
    async fn fetch(
        &self,
        req: http::Request<Bytes>,
        _: FetchOptions,
    ) -> vultrino_core::Result<http::Response<Bytes>> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = format!(r#"{{"you_sent": "{auth}", "url": "{}"}}"#, req.uri());
        Ok(http::Response::new(Bytes::from(body)))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(SystemClock::new());
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(EchoUpstream),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports, &master).await?;

    // The operator (full rights) stores a credential bound to one host.
    let operator = Principal::Admin {
        subject: "example".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    };
    let meta = app
        .credentials()
        .create(
            &operator,
            NewCredential {
                base_url: None,
                alias: "github".into(),
                kind: "api_key".into(),
                description: Some("GitHub token".into()),
                data: serde_json::json!({"key": "ghp_example_secret_123"}),
                policy: Policy {
                    allowed_hosts: vec!["api.github.com".into()],
                    methods: None,
                    path_prefixes: None,
                    rate_limit: None,
                    pass_cookies: false,
                    require_approval: None,
                },
            },
        )
        .await?;
    println!("created credential: {}", serde_json::to_string(&meta)?);

    // An agent gets a key with the built-in `executor` role.
    let key = app
        .api_keys()
        .create(
            &operator,
            NewKey {
                name: "agent".into(),
                role: "executor".into(),
                expires_in_days: Some(30),
            },
        )
        .await?;
    let agent = app.api_keys().authenticate(&key.key).await?;

    // The agent makes a request "with the credential named github".
    let reply = app
        .execute(
            &agent,
            ExecuteRequest {
                credential: "github".into(),
                method: "GET".into(),
                url: "https://api.github.com/user".into(),
                ..ExecuteRequest::default()
            },
        )
        .await?;
    println!("upstream status {}: {}", reply.status, reply.body);
    assert!(
        !reply.body.contains("ghp_example_secret_123"),
        "the secret is scrubbed"
    );

    // A host the credential is not bound to is refused before any request is made.
    let refused = app
        .execute(
            &agent,
            ExecuteRequest {
                credential: "github".into(),
                method: "GET".into(),
                url: "https://attacker.example/steal".into(),
                ..ExecuteRequest::default()
            },
        )
        .await;
    println!(
        "to another host: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}
