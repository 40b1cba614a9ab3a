//! The projected state: typed changes to synced rows, and the guarded upserts that apply them.
//!
//! Every upsert carries its ordering (`ordering_key`, `ordering_rank`) and the SQL itself
//! decides whether it is newer than what is stored (`ON CONFLICT (id) DO UPDATE … WHERE …`).
//! No lock and no read-modify-write is involved, so replicas can apply events concurrently and
//! the newest state wins whatever the arrival order.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
};
use serde_json::Value;

use crate::entities::{
    organization_memberships, organizations, stripe_customers, stripe_subscriptions, users,
};

/// Where a state stands among the states of one object with the same `ordering_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i16)]
pub enum Rank {
    /// A `*.created` event, or a snapshot of the object embedded in another object's event:
    /// loses to any other state at the same key.
    Initial = 0,
    /// Any other event of the object.
    Update = 1,
    /// A terminal state (deleted; a canceled subscription): beats everything at the same key
    /// and is never replaced by a non-terminal state.
    Terminal = 2,
}

/// The ordering of one state of a synced object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// The source's ordering key: Stripe's event `created` (s), Clerk's `updated_at` (ms).
    pub key: i64,
    /// The tie-break at equal key.
    pub rank: Rank,
}

/// What two updates of one object with the same key and rank do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tie {
    /// The later arrival wins: Stripe's `created` has one-second resolution, so two real
    /// updates within a second are indistinguishable by key (a documented limit).
    LaterArrivalWins,
    /// The stored state stays: Clerk's millisecond `updated_at` makes equal keys the same state.
    StoredWins,
}

/// A Clerk organization's state.
#[derive(Clone, Debug, PartialEq)]
pub struct OrganizationState {
    /// `org_…`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// URL slug.
    pub slug: Option<String>,
    /// The source object.
    pub raw: Value,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A Clerk user's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UserState {
    /// `user_…`.
    pub id: String,
    /// The primary email address.
    pub primary_email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// The source object.
    pub raw: Value,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A Clerk organization membership's state.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipState {
    /// `orgmem_…`.
    pub id: String,
    /// The organization.
    pub organization_id: String,
    /// The member.
    pub user_id: String,
    /// The role, e.g. `org:admin`.
    pub role: Option<String>,
    /// The source object.
    pub raw: Value,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A Stripe customer's state.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerState {
    /// `cus_…`.
    pub id: String,
    /// The organization named in the customer's metadata, if any.
    pub organization_id: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Live or test mode.
    pub livemode: bool,
    /// The source object.
    pub raw: Value,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A completed checkout's statement that a customer bills an organization.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerLink {
    /// `cus_…`.
    pub customer_id: String,
    /// The organization it bills.
    pub organization_id: String,
    /// Live or test mode.
    pub livemode: bool,
}

/// A Stripe subscription's state.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionState {
    /// `sub_…`.
    pub id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// The organization named in the subscription's metadata, if any (else its customer's).
    pub organization_id: Option<String>,
    /// Stripe's status, as it comes.
    pub status: String,
    /// Whether it cancels at period end.
    pub cancel_at_period_end: bool,
    /// Scheduled cancellation.
    pub cancel_at: Option<DateTime<Utc>>,
    /// When canceled.
    pub canceled_at: Option<DateTime<Utc>>,
    /// When ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Trial end.
    pub trial_end: Option<DateTime<Utc>>,
    /// Current period start.
    pub current_period_start: Option<DateTime<Utc>>,
    /// Current period end.
    pub current_period_end: Option<DateTime<Utc>>,
    /// The items, as `[{id, price_id, product_id, quantity, …}]`.
    pub items: Value,
    /// Live or test mode.
    pub livemode: bool,
    /// The source object.
    pub raw: Value,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One change an event makes to the synced state.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Upsert an organization.
    Organization(OrganizationState),
    /// Upsert a user.
    User(UserState),
    /// Insert a user known only from a membership's embedded `public_user_data`, unless the
    /// user is already stored.
    UserSnapshot(UserState),
    /// Upsert a membership.
    Membership(MembershipState),
    /// Upsert a customer.
    Customer(CustomerState),
    /// Link a customer to an organization (creating the customer row when missing).
    CustomerLink(CustomerLink),
    /// Upsert a subscription.
    Subscription(SubscriptionState),
}

/// The `WHERE` of a guarded upsert on `table`: the incoming state (`excluded`) replaces the
/// stored one only when it is newer by `(ordering_key, ordering_rank)`, and a terminal state
/// is only ever replaced by a newer terminal state.
fn newer_than_stored(table: &str, tie: Tie) -> Expr {
    let same_rank_update = match tie {
        Tie::LaterArrivalWins => format!(
            " OR (excluded.ordering_rank = {update} AND {table}.ordering_rank = {update})",
            update = Rank::Update as i16
        ),
        Tie::StoredWins => String::new(),
    };
    Expr::cust(format!(
        "({table}.ordering_rank < {terminal} OR excluded.ordering_rank = {terminal}) \
         AND (excluded.ordering_key > {table}.ordering_key \
              OR (excluded.ordering_key = {table}.ordering_key \
                  AND (excluded.ordering_rank > {table}.ordering_rank{same_rank_update})))",
        terminal = Rank::Terminal as i16
    ))
}

