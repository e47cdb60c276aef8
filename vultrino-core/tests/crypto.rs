//! Example-based specification of `vultrino_core::crypto`: master-key parsing, keyring
//! create/open/rotate, envelope errors, MACs, password hashing, and redacted `Debug`.
//! The envelope properties over arbitrary input are in `crypto_props.rs`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::Engine as _;
use vultrino_core::crypto::{
    b64url, b64url_decode, ct_eq, envelope_key_id, hash_password, sha256_hex, verify_password,
    KeyringRecord, Keys, MacPurpose, MasterSecret,
};
use vultrino_core::error::Code;
use vultrino_core::ErrorKind;

/// Small PBKDF2 count so passphrase tests stay fast.
const TEST_ITERATIONS: u32 = 1000;
const RAW_KEY: [u8; 32] = [7u8; 32];

fn raw_master() -> MasterSecret {
    MasterSecret::parse(&b64url(&RAW_KEY)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- master key parsing ----------------------------------------------------------------------

#[test]
fn thirty_two_byte_keys_in_base64_base64url_or_hex_are_raw() {
    let key: [u8; 32] = [0xfb; 32]; // 0xfb makes '+' / '/' vs '-' / '_' differ between alphabets
    let std = base64::engine::general_purpose::STANDARD;
    let std_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = base64::engine::general_purpose::URL_SAFE;
    let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let texts = [
        std.encode(key),
        std_nopad.encode(key),
        url.encode(key),
        url_nopad.encode(key),
        hex(&key),
        hex(&key).to_uppercase(),
        format!("  {}\n", url_nopad.encode(key)),
    ];
    for text in texts {
        assert!(
            MasterSecret::parse(&text).unwrap().is_raw(),
            "{text:?} should be a raw key"
        );
    }
}

#[test]
fn the_same_raw_key_in_any_encoding_opens_the_same_keyring() {
    let key: [u8; 32] = [0xfb; 32];
    let (_, record) = Keys::create(&MasterSecret::parse(&hex(&key)).unwrap(), 0, 0).unwrap();
    let as_b64 = base64::engine::general_purpose::STANDARD.encode(key);
    assert!(Keys::open(&MasterSecret::parse(&as_b64).unwrap(), &record).is_ok());
}

#[test]
fn anything_not_decoding_to_exactly_32_bytes_is_a_passphrase() {
    let texts = [
        "correct horse battery staple".to_owned(),
        b64url(&[1u8; 31]),
        b64url(&[1u8; 33]),
        hex(&[1u8; 31]),
        format!("{}zz", &hex(&[1u8; 31])), // 64 chars, not hex
    ];
    for text in texts {
        assert!(
            !MasterSecret::parse(&text).unwrap().is_raw(),
            "{text:?} should be a passphrase"
        );
    }
}

#[test]
fn empty_or_blank_master_key_is_rejected() {
    for text in ["", "   ", "\n\t"] {
        let err = MasterSecret::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(err.code(), Code::InvalidMasterKey);
    }
}

#[test]
fn generated_raw_key_text_parses_back_to_a_raw_key_that_opens_its_keyring() {
    let (master, text) = MasterSecret::generate_raw();
    assert!(master.is_raw());
    assert_eq!(b64url_decode(&text).unwrap().len(), 32);
    let (_, record) = Keys::create(&master, 0, 0).unwrap();
    assert!(Keys::open(&MasterSecret::parse(&text).unwrap(), &record).is_ok());
}

// ---- keyring ---------------------------------------------------------------------------------

#[test]
fn created_record_describes_the_keys() {
    let (keys, record) = Keys::create(&raw_master(), 12345, 42).unwrap();
    assert_eq!(record.version, 1);
    assert_eq!(record.key_id, hex(&keys.key_id()));
    assert_eq!(record.key_id, keys.key_id_hex());
    assert_eq!(record.kdf, "raw");
    assert_eq!(record.iterations, 0, "raw keys store no iteration count");
    assert_eq!(b64url_decode(&record.salt).unwrap().len(), 16);
    assert_eq!(record.created_at_ms, 42);

    let (_, pass_record) = Keys::create(
        &MasterSecret::parse("a passphrase").unwrap(),
        TEST_ITERATIONS,
        0,
    )
    .unwrap();
    assert_eq!(pass_record.kdf, "pbkdf2-sha256");
    assert_eq!(pass_record.iterations, TEST_ITERATIONS);
}

#[test]
fn keyring_record_survives_a_json_round_trip_and_still_opens() {
    let master = MasterSecret::parse("json passphrase").unwrap();
    let (keys, record) = Keys::create(&master, TEST_ITERATIONS, 1).unwrap();
    let json = serde_json::to_string(&record).unwrap();
    let back: KeyringRecord = serde_json::from_str(&json).unwrap();
    let reopened = Keys::open(&master, &back).unwrap();
    let env = keys.seal("cred:x", b"v");
    assert_eq!(&reopened.open_envelope("cred:x", &env).unwrap()[..], b"v");
}

#[test]
fn passphrase_derivation_is_deterministic_given_the_record() {
    let (keys, record) = Keys::create(
        &MasterSecret::parse("hunter2 hunter2").unwrap(),
        TEST_ITERATIONS,
        0,
    )
    .unwrap();
    let again = Keys::open(&MasterSecret::parse("hunter2 hunter2").unwrap(), &record).unwrap();
    assert_eq!(again.key_id(), keys.key_id());
    let env = keys.seal("cred:github", b"ghp_secret");
    assert_eq!(
        &again.open_envelope("cred:github", &env).unwrap()[..],
        b"ghp_secret"
    );
    assert_eq!(
        again.mac(MacPurpose::ApiKeySecret, b"api key"),
        keys.mac(MacPurpose::ApiKeySecret, b"api key")
    );
}

#[test]
fn wrong_master_key_is_detected_with_a_clear_error() {
    let (_, record) = Keys::create(
        &MasterSecret::parse("right passphrase").unwrap(),
        TEST_ITERATIONS,
        0,
    )
    .unwrap();
    let cases = [
        MasterSecret::parse("wrong passphrase").unwrap(),
        raw_master(), // a raw key where the keyring was made from a passphrase
    ];
    for wrong in cases {
        let err = Keys::open(&wrong, &record).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.code(), Code::WrongMasterKey);
        assert!(
            err.message().contains("does not match the stored keyring"),
            "{}",
            err.message()
        );
    }

    let (_, raw_record) = Keys::create(&raw_master(), 0, 0).unwrap();
    let other_raw = MasterSecret::parse(&b64url(&[8u8; 32])).unwrap();
    assert_eq!(
        Keys::open(&other_raw, &raw_record).unwrap_err().code(),
        Code::WrongMasterKey
    );
}

#[test]
fn malformed_keyring_records_are_invalid_keyring_not_panics() {
    let master = raw_master();
    let (_, good) = Keys::create(&master, 0, 0).unwrap();
    let mut cases: Vec<KeyringRecord> = Vec::new();
    let mut push = |f: &dyn Fn(&mut KeyringRecord)| {
        let mut r = good.clone();
        f(&mut r);
        cases.push(r);
    };
    push(&|r| r.version = 2);
    push(&|r| r.key_id = "xyz".into());
    push(&|r| r.key_id = "0000000g".into());
    push(&|r| r.kdf = "scrypt".into());
    push(&|r| r.salt = "!!".into());
    push(&|r| r.salt = b64url(&[1u8; 4]));
    push(&|r| r.check = "not an envelope".into());
    push(&|r| r.check = b64url(&[1u8; 10]));
    push(&|r| r.mac_key = "AAAA".into());
    push(&|r| r.key_id = "00000000".into()); // check envelope claims another key id
    for record in &cases {
        let err = Keys::open(&master, record).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{record:?}");
        assert_eq!(err.code(), Code::InvalidKeyring, "{record:?}");
    }

    let pass = MasterSecret::parse("some passphrase").unwrap();
    let (_, pass_record) = Keys::create(&pass, TEST_ITERATIONS, 0).unwrap();
    for iterations in [0, u32::MAX] {
        let record = KeyringRecord {
            iterations,
            ..pass_record.clone()
        };
        assert_eq!(
            Keys::open(&pass, &record).unwrap_err().code(),
            Code::InvalidKeyring
        );
    }
}

#[test]
fn create_rejects_out_of_range_passphrase_iterations() {
    let pass = MasterSecret::parse("some passphrase").unwrap();
    let err = Keys::create(&pass, 0, 0).unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::BadRequest, Code::InvalidIterations)
    );
}

