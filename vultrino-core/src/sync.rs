//! Hybrid sync: exporting a deployment's ciphertext records with its keyring parameters, and
//! importing them into another store (optionally pruning what the export no longer holds).
//! Nothing is decrypted on the way except to verify envelopes before an import writes; the
//! signed `key:` and `role:` records are checked too (docs/decisions/0046-signed-key-and-role-records.md).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEvent};
use crate::auth::integrity::RefusedRecord;
use crate::auth::keys::{ApiKeyRecord, KEY_PREFIX};
use crate::auth::roles::ROLE_PREFIX;
use crate::auth::{Permission, Principal, Role};
use crate::credential::{CRED_PREFIX, OAUTH_PREFIX};
use crate::crypto::{KeyringRecord, Keys, MasterSecret, RecordCheck};
use crate::error::{Code, Error, Result};
use crate::keyring::{self, KEYRING_KEY};
use crate::kv::{list_all, put_json};
use crate::ports::{KvStore, PutOptions};

pub mod live;

/// `GET /v1/sync/export`: ciphertext and keyring parameters only.
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub keyring: KeyringRecord,
    pub records: Vec<ExportRecord>,
}

/// One record of an [`Export`], as stored (the value is an envelope or public JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportRecord {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Prefixes of the records a sync carries (not audit, not the keyring itself).
pub const SYNC_PREFIXES: [&str; 4] = [CRED_PREFIX, OAUTH_PREFIX, KEY_PREFIX, ROLE_PREFIX];

/// Everything a hybrid peer needs: keyring parameters and the ciphertext records (admin only).
pub async fn export(kv: &dyn KvStore, who: &Principal) -> Result<Export> {
    who.require(Permission::Admin)?;
    let keyring = keyring::read(kv).await?;
    let mut records = Vec::new();
    for prefix in SYNC_PREFIXES {
        for k in list_all(kv, prefix).await? {
            if let Some(entry) = kv.get_with_metadata(&k.name).await? {
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
/// openable with this deployment's master key; every credential envelope is verified, and every
/// `key:` and `role:` record's signature checked, before anything is written. A record that
/// fails is refused (503 `record_unsigned`, `record_tampered`, `decrypt_failed`), and the refusal
/// of a key or role record is audited in this store (`sync.import`, at `now_ms`). Returns how
/// many records were written.
pub async fn import(
    kv: &dyn KvStore,
    master: &MasterSecret,
    export: &Export,
    now_ms: u64,
) -> Result<usize> {
    let keys = Keys::open(master, &export.keyring)?;
    check_keyring(kv, export).await?;
    verify(kv, &keys, export, now_ms).await?;
    put_json(kv, KEYRING_KEY, &export.keyring, None).await?;
    for r in &export.records {
        put_record(kv, r).await?;
    }
    Ok(export.records.len())
}

/// Refuse (409 `keyring_mismatch`) an export whose keyring is not this store's, when this store
/// has one: its records were sealed under other keys.
pub(crate) async fn check_keyring(kv: &dyn KvStore, export: &Export) -> Result<()> {
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
    Ok(())
}

/// Check every record of `export` before anything is written: only the synced prefixes, every
/// credential envelope opens under `keys`, every `key:` and `role:` record carries its
/// signature (a refusal of one is audited in this store, `sync.import`, at `now_ms`).
pub(crate) async fn verify(
    kv: &dyn KvStore,
    keys: &Keys,
    export: &Export,
    now_ms: u64,
) -> Result<()> {
    for r in &export.records {
        if !SYNC_PREFIXES.iter().any(|p| r.key.starts_with(p)) {
            return Err(
                Error::bad_request(format!("unexpected record key '{}'", r.key))
                    .with_code(Code::InvalidExport),
            );
        }
        if r.key.starts_with(CRED_PREFIX) || r.key.starts_with(OAUTH_PREFIX) {
            keys.open_envelope(&r.key, &r.value)?;
        } else if let Some(refused) = check_signed(keys, r) {
            let mut event = AuditEvent::new(now_ms, "sync", "sync.import", "failure");
            event.record = Some(r.key.clone());
            event.code = Some(refused.code.as_str().to_owned());
            audit_here(kv, &event).await;
            return Err(refused.to_error());
        }
    }
    Ok(())
}

/// Write one record of an export as it came (value and metadata).
pub(crate) async fn put_record(kv: &dyn KvStore, r: &ExportRecord) -> Result<()> {
    kv.put(
        &r.key,
        Bytes::from(r.value.clone()),
        PutOptions {
            expiration_ttl: None,
            metadata: r.metadata.clone(),
        },
    )
    .await
}

/// Why the `key:` or `role:` record `r` of an export must not be imported, if it must not. The
/// check is the one every read makes ([`Keys::open_record`]), with the export's keys; an
/// unsigned record comes from a source that has not signed its records yet.
fn check_signed(keys: &Keys, r: &ExportRecord) -> Option<RefusedRecord> {
    let bytes = r.value.as_bytes();
    let (signed, unsigned) = if let Some(id) = r.key.strip_prefix(KEY_PREFIX) {
        match keys.open_record::<ApiKeyRecord>(&r.key, bytes) {
            RecordCheck::Signed(k) => (k.id == id, false),
            RecordCheck::Unsigned(_) => (false, true),
            RecordCheck::Tampered => (false, false),
        }
    } else {
        let name = r.key.strip_prefix(ROLE_PREFIX).unwrap_or_default();
        match keys.open_record::<Role>(&r.key, bytes) {
            RecordCheck::Signed(role) => (role.name == name && role.id.is_some(), false),
            RecordCheck::Unsigned(_) => (false, true),
            RecordCheck::Tampered => (false, false),
        }
    };
    if signed {
        return None;
    }
    let mut refused = RefusedRecord::new(&r.key, unsigned);
    if unsigned {
        refused.message = format!(
            "the export holds {}, which is not signed: the source runs a version before records \
             were signed, or has not signed its records yet. Upgrade it and sign its records \
             there first (`vultrino migrate-records`, or `POST /v1/admin/migrate-records`); \
             nothing was imported",
            r.key
        );
    } else {
        refused.message = format!(
            "the export holds {}, which failed its integrity check (changed, or written by \
             something that does not hold the master key); nothing was imported",
            r.key
        );
    }
    Some(refused)
}

/// Write an audit event into this store (an import has no `App`), capped like every event
/// ([`AuditEvent::capped`]), kept as long as by default.
async fn audit_here(kv: &dyn KvStore, event: &AuditEvent) {
    let options = PutOptions {
        expiration_ttl: Some(audit::DEFAULT_AUDIT_RETENTION_SECS),
        metadata: None,
    };
    let bytes = event.clone().capped().to_json();
    let _ = kv.put(&event.kv_key(), Bytes::from(bytes), options).await;
}

/// Make this store mirror `export`: delete every local record under the synced prefixes
/// (credentials, OAuth2 tokens, API keys, roles) that the export does not hold — a credential
/// deleted or a key revoked on the edge then stops working here too. Run after [`import`] of the
/// same export; only on request (`vultrino sync --prune`), since a local store may hold records
/// of its own. Returns the deleted keys, sorted.
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
