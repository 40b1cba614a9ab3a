//! Group commit: events that arrive while a transaction is committing are recorded together in
//! the next one, so one commit (one fsync) makes many events durable. Each event is still
//! acknowledged only after the commit that holds its own rows.

use billing_sync_projection::{NewEvent, Plan};
use billing_sync_store::ledger::Recorded;
use billing_sync_store::retry::WriteError;
use billing_sync_store::{Store, StoreError};
use std::sync::Arc;

use billing_sync_store::sea_orm::DbBackend;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most events in one transaction.
const MAX_BATCH: usize = 64;

struct Job {
    event: NewEvent,
    plan: Plan,
    reply: oneshot::Sender<Result<Recorded, WriteError>>,
}

/// The handle requests use; the writer tasks end when the last handle is dropped.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writers on the current tokio runtime.
    pub(crate) fn start(store: Store) -> Self {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        let queue = Arc::new(Mutex::new(queue));
        let writers = match store.backend() {
            DbBackend::Postgres => POSTGRES_WRITERS,
            // SQLite runs one writing transaction at a time: a second writer would only wait.
            _ => 1,
        };
        for _ in 0..writers {
            tokio::spawn(write_batches(store.clone(), queue.clone()));
        }
        GroupCommit { jobs }
    }

    /// Records and applies `event`; returns once the transaction holding it has committed.
    pub(crate) async fn record(&self, event: NewEvent, plan: Plan) -> Result<Recorded, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { event, plan, reply })
            .await
            .map_err(|_| WriteError::Failed("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Failed("the writer dropped the event".into()))?
    }
}

/// Writers on PostgreSQL: while one batch waits on its round trips and its commit, the next
/// is already being written, so the service does not wait on itself. Two did as well as four
/// in the ingest bench (16 and 64 senders) with fewer, larger batches and less CPU per event.
/// Every writer takes its locks in one order (see `billing_sync_store::changeset`), so
/// concurrent batches wait for each other rather than deadlock, and a deadlock that happens
/// anyway is retried.
const POSTGRES_WRITERS: usize = 2;

/// One writer: takes every job waiting (up to [`MAX_BATCH`]) as one batch, writes it, answers.
async fn write_batches(store: Store, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let jobs = {
            // Whoever holds the queue takes the next batch; the others are writing theirs.
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        write_batch(&store, jobs).await;
    }
}

