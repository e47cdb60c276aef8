//! The stored credentials: the only code that reads, opens, seals, writes or deletes `cred:`
//! records, and the cache of opened (decrypted) credentials that execute reuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    cred_key, validate_name, CredentialData, CredentialMeta, CredentialRecord, CRED_PREFIX,
};
use crate::crypto::Keys;
use crate::error::{Code, Error, Result};
use crate::ports::{kv_validate, ListOptions, Ports, PutOptions};
use crate::scrub::Scrubber;

/// Associated data of sealed listing cursors (not a KV key; never stored).
const CURSOR_AD: &str = "sys:cursor#credentials";
/// Most credentials kept open; the cache is simply emptied when full.
const MAX_OPEN: usize = 1024;
/// An opened credential unused this long is dropped (its secrets zeroized), at the next
/// credential operation at the latest a minute later: what stays in memory is what agents use.
pub(crate) const OPEN_IDLE_MS: u64 = 5 * 60 * 1000;
/// How often the opened cache is swept for idle entries (at most; on use).
const SWEEP_EVERY_MS: u64 = 60 * 1000;
/// Keys read per store call while filling a listing page.
const SCAN_PAGE: usize = 1000;
/// Store calls one listing page may make: a page is filled from further store pages, up to
/// this many (10 000 keys); only past that many hidden credentials in a row can a page hold
/// fewer items than asked without being the last.
const MAX_SCAN_CALLS: usize = 10;

/// One stored version of a credential: its KV key and the envelope bytes read.
pub(crate) struct Stored {
    key: String,
    bytes: Bytes,
}

impl Stored {
    /// The envelope bytes (a change claims the version it read by them, see
    /// [`crate::change::Changes::claim_version`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A place in the credential listing: list the store from `store` (its cursor; `None`: from
/// the start) and skip the keys up to `after` (the last key listed), which that store page may
/// begin with.
#[derive(Default, Serialize, Deserialize)]
struct Place {
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

/// A record sealed for writing, checked against the store's limits.
pub(crate) struct Sealed {
    key: String,
    envelope: Bytes,
    options: PutOptions,
}

/// Decrypted credentials by alias, each with the stored bytes it was opened from (see
/// [`CredentialStore::load`]). Bounded, so memory stays flat. Why reuse is keyed on the stored
/// bytes rather than invalidated on change: docs/decisions/0031-opened-credential-cache.md.
#[derive(Default)]
pub(crate) struct OpenedCache(Mutex<Opened>);

#[derive(Default)]
struct Opened {
    by_alias: HashMap<String, Slot>,
    /// When idle entries are next looked for ([`SWEEP_EVERY_MS`]).
    next_sweep_ms: u64,
    /// Counts [`CredentialStore::forget`]s. A load that read the store before a forget does not
    /// cache what it opened: the forget may be the delete of that very record, and the copy
    /// would then stay in memory for good.
    forgets: u64,
}

impl OpenedCache {
    /// Entries held (idle ones included until the next sweep).
    pub(crate) fn len(&self) -> usize {
        self.lock().by_alias.len()
    }

