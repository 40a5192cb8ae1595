//! Random secrets and their stored form.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A random secret of `len` alphanumeric characters (≈5.95 bits each), from
/// the thread's CSPRNG (ChaCha, seeded by the OS).
pub fn random_secret(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// How sessions and tokens are stored: the hex SHA-256 of the secret. The
/// secrets are long and random, so a fast hash is enough; a leaked table
/// opens nothing.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API token: `odk_` + 43 random characters (≈256 bits).
pub fn new_api_token() -> String {
    format!("odk_{}", random_secret(43))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_stored_hashed() {
        let a = new_api_token();
        assert!(a.starts_with("odk_") && a.len() == 47);
        assert_ne!(a, new_api_token());
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
