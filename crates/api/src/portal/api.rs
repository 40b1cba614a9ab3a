//! `GET /api/v1/operations/payment/customer-portal`: the HTTP face of [`Portal`].

use std::sync::Arc;

use billing_sync_store::billing::Revocation;
use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};

use super::{Portal, PortalError};
use crate::auth::AuthError;

#[derive(Tags)]
enum ApiTags {
    /// Credits & Payments.
    Payment,
}

/// A Clerk session token sent as `Authorization: Bearer <token>` (API calls).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct ClerkBearer(Bearer);

/// The Clerk session token in the `__session` cookie (a browser following a plain link).
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_in = "cookie", key_name = "__session")]
pub struct ClerkSessionCookie(ApiKey);

/// Either way of sending a Clerk session token. A request with neither is refused by the
/// framework before the handler runs; [`unauthorized`] answers it in the documented format.
#[derive(SecurityScheme)]
pub enum ClerkSession {
    /// `Authorization: Bearer`.
    Bearer(ClerkBearer),
    /// The `__session` cookie.
    Cookie(ClerkSessionCookie),
}

impl ClerkSession {
    fn token(&self) -> &str {
        match self {
            ClerkSession::Bearer(ClerkBearer(bearer)) => bearer.token.as_str(),
            ClerkSession::Cookie(ClerkSessionCookie(key)) => key.key.as_str(),
        }
    }
}

const UNAUTHORIZED_MESSAGE: &str = "Authentication required: send a valid Clerk session token as \
     `Authorization: Bearer <token>` or in the `__session` cookie.";

/// The documented 401 for a request that carries no session token at all (poem-openapi refuses
/// it with `AuthorizationError` before the handler runs).
pub async fn unauthorized(_: poem_openapi::error::AuthorizationError) -> poem::Response {
    use poem::IntoResponse;
    metrics::counter!("billing_sync_portal_requests_total", "outcome" => "unauthorized")
        .increment(1);
    PortalResponse::Unauthorized(body("UNAUTHORIZED", UNAUTHORIZED_MESSAGE), "Bearer".into())
        .into_response()
}

/// An error answer.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// `UNAUTHORIZED`, `VALIDATION_ERROR`, `NOT_FOUND`, `TOO_MANY_REQUESTS` or
    /// `INTERNAL_ERROR`.
    pub code: String,
    /// What went wrong and what to do, for the caller.
    pub message: String,
}

/// The portal URL, for callers that asked for JSON.
#[derive(Debug, Object)]
pub struct PortalUrl {
    /// The Stripe Billing Portal session URL (absolute, https). Valid for a limited time.
    pub url: String,
}

const NO_STORE: &str = "no-store";

/// The answers of the customer-portal endpoint.
#[derive(ApiResponse)]
pub enum PortalResponse {
    /// Redirect to the Stripe Billing Portal session created for the caller's organization.
    /// No body.
    #[oai(status = 302)]
    Found(
        /// The portal session URL that Stripe returned.
        #[oai(header = "Location")]
        String,
        /// Always `no-store`: a portal session is single-use and must not be cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// The portal session URL as JSON, when the caller prefers `application/json` over HTML
    /// (a single-page app's `fetch`, for which a cross-origin 302 is useless).
    #[oai(status = 200)]
    Url(
        Json<PortalUrl>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: the user is not associated with an organization (none, several without
    /// an active one, or removed from it since the token was issued).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `UNAUTHORIZED`: no valid Clerk session token.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `NOT_FOUND`: the organization has no Stripe customer record yet (it is created when the
    /// organization first subscribes or purchases credits).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `TOO_MANY_REQUESTS`: the user created as many portal sessions as allowed this minute
    /// (`PORTAL_SESSIONS_PER_MINUTE`, 10 by default); retry after the seconds given.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until the user may create a session again.
        #[oai(header = "Retry-After")]
        String,
    ),
    /// `INTERNAL_ERROR`: the portal session could not be created.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

fn body(code: &str, message: &str) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.into(),
        message: message.into(),
    })
}