    /// A panic while the map was locked cannot leave it half-updated (every critical section is
    /// one map call), so a poisoned lock is used as is: above all, removals must still happen.
    fn lock(&self) -> MutexGuard<'_, Opened> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An opened credential and when it was last used.
struct Slot {
    entry: OpenedCredential,
    used_ms: u64,
}

impl Opened {
    /// Drop the entries unused for [`OPEN_IDLE_MS`], once per [`SWEEP_EVERY_MS`] at most.
    fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        self.by_alias
            .retain(|_, slot| now_ms.saturating_sub(slot.used_ms) < OPEN_IDLE_MS);
    }
}

/// A decrypted credential and the stored envelope it came from.
#[derive(Clone)]
pub(crate) struct OpenedCredential {
    stored: Bytes,
    pub(crate) record: Arc<CredentialRecord>,
    /// The scrubber of the record's own secrets, built on first use (not for OAuth2 records,
    /// whose tokens change independently of the record).
    pub(crate) scrubber: Arc<OnceLock<Arc<Scrubber>>>,
    /// For an OAuth2 record, the binding its cached tokens must carry
    /// ([`crate::oauth::binding`]), computed once per version.
    pub(crate) oauth_binding: Option<String>,
    /// The base URL of the pass-through proxy, parsed and checked (SSRF, under the
    /// `allow_loopback` setting it holds) on first use (`crate::proxy::target::checked_base`).
    pub(crate) base_url: Arc<OnceLock<(bool, crate::ssrf::Target)>>,
}

/// The credential records of one deployment.
#[derive(Clone, Copy)]
pub(crate) struct CredentialStore<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    opened: &'a OpenedCache,
}

/// 404 for an alias that is not stored (`credential_not_found`).
fn not_found(alias: &str) -> Error {
    no_such_alias(alias).with_code(Code::CredentialNotFound)
}

/// 404 for an alias no credential can have (invalid name): the plain `not_found` code.
pub(crate) fn no_such_alias(alias: &str) -> Error {
    Error::not_found(format!("no credential '{alias}'"))
}

impl<'a> CredentialStore<'a> {
    #[inline]
    pub(crate) fn new(ports: &'a Ports, keys: &'a Keys, opened: &'a OpenedCache) -> Self {
        CredentialStore {
            ports,
            keys,
            opened,
        }
    }

    /// The stored envelope of a credential; 404 `credential_not_found` if there is none (plain
    /// `not_found` for an alias no record can have).
    pub(crate) async fn read(&self, alias: &str) -> Result<Stored> {
        validate_name("alias", alias).map_err(|_| no_such_alias(alias))?;
        let key = cred_key(alias);
        let bytes = self
            .ports
            .kv
            .get(&key)
            .await?
            .ok_or_else(|| not_found(alias))?;
        Ok(Stored { key, bytes })
    }

    /// Whether a record of `alias` exists (a valid alias is assumed).
    pub(crate) async fn exists(&self, alias: &str) -> Result<bool> {
        Ok(self.ports.kv.get(&cred_key(alias)).await?.is_some())
    }

    /// Decrypt and parse a stored version.
    pub(crate) fn open(&self, stored: &Stored) -> Result<CredentialRecord> {
        let text = std::str::from_utf8(&stored.bytes).map_err(|_| {
            Error::unavailable("stored credential is not an envelope")
                .with_code(Code::DecryptFailed)
        })?;
        let plain = self.keys.open_envelope(&stored.key, text)?;
        serde_json::from_slice(&plain).map_err(|_| {
            Error::unavailable("stored credential is unreadable").with_code(Code::DecryptFailed)
        })
    }

    /// One credential's metadata, from the cleartext KV metadata (nothing is decrypted).
    pub(crate) async fn meta(&self, alias: &str) -> Result<CredentialMeta> {
        validate_name("alias", alias).map_err(|_| no_such_alias(alias))?;
        let entry = self
            .ports
            .kv
            .get_with_metadata(&cred_key(alias))
            .await?
            .ok_or_else(|| not_found(alias))?;
        meta_from(alias, entry.metadata)
    }

    /// One page of the metadata of the credentials whose alias is `visible`, in alias order:
    /// `limit` items (1 to 1000, default 1000), or fewer on the last page only. A page is filled
    /// from as many store pages as it takes (up to [`MAX_SCAN_CALLS`] store calls), and the
    /// next visible item is looked for before a cursor is handed out, so that the shape of the
    /// pages (how many items each holds, whether an empty one comes last) is the same whatever
    /// credentials the caller cannot see sit between its own.
    ///
    /// The cursor names a place in the store (the store's own cursor, and the last key listed)
    /// that may be next to an alias the caller may not see: it is handed out sealed, so paging
    /// cannot enumerate hidden aliases (400 `invalid_cursor` for one not sealed here).
    pub(crate) async fn list(
        &self,
        cursor: Option<String>,
        limit: Option<usize>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<CredentialMeta>, Option<String>)> {
        let limit = kv_validate::limit(limit)?;
        let mut at = match cursor {
            Some(c) => self.open_cursor(&c)?,
            None => Place::default(),
        };
        let mut out = Vec::new();
        for _ in 0..MAX_SCAN_CALLS {
            let page = self
                .ports
                .kv
                .list(ListOptions {
                    prefix: Some(CRED_PREFIX.into()),
                    cursor: at.store.clone(),
                    limit: Some(SCAN_PAGE),
                })
                .await?;
            for k in page.keys {
                if at
                    .after
                    .as_deref()
                    .is_some_and(|after| k.name.as_str() <= after)
                {
                    continue;
                }
                let alias = &k.name[CRED_PREFIX.len()..];
                if !visible(alias) {
                    continue;
                }
                if out.len() == limit {
                    // There is a next page, and it starts here.
                    return Ok((out, Some(self.seal_cursor(&at))));
                }
                out.push(meta_from(alias, k.metadata)?);
                at.after = Some(k.name);
            }
            match page.cursor {
                None => return Ok((out, None)),
                Some(next) => at.store = Some(next),
            }
        }
        Ok((out, Some(self.seal_cursor(&at))))
    }

