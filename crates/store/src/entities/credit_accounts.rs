//! `credit_accounts`: one organization's balance, kept in the transaction that changes it.

use sea_orm::entity::prelude::*;

/// An organization's credit account.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "credit_accounts")]
pub struct Model {
    /// Clerk's `org_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    /// The sum of the organization's transactions.
    pub balance: i64,
    /// Credits a refund took back after they were spent; the next grant pays it first.
    pub debt: i64,
    /// The sequence of the last transaction.
    pub last_sequence: i64,
    /// Credits the organization's open reservations hold (not in `balance`).
    pub held: i64,
    /// When a decision last wrote it (unix seconds).
    pub updated_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
