//! [`FileKv`]: the durable [`KvStore`] of the local backend.
//!
//! # Decisions
//! - **Memory index, disk for durability.** Every live entry is held in a [`MemoryKv`] (loaded at
//!   open); reads and `list` are served from it, so list order, cursors, limits and validation are
//!   MemoryKv's, not a second copy. Writes go to disk first and to the index once durable. Values
//!   are held in memory too — fine for credentials, keys and roles — except under the bounded
//!   prefix (the audit history): there the index keeps key, expiry, metadata and size, and a read
//!   takes the value from its file, so memory grows with the number of events, not their bytes
//!   (docs/decisions/0043-audit-events-are-bounded.md).
//! - **Layout.** `<dir>/LOCK`, and one file per key, `<dir>/<hex SHA-256 of the key>.kv` (keys may
//!   be 512 bytes, too long for a file name, and may contain `/`). Temp files are
//!   `<dir>/tmp-<hash>-<n>`.
//! - **Privacy.** The directory is created with mode 0700 (an existing one with group/other bits
//!   is tightened to 0700, with a warning); every file is created 0600.
//! - **One process.** `open` takes an exclusive lock on `<dir>/LOCK` ([`File::try_lock`]); a
//!   second opener, in this or another process, gets `Unavailable` with code `store_locked`
//!   naming the directory. The lock lasts as long as the store (and any write still running).
//! - **File format** (little-endian): magic `VKV` + version `1`, flags (bit 0: metadata present,
//!   bit 1: expiry present), expiry ms (u64), key length (u32), metadata length (u32), value length
//!   (u64), key, metadata JSON, value, then the SHA-256 of everything before it. A file whose
//!   checksum, lengths or version do not check out, or whose key does not hash to its file name
//!   (a moved file), is corrupt.
//! - **Atomic, durable writes.** Write the temp file, fsync it, rename it over the target, fsync
//!   the directory; only then update the index and acknowledge. Directory fsyncs are shared
//!   (group commit): one that starts after a writer's rename makes it durable, so concurrent
//!   writers share them. An acknowledged put or delete survives `kill -9` and power loss; a
//!   crash mid-write leaves the old file intact plus a temp file that the next open removes.
//! - **Ordering.** Writes to one key (put/delete) hold a per-key lock (striped by the key's hash)
//!   across disk write and index update, so the last acknowledged write wins on disk as in memory.
//! - **Open is forgiving.** Corrupt files are skipped with a `tracing::warn` (and left in place for
//!   inspection; the next put of that key replaces it) rather than failing the open; leftover temp
//!   files are removed; expired entries are deleted.
//! - **Optional prefix bound** ([`FileKv::open_with_prefix_cap`]; `vultrino serve` bounds
//!   `audit:` by events and bytes, in two classes: [`PrefixBound`]): beyond it the greatest keys
//!   of the class are deleted from the index and then from disk; a file left behind by a crash is
//!   deleted at the next open.
//! - **Expiry is lazy.** An expired entry vanishes from reads at once and from the index when read;
//!   its file is deleted at the next open (or when the key is written or deleted).
//! - Blocking file I/O runs on tokio's blocking pool (`spawn_blocking`), so `FileKv` must be used
//!   inside a tokio runtime.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use vultrino_core::ports::{
    kv_validate, Clock, KvEntry, KvStore, ListOptions, ListPage, PutOptions,
};
use vultrino_core::{Error, Result};

use crate::memory_kv::{Entry, Found, MemoryKv, PrefixBound};
use vultrino_core::error::Code;

const MAGIC: &[u8; 4] = b"VKV\x01";
const FLAG_METADATA: u8 = 1;
const FLAG_EXPIRY: u8 = 2;
/// magic 4 + flags 1 + expiry 8 + key len 4 + metadata len 4 + value len 8.
const HEADER_LEN: usize = 29;
const CHECKSUM_LEN: usize = 32;
const LOCK_FILE: &str = "LOCK";
const TMP_PREFIX: &str = "tmp-";
const SUFFIX: &str = ".kv";
const STRIPES: usize = 64;

/// A durable, single-process [`KvStore`] in one directory. See the module doc for the design.
pub struct FileKv {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The bounded prefix, whose values the index does not hold (read from disk).
    on_disk_prefix: Option<String>,
    mem: MemoryKv,
    /// Per-key write serialization, striped by the first byte of the key's hash.
    stripes: Vec<Mutex<()>>,
    tmp_counter: AtomicU64,
    dir_sync: DirSync,
    /// Held (not read) for its exclusive lock, released when the store is dropped.
    _lock: File,
}

