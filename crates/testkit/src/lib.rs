//! Test support for billing-sync: a fresh, empty database per test, on SQLite and on the
//! throwaway PostgreSQL cluster that `./scripts/test` starts.
//!
//! `./scripts/test` exports `BILLING_SYNC_TEST_POSTGRES_URL` (an admin URL of that cluster) and
//! `BILLING_SYNC_TEST_REQUIRE_POSTGRES=1`. Each PostgreSQL test gets a database of its own,
//! created here, so tests run in parallel without seeing each other's rows.

#![recursion_limit = "256"]

pub mod bench;
pub mod cluster;
pub mod e2e;
pub mod load;
pub mod scenarios;
pub mod state;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database};

/// The admin URL of the test cluster (see the crate docs).
pub const POSTGRES_URL_VAR: &str = "BILLING_SYNC_TEST_POSTGRES_URL";
/// When set to 1, a PostgreSQL test without a cluster fails instead of being skipped.
pub const REQUIRE_POSTGRES_VAR: &str = "BILLING_SYNC_TEST_REQUIRE_POSTGRES";

/// The database servers billing-sync supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL 15+.
    Postgres,
}

/// A fresh, empty database that lives as long as this value (SQLite) or the cluster (PostgreSQL).
#[derive(Debug)]
pub struct TestDatabase {
    /// The `DATABASE_URL` to hand to billing-sync.
    pub url: String,
    /// Which server it is on.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new empty database on `backend`, or `None` (after saying so on stderr) when the
    /// backend is PostgreSQL and no test cluster is configured and none is required.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Some(TestDatabase {
                    url,
                    backend,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let Some(admin_url) = std::env::var(POSTGRES_URL_VAR).ok() else {
                    if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") {
                        panic!("{POSTGRES_URL_VAR} is unset but {REQUIRE_POSTGRES_VAR}=1");
                    }
                    eprintln!(
                        "SKIPPED on PostgreSQL: {POSTGRES_URL_VAR} is unset (./scripts/test starts a cluster and sets it)"
                    );
                    return None;
                };
                Some(create_postgres_database(&admin_url).await)
            }
        }
    }
}

async fn create_postgres_database(admin_url: &str) -> TestDatabase {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let admin = Database::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL cluster");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    let mut url = url::Url::parse(admin_url).expect("a valid admin URL");
    url.set_path(&format!("/{name}"));
    TestDatabase {
        url: url.to_string(),
        backend: Backend::Postgres,
        _dir: None,
    }
}

/// Runs each named `async fn(TestDatabase)` as two tests, `sqlite::NAME` and `postgres::NAME`,
/// so that the test output shows which backend each ran on. `needs_fixtures: …` names tests of
/// the shared provider fixtures: both variants are built ignored without them (see
/// [`fixtures_test`]).
#[macro_export]
macro_rules! each_backend {
    (needs_fixtures: $($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                $crate::fixtures_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        if let Some(db) = $crate::TestDatabase::create($crate::Backend::Sqlite).await {
                            super::$test(db).await
                        }
                    }
                }
            )*
        }
        mod postgres {
            $(
                $crate::postgres_fixtures_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        if let Some(db) = $crate::TestDatabase::create($crate::Backend::Postgres).await {
                            super::$test(db).await
                        }
                    }
                }
            )*
        }
    };
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = $crate::TestDatabase::create($crate::Backend::Sqlite).await {
                        super::$test(db).await
                    }
                }
            )*
        }
        mod postgres {
            $(
                $crate::postgres_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        if let Some(db) = $crate::TestDatabase::create($crate::Backend::Postgres).await {
                            super::$test(db).await
                        }
                    }
                }
            )*
        }
    };
}

