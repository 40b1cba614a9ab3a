//! The plans page: the plan catalog, the caller's organization's billing state, and starting a
//! Stripe Checkout for a price. Reads come from the synced state only; checkout is the one
//! Stripe call. Transport-free: the HTTP mapping lives in [`api`].

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use billing_sync_projection::ClientReferenceKey;
use billing_sync_projection::client_reference::UnreferenceableOrganization;
use billing_sync_store::plans::{CatalogProduct, OrganizationSubscription, on_paid_plan};
use billing_sync_store::{Store, StoreError};
use billing_sync_stripe_api::{StripeClient, StripeError};
use sha2::{Digest, Sha256};

use crate::access::{Access, AccessError, Caller, Gate};
use crate::portal::limit::SessionLimit;

/// The largest quantity a checkout accepts.
pub const MAX_QUANTITY: i64 = 10_000;

/// How long a repeated checkout request (a double click) gets the session already created:
/// the idempotency key changes with each window of this length.
pub const CHECKOUT_DEDUPLICATION_WINDOW: Duration = Duration::from_secs(600);

/// The web app's plans page, under `APP_BASE_URL`: where the portal and a canceled checkout
/// send the customer back (the contract's `/organization#/plans`).
pub fn plans_page_url(app_base_url: &str) -> String {
    format!("{app_base_url}{PLANS_PAGE_PATH}{PLANS_PAGE_FRAGMENT}")
}

const PLANS_PAGE_PATH: &str = "/organization";
const PLANS_PAGE_FRAGMENT: &str = "#/plans";

/// The query a successful checkout returns to the plans page with: `checkout=success` (the
/// marker the page looks for) and Stripe's session id, which Stripe fills in.
pub const CHECKOUT_SUCCESS_QUERY: &str = "checkout=success&session_id={CHECKOUT_SESSION_ID}";

/// Where Checkout sends the customer back, and how the session names the organization.
pub struct CheckoutSettings {
    /// The plans page with [`CHECKOUT_SUCCESS_QUERY`].
    pub success_url: String,
    /// The plans page ([`plans_page_url`]).
    pub cancel_url: String,
    /// `STRIPE_ORG_METADATA_KEY`: the metadata key that links a customer to its organization.
    pub org_metadata_key: String,
    /// `STRIPE_CREDITS_METADATA_KEY`: the price (or product) metadata key saying how many
    /// credits a unit buys.
    pub credits_metadata_key: String,
    /// The origins whose pages may post to checkout with the `__session` cookie: the web app's
    /// (`APP_BASE_URL`) and `CORS_ALLOWED_ORIGINS`.
    pub page_origins: Vec<String>,
}

impl CheckoutSettings {
    /// The settings for a web app at `app_base_url` (no trailing slash) whose pages are served
    /// from `page_origins`.
    pub fn for_app(
        app_base_url: &str,
        org_metadata_key: &str,
        credits_metadata_key: &str,
        page_origins: Vec<String>,
    ) -> Self {
        CheckoutSettings {
            success_url: format!(
                "{app_base_url}{PLANS_PAGE_PATH}?{CHECKOUT_SUCCESS_QUERY}{PLANS_PAGE_FRAGMENT}"
            ),
            cancel_url: plans_page_url(app_base_url),
            org_metadata_key: org_metadata_key.to_owned(),
            credits_metadata_key: credits_metadata_key.to_owned(),
            page_origins,
        }
    }
}

