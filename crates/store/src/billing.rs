//! What the customer portal reads: whether synced state revokes a session's access, and which
//! Stripe customer bills an organization.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::Store;
use crate::entities::{organization_memberships, organizations, stripe_customers, users};
use crate::error::StoreError;

/// Why the synced state withdraws access that a still-valid session token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The user's membership of the organization was deleted after the token was issued.
    MembershipDeleted,
    /// The organization is deleted.
    OrganizationDeleted,
    /// The user is deleted.
    UserDeleted,
}

impl Store {
    /// Whether the synced state revokes `user_id`'s access to `organization_id` for a token
    /// issued at `issued_at`.
    pub async fn revocation(
        &self,
        user_id: &str,
        organization_id: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        let db = self.connection();
        let deleted = |result: Result<Option<Option<DateTime<Utc>>>, sea_orm::DbErr>| {
            result
                .map(|row| row.flatten().is_some())
                .map_err(|err| self.classify(err))
        };
        if deleted(
            organizations::Entity::find_by_id(organization_id.to_owned())
                .select_only()
                .column(organizations::Column::DeletedAt)
                .into_tuple()
                .one(db)
                .await,
        )? {
            return Ok(Some(Revocation::OrganizationDeleted));
        }
        if deleted(
            users::Entity::find_by_id(user_id.to_owned())
                .select_only()
                .column(users::Column::DeletedAt)
                .into_tuple()
                .one(db)
                .await,
        )? {
            return Ok(Some(Revocation::UserDeleted));
        }
        let removed_after_issue = organization_memberships::Entity::find()
            .filter(organization_memberships::Column::UserId.eq(user_id))
            .filter(organization_memberships::Column::OrganizationId.eq(organization_id))
            .filter(organization_memberships::Column::DeletedAt.gt(issued_at))
            .one(db)
            .await
            .map_err(|err| self.classify(err))?;
        Ok(removed_after_issue.map(|_| Revocation::MembershipDeleted))
    }

    /// The organization's Stripe customer: not deleted, the most recently updated if several.
    pub async fn billing_customer(
        &self,
        organization_id: &str,
    ) -> Result<Option<String>, StoreError> {
        stripe_customers::Entity::find()
            .select_only()
            .column(stripe_customers::Column::Id)
            .filter(stripe_customers::Column::OrganizationId.eq(organization_id))
            .filter(stripe_customers::Column::DeletedAt.is_null())
            .order_by_desc(stripe_customers::Column::OrderingKey)
            .order_by_desc(stripe_customers::Column::Id)
            .into_tuple::<String>()
            .one(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }
}
