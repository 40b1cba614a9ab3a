//! The HTTP API of billing-sync, described with poem-openapi: the probes and the operations on
//! the synced state (the customer portal). Handlers stay thin; what they decide lives in the
//! store and in [`portal::Portal`].

pub mod auth;
pub mod portal;
mod probes;

use std::sync::Arc;

use billing_sync_store::Store;
use poem_openapi::OpenApiService;

pub use probes::ProbesApi;

use crate::portal::Portal;
use crate::portal::api::PaymentApi;

/// Where the generated OpenAPI document is served.
pub const OPENAPI_JSON_PATH: &str = "/api/v1/openapi.json";

/// The OpenAPI service of billing-sync, with every documented operation.
pub fn service(store: Store, portal: Arc<Portal>) -> OpenApiService<(ProbesApi, PaymentApi), ()> {
    OpenApiService::new(
        (ProbesApi::new(store), PaymentApi::new(portal)),
        "billing-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps a SaaS app's billing state true: ingests Stripe and Clerk webhooks into a \
         database and serves operations on that synced state.",
    )
}
