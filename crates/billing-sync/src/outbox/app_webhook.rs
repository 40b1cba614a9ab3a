//! The app's webhook: each billing event POSTed to `APP_WEBHOOK_URL`, signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`, with the `whsec_`
//! secret `APP_WEBHOOK_SECRET`) — what the `svix` crate signs and every Standard Webhooks
//! library verifies. A 2xx takes the event; anything else (an error, a timeout, 429 with
//! `Retry-After`) tries it again later ([`super::backoff`]). An organization's events go one
//! at a time, in order, and a `billing.updated` not sent yet is superseded by a newer one.

use std::time::Duration;

use billing_sync_api::events::payload;
use billing_sync_store::Store;
use billing_sync_store::outbox::BillingEvent;
use poem_openapi::types::ToJSON;

use super::{DELIVERY_TIMEOUT, LEASE, POLL, lease_token, next_attempt, retry_after, unix_now};

/// Events leased at a time (each of another organization), sent concurrently.
const BATCH: u64 = 16;

/// Where billing events go, and how they are signed.
pub struct AppWebhook {
    url: String,
    signer: svix::webhooks::Webhook,
    http: reqwest::Client,
}

impl AppWebhook {
    /// Events to `url`, signed with `secret` (`whsec_…`).
    pub fn new(url: &str, secret: &str) -> anyhow::Result<Self> {
        let signer = svix::webhooks::Webhook::new(secret)
            .map_err(|_| anyhow::anyhow!("APP_WEBHOOK_SECRET is not a whsec_… secret"))?;
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(AppWebhook {
            url: url.to_owned(),
            signer,
            http,
        })
    }

    /// Delivers for as long as the process runs.
    pub async fn run(self, store: Store) {
        loop {
            match self.deliver_some(&store).await {
                Ok(0) => tokio::time::sleep(POLL).await,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "app webhook: reading the outbox failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn deliver_some(&self, store: &Store) -> anyhow::Result<usize> {
        let lease = lease_token();
        let now = unix_now();
        let events = store
            .lease_webhook_events(&lease, now, now + LEASE.as_secs() as i64, BATCH)
            .await?;
        let deliveries = events.iter().map(|event| async {
            let outcome = self.deliver(event).await;
            let settled = match outcome {
                Ok(()) => {
                    metrics::counter!("billing_sync_outbox_sent_total", "destination" => "app_webhook")
                        .increment(1);
                    Ok(unix_now())
                }
                Err((retry_after, error)) => {
                    metrics::counter!("billing_sync_outbox_failed_total", "destination" => "app_webhook")
                        .increment(1);
                    tracing::warn!(id = %event.id, attempts = event.attempts, error = %error, "app webhook: delivery failed; will retry");
                    Err((next_attempt(unix_now(), event.attempts, retry_after), error))
                }
            };
            if let Err(err) = store.settle_webhook_event(&lease, event.seq, settled).await {
                // The lease lapses and the event goes again: the receiver deduplicates on its id.
                tracing::warn!(id = %event.id, error = %err, "app webhook: recording the outcome failed");
            }
        });
        futures::future::join_all(deliveries).await;
        Ok(events.len())
    }

    /// One delivery: `Err` with the receiver's `Retry-After` and what went wrong.
    async fn deliver(&self, event: &BillingEvent) -> Result<(), (Option<u64>, String)> {
        let Some(payload) = payload(event) else {
            return Err((
                None,
                "the stored event does not read as its type".to_owned(),
            ));
        };
        let body = payload.to_json().unwrap_or_default().to_string();
        let timestamp = unix_now();
        let signature = self
            .signer
            .sign(&event.id, timestamp, body.as_bytes())
            .map_err(|err| (None, format!("signing: {err}")))?;
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|err| (None, format!("sending: {err}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err((retry_after(&response), format!("answered {status}")))
        }
    }
}
