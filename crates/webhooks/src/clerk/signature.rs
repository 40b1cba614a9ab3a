//! Svix signatures, verified with the `svix` crate: `svix-id`, `svix-timestamp`,
//! `svix-signature` (or the `webhook-*` names), ±5 minutes of tolerance, any of several secrets.

use poem::http::HeaderMap;
use svix::webhooks::{Webhook, WebhookError};

use crate::Rejection;

/// A configured Clerk secret that is not a `whsec_…` base64 secret. Says which entry, never
/// its text.
#[derive(Debug, thiserror::Error)]
#[error("entry {position} is not a whsec_… base64 secret")]
pub struct InvalidClerkSecret {
    /// 1-based position in the comma-separated list.
    pub position: usize,
}

/// How far `svix-timestamp` may be from now, either way: the svix crate's own tolerance, which
/// [`ClerkVerifier::verify`] enforces again on the signed value.
const SVIX_TOLERANCE_SECS: u64 = 5 * 60;

/// What verification tells about a Clerk delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClerkDelivery {
    /// The Svix message id: stable across Svix's retries, so the ledger's event id.
    pub message_id: String,
    /// The signed `svix-timestamp`, unix seconds.
    pub timestamp: i64,
}

/// Verifies Clerk deliveries against one or more secrets. Cloning shares them.
#[derive(Clone)]
pub struct ClerkVerifier {
    webhooks: std::sync::Arc<[Webhook]>,
}

impl std::fmt::Debug for ClerkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets themselves are never printed.
        f.debug_struct("ClerkVerifier")
            .field("secrets", &self.webhooks.len())
            .finish()
    }
}

impl ClerkVerifier {
    /// A verifier for these `whsec_…` secrets.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidClerkSecret> {
        let webhooks = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| {
                Webhook::new(secret).map_err(|_| InvalidClerkSecret {
                    position: index + 1,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClerkVerifier {
            webhooks: webhooks.into(),
        })
    }

    /// What can be checked before the body is read: `svix-id`, `svix-timestamp` and
    /// `svix-signature` (or their `webhook-*` names) present, the timestamp an integer within
    /// Svix's tolerance of `now` (unix seconds). A delivery that fails here is refused without
    /// reading (or buffering) its body.
    pub fn check_headers(&self, headers: &HeaderMap, now: i64) -> Result<(), Rejection> {
        let missing = Rejection::SignatureMissing("svix-id, svix-timestamp and svix-signature");
        header(headers, "svix-id", "webhook-id").ok_or(missing.clone())?;
        header(headers, "svix-signature", "webhook-signature").ok_or(missing.clone())?;
        let timestamp = header(headers, "svix-timestamp", "webhook-timestamp").ok_or(missing)?;
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| Rejection::SignatureInvalid("svix-timestamp is not an integer"))?;
        if !billing_sync_projection::stripe_signature::within_tolerance(
            now,
            timestamp,
            SVIX_TOLERANCE_SECS,
        ) {
            return Err(Rejection::TimestampOutOfTolerance);
        }
        Ok(())
    }

    /// Verifies `body` with the Svix headers in `headers`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<ClerkDelivery, Rejection> {
        let mut first_error = None;
        for webhook in self.webhooks.iter() {
            match webhook.verify(body, headers) {
                Ok(()) => return delivery(headers),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(match first_error {
            Some(err) => rejection(err),
            None => Rejection::NotConfigured,
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, svix: &str, unbranded: &str) -> Option<&'a str> {
    headers
        .get(svix)
        .or_else(|| headers.get(unbranded))
        .and_then(|value| value.to_str().ok())
}

fn delivery(headers: &HeaderMap) -> Result<ClerkDelivery, Rejection> {
    // The svix crate has checked both headers already; read them for the ledger.
    let message_id = header(headers, "svix-id", "webhook-id")
        .ok_or(Rejection::SignatureMissing("svix-id"))?
        .to_owned();
    let timestamp = header(headers, "svix-timestamp", "webhook-timestamp")
        .and_then(|ts| ts.parse().ok())
        .ok_or(Rejection::SignatureInvalid(
            "svix-timestamp is not an integer",
        ))?;
    Ok(ClerkDelivery {
        message_id,
        timestamp,
    })
}

fn rejection(err: WebhookError) -> Rejection {
    match err {
        WebhookError::MissingHeader(_) => {
            Rejection::SignatureMissing("svix-id, svix-timestamp and svix-signature")
        }
        WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError => {
            Rejection::TimestampOutOfTolerance
        }
        WebhookError::InvalidTimestamp => {
            Rejection::SignatureInvalid("svix-timestamp is not an integer")
        }
        WebhookError::InvalidHeader(_) => Rejection::SignatureInvalid("malformed svix header"),
        _ => Rejection::SignatureInvalid("no signature matches a configured secret"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", HeaderValue::from_str(id).unwrap());
        headers.insert("svix-timestamp", HeaderValue::from_str(timestamp).unwrap());
        headers.insert("svix-signature", HeaderValue::from_str(signature).unwrap());
        headers
    }

    /// The known-answer vector that Svix publishes for manual verification.
    #[test]
    fn the_published_svix_vector_verifies() {
        let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let payload = br#"{"test": 2432232314}"#;
        let headers = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        webhook
            .verify_ignoring_timestamp(payload, &headers)
            .expect("the published vector verifies");
        assert_eq!(
            webhook
                .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload)
                .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // And our verifier refuses it for its age: the tolerance is enforced.
        let verifier = ClerkVerifier::new(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        assert_eq!(
            verifier.verify(&headers, payload),
            Err(Rejection::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn headers_are_checked_before_the_body() {
        let verifier = ClerkVerifier::new(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let now = 1_700_000_000;
        let ok = headers("msg_1", &now.to_string(), "v1,abc");
        assert_eq!(verifier.check_headers(&ok, now + 300), Ok(()));
        assert_eq!(
            verifier.check_headers(&ok, now + 301),
            Err(Rejection::TimestampOutOfTolerance)
        );
        for extreme in [i64::MIN, i64::MAX] {
            let far = headers("msg_1", &extreme.to_string(), "v1,abc");
            assert_eq!(
                verifier.check_headers(&far, now),
                Err(Rejection::TimestampOutOfTolerance)
            );
        }
        let mut no_id = ok.clone();
        no_id.remove("svix-id");
        assert!(matches!(
            verifier.check_headers(&no_id, now),
            Err(Rejection::SignatureMissing(_))
        ));
        let not_a_number = headers("msg_1", "soon", "v1,abc");
        assert!(matches!(
            verifier.check_headers(&not_a_number, now),
            Err(Rejection::SignatureInvalid(_))
        ));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_reported_by_position() {
        let err = ClerkVerifier::new(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!"])
            .expect_err("second entry invalid");
        assert_eq!(err.position, 2);
    }
}
