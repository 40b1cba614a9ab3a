//! `stripe_prices`: the catalog's prices.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Stripe price.
    table "stripe_prices";
    /// Stripe's `price_…` id.
    id;
    /// `created` (unix seconds) of the event whose state this is.
    ordering_key;
    /// No enforced relations: Stripe may deliver objects in any order.
    relations;
    columns {
        /// Whether this is a live-mode object.
        livemode: bool,
        /// The `prod_…` it prices.
        product_id: String,
        /// Whether it can be used for new purchases.
        active: bool,
        /// ISO currency code, lower case.
        currency: String,
        /// Amount in the currency's smallest unit; none for tiered or customer-chosen amounts.
        unit_amount: Option<i64>,
        /// `lookup_key`, when set.
        lookup_key: Option<String>,
        /// `nickname`, when set.
        nickname: Option<String>,
        /// `recurring.interval`; none for a one-time price.
        recurring_interval: Option<String>,
        /// `recurring.interval_count`; none for a one-time price.
        recurring_interval_count: Option<i64>,
    }
}
