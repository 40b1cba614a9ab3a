//! The one pipeline both providers go through: verify → record in the ledger and apply, in one
//! transaction → acknowledge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_sync_projection::stripe_signature::StripeVerifier;
use billing_sync_projection::{NewEvent, Plan, Projection, clerk_event, stripe_event};
use billing_sync_store::Store;
use billing_sync_store::ledger::Recorded;
use poem::http::HeaderMap;
use tracing::Instrument;

use billing_sync_stripe_api::StripeClient;
use billing_sync_upstream::RetryPolicy;

use crate::Rejection;
use crate::body_budget::{BodyBudget, Charge};
use crate::clerk::ClerkVerifier;
use crate::group_commit::GroupCommit;
use crate::stripe_reads::{line_items_plan, refetched};
use billing_sync_store::retry::WriteError;

/// What happened to an accepted delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The event's id in the ledger.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// New (with its status) or a duplicate.
    pub recorded: Recorded,
}

/// Accepts verified deliveries into the store.
pub struct Ingestor {
    projection: Projection,
    stripe: Option<StripeVerifier>,
    clerk: Option<ClerkVerifier>,
    body_limit: usize,
    body_timeout: Duration,
    refetch: Option<StripeClient>,
    line_items: Option<StripeClient>,
    writer: GroupCommit,
    body_budget: BodyBudget,
}

/// The longest a live delivery waits on Stripe's API, retries included: Stripe and Svix give up
/// on an answer after some seconds, and redeliver a refusal, so past it the delivery is refused
/// (503 `UPSTREAM_UNAVAILABLE`) with nothing recorded, rather than left without an answer.
pub const LIVE_UPSTREAM_BUDGET: Duration = Duration::from_secs(5);

/// What `read` gets from Stripe within [`LIVE_UPSTREAM_BUDGET`]; a failure or the budget spent
/// is [`Rejection::UpstreamUnavailable`], logged as `what` failing.
async fn within_live_budget<T>(
    what: &'static str,
    read: impl Future<Output = Result<T, billing_sync_stripe_api::StripeError>>,
) -> Result<T, Rejection> {
    match tokio::time::timeout(LIVE_UPSTREAM_BUDGET, read).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "{what} failed; asking the sender to retry");
            Err(Rejection::UpstreamUnavailable)
        }
        Err(_) => {
            tracing::warn!(
                budget_secs = LIVE_UPSTREAM_BUDGET.as_secs(),
                "{what} took longer than a live delivery may wait; asking the sender to retry"
            );
            Err(Rejection::UpstreamUnavailable)
        }
    }
}

/// How long a sender gets to deliver a whole body unless told otherwise.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Webhook body bytes held at once unless told otherwise (`WEBHOOK_BODY_BYTES_IN_FLIGHT`).
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

impl Ingestor {
    /// An ingestor writing to `store` through a group-commit writer started on the current
    /// tokio runtime. A provider whose verifier is `None` is not configured and accepts nothing.
    pub fn new(
        store: Store,
        projection: Projection,
        stripe: Option<StripeVerifier>,
        clerk: Option<ClerkVerifier>,
        body_limit: usize,
    ) -> Self {
        Ingestor {
            writer: GroupCommit::start(store),
            projection,
            stripe,
            clerk,
            body_limit,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            refetch: None,
            line_items: None,
            body_budget: BodyBudget::new(DEFAULT_BODY_BYTES_IN_FLIGHT),
        }
    }

    /// Caps the webhook body bytes held in memory at once, over all connections (see
    /// [`crate::body_budget`]): a body that would pass it is refused (503 `OVERLOADED`,
    /// `Retry-After`) as soon as it does.
    pub fn with_body_bytes_in_flight(mut self, bytes: usize) -> Self {
        self.body_budget = BodyBudget::new(bytes);
        self
    }

    /// A charge on the in-flight budget for a body from `address` whose `Content-Length` says
    /// `declared`, grown as its bytes arrive and released when dropped.
    pub(crate) fn open_body(
        &self,
        address: Option<std::net::IpAddr>,
        declared: Option<usize>,
    ) -> Charge {
        self.body_budget.open(address, declared)
    }