/// Group commit of directory fsyncs. A writer whose rename (or unlink) is done needs an fsync of
/// the directory that *starts* after it; one fsync serves every writer that asked before it
/// started, so concurrent puts share them instead of queueing one each.
#[derive(Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct DirSyncState {
    /// Tickets handed out (one per request).
    asked: u64,
    /// Every ticket up to this one is covered by a completed fsync.
    synced: u64,
    running: bool,
}

impl fmt::Debug for FileKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKv")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// An I/O failure at open: the operator sees the directory and the OS error (never secret).
fn open_error(dir: &Path, what: &str, e: io::Error) -> Error {
    Error::unavailable(format!(
        "cannot {what} in data directory {}: {e}",
        dir.display()
    ))
    .with_code(Code::StoreIo)
}

/// An I/O failure while serving: logged for the operator (path and OS error), generic to the
/// client — 503 `store_io` with `Retry-After` (a full disk, a transient EIO: a dependency
/// failed, as a KV outage on Workers is 503 `kv_unavailable`; decision 0107), never a path.
fn io_failure(op: &str, path: &Path, e: io::Error) -> Error {
    tracing::error!(op, path = %path.display(), error = %e, "file store I/O failed");
    Error::unavailable("the credential store could not be read or written").with_code(Code::StoreIo)
}

impl FileKv {
    /// Open (creating if needed) the store in `dir`, taking its lock and loading every entry.
    ///
    /// Errors: `Unavailable`/`store_locked` if another `FileKv` holds the directory;
    /// `Unavailable`/`store_io` if the directory cannot be created, read or locked.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<FileKv> {
        Self::open_inner(dir, clock, None)
    }

    /// [`FileKv::open`], keeping the keys under the ASCII `prefix` within `bound` (keys and
    /// bytes, per class): the greatest of a class are deleted first, from memory and disk — at
    /// open if the directory holds more, and as puts go over the bound (down to 90 % of it). For
    /// `audit:` keys, which sort newest first, that drops the oldest events, so a long-running
    /// server's file count and disk use stay bounded. The values under `prefix` are not held in
    /// memory: reads take them from disk.
    pub fn open_with_prefix_cap(
        dir: &Path,
        clock: Arc<dyn Clock>,
        prefix: &str,
        bound: PrefixBound,
    ) -> Result<FileKv> {
        Self::open_inner(dir, clock, Some((prefix, bound)))
    }

    /// Whether a process holds the store in `dir` open right now (its lock is taken). Probes
    /// with a shared lock that is released at once, so it never changes the directory; a
    /// directory that has no lock file, or cannot be read, counts as not held. (Used by the CLI
    /// to tell a running server's address file from one a killed server left behind.)
    pub fn is_locked(dir: &Path) -> bool {
        match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    fn open_inner(
        dir: &Path,
        clock: Arc<dyn Clock>,
        cap: Option<(&str, PrefixBound)>,
    ) -> Result<FileKv> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| open_error(dir, "open the lock file", e))?;
        let locked = lock.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::unavailable(format!(
                    "data directory {} is in use by another vultrino process",
                    dir.display()
                ))
                .with_code(Code::StoreLocked))
            }
            Err(TryLockError::Error(e)) => return Err(open_error(dir, "lock", e)),
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            on_disk_prefix: cap.map(|(prefix, _)| prefix.to_string()),
            mem: MemoryKv::new(clock),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            tmp_counter: AtomicU64::new(0),
            dir_sync: DirSync::default(),
            _lock: lock,
        };
        inner.load()?;
        if let Some((prefix, bound)) = cap {
            // Set after loading, so that the bound keeps the greatest keys of the whole
            // directory, not of whatever order the directory listed them in.
            inner.mem.set_prefix_cap(prefix, bound);
            let evicted = inner.mem.trim_to_cap();
            if !evicted.is_empty() {
                tracing::info!(
                    removed = evicted.len(),
                    prefix,
                    "file store over its bound at open; removing the greatest keys"
                );
                inner.delete_evicted(evicted);
            }
        }
        Ok(FileKv {
            inner: Arc::new(inner),
        })
    }

    /// A read: from the index, or from disk for a value the index does not hold.
    async fn read(&self, key: &str, with_metadata: bool) -> Result<Option<KvEntry>> {
        match self.inner.mem.find(key, with_metadata)? {
            None => Ok(None),
            Some(Found::Resident(entry)) => Ok(Some(entry)),
            Some(Found::OnDisk) => {
                let key = key.to_string();
                let entry = self.blocking(move |inner| inner.read_entry(&key)).await?;
                Ok(entry.map(|e| KvEntry {
                    value: e.value,
                    metadata: if with_metadata { e.metadata } else { None },
                }))
            }
        }
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "file store task failed");
                Error::internal()
            })?
    }
}

#[cfg(unix)]
fn private_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

