//! Changes of one record never interleave. The store here is slow on purpose (every read lets
//! the other tasks run before it answers), so without the change lock simultaneous creates of one
//! alias would all find it free and all be acknowledged, each silently replacing the one before.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::NewRole;
use vultrino_core::auth::{Permission, Principal};
use vultrino_core::credential::CredentialUpdate;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Code;
use vultrino_core::error::Result;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{KvEntry, KvStore, ListOptions, ListPage, ManualClock, PutOptions};
use vultrino_core::secret::Secret;
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// A `MemoryKv` whose reads let every other ready task run first, like a store across a network.
struct YieldingKv(MemoryKv);

#[async_trait::async_trait]
impl KvStore for YieldingKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        // Read, then let the others run before answering: the answer may be stale by then.
        let value = self.0.get(key).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        value
    }
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.0.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        self.0.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.0.list(options).await
    }
}

async fn app() -> App {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ports = Ports {
        kv: Arc::new(YieldingKv(MemoryKv::new(clock.clone()))),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock,
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    App::open(Config::default(), ports, &master).await.unwrap()
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "t".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

fn new_credential(alias: &str, description: &str) -> NewCredential {
    NewCredential {
        base_url: None,
        alias: alias.into(),
        kind: "api_key".into(),
        description: Some(description.into()),
        data: serde_json::json!({"key": format!("key of {description}")}),
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

#[tokio::test]
async fn simultaneous_creates_of_one_alias_acknowledge_one_and_store_that_one() {
    let app = Arc::new(app().await);
    let who = admin();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let app = app.clone();
        set.spawn(async move {
            let r = app
                .credentials()
                .create(&admin(), new_credential("c", &format!("writer {i}")))
                .await;
            (i, r)
        });
    }
    let mut results: Vec<_> = set.join_all().await;
    results.sort_by_key(|r| r.0);
    let results: Vec<_> = results.into_iter().map(|r| r.1).collect();
    let acknowledged: Vec<usize> = (0..8).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(
        acknowledged.len(),
        1,
        "{:?}",
        results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.code()))
            .collect::<Vec<_>>()
    );
    for r in &results {
        if let Err(e) = r {
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (409, Code::ChangeInProgress)
            );
            // Answered with `Retry-After: 1`: the holder takes milliseconds.
            assert_eq!(e.retry_after_secs(), Some(1));
        }
    }
    let stored = app.credentials().get(&who, "c").await.unwrap();
    assert_eq!(stored.description, format!("writer {}", acknowledged[0]));
}

#[tokio::test]
async fn the_lock_is_released_after_every_outcome() {
    let app = app().await;
    let who = admin();
    app.credentials()
        .create(&who, new_credential("c", "first"))
        .await
        .unwrap();
    // A refused create (alias taken) releases the lock: the next change goes through at once.
    let e = app
        .credentials()
        .create(&who, new_credential("c", "second"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::CredentialExists);
    app.credentials()
        .update(&who, "c", describe("updated"))
        .await
        .unwrap();
    app.credentials().delete(&who, "c").await.unwrap();
    let e = app.credentials().delete(&who, "c").await.unwrap_err();
    assert_eq!(e.code(), Code::CredentialNotFound);
    app.credentials()
        .create(&who, new_credential("c", "again"))
        .await
        .unwrap();
    assert_eq!(
        app.credentials().get(&who, "c").await.unwrap().description,
        "again"
    );
}

/// An update racing a delete never brings the deleted credential back: one of the two is
/// refused, and the store agrees with the one that was acknowledged.
#[tokio::test]
async fn an_update_racing_a_delete_never_resurrects_the_credential() {
    let app = app().await;
    let who = admin();
    app.credentials()
        .create(&who, new_credential("c", "first"))
        .await
        .unwrap();
    let credentials = app.credentials();
    let (deleted, updated) = tokio::join!(
        credentials.delete(&who, "c"),
        credentials.update(&who, "c", describe("updated"))
    );
    assert!(
        deleted.is_ok() != updated.is_ok(),
        "exactly one of the two is acknowledged"
    );
    let now = app.credentials().get(&who, "c").await;
    if deleted.is_ok() {
        assert_eq!(now.unwrap_err().code(), Code::CredentialNotFound);
    } else {
        assert_eq!(now.unwrap().description, "updated");
    }
}

/// A secret rotation racing a delete never brings the deleted credential back either.
#[tokio::test]
async fn a_rotation_racing_a_delete_never_resurrects_the_credential() {
    let app = app().await;
    let who = admin();
    app.credentials()
        .create(&who, new_credential("c", "first"))
        .await
        .unwrap();
    let credentials = app.credentials();
    let (deleted, rotated) = tokio::join!(
        credentials.delete(&who, "c"),
        credentials.rotate_secret(&who, "c", Secret::new("new key"))
    );
    assert!(
        deleted.is_ok() != rotated.is_ok(),
        "exactly one of the two is acknowledged"
    );
    let now = app.credentials().get(&who, "c").await;
    assert_eq!(now.is_err(), deleted.is_ok());
    if let Err(e) = rotated {
        assert_eq!(e.code(), Code::ChangeInProgress);
    }
}

/// `rotate_secret` (the CLI's `credential rotate`) and `PUT` share one update path but keep
/// their own audit actions.
#[tokio::test]
async fn a_rotation_and_an_update_are_audited_as_what_they_are() {
    let app = app().await;
    let who = admin();
    app.credentials()
        .create(&who, new_credential("c", "first"))
        .await
        .unwrap();
    app.credentials()
        .rotate_secret(&who, "c", Secret::new("new key"))
        .await
        .unwrap();
    app.credentials()
        .update(&who, "c", describe("second"))
        .await
        .unwrap();
    let (events, _) = app.audit().list(&who, None, Some(3)).await.unwrap();
    // The clock stands still here, so the three share one timestamp: compared as a set.
    let mut actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "credential.create",
            "credential.rotate",
            "credential.update"
        ]
    );
}

