//! The one pipeline both providers go through: verify → record in the ledger and apply, in one
//! transaction → acknowledge. Replay re-applies a recorded event through the same projections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_sync_store::entities::webhook_events;
use billing_sync_store::ledger::{EventStatus, NewEvent, Plan, Provider, Recorded};
use billing_sync_store::{Store, StoreError};
use poem::http::HeaderMap;
use serde_json::Value;
use tracing::Instrument;

use billing_sync_stripe_api::{StripeClient, StripeError};

use crate::body_budget::{BodyBudget, Reservation};
use crate::clerk::ClerkVerifier;
use crate::group_commit::{GroupCommit, RecordError};
use crate::json::{integer, text};
use crate::stripe::StripeVerifier;
use crate::{Rejection, clerk, stripe};

/// Turns recorded events into changes; needs no secret, so replay can use it alone.
#[derive(Clone, Debug)]
pub struct Projectors {
    /// The metadata key naming a Stripe object's organization (`STRIPE_ORG_METADATA_KEY`).
    pub stripe_org_metadata_key: String,
}

impl Projectors {
    /// What `event` changes, by its provider's projection.
    pub fn plan(&self, event: &NewEvent) -> Plan {
        match event.provider {
            Provider::Stripe => stripe::project(event, &self.stripe_org_metadata_key),
            Provider::Clerk => clerk::project(event),
        }
    }
}

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
    projectors: Projectors,
    stripe: Option<StripeVerifier>,
    clerk: Option<ClerkVerifier>,
    body_limit: usize,
    body_timeout: Duration,
    refetch: Option<StripeClient>,
    writer: GroupCommit,
    body_budget: BodyBudget,
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
        projectors: Projectors,
        stripe: Option<StripeVerifier>,
        clerk: Option<ClerkVerifier>,
        body_limit: usize,
    ) -> Self {
        Ingestor {
            writer: GroupCommit::start(store),
            projectors,
            stripe,
            clerk,
            body_limit,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            refetch: None,
            body_budget: BodyBudget::new(DEFAULT_BODY_BYTES_IN_FLIGHT),
        }
    }

    /// Caps the webhook body bytes held in memory at once, over all connections: a delivery
    /// that would pass it is refused (503 `OVERLOADED`, `Retry-After`) before its body is read.
    pub fn with_body_bytes_in_flight(mut self, bytes: usize) -> Self {
        self.body_budget = BodyBudget::new(bytes);
        self
    }

    /// Reserves room for a body of `bytes` in the in-flight budget; the reservation is held
    /// until dropped.
    pub(crate) fn reserve_body(&self, bytes: usize) -> Result<Reservation, Rejection> {
        self.body_budget
            .try_reserve(bytes)
            .ok_or(Rejection::Overloaded)
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
        let projected = match &self.refetch {
            Some(client) => refetched(client, &event).await?,
            None => None,
        };
        self.record(event, projected).await
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

    /// Records `event` and applies what `projected` (the event itself when `None`) changes.
    async fn record(
        &self,
        event: NewEvent,
        projected: Option<NewEvent>,
    ) -> Result<Accepted, Rejection> {
        let provider = event.provider.as_str();
        let span = tracing::info_span!(
            "webhook_event",
            provider = event.provider.as_str(),
            event_id = %event.event_id,
            event_type = %event.event_type,
        );
        async {
            let plan = self.projectors.plan(projected.as_ref().unwrap_or(&event));
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
                Err(err @ RecordError::Unavailable(_)) => {
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

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The ledger row names a provider this build does not know.
    #[error("ledger row {0} has an unknown provider")]
    UnknownProvider(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies a recorded event again through the same projection and ordering rules as live
/// delivery, and updates its ledger status.
pub async fn replay(
    store: &Store,
    projectors: &Projectors,
    row: &webhook_events::Model,
) -> Result<EventStatus, ReplayError> {
    let provider =
        Provider::from_column(&row.provider).ok_or(ReplayError::UnknownProvider(row.id))?;
    let event = NewEvent {
        provider,
        event_id: row.event_id.clone(),
        event_type: row.event_type.clone(),
        api_version: row.api_version.clone(),
        livemode: row.livemode,
        event_created: row.event_created,
        payload: row.payload.clone(),
        payload_text: None,
    };
    let plan = projectors.plan(&event);
    Ok(store.replay(row, &plan).await?)
}

/// The event as if it carried the object's current state, fetched now: projected as an update
/// (or a deletion) at the fetch time, so the newest fetch wins whatever the delivery order.
/// `None` for events that are not about a customer or subscription, or whose object Stripe no
/// longer has (then the payload is used).
async fn refetched(client: &StripeClient, event: &NewEvent) -> Result<Option<NewEvent>, Rejection> {
    let is_customer = matches!(
        event.event_type.as_str(),
        "customer.created" | "customer.updated" | "customer.deleted"
    );
    let is_subscription = event.event_type.starts_with("customer.subscription.");
    let id = event
        .payload
        .get("data")
        .and_then(|data| data.get("object"))
        .and_then(|object| text(object, "id"));
    let path = match (is_customer, is_subscription, id) {
        (true, _, Some(id)) => format!("customers/{id}"),
        (_, true, Some(id)) => format!("subscriptions/{id}"),
        _ => return Ok(None),
    };
    let fetched_at = unix_now();
    let object = match client.retrieve(&path).await {
        Ok(object) => object,
        Err(StripeError::Api { status: 404, .. }) => {
            tracing::warn!(
                path,
                "Stripe no longer has the object; projecting the payload"
            );
            return Ok(None);
        }
        Err(err) => {
            tracing::warn!(error = %err, "refetching from Stripe failed; asking Stripe to retry");
            return Err(Rejection::UpstreamUnavailable);
        }
    };
    let deleted = object.get("deleted").and_then(Value::as_bool) == Some(true);
    let event_type = match (is_customer, deleted) {
        (true, true) => "customer.deleted",
        (true, false) => "customer.updated",
        _ => "customer.subscription.updated",
    };
    let mut payload = event.payload.clone();
    payload["data"]["object"] = object;
    Ok(Some(NewEvent {
        event_type: event_type.to_owned(),
        event_created: Some(fetched_at),
        payload,
        payload_text: None,
        ..event.clone()
    }))
}

/// A verified Stripe body as the ledger's event: it must be a JSON object with a string `id`,
/// a string `type` and an integer `created`.
pub fn stripe_event(body: &[u8]) -> Result<NewEvent, Rejection> {
    let (payload, payload_text) = parse_json(body)?;
    Ok(NewEvent {
        provider: Provider::Stripe,
        event_id: text(&payload, "id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Rejection::InvalidPayload("no string `id`".into()))?,
        event_type: text(&payload, "type")
            .ok_or_else(|| Rejection::InvalidPayload("no string `type`".into()))?,
        api_version: text(&payload, "api_version"),
        livemode: payload.get("livemode").and_then(Value::as_bool),
        event_created: Some(
            integer(&payload, "created")
                .ok_or_else(|| Rejection::InvalidPayload("no integer `created`".into()))?,
        ),
        payload,
        payload_text,
    })
}

/// A verified Clerk body as the ledger's event, identified by its Svix message id and dated by
/// its `svix-timestamp`: it must be a JSON object with a string `type`.
pub fn clerk_event(body: &[u8], message_id: String, timestamp: i64) -> Result<NewEvent, Rejection> {
    let (payload, payload_text) = parse_json(body)?;
    Ok(NewEvent {
        provider: Provider::Clerk,
        event_id: message_id,
        event_type: text(&payload, "type")
            .ok_or_else(|| Rejection::InvalidPayload("no string `type`".into()))?,
        api_version: None,
        livemode: None,
        event_created: Some(timestamp),
        payload,
        payload_text,
    })
}

/// The body as a JSON object, and its text when that is what the ledger may store as is (not
/// when U+0000 had to be replaced).
fn parse_json(body: &[u8]) -> Result<(Value, Option<std::sync::Arc<str>>), Rejection> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|err| Rejection::InvalidPayload(format!("not JSON: {err}")))?;
    if !value.is_object() {
        return Err(Rejection::InvalidPayload("not a JSON object".into()));
    }
    // JSON can carry U+0000 only as the escape `\u0000`: look for it before walking the tree.
    if body.windows(6).any(|window| window == b"\\u0000") {
        replace_nul(&mut value);
        return Ok((value, None));
    }
    let text = std::str::from_utf8(body).ok().map(std::sync::Arc::from);
    Ok((value, text))
}

/// What U+0000 becomes in every string (and key) of a payload: PostgreSQL cannot store U+0000
/// in `jsonb` or `text`, and a signed event must be recorded, not refused forever. SQLite
/// could store it, but both backends record and project the same thing.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => {
            *text = text.replace('\0', &NUL_REPLACEMENT.to_string());
        }
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            if map.keys().any(|key| key.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(key, value)| (key.replace('\0', &NUL_REPLACEMENT.to_string()), value))
                    .collect();
            }
            map.values_mut().for_each(replace_nul);
        }
        _ => {}
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
