//! Every connection of an SQLite pool is tuned, not only the one that happened to run the
//! PRAGMAs: `synchronous` and `foreign_keys` are settings of a connection, not of the file.

use billing_sync_store::Store;
use billing_sync_testkit::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

/// As many connections as the pool holds, each pinned by a transaction of its own.
const POOL_CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_an_sqlite_pool_is_tuned() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite needs no server");
    let store = Store::connect(&db.url).await.expect("connect");
    let connection = store.connection();
    let mut transactions = Vec::new();
    for _ in 0..POOL_CONNECTIONS {
        transactions.push(connection.begin().await.expect("a connection of its own"));
    }
    for (n, transaction) in transactions.iter().enumerate() {
        let journal_mode = transaction
            .query_one_raw(Statement::from_string(
                transaction.get_database_backend(),
                "PRAGMA journal_mode",
            ))
            .await
            .expect("PRAGMA")
            .expect("a row")
            .try_get_by_index::<String>(0)
            .expect("text");
        assert_eq!(journal_mode, "wal", "connection {n}: journal_mode");
        let pragma = |name: &str| {
            let sql = format!("PRAGMA {name}");
            async move {
                let row = transaction
                    .query_one_raw(Statement::from_string(
                        transaction.get_database_backend(),
                        sql,
                    ))
                    .await
                    .expect("PRAGMA")
                    .expect("a row");
                row.try_get_by_index::<i64>(0).expect("a number")
            }
        };
        // 2 is FULL: an acknowledged commit survives a power loss (NORMAL, 1, only the
        // application's crash).
        assert_eq!(
            pragma("synchronous").await,
            2,
            "connection {n}: synchronous"
        );
        assert_eq!(
            pragma("foreign_keys").await,
            1,
            "connection {n}: foreign_keys"
        );
    }
}
