//! Findings of white-box security reviews, each as a property a user relies on. Every test here runs an `App` in-process on the memory stores;
//! the upstream is a fake `Fetcher` (nothing leaves the process), except for
//! `a_gzip_transfer_coding_never_reaches_the_agent_unscrubbed`, which runs the real local client
//! against a raw upstream on 127.0.0.1 (run it inside `unshare -n`, as `scripts/test.sh` does).

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use vultrino_core::app::{App, Config, Ports};
use vultrino_core::auth::Principal;
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::MasterSecret;
use vultrino_core::error::{Code, Result};
use vultrino_core::execute::{ExecuteRequest, ExecuteResponse};
use vultrino_core::policy::Policy;
use vultrino_core::ports::{
    FetchOptions, Fetcher, KvEntry, KvStore, ListOptions, ListPage, ManualClock, PutOptions,
};
use vultrino_local::memory_kv::MemoryKv;
use vultrino_local::memory_sessions::MemorySessions;

const SECRET: &str = "sk-live-Rv83kQ2wZ7pL";

/// One deployment in this process.
struct Env {
    app: Arc<App>,
}

async fn env_with(fetcher: Arc<dyn Fetcher>, kv: Arc<dyn KvStore>, clock: Arc<ManualClock>) -> Env {
    let (master, _) = MasterSecret::generate_raw();
    let ports = Ports {
        kv,
        sessions: Arc::new(MemorySessions::new()),
        fetcher,
        clock,
        audit_sink: None,
        audit: None,
    };
    let config = Config {
        allow_loopback_upstreams: true,
        ..Config::default()
    };
    let app = Arc::new(App::open(config, ports, &master).await.unwrap());
    Env { app }
}

async fn env(fetcher: Arc<dyn Fetcher>) -> Env {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let kv = Arc::new(MemoryKv::new(clock.clone()));
    env_with(fetcher, kv, clock).await
}

