//! The app's webhook: each billing event POSTed to `APP_WEBHOOK_URL`, signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`, with the `whsec_`
//! secret `APP_WEBHOOK_SECRET`) — what the `svix` crate signs and every Standard Webhooks
//! library verifies. A 2xx takes the event; anything else (an error, a timeout, 429 with
//! `Retry-After`) is tried again later.

use billing_sync_api::events::payload;
use billing_sync_store::outbox::BillingEvent;
use poem_openapi::types::ToJSON;

use super::{DELIVERY_TIMEOUT, retry_after, unix_now};

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

    /// One delivery: `Err` with the receiver's `Retry-After` and what went wrong.
    pub async fn deliver(&self, event: &BillingEvent) -> Result<(), (Option<u64>, String)> {
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