    /// What can be refused from a Stripe delivery's headers alone, before its body is read.
    pub fn check_stripe_headers(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let verifier = self.stripe.as_ref().ok_or(Rejection::NotConfigured)?;
        verifier.check_header(stripe_signature(headers)?, unix_now())?;
        Ok(())
    }

    /// What can be refused from a Clerk delivery's headers alone, before its body is read.
    pub fn check_clerk_headers(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let verifier = self.clerk.as_ref().ok_or(Rejection::NotConfigured)?;
        verifier.check_headers(headers, unix_now())
    }

    /// Refuses (408) a delivery whose body has not arrived in full within `timeout`, so that
    /// slow or stalled senders cannot hold connections and memory indefinitely.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long a sender gets to deliver a whole body.
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// Projects Stripe customers and subscriptions from their current state fetched with
    /// `client` instead of the event payload (`STRIPE_REFETCH_OBJECTS`), which makes delivery
    /// order irrelevant. The ledger still records the event as received.
    pub fn with_stripe_refetch(mut self, client: StripeClient) -> Self {
        self.refetch = Some(client);
        self
    }

    /// Reads what a paid checkout session not created by billing-sync (a Payment Link's) bought
    /// from its line items with `client` (`STRIPE_SECRET_KEY` set); without it such a session is
    /// recorded `failed`, for a replay once configured.
    pub fn with_stripe_line_items(mut self, client: StripeClient) -> Self {
        self.line_items = Some(client);
        self
    }

    /// The largest body accepted, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Verifies a Stripe delivery on its raw bytes, then records and applies it.
    pub async fn ingest_stripe(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let verifier = self.stripe.as_ref().ok_or(Rejection::NotConfigured)?;
        verifier.verify(stripe_signature(headers)?, body, unix_now())?;
        let event = stripe_event(body)?;
        let mut plan = match &self.refetch {
            Some(client) => {
                within_live_budget(
                    "refetching from Stripe",
                    refetched(client, &event, &self.projection, unix_now()),
                )
                .await?
            }
            None => None,
        };
        if let (None, Some(client)) = (&plan, &self.line_items) {
            plan = within_live_budget(
                "reading a session's line items from Stripe",
                line_items_plan(client, RetryPolicy::INTERACTIVE, &event, &self.projection),
            )
            .await?;
        }
        self.record(event, plan).await
    }

    /// Verifies a Clerk (Svix) delivery on its raw bytes, then records and applies it.
    pub async fn ingest_clerk(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let verifier = self.clerk.as_ref().ok_or(Rejection::NotConfigured)?;
        let delivery = verifier.verify(headers, body)?;
        let event = clerk_event(body, delivery.message_id, delivery.timestamp)?;
        self.record(event, None).await
    }

    /// Records `event` and applies `plan` (when `None`, what the event itself changes).
    async fn record(&self, event: NewEvent, plan: Option<Plan>) -> Result<Accepted, Rejection> {
        let provider = event.provider.as_str();
        let span = tracing::info_span!(
            "webhook_event",
            provider = event.provider.as_str(),
            event_id = %event.event_id,
            event_type = %event.event_type,
        );
        async {
            let plan = plan.unwrap_or_else(|| self.projection.plan(&event));
            if let Plan::Fail(reason) = &plan {
                tracing::warn!(reason = %reason, "event cannot be projected; recording it as failed");
            }
            let (event_id, event_type) = (event.event_id.clone(), event.event_type.clone());
            let started = std::time::Instant::now();
            let result = self.writer.record(event, plan).await;
            metrics::histogram!("billing_sync_webhook_record_seconds", "provider" => provider)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(recorded) => {
                    tracing::info!(outcome = ?recorded, "event recorded");
                    Ok(Accepted {
                        event_id,
                        event_type,
                        recorded,
                    })
                }
                Err(err @ WriteError::Unavailable(_)) => {
                    tracing::warn!(error = %err, "database unavailable; asking the sender to retry");
                    Err(Rejection::Unavailable)
                }
                Err(err) => {
                    tracing::error!(error = %err, "recording the event failed");
                    Err(Rejection::Internal)
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn stripe_signature(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    headers
        .get("stripe-signature")
        .map(|value| value.to_str())
        .transpose()
        .map_err(|_| Rejection::SignatureInvalid("Stripe-Signature is not text"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
