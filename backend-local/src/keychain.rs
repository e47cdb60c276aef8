//! The master key in the OS keychain (`--master-key-source keychain`): the Secret Service over
//! D-Bus on Linux (gnome-keyring, KeePassXC, …), the Keychain on macOS, the Credential Manager on
//! Windows, through the `keyring` crate.
//!
//! One entry per data directory: service [`SERVICE`] (`vultrino`), account the data directory's
//! canonical path (so two data directories never share a key, and a relative path or a symlink
//! finds the same entry). The entry holds the key as the key file does: the text of a raw key or
//! a passphrase. A rotation in progress keeps the new key in a second entry, account
//! `next:<path>` (see `vultrino rotate-master-key`). With the Secret Service the entry is also
//! found by `secret-tool lookup service vultrino username <path>`.
//!
//! Every call runs on a thread of its own and is waited for at most [`CALL_TIMEOUT`]: D-Bus
//! calls block, the keyring crate's Secret Service client runs its own executor (which must not
//! run on a tokio worker thread), and a keychain may wait for an unlock prompt nobody answers.
//!
//! The key text lives in [`Zeroizing`] buffers; it is never in an error, a log line or a `Debug`
//! output (an entry that is not UTF-8 text is wiped and reported without its bytes).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

/// The service name of every Vultrino entry.
pub const SERVICE: &str = "vultrino";

/// How long one keychain call may take (an unanswered unlock prompt would wait for ever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The fix named when no keychain service answers.
#[cfg(target_os = "linux")]
const UNREACHABLE: &str = "no OS keychain service reachable (Secret Service over D-Bus): start \
     gnome-keyring-daemon (or another Secret Service, e.g. KeePassXC) / a desktop session, with \
     DBUS_SESSION_BUS_ADDRESS set, or use --master-key-source file";
#[cfg(not(target_os = "linux"))]
const UNREACHABLE: &str = "the OS keychain is not reachable: unlock it (log in to the desktop \
     session), or use --master-key-source file";

/// The keychain entry of one data directory's master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeychainEntry {
    account: String,
    data_dir: PathBuf,
}

