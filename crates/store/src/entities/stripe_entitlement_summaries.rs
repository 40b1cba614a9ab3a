//! `stripe_entitlement_summaries`: each customer's active entitlements, as the last
//! `entitlements.active_entitlement_summary.updated` (or a backfill) said.

use sea_orm::entity::prelude::*;

/// The last applied active-entitlement summary of one Stripe customer.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_entitlement_summaries")]
pub struct Model {
    /// The customer's `cus_…` id.
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
    /// The active features' `lookup_key`s, sorted, a JSON array of strings.
    pub lookup_keys: Json,
}

/// No enforced relations: Stripe may deliver objects in any order.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
