//! Billing events as they leave the service: the feed (`GET /api/v1/events`, API key) and the
//! payloads the app's webhook receives, one type for both.

use std::sync::Arc;

use billing_sync_store::Store;
use billing_sync_store::outbox::BillingEvent;
use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{ApiResponse, Object, OpenApi, Union};

use crate::api_key::BillingApiKey;
use crate::credits::Credits;
use crate::credits::api::{Answer, answer};
use crate::http::{ApiTags, ErrorBody, ErrorCode, NO_STORE, body};
use crate::plans::api::BillingState;

/// The type of the event saying an organization's billing state changed.
pub const BILLING_UPDATED: &str = "billing.updated";
/// The type of the event saying an organization's credit balance went below the threshold.
pub const CREDITS_BALANCE_LOW: &str = "credits.balance_low";

/// Events a page of the feed holds unless told otherwise, and at most.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// A billing event: what the app's webhook receives as its body, and what the feed lists.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type")]
pub enum BillingEventPayload {
    /// `billing.updated`.
    #[oai(mapping = "billing.updated")]
    BillingUpdated(BillingUpdated),
    /// `credits.balance_low`.
    #[oai(mapping = "credits.balance_low")]
    CreditsBalanceLow(CreditsBalanceLow),
}

/// An organization's billing state changed (subscriptions, plan, entitlements, `active`, credit
/// balance). `data` is the state now, as `organizationBilling` answers it.
#[derive(Debug, Object)]
pub struct BillingUpdated {
    /// `bse_…`: the same on every delivery of this event (the `webhook-id` header too):
    /// deduplicate on it.
    pub id: String,
    /// The Clerk organization.
    pub organization_id: String,
    /// When billing-sync published it.
    pub created: DateTime<Utc>,
    /// The organization's billing version: higher is newer. Keep the state of the highest
    /// version seen; ignore an event whose version is lower than what you hold.
    pub version: i64,
    /// The organization's billing state.
    pub data: BillingState,
}

/// An organization's credit balance went below `CREDITS_LOW_BALANCE_THRESHOLD` (sent again
/// only after it has been at or above it).
#[derive(Debug, Object)]
pub struct CreditsBalanceLow {
    /// `bse_…`: deduplicate on it.
    pub id: String,
    /// The Clerk organization.
    pub organization_id: String,
    /// When billing-sync published it.
    pub created: DateTime<Utc>,
    /// The organization's billing version when it was published.
    pub version: i64,
    /// The balance and the threshold.
    pub data: BalanceLow,
}

/// What `credits.balance_low` says.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct BalanceLow {
    /// The balance when it was published.
    pub balance: i64,
    /// `CREDITS_LOW_BALANCE_THRESHOLD`.
    pub threshold: i64,
}

/// A stored event as its payload; `None` when its stored data does not read as its type's
/// (never written so: the publisher writes both).
pub fn payload(event: &BillingEvent) -> Option<BillingEventPayload> {
    let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
    let created = DateTime::from_timestamp(event.created, 0)?;
    let (id, organization_id, version) = (
        event.id.clone(),
        event.organization_id.clone(),
        event.version,
    );
    match event.event_type.as_str() {
        BILLING_UPDATED => Some(BillingEventPayload::BillingUpdated(BillingUpdated {
            id,
            organization_id,
            created,
            version,
            data: BillingState::parse_from_json(Some(data)).ok()?,
        })),
        CREDITS_BALANCE_LOW => Some(BillingEventPayload::CreditsBalanceLow(CreditsBalanceLow {
            id,
            organization_id,
            created,
            version,
            data: serde_json::from_value(data).ok()?,
        })),
        _ => None,
    }
}

/// A page of the feed.
#[derive(Debug, Object)]
pub struct BillingEventPage {
    /// Events after `after`, in commit order.
    pub data: Vec<BillingEventPayload>,
    /// Pass as `after` to get the next page (the same `after` when the page is empty).
    pub next_after: i64,
    /// Whether more events follow this page now.
    pub has_more: bool,
}

/// The answers of `listEvents`.
#[derive(ApiResponse)]
pub enum EventsResponse {
    /// A page of events.
    #[oai(status = 200)]
    Page(
        Json<BillingEventPage>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: `after` or `limit` is not a whole number in its range.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `UNAUTHORIZED`: no API key, or not one of `BILLING_API_KEYS`.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `INTERNAL_ERROR`: `BILLING_API_KEYS` is not set, or the events could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl From<Answer> for EventsResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::BadRequest(body) => Self::BadRequest(body),
            Answer::Unauthorized(body) => Self::Unauthorized(body, "Bearer".into()),
            Answer::Conflict(conflict) => {
                Self::Internal(body(ErrorCode::InternalError, &conflict.error.message))
            }
            Answer::Internal(body) | Answer::NotFound(body) | Answer::Unavailable(body) => {
                Self::Internal(body)
            }
        }
    }
}

/// The feed's operation.
pub struct EventsApi {
    store: Store,
    credits: Arc<Credits>,
}

impl EventsApi {
    /// The feed of `store`'s events, for the callers `credits` admits (its API keys).
    pub fn new(store: Store, credits: Arc<Credits>) -> Self {
        EventsApi { store, credits }
    }
}

#[OpenApi(tag = "ApiTags::Credits")]
impl EventsApi {
    /// List billing events
    ///
    /// The billing events (`billing.updated`, `credits.balance_low`) in commit order, after the
    /// cursor `after` (0, or absent: from the first). The same events the app's webhook
    /// receives (`APP_WEBHOOK_URL`), kept whether or not it took them: an app catches up after
    /// downtime, or does without a webhook, by calling this with the last `next_after` it saw.
    #[oai(path = "/api/v1/events", method = "get", operation_id = "listEvents")]
    async fn list(
        &self,
        key: BillingApiKey,
        /// Only events after this cursor (`next_after` of the previous page).
        #[oai(validator(minimum(value = "0")))]
        after: Query<Option<i64>>,
        /// Events per page, 1 to 1000 (100 when absent).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
    ) -> EventsResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return answer(&err, "events").into();
        }
        let after = after.0.unwrap_or(0);
        let limit = limit.0.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
        // One more than asked tells whether more follow.
        let mut events = match self
            .store
            .billing_events_after(after, u64::from(limit) + 1)
            .await
        {
            Ok(events) => events,
            Err(err) => {
                tracing::error!(error = %err, "events: reading the feed failed");
                return EventsResponse::Internal(body(
                    ErrorCode::InternalError,
                    "The events could not be read. Please try again.",
                ));
            }
        };
        let has_more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_after = events.last().map_or(after, |event| event.seq);
        let data = events
            .iter()
            .filter_map(|event| {
                let payload = payload(event);
                if payload.is_none() {
                    tracing::error!(id = %event.id, "events: a stored event does not read as its type");
                }
                payload
            })
            .collect();
        EventsResponse::Page(
            Json(BillingEventPage {
                data,
                next_after,
                has_more,
            }),
            NO_STORE.into(),
        )
    }
}
