//! The SQL of a reduced [`ChangeSet`]: one multi-row guarded upsert per table (each row written
//! only when newer than the stored one, by the tie rule of its table), in the lock order the
//! parent module describes, as statements or as one message of literals.

use chrono::Utc;
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, Func, InsertStatement, IntoIden, OnConflict, PostgresQueryBuilder,
    Query, SimpleExpr, SubQueryStatement, UpdateStatement, Values,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, DeriveIden, EntityName, IdenStatic, Statement};

use std::borrow::Cow;
use std::collections::BTreeMap;

use billing_sync_projection::{
    CustomerLink, CustomerState, EntitlementsState, LinkedBy, MembershipState, OrganizationState,
    PriceState, ProductState, Rank, RawJson, SubscriptionState, SyncedRow, Tie, UserState, Version,
};

use super::{ChangeSet, Synced};
use crate::entities::{
    organization_memberships as memberships, organizations, stripe_customers as customers,
    stripe_entitlement_summaries as entitlements, stripe_prices as prices,
    stripe_products as products, stripe_subscriptions as subscriptions, users,
};
use crate::literal;

/// The `round`-th state of each object that has one, in primary-key order.
fn round<'s, S: Clone + 's>(
    rounds: &'s BTreeMap<&str, Vec<Cow<'_, S>>>,
    round: usize,
) -> impl Iterator<Item = &'s S> + Clone {
    rounds
        .values()
        .filter_map(move |chain| chain.get(round).map(|state| state.as_ref()))
}

/// How many rounds the objects of one table need.
fn round_count<S>(rounds: &BTreeMap<&str, Vec<S>>) -> usize {
    rounds.values().map(Vec::len).max().unwrap_or(0)
}

/// Applies `set` inside the caller's transaction: one statement per table that has rows, each
/// its own round trip. Returns how many rows the upserts wrote (0: every stored state was
/// newer), which a backfill reports.
pub async fn apply_set(db: &impl ConnectionTrait, set: &ChangeSet<'_>) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let mut written = 0;
    for step in steps(set, backend) {
        match step {
            Step::LockCustomers(ids) => {
                db.execute_raw(lock_customers(backend, &ids)).await?;
            }
            Step::Upsert(statement) => written += run(db, &statement).await?,
            Step::Adopt(statement) => {
                run(db, &statement).await?;
            }
            Step::Mark(statement) => {
                db.execute_raw(statement).await?;
            }
        }
    }
    Ok(written)
}

/// Applies `set` inside the caller's transaction with the same statements as [`apply_set`],
/// sent to PostgreSQL as one message (the simple query protocol, values written into the
/// text as literals): one round trip whatever the tables, where a batch of events otherwise
/// waits on one per statement. Elsewhere it is [`apply_set`]. Counts nothing.
pub async fn apply_set_at_once(
    db: &impl ConnectionTrait,
    set: &ChangeSet<'_>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        return apply_set(db, set).await.map(|_| ());
    }
    let mut message = String::new();
    write_apply_set(&mut message, set);
    if !message.is_empty() {
        db.execute_unprepared(&message).await?;
    }
    Ok(())
}

/// Appends the statements of [`apply_set`] for PostgreSQL to `message`, values written in,
/// each ended by `;`.
pub(crate) fn write_apply_set(message: &mut String, set: &ChangeSet<'_>) {
    for step in steps(set, DbBackend::Postgres) {
        let (sql, values) = match step {
            Step::LockCustomers(ids) => {
                let statement = lock_customers(DbBackend::Postgres, &ids);
                (
                    statement.sql,
                    statement.values.unwrap_or(Values(Vec::new())),
                )
            }
            Step::Upsert(statement) => statement.build(PostgresQueryBuilder),
            Step::Adopt(statement) => statement.build(PostgresQueryBuilder),
            Step::Mark(statement) => (
                statement.sql,
                statement.values.unwrap_or(Values(Vec::new())),
            ),
        };
        literal::write_statement(message, &sql, &values);
        message.push_str(";\n");
    }
}

