//! Integrity of the stored records that grant anything (`key:`, `role:`), seen over the wire on
//! each backend: a record changed by someone who can write the store but does not hold the
//! master key (a KV API token, a tampered edge) grants nothing and is audited; keys bind to
//! the role they were given, not to its name; a store written before records were signed is
//! refused until an admin signs it, once, and then works as before.
//!
//! Writing the store directly: on the local binary, the file store while the server is stopped
//! (the server is started again on the same data directory); on the worker, the harness's raw
//! access to the KV namespace (`HARNESS_KV_CONTROL`), while it runs.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use vultrino_core::ports::{KvStore, PutOptions};

use crate::support::upstream::Upstream;
use crate::support::{
    expect, expect_for, workerd_backend, Client, Reply, Server, ServerOptions, TEST_MASTER_KEY,
};

/// The store written by the version before records were signed (see the file's `about`).
fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/store-before-signed-records.json")).unwrap()
}

/// A raw store entry: key, value, metadata.
type Entry = (String, String, Option<Value>);

/// The fixture's store: its keyring, then every record.
fn fixture_entries(f: &Value) -> Vec<Entry> {
    let export = &f["export"];
    let mut out = vec![(
        "sys:keyring".to_string(),
        export["keyring"].to_string(),
        None,
    )];
    for r in export["records"].as_array().unwrap() {
        out.push((
            r["key"].as_str().unwrap().to_string(),
            r["value"].as_str().unwrap().to_string(),
            r.get("metadata").cloned().filter(|m| !m.is_null()),
        ));
    }
    out
}

/// One backend under test whose store the test can also write directly, with an admin session.
struct Deployment {
    server: Server,
    /// Local binary: its data directory (in `_tmp`).
    data: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    c: Client,
    admin: String,
}

fn options(data: Option<PathBuf>, settle_secs: Option<u32>) -> ServerOptions {
    let mut extra_env = vec![("VULTRINO_MASTER_KEY".into(), TEST_MASTER_KEY.into())];
    if workerd_backend() {
        extra_env.push(("HARNESS_KV_CONTROL".into(), "1".into()));
        if let Some(s) = settle_secs {
            extra_env.push(("KV_SETTLE_SECONDS".into(), s.to_string()));
        }
    }
    ServerOptions {
        data_dir: data,
        extra_env,
        ..ServerOptions::default()
    }
}

/// Write `entries` into the file store of `data` (no server may hold it).
async fn write_file_store(data: &std::path::Path, entries: &[Entry]) {
    std::fs::create_dir_all(data).unwrap();
    let clock = Arc::new(vultrino_local::clock::SystemClock::new());
    let kv = vultrino_local::file_kv::FileKv::open(&data.join("store"), clock).unwrap();
    for (key, value, metadata) in entries {
        let options = PutOptions {
            expiration_ttl: None,
            metadata: metadata.clone(),
        };
        kv.put(key, value.clone().into_bytes().into(), options)
            .await
            .unwrap();
    }
}

impl Deployment {
    /// A backend whose store holds `entries` before its first request (the keyring among them,
    /// or none: the first request creates one).
    async fn start(entries: &[Entry]) -> Deployment {
        Self::start_with(entries, None).await
    }

    /// [`Deployment::start`]; the worker with `KV_SETTLE_SECONDS` `settle_secs` when given (the
    /// local stores never wait: they are read-your-writes).
    async fn start_with(entries: &[Entry], settle_secs: Option<u32>) -> Deployment {
        if workerd_backend() {
            let server = Server::start(options(None, settle_secs)).await;
            let mut d = Deployment {
                c: Client::new(server.target()),
                server,
                data: None,
                _tmp: None,
                admin: String::new(),
            };
            for (k, v, m) in entries {
                d.control_put(k, v, m.clone()).await;
            }
            d.admin = d.c.login().await;
            d
        } else {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("data");
            write_file_store(&data, entries).await;
            let server = Server::start_local(options(Some(data.clone()), None)).await;
            let c = Client::new(server.target());
            let admin = c.login().await;
            Deployment {
                server,
                data: Some(data),
                _tmp: Some(tmp),
                c,
                admin,
            }
        }
    }

