//! Where an interrupted `billing-sync backfill` resumes: one row per listed resource.
//!
//! A row is written in the same transaction as the page it follows, so a resumed run never
//! skips a page whose objects were not committed. It is deleted when the resource's listing
//! completes, so the next run starts from the beginning.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackfillCheckpoints {
    Table,
    /// `stripe/customers`, `clerk/organizations`, …
    Resource,
    /// The source's cursor for the next page: Stripe's `starting_after`, Clerk's `offset`.
    Cursor,
    Seen,
    Created,
    Updated,
    Unchanged,
    Failed,
    StartedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let count = |name| {
            ColumnDef::new(name)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(BackfillCheckpoints::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BackfillCheckpoints::Resource)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BackfillCheckpoints::Cursor)
                            .string()
                            .not_null(),
                    )
                    .col(count(BackfillCheckpoints::Seen))
                    .col(count(BackfillCheckpoints::Created))
                    .col(count(BackfillCheckpoints::Updated))
                    .col(count(BackfillCheckpoints::Unchanged))
                    .col(count(BackfillCheckpoints::Failed))
                    .col(
                        ColumnDef::new(BackfillCheckpoints::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BackfillCheckpoints::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(BackfillCheckpoints::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
