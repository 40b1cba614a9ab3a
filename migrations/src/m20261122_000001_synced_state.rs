//! The ledger of webhook deliveries and the projected state of Stripe and Clerk objects.
//!
//! Conventions every projection follows:
//! - `ordering_key` is the source's ordering key of the last state applied (Stripe: the event's
//!   `created`, in seconds; Clerk: `updated_at`, in milliseconds). Kept as BIGINT because SQLite
//!   stores timestamps as text in more than one format, which does not compare correctly.
//! - `raw` is the source object exactly as last applied, so nothing the source sent is lost.
//! - Deletions are tombstones (`deleted_at`); rows are never removed.
//! - Every timestamp is written by the application, never by an SQL default, for the same
//!   reason as above.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    Provider,
    EventId,
    EventType,
    ApiVersion,
    Livemode,
    EventCreated,
    Payload,
    ReceivedAt,
    ProcessedAt,
    Status,
    Error,
    Attempts,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Name,
    Slug,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    PrimaryEmail,
    FirstName,
    LastName,
}

#[derive(DeriveIden)]
enum OrganizationMemberships {
    Table,
    OrganizationId,
    UserId,
    Role,
}

#[derive(DeriveIden)]
enum StripeCustomers {
    Table,
    OrganizationId,
    Email,
    Name,
}

#[derive(DeriveIden)]
enum StripeSubscriptions {
    Table,
    CustomerId,
    OrganizationId,
    Status,
    CancelAtPeriodEnd,
    CancelAt,
    CanceledAt,
    EndedAt,
    TrialEnd,
    CurrentPeriodStart,
    CurrentPeriodEnd,
    Items,
}

/// Columns every synced row carries.
#[derive(DeriveIden)]
enum SyncedColumns {
    Raw,
    OrderingKey,
    OrderingRank,
    Livemode,
    DeletedAt,
    SyncedAt,
}

pub(crate) fn text(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).string().not_null().to_owned()
}

pub(crate) fn text_null(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).string().null().to_owned()
}

fn timestamp_null(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

/// A table of synced objects keyed by the source's id, with the columns every projection keeps.
/// `ordering_rank` breaks ties between states with the same `ordering_key` (0: a `*.created`
/// event or an embedded snapshot, 1: an update, 2: a terminal state such as a deletion).
/// `stripe` adds `livemode`.
pub(crate) fn synced_table(table: impl IntoIden, stripe: bool) -> TableCreateStatement {
    let mut statement = Table::create();
    statement
        .table(table)
        .if_not_exists()
        .col(
            ColumnDef::new(Alias::new("id"))
                .string()
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(SyncedColumns::Raw).json_binary().null())
        .col(
            ColumnDef::new(SyncedColumns::OrderingKey)
                .big_integer()
                .not_null(),
        )
        .col(
            ColumnDef::new(SyncedColumns::OrderingRank)
                .small_integer()
                .not_null(),
        )
        .col(timestamp_null(SyncedColumns::DeletedAt))
        .col(
            ColumnDef::new(SyncedColumns::SyncedAt)
                .timestamp_with_time_zone()
                .not_null(),
        );
    if stripe {
        statement.col(ColumnDef::new(SyncedColumns::Livemode).boolean().not_null());
    }
    statement.to_owned()
}

pub(crate) fn index(name: &str, table: impl IntoIden, columns: &[&str]) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(table).if_not_exists();
    for column in columns {
        statement.col(Alias::new(*column));
    }
    statement.to_owned()
}