#[cfg(not(unix))]
fn private_options() -> OpenOptions {
    OpenOptions::new()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| open_error(dir, "create the directory", e))?;
    let mode = fs::metadata(dir)
        .map_err(|e| open_error(dir, "inspect the directory", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory was accessible to others; setting it to 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| open_error(dir, "restrict the directory to 0700", e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| open_error(dir, "create the directory", e))
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Serialize an entry (see the module doc for the format).
fn encode(key: &str, entry: &Entry) -> Result<Vec<u8>> {
    let metadata = match &entry.metadata {
        Some(m) => serde_json::to_vec(m).map_err(|_| Error::internal())?,
        None => Vec::new(),
    };
    let mut flags = 0;
    if entry.metadata.is_some() {
        flags |= FLAG_METADATA;
    }
    if entry.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRY;
    }
    // Lengths are bounded by kv_validate (512 B, 1 KiB, 25 MiB), so the casts cannot truncate.
    let mut out = Vec::with_capacity(
        HEADER_LEN + key.len() + metadata.len() + entry.value.len() + CHECKSUM_LEN,
    );
    out.extend_from_slice(MAGIC);
    out.push(flags);
    out.extend_from_slice(&entry.expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entry.value.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&metadata);
    out.extend_from_slice(&entry.value);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Parse a file; `Err` says why it is corrupt (never its content).
fn decode(bytes: &[u8]) -> std::result::Result<(String, Entry), &'static str> {
    let body_len = bytes.len().checked_sub(CHECKSUM_LEN).ok_or("truncated")?;
    let (body, checksum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != checksum {
        return Err("checksum mismatch (torn or corrupt file)");
    }
    let header = body.get(..HEADER_LEN).ok_or("truncated header")?;
    if &header[..4] != MAGIC {
        return Err("unknown magic or version");
    }
    let flags = header[4];
    let u64_at = |i: usize| {
        header
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |i: usize| {
        header
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let expires = u64_at(5).ok_or("truncated header")?;
    let key_len = u32_at(13).ok_or("truncated header")? as usize;
    let meta_len = u32_at(17).ok_or("truncated header")? as usize;
    let value_len =
        usize::try_from(u64_at(21).ok_or("truncated header")?).map_err(|_| "bad length")?;
    let rest = &body[HEADER_LEN..];
    let total = key_len
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(value_len))
        .ok_or("bad length")?;
    if total != rest.len() {
        return Err("lengths do not match the file size");
    }
    let (key, rest) = rest.split_at(key_len);
    let (meta, value) = rest.split_at(meta_len);
    let key = std::str::from_utf8(key)
        .map_err(|_| "key is not UTF-8")?
        .to_string();
    kv_validate::key(&key).map_err(|_| "invalid key")?;
    let metadata = if flags & FLAG_METADATA != 0 {
        Some(serde_json::from_slice(meta).map_err(|_| "metadata is not JSON")?)
    } else {
        None
    };
    let entry = Entry::new(
        Bytes::copy_from_slice(value),
        metadata,
        (flags & FLAG_EXPIRY != 0).then_some(expires),
    );
    Ok((key, entry))
}

impl Inner {
    fn file_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", hex(hash)))
    }

    /// The entry as the index keeps it: without its value under the bounded prefix.
    fn for_index(&self, key: &str, entry: Entry) -> Entry {
        match &self.on_disk_prefix {
            Some(p) if key.starts_with(p.as_str()) => entry.on_disk(),
            _ => entry,
        }
    }

    /// Read `key`'s entry from its file: `None` if there is none (deleted or evicted since the
    /// index was read), if it has expired, or if it is corrupt (logged) — a file's checksum and
    /// key are checked as at open.
    fn read_entry(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.file_path(&key_hash(key));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failure("get", &path, e)),
        };
        match decode(&bytes) {
            Ok((k, entry)) if k == key => Ok(entry.is_live(self.mem.now_ms()).then_some(entry)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "an entry file's key does not match its name");
                Ok(None)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = why, "a corrupt entry file");
                Ok(None)
            }
        }
    }

    fn stripe(&self, hash: &[u8; 32]) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[usize::from(hash[0]) % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Load every valid entry into the index; drop temp and expired files, skip corrupt ones.
    fn load(&self) -> Result<()> {
        let now = self.mem.now_ms();
        let mut removed_any = false;
        let entries = fs::read_dir(&self.dir).map_err(|e| open_error(&self.dir, "list", e))?;
        for dirent in entries {
            let dirent = dirent.map_err(|e| open_error(&self.dir, "list", e))?;
            let path = dirent.path();
            let Some(name) = dirent.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "ignoring a file with a non-UTF-8 name");
                continue;
            };
            if name == LOCK_FILE {
                continue;
            }
            if name.starts_with(TMP_PREFIX) {
                match fs::remove_file(&path) {
                    Ok(()) => removed_any = true,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover temp file")
                    }
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                tracing::warn!(path = %path.display(), "ignoring an unknown file in the data directory");
                continue;
            };
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry file");
                    continue;
                }
            };
            let (key, entry) = match decode(&bytes) {
                Ok(parsed) => parsed,
                Err(why) => {
                    tracing::warn!(path = %path.display(), reason = why, "skipping a corrupt entry file");
                    continue;
                }
            };
            if hex(&key_hash(&key)) != stem {
                tracing::warn!(path = %path.display(), "skipping an entry file whose key does not match its name");
                continue;
            }
            if !entry.is_live(now) {
                match fs::remove_file(&path) {
                    Ok(()) => removed_any = true,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove an expired entry file")
                    }
                }
                continue;
            }
            let entry = self.for_index(&key, entry);
            self.mem.insert(key, entry);
        }
        if removed_any {
            sync_dir(&self.dir).map_err(|e| open_error(&self.dir, "sync", e))?;
        }
        Ok(())
    }

    /// Make every rename/unlink done before this call durable: join the next directory fsync
    /// that starts after it (see [`DirSync`]). An fsync error fails the writer that ran it;
    /// waiters then run their own.
    fn sync_dir_grouped(&self) -> io::Result<()> {
        let sync = &self.dir_sync;
        let mut st = sync.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.asked += 1;
        let ticket = st.asked;
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.running {
                st = sync.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.running = true;
            // Every ticket up to here was taken after its rename: this fsync covers them all.
            let covers = st.asked;
            drop(st);
            let result = sync_dir(&self.dir);
            st = sync.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.running = false;
            if result.is_ok() {
                st.synced = st.synced.max(covers);
            }
            sync.done.notify_all();
            result?;
        }
    }

    /// Durably write `entry` under `key`, then publish it in the index.
    fn persist(&self, key: String, entry: Entry) -> Result<()> {
        let bytes = encode(&key, &entry)?;
        let hash = key_hash(&key);
        let target = self.file_path(&hash);
        let _guard = self.stripe(&hash);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{n}", hex(&hash)));
        let written = (|| {
            let mut f = private_options().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            self.sync_dir_grouped()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_failure("put", &target, e));
        }
        let entry = self.for_index(&key, entry);
        let evicted = self.mem.insert(key, entry);
        drop(_guard);
        if !evicted.is_empty() {
            self.delete_evicted(evicted);
        }
        Ok(())
    }

    /// Delete the files of keys the prefix bound evicted from the index (best effort: a file
    /// left behind by a crash or an I/O error is evicted again at the next open). Each key is
    /// deleted under its stripe lock, and only if no put has brought it back meanwhile.
    fn delete_evicted(&self, keys: Vec<String>) {
        let mut removed_any = false;
        for key in keys {
            let hash = key_hash(&key);
            let path = self.file_path(&hash);
            let _guard = self.stripe(&hash);
            if self.mem.contains(&key) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted entry file")
                }
            }
        }
        if removed_any {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the data directory");
            }
        }
    }

    /// Durably delete `key`'s file, then drop it from the index.
    fn remove(&self, key: &str) -> Result<()> {
        let hash = key_hash(key);
        let target = self.file_path(&hash);
        let _guard = self.stripe(&hash);
        match fs::remove_file(&target) {
            Ok(()) => self
                .sync_dir_grouped()
                .map_err(|e| io_failure("delete", &target, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_failure("delete", &target, e)),
        }
        self.mem.remove(key);
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvStore for FileKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.read(key, false).await?.map(|e| e.value))
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.read(key, true).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        let entry = self.inner.mem.prepare_put(key, value, options)?;
        let key = key.to_string();
        self.blocking(move |inner| inner.persist(key, entry)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        kv_validate::key(key)?;
        let key = key.to_string();
        self.blocking(move |inner| inner.remove(&key)).await
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.mem.list(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry::new(
            Bytes::from_static(b"\x00value\xff"),
            Some(serde_json::json!({"a": [1, "é"]})),
            Some(1_700_000_060_000),
        )
    }

    #[test]
    fn encoded_entries_decode_to_themselves() {
        let bytes = encode("cred:github", &entry()).ok();
        let decoded = bytes.as_deref().map(decode);
        assert_eq!(decoded, Some(Ok(("cred:github".to_string(), entry()))));
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_detected() {
        let bytes = encode("k", &entry()).unwrap_or_default();
        assert!(!bytes.is_empty());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipped byte {i} not detected");
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} not detected"
            );
        }
    }
}
