//! Where the master key comes from (`--master-key-source file|keychain|env`), and the commands
//! that move it: `vultrino master-key to-keychain`, and `vultrino rotate-master-key` for a key in
//! the OS keychain. See docs/decisions/0089-master-key-in-the-os-keychain.md.
//!
//! Unset, the source is what it always was: `VULTRINO_MASTER_KEY` / `ENCRYPTION_KEY` when set,
//! else the key file (created on a first `serve`). Set, it is strict: the key comes from that
//! source or the command stops with an error naming the fix; it never falls back to another.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use vultrino_core::crypto::{self, Keys, MasterSecret};
use vultrino_core::ports::KvStore;
use zeroize::Zeroizing;

use crate::keychain::KeychainEntry;
use crate::setup::{self, key_file, store_and_check, Settings, StoreKind};

/// The description of the data directory's keychain entry when it holds a master key (any
/// failure to reach the keychain: `None`).
fn moved_to(settings: &Settings) -> Option<String> {
    let entry = KeychainEntry::for_data_dir(&settings.data_dir).ok()?;
    let text = entry.read().ok().flatten()?;
    MasterSecret::parse(text.trim()).ok()?;
    Some(entry.describe())
}

/// Check that `master` opens the store's keyring, when the store has one.
async fn check_opens_store(kv: &dyn KvStore, master: &MasterSecret) -> anyhow::Result<()> {
    match kv.get(vultrino_core::keyring::KEYRING_KEY).await? {
        None => Ok(()),
        Some(_) => {
            let record = vultrino_core::keyring::read(kv).await?;
            Keys::open(master, &record)?;
            Ok(())
        }
    }
}

/// `vultrino master-key to-keychain`: read the key file, check that it opens the store, store it
/// in the data directory's keychain entry, read it back and compare, and only then overwrite the
/// file with zeros, flush it to disk and delete it. Returns the entry's description.
pub async fn to_keychain(settings: &Settings) -> anyhow::Result<String> {
    let file = key_file(settings);
    let next = PathBuf::from(format!("{}.next", file.display()));
    if next.exists() {
        anyhow::bail!(
            "a master-key rotation is unfinished ({} exists): run `vultrino rotate-master-key` \
             again to finish it first; nothing was moved",
            next.display()
        );
    }
    let text = match fs::read_to_string(&file) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no master key file {}: nothing to move (give another with --master-key-file)",
            file.display()
        ),
        Err(e) => anyhow::bail!("cannot read the master key file {}: {e}", file.display()),
    };
    let key = Zeroizing::new(text.trim().to_string());
    // A move interrupted while the file was being overwritten leaves zeros behind, which do not
    // parse or do not open the store: say where the key already is, when the data directory's
    // entry holds one.
    let leftover = |e: &dyn std::fmt::Display| match moved_to(settings) {
        Some(entry) => anyhow::anyhow!(
            "master key file {}: {e}; {entry} already holds a master key, so this file is most \
             likely what an interrupted `master-key to-keychain` left behind: check that \
             `--master-key-source keychain` opens the store, then delete the file; nothing was \
             moved",
            file.display()
        ),
        None => anyhow::anyhow!("master key file {}: {e}", file.display()),
    };
    let master = MasterSecret::parse(&key).map_err(|e| leftover(&e))?;
    if settings.store == StoreKind::File && settings.data_dir.join(setup::STORE_DIR).exists() {
        let kv = setup::open_kv(
            settings,
            std::sync::Arc::new(crate::clock::SystemClock::new()),
        )?;
        if let Err(e) = check_opens_store(&*kv, &master).await {
            if moved_to(settings).is_some() {
                return Err(leftover(&format!(
                    "it does not open the store in {}: {e:#}",
                    settings.data_dir.display()
                )));
            }
            anyhow::bail!(
                "the key file {} does not open the store in {}: {e:#}; nothing was moved",
                file.display(),
                settings.data_dir.display()
            );
        }
    }
    let entry = KeychainEntry::for_data_dir(&settings.data_dir)?;
    match entry.read()? {
        Some(existing) if crypto::ct_eq(existing.trim().as_bytes(), key.as_bytes()) => {}
        Some(_) => anyhow::bail!(
            "{} already holds a different master key; nothing was changed. If that key is not \
             needed any more, delete the entry first (e.g. `secret-tool clear service vultrino \
             username {}`), then run this again",
            entry.describe(),
            entry.account()
        ),
        None => store_and_check(&entry, &key)?,
    }
    wipe_and_delete(&file)?;
    Ok(entry.describe())
}

/// Overwrite `path` with zeros, flush to disk, delete it and flush its directory.
fn wipe_and_delete(path: &Path) -> anyhow::Result<()> {
    let len = fs::metadata(path)?.len();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {} to wipe it: {e}", path.display()))?;
    f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
    f.sync_all()?;
    drop(f);
    fs::remove_file(path).map_err(|e| anyhow::anyhow!("cannot delete {}: {e}", path.display()))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `vultrino rotate-master-key` for a key in the OS keychain: the new key is stored in the
/// entry's `next:` twin BEFORE any record changes (an interrupted rotation is finished by running
/// the command again), the records are re-encrypted, the entry takes the new key (read back and
/// compared), and the twin is deleted. Returns the new key id and the number of records re-sealed.
pub async fn rotate_in_keychain(
    kv: &dyn KvStore,
    old: &MasterSecret,
    entry: &KeychainEntry,
    now_ms: u64,
) -> anyhow::Result<(String, usize)> {
    let next = entry.next();
    let new_text = match next.read()? {
        Some(t) => {
            let t = Zeroizing::new(t.trim().to_string());
            // Interrupted after the entry took the new key: only the twin is left to delete.
            let current = entry.read()?;
            if current.is_some_and(|c| crypto::ct_eq(c.trim().as_bytes(), t.as_bytes())) {
                next.delete()?;
                let key_id = vultrino_core::keyring::read(kv).await?.key_id;
                return Ok((key_id, 0));
            }
            t
        }
        None => {
            // A fresh rotation: the entry's key must open the store before a new key is made
            // (a wrong entry is reported, and no `next:` entry is left behind).
            check_opens_store(kv, old).await.map_err(|e| {
                anyhow::anyhow!("{e:#} (the key used came from {})", entry.describe())
            })?;
            let (_, t) = MasterSecret::generate_raw();
            let t = Zeroizing::new(t);
            store_and_check(&next, &t)?;
            t
        }
    };
    let new = MasterSecret::parse(&new_text)?;
    let done = vultrino_core::keyring::rotate_master_key(kv, old, &new, now_ms).await?;
    store_and_check(entry, &new_text)?;
    next.delete()?;
    Ok(done)
}