// ---- rotation --------------------------------------------------------------------------------

#[test]
fn rotation_reseals_records_under_a_new_key_id_and_keeps_the_mac_key() {
    let (old, old_record) = Keys::create(&raw_master(), 0, 0).unwrap();
    let sealed_old = old.seal("cred:github", b"ghp_old_secret");
    let api_tag = old.mac(MacPurpose::ApiKeySecret, b"vk_api_key_secret");

    let new_master = MasterSecret::parse("the new passphrase").unwrap();
    let (new, new_record) = old.rotate(&new_master, TEST_ITERATIONS, 99).unwrap();
    assert_ne!(new.key_id(), old.key_id());
    assert_ne!(new_record.salt, old_record.salt);
    assert_eq!(new_record.created_at_ms, 99);

    // The rotation CLI's loop: open under the old keys, seal under the new ones.
    let plaintext = old.open_envelope("cred:github", &sealed_old).unwrap();
    let sealed_new = new.seal("cred:github", &plaintext);
    assert_eq!(envelope_key_id(&sealed_new).unwrap(), new.key_id());

    let reopened = Keys::open(&new_master, &new_record).unwrap();
    assert_eq!(
        &reopened.open_envelope("cred:github", &sealed_new).unwrap()[..],
        b"ghp_old_secret"
    );
    assert_eq!(
        reopened.mac(MacPurpose::ApiKeySecret, b"vk_api_key_secret"),
        api_tag,
        "API keys stay valid across rotation"
    );
    assert!(reopened.verify_mac(MacPurpose::ApiKeySecret, b"vk_api_key_secret", &api_tag));

    // The old master key no longer opens the new keyring.
    assert_eq!(
        Keys::open(&raw_master(), &new_record).unwrap_err().code(),
        Code::WrongMasterKey
    );
}