/// One statement of applying a change set.
enum Step<'a> {
    /// Advisory locks on these customers, sorted (PostgreSQL only).
    LockCustomers(Vec<&'a str>),
    /// A guarded upsert: the rows it writes are counted.
    Upsert(InsertStatement),
    /// Subscriptions taking their customer's organization.
    Adopt(UpdateStatement),
    /// The outbox rows of the organizations whose billing the set may change, bumped last
    /// (after the links that name them).
    Mark(Statement),
}

/// The statements that apply `set`, in lock order: the customers' advisory locks, then the
/// tables one by one in a fixed order, each in rounds (usually one).
fn steps<'s>(set: &'s ChangeSet<'_>, backend: DbBackend) -> Vec<Step<'s>> {
    let mut steps = Vec::new();
    if set.is_empty() {
        return steps;
    }
    let customer_ids = set.customer_ids();
    if backend == DbBackend::Postgres && !customer_ids.is_empty() {
        steps.push(Step::LockCustomers(customer_ids));
    }
    let writing = WriteContext {
        backend,
        now: Utc::now(),
    };
    push_rounds(&mut steps, &set.organizations, writing);
    push_rounds(&mut steps, &set.users, writing);
    if !set.user_snapshots.is_empty() {
        steps.push(Step::Upsert(insert_if_absent(
            set.user_snapshots.values().copied(),
            writing,
        )));
    }
    push_rounds(&mut steps, &set.memberships, writing);
    push_rounds(&mut steps, &set.customers, writing);
    if !set.links.is_empty() {
        steps.push(Step::Upsert(links_upsert(set, writing)));
    }
    let adopting: Vec<&str> = set
        .customers
        .iter()
        .filter(|(_, chain)| chain.iter().any(|c| c.organization_id.is_some()))
        .map(|(id, _)| *id)
        .chain(set.links.keys().copied())
        .collect();
    if !adopting.is_empty() {
        steps.push(Step::Adopt(adopt_customer_organizations(&adopting)));
    }
    push_rounds(&mut steps, &set.subscriptions, writing);
    push_rounds(&mut steps, &set.products, writing);
    push_rounds(&mut steps, &set.prices, writing);
    push_rounds(&mut steps, &set.entitlements, writing);
    if !set.purchases.is_empty() {
        steps.push(Step::Upsert(crate::credit_facts::purchases_insert(
            set.purchases.values().copied(),
        )));
    }
    if !set.refunds.is_empty() {
        steps.push(Step::Upsert(crate::credit_facts::refunds_upsert(
            set.refunds.values().copied(),
        )));
    }
    let (customers, organizations) = set.billing_touched();
    if let Some(mark) = crate::outbox::mark_statement(backend, &customers, &organizations) {
        steps.push(Step::Mark(mark));
    }
    steps
}

/// One guarded upsert per round of the objects of one table.
fn push_rounds<S: Upserted>(
    steps: &mut Vec<Step<'_>>,
    rounds: &BTreeMap<&str, Vec<Cow<'_, S>>>,
    writing: WriteContext,
) {
    for n in 0..round_count(rounds) {
        steps.push(Step::Upsert(upsert(round(rounds, n), writing)));
    }
}

async fn run(
    db: &impl ConnectionTrait,
    statement: &impl sea_orm::StatementBuilder,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    match db.execute_raw(backend.build(statement)).await {
        Ok(result) => Ok(result.rows_affected()),
        // `ON CONFLICT … DO NOTHING` and a guard that filters the update out both mean "0 rows".
        Err(DbErr::RecordNotInserted) => Ok(0),
        Err(err) => Err(err),
    }
}

/// On PostgreSQL, a transaction-scoped advisory lock per customer, taken in one sorted order
/// before any row: a subscription inherits its customer's organization inside its upsert, and
/// a customer's new organization is passed on to its stored subscriptions; holding the
/// customer's lock across both means neither can miss the other's uncommitted write. SQLite
/// runs one writing transaction at a time and needs none.
fn lock_customers(backend: DbBackend, ids: &[&str]) -> Statement {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    // The inner ORDER BY (kept by OFFSET 0) fixes the order in which the locks are taken.
    Statement::from_sql_and_values(
        backend,
        "SELECT pg_advisory_xact_lock(k) FROM \
         (SELECT hashtextextended(id, 0) AS k FROM unnest($1::text[]) AS id ORDER BY 1 OFFSET 0) s",
        [ids.into()],
    )
}

