//! Admin password hashing: PBKDF2-HMAC-SHA256 in a PHC string (`$pbkdf2-sha256$i=..,l=32$salt$hash`).
//!
//! PBKDF2 rather than a memory-hard hash because its cost is a single tunable CPU knob that can be
//! fitted to the Workers per-request CPU budget (a memory-hard hash also needs megabytes of memory
//! per login); see [`DEFAULT_PASSWORD_ITERATIONS`] for the trade-off and
//! docs/decisions/0004-admin-password-hashing.md for the decision and the alternatives.

use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{random_bytes, MAX_PBKDF2_ITERATIONS, SALT_LEN};
use crate::error::{Code, Error, Result};

/// PBKDF2 iterations for the admin password hash.
///
/// The trade-off: login runs this once per attempt inside a request. The default fits the
/// Workers paid plan's CPU limit per request but NOT the free plan's. On the free plan, hash with
/// fewer iterations and rely on the login lockout: online guessing is limited by the
/// SessionStore counters, the iteration count only slows offline cracking of a leaked
/// `ADMIN_PASSWORD_HASH`. The decision: docs/decisions/0004-admin-password-hashing.md; the
/// plans' limits and the advice: docs/deploy-cloudflare.md, "CPU budget"; the cost per
/// iteration measured in workerd: benches/README.md, "Workers".
pub const DEFAULT_PASSWORD_ITERATIONS: u32 = 100_000;

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
