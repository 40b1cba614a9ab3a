//! Signed client references: what a Stripe pricing table may carry as `client-reference-id`
//! so that the checkout it creates links its customer to an organization.
//!
//! A pricing table's (or a Payment Link's) `client_reference_id` is whatever the browser sent,
//! so an organization id in it proves nothing. billing-sync instead gives a signed-in billing
//! member a reference for their organization (`GET /api/v1/operations/payment/client-reference`)
//! that names the organization and an expiry under a MAC made with `STRIPE_CLIENT_REFERENCE_SECRET`;
//! a completed checkout links only when its reference verifies and the session was created
//! before the expiry.
//!
//! Stripe accepts at most 200 characters of letters, digits, `_` and `-`, so the reference is
//! `bsr1_<expiry>_<mac><organization id>`: the expiry in Unix seconds, the first 16 bytes of an
//! HMAC-SHA256 as 32 lower-case hex digits (fixed length, so the organization id needs no
//! delimiter), and the organization id as it is.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// What every reference starts with: the format's version.
const PREFIX: &str = "bsr1_";
/// The MAC's length in bytes, and in hex digits.
const MAC_BYTES: usize = 16;
const MAC_CHARS: usize = 2 * MAC_BYTES;
/// Stripe's bound on `client_reference_id`.
const MAX_REFERENCE_LENGTH: usize = 200;
/// The fewest bytes a secret may have: 128 bits as 32 hex digits or random characters.
pub const MIN_SECRET_BYTES: usize = 32;

/// The server's secret for client references (`STRIPE_CLIENT_REFERENCE_SECRET`). Its `Debug`
/// shows no byte of it.
#[derive(Clone)]
pub struct ClientReferenceKey(Vec<u8>);

impl std::fmt::Debug for ClientReferenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientReferenceKey(..)")
    }
}

/// Why a secret cannot sign references.
#[derive(Debug, thiserror::Error)]
#[error(
    "STRIPE_CLIENT_REFERENCE_SECRET must have at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
)]
pub struct WeakSecret;

/// Why no reference can name an organization.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the organization id cannot be carried by a client_reference_id (letters, digits, `_` and `-`, \
     at most {} characters)",
    MAX_REFERENCE_LENGTH - PREFIX.len() - MAC_CHARS - 11
)]
pub struct UnreferenceableOrganization;

impl ClientReferenceKey {
    /// The key made of `secret`, refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret);
        }
        Ok(ClientReferenceKey(secret.to_vec()))
    }

    /// A reference naming `organization_id` until `expires_at` (Unix seconds).
    pub fn sign(
        &self,
        organization_id: &str,
        expires_at: i64,
    ) -> Result<String, UnreferenceableOrganization> {
        let expiry = expires_at.to_string();
        let reference = format!(
            "{PREFIX}{expiry}_{}{organization_id}",
            self.mac(&expiry, organization_id)
        );
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if expires_at < 0
            || organization_id.is_empty()
            || !organization_id.chars().all(allowed)
            || reference.len() > MAX_REFERENCE_LENGTH
        {
            return Err(UnreferenceableOrganization);
        }
        Ok(reference)
    }

    /// The organization `reference` names, when this key signed it and `at` (Unix seconds:
    /// when the checkout session was created) is not past its expiry.
    pub fn verify(&self, reference: &str, at: i64) -> Option<String> {
        let rest = reference.strip_prefix(PREFIX)?;
        let (expiry, rest) = rest.split_once('_')?;
        let expires_at: i64 = expiry.parse().ok()?;
        // The canonical spelling only: one reference, one string.
        if expires_at.to_string() != expiry {
            return None;
        }
        let (mac, organization_id) = rest.split_at_checked(MAC_CHARS)?;
        let expected = self.mac(expiry, organization_id);
        let genuine = bool::from(expected.as_bytes().ct_eq(mac.as_bytes()));
        (genuine && !organization_id.is_empty() && at <= expires_at)
            .then(|| organization_id.to_owned())
    }

    /// The MAC of a reference's parts, as its hex digits.
    fn mac(&self, expiry: &str, organization_id: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(PREFIX.as_bytes());
        mac.update(expiry.as_bytes());
        // NUL separates the parts: neither holds one.
        mac.update(b"\0");
        mac.update(organization_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..MAC_BYTES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClientReferenceKey {
        ClientReferenceKey::new(b"0123456789abcdef0123456789abcdef").expect("a key")
    }

    #[test]
    fn a_signed_reference_names_its_organization_until_it_expires() {
        let reference = key().sign("org_2abcDEF", 1_000).expect("signed");
        assert!(reference.starts_with("bsr1_1000_"), "{reference}");
        assert!(reference.len() <= MAX_REFERENCE_LENGTH);
        assert_eq!(key().verify(&reference, 1_000), Some("org_2abcDEF".into()));
        assert_eq!(key().verify(&reference, 1_001), None, "expired");
    }

    #[test]
    fn anything_but_a_reference_this_key_signed_names_nothing() {
        let reference = key().sign("org_victim", 1_000).expect("signed");
        let other = ClientReferenceKey::new(&[7; 32]).expect("a key");
        assert_eq!(other.verify(&reference, 0), None, "another key");
        assert_eq!(
            key().verify("org_victim", 0),
            None,
            "a bare organization id"
        );
        let moved = reference.replace("org_victim", "org_attacker");
        assert_eq!(key().verify(&moved, 0), None, "another organization");
        let extended = reference.replacen("1000", "9000", 1);
        assert_eq!(key().verify(&extended, 0), None, "a later expiry");
        let padded = reference.replacen("1000", "01000", 1);
        assert_eq!(key().verify(&padded, 0), None, "the expiry spelt otherwise");
        for cut in 0..reference.len() {
            assert_eq!(key().verify(&reference[..cut], 0), None, "cut at {cut}");
        }
        assert_eq!(key().verify("bsr1_1000_é", 0), None);
    }

    #[test]
    fn what_stripe_cannot_carry_is_not_signed() {
        assert_eq!(
            key().sign("org with spaces", 1),
            Err(UnreferenceableOrganization)
        );
        assert_eq!(key().sign("", 1), Err(UnreferenceableOrganization));
        assert_eq!(
            key().sign(&"o".repeat(190), 1),
            Err(UnreferenceableOrganization)
        );
        assert!(ClientReferenceKey::new(b"short").is_err());
    }
}
