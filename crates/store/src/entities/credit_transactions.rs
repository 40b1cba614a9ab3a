//! `credit_transactions`: the append-only ledger of every credit that moved.

use sea_orm::entity::prelude::*;

/// One transaction (`billing_sync_credits::Transaction`).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "credit_transactions")]
pub struct Model {
    /// Clerk's `org_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    /// Its number in the organization's ledger: 1, 2, 3…
    #[sea_orm(primary_key, auto_increment = false)]
    pub sequence: i64,
    /// `grant`, `adjustment`, `consume`, `refund` or `expire`.
    pub kind: String,
    /// Signed: positive adds to the balance.
    pub amount: i64,
    /// The balance once applied.
    pub balance_after: i64,
    /// The caller's idempotency key, unique per organization.
    pub idempotency_key: Option<String>,
    /// The hash of the request the key came with.
    pub fingerprint: Option<String>,
    /// The grant's source reference (grant, refund, expire).
    pub reference: Option<String>,
    /// The caller's reason.
    pub reason: Option<String>,
    /// When it was decided (unix seconds).
    pub created_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
