//! Changes made at two edge locations whose KV copies lag each other (Workers KV, see
//! docs/deploy-cloudflare.md and docs/decisions/0033-changes-claim-the-version-they-read.md),
//! sharing one strongly consistent SessionStore (the Durable Objects). A change that starts from a
//! stale read must be refused with 409 `change_not_propagated`, never undo the newer change; once
//! the newer version has reached the location, the same change works.
//!
//! Each location here is an `App` with its own `MemoryKv`; `propagate` plays KV replication.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::NewRole;
use vultrino_core::auth::{Permission, Principal};
use vultrino_core::credential::CredentialUpdate;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Code;
use vultrino_core::error::{Error, Result};
use vultrino_core::execute::ExecuteRequest;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{FetchOptions, Fetcher, KvStore, ListOptions, ManualClock, PutOptions};
use vultrino_core::secret::Secret;
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

const SETTLE_MS: u64 = 90_000;

struct Edge {
    x: App,
    y: App,
    kv_x: Arc<MemoryKv>,
    kv_y: Arc<MemoryKv>,
    clock: Arc<ManualClock>,
    upstream: Arc<Recorder>,
}

/// The upstream of both locations: answers 200 and records the `Authorization` header it got.
/// Nothing leaves the process.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Fetcher for Recorder {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let auth = request.headers().get(http::header::AUTHORIZATION);
        let auth = auth.map(|v| v.to_str().unwrap().to_string());
        self.0.lock().unwrap().push(auth.unwrap_or_default());
        Ok(http::Response::new(Bytes::new()))
    }
}

impl Edge {
    /// `GET https://api.github.com/user` through `github` at X.
    async fn execute_at_x(&self) -> Result<vultrino_core::execute::ExecuteResponse> {
        let request = ExecuteRequest {
            credential: "github".into(),
            method: "GET".into(),
            url: "https://api.github.com/user".into(),
            headers: Default::default(),
            query: Vec::new(),
            body: None,
            json_body: false,
        };
        self.x.execute(&admin(), request).await
    }

    /// The `Authorization` header an execute through `github` at X sends.
    async fn injected_at_x(&self) -> String {
        self.execute_at_x().await.unwrap();
        self.upstream.0.lock().unwrap().last().unwrap().clone()
    }
}

