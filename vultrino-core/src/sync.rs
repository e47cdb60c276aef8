//! Hybrid sync and master-key rotation: exporting ciphertext records with the keyring
//! parameters, importing them into another store, and re-encrypting under a new master key.

use bytes::Bytes;

use crate::app::{
    list_all, put_json, App, Export, ExportRecord, KEYRING_KEY, KEYRING_NEXT_KEY, SYNC_PREFIXES,
};
use crate::auth::{Permission, Principal};
use crate::credential;
use crate::crypto::{self, KeyringRecord, Keys, MasterSecret};
use crate::error::{Code, Error, Result};
use crate::ports::{KvStore, PutOptions};

impl App {
    /// Everything a hybrid peer needs: keyring parameters and the ciphertext records.
    pub async fn export(&self, who: &Principal) -> Result<Export> {
        who.require(Permission::Admin)?;
        let keyring_bytes = self
            .ports
            .kv
            .get(KEYRING_KEY)
            .await?
            .ok_or_else(|| Error::unavailable("no keyring").with_code(Code::InvalidKeyring))?;
        let keyring: KeyringRecord = serde_json::from_slice(&keyring_bytes).map_err(|_| {
            Error::unavailable("stored keyring is invalid").with_code(Code::InvalidKeyring)
        })?;
        let mut records = Vec::new();
        for prefix in SYNC_PREFIXES {
            for k in list_all(&*self.ports.kv, prefix).await? {
                if let Some(entry) = self.ports.kv.get_with_metadata(&k.name).await? {
                    let value =
                        String::from_utf8(entry.value.to_vec()).map_err(|_| Error::internal())?;
                    records.push(ExportRecord {
                        key: k.name,
                        value,
                        metadata: entry.metadata,
                    });
                }
            }
        }
        Ok(Export { keyring, records })
    }

    /// Import an export into this (empty or same-keyring) store. The export's keyring must be
    /// openable with this deployment's master key; every credential envelope is verified before
    /// anything is written. Returns how many records were written.
    pub async fn import(kv: &dyn KvStore, master: &MasterSecret, export: &Export) -> Result<usize> {
        let keys = Keys::open(master, &export.keyring)?;
        if let Some(existing) = kv.get(KEYRING_KEY).await? {
            let existing: KeyringRecord = serde_json::from_slice(&existing).map_err(|_| {
                Error::unavailable("local keyring is invalid").with_code(Code::InvalidKeyring)
            })?;
            if existing.key_id != export.keyring.key_id || existing.salt != export.keyring.salt {
                return Err(Error::conflict(
                    "the local store has a different keyring; import into an empty data directory",
                )
                .with_code(Code::KeyringMismatch));
            }
        }
        for r in &export.records {
            if !SYNC_PREFIXES.iter().any(|p| r.key.starts_with(p)) {
                return Err(
                    Error::bad_request(format!("unexpected record key '{}'", r.key))
                        .with_code(Code::InvalidExport),
                );
            }
            if r.key.starts_with(credential::CRED_PREFIX)
                || r.key.starts_with(credential::OAUTH_PREFIX)
            {
                keys.open_envelope(&r.key, &r.value)?;
            }
        }
        put_json(kv, KEYRING_KEY, &export.keyring, None).await?;
        for r in &export.records {
            kv.put(
                &r.key,
                Bytes::from(r.value.clone()),
                PutOptions {
                    expiration_ttl: None,
                    metadata: r.metadata.clone(),
                },
            )
            .await?;
        }
        Ok(export.records.len())
    }

    /// Make this store mirror `export`: delete every local record under the synced prefixes
    /// (credentials, OAuth2 tokens, API keys, roles) that the export does not hold — a credential
    /// deleted or a key revoked on the edge then stops working here too. Run after [`App::import`]
    /// of the same export; only on request (`vultrino sync --prune`), since a local store may hold
    /// records of its own. Returns the deleted keys, sorted.
    pub async fn prune_missing(kv: &dyn KvStore, export: &Export) -> Result<Vec<String>> {
        let present: std::collections::HashSet<&str> =
            export.records.iter().map(|r| r.key.as_str()).collect();
        let mut gone = Vec::new();
        for prefix in SYNC_PREFIXES {
            for k in list_all(kv, prefix).await? {
                if !present.contains(k.name.as_str()) {
                    kv.delete(&k.name).await?;
                    gone.push(k.name);
                }
            }
        }
        gone.sort();
        Ok(gone)
    }

    /// Re-encrypt every record under a new master key. Returns the new keyring's key id and
    /// the number of records re-sealed. The caller must stop other writers first.
    pub async fn rotate_master_key(
        kv: &dyn KvStore,
        old: &MasterSecret,
        new: &MasterSecret,
        now_ms: u64,
    ) -> Result<(String, usize)> {
        let bytes = kv.get(KEYRING_KEY).await?.ok_or_else(|| {
            Error::not_found("no keyring: nothing to rotate").with_code(Code::InvalidKeyring)
        })?;
        let record: KeyringRecord = serde_json::from_slice(&bytes).map_err(|_| {
            Error::unavailable("stored keyring is invalid").with_code(Code::InvalidKeyring)
        })?;
        let old_keys = match Keys::open(old, &record) {
            Ok(k) => k,
            // Interrupted after the keyring flipped (the caller had not yet switched to the new
            // key): nothing left to re-seal; report success so the caller finishes its part.
            Err(e) => {
                if Keys::open(new, &record).is_ok() {
                    return Ok((record.key_id, 0));
                }
                return Err(e);
            }
        };
        // The next keyring is written first and reused by a re-run, so a rotation interrupted
        // half-way (crash, kill -9) is finished by running the same command again.
        let (new_keys, new_record) = match kv.get(KEYRING_NEXT_KEY).await? {
            Some(b) => {
                let next: KeyringRecord = serde_json::from_slice(&b).map_err(|_| {
                    Error::unavailable("stored next keyring is invalid")
                        .with_code(Code::InvalidKeyring)
                })?;
                (Keys::open(new, &next)?, next)
            }
            None => {
                let (k, r) = old_keys.rotate(new, crypto::DEFAULT_PBKDF2_ITERATIONS, now_ms)?;
                put_json(kv, KEYRING_NEXT_KEY, &r, None).await?;
                (k, r)
            }
        };
        let mut count = 0;
        for prefix in [credential::CRED_PREFIX, credential::OAUTH_PREFIX] {
            for k in list_all(kv, prefix).await? {
                let Some(entry) = kv.get_with_metadata(&k.name).await? else {
                    continue;
                };
                let text = std::str::from_utf8(&entry.value).map_err(|_| {
                    Error::unavailable("record is not an envelope").with_code(Code::DecryptFailed)
                })?;
                let plain = match old_keys.open_envelope(&k.name, text) {
                    Ok(p) => p,
                    // Already re-sealed by an interrupted earlier run.
                    Err(_) => {
                        new_keys.open_envelope(&k.name, text)?;
                        count += 1;
                        continue;
                    }
                };
                let sealed = new_keys.seal(&k.name, &plain);
                kv.put(
                    &k.name,
                    Bytes::from(sealed),
                    PutOptions {
                        expiration_ttl: None,
                        metadata: entry.metadata,
                    },
                )
                .await?;
                count += 1;
            }
        }
        put_json(kv, KEYRING_KEY, &new_record, None).await?;
        kv.delete(KEYRING_NEXT_KEY).await?;
        Ok((new_record.key_id, count))
    }
}
