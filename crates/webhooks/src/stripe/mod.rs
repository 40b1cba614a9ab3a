//! Stripe: the `Stripe-Signature` scheme and the projection of Stripe events.

mod projection;
mod signature;

pub use projection::project;
pub(crate) use signature::within_tolerance;
pub use signature::{SignatureHeader, StripeVerifier, parse_signature_header, sign};
