//! Less work for the database per event, with every documented query still served by an index.
//!
//! - The ledger kept four indexes besides its primary key, each updated by every event. Kept: the
//!   idempotency key (`provider, event_id`) and `received_at` (`events prune`). Replaced: the
//!   index on `(status, received_at)` by one on `id` of failed rows only (`events replay
//!   --failed`, `events list --status failed`), which a processed event never touches. Dropped:
//!   the index on `event_type`: `events list --type T --limit N` reads the newest rows by the
//!   primary key and keeps those of the type.
//! - On PostgreSQL, the JSON text columns (the ledger's `payload`, every synced row's `raw`; a
//!   Stripe object is 1–4 KB, past the 2 KB at which PostgreSQL compresses a value) are
//!   compressed with lz4 instead of the default pglz, which profiles showed as PostgreSQL's
//!   hottest function under ingestion. Values already stored keep their compression; a server
//!   built without lz4 keeps pglz (the migration says so in a notice and goes on).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The JSON text columns compressed with lz4 on PostgreSQL: those made text by migration 4.
const JSON_TEXT_COLUMNS: [(&str, &str); 9] = crate::m20261202_000004_payloads_as_text::COLUMNS;

/// The failed rows' index: the same statement on both backends (both have partial indexes).
const FAILED_INDEX: &str = "CREATE INDEX IF NOT EXISTS webhook_events_failed_idx ON webhook_events (id) WHERE status = 'failed'";

async fn execute(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

/// Sets the compression of every JSON text column to `method` (`lz4` or `pglz`), on a
/// PostgreSQL that knows per-column compression (14+) and was built with the method.
async fn compress_with(manager: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let statements: String = JSON_TEXT_COLUMNS
        .iter()
        .map(|(table, column)| {
            format!(
                "EXECUTE 'ALTER TABLE \"{table}\" ALTER COLUMN \"{column}\" SET COMPRESSION {method}';"
            )
        })
        .collect();
    execute(
        manager,
        &format!(
            "DO $$ BEGIN \
               IF current_setting('server_version_num')::int >= 140000 THEN {statements} END IF; \
             EXCEPTION WHEN feature_not_supported THEN \
               RAISE NOTICE 'compression method {method} not supported by this server: unchanged'; \
             END $$"
        ),
    )
    .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(manager, FAILED_INDEX).await?;
        for index in ["webhook_events_status_idx", "webhook_events_event_type_idx"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(Alias::new("webhook_events"))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        compress_with(manager, "lz4").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        compress_with(manager, "pglz").await?;
        for (name, columns) in [
            ("webhook_events_status_idx", &["status", "received_at"][..]),
            ("webhook_events_event_type_idx", &["event_type"][..]),
        ] {
            manager
                .create_index(crate::m20261122_000001_synced_state::index(
                    name,
                    Alias::new("webhook_events"),
                    columns,
                ))
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("webhook_events_failed_idx")
                    .table(Alias::new("webhook_events"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
