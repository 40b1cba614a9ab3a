//! Why a delivery was not accepted, and the one place that maps it to an HTTP answer.

use billing_sync_error_body::{ErrorBody, ErrorCode};
use billing_sync_projection::NotAnEvent;
use billing_sync_projection::stripe_signature::SignatureError;
use poem::http::StatusCode;

/// A delivery refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No webhook secret is configured for this provider: accept nothing (fail closed).
    #[error("webhook secret is not configured")]
    NotConfigured,
    /// The signature header is absent.
    #[error("signature header is missing: {0}")]
    SignatureMissing(&'static str),
    /// The signature header is malformed, or no signature matches any configured secret.
    #[error("signature is invalid: {0}")]
    SignatureInvalid(&'static str),
    /// The signed timestamp is further from now than the tolerance.
    #[error("signature timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    /// The body is larger than the configured limit.
    #[error("body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive in full within the time allowed (a slow or stalled sender).
    #[error("the body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// After its first seconds, the body arrived slower than the minimum rate (a trickling
    /// sender holding a connection).
    #[error("the body arrived slower than {0} bytes per second")]
    BodyTooSlow(usize),
    /// The webhook bodies already being received fill `WEBHOOK_BODY_BYTES_IN_FLIGHT`: nothing
    /// was read or stored, retry shortly.
    #[error("too many webhook bodies are being received; retry shortly")]
    Overloaded,
    /// The signature is valid but the body is not an event we can read.
    #[error("payload is not an event: {0}")]
    InvalidPayload(String),
    /// The database is unavailable: nothing was stored, retry later.
    #[error("database is unavailable")]
    Unavailable,
    /// `STRIPE_REFETCH_OBJECTS` is on and the Stripe API did not answer: nothing was stored,
    /// retry later.
    #[error("the Stripe API is unavailable")]
    UpstreamUnavailable,
    /// An unexpected server error: nothing was acknowledged, retry later.
    #[error("internal error")]
    Internal,
}

impl Rejection {
    /// The HTTP status and stable code of this refusal.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Rejection::NotConfigured => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotConfigured),
            Rejection::SignatureMissing(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::SignatureMissing)
            }
            Rejection::SignatureInvalid(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::SignatureInvalid)
            }
            Rejection::TimestampOutOfTolerance => {
                (StatusCode::BAD_REQUEST, ErrorCode::TimestampOutOfTolerance)
            }
            Rejection::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            Rejection::BodyTimeout(_) | Rejection::BodyTooSlow(_) => {
                (StatusCode::REQUEST_TIMEOUT, ErrorCode::BodyTimeout)
            }
            Rejection::InvalidPayload(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPayload),
            Rejection::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded),
            Rejection::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Rejection::UpstreamUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::UpstreamUnavailable,
            ),
            Rejection::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError),
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> poem::Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Rejection::Unavailable => {
                "the database is unavailable; nothing was stored, retry later".to_owned()
            }
            Rejection::UpstreamUnavailable => {
                "the Stripe API did not answer the refetch; nothing was stored, retry later"
                    .to_owned()
            }
            Rejection::Internal => "internal error; nothing was stored, retry later".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody::new(code, message).to_json_bytes();
        let response = poem::Response::builder()
            .status(status)
            .content_type("application/json");
        let response = match self {
            // Stripe and Svix retry on their own schedule; a client that reads the header
            // knows it may come back at once.
            Rejection::Overloaded => response.header(poem::http::header::RETRY_AFTER, "1"),
            _ => response,
        };
        response.body(body)
    }
}

impl From<SignatureError> for Rejection {
    fn from(err: SignatureError) -> Self {
        match err {
            SignatureError::Missing(what) => Rejection::SignatureMissing(what),
            SignatureError::Invalid(why) => Rejection::SignatureInvalid(why),
            SignatureError::OutOfTolerance => Rejection::TimestampOutOfTolerance,
        }
    }
}

impl From<NotAnEvent> for Rejection {
    fn from(NotAnEvent(why): NotAnEvent) -> Self {
        Rejection::InvalidPayload(why)
    }
}
