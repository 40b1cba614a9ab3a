//! The SQL of a reduced [`ChangeSet`]: one multi-row guarded upsert per table (each row written
//! only when newer than the stored one, by the tie rule of its table), in the lock order the
//! parent module describes, as statements or as one message of literals.

use chrono::Utc;
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, Func, InsertStatement, IntoIden, OnConflict, PostgresQueryBuilder,
    Query, SimpleExpr, SubQueryStatement, UpdateStatement, Values,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, DeriveIden, EntityName, Statement};

use std::borrow::Cow;
use std::collections::BTreeMap;

use billing_sync_projection::{
    CustomerLink, CustomerState, EntitlementsState, LinkedBy, MembershipState, OrganizationState,
    PriceState, ProductState, Rank, RawJson, SubscriptionState, SyncedRow, Tie, UserState, Version,
};

use super::{
    CUSTOMERS_TIE, ChangeSet, ENTITLEMENTS_TIE, MEMBERSHIPS_TIE, ORGANIZATIONS_TIE, PRICES_TIE,
    PRODUCTS_TIE, SUBSCRIPTIONS_TIE, USERS_TIE,
};
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
    for n in 0..round_count(&set.organizations) {
        steps.push(Step::Upsert(organizations_upsert(
            round(&set.organizations, n),
            writing,
        )));
    }
    for n in 0..round_count(&set.users) {
        steps.push(Step::Upsert(users_upsert(
            round(&set.users, n),
            writing,
            false,
        )));
    }
    if !set.user_snapshots.is_empty() {
        steps.push(Step::Upsert(users_upsert(
            set.user_snapshots.values().copied(),
            writing,
            true,
        )));
    }
    for n in 0..round_count(&set.memberships) {
        steps.push(Step::Upsert(memberships_upsert(
            round(&set.memberships, n),
            writing,
        )));
    }
    for n in 0..round_count(&set.customers) {
        steps.push(Step::Upsert(customers_upsert(
            round(&set.customers, n),
            writing,
        )));
    }
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
    for n in 0..round_count(&set.subscriptions) {
        steps.push(Step::Upsert(subscriptions_upsert(
            round(&set.subscriptions, n),
            writing,
        )));
    }
    for n in 0..round_count(&set.products) {
        steps.push(Step::Upsert(products_upsert(
            round(&set.products, n),
            writing,
        )));
    }
    for n in 0..round_count(&set.prices) {
        steps.push(Step::Upsert(prices_upsert(round(&set.prices, n), writing)));
    }
    for n in 0..round_count(&set.entitlements) {
        steps.push(Step::Upsert(entitlements_upsert(
            round(&set.entitlements, n),
            writing,
        )));
    }
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
    steps
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
fn newer_than_stored(table: impl EntityName, tie: Tie) -> Expr {
    use SyncedColumn::{OrderingKey, OrderingRank};
    let table = Alias::new(table.table_name());
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

/// The incoming organization, else the stored one: a state that names none keeps the known one.
fn keep_known_organization<C: IntoIden + Copy>(table: impl EntityName, organization: C) -> Expr {
    Func::coalesce([
        Expr::col((Excluded, organization)),
        Expr::col((Alias::new(table.table_name()), organization)),
    ])
    .into()
}

/// `ON CONFLICT (id) DO UPDATE SET <synced columns and columns> WHERE <newer than stored>`.
fn guarded<C: IntoIden + Copy>(table: impl EntityName, tie: Tie, columns: &[C]) -> OnConflict {
    OnConflict::column(SyncedColumn::Id)
        .update_columns(
            SyncedColumn::ALL[1..]
                .iter()
                .map(|c| c.into_iden())
                .chain(columns.iter().map(|c| c.into_iden())),
        )
        .action_and_where(newer_than_stored(table, tie))
        .to_owned()
}

fn organizations_upsert<'a>(
    states: impl Iterator<Item = &'a OrganizationState>,
    writing: WriteContext,
) -> InsertStatement {
    use organizations::Column as C;
    let columns = [C::Name, C::Slug];
    let rows = states.map(|org| {
        let mut row = writing.synced_values(&org.row);
        row.extend([Expr::val(org.name.clone()), Expr::val(org.slug.clone())]);
        row
    });
    let mut statement = insert_rows(organizations::Entity, &columns, rows);
    statement.on_conflict(guarded(organizations::Entity, ORGANIZATIONS_TIE, &columns));
    statement
}

