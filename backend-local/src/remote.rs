//! The management CLI talking to a running server: which server, how the CLI authenticates to
//! it, and the HTTP calls ([decisions 0072–0074](../../docs/decisions/)).
//!
//! # Which server (decision 0072)
//! In order: `--server URL` / `VULTRINO_SERVER`; else the server of the data directory, found
//! through the file `vultrino serve` writes there ([`SERVER_FILE`], `{url, pid}`, 0600) once it
//! listens, keeps locked while it runs and removes when it stops — trusted only while that lock
//! is held, so the file a `kill -9` leaves behind is ignored, also while another process holds
//! the store; else no server, and the command opens the store here as it
//! always did. A URL must be https, or http to a loopback address
//! ([`crate::mcp_stdio::server_base`], the rule of `mcp --server` and `sync --from`), checked
//! before any connection.
//!
//! # How the CLI authenticates (decision 0073)
//! `VULTRINO_API_KEY` (an API key: what its role allows), else the session of `vultrino login`,
//! kept in `$XDG_CONFIG_HOME/vultrino/sessions/` (or `~/.config/vultrino/sessions/`; directories
//! 0700, files 0600), one file per server URL. No key and no session: an error that says to run
//! `vultrino login` — never a fallback to opening the store while a server runs. The session
//! token is never printed, logged or shown by `Debug`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::setup;

/// The file in the data directory that names the running server's URL.
pub const SERVER_FILE: &str = "server.json";

/// How long one call to the server may take (an execute waits for its upstream: the server's
/// default fetch timeout is 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest reply the CLI reads from a server (the largest real one, a page of a list or an
/// execute's scrubbed upstream reply, is far below): a hostile server cannot make it hold more.
const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// What `vultrino serve` writes into [`SERVER_FILE`].
#[derive(Serialize, Deserialize)]
struct ServerFile {
    url: String,
    pid: u32,
}

/// The URL a client on this machine reaches a server listening on `addr` at: an unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The server's entry in its data directory: written once it listens, held under an exclusive
/// lock for as long as the server runs, removed when dropped (at a graceful stop). A file left
/// by a killed server is harmless: its lock died with the server, and readers trust the file
/// only while it is locked.
pub struct Advertised {
    path: PathBuf,
    /// The open file whose lock says "this server still runs".
    _held: std::fs::File,
}

impl Advertised {
    /// Write `<data_dir>/server.json` (0600, replaced atomically) naming `addr`, locked before
    /// it takes its name: no reader ever sees it unlocked while this server runs.
    pub fn write(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<Advertised> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join(SERVER_FILE);
        let tmp = data_dir.join(format!("{SERVER_FILE}.tmp"));
        let text = serde_json::to_vec(&ServerFile {
            url: local_url(addr),
            pid: std::process::id(),
        })?;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
        file.write_all(&text)?;
        file.sync_all()?;
        file.try_lock()
            .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        if let Ok(d) = std::fs::File::open(data_dir) {
            let _ = d.sync_all();
        }
        Ok(Advertised { path, _held: file })
    }
}

impl Drop for Advertised {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The URL of the server running on `data_dir`, if one does: its [`SERVER_FILE`] exists and is
/// locked by the server that wrote it (and the store is locked). A file that is not locked is
/// stale (a server killed with SIGKILL) and is ignored — also while another process (`vultrino
/// mcp --direct`, a direct command) holds the store: whatever listens at the dead server's port
/// now is no Vultrino server, and must get no token, key or password. So is a file this user may
/// not read.
pub fn discover(data_dir: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(data_dir.join(SERVER_FILE)).ok()?;
    if !matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    ) {
        return None;
    }
    if !crate::file_kv::FileKv::is_locked(&data_dir.join(setup::STORE_DIR)) {
        return None;
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text).ok()?;
    let file: ServerFile = serde_json::from_slice(&text).ok()?;
    Some(file.url)
}

/// Where a management command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through the HTTP API of the server at this base URL (no trailing slash).
    Server(String),
    /// No server: open the store in this process.
    Direct,
}