async fn edge() -> Edge {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let sessions = Arc::new(MemorySessions::new());
    let (master, _) = MasterSecret::generate_raw();
    let kv_x = Arc::new(MemoryKv::new(clock.clone()));
    let kv_y = Arc::new(MemoryKv::new(clock.clone()));
    let config = || Config {
        kv_settle_ms: SETTLE_MS,
        ..Config::default()
    };
    let upstream = Arc::new(Recorder::default());
    let ports = |kv: &Arc<MemoryKv>| Ports {
        kv: kv.clone(),
        sessions: sessions.clone(),
        fetcher: upstream.clone(),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let x = App::open(config(), ports(&kv_x), &master).await.unwrap();
    // The keyring record made at X reaches Y before Y starts.
    propagate(&kv_x, &kv_y).await;
    let y = App::open(config(), ports(&kv_y), &master).await.unwrap();
    Edge {
        x,
        y,
        kv_x,
        kv_y,
        clock,
        upstream,
    }
}

/// Replicate every credential and role record of `from` to `to` (deletions included).
async fn propagate(from: &MemoryKv, to: &MemoryKv) {
    for prefix in ["cred:", "role:", "sys:"] {
        let names = |page: vultrino_core::ports::ListPage| {
            page.keys.into_iter().map(|k| k.name).collect::<Vec<_>>()
        };
        let options = ListOptions {
            prefix: Some(prefix.into()),
            ..ListOptions::default()
        };
        let wanted = names(from.list(options.clone()).await.unwrap());
        for name in names(to.list(options).await.unwrap()) {
            if !wanted.contains(&name) {
                to.delete(&name).await.unwrap();
            }
        }
        for name in wanted {
            let entry = from.get_with_metadata(&name).await.unwrap().unwrap();
            let options = PutOptions {
                expiration_ttl: None,
                metadata: entry.metadata,
            };
            to.put(&name, entry.value, options).await.unwrap();
        }
    }
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "t".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

fn credential(description: &str) -> NewCredential {
    NewCredential {
        base_url: None,
        alias: "github".into(),
        kind: "api_key".into(),
        description: Some(description.into()),
        data: serde_json::json!({"key": format!("key of {description}")}),
        policy: Policy {
            allowed_hosts: vec!["api.github.com".into()],
            methods: None,
            path_prefixes: None,
            rate_limit: None,
            pass_cookies: false,
            require_approval: None,
        },
    }
}

fn describe(text: &str) -> CredentialUpdate {
    CredentialUpdate {
        description: Some(text.into()),
        ..CredentialUpdate::default()
    }
}

fn assert_not_propagated(e: Error) {
    assert_eq!(
        (e.status().as_u16(), e.code()),
        (409, Code::ChangeNotPropagated),
        "{e}"
    );
    assert_eq!(e.retry_after_secs(), Some(SETTLE_MS / 1000));
}

#[tokio::test]
async fn a_create_elsewhere_not_yet_seen_is_not_replaced() {
    let e = edge().await;
    e.x.credentials()
        .create(&admin(), credential("made at X"))
        .await
        .unwrap();
    // Y does not see it yet; creating the same alias there would silently replace it.
    assert_not_propagated(
        e.y.credentials()
            .create(&admin(), credential("made at Y"))
            .await
            .unwrap_err(),
    );
    propagate(&e.kv_x, &e.kv_y).await;
    let err =
        e.y.credentials()
            .create(&admin(), credential("made at Y"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::CredentialExists);
    let kept = e.x.credentials().get(&admin(), "github").await.unwrap();
    assert_eq!(kept.description, "made at X");
}

#[tokio::test]
async fn a_delete_elsewhere_not_yet_seen_is_not_undone_by_an_update_or_a_rotation() {
    let e = edge().await;
    e.x.credentials()
        .create(&admin(), credential("v1"))
        .await
        .unwrap();
    propagate(&e.kv_x, &e.kv_y).await;
    e.x.credentials().delete(&admin(), "github").await.unwrap();
    // Y still reads the deleted version: writing it back would resurrect the secret.
    assert_not_propagated(
        e.y.credentials()
            .update(&admin(), "github", describe("edited at Y"))
            .await
            .unwrap_err(),
    );
    assert_not_propagated(
        e.y.credentials()
            .rotate_secret(&admin(), "github", Secret::new("new key"))
            .await
            .unwrap_err(),
    );
    assert_not_propagated(
        e.y.credentials()
            .delete(&admin(), "github")
            .await
            .unwrap_err(),
    );
    assert!(e.kv_x.get("cred:github").await.unwrap().is_none());
    propagate(&e.kv_x, &e.kv_y).await;
    let err =
        e.y.credentials()
            .update(&admin(), "github", describe("edited at Y"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::CredentialNotFound);
}

#[tokio::test]
async fn an_update_elsewhere_not_yet_seen_is_not_overwritten() {
    let e = edge().await;
    e.x.credentials()
        .create(&admin(), credential("v1"))
        .await
        .unwrap();
    propagate(&e.kv_x, &e.kv_y).await;
    e.x.credentials()
        .rotate_secret(&admin(), "github", Secret::new("rotated at X"))
        .await
        .unwrap();
    // Y's copy still holds the old secret: an update there would put it back.
    assert_not_propagated(
        e.y.credentials()
            .update(&admin(), "github", describe("edited at Y"))
            .await
            .unwrap_err(),
    );
    propagate(&e.kv_x, &e.kv_y).await;
    e.y.credentials()
        .update(&admin(), "github", describe("edited at Y"))
        .await
        .unwrap();
    // Both changes stand: the secret rotated at X under the description set at Y.
    propagate(&e.kv_y, &e.kv_x).await;
    let x_view = e.x.credentials().get(&admin(), "github").await.unwrap();
    assert_eq!(x_view.description, "edited at Y");
    assert_eq!(e.injected_at_x().await, "Bearer rotated at X");
    // Successive changes at one location never trip over their own claims.
    e.y.credentials()
        .update(&admin(), "github", describe("again"))
        .await
        .unwrap();
    e.y.credentials()
        .rotate_secret(&admin(), "github", Secret::new("rotated at Y"))
        .await
        .unwrap();
    e.y.credentials().delete(&admin(), "github").await.unwrap();
}

#[tokio::test]
async fn a_recreated_alias_waits_for_the_settle_time_then_works() {
    let e = edge().await;
    e.x.credentials()
        .create(&admin(), credential("v1"))
        .await
        .unwrap();
    e.x.credentials().delete(&admin(), "github").await.unwrap();
    // Absence is one version: a re-create this soon could be a create from a stale read, so it
    // is refused (never lost) until every location has seen the delete.
    assert_not_propagated(
        e.x.credentials()
            .create(&admin(), credential("v2"))
            .await
            .unwrap_err(),
    );
    e.clock.advance(SETTLE_MS);
    e.x.credentials()
        .create(&admin(), credential("v2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn roles_are_claimed_the_same_way() {
    let e = edge().await;
    let role = |scope: &str| NewRole {
        name: "deployers".into(),
        permissions: vec![Permission::Execute],
        scopes: vec![scope.into()],
        description: None,
    };
    e.x.roles()
        .create(&admin(), role("deploy-*"))
        .await
        .unwrap();
    assert_not_propagated(e.y.roles().create(&admin(), role("*")).await.unwrap_err());
    propagate(&e.kv_x, &e.kv_y).await;
    e.x.roles().delete(&admin(), "deployers").await.unwrap();
    assert_not_propagated(e.y.roles().delete(&admin(), "deployers").await.unwrap_err());
    let roles = e.x.roles().list(&admin()).await.unwrap();
    assert!(roles.items.iter().all(|r| r.name != "deployers") && roles.refused.is_empty());
}

/// The local stores are read-your-writes everywhere (`kv_settle_ms` 0): nothing is claimed, so
/// an alias can be re-created at once.
#[tokio::test]
async fn without_a_settle_time_nothing_is_claimed() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ports = Ports {
        kv: Arc::new(MemoryKv::new(clock.clone())),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports, &master).await.unwrap();
    for round in 0..3 {
        app.credentials()
            .create(&admin(), credential(&format!("round {round}")))
            .await
            .unwrap();
        app.credentials().delete(&admin(), "github").await.unwrap();
    }
}

/// A change the store would refuse (here: metadata over the KV limit) is refused before it
/// claims anything, so the corrected retry goes through at once.
#[tokio::test]
async fn a_refused_change_claims_nothing() {
    let e = edge().await;
    let many_hosts: Vec<String> = (0..40)
        .map(|i| format!("host-number-{i}.example.com"))
        .collect();
    let mut too_big = credential("v1");
    too_big.policy.allowed_hosts = many_hosts.clone();
    let err =
        e.x.credentials()
            .create(&admin(), too_big)
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::PolicyTooLarge);
    e.x.credentials()
        .create(&admin(), credential("v1"))
        .await
        .unwrap();
    let update = CredentialUpdate {
        policy: Some(Policy {
            allowed_hosts: many_hosts,
            methods: None,
            path_prefixes: None,
            rate_limit: None,
            pass_cookies: false,
            require_approval: None,
        }),
        ..CredentialUpdate::default()
    };
    let err =
        e.x.credentials()
            .update(&admin(), "github", update)
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::PolicyTooLarge);
    e.x.credentials()
        .update(&admin(), "github", describe("short"))
        .await
        .unwrap();
}

/// Decrypted secrets do not outlive their credential version in memory: a change or a delete
/// made here drops the decrypted copy at once; a delete made elsewhere drops it the next time
/// the credential is used here.
#[tokio::test]
async fn decrypted_credentials_leave_memory_when_they_change_or_go() {
    let e = edge().await;
    let held_at_x = || e.x.opened_aliases();
    e.x.credentials()
        .create(&admin(), credential("v1"))
        .await
        .unwrap();
    assert!(held_at_x().is_empty(), "nothing is decrypted before use");
    e.injected_at_x().await;
    assert_eq!(held_at_x(), ["github"]);

    e.x.credentials()
        .update(&admin(), "github", describe("v2"))
        .await
        .unwrap();
    assert!(held_at_x().is_empty(), "kept across an update");
    e.injected_at_x().await;
    e.x.credentials()
        .rotate_secret(&admin(), "github", Secret::new("rotated"))
        .await
        .unwrap();
    assert!(held_at_x().is_empty(), "kept across a rotation");
    assert_eq!(e.injected_at_x().await, "Bearer rotated");
    e.x.credentials().delete(&admin(), "github").await.unwrap();
    assert!(held_at_x().is_empty(), "kept after a delete");

    // Deleted at Y: X drops its copy when an execute there finds the credential gone.
    e.clock.advance(SETTLE_MS + 1);
    e.x.credentials()
        .create(&admin(), credential("v3"))
        .await
        .unwrap();
    e.injected_at_x().await;
    propagate(&e.kv_x, &e.kv_y).await;
    e.y.credentials().delete(&admin(), "github").await.unwrap();
    propagate(&e.kv_y, &e.kv_x).await;
    assert_eq!(held_at_x(), ["github"]);
    let gone = e.execute_at_x().await.unwrap_err();
    assert_eq!(gone.code(), Code::CredentialNotFound);
    assert!(held_at_x().is_empty(), "kept after a delete elsewhere");
}
