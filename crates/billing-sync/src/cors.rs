//! Cross-origin calls to the API from web apps' pages (CORS): which origins may, and the rule
//! that the CORS policy never stands between the web app and its own API.

use std::sync::Arc;

use billing_sync_api::http::foreign_origin;
use poem::middleware::{Cors, CorsEndpoint};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

/// The origins whose pages may call the API with credentials when `CORS_ALLOWED_ORIGINS` names
/// some: those, and `APP_BASE_URL`'s (the app's own pages post to checkout and read billing
/// state whatever the list says). None when the list is empty: no CORS at all.
pub fn allowed_origins(app_base_url: Option<&str>, cors_allowed_origins: &[String]) -> Vec<String> {
    if cors_allowed_origins.is_empty() {
        return Vec::new();
    }
    page_origins(app_base_url, cors_allowed_origins)
}

/// The origins of the web app's pages: `APP_BASE_URL`'s (when it parses) and the CORS ones.
pub fn page_origins(app_base_url: Option<&str>, cors_allowed_origins: &[String]) -> Vec<String> {
    app_base_url
        .and_then(|base| url::Url::parse(base).ok())
        .map(|url| url.origin().ascii_serialization())
        .into_iter()
        .chain(cors_allowed_origins.iter().cloned())
        .collect()
}

/// The CORS policy for `origins` (not empty: poem's `Cors` allows every origin when given none):
/// a request from another origin that is not one of them is refused (`CorsError`, answered as
/// the documented 403); one from a page of the server's own origin ([`foreign_origin`]) goes
/// straight to the endpoint, as it would without CORS, since a browser needs no permission to
/// read its own origin's answers.
pub struct Policy {
    cors: Cors,
}

impl Policy {
    /// The policy for `origins`, with the methods and headers the operations use.
    pub fn new(origins: &[String]) -> Policy {
        Policy {
            cors: Cors::new()
                .allow_origins(origins.iter().map(String::as_str))
                .allow_credentials(true)
                .allow_methods([poem::http::Method::GET, poem::http::Method::POST])
                .allow_headers(["authorization", "content-type", "if-none-match"])
                .expose_headers(["retry-after", "x-request-id", "etag"])
                .max_age(600),
        }
    }
}

impl<E: Endpoint + 'static> Middleware<E> for Policy {
    type Output = OwnOriginOrCors<E>;

    fn transform(&self, endpoint: E) -> OwnOriginOrCors<E> {
        let endpoint = Arc::new(endpoint);
        OwnOriginOrCors {
            cors: self.cors.transform(endpoint.clone()),
            own: endpoint,
        }
    }
}

/// An endpoint behind the CORS [`Policy`].
pub struct OwnOriginOrCors<E: Endpoint> {
    own: Arc<E>,
    cors: CorsEndpoint<Arc<E>>,
}

impl<E: Endpoint> Endpoint for OwnOriginOrCors<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Response> {
        // No `Origin`, or the server's own: no CORS to apply (poem's `Cors` would pass a
        // request without `Origin` through unchanged too).
        if foreign_origin(&request).is_none() {
            return self
                .own
                .call(request)
                .await
                .map(IntoResponse::into_response);
        }
        self.cors.call(request).await
    }
}