/// The `WHERE` of a guarded upsert on `table`: the incoming state (`excluded`) replaces the
/// stored one only when it is newer by `(ordering_key, ordering_rank)`, and a terminal state
/// is only ever replaced by a newer terminal state. [`supersedes`] is the same rule in Rust.
fn newer_than_stored(table: &str, tie: Tie) -> Expr {
    use SyncedColumn::{OrderingKey, OrderingRank};
    let table = Alias::new(table);
    let stored = |column: SyncedColumn| Expr::col((table.clone(), column));
    let incoming = |column: SyncedColumn| Expr::col((Excluded, column));
    let (terminal, update) = (Rank::Terminal as i16, Rank::Update as i16);
    let mut wins_the_tie = incoming(OrderingRank).gt(stored(OrderingRank));
    if tie == Tie::LaterArrivalWins {
        wins_the_tie = wins_the_tie.or(incoming(OrderingRank)
            .eq(update)
            .and(stored(OrderingRank).eq(update)));
    }
    let newer = incoming(OrderingKey)
        .gt(stored(OrderingKey))
        .or(incoming(OrderingKey)
            .eq(stored(OrderingKey))
            .and(wins_the_tie));
    stored(OrderingRank)
        .lt(terminal)
        .or(incoming(OrderingRank).eq(terminal))
        .and(newer)
}

/// The row an upsert proposes, as `ON CONFLICT … DO UPDATE` names it.
#[derive(Clone, Copy, DeriveIden)]
struct Excluded;

/// The columns every synced table has, first in every row and replaced together when an
/// upsert wins.
#[derive(Clone, Copy, DeriveIden)]
enum SyncedColumn {
    Id,
    Raw,
    OrderingKey,
    OrderingRank,
    DeletedAt,
    SyncedAt,
}

impl SyncedColumn {
    const ALL: [SyncedColumn; 6] = [
        SyncedColumn::Id,
        SyncedColumn::Raw,
        SyncedColumn::OrderingKey,
        SyncedColumn::OrderingRank,
        SyncedColumn::DeletedAt,
        SyncedColumn::SyncedAt,
    ];
}

/// What every row written by one `apply_set` shares.
#[derive(Clone, Copy)]
struct WriteContext {
    backend: DbBackend,
    now: chrono::DateTime<Utc>,
}

impl WriteContext {
    /// The synced columns' values of one row, in [`SyncedColumn::ALL`] order.
    fn synced_values(self, row: &SyncedRow) -> Vec<SimpleExpr> {
        self.placeholder_values(&row.id, Some(&row.raw), row.version, row.deleted_at)
    }

    /// The synced columns' values of a row that may have no source object yet (a customer
    /// known only from a checkout's link).
    fn placeholder_values(
        self,
        id: &str,
        raw: Option<&RawJson>,
        version: Version,
        deleted_at: Option<chrono::DateTime<Utc>>,
    ) -> Vec<SimpleExpr> {
        vec![
            Expr::val(id),
            // `raw` is text on both backends: stored as delivered, never parsed by the database.
            Expr::val(raw.map(|raw| raw.as_str().to_owned())),
            Expr::val(version.key),
            Expr::val(version.rank as i16),
            Expr::val(deleted_at),
            Expr::val(self.now),
        ]
    }

    /// A JSON value bound as its text, serialised once here rather than copied into the
    /// statement (the driver would serialise the copy all the same).
    fn json(self, value: Option<&serde_json::Value>) -> SimpleExpr {
        json_text(self.backend, value.map(serialise))
    }
}

