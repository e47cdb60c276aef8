//! The [`Rs256Verifier`] conformance suite: fixed test vectors (a 2048-bit test key made with
//! `openssl genpkey -algorithm RSA`, the one in `tests/http/fixtures/access-test-key-a.pem`, and
//! a signature it made with `openssl dgst -sha256 -sign`), so every implementation is checked
//! against the same bytes: the `rsa` crate locally, WebCrypto inside workerd.

use base64::Engine as _;

use crate::ports::Rs256Verifier;

/// The test key's modulus (base64url, as in a JWK).
pub const RS256_N: &str = "rDpl2Jznbfjo8vdvybU4xy0mzH509KbYQ7uqPuB3PNa5hayDh6_lQi440qEOYm9A4TDqhPPtHVrKeiYKJewWBUQNDLTmMf6CuxrIQ2B00CrqFLyx6OikVttGJ3Hiuj4azadm4Ymc0McBzgQmtVQ_wPa4v17WIIknh3_ko8FqdhPpA7IR5ZEvrKfjCPS_z58dobBUnuazia4Dvk-7Sf5-VyegKzR1y-1v4hJpZlK7bYqMJowhJYf8Dn2DOt2uLA2XpRqU1oMRIza_auslqjGN9UQvP7OxOnDTRhOEiLzdXcAvm8pLVDs4LKpJGyDuI-Q7P3lpt0NQ7FdTbH1qepQRfw";
/// Another key's modulus (`access-test-key-b.pem`).
pub const RS256_OTHER_N: &str = "sBXynQIKwIJVxAPQ8P9CN3DG3WfqmPZKkeaIgzU7oQmQzbcDOQ3cVRYKTM-EBRyur8GyL_eoTKZU7P2Hmbsa2SgVwJrZoUv2VswteA9e7esK3TyQoFzxX9DEvJXCHE39eV8pCKEa2UuTu0yqzOuytzW31kfU2kEGkuaWOj7Qosw7MMG2V16QY0L6O7RWrNPzpxmuRqHAbPxN-9CTpKEJpvxrmgY-dYWWbHTleYZw_OLsZ9T-UBZimBv-6AoaP9BqRrwif_Hi21i4yP8BVPO2HXv_fqYIvGY6FLshiZJeW7lzkcKxZiJMAuswYMTS2odvEvCqTcZB6FKLzo5lntcchw";
/// The public exponent of both (65537).
pub const RS256_E: &str = "AQAB";
/// What was signed.
pub const RS256_MESSAGE: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjb25mb3JtYW5jZSJ9";
/// The test key's RS256 signature of [`RS256_MESSAGE`] (base64url).
pub const RS256_SIGNATURE: &str = "GinUpEIpWjqj0PqDYslanSnDpZETUJYNPQPSDUhWG6upi6VvgZKNHnv2UO7cRqCI9KStyMZpGR0_tKMVtpu380QHHGLWgDS_brjYxY1kLCHISolzB9_8sBZB4DnMpmFjAa4_k0JoG6G4HcozoU-lpYjGk1YuSrneQ-baQib6NIWdO7limam23f2WqWVxICDRSCvvFGUxLiX4WWIy7mK8trhsDU8KHQtXvl75jWDu9LxHVniodqAL8MCBFf7Houf4CLOC16ccBu9c_YgQGXODzXvSwQfekG_SkFCp-aEe8QvkUKRxd7oVwhqT1ZMX0M5oFCVaMNTGUjzM2puoeb2AbA";

/// The checks of [`rs256_suite`], by name.
pub const RS256_CHECKS: &[&str] = &[
    "rs256_valid_signature_verifies",
    "rs256_flipped_signature_byte_fails",
    "rs256_changed_message_fails",
    "rs256_other_key_fails",
    "rs256_malformed_input_is_false",
];

/// A malformed case: its name, `n`, `e` and the signature.
type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);

fn d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_default()
}

/// Run every [`Rs256Verifier`] check against `verifier`; `Err` names the first that failed.
pub async fn rs256_suite(verifier: &dyn Rs256Verifier) -> Result<(), String> {
    for name in RS256_CHECKS {
        rs256_check(name, verifier).await?;
    }
    Ok(())
}

/// Run the check `name` of [`RS256_CHECKS`].
pub async fn rs256_check(name: &str, verifier: &dyn Rs256Verifier) -> Result<(), String> {
    let (n, other, e) = (d(RS256_N), d(RS256_OTHER_N), d(RS256_E));
    let (msg, sig) = (RS256_MESSAGE.as_bytes(), d(RS256_SIGNATURE));
    let fail = |property: &str| Err(format!("{name}: {property}"));
    match name {
        "rs256_valid_signature_verifies" => {
            if !verifier.verify(&n, &e, msg, &sig).await {
                return fail("a valid signature must verify");
            }
            // A modulus with a leading zero byte is the same number.
            let mut padded = vec![0u8];
            padded.extend_from_slice(&n);
            if !verifier.verify(&padded, &e, msg, &sig).await {
                return fail("a modulus with a leading zero byte is the same key");
            }
        }
        "rs256_flipped_signature_byte_fails" => {
            for at in [0, sig.len() / 2, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[at] ^= 0x01;
                if verifier.verify(&n, &e, msg, &bad).await {
                    return fail(&format!(
                        "a signature with byte {at} flipped must not verify"
                    ));
                }
            }
        }
        "rs256_changed_message_fails" => {
            let mut bad = msg.to_vec();
            bad[0] ^= 0x01;
            if verifier.verify(&n, &e, &bad, &sig).await {
                return fail("another message must not verify");
            }
            if verifier.verify(&n, &e, &msg[..msg.len() - 1], &sig).await {
                return fail("a shortened message must not verify");
            }
        }
        "rs256_other_key_fails" => {
            if verifier.verify(&other, &e, msg, &sig).await {
                return fail("another key's modulus must not verify");
            }
            if verifier.verify(&n, &[3], msg, &sig).await {
                return fail("another exponent must not verify");
            }
        }
        "rs256_malformed_input_is_false" => {
            let even = {
                let mut v = n.clone();
                if let Some(last) = v.last_mut() {
                    *last &= 0xfe;
                }
                v
            };
            let cases: [Case<'_>; 7] = [
                ("empty n", &[], &e, &sig),
                ("zero n", &[0u8; 256], &e, &sig),
                ("even n", &even, &e, &sig),
                ("empty e", &n, &[], &sig),
                ("zero e", &n, &[0], &sig),
                ("short signature", &n, &e, &sig[..sig.len() - 1]),
                ("empty signature", &n, &e, &[]),
            ];
            for (case, n, e, sig) in cases {
                if verifier.verify(n, e, msg, sig).await {
                    return fail(&format!("{case} must be false"));
                }
            }
        }
        _ => return Err(format!("no such check: {name}")),
    }
    Ok(())
}
