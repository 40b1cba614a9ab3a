//! The states of synced objects that projections produce, and the ordering that decides which
//! state of an object wins.

use chrono::{DateTime, Utc};
use serde_json::Value;

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
pub enum Tie {
    /// The later arrival wins: Stripe's `created` has one-second resolution, so two real
    /// updates within a second are indistinguishable by key (a documented limit).
    LaterArrivalWins,
    /// The stored state stays: Clerk's millisecond `updated_at` makes equal keys the same state.
    StoredWins,
}

/// A source object's JSON text, as a row's `raw` column stores it: taken from the delivered
/// body as it came when the body allows, else serialised once from the parsed object (never
/// cloned as a tree only to be serialised later).
///
/// Two are equal when they hold the same JSON value, whatever their key order or spacing:
/// a body's text and the same object serialised from its tree are the same `raw`.
#[derive(Clone, Debug)]
pub struct RawJson(std::sync::Arc<str>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.to_value() == other.to_value()
    }
}

impl RawJson {
    /// The JSON text of `value`.
    pub fn of(value: &Value) -> RawJson {
        // A `Value` always serialises (its keys are strings); `to_string` writes straight into
        // a buffer, where `Display` goes through the formatting machinery.
        RawJson(
            serde_json::to_string(value)
                .unwrap_or_else(|_| value.to_string())
                .into(),
        )
    }

    /// JSON text that was parsed as such (a slice of a delivered body).
    pub(crate) fn from_parsed_text(text: &str) -> RawJson {
        RawJson(text.into())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text parsed again (`Null` if it were not JSON, which `RawJson` never holds).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// What every synced row holds besides its own columns.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncedRow {
    /// The source's id of the object (the row's primary key).
    pub id: String,
    /// The source object's JSON text.
    pub raw: RawJson,
    /// Its ordering.
    pub version: Version,
    /// When deleted, for a tombstone.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A Clerk organization's state.
#[derive(Clone, Debug, PartialEq)]
pub struct OrganizationState {
    /// The id (`org_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// Display name.
    pub name: Option<String>,
    /// URL slug.
    pub slug: Option<String>,
}

/// A Clerk user's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UserState {
    /// The id (`user_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// The primary email address.
    pub primary_email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
}

/// A Clerk organization membership's state.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipState {
    /// The id (`orgmem_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// The organization.
    pub organization_id: String,
    /// The member.
    pub user_id: String,
    /// The role, e.g. `org:admin`.
    pub role: Option<String>,
}

/// A Stripe customer's state.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerState {
    /// The id (`cus_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// The organization named in the customer's metadata, if any.
    pub organization_id: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Live or test mode.
    pub livemode: bool,
}

/// A completed checkout's statement that a customer bills an organization.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerLink {
    /// `cus_…`.
    pub customer_id: String,
    /// The organization it bills.
    pub organization_id: String,
    /// What named the organization, which says what the link may change.
    pub linked_by: LinkedBy,
    /// Live or test mode.
    pub livemode: bool,
}

/// What named the organization of a checkout's customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkedBy {
    /// The session's metadata, set by the merchant's server or Payment Link: links a customer
    /// that has no organization yet.
    Metadata,
    /// The session's `client_reference_id`, which the browser chose, when it is a reference
    /// billing-sync signed ([`crate::client_reference`]): links a customer that has no organization yet to an organization that has no customer
    /// yet, so that it can never re-point an organization's billing.
    ClientReference,
}

/// A Stripe subscription's state.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionState {
    /// The id (`sub_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
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
}

/// A Stripe product's state (the catalog).
#[derive(Clone, Debug, PartialEq)]
pub struct ProductState {
    /// The id (`prod_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Whether it can be bought.
    pub active: bool,
    /// The names of its `marketing_features`, in Stripe's order, as a JSON array of strings.
    pub marketing_features: Value,
    /// `default_price`, when set.
    pub default_price_id: Option<String>,
    /// Live or test mode.
    pub livemode: bool,
}

/// A Stripe price's state (the catalog).
#[derive(Clone, Debug, PartialEq)]
pub struct PriceState {
    /// The id (`price_…`), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// The product it prices.
    pub product_id: String,
    /// Whether it can be used for new purchases.
    pub active: bool,
    /// ISO currency code, lower case.
    pub currency: String,
    /// Amount in the currency's smallest unit; none for tiered or customer-chosen amounts.
    pub unit_amount: Option<i64>,
    /// `lookup_key`, when set.
    pub lookup_key: Option<String>,
    /// `nickname`, when set.
    pub nickname: Option<String>,
    /// `recurring.interval` (`day`, `week`, `month`, `year`); none for a one-time price.
    pub recurring_interval: Option<String>,
    /// `recurring.interval_count`; none for a one-time price.
    pub recurring_interval_count: Option<i64>,
    /// Live or test mode.
    pub livemode: bool,
}

