//! `stripe_subscriptions`: Stripe subscriptions with their items.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Stripe subscription.
    table "stripe_subscriptions";
    /// Stripe's `sub_…` id.
    id;
    /// `created` (unix seconds) of the event whose state this is.
    ordering_key;
    /// No enforced relations.
    relations;
    columns {
        /// Whether this is a live-mode object.
        livemode: bool,
        /// The `cus_…` it bills.
        customer_id: String,
        /// The organization: the subscription's metadata, else its customer's.
        organization_id: Option<String>,
        /// Stripe's status string, stored as it comes.
        status: String,
        /// Whether it cancels at the end of the current period.
        cancel_at_period_end: bool,
        /// When it is scheduled to cancel.
        cancel_at: Option<DateTimeUtc>,
        /// When it was canceled.
        canceled_at: Option<DateTimeUtc>,
        /// When it ended.
        ended_at: Option<DateTimeUtc>,
        /// When its trial ends.
        trial_end: Option<DateTimeUtc>,
        /// Start of the current period (from the items since API version 2025-03-31).
        current_period_start: Option<DateTimeUtc>,
        /// End of the current period.
        current_period_end: Option<DateTimeUtc>,
        /// `[{id, price_id, product_id, quantity, current_period_start, current_period_end}]`.
        items: Json,
    }
}
