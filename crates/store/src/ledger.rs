//! The ledger of webhook deliveries, and recording an event together with its changes in one
//! transaction.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::Value;

use crate::Store;
use crate::entities::webhook_events;
use crate::error::StoreError;
use crate::sync::{Change, apply};

/// A verified event, as the ledger records it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// `stripe` or `clerk`.
    pub provider: &'static str,
    /// The source's id of the event.
    pub event_id: String,
    /// The source's event type.
    pub event_type: String,
    /// Stripe's `api_version`.
    pub api_version: Option<String>,
    /// Stripe's `livemode`.
    pub livemode: Option<bool>,
    /// When the source says it happened (unix seconds).
    pub event_created: Option<i64>,
    /// The event as received.
    pub payload: Value,
}

/// What to do with a recorded event, decided by its projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Apply these changes.
    Apply(Vec<Change>),
    /// A type we do not project: record it as `ignored`.
    Ignore,
    /// A shape we cannot project: record it as `failed` with this reason, to be replayed.
    Fail(String),
}

impl Plan {
    /// The ledger status and error that recording this plan leaves (before any apply failure).
    fn outcome(&self) -> (EventStatus, Option<String>) {
        match self {
            Plan::Apply(_) => (EventStatus::Processed, None),
            Plan::Ignore => (EventStatus::Ignored, None),
            Plan::Fail(reason) => (EventStatus::Failed, Some(reason.clone())),
        }
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
    /// On `Err` nothing was committed.
    ///
    /// Events are applied without savepoints (two round trips each), so an event whose changes
    /// the database refuses fails the whole batch; the caller then records its events one by
    /// one. A single event that fails that way is retried here in a savepoint, so that it is
    /// still recorded, as `failed`.
    pub async fn record_batch(
        &self,
        batch: &[(NewEvent, Plan)],
    ) -> Result<Vec<Recorded>, StoreError> {
        match self.try_record_batch(batch, false).await {
            Err(err) if batch.len() == 1 && !crate::error::is_connection_error(&err) => self
                .try_record_batch(batch, true)
                .await
                .map_err(|err| self.classify(err)),
            result => result.map_err(|err| self.classify(err)),
        }
    }

    async fn try_record_batch(
        &self,
        batch: &[(NewEvent, Plan)],
        isolate: bool,
    ) -> Result<Vec<Recorded>, DbErr> {
        let txn = self.connection().begin().await?;
        let mut recorded = Vec::with_capacity(batch.len());
        for (event, plan) in batch {
            recorded.push(record_one(&txn, event, plan, isolate).await?);
        }
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
                for change in changes {
                    apply(&txn, change).await?;
                }
            }
            let (status, error) = plan.outcome();
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

    /// One ledger row by provider and event id.
    pub async fn find_event(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<webhook_events::Model>, StoreError> {
        webhook_events::Entity::find()
            .filter(webhook_events::Column::Provider.eq(provider))
            .filter(webhook_events::Column::EventId.eq(event_id))
            .one(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }

    /// Ledger rows by event id, whatever the provider (ids of Stripe and Svix do not collide).
    pub async fn find_events_by_id(
        &self,
        event_id: &str,
    ) -> Result<Vec<webhook_events::Model>, StoreError> {
        webhook_events::Entity::find()
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

/// Records one event and applies its plan inside `txn`. With `isolate`, the apply runs in a
/// savepoint so that a failure leaves the ledger row (marked `failed`) and nothing else;
/// without, a failure is returned and breaks the transaction.
async fn record_one(
    txn: &DatabaseTransaction,
    event: &NewEvent,
    plan: &Plan,
    isolate: bool,
) -> Result<Recorded, DbErr> {
    let now = Utc::now();
    let (status, error) = plan.outcome();
    let row = webhook_events::ActiveModel {
        id: NotSet,
        provider: Set(event.provider.to_owned()),
        event_id: Set(event.event_id.clone()),
        event_type: Set(event.event_type.clone()),
        api_version: Set(event.api_version.clone()),
        livemode: Set(event.livemode),
        event_created: Set(event.event_created),
        payload: Set(event.payload.clone()),
        received_at: Set(now),
        processed_at: Set(Some(now)),
        status: Set(status.as_str().to_owned()),
        error: Set(error),
        attempts: Set(1),
    };
    // The ledger's unique key makes a concurrent second delivery wait for the first one's
    // commit and then insert nothing: exactly one of them applies the event.
    let inserted = webhook_events::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                webhook_events::Column::Provider,
                webhook_events::Column::EventId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await;
    let inserted = match inserted {
        Err(DbErr::RecordNotInserted) => 0,
        other => other?,
    };
    if inserted == 0 {
        return Ok(Recorded::Duplicate);
    }
    let Plan::Apply(changes) = plan else {
        return Ok(Recorded::New(status));
    };
    if !isolate {
        for change in changes {
            apply(txn, change).await?;
        }
        return Ok(Recorded::New(EventStatus::Processed));
    }
    let savepoint = txn.begin().await?;
    let mut failure = None;
    for change in changes {
        if let Err(err) = apply(&savepoint, change).await {
            failure = Some(err);
            break;
        }
    }
    match failure {
        None => {
            savepoint.commit().await?;
            Ok(Recorded::New(EventStatus::Processed))
        }
        Some(err) if crate::error::is_connection_error(&err) => Err(err),
        Some(err) => {
            savepoint.rollback().await?;
            tracing::error!(
                provider = event.provider,
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
                .filter(webhook_events::Column::Provider.eq(event.provider))
                .filter(webhook_events::Column::EventId.eq(event.event_id.as_str()))
                .exec(txn)
                .await?;
            Ok(Recorded::New(EventStatus::Failed))
        }
    }
}
