//! Admin password hashing: PBKDF2-HMAC-SHA256 in a PHC string (`$pbkdf2-sha256$i=..,l=32$salt$hash`).
//!
//! PBKDF2 rather than a memory-hard hash because its cost is a single tunable CPU knob that can be
//! fitted to the Workers per-request CPU budget (a memory-hard hash also needs megabytes of memory
//! per login); see [`DEFAULT_PASSWORD_ITERATIONS`] for the trade-off and
//! docs/decisions/0004-admin-password-hashing.md for the decision and the alternatives.
//!
//! Two floors (docs/decisions/0056-password-floors.md): a deployment refuses to start with a hash
//! of fewer than [`MIN_PASSWORD_ITERATIONS`] iterations ([`password_hash_iterations`] reads the
//! count, `Config::validate` applies the rule), and a password chosen by a person is at least
//! [`MIN_ADMIN_PASSWORD_CHARS`] characters ([`check_admin_password`]).

use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{random_bytes, MAX_PBKDF2_ITERATIONS, SALT_LEN};
use crate::error::{Code, Error, Result};

/// PBKDF2 iterations for the admin password hash.
///
/// The trade-off: login runs this once per attempt inside a request. The default fits the
/// Workers paid plan's CPU limit per request (≈ 39 ms of CPU in workerd) but NOT the free plan's
/// 10 ms; it is also the floor ([`MIN_PASSWORD_ITERATIONS`]), so the admin login on Workers
/// needs the paid plan. Online guessing is limited by the SessionStore counters; the iteration
/// count slows offline cracking of a leaked `ADMIN_PASSWORD_HASH`. The decisions:
/// docs/decisions/0004-admin-password-hashing.md, docs/decisions/0056-password-floors.md; the
/// plans' limits: docs/deploy-cloudflare.md, "CPU budget"; the cost per iteration measured in
/// workerd: benches/README.md, "Workers".
pub const DEFAULT_PASSWORD_ITERATIONS: u32 = 100_000;

/// The fewest PBKDF2 iterations an admin password hash may have: a deployment configured with a
/// weaker hash refuses to start (`Config::validate`), naming the fix (`vultrino hash-password`).
/// Only the test-only switch `allow_weak_password_hash_for_tests` lifts it.
pub const MIN_PASSWORD_ITERATIONS: u32 = 100_000;

// `hash-password`'s default must make a hash servers accept.
const _: () = assert!(DEFAULT_PASSWORD_ITERATIONS >= MIN_PASSWORD_ITERATIONS);

/// The shortest admin password, in characters (Unicode scalar values), that `vultrino
/// hash-password` accepts: NIST SP 800-63B-4's minimum for a password that is the only factor.
/// The first-run password `vultrino serve` generates is 24 characters.
pub const MIN_ADMIN_PASSWORD_CHARS: usize = 15;

/// Refuse an admin password shorter than [`MIN_ADMIN_PASSWORD_CHARS`] (BadRequest
/// `password_too_short`; the message never repeats the password).
pub fn check_admin_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_ADMIN_PASSWORD_CHARS {
        return Err(Error::bad_request(format!(
            "the admin password must be at least {MIN_ADMIN_PASSWORD_CHARS} characters long"
        ))
        .with_code(Code::PasswordTooShort));
    }
    Ok(())
}

/// The iteration count of a PHC hash that [`verify_password`] can check (a PBKDF2 hash with
/// 1..=[`MAX_PBKDF2_ITERATIONS`] iterations, surrounding whitespace ignored); `None` for anything
/// else.
pub fn password_hash_iterations(phc: &str) -> Option<u32> {
    let hash = PasswordHash::new(phc.trim()).ok()?;
    pbkdf2::Algorithm::try_from(hash.algorithm).ok()?;
    hash.hash?;
    hash.salt?;
    let params = pbkdf2::Params::try_from(&hash).ok()?;
    (1..=MAX_PBKDF2_ITERATIONS)
        .contains(&params.rounds)
        .then_some(params.rounds)
}

/// Hash an admin password as a PHC string `$pbkdf2-sha256$i=<iterations>,l=32$<salt>$<hash>`
/// with a random 16-byte salt. `iterations` must be in `1..=MAX_PBKDF2_ITERATIONS`
/// (see [`DEFAULT_PASSWORD_ITERATIONS`] for the CPU trade-off), else BadRequest `invalid_iterations`.
pub fn hash_password(password: &str, iterations: u32) -> Result<String> {
    if !(1..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
        return Err(Error::bad_request(format!(
            "password hash iterations must be between 1 and {MAX_PBKDF2_ITERATIONS}"
        ))
        .with_code(Code::InvalidIterations));
    }
    let salt =
        SaltString::encode_b64(&random_bytes::<SALT_LEN>()).map_err(|_| Error::internal())?;
    let params = pbkdf2::Params {
        rounds: iterations,
        output_length: 32,
    };
    let hash = pbkdf2::Pbkdf2
        .hash_password_customized(
            password.as_bytes(),
            Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
            None,
            params,
            &salt,
        )
        .map_err(|_| Error::internal())?;
    Ok(hash.to_string())
}

/// Check `password` against a PHC string from [`hash_password`] (surrounding whitespace in `phc`
/// is ignored). A malformed hash, an unsupported algorithm or an iteration count above
/// [`MAX_PBKDF2_ITERATIONS`] gives `false`, never a panic. The hash comparison is constant-time
/// (`password-hash`'s `Output` equality).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc.trim()) else {
        return false;
    };
    if pbkdf2::Algorithm::try_from(hash.algorithm).is_err() {
        return false;
    }
    match pbkdf2::Params::try_from(&hash) {
        Ok(params) if (1..=MAX_PBKDF2_ITERATIONS).contains(&params.rounds) => {}
        _ => return false,
    }
    pbkdf2::Pbkdf2
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_iteration_count_is_read_only_from_a_checkable_hash() {
        let h = hash_password("correct horse battery staple", 1_000).unwrap();
        assert_eq!(password_hash_iterations(&h), Some(1_000));
        assert_eq!(password_hash_iterations(&format!("  {h}\n")), Some(1_000));
        for bad in [
            "",
            "$x",
            "$unused",
            "plain-text",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHRzYWx0c2FsdA",
            "$pbkdf2-sha256$i=99999999999,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(password_hash_iterations(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_short_admin_password_is_refused_without_repeating_it() {
        let short = "fourteen-chars";
        assert_eq!(short.chars().count(), MIN_ADMIN_PASSWORD_CHARS - 1);
        let e = check_admin_password(short).unwrap_err();
        assert_eq!(
            (e.code(), e.status().as_u16()),
            (Code::PasswordTooShort, 400)
        );
        assert!(!e.message().contains(short));
        assert!(check_admin_password("fifteen-chars!!").is_ok());
        // Characters, not bytes: 15 two-byte letters are long enough, 14 are not.
        assert!(check_admin_password(&"é".repeat(15)).is_ok());
        assert!(check_admin_password(&"é".repeat(14)).is_err());
    }
}
