//! One key per purpose, and signed records: a MAC made for one purpose verifies under no other, a
//! cursor is not an envelope, a signed record is bound to its KV key and every field the code
//! reads — and the API-key MACs stored by earlier versions still verify.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde::{Deserialize, Serialize};
use vultrino_core::crypto::{b64url, KeyringRecord, Keys, MacPurpose, MasterSecret, RecordCheck};
use vultrino_core::error::Code;

fn new_keys() -> Keys {
    let master = MasterSecret::parse(&b64url(&[7u8; 32])).unwrap();
    Keys::create(&master, 0, 0).unwrap().0
}

#[test]
fn a_mac_made_for_one_purpose_verifies_under_no_other() {
    let keys = new_keys();
    let data = b"the same bytes, whatever they name";
    for made in MacPurpose::ALL {
        let tag = keys.mac(made, data);
        for checked in MacPurpose::ALL {
            assert_eq!(
                keys.verify_mac(checked, data, &tag),
                made == checked,
                "a {made:?} MAC checked as {checked:?}"
            );
        }
    }
}

#[test]
fn a_cursor_is_not_an_envelope_and_an_envelope_is_not_a_cursor() {
    let keys = new_keys();
    let ad = "sys:cursor#credentials";
    let cursor = keys.seal_cursor(ad, b"cred:hidden-alias");
    assert_eq!(
        &keys.open_cursor(ad, &cursor).unwrap()[..],
        b"cred:hidden-alias"
    );
    assert!(keys.open_envelope(ad, &cursor).is_err());
    let envelope = keys.seal(ad, b"cred:hidden-alias");
    assert_eq!(
        keys.open_cursor(ad, &envelope).unwrap_err().code(),
        Code::InvalidCursor
    );
    assert!(keys.open_cursor("sys:cursor#other", &cursor).is_err());
}

/// The API keys issued before per-purpose keys stay valid: the fixture store (written by the
/// version before) holds each key's MAC, and its secret is the key shown at creation.
#[test]
fn api_key_macs_stored_by_the_previous_version_still_verify() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../tests/http/fixtures/store-before-signed-records.json"
    ))
    .unwrap();
    let record: KeyringRecord =
        serde_json::from_value(fixture["export"]["keyring"].clone()).unwrap();
    let master =
        MasterSecret::parse("5d1f0c0a8e6b4f2a9c3e7d1b0a2f4e6c8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a")
            .unwrap();
    let keys = Keys::open(&master, &record).unwrap();
    let records = fixture["export"]["records"].as_array().unwrap();
    let issued = fixture["keys"].as_object().unwrap();
    assert_eq!(issued.len(), 3);
    for key in issued.values() {
        let (id, token) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
        let secret = token.strip_prefix(&format!("vk_{id}_")).unwrap();
        let stored = records
            .iter()
            .find(|r| r["key"] == format!("key:{id}"))
            .unwrap();
        let stored: serde_json::Value =
            serde_json::from_str(stored["value"].as_str().unwrap()).unwrap();
        let mac = stored["mac"].as_str().unwrap();
        let tag: Vec<u8> = (0..mac.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).unwrap())
            .collect();
        assert!(
            keys.verify_mac(MacPurpose::ApiKeySecret, secret.as_bytes(), &tag),
            "the stored MAC of key {id} no longer verifies"
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Grant {
    role: String,
    #[serde(default)]
    expires_at: Option<u64>,
}

fn grant() -> Grant {
    Grant {
        role: "read-only".into(),
        expires_at: Some(1_800_000_000_000),
    }
}

fn edit(stored: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(stored).unwrap();
    change(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_signed_record_opens_only_unchanged_at_its_own_kv_key() {
    let keys = new_keys();
    let stored = keys.seal_record("key:a", &grant()).unwrap();
    assert_eq!(
        keys.open_record::<Grant>("key:a", &stored),
        RecordCheck::Signed(grant())
    );
    assert_eq!(
        keys.open_record::<Grant>("key:b", &stored),
        RecordCheck::Tampered,
        "moved to another KV key"
    );
    let widened = edit(&stored, |v| v["role"] = "admin".into());
    assert_eq!(
        keys.open_record::<Grant>("key:a", &widened),
        RecordCheck::Tampered
    );
    let unexpired = edit(&stored, |v| {
        v.as_object_mut().unwrap().remove("expires_at");
    });
    assert_eq!(
        keys.open_record::<Grant>("key:a", &unexpired),
        RecordCheck::Tampered
    );
    let mut flipped = serde_json::from_slice::<serde_json::Value>(&stored).unwrap();
    let sig = flipped["sig"].as_str().unwrap().to_owned();
    let last = if sig.ends_with('0') { "1" } else { "0" };
    flipped["sig"] = format!("{}{last}", &sig[..sig.len() - 1]).into();
    let flipped = serde_json::to_vec(&flipped).unwrap();
    assert_eq!(
        keys.open_record::<Grant>("key:a", &flipped),
        RecordCheck::Tampered
    );
    assert_eq!(
        keys.open_record::<Grant>("key:a", b"not json"),
        RecordCheck::Tampered
    );
    // Another deployment: the same master key, its own random MAC key.
    let other = new_keys();
    assert_eq!(
        other.open_record::<Grant>("key:a", &stored),
        RecordCheck::Tampered,
        "signed under another deployment's keys"
    );
}

#[test]
fn a_record_without_its_signature_is_unsigned_never_signed() {
    let keys = new_keys();
    let stored = keys.seal_record("key:a", &grant()).unwrap();
    let stripped = edit(&stored, |v| {
        v.as_object_mut().unwrap().remove("sig");
    });
    assert_eq!(
        keys.open_record::<Grant>("key:a", &stripped),
        RecordCheck::Unsigned(grant())
    );
    // What the previous version wrote: the record alone.
    let legacy = serde_json::to_vec(&grant()).unwrap();
    assert_eq!(
        keys.open_record::<Grant>("key:a", &legacy),
        RecordCheck::Unsigned(grant())
    );
}

/// Field order and unknown fields do not matter: what is signed is what the code reads.
#[test]
fn a_signature_covers_what_the_code_reads_not_the_text() {
    let keys = new_keys();
    let stored = keys.seal_record("key:a", &grant()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let reordered = format!(
        "{{\"sig\":{},\"note\":\"ignored\",\"expires_at\":{},\"role\":{}}}",
        v["sig"], v["expires_at"], v["role"]
    );
    assert_eq!(
        keys.open_record::<Grant>("key:a", reordered.as_bytes()),
        RecordCheck::Signed(grant())
    );
}

/// Rotation keeps the MAC key, so records signed before a master-key rotation still verify.
#[test]
fn record_signatures_survive_a_master_key_rotation() {
    let master = MasterSecret::parse(&b64url(&[9u8; 32])).unwrap();
    let (old, _) = Keys::create(&master, 0, 0).unwrap();
    let stored = old.seal_record("role:gh", &grant()).unwrap();
    let new_master = MasterSecret::parse(&b64url(&[10u8; 32])).unwrap();
    let (new, _) = old.rotate(&new_master, 0, 1).unwrap();
    assert_eq!(
        new.open_record::<Grant>("role:gh", &stored),
        RecordCheck::Signed(grant())
    );
}
