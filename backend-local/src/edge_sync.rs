//! `vultrino sync --from <edge-url>`: the hybrid setup. Fetches `GET /v1/sync/export` from an
//! edge deployment (ciphertext records and keyring parameters only) and imports it into the local
//! file store with [`vultrino_core::sync::import`], which verifies the keyring against the local
//! master key, every credential envelope and every signed key and role record before writing
//! anything.
//!
//! The same master key must be configured here as on the edge (`VULTRINO_MASTER_KEY`, or the
//! data directory's `master.key`): secrets are never decrypted in transit, only re-read locally.
//!
//! `vultrino serve --sync-from <edge-url>` keeps doing it while it serves ([`LivePuller`]): a
//! pull every interval, an unchanged edge answering 304 to the export's `ETag`
//! (docs/decisions/0104-live-hybrid-sync.md).

use std::sync::Arc;
use std::time::Duration;

use vultrino_core::app::App;
use vultrino_core::error::Code;
use vultrino_core::sync::live::{LiveSync, SyncError};
use vultrino_core::sync::Export;
use zeroize::Zeroizing;

use crate::clock::SystemClock;
use crate::setup::{self, Settings, StoreKind};

/// Largest export accepted (a deployment's credentials, keys and roles; not audit).
const MAX_EXPORT_BYTES: usize = 64 * 1024 * 1024;

