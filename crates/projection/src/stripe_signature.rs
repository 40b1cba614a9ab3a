//! Stripe's webhook signature: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where each
//! `v1` is hex(HMAC-SHA256(key = the whole `whsec_…` secret, message = `"<t>.<raw body>"`)).

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's `Stripe-Signature` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is absent.
    #[error("signature header is missing: {0}")]
    Missing(&'static str),
    /// The header is malformed, or no signature matches any configured secret.
    #[error("signature is invalid: {0}")]
    Invalid(&'static str),
    /// The signed timestamp is further from now than the tolerance.
    #[error("signature timestamp is outside the tolerance")]
    OutOfTolerance,
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`: when Stripe signed, unix seconds.
    pub timestamp: i64,
    /// Every `v1` signature, decoded. Other schemes (`v0`) are ignored.
    pub v1: Vec<Vec<u8>>,
}

/// Parses the header; a header without exactly one integer `t` and at least one hex `v1` is
/// malformed.
pub fn parse_signature_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Invalid("malformed Stripe-Signature header"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Invalid("more than one timestamp"));
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Invalid("timestamp is not an integer"))?,
                );
            }
            "v1" => {
                // A v1 that is not hex cannot match; keep looking at the others.
                if let Ok(bytes) = hex::decode(value) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Invalid("no timestamp"))?;
    if v1.is_empty() {
        return Err(SignatureError::Invalid("no v1 signature"));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// The `v1` signature of `body` at `timestamp` with `secret`, as hex: what Stripe sends, and
/// what test senders and benchmarks use to sign.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body))
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies Stripe deliveries against one or more secrets (several while a secret is rolled).
pub struct StripeVerifier {
    secrets: Vec<SecretString>,
    tolerance_secs: u64,
}

impl StripeVerifier {
    /// A verifier accepting a signature by any of `secrets`, signed at most `tolerance_secs`
    /// from now in either direction.
    pub fn new(secrets: Vec<SecretString>, tolerance_secs: u64) -> Self {
        StripeVerifier {
            secrets,
            tolerance_secs,
        }
    }

    /// What can be checked before the body is read: the `Stripe-Signature` header is present,
    /// well formed, and signed within the tolerance of `now` (unix seconds). A delivery that
    /// fails here is refused without reading (or buffering) its body.
    pub fn check_header(
        &self,
        header: Option<&str>,
        now: i64,
    ) -> Result<SignatureHeader, SignatureError> {
        let header = header.ok_or(SignatureError::Missing("Stripe-Signature"))?;
        let parsed = parse_signature_header(header)?;
        if !within_tolerance(now, parsed.timestamp, self.tolerance_secs) {
            return Err(SignatureError::OutOfTolerance);
        }
        Ok(parsed)
    }

    /// Verifies `body` against the `Stripe-Signature` header at time `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let parsed = self.check_header(header, now)?;
        let mut matched = subtle::Choice::from(0);
        for secret in &self.secrets {
            let expected = mac(secret.expose_secret(), parsed.timestamp, body);
            for candidate in &parsed.v1 {
                // Constant time, and every pair is compared, so timing says nothing about which.
                matched |= expected.ct_eq(candidate);
            }
        }
        if !bool::from(matched) {
            return Err(SignatureError::Invalid(
                "no signature matches a configured secret",
            ));
        }
        Ok(())
    }
}

/// Whether `timestamp` is at most `tolerance_secs` from `now`, either way. `abs_diff` cannot
/// overflow, whatever a header claims (`t` near `i64::MIN` or `i64::MAX`).
pub fn within_tolerance(now: i64, timestamp: i64, tolerance_secs: u64) -> bool {
    now.abs_diff(timestamp) <= tolerance_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    fn verifier(secrets: &[&str]) -> StripeVerifier {
        StripeVerifier::new(
            secrets.iter().map(|s| SecretString::from(*s)).collect(),
            300,
        )
    }

    #[test]
    fn a_signature_matches_the_documented_scheme() {
        // hex(HMAC-SHA256(key, "<t>.<body>")) computed independently with Python's hmac module.
        assert_eq!(
            sign("whsec_test_secret", 1_700_000_000, b"{}"),
            "ceb8863f7208fa249a6cd8f951e993c7563412aca65866f6272283debe143ab3"
        );
    }

    #[test]
    fn any_v1_matching_any_secret_is_accepted() {
        let now = 1_700_000_000;
        let header = format!(
            "t={now},v1={},v1={}",
            "ab".repeat(32),
            sign("whsec_new", now, BODY)
        );
        verifier(&["whsec_old", "whsec_new"])
            .verify(Some(&header), BODY, now)
            .expect("second v1 matches second secret");
    }

    #[test]
    fn v0_signatures_are_ignored() {
        let now = 1_700_000_000;
        let header = format!("t={now},v0={}", sign(SECRET, now, BODY));
        assert_eq!(
            verifier(&[SECRET]).verify(Some(&header), BODY, now),
            Err(SignatureError::Invalid("no v1 signature"))
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_is_out_of_tolerance() {
        let signed_at = 1_700_000_000;
        let header = format!("t={signed_at},v1={}", sign(SECRET, signed_at, BODY));
        for now in [signed_at + 301, signed_at - 301] {
            assert_eq!(
                verifier(&[SECRET]).verify(Some(&header), BODY, now),
                Err(SignatureError::OutOfTolerance)
            );
        }
        verifier(&[SECRET])
            .verify(Some(&header), BODY, signed_at + 300)
            .expect("at the bound is accepted");
    }

    #[test]
    fn extreme_timestamps_are_out_of_tolerance_without_overflowing() {
        let v = verifier(&[SECRET]);
        for (t, now) in [
            (i64::MIN, 1_700_000_000),
            (i64::MAX, 1_700_000_000),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MIN + 1, 0),
        ] {
            let header = format!("t={t},v1={}", sign(SECRET, t, BODY));
            assert_eq!(
                v.check_header(Some(&header), now),
                Err(SignatureError::OutOfTolerance),
                "t={t} now={now}"
            );
        }
        assert!(within_tolerance(i64::MAX, i64::MAX, 0));
        assert!(within_tolerance(i64::MIN, i64::MIN, 0));
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let now = 1_700_000_000;
        let header = format!("t={now},v1={}", sign(SECRET, now, BODY));
        assert!(matches!(
            verifier(&[SECRET]).verify(Some(&header), b"{}", now),
            Err(SignatureError::Invalid(_))
        ));
    }

    #[test]
    fn malformed_headers_are_invalid_and_a_missing_one_is_missing() {
        for header in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1",
            "garbage",
            "t=1,t=2,v1=00",
        ] {
            assert!(
                matches!(
                    parse_signature_header(header),
                    Err(SignatureError::Invalid(_))
                ),
                "{header:?}"
            );
        }
        assert_eq!(
            verifier(&[SECRET]).verify(None, BODY, 0),
            Err(SignatureError::Missing("Stripe-Signature"))
        );
    }
}
