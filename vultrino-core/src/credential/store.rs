//! The stored credentials: the only code that reads, opens, seals, writes or deletes `cred:`
//! records, and the cache of opened (decrypted) credentials that execute reuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;

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
    by_alias: HashMap<String, OpenedCredential>,
    /// Counts [`CredentialStore::forget`]s. A load that read the store before a forget does not
    /// cache what it opened: the forget may be the delete of that very record, and the copy
    /// would then stay in memory for good.
    forgets: u64,
}

impl OpenedCache {
    /// A panic while the map was locked cannot leave it half-updated (every critical section is
    /// one map call), so a poisoned lock is used as is: above all, removals must still happen.
    fn lock(&self) -> MutexGuard<'_, Opened> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// One page of the metadata of the credentials whose alias is `visible`, in alias order.
    /// The store's cursor names the last key listed, which may be an alias the caller may not
    /// see: it is handed out sealed, so paging cannot enumerate hidden aliases (400
    /// `invalid_cursor` for one not sealed here).
    pub(crate) async fn list(
        &self,
        cursor: Option<String>,
        limit: Option<usize>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<CredentialMeta>, Option<String>)> {
        let invalid = || Error::bad_request("invalid cursor").with_code(Code::InvalidCursor);
        let cursor = match cursor {
            Some(c) => {
                let raw = self
                    .keys
                    .open_cursor(CURSOR_AD, &c)
                    .map_err(|_| invalid())?;
                Some(String::from_utf8(raw.to_vec()).map_err(|_| invalid())?)
            }
            None => None,
        };
        let page = self
            .ports
            .kv
            .list(ListOptions {
                prefix: Some(CRED_PREFIX.into()),
                cursor,
                limit,
            })
            .await?;
        let mut out = Vec::with_capacity(page.keys.len());
        for k in page.keys {
            let alias = &k.name[CRED_PREFIX.len()..];
            if visible(alias) {
                out.push(meta_from(alias, k.metadata)?);
            }
        }
        let cursor = page
            .cursor
            .map(|c| self.keys.seal_cursor(CURSOR_AD, c.as_bytes()));
        Ok((out, cursor))
    }

    /// Seal `record` for writing, with its metadata, refusing what the store would refuse
    /// before anything is claimed or written (400 `policy_too_large` when the hosts and
    /// description overflow the 1024-byte metadata).
    pub(crate) fn seal(&self, record: &CredentialRecord) -> Result<Sealed> {
        let key = cred_key(&record.alias);
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(record).map_err(|_| Error::internal())?);
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
        if let Some(entry) = self
            .opened
            .lock()
            .by_alias
            .get(alias)
            .filter(|e| e.stored == stored.bytes)
        {
            return Ok(entry.clone());
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
        };
        {
            let mut cache = self.opened.lock();
            if cache.forgets == forgets {
                let map = &mut cache.by_alias;
                if map.len() >= MAX_OPEN && !map.contains_key(alias) {
                    map.clear();
                }
                map.insert(alias.to_owned(), entry.clone());
            }
        }
        Ok(entry)
    }

    /// Drop the decrypted copy of a credential (after it changed or was deleted here), so its
    /// secrets do not outlive it in memory.
    pub(crate) fn forget(&self, alias: &str) {
        let mut cache = self.opened.lock();
        cache.forgets = cache.forgets.wrapping_add(1);
        cache.by_alias.remove(alias);
    }

    /// Aliases whose decrypted credentials are kept in memory, sorted.
    pub(crate) fn opened_aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = self.opened.lock().by_alias.keys().cloned().collect();
        aliases.sort();
        aliases
    }
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
