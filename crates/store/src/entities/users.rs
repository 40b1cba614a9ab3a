//! `users`: Clerk users.

use sea_orm::entity::prelude::*;

/// The last applied state of one Clerk user.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Clerk's `user_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Clerk's user data as last applied.
    pub raw: Option<Json>,
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    pub ordering_key: i64,
    /// Set when the user was deleted in Clerk.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break at equal `ordering_key`: 0 embedded snapshot, 1 own event, 2 deletion.
    pub ordering_rank: i16,
    /// The address of `email_addresses` whose id is `primary_email_address_id`.
    pub primary_email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
}

/// No enforced relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
