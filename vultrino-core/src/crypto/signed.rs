//! Signed records: a stored record that grants anything (`key:`, `role:`) carries `sig`, the
//! HMAC-SHA256 (key of [`MacPurpose::Record`]) of the record with its KV key as associated data.
//! See docs/decisions/0046-signed-key-and-role-records.md.
//!
//! What is signed is the record as the code reads it: `("vultrino/record/v1", kv_key, body)` as
//! JSON, `body` serialized from the parsed struct (fields in declaration order, no maps). So the
//! signature covers every field the code uses, whatever the stored text's field order or
//! escaping; a field the code does not know is neither covered nor used.

use serde::de::DeserializeOwned;

use super::*;

/// Domain of the signed bytes (a new record format would take a new one).
const RECORD_CONTEXT: &str = "vultrino/record/v1";

/// A record as stored: its own fields, then `sig` (absent in records of older versions).
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    #[serde(flatten)]
    body: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// What reading a signed record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCheck<T> {
    /// Signed under this deployment's keys for this very KV key, and unchanged since.
    Signed(T),
    /// Readable, but without a signature: written by a version before records were signed, or
    /// by something that does not hold the master key. Never to be used as it is.
    Unsigned(T),
    /// Not a record of this kind, or a signature that does not match: changed, moved from
    /// another KV key, or signed under another deployment's keys.
    Tampered,
}

impl Keys {
    /// The stored bytes of `body` at `kv_key`: its JSON with `sig` added.
    pub fn seal_record<T: Serialize>(&self, kv_key: &str, body: &T) -> Result<Vec<u8>> {
        let tag = self.mac(MacPurpose::Record, &signed_bytes(kv_key, body)?);
        serde_json::to_vec(&Stored {
            body,
            sig: Some(hex(&tag)),
        })
        .map_err(|_| Error::internal())
    }

    /// Read the record stored at `kv_key` and check its signature (in constant time).
    pub fn open_record<T: Serialize + DeserializeOwned>(
        &self,
        kv_key: &str,
        stored: &[u8],
    ) -> RecordCheck<T> {
        let Ok(Stored { body, sig }) = serde_json::from_slice::<Stored<T>>(stored) else {
            return RecordCheck::Tampered;
        };
        let Some(sig) = sig else {
            return RecordCheck::Unsigned(body);
        };
        let (Some(tag), Ok(signed)) = (hex_decode(&sig), signed_bytes(kv_key, &body)) else {
            return RecordCheck::Tampered;
        };
        if self.verify_mac(MacPurpose::Record, &signed, &tag) {
            RecordCheck::Signed(body)
        } else {
            RecordCheck::Tampered
        }
    }
}

fn signed_bytes<T: Serialize>(kv_key: &str, body: &T) -> Result<Zeroizing<Vec<u8>>> {
    serde_json::to_vec(&(RECORD_CONTEXT, kv_key, body))
        .map(Zeroizing::new)
        .map_err(|_| Error::internal())
}
