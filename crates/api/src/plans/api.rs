//! The plans page's operations on the wire: `GET …/plans`, `GET …/subscription`,
//! `POST …/checkout`.

use std::sync::Arc;

use billing_sync_store::plans::{CatalogProduct, OrganizationSubscription, on_paid_plan};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Header;
use poem_openapi::payload::{Form, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{CheckoutError, ClientReferenceError, Credential, MAX_QUANTITY, Plans};
use crate::access::Caller;
use crate::credits::Credits;
use crate::http::{
    ApiTags, CheckoutUrl, ClerkSession, ErrorBody, ErrorCode, NO_STORE, Refusal, body,
    not_configured, prefers_json, refusal, retry_after,
};

/// The plan catalog.
#[derive(Debug, Object)]
pub struct PlanCatalog {
    /// Active products that have at least one active price, in the order of their cheapest
    /// price (products whose prices have no fixed amount last), then by name, then by id.
    pub products: Vec<Plan>,
}

/// A product and its prices.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Plan {
    /// Stripe's `prod_…` id.
    pub id: String,
    /// The product's name.
    pub name: Option<String>,
    /// The product's description.
    pub description: Option<String>,
    /// The names of the product's marketing features, in Stripe's order.
    pub marketing_features: Vec<String>,
    /// The product's active prices, cheapest first (prices without a fixed amount last), then
    /// by id.
    pub prices: Vec<PlanPrice>,
}

/// A price of a product.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PlanPrice {
    /// Stripe's `price_…` id: what `checkout` takes.
    pub id: String,
    /// `recurring` (a subscription) or `one_time` (e.g. credits).
    #[oai(rename = "type")]
    pub kind: String,
    /// The price's `lookup_key`.
    pub lookup_key: Option<String>,
    /// The price's nickname.
    pub nickname: Option<String>,
    /// The amount in the currency's smallest unit (cents); absent for tiered or
    /// customer-chosen amounts.
    pub unit_amount: Option<i64>,
    /// Three-letter ISO currency code, lower case.
    pub currency: String,
    /// The billing interval of a recurring price; absent for a one-time price.
    pub recurring: Option<Recurring>,
}

/// How often a recurring price bills.
#[derive(Debug, Object)]
pub struct Recurring {
    /// `day`, `week`, `month` or `year`.
    pub interval: String,
    /// The number of intervals between bills (3 with `month`: quarterly).
    pub interval_count: i64,
}

/// The caller's organization's billing.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BillingState {
    /// The Clerk organization.
    pub organization_id: String,
    /// Its Stripe customer; absent until it first subscribes or buys.
    pub customer_id: Option<String>,
    /// Whether the organization is on a paid plan: true when one of its subscriptions has the
    /// status `active`, `trialing` or `past_due` (Stripe is still retrying a failed payment).
    pub active: bool,
    /// Its subscriptions, ended ones included, the most recently changed first (at most 100).
    pub subscriptions: Vec<Subscription>,
    /// The `lookup_key`s of the features its Stripe customer is entitled to now, sorted.
    pub entitlements: Vec<String>,
    /// Its credit balance (docs/credits.md): negative while a refund's debt is unpaid.
    pub credits_balance: i64,
}

/// A subscription of the organization.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Subscription {
    /// Stripe's `sub_…` id.
    pub id: String,
    /// Stripe's status: `active`, `trialing`, `past_due`, `canceled`, `unpaid`, `incomplete`,
    /// `incomplete_expired`, `paused`.
    pub status: String,
    /// What it bills for.
    pub items: Vec<SubscriptionItem>,
    /// End of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Whether it cancels at the end of the current period.
    pub cancel_at_period_end: bool,
    /// When it is scheduled to cancel.
    pub cancel_at: Option<DateTime<Utc>>,
    /// End of the trial.
    pub trial_end: Option<DateTime<Utc>>,
    /// When it ended; absent while it runs.
    pub ended_at: Option<DateTime<Utc>>,
}

