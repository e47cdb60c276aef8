//! Turning settings into a running [`App`]: data directory, master key, admin password, stores.
//!
//! Zero-config first run (`vultrino serve` with nothing set): the data directory is created
//! (0700), a random 32-byte master key is written to `master.key` (0600), and a random admin
//! password is generated, its PBKDF2 hash written to `admin.hash` (0600), and the password itself
//! printed once. Later runs reuse both files. Environment variables override the files:
//! `VULTRINO_MASTER_KEY` (or `ENCRYPTION_KEY`), `VULTRINO_ADMIN_PASSWORD_HASH` (or
//! `ADMIN_PASSWORD_HASH`). `--master-key-source file|keychain|env` pins the master key to one
//! source, the OS keychain included ([`from_keychain`]; moving a key file there: [`crate::master_key`]). Secrets are never taken from
//! command-line arguments (argv is visible to every user of the machine).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vultrino_core::app::{App, Config, Ports, Setting};
use vultrino_core::audit::{is_unauthenticated_key, AUDIT_PREFIX};
use vultrino_core::crypto::{self, MasterSecret};
use vultrino_core::ports::{AuditSink, Clock, KvStore};
use zeroize::Zeroizing;

use crate::clock::SystemClock;
use crate::fetcher::HttpFetcher;
use crate::file_kv::FileKv;
use crate::keychain::KeychainEntry;
use crate::memory_kv::{Bound, MemoryKv, PrefixBound};
use crate::memory_sessions::MemorySessions;

/// Which KV store backs the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Durable files under the data directory.
    File,
    /// In memory only; everything is lost on exit (tests, benchmarks, trying things out).
    Memory,
}

/// Everything needed to open an instance.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub master_key_file: Option<PathBuf>,
    /// `--master-key-source`; `None`: the environment when set, else the key file.
    pub master_key_source: Option<KeySource>,
    pub config: Config,
}

/// An opened instance.
pub struct Opened {
    pub app: Arc<App>,
    pub kv: Arc<dyn KvStore>,
    /// Set on a first run that generated the admin password: print it once.
    pub generated_password: Option<Zeroizing<String>>,
}

impl Opened {
    /// The instance counting into `metrics` (`serve --metrics-listen`;
    /// [`App::with_metrics`]), before its App is shared.
    pub fn with_metrics(
        mut self,
        metrics: Arc<vultrino_core::metrics::Metrics>,
    ) -> anyhow::Result<Opened> {
        let app = Arc::into_inner(self.app)
            .ok_or_else(|| anyhow::anyhow!("the instance is already being served"))?;
        self.app = Arc::new(app.with_metrics(metrics));
        Ok(self)
    }
}

pub const MASTER_KEY_FILE: &str = "master.key";
/// The audit history a memory store keeps: 10 000 events and 16 MiB, plus 1 000 events and
/// 1 MiB of unauthenticated ones (failed logins, lockouts) in a class of their own, so that they
/// never push the rest out; the oldest of a class go first
/// (docs/decisions/0024-bounded-audit-history.md, 0043-audit-events-are-bounded.md,
/// 0045-unauthenticated-audit-events.md).
pub const MEMORY_AUDIT_CAP: PrefixBound = PrefixBound {
    main: Bound {
        keys: 10_000,
        bytes: 16 << 20,
    },
    side: Bound {
        keys: 1_000,
        bytes: 1 << 20,
    },
    in_side: is_unauthenticated_key,
};
/// The audit history the file store keeps (on top of the retention TTL): 50 000 events and
/// 64 MiB on disk, plus 5 000 events and 4 MiB of unauthenticated ones in their own class. One
/// file each; the index holds their keys, not their values (what that costs in memory and disk:
/// benches/README.md, "Local: figures behind single lines of code").
pub const FILE_AUDIT_CAP: PrefixBound = PrefixBound {
    main: Bound {
        keys: 50_000,
        bytes: 64 << 20,
    },
    side: Bound {
        keys: 5_000,
        bytes: 4 << 20,
    },
    in_side: is_unauthenticated_key,
};
pub const ADMIN_HASH_FILE: &str = "admin.hash";
pub const STORE_DIR: &str = "store";

