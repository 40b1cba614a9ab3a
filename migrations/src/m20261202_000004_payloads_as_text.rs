//! The ledger's `payload` and every synced row's `raw` as `text` on PostgreSQL, not `jsonb`.
//!
//! A signed delivery is stored exactly as received, whatever it holds: `jsonb` refused some
//! valid JSON (a lone surrogate escape such as `"\ud800"`, a number such as `1e1000000`),
//! which made such a delivery fail on every retry, and re-serialised the rest (key order,
//! spacing, integers beyond 64 bits). Text is also the cheaper write: PostgreSQL no longer
//! parses and re-encodes each payload. Applications keep querying the JSON with a cast
//! (`payload::jsonb ->> 'type'`), on rows whose text `jsonb` accepts.
//!
//! SQLite stores JSON as text already: nothing changes there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each table and its JSON text column.
pub(crate) const COLUMNS: [(&str, &str); 9] = [
    ("webhook_events", "payload"),
    ("organizations", "raw"),
    ("users", "raw"),
    ("organization_memberships", "raw"),
    ("stripe_customers", "raw"),
    ("stripe_subscriptions", "raw"),
    ("stripe_products", "raw"),
    ("stripe_prices", "raw"),
    ("stripe_entitlement_summaries", "raw"),
];

async fn retype(manager: &SchemaManager<'_>, to: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for (table, column) in COLUMNS {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                r#"ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {to} USING "{column}"::{to}"#
            ))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "text").await
    }

    /// Back to `jsonb`: fails (and changes nothing) when a stored text is one `jsonb` refuses.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "jsonb").await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