impl KeychainEntry {
    /// The entry of `data_dir`, which must exist (its canonical path names the entry).
    pub fn for_data_dir(data_dir: &Path) -> anyhow::Result<KeychainEntry> {
        let canonical = std::fs::canonicalize(data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot resolve the data directory {} (its path names the master key's OS \
                 keychain entry): {e}",
                data_dir.display()
            )
        })?;
        let account = canonical
            .to_str()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the data directory's path {} is not UTF-8: it cannot name an OS keychain \
                     entry; use --master-key-source file",
                    canonical.display()
                )
            })?
            .to_string();
        Ok(KeychainEntry {
            account,
            data_dir: canonical,
        })
    }

    /// The entry that holds the new key while a rotation of this one is unfinished.
    pub fn next(&self) -> KeychainEntry {
        KeychainEntry {
            account: format!("next:{}", self.account),
            data_dir: self.data_dir.clone(),
        }
    }

    /// The account name (the canonical data-directory path, or `next:` and it).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        format!(
            "the OS keychain entry (service '{SERVICE}', account '{}')",
            self.account
        )
    }

    /// The stored key text, or `None` when there is no entry.
    pub fn read(&self) -> anyhow::Result<Option<Zeroizing<String>>> {
        let account = self.account.clone();
        self.call("read", move || {
            let entry = keyring::Entry::new(SERVICE, &account)?;
            match entry.get_password() {
                Ok(p) => Ok(Some(Zeroizing::new(p))),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Store `text`, replacing what the entry held.
    pub fn store(&self, text: &str) -> anyhow::Result<()> {
        let account = self.account.clone();
        let text = Zeroizing::new(text.to_string());
        self.call("write", move || {
            keyring::Entry::new(SERVICE, &account)?.set_password(&text)
        })
    }

    /// Delete the entry; `false` when there was none.
    pub fn delete(&self) -> anyhow::Result<bool> {
        let account = self.account.clone();
        self.call("delete", move || {
            match keyring::Entry::new(SERVICE, &account)?.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> keyring::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match on_own_thread(what, f) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.explain(CallError::Keyring(e))),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// A keychain failure as a message naming the entry and the fix; never the key's bytes.
    fn explain(&self, e: CallError) -> anyhow::Error {
        let e = match e {
            CallError::TimedOut(what) => {
                return anyhow::anyhow!(
                    "the OS keychain did not answer within {} s ({what} of {}): is it waiting \
                     for an unlock prompt? Unlock it and try again, or use --master-key-source file",
                    CALL_TIMEOUT.as_secs(),
                    self.describe()
                )
            }
            CallError::Panicked(what) => {
                return anyhow::anyhow!(
                    "the OS keychain client failed ({what} of {}); use --master-key-source file",
                    self.describe()
                )
            }
            CallError::Keyring(e) => e,
        };
        match e {
            keyring::Error::PlatformFailure(cause) => {
                anyhow::anyhow!("{UNREACHABLE} (cause: {cause})")
            }
            keyring::Error::NoStorageAccess(cause) => anyhow::anyhow!(
                "the OS keychain refused access to {} (cause: {cause}): unlock the keychain \
                 (e.g. log in to the desktop session) and try again, or use --master-key-source file",
                self.describe()
            ),
            keyring::Error::BadEncoding(mut bytes) => {
                bytes.zeroize();
                anyhow::anyhow!(
                    "{} does not hold text (was it changed outside Vultrino?); nothing was \
                     changed: restore the key from your backup into it",
                    self.describe()
                )
            }
            keyring::Error::Ambiguous(found) => anyhow::anyhow!(
                "{} matches {} items: remove the extra ones (e.g. with seahorse or secret-tool) \
                 and keep the one that holds the key",
                self.describe(),
                found.len()
            ),
            keyring::Error::NoEntry => anyhow::anyhow!("{} does not exist", self.describe()),
            other => anyhow::anyhow!("OS keychain, {}: {other}", self.describe()),
        }
    }
}

/// Why a call on the keychain thread gave no answer.
enum CallError {
    Keyring(keyring::Error),
    TimedOut(&'static str),
    Panicked(&'static str),
}

/// Run `f` on a new thread and wait for it at most [`CALL_TIMEOUT`]. A call that times out is
/// left to finish (or not) on its own thread; its answer is dropped (wiped, for a key).
fn on_own_thread<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> keyring::Result<T> + Send + 'static,
) -> Result<keyring::Result<T>, CallError> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("vultrino-keychain".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|_| CallError::Panicked(what))?;
    match rx.recv_timeout(CALL_TIMEOUT) {
        Ok(r) => Ok(r),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CallError::TimedOut(what)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::Panicked(what)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A relative path and a symlink to the data directory name the same entry; another
    /// directory names another.
    #[test]
    fn the_entry_is_named_by_the_canonical_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let a = KeychainEntry::for_data_dir(&dir).unwrap();
        let b = KeychainEntry::for_data_dir(&link).unwrap();
        let c = KeychainEntry::for_data_dir(&dir.join("../data/.")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(
            a.account(),
            std::fs::canonicalize(&dir).unwrap().to_str().unwrap()
        );
        assert_eq!(a.next().account(), format!("next:{}", a.account()));
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert_ne!(KeychainEntry::for_data_dir(&other).unwrap(), a);
        // A directory that does not exist names nothing: a clear error, no entry.
        let err = KeychainEntry::for_data_dir(&tmp.path().join("missing")).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot resolve the data directory"),
            "{err}"
        );
    }

    /// What the keychain returned is never part of an error: an entry that is not text is
    /// reported without its bytes.
    #[test]
    fn errors_never_carry_the_entrys_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = KeychainEntry::for_data_dir(tmp.path()).unwrap();
        let secret = b"\xffsecret-key-bytes-0042".to_vec();
        let err = entry.explain(CallError::Keyring(keyring::Error::BadEncoding(secret)));
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains("secret-key-bytes"), "{text}");
        assert!(text.contains("does not hold text"), "{text}");
        let err = entry.explain(CallError::TimedOut("read"));
        assert!(err.to_string().contains("did not answer"), "{err}");
    }
}