/// Whether a token may be sent to `url`: https, or plain http to a loopback address
/// (127.0.0.0/8, ::1, localhost: a local server or `wrangler dev`), where it never crosses a
/// network. The rule of every client in this crate that sends a token (`sync --from`,
/// `mcp --server`).
pub fn token_may_travel_to(url: &url::Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

/// The export URL for `base`; https only, except loopback addresses (a local `wrangler dev`).
pub fn export_url(base: &str) -> anyhow::Result<url::Url> {
    let base = url::Url::parse(base.trim())
        .map_err(|e| anyhow::anyhow!("--from must be the edge's base URL ({e})"))?;
    if !token_may_travel_to(&base) {
        anyhow::bail!(
            "--from must be an https:// URL (http:// only for 127.0.0.1/localhost): the admin token travels with the request"
        );
    }
    if !base.username().is_empty() || base.password().is_some() {
        anyhow::bail!(
            "--from must not carry a user or password: the edge's admin token comes from VULTRINO_SYNC_TOKEN"
        );
    }
    if base.query().is_some() || base.fragment().is_some() {
        anyhow::bail!("--from must be the edge's base URL, without a query or fragment");
    }
    base.join("/v1/sync/export")
        .map_err(|e| anyhow::anyhow!("--from must be the edge's base URL ({e})"))
}

/// Why a request for the edge's export failed: a stable code (shown in `/healthz` by the live
/// sync) and a message for people. Never holds the token.
#[derive(Debug, Clone)]
pub struct PullError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PullError {}

fn pull_error(code: &'static str, message: impl Into<String>) -> PullError {
    PullError {
        code,
        message: message.into(),
    }
}

/// What one request for the export brought.
pub enum Fetched {
    /// 304: the edge's export is still the one of `If-None-Match`.
    Unchanged,
    /// The export, its `ETag` and the size of the reply's body.
    Export {
        export: Export,
        etag: Option<String>,
        bytes: u64,
    },
}

/// The client of every request to the edge: no proxy, no redirects (the token would follow
/// them), a deadline.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// `GET <url>` (the export URL of [`export_url`]) with `token`, and `If-None-Match: etag` when
/// given. A reply that is not a valid export is an error: nothing of it is used.
pub async fn fetch(
    client: &reqwest::Client,
    url: &url::Url,
    token: &str,
    etag: Option<&str>,
) -> Result<Fetched, PullError> {
    let mut req = client.get(url.clone()).bearer_auth(token);
    if let Some(etag) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| pull_error("edge_unreachable", format!("cannot reach {url}: {e}")))?;
    let status = resp.status();
    let new_etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status.as_u16() == 304 {
        if etag.is_none() {
            return Err(pull_error(
                "invalid_export",
                "the edge answered 304 (unchanged) to a request that named no earlier export",
            ));
        }
        return Ok(Fetched::Unchanged);
    }
    // Read at most what is used: the export up to its cap, an error reply's first 64 KiB.
    let cap = if status.as_u16() == 200 {
        MAX_EXPORT_BYTES
    } else {
        MAX_ERROR_BYTES
    };
    if status.as_u16() == 200 && resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut resp = resp;
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            pull_error(
                "edge_unreachable",
                format!("reading the export from {url} failed: {e}"),
            )
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > cap {
            if status.as_u16() == 200 {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk[..cap - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    match status.as_u16() {
        200 => {}
        401 => {
            return Err(pull_error(
                "edge_refused_token",
                "the edge refused the token (401): use an admin session token or an admin API key",
            ))
        }
        403 => {
            return Err(pull_error(
                "edge_forbidden",
                "the token is valid but not an admin's (403): sync needs the admin permission",
            ))
        }
        404 => {
            return Err(pull_error(
                "edge_not_found",
                format!("{url} was not found (404): is the URL a Vultrino deployment?"),
            ))
        }
        s => {
            let message: String = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_ERROR_MESSAGE_CHARS)
                .collect();
            return Err(pull_error(
                "edge_error",
                format!("the edge answered {s}: {message}"),
            ));
        }
    }
    let export: Export = serde_json::from_slice(&body).map_err(|e| {
        pull_error(
            "invalid_export",
            format!("the edge's export is not valid: {e}"),
        )
    })?;
    Ok(Fetched::Export {
        export,
        etag: new_etag,
        bytes: body.len() as u64,
    })
}

/// An error reply of the edge is read up to this size (its message is shown, shortened).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// The edge's own error message, as shown in `/healthz` and the log, at most this long.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

fn too_large() -> PullError {
    pull_error(
        "invalid_export",
        format!("the export is larger than {MAX_EXPORT_BYTES} bytes"),
    )
}

/// Run the sync into `settings`' file store.
pub async fn sync_from(
    settings: &Settings,
    from: &str,
    token: &str,
    prune: bool,
) -> anyhow::Result<()> {
    if settings.store != StoreKind::File {
        anyhow::bail!("sync writes into the file store (--store file)");
    }
    if token.is_empty() {
        anyhow::bail!("no token: set VULTRINO_SYNC_TOKEN to an admin session token or admin API key of the edge");
    }
    let url = export_url(from)?;
    let (master, _) = setup::master_secret(settings, false).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nsync needs the SAME master key as the edge: set VULTRINO_MASTER_KEY to it"
        )
    })?;
    let export = match fetch(&client()?, &url, token, None).await? {
        Fetched::Export { export, .. } => export,
        Fetched::Unchanged => anyhow::bail!("the edge answered 304 to a request without a tag"),
    };
    let clock = std::sync::Arc::new(SystemClock::new());
    let now = vultrino_core::ports::Clock::now_ms(&*clock);
    let kv = setup::open_kv(settings, clock)?;
    let count = vultrino_core::sync::import(&*kv, &master, &export, now)
        .await
        .map_err(|e| {
            if e.code() == Code::WrongMasterKey {
                anyhow::anyhow!(
                    "{}\nthe local master key must be the edge's (VULTRINO_MASTER_KEY)",
                    e.message()
                )
            } else {
                anyhow::anyhow!("{}", e.message())
            }
        })?;
    // Remember which records came from this edge, so a later `serve --sync-from` deletes the
    // ones the edge deletes (and keeps them read-only meanwhile).
    vultrino_core::sync::live::remember_import(&*kv, &url.origin().ascii_serialization(), &export)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    eprintln!(
        "imported {count} records from {} into {}",
        url.origin().ascii_serialization(),
        settings.data_dir.display()
    );
    if prune {
        let gone = vultrino_core::sync::prune_missing(&*kv, &export)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        eprintln!(
            "removed {} local records the edge does not have{}{}",
            gone.len(),
            if gone.is_empty() { "" } else { ": " },
            gone.join(", ")
        );
    }
    Ok(())
}

/// The live sync of `serve --sync-from` (and `mcp --direct --sync-from`): the edge's export URL,
/// the token, and the state the App shares (docs/decisions/0104-live-hybrid-sync.md).
pub struct LivePuller {
    url: url::Url,
    token: Zeroizing<String>,
    pub live: Arc<LiveSync>,
    /// The one clock of every reading the pulls take (a [`SystemClock`] never reads earlier
    /// than a reading it gave: a fresh one per reading would not keep that).
    clock: Arc<SystemClock>,
}