/// Choose the server: `server` (the flag or `VULTRINO_SERVER`), else the data directory's
/// running server (file stores only), else [`Route::Direct`]. A URL that is neither https nor
/// loopback http is refused here, before any connection.
pub fn route(server: Option<&str>, data_dir: &Path, file_store: bool) -> anyhow::Result<Route> {
    if let Some(s) = server.filter(|s| !s.trim().is_empty()) {
        return Ok(Route::Server(crate::mcp_stdio::server_base(s)?));
    }
    if file_store {
        if let Some(url) = discover(data_dir) {
            let base = advertised_base(&url).map_err(|e| {
                anyhow::anyhow!(
                    "the server running on {} names {} in its {SERVER_FILE}, which the CLI may \
                     not use ({e}); give the server's URL with --server / VULTRINO_SERVER",
                    data_dir.display(),
                    printable(&url)
                )
            })?;
            return Ok(Route::Server(base));
        }
    }
    Ok(Route::Direct)
}

/// The base URL of a [`SERVER_FILE`]'s `url`: only what `serve` writes there ([`local_url`]) —
/// `http://` to a loopback IP address. Anything else (an https URL of another host, a name) was
/// not written by a server on this data directory and gets no password, token or key.
fn advertised_base(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
    let loopback_ip = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        _ => false,
    };
    if parsed.scheme() != "http" || !loopback_ip {
        anyhow::bail!("a local server is reached at http:// and a loopback IP address");
    }
    crate::mcp_stdio::server_base(url)
}

/// The directory of the CLI's sessions: `$XDG_CONFIG_HOME/vultrino/sessions`, else
/// `~/.config/vultrino/sessions`.
pub fn sessions_dir() -> anyhow::Result<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the session")
        })?;
    Ok(config.join("vultrino").join("sessions"))
}

/// The session file of the server at `base`: named by a hash of the URL, so two servers never
/// share one.
pub fn session_path(base: &str) -> anyhow::Result<PathBuf> {
    Ok(sessions_dir()?.join(session_file_name(base)))
}

/// `<hex of the first 16 bytes of SHA-256(base)>.json`.
fn session_file_name(base: &str) -> String {
    let digest = Sha256::digest(base.as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}.json")
}

/// A stored admin session. `Debug` never shows the token.
#[derive(Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub user: String,
    #[serde(with = "wiped")]
    pub token: Zeroizing<String>,
    pub expires_at: u64,
}

/// Serde for a token held in a [`Zeroizing`] string.
mod wiped {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(v: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
        String::deserialize(d).map(Zeroizing::new)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Session {
    /// Keep the session (directories 0700, the file 0600, replaced atomically).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = session_path(&self.server)?;
        let dir = sessions_dir()?;
        if let Some(parent) = dir.parent() {
            setup::ensure_private_dir(parent)?;
        }
        setup::ensure_private_dir(&dir)?;
        let text = Zeroizing::new(serde_json::to_vec(self)?);
        setup::replace_private_file(&path, &text)?;
        Ok(path)
    }

    /// The session kept for `base`, if any (`None` also for a file that does not parse).
    pub fn load(base: &str) -> anyhow::Result<Option<Session>> {
        // No config home (neither variable set): nobody can have logged in.
        let Ok(path) = session_path(base) else {
            return Ok(None);
        };
        let text = match std::fs::read(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read the session file {}: {e}", path.display()),
        };
        Ok(serde_json::from_slice::<Session>(&text)
            .ok()
            .filter(|s| s.server == base))
    }

    /// Delete the session kept for `base`; whether there was one.
    pub fn forget(base: &str) -> anyhow::Result<bool> {
        let path = session_path(base)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => anyhow::bail!("cannot delete the session file {}: {e}", path.display()),
        }
    }
}

/// How the CLI authenticates to the server. `Debug` never shows the secret.
pub enum Auth {
    /// `VULTRINO_API_KEY`.
    Key(Zeroizing<String>),
    /// The session of `vultrino login`.
    Session(Zeroizing<String>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::Key(_) => "Auth::Key(<redacted>)",
            Auth::Session(_) => "Auth::Session(<redacted>)",
        })
    }
}

/// An HTTP client for the server's base URL.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .build()?)
}

