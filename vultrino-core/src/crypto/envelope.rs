//! Envelope v1: sealing and opening, bound to the KV key (see the module doc of `crypto`).

use super::*;

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

fn associated_data(header: &[u8], kv_key: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + kv_key.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(kv_key.as_bytes());
    ad
}

pub(super) fn seal_with(
    cipher: &Aes256Gcm,
    key_id: [u8; 4],
    kv_key: &str,
    plaintext: &[u8],
) -> String {
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

pub(super) enum OpenError {
    Malformed,
    KeyId([u8; 4]),
    Auth,
}

pub(super) fn open_with(
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
