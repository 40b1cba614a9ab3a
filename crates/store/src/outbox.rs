//! What leaves the service, recorded where the change is: every transaction that changes an
//! organization's billing bumps its row in `billing_outbox` ([`mark_statement`], part of every
//! change set), so nothing committed can be forgotten by a crash. After commit, a publisher
//! reads the organization's state and, when it differs from what was last published, appends a
//! billing event (`billing_events`, in commit order) and keeps the state for Clerk's metadata;
//! senders deliver both. Per organization, only the newest state matters: a row's `changes` is
//! its version, events carry it, and a newer `billing.updated` supersedes an older one not sent
//! yet.
//!
//! Work is shared between replicas by leases: a row or event is taken with a random lease
//! token until a deadline, and only the holder of the token may record what it did. A replica
//! that dies lets its lease lapse; a late writer whose lease was taken over records nothing.

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, QueryResult, Statement,
    TransactionTrait, Value,
};

use crate::{Store, StoreError};

/// The `INSERT` that bumps the outbox rows of the organizations a change set touches: those
/// named directly, and those of the customers it touches (read after the set's own writes, so a
/// link made in the same set counts). Rows in organization order, so that concurrent writers
/// lock them in one order.
pub(crate) fn mark_statement(
    backend: DbBackend,
    customer_ids: &[&str],
    organization_ids: &[&str],
) -> Option<Statement> {
    mark(backend, customer_ids, organization_ids, "")
}

/// [`mark_statement`] for organizations whose credit balance went below the low-balance
/// threshold: their drop is counted too, so that the publisher tells it even when the balance
/// went back up and down again before it published.
pub(crate) fn balance_drop_statement(
    backend: DbBackend,
    organization_ids: &[&str],
) -> Option<Statement> {
    mark(
        backend,
        &[],
        organization_ids,
        ", balance_drops = billing_outbox.balance_drops + 1",
    )
}

fn mark(
    backend: DbBackend,
    customer_ids: &[&str],
    organization_ids: &[&str],
    also: &str,
) -> Option<Statement> {
    if customer_ids.is_empty() && organization_ids.is_empty() {
        return None;
    }
    let mut sources = Vec::new();
    if !customer_ids.is_empty() {
        sources.push(format!(
            "SELECT organization_id FROM stripe_customers WHERE id IN ({})",
            vec!["CAST(? AS TEXT)"; customer_ids.len()].join(", ")
        ));
    }
    sources.extend(
        organization_ids
            .iter()
            .map(|_| "SELECT CAST(? AS TEXT) AS organization_id".to_owned()),
    );
    let sql = format!(
        "INSERT INTO billing_outbox (organization_id, changes, balance_drops) \
         SELECT organization_id, 1, {} FROM ({}) affected \
         WHERE organization_id IS NOT NULL ORDER BY organization_id \
         ON CONFLICT (organization_id) DO UPDATE SET changes = billing_outbox.changes + 1{also}",
        i32::from(!also.is_empty()),
        sources.join(" UNION ")
    );
    let values: Vec<Value> = customer_ids
        .iter()
        .chain(organization_ids)
        .map(|id| (*id).into())
        .collect();
    Some(Statement::from_sql_and_values(
        backend,
        placeholders_for(backend, &sql),
        values,
    ))
}

/// An organization whose billing changed since it was last published, leased to one publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpublished {
    /// The Clerk organization.
    pub organization_id: String,
    /// Its version when leased: the state read after the lease is at least this new.
    pub changes: i64,
    /// Drops of the balance below the low-balance threshold, counted when leased, and as last
    /// published: a drop not published yet is news.
    pub balance_drops: i64,
    /// See `balance_drops`.
    pub published_drops: i64,
    /// The state last published (JSON text), to tell whether anything changed.
    pub published_state: Option<String>,
}

/// What became of a delivery: taken at (unix seconds), or to be tried again at, with what
/// went wrong.
pub type Delivery = Result<i64, (i64, String)>;

/// What the outbox's loops look for ([`Store::outbox_has`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxWork {
    /// Organizations with unpublished changes.
    Unpublished,
    /// Events due for their destination.
    Events,
    /// Organizations whose Clerk metadata lags.
    Clerk,
}

