//! `stripe_products`: the catalog's products.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Stripe product.
    table "stripe_products";
    /// Stripe's `prod_…` id.
    id;
    /// `created` (unix seconds) of the event whose state this is.
    ordering_key;
    /// No enforced relations: Stripe may deliver objects in any order.
    relations;
    columns {
        /// Whether this is a live-mode object.
        livemode: bool,
        /// Display name.
        name: Option<String>,
        /// Description.
        description: Option<String>,
        /// Whether it can be bought.
        active: bool,
        /// The names of its marketing features, a JSON array of strings.
        marketing_features: Json,
        /// Its default price, when set.
        default_price_id: Option<String>,
    }
}