#[test]
fn envelope_from_before_rotation_names_both_key_ids() {
    let (old, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    let (new, _) = old.rotate(&raw_master(), 0, 0).unwrap();
    let err = new
        .open_envelope("cred:a", &old.seal("cred:a", b"x"))
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Unavailable, Code::DecryptFailed)
    );
    assert!(err.message().contains(&old.key_id_hex()) && err.message().contains(&new.key_id_hex()));
}

// ---- envelopes -------------------------------------------------------------------------------

#[test]
fn envelope_is_base64url_of_version_key_id_nonce_ciphertext_and_tag() {
    let (keys, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    let env = keys.seal("cred:x", b"hello");
    assert!(env
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    let bytes = b64url_decode(&env).unwrap();
    assert_eq!(bytes.len(), 1 + 4 + 12 + 5 + 16);
    assert_eq!(bytes[0], 0x01);
    assert_eq!(&bytes[1..5], &keys.key_id());
}

#[test]
fn sealing_the_same_plaintext_twice_gives_different_envelopes() {
    let (keys, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    assert_ne!(keys.seal("k", b"same"), keys.seal("k", b"same"));
}

#[test]
fn malformed_envelope_text_is_a_bad_request() {
    let (keys, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    let mut wrong_version = b64url_decode(&keys.seal("k", b"x")).unwrap();
    wrong_version[0] = 0x02;
    for text in [
        "",
        "@@@@",
        "AAAA",
        &b64url(&[1u8; 32]),
        &b64url(&wrong_version),
    ] {
        let err = keys.open_envelope("k", text).unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (ErrorKind::BadRequest, Code::InvalidEnvelope),
            "{text:?}"
        );
        assert!(envelope_key_id(text).is_err());
    }
}

#[test]
fn decrypt_errors_name_the_kv_key_but_no_plaintext() {
    let (keys, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    let env = keys.seal("cred:a", b"SUPERSECRETVALUE");
    let err = keys.open_envelope("cred:b", &env).unwrap_err();
    assert_eq!(err.code(), Code::DecryptFailed);
    assert!(err.message().contains("cred:b"));
    assert!(!format!("{err:?} {err}").contains("SUPERSECRETVALUE"));
}

// ---- MACs and helpers ------------------------------------------------------------------------

#[test]
fn mac_verifies_only_the_same_data_and_full_tag() {
    let (keys, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    let tag = keys.mac(MacPurpose::ApiKeySecret, b"data");
    assert!(keys.verify_mac(MacPurpose::ApiKeySecret, b"data", &tag));
    assert!(!keys.verify_mac(MacPurpose::ApiKeySecret, b"datA", &tag));
    assert!(
        !keys.verify_mac(MacPurpose::ApiKeySecret, b"data", &tag[..16]),
        "truncated tags are refused"
    );
    let mut bad = tag;
    bad[31] ^= 1;
    assert!(!keys.verify_mac(MacPurpose::ApiKeySecret, b"data", &bad));
    let (other, _) = Keys::create(&raw_master(), 0, 0).unwrap();
    assert_ne!(
        other.mac(MacPurpose::ApiKeySecret, b"data"),
        tag,
        "each keyring has its own random MAC key"
    );
}

#[test]
fn helpers_match_known_values() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"abcd"));
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    assert_eq!(b64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
    assert_eq!(b64url_decode("-_8=").unwrap(), vec![0xfb, 0xff]);
    assert_eq!(
        b64url_decode("+/8").unwrap_err().code(),
        Code::InvalidBase64
    );
}

// ---- Debug redaction -------------------------------------------------------------------------

#[test]
fn debug_output_never_contains_key_material() {
    let raw_text = b64url(&RAW_KEY);
    let raw = MasterSecret::parse(&raw_text).unwrap();
    let pass = MasterSecret::parse("my very secret passphrase").unwrap();
    assert_eq!(format!("{raw:?}"), "MasterSecret([redacted])");
    assert_eq!(format!("{pass:#?}"), "MasterSecret([redacted])");

    let (keys, _) = Keys::create(&raw, 0, 0).unwrap();
    let debug = format!("{keys:?} {keys:#?}");
    assert_eq!(
        format!("{keys:?}"),
        format!("Keys {{ key_id: \"{}\", .. }}", keys.key_id_hex())
    );
    assert!(!debug.contains(&raw_text) && !debug.contains(&hex(&RAW_KEY)));
}

#[test]
fn keys_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Keys>();
    assert_send_sync::<MasterSecret>();
}

// ---- admin passwords -------------------------------------------------------------------------

#[test]
fn password_hash_round_trips_and_rejects_wrong_passwords() {
    let phc = hash_password("correct horse", TEST_ITERATIONS).unwrap();
    assert!(
        phc.starts_with(&format!("$pbkdf2-sha256$i={TEST_ITERATIONS},l=32$")),
        "{phc}"
    );
    assert!(verify_password("correct horse", &phc));
    assert!(
        verify_password("correct horse", &format!("{phc}\n")),
        "trailing newline in the secret is ignored"
    );
    assert!(!verify_password("correct horsE", &phc));
    assert!(!verify_password("", &phc));
    assert_ne!(
        hash_password("correct horse", TEST_ITERATIONS).unwrap(),
        phc,
        "salt is random"
    );
}

#[test]
fn malformed_password_hashes_verify_false() {
    let phc = hash_password("pw", TEST_ITERATIONS).unwrap();
    let hash_part = phc.rsplit('$').next().unwrap().to_owned();
    let salt_part = phc.split('$').nth(3).unwrap().to_owned();
    let cases = [
        String::new(),
        "not a hash".into(),
        "$pbkdf2-sha256$".into(),
        format!("$argon2id$v=19$m=65536,t=3,p=4${salt_part}${hash_part}"),
        format!("$pbkdf2-sha256$i=1000,l=32${salt_part}"), // no hash
        format!("$pbkdf2-sha256$i=4294967295,l=32${salt_part}${hash_part}"), // absurd cost
        format!("$pbkdf2-sha256$i=1000,l=16${salt_part}${hash_part}"), // length mismatch
        format!("$pbkdf2-sha256$i=1000,l=32,x=1${salt_part}${hash_part}"),
        phc.replace(&hash_part, &hash_part[..hash_part.len() - 2]),
    ];
    for bad in &cases {
        assert!(!verify_password("pw", bad), "{bad:?}");
    }
    assert_eq!(
        hash_password("pw", 0).unwrap_err().code(),
        Code::InvalidIterations
    );
}
