//! `organization_memberships`: which Clerk user belongs to which organization, with what role.

use sea_orm::entity::prelude::*;

/// The last applied state of one Clerk organization membership.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "organization_memberships")]
pub struct Model {
    /// Clerk's `orgmem_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Clerk's membership data as last applied.
    pub raw: Option<Json>,
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    pub ordering_key: i64,
    /// Set when the membership was deleted in Clerk.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break at equal `ordering_key`: 0 embedded snapshot, 1 own event, 2 deletion.
    pub ordering_rank: i16,
    /// `data.organization.id`.
    pub organization_id: String,
    /// `data.public_user_data.user_id`.
    pub user_id: String,
    /// The member's role, e.g. `org:admin`.
    pub role: Option<String>,
}

/// No enforced relations: Clerk may deliver a membership before its organization or user.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
