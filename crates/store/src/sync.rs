//! The projected state: typed changes to synced rows, and the guarded upserts that apply them.
//!
//! Every upsert carries its ordering (`ordering_key`, `ordering_rank`) and the SQL itself
//! decides whether it is newer than what is stored (`ON CONFLICT (id) DO UPDATE … WHERE …`).
//! No read-modify-write is involved, and writers take their locks in one order
//! ([`crate::changeset`]), so replicas can apply events concurrently and the newest state wins
//! whatever the arrival order.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbErr};

use billing_sync_projection::Change;

use crate::changeset::{ChangeSet, apply_set};
use crate::entities::{organizations, users};

/// Applies one change inside the caller's transaction. Returns whether a row changed (false:
/// the stored state was newer).
pub(crate) async fn apply(db: &impl ConnectionTrait, change: &Change) -> Result<bool, DbErr> {
    Ok(apply_set(db, &ChangeSet::of([change])).await? > 0)
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
