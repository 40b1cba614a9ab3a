//! The one batching writer, of webhook events (group commit) and of credit requests alike:
//! requests that arrive while a batch is being written are written together in the next one,
//! so one transaction (one lock, one commit, one fsync) serves many; each request is answered
//! only after the commit that holds it. When a batch fails for a reason of its requests (their
//! data, not the database's trouble of the moment), it is written again in parts, so that only
//! the part at fault is refused. What a batch is, how it is written and split, is the user's
//! ([`Batched`]); the channel, the draining, the split and the answers are here.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::retry::WriteError;

/// What a [`BatchingWriter`] writes.
pub trait Batched: Send + Sync + 'static {
    /// What a caller submits.
    type Item: Send + 'static;
    /// What each is answered once committed.
    type Output: Send + 'static;
    /// Why a batch (or a part) was not written, after the retries it deserved.
    type Failure: std::fmt::Display + Into<WriteError> + Send;

    /// The histogram the batches' sizes are recorded in.
    const BATCH_SIZE_METRIC: &'static str;

    /// Writes `items` in one transaction: one output per item, in their order.
    fn write(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Output>, Self::Failure>> + Send;

    /// Whether `failure` is of the batch's items rather than of the database: the batch is then
    /// written again in its [`Batched::parts`].
    fn is_items_fault(failure: &Self::Failure) -> bool;

    /// The parts a batch is written again in, as indices into `items` (each in order): each
    /// item alone unless the items say otherwise (one organization's requests together).
    fn parts(items: &[Self::Item]) -> Vec<Vec<usize>> {
        (0..items.len()).map(|index| vec![index]).collect()
    }

    /// Writes one part after its batch failed: as a batch unless a part has a way of its own
    /// (an event alone is recorded `failed` when its change cannot be applied).
    fn write_part(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Output>, Self::Failure>> + Send {
        self.write(items)
    }
}

type Reply<B> = oneshot::Sender<Result<<B as Batched>::Output, WriteError>>;

/// What the writers take their batches from, one at a time.
type Queue<B> = Arc<Mutex<mpsc::Receiver<(<B as Batched>::Item, Reply<B>)>>>;

/// The handle callers submit through; the writer tasks end when the last handle is dropped.
pub struct BatchingWriter<B: Batched> {
    jobs: mpsc::Sender<(B::Item, Reply<B>)>,
}

impl<B: Batched> BatchingWriter<B> {
    /// Starts `writers` tasks on the current tokio runtime, each taking every request waiting
    /// (up to `max_batch`) as its next batch: while one waits on its round trips and its commit,
    /// another is already writing.
    pub fn start(batched: B, writers: usize, max_batch: usize) -> Self {
        let (jobs, queue) = mpsc::channel(4 * max_batch);
        let queue = Arc::new(Mutex::new(queue));
        let batched = Arc::new(batched);
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(batched.clone(), queue.clone(), max_batch));
        }
        BatchingWriter { jobs }
    }

    /// Writes `item` with whatever else is waiting; returns once its batch has committed.
    pub async fn submit(&self, item: B::Item) -> Result<B::Output, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((item, reply))
            .await
            .map_err(|_| WriteError::Failed("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Failed("the writer dropped the request".into()))?
    }
}

async fn write_batches<B: Batched>(batched: Arc<B>, queue: Queue<B>, max_batch: usize) {
    loop {
        let (items, replies): (Vec<_>, Vec<_>) = {
            // Whoever holds the queue takes the next batch; the others are writing theirs.
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs.into_iter().unzip()
        };
        for (reply, result) in replies.into_iter().zip(write_batch(&*batched, items).await) {
            // A caller that went away needs no answer.
            let _ = reply.send(result);
        }
    }
}