/// The default data directory: `$VULTRINO_DATA_DIR`, else `$XDG_DATA_HOME/vultrino`, else
/// `~/.local/share/vultrino`, else `./vultrino-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("vultrino");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/vultrino");
    }
    PathBuf::from("vultrino-data")
}

fn env_secret(names: &[&str]) -> Option<Zeroizing<String>> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .map(Zeroizing::new)
}

/// Create `dir` (and parents) with mode 0700.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("cannot set permissions on {}: {e}", dir.display()))?;
    Ok(())
}

/// Write a new private file (0600) durably; refuses to overwrite.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Replace a private file atomically (temp + fsync + rename).
pub fn replace_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_private_file(&tmp, contents)?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Where the master key comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    Env,
    File(PathBuf),
    Keychain(KeychainEntry),
    Ephemeral,
}

impl std::fmt::Display for MasterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterSource::Env => f.write_str("VULTRINO_MASTER_KEY / ENCRYPTION_KEY"),
            MasterSource::File(p) => write!(f, "the key file {}", p.display()),
            MasterSource::Keychain(e) => f.write_str(&e.describe()),
            MasterSource::Ephemeral => f.write_str("a key generated for this run"),
        }
    }
}

const MASTER_KEY_ENV: [&str; 2] = ["VULTRINO_MASTER_KEY", "ENCRYPTION_KEY"];

/// Find or create the master key, from the source `settings.master_key_source` names (see
/// [`crate::master_key`]): unset, the environment when set, else the key file.
pub fn master_secret(
    settings: &Settings,
    create: bool,
) -> anyhow::Result<(MasterSecret, MasterSource)> {
    match settings.master_key_source {
        None => {
            if let Some(v) = env_secret(&MASTER_KEY_ENV) {
                return Ok((MasterSecret::parse(&v)?, MasterSource::Env));
            }
            file_secret(settings, create)
        }
        Some(KeySource::Env) => match env_secret(&MASTER_KEY_ENV) {
            Some(v) => Ok((MasterSecret::parse(&v)?, MasterSource::Env)),
            None => anyhow::bail!(
                "--master-key-source env: VULTRINO_MASTER_KEY (or ENCRYPTION_KEY) is not set"
            ),
        },
        Some(source) => {
            if env_secret(&MASTER_KEY_ENV).is_some() {
                tracing::warn!(
                    "VULTRINO_MASTER_KEY / ENCRYPTION_KEY is set and ignored: --master-key-source is {}",
                    if source == KeySource::File { "file" } else { "keychain" }
                );
            }
            match source {
                KeySource::File => file_secret(settings, create),
                _ => from_keychain(settings, create),
            }
        }
    }
}

/// The master key from the key file, created (0600) when `create` and missing.
fn file_secret(settings: &Settings, create: bool) -> anyhow::Result<(MasterSecret, MasterSource)> {
    let path = key_file(settings);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let secret = MasterSecret::parse(text.trim())
                .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))?;
            Ok((secret, MasterSource::File(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (secret, text) = MasterSecret::generate_raw();
            let text = Zeroizing::new(text);
            if settings.store == StoreKind::Memory || !create {
                if !create {
                    anyhow::bail!(
                        "no master key: set VULTRINO_MASTER_KEY or create {} (run `vultrino serve` once)",
                        path.display()
                    );
                }
                return Ok((secret, MasterSource::Ephemeral));
            }
            if let Some(parent) = path.parent() {
                ensure_private_dir(parent)?;
            }
            let line = Zeroizing::new(format!("{}\n", text.as_str()));
            write_private_file(&path, line.as_bytes())?;
            tracing::info!(path = %path.display(), "created a new master key file (0600); back it up: without it the store cannot be decrypted");
            Ok((secret, MasterSource::File(path)))
        }
        Err(e) => anyhow::bail!("cannot read master key file {}: {e}", path.display()),
    }
}

