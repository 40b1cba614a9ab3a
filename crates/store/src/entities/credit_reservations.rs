//! `credit_reservations`: credits held for work under way, until captured, released or
//! expired.

use sea_orm::entity::prelude::*;

/// A reservation of an organization's credits.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_reservations")]
pub struct Model {
    /// Clerk's `org_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    /// The sequence of the `hold` transaction that made it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: i64,
    /// Credits held.
    pub amount: i64,
    /// When it is released by itself if not settled (unix seconds).
    pub expires_at: i64,
    /// None while open; `captured`, `released` or `expired`.
    pub settlement: Option<String>,
    /// Credits the capture charged.
    pub captured: i64,
    /// The transaction that settled it.
    pub settled_sequence: Option<i64>,
    /// The balance after that transaction.
    pub settled_balance: Option<i64>,
    /// When it was made (unix seconds).
    pub created_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