/// Why no checkout session was created.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The caller was refused.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The price is not synced.
    #[error("unknown price")]
    UnknownPrice,
    /// The price or its product is archived or deleted.
    #[error("the price cannot be bought")]
    NotPurchasable,
    /// The quantity is not between 1 and [`MAX_QUANTITY`].
    #[error("quantity out of range")]
    BadQuantity,
    /// A purchase that would grant more credits than one grant may carry
    /// ([`billing_sync_credits::MAX_AMOUNT`]).
    #[error("the purchase grants too many credits")]
    TooManyCredits,
    /// A recurring price for an organization already on an active subscription.
    #[error("the organization already has an active subscription")]
    AlreadySubscribed,
    /// A cookie-authenticated request sent by a page of another origin (cross-site request
    /// forgery).
    #[error("cross-origin request with the session cookie")]
    CrossOrigin,
    /// The user created as many sessions as allowed this minute.
    #[error("too many sessions; retry in {0:?}")]
    TooManyRequests(Duration),
    /// Stripe or `APP_BASE_URL` is not configured.
    #[error("billing is not configured")]
    NotConfigured,
    /// Stripe failed.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a client reference names its organization: a pricing page asks for one when it
/// loads, and the checkout started from it must be created within this. Short, because whoever
/// holds it can link a new customer to the organization until then.
pub const CLIENT_REFERENCE_LIFETIME: Duration = Duration::from_secs(3600);

/// Why no client reference was given.
#[derive(Debug, thiserror::Error)]
pub enum ClientReferenceError {
    /// The caller was refused.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// `STRIPE_CLIENT_REFERENCE_SECRET` is not set.
    #[error("STRIPE_CLIENT_REFERENCE_SECRET is not set")]
    NotConfigured,
    /// The organization's id is not one Stripe can carry.
    #[error(transparent)]
    Unreferenceable(#[from] UnreferenceableOrganization),
}

/// How a checkout request was authenticated.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// `Authorization: Bearer`.
    Bearer,
    /// The `__session` cookie, from a page of this `Origin` (when the request names one).
    Cookie {
        /// The request's `Origin` header, when it names another origin than this server's own
        /// ([`crate::http::foreign_origin`]).
        origin: Option<&'a str>,
    },
}

/// The plans page's operations.
pub struct Plans {
    access: Arc<Access>,
    checkout: Option<(StripeClient, CheckoutSettings)>,
    limit: SessionLimit,
    failed_keys: FailedKeys,
    client_reference_key: Option<ClientReferenceKey>,
}

impl Plans {
    /// The operations for the callers `access` admits; without `checkout`, checkout answers
    /// that billing is not configured (the reads work all the same).
    pub fn new(access: Arc<Access>, checkout: Option<(StripeClient, CheckoutSettings)>) -> Self {
        Plans {
            access,
            checkout,
            limit: SessionLimit::per_minute(crate::portal::DEFAULT_SESSIONS_PER_MINUTE),
            failed_keys: FailedKeys::default(),
            client_reference_key: None,
        }
    }

    /// Signs client references with `key` (`STRIPE_CLIENT_REFERENCE_SECRET`).
    pub fn with_client_reference_key(mut self, key: Option<ClientReferenceKey>) -> Self {
        self.client_reference_key = key;
        self
    }

    /// A reference naming the caller's organization for [`CLIENT_REFERENCE_LIFETIME`], for a
    /// pricing table's `client-reference-id`, and when it expires (Unix seconds). Only a member
    /// who may start a checkout gets one.
    pub async fn client_reference(
        &self,
        token: &str,
    ) -> Result<(String, i64), ClientReferenceError> {
        let key = self
            .client_reference_key
            .as_ref()
            .ok_or(ClientReferenceError::NotConfigured)?;
        let caller = self.access.caller(token, Gate::BillingManager).await?;
        let expires_at = (unix_now() + CLIENT_REFERENCE_LIFETIME.as_secs()) as i64;
        Ok((key.sign(&caller.organization_id, expires_at)?, expires_at))
    }

    /// Allows each user `per_minute` checkout sessions per minute.
    pub fn with_sessions_per_minute(mut self, per_minute: u32) -> Self {
        self.limit = SessionLimit::per_minute(per_minute);
        self
    }

    fn store(&self) -> &Store {
        self.access.store()
    }

    /// The catalog, from the synced state.
    pub async fn catalog(&self) -> Result<Vec<CatalogProduct>, StoreError> {
        self.store().catalog().await
    }