/// An item of a subscription.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SubscriptionItem {
    /// Stripe's `price_…` id.
    pub price_id: Option<String>,
    /// Stripe's `prod_…` id.
    pub product_id: Option<String>,
    /// The product's name, when the product is synced.
    pub product_name: Option<String>,
    /// Quantity (seats).
    pub quantity: Option<i64>,
}

/// What to buy.
#[derive(Debug, Object, Deserialize)]
pub struct CheckoutRequest {
    /// Stripe's `price_…` id of an active price (from `plans`).
    pub price_id: String,
    /// How many (seats, credit packs); 1 when absent.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub quantity: Option<i64>,
}

/// The paths of the checkout operations, which take POST only (the operations below name them
/// again: poem-openapi's attributes take literals).
pub const CHECKOUT_PATHS: [&str; 2] = [
    "/api/v1/operations/payment/checkout",
    "/api/v1/operations/payment/checkout-session",
];

/// `Cache-Control` of the catalog: the same for everyone, fresh for a minute.
const CATALOG_CACHE_CONTROL: &str = "public, max-age=60";

/// The answers of `plans`.
#[derive(ApiResponse)]
pub enum PlansResponse {
    /// The catalog.
    #[oai(status = 200)]
    Catalog(
        Json<PlanCatalog>,
        /// `public, max-age=60`.
        #[oai(header = "Cache-Control")]
        String,
        /// A strong validator of this catalog: send it back as `If-None-Match`.
        #[oai(header = "ETag")]
        String,
    ),
    /// The catalog has not changed since the `ETag` sent as `If-None-Match`. No body.
    #[oai(status = 304)]
    NotModified(
        /// `public, max-age=60`.
        #[oai(header = "Cache-Control")]
        String,
        /// The catalog's current `ETag`.
        #[oai(header = "ETag")]
        String,
    ),
    /// `INTERNAL_ERROR`: the catalog could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// The answers of `subscription`.
#[derive(ApiResponse)]
pub enum StateResponse {
    /// The organization's billing (an organization that never paid: no customer, empty lists,
    /// `active` false — the free plan).
    #[oai(status = 200)]
    State(
        Json<BillingState>,
        /// Always `no-store`: the answer is about one caller.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: the user is not associated with an organization (none, several
    /// without an active one, or removed from it since the token was issued).
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
    /// `INTERNAL_ERROR`: the state could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// The answers of `checkout`.
#[derive(ApiResponse)]
pub enum CheckoutResponse {
    /// Redirect to the Stripe Checkout session created for the caller's organization (an HTML
    /// form post). No body.
    #[oai(status = 303)]
    SeeOther(
        /// The Checkout session URL that Stripe returned.
        #[oai(header = "Location")]
        String,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// The Checkout session URL as JSON, when the caller prefers `application/json` over HTML.
    #[oai(status = 200)]
    Url(
        Json<CheckoutUrl>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: the price is unknown or cannot be bought, the quantity is out of
    /// range or would buy more than 10^12 credits, the body cannot be read, or the user is not
    /// associated with an organization.
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
    /// `FORBIDDEN`: `BILLING_ROLES` is set and the member has none of those roles, or a page of
    /// another origin posted with the `__session` cookie.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `CONFLICT`: a recurring price for an organization that already has an active
    /// subscription; change plans in the customer portal.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `TOO_MANY_REQUESTS`: the user created as many checkout sessions as allowed this minute
    /// (`STRIPE_SESSIONS_PER_MINUTE`, counted apart from portal sessions); retry after the
    /// seconds given.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until the user may create a session again.
        #[oai(header = "Retry-After")]
        String,
    ),
    /// `INTERNAL_ERROR`: the checkout session could not be created.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// The answers of `create_checkout_session`: those of `checkout`, but never a redirect (a
/// script navigates by itself).
#[derive(ApiResponse)]
pub enum CheckoutSessionResponse {
    /// The Checkout session URL.
    #[oai(status = 200)]
    Url(
        Json<CheckoutUrl>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: as for `checkout`.
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
    /// `FORBIDDEN`: as for `checkout`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `CONFLICT`: as for `checkout`.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `TOO_MANY_REQUESTS`: as for `checkout`.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until the user may create a session again.
        #[oai(header = "Retry-After")]
        String,
    ),
    /// `INTERNAL_ERROR`: the checkout session could not be created.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl From<CheckoutResponse> for CheckoutSessionResponse {
    fn from(response: CheckoutResponse) -> Self {
        match response {
            // Asked for with `Answer::Json`, which never redirects.
            CheckoutResponse::SeeOther(url, cache)
            | CheckoutResponse::Url(Json(CheckoutUrl { url }), cache) => {
                CheckoutSessionResponse::Url(Json(CheckoutUrl { url }), cache)
            }
            CheckoutResponse::BadRequest(body) => CheckoutSessionResponse::BadRequest(body),
            CheckoutResponse::Unauthorized(body, challenge) => {
                CheckoutSessionResponse::Unauthorized(body, challenge)
            }
            CheckoutResponse::Forbidden(body) => CheckoutSessionResponse::Forbidden(body),
            CheckoutResponse::Conflict(body) => CheckoutSessionResponse::Conflict(body),
            CheckoutResponse::TooManyRequests(body, wait) => {
                CheckoutSessionResponse::TooManyRequests(body, wait)
            }
            CheckoutResponse::Internal(body) => CheckoutSessionResponse::Internal(body),
        }
    }
}

/// A reference for a pricing table.
#[derive(Debug, Object)]
pub struct ClientReference {
    /// What the pricing table takes as `client-reference-id`: it names the caller's
    /// organization, signed by this server, so that the checkout links its customer there.
    pub client_reference_id: String,
    /// After this, a checkout started with it links nothing: fetch one when the page loads.
    pub expires_at: DateTime<Utc>,
}

/// The answers of `client_reference`.
#[derive(ApiResponse)]
pub enum ClientReferenceResponse {
    /// The reference.
    #[oai(status = 200)]
    Reference(
        Json<ClientReference>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: the user is not associated with an organization.
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
    /// `FORBIDDEN`: `BILLING_ROLES` is set and the member has none of those roles.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `INTERNAL_ERROR`: `STRIPE_CLIENT_REFERENCE_SECRET` is not set, or the organization's id
    /// cannot be carried by a `client_reference_id`.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl From<ClientReferenceError> for ClientReferenceResponse {
    fn from(err: ClientReferenceError) -> Self {
        let refusal = match &err {
            ClientReferenceError::Access(access) => refusal(access, "client reference"),
            ClientReferenceError::NotConfigured => {
                tracing::error!("client reference: STRIPE_CLIENT_REFERENCE_SECRET is not set");
                not_configured()
            }
            ClientReferenceError::Unreferenceable(_) => {
                tracing::error!(error = %err, "client reference: not given");
                Refusal::Internal(body(
                    ErrorCode::InternalError,
                    "This organization cannot be named by a pricing table: use checkout.",
                ))
            }
        };
        match refusal {
            Refusal::BadRequest(body) => ClientReferenceResponse::BadRequest(body),
            Refusal::Unauthorized(body) => {
                ClientReferenceResponse::Unauthorized(body, "Bearer".into())
            }
            Refusal::Forbidden(body) => ClientReferenceResponse::Forbidden(body),
            Refusal::Internal(body) => ClientReferenceResponse::Internal(body),
        }
    }
}

/// How a created session is answered: a redirect for a page's form post, the URL for a script.
#[derive(Clone, Copy)]
enum Answer {
    Redirect,
    Json,
}

impl From<Refusal> for StateResponse {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadRequest(body) => StateResponse::BadRequest(body),
            Refusal::Unauthorized(body) => StateResponse::Unauthorized(body, "Bearer".into()),
            // Reads are not gated by role; a refusal of that kind would be a bug, not the
            // caller's fault.
            Refusal::Forbidden(body) | Refusal::Internal(body) => StateResponse::Internal(body),
        }
    }
}

impl From<Refusal> for CheckoutResponse {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadRequest(body) => CheckoutResponse::BadRequest(body),
            Refusal::Unauthorized(body) => CheckoutResponse::Unauthorized(body, "Bearer".into()),
            Refusal::Forbidden(body) => CheckoutResponse::Forbidden(body),
            Refusal::Internal(body) => CheckoutResponse::Internal(body),
        }
    }
}

impl From<CheckoutError> for CheckoutResponse {
    fn from(err: CheckoutError) -> Self {
        let invalid =
            |message: &str| CheckoutResponse::BadRequest(body(ErrorCode::ValidationError, message));
        match &err {
            CheckoutError::Access(access) => refusal(access, "checkout").into(),
            CheckoutError::UnknownPrice => invalid("Unknown price: use a price id from the plans."),
            CheckoutError::NotPurchasable => {
                invalid("This price is no longer available: choose one from the plans.")
            }
            CheckoutError::BadQuantity => invalid(&format!(
                "The quantity must be between 1 and {MAX_QUANTITY}."
            )),
            CheckoutError::TooManyCredits => invalid(&format!(
                "This purchase would grant more than {} credits, the most one grant may carry: \
                 buy a smaller quantity.",
                billing_sync_credits::MAX_AMOUNT
            )),
            CheckoutError::CrossOrigin => {
                tracing::warn!("checkout: refused a cookie-authenticated post from another origin");
                CheckoutResponse::Forbidden(body(
                    ErrorCode::Forbidden,
                    "Checkout with the session cookie is only accepted from the app's own pages.",
                ))
            }
            CheckoutError::AlreadySubscribed => CheckoutResponse::Conflict(body(
                ErrorCode::Conflict,
                "The organization already has an active subscription: change plans in the \
                 customer portal.",
            )),
            CheckoutError::TooManyRequests(wait) => {
                tracing::warn!(?wait, "checkout: session limit reached");
                CheckoutResponse::TooManyRequests(
                    body(
                        ErrorCode::TooManyRequests,
                        "Too many checkout sessions were opened in the last minute. Please try \
                         again shortly.",
                    ),
                    retry_after(*wait),
                )
            }
            CheckoutError::NotConfigured => {
                tracing::error!(
                    "checkout is not configured: set STRIPE_SECRET_KEY and APP_BASE_URL"
                );
                not_configured().into()
            }
            CheckoutError::Stripe(_) | CheckoutError::Store(_) => {
                // The Stripe error names Stripe's request id, for support; never the key.
                tracing::error!(error = %err, "checkout: creating the session failed");
                CheckoutResponse::Internal(body(
                    ErrorCode::InternalError,
                    "The checkout session could not be created. Please try again.",
                ))
            }
        }
    }
}

fn plan(product: CatalogProduct) -> Plan {
    Plan {
        id: product.id,
        name: product.name,
        description: product.description,
        marketing_features: product.marketing_features,
        prices: product
            .prices
            .into_iter()
            .map(|price| PlanPrice {
                id: price.id,
                kind: if price.recurring.is_some() {
                    "recurring"
                } else {
                    "one_time"
                }
                .into(),
                lookup_key: price.lookup_key,
                nickname: price.nickname,
                unit_amount: price.unit_amount,
                currency: price.currency,
                recurring: price.recurring.map(|(interval, interval_count)| Recurring {
                    interval,
                    interval_count,
                }),
            })
            .collect(),
    }
}

fn subscription(subscription: OrganizationSubscription) -> Subscription {
    Subscription {
        id: subscription.id,
        status: subscription.status,
        items: subscription
            .items
            .into_iter()
            .map(|item| SubscriptionItem {
                price_id: item.price_id,
                product_id: item.product_id,
                product_name: item.product_name,
                quantity: item.quantity,
            })
            .collect(),
        current_period_end: subscription.current_period_end,
        cancel_at_period_end: subscription.cancel_at_period_end,
        cancel_at: subscription.cancel_at,
        trial_end: subscription.trial_end,
        ended_at: subscription.ended_at,
    }
}

/// The billing state of `caller`'s organization (its customer and entitlements), with its
/// subscriptions and credit balance.
pub(crate) fn billing_state(
    caller: Caller,
    subscriptions: Vec<OrganizationSubscription>,
    credits_balance: i64,
) -> BillingState {
    BillingState {
        organization_id: caller.organization_id,
        customer_id: caller.customer_id,
        active: on_paid_plan(&subscriptions),
        subscriptions: subscriptions.into_iter().map(subscription).collect(),
        entitlements: caller.entitlements,
        credits_balance,
    }
}

/// The catalog's strong `ETag`: a hash of its JSON, so equal catalogs have equal tags on every
/// replica.
fn etag(catalog: &PlanCatalog) -> String {
    let json = catalog.to_json().unwrap_or_default().to_string();
    let digest = Sha256::digest(json.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether `If-None-Match` names `etag` (`*` names any; weak tags compare by their opaque part,
/// as RFC 9110 asks for `If-None-Match`).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The plans page's operations.
pub struct PlansApi {
    plans: Arc<Plans>,
    credits: Arc<Credits>,
}

impl PlansApi {
    /// The operations backed by `plans`, and by `credits` for the credit balance.
    pub fn new(plans: Arc<Plans>, credits: Arc<Credits>) -> Self {
        PlansApi { plans, credits }
    }
}

#[OpenApi(tag = "ApiTags::Payment")]
impl PlansApi {
    /// List the plans
    ///
    /// The catalog for a pricing page, from the synced Stripe products and prices: public (no
    /// authentication), cacheable for a minute, with a strong `ETag` (send it back as
    /// `If-None-Match` to get 304 when nothing changed).
    #[oai(
        path = "/api/v1/operations/payment/plans",
        method = "get",
        operation_id = "listPlans"
    )]
    async fn plans(
        &self,
        /// The `ETag` of a catalog the caller already has.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> PlansResponse {
        let catalog = match self.plans.catalog().await {
            Ok(products) => PlanCatalog {
                products: products.into_iter().map(plan).collect(),
            },
            Err(err) => {
                tracing::error!(error = %err, "plans: reading the catalog failed");
                return PlansResponse::Internal(body(
                    ErrorCode::InternalError,
                    "The plans could not be read. Please try again.",
                ));
            }
        };
        let etag = etag(&catalog);
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|header| matches_etag(header, &etag))
        {
            return PlansResponse::NotModified(CATALOG_CACHE_CONTROL.into(), etag);
        }
        PlansResponse::Catalog(Json(catalog), CATALOG_CACHE_CONTROL.into(), etag)
    }

    /// Get the organization's billing state
    ///
    /// The caller's organization's subscriptions (with their products), entitlements, credit
    /// balance, and whether it is on a paid plan, from the synced state (no Stripe call). The organization
    /// is chosen as for the customer portal. An organization that never paid gets 200 with no
    /// customer and empty lists.
    #[oai(
        path = "/api/v1/operations/payment/subscription",
        method = "get",
        operation_id = "billingState"
    )]
    async fn subscription(&self, session: ClerkSession) -> StateResponse {
        let (caller, subscriptions) = match self.plans.state(session.token()).await {
            Ok(state) => state,
            Err(err) => return refusal(&err, "billing state").into(),
        };
        match self.credits.balance(&caller.organization_id).await {
            Ok(balance) => StateResponse::State(
                Json(billing_state(caller, subscriptions, balance)),
                NO_STORE.into(),
            ),
            Err(err) => {
                tracing::error!(error = %err, "billing state: settling the credit ledger failed");
                StateResponse::Internal(body(
                    ErrorCode::InternalError,
                    "The billing state could not be read. Please try again.",
                ))
            }
        }
    }