/// An organization's publication: its leased row, the state read (JSON text) and the events
/// that say what changed.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The row as leased.
    pub leased: &'a Unpublished,
    /// The state read after the lease.
    pub state: &'a str,
    /// The events to append.
    pub events: &'a [NewBillingEvent],
}

/// A billing event to append when publishing.
#[derive(Clone, Debug)]
pub struct NewBillingEvent {
    /// `bse_…`.
    pub id: String,
    /// `billing.updated` or `credits.balance_low`.
    pub event_type: String,
    /// The event's `data`, JSON text.
    pub data: String,
}

/// A billing event as the feed and the app's webhook give it.
#[derive(Clone, Debug, PartialEq)]
pub struct BillingEvent {
    /// Its place in commit order: the feed's cursor.
    pub seq: i64,
    /// `bse_…`: stable, what receivers deduplicate on.
    pub id: String,
    /// `billing.updated` or `credits.balance_low`.
    pub event_type: String,
    /// The Clerk organization it is about.
    pub organization_id: String,
    /// The organization's version the event was published at.
    pub version: i64,
    /// Unix seconds.
    pub created: i64,
    /// JSON text.
    pub data: String,
    /// Times the app's webhook was tried.
    pub attempts: i64,
}

/// An organization whose Clerk metadata lags its published state, leased to one sender.
#[derive(Clone, Debug, PartialEq)]
pub struct ClerkUpdate {
    /// The Clerk organization.
    pub organization_id: String,
    /// The published version being sent.
    pub version: i64,
    /// The published state (JSON text).
    pub state: String,
    /// Times it was tried, this one included.
    pub attempts: i64,
}

/// What the outbox holds, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Organizations whose change is not published yet.
    pub unpublished: i64,
    /// Events the app's webhook has not taken, and the oldest one's age in seconds.
    pub webhook_pending: i64,
    /// See `webhook_pending`.
    pub webhook_oldest_age: i64,
    /// Organizations whose Clerk metadata lags.
    pub clerk_pending: i64,
}

