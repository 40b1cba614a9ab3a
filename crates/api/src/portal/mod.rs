//! The customer portal: from a Clerk session to a fresh Stripe Billing Portal session for the
//! caller's organization. Transport-free: the HTTP mapping lives in [`api`].

pub mod api;
pub mod limit;

use billing_sync_store::billing::Revocation;
use billing_sync_store::{Store, StoreError};
use chrono::DateTime;

use crate::auth::{AuthError, SessionVerifier};
use crate::portal::limit::SessionLimit;
use billing_sync_stripe_api::{StripeClient, StripeError};

/// Where Stripe sends the customer back, and which portal configuration to use.
pub struct PortalSettings {
    /// `APP_BASE_URL` + `/organization#/plans`, from configuration, never from the request.
    pub return_url: String,
    /// `STRIPE_PORTAL_CONFIGURATION`.
    pub configuration: Option<String>,
}

/// Everything the portal needs; what is missing makes it answer "not configured".
pub struct Portal {
    store: Store,
    verifier: Option<SessionVerifier>,
    stripe: Option<(StripeClient, PortalSettings)>,
    limit: SessionLimit,
}

/// Sessions one user may create per minute unless told otherwise (`PORTAL_SESSIONS_PER_MINUTE`).
pub const DEFAULT_SESSIONS_PER_MINUTE: u32 = 10;

/// Why no portal URL was produced.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The caller is not authenticated.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// No active organization in the token and no active membership in the synced state.
    #[error("the user is not associated with an organization")]
    NoOrganization,
    /// No active organization in the token and several active memberships.
    #[error("the user belongs to several organizations")]
    SeveralOrganizations,
    /// The synced state withdrew access the token still grants.
    #[error("access revoked: {0:?}")]
    Revoked(Revocation),
    /// The organization has no Stripe customer.
    #[error("the organization has no Stripe customer record")]
    NoCustomer,
    /// The user created as many sessions as allowed this minute; may retry after this long.
    #[error("too many sessions; retry in {0:?}")]
    TooManyRequests(std::time::Duration),
    /// Authentication or Stripe is not configured.
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    /// Stripe failed.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Portal {
    /// A portal on `store`. Without `verifier` or `stripe`, every request answers that billing is
    /// not configured.
    pub fn new(
        store: Store,
        verifier: Option<SessionVerifier>,
        stripe: Option<(StripeClient, PortalSettings)>,
    ) -> Self {
        Portal {
            store,
            verifier,
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
        let verifier = self
            .verifier
            .as_ref()
            .ok_or(PortalError::NotConfigured("Clerk authentication"))?;
        let claims = verifier.verify(token).await?;
        let (stripe, settings) = self
            .stripe
            .as_ref()
            .ok_or(PortalError::NotConfigured("billing"))?;
        let organization_id = match claims.organization_id() {
            Some(id) => id.to_owned(),
            None => {
                let memberships = self.store.active_memberships(&claims.sub).await?;
                match memberships.as_slice() {
                    [] => return Err(PortalError::NoOrganization),
                    [only] => only.organization_id.clone(),
                    _ => return Err(PortalError::SeveralOrganizations),
                }
            }
        };
        let issued_at = DateTime::from_timestamp(claims.iat, 0)
            .ok_or_else(|| AuthError::Invalid("iat out of range".into()))?;
        let access = self
            .store
            .portal_access(&claims.sub, &organization_id, issued_at)
            .await?;
        if let Some(revocation) = access.revocation {
            return Err(PortalError::Revoked(revocation));
        }
        let customer = access.customer_id.ok_or(PortalError::NoCustomer)?;
        // Counted only when a session would really be created: refusals above cost no
        // Stripe call.
        self.limit
            .take(&claims.sub, std::time::Instant::now())
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
