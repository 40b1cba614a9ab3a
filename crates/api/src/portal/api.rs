//! `GET /api/v1/operations/payment/customer-portal`: the HTTP face of [`Portal`].

use std::sync::Arc;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::{Portal, PortalError};
use crate::http::{
    ApiTags, ClerkSession, ErrorBody, ErrorCode, NO_STORE, PortalUrl, Refusal, body,
    not_configured, prefers_json, refusal, retry_after,
};

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
    /// `FORBIDDEN`: `BILLING_ROLES` is set and the member has none of those roles (an addition
    /// to the original contract; unset, any member may open the portal).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `NOT_FOUND`: the organization has no Stripe customer record yet (it is created when the
    /// organization first subscribes or purchases credits).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `TOO_MANY_REQUESTS`: the user created as many portal sessions as allowed this minute
    /// (`STRIPE_SESSIONS_PER_MINUTE`, 10 by default); retry after the seconds given.
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

impl From<Refusal> for PortalResponse {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadRequest(body) => PortalResponse::BadRequest(body),
            Refusal::Unauthorized(body) => PortalResponse::Unauthorized(body, "Bearer".into()),
            Refusal::Forbidden(body) => PortalResponse::Forbidden(body),
            Refusal::Internal(body) => PortalResponse::Internal(body),
        }
    }
}

impl From<PortalError> for PortalResponse {
    fn from(err: PortalError) -> Self {
        match &err {
            PortalError::Access(access) => refusal(access, "customer portal").into(),
            PortalError::NoCustomer => PortalResponse::NotFound(body(
                ErrorCode::NotFound,
                "The organization has no Stripe customer record. It is created when the \
                 organization first subscribes or purchases credits.",
            )),
            PortalError::TooManyRequests(wait) => {
                tracing::warn!(?wait, "customer portal: session limit reached");
                PortalResponse::TooManyRequests(
                    body(
                        ErrorCode::TooManyRequests,
                        "Too many billing portal sessions were opened in the last minute. \
                         Please try again shortly.",
                    ),
                    retry_after(*wait),
                )
            }
            PortalError::NotConfigured => {
                tracing::error!("customer portal: Stripe is not configured");
                not_configured().into()
            }
            PortalError::Stripe(_) => {
                tracing::error!(error = %err, "customer portal: creating the session failed");
                PortalResponse::Internal(body(
                    ErrorCode::InternalError,
                    "The billing portal session could not be created. Please try again.",
                ))
            }
        }
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
            PortalResponse::Forbidden(_) => "forbidden",
            PortalResponse::NotFound(_) => "not_found",
            PortalResponse::TooManyRequests(..) => "too_many_requests",
            PortalResponse::Internal(_) => "internal_error",
        };
        metrics::counter!("billing_sync_portal_requests_total", "outcome" => outcome).increment(1);
        response
    }
}
