//! Group commit: events that arrive while a transaction is committing are recorded together in
//! the next one, so one commit (one fsync) makes many events durable. Each event is still
//! acknowledged only after the commit that holds its own rows. The batching is the store's
//! ([`BatchingWriter`]); what a batch of events is, and how one is recorded alone, is here.

use billing_sync_projection::{NewEvent, Plan};
use billing_sync_store::batching::{Batched, BatchingWriter};
use billing_sync_store::ledger::Recorded;
use billing_sync_store::retry::WriteError;
use billing_sync_store::{Store, StoreError};

use billing_sync_store::sea_orm::DbBackend;

/// Most events in one transaction.
const MAX_BATCH: usize = 64;

/// The handle requests use; the writer tasks end when the last handle is dropped.
pub(crate) struct GroupCommit {
    writer: BatchingWriter<Events>,
}

impl GroupCommit {
    /// Starts the writers on the current tokio runtime.
    pub(crate) fn start(store: Store) -> Self {
        let writers = match store.backend() {
            DbBackend::Postgres => POSTGRES_WRITERS,
            // SQLite runs one writing transaction at a time: a second writer would only wait.
            _ => 1,
        };
        GroupCommit {
            writer: BatchingWriter::start(Events { store }, writers, MAX_BATCH),
        }
    }

    /// Records and applies `event`; returns once the transaction holding it has committed.
    pub(crate) async fn record(&self, event: NewEvent, plan: Plan) -> Result<Recorded, WriteError> {
        self.writer.submit((event, plan)).await
    }
}

/// Writers on PostgreSQL: while one batch waits on its round trips and its commit, the next
/// is already being written, so the service does not wait on itself. Two did as well as four
/// in the ingest bench (16 and 64 senders) with fewer, larger batches and less CPU per event.
/// Every writer takes its locks in one order (see `billing_sync_store::changeset`), so
/// concurrent batches wait for each other rather than deadlock, and a deadlock that happens
/// anyway is retried.
const POSTGRES_WRITERS: usize = 2;

/// Verified events and their plans, recorded and applied in one transaction; when something in
/// a batch breaks it for a reason of its own (not the database going away, not a deadlock),
/// each event alone, isolated, so that one bad event cannot fail the others.
struct Events {
    store: Store,
}

impl Batched for Events {
    type Item = (NewEvent, Plan);
    type Output = Recorded;
    type Failure = StoreError;

    const BATCH_SIZE_METRIC: &'static str = "billing_sync_webhook_batch_size";

    async fn write(&self, events: &[(NewEvent, Plan)]) -> Result<Vec<Recorded>, StoreError> {
        with_retries(|| self.store.record_batch(events)).await
    }

    fn is_items_fault(failure: &StoreError) -> bool {
        !failure.retryable()
    }

    /// An event alone is recorded even when its change cannot be applied: `failed`, for a
    /// replay.
    async fn write_part(&self, events: &[(NewEvent, Plan)]) -> Result<Vec<Recorded>, StoreError> {
        let mut recorded = Vec::with_capacity(events.len());
        for (event, plan) in events {
            recorded.push(with_retries(|| self.store.record_and_apply(event, plan)).await?);
        }
        Ok(recorded)
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
        let batch: Vec<(NewEvent, Plan)> = [user.clone(), subscription, user]
            .into_iter()
            .map(|event| {
                let plan = projection.plan(&event);
                (event, plan)
            })
            .collect();
        // The writer's own step, on one batch of three.
        let recorded: Vec<Recorded> = billing_sync_store::batching::write_batch(
            &Events {
                store: store.clone(),
            },
            batch,
        )
        .await
        .into_iter()
        .map(|result| result.expect("recorded"))
        .collect();
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
