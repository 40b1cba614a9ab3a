//! The webhook endpoints: read the raw body within the limit, hand it to the pipeline, answer.

use std::sync::Arc;

use billing_sync_projection::Provider;
use billing_sync_store::ledger::{EventStatus, Recorded};
use poem::web::Data;
use poem::{Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, post};
use serde::Serialize;

use crate::pipeline::Accepted;
use crate::{Ingestor, Rejection};

/// `POST /api/v1/webhooks/stripe` and `POST /api/v1/webhooks/clerk`.
pub fn routes(ingestor: Arc<Ingestor>) -> Route {
    Route::new()
        .at(
            "/api/v1/webhooks/stripe",
            post(stripe_webhook).data(ingestor.clone()),
        )
        .at("/api/v1/webhooks/clerk", post(clerk_webhook).data(ingestor))
}

/// The body of an acknowledgement.
#[derive(Serialize)]
struct Acknowledgement<'a> {
    /// `processed`, `ignored`, `failed` (recorded; replay after a fix) or `duplicate`.
    status: &'static str,
    event_id: &'a str,
}

#[handler]
async fn stripe_webhook(request: &Request, body: Body, ingestor: Data<&Arc<Ingestor>>) -> Response {
    receive(Provider::Stripe, request, body, &ingestor).await
}

#[handler]
async fn clerk_webhook(request: &Request, body: Body, ingestor: Data<&Arc<Ingestor>>) -> Response {
    receive(Provider::Clerk, request, body, &ingestor).await
}

async fn receive(
    provider: Provider,
    request: &Request,
    body: Body,
    ingestor: &Ingestor,
) -> Response {
    let result = read_and_ingest(provider, request, body, ingestor).await;
    let provider = provider.as_str();
    match result {
        Ok(accepted) => {
            let (response, outcome) = acknowledge(&accepted);
            metrics::counter!("billing_sync_webhook_deliveries_total",
                "provider" => provider, "event_type" => accepted.event_type, "outcome" => outcome)
            .increment(1);
            response
        }
        Err(rejection) => {
            // The reason only: never the body, a header value or a secret.
            tracing::warn!(provider, reason = %rejection, "webhook delivery refused");
            let (_, code) = rejection.status_and_code();
            metrics::counter!("billing_sync_webhook_deliveries_total",
                "provider" => provider, "event_type" => "unknown",
                "outcome" => format!("rejected_{}", code.to_ascii_lowercase()))
            .increment(1);
            rejection.into_response()
        }
    }
}

/// Everything that can be refused from the headers is refused before a byte of the body is
/// read, and a body is read only once it has room in the in-flight budget: memory stays
/// bounded whatever unauthenticated clients send or withhold.
async fn read_and_ingest(
    provider: Provider,
    request: &Request,
    body: Body,
    ingestor: &Ingestor,
) -> Result<Accepted, Rejection> {
    match provider {
        Provider::Stripe => ingestor.check_stripe_headers(request.headers())?,
        Provider::Clerk => ingestor.check_clerk_headers(request.headers())?,
    }
    let limit = ingestor.body_limit();
    let declared = request
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Rejection::PayloadTooLarge(limit));
    }
    // Without a Content-Length (chunked), the body may be as large as the limit.
    let expected = declared.map_or(limit, |length| length as usize);
    let _reservation = ingestor.reserve_body(expected)?;
    let timeout = ingestor.body_timeout();
    let read = tokio::time::timeout(timeout, body.into_bytes_limit(limit));
    let bytes = match read.await.unwrap_or(Err(poem::error::ReadBodyError::Io(
        std::io::ErrorKind::TimedOut.into(),
    ))) {
        Err(poem::error::ReadBodyError::Io(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
            return Err(Rejection::BodyTimeout(timeout.as_secs()));
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            return Err(Rejection::PayloadTooLarge(limit));
        }
        Err(_) => {
            return Err(Rejection::InvalidPayload(
                "the body could not be read".into(),
            ));
        }
        Ok(bytes) => bytes,
    };
    match provider {
        Provider::Stripe => ingestor.ingest_stripe(request.headers(), &bytes).await,
        Provider::Clerk => ingestor.ingest_clerk(request.headers(), &bytes).await,
    }
}

fn acknowledge(accepted: &Accepted) -> (Response, &'static str) {
    let status = match accepted.recorded {
        Recorded::Duplicate => "duplicate",
        Recorded::New(EventStatus::Processed) => "processed",
        Recorded::New(EventStatus::Ignored) => "ignored",
        Recorded::New(EventStatus::Failed) => "failed",
    };
    let body = serde_json::to_vec(&Acknowledgement {
        status,
        event_id: &accepted.event_id,
    })
    .unwrap_or_default();
    let response = Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .body(body);
    (response, status)
}