    /// An organization's billing (its customer, entitlements and subscriptions) with no user
    /// session: for the app's backend, which the API key admits.
    pub async fn organization_state(
        &self,
        organization_id: &str,
    ) -> Result<(Caller, Vec<OrganizationSubscription>), StoreError> {
        // No user: nothing the state says of a user's access applies, only the organization's.
        let (access, subscriptions) = self
            .store()
            .organization_state("", organization_id, chrono::DateTime::UNIX_EPOCH)
            .await?;
        let caller = Caller {
            user_id: String::new(),
            organization_id: organization_id.to_owned(),
            customer_id: access.customer_id,
            entitlements: access.entitlements,
        };
        Ok((caller, subscriptions))
    }

    /// The caller (with their organization's customer and entitlements) and the organization's
    /// subscriptions, from the synced state: one round trip (two when the token names no
    /// organization and the membership decides).
    pub async fn state(
        &self,
        token: &str,
    ) -> Result<(Caller, Vec<OrganizationSubscription>), AccessError> {
        self.access.member_and_subscriptions(token).await
    }

    /// The URL of a Checkout Session for `quantity` (default 1) of `price_id`, for the
    /// caller's organization. `credential` is how the request was authenticated and, for the
    /// cookie, the `Origin` of the page that posted it.
    pub async fn checkout(
        &self,
        token: &str,
        credential: Credential<'_>,
        price_id: &str,
        quantity: Option<i64>,
    ) -> Result<String, CheckoutError> {
        let (stripe, settings) = self.checkout.as_ref().ok_or(CheckoutError::NotConfigured)?;
        // A browser sends the cookie with a form posted by any page of the same site (Clerk's
        // `SameSite=Lax` stops other sites); only the app's own pages may start a checkout
        // with it. A bearer token cannot be sent by another page, and a request without
        // `Origin` is not a browser's cross-origin post.
        if let Credential::Cookie {
            origin: Some(origin),
        } = credential
            && !settings
                .page_origins
                .iter()
                .any(|allowed| allowed == origin)
        {
            return Err(CheckoutError::CrossOrigin);
        }
        let caller = self.access.caller(token, Gate::BillingManager).await?;
        let quantity = quantity.unwrap_or(1);
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(CheckoutError::BadQuantity);
        }
        let price = self
            .store()
            .price(price_id)
            .await?
            .ok_or(CheckoutError::UnknownPrice)?;
        if !price.purchasable {
            return Err(CheckoutError::NotPurchasable);
        }
        let recurring = price.recurring.is_some();
        if recurring {
            let subscriptions = self
                .store()
                .organization_subscriptions(&caller.organization_id)
                .await?;
            if on_paid_plan(&subscriptions) {
                return Err(CheckoutError::AlreadySubscribed);
            }
        }
        let email = match caller.customer_id {
            Some(_) => None,
            None => self.store().primary_email(&caller.user_id).await?,
        };
        let mut form = checkout_form(&caller, &price.id, quantity, recurring, email, settings);
        if !recurring {
            // Written for every one-time purchase, 0 for a price without credits: the webhook
            // then knows billing-sync made the session, and needs no line items to tell.
            let per_unit = self
                .store()
                .price_credits_per_unit(&price.id, &settings.credits_metadata_key)
                .await?
                .unwrap_or(0);
            let credits = billing_sync_credits::purchased_credits(per_unit, quantity)
                .ok_or(CheckoutError::TooManyCredits)?;
            form.extend(credits_metadata(&price.id, quantity, credits));
        }
        let base_key = idempotency_key(&caller.user_id, &form, unix_now());
        let key = self.failed_keys.current(&base_key);
        // Counted only when a session would really be created: refusals above cost no
        // Stripe call.
        self.limit
            .take(&caller.user_id, std::time::Instant::now())
            .map_err(CheckoutError::TooManyRequests)?;
        match stripe.create_checkout_session(&form, &key).await {
            Ok(url) => Ok(url),
            Err(err) => {
                self.failed_keys.failed(base_key);
                Err(err.into())
            }
        }
    }
}

