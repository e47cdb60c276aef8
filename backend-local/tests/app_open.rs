//! Opening a deployment: a wrong master key and a lost keyring are refused with clear errors
//! before anything is served or overwritten.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::Principal;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::Code;
use vultrino_core::keyring::KEYRING_KEY;
use vultrino_core::policy::Policy;
use vultrino_core::ports::{KvStore, ManualClock};
use vultrino_local::fetcher::HttpFetcher;
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

fn ports(kv: Arc<MemoryKv>) -> Ports {
    Ports {
        kv,
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new().unwrap()),
        clock: Arc::new(ManualClock::new(1_800_000_000_000)),
    }
}

async fn with_one_credential() -> (Arc<MemoryKv>, MasterSecret) {
    let kv = Arc::new(MemoryKv::new(Arc::new(ManualClock::new(1_800_000_000_000))));
    let (master, _) = MasterSecret::generate_raw();
    let app = App::open(Config::default(), ports(kv.clone()), &master)
        .await
        .unwrap();
    let who = Principal::Admin {
        subject: "t".into(),
        session_id: String::new(),
        via_cookie: false,
    };
    let input = NewCredential {
        alias: "c".into(),
        kind: "api_key".into(),
        description: None,
        data: serde_json::json!({"key": "k-123"}),
        policy: Policy {
            allowed_hosts: vec!["api.example.com".into()],
            methods: None,
            path_prefixes: None,
            rate_limit: None,
            pass_cookies: false,
        },
    };
    app.credentials().create(&who, input).await.unwrap();
    (kv, master)
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
