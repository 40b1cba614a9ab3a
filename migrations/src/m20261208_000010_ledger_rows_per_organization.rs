//! The planner's idea of an organization's ledger on PostgreSQL: many transactions, never one.
//!
//! A decision looks up its requests' earlier answers by `(organization_id, idempotency_key)`,
//! the unique key, one probe per key. When the statistics were taken while each organization had
//! one transaction and every key was the same (a new deployment's funding grants, `fund`), the
//! planner took an organization for one row and a key for every row. It then chose, for a
//! lookup whose values it does not know in advance, either the primary key
//! `(organization_id, sequence)` (as good as the unique key for "one row"), or a scan of the
//! table stopping at the first match (a key matching "every row" is found at once): both walk
//! the organization's history, filtering on the key, until the next analyze, and a prepared
//! statement may keep that plan longer. The credits bench after a `VACUUM (ANALYZE)` of its
//! 1,000 funded organizations: 600 µs of PostgreSQL a consume on one organization (1,500/s)
//! instead of 57 (9,900/s), and worse as the history grew.
//!
//! Each later `ANALYZE` is told the truth about the two columns instead of what its sample saw:
//! a hundredth as many organizations as transactions (`n_distinct = -0.01`: an organization is
//! many rows) and keys all but unique (`-1`). Then only the unique key is one row, and it wins
//! whatever the sample (test `the_lookup_of_earlier_answers_probes_its_keys_when_each_
//! organization_looked_like_one_row`; either setting alone fails it, one with the primary key,
//! the other with the scan). Reading one organization's transactions in order (its statement)
//! keeps the primary key. SQLite plans by its indexes' shapes, not by such figures: nothing to
//! do.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Runs `statements` on PostgreSQL, in order; nothing on SQLite.
async fn on_postgres(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for statement in statements {
        manager
            .get_connection()
            .execute_unprepared(statement)
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(
            manager,
            &[
                "ALTER TABLE credit_transactions ALTER COLUMN organization_id \
                 SET (n_distinct = -0.01)",
                "ALTER TABLE credit_transactions ALTER COLUMN idempotency_key \
                 SET (n_distinct = -1)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres(
            manager,
            &[
                "ALTER TABLE credit_transactions ALTER COLUMN organization_id RESET (n_distinct)",
                "ALTER TABLE credit_transactions ALTER COLUMN idempotency_key RESET (n_distinct)",
            ],
        )
        .await
    }
}