/// The Checkout Session's parameters. The organization is named three times so that every
/// webhook path can link the customer: the session's `client_reference_id` and metadata
/// (`checkout.session.completed`), and the subscription's or payment's metadata.
fn checkout_form(
    caller: &Caller,
    price_id: &str,
    quantity: i64,
    recurring: bool,
    email: Option<String>,
    settings: &CheckoutSettings,
) -> Vec<(String, String)> {
    let key = &settings.org_metadata_key;
    let organization = caller.organization_id.clone();
    let (mode, object_metadata) = if recurring {
        (
            "subscription",
            format!("subscription_data[metadata][{key}]"),
        )
    } else {
        ("payment", format!("payment_intent_data[metadata][{key}]"))
    };
    let mut form = vec![
        ("mode".to_owned(), mode.to_owned()),
        ("line_items[0][price]".to_owned(), price_id.to_owned()),
        ("line_items[0][quantity]".to_owned(), quantity.to_string()),
        ("success_url".to_owned(), settings.success_url.clone()),
        ("cancel_url".to_owned(), settings.cancel_url.clone()),
        ("client_reference_id".to_owned(), organization.clone()),
        (format!("metadata[{key}]"), organization.clone()),
        (object_metadata, organization),
    ];
    match &caller.customer_id {
        Some(customer) => form.push(("customer".to_owned(), customer.clone())),
        None => {
            if let Some(email) = email {
                form.push(("customer_email".to_owned(), email));
            }
            // Subscription mode always creates a customer; payment mode only when asked.
            if !recurring {
                form.push(("customer_creation".to_owned(), "always".to_owned()));
            }
        }
    }
    form
}

/// The session metadata of a purchase of `quantity` units of `price_id` granting `credits`
/// ([`billing_sync_credits::purchased_credits`]): what the ledger grants when the payment
/// succeeds (the projection reads it).
fn credits_metadata(price_id: &str, quantity: i64, credits: i64) -> Vec<(String, String)> {
    use billing_sync_projection::stripe::{
        CHECKOUT_CREDITS_METADATA, CHECKOUT_PRICE_METADATA, CHECKOUT_QUANTITY_METADATA,
    };
    vec![
        (
            format!("metadata[{CHECKOUT_PRICE_METADATA}]"),
            price_id.to_owned(),
        ),
        (
            format!("metadata[{CHECKOUT_QUANTITY_METADATA}]"),
            quantity.to_string(),
        ),
        (
            format!("metadata[{CHECKOUT_CREDITS_METADATA}]"),
            credits.to_string(),
        ),
    ]
}

/// The `Idempotency-Key` of a checkout: a hash of the user, every parameter of the session,
/// and the current [`CHECKOUT_DEDUPLICATION_WINDOW`]. The same request again within the window
/// (a double click, a retried form post) gets the session Stripe already created; anything
/// different, or a later window, gets a new one.
fn idempotency_key(user_id: &str, form: &[(String, String)], now: u64) -> String {
    let mut hash = Sha256::new();
    hash.update(user_id.as_bytes());
    for (name, value) in form {
        hash.update([0]);
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(value.as_bytes());
    }
    hash.update((now / CHECKOUT_DEDUPLICATION_WINDOW.as_secs()).to_be_bytes());
    format!("checkout-{}", hex::encode(hash.finalize()))
}