/// The columns every synced table has, replaced together when an upsert wins.
const SYNCED_COLUMNS: [&str; 5] = [
    "raw",
    "ordering_key",
    "ordering_rank",
    "deleted_at",
    "synced_at",
];

/// `ON CONFLICT (id) DO UPDATE SET <synced columns and columns> WHERE <newer than stored>`.
fn guarded_upsert(table: &str, tie: Tie, columns: &[&str]) -> OnConflict {
    OnConflict::column(Alias::new("id"))
        .update_columns(SYNCED_COLUMNS.iter().chain(columns).map(|c| Alias::new(*c)))
        .action_and_where(newer_than_stored(table, tie))
        .to_owned()
}

/// Applies one change inside the caller's transaction. Returns whether a row changed (false:
/// the stored state was newer).
pub async fn apply(db: &impl ConnectionTrait, change: &Change) -> Result<bool, DbErr> {
    let now = Utc::now();
    let rows = match change {
        Change::Organization(org) => {
            let row = organizations::ActiveModel {
                id: Set(org.id.clone()),
                raw: Set(Some(org.raw.clone())),
                ordering_key: Set(org.version.key),
                ordering_rank: Set(org.version.rank as i16),
                deleted_at: Set(org.deleted_at),
                synced_at: Set(now),
                name: Set(org.name.clone()),
                slug: Set(org.slug.clone()),
            };
            let on_conflict = guarded_upsert("organizations", Tie::StoredWins, &["name", "slug"]);
            insert_rows(
                organizations::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?
        }
        Change::User(user) | Change::UserSnapshot(user) => {
            use users::Column as C;
            let row = users::ActiveModel {
                id: Set(user.id.clone()),
                raw: Set(Some(user.raw.clone())),
                ordering_key: Set(user.version.key),
                ordering_rank: Set(user.version.rank as i16),
                deleted_at: Set(user.deleted_at),
                synced_at: Set(now),
                primary_email: Set(user.primary_email.clone()),
                first_name: Set(user.first_name.clone()),
                last_name: Set(user.last_name.clone()),
            };
            let on_conflict = if matches!(change, Change::UserSnapshot(_)) {
                // A membership's `public_user_data` has no `updated_at`: it can only fill a
                // gap, never replace a user we know from the user's own events.
                OnConflict::column(C::Id).do_nothing().to_owned()
            } else {
                guarded_upsert(
                    "users",
                    Tie::StoredWins,
                    &["primary_email", "first_name", "last_name"],
                )
            };
            insert_rows(
                users::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?
        }
        Change::Membership(membership) => {
            let row = organization_memberships::ActiveModel {
                id: Set(membership.id.clone()),
                raw: Set(Some(membership.raw.clone())),
                ordering_key: Set(membership.version.key),
                ordering_rank: Set(membership.version.rank as i16),
                deleted_at: Set(membership.deleted_at),
                synced_at: Set(now),
                organization_id: Set(membership.organization_id.clone()),
                user_id: Set(membership.user_id.clone()),
                role: Set(membership.role.clone()),
            };
            let on_conflict = guarded_upsert(
                "organization_memberships",
                Tie::StoredWins,
                &["organization_id", "user_id", "role"],
            );
            insert_rows(
                organization_memberships::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?
        }
        Change::Customer(customer) => {
            use stripe_customers::Column as C;
            let row = stripe_customers::ActiveModel {
                id: Set(customer.id.clone()),
                raw: Set(Some(customer.raw.clone())),
                ordering_key: Set(customer.version.key),
                ordering_rank: Set(customer.version.rank as i16),
                deleted_at: Set(customer.deleted_at),
                synced_at: Set(now),
                livemode: Set(customer.livemode),
                organization_id: Set(customer.organization_id.clone()),
                email: Set(customer.email.clone()),
                name: Set(customer.name.clone()),
            };
            let on_conflict = OnConflict::column(C::Id)
                .update_columns([
                    C::Raw,
                    C::OrderingKey,
                    C::OrderingRank,
                    C::DeletedAt,
                    C::SyncedAt,
                    C::Livemode,
                    C::Email,
                    C::Name,
                ])
                // A link made by a checkout stays when the customer's metadata names no
                // organization, whichever arrived first.
                .value(
                    C::OrganizationId,
                    Expr::cust(
                        "COALESCE(excluded.organization_id, stripe_customers.organization_id)",
                    ),
                )
                .action_and_where(newer_than_stored("stripe_customers", Tie::LaterArrivalWins))
                .to_owned();
            let rows = insert_rows(
                stripe_customers::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?;
            if let Some(organization_id) = &customer.organization_id {
                adopt_customer_organization(db, &customer.id, organization_id).await?;
            }
            rows
        }
        Change::CustomerLink(link) => {
            use stripe_customers::Column as C;
            // A placeholder at key 0: the customer's own events, whenever they arrive, replace
            // everything but the link.
            let row = stripe_customers::ActiveModel {
                id: Set(link.customer_id.clone()),
                raw: Set(None),
                ordering_key: Set(0),
                ordering_rank: Set(Rank::Initial as i16),
                deleted_at: Set(None),
                synced_at: Set(now),
                livemode: Set(link.livemode),
                organization_id: Set(Some(link.organization_id.clone())),
                email: Set(None),
                name: Set(None),
            };
            let on_conflict = OnConflict::column(C::Id)
                .update_columns([C::OrganizationId, C::SyncedAt])
                .action_and_where(Expr::cust("stripe_customers.organization_id IS NULL"))
                .to_owned();
            let rows = insert_rows(
                stripe_customers::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?;
            adopt_customer_organization(db, &link.customer_id, &link.organization_id).await?;
            rows
        }
        Change::Subscription(subscription) => {
            use stripe_subscriptions::Column as C;
            let organization_id = match &subscription.organization_id {
                Some(id) => Some(id.clone()),
                None => customer_organization(db, &subscription.customer_id).await?,
            };
            let row = stripe_subscriptions::ActiveModel {
                id: Set(subscription.id.clone()),
                raw: Set(Some(subscription.raw.clone())),
                ordering_key: Set(subscription.version.key),
                ordering_rank: Set(subscription.version.rank as i16),
                deleted_at: Set(subscription.deleted_at),
                synced_at: Set(now),
                livemode: Set(subscription.livemode),
                customer_id: Set(subscription.customer_id.clone()),
                organization_id: Set(organization_id),
                status: Set(subscription.status.clone()),
                cancel_at_period_end: Set(subscription.cancel_at_period_end),
                cancel_at: Set(subscription.cancel_at),
                canceled_at: Set(subscription.canceled_at),
                ended_at: Set(subscription.ended_at),
                trial_end: Set(subscription.trial_end),
                current_period_start: Set(subscription.current_period_start),
                current_period_end: Set(subscription.current_period_end),
                items: Set(subscription.items.clone()),
            };
            let on_conflict = guarded_upsert(
                "stripe_subscriptions",
                Tie::LaterArrivalWins,
                &[
                    "livemode",
                    "customer_id",
                    "status",
                    "cancel_at_period_end",
                    "cancel_at",
                    "canceled_at",
                    "ended_at",
                    "trial_end",
                    "current_period_start",
                    "current_period_end",
                    "items",
                ],
            )
            .value(
                C::OrganizationId,
                Expr::cust(
                    "COALESCE(excluded.organization_id, stripe_subscriptions.organization_id)",
                ),
            )
            .to_owned();
            insert_rows(
                stripe_subscriptions::Entity::insert(row)
                    .on_conflict(on_conflict)
                    .exec_without_returning(db)
                    .await,
            )?
        }
    };
    Ok(rows > 0)
}

/// `ON CONFLICT … DO NOTHING` and a guard that filters the update out both mean "0 rows".
fn insert_rows(result: Result<u64, DbErr>) -> Result<u64, DbErr> {
    match result {
        Err(DbErr::RecordNotInserted) => Ok(0),
        other => other,
    }
}

/// The organization of a customer, when known.
async fn customer_organization(
    db: &impl ConnectionTrait,
    customer_id: &str,
) -> Result<Option<String>, DbErr> {
    Ok(stripe_customers::Entity::find_by_id(customer_id.to_owned())
        .select_only()
        .column(stripe_customers::Column::OrganizationId)
        .into_tuple::<Option<String>>()
        .one(db)
        .await?
        .flatten())
}

/// Subscriptions that arrived before their customer's organization was known inherit it now,
/// so the result does not depend on which arrived first.
async fn adopt_customer_organization(
    db: &impl ConnectionTrait,
    customer_id: &str,
    organization_id: &str,
) -> Result<(), DbErr> {
    stripe_subscriptions::Entity::update_many()
        .col_expr(
            stripe_subscriptions::Column::OrganizationId,
            Expr::val(organization_id.to_owned()),
        )
        .filter(stripe_subscriptions::Column::CustomerId.eq(customer_id))
        .filter(stripe_subscriptions::Column::OrganizationId.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The subquery "ids of organizations that are deleted", for the membership queries.
pub(crate) fn deleted_organizations() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(organizations::Column::Id)
        .from(organizations::Entity)
        .and_where(Expr::col(organizations::Column::DeletedAt).is_not_null())
        .to_owned()
}

/// The subquery "ids of users that are deleted", for the membership queries.
pub(crate) fn deleted_users() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(users::Column::Id)
        .from(users::Entity)
        .and_where(Expr::col(users::Column::DeletedAt).is_not_null())
        .to_owned()
}
