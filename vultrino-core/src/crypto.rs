//! Master key, keyring, envelope encryption, MACs and admin password hashing.
//!
//! # Key hierarchy
//!
//! ```text
//! VULTRINO_MASTER_KEY ──(raw 32 bytes, or PBKDF2-HMAC-SHA256(passphrase, salt, iterations))──▶ ikm
//! ikm ──HKDF-SHA256(salt)──▶ info "vultrino/v1/credentials" ─▶ AES-256-GCM key for every envelope
//!                         └─▶ info "vultrino/v1/key-check"   ─▶ AES-256-GCM key for the key-check only
//! random 32-byte MAC key, stored sealed in `sys:keyring`     ─▶ HMAC-SHA256 of API-key secrets
//! ```
//!
//! The salt, iteration count and key id live in the cleartext [`KeyringRecord`] at `sys:keyring`.
//! Deriving is slow on purpose (PBKDF2), so a [`Keys`] is built once per process / isolate and
//! shared behind an `Arc`; [`Keys::seal`] and [`Keys::open_envelope`] do no key setup.
//!
//! The key check uses its own HKDF key rather than the credentials key so the one envelope whose
//! plaintext is public (a fixed string) is never under the key that protects secrets.
//!
//! The MAC key is random rather than derived so that API keys stay valid across master-key
//! rotation: rotation re-seals the same MAC key under the new master key.
//!
//! # Envelope v1
//!
//! `base64url_nopad(0x01 | key id (4) | nonce (12) | AES-256-GCM ciphertext + tag (16))`, with
//! associated data = the 5 header bytes followed by the KV key. Binding the KV key means an
//! envelope copied to another record (`cred:a` → `cred:b`) fails to open instead of silently
//! swapping secrets. Nonces are random (96 bits); NIST's bound of 2^32 random-nonce messages per
//! key is far beyond any credential store, and rotation starts a fresh key.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Code, Error, Result};

mod password;
pub use password::{hash_password, verify_password, DEFAULT_PASSWORD_ITERATIONS};

/// PBKDF2 iterations for a master passphrase (OWASP 2023 recommendation for PBKDF2-HMAC-SHA256).
///
/// Paid once per process / isolate. On Workers this is several hundred ms of CPU at every cold
/// start, so a raw 32-byte key (no KDF at all) is the better choice there.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;

/// Upper bound on any PBKDF2 iteration count we accept from stored data (keyring record, PHC
/// string), so a corrupted or hostile value cannot pin a CPU for hours.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The keyring record format version written by this code.
pub const KEYRING_VERSION: u8 = 1;

/// The envelope format version byte.
pub const ENVELOPE_VERSION: u8 = 0x01;

/// KV key of the keyring (also the key-check envelope's associated data).
pub const KEYRING_KV_KEY: &str = "sys:keyring";
const KEYRING_MAC_AD: &str = "sys:keyring#mac";
const INFO_CREDENTIALS: &[u8] = b"vultrino/v1/credentials";
const INFO_KEY_CHECK: &[u8] = b"vultrino/v1/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"vultrino key check v1";
const KDF_RAW: &str = "raw";
const KDF_PBKDF2: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MIN_ENVELOPE_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Base64 decoders that accept input with or without `=` padding.
const B64_STD_ANY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL_ANY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Master secret
// ---------------------------------------------------------------------------------------------

/// The master secret from `VULTRINO_MASTER_KEY` / `ENCRYPTION_KEY`.
///
/// If the text (ignoring surrounding whitespace, which key files and env vars routinely gain)
/// decodes to exactly 32 bytes as standard or url-safe base64 (padding optional) or as hex, it is
/// a raw key; otherwise it is a passphrase stretched by PBKDF2-HMAC-SHA256 with the keyring's salt
/// and iteration count. Zeroized on drop; `Debug` prints `MasterSecret([redacted])`.
pub struct MasterSecret(Master);

enum Master {
    Raw(SecretBox<[u8; 32]>),
    Passphrase(SecretString),
}

impl MasterSecret {
    /// Parse the master key text. Empty or whitespace-only text is a BadRequest
    /// `invalid_master_key` (an empty passphrase would encrypt everything under a public key).
    pub fn parse(text: &str) -> Result<MasterSecret> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::bad_request(
                "the master key (VULTRINO_MASTER_KEY) is empty; set it to a 32-byte base64/hex key or a passphrase",
            )
            .with_code(Code::InvalidMasterKey));
        }
        if let Some(raw) = decode_raw_key(text) {
            return Ok(MasterSecret(Master::Raw(raw)));
        }
        Ok(MasterSecret(Master::Passphrase(SecretString::from(text))))
    }

    /// True when the secret is a raw 32-byte key (no PBKDF2 stretching).
    pub fn is_raw(&self) -> bool {
        matches!(self.0, Master::Raw(_))
    }

    /// A new random 32-byte key and its base64url (no padding) text, for writing a key file.
    /// Panics only if the OS RNG is unavailable (see [`random_bytes`]).
    pub fn generate_raw() -> (MasterSecret, String) {
        let key = SecretBox::init_with_mut(|k: &mut [u8; 32]| {
            getrandom::getrandom(k).expect("the OS random number generator is unavailable")
        });
        let text = b64url(key.expose_secret());
        (MasterSecret(Master::Raw(key)), text)
    }

    fn kdf_name(&self) -> &'static str {
        match self.0 {
            Master::Raw(_) => KDF_RAW,
            Master::Passphrase(_) => KDF_PBKDF2,
        }
    }

    /// Input keying material for HKDF: the raw key, or the PBKDF2 output for a passphrase.
    fn ikm(&self, salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        match &self.0 {
            Master::Raw(key) => out.copy_from_slice(key.expose_secret()),
            Master::Passphrase(pass) => pbkdf2::pbkdf2_hmac::<Sha256>(
                pass.expose_secret().as_bytes(),
                salt,
                iterations,
                out.as_mut(),
            ),
        }
        out
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret([redacted])")
    }
}

