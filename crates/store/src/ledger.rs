//! The ledger of webhook deliveries, and recording an event together with its changes in one
//! transaction.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sea_orm::sea_query::{
    Expr, ExprTrait, InsertStatement, OnConflict, PostgresQueryBuilder, Query,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use billing_sync_projection::{NewEvent, Plan};

use crate::Store;
use crate::changeset::{ChangeSet, apply_set, apply_set_at_once, write_apply_set};
use crate::entities::webhook_events;
use crate::error::StoreError;

/// The ledger status and error that recording `plan` leaves (before any apply failure).
fn outcome(plan: &Plan) -> (EventStatus, Option<String>) {
    match plan {
        Plan::Apply(_) => (EventStatus::Processed, None),
        Plan::Ignore => (EventStatus::Ignored, None),
        Plan::Fail(reason) => (EventStatus::Failed, Some(reason.clone())),
    }
}

/// The ledger status of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStatus {
    /// Applied.
    Processed,
    /// Recorded, not projected.
    Ignored,
    /// Could not be applied; see `error`, replay after a fix.
    Failed,
}

impl EventStatus {
    /// The text stored in `webhook_events.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Processed => "processed",
            EventStatus::Ignored => "ignored",
            EventStatus::Failed => "failed",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "processed" => Some(EventStatus::Processed),
            "ignored" => Some(EventStatus::Ignored),
            "failed" => Some(EventStatus::Failed),
            _ => None,
        }
    }
}

/// What recording an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// First delivery: recorded with this status (and committed).
    New(EventStatus),
    /// The ledger already holds this event: nothing changed.
    Duplicate,
}

/// Which ledger rows to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this status.
    pub status: Option<EventStatus>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// At most this many, newest first.
    pub limit: u64,
}

impl Store {
    /// Records `event` in the ledger and applies `plan` in the same transaction, committing
    /// before it returns: when this returns `Ok`, the event is durable and may be acknowledged.
    /// A repeated delivery is told by its ledger row already existing, and changes nothing.
    ///
    /// When applying fails for a reason other than the database being unavailable, the
    /// changes are rolled back and the event is recorded as `failed` instead, so that a replay
    /// can apply it after a fix.
    pub async fn record_and_apply(
        &self,
        event: &NewEvent,
        plan: &Plan,
    ) -> Result<Recorded, StoreError> {
        let mut recorded = self.record_batch(&[(event.clone(), plan.clone())]).await?;
        Ok(recorded.remove(0))
    }

    /// [`Store::record_and_apply`] for several events in one transaction (group commit): one
    /// commit makes them all durable, and none may be acknowledged before it returns `Ok`.
    /// On `Err` nothing was committed; [`StoreError::retryable`] tells whether trying the same
    /// batch again may succeed.
    ///
    /// The batch is recorded as sets: one multi-row ledger insert, which tells which events
    /// are new (a repeat inside the batch is folded in memory first), then the new events'
    /// changes reduced per (table, id) and applied with one guarded upsert per table
    /// ([`ChangeSet`]). An event whose changes the database refuses therefore fails the whole
    /// batch; the caller then records its events one by one. A single event that fails that
    /// way for a reason of its own is recorded here in a savepoint, as `failed`.
    pub async fn record_batch(
        &self,
        batch: &[(NewEvent, Plan)],
    ) -> Result<Vec<Recorded>, StoreError> {
        match self.try_record_batch(batch).await {
            Err(err) if batch.len() == 1 && !crate::error::is_retryable(&err) => self
                .record_isolated(&batch[0].0, &batch[0].1)
                .await
                .map(|recorded| vec![recorded])
                .map_err(|err| self.classify(err)),
            result => result.map_err(|err| self.classify(err)),
        }
    }

