//! What the plans page reads: the plan catalog, and an organization's subscriptions and
//! entitlements. Database only: a read never calls Stripe.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IdenStatic, QueryFilter, QueryResult,
    QuerySelect,
};
use serde_json::Value;

use crate::Store;
use crate::entities::{
    stripe_prices as prices, stripe_products as products, stripe_subscriptions as subscriptions,
    users,
};
use crate::error::StoreError;

/// The subscription statuses in which an organization is on its plan: `active`, `trialing`,
/// and `past_due` (Stripe is still retrying the payment and the subscription stays in force).
pub const ACTIVE_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

/// A product of the catalog with its active prices.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogProduct {
    /// `prod_…`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// The marketing features' names, in Stripe's order.
    pub marketing_features: Vec<String>,
    /// Its active prices, cheapest first.
    pub prices: Vec<CatalogPrice>,
}

/// A price of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogPrice {
    /// `price_…`.
    pub id: String,
    /// The `prod_…` it prices.
    pub product_id: String,
    /// Whether the price and its product can be bought: both active, neither deleted.
    pub purchasable: bool,
    /// `lookup_key`.
    pub lookup_key: Option<String>,
    /// `nickname`.
    pub nickname: Option<String>,
    /// Amount in the currency's smallest unit; none for tiered or customer-chosen amounts.
    pub unit_amount: Option<i64>,
    /// ISO currency code, lower case.
    pub currency: String,
    /// `(interval, interval_count)` of a recurring price; none for a one-time price.
    pub recurring: Option<(String, i64)>,
}

/// One item of a subscription, joined to its price and product.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionItem {
    /// `price_…`.
    pub price_id: Option<String>,
    /// `prod_…`.
    pub product_id: Option<String>,
    /// The product's name, when the product is synced.
    pub product_name: Option<String>,
    /// Quantity.
    pub quantity: Option<i64>,
}

