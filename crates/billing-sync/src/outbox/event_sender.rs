//! Sends the billing events to their one destination, the app's webhook or Svix: each event
//! leased, handed over, and recorded as taken or to be tried again ([`super::backoff`], or the
//! receiver's `Retry-After`). An organization's events go one at a time, in order, and a
//! `billing.updated` not sent yet is superseded by a newer one (see
//! `Store::lease_webhook_events`).

use billing_sync_store::Store;
use billing_sync_store::outbox::BillingEvent;
use billing_sync_store::outbox::OutboxWork;

use super::app_webhook::AppWebhook;
use super::svix_api::SvixApi;
use super::{LEASE, keep_working, lease_token, next_attempt, unix_now};

/// Events leased at a time (each of another organization), sent concurrently: the receiver
/// must take that many requests at once (docs/billing-flows-out.md).
const BATCH: u64 = 64;

/// Where the billing events go.
pub enum EventDestination {
    /// `APP_WEBHOOK_URL`, signed with `APP_WEBHOOK_SECRET`.
    Webhook(AppWebhook),
    /// Svix's API (`SVIX_AUTH_TOKEN`), which delivers to the app's endpoints.
    Svix(SvixApi),
}

impl EventDestination {
    /// The destination's name in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            EventDestination::Webhook(_) => "app_webhook",
            EventDestination::Svix(_) => "svix",
        }
    }

    async fn deliver(&self, event: &BillingEvent) -> Result<(), (Option<u64>, String)> {
        match self {
            EventDestination::Webhook(webhook) => webhook.deliver(event).await,
            EventDestination::Svix(svix) => svix.deliver(event).await,
        }
    }

    /// Sends for as long as the process runs.
    pub async fn run(self, store: Store) {
        keep_working(self.label(), BATCH, || self.send_some(&store)).await;
    }

    async fn send_some(&self, store: &Store) -> anyhow::Result<usize> {
        let now = unix_now();
        if !store.outbox_has(OutboxWork::Events, now).await? {
            return Ok(0);
        }
        let lease = lease_token();
        let events = store
            .lease_webhook_events(&lease, now, now + LEASE.as_secs() as i64, BATCH)
            .await?;
        let destination = self.label();
        let sends = events.iter().map(|event| async {
            let settled = match self.deliver(event).await {
                Ok(()) => {
                    metrics::counter!("billing_sync_outbox_sent_total", "destination" => destination)
                        .increment(1);
                    Ok(unix_now())
                }
                Err((retry_after, error)) => {
                    metrics::counter!("billing_sync_outbox_failed_total", "destination" => destination)
                        .increment(1);
                    tracing::warn!(destination, id = %event.id, attempts = event.attempts, error = %error, "billing events: delivery failed; will retry");
                    Err((next_attempt(unix_now(), event.attempts, retry_after), error))
                }
            };
            (event.seq, settled)
        });
        let outcomes = futures::future::join_all(sends).await;
        if let Err(err) = store.settle_webhook_events(&lease, outcomes).await {
            // The leases lapse and the events go again: receivers deduplicate on their ids.
            tracing::warn!(destination, error = %err, "billing events: recording the outcomes failed");
        }
        Ok(events.len())
    }
}
