//! Opening the database, the embedded SQLite default included, and running migrations.

use std::time::Duration;

use billing_sync_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::error::{StoreError, is_connection_error};
use crate::kept_connection::KeptConnection;

/// A handle on the billing-sync database. Cheap to clone: it shares one connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    target: String,
    /// A credit decision that takes an organization's balance across this (either way) tells
    /// the outbox (`CREDITS_LOW_BALANCE_THRESHOLD`); none: balances tell it nothing.
    low_balance_threshold: Option<i64>,
    /// The credit accounts this process last wrote (`credits::remembered`), shared by clones.
    remembered_ledgers: std::sync::Arc<crate::credits::RememberedLedgers>,
    /// PostgreSQL: the connection the ledger's writer keeps between its statements
    /// (`kept_connection`), shared by clones.
    kept_connection: Option<std::sync::Arc<KeptConnection>>,
}

/// One migration and whether it has been applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationState {
    /// The migration's name, e.g. `m20261122_000001_synced_state`.
    pub name: String,
    /// Whether it is applied to this database.
    pub applied: bool,
}

/// How long a connection may take to open, and a statement to wait for a pooled one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens and closes one PostgreSQL connection to `url`, within [`CONNECT_TIMEOUT`]: the
/// driver's own error when it cannot (what the pool's retries would hide).
async fn first_connection(url: &str) -> Result<(), sea_orm::DbErr> {
    use sqlx::Connection;
    let to_db = |err: sqlx::Error| {
        sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(err)))
    };
    let connect = sqlx::PgConnection::connect(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connection)) => connection.close().await.map_err(to_db),
        Ok(Err(err)) => Err(to_db(err)),
        Err(_) => Err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

/// How long a pooled connection may sit idle before it is pinged on its way out of the pool.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

impl Store {
    /// Connects to `url`: `sqlite://path` (the file is created when missing) or
    /// `postgres://…`. Fails with [`StoreError::Unavailable`] naming the host, never the
    /// password, when the database does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let target = describe_target(url)?;
        let is_sqlite = url.starts_with("sqlite:");
        let url = if is_sqlite {
            sqlite_url_creating_file(url)
        } else {
            url.to_owned()
        };
        let mut options = ConnectOptions::new(url);
        options
            .connect_timeout(CONNECT_TIMEOUT)
            .acquire_timeout(CONNECT_TIMEOUT)
            // The default pings every connection handed out of the pool: a round trip before
            // every statement, which doubled the database's share of a billing-state read
            // (profiled). A connection idle long enough for a server, proxy or firewall to have
            // dropped it is still pinged; one in use a moment ago is not, and should it have
            // died all the same, the error is a connection error the callers already treat as
            // transient.
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
            // sqlx logs every statement at info otherwise, payloads included.
            .sqlx_logging(false);
        if is_sqlite {
            // One writer at a time is SQLite's model; a small pool keeps readers concurrent
            // with it in WAL mode without piling up writers that only wait on the lock.
            options
                .max_connections(4)
                .min_connections(1)
                .map_sqlx_sqlite_opts(tuned_for_sqlite);
            if url_is_sqlite_memory(&target) {
                // Each connection to `sqlite::memory:` is its own empty database.
                options.max_connections(1);
            }
        } else {
            options.max_connections(32).min_connections(1);
            // The pool retries a refused connection until its acquire timeout and then says
            // only "pool timed out": one connection first says why (refused, no such host,
            // password or database wrong), at once.
            first_connection(options.get_url())
                .await
                .map_err(|source| StoreError::Unavailable {
                    target: target.clone(),
                    source,
                })?;
        }
        let db = Database::connect(options)
            .await
            .map_err(|source| StoreError::Unavailable {
                target: target.clone(),
                source,
            })?;
        let kept_connection = (!is_sqlite).then(|| {
            KeptConnection::new(db.get_postgres_connection_pool().clone(), IDLE_BEFORE_PING)
        });
        Ok(Store {
            db,
            target,
            low_balance_threshold: None,
            remembered_ledgers: Default::default(),
            kept_connection,
        })
    }

    /// Connects to `url` as [`Store::connect`] does, but never creates a database: an SQLite
    /// file that does not exist is [`StoreError::NoDatabase`] (a command that reads or adds to
    /// a database must not leave an empty one behind, in whatever directory it ran).
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = sqlite_file(url)
            && !std::path::Path::new(path).exists()
        {
            return Err(StoreError::NoDatabase(path.to_owned()));
        }
        Store::connect(url).await
    }

    /// A store with no database behind it: every query fails as a connection error. For what
    /// needs a `Store` to be built but never queries it, such as the service whose OpenAPI
    /// document is printed.
    pub fn disconnected() -> Self {
        Store {
            db: DatabaseConnection::default(),
            target: "no database".to_owned(),
            low_balance_threshold: None,
            remembered_ledgers: Default::default(),
            kept_connection: None,
        }
    }

    /// This store, with credit decisions telling the outbox when a balance crosses `threshold`.
    pub fn with_low_balance_threshold(mut self, threshold: Option<i64>) -> Self {
        self.low_balance_threshold = threshold;
        self
    }

    /// See [`Store::with_low_balance_threshold`].
    pub(crate) fn low_balance_threshold(&self) -> Option<i64> {
        self.low_balance_threshold
    }

    /// The credit accounts this process last wrote.
    pub(crate) fn remembered_ledgers(&self) -> &crate::credits::RememberedLedgers {
        &self.remembered_ledgers
    }

    /// PostgreSQL: the connection the ledger's writer keeps between its statements.
    pub(crate) fn kept_connection(&self) -> Option<&KeptConnection> {
        self.kept_connection.as_deref()
    }

    /// Checks that `url` is one billing-sync can use, without connecting, and returns where it
    /// points without credentials.
    pub fn validate_url(url: &str) -> Result<String, StoreError> {
        describe_target(url)
    }

    /// The connection, for the queries in this crate and for tests.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is (`sqlite` or `postgres`).
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Where this store points, without credentials: `postgres://host:port/db` or the SQLite path.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connections of the pool: `(open, idle)`.
    pub fn pool_connections(&self) -> (u32, usize) {
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }

    /// Applies every pending migration. Safe to call on an up-to-date database.
    pub async fn migrate_up(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|err| self.classify(err))
    }

    /// Every known migration with whether it is applied. Only reads: a database never
    /// migrated (no `seaql_migrations` table, which sea-orm's own status call would create)
    /// has every migration pending.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let backend = self.db.get_database_backend();
        let exists = match backend {
            DbBackend::Sqlite => {
                "SELECT COUNT(*) AS found FROM sqlite_master \
                 WHERE type = 'table' AND name = 'seaql_migrations'"
            }
            _ => {
                "SELECT COUNT(*) AS found FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'seaql_migrations'"
            }
        };
        let read = async {
            let found: i64 = match self
                .db
                .query_one_raw(Statement::from_string(backend, exists))
                .await?
            {
                Some(row) => row.try_get("", "found")?,
                None => 0,
            };
            if found == 0 {
                return Ok(Vec::new());
            }
            self.db
                .query_all_raw(Statement::from_string(
                    backend,
                    "SELECT version FROM seaql_migrations",
                ))
                .await?
                .iter()
                .map(|row| row.try_get::<String>("", "version"))
                .collect::<Result<Vec<String>, sea_orm::DbErr>>()
        };
        let applied: Vec<String> = read.await.map_err(|err| self.classify(err))?;
        Ok(Migrator::migrations()
            .iter()
            .map(|m| MigrationState {
                name: m.name().to_owned(),
                applied: applied.iter().any(|a| a == m.name()),
            })
            .collect())
    }

    /// Answers when the database answers a trivial query: what `/readyz` asks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(|err| self.classify(err))
    }

    /// Closes the pool, waiting for connections in use to be returned (the kept one first).
    pub async fn close(self) -> Result<(), StoreError> {
        if let Some(kept) = &self.kept_connection {
            kept.close().await;
        }
        self.db.close().await.map_err(StoreError::from)
    }

    pub(crate) fn classify(&self, err: sea_orm::DbErr) -> StoreError {
        if is_connection_error(&err) {
            StoreError::Unavailable {
                target: self.target.clone(),
                source: err,
            }
        } else {
            StoreError::Database(err)
        }
    }
}