impl LivePuller {
    /// Prepare the live sync from `from` every `interval` into `settings`' file store. The token
    /// comes from VULTRINO_SYNC_TOKEN (no prompt: a server runs unattended). A store that has
    /// no keyring yet gets its first copy here, with [`sync_from`], before the server opens it
    /// (opening it would make a keyring of its own, which the edge's records are not sealed
    /// under); when that first copy fails, the server does not start.
    pub async fn prepare(
        settings: &Settings,
        from: &str,
        interval: Duration,
    ) -> anyhow::Result<LivePuller> {
        if settings.store != StoreKind::File {
            anyhow::bail!("--sync-from keeps the file store in step with the edge (--store file)");
        }
        let url = export_url(from)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("--from", "--sync-from")))?;
        let token = match std::env::var("VULTRINO_SYNC_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Zeroizing::new(t.trim().to_string()),
            _ => anyhow::bail!(
                "--sync-from needs VULTRINO_SYNC_TOKEN: an admin API key of the edge (a session \
                 token works too, until the session ends)"
            ),
        };
        let clock = Arc::new(SystemClock::new());
        let (has_keyring, has_state) = {
            let kv = setup::open_kv(settings, clock.clone())?;
            let found = |key: &'static str| {
                let kv = kv.clone();
                async move {
                    kv.get(key)
                        .await
                        .map(|v| v.is_some())
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))
                }
            };
            (
                found(vultrino_core::keyring::KEYRING_KEY).await?,
                found(vultrino_core::sync::live::STATE_KEY).await?,
            )
        };
        if has_keyring && !has_state {
            // Records an older one-shot sync copied carry no mark of the edge: the live sync
            // must treat them as local (it never deletes those). Say how to mark them.
            tracing::warn!(
                "this store holds records but no sync state: records copied by an earlier                  one-shot sync are treated as local (never deleted or revoked by the live sync);                  stop the server and run `vultrino sync --from <edge-url>` once to mark them as                  the edge's"
            );
        }
        if !has_keyring {
            sync_from(settings, from, &token, false)
                .await
                .map_err(|e| anyhow::anyhow!("the first copy from the edge failed: {e:#}"))?;
        }
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let live = Arc::new(LiveSync::new(
            url.origin().ascii_serialization(),
            interval_ms,
        ));
        Ok(LivePuller {
            url,
            token,
            live,
            clock,
        })
    }

    /// Pull forever on the current runtime: at once, then every interval, with backoff after
    /// failures ([`LiveSync::next_wait_ms`]). A failure applies nothing: the store keeps its last
    /// good copy.
    pub fn spawn(self, app: Arc<App>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let client = match client() {
                Ok(c) => c,
                Err(e) => {
                    let now = vultrino_core::ports::Clock::now_ms(&*self.clock);
                    self.live.failed(
                        now,
                        SyncError {
                            code: "internal".into(),
                            message: format!("no HTTP client: {e}"),
                        },
                    );
                    return;
                }
            };
            loop {
                let wait = self.pull_once(&app, &client).await;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        })
    }

    /// One pull; returns how long to wait before the next.
    async fn pull_once(&self, app: &App, client: &reqwest::Client) -> u64 {
        let now = || vultrino_core::ports::Clock::now_ms(&*self.clock);
        let etag = self.live.etag();
        let failed = |code: String, message: String| {
            tracing::warn!(edge = %self.live.edge(), %code, %message, "sync: pull failed; serving the last good copy");
            self.live.failed(now(), SyncError { code, message })
        };
        match fetch(client, &self.url, &self.token, etag.as_deref()).await {
            Ok(Fetched::Unchanged) => {
                self.live.unchanged(now());
                self.live.interval_ms()
            }
            Ok(Fetched::Export {
                export,
                etag,
                bytes,
            }) => match app.apply_sync_pull(&export, etag, bytes).await {
                Ok(change) => {
                    if !change.written.is_empty() || !change.deleted.is_empty() {
                        tracing::info!(
                            edge = %self.live.edge(),
                            written = ?change.written,
                            deleted = ?change.deleted,
                            "sync: applied the edge's changes"
                        );
                    }
                    self.live.interval_ms()
                }
                Err(e) => failed(e.code().as_str().to_string(), e.message().to_string()),
            },
            Err(e) => failed(e.code.to_string(), e.message),
        }
    }
}

