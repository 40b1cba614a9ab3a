//! The migrations: idempotent, and producing the contract tables with their keys, on both backends.

use billing_sync_store::Store;
use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend, Statement};
use billing_sync_testkit::{TestDatabase, each_backend, schema_fingerprint};

each_backend!(
    migrations_applied_twice_end_in_the_same_schema,
    every_contract_table_exists_with_its_unique_keys,
    migration_status_tells_pending_from_applied,
    every_migration_goes_down_and_up_again_to_the_same_schema,
    the_ledger_keeps_only_the_indexes_its_queries_use,
);

/// The strings of the first column of `sql`'s rows.
async fn strings(store: &Store, sql: &str) -> Vec<String> {
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(store.backend(), sql))
        .await
        .expect("query");
    let mut values: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a string"))
        .collect();
    values.sort();
    values
}

/// Every event updates every index of the ledger: only those a documented query uses are kept
/// (issue 22), and on PostgreSQL its JSON text is compressed with lz4.
async fn the_ledger_keeps_only_the_indexes_its_queries_use(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    let indexes = match store.backend() {
        DbBackend::Postgres => {
            strings(
                &store,
                "SELECT indexname FROM pg_indexes WHERE tablename = 'webhook_events' \
                 AND indexname <> 'webhook_events_pkey'",
            )
            .await
        }
        _ => {
            strings(
                &store,
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name = 'webhook_events' AND sql IS NOT NULL",
            )
            .await
        }
    };
    assert_eq!(
        indexes,
        [
            "webhook_events_failed_idx",
            "webhook_events_provider_event_id_key",
            "webhook_events_received_at_idx",
        ]
    );
    if store.backend() == DbBackend::Postgres {
        let compressions = strings(
            &store,
            "SELECT DISTINCT attcompression::text FROM pg_attribute \
             WHERE attname IN ('payload', 'raw') AND attrelid IN \
             (SELECT oid FROM pg_class WHERE relname IN ('webhook_events', 'stripe_subscriptions', \
              'stripe_customers', 'organizations', 'users', 'organization_memberships', \
              'stripe_products', 'stripe_prices', 'stripe_entitlement_summaries'))",
        )
        .await;
        assert_eq!(compressions, ["l"], "lz4 for every JSON text column");
    }
}

async fn every_migration_goes_down_and_up_again_to_the_same_schema(db: TestDatabase) {
    use billing_sync_migration::{Migrator, MigratorTrait};
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("up");
    let up = schema_fingerprint(store.connection()).await;
    let names = |fingerprint: &[String], table: &str| {
        fingerprint
            .iter()
            // SQLite's lines name `table name …`, PostgreSQL's `column table.name …`.
            .any(|line| {
                line.contains(&format!(" {table} ")) || line.contains(&format!(" {table}."))
            })
    };
    for table in CONTRACT_TABLES {
        assert!(names(&up, table), "{table} is in the fingerprint: {up:?}");
    }
    Migrator::down(store.connection(), None)
        .await
        .expect("every migration down");
    let down = schema_fingerprint(store.connection()).await;
    for table in CONTRACT_TABLES {
        assert!(
            !names(&down, table),
            "{table} is dropped by its migration's down: {down:?}"
        );
    }
    store.migrate_up().await.expect("up again");
    assert_eq!(schema_fingerprint(store.connection()).await, up);
}

const CONTRACT_TABLES: [&str; 9] = [
    "webhook_events",
    "organizations",
    "users",
    "organization_memberships",
    "stripe_customers",
    "stripe_subscriptions",
    "stripe_products",
    "stripe_prices",
    "stripe_entitlement_summaries",
];

async fn migrations_applied_twice_end_in_the_same_schema(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("first migration");
    let first = schema_fingerprint(store.connection()).await;
    store.migrate_up().await.expect("second migration");
    let second = schema_fingerprint(store.connection()).await;
    assert!(
        first.len() > CONTRACT_TABLES.len(),
        "schema read: {first:?}"
    );
    assert_eq!(first, second);
}

async fn exec(store: &Store, sql: &str) -> Result<(), sea_orm::DbErr> {
    let backend = store.backend();
    store
        .connection()
        .execute_raw(Statement::from_string(backend, sql))
        .await
        .map(|_| ())
}

async fn every_contract_table_exists_with_its_unique_keys(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    for table in CONTRACT_TABLES {
        exec(&store, &format!("SELECT * FROM {table} WHERE 1 = 0"))
            .await
            .unwrap_or_else(|err| panic!("table {table} is missing: {err}"));
    }

    let now = match store.backend() {
        DbBackend::Sqlite => "'2026-11-22T00:00:00+00:00'",
        _ => "now()",
    };
    let ledger_row = |provider: &str| {
        format!(
            "INSERT INTO webhook_events (provider, event_id, event_type, payload, received_at, status) \
             VALUES ('{provider}', 'evt_1', 'customer.created', '{{}}', {now}, 'processed')"
        )
    };
    exec(&store, &ledger_row("stripe"))
        .await
        .expect("first delivery");
    exec(&store, &ledger_row("clerk"))
        .await
        .expect("the same id from another provider is another event");
    assert!(
        exec(&store, &ledger_row("stripe")).await.is_err(),
        "(provider, event_id) must be unique"
    );

    let synced_rows = [
        (
            "organizations",
            "id, ordering_key, ordering_rank, synced_at",
            "'org_1', 1, 1, {now}",
        ),
        (
            "users",
            "id, ordering_key, ordering_rank, synced_at",
            "'user_1', 1, 1, {now}",
        ),
        (
            "organization_memberships",
            "id, organization_id, user_id, ordering_key, ordering_rank, synced_at",
            "'orgmem_1', 'org_1', 'user_1', 1, 1, {now}",
        ),
        (
            "stripe_customers",
            "id, ordering_key, ordering_rank, livemode, synced_at",
            "'cus_1', 1, 0, false, {now}",
        ),
        (
            "stripe_subscriptions",
            "id, customer_id, status, cancel_at_period_end, items, ordering_key, ordering_rank, livemode, synced_at",
            "'sub_1', 'cus_1', 'active', false, '[]', 1, 0, false, {now}",
        ),
        (
            "stripe_products",
            "id, active, marketing_features, ordering_key, ordering_rank, livemode, synced_at",
            "'prod_1', true, '[]', 1, 0, false, {now}",
        ),
        (
            "stripe_prices",
            "id, product_id, active, currency, ordering_key, ordering_rank, livemode, synced_at",
            "'price_1', 'prod_1', true, 'eur', 1, 0, false, {now}",
        ),
        (
            "stripe_entitlement_summaries",
            "id, lookup_keys, ordering_key, ordering_rank, livemode, synced_at",
            "'cus_1', '[]', 1, 1, false, {now}",
        ),
    ];
    for (table, columns, values) in synced_rows {
        let insert = format!(
            "INSERT INTO {table} ({columns}) VALUES ({})",
            values.replace("{now}", now)
        );
        exec(&store, &insert)
            .await
            .unwrap_or_else(|err| panic!("insert into {table}: {err}"));
        assert!(
            exec(&store, &insert).await.is_err(),
            "{table}.id must be unique"
        );
    }
}

async fn migration_status_tells_pending_from_applied(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    let before = store.migration_status().await.expect("status");
    assert!(!before.is_empty());
    assert!(before.iter().all(|m| !m.applied), "{before:?}");
    store.migrate_up().await.expect("migrate");
    let after = store.migration_status().await.expect("status");
    assert!(after.iter().all(|m| m.applied), "{after:?}");
}
