//! The publisher: for each organization whose outbox row says its billing changed, reads the
//! state now (after the change's commit, so at least as new) and, when it differs from what was
//! last published, appends the events that say so, in one transaction with the row's
//! `published` version.

use std::sync::Arc;

use billing_sync_api::credits::Credits;
use billing_sync_api::credits::api::organization_billing;
use billing_sync_api::events::{BILLING_UPDATED, BalanceLow, CREDITS_BALANCE_LOW};
use billing_sync_api::plans::Plans;
use billing_sync_store::Store;
use billing_sync_store::outbox::{NewBillingEvent, OutboxWork, Published, Unpublished};
use poem_openapi::types::ToJSON;
use serde_json::Value;

use super::{LEASE, keep_working, lease_token, unix_now};

/// Organizations leased at a time: many, so that under steady ingestion (every batch full, no
/// wait) one lease and one publication statement serve many (docs/proofs.md).
const BATCH: u64 = 128;

/// The state field a billing event is not sent for: a balance that moves is not news (its
/// crossing of the low-balance threshold is, as `credits.balance_low`). The event's data still
/// carries the balance of the moment.
const MOVING_FIELD: &str = "credits_balance";

pub struct Publisher {
    pub store: Store,
    pub plans: Arc<Plans>,
    pub credits: Arc<Credits>,
    pub low_balance_threshold: Option<i64>,
}

impl Publisher {
    /// Publishes for as long as the process runs.
    pub async fn run(self) {
        keep_working("publishing", BATCH, || self.publish_some()).await;
    }

    /// Publishes one batch of organizations, in one transaction; how many were leased.
    async fn publish_some(&self) -> anyhow::Result<usize> {
        let now = unix_now();
        if !self.store.outbox_has(OutboxWork::Unpublished, now).await? {
            return Ok(0);
        }
        let lease = lease_token();
        let leased = self
            .store
            .lease_unpublished(&lease, now, now + LEASE.as_secs() as i64, BATCH)
            .await?;
        let mut read = Vec::with_capacity(leased.len());
        for organization in &leased {
            match self.read(organization).await {
                Ok(publication) => read.push((organization, publication)),
                // Its lease lapses and it is published again: nothing is lost.
                Err(err) => tracing::warn!(
                    organization_id = %organization.organization_id,
                    error = %err,
                    "outbox: reading an organization's billing failed"
                ),
            }
        }
        let published: Vec<Published<'_>> = read
            .iter()
            .map(|(leased, (state, events))| Published {
                leased,
                state,
                events,
            })
            .collect();
        self.store.publish(&lease, &published, unix_now()).await?;
        for (_, (_, events)) in &read {
            for event in events {
                metrics::counter!("billing_sync_outbox_published_total", "type" => event.event_type.clone())
                    .increment(1);
            }
        }
        Ok(leased.len())
    }

    /// The state of a leased organization now (JSON text) and the events that say what changed
    /// since it was last published.
    async fn read(&self, leased: &Unpublished) -> anyhow::Result<(String, Vec<NewBillingEvent>)> {
        let organization = &leased.organization_id;
        let state = organization_billing(&self.plans, &self.credits, organization)
            .await
            .map_err(|err| anyhow::anyhow!("reading the billing state: {err}"))?;
        let balance = state.credits_balance;
        let state = state.to_json().unwrap_or(Value::Null);
        let text = state.to_string();
        let news = without_moving(state);
        let changed = leased.published_state.as_deref().is_none_or(|published| {
            serde_json::from_str::<Value>(published)
                .map_or(true, |published| without_moving(published) != news)
        });
        let mut events = Vec::new();
        if changed {
            events.push(NewBillingEvent {
                id: event_id(),
                event_type: BILLING_UPDATED.to_owned(),
                data: text.clone(),
            });
        }
        // A drop below the threshold not told yet, and the balance still below it: news.
        if let Some(threshold) = self.low_balance_threshold
            && leased.balance_drops > leased.published_drops
            && balance < threshold
        {
            events.push(NewBillingEvent {
                id: event_id(),
                event_type: CREDITS_BALANCE_LOW.to_owned(),
                data: serde_json::to_string(&BalanceLow { balance, threshold })?,
            });
        }
        Ok((text, events))
    }
}

/// A new billing event's id.
fn event_id() -> String {
    format!("bse_{}", uuid::Uuid::new_v4().simple())
}

/// A published state without the field that changes without being news.
fn without_moving(mut state: Value) -> Value {
    if let Some(object) = state.as_object_mut() {
        object.remove(MOVING_FIELD);
    }
    state
}