/// Records `jobs` in one transaction and answers each; when the batch breaks for a reason of
/// one of its events, records them one by one instead.
async fn write_batch(store: &Store, jobs: Vec<Job>) {
    metrics::histogram!("billing_sync_webhook_batch_size").record(jobs.len() as f64);
    let (batch, replies): (Vec<(NewEvent, Plan)>, Vec<_>) = jobs
        .into_iter()
        .map(|job| ((job.event, job.plan), job.reply))
        .unzip();
    match with_retries(|| store.record_batch(&batch)).await {
        Ok(recorded) => {
            for (reply, recorded) in replies.into_iter().zip(recorded) {
                let _ = reply.send(Ok(recorded));
            }
        }
        // Something in the batch broke the transaction for a reason of its own (not the
        // database going away, not a deadlock): record each event alone, isolated, so that
        // one bad event cannot fail the others.
        Err(err) if batch.len() > 1 && !err.retryable() => {
            tracing::warn!(error = %err, size = batch.len(), "batch failed; recording its events one by one");
            for ((event, plan), reply) in batch.into_iter().zip(replies) {
                let result = with_retries(|| store.record_and_apply(&event, &plan))
                    .await
                    .map_err(WriteError::from);
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            let err = WriteError::from(err);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Runs `write` through the store's retry loop, counting retries as webhook write retries.
async fn with_retries<T, F, Fut>(write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    billing_sync_store::retry::with_retries("billing_sync_webhook_write_retries_total", write).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_sync_projection::{Projection, Provider};
    use billing_sync_store::ledger::EventStatus;
    use billing_sync_store::sea_orm::{ConnectionTrait, EntityTrait};
    use billing_sync_testkit::scenarios::ScenarioEvent;
    use billing_sync_testkit::state::{ledger_row, migrated_store, new_event};
    use billing_sync_testkit::{TestDatabase, each_backend};
    use serde_json::json;

    each_backend!(
        one_event_failing_in_a_batch_does_not_undo_the_others,
        a_batch_holding_an_event_already_recorded_records_the_others,
    );

    /// The stored first name of user `id` (`None` when the user is not stored).
    async fn first_name(store: &Store, id: &str) -> Option<String> {
        billing_sync_store::entities::users::Entity::find_by_id(id.to_owned())
            .one(store.connection())
            .await
            .expect("query")
            .and_then(|user| user.first_name)
    }

    fn clerk_user_event(event_id: &str, user_id: &str, first_name: &str) -> NewEvent {
        new_event(&ScenarioEvent {
            provider: Provider::Clerk,
            event_id: event_id.into(),
            event_type: "user.created".into(),
            timestamp: 10,
            payload: json!({"type": "user.created", "object": "event",
                "data": {"id": user_id, "first_name": first_name, "updated_at": 10}}),
        })
    }

    /// On PostgreSQL a batch of new events is one message; one already in the ledger makes
    /// that message roll back, and the batch must then still be recorded, the repeat as a
    /// duplicate that changes nothing.
    async fn a_batch_holding_an_event_already_recorded_records_the_others(db: TestDatabase) {
        let store = migrated_store(&db.url).await;
        let projection = Projection {
            stripe_org_metadata_key: "organization_id".into(),
            client_reference_key: None,
        };
        let planned = |event: NewEvent| {
            let plan = projection.plan(&event);
            (event, plan)
        };
        let earlier = planned(clerk_user_event("msg_earlier", "user_e", "Ada"));
        assert_eq!(
            store
                .record_batch(std::slice::from_ref(&earlier))
                .await
                .expect("recorded"),
            vec![Recorded::New(EventStatus::Processed)]
        );
        // The repeat carries another name: applying it would show.
        let repeat = planned(clerk_user_event("msg_earlier", "user_e", "Changed"));
        let batch = [
            planned(clerk_user_event("msg_new_1", "user_n1", "Grace")),
            repeat,
            planned(clerk_user_event("msg_new_2", "user_n2", "Edsger")),
        ];
        assert_eq!(
            store.record_batch(&batch).await.expect("recorded"),
            vec![
                Recorded::New(EventStatus::Processed),
                Recorded::Duplicate,
                Recorded::New(EventStatus::Processed),
            ]
        );
        assert_eq!(
            first_name(&store, "user_n1").await.as_deref(),
            Some("Grace")
        );
        assert_eq!(
            first_name(&store, "user_n2").await.as_deref(),
            Some("Edsger")
        );
        assert_eq!(first_name(&store, "user_e").await.as_deref(), Some("Ada"));
        for event_id in ["msg_new_1", "msg_new_2"] {
            let row = ledger_row(&store, Provider::Clerk, event_id)
                .await
                .expect("a ledger row");
            assert_eq!(row.status, "processed");
        }
    }

    async fn one_event_failing_in_a_batch_does_not_undo_the_others(db: TestDatabase) {
        let store = migrated_store(&db.url).await;
        // Make the database refuse subscription `sub_g` for its values (a constraint the event
        // breaks: the event's own fault, not the database's trouble of the moment).
        let refuse = match store.backend() {
            DbBackend::Postgres => {
                "ALTER TABLE stripe_subscriptions ADD CONSTRAINT not_sub_g CHECK (id <> 'sub_g')"
            }
            _ => {
                "CREATE TRIGGER not_sub_g BEFORE INSERT ON stripe_subscriptions \
                 WHEN NEW.id = 'sub_g' BEGIN SELECT RAISE(ABORT, 'not sub_g'); END"
            }
        };
        store
            .connection()
            .execute_unprepared(refuse)
            .await
            .expect("refuse one subscription");
        let event = |provider, event_id: &str, event_type: &str, payload| {
            new_event(&ScenarioEvent {
                provider,
                event_id: event_id.into(),
                event_type: event_type.into(),
                timestamp: 10,
                payload,
            })
        };
        // An event that touches no subscription row, and one that does.
        let user = clerk_user_event("msg_user_g", "user_g", "Grace");
        let subscription = event(
            Provider::Stripe,
            "evt_sub_g",
            "customer.subscription.updated",
            json!({"id": "evt_sub_g", "type": "customer.subscription.updated", "created": 10,
                "data": {"object": {"id": "sub_g", "customer": "cus_g", "status": "active"}}}),
        );
        let projection = Projection {
            stripe_org_metadata_key: "organization_id".into(),
            client_reference_key: None,
        };
        let (jobs, answers): (Vec<Job>, Vec<_>) = [user.clone(), subscription, user]
            .into_iter()
            .map(|event| {
                let (reply, answer) = oneshot::channel();
                let plan = projection.plan(&event);
                (Job { event, plan, reply }, answer)
            })
            .unzip();
        // The writer's own step, on one batch of three.
        write_batch(&store, jobs).await;
        let mut recorded = Vec::new();
        for answer in answers {
            recorded.push(answer.await.expect("answered").expect("recorded"));
        }
        assert_eq!(
            recorded,
            vec![
                Recorded::New(EventStatus::Processed),
                Recorded::New(EventStatus::Failed),
                Recorded::Duplicate,
            ]
        );
        assert_eq!(
            first_name(&store, "user_g").await.as_deref(),
            Some("Grace"),
            "the other event's row is committed"
        );
        let failed = ledger_row(&store, Provider::Stripe, "evt_sub_g")
            .await
            .expect("row");
        assert_eq!(failed.status, "failed");
        assert!(failed.error.is_some_and(|e| e.contains("database error")));
    }
}
