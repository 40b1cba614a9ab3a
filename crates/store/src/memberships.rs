//! Reading who belongs to which organization, honouring every tombstone.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Select};

use crate::Store;
use crate::entities::organization_memberships::{self, Column};
use crate::error::StoreError;
use crate::sync::{deleted_organizations, deleted_users};

impl Store {
    /// The user's active memberships ([`active_memberships_of`]), ordered by organization id.
    pub async fn active_memberships(
        &self,
        user_id: &str,
    ) -> Result<Vec<organization_memberships::Model>, StoreError> {
        active_memberships_of(user_id)
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
        active_memberships_of(user_id)
            .filter(Column::OrganizationId.eq(organization_id))
            .one(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }
}

/// The user's active memberships, the one place the rule is written: the membership not
/// deleted, and neither its organization nor the user deleted (a tombstone of any of the three
/// ends access).
fn active_memberships_of(user_id: &str) -> Select<organization_memberships::Entity> {
    organization_memberships::Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::DeletedAt.is_null())
        .filter(Column::OrganizationId.not_in_subquery(deleted_organizations()))
        .filter(Column::UserId.not_in_subquery(deleted_users()))
}