/// Drops `tables` (those that exist), in the order given.
pub(crate) async fn drop_tables(manager: &SchemaManager<'_>, tables: &[&str]) -> Result<(), DbErr> {
    for table in tables {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(*table))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(WebhookEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text(WebhookEvents::Provider))
                    .col(text(WebhookEvents::EventId))
                    .col(text(WebhookEvents::EventType))
                    .col(text_null(WebhookEvents::ApiVersion))
                    .col(ColumnDef::new(WebhookEvents::Livemode).boolean().null())
                    .col(
                        ColumnDef::new(WebhookEvents::EventCreated)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::Payload)
                            .json_binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(timestamp_null(WebhookEvents::ProcessedAt))
                    .col(text(WebhookEvents::Status))
                    .col(ColumnDef::new(WebhookEvents::Error).text().null())
                    .col(
                        ColumnDef::new(WebhookEvents::Attempts)
                            .integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        // The ledger's idempotency key: a repeated delivery is "no row inserted".
        manager
            .create_index(
                index(
                    "webhook_events_provider_event_id_key",
                    WebhookEvents::Table,
                    &["provider", "event_id"],
                )
                .unique()
                .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("webhook_events_status_idx", &["status", "received_at"][..]),
            ("webhook_events_event_type_idx", &["event_type"][..]),
            ("webhook_events_received_at_idx", &["received_at"][..]),
        ] {
            manager
                .create_index(index(name, WebhookEvents::Table, columns))
                .await?;
        }

        manager
            .create_table(
                synced_table(Organizations::Table, false)
                    .col(text_null(Organizations::Name))
                    .col(text_null(Organizations::Slug))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                synced_table(Users::Table, false)
                    .col(text_null(Users::PrimaryEmail))
                    .col(text_null(Users::FirstName))
                    .col(text_null(Users::LastName))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                synced_table(OrganizationMemberships::Table, false)
                    .col(text(OrganizationMemberships::OrganizationId))
                    .col(text(OrganizationMemberships::UserId))
                    .col(text_null(OrganizationMemberships::Role))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "organization_memberships_user_org_idx",
                OrganizationMemberships::Table,
                &["user_id", "organization_id"],
            ))
            .await?;
        manager
            .create_index(index(
                "organization_memberships_org_idx",
                OrganizationMemberships::Table,
                &["organization_id"],
            ))
            .await?;

        manager
            .create_table(
                synced_table(StripeCustomers::Table, true)
                    .col(text_null(StripeCustomers::OrganizationId))
                    .col(text_null(StripeCustomers::Email))
                    .col(text_null(StripeCustomers::Name))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "stripe_customers_organization_idx",
                StripeCustomers::Table,
                &["organization_id"],
            ))
            .await?;

        manager
            .create_table(
                synced_table(StripeSubscriptions::Table, true)
                    .col(text(StripeSubscriptions::CustomerId))
                    .col(text_null(StripeSubscriptions::OrganizationId))
                    .col(text(StripeSubscriptions::Status))
                    .col(
                        ColumnDef::new(StripeSubscriptions::CancelAtPeriodEnd)
                            .boolean()
                            .not_null(),
                    )
                    .col(timestamp_null(StripeSubscriptions::CancelAt))
                    .col(timestamp_null(StripeSubscriptions::CanceledAt))
                    .col(timestamp_null(StripeSubscriptions::EndedAt))
                    .col(timestamp_null(StripeSubscriptions::TrialEnd))
                    .col(timestamp_null(StripeSubscriptions::CurrentPeriodStart))
                    .col(timestamp_null(StripeSubscriptions::CurrentPeriodEnd))
                    .col(
                        ColumnDef::new(StripeSubscriptions::Items)
                            .json_binary()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("stripe_subscriptions_customer_idx", "customer_id"),
            ("stripe_subscriptions_organization_idx", "organization_id"),
        ] {
            manager
                .create_index(index(name, StripeSubscriptions::Table, &[column]))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            &[
                "stripe_subscriptions",
                "stripe_customers",
                "organization_memberships",
                "users",
                "organizations",
                "webhook_events",
            ],
        )
        .await
    }

    // SQLite does not wrap migrations in a transaction by default; a half-applied schema is
    // worse than a failed start, so force one on every backend.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
