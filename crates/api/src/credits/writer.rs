//! The ledger's writer: requests that arrive while a batch is being decided are decided
//! together in the next one, so one organization's hot stream of consumes costs one read and
//! one write per batch instead of per call (the store's [`BatchingWriter`], as the
//! webhooks' group commit). Each request is answered only after the commit that holds its
//! transaction.

use std::collections::HashMap;

use billing_sync_credits::{Answer, Request};
use billing_sync_store::batching::{Batched, BatchingWriter};
use billing_sync_store::credits::OrganizationRequests;
use billing_sync_store::retry::WriteError;
use billing_sync_store::{Store, StoreError};

/// Most requests decided in one transaction.
const MAX_BATCH: usize = 512;

/// The handle requests use; the writer task ends when the last handle is dropped.
pub struct LedgerWriter {
    writer: BatchingWriter<Ledger>,
}

impl LedgerWriter {
    /// Starts the writer on the current tokio runtime. Credits per unit of a price are read
    /// from its catalog metadata `credits_metadata_key`.
    pub fn start(store: Store, credits_metadata_key: String) -> Self {
        let ledger = Ledger {
            store,
            credits_metadata_key,
        };
        // One writer: a second would race the first for the same organizations' accounts (two
        // writers on one queue measured slower, docs/proofs.md).
        LedgerWriter {
            writer: BatchingWriter::start(ledger, 1, MAX_BATCH),
        }
    }

    /// Decides `request` for `organization_id`; returns once its batch has committed.
    pub async fn submit(
        &self,
        organization_id: &str,
        request: Request,
    ) -> Result<Answer, WriteError> {
        self.writer
            .submit((organization_id.to_owned(), request))
            .await
    }
}

/// Requests of organizations, decided in one transaction, grouped by organization in arrival
/// order. When a batch fails for a reason of its own, each organization is decided alone, so
/// that one organization's trouble does not refuse the others.
struct Ledger {
    store: Store,
    credits_metadata_key: String,
}

impl Batched for Ledger {
    type Item = (String, Request);
    type Output = Answer;
    type Failure = Failure;

    const BATCH_SIZE_METRIC: &'static str = "billing_sync_credits_batch_size";

    async fn write(&self, requests: &[(String, Request)]) -> Result<Vec<Answer>, Failure> {
        // Decided by organization (its parts), each in arrival order; answered in the requests'.
        let parts = Self::parts(requests);
        let groups: Vec<OrganizationRequests> = parts
            .iter()
            .map(|part| OrganizationRequests {
                organization_id: requests[part[0]].0.clone(),
                requests: part
                    .iter()
                    .map(|&index| requests[index].1.clone())
                    .collect(),
            })
            .collect();
        let decided = decide(&self.store, &self.credits_metadata_key, &groups).await?;
        // Each group's answers come in its requests' order.
        let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
        for (part, group_answers) in parts.iter().zip(decided) {
            for (&index, answer) in part.iter().zip(group_answers) {
                answers[index] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.ok_or(Failure::Unanswered))
            .collect()
    }

    /// A batch refused for one organization's sake (its data, or its rules panicking).
    fn is_items_fault(failure: &Failure) -> bool {
        match failure {
            Failure::Store(err) => !err.retryable(),
            Failure::Panicked => true,
            Failure::Unanswered => false,
        }
    }

    /// Each organization's requests, in arrival order.
    fn parts(requests: &[(String, Request)]) -> Vec<Vec<usize>> {
        let mut parts: Vec<Vec<usize>> = Vec::new();
        let mut part_of: HashMap<&str, usize> = HashMap::new();
        for (index, (organization_id, _)) in requests.iter().enumerate() {
            let part = *part_of.entry(organization_id).or_insert_with(|| {
                parts.push(Vec::new());
                parts.len() - 1
            });
            parts[part].push(index);
        }
        parts
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
    /// The store answered fewer requests than it was given: a defect, nothing to retry here.
    #[error("the ledger answered fewer requests than it was given")]
    Unanswered,
}

impl From<Failure> for WriteError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(err) => err.into(),
            // Unknown: the caller may retry.
            Failure::Panicked | Failure::Unanswered => WriteError::Unavailable(failure.to_string()),
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