/// Users from their own events (guarded), or `snapshots` known only from a membership's
/// `public_user_data`, which has no `updated_at`: those only fill a gap, never replace a user
/// we know from the user's own events.
fn users_upsert<'a>(
    states: impl Iterator<Item = &'a UserState>,
    writing: WriteContext,
    snapshots: bool,
) -> InsertStatement {
    use users::Column as C;
    let columns = [C::PrimaryEmail, C::FirstName, C::LastName];
    let rows = states.map(|user| {
        let mut row = writing.synced_values(&user.row);
        row.extend([
            Expr::val(user.primary_email.clone()),
            Expr::val(user.first_name.clone()),
            Expr::val(user.last_name.clone()),
        ]);
        row
    });
    let mut statement = insert_rows(users::Entity, &columns, rows);
    if snapshots {
        statement.on_conflict(OnConflict::column(C::Id).do_nothing().to_owned());
    } else {
        statement.on_conflict(guarded(users::Entity, USERS_TIE, &columns));
    }
    statement
}

fn memberships_upsert<'a>(
    states: impl Iterator<Item = &'a MembershipState>,
    writing: WriteContext,
) -> InsertStatement {
    use memberships::Column as C;
    let columns = [C::OrganizationId, C::UserId, C::Role];
    let rows = states.map(|m| {
        let mut row = writing.synced_values(&m.row);
        row.extend([
            Expr::val(m.organization_id.clone()),
            Expr::val(m.user_id.clone()),
            Expr::val(m.role.clone()),
        ]);
        row
    });
    let mut statement = insert_rows(memberships::Entity, &columns, rows);
    statement.on_conflict(guarded(memberships::Entity, MEMBERSHIPS_TIE, &columns));
    statement
}

fn customers_upsert<'a>(
    states: impl Iterator<Item = &'a CustomerState>,
    writing: WriteContext,
) -> InsertStatement {
    use customers::Column as C;
    let columns = [C::Livemode, C::OrganizationId, C::Email, C::Name];
    let rows = states.map(|c| {
        let mut row = writing.synced_values(&c.row);
        row.extend([
            Expr::val(c.livemode),
            Expr::val(c.organization_id.clone()),
            Expr::val(c.email.clone()),
            Expr::val(c.name.clone()),
        ]);
        row
    });
    let mut statement = insert_rows(customers::Entity, &columns, rows);
    let mut on_conflict = guarded(
        customers::Entity,
        CUSTOMERS_TIE,
        &[C::Livemode, C::Email, C::Name],
    );
    // A link made by a checkout stays when the customer's metadata names no organization,
    // whichever arrived first.
    on_conflict.value(
        C::OrganizationId,
        keep_known_organization(customers::Entity, C::OrganizationId),
    );
    statement.on_conflict(on_conflict);
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

fn subscriptions_upsert<'a>(
    states: impl Iterator<Item = &'a SubscriptionState>,
    writing: WriteContext,
) -> InsertStatement {
    use subscriptions::Column as C;
    let columns = [
        C::Livemode,
        C::CustomerId,
        C::Status,
        C::CancelAtPeriodEnd,
        C::CancelAt,
        C::CanceledAt,
        C::EndedAt,
        C::TrialEnd,
        C::CurrentPeriodStart,
        C::CurrentPeriodEnd,
        C::Items,
    ];
    let rows = states.map(|s| {
        let mut row = writing.synced_values(&s.row);
        row.extend([
            Expr::val(s.livemode),
            Expr::val(s.customer_id.clone()),
            Expr::val(s.status.clone()),
            Expr::val(s.cancel_at_period_end),
            Expr::val(s.cancel_at),
            Expr::val(s.canceled_at),
            Expr::val(s.ended_at),
            Expr::val(s.trial_end),
            Expr::val(s.current_period_start),
            Expr::val(s.current_period_end),
            writing.json(Some(&s.items)),
            // The subscription's own organization, else its customer's, read in this very
            // statement (no read-then-write).
            Func::coalesce([
                Expr::val(s.organization_id.clone()),
                customer_organization(Expr::val(s.customer_id.clone())),
            ])
            .into(),
        ]);
        row
    });
    let mut all_columns: Vec<C> = columns.to_vec();
    all_columns.push(C::OrganizationId);
    let mut statement = insert_rows(subscriptions::Entity, &all_columns, rows);
    let mut on_conflict = guarded(subscriptions::Entity, SUBSCRIPTIONS_TIE, &columns);
    on_conflict.value(
        C::OrganizationId,
        keep_known_organization(subscriptions::Entity, C::OrganizationId),
    );
    statement.on_conflict(on_conflict);
    statement
}

