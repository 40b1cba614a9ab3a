//! Applying objects listed from a source's API (a backfill) through the same guarded upserts
//! as events, page by page, each page committed together with the checkpoint that follows it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PrimaryKeyTrait,
    QueryFilter, QuerySelect, TransactionTrait,
};
use serde_json::Value;

use crate::Store;
use crate::entities::{
    backfill_checkpoints, credit_grants, organization_memberships, organizations, stripe_customers,
    stripe_entitlement_summaries, stripe_prices, stripe_products, stripe_subscriptions, users,
};
use crate::error::StoreError;
use billing_sync_projection::Change;

use crate::sync::apply;

/// What applying one listed object did to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The row did not exist.
    Created,
    /// The row held older, different content.
    Updated,
    /// The row already held this content, or a newer state.
    Unchanged,
}

/// Counts of a backfill pass over one resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Objects listed.
    pub seen: u64,
    /// Rows created.
    pub created: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows already up to date.
    pub unchanged: u64,
    /// Objects that could not be read.
    pub failed: u64,
}

impl Tally {
    /// Counts one object.
    pub fn count(&mut self, outcome: Option<Outcome>) {
        self.seen += 1;
        match outcome {
            Some(Outcome::Created) => self.created += 1,
            Some(Outcome::Updated) => self.updated += 1,
            Some(Outcome::Unchanged) => self.unchanged += 1,
            None => self.failed += 1,
        }
    }

    /// The sum of two tallies.
    pub fn plus(self, other: Tally) -> Tally {
        Tally {
            seen: self.seen + other.seen,
            created: self.created + other.created,
            updated: self.updated + other.updated,
            unchanged: self.unchanged + other.unchanged,
            failed: self.failed + other.failed,
        }
    }
}

/// Where an interrupted pass over a resource resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The source's cursor for the next page.
    pub cursor: String,
    /// What the pass counted before the interruption.
    pub tally: Tally,
    /// When the pass started.
    pub started_at: DateTime<Utc>,
}

/// One listed object: the changes it makes, or why it could not be read (with its id if known).
pub type ListedObject = Result<Vec<Change>, String>;

impl Store {
    /// The checkpoint of an interrupted pass over `resource`, if any.
    pub async fn backfill_checkpoint(
        &self,
        resource: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let row = backfill_checkpoints::Entity::find_by_id(resource.to_owned())
            .one(self.connection())
            .await?;
        Ok(row.map(|row| Checkpoint {
            cursor: row.cursor,
            tally: Tally {
                seen: unsigned(row.seen),
                created: unsigned(row.created),
                updated: unsigned(row.updated),
                unchanged: unsigned(row.unchanged),
                failed: unsigned(row.failed),
            },
            started_at: row.started_at,
        }))
    }

