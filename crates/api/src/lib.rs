//! The HTTP API of billing-sync, described with poem-openapi: the probes now, the operations
//! on the synced state (the customer portal) as they land. Handlers stay thin; what they decide
//! lives in the store and in domain modules.

mod probes;

use billing_sync_store::Store;
use poem_openapi::OpenApiService;

pub use probes::ProbesApi;

/// Where the generated OpenAPI document is served.
pub const OPENAPI_JSON_PATH: &str = "/api/v1/openapi.json";

/// The OpenAPI service of billing-sync, with every documented operation.
pub fn service(store: Store) -> OpenApiService<ProbesApi, ()> {
    OpenApiService::new(
        ProbesApi::new(store),
        "billing-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps a SaaS app's billing state true: ingests Stripe and Clerk webhooks into a \
             database and serves operations on that synced state.",
    )
}
