//! Integrity of the stored records that grant anything (`key:`, `role:`), as someone with write
//! access to the store but not the master key (a KV API token, a tampered edge, an untrusted
//! sync source) could change them. Every test runs an `App` in-process on the memory stores with
//! a fake upstream (nothing leaves the process). The first three are findings of the issue-18
//! security review, kept as it wrote them.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::{NewKey, NewRole, Permission, Principal};
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::{Code, Result};
use vultrino_core::ports::{FetchOptions, Fetcher, KvStore, ManualClock, PutOptions};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

/// One deployment in this process.
struct Env {
    app: Arc<App>,
    kv: Arc<MemoryKv>,
    clock: Arc<ManualClock>,
}

async fn env() -> Env {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    let (master, _) = MasterSecret::generate_raw();
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(Recorder::default()),
        clock: clock.clone(),
        audit_sink: None,
        audit: None,
    };
    let config = Config {
        allow_loopback_upstreams: true,
        ..Config::default()
    };
    let app = Arc::new(App::open(config, ports, &master).await.unwrap());
    Env { app, kv, clock }
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "admin".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

/// Answers 200 and records the host of every request.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Fetcher for Recorder {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push(host);
        Ok(http::Response::new(Bytes::from_static(b"ok")))
    }
}

/// Rewrite the JSON record at `key` in place (keeping its metadata), as someone with write
/// access to the store (and not to the master key) can.
async fn edit_record(kv: &MemoryKv, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let entry = kv.get_with_metadata(key).await.unwrap().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    edit(&mut v);
    let options = PutOptions {
        expiration_ttl: None,
        metadata: entry.metadata,
    };
    kv.put(key, Bytes::from(serde_json::to_vec(&v).unwrap()), options)
        .await
        .unwrap();
}

/// Write the stored record at `from` (bytes and metadata, as saved) at `to`, as someone with
/// write access to the store can.
async fn copy_record(kv: &MemoryKv, from: &str, to: &str) {
    let saved = kv.get_with_metadata(from).await.unwrap().unwrap();
    let options = PutOptions {
        expiration_ttl: None,
        metadata: saved.metadata,
    };
    kv.put(to, saved.value, options).await.unwrap();
}

async fn new_key(e: &Env, role: &str, expires_in_days: Option<u32>) -> (String, String) {
    let created = e
        .app
        .api_keys()
        .create(
            &admin(),
            NewKey {
                name: "agent".into(),
                role: role.into(),
                expires_in_days,
            },
        )
        .await
        .unwrap();
    (created.id.clone(), created.key.clone())
}

async fn read_only_key(e: &Env, expires_in_days: Option<u32>) -> (String, String) {
    new_key(e, "read-only", expires_in_days).await
}

fn gh_reader(permissions: Vec<Permission>) -> NewRole {
    NewRole {
        name: "gh-reader".into(),
        permissions,
        scopes: vec!["github-*".into()],
        description: None,
    }
}

/// A key's role is part of what the admin issued: editing `role` in the stored `key:` record
/// (cleartext JSON, only the secret's MAC is checked) must not turn a read-only key into an
/// admin one.
#[tokio::test]
async fn an_api_key_record_edited_in_the_store_keeps_its_role() {
    let e = env().await;
    let (id, key) = read_only_key(&e, None).await;
    edit_record(&e.kv, &format!("key:{id}"), |v| v["role"] = "admin".into()).await;
    match e.app.api_keys().authenticate(&key).await {
        Err(err) => assert_eq!(err.code(), Code::InvalidApiKey),
        Ok(who) => {
            assert!(
                who.require(Permission::Admin).is_err(),
                "a read-only key became an admin key by editing its record: {who:?}"
            );
        }
    }
}

/// The same for the expiry: an expired key stays expired when `expires_at` is removed from its
/// stored record.
#[tokio::test]
async fn an_expired_api_key_is_not_revived_by_editing_its_record() {
    let e = env().await;
    let (id, key) = read_only_key(&e, Some(1)).await;
    e.clock.advance(2 * 86_400_000);
    assert!(e.app.api_keys().authenticate(&key).await.is_err());
    edit_record(&e.kv, &format!("key:{id}"), |v| {
        v["expires_at"] = serde_json::Value::Null
    })
    .await;
    assert!(
        e.app.api_keys().authenticate(&key).await.is_err(),
        "an expired key works again once `expires_at` is removed from its record"
    );
}

