//! Throughput and latency of the operations on the synced state: the billing state (database
//! only) and the customer portal (plus a Stripe call), next to `/readyz` (one query, no
//! authentication) as the ceiling, measured in the same run. The real release server with
//! cached Clerk keys (one JWKS fetch, then the cache) and the local Stripe stand-in, loaded over
//! loopback HTTP; the figures include the stand-ins, which run in this process beside the load
//! generator.
//!
//! Run with `./scripts/bench --bench operations` (PostgreSQL), or with `BENCH_BACKEND=sqlite`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_testkit::e2e::standins::{JwksStandIn, SigningKey, StripeStandIn};
use billing_sync_testkit::e2e::{Server, now, post_clerk, post_stripe, stripe_signature};
use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::json;

const REQUESTS: usize = 10_000;
const CONCURRENCY: [usize; 2] = [16, 64];

#[tokio::main]
async fn main() {
    let backend = if std::env::var("BENCH_BACKEND").as_deref() == Ok("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let Some(db) = TestDatabase::create(backend).await else {
        eprintln!("no PostgreSQL: run ./scripts/bench --bench operations, or BENCH_BACKEND=sqlite");
        std::process::exit(2);
    };
    let key = SigningKey::generate("ins_bench");
    let jwks = JwksStandIn::start(&[&key]).await;
    let stripe = StripeStandIn::start(&[]).await;
    let clerk_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let server = Server::start(
        &db.url,
        &[
            ("RUST_LOG", "warn,billing_sync::startup=info"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_bench"),
            ("CLERK_WEBHOOK_SECRET", clerk_secret),
            ("CLERK_JWKS_URL", jwks.url.as_str()),
            ("STRIPE_SECRET_KEY", "sk_test_bench"),
            ("STRIPE_API_BASE", stripe.base_url.as_str()),
            ("APP_BASE_URL", "https://app.example.com"),
            // One user makes every request: the per-user session limit would refuse them.
            ("STRIPE_SESSIONS_PER_MINUTE", "1000000"),
        ],
    )
    .await;
    // State: a member of an organization whose customer a checkout linked.
    let updated = now() * 1000 - 60_000;
    let membership = serde_json::to_vec(
        &json!({"type": "organizationMembership.created", "object": "event",
        "data": {"id": "orgmem_bench", "role": "org:admin", "updated_at": updated,
                 "organization": {"id": "org_bench", "updated_at": updated},
                 "public_user_data": {"user_id": "user_bench"}}}),
    )
    .expect("JSON");
    assert_eq!(
        post_clerk(&server, clerk_secret, "msg_bench", now(), &membership)
            .await
            .status(),
        200
    );
    let checkout = serde_json::to_vec(&json!({"id": "evt_bench", "object": "event", "created": now(),
        "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_bench", "customer": "cus_bench", "client_reference_id": "org_bench",
            "metadata": {"organization_id": "org_bench"}}}}))
    .expect("JSON");
    let signature = stripe_signature("whsec_bench", now(), &checkout);
    assert_eq!(
        post_stripe(&server, &checkout, Some(signature))
            .await
            .status(),
        200
    );

    // The plans page's state: the organization's subscription (its product synced) and its
    // entitlements, as a paying organization has them.
    let stripe_events = [
        (
            "product.created",
            json!({"id": "prod_bench", "object": "product", "active": true,
            "name": "Team", "marketing_features": [{"name": "SSO"}], "livemode": false}),
        ),
        (
            "price.created",
            json!({"id": "price_bench", "object": "price", "active": true,
            "currency": "eur", "unit_amount": 2900, "product": "prod_bench", "type": "recurring",
            "recurring": {"interval": "month", "interval_count": 1}, "livemode": false}),
        ),
        (
            "customer.subscription.created",
            json!({"id": "sub_bench", "object": "subscription",
            "customer": "cus_bench", "status": "active", "livemode": false,
            "metadata": {"organization_id": "org_bench"}, "cancel_at_period_end": false,
            "items": {"object": "list", "data": [{"id": "si_bench", "quantity": 5,
                "current_period_start": now(), "current_period_end": now() + 2_678_400,
                "price": {"id": "price_bench", "product": "prod_bench"}}]}}),
        ),
        (
            "entitlements.active_entitlement_summary.updated",
            json!({
            "object": "entitlements.active_entitlement_summary", "customer": "cus_bench",
            "livemode": false, "entitlements": {"object": "list", "has_more": false, "data": [
                {"id": "ent_1", "lookup_key": "sso"}, {"id": "ent_2", "lookup_key": "audit"}]}}),
        ),
    ];
    for (n, (event_type, object)) in stripe_events.into_iter().enumerate() {
        let body = serde_json::to_vec(&json!({"id": format!("evt_bench_{n}"), "object": "event",
            "created": now(), "type": event_type, "data": {"object": object}}))
        .expect("JSON");
        let signature = stripe_signature("whsec_bench", now(), &body);
        assert_eq!(
            post_stripe(&server, &body, Some(signature)).await.status(),
            200
        );
    }

    let t = now();
    let token = key.sign(
        &json!({"sub": "user_bench", "iat": t, "nbf": t, "exp": t + 3_600,
                                 "iss": jwks.issuer, "azp": "https://app.example.com", "v": 2,
                                 "o": {"id": "org_bench"}}),
    );
    let client = billing_sync_testkit::e2e::http();
    let state = server.url("/api/v1/operations/payment/subscription");
    // Warm-up, which also fills the key cache.
    for _ in 0..200 {
        let response = client
            .get(&state)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200);
    }
    let body: serde_json::Value = client
        .get(&state)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["active"], true,
        "the state is a paying organization's: {body}"
    );
    assert_eq!(body["subscriptions"][0]["items"][0]["product_name"], "Team");

    println!(
        "operations on {backend:?}, {} cores, stand-ins included",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:<12} {:>9} | {:>10} {:>8} {:>8}",
        "operation", "connections", "requests", "req/s", "p50 ms", "p99 ms"
    );
    let operations = [
        // The ceiling: authentication-free, one `SELECT 1`, same server, same load.
        (
            "GET /readyz (ceiling: one query)",
            server.url("/readyz"),
            None,
            200,
        ),
        (
            "GET …/subscription (billing state)",
            state.clone(),
            Some(token.clone()),
            200,
        ),
        (
            "GET …/customer-portal (+ Stripe)",
            server.url("/api/v1/operations/payment/customer-portal"),
            Some(token.clone()),
            302,
        ),
    ];
    for (name, url, token, status) in operations {
        for concurrency in CONCURRENCY {
            let (rate, p50, p99) = load(&client, &url, token.as_deref(), status, concurrency).await;
            println!(
                "{name:<34} {concurrency:<12} {REQUESTS:>9} | {rate:>10.0} {p50:>8.2} {p99:>8.2}"
            );
        }
    }
    println!("JWKS fetches: {}", jwks.fetch_count());
}

/// `REQUESTS` GETs of `url` over `concurrency` connections, each expected to answer `status`:
/// requests per second, p50 and p99 in milliseconds.
async fn load(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    status: u16,
    concurrency: usize,
) -> (f64, f64, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, next) = (
            client.clone(),
            url.to_owned(),
            token.map(str::to_owned),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let sent = Instant::now();
                let mut request = client.get(&url);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.expect("GET");
                assert_eq!(response.status(), status, "{url}");
                response.bytes().await.expect("body");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(REQUESTS);
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
    )
}
