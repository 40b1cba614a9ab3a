//! Reservations: credits held for work under way (`POST /api/v1/credits/reserve`), then
//! captured in part or released, or released by themselves when their time to live ends. The
//! account keeps what its open reservations hold (`held`), so that a read of the balance needs
//! no sum; a reservation's number is its `hold` transaction's sequence.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CreditAccounts {
    Table,
    /// Credits the organization's open reservations hold.
    Held,
}

#[derive(DeriveIden)]
enum CreditReservations {
    Table,
    OrganizationId,
    /// The sequence of the `hold` transaction that made it.
    Number,
    Amount,
    /// Unix seconds: released by itself then, if not settled.
    ExpiresAt,
    /// None while open; `captured`, `released` or `expired`.
    Settlement,
    /// Credits the capture charged.
    Captured,
    /// The transaction that settled it, and the balance after it: a repeated capture or
    /// release is answered from them.
    SettledSequence,
    SettledBalance,
    CreatedAt,
}

/// The open reservations by time to live: what a read's "anything due?" and a decision's load
/// look for. The same statement on both backends (both have partial indexes).
const OPEN_INDEX: &str = "CREATE INDEX IF NOT EXISTS credit_reservations_open_idx \
     ON credit_reservations (organization_id, expires_at) WHERE settlement IS NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CreditAccounts::Table)
                    .add_column(
                        ColumnDef::new(CreditAccounts::Held)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CreditReservations::Table)
                    .col(
                        ColumnDef::new(CreditReservations::OrganizationId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CreditReservations::Number)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CreditReservations::Amount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CreditReservations::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CreditReservations::Settlement).string())
                    .col(
                        ColumnDef::new(CreditReservations::Captured)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(CreditReservations::SettledSequence).big_integer())
                    .col(ColumnDef::new(CreditReservations::SettledBalance).big_integer())
                    .col(
                        ColumnDef::new(CreditReservations::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(CreditReservations::OrganizationId)
                            .col(CreditReservations::Number),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(OPEN_INDEX)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CreditReservations::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CreditAccounts::Table)
                    .drop_column(CreditAccounts::Held)
                    .to_owned(),
            )
            .await
    }
}