/// The JSON text of `value`, written straight into a buffer (`Value`'s `Display` goes through
/// the formatting machinery, and showed in the profile).
pub(crate) fn serialise(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// JSON text as a value of a JSON column (the columns we derive ourselves, such as a
/// subscription's `items`): PostgreSQL needs the cast to `jsonb`; SQLite stores JSON as text.
fn json_text(backend: DbBackend, text: Option<String>) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::val(text).cast_as(Alias::new("jsonb")),
        _ => Expr::val(text),
    }
}

/// `INSERT INTO table (synced columns, columns) VALUES rows…` with no conflict clause yet.
fn insert_rows<C: IntoIden + Copy>(
    table: impl IntoIden,
    columns: &[C],
    rows: impl IntoIterator<Item = Vec<SimpleExpr>>,
) -> InsertStatement {
    let mut statement = Query::insert();
    statement.into_table(table).columns(
        SyncedColumn::ALL
            .iter()
            .map(|c| c.into_iden())
            .chain(columns.iter().map(|c| c.into_iden())),
    );
    for row in rows {
        statement.values_panic(row);
    }
    statement
}

/// A completed checkout links its customer to an organization: a placeholder row at key 0
/// when the customer is not stored yet (its own events, whenever they arrive, replace
/// everything but the link), else the organization when the row has none.
fn links_upsert(set: &ChangeSet<'_>, writing: WriteContext) -> InsertStatement {
    use customers::Column as C;
    let columns = [C::Livemode, C::OrganizationId, C::Email, C::Name];
    let placeholder = Version {
        key: 0,
        rank: Rank::Initial,
    };
    let rows = set.links.values().map(|link| {
        let mut row = writing.placeholder_values(&link.customer_id, None, placeholder, None);
        row.extend([
            Expr::val(link.livemode),
            linked_organization(link),
            Expr::val(None::<String>),
            Expr::val(None::<String>),
        ]);
        row
    });
    let mut statement = insert_rows(customers::Entity, &columns, rows);
    statement.on_conflict(
        OnConflict::column(C::Id)
            .update_columns([C::OrganizationId, C::SyncedAt])
            .action_and_where(Expr::col((customers::Entity, C::OrganizationId)).is_null())
            .to_owned(),
    );
    statement
}

/// The organization a link gives its customer. One named by a `client_reference_id` (the
/// browser's word) is given only to an organization no live customer bills yet: a checkout
/// naming someone else's organization must never re-point that organization's billing.
fn linked_organization(link: &CustomerLink) -> SimpleExpr {
    use customers::Column as C;
    let organization = Expr::val(link.organization_id.clone());
    match link.linked_by {
        LinkedBy::Metadata => organization,
        LinkedBy::ClientReference => {
            let billed = Query::select()
                .expr(Expr::val(1))
                .from(customers::Entity)
                .and_where(Expr::col(C::OrganizationId).eq(link.organization_id.as_str()))
                .and_where(Expr::col(C::DeletedAt).is_null())
                .to_owned();
            Expr::case(Expr::exists(billed), Expr::val(None::<String>))
                .finally(organization)
                .into()
        }
    }
}

/// Stored subscriptions of these customers that have no organization yet take their
/// customer's, so the result does not depend on which arrived first.
fn adopt_customer_organizations(customer_ids: &[&str]) -> UpdateStatement {
    use subscriptions::Column as S;
    Query::update()
        .table(subscriptions::Entity)
        .value(
            S::OrganizationId,
            customer_organization(Expr::col((subscriptions::Entity, S::CustomerId))),
        )
        .and_where(Expr::col(S::OrganizationId).is_null())
        .and_where(Expr::col(S::CustomerId).is_in(customer_ids.iter().copied()))
        .to_owned()
}

/// `(SELECT organization_id FROM stripe_customers WHERE id = <customer>)`.
fn customer_organization(customer: impl Into<SimpleExpr>) -> SimpleExpr {
    let select = Query::select()
        .column((customers::Entity, customers::Column::OrganizationId))
        .from(customers::Entity)
        .and_where(Expr::col((customers::Entity, customers::Column::Id)).eq(customer.into()))
        .to_owned();
    SimpleExpr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(select)))
}

