//! Clerk: Svix-signed deliveries and the projection of Clerk events.

mod projection;
mod signature;

pub use projection::project;
pub use signature::{ClerkDelivery, ClerkVerifier, InvalidClerkSecret};
