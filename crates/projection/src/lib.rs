//! From a provider's signed bytes to changes of the synced state, with no I/O.
//!
//! - [`stripe_signature`]: Stripe's `Stripe-Signature` scheme (Svix's lives with the svix crate
//!   in the webhooks crate).
//! - [`event`]: a verified body as the ledger's [`NewEvent`], and the [`Plan`] made of it.
//! - [`stripe`] and [`clerk`]: one function per synced object, from the object and how it was
//!   seen ([`Seen`]) to its [`Change`]; each provider's event dispatch is layered on top
//!   (`project`). Webhooks, refetch and backfill all call the object functions, so none of
//!   them has to dress an object up as an event.
//! - [`state`]: the states those changes carry and the ordering rule that decides which
//!   state of an object wins ([`supersedes`]); the store's SQL guard says the same.
//!
//! The crate is kept light (no database, HTTP or async runtime): the fuzz targets build it
//! alone, with sanitizers.

pub mod clerk;
pub mod client_reference;
pub mod event;
mod json;
mod sparse;
pub mod state;
pub mod stripe;
mod stripe_body;
pub mod stripe_signature;

pub use client_reference::ClientReferenceKey;
pub use event::{NUL_REPLACEMENT, NewEvent, NotAnEvent, Plan, Provider, clerk_event};
pub use state::{
    Change, ChargeRefund, CreditPurchase, CustomerLink, CustomerState, EntitlementsState, LinkedBy,
    MembershipState, OrganizationState, PriceState, ProductState, PurchaseSource, Rank, RawJson,
    SubscriptionState, SyncedRow, Tie, UserState, Version, supersedes,
};
pub use stripe_body::{readings_agree, stripe_event, stripe_event_from_tree};

/// Turns events into changes by their provider's projection; needs no secret, so replay can
/// use it alone.
#[derive(Clone, Debug)]
pub struct Projection {
    /// The metadata key naming a Stripe object's organization (`STRIPE_ORG_METADATA_KEY`).
    pub stripe_org_metadata_key: String,
    /// The key verifying a checkout's `client_reference_id`, which then names its customer's
    /// organization when its metadata names none (`STRIPE_CLIENT_REFERENCE_SECRET`; see
    /// [`stripe::checkout_link`]). Without it, a `client_reference_id` links nothing.
    pub client_reference_key: Option<ClientReferenceKey>,
}

impl Projection {
    /// What `event` changes, by its provider's projection.
    pub fn plan(&self, event: &NewEvent) -> Plan {
        match event.provider {
            Provider::Stripe => stripe::project(event, self),
            Provider::Clerk => clerk::project(event),
        }
    }
}

/// How an object's state was seen: what, besides the time, orders it among the object's
/// states. An event says it by its type (`*.created`, `*.deleted`, anything else); a listing
/// or a fetch sees the current state, an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// In a `*.created` event: loses to any other state at the same time.
    Created,
    /// In any other event, a listing or a fetch.
    Updated,
    /// In a `*.deleted` event: a tombstone.
    Deleted,
}

impl Seen {
    /// What an event of `event_type` says of the object it carries.
    pub fn by_event_type(event_type: &str) -> Seen {
        if event_type.ends_with(".created") {
            Seen::Created
        } else if event_type.ends_with(".deleted") {
            Seen::Deleted
        } else {
            Seen::Updated
        }
    }
}