/// The innermost cause of a transport error ("Connection refused", a timeout).
fn cause(e: &reqwest::Error) -> String {
    let mut c: &dyn std::error::Error = e;
    while let Some(inner) = c.source() {
        c = inner;
    }
    printable(&c.to_string())
}

fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the Vultrino server at {base} ({}): start it (`vultrino serve`), or give \
         its URL with --server / VULTRINO_SERVER",
        cause(e)
    )
}

/// `text` safe to print to a terminal: control characters (escape sequences, BEL, CR, C1 —
/// what a hostile server could send to retitle the window, clear or rewrite the screen) are
/// shown escaped (`\u{1b}`) instead of sent raw.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `code: message` of an API error body (printable), or the status alone.
fn api_error(status: reqwest::StatusCode, body: &Value) -> String {
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => printable(&format!("{code}: {message}")),
        _ => format!("HTTP {status}"),
    }
}

/// The body of `resp`, at most [`MAX_REPLY_BYTES`] (a declared larger length is refused before
/// any of it is read). Wiped when dropped: it may hold a secret (a new key, a session token).
async fn read_reply(base: &str, mut resp: reqwest::Response) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let too_large = || {
        anyhow::anyhow!(
            "the reply of {base} is too large (over {} MiB): refused",
            MAX_REPLY_BYTES / (1024 * 1024)
        )
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(base, &e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A connection to the server at `base`, authenticated as `auth`.
#[derive(Debug)]
pub struct Remote {
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

impl Remote {
    /// Authenticate with `VULTRINO_API_KEY` if it is set, else with the session of
    /// `vultrino login` for `base`; neither is an error that says to log in.
    pub fn connect(base: String) -> anyhow::Result<Remote> {
        let key_set = std::env::var("VULTRINO_API_KEY").is_ok_and(|k| !k.trim().is_empty());
        let auth = if key_set {
            Auth::Key(crate::mcp_stdio::api_key_from_env()?)
        } else {
            match Session::load(&base)? {
                Some(s) => Auth::Session(s.token),
                None => anyhow::bail!(
                    "not logged in to the Vultrino server at {base}: run `vultrino login` first \
                     (or set VULTRINO_API_KEY to an API key). While a server runs, management \
                     commands go through it and never open the store."
                ),
            }
        };
        Ok(Remote {
            base,
            auth,
            http: http_client()?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with `body` (JSON); the reply's JSON (`Value::Null` for 204). A refusal
    /// becomes an error naming what to do: log in again (401 on a session), the key's role (403).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let token = match &self.auth {
            Auth::Key(k) | Auth::Session(k) => k.as_str(),
        };
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("accept", "application/json");
        if let Some(b) = body {
            // The body may hold a secret (a credential's): it goes to this server only (https or
            // loopback, checked by `route`) and is neither printed nor logged.
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b)?);
        }
        let resp = rb.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status();
        let text = read_reply(&self.base, resp).await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&text) {
                Ok(v) => v,
                Err(_) if status.is_success() => anyhow::bail!(
                    "{} answered HTTP {status} with a reply that is not JSON: is it a Vultrino \
                     server?",
                    self.base
                ),
                Err(_) => Value::Null,
            }
        };
        if status.is_success() {
            return Ok(value);
        }
        let detail = api_error(status, &value);
        match (status.as_u16(), &self.auth) {
            (401, Auth::Session(_)) => anyhow::bail!(
                "your session with {} has ended ({detail}): log in again with `vultrino login`",
                self.base
            ),
            (401, Auth::Key(_)) => anyhow::bail!(
                "the server at {} refused VULTRINO_API_KEY ({detail})",
                self.base
            ),
            (403, Auth::Key(_)) => anyhow::bail!(
                "refused (403): the role of VULTRINO_API_KEY does not allow this ({detail})"
            ),
            (403, Auth::Session(_)) => anyhow::bail!("refused (403): {detail}"),
            _ => anyhow::bail!("{detail}"),
        }
    }
}

