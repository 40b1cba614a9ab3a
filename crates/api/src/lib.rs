//! The HTTP API of billing-sync, described with poem-openapi: the probes and the operations on
//! the synced state (the customer portal and the plans page). Handlers stay thin; what they
//! decide lives in the store, in [`access::Access`], [`portal::Portal`] and [`plans::Plans`].

pub mod access;
pub mod api_key;
pub mod auth;
pub mod credits;
pub mod events;
pub mod http;
pub mod plans;
pub mod portal;
mod probes;
pub mod request_fields;

use std::collections::HashMap;
use std::sync::Arc;

use billing_sync_store::Store;
use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem_openapi::registry::{MetaApi, Registry};
use poem_openapi::{OpenApi, OpenApiService};

pub use probes::ProbesApi;

use crate::credits::Credits;
use crate::credits::api::CreditsApi;
use crate::credits::reservations::ReservationsApi;
use crate::events::EventsApi;
use crate::plans::Plans;
use crate::plans::api::PlansApi;
use crate::portal::Portal;
use crate::portal::api::PaymentApi;

/// Where the generated OpenAPI document is served.
pub const OPENAPI_JSON_PATH: &str = "/api/v1/openapi.json";

/// Every documented operation of billing-sync.
pub type Operations = CanonicalHeaderNames<(
    ProbesApi,
    PaymentApi,
    PlansApi,
    CreditsApi,
    ReservationsApi,
    EventsApi,
)>;

/// The OpenAPI service of billing-sync, with every documented operation.
pub fn service(
    store: Store,
    portal: Arc<Portal>,
    plans: Arc<Plans>,
    credits: Arc<Credits>,
) -> OpenApiService<Operations, ()> {
    OpenApiService::new(
        CanonicalHeaderNames((
            ProbesApi::new(store.clone()),
            PaymentApi::new(portal),
            PlansApi::new(plans.clone(), credits.clone()),
            CreditsApi::new(credits.clone(), plans),
            ReservationsApi::new(credits.clone()),
            EventsApi::new(store, credits),
        )),
        "billing-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps a SaaS app's billing state true: ingests Stripe and Clerk webhooks into a \
         database and serves operations on that synced state.",
    )
}

/// The request bodies that refuse a field they do not know (`#[oai(deny_unknown_fields)]`):
/// the document says so (`additionalProperties: false`), which poem-openapi does not write.
const STRICT_REQUEST_SCHEMAS: [&str; 5] = [
    "ConsumeRequest",
    "GrantRequest",
    "ReserveRequest",
    "CaptureRequest",
    "ReleaseRequest",
];

/// The OpenAPI document of `service`, as served and committed: poem-openapi's, with its keys
/// in one stable order, and [`STRICT_REQUEST_SCHEMAS`] closed to other fields.
pub fn openapi_document<T: OpenApi, W: poem_openapi::Webhook>(
    service: &OpenApiService<T, W>,
) -> String {
    let mut document: serde_json::Value =
        serde_json::from_str(&service.spec()).expect("poem-openapi writes valid JSON");
    for name in STRICT_REQUEST_SCHEMAS {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    serde_json::to_string_pretty(&document).expect("a JSON value serialises")
}

/// Operations whose response headers are documented under their canonical names.
/// poem-openapi's derive writes response header names in upper case (`LOCATION`); HTTP names
/// are case-insensitive, but generated clients use them as written (a TypeScript `LOCATION`
/// key). The names are set in the metadata the document is generated from, so the document
/// is the service's own spec, served and printed alike.
pub struct CanonicalHeaderNames<T>(pub T);

impl<T: OpenApi> OpenApi for CanonicalHeaderNames<T> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = T::meta();
        let headers = apis
            .iter_mut()
            .flat_map(|api| api.paths.iter_mut())
            .flat_map(|path| path.operations.iter_mut())
            .flat_map(|operation| operation.responses.responses.iter_mut())
            .flat_map(|response| response.headers.iter_mut());
        for header in headers {
            header.name = canonical_header_name(&header.name);
        }
        apis
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn add_routes(self, route_table: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(route_table);
    }
}

/// `WWW-AUTHENTICATE` → `WWW-Authenticate`, `CACHE-CONTROL` → `Cache-Control`.
fn canonical_header_name(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "www-authenticate" => "WWW-Authenticate".to_owned(),
        lower => lower
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_header_name;

    #[test]
    fn header_names_get_their_canonical_case() {
        assert_eq!(canonical_header_name("LOCATION"), "Location");
        assert_eq!(canonical_header_name("CACHE-CONTROL"), "Cache-Control");
        assert_eq!(
            canonical_header_name("WWW-AUTHENTICATE"),
            "WWW-Authenticate"
        );
        assert_eq!(canonical_header_name("RETRY-AFTER"), "Retry-After");
    }
}