/// A custom role's permissions are what the admin created: adding `admin` to a stored `role:`
/// record must not give its keys the admin permission.
#[tokio::test]
async fn a_role_record_edited_in_the_store_grants_nothing_new() {
    let e = env().await;
    e.app
        .roles()
        .create(&admin(), gh_reader(vec![Permission::Read]))
        .await
        .unwrap();
    let (_, key) = new_key(&e, "gh-reader", None).await;
    edit_record(&e.kv, "role:gh-reader", |v| {
        v["permissions"] = serde_json::json!(["read", "execute", "write", "admin"]);
        v["scopes"] = serde_json::json!(["*"]);
    })
    .await;
    if let Ok(who) = e.app.api_keys().authenticate(&key).await {
        assert!(
            who.require(Permission::Admin).is_err() && !who.reaches("stripe"),
            "an edited role record widened a key: {who:?}"
        );
    }
}

/// A revoked key stays revoked when its saved record is written back under another key id:
/// the record names the key it was issued as, and its secret must not open a second one.
#[tokio::test]
async fn a_revoked_key_record_copied_to_another_id_stays_revoked() {
    let e = env().await;
    let (id, key) = new_key(&e, "executor", None).await;
    // In use: its record holds a `last_used_at` of now.
    e.app.api_keys().authenticate(&key).await.unwrap();
    let saved =
        e.kv.get_with_metadata(&format!("key:{id}"))
            .await
            .unwrap()
            .unwrap();
    e.app.api_keys().revoke(&admin(), &id).await.unwrap();
    let other = "0123456789abcdef";
    let options = PutOptions {
        expiration_ttl: None,
        metadata: saved.metadata,
    };
    e.kv.put(&format!("key:{other}"), saved.value, options)
        .await
        .unwrap();
    let secret = key.strip_prefix(&format!("vk_{id}_")).unwrap();
    let replayed = e
        .app
        .api_keys()
        .authenticate(&format!("vk_{other}_{secret}"))
        .await;
    assert_eq!(
        replayed.as_ref().err().map(|e| e.code()),
        Some(Code::InvalidApiKey),
        "a revoked key's record copied to another id works: {replayed:?}"
    );
}

/// A key is bound to the role it was created with, not to the role's name: deleting a role and
/// creating one of the same name with more permissions neither revives nor widens the old keys,
/// while keys created for the new role work.
#[tokio::test]
async fn a_role_deleted_and_created_again_does_not_revive_its_old_keys() {
    let e = env().await;
    e.app
        .roles()
        .create(&admin(), gh_reader(vec![Permission::Read]))
        .await
        .unwrap();
    let (_, old_key) = new_key(&e, "gh-reader", None).await;
    assert!(e.app.api_keys().authenticate(&old_key).await.is_ok());
    e.app.roles().delete(&admin(), "gh-reader").await.unwrap();
    e.app
        .roles()
        .create(
            &admin(),
            gh_reader(vec![Permission::Read, Permission::Execute]),
        )
        .await
        .unwrap();
    let old = e.app.api_keys().authenticate(&old_key).await;
    assert_eq!(
        old.as_ref().err().map(|e| e.code()),
        Some(Code::UnknownRole),
        "a key of a deleted role works with the role created again under its name: {old:?}"
    );
    let (_, new_key) = new_key(&e, "gh-reader", None).await;
    let who = e.app.api_keys().authenticate(&new_key).await.unwrap();
    assert!(who.require(Permission::Execute).is_ok());
}

/// Use `key` until it is served from the verified-key cache: the first use rewrites the record
/// (`last_used_at`), the second verifies and remembers the rewritten bytes, later ones are
/// served from memory (docs/decisions/0067-verified-key-cache.md).
async fn in_use(e: &Env, key: &str) -> Principal {
    for _ in 0..2 {
        e.app.api_keys().authenticate(key).await.unwrap();
    }
    e.app.api_keys().authenticate(key).await.unwrap()
}