    fn control(&self) -> &str {
        self.server
            .kv_control
            .as_deref()
            .expect("the harness serves KV control")
    }

    async fn control_put(&self, key: &str, value: &str, metadata: Option<Value>) {
        let r = self
            .c
            .http
            .put(format!("{}/kv", self.control()))
            .query(&[("key", key)])
            .json(&json!({"value": value, "metadata": metadata}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "KV control put {key}");
    }

    /// Write one entry straight into the store, as someone with write access to it (and not the
    /// master key). The local server is stopped for it and started again (a new admin session).
    async fn put_raw(&mut self, key: &str, value: &str, metadata: Option<Value>) {
        let Some(data) = self.data.clone() else {
            return self.control_put(key, value, metadata).await;
        };
        self.server.kill9().await;
        write_file_store(&data, &[(key.into(), value.into(), metadata)]).await;
        self.server = Server::start_local(options(Some(data), None)).await;
        self.c = Client::new(self.server.target());
        self.admin = self.c.login().await;
    }

    /// One entry as stored: value and metadata.
    async fn get_raw(&mut self, key: &str) -> Option<(String, Option<Value>)> {
        let Some(data) = self.data.clone() else {
            let r = self
                .c
                .http
                .get(format!("{}/kv", self.control()))
                .query(&[("key", key)])
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == 404 {
                return None;
            }
            let v: Value = r.json().await.unwrap();
            return Some((
                v["value"].as_str().unwrap().to_string(),
                Some(v["metadata"].clone()).filter(|m| !m.is_null()),
            ));
        };
        // Stopped for the read (the store is one process's), then started again.
        self.server.kill9().await;
        let clock = Arc::new(vultrino_local::clock::SystemClock::new());
        let found = {
            let kv = vultrino_local::file_kv::FileKv::open(&data.join("store"), clock).unwrap();
            kv.get_with_metadata(key).await.unwrap()
        };
        self.server = Server::start_local(options(Some(data), None)).await;
        self.c = Client::new(self.server.target());
        self.admin = self.c.login().await;
        found.map(|e| (String::from_utf8(e.value.to_vec()).unwrap(), e.metadata))
    }

    /// Rewrite the JSON record at `key` (keeping its metadata).
    async fn edit_raw(&mut self, key: &str, edit: impl FnOnce(&mut Value)) {
        let (value, metadata) = self.get_raw(key).await.unwrap();
        let mut v: Value = serde_json::from_str(&value).unwrap();
        edit(&mut v);
        self.put_raw(key, &v.to_string(), metadata).await;
    }

    async fn send(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
        self.c.send(method, path, Some(token), body).await
    }

    async fn admin_send(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.c.send(method, path, Some(&self.admin), body).await
    }

    /// A new API key with `role`: (id, key).
    async fn key(&self, role: &str) -> (String, String) {
        let r = self
            .admin_send(
                "POST",
                "/v1/keys",
                Some(&json!({"name": "agent", "role": role})),
            )
            .await;
        expect_for(&format!("a key with role {role}"), &r, 201, None);
        (
            r.body["id"].as_str().unwrap().to_string(),
            r.body["key"].as_str().unwrap().to_string(),
        )
    }

    async fn role(&self, body: Value) {
        let r = self.admin_send("POST", "/v1/roles", Some(&body)).await;
        expect(&r, 201, None);
    }

    async fn execute(&self, token: &str, alias: &str, url: &str) -> Reply {
        let body = json!({"credential": alias, "action": "http.request",
            "params": {"method": "GET", "url": url}});
        self.send("POST", "/v1/execute", token, Some(&body)).await
    }

    /// The audit events about the stored record `record`.
    async fn refusals_of(&self, record: &str) -> Vec<Value> {
        let r = self.admin_send("GET", "/v1/audit?limit=1000", None).await;
        expect(&r, 200, None);
        r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "record.refused" && e["record"] == record)
            .cloned()
            .collect()
    }
}