/// A subscription of an organization.
#[derive(Clone, Debug, PartialEq)]
pub struct OrganizationSubscription {
    /// `sub_…`.
    pub id: String,
    /// Stripe's status, as it comes.
    pub status: String,
    /// Its items.
    pub items: Vec<SubscriptionItem>,
    /// End of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Whether it cancels at the end of the period.
    pub cancel_at_period_end: bool,
    /// Scheduled cancellation.
    pub cancel_at: Option<DateTime<Utc>>,
    /// End of the trial.
    pub trial_end: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

impl OrganizationSubscription {
    /// Whether the organization is on this subscription's plan ([`ACTIVE_STATUSES`]).
    pub fn is_active(&self) -> bool {
        ACTIVE_STATUSES.contains(&self.status.as_str())
    }
}

/// Whether an organization with these subscriptions is on a paid plan: one of them is active.
/// The billing state's `active` and checkout's refusal of a second subscription both ask this.
pub fn on_paid_plan(subscriptions: &[OrganizationSubscription]) -> bool {
    subscriptions
        .iter()
        .any(OrganizationSubscription::is_active)
}

/// How many subscriptions [`Store::organization_subscriptions`] lists, the most recently
/// changed first.
pub const SUBSCRIPTIONS_LISTED: u64 = 100;

type PriceRow = (
    String,
    String,
    bool,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<DateTime<Utc>>,
);

fn price_columns<S: QuerySelect>(select: S) -> S {
    use prices::Column as P;
    select.select_only().columns([
        P::Id,
        P::ProductId,
        P::Active,
        P::Currency,
        P::UnitAmount,
        P::LookupKey,
        P::Nickname,
        P::RecurringInterval,
        P::RecurringIntervalCount,
        P::DeletedAt,
    ])
}

fn catalog_price(row: PriceRow, product_purchasable: bool) -> CatalogPrice {
    let (
        id,
        product_id,
        active,
        currency,
        unit_amount,
        lookup_key,
        nickname,
        interval,
        count,
        deleted_at,
    ) = row;
    CatalogPrice {
        id,
        product_id,
        purchasable: product_purchasable && active && deleted_at.is_none(),
        lookup_key,
        nickname,
        unit_amount,
        currency,
        recurring: interval.map(|interval| (interval, count.unwrap_or(1))),
    }
}

/// Cheapest first; prices without a unit amount last; then by id, so the order is total.
fn price_order(price: &CatalogPrice) -> (bool, i64, &str) {
    (
        price.unit_amount.is_none(),
        price.unit_amount.unwrap_or(0),
        price.id.as_str(),
    )
}

/// By the cheapest price (products whose prices have no unit amount last), then name, then id.
/// Borrows, so sorting copies no string.
fn product_order(product: &CatalogProduct) -> (bool, i64, Option<&str>, &str) {
    let (no_amount, amount, _) = product.prices.first().map_or((true, 0, ""), price_order);
    (
        no_amount,
        amount,
        product.name.as_deref(),
        product.id.as_str(),
    )
}

type ProductRow = (String, Option<String>, Option<String>, Value);

/// The strings of a JSON array of strings (as the catalog and the entitlements store them);
/// empty for anything else.
pub(crate) fn string_array(value: impl Into<Option<Value>>) -> Vec<String> {
    match value.into() {
        Some(Value::Array(names)) => names
            .into_iter()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl Store {
    /// The catalog: active products that are not deleted, each with its active prices that
    /// are not deleted; products without such a price are left out (nothing to buy). Products
    /// in the order of their cheapest price (those without a unit amount last), then name,
    /// then id; prices cheapest first, then by id.
    pub async fn catalog(&self) -> Result<Vec<CatalogProduct>, StoreError> {
        use products::Column as P;
        let db = self.connection();
        let product_rows: Vec<ProductRow> = products::Entity::find()
            .select_only()
            .columns([P::Id, P::Name, P::Description, P::MarketingFeatures])
            .filter(P::Active.eq(true))
            .filter(P::DeletedAt.is_null())
            .into_tuple()
            .all(db)
            .await
            .map_err(|err| self.classify(err))?;
        let price_rows: Vec<PriceRow> = price_columns(prices::Entity::find())
            .filter(prices::Column::Active.eq(true))
            .filter(prices::Column::DeletedAt.is_null())
            .into_tuple()
            .all(db)
            .await
            .map_err(|err| self.classify(err))?;
        let mut by_product: HashMap<String, Vec<CatalogPrice>> = HashMap::new();
        for row in price_rows {
            let price = catalog_price(row, true);
            by_product
                .entry(price.product_id.clone())
                .or_default()
                .push(price);
        }
        let mut catalog: Vec<CatalogProduct> = product_rows
            .into_iter()
            .filter_map(|(id, name, description, features)| {
                let mut prices = by_product.remove(&id)?;
                prices.sort_by(|a, b| price_order(a).cmp(&price_order(b)));
                Some(CatalogProduct {
                    id,
                    name,
                    description,
                    marketing_features: string_array(features),
                    prices,
                })
            })
            .collect();
        catalog.sort_by(|a, b| product_order(a).cmp(&product_order(b)));
        Ok(catalog)
    }

    /// One price, with whether it can be bought now (it and its product active and not
    /// deleted); `None` when the price is not synced.
    pub async fn price(&self, price_id: &str) -> Result<Option<CatalogPrice>, StoreError> {
        let db = self.connection();
        let Some(row): Option<PriceRow> = price_columns(prices::Entity::find_by_id(price_id))
            .into_tuple()
            .one(db)
            .await
            .map_err(|err| self.classify(err))?
        else {
            return Ok(None);
        };
        let product_purchasable = products::Entity::find_by_id(row.1.clone())
            .select_only()
            .column(products::Column::Id)
            .filter(products::Column::Active.eq(true))
            .filter(products::Column::DeletedAt.is_null())
            .into_tuple::<String>()
            .one(db)
            .await
            .map_err(|err| self.classify(err))?
            .is_some();
        Ok(Some(catalog_price(row, product_purchasable)))
    }

    /// The organization's subscriptions, their items joined to their products' names in the
    /// same statement (one round trip).
    pub async fn organization_subscriptions(
        &self,
        organization_id: &str,
    ) -> Result<Vec<OrganizationSubscription>, StoreError> {
        let statement = subscriptions_of(self.backend(), organization_id);
        let rows = self
            .connection()
            .query_all(&statement)
            .await
            .map_err(|err| self.classify(err))?;
        rows.iter()
            .map(organization_subscription)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Database)
    }

    /// The user's primary email, when the user is synced and not deleted.
    pub async fn primary_email(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(users::Entity::find_by_id(user_id)
            .select_only()
            .column(users::Column::PrimaryEmail)
            .filter(users::Column::DeletedAt.is_null())
            .into_tuple::<Option<String>>()
            .one(self.connection())
            .await
            .map_err(|err| self.classify(err))?
            .flatten())
    }
}

/// The order the organization's subscriptions are listed in, each column descending: most
/// recently changed first, the id breaking ties.
pub(crate) const SUBSCRIPTIONS_ORDER: [subscriptions::Column; 2] = [
    subscriptions::Column::OrderingKey,
    subscriptions::Column::Id,
];

/// `SELECT` the organization's subscriptions (in [`SUBSCRIPTIONS_ORDER`], at most
/// [`SUBSCRIPTIONS_LISTED`]) with their products' names, as [`organization_subscription`]
/// reads them.
pub(crate) fn subscriptions_of(
    backend: sea_orm::DbBackend,
    organization_id: &str,
) -> SelectStatement {
    use subscriptions::Column as S;
    let mut select = Query::select();
    select
        .columns([
            S::Id,
            S::Status,
            S::Items,
            S::CurrentPeriodEnd,
            S::CancelAtPeriodEnd,
            S::CancelAt,
            S::TrialEnd,
            S::EndedAt,
            S::OrderingKey,
        ])
        .expr_as(product_names(backend), "product_names")
        .from(subscriptions::Entity)
        .and_where(Expr::col(S::OrganizationId).eq(organization_id))
        .limit(SUBSCRIPTIONS_LISTED);
    for column in SUBSCRIPTIONS_ORDER {
        select.order_by(column, Order::Desc);
    }
    select
}

/// One row of [`subscriptions_of`].
pub(crate) fn organization_subscription(
    row: &QueryResult,
) -> Result<OrganizationSubscription, DbErr> {
    use subscriptions::Column as S;
    let column = |c: S| c.as_str();
    let names = match row.try_get::<Option<Value>>("", "product_names")? {
        // SQLite's JSON functions answer text.
        Some(Value::String(text)) => serde_json::from_str(&text).ok(),
        other => other,
    };
    let mut items = stored_items(&row.try_get::<Value>("", column(S::Items))?);
    for item in &mut items {
        item.product_name = names
            .as_ref()
            .zip(item.product_id.as_deref())
            .and_then(|(names, id)| names.get(id))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    Ok(OrganizationSubscription {
        id: row.try_get("", column(S::Id))?,
        status: row.try_get("", column(S::Status))?,
        items,
        current_period_end: row.try_get("", column(S::CurrentPeriodEnd))?,
        cancel_at_period_end: row.try_get("", column(S::CancelAtPeriodEnd))?,
        cancel_at: row.try_get("", column(S::CancelAt))?,
        trial_end: row.try_get("", column(S::TrialEnd))?,
        ended_at: row.try_get("", column(S::EndedAt))?,
    })
}

/// `{product id: name}` of the products a subscription row's items name: a correlated
/// subquery over the row's `items` JSON, in each backend's JSON functions.
fn product_names(backend: sea_orm::DbBackend) -> Expr {
    Expr::cust(match backend {
        sea_orm::DbBackend::Postgres => {
            "(SELECT jsonb_object_agg(p.id, p.name) FROM stripe_products p WHERE p.id IN \
             (SELECT item->>'product_id' FROM jsonb_array_elements(stripe_subscriptions.items) item))"
        }
        _ => {
            "(SELECT json_group_object(p.id, p.name) FROM stripe_products p WHERE p.id IN \
             (SELECT json_extract(item.value, '$.product_id') \
              FROM json_each(stripe_subscriptions.items) item))"
        }
    })
}

/// The items as the subscription projection stores them: `[{price_id, product_id, quantity}]`.
fn stored_items(items: &Value) -> Vec<SubscriptionItem> {
    let text =
        |item: &Value, field: &str| item.get(field).and_then(Value::as_str).map(str::to_owned);
    items
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| SubscriptionItem {
            price_id: text(item, "price_id"),
            product_id: text(item, "product_id"),
            product_name: None,
            quantity: item.get("quantity").and_then(Value::as_i64),
        })
        .collect()
}
