//! One PostgreSQL connection of the pool kept between statements, for the ledger's writer.
//!
//! sqlx tests every connection taken back into its pool with a round trip of its own (a `Sync`
//! answered `ReadyForQuery`, unconditional in sqlx 0.9), so each statement run on the pool costs
//! PostgreSQL two round trips, and the second one occupies the service's thread right after the
//! answer, while the next request waits (`perf trace` of one client: the answer sent, then the
//! test's 5 bytes out and 6 back, 60–100 µs, before the next request was read). A statement on
//! the kept connection costs one.
//!
//! The connection is kept only while it serves: one that has been idle as long as the pool
//! would ping it before handing it out ([`crate::connect`]'s `IDLE_BEFORE_PING`) goes back to the
//! pool (which tests it) and a fresh one is taken, and one whose statement failed is never kept
//! (the pool tests it, and closes it if it is broken). A caller finding it in use by another
//! runs on the pool, as before: keeping it never makes one caller wait for another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgPool, Postgres};
use sea_orm::sqlx::{self, pool::PoolConnection};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

/// A connection of `pool`, kept between the statements run through this.
#[derive(Debug)]
pub(crate) struct KeptConnection {
    pool: PgPool,
    /// A connection kept longer than this without a statement goes back to the pool.
    idle_limit: Duration,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
enum Kept {
    /// None kept now; the next statement takes one from the pool.
    #[default]
    None,
    /// This connection, last used then.
    Connection(PoolConnection<Postgres>, Instant),
    /// The store is closing: none is kept again (the pool's close waits for every connection).
    Closed,
}

impl KeptConnection {
    pub(crate) fn new(pool: PgPool, idle_limit: Duration) -> Arc<Self> {
        Arc::new(KeptConnection {
            pool,
            idle_limit,
            kept: Mutex::new(Kept::None),
        })
    }

    /// Gives the kept connection back to the pool, and keeps none from now on.
    pub(crate) async fn close(&self) {
        *self.kept.lock().await = Kept::Closed;
    }

    /// Runs `run` on the kept connection (taking one from the pool when none is kept, or the
    /// one kept has been idle too long), or on a pooled one while another caller uses it.
    async fn run<T>(
        &self,
        run: impl AsyncFnOnce(&mut PoolConnection<Postgres>) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let Ok(mut kept) = self.kept.try_lock() else {
            return self.run_pooled(run).await;
        };
        if matches!(*kept, Kept::Closed) {
            drop(kept);
            return self.run_pooled(run).await;
        }
        // One idle too long is dropped here: back to the pool, which tests it on the way in.
        let reusable = match std::mem::take(&mut *kept) {
            Kept::Connection(connection, used) if used.elapsed() < self.idle_limit => {
                Some(connection)
            }
            _ => None,
        };
        let mut connection = match reusable {
            Some(connection) => connection,
            None => self.pool.acquire().await.map_err(acquire_error)?,
        };
        // Dropped on failure (or should this future be dropped midway): the pool tests it then.
        let result = run(&mut connection).await.map_err(query_error)?;
        *kept = Kept::Connection(connection, Instant::now());
        Ok(result)
    }

    /// Runs `run` on a connection of the pool, given back after it.
    async fn run_pooled<T>(
        &self,
        run: impl AsyncFnOnce(&mut PoolConnection<Postgres>) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let mut pooled = self.pool.acquire().await.map_err(acquire_error)?;
        run(&mut pooled).await.map_err(query_error)
    }
}

/// As SeaORM's pool reports a connection it could not take.
fn acquire_error(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        err => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err))),
    }
}

/// As SeaORM reports a statement that failed.
fn query_error(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

/// `statement` for sqlx, its text and values moved rather than copied (the ledger's general write
/// is 6 KB of text).
fn query(statement: Statement) -> sqlx::query::Query<'static, Postgres, SqlxValues> {
    let values = statement
        .values
        .unwrap_or_else(|| sea_orm::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), SqlxValues(values))
}

#[sea_orm::prelude::async_trait::async_trait]
impl ConnectionTrait for KeptConnection {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        self.run(async |connection| query(statement).execute(&mut **connection).await)
            .await
            .map(ExecResult::from)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.run(async |connection| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut **connection)
                .await
        })
        .await
        .map(ExecResult::from)
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.run(async |connection| query(statement).fetch_optional(&mut **connection).await)
            .await
            .map(|row| row.map(QueryResult::from))
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run(async |connection| query(statement).fetch_all(&mut **connection).await)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_sync_testkit::{Backend, TestDatabase};

    /// The PostgreSQL process serving `kept`'s statement.
    async fn backend_pid(kept: &KeptConnection) -> Result<i32, DbErr> {
        let row = kept
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("no row".to_owned()))?;
        row.try_get::<i32>("", "pid")
    }

    /// Ends PostgreSQL process `pid`, waiting for it to exit.
    async fn terminate(admin: &PgPool, pid: i32) {
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
            .bind(pid)
            .fetch_one(admin)
            .await
            .expect("terminate");
        assert!(ended);
    }

    billing_sync_testkit::postgres_test! {
        /// Within its idle limit the connection is kept, unpinged: one the server closed fails
        /// the next statement (and is not kept after it). Past the limit it goes back to the
        /// pool, which tests it, and the statement runs on a live one.
        #[tokio::test]
        async fn a_connection_is_kept_within_its_idle_limit_and_given_back_past_it() {
            let Some(db) = TestDatabase::create(Backend::Postgres).await else {
                return;
            };
            let pool = PgPool::connect(&db.url).await.expect("pool");
            let admin = PgPool::connect(&db.url).await.expect("admin");

            let kept = KeptConnection::new(pool.clone(), Duration::from_secs(3600));
            terminate(&admin, backend_pid(&kept).await.expect("first")).await;
            assert!(backend_pid(&kept).await.is_err(), "the kept connection was used");
            backend_pid(&kept).await.expect("a fresh one after the failure");

            let given_back = KeptConnection::new(pool, Duration::ZERO);
            terminate(&admin, backend_pid(&given_back).await.expect("first")).await;
            backend_pid(&given_back)
                .await
                .expect("a live connection, not the closed one");
        }
    }
}
