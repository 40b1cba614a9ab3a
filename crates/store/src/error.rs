use thiserror::Error;

/// What can go wrong talking to the database, in terms a caller can act on.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL could not be used; the message never contains the password.
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(String),
    /// The database did not answer (down, unreachable, refused): worth retrying later.
    #[error("database at {target} is unavailable")]
    Unavailable {
        /// Where we tried to connect, without credentials.
        target: String,
        /// What the driver said.
        #[source]
        source: sea_orm::DbErr,
    },
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl StoreError {
    /// What is wrong, without the "DATABASE_URL is invalid" prefix, for configuration errors.
    pub fn reason(&self) -> String {
        match self {
            StoreError::InvalidUrl(reason) => reason.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the error means the database cannot be reached right now (so a webhook sender
    /// should be told to retry), as opposed to a query being wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::InvalidUrl(_) => false,
            StoreError::Database(err) => is_connection_error(err),
        }
    }
}

/// Whether a SeaORM error is the connection failing rather than the statement.
pub(crate) fn is_connection_error(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                e.as_ref(),
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ) || e
                .as_database_error()
                .and_then(|db| db.code())
                // PostgreSQL class 08 (connection exception), 57P01..03 (admin shutdown,
                // crash shutdown, cannot connect now): the server is going away or not back yet.
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}
