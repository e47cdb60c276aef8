//! Opening a deployment: a wrong master key and a lost keyring are refused with clear errors
//! before anything is served or overwritten; instances that start together on an empty store
//! agree on one keyring.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::Principal;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::{Code, Result};
use vultrino_core::keyring::{KEYRING_CLAIM_KEY, KEYRING_CLAIM_MARGIN_MS, KEYRING_KEY};
use vultrino_core::policy::Policy;
use vultrino_core::ports::{
    Clock, KvEntry, KvStore, ListOptions, ListPage, ManualClock, PutOptions, SessionStore,
};
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

fn ports(kv: Arc<MemoryKv>) -> Ports {
    Ports {
        kv,
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: Arc::new(ManualClock::new(1_800_000_000_000)),
        audit_sink: None,
        audit: None,
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

fn credential(alias: &str) -> NewCredential {
    NewCredential {
        base_url: None,
        alias: alias.into(),
        kind: "api_key".into(),
        description: None,
        data: serde_json::json!({"key": "k-123"}),
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

async fn with_one_credential() -> (Arc<MemoryKv>, MasterSecret) {
    let kv = Arc::new(MemoryKv::new(Arc::new(ManualClock::new(1_800_000_000_000))));
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports(kv.clone()), &master)
        .await
        .unwrap();
    app.credentials()
        .create(&admin(), credential("c"))
        .await
        .unwrap();
    (kv, master)
}

/// Whether a credential written through each of two instances is readable through the other:
/// true only when both use the same keyring.
async fn agree(x: &App, y: &App) -> bool {
    for (writer, reader, alias) in [(x, y, "made-at-x"), (y, x, "made-at-y")] {
        writer
            .credentials()
            .create(&admin(), credential(alias))
            .await
            .unwrap();
        if reader.credentials().detail(&admin(), alias).await.is_err() {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_at_open() {
    let (kv, _) = with_one_credential().await;
    let (other, _) = MasterSecret::generate_raw();
    let err = App::open(Config::default(), ports(kv), &other)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::WrongMasterKey);
    assert!(
        err.message().contains("does not match"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_lost_keyring_is_not_silently_replaced() {
    let (kv, master) = with_one_credential().await;
    kv.delete(KEYRING_KEY).await.unwrap();
    let err = App::open(Config::default(), ports(kv.clone()), &master)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::KeyringMissing);
    assert!(
        kv.get(KEYRING_KEY).await.unwrap().is_none(),
        "no new keyring was written"
    );
    // Corrupt rather than missing: also refused, also untouched.
    kv.put(
        KEYRING_KEY,
        Bytes::from_static(b"{not json"),
        Default::default(),
    )
    .await
    .unwrap();
    let err = App::open(Config::default(), ports(kv.clone()), &master)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidKeyring);
}

// ---- the keyring on first start -------------------------------------------------------------

/// A store whose reads of `sys:keyring` wait until two readers have read it: two instances
/// (two Workers isolates on a first deploy) starting on an empty store at the same moment.
struct TwoStarts {
    inner: Arc<MemoryKv>,
    barrier: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl KvStore for TwoStarts {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.inner.get(key).await;
        if key == "sys:keyring" {
            self.barrier.wait().await;
        }
        value
    }
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.list(options).await
    }
}

/// Two instances of one deployment that start together on an empty store end up with one
/// keyring: a credential stored through one is readable through the other (with two keyrings,
/// whatever one instance wrote is unreadable for good once the other's keyring is the stored one).
#[tokio::test]
async fn two_first_starts_at_once_agree_on_one_keyring() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mem = Arc::new(MemoryKv::new(clock.clone()));
    let kv = Arc::new(TwoStarts {
        inner: mem,
        barrier: tokio::sync::Barrier::new(2),
    });
    let (master, _) = MasterSecret::generate_raw();
    let sessions = Arc::new(MemorySessions::new());
    let ports = || Ports {
        kv: kv.clone(),
        sessions: sessions.clone(),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let (x, y) = tokio::join!(
        App::open(Config::default(), ports(), &master),
        App::open(Config::default(), ports(), &master)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    for (writer, reader, alias) in [(&x, &y, "made-at-x"), (&y, &x, "made-at-y")] {
        writer
            .credentials()
            .create(&admin(), credential(alias))
            .await
            .unwrap();
        let read = reader.credentials().detail(&admin(), alias).await;
        assert!(
            read.is_ok(),
            "{alias} is unreadable by the other instance: {:?}",
            read.err()
        );
    }
}

/// An instance that starts while another is creating the keyring (its claim is held, nothing is
/// stored yet) writes no keyring of its own: it answers 503 `keyring_starting` with a
/// `Retry-After`, and once the other's keyring is stored it opens that one.
#[tokio::test]
async fn a_start_during_another_s_first_start_waits_for_its_keyring() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let sessions = Arc::new(MemorySessions::new());
    let (master, _) = MasterSecret::generate_raw();
    let ports = |sessions: Arc<MemorySessions>| Ports {
        kv: kv.clone(),
        sessions,
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    // The other instance holds the claim and is still deriving its keys.
    let held = sessions
        .hit(
            KEYRING_CLAIM_KEY,
            KEYRING_CLAIM_MARGIN_MS,
            1,
            clock.now_ms(),
        )
        .await
        .unwrap();
    assert!(held.allowed);
    let Err(err) = App::open(Config::default(), ports(sessions.clone()), &master).await else {
        panic!("a start without the claim and without a stored keyring opened");
    };
    assert_eq!(err.code(), Code::KeyringStarting);
    assert_eq!(err.status(), 503);
    assert!(err
        .retry_after_secs()
        .is_some_and(|s| (1..=60).contains(&s)));
    assert!(
        kv.get(KEYRING_KEY).await.unwrap().is_none(),
        "the instance that lost the claim wrote a keyring"
    );
    // The other instance (its own session store stands in for its finished creation) stores its
    // keyring; the waiting one now opens exactly that.
    let first = App::open(
        Config::default(),
        ports(Arc::new(MemorySessions::new())),
        &master,
    )
    .await
    .unwrap();
    let second = App::open(Config::default(), ports(sessions), &master)
        .await
        .unwrap();
    assert!(agree(&first, &second).await);
}

/// A claim whose winner died before writing the keyring does not block the deployment for good:
/// once the claim has expired, the next start creates the keyring.
#[tokio::test]
async fn an_abandoned_claim_expires() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let sessions = Arc::new(MemorySessions::new());
    let (master, _) = MasterSecret::generate_raw();
    sessions
        .hit(
            KEYRING_CLAIM_KEY,
            KEYRING_CLAIM_MARGIN_MS,
            1,
            clock.now_ms(),
        )
        .await
        .unwrap();
    clock.advance(KEYRING_CLAIM_MARGIN_MS);
    let ports = Ports {
        kv: kv.clone(),
        sessions,
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    App::open(Config::default(), ports, &master).await.unwrap();
    assert!(kv.get(KEYRING_KEY).await.unwrap().is_some());
}

/// A store that refuses the first write of the keyring (a full disk, KV unreachable).
struct FailsFirstKeyringPut {
    inner: Arc<MemoryKv>,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl KvStore for FailsFirstKeyringPut {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get_with_metadata(key).await
    }
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        if key == KEYRING_KEY && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(vultrino_core::error::Error::unavailable("disk full"));
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

/// A winner that could not write the keyring gives the claim back: the next start (the same
/// deployment, the same session store) creates it at once instead of waiting for the claim to
/// expire.
#[tokio::test]
async fn a_failed_creation_gives_the_claim_back() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mem = Arc::new(MemoryKv::new(clock.clone()));
    let kv = Arc::new(FailsFirstKeyringPut {
        inner: mem.clone(),
        failed: Default::default(),
    });
    let sessions = Arc::new(MemorySessions::new());
    let (master, _) = MasterSecret::generate_raw();
    let ports = || Ports {
        kv: kv.clone(),
        sessions: sessions.clone(),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    assert!(App::open(Config::default(), ports(), &master)
        .await
        .is_err());
    App::open(Config::default(), ports(), &master)
        .await
        .unwrap();
    assert!(mem.get(KEYRING_KEY).await.unwrap().is_some());
}
