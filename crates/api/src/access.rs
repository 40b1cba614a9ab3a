//! Who is calling, for which organization, and whether they may: the one path every
//! authenticated operation takes (the portal, the billing state, checkout).

use billing_sync_store::billing::Revocation;
use billing_sync_store::plans::OrganizationSubscription;
use billing_sync_store::{Store, StoreError};
use chrono::DateTime;

use crate::auth::{AuthError, SessionVerifier, organization_role};

/// What an operation asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Any member of the organization (reads).
    Member,
    /// A member with one of `BILLING_ROLES`, when set (the portal and checkout).
    BillingManager,
}

/// An authenticated member and the organization they act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The Clerk user id.
    pub user_id: String,
    /// The organization: the token's active organization, else the user's only one.
    pub organization_id: String,
    /// The organization's Stripe customer, if it has one.
    pub customer_id: Option<String>,
    /// That customer's active entitlements (lookup keys, sorted), read with the rest.
    pub entitlements: Vec<String>,
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
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
    /// The member has none of `BILLING_ROLES`.
    #[error("the member's role may not manage billing")]
    Forbidden,
    /// Clerk authentication is not configured.
    #[error("Clerk authentication is not configured")]
    NotConfigured,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admission reads with the access checks.
#[derive(Clone, Copy)]
enum Read {
    Access,
    AccessAndSubscriptions,
}

/// Authenticates callers and resolves their organization against the synced state.
pub struct Access {
    store: Store,
    verifier: Option<SessionVerifier>,
    /// `BILLING_ROLES`, each as [`organization_role`] writes it; empty: any member.
    billing_roles: Vec<String>,
}

impl Access {
    /// Access on `store`; without `verifier` every caller is refused as "not configured".
    pub fn new(store: Store, verifier: Option<SessionVerifier>) -> Self {
        Access {
            store,
            verifier,
            billing_roles: Vec::new(),
        }
    }

    /// Lets only members with one of `roles` (`org:admin` or `admin`) manage billing.
    pub fn with_billing_roles<S: AsRef<str>>(mut self, roles: &[S]) -> Self {
        self.billing_roles = roles
            .iter()
            .filter_map(|role| organization_role(role.as_ref()))
            .collect();
        self
    }

    /// The caller holding `token`, if they pass `gate`.
    ///
    /// The organization is the token's active one, else the user's only active membership.
    /// The synced state may withdraw what the token grants (membership, organization or user
    /// deleted since it was issued). The role is the token's, else the synced membership's.
    pub async fn caller(&self, token: &str, gate: Gate) -> Result<Caller, AccessError> {
        Ok(self.admit(token, gate, Read::Access).await?.0)
    }

    /// [`Access::caller`] for a member, and their organization's subscriptions, read in the
    /// same statement as the access (the billing state's one round trip).
    pub async fn member_and_subscriptions(
        &self,
        token: &str,
    ) -> Result<(Caller, Vec<OrganizationSubscription>), AccessError> {
        self.admit(token, Gate::Member, Read::AccessAndSubscriptions)
            .await
    }

    async fn admit(
        &self,
        token: &str,
        gate: Gate,
        read: Read,
    ) -> Result<(Caller, Vec<OrganizationSubscription>), AccessError> {
        let verifier = self.verifier.as_ref().ok_or(AccessError::NotConfigured)?;
        let claims = verifier.verify(token).await?;
        let (organization_id, synced_role) = match claims.organization_id() {
            Some(id) => (id.to_owned(), None),
            None => {
                let memberships = self.store.active_memberships(&claims.sub).await?;
                match memberships.as_slice() {
                    [] => return Err(AccessError::NoOrganization),
                    [only] => (only.organization_id.clone(), Some(only.role.clone())),
                    _ => return Err(AccessError::SeveralOrganizations),
                }
            }
        };
        let issued_at = DateTime::from_timestamp(claims.iat, 0)
            .ok_or_else(|| AuthError::Invalid("iat out of range".into()))?;
        let (access, subscriptions) = match read {
            Read::Access => (
                self.store
                    .portal_access(&claims.sub, &organization_id, issued_at)
                    .await?,
                Vec::new(),
            ),
            Read::AccessAndSubscriptions => {
                self.store
                    .organization_state(&claims.sub, &organization_id, issued_at)
                    .await?
            }
        };
        if let Some(revocation) = access.revocation {
            return Err(AccessError::Revoked(revocation));
        }
        if gate == Gate::BillingManager && !self.billing_roles.is_empty() {
            let role = match (claims.organization_role(), synced_role) {
                (Some(role), _) => Some(role),
                (None, Some(role)) => role,
                // The token names the organization but not the role (a custom session token
                // template): the synced membership tells.
                (None, None) => self
                    .store
                    .active_membership(&claims.sub, &organization_id)
                    .await?
                    .and_then(|membership| membership.role),
            };
            let allowed = role
                .as_deref()
                .and_then(organization_role)
                .is_some_and(|role| self.billing_roles.contains(&role));
            if !allowed {
                return Err(AccessError::Forbidden);
            }
        }
        let caller = Caller {
            user_id: claims.sub,
            organization_id,
            customer_id: access.customer_id,
            entitlements: access.entitlements,
        };
        Ok((caller, subscriptions))
    }

    /// The store callers are resolved against.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