/// Writes `items` as one batch and answers each: when the batch fails for a reason of its
/// items, each part again alone ([`Batched::parts`]); when it fails otherwise, every item
/// with the failure.
pub async fn write_batch<B: Batched>(
    batched: &B,
    items: Vec<B::Item>,
) -> Vec<Result<B::Output, WriteError>> {
    metrics::histogram!(B::BATCH_SIZE_METRIC).record(items.len() as f64);
    let failure = match batched.write(&items).await {
        Ok(outputs) => return outputs.into_iter().map(Ok).collect(),
        Err(failure) => failure,
    };
    let parts = B::parts(&items);
    if parts.len() < 2 || !B::is_items_fault(&failure) {
        let err: WriteError = failure.into();
        return items.iter().map(|_| Err(err.clone())).collect();
    }
    tracing::warn!(error = %failure, size = items.len(), parts = parts.len(), "batch failed; writing its parts one by one");
    let mut results: Vec<Result<B::Output, WriteError>> = items
        .iter()
        .map(|_| Err(WriteError::Failed("the request was in no part".into())))
        .collect();
    let mut unwritten: Vec<Option<B::Item>> = items.into_iter().map(Some).collect();
    for part in parts {
        let (indices, part_items): (Vec<usize>, Vec<B::Item>) = part
            .into_iter()
            .filter_map(|index| Some((index, unwritten.get_mut(index)?.take()?)))
            .unzip();
        match batched.write_part(&part_items).await {
            Ok(outputs) => {
                for (index, output) in indices.into_iter().zip(outputs) {
                    results[index] = Ok(output);
                }
            }
            Err(failure) => {
                let err: WriteError = failure.into();
                for index in indices {
                    results[index] = Err(err.clone());
                }
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers written as a batch, answered doubled; a negative number breaks its batch for a
    /// reason of its own, a zero as the database would (a reason of the moment). Parts: by
    /// parity. Every write's batch is kept.
    #[derive(Default)]
    struct Doubling {
        writes: Arc<std::sync::Mutex<Vec<Vec<i64>>>>,
    }

    #[derive(Debug, thiserror::Error)]
    enum Refused {
        #[error("a negative number")]
        Negative,
        #[error("the database is away")]
        Away,
    }

    impl From<Refused> for WriteError {
        fn from(refused: Refused) -> Self {
            match refused {
                Refused::Negative => WriteError::Failed(refused.to_string()),
                Refused::Away => WriteError::Unavailable(refused.to_string()),
            }
        }
    }

    impl Batched for Doubling {
        type Item = i64;
        type Output = i64;
        type Failure = Refused;

        const BATCH_SIZE_METRIC: &'static str = "test_batch_size";

        async fn write(&self, items: &[i64]) -> Result<Vec<i64>, Refused> {
            self.writes.lock().expect("lock").push(items.to_vec());
            if items.contains(&0) {
                Err(Refused::Away)
            } else if items.iter().any(|item| *item < 0) {
                Err(Refused::Negative)
            } else {
                Ok(items.iter().map(|item| item * 2).collect())
            }
        }

        fn is_items_fault(failure: &Refused) -> bool {
            matches!(failure, Refused::Negative)
        }

        fn parts(items: &[i64]) -> Vec<Vec<usize>> {
            let by = |odd: bool| (0..items.len()).filter(move |&i| (items[i] % 2 != 0) == odd);
            vec![by(false).collect(), by(true).collect()]
        }
    }

    #[tokio::test]
    async fn a_batch_failing_for_its_items_is_written_again_in_parts_and_only_the_bad_part_refused()
    {
        let writer = Doubling::default();
        let results = write_batch(&writer, vec![2, 3, -5, 4, 7]).await;
        let answers: Vec<Option<i64>> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
        // The even part is written; the odd part holds the negative number and is refused.
        assert_eq!(answers, vec![Some(4), None, None, Some(8), None]);
        assert!(matches!(results[1], Err(WriteError::Failed(_))));
        assert_eq!(
            *writer.writes.lock().expect("lock"),
            vec![vec![2, 3, -5, 4, 7], vec![2, 4], vec![3, -5, 7]]
        );
    }

    #[tokio::test]
    async fn a_batch_failing_for_the_database_refuses_every_item_as_retryable_without_parts() {
        let writer = Doubling::default();
        let results = write_batch(&writer, vec![2, 0, 3]).await;
        assert!(
            results
                .iter()
                .all(|result| matches!(result, Err(WriteError::Unavailable(_))))
        );
        assert_eq!(writer.writes.lock().expect("lock").len(), 1);
    }

    /// Requests submitted while the writer has not run yet are one batch, each answered its
    /// own output (the test's runtime is one thread: the writer runs when the test waits).
    #[tokio::test]
    async fn requests_waiting_together_are_one_batch_each_answered_its_own() {
        let writer = Doubling::default();
        let writes = writer.writes.clone();
        let batching = BatchingWriter::start(writer, 1, 4);
        // `join_all` sends every request before the test waits: only then does the writer run.
        let answers: Vec<i64> =
            futures::future::join_all([1, 2, 3, 4, 5, 6].map(|item| batching.submit(item)))
                .await
                .into_iter()
                .map(|answer| answer.expect("written"))
                .collect();
        assert_eq!(answers, vec![2, 4, 6, 8, 10, 12]);
        // At most four at a time: the first four together, then the other two.
        assert_eq!(
            *writes.lock().expect("lock"),
            vec![vec![1, 2, 3, 4], vec![5, 6]]
        );
    }
}
