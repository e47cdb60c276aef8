//! The master secret: the one input every other key derives from.

use super::*;

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

    pub(super) fn kdf_name(&self) -> &'static str {
        match self.0 {
            Master::Raw(_) => KDF_RAW,
            Master::Passphrase(_) => KDF_PBKDF2,
        }
    }

    /// Input keying material for HKDF: the raw key, or the PBKDF2 output for a passphrase.
    pub(super) fn ikm(&self, salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
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
