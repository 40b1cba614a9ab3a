//! The synced billing state of billing-sync: SeaORM entities, the webhook ledger and the
//! guarded queries on them. This crate is the one place that writes SQL.

pub mod backfill;
pub mod batching;
pub mod billing;
pub mod changeset;
mod connect;
mod credit_facts;
pub mod credits;
pub mod entities;
mod error;
mod json_list;
mod kept_connection;
pub mod ledger;
mod literal;
mod memberships;
pub mod outbox;
pub mod plans;
pub mod retry;
pub mod sync;

pub use connect::{MigrationState, Store};
pub use error::StoreError;
pub use sea_orm;