/// The codes of the `refused` entries of a listing, by record.
fn refused(r: &Reply) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r.body["refused"]
        .as_array()
        .unwrap_or_else(|| panic!("no `refused` in {}", r.text))
        .iter()
        .map(|x| {
            (
                x["record"].as_str().unwrap().to_string(),
                x["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A read-only key whose stored record is edited to the admin role grants nothing: the key is
/// refused as invalid, and the refusal is audited with the record and `record_tampered`.
#[tokio::test]
async fn a_key_record_edited_in_the_store_is_refused_and_audited() {
    let mut d = Deployment::start(&[]).await;
    let (id, key) = d.key("read-only").await;
    let r = d.send("GET", "/v1/keys", &key, None).await;
    expect_for("a read-only key lists keys", &r, 403, "permission_denied");
    let record = format!("key:{id}");
    d.edit_raw(&record, |v| v["role"] = "admin".into()).await;
    let r = d.send("GET", "/v1/keys", &key, None).await;
    expect_for(
        "the key whose record now says admin",
        &r,
        401,
        "invalid_api_key",
    );
    let events = d.refusals_of(&record).await;
    assert!(
        events.iter().any(|e| e["code"] == "record_tampered"
            && e["outcome"] == "denied"
            && e["actor"] == record.as_str()),
        "no audit event for the tampered record: {events:?}"
    );
    let r = d.admin_send("GET", "/v1/keys", None).await;
    expect(&r, 200, None);
    assert_eq!(r.body["keys"], json!([]), "{}", r.text);
    assert_eq!(refused(&r), [(record, "record_tampered".to_string())]);
}

/// Review of issue 18: a key id is no secret (audit actors, listings), and presenting it with any
/// made-up secret while its record is refused is an unauthenticated request. Such requests must
/// not write one audit event each into the authenticated history (which they could then push
/// out, and which costs a KV write per request on Workers): their refusals are one
/// unauthenticated event per window, with a count, like a locked-out client's.
#[tokio::test]
async fn guesses_at_a_refused_key_record_are_one_unauthenticated_event_with_a_count() {
    let mut d = Deployment::start(&[]).await;
    let (id, _) = d.key("read-only").await;
    let record = format!("key:{id}");
    d.edit_raw(&record, |v| v["role"] = "admin".into()).await;
    let started = crate::support::audit_window_now(vultrino_core::audit::UNAUTHENTICATED_WINDOW_MS);
    for i in 0..32 {
        let guess = format!("vk_{id}_made-up-secret-{i}");
        let r = d.send("GET", "/v1/credentials", &guess, None).await;
        expect_for(
            "a made-up secret for the key id",
            &r,
            401,
            "invalid_api_key",
        );
    }
    if crate::support::audit_window_now(vultrino_core::audit::UNAUTHENTICATED_WINDOW_MS) != started
    {
        eprintln!("the guesses straddled an audit window's end: not counted");
        return;
    }
    let events = d.refusals_of(&record).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["code"], "record_tampered", "{e}");
    assert_eq!(e["count"], 32, "{e}");
    assert!(
        e["id"].as_str().unwrap().ends_with("-u"),
        "not in the unauthenticated class: {e}"
    );
}

/// The key listing shows what the signed records hold, not the cleartext metadata beside them
/// (which anyone who can write the store can change without the master key).
#[tokio::test]
async fn the_key_listing_is_not_fooled_by_edited_metadata() {
    let mut d = Deployment::start(&[]).await;
    let (id, _) = d.key("read-only").await;
    let record = format!("key:{id}");
    let (value, metadata) = d.get_raw(&record).await.unwrap();
    let mut metadata = metadata.unwrap();
    metadata["role"] = "admin".into();
    metadata["name"] = "trusted-admin-bot".into();
    d.put_raw(&record, &value, Some(metadata)).await;
    let r = d.admin_send("GET", "/v1/keys", None).await;
    expect(&r, 200, None);
    assert_eq!(r.body["keys"][0]["id"], id.as_str(), "{}", r.text);
    assert_eq!(r.body["keys"][0]["role"], "read-only", "{}", r.text);
    assert_eq!(r.body["keys"][0]["name"], "agent", "{}", r.text);
}

/// A custom role whose stored record is widened (admin, every credential) widens no key: its
/// keys are refused with `record_tampered`, and the admin's role listing sets it apart.
#[tokio::test]
async fn a_role_record_edited_in_the_store_widens_no_key() {
    let mut d = Deployment::start(&[]).await;
    d.role(json!({"name": "gh", "permissions": ["read"], "scopes": ["github-*"]}))
        .await;
    let (_, key) = d.key("gh").await;
    let r = d.send("GET", "/v1/credentials", &key, None).await;
    expect_for("the key of the role as created", &r, 200, None);
    d.edit_raw("role:gh", |v| {
        v["permissions"] = json!(["read", "execute", "write", "admin"]);
        v["scopes"] = json!(["*"]);
    })
    .await;
    let r = d.send("GET", "/v1/keys", &key, None).await;
    expect_for("a key of the widened role", &r, 503, "record_tampered");
    assert!(!d.refusals_of("role:gh").await.is_empty());
    let r = d.admin_send("GET", "/v1/roles", None).await;
    expect(&r, 200, None);
    let names: Vec<&str> = r.body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "executor", "read-only"]);
    assert_eq!(
        refused(&r),
        [("role:gh".to_string(), "record_tampered".to_string())]
    );
}

/// Deleting a role and creating one of the same name with more permissions gives the old keys
/// nothing: they stay refused (403 `unknown_role`); keys made for the new role work. (The worker
/// runs without a KV settle time here, so that the name can be created again at once: on a
/// deployment with one, that waits `KV_SETTLE_SECONDS`, see changes.rs.)
#[tokio::test]
async fn a_role_deleted_and_created_again_does_not_revive_its_old_keys() {
    let d = Deployment::start_with(&[], Some(0)).await;
    d.role(json!({"name": "gh", "permissions": ["read"], "scopes": ["github-*"]}))
        .await;
    let (_, old_key) = d.key("gh").await;
    let r = d.admin_send("DELETE", "/v1/roles/gh", None).await;
    expect(&r, 204, None);
    let r = d.send("GET", "/v1/credentials", &old_key, None).await;
    expect_for("a key whose role was deleted", &r, 403, "unknown_role");
    d.role(json!({"name": "gh", "permissions": ["read", "execute", "write"], "scopes": ["*"]}))
        .await;
    let r = d.send("GET", "/v1/credentials", &old_key, None).await;
    expect_for(
        "a key of the deleted role, with a new role of its name",
        &r,
        403,
        "unknown_role",
    );
    let (_, new_key) = d.key("gh").await;
    let r = d.send("GET", "/v1/credentials", &new_key, None).await;
    expect_for("a key of the new role", &r, 200, None);
}

/// Review of issue 18: on a deployment created by this version (every record it holds was signed
/// when written), someone who can write the store and holds a read-only key strips its record's
/// signature and makes it an admin key. The unsigned record must be refused as tampered (not as an
/// older version's record that names the migration), and the migration must not run there: it
/// would sign the forged record and hand that key the admin role.
#[tokio::test]
async fn a_fresh_deployment_treats_a_stripped_signature_as_tampered_and_never_migrates() {
    let mut d = Deployment::start(&[]).await;
    let (id, key) = d.key("read-only").await;
    let record = format!("key:{id}");
    d.edit_raw(&record, |v| {
        v.as_object_mut().unwrap().remove("sig");
        v["role"] = "admin".into();
    })
    .await;
    let r = d.send("GET", "/v1/keys", &key, None).await;
    expect_for(
        "a key whose signature was stripped and role made admin",
        &r,
        401,
        "invalid_api_key",
    );
    assert!(
        d.refusals_of(&record)
            .await
            .iter()
            .any(|e| e["code"] == "record_tampered"),
        "not audited as tampered"
    );
    let r = d
        .admin_send("POST", "/v1/admin/migrate-records", None)
        .await;
    expect_for(
        "the migration on a deployment this version created",
        &r,
        409,
        "records_already_signed",
    );
    let r = d.send("GET", "/v1/keys", &key, None).await;
    expect_for("the forged admin key", &r, 401, "invalid_api_key");
}

/// A store written by the version before records were signed: its keys and role are refused
/// with `record_unsigned` (a message that names the fix) and listed apart, never silently
/// dropped; a dry run lists what the migration would sign and changes nothing; an API key
/// cannot run it; an admin runs it once, and then every key works as it did, bound to its role.
/// An unsigned record written after that is not trusted.
#[tokio::test]
async fn a_store_written_before_records_were_signed_works_again_once_an_admin_signs_it() {
    let up = Upstream::start().await;
    let f = fixture();
    let mut d = Deployment::start(&fixture_entries(&f)).await;
    let key_of = |role: &str| f["keys"][role]["key"].as_str().unwrap().to_string();
    let id_of = |role: &str| f["keys"][role]["id"].as_str().unwrap().to_string();
    let (exec, gh, ro) = (key_of("executor"), key_of("gh-reader"), key_of("read-only"));
    let url = up.url("/echo");

    // Before: refused, with the fix named; the credential itself is untouched.
    let r = d.execute(&exec, "github-legacy", &url).await;
    expect_for(
        "a key stored by the previous version",
        &r,
        503,
        "record_unsigned",
    );
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("migrate-records"), "{message}");
    let r = d.execute(&d.admin.clone(), "github-legacy", &url).await;
    expect_for("the admin uses the stored credential", &r, 200, None);
    let r = d.admin_send("GET", "/v1/keys", None).await;
    expect(&r, 200, None);
    assert_eq!(r.body["keys"], json!([]));
    let unsigned = |role: &str| {
        (
            format!("key:{}", id_of(role)),
            "record_unsigned".to_string(),
        )
    };
    let mut all_keys = vec![
        unsigned("executor"),
        unsigned("gh-reader"),
        unsigned("read-only"),
    ];
    all_keys.sort();
    assert_eq!(refused(&r), all_keys);
    let r = d.admin_send("GET", "/v1/roles", None).await;
    assert_eq!(
        refused(&r),
        [("role:gh-reader".to_string(), "record_unsigned".to_string())]
    );

    // A dry run lists the four records and what each grants, and writes nothing.
    let r = d
        .admin_send(
            "POST",
            "/v1/admin/migrate-records",
            Some(&json!({"dry_run": true})),
        )
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(r.body["signed"].as_array().unwrap().len(), 4, "{}", r.text);
    assert!(r.text.contains("gh-reader") && r.text.contains("github-*"));
    let r = d.execute(&exec, "github-legacy", &url).await;
    expect_for("after a dry run", &r, 503, "record_unsigned");

    // Not with an API key, even an admin one (made now: signed).
    let (_, admin_key) = d.key("admin").await;
    let r = d
        .send("POST", "/v1/admin/migrate-records", &admin_key, None)
        .await;
    expect_for(
        "an API key runs the migration",
        &r,
        403,
        "permission_denied",
    );

    let r = d
        .admin_send("POST", "/v1/admin/migrate-records", None)
        .await;
    expect(&r, 200, None);
    assert_eq!(r.body["dry_run"], false);
    assert_eq!(r.body["signed"].as_array().unwrap().len(), 4, "{}", r.text);
    assert_eq!(r.body["already_signed"], 1, "{}", r.text);
    assert_eq!(r.body["refused"], json!([]));
    let r = d.admin_send("GET", "/v1/audit?limit=1000", None).await;
    assert!(r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "records.migrate" && e["outcome"] == "success"));

    // After: every key works as it did.
    let r = d.execute(&exec, "github-legacy", &url).await;
    expect_for("the executor key after the migration", &r, 200, None);
    let seen = up.seen().pop().unwrap();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {}", f["credential_secret"].as_str().unwrap())
    );
    let r = d.execute(&gh, "github-legacy", &url).await;
    expect_for(
        "the gh-reader key (a custom role) after the migration",
        &r,
        200,
        None,
    );
    let r = d.send("GET", "/v1/credentials", &ro, None).await;
    expect_for("the read-only key after the migration", &r, 200, None);
    let r = d.execute(&ro, "github-legacy", &url).await;
    expect_for("the read-only key executes", &r, 403, "permission_denied");
    let r = d.admin_send("GET", "/v1/keys", None).await;
    assert_eq!(r.body["keys"].as_array().unwrap().len(), 4, "{}", r.text);
    assert_eq!(r.body["refused"], json!([]));
    let r = d.admin_send("GET", "/v1/roles", None).await;
    assert_eq!(r.body["roles"].as_array().unwrap().len(), 4, "{}", r.text);

    // Once only.
    let r = d
        .admin_send("POST", "/v1/admin/migrate-records", None)
        .await;
    expect_for("a second migration", &r, 409, "records_already_signed");

    // The previous version's record of the read-only key, written back after the migration
    // (what someone with write access to the store can do): not trusted.
    let ro_record = format!("key:{}", id_of("read-only"));
    let (_, old_value, old_meta) = fixture_entries(&f)
        .into_iter()
        .find(|(k, _, _)| *k == ro_record)
        .unwrap();
    d.put_raw(&ro_record, &old_value, old_meta).await;
    let r = d.send("GET", "/v1/credentials", &ro, None).await;
    expect_for(
        "an unsigned record written after the migration",
        &r,
        401,
        "invalid_api_key",
    );
    assert!(d
        .refusals_of(&ro_record)
        .await
        .iter()
        .any(|e| e["code"] == "record_tampered"));
    let r = d
        .admin_send("POST", "/v1/admin/migrate-records", None)
        .await;
    expect_for(
        "signing it by migrating again",
        &r,
        409,
        "records_already_signed",
    );
}

