//! Envelope properties over arbitrary plaintexts, KV keys and corruptions.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::LazyLock;

use proptest::prelude::*;
use vultrino_core::crypto::{b64url, b64url_decode, Keys, MasterSecret};
use vultrino_core::ErrorKind;

/// One keyring for the whole run: a raw key, so no PBKDF2 cost per case.
static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let (master, _) = MasterSecret::generate_raw();
    Keys::create(&master, 0, 0).unwrap().0
});

fn kv_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "cred:[a-z0-9_-]{1,40}",
        any::<String>().prop_filter("KV keys are at most 512 bytes", |k| k.len() <= 512),
    ]
}

proptest! {
    #[test]
    fn envelope_round_trips_any_plaintext_under_any_kv_key(
        key in kv_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let envelope = KEYS.seal(&key, &plaintext);
        let opened = KEYS.open_envelope(&key, &envelope).unwrap();
        prop_assert_eq!(&opened[..], &plaintext[..]);
    }

    #[test]
    fn any_flipped_bit_in_the_envelope_fails_to_open(
        key in kv_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = b64url_decode(&KEYS.seal(&key, &plaintext)).unwrap();
        let i = position.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(KEYS.open_envelope(&key, &b64url(&bytes)).is_err());
    }

    #[test]
    fn any_replaced_byte_in_the_envelope_fails_to_open(
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        position in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut bytes = b64url_decode(&KEYS.seal("cred:x", &plaintext)).unwrap();
        let i = position.index(bytes.len());
        bytes[i] = bytes[i].wrapping_add(delta);
        prop_assert!(KEYS.open_envelope("cred:x", &b64url(&bytes)).is_err());
    }

    #[test]
    fn truncated_or_extended_envelopes_fail_to_open(
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let bytes = b64url_decode(&KEYS.seal("cred:x", &plaintext)).unwrap();
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(KEYS.open_envelope("cred:x", &b64url(truncated)).is_err());
        let mut extended = bytes.clone();
        extended.extend_from_slice(&extra);
        prop_assert!(KEYS.open_envelope("cred:x", &b64url(&extended)).is_err());
    }

    #[test]
    fn moved_ciphertext_fails_to_open(
        from in kv_key(),
        to in kv_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        prop_assume!(from != to);
        let err = KEYS.open_envelope(&to, &KEYS.seal(&from, &plaintext)).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::Unavailable);
        prop_assert_eq!(err.code(), vultrino_core::error::Code::DecryptFailed);
    }

    #[test]
    fn arbitrary_text_never_panics_and_never_opens(text in any::<String>()) {
        prop_assert!(KEYS.open_envelope("cred:x", &text).is_err());
    }
}
