//! The API's request bodies are read before the operation authenticates its caller (poem-openapi
//! parses the JSON or form body with the other arguments), so what an unauthenticated client
//! may make the server hold is bounded here, before any operation runs: a body is at most
//! [`API_BODY_LIMIT`] bytes (413 `PAYLOAD_TOO_LARGE` from its `Content-Length` before a byte is
//! read, or as soon as it passes the limit), arrives at the webhooks' minimum rate, and is
//! charged as it arrives to a budget of its own with a share per client address (503
//! `OVERLOADED` when spent), released when the operation has answered.

use std::time::Duration;

use billing_sync_error_body::ErrorBody;
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
}

impl BoundedBodies {
    pub fn new() -> Self {
        BoundedBodies {
            budget: BodyBudget::new(API_BODY_BYTES_IN_FLIGHT),
        }
    }

    /// `request` answered by `endpoint` with its body read within the bounds, or refused.
    pub async fn call(&self, endpoint: &impl Endpoint, mut request: Request) -> Response {
        if !has_body(&request) {
            return endpoint.get_response(request).await;
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

/// The documented answer to a body that was not read whole. The connection is closed after a
/// refusal that left body bytes unread, so that they are not read as the next request.
fn refused(err: BodyError) -> Response {
    let (status, code, message) = match err {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("The request body is larger than {API_BODY_LIMIT} bytes."),
        ),
        BodyError::TooSlow => (
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            format!("The request body arrived slower than {MIN_BODY_RATE} bytes per second."),
        ),
        BodyError::Timeout => (
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            format!(
                "The request body did not arrive within {} s.",
                API_BODY_TIMEOUT.as_secs()
            ),
        ),
        BodyError::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "Too many request bodies are being received; retry shortly.".to_owned(),
        ),
        BodyError::Unreadable => (
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
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
