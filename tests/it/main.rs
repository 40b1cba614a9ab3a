//! The end-to-end tests, one module per area, in one test binary: each binary links the whole
//! workspace, and on two cores linking eight of them was most of a clean test build (as
//! svix-webhooks keeps its integration tests). Every test starts the real `billing-sync` binary.

mod support;

mod backfill;
mod browser;
mod credits;
mod exhaustion;
mod foundation;
mod heavy;
mod hostile;
mod outbox;
mod plans;
mod portal;
mod python_client;
mod reservations;
mod resilience;
mod schemathesis;
mod security;
mod webhooks;
