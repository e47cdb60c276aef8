//! The deployment's keyring in the store: loaded (or created on first run) once per process,
//! and rotated to a new master key. The only code that touches `sys:keyring` and
//! `sys:keyring-next`.

use bytes::Bytes;

use crate::auth::integrity;
use crate::auth::keys::KEY_PREFIX;
use crate::credential::{CRED_PREFIX, OAUTH_PREFIX};
use crate::crypto::{self, KeyringRecord, Keys, MasterSecret};
use crate::error::{Code, Error, Result};
use crate::kv::{list_all, put_json};
use crate::ports::{KvStore, ListOptions, Ports, PutOptions};

/// KV key of the keyring.
pub const KEYRING_KEY: &str = crypto::KEYRING_KV_KEY;
/// KV key of the keyring being rotated to (present only while a rotation is unfinished).
pub const KEYRING_NEXT_KEY: &str = "sys:keyring-next";

/// The stored keyring record (503 `invalid_keyring` when it is missing or malformed).
pub async fn read(kv: &dyn KvStore) -> Result<KeyringRecord> {
    let bytes = kv
        .get(KEYRING_KEY)
        .await?
        .ok_or_else(|| Error::unavailable("no keyring").with_code(Code::InvalidKeyring))?;
    serde_json::from_slice(&bytes).map_err(|_| {
        Error::unavailable("stored keyring is invalid").with_code(Code::InvalidKeyring)
    })
}

/// Session-store counter (limit 1) that claims the creation of a deployment's keyring: of the
/// instances that find no keyring at the same time, exactly one is allowed to create it. See
/// docs/decisions/0061-one-keyring-on-first-start.md.
pub const KEYRING_CLAIM_KEY: &str = "sys:keyring-create";

/// How long a claim holds beyond the KV settle time: long enough for the winner to derive its keys
/// and write the keyring; after it, a claim whose winner died before writing is free again.
pub const KEYRING_CLAIM_MARGIN_MS: u64 = 5 * 60 * 1000;

/// `Retry-After` of an instance that lost the claim and cannot read the winner's keyring yet.
pub const KEYRING_STARTING_RETRY_SECS: u64 = 5;

/// Load the keyring and derive the keys from `master` (the slow KDF runs here, once), or create
/// the keyring on first run.
///
/// A master key that does not match the stored keyring fails with `Unavailable`
/// (`wrong_master_key`). A store that holds records but no keyring lost it: a new keyring would
/// have a new salt and MAC key and make every record unreadable for good, so that is refused
/// (`keyring_missing`).
///
/// Exactly one instance creates the keyring, also when several start at once on an empty store
/// (cold Workers isolates on a first deploy, or two embedders sharing a store): creation is
/// claimed with a [`SessionStore`](crate::ports::SessionStore) counter ([`KEYRING_CLAIM_KEY`],
/// strongly consistent: a Durable Object on Workers), held for `kv_settle_ms` +
/// [`KEYRING_CLAIM_MARGIN_MS`]. The winner writes its keyring and reads the stored one back (the
/// one every other instance will read); an instance that lost the claim never writes a keyring:
/// it reads the winner's, or, while that is not visible yet (the winner is still deriving its
/// keys, or Workers KV has not propagated it), fails with `Unavailable` (`keyring_starting`,
/// `Retry-After`), and a later open reads it.
pub async fn open_or_create(
    ports: &Ports,
    master: &MasterSecret,
    kv_settle_ms: u64,
) -> Result<Keys> {
    let kv = &*ports.kv;
    if let Some(bytes) = kv.get(KEYRING_KEY).await? {
        return Keys::open(master, &parse(&bytes)?);
    }
    for prefix in [CRED_PREFIX, KEY_PREFIX] {
        let page = kv
            .list(ListOptions {
                prefix: Some(prefix.into()),
                cursor: None,
                limit: Some(1),
            })
            .await?;
        if !page.keys.is_empty() {
            return Err(Error::unavailable(
                "the store holds records but no keyring (sys:keyring is missing or unreadable); \
                 restore it from a backup: a new keyring would make every record unreadable",
            )
            .with_code(Code::KeyringMissing));
        }
    }
    let hold_ms = kv_settle_ms.saturating_add(KEYRING_CLAIM_MARGIN_MS);
    let claim = ports
        .sessions
        .hit(KEYRING_CLAIM_KEY, hold_ms, 1, ports.now_ms())
        .await?;
    if !claim.allowed {
        // Another instance is creating it: use its keyring, never one of our own.
        return match kv.get(KEYRING_KEY).await? {
            Some(bytes) => Keys::open(master, &parse(&bytes)?),
            None => Err(Error::unavailable(
                "another instance is creating this deployment's keyring; retry in a few seconds",
            )
            .with_code(Code::KeyringStarting)
            .with_retry_after(KEYRING_STARTING_RETRY_SECS)),
        };
    }
    let created = create(ports, master).await;
    let (keys, written) = match created {
        Ok(c) => c,
        Err(e) => {
            // Free the claim at once so that the next start tries again (best effort: else it
            // frees itself when it expires).
            let _ = ports.sessions.reset_counter(KEYRING_CLAIM_KEY).await;
            return Err(e);
        }
    };
    // Read back what is stored: that is what every other instance will use. It is ours unless
    // another instance wrote one after ours (possible only once a claim has expired).
    match kv.get(KEYRING_KEY).await? {
        Some(stored) if stored != written => Keys::open(master, &parse(&stored)?),
        _ => Ok(keys),
    }
}

fn parse(bytes: &[u8]) -> Result<KeyringRecord> {
    serde_json::from_slice(bytes).map_err(|_| {
        Error::unavailable("the stored keyring (sys:keyring) is not valid JSON")
            .with_code(Code::InvalidKeyring)
    })
}

/// Create a new keyring and write it; returns the keys and the bytes written.
///
/// A new deployment holds no record of a version before records were signed, so it is marked as
/// signed ([`integrity::mark_signed`]) before its keyring is written: an unsigned `key:` or
/// `role:` record there is refused as tampered and the migration never signs one (review of
/// issue 18). Marked first, so that a keyring is never left without the marker.
async fn create(ports: &Ports, master: &MasterSecret) -> Result<(Keys, Bytes)> {
    let (keys, record) = Keys::create(master, crypto::DEFAULT_PBKDF2_ITERATIONS, ports.now_ms())?;
    let bytes = Bytes::from(serde_json::to_vec(&record).map_err(|_| Error::internal())?);
    integrity::mark_signed(ports, &keys).await?;
    ports
        .kv
        .put(KEYRING_KEY, bytes.clone(), PutOptions::default())
        .await?;
    Ok((keys, bytes))
}

/// Re-encrypt every record under a new master key. Returns the new keyring's key id and the
/// number of records re-sealed. The caller must stop other writers first.
///
/// The next keyring is written first and reused by a re-run, so a rotation interrupted half-way
/// (crash, kill -9) is finished by running the same command again.
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
    let (new_keys, new_record) = match kv.get(KEYRING_NEXT_KEY).await? {
        Some(b) => {
            let next: KeyringRecord = serde_json::from_slice(&b).map_err(|_| {
                Error::unavailable("stored next keyring is invalid").with_code(Code::InvalidKeyring)
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
    for prefix in [CRED_PREFIX, OAUTH_PREFIX] {
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
