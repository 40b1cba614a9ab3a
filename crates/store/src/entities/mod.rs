//! SeaORM entities of the contract tables. Applications read these tables directly, so their
//! names and columns are part of billing-sync's interface.

/// A synced table's entity: the columns every synced row has (the source's `id`, `raw`, the
/// ordering `ordering_key` and `ordering_rank`, the `deleted_at` tombstone, `synced_at`), stated
/// once here, then the table's own `columns`.
macro_rules! synced_entity {
    (
        $(#[$model_doc:meta])* table $table:literal;
        $(#[$id_doc:meta])* id;
        $(#[$key_doc:meta])* ordering_key;
        $(#[$relations_doc:meta])* relations;
        columns { $( $(#[$column_doc:meta])* $column:ident : $type:ty, )* }
    ) => {
        $(#[$model_doc])*
        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = $table)]
        pub struct Model {
            $(#[$id_doc])*
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            /// The source object's JSON text as last applied; none while the row holds only
            /// what another object said of it (a customer known from a checkout).
            pub raw: Option<String>,
            $(#[$key_doc])*
            pub ordering_key: i64,
            /// Set when the source deleted the object: a tombstone, rows are never removed.
            pub deleted_at: Option<DateTimeUtc>,
            /// When billing-sync last wrote this row.
            pub synced_at: DateTimeUtc,
            /// Tie-break at equal `ordering_key` (`billing_sync_projection::Rank`): 0 a Stripe `*.created` event or
            /// an embedded snapshot, 1 any other state, 2 a terminal state.
            pub ordering_rank: i16,
            $( $(#[$column_doc])* pub $column: $type, )*
        }

        $(#[$relations_doc])*
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod backfill_checkpoints;
pub mod credit_accounts;
pub mod credit_grants;
pub mod credit_payments;
pub mod credit_reservations;
pub mod credit_transactions;
pub mod organization_memberships;
pub mod organizations;
pub mod stripe_customers;
pub mod stripe_entitlement_summaries;
pub mod stripe_prices;
pub mod stripe_products;
pub mod stripe_subscriptions;
pub mod users;
pub mod webhook_events;