impl From<PortalError> for PortalResponse {
    fn from(err: PortalError) -> Self {
        // The caller gets a helpful message; the details (never a token or key) go to the log.
        match &err {
            PortalError::Unauthorized(AuthError::KeysUnavailable(_)) => {
                tracing::error!(error = %err, "customer portal: cannot verify tokens");
                PortalResponse::Internal(body(
                    "INTERNAL_ERROR",
                    "Authentication is temporarily unavailable. Please try again.",
                ))
            }
            PortalError::Unauthorized(reason) => {
                tracing::info!(reason = %reason, "customer portal: unauthenticated");
                PortalResponse::Unauthorized(
                    body("UNAUTHORIZED", UNAUTHORIZED_MESSAGE),
                    "Bearer".into(),
                )
            }
            PortalError::NoOrganization => PortalResponse::BadRequest(body(
                "VALIDATION_ERROR",
                "The user is not associated with an organization.",
            )),
            PortalError::SeveralOrganizations => PortalResponse::BadRequest(body(
                "VALIDATION_ERROR",
                "The user belongs to several organizations: select an active organization and try again.",
            )),
            PortalError::Revoked(revocation) => {
                tracing::info!(
                    ?revocation,
                    "customer portal: access revoked by synced state"
                );
                let message = match revocation {
                    Revocation::MembershipDeleted => {
                        "The user is no longer a member of this organization."
                    }
                    Revocation::OrganizationDeleted => "The organization has been deleted.",
                    Revocation::UserDeleted => "The user has been deleted.",
                };
                PortalResponse::BadRequest(body("VALIDATION_ERROR", message))
            }
            PortalError::NoCustomer => PortalResponse::NotFound(body(
                "NOT_FOUND",
                "The organization has no Stripe customer record. It is created when the \
                 organization first subscribes or purchases credits.",
            )),
            PortalError::TooManyRequests(wait) => {
                tracing::warn!(?wait, "customer portal: session limit reached");
                PortalResponse::TooManyRequests(
                    body(
                        "TOO_MANY_REQUESTS",
                        "Too many billing portal sessions were opened in the last minute. \
                         Please try again shortly.",
                    ),
                    wait.as_secs().max(1).to_string(),
                )
            }
            PortalError::NotConfigured(what) => {
                tracing::error!(what, "customer portal: not configured");
                PortalResponse::Internal(body(
                    "INTERNAL_ERROR",
                    "Billing is not configured on this server.",
                ))
            }
            PortalError::Stripe(_) | PortalError::Store(_) => {
                tracing::error!(error = %err, "customer portal: creating the session failed");
                PortalResponse::Internal(body(
                    "INTERNAL_ERROR",
                    "The billing portal session could not be created. Please try again.",
                ))
            }
        }
    }
}

/// Whether the request prefers `application/json` to HTML (weighing `q` values), as a
/// single-page app's `fetch` with `Accept: application/json` does; a browser navigating, or
/// `*/*`, gets the redirect.
pub fn prefers_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut json = None::<f32>;
    let mut html = None::<f32>;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/json" => &mut json,
            "text/html" => &mut html,
            _ => continue,
        };
        *slot = Some(slot.map_or(quality, |q| q.max(quality)));
    }
    match (json, html) {
        (Some(json), Some(html)) => json > html,
        (Some(json), None) => json > 0.0,
        _ => false,
    }
}

/// The payment operations.
pub struct PaymentApi {
    portal: Arc<Portal>,
}

impl PaymentApi {
    /// The operations backed by `portal`.
    pub fn new(portal: Arc<Portal>) -> Self {
        PaymentApi { portal }
    }
}

#[OpenApi(tag = "ApiTags::Payment")]
impl PaymentApi {
    /// Open the Stripe customer portal
    ///
    /// Creates a Stripe Billing Portal session for the caller's organization and redirects the
    /// browser there (302, no body). In the portal, customers manage subscriptions, payment
    /// methods and invoices; changes come back through Stripe webhooks. The organization is the
    /// session's active organization, else the user's only organization. Callers that prefer
    /// `application/json` get `200 {"url": …}` instead of the redirect.
    #[oai(
        path = "/api/v1/operations/payment/customer-portal",
        method = "get",
        operation_id = "customerPortal"
    )]
    async fn customer_portal(&self, session: ClerkSession, request: &Request) -> PortalResponse {
        let wants_json = prefers_json(request.header("accept"));
        let response = match self.portal.session_url(session.token()).await {
            Ok(url) if wants_json => PortalResponse::Url(Json(PortalUrl { url }), NO_STORE.into()),
            Ok(url) => PortalResponse::Found(url, NO_STORE.into()),
            Err(err) => err.into(),
        };
        let outcome = match &response {
            PortalResponse::Found(..) => "redirect",
            PortalResponse::Url(..) => "json",
            PortalResponse::BadRequest(_) => "validation_error",
            PortalResponse::Unauthorized(..) => "unauthorized",
            PortalResponse::NotFound(_) => "not_found",
            PortalResponse::TooManyRequests(..) => "too_many_requests",
            PortalResponse::Internal(_) => "internal_error",
        };
        metrics::counter!("billing_sync_portal_requests_total", "outcome" => outcome).increment(1);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::prefers_json;

    #[test]
    fn json_is_chosen_only_when_preferred_over_html() {
        assert!(prefers_json(Some("application/json")));
        assert!(prefers_json(Some("application/json, text/plain, */*")));
        assert!(prefers_json(Some("text/html;q=0.5, application/json")));
        assert!(!prefers_json(None));
        assert!(!prefers_json(Some("*/*")));
        assert!(!prefers_json(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_json(Some("text/html, application/json")));
        assert!(!prefers_json(Some("application/json;q=0")));
    }
}
