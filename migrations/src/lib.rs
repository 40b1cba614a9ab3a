//! Schema migrations of billing-sync.
//!
//! Written with `sea-orm-migration` only, so that the same migrations run unchanged on
//! PostgreSQL (15+) and on the embedded SQLite default.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_synced_state;
mod m20261123_000002_backfill_checkpoints;
mod m20261124_000003_catalog_and_entitlements;
mod m20261202_000004_payloads_as_text;
mod m20261203_000005_credits;
mod m20261204_000006_lighter_ledger;
mod m20261205_000007_billing_outbox;
mod m20261206_000008_outbox_work_by_index;
mod m20261207_000009_credit_reservations;
mod m20261208_000010_ledger_rows_per_organization;

/// Every migration of billing-sync, in the order they apply.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_synced_state::Migration),
            Box::new(m20261123_000002_backfill_checkpoints::Migration),
            Box::new(m20261124_000003_catalog_and_entitlements::Migration),
            Box::new(m20261202_000004_payloads_as_text::Migration),
            Box::new(m20261203_000005_credits::Migration),
            Box::new(m20261204_000006_lighter_ledger::Migration),
            Box::new(m20261205_000007_billing_outbox::Migration),
            Box::new(m20261206_000008_outbox_work_by_index::Migration),
            Box::new(m20261207_000009_credit_reservations::Migration),
            Box::new(m20261208_000010_ledger_rows_per_organization::Migration),
        ]
    }
}