    /// Seal a listing place into a cursor.
    fn seal_cursor(&self, at: &Place) -> String {
        let json = serde_json::to_vec(at).unwrap_or_default();
        self.keys.seal_cursor(CURSOR_AD, &json)
    }

    /// Open a cursor sealed by [`Self::seal_cursor`]. A cursor of an earlier version (the
    /// store's cursor alone, sealed) is read as the place right after that store page.
    fn open_cursor(&self, sealed: &str) -> Result<Place> {
        let invalid = || Error::bad_request("invalid cursor").with_code(Code::InvalidCursor);
        let raw = self
            .keys
            .open_cursor(CURSOR_AD, sealed)
            .map_err(|_| invalid())?;
        if raw.first() == Some(&b'{') {
            return serde_json::from_slice(&raw).map_err(|_| invalid());
        }
        let store = String::from_utf8(raw.to_vec()).map_err(|_| invalid())?;
        Ok(Place {
            store: Some(store),
            after: None,
        })
    }

    /// Seal `record` for writing, with its metadata, refusing what the store would refuse
    /// before anything is claimed or written (400 `policy_too_large` when the hosts and
    /// description overflow the 1024-byte metadata).
    pub(crate) fn seal(&self, record: &CredentialRecord) -> Result<Sealed> {
        let key = cred_key(&record.alias);
        let plain = plaintext(record)?;
        let envelope = Bytes::from(self.keys.seal(&key, &plain));
        let meta = serde_json::to_value(record.meta()).map_err(|_| Error::internal())?;
        let options = PutOptions {
            expiration_ttl: None,
            metadata: Some(meta),
        };
        kv_validate::put(&key, &envelope, &options).map_err(|e| {
            if e.code() == Code::MetadataTooLarge {
                Error::bad_request(
                    "too many or too long allowed_hosts/description (metadata over 1024 bytes)",
                )
                .with_code(Code::PolicyTooLarge)
            } else {
                e
            }
        })?;
        Ok(Sealed {
            key,
            envelope,
            options,
        })
    }

    /// Write a sealed record.
    pub(crate) async fn put(&self, sealed: Sealed) -> Result<()> {
        self.ports
            .kv
            .put(&sealed.key, sealed.envelope, sealed.options)
            .await
    }

    /// Delete the record of `alias` and its opened copy.
    pub(crate) async fn delete(&self, alias: &str) -> Result<()> {
        self.ports.kv.delete(&cred_key(alias)).await?;
        self.forget(alias);
        Ok(())
    }