/// A PostgreSQL test as this build runs it: as written in the whole suite's build (the one
/// `./scripts/with-postgres` makes, with a server: see `build.rs`), ignored, saying what it
/// needs, in any other, so that `cargo test` alone never reports it as passed without having
/// had a database.
#[cfg(not(billing_sync_postgres))]
#[doc(hidden)]
#[macro_export]
macro_rules! postgres_test {
    ($(#[$attr:meta])* async fn $($rest:tt)*) => {
        $(#[$attr])*
        #[ignore = "needs PostgreSQL: run ./scripts/test, or ./scripts/with-postgres cargo test"]
        async fn $($rest)*
    };
}

/// See the other `postgres_test`.
#[cfg(billing_sync_postgres)]
#[doc(hidden)]
#[macro_export]
macro_rules! postgres_test {
    ($($item:tt)*) => {
        $($item)*
    };
}

/// A test of the Python tools and Chromium that `./scripts/test` installs, as this build runs
/// it: as written in the script's build, ignored, saying what it needs, in any other (see
/// `build.rs`).
#[cfg(not(billing_sync_tools))]
#[doc(hidden)]
#[macro_export]
macro_rules! tool_test {
    ($(#[$attr:meta])* async fn $($rest:tt)*) => {
        $(#[$attr])*
        #[ignore = "needs the Python tools and Chromium that ./scripts/test installs: run it"]
        async fn $($rest)*
    };
    ($(#[$attr:meta])* fn $($rest:tt)*) => {
        $(#[$attr])*
        #[ignore = "needs the Python tools and Chromium that ./scripts/test installs: run it"]
        fn $($rest)*
    };
}

/// See the other `tool_test`.
#[cfg(billing_sync_tools)]
#[doc(hidden)]
#[macro_export]
macro_rules! tool_test {
    ($($item:tt)*) => {
        $($item)*
    };
}

/// A test of the shared provider fixtures (`../shared/fixtures` beside the repository, or
/// `BILLING_SYNC_FIXTURES`), as this build runs it: ignored, saying what it needs, in a build
/// that found none (see `build.rs`).
#[cfg(not(billing_sync_fixtures))]
#[doc(hidden)]
#[macro_export]
macro_rules! fixtures_test {
    ($(#[$attr:meta])* async fn $($rest:tt)*) => {
        $(#[$attr])*
        #[ignore = "needs the shared fixtures: ../shared/fixtures beside the repository, or BILLING_SYNC_FIXTURES"]
        async fn $($rest)*
    };
    ($(#[$attr:meta])* fn $($rest:tt)*) => {
        $(#[$attr])*
        #[ignore = "needs the shared fixtures: ../shared/fixtures beside the repository, or BILLING_SYNC_FIXTURES"]
        fn $($rest)*
    };
}

/// See the other `fixtures_test`.
#[cfg(billing_sync_fixtures)]
#[doc(hidden)]
#[macro_export]
macro_rules! fixtures_test {
    ($($item:tt)*) => {
        $($item)*
    };
}

/// A PostgreSQL test of the shared fixtures, as this build runs it: ignored, saying what it
/// needs, unless the build has both (see [`postgres_test`] and [`fixtures_test`]).
#[cfg(all(billing_sync_postgres, billing_sync_fixtures))]
#[doc(hidden)]
#[macro_export]
macro_rules! postgres_fixtures_test {
    ($($item:tt)*) => {
        $($item)*
    };
}

/// See the other `postgres_fixtures_test`.
#[cfg(not(billing_sync_postgres))]
#[doc(hidden)]
#[macro_export]
macro_rules! postgres_fixtures_test {
    ($($item:tt)*) => {
        $crate::postgres_test! { $($item)* }
    };
}

/// See the other `postgres_fixtures_test`.
#[cfg(all(billing_sync_postgres, not(billing_sync_fixtures)))]
#[doc(hidden)]
#[macro_export]
macro_rules! postgres_fixtures_test {
    ($($item:tt)*) => {
        $crate::fixtures_test! { $($item)* }
    };
}

/// A text description of every table, column and index, to compare two schemas.
pub async fn schema_fingerprint(db: &impl ConnectionTrait) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Sqlite => {
            "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        }
        _ => {
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable \
             FROM information_schema.columns WHERE table_schema = 'public' \
             UNION ALL SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes \
             WHERE schemaname = 'public' ORDER BY 1"
        }
    };
    db.query_all_raw(sea_orm::Statement::from_string(backend, sql))
        .await
        .expect("read the schema")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a text row"))
        .collect()
}