/// Roles take the same lock: of simultaneous creates of one role name exactly one is
/// acknowledged, and the stored role is the acknowledged one.
#[tokio::test]
async fn simultaneous_creates_of_one_role_acknowledge_one_and_store_that_one() {
    let app = Arc::new(app().await);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let app = app.clone();
        set.spawn(async move {
            let role = NewRole {
                name: "deployers".into(),
                permissions: vec![Permission::Execute],
                scopes: vec![format!("deploy-{i}-*")],
                description: None,
            };
            (i, app.roles().create(&admin(), role).await)
        });
    }
    let results = set.join_all().await;
    let acknowledged: Vec<usize> = results
        .iter()
        .filter(|r| r.1.is_ok())
        .map(|r| r.0)
        .collect();
    assert_eq!(acknowledged.len(), 1);
    for (_, r) in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), Code::ChangeInProgress);
        }
    }
    let roles = app.roles().list(&admin()).await.unwrap();
    let stored: Vec<_> = roles
        .items
        .iter()
        .filter(|r| r.name == "deployers")
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].scopes, [format!("deploy-{}-*", acknowledged[0])]);
}

/// A `MemoryKv` whose puts under `cred:` each wait for the next gate the test opens.
struct GatedKv {
    inner: MemoryKv,
    gates: std::sync::Mutex<std::collections::VecDeque<tokio::sync::oneshot::Receiver<()>>>,
}

impl GatedKv {
    fn waiting_gates(&self) -> usize {
        self.gates.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl KvStore for GatedKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        if key.starts_with("cred:") {
            let gate = self.gates.lock().unwrap().pop_front();
            if let Some(gate) = gate {
                let _ = gate.await;
            }
        }
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.list(options).await
    }
}

/// An app on a [`GatedKv`] with `gates` gates and a manual clock; returns the gate openers.
async fn gated_app(
    gates: usize,
) -> (
    Arc<App>,
    Arc<GatedKv>,
    Arc<ManualClock>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (openers, receivers): (Vec<_>, std::collections::VecDeque<_>) =
        (0..gates).map(|_| tokio::sync::oneshot::channel()).unzip();
    let kv = Arc::new(GatedKv {
        inner: MemoryKv::new(clock.clone()),
        gates: std::sync::Mutex::new(receivers),
    });
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let (master, _) = MasterSecret::generate_raw();
    let app = Arc::new(App::open(Config::default(), ports, &master).await.unwrap());
    (app, kv, clock, openers)
}

/// Create credential `c` in a task of its own.
fn spawn_create(
    app: &Arc<App>,
    description: &'static str,
) -> tokio::task::JoinHandle<Result<vultrino_core::credential::CredentialMeta>> {
    let app = app.clone();
    tokio::spawn(async move {
        app.credentials()
            .create(&admin(), new_credential("c", description))
            .await
    })
}

/// Let the other tasks run until only `left` gates are still unclaimed (a change is then held
/// in its write); fails instead of hanging if that never happens.
async fn until_gates_left(kv: &GatedKv, left: usize) {
    for _ in 0..10_000 {
        if kv.waiting_gates() == left {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("no change reached its write");
}

/// A change of credential `c` now is refused because another holds its lock.
async fn assert_locked(app: &App) {
    let e = app
        .credentials()
        .update(&admin(), "c", describe("refused"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ChangeInProgress);
}

fn describe(text: &str) -> CredentialUpdate {
    CredentialUpdate {
        description: Some(text.into()),
        ..CredentialUpdate::default()
    }
}

/// A change that outlives its lock must not release it: by then another change holds it, and
/// releasing would let a third change run beside that one.
#[tokio::test]
async fn a_change_that_outlived_its_lock_leaves_the_next_holders_lock_alone() {
    let (app, kv, clock, mut gates) = gated_app(2).await;
    // A takes the lock and stalls in its write past the lock's lifetime.
    let a = spawn_create(&app, "A");
    until_gates_left(&kv, 1).await;
    clock.advance(vultrino_core::change::CHANGE_LOCK_MS + 1);
    // The lock has lapsed: B takes it and is now mid-change.
    let b = spawn_create(&app, "B");
    until_gates_left(&kv, 0).await;
    // A finishes.
    gates.remove(0).send(()).unwrap();
    a.await.unwrap().unwrap();

    // B still holds the lock: a third change is refused, not run beside B.
    assert_locked(&app).await;

    gates.remove(0).send(()).unwrap();
    let _ = b.await.unwrap();
}

/// A change that finishes with less than the safety margin (5 s) left on its lock leaves it to
/// lapse: another isolate's clock may already see it expired and a change there may hold it.
#[tokio::test]
async fn a_change_finishing_close_to_its_locks_end_leaves_it_to_lapse() {
    let (app, kv, clock, mut gates) = gated_app(1).await;
    let a = spawn_create(&app, "A");
    until_gates_left(&kv, 0).await;
    clock.advance(26_000);
    gates.remove(0).send(()).unwrap();
    a.await.unwrap().unwrap();
    assert_locked(&app).await;
    // Once the lock's 30 s are over, changes go through again.
    clock.advance(4_001);
    app.credentials()
        .update(&admin(), "c", describe("after the lock"))
        .await
        .unwrap();
}