    async fn try_record_batch(&self, batch: &[(NewEvent, Plan)]) -> Result<Vec<Recorded>, DbErr> {
        // The first delivery of each event in the batch; a repeat is a duplicate of it.
        let mut first_of: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
        let repeats: Vec<bool> = batch
            .iter()
            .enumerate()
            .map(|(index, (event, _))| {
                *first_of
                    .entry((event.provider.as_str(), event.event_id.as_str()))
                    .or_insert(index)
                    != index
            })
            .collect();
        let firsts = batch
            .iter()
            .zip(&repeats)
            .filter(|(_, repeat)| !**repeat)
            .map(|((event, plan), _)| (event, plan));
        if self.backend() == DbBackend::Postgres {
            match record_new_batch_at_once(self.connection(), firsts.clone()).await {
                Ok(()) => return Ok(recorded(batch, repeats.iter().map(|repeat| !repeat))),
                Err(err) if crate::error::is_retryable(&err) => return Err(err),
                // An event of the batch is already in the ledger (a provider's retry): the
                // statement-by-statement path below tells which.
                Err(err) if is_duplicate_check(&err) => {
                    metrics::counter!(BATCH_FALLBACKS, "cause" => "duplicate").increment(1);
                    tracing::debug!(
                        "batch holds an event already recorded; recording it statement by statement"
                    );
                }
                // The database refused a value of the batch: the statement path isolates it.
                // This should not happen, and costs round trips, so it is told.
                Err(err) => {
                    metrics::counter!(BATCH_FALLBACKS, "cause" => "refused").increment(1);
                    tracing::warn!(error = %err, "batch message refused; recording it statement by statement");
                }
            }
        }
        let txn = self.connection().begin().await?;
        let inserted = insert_ledger_rows(&txn, firsts).await?;
        // Which deliveries of the batch are new events (the rest are duplicates), decided once.
        let new: Vec<bool> = batch
            .iter()
            .zip(&repeats)
            .map(|((event, _), repeat)| {
                !repeat
                    && inserted
                        .contains(&(event.provider.as_str().to_owned(), event.event_id.clone()))
            })
            .collect();
        let changes = ChangeSet::of(
            batch
                .iter()
                .zip(&new)
                .filter(|(_, new)| **new)
                .flat_map(|((_, plan), _)| plan.changes()),
        );
        apply_set_at_once(&txn, &changes).await?;
        txn.commit().await?;
        Ok(recorded(batch, new))
    }

    /// Records one event and applies its plan in a savepoint, so that a failure to apply
    /// leaves the ledger row (marked `failed`) and nothing else. A failure for a reason of the
    /// moment (the connection, a deadlock) is returned instead: the event must be retried.
    async fn record_isolated(&self, event: &NewEvent, plan: &Plan) -> Result<Recorded, DbErr> {
        let txn = self.connection().begin().await?;
        let inserted = insert_ledger_rows(&txn, [(event, plan)]).await?;
        if inserted.is_empty() {
            return Ok(Recorded::Duplicate);
        }
        let Plan::Apply(changes) = plan else {
            txn.commit().await?;
            return Ok(Recorded::New(outcome(plan).0));
        };
        let savepoint = txn.begin().await?;
        let recorded = match apply_set(&savepoint, &ChangeSet::of(changes)).await {
            Ok(_) => {
                savepoint.commit().await?;
                Recorded::New(EventStatus::Processed)
            }
            Err(err) if crate::error::is_retryable(&err) => return Err(err),
            Err(err) => {
                savepoint.rollback().await?;
                tracing::error!(
                    provider = event.provider.as_str(),
                    event_id = %event.event_id,
                    error = %err,
                    "applying the event failed; recording it as failed"
                );
                webhook_events::Entity::update_many()
                    .col_expr(
                        webhook_events::Column::Status,
                        Expr::val(EventStatus::Failed.as_str()),
                    )
                    .col_expr(
                        webhook_events::Column::Error,
                        Expr::val(format!("database error while applying: {err}")),
                    )
                    .filter(webhook_events::Column::Provider.eq(event.provider.as_str()))
                    .filter(webhook_events::Column::EventId.eq(event.event_id.as_str()))
                    .exec(&txn)
                    .await?;
                Recorded::New(EventStatus::Failed)
            }
        };
        txn.commit().await?;
        Ok(recorded)
    }