/// One synced table's upsert as data: its table, its own columns and one state's values for
/// them; its tie rule is [`Synced::TIE`]. [`upsert`] is the one statement built from it.
trait Upserted: Synced {
    /// The entity whose table the rows go to.
    type Table: EntityName + Default;
    /// That entity's columns.
    type Column: IdenStatic + 'static;
    /// The table's own columns, written after the synced ones, in the order of `values`.
    const COLUMNS: &'static [Self::Column];
    /// A column that a state leaving it unknown (`NULL`) does not overwrite: the organization
    /// of a customer or subscription, once known, stays known.
    const KEPT_WHEN_UNKNOWN: Option<Self::Column> = None;
    /// This state's values of [`Upserted::COLUMNS`].
    fn values(&self, writing: WriteContext) -> Vec<SimpleExpr>;
}

/// `INSERT INTO table (synced columns, columns) VALUES rows… ON CONFLICT (id) DO UPDATE SET
/// <synced columns and columns> WHERE <newer than stored>`: each row replaces the stored one
/// only when newer by its table's tie rule.
fn upsert<'a, S: Upserted + 'a>(
    states: impl Iterator<Item = &'a S>,
    writing: WriteContext,
) -> InsertStatement {
    let table = S::Table::default().table_name();
    let mut statement = insert_states(states, writing);
    let replaced = S::COLUMNS
        .iter()
        .filter(|c| S::KEPT_WHEN_UNKNOWN.is_none_or(|kept| kept.as_str() != c.as_str()))
        .map(|c| c.into_iden());
    let mut on_conflict = OnConflict::column(SyncedColumn::Id)
        .update_columns(
            SyncedColumn::ALL[1..]
                .iter()
                .map(|c| c.into_iden())
                .chain(replaced),
        )
        .action_and_where(newer_than_stored(table, S::TIE))
        .to_owned();
    if let Some(column) = S::KEPT_WHEN_UNKNOWN {
        // The incoming value, else the stored one.
        let kept = Func::coalesce([
            Expr::col((Excluded, column)),
            Expr::col((Alias::new(table), column)),
        ]);
        on_conflict.value(column, kept);
    }
    statement.on_conflict(on_conflict);
    statement
}

/// The same rows as [`upsert`], each written only where no row of its id is stored: users known
/// only from a membership's `public_user_data`, which has no `updated_at`, fill a gap and never
/// replace a user we know from the user's own events.
fn insert_if_absent<'a, S: Upserted + 'a>(
    states: impl Iterator<Item = &'a S>,
    writing: WriteContext,
) -> InsertStatement {
    let mut statement = insert_states(states, writing);
    statement.on_conflict(OnConflict::column(SyncedColumn::Id).do_nothing().to_owned());
    statement
}

/// `INSERT INTO table (synced columns, columns) VALUES <states>…` with no conflict clause yet.
fn insert_states<'a, S: Upserted + 'a>(
    states: impl Iterator<Item = &'a S>,
    writing: WriteContext,
) -> InsertStatement {
    let rows = states.map(|state| {
        let mut row = writing.synced_values(state.row());
        row.extend(state.values(writing));
        row
    });
    insert_rows(S::Table::default(), S::COLUMNS, rows)
}

impl Upserted for OrganizationState {
    type Table = organizations::Entity;
    type Column = organizations::Column;
    const COLUMNS: &'static [Self::Column] = &[Self::Column::Name, Self::Column::Slug];
    fn values(&self, _: WriteContext) -> Vec<SimpleExpr> {
        vec![Expr::val(self.name.clone()), Expr::val(self.slug.clone())]
    }
}

impl Upserted for UserState {
    type Table = users::Entity;
    type Column = users::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::PrimaryEmail,
        Self::Column::FirstName,
        Self::Column::LastName,
    ];
    fn values(&self, _: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.primary_email.clone()),
            Expr::val(self.first_name.clone()),
            Expr::val(self.last_name.clone()),
        ]
    }
}

impl Upserted for MembershipState {
    type Table = memberships::Entity;
    type Column = memberships::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::OrganizationId,
        Self::Column::UserId,
        Self::Column::Role,
    ];
    fn values(&self, _: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.organization_id.clone()),
            Expr::val(self.user_id.clone()),
            Expr::val(self.role.clone()),
        ]
    }
}

