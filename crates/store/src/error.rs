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

    /// Whether the same statements may succeed if tried again: the database is unavailable,
    /// or it refused this attempt for a reason of the moment (a deadlock, a serialization
    /// failure, too many connections, SQLite busy or locked) rather than for the data itself.
    /// An event whose recording fails this way must be retried, never recorded as `failed`.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::InvalidUrl(_) => false,
            StoreError::Database(err) => is_retryable(err),
        }
    }
}

/// Whether the same statement may succeed when tried again: the connection failed, or the
/// database refused it for a reason of the moment.
pub(crate) fn is_retryable(err: &sea_orm::DbErr) -> bool {
    is_connection_error(err) || is_transient(err)
}

/// Whether the database refused a statement for a reason of the moment, so that the same
/// statement may succeed when tried again.
pub(crate) fn is_transient(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    let Some(code) = e.as_database_error().and_then(|db| db.code()) else {
        return false;
    };
    transient_code(&code)
}

/// PostgreSQL (a five-character SQLSTATE): 40001 serialization failure, 40P01 deadlock, 53300
/// too many connections, 55P03 lock not available. SQLite reports its (extended) result code as
/// a number of at most four digits, whose low byte is the primary code: 5 SQLITE_BUSY,
/// 6 SQLITE_LOCKED.
fn transient_code(code: &str) -> bool {
    if code.len() == 5 {
        return matches!(code, "40001" | "40P01" | "53300" | "55P03");
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
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

#[cfg(test)]
mod tests {
    use super::transient_code;

    #[test]
    fn moment_failures_are_transient_and_data_failures_are_not() {
        for code in [
            "40001", "40P01", "53300", "55P03", "5", "6", "261", "517", "262",
        ] {
            assert!(transient_code(code), "{code}");
        }
        // Unique and check violations, a bad value, SQLite's constraint and mismatch codes.
        for code in ["23505", "23514", "22P02", "22021", "19", "2067", "20", "1"] {
            assert!(!transient_code(code), "{code}");
        }
    }
}