    /// Start a checkout (HTML form)
    ///
    /// Creates a Stripe Checkout session for the caller's organization to buy a price: a
    /// subscription for a recurring price, a one-time payment (e.g. credits) otherwise. The
    /// organization's Stripe customer is reused, or created by Checkout. The body is a plain
    /// HTML form post; answers 303 to the session, or `200 {"url": …}` when the caller prefers
    /// `application/json`. A script sending JSON calls `create_checkout_session`. The same
    /// request again within 10 minutes gets the same session.
    #[oai(
        path = "/api/v1/operations/payment/checkout",
        method = "post",
        operation_id = "checkout"
    )]
    async fn checkout(
        &self,
        session: ClerkSession,
        request: &Request,
        body: Form<CheckoutRequest>,
    ) -> CheckoutResponse {
        let answer = if prefers_json(request.header("accept")) {
            Answer::Json
        } else {
            Answer::Redirect
        };
        self.start_checkout(session, request, body.0, answer).await
    }

    /// Get a pricing-table reference
    ///
    /// A `client_reference_id` for a Stripe pricing table (or a Payment Link's URL) that names
    /// the caller's organization, signed by this server and good for an hour: a checkout
    /// completed with it links its new customer to the organization. Only members who may start
    /// a checkout get one. Needs `STRIPE_CLIENT_REFERENCE_SECRET`.
    #[oai(
        path = "/api/v1/operations/payment/client-reference",
        method = "get",
        operation_id = "clientReference"
    )]
    async fn client_reference(&self, session: ClerkSession) -> ClientReferenceResponse {
        match self.plans.client_reference(session.token()).await {
            Ok((client_reference_id, expires_at)) => ClientReferenceResponse::Reference(
                Json(ClientReference {
                    client_reference_id,
                    expires_at: DateTime::from_timestamp(expires_at, 0).unwrap_or_default(),
                }),
                NO_STORE.into(),
            ),
            Err(err) => err.into(),
        }
    }

    /// Create a checkout session (JSON)
    ///
    /// `checkout` for a script or a generated client: the same order as JSON, answered with
    /// the session's URL (`200 {"url": …}`), never a redirect.
    #[oai(
        path = "/api/v1/operations/payment/checkout-session",
        method = "post",
        operation_id = "create_checkout_session"
    )]
    async fn create_checkout_session(
        &self,
        session: ClerkSession,
        request: &Request,
        body: Json<CheckoutRequest>,
    ) -> CheckoutSessionResponse {
        self.start_checkout(session, request, body.0, Answer::Json)
            .await
            .into()
    }
}

