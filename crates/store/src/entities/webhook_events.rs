//! `webhook_events`: the ledger of every verified delivery, unique per `(provider, event_id)`.

use sea_orm::entity::prelude::*;

/// One verified delivery and what became of it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    /// Surrogate key, in arrival order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `stripe` or `clerk`.
    pub provider: String,
    /// The source's id of the event: Stripe's `evt_…`, Svix's `msg_…` for Clerk.
    pub event_id: String,
    /// The source's event type, e.g. `customer.updated`.
    pub event_type: String,
    /// Stripe's `api_version` of the payload; none for Clerk.
    pub api_version: Option<String>,
    /// Stripe's `livemode`; none for Clerk.
    pub livemode: Option<bool>,
    /// When the source says the event happened, in unix seconds: Stripe's `created`, or the
    /// `svix-timestamp` of the delivery for Clerk.
    pub event_created: Option<i64>,
    /// The event exactly as received.
    pub payload: String,
    /// When we first received it.
    pub received_at: DateTimeUtc,
    /// When it was last applied (or recorded as ignored or failed).
    pub processed_at: Option<DateTimeUtc>,
    /// `processed`, `ignored` or `failed`.
    pub status: String,
    /// Why applying failed, for `failed` rows.
    pub error: Option<String>,
    /// How many times it was applied: 1, plus one per replay.
    pub attempts: i32,
}

/// No relations: the ledger stands alone.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
