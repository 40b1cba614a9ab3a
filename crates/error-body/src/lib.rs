//! The one JSON body of every error answer billing-sync gives, and the one list of the codes
//! it carries: the API's operations document it (poem-openapi's `Object`), the webhook routes
//! and the connection guard write the same type as bytes. The request's id comes from the
//! request being answered ([`with_request_id`], set by the server's request-id middleware
//! around every route), so that no code building an error has to carry the request, and no
//! body is parsed again to add it.

use std::future::Future;

use poem_openapi::Object;
use poem_openapi::types::ToJSON;

/// Every code an error answer carries, stable and machine-readable: what a caller branches on.
/// Each operation documents the ones it answers; the webhook routes' and the connection
/// guard's are in docs/webhooks.md and docs/operations.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: a field or parameter is missing, malformed or out of bounds.
    ValidationError,
    /// 401: no credential, or one that is not valid now.
    Unauthorized,
    /// 403: valid, but not allowed this (a role, an origin, a revoked membership).
    Forbidden,
    /// 404: no route has the path, or what it names does not exist (the portal: no customer yet).
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 409: the state forbids it now (an active plan's checkout).
    Conflict,
    /// 429: too many requests; `Retry-After` says when to try again.
    TooManyRequests,
    /// 500: the server failed; the log line with the request's id says why.
    InternalError,
    /// 503: the database is unavailable; try again.
    Unavailable,
    /// 409 of credits: the balance does not cover the amount (the body says the balance).
    InsufficientCredits,
    /// 409 of credits: the idempotency key was used with another request.
    IdempotencyKeyReused,
    /// 404 of credits: no such reservation for the organization.
    ReservationNotFound,
    /// 409 of credits: the reservation is already settled otherwise.
    ReservationSettled,
    /// 503 of a webhook route whose secret is not set.
    NotConfigured,
    /// 400 of a webhook: no signature header.
    SignatureMissing,
    /// 400 of a webhook: the signature does not verify.
    SignatureInvalid,
    /// 400 of a webhook: signed too long ago or in the future.
    TimestampOutOfTolerance,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 408: the body did not arrive in time.
    BodyTimeout,
    /// 400 of a webhook: verified bytes that are not an event.
    InvalidPayload,
    /// 503: more bodies in flight than the server holds; try again.
    Overloaded,
    /// 503 of a webhook: the provider's API, needed to record it, is failing.
    UpstreamUnavailable,
    /// 431: the request head is over the size limit.
    HeadersTooLarge,
    /// 408: the request head did not arrive in time.
    HeadersTimeout,
}

impl ErrorCode {
    /// Every code, in the order above.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::ValidationError,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::TooManyRequests,
        ErrorCode::InternalError,
        ErrorCode::Unavailable,
        ErrorCode::InsufficientCredits,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::ReservationNotFound,
        ErrorCode::ReservationSettled,
        ErrorCode::NotConfigured,
        ErrorCode::SignatureMissing,
        ErrorCode::SignatureInvalid,
        ErrorCode::TimestampOutOfTolerance,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BodyTimeout,
        ErrorCode::InvalidPayload,
        ErrorCode::Overloaded,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::HeadersTooLarge,
        ErrorCode::HeadersTimeout,
    ];

    /// The code as bodies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InsufficientCredits => "INSUFFICIENT_CREDITS",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::ReservationNotFound => "RESERVATION_NOT_FOUND",
            ErrorCode::ReservationSettled => "RESERVATION_SETTLED",
            ErrorCode::NotConfigured => "NOT_CONFIGURED",
            ErrorCode::SignatureMissing => "SIGNATURE_MISSING",
            ErrorCode::SignatureInvalid => "SIGNATURE_INVALID",
            ErrorCode::TimestampOutOfTolerance => "TIMESTAMP_OUT_OF_TOLERANCE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::BodyTimeout => "BODY_TIMEOUT",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::HeadersTimeout => "HEADERS_TIMEOUT",
        }
    }

    /// The code a body carries, if it is one of ours.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ErrorBody {
    /// A stable, machine-readable code: `UNAUTHORIZED`, `FORBIDDEN`, `VALIDATION_ERROR`,
    /// `NOT_FOUND`, `CONFLICT`, `TOO_MANY_REQUESTS`, `INTERNAL_ERROR` or `UNAVAILABLE`; credits'
    /// writes add `INSUFFICIENT_CREDITS`, `IDEMPOTENCY_KEY_REUSED`, `RESERVATION_NOT_FOUND` and
    /// `RESERVATION_SETTLED`. Each operation documents the ones it answers; a code not listed
    /// here may be added, so treat an unknown one by the status.
    pub code: String,
    /// What went wrong and what to do, for the caller.
    pub message: String,
    /// The request's id, as in the `X-Request-Id` header (the caller's own when it sent one):
    /// quote it when asking for support; the server's log lines about the request carry it.
    pub request_id: Option<String>,
}

tokio::task_local! {
    /// The id of the request being answered, where [`with_request_id`] set it.
    static REQUEST_ID: String;
}

/// Runs `answering` (the handling of one request) with `request_id` as the id every
/// [`ErrorBody`] built meanwhile carries.
pub async fn with_request_id<F: Future>(request_id: String, answering: F) -> F::Output {
    REQUEST_ID.scope(request_id, answering).await
}

impl ErrorBody {
    /// A body with `code` and `message`, carrying the id of the request being answered when
    /// there is one ([`with_request_id`]; a connection refused before any request has none).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.as_str().to_owned(),
            message: message.into(),
            request_id: REQUEST_ID.try_with(Clone::clone).ok(),
        }
    }

    /// The body as JSON bytes, for answers written outside poem-openapi's operations.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.to_json_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_carries_the_id_of_the_request_being_answered_and_none_outside_one() {
        let outside = ErrorBody::new(ErrorCode::Forbidden, "no");
        assert_eq!(
            String::from_utf8(outside.to_json_bytes()).unwrap(),
            r#"{"code":"FORBIDDEN","message":"no"}"#
        );
        let inside = with_request_id("req-1".into(), async {
            tokio::task::yield_now().await;
            ErrorBody::new(ErrorCode::Forbidden, "no")
        })
        .await;
        assert_eq!(
            String::from_utf8(inside.to_json_bytes()).unwrap(),
            r#"{"code":"FORBIDDEN","message":"no","request_id":"req-1"}"#
        );
    }

    #[test]
    fn every_code_is_listed_once_and_reads_back() {
        let mut written: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_')
            );
        }
        written.sort_unstable();
        written.dedup();
        assert_eq!(written.len(), ErrorCode::ALL.len());
        assert_eq!(ErrorCode::parse("NOT_A_CODE"), None);
    }
}