/// A Stripe customer's active entitlements: the whole list, replaced by each summary.
#[derive(Clone, Debug, PartialEq)]
pub struct EntitlementsState {
    /// The id (`cus_…`: one summary per customer, so the customer), the source object, its ordering and tombstone.
    pub row: SyncedRow,
    /// The active features' `lookup_key`s, sorted, as a JSON array of strings.
    pub lookup_keys: Value,
    /// Live or test mode.
    pub livemode: bool,
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
    /// Upsert a product.
    Product(ProductState),
    /// Upsert a price.
    Price(PriceState),
    /// Replace a customer's active entitlements.
    Entitlements(EntitlementsState),
    /// Record credits bought, for the credit ledger to credit (once per reference).
    CreditPurchase(CreditPurchase),
    /// Record what a charge's refunds amount to so far.
    ChargeRefund(ChargeRefund),
}

/// Where bought credits come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseSource {
    /// A paid one-time Checkout Session.
    Checkout,
    /// A paid subscription invoice's line: an allowance until the line's period ends.
    Invoice,
}

/// Credits an organization bought, as a webhook says: recorded pending, credited by the next
/// ledger decision for its organization (the `billing-sync-credits` crate's rules).
#[derive(Clone, Debug, PartialEq)]
pub struct CreditPurchase {
    /// Unique per purchase: `checkout:cs_…` or `invoice:in_…:il_…`.
    pub reference: String,
    /// Checkout or invoice.
    pub source: PurchaseSource,
    /// The customer that bought them.
    pub customer_id: Option<String>,
    /// The organization the object's metadata names; else its customer's, when credited.
    pub organization_id: Option<String>,
    /// The price bought.
    pub price_id: Option<String>,
    /// How many units.
    pub quantity: Option<i64>,
    /// How many credits in all, when the object says (billing-sync's own checkout); else the
    /// catalog's credits per unit of the price times the quantity, when credited.
    pub credits: Option<i64>,
    /// When they expire (an invoice line's period end); none: never.
    pub expires_at: Option<i64>,
    /// The payment (`pi_…`) a refund will name.
    pub payment_id: Option<String>,
}

/// A refunded charge: amounts in the currency's smallest unit, `refunded` cumulative.
#[derive(Clone, Debug, PartialEq)]
pub struct ChargeRefund {
    /// `ch_…`.
    pub charge_id: String,
    /// The payment (`pi_…`) it belongs to.
    pub payment_id: String,
    /// The amount charged.
    pub paid: i64,
    /// The amount refunded so far.
    pub refunded: i64,
}

impl Change {
    /// The synced row the change writes; `None` for a link, which writes only a column.
    pub fn row(&self) -> Option<&SyncedRow> {
        match self {
            Change::Organization(state) => Some(&state.row),
            Change::User(state) | Change::UserSnapshot(state) => Some(&state.row),
            Change::Membership(state) => Some(&state.row),
            Change::Customer(state) => Some(&state.row),
            Change::Subscription(state) => Some(&state.row),
            Change::Product(state) => Some(&state.row),
            Change::Price(state) => Some(&state.row),
            Change::Entitlements(state) => Some(&state.row),
            Change::CustomerLink(_) | Change::CreditPurchase(_) | Change::ChargeRefund(_) => None,
        }
    }
}

/// Whether a state at `incoming` replaces one stored at `stored`: newer by
/// `(ordering_key, ordering_rank)`, a terminal state only ever replaced by a newer terminal
/// state, and equal updates decided by `tie`. The guarded upserts' SQL says the same
/// (the store's `changeset::newer_than_stored`); a property test holds the two together.
pub fn supersedes(incoming: Version, stored: Version, tie: Tie) -> bool {
    if stored.rank == Rank::Terminal && incoming.rank != Rank::Terminal {
        return false;
    }
    match incoming.key.cmp(&stored.key) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => {
            incoming.rank > stored.rank
                || (tie == Tie::LaterArrivalWins
                    && incoming.rank == Rank::Update
                    && stored.rank == Rank::Update)
        }
    }
}