/// `vultrino sync --from <backend>` into the file store `data`: (success, stderr).
async fn sync_from(d: &Deployment, data: &std::path::Path) -> (bool, String) {
    let out = crate::support::vultrino_cmd(Some(data))
        .args(["sync", "--from", &d.server.base])
        .env("VULTRINO_MASTER_KEY", TEST_MASTER_KEY)
        .env("VULTRINO_SYNC_TOKEN", &d.admin)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The keys of the file store `data` under `prefix`.
async fn stored_keys(data: &std::path::Path, prefix: &str) -> Vec<String> {
    let clock = Arc::new(vultrino_local::clock::SystemClock::new());
    let kv = vultrino_local::file_kv::FileKv::open(&data.join("store"), clock).unwrap();
    let page = kv
        .list(vultrino_core::ports::ListOptions {
            prefix: Some(prefix.into()),
            cursor: None,
            limit: None,
        })
        .await
        .unwrap();
    page.keys.into_iter().map(|k| k.name).collect()
}

/// A sync checks every key and role record of the export as every read does, before it writes
/// anything: an unsigned one (a source that has not signed its records) or a tampered one stops
/// it with a clear message, nothing of the export is written, and the refusal is audited in the
/// local store. Once the source's records are signed, the sync goes through.
#[tokio::test]
async fn sync_refuses_unsigned_or_tampered_key_and_role_records_and_writes_nothing() {
    let f = fixture();
    let mut d = Deployment::start(&fixture_entries(&f)).await;
    let tmp = tempfile::tempdir().unwrap();

    let data = tmp.path().join("unsigned");
    let (ok, stderr) = sync_from(&d, &data).await;
    assert!(!ok, "a sync of unsigned records went through: {stderr}");
    assert!(
        stderr.contains("not signed") && stderr.contains("migrate-records"),
        "{stderr}"
    );
    for prefix in ["sys:keyring", "cred:", "key:", "role:"] {
        assert_eq!(
            stored_keys(&data, prefix).await,
            Vec::<String>::new(),
            "{prefix}"
        );
    }
    assert_eq!(stored_keys(&data, "audit:").await.len(), 1);

    let r = d
        .admin_send("POST", "/v1/admin/migrate-records", None)
        .await;
    expect(&r, 200, None);
    let data = tmp.path().join("signed");
    let (ok, stderr) = sync_from(&d, &data).await;
    assert!(ok, "the sync of signed records failed: {stderr}");
    assert_eq!(stored_keys(&data, "key:").await.len(), 3);

    d.edit_raw("role:gh-reader", |v| v["scopes"] = json!(["*"]))
        .await;
    let data = tmp.path().join("tampered");
    let (ok, stderr) = sync_from(&d, &data).await;
    assert!(!ok, "a sync of a tampered role went through: {stderr}");
    assert!(
        stderr.contains("role:gh-reader") && stderr.contains("integrity"),
        "{stderr}"
    );
    assert_eq!(stored_keys(&data, "key:").await, Vec::<String>::new());
}
