//! Master key, keyring, envelope encryption, MACs and admin password hashing.
//!
//! # Key hierarchy
//!
//! ```text
//! VULTRINO_MASTER_KEY ──(raw 32 bytes, or PBKDF2-HMAC-SHA256(passphrase, salt, iterations))──▶ ikm
//! ikm ──HKDF-SHA256(salt)──▶ info "vultrino/v1/credentials" ─▶ AES-256-GCM key for every envelope
//!                         └─▶ info "vultrino/v1/key-check"   ─▶ AES-256-GCM key for the key-check only
//! random 32-byte MAC key, stored sealed in `sys:keyring`     ─▶ HMAC-SHA256 of API-key secrets
//! MAC key ──HKDF-SHA256(no salt)──▶ info "vultrino/v1/mac/record"         ─▶ HMAC of key:/role: records
//!                              ├─▶ info "vultrino/v1/mac/version-claim"  ─▶ HMAC naming claimed versions
//!                              ├─▶ info "vultrino/v1/mac/scrubber-cache" ─▶ HMAC naming cached scrubbers
//!                              ├─▶ info "vultrino/v1/mac/oauth-binding"  ─▶ HMAC binding OAuth2 tokens
//!                              └─▶ info "vultrino/v1/cursors"            ─▶ AES-256-GCM key of listing cursors
//! ```
//!
//! One key per purpose ([`MacPurpose`], and the cursor key), so no value made for one purpose
//! verifies as another (docs/decisions/0047-one-key-per-purpose.md). API-key secrets keep the MAC
//! key itself: their stored tags cannot be recomputed without the secrets. Every purpose key
//! derives from the MAC key, which rotation keeps, so record signatures survive a master-key
//! rotation like API keys do.
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

mod envelope;
mod keys;
mod master;
mod password;
mod signed;

pub use envelope::envelope_key_id;
pub use keys::{KeyringRecord, Keys, MacPurpose};
pub use master::MasterSecret;
pub use password::{
    check_admin_password, hash_password, password_hash_iterations, verify_password,
    DEFAULT_PASSWORD_ITERATIONS, MIN_ADMIN_PASSWORD_CHARS, MIN_PASSWORD_ITERATIONS,
};
pub use signed::RecordCheck;

/// PBKDF2 iterations for a master passphrase (OWASP 2023 recommendation for PBKDF2-HMAC-SHA256).
///
/// Paid once per process / isolate. On Workers that is paid inside an isolate's first request,
/// so a raw 32-byte key (no KDF at all) is the better choice there: see
/// docs/decisions/0003-master-passphrase-kdf.md (the cost measured in workerd is in
/// benches/README.md, "Workers").
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
const INFO_MAC_RECORD: &[u8] = b"vultrino/v1/mac/record";
const INFO_MAC_VERSION_CLAIM: &[u8] = b"vultrino/v1/mac/version-claim";
const INFO_MAC_SCRUBBER_CACHE: &[u8] = b"vultrino/v1/mac/scrubber-cache";
const INFO_MAC_OAUTH_BINDING: &[u8] = b"vultrino/v1/mac/oauth-binding";
const INFO_MAC_SESSION_TOKEN: &[u8] = b"vultrino/v1/mac/session-token";
const INFO_MAC_AGENT_TOKEN: &[u8] = b"vultrino/v1/mac/agent-token";
const INFO_CURSORS: &[u8] = b"vultrino/v1/cursors";
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
