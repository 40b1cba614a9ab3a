//! `organizations`: Clerk organizations.

use sea_orm::entity::prelude::*;

/// The last applied state of one Clerk organization.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    /// Clerk's `org_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Clerk's organization data as last applied.
    pub raw: Option<Json>,
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    pub ordering_key: i64,
    /// Set when the organization was deleted in Clerk.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break at equal `ordering_key`: 0 embedded snapshot, 1 own event, 2 deletion.
    pub ordering_rank: i16,
    /// Display name.
    pub name: Option<String>,
    /// URL slug.
    pub slug: Option<String>,
}

/// No enforced relations: Clerk may deliver a membership before its organization.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
