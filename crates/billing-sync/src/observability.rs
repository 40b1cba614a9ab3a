//! Request ids, the access log and the Prometheus endpoint.

use std::time::Instant;

use billing_sync_error_body::with_request_id;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;

/// The header that carries the request id, kept from the request when present.
pub const REQUEST_ID: &str = "x-request-id";

/// Every response carries an `x-request-id` (the caller's when it sent a sane one, else a new
/// UUID), and every log line written while handling the request carries it as `request_id`.
pub struct RequestIds;

impl<E: Endpoint> Middleware<E> for RequestIds {
    type Output = RequestIdsEndpoint<E>;

    fn transform(&self, next: E) -> Self::Output {
        RequestIdsEndpoint { next }
    }
}

/// The endpoint [`RequestIds`] wraps.
pub struct RequestIdsEndpoint<E> {
    next: E,
}

/// A caller's id is kept only if it is short printable ASCII, so it cannot forge log lines.
fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

impl<E: Endpoint> Endpoint for RequestIdsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Self::Output> {
        let request_id = request
            .header(REQUEST_ID)
            .filter(|id| sane(id))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        // The path only: a query string could carry something secret.
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %request.method(),
            path = %request.uri().path(),
        );
        let started = Instant::now();
        // Every error body built while answering carries the id (`ErrorBody::new` reads it).
        let answering = async {
            let response = match self.next.call(request).await {
                Ok(output) => output.into_response(),
                Err(err) => err.into_response(),
            };
            tracing::info!(
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1e3,
                "request completed"
            );
            response
        };
        let mut response = with_request_id(request_id.clone(), answering.instrument(span)).await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        Ok(response)
    }
}

/// The buckets of every `…_seconds` histogram: from a millisecond (a commit) to 30 s (an
/// upstream's whole budget). Histograms, not the exporter's default summaries: buckets add up
/// across replicas (`sum by (le) (rate(…_bucket[5m]))`), quantiles do not.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The buckets of every `…_batch_size` histogram: requests or events per transaction.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Suffix("_batch_size".into()),
                        &BATCH_SIZE_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("the only metrics recorder of the process");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "billing_sync_webhook_deliveries_total",
        "Webhook deliveries by provider, event type and outcome (processed, duplicate, ignored, failed, rejected_*)."
    );
    metrics::describe_histogram!(
        "billing_sync_webhook_record_seconds",
        metrics::Unit::Seconds,
        "Time from a verified delivery to the commit that holds it."
    );
    metrics::describe_histogram!(
        "billing_sync_webhook_batch_size",
        "Events per group-commit transaction."
    );
    metrics::describe_counter!(
        "billing_sync_portal_requests_total",
        "Customer-portal requests by outcome."
    );
    metrics::describe_counter!(
        "billing_sync_checkout_requests_total",
        "Checkout requests by outcome."
    );
    metrics::describe_histogram!(
        "billing_sync_stripe_api_seconds",
        metrics::Unit::Seconds,
        "Stripe API calls by operation and outcome."
    );
    metrics::describe_gauge!(
        "billing_sync_db_connections",
        "Database pool connections by state (in_use, idle)."
    );
}

#[cfg(test)]
mod tests {
    use super::sane;

    #[test]
    fn only_short_printable_request_ids_are_kept() {
        assert!(sane("req-123_abc"));
        assert!(!sane(""));
        assert!(!sane("has space"));
        assert!(!sane("line\nbreak"));
        assert!(!sane(&"x".repeat(129)));
    }
}