/// Decode `text` as a 32-byte raw key (hex, then base64 in either alphabet), or `None`.
fn decode_raw_key(text: &str) -> Option<SecretBox<[u8; 32]>> {
    let decoded: Zeroizing<Vec<u8>> = if text.len() == 64 {
        Zeroizing::new(hex_decode(text)?)
    } else {
        let std = B64_STD_ANY.decode(text).map(Zeroizing::new);
        std.or_else(|_| B64_URL_ANY.decode(text).map(Zeroizing::new))
            .ok()?
    };
    if decoded.len() != 32 {
        return None;
    }
    Some(SecretBox::init_with_mut(|k: &mut [u8; 32]| {
        k.copy_from_slice(&decoded)
    }))
}

// ---------------------------------------------------------------------------------------------
// Keyring
// ---------------------------------------------------------------------------------------------

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

/// Derived, cached key material for one master key. Build once per process / isolate and share
/// it (`Arc<Keys>`). `Debug` prints the key id only. The AES round keys are zeroized on drop
/// (the `aes` crate's `zeroize` feature is enabled for that).
pub struct Keys {
    key_id: [u8; 4],
    cipher: Aes256Gcm,
    mac_key: SecretBox<[u8; 32]>,
    /// HMAC keyed once, cloned per call, so [`Keys::mac`] does no key setup.
    mac: Hmac<Sha256>,
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
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.expose_secret())
            .map_err(|_| Error::internal())?;
        Ok(Keys {
            key_id,
            cipher,
            mac_key,
            mac,
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

    /// HMAC-SHA256 of `data` under the keyring MAC key (used for API-key secrets).
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check that `tag` is the full 32-byte [`Keys::mac`] of `data`.
    pub fn verify_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// The key id an envelope claims, without opening it (e.g. to find records a rotation has not
/// re-sealed yet). Malformed text → BadRequest `invalid_envelope`.
pub fn envelope_key_id(envelope: &str) -> Result<[u8; 4]> {
    let bytes = b64url_decode(envelope).map_err(|_| malformed_envelope())?;
    if bytes.len() < MIN_ENVELOPE_LEN || bytes[0] != ENVELOPE_VERSION {
        return Err(malformed_envelope());
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&bytes[1..HEADER_LEN]);
    Ok(id)
}

fn malformed_envelope() -> Error {
    Error::bad_request("not a valid envelope").with_code(Code::InvalidEnvelope)
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

fn associated_data(header: &[u8], kv_key: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + kv_key.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(kv_key.as_bytes());
    ad
}

fn seal_with(cipher: &Aes256Gcm, key_id: [u8; 4], kv_key: &str, plaintext: &[u8]) -> String {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut buf = Zeroizing::new(Vec::with_capacity(MIN_ENVELOPE_LEN + plaintext.len()));
    buf.push(ENVELOPE_VERSION);
    buf.extend_from_slice(&key_id);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plaintext);
    let ad = associated_data(&buf[..HEADER_LEN], kv_key);
    let body_start = HEADER_LEN + NONCE_LEN;
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &ad, &mut buf[body_start..])
        .expect("plaintext within AES-GCM's 64 GiB limit");
    buf.extend_from_slice(&tag);
    b64url(&buf)
}

enum OpenError {
    Malformed,
    KeyId([u8; 4]),
    Auth,
}

fn open_with(
    cipher: &Aes256Gcm,
    key_id: [u8; 4],
    kv_key: &str,
    envelope: &str,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let mut buf = Zeroizing::new(b64url_decode(envelope).map_err(|_| OpenError::Malformed)?);
    if buf.len() < MIN_ENVELOPE_LEN || buf[0] != ENVELOPE_VERSION {
        return Err(OpenError::Malformed);
    }
    let mut claimed = [0u8; 4];
    claimed.copy_from_slice(&buf[1..HEADER_LEN]);
    if claimed != key_id {
        return Err(OpenError::KeyId(claimed));
    }
    let ad = associated_data(&buf[..HEADER_LEN], kv_key);
    let tag_start = buf.len() - TAG_LEN;
    let tag = *Tag::from_slice(&buf[tag_start..]);
    let nonce = *Nonce::from_slice(&buf[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    cipher
        .decrypt_in_place_detached(
            &nonce,
            &ad,
            &mut buf[HEADER_LEN + NONCE_LEN..tag_start],
            &tag,
        )
        .map_err(|_| OpenError::Auth)?;
    // Shift the plaintext to the front inside the same (zeroize-on-drop) allocation.
    buf.truncate(tag_start);
    buf.drain(..HEADER_LEN + NONCE_LEN);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// `N` bytes from the OS RNG (`crypto.getRandomValues` on wasm32).
///
/// # Panics
/// If the OS random number generator is unavailable. There is no safe fallback for key, nonce
/// or token generation, and on every supported platform (Linux, macOS, Windows, Workers) this
/// does not happen in practice.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).expect("the OS random number generator is unavailable");
    out
}

/// Lowercase hex SHA-256 of `data` (e.g. session-token and audit hashes).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Constant-time equality (time depends only on the lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Decode base64url, padding optional. Malformed → BadRequest `invalid_base64`.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>> {
    B64_URL_ANY
        .decode(text)
        .map_err(|_| Error::bad_request("malformed base64url").with_code(Code::InvalidBase64))
}

/// Lowercase hex.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for b in data {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Decode hex (either case); `None` if malformed.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}
