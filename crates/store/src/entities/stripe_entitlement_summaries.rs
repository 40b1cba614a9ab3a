//! `stripe_entitlement_summaries`: each customer's active entitlements, as the last
//! `entitlements.active_entitlement_summary.updated` (or a backfill) said.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied active-entitlement summary of one Stripe customer.
    table "stripe_entitlement_summaries";
    /// The customer's `cus_…` id.
    id;
    /// `created` (unix seconds) of the event whose state this is.
    ordering_key;
    /// No enforced relations: Stripe may deliver objects in any order.
    relations;
    columns {
        /// Whether this is a live-mode object.
        livemode: bool,
        /// The active features' `lookup_key`s, sorted, a JSON array of strings.
        lookup_keys: Json,
    }
}
