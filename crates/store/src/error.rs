use thiserror::Error;

/// What can go wrong talking to the database, in terms a caller can act on.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL could not be used; the message never contains the password.
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(String),
    /// An SQLite URL names a file that does not exist, for a command that only uses a database
    /// (`serve` and `migrate up` create it).
    #[error("no database at {0}; run `billing-sync migrate up` or set DATABASE_URL")]
    NoDatabase(String),
    /// The database did not answer (down, unreachable, refused): worth retrying later.
    #[error("database at {target} is unavailable (is it running, and does DATABASE_URL name it?)")]
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

    /// Whether the same statements may succeed if tried again. Only an error that the data
    /// itself causes (see [`is_the_datas_fault`]) is certain to repeat; everything else (the
    /// database unavailable, a deadlock, a statement timeout, a full disk, out of memory, an
    /// I/O error, and any error not known to be permanent) is the database's trouble of the
    /// moment. An event whose recording fails this way must be retried, never recorded as
    /// `failed`: an unknown error must not turn into an acknowledged loss.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::InvalidUrl(_) | StoreError::NoDatabase(_) => false,
            StoreError::Database(err) => is_retryable(err),
        }
    }
}

/// Whether the same statement may succeed when tried again: anything but an error the data
/// itself causes.
pub(crate) fn is_retryable(err: &sea_orm::DbErr) -> bool {
    !is_the_datas_fault(err)
}

/// Whether the database refused a statement because of the values it was given, so that the
/// same statement with the same values will be refused again, whatever the moment.
pub(crate) fn is_the_datas_fault(err: &sea_orm::DbErr) -> bool {
    database_code(err).is_some_and(|code| datas_fault_code(&code))
}

/// The code the database gave for refusing a statement: PostgreSQL's SQLSTATE, or SQLite's
/// (extended) result code; `None` when the statement did not reach the database's verdict.
pub(crate) fn database_code(err: &sea_orm::DbErr) -> Option<std::borrow::Cow<'_, str>> {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    e.as_database_error()?.code()
}

/// The error codes a statement's values cause. PostgreSQL (a five-character SQLSTATE): class
/// 22, data exception (a value out of range, not valid text in the encoding, a malformed
/// literal), and class 23, integrity constraint violation. SQLite reports its (extended)
/// result code as a number whose low byte is the primary code: 18 SQLITE_TOOBIG, 19
/// SQLITE_CONSTRAINT, 20 SQLITE_MISMATCH. Every other code (a timeout, a full disk, out of
/// memory, an I/O error, a busy or locked database, an undefined table) is not listed, and so
/// is retried.
fn datas_fault_code(code: &str) -> bool {
    if code.len() == 5 {
        return code.starts_with("22") || code.starts_with("23");
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 18..=20))
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
            ) || database_code(err)
                // PostgreSQL class 08 (connection exception), 57P01..03 (admin shutdown,
                // crash shutdown, cannot connect now): the server is going away or not back yet.
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::datas_fault_code;

    #[test]
    fn only_errors_the_data_causes_are_permanent() {
        // Bad values and broken constraints: PostgreSQL's classes 22 and 23, SQLite's
        // TOOBIG, CONSTRAINT (and its extended codes) and MISMATCH.
        for code in [
            "22P02", "22P05", "22003", "22008", "22021", "23505", "23514", "18", "19", "2067", "20",
        ] {
            assert!(datas_fault_code(code), "{code}");
        }
        // The database's trouble of the moment: a deadlock, a serialization failure, too many
        // connections, a lock not available, a statement timeout, a full disk, out of memory,
        // an I/O error, an undefined table (a schema out of step), SQLite's generic error,
        // busy, locked, I/O error and full, and codes nobody listed.
        for code in [
            "40001", "40P01", "53300", "55P03", "57014", "53100", "53200", "58030", "42P01",
            "XX000", "1", "5", "6", "261", "517", "262", "10", "13", "99999",
        ] {
            assert!(!datas_fault_code(code), "{code}");
        }
    }
}