/// A key in use is remembered as verified; an edit of its stored record after that must be
/// checked as on first use: a read-only key does not become an admin key.
#[tokio::test]
async fn a_key_in_use_whose_record_is_edited_is_checked_again() {
    let e = env().await;
    let (id, key) = read_only_key(&e, None).await;
    in_use(&e, &key).await;
    edit_record(&e.kv, &format!("key:{id}"), |v| v["role"] = "admin".into()).await;
    let r = e.app.api_keys().authenticate(&key).await;
    assert_eq!(
        r.as_ref().err().map(|e| e.code()),
        Some(Code::InvalidApiKey),
        "an edited record of a key in use was taken as verified: {r:?}"
    );
}

/// Another key's signed record written over a key in use (a swap by someone with store
/// access) is refused: neither secret opens it under this id.
#[tokio::test]
async fn a_key_in_use_whose_record_is_swapped_is_refused() {
    let e = env().await;
    let (id, key) = read_only_key(&e, None).await;
    let (other_id, other_key) = new_key(&e, "admin", None).await;
    in_use(&e, &key).await;
    in_use(&e, &other_key).await;
    copy_record(&e.kv, &format!("key:{other_id}"), &format!("key:{id}")).await;
    let secret = other_key.strip_prefix(&format!("vk_{other_id}_")).unwrap();
    for token in [key.clone(), format!("vk_{id}_{secret}")] {
        let r = e.app.api_keys().authenticate(&token).await;
        assert_eq!(
            r.as_ref().err().map(|e| e.code()),
            Some(Code::InvalidApiKey),
            "a swapped record was accepted: {r:?}"
        );
    }
}

/// A wrong secret for a key in use is refused, and the right one still works after it.
#[tokio::test]
async fn a_wrong_secret_for_a_key_in_use_is_refused() {
    let e = env().await;
    let (id, key) = read_only_key(&e, None).await;
    in_use(&e, &key).await;
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    for token in [wrong, format!("vk_{id}_")] {
        let r = e.app.api_keys().authenticate(&token).await;
        assert_eq!(
            r.as_ref().err().map(|e| e.code()),
            Some(Code::InvalidApiKey),
            "{r:?}"
        );
    }
    assert!(e.app.api_keys().authenticate(&key).await.is_ok());
}

/// Expiry, revocation and the custom role are looked at on every request, for a key in use
/// too: each takes effect at once.
#[tokio::test]
async fn expiry_revocation_and_role_changes_reach_a_key_in_use_at_once() {
    let e = env().await;
    let (_, expiring) = read_only_key(&e, Some(1)).await;
    in_use(&e, &expiring).await;
    let (revoked_id, revoked) = read_only_key(&e, None).await;
    in_use(&e, &revoked).await;
    e.app
        .roles()
        .create(&admin(), gh_reader(vec![Permission::Read]))
        .await
        .unwrap();
    let (_, custom) = new_key(&e, "gh-reader", None).await;
    let who = in_use(&e, &custom).await;
    assert!(who.require(Permission::Execute).is_err());

    e.app
        .api_keys()
        .revoke(&admin(), &revoked_id)
        .await
        .unwrap();
    let r = e.app.api_keys().authenticate(&revoked).await;
    assert_eq!(r.err().map(|e| e.code()), Some(Code::InvalidApiKey));

    // The custom role's record edited in the store: refused, never widened.
    edit_record(&e.kv, "role:gh-reader", |v| {
        v["permissions"] = serde_json::json!(["read", "execute", "write", "admin"]);
    })
    .await;
    if let Ok(who) = e.app.api_keys().authenticate(&custom).await {
        panic!("an edited role record was taken as verified for a key in use: {who:?}");
    }
    // Deleted (and created again with more): the key's role is gone.
    e.kv.delete("role:gh-reader").await.unwrap();
    e.app
        .roles()
        .create(
            &admin(),
            gh_reader(vec![Permission::Read, Permission::Execute]),
        )
        .await
        .unwrap();
    let r = e.app.api_keys().authenticate(&custom).await;
    assert_eq!(r.err().map(|e| e.code()), Some(Code::UnknownRole));

    e.clock.advance(2 * 86_400_000);
    let r = e.app.api_keys().authenticate(&expiring).await;
    assert_eq!(r.err().map(|e| e.code()), Some(Code::ApiKeyExpired));
}