    /// Applies a recorded event again with `plan` (recomputed from its payload by the caller)
    /// and updates its ledger row, in one transaction. The guarded upserts make this obey the
    /// same ordering rules as live delivery.
    pub async fn replay(
        &self,
        event: &webhook_events::Model,
        plan: &Plan,
    ) -> Result<EventStatus, StoreError> {
        let result: Result<EventStatus, DbErr> = async {
            let txn = self.connection().begin().await?;
            if let Plan::Apply(changes) = plan {
                apply_set(&txn, &ChangeSet::of(changes)).await?;
            }
            let (status, error) = outcome(plan);
            webhook_events::Entity::update_many()
                .col_expr(webhook_events::Column::Status, Expr::val(status.as_str()))
                .col_expr(webhook_events::Column::Error, Expr::val(error))
                .col_expr(webhook_events::Column::ProcessedAt, Expr::val(Utc::now()))
                .col_expr(
                    webhook_events::Column::Attempts,
                    Expr::col(webhook_events::Column::Attempts).add(1),
                )
                .filter(webhook_events::Column::Id.eq(event.id))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            Ok(status)
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// Deletes `processed` and `ignored` ledger rows received before `before`, `batch` rows per
    /// statement so that no statement holds locks for long; `failed` rows are kept for replay.
    /// Returns how many rows were deleted. Ordering stays safe: projected rows keep their own
    /// ordering keys, so a pruned event delivered again cannot overwrite newer state.
    pub async fn prune_events(
        &self,
        before: chrono::DateTime<Utc>,
        batch: u64,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let ids = webhook_events::Entity::find()
                .select_only()
                .column(webhook_events::Column::Id)
                .filter(webhook_events::Column::Status.is_in([
                    EventStatus::Processed.as_str(),
                    EventStatus::Ignored.as_str(),
                ]))
                .filter(webhook_events::Column::ReceivedAt.lt(before))
                .order_by_asc(webhook_events::Column::Id)
                .limit(batch)
                .into_tuple::<i64>()
                .all(self.connection())
                .await
                .map_err(|err| self.classify(err))?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            let result = webhook_events::Entity::delete_many()
                .filter(webhook_events::Column::Id.is_in(ids))
                .exec(self.connection())
                .await
                .map_err(|err| self.classify(err))?;
            deleted += result.rows_affected;
        }
    }

    /// Ledger rows by event id, whatever the provider (ids of Stripe and Svix do not collide).
    pub async fn find_events_by_id(
        &self,
        event_id: &str,
    ) -> Result<Vec<webhook_events::Model>, StoreError> {
        // Every provider named, so that the lookup is one probe per provider into the
        // idempotency key (provider, event_id) rather than a scan of the whole ledger.
        webhook_events::Entity::find()
            .filter(
                webhook_events::Column::Provider.is_in(
                    billing_sync_projection::Provider::ALL
                        .map(billing_sync_projection::Provider::as_str),
                ),
            )
            .filter(webhook_events::Column::EventId.eq(event_id))
            .all(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }

    /// Ledger rows matching `filter`, newest first; every failed row, oldest first, when the
    /// filter asks for failed rows with no limit.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
    ) -> Result<Vec<webhook_events::Model>, StoreError> {
        let mut query = webhook_events::Entity::find();
        if let Some(status) = filter.status {
            query = query.filter(webhook_events::Column::Status.eq(status.as_str()));
        }
        if let Some(event_type) = &filter.event_type {
            query = query.filter(webhook_events::Column::EventType.eq(event_type.as_str()));
        }
        if filter.limit > 0 {
            query = query
                .order_by_desc(webhook_events::Column::Id)
                .limit(filter.limit);
        } else {
            query = query.order_by_asc(webhook_events::Column::Id);
        }
        query
            .all(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }
}

/// Batches on PostgreSQL that could not be written as one message and went statement by
/// statement instead, by `cause`: `duplicate` (an event already in the ledger) or `refused`.
pub const BATCH_FALLBACKS: &str = "billing_sync_webhook_batch_fallbacks_total";

/// Whether `err` is the one-message batch's own check failing: the division by zero
/// ([`record_new_batch_at_once`]) that says an event of the batch is already in the ledger.
fn is_duplicate_check(err: &DbErr) -> bool {
    crate::error::database_code(err).is_some_and(|code| code == "22012")
}

/// What each delivery of `batch` recorded, given which of them were new events (the rest were
/// duplicates).
fn recorded(batch: &[(NewEvent, Plan)], new: impl IntoIterator<Item = bool>) -> Vec<Recorded> {
    batch
        .iter()
        .zip(new)
        .map(|((_, plan), new)| {
            if new {
                Recorded::New(outcome(plan).0)
            } else {
                Recorded::Duplicate
            }
        })
        .collect()
}

/// Records `events` (each event once, none a repeat of another) and applies their changes in
/// one round trip, when none of them is in the ledger yet: the ledger insert, a check that it
/// inserted every event, and the change set ([`write_apply_set`]), sent to PostgreSQL as
/// one message, which PostgreSQL runs as one transaction and commits before it answers. When
/// an event is already in the ledger the check fails (division by zero), the transaction rolls
/// back whole, and this returns that error: the caller records the batch statement by
/// statement, which tells the duplicates.
async fn record_new_batch_at_once<'a>(
    db: &DatabaseConnection,
    events: impl Iterator<Item = (&'a NewEvent, &'a Plan)> + Clone,
) -> Result<(), DbErr> {
    let Some(insert) = ledger_insert(events.clone()) else {
        return Ok(());
    };
    let count = events.clone().count();
    let changes = ChangeSet::of(events.flat_map(|(_, plan)| plan.changes()));
    let (sql, values) = insert.build(PostgresQueryBuilder);
    let mut message = String::from("WITH inserted AS (");
    crate::literal::write_statement(&mut message, &sql, &values);
    message.push_str(&format!(
        ") SELECT 1 / (CASE WHEN count(*) = {count} THEN 1 ELSE 0 END) FROM inserted;\n"
    ));
    write_apply_set(&mut message, &changes);
    db.execute_unprepared(&message).await?;
    Ok(())
}

/// Inserts the ledger rows of `events` (each event once) in one statement, rows sorted by
/// (provider, event id) so that concurrent writers wait on each other's rows in one order.
/// Returns the (provider, event id) of the rows inserted: an event already in the ledger is
/// not, and so is a duplicate. The ledger's unique key makes a concurrent second delivery wait
/// for the first one's commit and then insert nothing: exactly one of them applies the event.
async fn insert_ledger_rows<'a>(
    txn: &DatabaseTransaction,
    events: impl IntoIterator<Item = (&'a NewEvent, &'a Plan)>,
) -> Result<HashSet<(String, String)>, DbErr> {
    let backend = txn.get_database_backend();
    let Some(insert) = ledger_insert(events) else {
        return Ok(HashSet::new());
    };
    let rows = txn.query_all_raw(backend.build(&insert)).await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String>("", "provider")?,
                row.try_get::<String>("", "event_id")?,
            ))
        })
        .collect()
}

