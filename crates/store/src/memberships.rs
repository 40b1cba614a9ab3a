//! Reading who belongs to which organization, honouring every tombstone.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::Store;
use crate::entities::organization_memberships::{self, Column};
use crate::error::StoreError;
use crate::sync::{deleted_organizations, deleted_users};

impl Store {
    /// The user's active memberships: not deleted themselves, and neither their organization
    /// nor the user deleted. Ordered by organization id.
    pub async fn active_memberships(
        &self,
        user_id: &str,
    ) -> Result<Vec<organization_memberships::Model>, StoreError> {
        organization_memberships::Entity::find()
            .filter(Column::UserId.eq(user_id))
            .filter(Column::DeletedAt.is_null())
            .filter(Column::OrganizationId.not_in_subquery(deleted_organizations()))
            .filter(Column::UserId.not_in_subquery(deleted_users()))
            .order_by_asc(Column::OrganizationId)
            .all(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }

    /// The user's active membership of one organization, if any: one query.
    pub async fn active_membership(
        &self,
        user_id: &str,
        organization_id: &str,
    ) -> Result<Option<organization_memberships::Model>, StoreError> {
        organization_memberships::Entity::find()
            .filter(Column::UserId.eq(user_id))
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(Column::DeletedAt.is_null())
            .filter(Column::OrganizationId.not_in_subquery(deleted_organizations()))
            .filter(Column::UserId.not_in_subquery(deleted_users()))
            .one(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }
}