/// A first-run admin password: 18 random bytes, 24 base64url characters (longer than
/// [`crypto::MIN_ADMIN_PASSWORD_CHARS`]).
fn generate_admin_password() -> Zeroizing<String> {
    Zeroizing::new(crypto::b64url(&crypto::random_bytes::<18>()))
}

/// The admin password hash, where it came from (for messages), and the password when this run
/// generated it.
struct AdminHash {
    hash: Option<String>,
    source: String,
    generated_password: Option<Zeroizing<String>>,
}

/// Find the admin password hash, or generate a password on first run.
fn admin_hash(settings: &Settings) -> anyhow::Result<AdminHash> {
    for name in ["VULTRINO_ADMIN_PASSWORD_HASH", "ADMIN_PASSWORD_HASH"] {
        if let Some(h) = env_secret(&[name]) {
            return Ok(AdminHash {
                hash: Some(h.to_string()),
                source: name.to_string(),
                generated_password: None,
            });
        }
    }
    let path = settings.data_dir.join(ADMIN_HASH_FILE);
    if settings.store == StoreKind::File {
        if let Ok(h) = fs::read_to_string(&path) {
            return Ok(AdminHash {
                hash: Some(h.trim().to_string()),
                source: format!("the admin password hash in {}", path.display()),
                generated_password: None,
            });
        }
    }
    let password = generate_admin_password();
    let hash = crypto::hash_password(&password, crypto::DEFAULT_PASSWORD_ITERATIONS)?;
    if settings.store == StoreKind::File {
        ensure_private_dir(&settings.data_dir)?;
        write_private_file(&path, format!("{hash}\n").as_bytes())?;
    }
    Ok(AdminHash {
        hash: Some(hash),
        source: "the generated admin password hash".into(),
        generated_password: Some(password),
    })
}

