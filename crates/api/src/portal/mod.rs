//! The customer portal: from a Clerk session to a fresh Stripe Billing Portal session for the
//! caller's organization. Transport-free: the HTTP mapping lives in [`api`].

pub mod api;
pub mod limit;

use std::sync::Arc;

use crate::access::{Access, AccessError, Gate};
use crate::portal::limit::SessionLimit;
use billing_sync_stripe_api::{StripeClient, StripeError};

/// Where Stripe sends the customer back, and which portal configuration to use.
pub struct PortalSettings {
    /// [`crate::plans::plans_page_url`] of `APP_BASE_URL`: from configuration, never from the
    /// request.
    pub return_url: String,
    /// `STRIPE_PORTAL_CONFIGURATION`.
    pub configuration: Option<String>,
}

/// Everything the portal needs; what is missing makes it answer "not configured".
pub struct Portal {
    access: Arc<Access>,
    stripe: Option<(StripeClient, PortalSettings)>,
    limit: SessionLimit,
}

/// Sessions one user may create per minute unless told otherwise (`STRIPE_SESSIONS_PER_MINUTE`).
pub const DEFAULT_SESSIONS_PER_MINUTE: u32 = 10;

/// Why no portal URL was produced.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The caller was refused.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The organization has no Stripe customer.
    #[error("the organization has no Stripe customer record")]
    NoCustomer,
    /// The user created as many sessions as allowed this minute; may retry after this long.
    #[error("too many sessions; retry in {0:?}")]
    TooManyRequests(std::time::Duration),
    /// Stripe is not configured.
    #[error("billing is not configured")]
    NotConfigured,
    /// Stripe failed.
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

impl Portal {
    /// A portal for the callers `access` admits. Without `stripe`, every request answers that
    /// billing is not configured.
    pub fn new(access: Arc<Access>, stripe: Option<(StripeClient, PortalSettings)>) -> Self {
        Portal {
            access,
            stripe,
            limit: SessionLimit::per_minute(DEFAULT_SESSIONS_PER_MINUTE),
        }
    }

    /// Allows each user `per_minute` sessions per minute; more get `TooManyRequests`.
    pub fn with_sessions_per_minute(mut self, per_minute: u32) -> Self {
        self.limit = SessionLimit::per_minute(per_minute);
        self
    }

    /// The URL of a fresh portal session for the holder of `token`.
    pub async fn session_url(&self, token: &str) -> Result<String, PortalError> {
        let caller = self.access.caller(token, Gate::BillingManager).await?;
        let (stripe, settings) = self.stripe.as_ref().ok_or(PortalError::NotConfigured)?;
        let customer = caller.customer_id.ok_or(PortalError::NoCustomer)?;
        // Counted only when a session would really be created: refusals above cost no
        // Stripe call.
        self.limit
            .take(&caller.user_id, std::time::Instant::now())
            .map_err(PortalError::TooManyRequests)?;
        Ok(stripe
            .create_portal_session(
                &customer,
                &settings.return_url,
                settings.configuration.as_deref(),
            )
            .await?)
    }
}
