//! `stripe_subscriptions`: Stripe subscriptions with their items.

use sea_orm::entity::prelude::*;

/// The last applied state of one Stripe subscription.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_subscriptions")]
pub struct Model {
    /// Stripe's `sub_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The subscription object as last applied.
    pub raw: Option<Json>,
    /// `created` (unix seconds) of the event whose state this is.
    pub ordering_key: i64,
    /// Set when the subscription was deleted (ended) in Stripe.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break between events of the same second: 0 `*.created`, 1 other, 2 terminal.
    pub ordering_rank: i16,
    /// Whether this is a live-mode object.
    pub livemode: bool,
    /// The `cus_…` it bills.
    pub customer_id: String,
    /// The organization: the subscription's metadata, else its customer's.
    pub organization_id: Option<String>,
    /// Stripe's status string, stored as it comes.
    pub status: String,
    /// Whether it cancels at the end of the current period.
    pub cancel_at_period_end: bool,
    /// When it is scheduled to cancel.
    pub cancel_at: Option<DateTimeUtc>,
    /// When it was canceled.
    pub canceled_at: Option<DateTimeUtc>,
    /// When it ended.
    pub ended_at: Option<DateTimeUtc>,
    /// When its trial ends.
    pub trial_end: Option<DateTimeUtc>,
    /// Start of the current period (from the items since API version 2025-03-31).
    pub current_period_start: Option<DateTimeUtc>,
    /// End of the current period.
    pub current_period_end: Option<DateTimeUtc>,
    /// `[{id, price_id, product_id, quantity, current_period_start, current_period_end}]`.
    pub items: Json,
}

/// No enforced relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