fn admin() -> Principal {
    Principal::Admin {
        subject: "admin".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

fn api_key_credential(alias: &str, hosts: &[&str]) -> NewCredential {
    NewCredential {
        base_url: None,
        alias: alias.into(),
        kind: "api_key".into(),
        description: None,
        data: serde_json::json!({"key": SECRET}),
        policy: Policy {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            methods: None,
            path_prefixes: None,
            rate_limit: None,
            pass_cookies: false,
            require_approval: None,
        },
    }
}

fn get(alias: &str, url: &str) -> ExecuteRequest {
    ExecuteRequest {
        credential: alias.into(),
        method: "GET".into(),
        url: url.into(),
        ..ExecuteRequest::default()
    }
}

/// What the fake upstreams send back: the `Authorization` header they received, several times,
/// so that it compresses (a body gzip leaves in a stored block would carry the secret verbatim,
/// and the scrubber would see it).
fn echo_body(auth: &str) -> Vec<u8> {
    let echoes: Vec<String> = (0..16).map(|i| format!("\"{i}\":\"{auth}\"")).collect();
    format!("{{{}}}", echoes.join(",")).into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The agent's view of an execute reply: the body bytes, and those bytes gunzipped when they
/// are gzip. The secret must be in neither.
fn assert_secret_not_reachable(reply: &ExecuteResponse) {
    let bytes = if reply.body_encoding == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(&reply.body)
            .unwrap()
    } else {
        reply.body.as_bytes().to_vec()
    };
    let mut inflated = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut inflated);
    for (what, b) in [("body", &bytes), ("gunzipped body", &inflated)] {
        let text = String::from_utf8_lossy(b);
        assert!(
            !text.contains(SECRET),
            "the secret reached the agent in the {what}: {text}"
        );
    }
}

// ---- encoded replies ------------------------------------------------------------------------

/// Answers every request with the request's `Authorization` gzip-compressed, under two
/// `Content-Encoding` headers: `identity` first, then `gzip`.
struct TwoEncodings;

#[async_trait::async_trait]
impl Fetcher for TwoEncodings {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        _options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let auth = request.headers()[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        let body = gzip(&echo_body(&auth));
        let mut r = http::Response::new(Bytes::from(body));
        let h = r.headers_mut();
        h.append(http::header::CONTENT_ENCODING, "identity".parse().unwrap());
        h.append(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        Ok(r)
    }
}

/// An encoded body is refused whatever the order of its `Content-Encoding` headers: the core
/// looks at the first one only, so `identity` then `gzip` passes compressed bytes the scrubber
/// cannot see into (the local client keeps repeated headers apart).
#[tokio::test]
async fn a_second_content_encoding_is_not_hidden_behind_identity() {
    let e = env(Arc::new(TwoEncodings)).await;
    e.app
        .credentials()
        .create(&admin(), api_key_credential("github", &["api.github.com"]))
        .await
        .unwrap();
    let out = e
        .app
        .execute(&admin(), get("github", "https://api.github.com/user"))
        .await;
    match out {
        Err(err) => assert_eq!(err.code(), Code::UpstreamEncoded),
        Ok(reply) => {
            assert_secret_not_reachable(&reply);
            panic!("an encoded reply was passed on: {reply:?}");
        }
    }
}

/// A raw upstream on 127.0.0.1 that answers any request with its `Authorization` header,
/// gzip-compressed as a TRANSFER coding (`Transfer-Encoding: gzip, chunked`), no
/// `Content-Encoding`.
async fn gzip_transfer_upstream() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body = gzip(&echo_body(&auth));
                let mut reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
                    .to_vec();
                reply.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                reply.extend_from_slice(&body);
                reply.extend_from_slice(b"\r\n0\r\n\r\n");
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// Compression as a transfer coding hides the secret from the scrubber just as a content coding
/// does: the reply must be refused (or decoded and scrubbed), never passed on as compressed
/// bytes. The local client decodes `chunked` only, and the core drops `Transfer-Encoding` from
/// the reply and checks `Content-Encoding` only.
#[tokio::test]
async fn a_gzip_transfer_coding_never_reaches_the_agent_unscrubbed() {
    let fetcher = Arc::new(vultrino_local::fetcher::HttpFetcher::new().unwrap());
    let e = env(fetcher).await;
    let port = gzip_transfer_upstream().await;
    e.app
        .credentials()
        .create(&admin(), api_key_credential("local", &["127.0.0.1"]))
        .await
        .unwrap();
    let out = e
        .app
        .execute(&admin(), get("local", &format!("http://127.0.0.1:{port}/")))
        .await;
    if let Ok(reply) = out {
        assert_secret_not_reachable(&reply);
    }
}

// ---- the opened-credential cache ----------------------------------------------------------

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

/// A store whose first read of `cred:github`, once armed, returns what it read only after the
/// test releases it: an execute that read the credential just before a delete finishes after it.
struct GatedKv {
    inner: Arc<MemoryKv>,
    armed: AtomicBool,
    read: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl KvStore for GatedKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.inner.get(key).await;
        if key == "cred:github" && self.armed.swap(false, Ordering::SeqCst) {
            self.read.notify_one();
            self.release.notified().await;
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

/// A delete removes the credential's decrypted copy from memory; an execute that read the
/// record just before the delete must not put the copy back afterwards, where it would stay
/// until the alias is next used (for a deleted alias, possibly never).
#[tokio::test]
async fn a_delete_during_an_execute_leaves_no_decrypted_copy() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mem = Arc::new(MemoryKv::new(clock.clone()));
    let gated = Arc::new(GatedKv {
        inner: mem.clone(),
        armed: AtomicBool::new(false),
        read: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let e = env_with(Arc::new(Recorder::default()), gated.clone(), clock).await;
    e.app
        .credentials()
        .create(&admin(), api_key_credential("github", &["api.github.com"]))
        .await
        .unwrap();
    gated.armed.store(true, Ordering::SeqCst);
    let app = e.app.clone();
    let execute = tokio::spawn(async move {
        app.execute(&admin(), get("github", "https://api.github.com/user"))
            .await
            .map(|r| r.status)
    });
    gated.read.notified().await;
    e.app
        .credentials()
        .delete(&admin(), "github")
        .await
        .unwrap();
    gated.release.notify_one();
    let _ = execute.await.unwrap();
    assert_eq!(
        e.app.opened_aliases(),
        Vec::<String>::new(),
        "the deleted credential's secrets are kept in memory"
    );
}

/// Review of issue 18: the audit event a refused `vultrino sync` import leaves in the local store
/// is capped like every other (an export is input: its record names are as long as its source
/// makes them).
#[tokio::test]
async fn a_refused_sync_import_leaves_a_capped_audit_event() {
    use vultrino_core::audit::MAX_EVENT_JSON_BYTES;
    use vultrino_core::crypto::Keys;
    use vultrino_core::sync::{import, Export, ExportRecord};

    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let kv = MemoryKv::new(clock);
    let (master, _) = MasterSecret::generate_raw();
    let (_, keyring) = Keys::create(&master, 1, 0).unwrap();
    let export = Export {
        keyring,
        records: vec![ExportRecord {
            key: format!("key:{}", "\u{1}".repeat(300_000)),
            value: "{}".into(),
            metadata: None,
        }],
    };
    let refused = import(&kv, &master, &export, 1_700_000_000_000).await;
    assert!(refused.is_err());
    let page = kv
        .list(ListOptions {
            prefix: Some("audit:".into()),
            cursor: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 1);
    let event = kv.get(&page.keys[0].name).await.unwrap().unwrap();
    assert!(event.len() <= MAX_EVENT_JSON_BYTES, "{} bytes", event.len());
}
