//! The credit ledger: what each organization was granted, what remains of it, and every
//! transaction that moved its balance (README "Credits"). Times are unix seconds (BIGINT), as
//! the ordering keys are: SQLite compares them as numbers, not as text in two formats.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One row per organization with a ledger: its balance, kept in the transaction that changes it.
#[derive(DeriveIden)]
enum CreditAccounts {
    Table,
    OrganizationId,
    Balance,
    /// Credits a refund took back after they were spent; the next grant pays it first.
    Debt,
    /// The sequence of the organization's last transaction.
    LastSequence,
    UpdatedAt,
}

/// Grants of credits. A grant from Stripe is recorded by the webhook that says it was bought
/// (`credited` false) and credited by the next ledger decision for its organization.
#[derive(DeriveIden)]
enum CreditGrants {
    Table,
    Id,
    /// None until known: a grant recorded from a checkout or invoice of a customer whose
    /// organization is not linked yet takes it when credited.
    OrganizationId,
    CustomerId,
    /// `checkout`, `invoice`, `api`.
    Source,
    /// The source's unique reference: `checkout:cs_…`, `invoice:in_…:il_…`; none for `api`.
    Reference,
    /// The price bought and how many units: an invoice line's credits come from the catalog.
    PriceId,
    Quantity,
    /// None until the catalog says how many credits a unit of the price is.
    Amount,
    Remaining,
    Expired,
    TakenBack,
    ExpiresAt,
    CreatedAt,
    /// The Stripe payment (`pi_…`) that paid for it: what a refund names.
    PaymentId,
    Credited,
}

/// What Stripe's charges said of a payment: the amount and the cumulative amount refunded.
#[derive(DeriveIden)]
enum CreditPayments {
    Table,
    ChargeId,
    PaymentId,
    Paid,
    Refunded,
}

/// The append-only ledger.
#[derive(DeriveIden)]
enum CreditTransactions {
    Table,
    OrganizationId,
    Sequence,
    /// `grant`, `adjustment`, `consume`, `refund`, `expire`.
    Kind,
    Amount,
    BalanceAfter,
    IdempotencyKey,
    /// A hash of the request the key came with: a repeat must match it.
    Fingerprint,
    Reference,
    Reason,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        fn credits(name: impl IntoIden) -> ColumnDef {
            ColumnDef::new(name)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        }
        manager
            .create_table(
                Table::create()
                    .table(CreditAccounts::Table)
                    .col(
                        ColumnDef::new(CreditAccounts::OrganizationId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(credits(CreditAccounts::Balance))
                    .col(credits(CreditAccounts::Debt))
                    .col(credits(CreditAccounts::LastSequence))
                    .col(credits(CreditAccounts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CreditGrants::Table)
                    .col(
                        ColumnDef::new(CreditGrants::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(CreditGrants::OrganizationId).string())
                    .col(ColumnDef::new(CreditGrants::CustomerId).string())
                    .col(ColumnDef::new(CreditGrants::Source).string().not_null())
                    .col(ColumnDef::new(CreditGrants::Reference).string())
                    .col(ColumnDef::new(CreditGrants::PriceId).string())
                    .col(ColumnDef::new(CreditGrants::Quantity).big_integer())
                    .col(ColumnDef::new(CreditGrants::Amount).big_integer())
                    .col(credits(CreditGrants::Remaining))
                    .col(credits(CreditGrants::Expired))
                    .col(credits(CreditGrants::TakenBack))
                    .col(ColumnDef::new(CreditGrants::ExpiresAt).big_integer())
                    .col(
                        ColumnDef::new(CreditGrants::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CreditGrants::PaymentId).string())
                    .col(
                        ColumnDef::new(CreditGrants::Credited)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "credit_grants_reference",
                vec![CreditGrants::Reference],
                true,
            ),
            (
                "credit_grants_organization",
                vec![CreditGrants::OrganizationId, CreditGrants::Credited],
                false,
            ),
            (
                "credit_grants_customer",
                vec![CreditGrants::CustomerId],
                false,
            ),
            (
                "credit_grants_payment",
                vec![CreditGrants::PaymentId],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(CreditGrants::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(CreditPayments::Table)
                    .col(
                        ColumnDef::new(CreditPayments::ChargeId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CreditPayments::PaymentId)
                            .string()
                            .not_null(),
                    )
                    .col(credits(CreditPayments::Paid))
                    .col(credits(CreditPayments::Refunded))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_payments_payment")
                    .table(CreditPayments::Table)
                    .col(CreditPayments::PaymentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CreditTransactions::Table)
                    .col(
                        ColumnDef::new(CreditTransactions::OrganizationId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CreditTransactions::Sequence)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CreditTransactions::Kind).string().not_null())
                    .col(
                        ColumnDef::new(CreditTransactions::Amount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CreditTransactions::BalanceAfter)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CreditTransactions::IdempotencyKey).string())
                    .col(ColumnDef::new(CreditTransactions::Fingerprint).string())
                    .col(ColumnDef::new(CreditTransactions::Reference).string())
                    .col(ColumnDef::new(CreditTransactions::Reason).string())
                    .col(
                        ColumnDef::new(CreditTransactions::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(CreditTransactions::OrganizationId)
                            .col(CreditTransactions::Sequence),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_transactions_idempotency_key")
                    .table(CreditTransactions::Table)
                    .col(CreditTransactions::OrganizationId)
                    .col(CreditTransactions::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CreditTransactions::Table.into_iden(),
            CreditPayments::Table.into_iden(),
            CreditGrants::Table.into_iden(),
            CreditAccounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
