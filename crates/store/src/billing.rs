//! What every authenticated operation reads first: whether synced state revokes a session's
//! access, which Stripe customer bills the organization, and that customer's entitlements.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, JoinType, Order, Query, QueryStatementBuilder,
    SelectStatement,
};
use sea_orm::{ConnectionTrait, DbErr, IdenStatic, QueryResult};

use crate::Store;
use crate::entities::{
    organization_memberships, organizations, stripe_customers, stripe_entitlement_summaries,
    stripe_subscriptions, users,
};
use crate::error::StoreError;
use crate::plans::{
    OrganizationSubscription, SUBSCRIPTIONS_ORDER, organization_subscription, subscriptions_of,
};

/// Why the synced state withdraws access that a still-valid session token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The user's membership of the organization was deleted after the token was issued (or in
    /// the same second).
    MembershipDeleted,
    /// The organization is deleted.
    OrganizationDeleted,
    /// The user is deleted.
    UserDeleted,
}

/// Everything an authenticated operation reads for one request, fetched in one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalAccess {
    /// Why access is withdrawn, if it is.
    pub revocation: Option<Revocation>,
    /// The organization's Stripe customer: not deleted, the most recently updated if several.
    pub customer_id: Option<String>,
    /// That customer's active entitlements' lookup keys, sorted (none without a customer or a
    /// summary).
    pub entitlements: Vec<String>,
}

fn exists(query: SelectStatement) -> Expr {
    Expr::exists(query)
}

impl Store {
    /// Whether the synced state revokes `user_id`'s access to `organization_id` for a token
    /// issued at `issued_at`, and which customer bills the organization: one statement, so the
    /// portal pays one database round trip per request.
    pub async fn portal_access(
        &self,
        user_id: &str,
        organization_id: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<PortalAccess, StoreError> {
        let statement = access_of(user_id, organization_id, issued_at);
        let row = self
            .connection()
            .query_one(&statement)
            .await
            .map_err(|err| self.classify(err))?
            .ok_or_else(|| StoreError::Database(DbErr::RecordNotFound("portal access".into())))?;
        portal_access(&row).map_err(StoreError::Database)
    }

    /// [`Store::portal_access`] and the organization's subscriptions
    /// ([`Store::organization_subscriptions`]) in one statement: the billing state's one round
    /// trip. The subscriptions are read whether or not access is revoked; the caller decides.
    pub async fn organization_state(
        &self,
        user_id: &str,
        organization_id: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<(PortalAccess, Vec<OrganizationSubscription>), StoreError> {
        let (access, subscriptions) = (Alias::new("access"), Alias::new("subscription"));
        // One row per subscription, each carrying the access columns (one row of NULL
        // subscription columns when there is none); the order is the subscriptions'.
        let mut statement = Query::select();
        statement
            .column((access.clone(), Asterisk))
            .column((subscriptions.clone(), Asterisk))
            .from_subquery(access_of(user_id, organization_id, issued_at), access)
            .join_subquery(
                JoinType::LeftJoin,
                subscriptions_of(self.backend(), organization_id),
                subscriptions.clone(),
                Expr::val(1).eq(1),
            );
        for column in SUBSCRIPTIONS_ORDER {
            statement.order_by((subscriptions.clone(), column), Order::Desc);
        }
        let rows = self
            .connection()
            .query_all(&statement)
            .await
            .map_err(|err| self.classify(err))?;
        let first = rows.first().ok_or_else(|| {
            StoreError::Database(DbErr::RecordNotFound("organization state".into()))
        })?;
        let access = portal_access(first).map_err(StoreError::Database)?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Option<String> = row
                .try_get("", stripe_subscriptions::Column::Id.as_str())
                .map_err(StoreError::Database)?;
            if id.is_some() {
                listed.push(organization_subscription(row).map_err(StoreError::Database)?);
            }
        }
        Ok((access, listed))
    }
}

/// `SELECT` whether the synced state revokes `user_id`'s access to `organization_id` for a
/// token issued at `issued_at`, the organization's customer and its entitlements: one row, as
/// [`portal_access`] reads it.
fn access_of(user_id: &str, organization_id: &str, issued_at: DateTime<Utc>) -> SelectStatement {
    use organization_memberships::Column as M;
    let organization_deleted = Query::select()
        .expr(Expr::val(1))
        .from(organizations::Entity)
        .and_where(Expr::col(organizations::Column::Id).eq(organization_id))
        .and_where(crate::sync::is_tombstone(organizations::Column::DeletedAt))
        .to_owned();
    let user_deleted = Query::select()
        .expr(Expr::val(1))
        .from(users::Entity)
        .and_where(Expr::col(users::Column::Id).eq(user_id))
        .and_where(crate::sync::is_tombstone(users::Column::DeletedAt))
        .to_owned();
    let membership_removed = Query::select()
        .expr(Expr::val(1))
        .from(organization_memberships::Entity)
        .and_where(Expr::col(M::UserId).eq(user_id))
        .and_where(Expr::col(M::OrganizationId).eq(organization_id))
        // `iat` has one-second resolution, and so has a Clerk deletion's time: a token
        // issued in the very second of the deletion may predate it, so it is refused too.
        .and_where(Expr::col(M::DeletedAt).gte(issued_at))
        .to_owned();
    let customer_of = || {
        Query::select()
            .column(stripe_customers::Column::Id)
            .from(stripe_customers::Entity)
            .and_where(Expr::col(stripe_customers::Column::OrganizationId).eq(organization_id))
            .and_where(Expr::col(stripe_customers::Column::DeletedAt).is_null())
            .order_by(stripe_customers::Column::OrderingKey, Order::Desc)
            .order_by(stripe_customers::Column::Id, Order::Desc)
            .limit(1)
            .to_owned()
    };
    let customer = customer_of();
    let entitlements = Query::select()
        .column(stripe_entitlement_summaries::Column::LookupKeys)
        .from(stripe_entitlement_summaries::Entity)
        .and_where(
            Expr::col(stripe_entitlement_summaries::Column::Id).eq(Expr::SubQuery(
                None,
                Box::new(customer_of().into_sub_query_statement()),
            )),
        )
        .to_owned();
    Query::select()
        .expr_as(exists(organization_deleted), "organization_deleted")
        .expr_as(exists(user_deleted), "user_deleted")
        .expr_as(exists(membership_removed), "membership_removed")
        .expr_as(
            Expr::SubQuery(None, Box::new(customer.into_sub_query_statement())),
            "customer_id",
        )
        .expr_as(
            Expr::SubQuery(None, Box::new(entitlements.into_sub_query_statement())),
            "entitlements",
        )
        .to_owned()
}

/// The row of [`access_of`].
fn portal_access(row: &QueryResult) -> Result<PortalAccess, DbErr> {
    let flag = |name: &str| row.try_get::<bool>("", name);
    let revocation = if flag("organization_deleted")? {
        Some(Revocation::OrganizationDeleted)
    } else if flag("user_deleted")? {
        Some(Revocation::UserDeleted)
    } else if flag("membership_removed")? {
        Some(Revocation::MembershipDeleted)
    } else {
        None
    };
    Ok(PortalAccess {
        revocation,
        customer_id: row.try_get::<Option<String>>("", "customer_id")?,
        entitlements: crate::plans::string_array(
            row.try_get::<Option<serde_json::Value>>("", "entitlements")?,
        ),
    })
}