    /// Up to `limit` ids of customers that are not deleted, in id order, after `after`: the
    /// customers whose entitlements a backfill reads.
    pub async fn customer_ids_after(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        use stripe_customers::Column as C;
        let mut query = stripe_customers::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::DeletedAt.is_null())
            .order_by_asc(C::Id)
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(C::Id.gt(after));
        }
        query
            .into_tuple()
            .all(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }

    /// Forgets the checkpoint of `resource`, so that the next pass starts from the beginning.
    pub async fn forget_backfill_checkpoint(&self, resource: &str) -> Result<(), StoreError> {
        backfill_checkpoints::Entity::delete_by_id(resource.to_owned())
            .exec(self.connection())
            .await?;
        Ok(())
    }

    /// Applies one page of listed objects and, in the same transaction, records where the
    /// pass resumes: `next` is the cursor of the following page (`None`: the listing is
    /// complete and the checkpoint is removed), `before` what the pass counted before this
    /// page. Returns this page's counts.
    pub async fn apply_backfill_page(
        &self,
        resource: &str,
        objects: &[ListedObject],
        next: Option<&str>,
        before: &Checkpoint,
    ) -> Result<Tally, StoreError> {
        let txn = self.connection().begin().await?;
        let mut page = Tally::default();
        for object in objects {
            match object {
                Ok(changes) => page.count(Some(apply_listed(&txn, changes).await?)),
                Err(_) => page.count(None),
            }
        }
        match next {
            Some(cursor) => {
                let total = before.tally.plus(page);
                use backfill_checkpoints::Column as C;
                let row = backfill_checkpoints::ActiveModel {
                    resource: Set(resource.to_owned()),
                    cursor: Set(cursor.to_owned()),
                    seen: Set(signed(total.seen)),
                    created: Set(signed(total.created)),
                    updated: Set(signed(total.updated)),
                    unchanged: Set(signed(total.unchanged)),
                    failed: Set(signed(total.failed)),
                    started_at: Set(before.started_at),
                    updated_at: Set(Utc::now()),
                };
                backfill_checkpoints::Entity::insert(row)
                    .on_conflict(
                        OnConflict::column(C::Resource)
                            .update_columns([
                                C::Cursor,
                                C::Seen,
                                C::Created,
                                C::Updated,
                                C::Unchanged,
                                C::Failed,
                                C::UpdatedAt,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(&txn)
                    .await?;
            }
            None => {
                backfill_checkpoints::Entity::delete_by_id(resource.to_owned())
                    .exec(&txn)
                    .await?;
            }
        }
        txn.commit().await?;
        Ok(page)
    }
}

/// Applies the changes of one listed object; the outcome is that of the first change (the
/// object itself; the rest are snapshots it embeds).
async fn apply_listed(db: &impl ConnectionTrait, changes: &[Change]) -> Result<Outcome, DbErr> {
    let Some((object, embedded)) = changes.split_first() else {
        return Ok(Outcome::Unchanged);
    };
    let stored = stored_raw(db, object).await?;
    let written = apply(db, object).await?;
    for change in embedded {
        apply(db, change).await?;
    }
    Ok(match stored {
        None => Outcome::Created,
        Some(raw) if written && raw != Some(raw_of(object)) => Outcome::Updated,
        // Either the content is the same (only the ordering key moved on), or the stored state
        // is newer than the listing and stays.
        Some(_) => Outcome::Unchanged,
    })
}

/// The listed object as a JSON value, to compare with the stored one (a delivery's text and a
/// listing's need not be spelled alike).
fn raw_of(change: &Change) -> Value {
    change.row().map_or(Value::Null, |row| row.raw.to_value())
}

/// The stored `raw` of the row `change` is about: `None` when there is no row.
async fn stored_raw(
    db: &impl ConnectionTrait,
    change: &Change,
) -> Result<Option<Option<Value>>, DbErr> {
    // The `raw` column of `table`'s row `id`.
    macro_rules! raw {
        ($table:ident, $id:expr) => {
            raw_column::<$table::Entity>(db, $id, $table::Column::Raw).await
        };
    }
    match change {
        Change::Organization(state) => raw!(organizations, &state.row.id),
        Change::User(state) | Change::UserSnapshot(state) => raw!(users, &state.row.id),
        Change::Membership(state) => raw!(organization_memberships, &state.row.id),
        Change::Customer(state) => raw!(stripe_customers, &state.row.id),
        Change::CustomerLink(link) => raw!(stripe_customers, &link.customer_id),
        Change::Subscription(state) => raw!(stripe_subscriptions, &state.row.id),
        Change::Product(state) => raw!(stripe_products, &state.row.id),
        Change::Price(state) => raw!(stripe_prices, &state.row.id),
        Change::Entitlements(state) => raw!(stripe_entitlement_summaries, &state.row.id),
        // A purchase's row is its grant: there when its reference is.
        Change::CreditPurchase(purchase) => credit_grants::Entity::find()
            .select_only()
            .column(credit_grants::Column::Id)
            .filter(credit_grants::Column::Reference.eq(purchase.reference.as_str()))
            .into_tuple::<i64>()
            .one(db)
            .await
            .map(|grant| grant.map(|_| None)),
        // Refunds are not listed.
        Change::ChargeRefund(_) => Ok(None),
    }
}

async fn raw_column<E>(
    db: &impl ConnectionTrait,
    id: &str,
    column: E::Column,
) -> Result<Option<Option<Value>>, DbErr>
where
    E: EntityTrait,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<String>,
{
    E::find_by_id(id.to_owned())
        .select_only()
        .column(column)
        .into_tuple::<Option<String>>()
        .one(db)
        .await
        .map(|stored| {
            stored.map(|raw| raw.map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)))
        })
}

fn signed(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn unsigned(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}
