//! `stripe_customers`: Stripe customers and the organization each one bills.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Stripe customer.
    table "stripe_customers";
    /// Stripe's `cus_…` id.
    id;
    /// `created` (unix seconds) of the event whose state this is.
    ordering_key;
    /// No enforced relations: Stripe may deliver a subscription before its customer.
    relations;
    columns {
        /// Whether this is a live-mode object.
        livemode: bool,
        /// The Clerk organization this customer bills.
        organization_id: Option<String>,
        /// Billing email.
        email: Option<String>,
        /// Customer name.
        name: Option<String>,
    }
}
