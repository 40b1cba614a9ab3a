//! `credit_payments`: what Stripe's refunded charges said of a payment.

use sea_orm::entity::prelude::*;

/// One charge's amounts (a refund's are cumulative: the largest seen is kept).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "credit_payments")]
pub struct Model {
    /// Stripe's `ch_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub charge_id: String,
    /// The `pi_…` it belongs to.
    pub payment_id: String,
    /// The amount charged (smallest currency unit).
    pub paid: i64,
    /// The amount refunded so far.
    pub refunded: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
