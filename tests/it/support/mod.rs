//! What the end-to-end tests share: the helpers the benches use too live in
//! `billing_sync_testkit::e2e` (the server, signed deliveries, the stand-ins); the generated
//! client for the operations' tests is here.

pub use billing_sync_testkit::e2e::*;

pub mod operations;
