//! The webhook endpoints: read the raw body within the limit, hand it to the pipeline, answer.

use std::sync::Arc;

use billing_sync_projection::Provider;
use billing_sync_store::ledger::{EventStatus, Recorded};
use poem::web::Data;
use poem::{Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, post};
use serde::Serialize;

use crate::body_budget::{BodyError, MIN_BODY_RATE, client_address, declared_length, read_body};
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
                "outcome" => format!("rejected_{}", code.as_str().to_ascii_lowercase()))
            .increment(1);
            rejection.into_response()
        }
    }
}

/// Everything that can be refused from the headers is refused before a byte of the body is
/// read, and the body is charged to the in-flight budget as it arrives: memory stays bounded
/// whatever unauthenticated clients send or withhold, and what they withhold costs nothing.
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
    let declared = declared_length(request.headers());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Rejection::PayloadTooLarge(limit));
    }
    let declared = declared.map(|length| length as usize);
    let charge = ingestor.open_body(client_address(request), declared);
    // The charge is held until the delivery is answered: its bytes are in memory until then.
    let (bytes, _charge) = read_body(body, limit, ingestor.body_timeout(), charge)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => Rejection::PayloadTooLarge(limit),
            BodyError::TooSlow => Rejection::BodyTooSlow(MIN_BODY_RATE),
            BodyError::Timeout => Rejection::BodyTimeout(ingestor.body_timeout().as_secs()),
            BodyError::Overloaded => Rejection::Overloaded,
            BodyError::Unreadable => Rejection::InvalidPayload("the body could not be read".into()),
        })?;
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