/// The statement of [`insert_ledger_rows`]: `INSERT … ON CONFLICT DO NOTHING RETURNING
/// provider, event_id`, or `None` for no events.
fn ledger_insert<'a>(
    events: impl IntoIterator<Item = (&'a NewEvent, &'a Plan)>,
) -> Option<InsertStatement> {
    use webhook_events::Column as C;
    let mut events: Vec<_> = events.into_iter().collect();
    if events.is_empty() {
        return None;
    }
    events.sort_by(|(a, _), (b, _)| {
        (a.provider.as_str(), &a.event_id).cmp(&(b.provider.as_str(), &b.event_id))
    });
    let now = Utc::now();
    let mut insert = Query::insert();
    insert.into_table(webhook_events::Entity).columns([
        C::Provider,
        C::EventId,
        C::EventType,
        C::ApiVersion,
        C::Livemode,
        C::EventCreated,
        C::Payload,
        C::ReceivedAt,
        C::ProcessedAt,
        C::Status,
        C::Error,
        C::Attempts,
    ]);
    for (event, plan) in events {
        let (status, error) = outcome(plan);
        insert.values_panic([
            Expr::val(event.provider.as_str()),
            Expr::val(event.event_id.as_str()),
            Expr::val(event.event_type.as_str()),
            Expr::val(event.api_version.clone()),
            Expr::val(event.livemode),
            Expr::val(event.event_created),
            // The body exactly as received: text on both backends, never parsed by the database.
            Expr::val(event.payload_text.to_string()),
            Expr::val(now),
            Expr::val(Some(now)),
            Expr::val(status.as_str()),
            Expr::val(error),
            Expr::val(1),
        ]);
    }
    insert
        .on_conflict(
            OnConflict::columns([C::Provider, C::EventId])
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().columns([C::Provider, C::EventId]));
    Some(insert)
}
