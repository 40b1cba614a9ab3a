//! The connection the ledger keeps between its statements (PostgreSQL): one the server closed
//! is replaced, not kept failing; closing the store gives it back, so that the pool's close,
//! which waits for every connection, returns.

use std::time::Duration;

use billing_sync_credits::{Answer, Request};
use billing_sync_store::Store;
use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend, Statement};
use billing_sync_testkit::state::migrated_store;
use billing_sync_testkit::{Backend, TestDatabase};

use crate::credits::{consume, grant, one_request};

const NOW: i64 = 1_800_000_000;

async fn decide(store: &Store, request: Request) -> Result<Answer, billing_sync_store::StoreError> {
    let mut answers = store
        .decide_credits(&[one_request("org_kept", request)], "credits", NOW)
        .await?;
    Ok(answers.remove(0).remove(0))
}

/// Ends, through `admin`, the server processes whose last statement was one of the ledger's
/// writes (the general one, or one spend's: the kept connection's), waiting for each to exit;
/// how many there were.
async fn end_ledger_backends(admin: &Store) -> usize {
    let ended = admin
        .connection()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid, 10000) AS ended FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND (query LIKE 'WITH v AS MATERIALIZED%' \
             OR query LIKE 'WITH a AS (UPDATE credit_accounts%')",
        ))
        .await
        .expect("terminate");
    for row in &ended {
        assert!(row.try_get::<bool>("", "ended").expect("ended"));
    }
    ended.len()
}

billing_sync_testkit::postgres_test! {
    /// The server closes the kept connection (a restart, an idle timeout, an administrator):
    /// the next decision may fail, as a retryable error, once; its retry answers, on a fresh
    /// connection, and the key is spent once.
    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_replaced_and_the_retry_answers_once() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let admin = Store::connect(&db.url).await.expect("admin");
        decide(&store, grant(10)).await.expect("grant");
        decide(&store, consume(1, "first")).await.expect("first");
        assert!(end_ledger_backends(&admin).await >= 1, "the kept connection's backend");

        let mut failures = 0;
        let answer = loop {
            match decide(&store, consume(1, "second")).await {
                Ok(answer) => break answer,
                Err(err) => {
                    assert!(err.retryable(), "a closed connection is retried: {err}");
                    failures += 1;
                    assert!(failures < 2, "the closed connection was kept: {err}");
                }
            }
        };
        assert!(matches!(answer, Answer::Done { balance: 8, .. }), "{answer:?}");
        assert_eq!(decide(&store, consume(1, "second")).await.expect("again"), answer);
        let third = decide(&store, consume(1, "third")).await.expect("third");
        assert!(matches!(third, Answer::Done { balance: 7, .. }), "{third:?}");
        let keys: Vec<_> = store
            .credit_transactions("org_kept")
            .await
            .expect("ledger")
            .into_iter()
            .filter_map(|transaction| transaction.idempotency_key)
            .collect();
        assert_eq!(keys, ["grant", "first", "second", "third"]);
    }
}

billing_sync_testkit::postgres_test! {
    /// The pool's close waits for every connection to come back: closing the store gives back
    /// the one the ledger keeps, so it returns.
    #[tokio::test]
    async fn closing_the_store_returns_the_kept_connection_to_the_closing_pool() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = migrated_store(&db.url).await;
        let writer = store.clone();
        decide(&writer, grant(10)).await.expect("grant");
        tokio::time::timeout(Duration::from_secs(30), store.close())
            .await
            .expect("the store closed, its kept connection given back")
            .expect("close");
    }
}
