//! Replay: a recorded event applied again, after a fix, through the same projections and
//! ordering rules as its live delivery, its ledger status updated. Of the Stripe reads a live
//! delivery may make, a replay makes the line items' (a purchase is only there), not the
//! refetch: it applies the payload as recorded.

use billing_sync_projection::{Projection, Provider, clerk_event, stripe_event};
use billing_sync_store::entities::webhook_events;
use billing_sync_store::ledger::EventStatus;
use billing_sync_store::{Store, StoreError};
use billing_sync_stripe_api::{StripeClient, StripeError};

use crate::stripe_reads::line_items_plan;
use billing_sync_upstream::RetryPolicy;

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The ledger row names a provider this build does not know.
    #[error("ledger row {0} has an unknown provider")]
    UnknownProvider(i64),
    /// The ledger row's payload is not an event this build can read.
    #[error("ledger row {0} does not hold an event: {1}")]
    NotAnEvent(i64, billing_sync_projection::NotAnEvent),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a session's line items from Stripe failed.
    #[error("reading line items from Stripe: {0}")]
    Stripe(#[from] StripeError),
}

/// Applies a recorded event again through the same projection and ordering rules as live
/// delivery, and updates its ledger status.
pub async fn replay(
    store: &Store,
    projection: &Projection,
    line_items: Option<&StripeClient>,
    row: &webhook_events::Model,
) -> Result<EventStatus, ReplayError> {
    let provider =
        Provider::from_column(&row.provider).ok_or(ReplayError::UnknownProvider(row.id))?;
    // The stored body, read exactly as its delivery was.
    let body = row.payload.as_bytes();
    let event = match provider {
        Provider::Stripe => stripe_event(body),
        Provider::Clerk => clerk_event(
            body,
            row.event_id.clone(),
            row.event_created.unwrap_or_default(),
        ),
    }
    .map_err(|err| ReplayError::NotAnEvent(row.id, err))?;
    let fetched = match line_items {
        Some(client) => line_items_plan(client, RetryPolicy::PATIENT, &event, projection).await?,
        None => None,
    };
    let plan = fetched.unwrap_or_else(|| projection.plan(&event));
    Ok(store.replay(row, &plan).await?)
}