impl PlansApi {
    /// Both checkout operations: the order checked and the session created for the caller's
    /// organization, answered as `answer` says, the outcome counted.
    async fn start_checkout(
        &self,
        session: ClerkSession,
        request: &Request,
        order: CheckoutRequest,
        answer: Answer,
    ) -> CheckoutResponse {
        let credential = if session.is_cookie() {
            Credential::Cookie {
                origin: crate::http::foreign_origin(request),
            }
        } else {
            Credential::Bearer
        };
        let response = match self
            .plans
            .checkout(session.token(), credential, &order.price_id, order.quantity)
            .await
        {
            Ok(url) => match answer {
                Answer::Json => CheckoutResponse::Url(Json(CheckoutUrl { url }), NO_STORE.into()),
                Answer::Redirect => CheckoutResponse::SeeOther(url, NO_STORE.into()),
            },
            Err(err) => err.into(),
        };
        let outcome = match &response {
            CheckoutResponse::SeeOther(..) => "redirect",
            CheckoutResponse::Url(..) => "json",
            CheckoutResponse::BadRequest(_) => "validation_error",
            CheckoutResponse::Unauthorized(..) => "unauthorized",
            CheckoutResponse::Forbidden(_) => "forbidden",
            CheckoutResponse::Conflict(_) => "conflict",
            CheckoutResponse::TooManyRequests(..) => "too_many_requests",
            CheckoutResponse::Internal(_) => "internal_error",
        };
        metrics::counter!("billing_sync_checkout_requests_total", "outcome" => outcome)
            .increment(1);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::matches_etag;

    #[test]
    fn if_none_match_names_the_etag_in_any_of_its_forms() {
        let etag = "\"abc\"";
        assert!(matches_etag("\"abc\"", etag));
        assert!(matches_etag("W/\"abc\"", etag));
        assert!(matches_etag("\"x\", \"abc\"", etag));
        assert!(matches_etag("*", etag));
        assert!(!matches_etag("\"abd\"", etag));
        assert!(!matches_etag("abc", etag));
    }
}