/// Open the KV store of `settings`.
pub fn open_kv(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn KvStore>> {
    Ok(match settings.store {
        StoreKind::Memory => {
            Arc::new(MemoryKv::new(clock).with_prefix_cap(AUDIT_PREFIX, MEMORY_AUDIT_CAP))
        }
        StoreKind::File => {
            ensure_private_dir(&settings.data_dir)?;
            Arc::new(FileKv::open_with_prefix_cap(
                &settings.data_dir.join(STORE_DIR),
                clock,
                AUDIT_PREFIX,
                FILE_AUDIT_CAP,
            )?)
        }
    })
}

/// Open an instance for serving (creates what a first run needs, the admin password included).
pub async fn open(settings: &Settings) -> anyhow::Result<Opened> {
    open_with(settings, true, None, None).await
}

/// [`open`] with the audit sinks every event also goes to (`serve --audit-log`,
/// `--audit-webhook`), and the live sync from an edge (`--sync-from`), whose remembered state is
/// read from the store here (which records came from the edge).
pub async fn open_serving(
    settings: &Settings,
    audit_sink: Option<Arc<dyn AuditSink>>,
    live_sync: Option<Arc<vultrino_core::sync::live::LiveSync>>,
) -> anyhow::Result<Opened> {
    open_with(settings, true, audit_sink, live_sync).await
}

/// Open an instance for a management command: like [`open`], but never generates the admin
/// password (only `serve` may, since only it prints it).
pub async fn open_for_management(settings: &Settings) -> anyhow::Result<Opened> {
    open_with(settings, false, None, None).await
}

async fn open_with(
    settings: &Settings,
    serving: bool,
    audit_sink: Option<Arc<dyn AuditSink>>,
    live_sync: Option<Arc<vultrino_core::sync::live::LiveSync>>,
) -> anyhow::Result<Opened> {
    if settings.config.allow_loopback_upstreams {
        tracing::warn!(
            "INSECURE: loopback and plain-http upstreams are allowed (--allow-loopback-upstreams). \
             Use this for tests only: credentials can be sent to services on this machine."
        );
    }
    if settings.config.allow_weak_password_hash_for_tests {
        tracing::warn!(
            "INSECURE: an admin password hash below {} PBKDF2 iterations is accepted \
             (--allow-weak-password-hash-for-tests). Use this for tests only.",
            crypto::MIN_PASSWORD_ITERATIONS
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let mut config = settings.config.clone();
    let mut generated_password = None;
    let key_file_existed = key_file(settings).exists();
    // A source that may be unreachable or empty (the OS keychain, the environment) is asked
    // before a first run makes its admin password: a failure then leaves no admin.hash behind
    // whose password was never shown.
    let early_master = match settings.master_key_source {
        Some(KeySource::Keychain | KeySource::Env) => Some(master_secret(settings, true)?),
        _ => None,
    };
    // A store that already holds a keyring was sealed under a master key: when that key is not
    // given, say so and make nothing (a new key file there could never open its records, and
    // this must come before a first run's admin.hash), rather than make a key that then fails
    // as `wrong_master_key` (decision 0095).
    let mut early_kv = None;
    if early_master.is_none() && needs_key_file(settings) {
        let kv = open_kv(settings, clock.clone())?;
        if kv.get(vultrino_core::keyring::KEYRING_KEY).await?.is_some() {
            anyhow::bail!("{}", no_key_for_sealed_store(settings));
        }
        early_kv = Some(kv);
    }
    if serving && config.admin_password_hash.is_none() {
        let found = admin_hash(settings)?;
        config.admin_password_hash = found.hash;
        generated_password = found.generated_password;
        // Judged here, before anything else is created, where the hash's source can be named
        // (App::open judges it again).
        if let Err(e) = config.validate() {
            if e.setting == Setting::AdminPasswordHash {
                anyhow::bail!("{} {}", found.source, e.problem);
            }
        }
    }
    let (master, source) = match early_master {
        Some(found) => found,
        None => master_secret(settings, true)?,
    };
    let kv = match early_kv {
        Some(kv) => kv,
        None => open_kv(settings, clock.clone())?,
    };
    let ports = Ports {
        kv: kv.clone(),
        sessions: Arc::new(MemorySessions::new()),
        fetcher: Arc::new(HttpFetcher::new()?),
        clock,
        audit_sink,
        audit: None,
    };
    let mut app = App::open(config, ports, &master)
        .await
        .map_err(|e| {
            if e.code() != vultrino_core::error::Code::WrongMasterKey {
                return anyhow::Error::from(e);
            }
            match &source {
                // A key file made a moment ago for a store made with another key (one kept in the
                // environment or the OS keychain): nothing was encrypted with it; removed again.
                MasterSource::File(path) if !key_file_existed => {
                    let _ = fs::remove_file(path);
                    anyhow::anyhow!(
                    "{e}: there was no key file {}, so a new key was made, and it does not open \
                     this store (removed again). If the key is in the OS keychain or the \
                     environment, say so with --master-key-source keychain|env",
                    path.display()
                )
                }
                _ => anyhow::anyhow!("{e} (the key used came from {source})"),
            }
        })?
        .with_rs256_verifier(Arc::new(crate::rs256::RsaVerifier))
        .with_sleeper(
            Arc::new(crate::clock::TokioSleeper),
            crate::clock::APPROVAL_POLL_MS,
        );
    if let Some(live) = live_sync {
        live.load(&*kv)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        app = app.with_live_sync(live);
    }

    Ok(Opened {
        app: Arc::new(app),
        kv,
        generated_password,
    })
}

/// Whether opening `settings` would make a new key file: a file store that exists, no key file,
/// and a source that would fall back to the file (unset with no key in the environment, or
/// `file`).
fn needs_key_file(settings: &Settings) -> bool {
    let file_source = match settings.master_key_source {
        None => env_secret(&MASTER_KEY_ENV).is_none(),
        Some(KeySource::File) => true,
        Some(_) => false,
    };
    file_source
        && settings.store == StoreKind::File
        && settings.data_dir.join(STORE_DIR).is_dir()
        && !key_file(settings).exists()
}

/// The error for a store sealed under a master key that was not given (decision 0095).
fn no_key_for_sealed_store(settings: &Settings) -> String {
    let file = key_file(settings);
    let looked = match settings.master_key_source {
        None => format!(
            "{} does not exist and VULTRINO_MASTER_KEY (or ENCRYPTION_KEY) is not set",
            file.display()
        ),
        _ => format!(
            "--master-key-source file: {} does not exist",
            file.display()
        ),
    };
    format!(
        "no master key for the store in {dir}: {looked}. Its records are sealed under the key \
         that made them (for a copy made by `vultrino sync`, the key of the server or worker it \
         came from), so no new key was made. Give that key: set VULTRINO_MASTER_KEY, or write it \
         to {file} (mode 0600), or use --master-key-source keychain if it is in the OS keychain",
        dir = settings.data_dir.display(),
        file = file.display(),
    )
}

/// `--master-key-source`: where the master key is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeySource {
    /// The key file (`--master-key-file`, default `<data-dir>/master.key`), created on a first
    /// `serve`; `VULTRINO_MASTER_KEY` is ignored.
    File,
    /// The OS keychain entry of the data directory (service `vultrino`, account the data
    /// directory's canonical path); created on a first `serve` of a new data directory.
    Keychain,
    /// `VULTRINO_MASTER_KEY` (or `ENCRYPTION_KEY`); never a file.
    Env,
}

/// The key file of `settings`.
pub fn key_file(settings: &Settings) -> PathBuf {
    settings
        .master_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join(MASTER_KEY_FILE))
}

/// The master key from the keychain entry of the data directory. With `create` on a new file
/// store (no store directory and no key file yet), a new random key is stored there first.
pub fn from_keychain(
    settings: &Settings,
    create: bool,
) -> anyhow::Result<(MasterSecret, MasterSource)> {
    let file = key_file(settings);
    let new_store = create
        && settings.store == StoreKind::File
        && !settings.data_dir.join(STORE_DIR).exists()
        && !file.exists();
    if new_store {
        ensure_private_dir(&settings.data_dir)?;
    } else if !settings.data_dir.is_dir() {
        anyhow::bail!(
            "--master-key-source keychain: the data directory {} does not exist (its path names \
             the master key's OS keychain entry)",
            settings.data_dir.display()
        );
    }
    let entry = KeychainEntry::for_data_dir(&settings.data_dir)?;
    if let Some(text) = entry.read()? {
        let secret = MasterSecret::parse(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", entry.describe()))?;
        return Ok((secret, MasterSource::Keychain(entry)));
    }
    if new_store {
        let (secret, text) = MasterSecret::generate_raw();
        let text = Zeroizing::new(text);
        store_and_check(&entry, &text)?;
        tracing::info!(
            entry = %entry.describe(),
            "created a new master key in the OS keychain; back it up: without it the store cannot be decrypted"
        );
        return Ok((secret, MasterSource::Keychain(entry)));
    }
    let hint = if file.exists() {
        format!(
            "the key file {} exists: move it there with `vultrino master-key to-keychain`, or \
             use --master-key-source file",
            file.display()
        )
    } else {
        "restore the key from your backup into it (e.g. `secret-tool store --label vultrino \
         service vultrino username <data-dir>`), or choose the source that holds the key \
         (--master-key-source file|env)"
            .to_string()
    };
    anyhow::bail!(
        "--master-key-source keychain: {} holds no master key for the data directory {}; {hint}",
        entry.describe(),
        settings.data_dir.display()
    )
}

/// Store `text` in `entry`, read it back and compare (constant time).
pub fn store_and_check(entry: &KeychainEntry, text: &str) -> anyhow::Result<()> {
    entry.store(text)?;
    match entry.read()? {
        Some(back) if crypto::ct_eq(back.as_bytes(), text.as_bytes()) => Ok(()),
        Some(_) => anyhow::bail!(
            "{} returned another value than the one just stored",
            entry.describe()
        ),
        None => anyhow::bail!("{} was stored but cannot be read back", entry.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first-run password meets the length `vultrino hash-password` asks of a chosen one.
    #[test]
    fn the_generated_admin_password_is_long_enough() {
        let pw = generate_admin_password();
        assert_eq!(pw.chars().count(), 24);
        assert!(crypto::check_admin_password(&pw).is_ok());
    }
}