    /// Load a credential for use: the store is read every time, so a change by any writer
    /// (another process, an edge sync) is seen at once, but an unchanged record (byte-identical
    /// envelope) is not decrypted, parsed and given a new scrubber again — that work costs more
    /// than the rest of an execute (docs/decisions/0031-opened-credential-cache.md).
    pub(crate) async fn load(&self, alias: &str) -> Result<OpenedCredential> {
        let forgets = self.opened.lock().forgets;
        let stored = match self.read(alias).await {
            Ok(found) => found,
            Err(e) => {
                if e.code() == Code::CredentialNotFound {
                    // Deleted by another writer: drop its decrypted secrets too.
                    self.forget(alias);
                }
                return Err(e);
            }
        };
        let now = self.ports.now_ms();
        {
            let mut cache = self.opened.lock();
            cache.sweep(now);
            if let Some(slot) = cache
                .by_alias
                .get_mut(alias)
                .filter(|slot| slot.entry.stored == stored.bytes)
            {
                slot.used_ms = now;
                return Ok(slot.entry.clone());
            }
        }
        let record = self.open(&stored)?;
        let oauth_binding = match &record.data {
            CredentialData::Oauth2(d) => Some(crate::oauth::binding(self.keys, &record, d)?),
            _ => None,
        };
        let entry = OpenedCredential {
            record: Arc::new(record),
            stored: stored.bytes,
            scrubber: Arc::default(),
            oauth_binding,
            base_url: Arc::default(),
        };
        {
            let mut cache = self.opened.lock();
            if cache.forgets == forgets {
                let map = &mut cache.by_alias;
                if map.len() >= MAX_OPEN && !map.contains_key(alias) {
                    map.clear();
                }
                map.insert(
                    alias.to_owned(),
                    Slot {
                        entry: entry.clone(),
                        used_ms: now,
                    },
                );
            }
        }
        Ok(entry)
    }

    /// Drop the decrypted copy of a credential (after it changed or was deleted here), so its
    /// secrets do not outlive it in memory.
    pub(crate) fn forget(&self, alias: &str) {
        let now = self.ports.now_ms();
        let mut cache = self.opened.lock();
        cache.forgets = cache.forgets.wrapping_add(1);
        cache.by_alias.remove(alias);
        cache.sweep(now);
    }

    /// Aliases whose decrypted credentials are kept in memory, sorted (after dropping the idle
    /// ones, as any use of the cache does).
    pub(crate) fn opened_aliases(&self) -> Vec<String> {
        let now = self.ports.now_ms();
        let mut cache = self.opened.lock();
        cache.sweep(now);
        let mut aliases: Vec<String> = cache.by_alias.keys().cloned().collect();
        aliases.sort();
        aliases
    }
}

/// The JSON of a record, in a buffer allocated once at its final size and zeroized when dropped:
/// a `Vec` grown while serializing would free earlier, smaller copies of the secret unzeroized.
fn plaintext(record: &CredentialRecord) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut size = Count(0);
    serde_json::to_writer(&mut size, record).map_err(|_| Error::internal())?;
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(size.0));
    serde_json::to_writer(&mut *plain, record).map_err(|_| Error::internal())?;
    Ok(plain)
}

fn meta_from(alias: &str, metadata: Option<serde_json::Value>) -> Result<CredentialMeta> {
    let mut meta: CredentialMeta = metadata
        .and_then(|m| serde_json::from_value(m).ok())
        .ok_or_else(|| {
            Error::unavailable("credential metadata is missing").with_code(Code::InvalidRecord)
        })?;
    meta.alias = alias.to_string();
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{ApiKeyData, CredentialData};
    use crate::policy::Policy;
    use crate::secret::Secret;

    /// The plaintext of a record is written into one buffer of its exact size: a buffer grown
    /// while serializing frees smaller copies of the secret without zeroizing them.
    #[test]
    fn a_record_is_serialized_into_one_buffer_of_its_exact_size() {
        let record = CredentialRecord {
            id: "00".into(),
            alias: "github".into(),
            description: "a description \"quoted\" é".into(),
            data: CredentialData::ApiKey(ApiKeyData {
                key: Secret::new("sk-live-\u{1F600}-".repeat(50)),
                header: None,
                prefix: None,
            }),
            policy: Policy {
                allowed_hosts: vec!["api.github.com".into()],
                ..Policy::default()
            },
            base_url: Some("https://api.github.com".into()),
            created_at: 1,
            updated_at: 2,
        };
        let plain = plaintext(&record).unwrap_or_default();
        assert_eq!(plain.len(), plain.capacity());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&plain).ok(),
            serde_json::to_value(&record).ok()
        );
    }
}
