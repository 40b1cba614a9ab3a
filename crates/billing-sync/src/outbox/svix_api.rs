//! Billing events handed to Svix (`SVIX_AUTH_TOKEN`), its cloud or a self-hosted svix-server
//! (`SVIX_SERVER_URL`), when one endpoint is not enough: Svix fans each event out to the
//! endpoints of the application `SVIX_APP_ID`, retries them and gives the app's team its
//! consumer portal. Each event is created with its id as `eventId` and as the idempotency key,
//! so handing it over twice (a retry, a lapsed lease) creates one message.

use billing_sync_api::events::payload;
use billing_sync_store::outbox::BillingEvent;
use poem_openapi::types::ToJSON;
use svix::api::{MessageCreateOptions, Svix, SvixOptions};
use svix::models::{ApplicationIn, MessageIn};

use super::DELIVERY_TIMEOUT;

/// Svix's API, for one application's messages.
pub struct SvixApi {
    client: Svix,
    app_id: String,
}

impl SvixApi {
    /// Messages for the application `app_id` (its uid, created on the first message), with
    /// `token`, at `server_url` (Svix's cloud when none).
    pub fn new(token: &str, server_url: Option<String>, app_id: &str) -> Self {
        let options = SvixOptions {
            server_url,
            timeout: Some(DELIVERY_TIMEOUT),
            // The outbox retries, with its own backoff.
            num_retries: Some(0),
            ..SvixOptions::default()
        };
        SvixApi {
            client: Svix::new(token.to_owned(), Some(options)),
            app_id: app_id.to_owned(),
        }
    }

    /// Hands `event` to Svix: `Err` with what went wrong (retried later).
    pub async fn deliver(&self, event: &BillingEvent) -> Result<(), (Option<u64>, String)> {
        let Some(payload) = payload(event) else {
            return Err((
                None,
                "the stored event does not read as its type".to_owned(),
            ));
        };
        let mut message = MessageIn::new(
            event.event_type.clone(),
            payload.to_json().unwrap_or_default(),
        );
        message.event_id = Some(event.id.clone());
        let mut application = ApplicationIn::new(self.app_id.clone());
        application.uid = Some(self.app_id.clone());
        message.application = Some(application);
        let options = MessageCreateOptions {
            idempotency_key: Some(event.id.clone()),
            ..MessageCreateOptions::default()
        };
        match self
            .client
            .message()
            .create(self.app_id.clone(), message, Some(options))
            .await
        {
            Ok(_) => Ok(()),
            // A message with this `eventId` exists: it was handed over already.
            Err(svix::error::Error::Http(content)) if content.status.as_u16() == 409 => Ok(()),
            Err(err) => Err((None, format!("Svix: {err}"))),
        }
    }
}