/// The settings of every SQLite connection the pool opens (`synchronous` and `foreign_keys`
/// belong to a connection, not to the file): WAL lets readers (probes, the portal) proceed while
/// a webhook transaction writes; FULL synchronous syncs the WAL at every commit, so that an
/// event acknowledged after its commit survives a power loss or an operating-system crash too
/// (NORMAL would only survive the application's crash); foreign keys are checked.
fn tuned_for_sqlite(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
}

/// The URL without its password, for messages and logs.
fn describe_target(url: &str) -> Result<String, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(StoreError::InvalidUrl(
                "an sqlite URL needs a path, e.g. sqlite://billing-sync.db".into(),
            ));
        }
        return Ok(format!("sqlite://{path}"));
    }
    let parsed = url::Url::parse(url).map_err(|err| {
        StoreError::InvalidUrl(format!(
            "not a URL ({err}); expected postgres://user:password@host:port/database or sqlite://path"
        ))
    })?;
    match parsed.scheme() {
        "postgres" | "postgresql" => {}
        other => {
            return Err(StoreError::InvalidUrl(format!(
                "unsupported scheme `{other}`; expected postgres:// or sqlite://"
            )));
        }
    }
    let host = parsed.host_str().unwrap_or("localhost");
    let port = parsed.port().unwrap_or(5432);
    Ok(format!("postgres://{host}:{port}{}", parsed.path()))
}

fn url_is_sqlite_memory(target: &str) -> bool {
    target.contains(":memory:")
}

/// The file an SQLite URL names (`sqlite://path?…` or `sqlite:path`); `None` for another
/// database or an in-memory one.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then_some(path)
}

/// sqlx refuses to open a missing SQLite file unless asked to create it (`mode=rwc`).
fn sqlite_url_creating_file(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_an_sqlite_url_names() {
        assert_eq!(
            sqlite_file("sqlite://billing-sync.db"),
            Some("billing-sync.db")
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/b.db?mode=rw"),
            Some("/var/lib/b.db")
        );
        assert_eq!(sqlite_file("sqlite:b.db"), Some("b.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[test]
    fn describing_a_postgres_url_drops_the_password() {
        let target = describe_target("postgres://billing:s3cret@db.internal:6543/billing").unwrap();
        assert_eq!(target, "postgres://db.internal:6543/billing");
        assert!(!target.contains("s3cret"));
    }

    #[test]
    fn describing_an_unsupported_scheme_is_an_invalid_url() {
        let err = describe_target("mysql://root:pw@localhost/db").unwrap_err();
        assert!(
            err.to_string().contains("unsupported scheme `mysql`"),
            "{err}"
        );
        assert!(!err.to_string().contains("pw"));
    }

    #[test]
    fn sqlite_urls_are_opened_in_create_mode() {
        assert_eq!(
            sqlite_url_creating_file("sqlite://billing-sync.db"),
            "sqlite://billing-sync.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_creating_file("sqlite::memory:"),
            "sqlite::memory:"
        );
    }
}