impl Store {
    /// What a lease's subquery ends with: on PostgreSQL, rows another publisher is taking are
    /// skipped rather than waited for (SQLite has one writer: nothing to skip).
    fn skip_locked(&self) -> &'static str {
        if self.backend() == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        }
    }

    /// The rows `sql` answers, each read by `read`.
    async fn rows<T>(
        &self,
        sql: &str,
        values: Vec<Value>,
        read: impl Fn(&QueryResult) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self
            .connection()
            .query_all_raw(self.statement(sql, values))
            .await
            .map_err(|err| self.classify(err))?;
        rows.iter()
            .map(read)
            .collect::<Result<_, DbErr>>()
            .map_err(|err| self.classify(err))
    }

    /// Begins a transaction for the outbox's bookkeeping, whose commit does not wait for
    /// PostgreSQL to flush it to disk (`synchronous_commit` off for this transaction only):
    /// leases, supersedes and the record of a delivery, which a crash may lose because they
    /// are done again — a lease is taken again, a supersede decided again, a delivery made
    /// again under its same event id (receivers deduplicate on it). Each of those commits cost
    /// a WAL flush of its own beside ingestion's. The change, its outbox mark and the published
    /// events are committed as every change is, flushed.
    async fn begin_unflushed(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.connection().begin().await?;
        if self.backend() == DbBackend::Postgres {
            txn.execute_unprepared("SET LOCAL synchronous_commit = off")
                .await?;
        }
        Ok(txn)
    }

    /// The rows a bookkeeping write (`sql`, a lease) answers, each read by `read`, committed
    /// without waiting for the flush ([`Store::begin_unflushed`]); `before`, another
    /// bookkeeping statement, runs first in the same transaction.
    async fn unflushed_rows<T>(
        &self,
        before: Option<Statement>,
        sql: &str,
        values: Vec<Value>,
        read: impl Fn(&QueryResult) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, StoreError> {
        let result: Result<Vec<T>, DbErr> = async {
            let txn = self.begin_unflushed().await?;
            if let Some(before) = before {
                txn.execute_raw(before).await?;
            }
            let rows = txn.query_all_raw(self.statement(sql, values)).await?;
            txn.commit().await?;
            rows.iter().map(read).collect()
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        let backend = self.backend();
        Statement::from_sql_and_values(backend, placeholders_for(backend, sql), values)
    }

    /// Takes up to `limit` organizations with unpublished changes for `lease` until
    /// `leased_until` (unix seconds), skipping those another publisher holds.
    pub async fn lease_unpublished(
        &self,
        lease: &str,
        now: i64,
        leased_until: i64,
        limit: u64,
    ) -> Result<Vec<Unpublished>, StoreError> {
        let skip_locked = self.skip_locked();
        let sql = format!(
            "UPDATE billing_outbox SET lease = ?, leased_until = ? \
             WHERE organization_id IN (SELECT organization_id FROM billing_outbox \
               WHERE changes > published AND (leased_until IS NULL OR leased_until < ?) \
               ORDER BY organization_id LIMIT {limit}{skip_locked}) \
             RETURNING organization_id, changes, balance_drops, published_drops, published_state"
        );
        self.unflushed_rows(
            None,
            &sql,
            vec![lease.into(), leased_until.into(), now.into()],
            |row| {
                Ok(Unpublished {
                    organization_id: row.try_get("", "organization_id")?,
                    changes: row.try_get("", "changes")?,
                    balance_drops: row.try_get("", "balance_drops")?,
                    published_drops: row.try_get("", "published_drops")?,
                    published_state: row.try_get("", "published_state")?,
                })
            },
        )
        .await
    }

    /// Whether anything waits: an organization with unpublished changes (`Unpublished`), an
    /// event due for its destination (`Events`), an organization whose Clerk metadata lags
    /// (`Clerk`). A read on a partial index, so that an idle loop asks without taking a write
    /// lock (SQLite has one writer, which ingestion needs).
    pub async fn outbox_has(&self, work: OutboxWork, now: i64) -> Result<bool, StoreError> {
        let (sql, values): (&str, Vec<Value>) = match work {
            OutboxWork::Unpublished => (
                "SELECT 1 AS found FROM billing_outbox WHERE changes > published LIMIT 1",
                Vec::new(),
            ),
            OutboxWork::Events => (
                "SELECT 1 AS found FROM billing_events WHERE delivered_at IS NULL \
                 AND NOT superseded AND next_attempt_at <= ? LIMIT 1",
                vec![now.into()],
            ),
            OutboxWork::Clerk => (
                "SELECT 1 AS found FROM billing_outbox WHERE clerk_sent < published \
                 AND clerk_next_attempt_at <= ? LIMIT 1",
                vec![now.into()],
            ),
        };
        let row = self
            .connection()
            .query_one_raw(self.statement(sql, values))
            .await
            .map_err(|err| self.classify(err))?;
        Ok(row.is_some())
    }

    /// Records that each of `published` (leased with `lease`) was published at its version (and
    /// its balance drops) with its state (JSON text), appending its events at the end of the
    /// commit order — all in one transaction, one commit for the batch, in two statements
    /// whatever its size (one per organization and per event cost a round trip each, and made
    /// publishing nearly as many statements as the ingest it follows). An organization whose
    /// lease was taken over is left as it is (and its events not appended); returns how many
    /// were recorded. On PostgreSQL the appends are serialised by a lock held to commit, so that
    /// a higher `seq` is never visible before a lower one (the feed's cursor would skip it).
    pub async fn publish(
        &self,
        lease: &str,
        published: &[Published<'_>],
        now: i64,
    ) -> Result<usize, StoreError> {
        let result: Result<usize, DbErr> = async {
            let txn = self.connection().begin().await?;
            if self.backend() == DbBackend::Postgres
                && published.iter().any(|p| !p.events.is_empty())
            {
                txn.execute_unprepared("SELECT pg_advisory_xact_lock(7306011)")
                    .await?;
            }
            // The rows still leased to us take their publication, in one statement; only
            // theirs get events.
            let recorded: Vec<String> = if published.is_empty() {
                Vec::new()
            } else {
                let sql = format!(
                    "WITH p (organization_id, changes, state, drops) AS (VALUES {}) \
                     UPDATE billing_outbox SET published = p.changes, published_state = p.state, \
                     published_drops = p.drops, lease = NULL, leased_until = NULL FROM p \
                     WHERE billing_outbox.organization_id = p.organization_id \
                     AND billing_outbox.lease = ? AND billing_outbox.published < p.changes \
                     RETURNING billing_outbox.organization_id",
                    rows_of(4, published.len())
                );
                let mut values: Vec<Value> = Vec::with_capacity(published.len() * 4 + 1);
                for Published { leased, state, .. } in published {
                    values.extend([
                        leased.organization_id.as_str().into(),
                        leased.changes.into(),
                        (*state).into(),
                        leased.balance_drops.into(),
                    ]);
                }
                values.push(lease.into());
                txn.query_all_raw(self.statement(&sql, values))
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String>("", "organization_id"))
                    .collect::<Result<_, DbErr>>()?
            };
            let appended: Vec<(&Published<'_>, &NewBillingEvent)> = published
                .iter()
                .filter(|p| recorded.contains(&p.leased.organization_id))
                .flat_map(|p| p.events.iter().map(move |event| (p, event)))
                .collect();
            if !appended.is_empty() {
                let sql = format!(
                    "INSERT INTO billing_events \
                     (id, event_type, organization_id, version, created, data, next_attempt_at) \
                     VALUES {}",
                    rows_of(7, appended.len())
                );
                let mut values: Vec<Value> = Vec::with_capacity(appended.len() * 7);
                for (p, event) in appended {
                    values.extend([
                        event.id.as_str().into(),
                        event.event_type.as_str().into(),
                        p.leased.organization_id.as_str().into(),
                        p.leased.changes.into(),
                        now.into(),
                        event.data.as_str().into(),
                        now.into(),
                    ]);
                }
                txn.execute_raw(self.statement(&sql, values)).await?;
            }
            let recorded = recorded.len();
            txn.commit().await?;
            Ok(recorded)
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// Events after `after` (a `seq`), in commit order, at most `limit`.
    pub async fn billing_events_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        let sql = format!(
            "SELECT seq, id, event_type, organization_id, version, created, data, attempts \
             FROM billing_events WHERE seq > ? ORDER BY seq LIMIT {limit}"
        );
        self.events_query(&sql, vec![after.into()]).await
    }

    async fn events_query(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        self.rows(sql, values, billing_event).await
    }

    /// Takes up to `limit` events for the app's webhook: due, not taken, not superseded, and
    /// each the oldest pending event of its organization (an organization's events go out one
    /// at a time, in order). A pending `billing.updated` that a newer one of its organization
    /// follows, and that nobody holds, is superseded first.
    pub async fn lease_webhook_events(
        &self,
        lease: &str,
        now: i64,
        leased_until: i64,
        limit: u64,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        let supersede = "UPDATE billing_events SET superseded = TRUE \
             WHERE delivered_at IS NULL AND NOT superseded AND event_type = 'billing.updated' \
             AND (leased_until IS NULL OR leased_until < ?) \
             AND EXISTS (SELECT 1 FROM billing_events newer \
               WHERE newer.organization_id = billing_events.organization_id \
               AND newer.seq > billing_events.seq AND newer.event_type = 'billing.updated')";
        let supersede = self.statement(supersede, vec![now.into()]);
        let skip_locked = self.skip_locked();
        let sql = format!(
            "UPDATE billing_events SET lease = ?, leased_until = ?, attempts = attempts + 1 \
             WHERE seq IN (SELECT seq FROM billing_events e \
               WHERE e.delivered_at IS NULL AND NOT e.superseded AND e.next_attempt_at <= ? \
               AND (e.leased_until IS NULL OR e.leased_until < ?) \
               AND NOT EXISTS (SELECT 1 FROM billing_events older \
                 WHERE older.organization_id = e.organization_id AND older.seq < e.seq \
                 AND older.delivered_at IS NULL AND NOT older.superseded) \
               ORDER BY e.seq LIMIT {limit}{skip_locked}) \
             RETURNING seq, id, event_type, organization_id, version, created, data, attempts"
        );
        let mut events = self
            .unflushed_rows(
                Some(supersede),
                &sql,
                vec![lease.into(), leased_until.into(), now.into(), now.into()],
                billing_event,
            )
            .await?;
        events.sort_by_key(|event| event.seq);
        Ok(events)
    }

    /// Records the answers to a batch of leased events, in one unflushed transaction
    /// ([`Store::begin_unflushed`]), the taken ones in one statement: each `(seq, outcome)`
    /// taken (`Ok(delivered_at)`), or to be tried again at `next_attempt_at` with `error`. An
    /// event whose lease was taken over is left as it is.
    pub async fn settle_webhook_events(
        &self,
        lease: &str,
        outcomes: Vec<(i64, Delivery)>,
    ) -> Result<(), StoreError> {
        let result: Result<(), DbErr> = async {
            let txn = self.begin_unflushed().await?;
            // The delivered ones (nearly all, while the app is healthy) in one statement.
            let delivered: Vec<(i64, i64)> = outcomes
                .iter()
                .filter_map(|(seq, outcome)| outcome.as_ref().ok().map(|at| (*seq, *at)))
                .collect();
            if !delivered.is_empty() {
                let sql = format!(
                    "WITH d (seq, delivered_at) AS (VALUES {}) \
                     UPDATE billing_events SET delivered_at = d.delivered_at, lease = NULL, \
                     leased_until = NULL, last_error = NULL FROM d \
                     WHERE billing_events.seq = d.seq AND billing_events.lease = ?",
                    rows_of(2, delivered.len())
                );
                let mut values: Vec<Value> = delivered
                    .into_iter()
                    .flat_map(|(seq, at)| [seq.into(), at.into()])
                    .collect();
                values.push(lease.into());
                txn.execute_raw(self.statement(&sql, values)).await?;
            }
            for (seq, outcome) in outcomes {
                let Err((next_attempt_at, error)) = outcome else {
                    continue;
                };
                txn.execute_raw(self.statement(
                    "UPDATE billing_events SET next_attempt_at = ?, last_error = ?, \
                     lease = NULL, leased_until = NULL WHERE seq = ? AND lease = ?",
                    vec![
                        next_attempt_at.into(),
                        error.into(),
                        seq.into(),
                        lease.into(),
                    ],
                ))
                .await?;
            }
            txn.commit().await
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// Takes up to `limit` organizations whose Clerk metadata lags their published state.
    pub async fn lease_clerk_updates(
        &self,
        lease: &str,
        now: i64,
        leased_until: i64,
        limit: u64,
    ) -> Result<Vec<ClerkUpdate>, StoreError> {
        let skip_locked = self.skip_locked();
        let sql = format!(
            "UPDATE billing_outbox SET clerk_lease = ?, clerk_leased_until = ?, \
             clerk_attempts = clerk_attempts + 1 \
             WHERE organization_id IN (SELECT organization_id FROM billing_outbox \
               WHERE clerk_sent < published AND clerk_next_attempt_at <= ? \
               AND (clerk_leased_until IS NULL OR clerk_leased_until < ?) \
               ORDER BY clerk_next_attempt_at LIMIT {limit}{skip_locked}) \
             RETURNING organization_id, published, published_state, clerk_attempts"
        );
        self.unflushed_rows(
            None,
            &sql,
            vec![lease.into(), leased_until.into(), now.into(), now.into()],
            |row| {
                Ok(ClerkUpdate {
                    organization_id: row.try_get("", "organization_id")?,
                    version: row.try_get("", "published")?,
                    state: row
                        .try_get::<Option<String>>("", "published_state")?
                        .unwrap_or_default(),
                    attempts: row.try_get("", "clerk_attempts")?,
                })
            },
        )
        .await
    }

    /// Records Clerk's answer for a leased organization: `version` written (`Ok`), or to be
    /// tried again at `next_attempt_at` with `error`, unflushed ([`Store::begin_unflushed`]).
    /// Nothing when the lease was taken over.
    pub async fn settle_clerk_update(
        &self,
        lease: &str,
        update: &ClerkUpdate,
        outcome: Result<(), (i64, String)>,
    ) -> Result<(), StoreError> {
        let statement = match outcome {
            Ok(()) => self.statement(
                "UPDATE billing_outbox SET clerk_sent = ?, clerk_attempts = 0, \
                 clerk_next_attempt_at = 0, clerk_error = NULL, clerk_lease = NULL, \
                 clerk_leased_until = NULL WHERE organization_id = ? AND clerk_lease = ?",
                vec![
                    update.version.into(),
                    update.organization_id.as_str().into(),
                    lease.into(),
                ],
            ),
            Err((next_attempt_at, error)) => self.statement(
                "UPDATE billing_outbox SET clerk_next_attempt_at = ?, clerk_error = ?, \
                 clerk_lease = NULL, clerk_leased_until = NULL \
                 WHERE organization_id = ? AND clerk_lease = ?",
                vec![
                    next_attempt_at.into(),
                    error.into(),
                    update.organization_id.as_str().into(),
                    lease.into(),
                ],
            ),
        };
        let result: Result<(), DbErr> = async {
            let txn = self.begin_unflushed().await?;
            txn.execute_raw(statement).await?;
            txn.commit().await
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// Marks every organization billing-sync knows as changed, so that its state is published
    /// again and sent to Clerk (first setup, or after restoring a database). Returns how many.
    pub async fn republish_all(&self) -> Result<u64, StoreError> {
        let sql = "INSERT INTO billing_outbox (organization_id, changes) \
             SELECT id, 1 FROM organizations WHERE deleted_at IS NULL \
             UNION SELECT organization_id, 1 FROM stripe_customers WHERE organization_id IS NOT NULL \
             ON CONFLICT (organization_id) DO UPDATE SET changes = billing_outbox.changes + 1, \
             clerk_sent = 0";
        let result = self
            .connection()
            .execute_raw(self.statement(sql, Vec::new()))
            .await
            .map_err(|err| self.classify(err))?;
        Ok(result.rows_affected())
    }

    /// The outbox's backlog at `now`.
    pub async fn outbox_backlog(&self, now: i64) -> Result<OutboxBacklog, StoreError> {
        let sql = "SELECT \
             (SELECT COUNT(*) FROM billing_outbox WHERE changes > published) AS unpublished, \
             (SELECT COUNT(*) FROM billing_events WHERE delivered_at IS NULL AND NOT superseded) AS webhook_pending, \
             (SELECT MIN(created) FROM billing_events WHERE delivered_at IS NULL AND NOT superseded) AS webhook_oldest, \
             (SELECT COUNT(*) FROM billing_outbox WHERE clerk_sent < published) AS clerk_pending";
        let row = self
            .connection()
            .query_one_raw(self.statement(sql, Vec::new()))
            .await
            .map_err(|err| self.classify(err))?;
        let Some(row) = row else {
            return Ok(OutboxBacklog::default());
        };
        let read = || -> Result<OutboxBacklog, DbErr> {
            let oldest: Option<i64> = row.try_get("", "webhook_oldest")?;
            Ok(OutboxBacklog {
                unpublished: row.try_get("", "unpublished")?,
                webhook_pending: row.try_get("", "webhook_pending")?,
                webhook_oldest_age: oldest.map_or(0, |created| (now - created).max(0)),
                clerk_pending: row.try_get("", "clerk_pending")?,
            })
        };
        read().map_err(|err| self.classify(err))
    }
}

/// A billing event as a statement of this module returns it.
fn billing_event(row: &QueryResult) -> Result<BillingEvent, DbErr> {
    Ok(BillingEvent {
        seq: row.try_get("", "seq")?,
        id: row.try_get("", "id")?,
        event_type: row.try_get("", "event_type")?,
        organization_id: row.try_get("", "organization_id")?,
        version: row.try_get("", "version")?,
        created: row.try_get("", "created")?,
        data: row.try_get("", "data")?,
        attempts: row.try_get("", "attempts")?,
    })
}

/// `rows` rows of `columns` placeholders each, for a `VALUES` list: `(?, ?), (?, ?)`.
fn rows_of(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `sql`, written with `?` placeholders, as `backend` takes them: each `?` numbered `$1`,
/// `$2`, … for PostgreSQL (no `?` appears otherwise in the statements of this module).
fn placeholders_for(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => numbered(sql),
        _ => sql.to_owned(),
    }
}

/// `sql` with each `?` numbered `$1`, `$2`, ….
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn nothing_touched_marks_nothing() {
        assert!(mark_statement(DbBackend::Postgres, &[], &[]).is_none());
        let statement =
            mark_statement(DbBackend::Postgres, &["cus_1"], &["org_1"]).expect("a statement");
        assert!(
            statement.sql.contains("CAST($2 AS TEXT)"),
            "{}",
            statement.sql
        );
    }
}