impl Upserted for CustomerState {
    type Table = customers::Entity;
    type Column = customers::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::Livemode,
        Self::Column::OrganizationId,
        Self::Column::Email,
        Self::Column::Name,
    ];
    // A link made by a checkout stays when the customer's metadata names no organization,
    // whichever arrived first.
    const KEPT_WHEN_UNKNOWN: Option<Self::Column> = Some(Self::Column::OrganizationId);
    fn values(&self, _: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.livemode),
            Expr::val(self.organization_id.clone()),
            Expr::val(self.email.clone()),
            Expr::val(self.name.clone()),
        ]
    }
}

impl Upserted for SubscriptionState {
    type Table = subscriptions::Entity;
    type Column = subscriptions::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::Livemode,
        Self::Column::CustomerId,
        Self::Column::Status,
        Self::Column::CancelAtPeriodEnd,
        Self::Column::CancelAt,
        Self::Column::CanceledAt,
        Self::Column::EndedAt,
        Self::Column::TrialEnd,
        Self::Column::CurrentPeriodStart,
        Self::Column::CurrentPeriodEnd,
        Self::Column::Items,
        Self::Column::OrganizationId,
    ];
    const KEPT_WHEN_UNKNOWN: Option<Self::Column> = Some(Self::Column::OrganizationId);
    fn values(&self, writing: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.livemode),
            Expr::val(self.customer_id.clone()),
            Expr::val(self.status.clone()),
            Expr::val(self.cancel_at_period_end),
            Expr::val(self.cancel_at),
            Expr::val(self.canceled_at),
            Expr::val(self.ended_at),
            Expr::val(self.trial_end),
            Expr::val(self.current_period_start),
            Expr::val(self.current_period_end),
            writing.json(Some(&self.items)),
            // The subscription's own organization, else its customer's, read in this very
            // statement (no read-then-write).
            Func::coalesce([
                Expr::val(self.organization_id.clone()),
                customer_organization(Expr::val(self.customer_id.clone())),
            ])
            .into(),
        ]
    }
}

impl Upserted for ProductState {
    type Table = products::Entity;
    type Column = products::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::Livemode,
        Self::Column::Name,
        Self::Column::Description,
        Self::Column::Active,
        Self::Column::MarketingFeatures,
        Self::Column::DefaultPriceId,
    ];
    fn values(&self, writing: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.livemode),
            Expr::val(self.name.clone()),
            Expr::val(self.description.clone()),
            Expr::val(self.active),
            writing.json(Some(&self.marketing_features)),
            Expr::val(self.default_price_id.clone()),
        ]
    }
}

impl Upserted for PriceState {
    type Table = prices::Entity;
    type Column = prices::Column;
    const COLUMNS: &'static [Self::Column] = &[
        Self::Column::Livemode,
        Self::Column::ProductId,
        Self::Column::Active,
        Self::Column::Currency,
        Self::Column::UnitAmount,
        Self::Column::LookupKey,
        Self::Column::Nickname,
        Self::Column::RecurringInterval,
        Self::Column::RecurringIntervalCount,
    ];
    fn values(&self, _: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.livemode),
            Expr::val(self.product_id.clone()),
            Expr::val(self.active),
            Expr::val(self.currency.clone()),
            Expr::val(self.unit_amount),
            Expr::val(self.lookup_key.clone()),
            Expr::val(self.nickname.clone()),
            Expr::val(self.recurring_interval.clone()),
            Expr::val(self.recurring_interval_count),
        ]
    }
}

impl Upserted for EntitlementsState {
    type Table = entitlements::Entity;
    type Column = entitlements::Column;
    const COLUMNS: &'static [Self::Column] = &[Self::Column::Livemode, Self::Column::LookupKeys];
    fn values(&self, writing: WriteContext) -> Vec<SimpleExpr> {
        vec![
            Expr::val(self.livemode),
            writing.json(Some(&self.lookup_keys)),
        ]
    }
}
