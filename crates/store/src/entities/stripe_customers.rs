//! `stripe_customers`: Stripe customers and the organization each one bills.

use sea_orm::entity::prelude::*;

/// The last applied state of one Stripe customer.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_customers")]
pub struct Model {
    /// Stripe's `cus_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The customer object as last applied; none while only a checkout link is known.
    pub raw: Option<Json>,
    /// `created` (unix seconds) of the event whose state this is.
    pub ordering_key: i64,
    /// Set when the customer was deleted in Stripe.
    pub deleted_at: Option<DateTimeUtc>,
    /// When billing-sync last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Tie-break between events of the same second: 0 `*.created`, 1 other, 2 terminal.
    pub ordering_rank: i16,
    /// Whether this is a live-mode object.
    pub livemode: bool,
    /// The Clerk organization this customer bills.
    pub organization_id: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// Customer name.
    pub name: Option<String>,
}

/// No enforced relations: Stripe may deliver a subscription before its customer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