/// `vultrino login`: POST /login as a first-party client (JSON, no `Origin`), and keep the
/// session for `base`. Returns where it is kept.
pub async fn login(base: &str, user: &str, password: &str) -> anyhow::Result<(Session, PathBuf)> {
    let http = http_client()?;
    // JSON with no `Origin`: what /login takes from a first-party client (decision 0044).
    let body = serde_json::to_vec(&json!({"username": user, "password": password}))?;
    let resp = http
        .post(format!("{base}/login"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable(base, &e))?;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(printable);
    let text = read_reply(base, resp).await?;
    let value: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = api_error(status, &value);
        match status.as_u16() {
            401 => anyhow::bail!("login refused: wrong user name or password ({detail})"),
            429 => anyhow::bail!(
                "login refused: too many attempts, try again in {} seconds ({detail})",
                retry.as_deref().unwrap_or("some")
            ),
            _ => anyhow::bail!("login refused by {base}: {detail}"),
        }
    }
    let token = value["token"]
        .as_str()
        .filter(|t| t.starts_with("vs_"))
        .ok_or_else(|| anyhow::anyhow!("{base} answered the login without a session token"))?;
    let session = Session {
        server: base.to_string(),
        user: user.to_string(),
        token: Zeroizing::new(token.to_string()),
        expires_at: value["expires_at"].as_u64().unwrap_or(0),
    };
    drop(value);
    let path = session.save()?;
    Ok((session, path))
}

/// `vultrino logout`: end the session on the server (POST /logout), then delete its file — also
/// when the server no longer knows it. Returns a line for the user.
pub async fn logout(base: &str) -> anyhow::Result<String> {
    let Some(session) = Session::load(base)? else {
        return Ok(format!("not logged in to {base}"));
    };
    let http = http_client()?;
    let sent = http
        .post(format!("{base}/logout"))
        .bearer_auth(session.token.as_str())
        .send()
        .await;
    // The file goes in every case: a token kept on disk is a liability (any process of this
    // user can read it), and a session the server could not be told about ends on its own.
    Session::forget(base)?;
    match sent {
        Ok(r) if r.status().is_success() => Ok(format!("logged out of {base}")),
        Ok(r) if r.status().as_u16() == 401 => Ok(format!(
            "logged out of {base} (the server had already ended the session)"
        )),
        Ok(r) => anyhow::bail!(
            "{base} refused the logout (HTTP {}); the session file is deleted, but the session \
             stays valid on the server until it expires",
            r.status()
        ),
        Err(e) => anyhow::bail!(
            "{}; the session file is deleted, but the session stays valid on the server until it \
             expires (30 minutes unused by default)",
            unreachable(base, &e)
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let token = "vs_secret-token-value.1.tag";
        let s = Session {
            server: "http://127.0.0.1:7879".into(),
            user: "admin".into(),
            token: Zeroizing::new(token.into()),
            expires_at: 1,
        };
        assert!(!format!("{s:?}").contains(token));
        assert!(!format!("{:?}", Auth::Session(Zeroizing::new(token.into()))).contains(token));
        assert!(!format!("{:?}", Auth::Key(Zeroizing::new("vk_a_b".into()))).contains("vk_a_b"));
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let url = |a: &str| local_url(a.parse().unwrap());
        assert_eq!(url("0.0.0.0:7879"), "http://127.0.0.1:7879");
        assert_eq!(url("[::]:7879"), "http://[::1]:7879");
        assert_eq!(url("127.0.0.1:1234"), "http://127.0.0.1:1234");
    }

    #[test]
    fn a_given_url_is_checked_before_anything_else() {
        let dir = Path::new("/nonexistent-vultrino-data");
        assert!(route(Some("http://10.0.0.1:7879"), dir, true).is_err());
        assert_eq!(
            route(Some("http://127.0.0.1:7879/"), dir, true).unwrap(),
            Route::Server("http://127.0.0.1:7879".into())
        );
        assert_eq!(route(None, dir, true).unwrap(), Route::Direct);
    }

    #[test]
    fn each_server_has_its_own_session_file() {
        let a = session_file_name("http://127.0.0.1:7879");
        assert_ne!(a, session_file_name("http://127.0.0.1:7880"));
        assert_ne!(a, session_file_name("https://vultrino.example.workers.dev"));
        assert_eq!(a, session_file_name("http://127.0.0.1:7879"));
        assert_eq!(a.len(), 32 + ".json".len());
    }
}
