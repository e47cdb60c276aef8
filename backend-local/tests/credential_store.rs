//! The credential store as a scoped reader and the process's memory see it (issue 18): listing
//! pages that look the same whatever credentials the reader cannot see, and decrypted
//! credentials that leave memory when unused. Every test runs an `App` in-process on the memory
//! stores with a manual clock; the upstream is a fake `Fetcher` (nothing leaves the process).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::{NewKey, NewRole, Permission, Principal};
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Result;
use vultrino_core::execute::ExecuteRequest;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{FetchOptions, Fetcher, ManualClock};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// Answers every request with 200 `ok`.
struct Ok200;

#[async_trait::async_trait]
impl Fetcher for Ok200 {
    async fn fetch(
        &self,
        _request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        Ok(http::Response::new(Bytes::from_static(b"ok")))
    }
}

struct Env {
    app: App,
    clock: Arc<ManualClock>,
}

async fn env() -> Env {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (master, _) = MasterSecret::generate_raw();
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(Ok200),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let app = App::open(Config::default(), ports, &master).await.unwrap();
    Env { app, clock }
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "admin".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

async fn create(e: &Env, alias: &str) {
    let input = NewCredential {
        base_url: None,
        alias: alias.into(),
        kind: "api_key".into(),
        description: None,
        data: serde_json::json!({"key": "sk-live-Rv83kQ2wZ7pL"}),
        policy: Policy {
            allowed_hosts: vec!["api.github.com".into()],
            ..Policy::default()
        },
    };
    e.app.credentials().create(&admin(), input).await.unwrap();
}

/// A `read` key scoped to `scopes`.
async fn scoped_reader(e: &Env, scopes: &[&str]) -> Principal {
    e.app
        .roles()
        .create(
            &admin(),
            NewRole {
                name: "scoped".into(),
                permissions: vec![Permission::Read],
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                description: None,
            },
        )
        .await
        .unwrap();
    let created = e
        .app
        .api_keys()
        .create(
            &admin(),
            NewKey {
                name: "agent".into(),
                role: "scoped".into(),
                expires_in_days: None,
            },
        )
        .await
        .unwrap();
    e.app.api_keys().authenticate(&created.key).await.unwrap()
}

/// The aliases of every page, paging with `limit`.
async fn pages(app: &App, who: &Principal, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = app
            .credentials()
            .list(who, cursor, Some(limit))
            .await
            .unwrap();
        pages.push(items.into_iter().map(|m| m.alias).collect());
        match next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
        assert!(pages.len() <= 2000, "paging does not end");
    }
}

/// The listing cursor is sealed "so paging cannot enumerate hidden aliases"; a key scoped to
/// `github-*` must not learn how many credentials outside its scopes exist (nor where they sit
/// between its own) either: its pages look the same whatever is hidden. (Review finding of
/// issue 18.)
#[tokio::test]
async fn paging_does_not_reveal_how_many_credentials_are_hidden() {
    let mut seen = Vec::new();
    for hidden in [
        &[][..],
        &["aws", "github", "gitlab-x", "stripe-live", "zendesk"][..],
    ] {
        let e = env().await;
        for alias in ["github-a", "github-b", "github-c"].iter().chain(hidden) {
            create(&e, alias).await;
        }
        let who = scoped_reader(&e, &["github-*"]).await;
        let mut shapes = Vec::new();
        for limit in [1, 2, 3, 1000] {
            shapes.push(pages(&e.app, &who, limit).await);
        }
        seen.push(shapes);
    }
    assert_eq!(
        seen[0], seen[1],
        "pages without and with 5 hidden credentials"
    );
}

/// More hidden credentials than one store page holds (1000 keys) between two visible ones:
/// pages are still filled from the store pages that follow, and none is empty.
#[tokio::test]
async fn pages_are_filled_across_store_pages() {
    let e = env().await;
    create(&e, "a-first").await;
    for i in 0..1200 {
        create(&e, &format!("hidden-{i:04}")).await;
    }
    create(&e, "z-last").await;
    let who = scoped_reader(&e, &["a-*", "z-*"]).await;
    assert_eq!(
        pages(&e.app, &who, 1).await,
        [vec!["a-first".to_string()], vec!["z-last".to_string()]]
    );
    assert_eq!(
        pages(&e.app, &who, 10).await,
        [vec!["a-first".to_string(), "z-last".to_string()]]
    );
    // Everything, for a reader that sees everything, exactly once and in order.
    let all: Vec<String> = pages(&e.app, &admin(), 7).await.concat();
    assert_eq!(all.len(), 1202);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
}

/// A decrypted credential (its secrets) stays in memory only while agents use it: one unused
/// for five minutes is dropped at the next use of the cache, one used meanwhile is kept.
#[tokio::test]
async fn an_opened_credential_unused_for_five_minutes_leaves_memory() {
    let e = env().await;
    create(&e, "idle").await;
    create(&e, "busy").await;
    let run = |alias: &str| ExecuteRequest {
        credential: alias.into(),
        method: "GET".into(),
        url: "https://api.github.com/user".into(),
        ..ExecuteRequest::default()
    };
    for alias in ["idle", "busy"] {
        let r = e.app.execute(&admin(), run(alias)).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(e.app.opened_aliases(), ["busy", "idle"]);
    // Four minutes on, both are still kept; `busy` is used again.
    e.clock.advance(4 * 60 * 1000);
    e.app.execute(&admin(), run("busy")).await.unwrap();
    assert_eq!(e.app.opened_aliases(), ["busy", "idle"]);
    // Five minutes after its last use, `idle` is gone; `busy` (used a minute ago) stays.
    e.clock.advance(60 * 1000);
    e.app.execute(&admin(), run("busy")).await.unwrap();
    assert_eq!(e.app.opened_aliases(), ["busy"]);
    // Nobody uses anything for long: nothing is kept.
    e.clock.advance(60 * 60 * 1000);
    assert!(e.app.opened_aliases().is_empty());
    // And an execute opens it again.
    e.app.execute(&admin(), run("idle")).await.unwrap();
    assert_eq!(e.app.opened_aliases(), ["idle"]);
}
