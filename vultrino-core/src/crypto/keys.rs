//! The keyring record and the key material derived from it once per process.

use super::envelope::{open_with, seal_with, OpenError};
use super::*;

/// Stored at KV key `sys:keyring` as JSON. Cleartext, never secret: it holds KDF parameters and
/// two envelopes (the key check and the sealed MAC key), never key material in the clear.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyringRecord {
    /// Record format version, currently 1.
    pub version: u8,
    /// 8 hex chars: the 4-byte key id of the current master key, carried in every envelope.
    pub key_id: String,
    /// `"raw"` or `"pbkdf2-sha256"`.
    pub kdf: String,
    /// base64url, 16 random bytes: PBKDF2 salt (passphrase) and HKDF salt (both kinds).
    pub salt: String,
    /// PBKDF2 iterations (0 for raw).
    pub iterations: u32,
    /// Key-check envelope: a fixed plaintext sealed with AD `sys:keyring` under the key-check key.
    pub check: String,
    /// Envelope of the random 32-byte MAC key (AD `sys:keyring#mac`); re-sealed on rotation.
    pub mac_key: String,
    /// When this keyring (this master key) was created.
    pub created_at_ms: u64,
}

/// What a MAC made with [`Keys::mac`] is for. Each purpose has a key of its own (see the module
/// docs of `crypto`), so a value made for one purpose never verifies as another: a scrubber-cache
/// id is not an OAuth2 binding, a version claim is not a record signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacPurpose {
    /// The `mac` of an API key's secret in its `key:` record. The keyring's MAC key itself, as
    /// before per-purpose keys: a stored tag cannot be recomputed without the secret, so changing
    /// this key would void every key issued.
    ApiKeySecret,
    /// The `sig` of a stored record that grants anything (`key:`, `role:`), see
    /// [`Keys::seal_record`].
    Record,
    /// The version id a change claims (`Changes::claim_version`).
    VersionClaim,
    /// The id of a cached scrubber (`ScrubberCache`).
    ScrubberCache,
    /// The binding of a cached OAuth2 token to its credential version (`oauth::binding`).
    OAuthBinding,
    /// The key of an admin session-token tag, derived per admin user name and password hash
    /// (`auth::session::SessionKeys`).
    SessionToken,
    /// The `mac` of an agent token's secret in its `token:` record (`auth::tokens`): a key of
    /// its own, so a token's tag never verifies as an API key's and the reverse.
    AgentTokenSecret,
}

impl MacPurpose {
    /// Every purpose, in the order of [`Keys`]' MAC table.
    pub const ALL: [MacPurpose; 7] = [
        MacPurpose::ApiKeySecret,
        MacPurpose::Record,
        MacPurpose::VersionClaim,
        MacPurpose::ScrubberCache,
        MacPurpose::OAuthBinding,
        MacPurpose::SessionToken,
        MacPurpose::AgentTokenSecret,
    ];