fn products_upsert<'a>(
    states: impl Iterator<Item = &'a ProductState>,
    writing: WriteContext,
) -> InsertStatement {
    use products::Column as C;
    let columns = [
        C::Livemode,
        C::Name,
        C::Description,
        C::Active,
        C::MarketingFeatures,
        C::DefaultPriceId,
    ];
    let rows = states.map(|p| {
        let mut row = writing.synced_values(&p.row);
        row.extend([
            Expr::val(p.livemode),
            Expr::val(p.name.clone()),
            Expr::val(p.description.clone()),
            Expr::val(p.active),
            writing.json(Some(&p.marketing_features)),
            Expr::val(p.default_price_id.clone()),
        ]);
        row
    });
    let mut statement = insert_rows(products::Entity, &columns, rows);
    statement.on_conflict(guarded(products::Entity, PRODUCTS_TIE, &columns));
    statement
}

fn prices_upsert<'a>(
    states: impl Iterator<Item = &'a PriceState>,
    writing: WriteContext,
) -> InsertStatement {
    use prices::Column as C;
    let columns = [
        C::Livemode,
        C::ProductId,
        C::Active,
        C::Currency,
        C::UnitAmount,
        C::LookupKey,
        C::Nickname,
        C::RecurringInterval,
        C::RecurringIntervalCount,
    ];
    let rows = states.map(|p| {
        let mut row = writing.synced_values(&p.row);
        row.extend([
            Expr::val(p.livemode),
            Expr::val(p.product_id.clone()),
            Expr::val(p.active),
            Expr::val(p.currency.clone()),
            Expr::val(p.unit_amount),
            Expr::val(p.lookup_key.clone()),
            Expr::val(p.nickname.clone()),
            Expr::val(p.recurring_interval.clone()),
            Expr::val(p.recurring_interval_count),
        ]);
        row
    });
    let mut statement = insert_rows(prices::Entity, &columns, rows);
    statement.on_conflict(guarded(prices::Entity, PRICES_TIE, &columns));
    statement
}

fn entitlements_upsert<'a>(
    states: impl Iterator<Item = &'a EntitlementsState>,
    writing: WriteContext,
) -> InsertStatement {
    use entitlements::Column as C;
    let columns = [C::Livemode, C::LookupKeys];
    let rows = states.map(|e| {
        let mut row = writing.synced_values(&e.row);
        row.extend([Expr::val(e.livemode), writing.json(Some(&e.lookup_keys))]);
        row
    });
    let mut statement = insert_rows(entitlements::Entity, &columns, rows);
    statement.on_conflict(guarded(entitlements::Entity, ENTITLEMENTS_TIE, &columns));
    statement
}