/// Derived idempotency keys whose request failed. Stripe saves the first answer to a key, a 500
/// as much as a session, and replays it for a day: a failure must not stick to the request for
/// the rest of its window, so the next attempt goes out under a key of its own (`…-1`, `…-2`).
/// In memory, per replica: another replica's next attempt may still get the saved failure once.
#[derive(Default)]
struct FailedKeys {
    /// Base key → how many of its keys failed.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// Failed keys remembered at most; past it the oldest knowledge is dropped (the map is
/// cleared), which costs at most one more replayed failure per key.
const FAILED_KEYS_REMEMBERED: usize = 10_000;

impl FailedKeys {
    /// The key to send for `base`: itself until it failed, then the next generation.
    fn current(&self, base: &str) -> String {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(base) {
            Some(generation) => format!("{base}-{generation}"),
            None => base.to_owned(),
        }
    }

    /// Records that the request for `base` failed under its current key.
    fn failed(&self, base: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= FAILED_KEYS_REMEMBERED && !failures.contains_key(&base) {
            failures.clear();
        }
        *failures.entry(base).or_insert(0) += 1;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(customer: Option<&str>) -> Caller {
        Caller {
            user_id: "user_1".into(),
            organization_id: "org_1".into(),
            customer_id: customer.map(str::to_owned),
            entitlements: Vec::new(),
        }
    }

    fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_one_time_price_without_a_customer_asks_checkout_to_create_one() {
        let settings = CheckoutSettings::for_app(
            "https://app.example.com",
            "organization_id",
            "credits",
            Vec::new(),
        );
        let form = checkout_form(
            &caller(None),
            "price_credits",
            3,
            false,
            Some("a@example.com".into()),
            &settings,
        );
        assert_eq!(field(&form, "mode"), Some("payment"));
        assert_eq!(field(&form, "customer_creation"), Some("always"));
        assert_eq!(field(&form, "customer_email"), Some("a@example.com"));
        assert_eq!(
            field(&form, "payment_intent_data[metadata][organization_id]"),
            Some("org_1")
        );
        assert_eq!(field(&form, "customer"), None);
    }

    #[test]
    fn a_recurring_price_for_a_known_customer_reuses_it() {
        let settings =
            CheckoutSettings::for_app("https://app.example.com", "org", "credits", Vec::new());
        let form = checkout_form(
            &caller(Some("cus_1")),
            "price_monthly",
            1,
            true,
            None,
            &settings,
        );
        assert_eq!(field(&form, "mode"), Some("subscription"));
        assert_eq!(field(&form, "customer"), Some("cus_1"));
        assert_eq!(field(&form, "customer_creation"), None);
        assert_eq!(
            field(&form, "subscription_data[metadata][org]"),
            Some("org_1")
        );
        assert_eq!(field(&form, "metadata[org]"), Some("org_1"));
        assert_eq!(field(&form, "client_reference_id"), Some("org_1"));
    }

    #[test]
    fn the_idempotency_key_is_stable_within_a_window_and_changes_with_anything_else() {
        let form = vec![("mode".to_owned(), "payment".to_owned())];
        let window = CHECKOUT_DEDUPLICATION_WINDOW.as_secs();
        let key = idempotency_key("user_1", &form, 10 * window);
        assert_eq!(
            key,
            idempotency_key("user_1", &form, 10 * window + window - 1)
        );
        assert_ne!(key, idempotency_key("user_1", &form, 11 * window));
        assert_ne!(key, idempotency_key("user_2", &form, 10 * window));
        let other = vec![("mode".to_owned(), "subscription".to_owned())];
        assert_ne!(key, idempotency_key("user_1", &other, 10 * window));
        assert!(key.len() < 255, "Stripe keys are at most 255 characters");
    }

    #[test]
    fn a_failed_key_is_not_sent_again() {
        let failed = FailedKeys::default();
        let base = idempotency_key("user_1", &[], 0);
        assert_eq!(failed.current(&base), base);
        failed.failed(base.clone());
        assert_eq!(failed.current(&base), format!("{base}-1"));
        failed.failed(base.clone());
        assert_eq!(failed.current(&base), format!("{base}-2"));
        let other = idempotency_key("user_2", &[], 0);
        assert_eq!(failed.current(&other), other, "other requests keep theirs");
    }
}
