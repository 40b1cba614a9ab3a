//! `stripe_prices`: the catalog's prices.

use sea_orm::entity::prelude::*;

/// The last applied state of one Stripe price.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_prices")]
pub struct Model {
    /// Stripe's `price_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The object as last applied.
    pub raw: Option<Json>,
    /// `created` (unix seconds) of the event whose state this is.
    pub ordering_key: i64,
    /// Set when the object was deleted in Stripe.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break between events of the same second: 0 `*.created`, 1 other, 2 terminal.
    pub ordering_rank: i16,
    /// Whether this is a live-mode object.
    pub livemode: bool,
    /// The `prod_…` it prices.
    pub product_id: String,
    /// Whether it can be used for new purchases.
    pub active: bool,
    /// ISO currency code, lower case.
    pub currency: String,
    /// Amount in the currency's smallest unit; none for tiered or customer-chosen amounts.
    pub unit_amount: Option<i64>,
    /// `lookup_key`, when set.
    pub lookup_key: Option<String>,
    /// `nickname`, when set.
    pub nickname: Option<String>,
    /// `recurring.interval`; none for a one-time price.
    pub recurring_interval: Option<String>,
    /// `recurring.interval_count`; none for a one-time price.
    pub recurring_interval_count: Option<i64>,
}

/// No enforced relations: Stripe may deliver objects in any order.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