    /// The HKDF info its key is derived with from the MAC key; `None`: the MAC key itself.
    fn info(self) -> Option<&'static [u8]> {
        match self {
            MacPurpose::ApiKeySecret => None,
            MacPurpose::Record => Some(INFO_MAC_RECORD),
            MacPurpose::VersionClaim => Some(INFO_MAC_VERSION_CLAIM),
            MacPurpose::ScrubberCache => Some(INFO_MAC_SCRUBBER_CACHE),
            MacPurpose::OAuthBinding => Some(INFO_MAC_OAUTH_BINDING),
            MacPurpose::SessionToken => Some(INFO_MAC_SESSION_TOKEN),
            MacPurpose::AgentTokenSecret => Some(INFO_MAC_AGENT_TOKEN),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Derived, cached key material for one master key. Build once per process / isolate and share
/// it (`Arc<Keys>`). `Debug` prints the key id only. The AES round keys are zeroized on drop
/// (the `aes` crate's `zeroize` feature is enabled for that).
pub struct Keys {
    key_id: [u8; 4],
    cipher: Aes256Gcm,
    /// Seals listing cursors (never stored): a key of its own, derived from the MAC key.
    cursor_cipher: Aes256Gcm,
    mac_key: SecretBox<[u8; 32]>,
    /// One HMAC per [`MacPurpose`], keyed once and cloned per call, so [`Keys::mac`] does no
    /// key setup.
    macs: [Hmac<Sha256>; MacPurpose::ALL.len()],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// New deployment: random salt, key id and MAC key. Returns the keys and the record to store
    /// at `sys:keyring`. `iterations` applies to a passphrase (ignored and stored as 0 for a raw
    /// key) and must be in `1..=MAX_PBKDF2_ITERATIONS`.
    pub fn create(
        master: &MasterSecret,
        iterations: u32,
        now_ms: u64,
    ) -> Result<(Keys, KeyringRecord)> {
        let mac_key = SecretBox::init_with_mut(|k: &mut [u8; 32]| *k = random_bytes());
        Self::build(master, iterations, now_ms, mac_key, None)
    }

    /// Existing deployment: derive the keys from `master` and the stored record, and verify them
    /// with the key-check envelope.
    ///
    /// Errors: a master key that does not match the record → Unavailable `wrong_master_key` with a
    /// message saying so; a malformed record → Unavailable `invalid_keyring`.
    pub fn open(master: &MasterSecret, record: &KeyringRecord) -> Result<Keys> {
        if record.version != KEYRING_VERSION {
            return Err(invalid_keyring(format!(
                "unsupported keyring version {} (this build reads version {KEYRING_VERSION})",
                record.version
            )));
        }
        let key_id =
            parse_key_id(&record.key_id).ok_or_else(|| invalid_keyring("malformed key_id"))?;
        let salt = b64url_decode(&record.salt).map_err(|_| invalid_keyring("malformed salt"))?;
        if !(SALT_LEN..=64).contains(&salt.len()) {
            return Err(invalid_keyring("salt has the wrong length"));
        }
        match record.kdf.as_str() {
            KDF_RAW | KDF_PBKDF2 => {}
            _ => return Err(invalid_keyring(format!("unknown kdf {:?}", record.kdf))),
        }
        if record.kdf == KDF_PBKDF2 && !(1..=MAX_PBKDF2_ITERATIONS).contains(&record.iterations) {
            return Err(invalid_keyring("PBKDF2 iteration count out of range"));
        }
        if record.kdf != master.kdf_name() {
            let (stored, given) = if master.is_raw() {
                ("a passphrase", "a raw 32-byte key")
            } else {
                ("a raw 32-byte key", "a passphrase")
            };
            return Err(wrong_master_key(
                &record.key_id,
                &format!(
                    " (the keyring was created with {stored}, the master key given is {given})"
                ),
            ));
        }

        let ikm = master.ikm(&salt, record.iterations);
        let check_cipher = derive_cipher(&ikm, &salt, INFO_KEY_CHECK)?;
        let check = match open_with(&check_cipher, key_id, KEYRING_KV_KEY, &record.check) {
            Ok(check) => check,
            Err(OpenError::Malformed | OpenError::KeyId(_)) => {
                return Err(invalid_keyring("malformed key-check envelope"))
            }
            Err(OpenError::Auth) => return Err(wrong_master_key(&record.key_id, "")),
        };
        if !ct_eq(&check, KEY_CHECK_PLAINTEXT) {
            return Err(wrong_master_key(&record.key_id, ""));
        }

        let cipher = derive_cipher(&ikm, &salt, INFO_CREDENTIALS)?;
        let mac_bytes = open_with(&cipher, key_id, KEYRING_MAC_AD, &record.mac_key)
            .map_err(|_| invalid_keyring("the sealed MAC key does not open"))?;
        if mac_bytes.len() != 32 {
            return Err(invalid_keyring("the sealed MAC key has the wrong length"));
        }
        let mac_key = SecretBox::init_with_mut(|k: &mut [u8; 32]| k.copy_from_slice(&mac_bytes));
        Self::assemble(key_id, cipher, mac_key)
    }

    /// Rotation: keys for `new_master` with a new key id and a new salt, and the SAME MAC key
    /// re-sealed (API keys stay valid). Returns the new keys and the record to store once every
    /// envelope has been re-sealed (open with `self`, seal with the new keys).
    pub fn rotate(
        &self,
        new_master: &MasterSecret,
        iterations: u32,
        now_ms: u64,
    ) -> Result<(Keys, KeyringRecord)> {
        let mac_key = SecretBox::init_with_mut(|k: &mut [u8; 32]| {
            k.copy_from_slice(self.mac_key.expose_secret())
        });
        Self::build(new_master, iterations, now_ms, mac_key, Some(self.key_id))
    }

    fn build(
        master: &MasterSecret,
        iterations: u32,
        now_ms: u64,
        mac_key: SecretBox<[u8; 32]>,
        previous_key_id: Option<[u8; 4]>,
    ) -> Result<(Keys, KeyringRecord)> {
        let iterations = if master.is_raw() {
            0
        } else if (1..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
            iterations
        } else {
            return Err(Error::bad_request(format!(
                "PBKDF2 iterations must be between 1 and {MAX_PBKDF2_ITERATIONS}"
            ))
            .with_code(Code::InvalidIterations));
        };
        let salt: [u8; SALT_LEN] = random_bytes();
        // A fresh key id must differ from the one it replaces, or old envelopes would be handed
        // to the new key and fail as "tampered" instead of "sealed under another key".
        let key_id = loop {
            let id: [u8; 4] = random_bytes();
            if Some(id) != previous_key_id {
                break id;
            }
        };

        let ikm = master.ikm(&salt, iterations);
        let check_cipher = derive_cipher(&ikm, &salt, INFO_KEY_CHECK)?;
        let cipher = derive_cipher(&ikm, &salt, INFO_CREDENTIALS)?;
        let record = KeyringRecord {
            version: KEYRING_VERSION,
            key_id: hex(&key_id),
            kdf: master.kdf_name().to_owned(),
            salt: b64url(&salt),
            iterations,
            check: seal_with(&check_cipher, key_id, KEYRING_KV_KEY, KEY_CHECK_PLAINTEXT),
            mac_key: seal_with(&cipher, key_id, KEYRING_MAC_AD, mac_key.expose_secret()),
            created_at_ms: now_ms,
        };
        Ok((Self::assemble(key_id, cipher, mac_key)?, record))
    }

    fn assemble(key_id: [u8; 4], cipher: Aes256Gcm, mac_key: SecretBox<[u8; 32]>) -> Result<Keys> {
        let root = mac_key.expose_secret();
        let hmac = |purpose: MacPurpose| -> Result<Hmac<Sha256>> {
            let key = match purpose.info() {
                None => Zeroizing::new(*root),
                Some(info) => purpose_key(root, info)?,
            };
            <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).map_err(|_| Error::internal())
        };
        let macs = [
            hmac(MacPurpose::ALL[0])?,
            hmac(MacPurpose::ALL[1])?,
            hmac(MacPurpose::ALL[2])?,
            hmac(MacPurpose::ALL[3])?,
            hmac(MacPurpose::ALL[4])?,
            hmac(MacPurpose::ALL[5])?,
            hmac(MacPurpose::ALL[6])?,
        ];
        let cursor_key = purpose_key(root, INFO_CURSORS)?;
        let cursor_cipher =
            Aes256Gcm::new_from_slice(cursor_key.as_ref()).map_err(|_| Error::internal())?;
        Ok(Keys {
            key_id,
            cipher,
            cursor_cipher,
            mac_key,
            macs,
        })
    }

    /// The 4-byte id of the master key these keys derive from.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The key id as the 8 lowercase hex chars used in [`KeyringRecord::key_id`].
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id)
    }

    /// Seal `plaintext` for storage at `kv_key` (envelope v1, see the module docs).
    ///
    /// # Panics
    /// Only if `plaintext` exceeds AES-GCM's 64 GiB message limit, which no caller can reach (KV
    /// values are capped at 25 MiB), or if the OS RNG is unavailable.
    pub fn seal(&self, kv_key: &str, plaintext: &[u8]) -> String {
        seal_with(&self.cipher, self.key_id, kv_key, plaintext)
    }

    /// Open an envelope stored at `kv_key`.
    ///
    /// Errors: text that is not an envelope (bad base64, too short, unknown version) →
    /// BadRequest `invalid_envelope`; sealed under another key id, tampered, or moved from another
    /// KV key → Unavailable `decrypt_failed`. Messages name the KV key only, never any bytes.
    pub fn open_envelope(&self, kv_key: &str, envelope: &str) -> Result<Zeroizing<Vec<u8>>> {
        open_with(&self.cipher, self.key_id, kv_key, envelope).map_err(|e| match e {
            OpenError::Malformed => {
                Error::bad_request(format!("the value stored at {kv_key} is not a valid envelope"))
                    .with_code(Code::InvalidEnvelope)
            }
            OpenError::KeyId(id) => Error::unavailable(format!(
                "the value stored at {kv_key} was sealed under master key id {}, not the current key id {}; \
                 finish the key rotation",
                hex(&id),
                hex(&self.key_id)
            ))
            .with_code(Code::DecryptFailed),
            OpenError::Auth => Error::unavailable(format!(
                "the value stored at {kv_key} failed authentication (tampered, corrupted, or moved from another key)"
            ))
            .with_code(Code::DecryptFailed),
        })
    }

    /// Seal a listing cursor (never stored) under the cursor key, with associated data `ad`:
    /// envelope v1, like [`Keys::seal`], under a key that seals nothing else.
    pub fn seal_cursor(&self, ad: &str, plaintext: &[u8]) -> String {
        seal_with(&self.cursor_cipher, self.key_id, ad, plaintext)
    }

    /// Open a cursor made by [`Keys::seal_cursor`] with the same `ad`. Anything else (malformed,
    /// tampered, made for another `ad` or under another key) → BadRequest `invalid_cursor`.
    pub fn open_cursor(&self, ad: &str, cursor: &str) -> Result<Zeroizing<Vec<u8>>> {
        open_with(&self.cursor_cipher, self.key_id, ad, cursor)
            .map_err(|_| Error::bad_request("invalid cursor").with_code(Code::InvalidCursor))
    }

    /// HMAC-SHA256 of `data` under the key of `purpose`.
    pub fn mac(&self, purpose: MacPurpose, data: &[u8]) -> [u8; 32] {
        let mut mac = self.macs[purpose.index()].clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check that `tag` is the full 32-byte [`Keys::mac`] of `data` for `purpose`.
    pub fn verify_mac(&self, purpose: MacPurpose, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.macs[purpose.index()].clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// A 32-byte key for one purpose: HKDF-SHA256 of the MAC key (no salt: the MAC key is uniformly
/// random) with `info`.
fn purpose_key(root: &[u8; 32], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, root)
        .expand(info, key.as_mut())
        .map_err(|_| Error::internal())?;
    Ok(key)
}

fn invalid_keyring(detail: impl fmt::Display) -> Error {
    Error::unavailable(format!(
        "the stored keyring ({KEYRING_KV_KEY}) is invalid: {detail}"
    ))
    .with_code(Code::InvalidKeyring)
}

fn wrong_master_key(key_id: &str, detail: &str) -> Error {
    Error::unavailable(format!(
        "the master key (VULTRINO_MASTER_KEY) does not match the stored keyring {KEYRING_KV_KEY} \
         (key id {key_id}){detail}; start with the master key this deployment was created with"
    ))
    .with_code(Code::WrongMasterKey)
}

fn parse_key_id(text: &str) -> Option<[u8; 4]> {
    if text.len() != 8 {
        return None;
    }
    hex_decode(text)?.try_into().ok()
}

fn derive_cipher(ikm: &[u8; 32], salt: &[u8], info: &[u8]) -> Result<Aes256Gcm> {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, key.as_mut())
        .map_err(|_| Error::internal())?;
    Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| Error::internal())
}
