//! `credit_grants`: what each organization was granted and what remains of it.

use sea_orm::entity::prelude::*;

/// One grant (`billing_sync_credits::Grant`).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "credit_grants")]
pub struct Model {
    /// The store's id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The organization; none while a Stripe grant's customer is not linked to one.
    pub organization_id: Option<String>,
    /// The Stripe customer that bought it.
    pub customer_id: Option<String>,
    /// `checkout`, `invoice` or `api`.
    pub source: String,
    /// The source's unique reference (`checkout:cs_…`, `invoice:in_…:il_…`).
    pub reference: Option<String>,
    /// The price bought (an invoice line's, whose credits come from the catalog).
    pub price_id: Option<String>,
    /// Units bought.
    pub quantity: Option<i64>,
    /// Credits granted; none until the catalog says how many a unit of the price is.
    pub amount: Option<i64>,
    /// Credits left to spend.
    pub remaining: i64,
    /// Credits that expired and were not taken back by a refund since.
    pub expired: i64,
    /// Credits a refund took back, in all.
    pub taken_back: i64,
    /// When what remains expires (unix seconds); none: never.
    pub expires_at: Option<i64>,
    /// When it was recorded (unix seconds).
    pub created_at: i64,
    /// The Stripe payment (`pi_…`) that paid for it.
    pub payment_id: Option<String>,
    /// Whether it is in the balance yet.
    pub credited: bool,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
