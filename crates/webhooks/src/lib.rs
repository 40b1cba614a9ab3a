//! Webhook ingestion for billing-sync: verify Stripe and Clerk deliveries on their raw bytes,
//! record each verified event in the ledger and apply it to the synced state in one
//! transaction, then acknowledge.
//!
//! Both providers go through one pipeline ([`pipeline`]); what differs is only how a delivery is
//! verified (Stripe's scheme in `billing_sync_projection::stripe_signature`, Svix's in
//! [`clerk::ClerkVerifier`]) and how an event becomes changes to the synced state (the
//! projections of `billing_sync_projection`).

pub mod body_budget;
pub mod clerk;
mod group_commit;
pub mod pipeline;
mod rejection;
pub mod replay;
mod routes;
mod stripe_reads;

pub use pipeline::{DEFAULT_BODY_BYTES_IN_FLIGHT, Ingestor};
pub use rejection::Rejection;
pub use replay::{ReplayError, replay};
pub use routes::routes;
