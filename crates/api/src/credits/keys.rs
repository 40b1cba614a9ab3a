//! The app backend's API keys (`BILLING_API_KEYS`): held only as SHA-256 hashes, compared in
//! constant time, never logged.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The keys that may call the credits API. Several at once, so a key can be rotated: add the
/// new one, deploy the callers, remove the old one.
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

/// The shortest key accepted: 128 bits of a random key's base64 or hex.
pub const MIN_KEY_LENGTH: usize = 32;

impl ApiKeys {
    /// Holds `keys` as hashes; the caller drops the keys themselves.
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        ApiKeys {
            hashes: keys.iter().map(|key| hash(key.as_ref())).collect(),
        }
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in constant time,
    /// so the time taken says nothing of which key, or how much of one, matched.
    pub fn admits(&self, presented: &str) -> bool {
        let presented = hash(presented);
        self.hashes
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&presented)
            })
            .into()
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.hashes.len())
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::ApiKeys;

    #[test]
    fn any_of_the_keys_is_admitted_and_nothing_else() {
        let keys = ApiKeys::new(&[
            "old-key-0123456789abcdef0123456789",
            "new-key-0123456789abcdef0123456789",
        ]);
        assert!(keys.admits("old-key-0123456789abcdef0123456789"));
        assert!(keys.admits("new-key-0123456789abcdef0123456789"));
        assert!(!keys.admits("new-key-0123456789abcdef012345678"));
        assert!(!keys.admits(""));
        assert!(!ApiKeys::new::<&str>(&[]).admits(""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)", "never the keys");
    }
}
