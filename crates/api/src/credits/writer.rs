//! The ledger's writer: requests that arrive while a batch is being decided are decided
//! together in the next one, so one organization's hot stream of consumes costs one lock, one
//! load and one commit per batch instead of per call (like the webhooks' group commit). Each
//! request is answered only after the commit that holds its transaction.

use std::collections::HashMap;

use billing_sync_credits::{Answer, Request};
use billing_sync_store::credits::OrganizationRequests;
use billing_sync_store::retry::WriteError;
use billing_sync_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most requests decided in one transaction.
const MAX_BATCH: usize = 512;

struct Job {
    organization_id: String,
    request: Request,
    reply: oneshot::Sender<Result<Answer, WriteError>>,
}

/// The handle requests use; the writer task ends when the last handle is dropped.
pub struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Starts the writer on the current tokio runtime. Credits per unit of a price are read
    /// from its catalog metadata `credits_metadata_key`.
    pub fn start(store: Store, credits_metadata_key: String) -> Self {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(store, credits_metadata_key, queue));
        LedgerWriter { jobs }
    }

    /// Decides `request` for `organization_id`; returns once its batch has committed.
    pub async fn submit(
        &self,
        organization_id: &str,
        request: Request,
    ) -> Result<Answer, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                organization_id: organization_id.to_owned(),
                request,
                reply,
            })
            .await
            .map_err(|_| WriteError::Failed("the ledger writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Failed("the ledger writer dropped the request".into()))?
    }
}

async fn write_batches(store: Store, key: String, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        write_batch(&store, &key, jobs).await;
    }
}

/// Decides `jobs` in one transaction, grouped by organization in arrival order, and answers
/// each. When the batch fails for a reason of its own, each organization is decided alone, so
/// that one organization's trouble does not refuse the others.
async fn write_batch(store: &Store, key: &str, jobs: Vec<Job>) {
    metrics::histogram!("billing_sync_credits_batch_size").record(jobs.len() as f64);
    let mut groups: Vec<(OrganizationRequests, Vec<oneshot::Sender<_>>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for job in jobs {
        let index = *group_of
            .entry(job.organization_id.clone())
            .or_insert_with(|| {
                groups.push((
                    OrganizationRequests {
                        organization_id: job.organization_id,
                        requests: Vec::new(),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            });
        groups[index].0.requests.push(job.request);
        groups[index].1.push(job.reply);
    }
    let (batch, replies): (Vec<_>, Vec<_>) = groups.into_iter().unzip();
    match decide(store, key, &batch).await {
        // A batch refused for one organization's sake (its data, or its rules panicking) is
        // decided again one organization at a time: only the organization at fault is refused.
        Err(failure) if batch.len() > 1 && failure.is_one_organizations() => {
            tracing::warn!(error = %failure, "credits batch failed; deciding its organizations one by one");
            for (organization, replies) in batch.into_iter().zip(replies) {
                let result = decide(store, key, std::slice::from_ref(&organization)).await;
                answer(result, vec![replies]);
            }
        }
        result => answer(result, replies),
    }
}

/// Why a batch was not decided.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The database refused, after the retries it deserved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rules panicked: an overflow that their bounds should make impossible (overflow
    /// checks are on in release builds). The transaction was dropped, never committed.
    #[error("the credit rules stopped on this request (an overflow?)")]
    Panicked,
}

impl Failure {
    /// Whether the failure belongs to one organization of the batch, so that the others may
    /// be decided without it.
    fn is_one_organizations(&self) -> bool {
        match self {
            Failure::Store(err) => !err.retryable(),
            Failure::Panicked => true,
        }
    }
}

impl From<Failure> for WriteError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(err) => err.into(),
            // Unknown: the caller may retry.
            Failure::Panicked => WriteError::Unavailable(failure.to_string()),
        }
    }
}

/// Decides `batch`, retrying what the database may take later. A panic in the rules fails this
/// batch's callers rather than stopping the writer for everyone.
async fn decide(
    store: &Store,
    key: &str,
    batch: &[OrganizationRequests],
) -> Result<Vec<Vec<Answer>>, Failure> {
    use futures::FutureExt;
    let decided =
        billing_sync_store::retry::with_retries("billing_sync_credits_write_retries_total", || {
            store.decide_credits(batch, key, super::unix_now())
        });
    match std::panic::AssertUnwindSafe(decided).catch_unwind().await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::error!("credits: {}", Failure::Panicked);
            Err(Failure::Panicked)
        }
    }
}

fn answer(
    result: Result<Vec<Vec<Answer>>, Failure>,
    replies: Vec<Vec<oneshot::Sender<Result<Answer, WriteError>>>>,
) {
    match result {
        Ok(answers) => {
            for (answers, replies) in answers.into_iter().zip(replies) {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    let _ = reply.send(Ok(answer));
                }
            }
        }
        Err(err) => {
            let err = WriteError::from(err);
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
