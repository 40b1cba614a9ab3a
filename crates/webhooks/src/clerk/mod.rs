//! Clerk: Svix-signed deliveries (the projection of Clerk events is
//! `billing_sync_projection::clerk`).

mod signature;

pub use signature::{ClerkDelivery, ClerkVerifier, InvalidClerkSecret};