/// Parse `--sync-interval`: `30s`, `5m`, `1h`, or a bare number of seconds; 1 s to 24 h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| "must be a number of seconds, or a number with s, m or h (60s, 5m)")?;
    let secs = match unit.trim() {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or("must be a number of seconds, or a number with s, m or h (60s, 5m)")?;
    if !(1..=86_400).contains(&secs) {
        return Err("must be from 1s to 24h".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_url_needs_https_except_on_loopback() {
        assert!(export_url("https://v.example.workers.dev").is_ok());
        assert!(export_url("http://127.0.0.1:8787").is_ok());
        assert!(export_url("http://localhost:8787/").is_ok());
        assert!(export_url("http://v.example.com").is_err());
        assert!(export_url("ftp://v.example.com").is_err());
        assert!(export_url("not a url").is_err());
    }

    /// The base URL carries no credentials and no query: the token is VULTRINO_SYNC_TOKEN's,
    /// and the URL shows in `/healthz` and the log (review of 2026-12-06, L3).
    #[test]
    fn export_url_refuses_a_user_a_password_a_query_or_a_fragment() {
        for bad in [
            "https://admin:pw@v.example.com",
            "https://admin@v.example.com",
            "https://v.example.com/?token=x",
            "https://v.example.com/#x",
        ] {
            assert!(export_url(bad).is_err(), "{bad}");
        }
    }

    /// A loopback "edge" that answers every connection with `head` and then `body_len` bytes
    /// (in 1 MiB writes, until the reader stops); returns its base URL.
    async fn fake_edge(head: &'static str, body_len: usize) -> url::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 1 << 20];
                    let mut left = body_len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        export_url(&format!("http://{addr}")).expect("test setup")
    }

    /// An export over the cap is refused by its announced length before a byte of it is read,
    /// and, without a length, as soon as the cap is passed: a hostile edge cannot fill memory
    /// (review of 2026-12-06, L1).
    #[tokio::test]
    async fn an_export_over_the_cap_is_refused_without_reading_it_whole() {
        let announced = fake_edge(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n",
            0,
        )
        .await;
        let e = fetch(&client().expect("test setup"), &announced, "t", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, "invalid_export", "{}", e.message);
        let unannounced = fake_edge(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            MAX_EXPORT_BYTES + (2 << 20),
        )
        .await;
        let e = fetch(&client().expect("test setup"), &unannounced, "t", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, "invalid_export", "{}", e.message);
    }

    /// An edge's error message is shown shortened and without control characters (it lands in
    /// `/healthz` and in a log line on every pull).
    #[tokio::test]
    async fn an_edge_error_message_is_shortened() {
        let long = Box::leak(
            format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{{\"error\":{{\"message\":\"{}\\n{}\"}}}}",
                "x".repeat(10_000),
                "y"
            )
            .into_boxed_str(),
        );
        let edge = fake_edge(long, 0).await;
        let e = fetch(&client().expect("test setup"), &edge, "t", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, "edge_error");
        assert!(e.message.len() < 400, "{} bytes", e.message.len());
        assert!(!e.message.contains('\n'));
    }

    /// A 304 is an answer to `If-None-Match` only: to a pull that named no export it is not a
    /// success with nothing to apply (review of 2026-12-06, L4).
    #[tokio::test]
    async fn a_304_to_a_pull_without_a_tag_is_refused() {
        let edge = fake_edge("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n", 0).await;
        let e = fetch(&client().expect("test setup"), &edge, "t", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, "invalid_export", "{}", e.message);
        assert!(matches!(
            fetch(&client().expect("test setup"), &edge, "t", Some("\"x\"")).await,
            Ok(Fetched::Unchanged)
        ));
    }

    #[test]
    fn sync_interval_takes_seconds_minutes_and_hours() {
        assert_eq!(parse_interval("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["0s", "25h", "1d", "s", "", "-1s", "1.5s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_url_replaces_any_path() {
        let u = export_url("https://v.example.com/some/path").ok();
        assert_eq!(
            u.map(|u| u.to_string()).as_deref(),
            Some("https://v.example.com/v1/sync/export")
        );
    }
}
