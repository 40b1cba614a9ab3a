//! The HTTP API of billing-sync, described with poem-openapi: the probes and the operations on
//! the synced state (the customer portal and the plans page). Handlers stay thin; what they
//! decide lives in the store, in [`access::Access`], [`portal::Portal`] and [`plans::Plans`].

pub mod access;
pub mod auth;
pub mod credits;
pub mod http;
pub mod plans;
pub mod portal;
mod probes;

use std::sync::Arc;

use billing_sync_store::Store;
use poem_openapi::OpenApiService;

pub use probes::ProbesApi;

use crate::credits::Credits;
use crate::credits::api::CreditsApi;
use crate::plans::Plans;
use crate::plans::api::PlansApi;
use crate::portal::Portal;
use crate::portal::api::PaymentApi;

/// Where the generated OpenAPI document is served.
pub const OPENAPI_JSON_PATH: &str = "/api/v1/openapi.json";

/// The OpenAPI service of billing-sync, with every documented operation.
pub fn service(
    store: Store,
    portal: Arc<Portal>,
    plans: Arc<Plans>,
    credits: Arc<Credits>,
) -> OpenApiService<(ProbesApi, PaymentApi, PlansApi, CreditsApi), ()> {
    OpenApiService::new(
        (
            ProbesApi::new(store),
            PaymentApi::new(portal),
            PlansApi::new(plans.clone(), credits.clone()),
            CreditsApi::new(credits, plans),
        ),
        "billing-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps a SaaS app's billing state true: ingests Stripe and Clerk webhooks into a \
         database and serves operations on that synced state.",
    )
}

/// The OpenAPI document of `service`, as served and committed. poem-openapi writes response
/// header names in upper case (`LOCATION`); HTTP names are case-insensitive, but generated
/// clients use them as written (a TypeScript `LOCATION` key), so they are given their canonical
/// case here.
pub fn openapi_document<T: poem_openapi::OpenApi, W: poem_openapi::Webhook>(
    service: &OpenApiService<T, W>,
) -> String {
    let mut document: serde_json::Value =
        serde_json::from_str(&service.spec()).expect("poem-openapi writes valid JSON");
    if let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for operation in paths
            .values_mut()
            .filter_map(|p| p.as_object_mut())
            .flat_map(|p| p.values_mut())
        {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            for response in responses.values_mut() {
                if let Some(headers) = response.get_mut("headers").and_then(|h| h.as_object_mut()) {
                    *headers = std::mem::take(headers)
                        .into_iter()
                        .map(|(name, header)| (canonical_header_name(&name), header))
                        .collect();
                }
            }
        }
    }
    serde_json::to_string_pretty(&document).expect("a JSON value serialises")
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
