//! `stripe_products`: the catalog's products.

use sea_orm::entity::prelude::*;

/// The last applied state of one Stripe product.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_products")]
pub struct Model {
    /// Stripe's `prod_…` id.
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
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Whether it can be bought.
    pub active: bool,
    /// The names of its marketing features, a JSON array of strings.
    pub marketing_features: Json,
    /// Its default price, when set.
    pub default_price_id: Option<String>,
}

/// No enforced relations: Stripe may deliver objects in any order.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
