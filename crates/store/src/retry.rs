//! Trying a write again when the database refused it for a reason of the moment: the one
//! retry loop of every writer (webhook group commit, the credit ledger).

use std::time::Duration;

use crate::StoreError;

/// Why a writer (webhook group commit, the credit ledger's) did not write a request, as its
/// caller must act on it, shareable between the requests of one batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database is unavailable, or kept refusing the batch for reasons of the moment
    /// (deadlocks, serialization failures, busy): nothing was written; the sender should retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for WriteError {
    fn from(err: StoreError) -> Self {
        if err.retryable() {
            WriteError::Unavailable(err.to_string())
        } else {
            WriteError::Failed(err.to_string())
        }
    }
}

/// How many times a write refused for a reason of the moment is tried before the caller is
/// told to retry (503): a deadlock or serialization failure clears at once, a restarting
/// database within the backoff, and a longer outage is the sender's to wait out.
pub const ATTEMPTS: u32 = 5;

/// Runs `write` until it succeeds, fails for a reason of its own ([`StoreError::retryable`]
/// says no), or has been tried [`ATTEMPTS`] times, sleeping between tries with exponential
/// backoff and full jitter so that writers that collided do not collide again. Each retry is
/// counted in the counter `retries_metric`.
pub async fn with_retries<T, F, Fut>(
    retries_metric: &'static str,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(err) if err.retryable() && attempt < ATTEMPTS => {
                let ceiling = Duration::from_millis(10 << attempt);
                let pause = ceiling.mul_f64(rand::random::<f64>());
                tracing::warn!(error = %err, attempt, ?pause, "write refused for the moment; retrying");
                metrics::counter!(retries_metric).increment(1);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
