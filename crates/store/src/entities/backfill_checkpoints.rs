//! `backfill_checkpoints`: where an interrupted backfill resumes.

use sea_orm::entity::prelude::*;

/// The progress of one resource's listing (`stripe/customers`, `clerk/users`, …).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "backfill_checkpoints")]
pub struct Model {
    /// `provider/resource`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource: String,
    /// The source's cursor for the next page (Stripe's `starting_after`, Clerk's `offset`).
    pub cursor: String,
    /// Objects listed so far in this pass.
    pub seen: i64,
    /// Of those, rows created.
    pub created: i64,
    /// Rows updated.
    pub updated: i64,
    /// Rows already up to date (or newer).
    pub unchanged: i64,
    /// Objects that could not be read (logged by id, left as they were).
    pub failed: i64,
    /// When this pass started.
    pub started_at: DateTimeUtc,
    /// When the last page was committed.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
