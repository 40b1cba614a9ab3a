//! A server with everything the operations on the synced state need: webhook secrets to seed
//! the state, a JWKS stand-in that publishes one signing key, a Stripe stand-in, the app's base
//! URL. Shared by the portal and plans tests, so the slow part (generating the RSA key) happens
//! once per test binary.

use std::sync::OnceLock;

use billing_sync_testkit::TestDatabase;

use super::Server;
use super::standins::{JwksStandIn, SigningKey, StripeAnswer, StripeStandIn};

pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_operations_stripe";
pub const CLERK_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const STRIPE_KEY: &str = "sk_test_operations_secret_key";
pub const ISSUER: &str = "https://clerk.app.example.com";
pub const APP: &str = "https://app.example.com";

/// Delivers a signed Clerk event to the operations server, which must accept it.
pub async fn clerk_event(server: &Server, id: &str, event_type: &str, data: serde_json::Value) {
    let body = serde_json::to_vec(
        &serde_json::json!({"type": event_type, "object": "event", "data": data}),
    )
    .expect("JSON");
    let response = super::post_clerk(server, CLERK_WEBHOOK_SECRET, id, super::now(), &body).await;
    assert_eq!(response.status(), 200, "{event_type}");
}

/// Delivers a signed Stripe event of `event_type` about `object`, created at `created`, to the
/// operations server, which must accept it (200); its answer.
pub async fn stripe_event(
    server: &Server,
    id: &str,
    event_type: &str,
    created: i64,
    object: serde_json::Value,
) -> serde_json::Value {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "api_version": "2026-07-29.dahlia", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": event_type,
    }))
    .expect("JSON");
    let signature = super::stripe_signature(STRIPE_WEBHOOK_SECRET, super::now(), &body);
    let response = super::post_stripe(server, &body, Some(signature)).await;
    let (status, answer) = super::status_and_json(response).await;
    assert_eq!(status, 200, "{event_type}: {answer}");
    answer
}

/// The key the JWKS stand-in publishes, generated once per test binary.
pub fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate("ins_key_1"))
}

pub struct Setup {
    pub server: Server,
    pub stripe: StripeStandIn,
    pub jwks: JwksStandIn,
}

/// The server on `db`, its Stripe stand-in answering `script` first, with `extra` settings.
pub async fn setup(db: &TestDatabase, script: &[StripeAnswer], extra: &[(&str, &str)]) -> Setup {
    let jwks = JwksStandIn::start(&[key()]).await;
    let stripe = StripeStandIn::start(script).await;
    let mut env = vec![
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("CLERK_WEBHOOK_SECRET", CLERK_WEBHOOK_SECRET),
        ("CLERK_JWKS_URL", jwks.url.as_str()),
        ("CLERK_ISSUER", ISSUER),
        (
            "CLERK_AUTHORIZED_PARTIES",
            "https://app.example.com,https://admin.example.com",
        ),
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", stripe.base_url.as_str()),
        ("APP_BASE_URL", APP),
        ("STRIPE_TIMEOUT_MS", "1500"),
    ];
    env.extend_from_slice(extra);
    let server = Server::start(&db.url, &env).await;
    Setup {
        server,
        stripe,
        jwks,
    }
}

/// The generated client, sending `token` as `Authorization: Bearer` and following no redirect.
pub fn client(server: &Server, token: &str) -> billing_sync_client::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let http = reqwest::Client::builder()
        // See `support::http`: no trust store to read for plain HTTP.
        .tls_certs_only([])
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    billing_sync_client::Client::new_with_client(&server.base_url, http)
}
