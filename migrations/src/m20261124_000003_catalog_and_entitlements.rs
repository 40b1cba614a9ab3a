//! The plan catalog (Stripe products and prices) and each customer's active entitlements, for
//! the plans page. The same conventions as the synced state (see the first migration).

use sea_orm_migration::prelude::*;

use crate::m20261122_000001_synced_state::{drop_tables, index, synced_table, text, text_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StripeProducts {
    Table,
    Name,
    Description,
    Active,
    MarketingFeatures,
    DefaultPriceId,
}

#[derive(DeriveIden)]
enum StripePrices {
    Table,
    ProductId,
    Active,
    Currency,
    UnitAmount,
    LookupKey,
    Nickname,
    RecurringInterval,
    RecurringIntervalCount,
}

/// One row per customer (`id` is the `cus_…`): a summary replaces the whole list.
#[derive(DeriveIden)]
enum StripeEntitlementSummaries {
    Table,
    LookupKeys,
}

fn flag(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).boolean().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                synced_table(StripeProducts::Table, true)
                    .col(text_null(StripeProducts::Name))
                    .col(text_null(StripeProducts::Description))
                    .col(flag(StripeProducts::Active))
                    .col(
                        ColumnDef::new(StripeProducts::MarketingFeatures)
                            .json_binary()
                            .not_null(),
                    )
                    .col(text_null(StripeProducts::DefaultPriceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                synced_table(StripePrices::Table, true)
                    .col(text(StripePrices::ProductId))
                    .col(flag(StripePrices::Active))
                    .col(text(StripePrices::Currency))
                    .col(
                        ColumnDef::new(StripePrices::UnitAmount)
                            .big_integer()
                            .null(),
                    )
                    .col(text_null(StripePrices::LookupKey))
                    .col(text_null(StripePrices::Nickname))
                    .col(text_null(StripePrices::RecurringInterval))
                    .col(
                        ColumnDef::new(StripePrices::RecurringIntervalCount)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "stripe_prices_product_idx",
                StripePrices::Table,
                &["product_id"],
            ))
            .await?;
        manager
            .create_table(
                synced_table(StripeEntitlementSummaries::Table, true)
                    .col(
                        ColumnDef::new(StripeEntitlementSummaries::LookupKeys)
                            .json_binary()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            &[
                "stripe_entitlement_summaries",
                "stripe_prices",
                "stripe_products",
            ],
        )
        .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
