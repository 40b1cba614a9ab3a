//! SeaORM entities of the contract tables. Applications read these tables directly, so their
//! names and columns are part of billing-sync's interface.

pub mod backfill_checkpoints;
pub mod organization_memberships;
pub mod organizations;
pub mod stripe_customers;
pub mod stripe_entitlement_summaries;
pub mod stripe_prices;
pub mod stripe_products;
pub mod stripe_subscriptions;
pub mod users;
pub mod webhook_events;
