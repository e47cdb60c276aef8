//! The local [`Rs256Verifier`]: RSASSA-PKCS1-v1_5 with SHA-256 by the RustCrypto `rsa` crate, for
//! Cloudflare Access tokens (public-key verification only; see deny.toml on RUSTSEC-2023-0071).

use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use vultrino_core::ports::Rs256Verifier;

/// RS256 signature checks with the `rsa` crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RsaVerifier;

#[async_trait::async_trait]
impl Rs256Verifier for RsaVerifier {
    async fn verify(&self, n: &[u8], e: &[u8], signing_input: &[u8], signature: &[u8]) -> bool {
        // `new` refuses a modulus over 4096 bits and an exponent out of range.
        let Ok(key) = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
        else {
            return false;
        };
        let hashed = Sha256::digest(signing_input);
        key.verify(Pkcs1v15Sign::new::<Sha256>(), &hashed, signature)
            .is_ok()
    }
}
