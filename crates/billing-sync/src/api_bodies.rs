//! The API's request bodies are read before the operation authenticates its caller (poem-openapi
//! parses the JSON or form body with the other arguments), so what an unauthenticated client
//! may make the server hold is bounded here, before any operation runs: a body is at most
//! [`API_BODY_LIMIT`] bytes (413 `PAYLOAD_TOO_LARGE` from its `Content-Length` before a byte is
//! read, or as soon as it passes the limit), arrives at the webhooks' minimum rate, and is
//! charged as it arrives to a budget of its own with a share per client address (503
//! `OVERLOADED` when spent), released when the operation has answered.
//!
//! The ledger's writes take only an API key, which needs no body to check: a request to one of
//! them without a key of `BILLING_API_KEYS` is answered 401 before a byte of its body is read.
//! The routes a Clerk session authenticates read their bounded body first (verifying a token
//! may wait on the JWKS, and the body is at most 64 KiB).

use std::sync::Arc;
use std::time::Duration;

use billing_sync_api::api_key::{API_KEY_REQUIRED, WRITE_PATHS};
use billing_sync_api::credits::{Credits, CreditsError};
use billing_sync_error_body::{ErrorBody, ErrorCode};
use billing_sync_webhooks::body_budget::{
    BodyBudget, BodyError, MIN_BODY_RATE, client_address, declared_length, read_body,
};
use poem::http::{Method, StatusCode, header};
use poem::{Endpoint, Request, Response};

/// The largest API request body: a credits or checkout request is a few hundred bytes.
pub const API_BODY_LIMIT: usize = 64 * 1024;

/// API body bytes held at once, over all connections: 256 bodies at the limit.
const API_BODY_BYTES_IN_FLIGHT: usize = 16 * 1024 * 1024;

/// How long an API body may take to arrive whole.
const API_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads every API request body within the bounds above before the operation sees it.
pub struct BoundedBodies {
    budget: BodyBudget,
    /// Checks the API key of the ledger's writes.
    credits: Arc<Credits>,
}

impl BoundedBodies {
    pub fn new(credits: Arc<Credits>) -> Self {
        BoundedBodies {
            budget: BodyBudget::new(API_BODY_BYTES_IN_FLIGHT),
            credits,
        }
    }

    /// Whether `request` is a ledger write without an admitted API key (with no keys
    /// configured, the operation answers that).
    fn lacks_api_key(&self, request: &Request) -> bool {
        if !WRITE_PATHS.contains(&request.uri().path()) {
            return false;
        }
        let key = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        matches!(
            self.credits.authenticate(key),
            Err(CreditsError::Unauthorized)
        )
    }

    /// `request` answered by `endpoint` with its body read within the bounds, or refused.
    pub async fn call(&self, endpoint: &impl Endpoint, mut request: Request) -> Response {
        if !has_body(&request) {
            return endpoint.get_response(request).await;
        }
        if self.lacks_api_key(&request) {
            tracing::info!(
                path = request.uri().path(),
                "refused before its body: missing or unknown API key"
            );
            return unauthorized();
        }
        let declared = declared_length(request.headers());
        if declared.is_some_and(|length| length > API_BODY_LIMIT as u64) {
            return refused(BodyError::TooLarge);
        }
        let charge = self.budget.open(
            client_address(&request),
            declared.map(|length| length as usize),
        );
        let body = request.take_body();
        match read_body(body, API_BODY_LIMIT, API_BODY_TIMEOUT, charge).await {
            Ok((bytes, _charge)) => {
                request.set_body(bytes);
                // The charge is held until the operation answers: the bytes live until then.
                endpoint.get_response(request).await
            }
            Err(err) => refused(err),
        }
    }
}

/// Whether the request may carry a body: it declares one, or its method usually has one.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || declared_length(headers).is_some_and(|length| length > 0)
        || matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        )
}

/// The ledger writes' 401, as the operations answer it; the connection is closed, its body
/// unread.
fn unauthorized() -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .content_type("application/json")
        .header(header::WWW_AUTHENTICATE, "Bearer")
        .header(header::CONNECTION, "close")
        .body(ErrorBody::new(ErrorCode::Unauthorized, API_KEY_REQUIRED).to_json_bytes())
}

/// The documented answer to a body that was not read whole. The connection is closed after a
/// refusal that left body bytes unread, so that they are not read as the next request.
fn refused(err: BodyError) -> Response {
    let (status, code, message) = match err {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {API_BODY_LIMIT} bytes."),
        ),
        BodyError::TooSlow => (
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            format!("The request body arrived slower than {MIN_BODY_RATE} bytes per second."),
        ),
        BodyError::Timeout => (
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            format!(
                "The request body did not arrive within {} s.",
                API_BODY_TIMEOUT.as_secs()
            ),
        ),
        BodyError::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "Too many request bodies are being received; retry shortly.".to_owned(),
        ),
        BodyError::Unreadable => (
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationError,
            "The request body could not be read.".to_owned(),
        ),
    };
    let response = Response::builder()
        .status(status)
        .content_type("application/json")
        .header(header::CONNECTION, "close");
    let response = match err {
        BodyError::Overloaded => response.header(header::RETRY_AFTER, "1"),
        _ => response,
    };
    response.body(ErrorBody::new(code, message).to_json_bytes())
}
