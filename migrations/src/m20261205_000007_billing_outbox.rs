//! What leaves the service: an outbox row per organization whose billing changed, written in
//! the transaction that changed it, and the billing events published from it (the app's
//! webhook and the `GET /api/v1/events` feed). Times are unix seconds (BIGINT), as in the
//! credit ledger.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One row per organization whose billing state ever changed.
#[derive(DeriveIden)]
enum BillingOutbox {
    Table,
    OrganizationId,
    /// Bumped by every transaction that changes the organization's billing: its version.
    Changes,
    /// The `changes` whose state was last published (0: never).
    Published,
    /// The billing state last published, as JSON: what Clerk's metadata is written from.
    PublishedState,
    /// Bumped by every credit decision that takes the balance below the low-balance threshold.
    BalanceDrops,
    /// The `balance_drops` last published.
    PublishedDrops,
    /// The publisher holding the row, and until when (a replica that dies lets it go).
    Lease,
    LeasedUntil,
    /// The `published` version last written to Clerk's organization metadata.
    ClerkSent,
    ClerkAttempts,
    ClerkNextAttemptAt,
    ClerkLease,
    ClerkLeasedUntil,
    ClerkError,
}

/// The billing events, in commit order (`seq`), with the app webhook's delivery state.
#[derive(DeriveIden)]
enum BillingEvents {
    Table,
    Seq,
    /// `bse_…`: the stable id the receiver deduplicates on (`webhook-id`).
    Id,
    EventType,
    OrganizationId,
    /// The organization's `changes` the event was published at.
    Version,
    Created,
    Data,
    /// When the app's webhook took it (2xx); none while pending.
    DeliveredAt,
    /// A newer `billing.updated` of the organization was published before this one went out:
    /// it is not sent (it stays in the feed).
    Superseded,
    Attempts,
    NextAttemptAt,
    Lease,
    LeasedUntil,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        fn counter(name: impl IntoIden) -> ColumnDef {
            ColumnDef::new(name)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        }
        manager
            .create_table(
                Table::create()
                    .table(BillingOutbox::Table)
                    .col(
                        ColumnDef::new(BillingOutbox::OrganizationId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(counter(BillingOutbox::Changes))
                    .col(counter(BillingOutbox::Published))
                    .col(ColumnDef::new(BillingOutbox::PublishedState).text())
                    .col(counter(BillingOutbox::BalanceDrops))
                    .col(counter(BillingOutbox::PublishedDrops))
                    .col(ColumnDef::new(BillingOutbox::Lease).string())
                    .col(ColumnDef::new(BillingOutbox::LeasedUntil).big_integer())
                    .col(counter(BillingOutbox::ClerkSent))
                    .col(counter(BillingOutbox::ClerkAttempts))
                    .col(counter(BillingOutbox::ClerkNextAttemptAt))
                    .col(ColumnDef::new(BillingOutbox::ClerkLease).string())
                    .col(ColumnDef::new(BillingOutbox::ClerkLeasedUntil).big_integer())
                    .col(ColumnDef::new(BillingOutbox::ClerkError).text())
                    .to_owned(),
            )
            .await?;
        // The publisher's and Clerk's work: only rows with something to do are indexed.
        for sql in [
            "CREATE INDEX IF NOT EXISTS billing_outbox_unpublished_idx ON billing_outbox (organization_id) WHERE changes > published",
            "CREATE INDEX IF NOT EXISTS billing_outbox_clerk_pending_idx ON billing_outbox (clerk_next_attempt_at) WHERE clerk_sent < published",
        ] {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(BillingEvents::Table)
                    .col(
                        ColumnDef::new(BillingEvents::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BillingEvents::Id)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(BillingEvents::EventType).string().not_null())
                    .col(
                        ColumnDef::new(BillingEvents::OrganizationId)
                            .string()
                            .not_null(),
                    )
                    .col(counter(BillingEvents::Version))
                    .col(counter(BillingEvents::Created))
                    .col(ColumnDef::new(BillingEvents::Data).text().not_null())
                    .col(ColumnDef::new(BillingEvents::DeliveredAt).big_integer())
                    .col(
                        ColumnDef::new(BillingEvents::Superseded)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(counter(BillingEvents::Attempts))
                    .col(counter(BillingEvents::NextAttemptAt))
                    .col(ColumnDef::new(BillingEvents::Lease).string())
                    .col(ColumnDef::new(BillingEvents::LeasedUntil).big_integer())
                    .col(ColumnDef::new(BillingEvents::LastError).text())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS billing_events_pending_idx ON billing_events (organization_id, seq) WHERE delivered_at IS NULL AND NOT superseded",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BillingEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(BillingOutbox::Table).to_owned())
            .await
    }
}
