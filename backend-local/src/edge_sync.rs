//! `vultrino sync --from <edge-url>`: the hybrid setup. Fetches `GET /v1/sync/export` from an
//! edge deployment (ciphertext records and keyring parameters only) and imports it into the local
//! file store with [`vultrino_core::sync::import`], which verifies the keyring against the local
//! master key, every credential envelope and every signed key and role record before writing
//! anything.
//!
//! The same master key must be configured here as on the edge (`VULTRINO_MASTER_KEY`, or the
//! data directory's `master.key`): secrets are never decrypted in transit, only re-read locally.

use std::time::Duration;

use vultrino_core::error::Code;
use vultrino_core::sync::Export;

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
    base.join("/v1/sync/export")
        .map_err(|e| anyhow::anyhow!("--from must be the edge's base URL ({e})"))
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
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?;
    let resp = client
        .get(url.clone())
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("reading the export from {url} failed: {e}"))?;
    match status.as_u16() {
        200 => {}
        401 => anyhow::bail!(
            "the edge refused the token (401): use an admin session token or an admin API key"
        ),
        403 => anyhow::bail!(
            "the token is valid but not an admin's (403): sync needs the admin permission"
        ),
        404 => anyhow::bail!("{url} was not found (404): is --from a Vultrino deployment?"),
        s => {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            anyhow::bail!("the edge answered {s}: {message}");
        }
    }
    if body.len() > MAX_EXPORT_BYTES {
        anyhow::bail!("the export is larger than {MAX_EXPORT_BYTES} bytes");
    }
    let export: Export = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the edge's export is not valid: {e}"))?;
    let kv = setup::open_kv(settings, std::sync::Arc::new(SystemClock::new()))?;
    let now = vultrino_core::ports::Clock::now_ms(&SystemClock::new());
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

    #[test]
    fn export_url_replaces_any_path() {
        let u = export_url("https://v.example.com/some/path").ok();
        assert_eq!(
            u.map(|u| u.to_string()).as_deref(),
            Some("https://v.example.com/v1/sync/export")
        );
    }
}
