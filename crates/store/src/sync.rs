//! The projected state: typed changes to synced rows, and the guarded upserts that apply them.
//!
//! Every upsert carries its ordering (`ordering_key`, `ordering_rank`) and the SQL itself
//! decides whether it is newer than what is stored (`ON CONFLICT (id) DO UPDATE … WHERE …`).
//! No read-modify-write is involved, and writers take their locks in one order
//! ([`crate::changeset`]), so replicas can apply events concurrently and the newest state wins
//! whatever the arrival order.

use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};

use billing_sync_projection::Change;

use crate::changeset::{ChangeSet, apply_set};
use crate::entities::{organizations, users};

/// Applies one change inside the caller's transaction. Returns whether a row changed (false:
/// the stored state was newer).
pub(crate) async fn apply(db: &impl ConnectionTrait, change: &Change) -> Result<bool, DbErr> {
    Ok(apply_set(db, &ChangeSet::of([change])).await? > 0)
}

/// The subquery "ids of organizations that are deleted", for the membership queries.
pub(crate) fn deleted_organizations() -> SelectStatement {
    deleted_ids(
        organizations::Entity,
        organizations::Column::Id,
        organizations::Column::DeletedAt,
    )
}

/// The subquery "ids of users that are deleted", for the membership queries.
pub(crate) fn deleted_users() -> SelectStatement {
    deleted_ids(users::Entity, users::Column::Id, users::Column::DeletedAt)
}

fn deleted_ids<E: EntityTrait>(entity: E, id: E::Column, deleted_at: E::Column) -> SelectStatement {
    Query::select()
        .column(id)
        .from(entity)
        .and_where(is_tombstone(deleted_at))
        .to_owned()
}

/// Whether a synced row is a tombstone (the source deleted it; rows are never removed): the
/// one statement of the rule, for every query that must tell.
pub(crate) fn is_tombstone(
    deleted_at: impl sea_orm::sea_query::IntoColumnRef,
) -> sea_orm::sea_query::SimpleExpr {
    Expr::col(deleted_at).is_not_null()
}
